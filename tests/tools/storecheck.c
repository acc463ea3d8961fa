/* storecheck: a test-only program that runs the storage interface's
 * contract (store.h, as tests/unit/test_store.c pins it on the fs driver)
 * against the store a configuration names, so that
 * tests/integration/test_store_s3.sh runs it on the s3 driver against the
 * lab's RGW. Not installed, not a regslim subcommand.
 *
 *   storecheck CONFIG_FILE      every check; one "PASS name" or "FAIL name: why" line each
 *   storecheck CONFIG_FILE hang  write 9 MiB + 1 of a 10 MiB blob (a multipart part is up), print
 *                                "<digest> <staging path>" and wait to be killed (the script's
 *                                kill -9 mid-write: nothing may appear under the blob's key)
 *
 * The configuration's data_dir is the scratch area (it must be empty and
 * private). Exit status 0 when every check passed, 1 otherwise. Contents are
 * generated from seeds; every check uses keys of its own, so the checks do
 * not depend on one another's objects. */
#include "store.h"

#include "config.h"
#include "digest.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MT_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_CONFIG "application/vnd.oci.image.config.v1+json"
#define MT_LAYER "application/vnd.oci.image.layer.v1.tar+gzip"

static unsigned failed, passed;
static struct rs_config cfg;

/* REQ(cond, fmt, ...): the check fails with the message unless cond. */
#define REQ(cond, ...)                                                                                                 \
	do {                                                                                                           \
		if (!(cond)) {                                                                                         \
			fail_msg(__func__, __VA_ARGS__);                                                               \
			goto out;                                                                                      \
		}                                                                                                      \
	} while (0)

static void fail_msg(const char *name, const char *fmt, ...) RS_PRINTF(2, 3);
static void fail_msg(const char *name, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("FAIL %s: ", name);
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	failed++;
}

static void pass_msg(const char *name)
{
	printf("PASS %s\n", name);
	passed++;
}

static unsigned char *gen(uint64_t seed, size_t len)
{
	unsigned char *b = malloc(len ? len : 1);
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		b[i] = (unsigned char)x;
	}
	return b;
}

static enum rs_code write_obj(struct store *s, enum store_area area, enum store_kind kind, const char *digest,
                              int64_t expected, const unsigned char *buf, size_t len, struct rs_err *err)
{
	struct store_writer *w = NULL;
	enum rs_code rc = store_writer_new(&w, s, area, kind, digest, expected, err);
	if (rc)
		return rc;
	uint64_t x = 7;
	for (size_t pos = 0; pos < len;) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		size_t n = 1 + (size_t)((x >> 33) % 300000);
		if (n > len - pos)
			n = len - pos;
		if ((rc = store_writer_write(w, buf + pos, n, err))) {
			store_writer_abort(w);
			return rc;
		}
		pos += n;
	}
	return store_writer_commit(w, err);
}

