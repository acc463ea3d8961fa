/* pipeline: drives the optimizer over a source layout into a destination
 * layout (see pipeline.h). Chains per layer:
 *   pass 1: file range -> digest (compressed) -> decoder -> [async, with
 *           two or more threads] -> digest (diff_id) -> tar_read ->
 *           squash_add (metadata + data identity), and the tar into a
 *           spool file (see "tar spool")
 *   pass 2: tar spool (seeking over dropped data), or file range ->
 *           decoder (no spool) -> tar_read ->
 *           decisions -> raw copy / synthesized headers -> digest (diff_id)
 *           -> encoder -> digest -> blob file in the staging directory
 * It talks to layout.c (files), squash.c (decisions), codec/tar stages and
 * config/imagejson.c (documents). No network, no clock. */
#include "pipeline.h"
#include "digest.h"
#include "image.h"
#include "imagejson.h"
#include "layout.h"
#include "rs_limits.h"
#include "squash.h"
#include "stream.h"
#include "strip.h"
#include "tar_read.h"
#include "tar_sparse.h"
#include "tar_write.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define PUMP_BUF (256u * 1024)

#ifndef REGSLIM_VERSION
#define REGSLIM_VERSION "0"
#endif

struct layer_in {
	struct layout_range range;
	enum codec_kind kind;
	const char *media_type; /* borrowed from the manifest */
	char digest[DIGEST_STR_SIZE]; /* "" when unknown (docker-archive) */
	char diff_id[DIGEST_STR_SIZE];
	uint64_t uncompressed;
	/* The decompressed tar pass 1 spooled (an unlinked file in the staging
	 * directory), or -1: pass 2 decodes the blob again. Owned by
	 * optimize_image, which closes it on every path. */
	int tar_fd;
	/* Entries whose data the spool left out (see "tar spool"): pairs of
	 * entry index and header offset. Owned by optimize_image. */
	uint64_t *holes;
	size_t nholes, holes_cap;
};

struct spool_slot {
	bool filled;
	struct tar_entry meta;
	char *strs[5];
	struct tar_xattr *x;
	uint8_t *raw; /* sparse sources: the raw headers (their sparse map) */
	size_t raw_len;
	uint64_t off;
};

struct spool {
	int fd;
	uint64_t end;
	struct spool_slot *slots;
	uint32_t n;
};

struct run {
	const struct pipeline_opts *o;
	struct report *rep;
	struct layout_src *src;
	struct layout_writer *w;
	struct strip_rules *strip;
	char policy_digest[DIGEST_STR_SIZE];
	char *buf;  /* PUMP_BUF: compressed input of pass 2 */
	char *tbuf; /* PUMP_BUF: tar spool input of pass 2 */
	char *mbuf; /* PUMP_BUF: hard-link spool reads (the decoder and the tar
		     * reader still point into the input buffer meanwhile) */
	bool spool_tar;     /* pass 1 spools decompressed tars (REGSLIM_TAR_SPOOL) */
	uint64_t spool_max; /* their byte budget per image; 0: half the free space */
	uint64_t done, total;
	size_t image, image_count;
	const char *phase;
	size_t layer, layer_count;
	/* results by source manifest digest, for indexes naming one twice */
	struct done_image {
		char src[DIGEST_STR_SIZE];
		struct imagejson_descriptor out;
	} *dones;
	size_t done_count;
};

static void progress(struct run *r)
{
	if (!r->o->progress)
		return;
	struct pipeline_progress p = {r->phase, r->image, r->image_count, r->layer, r->layer_count, r->done,
				      r->total < r->done ? r->done : r->total};
	r->o->progress(r->o->progress_ctx, &p);
}

enum rs_code pipeline_policy_digest(char out[DIGEST_STR_SIZE], const struct policy *p, struct rs_err *err)
{
	char *c;
	size_t n;
	enum rs_code rc = policy_canonical(&c, &n, p, err);
	if (rc != RS_OK)
		return rc;
	digest_buffer(out, c, n);
	free(c);
	return RS_OK;
}

/* Stream a file range into head through buf (PUMP_BUF bytes). counter, when
 * not NULL, is advanced as bytes go (shared with the progress display). */
