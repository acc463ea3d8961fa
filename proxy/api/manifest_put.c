/* manifest_put: a manifest PUT to a repository that a push policy matches
 * (docs/policy.md; uploads.c hands it over once the body is complete). The
 * manifest is stored by digest (the store's checks of a pushed manifest), the policy's rules run
 * over the image (gate.c; each layer's scan joined from its upload,
 * gate_scan.c), a refusal is 403 DENIED listing every violation,
 * a tag push is forwarded upstream per the policy's mode (502 UNAVAILABLE
 * when that fails; layers sent early by gate_fwd.c are joined first, and
 * dropped from its queue on a refusal) before the local tag and the 201; every gated push leaves
 * a report under /regslim/v1/reports/. Answers go out through reply.h. */
#include "api_int.h"

#include "gate.h"
#include "gate_fwd.h"
#include "gate_stage.h"
#include "log.h"
#include "metrics.h"
#include "refindex.h"
#include "sign.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* "name:tag" or "name@digest", for messages. */
void api_ref_text(char *out, size_t cap, const char *name, const char *ref)
{
	int n = snprintf(out, cap, "%s%s%s", name, strchr(ref, ':') ? "@" : ":", ref);
	if (n < 0)
		out[0] = '\0'; /* a cut text is fine for a message */
}

static double secs_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Keep the gate's report of this push (gate.h) under the pushed digest
 * and under every optimized digest it sent upstream, so the report of
 * either is at /regslim/v1/reports/<name>/<digest>. A report that cannot
 * be written is logged; the push's answer stands. */
static void save_report(struct push_http *ph, const struct gate_report *rep, const struct gate_report_meta *m)
{
	struct rs_err err = {0};
	char *json = NULL;
	size_t len = 0;
	enum rs_code rc = gate_report_json(&json, &len, rep, m, &err);
	if (rc == RS_OK)
		rc = gate_report_save(ph->store, m->repository, m->digest, json, len, &err);
	for (size_t i = 0; rc == RS_OK && m->outcome && i < m->outcome->count; i++)
		if (m->outcome->pushed[i].optimized)
			rc = gate_report_save(ph->store, m->repository, m->outcome->pushed[i].digest, json, len,
			                      &err);
	if (rc) {
		char shown[RS_LIMIT_NAME_MAX + RS_LIMIT_TAG_MAX + DIGEST_STR_SIZE];
		api_ref_text(shown, sizeof(shown), m->repository, m->reference);
		log_event(LOG_WARN, "push %s (%s): %s", shown, m->digest, err.msg);
	}
	free(json);
}

/* gate_sign_fn over sign.h: the optimized image the gate pushes gets
 * regslim's signatures for the reference it is pushed as (cosign's pushed
 * upstream with the forward's push client). */
static enum rs_code gate_sign(void *ctx, const struct rs_upstream_config *upc, struct upstream_push *up,
                              const struct upstream_push_source *src, const char *repo, const char *tag,
                              const char *digest, const char (*children)[DIGEST_STR_SIZE], size_t n,
                              struct rs_err *err)
{
	return sign_pushed(ctx, upc, up, src, repo, tag, digest, children, n, err);
}

/* Manifest PUT under a push policy (docs/policy.md): store by digest (the
 * spec's checks), evaluate the policy over every layer, refuse with 403
 * DENIED listing every violation, forward a tag push to the upstream per the
 * policy's mode, and only then set the local tag and answer 201. A push by
 * digest is checked and kept; it goes upstream with the tag that names it. */
