/* store_s3_push: the push side of the "s3" storage driver (store_s3.h):
 * upload sessions and pushed images (STORE_PUSHED).
 *
 * Upload sessions keep their bytes on this replica's local disk while the
 * upload is in progress: <data>/s3-uploads/<uuid>.repo (the repository) and
 * <uuid>.data (the bytes so far), as the fs driver does; they survive a
 * restart of this replica, not a move to another one (issue 13's Redis
 * step shares upload state). The commit streams the file through
 * s3_writer, so the blob appears in the bucket only when its digest
 * matches; a mismatch removes the upload and leaves nothing in the bucket.
 *
 * Pushed images are objects, tags, links and a referrers index under
 * P push/ (key layout in store_s3.c). The checks of a manifest PUT are
 * push.c's (push_check_manifest), with references taken from the pushed
 * area or, through the fetcher, from the mirror's cache area (copied into
 * push/ and verified on the way). No HTTP, no upstream. */
#include "store_s3.h"

#include "blobstore.h"
#include "fsutil.h"
#include "push.h"
#include "refname.h"
#include "rs_limits.h"
#include "s3_writer.h"
#include "store_local.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COPY_BUF (64 * 1024)

struct s3s_upload {
	struct store_upload base;
	struct s3s *s;
	char uuid[STORE_UUID_SIZE];
	char repo[RS_LIMIT_NAME_MAX + 1];
	char data[S3S_PATH_MAX + 64];
	char repo_file[S3S_PATH_MAX + 64];
	int fd;
	uint64_t size;
};

/* ------------------------------------------------------------ uploads */

static unsigned count_uploads(const struct s3s *s)
{
	unsigned n = 0;
	DIR *d = opendir(s->uploads);
	for (struct dirent *de; d && (de = readdir(d)) != NULL;)
		n += strstr(de->d_name, ".data") != NULL;
	if (d)
		closedir(d);
	return n;
}

enum rs_code s3s_upload_start(void *impl, const char *repo, char out[STORE_UUID_SIZE], struct rs_err *err)
{
	struct s3s *s = impl;
	if (!refname_repo_valid(repo))
		return rs_err_set(err, RS_BAD_INPUT, "invalid repository name '%.100s'", repo);
	unsigned n = count_uploads(s);
	if (n >= RS_LIMIT_UPLOADS_MAX)
		return rs_err_set(err, RS_TOO_LARGE, "%u uploads are in progress, the limit is %u (RS_LIMIT_UPLOADS_MAX)",
		                  n, (unsigned)RS_LIMIT_UPLOADS_MAX);
	enum rs_code rc = store_local_uuid_new(out, err);
	if (rc)
		return rc;
	char rf[S3S_PATH_MAX + 64], data[S3S_PATH_MAX + 64];
	snprintf(rf, sizeof(rf), "%s/%s.repo", s->uploads, out);
	snprintf(data, sizeof(data), "%s/%s.data", s->uploads, out);
	if ((rc = fsutil_write_file(rf, repo, strlen(repo), false, err)))
		return rc;
	int fd = open(data, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = rs_err_set(err, RS_IO, "create %s: %s", data, strerror(errno));
		(void)unlink(rf); /* cleanup; a leftover is swept later */
		return rc;
	}
	close(fd);
	return RS_OK;
}

/* Mark uuid in use (true) or free it (false); false when it already was in use. */
static bool set_busy(struct s3s *s, const char *uuid, bool busy)
{
	pthread_mutex_lock(&s->mu);
	size_t i = 0;
	while (i < s->nbusy && strcmp(s->busy[i], uuid) != 0)
		i++;
	bool ok = true;
	if (busy && i < s->nbusy) {
		ok = false;
	} else if (busy) {
		if (s->nbusy == s->capbusy) {
			size_t cap = s->capbusy ? s->capbusy * 2 : 16;
			char(*b)[STORE_UUID_SIZE] = realloc(s->busy, cap * sizeof(*b));
			if (!b) {
				pthread_mutex_unlock(&s->mu);
				return false;
			}
			s->busy = b;
			s->capbusy = cap;
		}
		snprintf(s->busy[s->nbusy++], STORE_UUID_SIZE, "%s", uuid);
	} else if (i < s->nbusy) {
		memcpy(s->busy[i], s->busy[--s->nbusy], STORE_UUID_SIZE);
	}
	pthread_mutex_unlock(&s->mu);
	return ok;
}

