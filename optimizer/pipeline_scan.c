/* pipeline_scan: pass 1 of the pipeline (pipeline_int.h). Each layer is
 * decoded, its compressed digest checked against the manifest and its
 * uncompressed digest against the config's diff_id, its tar parsed and every
 * entry's metadata and data identity recorded; the records are fed to
 * squash.c in layer order once all layers are read, so the plan never
 * depends on scheduling. Layers run in parallel (up to opts.threads); with
 * two or more threads, a layer's decoded bytes are hashed and parsed on a
 * thread of their own (handoff.h). The decompressed tars are kept in the
 * tar spool for pass 2 (below). Talks to codec, tar_read, squash, strip,
 * layout (staging files) and digest; no network. */
#include "pipeline_int.h"

#include "handoff.h"
#include "rs_limits.h"
#include "xxh64.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* ---- tar spool --------------------------------------------------------------- */

/* Pass 1 writes each layer's decompressed tar into a spool file so that pass
 * 2 reads it back instead of decoding the blob again. The spool is a cache,
 * never a source of errors: when a write fails (ENOSPC, EIO) or the image's
 * byte budget is used up, the spool is emptied and dropped, and pass 2
 * decodes that layer again. It is written from the tar reader's callbacks,
 * at the bytes' own offsets: headers through a small buffer, data straight
 * from the decoder's buffer. The data of an entry that a strip rule drops
 * for sure (squash all, a regular file) is not written at all and leaves a
 * hole; pass 2 seeks over it (tar_read_skip). Whether every hole was indeed
 * dropped is checked once the plan is made (pipeline_holes_check); a layer where one
 * was not (a file under a path a later layer made a directory, a hard-link
 * source) is decoded again. The file ends at the layer's full tar size
 * (what follows the last entry reads as zeros; pass 2 ignores it). */
struct spool_budget {
	_Atomic uint64_t used;
	uint64_t limit;
};

#define SPW_BUF (256u * 1024)
#define SPW_DIRECT (64u * 1024) /* chunks this large are written without a copy */

struct spw {
	int fd; /* -1 once dropped */
	struct spool_budget *budget;
	uint8_t *buf;
	size_t blen;
	uint64_t bstart; /* file offset of buf[0] */
};

static void spw_drop(struct spw *w)
{
	if (w->fd < 0)
		return;
	(void)ftruncate(w->fd, 0); /* give the space back at once; the fd is closed by the owner */
	w->fd = -1;
}

