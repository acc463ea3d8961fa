/* Unit tests for proxy/reply.c's status table: enum rs_code and what the
 * request was about -> HTTP status and registry error code, read side and
 * write side (the answers themselves are covered by the integration tests,
 * which see their statuses, headers and bodies). */
#include "proxy/server/reply.h"

#include "fixture.h"

#include <check.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

START_TEST(maps_codes_to_registry_errors)
{
	struct reply_status e = reply_map_error(RS_NOT_FOUND, REPLY_MANIFEST);
	ck_assert_uint_eq(e.status, 404);
	ck_assert_str_eq(e.code, "MANIFEST_UNKNOWN");
	e = reply_map_error(RS_NOT_FOUND, REPLY_BLOB);
	ck_assert_str_eq(e.code, "BLOB_UNKNOWN");
	e = reply_map_error(RS_NOT_FOUND, REPLY_NAME);
	ck_assert_str_eq(e.code, "NAME_UNKNOWN");
	e = reply_map_error(RS_DIGEST_INVALID, REPLY_BLOB);
	ck_assert_uint_eq(e.status, 400);
	ck_assert_str_eq(e.code, "DIGEST_INVALID");
	e = reply_map_error(RS_BAD_INPUT, REPLY_OTHER);
	ck_assert_str_eq(e.code, "NAME_INVALID");
	e = reply_map_error(RS_RANGE, REPLY_BLOB);
	ck_assert_uint_eq(e.status, 416);
	ck_assert_ptr_null(e.code); /* plain text: no code of the spec's table fits */
	e = reply_map_error(RS_UPSTREAM, REPLY_BLOB);
	ck_assert_uint_eq(e.status, 502);
	ck_assert_str_eq(e.code, "UNAVAILABLE");
	e = reply_map_error(RS_DIGEST_MISMATCH, REPLY_BLOB);
	ck_assert_uint_eq(e.status, 502);
	e = reply_map_error(RS_UNSUPPORTED, REPLY_OTHER);
	ck_assert_uint_eq(e.status, 405);
	e = reply_map_error(RS_NOMEM, REPLY_OTHER);
	ck_assert_uint_eq(e.status, 500);
	e = reply_map_error((enum rs_code)999, REPLY_OTHER);
	ck_assert_uint_eq(e.status, 500);
	/* the write side: a mismatch is the client's fault */
	e = reply_map_error(RS_DIGEST_MISMATCH, REPLY_UPLOAD);
	ck_assert_uint_eq(e.status, 400);
	ck_assert_str_eq(e.code, "DIGEST_INVALID");
	e = reply_map_error(RS_NOT_FOUND, REPLY_MANIFEST_PUT);
	ck_assert_uint_eq(e.status, 400);
	ck_assert_str_eq(e.code, "MANIFEST_BLOB_UNKNOWN");
	e = reply_map_error(RS_NOT_FOUND, REPLY_UPLOAD);
	ck_assert_uint_eq(e.status, 404);
	ck_assert_str_eq(e.code, "BLOB_UPLOAD_UNKNOWN");
	e = reply_map_error(RS_RANGE, REPLY_UPLOAD);
	ck_assert_uint_eq(e.status, 416);
	e = reply_map_error(RS_TOO_LARGE, REPLY_MANIFEST_PUT);
	ck_assert_uint_eq(e.status, 413);
}
END_TEST

/* Every 4xx code of the write side is one of the distribution spec's
 * "Error Codes"; too many uploads at once is TOOMANYREQUESTS (429), a blob
 * over the limit SIZE_INVALID (413). */
