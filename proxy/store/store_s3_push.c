/* store_s3_push: the push side of the "s3" storage driver (store_s3.h):
 * upload sessions and pushed images (STORE_PUSHED).
 *
 * Upload sessions come in two kinds. With a cluster whose Redis answers
 * (store_set_cluster), a session is shared by every replica: its state is
 * cluster.h's upload hash (repository, size, owner; expiring after
 * push.upload_idle_timeout_s idle) and its bytes are parts in the bucket,
 * P uploads/<uuid>/<offset, 20 digits>. A request spools its chunk locally;
 * store_upload_save (before the 202) claims offset..offset+n with the
 * compare-and-advance, so two replicas never append at one offset (the loser
 * answers 416), then PUTs the part (a failed PUT gives the claim back). The
 * commit claims its own bytes, streams every part in order and then its
 * spool through s3_writer (memory: one copy buffer and the writer's part
 * spool), and removes parts and state whatever the digest says. The sweep
 * removes the parts of sessions Redis no longer knows. Without Redis (no
 * cluster, or degraded when the session starts), a session is this
 * replica's own, on its local disk: <data>/s3-uploads/<uuid>.repo and
 * <uuid>.data, as the fs driver does; it survives a restart of this
 * replica, not a move to another one, and other replicas answer 404 for it.
 * Either way the blob appears in the bucket only when its digest matches; a
 * mismatch removes the upload and leaves nothing in the bucket.
 *
 * Pushed images are objects, tags, links and a referrers index under
 * P push/ (key layout in store_s3.c). The checks of a manifest PUT are
 * push.c's (push_check_manifest), with references taken from the pushed
 * area or, through the fetcher, from the mirror's cache area (copied into
 * push/ and verified on the way). Deletes and the garbage collection are
 * store_s3_gc.c's. No HTTP, no upstream; Redis only through cluster.h. */
#include "store_s3.h"

#include "blobstore.h"
#include "cluster.h"
#include "fsutil.h"
#include "log.h"
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
	/* a session shared through the cluster: state in Redis, parts in the bucket */
	bool shared;
	uint64_t saved; /* the bytes the cluster has: this request's part goes at this offset */
	int spool;      /* this request's bytes not saved yet (an unlinked file in tmp/), or -1 */
	uint64_t spooled;
};

/* ------------------------------------------------------------ uploads */

void s3s_set_cluster(void *impl, struct cluster *c)
{
	((struct s3s *)impl)->cluster = c;
	s3s_lru_start(impl, c); /* eviction's bookkeeping (store_s3.c) */
}

/* Redis answers: new sessions are shared. */
static bool sharing(struct s3s *s)
{
	return s->cluster && cluster_mode(s->cluster, NULL, 0) == CLUSTER_UP;
}

static unsigned idle_ttl(const struct s3s *s)
{
	unsigned t = s->cfg->push.upload_idle_timeout_s;
	return t ? t : 1;
}

/* P uploads/<uuid>/, and the key of the part at offset off (20 digits: keys sort as offsets do). */
static enum rs_code parts_prefix(char key[S3S_KEY_MAX], struct s3s *s, const char *uuid, struct rs_err *err)
{
	return s3s_key(key, s, err, "uploads/%s/", uuid);
}

static enum rs_code part_key(char key[S3S_KEY_MAX], struct s3s *s, const char *uuid, uint64_t off,
                             struct rs_err *err)
{
	return s3s_key(key, s, err, "uploads/%s/%020llu", uuid, (unsigned long long)off);
}

/* Remove every part of uuid; the number removed. */
static unsigned parts_remove(struct s3s *s, const char *uuid)
{
	char key[S3S_KEY_MAX], pk[S3S_KEY_MAX];
	struct rs_err err = {0};
	struct s3s_names ns = {0};
	unsigned n = 0;
	if (parts_prefix(key, s, uuid, &err) == RS_OK && s3s_list_names(s, key, &ns, &err) == RS_OK)
		for (size_t i = 0; i < ns.n; i++)
			if (s3s_key(pk, s, &err, "uploads/%s/%s", uuid, ns.v[i]) == RS_OK) {
				s3s_delete_quiet(s, pk); /* best effort: what stays is swept */
				n++;
			}
	s3s_names_free(&ns);
	return n;
}

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

