/* registry: the read side of the Distribution API for the pull-through
 * mirror (DESIGN.md "The pull path", points 1, 2, 4, 6 and 7).
 *
 * It picks the upstream for a request, answers manifests from the store or
 * the upstream (tags with a TTL, HEAD revalidation and stale-if-error;
 * digests cached for good), serves blobs from the store or streams them from
 * one shared upstream download (inflight.c) while they are cached, passes
 * tags/list through. It talks to blobstore.c, inflight.c and upstream.c,
 * and answers through reply.h (which maps enum rs_code to HTTP statuses and
 * registry error codes); it builds no libmicrohttpd response itself and
 * never parses tar. */
#include "registry.h"

#include "blobstore.h"
#include "digest.h"
#include "gate.h"
#include "image.h"
#include "inflight.h"
#include "log.h"
#include "metrics.h"
#include "optpull.h"
#include "push.h"
#include "push_http.h"
#include "refname.h"
#include "reply.h"
#include "route.h"
#include "rs_limits.h"
#include "upstream.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define JSON_TYPE "application/json"

/* Extra seconds a reader waits beyond the upstream's own timeout. */
#define BEGIN_WAIT_SLACK_S 5

struct registry {
	const struct rs_config *cfg;
	struct blobstore *store;
	struct inflight *inflight;
	struct upstream **ups; /* parallel to cfg->upstreams */
	struct push_http *ph;  /* write routes, auth gate, pushed images (push_http.h) */
	struct optpull *opt;   /* optimized pull path; NULL when optimization is off */
	/* Push-policy verdicts on pull (enforce_on_pull), per manifest digest and
	 * policy; NULL when no policy enforces on pull. */
	struct pull_verdict *verdicts;
	size_t verdict_next;
	pthread_mutex_t verdict_mu; /* guards verdicts and verdict_next */
};

struct pull_verdict {
	char digest[DIGEST_STR_SIZE]; /* "" when the slot is free */
	const struct rs_gate_policy *policy;
	size_t denies;
	char *text; /* the deny findings, owned; NULL when denies == 0 */
};

/* Set on the request (rq->manifest_capture) while manifest_by_tag runs for
 * the optimized pull path: the manifest answer it would queue is captured
 * here instead, and manifest_tag_optimized answers the request. Error
 * answers are queued as usual. */
struct manifest_capture {
	bool got;
	char *body; /* owned */
	size_t len;
	char *type; /* owned */
	char digest[DIGEST_STR_SIZE];
};

/* ------------------------------------------------------------ lifecycle */

static unsigned inflight_gauge(void *arg)
{
	return inflight_count(arg);
}

static enum rs_code opt_fetch_blob(void *ctx, size_t up_index, const char *repo, const char *digest,
                                   struct rs_err *err);
static enum rs_code opt_fetch_manifest(void *ctx, size_t up_index, const char *repo, const char *digest,
                                       struct rs_err *err);

static bool mirror_linked(struct registry *r, size_t up_index, const char *repo, enum blobstore_kind kind,
                          const char *digest);
static enum rs_code mirror_confirm(struct registry *r, size_t up_index, const char *repo, enum blobstore_kind kind,
                                   const char *digest, struct rs_err *err);

/* push.h push_fetch_fn: does the mirror's repository (repo routed like a
 * pull) hold digest? A reference of a pushed manifest that only the upstream
 * has (the client saw it through regslim's read side and skipped the
 * upload), or a mount from a mirror repository: fetched into the cache for
 * repo when absent, and confirmed by the upstream for repo when the cached
 * copy is not linked to it. */
static enum rs_code push_fetch(void *ctx, const char *repo, const char *digest, bool manifest, struct rs_err *err)
{
	struct registry *r = ctx;
	struct route_target t = {0};
	enum rs_code rc = route_pick(r->cfg, NULL, repo, &t, err);
	if (rc)
		return rc;
	enum blobstore_kind kind = manifest ? BLOBSTORE_MANIFEST : BLOBSTORE_BLOB;
	if (!blobstore_has(r->store, kind, digest) &&
	    (rc = manifest ? opt_fetch_manifest(r, t.up_index, t.repo, digest, err)
	                   : opt_fetch_blob(r, t.up_index, t.repo, digest, err)))
		return rc;
	if (!mirror_linked(r, t.up_index, t.repo, kind, digest))
		rc = mirror_confirm(r, t.up_index, t.repo, kind, digest, err);
	return rc;
}

enum rs_code registry_new(struct registry **out, const struct rs_config *cfg, struct rs_err *err)
{
	struct registry *r = calloc(1, sizeof(*r));
	if (!r)
		return rs_err_set(err, RS_NOMEM, "registry: out of memory");
	r->cfg = cfg;
	enum rs_code rc = blobstore_open(&r->store, cfg->data_dir, cfg->cache_max_bytes, err);
	if (rc)
		goto out;
	rc = inflight_new(&r->inflight, r->store, err);
	if (rc)
		goto out;
	r->ups = calloc(cfg->upstream_count, sizeof(*r->ups));
	if (!r->ups) {
		rc = rs_err_set(err, RS_NOMEM, "registry: out of memory");
		goto out;
	}
	for (size_t i = 0; i < cfg->upstream_count; i++) {
		rc = upstream_new(&r->ups[i], &cfg->upstreams[i], err);
		if (rc) {
			rs_err_prefix(err, "upstream %s: ", cfg->upstreams[i].name);
			goto out;
		}
	}
	rc = push_http_new(&r->ph, cfg, r->store, err);
	if (rc)
		goto out;
	push_set_fetcher(push_http_push(r->ph), push_fetch, r);
	if (cfg->optimize.enabled && cfg->optimize.policy_count) {
		struct optpull_ops ops = {opt_fetch_blob, opt_fetch_manifest, r};
		rc = optpull_new(&r->opt, cfg, r->store, &ops, err);
		if (rc)
			goto out;
	}
	pthread_mutex_init(&r->verdict_mu, NULL);
	for (size_t i = 0; i < cfg->push.policy_count; i++)
		if (cfg->push.policies[i].enforce_on_pull && !r->verdicts &&
		    !(r->verdicts = calloc(RS_LIMIT_GATE_PULL_VERDICTS, sizeof(*r->verdicts)))) {
			rc = rs_err_set(err, RS_NOMEM, "registry: out of memory");
			goto out;
		}
	metrics_set_inflight_source(inflight_gauge, r->inflight);
	*out = r;
	return RS_OK;
out:
	registry_free(r);
	return rc;
}

void registry_shutdown(struct registry *r)
{
	optpull_stop(r->opt);
}

void registry_free(struct registry *r)
{
	if (!r)
		return;
	metrics_set_inflight_source(NULL, NULL);
	optpull_free(r->opt); /* first: its workers use the upstreams and the inflight table */
	push_http_free(r->ph);
	inflight_free(r->inflight);
	if (r->ups)
		for (size_t i = 0; i < r->cfg->upstream_count; i++)
			upstream_free(r->ups[i]);
	free(r->ups);
	blobstore_free(r->store);
	if (r->verdicts) {
		for (size_t i = 0; i < RS_LIMIT_GATE_PULL_VERDICTS; i++)
			free(r->verdicts[i].text);
		free(r->verdicts);
	}
	pthread_mutex_destroy(&r->verdict_mu);
	free(r);
}

unsigned registry_inflight(struct registry *r)
{
	return inflight_count(r->inflight);
}

enum MHD_Result registry_body(struct registry *r, struct request *rq, const char *data, size_t len)
{
	return push_http_body(r->ph, rq, data, len);
}

static enum MHD_Result handle_cb(void *ctx, struct request *rq)
{
	return registry_handle(ctx, rq);
}

static enum MHD_Result body_cb(void *ctx, struct request *rq, const char *data, size_t len)
{
	return registry_body(ctx, rq, data, len);
}

struct http_handler registry_http_handler(struct registry *r)
{
	return (struct http_handler){handle_cb, body_cb, r};
}

void registry_maintain(struct registry *r)
{
	push_http_maintain(r->ph);
	struct rs_err err = {0};
	uint64_t freed = 0;
	if (blobstore_evict(r->store, &freed, &err) != RS_OK)
		log_event(LOG_WARN, "cache eviction failed: %s", err.msg);
	else if (freed)
		log_event(LOG_INFO, "cache eviction freed %llu bytes", (unsigned long long)freed);
}

/* ------------------------------------------------------------ names */

