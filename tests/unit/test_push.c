/* test_push: upload sessions and manifest pushes without HTTP, on a private
 * data directory per test: chunked writes and verification, digest
 * mismatch, resume after a "restart" (new push object, hash rebuilt from the
 * file), size limit, exclusive use, unknown uploads, the idle sweep, mounts
 * only from a repository that holds the blob (repository links), manifest checks (references, type, JSON, size,
 * digest refs), the push tag map and the referrers index of pushed manifests
 * with a subject; a garbage collection sweep that a push falls into (the
 * push's manifest, blobs and uploads are spared); the commit of an upload by
 * its running hash and a rename (the object is the upload's file, nothing
 * reread), a mismatch that leaves nothing, and the fallback to rehashing the
 * file when the running hash is gone (restart) or behind the file. Blob
 * bytes come from a seed. */
#include "push.h"

#include "digest.h"
#include "fixture.h"

#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct rs_config cfg;
static struct blobstore *cache;

static void setup(void)
{
	fixture_tmpdir_setup();
	struct rs_err err = {0};
	ck_assert_int_eq(config_init_defaults(&cfg, &err), RS_OK);
	free(cfg.data_dir);
	cfg.data_dir = strdup(fixture_dir());
	cfg.push.max_blob_bytes = 1 << 20;
	cfg.push.upload_idle_timeout_s = 100;
	ck_assert_int_eq(blobstore_open(&cache, fixture_dir(), 0, &err), RS_OK);
}

static void teardown(void)
{
	blobstore_free(cache);
	config_dispose(&cfg);
	fixture_tmpdir_teardown();
}

static struct push *open_push(void)
{
	struct push *p = NULL;
	struct rs_err err = {0};
	ck_assert_msg(push_new(&p, &cfg, cache, &err) == RS_OK, "%s", err.msg);
	return p;
}

/* Upload n seeded bytes to repo in pieces of step; returns the digest. */
static void upload_blob(struct push *p, const char *repo, uint64_t seed, size_t n, size_t step,
                        char digest[DIGEST_STR_SIZE])
{
	unsigned char *b = fixture_bytes(seed, n);
	digest_buffer(digest, b, n);
	char uuid[PUSH_UUID_SIZE];
	struct push_upload *u;
	struct rs_err err = {0};
	ck_assert_int_eq(push_upload_start(p, repo, uuid, &err), RS_OK);
	for (size_t off = 0; off < n; off += step) {
		ck_assert_int_eq(push_upload_open(p, repo, uuid, &u, &err), RS_OK);
		ck_assert_uint_eq(push_upload_size(u), off);
		size_t k = n - off < step ? n - off : step;
		ck_assert_int_eq(push_upload_write(u, b + off, k, &err), RS_OK);
		push_upload_close(u);
	}
	ck_assert_int_eq(push_upload_open(p, repo, uuid, &u, &err), RS_OK);
	ck_assert_msg(push_upload_commit(u, digest, &err) == RS_OK, "%s", err.msg);
	free(b);
}

START_TEST(chunked_upload_lands_in_push_store)
{
	struct push *p = open_push();
	char d[DIGEST_STR_SIZE];
	upload_blob(p, "team/app", 1, 300000, 65536, d);
	ck_assert(blobstore_has(push_store(p), BLOBSTORE_BLOB, d));
	ck_assert(!blobstore_has(cache, BLOBSTORE_BLOB, d)); /* never in the evictable cache */
	push_free(p);
}
END_TEST

START_TEST(digest_mismatch_removes_upload)
{
	struct push *p = open_push();
	char uuid[PUSH_UUID_SIZE], other[DIGEST_STR_SIZE];
	struct push_upload *u;
	struct rs_err err = {0};
	digest_buffer(other, "x", 1);
	ck_assert_int_eq(push_upload_start(p, "a", uuid, &err), RS_OK);
	ck_assert_int_eq(push_upload_open(p, "a", uuid, &u, &err), RS_OK);
	ck_assert_int_eq(push_upload_write(u, "hello", 5, &err), RS_OK);
	ck_assert_int_eq(push_upload_commit(u, other, &err), RS_DIGEST_MISMATCH);
	ck_assert_ptr_nonnull(strstr(err.msg, "hash to"));
	ck_assert_int_eq(push_upload_open(p, "a", uuid, &u, &err), RS_NOT_FOUND);
	ck_assert(!blobstore_has(push_store(p), BLOBSTORE_BLOB, other));
	/* a malformed digest keeps the upload */
	ck_assert_int_eq(push_upload_start(p, "a", uuid, &err), RS_OK);
	ck_assert_int_eq(push_upload_open(p, "a", uuid, &u, &err), RS_OK);
	ck_assert_int_eq(push_upload_commit(u, "sha256:nope", &err), RS_DIGEST_INVALID);
	ck_assert_int_eq(push_upload_open(p, "a", uuid, &u, &err), RS_OK);
	push_upload_cancel(u);
	ck_assert_int_eq(push_upload_open(p, "a", uuid, &u, &err), RS_NOT_FOUND);
	push_free(p);
}
END_TEST