START_TEST(write_errors_use_spec_codes)
{
	static const char *spec[] = {"BLOB_UNKNOWN",     "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
	                             "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID",
	                             "NAME_UNKNOWN",     "SIZE_INVALID",        "UNAUTHORIZED",        "DENIED",
	                             "UNSUPPORTED",      "TOOMANYREQUESTS",     NULL};
	static const enum reply_what what[] = {REPLY_UPLOAD, REPLY_UPLOAD_START, REPLY_MANIFEST_PUT};
	for (size_t w = 0; w < sizeof(what) / sizeof(what[0]); w++) {
		for (int c = RS_OK + 1; c < RS_CODE_COUNT; c++) {
			struct reply_status e = reply_map_error((enum rs_code)c, what[w]);
			if (e.status < 400 || e.status >= 500)
				continue;
			bool known = false;
			for (int i = 0; spec[i]; i++)
				known = known || strcmp(e.code, spec[i]) == 0;
			ck_assert_msg(known, "code %d on write route %zu: %s is not a spec error code", c, w, e.code);
		}
	}
	static const struct {
		enum rs_code code;
		enum reply_what what;
		unsigned status;
		const char *name;
	} cases[] = {
	        {RS_TOO_LARGE, REPLY_UPLOAD_START, 429, "TOOMANYREQUESTS"},
	        {RS_TOO_LARGE, REPLY_UPLOAD, 413, "SIZE_INVALID"},
	        {RS_NOT_FOUND, REPLY_UPLOAD_START, 404, "BLOB_UPLOAD_UNKNOWN"},
	        {RS_BAD_INPUT, REPLY_MANIFEST_PUT, 400, "MANIFEST_INVALID"},
	        {RS_DIGEST_INVALID, REPLY_MANIFEST_PUT, 400, "DIGEST_INVALID"},
	        {RS_RANGE, REPLY_UPLOAD, 416, "BLOB_UPLOAD_INVALID"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct reply_status e = reply_map_error(cases[i].code, cases[i].what);
		ck_assert_msg(e.status == cases[i].status && strcmp(e.code, cases[i].name) == 0,
		              "case %zu: got %u %s, expected %u %s", i, e.status, e.code, cases[i].status, cases[i].name);
	}
}
END_TEST

/* Issue 14: every 4xx JSON answer, read side included, carries a code of
 * the spec's table (no TAG_INVALID, RANGE_INVALID or NOT_FOUND); a 4xx
 * without a registry code is plain text (only a Range beyond a blob). */
START_TEST(every_4xx_uses_spec_codes)
{
	static const char *spec[] = {"BLOB_UNKNOWN",     "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
	                             "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID",
	                             "NAME_UNKNOWN",     "SIZE_INVALID",        "UNAUTHORIZED",        "DENIED",
	                             "UNSUPPORTED",      "TOOMANYREQUESTS",     NULL};
	for (int w = REPLY_MANIFEST; w <= REPLY_FRAMING; w++) {
		for (int c = RS_OK + 1; c < RS_CODE_COUNT; c++) {
			struct reply_status e = reply_map_error((enum rs_code)c, (enum reply_what)w);
			if (e.status < 400 || e.status >= 500)
				continue;
			if (!e.code) {
				ck_assert_msg(e.status == 416 && c == RS_RANGE, "code %d about %d: %u without a code", c, w,
				              e.status);
				continue;
			}
			bool known = false;
			for (int i = 0; spec[i]; i++)
				known = known || strcmp(e.code, spec[i]) == 0;
			ck_assert_msg(known, "code %d about %d: %s is not a spec error code", c, w, e.code);
		}
	}
}
END_TEST

/* The answers about no resource: unknown paths and methods, tags, the auth
 * gate and token endpoint, forwarding a pushed image; and a push policy's
 * refusal on either side. */
START_TEST(maps_endpoint_auth_and_forward_errors)
{
	static const struct {
		enum rs_code code;
		enum reply_what what;
		unsigned status;
		const char *name;
	} cases[] = {
	        {RS_NOT_FOUND, REPLY_ENDPOINT, 404, "UNSUPPORTED"},
	        {RS_TOO_LARGE, REPLY_ENDPOINT, 414, "NAME_INVALID"},
	        {RS_UNSUPPORTED, REPLY_ENDPOINT, 405, "UNSUPPORTED"},
	        {RS_BAD_INPUT, REPLY_ENDPOINT, 400, "NAME_INVALID"},
	        {RS_BAD_INPUT, REPLY_FRAMING, 400, "UNSUPPORTED"},
	        {RS_NOT_FOUND, REPLY_AUTH, 404, "UNSUPPORTED"},
	        {RS_UNSUPPORTED, REPLY_AUTH, 405, "UNSUPPORTED"},
	        {RS_UNAUTHORIZED, REPLY_AUTH, 401, "UNAUTHORIZED"},
	        {RS_DENIED, REPLY_AUTH, 403, "DENIED"},
	        {RS_THROTTLED, REPLY_AUTH, 429, "TOOMANYREQUESTS"},
	        {RS_NOMEM, REPLY_AUTH, 500, "UNSUPPORTED"},
	        {RS_BAD_INPUT, REPLY_AUTH, 400, "UNSUPPORTED"},
	        {RS_TOO_LARGE, REPLY_AUTH, 400, "UNSUPPORTED"},
	        {RS_UPSTREAM, REPLY_FORWARD, 502, "UNAVAILABLE"},
	        {RS_TIMEOUT, REPLY_FORWARD, 500, "UNAVAILABLE"},
	        {RS_IO, REPLY_FORWARD, 500, "UNAVAILABLE"},
	        {RS_POLICY, REPLY_MANIFEST, 403, "DENIED"},
	        {RS_POLICY, REPLY_MANIFEST_PUT, 403, "DENIED"},
	        {RS_THROTTLED, REPLY_OTHER, 429, "TOOMANYREQUESTS"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct reply_status e = reply_map_error(cases[i].code, cases[i].what);
		ck_assert_msg(e.status == cases[i].status && strcmp(e.code, cases[i].name) == 0,
		              "case %zu: got %u %s, expected %u %s", i, e.status, e.code, cases[i].status, cases[i].name);
	}
}
END_TEST

/* The spec's table and nothing else (an upstream's 404 body is passed on
 * only when all its codes are in it). */
START_TEST(knows_the_spec_codes)
{
	ck_assert(reply_code_is_spec("MANIFEST_UNKNOWN"));
	ck_assert(reply_code_is_spec("TOOMANYREQUESTS"));
	ck_assert(reply_code_is_spec("BLOB_UNKNOWN"));
	ck_assert(!reply_code_is_spec("NOT_FOUND"));
	ck_assert(!reply_code_is_spec("TAG_INVALID"));
	ck_assert(!reply_code_is_spec("UNKNOWN"));
	ck_assert(!reply_code_is_spec("manifest_unknown"));
	ck_assert(!reply_code_is_spec(""));
	ck_assert(!reply_code_is_spec(NULL));
}
END_TEST

static Suite *reply_suite(void)
{
	Suite *s = suite_create("reply");
	TCase *tc = tcase_create("reply");
	tcase_add_test(tc, maps_codes_to_registry_errors);
	tcase_add_test(tc, write_errors_use_spec_codes);
	tcase_add_test(tc, every_4xx_uses_spec_codes);
	tcase_add_test(tc, knows_the_spec_codes);
	tcase_add_test(tc, maps_endpoint_auth_and_forward_errors);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(reply_suite());
}
