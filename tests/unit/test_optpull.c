/* test_optpull: the optimized pull path's pure parts (User-Agent families,
 * variant choice, policy matching, cache keys) and, over a real blob store
 * (store.h) holding a generated image, an optimization end to end: result persisted
 * and found again by a new instance, report stored, blobs imported; a failed
 * optimization remembered (fetch called once for concurrent callers); the
 * sync wait giving up while the job goes on. Fetch callbacks are small fakes
 * of the registry (the peer), counting their calls. */
#include "proxy/optimize/optpull.h"

#include "fixture.h"
#include "config.h"
#include "digest.h"
#include "targen.h"

#include <check.h>
#include <dirent.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- pure parts --------------------------------------------------------- */

START_TEST(docker_20_is_legacy_and_gets_gzip)
{
	struct optpull_client c = optpull_client_of("docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84");
	ck_assert_int_eq(c.family, OPTPULL_FAMILY_DOCKER_LEGACY);
	struct rs_opt_policy p = {.compression = RS_OPT_COMPRESS_AUTO, .unknown_clients = RS_OPT_COMPRESS_ZSTD};
	ck_assert_int_eq(optpull_choose_variant(&p, c), OPTPULL_GZIP);
	ck_assert_str_eq(optpull_family_name(c.family), "docker-legacy");
}
END_TEST

START_TEST(modern_clients_get_zstd)
{
	struct rs_opt_policy p = {.compression = RS_OPT_COMPRESS_AUTO, .unknown_clients = RS_OPT_COMPRESS_GZIP};
	const char *uas[] = {"docker/24.0.5 go/go1.20", "containerd/1.6.20~ds1", "containerd/1.5.0",
	                     "containers/5.23.1 (github.com/containers/image)", "skopeo/1.9.3", "cri-o/1.28.1"};
	for (size_t i = 0; i < sizeof(uas) / sizeof(uas[0]); i++)
		ck_assert_msg(optpull_choose_variant(&p, optpull_client_of(uas[i])) == OPTPULL_ZSTD, "%s", uas[i]);
	ck_assert_int_eq(optpull_client_of("containerd/1.6.20").family, OPTPULL_FAMILY_CONTAINERD);
	ck_assert_int_eq(optpull_client_of("docker/24.0.5").family, OPTPULL_FAMILY_DOCKER);
	ck_assert_int_eq(optpull_client_of("skopeo/1.9.3").family, OPTPULL_FAMILY_CONTAINERS);
}
END_TEST

START_TEST(old_containerd_gets_gzip)
{
	struct rs_opt_policy p = {.compression = RS_OPT_COMPRESS_AUTO, .unknown_clients = RS_OPT_COMPRESS_ZSTD};
	ck_assert_int_eq(optpull_choose_variant(&p, optpull_client_of("containerd/1.4.13")), OPTPULL_GZIP);
}
END_TEST

START_TEST(unknown_clients_follow_the_setting)
{
	struct rs_opt_policy p = {.compression = RS_OPT_COMPRESS_AUTO, .unknown_clients = RS_OPT_COMPRESS_GZIP};
	ck_assert_int_eq(optpull_client_of("curl/8.0").family, OPTPULL_FAMILY_UNKNOWN);
	ck_assert_int_eq(optpull_client_of(NULL).family, OPTPULL_FAMILY_UNKNOWN);
	ck_assert_int_eq(optpull_choose_variant(&p, optpull_client_of("curl/8.0")), OPTPULL_GZIP);
	p.unknown_clients = RS_OPT_COMPRESS_ZSTD;
	ck_assert_int_eq(optpull_choose_variant(&p, optpull_client_of("Go-http-client/1.1")), OPTPULL_ZSTD);
	/* docker/ without a version is unknown, not legacy */
	ck_assert_int_eq(optpull_client_of("docker/").family, OPTPULL_FAMILY_UNKNOWN);
}
END_TEST

START_TEST(fixed_compression_overrides_the_client)
{
	struct rs_opt_policy p = {.compression = RS_OPT_COMPRESS_ZSTD};
	ck_assert_int_eq(optpull_choose_variant(&p, optpull_client_of("docker/20.10.24")), OPTPULL_ZSTD);
	p.compression = RS_OPT_COMPRESS_GZIP;
	ck_assert_int_eq(optpull_choose_variant(&p, optpull_client_of("skopeo/1.9.3")), OPTPULL_GZIP);
}
END_TEST

