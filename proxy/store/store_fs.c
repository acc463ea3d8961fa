/* store_fs: the "fs" storage driver (store_driver.h): everything under the
 * data directory, on one file system. Its internals are blobstore.c (the
 * cache area: <data>/{blobs,manifests,tags,links,tmp}) and push.c (upload
 * sessions in <data>/uploads, the pushed area: a second blobstore under
 * <data>/push); this file maps the interface's areas onto them and keeps
 * the documents itself:
 *   <data>/optimized/<key>.json                 optimized pull results
 *   <data>/optimized/reports/<hex>.json         optimizer reports
 *   <data>/gate/reports/<repository>/<hex>.json push gate reports
 *   <data>/gate/scans/<scan key>.scan           push gate scans of layers
 *   <data>/signatures/<repository>/<hex>.json   simple-signing signatures of a manifest
 *   <data>/tmp/<prefix>-XXXXXX/                 scratch directories
 * Documents are staged in <data>/tmp/, fsynced and renamed into place, so a
 * crash leaves nothing but what the sweep at open removes (temp files and
 * scratch directories under tmp/, and *.tmp-* left in optimized/ and
 * gate/reports/ by revisions that staged beside the target). The layout is that of earlier
 * revisions: existing data directories keep working. No HTTP, no upstream. */
#include "store_driver.h"
#include "store_local.h"

#include "blobstore.h"
#include "fsutil.h"
#include "imagewalk.h"
#include "log.h"
#include "push.h"
#include "refname.h"
#include "rs_limits.h"
#include "scrub.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FS_PATH_MAX 4096

struct fs {
	const struct rs_config *cfg;
	char root[FS_PATH_MAX];
	char tmp[FS_PATH_MAX + 8];       /* <data>/tmp */
	char optimized[FS_PATH_MAX + 16]; /* <data>/optimized */
	char *real;                       /* realpath of root, for scrubbing; may be NULL */
	struct blobstore *cache;
	struct push *push;
};

struct fs_reader {
	struct store_reader base;
};

struct fs_writer {
	struct store_writer base;
	struct blobstore_writer *w;
};

struct fs_upload {
	struct store_upload base;
	struct push_upload *u;
};

static enum blobstore_kind bkind(enum store_kind k)
{
	return k == STORE_BLOB ? BLOBSTORE_BLOB : BLOBSTORE_MANIFEST;
}

static struct blobstore *area_of(struct fs *fs, enum store_area area)
{
	return area == STORE_PUSHED ? push_store(fs->push) : fs->cache;
}

static void tag_from(struct store_tag *out, const struct blobstore_tag *t)
{
	memcpy(out->digest, t->digest, sizeof(out->digest));
	memcpy(out->media_type, t->media_type, sizeof(out->media_type));
	out->fetched = t->fetched;
}

/* ------------------------------------------------------------ lifecycle */

/* Remove every entry of dir for which pick(name, is_dir) holds. */
static void sweep(const char *dir, bool (*pick)(const char *name, bool is_dir))
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		struct stat st;
		if (de->d_name[0] == '.' || fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		bool is_dir = S_ISDIR(st.st_mode);
		if (!pick(de->d_name, is_dir))
			continue;
		char p[FS_PATH_MAX + 300];
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (is_dir)
			fsutil_rm_tree(p);
		else
			(void)unlink(p); /* best effort: a leftover is tried again at the next open */
	}
	closedir(d);
}

/* Scratch directories under tmp/ (the files there blobstore_open sweeps). */
static bool pick_dir(const char *name, bool is_dir)
{
	(void)name;
	return is_dir;
}

/* Temp files of fsutil_write_atomic staged beside their target. */
static bool pick_staged(const char *name, bool is_dir)
{
	return !is_dir && strstr(name, ".tmp-") != NULL;
}

/* nftw callback: a staged temp file left beside a gate report. */
static int unlink_staged(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	if (type == FTW_F && pick_staged(path + ftw->base, false))
		(void)unlink(path); /* best effort: tried again at the next open */
	return 0;
}

static void fs_free(void *impl)
{
	struct fs *fs = impl;
	if (!fs)
		return;
	push_free(fs->push);
	blobstore_free(fs->cache);
	free(fs->real);
	free(fs);
}

static void fs_evicted(void *ctx, enum blobstore_kind kind, const char *digest);

