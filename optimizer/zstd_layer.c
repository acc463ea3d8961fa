/* zstd_layer: a zstd encoder stage with a fixed job size (see zstd_layer.h).
 * One STREAM_BUF_SIZE output buffer, pushes to the borrowed next. */
#include "zstd_layer.h"
#include "rs_limits.h"

#include <stdlib.h>
#include <zstd.h>
#include <zstd_errors.h>

struct zenc {
	struct stream_sink base;
	struct stream_sink *next;
	ZSTD_CCtx *zc;
	uint8_t *obuf;
};

static enum rs_code run(struct zenc *e, const void *buf, size_t len, ZSTD_EndDirective mode, struct rs_err *err)
{
	ZSTD_inBuffer in = {buf, len, 0};
	for (;;) {
		ZSTD_outBuffer o = {e->obuf, STREAM_BUF_SIZE, 0};
		size_t r = ZSTD_compressStream2(e->zc, &o, &in, mode);
		if (ZSTD_isError(r))
			return rs_err_set(err, ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ? RS_NOMEM : RS_IO,
					  "zstd: compression failed: %s", ZSTD_getErrorName(r));
		if (o.pos) {
			enum rs_code rc = stream_write(e->next, e->obuf, o.pos, err);
			if (rc != RS_OK)
				return rc;
		}
		if (mode == ZSTD_e_end ? r == 0 : in.pos == in.size)
			return RS_OK;
	}
}

static enum rs_code zwrite(struct stream_sink *self, const void *buf, size_t len, struct rs_err *err)
{
	if (!len)
		return RS_OK;
	return run((struct zenc *)self, buf, len, ZSTD_e_continue, err);
}

static enum rs_code zfinish(struct stream_sink *self, struct rs_err *err)
{
	struct zenc *e = (struct zenc *)self;
	enum rs_code rc = run(e, NULL, 0, ZSTD_e_end, err);
	if (rc != RS_OK)
		return rc;
	return stream_finish(e->next, err);
}

static void zfree(struct stream_sink *self)
{
	struct zenc *e = (struct zenc *)self;
	ZSTD_freeCCtx(e->zc);
	free(e->obuf);
	free(e);
}

static const struct stream_sink_ops zops = {"zstd", zwrite, zfinish, zfree};

enum rs_code zstd_layer_encoder_new(struct stream_sink **out, int level, unsigned threads, struct stream_sink *next,
				    struct rs_err *err)
{
	*out = NULL;
	if (!level)
		level = 3;
	if (!threads)
		threads = 1;
	if (level < 1 || level > ZSTD_maxCLevel())
		return rs_err_set(err, RS_BAD_INPUT, "zstd: level %d is outside 1..%d", level, ZSTD_maxCLevel());
	if (threads > 256)
		return rs_err_set(err, RS_BAD_INPUT, "zstd: %u threads, limit is 256", threads);
	struct zenc *e = calloc(1, sizeof(*e));
	if (!e)
		return rs_err_set(err, RS_NOMEM, "zstd: out of memory for an encoder");
	stream_sink_init(&e->base, &zops);
	e->next = next;
	e->obuf = malloc(STREAM_BUF_SIZE);
	e->zc = ZSTD_createCCtx();
	if (!e->obuf || !e->zc) {
		zfree(&e->base);
		return rs_err_set(err, RS_NOMEM, "zstd: out of memory for an encoder");
	}
	const struct {
		ZSTD_cParameter p;
		int v;
		const char *name;
	} params[] = {
		{ZSTD_c_compressionLevel, level, "level"},
		{ZSTD_c_windowLog, RS_LIMIT_ZSTD_WINDOW_LOG, "windowLog"},
		{ZSTD_c_checksumFlag, 1, "checksumFlag"},
		{ZSTD_c_contentSizeFlag, 0, "contentSizeFlag"},
		{ZSTD_c_dictIDFlag, 0, "dictIDFlag"},
		/* >= 1 always: the multithreaded format does not depend on the count */
		{ZSTD_c_nbWorkers, (int)threads, "nbWorkers"},
		{ZSTD_c_jobSize, (int)RS_LIMIT_ZSTD_JOB_BYTES, "jobSize"},
	};
	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
		size_t r = ZSTD_CCtx_setParameter(e->zc, params[i].p, params[i].v);
		if (ZSTD_isError(r)) {
			zfree(&e->base);
			return rs_err_set(err, RS_IO, "zstd: cannot set %s to %d: %s", params[i].name, params[i].v,
					  ZSTD_getErrorName(r));
		}
	}
	*out = &e->base;
	return RS_OK;
}