/* Files left under <data>/tmp (writers' staging files, spools). */
static int tmp_files(void)
{
	char p[4200];
	snprintf(p, sizeof(p), "%s/tmp", cfg.data_dir);
	DIR *d = opendir(p);
	int n = 0;
	for (struct dirent *de; d && (de = readdir(d));)
		n += de->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

static struct store *open_store(void)
{
	struct store *s = NULL;
	struct rs_err err = {0};
	if (store_open(&s, &cfg, &err) != RS_OK) {
		printf("FAIL store_open: %s\n", err.msg);
		failed++;
	}
	return s;
}

static void driver_is_s3(struct store *s)
{
	REQ(strcmp(store_driver_name(s), cfg.store.driver) == 0, "driver %s, configured %s", store_driver_name(s),
	    cfg.store.driver);
	pass_msg(__func__);
out:;
}

static bool roundtrip(struct store *s, const char *name, uint64_t seed, size_t len)
{
	unsigned char *body = gen(seed, len), *all = malloc(len), buf[1000];
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	struct rs_err err = {0};
	struct store_reader *r = NULL;
	int fd = -1;
	uint64_t size = 0;
	bool ok = false;
	store_remove(s, STORE_CACHE, STORE_BLOB, dg); /* a rerun on a kept bucket starts clean */
	REQ(!store_has(s, STORE_CACHE, STORE_BLOB, dg), "%s: present before the write", name);
	REQ(write_obj(s, STORE_CACHE, STORE_BLOB, dg, (int64_t)len, body, len, &err) == RS_OK, "%s: %s", name, err.msg);
	REQ(store_has(s, STORE_CACHE, STORE_BLOB, dg), "%s: not there after the commit", name);
	REQ(store_reader_open(s, STORE_CACHE, STORE_BLOB, dg, &r, &err) == RS_OK, "%s: %s", name, err.msg);
	REQ(store_reader_size(r) == len, "%s: size %llu", name, (unsigned long long)store_reader_size(r));
	if (cfg.store.s3.local_cache_bytes == 0)
		REQ(store_reader_fd(r) == -1, "%s: the s3 driver without local copies has no local descriptor", name);
	else /* the verified write left a local copy (store.s3.local_cache_bytes) */
		REQ(store_reader_fd(r) >= 0, "%s: no local copy after a verified write", name);
	REQ(store_reader_pread(r, buf, 1000, len / 2, &err) == 1000 && memcmp(buf, body + len / 2, 1000) == 0,
	    "%s: middle range: %s", name, err.msg);
	REQ(store_reader_pread(r, buf, 1000, len - 10, &err) == 10 && memcmp(buf, body + len - 10, 10) == 0,
	    "%s: last bytes: %s", name, err.msg);
	REQ(store_reader_pread(r, buf, 1000, len, &err) == 0, "%s: read at the end", name);
	store_reader_close(r);
	r = NULL;
	REQ(store_open_fd(s, STORE_CACHE, STORE_BLOB, dg, &fd, &size, &err) == RS_OK, "%s: open_fd: %s", name, err.msg);
	REQ(size == len && pread(fd, all, len, 0) == (ssize_t)len && memcmp(all, body, len) == 0,
	    "%s: the spooled copy differs", name);
	REQ(write_obj(s, STORE_CACHE, STORE_BLOB, dg, -1, body, len, &err) == RS_OK, "%s: second write: %s", name,
	    err.msg);
	REQ(tmp_files() == 0, "%s: %d files left in tmp/", name, tmp_files());
	ok = true;
out:
	store_reader_close(r);
	if (fd >= 0)
		close(fd);
	free(body);
	free(all);
	return ok;
}

static void writer_commits_a_verified_blob_read_by_ranges(struct store *s)
{
	if (roundtrip(s, "300000 bytes", 1, 300000))
		pass_msg(__func__);
}

static void multipart_blob_round_trips(struct store *s)
{
	if (roundtrip(s, "13 MiB", 2, (13u << 20) + 12345))
		pass_msg(__func__);
}

static void writer_mismatch_leaves_nothing(struct store *s)
{
	size_t len = (9u << 20) + 1; /* past one part: a multipart upload to abort */
	unsigned char *body = gen(3, len);
	char dg[DIGEST_STR_SIZE], other[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	digest_buffer(other, body, len - 1);
	struct rs_err err = {0};
	struct store_writer *w = NULL;
	store_remove(s, STORE_CACHE, STORE_BLOB, other);
	REQ(write_obj(s, STORE_CACHE, STORE_BLOB, other, -1, body, len, &err) == RS_DIGEST_MISMATCH,
	    "wrong digest: %s", err.msg);
	REQ(strstr(err.msg, other) != NULL, "the message names the expected digest: %s", err.msg);
	REQ(!store_has(s, STORE_CACHE, STORE_BLOB, other), "an object is visible after a digest mismatch");
	REQ(write_obj(s, STORE_CACHE, STORE_BLOB, other, (int64_t)len - 1, body, len, &err) == RS_DIGEST_MISMATCH,
	    "bytes past the size: %s", err.msg);
	REQ(!store_has(s, STORE_CACHE, STORE_BLOB, other), "an object is visible after too many bytes");
	store_remove(s, STORE_CACHE, STORE_BLOB, dg);
	REQ(write_obj(s, STORE_CACHE, STORE_BLOB, dg, (int64_t)len + 1, body, len, &err) == RS_DIGEST_MISMATCH,
	    "short of the size: %s", err.msg);
	REQ(strstr(err.msg, "expected") != NULL, "the size message: %s", err.msg);
	REQ(!store_has(s, STORE_CACHE, STORE_BLOB, dg), "an object is visible after too few bytes");
	/* an abandoned writer */
	REQ(store_writer_new(&w, s, STORE_CACHE, STORE_BLOB, dg, (int64_t)len, &err) == RS_OK, "%s", err.msg);
	REQ(store_writer_write(w, body, len - 100, &err) == RS_OK, "%s", err.msg);
	REQ(access(store_writer_path(w), F_OK) == 0, "the staging file %s is missing", store_writer_path(w));
	store_writer_abort(w);
	w = NULL;
	REQ(!store_has(s, STORE_CACHE, STORE_BLOB, dg), "an object is visible after an abort");
	REQ(tmp_files() == 0, "%d files left in tmp/", tmp_files());
	pass_msg(__func__);
out:
	store_writer_abort(w);
	free(body);
}

static void areas_are_kept_apart(struct store *s)
{
	unsigned char *body = gen(4, 5000);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, 5000);
	struct rs_err err = {0};
	store_remove(s, STORE_CACHE, STORE_BLOB, dg);
	store_remove(s, STORE_PUSHED, STORE_BLOB, dg);
	REQ(write_obj(s, STORE_PUSHED, STORE_BLOB, dg, 5000, body, 5000, &err) == RS_OK, "%s", err.msg);
	REQ(store_has(s, STORE_PUSHED, STORE_BLOB, dg) && !store_has(s, STORE_CACHE, STORE_BLOB, dg),
	    "pushed blob seen in the cache");
	REQ(!store_has(s, STORE_PUSHED, STORE_MANIFEST, dg), "a blob seen as a manifest");
	store_remove(s, STORE_PUSHED, STORE_BLOB, dg);
	REQ(!store_has(s, STORE_PUSHED, STORE_BLOB, dg), "removed blob still there");
	pass_msg(__func__);
out:
	free(body);
}

static void manifests_keep_their_media_type(struct store *s)
{
	const char *m = "{\"schemaVersion\":2,\"mediaType\":\"" MT_MANIFEST "\",\"config\":{},\"layers\":[]}";
	const char *noty = "{\"schemaVersion\":2,\"manifests\":[]}";
	char dg[DIGEST_STR_SIZE], dn[DIGEST_STR_SIZE];
	digest_buffer(dg, m, strlen(m));
	digest_buffer(dn, noty, strlen(noty));
	struct rs_err err = {0};
	char *buf = NULL, *type = NULL;
	size_t len = 0;
	REQ(store_manifest_put(s, STORE_CACHE, dg, "application/vnd.docker.distribution.manifest.v2+json", m, strlen(m),
	                       &err) == RS_OK, "%s", err.msg);
	REQ(store_manifest_get(s, STORE_CACHE, dg, 1 << 20, &buf, &len, &type, &err) == RS_OK, "%s", err.msg);
	REQ(len == strlen(m) && memcmp(buf, m, len) == 0, "bytes differ");
	REQ(strcmp(type, "application/vnd.docker.distribution.manifest.v2+json") == 0, "type %s", type);
	free(buf);
	free(type);
	buf = type = NULL;
	REQ(store_manifest_get(s, STORE_CACHE, dg, 10, &buf, &len, &type, &err) == RS_TOO_LARGE, "cap: %s", err.msg);
	REQ(store_manifest_put(s, STORE_CACHE, dn, NULL, m, strlen(m), &err) == RS_DIGEST_MISMATCH, "mismatch: %s",
	    err.msg);
	REQ(!store_has(s, STORE_CACHE, STORE_MANIFEST, dn), "a mismatched manifest is visible");
	/* without a recorded type, the document's shape says */
	REQ(store_manifest_put(s, STORE_CACHE, dn, NULL, noty, strlen(noty), &err) == RS_OK, "%s", err.msg);
	REQ(store_manifest_get(s, STORE_CACHE, dn, 1 << 20, &buf, &len, &type, &err) == RS_OK, "%s", err.msg);
	REQ(strcmp(type, "application/vnd.oci.image.index.v1+json") == 0, "sniffed type %s", type);
	free(buf);
	free(type);
	buf = type = NULL;
	store_remove(s, STORE_CACHE, STORE_MANIFEST, dn);
	REQ(store_manifest_get(s, STORE_CACHE, dn, 1 << 20, &buf, &len, &type, &err) == RS_NOT_FOUND, "removed: %s",
	    err.msg);
	pass_msg(__func__);
out:
	free(buf);
	free(type);
}

/* An image in the cache: config + one layer + manifest; *md its digest. */
static bool cache_image(struct store *s, uint64_t seed, char md[DIGEST_STR_SIZE], char cd[DIGEST_STR_SIZE],
                        char ld[DIGEST_STR_SIZE], struct rs_err *err)
{
	char cfgdoc[128], man[1024];
	snprintf(cfgdoc, sizeof(cfgdoc), "{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":%llu}",
	         (unsigned long long)seed);
	unsigned char *layer = gen(seed, 40000);
	digest_buffer(cd, cfgdoc, strlen(cfgdoc));
	digest_buffer(ld, layer, 40000);
	snprintf(man, sizeof(man),
	         "{\"schemaVersion\":2,\"mediaType\":\"" MT_MANIFEST "\",\"config\":{\"mediaType\":\"" MT_CONFIG
	         "\",\"digest\":\"%s\",\"size\":%zu},\"layers\":[{\"mediaType\":\"" MT_LAYER
	         "\",\"digest\":\"%s\",\"size\":40000}]}",
	         cd, strlen(cfgdoc), ld);
	digest_buffer(md, man, strlen(man));
	bool ok = write_obj(s, STORE_CACHE, STORE_BLOB, cd, -1, (unsigned char *)cfgdoc, strlen(cfgdoc), err) == RS_OK &&
	          write_obj(s, STORE_CACHE, STORE_BLOB, ld, 40000, layer, 40000, err) == RS_OK &&
	          store_manifest_put(s, STORE_CACHE, md, MT_MANIFEST, man, strlen(man), err) == RS_OK;
	free(layer);
	return ok;
}

