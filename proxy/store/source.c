/* source: where the bytes of a blob or manifest come from (source.h): the
 * order of pushed images, the cache under the repository links (with the
 * upstream's confirmation and stale-if-error), regeneration of evicted
 * optimized objects and the upstream; the download job the single-flight
 * table (inflight.c) runs, which links the repository when the upstream
 * answers and unlinks it when the blob did not make it into the store; with
 * a cluster, the same job first takes the blob's cluster lock, or relays the
 * bytes of the replica that holds it (peer streaming, peer.h) or what that
 * replica committed; the fetches by digest of optimized pulls, the policy
 * check on pull and the push side. It does not answer clients (api/ maps its
 * answers to HTTP, the peer endpoint's included), does not optimize (a hook
 * regenerates) and keeps no bytes itself. It talks to the store (store.h),
 * inflight.c, the upstream clients (upstream.h, peer.h), cluster.h, route.h
 * (a pushed reference's repository routed like a pull), log.h and
 * metrics.h. */
#include "source.h"

#include "cluster.h"
#include "image.h"
#include "inflight.h"
#include "log.h"
#include "metrics.h"
#include "peer.h"
#include "route.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Extra seconds a reader waits beyond the upstream's own timeout. */
#define BEGIN_WAIT_SLACK_S 5

/* The media type of a manifest the upstream sent without one. */
#define SOURCE_JSON_TYPE "application/json"

struct source {
	const struct rs_config *cfg;
	struct store *store;
	struct inflight *inflight;
	struct upstream **ups; /* parallel to cfg->upstreams */
	source_regen_fn regen; /* NULL: no regeneration */
	void *regen_ctx;
	_Atomic bool stopping; /* source_stop: source_ensure_blob's waits end */
	struct cluster *cluster; /* the blob locks across replicas (source_set_cluster); NULL: this process only */
};

static bool status_ok(long s)
{
	return s >= 200 && s < 300;
}

/* ------------------------------------------------------------ lifecycle */

enum rs_code source_new(struct source **out, const struct rs_config *cfg, struct store *s, struct upstream **ups,
                        struct rs_err *err)
{
	struct source *src = calloc(1, sizeof(*src));
	if (!src)
		return rs_err_set(err, RS_NOMEM, "source: out of memory");
	src->cfg = cfg;
	src->store = s;
	src->ups = ups;
	enum rs_code rc = inflight_new(&src->inflight, s, err);
	if (rc) {
		free(src);
		return rc;
	}
	*out = src;
	return RS_OK;
}

void source_free(struct source *src)
{
	if (!src)
		return;
	inflight_free(src->inflight);
	free(src);
}

void source_set_regenerate(struct source *src, source_regen_fn fn, void *ctx)
{
	src->regen = fn;
	src->regen_ctx = ctx;
}

void source_set_cluster(struct source *src, struct cluster *c)
{
	if (!c || cluster_mode(c, NULL, 0) == CLUSTER_LOCAL)
		return;
	if (strcmp(store_driver_name(src->store), "fs") == 0) {
		/* Another replica's commit would not be seen here: nothing to wait for. */
		log_event(LOG_INFO, "blob downloads are single-flight per process: the fs store is not shared between "
		                    "replicas (store.driver \"s3\" shares them)");
		return;
	}
	src->cluster = c;
}

void source_stop(struct source *src)
{
	atomic_store(&src->stopping, true);
}

unsigned source_inflight(struct source *src)
{
	return inflight_count(src->inflight);
}

/* ------------------------------------------------------------ repository links */

bool source_linked(struct source *src, size_t up_index, const char *repo, enum store_kind kind, const char *digest)
{
	return store_linked(src->store, src->cfg->upstreams[up_index].name, repo, kind, digest);
}

void source_link(struct source *src, size_t up_index, const char *repo, enum store_kind kind, const char *digest)
{
	struct rs_err err = {0};
	if (store_link(src->store, src->cfg->upstreams[up_index].name, repo, kind, digest, &err) != RS_OK)
		log_event(LOG_WARN, "could not link %s to %s/%s: %s", digest, src->cfg->upstreams[up_index].name, repo,
		          err.msg);
}

