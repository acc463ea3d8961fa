/* test_gate: the push gate's approved base references and pull option,
 * its stored report (JSON shape, save and load), gate_check over a real
 * store (findings named by platform) and the memo of repeated checks.
 * Reference splitting, the image platform, "images" / "enforce_on_pull"
 * loading, and gate_resolve_base against a tiny in-process registry (a fake
 * peer): an index resolves to the checked platform's layer chain, results
 * are cached, and failures name the reference. */
#include "config.h"
#include "digest.h"
#include "fixture.h"
#include "gate.h"
#include "gate_policy.h"
#include "store_fixture.h"
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
	char *os = NULL, *arch = NULL, *variant = NULL;
	struct rs_err err = {0};
	const char *c = "{\"os\":\"linux\",\"architecture\":\"arm64\",\"variant\":\"v8\",\"config\":{}}";
	ck_assert_int_eq(gate_image_platform(&os, &arch, &variant, c, strlen(c), &err), RS_OK);
	ck_assert_str_eq(os, "linux");
	ck_assert_str_eq(arch, "arm64");
	ck_assert_str_eq(variant, "v8");
	free(os);
	free(arch);
	free(variant);
	c = "{\"architecture\":\"amd64\"}";
	ck_assert_int_eq(gate_image_platform(&os, &arch, &variant, c, strlen(c), &err), RS_OK);
	ck_assert_str_eq(os, "");
	ck_assert_str_eq(variant, "");
	free(os);
	free(arch);
	free(variant);
	ck_assert_int_eq(gate_image_platform(&os, &arch, &variant, "{", 1, &err), RS_BAD_INPUT);
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

/* ---- the stored report ---- */

static void add_finding(struct gate_report *r, enum gate_action a, const char *rule, const char *text,
			const char *platform, size_t layer, const char *ld, const char *path)
{
	if (!r->items)
		r->items = calloc(GATE_FINDINGS_MAX, sizeof(*r->items));
	ck_assert_ptr_nonnull(r->items);
	struct gate_finding *f = &r->items[r->count++];
	f->action = a;
	f->rule = rule;
	f->text = strdup(text);
	f->platform = platform ? strdup(platform) : NULL;
	f->layer = layer;
	f->layer_digest = ld ? strdup(ld) : NULL;
	f->path = path ? strdup(path) : NULL;
	if (a == GATE_DENY)
		r->denies++;
	else
		r->warns++;
}