START_TEST(default_config_optimizes_every_docker_io_repository)
{
	struct rs_config cfg;
	struct rs_err err = {0};
	ck_assert_int_eq(config_init_defaults(&cfg, &err), RS_OK);
	ck_assert(cfg.optimize.enabled);
	ck_assert_uint_eq(cfg.optimize.sync_timeout_s, 30);
	const struct rs_opt_policy *p = config_find_opt_policy(&cfg, "docker.io", "library/tiny");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(p->compression, RS_OPT_COMPRESS_AUTO);
	ck_assert_ptr_null(p->policy_file);
	ck_assert_ptr_nonnull(config_find_opt_policy(&cfg, "docker.io", "org/deep/app"));
	ck_assert_ptr_null(config_find_opt_policy(&cfg, "ghcr.io", "library/tiny"));
	cfg.optimize.enabled = false;
	ck_assert_ptr_null(config_find_opt_policy(&cfg, "docker.io", "library/tiny"));
	config_dispose(&cfg);
}
END_TEST

START_TEST(policies_match_by_glob_and_library_short_name)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/c.json", fixture_dir());
	fixture_write_text(path, "{\"upstreams\":[{\"name\":\"docker.io\",\"url\":\"http://127.0.0.1:1\"},"
	                 "{\"name\":\"ghcr.io\",\"url\":\"http://127.0.0.1:2\"}],"
	                 "\"optimize\":{\"sync_timeout_s\":5,\"policies\":["
	                 "{\"upstream\":\"docker.io\",\"repositories\":[\"tiny\",\"team/*\"],\"compression\":\"gzip\"},"
	                 "{\"upstream\":\"ghcr.io\",\"repositories\":[\"*\"],\"unknown_clients\":\"zstd\"}]}}");
	struct rs_config cfg;
	struct rs_err err = {0};
	ck_assert_int_eq(config_load(&cfg, path, &err), RS_OK);
	ck_assert_uint_eq(cfg.optimize.sync_timeout_s, 5);
	const struct rs_opt_policy *p = config_find_opt_policy(&cfg, "docker.io", "library/tiny");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(p->compression, RS_OPT_COMPRESS_GZIP);
	ck_assert_ptr_nonnull(config_find_opt_policy(&cfg, "docker.io", "team/a/b"));
	ck_assert_ptr_null(config_find_opt_policy(&cfg, "docker.io", "library/multi"));
	p = config_find_opt_policy(&cfg, "ghcr.io", "org/x");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(p->unknown_clients, RS_OPT_COMPRESS_ZSTD);
	config_dispose(&cfg);
}
END_TEST

START_TEST(bad_optimize_keys_are_refused_with_their_path)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/c.json", fixture_dir());
	struct {
		const char *json, *msg;
	} cases[] = {
		{"{\"optimize\":{\"colour\":1}}", "optimize.colour: unknown key"},
		{"{\"optimize\":{\"policies\":[{\"upstream\":\"quay.io\",\"repositories\":[\"*\"]}]}}",
		 "optimize.policies[0].upstream: expected the name of a configured upstream"},
		{"{\"optimize\":{\"policies\":[{\"upstream\":\"docker.io\",\"repositories\":[\"*\"],\"compression\":\"lz4\"}]}}",
		 "optimize.policies[0].compression: expected one of \"auto\", \"zstd\", \"gzip\""},
		{"{\"optimize\":{\"policies\":[{\"upstream\":\"docker.io\",\"repositories\":[]}]}}",
		 "optimize.policies[0].repositories: expected a non-empty array"},
		{"{\"optimize\":{\"policies\":[{\"upstream\":\"docker.io\",\"repositories\":[\"*\"],"
		 "\"policy_file\":\"/nonexistent/p.json\"}]}}",
		 "optimize.policies[0].policy_file: "},
		{"{\"optimize\":{\"sync_timeout_s\":-1}}", "optimize.sync_timeout_s: expected a non-negative integer"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fixture_write_text(path, cases[i].json);
		struct rs_config cfg;
		struct rs_err err = {0};
		ck_assert_int_eq(config_load(&cfg, path, &err), RS_CONFIG);
		ck_assert_msg(strstr(err.msg, cases[i].msg) && strstr(err.msg, path), "case %zu: %s", i, err.msg);
	}
}
END_TEST

