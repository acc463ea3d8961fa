/* registry: the read side of the Distribution API for the pull-through
 * mirror (DESIGN.md "The pull path"): struct registry and its lifecycle
 * (the store, one upstream client per configured upstream, the source that
 * decides where bytes come from and runs the shared downloads (source.h),
 * the write side push_http.c, the optimized pull path),
 * and the route dispatch. registry_handle splits the path, picks the
 * upstream (route.c), asks the auth gate (auth_gate.c), and hands the request to the
 * file of its resource: manifests.c and manifests_policy.c, blobs.c,
 * tags.c, referrers.c, reports.c, ops.c (api_int.h); writes go to uploads.c and the token
 * endpoint to token.c (push_http.h). It answers /healthz, /v2/ and the refusals of the dispatch
 * itself through reply.h; it builds no libmicrohttpd response and parses no
 * manifest. */
#include "registry.h"

#include "api_int.h"
#include "cluster.h"
#include "gate.h"
#include "log.h"
#include "metrics.h"
#include "optpull.h"
#include "peer.h"
#include "push_http.h"
#include "refname.h"
#include "reply.h"
#include "route.h"
#include "sign.h"
#include "rs_limits.h"
#include "source.h"
#include "store.h"
#include "upstream.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ lifecycle */

static unsigned inflight_gauge(void *arg)
{
	return source_inflight(arg);
}

/* source.h source_regen_fn over the optimized pull path. */
static enum rs_code regenerate(void *ctx, enum store_kind kind, const char *digest, unsigned wait_s,
                               struct rs_err *err)
{
	return optpull_regenerate(ctx, kind, digest, wait_s, err);
}

/* Can the store write? A read-only data directory (a read-only mount of a
 * populated cache, a full disk) is not fatal: the cache is still served, but
 * nothing new can be cached, so every miss fails. Say so loudly, once per
 * change, and let /healthz and /metrics report it. */
static void check_data_dir(struct registry *r)
{
	struct rs_err err = {0};
	bool ro = store_check_writable(r->store, &err) != RS_OK;
	pthread_mutex_lock(&r->health_mu);
	bool was = r->data_dir_read_only;
	r->data_dir_read_only = ro;
	snprintf(r->data_dir_error, sizeof(r->data_dir_error), "%s", ro ? err.msg : "");
	pthread_mutex_unlock(&r->health_mu);
	metrics_set_data_dir_writable(!ro);
	if (ro && !was)
		log_event(LOG_ERROR,
		          "DEGRADED: the data directory is not writable (%s): serving what is cached only, nothing new "
		          "is cached and every cache miss fails; /healthz says \"degraded\"",
		          err.msg);
	else if (!ro && was)
		log_event(LOG_WARN, "the data directory is writable again: no longer degraded");
}

enum rs_code registry_new(struct registry **out, const struct rs_config *cfg, struct rs_err *err)
{
	struct registry *r = calloc(1, sizeof(*r));
	if (!r)
		return rs_err_set(err, RS_NOMEM, "registry: out of memory");
	r->cfg = cfg;
	pthread_mutex_init(&r->health_mu, NULL);
	enum rs_code rc = store_open(&r->store, cfg, err);
	if (rc)
		goto out;
	check_data_dir(r);
	rc = cluster_new(&r->cluster, &cfg->cluster, NULL, err);
	if (rc)
		goto out;
	store_set_cluster(r->store, r->cluster); /* upload sessions and eviction shared between replicas (s3) */
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
	rc = source_new(&r->src, cfg, r->store, r->ups, err);
	if (rc)
		goto out;
	source_set_cluster(r->src, r->cluster);
	rc = push_http_new(&r->ph, cfg, r->store, err);
	if (rc)
		goto out;
	store_pushed_set_fetcher(r->store, source_pushed_fetch, r->src);
	if (cfg->optimize.enabled && cfg->optimize.policy_count) {
		struct optpull_ops ops = {api_opt_fetch_blob, api_opt_fetch_manifest, r};
		rc = optpull_new(&r->opt, cfg, r->store, &ops, err);
		if (rc)
			goto out;
		source_set_regenerate(r->src, regenerate, r->opt);
		/* one optimization per key in the cluster, on a store the replicas share (another
		 * replica's result is never seen in an fs store) */
		if (cfg->cluster.enabled && strcmp(store_driver_name(r->store), "fs") != 0)
			optpull_set_cluster(r->opt, r->cluster);
	}
	if (cfg->signatures.gpg_key || cfg->signatures.cosign_key_file || cfg->signatures.verify_count) {
		rc = sign_new(&r->sign, cfg, r->store, err);
		if (rc)
			goto out;
		r->ph->sign = r->sign;
	}
	rc = store_scrub_start(r->store, &r->scrub, err);
	if (rc)
		goto out;
	pthread_mutex_init(&r->verdict_mu, NULL);
	for (size_t i = 0; i < cfg->push.policy_count; i++)
		if (cfg->push.policies[i].enforce_on_pull && !r->verdicts &&
		    !(r->verdicts = calloc(RS_LIMIT_GATE_PULL_VERDICTS, sizeof(*r->verdicts)))) {
			rc = rs_err_set(err, RS_NOMEM, "registry: out of memory");
			goto out;
		}
	metrics_set_inflight_source(inflight_gauge, r->src);
	*out = r;
	return RS_OK;
out:
	registry_free(r);
	return rc;
}