START_TEST(report_json_lists_findings_with_their_place)
{
	struct gate_report r = {0};
	add_finding(&r, GATE_DENY, "secrets", "platform linux/arm64: layer 1 of 2 (" L1 ") root/.ssh/id_rsa: \"key\"",
		    "linux/arm64", 1, L1, "root/.ssh/id_rsa");
	add_finding(&r, GATE_WARN, "required_labels", "image lacks label a.b", NULL, 0, NULL, NULL);
	r.layers = 2;
	r.compressed_bytes = 300;
	r.uncompressed_bytes = 900;
	r.scanned = true;
	r.dropped = 3;
	struct gate_outcome o = {.count = 1};
	snprintf(o.pushed[0].tag, sizeof(o.pushed[0].tag), "v1-slim");
	snprintf(o.pushed[0].digest, sizeof(o.pushed[0].digest), "%s", L2);
	o.pushed[0].optimized = true;
	o.optimizer_report = strdup("{\"totals\":{\"size_after\":7}}\n");
	struct gate_report_meta m = {"team/app", "v1", L3, "push-original-and-optimized", "denied", 86400, &o};
	char *out = NULL;
	size_t len = 0;
	struct rs_err err = {0};
	ck_assert_int_eq(gate_report_json(&out, &len, &r, &m, &err), RS_OK);
	ck_assert_uint_eq(len, strlen(out));
	json_error_t je;
	json_t *doc = json_loadb(out, len, 0, &je);
	ck_assert_msg(doc != NULL, "not JSON (%s): %s", je.text, out);
	ck_assert_str_eq(json_string_value(json_object_get(doc, "kind")), "push-policy");
	ck_assert_str_eq(json_string_value(json_object_get(doc, "repository")), "team/app");
	ck_assert_str_eq(json_string_value(json_object_get(doc, "digest")), L3);
	ck_assert_str_eq(json_string_value(json_object_get(doc, "verdict")), "denied");
	ck_assert_str_eq(json_string_value(json_object_get(doc, "checked_at")), "1970-01-02T00:00:00Z");
	ck_assert_int_eq(json_integer_value(json_object_get(doc, "denies")), 1);
	ck_assert_int_eq(json_integer_value(json_object_get(doc, "warnings")), 1);
	ck_assert_int_eq(json_integer_value(json_object_get(doc, "findings_not_listed")), 3);
	json_t *img = json_object_get(doc, "image");
	ck_assert_int_eq(json_integer_value(json_object_get(img, "uncompressed_bytes")), 900);
	json_t *f = json_object_get(doc, "findings");
	ck_assert_uint_eq(json_array_size(f), 2);
	json_t *f0 = json_array_get(f, 0), *f1 = json_array_get(f, 1);
	ck_assert_str_eq(json_string_value(json_object_get(f0, "action")), "deny");
	ck_assert_str_eq(json_string_value(json_object_get(f0, "platform")), "linux/arm64");
	ck_assert_int_eq(json_integer_value(json_object_get(f0, "layer")), 1);
	ck_assert_str_eq(json_string_value(json_object_get(f0, "layer_digest")), L1);
	ck_assert_str_eq(json_string_value(json_object_get(f0, "path")), "root/.ssh/id_rsa");
	ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(f0, "message")), "id_rsa: \"key\""));
	ck_assert_str_eq(json_string_value(json_object_get(f1, "rule")), "required_labels");
	ck_assert(json_is_null(json_object_get(f1, "layer")));
	ck_assert(json_is_null(json_object_get(f1, "path")));
	json_t *up = json_array_get(json_object_get(doc, "upstream"), 0);
	ck_assert_str_eq(json_string_value(json_object_get(up, "tag")), "v1-slim");
	ck_assert(json_is_true(json_object_get(up, "optimized")));
	json_t *opt = json_object_get(doc, "optimization");
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(opt, "totals"), "size_after")), 7);
	json_decref(doc);
	free(out);
	gate_outcome_dispose(&o);
	gate_report_dispose(&r);
}
END_TEST

START_TEST(report_json_without_scan_or_upstream_has_nulls)
{
	struct gate_report r = {0};
	struct gate_report_meta m = {"a", "sha256:x", L3, "check-only", "accepted", 0, NULL};
	char *out = NULL;
	size_t len = 0;
	struct rs_err err = {0};
	ck_assert_int_eq(gate_report_json(&out, &len, &r, &m, &err), RS_OK);
	json_t *doc = json_loadb(out, len, 0, NULL);
	ck_assert_ptr_nonnull(doc);
	ck_assert(json_is_null(json_object_get(json_object_get(doc, "image"), "uncompressed_bytes")));
	ck_assert_uint_eq(json_array_size(json_object_get(doc, "upstream")), 0);
	ck_assert_uint_eq(json_array_size(json_object_get(doc, "findings")), 0);
	ck_assert(json_is_null(json_object_get(doc, "optimization")));
	json_decref(doc);
	free(out);
}
END_TEST

START_TEST(report_saved_and_loaded_by_repository_and_digest)
{
	struct store *dir = store_fixture_store(0);
	struct rs_err err = {0};
	const char *doc = "{\"kind\":\"push-policy\"}\n";
	ck_assert_int_eq(gate_report_save(dir, "team/app", L1, doc, strlen(doc), &err), RS_OK);
	char *out = NULL;
	size_t len = 0;
	ck_assert_int_eq(gate_report_load(dir, "team/app", L1, &out, &len, &err), RS_OK);
	ck_assert_str_eq(out, doc);
	free(out);
	out = NULL;
	ck_assert_int_eq(gate_report_load(dir, "team/other", L1, &out, &len, &err), RS_NOT_FOUND);
	ck_assert_str_eq(err.msg, "no policy report for team/other@" L1);
	ck_assert_int_eq(gate_report_load(dir, "team/app", "sha256:zz", &out, &len, &err), RS_DIGEST_INVALID);
	ck_assert_str_eq(err.msg, "invalid digest 'sha256:zz'");
	ck_assert_ptr_null(out);
	store_free(dir);
}
END_TEST

