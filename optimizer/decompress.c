/* decompress: the decoder stages of codec.h (gzip through zlib or isa-l,
 * zstd, plain pass-through) with magic checks, the zstd window cap and the
 * expansion-ratio cap. Each decoder owns one STREAM_BUF_SIZE output buffer
 * and pushes to its borrowed `next`. Offsets in messages are counted in
 * compressed bytes from the start of the layer. */
#include "codec.h"

#include "rs_limits.h"

#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>
#ifdef REGSLIM_HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif

#define MAGIC_MAX 4

struct decoder {
	struct stream_sink base;
	enum codec_kind kind;
	enum codec_inflate_impl impl;
	struct stream_sink *next;
	uint64_t in, out; /* compressed consumed, decompressed produced */
	uint64_t max_ratio, ratio_min;
	unsigned wlog_max;
	uint64_t frame_start; /* zstd: offset of the current frame */
	uint8_t magic[MAGIC_MAX];
	size_t magic_len;
	bool magic_done;
	bool in_member;      /* inside a gzip member / zstd frame not yet complete */
	bool after_member;   /* gzip: a member ended; the next byte starts another */
	uint64_t member_start; /* gzip (isa-l): compressed offset of the current member */
	bool flg_checked;      /* gzip (isa-l): its FLG byte was checked */
	uint8_t *obuf;
	z_stream zs;
	bool zs_ready;
#ifdef REGSLIM_HAVE_ISAL
	struct inflate_state *isal;
#endif
	ZSTD_DCtx *zd;
};

const char *codec_kind_name(enum codec_kind kind)
{
	switch (kind) {
	case CODEC_NONE:
		return "none";
	case CODEC_GZIP:
		return "gzip";
	case CODEC_ZSTD:
		return "zstd";
	}
	return "unknown";
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

enum rs_code codec_kind_from_media_type(enum codec_kind *out, const char *mt, struct rs_err *err)
{
	static const struct {
		const char *mt;
		enum codec_kind kind;
	} table[] = {
		{ "application/vnd.oci.image.layer.v1.tar", CODEC_NONE },
		{ "application/vnd.oci.image.layer.v1.tar+gzip", CODEC_GZIP },
		{ "application/vnd.oci.image.layer.v1.tar+zstd", CODEC_ZSTD },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar", CODEC_NONE },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", CODEC_GZIP },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", CODEC_ZSTD },
		{ "application/vnd.docker.image.rootfs.diff.tar", CODEC_NONE },
		{ "application/vnd.docker.image.rootfs.diff.tar.gzip", CODEC_GZIP },
		{ "application/vnd.docker.image.rootfs.diff.tar.zstd", CODEC_ZSTD },
		{ "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", CODEC_GZIP },
	};
	if (mt) {
		for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
			if (strcmp(mt, table[i].mt) == 0) {
				*out = table[i].kind;
				return RS_OK;
			}
		}
		/* Other vendors' layer types follow the same suffix convention. */
		if (ends_with(mt, ".tar+gzip") || ends_with(mt, ".tar.gzip")) {
			*out = CODEC_GZIP;
			return RS_OK;
		}
		if (ends_with(mt, ".tar+zstd") || ends_with(mt, ".tar.zstd")) {
			*out = CODEC_ZSTD;
			return RS_OK;
		}
	}
	return rs_err_set(err, RS_UNSUPPORTED, "unsupported layer media type '%s'",
			  mt ? mt : "(none)");
}

enum codec_kind codec_kind_sniff(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	if (len >= 2 && p[0] == 0x1f && p[1] == 0x8b)
		return CODEC_GZIP;
	if (len >= 4 && p[0] == 0x28 && p[1] == 0xb5 && p[2] == 0x2f && p[3] == 0xfd)
		return CODEC_ZSTD;
	return CODEC_NONE;
}

enum codec_inflate_impl codec_inflate_default(void)
{
#ifdef REGSLIM_HAVE_ISAL
	/* bench/codec.sh: isa-l inflates the big fixture's layers ~2.5x faster. */
	return CODEC_INFLATE_ISAL;
#else
	return CODEC_INFLATE_ZLIB;
#endif
}