static void release(struct s3s_upload *u, bool remove)
{
	if (u->fd >= 0)
		close(u->fd);
	if (remove) {
		(void)unlink(u->data); /* gone already is fine */
		(void)unlink(u->repo_file);
	}
	set_busy(u->s, u->uuid, false);
	free(u);
}

enum rs_code s3s_upload_open(void *impl, const char *repo, const char *uuid, struct store_upload **out,
                             struct rs_err *err)
{
	struct s3s *s = impl;
	if (!store_local_uuid_valid(uuid))
		return rs_err_set(err, RS_NOT_FOUND, "unknown upload '%.60s'", uuid);
	struct s3s_upload *u = calloc(1, sizeof(*u));
	if (!u)
		return rs_err_set(err, RS_NOMEM, "out of memory opening upload %s", uuid);
	u->base.drv = &store_s3_driver;
	u->s = s;
	u->fd = -1;
	snprintf(u->uuid, sizeof(u->uuid), "%s", uuid);
	snprintf(u->repo, sizeof(u->repo), "%s", repo);
	snprintf(u->data, sizeof(u->data), "%s/%s.data", s->uploads, uuid);
	snprintf(u->repo_file, sizeof(u->repo_file), "%s/%s.repo", s->uploads, uuid);
	if (!set_busy(s, uuid, true)) {
		free(u);
		return rs_err_set(err, RS_BAD_INPUT, "upload %s is in use by another request", uuid);
	}
	char rf[RS_LIMIT_NAME_MAX + 2];
	size_t len = 0;
	struct stat st;
	if (fsutil_read_into(rf, sizeof(rf), &len, u->repo_file, NULL) != RS_OK || strcmp(rf, repo) != 0 ||
	    (u->fd = open(u->data, O_RDWR | O_CLOEXEC)) < 0 || fstat(u->fd, &st) != 0) {
		release(u, false);
		return rs_err_set(err, RS_NOT_FOUND, "unknown upload %s for repository %.200s", uuid, repo);
	}
	u->size = (uint64_t)st.st_size;
	(void)futimens(u->fd, NULL); /* activity for the idle sweep; failure only shortens its life */
	*out = &u->base;
	return RS_OK;
}

uint64_t s3s_upload_size(const struct store_upload *base)
{
	return ((const struct s3s_upload *)base)->size;
}

enum rs_code s3s_upload_write(struct store_upload *base, const void *buf, size_t len, struct rs_err *err)
{
	struct s3s_upload *u = (struct s3s_upload *)base;
	uint64_t max = u->s->cfg->push.max_blob_bytes;
	if (len > max || u->size > max - len)
		return rs_err_set(err, RS_TOO_LARGE, "blob upload would be %llu bytes, the limit is %llu (push.max_blob_bytes)",
		                  (unsigned long long)(u->size + len), (unsigned long long)max);
	enum rs_code rc = fsutil_pwrite_all(u->fd, buf, len, u->size, u->data, err);
	struct stat st;
	if (rc)
		u->size = fstat(u->fd, &st) == 0 ? (uint64_t)st.st_size : u->size; /* part of it may be there */
	else
		u->size += len;
	return rc;
}

static enum rs_code push_link(struct s3s *s, const char *repo, enum store_kind kind, const char *digest,
                              struct rs_err *err)
{
	char key[S3S_KEY_MAX];
	enum rs_code rc = s3s_key(key, s, err, "push/links/%s/_%s/%s", repo, kind == STORE_BLOB ? "blobs" : "manifests",
	                          digest_hex(digest));
	return rc ? rc : s3s_mark(s, key, err);
}

