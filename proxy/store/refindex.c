/* refindex: the push store's referrers index (one small file per
 * (repository, subject, referrer), written atomically) and the referrers
 * list documents (refindex.h). It talks to config/fsutil.h for the files and
 * config/imagejson.h for the documents; push.c calls refindex_add for every
 * pushed manifest with a subject, api/referrers.c reads the index and builds
 * its answer here. Documents are read through the one walk (imagewalk.h), root
 * only. No HTTP, no upstream. */
#include "refindex.h"

#include "fsutil.h"
#include "image.h"
#include "imagewalk.h"
#include "refname.h"
#include "rs_limits.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EMPTY_INDEX "{\"schemaVersion\":2,\"mediaType\":\"" IMAGE_MT_OCI_INDEX "\",\"manifests\":[]}"

/* <data>/push/referrers/<repo>/_subjects/<subject hex> into out. */
static enum rs_code subject_dir(char out[FSUTIL_PATH_MAX], const char *data_dir, const char *repo,
                                const char *subject, struct rs_err *err)
{
	if (!refname_repo_valid(repo))
		return rs_err_set(err, RS_BAD_INPUT, "invalid repository name '%.200s'", repo);
	if (!digest_valid(subject))
		return rs_err_set(err, RS_DIGEST_INVALID, "invalid subject digest '%.80s'", subject);
	if (snprintf(out, FSUTIL_PATH_MAX, "%s/push/referrers/%s/_subjects/%s", data_dir, repo, subject + 7) >=
	    FSUTIL_PATH_MAX)
		return rs_err_set(err, RS_TOO_LARGE, "referrers path too long under %.200s", data_dir);
	return RS_OK;
}

/* mkdir -p dir, then fsync every directory from dir's parent up to
 * <data>/push when dir was new, so that the new directories survive a crash
 * (an fsync of a directory that was already there costs little). */
static enum rs_code make_dirs(const char *data_dir, const char *dir, struct rs_err *err)
{
	bool created = false;
	enum rs_code rc = fsutil_mkdir_p(dir, &created, err);
	char top[FSUTIL_PATH_MAX], path[FSUTIL_PATH_MAX];
	snprintf(top, sizeof(top), "%s/push", data_dir);
	snprintf(path, sizeof(path), "%s", dir);
	while (rc == RS_OK && created && strlen(path) > strlen(top)) {
		char parent[FSUTIL_PATH_MAX];
		fsutil_parent(parent, sizeof(parent), path);
		rc = fsutil_fsync_dir(parent, err);
		snprintf(path, sizeof(path), "%s", parent);
	}
	return rc;
}

enum rs_code refindex_add(const char *data_dir, const char *repo, const char *subject, const char *referrer,
                          struct rs_err *err)
{
	char dir[FSUTIL_PATH_MAX], file[FSUTIL_PATH_MAX], tmp[FSUTIL_PATH_MAX];
	enum rs_code rc = subject_dir(dir, data_dir, repo, subject, err);
	if (rc)
		return rc;
	if (!digest_valid(referrer))
		return rs_err_set(err, RS_DIGEST_INVALID, "invalid referrer digest '%.80s'", referrer);
	if (snprintf(file, sizeof(file), "%s/%s", dir, referrer + 7) >= (int)sizeof(file))
		return rs_err_set(err, RS_TOO_LARGE, "referrers path too long under %.200s", data_dir);
	snprintf(tmp, sizeof(tmp), "%s/push/tmp", data_dir);
	if (access(file, F_OK) == 0)
		return RS_OK;
	if ((rc = make_dirs(data_dir, dir, err)))
		return rc;
	char line[DIGEST_STR_SIZE + 1];
	int n = snprintf(line, sizeof(line), "%s\n", referrer);
	return fsutil_write_atomic(file, tmp, line, (size_t)n, err);
}

void refindex_remove(const char *data_dir, const char *repo, const char *subject, const char *referrer)
{
	char dir[FSUTIL_PATH_MAX], file[FSUTIL_PATH_MAX];
	struct rs_err err = {0};
	if (subject_dir(dir, data_dir, repo, subject, &err) != RS_OK || !digest_valid(referrer) ||
	    snprintf(file, sizeof(file), "%s/%s", dir, referrer + 7) >= (int)sizeof(file))
		return;
	/* Best effort: an entry that comes back after a crash names a referrer
	 * the caller no longer holds, and the API skips those. */
	if (unlink(file) == 0 && fsutil_fsync_dir(dir, &err) != RS_OK)
		return;
}

