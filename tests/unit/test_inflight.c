/* test_inflight: single-flight downloads over a real store (store.h) in a private
 * temp directory. The download function is a small in-process fake of the
 * upstream: it streams seeded bytes in random chunks, optionally corrupted,
 * failing, or held at a gate so the test decides when it moves on. */
#include "inflight.h"

#include "fixture.h"
#include "store_fixture.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- the fake upstream ------------------------------------------------ */

/* A gate the test opens; waits are bounded so a broken test cannot hang. */
struct gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int value;
};

static void gate_init(struct gate *g)
{
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
	g->value = 0;
}

static void gate_dispose(struct gate *g)
{
	pthread_cond_destroy(&g->cv);
	pthread_mutex_destroy(&g->mu);
}

static void gate_add(struct gate *g, int n)
{
	pthread_mutex_lock(&g->mu);
	g->value += n;
	pthread_cond_broadcast(&g->cv);
	pthread_mutex_unlock(&g->mu);
}

/* Wait until value >= want, at most 20 s; false on timeout. */
static bool gate_wait(struct gate *g, int want)
{
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 20;
	bool ok = true;
	pthread_mutex_lock(&g->mu);
	while (g->value < want)
		if (pthread_cond_timedwait(&g->cv, &g->mu, &dl) == ETIMEDOUT) {
			ok = g->value >= want;
			break;
		}
	pthread_mutex_unlock(&g->mu);
	return ok;
}

struct upstream_fake {
	const unsigned char *body;
	size_t len;
	int64_t announce;        /* size passed to begin */
	size_t corrupt_at;       /* flip this byte when corrupt */
	bool corrupt;
	bool relay;              /* begin with inflight_fetch_begin_relay (peer streaming) */
	bool relay_check;        /* ... and check the hash itself at the end (else the worker does) */
	enum rs_code fail_before_begin; /* RS_OK: do not */
	struct gate *start;      /* wait for start_want before begin (NULL: no) */
	int start_want;
	struct gate *stall;      /* after stall_after bytes, wait for stall_want */
	size_t stall_after;
	int stall_want;
	uint64_t seed;
	atomic_int calls;
	atomic_int frees;
};

struct fake_arg {
	struct upstream_fake *up;
};

static struct fake_arg *fake_arg_new(struct upstream_fake *up)
{
	struct fake_arg *a = malloc(sizeof(*a));
	ck_assert_ptr_nonnull(a);
	a->up = up;
	return a;
}

static void fake_arg_free(void *p)
{
	struct fake_arg *a = p;
	atomic_fetch_add(&a->up->frees, 1);
	free(a);
}

static enum rs_code fake_download(struct inflight_fetch *f, void *p, struct rs_err *err)
{
	struct upstream_fake *up = ((struct fake_arg *)p)->up;
	atomic_fetch_add(&up->calls, 1);
	if (up->start && !gate_wait(up->start, up->start_want))
		return rs_err_set(err, RS_UPSTREAM, "test gate never opened");
	if (up->fail_before_begin != RS_OK)
		return rs_err_set(err, up->fail_before_begin, "upstream said no (fake)");
	enum rs_code rc = up->relay ? inflight_fetch_begin_relay(f, up->announce, err)
	                            : inflight_fetch_begin(f, up->announce, err);
	if (rc != RS_OK)
		return rc;
	uint64_t s = up->seed + 11;
	unsigned char chunk[70000];
	size_t pos = 0;
	bool stalled = false;
	while (pos < up->len) {
		size_t n = 1 + (size_t)(fixture_rng_next(&s) % sizeof(chunk));
		if (n > up->len - pos)
			n = up->len - pos;
		if (up->stall && !stalled && pos < up->stall_after && pos + n > up->stall_after)
			n = up->stall_after - pos;
		if (up->stall && !stalled && pos == up->stall_after) {
			stalled = true;
			if (!gate_wait(up->stall, up->stall_want))
				return rs_err_set(err, RS_UPSTREAM, "test stall gate never opened");
			continue;
		}
		memcpy(chunk, up->body + pos, n);
		if (up->corrupt && up->corrupt_at >= pos && up->corrupt_at < pos + n)
			chunk[up->corrupt_at - pos] ^= 0x5a;
		rc = inflight_fetch_write(f, chunk, n, err);
		if (rc != RS_OK)
			return rc;
		pos += n;
	}
	return up->relay_check ? inflight_fetch_relay_check(f, err) : RS_OK;
}

static void fake_init(struct upstream_fake *up, const unsigned char *body, size_t len, uint64_t seed)
{
	memset(up, 0, sizeof(*up));
	up->body = body;
	up->len = len;
	up->announce = (int64_t)len;
	up->seed = seed;
	atomic_init(&up->calls, 0);
	atomic_init(&up->frees, 0);
}

/* ---- readers ---------------------------------------------------------- */