/* Push produced bytes on, after the expansion-ratio check. */
static enum rs_code emit(struct decoder *d, const uint8_t *buf, size_t len, struct rs_err *err)
{
	if (!len)
		return RS_OK;
	d->out += len;
	if (d->out > d->ratio_min && d->out / d->max_ratio >= d->in &&
	    d->out > d->max_ratio * d->in)
		return rs_err_set(err, RS_TOO_LARGE,
				  "%s: expands more than %" PRIu64 "x (%" PRIu64 " bytes from %" PRIu64
				  ") at compressed offset %" PRIu64 ", limit RS_LIMIT_EXPANSION_RATIO",
				  codec_kind_name(d->kind), d->max_ratio, d->out, d->in, d->in);
	return stream_write(d->next, buf, len, err);
}

/* ---- gzip via zlib ---------------------------------------------------- */

static enum rs_code zlib_feed(struct decoder *d, const uint8_t *buf, size_t len,
			      struct rs_err *err)
{
	z_stream *zs = &d->zs;
	zs->next_in = (Bytef *)buf;
	while (len > 0) {
		uInt chunk = len > (1u << 30) ? (1u << 30) : (uInt)len;
		zs->next_in = (Bytef *)buf;
		zs->avail_in = chunk;
		for (;;) {
			if (d->after_member) {
				if (zs->avail_in == 0)
					break;
				if (zs->next_in[0] != 0x1f)
					return rs_err_set(err, RS_BAD_INPUT,
							  "gzip: trailing garbage (byte 0x%02x) after the "
							  "member ending at compressed offset %" PRIu64,
							  zs->next_in[0], d->in);
				if (inflateReset(zs) != Z_OK)
					return rs_err_set(err, RS_BAD_INPUT, "gzip: cannot reset zlib");
				d->after_member = false;
			}
			if (zs->avail_in > 0)
				d->in_member = true;
			uInt before_in = zs->avail_in;
			zs->next_out = d->obuf;
			zs->avail_out = STREAM_BUF_SIZE;
			int r = inflate(zs, Z_NO_FLUSH);
			d->in += before_in - zs->avail_in;
			size_t produced = STREAM_BUF_SIZE - zs->avail_out;
			if (r == Z_DATA_ERROR || r == Z_NEED_DICT)
				return rs_err_set(err, RS_BAD_INPUT, "gzip: %s at compressed offset %" PRIu64,
						  zs->msg ? zs->msg : "invalid data", d->in);
			if (r == Z_MEM_ERROR)
				return rs_err_set(err, RS_NOMEM, "gzip: zlib out of memory");
			enum rs_code rc = emit(d, d->obuf, produced, err);
			if (rc)
				return rc;
			if (r == Z_STREAM_END) {
				d->in_member = false;
				d->after_member = true;
				continue;
			}
			if (r == Z_BUF_ERROR || (zs->avail_in == 0 && zs->avail_out != 0))
				break;
		}
		buf += chunk;
		len -= chunk;
	}
	return RS_OK;
}

/* ---- gzip via isa-l --------------------------------------------------- */

#ifdef REGSLIM_HAVE_ISAL
static const char *isal_reason(int r)
{
	switch (r) {
	case ISAL_INVALID_BLOCK:
		return "invalid deflate block";
	case ISAL_INVALID_SYMBOL:
		return "invalid deflate symbol";
	case ISAL_INVALID_LOOKBACK:
		return "invalid distance too far back";
	case ISAL_INVALID_WRAPPER:
		return "invalid gzip header";
	case ISAL_UNSUPPORTED_METHOD:
		return "unknown compression method";
	case ISAL_INCORRECT_CHECKSUM:
		return "incorrect data check";
	default:
		return "invalid data";
	}
}

