/* inflight: the single-flight table of blob downloads.
 *
 * A table (mutex + list of running downloads) keyed by digest. The first
 * join for a digest creates a store writer of the cache area (store.h: its
 * local staging file exists before join returns), opens one read-only
 * descriptor on that file for
 * all readers, and starts a detached worker thread that runs the caller's
 * download function. Readers pread() from the shared descriptor: the inode
 * outlives the fs driver's rename into blobs/ (and a later eviction), so readers never
 * have to reopen anything. A reader is only ever handed bytes below
 * written - 1 until the commit verified the blob; then all of it.
 *
 * When the download ends it leaves the table before its outcome is
 * published, so a join that comes later either finds the committed blob in
 * the store (and gets a fetch backed by it, with no download) or, after a
 * failure, starts a fresh download: a later good upstream heals a bad one.
 *
 * Lock order: table mutex, then a fetch's mutex. The worker is the only one
 * that touches the writer, so writes happen outside every lock.
 *
 * A relayed download (inflight_fetch_begin_relay: the bytes come from the
 * replica of the cluster that downloads the blob itself) drops its store
 * writer before the first byte and writes to a nameless scratch file
 * instead, hashing as it goes; it ends DONE only when the hash matches, and
 * commits nothing.
 *
 * What it does not do: HTTP, upstream or peer calls (the download function
 * does), ranges (readers give positions). Talks to the store (store.h) and
 * the digest stage (digest.h) only. */
#include "inflight.h"

#include "digest.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum fetch_state { FETCH_RUNNING, FETCH_DONE, FETCH_FAILED };

struct inflight {
	struct store *bs;
	pthread_mutex_t mu;
	pthread_cond_t idle;          /* signalled when workers drops to 0 */
	struct inflight_fetch *head;  /* downloads in the table */
	unsigned count;               /* entries in the table */
	unsigned workers;             /* worker threads alive */
};

struct inflight_fetch {
	struct inflight *t;
	struct inflight_fetch *next; /* in t's list while running; under t->mu */
	char digest[DIGEST_STR_SIZE];
	int rfd; /* readers' descriptor on the temp file, later the blob */

	/* Worker only. */
	struct store_writer *w;
	int wfd;                   /* relay mode: the scratch file the bytes go to (no store writer) */
	struct digest_ctx *relay_d; /* relay mode: the bytes' running hash, checked at the end */
	bool relay_checked;         /* inflight_fetch_relay_check ran */
	inflight_download_fn fn;
	void *arg;
	void (*arg_free)(void *);

	pthread_mutex_t mu; /* guards everything below */
	pthread_cond_t cv;  /* progress, begin and end; CLOCK_MONOTONIC */
	unsigned refs;
	enum fetch_state state;
	bool begun;
	int64_t expected_size; /* from join; -1 unknown */
	int64_t size;          /* announced by begin; -1 unknown */
	uint64_t written;
	struct rs_err err; /* why it failed */
};

/* ---- helpers ---------------------------------------------------------- */

static void deadline_after(struct timespec *ts, unsigned s)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += (time_t)s;
}

static struct inflight_fetch *fetch_alloc(struct inflight *t, const char *digest, int64_t expected_size)
{
	struct inflight_fetch *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	pthread_condattr_t ca;
	if (pthread_condattr_init(&ca) != 0) {
		free(f);
		return NULL;
	}
	bool ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&f->cv, &ca) == 0;
	pthread_condattr_destroy(&ca);
	if (!ok) {
		free(f);
		return NULL;
	}
	if (pthread_mutex_init(&f->mu, NULL) != 0) {
		pthread_cond_destroy(&f->cv);
		free(f);
		return NULL;
	}
	f->t = t;
	f->rfd = -1;
	f->wfd = -1;
	f->expected_size = expected_size;
	f->size = -1;
	memcpy(f->digest, digest, DIGEST_STR_SIZE);
	return f;
}

