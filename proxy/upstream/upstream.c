/* upstream: the pull client for one configured upstream registry.
 *
 * Registry API v2 requests on top of the transfer core (xfer.h), which owns
 * the libcurl handles, redirects, auth and the bodies: this file builds the
 * paths and token scopes (repository:<repo>:pull), checks that repository
 * names, references, queries and Accept values cannot forge a request line
 * or a header, and turns answers into struct upstream_reply or, for blobs,
 * into codes. Bodies go into memory (manifests, tags, error bodies; capped)
 * or are streamed to the caller's callbacks (blobs; nothing is held).
 *
 * Details the header leaves open: a HEAD is not held to max_bytes (there is
 * no body; the GET that follows is). A Bearer realm once seen is remembered,
 * so a request for a new repository fetches its token before asking (no
 * extra 401 round trip). When the token endpoint refuses (401/403), the
 * upstream's own 401 is the answer of memory requests (RS_OK, status 401)
 * and RS_UNAUTHORIZED/RS_DENIED naming the endpoint for blobs; an
 * unreachable or garbled token endpoint is RS_UPSTREAM.
 *
 * Does not log (the caller does, once per request) and never puts a secret
 * into an error message; URLs in messages are printed without their query
 * (signed storage URLs carry credentials there). */
#include "upstream.h"

#include "image.h"
#include "rs_limits.h"
#include "xfer.h"
#include "xfer_exchange.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef REGSLIM_VERSION
#define REGSLIM_VERSION "0"
#endif

#define USER_AGENT "regslim/" REGSLIM_VERSION

struct upstream {
	struct xfer_peer *peer;
};

/* ---- small helpers ---------------------------------------------------- */

/* Repository names, references and queries go into URLs unescaped; the
 * registry layer validates them, this keeps a bad one from forging a
 * request line or a header. */
static bool url_part_ok(const char *s, bool query)
{
	if (!s || !*s)
		return false;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c <= 0x20 || c >= 0x7f || c == '#' || c == '\\')
			return false;
		if (!query && (c == '?' || c == '&' || c == '%'))
			return false;
	}
	return true;
}

static bool header_value_ok(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 && *s != '\t')
			return false;
	return true;
}

void upstream_reply_dispose(struct upstream_reply *r)
{
	if (!r)
		return;
	free(r->content_type);
	free(r->link);
	free(r->body);
	memset(r, 0, sizeof(*r));
	r->content_length = -1;
}

/* ---- lifecycle -------------------------------------------------------- */

enum rs_code upstream_global_init(struct rs_err *err)
{
	return xfer_global_init(err);
}

void upstream_global_cleanup(void)
{
	xfer_global_cleanup();
}

enum rs_code upstream_new(struct upstream **out, const struct rs_upstream_config *cfg, struct rs_err *err)
{
	*out = NULL;
	struct upstream *u = calloc(1, sizeof(*u));
	if (!u)
		return rs_err_set(err, RS_NOMEM, "out of memory creating upstream %s", cfg->name ? cfg->name : "?");
	enum rs_code rc = xfer_peer_new(&u->peer, cfg, USER_AGENT, NULL, err);
	if (rc) {
		free(u);
		return rc;
	}
	*out = u;
	return RS_OK;
}

void upstream_free(struct upstream *u)
{
	if (!u)
		return;
	xfer_peer_free(u->peer);
	free(u);
}

const struct rs_upstream_config *upstream_config(const struct upstream *u)
{
	return xfer_peer_config(u->peer);
}

/* ---- one request ------------------------------------------------------ */

/* Move the answer a into out. */
static void reply_take(struct upstream_reply *out, struct xfer_answer *a)
{
	out->status = a->status;
	out->content_type = a->content_type;
	out->link = a->link;
	memcpy(out->digest, a->digest, sizeof(out->digest));
	out->content_length = a->content_length;
	out->body = a->body;
	out->body_len = a->body ? a->body_len : 0;
	out->supports_signatures = a->supports_signatures;
	a->content_type = a->link = a->body = NULL;
}