enum rs_code store_fs_open(void **out_impl, const struct rs_config *cfg, struct rs_err *err)
{
	*out_impl = NULL;
	struct fs *fs = calloc(1, sizeof(*fs));
	if (!fs)
		return rs_err_set(err, RS_NOMEM, "out of memory opening the store");
	fs->cfg = cfg;
	enum rs_code rc = RS_OK;
	if (snprintf(fs->root, sizeof(fs->root), "%s", cfg->data_dir) >= (int)sizeof(fs->root)) {
		rc = rs_err_set(err, RS_IO, "data directory path too long (%zu bytes)", strlen(cfg->data_dir));
		goto out;
	}
	snprintf(fs->tmp, sizeof(fs->tmp), "%s/tmp", fs->root);
	snprintf(fs->optimized, sizeof(fs->optimized), "%s/optimized", fs->root);
	if ((rc = blobstore_open(&fs->cache, fs->root, cfg->cache_max_bytes, err)))
		goto out;
	sweep(fs->tmp, pick_dir);
	char reports[FS_PATH_MAX + 32];
	snprintf(reports, sizeof(reports), "%s/reports", fs->optimized);
	if ((rc = fsutil_mkdir_p(reports, NULL, err)))
		goto out;
	sweep(fs->optimized, pick_staged);
	sweep(reports, pick_staged);
	char gate[FS_PATH_MAX + 32];
	snprintf(gate, sizeof(gate), "%s/gate/reports", fs->root);
	(void)nftw(gate, unlink_staged, 16, FTW_PHYS); /* absent before the first gate report: nothing to do */
	blobstore_set_evict_hook(fs->cache, fs_evicted, fs);
	if ((rc = push_new(&fs->push, cfg, fs->cache, err)))
		goto out;
	fs->real = realpath(fs->root, NULL); /* NULL only scrubs less */
	*out_impl = fs;
	return RS_OK;
out:
	fs_free(fs);
	return rc;
}

/* ------------------------------------------------------------ objects */

static bool fs_has(void *impl, enum store_area area, enum store_kind kind, const char *digest)
{
	return blobstore_has(area_of(impl, area), bkind(kind), digest);
}

static enum rs_code fs_reader_open(void *impl, enum store_area area, enum store_kind kind, const char *digest,
                                   struct store_reader **out, struct rs_err *err)
{
	struct fs_reader *r = calloc(1, sizeof(*r));
	if (!r)
		return rs_err_set(err, RS_NOMEM, "out of memory opening %s", digest);
	r->base.drv = &store_fs_driver;
	enum rs_code rc = blobstore_open_object(area_of(impl, area), bkind(kind), digest, &r->base.fd, &r->base.size,
	                                        err);
	if (rc) {
		free(r);
		return rc;
	}
	*out = &r->base;
	return RS_OK;
}

static ssize_t fs_reader_pread(struct store_reader *r, void *buf, size_t len, uint64_t off, struct rs_err *err)
{
	for (;;) {
		ssize_t n = pread(r->fd, buf, len, (off_t)off);
		if (n >= 0)
			return n;
		if (errno != EINTR) {
			rs_err_set(err, RS_IO, "reading a stored object: %s", strerror(errno));
			return -1;
		}
	}
}

static void fs_reader_close(struct store_reader *r)
{
	if (r->fd >= 0)
		close(r->fd);
	free(r);
}

static void fs_remove(void *impl, enum store_area area, enum store_kind kind, const char *digest)
{
	blobstore_remove(area_of(impl, area), bkind(kind), digest);
}

static enum rs_code fs_writer_new(void *impl, enum store_area area, enum store_kind kind, const char *digest,
                                  int64_t size, struct store_writer **out, struct rs_err *err)
{
	struct fs_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return rs_err_set(err, RS_NOMEM, "out of memory writing %s", digest);
	w->base.drv = &store_fs_driver;
	enum rs_code rc = blobstore_writer_new(&w->w, area_of(impl, area), bkind(kind), digest, size, err);
	if (rc) {
		free(w);
		return rc;
	}
	*out = &w->base;
	return RS_OK;
}

static enum rs_code fs_writer_write(struct store_writer *w, const void *buf, size_t len, struct rs_err *err)
{
	return blobstore_writer_write(((struct fs_writer *)w)->w, buf, len, err);
}

