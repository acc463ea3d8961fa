/* test_fsutil: the shared file helpers (config/fsutil.c) on a private temp
 * directory per test: mkdir -p, whole-file reads with their caps and error
 * codes, full writes, atomic replace (and that a failed one leaves no temp
 * file), the parent of a path and tree removal. */
#include "fsutil.h"

#include "fixture.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool is_dir(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Entries of dir other than . and .. */
static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	ck_assert_ptr_nonnull(d);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

START_TEST(mkdir_p_creates_parents_and_reports_creation)
{
	struct rs_err err = {0};
	bool created = false;
	const char *p = fixture_path("a/b/c");
	ck_assert_int_eq(fsutil_mkdir_p(p, &created, &err), RS_OK);
	ck_assert(created);
	ck_assert(is_dir(p));
	/* again: fine, and not created this time */
	ck_assert_int_eq(fsutil_mkdir_p(p, &created, &err), RS_OK);
	ck_assert(!created);
	/* a trailing slash is the same directory */
	char q[600];
	snprintf(q, sizeof(q), "%s/", p);
	ck_assert_int_eq(fsutil_mkdir_p(q, NULL, &err), RS_OK);
}
END_TEST

START_TEST(mkdir_p_refuses_a_file_in_the_way)
{
	struct rs_err err = {0};
	fixture_write_text(fixture_path("f"), "x");
	ck_assert_int_eq(fsutil_mkdir_p(fixture_path("f"), NULL, &err), RS_IO);
	char want[600];
	snprintf(want, sizeof(want), "%s exists and is not a directory", fixture_path("f"));
	ck_assert_str_eq(err.msg, want);
	/* below a file: mkdir fails with ENOTDIR, named with its path */
	ck_assert_int_eq(fsutil_mkdir_p(fixture_path("f/sub"), NULL, &err), RS_IO);
	snprintf(want, sizeof(want), "mkdir %s: %s", fixture_path("f/sub"), strerror(ENOTDIR));
	ck_assert_str_eq(err.msg, want);
}
END_TEST

START_TEST(mkdir_p_refuses_too_long_path)
{
	char p[FSUTIL_PATH_MAX + 10];
	memset(p, 'a', sizeof(p) - 1);
	p[0] = '/';
	p[sizeof(p) - 1] = '\0';
	struct rs_err err = {0};
	ck_assert_int_eq(fsutil_mkdir_p(p, NULL, &err), RS_TOO_LARGE);
	ck_assert_msg(strstr(err.msg, "is 4105 bytes, limit is 4095"), "%s", err.msg);
}
END_TEST

START_TEST(read_small_reads_whole_file)
{
	const char *p = fixture_path("f");
	unsigned char *b = fixture_bytes(5, 3000);
	fixture_write_file(p, b, 3000);
	char *got = NULL;
	size_t len = 0;
	struct rs_err err = {0};
	ck_assert_int_eq(fsutil_read_small(&got, &len, p, 3000, &err), RS_OK);
	ck_assert_uint_eq(len, 3000);
	ck_assert(memcmp(got, b, 3000) == 0);
	ck_assert_int_eq(got[3000], '\0');
	free(got);
	free(b);
	/* empty file */
	fixture_write_text(p, "");
	ck_assert_int_eq(fsutil_read_small(&got, &len, p, 10, &err), RS_OK);
	ck_assert_uint_eq(len, 0);
	ck_assert_str_eq(got, "");
	free(got);
}
END_TEST

START_TEST(read_small_refuses_too_large_file)
{
	const char *p = fixture_path("big");
	fixture_write_text(p, "0123456789");
	char *got = (char *)"untouched";
	size_t len = 0;
	struct rs_err err = {0};
	ck_assert_int_eq(fsutil_read_small(&got, &len, p, 9, &err), RS_TOO_LARGE);
	ck_assert_ptr_null(got);
	char want[600];
	snprintf(want, sizeof(want), "%s is 10 bytes, limit is 9", p);
	ck_assert_str_eq(err.msg, want);
	/* the caller-buffer form: cap 10 holds at most 9 bytes and the NUL */
	char buf[10];
	ck_assert_int_eq(fsutil_read_into(buf, sizeof(buf), &len, p, &err), RS_TOO_LARGE);
	ck_assert_str_eq(err.msg, want);
	char buf11[11];
	ck_assert_int_eq(fsutil_read_into(buf11, sizeof(buf11), &len, p, &err), RS_OK);
	ck_assert_uint_eq(len, 10);
	ck_assert_str_eq(buf11, "0123456789");
}
END_TEST

