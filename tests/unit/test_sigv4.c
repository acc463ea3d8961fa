/* test_sigv4: proxy/store/s3_sign.c against signatures AWS published, not
 * values computed by this code:
 *  - the "AWS Signature Version 4 test suite" (docs.aws.amazon.com/general/
 *    latest/gr/signature-v4-test-suite.html): credentials AKIDEXAMPLE, region
 *    us-east-1, service "service", 20150830T123600Z; the cases get-vanilla,
 *    get-vanilla-query-order-key-case, get-vanilla-query-order-value,
 *    get-vanilla-utf8-query, get-unreserved, get-header-key-duplicate,
 *    get-header-value-trim, post-x-www-form-urlencoded;
 *  - the S3 examples of "Signature Calculations for the Authorization Header:
 *    Transferring Payload in a Single Chunk" (AmazonS3/latest/API/
 *    sig-v4-header-based-auth.html): GET Object with Range, PUT Object,
 *    GET Bucket Lifecycle (a valueless parameter), GET Bucket with an unsorted
 *    query; credentials AKIAIOSFODNN7EXAMPLE, 20130524T000000Z.
 * Plus the encoding rules those vectors do not reach (a key with '/', '+', ' ',
 * a valueless parameter) and malformed input. */
#include "s3_sign.h"

#include "fixture.h"

#include <check.h>
#include <string.h>

#define SUITE_KEY "AKIDEXAMPLE"
#define SUITE_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SUITE_DATE "20150830T123600Z"
#define SUITE_PREFIX "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "

#define S3_KEY "AKIAIOSFODNN7EXAMPLE"
#define S3_SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define S3_DATE "20130524T000000Z"
#define S3_HOST "examplebucket.s3.amazonaws.com"

static struct s3_sign_request suite_req(const char *method, const char *path, const struct s3_sign_param *q, size_t nq,
                                        const struct s3_sign_header *h, size_t nh, const char *payload_hash)
{
	return (struct s3_sign_request){.method = method, .path = path, .query = q, .nquery = nq, .headers = h,
	                                .nheaders = nh, .payload_hash = payload_hash, .amz_date = SUITE_DATE,
	                                .region = "us-east-1", .service = "service", .access_key = SUITE_KEY,
	                                .secret_key = SUITE_SECRET};
}

static void expect_auth(const struct s3_sign_request *r, const char *want)
{
	char auth[512];
	struct rs_err err = {0};
	ck_assert_int_eq(s3_sign(auth, sizeof(auth), r, &err), RS_OK);
	ck_assert_str_eq(auth, want);
}

