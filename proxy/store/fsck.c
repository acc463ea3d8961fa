/* fsck: see fsck.h. Four sweeps over one data directory: the objects of the
 * cache and of push/ (rehashed; a manifest's ".type" checked), the tag maps
 * (each must parse; a pushed tag must name a pushed manifest), the pushed
 * manifests' references, and the optimizer's results and owner files; then
 * the temp files. Each finding is one line; repair removes what can come
 * back (from the upstream, or by optimizing again) and leaves what cannot.
 * It reads and unlinks files only; no HTTP, no upstream, no store lock (run
 * it with regslim stopped). */
#include "fsck.h"

#include "digest.h"
#include "fsutil.h"
#include "imagewalk.h"
#include "rs_limits.h"
#include "scrub.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FSCK_PATH_MAX 4096
/* Directory depth of a tag map or link tree: namespace, repository
 * components (bounded by the name grammar), _tags. */
#define FSCK_DEPTH_MAX 80

struct fsck {
	const char *data;
	bool repair;
	FILE *out;
	struct fsck_stats *st;
	const char *area; /* "" for the cache, "push/" for the push store */
};

/* One finding: printed; removed when repair and removable. */
static void finding(struct fsck *f, uint64_t *counter, const char *path, const char *rel, bool removable,
                    const char *fmt, const char *what, const char *detail)
{
	(*counter)++;
	bool removed = f->repair && removable && unlink(path) == 0;
	if (removed)
		f->st->repaired++;
	else
		f->st->left++;
	fprintf(f->out, "%s %s%s: ", what, f->area, rel);
	fprintf(f->out, fmt, detail);
	fprintf(f->out, "%s\n", removed ? ", removed" : f->repair && !removable ? ", left (cannot be fetched again)" : "");
}

static bool has_object(const char *root, const char *kdir, const char *digest)
{
	if (!digest_valid(digest))
		return false;
	char path[FSCK_PATH_MAX];
	const char *hex = digest_hex(digest);
	snprintf(path, sizeof(path), "%s/%s/sha256/%.2s/%s", root, kdir, hex, hex);
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The references of a pushed manifest that passed its hash check: its
 * walk from the file's bytes, entries not loaded (each pushed manifest is
 * checked on its own), every descriptor looked up in the push store. */
struct ref_check {
	const char *root;
	char missing[DIGEST_STR_SIZE + 16];
};

static enum rs_code ref_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                              enum imagewalk_step *step, struct rs_err *err)
{
	struct ref_check *c = ctx;
	(void)err;
	if (ev != IMAGEWALK_REF)
		return RS_OK;
	bool entry = n->kind == IMAGEWALK_ENTRY;
	if (!has_object(c->root, entry ? "manifests" : "blobs", n->digest)) {
		snprintf(c->missing, sizeof(c->missing), "%s %s",
		         entry ? "manifest" : n->kind == IMAGEWALK_CONFIG ? "config" : "layer", n->digest);
		*step = IMAGEWALK_STOP;
	}
	return RS_OK;
}

static void check_pushed_refs(struct fsck *f, const char *root, const char *path, const char *rel)
{
	char *buf = NULL;
	size_t len = 0;
	struct rs_err err = {0};
	if (fsutil_read_small(&buf, &len, path, RS_LIMIT_MANIFEST_MAX_BYTES, &err) != RS_OK)
		return;
	struct ref_check c = {root, ""};
	const struct imagewalk walk = {.load = NULL, .visit = ref_visit, .ctx = &c};
	enum rs_code rc = imagewalk_bytes(&walk, NULL, buf, len, NULL, &err);
	free(buf);
	if (rc != RS_OK)
		finding(f, &f->st->broken, path, rel, false, "%s", "broken", err.msg);
	else if (c.missing[0])
		finding(f, &f->st->dangling, path, rel, false, "references %s, which is not in the push store", "dangling",
		        c.missing);
}

struct obj_pass {
	struct fsck *f;
	const char *root;
	bool pushed;
};

