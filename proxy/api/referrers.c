/* referrers: GET /v2/<name>/referrers/<digest> (distribution-spec v1.1,
 * "Listing Referrers"; issue 14). The answer is always an OCI image index
 * (200, an empty manifests list when nothing refers to the digest) merging:
 * - the manifests pushed to regslim under <name> whose subject is the digest
 *   (store/refindex.h, and those listed by a referrers tag pushed there; only
 *   those the repository still holds, docs/security.md "Repository links"),
 *   described from their bytes;
 * - the upstream's referrers of the digest in the routed repository: its
 *   referrers API when it answers 200, else the referrers tag schema
 *   (`sha256-<hex>` tag holding an index), else none. That list is cached
 *   like a tag (tag map namespace "<upstream>:referrers", the list as a
 *   manifest in the cache), revalidated after the upstream's tag_ttl_s and
 *   served stale when the upstream fails.
 * ?artifactType= filters the merged list (header OCI-Filters-Applied:
 * artifactType); a malformed digest is 400 DIGEST_INVALID. Documents are
 * parsed and written by store/refindex.c; answers go through reply.h. */
#include "api_int.h"

#include "image.h"
#include "log.h"
#include "metrics.h"
#include "refindex.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The manifests v[0..n) pushed to name, into l: only those name holds (a
 * push the gate refused, or another repository's, is not name's), and with
 * check_subject only those whose subject is subject. A referrer that cannot
 * be read is left out (logged): the list is still an answer. */
static void add_held(struct registry *r, const char *name, const char *subject, char (*v)[DIGEST_STR_SIZE], size_t n,
                     bool check_subject, struct refindex_list *l)
{
	struct rs_err err = {0};
	for (size_t i = 0; i < n; i++) {
		if (!store_pushed_holds(r->store, name, STORE_MANIFEST, v[i]))
			continue;
		char *buf = NULL, *type = NULL, sub[DIGEST_STR_SIZE] = "";
		size_t len = 0;
		rs_err_clear(&err);
		enum rs_code rc =
			store_manifest_get(r->store, STORE_PUSHED, v[i], r->cfg->manifest_max_bytes, &buf, &len, &type, &err);
		if (rc == RS_OK && check_subject && (rc = refindex_subject_of(sub, buf, len, &err)) == RS_OK &&
		    strcmp(sub, subject) != 0)
			rc = rs_err_set(&err, RS_BAD_INPUT, "its subject is '%s'", sub);
		if (rc == RS_OK)
			rc = refindex_list_add_manifest(l, v[i], type, buf, len, &err);
		if (rc)
			log_event(LOG_WARN, "referrer %s of %s in %s left out: %s", v[i], subject, name, err.msg);
		free(buf);
		free(type);
	}
}

/* The pushed referrers of subject under name, into l: the referrers index,
 * and the manifests listed by a referrers tag (sha256-<hex>) pushed to name
 * that have subject as their subject (distribution-spec, "Enabling the
 * Referrers API": those pushed before regslim had the API). */
static void add_pushed(struct registry *r, const char *name, const char *subject, struct refindex_list *l)
{
	char(*v)[DIGEST_STR_SIZE] = NULL;
	size_t n = 0;
	struct rs_err err = {0};
	if (store_pushed_referrers(r->store, name, subject, &v, &n, RS_LIMIT_INDEX_MANIFESTS_MAX, &err) != RS_OK)
		log_event(LOG_WARN, "referrers of %s in %s: %s", subject, name, err.msg);
	add_held(r, name, subject, v, n, false, l);
	free(v);
	v = NULL;
	n = 0;
	char tag[80], *buf = NULL, *type = NULL;
	size_t len = 0;
	struct store_tag bt = {0};
	snprintf(tag, sizeof(tag), "sha256-%s", digest_hex(subject));
	rs_err_clear(&err);
	if (store_pushed_tag_get(r->store, name, tag, &bt, &err) != RS_OK)
		return; /* no referrers tag: the usual case */
	if (store_manifest_get(r->store, STORE_PUSHED, bt.digest, r->cfg->manifest_max_bytes, &buf, &len, &type, &err) ==
	            RS_OK &&
	    refindex_entries(&v, &n, buf, len, RS_LIMIT_INDEX_MANIFESTS_MAX, &err) == RS_OK)
		add_held(r, name, subject, v, n, true, l);
	else
		log_event(LOG_WARN, "the referrers tag %s:%s is left out: %s", name, tag, err.msg);
	free(v);
	free(buf);
	free(type);
}

