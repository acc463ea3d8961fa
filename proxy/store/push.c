/* push: upload sessions, mounts, manifest pushes and the push tag map.
 *
 * An upload is two files under <data>/uploads/: <uuid>.repo (the repository
 * it belongs to) and <uuid>.data (the bytes so far). Everything a later
 * request needs is on disk, so an upload survives a reconnect and a restart;
 * the running SHA-256 of the bytes is kept in memory in a slot per upload
 * (bounded by RS_LIMIT_UPLOADS_MAX) and rebuilt by rereading the file when
 * the slot is missing or disagrees with the file size (after a restart, or
 * a write that failed half-way). A slot also marks the upload as in use, so
 * two requests never write one upload at once. The file's mtime is the last
 * activity that push_sweep() compares with push.upload_idle_timeout_s.
 *
 * A finished upload is verified against its digest with that running hash,
 * fsynced and renamed into the push store (blobstore_place_file): no copy
 * and no second hashing, so the final PUT of a large blob costs an fsync and
 * a rename. Only when the rename cannot be done (the push store on another
 * file system) is it copied through a verified blobstore writer, which
 * hashes it again. Manifests are parsed with config/imagejson.h, checked
 * (type, schemaVersion, digests, references) and stored with their media
 * type; tags go to the push store's tag map under the namespace "pushed".
 *
 * Deletes remove links, tags and referrers-index entries only; the bytes go
 * at the garbage collection (push_gc): a mark of what every linked manifest
 * is and references, then a sweep of the store's index that removes the
 * rest once idle for the grace period. Manifest pushes hold put_lock (read)
 * so a sweep starts only once they have linked; pushes during a sweep note
 * what they take (gc_note) and each removal checks the notes under gc_mu.
 *
 * It talks to the file system and blobstore.c; no HTTP, no upstream. */
#include "push.h"

#include "digest.h"
#include "fsutil.h"
#include "image.h"
#include "imagejson.h"
#include "imagewalk.h"
#include "log.h"
#include "refindex.h"
#include "refname.h"
#include "route.h"
#include "rs_limits.h"
#include "store_local.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATH_CAP 4096
#define COPY_BUF (64 * 1024)
/* Tag namespace of pushed images inside the push store. */
#define PUSH_TAG_NS "pushed"

struct slot {
	struct slot *next;
	char uuid[PUSH_UUID_SIZE];
	struct digest_ctx *dc;
	uint64_t hashed; /* bytes fed to dc */
	bool busy;
	time_t used;     /* for dropping idle slots when the table is full */
};

struct push {
	const struct rs_config *cfg;
	struct blobstore *cache;
	push_fetch_fn fetch; /* missing references through the mirror, or NULL */
	void *fetch_ctx;
	struct blobstore *store;
	char *uploads;      /* <data>/uploads */
	pthread_mutex_t mu; /* guards slots, nslots and the upload files' existence */
	struct slot *slots;
	size_t nslots;
	/* Garbage collection (push_gc): a manifest push holds put_lock (read)
	 * from its checks to its link, the start of a sweep takes it (write),
	 * so every push that began before the sweep has linked its manifest
	 * when the sweep reads the links. Pushes during the sweep name what
	 * they take in touched first (gc_note); the sweep skips those. */
	pthread_rwlock_t put_lock;
	pthread_mutex_t gc_mu; /* guards the four below */
	bool gc_running;
	char (*touched)[DIGEST_STR_SIZE];
	size_t ntouched, captouched;
	bool touched_lost; /* a note did not fit (no memory): the sweep removes nothing more */
	void (*gc_hook)(void *ctx); /* push_set_gc_hook (tests) */
	void *gc_hook_ctx;
	/* push_commit_stats */
	_Atomic uint64_t renamed, copied, rehashed_bytes;
};

struct push_upload {
	struct push *p;
	struct slot *slot;
	int fd;
	uint64_t size;
	char data[PATH_CAP];
	char repo_file[PATH_CAP];
	char repo[RS_LIMIT_NAME_MAX + 1]; /* the repository the upload belongs to */
};

/* ------------------------------------------------------------ helpers */

static enum rs_code upload_paths(const struct push *p, const char *uuid, char data[PATH_CAP], char repo[PATH_CAP],
                                 struct rs_err *err)
{
	if (snprintf(data, PATH_CAP, "%s/%s.data", p->uploads, uuid) >= PATH_CAP ||
	    snprintf(repo, PATH_CAP, "%s/%s.repo", p->uploads, uuid) >= PATH_CAP)
		return rs_err_set(err, RS_IO, "upload path too long under %.100s", p->uploads);
	return RS_OK;
}

static struct slot *slot_find(struct push *p, const char *uuid)
{
	for (struct slot *s = p->slots; s; s = s->next)
		if (strcmp(s->uuid, uuid) == 0)
			return s;
	return NULL;
}

static void slot_remove(struct push *p, struct slot *s)
{
	for (struct slot **pp = &p->slots; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			p->nslots--;
			break;
		}
	}
	digest_free(s->dc);
	free(s);
}

/* Drop the hash state of the least recently used idle slot (it is rebuilt
 * from the file when that upload is used again). Caller holds mu. */
static bool slot_drop_idle(struct push *p)
{
	struct slot *old = NULL;
	for (struct slot *s = p->slots; s; s = s->next)
		if (!s->busy && (!old || s->used < old->used))
			old = s;
	if (!old)
		return false;
	slot_remove(p, old);
	return true;
}

/* Copy fd (size bytes from offset 0) into a new verified object. */
static enum rs_code copy_into(struct blobstore *bs, const char *digest, int fd, uint64_t size, struct rs_err *err)
{
	struct blobstore_writer *w = NULL;
	enum rs_code rc = blobstore_writer_new(&w, bs, BLOBSTORE_BLOB, digest, (int64_t)size, err);
	if (rc)
		return rc;
	char *buf = malloc(COPY_BUF);
	if (!buf) {
		blobstore_writer_abort(w);
		return rs_err_set(err, RS_NOMEM, "out of memory copying %s", digest);
	}
	uint64_t off = 0;
	while (off < size) {
		ssize_t n = pread(fd, buf, COPY_BUF, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = rs_err_set(err, RS_IO, "reading %s at byte %llu: %s", digest, (unsigned long long)off,
			                n < 0 ? strerror(errno) : "unexpected end of file");
			break;
		}
		rc = blobstore_writer_write(w, buf, (size_t)n, err);
		if (rc)
			break;
		off += (uint64_t)n;
	}
	free(buf);
	if (rc) {
		blobstore_writer_abort(w);
		return rc;
	}
	return blobstore_writer_commit(w, err);
}

