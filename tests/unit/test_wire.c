/* Unit tests for config/wire.c: tags/list answers read (Docker Hub's null,
 * strings only, malformed bodies refused) and written (escaped, one line),
 * and the check that an upstream's error answer carries only codes a
 * predicate accepts (issue 14: regslim passes on only spec codes). */
#include "config/wire.h"

#include "fixture.h"

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct seen {
	char text[256];
	size_t n;
};

static enum rs_code collect(void *ctx, const char *tag, struct rs_err *err)
{
	(void)err;
	struct seen *s = ctx;
	size_t len = strlen(s->text);
	snprintf(s->text + len, sizeof(s->text) - len, "%s%s", s->n ? "," : "", tag);
	s->n++;
	return RS_OK;
}

static enum rs_code refuse_second(void *ctx, const char *tag, struct rs_err *err)
{
	struct seen *s = ctx;
	if (s->n++ == 1)
		return rs_err_set(err, RS_NOMEM, "no room for %s", tag);
	return RS_OK;
}

static enum rs_code parse(const char *body, struct seen *s, struct rs_err *err)
{
	memset(s, 0, sizeof(*s));
	return wire_parse_tag_list(body, strlen(body), collect, s, err);
}

START_TEST(reads_tag_lists)
{
	struct seen s;
	struct rs_err err = {0};
	ck_assert_int_eq(parse("{\"name\":\"a/b\",\"tags\":[\"v2\",\"v1\",7,\"latest\"]}", &s, &err), RS_OK);
	ck_assert_str_eq(s.text, "v2,v1,latest"); /* upstream order kept; non-strings skipped */
	ck_assert_int_eq(parse("{\"name\":\"a\",\"tags\":null}", &s, &err), RS_OK);
	ck_assert_uint_eq(s.n, 0);
	ck_assert_int_eq(parse("{\"name\":\"a\"}", &s, &err), RS_OK);
	ck_assert_uint_eq(s.n, 0);
	ck_assert_int_eq(parse("{\"name\":\"a\",\"tags\":\"v1\"}", &s, &err), RS_BAD_INPUT);
	ck_assert_int_eq(parse("[\"v1\"]", &s, &err), RS_BAD_INPUT);
	ck_assert_int_eq(parse("<html>", &s, &err), RS_BAD_INPUT);
	ck_assert_int_eq(parse("", &s, &err), RS_BAD_INPUT);
	memset(&s, 0, sizeof(s));
	const char *three = "{\"tags\":[\"a\",\"b\",\"c\"]}";
	ck_assert_int_eq(wire_parse_tag_list(three, strlen(three), refuse_second, &s, &err), RS_NOMEM);
	ck_assert_uint_eq(s.n, 2); /* stopped at the first failure */
}
END_TEST

START_TEST(writes_tag_lists)
{
	char *out = NULL;
	size_t len = 0;
	struct rs_err err = {0};
	char *tags[] = {"a", "b\"c"};
	ck_assert_int_eq(wire_write_tag_list(&out, &len, "lib/x", tags, 2, &err), RS_OK);
	ck_assert_str_eq(out, "{\"name\":\"lib/x\",\"tags\":[\"a\",\"b\\\"c\"]}\n");
	ck_assert_uint_eq(len, strlen(out));
	free(out);
	ck_assert_int_eq(wire_write_tag_list(&out, &len, "lib/x", NULL, 0, &err), RS_OK);
	ck_assert_str_eq(out, "{\"name\":\"lib/x\",\"tags\":[]}\n");
	free(out);
}
END_TEST

static bool only_known(const char *code)
{
	return strcmp(code, "MANIFEST_UNKNOWN") == 0 || strcmp(code, "NAME_UNKNOWN") == 0;
}

static bool all(const char *body)
{
	return wire_error_codes_all(body, strlen(body), only_known);
}

START_TEST(checks_error_codes)
{
	ck_assert(all("{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"x\"}]}"));
	ck_assert(all("{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\"},{\"code\":\"NAME_UNKNOWN\"}]}"));
	ck_assert(!all("{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\"},{\"code\":\"NOT_FOUND\"}]}"));
	ck_assert(!all("{\"errors\":[{\"code\":\"NOT_FOUND\"}]}"));
	ck_assert(!all("{\"errors\":[{\"message\":\"no code\"}]}"));
	ck_assert(!all("{\"errors\":[]}"));
	ck_assert(!all("{\"errors\":\"MANIFEST_UNKNOWN\"}"));
	ck_assert(!all("404 page not found"));
	ck_assert(!wire_error_codes_all(NULL, 0, only_known));
}
END_TEST

static Suite *wire_suite(void)
{
	Suite *s = suite_create("wire");
	TCase *tc = tcase_create("wire");
	tcase_add_test(tc, reads_tag_lists);
	tcase_add_test(tc, writes_tag_lists);
	tcase_add_test(tc, checks_error_codes);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(wire_suite());
}