START_TEST(resumes_after_restart)
{
	struct push *p = open_push();
	unsigned char *b = fixture_bytes(7, 200000);
	char d[DIGEST_STR_SIZE], uuid[PUSH_UUID_SIZE];
	digest_buffer(d, b, 200000);
	struct push_upload *u;
	struct rs_err err = {0};
	ck_assert_int_eq(push_upload_start(p, "r/s", uuid, &err), RS_OK);
	ck_assert_int_eq(push_upload_open(p, "r/s", uuid, &u, &err), RS_OK);
	ck_assert_int_eq(push_upload_write(u, b, 123457, &err), RS_OK);
	push_upload_close(u);
	push_free(p); /* the hash state is gone with the process */
	p = open_push();
	ck_assert_int_eq(push_upload_open(p, "r/s", uuid, &u, &err), RS_OK);
	ck_assert_uint_eq(push_upload_size(u), 123457);
	ck_assert_int_eq(push_upload_write(u, b + 123457, 200000 - 123457, &err), RS_OK);
	ck_assert_msg(push_upload_commit(u, d, &err) == RS_OK, "%s", err.msg);
	ck_assert(blobstore_has(push_store(p), BLOBSTORE_BLOB, d));
	free(b);
	push_free(p);
}
END_TEST

/* The upload's file and the pushed object's file. */
static const char *upload_file(const char *uuid)
{
	static char path[4096];
	snprintf(path, sizeof(path), "%s/uploads/%s.data", fixture_dir(), uuid);
	return path;
}

static const char *object_file(const char *digest)
{
	static char path[4096];
	const char *hex = digest + strlen("sha256:");
	snprintf(path, sizeof(path), "%s/push/blobs/sha256/%.2s/%s", fixture_dir(), hex, hex);
	return path;
}

/* The object is there with exactly the n bytes of b, linked to repo, the
 * upload's file and session are gone, and the push store counts its size. */
static void assert_committed(struct push *p, const char *repo, const char *uuid, const char *digest,
                             const unsigned char *b, size_t n)
{
	size_t len = 0;
	char *got = fixture_read_file(object_file(digest), &len);
	ck_assert_uint_eq(len, n);
	ck_assert(memcmp(got, b, n) == 0);
	free(got);
	ck_assert(push_holds(p, repo, BLOBSTORE_BLOB, digest));
	ck_assert_uint_eq(blobstore_size(push_store(p)), n);
	struct stat st;
	ck_assert_int_ne(stat(upload_file(uuid), &st), 0);
	struct push_upload *u;
	struct rs_err err = {0};
	ck_assert_int_eq(push_upload_open(p, repo, uuid, &u, &err), RS_NOT_FOUND);
	ck_assert_int_eq(fixture_count_files(fixture_path("uploads")), 0);
	ck_assert_int_eq(fixture_count_files(fixture_path("push/tmp")), 0);
}

START_TEST(commit_renames_the_upload_by_its_running_hash)
{
	struct push *p = open_push();
	size_t n = 700001;
	unsigned char *b = fixture_bytes(11, n);
	char d[DIGEST_STR_SIZE], uuid[PUSH_UUID_SIZE];
	digest_buffer(d, b, n);
	struct push_upload *u;
	struct rs_err err = {0};
	ck_assert_int_eq(push_upload_start(p, "team/app", uuid, &err), RS_OK);
	/* chunks in order, each in its own request */
	for (size_t off = 0; off < n; off += 65536) {
		ck_assert_int_eq(push_upload_open(p, "team/app", uuid, &u, &err), RS_OK);
		size_t k = n - off < 65536 ? n - off : 65536;
		ck_assert_int_eq(push_upload_write(u, b + off, k, &err), RS_OK);
		push_upload_close(u);
	}
	struct stat before, after;
	ck_assert_int_eq(stat(upload_file(uuid), &before), 0);
	ck_assert_int_eq(push_upload_open(p, "team/app", uuid, &u, &err), RS_OK);
	ck_assert_msg(push_upload_commit(u, d, &err) == RS_OK, "%s", err.msg);
	/* the object is the upload's file, renamed: same inode, not a copy */
	ck_assert_int_eq(stat(object_file(d), &after), 0);
	ck_assert_uint_eq(after.st_ino, before.st_ino);
	ck_assert_uint_eq(after.st_dev, before.st_dev);
	struct push_commit_stats cs;
	push_commit_stats(p, &cs);
	ck_assert_uint_eq(cs.renamed, 1);
	ck_assert_uint_eq(cs.copied, 0);
	ck_assert_uint_eq(cs.rehashed_bytes, 0); /* nothing was read back */
	assert_committed(p, "team/app", uuid, d, b, n);
	/* the same bytes uploaded again: the object is kept, the upload dropped */
	char d2[DIGEST_STR_SIZE];
	upload_blob(p, "team/app", 11, n, n, d2);
	ck_assert_str_eq(d2, d);
	ck_assert_int_eq(stat(object_file(d), &after), 0);
	ck_assert_uint_eq(after.st_ino, before.st_ino);
	ck_assert_uint_eq(blobstore_size(push_store(p)), n);
	ck_assert_int_eq(fixture_count_files(fixture_path("uploads")), 0);
	free(b);
	push_free(p);
	/* what was renamed is indexed like a written object after a restart */
	p = open_push();
	ck_assert_uint_eq(blobstore_size(push_store(p)), n);
	ck_assert(push_holds(p, "team/app", BLOBSTORE_BLOB, d));
	push_free(p);
}
END_TEST