static void cache_tags_and_links(struct store *s)
{
	struct rs_err err = {0};
	char md[DIGEST_STR_SIZE], cd[DIGEST_STR_SIZE], ld[DIGEST_STR_SIZE];
	REQ(cache_image(s, 5, md, cd, ld, &err), "%s", err.msg);
	struct store_tag t = {0}, got = {0};
	snprintf(t.digest, sizeof(t.digest), "%s", md);
	snprintf(t.media_type, sizeof(t.media_type), "%s", MT_MANIFEST);
	t.fetched = 1700000000;
	REQ(store_tag_put(s, "docker.io", "library/app", "1.0", &t, &err) == RS_OK, "%s", err.msg);
	REQ(store_tag_get(s, "docker.io", "library/app", "1.0", &got, &err) == RS_OK, "%s", err.msg);
	REQ(strcmp(got.digest, md) == 0 && strcmp(got.media_type, MT_MANIFEST) == 0 && got.fetched == t.fetched,
	    "tag read back differs");
	REQ(store_tag_get(s, "docker.io", "library/app", "2.0", &got, &err) == RS_NOT_FOUND, "absent tag");
	REQ(store_tag_put(s, "docker.io", "../etc", "1.0", &t, &err) == RS_BAD_INPUT, "bad repository name");
	store_unlink(s, "docker.io", "library/app", STORE_BLOB, ld);
	REQ(!store_linked(s, "docker.io", "library/app", STORE_BLOB, ld), "linked before the link");
	REQ(store_link_image(s, "docker.io", "library/app", md, &err) == RS_OK, "%s", err.msg);
	REQ(store_linked(s, "docker.io", "library/app", STORE_BLOB, ld), "layer not linked by link_image");
	REQ(store_linked(s, "docker.io", "library/app", STORE_BLOB, cd), "config not linked by link_image");
	REQ(store_linked(s, "docker.io", "library/app", STORE_MANIFEST, md), "manifest not linked");
	REQ(!store_linked(s, "docker.io", "library/other", STORE_BLOB, ld), "linked to another repository");
	REQ(store_linked_by_image(s, "docker.io", "library/app", STORE_BLOB, ld), "linked_by_image misses the layer");
	REQ(!store_linked_by_image(s, "docker.io", "library/other", STORE_BLOB, ld), "linked_by_image elsewhere");
	store_unlink(s, "docker.io", "library/app", STORE_BLOB, ld);
	REQ(!store_linked(s, "docker.io", "library/app", STORE_BLOB, ld), "still linked after unlink");
	pass_msg(__func__);
out:;
}

