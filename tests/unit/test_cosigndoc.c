/* test_cosigndoc: the cosign documents (config/cosigndoc.c), no
 * cryptography: the payload is byte for byte what cosign signs (a payload
 * cosign made, whose blob digest a registry served, is reproduced), it
 * reads back and a payload of another type is refused; the .sig config has
 * cosign's shape with one history entry and diff_id per layer; the
 * manifests carry the artifactType, the layers' signature annotations and
 * the subject; the attestation records every field, null where unknown. */
#include "cosigndoc.h"

#include "digest.h"
#include "fixture.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"

START_TEST(payload_is_cosigns_bytes)
{
	char *p = NULL, digest[DIGEST_STR_SIZE];
	size_t n = 0;
	struct rs_err err = {0};
	/* a signature cosign 1.13 made for index.docker.io/chihjenhuang/cosign1: its
	 * payload blob, as Docker Hub served it, is sha256:b671489e.. (252 bytes) */
	ck_assert_int_eq(cosigndoc_payload(&p, &n, "index.docker.io/chihjenhuang/cosign1",
	                                   "sha256:4c1c50d0ffc614f90b93b07d778028dc765548e823f676fb027f61d281ac380d", &err),
	                 RS_OK);
	ck_assert_uint_eq(n, 252);
	ck_assert_uint_eq(strlen(p), n);
	digest_buffer(digest, p, n);
	ck_assert_str_eq(digest, "sha256:b671489ededd1a180bd87235bba00fd83354f9c7d13b71d9f8b66a8e52965ebc");
	char *identity = NULL, *signed_digest = NULL;
	ck_assert_int_eq(cosigndoc_payload_parse(&identity, &signed_digest, p, n, &err), RS_OK);
	ck_assert_str_eq(identity, "index.docker.io/chihjenhuang/cosign1");
	ck_assert_str_eq(signed_digest, "sha256:4c1c50d0ffc614f90b93b07d778028dc765548e823f676fb027f61d281ac380d");
	free(identity);
	free(signed_digest);
	free(p);
	/* a tagged identity, as regslim signs */
	ck_assert_int_eq(cosigndoc_payload(&p, &n, "docker.io/org/app:1.0", D1, &err), RS_OK);
	ck_assert_str_eq(p, "{\"critical\":{\"identity\":{\"docker-reference\":\"docker.io/org/app:1.0\"},\"image\":{"
	                    "\"docker-manifest-digest\":\"" D1 "\"},\"type\":\"cosign container image signature\"},"
	                    "\"optional\":null}");
	free(p);
	const char *gpg = "{\"critical\":{\"identity\":{\"docker-reference\":\"docker.io/org/app:1\"},"
	                  "\"image\":{\"docker-manifest-digest\":\"" D1 "\"},\"type\":\"atomic container signature\"}}";
	ck_assert_int_eq(cosigndoc_payload_parse(&identity, &signed_digest, gpg, strlen(gpg), &err), RS_BAD_INPUT);
	ck_assert_ptr_null(identity);
	ck_assert_int_eq(cosigndoc_payload_parse(&identity, &signed_digest, "[]", 2, &err), RS_BAD_INPUT);
}
END_TEST

START_TEST(sig_config_has_cosigns_shape)
{
	char *c = NULL;
	size_t n = 0;
	struct rs_err err = {0};
	const char *one[] = {"sha256:b671489ededd1a180bd87235bba00fd83354f9c7d13b71d9f8b66a8e52965ebc"};
	/* the config Docker Hub served for that signature (cosign 1.13) */
	ck_assert_int_eq(cosigndoc_sig_config(&c, &n, one, 1, "2023-02-17T09:25:33.91047962-08:00", &err), RS_OK);
	ck_assert_str_eq(c, "{\"architecture\":\"\",\"created\":\"2023-02-17T09:25:33.91047962-08:00\",\"history\":[{"
	                    "\"created\":\"0001-01-01T00:00:00Z\"}],\"os\":\"\",\"rootfs\":{\"type\":\"layers\","
	                    "\"diff_ids\":[\"sha256:b671489ededd1a180bd87235bba00fd83354f9c7d13b71d9f8b66a8e52965ebc\"]},"
	                    "\"config\":{}}");
	ck_assert_uint_eq(n, 247);
	free(c);
	const char *two[] = {D1, D2};
	ck_assert_int_eq(cosigndoc_sig_config(&c, &n, two, 2, "2026-01-01T00:00:00Z", &err), RS_OK);
	ck_assert_ptr_nonnull(strstr(c, "\"history\":[{\"created\":\"0001-01-01T00:00:00Z\"},{\"created\":"
	                                "\"0001-01-01T00:00:00Z\"}]"));
	ck_assert_ptr_nonnull(strstr(c, "\"diff_ids\":[\"" D1 "\",\"" D2 "\"]"));
	free(c);
}
END_TEST