/* ---- gate_check and its memo over a real store ---- */

static void put_blob(struct store *bs, const char *body, char digest[DIGEST_STR_SIZE])
{
	struct rs_err err = {0};
	struct store_writer *w = NULL;
	digest_buffer(digest, body, strlen(body));
	ck_assert_int_eq(store_writer_new(&w, bs, STORE_CACHE, STORE_BLOB, digest, (int64_t)strlen(body), &err), RS_OK);
	ck_assert_int_eq(store_writer_write(w, body, strlen(body), &err), RS_OK);
	ck_assert_int_eq(store_writer_commit(w, &err), RS_OK);
}

/* A layerless image running as root, without labels, for linux/arm64/v8;
 * *digest receives its manifest's digest. */
static void put_root_image(struct store *bs, char digest[DIGEST_STR_SIZE])
{
	char cd[DIGEST_STR_SIZE], man[512];
	const char *cfgdoc = "{\"architecture\":\"arm64\",\"variant\":\"v8\",\"os\":\"linux\",\"config\":{},"
			     "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
	put_blob(bs, cfgdoc, cd);
	snprintf(man, sizeof(man),
		 "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
		 "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"%s\",\"size\":%zu},"
		 "\"layers\":[]}",
		 cd, strlen(cfgdoc));
	digest_buffer(digest, man, strlen(man));
	struct rs_err err = {0};
	ck_assert_int_eq(store_manifest_put(bs, STORE_CACHE, digest, "application/vnd.oci.image.manifest.v1+json", man,
						strlen(man), &err),
			 RS_OK);
}

START_TEST(check_names_platform_of_a_manifest_by_digest)
{
	struct store *bs = store_fixture_store(0);
	char d[DIGEST_STR_SIZE];
	put_root_image(bs, d);
	char *label = "org.opencontainers.image.source";
	struct rs_gate_policy p = {.non_root = GATE_DENY, .required_labels = {.items = &label, .count = 1, .action = GATE_WARN}};
	struct gate_report r = {0};
	struct rs_err err = {0};
	ck_assert_int_eq(gate_check(&r, &p, bs, STORE_CACHE, d, 0, NULL, &err), RS_OK);
	ck_assert_uint_eq(r.denies, 1);
	ck_assert_uint_eq(r.warns, 1);
	ck_assert_str_eq(r.items[0].rule, "non_root");
	ck_assert_ptr_null(r.items[0].platform);
	ck_assert_str_eq(r.items[0].text, "image runs as root (config.User is \"\"), set USER to a non-root user");
	ck_assert(!r.scanned);
	gate_report_dispose(&r);
	ck_assert_int_eq(gate_check(&r, &p, bs, STORE_CACHE, d, GATE_CHECK_NAME_PLATFORM, NULL, &err), RS_OK);
	ck_assert_str_eq(r.items[0].platform, "linux/arm64/v8");
	ck_assert_str_eq(r.items[0].text,
			 "platform linux/arm64/v8: image runs as root (config.User is \"\"), set USER to a non-root user");
	ck_assert_str_eq(r.items[1].text, "platform linux/arm64/v8: image lacks label org.opencontainers.image.source");
	gate_report_dispose(&r);
	store_free(bs);
}
END_TEST

/* An index: each image is checked under the platform of its entry; an index
 * inside it is neither checked nor parsed (it only has to look like one). */