static bool visit_object(void *ctx, enum blobstore_kind kind, const char *hex, bool stray, const char *path,
                         const char *rel)
{
	struct obj_pass *p = ctx;
	struct fsck *f = p->f;
	if (stray) {
		finding(f, &f->st->stray, path, rel, true, "%s", "stray", "not an object (name or place is wrong)");
		return true;
	}
	bool ok = false;
	uint64_t size = 0;
	struct rs_err err = {0};
	if (scrub_hash_file(path, hex, &ok, &size, NULL, NULL, &err) != RS_OK) {
		finding(f, &f->st->broken, path, rel, false, "%s", "unreadable", err.msg);
		return true;
	}
	f->st->objects++;
	f->st->bytes += size;
	if (!ok) {
		char d[80];
		snprintf(d, sizeof(d), "%llu bytes", (unsigned long long)size);
		finding(f, &f->st->corrupt, path, rel, true, "does not hash to its name (%s)", "corrupt", d);
		return true;
	}
	if (kind != BLOBSTORE_MANIFEST)
		return true;
	char tpath[FSCK_PATH_MAX + 8], type[160];
	size_t tlen = 0;
	snprintf(tpath, sizeof(tpath), "%s.type", path);
	if (fsutil_read_into(type, sizeof(type), &tlen, tpath, &err) != RS_OK || tlen == 0 ||
	    strcspn(type, "\"\\") != strlen(type)) {
		/* the manifest is served with its type: without it the cache
		 * fetches it again; a pushed one is kept (its type can be sniffed) */
		finding(f, &f->st->broken, path, rel, !p->pushed, "%s", "untyped", "its media type (.type) is missing or bad");
		if (f->repair && !p->pushed)
			(void)unlink(tpath);
		return true;
	}
	if (p->pushed)
		check_pushed_refs(f, p->root, path, rel);
	return true;
}

/* Every "<tag>.json" below dir (a tag map tree), recursively. */
static void walk_tags(struct fsck *f, const char *dir, const char *rel, const char *push_root, int depth)
{
	DIR *d = opendir(dir);
	if (!d || depth > FSCK_DEPTH_MAX) {
		if (d)
			closedir(d);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		char path[FSCK_PATH_MAX], r[FSCK_PATH_MAX];
		if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >= (int)sizeof(path) ||
		    snprintf(r, sizeof(r), "%s/%s", rel, de->d_name) >= (int)sizeof(r))
			continue;
		struct stat st;
		if (lstat(path, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			walk_tags(f, path, r, push_root, depth + 1);
			continue;
		}
		size_t n = strlen(de->d_name);
		if (n <= 5 || strcmp(de->d_name + n - 5, ".json") != 0) {
			if (strstr(de->d_name, ".tmp-"))
				finding(f, &f->st->temp, path, r, true, "%s", "temp", "left by an interrupted write");
			continue;
		}
		char buf[600], digest[DIGEST_STR_SIZE];
		size_t len = 0;
		struct rs_err err = {0};
		static const char k[] = "{\"digest\":\"";
		bool ok = fsutil_read_into(buf, sizeof(buf), &len, path, &err) == RS_OK && strncmp(buf, k, sizeof(k) - 1) == 0;
		if (ok) {
			snprintf(digest, sizeof(digest), "%.71s", buf + sizeof(k) - 1);
			ok = digest_valid(digest);
		}
		if (!ok)
			finding(f, &f->st->broken, path, r, true, "%s", "broken", "not a tag map entry");
		else if (push_root && !has_object(push_root, "manifests", digest))
			finding(f, &f->st->dangling, path, r, true, "names %s, which is not in the push store", "dangling", digest);
	}
	closedir(d);
}