static enum rs_code pump_buf(const struct layout_range *rg, struct stream_sink *head, char *buf,
			     _Atomic uint64_t *counter, struct rs_err *err)
{
	uint64_t done = 0;
	while (done < rg->size) {
		size_t want = rg->size - done > PUMP_BUF ? PUMP_BUF : (size_t)(rg->size - done);
		ssize_t n = pread(rg->fd, buf, want, (off_t)(rg->offset + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return rs_err_set(err, RS_IO, "read failed at offset %" PRIu64 ": %s", done, strerror(errno));
		if (n == 0)
			return rs_err_set(err, RS_BAD_INPUT, "file ended at %" PRIu64 " of %" PRIu64 " bytes", done,
					  rg->size);
		enum rs_code rc = stream_write(head, buf, (size_t)n, err);
		if (rc != RS_OK)
			return rc;
		done += (uint64_t)n;
		if (counter)
			*counter += (uint64_t)n;
	}
	return RS_OK;
}

/* pump_buf from the driving thread, with progress reports. */
static enum rs_code pump(struct run *r, const struct layout_range *rg, struct stream_sink *head,
			 struct rs_err *err)
{
	struct layout_range part = *rg;
	uint64_t done = 0;
	while (done < rg->size) {
		part.offset = rg->offset + done;
		part.size = rg->size - done > 16 * PUMP_BUF ? 16 * PUMP_BUF : rg->size - done;
		enum rs_code rc = pump_buf(&part, head, r->buf, NULL, err);
		if (rc != RS_OK)
			return rc;
		done += part.size;
		r->done += part.size;
		progress(r);
	}
	return RS_OK;
}

static void layer_prefix(struct rs_err *err, size_t i, size_t n, const struct layer_in *l)
{
	rs_err_prefix(err, "layer %zu/%zu (%.19s): ", i + 1, n, l->digest[0] ? l->digest : l->diff_id);
}

/* ---- pass 1 ---------------------------------------------------------------- */

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
 * dropped is checked once the plan is made (holes_check); a layer where one
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

/* XXH64 (Yann Collet's xxHash, 64-bit), streaming. Used only for the data
 * identity of entries when the squash mode is "all": there the identity only
 * counts duplicates in the report (the output is the same either way), so a
 * fast non-cryptographic hash is enough. Modes where dedupe drops entries
 * hash data with SHA-256. */
#define XP1 0x9E3779B185EBCA87ull
#define XP2 0xC2B2AE3D27D4EB4Full
#define XP3 0x165667B19E3779F9ull
#define XP4 0x85EBCA77C2B2AE63ull
#define XP5 0x27D4EB2F165667C5ull

struct xxh64 {
	uint64_t v[4];
	uint64_t total;
	uint8_t mem[32];
	size_t memsize;
};

static uint64_t rotl64(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

static uint64_t rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v; /* little-endian hosts; the value only has to be stable per host */
}

static uint32_t rd32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static uint64_t xround(uint64_t acc, uint64_t in)
{
	acc += in * XP2;
	return rotl64(acc, 31) * XP1;
}

static uint64_t xmerge(uint64_t acc, uint64_t val)
{
	acc ^= xround(0, val);
	return acc * XP1 + XP4;
}

static void xxh64_reset(struct xxh64 *s)
{
	memset(s, 0, sizeof(*s));
	s->v[0] = XP1 + XP2;
	s->v[1] = XP2;
	s->v[2] = 0;
	s->v[3] = (uint64_t)0 - XP1;
}

static void xxh64_update(struct xxh64 *s, const void *buf, size_t len)
{
	const uint8_t *p = buf, *end = p + len;
	s->total += len;
	if (s->memsize + len < 32) {
		memcpy(s->mem + s->memsize, p, len);
		s->memsize += len;
		return;
	}
	if (s->memsize) {
		size_t take = 32 - s->memsize;
		memcpy(s->mem + s->memsize, p, take);
		for (int i = 0; i < 4; i++)
			s->v[i] = xround(s->v[i], rd64(s->mem + 8 * i));
		p += take;
		s->memsize = 0;
	}
	while (p + 32 <= end) {
		for (int i = 0; i < 4; i++)
			s->v[i] = xround(s->v[i], rd64(p + 8 * i));
		p += 32;
	}
	if (p < end) {
		memcpy(s->mem, p, (size_t)(end - p));
		s->memsize = (size_t)(end - p);
	}
}

static uint64_t xxh64_digest(const struct xxh64 *s)
{
	uint64_t h;
	if (s->total >= 32) {
		h = rotl64(s->v[0], 1) + rotl64(s->v[1], 7) + rotl64(s->v[2], 12) + rotl64(s->v[3], 18);
		for (int i = 0; i < 4; i++)
			h = xmerge(h, s->v[i]);
	} else {
		h = s->v[2] + XP5;
	}
	h += s->total;
	const uint8_t *p = s->mem, *end = s->mem + s->memsize;
	while (p + 8 <= end) {
		h ^= xround(0, rd64(p));
		h = rotl64(h, 27) * XP1 + XP4;
		p += 8;
	}
	if (p + 4 <= end) {
		h ^= (uint64_t)rd32(p) * XP1;
		h = rotl64(h, 23) * XP2 + XP3;
		p += 4;
	}
	while (p < end) {
		h ^= (*p++) * XP5;
		h = rotl64(h, 11) * XP1;
	}
	h ^= h >> 33;
	h *= XP2;
	h ^= h >> 29;
	h *= XP3;
	h ^= h >> 32;
	return h;
}

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

/* ---- async hand-off ------------------------------------------------------- */

/* A stage that hands its input to a thread of its own, which pushes it into
 * next, so that a layer's scan runs on two cores: decoding on the caller's
 * thread, hashing, spooling and tar parsing on the stage's. Bytes are copied
 * into a fixed ring of ASYNC_SLOTS buffers (bounded memory; the producer
 * waits when the ring is full) and reach next in order, so next sees exactly
 * the bytes a direct chain would. After next fails, the rest is discarded
 * and the producer gets next's code and message at its next write or at
 * finish. */
#define ASYNC_SLOTS 4
#define ASYNC_SLOT_BYTES (256u * 1024)

struct async {
	struct stream_sink base;
	struct stream_sink *next;
	pthread_t th;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t cv_prod, cv_cons;
	uint8_t *slot[ASYNC_SLOTS];
	size_t slot_len[ASYNC_SLOTS];
	size_t head, count; /* published slots, consumed from head (under mu) */
	size_t tail, fill;  /* the slot being filled and its bytes (producer only) */
	bool eof;
	enum rs_code crc; /* next's failure, set under mu */
	struct rs_err cerr;
};

static void *async_main(void *arg)
{
	struct async *a = arg;
	pthread_mutex_lock(&a->mu);
	for (;;) {
		while (a->count == 0 && !a->eof)
			pthread_cond_wait(&a->cv_cons, &a->mu);
		if (a->count == 0)
			break;
		size_t k = a->head;
		bool failed = a->crc != RS_OK;
		pthread_mutex_unlock(&a->mu);
		enum rs_code rc = failed ? RS_OK : stream_write(a->next, a->slot[k], a->slot_len[k], &a->cerr);
		pthread_mutex_lock(&a->mu);
		if (rc != RS_OK)
			a->crc = rc;
		a->head = (a->head + 1) % ASYNC_SLOTS;
		a->count--;
		pthread_cond_signal(&a->cv_prod);
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

static enum rs_code async_failed(struct async *a, struct rs_err *err)
{
	if (err)
		*err = a->cerr;
	return a->crc;
}

/* Publish the slot being filled (caller holds nothing). */
static void async_publish(struct async *a)
{
	pthread_mutex_lock(&a->mu);
	a->slot_len[a->tail] = a->fill;
	a->count++;
	a->fill = 0;
	pthread_cond_signal(&a->cv_cons);
	pthread_mutex_unlock(&a->mu);
}

static enum rs_code async_write(struct stream_sink *self, const void *buf, size_t len, struct rs_err *err)
{
	struct async *a = (struct async *)self;
	const uint8_t *b = buf;
	while (len > 0) {
		if (a->fill == 0) { /* a fresh slot: wait for room */
			pthread_mutex_lock(&a->mu);
			while (a->count == ASYNC_SLOTS && a->crc == RS_OK)
				pthread_cond_wait(&a->cv_prod, &a->mu);
			enum rs_code crc = a->crc;
			a->tail = (a->head + a->count) % ASYNC_SLOTS; /* not published: the thread leaves it alone */
			pthread_mutex_unlock(&a->mu);
			if (crc != RS_OK)
				return async_failed(a, err);
		}
		size_t take = ASYNC_SLOT_BYTES - a->fill < len ? ASYNC_SLOT_BYTES - a->fill : len;
		memcpy(a->slot[a->tail] + a->fill, b, take);
		a->fill += take;
		b += take;
		len -= take;
		if (a->fill == ASYNC_SLOT_BYTES)
			async_publish(a);
	}
	return RS_OK;
}

/* Publish what is pending, wait until the thread has taken everything, stop it. */
static void async_stop(struct async *a)
{
	if (!a->started)
		return;
	if (a->fill > 0)
		async_publish(a);
	pthread_mutex_lock(&a->mu);
	a->eof = true;
	pthread_cond_signal(&a->cv_cons);
	pthread_mutex_unlock(&a->mu);
	pthread_join(a->th, NULL);
	a->started = false;
}

static enum rs_code async_finish(struct stream_sink *self, struct rs_err *err)
{
	struct async *a = (struct async *)self;
	async_stop(a);
	if (a->crc != RS_OK)
		return async_failed(a, err);
	return stream_finish(a->next, err);
}

/* After a failure upstream of s (an async stage, or NULL): the bytes s had
 * already taken come before the failing ones, so a failure of next on them
 * is the one to report. Returns RS_OK when next did not fail. */
static enum rs_code async_settle(struct stream_sink *s, struct rs_err *err)
{
	if (!s || s->ops->write != async_write)
		return RS_OK;
	struct async *a = (struct async *)s;
	async_stop(a);
	return a->crc != RS_OK ? async_failed(a, err) : RS_OK;
}

static void async_free(struct stream_sink *self)
{
	struct async *a = (struct async *)self;
	async_stop(a);
	for (size_t k = 0; k < ASYNC_SLOTS; k++)
		free(a->slot[k]);
	pthread_cond_destroy(&a->cv_prod);
	pthread_cond_destroy(&a->cv_cons);
	pthread_mutex_destroy(&a->mu);
	free(a);
}

static const struct stream_sink_ops async_ops = {"async", async_write, async_finish, async_free};

static enum rs_code async_new(struct stream_sink **out, struct stream_sink *next, struct rs_err *err)
{
	struct async *a = calloc(1, sizeof(*a));
	if (!a)
		return rs_err_set(err, RS_NOMEM, "out of memory");
	stream_sink_init(&a->base, &async_ops);
	a->next = next;
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv_prod, NULL);
	pthread_cond_init(&a->cv_cons, NULL);
	bool ok = true;
	for (size_t k = 0; k < ASYNC_SLOTS; k++)
		ok = ok && (a->slot[k] = malloc(ASYNC_SLOT_BYTES)) != NULL;
	if (ok && pthread_create(&a->th, NULL, async_main, a) == 0)
		a->started = true;
	if (!a->started) {
		async_free(&a->base);
		return ok ? rs_err_set(err, RS_IO, "cannot start a scan thread") : rs_err_set(err, RS_NOMEM, "out of memory");
	}
	*out = &a->base;
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
		rc = async_new(&as, dsb, err);
	if (rc == RS_OK)
		rc = codec_decoder_new(&dec, l->kind, &dopts, as ? as : dsb, err);
	if (rc == RS_OK)
		rc = stream_digest_sink_new(&dsa, dec, err);
	if (rc == RS_OK)
		rc = pump_buf(&l->range, dsa, buf, counter, err);
	if (rc == RS_OK)
		rc = stream_finish(dsa, err);
	if (rc != RS_OK && as) {
		/* a tar error on earlier bytes wins over the decoder's on later ones */
		struct rs_err e2 = {0};
		if (async_settle(as, &e2) != RS_OK && err && e2.code != RS_OK && strcmp(e2.msg, err->msg) != 0) {
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

/* Pass 1 over all layers; the first failing layer (in layer order) names the error. */
static enum rs_code pass1(struct run *r, struct squash_plan *plan, struct layer_in *layers, size_t n,
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
		progress(r);
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
			layer_prefix(err, i, n, &layers[i]);
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

/* ---- spool ------------------------------------------------------------------ */

static void spool_dispose(struct spool *s)
{
	if (s->fd >= 0)
		close(s->fd);
	for (uint32_t i = 0; i < s->n; i++) {
		for (int k = 0; k < 5; k++)
			free(s->slots[i].strs[k]);
		if (s->slots[i].x)
			for (size_t k = 0; k < s->slots[i].meta.xattr_count; k++) {
				free((char *)s->slots[i].x[k].name);
				free((void *)s->slots[i].x[k].value);
			}
		free(s->slots[i].x);
		free(s->slots[i].raw);
	}
	free(s->slots);
	memset(s, 0, sizeof(*s));
	s->fd = -1;
}

static enum rs_code spool_keep_meta(struct spool *s, uint32_t slot, const struct tar_entry *e, const void *raw,
				    size_t raw_len, struct rs_err *err)
{
	struct spool_slot *sl = &s->slots[slot];
	sl->meta = *e;
	if (e->sparse) {
		sl->raw = malloc(raw_len);
		if (!sl->raw)
			return rs_err_set(err, RS_NOMEM, "out of memory spooling %s", e->path);
		memcpy(sl->raw, raw, raw_len);
		sl->raw_len = raw_len;
	}
	const char *src[5] = {e->path, e->linkpath, e->uname, e->gname, e->mtime_pax};
	for (int k = 0; k < 5; k++) {
		sl->strs[k] = report_strdup(src[k]);
		if (src[k] && !sl->strs[k])
			return rs_err_set(err, RS_NOMEM, "out of memory spooling %s", e->path);
	}
	sl->meta.path = sl->strs[0];
	sl->meta.linkpath = sl->strs[1];
	sl->meta.uname = sl->strs[2];
	sl->meta.gname = sl->strs[3];
	sl->meta.mtime_pax = sl->strs[4];
	sl->meta.xattrs = NULL;
	if (e->xattr_count) {
		sl->x = calloc(e->xattr_count, sizeof(*sl->x));
		if (!sl->x)
			return rs_err_set(err, RS_NOMEM, "out of memory spooling %s", e->path);
		for (size_t k = 0; k < e->xattr_count; k++) {
			sl->x[k].name = report_strdup(e->xattrs[k].name);
			void *v = malloc(e->xattrs[k].value_len + 1);
			if (v)
				memcpy(v, e->xattrs[k].value, e->xattrs[k].value_len);
			sl->x[k].value = v;
			sl->x[k].value_len = e->xattrs[k].value_len;
			if (!sl->x[k].name || !v)
				return rs_err_set(err, RS_NOMEM, "out of memory spooling %s", e->path);
		}
		sl->meta.xattrs = sl->x;
	}
	sl->off = s->end;
	sl->filled = true;
	return RS_OK;
}

static enum rs_code spool_append(struct spool *s, const void *buf, size_t len, struct rs_err *err)
{
	const char *b = buf;
	while (len > 0) {
		ssize_t n = pwrite(s->fd, b, len, (off_t)s->end);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return rs_err_set(err, RS_IO, "hard-link spool: write failed: %s", strerror(errno));
		b += n;
		len -= (size_t)n;
		s->end += (uint64_t)n;
	}
	return RS_OK;
}

/* ---- pass 2 ----------------------------------------------------------------- */

struct p2 {
	struct run *r;
	struct squash_plan *plan;
	size_t layer;
	struct stream_sink *out; /* NULL: spool only */
	struct spool *sp;
	bool writing, spooling;
};

/* A hard link whose inode lost every surviving copy becomes a regular file
 * with the source's metadata and data. A sparse source is written expanded
 * (holes as zeros): synthesized headers are never sparse (tar_write.h). */
static enum rs_code write_materialized(struct p2 *c, const struct tar_entry *e, uint32_t slot, struct rs_err *err)
{
	if (slot >= c->sp->n || !c->sp->slots[slot].filled)
		return rs_err_set(err, RS_BAD_INPUT, "entry '%s': hard-link source was not spooled", e->path);
	const struct spool_slot *sl = &c->sp->slots[slot];
	struct tar_entry m = sl->meta;
	struct tar_sparse *sp = NULL;
	enum rs_code rc = RS_OK;
	m.path = e->path;
	if (m.sparse) {
		rc = tar_sparse_new(&sp, &sl->meta, sl->raw, sl->raw_len, err);
		m.type = TAR_TYPE_FILE;
		m.size = m.real_size;
		m.sparse = false;
	}
	if (rc == RS_OK)
		rc = tar_write_header(c->out, &m, err);
	uint64_t done = 0;
	while (rc == RS_OK && done < sl->meta.size) {
		size_t want = sl->meta.size - done > PUMP_BUF ? PUMP_BUF : (size_t)(sl->meta.size - done);
		ssize_t n = pread(c->sp->fd, c->r->mbuf, want, (off_t)(sl->off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = rs_err_set(err, RS_IO, "hard-link spool: read failed");
			break;
		}
		if (sp)
			rc = tar_sparse_write(sp, c->r->mbuf, (size_t)n, c->out, err);
		else
			rc = stream_write(c->out, c->r->mbuf, (size_t)n, err);
		done += (uint64_t)n;
	}
	if (rc == RS_OK && sp)
		rc = tar_sparse_end(sp, c->out, err);
	if (rc == RS_OK)
		rc = tar_write_padding(c->out, m.size, err);
	tar_sparse_free(sp);
	return rc;
}

static enum rs_code p2_entry(void *ctx, const struct tar_entry *e, const void *raw, size_t raw_len,
			     enum tar_verdict *verdict, struct rs_err *err)
{
	struct p2 *c = ctx;
	struct squash_decision d;
	enum rs_code rc = squash_decide(c->plan, c->layer, e->index, e->header_offset, &d, err);
	if (rc != RS_OK)
		return rc;
	c->writing = c->spooling = false;
	*verdict = TAR_DROP;
	if (d.spool) {
		rc = spool_keep_meta(c->sp, d.spool_id, e, raw, raw_len, err);
		if (rc != RS_OK)
			return rc;
		c->spooling = true;
		*verdict = TAR_KEEP;
	}
	if (!c->out)
		return RS_OK;
	switch (d.action) {
	case SQUASH_EMIT:
		if (d.fold_global)
			rc = tar_write_folded(c->out, e, raw, raw_len, err);
		else
			rc = tar_write_raw(c->out, raw, raw_len, err);
		c->writing = true;
		*verdict = TAR_KEEP;
		break;
	case SQUASH_DROP: break;
	case SQUASH_RELINK: {
		struct tar_entry m = *e;
		m.linkpath = d.link_path;
		m.size = 0;
		m.sparse = false;
		rc = tar_write_header(c->out, &m, err);
		break;
	}
	case SQUASH_MATERIALIZE: rc = write_materialized(c, e, d.source_spool, err); break;
	}
	return rc;
}

static enum rs_code p2_data(void *ctx, const struct tar_entry *e, const void *buf, size_t len, bool padding,
			    struct rs_err *err)
{
	(void)e;
	struct p2 *c = ctx;
	enum rs_code rc = RS_OK;
	if (c->spooling && !padding)
		rc = spool_append(c->sp, buf, len, err);
	if (rc == RS_OK && c->writing)
		rc = stream_write(c->out, buf, len, err);
	return rc;
}

/* Feed layer l's tar spool (pass 1's verified decompressed tar) into tar,
 * with progress in compressed-byte units. */
static enum rs_code pump_spool(struct run *r, const struct layer_in *l, struct stream_sink *tar,
			       struct rs_err *err)
{
	uint64_t base = r->done, done = 0, last = 0;
	while (done < l->uncompressed) {
		size_t want = l->uncompressed - done > PUMP_BUF ? PUMP_BUF : (size_t)(l->uncompressed - done);
		ssize_t n = read(l->tar_fd, r->tbuf, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return rs_err_set(err, RS_IO, "tar spool: read failed at offset %" PRIu64 ": %s", done,
					  strerror(errno));
		if (n == 0)
			return rs_err_set(err, RS_IO, "tar spool: ended at %" PRIu64 " of %" PRIu64 " bytes", done,
					  l->uncompressed);
		enum rs_code rc = stream_write(tar, r->tbuf, (size_t)n, err);
		if (rc != RS_OK)
			return rc;
		done += (uint64_t)n;
		/* the rest of a dropped entry's data is not read at all */
		uint64_t skip = tar_read_skippable(tar);
		if (skip > l->uncompressed - done)
			skip = l->uncompressed - done;
		if (skip >= PUMP_BUF / 4) {
			if (lseek(l->tar_fd, (off_t)skip, SEEK_CUR) < 0)
				return rs_err_set(err, RS_IO, "tar spool: seek failed at offset %" PRIu64 ": %s", done,
						  strerror(errno));
			rc = tar_read_skip(tar, skip, err);
			if (rc != RS_OK)
				return rc;
			done += skip;
		}
		if (done - last >= 16 * PUMP_BUF || done == l->uncompressed) {
			last = done;
			r->done = base + (uint64_t)((double)l->range.size * ((double)done / (double)l->uncompressed));
			progress(r);
		}
	}
	r->done = base + l->range.size;
	return RS_OK;
}

static enum rs_code pass2_layer(struct run *r, struct squash_plan *plan, size_t i, size_t n,
				struct layer_in *l, struct stream_sink *out, struct spool *sp, struct rs_err *err)
{
	struct p2 c = {r, plan, i, out, sp, false, false};
	struct tar_read_cbs cbs = {p2_entry, p2_data, NULL};
	struct stream_sink *tar = NULL, *dec = NULL;
	struct codec_decode_opts dopts = {0};
	dopts.inflate = r->o->inflate;
	enum rs_code rc = tar_read_new(&tar, &cbs, &c, err);
	if (rc == RS_OK && l->tar_fd < 0)
		rc = codec_decoder_new(&dec, l->kind, &dopts, tar, err);
	r->phase = out ? "write" : "spool";
	r->layer = i;
	r->layer_count = n;
	if (rc == RS_OK && dec)
		rc = pump(r, &l->range, dec, err);
	else if (rc == RS_OK)
		rc = pump_spool(r, l, tar, err);
	if (rc == RS_OK)
		rc = stream_finish(dec ? dec : tar, err);
	if (rc == RS_OK && tar) {
		struct tar_read_stats st;
		tar_read_stats(tar, &st);
		if (st.entries != squash_layer_entries(plan, i))
			rc = rs_err_set(err, RS_BAD_INPUT, "layer changed between passes: %" PRIu64 " entries, was %" PRIu64,
					st.entries, squash_layer_entries(plan, i));
	}
	if (rc != RS_OK)
		layer_prefix(err, i, n, l);
	stream_free(dec);
	stream_free(tar);
	if (l->tar_fd >= 0) {
		close(l->tar_fd); /* read once: frees its space now */
		l->tar_fd = -1;
	}
	return rc;
}

/* ---- one image ------------------------------------------------------------- */

static bool in_list(char *const *list, size_t n, const char *d)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i], d) == 0)
			return true;
	return false;
}

/* How many bottom layers of m (by digest) the manifest in buf also has. */
static size_t common_prefix(const struct imagejson_manifest *m, const char *buf, size_t len, const char *what)
{
	struct imagejson_manifest other;
	struct rs_err e2;
	if (imagejson_parse_manifest(&other, buf, len, what, &e2) != RS_OK)
		return 0;
	size_t k = 0;
	while (k < m->layer_count && k < other.layer_count && strcmp(m->layers[k].digest, other.layers[k].digest) == 0)
		k++;
	imagejson_manifest_dispose(&other);
	return k;
}

/* The manifest (or, for an index, each manifest) of the source layout with
 * this digest: the largest common prefix with m; 0 when it is not there. */
static size_t prefix_with_blob(struct run *r, const struct imagejson_manifest *m, const char *digest, uint64_t size,
			       bool follow_index)
{
	char *buf;
	size_t len;
	struct rs_err e2;
	if (layout_src_read_blob(r->src, digest, size, RS_LIMIT_MANIFEST_MAX_BYTES, &buf, &len, &e2) != RS_OK)
		return 0; /* an unreadable neighbour just shares nothing */
	size_t best = common_prefix(m, buf, len, digest);
	struct imagejson_index idx;
	if (follow_index && best == 0 && imagejson_parse_index(&idx, buf, len, digest, &e2) == RS_OK) {
		for (size_t i = 0; i < idx.manifest_count; i++) {
			size_t k = prefix_with_blob(r, m, idx.manifests[i].digest, idx.manifests[i].size, false);
			best = k > best ? k : best;
		}
		imagejson_index_dispose(&idx);
	}
	free(buf);
	return best;
}

/* Docker archive: bottom layers (by diff_id) this image shares with the
 * archive's other images. self: this image's config digest. */
static size_t prefix_in_archive(struct run *r, const struct imagejson_config *cfg, const char *self)
{
	const struct imagejson_archive *a = layout_src_archive(r->src);
	size_t best = 0;
	for (size_t i = 0; a && i < a->image_count; i++) {
		char *buf;
		size_t len;
		struct rs_err e2;
		if (layout_src_read_member(r->src, a->images[i].config, RS_LIMIT_CONFIG_MAX_BYTES, &buf, &len, &e2) != RS_OK)
			continue;
		char d[DIGEST_STR_SIZE];
		digest_buffer(d, buf, len);
		struct imagejson_config other;
		if (strcmp(d, self) != 0 && imagejson_parse_config(&other, buf, len, a->images[i].config, &e2) == RS_OK) {
			size_t k = 0;
			while (k < cfg->diff_id_count && k < other.diff_id_count &&
			       strcmp(cfg->diff_ids[k], other.diff_ids[k]) == 0)
				k++;
			best = k > best ? k : best;
			imagejson_config_dispose(&other);
		}
		free(buf);
	}
	return best;
}

/* keep-base without base_layers: the bottom layers this image shares with
 * its base image, named by the manifest's org.opencontainers.image.base.digest
 * annotation when that manifest (or index) is in the source layout, or with
 * another image of the source (other entries of index.json, except this
 * image's siblings in exclude; the other images of a docker archive, by
 * diff_id). The largest such run of identical bottom layers; 0 when none.
 * The history has no sound marker of where a base ends (docs/optimizer.md),
 * so it is not used. self: the manifest digest (OCI) or config digest
 * (archive). */
static size_t shared_base(struct run *r, const struct imagejson_manifest *m, const struct imagejson_config *cfg,
			  const char *self, char *const *exclude, size_t nex)
{
	if (layout_src_kind(r->src) != LAYOUT_OCI)
		return prefix_in_archive(r, cfg, self);
	size_t best = 0;
	const char *bd = imagejson_kv_get(m->annotations, m->annotation_count, "org.opencontainers.image.base.digest");
	if (bd && strcmp(bd, self) != 0)
		best = prefix_with_blob(r, m, bd, UINT64_MAX, true);
	const struct imagejson_index *idx = layout_src_index(r->src);
	for (size_t i = 0; idx && i < idx->manifest_count; i++) {
		const struct imagejson_descriptor *d = &idx->manifests[i];
		if (strcmp(d->digest, self) == 0 || in_list(exclude, nex, d->digest) || d->size > RS_LIMIT_MANIFEST_MAX_BYTES)
			continue;
		size_t k = prefix_with_blob(r, m, d->digest, d->size, false);
		best = k > best ? k : best;
	}
	return best;
}

struct history_text {
	char by[160];
	char comment[128];
};

static enum rs_code history_for(struct imagejson_history **out, size_t *n, const struct imagejson_config *c,
				enum policy_squash mode, size_t base, bool squashed_group, size_t squashed_layers,
				const char *policy_digest, struct history_text *txt, struct rs_err *err)
{
	*out = NULL;
	*n = 0;
	if (!c->has_history)
		return RS_OK;
	struct imagejson_history *h = calloc(c->history_count + 1, sizeof(*h));
	if (!h)
		return rs_err_set(err, RS_NOMEM, "out of memory");
	size_t nonempty = 0;
	const char *last_created = c->created;
	for (size_t i = 0; i < c->history_count; i++) {
		h[i] = c->history[i]; /* borrowed strings */
		if (c->history[i].created)
			last_created = c->history[i].created;
		if (mode == POLICY_SQUASH_NONE)
			continue;
		if (!h[i].empty_layer) {
			if (!(mode == POLICY_SQUASH_KEEP_BASE && nonempty < base))
				h[i].empty_layer = true;
			nonempty++;
		}
	}
	*n = c->history_count;
	if (mode != POLICY_SQUASH_NONE && squashed_group) {
		char *by = txt->by, *comment = txt->comment;
		snprintf(txt->by, sizeof(txt->by), "regslim optimize: %zu layer%s squashed", squashed_layers,
			 squashed_layers == 1 ? "" : "s");
		snprintf(txt->comment, sizeof(txt->comment), "policy %s", policy_digest);
		h[*n].created = c->created ? c->created : (char *)last_created;
		h[*n].created_by = by;
		h[*n].comment = comment;
		h[*n].empty_layer = false;
		(*n)++;
	}
	*out = h;
	return RS_OK;
}

struct strip_collect {
	struct report_image *img;
};

static enum rs_code collect_stripped(void *ctx, const char *path, const char *rule, struct rs_err *err)
{
	struct strip_collect *s = ctx;
	return report_add_stripped(s->img, path, rule, err);
}

struct group_out {
	int fd;
	char tmp[4200];
	struct stream_sink *fds, *dsc, *enc, *dsu;
};

static void group_abandon(struct group_out *g)
{
	stream_free(g->dsu);
	stream_free(g->enc);
	stream_free(g->dsc);
	stream_free(g->fds);
	if (g->fd >= 0) {
		close(g->fd);
		(void)unlink(g->tmp); /* our temp file */
	}
	g->fd = -1;
	g->fds = g->dsc = g->enc = g->dsu = NULL;
}

static enum rs_code group_open(struct run *r, struct group_out *g, struct rs_err *err)
{
	memset(g, 0, sizeof(*g));
	g->fd = -1;
	enum rs_code rc = layout_writer_tmp(r->w, &g->fd, g->tmp, sizeof(g->tmp), err);
	struct codec_encode_opts eo = {0};
	switch (r->o->policy->compression) {
	case POLICY_COMPRESS_ZSTD: eo.kind = CODEC_ZSTD; break;
	case POLICY_COMPRESS_GZIP: eo.kind = CODEC_GZIP; break;
	case POLICY_COMPRESS_NONE: eo.kind = CODEC_NONE; break;
	}
	eo.level = r->o->policy->level;
	eo.threads = r->o->threads ? r->o->threads : 1;
	eo.zstd_job_bytes = RS_LIMIT_ZSTD_JOB_BYTES; /* bounds the workers' memory (codec.h) */
	if (rc == RS_OK)
		rc = stream_fd_sink_new(&g->fds, g->fd, err);
	if (rc == RS_OK)
		rc = stream_digest_sink_new(&g->dsc, g->fds, err);
	if (rc == RS_OK)
		rc = codec_encoder_new(&g->enc, &eo, g->dsc, err);
	if (rc == RS_OK)
		rc = stream_digest_sink_new(&g->dsu, g->enc, err);
	if (rc != RS_OK)
		group_abandon(g);
	return rc;
}

static enum rs_code group_close(struct run *r, struct group_out *g, struct report_out_layer *ol,
				struct rs_err *err)
{
	enum rs_code rc = tar_write_end(g->dsu, err);
	if (rc == RS_OK)
		rc = stream_finish(g->dsu, err);
	if (rc != RS_OK) {
		group_abandon(g);
		return rc;
	}
	stream_digest_sink_result(g->dsu, ol->diff_id, &ol->uncompressed);
	stream_digest_sink_result(g->dsc, ol->digest, &ol->size);
	int fd = g->fd;
	g->fd = -1;
	group_abandon(g);
	return layout_writer_commit_tmp(r->w, fd, g->tmp, ol->digest, err);
}

static enum codec_kind out_kind(const struct policy *p)
{
	return p->compression == POLICY_COMPRESS_ZSTD ? CODEC_ZSTD
	       : p->compression == POLICY_COMPRESS_GZIP ? CODEC_GZIP
							: CODEC_NONE;
}

/* Every entry whose data a layer's spool left out must be dropped and not
 * needed as a hard-link source; otherwise pass 2 decodes that layer again
 * instead of reading its spool (see "tar spool"). */
static enum rs_code holes_check(struct squash_plan *plan, struct layer_in *layers, size_t n, struct rs_err *err)
{
	for (size_t i = 0; i < n; i++) {
		struct layer_in *l = &layers[i];
		for (size_t k = 0; l->tar_fd >= 0 && k < l->nholes; k += 2) {
			struct squash_decision d;
			enum rs_code rc = squash_decide(plan, i, l->holes[k], l->holes[k + 1], &d, err);
			if (rc != RS_OK)
				return rc;
			if (d.action != SQUASH_DROP || d.spool) {
				close(l->tar_fd);
				l->tar_fd = -1;
			}
		}
	}
	return RS_OK;
}

static enum rs_code optimize_image(struct run *r, const struct imagejson_manifest *m,
				   const struct imagejson_config *cfg, const char *cfg_buf, size_t cfg_len,
				   struct layer_in *layers, size_t n, const char *src_digest,
				   const struct imagejson_descriptor *entry, char *const *siblings, size_t nsib,
				   struct imagejson_descriptor *out, struct rs_err *err)
{
	const struct policy *pol = r->o->policy;
	struct report_image *img = report_add_image(r->rep);
	if (!img)
		return rs_err_set(err, RS_NOMEM, "out of memory");
	snprintf(img->source_digest, sizeof(img->source_digest), "%s", src_digest);
	const char *os = entry && entry->os ? entry->os : cfg->os;
	const char *arch = entry && entry->architecture ? entry->architecture : cfg->architecture;
	const char *var = entry && entry->os ? entry->variant : cfg->variant;
	if (os && arch) {
		char plat[128];
		snprintf(plat, sizeof(plat), "%s/%s%s%s", os, arch, var ? "/" : "", var ? var : "");
		img->platform = report_strdup(plat);
	}
	size_t base = 0;
	if (pol->squash == POLICY_SQUASH_KEEP_BASE) {
		if (pol->base_layer_count) {
			while (base < n && (in_list(pol->base_layers, pol->base_layer_count, m->layers[base].digest) ||
					    in_list(pol->base_layers, pol->base_layer_count, layers[base].diff_id)))
				base++;
		} else {
			base = shared_base(r, m, cfg, src_digest, siblings, nsib);
		}
	}
	struct squash_opts so = {pol->squash, n, base, pol->dedupe, r->strip, 0};
	struct squash_plan *plan = NULL;
	struct spool sp = {.fd = -1};
	struct imagejson_manifest om;
	memset(&om, 0, sizeof(om));
	struct imagejson_history *hist = NULL;
	size_t hist_n = 0;
	struct history_text htxt;
	char **diff_ids = NULL;
	char *cfg_out = NULL, *man_out = NULL;
	size_t cfg_out_len = 0, man_out_len = 0;
	enum rs_code rc = squash_new(&plan, &so, err);
	for (size_t i = 0; i < n; i++) {
		layers[i].tar_fd = -1;
		r->total += layers[i].range.size * (i < base ? 1 : 2);
	}
	img->layers = calloc(n, sizeof(*img->layers));
	if (rc == RS_OK && !img->layers)
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
	if (rc == RS_OK)
		img->layer_count = n;
	if (rc == RS_OK)
		rc = pass1(r, plan, layers, n, base, err);
	if (rc == RS_OK)
		rc = squash_finish(plan, err);
	if (rc == RS_OK)
		rc = holes_check(plan, layers, n, err);
	size_t ng = rc == RS_OK ? squash_group_count(plan) : 0;
	if (rc == RS_OK && squash_spool_count(plan) > 0) {
		char tmp[4200];
		rc = layout_writer_tmp(r->w, &sp.fd, tmp, sizeof(tmp), err);
		if (rc == RS_OK) {
			(void)unlink(tmp); /* anonymous: the fd keeps it until spool_dispose */
			sp.n = squash_spool_count(plan);
			sp.slots = calloc(sp.n, sizeof(*sp.slots));
			if (!sp.slots)
				rc = rs_err_set(err, RS_NOMEM, "out of memory");
		}
	}
	img->out_layers = ng ? calloc(ng, sizeof(*img->out_layers)) : NULL;
	diff_ids = ng ? calloc(ng, sizeof(char *)) : NULL;
	om.layers = ng ? calloc(ng, sizeof(*om.layers)) : NULL;
	if (rc == RS_OK && ng && (!img->out_layers || !diff_ids || !om.layers))
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
	if (rc == RS_OK)
		img->out_layer_count = ng;
	size_t li = 0;
	for (size_t g = 0; rc == RS_OK && g < ng; g++) {
		struct report_out_layer *ol = &img->out_layers[g];
		if (squash_group_is_base(plan, g)) {
			struct layer_in *l = &layers[li];
			if (squash_layer_needs_spool(plan, li))
				rc = pass2_layer(r, plan, li, n, l, NULL, &sp, err);
			r->phase = "copy";
			r->layer = li;
			if (rc == RS_OK)
				rc = layout_writer_copy(r->w, &l->range, l->digest, err);
			if (rc != RS_OK) {
				layer_prefix(err, li, n, l);
				break;
			}
			r->done += l->range.size;
			progress(r);
			memcpy(ol->digest, l->digest, DIGEST_STR_SIZE);
			memcpy(ol->diff_id, l->diff_id, DIGEST_STR_SIZE);
			ol->size = l->range.size;
			ol->uncompressed = l->uncompressed;
			ol->copied = true;
			ol->media_type = report_strdup(image_layer_type(l->kind));
			img->layers[li].base = true;
			img->layers[li].out_layer = g;
			li++;
		} else {
			struct group_out go;
			rc = group_open(r, &go, err);
			while (rc == RS_OK && li < n && squash_layer_group(plan, li) == g) {
				rc = pass2_layer(r, plan, li, n, &layers[li], go.dsu, &sp, err);
				img->layers[li].out_layer = g;
				li++;
			}
			if (rc == RS_OK)
				rc = group_close(r, &go, ol, err);
			else
				group_abandon(&go);
			ol->media_type = report_strdup(image_layer_type(out_kind(pol)));
		}
		if (rc == RS_OK && !ol->media_type)
			rc = rs_err_set(err, RS_NOMEM, "out of memory");
		if (rc == RS_OK) {
			diff_ids[g] = ol->diff_id;
			om.layers[g].media_type = ol->media_type;
			om.layers[g].digest = ol->digest;
			om.layers[g].size = ol->size;
			img->out_size += ol->size;
			img->out_uncompressed += ol->uncompressed;
		}
	}
	/* config and manifest */
	if (rc == RS_OK) {
		bool squashed = ng > 0 && !squash_group_is_base(plan, ng - 1);
		rc = history_for(&hist, &hist_n, cfg, pol->squash, base, squashed, n - base, r->policy_digest, &htxt, err);
	}
	if (rc == RS_OK)
		rc = imagejson_rewrite_config(&cfg_out, &cfg_out_len, cfg_buf, cfg_len, diff_ids, ng, hist, hist_n,
					      "config", err);
	char cfg_digest[DIGEST_STR_SIZE] = "";
	if (rc == RS_OK)
		rc = layout_writer_put(r->w, cfg_out, cfg_out_len, cfg_digest, err);
	if (rc == RS_OK) {
		om.schema_version = 2;
		om.media_type = (char *)IMAGE_MT_OCI_MANIFEST;
		om.config.media_type = (char *)IMAGE_MT_OCI_CONFIG;
		om.config.digest = cfg_digest;
		om.config.size = cfg_out_len;
		om.layer_count = ng;
		for (size_t i = 0; rc == RS_OK && i < m->annotation_count; i++)
			rc = imagejson_kv_set(&om.annotations, &om.annotation_count, m->annotations[i].key,
					      m->annotations[i].value, err);
		if (rc == RS_OK)
			rc = imagejson_kv_set(&om.annotations, &om.annotation_count, IMAGE_ANN_SOURCE, src_digest, err);
		if (rc == RS_OK)
			rc = imagejson_kv_set(&om.annotations, &om.annotation_count, IMAGE_ANN_POLICY, r->policy_digest,
					      err);
		if (rc == RS_OK)
			rc = imagejson_kv_set(&om.annotations, &om.annotation_count, IMAGE_ANN_VERSION, REGSLIM_VERSION,
					      err);
	}
	if (rc == RS_OK)
		rc = imagejson_write_manifest(&man_out, &man_out_len, &om, err);
	char man_digest[DIGEST_STR_SIZE] = "";
	if (rc == RS_OK)
		rc = layout_writer_put(r->w, man_out, man_out_len, man_digest, err);
	if (rc == RS_OK) {
		memset(out, 0, sizeof(*out));
		out->media_type = report_strdup(IMAGE_MT_OCI_MANIFEST);
		out->digest = report_strdup(man_digest);
		out->size = man_out_len;
		if (entry) {
			out->os = report_strdup(entry->os);
			out->architecture = report_strdup(entry->architecture);
			out->variant = report_strdup(entry->variant);
		}
		if (!out->media_type || !out->digest)
			rc = rs_err_set(err, RS_NOMEM, "out of memory");
		snprintf(img->digest, sizeof(img->digest), "%s", man_digest);
	}
	/* report */
	if (rc == RS_OK) {
		struct squash_stats st;
		squash_stats(plan, &st);
		for (size_t i = 0; i < n; i++) {
			struct report_layer *rl = &img->layers[i];
			struct squash_layer_stats ls;
			squash_layer_stats(plan, i, &ls);
			memcpy(rl->digest, layers[i].digest, DIGEST_STR_SIZE);
			memcpy(rl->diff_id, layers[i].diff_id, DIGEST_STR_SIZE);
			rl->media_type = report_strdup(layers[i].media_type ? layers[i].media_type : "");
			rl->size = layers[i].range.size;
			rl->uncompressed = layers[i].uncompressed;
			rl->entries = ls.entries;
			rl->kept_entries = ls.kept_entries;
			rl->stripped_entries = ls.stripped_entries;
			rl->stripped_bytes = ls.stripped_bytes;
			rl->overlay_entries = ls.overlay_entries;
			rl->overlay_bytes = ls.overlay_bytes;
			rl->dup_entries = ls.dup_entries;
			rl->dup_bytes = ls.dup_bytes;
			rl->whiteouts = ls.whiteouts;
			rl->whiteouts_applied = ls.whiteouts_applied;
			img->in_size += rl->size;
			img->in_uncompressed += rl->uncompressed;
		}
		img->rules = st.rule_count ? calloc(st.rule_count, sizeof(*img->rules)) : NULL;
		if (st.rule_count && !img->rules)
			rc = rs_err_set(err, RS_NOMEM, "out of memory");
		for (size_t i = 0; rc == RS_OK && i < st.rule_count; i++) {
			img->rules[i].name = report_strdup(strip_rule_name(r->strip, i));
			img->rules[i].bytes = st.rule_bytes[i];
			img->rules[i].entries = st.rule_entries[i];
			img->rule_count = i + 1;
		}
		img->entries = st.entries;
		img->final_paths = st.final_paths;
		img->whiteouts_applied = st.whiteouts_applied;
		img->dup_entries = st.dup_entries;
		img->dup_bytes = st.dup_bytes;
		img->links_relinked = st.links_relinked;
		img->links_materialized = st.links_materialized;
		img->efficiency_in = st.efficiency_in;
		img->efficiency_out = st.efficiency_out;
		img->wasted_in = st.wasted_in;
		img->wasted_out = st.wasted_out;
		struct strip_collect sc = {img};
		if (rc == RS_OK)
			rc = squash_each_stripped(plan, collect_stripped, &sc, err);
	}
	if (om.annotations)
		imagejson_kv_free(om.annotations, om.annotation_count);
	free(om.layers);
	free(hist);
	free(diff_ids);
	free(cfg_out);
	free(man_out);
	for (size_t i = 0; i < n; i++) {
		if (layers[i].tar_fd >= 0) {
			close(layers[i].tar_fd);
			layers[i].tar_fd = -1;
		}
		free(layers[i].holes);
		layers[i].holes = NULL;
		layers[i].nholes = layers[i].holes_cap = 0;
	}
	spool_dispose(&sp);
	squash_free(plan);
	return rc;
}

/* ---- documents -------------------------------------------------------------- */

static const struct imagejson_descriptor *find_done(struct run *r, const char *src)
{
	for (size_t i = 0; i < r->done_count; i++)
		if (strcmp(r->dones[i].src, src) == 0)
			return &r->dones[i].out;
	return NULL;
}

static enum rs_code remember(struct run *r, const char *src, const struct imagejson_descriptor *out,
			     struct rs_err *err)
{
	struct done_image *n = realloc(r->dones, (r->done_count + 1) * sizeof(*n));
	if (!n)
		return rs_err_set(err, RS_NOMEM, "out of memory");
	r->dones = n;
	snprintf(n[r->done_count].src, DIGEST_STR_SIZE, "%s", src);
	enum rs_code rc = imagejson_descriptor_copy(&n[r->done_count].out, out, err);
	if (rc == RS_OK)
		r->done_count++;
	return rc;
}

/* An image manifest of an OCI layout (buf already verified against digest). */
static enum rs_code process_manifest(struct run *r, const char *buf, size_t len, const char *digest,
				     const struct imagejson_descriptor *entry, char *const *siblings, size_t nsib,
				     struct imagejson_descriptor *out, struct rs_err *err)
{
	const struct imagejson_descriptor *prev = find_done(r, digest);
	if (prev) {
		enum rs_code rc = imagejson_descriptor_copy(out, prev, err);
		if (rc == RS_OK && entry) {
			free(out->os);
			free(out->architecture);
			free(out->variant);
			out->os = report_strdup(entry->os);
			out->architecture = report_strdup(entry->architecture);
			out->variant = report_strdup(entry->variant);
		}
		return rc;
	}
	char what[128];
	snprintf(what, sizeof(what), "manifest %.19s", digest);
	struct imagejson_manifest m;
	struct imagejson_config c;
	memset(&c, 0, sizeof(c));
	char *cbuf = NULL;
	size_t clen = 0;
	struct layer_in *layers = NULL;
	enum rs_code rc = imagejson_parse_manifest(&m, buf, len, what, err);
	if (rc != RS_OK)
		return rc;
	rc = image_validate_manifest(&m, what, err);
	if (rc == RS_OK) {
		rc = layout_src_read_blob(r->src, m.config.digest, m.config.size, RS_LIMIT_CONFIG_MAX_BYTES, &cbuf, &clen,
					  err);
		if (rc != RS_OK)
			rs_err_prefix(err, "%s: config: ", what);
	}
	char cwhat[128];
	snprintf(cwhat, sizeof(cwhat), "config %.19s", m.config.digest ? m.config.digest : "?");
	if (rc == RS_OK)
		rc = imagejson_parse_config(&c, cbuf, clen, cwhat, err);
	bool hist_ok;
	if (rc == RS_OK)
		rc = image_validate_config(&c, &m, cwhat, &hist_ok, err);
	if (rc == RS_OK) {
		layers = calloc(m.layer_count, sizeof(*layers));
		if (!layers)
			rc = rs_err_set(err, RS_NOMEM, "out of memory");
	}
	for (size_t i = 0; rc == RS_OK && i < m.layer_count; i++) {
		struct layer_in *l = &layers[i];
		l->media_type = m.layers[i].media_type;
		snprintf(l->digest, sizeof(l->digest), "%s", m.layers[i].digest);
		snprintf(l->diff_id, sizeof(l->diff_id), "%s", c.diff_ids[i]);
		rc = codec_kind_from_media_type(&l->kind, l->media_type, err);
		if (rc == RS_OK)
			rc = layout_src_blob_range(r->src, l->digest, &l->range, err);
		if (rc == RS_OK && l->range.size != m.layers[i].size)
			rc = rs_err_set(err, RS_DIGEST_MISMATCH, "blob is %" PRIu64 " bytes, the manifest says %" PRIu64,
					l->range.size, m.layers[i].size);
		if (rc != RS_OK)
			layer_prefix(err, i, m.layer_count, l);
	}
	if (rc == RS_OK)
		rc = optimize_image(r, &m, &c, cbuf, clen, layers, m.layer_count, digest, entry, siblings, nsib, out, err);
	if (rc == RS_OK)
		rc = remember(r, digest, out, err);
	free(layers);
	free(cbuf);
	imagejson_config_dispose(&c);
	imagejson_manifest_dispose(&m);
	return rc;
}

static enum rs_code read_doc(struct run *r, const struct imagejson_descriptor *d, char **buf, size_t *len,
			     enum imagejson_kind *kind, struct rs_err *err)
{
	enum rs_code rc = layout_src_read_blob(r->src, d->digest, d->size, RS_LIMIT_MANIFEST_MAX_BYTES, buf, len, err);
	if (rc != RS_OK)
		return rc;
	if (image_is_index_type(d->media_type))
		*kind = IMAGEJSON_INDEX;
	else if (image_is_manifest_type(d->media_type))
		*kind = IMAGEJSON_MANIFEST;
	else if (d->media_type) {
		free(*buf);
		*buf = NULL;
		return rs_err_set(err, RS_UNSUPPORTED, "%.19s: unsupported media type %s", d->digest, d->media_type);
	} else {
		char what[64];
		snprintf(what, sizeof(what), "%.19s", d->digest);
		rc = imagejson_sniff(kind, *buf, *len, what, err);
		if (rc != RS_OK) {
			free(*buf);
			*buf = NULL;
		}
	}
	return rc;
}

static enum rs_code process_index(struct run *r, const char *buf, size_t len, const char *digest,
				  struct imagejson_descriptor *out, struct rs_err *err)
{
	char what[128];
	snprintf(what, sizeof(what), "index %.19s", digest);
	struct imagejson_index in, on;
	memset(&on, 0, sizeof(on));
	enum rs_code rc = imagejson_parse_index(&in, buf, len, what, err);
	if (rc != RS_OK)
		return rc;
	rc = image_validate_index(&in, what, err);
	char **sib = calloc(in.manifest_count + 1, sizeof(char *));
	on.manifests = calloc(in.manifest_count + 1, sizeof(*on.manifests));
	if (rc == RS_OK && (!sib || !on.manifests))
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
	for (size_t i = 0; rc == RS_OK && i < in.manifest_count; i++)
		sib[i] = in.manifests[i].digest;
	r->image_count = in.manifest_count;
	for (size_t i = 0; rc == RS_OK && i < in.manifest_count; i++) {
		const struct imagejson_descriptor *d = &in.manifests[i];
		/* attestation manifests (buildkit) carry no runnable image */
		if (d->os && strcmp(d->os, "unknown") == 0)
			continue;
		r->image = i;
		char *mb = NULL;
		size_t ml = 0;
		enum imagejson_kind kind;
		rc = read_doc(r, d, &mb, &ml, &kind, err);
		if (rc == RS_OK && kind != IMAGEJSON_MANIFEST)
			rc = rs_err_set(err, RS_UNSUPPORTED, "%s: manifests[%zu] is a nested index", what, i);
		struct imagejson_descriptor *od = &on.manifests[on.manifest_count];
		if (rc == RS_OK)
			rc = process_manifest(r, mb, ml, d->digest, d, sib, in.manifest_count, od, err);
		if (rc == RS_OK) {
			on.manifest_count++;
			for (size_t k = 0; rc == RS_OK && k < d->annotation_count; k++)
				rc = imagejson_kv_set(&od->annotations, &od->annotation_count, d->annotations[k].key,
						      d->annotations[k].value, err);
		}
		free(mb);
	}
	if (rc == RS_OK) {
		on.schema_version = 2;
		on.media_type = report_strdup(IMAGE_MT_OCI_INDEX);
		for (size_t i = 0; rc == RS_OK && i < in.annotation_count; i++)
			rc = imagejson_kv_set(&on.annotations, &on.annotation_count, in.annotations[i].key,
					      in.annotations[i].value, err);
		if (rc == RS_OK)
			rc = imagejson_kv_set(&on.annotations, &on.annotation_count, IMAGE_ANN_SOURCE, digest, err);
		if (rc == RS_OK)
			rc = imagejson_kv_set(&on.annotations, &on.annotation_count, IMAGE_ANN_POLICY, r->policy_digest, err);
		if (rc == RS_OK)
			rc = imagejson_kv_set(&on.annotations, &on.annotation_count, IMAGE_ANN_VERSION, REGSLIM_VERSION, err);
	}
	char *json = NULL;
	size_t jl = 0;
	if (rc == RS_OK)
		rc = imagejson_write_index(&json, &jl, &on, err);
	char d[DIGEST_STR_SIZE];
	if (rc == RS_OK)
		rc = layout_writer_put(r->w, json, jl, d, err);
	if (rc == RS_OK) {
		memset(out, 0, sizeof(*out));
		out->media_type = report_strdup(IMAGE_MT_OCI_INDEX);
		out->digest = report_strdup(d);
		out->size = jl;
		if (!out->media_type || !out->digest)
			rc = rs_err_set(err, RS_NOMEM, "out of memory");
	}
	free(json);
	free(sib);
	imagejson_index_dispose(&on);
	imagejson_index_dispose(&in);
	return rc;
}

static enum rs_code process_archive(struct run *r, struct imagejson_descriptor *out, struct rs_err *err)
{
	const struct imagejson_archive *a = layout_src_archive(r->src);
	const struct imagejson_archive_image *im = &a->images[0];
	const char *tag = layout_src_tag(r->src);
	if (tag) {
		im = NULL;
		for (size_t i = 0; i < a->image_count && !im; i++)
			for (size_t k = 0; k < a->images[i].repo_tag_count; k++)
				if (strcmp(a->images[i].repo_tags[k], tag) == 0)
					im = &a->images[i];
		if (!im)
			return rs_err_set(err, RS_NOT_FOUND, "%s: no image tagged %s", layout_src_path(r->src), tag);
	}
	char *cbuf = NULL;
	size_t clen = 0;
	enum rs_code rc = layout_src_read_member(r->src, im->config, RS_LIMIT_CONFIG_MAX_BYTES, &cbuf, &clen, err);
	if (rc != RS_OK)
		return rc;
	char cdig[DIGEST_STR_SIZE];
	digest_buffer(cdig, cbuf, clen);
	struct imagejson_config c;
	struct imagejson_manifest m;
	memset(&m, 0, sizeof(m));
	struct layer_in *layers = NULL;
	char cwhat[128];
	snprintf(cwhat, sizeof(cwhat), "config %.19s", cdig);
	rc = imagejson_parse_config(&c, cbuf, clen, cwhat, err);
	if (rc == RS_OK && c.diff_id_count != im->layer_count)
		rc = rs_err_set(err, RS_BAD_INPUT, "%s: %zu diff_ids for %zu layers in manifest.json", cwhat,
				c.diff_id_count, im->layer_count);
	if (rc == RS_OK) {
		layers = calloc(im->layer_count + 1, sizeof(*layers));
		m.layers = calloc(im->layer_count + 1, sizeof(*m.layers));
		if (!layers || !m.layers)
			rc = rs_err_set(err, RS_NOMEM, "out of memory");
	}
	for (size_t i = 0; rc == RS_OK && i < im->layer_count; i++) {
		struct layer_in *l = &layers[i];
		snprintf(l->diff_id, sizeof(l->diff_id), "%s", c.diff_ids[i]);
		rc = digest_parse(l->diff_id, err);
		if (rc == RS_OK)
			rc = layout_src_member_range(r->src, im->layers[i], &l->range, err);
		if (rc == RS_OK) {
			unsigned char magic[4] = {0};
			ssize_t got = pread(l->range.fd, magic, l->range.size < 4 ? (size_t)l->range.size : 4,
					    (off_t)l->range.offset);
			l->kind = codec_kind_sniff(magic, got > 0 ? (size_t)got : 0);
		}
		const char *name = im->layers[i];
		if (strncmp(name, "blobs/sha256/", 13) == 0 && strlen(name) == 13 + 64)
			snprintf(l->digest, sizeof(l->digest), "sha256:%s", name + 13);
		else if (l->kind == CODEC_NONE)
			snprintf(l->digest, sizeof(l->digest), "%s", l->diff_id);
		l->media_type = l->kind == CODEC_GZIP   ? "application/vnd.docker.image.rootfs.diff.tar.gzip"
				: l->kind == CODEC_ZSTD ? "application/vnd.docker.image.rootfs.diff.tar.zstd"
							: "application/vnd.docker.image.rootfs.diff.tar";
		m.layers[i].digest = l->digest;
		if (rc != RS_OK)
			layer_prefix(err, i, im->layer_count, l);
	}
	m.layer_count = im->layer_count;
	r->image_count = 1;
	if (rc == RS_OK)
		rc = optimize_image(r, &m, &c, cbuf, clen, layers, im->layer_count, cdig, NULL, NULL, 0, out, err);
	free(m.layers); /* digests were borrowed from layers */
	free(layers);
	free(cbuf);
	imagejson_config_dispose(&c);
	return rc;
}

/* REGSLIM_TAR_SPOOL: unset or "auto" spools with a budget of half the free
 * space of the destination's filesystem; "0" turns the tar spool off (pass 2
 * decodes again); a number N caps the spooled bytes of each image at N. */
static enum rs_code spool_knob(struct run *r, struct rs_err *err)
{
	const char *v = getenv("REGSLIM_TAR_SPOOL");
	r->spool_tar = true;
	r->spool_max = 0;
	if (!v || !*v || strcmp(v, "auto") == 0)
		return RS_OK;
	char *end = NULL;
	errno = 0;
	unsigned long long n = strtoull(v, &end, 10);
	if (errno != 0 || !end || *end != '\0' || v[0] == '-' || v[0] == '+' || v[0] == ' ')
		return rs_err_set(err, RS_BAD_INPUT, "REGSLIM_TAR_SPOOL: expected auto, 0 or a byte count, got '%s'", v);
	r->spool_tar = n > 0;
	r->spool_max = (uint64_t)n;
	return RS_OK;
}

enum rs_code pipeline_run(struct report *rep, const struct pipeline_opts *o, struct rs_err *err)
{
	struct run r;
	memset(&r, 0, sizeof(r));
	r.o = o;
	r.rep = rep;
	r.image_count = 1;
	char *dir = NULL, *dtag = NULL;
	struct imagejson_descriptor root_out;
	memset(&root_out, 0, sizeof(root_out));
	enum rs_code rc = pipeline_policy_digest(r.policy_digest, o->policy, err);
	memcpy(rep->policy_digest, r.policy_digest, DIGEST_STR_SIZE);
	rep->squash = policy_squash_name(o->policy->squash);
	rep->compression = policy_compression_name(o->policy->compression);
	rep->level = o->policy->level;
	rep->source = report_strdup(o->src);
	rep->dest = report_strdup(o->dst);
	r.buf = malloc(PUMP_BUF);
	r.tbuf = malloc(PUMP_BUF);
	r.mbuf = malloc(PUMP_BUF);
	if (rc == RS_OK && (!rep->source || !rep->dest || !r.buf || !r.tbuf || !r.mbuf))
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
	if (rc == RS_OK)
		rc = spool_knob(&r, err);
	if (rc == RS_OK)
		rc = layout_parse_dest(&dir, &dtag, o->dst, err);
	if (rc == RS_OK)
		rc = layout_src_open(&r.src, o->src, err);
	if (rc == RS_OK)
		rc = strip_new(&r.strip, o->policy, err);
	if (rc == RS_OK)
		rc = layout_writer_new(&r.w, dir, err);
	if (rc == RS_OK && layout_src_kind(r.src) == LAYOUT_ARCHIVE) {
		rc = process_archive(&r, &root_out, err);
	} else if (rc == RS_OK) {
		const struct imagejson_index *idx = layout_src_index(r.src);
		const char *tag = layout_src_tag(r.src);
		const struct imagejson_descriptor *pick = NULL;
		for (size_t i = 0; i < idx->manifest_count && !pick; i++) {
			const char *t = imagejson_kv_get(idx->manifests[i].annotations, idx->manifests[i].annotation_count,
							 IMAGE_ANN_REF_NAME);
			if (tag ? (t && strcmp(t, tag) == 0) : idx->manifest_count == 1)
				pick = &idx->manifests[i];
		}
		if (!pick && tag)
			rc = rs_err_set(err, RS_NOT_FOUND, "%s: no image tagged %s", layout_src_path(r.src), tag);
		else if (!pick)
			rc = rs_err_set(err, RS_BAD_INPUT, "%s holds %zu images: name one as oci:DIR:TAG",
					layout_src_path(r.src), idx->manifest_count);
		char *buf = NULL;
		size_t len = 0;
		enum imagejson_kind kind = IMAGEJSON_MANIFEST;
		if (rc == RS_OK)
			rc = digest_parse(pick->digest, err);
		if (rc == RS_OK)
			rc = read_doc(&r, pick, &buf, &len, &kind, err);
		if (rc == RS_OK && kind == IMAGEJSON_INDEX)
			rc = process_index(&r, buf, len, pick->digest, &root_out, err);
		else if (rc == RS_OK)
			rc = process_manifest(&r, buf, len, pick->digest, NULL, NULL, 0, &root_out, err);
		free(buf);
	}
	const char *tag = dtag ? dtag : (r.src && layout_src_tag(r.src) ? layout_src_tag(r.src) : "latest");
	if (rc == RS_OK)
		rc = layout_writer_set_ref(r.w, &root_out, tag, err);
	if (rc == RS_OK)
		rc = layout_writer_commit(r.w, err);
	if (rc == RS_OK) {
		snprintf(rep->digest, sizeof(rep->digest), "%s", root_out.digest);
		rep->media_type = report_strdup(root_out.media_type);
		rep->tag = report_strdup(tag);
	}
	imagejson_descriptor_dispose(&root_out);
	for (size_t i = 0; i < r.done_count; i++)
		imagejson_descriptor_dispose(&r.dones[i].out);
	free(r.dones);
	layout_writer_free(r.w);
	strip_free(r.strip);
	layout_src_free(r.src);
	free(r.buf);
	free(r.tbuf);
	free(r.mbuf);
	free(dir);
	free(dtag);
	return rc;
}