enum rs_code source_ask(struct source *src, size_t up_index, const char *repo, enum store_kind kind,
                        const char *digest, struct upstream_reply *rep, struct rs_err *err)
{
	static const char *const acc[] = {IMAGE_MT_OCI_MANIFEST, IMAGE_MT_DOCKER_MANIFEST, IMAGE_MT_OCI_INDEX,
	                                  IMAGE_MT_DOCKER_LIST};
	const char *upname = src->cfg->upstreams[up_index].name;
	metrics_upstream(upname, METRICS_UP_REQUESTS);
	enum rs_code rc = kind == STORE_BLOB ? upstream_blob_head(src->ups[up_index], repo, digest, rep, err)
	                                     : upstream_manifest(src->ups[up_index], repo, digest, acc, 4, true,
	                                                         src->cfg->manifest_max_bytes, rep, err);
	if (rc || rep->status >= 500)
		metrics_upstream(upname, METRICS_UP_ERRORS);
	if (rc == RS_OK && status_ok(rep->status)) {
		source_link(src, up_index, repo, kind, digest);
		log_event(LOG_DEBUG, "upstream %s confirmed %s for %s", upname, digest, repo);
	}
	return rc;
}

enum rs_code source_confirm(struct source *src, size_t up_index, const char *repo, enum store_kind kind,
                            const char *digest, struct rs_err *err)
{
	struct upstream_reply rep = {0};
	enum rs_code rc = source_ask(src, up_index, repo, kind, digest, &rep, err);
	const char *upname = src->cfg->upstreams[up_index].name;
	if (rc == RS_OK && !status_ok(rep.status))
		rc = rs_err_set(err,
		                rep.status == 404                          ? RS_NOT_FOUND
		                : rep.status == 401 || rep.status == 403 ? RS_DENIED
		                                                           : RS_UPSTREAM,
		                "upstream %s answered HTTP %ld for %s in %s", upname, rep.status, digest, repo);
	upstream_reply_dispose(&rep);
	return rc;
}

/* The upstream could not be asked whether repo holds a cached object (rc,
 * or a 5xx/429 answer in rep): serve it anyway (stale-if-error) only when a
 * manifest linked to repo references it, since a registry that holds a
 * manifest holds what it references. Never under a repository with no such
 * manifest. */
static bool stale_ok(struct source *src, const struct source_ref *ref, enum rs_code rc,
                     const struct upstream_reply *rep)
{
	if (rc == RS_OK && rep->status < 500 && rep->status != 429)
		return false;
	const char *upname = src->cfg->upstreams[ref->up_index].name;
	if (!store_linked_by_image(src->store, upname, ref->repo, ref->kind, ref->digest))
		return false;
	metrics_add(METRICS_STALE_SERVED, 1);
	log_event(LOG_WARN, "serving cached %s under %s: the upstream %s could not confirm it, a manifest of %s names it",
	          ref->digest, ref->repo, upname, ref->repo);
	return true;
}

/* ------------------------------------------------------------ the download job */

/* The download job handed to inflight.c. */
struct download {
	struct source *src;
	size_t up_index;
	struct upstream *u;
	const char *upname;
	char repo[RS_LIMIT_NAME_MAX + 16];
	char digest[DIGEST_STR_SIZE];
	bool new_link; /* download_begin made the link: it goes again if the download fails */
	struct cluster_lock *lock; /* the blob's cluster lock while this replica downloads it */
};

struct download_sink {
	struct inflight_fetch *f;
	struct download *d;
};

static enum rs_code download_begin(void *arg, int64_t size, struct rs_err *err)
{
	struct download_sink *s = arg;
	/* The upstream answered 200 for this repository: linked before any
	 * reader is woken, so a reader that finds no link knows the download
	 * was another repository's. */
	struct download *d = s->d;
	if (!source_linked(d->src, d->up_index, d->repo, STORE_BLOB, d->digest)) {
		source_link(d->src, d->up_index, d->repo, STORE_BLOB, d->digest);
		d->new_link = true;
	}
	return inflight_fetch_begin(s->f, size, err);
}