/* A session shared through Redis: its hash, no local file. RS_IO when Redis failed just now. */
static enum rs_code shared_start(struct s3s *s, const char *repo, char out[STORE_UUID_SIZE], struct rs_err *err)
{
	enum rs_code rc = store_local_uuid_new(out, err);
	if (rc)
		return rc;
	struct cluster_upload cu = {0};
	snprintf(cu.repository, sizeof(cu.repository), "%s", repo);
	snprintf(cu.owner, sizeof(cu.owner), "%s", cluster_replica_id(s->cluster));
	return cluster_upload_put(s->cluster, out, &cu, idle_ttl(s), err);
}

enum rs_code s3s_upload_start(void *impl, const char *repo, char out[STORE_UUID_SIZE], struct rs_err *err)
{
	struct s3s *s = impl;
	if (!refname_repo_valid(repo))
		return rs_err_set(err, RS_BAD_INPUT, "invalid repository name '%.100s'", repo);
	if (sharing(s)) {
		struct rs_err serr = {0};
		enum rs_code rc = shared_start(s, repo, out, &serr);
		if (rc != RS_IO) {
			if (rc)
				*err = serr;
			return rc;
		}
		/* Redis failed just now: this replica's own session, as without a cluster */
	}
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
	if (u->spool >= 0)
		close(u->spool);
	if (remove && u->shared) {
		struct rs_err err = {0};
		(void)parts_remove(u->s, u->uuid);
		if (cluster_upload_del(u->s->cluster, u->uuid, &err) != RS_OK)
			log_event(LOG_WARN, "upload %s: its state stays in Redis until it expires: %s", u->uuid, err.msg);
	} else if (remove) {
		(void)unlink(u->data); /* gone already is fine */
		(void)unlink(u->repo_file);
	}
	set_busy(u->s, u->uuid, false);
	free(u);
}

/* uuid is not on this replica's disk: is it a session shared through Redis? */
static enum rs_code shared_open(struct s3s_upload *u, struct rs_err *err)
{
	struct s3s *s = u->s;
	if (!s->cluster)
		return rs_err_set(err, RS_NOT_FOUND, "unknown upload %s for repository %.200s", u->uuid, u->repo);
	struct cluster_upload cu;
	struct rs_err cerr = {0};
	enum rs_code rc = cluster_upload_get(&cu, s->cluster, u->uuid, &cerr);
	if (rc == RS_IO)
		return rs_err_set(err, RS_NOT_FOUND,
		                  "unknown upload %s: this replica does not hold it, and Redis, which shares upload sessions "
		                  "between replicas, does not answer (%.200s)",
		                  u->uuid, cerr.msg);
	if (rc == RS_NOMEM)
		return rs_err_set(err, RS_NOMEM, "out of memory opening upload %s", u->uuid);
	if (rc || strcmp(cu.repository, u->repo) != 0)
		return rs_err_set(err, RS_NOT_FOUND,
		                  "unknown upload %s for repository %.200s (never started, finished, cancelled or idle "
		                  "past push.upload_idle_timeout_s)",
		                  u->uuid, u->repo);
	u->shared = true;
	u->saved = u->size = cu.size;
	return RS_OK;
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
	u->spool = -1;
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
	enum rs_code rc = RS_OK;
	if (fsutil_read_into(rf, sizeof(rf), &len, u->repo_file, NULL) != RS_OK)
		rc = shared_open(u, err); /* not on this replica's disk */
	else if (strcmp(rf, repo) != 0 || (u->fd = open(u->data, O_RDWR | O_CLOEXEC)) < 0 || fstat(u->fd, &st) != 0)
		rc = rs_err_set(err, RS_NOT_FOUND, "unknown upload %s for repository %.200s", uuid, repo);
	if (rc) {
		release(u, false);
		return rc;
	}
	if (!u->shared) {
		u->size = (uint64_t)st.st_size;
		(void)futimens(u->fd, NULL); /* activity for the idle sweep; failure only shortens its life */
	}
	*out = &u->base;
	return RS_OK;
}

uint64_t s3s_upload_size(const struct store_upload *base)
{
	return ((const struct s3s_upload *)base)->size;
}

/* A shared session's bytes of this request, into its spool (made at the first write). */
static enum rs_code spool_write(struct s3s_upload *u, const void *buf, size_t len, struct rs_err *err)
{
	if (u->spool < 0) {
		char p[S3S_PATH_MAX + 64];
		snprintf(p, sizeof(p), "%s/upload-XXXXXX", u->s->tmp);
		if ((u->spool = mkostemp(p, O_CLOEXEC)) < 0)
			return rs_err_set(err, RS_IO, "create %s: %s", p, strerror(errno));
		(void)unlink(p); /* the descriptor is all it needs; a crash leaves nothing */
	}
	enum rs_code rc = fsutil_pwrite_all(u->spool, buf, len, u->spooled, "the upload's spool", err);
	if (rc == RS_OK)
		u->spooled += len;
	return rc;
}