START_TEST(commit_mismatch_by_running_hash_leaves_nothing)
{
	struct push *p = open_push();
	size_t n = 300000;
	unsigned char *b = fixture_bytes(12, n);
	char d[DIGEST_STR_SIZE], claimed[DIGEST_STR_SIZE], uuid[PUSH_UUID_SIZE];
	digest_buffer(d, b, n);
	digest_buffer(claimed, b, n - 1); /* all but the last byte */
	struct push_upload *u;
	struct rs_err err = {0};
	ck_assert_int_eq(push_upload_start(p, "a/b", uuid, &err), RS_OK);
	ck_assert_int_eq(push_upload_open(p, "a/b", uuid, &u, &err), RS_OK);
	ck_assert_int_eq(push_upload_write(u, b, 100000, &err), RS_OK);
	ck_assert_int_eq(push_upload_write(u, b + 100000, n - 100000, &err), RS_OK);
	ck_assert_int_eq(push_upload_commit(u, claimed, &err), RS_DIGEST_MISMATCH);
	ck_assert_ptr_nonnull(strstr(err.msg, d)); /* what the bytes hash to */
	ck_assert(!blobstore_has(push_store(p), BLOBSTORE_BLOB, claimed));
	ck_assert(!blobstore_has(push_store(p), BLOBSTORE_BLOB, d));
	ck_assert_uint_eq(blobstore_size(push_store(p)), 0);
	ck_assert_int_eq(fixture_count_files(fixture_path("push/blobs")), 0);
	ck_assert_int_eq(fixture_count_files(fixture_path("push/tmp")), 0);
	ck_assert_int_eq(fixture_count_files(fixture_path("uploads")), 0);
	ck_assert_int_eq(push_upload_open(p, "a/b", uuid, &u, &err), RS_NOT_FOUND);
	struct push_commit_stats cs;
	push_commit_stats(p, &cs);
	ck_assert_uint_eq(cs.renamed + cs.copied + cs.rehashed_bytes, 0);
	free(b);
	push_free(p);
}
END_TEST

