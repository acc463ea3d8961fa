/* test_image: manifest, index and config documents: parsing (OCI and
 * Docker flavours, with and without mediaType), hostile JSON (wrong types,
 * duplicate keys, NUL bytes, deep nesting, huge counts), validation against
 * digests and media types, deterministic writing, the v1.1 subject and
 * artifactType fields, and the config rewrite. */
#include "image.h"

#include "fixture.h"
#include "imagejson.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"

static const char *oci_manifest =
	"{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
	"\"digest\":\"" D1 "\",\"size\":100},\"layers\":[{\"mediaType\":"
	"\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"" D2 "\",\"size\":200},"
	"{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+zstd\",\"digest\":\"" D3 "\",\"size\":300}],"
	"\"annotations\":{\"z\":\"last\",\"a\":\"first\"}}";

static const char *docker_manifest =
	"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\","
	"\"config\":{\"mediaType\":\"application/vnd.docker.container.image.v1+json\",\"digest\":\"" D1 "\","
	"\"size\":7},\"layers\":[{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\","
	"\"digest\":\"" D2 "\",\"size\":9}]}";

static enum rs_code parse_m(struct imagejson_manifest *m, const char *s, struct rs_err *err)
{
	return imagejson_parse_manifest(m, s, strlen(s), "manifest", err);
}

START_TEST(parses_oci_manifest_without_media_type)
{
	struct imagejson_manifest m;
	struct rs_err err = {0};
	ck_assert_int_eq(parse_m(&m, oci_manifest, &err), RS_OK);
	ck_assert_ptr_null(m.media_type);
	ck_assert_str_eq(m.config.digest, D1);
	ck_assert_uint_eq(m.layer_count, 2);
	ck_assert_uint_eq(m.layers[1].size, 300);
	ck_assert_str_eq(imagejson_kv_get(m.annotations, m.annotation_count, "z"), "last");
	ck_assert_int_eq(image_validate_manifest(&m, "manifest", &err), RS_OK);
	enum imagejson_kind k;
	ck_assert_int_eq(imagejson_sniff(&k, oci_manifest, strlen(oci_manifest), "m", &err), RS_OK);
	ck_assert_int_eq(k, IMAGEJSON_MANIFEST);
	imagejson_manifest_dispose(&m);
}
END_TEST

START_TEST(parses_docker_manifest_and_index)
{
	struct imagejson_manifest m;
	struct rs_err err = {0};
	ck_assert_int_eq(parse_m(&m, docker_manifest, &err), RS_OK);
	ck_assert_str_eq(m.media_type, IMAGE_MT_DOCKER_MANIFEST);
	ck_assert_int_eq(image_validate_manifest(&m, "manifest", &err), RS_OK);
	imagejson_manifest_dispose(&m);
	const char *idx = "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.docker.distribution.manifest.list.v2+json\","
			  "\"manifests\":[{\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\",\"digest\":\"" D1
			  "\",\"size\":5,\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\"}}]}";
	struct imagejson_index ix;
	ck_assert_int_eq(imagejson_parse_index(&ix, idx, strlen(idx), "index", &err), RS_OK);
	ck_assert_uint_eq(ix.manifest_count, 1);
	ck_assert_str_eq(ix.manifests[0].variant, "v8");
	ck_assert_int_eq(image_validate_index(&ix, "index", &err), RS_OK);
	enum imagejson_kind k;
	ck_assert_int_eq(imagejson_sniff(&k, idx, strlen(idx), "i", &err), RS_OK);
	ck_assert_int_eq(k, IMAGEJSON_INDEX);
	imagejson_index_dispose(&ix);
}
END_TEST

static void expect_bad(const char *json, const char *msg)
{
	struct imagejson_manifest m;
	struct rs_err err = {0};
	ck_assert_int_eq(parse_m(&m, json, &err), RS_BAD_INPUT);
	ck_assert_msg(strstr(err.msg, msg) != NULL, "'%s' lacks '%s'", err.msg, msg);
	ck_assert_ptr_null(m.layers);
}