struct reader {
	struct inflight *t;
	const char *digest;
	int64_t expected_size;
	struct upstream_fake *up;
	struct gate *joined; /* incremented once joined */
	uint64_t seed;
	unsigned char *got;
	size_t cap;
	/* results */
	enum rs_code join_rc, begin_rc;
	int64_t size;
	size_t total;
	ssize_t last;
	struct rs_err err;
};

static void *reader_main(void *p)
{
	struct reader *r = p;
	struct inflight_fetch *f = NULL;
	r->join_rc = inflight_join(r->t, r->digest, r->expected_size, fake_download, fake_arg_new(r->up),
	                           fake_arg_free, &f, &r->err);
	if (r->joined)
		gate_add(r->joined, 1);
	if (r->join_rc != RS_OK)
		return NULL;
	r->begin_rc = inflight_wait_begin(f, 20, &r->size, &r->err);
	if (r->begin_rc == RS_OK) {
		uint64_t s = r->seed;
		for (;;) {
			size_t want = 1 + (size_t)(fixture_rng_next(&s) % 40000);
			unsigned char tmp[40000];
			ssize_t n = inflight_read(f, r->total, tmp, want, 20, &r->err);
			r->last = n;
			if (n <= 0)
				break;
			if (r->total + (size_t)n > r->cap) {
				r->last = -2; /* more bytes than the blob has */
				break;
			}
			memcpy(r->got + r->total, tmp, (size_t)n);
			r->total += (size_t)n;
		}
	}
	inflight_release(f);
	return NULL;
}

static struct inflight *table_new(struct store *bs)
{
	struct inflight *t = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(inflight_new(&t, bs, &err), RS_OK);
	return t;
}

enum { NREADERS = 8 };

/* Run NREADERS concurrent readers; the download only begins once all joined. */
static void run_readers(struct inflight *t, const char *digest, int64_t expected, struct upstream_fake *up,
                        size_t cap, struct reader r[NREADERS])
{
	struct gate joined;
	gate_init(&joined);
	up->start = &joined;
	up->start_want = NREADERS;
	pthread_t th[NREADERS];
	for (int i = 0; i < NREADERS; i++) {
		r[i] = (struct reader){.t = t, .digest = digest, .expected_size = expected, .up = up,
		                       .joined = &joined, .seed = 1000 + (uint64_t)i, .cap = cap};
		r[i].got = malloc(cap ? cap : 1);
		ck_assert_ptr_nonnull(r[i].got);
		ck_assert_int_eq(pthread_create(&th[i], NULL, reader_main, &r[i]), 0);
	}
	for (int i = 0; i < NREADERS; i++)
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
	up->start = NULL;
	gate_dispose(&joined);
}

static void free_readers(struct reader r[NREADERS])
{
	for (int i = 0; i < NREADERS; i++)
		free(r[i].got);
}

/* ---- tests ------------------------------------------------------------ */

START_TEST(one_download_for_concurrent_joiners)
{
	struct store *bs = store_fixture_store(0);
	struct inflight *t = table_new(bs);
	size_t len = 777777;
	unsigned char *body = fixture_bytes(1, len);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	struct upstream_fake up;
	fake_init(&up, body, len, 1);
	struct reader r[NREADERS];
	run_readers(t, dg, (int64_t)len, &up, len, r);
	for (int i = 0; i < NREADERS; i++) {
		ck_assert_msg(r[i].join_rc == RS_OK && r[i].begin_rc == RS_OK, "reader %d: %s", i, r[i].err.msg);
		ck_assert_int_eq(r[i].size, (int64_t)len);
		ck_assert_msg(r[i].last == 0, "reader %d ended with %zd: %s", i, r[i].last, r[i].err.msg);
		ck_assert_uint_eq(r[i].total, len);
		ck_assert(memcmp(r[i].got, body, len) == 0);
	}
	ck_assert_int_eq(atomic_load(&up.calls), 1);
	inflight_free(t);
	/* Every arg was released: the one the download used and the others at once. */
	ck_assert_int_eq(atomic_load(&up.frees), NREADERS);
	ck_assert(store_has(bs, STORE_CACHE, STORE_BLOB, dg));
	ck_assert_uint_eq(store_size(bs), len);
	ck_assert_int_eq(store_fixture_count_files("tmp"), 0);
	free_readers(r);
	free(body);
	store_free(bs);
}
END_TEST

START_TEST(unknown_size_download_works)
{
	struct store *bs = store_fixture_store(0);
	struct inflight *t = table_new(bs);
	size_t len = 100000;
	unsigned char *body = fixture_bytes(2, len);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	struct upstream_fake up;
	fake_init(&up, body, len, 2);
	up.announce = -1;
	struct reader r[NREADERS];
	run_readers(t, dg, -1, &up, len, r);
	for (int i = 0; i < NREADERS; i++) {
		ck_assert_int_eq(r[i].begin_rc, RS_OK);
		ck_assert_int_eq(r[i].size, -1);
		ck_assert_msg(r[i].last == 0, "reader %d: %s", i, r[i].err.msg);
		ck_assert_uint_eq(r[i].total, len);
		ck_assert(memcmp(r[i].got, body, len) == 0);
	}
	ck_assert_int_eq(atomic_load(&up.calls), 1);
	inflight_free(t);
	free_readers(r);
	free(body);
	store_free(bs);
}
END_TEST