START_TEST(commit_rehashes_when_the_running_hash_is_gone_or_behind)
{
	struct push *p = open_push();
	size_t n = 400000, part = 123457;
	unsigned char *b = fixture_bytes(13, n);
	char d[DIGEST_STR_SIZE], uuid[PUSH_UUID_SIZE];
	digest_buffer(d, b, n);
	struct push_upload *u;
	struct rs_err err = {0};
	struct push_commit_stats cs;
	/* resumed after a restart: the hash is rebuilt from the file once */
	ck_assert_int_eq(push_upload_start(p, "r/s", uuid, &err), RS_OK);
	ck_assert_int_eq(push_upload_open(p, "r/s", uuid, &u, &err), RS_OK);
	ck_assert_int_eq(push_upload_write(u, b, part, &err), RS_OK);
	push_upload_close(u);
	push_free(p);
	p = open_push();
	ck_assert_int_eq(push_upload_open(p, "r/s", uuid, &u, &err), RS_OK);
	ck_assert_int_eq(push_upload_write(u, b + part, 2 * part - part, &err), RS_OK);
	push_upload_close(u);
	push_commit_stats(p, &cs);
	ck_assert_uint_eq(cs.rehashed_bytes, part);
	/* bytes on disk the running hash never saw (a write the process lost
	 * track of): the next use rehashes the whole file */
	int fd = open(upload_file(uuid), O_WRONLY | O_APPEND);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, b + 2 * part, n - 2 * part), (ssize_t)(n - 2 * part));
	close(fd);
	ck_assert_int_eq(push_upload_open(p, "r/s", uuid, &u, &err), RS_OK);
	ck_assert_uint_eq(push_upload_size(u), n);
	ck_assert_msg(push_upload_commit(u, d, &err) == RS_OK, "%s", err.msg);
	push_commit_stats(p, &cs);
	ck_assert_uint_eq(cs.rehashed_bytes, part + n);
	ck_assert_uint_eq(cs.renamed, 1);
	assert_committed(p, "r/s", uuid, d, b, n);
	push_free(p);
	/* a resumed upload whose bytes do not match is removed, nothing stored */
	p = open_push();
	ck_assert_int_eq(push_upload_start(p, "r/s", uuid, &err), RS_OK);
	ck_assert_int_eq(push_upload_open(p, "r/s", uuid, &u, &err), RS_OK);
	ck_assert_int_eq(push_upload_write(u, b, part, &err), RS_OK);
	push_upload_close(u);
	push_free(p);
	p = open_push();
	char wrong[DIGEST_STR_SIZE];
	digest_buffer(wrong, b + 1, part);
	ck_assert_int_eq(push_upload_open(p, "r/s", uuid, &u, &err), RS_OK);
	ck_assert_int_eq(push_upload_commit(u, wrong, &err), RS_DIGEST_MISMATCH);
	ck_assert(!blobstore_has(push_store(p), BLOBSTORE_BLOB, wrong));
	ck_assert_int_eq(fixture_count_files(fixture_path("uploads")), 0);
	ck_assert_uint_eq(blobstore_size(push_store(p)), n);
	free(b);
	push_free(p);
}
END_TEST

START_TEST(refuses_oversized_busy_and_unknown_uploads)
{
	struct push *p = open_push();
	char uuid[PUSH_UUID_SIZE];
	struct push_upload *u, *u2;
	struct rs_err err = {0};
	unsigned char *b = fixture_bytes(3, 700000);
	ck_assert_int_eq(push_upload_start(p, "a", uuid, &err), RS_OK);
	ck_assert_int_eq(push_upload_open(p, "a", uuid, &u, &err), RS_OK);
	ck_assert_int_eq(push_upload_write(u, b, 700000, &err), RS_OK);
	ck_assert_int_eq(push_upload_write(u, b, 700000, &err), RS_TOO_LARGE);
	ck_assert_ptr_nonnull(strstr(err.msg, "push.max_blob_bytes"));
	ck_assert_uint_eq(push_upload_size(u), 700000); /* nothing of the refused piece was written */
	ck_assert_int_eq(push_upload_open(p, "a", uuid, &u2, &err), RS_BAD_INPUT); /* in use */
	push_upload_close(u);
	ck_assert_int_eq(push_upload_open(p, "b", uuid, &u2, &err), RS_NOT_FOUND); /* another repository */
	ck_assert_int_eq(push_upload_open(p, "a", "../../etc/passwd", &u2, &err), RS_NOT_FOUND);
	ck_assert_int_eq(push_upload_open(p, "a", "00000000-0000-4000-8000-000000000000", &u2, &err), RS_NOT_FOUND);
	free(b);
	push_free(p);
}
END_TEST

START_TEST(sweep_removes_idle_uploads_only)
{
	struct push *p = open_push();
	char idle[PUSH_UUID_SIZE], busy[PUSH_UUID_SIZE];
	struct push_upload *u, *x;
	struct rs_err err = {0};
	unsigned removed = 9;
	ck_assert_int_eq(push_upload_start(p, "a", idle, &err), RS_OK);
	ck_assert_int_eq(push_upload_start(p, "a", busy, &err), RS_OK);
	ck_assert_int_eq(push_upload_open(p, "a", busy, &u, &err), RS_OK);
	push_sweep(p, time(NULL), &removed);
	ck_assert_uint_eq(removed, 0); /* nothing idle yet */
	push_sweep(p, time(NULL) + 101, &removed);
	ck_assert_uint_eq(removed, 1);
	ck_assert_int_eq(push_upload_open(p, "a", idle, &x, &err), RS_NOT_FOUND);
	push_upload_close(u);
	ck_assert_int_eq(push_upload_open(p, "a", busy, &u, &err), RS_OK);
	push_upload_close(u);
	push_free(p);
}
END_TEST

/* A fetcher standing for the mirror: only repository "mirror/ok" holds
 * what the cache has. */
