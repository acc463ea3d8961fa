/* manifests_policy: tag pulls that a policy changes. An optimize policy
 * serves the optimized twin of the manifest the mirror resolved (optpull.c),
 * or the original when it is not ready, failed or the client cannot take it;
 * a push policy with enforce_on_pull checks the image (gate.c, every object
 * fetched into the cache once per digest, verdicts remembered) and answers
 * 403 DENIED listing the violations. Both resolve the tag through
 * manifests.c first; answers go out through reply.h. */
#include "api_int.h"

#include "attest.h"
#include "gate.h"
#include "image.h"
#include "imagewalk.h"
#include "log.h"
#include "metrics.h"
#include "optpull.h"
#include "push_http.h"
#include "sign.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ optimized pulls */

/* The verify rule of a tag pull (signatures.verify), in *rule: RS_OK when
 * none applies or one of the publisher's signatures of the original digest
 * verifies (*what then says which, with which key: what the optimized
 * image's attestation records; zeroed when no rule applies); else the
 * reason in err (logged here). */
static enum rs_code verify_original(struct registry *r, const struct route_target *t, const char *digest,
                                    const struct rs_verify_rule **rule, struct sign_verified *what, struct rs_err *err)
{
	const char *up = r->cfg->upstreams[t->up_index].name;
	memset(what, 0, sizeof(*what));
	*rule = r->sign ? config_find_verify_rule(r->cfg, up, t->repo) : NULL;
	if (!*rule)
		return RS_OK;
	enum rs_code rc = sign_verify_original(r->sign, *rule, r->ups[t->up_index], up, t->repo, t->ref, digest, what, err);
	if (rc == RS_OK)
		log_event(LOG_DEBUG, "verified %s/%s:%s (%s) with %s key %s", up, t->repo, t->ref, digest,
		          what->cosign ? "cosign" : "gpg", what->cosign ? what->cosign_key : what->gpg_fpr);
	else
		log_event(LOG_WARN, "%s/%s:%s (%s) is not verified (%s): %s", up, t->repo, t->ref, digest,
		          (*rule)->on_unverified == RS_UNVERIFIED_REFUSE ? "refused" : "served original, not optimized",
		          err->msg);
	return rc;
}

/* The cosign signatures and the attestation of an optimized tag pull
 * (attest.h): the original (source), what verified it under rule (NULL:
 * none applied), the policy and report digests of the result. */
static enum rs_code attest(struct registry *r, const struct route_target *t, const char *source,
                           const struct optpull_result *res, const struct rs_verify_rule *rule,
                           const struct sign_verified *what, struct rs_err *err)
{
	char *report = NULL, report_digest[DIGEST_STR_SIZE] = "", rule_name[64] = "";
	size_t len = 0;
	struct rs_err e = {0};
	if (optpull_report(r->opt, res->digest, &report, &len, &e) == RS_OK)
		digest_buffer(report_digest, report, len);
	free(report);
	if (rule)
		snprintf(rule_name, sizeof(rule_name), "signatures.verify[%zu]", (size_t)(rule - r->cfg->signatures.verify));
	const struct attest_request aq = {
		.st = r->store,
		.upstream = r->cfg->upstreams[t->up_index].name,
		.repo = t->repo,
		.name = t->name,
		.tag = t->ref,
		.optimized_digest = res->digest,
		.original_digest = source,
		.verify_rule = rule ? rule_name : NULL,
		.verified = rule ? what : NULL,
		.policy_digest = res->policy_digest[0] ? res->policy_digest : NULL,
		.report_digest = report_digest[0] ? report_digest : NULL,
	};
	return attest_image(r->sign, &aq, err);
}

/* A tag pull of a repository that a policy optimizes (DESIGN.md "The pull
 * path" point 3): resolve the tag exactly as for the mirror (TTL, HEAD
 * revalidation, stale-if-error; the original goes in the tag map), then
 * answer with the optimized twin of that manifest, or with the original when
 * the optimization is not ready within sync_timeout_s, failed, or the client
 * cannot take it. A tag pull never fails because optimization failed. */
