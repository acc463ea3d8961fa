/* reports: GET /regslim/v1/reports/<name>/<digest>, the policy report of a
 * push (gate.c keeps it per pushed repository) or the optimization report
 * of an optimized pull (optpull.c, only under a repository the optimized
 * manifest is linked to). Host paths are scrubbed; pull permission is
 * checked by the auth gate (auth_gate.c). Answers go out through reply.h. */
#include "api_int.h"

#include "gate.h"
#include "optpull.h"
#include "push_http.h"
#include "refname.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* GET /regslim/v1/reports/<name>/<digest>: the stored policy report of a
 * push, or the optimization report of an optimized pull. */
enum MHD_Result api_serve_report(struct registry *r, struct request *rq)
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
	enum rs_code rc = gate_report_load(r->store, name, slash + 1, &body, &len, &err);
	if (rc == RS_NOT_FOUND) {
		struct route_target t = {0};
		struct rs_err e2 = {0};
		err = (struct rs_err){0};
		if (r->opt && digest_valid(slash + 1) && route_pick(r->cfg, NULL, name, &t, &e2) == RS_OK &&
		    api_mirror_linked(r, t.up_index, t.repo, STORE_MANIFEST, slash + 1))
			rc = optpull_report(r->opt, slash + 1, &body, &len, &err);
		if (rc == RS_NOT_FOUND)
			rs_err_set(&err, RS_NOT_FOUND, "no policy or optimization report for %s@%s", name, slash + 1);
	}
	if (rc != RS_OK)
		return reply_fail(rq, &err, REPLY_MANIFEST, NULL, 0);
	/* Reports written before they were kept free of host paths may name
	 * the data directory: never shown. */
	len = store_scrub_paths(r->store, body);
	return reply_buffer(rq, 200, JSON_TYPE, body, len, REPLY_OWNED, NULL, 0);
}