enum MHD_Result api_gated_manifest_put(struct push_http *ph, struct request *rq, struct wreq *w,
                                          const struct rs_gate_policy *gp, const char *ct)
{
	struct rs_err err = {0};
	char digest[DIGEST_STR_SIZE], got[DIGEST_STR_SIZE];
	digest_buffer(digest, w->buf, w->len);
	bool by_tag = strchr(w->ref, ':') == NULL;
	bool had = store_has(ph->store, STORE_PUSHED, STORE_MANIFEST, digest);
	bool had_link = store_pushed_holds(ph->store, w->name, STORE_MANIFEST, digest);
	if (store_pushed_put_manifest(ph->store, w->name, by_tag ? digest : w->ref, ct, w->buf, w->len, got, &err) !=
	    RS_OK)
		return api_fail(rq, w, &err, 0, false);
	struct gate_report rep = {0};
	struct gate_outcome out = {0};
	struct gate_report_meta meta = {w->name, w->ref, digest, gate_mode_name(gp->mode), "accepted", time(NULL), NULL};
	char *text = NULL, report_url[RS_LIMIT_NAME_MAX + DIGEST_STR_SIZE + 32];
	snprintf(report_url, sizeof(report_url), "/regslim/v1/reports/%s/%s", w->name, digest);
	char shown[RS_LIMIT_NAME_MAX + RS_LIMIT_TAG_MAX + DIGEST_STR_SIZE];
	api_ref_text(shown, sizeof(shown), w->name, w->ref);
	enum MHD_Result ret;
	bool remembered = false;
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	enum rs_code rc = gate_check_push(ph->memo, ph->scans, &remembered, &rep, gp, ph->store, STORE_PUSHED, digest,
	                                  by_tag ? 0 : GATE_CHECK_NAME_PLATFORM, ph->bases, &err);
	if (rc == RS_OK && remembered)
		log_event(LOG_INFO, "push %s (%s): policy check remembered from an earlier push of the same image", shown,
		          digest);
	double t_check = secs_since(&t0);
	if (rc || rep.denies)
		gate_fwd_cancel(ph->fwd, w->name); /* nothing more goes upstream early for a refused push */
	if (rc) {
		metrics_gate_push("check_failed");
		rs_err_prefix(&err, "policy check of %s: ", digest);
		ret = api_fail(rq, w, &err, 0, false);
		goto done;
	}
	for (size_t i = 0; i < rep.count; i++)
		metrics_gate_finding(rep.items[i].rule, rep.items[i].action == GATE_DENY ? "deny" : "warn");
	if (rep.warns && gate_report_text(&text, &rep, GATE_WARN, &err) == RS_OK) {
		log_event(LOG_WARN, "push %s (%s): %zu policy warning(s): %s", shown, digest, rep.warns, text);
		free(text);
		text = NULL;
	}
	if (rep.denies) {
		/* Refused: what this PUT added goes again, so the image cannot be
		 * pulled by digest from regslim; the report stays. */
		if (!had)
			store_remove(ph->store, STORE_PUSHED, STORE_MANIFEST, digest);
		if (!had_link)
			store_pushed_forget_manifest(ph->store, w->name, digest);
		meta.verdict = "denied";
		save_report(ph, &rep, &meta);
		if (gate_report_text(&text, &rep, GATE_DENY, &err) != RS_OK) {
			ret = api_fail(rq, w, &err, 0, false);
		} else {
			size_t n = strlen(text) + sizeof(report_url) + 256;
			char *msg = malloc(n);
			if (msg)
				snprintf(msg, n, "push of %s refused by policy: %zu violation(s): %s (report: %s)", shown,
				         rep.denies, text, report_url);
			log_event(LOG_WARN, "%s", msg ? msg : text);
			ret = reply_error_long(rq, RS_POLICY, REPLY_MANIFEST_PUT, msg ? msg : text);
			free(msg);
		}
		metrics_gate_push("denied");
		goto done;
	}
	if (by_tag) {
		rs_err_clear(&err);
		/* the optimized image is signed like an optimized pull (sign.h) before it goes upstream */
		const struct gate_signer signer = {ph->sign ? gate_sign : NULL, ph->sign};
		gate_fwd_join(ph->fwd, w->name); /* layers being sent early: the forward finds them upstream */
		gate_stage_join(ph->stages, w->name); /* and layers streamed on as they arrived */
		double t_join = secs_since(&t0);
		enum rs_code frc = gate_forward(&out, gp, ph->cfg, ph->store, w->name, w->ref, digest, &signer, &err);
		log_event(LOG_DEBUG, "push %s (%s): gate check %.3f s, early forwards joined %.3f s, forward %.3f s", shown,
		          digest, t_check, t_join - t_check, secs_since(&t0) - t_join);
		if (frc == RS_BAD_INPUT) {
			/* the image passed the policy but cannot be optimized: the client's to fix */
			if (!had)
				store_remove(ph->store, STORE_PUSHED, STORE_MANIFEST, digest);
			if (!had_link)
				store_pushed_forget_manifest(ph->store, w->name, digest);
			metrics_gate_push("invalid");
			log_event(LOG_WARN, "push %s (%s) refused: %s", shown, digest, err.msg);
			ret = reply_error(rq, frc, REPLY_MANIFEST_PUT, err.msg, NULL, 0);
			goto done;
		}
		if (frc != RS_OK) {
			metrics_gate_push("upstream_failed");
			log_event(LOG_ERROR, "push %s (%s) not forwarded: %s", shown, digest, err.msg);
			char msg[RS_ERR_MSG_MAX + 64];
			snprintf(msg, sizeof(msg), "forwarding to the upstream failed: %s", err.msg);
			ret = reply_error(rq, err.code, REPLY_FORWARD, msg, NULL, 0);
			goto done;
		}
		char pushed[600] = "";
		for (size_t i = 0; i < out.count; i++) {
			size_t l = strlen(pushed);
			snprintf(pushed + l, sizeof(pushed) - l, "%s%s:%s -> %s (%s)", i ? ", " : "", w->name,
			         out.pushed[i].tag, out.pushed[i].digest, out.pushed[i].optimized ? "optimized" : "original");
		}
		log_event(LOG_INFO, "push %s (%s) accepted by policy (mode %s, %zu warning(s)), upstream: %s", shown, digest,
		          gate_mode_name(gp->mode), rep.warns, pushed);
		if (store_pushed_put_manifest(ph->store, w->name, w->ref, ct, w->buf, w->len, got, &err) != RS_OK) {
			ret = api_fail(rq, w, &err, 0, false);
			goto done;
		}
		meta.outcome = &out;
	}
	save_report(ph, &rep, &meta);
	metrics_gate_push("accepted");
	char loc[RS_LIMIT_NAME_MAX + DIGEST_STR_SIZE + 32], nwarn[24], subject[DIGEST_STR_SIZE];
	snprintf(loc, sizeof(loc), "/v2/%s/manifests/%s", w->name, digest);
	snprintf(nwarn, sizeof(nwarn), "%zu", rep.warns);
	if (refindex_subject_of(subject, w->buf, w->len, &err) != RS_OK)
		subject[0] = '\0'; /* not reached: push_put_manifest checked it */
	struct reply_header h[] = {{"Location", loc},
	                  {"Docker-Content-Digest", digest},
	                  {"X-Regslim-Policy-Warnings", nwarn},
	                  {"X-Regslim-Report", report_url},
	                  {"OCI-Subject", subject[0] ? subject : NULL}};
	ret = reply_empty(rq, 201, h, 5);
done:
	free(text);
	gate_report_dispose(&rep);
	gate_outcome_dispose(&out);
	return ret;
}
