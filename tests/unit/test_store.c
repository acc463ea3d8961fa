/* test_store: the storage interface (store.h) with its fs driver, on a
 * private data directory per test: writers that verify on commit (and leave
 * nothing on a mismatch), ranged reads through reader handles, the two
 * areas kept apart, manifests with their media type, cache tags and
 * repository links, uploads and pushed images, the documents (optimization
 * results and reports, gate reports) round trip, scratch directories made
 * and removed, and the sweep at open of what a crash leaves (scratch
 * directories, temp files, documents staged beside their target by older
 * revisions). A driver without local descriptors (the fs driver wrapped
 * to hide them, as an object store driver would be) is read by positional
 * reads and spooled for store_open_fd. Blob contents are generated from
 * seeds. */
#include "store.h"

#include "fixture.h"
#include "store_driver.h"
#include "fsutil.h"
#include "store_fixture.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MT_MANIFEST "application/vnd.oci.image.manifest.v1+json"

static enum rs_code write_obj(struct store *s, enum store_area area, enum store_kind kind, const char *digest,
                              int64_t expected, const unsigned char *buf, size_t len, struct rs_err *err)
{
	struct store_writer *w = NULL;
	enum rs_code rc = store_writer_new(&w, s, area, kind, digest, expected, err);
	if (rc)
		return rc;
	uint64_t seed = 11;
	for (size_t pos = 0; pos < len;) {
		size_t n = 1 + (size_t)(fixture_rng_next(&seed) % 50000);
		if (n > len - pos)
			n = len - pos;
		if ((rc = store_writer_write(w, buf + pos, n, err))) {
			store_writer_abort(w);
			return rc;
		}
		pos += n;
	}
	ck_assert_uint_eq(store_writer_size(w), len);
	ck_assert_ptr_nonnull(store_writer_path(w));
	return store_writer_commit(w, err);
}

static bool exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* Entries of <data>/<sub> (files and directories, without . and ..). */
static int entries(const char *sub)
{
	char p[1024];
	snprintf(p, sizeof(p), "%s/%s", store_fixture_data(), sub);
	DIR *d = opendir(p);
	ck_assert_ptr_nonnull(d);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
	closedir(d);
	return n;
}

START_TEST(fs_driver_is_opened_from_the_configuration)
{
	struct store *s = store_fixture_store(0);
	ck_assert_str_eq(store_driver_name(s), "fs");
	ck_assert_uint_eq(store_size(s), 0);
	store_free(s);
	store_free(NULL);
}
END_TEST

START_TEST(writer_commits_a_verified_blob_read_by_ranges)
{
	struct store *s = store_fixture_store(0);
	size_t len = 300000;
	unsigned char *body = fixture_bytes(1, len);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	struct rs_err err = {0};
	ck_assert(!store_has(s, STORE_CACHE, STORE_BLOB, dg));
	ck_assert_msg(write_obj(s, STORE_CACHE, STORE_BLOB, dg, (int64_t)len, body, len, &err) == RS_OK, "%s", err.msg);
	ck_assert(store_has(s, STORE_CACHE, STORE_BLOB, dg));
	ck_assert_uint_eq(store_size(s), len);
	struct store_reader *r = NULL;
	ck_assert_int_eq(store_reader_open(s, STORE_CACHE, STORE_BLOB, dg, &r, &err), RS_OK);
	ck_assert_uint_eq(store_reader_size(r), len);
	unsigned char buf[1000];
	/* a range in the middle, the last bytes, and the end */
	ck_assert_int_eq(store_reader_pread(r, buf, 1000, 123456, &err), 1000);
	ck_assert(memcmp(buf, body + 123456, 1000) == 0);
	ck_assert_int_eq(store_reader_pread(r, buf, 1000, len - 10, &err), 10);
	ck_assert(memcmp(buf, body + len - 10, 10) == 0);
	ck_assert_int_eq(store_reader_pread(r, buf, 1000, len, &err), 0);
	ck_assert_int_ge(store_reader_fd(r), 0); /* the fs driver has local files */
	store_reader_close(r);
	/* a descriptor on the whole object */
	int fd = -1;
	uint64_t size = 0;
	ck_assert_int_eq(store_open_fd(s, STORE_CACHE, STORE_BLOB, dg, &fd, &size, &err), RS_OK);
	ck_assert_uint_eq(size, len);
	unsigned char *all = malloc(len);
	ck_assert_int_eq(pread(fd, all, len, 0), (ssize_t)len);
	ck_assert(memcmp(all, body, len) == 0);
	close(fd);
	free(all);
	/* writing it again is fine */
	ck_assert_int_eq(write_obj(s, STORE_CACHE, STORE_BLOB, dg, -1, body, len, &err), RS_OK);
	ck_assert_int_eq(store_fixture_count_files("tmp"), 0);
	free(body);
	store_free(s);
}
END_TEST

