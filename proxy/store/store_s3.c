/* store_s3: the "s3" storage driver (store_driver.h, issue 13): every byte
 * regslim keeps lives in one bucket of an S3-compatible object store,
 * through the client of s3.h; the local data directory is scratch only.
 * Key layout (P = store.s3.prefix, <hex> = the sha256 digest's hex):
 *   P cache/blobs/sha256/<hex>             cached blobs        (area STORE_CACHE)
 *   P cache/manifests/sha256/<hex>         cached manifests, with <hex>.type holding the media type
 *   P cache/tags/<upstream>/<repo>/_tags/<tag>       tag maps (JSON: digest, media_type, fetched)
 *   P cache/links/<upstream>/<repo>/_blobs|_manifests/<hex>  repository links (marker objects)
 *   P push/blobs|manifests/sha256/<hex>    pushed objects      (area STORE_PUSHED)
 *   P push/tags/<repo>/_tags/<tag>, P push/links/<repo>/_blobs|_manifests/<hex>
 *   P push/referrers/<repo>/_subjects/<subject hex>/<referrer hex>
 *   P docs/optimized/<key>.json, docs/optimized/reports/<hex>.json,
 *   P docs/optimized/objects/<hex>.json, docs/gate/reports/<repo>/<hex>.json,
 *   P docs/gate/scans/<scan key>.scan, docs/signatures/<repo>/<hex>.json
 *   P uploads/<uuid>/<offset>              parts of upload sessions shared through Redis
 *   P health/check                         written by store_check_writable
 * and locally: <data>/tmp/ (writers' staging files, spools, scratch
 * directories, swept at open) and <data>/s3-uploads/ (upload sessions of
 * this replica alone, without Redis; store_s3_push.c). Deletes and the
 * garbage collection of pushed images: store_s3_gc.c.
 *
 * Objects become visible only once verified: writers tee into a local
 * staging file (for readers that follow a write) and into s3_writer, whose
 * multipart upload (or spool PUT) is completed only on a digest match.
 * Readers have no local descriptor: a positional read is a ranged GET, and
 * store_open_fd spools (store.c). A manifest's media type is written before
 * the manifest, so a visible manifest always has its type.
 *
 * Eviction: pins, uses and open readers are noted in this process (the
 * uses table); with a cluster (store_set_cluster) cachelru.c publishes them
 * to Redis in batches and the elected evictor removes least recently used
 * objects across the cluster, never what any replica holds. Without one
 * (or with Redis down) eviction lists the cache area and removes objects
 * this replica has not used first (in key order), then its least recently
 * used ones, skipping what it pins or reads. Either way an evicted object
 * of an optimized image takes its result and the rest of its image along,
 * or, when any of it is held, nothing of it goes (issue 12). The cache
 * size is listed at open and tracked since (in a cluster: the evictor's
 * listing). No scrub: the object store keeps its own checksums and
 * manifest reads re-verify.
 *
 * When the object store cannot be reached, operations fail with
 * RS_UNAVAILABLE (503) naming the endpoint, bucket and key (s3.c's words);
 * nothing is cached about the failure, so the next request after it returns
 * succeeds. No HTTP serving, no upstream. */
#include "store_s3.h"

#include "blobstore.h"
#include "cachelru.h"
#include "cluster.h"
#include "fsutil.h"
#include "image.h"
#include "imagejson.h"
#include "imagewalk.h"
#include "log.h"
#include "metrics.h"
#include "refname.h"
#include "rs_limits.h"
#include "s3_bcache.h"
#include "s3_memo.h"
#include "s3_writer.h"
#include "store_local.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TAG_DOC_MAX 4096
#define COPY_BUF (64 * 1024)
#define USES_MAX 65536 /* access records kept; the oldest go first */
#define READ_AHEAD (1u << 20) /* one ranged GET serves this much of a sequential read */
#define EVICT_LIST_S 600 /* at most this long between listings of the cache area */
#define MEMO_ENTRIES 1024      /* manifests remembered (s3_memo.h) */
#define MEMO_BYTES (32u << 20) /* and their bytes at most */

struct s3s_use {
	enum store_kind kind;
	char hex[DIGEST_HEX_LEN + 1];
	time_t used;     /* last use by this replica */
	uint64_t used_ms; /* the same in ms since the epoch (the cluster's access times) */
	bool dirty;       /* used since the cluster bookkeeping last collected it */
	time_t pinned;   /* kept from eviction until then */
	unsigned readers;
};

struct s3s_reader {
	struct store_reader base;
	struct s3s *s;
	enum store_area area;
	enum store_kind kind;
	char digest[DIGEST_STR_SIZE];
	char key[S3S_KEY_MAX];
	unsigned char *ra; /* read-ahead window (READ_AHEAD bytes, made at the first small read) */
	uint64_t ra_off;
	size_t ra_len;
	struct s3_bcache_fill *fill; /* a local copy made from what this reader fetches in order */
	bool fill_tried;
};

struct s3s_writer {
	struct store_writer base;
	struct s3s *s;
	enum store_area area;
	enum store_kind kind;
	char digest[DIGEST_STR_SIZE];
	int64_t expected;
	uint64_t n;
	bool existed; /* already in the bucket: a commit does not grow the area */
	int fd;
	char path[S3S_PATH_MAX + 64];
	struct s3_writer *w;   /* hashes what is written (one SHA-256 pass per byte) */
	struct rs_err failed;  /* a failed write sticks */
};

/* ------------------------------------------------------------ keys */

static const char *area_dir(enum store_area area)
{
	return area == STORE_PUSHED ? "push" : "cache";
}

static const char *kind_dir(enum store_kind kind)
{
	return kind == STORE_BLOB ? "blobs" : "manifests";
}

void s3s_object_key(char out[S3S_KEY_MAX], const struct s3s *s, enum store_area area, enum store_kind kind,
                    const char *digest)
{
	snprintf(out, S3S_KEY_MAX, "%s%s/%s/sha256/%s", s->prefix, area_dir(area), kind_dir(kind), digest_hex(digest));
}

enum rs_code s3s_key(char out[S3S_KEY_MAX], const struct s3s *s, struct rs_err *err, const char *fmt, ...)
{
	int n = snprintf(out, S3S_KEY_MAX, "%s", s->prefix);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(out + n, S3S_KEY_MAX - (size_t)n, fmt, ap);
	va_end(ap);
	if (m < 0 || (size_t)n + (size_t)m >= S3S_KEY_MAX)
		return rs_err_set(err, RS_TOO_LARGE, "object key under %.60s is longer than %d bytes", s->prefix,
		                  S3S_KEY_MAX - 1);
	return RS_OK;
}

/* ------------------------------------------------------------ access bookkeeping */

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The record of a cache object, made when absent (NULL when the table is
 * full of objects being read or out of memory). Called with s->mu held. */
static struct s3s_use *use_of(struct s3s *s, enum store_kind kind, const char *hex, bool make)
{
	for (size_t i = 0; i < s->nuses; i++)
		if (s->uses[i].kind == kind && strcmp(s->uses[i].hex, hex) == 0)
			return &s->uses[i];
	if (!make)
		return NULL;
	if (s->nuses == s->capuses) {
		if (s->capuses >= USES_MAX) {
			/* forget the oldest record nobody reads nor pins */
			size_t old = SIZE_MAX;
			time_t now = time(NULL);
			for (size_t i = 0; i < s->nuses; i++)
				if (!s->uses[i].readers && s->uses[i].pinned < now &&
				    (old == SIZE_MAX || s->uses[i].used < s->uses[old].used))
					old = i;
			if (old == SIZE_MAX)
				return NULL;
			s->uses[old] = s->uses[--s->nuses];
		} else {
			size_t cap = s->capuses ? s->capuses * 2 : 256;
			struct s3s_use *u = realloc(s->uses, cap * sizeof(*u));
			if (!u)
				return NULL;
			s->uses = u;
			s->capuses = cap;
		}
	}
	struct s3s_use *u = &s->uses[s->nuses++];
	memset(u, 0, sizeof(*u));
	u->kind = kind;
	snprintf(u->hex, sizeof(u->hex), "%s", hex);
	return u;
}

/* Note a use of a cache object; readers += delta. */
static void note_use(struct s3s *s, enum store_area area, enum store_kind kind, const char *digest, int delta)
{
	if (area != STORE_CACHE)
		return;
	pthread_mutex_lock(&s->mu);
	struct s3s_use *u = use_of(s, kind, digest_hex(digest), true);
	if (u) {
		u->used = time(NULL);
		u->used_ms = wall_ms();
		u->dirty = true;
		if (delta > 0 || u->readers > 0)
			u->readers = (unsigned)((int)u->readers + delta);
	}
	pthread_mutex_unlock(&s->mu);
}

