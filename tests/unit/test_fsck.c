/* test_fsck: the store's offline check and the scrub's file walk and hash
 * (store/fsck.h, store/scrub.h) on a store built in the test's temp
 * directory through blobstore.h, then damaged by hand: corrupt, stray and
 * untyped objects, a broken tag map, temp files; counts without and with
 * repair, and what repair leaves. */
#include "fsck.h"
#include "scrub.h"

#include "digest.h"
#include "fixture.h"
#include "store_fixture.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void put_blob(struct blobstore *bs, uint64_t seed, size_t len, char d[DIGEST_STR_SIZE])
{
	unsigned char *b = fixture_bytes(seed, len);
	digest_buffer(d, b, len);
	struct rs_err err = {0};
	struct blobstore_writer *w = NULL;
	ck_assert_int_eq(blobstore_writer_new(&w, bs, BLOBSTORE_BLOB, d, (int64_t)len, &err), RS_OK);
	ck_assert_int_eq(blobstore_writer_write(w, b, len, &err), RS_OK);
	ck_assert_int_eq(blobstore_writer_commit(w, &err), RS_OK);
	free(b);
}

static void object_path(char *out, size_t cap, const char *kdir, const char *digest)
{
	const char *hex = digest_hex(digest);
	snprintf(out, cap, "%s/%s/sha256/%.2s/%s", store_fixture_data(), kdir, hex, hex);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	ck_assert_msg(f != NULL, "cannot write %s", path);
	fputs(text, f);
	fclose(f);
}

struct count {
	unsigned objects, stray;
};

static bool count_visit(void *ctx, enum blobstore_kind kind, const char *hex, bool stray, const char *path,
                        const char *rel)
{
	struct count *c = ctx;
	(void)kind;
	(void)path;
	(void)rel;
	if (stray) {
		c->stray++;
		ck_assert_ptr_null(hex);
	} else {
		c->objects++;
		ck_assert_uint_eq(strlen(hex), 64);
	}
	return true;
}

START_TEST(walk_and_hash)
{
	struct blobstore *bs = store_fixture_open(0);
	char d1[DIGEST_STR_SIZE], d2[DIGEST_STR_SIZE], p[4096];
	put_blob(bs, 1, 5000, d1);
	put_blob(bs, 2, 300000, d2);
	const char *man = "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\"}";
	char dm[DIGEST_STR_SIZE];
	digest_buffer(dm, man, strlen(man));
	struct rs_err err = {0};
	ck_assert_int_eq(blobstore_put_manifest(bs, dm, "application/vnd.oci.image.manifest.v1+json", man, strlen(man),
	                                        &err),
	                 RS_OK);
	snprintf(p, sizeof(p), "%s/blobs/sha256/zz", store_fixture_data());
	write_text(p, "not a bucket");
	struct count c = {0};
	ck_assert_int_eq(scrub_walk(store_fixture_data(), count_visit, &c, &err), RS_OK);
	ck_assert_uint_eq(c.objects, 3); /* two blobs and a manifest; its .type is not visited */
	ck_assert_uint_eq(c.stray, 1);
	bool ok = false;
	uint64_t size = 0;
	object_path(p, sizeof(p), "blobs", d2);
	ck_assert_int_eq(scrub_hash_file(p, digest_hex(d2), &ok, &size, NULL, NULL, &err), RS_OK);
	ck_assert(ok);
	ck_assert_uint_eq(size, 300000);
	ck_assert_int_eq(scrub_hash_file(p, digest_hex(d1), &ok, &size, NULL, NULL, &err), RS_OK);
	ck_assert(!ok);
	object_path(p, sizeof(p), "blobs", "sha256:0000000000000000000000000000000000000000000000000000000000000000");
	ck_assert_int_eq(scrub_hash_file(p, "00", &ok, &size, NULL, NULL, &err), RS_NOT_FOUND);
	/* a missing store root is no error */
	ck_assert_int_eq(scrub_walk("/nonexistent-regslim-root", count_visit, &c, &err), RS_OK);
	blobstore_free(bs);
}
END_TEST