START_TEST(keys_differ_by_variant_and_policy)
{
	char a[OPTPULL_KEY_SIZE], b[OPTPULL_KEY_SIZE], c[OPTPULL_KEY_SIZE];
	char src[DIGEST_STR_SIZE], pol1[DIGEST_STR_SIZE], pol2[DIGEST_STR_SIZE];
	digest_buffer(src, "m", 1);
	digest_buffer(pol1, "p1", 2);
	digest_buffer(pol2, "p2", 2);
	optpull_key(a, src, pol1, OPTPULL_ZSTD);
	optpull_key(b, src, pol1, OPTPULL_GZIP);
	optpull_key(c, src, pol2, OPTPULL_ZSTD);
	ck_assert_str_ne(a, b);
	ck_assert_str_ne(a, c);
	ck_assert_ptr_nonnull(strstr(a, digest_hex(src)));
	ck_assert_ptr_null(strchr(a, '/'));
	char again[OPTPULL_KEY_SIZE];
	optpull_key(again, src, pol1, OPTPULL_ZSTD);
	ck_assert_str_eq(a, again);
}
END_TEST

/* ---- end to end over a store ------------------------------------------- */

struct fake {
	atomic_int blob_calls, manifest_calls;
	unsigned sleep_ms;
};

static enum rs_code fake_blob(void *ctx, size_t up, const char *repo, const char *digest, struct rs_err *err)
{
	(void)up;
	(void)repo;
	struct fake *f = ctx;
	atomic_fetch_add(&f->blob_calls, 1);
	if (f->sleep_ms)
		usleep(f->sleep_ms * 1000);
	return rs_err_set(err, RS_UPSTREAM, "fake upstream is down (blob %s)", digest);
}

static enum rs_code fake_manifest(void *ctx, size_t up, const char *repo, const char *digest, struct rs_err *err)
{
	(void)up;
	(void)repo;
	struct fake *f = ctx;
	atomic_fetch_add(&f->manifest_calls, 1);
	return rs_err_set(err, RS_UPSTREAM, "fake upstream is down (manifest %s)", digest);
}

static void put_blob(struct store *bs, const void *buf, size_t len, char out[DIGEST_STR_SIZE])
{
	struct rs_err err = {0};
	struct store_writer *w = NULL;
	digest_buffer(out, buf, len);
	ck_assert_int_eq(store_writer_new(&w, bs, STORE_CACHE, STORE_BLOB, out, (int64_t)len, &err), RS_OK);
	ck_assert_int_eq(store_writer_write(w, buf, len, &err), RS_OK);
	ck_assert_int_eq(store_writer_commit(w, &err), RS_OK);
}

/* A one-layer image in the store; with_layer false leaves the layer out. */
static void make_image(struct store *bs, bool with_layer, char manifest_digest[DIGEST_STR_SIZE])
{
	struct targen *g = targen_new(7);
	targen_add_dir(g, "etc");
	targen_add_file(g, "etc/os-release", "ID=test\n", 8);
	targen_add_dir(g, "usr/share/doc/x");
	targen_add_file(g, "usr/share/doc/x/README", "docs docs docs\n", 15);
	targen_end(g, 2, true);
	size_t tlen = 0;
	const uint8_t *tar = targen_data(g, &tlen);
	char diff_id[DIGEST_STR_SIZE], layer[DIGEST_STR_SIZE], config[DIGEST_STR_SIZE];
	digest_buffer(diff_id, tar, tlen);
	uint8_t *gz = NULL;
	size_t gzlen = 0;
	targen_gzip(tar, tlen, 6, 1, &gz, &gzlen);
	if (with_layer)
		put_blob(bs, gz, gzlen, layer);
	else
		digest_buffer(layer, gz, gzlen);
	char cfg[1024];
	int n = snprintf(cfg, sizeof(cfg),
	                 "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{},"
	                 "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"%s\"]},"
	                 "\"history\":[{\"created_by\":\"test\"}]}",
	                 diff_id);
	put_blob(bs, cfg, (size_t)n, config);
	char man[2048];
	n = snprintf(man, sizeof(man),
	             "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
	             "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"%s\",\"size\":%d},"
	             "\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"%s\","
	             "\"size\":%zu}]}",
	             config, (int)strlen(cfg), layer, gzlen);
	digest_buffer(manifest_digest, man, (size_t)n);
	struct rs_err err = {0};
	ck_assert_int_eq(store_manifest_put(bs, STORE_CACHE, manifest_digest, "application/vnd.oci.image.manifest.v1+json", man,
	                                        (size_t)n, &err),
	                 RS_OK);
	free(gz);
	targen_free(g);
}

struct env {
	struct rs_config cfg;
	struct store *bs;
	struct fake fake;
	struct optpull_ops ops;
};

