/* codec_bench: times regslim's own codec stages on one file, for
 * bench/codec.sh. Not part of the build; the script compiles it against the
 * optimizer sources.
 *   codec_bench inflate zlib|isal FILE       gzip -> count
 *   codec_bench recompress zlib|isal LEVEL THREADS FILE
 *                                            gzip -> zstd(LEVEL, THREADS) -> count
 *   codec_bench tar zlib|isal FILE           gzip -> tar reader (keep all; raw
 *                                            headers and data copied to count)
 * Prints one line: "<compressed bytes> <decompressed bytes> <out bytes> <seconds>". */
#include "codec.h"
#include "stream.h"
#include "tar_read.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static enum rs_code keep(void *ctx, const struct tar_entry *e, const void *raw, size_t raw_len,
			 enum tar_verdict *verdict, struct rs_err *err)
{
	(void)e;
	*verdict = TAR_KEEP;
	return stream_write(ctx, raw, raw_len, err);
}

static enum rs_code data(void *ctx, const struct tar_entry *e, const void *buf, size_t len,
			 bool padding, struct rs_err *err)
{
	(void)e;
	(void)padding;
	return stream_write(ctx, buf, len, err);
}

static const struct tar_read_cbs cbs = { keep, data, NULL };

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: codec_bench inflate|recompress zlib|isal [LEVEL THREADS] FILE\n");
		return 2;
	}
	bool recompress = strcmp(argv[1], "recompress") == 0;
	enum codec_inflate_impl impl = strcmp(argv[2], "isal") == 0 ? CODEC_INFLATE_ISAL
								   : CODEC_INFLATE_ZLIB;
	const char *file = argv[recompress ? 5 : 3];
	int fd = open(file, O_RDONLY);
	if (fd < 0) {
		perror(file);
		return 1;
	}
	struct rs_err err = { 0 };
	struct stream_sink *out = NULL, *enc = NULL, *mid = NULL, *dec = NULL;
	enum rs_code rc = stream_count_sink_new(&out, NULL, &err);
	mid = out;
	if (!rc && strcmp(argv[1], "tar") == 0)
		rc = tar_read_new(&enc, &cbs, out, &err), mid = enc;
	if (!rc && recompress) {
		struct codec_encode_opts eo = { .kind = CODEC_ZSTD, .level = (int)strtol(argv[3], NULL, 10),
						.threads = (unsigned)strtoul(argv[4], NULL, 10) };
		rc = codec_encoder_new(&enc, &eo, out, &err);
		mid = enc;
	}
	struct codec_decode_opts o = { .inflate = impl };
	if (!rc)
		rc = codec_decoder_new(&dec, CODEC_GZIP, &o, mid, &err);
	double t0 = now();
	if (!rc)
		rc = stream_pump_fd(dec, fd, &err);
	if (!rc)
		rc = stream_finish(dec, &err);
	double t = now() - t0;
	if (rc) {
		fprintf(stderr, "codec_bench: %s\n", err.msg);
		return 1;
	}
	uint64_t in, dout;
	codec_decoder_counts(dec, &in, &dout);
	printf("%llu %llu %llu %.3f\n", (unsigned long long)in, (unsigned long long)dout,
	       (unsigned long long)stream_count_sink_bytes(out), t);
	stream_free(dec);
	stream_free(enc);
	stream_free(out);
	close(fd);
	return 0;
}