START_TEST(mismatch_fails_every_reader_short)
{
	struct store *bs = store_fixture_store(0);
	struct inflight *t = table_new(bs);
	size_t len = 500000;
	unsigned char *body = fixture_bytes(3, len);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	/* Corrupt the last byte: the hardest case, everything else is right. */
	for (int pass = 0; pass < 2; pass++) {
		struct upstream_fake up;
		fake_init(&up, body, len, 3 + (uint64_t)pass);
		up.corrupt = true;
		up.corrupt_at = pass == 0 ? len - 1 : len / 2;
		struct reader r[NREADERS];
		run_readers(t, dg, (int64_t)len, &up, len, r);
		for (int i = 0; i < NREADERS; i++) {
			ck_assert_int_eq(r[i].begin_rc, RS_OK);
			ck_assert_msg(r[i].last == -1, "reader %d ended with %zd", i, r[i].last);
			ck_assert_int_eq(r[i].err.code, RS_DIGEST_MISMATCH);
			ck_assert_msg(strncmp(r[i].err.msg, "digest mismatch: expected ", 26) == 0, "%s", r[i].err.msg);
			ck_assert_uint_le(r[i].total, len - 1);
		}
		ck_assert_int_eq(atomic_load(&up.calls), 1);
		ck_assert(!store_has(bs, STORE_CACHE, STORE_BLOB, dg));
		ck_assert_int_eq(store_fixture_count_files("blobs"), 0);
		ck_assert_uint_eq(inflight_count(t), 0);
		free_readers(r);
	}
	inflight_free(t);
	ck_assert_int_eq(store_fixture_count_files("tmp"), 0);
	free(body);
	store_free(bs);
}
END_TEST

START_TEST(truncated_download_fails_readers)
{
	struct store *bs = store_fixture_store(0);
	struct inflight *t = table_new(bs);
	size_t len = 200000;
	unsigned char *body = fixture_bytes(4, len);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	/* The upstream announces the full size but ends early. */
	struct upstream_fake up;
	fake_init(&up, body, len - 10, 4);
	up.announce = (int64_t)len;
	struct reader r[NREADERS];
	run_readers(t, dg, -1, &up, len, r);
	for (int i = 0; i < NREADERS; i++) {
		ck_assert_int_eq(r[i].last, -1);
		ck_assert_str_eq(r[i].err.msg, "expected 200000 bytes, got 199990");
		ck_assert_uint_le(r[i].total, len - 11);
	}
	free_readers(r);
	/* An announced size that contradicts the descriptor fails before begin. */
	fake_init(&up, body, len, 5);
	up.announce = (int64_t)len + 1;
	run_readers(t, dg, (int64_t)len, &up, len, r);
	for (int i = 0; i < NREADERS; i++) {
		ck_assert_int_eq(r[i].begin_rc, RS_DIGEST_MISMATCH);
		ck_assert_str_eq(r[i].err.msg, "expected 200000 bytes, upstream announced 200001");
	}
	free_readers(r);
	inflight_free(t);
	ck_assert_int_eq(store_fixture_count_files("blobs"), 0);
	ck_assert_int_eq(store_fixture_count_files("tmp"), 0);
	free(body);
	store_free(bs);
}
END_TEST

START_TEST(later_join_after_failure_downloads_again)
{
	struct store *bs = store_fixture_store(0);
	struct inflight *t = table_new(bs);
	size_t len = 300000;
	unsigned char *body = fixture_bytes(6, len);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	struct upstream_fake bad, good;
	fake_init(&bad, body, len, 6);
	bad.corrupt = true;
	bad.corrupt_at = 12345;
	fake_init(&good, body, len, 7);
	struct reader r[NREADERS];
	run_readers(t, dg, (int64_t)len, &bad, len, r);
	for (int i = 0; i < NREADERS; i++)
		ck_assert_int_eq(r[i].last, -1);
	free_readers(r);
	run_readers(t, dg, (int64_t)len, &good, len, r);
	for (int i = 0; i < NREADERS; i++) {
		ck_assert_msg(r[i].last == 0, "reader %d: %s", i, r[i].err.msg);
		ck_assert_uint_eq(r[i].total, len);
		ck_assert(memcmp(r[i].got, body, len) == 0);
	}
	free_readers(r);
	ck_assert_int_eq(atomic_load(&bad.calls), 1);
	ck_assert_int_eq(atomic_load(&good.calls), 1);
	ck_assert(store_has(bs, STORE_CACHE, STORE_BLOB, dg));

	/* Once committed, a join is served from the store without a download. */
	struct upstream_fake third;
	fake_init(&third, body, len, 8);
	struct rs_err err = {0};
	struct inflight_fetch *f = NULL;
	ck_assert_int_eq(inflight_join(t, dg, (int64_t)len, fake_download, fake_arg_new(&third), fake_arg_free, &f,
	                               &err),
	                 RS_OK);
	ck_assert_int_eq(atomic_load(&third.frees), 1);
	int64_t size = 0;
	ck_assert_int_eq(inflight_wait_begin(f, 5, &size, &err), RS_OK);
	ck_assert_int_eq(size, (int64_t)len);
	unsigned char *got = malloc(len);
	uint64_t pos = 0;
	ssize_t n;
	while ((n = inflight_read(f, pos, got + pos, len - pos > 65536 ? 65536 : len - pos + 1, 5, &err)) > 0)
		pos += (uint64_t)n;
	ck_assert_int_eq(n, 0);
	ck_assert_uint_eq(pos, len);
	ck_assert(memcmp(got, body, len) == 0);
	inflight_release(f);
	ck_assert_int_eq(atomic_load(&third.calls), 0);
	free(got);
	inflight_free(t);
	free(body);
	store_free(bs);
}
END_TEST