static enum rs_code isal_feed(struct decoder *d, const uint8_t *buf, size_t len,
			      struct rs_err *err)
{
	struct inflate_state *st = d->isal;
	while (len > 0) {
		uint32_t chunk = len > (1u << 30) ? (1u << 30) : (uint32_t)len;
		st->next_in = (uint8_t *)buf;
		st->avail_in = chunk;
		for (;;) {
			if (d->after_member) {
				if (st->avail_in == 0)
					break;
				if (st->next_in[0] != 0x1f)
					return rs_err_set(err, RS_BAD_INPUT,
							  "gzip: trailing garbage (byte 0x%02x) after the "
							  "member ending at compressed offset %" PRIu64,
							  st->next_in[0], d->in);
				uint8_t *ni = st->next_in;
				uint32_t ai = st->avail_in;
				isal_inflate_reset(st);
				st->crc_flag = ISAL_GZIP;
				st->next_in = ni;
				st->avail_in = ai;
				d->after_member = false;
				d->member_start = d->in;
				d->flg_checked = false;
			}
			/* RFC 1952 2.3.1: reserved FLG bits must be zero and a decoder
			 * must refuse them. zlib does; isa-l does not check, so the two
			 * implementations would disagree on such input. */
			if (!d->flg_checked && d->member_start + 3 >= d->in &&
			    d->member_start + 3 < d->in + st->avail_in) {
				uint8_t flg = st->next_in[d->member_start + 3 - d->in];
				if (flg & 0xe0)
					return rs_err_set(err, RS_BAD_INPUT,
							  "gzip: reserved header flags 0x%02x set in the member at "
							  "compressed offset %" PRIu64,
							  flg, d->member_start);
				d->flg_checked = true;
			}
			if (st->avail_in > 0)
				d->in_member = true;
			uint32_t before_in = st->avail_in;
			st->next_out = d->obuf;
			st->avail_out = STREAM_BUF_SIZE;
			int r = isal_inflate(st);
			/* isa-l hands bytes it read ahead past a member's trailer back
			 * through next_in/avail_in, so this can go down. */
			d->in += (int64_t)before_in - (int64_t)st->avail_in;
			size_t produced = STREAM_BUF_SIZE - st->avail_out;
			if (r < 0)
				return rs_err_set(err, RS_BAD_INPUT, "gzip: %s at compressed offset %" PRIu64,
						  isal_reason(r), d->in);
			enum rs_code rc = emit(d, d->obuf, produced, err);
			if (rc)
				return rc;
			if (st->block_state == ISAL_BLOCK_FINISH) {
				d->in_member = false;
				d->after_member = true;
				continue;
			}
			if (st->avail_in == 0 && st->avail_out != 0)
				break;
			if (produced == 0 && before_in == st->avail_in)
				break; /* no progress: needs more input */
		}
		buf += chunk;
		len -= chunk;
	}
	return RS_OK;
}
#endif

/* ---- zstd ------------------------------------------------------------- */

static enum rs_code zstd_feed(struct decoder *d, const uint8_t *buf, size_t len,
			      struct rs_err *err)
{
	ZSTD_inBuffer in = { buf, len, 0 };
	for (;;) {
		ZSTD_outBuffer o = { d->obuf, STREAM_BUF_SIZE, 0 };
		size_t before = in.pos;
		size_t r = ZSTD_decompressStream(d->zd, &o, &in);
		d->in += in.pos - before;
		if (ZSTD_isError(r)) {
			if (ZSTD_getErrorCode(r) == ZSTD_error_frameParameter_windowTooLarge)
				return rs_err_set(err, RS_TOO_LARGE,
						  "zstd: frame at compressed offset %" PRIu64
						  " needs a window above 2^%u bytes "
						  "(RS_LIMIT_ZSTD_DECODE_WINDOW_LOG)",
						  d->frame_start, d->wlog_max);
			if (ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation)
				return rs_err_set(err, RS_NOMEM, "zstd: out of memory at compressed offset %" PRIu64,
						  d->in);
			return rs_err_set(err, RS_BAD_INPUT, "zstd: %s at compressed offset %" PRIu64,
					  ZSTD_getErrorName(r), d->in);
		}
		if (in.pos > before || o.pos > 0)
			d->in_member = r != 0;
		if (r == 0)
			d->frame_start = d->in;
		enum rs_code rc = emit(d, d->obuf, o.pos, err);
		if (rc)
			return rc;
		if (in.pos == in.size && o.pos < o.size)
			return RS_OK;
	}
}

/* ---- stage ------------------------------------------------------------ */

