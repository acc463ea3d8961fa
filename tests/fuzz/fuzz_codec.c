/* fuzz_codec: libFuzzer target for the layer decoders. The first input byte
 * picks the decoder (gzip, zstd, plain) and the split pattern; the rest is
 * the compressed stream. gzip is decoded by zlib and (when built in) isa-l:
 * both must accept or refuse together and, when they accept, produce the
 * same bytes. Small ratio caps make the bomb checks reachable. */
#include "codec.h"
#include "digest.h"
#include "stream.h"

#include <stdlib.h>
#include <string.h>

struct result {
	enum rs_code rc;
	struct rs_err err;
	char digest[DIGEST_STR_SIZE];
	uint64_t out;
};

static void run(enum codec_kind kind, enum codec_inflate_impl impl, const uint8_t *data,
		size_t size, unsigned split, struct result *r)
{
	memset(r, 0, sizeof(*r));
	struct stream_sink *dig = NULL, *dec = NULL;
	struct codec_decode_opts o = { .max_ratio = 50, .ratio_min_bytes = 1u << 20,
				       .zstd_window_log_max = 24, .inflate = impl };
	if (stream_digest_sink_new(&dig, NULL, &r->err))
		abort();
	r->rc = codec_decoder_new(&dec, kind, &o, dig, &r->err);
	size_t off = 0;
	unsigned k = split;
	while (!r->rc && off < size) {
		k = k * 1103515245u + 12345u;
		size_t n = split ? 1 + (k >> 16) % 700 : size;
		if (n > size - off)
			n = size - off;
		r->rc = stream_write(dec, data + off, n, &r->err);
		off += n;
	}
	if (!r->rc)
		r->rc = stream_finish(dec, &r->err);
	stream_digest_sink_result(dig, r->digest, &r->out);
	stream_free(dec);
	stream_free(dig);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	enum codec_kind kind = (enum codec_kind)(data[0] % 3);
	unsigned split = data[0] >> 2;
	struct result a, b;
	run(kind, CODEC_INFLATE_ZLIB, data + 1, size - 1, split, &a);
	if (a.rc != RS_OK && a.err.msg[0] == 0)
		abort();
	if (kind != CODEC_GZIP)
		return 0;
#ifdef REGSLIM_HAVE_ISAL
	run(kind, CODEC_INFLATE_ISAL, data + 1, size - 1, split + 1, &b);
	/* both refuse or both accept the same bytes */
	if ((a.rc == RS_OK) != (b.rc == RS_OK))
		abort();
	if (a.rc == RS_OK && (a.out != b.out || strcmp(a.digest, b.digest) != 0))
		abort();
#else
	(void)b;
#endif
	return 0;
}