START_TEST(wait_begin_reports_upstream_error)
{
	struct store *bs = store_fixture_store(0);
	struct inflight *t = table_new(bs);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, "missing", 7);
	struct upstream_fake up;
	fake_init(&up, (const unsigned char *)"", 0, 9);
	up.fail_before_begin = RS_NOT_FOUND;
	struct reader r[NREADERS];
	run_readers(t, dg, -1, &up, 1, r);
	for (int i = 0; i < NREADERS; i++) {
		ck_assert_int_eq(r[i].join_rc, RS_OK);
		ck_assert_int_eq(r[i].begin_rc, RS_NOT_FOUND);
		ck_assert_str_eq(r[i].err.msg, "upstream said no (fake)");
	}
	free_readers(r);
	ck_assert_int_eq(atomic_load(&up.calls), 1);
	/* A reader that reads anyway gets the same error. */
	up.fail_before_begin = RS_UPSTREAM;
	struct rs_err err = {0};
	struct inflight_fetch *f = NULL;
	ck_assert_int_eq(inflight_join(t, dg, -1, fake_download, fake_arg_new(&up), fake_arg_free, &f, &err), RS_OK);
	unsigned char b[16];
	ck_assert_int_eq(inflight_read(f, 0, b, sizeof(b), 20, &err), -1);
	ck_assert_int_eq(err.code, RS_UPSTREAM);
	inflight_release(f);
	/* An invalid digest is refused, and the table still frees arg. */
	int frees = atomic_load(&up.frees);
	ck_assert_int_eq(inflight_join(t, "sha256:nope", -1, fake_download, fake_arg_new(&up), fake_arg_free, &f, &err),
	                 RS_DIGEST_INVALID);
	ck_assert_ptr_null(f);
	ck_assert_int_eq(atomic_load(&up.frees), frees + 1);
	inflight_free(t);
	ck_assert_int_eq(store_fixture_count_files("tmp"), 0);
	store_free(bs);
}
END_TEST

START_TEST(stalled_download_times_out_readers)
{
	struct store *bs = store_fixture_store(0);
	struct inflight *t = table_new(bs);
	size_t len = 100000;
	unsigned char *body = fixture_bytes(10, len);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	struct gate stall, start;
	gate_init(&stall);
	gate_init(&start);
	struct upstream_fake up;
	fake_init(&up, body, len, 10);
	up.start = &start;
	up.start_want = 1;
	up.stall = &stall;
	up.stall_after = 5000;
	up.stall_want = 1;
	struct rs_err err = {0};
	struct inflight_fetch *f = NULL;
	ck_assert_int_eq(inflight_join(t, dg, (int64_t)len, fake_download, fake_arg_new(&up), fake_arg_free, &f, &err),
	                 RS_OK);
	ck_assert_uint_eq(inflight_count(t), 1);
	/* No answer yet: wait_begin gives up after its bound. */
	int64_t size = 0;
	ck_assert_int_eq(inflight_wait_begin(f, 1, &size, &err), RS_TIMEOUT);
	ck_assert_msg(strstr(err.msg, "did not answer") != NULL, "%s", err.msg);
	gate_add(&start, 1);
	ck_assert_int_eq(inflight_wait_begin(f, 20, &size, &err), RS_OK);
	ck_assert_int_eq(size, (int64_t)len);
	/* 5000 bytes arrive, then nothing: the reader gets 4999 and then a timeout. */
	unsigned char *got = malloc(len);
	uint64_t pos = 0;
	ssize_t n = 0;
	while (pos < 4999 && (n = inflight_read(f, pos, got + pos, 3000, 20, &err)) > 0)
		pos += (uint64_t)n;
	ck_assert_uint_eq(pos, 4999);
	n = inflight_read(f, pos, got + pos, 3000, 1, &err);
	ck_assert_int_eq(n, -1);
	ck_assert_int_eq(err.code, RS_TIMEOUT);
	ck_assert_uint_eq(pos, 4999);
	ck_assert(memcmp(got, body, 4999) == 0);
	/* The download itself is not cancelled: it resumes and completes. */
	gate_add(&stall, 1);
	while ((n = inflight_read(f, pos, got + pos, len - pos + 1, 20, &err)) > 0)
		pos += (uint64_t)n;
	ck_assert_msg(n == 0, "%s", err.msg);
	ck_assert_uint_eq(pos, len);
	ck_assert(memcmp(got, body, len) == 0);
	ck_assert_uint_eq(inflight_count(t), 0);
	inflight_release(f);
	inflight_free(t);
	gate_dispose(&stall);
	gate_dispose(&start);
	free(got);
	free(body);
	store_free(bs);
}
END_TEST

