/* test_source: where bytes come from (proxy/store/source.h), over a real
 * store (store.h, fs driver) in a private temp directory and the real
 * upstream client (upstream.h) talking HTTP to a small in-process registry
 * (fakepeer) that holds one blob in some repositories, can send bytes that
 * do not match their digest, can be "down" (503) and counts its requests.
 * Checked: a miss downloads once and links the repository; a cached blob is
 * served under another repository only when the upstream confirms it there
 * (once: then linked); stale-if-error only under a repository whose linked
 * manifest names the blob; a download that fails verification leaves no
 * link; pushed blobs only under their name; regeneration only for a linked
 * object; the ensure and pushed-fetch paths; a stopped source ends waits. */
#include "source.h"

#include "config.h"
#include "digest.h"
#include "fakepeer.h"
#include "fixture.h"
#include "inflight.h"
#include "metrics.h"
#include "store_fixture.h"
#include "upstream.h"

#include <check.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOB_SIZE 70000

/* ---- the fake upstream registry ----------------------------------------- */

static struct {
	unsigned char blob[BLOB_SIZE];
	char blob_digest[DIGEST_STR_SIZE];
	char bad_digest[DIGEST_STR_SIZE]; /* served with the blob's bytes: never verifies */
	char url[128];
	struct MHD_Daemon *d;
	atomic_int gets, heads;
	atomic_bool down;
} F;

/* Repositories of the fake that hold the blob (and the bad one). */
static bool holds(const char *repo)
{
	return strcmp(repo, "library/a") == 0 || strcmp(repo, "library/c") == 0;
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const void *buf, size_t len)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)buf, MHD_RESPMEM_MUST_COPY);
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	(void)cls;
	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)con_cls;
	static const char notfound[] = "{\"errors\":[{\"code\":\"BLOB_UNKNOWN\",\"message\":\"blob unknown\"}]}";
	if (strcmp(url, "/v2/") == 0)
		return answer(c, 200, "{}", 2);
	if (atomic_load(&F.down))
		return answer(c, 503, "{}", 2);
	char repo[256];
	const char *b = strstr(url, "/blobs/");
	if (strncmp(url, "/v2/", 4) != 0 || !b || (size_t)(b - url - 4) >= sizeof(repo))
		return answer(c, 404, notfound, strlen(notfound));
	memcpy(repo, url + 4, (size_t)(b - url - 4));
	repo[b - url - 4] = '\0';
	const char *digest = b + strlen("/blobs/");
	bool head = strcmp(method, "HEAD") == 0;
	atomic_fetch_add(head ? &F.heads : &F.gets, 1);
	/* the bad blob: its bytes are sent on GET, but no HEAD confirms it */
	bool bad = strcmp(digest, F.bad_digest) == 0;
	if (!holds(repo) || (strcmp(digest, F.blob_digest) != 0 && !bad) || (bad && head))
		return answer(c, 404, notfound, strlen(notfound));
	return answer(c, 200, F.blob, BLOB_SIZE);
}

/* ---- fixture ---------------------------------------------------------------- */

static struct store *S;
static struct upstream *U;
static struct source *SRC;
static atomic_int regen_calls;

static void setup(void)
{
	store_fixture_setup();
	memset(&F, 0, sizeof(F));
	unsigned seed = 7;
	for (size_t i = 0; i < BLOB_SIZE; i++)
		F.blob[i] = (unsigned char)(rand_r(&seed) >> 5);
	digest_buffer(F.blob_digest, F.blob, BLOB_SIZE);
	digest_buffer(F.bad_digest, "not these bytes", 15);
	struct rs_err err = {0};
	ck_assert_int_eq(upstream_global_init(&err), RS_OK);
	F.d = fakepeer_start("127.0.0.1", handler, NULL, NULL, F.url, sizeof(F.url));
	ck_assert_ptr_nonnull(F.d);
	S = store_fixture_store(0);
	struct rs_config *cfg = store_fixture_config();
	ck_assert_uint_ge(cfg->upstream_count, 1);
	struct rs_upstream_config *upc = &cfg->upstreams[cfg->default_upstream];
	free(upc->url);
	upc->url = strdup(F.url);
	ck_assert_ptr_nonnull(upc->url);
	upc->timeout_s = 5;
	ck_assert_uint_eq(cfg->default_upstream, 0);
	ck_assert_msg(upstream_new(&U, upc, &err) == RS_OK, "%s", err.msg);
	ck_assert_msg(source_new(&SRC, cfg, S, &U, &err) == RS_OK, "%s", err.msg);
	atomic_store(&regen_calls, 0);
}