static int cmp_digest(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

static bool hex64(const char *s)
{
	if (strlen(s) != DIGEST_HEX_LEN)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

enum rs_code refindex_list(char (**out)[DIGEST_STR_SIZE], size_t *out_n, const char *data_dir, const char *repo,
                           const char *subject, size_t max, struct rs_err *err)
{
	*out = NULL;
	*out_n = 0;
	char dir[FSUTIL_PATH_MAX];
	enum rs_code rc = subject_dir(dir, data_dir, repo, subject, err);
	if (rc == RS_BAD_INPUT || rc == RS_TOO_LARGE)
		return RS_OK; /* a name that cannot have been pushed has no referrers */
	if (rc)
		return rc;
	DIR *d = opendir(dir);
	if (!d)
		return RS_OK;
	char(*v)[DIGEST_STR_SIZE] = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL && n < max) {
		if (!hex64(de->d_name))
			continue; /* ".", "..", temp files */
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 8;
			char(*nv)[DIGEST_STR_SIZE] = realloc(v, nc * sizeof(*nv));
			if (!nv) {
				rc = rs_err_set(err, RS_NOMEM, "out of memory listing referrers");
				break;
			}
			v = nv;
			cap = nc;
		}
		memcpy(v[n], "sha256:", 7);
		memcpy(v[n] + 7, de->d_name, DIGEST_HEX_LEN + 1); /* hex64: exactly 64 characters */
		n++;
	}
	closedir(d);
	if (rc) {
		free(v);
		return rc;
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_digest);
	*out = v;
	*out_n = n;
	return RS_OK;
}

/* What to do with a document's root, parsed: m for an image manifest, x for
 * an index (the other is NULL); len is the document's length. */
typedef enum rs_code (*root_fn)(void *ctx, const struct imagejson_manifest *m, const struct imagejson_index *x,
                                size_t len, struct rs_err *err);

struct root_walk {
	root_fn fn;
	void *ctx;
};

static enum rs_code root_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                               enum imagewalk_step *step, struct rs_err *err)
{
	if (ev != IMAGEWALK_ENTER || n->depth != 0)
		return RS_OK;
	*step = IMAGEWALK_SKIP; /* the root's own fields only: its descriptors are not visited */
	const struct root_walk *rw = ctx;
	return rw->fn(rw->ctx, n->manifest, n->index, n->len, err);
}

/* Parse body (named what in messages) through the one walk (imagewalk.h)
 * and hand its root to fn. */
static enum rs_code with_root(const char *body, size_t len, const char *what, root_fn fn, void *ctx,
                              struct rs_err *err)
{
	struct root_walk rw = {fn, ctx};
	struct imagewalk w = {.visit = root_visit, .ctx = &rw, .manifest_what = what, .index_what = what};
	return imagewalk_bytes(&w, NULL, body, len, NULL, err);
}

static enum rs_code subject_root(void *ctx, const struct imagejson_manifest *m, const struct imagejson_index *x,
                                 size_t len, struct rs_err *err)
{
	(void)len;
	char *out = ctx;
	const struct imagejson_descriptor *sub = m ? m->subject : x->subject;
	if (!sub)
		return RS_OK;
	if (!sub->digest || !digest_valid(sub->digest))
		return rs_err_set(err, RS_BAD_INPUT, "subject.digest '%.80s' is not a sha256 digest",
		                  sub->digest ? sub->digest : "(missing)");
	snprintf(out, DIGEST_STR_SIZE, "%s", sub->digest);
	return RS_OK;
}

enum rs_code refindex_subject_of(char out[DIGEST_STR_SIZE], const char *body, size_t len, struct rs_err *err)
{
	out[0] = '\0';
	return with_root(body, len, "manifest", subject_root, out, err);
}

struct entries {
	char (*v)[DIGEST_STR_SIZE];
	size_t n, max;
};

static enum rs_code entries_root(void *ctx, const struct imagejson_manifest *m, const struct imagejson_index *x,
                                 size_t len, struct rs_err *err)
{
	(void)len;
	struct entries *e = ctx;
	if (m)
		return rs_err_set(err, RS_BAD_INPUT, "referrers tag: an image manifest, not an image index");
	if (x->manifest_count && !(e->v = calloc(x->manifest_count, sizeof(*e->v))))
		return rs_err_set(err, RS_NOMEM, "out of memory reading a referrers tag");
	for (size_t i = 0; i < x->manifest_count && e->n < e->max; i++)
		if (x->manifests[i].digest && digest_valid(x->manifests[i].digest))
			snprintf(e->v[e->n++], DIGEST_STR_SIZE, "%s", x->manifests[i].digest);
	return RS_OK;
}

enum rs_code refindex_entries(char (**out)[DIGEST_STR_SIZE], size_t *out_n, const char *body, size_t len,
                              size_t max, struct rs_err *err)
{
	*out = NULL;
	*out_n = 0;
	struct entries e = {.max = max};
	enum rs_code rc = with_root(body, len, "referrers tag", entries_root, &e, err);
	if (rc == RS_OK && e.n) {
		*out = e.v;
		*out_n = e.n;
	} else {
		free(e.v);
	}
	return rc;
}

static bool listed(const struct refindex_list *l, const char *digest)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->d[i].digest, digest) == 0)
			return true;
	return false;
}