/* A range that ends early (api/blobs.c) waits for the whole blob: stalls
 * time out without cancelling, a bad blob reports its failure, a good one
 * RS_OK, each after the range's bytes were already readable. The bounded
 * wait (optpull's fetch) says whether the download ended. */
START_TEST(wait_verified_reports_the_whole_blob)
{
	struct store *bs = store_fixture_store(0);
	struct inflight *t = table_new(bs);
	size_t len = 100000;
	unsigned char *body = fixture_bytes(12, len);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	for (int pass = 0; pass < 2; pass++) {
		bool bad = pass == 0;
		struct gate stall;
		gate_init(&stall);
		struct upstream_fake up;
		fake_init(&up, body, len, 12 + (uint64_t)pass);
		up.stall = &stall;
		up.stall_after = 5000;
		up.stall_want = 1;
		up.corrupt = bad;
		up.corrupt_at = len / 2;
		struct rs_err err = {0};
		struct inflight_fetch *f = NULL;
		ck_assert_int_eq(inflight_join(t, dg, (int64_t)len, fake_download, fake_arg_new(&up), fake_arg_free, &f,
		                               &err),
		                 RS_OK);
		int64_t size = 0;
		ck_assert_int_eq(inflight_wait_begin(f, 20, &size, &err), RS_OK);
		unsigned char got[100];
		uint64_t pos = 0;
		ssize_t n;
		while (pos < sizeof(got) && (n = inflight_read(f, pos, got + pos, sizeof(got) - pos, 20, &err)) > 0)
			pos += (uint64_t)n;
		ck_assert_uint_eq(pos, sizeof(got));
		ck_assert(memcmp(got, body, sizeof(got)) == 0);
		/* The blob is not verified yet, and nothing arrives for 1 s. */
		bool ended = true;
		uint64_t written = 0;
		ck_assert_int_eq(inflight_wait_end(f, 200, &ended, &written, &err), RS_OK);
		ck_assert(!ended);
		ck_assert_uint_eq(written, 5000);
		ck_assert_int_eq(inflight_wait_verified(f, 1, &err), RS_TIMEOUT);
		ck_assert_msg(strstr(err.msg, "stalled") != NULL, "%s", err.msg);
		gate_add(&stall, 1);
		rs_err_clear(&err);
		enum rs_code rc = inflight_wait_verified(f, 20, &err);
		enum rs_code erc = inflight_wait_end(f, 200, &ended, &written, &err);
		if (bad) {
			ck_assert_int_eq(rc, RS_DIGEST_MISMATCH);
			ck_assert_int_eq(erc, RS_DIGEST_MISMATCH);
			ck_assert(!ended);
			ck_assert(!store_has(bs, STORE_CACHE, STORE_BLOB, dg));
		} else {
			ck_assert_msg(rc == RS_OK, "%s", err.msg);
			ck_assert_int_eq(erc, RS_OK);
			ck_assert(ended);
			ck_assert_uint_eq(written, len);
			ck_assert(store_has(bs, STORE_CACHE, STORE_BLOB, dg));
		}
		inflight_release(f);
		gate_dispose(&stall);
	}
	inflight_free(t);
	free(body);
	store_free(bs);
}
END_TEST