START_TEST(read_small_missing_file_is_not_found)
{
	const char *p = fixture_path("nope");
	char *got = NULL;
	size_t len = 0;
	struct rs_err err = {0};
	ck_assert_int_eq(fsutil_read_small(&got, &len, p, 100, &err), RS_NOT_FOUND);
	ck_assert_ptr_null(got);
	char want[600];
	snprintf(want, sizeof(want), "open %s: %s", p, strerror(ENOENT));
	ck_assert_str_eq(err.msg, want);
	char buf[8];
	ck_assert_int_eq(fsutil_read_into(buf, sizeof(buf), &len, p, &err), RS_NOT_FOUND);
	ck_assert_str_eq(err.msg, want);
}
END_TEST

START_TEST(read_small_refuses_directory)
{
	char *got = NULL;
	size_t len = 0;
	struct rs_err err = {0};
	ck_assert_int_eq(fsutil_read_small(&got, &len, fixture_dir(), 100, &err), RS_BAD_INPUT);
	char want[600];
	snprintf(want, sizeof(want), "%s is not a regular file", fixture_dir());
	ck_assert_str_eq(err.msg, want);
	/* a path through a file is an I/O error, not "not found" */
	fixture_write_text(fixture_path("f"), "x");
	ck_assert_int_eq(fsutil_read_small(&got, &len, fixture_path("f/x"), 100, &err), RS_IO);
	ck_assert_msg(strstr(err.msg, strerror(ENOTDIR)), "%s", err.msg);
}
END_TEST

START_TEST(write_all_and_pwrite_all_write_everything)
{
	const char *p = fixture_path("w");
	unsigned char *b = fixture_bytes(9, 200000);
	struct rs_err err = {0};
	int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fsutil_write_all(fd, b, 100000, p, &err), RS_OK);
	ck_assert_int_eq(fsutil_pwrite_all(fd, b + 100000, 100000, 100000, p, &err), RS_OK);
	close(fd);
	size_t len = 0;
	char *got = fixture_read_file(p, &len);
	ck_assert_uint_eq(len, 200000);
	ck_assert(memcmp(got, b, len) == 0);
	free(got);
	free(b);
	/* a read-only fd: the message names the path and the errno text */
	fd = open(p, O_RDONLY);
	ck_assert_int_eq(fsutil_write_all(fd, "x", 1, p, &err), RS_IO);
	char want[600];
	snprintf(want, sizeof(want), "write %s: %s", p, strerror(EBADF));
	ck_assert_str_eq(err.msg, want);
	ck_assert_int_eq(fsutil_pwrite_all(fd, "x", 1, 0, p, &err), RS_IO);
	ck_assert_str_eq(err.msg, want);
	close(fd);
}
END_TEST

START_TEST(write_file_creates_and_truncates)
{
	const char *p = fixture_path("f");
	struct rs_err err = {0};
	ck_assert_int_eq(fsutil_write_file(p, "longer text", 11, true, &err), RS_OK);
	ck_assert_int_eq(fsutil_write_file(p, "short", 5, false, &err), RS_OK);
	char *got = fixture_read_file(p, NULL);
	ck_assert_str_eq(got, "short");
	free(got);
	struct stat st;
	ck_assert_int_eq(stat(p, &st), 0);
	mode_t mask = umask(022);
	umask(mask);
	ck_assert_int_eq(st.st_mode & 0777, 0644 & ~mask);
}
END_TEST