START_TEST(writer_mismatch_leaves_nothing)
{
	struct store *s = store_fixture_store(0);
	size_t len = 70000;
	unsigned char *body = fixture_bytes(2, len);
	char dg[DIGEST_STR_SIZE], other[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	digest_buffer(other, "other", 5);
	struct rs_err err = {0};
	/* wrong digest: refused at commit, naming both */
	ck_assert_int_eq(write_obj(s, STORE_CACHE, STORE_BLOB, other, -1, body, len, &err), RS_DIGEST_MISMATCH);
	ck_assert_ptr_nonnull(strstr(err.msg, other));
	ck_assert_ptr_nonnull(strstr(err.msg, dg));
	ck_assert(!store_has(s, STORE_CACHE, STORE_BLOB, other));
	ck_assert(!store_has(s, STORE_CACHE, STORE_BLOB, dg));
	/* too long: refused at the first byte beyond */
	ck_assert_int_eq(write_obj(s, STORE_CACHE, STORE_BLOB, dg, (int64_t)len - 1, body, len, &err),
	                 RS_DIGEST_MISMATCH);
	ck_assert_ptr_nonnull(strstr(err.msg, "expected"));
	/* too short: refused at commit */
	ck_assert_int_eq(write_obj(s, STORE_PUSHED, STORE_BLOB, dg, (int64_t)len + 1, body, len, &err),
	                 RS_DIGEST_MISMATCH);
	ck_assert(!store_has(s, STORE_PUSHED, STORE_BLOB, dg));
	/* an aborted writer leaves nothing either */
	struct store_writer *w = NULL;
	ck_assert_int_eq(store_writer_new(&w, s, STORE_CACHE, STORE_BLOB, dg, (int64_t)len, &err), RS_OK);
	ck_assert_int_eq(store_writer_write(w, body, 100, &err), RS_OK);
	char staged[4096];
	snprintf(staged, sizeof(staged), "%s", store_writer_path(w));
	ck_assert(exists(staged));
	store_writer_abort(w);
	ck_assert(!exists(staged));
	store_writer_abort(NULL);
	ck_assert_int_eq(store_fixture_count_files("tmp"), 0);
	ck_assert_int_eq(store_fixture_count_files("blobs"), 0);
	ck_assert_uint_eq(store_size(s), 0);
	/* a bad digest string */
	ck_assert_int_eq(store_writer_new(&w, s, STORE_CACHE, STORE_BLOB, "sha256:zz", -1, &err), RS_DIGEST_INVALID);
	struct store_reader *r = NULL;
	ck_assert_int_eq(store_reader_open(s, STORE_CACHE, STORE_BLOB, dg, &r, &err), RS_NOT_FOUND);
	ck_assert_ptr_null(r);
	free(body);
	store_free(s);
}
END_TEST

START_TEST(areas_are_kept_apart)
{
	struct store *s = store_fixture_store(0);
	const char *a = "in the cache", *b = "pushed";
	char da[DIGEST_STR_SIZE], db[DIGEST_STR_SIZE];
	digest_buffer(da, a, strlen(a));
	digest_buffer(db, b, strlen(b));
	struct rs_err err = {0};
	ck_assert_int_eq(write_obj(s, STORE_CACHE, STORE_BLOB, da, -1, (const unsigned char *)a, strlen(a), &err), RS_OK);
	ck_assert_int_eq(write_obj(s, STORE_PUSHED, STORE_BLOB, db, -1, (const unsigned char *)b, strlen(b), &err),
	                 RS_OK);
	ck_assert(store_has(s, STORE_CACHE, STORE_BLOB, da));
	ck_assert(!store_has(s, STORE_PUSHED, STORE_BLOB, da));
	ck_assert(store_has(s, STORE_PUSHED, STORE_BLOB, db));
	ck_assert(!store_has(s, STORE_CACHE, STORE_BLOB, db));
	ck_assert(!store_has(s, STORE_CACHE, STORE_MANIFEST, da));
	/* pushed images are never counted nor evicted with the cache */
	ck_assert_uint_eq(store_size(s), strlen(a));
	store_remove(s, STORE_PUSHED, STORE_BLOB, db);
	ck_assert(!store_has(s, STORE_PUSHED, STORE_BLOB, db));
	ck_assert(store_has(s, STORE_CACHE, STORE_BLOB, da));
	store_free(s);
}
END_TEST

/* A layerless image manifest whose config is cfgdoc, in area. */
static void put_image(struct store *s, enum store_area area, const char *cfgdoc, char cd[DIGEST_STR_SIZE],
                      char md[DIGEST_STR_SIZE], char *man, size_t cap)
{
	struct rs_err err = {0};
	digest_buffer(cd, cfgdoc, strlen(cfgdoc));
	ck_assert_int_eq(write_obj(s, area, STORE_BLOB, cd, -1, (const unsigned char *)cfgdoc, strlen(cfgdoc), &err),
	                 RS_OK);
	snprintf(man, cap,
	         "{\"schemaVersion\":2,\"mediaType\":\"" MT_MANIFEST "\","
	         "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"%s\",\"size\":%zu},"
	         "\"layers\":[]}",
	         cd, strlen(cfgdoc));
	digest_buffer(md, man, strlen(man));
	ck_assert_int_eq(store_manifest_put(s, area, md, MT_MANIFEST, man, strlen(man), &err), RS_OK);
}

START_TEST(manifests_keep_their_media_type)
{
	struct store *s = store_fixture_store(0);
	char cd[DIGEST_STR_SIZE], md[DIGEST_STR_SIZE], man[1024];
	put_image(s, STORE_CACHE, "{\"os\":\"linux\"}", cd, md, man, sizeof(man));
	struct rs_err err = {0};
	char *buf = NULL, *type = NULL;
	size_t len = 0;
	ck_assert_int_eq(store_manifest_get(s, STORE_CACHE, md, 1 << 20, &buf, &len, &type, &err), RS_OK);
	ck_assert_uint_eq(len, strlen(man));
	ck_assert(memcmp(buf, man, len) == 0);
	ck_assert_str_eq(type, MT_MANIFEST);
	free(buf);
	free(type);
	ck_assert_int_eq(store_manifest_get(s, STORE_PUSHED, md, 1 << 20, &buf, &len, &type, &err), RS_NOT_FOUND);
	ck_assert_ptr_null(buf);
	ck_assert_int_eq(store_manifest_get(s, STORE_CACHE, md, 10, &buf, &len, &type, &err), RS_TOO_LARGE);
	/* a body that is not the digest's */
	ck_assert_int_eq(store_manifest_put(s, STORE_CACHE, cd, MT_MANIFEST, man, strlen(man), &err),
	                 RS_DIGEST_MISMATCH);
	ck_assert(!store_has(s, STORE_CACHE, STORE_MANIFEST, cd));
	store_free(s);
}
END_TEST

START_TEST(cache_tags_and_links)
{
	struct store *s = store_fixture_store(0);
	char cd[DIGEST_STR_SIZE], md[DIGEST_STR_SIZE], man[1024];
	put_image(s, STORE_CACHE, "{\"os\":\"linux\"}", cd, md, man, sizeof(man));
	struct rs_err err = {0};
	struct store_tag t = {0}, got = {0};
	snprintf(t.digest, sizeof(t.digest), "%s", md);
	snprintf(t.media_type, sizeof(t.media_type), "%s", MT_MANIFEST);
	t.fetched = 1700000000;
	ck_assert_int_eq(store_tag_get(s, "docker.io", "library/x", "1", &got, &err), RS_NOT_FOUND);
	ck_assert_int_eq(store_tag_put(s, "docker.io", "library/x", "1", &t, &err), RS_OK);
	ck_assert_int_eq(store_tag_get(s, "docker.io", "library/x", "1", &got, &err), RS_OK);
	ck_assert_str_eq(got.digest, md);
	ck_assert_str_eq(got.media_type, MT_MANIFEST);
	ck_assert_int_eq(got.fetched, 1700000000);
	ck_assert_int_eq(store_tag_get(s, "ghcr.io", "library/x", "1", &got, &err), RS_NOT_FOUND);
	ck_assert_int_eq(store_tag_put(s, "docker.io", "../x", "1", &t, &err), RS_BAD_INPUT);
	/* links: one by one, and a whole image */
	ck_assert(!store_linked(s, "docker.io", "library/x", STORE_BLOB, cd));
	ck_assert_int_eq(store_link(s, "docker.io", "library/x", STORE_BLOB, cd, &err), RS_OK);
	ck_assert(store_linked(s, "docker.io", "library/x", STORE_BLOB, cd));
	ck_assert(!store_linked(s, "docker.io", "library/y", STORE_BLOB, cd));
	store_unlink(s, "docker.io", "library/x", STORE_BLOB, cd);
	ck_assert(!store_linked(s, "docker.io", "library/x", STORE_BLOB, cd));
	ck_assert_int_eq(store_link_image(s, "docker.io", "library/y", md, &err), RS_OK);
	ck_assert(store_linked(s, "docker.io", "library/y", STORE_MANIFEST, md));
	ck_assert(store_linked(s, "docker.io", "library/y", STORE_BLOB, cd));
	ck_assert(store_linked_by_image(s, "docker.io", "library/y", STORE_BLOB, cd));
	ck_assert(!store_linked_by_image(s, "docker.io", "library/x", STORE_BLOB, cd));
	ck_assert_int_eq(store_link_image(s, "docker.io", "library/y", cd, &err), RS_NOT_FOUND);
	ck_assert_int_eq(store_link(s, "docker.io", "library/y", STORE_BLOB, "sha256:zz", &err), RS_DIGEST_INVALID);
	store_free(s);
}
END_TEST

START_TEST(uploads_become_pushed_images)
{
	struct store *s = store_fixture_store(0);
	const char *cfgdoc = "{\"os\":\"linux\",\"architecture\":\"amd64\"}";
	char cd[DIGEST_STR_SIZE];
	digest_buffer(cd, cfgdoc, strlen(cfgdoc));
	struct rs_err err = {0};
	char uuid[STORE_UUID_SIZE];
	ck_assert_int_eq(store_upload_start(s, "team/app", uuid, &err), RS_OK);
	struct store_upload *u = NULL;
	ck_assert_int_eq(store_upload_open(s, "team/other", uuid, &u, &err), RS_NOT_FOUND);
	ck_assert_int_eq(store_upload_open(s, "team/app", uuid, &u, &err), RS_OK);
	ck_assert_int_eq(store_upload_write(u, cfgdoc, 10, &err), RS_OK);
	store_upload_close(u); /* kept for the next request */
	ck_assert_int_eq(store_upload_open(s, "team/app", uuid, &u, &err), RS_OK);
	ck_assert_uint_eq(store_upload_size(u), 10);
	ck_assert_int_eq(store_upload_write(u, cfgdoc + 10, strlen(cfgdoc) - 10, &err), RS_OK);
	ck_assert_int_eq(store_upload_commit(u, cd, &err), RS_OK);
	ck_assert(store_pushed_holds(s, "team/app", STORE_BLOB, cd));
	ck_assert(!store_pushed_holds(s, "team/other", STORE_BLOB, cd));
	ck_assert(store_has(s, STORE_PUSHED, STORE_BLOB, cd));
	ck_assert(!store_has(s, STORE_CACHE, STORE_BLOB, cd));
	/* a mount from a repository that holds it */
	ck_assert_int_eq(store_pushed_mount(s, "team/other", "team/app", cd, &err), RS_OK);
	ck_assert(store_pushed_holds(s, "team/other", STORE_BLOB, cd));
	ck_assert_int_eq(store_pushed_mount(s, "team/third", "team/nobody", cd, &err), RS_NOT_FOUND);
	/* a manifest by tag */
	char man[1024], md[DIGEST_STR_SIZE], out[DIGEST_STR_SIZE];
	snprintf(man, sizeof(man),
	         "{\"schemaVersion\":2,\"mediaType\":\"" MT_MANIFEST "\","
	         "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"%s\",\"size\":%zu},"
	         "\"layers\":[]}",
	         cd, strlen(cfgdoc));
	digest_buffer(md, man, strlen(man));
	ck_assert_msg(store_pushed_put_manifest(s, "team/app", "1.0", MT_MANIFEST, man, strlen(man), out, &err) == RS_OK,
	              "%s", err.msg);
	ck_assert_str_eq(out, md);
	struct store_tag t = {0};
	ck_assert_int_eq(store_pushed_tag_get(s, "team/app", "1.0", &t, &err), RS_OK);
	ck_assert_str_eq(t.digest, md);
	ck_assert_int_eq(store_pushed_tag_get(s, "team/app", "2.0", &t, &err), RS_NOT_FOUND);
	char *list = NULL;
	size_t len = 0;
	ck_assert_int_eq(store_pushed_tags_list(s, "team/app", &list, &len, &err), RS_OK);
	ck_assert_ptr_nonnull(strstr(list, "\"1.0\""));
	free(list);
	ck_assert(store_pushed_holds(s, "team/app", STORE_MANIFEST, md));
	store_pushed_forget_manifest(s, "team/app", md);
	ck_assert(!store_pushed_holds(s, "team/app", STORE_MANIFEST, md));
	/* a cancelled upload is gone */
	ck_assert_int_eq(store_upload_start(s, "team/app", uuid, &err), RS_OK);
	ck_assert_int_eq(store_upload_open(s, "team/app", uuid, &u, &err), RS_OK);
	store_upload_cancel(u);
	ck_assert_int_eq(store_upload_open(s, "team/app", uuid, &u, &err), RS_NOT_FOUND);
	store_free(s);
}
END_TEST

START_TEST(documents_round_trip)
{
	struct store *s = store_fixture_store(0);
	struct rs_err err = {0};
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, "m", 1);
	const char *res = "{\"digest\":\"x\"}\n", *rep = "{\"report\":1}\n", *gate = "{\"kind\":\"push-policy\"}\n";
	const char *key = "0123abcd-0123456789abcdef-zstd-v1.2.3";
	char *out = NULL;
	size_t len = 0;
	ck_assert_int_eq(store_doc_get(s, STORE_DOC_OPT_RESULT, NULL, key, 4096, &out, &len, &err), RS_NOT_FOUND);
	ck_assert_int_eq(store_doc_put(s, STORE_DOC_OPT_RESULT, NULL, key, res, strlen(res), &err), RS_OK);
	ck_assert_int_eq(store_doc_put(s, STORE_DOC_OPT_REPORT, NULL, dg, rep, strlen(rep), &err), RS_OK);
	ck_assert_int_eq(store_doc_put(s, STORE_DOC_GATE_REPORT, "team/app", dg, gate, strlen(gate), &err), RS_OK);
	ck_assert_int_eq(store_doc_get(s, STORE_DOC_OPT_RESULT, NULL, key, 4096, &out, &len, &err), RS_OK);
	ck_assert_str_eq(out, res);
	free(out);
	ck_assert_int_eq(store_doc_get(s, STORE_DOC_OPT_REPORT, NULL, dg, 4096, &out, &len, &err), RS_OK);
	ck_assert_str_eq(out, rep);
	ck_assert_uint_eq(len, strlen(rep));
	free(out);
	ck_assert_int_eq(store_doc_get(s, STORE_DOC_GATE_REPORT, "team/app", dg, 4096, &out, &len, &err), RS_OK);
	ck_assert_str_eq(out, gate);
	free(out);
	ck_assert_int_eq(store_doc_get(s, STORE_DOC_GATE_REPORT, "team/other", dg, 4096, &out, &len, &err), RS_NOT_FOUND);
	ck_assert_int_eq(store_doc_get(s, STORE_DOC_OPT_REPORT, NULL, dg, 4, &out, &len, &err), RS_TOO_LARGE);
	ck_assert_ptr_null(out);
	/* replaced whole */
	ck_assert_int_eq(store_doc_put(s, STORE_DOC_OPT_RESULT, NULL, key, "{}", 2, &err), RS_OK);
	ck_assert_int_eq(store_doc_get(s, STORE_DOC_OPT_RESULT, NULL, key, 4096, &out, &len, &err), RS_OK);
	ck_assert_str_eq(out, "{}");
	free(out);
	/* keys that could escape their place */
	ck_assert_int_eq(store_doc_put(s, STORE_DOC_OPT_RESULT, NULL, "../x", "{}", 2, &err), RS_BAD_INPUT);
	ck_assert_int_eq(store_doc_put(s, STORE_DOC_OPT_RESULT, NULL, ".hidden", "{}", 2, &err), RS_BAD_INPUT);
	ck_assert_int_eq(store_doc_put(s, STORE_DOC_OPT_REPORT, NULL, "sha256:zz", "{}", 2, &err), RS_DIGEST_INVALID);
	ck_assert_int_ne(store_doc_put(s, STORE_DOC_GATE_REPORT, "../../etc", dg, "{}", 2, &err), RS_OK);
	ck_assert_int_ne(store_doc_put(s, STORE_DOC_GATE_REPORT, NULL, dg, "{}", 2, &err), RS_OK);
	/* staged under tmp/ and renamed: nothing is left beside the documents */
	ck_assert_int_eq(entries("optimized"), 2); /* the result and reports/ */
	ck_assert_int_eq(entries("optimized/reports"), 1);
	ck_assert_int_eq(store_fixture_count_files("tmp"), 0);
	store_free(s);
}
END_TEST