static enum rs_code fake_fetch(void *ctx, const char *repo, const char *digest, bool manifest, struct rs_err *err)
{
	(void)ctx;
	enum blobstore_kind k = manifest ? BLOBSTORE_MANIFEST : BLOBSTORE_BLOB;
	if (strcmp(repo, "mirror/ok") == 0 && blobstore_has(cache, k, digest))
		return RS_OK;
	return rs_err_set(err, RS_NOT_FOUND, "%s not in %s", digest, repo);
}

START_TEST(mounts_only_from_a_repository_that_holds_the_blob)
{
	struct push *p = open_push();
	struct rs_err err = {0};
	char d[DIGEST_STR_SIZE];
	upload_blob(p, "t/a", 12, 3000, 3000, d);
	ck_assert(push_holds(p, "t/a", BLOBSTORE_BLOB, d));
	ck_assert(!push_holds(p, "t/b", BLOBSTORE_BLOB, d)); /* in the store, but not t/b's */
	ck_assert_int_eq(push_mount_blob(p, "t/b", "t/c", d, &err), RS_NOT_FOUND);
	ck_assert(!push_holds(p, "t/b", BLOBSTORE_BLOB, d));
	ck_assert_int_eq(push_mount_blob(p, "t/b", "t/a", d, &err), RS_OK);
	ck_assert(push_holds(p, "t/b", BLOBSTORE_BLOB, d));
	ck_assert(!push_holds(p, "t/c", BLOBSTORE_BLOB, d));
	/* a blob only the mirror's cache has: only a repository the mirror says holds it */
	unsigned char *b = fixture_bytes(11, 5000);
	char c[DIGEST_STR_SIZE];
	digest_buffer(c, b, 5000);
	struct blobstore_writer *w;
	ck_assert_int_eq(blobstore_writer_new(&w, cache, BLOBSTORE_BLOB, c, 5000, &err), RS_OK);
	ck_assert_int_eq(blobstore_writer_write(w, b, 5000, &err), RS_OK);
	ck_assert_int_eq(blobstore_writer_commit(w, &err), RS_OK);
	ck_assert_int_eq(push_mount_blob(p, "t/b", "mirror/ok", c, &err), RS_NOT_FOUND); /* no fetcher */
	push_set_fetcher(p, fake_fetch, NULL);
	ck_assert_int_eq(push_mount_blob(p, "t/b", "mirror/no", c, &err), RS_NOT_FOUND);
	ck_assert(!blobstore_has(push_store(p), BLOBSTORE_BLOB, c));
	ck_assert_int_eq(push_mount_blob(p, "t/b", "mirror/ok", c, &err), RS_OK);
	ck_assert(push_holds(p, "t/b", BLOBSTORE_BLOB, c));
	ck_assert_int_eq(push_mount_blob(p, "t/b", "Bad Name", c, &err), RS_BAD_INPUT);
	free(b);
	push_free(p);
	/* links survive a restart */
	p = open_push();
	ck_assert(push_holds(p, "t/b", BLOBSTORE_BLOB, d));
	ck_assert(!push_holds(p, "t/c", BLOBSTORE_BLOB, d));
	push_free(p);
}
END_TEST

#define OCI_M "application/vnd.oci.image.manifest.v1+json"

static char *manifest_json(const char *cfgd, const char *layer)
{
	char *m = malloc(1024);
	ck_assert_ptr_nonnull(m);
	snprintf(m, 1024,
	         "{\"schemaVersion\":2,\"mediaType\":\"" OCI_M "\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
	         "\"digest\":\"%s\",\"size\":10},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\","
	         "\"digest\":\"%s\",\"size\":10}]}",
	         cfgd, layer);
	return m;
}

/* A push during a garbage collection sweep: between the reading of the
 * links and the removals (push_set_gc_hook), a manifest is pushed again over
 * blobs nothing references any more, and a blob already stored is uploaded
 * again. With no grace at all, the sweep must spare every one of them. */
struct race {
	struct push *p;
	const char *man;
	char y[DIGEST_STR_SIZE];
	int ran;
};

static void race_hook(void *ctx)
{
	struct race *r = ctx;
	struct rs_err err = {0};
	char md[DIGEST_STR_SIZE], y[DIGEST_STR_SIZE];
	ck_assert_msg(push_put_manifest(r->p, "t/app", "again", OCI_M, r->man, strlen(r->man), md, &err) == RS_OK, "%s",
	              err.msg);
	upload_blob(r->p, "t/other", 33, 500, 500, y);
	ck_assert_str_eq(y, r->y);
	r->ran++;
}