/* A push takes object digest: while a sweep runs, it must not remove it
 * (push_gc checks the notes under gc_mu right before each removal). */
static void gc_note(struct push *p, const char *digest)
{
	pthread_mutex_lock(&p->gc_mu);
	if (p->gc_running) {
		if (p->ntouched == p->captouched) {
			size_t nc = p->captouched ? p->captouched * 2 : 64;
			char(*nt)[DIGEST_STR_SIZE] = realloc(p->touched, nc * sizeof(*nt));
			if (nt) {
				p->touched = nt;
				p->captouched = nc;
			}
		}
		if (p->ntouched < p->captouched)
			snprintf(p->touched[p->ntouched++], DIGEST_STR_SIZE, "%s", digest);
		else
			p->touched_lost = true;
	}
	pthread_mutex_unlock(&p->gc_mu);
}

/* ------------------------------------------------------------ lifecycle */

enum rs_code push_new(struct push **out, const struct rs_config *cfg, struct blobstore *cache, struct rs_err *err)
{
	*out = NULL;
	struct push *p = calloc(1, sizeof(*p));
	if (!p)
		return rs_err_set(err, RS_NOMEM, "out of memory starting push");
	p->cfg = cfg;
	p->cache = cache;
	pthread_mutex_init(&p->mu, NULL);
	pthread_rwlock_init(&p->put_lock, NULL);
	pthread_mutex_init(&p->gc_mu, NULL);
	char dir[PATH_CAP];
	enum rs_code rc = RS_OK;
	size_t n = strlen(cfg->data_dir) + 16;
	p->uploads = malloc(n);
	if (!p->uploads) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory starting push");
		goto out;
	}
	snprintf(p->uploads, n, "%s/uploads", cfg->data_dir);
	if ((rc = fsutil_mkdir_p(p->uploads, NULL, err)))
		goto out;
	if (snprintf(dir, sizeof(dir), "%s/push", cfg->data_dir) >= (int)sizeof(dir)) {
		rc = rs_err_set(err, RS_IO, "data directory path too long");
		goto out;
	}
	/* max_bytes 0: pushed images are the only copy, never evicted. */
	if ((rc = blobstore_open(&p->store, dir, 0, err)))
		goto out;
	if (blobstore_links_migrated(p->store))
		log_event(LOG_INFO, "push store: repository links derived from %u pushed tags (data written before links)",
		          blobstore_links_migrated(p->store));
	*out = p;
	return RS_OK;
out:
	push_free(p);
	return rc;
}

void push_free(struct push *p)
{
	if (!p)
		return;
	while (p->slots)
		slot_remove(p, p->slots);
	blobstore_free(p->store);
	free(p->uploads);
	free(p->touched);
	pthread_mutex_destroy(&p->mu);
	pthread_rwlock_destroy(&p->put_lock);
	pthread_mutex_destroy(&p->gc_mu);
	free(p);
}

struct blobstore *push_store(struct push *p)
{
	return p->store;
}

/* ------------------------------------------------------------ uploads */

enum rs_code push_upload_start(struct push *p, const char *repo, char out[PUSH_UUID_SIZE], struct rs_err *err)
{
	char data[PATH_CAP], rf[PATH_CAP];
	enum rs_code rc = store_local_uuid_new(out, err);
	if (rc == RS_OK)
		rc = upload_paths(p, out, data, rf, err);
	if (rc)
		return rc;
	pthread_mutex_lock(&p->mu);
	/* Count open uploads on disk only when the table looks full. */
	if (p->nslots >= RS_LIMIT_UPLOADS_MAX && !slot_drop_idle(p)) {
		pthread_mutex_unlock(&p->mu);
		return rs_err_set(err, RS_TOO_LARGE, "%u uploads are in progress, the limit is %u (RS_LIMIT_UPLOADS_MAX)",
		                  (unsigned)p->nslots, (unsigned)RS_LIMIT_UPLOADS_MAX);
	}
	pthread_mutex_unlock(&p->mu);
	int fd = open(rf, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		return rs_err_set(err, RS_IO, "create %s: %s", rf, strerror(errno));
	rc = fsutil_pwrite_all(fd, repo, strlen(repo), 0, rf, err);
	if (close(fd) != 0 && rc == RS_OK)
		rc = rs_err_set(err, RS_IO, "close %s: %s", rf, strerror(errno));
	if (rc == RS_OK) {
		fd = open(data, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0)
			rc = rs_err_set(err, RS_IO, "create %s: %s", data, strerror(errno));
		else
			close(fd);
	}
	if (rc)
		(void)unlink(rf); /* cleanup; a leftover is swept later */
	return rc;
}

/* Does the upload's .repo file name repo? */
static bool upload_repo_is(const char *rf, const char *repo)
{
	char buf[RS_LIMIT_NAME_MAX + 2];
	size_t len = 0;
	/* missing, unreadable or too long for a name: not this repository */
	return fsutil_read_into(buf, sizeof(buf), &len, rf, NULL) == RS_OK && strcmp(buf, repo) == 0;
}

/* Rebuild the running hash from the file when it disagrees with it. */
static enum rs_code rehash(struct push_upload *u, struct rs_err *err)
{
	struct slot *s = u->slot;
	if (s->dc && s->hashed == u->size)
		return RS_OK;
	if (!s->dc && !(s->dc = digest_new()))
		return rs_err_set(err, RS_NOMEM, "out of memory hashing upload %s", s->uuid);
	digest_reset(s->dc);
	s->hashed = 0;
	char *buf = malloc(COPY_BUF);
	if (!buf)
		return rs_err_set(err, RS_NOMEM, "out of memory hashing upload %s", s->uuid);
	enum rs_code rc = RS_OK;
	while (s->hashed < u->size) {
		ssize_t n = pread(u->fd, buf, COPY_BUF, (off_t)s->hashed);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = rs_err_set(err, RS_IO, "reading %s: %s", u->data, n < 0 ? strerror(errno) : "short file");
			break;
		}
		digest_update(s->dc, buf, (size_t)n);
		s->hashed += (uint64_t)n;
		atomic_fetch_add(&u->p->rehashed_bytes, (uint64_t)n);
	}
	free(buf);
	return rc;
}

