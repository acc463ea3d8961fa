/* sigstore: GET/HEAD /sigstore/<repository>@sha256=<hex>/signature-<n>,
 * regslim's lookaside in the layout containers/image reads
 * (containers-registries.d(5): a signature storage URL, then the
 * repository path, "@<algorithm>=<hex>" and "signature-<n>" from 1). It
 * serves regslim's own simple-signing signatures of optimized manifests and
 * proxies the publisher's signatures of originals (sign.h decides which).
 * The repository is routed like a /v2/ name (route.c: a configured host as
 * first component, else the default upstream) and pull permission is
 * checked by the auth gate. Answers go out through reply.h. */
#include "api_int.h"

#include "push_http.h"
#include "refname.h"
#include "sign.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIG_PREFIX "/signature-"

enum MHD_Result api_sigstore_get(struct registry *r, struct request *rq, const char *path)
{
	rq->route = "sigstore";
	if (strcmp(rq->method, "GET") != 0 && strcmp(rq->method, "HEAD") != 0)
		return reply_error(rq, RS_UNSUPPORTED, REPLY_OTHER, "only GET and HEAD are allowed on /sigstore/", NULL, 0);
	const char *sig = strstr(path, SIG_PREFIX);
	const char *at = strrchr(path, '@');
	const char *num = sig ? sig + strlen(SIG_PREFIX) : NULL;
	char *end = NULL;
	unsigned long n = num && *num >= '1' && *num <= '9' ? strtoul(num, &end, 10) : 0;
	if (!at || !sig || at > sig || n == 0 || n > 1000000 || *end || strncmp(at, "@sha256=", 8) != 0 ||
	    (size_t)(sig - at) != 8 + 64)
		return reply_error(rq, RS_NOT_FOUND, REPLY_ENDPOINT,
		                   "expected /sigstore/<repository>@sha256=<hex>/signature-<n>", NULL, 0);
	char name[RS_LIMIT_NAME_MAX + 1], digest[DIGEST_STR_SIZE];
	if ((size_t)(at - path) > RS_LIMIT_NAME_MAX)
		return reply_error(rq, RS_BAD_INPUT, REPLY_NAME, "repository name too long", NULL, 0);
	snprintf(name, sizeof(name), "%.*s", (int)(at - path), path);
	snprintf(digest, sizeof(digest), "sha256:%.64s", at + 8);
	if (!refname_repo_valid(name) || !digest_valid(digest))
		return reply_error(rq, RS_BAD_INPUT, REPLY_OTHER, "invalid repository or digest in the signature path",
		                   NULL, 0);
	struct route_target t = {0};
	struct rs_err err = {0};
	if (route_pick(r->cfg, NULL, name, &t, &err) != RS_OK)
		return reply_fail(rq, &err, REPLY_NAME, NULL, 0);
	rq->upstream = r->cfg->upstreams[t.up_index].name;
	enum MHD_Result gated;
	if (!push_http_gate(r->ph, rq, name, AUTH_PULL, &gated))
		return gated;
	if (!r->sign)
		return reply_error(rq, RS_NOT_FOUND, REPLY_OTHER, "no signatures are configured", NULL, 0);
	char *body = NULL;
	size_t len = 0;
	if (sign_lookaside_get(r->sign, rq->upstream, t.repo, digest, (unsigned)n, &body, &len, &err) != RS_OK)
		return reply_fail(rq, &err, REPLY_OTHER, NULL, 0);
	return reply_buffer(rq, 200, "application/octet-stream", body, len, REPLY_OWNED, NULL, 0);
}