static uint64_t fs_writer_size(const struct store_writer *w)
{
	return blobstore_writer_size(((const struct fs_writer *)w)->w);
}

static const char *fs_writer_path(const struct store_writer *w)
{
	return blobstore_writer_path(((const struct fs_writer *)w)->w);
}

static enum rs_code fs_writer_commit(struct store_writer *w, struct rs_err *err)
{
	struct fs_writer *fw = (struct fs_writer *)w;
	enum rs_code rc = blobstore_writer_commit(fw->w, err); /* frees fw->w */
	free(fw);
	return rc;
}

static void fs_writer_abort(struct store_writer *w)
{
	struct fs_writer *fw = (struct fs_writer *)w;
	blobstore_writer_abort(fw->w);
	free(fw);
}

static enum rs_code fs_manifest_put(void *impl, enum store_area area, const char *digest, const char *media_type,
                                    const void *buf, size_t len, struct rs_err *err)
{
	return blobstore_put_manifest(area_of(impl, area), digest, media_type, buf, len, err);
}

static enum rs_code fs_manifest_get(void *impl, enum store_area area, const char *digest, size_t max_bytes,
                                    char **out_buf, size_t *out_len, char **out_type, struct rs_err *err)
{
	return blobstore_get_manifest(area_of(impl, area), digest, max_bytes, out_buf, out_len, out_type, err);
}

/* ------------------------------------------------------------ cache tags and links */

static enum rs_code fs_tag_get(void *impl, const char *upstream, const char *repo, const char *tag,
                               struct store_tag *out, struct rs_err *err)
{
	struct fs *fs = impl;
	struct blobstore_tag t = {0};
	enum rs_code rc = blobstore_get_tag(fs->cache, upstream, repo, tag, &t, err);
	if (rc == RS_OK)
		tag_from(out, &t);
	return rc;
}

static enum rs_code fs_tag_put(void *impl, const char *upstream, const char *repo, const char *tag,
                               const struct store_tag *t, struct rs_err *err)
{
	struct fs *fs = impl;
	struct blobstore_tag bt = {0};
	memcpy(bt.digest, t->digest, sizeof(bt.digest));
	memcpy(bt.media_type, t->media_type, sizeof(bt.media_type));
	bt.fetched = t->fetched;
	return blobstore_put_tag(fs->cache, upstream, repo, tag, &bt, err);
}

static enum rs_code fs_link(void *impl, const char *upstream, const char *repo, enum store_kind kind,
                            const char *digest, struct rs_err *err)
{
	return blobstore_link(((struct fs *)impl)->cache, upstream, repo, bkind(kind), digest, err);
}

static bool fs_linked(void *impl, const char *upstream, const char *repo, enum store_kind kind, const char *digest)
{
	return blobstore_linked(((struct fs *)impl)->cache, upstream, repo, bkind(kind), digest);
}

static void fs_unlink(void *impl, const char *upstream, const char *repo, enum store_kind kind, const char *digest)
{
	blobstore_unlink(((struct fs *)impl)->cache, upstream, repo, bkind(kind), digest);
}

static enum rs_code fs_link_image(void *impl, const char *upstream, const char *repo, const char *digest,
                                  struct rs_err *err)
{
	return blobstore_link_image(((struct fs *)impl)->cache, upstream, repo, digest, err);
}

static bool fs_linked_by_image(void *impl, const char *upstream, const char *repo, enum store_kind kind,
                               const char *digest)
{
	return blobstore_linked_by_image(((struct fs *)impl)->cache, upstream, repo, bkind(kind), digest);
}

/* ------------------------------------------------------------ layouts, scratch */

struct fetch_adapter {
	store_fetch_fn fn;
	void *ctx;
};

static enum rs_code adapt_fetch(void *ctx, enum blobstore_kind kind, const char *digest, struct rs_err *err)
{
	struct fetch_adapter *a = ctx;
	return a->fn(a->ctx, kind == BLOBSTORE_BLOB ? STORE_BLOB : STORE_MANIFEST, digest, err);
}

