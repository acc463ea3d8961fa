/* test_s3_bcache: proxy/store/s3_bcache.c, the s3 driver's local copies of
 * blobs: a fill that saw every byte in order and hashes to the digest
 * becomes a copy (and only then), bytes out of order or of another digest
 * leave nothing, a verified file is adopted by link, copies are bounded (the
 * least recently used go first), a drop forgets, and a new start removes
 * whatever an earlier process left. */
#include "s3_bcache.h"

#include "digest.h"
#include "fixture.h"

#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[4200];

static void setup(void)
{
	fixture_tmpdir_setup();
	snprintf(dir, sizeof(dir), "%s/copies", fixture_dir());
}

static struct s3_bcache *open_copies(uint64_t max)
{
	struct s3_bcache *b = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(s3_bcache_open(&b, dir, max, &err), RS_OK);
	return b;
}

/* hex of body's digest into hex */
static void hex_of(char hex[DIGEST_HEX_LEN + 1], const unsigned char *body, size_t len)
{
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	snprintf(hex, DIGEST_HEX_LEN + 1, "%s", dg + 7);
}

static bool copy_is(struct s3_bcache *b, const char *hex, const unsigned char *body, size_t len)
{
	int fd = s3_bcache_open_fd(b, hex, len);
	if (fd < 0)
		return false;
	unsigned char *got = malloc(len + 1);
	bool ok = pread(fd, got, len + 1, 0) == (ssize_t)len && memcmp(got, body, len) == 0;
	free(got);
	close(fd);
	return ok;
}

START_TEST(an_in_order_verified_fill_becomes_a_copy)
{
	struct s3_bcache *b = open_copies(1 << 30);
	size_t len = 3 * 100000 + 7;
	unsigned char *body = fixture_bytes(1, len);
	char hex[DIGEST_HEX_LEN + 1];
	hex_of(hex, body, len);
	struct s3_bcache_fill *f = s3_bcache_fill_new(b, hex, len);
	ck_assert_ptr_nonnull(f);
	/* windows that overlap what came before, as a reader's may */
	s3_bcache_fill_add(f, 0, body, 100000);
	s3_bcache_fill_add(f, 50000, body + 50000, 150000);
	ck_assert(s3_bcache_fill_active(f));
	ck_assert_int_eq(s3_bcache_open_fd(b, hex, len), -1); /* not before it is whole */
	s3_bcache_fill_add(f, 200000, body + 200000, len - 200000);
	ck_assert(!s3_bcache_fill_active(f));
	s3_bcache_fill_free(f);
	ck_assert(copy_is(b, hex, body, len));
	ck_assert_uint_eq(s3_bcache_bytes(b), len);
	ck_assert_int_eq(s3_bcache_open_fd(b, hex, len - 1), -1); /* another size: not this copy */
	s3_bcache_drop(b, hex);
	ck_assert_int_eq(s3_bcache_open_fd(b, hex, len), -1);
	ck_assert_uint_eq(s3_bcache_bytes(b), 0);
	ck_assert_int_eq(fixture_count_files(dir), 0);
	s3_bcache_free(b);
	free(body);
}
END_TEST

START_TEST(wrong_bytes_gaps_and_unfinished_fills_leave_nothing)
{
	struct s3_bcache *b = open_copies(1 << 30);
	size_t len = 70000;
	unsigned char *body = fixture_bytes(2, len);
	char hex[DIGEST_HEX_LEN + 1];
	hex_of(hex, body, len);
	/* bytes of another blob under this digest */
	unsigned char *other = fixture_bytes(3, len);
	struct s3_bcache_fill *f = s3_bcache_fill_new(b, hex, len);
	s3_bcache_fill_add(f, 0, other, len);
	s3_bcache_fill_free(f);
	ck_assert_int_eq(s3_bcache_open_fd(b, hex, len), -1);
	/* a gap: the reader jumped ahead */
	f = s3_bcache_fill_new(b, hex, len);
	s3_bcache_fill_add(f, 0, body, 1000);
	s3_bcache_fill_add(f, 2000, body + 2000, len - 2000);
	ck_assert(!s3_bcache_fill_active(f));
	s3_bcache_fill_free(f);
	ck_assert_int_eq(s3_bcache_open_fd(b, hex, len), -1);
	/* a reader that stopped half-way */
	f = s3_bcache_fill_new(b, hex, len);
	s3_bcache_fill_add(f, 0, body, len / 2);
	s3_bcache_fill_free(f);
	ck_assert_int_eq(s3_bcache_open_fd(b, hex, len), -1);
	ck_assert_int_eq(fixture_count_files(dir), 0);
	ck_assert_uint_eq(s3_bcache_bytes(b), 0);
	s3_bcache_free(b);
	free(body);
	free(other);
}
END_TEST