enum MHD_Result api_manifest_tag_optimized(struct registry *r, struct request *rq, const struct route_target *t,
                                              const struct accept_list *acc, const struct rs_opt_policy *pol)
{
	struct manifest_capture cap = {0};
	rq->manifest_capture = &cap;
	enum MHD_Result ret = api_manifest_by_tag(r, rq, t, acc);
	rq->manifest_capture = NULL;
	if (!cap.got)
		return ret; /* an error answer was queued */
	const char *ua = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_USER_AGENT);
	struct optpull_client cl = optpull_client_of(ua);
	enum optpull_variant v = pol ? optpull_choose_variant(pol, cl) : OPTPULL_GZIP;
	struct optpull_result res = {0};
	struct rs_err err = {0};
	const char *reason = NULL;
	if (rq->cache && strcmp(rq->cache, "pushed") == 0) {
		ret = api_answer_manifest(rq, cap.body, cap.len, cap.type ? cap.type : JSON_TYPE, cap.digest);
		free(cap.type);
		return ret;
	}
	const struct rs_verify_rule *rule = NULL;
	struct sign_verified what = {0}; /* what verified the original, for the attestation of the optimized image */
	if (verify_original(r, t, cap.digest, &rule, &what, &err) != RS_OK) {
		metrics_signature_unverified(rule->on_unverified == RS_UNVERIFIED_REFUSE ? "refuse" : "serve-original");
		if (rule->on_unverified == RS_UNVERIFIED_REFUSE) {
			free(cap.body);
			free(cap.type);
			char msg[RS_ERR_MSG_MAX + RS_LIMIT_NAME_MAX + 64];
			snprintf(msg, sizeof(msg), "pull of %s:%s refused: the original is not verified: %s", t->name, t->ref,
			         err.msg);
			log_event(LOG_WARN, "%s", msg);
			return reply_error_long(rq, RS_POLICY, REPLY_MANIFEST, msg);
		}
		reason = "unverified";
	} else if (!pol) {
		/* a verify rule without an optimize policy: the verified original */
		ret = api_answer_manifest(rq, cap.body, cap.len, cap.type ? cap.type : JSON_TYPE, cap.digest);
		free(cap.type);
		return ret;
	}
	/* "hit" and "stale" answers were just read from the store: no need to look again */
	bool read_from_store = rq->cache && (strcmp(rq->cache, "hit") == 0 || strcmp(rq->cache, "stale") == 0);
	if (reason) {
		/* on_unverified: serve-original */
	} else if (!cap.type || (!read_from_store && !store_has(r->store, STORE_CACHE, STORE_MANIFEST, cap.digest))) {
		reason = "not_cached"; /* schema 1, or the store refused it */
		rs_err_set(&err, RS_BAD_INPUT, "the original manifest (%s) is not in the store",
		           cap.type ? cap.type : "no type");
	} else if (!api_accepts(acc, IMAGE_MT_OCI_MANIFEST) && !api_accepts(acc, IMAGE_MT_OCI_INDEX)) {
		reason = "client_accept";
		rs_err_set(&err, RS_BAD_INPUT, "the client accepts no OCI manifest type");
	} else {
		struct optpull_request oq = {t->up_index, t->repo, cap.digest, pol, v};
		enum rs_code rc = optpull_get(r->opt, &res, &oq, r->cfg->optimize.sync_timeout_s, &err);
		if (rc == RS_TIMEOUT)
			reason = "timeout";
		else if (rc)
			reason = "failed";
		else if (!api_accepts(acc, res.media_type)) {
			reason = "client_accept";
			rs_err_set(&err, RS_BAD_INPUT, "the client does not accept %s", res.media_type);
		}
	}
	if (!reason && !api_mirror_linked(r, t->up_index, t->repo, STORE_MANIFEST, res.digest)) {
		/* The optimized image is this repository's: made from the manifest
		 * the upstream just gave for it. Linked (blobs first) before the
		 * client asks for its blobs by digest. */
		rs_err_clear(&err);
		if (store_link_image(r->store, r->cfg->upstreams[t->up_index].name, t->repo, res.digest, &err) != RS_OK)
			reason = "not_cached";
	}
	if (!reason && r->sign &&
	    sign_image(r->sign, r->cfg->upstreams[t->up_index].name, t->repo, t->ref, res.digest, &err) != RS_OK)
		reason = "sign_failed"; /* clients that ask for the organisation's signature would refuse it */
	if (!reason && r->sign && attest(r, t, cap.digest, &res, rule, &what, &err) != RS_OK)
		reason = "sign_failed";
	if (!reason) {
		rs_err_clear(&err);
		if (api_serve_stored_manifest(r, rq, res.digest, &ret, &err) == RS_OK) {
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
	/* A client that takes no OCI type gets the original on every pull: counted
	 * (regslim_optimize_fallbacks_total), and a debug line, not an info line
	 * per request next to the request log's. */
	log_event(strcmp(reason, "failed") == 0          ? LOG_WARN
	          : strcmp(reason, "client_accept") == 0 ? LOG_DEBUG
	                                                 : LOG_INFO,
	          "serving the original %s:%s (%s) instead of the optimized image (%s): %s", t->repo, t->ref,
	          cap.digest, reason, err.msg);
	ret = api_answer_manifest(rq, cap.body, cap.len, cap.type ? cap.type : JSON_TYPE, cap.digest);
	free(cap.type);
	return ret;
}

/* ------------------------------------------------------------ policy on pull */

/* The walk of pull_fetch_image: every object of a stored manifest (index
 * entries, configs, layers) into the store, through the single-flight
 * download; entries are fetched before they are read. */
struct fetch_walk {
	struct registry *r;
	const struct route_target *t;
};

static enum rs_code fetch_load(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len, char **type,
                               struct rs_err *err)
{
	const struct fetch_walk *w = ctx;
	enum rs_code rc = RS_OK;
	if (n->depth > 0)
		rc = api_opt_fetch_manifest(w->r, w->t->up_index, w->t->repo, n->digest, err);
	if (rc == RS_OK)
		rc = store_manifest_get(w->r->store, STORE_CACHE, n->digest, w->r->cfg->manifest_max_bytes, buf, len, type, err);
	return rc;
}

static enum rs_code fetch_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                                enum imagewalk_step *step, struct rs_err *err)
{
	(void)step;
	const struct fetch_walk *w = ctx;
	if (ev != IMAGEWALK_REF || n->kind == IMAGEWALK_ENTRY || store_has(w->r->store, STORE_CACHE, STORE_BLOB, n->digest))
		return RS_OK;
	return api_opt_fetch_blob(w->r, w->t->up_index, w->t->repo, n->digest, err);
}