static void spw_pwrite(struct spw *w, const void *buf, size_t len, uint64_t off)
{
	if (w->fd < 0 || len == 0)
		return;
	uint64_t was = atomic_fetch_add(&w->budget->used, (uint64_t)len);
	if (was + len > w->budget->limit) {
		spw_drop(w);
		return;
	}
	const char *b = buf;
	while (len > 0) {
		ssize_t n = pwrite(w->fd, b, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			spw_drop(w);
			return;
		}
		b += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
}

static void spw_flush(struct spw *w)
{
	spw_pwrite(w, w->buf, w->blen, w->bstart);
	w->bstart += w->blen;
	w->blen = 0;
}

/* Bytes of the tar stream at offset off. */
static void spw_put(struct spw *w, uint64_t off, const void *buf, size_t len)
{
	if (w->fd < 0)
		return;
	if (off != w->bstart + w->blen) { /* after a hole */
		spw_flush(w);
		w->bstart = off;
	}
	if (len >= SPW_DIRECT) {
		spw_flush(w);
		spw_pwrite(w, buf, len, off);
		w->bstart = off + len;
		return;
	}
	if (w->blen + len > SPW_BUF)
		spw_flush(w);
	memcpy(w->buf + w->blen, buf, len);
	w->blen += len;
}

/* After the last entry: flush and give the file the tar's full size. True
 * when the spool holds the layer. */
static bool spw_end(struct spw *w, uint64_t size)
{
	spw_flush(w);
	if (w->fd >= 0 && ftruncate(w->fd, (off_t)size) != 0)
		spw_drop(w);
	return w->fd >= 0;
}

/* ---- pass 1 ----------------------------------------------------------------- */

/* Pass 1 runs one layer per worker thread (up to opts.threads at once). A
 * worker decodes and hashes its layer and records each entry's metadata in
 * its own buffer; the driving thread then feeds the records to squash.c in
 * layer order, so the plan (and the output) never depends on scheduling.
 * Record: u64 size, u64 header offset, u32 path length, u32 link length,
 * u8 type, SQUASH_IDENT_LEN identity, path NUL, link NUL. */
struct scan {
	uint8_t *rec;
	size_t len, cap;
	enum rs_code rc;
	struct rs_err err;
};

struct p1 {
	struct scan *sc;
	struct digest_ctx *id;
	bool fast;        /* data identity by XXH64 (squash all), else SHA-256 */
	struct xxh64 x;
	struct layer_in *l;
	struct spw *sw;                  /* NULL: no spool */
	const struct strip_rules *strip; /* squash all with a spool: holes for stripped files */
	struct strip_cache cache;
	uint64_t data_off;               /* spool offset of the next data byte */
};

/* A regular file a strip rule drops: with squash all nothing else can keep
 * it (holes_check verifies that once the plan is made), and its identity
 * only ever meets entries of the same path, which are stripped too. */
static bool hole_of(struct p1 *c, const struct tar_entry *e)
{
	if (!c->strip || e->size == 0 || (e->type != TAR_TYPE_FILE && e->type != TAR_TYPE_GNU_SPARSE))
		return false;
	return strip_path_rule(c->strip, e->path, &c->cache) >= 0;
}

static enum rs_code add_hole(struct layer_in *l, const struct tar_entry *e, struct rs_err *err)
{
	if (l->nholes + 2 > l->holes_cap) {
		size_t nc = l->holes_cap ? 2 * l->holes_cap : 256;
		uint64_t *h = realloc(l->holes, nc * sizeof(*h));
		if (!h)
			return rs_err_set(err, RS_NOMEM, "out of memory recording entry '%s'", e->path);
		l->holes = h;
		l->holes_cap = nc;
	}
	l->holes[l->nholes++] = e->index;
	l->holes[l->nholes++] = e->header_offset;
	return RS_OK;
}

static enum rs_code p1_entry(void *ctx, const struct tar_entry *e, const void *raw, size_t raw_len,
			     enum tar_verdict *verdict, struct rs_err *err)
{
	struct p1 *c = ctx;
	digest_reset(c->id);
	squash_identity_feed_meta(c->id, e);
	if (c->fast)
		xxh64_reset(&c->x);
	*verdict = e->size > 0 ? TAR_KEEP : TAR_DROP;
	bool hole = hole_of(c, e);
	if (hole)
		*verdict = TAR_DROP; /* neither hashed nor spooled: its identity never matters */
	if (!c->sw)
		return RS_OK;
	spw_put(c->sw, e->header_offset, raw, raw_len);
	c->data_off = e->data_offset;
	return hole ? add_hole(c->l, e, err) : RS_OK;
}

static enum rs_code p1_data(void *ctx, const struct tar_entry *e, const void *buf, size_t len, bool padding,
			    struct rs_err *err)
{
	(void)e;
	(void)err;
	struct p1 *c = ctx;
	if (c->sw) {
		spw_put(c->sw, c->data_off, buf, len);
		c->data_off += len;
	}
	if (padding)
		return RS_OK;
	if (c->fast)
		xxh64_update(&c->x, buf, len);
	else
		digest_update(c->id, buf, len);
	return RS_OK;
}

static enum rs_code p1_end(void *ctx, const struct tar_entry *e, enum tar_verdict v, struct rs_err *err)
{
	(void)v;
	struct p1 *c = ctx;
	struct scan *sc = c->sc;
	char d[DIGEST_STR_SIZE];
	if (c->fast && e->size > 0) {
		uint64_t h = xxh64_digest(&c->x);
		uint8_t hb[8];
		for (int i = 0; i < 8; i++)
			hb[i] = (uint8_t)(h >> (8 * i));
		digest_update(c->id, hb, sizeof(hb));
	}
	digest_final(c->id, d);
	uint32_t pl = (uint32_t)strlen(e->path), ll = (uint32_t)strlen(e->linkpath);
	size_t need = 8 + 8 + 4 + 4 + 1 + SQUASH_IDENT_LEN + pl + 1 + ll + 1;
	if (sc->len + need > sc->cap) {
		size_t nc = sc->cap ? sc->cap * 2 : 256 * 1024;
		while (nc < sc->len + need)
			nc *= 2;
		if (nc > RS_LIMIT_SCAN_RECORD_BYTES)
			nc = RS_LIMIT_SCAN_RECORD_BYTES;
		if (sc->len + need > nc)
			return rs_err_set(err, RS_TOO_LARGE,
					  "entry metadata of the layer passes %u bytes (RS_LIMIT_SCAN_RECORD_BYTES) at entry '%s'",
					  (unsigned)RS_LIMIT_SCAN_RECORD_BYTES, e->path);
		uint8_t *n = realloc(sc->rec, nc);
		if (!n)
			return rs_err_set(err, RS_NOMEM, "out of memory recording entry '%s'", e->path);
		sc->rec = n;
		sc->cap = nc;
	}
	uint8_t *w = sc->rec + sc->len;
	memcpy(w, &e->size, 8);
	memcpy(w + 8, &e->header_offset, 8);
	memcpy(w + 16, &pl, 4);
	memcpy(w + 20, &ll, 4);
	w[24] = (uint8_t)e->type;
	memcpy(w + 25, d + 7, SQUASH_IDENT_LEN);
	memcpy(w + 25 + SQUASH_IDENT_LEN, e->path, pl + 1);
	memcpy(w + 25 + SQUASH_IDENT_LEN + pl + 1, e->linkpath, ll + 1);
	sc->len += need;
	return RS_OK;
}

/* Decode, verify and record layer i (any thread). spool_fd >= 0: write the
 * decompressed tar into it (see "tar spool"); *spooled says whether it
 * holds the layer afterwards. strip: squash all's rules (holes), or NULL. */
static enum rs_code scan_layer(const struct pipeline_opts *o, struct layer_in *l, struct scan *sc, char *buf,
			       _Atomic uint64_t *counter, int spool_fd, struct spool_budget *budget,
			       const struct strip_rules *strip, bool *spooled, struct rs_err *err)
{
	struct p1 c = {sc, digest_new(), o->policy->squash == POLICY_SQUASH_ALL, {{0}, 0, {0}, 0}, l, NULL, NULL, {0}, 0};
	struct spw sw = {spool_fd, budget, NULL, 0, 0};
	struct tar_read_cbs cbs = {p1_entry, p1_data, p1_end};
	struct stream_sink *tar = NULL, *dsb = NULL, *as = NULL, *dec = NULL, *dsa = NULL;
	struct codec_decode_opts dopts = {0};
	dopts.inflate = o->inflate;
	enum rs_code rc = RS_OK;
	*spooled = false;
	if (c.fast)
		c.strip = strip;
	if (spool_fd >= 0) {
		sw.buf = malloc(SPW_BUF);
		c.sw = sw.buf ? &sw : NULL;
	}
	if (!c.id)
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
	if (rc == RS_OK)
		rc = tar_read_new(&tar, &cbs, &c, err);
	if (rc == RS_OK)
		rc = stream_digest_sink_new(&dsb, tar, err);
	if (rc == RS_OK && o->threads > 1) /* decode here, hash and parse on a second core */
		rc = handoff_new(&as, dsb, err);
	if (rc == RS_OK)
		rc = codec_decoder_new(&dec, l->kind, &dopts, as ? as : dsb, err);
	if (rc == RS_OK)
		rc = stream_digest_sink_new(&dsa, dec, err);
	if (rc == RS_OK)
		rc = pipeline_pump_buf(o, &l->range, dsa, buf, counter, err);
	if (rc == RS_OK)
		rc = stream_finish(dsa, err);
	if (rc != RS_OK && as) {
		/* a tar error on earlier bytes wins over the decoder's on later ones */
		struct rs_err e2 = {0};
		if (handoff_settle(as, &e2) != RS_OK && err && e2.code != RS_OK && strcmp(e2.msg, err->msg) != 0) {
			*err = e2;
			rc = e2.code;
		}
	}
	if (rc == RS_OK) {
		char got[DIGEST_STR_SIZE];
		uint64_t sz;
		stream_digest_sink_result(dsa, got, &sz);
		if (l->digest[0] && strcmp(got, l->digest) != 0)
			rc = rs_err_set(err, RS_DIGEST_MISMATCH, "blob content hashes to %s, the manifest says %s", got,
					l->digest);
		else if (!l->digest[0])
			memcpy(l->digest, got, DIGEST_STR_SIZE);
	}
	if (rc == RS_OK) {
		char got[DIGEST_STR_SIZE];
		stream_digest_sink_result(dsb, got, &l->uncompressed);
		if (strcmp(got, l->diff_id) != 0)
			rc = rs_err_set(err, RS_DIGEST_MISMATCH, "uncompressed content hashes to %s, the config's diff_id is %s",
					got, l->diff_id);
	}
	if (rc == RS_OK && c.sw)
		*spooled = spw_end(&sw, l->uncompressed);
	stream_free(dsa);
	stream_free(dec);
	stream_free(as); /* stops its thread before the stages it feeds go */
	stream_free(dsb);
	stream_free(tar);
	digest_free(c.id);
	free(sw.buf);
	strip_cache_dispose(&c.cache);
	return rc;
}

struct scan_job {
	const struct pipeline_opts *o;
	struct layer_in *layers;
	struct scan *scans;
	size_t n, next, running;
	_Atomic uint64_t bytes;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* tar spool: layers from spool_from on, at most RS_LIMIT_TAR_SPOOL_LAYERS
	 * (spool_open counts them); the budget is fixed by the first one. */
	struct layout_writer *w; /* NULL: no spooling; layout_writer_tmp under mu */
	size_t spool_from, spool_open;
	bool budget_set;
	const struct strip_rules *strip; /* the run's rules (holes, squash all) */
	uint64_t spool_max; /* 0: half the free space */
	struct spool_budget budget;
};

/* A new unlinked spool file for layer i, or -1 (no spooling: disabled, too
 * many layers, no budget, or the staging directory refused a file). */
static int spool_open(struct scan_job *j, size_t i)
{
	if (!j->w || i < j->spool_from)
		return -1;
	int fd = -1;
	char tmp[4200];
	struct rs_err e = {0};
	pthread_mutex_lock(&j->mu);
	if (j->spool_open < RS_LIMIT_TAR_SPOOL_LAYERS && (!j->budget_set || j->budget.used < j->budget.limit) &&
	    layout_writer_tmp(j->w, &fd, tmp, sizeof(tmp), &e) == RS_OK) {
		(void)unlink(tmp); /* anonymous: the fd keeps it until optimize_image closes it */
		if (!j->budget_set) {
			struct statvfs sv;
			uint64_t free_bytes = fstatvfs(fd, &sv) == 0 ? (uint64_t)sv.f_bavail * sv.f_frsize : 0;
			j->budget.limit = j->spool_max ? j->spool_max : free_bytes / 2;
			j->budget_set = true;
		}
		j->spool_open++;
	}
	pthread_mutex_unlock(&j->mu);
	return fd;
}

static void *scan_worker(void *arg)
{
	struct scan_job *j = arg;
	char *buf = malloc(PUMP_BUF);
	for (;;) {
		pthread_mutex_lock(&j->mu);
		size_t i = j->next < j->n ? j->next++ : j->n;
		pthread_mutex_unlock(&j->mu);
		if (i >= j->n)
			break;
		struct scan *sc = &j->scans[i];
		int fd = buf ? spool_open(j, i) : -1;
		bool spooled = false;
		if (!buf)
			sc->rc = rs_err_set(&sc->err, RS_NOMEM, "out of memory");
		else
			sc->rc = scan_layer(j->o, &j->layers[i], sc, buf, &j->bytes, fd, &j->budget, j->strip, &spooled,
					    &sc->err);
		if (fd >= 0 && spooled && lseek(fd, 0, SEEK_SET) == 0) {
			j->layers[i].tar_fd = fd;
		} else if (fd >= 0) {
			close(fd);
			pthread_mutex_lock(&j->mu);
			j->spool_open--;
			pthread_mutex_unlock(&j->mu);
		}
	}
	free(buf);
	pthread_mutex_lock(&j->mu);
	j->running--;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->mu);
	return NULL;
}