void registry_shutdown(struct registry *r)
{
	if (r->src)
		source_stop(r->src);
	optpull_stop(r->opt);
	store_scrub_stop(r->scrub);
	r->scrub = NULL;
}

bool registry_quiesce(struct registry *r, unsigned max_ms)
{
	return optpull_wait_idle(r->opt, max_ms);
}

void registry_free(struct registry *r)
{
	if (!r)
		return;
	metrics_set_inflight_source(NULL, NULL);
	store_scrub_stop(r->scrub); /* first: it reads the stores */
	optpull_free(r->opt); /* its workers use the upstreams and the source's downloads */
	sign_free(r->sign);
	push_http_free(r->ph);
	source_free(r->src); /* waits for running downloads, which use the upstreams */
	if (r->ups)
		for (size_t i = 0; i < r->cfg->upstream_count; i++)
			upstream_free(r->ups[i]);
	free(r->ups);
	store_free(r->store);
	cluster_free(r->cluster); /* last: the rooms above coordinate through it */
	if (r->verdicts) {
		for (size_t i = 0; i < RS_LIMIT_GATE_PULL_VERDICTS; i++)
			free(r->verdicts[i].text);
		free(r->verdicts);
	}
	pthread_mutex_destroy(&r->verdict_mu);
	pthread_mutex_destroy(&r->health_mu);
	free(r);
}

unsigned registry_inflight(struct registry *r)
{
	return source_inflight(r->src);
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
	check_data_dir(r);
	pthread_mutex_lock(&r->health_mu);
	bool ro = r->data_dir_read_only;
	pthread_mutex_unlock(&r->health_mu);
	if (ro)
		return; /* sweeps and eviction would only fail, every minute */
	push_http_maintain(r->ph, atomic_exchange(&r->gc_requested, false));
	struct rs_err err = {0};
	uint64_t freed = 0;
	if (store_evict(r->store, &freed, &err) != RS_OK)
		log_event(LOG_WARN, "cache eviction failed: %s", err.msg);
	else if (freed)
		log_event(LOG_INFO, "cache eviction freed %llu bytes", (unsigned long long)freed);
}

