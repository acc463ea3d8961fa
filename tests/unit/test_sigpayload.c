/* test_sigpayload: the simple-signing payload and the stored signature
 * lists (config/sigpayload.c), no cryptography: the payload made for a
 * reference and digest checks back, every mismatch (type, digest,
 * repository, tag) is RS_POLICY naming it, digest and tagless identities
 * match any tag; the lists keep binary signatures of every length through
 * base64, drop the oldest past their cap, and refuse bad documents; cosign
 * payloads check with their own type; base64 decodes strictly; the answers
 * of a registry's signature extension give their atomic signatures. */
#include "sigpayload.h"

#include "fixture.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"

static enum rs_code check_text(const char *payload, const char *digest, const char *repo, const char *tag,
                               struct rs_err *err)
{
	return sigpayload_check(payload, strlen(payload), digest, repo, tag, err);
}

START_TEST(made_payload_checks_back)
{
	char *p = NULL;
	size_t n = 0;
	struct rs_err err = {0};
	ck_assert_int_eq(sigpayload_make(&p, &n, "docker.io/org/app:1.0", D1, "regslim test", 1700000000, &err), RS_OK);
	ck_assert_uint_eq(n, strlen(p));
	ck_assert_ptr_nonnull(strstr(p, "\"type\":\"atomic container signature\""));
	ck_assert_ptr_nonnull(strstr(p, "\"timestamp\":1700000000"));
	ck_assert_int_eq(sigpayload_check(p, n, D1, "docker.io/org/app", "1.0", &err), RS_OK);
	ck_assert_int_eq(sigpayload_check(p, n, D1, "docker.io/org/app", NULL, &err), RS_OK);
	ck_assert_int_eq(sigpayload_check(p, n, D2, "docker.io/org/app", "1.0", &err), RS_POLICY);
	ck_assert_str_eq(err.msg, "signed digest " D1 " is not " D2);
	ck_assert_int_eq(sigpayload_check(p, n, D1, "docker.io/org/other", "1.0", &err), RS_POLICY);
	ck_assert_str_eq(err.msg, "signed identity docker.io/org/app:1.0 is not of docker.io/org/other");
	ck_assert_int_eq(sigpayload_check(p, n, D1, "docker.io/org/app", "2.0", &err), RS_POLICY);
	ck_assert_str_eq(err.msg, "signed identity docker.io/org/app:1.0 is not tag 2.0");
	/* a registry with a port: its ':' is not a tag */
	free(p);
	ck_assert_int_eq(sigpayload_make(&p, &n, "127.0.0.1:5000/org/app", D1, "t", 1, &err), RS_OK);
	ck_assert_int_eq(sigpayload_check(p, n, D1, "127.0.0.1:5000/org/app", "any", &err), RS_OK);
	free(p);
}
END_TEST

START_TEST(identities_without_tag_match_every_tag)
{
	struct rs_err err = {0};
	const char *by_digest = "{\"critical\":{\"identity\":{\"docker-reference\":\"docker.io/org/app@" D1 "\"},"
	                        "\"image\":{\"docker-manifest-digest\":\"" D1 "\"},\"type\":\"atomic container signature\"}}";
	ck_assert_int_eq(check_text(by_digest, D1, "docker.io/org/app", "1.0", &err), RS_OK);
	const char *wrong_type = "{\"critical\":{\"identity\":{\"docker-reference\":\"docker.io/org/app:1\"},"
	                         "\"image\":{\"docker-manifest-digest\":\"" D1 "\"},\"type\":\"cosign container image signature\"}}";
	ck_assert_int_eq(check_text(wrong_type, D1, "docker.io/org/app", "1", &err), RS_POLICY);
	ck_assert_str_eq(err.msg, "signature type \"cosign container image signature\" is not \"atomic container signature\"");
	ck_assert_int_eq(check_text("{\"critical\":{}}", D1, "docker.io/org/app", "1", &err), RS_BAD_INPUT);
	ck_assert_int_eq(check_text("not json", D1, "docker.io/org/app", "1", &err), RS_BAD_INPUT);
	ck_assert_str_eq(err.msg, "the signed payload is not a simple-signing document");
}
END_TEST