/* A new zeroed slot at the end of l (counted). */
static enum rs_code grow(struct refindex_list *l, struct imagejson_descriptor **out, struct rs_err *err)
{
	if (l->n == l->cap) {
		size_t nc = l->cap ? l->cap * 2 : 8;
		struct imagejson_descriptor *nd = realloc(l->d, nc * sizeof(*nd));
		if (!nd)
			return rs_err_set(err, RS_NOMEM, "out of memory building a referrers list");
		l->d = nd;
		l->cap = nc;
	}
	*out = &l->d[l->n++];
	memset(*out, 0, sizeof(**out));
	return RS_OK;
}

static char *dup_or_null(const char *s, bool *ok)
{
	if (!s)
		return NULL;
	char *d = strdup(s);
	if (!d)
		*ok = false;
	return d;
}

/* Fill d from a parsed manifest or index: artifactType (an image manifest
 * without one: its config's mediaType; an index without one: none) and the
 * annotations (distribution-spec, "Listing Referrers"). */
static enum rs_code describe(struct imagejson_descriptor *d, const char *digest, const char *media_type,
                             size_t len, const char *artifact_type, const struct imagejson_kv *kv, size_t nkv,
                             struct rs_err *err)
{
	bool ok = true;
	d->media_type = dup_or_null(media_type, &ok);
	d->digest = dup_or_null(digest, &ok);
	d->size = len;
	d->artifact_type = dup_or_null(artifact_type, &ok);
	for (size_t i = 0; ok && i < nkv; i++)
		if (imagejson_kv_set(&d->annotations, &d->annotation_count, kv[i].key, kv[i].value, err) != RS_OK)
			ok = false;
	return ok ? RS_OK : rs_err_set(err, RS_NOMEM, "out of memory building a referrers list");
}

struct described {
	struct refindex_list *l;
	const char *digest, *media_type;
};

static enum rs_code describe_root(void *ctx, const struct imagejson_manifest *m, const struct imagejson_index *x,
                                  size_t len, struct rs_err *err)
{
	const struct described *dd = ctx;
	struct imagejson_descriptor *d = NULL;
	enum rs_code rc = grow(dd->l, &d, err);
	if (rc)
		return rc;
	if (m)
		return describe(d, dd->digest, dd->media_type, len, m->artifact_type ? m->artifact_type : m->config.media_type,
		                m->annotations, m->annotation_count, err);
	return describe(d, dd->digest, dd->media_type, len, x->artifact_type, x->annotations, x->annotation_count, err);
}

enum rs_code refindex_list_add_manifest(struct refindex_list *l, const char *digest, const char *media_type,
                                        const char *body, size_t len, struct rs_err *err)
{
	if (listed(l, digest))
		return RS_OK;
	struct described dd = {l, digest, media_type};
	return with_root(body, len, digest, describe_root, &dd, err);
}

static enum rs_code merge_root(void *ctx, const struct imagejson_manifest *m, const struct imagejson_index *x,
                               size_t len, struct rs_err *err)
{
	(void)len;
	struct refindex_list *l = ctx;
	if (m)
		return rs_err_set(err, RS_BAD_INPUT, "referrers index: an image manifest, not an image index");
	enum rs_code rc = RS_OK;
	for (size_t i = 0; rc == RS_OK && i < x->manifest_count; i++) {
		const struct imagejson_descriptor *e = &x->manifests[i];
		if (!e->digest || !digest_valid(e->digest) || listed(l, e->digest))
			continue;
		struct imagejson_descriptor *d = NULL;
		if ((rc = grow(l, &d, err)) == RS_OK && (rc = imagejson_descriptor_copy(d, e, err)) != RS_OK)
			l->n--; /* the copy left d zeroed */
	}
	return rc;
}

enum rs_code refindex_list_add_index(struct refindex_list *l, const char *body, size_t len, struct rs_err *err)
{
	return with_root(body, len, "referrers index", merge_root, l, err);
}

enum rs_code refindex_list_write(char **out, size_t *out_len, const struct refindex_list *l,
                                 const char *artifact_type, struct rs_err *err)
{
	struct imagejson_index x = {.schema_version = 2, .media_type = (char *)IMAGE_MT_OCI_INDEX};
	/* A shallow selection: the descriptors stay l's. */
	struct imagejson_descriptor *sel = l->n ? malloc(l->n * sizeof(*sel)) : NULL;
	if (l->n && !sel)
		return rs_err_set(err, RS_NOMEM, "out of memory writing a referrers list");
	for (size_t i = 0; i < l->n; i++)
		if (!artifact_type || (l->d[i].artifact_type && strcmp(l->d[i].artifact_type, artifact_type) == 0))
			sel[x.manifest_count++] = l->d[i];
	x.manifests = sel;
	enum rs_code rc = imagejson_write_index(out, out_len, &x, err);
	free(sel);
	return rc;
}

const char *refindex_empty(void)
{
	return EMPTY_INDEX;
}

void refindex_list_dispose(struct refindex_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n; i++)
		imagejson_descriptor_dispose(&l->d[i]);
	free(l->d);
	memset(l, 0, sizeof(*l));
}