static enum rs_code fs_export_layout(void *impl, enum store_area area, const char *digest, const char *tag,
                                     const char *dir, size_t manifest_max, store_fetch_fn fetch, void *ctx,
                                     struct rs_err *err)
{
	struct fetch_adapter a = {fetch, ctx};
	return blobstore_export_layout(area_of(impl, area), digest, tag, dir, manifest_max, fetch ? adapt_fetch : NULL,
	                               &a, err);
}

static enum rs_code fs_scratch_new(void *impl, const char *prefix, char *out, size_t cap, struct rs_err *err)
{
	return store_local_scratch_new(((struct fs *)impl)->tmp, prefix, out, cap, err);
}

static void fs_scratch_remove(void *impl, const char *dir)
{
	store_local_scratch_remove(((struct fs *)impl)->tmp, dir);
}

static size_t fs_scrub_paths(const void *impl, char *text)
{
	const struct fs *fs = impl;
	return store_local_scrub_paths(fs->root, fs->real, text);
}

/* ------------------------------------------------------------ documents */


/* The directory and path of a document. */
static enum rs_code doc_path(const struct fs *fs, enum store_doc doc, const char *repository, const char *key,
                             char *dir, char *path, struct rs_err *err)
{
	int n = 0;
	const char *name = key;
	if (doc == STORE_DOC_OPT_RESULT || doc == STORE_DOC_GATE_SCAN) {
		if (!store_local_key_ok(key))
			return rs_err_set(err, RS_BAD_INPUT, "invalid result key '%.80s'", key);
		if (doc == STORE_DOC_OPT_RESULT)
			n = snprintf(dir, FS_PATH_MAX, "%s", fs->optimized);
		else
			n = snprintf(dir, FS_PATH_MAX, "%s/gate/scans", fs->root);
	} else {
		if (!digest_valid(key))
			return rs_err_set(err, RS_DIGEST_INVALID, "invalid digest '%.80s'", key);
		name = digest_hex(key);
		if (doc == STORE_DOC_OPT_REPORT) {
			n = snprintf(dir, FS_PATH_MAX, "%s/reports", fs->optimized);
		} else if (doc == STORE_DOC_OPT_OWNER) {
			n = snprintf(dir, FS_PATH_MAX, "%s/objects", fs->optimized);
		} else {
			/* no such repository can hold a report or a signature */
			if (!repository || !refname_repo_valid(repository))
				return rs_err_set(err, RS_NOT_FOUND, "invalid repository name '%.80s'",
				                  repository ? repository : "");
			n = snprintf(dir, FS_PATH_MAX, "%s/%s/%s", fs->root,
			             doc == STORE_DOC_SIGNATURES ? "signatures" : "gate/reports", repository);
		}
	}
	const char *ext = doc == STORE_DOC_GATE_SCAN ? "scan" : "json"; /* a scan is a line format (gate_scan.c) */
	if (n < 0 || n >= FS_PATH_MAX || snprintf(path, FS_PATH_MAX, "%s/%s.%s", dir, name, ext) >= FS_PATH_MAX)
		return rs_err_set(err, RS_TOO_LARGE, "document path for %.80s is too long", key);
	return RS_OK;
}

static enum rs_code fs_doc_put(void *impl, enum store_doc doc, const char *repository, const char *key,
                               const void *buf, size_t len, struct rs_err *err)
{
	struct fs *fs = impl;
	char dir[FS_PATH_MAX], path[FS_PATH_MAX];
	enum rs_code rc = doc_path(fs, doc, repository, key, dir, path, err);
	if (rc == RS_OK && (doc == STORE_DOC_GATE_REPORT || doc == STORE_DOC_OPT_OWNER || doc == STORE_DOC_GATE_SCAN ||
	                    doc == STORE_DOC_SIGNATURES))
		rc = fsutil_mkdir_p(dir, NULL, err);
	if (rc == RS_OK)
		rc = fsutil_write_atomic(path, fs->tmp, buf, len, err);
	return rc;
}

static enum rs_code fs_doc_get(void *impl, enum store_doc doc, const char *repository, const char *key, size_t max,
                               char **out, size_t *out_len, struct rs_err *err)
{
	struct fs *fs = impl;
	char dir[FS_PATH_MAX], path[FS_PATH_MAX];
	enum rs_code rc = doc_path(fs, doc, repository, key, dir, path, err);
	return rc ? rc : fsutil_read_small(out, out_len, path, max, err);
}

