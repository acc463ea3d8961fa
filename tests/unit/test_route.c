/* Unit tests for proxy/route.c: upstream choice, name/tag grammar, Range
 * parsing and the error mapping, each with hostile inputs. */
#include "proxy/server/route.h"
#include "config/refname.h"

#include "fixture.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

static struct rs_upstream_config ups[3];
static struct rs_config cfg;

static void setup(void)
{
	memset(ups, 0, sizeof(ups));
	memset(&cfg, 0, sizeof(cfg));
	ups[0].name = "docker.io";
	ups[0].library_prefix = true;
	ups[1].name = "ghcr.io";
	ups[2].name = "127.0.0.1:5001";
	cfg.upstreams = ups;
	cfg.upstream_count = 3;
	cfg.default_upstream = 0;
}

START_TEST(default_upstream_adds_library_prefix)
{
	struct route_target t;
	struct rs_err err = {0};
	ck_assert_int_eq(route_pick(&cfg, NULL, "alpine", &t, &err), RS_OK);
	ck_assert_uint_eq(t.up_index, 0);
	ck_assert(!t.by_ns);
	ck_assert_str_eq(t.repo, "library/alpine");
	ck_assert_str_eq(t.name, "alpine");
	ck_assert_int_eq(route_pick(&cfg, NULL, "org/app", &t, &err), RS_OK);
	ck_assert_str_eq(t.repo, "org/app");
}
END_TEST

START_TEST(ns_parameter_picks_upstream)
{
	struct route_target t;
	struct rs_err err = {0};
	ck_assert_int_eq(route_pick(&cfg, "ghcr.io", "org/app", &t, &err), RS_OK);
	ck_assert_uint_eq(t.up_index, 1);
	ck_assert(t.by_ns);
	ck_assert_str_eq(t.repo, "org/app");
	/* no library/ for upstreams without the prefix */
	ck_assert_int_eq(route_pick(&cfg, "ghcr.io", "app", &t, &err), RS_OK);
	ck_assert_str_eq(t.repo, "app");
	ck_assert_int_eq(route_pick(&cfg, "docker.io", "tiny", &t, &err), RS_OK);
	ck_assert_str_eq(t.repo, "library/tiny");
}
END_TEST

START_TEST(unknown_ns_is_not_found)
{
	struct route_target t;
	struct rs_err err = {0};
	ck_assert_int_eq(route_pick(&cfg, "quay.io", "org/app", &t, &err), RS_NOT_FOUND);
	ck_assert_str_eq(err.msg, "no upstream named 'quay.io' is configured (ns=quay.io)");
}
END_TEST

START_TEST(first_component_picks_upstream)
{
	struct route_target t;
	struct rs_err err = {0};
	ck_assert_int_eq(route_pick(&cfg, NULL, "ghcr.io/org/app", &t, &err), RS_OK);
	ck_assert_uint_eq(t.up_index, 1);
	ck_assert(!t.by_ns);
	ck_assert_str_eq(t.repo, "org/app");
	ck_assert_str_eq(t.name, "ghcr.io/org/app");
	ck_assert_int_eq(route_pick(&cfg, NULL, "127.0.0.1:5001/lab/tiny", &t, &err), RS_OK);
	ck_assert_uint_eq(t.up_index, 2);
	ck_assert_str_eq(t.repo, "lab/tiny");
	ck_assert_int_eq(route_pick(&cfg, NULL, "docker.io/tiny", &t, &err), RS_OK);
	ck_assert_uint_eq(t.up_index, 0);
	ck_assert_str_eq(t.repo, "library/tiny");
}
END_TEST

START_TEST(rejects_invalid_names)
{
	static const char *bad[] = {"", "UPPER/case", "a//b", "/abs", "a/", "..", "a/../b", "a/./b", "-a", "a-",
	                            "a..b", "a___b", "a b", "a%2fb", "ghcr.io/UP", "a:b", NULL};
	struct route_target t;
	for (int i = 0; bad[i]; i++) {
		struct rs_err err = {0};
		ck_assert_msg(route_pick(&cfg, NULL, bad[i], &t, &err) == RS_BAD_INPUT, "accepted '%s'", bad[i]);
		ck_assert_msg(strstr(err.msg, "invalid repository name") != NULL, "%s", err.msg);
	}
	char longname[400];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	struct rs_err err = {0};
	ck_assert_int_eq(route_pick(&cfg, NULL, longname, &t, &err), RS_BAD_INPUT);
	/* 250 bytes is fine alone but not with library/ in front */
	longname[250] = '\0';
	ck_assert_int_eq(route_pick(&cfg, NULL, longname, &t, &err), RS_BAD_INPUT);
	ck_assert(strstr(err.msg, "longer than 255") != NULL);
}
END_TEST

START_TEST(accepts_valid_names)
{
	static const char *good[] = {"a", "a/b/c", "a.b", "a_b", "a__b", "a---b", "0/9", "lab/tiny", NULL};
	for (int i = 0; good[i]; i++)
		ck_assert_msg(refname_repo_valid(good[i]), "rejected '%s'", good[i]);
}
END_TEST