/* The optimizer's results (optimized/<key>.json) and owner files. */
static void check_results(struct fsck *f)
{
	char dir[FSCK_PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/optimized", f->data);
	static const char *const subs[] = {"", "/reports", "/objects"};
	for (int s = 0; s < 3; s++) {
		char sub[FSCK_PATH_MAX + 16];
		snprintf(sub, sizeof(sub), "%s%s", dir, subs[s]);
		DIR *d = opendir(sub);
		if (!d)
			continue;
		struct dirent *de;
		while ((de = readdir(d)) != NULL) {
			const char *n = de->d_name;
			char path[FSCK_PATH_MAX + 300], rel[600];
			snprintf(path, sizeof(path), "%s/%s", sub, n);
			snprintf(rel, sizeof(rel), "optimized%s/%s", subs[s], n);
			struct stat st;
			if (n[0] == '.' || lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
				continue;
			if (strstr(n, ".tmp-")) {
				finding(f, &f->st->temp, path, rel, true, "%s", "temp", "left by an interrupted write");
				continue;
			}
			if (s != 0)
				continue;
			char *doc = NULL;
			size_t len = 0;
			struct rs_err err = {0};
			const char *p = NULL;
			if (fsutil_read_small(&doc, &len, path, RS_LIMIT_OPT_RESULT_MAX_BYTES, &err) == RS_OK)
				p = strstr(doc, "\"digest\":\"");
			char digest[DIGEST_STR_SIZE] = "";
			if (p)
				snprintf(digest, sizeof(digest), "%.71s", p + 10);
			if (!digest_valid(digest))
				finding(f, &f->st->broken, path, rel, true, "%s", "broken", "not an optimization result");
			free(doc);
		}
		closedir(d);
	}
}

/* Files left in tmp/ and uploads/ by a crash (regslim removes them at
 * start; a running regslim is writing them). */
static void check_temp(struct fsck *f)
{
	char dir[FSCK_PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/tmp", f->data);
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		char path[FSCK_PATH_MAX + 300], rel[300];
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		snprintf(rel, sizeof(rel), "tmp/%s", de->d_name);
		struct stat st;
		if (lstat(path, &st) != 0)
			continue;
		f->st->temp++;
		bool removed = false;
		if (f->repair) {
			if (S_ISDIR(st.st_mode))
				fsutil_rm_tree(path);
			removed = S_ISDIR(st.st_mode) ? access(path, F_OK) != 0 : unlink(path) == 0;
		}
		if (removed)
			f->st->repaired++;
		else
			f->st->left++;
		fprintf(f->out, "temp %s: left by a crash or a running regslim%s\n", rel, removed ? ", removed" : "");
	}
	closedir(d);
}

enum rs_code fsck_run(const char *data_dir, bool repair, FILE *out, struct fsck_stats *st, struct rs_err *err)
{
	memset(st, 0, sizeof(*st));
	char path[FSCK_PATH_MAX];
	struct stat sb;
	snprintf(path, sizeof(path), "%s/blobs", data_dir);
	if (stat(data_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
		return rs_err_set(err, RS_NOT_FOUND, "%s is not a directory", data_dir);
	if (stat(path, &sb) != 0)
		return rs_err_set(err, RS_NOT_FOUND, "%s is not a regslim data directory (no blobs/)", data_dir);
	struct fsck f = {data_dir, repair, out, st, ""};
	struct obj_pass cache = {&f, data_dir, false};
	enum rs_code rc = scrub_walk(data_dir, visit_object, &cache, err);
	char push[FSCK_PATH_MAX];
	snprintf(push, sizeof(push), "%s/push", data_dir);
	f.area = "push/";
	struct obj_pass pushed = {&f, push, true};
	if (rc == RS_OK)
		rc = scrub_walk(push, visit_object, &pushed, err);
	if (rc)
		return rc;
	char tags[FSCK_PATH_MAX + 16];
	f.area = "";
	snprintf(tags, sizeof(tags), "%s/tags", data_dir);
	walk_tags(&f, tags, "tags", NULL, 0);
	f.area = "push/";
	snprintf(tags, sizeof(tags), "%s/tags", push);
	walk_tags(&f, tags, "tags", push, 0);
	f.area = "";
	check_results(&f);
	check_temp(&f);
	return RS_OK;
}