static enum rs_code download_data(void *arg, const void *buf, size_t len, struct rs_err *err)
{
	struct download_sink *s = arg;
	metrics_add(METRICS_UPSTREAM_BYTES, len);
	return inflight_fetch_write(s->f, buf, len, err);
}

static enum rs_code upstream_run(struct inflight_fetch *f, struct download *d, struct rs_err *err)
{
	struct download_sink sink = {.f = f, .d = d};
	metrics_upstream(d->upname, METRICS_UP_REQUESTS);
	metrics_upstream(d->upname, METRICS_UP_BLOB_FETCHES);
	enum rs_code rc = upstream_blob(d->u, d->repo, d->digest, download_begin, download_data, &sink, err);
	if (rc && rc != RS_NOT_FOUND)
		metrics_upstream(d->upname, METRICS_UP_ERRORS);
	if (rc)
		log_event(rc == RS_NOT_FOUND ? LOG_INFO : LOG_WARN, "download of %s from %s/%s failed: %s", d->digest,
		          d->upname, d->repo, err->msg);
	return rc;
}

/* ------------------------------------------------------------ across replicas */

/* How long a peer gets to accept the connection; a refused one fails at once. */
#define PEER_CONNECT_MS 2000
/* Between two looks at a lock held by another replica. */
#define LOCK_RETRY_MS 200

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static enum rs_code relay_begin(void *arg, int64_t size, struct rs_err *err)
{
	return inflight_fetch_begin_relay(arg, size, err);
}

static enum rs_code relay_data(void *arg, const void *buf, size_t len, struct rs_err *err)
{
	metrics_cluster_pull(METRICS_CL_PEER_BYTES, len);
	return inflight_fetch_write(arg, buf, len, err);
}

/* Another replica downloaded and committed the blob while this one waited:
 * its readers get the stored bytes (relayed, nothing written to the store). */
static enum rs_code relay_from_store(struct download *d, struct inflight_fetch *f, struct rs_err *err)
{
	struct store_reader *rd = NULL;
	enum rs_code rc = store_reader_open(d->src->store, STORE_CACHE, STORE_BLOB, d->digest, &rd, err);
	if (rc != RS_OK)
		return rc;
	uint64_t size = store_reader_size(rd);
	char *buf = malloc(1u << 16);
	if (!buf)
		rc = rs_err_set(err, RS_NOMEM, "out of memory relaying %s", d->digest);
	else
		rc = inflight_fetch_begin_relay(f, (int64_t)size, err);
	for (uint64_t at = 0; rc == RS_OK && at < size;) {
		ssize_t n = store_reader_pread(rd, buf, 1u << 16, at, err);
		if (n <= 0) {
			rc = n < 0 ? err->code : rs_err_set(err, RS_IO, "stored %s ended at byte %llu", d->digest,
			                                      (unsigned long long)at);
			break;
		}
		rc = inflight_fetch_write(f, buf, (size_t)n, err);
		at += (uint64_t)n;
	}
	free(buf);
	store_reader_close(rd);
	log_event(LOG_DEBUG, "%s was committed by another replica: served from the store", d->digest);
	return rc;
}

/* Stream the blob from owner, the replica that holds its lock. RS_OK: relayed
 * whole (verified at the end by inflight.c). *out_began: bytes went to the
 * readers, so a failure cannot be retried elsewhere. */
static enum rs_code relay_from_peer(struct download *d, struct inflight_fetch *f, const char *owner, unsigned stall_s,
                                    bool *out_began, struct rs_err *err)
{
	const char *secret = d->src->cfg->cluster.peer_secret;
	enum rs_code rc = peer_blob_get(owner, secret, d->digest, PEER_CONNECT_MS, stall_s, relay_begin, relay_data, f,
	                                out_began, err);
	if (rc == RS_OK)
		rc = inflight_fetch_relay_check(f, err);
	if (rc == RS_OK) {
		metrics_cluster_pull(METRICS_CL_PEER_OK, 1);
		log_event(LOG_INFO, "peer stream of %s from %s done: the owner downloads it from %s, not this replica",
		          d->digest, owner, d->upname);
	} else if (*out_began) {
		metrics_cluster_pull(METRICS_CL_PEER_FAILED, 1);
		log_event(LOG_WARN, "peer stream of %s from %s failed: %s (clients of it are cut off and retry)", d->digest,
		          owner, err->msg);
	}
	return rc;
}