enum rs_code s3s_upload_write(struct store_upload *base, const void *buf, size_t len, struct rs_err *err)
{
	struct s3s_upload *u = (struct s3s_upload *)base;
	uint64_t max = u->s->cfg->push.max_blob_bytes;
	if (len > max || u->size > max - len)
		return rs_err_set(err, RS_TOO_LARGE, "blob upload would be %llu bytes, the limit is %llu (push.max_blob_bytes)",
		                  (unsigned long long)(u->size + len), (unsigned long long)max);
	if (u->shared) {
		enum rs_code rc = spool_write(u, buf, len, err);
		u->size = u->saved + u->spooled;
		return rc;
	}
	enum rs_code rc = fsutil_pwrite_all(u->fd, buf, len, u->size, u->data, err);
	struct stat st;
	if (rc)
		u->size = fstat(u->fd, &st) == 0 ? (uint64_t)st.st_size : u->size; /* part of it may be there */
	else
		u->size += len;
	return rc;
}

/* Forget the bytes of this request not saved. */
static void spool_drop(struct s3s_upload *u)
{
	if (u->spool >= 0 && ftruncate(u->spool, 0) != 0)
		log_event(LOG_DEBUG, "upload %s: truncating its spool: %s", u->uuid, strerror(errno));
	u->spooled = 0;
	u->size = u->saved;
}

/* Claim saved..saved+spooled in Redis (compare-and-advance: only from where
 * the session stands). RS_RANGE when another request got there first. */
static enum rs_code claim(struct s3s_upload *u, struct rs_err *err)
{
	uint64_t to = u->saved + u->spooled;
	enum rs_code rc = cluster_upload_advance(u->s->cluster, u->uuid, u->saved, to, idle_ttl(u->s), err);
	if (rc == RS_RANGE)
		rs_err_prefix(err, "another request appended to upload %s meanwhile (these %llu bytes are dropped): ",
		              u->uuid, (unsigned long long)u->spooled);
	else if (rc == RS_NOT_FOUND)
		rs_err_set(err, RS_NOT_FOUND,
		           "unknown upload %s (finished, cancelled or idle past push.upload_idle_timeout_s)", u->uuid);
	else if (rc == RS_IO)
		rs_err_set(err, RS_UNAVAILABLE, "upload %s is shared through Redis, which does not answer now: %.300s",
		           u->uuid, err->msg);
	return rc == RS_IO ? RS_UNAVAILABLE : rc;
}

/* Give back a claim that stored nothing. */
static void unclaim(struct s3s_upload *u)
{
	struct rs_err err = {0};
	if (u->spooled &&
	    cluster_upload_advance(u->s->cluster, u->uuid, u->saved + u->spooled, u->saved, idle_ttl(u->s), &err) != RS_OK)
		log_event(LOG_WARN, "upload %s: could not give back bytes %llu-%llu: %s", u->uuid,
		          (unsigned long long)u->saved, (unsigned long long)(u->saved + u->spooled), err.msg);
}

enum rs_code s3s_upload_save(struct store_upload *base, struct rs_err *err)
{
	struct s3s_upload *u = (struct s3s_upload *)base;
	if (!u->shared)
		return RS_OK;
	enum rs_code rc = claim(u, err);
	if (rc) {
		spool_drop(u);
		return rc;
	}
	char key[S3S_KEY_MAX];
	if (u->spooled && ((rc = part_key(key, u->s, u->uuid, u->saved, err)) ||
	                   (rc = s3_put_fd(u->s->c, key, u->spool, u->spooled, err)))) {
		unclaim(u);
		spool_drop(u);
		return rc;
	}
	u->saved += u->spooled;
	spool_drop(u);
	return RS_OK;
}

/* Counts what the parts add to the writer. */
struct part_sink {
	struct s3_writer *w;
	uint64_t n;
};

static enum rs_code part_add(void *arg, const void *buf, size_t len, struct rs_err *err)
{
	struct part_sink *k = arg;
	k->n += len;
	return s3_writer_write(k->w, buf, len, err);
}