static enum rs_code feed(struct decoder *d, const uint8_t *buf, size_t len, struct rs_err *err)
{
	if (!len)
		return RS_OK;
	switch (d->kind) {
	case CODEC_NONE:
		d->in += len;
		return emit(d, buf, len, err);
	case CODEC_GZIP:
#ifdef REGSLIM_HAVE_ISAL
		if (d->impl == CODEC_INFLATE_ISAL)
			return isal_feed(d, buf, len, err);
#endif
		return zlib_feed(d, buf, len, err);
	case CODEC_ZSTD:
		return zstd_feed(d, buf, len, err);
	}
	return RS_OK;
}

static const char *magic_desc(enum codec_kind k)
{
	return k == CODEC_GZIP ? "1f 8b" : "28 b5 2f fd";
}

/* The announced kind must match the first bytes; a plain layer must not
 * look compressed. Called once with up to MAGIC_MAX bytes. */
static enum rs_code check_magic(struct decoder *d, struct rs_err *err)
{
	enum codec_kind seen = codec_kind_sniff(d->magic, d->magic_len);
	if (seen == d->kind)
		return RS_OK;
	/* a stream shorter than its magic: let finish call it truncated */
	static const uint8_t gz[] = { 0x1f, 0x8b }, zs[] = { 0x28, 0xb5, 0x2f, 0xfd };
	const uint8_t *want = d->kind == CODEC_GZIP ? gz : zs;
	size_t want_len = d->kind == CODEC_GZIP ? sizeof(gz) : sizeof(zs);
	if (d->kind != CODEC_NONE && d->magic_len < want_len &&
	    memcmp(d->magic, want, d->magic_len) == 0)
		return RS_OK;
	char hex[3 * MAGIC_MAX + 1] = "";
	size_t pos = 0;
	for (size_t i = 0; i < d->magic_len; i++)
		pos += (size_t)snprintf(hex + pos, sizeof(hex) - pos, "%s%02x", i ? " " : "",
					d->magic[i]);
	if (d->kind == CODEC_NONE)
		return rs_err_set(err, RS_BAD_INPUT,
				  "layer announced as uncompressed tar but starts with %s (%s)", hex,
				  codec_kind_name(seen));
	return rs_err_set(err, RS_BAD_INPUT, "layer announced as %s but starts with %s (%s%s)",
			  codec_kind_name(d->kind), d->magic_len ? hex : "(nothing)",
			  seen == CODEC_NONE ? "not " : "", seen == CODEC_NONE ? magic_desc(d->kind)
									     : codec_kind_name(seen));
}

static enum rs_code dec_write(struct stream_sink *self, const void *buf, size_t len,
			      struct rs_err *err)
{
	struct decoder *d = (struct decoder *)self;
	const uint8_t *p = buf;
	if (!len)
		return RS_OK;
	if (!d->magic_done) {
		size_t take = MAGIC_MAX - d->magic_len;
		if (take > len)
			take = len;
		memcpy(d->magic + d->magic_len, p, take);
		d->magic_len += take;
		p += take;
		len -= take;
		if (d->magic_len < MAGIC_MAX)
			return RS_OK;
		d->magic_done = true;
		enum rs_code rc = check_magic(d, err);
		if (!rc)
			rc = feed(d, d->magic, d->magic_len, err);
		if (rc)
			return rc;
	}
	return feed(d, p, len, err);
}

static enum rs_code dec_finish(struct stream_sink *self, struct rs_err *err)
{
	struct decoder *d = (struct decoder *)self;
	if (!d->magic_done) {
		d->magic_done = true;
		if (d->magic_len == 0 && d->kind != CODEC_NONE)
			return rs_err_set(err, RS_BAD_INPUT, "%s: truncated stream: no data",
					  codec_kind_name(d->kind));
		enum rs_code rc = d->magic_len ? check_magic(d, err) : RS_OK;
		if (!rc)
			rc = feed(d, d->magic, d->magic_len, err);
		if (rc)
			return rc;
	}
	if (d->in_member)
		return rs_err_set(err, RS_BAD_INPUT,
				  "%s: truncated stream: ended after %" PRIu64 " compressed bytes",
				  codec_kind_name(d->kind), d->in);
	return stream_finish(d->next, err);
}