START_TEST(gc_spares_what_pushes_take_during_the_sweep)
{
	struct push *p = open_push();
	struct blobstore *bs = push_store(p);
	struct rs_err err = {0};
	char c[DIGEST_STR_SIZE], l[DIGEST_STR_SIZE], md[DIGEST_STR_SIZE];
	upload_blob(p, "t/app", 31, 100, 100, c);
	upload_blob(p, "t/app", 32, 1000, 1000, l);
	char *m = manifest_json(c, l);
	ck_assert_int_eq(push_put_manifest(p, "t/app", "v1", OCI_M, m, strlen(m), md, &err), RS_OK);
	struct race r = {.p = p, .man = m};
	upload_blob(p, "t/app", 33, 500, 500, r.y); /* never referenced */
	unsigned tags = 0;
	ck_assert_int_eq(push_delete_manifest(p, "t/app", md, &tags, &err), RS_OK);
	ck_assert_uint_eq(tags, 1);

	/* an hour from now, no grace: everything is garbage but what the push takes */
	push_set_gc_hook(p, race_hook, &r);
	struct push_gc_stats st;
	ck_assert_msg(push_gc(p, time(NULL) + 3600, 0, &st, &err) == RS_OK, "%s", err.msg);
	ck_assert_int_eq(r.ran, 1);
	ck_assert_uint_eq(st.roots, 0); /* the links were read before the push */
	ck_assert_uint_eq(st.blobs_removed + st.manifests_removed, 0);
	ck_assert_uint_eq(st.raced, 2); /* the manifest (its two blobs kept with it), the blob uploaded again */
	ck_assert(blobstore_has(bs, BLOBSTORE_MANIFEST, md));
	ck_assert(blobstore_has(bs, BLOBSTORE_BLOB, c));
	ck_assert(blobstore_has(bs, BLOBSTORE_BLOB, l));
	ck_assert(blobstore_has(bs, BLOBSTORE_BLOB, r.y));
	ck_assert(push_holds(p, "t/app", BLOBSTORE_MANIFEST, md));

	/* the next sweep sees the pushed manifest: only the blob it does not
	 * reference goes */
	push_set_gc_hook(p, NULL, NULL);
	ck_assert_int_eq(push_gc(p, time(NULL) + 3600, 0, &st, &err), RS_OK);
	ck_assert_uint_eq(st.roots, 1);
	ck_assert_uint_eq(st.blobs_removed, 1);
	ck_assert_uint_eq(st.manifests_removed, 0);
	ck_assert(!blobstore_has(bs, BLOBSTORE_BLOB, r.y));
	ck_assert(blobstore_has(bs, BLOBSTORE_BLOB, c) && blobstore_has(bs, BLOBSTORE_BLOB, l));
	/* its link outlived it: not held, a new upload brings it back */
	ck_assert(!push_holds(p, "t/other", BLOBSTORE_BLOB, r.y));
	upload_blob(p, "t/other", 33, 500, 500, r.y);
	ck_assert(push_holds(p, "t/other", BLOBSTORE_BLOB, r.y));
	free(m);
	push_free(p);
}
END_TEST

/* Set the last use of pushed object digest (kind "blobs" or "manifests")
 * to t seconds ago. */
static void age_object(const char *kind, const char *digest, time_t t)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/push/%s/sha256/%.2s/%s", fixture_dir(), kind, digest + 7, digest + 7);
	struct timespec ts[2] = {{time(NULL) - t, 0}, {time(NULL) - t, 0}};
	ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0);
}

START_TEST(gc_keeps_what_a_young_manifest_references)
{
	struct push *p = open_push();
	struct blobstore *bs = push_store(p);
	struct rs_err err = {0};
	char c[DIGEST_STR_SIZE], l[DIGEST_STR_SIZE], md[DIGEST_STR_SIZE];
	upload_blob(p, "t/app", 41, 100, 100, c);
	upload_blob(p, "t/app", 42, 1000, 1000, l);
	char *m = manifest_json(c, l);
	ck_assert_int_eq(push_put_manifest(p, "t/app", "v1", OCI_M, m, strlen(m), md, &err), RS_OK);
	ck_assert_int_eq(push_delete_manifest(p, "t/app", md, NULL, &err), RS_OK);
	/* old blobs under a manifest deleted within the grace period: the
	 * manifest stays, so do they (no pushed manifest ever lacks a blob) */
	age_object("blobs", c, 7200);
	age_object("blobs", l, 7200);
	struct push_gc_stats st;
	ck_assert_int_eq(push_gc(p, time(NULL), 3600, &st, &err), RS_OK);
	ck_assert_uint_eq(st.blobs_removed + st.manifests_removed, 0);
	ck_assert(blobstore_has(bs, BLOBSTORE_MANIFEST, md));
	ck_assert(blobstore_has(bs, BLOBSTORE_BLOB, c) && blobstore_has(bs, BLOBSTORE_BLOB, l));
	/* once the manifest is old too, all three go */
	age_object("manifests", md, 7200);
	ck_assert_int_eq(push_gc(p, time(NULL), 3600, &st, &err), RS_OK);
	ck_assert_uint_eq(st.blobs_removed, 2);
	ck_assert_uint_eq(st.manifests_removed, 1);
	free(m);
	push_free(p);
}
END_TEST