/* This request's spooled bytes through w. */
static enum rs_code stream_spool(struct s3s_upload *u, struct s3_writer *w, struct rs_err *err)
{
	if (!u->spooled)
		return RS_OK;
	char *buf = malloc(COPY_BUF);
	if (!buf)
		return rs_err_set(err, RS_NOMEM, "out of memory committing upload %s", u->uuid);
	enum rs_code rc = RS_OK;
	for (uint64_t off = 0; rc == RS_OK && off < u->spooled;) {
		size_t want = u->spooled - off < COPY_BUF ? (size_t)(u->spooled - off) : COPY_BUF;
		ssize_t n = pread(u->spool, buf, want, (off_t)off);
		if (n <= 0) {
			rc = rs_err_set(err, RS_IO, "reading the spool of upload %s: %s", u->uuid,
			                n < 0 ? strerror(errno) : "short");
			break;
		}
		rc = s3_writer_write(w, buf, (size_t)n, err);
		off += (uint64_t)n;
	}
	free(buf);
	return rc;
}

/* Every part of a shared session in order, then this request's bytes, through w. */
static enum rs_code stream_parts(struct s3s_upload *u, struct s3_writer *w, struct rs_err *err)
{
	struct s3s *s = u->s;
	char key[S3S_KEY_MAX];
	struct s3s_names ns = {0};
	enum rs_code rc = parts_prefix(key, s, u->uuid, err);
	if (rc == RS_OK)
		rc = s3s_list_names(s, key, &ns, err);
	struct part_sink k = {.w = w};
	for (size_t i = 0; rc == RS_OK && i < ns.n && k.n < u->saved; i++) {
		char *end = NULL;
		unsigned long long off = strtoull(ns.v[i], &end, 10);
		if (!end || *end || off != k.n) {
			rc = rs_err_set(err, RS_IO, "upload %s: the part at byte %llu is missing from the bucket", u->uuid,
			                (unsigned long long)k.n);
			break;
		}
		if ((rc = part_key(key, s, u->uuid, off, err)) == RS_OK)
			rc = s3_get(s->c, key, -1, -1, part_add, &k, NULL, err);
	}
	s3s_names_free(&ns);
	if (rc == RS_OK && k.n != u->saved)
		rc = rs_err_set(err, RS_IO, "upload %s: its parts in the bucket hold %llu of its %llu bytes", u->uuid,
		                (unsigned long long)k.n, (unsigned long long)u->saved);
	return rc ? rc : stream_spool(u, w, err);
}

/* The commit of a shared session: this request's bytes are claimed (no
 * other request can append now), every part streams through the verified
 * writer; a failure of the bucket or Redis gives the claim back and keeps
 * the session as it was. */
static enum rs_code shared_commit(struct s3s_upload *u, const char *digest, struct rs_err *err)
{
	enum rs_code rc = claim(u, err);
	if (rc) {
		spool_drop(u);
		return rc;
	}
	char key[S3S_KEY_MAX];
	s3s_object_key(key, u->s, STORE_PUSHED, STORE_BLOB, digest);
	struct s3_writer *w = NULL;
	if ((rc = s3_writer_new(&w, u->s->c, key, digest, -1, err)) == RS_OK && (rc = stream_parts(u, w, err)) == RS_OK)
		rc = s3_writer_commit(w, err);
	s3_writer_free(w);
	if (rc != RS_OK && rc != RS_DIGEST_MISMATCH && rc != RS_BAD_INPUT) {
		unclaim(u);
		spool_drop(u);
	}
	return rc;
}

enum rs_code s3s_push_link(struct s3s *s, const char *repo, enum store_kind kind, const char *digest,
                           struct rs_err *err)
{
	char key[S3S_KEY_MAX];
	enum rs_code rc = s3s_key(key, s, err, "push/links/%s/_%s/%s", repo, kind == STORE_BLOB ? "blobs" : "manifests",
	                          digest_hex(digest));
	return rc ? rc : s3s_mark(s, key, err);
}

/* A local session's bytes hash to digest (already pushed: nothing is written). */
static enum rs_code verify_local(struct s3s_upload *u, const char *digest, struct rs_err *err)
{
	enum rs_code rc = RS_OK;
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
	return rc;
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
	if (u->shared)
		rc = shared_commit(u, digest, err);
	else if (!s3s_has(u->s, STORE_PUSHED, STORE_BLOB, digest) || u->size == 0)
		rc = s3s_put_verified_fd(u->s, STORE_PUSHED, STORE_BLOB, digest, u->fd, u->size, err);
	else
		rc = verify_local(u, digest, err); /* already pushed: the bytes must still hash to it */
	if (rc == RS_DIGEST_MISMATCH || rc == RS_BAD_INPUT)
		rs_err_prefix(err, "the %llu uploaded bytes do not match (upload removed): ", (unsigned long long)u->size);
	/* the blob is this repository's from now on (and only this one's) */
	if (rc == RS_OK)
		rc = s3s_push_link(u->s, u->repo, STORE_BLOB, digest, err);
	if (rc == RS_BAD_INPUT) /* s3_writer's wrong size is a mismatch of the upload */
		rc = err->code = RS_DIGEST_MISMATCH;
	release(u, rc == RS_OK || rc == RS_DIGEST_MISMATCH);
	return rc;
}