/* ------------------------------------------------------------ optimized images evicted whole */

/* The walk that evicts the rest of an optimized image: every object not
 * pinned (a client pulling the image keeps it whole), documents after what
 * they name. Owner documents stay: they say how to make an object again. */
struct evict_walk {
	struct fs *fs;
	uint64_t freed;
};

static void evict_owned(struct evict_walk *w, enum blobstore_kind kind, const char *digest)
{
	if (digest_valid(digest))
		(void)blobstore_evict_object(w->fs->cache, kind, digest, &w->freed);
}

static enum rs_code evict_load(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len, char **type,
                               struct rs_err *err)
{
	struct evict_walk *w = ctx;
	return blobstore_get_manifest(w->fs->cache, n->digest, RS_LIMIT_MANIFEST_MAX_BYTES, buf, len, type, err);
}

static enum rs_code evict_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                                enum imagewalk_step *step, struct rs_err *err)
{
	struct evict_walk *w = ctx;
	(void)err;
	if (ev == IMAGEWALK_REF && n->kind == IMAGEWALK_ENTRY)
		*step = IMAGEWALK_BEST_EFFORT; /* a platform manifest already gone: the others still go */
	else if (ev == IMAGEWALK_REF)
		evict_owned(w, BLOBSTORE_BLOB, n->digest);
	else if (ev == IMAGEWALK_LEAVE && n->kind != IMAGEWALK_ENTRY)
		evict_owned(w, BLOBSTORE_MANIFEST, n->digest);
	return RS_OK;
}

/* blobstore_evict_hook of the cache: an object of an optimized image (it has
 * an owner document) that eviction removed takes its result document and
 * the rest of its image with it (issue 12): a result is served only whole,
 * so what is left of it would only wait for its turn in the LRU list, and
 * the next pull of the tag optimizes again (the same digests). */
static void fs_evicted(void *ctx, enum blobstore_kind kind, const char *digest)
{
	(void)kind;
	struct fs *fs = ctx;
	char dir[FS_PATH_MAX], path[FS_PATH_MAX], owner[1024], key[STORE_LOCAL_KEY_MAX + 1] = "";
	struct rs_err err = {0};
	size_t len = 0;
	if (doc_path(fs, STORE_DOC_OPT_OWNER, NULL, digest, dir, path, &err) != RS_OK ||
	    fsutil_read_into(owner, sizeof(owner), &len, path, &err) != RS_OK)
		return; /* not made by the optimizer: the usual case */
	const char *k = strstr(owner, "\"key\":\"");
	if (k)
		snprintf(key, sizeof(key), "%.*s", (int)strcspn(k + 7, "\""), k + 7);
	char *doc = NULL;
	if (!store_local_key_ok(key) || doc_path(fs, STORE_DOC_OPT_RESULT, NULL, key, dir, path, &err) != RS_OK ||
	    fsutil_read_small(&doc, &len, path, RS_LIMIT_OPT_RESULT_MAX_BYTES, &err) != RS_OK)
		return;
	char top[DIGEST_STR_SIZE] = "";
	const char *p = strstr(doc, "\"digest\":\"");
	if (p)
		snprintf(top, sizeof(top), "%.71s", p + 10);
	free(doc);
	(void)unlink(path); /* the result: optimized again on its next pull */
	if (!digest_valid(top))
		return;
	struct evict_walk w = {fs, 0};
	const struct imagewalk walk = {.load = evict_load, .visit = evict_visit, .ctx = &w};
	if (imagewalk_run(&walk, top, &err) != RS_OK) /* best effort: what is gone is gone */
		log_event(LOG_DEBUG, "evicting the rest of %s: %s", top, err.msg);
	log_event(LOG_INFO, "eviction took %s of the optimized image %s: its result and %llu more bytes went with it",
	          digest, top, (unsigned long long)w.freed);
}

/* ------------------------------------------------------------ uploads */

static enum rs_code fs_upload_start(void *impl, const char *repo, char out[STORE_UUID_SIZE], struct rs_err *err)
{
	return push_upload_start(((struct fs *)impl)->push, repo, out, err);
}