enum rs_code s3s_upload_commit(struct store_upload *base, const char *digest, struct rs_err *err)
{
	struct s3s_upload *u = (struct s3s_upload *)base;
	enum rs_code rc = digest_parse(digest, err);
	if (rc) {
		release(u, false);
		return rc;
	}
	/* s3_writer hashes what it sends: the object exists only on a match */
	if (!s3s_has(u->s, STORE_PUSHED, STORE_BLOB, digest) || u->size == 0)
		rc = s3s_put_verified_fd(u->s, STORE_PUSHED, STORE_BLOB, digest, u->fd, u->size, err);
	else {
		/* already pushed: the bytes must still hash to it */
		struct digest_ctx *dc = digest_new();
		char *buf = malloc(COPY_BUF);
		if (!dc || !buf)
			rc = rs_err_set(err, RS_NOMEM, "out of memory committing upload %s", u->uuid);
		for (uint64_t off = 0; rc == RS_OK && off < u->size;) {
			ssize_t n = pread(u->fd, buf, COPY_BUF, (off_t)off);
			if (n <= 0) {
				rc = rs_err_set(err, RS_IO, "reading upload %s: %s", u->uuid, n < 0 ? strerror(errno) : "short");
				break;
			}
			digest_update(dc, buf, (size_t)n);
			off += (uint64_t)n;
		}
		char got[DIGEST_STR_SIZE];
		if (rc == RS_OK) {
			digest_final(dc, got);
			if (strcmp(got, digest) != 0)
				rc = rs_err_set(err, RS_DIGEST_MISMATCH, "expected %s, got %s", digest, got);
		}
		digest_free(dc);
		free(buf);
	}
	if (rc == RS_DIGEST_MISMATCH || rc == RS_BAD_INPUT)
		rs_err_prefix(err, "the %llu uploaded bytes do not match (upload removed): ", (unsigned long long)u->size);
	/* the blob is this repository's from now on (and only this one's) */
	if (rc == RS_OK)
		rc = push_link(u->s, u->repo, STORE_BLOB, digest, err);
	if (rc == RS_BAD_INPUT) /* s3_writer's wrong size is a mismatch of the upload */
		rc = err->code = RS_DIGEST_MISMATCH;
	release(u, rc == RS_OK || rc == RS_DIGEST_MISMATCH);
	return rc;
}

void s3s_upload_close(struct store_upload *base)
{
	release((struct s3s_upload *)base, false);
}

void s3s_upload_cancel(struct store_upload *base)
{
	release((struct s3s_upload *)base, true);
}

void s3s_upload_sweep(void *impl, time_t now, unsigned *out_removed)
{
	struct s3s *s = impl;
	unsigned removed = 0;
	time_t idle = (time_t)s->cfg->push.upload_idle_timeout_s;
	DIR *d = opendir(s->uploads);
	for (struct dirent *de; d && (de = readdir(d)) != NULL;) {
		size_t n = strlen(de->d_name);
		if (n != STORE_UUID_SIZE - 1 + 5 || strcmp(de->d_name + n - 5, ".data") != 0)
			continue;
		char uuid[STORE_UUID_SIZE];
		snprintf(uuid, sizeof(uuid), "%.*s", STORE_UUID_SIZE - 1, de->d_name);
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, 0) != 0 || st.st_mtime + idle > now || !set_busy(s, uuid, true))
			continue;
		char p[S3S_PATH_MAX + 64];
		snprintf(p, sizeof(p), "%s/%s.data", s->uploads, uuid);
		(void)unlink(p); /* idle: removed, best effort */
		snprintf(p, sizeof(p), "%s/%s.repo", s->uploads, uuid);
		(void)unlink(p);
		set_busy(s, uuid, false);
		removed++;
	}
	if (d)
		closedir(d);
	if (out_removed)
		*out_removed = removed;
}

/* ------------------------------------------------------------ pushed images */