static enum rs_code pick_target(struct registry *r, struct request *rq, const char *name, struct route_target *t,
                                struct rs_err *err)
{
	const char *ns = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, "ns");
	enum rs_code rc = route_pick(r->cfg, ns, name, t, err);
	if (rc == RS_OK) {
		rq->upstream = r->cfg->upstreams[t->up_index].name;
		if (t->by_ns)
			rq->oci_namespace = rq->upstream;
	}
	return rc;
}

/* ------------------------------------------------------------ Accept */

struct accept_list {
	const char *values[RS_LIMIT_ACCEPT_MAX];
	size_t n;
};

static bool accepts(const struct accept_list *a, const char *type)
{
	return route_accepts(a->values, a->n, type);
}

/* A client that names a current manifest type: the tag map may follow what
 * the upstream gives it. */
static bool modern_client(const struct accept_list *a)
{
	return accepts(a, IMAGE_MT_DOCKER_MANIFEST) || accepts(a, IMAGE_MT_OCI_MANIFEST) || accepts(a, IMAGE_MT_OCI_INDEX) ||
	       accepts(a, IMAGE_MT_DOCKER_LIST);
}

static enum MHD_Result collect_accept(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	(void)kind;
	struct accept_list *a = cls;
	if (key && value && strcasecmp(key, "Accept") == 0 && a->n < RS_LIMIT_ACCEPT_MAX &&
	    strlen(value) <= RS_LIMIT_HEADER_MAX_BYTES)
		a->values[a->n++] = value;
	return MHD_YES;
}

/* ------------------------------------------------------------ manifests */

static enum MHD_Result answer_manifest(struct request *rq, char *body, size_t len, const char *type,
                                      const char *digest)
{
	if (rq->manifest_capture) {
		struct manifest_capture *c = rq->manifest_capture;
		c->got = true;
		c->body = body;
		c->len = len;
		c->type = strdup(type);
		snprintf(c->digest, sizeof(c->digest), "%s", digest);
		return MHD_YES;
	}
	return reply_manifest(rq, body, len, type, digest);
}

/* Serve manifest digest from the store. RS_NOT_FOUND when absent. */
static enum rs_code serve_stored_manifest(struct registry *r, struct request *rq, const char *digest, enum MHD_Result *ret, struct rs_err *err)
{
	char *buf = NULL, *type = NULL;
	size_t len = 0;
	enum rs_code rc = blobstore_get_manifest(r->store, digest, r->cfg->manifest_max_bytes, &buf, &len, &type, err);
	if (rc)
		return rc;
	*ret = answer_manifest(rq, buf, len, type, digest);
	free(type);
	return RS_OK;
}

/* The upstream's error answer, passed through when it is registry JSON,
 * else mapped. Upstream auth failures become DENIED: the client cannot fix
 * the proxy's credentials, and a bare 401 would send it looking for a token
 * service we do not have. */
static enum MHD_Result answer_upstream_error(struct request *rq, const struct upstream_reply *rep, enum reply_what what)
{
	const char *up = rq->upstream ? rq->upstream : "upstream";
	struct rs_err e;
	if (rep->status == 401 || rep->status == 403) {
		rs_err_set(&e, RS_DENIED, "upstream %s refused access (HTTP %ld); check its credentials", up, rep->status);
		return reply_fail(rq, &e, what, NULL, 0);
	}
	if (rep->status == 404) {
		rs_err_set(&e, RS_NOT_FOUND, "%s not found upstream (%s)",
		           what == REPLY_MANIFEST ? "manifest" : what == REPLY_BLOB ? "blob" : "repository", up);
		if (rep->body && strstr(rep->body, "\"errors\"") && rep->body_len < RS_LIMIT_ERROR_BODY_MAX_BYTES) {
			char *copy = malloc(rep->body_len);
			if (copy) {
				memcpy(copy, rep->body, rep->body_len);
				return reply_error_passed(rq, RS_NOT_FOUND, what, copy, rep->body_len, e.msg);
			}
		}
		return reply_fail(rq, &e, what, NULL, 0);
	}
	if (rep->status == 429) {
		rs_err_set(&e, RS_THROTTLED, "upstream %s is rate limiting requests (HTTP 429)", up);
		return reply_fail(rq, &e, what, NULL, 0);
	}
	rs_err_set(&e, RS_UPSTREAM, "upstream %s answered HTTP %ld", up, rep->status);
	return reply_fail(rq, &e, what, NULL, 0);
}

static bool status_ok(long s)
{
	return s >= 200 && s < 300;
}

/* ------------------------------------------------------------ repository links */

/* The mirror's repository links (blobstore.h): (upstream name, upstream
 * repository) holds a cached object once the upstream answered for it. A
 * link that cannot be written is logged: the next request asks again. */
static bool mirror_linked(struct registry *r, size_t up_index, const char *repo, enum blobstore_kind kind,
                          const char *digest)
{
	return blobstore_linked(r->store, r->cfg->upstreams[up_index].name, repo, kind, digest);
}

static void mirror_link(struct registry *r, size_t up_index, const char *repo, enum blobstore_kind kind,
                        const char *digest)
{
	struct rs_err err = {0};
	if (blobstore_link(r->store, r->cfg->upstreams[up_index].name, repo, kind, digest, &err) != RS_OK)
		log_event(LOG_WARN, "could not link %s to %s/%s: %s", digest, r->cfg->upstreams[up_index].name, repo,
		          err.msg);
}

/* Ask the upstream whether repo has digest (HEAD); a 2xx answer links it.
 * RS_OK with rep->status set for any HTTP answer (rep is the caller's to
 * dispose); RS_UPSTREAM / RS_TIMEOUT when it cannot be asked. */
static enum rs_code mirror_ask(struct registry *r, size_t up_index, const char *repo, enum blobstore_kind kind,
                               const char *digest, struct upstream_reply *rep, struct rs_err *err)
{
	static const char *const acc[] = {IMAGE_MT_OCI_MANIFEST, IMAGE_MT_DOCKER_MANIFEST, IMAGE_MT_OCI_INDEX,
	                                  IMAGE_MT_DOCKER_LIST};
	const char *upname = r->cfg->upstreams[up_index].name;
	metrics_upstream(upname, METRICS_UP_REQUESTS);
	enum rs_code rc =
		kind == BLOBSTORE_BLOB
			? upstream_blob_head(r->ups[up_index], repo, digest, rep, err)
			: upstream_manifest(r->ups[up_index], repo, digest, acc, 4, true, r->cfg->manifest_max_bytes, rep, err);
	if (rc || rep->status >= 500)
		metrics_upstream(upname, METRICS_UP_ERRORS);
	if (rc == RS_OK && status_ok(rep->status)) {
		mirror_link(r, up_index, repo, kind, digest);
		log_event(LOG_DEBUG, "upstream %s confirmed %s for %s", upname, digest, repo);
	}
	return rc;
}

/* mirror_ask as one code: RS_OK when the upstream confirmed (now linked),
 * RS_NOT_FOUND for 404, RS_DENIED for 401/403, RS_UPSTREAM otherwise. */