static const struct s3_sign_header suite_hdrs[] = {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", SUITE_DATE}};

START_TEST(suite_get_vanilla)
{
	struct s3_sign_request r = suite_req("GET", "/", NULL, 0, suite_hdrs, 2, S3_SIGN_EMPTY_SHA256);
	struct s3_sign_explained e;
	struct rs_err err = {0};
	ck_assert_int_eq(s3_sign_explain(&e, &r, &err), RS_OK);
	/* the suite's get-vanilla.creq and .sts, line by line */
	ck_assert_str_eq(e.canonical_request, "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
	                                      "host;x-amz-date\n" S3_SIGN_EMPTY_SHA256);
	ck_assert_str_eq(e.string_to_sign, "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n"
	                                   "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63");
	ck_assert_str_eq(e.authorization, SUITE_PREFIX "SignedHeaders=host;x-amz-date, "
	                                  "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
	s3_sign_explained_dispose(&e);
}
END_TEST

START_TEST(suite_query_sorted_by_name)
{
	struct s3_sign_param q[] = {{"Param2", "value2"}, {"Param1", "value1"}};
	struct s3_sign_request r = suite_req("GET", "/", q, 2, suite_hdrs, 2, S3_SIGN_EMPTY_SHA256);
	struct s3_sign_explained e;
	struct rs_err err = {0};
	ck_assert_int_eq(s3_sign_explain(&e, &r, &err), RS_OK);
	ck_assert_ptr_nonnull(strstr(e.canonical_request, "\nParam1=value1&Param2=value2\n"));
	ck_assert_str_eq(e.authorization, SUITE_PREFIX "SignedHeaders=host;x-amz-date, "
	                                  "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
	s3_sign_explained_dispose(&e);
}
END_TEST

START_TEST(suite_query_same_name_sorted_by_value)
{
	struct s3_sign_param q[] = {{"Param1", "value2"}, {"Param1", "value1"}};
	struct s3_sign_request r = suite_req("GET", "/", q, 2, suite_hdrs, 2, S3_SIGN_EMPTY_SHA256);
	expect_auth(&r, SUITE_PREFIX "SignedHeaders=host;x-amz-date, "
	                "Signature=5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694");
}
END_TEST

START_TEST(suite_utf8_query_percent_encoded)
{
	struct s3_sign_param q[] = {{"\xe1\x88\xb4", "bar"}};
	struct s3_sign_request r = suite_req("GET", "/", q, 1, suite_hdrs, 2, S3_SIGN_EMPTY_SHA256);
	expect_auth(&r, SUITE_PREFIX "SignedHeaders=host;x-amz-date, "
	                "Signature=2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04");
}
END_TEST

START_TEST(suite_unreserved_path_kept)
{
	struct s3_sign_request r = suite_req("GET", "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
	                                     NULL, 0, suite_hdrs, 2, S3_SIGN_EMPTY_SHA256);
	expect_auth(&r, SUITE_PREFIX "SignedHeaders=host;x-amz-date, "
	                "Signature=07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f");
}
END_TEST

START_TEST(suite_repeated_header_joined_in_order)
{
	struct s3_sign_header h[] = {{"Host", "example.amazonaws.com"}, {"My-Header1", "value2"},
	                             {"My-Header1", "value2"}, {"My-Header1", "value1"}, {"X-Amz-Date", SUITE_DATE}};
	struct s3_sign_request r = suite_req("GET", "/", NULL, 0, h, 5, S3_SIGN_EMPTY_SHA256);
	expect_auth(&r, SUITE_PREFIX "SignedHeaders=host;my-header1;x-amz-date, "
	                "Signature=c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea");
}
END_TEST

START_TEST(suite_header_values_trimmed)
{
	struct s3_sign_header h[] = {{"Host", "example.amazonaws.com"}, {"My-Header1", " value1"},
	                             {"My-Header2", "\"a   b   c\""}, {"X-Amz-Date", SUITE_DATE}};
	struct s3_sign_request r = suite_req("GET", "/", NULL, 0, h, 4, S3_SIGN_EMPTY_SHA256);
	expect_auth(&r, SUITE_PREFIX "SignedHeaders=host;my-header1;my-header2;x-amz-date, "
	                "Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736");
}
END_TEST

START_TEST(suite_post_form_with_payload_hash)
{
	char ph[65];
	s3_sign_sha256_hex(ph, "Param1=value1", 13);
	ck_assert_str_eq(ph, "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e");
	struct s3_sign_header h[] = {{"Content-Type", "application/x-www-form-urlencoded"},
	                             {"Host", "example.amazonaws.com"}, {"X-Amz-Date", SUITE_DATE}};
	struct s3_sign_request r = suite_req("POST", "/", NULL, 0, h, 3, ph);
	expect_auth(&r, SUITE_PREFIX "SignedHeaders=content-type;host;x-amz-date, "
	                "Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a");
}
END_TEST

static struct s3_sign_request s3_req(const char *method, const char *path, const struct s3_sign_param *q, size_t nq,
                                     const struct s3_sign_header *h, size_t nh, const char *payload_hash)
{
	return (struct s3_sign_request){.method = method, .path = path, .query = q, .nquery = nq, .headers = h,
	                                .nheaders = nh, .payload_hash = payload_hash, .amz_date = S3_DATE,
	                                .region = "us-east-1", .service = "s3", .access_key = S3_KEY,
	                                .secret_key = S3_SECRET};
}

#define S3_PREFIX "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "

START_TEST(s3_get_object_with_range)
{
	/* given in an order that is not the canonical one */
	struct s3_sign_header h[] = {{"x-amz-date", S3_DATE}, {"Range", "bytes=0-9"}, {"Host", S3_HOST},
	                             {"x-amz-content-sha256", S3_SIGN_EMPTY_SHA256}};
	struct s3_sign_request r = s3_req("GET", "/test.txt", NULL, 0, h, 4, S3_SIGN_EMPTY_SHA256);
	expect_auth(&r, S3_PREFIX "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
	                "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}
END_TEST

START_TEST(s3_put_object_path_encoded)
{
	char ph[65];
	s3_sign_sha256_hex(ph, "Welcome to Amazon S3.", 21);
	ck_assert_str_eq(ph, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
	struct s3_sign_header h[] = {{"Host", S3_HOST}, {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
	                             {"x-amz-date", S3_DATE}, {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
	                             {"x-amz-content-sha256", ph}};
	struct s3_sign_request r = s3_req("PUT", "/test$file.text", NULL, 0, h, 5, ph);
	struct s3_sign_explained e;
	struct rs_err err = {0};
	ck_assert_int_eq(s3_sign_explain(&e, &r, &err), RS_OK);
	ck_assert(strncmp(e.canonical_request, "PUT\n/test%24file.text\n\n", 23) == 0);
	ck_assert_str_eq(e.authorization, S3_PREFIX "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;"
	                                  "x-amz-storage-class, "
	                                  "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
	s3_sign_explained_dispose(&e);
}
END_TEST

static const struct s3_sign_header s3_get_hdrs[] = {
	{"Host", S3_HOST}, {"x-amz-date", S3_DATE}, {"x-amz-content-sha256", S3_SIGN_EMPTY_SHA256}};

START_TEST(s3_valueless_parameter_signed_with_equals)
{
	struct s3_sign_param q[] = {{"lifecycle", NULL}};
	struct s3_sign_request r = s3_req("GET", "/", q, 1, s3_get_hdrs, 3, S3_SIGN_EMPTY_SHA256);
	struct s3_sign_explained e;
	struct rs_err err = {0};
	ck_assert_int_eq(s3_sign_explain(&e, &r, &err), RS_OK);
	ck_assert_ptr_nonnull(strstr(e.canonical_request, "\nlifecycle=\n"));
	ck_assert_str_eq(e.authorization, S3_PREFIX "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
	                                  "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
	s3_sign_explained_dispose(&e);
}
END_TEST

START_TEST(s3_list_query_sorted)
{
	struct s3_sign_param q[] = {{"prefix", "J"}, {"max-keys", "2"}};
	struct s3_sign_request r = s3_req("GET", "/", q, 2, s3_get_hdrs, 3, S3_SIGN_EMPTY_SHA256);
	expect_auth(&r, S3_PREFIX "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
	                "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}
END_TEST

START_TEST(encoding_rules_for_keys_and_query)
{
	char b[128];
	ck_assert_uint_eq(s3_sign_uri_encode(b, sizeof(b), "blobs/sha256/ab cd+e=f", true), 28);
	ck_assert_str_eq(b, "blobs/sha256/ab%20cd%2Be%3Df");
	s3_sign_uri_encode(b, sizeof(b), "a/b", false);
	ck_assert_str_eq(b, "a%2Fb");
	/* a short buffer: the length it needs, a NUL-terminated prefix */
	ck_assert_uint_eq(s3_sign_uri_encode(b, 4, "a b", false), 5);
	ck_assert_uint_lt(strlen(b), 4);
	/* what curl 7.88 gets wrong: '/' in a value encoded, sort by name, prefixes of each other */
	struct s3_sign_param q[] = {{"uploads", ""}, {"prefix", "a/b"}, {"list-type", "2"}};
	struct s3_sign_header h[] = {{"x-amz-copy-source-if-match", "x"}, {"x-amz-copy-source", "y"},
	                             {"Host", "h"}, {"x-amz-date", S3_DATE}};
	struct s3_sign_request r = s3_req("GET", "/", q, 3, h, 4, S3_SIGN_UNSIGNED);
	struct s3_sign_explained e;
	struct rs_err err = {0};
	ck_assert_int_eq(s3_sign_explain(&e, &r, &err), RS_OK);
	ck_assert_str_eq(e.canonical_request, "GET\n/\nlist-type=2&prefix=a%2Fb&uploads=\nhost:h\n"
	                                      "x-amz-copy-source:y\nx-amz-copy-source-if-match:x\nx-amz-date:" S3_DATE
	                                      "\n\nhost;x-amz-copy-source;x-amz-copy-source-if-match;x-amz-date\n"
	                                      "UNSIGNED-PAYLOAD");
	s3_sign_explained_dispose(&e);
}
END_TEST

START_TEST(refuses_malformed_input)
{
	char b[512];
	struct rs_err err = {0};
	struct s3_sign_request r = s3_req("GET", "/", NULL, 0, s3_get_hdrs, 3, S3_SIGN_EMPTY_SHA256);
	r.amz_date = "2013-05-24";
	ck_assert_int_eq(s3_sign(b, sizeof(b), &r, &err), RS_BAD_INPUT);
	ck_assert_ptr_nonnull(strstr(err.msg, "x-amz-date"));
	r.amz_date = S3_DATE;
	struct s3_sign_header h[] = {{"Host", "h"}, {"x-bad", "a\r\nInjected: 1"}};
	r.headers = h;
	r.nheaders = 2;
	ck_assert_int_eq(s3_sign(b, sizeof(b), &r, &err), RS_BAD_INPUT);
	r.headers = s3_get_hdrs;
	r.nheaders = 3;
	ck_assert_int_eq(s3_sign(b, 20, &r, &err), RS_TOO_LARGE);
}
END_TEST

static Suite *sigv4_suite(void)
{
	Suite *s = suite_create("sigv4");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, suite_get_vanilla);
	tcase_add_test(tc, suite_query_sorted_by_name);
	tcase_add_test(tc, suite_query_same_name_sorted_by_value);
	tcase_add_test(tc, suite_utf8_query_percent_encoded);
	tcase_add_test(tc, suite_unreserved_path_kept);
	tcase_add_test(tc, suite_repeated_header_joined_in_order);
	tcase_add_test(tc, suite_header_values_trimmed);
	tcase_add_test(tc, suite_post_form_with_payload_hash);
	tcase_add_test(tc, s3_get_object_with_range);
	tcase_add_test(tc, s3_put_object_path_encoded);
	tcase_add_test(tc, s3_valueless_parameter_signed_with_equals);
	tcase_add_test(tc, s3_list_query_sorted);
	tcase_add_test(tc, encoding_rules_for_keys_and_query);
	tcase_add_test(tc, refuses_malformed_input);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(sigv4_suite());
}