static void teardown(void)
{
	source_free(SRC);
	upstream_free(U);
	store_free(S);
	MHD_stop_daemon(F.d);
	upstream_global_cleanup();
	store_fixture_teardown();
}

static const char *upname(void)
{
	return store_fixture_config()->upstreams[0].name;
}

static struct source_ref blob_ref(const char *name, const char *repo, const char *digest)
{
	return (struct source_ref){name, 0, repo, STORE_BLOB, digest};
}

static enum source_where locate(const struct source_ref *ref, struct source_found *f)
{
	struct rs_err err = {0};
	ck_assert_msg(source_locate(SRC, ref, f, &err) == RS_OK, "%s", err.msg);
	return f->where;
}

/* Download the blob for repo through source_fetch and wait until verified. */
static enum rs_code fetch_all(const char *repo, const char *digest, struct rs_err *err)
{
	struct source_ref ref = blob_ref(repo, repo, digest);
	struct source_found f;
	enum rs_code rc = source_fetch(SRC, &ref, &f, err);
	if (rc == RS_OK && f.where == SOURCE_UNLINKED) /* joined a download that ended before we looked */
		rc = rs_err_set(err, RS_NOT_FOUND, "unlinked: HTTP %ld", f.rep.status);
	else if (rc == RS_OK) {
		ck_assert_int_eq(f.where, SOURCE_UPSTREAM);
		ck_assert_ptr_nonnull(f.fetch);
		rc = inflight_wait_verified(f.fetch, 10, err);
	}
	source_found_dispose(&f);
	return rc;
}

/* ---- tests ------------------------------------------------------------------- */

START_TEST(miss_downloads_once_and_links_the_repository)
{
	struct source_ref ref = blob_ref("library/a", "library/a", F.blob_digest);
	struct source_found f;
	ck_assert_int_eq(locate(&ref, &f), SOURCE_UPSTREAM);
	ck_assert_ptr_null(f.rd);
	source_found_dispose(&f);
	ck_assert_int_eq(atomic_load(&F.heads) + atomic_load(&F.gets), 0); /* locating a miss asks nobody */

	struct rs_err err = {0};
	ck_assert_msg(fetch_all("library/a", F.blob_digest, &err) == RS_OK, "%s", err.msg);
	ck_assert_int_eq(atomic_load(&F.gets), 1);
	ck_assert(store_has(S, STORE_CACHE, STORE_BLOB, F.blob_digest));
	ck_assert(source_linked(SRC, 0, "library/a", STORE_BLOB, F.blob_digest));

	ck_assert_int_eq(locate(&ref, &f), SOURCE_CACHE);
	ck_assert_ptr_nonnull(f.rd);
	ck_assert_uint_eq(store_reader_size(f.rd), BLOB_SIZE);
	source_found_dispose(&f);
	ck_assert_int_eq(atomic_load(&F.gets), 1);
	ck_assert_int_eq(atomic_load(&F.heads), 0);
}
END_TEST

START_TEST(cached_blob_needs_the_upstream_for_another_repository)
{
	struct rs_err err = {0};
	ck_assert_msg(fetch_all("library/a", F.blob_digest, &err) == RS_OK, "%s", err.msg);

	/* library/b does not hold it upstream: never served from a's copy */
	struct source_ref b = blob_ref("library/b", "library/b", F.blob_digest);
	struct source_found f;
	ck_assert_int_eq(locate(&b, &f), SOURCE_UNLINKED);
	ck_assert_int_eq(f.ask_rc, RS_OK);
	ck_assert_int_eq(f.rep.status, 404);
	ck_assert_ptr_null(f.rd);
	source_found_dispose(&f);
	ck_assert(!source_linked(SRC, 0, "library/b", STORE_BLOB, F.blob_digest));

	/* library/c does: confirmed once (HEAD), then linked */
	struct source_ref c = blob_ref("library/c", "library/c", F.blob_digest);
	ck_assert_int_eq(locate(&c, &f), SOURCE_CACHE);
	ck_assert_ptr_nonnull(f.rd);
	source_found_dispose(&f);
	ck_assert_int_eq(atomic_load(&F.heads), 2);
	ck_assert(source_linked(SRC, 0, "library/c", STORE_BLOB, F.blob_digest));
	ck_assert_int_eq(locate(&c, &f), SOURCE_CACHE);
	source_found_dispose(&f);
	ck_assert_int_eq(atomic_load(&F.heads), 2);
	ck_assert_int_eq(atomic_load(&F.gets), 1);
}
END_TEST