/* The cache keys of the upstream's list: its tag map namespace and tag. */
static bool cache_key(struct registry *r, const struct route_target *t, char *ns, size_t ns_cap, char *tag,
                      size_t tag_cap)
{
	const char *up = r->cfg->upstreams[t->up_index].name;
	snprintf(tag, tag_cap, "sha256-%s", digest_hex(t->ref));
	return snprintf(ns, ns_cap, "%s:referrers", up) < (int)ns_cap;
}

/* Keep the upstream's list body (a new copy in the cache) for t. */
static void remember(struct registry *r, const struct route_target *t, const char *ns, const char *tag,
                     const char *body, size_t len)
{
	struct store_tag bt = {0};
	struct rs_err err = {0};
	digest_buffer(bt.digest, body, len);
	snprintf(bt.media_type, sizeof(bt.media_type), "%s", IMAGE_MT_OCI_INDEX);
	bt.fetched = time(NULL);
	if (store_manifest_put(r->store, STORE_CACHE, bt.digest, IMAGE_MT_OCI_INDEX, body, len, &err) != RS_OK ||
	    store_tag_put(r->store, ns, t->repo, tag, &bt, &err) != RS_OK)
		log_event(LOG_WARN, "could not cache the referrers of %s in %s: %s", t->ref, t->repo, err.msg);
}

/* Ask the upstream: its referrers API, else the referrers tag. RS_OK with
 * *out the list's body (new, or NULL when the upstream has none); RS_UPSTREAM
 * (or the transport's code) when it could not say. */
static enum rs_code ask_upstream(struct registry *r, const struct route_target *t, const char *tag, char **out,
                                 size_t *out_len, struct rs_err *err)
{
	const char *upname = r->cfg->upstreams[t->up_index].name;
	struct upstream *u = r->ups[t->up_index];
	struct upstream_reply rep = {0};
	*out = NULL;
	*out_len = 0;
	metrics_upstream(upname, METRICS_UP_REQUESTS);
	enum rs_code rc = upstream_referrers(u, t->repo, t->ref, r->cfg->manifest_max_bytes, &rep, err);
	if (rc == RS_OK && rep.status == 200 && rep.body) {
		*out = rep.body;
		*out_len = rep.body_len;
		rep.body = NULL;
		upstream_reply_dispose(&rep);
		return RS_OK;
	}
	bool no_api = rc == RS_OK && rep.status >= 400 && rep.status < 500 && rep.status != 429;
	long api_status = rep.status;
	upstream_reply_dispose(&rep);
	if (!no_api) {
		metrics_upstream(upname, METRICS_UP_ERRORS);
		return rc ? rc : rs_err_set(err, RS_UPSTREAM, "upstream %s answered HTTP %ld for the referrers of %s", upname,
		                            api_status, t->ref);
	}
	/* No referrers API: the referrers tag schema (distribution-spec,
	 * "Unavailable Referrers API"). */
	static const char *const accept[] = {IMAGE_MT_OCI_INDEX};
	metrics_upstream(upname, METRICS_UP_REQUESTS);
	rc = upstream_manifest(u, t->repo, tag, accept, 1, false, r->cfg->manifest_max_bytes, &rep, err);
	if (rc == RS_OK && rep.status == 200 && rep.body) {
		*out = rep.body;
		*out_len = rep.body_len;
		rep.body = NULL;
	} else if (rc == RS_OK && rep.status >= 400 && rep.status < 500 && rep.status != 429) {
		rc = RS_OK; /* no referrers tag (or none this upstream lets regslim see): no referrers */
	} else if (rc == RS_OK) {
		metrics_upstream(upname, METRICS_UP_ERRORS);
		rc = rs_err_set(err, RS_UPSTREAM, "upstream %s answered HTTP %ld for the referrers tag %s", upname,
		                rep.status, tag);
	}
	upstream_reply_dispose(&rep);
	return rc;
}