static enum rs_code mirror_confirm(struct registry *r, size_t up_index, const char *repo, enum blobstore_kind kind,
                                   const char *digest, struct rs_err *err)
{
	struct upstream_reply rep = {0};
	enum rs_code rc = mirror_ask(r, up_index, repo, kind, digest, &rep, err);
	const char *upname = r->cfg->upstreams[up_index].name;
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
static bool mirror_stale_ok(struct registry *r, size_t up_index, const char *repo, enum blobstore_kind kind,
                            const char *digest, enum rs_code rc, const struct upstream_reply *rep)
{
	if (rc == RS_OK && rep->status < 500 && rep->status != 429)
		return false;
	if (!blobstore_linked_by_image(r->store, r->cfg->upstreams[up_index].name, repo, kind, digest))
		return false;
	metrics_add(METRICS_STALE_SERVED, 1);
	log_event(LOG_WARN, "serving cached %s under %s: the upstream %s could not confirm it, a manifest of %s names it",
	          digest, repo, r->cfg->upstreams[up_index].name, repo);
	return true;
}

/* Fetch a manifest from the upstream, verify it and store it; on success
 * rep holds the body and *out_digest its digest. want_digest (may be NULL)
 * is the digest the client asked for. */
static bool is_schema1(const char *type)
{
	return type && (strncmp(type, IMAGE_MT_DOCKER_V1, strlen(IMAGE_MT_DOCKER_V1)) == 0 ||
	                strncmp(type, IMAGE_MT_DOCKER_V1_SIGNED, strlen(IMAGE_MT_DOCKER_V1_SIGNED)) == 0);
}

static enum rs_code fetch_manifest(struct registry *r, const struct route_target *t, const struct accept_list *acc,
                                   const char *want_digest, struct upstream_reply *rep,
                                   char out_digest[DIGEST_STR_SIZE], bool *out_stored, struct rs_err *err)
{
	*out_stored = false;
	struct upstream *u = r->ups[t->up_index];
	const char *upname = r->cfg->upstreams[t->up_index].name;
	metrics_upstream(upname, METRICS_UP_REQUESTS);
	enum rs_code rc = upstream_manifest(u, t->repo, t->ref, acc->values, acc->n, false,
	                                    r->cfg->manifest_max_bytes, rep, err);
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
	const char *type = rep->content_type ? rep->content_type : JSON_TYPE;
	enum rs_code prc = blobstore_put_manifest(r->store, out_digest, type, rep->body, rep->body_len, err);
	*out_stored = prc == RS_OK;
	if (prc == RS_OK) /* the upstream gave it for this repository: linked there */
		mirror_link(r, t->up_index, t->repo, BLOBSTORE_MANIFEST, out_digest);
	return prc;
}

static enum MHD_Result serve_fetched(struct request *rq, struct upstream_reply *rep, const char *digest)
{
	char *body = rep->body;
	size_t len = rep->body_len;
	const char *type = rep->content_type ? rep->content_type : JSON_TYPE;
	rep->body = NULL; /* handed to the response */
	return answer_manifest(rq, body, len, type, digest);
}

/* A manifest pushed to regslim (push store): true when it was served. A
 * digest is served only under a repository that holds it (name non-NULL);
 * a pushed tag's manifest (name NULL) is its repository's by the tag map. */
static bool serve_pushed_manifest(struct registry *r, struct request *rq, const char *name, const char *digest,
                                  enum MHD_Result *ret)
{
	char *buf = NULL, *type = NULL;
	size_t len = 0;
	struct rs_err err = {0};
	struct push *p = push_http_push(r->ph);
	if (name && !push_holds(p, name, BLOBSTORE_MANIFEST, digest))
		return false;
	if (blobstore_get_manifest(push_store(p), digest, r->cfg->manifest_max_bytes, &buf, &len, &type, &err) !=
	    RS_OK)
		return false;
	rq->cache = "pushed";
	*ret = answer_manifest(rq, buf, len, type, digest);
	free(type);
	return true;
}

/* A reference with a ':' must be a digest we can check: anything else,
 * an unknown algorithm included, is the client's 400 DIGEST_INVALID. */
static bool ref_digest_ok(const char *ref, struct rs_err *err)
{
	if (digest_parse(ref, err) == RS_OK)
		return true;
	err->code = RS_DIGEST_INVALID;
	return false;
}

/* A manifest by digest is served under t only if t's repository holds it
 * (issue 11): linked to the mirror's repository (fetched or confirmed for it
 * by the upstream), or pushed to the name. A cached copy without a link for
 * this repository is served only after the upstream confirms it (HEAD); a
 * copy not cached is fetched from the upstream for this repository. */
static enum MHD_Result manifest_by_digest(struct registry *r, struct request *rq, const struct route_target *t,
                                          const struct accept_list *acc)
{
	struct rs_err err = {0};
	enum MHD_Result ret = MHD_NO;
	if (!ref_digest_ok(t->ref, &err))
		return reply_fail(rq, &err, REPLY_MANIFEST, NULL, 0);
	bool had_copy = blobstore_has(r->store, BLOBSTORE_MANIFEST, t->ref);
	bool linked = had_copy && mirror_linked(r, t->up_index, t->repo, BLOBSTORE_MANIFEST, t->ref);
	if (serve_pushed_manifest(r, rq, t->name, t->ref, &ret))
		return ret;
	if (had_copy && !linked) {
		struct upstream_reply head = {0};
		enum rs_code rc = mirror_ask(r, t->up_index, t->repo, BLOBSTORE_MANIFEST, t->ref, &head, &err);
		if ((rc || !status_ok(head.status)) &&
		    !mirror_stale_ok(r, t->up_index, t->repo, BLOBSTORE_MANIFEST, t->ref, rc, &head)) {
			/* not this repository's (or the upstream cannot say so now):
			 * never served from another repository's copy */
			rq->cache = "unlinked";
			ret = rc ? reply_fail(rq, &err, REPLY_MANIFEST, NULL, 0) : answer_upstream_error(rq, &head, REPLY_MANIFEST);
			upstream_reply_dispose(&head);
			return ret;
		}
		upstream_reply_dispose(&head);
		linked = true;
	}
	if (linked) {
		enum rs_code rc = serve_stored_manifest(r, rq, t->ref, &ret, &err);
		if (rc == RS_OK) {
			rq->cache = "hit";
			metrics_cache(METRICS_MANIFEST, 1);
			return ret;
		}
		if (rc != RS_NOT_FOUND)
			return reply_fail(rq, &err, REPLY_MANIFEST, NULL, 0);
		log_event(LOG_WARN, "%s", err.msg); /* a corrupt stored copy was dropped, or it was evicted */
	}
	rq->cache = "miss";
	metrics_cache(METRICS_MANIFEST, 0);
	struct upstream_reply rep = {0};
	char digest[DIGEST_STR_SIZE];
	rs_err_clear(&err);
	bool stored;
	enum rs_code rc = fetch_manifest(r, t, acc, t->ref, &rep, digest, &stored, &err);
	if (rc)
		ret = reply_fail(rq, &err, REPLY_MANIFEST, NULL, 0);
	else if (!status_ok(rep.status))
		ret = answer_upstream_error(rq, &rep, REPLY_MANIFEST);
	else
		ret = serve_fetched(rq, &rep, digest);
	upstream_reply_dispose(&rep);
	return ret;
}

static bool stored_acceptable(const struct blobstore_tag *tag, const struct accept_list *acc)
{
	return accepts(acc, tag->media_type);
}

static void remember_tag(struct registry *r, const struct route_target *t, const char *digest, const char *type)
{
	struct blobstore_tag tag = {0};
	struct rs_err err = {0};
	snprintf(tag.digest, sizeof(tag.digest), "%s", digest);
	snprintf(tag.media_type, sizeof(tag.media_type), "%s", type ? type : JSON_TYPE);
	tag.fetched = time(NULL);
	if (blobstore_put_tag(r->store, r->cfg->upstreams[t->up_index].name, t->repo, t->ref, &tag, &err) != RS_OK)
		log_event(LOG_WARN, "could not record tag %s:%s: %s", t->repo, t->ref, err.msg);
}

/* Serve the stored tag answer as a stale copy because the upstream failed. */
static enum MHD_Result serve_stale(struct registry *r, struct request *rq, const struct route_target *t,
                                   const struct blobstore_tag *tag, const char *why, bool *served)
{
	struct rs_err err = {0};
	enum MHD_Result ret = MHD_NO;
	*served = false;
	if (serve_stored_manifest(r, rq, tag->digest, &ret, &err) != RS_OK)
		return MHD_NO;
	*served = true;
	rq->cache = "stale";
	metrics_add(METRICS_STALE_SERVED, 1);
	log_event(LOG_WARN, "serving stale %s:%s (%s, fetched %lds ago) because upstream %s failed: %s", t->repo,
	          t->ref, tag->digest, (long)(time(NULL) - tag->fetched), rq->upstream, why);
	return ret;
}

static enum MHD_Result manifest_by_tag(struct registry *r, struct request *rq, const struct route_target *t,
                                       const struct accept_list *acc)
{
	if (!refname_tag_valid(t->ref)) {
		struct rs_err e;
		rs_err_set(&e, RS_BAD_INPUT, "invalid tag '%.130s'", t->ref);
		return reply_error(rq, RS_BAD_INPUT, REPLY_TAG, e.msg, NULL, 0);
	}
	const struct rs_upstream_config *upc = &r->cfg->upstreams[t->up_index];
	struct blobstore_tag tag = {0};
	struct rs_err err = {0};
	enum MHD_Result ret = MHD_NO;
	/* A tag pushed to regslim shadows the upstream's tag of that name. */
	if (push_get_tag(push_http_push(r->ph), t->name, t->ref, &tag, &err) == RS_OK &&
	    serve_pushed_manifest(r, rq, NULL, tag.digest, &ret))
		return ret;
	memset(&tag, 0, sizeof(tag));
	rs_err_clear(&err);
	bool have = blobstore_get_tag(r->store, upc->name, t->repo, t->ref, &tag, &err) == RS_OK &&
	            blobstore_has(r->store, BLOBSTORE_MANIFEST, tag.digest);
	bool usable = have && stored_acceptable(&tag, acc);
	time_t now = time(NULL);
	bool fresh = usable && now >= tag.fetched && (uint64_t)(now - tag.fetched) < upc->tag_ttl_s;

	if (fresh) {
		rs_err_clear(&err);
		if (serve_stored_manifest(r, rq, tag.digest, &ret, &err) == RS_OK) {
			rq->cache = "hit";
			metrics_cache(METRICS_MANIFEST, 1);
			return ret;
		}
	}
	struct upstream *u = r->ups[t->up_index];
	if (usable) {
		/* Revalidate with HEAD: it does not count as a pull on Docker Hub. */
		struct upstream_reply head = {0};
		rs_err_clear(&err);
		metrics_upstream(upc->name, METRICS_UP_REQUESTS);
		enum rs_code rc = upstream_manifest(u, t->repo, t->ref, acc->values, acc->n, true,
		                                    r->cfg->manifest_max_bytes, &head, &err);
		if (rc || head.status >= 500 || head.status == 429) {
			char why[RS_ERR_MSG_MAX];
			snprintf(why, sizeof(why), "%s", rc ? err.msg : "5xx/429 answer");
			if (rc || head.status >= 500)
				metrics_upstream(upc->name, METRICS_UP_ERRORS);
			upstream_reply_dispose(&head);
			bool served;
			ret = serve_stale(r, rq, t, &tag, why, &served);
			if (served)
				return ret;
		} else if (status_ok(head.status) && head.digest[0] && strcmp(head.digest, tag.digest) == 0) {
			upstream_reply_dispose(&head);
			remember_tag(r, t, tag.digest, tag.media_type);
			rs_err_clear(&err);
			if (serve_stored_manifest(r, rq, tag.digest, &ret, &err) == RS_OK) {
				rq->cache = "hit";
				metrics_cache(METRICS_MANIFEST, 1);
				return ret;
			}
		} else {
			upstream_reply_dispose(&head);
		}
	}

	/* Miss, moved tag, or a client that wants another type: GET upstream. */
	rq->cache = "miss";
	metrics_cache(METRICS_MANIFEST, 0);
	struct upstream_reply rep = {0};
	char digest[DIGEST_STR_SIZE];
	rs_err_clear(&err);
	bool stored;
	enum rs_code rc = fetch_manifest(r, t, acc, NULL, &rep, digest, &stored, &err);
	if (rc == RS_UPSTREAM || rc == RS_TIMEOUT || (rc == RS_OK && (rep.status >= 500 || rep.status == 429))) {
		if (have) {
			char why[RS_ERR_MSG_MAX];
			snprintf(why, sizeof(why), "%s", rc ? err.msg : "5xx/429 answer");
			bool served;
			ret = serve_stale(r, rq, t, &tag, why, &served);
			if (served) {
				upstream_reply_dispose(&rep);
				return ret;
			}
		}
	}
	if (rc)
		ret = reply_fail(rq, &err, REPLY_MANIFEST, NULL, 0);
	else if (!status_ok(rep.status))
		ret = answer_upstream_error(rq, &rep, REPLY_MANIFEST);
	else {
		if (stored && modern_client(acc))
			remember_tag(r, t, digest, rep.content_type);
		ret = serve_fetched(rq, &rep, digest);
	}
	upstream_reply_dispose(&rep);
	return ret;
}

/* ------------------------------------------------------------ blobs */

static enum MHD_Result blob_from_store(struct request *rq, const char *digest, int fd, uint64_t size)
{
	struct route_range rg;
	struct rs_err err = {0};
	const char *rh = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_RANGE);
	if (route_parse_range(rh, size, &rg, &err) != RS_OK) {
		close(fd);
		return reply_range_error(rq, &err, size);
	}
	struct reply_blob b = {digest, &rg, size, true};
	return reply_blob_fd(rq, &b, fd, rq->tls);
}