START_TEST(write_file_into_unwritable_dir_fails)
{
	struct rs_err err = {0};
	/* a file where the directory should be: fails even for root */
	fixture_write_text(fixture_path("notdir"), "x");
	const char *p = fixture_path("notdir/f");
	ck_assert_int_eq(fsutil_write_file(p, "x", 1, false, &err), RS_IO);
	char want[600];
	snprintf(want, sizeof(want), "create %s: %s", p, strerror(ENOTDIR));
	ck_assert_str_eq(err.msg, want);
	if (geteuid() != 0) { /* root writes anywhere; permissions only bind the others */
		ck_assert_int_eq(mkdir(fixture_path("ro"), 0555), 0);
		p = fixture_path("ro/f");
		ck_assert_int_eq(fsutil_write_file(p, "x", 1, false, &err), RS_IO);
		snprintf(want, sizeof(want), "create %s: %s", p, strerror(EACCES));
		ck_assert_str_eq(err.msg, want);
	}
}
END_TEST

START_TEST(write_atomic_replaces_and_leaves_no_temp)
{
	const char *d = fixture_path("d");
	ck_assert_int_eq(mkdir(d, 0755), 0);
	const char *p = fixture_path("d/f");
	struct rs_err err = {0};
	ck_assert_int_eq(fsutil_write_atomic(p, NULL, "one", 3, &err), RS_OK);
	ck_assert_int_eq(fsutil_write_atomic(p, NULL, "two!", 4, &err), RS_OK);
	char *got = fixture_read_file(p, NULL);
	ck_assert_str_eq(got, "two!");
	free(got);
	ck_assert_int_eq(count_entries(d), 1);
	struct stat st;
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0644);
	/* through a temp dir on the same file system */
	const char *t = fixture_path("tmp");
	ck_assert_int_eq(mkdir(t, 0755), 0);
	ck_assert_int_eq(fsutil_write_atomic(p, t, "three", 5, &err), RS_OK);
	got = fixture_read_file(p, NULL);
	ck_assert_str_eq(got, "three");
	free(got);
	ck_assert_int_eq(count_entries(t), 0);
	ck_assert_int_eq(count_entries(d), 1);
}
END_TEST

START_TEST(write_atomic_failure_leaves_no_temp_and_keeps_target)
{
	struct rs_err err = {0};
	const char *d = fixture_path("d");
	ck_assert_int_eq(mkdir(d, 0755), 0);
	/* the target is a non-empty directory: the rename fails after the
	 * temp file was written and synced */
	const char *p = fixture_path("d/target");
	ck_assert_int_eq(mkdir(p, 0755), 0);
	fixture_write_text(fixture_path("d/target/keep"), "x");
	ck_assert_int_eq(fsutil_write_atomic(p, NULL, "data", 4, &err), RS_IO);
	ck_assert_msg(strncmp(err.msg, "rename ", 7) == 0 && strstr(err.msg, p), "%s", err.msg);
	ck_assert_int_eq(count_entries(d), 1); /* only target: no temp file left */
	ck_assert(is_dir(p));
	/* the same through a temp dir */
	const char *t = fixture_path("tmp");
	ck_assert_int_eq(mkdir(t, 0755), 0);
	ck_assert_int_eq(fsutil_write_atomic(p, t, "data", 4, &err), RS_IO);
	ck_assert_int_eq(count_entries(t), 0);
	/* the temp file cannot be created: nothing appears */
	const char *q = fixture_path("missing/f");
	ck_assert_int_eq(fsutil_write_atomic(q, NULL, "data", 4, &err), RS_IO);
	ck_assert_msg(strncmp(err.msg, "create ", 7) == 0 && strstr(err.msg, strerror(ENOENT)), "%s", err.msg);
	ck_assert(access(fixture_path("missing"), F_OK) != 0);
}
END_TEST

START_TEST(fsync_dir_reports_missing_dir)
{
	struct rs_err err = {0};
	ck_assert_int_eq(fsutil_fsync_dir(fixture_dir(), &err), RS_OK);
	const char *p = fixture_path("nope");
	ck_assert_int_eq(fsutil_fsync_dir(p, &err), RS_IO);
	char want[600];
	snprintf(want, sizeof(want), "open %s: %s", p, strerror(ENOENT));
	ck_assert_str_eq(err.msg, want);
}
END_TEST