void s3s_upload_close(struct store_upload *base)
{
	struct s3s_upload *u = (struct s3s_upload *)base;
	struct rs_err err = {0};
	if (u->shared && u->spooled && s3s_upload_save(base, &err) != RS_OK) /* kept, as a local session keeps them */
		log_event(LOG_DEBUG, "upload %s: the bytes of an unfinished request are not kept: %s", u->uuid, err.msg);
	release(u, false);
}

void s3s_upload_cancel(struct store_upload *base)
{
	release((struct s3s_upload *)base, true);
}

/* The parts of shared sessions Redis no longer knows (idle past their
 * expiry, or a commit or cancel that could not remove them); only while
 * Redis answers. The number of sessions whose parts went. */
static unsigned sweep_parts(struct s3s *s)
{
	if (!sharing(s))
		return 0;
	char key[S3S_KEY_MAX];
	struct rs_err err = {0};
	struct s3s_names ns = {.below = true};
	if (s3s_key(key, s, &err, "uploads/") != RS_OK || s3s_list_names(s, key, &ns, &err) != RS_OK) {
		s3s_names_free(&ns);
		return 0;
	}
	unsigned removed = 0;
	char last[STORE_UUID_SIZE] = "";
	for (size_t i = 0; i < ns.n; i++) { /* "<uuid>/<offset>", sorted */
		char uuid[STORE_UUID_SIZE];
		snprintf(uuid, sizeof(uuid), "%.36s", ns.v[i]);
		if (!store_local_uuid_valid(uuid) || strcmp(uuid, last) == 0)
			continue;
		snprintf(last, sizeof(last), "%s", uuid);
		struct cluster_upload cu;
		if (cluster_upload_get(&cu, s->cluster, uuid, &err) == RS_NOT_FOUND && set_busy(s, uuid, true)) {
			if (parts_remove(s, uuid))
				removed++;
			set_busy(s, uuid, false);
		}
	}
	s3s_names_free(&ns);
	return removed;
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
	removed += sweep_parts(s);
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
	return rc ? rc : s3s_push_link(s, dst, kind, digest, err);
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
		rc = s3s_push_link(s, repo, STORE_MANIFEST, c.digest, err);
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

static enum rs_code add_name(void *arg, const char *key, int64_t size, struct rs_err *err)
{
	(void)size;
	struct s3s_names *ns = arg;
	const char *slash = strrchr(key, '/');
	const char *name = ns->below ? key + ns->plen : slash ? slash + 1 : key;
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

void s3s_names_free(struct s3s_names *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i]);
	free(ns->v);
	ns->v = NULL; /* n stays: callers count after freeing */
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

enum rs_code s3s_list_names(struct s3s *s, const char *prefix, struct s3s_names *ns, struct rs_err *err)
{
	char *token = NULL;
	enum rs_code rc;
	ns->plen = strlen(prefix);
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
	struct s3s_names ns = {0};
	enum rs_code rc = s3s_key(key, s, err, "push/tags/%s/_tags/", repo);
	if (rc == RS_OK)
		rc = s3s_list_names(s, key, &ns, err);
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
	s3s_names_free(&ns);
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
	struct s3s_names ns = {.max = max, .hex = true};
	if ((rc = s3s_key(key, s, err, "push/referrers/%s/_subjects/%s/", repo, digest_hex(subject))) == RS_OK)
		rc = s3s_list_names(s, key, &ns, err);
	char(*v)[DIGEST_STR_SIZE] = NULL;
	if (rc == RS_OK && ns.n && !(v = calloc(ns.n, sizeof(*v))))
		rc = rs_err_set(err, RS_NOMEM, "out of memory listing referrers");
	for (size_t i = 0; rc == RS_OK && i < ns.n; i++)
		snprintf(v[i], DIGEST_STR_SIZE, "sha256:%s", ns.v[i]);
	s3s_names_free(&ns);
	if (rc) {
		free(v);
		return rc;
	}
	*out = v;
	*out_n = v ? ns.n : 0;
	return RS_OK;
}