START_TEST(scratch_directories_are_made_and_removed)
{
	struct store *s = store_fixture_store(0);
	struct rs_err err = {0};
	char dir[4096], file[4200];
	ck_assert_int_eq(store_scratch_new(s, "opt", dir, sizeof(dir), &err), RS_OK);
	char tmp[1024];
	snprintf(tmp, sizeof(tmp), "%s/tmp/opt-", store_fixture_data());
	ck_assert_msg(strncmp(dir, tmp, strlen(tmp)) == 0, "%s", dir);
	snprintf(file, sizeof(file), "%s/src/blobs", dir);
	ck_assert_int_eq(fsutil_mkdir_p(file, NULL, &err), RS_OK);
	snprintf(file, sizeof(file), "%s/src/blobs/x", dir);
	fixture_write_text(file, "x");
	store_scratch_remove(s, dir);
	ck_assert(!exists(dir));
	ck_assert_int_eq(entries("tmp"), 0);
	/* prefixes are plain words; only scratch directories are removed */
	ck_assert_int_eq(store_scratch_new(s, "../x", dir, sizeof(dir), &err), RS_BAD_INPUT);
	ck_assert_int_eq(store_scratch_new(s, "", dir, sizeof(dir), &err), RS_BAD_INPUT);
	ck_assert_int_eq(store_scratch_new(s, "opt", dir, 8, &err), RS_IO);
	store_scratch_remove(s, store_fixture_data());
	snprintf(file, sizeof(file), "%s/tmp/../blobs", store_fixture_data());
	store_scratch_remove(s, file);
	ck_assert(exists(store_fixture_data()));
	snprintf(file, sizeof(file), "%s/blobs", store_fixture_data());
	ck_assert(exists(file));
	/* an image exported into a scratch directory */
	char cd[DIGEST_STR_SIZE], md[DIGEST_STR_SIZE], man[1024];
	put_image(s, STORE_CACHE, "{\"os\":\"linux\"}", cd, md, man, sizeof(man));
	ck_assert_int_eq(store_scratch_new(s, "gate", dir, sizeof(dir), &err), RS_OK);
	snprintf(file, sizeof(file), "%s/src", dir);
	ck_assert_msg(store_export_layout(s, STORE_CACHE, md, "1.0", file, 1 << 20, NULL, NULL, &err) == RS_OK, "%s",
	              err.msg);
	snprintf(file, sizeof(file), "%s/src/blobs/sha256/%s", dir, cd + 7);
	ck_assert(exists(file));
	snprintf(file, sizeof(file), "%s/src", dir);
	ck_assert_int_eq(store_export_layout(s, STORE_PUSHED, md, "1.0", file, 1 << 20, NULL, NULL, &err) != RS_OK, 1);
	store_scratch_remove(s, dir);
	ck_assert_int_eq(entries("tmp"), 0);
	/* where the store keeps its files is never shown */
	char text[2048];
	snprintf(text, sizeof(text), "cannot read %s/blobs/sha256/ab", store_fixture_data());
	store_scrub_paths(s, text);
	ck_assert_str_eq(text, "cannot read <data>/blobs/sha256/ab");
	store_free(s);
}
END_TEST