START_TEST(stale_if_error_only_under_a_manifest_that_names_it)
{
	struct rs_err err = {0};
	ck_assert_msg(fetch_all("library/a", F.blob_digest, &err) == RS_OK, "%s", err.msg);
	/* a manifest of library/d names the blob as its layer */
	char m[1024], md[DIGEST_STR_SIZE];
	snprintf(m, sizeof(m),
	         "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
	         "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"%s\",\"size\":15},"
	         "\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"%s\","
	         "\"size\":%d}]}",
	         F.bad_digest, F.blob_digest, BLOB_SIZE);
	digest_buffer(md, m, strlen(m));
	ck_assert_msg(store_manifest_put(S, STORE_CACHE, md, "application/vnd.oci.image.manifest.v1+json", m, strlen(m),
	                                 &err) == RS_OK, "%s", err.msg);
	ck_assert_int_eq(store_link(S, upname(), "library/d", STORE_MANIFEST, md, &err), RS_OK);

	atomic_store(&F.down, true);
	struct source_ref d = blob_ref("library/d", "library/d", F.blob_digest);
	struct source_found f;
	ck_assert_int_eq(locate(&d, &f), SOURCE_CACHE);
	ck_assert_ptr_nonnull(f.rd);
	source_found_dispose(&f);
	ck_assert(!source_linked(SRC, 0, "library/d", STORE_BLOB, F.blob_digest)); /* served stale, not linked */

	struct source_ref e = blob_ref("library/e", "library/e", F.blob_digest);
	ck_assert_int_eq(locate(&e, &f), SOURCE_UNLINKED);
	ck_assert_int_eq(f.rep.status, 503);
	source_found_dispose(&f);
}
END_TEST

START_TEST(failed_download_leaves_no_link)
{
	struct rs_err err = {0};
	enum rs_code rc = fetch_all("library/a", F.bad_digest, &err);
	ck_assert_int_ne(rc, RS_OK);
	ck_assert(!store_has(S, STORE_CACHE, STORE_BLOB, F.bad_digest));
	/* the link made when the upstream answered goes once the download ended */
	bool linked = true;
	for (int i = 0; i < 100 && (linked = source_linked(SRC, 0, "library/a", STORE_BLOB, F.bad_digest)); i++)
		usleep(50000);
	ck_assert(!linked);
	/* a 404 never links either */
	rc = fetch_all("library/b", F.blob_digest, &err);
	ck_assert_int_eq(rc, RS_NOT_FOUND);
	ck_assert(!source_linked(SRC, 0, "library/b", STORE_BLOB, F.blob_digest));
}
END_TEST

START_TEST(pushed_blob_only_under_its_name)
{
	struct rs_err err = {0};
	char uuid[STORE_UUID_SIZE];
	struct store_upload *u = NULL;
	ck_assert_int_eq(store_upload_start(S, "team/app", uuid, &err), RS_OK);
	ck_assert_int_eq(store_upload_open(S, "team/app", uuid, &u, &err), RS_OK);
	ck_assert_int_eq(store_upload_write(u, F.blob, BLOB_SIZE, &err), RS_OK);
	ck_assert_msg(store_upload_commit(u, F.blob_digest, &err) == RS_OK, "%s", err.msg);

	struct source_ref p = blob_ref("team/app", "team/app", F.blob_digest);
	struct source_found f;
	ck_assert_int_eq(locate(&p, &f), SOURCE_PUSHED);
	ck_assert_ptr_nonnull(f.rd);
	source_found_dispose(&f);
	struct source_ref other = blob_ref("team/other", "team/other", F.blob_digest);
	ck_assert_int_eq(locate(&other, &f), SOURCE_UPSTREAM);
	source_found_dispose(&f);
	ck_assert_int_eq(atomic_load(&F.heads) + atomic_load(&F.gets), 0);
}
END_TEST