static void uploads_become_pushed_images(struct store *s)
{
	const char *cfgdoc = "{\"os\":\"linux\",\"architecture\":\"amd64\",\"pushed\":true}";
	char cd[DIGEST_STR_SIZE], bad[DIGEST_STR_SIZE];
	digest_buffer(cd, cfgdoc, strlen(cfgdoc));
	digest_buffer(bad, "x", 1);
	struct rs_err err = {0};
	char uuid[STORE_UUID_SIZE];
	struct store_upload *u = NULL;
	char *list = NULL;
	REQ(store_upload_start(s, "team/app", uuid, &err) == RS_OK, "%s", err.msg);
	REQ(store_upload_open(s, "team/other", uuid, &u, &err) == RS_NOT_FOUND, "another repository's upload");
	REQ(store_upload_open(s, "team/app", uuid, &u, &err) == RS_OK, "%s", err.msg);
	struct store_upload *u2 = NULL;
	REQ(store_upload_open(s, "team/app", uuid, &u2, &err) == RS_BAD_INPUT, "an upload in use opened twice");
	REQ(store_upload_write(u, cfgdoc, 10, &err) == RS_OK, "%s", err.msg);
	store_upload_close(u);
	u = NULL;
	REQ(store_upload_open(s, "team/app", uuid, &u, &err) == RS_OK, "%s", err.msg);
	REQ(store_upload_size(u) == 10, "size %llu", (unsigned long long)store_upload_size(u));
	REQ(store_upload_write(u, cfgdoc + 10, strlen(cfgdoc) - 10, &err) == RS_OK, "%s", err.msg);
	REQ(store_upload_commit(u, cd, &err) == RS_OK, "%s", err.msg);
	u = NULL;
	REQ(store_pushed_holds(s, "team/app", STORE_BLOB, cd), "the committed blob is not held");
	REQ(!store_pushed_holds(s, "team/other", STORE_BLOB, cd), "held by another repository");
	REQ(!store_has(s, STORE_CACHE, STORE_BLOB, cd), "a pushed blob in the cache area");
	/* a mismatch removes the upload and stores nothing */
	REQ(store_upload_start(s, "team/app", uuid, &err) == RS_OK, "%s", err.msg);
	REQ(store_upload_open(s, "team/app", uuid, &u, &err) == RS_OK, "%s", err.msg);
	REQ(store_upload_write(u, "y", 1, &err) == RS_OK, "%s", err.msg);
	REQ(store_upload_commit(u, bad, &err) == RS_DIGEST_MISMATCH, "mismatch: %s", err.msg);
	u = NULL;
	REQ(!store_has(s, STORE_PUSHED, STORE_BLOB, bad), "a mismatched upload is visible");
	REQ(store_upload_open(s, "team/app", uuid, &u, &err) == RS_NOT_FOUND, "the mismatched upload stayed");
	/* mounts */
	REQ(store_pushed_mount(s, "team/other", "team/app", cd, &err) == RS_OK, "%s", err.msg);
	REQ(store_pushed_holds(s, "team/other", STORE_BLOB, cd), "mount did not link");
	REQ(store_pushed_mount(s, "team/third", "team/nobody", cd, &err) == RS_NOT_FOUND, "mount from nobody");
	/* a manifest by tag, with a subject */
	char man[1024], md[DIGEST_STR_SIZE], out[DIGEST_STR_SIZE], ref[1024], rd[DIGEST_STR_SIZE];
	snprintf(man, sizeof(man),
	         "{\"schemaVersion\":2,\"mediaType\":\"" MT_MANIFEST "\",\"config\":{\"mediaType\":\"" MT_CONFIG
	         "\",\"digest\":\"%s\",\"size\":%zu},\"layers\":[]}",
	         cd, strlen(cfgdoc));
	digest_buffer(md, man, strlen(man));
	REQ(store_pushed_put_manifest(s, "team/app", "1.0", MT_MANIFEST, man, strlen(man), out, &err) == RS_OK, "%s",
	    err.msg);
	REQ(strcmp(out, md) == 0, "digest %s", out);
	snprintf(ref, sizeof(ref),
	         "{\"schemaVersion\":2,\"mediaType\":\"" MT_MANIFEST "\",\"artifactType\":\"application/x-sig\","
	         "\"config\":{\"mediaType\":\"" MT_CONFIG "\",\"digest\":\"%s\",\"size\":%zu},\"layers\":[],"
	         "\"subject\":{\"mediaType\":\"" MT_MANIFEST "\",\"digest\":\"%s\",\"size\":%zu}}",
	         cd, strlen(cfgdoc), md, strlen(man));
	digest_buffer(rd, ref, strlen(ref));
	REQ(store_pushed_put_manifest(s, "team/app", rd, MT_MANIFEST, ref, strlen(ref), out, &err) == RS_OK, "%s",
	    err.msg);
	char(*refs)[DIGEST_STR_SIZE] = NULL;
	size_t nrefs = 0;
	REQ(store_pushed_referrers(s, "team/app", md, &refs, &nrefs, 100, &err) == RS_OK && nrefs == 1 &&
	        strcmp(refs[0], rd) == 0,
	    "referrers: %zu (%s)", nrefs, err.msg);
	free(refs);
	struct store_tag t = {0};
	REQ(store_pushed_tag_get(s, "team/app", "1.0", &t, &err) == RS_OK && strcmp(t.digest, md) == 0, "tag: %s",
	    err.msg);
	REQ(store_pushed_tag_get(s, "team/app", "2.0", &t, &err) == RS_NOT_FOUND, "absent tag");
	size_t len = 0;
	REQ(store_pushed_tags_list(s, "team/app", &list, &len, &err) == RS_OK && strstr(list, "\"1.0\""), "list: %s",
	    err.msg);
	free(list);
	list = NULL;
	REQ(store_pushed_tags_list(s, "team/nothing", &list, &len, &err) == RS_NOT_FOUND, "list of nothing");
	/* a reference the repository does not hold */
	char man2[1024];
	snprintf(man2, sizeof(man2),
	         "{\"schemaVersion\":2,\"mediaType\":\"" MT_MANIFEST "\",\"config\":{\"mediaType\":\"" MT_CONFIG
	         "\",\"digest\":\"%s\",\"size\":1},\"layers\":[]}",
	         bad);
	REQ(store_pushed_put_manifest(s, "team/app", "bad", MT_MANIFEST, man2, strlen(man2), out, &err) == RS_NOT_FOUND,
	    "an unknown reference: %s", err.msg);
	REQ(store_pushed_holds(s, "team/app", STORE_MANIFEST, md), "manifest not held");
	store_pushed_forget_manifest(s, "team/app", md);
	REQ(!store_pushed_holds(s, "team/app", STORE_MANIFEST, md), "forgotten manifest still held");
	REQ(store_upload_start(s, "team/app", uuid, &err) == RS_OK, "%s", err.msg);
	REQ(store_upload_open(s, "team/app", uuid, &u, &err) == RS_OK, "%s", err.msg);
	store_upload_cancel(u);
	u = NULL;
	REQ(store_upload_open(s, "team/app", uuid, &u, &err) == RS_NOT_FOUND, "a cancelled upload stayed");
	pass_msg(__func__);
out:
	free(list);
	store_upload_close(u);
}