START_TEST(rejects_hostile_manifests)
{
	expect_bad("[1,2]", "manifest: expected a JSON object, got an array");
	expect_bad("{\"schemaVersion\":1}", "manifest: schemaVersion: expected 2, got 1");
	expect_bad("{\"schemaVersion\":2,\"config\":{\"digest\":\"" D1 "\",\"size\":\"7\"},\"layers\":[]}",
		   "manifest: config.size: expected a non-negative integer, got a string");
	expect_bad("{\"schemaVersion\":2,\"config\":{\"digest\":\"" D1 "\",\"size\":-1},\"layers\":[]}",
		   "config.size: expected a non-negative integer");
	expect_bad("{\"schemaVersion\":2,\"config\":{\"digest\":\"" D1 "\",\"size\":1},\"layers\":[{\"digest\":5,\"size\":1}]}",
		   "manifest: layers[0].digest: expected a string, got an integer");
	expect_bad("{\"schemaVersion\":2,\"config\":{\"digest\":\"" D1 "\",\"size\":1},\"layers\":{}}",
		   "manifest: layers: expected an array, got an object");
	expect_bad("{\"schemaVersion\":2,\"schemaVersion\":2}", "duplicate");
	expect_bad("{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:\\u0000\",\"size\":1},\"layers\":[]}",
		   "is not allowed");
	expect_bad("{\"schemaVersion\":2,\"config\":{\"digest\":\"" D1 "\",\"size\":1},\"layers\":[],"
		   "\"annotations\":{\"a\":1}}",
		   "manifest: annotations.a: expected a string, got an integer");
	expect_bad("{\"schemaVersion\":2,", "invalid JSON");
	expect_bad("", "invalid JSON");
	/* deep nesting is refused by the parser, not by the stack */
	size_t n = 100000;
	char *deep = malloc(2 * n + 1);
	memset(deep, '[', n);
	memset(deep + n, ']', n);
	deep[2 * n] = '\0';
	expect_bad(deep, "invalid JSON");
	free(deep);
}
END_TEST

START_TEST(rejects_more_layers_than_the_limit)
{
	size_t n = 1100;
	size_t cap = 200 + n * 120;
	char *s = malloc(cap);
	size_t o = (size_t)snprintf(s, cap, "{\"schemaVersion\":2,\"config\":{\"digest\":\"%s\",\"size\":1},\"layers\":[", D1);
	for (size_t i = 0; i < n; i++)
		o += (size_t)snprintf(s + o, cap - o, "%s{\"digest\":\"%s\",\"size\":1}", i ? "," : "", D2);
	snprintf(s + o, cap - o, "]}");
	expect_bad(s, "layers: 1100 layers, limit is 1024 (RS_LIMIT_IMAGE_LAYERS_MAX)");
	free(s);
}
END_TEST

START_TEST(validation_names_bad_digests_and_media_types)
{
	struct imagejson_manifest m;
	struct rs_err err = {0};
	char buf[1024];
	snprintf(buf, sizeof(buf),
		 "{\"schemaVersion\":2,\"config\":{\"digest\":\"%s\",\"size\":1},\"layers\":[{\"mediaType\":\"%s\","
		 "\"digest\":\"%s\",\"size\":1}]}",
		 D1, "application/vnd.oci.image.layer.v1.tar+lz4", D2);
	ck_assert_int_eq(parse_m(&m, buf, &err), RS_OK);
	ck_assert_int_eq(image_validate_manifest(&m, "manifest x", &err), RS_UNSUPPORTED);
	ck_assert_ptr_nonnull(strstr(err.msg, "manifest x: layers[0]: "));
	ck_assert_ptr_nonnull(strstr(err.msg, "tar+lz4"));
	imagejson_manifest_dispose(&m);

	snprintf(buf, sizeof(buf),
		 "{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:XYZ\",\"size\":1},\"layers\":[{\"mediaType\":"
		 "\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"%s\",\"size\":1}]}",
		 D2);
	ck_assert_int_eq(parse_m(&m, buf, &err), RS_OK);
	ck_assert_int_eq(image_validate_manifest(&m, "manifest x", &err), RS_DIGEST_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "manifest x: config.digest: "));
	imagejson_manifest_dispose(&m);

	const char *none = "{\"schemaVersion\":2,\"config\":{\"digest\":\"" D1 "\",\"size\":1},\"layers\":[]}";
	ck_assert_int_eq(parse_m(&m, none, &err), RS_OK);
	ck_assert_int_eq(image_validate_manifest(&m, "m", &err), RS_BAD_INPUT);
	ck_assert_str_eq(err.msg, "m: has no layers");
	imagejson_manifest_dispose(&m);
}
END_TEST