START_TEST(check_walks_the_images_of_an_index_not_nested_ones)
{
	struct store *bs = store_fixture_store(0);
	struct rs_err err = {0};
	char d[DIGEST_STR_SIZE], nested[DIGEST_STR_SIZE], idx[DIGEST_STR_SIZE], doc[1024];
	put_root_image(bs, d);
	static const char odd[] = "{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":5}";
	digest_buffer(nested, odd, strlen(odd));
	ck_assert_int_eq(store_manifest_put(bs, STORE_CACHE, nested, "application/vnd.oci.image.index.v1+json", odd, strlen(odd),
						&err),
			 RS_OK);
	snprintf(doc, sizeof(doc),
		 "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":["
		 "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"%s\",\"size\":1,"
		 "\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\",\"variant\":\"v8\"}},"
		 "{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"digest\":\"%s\",\"size\":1}]}",
		 d, nested);
	digest_buffer(idx, doc, strlen(doc));
	ck_assert_int_eq(store_manifest_put(bs, STORE_CACHE, idx, "application/vnd.oci.image.index.v1+json", doc, strlen(doc),
						&err),
			 RS_OK);
	struct rs_gate_policy p = {.non_root = GATE_DENY};
	struct gate_report r = {0};
	ck_assert_msg(gate_check(&r, &p, bs, STORE_CACHE, idx, 0, NULL, &err) == RS_OK, "%s", err.msg);
	ck_assert_uint_eq(r.count, 1);
	ck_assert_str_eq(r.items[0].platform, "linux/arm64/v8");
	char want[300];
	snprintf(want, sizeof(want),
		 "platform linux/arm64/v8 (%s): image runs as root (config.User is \"\"), set USER to a non-root user", d);
	ck_assert_str_eq(r.items[0].text, want);
	gate_report_dispose(&r);
	/* an entry that is not in the store fails the check */
	store_remove(bs, STORE_CACHE, STORE_MANIFEST, nested);
	ck_assert_int_eq(gate_check(&r, &p, bs, STORE_CACHE, idx, 0, NULL, &err), RS_NOT_FOUND);
	gate_report_dispose(&r);
	store_free(bs);
}
END_TEST

START_TEST(memo_answers_a_repeated_check_from_memory)
{
	struct store *bs = store_fixture_store(0);
	char d[DIGEST_STR_SIZE];
	put_root_image(bs, d);
	struct rs_gate_policy p = {.non_root = GATE_WARN}, q = {.non_root = GATE_DENY};
	struct gate_memo *m = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(gate_memo_new(&m, &err), RS_OK);
	struct gate_report r = {0};
	bool hit = true;
	ck_assert_int_eq(gate_check_memo(m, &hit, &r, &p, bs, STORE_CACHE, d, 0, NULL, &err), RS_OK);
	ck_assert(!hit);
	ck_assert_uint_eq(r.warns, 1);
	gate_report_dispose(&r);
	/* the manifest is gone from the store: only the memo can answer */
	store_remove(bs, STORE_CACHE, STORE_MANIFEST, d);
	ck_assert_int_eq(gate_check_memo(m, &hit, &r, &p, bs, STORE_CACHE, d, 0, NULL, &err), RS_OK);
	ck_assert(hit);
	ck_assert_uint_eq(r.warns, 1);
	ck_assert_uint_eq(r.count, 1);
	ck_assert_str_eq(r.items[0].rule, "non_root");
	ck_assert_str_eq(r.items[0].text, "image runs as root (config.User is \"\"), set USER to a non-root user");
	gate_report_dispose(&r);
	/* another policy or other flags are other checks */
	ck_assert_int_eq(gate_check_memo(m, &hit, &r, &q, bs, STORE_CACHE, d, 0, NULL, &err), RS_NOT_FOUND);
	ck_assert(!hit);
	gate_report_dispose(&r);
	ck_assert_int_eq(gate_check_memo(m, &hit, &r, &p, bs, STORE_CACHE, d, GATE_CHECK_NAME_PLATFORM, NULL, &err), RS_NOT_FOUND);
	ck_assert(!hit);
	gate_report_dispose(&r);
	gate_memo_free(m);
	store_free(bs);
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
	TCase *rt = tcase_create("report");
	tcase_add_checked_fixture(rt, store_fixture_setup, store_fixture_teardown);
	tcase_add_test(rt, report_json_lists_findings_with_their_place);
	tcase_add_test(rt, report_json_without_scan_or_upstream_has_nulls);
	tcase_add_test(rt, report_saved_and_loaded_by_repository_and_digest);
	suite_add_tcase(s, rt);
	TCase *ct = tcase_create("check");
	tcase_add_checked_fixture(ct, store_fixture_setup, store_fixture_teardown);
	tcase_add_test(ct, check_names_platform_of_a_manifest_by_digest);
	tcase_add_test(ct, check_walks_the_images_of_an_index_not_nested_ones);
	tcase_add_test(ct, memo_answers_a_repeated_check_from_memory);
	suite_add_tcase(s, ct);
	return s;
}

int main(void)
{
	return fixture_run_suite(suite());
}