static void size_add(struct s3s *s, int64_t delta)
{
	pthread_mutex_lock(&s->mu);
	if (delta < 0 && (uint64_t)-delta > s->size)
		s->size = 0;
	else
		s->size = (uint64_t)((int64_t)s->size + delta);
	pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------ small objects */

struct membuf {
	char *buf;
	size_t len, cap, max;
	const char *key;
};

static enum rs_code membuf_add(void *arg, const void *buf, size_t len, struct rs_err *err)
{
	struct membuf *m = arg;
	if (m->len + len > m->max)
		return rs_err_set(err, RS_TOO_LARGE, "object %.200s is over %zu bytes", m->key, m->max);
	if (m->len + len + 1 > m->cap) {
		size_t cap = m->cap ? m->cap : 4096;
		while (cap < m->len + len + 1)
			cap *= 2;
		char *b = realloc(m->buf, cap);
		if (!b)
			return rs_err_set(err, RS_NOMEM, "out of memory reading %.200s", m->key);
		m->buf = b;
		m->cap = cap;
	}
	memcpy(m->buf + m->len, buf, len);
	m->len += len;
	m->buf[m->len] = '\0';
	return RS_OK;
}

enum rs_code s3s_get_small(struct s3s *s, const char *key, size_t max, char **out, size_t *out_len,
                           struct rs_err *err)
{
	struct membuf m = {.max = max, .key = key};
	enum rs_code rc = s3_get(s->c, key, -1, -1, membuf_add, &m, NULL, err);
	if (rc == RS_OK && !m.buf && !(m.buf = calloc(1, 1)))
		rc = rs_err_set(err, RS_NOMEM, "out of memory reading %.200s", key);
	if (rc) {
		free(m.buf);
		return rc;
	}
	*out = m.buf;
	if (out_len)
		*out_len = m.len;
	return RS_OK;
}

enum rs_code s3s_mark(struct s3s *s, const char *key, struct rs_err *err)
{
	return s3_put(s->c, key, "1", 1, err);
}

void s3s_delete_quiet(struct s3s *s, const char *key)
{
	struct rs_err err = {0};
	s3_memo_drop(s->memo, key);
	if (s3_delete(s->c, key, &err) != RS_OK)
		return; /* best effort: the caller's contract says so; what stays is unreachable or swept */
}

bool s3s_exists(struct s3s *s, const char *key)
{
	struct s3_object_info info;
	struct rs_err err = {0};
	return s3_head(s->c, key, &info, &err) == RS_OK;
}

/* ------------------------------------------------------------ lifecycle */

static void s3s_free(void *impl)
{
	struct s3s *s = impl;
	if (!s)
		return;
	cachelru_free(s->lru); /* first: its thread collects from the table below */
	s3_client_free(s->c);
	s3_memo_free(s->memo);
	s3_bcache_free(s->bcache);
	pthread_mutex_destroy(&s->mu);
	free(s->uses);
	free(s->busy);
	free(s->real);
	free(s);
}

struct sum {
	uint64_t bytes;
};

static enum rs_code add_size(void *arg, const char *key, int64_t size, struct rs_err *err)
{
	(void)err;
	struct sum *sum = arg;
	size_t n = strlen(key);
	if (size > 0 && !(n > 5 && strcmp(key + n - 5, ".type") == 0))
		sum->bytes += (uint64_t)size;
	return RS_OK;
}

/* Every page of a listing under prefix, each key to fn. */
static enum rs_code list_all(struct s3s *s, const char *prefix, s3_list_fn fn, void *arg, struct rs_err *err)
{
	char *token = NULL;
	enum rs_code rc;
	do {
		char *next = NULL;
		rc = s3_list(s->c, prefix, token, 0, fn, arg, &next, err);
		free(token);
		token = next;
	} while (rc == RS_OK && token);
	free(token);
	return rc;
}

/* Credentials from the configured sources; the client copies them. */
static enum rs_code client_open(struct s3s *s, const struct rs_store_s3_config *sc, struct rs_err *err)
{
	char *ak = NULL, *sk = NULL;
	enum rs_code rc = s3_secret_load(&ak, sc->access_key_env, sc->access_key_file, err);
	if (rc == RS_OK)
		rc = s3_secret_load(&sk, sc->secret_key_env, sc->secret_key_file, err);
	if (rc == RS_OK) {
		struct s3_config c = {.endpoint = sc->endpoint, .region = sc->region, .bucket = sc->bucket,
		                      .access_key = ak, .secret_key = sk, .virtual_host = !sc->path_style,
		                      .spool_dir = s->tmp};
		rc = s3_client_new(&s->c, &c, err);
	}
	if (ak)
		memset(ak, 0, strlen(ak));
	if (sk)
		memset(sk, 0, strlen(sk));
	free(ak);
	free(sk);
	return rc;
}

enum rs_code store_s3_open(void **out_impl, const struct rs_config *cfg, struct rs_err *err)
{
	*out_impl = NULL;
	const struct rs_store_s3_config *sc = &cfg->store.s3;
	struct s3s *s = calloc(1, sizeof(*s));
	if (!s)
		return rs_err_set(err, RS_NOMEM, "out of memory opening the s3 store");
	pthread_mutex_init(&s->mu, NULL);
	s->cfg = cfg;
	enum rs_code rc = RS_OK;
	if (!(s->memo = s3_memo_new(MEMO_ENTRIES, MEMO_BYTES))) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory opening the s3 store");
		goto out;
	}
	if (snprintf(s->root, sizeof(s->root), "%s", cfg->data_dir) >= (int)sizeof(s->root) ||
	    snprintf(s->prefix, sizeof(s->prefix), "%s", sc->prefix ? sc->prefix : "") >= (int)sizeof(s->prefix)) {
		rc = rs_err_set(err, RS_CONFIG, "data directory or store.s3.prefix too long");
		goto out;
	}
	snprintf(s->tmp, sizeof(s->tmp), "%s/tmp", s->root);
	snprintf(s->uploads, sizeof(s->uploads), "%s/s3-uploads", s->root);
	if ((rc = fsutil_mkdir_p(s->tmp, NULL, err)) || (rc = fsutil_mkdir_p(s->uploads, NULL, err)))
		goto out;
	char copies[S3S_PATH_MAX + 16];
	snprintf(copies, sizeof(copies), "%s/blob-copies", s->root);
	if ((rc = s3_bcache_open(&s->bcache, copies, sc->local_cache_bytes, err)))
		goto out;
	/* what a crash left in the scratch area: staged writes, spools, directories */
	DIR *d = opendir(s->tmp);
	for (struct dirent *de; d && (de = readdir(d)) != NULL;) {
		if (de->d_name[0] == '.')
			continue;
		char p[S3S_PATH_MAX + 300];
		snprintf(p, sizeof(p), "%s/%s", s->tmp, de->d_name);
		fsutil_rm_tree(p);
	}
	if (d)
		closedir(d);
	if ((rc = client_open(s, sc, err)))
		goto out;
	/* the cache area's size: what the bucket holds now (an unreachable
	 * store is not fatal: requests fail with 503 until it returns) */
	struct sum sum = {0};
	char key[S3S_KEY_MAX];
	struct rs_err lerr = {0};
	if (s3s_key(key, s, &lerr, "cache/") == RS_OK && list_all(s, key, add_size, &sum, &lerr) == RS_OK)
		s->size = sum.bytes;
	s->real = realpath(s->root, NULL); /* NULL only scrubs less */
	*out_impl = s;
	return RS_OK;
out:
	s3s_free(s);
	return rc;
}

/* ------------------------------------------------------------ objects */

bool s3s_has(void *impl, enum store_area area, enum store_kind kind, const char *digest)
{
	char key[S3S_KEY_MAX];
	s3s_object_key(key, impl, area, kind, digest);
	return s3s_exists(impl, key);
}

static enum rs_code s3s_reader_open(void *impl, enum store_area area, enum store_kind kind, const char *digest,
                                    struct store_reader **out, struct rs_err *err)
{
	struct s3s *s = impl;
	if (!digest_valid(digest))
		return rs_err_set(err, RS_DIGEST_INVALID, "invalid digest '%.80s'", digest);
	struct s3s_reader *r = calloc(1, sizeof(*r));
	if (!r)
		return rs_err_set(err, RS_NOMEM, "out of memory opening %s", digest);
	r->base.drv = &store_s3_driver;
	r->base.fd = -1;
	r->s = s;
	r->area = area;
	r->kind = kind;
	snprintf(r->digest, sizeof(r->digest), "%s", digest);
	s3s_object_key(r->key, s, area, kind, digest);
	struct s3_object_info info;
	enum rs_code rc = s3_head(s->c, r->key, &info, err);
	if (rc) {
		if (rc == RS_NOT_FOUND && kind == STORE_BLOB)
			s3_bcache_drop(s->bcache, digest + 7);
		free(r);
		return rc;
	}
	r->base.size = info.size < 0 ? 0 : (uint64_t)info.size;
	if (kind == STORE_BLOB) /* the object exists: a local copy of it may serve */
		r->base.fd = s3_bcache_open_fd(s->bcache, digest + 7, r->base.size);
	note_use(s, area, kind, digest, +1);
	*out = &r->base;
	return RS_OK;
}