static void release(struct push_upload *u, bool remove)
{
	struct push *p = u->p;
	if (u->fd >= 0)
		close(u->fd);
	pthread_mutex_lock(&p->mu);
	if (remove) {
		(void)unlink(u->data); /* gone already is fine */
		(void)unlink(u->repo_file);
		slot_remove(p, u->slot);
	} else {
		u->slot->busy = false;
		u->slot->used = time(NULL);
	}
	pthread_mutex_unlock(&p->mu);
	free(u);
}

enum rs_code push_upload_open(struct push *p, const char *repo, const char *uuid, struct push_upload **out,
                              struct rs_err *err)
{
	*out = NULL;
	if (!store_local_uuid_valid(uuid))
		return rs_err_set(err, RS_NOT_FOUND, "unknown upload '%.60s'", uuid);
	struct push_upload *u = calloc(1, sizeof(*u));
	if (!u)
		return rs_err_set(err, RS_NOMEM, "out of memory opening upload %s", uuid);
	u->p = p;
	u->fd = -1;
	snprintf(u->repo, sizeof(u->repo), "%s", repo);
	enum rs_code rc = upload_paths(p, uuid, u->data, u->repo_file, err);
	if (rc) {
		free(u);
		return rc;
	}
	pthread_mutex_lock(&p->mu);
	struct slot *s = slot_find(p, uuid);
	if (s && s->busy) {
		pthread_mutex_unlock(&p->mu);
		free(u);
		return rs_err_set(err, RS_BAD_INPUT, "upload %s is in use by another request", uuid);
	}
	if (!upload_repo_is(u->repo_file, repo) || access(u->data, F_OK) != 0) {
		pthread_mutex_unlock(&p->mu);
		free(u);
		return rs_err_set(err, RS_NOT_FOUND, "unknown upload %s for repository %.200s", uuid, repo);
	}
	if (!s) {
		if (p->nslots >= RS_LIMIT_UPLOADS_MAX)
			(void)slot_drop_idle(p); /* best effort; the table may go over by the busy ones */
		s = calloc(1, sizeof(*s));
		if (!s) {
			pthread_mutex_unlock(&p->mu);
			free(u);
			return rs_err_set(err, RS_NOMEM, "out of memory opening upload %s", uuid);
		}
		snprintf(s->uuid, sizeof(s->uuid), "%s", uuid);
		s->next = p->slots;
		p->slots = s;
		p->nslots++;
	}
	s->busy = true;
	u->slot = s;
	pthread_mutex_unlock(&p->mu);

	struct stat st;
	u->fd = open(u->data, O_RDWR | O_CLOEXEC);
	if (u->fd < 0 || fstat(u->fd, &st) != 0) {
		rc = rs_err_set(err, errno == ENOENT ? RS_NOT_FOUND : RS_IO, "opening upload %s: %s", uuid,
		                strerror(errno));
		release(u, false);
		return rc;
	}
	u->size = (uint64_t)st.st_size;
	(void)futimens(u->fd, NULL); /* activity for the idle sweep; failure only shortens its life */
	if ((rc = rehash(u, err))) {
		release(u, false);
		return rc;
	}
	*out = u;
	return RS_OK;
}

uint64_t push_upload_size(const struct push_upload *u)
{
	return u->size;
}

enum rs_code push_upload_reader(struct push_upload *u, int *out_fd, struct rs_err *err)
{
	int fd = open(u->data, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return rs_err_set(err, RS_IO, "opening upload %.200s: %s", u->data, strerror(errno));
	*out_fd = fd;
	return RS_OK;
}

enum rs_code push_upload_write(struct push_upload *u, const void *buf, size_t len, struct rs_err *err)
{
	uint64_t max = u->p->cfg->push.max_blob_bytes;
	if (len > max || u->size > max - len)
		return rs_err_set(err, RS_TOO_LARGE, "blob upload would be %llu bytes, the limit is %llu (push.max_blob_bytes)",
		                  (unsigned long long)(u->size + len), (unsigned long long)max);
	enum rs_code rc = fsutil_pwrite_all(u->fd, buf, len, u->size, u->data, err);
	if (rc) {
		/* Part of it may be on disk: the next open rehashes the file. */
		struct stat st;
		if (fstat(u->fd, &st) == 0)
			u->size = (uint64_t)st.st_size;
		return rc;
	}
	digest_update(u->slot->dc, buf, len);
	u->size += len;
	u->slot->hashed = u->size;
	return RS_OK;
}

/* Put the verified upload into the push store: fsynced and renamed into
 * place (its bytes were hashed as they were written, or reread by rehash);
 * copied, and hashed again on the way, when the push store is on another
 * file system or the file's size is not what was hashed (not expected). */
static enum rs_code upload_place(struct push_upload *u, const char *digest, struct rs_err *err)
{
	if (fsync(u->fd) != 0)
		return rs_err_set(err, RS_IO, "fsync %s: %s", u->data, strerror(errno));
	struct stat st;
	if (fstat(u->fd, &st) == 0 && (uint64_t)st.st_size == u->size) {
		enum rs_code rc = blobstore_place_file(u->p->store, BLOBSTORE_BLOB, digest, u->data, u->size, err);
		if (rc == RS_OK)
			atomic_fetch_add(&u->p->renamed, 1);
		if (rc != RS_UNSUPPORTED)
			return rc;
	}
	atomic_fetch_add(&u->p->copied, 1);
	return copy_into(u->p->store, digest, u->fd, u->size, err);
}

void push_commit_stats(struct push *p, struct push_commit_stats *out)
{
	out->renamed = atomic_load(&p->renamed);
	out->copied = atomic_load(&p->copied);
	out->rehashed_bytes = atomic_load(&p->rehashed_bytes);
}

enum rs_code push_upload_commit(struct push_upload *u, const char *digest, struct rs_err *err)
{
	enum rs_code rc = digest_parse(digest, err);
	if (rc) {
		release(u, false);
		return rc;
	}
	if (u->slot->hashed != u->size && (rc = rehash(u, err))) {
		release(u, false);
		return rc;
	}
	char got[DIGEST_STR_SIZE];
	digest_final(u->slot->dc, got);
	if (strcmp(got, digest) != 0) {
		rc = rs_err_set(err, RS_DIGEST_MISMATCH, "the %llu uploaded bytes hash to %s, not %s; upload removed",
		                (unsigned long long)u->size, got, digest);
		release(u, true);
		return rc;
	}
	/* An object already there starts its grace period again (the manifest
	 * that will reference it comes later); one a sweep just removed is
	 * put there again. */
	gc_note(u->p, digest);
	if (!blobstore_touch(u->p->store, BLOBSTORE_BLOB, digest))
		rc = upload_place(u, digest, err);
	/* the blob is this repository's from now on (and only this one's) */
	if (rc == RS_OK)
		rc = blobstore_link(u->p->store, PUSH_TAG_NS, u->repo, BLOBSTORE_BLOB, digest, err);
	/* kept for a retry of the PUT unless done, refused, or its file is gone
	 * (renamed, then the directory's fsync failed) */
	release(u, rc == RS_OK || rc == RS_DIGEST_MISMATCH || access(u->data, F_OK) != 0);
	return rc;
}

void push_upload_close(struct push_upload *u)
{
	if (u)
		release(u, false);
}

void push_upload_cancel(struct push_upload *u)
{
	if (u)
		release(u, true);
}

void push_sweep(struct push *p, time_t now, unsigned *out_removed)
{
	unsigned removed = 0;
	DIR *d = opendir(p->uploads);
	if (!d) {
		log_event(LOG_WARN, "upload sweep: opendir %s: %s", p->uploads, strerror(errno));
		if (out_removed)
			*out_removed = 0;
		return;
	}
	time_t idle = (time_t)p->cfg->push.upload_idle_timeout_s;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		if (l != PUSH_UUID_SIZE - 1 + 5 || strcmp(de->d_name + l - 5, ".repo") != 0)
			continue;
		char uuid[PUSH_UUID_SIZE];
		memcpy(uuid, de->d_name, PUSH_UUID_SIZE - 1);
		uuid[PUSH_UUID_SIZE - 1] = '\0';
		char data[PATH_CAP], rf[PATH_CAP];
		struct rs_err err;
		struct stat st;
		if (!store_local_uuid_valid(uuid) || upload_paths(p, uuid, data, rf, &err) != RS_OK)
			continue;
		pthread_mutex_lock(&p->mu);
		struct slot *s = slot_find(p, uuid);
		bool have = stat(data, &st) == 0 || stat(rf, &st) == 0;
		if (have && (!s || !s->busy) && now - st.st_mtime >= idle) {
			(void)unlink(data); /* both may be missing after a crash; that is fine */
			(void)unlink(rf);
			if (s)
				slot_remove(p, s);
			removed++;
		}
		pthread_mutex_unlock(&p->mu);
	}
	closedir(d);
	if (removed)
		log_event(LOG_INFO, "removed %u abandoned uploads (idle for %us or more)", removed,
		          p->cfg->push.upload_idle_timeout_s);
	if (out_removed)
		*out_removed = removed;
}