START_TEST(manifests_carry_signatures_and_subject)
{
	char *m = NULL;
	size_t n = 0;
	struct rs_err err = {0};
	const struct cosigndoc_desc config = {.media_type = COSIGNDOC_CONFIG_MT, .digest = D1, .size = 247};
	/* a kept layer's own annotations: its signature (once) and a bundle beside it */
	struct imagejson_kv kept[] = {{"dev.cosignproject.cosign/signature", "MEYCIQ=="},
	                              {"dev.sigstore.cosign/bundle", "{\"x\":1}"}};
	const struct cosigndoc_desc layers[] = {
		{.media_type = COSIGNDOC_SIMPLESIGNING_MT, .digest = D2, .size = 252, .signature = "MEUCIQ=="},
		{.media_type = COSIGNDOC_SIMPLESIGNING_MT, .digest = D1, .size = 250, .annotations = kept,
		 .annotation_count = 2},
	};
	const struct cosigndoc_desc subject = {.media_type = "application/vnd.oci.image.index.v1+json", .digest = D2,
	                                       .size = 999};
	ck_assert_int_eq(cosigndoc_manifest(&m, &n, COSIGNDOC_SIG_ARTIFACT_TYPE, &config, layers, 2, &subject, NULL, &err),
	                 RS_OK);
	ck_assert_uint_eq(strlen(m), n);
	ck_assert_str_eq(
		m, "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"artifactType\":"
		   "\"application/vnd.dev.cosign.artifact.sig.v1+json\",\"config\":{\"mediaType\":"
		   "\"application/vnd.oci.image.config.v1+json\",\"digest\":\"" D1 "\",\"size\":247},\"layers\":[{"
		   "\"mediaType\":\"application/vnd.dev.cosign.simplesigning.v1+json\",\"digest\":\"" D2 "\",\"size\":252,"
		   "\"annotations\":{\"dev.cosignproject.cosign/signature\":\"MEUCIQ==\"}},{\"mediaType\":"
		   "\"application/vnd.dev.cosign.simplesigning.v1+json\",\"digest\":\"" D1 "\",\"size\":250,\"annotations\":{"
		   "\"dev.cosignproject.cosign/signature\":\"MEYCIQ==\",\"dev.sigstore.cosign/bundle\":\"{\\\"x\\\":1}\"}}],"
		   "\"subject\":{\"mediaType\":"
		   "\"application/vnd.oci.image.index.v1+json\",\"digest\":\"" D2 "\",\"size\":999}}");
	free(m);
	/* no artifactType, no subject, a created annotation */
	ck_assert_int_eq(cosigndoc_manifest(&m, &n, NULL, &config, layers, 1, NULL, "2026-01-01T00:00:00Z", &err), RS_OK);
	ck_assert_ptr_null(strstr(m, "artifactType"));
	ck_assert_ptr_null(strstr(m, "subject"));
	ck_assert_ptr_nonnull(strstr(m, "\"annotations\":{\"org.opencontainers.image.created\":\"2026-01-01T00:00:00Z\"}}"));
	free(m);
}
END_TEST

START_TEST(attestation_records_everything)
{
	char *a = NULL;
	size_t n = 0;
	struct rs_err err = {0};
	const struct cosigndoc_verified v[] = {
		{"gpg", "0123456789ABCDEF0123456789ABCDEF01234567", "signature-2", "file:///sigs"},
		{"cosign", D1, D2, NULL},
	};
	const struct cosigndoc_attestation at = {
		.reference = "docker.io/org/app:1.0",
		.optimized_digest = D1,
		.optimized_media_type = "application/vnd.oci.image.manifest.v1+json",
		.original_digest = D2,
		.verify_rule = "signatures.verify[0]",
		.verified = v,
		.verified_count = 2,
		.policy_digest = D1,
		.optimizer_version = "regslim 1.2.3",
		.report_digest = D2,
		.created = "2026-01-01T00:00:00Z",
	};
	ck_assert_int_eq(cosigndoc_attestation(&a, &n, &at, &err), RS_OK);
	ck_assert_str_eq(
		a, "{\"type\":\"regslim optimization\",\"version\":1,\"reference\":\"docker.io/org/app:1.0\",\"optimized\":{"
		   "\"digest\":\"" D1 "\",\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\"},\"original\":{"
		   "\"digest\":\"" D2 "\"},\"verification\":{\"rule\":\"signatures.verify[0]\",\"verified\":[{\"method\":"
		   "\"gpg\",\"key\":\"0123456789ABCDEF0123456789ABCDEF01234567\",\"signature\":\"signature-2\",\"source\":"
		   "\"file:///sigs\"},{\"method\":\"cosign\",\"key\":\"" D1 "\",\"signature\":\"" D2 "\",\"source\":null}]},"
		   "\"policy_digest\":\"" D1 "\",\"optimizer_version\":\"regslim 1.2.3\",\"report_digest\":\"" D2 "\","
		   "\"created\":\"2026-01-01T00:00:00Z\"}");
	free(a);
	/* no rule applied, no report */
	const struct cosigndoc_attestation bare = {.reference = "r", .optimized_digest = D1, .original_digest = D2};
	ck_assert_int_eq(cosigndoc_attestation(&a, &n, &bare, &err), RS_OK);
	ck_assert_ptr_nonnull(strstr(a, "\"verification\":{\"rule\":null,\"verified\":[]}"));
	ck_assert_ptr_nonnull(strstr(a, "\"report_digest\":null"));
	free(a);
}
END_TEST

static Suite *cosigndoc_suite(void)
{
	Suite *s = suite_create("cosigndoc");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, payload_is_cosigns_bytes);
	tcase_add_test(tc, sig_config_has_cosigns_shape);
	tcase_add_test(tc, manifests_carry_signatures_and_subject);
	tcase_add_test(tc, attestation_records_everything);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(cosigndoc_suite());
}