struct range_buf {
	unsigned char *buf;
	size_t len, cap;
};

static enum rs_code range_add(void *arg, const void *buf, size_t len, struct rs_err *err)
{
	struct range_buf *rb = arg;
	if (len > rb->cap - rb->len)
		return rs_err_set(err, RS_IO, "ranged GET answered more bytes than asked for");
	memcpy(rb->buf + rb->len, buf, len);
	rb->len += len;
	return RS_OK;
}

/* Small positional reads (the server asks for a few KiB at a time) go
 * through a window of READ_AHEAD bytes: one ranged GET per window, not per
 * call. A read at least that large goes straight into the caller's buffer. */
static ssize_t s3s_reader_pread(struct store_reader *base, void *buf, size_t len, uint64_t off, struct rs_err *err)
{
	struct s3s_reader *r = (struct s3s_reader *)base;
	if (off >= base->size || len == 0)
		return 0;
	if (len > base->size - off)
		len = (size_t)(base->size - off);
	if (base->fd >= 0) {
		ssize_t n = pread(base->fd, buf, len, (off_t)off);
		if (n < 0)
			rs_err_set(err, RS_IO, "reading the local copy of %s: %s", r->digest, strerror(errno));
		return n;
	}
	if (r->ra && off >= r->ra_off && off - r->ra_off < r->ra_len) {
		size_t n = (size_t)(r->ra_len - (off - r->ra_off));
		n = n < len ? n : len;
		memcpy(buf, r->ra + (off - r->ra_off), n);
		return (ssize_t)n;
	}
	if (len < READ_AHEAD && !r->ra)
		r->ra = malloc(READ_AHEAD); /* NULL: read without the window */
	bool window = len < READ_AHEAD && r->ra;
	size_t want = window ? (base->size - off < READ_AHEAD ? (size_t)(base->size - off) : READ_AHEAD) : len;
	struct range_buf rb = {window ? r->ra : buf, 0, want};
	r->ra_len = 0;
	enum rs_code rc = s3_get(r->s->c, r->key, (int64_t)off, (int64_t)(off + want - 1), range_add, &rb, NULL, err);
	if (rc)
		return -1;
	if (!r->fill_tried && off == 0 && r->kind == STORE_BLOB) {
		r->fill_tried = true;
		r->fill = s3_bcache_fill_new(r->s->bcache, r->digest + 7, base->size);
	}
	s3_bcache_fill_add(r->fill, off, rb.buf, rb.len);
	if (!window)
		return (ssize_t)rb.len;
	r->ra_off = off;
	r->ra_len = rb.len;
	size_t n = rb.len < len ? rb.len : len;
	memcpy(buf, r->ra, n);
	return (ssize_t)n;
}

static void s3s_reader_close(struct store_reader *base)
{
	struct s3s_reader *r = (struct s3s_reader *)base;
	note_use(r->s, r->area, r->kind, r->digest, -1);
	s3_bcache_fill_free(r->fill); /* kept if it is whole and verified */
	if (base->fd >= 0)
		close(base->fd);
	free(r->ra);
	free(r);
}

static void s3s_remove(void *impl, enum store_area area, enum store_kind kind, const char *digest)
{
	struct s3s *s = impl;
	char key[S3S_KEY_MAX], type[S3S_KEY_MAX + 8];
	struct rs_err err = {0};
	struct s3_object_info info = {.size = 0};
	s3s_object_key(key, s, area, kind, digest);
	s3_memo_drop(s->memo, key);
	bool had = area == STORE_CACHE && s3_head(s->c, key, &info, &err) == RS_OK;
	if (s3_delete(s->c, key, &err) == RS_OK && had && info.size > 0)
		size_add(s, -info.size);
	if (kind == STORE_MANIFEST) {
		snprintf(type, sizeof(type), "%s.type", key);
		s3s_delete_quiet(s, type); /* best effort, as store.h says */
	} else {
		s3_bcache_drop(s->bcache, digest + 7);
	}
}

/* ------------------------------------------------------------ writers */

static enum rs_code s3s_writer_new(void *impl, enum store_area area, enum store_kind kind, const char *digest,
                                   int64_t size, struct store_writer **out, struct rs_err *err)
{
	struct s3s *s = impl;
	if (!digest_valid(digest))
		return rs_err_set(err, RS_DIGEST_INVALID, "invalid digest '%.80s'", digest);
	char key[S3S_KEY_MAX];
	s3s_object_key(key, s, area, kind, digest);
	/* reach the store before taking any byte: a client then gets a clean
	 * 503 rather than a body cut short */
	struct s3_object_info info;
	enum rs_code rc = s3_head(s->c, key, &info, err);
	if (rc != RS_OK && rc != RS_NOT_FOUND)
		return rc;
	bool existed = rc == RS_OK;
	rc = RS_OK;
	struct s3s_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return rs_err_set(err, RS_NOMEM, "out of memory writing %s", digest);
	w->base.drv = &store_s3_driver;
	w->s = s;
	w->area = area;
	w->kind = kind;
	w->expected = size;
	w->existed = existed;
	w->fd = -1;
	snprintf(w->digest, sizeof(w->digest), "%s", digest);
	snprintf(w->path, sizeof(w->path), "%s/w-XXXXXX", s->tmp);
	if ((w->fd = mkostemp(w->path, O_CLOEXEC)) < 0) {
		rc = rs_err_set(err, RS_IO, "staging %s under %s: %s", digest, s->tmp, strerror(errno));
		free(w);
		return rc;
	}
	if ((rc = s3_writer_new(&w->w, s->c, key, digest, size, err))) {
		close(w->fd);
		(void)unlink(w->path); /* ours, just made */
		free(w);
		return rc;
	}
	*out = &w->base;
	return RS_OK;
}

static enum rs_code s3s_writer_write(struct store_writer *base, const void *buf, size_t len, struct rs_err *err)
{
	struct s3s_writer *w = (struct s3s_writer *)base;
	if (w->failed.code)
		return rs_err_set(err, w->failed.code, "%s", w->failed.msg);
	enum rs_code rc = RS_OK;
	if (w->expected >= 0 && (uint64_t)w->expected - w->n < len)
		rc = rs_err_set(err, RS_DIGEST_MISMATCH, "%s: expected %lld bytes, got more", w->digest,
		                (long long)w->expected);
	if (rc == RS_OK)
		rc = fsutil_write_all(w->fd, buf, len, w->path, err);
	if (rc == RS_OK)
		rc = s3_writer_write(w->w, buf, len, err);
	if (rc) {
		w->failed = *err;
		return rc;
	}
	w->n += len;
	return RS_OK;
}

static uint64_t s3s_writer_size(const struct store_writer *base)
{
	return ((const struct s3s_writer *)base)->n;
}

static const char *s3s_writer_path(const struct store_writer *base)
{
	return ((const struct s3s_writer *)base)->path;
}

static void writer_release(struct s3s_writer *w)
{
	s3_writer_free(w->w); /* aborts what was not committed */
	if (w->fd >= 0)
		close(w->fd);
	(void)unlink(w->path); /* the staging file is ours; nothing else reads it now */
	free(w);
}

static enum rs_code s3s_writer_commit(struct store_writer *base, struct rs_err *err)
{
	struct s3s_writer *w = (struct s3s_writer *)base;
	enum rs_code rc = RS_OK;
	if (w->failed.code)
		rc = rs_err_set(err, w->failed.code, "%s", w->failed.msg);
	else if (w->expected >= 0 && w->n != (uint64_t)w->expected)
		rc = rs_err_set(err, RS_DIGEST_MISMATCH, "%s: expected %lld bytes, got %llu", w->digest,
		                (long long)w->expected, (unsigned long long)w->n);
	else
		rc = s3_writer_commit(w->w, err);
	if (rc == RS_DIGEST_MISMATCH && !w->failed.code && (w->expected < 0 || w->n == (uint64_t)w->expected)) {
		rs_err_set(err, RS_DIGEST_MISMATCH, "expected %s, got %s (%llu bytes); nothing stored", w->digest,
		           s3_writer_got(w->w), (unsigned long long)w->n);
	}
	if (rc == RS_OK && w->area == STORE_CACHE) {
		if (!w->existed)
			size_add(w->s, (int64_t)w->n);
		note_use(w->s, w->area, w->kind, w->digest, 0);
	}
	if (rc == RS_OK && w->kind == STORE_BLOB) /* verified: the staging file becomes the local copy */
		s3_bcache_adopt(w->s->bcache, w->digest + 7, w->path, w->n);
	writer_release(w);
	return rc;
}