/* ------------------------------------------------------------ mounts */

bool push_holds(struct push *p, const char *repo, enum blobstore_kind kind, const char *digest)
{
	return blobstore_linked(p->store, PUSH_TAG_NS, repo, kind, digest) && blobstore_has(p->store, kind, digest);
}

/* Copy object digest from the cache into the push store (if it is not there). */
static enum rs_code copy_from_cache(struct push *p, enum blobstore_kind kind, const char *digest, struct rs_err *err)
{
	if (blobstore_has(p->store, kind, digest))
		return RS_OK;
	if (kind == BLOBSTORE_MANIFEST) {
		char *buf = NULL, *type = NULL;
		size_t len = 0;
		enum rs_code rc =
			blobstore_get_manifest(p->cache, digest, p->cfg->manifest_max_bytes, &buf, &len, &type, err);
		if (rc == RS_OK)
			rc = blobstore_put_manifest(p->store, digest, type, buf, len, err);
		free(buf);
		free(type);
		return rc;
	}
	int fd = -1;
	uint64_t size = 0;
	enum rs_code rc = blobstore_open_object(p->cache, BLOBSTORE_BLOB, digest, &fd, &size, err);
	if (rc)
		return rc;
	rc = copy_into(p->store, digest, fd, size, err);
	close(fd);
	return rc;
}

/* Make object digest of repository src available to repository dst in the
 * push store: src holds it when it was pushed or mounted there, or when the
 * mirror's repository src holds it (the fetcher: linked, or confirmed by the
 * upstream for src). RS_NOT_FOUND otherwise. */
static enum rs_code take(struct push *p, const char *dst, const char *src, enum blobstore_kind kind,
                         const char *digest, struct rs_err *err)
{
	enum rs_code rc = RS_OK;
	/* taken: spared by a sweep running now, and its grace period starts
	 * again for the next one (a mount comes before its manifest) */
	gc_note(p, digest);
	(void)blobstore_touch(p->store, kind, digest); /* absent: fetched below or refused */
	if (!push_holds(p, src, kind, digest)) {
		struct rs_err fe = {0};
		if (!p->fetch || p->fetch(p->fetch_ctx, src, digest, kind == BLOBSTORE_MANIFEST, &fe) != RS_OK)
			return rs_err_set(err, RS_NOT_FOUND, "%s %s is unknown to repository %.200s",
			                  kind == BLOBSTORE_MANIFEST ? "manifest" : "blob", digest, src);
		if ((rc = copy_from_cache(p, kind, digest, err)) == RS_NOT_FOUND)
			return rs_err_set(err, RS_NOT_FOUND, "%s %s left the cache before it could be kept",
			                  kind == BLOBSTORE_MANIFEST ? "manifest" : "blob", digest);
	}
	if (rc == RS_OK)
		rc = blobstore_link(p->store, PUSH_TAG_NS, dst, kind, digest, err);
	return rc;
}

enum rs_code push_mount_blob(struct push *p, const char *repo, const char *from, const char *digest,
                             struct rs_err *err)
{
	enum rs_code rc = digest_parse(digest, err);
	if (rc)
		return rc;
	if (!refname_repo_valid(repo) || !refname_repo_valid(from))
		return rs_err_set(err, RS_BAD_INPUT, "invalid repository name in a mount");
	return take(p, repo, from, BLOBSTORE_BLOB, digest, err);
}

void push_forget_manifest(struct push *p, const char *repo, const char *digest)
{
	blobstore_unlink(p->store, PUSH_TAG_NS, repo, BLOBSTORE_MANIFEST, digest);
}

enum rs_code push_referrers(struct push *p, const char *repo, const char *subject, char (**out)[DIGEST_STR_SIZE],
                            size_t *out_n, size_t max, struct rs_err *err)
{
	return refindex_list(out, out_n, p->cfg->data_dir, repo, subject, max, err);
}

/* ------------------------------------------------------------ manifests */

static bool is_known_type(const char *t)
{
	return strcmp(t, IMAGE_MT_DOCKER_MANIFEST) == 0 || strcmp(t, IMAGE_MT_DOCKER_LIST) == 0 || strcmp(t, IMAGE_MT_OCI_MANIFEST) == 0 ||
	       strcmp(t, IMAGE_MT_OCI_INDEX) == 0;
}