/* Whether a lock holder names a replica to stream from: another replica
 * with an http(s) advertise_url, and a secret to authenticate with. */
static bool streamable(const struct source *src, const char *owner)
{
	return src->cfg->cluster.peer_secret && (strncmp(owner, "http://", 7) == 0 || strncmp(owner, "https://", 8) == 0) &&
	       strcmp(owner, cluster_replica_id(src->cluster)) != 0;
}

/* The cluster-wide single-flight of one blob (docs/scale-out.md): take the
 * lock "blob:<digest>" and download from the upstream (*out_upstream), or,
 * while another replica holds it, stream from that replica (or read what it
 * committed), retrying until the lock is taken over when the owner cannot
 * answer (it died: its lock expires after lock_ttl_s). Redis down: the lock
 * is this process's, as without a cluster. */
static enum rs_code coordinate(struct download *d, struct inflight_fetch *f, bool *out_upstream, struct rs_err *err)
{
	struct source *src = d->src;
	const struct rs_cluster_config *cc = &src->cfg->cluster;
	unsigned stall_s = src->cfg->upstreams[d->up_index].timeout_s;
	uint64_t start = now_ms();
	uint64_t deadline = start + ((uint64_t)cc->lock_ttl_s + stall_s) * 1000u;
	char name[DIGEST_STR_SIZE + 8];
	char holder[CLUSTER_OWNER_MAX];
	char owner[CLUSTER_OWNER_MAX];
	char told[CLUSTER_OWNER_MAX] = ""; /* the owner last logged about */
	snprintf(name, sizeof(name), "blob:%s", d->digest);
	for (bool waited = false;; waited = true) {
		struct cluster_lock *l = NULL;
		holder[0] = '\0';
		enum rs_code rc = cluster_lock_try(&l, src->cluster, name, holder, sizeof(holder), err);
		if (rc != RS_OK)
			return rc;
		bool stored = store_has(src->store, STORE_CACHE, STORE_BLOB, d->digest);
		if (l && stored) { /* committed by the owner that released the lock just now */
			cluster_lock_release(l);
			return relay_from_store(d, f, err);
		}
		if (l) {
			d->lock = l;
			if (cluster_lock_scope(l) == CLUSTER_UP)
				metrics_cluster_pull(METRICS_CL_UPSTREAM_FETCHES, 1);
			if (waited)
				log_event(LOG_WARN, "took over the download of %s after %llu ms: the lock of %s expired or was released",
				          d->digest, (unsigned long long)(now_ms() - start), told[0] ? told : "another replica");
			*out_upstream = true;
			return RS_OK;
		}
		if (!waited)
			metrics_cluster_pull(METRICS_CL_LOCK_WAITS, 1);
		if (stored)
			return relay_from_store(d, f, err);
		cluster_owner_replica(owner, sizeof(owner), holder);
		if (streamable(src, owner)) {
			bool began = false;
			struct rs_err perr = {0};
			rc = relay_from_peer(d, f, owner, stall_s, &began, &perr);
			if (rc == RS_OK || began) {
				*err = perr;
				return rc;
			}
			if (strcmp(told, owner) != 0)
				log_event(LOG_INFO, "%s is downloaded by %s, which cannot stream it now (%s): waiting for its lock",
				          d->digest, owner, perr.msg);
		} else if (strcmp(told, owner) != 0) {
			log_event(LOG_INFO, "%s is downloaded by %s: waiting for its lock", d->digest,
			          owner[0] ? owner : "another replica");
		}
		snprintf(told, sizeof(told), "%s", owner);
		if (now_ms() >= deadline || atomic_load(&src->stopping))
			return rs_err_set(err, RS_TIMEOUT, "%s: its download lock is held by %s and was not released within %u s",
			                  d->digest, owner[0] ? owner : "another replica", cc->lock_ttl_s + stall_s);
		struct timespec ts = {0, LOCK_RETRY_MS * 1000000L};
		nanosleep(&ts, NULL);
	}
}