START_TEST(manifest_checks_and_tags)
{
	struct push *p = open_push();
	struct rs_err err = {0};
	char c[DIGEST_STR_SIZE], l[DIGEST_STR_SIZE], md[DIGEST_STR_SIZE], missing[DIGEST_STR_SIZE];
	upload_blob(p, "t/app", 21, 100, 100, c);
	upload_blob(p, "t/app", 22, 1000, 333, l);
	digest_buffer(missing, "nothing", 7);
	char *bad = manifest_json(c, missing);
	ck_assert_int_eq(push_put_manifest(p, "t/app", "v1", OCI_M, bad, strlen(bad), md, &err), RS_NOT_FOUND);
	ck_assert_msg(strstr(err.msg, missing) && strstr(err.msg, "layers[0]"), "%s", err.msg);
	/* blobs pushed to another repository do not count (issue 11) */
	char *other = manifest_json(c, l);
	ck_assert_int_eq(push_put_manifest(p, "t/thief", "v1", OCI_M, other, strlen(other), md, &err), RS_NOT_FOUND);
	ck_assert_msg(strstr(err.msg, c) && strstr(err.msg, "config"), "%s", err.msg);
	free(other);
	char *m = manifest_json(c, l);
	size_t ml = strlen(m);
	ck_assert_int_eq(push_put_manifest(p, "t/app", "v1", "application/vnd.oci.image.index.v1+json", m, ml, md, &err),
	                 RS_BAD_INPUT);
	ck_assert_int_eq(push_put_manifest(p, "t/app", "v1", "text/plain", m, ml, md, &err), RS_BAD_INPUT);
	ck_assert_int_eq(push_put_manifest(p, "t/app", "v1", OCI_M, "{\"schemaVersion\":2,", 19, md, &err), RS_BAD_INPUT);
	ck_assert_int_eq(push_put_manifest(p, "t/app", missing, OCI_M, m, ml, md, &err), RS_DIGEST_MISMATCH);
	ck_assert_int_eq(push_put_manifest(p, "t/app", "bad tag", OCI_M, m, ml, md, &err), RS_BAD_INPUT);
	cfg.manifest_max_bytes = 64;
	ck_assert_int_eq(push_put_manifest(p, "t/app", "v1", OCI_M, m, ml, md, &err), RS_TOO_LARGE);
	cfg.manifest_max_bytes = 1 << 20;
	ck_assert_int_eq(push_put_manifest(p, "t/app", "v1", OCI_M "; charset=utf-8", m, ml, md, &err), RS_OK);
	struct blobstore_tag tag;
	ck_assert_int_eq(push_get_tag(p, "t/app", "v1", &tag, &err), RS_OK);
	ck_assert_str_eq(tag.digest, md);
	ck_assert_str_eq(tag.media_type, OCI_M);
	ck_assert_int_eq(push_get_tag(p, "t/other", "v1", &tag, &err), RS_NOT_FOUND);
	char *list = NULL;
	size_t len = 0;
	ck_assert_int_eq(push_put_manifest(p, "t/app", md, NULL, m, ml, md, &err), RS_OK); /* by digest, no tag */
	ck_assert_int_eq(push_list_tags(p, "t/app", &list, &len, &err), RS_OK);
	ck_assert_str_eq(list, "{\"name\":\"t/app\",\"tags\":[\"v1\"]}\n");
	free(list);
	/* an index over the pushed manifest */
	char idx[512], id[DIGEST_STR_SIZE];
	snprintf(idx, sizeof(idx),
	         "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"mediaType\":\"" OCI_M
	         "\",\"digest\":\"%s\",\"size\":%zu}]}",
	         md, ml);
	ck_assert_int_eq(push_put_manifest(p, "t/app", "multi", NULL, idx, strlen(idx), id, &err), RS_OK);
	snprintf(idx, sizeof(idx),
	         "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"mediaType\":\"" OCI_M
	         "\",\"digest\":\"%s\",\"size\":1}]}",
	         missing);
	ck_assert_int_eq(push_put_manifest(p, "t/app", "multi", NULL, idx, strlen(idx), id, &err), RS_NOT_FOUND);
	ck_assert(push_holds(p, "t/app", BLOBSTORE_MANIFEST, md));
	ck_assert(!push_holds(p, "t/thief", BLOBSTORE_MANIFEST, md));
	free(bad);
	free(m);
	push_free(p);
	/* a push store written before links: links derived from the pushed tags at the next start */
	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s/push/links'", fixture_dir());
	ck_assert_int_eq(system(cmd), 0);
	p = open_push();
	ck_assert(push_holds(p, "t/app", BLOBSTORE_MANIFEST, md)); /* tag v1 */
	ck_assert(push_holds(p, "t/app", BLOBSTORE_BLOB, c));
	ck_assert(push_holds(p, "t/app", BLOBSTORE_BLOB, l));
	ck_assert(!push_holds(p, "t/thief", BLOBSTORE_BLOB, l));
	push_free(p);
}
END_TEST