static bool is_index_type(const char *t)
{
	return strcmp(t, IMAGE_MT_DOCKER_LIST) == 0 || strcmp(t, IMAGE_MT_OCI_INDEX) == 0;
}

static bool nondistributable(const char *mt)
{
	return mt && (strstr(mt, ".foreign.") || strstr(mt, "nondistributable"));
}

void push_set_fetcher(struct push *p, push_fetch_fn fn, void *ctx)
{
	p->fetch = fn;
	p->fetch_ctx = ctx;
}

struct put_walk_refs {
	push_ref_fn fn;
	void *ctx;
};

static enum rs_code check_ref(const struct put_walk_refs *r, const char *repo, const struct imagejson_descriptor *d,
                              const char *where, bool manifest, struct rs_err *err)
{
	if (!d->digest || !digest_valid(d->digest))
		return rs_err_set(err, RS_BAD_INPUT, "%s.digest '%.80s' is not a sha256 digest", where,
		                  d->digest ? d->digest : "(missing)");
	/* A reference must be held by repo itself: pushed or mounted there, or
	 * (a client that HEADed it through regslim's read side and skipped the
	 * upload) held by the mirror's repo, fetched from there and verified.
	 * Content of other repositories never satisfies it. */
	enum rs_code rc = r->fn(r->ctx, repo, manifest ? BLOBSTORE_MANIFEST : BLOBSTORE_BLOB, d->digest, err);
	if (rc == RS_NOT_FOUND)
		return rs_err_set(err, RS_NOT_FOUND, "%s %s (%s) is unknown to this registry; push it first",
		                  manifest ? "manifest" : "blob", d->digest, where);
	return rc;
}

/* The walk of a pushed manifest or index: its own fields, then every
 * reference (held by the repository); index entries are not loaded. */
struct put_walk {
	struct put_walk_refs refs;
	const char *repo, *ct; /* ct: the declared type, "" when none */
	bool generic;          /* ct says nothing about the document */
	const char *type;      /* out: the type it is stored with */
};

static enum rs_code put_manifest_fields(struct put_walk *w, const struct imagejson_manifest *m, struct rs_err *err)
{
	const char *mt = m->media_type, *ct = w->ct;
	enum rs_code rc = RS_OK;
	if (m->schema_version != 2)
		rc = rs_err_set(err, RS_BAD_INPUT, "manifest: schemaVersion is %d, expected 2", m->schema_version);
	else if (mt && !w->generic && strcmp(mt, ct) != 0)
		rc = rs_err_set(err, RS_BAD_INPUT, "Content-Type %s does not match the manifest's mediaType %.100s", ct, mt);
	else if (mt && strcmp(mt, IMAGE_MT_OCI_MANIFEST) != 0 && strcmp(mt, IMAGE_MT_DOCKER_MANIFEST) != 0)
		rc = rs_err_set(err, RS_BAD_INPUT, "unsupported manifest mediaType '%.100s'", mt);
	else if (m->layer_count > RS_LIMIT_IMAGE_LAYERS_MAX)
		rc = rs_err_set(err, RS_BAD_INPUT, "manifest has %zu layers, the limit is %u", m->layer_count,
		                (unsigned)RS_LIMIT_IMAGE_LAYERS_MAX);
	w->type = !w->generic ? ct
	          : mt && strcmp(mt, IMAGE_MT_DOCKER_MANIFEST) == 0 ? IMAGE_MT_DOCKER_MANIFEST
	                                                            : IMAGE_MT_OCI_MANIFEST;
	return rc;
}

static enum rs_code put_index_fields(struct put_walk *w, const struct imagejson_index *x, struct rs_err *err)
{
	const char *mt = x->media_type, *ct = w->ct;
	enum rs_code rc = RS_OK;
	if (x->schema_version != 2)
		rc = rs_err_set(err, RS_BAD_INPUT, "index: schemaVersion is %d, expected 2", x->schema_version);
	else if (mt && !w->generic && strcmp(mt, ct) != 0)
		rc = rs_err_set(err, RS_BAD_INPUT, "Content-Type %s does not match the index's mediaType %.100s", ct, mt);
	else if (mt && strcmp(mt, IMAGE_MT_OCI_INDEX) != 0 && strcmp(mt, IMAGE_MT_DOCKER_LIST) != 0)
		rc = rs_err_set(err, RS_BAD_INPUT, "unsupported index mediaType '%.100s'", mt);
	else if (x->manifest_count > RS_LIMIT_INDEX_MANIFESTS_MAX)
		rc = rs_err_set(err, RS_BAD_INPUT, "index has %zu manifests, the limit is %u", x->manifest_count,
		                (unsigned)RS_LIMIT_INDEX_MANIFESTS_MAX);
	w->type = !w->generic ? ct : mt && strcmp(mt, IMAGE_MT_DOCKER_LIST) == 0 ? IMAGE_MT_DOCKER_LIST
	                                                                          : IMAGE_MT_OCI_INDEX;
	return rc;
}

static enum rs_code put_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                              enum imagewalk_step *step, struct rs_err *err)
{
	struct put_walk *w = ctx;
	char where[32];
	if (ev == IMAGEWALK_ENTER)
		return n->kind == IMAGEWALK_MANIFEST ? put_manifest_fields(w, n->manifest, err)
		                                     : put_index_fields(w, n->index, err);
	if (ev != IMAGEWALK_REF)
		return RS_OK;
	switch (n->kind) {
	case IMAGEWALK_CONFIG:
		return check_ref(&w->refs, w->repo, n->desc, "config", false, err);
	case IMAGEWALK_LAYER:
		if (nondistributable(n->media_type))
			return RS_OK;
		snprintf(where, sizeof(where), "layers[%zu]", n->pos);
		return check_ref(&w->refs, w->repo, n->desc, where, false, err);
	default: /* an index entry: a manifest held by the repository, not walked */
		*step = IMAGEWALK_SKIP;
		snprintf(where, sizeof(where), "manifests[%zu]", n->pos);
		return check_ref(&w->refs, w->repo, n->desc, where, true, err);
	}
}