START_TEST(adopted_copies_are_bounded_least_recently_used_first)
{
	enum { N = 5000 };
	struct s3_bcache *b = open_copies(4 * N); /* room for four; a copy over a quarter is never kept */
	char hex[6][DIGEST_HEX_LEN + 1], path[4300];
	unsigned char *body[6];
	for (int i = 0; i < 6; i++) {
		body[i] = fixture_bytes(10 + (uint64_t)i, N);
		hex_of(hex[i], body[i], N);
		snprintf(path, sizeof(path), "%s/staged-%d", fixture_dir(), i);
		fixture_write_file(path, body[i], N);
		/* distinct use times: mtime orders the trim */
		struct timespec t[2] = {{1000000 + i, 0}, {1000000 + i, 0}};
		s3_bcache_adopt(b, hex[i], path, N);
		char cp[4300];
		snprintf(cp, sizeof(cp), "%s/%s", dir, hex[i]);
		utimensat(AT_FDCWD, cp, t, 0);
		if (i == 3) { /* the oldest is used again: now the newest */
			int fd = s3_bcache_open_fd(b, hex[0], N);
			ck_assert_int_ge(fd, 0);
			close(fd);
		}
		ck_assert_uint_le(s3_bcache_bytes(b), 4 * N);
	}
	/* 0 was used at i == 3; the fifth adoption passed the bound and trimmed to three copies (under
	 * 9/10 of four): the oldest, 1 and 2, went; the sixth fits */
	ck_assert(copy_is(b, hex[0], body[0], N));
	ck_assert(!copy_is(b, hex[1], body[1], N));
	ck_assert(!copy_is(b, hex[2], body[2], N));
	ck_assert(copy_is(b, hex[3], body[3], N));
	ck_assert(copy_is(b, hex[4], body[4], N));
	ck_assert(copy_is(b, hex[5], body[5], N));
	ck_assert_uint_eq(s3_bcache_bytes(b), 4 * N);
	/* larger than a quarter of the bound: never kept */
	unsigned char *big = fixture_bytes(99, N + 1);
	char bighex[DIGEST_HEX_LEN + 1];
	hex_of(bighex, big, N + 1);
	snprintf(path, sizeof(path), "%s/staged-big", fixture_dir());
	fixture_write_file(path, big, N + 1);
	s3_bcache_adopt(b, bighex, path, N + 1);
	ck_assert_int_eq(s3_bcache_open_fd(b, bighex, N + 1), -1);
	s3_bcache_free(b);
	/* a new start begins empty */
	b = open_copies(4 * N);
	ck_assert_int_eq(fixture_count_files(dir), 0);
	ck_assert_int_eq(s3_bcache_open_fd(b, hex[5], N), -1);
	s3_bcache_free(b);
	for (int i = 0; i < 6; i++)
		free(body[i]);
	free(big);
}
END_TEST

START_TEST(off_means_nothing_is_kept)
{
	struct s3_bcache *b = open_copies(0);
	ck_assert_ptr_null(b);
	ck_assert_ptr_null(s3_bcache_fill_new(b, "00", 1));
	ck_assert_int_eq(s3_bcache_open_fd(b, "00", 1), -1);
	s3_bcache_drop(b, "00");
	s3_bcache_free(b);
}
END_TEST

static Suite *s3_bcache_suite(void)
{
	Suite *s = suite_create("s3_bcache");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, fixture_tmpdir_teardown);
	tcase_add_test(tc, an_in_order_verified_fill_becomes_a_copy);
	tcase_add_test(tc, wrong_bytes_gaps_and_unfinished_fills_leave_nothing);
	tcase_add_test(tc, adopted_copies_are_bounded_least_recently_used_first);
	tcase_add_test(tc, off_means_nothing_is_kept);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(s3_bcache_suite());
}