static void s3s_writer_abort(struct store_writer *base)
{
	writer_release((struct s3s_writer *)base);
}

enum rs_code s3s_put_verified_fd(struct s3s *s, enum store_area area, enum store_kind kind, const char *digest,
                                 int fd, uint64_t size, struct rs_err *err)
{
	char key[S3S_KEY_MAX];
	s3s_object_key(key, s, area, kind, digest);
	struct s3_writer *w = NULL;
	enum rs_code rc = s3_writer_new(&w, s->c, key, digest, (int64_t)size, err);
	char *buf = rc ? NULL : malloc(COPY_BUF);
	if (rc == RS_OK && !buf)
		rc = rs_err_set(err, RS_NOMEM, "out of memory storing %s", digest);
	for (uint64_t off = 0; rc == RS_OK && off < size;) {
		ssize_t n = pread(fd, buf, size - off < COPY_BUF ? (size_t)(size - off) : COPY_BUF, (off_t)off);
		if (n <= 0) {
			rc = rs_err_set(err, RS_IO, "reading %s at %llu: %s", digest, (unsigned long long)off,
			                n < 0 ? strerror(errno) : "early end of file");
			break;
		}
		rc = s3_writer_write(w, buf, (size_t)n, err);
		off += (uint64_t)n;
	}
	if (rc == RS_OK)
		rc = s3_writer_commit(w, err);
	free(buf);
	s3_writer_free(w);
	if (rc == RS_OK && area == STORE_CACHE)
		size_add(s, (int64_t)size);
	return rc;
}

/* ------------------------------------------------------------ manifests */

enum rs_code s3s_manifest_put(void *impl, enum store_area area, const char *digest, const char *media_type,
                              const void *buf, size_t len, struct rs_err *err)
{
	struct s3s *s = impl;
	enum rs_code rc = digest_parse(digest, err);
	if (rc)
		return rc;
	char got[DIGEST_STR_SIZE];
	digest_buffer(got, buf, len);
	if (strcmp(got, digest) != 0)
		return rs_err_set(err, RS_DIGEST_MISMATCH, "manifest hashes to %s, expected %s", got, digest);
	char key[S3S_KEY_MAX], type[S3S_KEY_MAX + 8];
	s3s_object_key(key, s, area, STORE_MANIFEST, digest);
	snprintf(type, sizeof(type), "%s.type", key);
	/* the type first: a visible manifest always has it */
	if (media_type && blobstore_media_type_valid(media_type) &&
	    (rc = s3_put(s->c, type, media_type, strlen(media_type), err)))
		return rc;
	struct s3_object_info info;
	bool had = area == STORE_CACHE && s3_head(s->c, key, &info, err) == RS_OK;
	if ((rc = s3_put(s->c, key, buf, len, err)))
		return rc;
	if (area == STORE_CACHE && !had)
		size_add(s, (int64_t)len);
	note_use(s, area, STORE_MANIFEST, digest, 0);
	return RS_OK;
}

/* A remembered manifest (verified when it was read) while its object still exists: one HEAD
 * instead of two GETs. RS_NOT_FOUND when there is none to use (not remembered, larger than max,
 * gone from the bucket: the caller reads the bucket, which says what is true); another code when
 * the HEAD failed. */
static enum rs_code memo_read(struct s3s *s, const char *key, size_t max, char **buf, size_t *len, char **type,
                              struct rs_err *err)
{
	if (!s3_memo_get(s->memo, key, buf, len, type))
		return RS_NOT_FOUND;
	struct s3_object_info info;
	enum rs_code rc = *len <= max ? s3_head(s->c, key, &info, err) : RS_NOT_FOUND;
	if (rc == RS_OK)
		return RS_OK;
	free(*buf);
	free(*type);
	*buf = *type = NULL;
	if (rc == RS_NOT_FOUND)
		s3_memo_drop(s->memo, key);
	return rc;
}

enum rs_code s3s_manifest_get(void *impl, enum store_area area, const char *digest, size_t max_bytes,
                              char **out_buf, size_t *out_len, char **out_type, struct rs_err *err)
{
	struct s3s *s = impl;
	enum rs_code rc = digest_parse(digest, err);
	if (rc)
		return rc;
	char key[S3S_KEY_MAX], tkey[S3S_KEY_MAX + 8];
	s3s_object_key(key, s, area, STORE_MANIFEST, digest);
	snprintf(tkey, sizeof(tkey), "%s.type", key);
	char *buf = NULL, *type = NULL;
	size_t len = 0;
	if ((rc = memo_read(s, key, max_bytes, &buf, &len, &type, err)) != RS_NOT_FOUND) {
		if (rc == RS_OK) {
			note_use(s, area, STORE_MANIFEST, digest, 0);
			*out_buf = buf;
			*out_len = len;
			*out_type = type;
		}
		return rc;
	}
	if ((rc = s3s_get_small(s, key, max_bytes, &buf, &len, err)))
		return rc;
	char got[DIGEST_STR_SIZE];
	digest_buffer(got, buf, len);
	if (strcmp(got, digest) != 0) {
		free(buf);
		s3s_remove(s, area, STORE_MANIFEST, digest);
		return rs_err_set(err, RS_NOT_FOUND, "stored manifest %s hashes to %s: removed", digest, got);
	}
	struct rs_err terr = {0};
	rc = s3s_get_small(s, tkey, BLOBSTORE_MEDIA_TYPE_SIZE - 1, &type, NULL, &terr);
	if (rc != RS_OK && rc != RS_NOT_FOUND && rc != RS_TOO_LARGE) {
		free(buf);
		*err = terr;
		return rc;
	}
	if (rc != RS_OK || !blobstore_media_type_valid(type)) {
		free(type);
		char mt[BLOBSTORE_MEDIA_TYPE_SIZE];
		blobstore_sniff_media_type(mt, buf, len);
		type = strdup(mt);
	}
	if (!type) {
		free(buf);
		return rs_err_set(err, RS_NOMEM, "out of memory reading %s", digest);
	}
	s3_memo_put(s->memo, key, buf, len, type);
	note_use(s, area, STORE_MANIFEST, digest, 0);
	*out_buf = buf;
	*out_len = len;
	*out_type = type;
	return RS_OK;
}

/* ------------------------------------------------------------ tags and links */