START_TEST(release_order_variations)
{
	struct store *bs = store_fixture_store(0);
	struct inflight *t = table_new(bs);
	size_t len = 150000;
	unsigned char *body = fixture_bytes(11, len);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	struct rs_err err = {0};

	/* 1. Every reader lets go before the download ends: it still commits,
	 * and inflight_free waits for it. */
	struct gate start;
	gate_init(&start);
	struct upstream_fake up;
	fake_init(&up, body, len, 11);
	up.start = &start;
	up.start_want = 1;
	struct inflight_fetch *a = NULL, *b = NULL;
	ck_assert_int_eq(inflight_join(t, dg, (int64_t)len, fake_download, fake_arg_new(&up), fake_arg_free, &a, &err),
	                 RS_OK);
	ck_assert_int_eq(inflight_join(t, dg, (int64_t)len, fake_download, fake_arg_new(&up), fake_arg_free, &b, &err),
	                 RS_OK);
	ck_assert_ptr_eq(a, b);
	inflight_release(b);
	inflight_release(a);
	inflight_release(NULL);
	gate_add(&start, 1);
	inflight_free(t);
	ck_assert(store_has(bs, STORE_CACHE, STORE_BLOB, dg));
	ck_assert_int_eq(atomic_load(&up.calls), 1);
	ck_assert_int_eq(atomic_load(&up.frees), 2);
	ck_assert_int_eq(store_fixture_count_files("tmp"), 0);
	gate_dispose(&start);

	/* 2. The table goes before a reader is done: the reader keeps working. */
	unsigned char *body2 = fixture_bytes(12, len);
	char dg2[DIGEST_STR_SIZE];
	digest_buffer(dg2, body2, len);
	t = table_new(bs);
	struct upstream_fake up2;
	fake_init(&up2, body2, len, 12);
	struct inflight_fetch *c = NULL;
	ck_assert_int_eq(
		inflight_join(t, dg2, (int64_t)len, fake_download, fake_arg_new(&up2), fake_arg_free, &c, &err), RS_OK);
	inflight_free(t); /* waits for the worker */
	unsigned char *got = malloc(len);
	uint64_t pos = 0;
	ssize_t n;
	while ((n = inflight_read(c, pos, got + pos, 7777 < len - pos + 1 ? 7777 : len - pos + 1, 5, &err)) > 0)
		pos += (uint64_t)n;
	ck_assert_msg(n == 0, "%s", err.msg);
	ck_assert_uint_eq(pos, len);
	ck_assert(memcmp(got, body2, len) == 0);
	inflight_release(c);
	ck_assert(store_has(bs, STORE_CACHE, STORE_BLOB, dg2));
	free(got);
	free(body2);
	free(body);
	store_free(bs);
}
END_TEST

START_TEST(reader_survives_eviction_after_commit)
{
	struct store *bs = store_fixture_store(1);
	struct rs_err err = {0};
	struct inflight *t = table_new(bs);
	size_t len = 120000;
	unsigned char *body = fixture_bytes(13, len);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	struct upstream_fake up;
	fake_init(&up, body, len, 13);
	struct inflight_fetch *f = NULL;
	ck_assert_int_eq(inflight_join(t, dg, (int64_t)len, fake_download, fake_arg_new(&up), fake_arg_free, &f, &err),
	                 RS_OK);
	unsigned char *got = malloc(len);
	/* Read the first half, wait for the commit, evict, read the rest. */
	uint64_t pos = 0;
	ssize_t n;
	while (pos < len / 2 && (n = inflight_read(f, pos, got + pos, len / 2 - pos, 20, &err)) > 0)
		pos += (uint64_t)n;
	inflight_free(t);
	ck_assert(store_has(bs, STORE_CACHE, STORE_BLOB, dg));
	uint64_t freed = 0;
	ck_assert_int_eq(store_evict(bs, &freed, &err), RS_OK);
	ck_assert_uint_eq(freed, len);
	ck_assert(!store_has(bs, STORE_CACHE, STORE_BLOB, dg));
	while ((n = inflight_read(f, pos, got + pos, len - pos + 1, 20, &err)) > 0)
		pos += (uint64_t)n;
	ck_assert_msg(n == 0, "%s", err.msg);
	ck_assert_uint_eq(pos, len);
	ck_assert(memcmp(got, body, len) == 0);
	inflight_release(f);
	free(got);
	free(body);
	store_free(bs);
}
END_TEST

START_TEST(empty_blob_ends_at_once)
{
	struct store *bs = store_fixture_store(0);
	struct inflight *t = table_new(bs);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, "", 0);
	struct upstream_fake up;
	fake_init(&up, (const unsigned char *)"", 0, 14);
	struct reader r[NREADERS];
	run_readers(t, dg, 0, &up, 1, r);
	for (int i = 0; i < NREADERS; i++) {
		ck_assert_msg(r[i].last == 0, "reader %d: %s", i, r[i].err.msg);
		ck_assert_uint_eq(r[i].total, 0);
	}
	free_readers(r);
	inflight_free(t);
	ck_assert(store_has(bs, STORE_CACHE, STORE_BLOB, dg));
	store_free(bs);
}
END_TEST

/* Peer streaming (inflight_fetch_begin_relay): every reader gets the bytes,
 * verified at the end, and nothing is committed to the store nor left in tmp/
 * (the replica that owns the download commits it). */