static void fetch_destroy(struct inflight_fetch *f)
{
	assert(!f->w);
	if (f->rfd >= 0)
		close(f->rfd);
	if (f->wfd >= 0)
		close(f->wfd);
	digest_free(f->relay_d);
	pthread_cond_destroy(&f->cv);
	pthread_mutex_destroy(&f->mu);
	free(f);
}

/* Under t->mu. */
static void table_remove(struct inflight *t, struct inflight_fetch *f)
{
	struct inflight_fetch **pp = &t->head;
	while (*pp && *pp != f)
		pp = &(*pp)->next;
	if (*pp) {
		*pp = f->next;
		f->next = NULL;
		t->count--;
	}
}

/* ---- table ------------------------------------------------------------ */

enum rs_code inflight_new(struct inflight **out, struct store *bs, struct rs_err *err)
{
	assert(out && bs);
	*out = NULL;
	struct inflight *t = calloc(1, sizeof(*t));
	if (!t)
		return rs_err_set(err, RS_NOMEM, "out of memory creating the download table");
	if (pthread_mutex_init(&t->mu, NULL) != 0) {
		free(t);
		return rs_err_set(err, RS_NOMEM, "cannot create the download table mutex");
	}
	if (pthread_cond_init(&t->idle, NULL) != 0) {
		pthread_mutex_destroy(&t->mu);
		free(t);
		return rs_err_set(err, RS_NOMEM, "cannot create the download table condition");
	}
	t->bs = bs;
	*out = t;
	return RS_OK;
}

void inflight_free(struct inflight *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->mu);
	while (t->workers > 0)
		pthread_cond_wait(&t->idle, &t->mu);
	pthread_mutex_unlock(&t->mu);
	assert(!t->head);
	pthread_cond_destroy(&t->idle);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

unsigned inflight_count(struct inflight *t)
{
	pthread_mutex_lock(&t->mu);
	unsigned n = t->count;
	pthread_mutex_unlock(&t->mu);
	return n;
}

/* ---- worker ----------------------------------------------------------- */

/* The end of a relayed download: the bytes must hash to the digest (and the
 * announced size was checked by the caller); nothing is committed, the
 * scratch file goes with the last descriptor. */
static enum rs_code relay_finish(struct inflight_fetch *f, enum rs_code rc, struct rs_err *e)
{
	if (rc != RS_OK || f->relay_checked)
		return rc; /* a check by the download function that failed made it return its error */
	return inflight_fetch_relay_check(f, e);
}