START_TEST(open_sweeps_what_a_crash_left)
{
	struct store *s = store_fixture_store(0);
	struct rs_err err = {0};
	const char *key = "abc-def-zstd-v1";
	ck_assert_int_eq(store_doc_put(s, STORE_DOC_OPT_RESULT, NULL, key, "{}", 2, &err), RS_OK);
	char dir[4096];
	ck_assert_int_eq(store_scratch_new(s, "opt", dir, sizeof(dir), &err), RS_OK);
	store_free(s);
	/* what a crash leaves: a scratch layout, a temp file, documents staged
	 * beside their target by earlier revisions */
	const char *data = store_fixture_data();
	char p[4200];
	snprintf(p, sizeof(p), "%s/src", dir);
	ck_assert_int_eq(fsutil_mkdir_p(p, NULL, &err), RS_OK);
	snprintf(p, sizeof(p), "%s/src/index.json", dir);
	fixture_write_text(p, "{}");
	snprintf(p, sizeof(p), "%s/tmp/0123456789abcdef", data);
	fixture_write_text(p, "partial");
	snprintf(p, sizeof(p), "%s/optimized/%s.json.tmp-AbC123", data, key);
	fixture_write_text(p, "{\"dig");
	snprintf(p, sizeof(p), "%s/optimized/reports/%s.json.tmp-xYz789", data, "00ff");
	fixture_write_text(p, "{\"rep");
	snprintf(p, sizeof(p), "%s/gate/reports/team/app", data);
	ck_assert_int_eq(fsutil_mkdir_p(p, NULL, &err), RS_OK);
	snprintf(p, sizeof(p), "%s/gate/reports/team/app/00ff.json.tmp-Qw3456", data);
	fixture_write_text(p, "{\"kind");
	snprintf(p, sizeof(p), "%s/gate/reports/team/app/00ff.json", data);
	fixture_write_text(p, "{}");
	ck_assert_int_eq(entries("optimized"), 3);
	ck_assert_int_eq(entries("optimized/reports"), 1);
	s = store_fixture_store(0);
	ck_assert(!exists(dir));
	ck_assert_int_eq(entries("tmp"), 0);
	ck_assert_int_eq(entries("optimized"), 2); /* the result and reports/ */
	ck_assert_int_eq(entries("optimized/reports"), 0);
	ck_assert_int_eq(entries("gate/reports/team/app"), 1); /* the report stays */
	char *out = NULL;
	size_t len = 0;
	ck_assert_int_eq(store_doc_get(s, STORE_DOC_OPT_RESULT, NULL, key, 4096, &out, &len, &err), RS_OK);
	ck_assert_str_eq(out, "{}");
	free(out);
	store_free(s);
}
END_TEST