/* The download job handed to inflight.c. */
struct download {
	struct registry *r;
	size_t up_index;
	struct upstream *u;
	const char *upname;
	char repo[RS_LIMIT_NAME_MAX + 16];
	char digest[DIGEST_STR_SIZE];
	bool new_link; /* download_begin made the link: it goes again if the download fails */
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
	if (!mirror_linked(d->r, d->up_index, d->repo, BLOBSTORE_BLOB, d->digest)) {
		mirror_link(d->r, d->up_index, d->repo, BLOBSTORE_BLOB, d->digest);
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

static enum rs_code download_run(struct inflight_fetch *f, void *arg, struct rs_err *err)
{
	struct download *d = arg;
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

/* inflight's arg_free, called once the download is committed or abandoned:
 * a link made for it goes again when the blob did not make it into the store
 * (cut off, or failed its digest check), since a link comes with its content. */
static void download_free(void *arg)
{
	struct download *d = arg;
	if (d && d->new_link && !blobstore_has(d->r->store, BLOBSTORE_BLOB, d->digest))
		blobstore_unlink(d->r->store, d->upname, d->repo, BLOBSTORE_BLOB, d->digest);
	free(d);
}

struct blob_stream {
	struct inflight_fetch *f;
	struct request *rq;
	uint64_t start, end; /* end UINT64_MAX when unknown */
	unsigned stall_s;
	bool failed;
};

static ssize_t blob_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct blob_stream *s = cls;
	uint64_t at = s->start + pos;
	if (at >= s->end)
		return MHD_CONTENT_READER_END_OF_STREAM;
	if (max > s->end - at)
		max = (size_t)(s->end - at);
	struct rs_err err = {0};
	ssize_t n = inflight_read(s->f, at, buf, max, s->stall_s, &err);
	if (n > 0) {
		metrics_add(METRICS_CLIENT_BYTES, (uint64_t)n);
		return n;
	}
	if (n == 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	/* Abort the connection: the client must not see a body that looks
	 * complete (STYLE.md "Tees fail loudly"). */
	s->failed = true;
	log_event(LOG_WARN, "aborting blob response for %s at byte %llu: %s", s->rq->url, (unsigned long long)at,
	          err.msg);
	return MHD_CONTENT_READER_END_WITH_ERROR;
}

static void blob_stream_free(void *cls)
{
	struct blob_stream *s = cls;
	inflight_release(s->f);
	free(s);
}

static enum MHD_Result blob_head_miss(struct registry *r, struct request *rq, const struct route_target *t)
{
	struct upstream_reply rep = {0};
	struct rs_err err = {0};
	if (mirror_ask(r, t->up_index, t->repo, BLOBSTORE_BLOB, t->ref, &rep, &err) != RS_OK)
		return reply_fail(rq, &err, REPLY_BLOB, NULL, 0);
	enum MHD_Result ret;
	if (!status_ok(rep.status)) {
		ret = answer_upstream_error(rq, &rep, REPLY_BLOB);
	} else {
		struct route_range rg = {.partial = false};
		struct reply_blob b = {t->ref, &rg, rep.content_length >= 0 ? (uint64_t)rep.content_length : 0,
		                       rep.content_length >= 0};
		ret = reply_blob_head(rq, &b);
	}
	upstream_reply_dispose(&rep);
	return ret;
}

/* A blob is served under t only if t's repository holds it (issue 11):
 * linked to the mirror's repository, or pushed to the name. A cached blob
 * without a link for this repository is served only once the upstream
 * confirms it (HEAD); a missing one is downloaded for this repository. */
static enum MHD_Result blob_get(struct registry *r, struct request *rq, const struct route_target *t, bool head)
{
	struct rs_err err = {0};
	if (!ref_digest_ok(t->ref, &err))
		return reply_fail(rq, &err, REPLY_BLOB, NULL, 0);
	int fd = -1;
	uint64_t size = 0;
	struct push *p = push_http_push(r->ph);
	if (push_holds(p, t->name, BLOBSTORE_BLOB, t->ref) &&
	    blobstore_open_object(push_store(p), BLOBSTORE_BLOB, t->ref, &fd, &size, &err) == RS_OK) {
		rq->cache = "pushed";
		return blob_from_store(rq, t->ref, fd, size);
	}
	rs_err_clear(&err);
	bool cached = blobstore_has(r->store, BLOBSTORE_BLOB, t->ref);
	if (cached && !mirror_linked(r, t->up_index, t->repo, BLOBSTORE_BLOB, t->ref)) {
		struct upstream_reply rep = {0};
		enum rs_code rc = mirror_ask(r, t->up_index, t->repo, BLOBSTORE_BLOB, t->ref, &rep, &err);
		if ((rc || !status_ok(rep.status)) &&
		    !mirror_stale_ok(r, t->up_index, t->repo, BLOBSTORE_BLOB, t->ref, rc, &rep)) {
			rq->cache = "unlinked";
			enum MHD_Result ret = rc ? reply_fail(rq, &err, REPLY_BLOB, NULL, 0) : answer_upstream_error(rq, &rep, REPLY_BLOB);
			upstream_reply_dispose(&rep);
			return ret;
		}
		upstream_reply_dispose(&rep);
	}
	enum rs_code rc = cached ? blobstore_open_object(r->store, BLOBSTORE_BLOB, t->ref, &fd, &size, &err) : RS_NOT_FOUND;
	if (rc == RS_OK) {
		rq->cache = "hit";
		metrics_cache(METRICS_BLOB, 1);
		return blob_from_store(rq, t->ref, fd, size);
	}
	if (rc != RS_NOT_FOUND)
		return reply_fail(rq, &err, REPLY_BLOB, NULL, 0);
	rq->cache = "miss";
	metrics_cache(METRICS_BLOB, 0);
	if (head)
		return blob_head_miss(r, rq, t);

	const struct rs_upstream_config *upc = &r->cfg->upstreams[t->up_index];
	struct download *d = calloc(1, sizeof(*d));
	if (!d)
		return MHD_NO;
	d->r = r;
	d->up_index = t->up_index;
	d->u = r->ups[t->up_index];
	d->upname = upc->name;
	snprintf(d->repo, sizeof(d->repo), "%s", t->repo);
	snprintf(d->digest, sizeof(d->digest), "%s", t->ref);
	struct inflight_fetch *f = NULL;
	rs_err_clear(&err);
	if (inflight_join(r->inflight, t->ref, -1, download_run, d, download_free, &f, &err) != RS_OK)
		return reply_fail(rq, &err, REPLY_BLOB, NULL, 0);
	int64_t total = -1;
	rs_err_clear(&err);
	rc = inflight_wait_begin(f, upc->timeout_s + BEGIN_WAIT_SLACK_S, &total, &err);
	if (rc) {
		inflight_release(f);
		if (rc == RS_DIGEST_MISMATCH)
			err.code = RS_UPSTREAM;
		return reply_fail(rq, &err, REPLY_BLOB, NULL, 0);
	}
	/* Joined a download started for another repository (or the blob was
	 * committed meanwhile): this repository must be confirmed too. */
	if (!mirror_linked(r, t->up_index, t->repo, BLOBSTORE_BLOB, t->ref)) {
		struct upstream_reply rep = {0};
		rs_err_clear(&err);
		rc = mirror_ask(r, t->up_index, t->repo, BLOBSTORE_BLOB, t->ref, &rep, &err);
		if (rc || !status_ok(rep.status)) {
			inflight_release(f);
			rq->cache = "unlinked";
			enum MHD_Result ret = rc ? reply_fail(rq, &err, REPLY_BLOB, NULL, 0) : answer_upstream_error(rq, &rep, REPLY_BLOB);
			upstream_reply_dispose(&rep);
			return ret;
		}
		upstream_reply_dispose(&rep);
	}
	struct route_range rg = {.partial = false, .start = 0, .end = UINT64_MAX};
	if (total >= 0) {
		const char *rh = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_RANGE);
		rs_err_clear(&err);
		if (route_parse_range(rh, (uint64_t)total, &rg, &err) != RS_OK) {
			inflight_release(f);
			return reply_range_error(rq, &err, (uint64_t)total);
		}
	}
	struct blob_stream *s = calloc(1, sizeof(*s));
	if (!s) {
		inflight_release(f);
		return MHD_NO;
	}
	s->f = f;
	s->rq = rq;
	s->start = rg.start;
	s->end = rg.end;
	s->stall_s = upc->timeout_s;
	struct reply_blob b = {t->ref, &rg, total >= 0 ? (uint64_t)total : 0, total >= 0};
	return reply_blob_stream(rq, &b, blob_stream_read, s, blob_stream_free);
}

/* ------------------------------------------------------------ optimized pulls */

/* optpull's blob fetch: join (or start) the single-flight download of digest
 * and wait until it is verified and committed. Runs in an optpull worker. */
static enum rs_code opt_fetch_blob(void *ctx, size_t up_index, const char *repo, const char *digest,
                                   struct rs_err *err)
{
	struct registry *r = ctx;
	const struct rs_upstream_config *upc = &r->cfg->upstreams[up_index];
	struct download *d = calloc(1, sizeof(*d));
	if (!d)
		return rs_err_set(err, RS_NOMEM, "out of memory fetching %s", digest);
	d->r = r;
	d->up_index = up_index;
	d->u = r->ups[up_index];
	d->upname = upc->name;
	snprintf(d->repo, sizeof(d->repo), "%s", repo);
	snprintf(d->digest, sizeof(d->digest), "%s", digest);
	struct inflight_fetch *f = NULL;
	enum rs_code rc = inflight_join(r->inflight, digest, -1, download_run, d, download_free, &f, err);
	if (rc)
		return rc;
	int64_t total = -1;
	rc = inflight_wait_begin(f, upc->timeout_s + BEGIN_WAIT_SLACK_S, &total, err);
	/* Read from the announced end (or the start when the size is unknown):
	 * the last bytes become readable only once the blob is verified. */
	uint64_t pos = total >= 0 ? (uint64_t)total : 0;
	char buf[16 * 1024];
	for (unsigned stalls = 0; rc == RS_OK;) {
		rs_err_clear(err);
		ssize_t n = inflight_read(f, pos, buf, sizeof(buf), upc->timeout_s, err);
		if (n == 0)
			break;
		if (n > 0) {
			pos += (uint64_t)n;
			continue;
		}
		if (err->code == RS_TIMEOUT && ++stalls < 3)
			continue;
		rc = err->code ? err->code : RS_UPSTREAM;
	}
	inflight_release(f);
	if (rc == RS_OK && !blobstore_has(r->store, BLOBSTORE_BLOB, digest))
		rc = rs_err_set(err, RS_IO, "blob %s was downloaded but is not in the store (evicted?)", digest);
	return rc;
}

/* optpull's manifest fetch: GET by digest from the upstream, verified and stored. */
static enum rs_code opt_fetch_manifest(void *ctx, size_t up_index, const char *repo, const char *digest,
                                       struct rs_err *err)
{
	struct registry *r = ctx;
	if (blobstore_has(r->store, BLOBSTORE_MANIFEST, digest))
		return RS_OK;
	struct route_target t = {.up_index = up_index, .ref = digest};
	snprintf(t.repo, sizeof(t.repo), "%s", repo);
	snprintf(t.name, sizeof(t.name), "%s", repo);
	struct accept_list acc = {.values = {IMAGE_MT_OCI_MANIFEST, IMAGE_MT_DOCKER_MANIFEST, IMAGE_MT_OCI_INDEX, IMAGE_MT_DOCKER_LIST}, .n = 4};
	struct upstream_reply rep = {0};
	char got[DIGEST_STR_SIZE];
	bool stored = false;
	enum rs_code rc = fetch_manifest(r, &t, &acc, digest, &rep, got, &stored, err);
	if (rc == RS_OK && !status_ok(rep.status))
		rc = rs_err_set(err, rep.status == 404 ? RS_NOT_FOUND : RS_UPSTREAM,
		                "upstream %s answered HTTP %ld for manifest %s", r->cfg->upstreams[up_index].name,
		                rep.status, digest);
	else if (rc == RS_OK && !stored)
		rc = rs_err_set(err, RS_BAD_INPUT, "manifest %s (%s) cannot be stored", digest,
		                rep.content_type ? rep.content_type : "no type");
	upstream_reply_dispose(&rep);
	return rc;
}

/* A tag pull of a repository that a policy optimizes (DESIGN.md "The pull
 * path" point 3): resolve the tag exactly as for the mirror (TTL, HEAD
 * revalidation, stale-if-error; the original goes in the tag map), then
 * answer with the optimized twin of that manifest, or with the original when
 * the optimization is not ready within sync_timeout_s, failed, or the client
 * cannot take it. A tag pull never fails because optimization failed. */
static enum MHD_Result manifest_tag_optimized(struct registry *r, struct request *rq, const struct route_target *t,
                                              const struct accept_list *acc, const struct rs_opt_policy *pol)
{
	struct manifest_capture cap = {0};
	rq->manifest_capture = &cap;
	enum MHD_Result ret = manifest_by_tag(r, rq, t, acc);
	rq->manifest_capture = NULL;
	if (!cap.got)
		return ret; /* an error answer was queued */
	const char *ua = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_USER_AGENT);
	struct optpull_client cl = optpull_client_of(ua);
	enum optpull_variant v = optpull_choose_variant(pol, cl);
	struct optpull_result res = {0};
	struct rs_err err = {0};
	const char *reason = NULL;
	if (rq->cache && strcmp(rq->cache, "pushed") == 0) {
		return answer_manifest(rq, cap.body, cap.len, cap.type ? cap.type : JSON_TYPE, cap.digest);
	} else if (!cap.type || !blobstore_has(r->store, BLOBSTORE_MANIFEST, cap.digest)) {
		reason = "not_cached"; /* schema 1, or the store refused it */
		rs_err_set(&err, RS_BAD_INPUT, "the original manifest (%s) is not in the store",
		           cap.type ? cap.type : "no type");
	} else if (!accepts(acc, IMAGE_MT_OCI_MANIFEST) && !accepts(acc, IMAGE_MT_OCI_INDEX)) {
		reason = "client_accept";
		rs_err_set(&err, RS_BAD_INPUT, "the client accepts no OCI manifest type");
	} else {
		struct optpull_request oq = {t->up_index, t->repo, cap.digest, pol, v};
		enum rs_code rc = optpull_get(r->opt, &res, &oq, r->cfg->optimize.sync_timeout_s, &err);
		if (rc == RS_TIMEOUT)
			reason = "timeout";
		else if (rc)
			reason = "failed";
		else if (!accepts(acc, res.media_type)) {
			reason = "client_accept";
			rs_err_set(&err, RS_BAD_INPUT, "the client does not accept %s", res.media_type);
		}
	}
	if (!reason && !mirror_linked(r, t->up_index, t->repo, BLOBSTORE_MANIFEST, res.digest)) {
		/* The optimized image is this repository's: made from the manifest
		 * the upstream just gave for it. Linked (blobs first) before the
		 * client asks for its blobs by digest. */
		rs_err_clear(&err);
		if (blobstore_link_image(r->store, r->cfg->upstreams[t->up_index].name, t->repo, res.digest, &err) != RS_OK)
			reason = "not_cached";
	}
	if (!reason) {
		rs_err_clear(&err);
		if (serve_stored_manifest(r, rq, res.digest, &ret, &err) == RS_OK) {
			metrics_variant_served(optpull_family_name(cl.family), optpull_variant_name(v));
			metrics_bytes_saved("served", res.bytes_saved);
			log_event(LOG_DEBUG, "serving optimized %s:%s %s (source %s, %s for %s)", t->repo, t->ref, res.digest,
			          cap.digest, optpull_variant_name(v), optpull_family_name(cl.family));
			free(cap.body);
			free(cap.type);
			return ret;
		}
		reason = "not_cached";
	}
	metrics_opt_fallback(reason);
	log_event(strcmp(reason, "failed") == 0 ? LOG_WARN : LOG_INFO,
	          "serving the original %s:%s (%s) instead of the optimized image (%s): %s", t->repo, t->ref,
	          cap.digest, reason, err.msg);
	ret = answer_manifest(rq, cap.body, cap.len, cap.type ? cap.type : JSON_TYPE, cap.digest);
	free(cap.type);
	return ret;
}

/* Replace every occurrence of path (at least as long as the replacement)
 * in the NUL-terminated body by "<data>". */
static void scrub_path(char *body, size_t *len, const char *path)
{
	static const char repl[] = "<data>";
	size_t pl = strlen(path);
	if (pl < sizeof(repl) - 1)
		return;
	for (char *p = strstr(body, path); p; p = strstr(p + sizeof(repl) - 1, path)) {
		memcpy(p, repl, sizeof(repl) - 1);
		memmove(p + sizeof(repl) - 1, p + pl, strlen(p + pl) + 1);
		*len -= pl - (sizeof(repl) - 1);
	}
}

/* GET /regslim/v1/reports/<name>/<digest>: the stored policy report of a
 * push, or the optimization report of an optimized pull. */
static enum MHD_Result serve_report(struct registry *r, struct request *rq)
{
	rq->route = "other";
	const char *rest = rq->url + strlen("/regslim/v1/reports/");
	const char *slash = strrchr(rest, '/');
	if (strcmp(rq->method, "GET") != 0 && strcmp(rq->method, "HEAD") != 0)
		return reply_error(rq, RS_UNSUPPORTED, REPLY_OTHER, "only GET and HEAD are allowed on reports", NULL, 0);
	if (!slash || slash == rest)
		return reply_error(rq, RS_NOT_FOUND, REPLY_ENDPOINT, "expected /regslim/v1/reports/<name>/<digest>", NULL, 0);
	char name[RS_LIMIT_NAME_MAX + 16];
	snprintf(name, sizeof(name), "%.*s", (int)(slash - rest), rest);
	if ((size_t)(slash - rest) > RS_LIMIT_NAME_MAX || !refname_repo_valid(name))
		return reply_error(rq, RS_BAD_INPUT, REPLY_OTHER, "invalid repository name in the report path", NULL, 0);
	enum MHD_Result gated;
	if (!push_http_gate(r->ph, rq, name, AUTH_PULL, &gated))
		return gated;
	struct rs_err err = {0};
	char *body = NULL;
	size_t len = 0;
	/* A push's policy report (gate.h: kept per pushed repository), else the
	 * report of an optimization for this name: only when the optimized
	 * manifest is linked to the name's repository (it was served there). */
	enum rs_code rc = gate_report_load(r->cfg->data_dir, name, slash + 1, &body, &len, &err);
	if (rc == RS_NOT_FOUND) {
		struct route_target t = {0};
		struct rs_err e2 = {0};
		err = (struct rs_err){0};
		if (r->opt && digest_valid(slash + 1) && route_pick(r->cfg, NULL, name, &t, &e2) == RS_OK &&
		    mirror_linked(r, t.up_index, t.repo, BLOBSTORE_MANIFEST, slash + 1))
			rc = optpull_report(r->opt, slash + 1, &body, &len, &err);
		if (rc == RS_NOT_FOUND)
			rs_err_set(&err, RS_NOT_FOUND, "no policy or optimization report for %s@%s", name, slash + 1);
	}
	if (rc != RS_OK)
		return reply_fail(rq, &err, REPLY_MANIFEST, NULL, 0);
	/* Reports written before they were kept free of host paths may name
	 * the data directory: never shown. */
	scrub_path(body, &len, r->cfg->data_dir);
	char *real = realpath(r->cfg->data_dir, NULL);
	if (real) {
		scrub_path(body, &len, real);
		free(real);
	}
	return reply_buffer(rq, 200, JSON_TYPE, body, len, REPLY_OWNED, NULL, 0);
}

/* ------------------------------------------------------------ tags/list */

/* Rewrite a Link header's upstream path (/v2/<repo>/) to the client's name. */
static char *rewrite_link(const char *link, const char *repo, const char *name)
{
	char from[RS_LIMIT_NAME_MAX + 32];
	snprintf(from, sizeof(from), "/v2/%s/", repo);
	const char *at = strstr(link, from);
	size_t cap = strlen(link) + strlen(name) + 8;
	char *out = malloc(cap);
	if (!out)
		return NULL;
	if (!at)
		snprintf(out, cap, "%s", link);
	else
		snprintf(out, cap, "%.*s/v2/%s/%s", (int)(at - link), link, name, at + strlen(from));
	return out;
}

static void url_encode(char *out, size_t cap, const char *s)
{
	static const char hx[] = "0123456789ABCDEF";
	size_t p = 0;
	for (; *s && p + 4 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
			out[p++] = (char)c;
		} else {
			out[p++] = '%';
			out[p++] = hx[c >> 4];
			out[p++] = hx[c & 15];
		}
	}
	out[p] = '\0';
}