START_TEST(lists_keep_binary_signatures_of_every_length)
{
	struct sigdoc doc = {0};
	struct rs_err err = {0};
	unsigned char *bytes = fixture_bytes(7, 300);
	for (size_t len = 1; len <= 8; len++) {
		char id[32];
		snprintf(id, sizeof(id), "docker.io/r:%zu", len);
		ck_assert_int_eq(sigdoc_add(&doc, id, bytes, len, 0, &err), RS_OK);
	}
	ck_assert_int_eq(sigdoc_add(&doc, "docker.io/r:big", bytes, 300, 0, &err), RS_OK);
	char *text = NULL;
	size_t n = 0;
	ck_assert_int_eq(sigdoc_dump(&doc, &text, &n, &err), RS_OK);
	struct sigdoc back = {0};
	ck_assert_int_eq(sigdoc_parse(&back, text, n, &err), RS_OK);
	ck_assert_uint_eq(back.n, 9);
	for (size_t i = 0; i < back.n; i++) {
		ck_assert_str_eq(back.v[i].identity, doc.v[i].identity);
		ck_assert_uint_eq(back.v[i].signature_len, doc.v[i].signature_len);
		ck_assert(memcmp(back.v[i].signature, bytes, back.v[i].signature_len) == 0);
	}
	ck_assert_int_eq(sigdoc_find(&back, "docker.io/r:3"), 2);
	ck_assert_int_eq(sigdoc_find(&back, "docker.io/r:9"), -1);
	sigdoc_dispose(&back);
	sigdoc_dispose(&doc);
	free(text);
	free(bytes);
}
END_TEST

START_TEST(lists_drop_the_oldest_past_their_cap)
{
	struct sigdoc doc = {0};
	struct rs_err err = {0};
	ck_assert_int_eq(sigdoc_add(&doc, "a", "1", 1, 2, &err), RS_OK);
	ck_assert_int_eq(sigdoc_add(&doc, "b", "2", 1, 2, &err), RS_OK);
	ck_assert_int_eq(sigdoc_add(&doc, "c", "3", 1, 2, &err), RS_OK);
	ck_assert_uint_eq(doc.n, 2);
	ck_assert_str_eq(doc.v[0].identity, "b");
	ck_assert_str_eq(doc.v[1].identity, "c");
	sigdoc_dispose(&doc);
	ck_assert_uint_eq(doc.n, 0);
}
END_TEST

START_TEST(lists_refuse_bad_documents)
{
	static const char *const bad[] = {
		"[]",
		"{\"signatures\": {}}",
		"{\"signatures\": [{\"identity\": \"a\"}]}",
		"{\"signatures\": [{\"identity\": \"a\", \"signature\": \"abc\"}]}",
		"{\"signatures\": [{\"identity\": \"a\", \"signature\": \"ab=c\"}]}",
		"{\"signatures\": [{\"identity\": \"a\", \"signature\": \"a*==\"}]}",
		"{\"signatures\": [{\"identity\": \"a\", \"signature\": \"\"}]}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct sigdoc doc = {0};
		struct rs_err err = {0};
		ck_assert_msg(sigdoc_parse(&doc, bad[i], strlen(bad[i]), &err) == RS_BAD_INPUT, "accepted %s", bad[i]);
		ck_assert_uint_eq(doc.n, 0);
		ck_assert_ptr_null(doc.v);
	}
	struct sigdoc empty = {0};
	struct rs_err err = {0};
	ck_assert_int_eq(sigdoc_parse(&empty, "{\"signatures\": []}", 18, &err), RS_OK);
	ck_assert_uint_eq(empty.n, 0);
}
END_TEST

START_TEST(cosign_payloads_check_with_their_type)
{
	struct rs_err err = {0};
	const char *cosign = "{\"critical\":{\"identity\":{\"docker-reference\":\"index.docker.io/org/app\"},"
	                     "\"image\":{\"docker-manifest-digest\":\"" D1 "\"},\"type\":\"cosign container image "
	                     "signature\"},\"optional\":null}";
	size_t n = strlen(cosign);
	ck_assert_int_eq(sigpayload_check_type(cosign, n, SIGPAYLOAD_COSIGN_TYPE, D1, "index.docker.io/org/app", "1.0", &err),
	                 RS_OK);
	ck_assert_int_eq(sigpayload_check_type(cosign, n, SIGPAYLOAD_COSIGN_TYPE, D2, "index.docker.io/org/app", NULL, &err),
	                 RS_POLICY);
	ck_assert_str_eq(err.msg, "signed digest " D1 " is not " D2);
	ck_assert_int_eq(sigpayload_check_type(cosign, n, SIGPAYLOAD_COSIGN_TYPE, D1, "docker.io/org/app", NULL, &err),
	                 RS_POLICY);
	ck_assert_str_eq(err.msg, "signed identity index.docker.io/org/app is not of docker.io/org/app");
	/* a cosign payload is not a GPG simple-signing one, and the other way round */
	ck_assert_int_eq(sigpayload_check(cosign, n, D1, "index.docker.io/org/app", NULL, &err), RS_POLICY);
	char *p = NULL;
	ck_assert_int_eq(sigpayload_make(&p, &n, "docker.io/org/app:1.0", D1, "t", 1, &err), RS_OK);
	ck_assert_int_eq(sigpayload_check_type(p, n, SIGPAYLOAD_COSIGN_TYPE, D1, "docker.io/org/app", "1.0", &err),
	                 RS_POLICY);
	ck_assert_str_eq(err.msg,
	                 "signature type \"atomic container signature\" is not \"cosign container image signature\"");
	free(p);
}
END_TEST