static enum rs_code download_run(struct inflight_fetch *f, void *arg, struct rs_err *err)
{
	struct download *d = arg;
	if (d->src->cluster) {
		bool upstream = false;
		enum rs_code rc = coordinate(d, f, &upstream, err);
		if (!upstream)
			return rc;
	}
	return upstream_run(f, d, err);
}

/* inflight's arg_free, called once the download is committed or abandoned:
 * a link made for it goes again when the blob did not make it into the store
 * (cut off, or failed its digest check), since a link comes with its content. */
static void download_free(void *arg)
{
	struct download *d = arg;
	if (d && d->new_link && !store_has(d->src->store, STORE_CACHE, STORE_BLOB, d->digest))
		store_unlink(d->src->store, d->upname, d->repo, STORE_BLOB, d->digest);
	if (d)
		cluster_lock_release(d->lock); /* after the commit: a replica that takes it next finds the blob */
	free(d);
}

/* Join (or start) the download of digest for (upstream up_index, repo). */
static enum rs_code download_join(struct source *src, size_t up_index, const char *repo, const char *digest,
                                  struct inflight_fetch **out, struct rs_err *err)
{
	struct download *d = calloc(1, sizeof(*d));
	if (!d)
		return rs_err_set(err, RS_NOMEM, "out of memory fetching %s", digest);
	d->src = src;
	d->up_index = up_index;
	d->u = src->ups[up_index];
	d->upname = src->cfg->upstreams[up_index].name;
	snprintf(d->repo, sizeof(d->repo), "%s", repo);
	snprintf(d->digest, sizeof(d->digest), "%s", digest);
	return inflight_join(src->inflight, digest, -1, download_run, d, download_free, out, err);
}

/* ------------------------------------------------------------ locate */

void source_found_dispose(struct source_found *f)
{
	store_reader_close(f->rd);
	free(f->body);
	free(f->type);
	upstream_reply_dispose(&f->rep);
	inflight_release(f->fetch);
	*f = (struct source_found){.size = -1};
}

/* An object of an optimized image that ref's repository was given (linked
 * there) but that is no longer in the store: made again by the optimizer,
 * waiting up to optimize.sync_timeout_s. True when it is in the store now. */
static bool regenerated(struct source *src, const struct source_ref *ref)
{
	if (!src->regen || !source_linked(src, ref->up_index, ref->repo, ref->kind, ref->digest))
		return false;
	struct rs_err err = {0};
	enum rs_code rc = src->regen(src->regen_ctx, ref->kind, ref->digest, src->cfg->optimize.sync_timeout_s, &err);
	if (rc == RS_OK)
		return true;
	if (rc != RS_NOT_FOUND)
		log_event(LOG_WARN, "%s of %s was evicted and could not be made again: %s", ref->digest, ref->repo, err.msg);
	return false;
}

/* Open what area holds of ref: a blob's reader, a manifest's bytes. */
static enum rs_code open_stored(struct source *src, enum store_area area, const struct source_ref *ref,
                                struct source_found *out, struct rs_err *err)
{
	if (ref->kind == STORE_BLOB)
		return store_reader_open(src->store, area, STORE_BLOB, ref->digest, &out->rd, err);
	return store_manifest_get(src->store, area, ref->digest, src->cfg->manifest_max_bytes, &out->body, &out->len,
	                          &out->type, err);
}

/* A cached copy not linked to ref's repository: true when it may be served
 * (the upstream confirmed it now, or stale-if-error); else out is UNLINKED
 * with the upstream's answer or ask error. */
static bool confirmed(struct source *src, const struct source_ref *ref, struct source_found *out,
                      struct rs_err *err)
{
	enum rs_code rc = source_ask(src, ref->up_index, ref->repo, ref->kind, ref->digest, &out->rep, err);
	if ((rc || !status_ok(out->rep.status)) && !stale_ok(src, ref, rc, &out->rep)) {
		/* not this repository's (or the upstream cannot say so now):
		 * never served from another repository's copy */
		out->where = SOURCE_UNLINKED;
		out->ask_rc = rc;
		return false;
	}
	upstream_reply_dispose(&out->rep);
	out->rep = (struct upstream_reply){0};
	return true;
}