/* The regeneration hook: writes the blob into the cache as the optimizer would. */
static enum rs_code regen(void *ctx, enum store_kind kind, const char *digest, unsigned wait_s, struct rs_err *err)
{
	(void)ctx;
	(void)wait_s;
	atomic_fetch_add(&regen_calls, 1);
	ck_assert_int_eq(kind, STORE_BLOB);
	struct store_writer *w = NULL;
	enum rs_code rc = store_writer_new(&w, S, STORE_CACHE, STORE_BLOB, digest, BLOB_SIZE, err);
	if (rc == RS_OK && (rc = store_writer_write(w, F.blob, BLOB_SIZE, err)) != RS_OK)
		store_writer_abort(w);
	else if (rc == RS_OK)
		rc = store_writer_commit(w, err);
	return rc;
}

START_TEST(regenerates_only_a_linked_object)
{
	source_set_regenerate(SRC, regen, NULL);
	struct source_ref x = blob_ref("library/x", "library/x", F.blob_digest);
	struct source_found f;
	ck_assert_int_eq(locate(&x, &f), SOURCE_UPSTREAM); /* not linked: not made again */
	source_found_dispose(&f);
	ck_assert_int_eq(atomic_load(&regen_calls), 0);

	struct rs_err err = {0};
	ck_assert_int_eq(store_link(S, upname(), "library/x", STORE_BLOB, F.blob_digest, &err), RS_OK);
	ck_assert_int_eq(locate(&x, &f), SOURCE_REGENERATED);
	ck_assert_ptr_nonnull(f.rd);
	source_found_dispose(&f);
	ck_assert_int_eq(atomic_load(&regen_calls), 1);
	ck_assert_int_eq(locate(&x, &f), SOURCE_CACHE);
	source_found_dispose(&f);
	ck_assert_int_eq(atomic_load(&regen_calls), 1);
	ck_assert_int_eq(atomic_load(&F.heads) + atomic_load(&F.gets), 0);
}
END_TEST

START_TEST(ensure_and_pushed_fetch)
{
	struct rs_err err = {0};
	/* a mount from the mirror's "a" (routed like a pull: library/a) */
	ck_assert_msg(source_pushed_fetch(SRC, "a", F.blob_digest, false, &err) == RS_OK, "%s", err.msg);
	ck_assert(store_has(S, STORE_CACHE, STORE_BLOB, F.blob_digest));
	ck_assert(source_linked(SRC, 0, "library/a", STORE_BLOB, F.blob_digest));
	ck_assert_int_eq(atomic_load(&F.gets), 1);
	/* "c" holds it too: confirmed, not downloaded again */
	ck_assert_msg(source_pushed_fetch(SRC, "c", F.blob_digest, false, &err) == RS_OK, "%s", err.msg);
	ck_assert_int_eq(atomic_load(&F.gets), 1);
	ck_assert_int_eq(atomic_load(&F.heads), 1);
	/* "b" does not */
	ck_assert_int_eq(source_pushed_fetch(SRC, "b", F.blob_digest, false, &err), RS_NOT_FOUND);
	ck_assert(!source_linked(SRC, 0, "library/b", STORE_BLOB, F.blob_digest));
	/* ensure of something the upstream lacks */
	ck_assert_int_eq(source_ensure_blob(SRC, 0, "library/b", F.bad_digest, &err), RS_NOT_FOUND);
}
END_TEST

START_TEST(stopped_source_ends_the_wait)
{
	source_stop(SRC);
	struct rs_err err = {0};
	ck_assert_int_eq(source_ensure_blob(SRC, 0, "library/a", F.blob_digest, &err), RS_TIMEOUT);
	ck_assert_msg(strstr(err.msg, "shutting down") != NULL, "%s", err.msg);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("source");
	TCase *t = tcase_create("source");
	tcase_set_timeout(t, 60);
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_add_test(t, miss_downloads_once_and_links_the_repository);
	tcase_add_test(t, cached_blob_needs_the_upstream_for_another_repository);
	tcase_add_test(t, stale_if_error_only_under_a_manifest_that_names_it);
	tcase_add_test(t, failed_download_leaves_no_link);
	tcase_add_test(t, pushed_blob_only_under_its_name);
	tcase_add_test(t, regenerates_only_a_linked_object);
	tcase_add_test(t, ensure_and_pushed_fetch);
	tcase_add_test(t, stopped_source_ends_the_wait);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	/* metrics.c keeps the first name it sees for an upstream's row (the real
	 * program's configuration outlives it); each test's configuration does
	 * not, so the row is named once by a string that lives as long as the
	 * process (CK_FORK=no runs every test in it). */
	metrics_upstream("docker.io", METRICS_UP_REQUESTS);
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