enum rs_code push_check_manifest(const struct rs_config *cfg, const char *repo, const char *ref,
                                 const char *content_type, const char *body, size_t len, push_ref_fn ref_fn,
                                 void *ref_ctx, struct push_checked *out, struct rs_err *err)
{
	if (len > cfg->manifest_max_bytes)
		return rs_err_set(err, RS_TOO_LARGE, "manifest is %zu bytes, the limit is %llu (limits.manifest_max_bytes)",
		                  len, (unsigned long long)cfg->manifest_max_bytes);
	/* The declared type: Content-Type without parameters. */
	char ct[128] = "";
	if (content_type) {
		size_t n = strcspn(content_type, ";");
		while (n > 0 && (content_type[n - 1] == ' ' || content_type[n - 1] == '\t'))
			n--;
		if (n >= sizeof(ct))
			return rs_err_set(err, RS_BAD_INPUT, "unsupported manifest media type '%.80s'", content_type);
		memcpy(ct, content_type, n);
		ct[n] = '\0';
	}
	bool generic = !ct[0] || strcasecmp(ct, "application/json") == 0 ||
	               strcasecmp(ct, "application/octet-stream") == 0;
	if (!generic && !is_known_type(ct))
		return rs_err_set(err, RS_BAD_INPUT,
		                  "unsupported manifest media type '%s' (accepted: OCI and Docker v2 manifests and indexes)", ct);
	enum imagejson_kind kind;
	enum rs_code rc = imagejson_sniff(&kind, body, len, "manifest", err);
	if (rc)
		return rc;
	if (!generic && is_index_type(ct) != (kind == IMAGEJSON_INDEX))
		return rs_err_set(err, RS_BAD_INPUT, "Content-Type %s does not match the document, which is an %s", ct,
		                  kind == IMAGEJSON_INDEX ? "index" : "image manifest");
	digest_buffer(out->digest, body, len);
	if (strchr(ref, ':')) {
		if ((rc = digest_parse(ref, err)))
			return rc;
		if (strcmp(ref, out->digest) != 0)
			return rs_err_set(err, RS_DIGEST_MISMATCH, "manifest body hashes to %s, not %s", out->digest, ref);
	} else if (!refname_tag_valid(ref)) {
		return rs_err_set(err, RS_BAD_INPUT, "invalid tag '%.130s'", ref);
	}
	struct put_walk w = {.refs = {ref_fn, ref_ctx}, .repo = repo, .ct = ct, .generic = generic};
	const struct imagewalk walk = {.visit = put_visit, .ctx = &w, .manifest_what = "manifest",
	                               .index_what = "index"};
	rc = imagewalk_bytes(&walk, NULL, body, len, NULL, err);
	if (rc)
		return rc;
	snprintf(out->type, sizeof(out->type), "%s", w.type);
	/* A subject need not exist (distribution-spec, "Pushing Manifests with
	 * Subject"); its digest must be valid. */
	return refindex_subject_of(out->subject, body, len, err);
}

static enum rs_code take_ref(void *ctx, const char *repo, enum blobstore_kind kind, const char *digest,
                             struct rs_err *err)
{
	return take(ctx, repo, repo, kind, digest, err);
}

static enum rs_code put_manifest(struct push *p, const char *repo, const char *ref, const char *content_type,
                                 const char *body, size_t len, char out_digest[DIGEST_STR_SIZE], struct rs_err *err)
{
	struct push_checked c;
	enum rs_code rc = push_check_manifest(p->cfg, repo, ref, content_type, body, len, take_ref, p, &c, err);
	if (rc)
		return rc;
	const char *digest = c.digest, *type = c.type, *subject = c.subject;
	gc_note(p, digest);
	if ((rc = blobstore_put_manifest(p->store, digest, type, body, len, err)))
		return rc;
	if ((rc = blobstore_link(p->store, PUSH_TAG_NS, repo, BLOBSTORE_MANIFEST, digest, err)))
		return rc;
	if (subject[0] && (rc = refindex_add(p->cfg->data_dir, repo, subject, digest, err)))
		return rc;
	if (!strchr(ref, ':')) {
		struct blobstore_tag tag = {0};
		snprintf(tag.digest, sizeof(tag.digest), "%s", digest);
		snprintf(tag.media_type, sizeof(tag.media_type), "%s", type);
		tag.fetched = time(NULL);
		if ((rc = blobstore_put_tag(p->store, PUSH_TAG_NS, repo, ref, &tag, err)))
			return rc;
	}
	memcpy(out_digest, digest, DIGEST_STR_SIZE);
	return RS_OK;
}

enum rs_code push_put_manifest(struct push *p, const char *repo, const char *ref, const char *content_type,
                               const char *body, size_t len, char out_digest[DIGEST_STR_SIZE], struct rs_err *err)
{
	pthread_rwlock_rdlock(&p->put_lock);
	enum rs_code rc = put_manifest(p, repo, ref, content_type, body, len, out_digest, err);
	pthread_rwlock_unlock(&p->put_lock);
	return rc;
}