static enum rs_code pull_fetch_image(struct registry *r, const struct route_target *t, const char *digest,
                                     struct rs_err *err)
{
	struct fetch_walk w = {r, t};
	const struct imagewalk walk = {.load = fetch_load, .visit = fetch_visit, .ctx = &w, .manifest_what = "manifest",
	                               .index_what = "index"};
	return imagewalk_run(&walk, digest, err);
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
		rc = gate_check(&rep, gp, r->store, STORE_CACHE, digest, 0, push_http_bases(r->ph), err);
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
enum MHD_Result api_manifest_tag_gated(struct registry *r, struct request *rq, const struct route_target *t,
                                          const struct accept_list *acc, const struct rs_gate_policy *gp,
                                          const struct rs_opt_policy *pol)
{
	struct manifest_capture cap = {0};
	rq->manifest_capture = &cap;
	enum MHD_Result ret = api_manifest_by_tag(r, rq, t, acc);
	rq->manifest_capture = NULL;
	if (!cap.got)
		return ret; /* an error answer was queued */
	if (rq->cache && strcmp(rq->cache, "pushed") == 0) {
		ret = api_answer_manifest(rq, cap.body, cap.len, cap.type ? cap.type : JSON_TYPE, cap.digest);
		free(cap.type);
		return ret;
	}
	struct rs_err err = {0};
	size_t denies = 0;
	char *text = NULL;
	enum rs_code rc;
	if (!store_has(r->store, STORE_CACHE, STORE_MANIFEST, cap.digest))
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
		return api_manifest_tag_optimized(r, rq, t, acc, pol);
	}
	ret = api_answer_manifest(rq, cap.body, cap.len, cap.type ? cap.type : JSON_TYPE, cap.digest);
	free(cap.type);
	return ret;
}