bool s3s_pushed_holds(void *impl, const char *repo, enum store_kind kind, const char *digest)
{
	struct s3s *s = impl;
	char key[S3S_KEY_MAX];
	struct rs_err err = {0};
	if (!refname_repo_valid(repo) || !digest_valid(digest) ||
	    s3s_key(key, s, &err, "push/links/%s/_%s/%s", repo, kind == STORE_BLOB ? "blobs" : "manifests",
	            digest_hex(digest)) != RS_OK)
		return false;
	return s3s_exists(s, key) && s3s_has(s, STORE_PUSHED, kind, digest);
}

void s3s_pushed_set_fetcher(void *impl, store_pushed_fetch_fn fn, void *ctx)
{
	struct s3s *s = impl;
	s->fetch = fn;
	s->fetch_ctx = ctx;
}

struct sink {
	struct s3_writer *w;
};

static enum rs_code sink_add(void *arg, const void *buf, size_t len, struct rs_err *err)
{
	return s3_writer_write(((struct sink *)arg)->w, buf, len, err);
}

/* Copy object digest from the cache area into the pushed area (verified). */
static enum rs_code copy_from_cache(struct s3s *s, enum store_kind kind, const char *digest, struct rs_err *err)
{
	if (s3s_has(s, STORE_PUSHED, kind, digest))
		return RS_OK;
	if (kind == STORE_MANIFEST) {
		char *buf = NULL, *type = NULL;
		size_t len = 0;
		enum rs_code rc = s3s_manifest_get(s, STORE_CACHE, digest, s->cfg->manifest_max_bytes, &buf, &len, &type, err);
		if (rc == RS_OK)
			rc = s3s_manifest_put(s, STORE_PUSHED, digest, type, buf, len, err);
		free(buf);
		free(type);
		return rc;
	}
	char from[S3S_KEY_MAX], to[S3S_KEY_MAX];
	s3s_object_key(from, s, STORE_CACHE, STORE_BLOB, digest);
	s3s_object_key(to, s, STORE_PUSHED, STORE_BLOB, digest);
	struct sink k = {NULL};
	enum rs_code rc = s3_writer_new(&k.w, s->c, to, digest, -1, err);
	if (rc == RS_OK)
		rc = s3_get(s->c, from, -1, -1, sink_add, &k, NULL, err);
	if (rc == RS_OK)
		rc = s3_writer_commit(k.w, err);
	s3_writer_free(k.w);
	return rc;
}

/* As push.c's take: make kind/digest of repository src available to dst. */
static enum rs_code take(struct s3s *s, const char *dst, const char *src, enum store_kind kind, const char *digest,
                         struct rs_err *err)
{
	enum rs_code rc = RS_OK;
	if (!s3s_pushed_holds(s, src, kind, digest)) {
		struct rs_err fe = {0};
		if (!s->fetch || s->fetch(s->fetch_ctx, src, digest, kind == STORE_MANIFEST, &fe) != RS_OK)
			return rs_err_set(err, RS_NOT_FOUND, "%s %s is unknown to repository %.200s",
			                  kind == STORE_MANIFEST ? "manifest" : "blob", digest, src);
		if ((rc = copy_from_cache(s, kind, digest, err)) == RS_NOT_FOUND)
			return rs_err_set(err, RS_NOT_FOUND, "%s %s left the cache before it could be kept",
			                  kind == STORE_MANIFEST ? "manifest" : "blob", digest);
	}
	return rc ? rc : push_link(s, dst, kind, digest, err);
}

enum rs_code s3s_pushed_mount(void *impl, const char *repo, const char *from, const char *digest,
                              struct rs_err *err)
{
	enum rs_code rc = digest_parse(digest, err);
	if (rc)
		return rc;
	if (!refname_repo_valid(repo) || !refname_repo_valid(from))
		return rs_err_set(err, RS_BAD_INPUT, "invalid repository name in a mount");
	return take(impl, repo, from, STORE_BLOB, digest, err);
}

static enum rs_code take_ref(void *ctx, const char *repo, enum blobstore_kind kind, const char *digest,
                             struct rs_err *err)
{
	return take(ctx, repo, repo, kind == BLOBSTORE_BLOB ? STORE_BLOB : STORE_MANIFEST, digest, err);
}