enum rs_code push_get_tag(struct push *p, const char *repo, const char *tag, struct blobstore_tag *out,
                          struct rs_err *err)
{
	enum rs_code rc = blobstore_get_tag(p->store, PUSH_TAG_NS, repo, tag, out, err);
	if (rc)
		return rc;
	if (!blobstore_has(p->store, BLOBSTORE_MANIFEST, out->digest))
		return rs_err_set(err, RS_NOT_FOUND, "pushed tag %.100s:%.100s points at a missing manifest %s", repo, tag,
		                  out->digest);
	return RS_OK;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

enum rs_code push_list_tags(struct push *p, const char *repo, char **out, size_t *out_len, struct rs_err *err)
{
	*out = NULL;
	char dir[PATH_CAP];
	if (!refname_repo_valid(repo) ||
	    snprintf(dir, sizeof(dir), "%s/push/tags/" PUSH_TAG_NS "/%s/_tags", p->cfg->data_dir, repo) >= (int)sizeof(dir))
		return rs_err_set(err, RS_NOT_FOUND, "nothing pushed to %.200s", repo);
	DIR *d = opendir(dir);
	if (!d && !blobstore_repo_linked(p->store, PUSH_TAG_NS, repo))
		return rs_err_set(err, RS_NOT_FOUND, "nothing pushed to %.200s", repo);
	char **tags = NULL;
	size_t n = 0, cap = 0;
	enum rs_code rc = RS_OK;
	struct dirent *de;
	while (d && (de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		if (l <= 5 || strcmp(de->d_name + l - 5, ".json") != 0)
			continue;
		char tag[RS_LIMIT_TAG_MAX + 1];
		if (l - 5 > RS_LIMIT_TAG_MAX)
			continue;
		memcpy(tag, de->d_name, l - 5);
		tag[l - 5] = '\0';
		if (!refname_tag_valid(tag))
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 32;
			char **nt = realloc(tags, nc * sizeof(*nt));
			if (!nt) {
				rc = rs_err_set(err, RS_NOMEM, "out of memory listing tags");
				break;
			}
			tags = nt;
			cap = nc;
		}
		if (!(tags[n] = strdup(tag))) {
			rc = rs_err_set(err, RS_NOMEM, "out of memory listing tags");
			break;
		}
		n++;
	}
	if (d)
		closedir(d);
	/* every tag deleted (or none ever pushed): found while repo still
	 * holds something */
	if (rc == RS_OK && n == 0 && !blobstore_repo_linked(p->store, PUSH_TAG_NS, repo))
		rc = rs_err_set(err, RS_NOT_FOUND, "nothing pushed to %.200s", repo);
	if (rc == RS_OK) {
		if (n)
			qsort(tags, n, sizeof(*tags), cmp_str);
		size_t sz = strlen(repo) + 32 + n * (RS_LIMIT_TAG_MAX + 4);
		char *buf = malloc(sz);
		if (!buf) {
			rc = rs_err_set(err, RS_NOMEM, "out of memory listing tags");
		} else {
			/* names and tags come from their grammars: no JSON escaping needed */
			size_t o = (size_t)snprintf(buf, sz, "{\"name\":\"%s\",\"tags\":[", repo);
			for (size_t i = 0; i < n; i++)
				o += (size_t)snprintf(buf + o, sz - o, "%s\"%s\"", i ? "," : "", tags[i]);
			o += (size_t)snprintf(buf + o, sz - o, "]}\n");
			*out = buf;
			*out_len = o;
		}
	}
	for (size_t i = 0; i < n; i++)
		free(tags[i]);
	free(tags);
	return rc;
}

/* ------------------------------------------------------------ deletes */

/* Remove every tag of repo that points at digest; the count. */
static unsigned untag(struct push *p, const char *repo, const char *digest)
{
	char dir[PATH_CAP];
	if (snprintf(dir, sizeof(dir), "%s/push/tags/" PUSH_TAG_NS "/%s/_tags", p->cfg->data_dir, repo) >=
	    (int)sizeof(dir))
		return 0;
	DIR *d = opendir(dir);
	if (!d)
		return 0;
	unsigned n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		char tag[RS_LIMIT_TAG_MAX + 1];
		if (l <= 5 || l - 5 > RS_LIMIT_TAG_MAX || strcmp(de->d_name + l - 5, ".json") != 0)
			continue;
		memcpy(tag, de->d_name, l - 5);
		tag[l - 5] = '\0';
		struct blobstore_tag t;
		struct rs_err e = {0};
		if (!refname_tag_valid(tag) || blobstore_get_tag(p->store, PUSH_TAG_NS, repo, tag, &t, &e) != RS_OK ||
		    strcmp(t.digest, digest) != 0)
			continue;
		if (blobstore_remove_tag(p->store, PUSH_TAG_NS, repo, tag, &e) == RS_OK)
			n++;
		else
			log_event(LOG_WARN, "deleting %s@%s: tag %s stays: %s", repo, digest, tag, e.msg);
	}
	closedir(d);
	return n;
}

enum rs_code push_delete_manifest(struct push *p, const char *repo, const char *digest, unsigned *out_tags,
                                  struct rs_err *err)
{
	if (out_tags)
		*out_tags = 0;
	enum rs_code rc = digest_parse(digest, err);
	if (rc)
		return rc;
	if (!refname_repo_valid(repo) || !blobstore_linked(p->store, PUSH_TAG_NS, repo, BLOBSTORE_MANIFEST, digest))
		return rs_err_set(err, RS_NOT_FOUND, "manifest %s is unknown to repository %.200s", digest, repo);
	/* the tags first: a tag is served without a look at the link */
	unsigned tags = untag(p, repo, digest);
	char subject[DIGEST_STR_SIZE] = "";
	char *buf = NULL, *type = NULL;
	size_t len = 0;
	struct rs_err e = {0};
	if (blobstore_peek_manifest(p->store, digest, p->cfg->manifest_max_bytes, &buf, &len, &type, &e) == RS_OK &&
	    refindex_subject_of(subject, buf, len, &e) != RS_OK)
		subject[0] = '\0'; /* checked at its push: not reached */
	free(buf);
	free(type);
	blobstore_unlink(p->store, PUSH_TAG_NS, repo, BLOBSTORE_MANIFEST, digest);
	if (subject[0])
		refindex_remove(p->cfg->data_dir, repo, subject, digest);
	if (out_tags)
		*out_tags = tags;
	return RS_OK;
}

enum rs_code push_delete_tag(struct push *p, const char *repo, const char *tag, struct rs_err *err)
{
	if (!refname_repo_valid(repo) || !refname_tag_valid(tag))
		return rs_err_set(err, RS_NOT_FOUND, "no tag '%.130s' in repository %.200s", tag, repo);
	enum rs_code rc = blobstore_remove_tag(p->store, PUSH_TAG_NS, repo, tag, err);
	if (rc == RS_NOT_FOUND)
		return rs_err_set(err, RS_NOT_FOUND, "no tag %s in repository %.200s", tag, repo);
	return rc;
}

enum rs_code push_delete_blob(struct push *p, const char *repo, const char *digest, struct rs_err *err)
{
	enum rs_code rc = digest_parse(digest, err);
	if (rc)
		return rc;
	if (!refname_repo_valid(repo) || !blobstore_linked(p->store, PUSH_TAG_NS, repo, BLOBSTORE_BLOB, digest))
		return rs_err_set(err, RS_NOT_FOUND, "blob %s is unknown to repository %.200s", digest, repo);
	blobstore_unlink(p->store, PUSH_TAG_NS, repo, BLOBSTORE_BLOB, digest);
	return RS_OK;
}

/* ------------------------------------------------------------ garbage collection */

/* The digests a sweep keeps (sorted once the marking is done). */
struct mark {
	struct push *p;
	char (*v)[DIGEST_STR_SIZE];
	size_t n, cap;
	unsigned roots;
	enum rs_code rc; /* the first failure: nothing is removed */
	struct rs_err *err;
};

static void mark_add(struct mark *m, const char *digest)
{
	if (m->rc || !digest || !digest_valid(digest))
		return;
	if (m->n == m->cap) {
		size_t nc = m->cap ? m->cap * 2 : 256;
		char(*nv)[DIGEST_STR_SIZE] = realloc(m->v, nc * sizeof(*nv));
		if (!nv) {
			m->rc = rs_err_set(m->err, RS_NOMEM, "out of memory marking %zu objects", m->n);
			return;
		}
		m->v = nv;
		m->cap = nc;
	}
	snprintf(m->v[m->n++], DIGEST_STR_SIZE, "%s", digest);
}