static enum rs_code fs_upload_open(void *impl, const char *repo, const char *uuid, struct store_upload **out,
                                   struct rs_err *err)
{
	struct fs_upload *u = calloc(1, sizeof(*u));
	if (!u)
		return rs_err_set(err, RS_NOMEM, "out of memory opening upload %.40s", uuid);
	u->base.drv = &store_fs_driver;
	enum rs_code rc = push_upload_open(((struct fs *)impl)->push, repo, uuid, &u->u, err);
	if (rc) {
		free(u);
		return rc;
	}
	*out = &u->base;
	return RS_OK;
}

static uint64_t fs_upload_size(const struct store_upload *u)
{
	return push_upload_size(((const struct fs_upload *)u)->u);
}

static enum rs_code fs_upload_reader(struct store_upload *u, int *out_fd, struct rs_err *err)
{
	return push_upload_reader(((struct fs_upload *)u)->u, out_fd, err);
}

static enum rs_code fs_upload_write(struct store_upload *u, const void *buf, size_t len, struct rs_err *err)
{
	return push_upload_write(((struct fs_upload *)u)->u, buf, len, err);
}

static enum rs_code fs_upload_commit(struct store_upload *u, const char *digest, struct rs_err *err)
{
	struct fs_upload *fu = (struct fs_upload *)u;
	enum rs_code rc = push_upload_commit(fu->u, digest, err); /* releases fu->u */
	free(fu);
	return rc;
}

static void fs_upload_close(struct store_upload *u)
{
	struct fs_upload *fu = (struct fs_upload *)u;
	push_upload_close(fu->u);
	free(fu);
}

static void fs_upload_cancel(struct store_upload *u)
{
	struct fs_upload *fu = (struct fs_upload *)u;
	push_upload_cancel(fu->u);
	free(fu);
}

static void fs_upload_sweep(void *impl, time_t now, unsigned *out_removed)
{
	push_sweep(((struct fs *)impl)->push, now, out_removed);
}

/* ------------------------------------------------------------ pushed images */

static bool fs_pushed_holds(void *impl, const char *repo, enum store_kind kind, const char *digest)
{
	return push_holds(((struct fs *)impl)->push, repo, bkind(kind), digest);
}

static void fs_pushed_set_fetcher(void *impl, store_pushed_fetch_fn fn, void *ctx)
{
	push_set_fetcher(((struct fs *)impl)->push, fn, ctx);
}

static enum rs_code fs_pushed_mount(void *impl, const char *repo, const char *from, const char *digest,
                                    struct rs_err *err)
{
	return push_mount_blob(((struct fs *)impl)->push, repo, from, digest, err);
}

static enum rs_code fs_pushed_put_manifest(void *impl, const char *repo, const char *ref, const char *content_type,
                                           const char *body, size_t len, char out_digest[DIGEST_STR_SIZE],
                                           struct rs_err *err)
{
	return push_put_manifest(((struct fs *)impl)->push, repo, ref, content_type, body, len, out_digest, err);
}

static void fs_pushed_forget_manifest(void *impl, const char *repo, const char *digest)
{
	push_forget_manifest(((struct fs *)impl)->push, repo, digest);
}

static enum rs_code fs_pushed_tag_get(void *impl, const char *repo, const char *tag, struct store_tag *out,
                                      struct rs_err *err)
{
	struct blobstore_tag t = {0};
	enum rs_code rc = push_get_tag(((struct fs *)impl)->push, repo, tag, &t, err);
	if (rc == RS_OK)
		tag_from(out, &t);
	return rc;
}

static enum rs_code fs_pushed_tags_list(void *impl, const char *repo, char **out, size_t *out_len,
                                        struct rs_err *err)
{
	return push_list_tags(((struct fs *)impl)->push, repo, out, out_len, err);
}

static enum rs_code fs_pushed_delete_manifest(void *impl, const char *repo, const char *digest, unsigned *out_tags,
                                              struct rs_err *err)
{
	return push_delete_manifest(((struct fs *)impl)->push, repo, digest, out_tags, err);
}

static enum rs_code fs_pushed_delete_tag(void *impl, const char *repo, const char *tag, struct rs_err *err)
{
	return push_delete_tag(((struct fs *)impl)->push, repo, tag, err);
}

static enum rs_code fs_pushed_delete_blob(void *impl, const char *repo, const char *digest, struct rs_err *err)
{
	return push_delete_blob(((struct fs *)impl)->push, repo, digest, err);
}