static void *worker_main(void *p)
{
	struct inflight_fetch *f = p;
	struct inflight *t = f->t;
	struct rs_err e;
	rs_err_clear(&e);

	enum rs_code rc = f->fn(f, f->arg, &e);
	if (rc == RS_OK) {
		pthread_mutex_lock(&f->mu);
		bool begun = f->begun;
		int64_t size = f->size;
		uint64_t written = f->written;
		pthread_mutex_unlock(&f->mu);
		if (!begun)
			rc = rs_err_set(&e, RS_UPSTREAM, "download of %s ended without an answer", f->digest);
		else if (size >= 0 && (uint64_t)size != written)
			rc = rs_err_set(&e, RS_DIGEST_MISMATCH, "expected %lld bytes, got %llu", (long long)size,
			                (unsigned long long)written);
	} else if (e.code == RS_OK || e.msg[0] == '\0') {
		/* A download function that failed without saying why. */
		rs_err_set(&e, rc, "download of %s failed (%s)", f->digest, rs_code_name(rc));
	}
	if (f->relay_d)
		rc = relay_finish(f, rc, &e);
	else if (rc == RS_OK)
		rc = store_writer_commit(f->w, &e); /* frees the writer */
	else
		store_writer_abort(f->w);
	f->w = NULL;
	if (f->arg_free)
		f->arg_free(f->arg);
	f->arg = NULL;

	/* Leave the table first: from now on a join finds the blob in the
	 * store or starts afresh, never this finished fetch. */
	pthread_mutex_lock(&t->mu);
	table_remove(t, f);
	pthread_mutex_unlock(&t->mu);

	pthread_mutex_lock(&f->mu);
	if (rc == RS_OK) {
		f->state = FETCH_DONE;
	} else {
		f->state = FETCH_FAILED;
		f->err = e;
		if (f->err.code == RS_OK)
			f->err.code = rc;
	}
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	inflight_release(f);

	/* Last touch of t: inflight_free() may free it as soon as we unlock. */
	pthread_mutex_lock(&t->mu);
	t->workers--;
	pthread_cond_broadcast(&t->idle);
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

/* A fetch for a blob already in the store: done, no worker. */
static enum rs_code fetch_from_store(struct inflight *t, const char *digest, int fd, uint64_t size,
                                     struct inflight_fetch **out, struct rs_err *err)
{
	struct inflight_fetch *f = fetch_alloc(t, digest, (int64_t)size);
	if (!f) {
		close(fd);
		return rs_err_set(err, RS_NOMEM, "out of memory joining %s", digest);
	}
	f->rfd = fd;
	f->refs = 1;
	f->state = FETCH_DONE;
	f->begun = true;
	f->size = (int64_t)size;
	f->written = size;
	*out = f;
	return RS_OK;
}

/* Under t->mu: the running download of digest with one more reference, or NULL. */
static struct inflight_fetch *table_join_running(struct inflight *t, const char *digest)
{
	struct inflight_fetch *f;
	for (f = t->head; f; f = f->next)
		if (strcmp(f->digest, digest) == 0)
			break;
	if (f) {
		pthread_mutex_lock(&f->mu);
		f->refs++;
		pthread_mutex_unlock(&f->mu);
	}
	return f;
}

/* f, made by a join that found another download in the table when it came
 * back to insert it: never started, its writer and descriptor go. */
static void fetch_discard(struct inflight_fetch *f)
{
	f->arg = NULL;
	store_writer_abort(f->w);
	f->w = NULL;
	fetch_destroy(f);
}

/* Start f's worker and put f in the table; under t->mu. */
static enum rs_code table_start(struct inflight *t, struct inflight_fetch *f, struct rs_err *err)
{
	pthread_attr_t attr;
	pthread_t tid;
	f->refs = 2; /* the caller and the worker */
	if (pthread_attr_init(&attr) != 0)
		return rs_err_set(err, RS_NOMEM, "cannot start the download of %s", f->digest);
	(void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED); /* valid constant */
	int e = pthread_create(&tid, &attr, worker_main, f);
	pthread_attr_destroy(&attr);
	if (e != 0)
		return rs_err_set(err, RS_NOMEM, "cannot start the download of %s: %s", f->digest, strerror(e));
	/* The worker may already be running; it needs t->mu to leave the table,
	 * so it waits for us here. */
	f->next = t->head;
	t->head = f;
	t->count++;
	t->workers++;
	return RS_OK;
}

/* The table lock is never held across a store call: on an object store the
 * look for a committed blob and a new writer are network round trips (several,
 * with retries, while it does not answer), and the joins of every other blob
 * must not wait for them. So the table is looked at twice: before the store
 * (a running download is joined) and when the new download goes in (one that
 * another join started meanwhile is joined, and ours discarded). */
enum rs_code inflight_join(struct inflight *t, const char *digest, int64_t expected_size, inflight_download_fn fn,
                           void *arg, void (*arg_free)(void *), struct inflight_fetch **out, struct rs_err *err)
{
	assert(t && fn && out);
	*out = NULL;
	struct inflight_fetch *f = NULL;
	enum rs_code rc = digest_parse(digest, err);
	if (rc != RS_OK)
		goto out;

	pthread_mutex_lock(&t->mu);
	f = table_join_running(t, digest);
	pthread_mutex_unlock(&t->mu);
	if (f) {
		*out = f;
		goto out; /* arg is not needed: the running download has its own */
	}

	/* Not running: it may have just been committed. A download commits
	 * before it leaves the table, so the store, asked after the table
	 * showed none, holds it by now. A store that cannot answer (unreachable)
	 * fails the join: downloading would end in the same error at the commit. */
	int sfd = -1;
	uint64_t ssize = 0;
	struct rs_err serr = {0};
	enum rs_code src = store_open_fd(t->bs, STORE_CACHE, STORE_BLOB, digest, &sfd, &ssize, &serr);
	if (src == RS_OK) {
		rc = fetch_from_store(t, digest, sfd, ssize, out, err);
		goto out;
	}
	if (src == RS_UNAVAILABLE || src == RS_TIMEOUT) {
		rc = rs_err_set(err, src, "%s", serr.msg);
		goto out;
	}

	f = fetch_alloc(t, digest, expected_size);
	if (!f) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory joining %s", digest);
		goto out;
	}
	rc = store_writer_new(&f->w, t->bs, STORE_CACHE, STORE_BLOB, digest, expected_size, err);
	if (rc == RS_OK) {
		f->rfd = open(store_writer_path(f->w), O_RDONLY | O_CLOEXEC);
		if (f->rfd < 0)
			rc = rs_err_set(err, RS_IO, "open %s: %s", store_writer_path(f->w), strerror(errno));
	}
	if (rc != RS_OK) {
		fetch_discard(f);
		goto out;
	}
	f->fn = fn;
	f->arg = arg;
	f->arg_free = arg_free;
	pthread_mutex_lock(&t->mu);
	struct inflight_fetch *other = table_join_running(t, digest);
	if (!other)
		rc = table_start(t, f, err);
	pthread_mutex_unlock(&t->mu);
	if (other || rc != RS_OK) {
		fetch_discard(f);
		*out = other;
		goto out;
	}
	*out = f;
	return RS_OK;
out:
	/* The table owns arg from the call on: nobody else will use it. */
	if (arg_free)
		arg_free(arg);
	return rc;
}

