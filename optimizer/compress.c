/* compress: the encoder stages of codec.h. zstd always runs with
 * nbWorkers >= 1: libzstd's multithreaded mode cuts jobs at fixed sizes, so
 * its output does not depend on the worker count or on how the input is
 * split, which the single-threaded mode does not promise. gzip is pgzip.c:
 * fixed chunks compressed in parallel by libdeflate, one member each, for
 * the same reason. Each encoder owns one STREAM_BUF_SIZE output buffer and
 * pushes to its borrowed `next`. */
#include "codec.h"

#include "pgzip.h"
#include "rs_limits.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

struct encoder {
	struct stream_sink base;
	enum codec_kind kind;
	struct stream_sink *next;
	uint8_t *obuf;
	ZSTD_CCtx *zc;
};

static enum rs_code zstd_run(struct encoder *e, const void *buf, size_t len,
			     ZSTD_EndDirective mode, struct rs_err *err)
{
	ZSTD_inBuffer in = { buf, len, 0 };
	for (;;) {
		ZSTD_outBuffer o = { e->obuf, STREAM_BUF_SIZE, 0 };
		size_t r = ZSTD_compressStream2(e->zc, &o, &in, mode);
		if (ZSTD_isError(r))
			return rs_err_set(err,
					  ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ? RS_NOMEM
											       : RS_IO,
					  "zstd: compression failed: %s", ZSTD_getErrorName(r));
		if (o.pos) {
			enum rs_code rc = stream_write(e->next, e->obuf, o.pos, err);
			if (rc)
				return rc;
		}
		if (mode == ZSTD_e_end ? r == 0 : in.pos == in.size)
			return RS_OK;
	}
}

static enum rs_code enc_write(struct stream_sink *self, const void *buf, size_t len,
			      struct rs_err *err)
{
	struct encoder *e = (struct encoder *)self;
	if (!len)
		return RS_OK;
	switch (e->kind) {
	case CODEC_ZSTD:
		return zstd_run(e, buf, len, ZSTD_e_continue, err);
	case CODEC_GZIP: /* pgzip.c's own stage */
	case CODEC_NONE:
		break;
	}
	return stream_write(e->next, buf, len, err);
}

static enum rs_code enc_finish(struct stream_sink *self, struct rs_err *err)
{
	struct encoder *e = (struct encoder *)self;
	enum rs_code rc = RS_OK;
	if (e->kind == CODEC_ZSTD)
		rc = zstd_run(e, NULL, 0, ZSTD_e_end, err);
	if (rc)
		return rc;
	return stream_finish(e->next, err);
}

static void enc_free(struct stream_sink *self)
{
	struct encoder *e = (struct encoder *)self;
	ZSTD_freeCCtx(e->zc);
	free(e->obuf);
	free(e);
}

static const struct stream_sink_ops enc_ops = { "encoder", enc_write, enc_finish, enc_free };

#define ZSET(param, value)                                                                     \
	do {                                                                                   \
		size_t r_ = ZSTD_CCtx_setParameter(e->zc, (param), (value));                   \
		if (ZSTD_isError(r_)) {                                                        \
			rc = rs_err_set(err, RS_IO, "zstd: cannot set %s to %d: %s", #param,    \
					(int)(value), ZSTD_getErrorName(r_));                  \
			goto out;                                                              \
		}                                                                              \
	} while (0)

enum rs_code codec_encoder_new(struct stream_sink **out, const struct codec_encode_opts *opts,
			       struct stream_sink *next, struct rs_err *err)
{
	int level = opts->level;
	unsigned threads = opts->threads ? opts->threads : 1;
	unsigned wlog = opts->zstd_window_log ? opts->zstd_window_log : RS_LIMIT_ZSTD_WINDOW_LOG;
	switch (opts->kind) {
	case CODEC_ZSTD:
		if (!level)
			level = 3;
		if (level < 1 || level > ZSTD_maxCLevel())
			return rs_err_set(err, RS_BAD_INPUT, "zstd: level %d is outside 1..%d", level,
					  ZSTD_maxCLevel());
		if (wlog > RS_LIMIT_ZSTD_WINDOW_LOG || wlog < 10)
			return rs_err_set(err, RS_BAD_INPUT,
					  "zstd: window log %u is outside %d..%d "
					  "(RS_LIMIT_ZSTD_WINDOW_LOG)",
					  wlog, 10, RS_LIMIT_ZSTD_WINDOW_LOG);
		if (threads > 256)
			return rs_err_set(err, RS_BAD_INPUT, "zstd: %u threads, limit is 256",
					  threads);
		break;
	case CODEC_GZIP:
		/* libdeflate's 3: within 2.5 % of zlib -6's size on the big
		 * fixture at 70 % of libdeflate -6's CPU (docs/optimizer.md) */
		if (!level)
			level = 3;
		return pgzip_encoder_new(out, level, threads, 0, next, err);
	case CODEC_NONE:
		break;
	default:
		return rs_err_set(err, RS_BAD_INPUT, "encoder: unknown kind %d", (int)opts->kind);
	}
	struct encoder *e = calloc(1, sizeof(*e));
	if (!e)
		return rs_err_set(err, RS_NOMEM, "%s: out of memory for an encoder",
				  codec_kind_name(opts->kind));
	stream_sink_init(&e->base, &enc_ops);
	e->kind = opts->kind;
	e->next = next;
	enum rs_code rc = RS_OK;
	if (e->kind != CODEC_NONE) {
		e->obuf = malloc(STREAM_BUF_SIZE);
		if (!e->obuf) {
			rc = rs_err_set(err, RS_NOMEM, "%s: out of memory for the output buffer",
					codec_kind_name(e->kind));
			goto out;
		}
	}
	if (e->kind == CODEC_ZSTD) {
		e->zc = ZSTD_createCCtx();
		if (!e->zc) {
			rc = rs_err_set(err, RS_NOMEM, "zstd: out of memory for a compression context");
			goto out;
		}
		ZSET(ZSTD_c_compressionLevel, level);
		ZSET(ZSTD_c_windowLog, (int)wlog);
		ZSET(ZSTD_c_checksumFlag, 1);
		ZSET(ZSTD_c_contentSizeFlag, 0);
		ZSET(ZSTD_c_dictIDFlag, 0);
		/* >= 1 always: see the file comment. */
		ZSET(ZSTD_c_nbWorkers, (int)threads);
		if (opts->zstd_job_bytes)
			ZSET(ZSTD_c_jobSize, (int)opts->zstd_job_bytes);
	}
out:
	if (rc) {
		enc_free(&e->base);
		return rc;
	}
	*out = &e->base;
	return RS_OK;
}