enum rs_code s3s_pushed_put_manifest(void *impl, const char *repo, const char *ref, const char *content_type,
                                     const char *body, size_t len, char out_digest[DIGEST_STR_SIZE],
                                     struct rs_err *err)
{
	struct s3s *s = impl;
	if (!refname_repo_valid(repo))
		return rs_err_set(err, RS_BAD_INPUT, "invalid repository name '%.100s'", repo);
	struct push_checked c;
	enum rs_code rc = push_check_manifest(s->cfg, repo, ref, content_type, body, len, take_ref, s, &c, err);
	char key[S3S_KEY_MAX];
	if (rc == RS_OK)
		rc = s3s_manifest_put(s, STORE_PUSHED, c.digest, c.type, body, len, err);
	if (rc == RS_OK)
		rc = push_link(s, repo, STORE_MANIFEST, c.digest, err);
	if (rc == RS_OK && c.subject[0] &&
	    (rc = s3s_key(key, s, err, "push/referrers/%s/_subjects/%s/%s", repo, digest_hex(c.subject),
	                  digest_hex(c.digest))) == RS_OK)
		rc = s3s_mark(s, key, err);
	if (rc == RS_OK && !strchr(ref, ':')) {
		struct store_tag t = {0};
		snprintf(t.digest, sizeof(t.digest), "%s", c.digest);
		snprintf(t.media_type, sizeof(t.media_type), "%s", c.type);
		t.fetched = time(NULL);
		if ((rc = s3s_key(key, s, err, "push/tags/%s/_tags/%s", repo, ref)) == RS_OK)
			rc = s3s_tag_write(s, key, &t, err);
	}
	if (rc == RS_OK)
		memcpy(out_digest, c.digest, DIGEST_STR_SIZE);
	return rc;
}

void s3s_pushed_forget_manifest(void *impl, const char *repo, const char *digest)
{
	struct s3s *s = impl;
	char key[S3S_KEY_MAX];
	struct rs_err err = {0};
	if (refname_repo_valid(repo) && digest_valid(digest) &&
	    s3s_key(key, s, &err, "push/links/%s/_manifests/%s", repo, digest_hex(digest)) == RS_OK)
		s3s_delete_quiet(s, key); /* best effort, as store.h says */
}

enum rs_code s3s_pushed_tag_get(void *impl, const char *repo, const char *tag, struct store_tag *out,
                                struct rs_err *err)
{
	struct s3s *s = impl;
	if (!refname_repo_valid(repo) || !refname_tag_valid(tag))
		return rs_err_set(err, RS_BAD_INPUT, "invalid tag reference %.100s:%.60s", repo, tag);
	char key[S3S_KEY_MAX];
	enum rs_code rc = s3s_key(key, s, err, "push/tags/%s/_tags/%s", repo, tag);
	if (rc == RS_OK)
		rc = s3s_tag_read(s, key, out, err);
	if (rc == RS_OK && !s3s_has(s, STORE_PUSHED, STORE_MANIFEST, out->digest))
		return rs_err_set(err, RS_NOT_FOUND, "pushed tag %.100s:%.100s points at a missing manifest %s", repo, tag,
		                  out->digest);
	return rc;
}

struct names {
	char **v;
	size_t n, cap, max;
	bool hex; /* keep 64-hex names only */
};

static enum rs_code add_name(void *arg, const char *key, int64_t size, struct rs_err *err)
{
	(void)size;
	struct names *ns = arg;
	const char *slash = strrchr(key, '/');
	const char *name = slash ? slash + 1 : key;
	if ((ns->hex && strlen(name) != DIGEST_HEX_LEN) || (ns->max && ns->n >= ns->max))
		return RS_OK;
	if (ns->n == ns->cap) {
		size_t cap = ns->cap ? ns->cap * 2 : 64;
		char **v = realloc(ns->v, cap * sizeof(*v));
		if (!v)
			return rs_err_set(err, RS_NOMEM, "out of memory listing %.100s", key);
		ns->v = v;
		ns->cap = cap;
	}
	if (!(ns->v[ns->n] = strdup(name)))
		return rs_err_set(err, RS_NOMEM, "out of memory listing %.100s", key);
	ns->n++;
	return RS_OK;
}