/* ---- worker side ------------------------------------------------------ */

enum rs_code inflight_fetch_begin(struct inflight_fetch *f, int64_t size, struct rs_err *err)
{
	pthread_mutex_lock(&f->mu);
	assert(!f->begun && f->state == FETCH_RUNNING);
	enum rs_code rc = RS_OK;
	if (size >= 0 && f->expected_size >= 0 && size != f->expected_size) {
		/* Refused before it begins, so waiting readers get the reason from
		 * inflight_wait_begin() rather than a short body. */
		rc = rs_err_set(err, RS_DIGEST_MISMATCH, "expected %lld bytes, upstream announced %lld",
		                (long long)f->expected_size, (long long)size);
	} else {
		f->begun = true;
		f->size = size >= 0 ? size : f->expected_size;
		pthread_cond_broadcast(&f->cv);
	}
	pthread_mutex_unlock(&f->mu);
	return rc;
}

enum rs_code inflight_fetch_begin_relay(struct inflight_fetch *f, int64_t size, struct rs_err *err)
{
	assert(f->w && !f->relay_d);
	char dir[4096];
	char path[4160];
	enum rs_code rc = store_scratch_new(f->t->bs, "relay", dir, sizeof(dir), err);
	if (rc != RS_OK)
		return rc;
	snprintf(path, sizeof(path), "%s/blob", dir);
	int wfd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int rfd = wfd >= 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	int e = errno;
	store_scratch_remove(f->t->bs, dir); /* nameless from here: gone with the last descriptor */
	struct digest_ctx *d = rfd >= 0 ? digest_new() : NULL;
	if (!d) {
		if (wfd >= 0)
			close(wfd);
		if (rfd >= 0)
			close(rfd);
		return rfd < 0 ? rs_err_set(err, RS_IO, "relay file %s: %s", path, strerror(e))
		               : rs_err_set(err, RS_NOMEM, "out of memory relaying %s", f->digest);
	}
	store_writer_abort(f->w); /* nothing of it went anywhere: no byte was written */
	f->w = NULL;
	f->wfd = wfd;
	f->relay_d = d;
	/* Readers touch rfd only once bytes were written, after this. */
	pthread_mutex_lock(&f->mu);
	close(f->rfd);
	f->rfd = rfd;
	pthread_mutex_unlock(&f->mu);
	return inflight_fetch_begin(f, size, err);
}