START_TEST(config_must_match_layers)
{
	struct imagejson_manifest m;
	struct imagejson_config c;
	struct rs_err err = {0};
	ck_assert_int_eq(parse_m(&m, oci_manifest, &err), RS_OK);
	const char *cfg = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D1
			  "\"]},\"history\":[{\"created_by\":\"a\"},{\"created_by\":\"b\",\"empty_layer\":true}]}";
	ck_assert_int_eq(imagejson_parse_config(&c, cfg, strlen(cfg), "config", &err), RS_OK);
	ck_assert_uint_eq(c.history_count, 2);
	ck_assert(c.history[1].empty_layer);
	bool hist_ok;
	ck_assert_int_eq(image_validate_config(&c, &m, "config", &hist_ok, &err), RS_BAD_INPUT);
	ck_assert_str_eq(err.msg, "config: 1 diff_ids for 2 layers");
	imagejson_config_dispose(&c);
	const char *bad = "{\"rootfs\":{\"diff_ids\":\"x\"}}";
	ck_assert_int_eq(imagejson_parse_config(&c, bad, strlen(bad), "config", &err), RS_BAD_INPUT);
	ck_assert_str_eq(err.msg, "config: rootfs.diff_ids: expected an array, got a string");
	imagejson_manifest_dispose(&m);
}
END_TEST

START_TEST(writes_deterministic_json_with_sorted_annotations)
{
	struct imagejson_manifest m;
	struct rs_err err = {0};
	ck_assert_int_eq(parse_m(&m, oci_manifest, &err), RS_OK);
	char *a, *b;
	size_t la, lb;
	ck_assert_int_eq(imagejson_write_manifest(&a, &la, &m, &err), RS_OK);
	ck_assert_int_eq(imagejson_write_manifest(&b, &lb, &m, &err), RS_OK);
	ck_assert_str_eq(a, b);
	ck_assert_ptr_nonnull(strstr(a, "\"annotations\":{\"a\":\"first\",\"z\":\"last\"}"));
	ck_assert(strncmp(a, "{\"schemaVersion\":2,\"config\":{\"mediaType\":", 41) == 0);
	/* round trip */
	struct imagejson_manifest m2;
	ck_assert_int_eq(parse_m(&m2, a, &err), RS_OK);
	ck_assert_uint_eq(m2.layer_count, 2);
	ck_assert_str_eq(m2.layers[1].digest, D3);
	imagejson_manifest_dispose(&m2);
	free(a);
	free(b);
	imagejson_manifest_dispose(&m);
}
END_TEST

START_TEST(parses_and_writes_subject_and_artifact_type)
{
	/* an oras-style artifact: artifactType, the empty config, a subject */
	static const char *art =
		"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
		"\"artifactType\":\"application/vnd.example.sbom\",\"config\":{\"mediaType\":"
		"\"application/vnd.oci.empty.v1+json\",\"digest\":\"" D1 "\",\"size\":2},\"layers\":[],"
		"\"subject\":{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" D3 "\","
		"\"size\":42},\"annotations\":{\"k\":\"v\"}}";
	struct imagejson_manifest m;
	struct rs_err err = {0};
	ck_assert_int_eq(parse_m(&m, art, &err), RS_OK);
	ck_assert_str_eq(m.artifact_type, "application/vnd.example.sbom");
	ck_assert_ptr_nonnull(m.subject);
	ck_assert_str_eq(m.subject->digest, D3);
	ck_assert_uint_eq(m.subject->size, 42);
	char *out;
	size_t len;
	ck_assert_int_eq(imagejson_write_manifest(&out, &len, &m, &err), RS_OK);
	ck_assert_str_eq(out, art);
	free(out);
	imagejson_manifest_dispose(&m);
	ck_assert_ptr_null(m.subject);

	/* a manifest without them: NULL, and nothing written */
	ck_assert_int_eq(parse_m(&m, oci_manifest, &err), RS_OK);
	ck_assert_ptr_null(m.artifact_type);
	ck_assert_ptr_null(m.subject);
	imagejson_manifest_dispose(&m);

	/* a subject that is not a descriptor is refused, naming it */
	static const char *bad_sub = "{\"schemaVersion\":2,\"config\":{\"digest\":\"" D1 "\",\"size\":2},"
	                             "\"layers\":[],\"subject\":\"" D3 "\"}";
	ck_assert_int_eq(parse_m(&m, bad_sub, &err), RS_BAD_INPUT);
	ck_assert_ptr_nonnull(strstr(err.msg, "subject"));
	static const char *bad_type = "{\"schemaVersion\":2,\"config\":{\"digest\":\"" D1 "\",\"size\":2},"
	                              "\"layers\":[],\"artifactType\":7}";
	ck_assert_int_eq(parse_m(&m, bad_type, &err), RS_BAD_INPUT);
	ck_assert_ptr_nonnull(strstr(err.msg, "artifactType"));

	/* an index: its subject, and artifactType on its descriptors (the
	 * referrers list's shape) */
	static const char *idx =
		"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":"
		"[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" D2 "\",\"size\":5,"
		"\"artifactType\":\"application/vnd.example.sig\",\"annotations\":{\"a\":\"b\"}}],"
		"\"subject\":{\"digest\":\"" D3 "\",\"size\":1}}";
	struct imagejson_index x;
	ck_assert_int_eq(imagejson_parse_index(&x, idx, strlen(idx), "index", &err), RS_OK);
	ck_assert_str_eq(x.manifests[0].artifact_type, "application/vnd.example.sig");
	ck_assert_str_eq(x.subject->digest, D3);
	struct imagejson_descriptor copy;
	ck_assert_int_eq(imagejson_descriptor_copy(&copy, &x.manifests[0], &err), RS_OK);
	ck_assert_str_eq(copy.artifact_type, "application/vnd.example.sig");
	imagejson_descriptor_dispose(&copy);
	ck_assert_int_eq(imagejson_write_index(&out, &len, &x, &err), RS_OK);
	ck_assert_str_eq(out, idx);
	free(out);
	imagejson_index_dispose(&x);
}
END_TEST

