/* test_gate: the push gate's approved base references and pull option.
 * Reference splitting, the image platform, "images" / "enforce_on_pull"
 * loading, and gate_resolve_base against a tiny in-process registry (a fake
 * peer): an index resolves to the checked platform's layer chain, results
 * are cached, and failures name the reference. */
#include "config.h"
#include "digest.h"
#include "gate.h"
#include "gate_policy.h"
#include "upstream.h"

#include <arpa/inet.h>
#include <check.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define L1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define L2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define L3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"
#define CFGD "sha256:4444444444444444444444444444444444444444444444444444444444444444"

static char amd64[1024], arm64[1024], indexbody[2048], amd_d[DIGEST_STR_SIZE], arm_d[DIGEST_STR_SIZE];
static int requests;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void build_bodies(void)
{
	snprintf(amd64, sizeof(amd64),
		 "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
		 "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"%s\",\"size\":2},"
		 "\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"%s\",\"size\":1},"
		 "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"%s\",\"size\":1}]}",
		 CFGD, L1, L2);
	snprintf(arm64, sizeof(arm64),
		 "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
		 "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"%s\",\"size\":2},"
		 "\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"%s\",\"size\":1}]}",
		 CFGD, L3);
	digest_buffer(amd_d, amd64, strlen(amd64));
	digest_buffer(arm_d, arm64, strlen(arm64));
	snprintf(indexbody, sizeof(indexbody),
		 "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":["
		 "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"%s\",\"size\":%zu,"
		 "\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\"}},"
		 "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"%s\",\"size\":%zu,"
		 "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}]}",
		 arm_d, strlen(arm64), amd_d, strlen(amd64));
}

static enum MHD_Result send_body(struct MHD_Connection *c, unsigned status, const char *type, const char *body)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
	MHD_add_response_header(r, "Content-Type", type);
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
			       const char *version, const char *data, size_t *size, void **state)
{
	(void)cls, (void)method, (void)version, (void)data, (void)size, (void)state;
	pthread_mutex_lock(&mu);
	requests++;
	pthread_mutex_unlock(&mu);
	const char *p = "/v2/base/img/manifests/";
	if (strcmp(url, "/v2/") == 0)
		return send_body(c, 200, "application/json", "{}");
	if (strncmp(url, p, strlen(p)) == 0) {
		const char *ref = url + strlen(p);
		if (strcmp(ref, "1") == 0)
			return send_body(c, 200, "application/vnd.oci.image.index.v1+json", indexbody);
		if (strcmp(ref, amd_d) == 0)
			return send_body(c, 200, "application/vnd.oci.image.manifest.v1+json", amd64);
		if (strcmp(ref, arm_d) == 0)
			return send_body(c, 200, "application/vnd.oci.image.manifest.v1+json", arm64);
	}
	return send_body(c, 404, "application/json", "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"no\"}]}");
}

static struct MHD_Daemon *daemon_;
static struct rs_config cfg;
static struct rs_upstream_config upc;
static char url[64];

static void setup(void)
{
	build_bodies();
	struct sockaddr_in sa = {.sin_family = AF_INET};
	ck_assert_int_eq(inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr), 1);
	daemon_ = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL,
				   handler, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_END);
	ck_assert_ptr_nonnull(daemon_);
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", (unsigned)info->port);
	struct rs_err err = {0};
	ck_assert_int_eq(upstream_global_init(&err), RS_OK);
	memset(&cfg, 0, sizeof(cfg));
	memset(&upc, 0, sizeof(upc));
	upc.name = "fake";
	upc.url = url;
	upc.timeout_s = 5;
	upc.tag_ttl_s = 60;
	cfg.upstreams = &upc;
	cfg.upstream_count = 1;
	requests = 0;
}

static void teardown(void)
{
	MHD_stop_daemon(daemon_);
	upstream_global_cleanup();
}

static void free_chain(char **l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(l[i]);
	free(l);
}

START_TEST(splits_references)
{
	char n[256], r[136];
	ck_assert(gate_base_ref_split("docker.io/library/debian:bookworm", n, r));
	ck_assert_str_eq(n, "docker.io/library/debian");
	ck_assert_str_eq(r, "bookworm");
	ck_assert(gate_base_ref_split("127.0.0.1:5000/base/img", n, r));
	ck_assert_str_eq(n, "127.0.0.1:5000/base/img");
	ck_assert_str_eq(r, "latest");
	ck_assert(gate_base_ref_split("base/img:1@" L1, n, r));
	ck_assert_str_eq(n, "base/img");
	ck_assert_str_eq(r, L1);
	ck_assert(!gate_base_ref_split("base/img:bad tag", n, r));
	ck_assert(!gate_base_ref_split("base/img@sha256:12", n, r));
	ck_assert(!gate_base_ref_split(":1", n, r));
	ck_assert(!gate_base_ref_split("base/img:", n, r));
}
END_TEST