START_TEST(base64_decodes_strictly)
{
	struct rs_err err = {0};
	unsigned char *out = NULL;
	size_t n = 0;
	ck_assert_int_eq(sigpayload_base64_decode(&out, &n, "TUVFQ0lR", &err), RS_OK);
	ck_assert_uint_eq(n, 6);
	ck_assert_int_eq(memcmp(out, "MEECIQ", 6), 0);
	free(out);
	ck_assert_int_eq(sigpayload_base64_decode(&out, &n, "YQ==", &err), RS_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(out[0], 'a');
	free(out);
	ck_assert_int_eq(sigpayload_base64_decode(&out, &n, "YQ=", &err), RS_BAD_INPUT);
	ck_assert_int_eq(sigpayload_base64_decode(&out, &n, "Y*==", &err), RS_BAD_INPUT);
	ck_assert_int_eq(sigpayload_base64_decode(&out, &n, "", &err), RS_BAD_INPUT);
	ck_assert_str_eq(err.msg, "not base64 text");
}
END_TEST

START_TEST(extension_answers_give_atomic_signatures)
{
	struct rs_err err = {0};
	struct sigdoc doc = {0};
	const char *ext = "{\"signatures\":[{\"version\":2,\"type\":\"atomic\",\"name\":\"" D1 "@a\",\"content\":\"AAEC\"},"
	                  "{\"version\":2,\"type\":\"other\",\"name\":\"x\",\"content\":\"AAEC\"},"
	                  "{\"type\":\"atomic\",\"content\":\"/w==\"}]}";
	ck_assert_int_eq(sigdoc_parse_extension(&doc, ext, strlen(ext), 16, &err), RS_OK);
	ck_assert_uint_eq(doc.n, 2);
	ck_assert_str_eq(doc.v[0].identity, D1 "@a");
	ck_assert_uint_eq(doc.v[0].signature_len, 3);
	ck_assert_int_eq(memcmp(doc.v[0].signature, "\x00\x01\x02", 3), 0);
	ck_assert_str_eq(doc.v[1].identity, "");
	ck_assert_uint_eq(doc.v[1].signature_len, 1);
	sigdoc_dispose(&doc);
	ck_assert_int_eq(sigdoc_parse_extension(&doc, ext, strlen(ext), 1, &err), RS_OK);
	ck_assert_uint_eq(doc.n, 1);
	sigdoc_dispose(&doc);
	const char *bad[] = {"[]", "{\"signatures\":{}}", "{\"signatures\":[{\"type\":\"atomic\"}]}",
	                     "{\"signatures\":[{\"type\":\"atomic\",\"content\":\"!!\"}]}", "not json"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(sigdoc_parse_extension(&doc, bad[i], strlen(bad[i]), 16, &err), RS_BAD_INPUT);
		ck_assert_uint_eq(doc.n, 0);
	}
	ck_assert_int_eq(sigdoc_parse_extension(&doc, "{\"signatures\": []}", 18, 16, &err), RS_OK);
	ck_assert_uint_eq(doc.n, 0);
}
END_TEST

static Suite *sigpayload_suite(void)
{
	Suite *s = suite_create("sigpayload");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, made_payload_checks_back);
	tcase_add_test(tc, identities_without_tag_match_every_tag);
	tcase_add_test(tc, lists_keep_binary_signatures_of_every_length);
	tcase_add_test(tc, lists_drop_the_oldest_past_their_cap);
	tcase_add_test(tc, lists_refuse_bad_documents);
	tcase_add_test(tc, cosign_payloads_check_with_their_type);
	tcase_add_test(tc, base64_decodes_strictly);
	tcase_add_test(tc, extension_answers_give_atomic_signatures);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(sigpayload_suite());
}