enum rs_code source_locate(struct source *src, const struct source_ref *ref, struct source_found *out,
                           struct rs_err *err)
{
	*out = (struct source_found){.where = SOURCE_UPSTREAM, .size = -1};
	bool blob = ref->kind == STORE_BLOB;
	if (ref->name && store_pushed_holds(src->store, ref->name, ref->kind, ref->digest) &&
	    open_stored(src, STORE_PUSHED, ref, out, err) == RS_OK) {
		out->where = SOURCE_PUSHED;
		return RS_OK;
	}
	rs_err_clear(err);
	bool cached = store_has(src->store, STORE_CACHE, ref->kind, ref->digest);
	enum source_where where = SOURCE_CACHE;
	if (!cached) {
		if (!regenerated(src, ref))
			return RS_OK;
		where = SOURCE_REGENERATED;
	} else if (!source_linked(src, ref->up_index, ref->repo, ref->kind, ref->digest) &&
	           !confirmed(src, ref, out, err)) {
		return RS_OK;
	}
	rs_err_clear(err);
	enum rs_code rc = open_stored(src, STORE_CACHE, ref, out, err);
	if (rc == RS_OK) {
		out->where = where;
		return RS_OK;
	}
	if (blob && where == SOURCE_REGENERATED) {
		rs_err_clear(err);
		return RS_OK;
	}
	if (rc != RS_NOT_FOUND)
		return rc;
	if (!blob)
		log_event(LOG_WARN, "%s", err->msg); /* a corrupt stored copy was dropped, or it was evicted */
	rs_err_clear(err);
	return RS_OK;
}

enum rs_code source_fetch(struct source *src, const struct source_ref *ref, struct source_found *out,
                          struct rs_err *err)
{
	*out = (struct source_found){.where = SOURCE_UPSTREAM, .size = -1};
	const struct rs_upstream_config *upc = &src->cfg->upstreams[ref->up_index];
	struct inflight_fetch *f = NULL;
	enum rs_code rc = download_join(src, ref->up_index, ref->repo, ref->digest, &f, err);
	if (rc)
		return rc;
	int64_t total = -1;
	rs_err_clear(err);
	/* With a cluster the download may first wait for another replica's lock
	 * to expire (its owner died). */
	unsigned wait_s = upc->timeout_s + BEGIN_WAIT_SLACK_S + (src->cluster ? src->cfg->cluster.lock_ttl_s : 0);
	rc = inflight_wait_begin(f, wait_s, &total, err);
	if (rc) {
		inflight_release(f);
		if (rc == RS_DIGEST_MISMATCH)
			rc = err->code = RS_UPSTREAM;
		return rc;
	}
	/* Joined a download started for another repository (or the blob was
	 * committed meanwhile): this repository must be confirmed too. */
	if (!source_linked(src, ref->up_index, ref->repo, STORE_BLOB, ref->digest)) {
		rs_err_clear(err);
		rc = source_ask(src, ref->up_index, ref->repo, STORE_BLOB, ref->digest, &out->rep, err);
		if (rc || !status_ok(out->rep.status)) {
			inflight_release(f);
			out->where = SOURCE_UNLINKED;
			out->ask_rc = rc;
			return RS_OK;
		}
		upstream_reply_dispose(&out->rep);
		out->rep = (struct upstream_reply){0};
	}
	out->fetch = f;
	out->size = total;
	out->stall_s = upc->timeout_s;
	return RS_OK;
}