START_TEST(evicts_the_cache_only)
{
	struct store *s = store_fixture_store(1);
	size_t len = 5000;
	unsigned char *a = fixture_bytes(5, len), *b = fixture_bytes(6, len);
	char da[DIGEST_STR_SIZE], db[DIGEST_STR_SIZE];
	digest_buffer(da, a, len);
	digest_buffer(db, b, len);
	struct rs_err err = {0};
	ck_assert_int_eq(write_obj(s, STORE_CACHE, STORE_BLOB, da, -1, a, len, &err), RS_OK);
	ck_assert_int_eq(write_obj(s, STORE_PUSHED, STORE_BLOB, db, -1, b, len, &err), RS_OK);
	ck_assert_uint_eq(store_size(s), len);
	uint64_t freed = 0;
	ck_assert_int_eq(store_evict(s, &freed, &err), RS_OK);
	ck_assert_uint_eq(freed, len);
	ck_assert(!store_has(s, STORE_CACHE, STORE_BLOB, da));
	ck_assert(store_has(s, STORE_PUSHED, STORE_BLOB, db));
	free(a);
	free(b);
	store_free(s);
}
END_TEST

/* An evicted object of an optimized image (it has an owner document) takes
 * its result and the rest of its image along; pinned objects stay, and so
 * does what the optimizer did not make, and so do the owner documents. */