static void env_open(struct env *e)
{
	struct rs_err err = {0};
	ck_assert_int_eq(config_init_defaults(&e->cfg, &err), RS_OK);
	free(e->cfg.data_dir);
	e->cfg.data_dir = strdup(fixture_dir());
	ck_assert_msg(store_open(&e->bs, &e->cfg, &err) == RS_OK, "%s", err.msg);
	e->ops = (struct optpull_ops){fake_blob, fake_manifest, &e->fake};
}

static void env_close(struct env *e)
{
	store_free(e->bs);
	config_dispose(&e->cfg);
}

START_TEST(optimizes_persists_and_finds_the_result_again)
{
	struct env e = {0};
	env_open(&e);
	char src[DIGEST_STR_SIZE];
	make_image(e.bs, true, src);
	struct optpull *op = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(optpull_new(&op, &e.cfg, e.bs, &e.ops, &err), RS_OK);
	struct optpull_request rq = {0, "library/x", src, &e.cfg.optimize.policies[0], OPTPULL_ZSTD};
	struct optpull_result res = {0}, again = {0}, gz = {0};
	ck_assert_int_eq(optpull_lookup(op, &res, &rq, &err), RS_NOT_FOUND);
	ck_assert_msg(optpull_get(op, &res, &rq, 60, &err) == RS_OK, "%s", err.msg);
	ck_assert_str_ne(res.digest, src);
	ck_assert_str_eq(res.media_type, "application/vnd.oci.image.manifest.v1+json");
	ck_assert(store_has(e.bs, STORE_CACHE, STORE_MANIFEST, res.digest));
	/* the optimized manifest's blobs are in the store, zstd layers */
	char *buf = NULL, *type = NULL;
	size_t len = 0;
	ck_assert_int_eq(store_manifest_get(e.bs, STORE_CACHE, res.digest, 1 << 20, &buf, &len, &type, &err), RS_OK);
	ck_assert_ptr_nonnull(strstr(buf, "tar+zstd"));
	ck_assert_ptr_nonnull(strstr(buf, src)); /* the source annotation */
	char *l = strstr(buf, "\"layers\"");
	char *d = l ? strstr(l, "sha256:") : NULL;
	ck_assert_ptr_nonnull(d);
	char ld[DIGEST_STR_SIZE];
	snprintf(ld, sizeof(ld), "%.71s", d);
	ck_assert(store_has(e.bs, STORE_CACHE, STORE_BLOB, ld));
	free(buf);
	free(type);
	/* the report */
	char *rep = NULL;
	ck_assert_int_eq(optpull_report(op, res.digest, &rep, &len, &err), RS_OK);
	ck_assert_ptr_nonnull(strstr(rep, "usr/share/doc/x/README"));
	free(rep);
	ck_assert_int_eq(optpull_report(op, src, &rep, &len, &err), RS_NOT_FOUND);
	/* the other variant is another result */
	rq.variant = OPTPULL_GZIP;
	ck_assert_msg(optpull_get(op, &gz, &rq, 60, &err) == RS_OK, "%s", err.msg);
	ck_assert_str_ne(gz.digest, res.digest);
	optpull_free(op);
	/* a new instance finds both on disk without optimizing (no temp dirs left) */
	ck_assert_int_eq(optpull_new(&op, &e.cfg, e.bs, &e.ops, &err), RS_OK);
	rq.variant = OPTPULL_ZSTD;
	ck_assert_int_eq(optpull_lookup(op, &again, &rq, &err), RS_OK);
	ck_assert_str_eq(again.digest, res.digest);
	ck_assert_int_eq(optpull_get(op, &again, &rq, 0, &err), RS_OK);
	ck_assert_str_eq(again.digest, res.digest);
	/* a result whose layer was evicted is not used: it is optimized again */
	char lpath[400];
	snprintf(lpath, sizeof(lpath), "%s/blobs/sha256/%.2s/%s", fixture_dir(), ld + 7, ld + 7);
	ck_assert_int_eq(unlink(lpath), 0);
	ck_assert_int_eq(optpull_lookup(op, &again, &rq, &err), RS_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "no longer in the store"));
	ck_assert_msg(optpull_get(op, &again, &rq, 60, &err) == RS_OK, "%s", err.msg);
	ck_assert_str_eq(again.digest, res.digest); /* deterministic output */
	ck_assert(store_has(e.bs, STORE_CACHE, STORE_BLOB, ld));
	optpull_free(op);
	ck_assert_int_eq(atomic_load(&e.fake.blob_calls), 0);
	char tmp[300];
	snprintf(tmp, sizeof(tmp), "%s/tmp", fixture_dir());
	DIR *dd = opendir(tmp);
	ck_assert_ptr_nonnull(dd);
	struct dirent *de;
	while ((de = readdir(dd)))
		ck_assert_msg(strncmp(de->d_name, "opt-", 4) != 0, "left behind: %s", de->d_name);
	closedir(dd);
	env_close(&e);
}
END_TEST