void registry_request_gc(struct registry *r)
{
	atomic_store(&r->gc_requested, true);
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

/* ------------------------------------------------------------ routing */

/* "." or ".." as a path segment: no name, digest or upload id has one. */
static bool has_dot_segment(const char *url)
{
	size_t n = strlen(url);
	return strstr(url, "/./") || strstr(url, "/../") || (n >= 2 && strcmp(url + n - 2, "/.") == 0) ||
	       (n >= 3 && strcmp(url + n - 3, "/..") == 0);
}

/* /healthz: 200 either way (a degraded proxy still serves its cache, and an
 * orchestrator must not restart it for that); the body says which: a read-only
 * data directory, an unreachable Redis ("redis": "unreachable" with
 * "redis_error"; with a cluster section and Redis answering, "redis": "up"). */
static enum MHD_Result healthz(struct registry *r, struct request *rq, char *ok_body)
{
	pthread_mutex_lock(&r->health_mu);
	bool ro = r->data_dir_read_only;
	char why[sizeof(r->data_dir_error) * 2];
	size_t pos = 0;
	why[0] = '\0';
	if (ro)
		log_json_escape(why, sizeof(why), &pos, r->data_dir_error);
	pthread_mutex_unlock(&r->health_mu);
	char redis_raw[RS_ERR_MSG_MAX], redis_why[RS_ERR_MSG_MAX * 2];
	enum cluster_mode cm = cluster_mode(r->cluster, redis_raw, sizeof(redis_raw));
	pos = 0;
	redis_why[0] = '\0';
	log_json_escape(redis_why, sizeof(redis_why), &pos, redis_raw);
	if (!ro && cm == CLUSTER_LOCAL)
		return reply_buffer(rq, 200, JSON_TYPE, ok_body, strlen(ok_body), REPLY_STATIC, NULL, 0);
	char body[sizeof(why) + sizeof(redis_why) + 192];
	int n;
	if (!ro && cm == CLUSTER_UP)
		n = snprintf(body, sizeof(body), "{\"status\":\"ok\",\"redis\":\"up\"}\n");
	else if (!ro)
		n = snprintf(body, sizeof(body), "{\"status\":\"degraded\",\"redis\":\"unreachable\",\"redis_error\":\"%s\"}\n",
		             redis_why);
	else
		n = snprintf(body, sizeof(body), "{\"status\":\"degraded\",\"data_dir\":\"read-only\",\"error\":\"%s\"%s}\n",
		             why, cm == CLUSTER_LOCAL ? "" : cm == CLUSTER_UP ? ",\"redis\":\"up\"" : ",\"redis\":\"unreachable\"");
	if (n < 0 || (size_t)n >= sizeof(body))
		n = snprintf(body, sizeof(body), ro ? "{\"status\":\"degraded\",\"data_dir\":\"read-only\"}\n"
		                                    : "{\"status\":\"degraded\",\"redis\":\"unreachable\"}\n");
	return reply_buffer(rq, 200, JSON_TYPE, body, (size_t)n, REPLY_COPY, NULL, 0);
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
		return healthz(r, rq, healthz_body);
	}
	if (strcmp(url, "/metrics") == 0) {
		rq->route = "metrics";
		if (!get && !head)
			return reply_error(rq, RS_UNSUPPORTED, REPLY_OTHER, "only GET and HEAD are allowed on /metrics", NULL, 0);
		return api_serve_metrics(rq);
	}
	if (strncmp(url, PEER_BLOB_PATH, strlen(PEER_BLOB_PATH)) == 0)
		return api_peer_blob_get(r, rq);
	if (push_http_is_token(url))
		return push_http_token(r->ph, rq);
	if (strncmp(url, "/regslim/v1/reports/", strlen("/regslim/v1/reports/")) == 0)
		return api_serve_report(r, rq);
	if (strncmp(url, "/sigstore/", strlen("/sigstore/")) == 0)
		return api_sigstore_get(r, rq, url + strlen("/sigstore/"));
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
	/* Writes (uploads, manifest PUT, DELETE): uploads.c, gate included.
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
	} else if (strcmp(kind, "referrers") == 0) {
		rq->route = "referrers";
		what = REPLY_OTHER;
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
		return api_tags_list(r, rq, &t);
	if (what == REPLY_OTHER)
		return api_referrers_get(r, rq, &t);
	if (what == REPLY_BLOB)
		return api_blob_get(r, rq, &t, head);

	/* Before any policy path: such a reference names no manifest (404). */
	if (!strchr(ref, ':') && !refname_tag_valid(ref))
		return api_manifest_cannot_exist(rq, ref);
	struct accept_list acc = {.n = 0};
	MHD_get_connection_values(rq->conn, MHD_HEADER_KIND, api_collect_accept, &acc);
	if (strchr(ref, ':'))
		return api_manifest_by_digest(r, rq, &t, &acc);
	if (sign_passthrough_tag(ref))
		return api_manifest_by_tag(r, rq, &t, &acc); /* signatures, attestations, SBOMs: as the upstream has them */
	const struct rs_opt_policy *pol =
		r->opt ? config_find_opt_policy(r->cfg, r->cfg->upstreams[t.up_index].name, t.repo) : NULL;
	const struct rs_gate_policy *gp =
		r->verdicts && t.up_index == r->cfg->default_upstream
			? gate_policy_find(r->cfg->push.policies, r->cfg->push.policy_count, t.name)
			: NULL;
	if (gp && gp->enforce_on_pull)
		return api_manifest_tag_gated(r, rq, &t, &acc, gp, pol);
	if (pol || (r->sign && config_find_verify_rule(r->cfg, r->cfg->upstreams[t.up_index].name, t.repo)))
		return api_manifest_tag_optimized(r, rq, &t, &acc, pol);
	return api_manifest_by_tag(r, rq, &t, &acc);
}