START_TEST(evicts_an_optimized_image_whole)
{
	for (int pinned = 0; pinned < 2; pinned++) {
		if (pinned) { /* a fresh directory for the second round */
			store_fixture_teardown();
			store_fixture_setup();
		}
		struct store *s = store_fixture_store(3000);
		struct rs_err err = {0};
		size_t len = 2000;
		unsigned char *layer = fixture_bytes(40, len), *other = fixture_bytes(41, len);
		char dl[DIGEST_STR_SIZE], dother[DIGEST_STR_SIZE], cd[DIGEST_STR_SIZE], md[DIGEST_STR_SIZE], man[600];
		digest_buffer(dl, layer, len);
		digest_buffer(dother, other, len);
		/* the layer first (the least recently used), then the config and the manifest */
		ck_assert_int_eq(write_obj(s, STORE_CACHE, STORE_BLOB, dl, -1, layer, len, &err), RS_OK);
		put_image(s, STORE_CACHE, "{\"architecture\":\"amd64\",\"os\":\"linux\"}", cd, md, man, sizeof(man));
		const char *key = "abc-0123-zstd-v0.1.2", *owner = "{\"key\":\"abc-0123-zstd-v0.1.2\",\"source\":\"x\"}";
		const char *owned[] = {dl, cd, md};
		for (int i = 0; i < 3; i++)
			ck_assert_int_eq(store_doc_put(s, STORE_DOC_OPT_OWNER, NULL, owned[i], owner, strlen(owner), &err),
			                 RS_OK);
		char result[300];
		int n = snprintf(result, sizeof(result), "{\"source\":\"%s\",\"digest\":\"%s\"}\n", dother, md);
		ck_assert_int_eq(store_doc_put(s, STORE_DOC_OPT_RESULT, NULL, key, result, (size_t)n, &err), RS_OK);
		if (pinned)
			ck_assert(store_pin(s, STORE_CACHE, STORE_BLOB, cd, time(NULL) + 60));
		/* an object the optimizer did not make, newer than the image */
		ck_assert_int_eq(write_obj(s, STORE_CACHE, STORE_BLOB, dother, -1, other, len, &err), RS_OK);
		uint64_t freed = 0;
		ck_assert_int_eq(store_evict(s, &freed, &err), RS_OK);
		ck_assert(!store_has(s, STORE_CACHE, STORE_BLOB, dl));
		ck_assert(!store_has(s, STORE_CACHE, STORE_MANIFEST, md));
		ck_assert(store_has(s, STORE_CACHE, STORE_BLOB, cd) == (pinned == 1));
		ck_assert(store_has(s, STORE_CACHE, STORE_BLOB, dother));
		char *doc = NULL;
		size_t dlen = 0;
		ck_assert_int_eq(store_doc_get(s, STORE_DOC_OPT_RESULT, NULL, key, 4096, &doc, &dlen, &err), RS_NOT_FOUND);
		/* owner documents stay: they say how to make an object again */
		ck_assert_int_eq(store_doc_get(s, STORE_DOC_OPT_OWNER, NULL, md, 4096, &doc, &dlen, &err), RS_OK);
		free(doc);
		free(layer);
		free(other);
		store_free(s);
	}
}
END_TEST

