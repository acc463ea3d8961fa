/* test_s3_memo: proxy/store/s3_memo.c, the s3 driver's memo of manifests it
 * read: a remembered object comes back as an exact copy with its type, the
 * least recently used entry makes room (by count and by bytes), objects
 * larger than an eighth of the byte bound are never kept, a drop forgets, and
 * replacing a key does not count its bytes twice. */
#include "s3_memo.h"

#include "fixture.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool has(struct s3_memo *m, const char *key)
{
	char *b = NULL, *t = NULL;
	size_t n = 0;
	bool ok = s3_memo_get(m, key, &b, &n, &t);
	free(b);
	free(t);
	return ok;
}

START_TEST(copies_come_back_with_their_type)
{
	struct s3_memo *m = s3_memo_new(4, 1 << 20);
	ck_assert_ptr_nonnull(m);
	const char body[] = "{\"schemaVersion\":2}\0tail"; /* bytes, not a string: the NUL is kept */
	s3_memo_put(m, "p/cache/manifests/sha256/aa", body, sizeof(body), "application/vnd.oci.image.manifest.v1+json");
	char *b = NULL, *t = NULL;
	size_t n = 0;
	ck_assert(s3_memo_get(m, "p/cache/manifests/sha256/aa", &b, &n, &t));
	ck_assert_uint_eq(n, sizeof(body));
	ck_assert_int_eq(memcmp(b, body, n), 0);
	ck_assert_str_eq(t, "application/vnd.oci.image.manifest.v1+json");
	b[0] = 'X'; /* a copy: the memo keeps its own */
	free(b);
	free(t);
	ck_assert(s3_memo_get(m, "p/cache/manifests/sha256/aa", &b, &n, &t));
	ck_assert_int_eq(b[0], '{');
	free(b);
	free(t);
	ck_assert(!has(m, "p/push/manifests/sha256/aa"));
	s3_memo_drop(m, "p/cache/manifests/sha256/aa");
	ck_assert(!has(m, "p/cache/manifests/sha256/aa"));
	size_t e, by;
	s3_memo_stats(m, &e, &by);
	ck_assert_uint_eq(e, 0);
	ck_assert_uint_eq(by, 0);
	s3_memo_free(m);
}
END_TEST

START_TEST(least_recently_used_goes_first)
{
	struct s3_memo *m = s3_memo_new(3, 1 << 20);
	s3_memo_put(m, "a", "1", 1, "t");
	s3_memo_put(m, "b", "2", 1, "t");
	s3_memo_put(m, "c", "3", 1, "t");
	ck_assert(has(m, "a")); /* a is now the most recent: b goes */
	s3_memo_put(m, "d", "4", 1, "t");
	ck_assert(has(m, "a") && !has(m, "b") && has(m, "c") && has(m, "d"));
	s3_memo_put(m, "c", "33", 2, "t"); /* replaced, counted once */
	size_t e, by;
	s3_memo_stats(m, &e, &by);
	ck_assert_uint_eq(e, 3);
	ck_assert_uint_eq(by, 4);
	s3_memo_free(m);
}
END_TEST

START_TEST(bytes_are_bounded)
{
	enum { MAX = 8000 };
	struct s3_memo *m = s3_memo_new(100, MAX);
	char big[MAX / 8 + 1];
	memset(big, 'x', sizeof(big));
	s3_memo_put(m, "too-big", big, sizeof(big), "t");
	ck_assert(!has(m, "too-big"));
	char key[16];
	for (int i = 0; i < 20; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		s3_memo_put(m, key, big, MAX / 8, "t");
		size_t by;
		s3_memo_stats(m, NULL, &by);
		ck_assert_uint_le(by, MAX);
	}
	ck_assert(has(m, "k19") && has(m, "k12") && !has(m, "k11") && !has(m, "k0"));
	s3_memo_free(m);
}
END_TEST

static Suite *s3_memo_suite(void)
{
	Suite *s = suite_create("s3_memo");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, copies_come_back_with_their_type);
	tcase_add_test(tc, least_recently_used_goes_first);
	tcase_add_test(tc, bytes_are_bounded);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(s3_memo_suite());
}