/* Deletes and the garbage collection of pushed images (docs/push.md): a tag,
 * a blob link, a referrer and a manifest with its tags are deleted; a sweep
 * within the grace period removes nothing; a sweep past it removes what no
 * linked manifest keeps (the deleted referrer, a blob only ever linked) and
 * keeps what another repository's manifest holds. */
static void pushed_deletes_and_gc(struct store *s)
{
	const char *cfgdoc = "{\"os\":\"linux\",\"architecture\":\"amd64\",\"gc\":\"storecheck\"}";
	const char *orphan = "a blob only ever linked";
	char cd[DIGEST_STR_SIZE], od[DIGEST_STR_SIZE], md[DIGEST_STR_SIZE], rd[DIGEST_STR_SIZE], out[DIGEST_STR_SIZE];
	digest_buffer(cd, cfgdoc, strlen(cfgdoc));
	digest_buffer(od, orphan, strlen(orphan));
	struct rs_err err = {0};
	char uuid[STORE_UUID_SIZE];
	struct store_upload *u = NULL;
	const char *blobs[2] = {cfgdoc, orphan};
	const char *digests[2] = {cd, od};
	for (int i = 0; i < 2; i++) {
		REQ(store_upload_start(s, "gc/app", uuid, &err) == RS_OK, "%s", err.msg);
		REQ(store_upload_open(s, "gc/app", uuid, &u, &err) == RS_OK, "%s", err.msg);
		REQ(store_upload_write(u, blobs[i], strlen(blobs[i]), &err) == RS_OK, "%s", err.msg);
		REQ(store_upload_commit(u, digests[i], &err) == RS_OK, "%s", err.msg);
		u = NULL;
	}
	char man[1024], ref[1024];
	snprintf(man, sizeof(man),
	         "{\"schemaVersion\":2,\"mediaType\":\"" MT_MANIFEST "\",\"config\":{\"mediaType\":\"" MT_CONFIG
	         "\",\"digest\":\"%s\",\"size\":%zu},\"layers\":[]}",
	         cd, strlen(cfgdoc));
	digest_buffer(md, man, strlen(man));
	snprintf(ref, sizeof(ref),
	         "{\"schemaVersion\":2,\"mediaType\":\"" MT_MANIFEST "\",\"artifactType\":\"application/x-gc\","
	         "\"config\":{\"mediaType\":\"" MT_CONFIG "\",\"digest\":\"%s\",\"size\":%zu},\"layers\":[],"
	         "\"subject\":{\"mediaType\":\"" MT_MANIFEST "\",\"digest\":\"%s\",\"size\":%zu}}",
	         cd, strlen(cfgdoc), md, strlen(man));
	digest_buffer(rd, ref, strlen(ref));
	REQ(store_pushed_put_manifest(s, "gc/app", "1.0", MT_MANIFEST, man, strlen(man), out, &err) == RS_OK, "%s",
	    err.msg);
	REQ(store_pushed_put_manifest(s, "gc/app", "2.0", MT_MANIFEST, man, strlen(man), out, &err) == RS_OK, "%s",
	    err.msg);
	REQ(store_pushed_put_manifest(s, "gc/app", rd, MT_MANIFEST, ref, strlen(ref), out, &err) == RS_OK, "%s", err.msg);
	/* the same image in another repository keeps its objects */
	REQ(store_pushed_mount(s, "gc/keep", "gc/app", cd, &err) == RS_OK, "%s", err.msg);
	REQ(store_pushed_put_manifest(s, "gc/keep", "k", MT_MANIFEST, man, strlen(man), out, &err) == RS_OK, "%s",
	    err.msg);
	struct store_tag t;
	REQ(store_pushed_delete_tag(s, "gc/app", "2.0", &err) == RS_OK, "delete tag: %s", err.msg);
	REQ(store_pushed_tag_get(s, "gc/app", "2.0", &t, &err) == RS_NOT_FOUND, "a deleted tag is still there");
	REQ(store_pushed_tag_get(s, "gc/app", "1.0", &t, &err) == RS_OK, "the other tag went: %s", err.msg);
	REQ(store_pushed_delete_tag(s, "gc/app", "2.0", &err) == RS_NOT_FOUND, "a tag deleted twice");
	REQ(store_pushed_delete_blob(s, "gc/app", od, &err) == RS_OK, "delete blob: %s", err.msg);
	REQ(!store_pushed_holds(s, "gc/app", STORE_BLOB, od), "a deleted blob is still held");
	REQ(store_pushed_delete_blob(s, "gc/app", od, &err) == RS_NOT_FOUND, "a blob deleted twice");
	unsigned tags = 9;
	REQ(store_pushed_delete_manifest(s, "gc/app", rd, &tags, &err) == RS_OK && tags == 0, "delete referrer: %s",
	    err.msg);
	char(*refs)[DIGEST_STR_SIZE] = NULL;
	size_t nrefs = 9;
	REQ(store_pushed_referrers(s, "gc/app", md, &refs, &nrefs, 100, &err) == RS_OK && nrefs == 0,
	    "the deleted referrer is still listed (%zu)", nrefs);
	free(refs);
	REQ(store_pushed_delete_manifest(s, "gc/app", md, &tags, &err) == RS_OK && tags == 1, "delete manifest: %s (%u tags)",
	    err.msg, tags);
	REQ(store_pushed_tag_get(s, "gc/app", "1.0", &t, &err) == RS_NOT_FOUND, "the manifest's tag stayed");
	REQ(!store_pushed_holds(s, "gc/app", STORE_MANIFEST, md), "a deleted manifest is still held");
	REQ(store_pushed_holds(s, "gc/keep", STORE_MANIFEST, md), "another repository lost the manifest");
	REQ(store_pushed_delete_manifest(s, "gc/app", md, &tags, &err) == RS_NOT_FOUND, "a manifest deleted twice");
	struct store_gc_stats st;
	REQ(store_pushed_gc(s, time(NULL), 3600, &st, &err) == RS_OK, "gc: %s", err.msg);
	REQ(st.blobs_removed == 0 && st.manifests_removed == 0 && st.young >= 2 && st.roots >= 1,
	    "within the grace period: %u blobs, %u manifests removed, %u young, %u roots", st.blobs_removed,
	    st.manifests_removed, st.young, st.roots);
	REQ(store_has(s, STORE_PUSHED, STORE_BLOB, od) && store_has(s, STORE_PUSHED, STORE_MANIFEST, rd),
	    "removed within the grace period");
	REQ(store_pushed_gc(s, time(NULL) + 5, 0, &st, &err) == RS_OK, "gc: %s", err.msg);
	REQ(st.blobs_removed >= 1 && st.manifests_removed >= 1 && st.bytes_removed > 0,
	    "past the grace period: %u blobs, %u manifests removed", st.blobs_removed, st.manifests_removed);
	REQ(!store_has(s, STORE_PUSHED, STORE_BLOB, od), "the blob only ever linked stayed");
	REQ(!store_has(s, STORE_PUSHED, STORE_MANIFEST, rd), "the deleted referrer stayed");
	REQ(store_has(s, STORE_PUSHED, STORE_MANIFEST, md) && store_has(s, STORE_PUSHED, STORE_BLOB, cd),
	    "what another repository holds went");
	pass_msg(__func__);
out:
	store_upload_close(u);
}