struct caller {
	struct optpull *op;
	const struct optpull_request *rq;
	enum rs_code rc;
	struct rs_err err;
};

static void *call_get(void *arg)
{
	struct caller *c = arg;
	struct optpull_result res;
	c->rc = optpull_get(c->op, &res, c->rq, 30, &c->err);
	return NULL;
}

START_TEST(concurrent_failures_share_one_job_and_are_remembered)
{
	struct env e = {0};
	env_open(&e);
	e.fake.sleep_ms = 300;
	char src[DIGEST_STR_SIZE];
	make_image(e.bs, false, src); /* the layer is missing: fetched, and the fetch fails */
	struct optpull *op = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(optpull_new(&op, &e.cfg, e.bs, &e.ops, &err), RS_OK);
	struct optpull_request rq = {0, "library/x", src, &e.cfg.optimize.policies[0], OPTPULL_ZSTD};
	struct caller c[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		c[i] = (struct caller){op, &rq, RS_OK, {0}};
		ck_assert_int_eq(pthread_create(&th[i], NULL, call_get, &c[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ck_assert_int_eq(c[i].rc, RS_UPSTREAM);
		ck_assert_msg(strstr(c[i].err.msg, "fake upstream is down"), "%s", c[i].err.msg);
	}
	ck_assert_int_eq(atomic_load(&e.fake.blob_calls), 1);
	/* remembered: no new attempt */
	struct optpull_result res;
	ck_assert_int_eq(optpull_get(op, &res, &rq, 30, &err), RS_UPSTREAM);
	ck_assert_int_eq(atomic_load(&e.fake.blob_calls), 1);
	optpull_free(op);
	env_close(&e);
}
END_TEST

START_TEST(sync_wait_gives_up_and_the_job_goes_on)
{
	struct env e = {0};
	env_open(&e);
	e.fake.sleep_ms = 1500;
	char src[DIGEST_STR_SIZE];
	make_image(e.bs, false, src);
	struct optpull *op = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(optpull_new(&op, &e.cfg, e.bs, &e.ops, &err), RS_OK);
	struct optpull_request rq = {0, "library/x", src, &e.cfg.optimize.policies[0], OPTPULL_GZIP};
	struct optpull_result res;
	ck_assert_int_eq(optpull_get(op, &res, &rq, 0, &err), RS_TIMEOUT);
	ck_assert_ptr_nonnull(strstr(err.msg, "sync_timeout_s"));
	/* the background job ends (with the fake's failure), which a later wait sees */
	ck_assert_int_eq(optpull_get(op, &res, &rq, 30, &err), RS_UPSTREAM);
	ck_assert_int_eq(atomic_load(&e.fake.blob_calls), 1);
	optpull_free(op);
	env_close(&e);
}
END_TEST

static Suite *optpull_suite(void)
{
	Suite *s = suite_create("optpull");
	TCase *t = tcase_create("core");
	tcase_add_checked_fixture(t, fixture_tmpdir_setup, fixture_tmpdir_teardown);
	tcase_set_timeout(t, 120);
	tcase_add_test(t, docker_20_is_legacy_and_gets_gzip);
	tcase_add_test(t, modern_clients_get_zstd);
	tcase_add_test(t, old_containerd_gets_gzip);
	tcase_add_test(t, unknown_clients_follow_the_setting);
	tcase_add_test(t, fixed_compression_overrides_the_client);
	tcase_add_test(t, default_config_optimizes_every_docker_io_repository);
	tcase_add_test(t, policies_match_by_glob_and_library_short_name);
	tcase_add_test(t, bad_optimize_keys_are_refused_with_their_path);
	tcase_add_test(t, keys_differ_by_variant_and_policy);
	tcase_add_test(t, optimizes_persists_and_finds_the_result_again);
	tcase_add_test(t, concurrent_failures_share_one_job_and_are_remembered);
	tcase_add_test(t, sync_wait_gives_up_and_the_job_goes_on);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	return fixture_run_suite(optpull_suite());
}