enum rs_code source_peer_open(struct source *src, const char *digest, struct source_found *out, struct rs_err *err)
{
	*out = (struct source_found){.where = SOURCE_UPSTREAM, .size = -1};
	struct inflight_fetch *f = NULL;
	if (inflight_peek(src->inflight, digest, &f) == RS_OK) {
		unsigned wait_s = 0;
		for (size_t i = 0; i < src->cfg->upstream_count; i++)
			if (src->cfg->upstreams[i].timeout_s > wait_s)
				wait_s = src->cfg->upstreams[i].timeout_s;
		int64_t total = -1;
		enum rs_code rc = inflight_wait_begin(f, wait_s + BEGIN_WAIT_SLACK_S, &total, err);
		if (rc != RS_OK) {
			inflight_release(f);
			return rc;
		}
		out->fetch = f;
		out->size = total;
		out->stall_s = wait_s;
		return RS_OK;
	}
	enum rs_code rc = store_reader_open(src->store, STORE_CACHE, STORE_BLOB, digest, &out->rd, err);
	if (rc == RS_OK)
		out->where = SOURCE_CACHE;
	return rc;
}

/* ------------------------------------------------------------ manifests from the upstream */

static bool is_schema1(const char *type)
{
	return type && (strncmp(type, IMAGE_MT_DOCKER_V1, strlen(IMAGE_MT_DOCKER_V1)) == 0 ||
	                strncmp(type, IMAGE_MT_DOCKER_V1_SIGNED, strlen(IMAGE_MT_DOCKER_V1_SIGNED)) == 0);
}

enum rs_code source_fetch_manifest(struct source *src, size_t up_index, const char *repo, const char *ref,
                                   const char *const *accept, size_t n_accept, const char *want_digest,
                                   struct upstream_reply *rep, char out_digest[DIGEST_STR_SIZE], bool *out_stored,
                                   struct rs_err *err)
{
	*out_stored = false;
	struct upstream *u = src->ups[up_index];
	const char *upname = src->cfg->upstreams[up_index].name;
	metrics_upstream(upname, METRICS_UP_REQUESTS);
	enum rs_code rc =
		upstream_manifest(u, repo, ref, accept, n_accept, false, src->cfg->manifest_max_bytes, rep, err);
	if (rc) {
		metrics_upstream(upname, METRICS_UP_ERRORS);
		return rc;
	}
	if (rep->status >= 500)
		metrics_upstream(upname, METRICS_UP_ERRORS);
	if (!status_ok(rep->status))
		return RS_OK; /* the caller passes the answer on */
	metrics_add(METRICS_UPSTREAM_BYTES, rep->body_len);
	digest_buffer(out_digest, rep->body, rep->body_len);
	if (is_schema1(rep->content_type)) {
		/* A schema 1 manifest's digest covers its payload without the JWS
		 * signatures, so its bytes cannot be checked against a digest: pass
		 * it through with the upstream's digest and never cache it. Only
		 * clients that do not accept schema 2 get one. */
		if (rep->digest[0])
			snprintf(out_digest, DIGEST_STR_SIZE, "%s", rep->digest);
		return RS_OK;
	}
	if (want_digest && strcmp(out_digest, want_digest) != 0)
		return rs_err_set(err, RS_DIGEST_MISMATCH,
		                  "upstream %s sent a manifest for %s that hashes to %s; not cached", upname,
		                  want_digest, out_digest);
	if (!want_digest && rep->digest[0] && strcmp(rep->digest, out_digest) != 0)
		return rs_err_set(err, RS_DIGEST_MISMATCH,
		                  "upstream %s sent manifest bytes hashing to %s but Docker-Content-Digest %s; not cached",
		                  upname, out_digest, rep->digest);
	const char *type = rep->content_type ? rep->content_type : SOURCE_JSON_TYPE;
	enum rs_code prc = store_manifest_put(src->store, STORE_CACHE, out_digest, type, rep->body, rep->body_len, err);
	*out_stored = prc == RS_OK;
	if (prc == RS_OK) /* the upstream gave it for this repository: linked there */
		source_link(src, up_index, repo, STORE_MANIFEST, out_digest);
	return prc;
}

/* ------------------------------------------------------------ into the store */

/* Join (or start) the single-flight download of digest and wait until it is
 * verified and committed. Runs in an optpull worker (or a request thread). */