static void documents_round_trip(struct store *s)
{
	struct rs_err err = {0};
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, "doc", 3);
	char *buf = NULL;
	size_t len = 0;
	REQ(store_doc_put(s, STORE_DOC_OPT_RESULT, NULL, "up_repo_tag-1", "{\"a\":1}", 7, &err) == RS_OK, "%s", err.msg);
	REQ(store_doc_get(s, STORE_DOC_OPT_RESULT, NULL, "up_repo_tag-1", 100, &buf, &len, &err) == RS_OK &&
	        len == 7 && strcmp(buf, "{\"a\":1}") == 0,
	    "result: %s", err.msg);
	free(buf);
	buf = NULL;
	REQ(store_doc_put(s, STORE_DOC_GATE_REPORT, "team/app", dg, "{}", 2, &err) == RS_OK, "%s", err.msg);
	REQ(store_doc_get(s, STORE_DOC_GATE_REPORT, "team/app", dg, 100, &buf, &len, &err) == RS_OK, "%s", err.msg);
	free(buf);
	buf = NULL;
	REQ(store_doc_get(s, STORE_DOC_GATE_REPORT, "team/other", dg, 100, &buf, &len, &err) == RS_NOT_FOUND,
	    "another repository's report");
	REQ(store_doc_put(s, STORE_DOC_OPT_REPORT, NULL, dg, "0123456789", 10, &err) == RS_OK, "%s", err.msg);
	REQ(store_doc_get(s, STORE_DOC_OPT_REPORT, NULL, dg, 5, &buf, &len, &err) == RS_TOO_LARGE, "cap");
	REQ(store_doc_put(s, STORE_DOC_GATE_SCAN, NULL, "layer-abc.v1", "scan\n", 5, &err) == RS_OK, "%s", err.msg);
	REQ(store_doc_get(s, STORE_DOC_GATE_SCAN, NULL, "layer-abc.v1", 100, &buf, &len, &err) == RS_OK && len == 5,
	    "scan: %s", err.msg);
	free(buf);
	buf = NULL;
	REQ(store_doc_put(s, STORE_DOC_SIGNATURES, "team/app", dg, "[]", 2, &err) == RS_OK, "%s", err.msg);
	REQ(store_doc_get(s, STORE_DOC_SIGNATURES, "team/other", dg, 100, &buf, &len, &err) == RS_NOT_FOUND,
	    "another repository's signatures");
	REQ(store_doc_get(s, STORE_DOC_SIGNATURES, "team/app", dg, 100, &buf, &len, &err) == RS_OK, "%s", err.msg);
	free(buf);
	buf = NULL;
	REQ(store_doc_put(s, STORE_DOC_OPT_RESULT, NULL, "../x", "{}", 2, &err) == RS_BAD_INPUT, "bad key");
	REQ(store_doc_put(s, STORE_DOC_OPT_OWNER, NULL, "nope", "{}", 2, &err) == RS_DIGEST_INVALID, "bad digest key");
	pass_msg(__func__);
