/* Unit tests for optimizer/digest.c: SHA-256 values, streaming splits,
 * byte counts, and strict parsing of digest strings. */
#include "optimizer/digest.h"

#include "fixture.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#define EMPTY "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define ABC "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

START_TEST(hashes_known_vectors)
{
	char out[DIGEST_STR_SIZE];
	digest_buffer(out, "", 0);
	ck_assert_str_eq(out, EMPTY);
	digest_buffer(out, "abc", 3);
	ck_assert_str_eq(out, ABC);
}
END_TEST

START_TEST(streaming_equals_one_shot_for_every_split)
{
	unsigned char buf[5000];
	unsigned seed = 12345;
	for (size_t i = 0; i < sizeof(buf); i++) {
		seed = seed * 1103515245u + 12345u;
		buf[i] = (unsigned char)(seed >> 16);
	}
	char want[DIGEST_STR_SIZE], got[DIGEST_STR_SIZE];
	digest_buffer(want, buf, sizeof(buf));
	struct digest_ctx *d = digest_new();
	ck_assert_ptr_nonnull(d);
	for (int round = 0; round < 50; round++) {
		digest_reset(d);
		size_t pos = 0;
		while (pos < sizeof(buf)) {
			seed = seed * 1103515245u + 12345u;
			size_t n = (seed >> 16) % 700;
			if (n > sizeof(buf) - pos)
				n = sizeof(buf) - pos;
			digest_update(d, buf + pos, n);
			pos += n;
		}
		ck_assert_uint_eq(digest_count(d), sizeof(buf));
		digest_final(d, got);
		ck_assert_str_eq(got, want);
	}
	digest_free(d);
}
END_TEST

START_TEST(final_keeps_the_running_hash)
{
	struct digest_ctx *d = digest_new();
	char out[DIGEST_STR_SIZE];
	digest_final(d, out);
	ck_assert_str_eq(out, EMPTY);
	digest_update(d, "ab", 2);
	digest_final(d, out);
	digest_update(d, "c", 1);
	digest_final(d, out);
	ck_assert_str_eq(out, ABC);
	ck_assert_uint_eq(digest_count(d), 3);
	digest_free(d);
	digest_free(NULL);
}
END_TEST

START_TEST(accepts_only_lowercase_sha256)
{
	struct rs_err err = {0};
	ck_assert(digest_valid(ABC));
	ck_assert_int_eq(digest_parse(ABC, &err), RS_OK);
	const char *abc = ABC;
	ck_assert_str_eq(digest_hex(abc), abc + 7);
	static const char *bad[] = {
		"", "sha256:", "sha256:xyz", "sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
		"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a",
		"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015add",
		"sha256:../../../../etc/passwd", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
		"SHA256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", NULL};
	for (int i = 0; bad[i]; i++) {
		ck_assert_msg(!digest_valid(bad[i]), "accepted '%s'", bad[i]);
		ck_assert_int_ne(digest_parse(bad[i], &err), RS_OK);
	}
	ck_assert_int_eq(digest_parse("sha256:xyz", &err), RS_DIGEST_INVALID);
	ck_assert_str_eq(err.msg, "invalid digest 'sha256:xyz': expected sha256: and 64 lower-case hex digits");
	ck_assert(!digest_valid(NULL));
}
END_TEST

START_TEST(names_unsupported_algorithms)
{
	struct rs_err err = {0};
	ck_assert_int_eq(digest_parse("sha512:abcd", &err), RS_UNSUPPORTED);
	ck_assert_str_eq(err.msg, "digest algorithm 'sha512' is not supported (only sha256)");
}
END_TEST

static Suite *digest_suite(void)
{
	Suite *s = suite_create("digest");
	TCase *tc = tcase_create("digest");
	tcase_add_test(tc, hashes_known_vectors);
	tcase_add_test(tc, streaming_equals_one_shot_for_every_split);
	tcase_add_test(tc, final_keeps_the_running_hash);
	tcase_add_test(tc, accepts_only_lowercase_sha256);
	tcase_add_test(tc, names_unsupported_algorithms);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(digest_suite());
}
