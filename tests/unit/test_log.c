/* test_log: every log line is one valid JSON object whatever the values:
 * long values are cut with a marker (never a NUL byte or a half escape in
 * the line), the numbers after a long path survive, and the escaping of
 * log_json_escape never splits an escape sequence or a UTF-8 character. */
#include "proxy/obs/log.h"

#include "fixture.h"

#include <check.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Run log_request(r) with stderr in a file; the line written, parsed. */
static json_t *logged(const struct log_request *r, char **raw, size_t *raw_len)
{
	const char *path = fixture_path("stderr.log");
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	int saved = dup(STDERR_FILENO);
	ck_assert_int_ge(saved, 0);
	ck_assert_int_ge(dup2(fd, STDERR_FILENO), 0);
	log_request(r);
	ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
	close(saved);
	close(fd);
	*raw = fixture_read_file(path, raw_len);
	ck_assert_uint_gt(*raw_len, 2);
	ck_assert_msg(memchr(*raw, '\0', *raw_len) == NULL, "a NUL byte in the line");
	ck_assert_int_eq((*raw)[*raw_len - 1], '\n');
	ck_assert_ptr_eq(memchr(*raw, '\n', *raw_len), *raw + *raw_len - 1);
	json_error_t je;
	json_t *j = json_loadb(*raw, *raw_len, 0, &je);
	ck_assert_msg(j != NULL, "not JSON: %s (%.200s)", je.text, *raw);
	return j;
}

START_TEST(long_path_keeps_the_line_valid)
{
	size_t n = 70000;
	char *path = malloc(n + 1);
	ck_assert_ptr_nonnull(path);
	for (size_t i = 0; i < n; i++)
		path[i] = "a\"\\\n\x01/"[i % 6]; /* every escape kind */
	path[n] = '\0';
	struct log_request r = {.method = "GET", .path = path, .route = "manifest", .status = 414, .bytes = 12,
				.ms = 3, .ua = path, .error = path};
	char *raw;
	size_t len;
	json_t *j = logged(&r, &raw, &len);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "status")), 414);
	ck_assert_int_eq(json_integer_value(json_object_get(j, "bytes")), 12);
	ck_assert_str_eq(json_string_value(json_object_get(j, "route")), "manifest");
	const char *p = json_string_value(json_object_get(j, "path"));
	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_nonnull(strstr(p, "...(truncated)"));
	ck_assert_ptr_nonnull(json_object_get(j, "error"));
	ck_assert_ptr_nonnull(json_object_get(j, "ua"));
	json_decref(j);
	free(raw);
	free(path);
}
END_TEST

START_TEST(short_values_are_whole)
{
	struct log_request r = {.method = "GET", .path = "/v2/a/\"b\"/\xc3\xa9", .route = "blob", .status = 200};
	char *raw;
	size_t len;
	json_t *j = logged(&r, &raw, &len);
	ck_assert_str_eq(json_string_value(json_object_get(j, "path")), "/v2/a/\"b\"/\xc3\xa9");
	ck_assert_str_eq(json_string_value(json_object_get(j, "cache")), "-");
	json_decref(j);
	free(raw);
}
END_TEST

/* Every cut of every buffer size: NUL-terminated at *pos, a whole prefix
 * of the escaped string (or it plus the marker), valid once quoted. */
START_TEST(escape_never_splits_a_unit)
{
	const char *in = "x\xc3\xa9y\"\n\x02\xe2\x82\xacz";
	for (size_t cap = 1; cap < 64; cap++) {
		char out[80];
		memset(out, '#', sizeof(out));
		out[0] = '"';
		size_t pos = 1;
		log_json_escape(out, cap + 1, &pos, in);
		ck_assert_uint_le(pos, cap);
		ck_assert_int_eq(out[pos], '\0');
		char quoted[96];
		snprintf(quoted, sizeof(quoted), "%s\"", out);
		json_error_t je;
		json_t *j = json_loads(quoted, JSON_DECODE_ANY, &je);
		ck_assert_msg(j != NULL, "cap %zu: '%s' is not a JSON string (%s)", cap, quoted, je.text);
		json_decref(j);
	}
}
END_TEST

static Suite *log_suite(void)
{
	Suite *s = suite_create("log");
	TCase *t = tcase_create("core");
	tcase_add_checked_fixture(t, fixture_tmpdir_setup, fixture_tmpdir_teardown);
	tcase_add_test(t, long_path_keeps_the_line_valid);
	tcase_add_test(t, short_values_are_whole);
	tcase_add_test(t, escape_never_splits_a_unit);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	return fixture_run_suite(log_suite());
}