out:
	free(buf);
}

static void scratch_and_layout_export(struct store *s)
{
	struct rs_err err = {0};
	char dir[4096], layout[4200], p[4400];
	char md[DIGEST_STR_SIZE], cd[DIGEST_STR_SIZE], ld[DIGEST_STR_SIZE];
	REQ(cache_image(s, 6, md, cd, ld, &err), "%s", err.msg);
	REQ(store_scratch_new(s, "check", dir, sizeof(dir), &err) == RS_OK, "%s", err.msg);
	snprintf(layout, sizeof(layout), "%s/layout", dir);
	REQ(store_export_layout(s, STORE_CACHE, md, "1.0", layout, 1 << 20, NULL, NULL, &err) == RS_OK, "%s", err.msg);
	const char *want[] = {md, cd, ld};
	for (int i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s/blobs/sha256/%s", layout, digest_hex(want[i]));
		FILE *f = fopen(p, "rb");
		REQ(f, "%s missing from the layout", want[i]);
		unsigned char buf[65536];
		size_t n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		char got[DIGEST_STR_SIZE];
		digest_buffer(got, buf, n);
		REQ(strcmp(got, want[i]) == 0, "layout copy of %s hashes to %s", want[i], got);
	}
	snprintf(p, sizeof(p), "%s/index.json", layout);
	REQ(access(p, F_OK) == 0, "no index.json");
	store_scratch_remove(s, dir);
	REQ(access(dir, F_OK) != 0, "scratch directory %s stayed", dir);
	pass_msg(__func__);
out:;
}

static void evicts_unused_then_least_recent_keeping_pins(struct store *s)
{
	struct rs_err err = {0};
	char d[4][DIGEST_STR_SIZE];
	unsigned char *b[4];
	for (int i = 0; i < 4; i++) {
		b[i] = gen(100 + (uint64_t)i, 100000);
		digest_buffer(d[i], b[i], 100000);
	}
	uint64_t freed = 0;
	for (int i = 0; i < 4; i++)
		REQ(write_obj(s, STORE_CACHE, STORE_BLOB, d[i], 100000, b[i], 100000, &err) == RS_OK, "%s", err.msg);
	REQ(store_pin(s, STORE_CACHE, STORE_BLOB, d[0], time(NULL) + 600), "pin of a present blob");
	uint64_t before = store_size(s);
	REQ(before >= 400000, "size %llu", (unsigned long long)before);
	/* over the limit by about 1.5 blobs: the pinned one stays */
	cfg.cache_max_bytes = before - 150000;
	REQ(store_evict(s, &freed, &err) == RS_OK, "%s", err.msg);
	REQ(freed >= 150000, "freed %llu", (unsigned long long)freed);
	REQ(store_has(s, STORE_CACHE, STORE_BLOB, d[0]), "the pinned blob was evicted");
	REQ(store_size(s) <= cfg.cache_max_bytes, "size %llu over %llu", (unsigned long long)store_size(s),
	    (unsigned long long)cfg.cache_max_bytes);
	pass_msg(__func__);
out:
	cfg.cache_max_bytes = 0;
	for (int i = 0; i < 4; i++)
		free(b[i]);
}

/* An optimized image (owner documents on its objects, a result naming its
 * manifest) loses every object and its result when eviction takes one of
 * them; a store of its own (prefix .../optevict/) so that only it counts. */