static void names_free(struct names *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i]);
	free(ns->v);
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every key under prefix, by its last component. */
static enum rs_code list_names(struct s3s *s, const char *prefix, struct names *ns, struct rs_err *err)
{
	char *token = NULL;
	enum rs_code rc;
	do {
		char *next = NULL;
		rc = s3_list(s->c, prefix, token, 0, add_name, ns, &next, err);
		free(token);
		token = next;
	} while (rc == RS_OK && token && (!ns->max || ns->n < ns->max));
	free(token);
	if (rc == RS_OK && ns->n)
		qsort(ns->v, ns->n, sizeof(*ns->v), cmp_name);
	return rc;
}

enum rs_code s3s_pushed_tags_list(void *impl, const char *repo, char **out, size_t *out_len, struct rs_err *err)
{
	struct s3s *s = impl;
	if (!refname_repo_valid(repo))
		return rs_err_set(err, RS_NOT_FOUND, "invalid repository name '%.100s'", repo);
	char key[S3S_KEY_MAX];
	struct names ns = {0};
	enum rs_code rc = s3s_key(key, s, err, "push/tags/%s/_tags/", repo);
	if (rc == RS_OK)
		rc = list_names(s, key, &ns, err);
	if (rc == RS_OK && ns.n == 0)
		rc = rs_err_set(err, RS_NOT_FOUND, "nothing was pushed to %.200s", repo);
	size_t sz = strlen(repo) + 32;
	for (size_t i = 0; i < ns.n; i++)
		sz += strlen(ns.v[i]) + 3;
	char *text = rc == RS_OK ? malloc(sz) : NULL;
	if (rc == RS_OK && !text)
		rc = rs_err_set(err, RS_NOMEM, "out of memory listing tags");
	size_t o = 0;
	if (rc == RS_OK) {
		/* names and tags come from their grammars (checked below): no JSON escaping needed */
		o = (size_t)snprintf(text, sz, "{\"name\":\"%s\",\"tags\":[", repo);
		for (size_t i = 0, k = 0; i < ns.n; i++)
			if (refname_tag_valid(ns.v[i]))
				o += (size_t)snprintf(text + o, sz - o, "%s\"%s\"", k++ ? "," : "", ns.v[i]);
		o += (size_t)snprintf(text + o, sz - o, "]}\n");
	}
	names_free(&ns);
	if (rc)
		return rc;
	*out = text;
	*out_len = o;
	return RS_OK;
}

enum rs_code s3s_pushed_referrers(void *impl, const char *repo, const char *subject, char (**out)[DIGEST_STR_SIZE],
                                  size_t *out_n, size_t max, struct rs_err *err)
{
	struct s3s *s = impl;
	enum rs_code rc = digest_parse(subject, err);
	if (rc)
		return rc;
	if (!refname_repo_valid(repo))
		return rs_err_set(err, RS_BAD_INPUT, "invalid repository name '%.100s'", repo);
	char key[S3S_KEY_MAX];
	struct names ns = {.max = max, .hex = true};
	if ((rc = s3s_key(key, s, err, "push/referrers/%s/_subjects/%s/", repo, digest_hex(subject))) == RS_OK)
		rc = list_names(s, key, &ns, err);
	char(*v)[DIGEST_STR_SIZE] = NULL;
	if (rc == RS_OK && ns.n && !(v = calloc(ns.n, sizeof(*v))))
		rc = rs_err_set(err, RS_NOMEM, "out of memory listing referrers");
	for (size_t i = 0; rc == RS_OK && i < ns.n; i++)
		snprintf(v[i], DIGEST_STR_SIZE, "sha256:%s", ns.v[i]);
	names_free(&ns);
	if (rc) {
		free(v);
		return rc;
	}
	*out = v;
	*out_n = v ? ns.n : 0;
	return RS_OK;
}