static enum rs_code replay(struct squash_plan *plan, size_t layer, const struct scan *sc, struct rs_err *err)
{
	size_t off = 0;
	uint64_t index = 0;
	while (off < sc->len) {
		const uint8_t *w = sc->rec + off;
		struct tar_entry e;
		memset(&e, 0, sizeof(e));
		uint32_t pl, ll;
		memcpy(&e.size, w, 8);
		memcpy(&e.header_offset, w + 8, 8);
		memcpy(&pl, w + 16, 4);
		memcpy(&ll, w + 20, 4);
		e.type = (char)w[24];
		e.path = (const char *)w + 25 + SQUASH_IDENT_LEN;
		e.linkpath = e.path + pl + 1;
		e.uname = e.gname = "";
		e.index = index++;
		enum rs_code rc = squash_add(plan, layer, &e, (const char *)w + 25, err);
		if (rc != RS_OK)
			return rc;
		off += 25 + SQUASH_IDENT_LEN + pl + 1 + ll + 1;
	}
	return RS_OK;
}

enum rs_code pipeline_scan(struct run *r, struct squash_plan *plan, struct layer_in *layers, size_t n,
			   size_t spool_from, struct rs_err *err)
{
	struct scan_job j;
	memset(&j, 0, sizeof(j));
	j.o = r->o;
	j.layers = layers;
	j.n = n;
	j.w = r->spool_tar ? r->w : NULL;
	j.spool_from = spool_from; /* base layers are copied, not read again */
	j.spool_max = r->spool_max;
	j.strip = r->strip;
	j.scans = calloc(n ? n : 1, sizeof(*j.scans));
	if (!j.scans)
		return rs_err_set(err, RS_NOMEM, "out of memory");
	pthread_mutex_init(&j.mu, NULL);
	pthread_cond_init(&j.cv, NULL);
	size_t k = r->o->threads ? r->o->threads : 1;
	if (k > n)
		k = n;
	pthread_t *tids = calloc(k ? k : 1, sizeof(pthread_t));
	enum rs_code rc = tids ? RS_OK : rs_err_set(err, RS_NOMEM, "out of memory");
	size_t started = 0;
	for (size_t t = 0; rc == RS_OK && t < k; t++) {
		pthread_mutex_lock(&j.mu);
		j.running++;
		pthread_mutex_unlock(&j.mu);
		if (pthread_create(&tids[t], NULL, scan_worker, &j) != 0) {
			pthread_mutex_lock(&j.mu);
			j.running--;
			pthread_mutex_unlock(&j.mu);
			if (started == 0)
				rc = rs_err_set(err, RS_IO, "cannot start a scan thread");
			break;
		}
		started++;
	}
	r->phase = "scan";
	r->layer = 0;
	r->layer_count = n;
	uint64_t base = r->done;
	pthread_mutex_lock(&j.mu);
	while (j.running > 0) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&j.cv, &j.mu, &ts);
		r->done = base + j.bytes;
		r->layer = j.next ? j.next - 1 : 0;
		pthread_mutex_unlock(&j.mu);
		pipeline_progress_report(r);
		pthread_mutex_lock(&j.mu);
	}
	pthread_mutex_unlock(&j.mu);
	for (size_t t = 0; t < started; t++)
		pthread_join(tids[t], NULL);
	r->done = base + j.bytes;
	for (size_t i = 0; rc == RS_OK && i < n; i++) {
		if (j.scans[i].rc != RS_OK) {
			rc = j.scans[i].rc;
			if (err)
				*err = j.scans[i].err;
		} else {
			rc = replay(plan, i, &j.scans[i], err);
		}
		if (rc != RS_OK)
			pipeline_layer_prefix(err, i, n, &layers[i]);
		free(j.scans[i].rec);
		j.scans[i].rec = NULL;
	}
	for (size_t i = 0; i < n; i++)
		free(j.scans[i].rec);
	free(j.scans);
	free(tids);
	pthread_cond_destroy(&j.cv);
	pthread_mutex_destroy(&j.mu);
	return rc;
}