static enum MHD_Result tags_list(struct registry *r, struct request *rq, const struct route_target *t)
{
	const char *n = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, "n");
	const char *last = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, "last");
	char query[512] = "", enc[400];
	size_t q = 0;
	if (n) {
		url_encode(enc, sizeof(enc) / 2, n);
		q += (size_t)snprintf(query + q, sizeof(query) - q, "n=%s", enc);
	}
	if (last && q < sizeof(query)) {
		url_encode(enc, sizeof(enc), last);
		snprintf(query + q, sizeof(query) - q, "%slast=%s", q ? "&" : "", enc);
	}
	struct upstream_reply rep = {0};
	struct rs_err err = {0};
	char *pushed = NULL;
	size_t pushed_len = 0;
	/* A repository pushed to regslim lists its pushed tags. */
	if (push_list_tags(push_http_push(r->ph), t->name, &pushed, &pushed_len, &err) == RS_OK)
		return reply_buffer(rq, 200, JSON_TYPE, pushed, pushed_len, REPLY_OWNED, NULL, 0);
	rs_err_clear(&err);
	const char *upname = r->cfg->upstreams[t->up_index].name;
	metrics_upstream(upname, METRICS_UP_REQUESTS);
	if (upstream_tags(r->ups[t->up_index], t->repo, query[0] ? query : NULL, r->cfg->manifest_max_bytes, &rep,
	                  &err) != RS_OK) {
		metrics_upstream(upname, METRICS_UP_ERRORS);
		return reply_fail(rq, &err, REPLY_NAME, NULL, 0);
	}
	enum MHD_Result ret;
	if (!status_ok(rep.status)) {
		ret = answer_upstream_error(rq, &rep, REPLY_NAME);
	} else {
		metrics_add(METRICS_UPSTREAM_BYTES, rep.body_len);
		char *link = rep.link ? rewrite_link(rep.link, t->repo, t->name) : NULL;
		struct reply_header h[] = {{MHD_HTTP_HEADER_LINK, link}};
		char *body = rep.body;
		rep.body = NULL; /* handed to the answer */
		ret = reply_buffer(rq, 200, JSON_TYPE, body, rep.body_len, REPLY_OWNED, h, 1);
		free(link);
	}
	upstream_reply_dispose(&rep);
	return ret;
}