START_TEST(fsck_finds_and_repairs)
{
	struct blobstore *bs = store_fixture_open(0);
	char d1[DIGEST_STR_SIZE], d2[DIGEST_STR_SIZE], p[4096];
	put_blob(bs, 11, 4000, d1);
	put_blob(bs, 12, 7000, d2);
	struct rs_err err = {0};
	struct blobstore_tag tag = {.fetched = 1};
	snprintf(tag.digest, sizeof(tag.digest), "%s", d1);
	snprintf(tag.media_type, sizeof(tag.media_type), "application/vnd.oci.image.manifest.v1+json");
	ck_assert_int_eq(blobstore_put_tag(bs, "docker.io", "library/x", "v1", &tag, &err), RS_OK);
	blobstore_free(bs);

	FILE *out = tmpfile();
	struct fsck_stats st;
	ck_assert_int_eq(fsck_run(store_fixture_data(), false, out, &st, &err), RS_OK);
	ck_assert_uint_eq(st.objects, 2);
	ck_assert_uint_eq(st.bytes, 11000);
	ck_assert_uint_eq(st.left, 0);

	/* damage: flip a byte of d2, a stray file, a temp file, a broken tag */
	object_path(p, sizeof(p), "blobs", d2);
	FILE *f = fopen(p, "r+");
	ck_assert_ptr_nonnull(f);
	int first = fgetc(f);
	ck_assert_int_eq(fseek(f, 0, SEEK_SET), 0);
	fputc(first ^ 0xff, f);
	fclose(f);
	char stray[4096], temp[4096], tagp[4096];
	snprintf(stray, sizeof(stray), "%s/manifests/sha256/readme.txt", store_fixture_data());
	write_text(stray, "x");
	snprintf(temp, sizeof(temp), "%s/tmp/blob-1", store_fixture_data());
	write_text(temp, "partial");
	snprintf(tagp, sizeof(tagp), "%s/tags/docker.io/library/x/_tags/v1.json", store_fixture_data());
	write_text(tagp, "garbage");
	ck_assert_int_eq(fsck_run(store_fixture_data(), false, out, &st, &err), RS_OK);
	ck_assert_uint_eq(st.corrupt, 1);
	ck_assert_uint_eq(st.stray, 1);
	ck_assert_uint_eq(st.temp, 1);
	ck_assert_uint_eq(st.broken, 1);
	ck_assert_uint_eq(st.left, 4);
	ck_assert_uint_eq(st.repaired, 0);
	ck_assert_int_eq(access(p, F_OK), 0);

	ck_assert_int_eq(fsck_run(store_fixture_data(), true, out, &st, &err), RS_OK);
	ck_assert_uint_eq(st.repaired, 4);
	ck_assert_uint_eq(st.left, 0);
	ck_assert_int_ne(access(p, F_OK), 0);
	ck_assert_int_ne(access(stray, F_OK), 0);
	ck_assert_int_ne(access(temp, F_OK), 0);
	ck_assert_int_ne(access(tagp, F_OK), 0);
	object_path(p, sizeof(p), "blobs", d1);
	ck_assert_int_eq(access(p, F_OK), 0); /* the good one stays */

	ck_assert_int_eq(fsck_run(store_fixture_data(), false, out, &st, &err), RS_OK);
	ck_assert_uint_eq(st.objects, 1);
	ck_assert_uint_eq(st.left, 0);
	fclose(out);
	ck_assert_int_eq(fsck_run("/nonexistent-regslim-data", false, stdout, &st, &err), RS_NOT_FOUND);
}
END_TEST

static Suite *fsck_suite(void)
{
	Suite *s = suite_create("fsck");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, store_fixture_setup, store_fixture_teardown);
	tcase_add_test(tc, walk_and_hash);
	tcase_add_test(tc, fsck_finds_and_repairs);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(fsck_suite());
}