static bool upstream_valid(const char *up)
{
	size_t n = strlen(up);
	return n > 0 && n <= 255 && up[0] != '.' && up[0] != '-' &&
	       strspn(up, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_:") == n;
}

enum rs_code s3s_tag_write(struct s3s *s, const char *key, const struct store_tag *t, struct rs_err *err)
{
	struct blobstore_tag bt = {0};
	memcpy(bt.digest, t->digest, sizeof(bt.digest));
	memcpy(bt.media_type, t->media_type, sizeof(bt.media_type));
	bt.fetched = t->fetched;
	char text[TAG_DOC_MAX];
	enum rs_code rc = blobstore_tag_format(text, sizeof(text), &bt, err);
	return rc ? rc : s3_put(s->c, key, text, strlen(text), err);
}

enum rs_code s3s_tag_read(struct s3s *s, const char *key, struct store_tag *out, struct rs_err *err)
{
	char *text = NULL;
	size_t len = 0;
	enum rs_code rc = s3s_get_small(s, key, TAG_DOC_MAX, &text, &len, err);
	if (rc)
		return rc == RS_TOO_LARGE ? rs_err_set(err, RS_NOT_FOUND, "tag record %.200s is corrupt", key) : rc;
	struct blobstore_tag bt = {0};
	bool ok = strlen(text) == len && blobstore_tag_parse(text, &bt);
	free(text);
	if (!ok)
		return rs_err_set(err, RS_NOT_FOUND, "tag record %.200s is corrupt", key);
	memset(out, 0, sizeof(*out));
	memcpy(out->digest, bt.digest, sizeof(out->digest));
	memcpy(out->media_type, bt.media_type, sizeof(out->media_type));
	out->fetched = bt.fetched;
	return RS_OK;
}

static enum rs_code tag_key(char key[S3S_KEY_MAX], struct s3s *s, const char *upstream, const char *repo,
                            const char *tag, struct rs_err *err)
{
	if (!upstream_valid(upstream) || !refname_repo_valid(repo) || !refname_tag_valid(tag))
		return rs_err_set(err, RS_BAD_INPUT, "invalid tag reference %.60s/%.100s:%.60s", upstream, repo, tag);
	return s3s_key(key, s, err, "cache/tags/%s/%s/_tags/%s", upstream, repo, tag);
}

static enum rs_code s3s_tag_get(void *impl, const char *upstream, const char *repo, const char *tag,
                                struct store_tag *out, struct rs_err *err)
{
	char key[S3S_KEY_MAX];
	enum rs_code rc = tag_key(key, impl, upstream, repo, tag, err);
	return rc ? rc : s3s_tag_read(impl, key, out, err);
}

static enum rs_code s3s_tag_put(void *impl, const char *upstream, const char *repo, const char *tag,
                                const struct store_tag *t, struct rs_err *err)
{
	char key[S3S_KEY_MAX];
	enum rs_code rc = tag_key(key, impl, upstream, repo, tag, err);
	return rc ? rc : s3s_tag_write(impl, key, t, err);
}

static enum rs_code link_key(char key[S3S_KEY_MAX], struct s3s *s, const char *upstream, const char *repo,
                             enum store_kind kind, const char *digest, struct rs_err *err)
{
	if (!upstream_valid(upstream) || !refname_repo_valid(repo))
		return rs_err_set(err, RS_BAD_INPUT, "invalid repository %.60s/%.100s", upstream, repo);
	if (!digest_valid(digest))
		return rs_err_set(err, RS_DIGEST_INVALID, "invalid digest '%.80s'", digest);
	return s3s_key(key, s, err, "cache/links/%s/%s/_%s/%s", upstream, repo, kind_dir(kind), digest_hex(digest));
}

static enum rs_code s3s_link(void *impl, const char *upstream, const char *repo, enum store_kind kind,
                             const char *digest, struct rs_err *err)
{
	char key[S3S_KEY_MAX];
	enum rs_code rc = link_key(key, impl, upstream, repo, kind, digest, err);
	return rc ? rc : s3s_mark(impl, key, err);
}

static bool s3s_linked(void *impl, const char *upstream, const char *repo, enum store_kind kind, const char *digest)
{
	char key[S3S_KEY_MAX];
	struct rs_err err = {0};
	return link_key(key, impl, upstream, repo, kind, digest, &err) == RS_OK && s3s_exists(impl, key);
}

static void s3s_unlink(void *impl, const char *upstream, const char *repo, enum store_kind kind, const char *digest)
{
	char key[S3S_KEY_MAX];
	struct rs_err err = {0};
	if (link_key(key, impl, upstream, repo, kind, digest, &err) == RS_OK)
		s3s_delete_quiet(impl, key); /* best effort, as store.h says */
}

struct walker {
	struct store_find find; /* first: store_find_visit's context */
	struct s3s *s;
	const char *upstream, *repo; /* link_visit: the links of repo */
};

static enum rs_code walk_load(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len, char **type,
                              struct rs_err *err)
{
	const struct walker *w = ctx;
	return s3s_manifest_get(w->s, STORE_CACHE, n->digest, RS_LIMIT_MANIFEST_MAX_BYTES, buf, len, type, err);
}

/* As blobstore.c's link_visit: configs and layers, each index entry after
 * its own references; below the root on a best-effort basis. */
static enum rs_code link_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                               enum imagewalk_step *step, struct rs_err *err)
{
	const struct walker *w = ctx;
	bool valid = n->digest && digest_valid(n->digest);
	if (n->kind == IMAGEWALK_CONFIG || n->kind == IMAGEWALK_LAYER)
		return valid ? s3s_link(w->s, w->upstream, w->repo, STORE_BLOB, n->digest, err) : RS_OK;
	if (ev == IMAGEWALK_REF)
		*step = valid && n->depth == 1 && s3s_has(w->s, STORE_CACHE, STORE_MANIFEST, n->digest)
		                ? IMAGEWALK_BEST_EFFORT
		                : IMAGEWALK_SKIP;
	else if (ev == IMAGEWALK_LEAVE && n->depth > 0 && valid)
		return s3s_link(w->s, w->upstream, w->repo, STORE_MANIFEST, n->digest, err);
	return RS_OK;
}

static enum rs_code s3s_link_image(void *impl, const char *upstream, const char *repo, const char *digest,
                                   struct rs_err *err)
{
	char key[S3S_KEY_MAX];
	enum rs_code rc = link_key(key, impl, upstream, repo, STORE_MANIFEST, digest, err);
	if (rc == RS_OK) {
		struct walker w = {.s = impl, .upstream = upstream, .repo = repo};
		const struct imagewalk walk = {.load = walk_load, .visit = link_visit, .ctx = &w};
		rc = imagewalk_run(&walk, digest, err);
	}
	return rc ? rc : s3s_mark(impl, key, err);
}


struct manifest_links {
	char (*hex)[DIGEST_HEX_LEN + 1];
	size_t n;
};

static enum rs_code collect_hex(void *arg, const char *key, int64_t size, struct rs_err *err)
{
	(void)size;
	(void)err;
	struct manifest_links *ml = arg;
	const char *slash = strrchr(key, '/');
	const char *name = slash ? slash + 1 : key;
	if (ml->n < RS_LIMIT_LINK_SCAN_MANIFESTS && strlen(name) == DIGEST_HEX_LEN)
		snprintf(ml->hex[ml->n++], DIGEST_HEX_LEN + 1, "%s", name);
	return RS_OK;
}

static bool s3s_linked_by_image(void *impl, const char *upstream, const char *repo, enum store_kind kind,
                                const char *digest)
{
	struct s3s *s = impl;
	char key[S3S_KEY_MAX];
	struct rs_err err = {0};
	if (!digest_valid(digest) || !upstream_valid(upstream) || !refname_repo_valid(repo) ||
	    s3s_key(key, s, &err, "cache/links/%s/%s/_manifests/", upstream, repo) != RS_OK)
		return false;
	struct manifest_links ml = {calloc(RS_LIMIT_LINK_SCAN_MANIFESTS, DIGEST_HEX_LEN + 1), 0};
	if (!ml.hex)
		return false;
	char *next = NULL;
	bool found = false;
	if (s3_list(s->c, key, NULL, RS_LIMIT_LINK_SCAN_MANIFESTS, collect_hex, &ml, &next, &err) == RS_OK) {
		for (size_t i = 0; !found && i < ml.n; i++) {
			char md[DIGEST_STR_SIZE];
			snprintf(md, sizeof(md), "sha256:%s", ml.hex[i]);
			struct walker w = {.find = {kind == STORE_MANIFEST, digest, false}, .s = s};
			const struct imagewalk walk = {.load = walk_load, .visit = store_find_visit, .ctx = &w};
			enum rs_code rc = imagewalk_run(&walk, md, &err);
			(void)rc; /* a manifest that cannot be read references nothing */
			found = w.find.found;
		}
	}
	free(next);
	free(ml.hex);
	return found;
}

/* ------------------------------------------------------------ layouts */

struct export {
	struct s3s *s;
	enum store_area area;
	const char *dir;
	size_t manifest_max;
	store_fetch_fn fetch;
	void *ctx;
	char *root_type;
	size_t root_len;
};

struct file_sink {
	int fd;
	const char *path;
	struct digest_ctx *dc; /* hashes what is written, when not NULL */
};

static enum rs_code file_add(void *arg, const void *buf, size_t len, struct rs_err *err)
{
	struct file_sink *f = arg;
	if (f->dc)
		digest_update(f->dc, buf, len);
	return fsutil_write_all(f->fd, buf, len, f->path, err);
}

/* Download kind/digest into the layout's blobs/sha256/ (fetching it into
 * the store first when absent). */
static enum rs_code export_object(const struct export *x, enum store_kind kind, const char *digest, bool optional,
                                  struct rs_err *err)
{
	if (!digest || !digest_valid(digest))
		return rs_err_set(err, RS_BAD_INPUT, "invalid digest '%.80s' in a manifest", digest ? digest : "(none)");
	char key[S3S_KEY_MAX], to[S3S_PATH_MAX + 128];
	s3s_object_key(key, x->s, x->area, kind, digest);
	snprintf(to, sizeof(to), "%s/blobs/sha256/%s", x->dir, digest_hex(digest));
	if (access(to, F_OK) == 0)
		return RS_OK;
	enum rs_code rc = RS_OK;
	struct s3_object_info info = {.size = -1};
	struct rs_err herr = {0};
	if (s3_head(x->s->c, key, &info, &herr) != RS_OK) {
		if (!x->fetch)
			return optional ? RS_OK
			                : rs_err_set(err, RS_NOT_FOUND, "%s %s is not in the store",
			                             kind == STORE_MANIFEST ? "manifest" : "blob", digest);
		if ((rc = x->fetch(x->ctx, kind, digest, err)))
			return rs_err_prefix(err, "fetching %s: ", digest), rc;
		info.size = -1;
	}
	/* the object is in the bucket: this replica's verified local copy of it will do */
	if (kind == STORE_BLOB && info.size >= 0 && s3_bcache_link_out(x->s->bcache, digest_hex(digest), (uint64_t)info.size, to))
		return RS_OK;
	int fd = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return rs_err_set(err, RS_IO, "creating %s: %s", to, strerror(errno));
	struct file_sink f = {fd, to, kind == STORE_BLOB && x->s->bcache ? digest_new() : NULL};
	rc = s3_get(x->s->c, key, -1, -1, file_add, &f, &info, err);
	if (close(fd) != 0 && rc == RS_OK)
		rc = rs_err_set(err, RS_IO, "closing %s: %s", to, strerror(errno));
	if (rc)
		(void)unlink(to); /* a partial copy must not stay in the layout */
	if (rc == RS_OK && f.dc && info.size >= 0) {
		char got[DIGEST_STR_SIZE];
		digest_final(f.dc, got);
		if (strcmp(got, digest) == 0) /* verified: it becomes this replica's copy too */
			s3_bcache_adopt(x->s->bcache, digest_hex(digest), to, (uint64_t)info.size);
	}
	digest_free(f.dc);
	return rc;
}