enum rs_code source_ensure_blob(void *ctx, size_t up_index, const char *repo, const char *digest,
                                struct rs_err *err)
{
	struct source *src = ctx;
	const struct rs_upstream_config *upc = &src->cfg->upstreams[up_index];
	struct inflight_fetch *f = NULL;
	enum rs_code rc = download_join(src, up_index, repo, digest, &f, err);
	if (rc)
		return rc;
	/* Wait for the verified end in steps of a second, so that a shutdown
	 * (source_stop) ends the wait at once (issue 12 item 6): the
	 * optimization then fails and leaves nothing. The download itself goes
	 * on for the clients that share it. It fails after 3 * timeout_s
	 * without a byte (the download's own stall rule normally ends it at
	 * timeout_s). */
	uint64_t seen = 0;
	for (unsigned still_s = 0; rc == RS_OK;) {
		if (atomic_load(&src->stopping)) {
			rc = rs_err_set(err, RS_TIMEOUT, "shutting down: stopped waiting for %s", digest);
			break;
		}
		bool ended = false;
		uint64_t written = 0;
		rs_err_clear(err);
		rc = inflight_wait_end(f, 1000, &ended, &written, err);
		if (rc != RS_OK || ended)
			break;
		if (written != seen) {
			seen = written;
			still_s = 0;
		} else if (++still_s >= 3 * upc->timeout_s) {
			rc = rs_err_set(err, RS_TIMEOUT, "download of %s stalled: no data for %u s at byte %llu", digest,
			                still_s, (unsigned long long)written);
		}
	}
	inflight_release(f);
	if (rc == RS_OK && !store_has(src->store, STORE_CACHE, STORE_BLOB, digest))
		rc = rs_err_set(err, RS_IO, "blob %s was downloaded but is not in the store (evicted?)", digest);
	return rc;
}

/* GET by digest from the upstream, verified and stored. */
enum rs_code source_ensure_manifest(void *ctx, size_t up_index, const char *repo, const char *digest,
                                    struct rs_err *err)
{
	struct source *src = ctx;
	if (store_has(src->store, STORE_CACHE, STORE_MANIFEST, digest))
		return RS_OK;
	static const char *const acc[] = {IMAGE_MT_OCI_MANIFEST, IMAGE_MT_DOCKER_MANIFEST, IMAGE_MT_OCI_INDEX,
	                                  IMAGE_MT_DOCKER_LIST};
	struct upstream_reply rep = {0};
	char got[DIGEST_STR_SIZE];
	bool stored = false;
	enum rs_code rc = source_fetch_manifest(src, up_index, repo, digest, acc, 4, digest, &rep, got, &stored, err);
	if (rc == RS_OK && !status_ok(rep.status))
		rc = rs_err_set(err, rep.status == 404 ? RS_NOT_FOUND : RS_UPSTREAM,
		                "upstream %s answered HTTP %ld for manifest %s", src->cfg->upstreams[up_index].name,
		                rep.status, digest);
	else if (rc == RS_OK && !stored)
		rc = rs_err_set(err, RS_BAD_INPUT, "manifest %s (%s) cannot be stored", digest,
		                rep.content_type ? rep.content_type : "no type");
	upstream_reply_dispose(&rep);
	return rc;
}

/* A reference of a pushed manifest that only the upstream has (the client
 * saw it through regslim's read side and skipped the upload), or a mount
 * from a mirror repository: fetched into the cache for repo when absent,
 * and confirmed by the upstream for repo when the cached copy is not linked
 * to it. */
enum rs_code source_pushed_fetch(void *ctx, const char *repo, const char *digest, bool manifest,
                                 struct rs_err *err)
{
	struct source *src = ctx;
	struct route_target t = {0};
	enum rs_code rc = route_pick(src->cfg, NULL, repo, &t, err);
	if (rc)
		return rc;
	enum store_kind kind = manifest ? STORE_MANIFEST : STORE_BLOB;
	if (!store_has(src->store, STORE_CACHE, kind, digest) &&
	    (rc = manifest ? source_ensure_manifest(src, t.up_index, t.repo, digest, err)
	                   : source_ensure_blob(src, t.up_index, t.repo, digest, err)))
		return rc;
	if (!source_linked(src, t.up_index, t.repo, kind, digest))
		rc = source_confirm(src, t.up_index, t.repo, kind, digest, err);
	return rc;
}