START_TEST(config_rewrite_replaces_rootfs_and_history_only)
{
	const char *cfg = "{\"created\":\"2025-05-20T00:00:00Z\",\"architecture\":\"amd64\",\"config\":{\"Cmd\":[\"/x\"]},"
			  "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D1 "\",\"" D2 "\"]},"
			  "\"history\":[{\"created_by\":\"one\"},{\"created_by\":\"two\"}],\"os\":\"linux\"}";
	char *ids[] = {D3};
	struct imagejson_history h[2] = {{NULL, (char *)"one", NULL, NULL, true}, {(char *)"t", (char *)"new", NULL, (char *)"c", false}};
	char *out;
	size_t len;
	struct rs_err err = {0};
	ck_assert_int_eq(imagejson_rewrite_config(&out, &len, cfg, strlen(cfg), ids, 1, h, 2, "config", &err), RS_OK);
	ck_assert_str_eq(out, "{\"created\":\"2025-05-20T00:00:00Z\",\"architecture\":\"amd64\",\"config\":{\"Cmd\":[\"/x\"]},"
			      "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D3 "\"]},\"history\":[{\"created_by\":\"one\","
			      "\"empty_layer\":true},{\"created\":\"t\",\"created_by\":\"new\",\"comment\":\"c\"}],\"os\":\"linux\"}");
	free(out);
	ck_assert_int_eq(imagejson_rewrite_config(&out, &len, "[]", 2, ids, 1, h, 2, "config", &err), RS_BAD_INPUT);
}
END_TEST

START_TEST(parses_docker_archive_manifest)
{
	const char *j = "[{\"Config\":\"abc.json\",\"RepoTags\":[\"lab/tiny:latest\"],\"Layers\":[\"l1/layer.tar\",\"l2/layer.tar\"]}]";
	struct imagejson_archive a;
	struct rs_err err = {0};
	ck_assert_int_eq(imagejson_parse_archive(&a, j, strlen(j), "manifest.json", &err), RS_OK);
	ck_assert_uint_eq(a.image_count, 1);
	ck_assert_str_eq(a.images[0].layers[1], "l2/layer.tar");
	ck_assert_str_eq(a.images[0].repo_tags[0], "lab/tiny:latest");
	imagejson_archive_dispose(&a);
	ck_assert_int_eq(imagejson_parse_archive(&a, "[{\"Layers\":[]}]", 15, "manifest.json", &err), RS_BAD_INPUT);
	ck_assert_str_eq(err.msg, "manifest.json: [0].Config: missing (expected a string)");
}
END_TEST

static Suite *image_suite(void)
{
	Suite *s = suite_create("image");
	TCase *t = tcase_create("core");
	tcase_add_test(t, parses_oci_manifest_without_media_type);
	tcase_add_test(t, parses_docker_manifest_and_index);
	tcase_add_test(t, rejects_hostile_manifests);
	tcase_add_test(t, rejects_more_layers_than_the_limit);
	tcase_add_test(t, validation_names_bad_digests_and_media_types);
	tcase_add_test(t, config_must_match_layers);
	tcase_add_test(t, writes_deterministic_json_with_sorted_annotations);
	tcase_add_test(t, parses_and_writes_subject_and_artifact_type);
	tcase_add_test(t, config_rewrite_replaces_rootfs_and_history_only);
	tcase_add_test(t, parses_docker_archive_manifest);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	return fixture_run_suite(image_suite());
}