/* ------------------------------------------------------------ routing */

static enum MHD_Result serve_metrics(struct request *rq)
{
	char *page = NULL;
	size_t len = 0;
	struct rs_err err = {0};
	if (metrics_render(&page, &len, &err) != RS_OK)
		return reply_fail(rq, &err, REPLY_OTHER, NULL, 0);
	return reply_buffer(rq, 200, "text/plain; version=0.0.4; charset=utf-8", page, len, REPLY_OWNED, NULL, 0);
}

/* ------------------------------------------------------------ policy on pull */

/* Every object of manifest digest (children of an index, configs, layers)
 * into the store, through the single-flight download. */
static enum rs_code pull_fetch_image(struct registry *r, const struct route_target *t, const char *digest,
                                     struct rs_err *err)
{
	char *buf = NULL, *type = NULL;
	size_t len = 0;
	enum rs_code rc = blobstore_get_manifest(r->store, digest, r->cfg->manifest_max_bytes, &buf, &len, &type, err);
	if (rc)
		return rc;
	enum imagejson_kind kind;
	rc = imagejson_sniff(&kind, buf, len, "manifest", err);
	if (rc == RS_OK && kind == IMAGEJSON_INDEX) {
		struct imagejson_index x = {0};
		rc = imagejson_parse_index(&x, buf, len, "index", err);
		for (size_t i = 0; rc == RS_OK && i < x.manifest_count; i++)
			if ((rc = opt_fetch_manifest(r, t->up_index, t->repo, x.manifests[i].digest, err)) == RS_OK)
				rc = pull_fetch_image(r, t, x.manifests[i].digest, err);
		imagejson_index_dispose(&x);
	} else if (rc == RS_OK) {
		struct imagejson_manifest m = {0};
		rc = imagejson_parse_manifest(&m, buf, len, "manifest", err);
		if (rc == RS_OK && !blobstore_has(r->store, BLOBSTORE_BLOB, m.config.digest))
			rc = opt_fetch_blob(r, t->up_index, t->repo, m.config.digest, err);
		for (size_t i = 0; rc == RS_OK && i < m.layer_count; i++)
			if (!blobstore_has(r->store, BLOBSTORE_BLOB, m.layers[i].digest))
				rc = opt_fetch_blob(r, t->up_index, t->repo, m.layers[i].digest, err);
		imagejson_manifest_dispose(&m);
	}
	free(buf);
	free(type);
	return rc;
}