static enum rs_code export_load(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len, char **type,
                                struct rs_err *err)
{
	const struct export *x = ctx;
	enum rs_code rc = export_object(x, STORE_MANIFEST, n->digest, false, err);
	return rc ? rc : s3s_manifest_get(x->s, x->area, n->digest, x->manifest_max, buf, len, type, err);
}

static enum rs_code export_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                                 enum imagewalk_step *step, struct rs_err *err)
{
	(void)step;
	struct export *x = ctx;
	if (ev == IMAGEWALK_LOADED && n->kind == IMAGEWALK_INDEX && n->depth > 0)
		return rs_err_set(err, RS_BAD_INPUT, "%s: an index inside an index is not supported", n->digest);
	if (ev == IMAGEWALK_REF && n->kind == IMAGEWALK_CONFIG)
		return export_object(x, STORE_BLOB, n->digest, false, err);
	if (ev == IMAGEWALK_REF && n->kind == IMAGEWALK_LAYER)
		return export_object(x, STORE_BLOB, n->digest, true, err);
	if (ev == IMAGEWALK_LEAVE && n->depth == 0) {
		if (n->media_type && !(x->root_type = strdup(n->media_type)))
			return rs_err_set(err, RS_NOMEM, "out of memory");
		x->root_len = n->len;
	}
	return RS_OK;
}

static enum rs_code s3s_export_layout(void *impl, enum store_area area, const char *digest, const char *tag,
                                      const char *dir, size_t manifest_max, store_fetch_fn fetch, void *ctx,
                                      struct rs_err *err)
{
	char path[S3S_PATH_MAX + 64];
	if (snprintf(path, sizeof(path), "%s/blobs/sha256", dir) >= (int)sizeof(path))
		return rs_err_set(err, RS_TOO_LARGE, "layout path %.100s is too long", dir);
	enum rs_code rc = RS_OK;
	if (mkdir(dir, 0700) != 0 || (rc = fsutil_mkdir_p(path, NULL, err)) != RS_OK)
		return rc ? rc : rs_err_set(err, RS_IO, "creating %s: %s", dir, strerror(errno));
	static const char oci_layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
	snprintf(path, sizeof(path), "%s/oci-layout", dir);
	if ((rc = fsutil_write_file(path, oci_layout, sizeof(oci_layout) - 1, false, err)))
		return rc;
	struct export x = {impl, area, dir, manifest_max, fetch, ctx, NULL, 0};
	const struct imagewalk walk = {.load = export_load, .visit = export_visit, .ctx = &x};
	rc = imagewalk_run(&walk, digest, err);
	char *json = NULL;
	size_t jlen = 0;
	if (rc == RS_OK) {
		struct imagejson_descriptor d = {.media_type = x.root_type, .digest = (char *)digest, .size = x.root_len};
		struct imagejson_index idx = {.schema_version = 2, .manifests = &d, .manifest_count = 1};
		if (tag)
			rc = imagejson_kv_set(&d.annotations, &d.annotation_count, IMAGE_ANN_REF_NAME, tag, err);
		if (rc == RS_OK)
			rc = imagejson_write_index(&json, &jlen, &idx, err);
		if (d.annotations)
			imagejson_kv_free(d.annotations, d.annotation_count);
	}
	if (rc == RS_OK) {
		snprintf(path, sizeof(path), "%s/index.json", dir);
		rc = fsutil_write_file(path, json, jlen, false, err);
	}
	free(json);
	free(x.root_type);
	return rc;
}

/* ------------------------------------------------------------ scratch */

static enum rs_code s3s_scratch_new(void *impl, const char *prefix, char *out, size_t cap, struct rs_err *err)
{
	return store_local_scratch_new(((struct s3s *)impl)->tmp, prefix, out, cap, err);
}

static void s3s_scratch_remove(void *impl, const char *dir)
{
	store_local_scratch_remove(((struct s3s *)impl)->tmp, dir);
}

static size_t s3s_scrub_paths(const void *impl, char *text)
{
	const struct s3s *s = impl;
	return store_local_scrub_paths(s->root, s->real, text);
}

/* ------------------------------------------------------------ documents */


static enum rs_code doc_key(char key[S3S_KEY_MAX], struct s3s *s, enum store_doc doc, const char *repository,
                            const char *name, struct rs_err *err)
{
	if (doc == STORE_DOC_OPT_RESULT || doc == STORE_DOC_GATE_SCAN) {
		if (!store_local_key_ok(name))
			return rs_err_set(err, RS_BAD_INPUT, "invalid result key '%.80s'", name);
		return doc == STORE_DOC_OPT_RESULT ? s3s_key(key, s, err, "docs/optimized/%s.json", name)
		                                   : s3s_key(key, s, err, "docs/gate/scans/%s.scan", name);
	}
	if (!digest_valid(name))
		return rs_err_set(err, RS_DIGEST_INVALID, "invalid digest '%.80s'", name);
	const char *hex = digest_hex(name);
	if (doc == STORE_DOC_OPT_REPORT)
		return s3s_key(key, s, err, "docs/optimized/reports/%s.json", hex);
	if (doc == STORE_DOC_OPT_OWNER)
		return s3s_key(key, s, err, "docs/optimized/objects/%s.json", hex);
	if (!repository || !refname_repo_valid(repository))
		return rs_err_set(err, RS_NOT_FOUND, "invalid repository name '%.80s'", repository ? repository : "");
	if (doc == STORE_DOC_SIGNATURES)
		return s3s_key(key, s, err, "docs/signatures/%s/%s.json", repository, hex);
	return s3s_key(key, s, err, "docs/gate/reports/%s/%s.json", repository, hex);
}

static enum rs_code s3s_doc_put(void *impl, enum store_doc doc, const char *repository, const char *key,
                                const void *buf, size_t len, struct rs_err *err)
{
	char k[S3S_KEY_MAX];
	enum rs_code rc = doc_key(k, impl, doc, repository, key, err);
	return rc ? rc : s3_put(((struct s3s *)impl)->c, k, buf, len, err);
}

static enum rs_code s3s_doc_get(void *impl, enum store_doc doc, const char *repository, const char *key, size_t max,
                                char **out, size_t *out_len, struct rs_err *err)
{
	char k[S3S_KEY_MAX];
	enum rs_code rc = doc_key(k, impl, doc, repository, key, err);
	return rc ? rc : s3s_get_small(impl, k, max, out, out_len, err);
}

/* ------------------------------------------------------------ accounting */

static uint64_t s3s_size(const void *impl)
{
	struct s3s *s = (struct s3s *)impl;
	uint64_t n;
	/* in a cluster, what the evictor last listed (every replica's writes) */
	if (s->lru && cachelru_cluster_size(s->lru, &n))
		return n;
	pthread_mutex_lock(&s->mu);
	n = s->size;
	pthread_mutex_unlock(&s->mu);
	return n;
}

struct candidates {
	struct cachelru_cand *v;
	size_t n, cap;
	uint64_t total;
	size_t skip; /* prefix length of the listed keys */
};

static enum rs_code add_candidate(void *arg, const char *key, int64_t size, struct rs_err *err)
{
	struct candidates *cs = arg;
	const char *rest = key + cs->skip; /* blobs/sha256/<hex> or manifests/sha256/<hex>[.type] */
	enum store_kind kind = strncmp(rest, "blobs/", 6) == 0 ? STORE_BLOB : STORE_MANIFEST;
	const char *hex = strrchr(rest, '/');
	if (!hex || strlen(hex + 1) != DIGEST_HEX_LEN || size < 0)
		return RS_OK; /* a media type sidecar goes with its manifest */
	cs->total += (uint64_t)size;
	if (cs->n == cs->cap) {
		size_t cap = cs->cap ? cs->cap * 2 : 256;
		struct cachelru_cand *v = realloc(cs->v, cap * sizeof(*v));
		if (!v)
			return rs_err_set(err, RS_NOMEM, "out of memory listing the cache for eviction");
		cs->v = v;
		cs->cap = cap;
	}
	struct cachelru_cand *c = &cs->v[cs->n++];
	memset(c, 0, sizeof(*c));
	c->kind = kind;
	snprintf(c->hex, sizeof(c->hex), "%s", hex + 1);
	c->size = (uint64_t)size;
	return RS_OK;
}