START_TEST(validates_tags)
{
	ck_assert(refname_tag_valid("latest"));
	ck_assert(refname_tag_valid("_x"));
	ck_assert(refname_tag_valid("v1.2.3-rc_1"));
	ck_assert(!refname_tag_valid(""));
	ck_assert(!refname_tag_valid(".hidden"));
	ck_assert(!refname_tag_valid("-x"));
	ck_assert(!refname_tag_valid("a/b"));
	ck_assert(!refname_tag_valid("a:b"));
	char t[200];
	memset(t, 'a', 129);
	t[129] = '\0';
	ck_assert(!refname_tag_valid(t));
	t[128] = '\0';
	ck_assert(refname_tag_valid(t));
}
END_TEST

START_TEST(parses_single_ranges)
{
	struct route_range r;
	struct rs_err err = {0};
	ck_assert_int_eq(route_parse_range(NULL, 1000, &r, &err), RS_OK);
	ck_assert(!r.partial);
	ck_assert_uint_eq(r.end, 1000);
	ck_assert_int_eq(route_parse_range("bytes=0-99", 1000, &r, &err), RS_OK);
	ck_assert(r.partial);
	ck_assert_uint_eq(r.start, 0);
	ck_assert_uint_eq(r.end, 100);
	ck_assert_int_eq(route_parse_range("bytes=100-", 1000, &r, &err), RS_OK);
	ck_assert_uint_eq(r.start, 100);
	ck_assert_uint_eq(r.end, 1000);
	ck_assert_int_eq(route_parse_range("bytes=-10", 1000, &r, &err), RS_OK);
	ck_assert_uint_eq(r.start, 990);
	ck_assert_uint_eq(r.end, 1000);
	ck_assert_int_eq(route_parse_range("bytes=-5000", 1000, &r, &err), RS_OK);
	ck_assert_uint_eq(r.start, 0);
	ck_assert_int_eq(route_parse_range("bytes=900-5000", 1000, &r, &err), RS_OK);
	ck_assert_uint_eq(r.end, 1000);
}
END_TEST

START_TEST(ignores_unusable_ranges)
{
	static const char *ignored[] = {"items=0-1", "bytes=0-1,5-6", "bytes=abc", "bytes=5-2", "bytes=-",
	                                "bytes=1-x", "bytes=99999999999999999999999-", "bytes=--1", NULL};
	for (int i = 0; ignored[i]; i++) {
		struct route_range r;
		struct rs_err err = {0};
		ck_assert_int_eq(route_parse_range(ignored[i], 1000, &r, &err), RS_OK);
		ck_assert_msg(!r.partial, "'%s' treated as a range", ignored[i]);
	}
}
END_TEST

START_TEST(rejects_unsatisfiable_ranges)
{
	struct route_range r;
	struct rs_err err = {0};
	ck_assert_int_eq(route_parse_range("bytes=1000-", 1000, &r, &err), RS_RANGE);
	ck_assert_str_eq(err.msg, "range 'bytes=1000-' starts beyond the blob's 1000 bytes");
	ck_assert_int_eq(route_parse_range("bytes=-0", 1000, &r, &err), RS_RANGE);
	ck_assert_int_eq(route_parse_range("bytes=0-0", 0, &r, &err), RS_RANGE);
}
END_TEST

START_TEST(matches_accept_values)
{
	const char *containerd[] = {"application/vnd.docker.distribution.manifest.v2+json, "
	                            "application/vnd.oci.image.index.v1+json;q=0.9, */*"};
	const char *lines[] = {"application/vnd.oci.image.manifest.v1+json",
	                       "application/vnd.docker.distribution.manifest.v2+json"};
	ck_assert(route_accepts(lines, 2, "application/vnd.docker.distribution.manifest.v2+json"));
	ck_assert(!route_accepts(lines, 2, "application/vnd.oci.image.index.v1+json"));
	ck_assert(!route_accepts(lines, 1, "application/vnd.docker.distribution.manifest.v2+json"));
	ck_assert(route_accepts(containerd, 1, "application/vnd.oci.image.index.v1+json"));
	ck_assert(route_accepts(containerd, 1, "text/whatever")); /* the wildcard */
	ck_assert(!route_accepts(NULL, 0, "application/json"));
	const char *prefix[] = {"application/vnd.oci.image.manifest.v1+jsonX"};
	ck_assert(!route_accepts(prefix, 1, "application/vnd.oci.image.manifest.v1+json"));
}
END_TEST