/* The verdict of policy gp on digest: from the cache, else fetched, checked
 * and remembered. *denies and *text (new, NULL when no denies). */
static enum rs_code pull_verdict(struct registry *r, const struct route_target *t, const struct rs_gate_policy *gp,
                                 const char *digest, size_t *denies, char **text, struct rs_err *err)
{
	*denies = 0;
	*text = NULL;
	bool hit = false;
	pthread_mutex_lock(&r->verdict_mu);
	for (size_t i = 0; !hit && i < RS_LIMIT_GATE_PULL_VERDICTS; i++) {
		struct pull_verdict *v = &r->verdicts[i];
		if (v->policy == gp && strcmp(v->digest, digest) == 0) {
			hit = true;
			*denies = v->denies;
			if (v->text && !(*text = strdup(v->text)))
				*denies = 0, hit = false;
		}
	}
	pthread_mutex_unlock(&r->verdict_mu);
	if (hit)
		return RS_OK;
	enum rs_code rc = pull_fetch_image(r, t, digest, err);
	struct gate_report rep = {0};
	if (rc == RS_OK)
		rc = gate_check(&rep, gp, r->store, digest, 0, push_http_bases(r->ph), err);
	if (rc == RS_OK && rep.denies)
		rc = gate_report_text(text, &rep, GATE_DENY, err);
	for (size_t i = 0; rc == RS_OK && i < rep.count; i++)
		metrics_gate_finding(rep.items[i].rule, rep.items[i].action == GATE_DENY ? "deny" : "warn");
	*denies = rc == RS_OK ? rep.denies : 0;
	gate_report_dispose(&rep);
	if (rc) {
		free(*text);
		*text = NULL;
		return rc;
	}
	log_event(LOG_INFO, "pull policy check of %s:%s (%s): %zu violation(s)%s%s", t->name, t->ref, digest, *denies,
	          *text ? ": " : "", *text ? *text : "");
	char *copy = *text ? strdup(*text) : NULL;
	if (*text && !copy)
		return RS_OK; /* not remembered; the answer stands */
	pthread_mutex_lock(&r->verdict_mu);
	struct pull_verdict *v = &r->verdicts[r->verdict_next];
	r->verdict_next = (r->verdict_next + 1) % RS_LIMIT_GATE_PULL_VERDICTS;
	free(v->text);
	snprintf(v->digest, sizeof(v->digest), "%s", digest);
	v->policy = gp;
	v->denies = *denies;
	v->text = copy;
	pthread_mutex_unlock(&r->verdict_mu);
	return RS_OK;
}

/* A tag pull of a repository whose push policy has enforce_on_pull: resolve
 * the tag as the mirror does, evaluate the policy's rules over the image
 * (every layer fetched into the cache and scanned once per digest), answer
 * 403 DENIED listing the violations, else serve it (optimized when an
 * optimize policy applies too). Images pushed to regslim passed the gate
 * already and are served as they are. */