START_TEST(relay_serves_readers_without_storing)
{
	struct store *bs = store_fixture_store(0);
	struct inflight *t = table_new(bs);
	size_t len = 300001;
	unsigned char *body = fixture_bytes(21, len);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	for (int pass = 0; pass < 2; pass++) {
		struct upstream_fake up;
		fake_init(&up, body, len, 21 + (uint64_t)pass);
		up.relay = true;
		up.relay_check = pass == 1;
		up.announce = pass == 0 ? (int64_t)len : -1;
		struct reader r[NREADERS];
		run_readers(t, dg, -1, &up, len, r);
		for (int i = 0; i < NREADERS; i++) {
			ck_assert_msg(r[i].begin_rc == RS_OK && r[i].last == 0, "reader %d: %s", i, r[i].err.msg);
			ck_assert_uint_eq(r[i].total, len);
			ck_assert(memcmp(r[i].got, body, len) == 0);
		}
		ck_assert_int_eq(atomic_load(&up.calls), 1);
		ck_assert(!store_has(bs, STORE_CACHE, STORE_BLOB, dg));
		ck_assert_int_eq(store_fixture_count_files("blobs"), 0);
		free_readers(r);
	}
	inflight_free(t);
	ck_assert_int_eq(store_fixture_count_files("tmp"), 0);
	free(body);
	store_free(bs);
}
END_TEST

/* A relayed blob that does not hash to its digest: every reader ends short
 * with the mismatch, never with a body that looks complete. */
START_TEST(relay_mismatch_fails_every_reader_short)
{
	struct store *bs = store_fixture_store(0);
	struct inflight *t = table_new(bs);
	size_t len = 200000;
	unsigned char *body = fixture_bytes(22, len);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	for (int pass = 0; pass < 2; pass++) { /* checked by the worker, then by the download function */
		struct upstream_fake up;
		fake_init(&up, body, len, 22 + (uint64_t)pass);
		up.relay = true;
		up.relay_check = pass == 1;
		up.corrupt = true;
		up.corrupt_at = len - 1;
		struct reader r[NREADERS];
		run_readers(t, dg, (int64_t)len, &up, len, r);
		for (int i = 0; i < NREADERS; i++) {
			ck_assert_msg(r[i].last == -1, "reader %d ended with %zd", i, r[i].last);
			ck_assert_int_eq(r[i].err.code, RS_DIGEST_MISMATCH);
			ck_assert_msg(strstr(r[i].err.msg, "relayed bytes of"), "%s", r[i].err.msg);
			ck_assert_uint_le(r[i].total, len - 1);
		}
		free_readers(r);
	}
	ck_assert(!store_has(bs, STORE_CACHE, STORE_BLOB, dg));
	inflight_free(t);
	ck_assert_int_eq(store_fixture_count_files("tmp"), 0);
	free(body);
	store_free(bs);
}
END_TEST

/* inflight_peek joins a running download and never starts one. */
START_TEST(peek_joins_only_a_running_download)
{
	struct store *bs = store_fixture_store(0);
	struct inflight *t = table_new(bs);
	size_t len = 50000;
	unsigned char *body = fixture_bytes(23, len);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	struct inflight_fetch *p = NULL;
	ck_assert_int_eq(inflight_peek(t, dg, &p), RS_NOT_FOUND);
	ck_assert_ptr_null(p);
	struct upstream_fake up;
	fake_init(&up, body, len, 23);
	struct gate start;
	gate_init(&start);
	up.start = &start;
	up.start_want = 1;
	struct inflight_fetch *f = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(inflight_join(t, dg, -1, fake_download, fake_arg_new(&up), fake_arg_free, &f, &err), RS_OK);
	ck_assert_int_eq(inflight_peek(t, dg, &p), RS_OK);
	ck_assert_ptr_eq(p, f);
	gate_add(&start, 1);
	ck_assert_int_eq(inflight_wait_verified(p, 20, &err), RS_OK);
	inflight_release(p);
	inflight_release(f);
	inflight_free(t);
	ck_assert_int_eq(atomic_load(&up.calls), 1);
	gate_dispose(&start);
	free(body);
	store_free(bs);
}
END_TEST

/* ---- a store slow or unreachable for one digest: the fixture's store whose
 * reader_open for that digest waits for a gate (a HEAD to an object store
 * that takes its time) or fails RS_UNAVAILABLE (one that does not answer) */

static char slow_digest[DIGEST_STR_SIZE];
static struct gate *slow_gate;
static enum rs_code slow_fail;

static enum rs_code slow_hook(const char *digest, struct rs_err *err)
{
	if (strcmp(digest, slow_digest) != 0)
		return RS_OK;
	if (slow_fail != RS_OK)
		return rs_err_set(err, slow_fail, "s3 HEAD regslim/%s (endpoint http://127.0.0.1:9, 4 attempts): down", digest);
	if (slow_gate)
		(void)gate_wait(slow_gate, 1);
	return RS_OK;
}

static struct store *slow_store(void)
{
	return store_fixture_store_hooked(slow_hook);
}

struct slow_join {
	struct inflight *t;
	const char *digest;
	struct upstream_fake *up;
	struct inflight_fetch *f;
	enum rs_code rc;
	atomic_int done;
};

static void *slow_join_main(void *p)
{
	struct slow_join *j = p;
	struct rs_err err = {0};
	j->rc = inflight_join(j->t, j->digest, -1, fake_download, fake_arg_new(j->up), fake_arg_free, &j->f, &err);
	atomic_store(&j->done, 1);
	return NULL;
}