START_TEST(maps_codes_to_registry_errors)
{
	struct route_error e = route_map_error(RS_NOT_FOUND, ROUTE_MANIFEST);
	ck_assert_uint_eq(e.status, 404);
	ck_assert_str_eq(e.code, "MANIFEST_UNKNOWN");
	e = route_map_error(RS_NOT_FOUND, ROUTE_BLOB);
	ck_assert_str_eq(e.code, "BLOB_UNKNOWN");
	e = route_map_error(RS_NOT_FOUND, ROUTE_NAME);
	ck_assert_str_eq(e.code, "NAME_UNKNOWN");
	e = route_map_error(RS_DIGEST_INVALID, ROUTE_BLOB);
	ck_assert_uint_eq(e.status, 400);
	ck_assert_str_eq(e.code, "DIGEST_INVALID");
	e = route_map_error(RS_BAD_INPUT, ROUTE_OTHER);
	ck_assert_str_eq(e.code, "NAME_INVALID");
	e = route_map_error(RS_RANGE, ROUTE_BLOB);
	ck_assert_uint_eq(e.status, 416);
	e = route_map_error(RS_UPSTREAM, ROUTE_BLOB);
	ck_assert_uint_eq(e.status, 502);
	ck_assert_str_eq(e.code, "UNAVAILABLE");
	e = route_map_error(RS_DIGEST_MISMATCH, ROUTE_BLOB);
	ck_assert_uint_eq(e.status, 502);
	e = route_map_error(RS_UNSUPPORTED, ROUTE_OTHER);
	ck_assert_uint_eq(e.status, 405);
	e = route_map_error(RS_NOMEM, ROUTE_OTHER);
	ck_assert_uint_eq(e.status, 500);
	e = route_map_error((enum rs_code)999, ROUTE_OTHER);
	ck_assert_uint_eq(e.status, 500);
	/* the write side: a mismatch is the client's fault */
	e = route_map_error(RS_DIGEST_MISMATCH, ROUTE_UPLOAD);
	ck_assert_uint_eq(e.status, 400);
	ck_assert_str_eq(e.code, "DIGEST_INVALID");
	e = route_map_error(RS_NOT_FOUND, ROUTE_MANIFEST_PUT);
	ck_assert_uint_eq(e.status, 400);
	ck_assert_str_eq(e.code, "MANIFEST_BLOB_UNKNOWN");
	e = route_map_error(RS_NOT_FOUND, ROUTE_UPLOAD);
	ck_assert_uint_eq(e.status, 404);
	ck_assert_str_eq(e.code, "BLOB_UPLOAD_UNKNOWN");
	e = route_map_error(RS_RANGE, ROUTE_UPLOAD);
	ck_assert_uint_eq(e.status, 416);
	e = route_map_error(RS_TOO_LARGE, ROUTE_MANIFEST_PUT);
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
	static const enum route_what what[] = {ROUTE_UPLOAD, ROUTE_UPLOAD_START, ROUTE_MANIFEST_PUT};
	for (size_t w = 0; w < sizeof(what) / sizeof(what[0]); w++) {
		for (int c = RS_OK + 1; c < RS_CODE_COUNT; c++) {
			struct route_error e = route_map_error((enum rs_code)c, what[w]);
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
		enum route_what what;
		unsigned status;
		const char *name;
	} cases[] = {
	        {RS_TOO_LARGE, ROUTE_UPLOAD_START, 429, "TOOMANYREQUESTS"},
	        {RS_TOO_LARGE, ROUTE_UPLOAD, 413, "SIZE_INVALID"},
	        {RS_NOT_FOUND, ROUTE_UPLOAD_START, 404, "BLOB_UPLOAD_UNKNOWN"},
	        {RS_BAD_INPUT, ROUTE_MANIFEST_PUT, 400, "MANIFEST_INVALID"},
	        {RS_DIGEST_INVALID, ROUTE_MANIFEST_PUT, 400, "DIGEST_INVALID"},
	        {RS_RANGE, ROUTE_UPLOAD, 416, "BLOB_UPLOAD_INVALID"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct route_error e = route_map_error(cases[i].code, cases[i].what);
		ck_assert_msg(e.status == cases[i].status && strcmp(e.code, cases[i].name) == 0,
		              "case %zu: got %u %s, expected %u %s", i, e.status, e.code, cases[i].status, cases[i].name);
	}
}
END_TEST

static Suite *route_suite(void)
{
	Suite *s = suite_create("route");
	TCase *tc = tcase_create("route");
	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, default_upstream_adds_library_prefix);
	tcase_add_test(tc, ns_parameter_picks_upstream);
	tcase_add_test(tc, unknown_ns_is_not_found);
	tcase_add_test(tc, first_component_picks_upstream);
	tcase_add_test(tc, rejects_invalid_names);
	tcase_add_test(tc, accepts_valid_names);
	tcase_add_test(tc, validates_tags);
	tcase_add_test(tc, parses_single_ranges);
	tcase_add_test(tc, ignores_unusable_ranges);
	tcase_add_test(tc, rejects_unsatisfiable_ranges);
	tcase_add_test(tc, matches_accept_values);
	tcase_add_test(tc, maps_codes_to_registry_errors);
	tcase_add_test(tc, write_errors_use_spec_codes);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(route_suite());
}