static enum rs_code mark_load(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len, char **type,
                              struct rs_err *err)
{
	const struct mark *m = ctx;
	return blobstore_peek_manifest(m->p->store, n->digest, RS_LIMIT_MANIFEST_MAX_BYTES, buf, len, type, err);
}

/* Everything a linked manifest references: config and layers, the entries
 * of an index and what they reference (walked, best effort: an entry that
 * is gone keeps nothing). */
static enum rs_code mark_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                               enum imagewalk_step *step, struct rs_err *err)
{
	(void)err;
	struct mark *m = ctx;
	if (ev != IMAGEWALK_REF)
		return RS_OK;
	mark_add(m, n->digest);
	if (n->kind == IMAGEWALK_ENTRY)
		*step = n->digest && digest_valid(n->digest) && blobstore_has(m->p->store, BLOBSTORE_MANIFEST, n->digest)
		                ? IMAGEWALK_BEST_EFFORT
		                : IMAGEWALK_SKIP;
	return m->rc;
}

static bool mark_root(void *ctx, const char *repo, const char *digest)
{
	(void)repo;
	struct mark *m = ctx;
	m->roots++;
	mark_add(m, digest);
	if (m->rc)
		return false;
	struct rs_err e = {0};
	const struct imagewalk walk = {.load = mark_load, .visit = mark_visit, .ctx = m};
	enum rs_code rc = imagewalk_run(&walk, digest, &e);
	if (rc != RS_OK && rc != RS_NOT_FOUND && m->rc == RS_OK) /* gone: it keeps nothing */
		m->rc = rs_err_set(m->err, rc, "reading pushed manifest %s of %.200s: %s", digest, repo, e.msg);
	return m->rc == RS_OK;
}

static int cmp_digest(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

static bool gc_touched(const struct push *p, const char *digest)
{
	for (size_t i = 0; i < p->ntouched; i++)
		if (strcmp(p->touched[i], digest) == 0)
			return true;
	return false;
}

/* Sort the marks and drop duplicates, for bsearch. */
static void mark_sort(struct mark *m)
{
	if (!m->n)
		return;
	qsort(m->v, m->n, sizeof(*m->v), cmp_digest);
	size_t k = 0;
	for (size_t i = 0; i < m->n; i++)
		if (k == 0 || strcmp(m->v[k - 1], m->v[i]) != 0)
			memmove(m->v[k++], m->v[i], DIGEST_STR_SIZE);
	m->n = k;
}

/* Remove the unmarked objects of kind that are idle; false when the sweep
 * must stop (a push's note was lost, or a kept manifest could not be read).
 * A manifest kept (used within the grace period, or taken by a push) keeps
 * what it references too: its walk goes into kept (NULL for blobs). */
static bool sweep_kind(struct push *p, enum blobstore_kind kind, const struct mark *m, struct mark *kept, time_t now,
                       unsigned grace_s, struct push_gc_stats *st, struct rs_err *err)
{
	char(*objs)[DIGEST_STR_SIZE] = NULL;
	size_t n = 0;
	if (blobstore_objects(p->store, kind, &objs, &n, err) != RS_OK)
		return false;
	bool go_on = true;
	for (size_t i = 0; i < n && go_on; i++) {
		if (m->n && bsearch(objs[i], m->v, m->n, sizeof(*m->v), cmp_digest))
			continue;
		uint64_t size = 0;
		bool keep = false;
		pthread_mutex_lock(&p->gc_mu);
		if (p->touched_lost) {
			go_on = false;
			rs_err_set(err, RS_NOMEM, "out of memory noting what pushes took during the sweep; the sweep stopped");
		} else if (gc_touched(p, objs[i])) {
			st->raced++;
			keep = true;
		} else if (blobstore_remove_idle(p->store, kind, objs[i], now - (time_t)grace_s, now, &size)) {
			st->bytes_removed += size;
			if (kind == BLOBSTORE_BLOB)
				st->blobs_removed++;
			else
				st->manifests_removed++;
		} else {
			st->young++;
			keep = true;
		}
		pthread_mutex_unlock(&p->gc_mu);
		if (keep && kept && !mark_root(kept, "(no repository)", objs[i]))
			go_on = false; /* kept->rc and err say why */
	}
	free(objs);
	return go_on;
}

void push_set_gc_hook(struct push *p, void (*fn)(void *ctx), void *ctx)
{
	p->gc_hook = fn;
	p->gc_hook_ctx = ctx;
}

enum rs_code push_gc(struct push *p, time_t now, unsigned grace_s, struct push_gc_stats *out, struct rs_err *err)
{
	memset(out, 0, sizeof(*out));
	/* Wait for the manifest pushes under way: their links are read below. */
	pthread_rwlock_wrlock(&p->put_lock);
	pthread_mutex_lock(&p->gc_mu);
	p->gc_running = true;
	p->ntouched = 0;
	p->touched_lost = false;
	pthread_mutex_unlock(&p->gc_mu);
	pthread_rwlock_unlock(&p->put_lock);

	struct mark m = {.p = p, .err = err};
	enum rs_code rc = blobstore_each_link(p->store, PUSH_TAG_NS, BLOBSTORE_MANIFEST, mark_root, &m, err);
	if (rc == RS_OK)
		rc = m.rc;
	out->roots = m.roots;
	struct mark kept = {.p = p, .err = err};
	if (rc == RS_OK) {
		mark_sort(&m);
		out->marked = (unsigned)m.n;
		if (p->gc_hook)
			p->gc_hook(p->gc_hook_ctx);
		/* manifests first; what the ones kept reference is kept with them */
		if (!sweep_kind(p, BLOBSTORE_MANIFEST, &m, &kept, now, grace_s, out, err))
			rc = err->code ? err->code : RS_NOMEM;
	}
	for (size_t i = 0; rc == RS_OK && i < kept.n; i++) {
		mark_add(&m, kept.v[i]);
		rc = m.rc;
	}
	if (rc == RS_OK) {
		mark_sort(&m);
		if (!sweep_kind(p, BLOBSTORE_BLOB, &m, NULL, now, grace_s, out, err))
			rc = err->code ? err->code : RS_NOMEM;
	}
	free(kept.v);
	free(m.v);
	pthread_mutex_lock(&p->gc_mu);
	p->gc_running = false;
	p->ntouched = 0;
	pthread_mutex_unlock(&p->gc_mu);
	return rc;
}
