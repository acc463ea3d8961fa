/* manifests: GET and HEAD of /v2/<name>/manifests/<reference> for the
 * pull-through mirror (DESIGN.md "The pull path", points 1, 2, 6 and 7).
 * By tag: a tag pushed to regslim first, else the tag map with its TTL, HEAD
 * revalidation and stale-if-error; by digest: where the source (source.h)
 * says its bytes come from, only under a repository that holds it (issue
 * 11), cached for good. It also reads the client's Accept list and hands
 * optpull.c the source's manifest fetch. It talks to the source (upstream
 * fetches, links), the store (store.h: tag maps, the cache and pushed
 * images) and upstream.c (tag revalidation), and answers through reply.h. With a cluster
 * section the tag map is shared too (cluster.h): a tag one replica confirmed is fresh for
 * every replica whose store holds the manifest; without one, or with Redis down, only the
 * store's map counts. */
#include "api_int.h"

#include "cluster.h"

#include "image.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "push_http.h"
#include "refname.h"
#include "source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ------------------------------------------------------------ Accept */

bool api_accepts(const struct accept_list *a, const char *type)
{
	return route_accepts(a->values, a->n, type);
}

/* A client that names a current manifest type: the tag map may follow what
 * the upstream gives it. */
static bool modern_client(const struct accept_list *a)
{
	return api_accepts(a, IMAGE_MT_DOCKER_MANIFEST) || api_accepts(a, IMAGE_MT_OCI_MANIFEST) || api_accepts(a, IMAGE_MT_OCI_INDEX) ||
	       api_accepts(a, IMAGE_MT_DOCKER_LIST);
}

enum MHD_Result api_collect_accept(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	(void)kind;
	struct accept_list *a = cls;
	if (key && value && strcasecmp(key, "Accept") == 0 && a->n < RS_LIMIT_ACCEPT_MAX &&
	    strlen(value) <= RS_LIMIT_HEADER_MAX_BYTES)
		a->values[a->n++] = value;
	return MHD_YES;
}

/* ------------------------------------------------------------ manifests */