static void evicts_optimized_images_whole(void)
{
	struct rs_err err = {0};
	char *saved = cfg.store.s3.prefix, prefix[300];
	snprintf(prefix, sizeof(prefix), "%soptevict/", saved ? saved : "");
	cfg.store.s3.prefix = prefix;
	struct store *s = open_store();
	char md[DIGEST_STR_SIZE], cd[DIGEST_STR_SIZE], ld[DIGEST_STR_SIZE], owner[128], result[256];
	char *buf = NULL;
	size_t len = 0;
	uint64_t freed = 0;
	REQ(s, "no store");
	REQ(cache_image(s, 7, md, cd, ld, &err), "%s", err.msg);
	snprintf(owner, sizeof(owner), "{\"key\":\"opt-key-7\"}");
	const char *objs[] = {md, cd, ld};
	for (int i = 0; i < 3; i++)
		REQ(store_doc_put(s, STORE_DOC_OPT_OWNER, NULL, objs[i], owner, strlen(owner), &err) == RS_OK, "%s",
		    err.msg);
	snprintf(result, sizeof(result), "{\"digest\":\"%s\"}", md);
	REQ(store_doc_put(s, STORE_DOC_OPT_RESULT, NULL, "opt-key-7", result, strlen(result), &err) == RS_OK, "%s",
	    err.msg);
	uint64_t size = store_size(s);
	cfg.cache_max_bytes = size - 1; /* one object must go */
	REQ(store_evict(s, &freed, &err) == RS_OK, "%s", err.msg);
	REQ(freed == size, "freed %llu of %llu", (unsigned long long)freed, (unsigned long long)size);
	for (int i = 0; i < 3; i++)
		REQ(!store_has(s, STORE_CACHE, i ? STORE_BLOB : STORE_MANIFEST, objs[i]), "%s stayed", objs[i]);
	REQ(store_doc_get(s, STORE_DOC_OPT_RESULT, NULL, "opt-key-7", 1024, &buf, &len, &err) == RS_NOT_FOUND,
	    "the result document stayed");
	REQ(store_doc_get(s, STORE_DOC_OPT_OWNER, NULL, cd, 1024, &buf, &len, &err) == RS_OK,
	    "owner documents stay (they say how to make an object again): %s", err.msg);
	pass_msg(__func__);
out:
	free(buf);
	cfg.cache_max_bytes = 0;
	store_free(s);
	cfg.store.s3.prefix = saved;
}

static void check_writable(struct store *s)
{
	struct rs_err err = {0};
	REQ(store_check_writable(s, &err) == RS_OK, "%s", err.msg);
	pass_msg(__func__);
out:;
}

/* The same store with the endpoint on a port nobody listens on. */
static void unreachable_store_is_unavailable_naming_endpoint(void)
{
	struct rs_err err = {0};
	char *saved = cfg.store.s3.endpoint;
	const char *dead = getenv("STORECHECK_DEAD_ENDPOINT");
	struct store *s = NULL;
	struct store_writer *w = NULL;
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, "z", 1);
	cfg.store.s3.endpoint = (char *)(dead ? dead : "http://127.0.0.1:1");
	REQ(store_open(&s, &cfg, &err) == RS_OK, "open with the store down must work: %s", err.msg);
	REQ(!store_has(s, STORE_CACHE, STORE_BLOB, dg), "has on a dead store");
	REQ(store_writer_new(&w, s, STORE_CACHE, STORE_BLOB, dg, 1, &err) == RS_UNAVAILABLE, "writer: %s (%s)",
	    rs_code_name(err.code), err.msg);
	REQ(strstr(err.msg, cfg.store.s3.endpoint) && strstr(err.msg, cfg.store.s3.bucket), "message: %s", err.msg);
	pass_msg(__func__);
out:
	store_writer_abort(w);
	store_free(s);
	cfg.store.s3.endpoint = saved;
}

/* Start a write and wait to be killed in the middle of it. */
static int hang(void)
{
	struct store *s = open_store();
	size_t len = 10u << 20;
	unsigned char *body = gen(9, len);
	char dg[DIGEST_STR_SIZE];
	digest_buffer(dg, body, len);
	struct store_writer *w = NULL;
	struct rs_err err = {0};
	if (!s || store_writer_new(&w, s, STORE_CACHE, STORE_BLOB, dg, (int64_t)len, &err) != RS_OK ||
	    store_writer_write(w, body, (9u << 20) + 1, &err) != RS_OK) {
		printf("FAIL hang: %s\n", err.msg);
		return 1;
	}
	printf("%s %s\n", dg, store_writer_path(w));
	fflush(stdout);
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	if (argc != 2 && !(argc == 3 && strcmp(argv[2], "hang") == 0)) {
		fprintf(stderr, "usage: storecheck CONFIG_FILE [hang]\n");
		return 2;
	}
	struct rs_err err = {0};
	if (config_load(&cfg, argv[1], &err) != RS_OK) {
		fprintf(stderr, "storecheck: %s\n", err.msg);
		return 2;
	}
	cfg.cache_max_bytes = 0;
	if (argc == 3)
		return hang();
	struct store *s = open_store();
	if (s) {
		driver_is_s3(s);
		writer_commits_a_verified_blob_read_by_ranges(s);
		multipart_blob_round_trips(s);
		writer_mismatch_leaves_nothing(s);
		areas_are_kept_apart(s);
		manifests_keep_their_media_type(s);
		cache_tags_and_links(s);
		uploads_become_pushed_images(s);
		pushed_deletes_and_gc(s);
		documents_round_trip(s);
		scratch_and_layout_export(s);
		check_writable(s);
		evicts_unused_then_least_recent_keeping_pins(s);
		store_free(s);
	}
	evicts_optimized_images_whole();
	unreachable_store_is_unavailable_naming_endpoint();
	config_dispose(&cfg);
	printf("# storecheck: %u passed, %u failed\n", passed, failed);
	return failed ? 1 : 0;
}