/* The store is asked outside the table's lock: a join whose store call
 * hangs (an object store that does not answer yet) holds up no join of
 * another blob. (Seen: with RGW stopped, the blob GETs of a replica were
 * answered one after another, 2.8 s apart, the last after 28 s.) */
START_TEST(slow_store_call_does_not_block_other_joins)
{
	size_t len = 60000;
	unsigned char *a = fixture_bytes(31, len), *b = fixture_bytes(32, len);
	char da[DIGEST_STR_SIZE], db[DIGEST_STR_SIZE];
	digest_buffer(da, a, len);
	digest_buffer(db, b, len);
	struct gate g;
	gate_init(&g);
	snprintf(slow_digest, sizeof(slow_digest), "%s", da);
	slow_gate = &g;
	slow_fail = RS_OK;
	struct store *bs = slow_store();
	struct inflight *t = table_new(bs);
	struct upstream_fake upa, upb;
	fake_init(&upa, a, len, 31);
	fake_init(&upb, b, len, 32);
	struct slow_join ja = {.t = t, .digest = da, .up = &upa};
	atomic_init(&ja.done, 0);
	pthread_t th;
	ck_assert_int_eq(pthread_create(&th, NULL, slow_join_main, &ja), 0);
	struct timespec ts = {0, 200 * 1000000L}; /* A's join is in the store call by then */
	nanosleep(&ts, NULL);
	struct inflight_fetch *fb = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(inflight_join(t, db, -1, fake_download, fake_arg_new(&upb), fake_arg_free, &fb, &err), RS_OK);
	ck_assert_msg(!atomic_load(&ja.done), "the join of B waited for A's store call");
	ck_assert_int_eq(inflight_wait_verified(fb, 20, &err), RS_OK);
	inflight_release(fb);
	gate_add(&g, 1);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	ck_assert_int_eq(ja.rc, RS_OK);
	ck_assert_int_eq(inflight_wait_verified(ja.f, 20, &err), RS_OK);
	inflight_release(ja.f);
	inflight_free(t);
	ck_assert_int_eq(atomic_load(&upa.calls) + atomic_load(&upb.calls), 2);
	ck_assert(store_has(bs, STORE_CACHE, STORE_BLOB, da) && store_has(bs, STORE_CACHE, STORE_BLOB, db));
	slow_gate = NULL;
	gate_dispose(&g);
	free(a);
	free(b);
	store_free(bs);
}
END_TEST

/* A store that cannot say whether it holds the blob fails the join with its
 * error (503 for the client, naming the endpoint): no download is started
 * that could only fail at its commit. */
START_TEST(unreachable_store_fails_the_join)
{
	size_t len = 5000;
	unsigned char *a = fixture_bytes(33, len);
	char da[DIGEST_STR_SIZE];
	digest_buffer(da, a, len);
	snprintf(slow_digest, sizeof(slow_digest), "%s", da);
	slow_gate = NULL;
	slow_fail = RS_UNAVAILABLE;
	struct store *bs = slow_store();
	struct inflight *t = table_new(bs);
	struct upstream_fake up;
	fake_init(&up, a, len, 33);
	struct inflight_fetch *f = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(inflight_join(t, da, -1, fake_download, fake_arg_new(&up), fake_arg_free, &f, &err),
	                 RS_UNAVAILABLE);
	ck_assert_ptr_null(f);
	ck_assert_msg(strstr(err.msg, "endpoint http://127.0.0.1:9") != NULL, "%s", err.msg);
	ck_assert_int_eq(inflight_count(t), 0);
	inflight_free(t);
	ck_assert_int_eq(atomic_load(&up.calls), 0);
	ck_assert_int_eq(atomic_load(&up.frees), 1);
	ck_assert_int_eq(store_fixture_count_files("tmp"), 0);
	slow_fail = RS_OK;
	free(a);
	store_free(bs);
}
END_TEST

static Suite *inflight_suite(void)
{
	Suite *s = suite_create("inflight");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, store_fixture_setup, store_fixture_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, one_download_for_concurrent_joiners);
	tcase_add_test(tc, unknown_size_download_works);
	tcase_add_test(tc, mismatch_fails_every_reader_short);
	tcase_add_test(tc, truncated_download_fails_readers);
	tcase_add_test(tc, later_join_after_failure_downloads_again);
	tcase_add_test(tc, wait_begin_reports_upstream_error);
	tcase_add_test(tc, stalled_download_times_out_readers);
	tcase_add_test(tc, wait_verified_reports_the_whole_blob);
	tcase_add_test(tc, release_order_variations);
	tcase_add_test(tc, reader_survives_eviction_after_commit);
	tcase_add_test(tc, empty_blob_ends_at_once);
	tcase_add_test(tc, relay_serves_readers_without_storing);
	tcase_add_test(tc, relay_mismatch_fails_every_reader_short);
	tcase_add_test(tc, peek_joins_only_a_running_download);
	tcase_add_test(tc, slow_store_call_does_not_block_other_joins);
	tcase_add_test(tc, unreachable_store_fails_the_join);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(inflight_suite());
}