START_TEST(parent_of_paths)
{
	char out[64];
	fsutil_parent(out, sizeof(out), "/a/b/c");
	ck_assert_str_eq(out, "/a/b");
	fsutil_parent(out, sizeof(out), "/a");
	ck_assert_str_eq(out, "/");
	fsutil_parent(out, sizeof(out), "rel");
	ck_assert_str_eq(out, ".");
	fsutil_parent(out, sizeof(out), "x/y");
	ck_assert_str_eq(out, "x");
	fsutil_parent(out, 4, "/abcdef/g");
	ck_assert_str_eq(out, "/ab");
}
END_TEST

START_TEST(scrub_path_replaces_every_occurrence)
{
	char t[] = "open /srv/data/tmp/x: no; see /srv/data/y and /srv/data";
	ck_assert_uint_eq(fsutil_scrub_path(t, "/srv/data", "<data>"), strlen("open <data>/tmp/x: no; see <data>/y and <data>"));
	ck_assert_str_eq(t, "open <data>/tmp/x: no; see <data>/y and <data>");
	char u[] = "a /x b";
	ck_assert_uint_eq(fsutil_scrub_path(u, "/x", "<longer>"), 6); /* never grows */
	ck_assert_str_eq(u, "a /x b");
	ck_assert_uint_eq(fsutil_scrub_path(u, "", "<d>"), 6);
}
END_TEST

START_TEST(rm_tree_removes_everything_but_not_through_links)
{
	struct rs_err err = {0};
	ck_assert_int_eq(fsutil_mkdir_p(fixture_path("t/a/b"), NULL, &err), RS_OK);
	fixture_write_text(fixture_path("t/a/b/f"), "x");
	fixture_write_text(fixture_path("t/g"), "y");
	ck_assert_int_eq(fsutil_mkdir_p(fixture_path("outside"), NULL, &err), RS_OK);
	fixture_write_text(fixture_path("outside/keep"), "z");
	ck_assert_int_eq(symlink(fixture_path("outside"), fixture_path("t/link")), 0);
	fsutil_rm_tree(fixture_path("t"));
	ck_assert(access(fixture_path("t"), F_OK) != 0);
	ck_assert(access(fixture_path("outside/keep"), F_OK) == 0);
	fsutil_rm_tree(fixture_path("t")); /* missing: fine */
	fixture_write_text(fixture_path("file"), "x");
	fsutil_rm_tree(fixture_path("file"));
	ck_assert(access(fixture_path("file"), F_OK) != 0);
}
END_TEST

static Suite *fsutil_suite(void)
{
	Suite *s = suite_create("fsutil");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, fixture_tmpdir_setup, fixture_tmpdir_teardown);
	tcase_add_test(tc, mkdir_p_creates_parents_and_reports_creation);
	tcase_add_test(tc, mkdir_p_refuses_a_file_in_the_way);
	tcase_add_test(tc, mkdir_p_refuses_too_long_path);
	tcase_add_test(tc, read_small_reads_whole_file);
	tcase_add_test(tc, read_small_refuses_too_large_file);
	tcase_add_test(tc, read_small_missing_file_is_not_found);
	tcase_add_test(tc, read_small_refuses_directory);
	tcase_add_test(tc, write_all_and_pwrite_all_write_everything);
	tcase_add_test(tc, write_file_creates_and_truncates);
	tcase_add_test(tc, write_file_into_unwritable_dir_fails);
	tcase_add_test(tc, write_atomic_replaces_and_leaves_no_temp);
	tcase_add_test(tc, write_atomic_failure_leaves_no_temp_and_keeps_target);
	tcase_add_test(tc, fsync_dir_reports_missing_dir);
	tcase_add_test(tc, parent_of_paths);
	tcase_add_test(tc, scrub_path_replaces_every_occurrence);
	tcase_add_test(tc, rm_tree_removes_everything_but_not_through_links);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(fsutil_suite());
}