/* The upstream's referrers of t->ref in t->repo into l: the cached list
 * while fresh, else asked now (and cached), else the stale cached list. */
static void add_upstream(struct registry *r, struct request *rq, const struct route_target *t,
                         struct refindex_list *l)
{
	const struct rs_upstream_config *upc = &r->cfg->upstreams[t->up_index];
	char ns[RS_LIMIT_NAME_MAX + 16], tag[80];
	bool cacheable = cache_key(r, t, ns, sizeof(ns), tag, sizeof(tag));
	struct store_tag bt = {0};
	struct rs_err err = {0};
	char *cached = NULL, *type = NULL, *body = NULL;
	size_t cached_len = 0, len = 0;
	bool have = cacheable && store_tag_get(r->store, ns, t->repo, tag, &bt, &err) == RS_OK &&
	            store_manifest_get(r->store, STORE_CACHE, bt.digest, r->cfg->manifest_max_bytes, &cached,
	                               &cached_len, &type, &err) == RS_OK;
	time_t now = time(NULL);
	if (have && now >= bt.fetched && (uint64_t)(now - bt.fetched) < upc->tag_ttl_s) {
		rq->cache = "hit";
		body = cached;
		len = cached_len;
		cached = NULL;
	} else {
		rs_err_clear(&err);
		rq->cache = "miss";
		if (ask_upstream(r, t, tag, &body, &len, &err) == RS_OK) {
			if (cacheable)
				remember(r, t, ns, tag, body ? body : refindex_empty(), body ? len : strlen(refindex_empty()));
		} else if (have) {
			rq->cache = "stale";
			metrics_add(METRICS_STALE_SERVED, 1);
			log_event(LOG_WARN, "serving the cached referrers of %s in %s because upstream %s failed: %s", t->ref,
			          t->repo, upc->name, err.msg);
			body = cached;
			len = cached_len;
			cached = NULL;
		} else {
			log_event(LOG_WARN, "referrers of %s in %s: upstream %s failed, answering regslim's own only: %s",
			          t->ref, t->repo, upc->name, err.msg);
		}
	}
	rs_err_clear(&err);
	if (body && refindex_list_add_index(l, body, len, &err) != RS_OK)
		log_event(LOG_WARN, "the upstream's referrers list of %s in %s is not an image index, left out: %s", t->ref,
		          t->repo, err.msg);
	free(body);
	free(cached);
	free(type);
}

enum MHD_Result api_referrers_get(struct registry *r, struct request *rq, const struct route_target *t)
{
	struct rs_err err = {0};
	if (!api_ref_digest_ok(t->ref, &err))
		return reply_fail(rq, &err, REPLY_MANIFEST, NULL, 0);
	const char *filter = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, "artifactType");
	if (filter && !*filter)
		filter = NULL;
	struct refindex_list l = {0};
	add_pushed(r, t->name, t->ref, &l);
	add_upstream(r, rq, t, &l);
	char *out = NULL;
	size_t len = 0;
	enum rs_code rc = refindex_list_write(&out, &len, &l, filter, &err);
	refindex_list_dispose(&l);
	if (rc)
		return reply_fail(rq, &err, REPLY_MANIFEST, NULL, 0);
	struct reply_header h[] = {{"OCI-Filters-Applied", filter ? "artifactType" : NULL}};
	return reply_buffer(rq, 200, IMAGE_MT_OCI_INDEX, out, len, REPLY_OWNED, h, 1);
}