START_TEST(reads_image_platform)
{
	char *os = NULL, *arch = NULL;
	struct rs_err err = {0};
	const char *c = "{\"os\":\"linux\",\"architecture\":\"arm64\",\"config\":{}}";
	ck_assert_int_eq(gate_image_platform(&os, &arch, c, strlen(c), &err), RS_OK);
	ck_assert_str_eq(os, "linux");
	ck_assert_str_eq(arch, "arm64");
	free(os);
	free(arch);
	ck_assert_int_eq(gate_image_platform(&os, &arch, "{", 1, &err), RS_BAD_INPUT);
}
END_TEST

START_TEST(loads_images_and_enforce_on_pull)
{
	const char *doc = "[{\"repositories\":[\"prod/*\"],\"enforce_on_pull\":true,\"rules\":{\"allowed_bases\":"
			  "{\"images\":[\"fake/base/img:1\"],\"bases\":[[\"" L1 "\"]],\"action\":\"deny\"}}}]";
	json_error_t je;
	json_t *v = json_loads(doc, 0, &je);
	ck_assert_ptr_nonnull(v);
	struct rs_gate_policy *p = NULL;
	size_t n = 0;
	struct rs_err err = {0};
	ck_assert_int_eq(gate_policies_load(&p, &n, "t.json", "push.policies", v, &err), RS_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert(p[0].enforce_on_pull);
	ck_assert_uint_eq(p[0].allowed_base_image_count, 1);
	ck_assert_str_eq(p[0].allowed_base_images[0], "fake/base/img:1");
	ck_assert_uint_eq(p[0].allowed_base_count, 1);
	json_t *out = gate_policies_to_json(p, n);
	ck_assert_ptr_nonnull(out);
	const json_t *ab = json_object_get(json_object_get(json_array_get(out, 0), "rules"), "allowed_bases");
	ck_assert_str_eq(json_string_value(json_array_get(json_object_get(ab, "images"), 0)), "fake/base/img:1");
	ck_assert(json_is_true(json_object_get(json_array_get(out, 0), "enforce_on_pull")));
	json_decref(out);
	gate_policies_free(p, n);
	json_decref(v);
}
END_TEST

START_TEST(resolves_index_by_platform_and_caches)
{
	struct gate_resolver *res = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(gate_resolver_new(&res, &cfg, &err), RS_OK);
	char **l = NULL;
	size_t n = 0;
	ck_assert_msg(gate_resolve_base(res, "fake/base/img:1", "linux", "amd64", &l, &n, &err) == RS_OK, "%s", err.msg);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(l[0], L1);
	ck_assert_str_eq(l[1], L2);
	free_chain(l, n);
	pthread_mutex_lock(&mu);
	int after_first = requests;
	pthread_mutex_unlock(&mu);
	ck_assert_int_eq(gate_resolve_base(res, "fake/base/img:1", "linux", "amd64", &l, &n, &err), RS_OK);
	ck_assert_uint_eq(n, 2);
	free_chain(l, n);
	pthread_mutex_lock(&mu);
	ck_assert_int_eq(requests, after_first); /* served from the cache */
	pthread_mutex_unlock(&mu);
	ck_assert_int_eq(gate_resolve_base(res, "fake/base/img:1", "linux", "arm64", &l, &n, &err), RS_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(l[0], L3);
	free_chain(l, n);
	gate_resolver_free(res);
}
END_TEST

START_TEST(refuses_missing_platform_and_unknown_image)
{
	struct gate_resolver *res = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(gate_resolver_new(&res, &cfg, &err), RS_OK);
	char **l = NULL;
	size_t n = 0;
	ck_assert_int_eq(gate_resolve_base(res, "fake/base/img:1", "linux", "s390x", &l, &n, &err), RS_NOT_FOUND);
	ck_assert_msg(strstr(err.msg, "no image for platform linux/s390x"), "%s", err.msg);
	rs_err_clear(&err);
	ck_assert_int_eq(gate_resolve_base(res, "fake/base/other:2", "linux", "amd64", &l, &n, &err), RS_NOT_FOUND);
	ck_assert_msg(strstr(err.msg, "base/other:2") && strstr(err.msg, "404"), "%s", err.msg);
	gate_resolver_free(res);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("gate");
	TCase *t = tcase_create("bases");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_set_timeout(t, 30);
	tcase_add_test(t, splits_references);
	tcase_add_test(t, reads_image_platform);
	tcase_add_test(t, loads_images_and_enforce_on_pull);
	tcase_add_test(t, resolves_index_by_platform_and_caches);
	tcase_add_test(t, refuses_missing_platform_and_unknown_image);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *r = srunner_create(suite());
	srunner_run_all(r, CK_NORMAL);
	int failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