static enum MHD_Result manifest_tag_gated(struct registry *r, struct request *rq, const struct route_target *t,
                                          const struct accept_list *acc, const struct rs_gate_policy *gp,
                                          const struct rs_opt_policy *pol)
{
	struct manifest_capture cap = {0};
	rq->manifest_capture = &cap;
	enum MHD_Result ret = manifest_by_tag(r, rq, t, acc);
	rq->manifest_capture = NULL;
	if (!cap.got)
		return ret; /* an error answer was queued */
	if (rq->cache && strcmp(rq->cache, "pushed") == 0) {
		ret = answer_manifest(rq, cap.body, cap.len, cap.type ? cap.type : JSON_TYPE, cap.digest);
		free(cap.type);
		return ret;
	}
	struct rs_err err = {0};
	size_t denies = 0;
	char *text = NULL;
	enum rs_code rc;
	if (!blobstore_has(r->store, BLOBSTORE_MANIFEST, cap.digest))
		rc = rs_err_set(&err, RS_BAD_INPUT, "manifest %s (%s) cannot be checked: it is not stored", cap.digest,
		                cap.type ? cap.type : "no type");
	else
		rc = pull_verdict(r, t, gp, cap.digest, &denies, &text, &err);
	if (rc || denies) {
		free(cap.body);
		free(cap.type);
		size_t n = (text ? strlen(text) : 0) + strlen(err.msg) + RS_LIMIT_NAME_MAX + 256;
		char *msg = malloc(n);
		if (!msg) {
			free(text);
			return MHD_NO;
		}
		if (rc)
			snprintf(msg, n, "pull of %s:%s refused: the policy check failed: %s", t->name, t->ref, err.msg);
		else
			snprintf(msg, n, "pull of %s:%s (%s) refused by policy: %zu violation(s): %s", t->name, t->ref,
			         cap.digest, denies, text);
		log_event(LOG_WARN, "%s", msg);
		ret = reply_error_long(rq, RS_POLICY, REPLY_MANIFEST, msg);
		free(msg);
		free(text);
		return ret;
	}
	if (pol) {
		free(cap.body);
		free(cap.type);
		return manifest_tag_optimized(r, rq, t, acc, pol);
	}
	ret = answer_manifest(rq, cap.body, cap.len, cap.type ? cap.type : JSON_TYPE, cap.digest);
	free(cap.type);
	return ret;
}

/* "." or ".." as a path segment: no name, digest or upload id has one. */
static bool has_dot_segment(const char *url)
{
	size_t n = strlen(url);
	return strstr(url, "/./") || strstr(url, "/../") || (n >= 2 && strcmp(url + n - 2, "/.") == 0) ||
	       (n >= 3 && strcmp(url + n - 3, "/..") == 0);
}

enum MHD_Result registry_handle(struct registry *r, struct request *rq)
{
	static char healthz_body[] = "{\"status\":\"ok\"}\n";
	static char base_body[] = "{}\n";
	const char *url = rq->url;
	bool get = strcmp(rq->method, "GET") == 0;
	bool head = strcmp(rq->method, "HEAD") == 0;

	if (strcmp(url, "/healthz") == 0) {
		rq->route = "healthz";
		if (!get && !head)
			return reply_error(rq, RS_UNSUPPORTED, REPLY_OTHER, "only GET and HEAD are allowed on /healthz", NULL, 0);
		return reply_buffer(rq, 200, JSON_TYPE, healthz_body, strlen(healthz_body), REPLY_STATIC, NULL, 0);
	}
	if (strcmp(url, "/metrics") == 0) {
		rq->route = "metrics";
		if (!get && !head)
			return reply_error(rq, RS_UNSUPPORTED, REPLY_OTHER, "only GET and HEAD are allowed on /metrics", NULL, 0);
		return serve_metrics(rq);
	}
	if (push_http_is_token(url))
		return push_http_token(r->ph, rq);
	if (strncmp(url, "/regslim/v1/reports/", strlen("/regslim/v1/reports/")) == 0)
		return serve_report(r, rq);
	enum MHD_Result gated;
	if (strcmp(url, "/v2") == 0 || strcmp(url, "/v2/") == 0) {
		rq->route = "base";
		if (!get && !head)
			return reply_error(rq, RS_UNSUPPORTED, REPLY_OTHER, "only GET and HEAD are allowed on /v2/", NULL, 0);
		if (!push_http_gate(r->ph, rq, NULL, AUTH_PULL, &gated))
			return gated;
		return reply_buffer(rq, 200, JSON_TYPE, base_body, strlen(base_body), REPLY_STATIC, NULL, 0);
	}
	if (strncmp(url, "/v2/", 4) == 0 && has_dot_segment(url)) {
		rq->route = "other";
		return reply_error(rq, RS_BAD_INPUT, REPLY_OTHER, "the path has a '.' or '..' segment", NULL, 0);
	}
	/* Writes (uploads, manifest PUT, DELETE): push_http.c, gate included.
	 * A write with a body was set up (and its route named) while the body
	 * arrived, so its route is left alone here. */
	if (strncmp(url, "/v2/", 4) == 0 && push_http_is_write(rq->method, url))
		return push_http_handle(r->ph, rq);
	rq->route = "other";
	if (strncmp(url, "/v2/", 4) != 0)
		return reply_error(rq, RS_NOT_FOUND, REPLY_ENDPOINT, "no such endpoint; this is a registry API v2 mirror", NULL, 0);

	/* Split "/v2/<name>/<kind>/<ref>" from the right: names contain '/'. */
	size_t len = strlen(url);
	if (len > RS_LIMIT_NAME_MAX + 256)
		return reply_error(rq, RS_TOO_LARGE, REPLY_ENDPOINT, "request path too long", NULL, 0);
	char path[RS_LIMIT_NAME_MAX + 260];
	memcpy(path, url + 4, len - 4 + 1);
	char *last = strrchr(path, '/');
	if (!last || last == path)
		return reply_error(rq, RS_NOT_FOUND, REPLY_ENDPOINT, "no such endpoint", NULL, 0);
	*last = '\0';
	const char *ref = last + 1;
	char *kind = strrchr(path, '/');
	if (!kind)
		return reply_error(rq, RS_NOT_FOUND, REPLY_ENDPOINT, "no such endpoint", NULL, 0);
	*kind = '\0';
	kind++;
	const char *name = path;

	enum reply_what what;
	if (strcmp(kind, "manifests") == 0) {
		rq->route = "manifest";
		what = REPLY_MANIFEST;
	} else if (strcmp(kind, "blobs") == 0) {
		rq->route = "blob";
		what = REPLY_BLOB;
		if (strcmp(ref, "uploads") == 0)
			return reply_error(rq, RS_UNSUPPORTED, REPLY_OTHER,
			                          "this mirror is read-only: blob uploads are not supported", NULL, 0);
	} else if (strcmp(kind, "tags") == 0 && strcmp(ref, "list") == 0) {
		rq->route = "tags";
		what = REPLY_NAME;
	} else if (strstr(url, "/blobs/uploads/")) {
		rq->route = "blob";
		return reply_error(rq, RS_UNSUPPORTED, REPLY_OTHER, "this mirror is read-only: blob uploads are not supported",
		                   NULL, 0);
	} else {
		return reply_error(rq, RS_NOT_FOUND, REPLY_ENDPOINT, "no such endpoint", NULL, 0);
	}
	if (!get && !head) {
		char msg[160];
		snprintf(msg, sizeof(msg), "%.10s is not supported on %s: this mirror is read-only", rq->method,
		         rq->route);
		return reply_error(rq, RS_UNSUPPORTED, REPLY_OTHER, msg, NULL, 0);
	}
	/* The name is checked before it reaches any header (the auth
	 * challenge's scope) or the ACL. */
	struct route_target t = {0};
	struct rs_err err = {0};
	if (pick_target(r, rq, name, &t, &err) != RS_OK)
		return reply_fail(rq, &err, err.code == RS_NOT_FOUND ? REPLY_NAME : REPLY_OTHER, NULL, 0);
	t.ref = ref;
	if (!push_http_gate(r->ph, rq, name, AUTH_PULL, &gated))
		return gated;

	if (what == REPLY_NAME)
		return tags_list(r, rq, &t);
	if (what == REPLY_BLOB)
		return blob_get(r, rq, &t, head);

	struct accept_list acc = {.n = 0};
	MHD_get_connection_values(rq->conn, MHD_HEADER_KIND, collect_accept, &acc);
	if (strchr(ref, ':'))
		return manifest_by_digest(r, rq, &t, &acc);
	const struct rs_opt_policy *pol =
		r->opt ? config_find_opt_policy(r->cfg, r->cfg->upstreams[t.up_index].name, t.repo) : NULL;
	const struct rs_gate_policy *gp =
		r->verdicts && t.up_index == r->cfg->default_upstream
			? gate_policy_find(r->cfg->push.policies, r->cfg->push.policy_count, t.name)
			: NULL;
	if (gp && gp->enforce_on_pull)
		return manifest_tag_gated(r, rq, &t, &acc, gp, pol);
	if (pol)
		return manifest_tag_optimized(r, rq, &t, &acc, pol);
	return manifest_by_tag(r, rq, &t, &acc);
}