/* The cache area's objects with their sizes, and this replica's own uses and holds. */
static enum rs_code list_candidates(struct s3s *s, struct candidates *cs, struct rs_err *err)
{
	char prefix[S3S_KEY_MAX], sub[S3S_KEY_MAX + 16];
	enum rs_code rc = s3s_key(prefix, s, err, "cache/");
	cs->skip = strlen(prefix);
	for (int k = 0; rc == RS_OK && k < 2; k++) {
		snprintf(sub, sizeof(sub), "%s%s/", prefix, k ? "manifests" : "blobs");
		rc = list_all(s, sub, add_candidate, cs, err);
	}
	if (rc)
		return rc;
	time_t now = time(NULL);
	pthread_mutex_lock(&s->mu);
	s->size = cs->total; /* what the bucket holds, other replicas' writes included */
	for (size_t i = 0; i < cs->n; i++) {
		struct s3s_use *u = use_of(s, cs->v[i].kind, cs->v[i].hex, false);
		if (u) {
			cs->v[i].used_ms = u->used_ms;
			cs->v[i].held = u->readers || u->pinned >= now;
		}
	}
	pthread_mutex_unlock(&s->mu);
	return RS_OK;
}

/* Is cache object kind/hex pinned or being read by this replica now, or (holds, the
 * evictor's snapshot of the cluster; may be NULL) by another? */
static bool held(struct s3s *s, const struct cachelru_holds *holds, enum store_kind kind, const char *hex)
{
	pthread_mutex_lock(&s->mu);
	struct s3s_use *u = use_of(s, kind, hex, false);
	bool h = u && (u->readers || u->pinned >= time(NULL));
	pthread_mutex_unlock(&s->mu);
	return h || (holds && cachelru_holds_has(holds, kind, hex));
}

struct evict_walk {
	struct s3s *s;
	const struct cachelru_holds *holds;
	const char *skip; /* the object eviction chose: its caller removes it */
	bool check;       /* only look for a held object (held_seen) */
	bool held_seen;
	uint64_t freed;
	unsigned removed;
};

static void evict_owned(struct evict_walk *w, enum store_kind kind, const char *digest)
{
	char key[S3S_KEY_MAX];
	struct s3_object_info info;
	struct rs_err err = {0};
	if (!digest || !digest_valid(digest) || strcmp(digest, w->skip) == 0)
		return;
	if (held(w->s, w->holds, kind, digest_hex(digest))) {
		w->held_seen = true;
		return;
	}
	if (w->check)
		return;
	s3s_object_key(key, w->s, STORE_CACHE, kind, digest);
	if (s3_head(w->s->c, key, &info, &err) != RS_OK)
		return; /* gone already */
	s3s_remove(w->s, STORE_CACHE, kind, digest);
	w->freed += info.size > 0 ? (uint64_t)info.size : 0;
	w->removed++;
}

static enum rs_code evict_load(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len, char **type,
                               struct rs_err *err)
{
	struct evict_walk *w = ctx;
	return s3s_manifest_get(w->s, STORE_CACHE, n->digest, RS_LIMIT_MANIFEST_MAX_BYTES, buf, len, type, err);
}

/* As store_fs.c's evict_visit: every object of the image, documents after what they name. */
static enum rs_code evict_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                                enum imagewalk_step *step, struct rs_err *err)
{
	struct evict_walk *w = ctx;
	(void)err;
	if (ev == IMAGEWALK_REF && n->kind == IMAGEWALK_ENTRY)
		*step = IMAGEWALK_BEST_EFFORT;
	else if (ev == IMAGEWALK_REF)
		evict_owned(w, STORE_BLOB, n->digest);
	else if (ev == IMAGEWALK_LEAVE && n->kind != IMAGEWALK_ENTRY)
		evict_owned(w, STORE_MANIFEST, n->digest);
	return RS_OK;
}

/* As store_fs.c's fs_evicted (issue 12): an evicted object of an optimized
 * image (it has an owner document) takes its result document and the rest
 * of its image with it; the next pull of the tag optimizes again. The image
 * goes whole or not at all: when any of its objects is held (read or
 * pinned, here or, with holds, on another replica), nothing of it goes and
 * this returns false. Called before the object itself goes (the walk needs
 * the image's manifests); *w says what went besides it. */
static bool evict_whole(struct s3s *s, const char *digest, struct evict_walk *w)
{
	char key[S3S_KEY_MAX], rkey[STORE_LOCAL_KEY_MAX + 1] = "", top[DIGEST_STR_SIZE] = "";
	struct rs_err err = {0};
	char *owner = NULL, *doc = NULL;
	if (s3s_key(key, s, &err, "docs/optimized/objects/%s.json", digest_hex(digest)) != RS_OK ||
	    s3s_get_small(s, key, 1024, &owner, NULL, &err) != RS_OK)
		return true; /* not made by the optimizer: the usual case */
	const char *k = strstr(owner, "\"key\":\"");
	if (k)
		snprintf(rkey, sizeof(rkey), "%.*s", (int)strcspn(k + 7, "\""), k + 7);
	free(owner);
	if (!store_local_key_ok(rkey) || s3s_key(key, s, &err, "docs/optimized/%s.json", rkey) != RS_OK ||
	    s3s_get_small(s, key, RS_LIMIT_OPT_RESULT_MAX_BYTES, &doc, NULL, &err) != RS_OK)
		return true;
	const char *p = strstr(doc, "\"digest\":\"");
	if (p)
		snprintf(top, sizeof(top), "%.71s", p + 10);
	free(doc);
	const struct imagewalk walk = {.load = evict_load, .visit = evict_visit, .ctx = w};
	if (digest_valid(top)) {
		w->check = true;
		enum rs_code rc = imagewalk_run(&walk, top, &err);
		(void)rc; /* best effort: a part already gone holds nothing */
		w->check = false;
		if (w->held_seen)
			return false;
	}
	s3s_delete_quiet(s, key); /* the result: optimized again on its next pull */
	if (digest_valid(top)) {
		enum rs_code rc = imagewalk_run(&walk, top, &err);
		(void)rc; /* best effort: what is gone is gone */
	}
	return true;
}

struct evict_pass {
	struct s3s *s;
	const struct cachelru_holds *holds; /* the cluster's (evictor), or NULL */
	uint64_t total, max, freed;
	unsigned removed, kept_held;
	const char **gone; /* members removed, for cachelru_forget */
	char (*gone_m)[CACHELRU_MEMBER_SIZE];
	size_t ngone, capgone;
};

static void note_gone(struct evict_pass *p, enum store_kind kind, const char *hex)
{
	if (p->ngone == p->capgone) {
		size_t cap = p->capgone ? p->capgone * 2 : 64;
		char(*m)[CACHELRU_MEMBER_SIZE] = realloc(p->gone_m, cap * sizeof(*m));
		if (!m)
			return; /* it stays in the access set: harmless, it is not listed any more */
		p->gone_m = m;
		p->capgone = cap;
	}
	cachelru_member(p->gone_m[p->ngone++], kind, hex);
}

/* Remove candidates in their order until the area is under the limit. */
static void evict_ordered(struct evict_pass *p, struct cachelru_cand *v, size_t n)
{
	struct s3s *s = p->s;
	for (size_t i = 0; p->total > p->max && i < n; i++) {
		if (v[i].held || held(s, p->holds, v[i].kind, v[i].hex)) {
			p->kept_held++;
			continue; /* read or pinned now, here or on another replica */
		}
		if (p->holds && !cachelru_still_evictable(s->lru, v[i].kind, v[i].hex, v[i].used_ms)) {
			p->kept_held++;
			continue; /* a replica used or took it since the snapshot */
		}
		char d[DIGEST_STR_SIZE];
		snprintf(d, sizeof(d), "sha256:%s", v[i].hex);
		if (!s3s_has(s, STORE_CACHE, v[i].kind, d))
			continue; /* went with an optimized image evicted whole */
		struct evict_walk w = {.s = s, .holds = p->holds, .skip = d};
		if (!evict_whole(s, d, &w)) {
			p->kept_held++;
			continue; /* part of an optimized image another object of which is held */
		}
		s3s_remove(s, STORE_CACHE, v[i].kind, d);
		note_gone(p, v[i].kind, v[i].hex);
		uint64_t gone = v[i].size + w.freed;
		p->total -= gone < p->total ? gone : p->total;
		p->freed += gone;
		p->removed += 1 + w.removed;
	}
}

/* The evictor's pass (cluster.h up): the whole area listed, least recently used across the
 * cluster first, never what any replica holds. */