/* ---- a driver without local descriptors: the fs driver with its readers'
 * descriptors hidden, as an object store's would have none */

struct nofd_reader {
	struct store_reader base;
	struct store_reader *inner;
};

static struct store_driver nofd_driver;

static enum rs_code nofd_open(void *impl, enum store_area area, enum store_kind kind, const char *digest,
                              struct store_reader **out, struct rs_err *err)
{
	struct store_reader *in = NULL;
	enum rs_code rc = store_fs_driver.reader_open(impl, area, kind, digest, &in, err);
	if (rc)
		return rc;
	struct nofd_reader *r = calloc(1, sizeof(*r));
	ck_assert_ptr_nonnull(r);
	r->base = (struct store_reader){&nofd_driver, in->size, -1};
	r->inner = in;
	*out = &r->base;
	return RS_OK;
}

static ssize_t nofd_pread(struct store_reader *r, void *buf, size_t len, uint64_t off, struct rs_err *err)
{
	return store_fs_driver.reader_pread(((struct nofd_reader *)r)->inner, buf, len, off, err);
}

static void nofd_close(struct store_reader *r)
{
	store_fs_driver.reader_close(((struct nofd_reader *)r)->inner);
	free(r);
}

START_TEST(driver_without_descriptors_is_read_by_ranges_and_spooled)
{
	nofd_driver = store_fs_driver;
	nofd_driver.name = "nofd";
	nofd_driver.reader_open = nofd_open;
	nofd_driver.reader_pread = nofd_pread;
	nofd_driver.reader_close = nofd_close;
	struct store *fs = store_fixture_store(0);
	store_free(fs); /* the data directory exists; the configuration stays */
	void *impl = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(store_fs_open(&impl, store_fixture_config(), &err), RS_OK);
	struct store *s = NULL;
	ck_assert_int_eq(store_open_driver(&s, &nofd_driver, impl, &err), RS_OK);
	ck_assert_str_eq(store_driver_name(s), "nofd");
	size_t len = 200001;
	unsigned char *body = fixture_bytes(9, len);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	ck_assert_int_eq(write_obj(s, STORE_CACHE, STORE_BLOB, dg, (int64_t)len, body, len, &err), RS_OK);
	struct store_reader *r = NULL;
	ck_assert_int_eq(store_reader_open(s, STORE_CACHE, STORE_BLOB, dg, &r, &err), RS_OK);
	ck_assert_int_eq(store_reader_fd(r), -1);
	ck_assert_int_eq(store_reader_take_fd(r), -1);
	unsigned char buf[777];
	ck_assert_int_eq(store_reader_pread(r, buf, sizeof(buf), 100000, &err), (ssize_t)sizeof(buf));
	ck_assert(memcmp(buf, body + 100000, sizeof(buf)) == 0);
	store_reader_close(r);
	/* a descriptor on a spooled copy, unlinked, the scratch area left empty */
	int fd = -1;
	uint64_t size = 0;
	ck_assert_int_eq(store_open_fd(s, STORE_CACHE, STORE_BLOB, dg, &fd, &size, &err), RS_OK);
	ck_assert_uint_eq(size, len);
	unsigned char *all = malloc(len + 1);
	ck_assert_int_eq(pread(fd, all, len + 1, 0), (ssize_t)len);
	ck_assert(memcmp(all, body, len) == 0);
	close(fd);
	free(all);
	ck_assert_int_eq(entries("tmp"), 0);
	ck_assert_int_eq(store_open_fd(s, STORE_PUSHED, STORE_BLOB, dg, &fd, &size, &err), RS_NOT_FOUND);
	ck_assert_int_eq(fd, -1);
	free(body);
	store_free(s);
}
END_TEST

static Suite *store_suite(void)
{
	Suite *s = suite_create("store");
	TCase *t = tcase_create("fs");
	tcase_add_checked_fixture(t, store_fixture_setup, store_fixture_teardown);
	tcase_set_timeout(t, 60);
	tcase_add_test(t, fs_driver_is_opened_from_the_configuration);
	tcase_add_test(t, writer_commits_a_verified_blob_read_by_ranges);
	tcase_add_test(t, writer_mismatch_leaves_nothing);
	tcase_add_test(t, areas_are_kept_apart);
	tcase_add_test(t, manifests_keep_their_media_type);
	tcase_add_test(t, cache_tags_and_links);
	tcase_add_test(t, uploads_become_pushed_images);
	tcase_add_test(t, documents_round_trip);
	tcase_add_test(t, scratch_directories_are_made_and_removed);
	tcase_add_test(t, open_sweeps_what_a_crash_left);
	tcase_add_test(t, evicts_the_cache_only);
	tcase_add_test(t, evicts_an_optimized_image_whole);
	tcase_add_test(t, driver_without_descriptors_is_read_by_ranges_and_spooled);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	return fixture_run_suite(store_suite());
}