enum rs_code inflight_fetch_relay_check(struct inflight_fetch *f, struct rs_err *err)
{
	assert(f->relay_d && !f->relay_checked);
	f->relay_checked = true;
	char got[DIGEST_STR_SIZE];
	digest_final(f->relay_d, got);
	if (strcmp(got, f->digest) != 0)
		return rs_err_set(err, RS_DIGEST_MISMATCH, "relayed bytes of %s hash to %s", f->digest, got);
	return RS_OK;
}

/* Relay mode: append to the scratch file and the running hash. */
static enum rs_code relay_write(struct inflight_fetch *f, const uint8_t *buf, size_t len, struct rs_err *err)
{
	digest_update(f->relay_d, buf, len);
	while (len > 0) {
		ssize_t n = write(f->wfd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return rs_err_set(err, RS_IO, "writing the relay file of %s: %s", f->digest,
			                  n < 0 ? strerror(errno) : "no progress");
		buf += n;
		len -= (size_t)n;
	}
	return RS_OK;
}

enum rs_code inflight_fetch_write(struct inflight_fetch *f, const void *buf, size_t len, struct rs_err *err)
{
	/* begun, size and the mode only change in this thread, before any write. */
	assert(f->begun && (f->w || f->relay_d));
	if (len == 0)
		return RS_OK;
	uint64_t have = f->relay_d ? f->written : store_writer_size(f->w);
	if (f->size >= 0 && (uint64_t)f->size - have < len)
		return rs_err_set(err, RS_DIGEST_MISMATCH, "expected %lld bytes, got %llu", (long long)f->size,
		                  (unsigned long long)(have + len));
	enum rs_code rc = f->relay_d ? relay_write(f, buf, len, err) : store_writer_write(f->w, buf, len, err);
	if (rc != RS_OK)
		return rc;
	pthread_mutex_lock(&f->mu);
	f->written += len;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	return RS_OK;
}

/* ---- reader side ------------------------------------------------------ */

enum rs_code inflight_peek(struct inflight *t, const char *digest, struct inflight_fetch **out)
{
	*out = NULL;
	pthread_mutex_lock(&t->mu);
	struct inflight_fetch *f = t->head;
	while (f && strcmp(f->digest, digest) != 0)
		f = f->next;
	if (f) {
		pthread_mutex_lock(&f->mu);
		f->refs++;
		pthread_mutex_unlock(&f->mu);
	}
	pthread_mutex_unlock(&t->mu);
	*out = f;
	return f ? RS_OK : RS_NOT_FOUND;
}

enum rs_code inflight_wait_begin(struct inflight_fetch *f, unsigned timeout_s, int64_t *out_size,
                                 struct rs_err *err)
{
	struct timespec deadline;
	deadline_after(&deadline, timeout_s);
	enum rs_code rc = RS_OK;
	pthread_mutex_lock(&f->mu);
	while (!f->begun && f->state == FETCH_RUNNING) {
		int e = pthread_cond_timedwait(&f->cv, &f->mu, &deadline);
		if (e == ETIMEDOUT && !f->begun && f->state == FETCH_RUNNING) {
			rc = rs_err_set(err, RS_TIMEOUT, "upstream did not answer for %s within %u s", f->digest,
			                timeout_s);
			break;
		}
	}
	if (rc == RS_OK) {
		if (f->begun) {
			*out_size = f->size;
		} else {
			if (err)
				*err = f->err;
			rc = f->err.code;
		}
	}
	pthread_mutex_unlock(&f->mu);
	return rc;
}

ssize_t inflight_read(struct inflight_fetch *f, uint64_t pos, void *buf, size_t len, unsigned stall_s,
                      struct rs_err *err)
{
	assert(len > 0);
	struct timespec deadline;
	deadline_after(&deadline, stall_s);
	pthread_mutex_lock(&f->mu);
	uint64_t seen = f->written;
	uint64_t limit;
	for (;;) {
		if (f->state == FETCH_FAILED) {
			if (err)
				*err = f->err;
			pthread_mutex_unlock(&f->mu);
			return -1;
		}
		/* Hold the last byte back until the commit verified the blob, so
		 * a blob that fails verification always reaches a client short. */
		if (f->state == FETCH_DONE)
			limit = f->written;
		else
			limit = f->written > 0 ? f->written - 1 : 0;
		if (pos < limit || f->state == FETCH_DONE)
			break;
		int e = pthread_cond_timedwait(&f->cv, &f->mu, &deadline);
		if (f->written != seen) {
			seen = f->written;
			deadline_after(&deadline, stall_s);
		} else if (e == ETIMEDOUT && f->state == FETCH_RUNNING) {
			rs_err_set(err, RS_TIMEOUT, "download of %s stalled: no data for %u s at byte %llu", f->digest,
			           stall_s, (unsigned long long)f->written);
			pthread_mutex_unlock(&f->mu);
			return -1;
		}
	}
	pthread_mutex_unlock(&f->mu);
	if (pos >= limit)
		return 0; /* the verified end */
	size_t want = limit - pos < len ? (size_t)(limit - pos) : len;
	for (;;) {
		ssize_t n = pread(f->rfd, buf, want, (off_t)pos);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rs_err_set(err, RS_IO, "reading %s at byte %llu: %s", f->digest, (unsigned long long)pos,
			           strerror(errno));
			return -1;
		}
		if (n == 0) {
			rs_err_set(err, RS_IO, "reading %s at byte %llu: file is shorter than the %llu bytes written",
			           f->digest, (unsigned long long)pos, (unsigned long long)limit);
			return -1;
		}
		return n;
	}
}