static enum rs_code evict_cluster(struct s3s *s, uint64_t *out_freed, struct rs_err *err)
{
	struct candidates cs = {0};
	struct cachelru_holds holds = {0};
	struct evict_pass p = {.s = s, .max = s->cfg->cache_max_bytes};
	cachelru_flush(s->lru); /* this replica's own uses count too */
	enum rs_code rc = list_candidates(s, &cs, err);
	if (rc == RS_OK) {
		cachelru_publish_size(s->lru, cs.total);
		p.total = cs.total;
	}
	if (rc == RS_OK && cs.total > p.max && (rc = cachelru_view(s->lru, cs.v, cs.n, &holds, err)) == RS_OK) {
		p.holds = &holds;
		cachelru_order(cs.v, cs.n);
		evict_ordered(&p, cs.v, cs.n);
		p.gone = p.ngone ? malloc(p.ngone * sizeof(*p.gone)) : NULL;
		for (size_t i = 0; p.gone && i < p.ngone; i++)
			p.gone[i] = p.gone_m[i];
		if (p.gone)
			cachelru_forget(s->lru, p.gone, p.ngone);
		log_event(LOG_INFO,
		          "cluster eviction (this replica is the evictor): the cache area held %llu bytes, limit %llu: "
		          "removed %u objects (%llu bytes), least recently used in the cluster first; %u kept as held "
		          "by a replica; %zu objects held now",
		          (unsigned long long)cs.total, (unsigned long long)p.max, p.removed, (unsigned long long)p.freed,
		          p.kept_held, holds.n);
		metrics_eviction("cluster", p.removed, p.freed);
	}
	if (rc == RS_OK)
		cachelru_publish_size(s->lru, p.total);
	metrics_eviction_pass("run");
	free(p.gone);
	free(p.gone_m);
	cachelru_holds_dispose(&holds);
	free(cs.v);
	if (out_freed)
		*out_freed = p.freed;
	return rc;
}

/* One replica alone (no cluster, or Redis down): objects this replica has not used first (in
 * key order), then its least recently used ones, never what it holds. */
static enum rs_code evict_replica(struct s3s *s, uint64_t *out_freed, struct rs_err *err)
{
	uint64_t max = s->cfg->cache_max_bytes;
	/* The maintenance pass calls this every minute: list the bucket only
	 * when this replica's count says the limit is passed, or every
	 * EVICT_LIST_S to see what other replicas wrote. */
	time_t now = time(NULL);
	pthread_mutex_lock(&s->mu);
	bool skip = s->size <= max && now - s->listed < EVICT_LIST_S;
	if (!skip)
		s->listed = now;
	pthread_mutex_unlock(&s->mu);
	if (skip)
		return RS_OK;
	struct candidates cs = {0};
	struct evict_pass p = {.s = s, .max = max};
	enum rs_code rc = list_candidates(s, &cs, err);
	if (rc == RS_OK) {
		p.total = cs.total;
		cachelru_order(cs.v, cs.n);
		evict_ordered(&p, cs.v, cs.n);
		if (p.removed)
			metrics_eviction("replica", p.removed, p.freed);
	}
	free(p.gone_m);
	free(cs.v);
	if (out_freed)
		*out_freed = p.freed;
	return rc;
}

static enum rs_code s3s_evict(void *impl, uint64_t *out_freed, struct rs_err *err)
{
	struct s3s *s = impl;
	if (out_freed)
		*out_freed = 0;
	if (!s->cfg->cache_max_bytes)
		return RS_OK;
	if (!s->lru)
		return evict_replica(s, out_freed, err);
	char holder[256];
	switch (cachelru_elect(s->lru, holder, sizeof(holder))) {
	case CACHELRU_EVICTOR:
		return evict_cluster(s, out_freed, err);
	case CACHELRU_FOLLOWER:
		log_event(LOG_DEBUG, "eviction: skipping this pass: replica %s is the cluster's evictor", holder);
		metrics_eviction_pass("skipped");
		return RS_OK;
	case CACHELRU_ALONE:
		break;
	}
	log_event(LOG_DEBUG, "eviction: Redis unreachable: evicting by this replica's own view");
	metrics_eviction_pass("degraded");
	return evict_replica(s, out_freed, err);
}

static bool s3s_pin(void *impl, enum store_area area, enum store_kind kind, const char *digest, time_t until)
{
	struct s3s *s = impl;
	if (area == STORE_CACHE) {
		pthread_mutex_lock(&s->mu);
		struct s3s_use *u = use_of(s, kind, digest_hex(digest), true);
		if (u) {
			u->used = time(NULL);
			u->used_ms = wall_ms();
			u->dirty = true;
			if (until > u->pinned)
				u->pinned = until;
		}
		pthread_mutex_unlock(&s->mu);
	}
	return s3s_has(s, area, kind, digest);
}

/* cachelru_collect_fn: what this replica used since the last call, and what it holds now. */
static void collect(void *ctx, struct cachelru_batch *b, uint64_t now_ms)
{
	struct s3s *s = ctx;
	time_t now = (time_t)(now_ms / 1000);
	pthread_mutex_lock(&s->mu);
	for (size_t i = 0; i < s->nuses; i++) {
		struct s3s_use *u = &s->uses[i];
		if (u->dirty)
			cachelru_batch_touch(b, u->kind, u->hex, u->used_ms);
		u->dirty = false;
		if (u->readers)
			cachelru_batch_hold(b, u->kind, u->hex, now_ms + CACHELRU_HOLD_MS);
		else if (u->pinned >= now)
			cachelru_batch_hold(b, u->kind, u->hex, (uint64_t)u->pinned * 1000 + 999);
	}
	pthread_mutex_unlock(&s->mu);
}

void s3s_lru_start(struct s3s *s, struct cluster *c)
{
	struct rs_err err = {0};
	if (s->lru || !c || cluster_mode(c, NULL, 0) == CLUSTER_LOCAL)
		return; /* no cluster section: this replica's own view, as a lone process */
	if (cachelru_new(&s->lru, c, collect, s, &err) != RS_OK)
		log_event(LOG_ERROR, "eviction: %s; this replica evicts by its own view", err.msg);
}

static enum rs_code s3s_check_writable(void *impl, struct rs_err *err)
{
	struct s3s *s = impl;
	char key[S3S_KEY_MAX];
	enum rs_code rc = s3s_key(key, s, err, "health/check");
	return rc ? rc : s3_put(s->c, key, "ok\n", 3, err);
}

const struct store_driver store_s3_driver = {
	.name = "s3",
	.free = s3s_free,
	.set_cluster = s3s_set_cluster,
	.has = s3s_has,
	.reader_open = s3s_reader_open,
	.reader_pread = s3s_reader_pread,
	.reader_close = s3s_reader_close,
	.remove = s3s_remove,
	.writer_new = s3s_writer_new,
	.writer_write = s3s_writer_write,
	.writer_size = s3s_writer_size,
	.writer_path = s3s_writer_path,
	.writer_commit = s3s_writer_commit,
	.writer_abort = s3s_writer_abort,
	.manifest_put = s3s_manifest_put,
	.manifest_get = s3s_manifest_get,
	.tag_get = s3s_tag_get,
	.tag_put = s3s_tag_put,
	.link = s3s_link,
	.linked = s3s_linked,
	.unlink = s3s_unlink,
	.link_image = s3s_link_image,
	.linked_by_image = s3s_linked_by_image,
	.export_layout = s3s_export_layout,
	.scratch_new = s3s_scratch_new,
	.scratch_remove = s3s_scratch_remove,
	.scrub_paths = s3s_scrub_paths,
	.doc_put = s3s_doc_put,
	.doc_get = s3s_doc_get,
	.upload_start = s3s_upload_start,
	.upload_open = s3s_upload_open,
	.upload_size = s3s_upload_size,
	.upload_write = s3s_upload_write,
	.upload_commit = s3s_upload_commit,
	.upload_save = s3s_upload_save,
	.upload_close = s3s_upload_close,
	.upload_cancel = s3s_upload_cancel,
	.upload_sweep = s3s_upload_sweep,
	.pushed_holds = s3s_pushed_holds,
	.pushed_set_fetcher = s3s_pushed_set_fetcher,
	.pushed_mount = s3s_pushed_mount,
	.pushed_put_manifest = s3s_pushed_put_manifest,
	.pushed_forget_manifest = s3s_pushed_forget_manifest,
	.pushed_tag_get = s3s_pushed_tag_get,
	.pushed_tags_list = s3s_pushed_tags_list,
	.pushed_referrers = s3s_pushed_referrers,
	.pushed_delete_manifest = s3s_pushed_delete_manifest,
	.pushed_delete_tag = s3s_pushed_delete_tag,
	.pushed_delete_blob = s3s_pushed_delete_blob,
	.pushed_gc = s3s_pushed_gc,
	.size = s3s_size,
	.evict = s3s_evict,
	.pin = s3s_pin,
	.check_writable = s3s_check_writable,
	.scrub_start = NULL, /* the object store keeps its own checksums; manifest reads re-verify */
};