/* GET (or HEAD) cfg->url + path into memory, with the pull scope. */
static enum rs_code memory_request(struct upstream *u, const char *path, const char *scope,
                                   const char *const *accept, size_t naccept, bool head, size_t max_bytes,
                                   struct upstream_reply *out, struct rs_err *err)
{
	char what[160];
	(void)snprintf(what, sizeof(what), "%s %s", head ? "HEAD" : "GET", path); /* truncation: message only */
	char *url = xfer_printf("%s%s", upstream_config(u)->url, path);
	if (!url)
		return rs_err_set(err, RS_NOMEM, "%s: out of memory", what);
	struct xfer_request r = {.method = head ? XFER_HEAD : XFER_GET, .url = url, .what = what, .scope = scope,
	                         .auth = XFER_AUTH_ANSWER, .follow = true, .accept = accept, .naccept = naccept,
	                         .sink = XFER_SINK_MEMORY, .max_bytes = max_bytes, .timeout_code = RS_UPSTREAM};
	struct xfer_answer a = {0};
	enum rs_code rc = xfer_run(u->peer, &r, &a, err);
	if (rc == RS_OK)
		reply_take(out, &a);
	xfer_answer_dispose(&a);
	free(url);
	return rc;
}

static enum rs_code check_name(const char *repo, const char *ref, struct rs_err *err)
{
	if (!url_part_ok(repo, false) || strlen(repo) > RS_LIMIT_NAME_MAX)
		return rs_err_set(err, RS_BAD_INPUT, "repository name '%.100s' cannot be sent upstream", repo ? repo : "");
	if (ref && (!url_part_ok(ref, false) || strchr(ref, '/') || strlen(ref) > RS_LIMIT_HEADER_MAX_BYTES))
		return rs_err_set(err, RS_BAD_INPUT, "reference '%.100s' cannot be sent upstream", ref);
	return RS_OK;
}

/* ---- the API ---------------------------------------------------------- */

enum rs_code upstream_manifest(struct upstream *u, const char *repo, const char *ref, const char *const *accept,
                               size_t naccept, bool head, size_t max_bytes, struct upstream_reply *out,
                               struct rs_err *err)
{
	memset(out, 0, sizeof(*out));
	out->content_length = -1;
	enum rs_code rc = check_name(repo, ref, err);
	if (rc)
		return rc;
	if (naccept > RS_LIMIT_ACCEPT_MAX)
		return rs_err_set(err, RS_TOO_LARGE, "%zu Accept values, limit is %d", naccept, RS_LIMIT_ACCEPT_MAX);
	for (size_t i = 0; i < naccept; i++)
		if (!header_value_ok(accept[i]) || strlen(accept[i]) > RS_LIMIT_HEADER_MAX_BYTES)
			return rs_err_set(err, RS_BAD_INPUT, "Accept value %zu holds control characters or is too long", i);
	char *path = xfer_printf("/v2/%s/manifests/%s", repo, ref);
	char *scope = xfer_printf("repository:%s:pull", repo);
	if (!path || !scope)
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
	else
		rc = memory_request(u, path, scope, accept, naccept, head, max_bytes, out, err);
	free(path);
	free(scope);
	return rc;
}

/* The message for a blob GET answered with status (not 2xx). */
static enum rs_code blob_status(const char *what, long status, const char *body, struct rs_err *err)
{
	enum rs_code code = status == 404 ? RS_NOT_FOUND
	                    : status == 401 ? RS_UNAUTHORIZED
	                    : status == 403 ? RS_DENIED
	                                    : RS_UPSTREAM;
	/* the registry error code, if the body is one, helps the reader */
	char detail[64] = "";
	const char *c = body ? strstr(body, "\"code\"") : NULL;
	if (c) {
		c = strchr(c + 6, '"');
		size_t n = c ? strcspn(c + 1, "\"") : 0;
		if (n && n < sizeof(detail) - 3 && header_value_ok(c + 1))
			(void)snprintf(detail, sizeof(detail), " (%.*s)", (int)n, c + 1);
	}
	return rs_err_set(err, code, "%s: upstream answered %ld%s", what, status, detail);
}

enum rs_code upstream_blob(struct upstream *u, const char *repo, const char *digest, upstream_begin_fn on_begin,
                           upstream_data_fn on_data, void *arg, struct rs_err *err)
{
	enum rs_code rc = check_name(repo, digest, err);
	if (rc)
		return rc;
	char *url = xfer_printf("%s/v2/%s/blobs/%s", upstream_config(u)->url, repo, digest);
	char *scope = xfer_printf("repository:%s:pull", repo);
	char what[160];
	(void)snprintf(what, sizeof(what), "GET /v2/%s/blobs/%s", repo, digest); /* truncation: message only */
	struct xfer_answer a = {0};
	if (!url || !scope) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
		goto out;
	}
	struct xfer_request r = {.method = XFER_GET, .url = url, .what = what, .scope = scope,
	                         .auth = XFER_AUTH_ANSWER, .follow = true, .sink = XFER_SINK_STREAM,
	                         .on_begin = on_begin, .on_data = on_data, .arg = arg, .timeout_code = RS_TIMEOUT};
	rc = xfer_run(u->peer, &r, &a, err);
	if (rc == RS_OK && (a.status < 200 || a.status >= 300))
		rc = blob_status(what, a.status, a.body, err);