enum rs_code inflight_wait_verified(struct inflight_fetch *f, unsigned stall_s, struct rs_err *err)
{
	struct timespec deadline;
	deadline_after(&deadline, stall_s);
	enum rs_code rc = RS_OK;
	pthread_mutex_lock(&f->mu);
	uint64_t seen = f->written;
	while (f->state == FETCH_RUNNING) {
		int e = pthread_cond_timedwait(&f->cv, &f->mu, &deadline);
		if (f->written != seen) {
			seen = f->written;
			deadline_after(&deadline, stall_s);
		} else if (e == ETIMEDOUT && f->state == FETCH_RUNNING) {
			rc = rs_err_set(err, RS_TIMEOUT, "download of %s stalled: no data for %u s at byte %llu", f->digest,
			                stall_s, (unsigned long long)f->written);
			break;
		}
	}
	if (f->state == FETCH_FAILED) {
		if (err)
			*err = f->err;
		rc = f->err.code ? f->err.code : RS_UPSTREAM;
	}
	pthread_mutex_unlock(&f->mu);
	return rc;
}

enum rs_code inflight_wait_end(struct inflight_fetch *f, unsigned max_ms, bool *out_ended, uint64_t *out_written,
                               struct rs_err *err)
{
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += (time_t)(max_ms / 1000);
	deadline.tv_nsec += (long)(max_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	enum rs_code rc = RS_OK;
	pthread_mutex_lock(&f->mu);
	while (f->state == FETCH_RUNNING && pthread_cond_timedwait(&f->cv, &f->mu, &deadline) != ETIMEDOUT)
		;
	*out_ended = f->state == FETCH_DONE;
	*out_written = f->written;
	if (f->state == FETCH_FAILED) {
		if (err)
			*err = f->err;
		rc = f->err.code ? f->err.code : RS_UPSTREAM;
	}
	pthread_mutex_unlock(&f->mu);
	return rc;
}

void inflight_release(struct inflight_fetch *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->mu);
	assert(f->refs > 0);
	bool last = --f->refs == 0;
	pthread_mutex_unlock(&f->mu);
	if (last)
		fetch_destroy(f);
}