START_TEST(indexes_pushed_referrers_per_repository)
{
	struct push *p = open_push();
	struct rs_err err = {0};
	char c[DIGEST_STR_SIZE], md[DIGEST_STR_SIZE], subject[DIGEST_STR_SIZE], r2[DIGEST_STR_SIZE];
	upload_blob(p, "t/app", 31, 2, 2, c);
	upload_blob(p, "t/other", 31, 2, 2, c);
	digest_buffer(subject, "a subject never pushed", 22);
	char m[1024];
	snprintf(m, sizeof(m),
	         "{\"schemaVersion\":2,\"mediaType\":\"" OCI_M "\",\"artifactType\":\"application/vnd.example\","
	         "\"config\":{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"%s\",\"size\":2},"
	         "\"layers\":[],\"subject\":{\"mediaType\":\"" OCI_M "\",\"digest\":\"%s\",\"size\":9}}",
	         c, subject);
	/* the subject need not exist */
	ck_assert_msg(push_put_manifest(p, "t/app", "sig", OCI_M, m, strlen(m), md, &err) == RS_OK, "%s", err.msg);
	char(*v)[DIGEST_STR_SIZE] = NULL;
	size_t n = 0;
	ck_assert_int_eq(push_referrers(p, "t/app", subject, &v, &n, 10, &err), RS_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(v[0], md);
	free(v);
	/* another repository's referrers are its own */
	ck_assert_int_eq(push_referrers(p, "t/other", subject, &v, &n, 10, &err), RS_OK);
	ck_assert_uint_eq(n, 0);
	char m2[1100];
	snprintf(m2, sizeof(m2), "%.*s,\"annotations\":{\"r\":\"other\"}}", (int)strlen(m) - 1, m);
	ck_assert_int_eq(push_put_manifest(p, "t/other", "sig", OCI_M, m2, strlen(m2), r2, &err), RS_OK);
	ck_assert_int_eq(push_referrers(p, "t/other", subject, &v, &n, 10, &err), RS_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(v[0], r2);
	free(v);
	/* a subject digest that is not one: refused, nothing stored */
	snprintf(m, sizeof(m),
	         "{\"schemaVersion\":2,\"config\":{\"digest\":\"%s\",\"size\":2},\"layers\":[],"
	         "\"subject\":{\"digest\":\"sha256:zz\",\"size\":9}}",
	         c);
	ck_assert_int_eq(push_put_manifest(p, "t/app", "bad", OCI_M, m, strlen(m), md, &err), RS_BAD_INPUT);
	ck_assert_ptr_nonnull(strstr(err.msg, "subject"));
	push_free(p);
	/* the index is on disk: a new push object (a restart) sees it */
	p = open_push();
	ck_assert_int_eq(push_referrers(p, "t/app", subject, &v, &n, 10, &err), RS_OK);
	ck_assert_uint_eq(n, 1);
	free(v);
	push_free(p);
}
END_TEST

static Suite *push_suite(void)
{
	Suite *s = suite_create("push");
	TCase *tc = tcase_create("push");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, chunked_upload_lands_in_push_store);
	tcase_add_test(tc, digest_mismatch_removes_upload);
	tcase_add_test(tc, resumes_after_restart);
	tcase_add_test(tc, commit_renames_the_upload_by_its_running_hash);
	tcase_add_test(tc, commit_mismatch_by_running_hash_leaves_nothing);
	tcase_add_test(tc, commit_rehashes_when_the_running_hash_is_gone_or_behind);
	tcase_add_test(tc, refuses_oversized_busy_and_unknown_uploads);
	tcase_add_test(tc, sweep_removes_idle_uploads_only);
	tcase_add_test(tc, mounts_only_from_a_repository_that_holds_the_blob);
	tcase_add_test(tc, manifest_checks_and_tags);
	tcase_add_test(tc, indexes_pushed_referrers_per_repository);
	tcase_add_test(tc, gc_spares_what_pushes_take_during_the_sweep);
	tcase_add_test(tc, gc_keeps_what_a_young_manifest_references);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(push_suite());
}