static enum rs_code fs_pushed_gc(void *impl, time_t now, unsigned grace_s, struct store_gc_stats *out,
                                 struct rs_err *err)
{
	struct push_gc_stats st;
	enum rs_code rc = push_gc(((struct fs *)impl)->push, now, grace_s, &st, err);
	out->roots = st.roots;
	out->marked = st.marked;
	out->blobs_removed = st.blobs_removed;
	out->manifests_removed = st.manifests_removed;
	out->bytes_removed = st.bytes_removed;
	out->young = st.young;
	out->raced = st.raced;
	return rc;
}

/* ------------------------------------------------------------ accounting */

static uint64_t fs_size(const void *impl)
{
	return blobstore_size(((const struct fs *)impl)->cache);
}

static enum rs_code fs_pushed_referrers(void *impl, const char *repo, const char *subject,
                                        char (**out)[DIGEST_STR_SIZE], size_t *out_n, size_t max,
                                        struct rs_err *err)
{
	struct fs *fs = impl;
	return push_referrers(fs->push, repo, subject, out, out_n, max, err);
}

static bool fs_pin(void *impl, enum store_area area, enum store_kind kind, const char *digest, time_t until)
{
	return blobstore_pin(area_of(impl, area), bkind(kind), digest, until);
}

static enum rs_code fs_check_writable(void *impl, struct rs_err *err)
{
	struct fs *fs = impl;
	return blobstore_check_writable(fs->cache, err);
}

static enum rs_code fs_scrub_start(void *impl, struct scrub **out, struct rs_err *err)
{
	struct fs *fs = impl;
	return scrub_start(out, fs->cfg, fs->cache, push_store(fs->push), err);
}

static enum rs_code fs_evict(void *impl, uint64_t *out_freed, struct rs_err *err)
{
	return blobstore_evict(((struct fs *)impl)->cache, out_freed, err);
}

const struct store_driver store_fs_driver = {
	.name = "fs",
	.free = fs_free,
	.has = fs_has,
	.reader_open = fs_reader_open,
	.reader_pread = fs_reader_pread,
	.reader_close = fs_reader_close,
	.remove = fs_remove,
	.writer_new = fs_writer_new,
	.writer_write = fs_writer_write,
	.writer_size = fs_writer_size,
	.writer_path = fs_writer_path,
	.writer_commit = fs_writer_commit,
	.writer_abort = fs_writer_abort,
	.manifest_put = fs_manifest_put,
	.manifest_get = fs_manifest_get,
	.tag_get = fs_tag_get,
	.tag_put = fs_tag_put,
	.link = fs_link,
	.linked = fs_linked,
	.unlink = fs_unlink,
	.link_image = fs_link_image,
	.linked_by_image = fs_linked_by_image,
	.export_layout = fs_export_layout,
	.scratch_new = fs_scratch_new,
	.scratch_remove = fs_scratch_remove,
	.scrub_paths = fs_scrub_paths,
	.doc_put = fs_doc_put,
	.doc_get = fs_doc_get,
	.upload_start = fs_upload_start,
	.upload_open = fs_upload_open,
	.upload_size = fs_upload_size,
	.upload_write = fs_upload_write,
	.upload_commit = fs_upload_commit,
	.upload_close = fs_upload_close,
	.upload_cancel = fs_upload_cancel,
	.upload_reader = fs_upload_reader,
	.upload_sweep = fs_upload_sweep,
	.pushed_holds = fs_pushed_holds,
	.pushed_set_fetcher = fs_pushed_set_fetcher,
	.pushed_mount = fs_pushed_mount,
	.pushed_put_manifest = fs_pushed_put_manifest,
	.pushed_forget_manifest = fs_pushed_forget_manifest,
	.pushed_tag_get = fs_pushed_tag_get,
	.pushed_tags_list = fs_pushed_tags_list,
	.size = fs_size,
	.evict = fs_evict,
	.pin = fs_pin,
	.check_writable = fs_check_writable,
	.scrub_start = fs_scrub_start,
	.pushed_referrers = fs_pushed_referrers,
	.pushed_delete_manifest = fs_pushed_delete_manifest,
	.pushed_delete_tag = fs_pushed_delete_tag,
	.pushed_delete_blob = fs_pushed_delete_blob,
	.pushed_gc = fs_pushed_gc,
};