static void dec_free(struct stream_sink *self)
{
	struct decoder *d = (struct decoder *)self;
	if (d->zs_ready)
		inflateEnd(&d->zs);
#ifdef REGSLIM_HAVE_ISAL
	free(d->isal);
#endif
	ZSTD_freeDCtx(d->zd);
	free(d->obuf);
	free(d);
}

static const struct stream_sink_ops dec_ops = { "decoder", dec_write, dec_finish, dec_free };

enum rs_code codec_decoder_new(struct stream_sink **out, enum codec_kind kind,
			       const struct codec_decode_opts *opts, struct stream_sink *next,
			       struct rs_err *err)
{
	static const struct codec_decode_opts defaults;
	if (!opts)
		opts = &defaults;
	enum codec_inflate_impl impl = opts->inflate ? opts->inflate : codec_inflate_default();
#ifndef REGSLIM_HAVE_ISAL
	if (impl == CODEC_INFLATE_ISAL)
		return rs_err_set(err, RS_UNSUPPORTED, "gzip: isa-l inflate is not built in");
#endif
	unsigned wlog = opts->zstd_window_log_max ? opts->zstd_window_log_max
						  : RS_LIMIT_ZSTD_DECODE_WINDOW_LOG;
	struct decoder *d = calloc(1, sizeof(*d));
	if (!d)
		return rs_err_set(err, RS_NOMEM, "%s: out of memory for a decoder",
				  codec_kind_name(kind));
	stream_sink_init(&d->base, &dec_ops);
	d->kind = kind;
	d->impl = impl;
	d->next = next;
	d->wlog_max = wlog;
	d->max_ratio = opts->max_ratio ? opts->max_ratio : RS_LIMIT_EXPANSION_RATIO;
	d->ratio_min = opts->ratio_min_bytes ? opts->ratio_min_bytes : RS_LIMIT_EXPANSION_MIN_BYTES;
	enum rs_code rc = RS_OK;
	if (kind != CODEC_NONE) {
		d->obuf = malloc(STREAM_BUF_SIZE);
		if (!d->obuf) {
			rc = rs_err_set(err, RS_NOMEM, "%s: out of memory for the output buffer",
					codec_kind_name(kind));
			goto out;
		}
	}
	if (kind == CODEC_GZIP && impl == CODEC_INFLATE_ZLIB) {
		int r = inflateInit2(&d->zs, 16 + MAX_WBITS);
		if (r != Z_OK) {
			rc = rs_err_set(err, RS_NOMEM, "gzip: zlib inflateInit2 failed (%d)", r);
			goto out;
		}
		d->zs_ready = true;
	}
#ifdef REGSLIM_HAVE_ISAL
	if (kind == CODEC_GZIP && impl == CODEC_INFLATE_ISAL) {
		d->isal = malloc(sizeof(*d->isal));
		if (!d->isal) {
			rc = rs_err_set(err, RS_NOMEM, "gzip: out of memory for isa-l state");
			goto out;
		}
		isal_inflate_init(d->isal);
		d->isal->crc_flag = ISAL_GZIP;
	}
#endif
	if (kind == CODEC_ZSTD) {
		d->zd = ZSTD_createDCtx();
		if (!d->zd) {
			rc = rs_err_set(err, RS_NOMEM, "zstd: out of memory for a decoder context");
			goto out;
		}
		size_t r = ZSTD_DCtx_setParameter(d->zd, ZSTD_d_windowLogMax, (int)wlog);
		if (ZSTD_isError(r)) {
			rc = rs_err_set(err, RS_BAD_INPUT, "zstd: window log %u refused: %s", wlog,
					ZSTD_getErrorName(r));
			goto out;
		}
	}
out:
	if (rc) {
		dec_free(&d->base);
		return rc;
	}
	*out = &d->base;
	return RS_OK;
}

void codec_decoder_counts(const struct stream_sink *s, uint64_t *in_out, uint64_t *out_out)
{
	assert(s->ops == &dec_ops);
	const struct decoder *d = (const struct decoder *)s;
	if (in_out)
		*in_out = d->in;
	if (out_out)
		*out_out = d->out;
}