out:
	xfer_answer_dispose(&a);
	free(url);
	free(scope);
	return rc;
}

enum rs_code upstream_blob_head(struct upstream *u, const char *repo, const char *digest,
                                struct upstream_reply *out, struct rs_err *err)
{
	memset(out, 0, sizeof(*out));
	out->content_length = -1;
	enum rs_code rc = check_name(repo, digest, err);
	if (rc)
		return rc;
	char *path = xfer_printf("/v2/%s/blobs/%s", repo, digest);
	char *scope = xfer_printf("repository:%s:pull", repo);
	if (!path || !scope)
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
	else
		rc = memory_request(u, path, scope, NULL, 0, true, SIZE_MAX, out, err);
	free(path);
	free(scope);
	return rc;
}

/* GET path (made by the caller, NULL when out of memory; freed here) with the pull scope of repo,
 * accepting one media type, the body into out (at most max_bytes). */
static enum rs_code pull_get(struct upstream *u, const char *repo, char *path, const char *accept, size_t max_bytes,
                             struct upstream_reply *out, struct rs_err *err)
{
	char *scope = xfer_printf("repository:%s:pull", repo);
	const char *const types[] = {accept};
	enum rs_code rc = !path || !scope ? rs_err_set(err, RS_NOMEM, "out of memory")
	                                  : memory_request(u, path, scope, types, 1, false, max_bytes, out, err);
	free(path);
	free(scope);
	return rc;
}

enum rs_code upstream_tags(struct upstream *u, const char *repo, const char *query, size_t max_bytes,
                           struct upstream_reply *out, struct rs_err *err)
{
	memset(out, 0, sizeof(*out));
	out->content_length = -1;
	enum rs_code rc = check_name(repo, NULL, err);
	if (rc)
		return rc;
	if (query && *query && (!url_part_ok(query, true) || strlen(query) > RS_LIMIT_HEADER_MAX_BYTES))
		return rs_err_set(err, RS_BAD_INPUT, "tags query '%.100s' cannot be sent upstream", query);
	char *path = query && *query ? xfer_printf("/v2/%s/tags/list?%s", repo, query)
	                             : xfer_printf("/v2/%s/tags/list", repo);
	return pull_get(u, repo, path, "application/json", max_bytes, out, err);
}

enum rs_code upstream_referrers(struct upstream *u, const char *repo, const char *digest, size_t max_bytes,
                                struct upstream_reply *out, struct rs_err *err)
{
	memset(out, 0, sizeof(*out));
	out->content_length = -1;
	enum rs_code rc = check_name(repo, digest, err);
	if (rc)
		return rc;
	return pull_get(u, repo, xfer_printf("/v2/%s/referrers/%s", repo, digest), IMAGE_MT_OCI_INDEX, max_bytes, out,
	                err);
}

enum rs_code upstream_signatures(struct upstream *u, const char *repo, const char *digest, size_t max_bytes,
                                 struct upstream_reply *out, struct rs_err *err)
{
	memset(out, 0, sizeof(*out));
	out->content_length = -1;
	enum rs_code rc = check_name(repo, digest, err);
	if (rc)
		return rc;
	return pull_get(u, repo, xfer_printf("/extensions/v2/%s/signatures/%s", repo, digest), "application/json",
	                max_bytes, out, err);
}

enum rs_code upstream_ping(struct upstream *u, struct rs_err *err)
{
	const struct rs_upstream_config *cfg = upstream_config(u);
	struct upstream_reply rep;
	memset(&rep, 0, sizeof(rep));
	enum rs_code rc = memory_request(u, "/v2/", NULL, NULL, 0, false, RS_LIMIT_ERROR_BODY_MAX_BYTES, &rep, err);
	if (rc == RS_OK && rep.status != 200) {
		enum rs_code code = rep.status == 401 ? RS_UNAUTHORIZED : rep.status == 403 ? RS_DENIED : RS_UPSTREAM;
		rc = rs_err_set(err, code, "GET %s/v2/: upstream %s answered %ld", cfg->url, cfg->name ? cfg->name : "?",
		                rep.status);
	}
	upstream_reply_dispose(&rep);
	return rc;
}