enum MHD_Result api_answer_manifest(struct request *rq, char *body, size_t len, const char *type,
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
enum rs_code api_serve_stored_manifest(struct registry *r, struct request *rq, const char *digest, enum MHD_Result *ret, struct rs_err *err)
{
	char *buf = NULL, *type = NULL;
	size_t len = 0;
	enum rs_code rc =
		store_manifest_get(r->store, STORE_CACHE, digest, r->cfg->manifest_max_bytes, &buf, &len, &type, err);
	if (rc)
		return rc;
	*ret = api_answer_manifest(rq, buf, len, type, digest);
	free(type);
	return RS_OK;
}

/* Fetch a manifest from the upstream, verify it and store it (source.h);
 * on success rep holds the body and *out_digest its digest. want_digest
 * (may be NULL) is the digest the client asked for. */
static enum rs_code fetch_manifest(struct registry *r, const struct route_target *t, const struct accept_list *acc,
                                   const char *want_digest, struct upstream_reply *rep,
                                   char out_digest[DIGEST_STR_SIZE], bool *out_stored, struct rs_err *err)
{
	return source_fetch_manifest(r->src, t->up_index, t->repo, t->ref, acc->values, acc->n, want_digest, rep,
	                             out_digest, out_stored, err);
}

static enum MHD_Result serve_fetched(struct request *rq, struct upstream_reply *rep, const char *digest)
{
	char *body = rep->body;
	size_t len = rep->body_len;
	const char *type = rep->content_type ? rep->content_type : JSON_TYPE;
	rep->body = NULL; /* handed to the response */
	return api_answer_manifest(rq, body, len, type, digest);
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
	if (name && !store_pushed_holds(r->store, name, STORE_MANIFEST, digest))
		return false;
	if (store_manifest_get(r->store, STORE_PUSHED, digest, r->cfg->manifest_max_bytes, &buf, &len, &type, &err) !=
	    RS_OK)
		return false;
	rq->cache = "pushed";
	*ret = api_answer_manifest(rq, buf, len, type, digest);
	free(type);
	return true;
}

/* A reference with a ':' must be a digest we can check: anything else,
 * an unknown algorithm included, is the client's 400 DIGEST_INVALID. */
bool api_ref_digest_ok(const char *ref, struct rs_err *err)
{
	if (digest_parse(ref, err) == RS_OK)
		return true;
	err->code = RS_DIGEST_INVALID;
	return false;
}

/* A reference that is neither a tag nor a digest regslim can hold names no
 * manifest: distribution spec, "Pulling manifests" ("If the manifest is not
 * found in the repository, the response code MUST be 404 Not Found"), for a
 * tag that breaks the grammar (.INVALID_MANIFEST_NAME) and a malformed digest
 * alike. It never reaches the upstream. */
enum MHD_Result api_manifest_cannot_exist(struct request *rq, const char *ref)
{
	struct rs_err e;
	rs_err_set(&e, RS_NOT_FOUND,
	           "manifest unknown: '%.130s' is neither a tag ([a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}) nor a sha256 digest",
	           ref);
	return reply_fail(rq, &e, REPLY_MANIFEST, NULL, 0);
}

/* A manifest by digest is served under t only if t's repository holds it
 * (issue 11; source.h decides where its bytes come from): pushed to the
 * name, cached and linked to the mirror's repository (fetched or confirmed
 * for it by the upstream), an evicted optimized manifest made again; a copy
 * not cached is fetched from the upstream for this repository. */
enum MHD_Result api_manifest_by_digest(struct registry *r, struct request *rq, const struct route_target *t,
                                          const struct accept_list *acc)
{
	struct rs_err err = {0};
	enum MHD_Result ret = MHD_NO;
	if (!api_ref_digest_ok(t->ref, &err))
		return api_manifest_cannot_exist(rq, t->ref);
	const struct source_ref ref = {t->name, t->up_index, t->repo, STORE_MANIFEST, t->ref};
	struct source_found f;
	enum rs_code rc = source_locate(r->src, &ref, &f, &err);
	if (rc) {
		source_found_dispose(&f);
		return reply_fail(rq, &err, REPLY_MANIFEST, NULL, 0);
	}
	if (f.where == SOURCE_UNLINKED) {
		rq->cache = "unlinked";
		ret = f.ask_rc ? reply_fail(rq, &err, REPLY_MANIFEST, NULL, 0)
		               : api_answer_upstream_error(rq, &f.rep, REPLY_MANIFEST);
		source_found_dispose(&f);
		return ret;
	}
	if (f.where != SOURCE_UPSTREAM) {
		/* a regenerated manifest is a hit, as it always was */
		rq->cache = f.where == SOURCE_PUSHED ? "pushed" : "hit";
		if (f.where != SOURCE_PUSHED)
			metrics_cache(METRICS_MANIFEST, 1);
		ret = api_answer_manifest(rq, f.body, f.len, f.type, t->ref);
		f.body = NULL; /* handed to the answer */
		source_found_dispose(&f);
		return ret;
	}
	source_found_dispose(&f);
	rq->cache = "miss";
	metrics_cache(METRICS_MANIFEST, 0);
	struct upstream_reply rep = {0};
	char digest[DIGEST_STR_SIZE];
	rs_err_clear(&err);
	bool stored;
	rc = fetch_manifest(r, t, acc, t->ref, &rep, digest, &stored, &err);
	if (rc)
		ret = reply_fail(rq, &err, REPLY_MANIFEST, NULL, 0);
	else if (!api_status_ok(rep.status))
		ret = api_answer_upstream_error(rq, &rep, REPLY_MANIFEST);
	else
		ret = serve_fetched(rq, &rep, digest);
	upstream_reply_dispose(&rep);
	return ret;
}

static bool stored_acceptable(const struct store_tag *tag, const struct accept_list *acc)
{
	return api_accepts(acc, tag->media_type);
}

/* The shared tag cache's key for t: "tag:<upstream>/<repository>:<tag>". */
static void shared_tag_key(char *out, size_t cap, const struct registry *r, const struct route_target *t)
{
	snprintf(out, cap, "tag:%s/%s:%s", r->cfg->upstreams[t->up_index].name, t->repo, t->ref);
}

/* Tell the other replicas (cluster.h's shared map) what the upstream confirmed: "<digest>
 * <fetched> <media type>", kept for the tag's TTL, which is as long as it says anything. Redis
 * down or no cluster: nothing to tell. */
static void share_tag(struct registry *r, const struct route_target *t, const struct store_tag *tag)
{
	unsigned ttl = r->cfg->upstreams[t->up_index].tag_ttl_s;
	if (ttl == 0 || cluster_mode(r->cluster, NULL, 0) != CLUSTER_UP)
		return;
	char key[RS_LIMIT_NAME_MAX * 2 + 128], value[sizeof(tag->digest) + sizeof(tag->media_type) + 32];
	struct rs_err err = {0};
	shared_tag_key(key, sizeof(key), r, t);
	snprintf(value, sizeof(value), "%s %lld %s", tag->digest, (long long)tag->fetched, tag->media_type);
	if (cluster_map_set(r->cluster, key, value, ttl, &err) != RS_OK)
		log_event(LOG_DEBUG, "tag %s:%s not shared: %s", t->repo, t->ref, err.msg);
}

/* A fresher confirmation of t by another replica than the store's *tag, for a manifest the store
 * holds: then *tag becomes it (and the store's map learns it). false: keep *tag. */
static bool shared_tag_newer(struct registry *r, const struct route_target *t, struct store_tag *tag)
{
	if (cluster_mode(r->cluster, NULL, 0) != CLUSTER_UP)
		return false;
	char key[RS_LIMIT_NAME_MAX * 2 + 128];
	char *v = NULL;
	struct rs_err err = {0};
	shared_tag_key(key, sizeof(key), r, t);
	if (cluster_map_get(&v, r->cluster, key, &err) != RS_OK || !v)
		return false;
	struct store_tag got = {0};
	long long fetched = 0;
	int used = 0;
	bool ok = sscanf(v, "%71s %lld %n", got.digest, &fetched, &used) == 2 && used > 0 &&
	          strlen(v + used) < sizeof(got.media_type) && (time_t)fetched > tag->fetched;
	if (ok) {
		snprintf(got.media_type, sizeof(got.media_type), "%s", v + used);
		got.fetched = (time_t)fetched;
		ok = store_has(r->store, STORE_CACHE, STORE_MANIFEST, got.digest);
	}
	free(v);
	if (!ok)
		return false;
	*tag = got;
	if (store_tag_put(r->store, r->cfg->upstreams[t->up_index].name, t->repo, t->ref, tag, &err) != RS_OK)
		log_event(LOG_WARN, "could not record tag %s:%s: %s", t->repo, t->ref, err.msg);
	return true;
}

static void remember_tag(struct registry *r, const struct route_target *t, const char *digest, const char *type)
{
	struct store_tag tag = {0};
	struct rs_err err = {0};
	snprintf(tag.digest, sizeof(tag.digest), "%s", digest);
	snprintf(tag.media_type, sizeof(tag.media_type), "%s", type ? type : JSON_TYPE);
	tag.fetched = time(NULL);
	if (store_tag_put(r->store, r->cfg->upstreams[t->up_index].name, t->repo, t->ref, &tag, &err) != RS_OK)
		log_event(LOG_WARN, "could not record tag %s:%s: %s", t->repo, t->ref, err.msg);
	share_tag(r, t, &tag);
}

/* Serve the stored tag answer as a stale copy because the upstream failed. */
static enum MHD_Result serve_stale(struct registry *r, struct request *rq, const struct route_target *t,
                                   const struct store_tag *tag, const char *why, bool *served)
{
	struct rs_err err = {0};
	enum MHD_Result ret = MHD_NO;
	*served = false;
	if (api_serve_stored_manifest(r, rq, tag->digest, &ret, &err) != RS_OK)
		return MHD_NO;
	*served = true;
	rq->cache = "stale";
	metrics_add(METRICS_STALE_SERVED, 1);
	log_event(LOG_WARN, "serving stale %s:%s (%s, fetched %lds ago) because upstream %s failed: %s", t->repo,
	          t->ref, tag->digest, (long)(time(NULL) - tag->fetched), rq->upstream, why);
	return ret;
}

enum MHD_Result api_manifest_by_tag(struct registry *r, struct request *rq, const struct route_target *t,
                                       const struct accept_list *acc)
{
	if (!refname_tag_valid(t->ref))
		return api_manifest_cannot_exist(rq, t->ref);
	const struct rs_upstream_config *upc = &r->cfg->upstreams[t->up_index];
	struct store_tag tag = {0};
	struct rs_err err = {0};
	enum MHD_Result ret = MHD_NO;
	/* A tag pushed to regslim shadows the upstream's tag of that name. */
	enum rs_code prc = store_pushed_tag_get(r->store, t->name, t->ref, &tag, &err);
	if (prc == RS_OK && serve_pushed_manifest(r, rq, NULL, tag.digest, &ret))
		return ret;
	if (prc == RS_UNAVAILABLE) /* the store is down: do not answer from the upstream what a push may shadow */
		return reply_fail(rq, &err, REPLY_MANIFEST, NULL, 0);
	memset(&tag, 0, sizeof(tag));
	rs_err_clear(&err);
	bool have = store_tag_get(r->store, upc->name, t->repo, t->ref, &tag, &err) == RS_OK &&
	            store_has(r->store, STORE_CACHE, STORE_MANIFEST, tag.digest);
	time_t now = time(NULL);
	bool fresh = have && now >= tag.fetched && (uint64_t)(now - tag.fetched) < upc->tag_ttl_s;
	if (!fresh && shared_tag_newer(r, t, &tag))
		have = true; /* another replica confirmed it more recently */
	bool usable = have && stored_acceptable(&tag, acc);
	fresh = usable && now >= tag.fetched && (uint64_t)(now - tag.fetched) < upc->tag_ttl_s;

	if (fresh) {
		rs_err_clear(&err);
		if (api_serve_stored_manifest(r, rq, tag.digest, &ret, &err) == RS_OK) {
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
		} else if (api_status_ok(head.status) && head.digest[0] && strcmp(head.digest, tag.digest) == 0) {
			upstream_reply_dispose(&head);
			remember_tag(r, t, tag.digest, tag.media_type);
			rs_err_clear(&err);
			if (api_serve_stored_manifest(r, rq, tag.digest, &ret, &err) == RS_OK) {
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
	else if (!api_status_ok(rep.status))
		ret = api_answer_upstream_error(rq, &rep, REPLY_MANIFEST);
	else {
		if (stored && modern_client(acc))
			remember_tag(r, t, digest, rep.content_type);
		ret = serve_fetched(rq, &rep, digest);
	}
	upstream_reply_dispose(&rep);
	return ret;
}

/* optpull's manifest fetch (and the policy check on pull's): GET by digest
 * from the upstream, verified and stored (source.h). */
enum rs_code api_opt_fetch_manifest(void *ctx, size_t up_index, const char *repo, const char *digest,
                                       struct rs_err *err)
{
	struct registry *r = ctx;
	return source_ensure_manifest(r->src, up_index, repo, digest, err);
}
