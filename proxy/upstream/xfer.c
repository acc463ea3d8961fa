/* xfer: the transfer core of the upstream clients (see xfer.h).
 *
 * Peers and their handle pools, and one logical request: run_request()
 * performs exchanges (xfer_exchange.c: one curl_easy_perform each) on a
 * pooled handle, follows redirects, and answers a 401 once, fetching bearer
 * tokens from the realm the upstream named (cached per scope in
 * upstream_auth.c) or sending the configured Basic credentials. Talks to
 * libcurl (handles, URL API), xfer_exchange.h and upstream_auth.h; the words
 * of a failure come from the peer's owner. */
#include "xfer.h"

#include "rs_limits.h"
#include "xfer_exchange.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POOL_MAX 16

struct xfer_peer {
	struct xfer_exchange_site site; /* config, user agent, wording: borrowed */
	const struct rs_upstream_config *cfg; /* = site.cfg */
	struct upstream_auth_tokens *tokens;
	pthread_mutex_t lock; /* guards pool, npool, basic, realm, service */
	CURL *pool[POOL_MAX];
	size_t npool;
	bool basic;    /* the upstream challenged with Basic: send credentials up front */
	char *realm;   /* last Bearer challenge, for fetching tokens before the 401 */
	char *service;
};

/* ---- small helpers ---------------------------------------------------- */

static void secret_free(char *s)
{
	if (s) {
		memset(s, 0, strlen(s));
		free(s);
	}
}

static bool have_credentials(const struct xfer_peer *p)
{
	return p->cfg->username && p->cfg->password;
}

void xfer_answer_dispose(struct xfer_answer *a)
{
	if (!a)
		return;
	free(a->content_type);
	free(a->link);
	free(a->location);
	free(a->digest_header);
	free(a->body);
	memset(a, 0, sizeof(*a));
	a->content_length = -1;
}

/* ---- lifecycle -------------------------------------------------------- */

enum rs_code xfer_global_init(struct rs_err *err)
{
	CURLcode c = curl_global_init(CURL_GLOBAL_DEFAULT);
	if (c != CURLE_OK)
		return rs_err_set(err, RS_UPSTREAM, "curl_global_init: %s", curl_easy_strerror(c));
	return RS_OK;
}

void xfer_global_cleanup(void)
{
	curl_global_cleanup();
}

enum rs_code xfer_peer_new(struct xfer_peer **out, const struct rs_upstream_config *cfg, const char *user_agent,
                           xfer_word_fn word_fn, struct rs_err *err)
{
	*out = NULL;
	const char *name = cfg->name ? cfg->name : "?";
	if (!upstream_auth_is_http_url(cfg->url))
		return rs_err_set(err, RS_CONFIG, "upstream %s: url '%.200s' is not an http(s) URL", name,
		                  cfg->url ? cfg->url : "");
	struct xfer_peer *p = calloc(1, sizeof(*p));
	if (!p)
		return rs_err_set(err, RS_NOMEM, "out of memory creating upstream %s", name);
	p->cfg = p->site.cfg = cfg;
	p->site.user_agent = user_agent;
	p->site.word = word_fn;
	p->tokens = upstream_auth_tokens_new();
	if (!p->tokens) {
		free(p);
		return rs_err_set(err, RS_NOMEM, "out of memory creating upstream %s", name);
	}
	if (pthread_mutex_init(&p->lock, NULL) != 0) {
		upstream_auth_tokens_free(p->tokens);
		free(p);
		return rs_err_set(err, RS_NOMEM, "cannot create a mutex for upstream %s", name);
	}
	*out = p;
	return RS_OK;
}

void xfer_peer_free(struct xfer_peer *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->npool; i++)
		curl_easy_cleanup(p->pool[i]);
	free(p->realm);
	free(p->service);
	upstream_auth_tokens_free(p->tokens);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

const struct rs_upstream_config *xfer_peer_config(const struct xfer_peer *p)
{
	return p->cfg;
}

static CURL *handle_get(struct xfer_peer *p)
{
	CURL *h = NULL;
	pthread_mutex_lock(&p->lock);
	if (p->npool)
		h = p->pool[--p->npool];
	pthread_mutex_unlock(&p->lock);
	return h ? h : curl_easy_init();
}

/* Back into the pool: curl_easy_reset keeps the connection and DNS caches. */
static void handle_put(struct xfer_peer *p, CURL *h)
{
	if (!h)
		return;
	curl_easy_reset(h);
	pthread_mutex_lock(&p->lock);
	if (p->npool < POOL_MAX) {
		p->pool[p->npool++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	if (h)
		curl_easy_cleanup(h);
}

/* ---- bearer tokens ---------------------------------------------------- */

/* Append "name=value" (value URL-encoded) to the query of h. */
static bool query_add(CURLU *h, const char *name, const char *value)
{
	char *kv = NULL;
	if (asprintf(&kv, "%s=%s", name, value) < 0)
		return false;
	bool ok = curl_url_set(h, CURLUPART_QUERY, kv, CURLU_APPENDQUERY | CURLU_URLENCODE) == CURLUE_OK;
	free(kv);
	return ok;
}

/* The token URL for scope (may be NULL; several scopes are separated by
 * spaces: one parameter each) into *out (curl_free). */
static enum rs_code token_url(struct xfer_peer *p, char **out, const char *realm, const char *service,
                              const char *scope, struct rs_err *err)
{
	*out = NULL;
	CURLU *cu = curl_url();
	char *scopes = NULL;
	enum rs_code rc = RS_OK;
	if (!cu || curl_url_set(cu, CURLUPART_URL, realm, 0) != CURLUE_OK) {
		rc = rs_err_set(err, cu ? RS_UPSTREAM : RS_NOMEM, "cannot use token realm '%.100s'", realm);
		goto out;
	}
	bool ok = true;
	if (service && *service)
		ok = query_add(cu, "service", service);
	if (ok && scope && *scope) {
		scopes = strdup(scope);
		ok = scopes != NULL;
		for (char *s = scopes; ok && s && *s;) {
			size_t n = strcspn(s, " ");
			bool last = s[n] == '\0';
			s[n] = '\0';
			if (n)
				ok = query_add(cu, "scope", s);
			s = last ? NULL : s + n + 1;
		}
	}
	if (ok && have_credentials(p))
		ok = query_add(cu, "account", p->cfg->username);
	if (!ok || curl_url_get(cu, CURLUPART_URL, out, 0) != CURLUE_OK)
		rc = rs_err_set(err, RS_NOMEM, "out of memory building the token request");
out:
	free(scopes);
	curl_url_cleanup(cu);
	return rc;
}

/* GET the token for scope (may be NULL) from realm with the configured
 * credentials; *out_token is new. The token endpoint refusing (401/403) is
 * RS_UNAUTHORIZED/RS_DENIED, any other status RS_UPSTREAM (worded by the
 * peer's owner); a garbled answer RS_UPSTREAM. */
static enum rs_code token_fetch(struct xfer_peer *p, CURL *h, const char *realm, const char *service,
                                const char *scope, char **out_token, long *out_expires, struct rs_err *err)
{
	*out_token = NULL;
	if (!upstream_auth_is_http_url(realm))
		return rs_err_set(err, RS_UPSTREAM, "token realm '%.100s' of upstream %s is not an http(s) URL", realm,
		                  p->cfg->name ? p->cfg->name : "?");
	char *url = NULL;
	enum rs_code rc = token_url(p, &url, realm, service, scope, err);
	if (rc)
		return rc;
	struct xfer_request tr = {.method = XFER_GET, .url = url, .what = "token request",
	                          .max_bytes = RS_LIMIT_TOKEN_MAX_BYTES, .timeout_code = RS_UPSTREAM};
	struct xfer_exchange x;
	xfer_exchange_init(&x, &tr);
	struct xfer_exchange_auth a = {.basic = true};
	rc = xfer_exchange_perform(&x, h, &p->site, XFER_GET, url, &a, err);
	if (rc == RS_OK && x.a.status == 200) {
		rc = upstream_auth_parse_token(out_token, out_expires, x.a.body ? x.a.body : "", x.a.body_len, err);
		if (rc == RS_BAD_INPUT) /* the token server's answer, not the client's request */
			rc = err->code = RS_UPSTREAM;
		if (rc)
			rs_err_prefix(err, "token from %.*s: ", xfer_exchange_url_len(url), url);
	} else if (rc == RS_OK) {
		long st = x.a.status;
		enum rs_code code = st == 401 ? RS_UNAUTHORIZED : st == 403 ? RS_DENIED : RS_UPSTREAM;
		struct xfer_fault_info f = {.fault = XFER_FAULT_TOKEN, .what = tr.what, .url = url, .status = st,
		                            .scope = scope ? scope : ""};
		rc = xfer_exchange_word(&p->site, err, code, &f);
	}
	xfer_exchange_dispose(&x);
	curl_free(url);
	return rc;
}

/* Remember the realm of a Bearer challenge so that tokens for new scopes
 * can be fetched before the first 401. */
static void remember_realm(struct xfer_peer *p, const struct upstream_auth_challenge *c)
{
	char *realm = strdup(c->realm);
	char *service = c->service ? strdup(c->service) : NULL;
	if (!realm || (c->service && !service)) {
		free(realm);
		free(service);
		return; /* only an optimization */
	}
	pthread_mutex_lock(&p->lock);
	free(p->realm);
	free(p->service);
	p->realm = realm;
	p->service = service;
	pthread_mutex_unlock(&p->lock);
}

/* Fetch a token for scope from the remembered realm into *out (NULL when
 * no realm is known) and cache it. */
static enum rs_code token_from_realm(struct xfer_peer *p, CURL *h, const char *scope, char **out,
                                     struct rs_err *err)
{
	*out = NULL;
	char *realm = NULL, *service = NULL;
	pthread_mutex_lock(&p->lock);
	if (p->realm) {
		realm = strdup(p->realm);
		service = p->service ? strdup(p->service) : NULL;
	}
	pthread_mutex_unlock(&p->lock);
	long expires = 0;
	enum rs_code rc = RS_OK;
	if (realm && (rc = token_fetch(p, h, realm, service, scope, out, &expires, err)) == RS_OK)
		rc = upstream_auth_tokens_put(p->tokens, scope, *out, expires, upstream_auth_now(), err);
	free(realm);
	free(service);
	return rc;
}

/* The best challenge of an answer: Bearer with a realm over Basic. */
static void best_challenge(struct upstream_auth_challenge *best, const struct xfer_exchange *x)
{
	memset(best, 0, sizeof(*best));
	for (size_t i = 0; i < x->nwww; i++) {
		struct upstream_auth_challenge c;
		struct rs_err ignored;
		if (upstream_auth_parse_challenge(&c, x->www_auth[i], &ignored) != RS_OK)
			continue;
		if (c.scheme > best->scheme) {
			upstream_auth_challenge_dispose(best);
			*best = c;
		} else {
			upstream_auth_challenge_dispose(&c);
		}
	}
}

/* ---- one logical request ---------------------------------------------- */

/* What to do after a 401 from the peer. */
enum next { NEXT_RETRY, NEXT_STOP, NEXT_FAIL };

/* One request's auth: the token in use and the cache key. */
struct session {
	struct xfer_peer *p;
	CURL *h;
	const struct xfer_request *r;
	const char *key; /* the scope, "" for none */
	char *token;
};

static void session_forget_token(struct session *s)
{
	if (s->token) {
		upstream_auth_tokens_drop(s->p->tokens, s->key, s->token);
		secret_free(s->token);
		s->token = NULL;
	}
}

/* XFER_AUTH_ANSWER: answer the challenge of x's 401 once. */
static enum next answer_challenge(struct session *s, struct xfer_exchange *x, bool basic, enum rs_code *rc,
                                  struct rs_err *err)
{
	struct upstream_auth_challenge best;
	best_challenge(&best, x);
	if (best.scheme == UPSTREAM_AUTH_BASIC) {
		upstream_auth_challenge_dispose(&best);
		if (!have_credentials(s->p) || basic)
			return NEXT_STOP;
		pthread_mutex_lock(&s->p->lock);
		s->p->basic = true;
		pthread_mutex_unlock(&s->p->lock);
		return NEXT_RETRY;
	}
	if (best.scheme != UPSTREAM_AUTH_BEARER) {
		upstream_auth_challenge_dispose(&best);
		return NEXT_STOP;
	}
	session_forget_token(s);
	remember_realm(s->p, &best);
	long expires = 0;
	struct rs_err terr = {0};
	const char *scope = best.scope ? best.scope : s->r->scope;
	enum rs_code trc = token_fetch(s->p, s->h, best.realm, best.service, scope, &s->token, &expires, &terr);
	upstream_auth_challenge_dispose(&best);
	if (trc == RS_UNAUTHORIZED || trc == RS_DENIED) {
		/* the token endpoint refused us: the 401 is the answer, the
		 * reason goes to streaming callers */
		if (s->r->sink != XFER_SINK_STREAM)
			return NEXT_STOP;
		*rc = trc;
		if (err)
			*err = terr;
		return NEXT_FAIL;
	}
	if (trc) {
		/* an unusable token endpoint is an upstream failure */
		*rc = trc == RS_NOMEM ? RS_NOMEM : RS_UPSTREAM;
		if (err) {
			*err = terr;
			err->code = *rc;
		}
		return NEXT_FAIL;
	}
	*rc = upstream_auth_tokens_put(s->p->tokens, s->key, s->token, expires, upstream_auth_now(), err);
	return *rc ? NEXT_FAIL : NEXT_RETRY;
}

/* A token endpoint failure of XFER_AUTH_PROBED: the upstream failed. */
static enum rs_code probed_token_failure(enum rs_code rc, struct rs_err *err)
{
	if (rc != RS_NOMEM && rc != RS_OK) {
		rc = RS_UPSTREAM;
		if (err)
			err->code = rc;
	}
	return rc;
}

/* XFER_AUTH_PROBED: drop the token, fetch a fresh one, try again once. */
static enum next retry_probed(struct session *s, enum rs_code *rc, struct rs_err *err)
{
	upstream_auth_tokens_drop(s->p->tokens, s->key, NULL);
	secret_free(s->token);
	s->token = NULL;
	*rc = probed_token_failure(token_from_realm(s->p, s->h, s->key, &s->token, err), err);
	return *rc ? NEXT_FAIL : NEXT_RETRY;
}

/* Follow the redirects of one attempt from url; on RS_OK x holds the final
 * answer and *home tells whether it came from the peer's own origin. */
static enum rs_code follow(struct session *s, struct xfer_exchange *x, bool basic, bool *home, struct rs_err *err)
{
	struct xfer_peer *p = s->p;
	char *url = strdup(s->r->url);
	enum rs_code rc = url ? RS_OK : rs_err_set(err, RS_NOMEM, "%s: out of memory", x->what);
	for (int hops = 0; rc == RS_OK; hops++) {
		*home = upstream_auth_same_origin(url, p->cfg->url);
		struct xfer_exchange_auth a = {.bearer = *home ? s->token : NULL, .basic = *home && !s->token && basic};
		if ((rc = xfer_exchange_perform(x, s->h, &p->site, s->r->method, url, &a, err)) || !(x->discard && x->a.location))
			break;
		if (hops == RS_LIMIT_UPSTREAM_REDIRECTS) {
			rc = rs_err_set(err, RS_UPSTREAM, "%s: more than %d redirects, last to %.*s", x->what,
			                RS_LIMIT_UPSTREAM_REDIRECTS, xfer_exchange_url_len(url), url);
			break;
		}
		char *next = NULL;
		if ((rc = upstream_auth_resolve_url(&next, url, x->a.location, err))) {
			/* a redirect we will not follow is the upstream's fault (502), not the client's */
			if (rc == RS_BAD_INPUT)
				rc = err->code = RS_UPSTREAM;
			rs_err_prefix(err, "%s: %ld from %.*s: ", x->what, x->a.status, xfer_exchange_url_len(url), url);
			break;
		}
		free(url);
		url = next;
	}
	free(url);
	return rc;
}

/* The token to start with: cached, else fetched from a known realm (for
 * XFER_AUTH_ANSWER only as a shortcut: a failure is left to the 401). */
static enum rs_code first_token(struct session *s, struct rs_err *err)
{
	s->token = upstream_auth_tokens_get(s->p->tokens, s->key, upstream_auth_now());
	if (s->token)
		return RS_OK;
	if (s->r->auth == XFER_AUTH_PROBED)
		return probed_token_failure(token_from_realm(s->p, s->h, s->key, &s->token, err), err);
	if (s->r->scope) {
		struct rs_err ignored = {0};
		if (token_from_realm(s->p, s->h, s->key, &s->token, &ignored) == RS_NOMEM) {
			/* not cached, but still good for this request */
		}
	}
	return RS_OK;
}

/* Run r with x: auth, redirects and one retry after a 401. On RS_OK, x
 * holds the final answer. */
static enum rs_code run_request(struct xfer_peer *p, const struct xfer_request *r, struct xfer_exchange *x,
                                struct rs_err *err)
{
	struct session s = {.p = p, .h = handle_get(p), .r = r, .key = r->scope ? r->scope : ""};
	enum rs_code rc = s.h ? first_token(&s, err) : rs_err_set(err, RS_NOMEM, "%s: out of memory", x->what);
	for (bool retried = false; rc == RS_OK; retried = true) {
		pthread_mutex_lock(&p->lock);
		bool basic = p->basic && have_credentials(p);
		pthread_mutex_unlock(&p->lock);
		bool home = true;
		if ((rc = follow(&s, x, basic, &home, err)))
			break;
		if (x->a.status != 401 || !home || retried || x->a.streamed || r->body_fn)
			break;
		enum next n = r->auth == XFER_AUTH_PROBED ? retry_probed(&s, &rc, err)
		                                          : answer_challenge(&s, x, basic, &rc, err);
		if (n != NEXT_RETRY)
			break;
	}
	secret_free(s.token);
	handle_put(p, s.h);
	return rc;
}

enum rs_code xfer_run(struct xfer_peer *p, const struct xfer_request *r, struct xfer_answer *out,
                      struct rs_err *err)
{
	xfer_answer_dispose(out);
	struct xfer_exchange x;
	xfer_exchange_init(&x, r);
	enum rs_code rc = run_request(p, r, &x, err);
	if (rc == RS_OK) {
		*out = x.a;
		memset(&x.a, 0, sizeof(x.a));
		if (!x.head && !out->body && !out->streamed && !(out->body = calloc(1, 1)))
			rc = rs_err_set(err, RS_NOMEM, "%s: out of memory", r->what);
	}
	xfer_exchange_dispose(&x);
	return rc;
}

enum rs_code xfer_probe(struct xfer_peer *p, long *out_status, enum upstream_auth_scheme *out_scheme,
                        struct rs_err *err)
{
	*out_status = 0;
	*out_scheme = UPSTREAM_AUTH_NONE;
	char *url = NULL;
	if (asprintf(&url, "%s/v2/", p->cfg->url) < 0)
		url = NULL; /* undefined after a failure */
	CURL *h = handle_get(p);
	struct xfer_request r = {.method = XFER_GET, .url = url, .what = "GET /v2/",
	                         .max_bytes = RS_LIMIT_ERROR_BODY_MAX_BYTES, .timeout_code = RS_UPSTREAM};
	struct xfer_exchange x;
	xfer_exchange_init(&x, &r);
	enum rs_code rc = RS_OK;
	if (!url || !h) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
		goto out;
	}
	struct xfer_exchange_auth none = {0};
	if ((rc = xfer_exchange_perform(&x, h, &p->site, XFER_GET, url, &none, err)))
		goto out;
	*out_status = x.a.status;
	if (x.a.status != 401)
		goto out;
	struct upstream_auth_challenge best;
	best_challenge(&best, &x);
	*out_scheme = best.scheme;
	if (best.scheme == UPSTREAM_AUTH_BEARER) {
		remember_realm(p, &best);
	} else if (best.scheme == UPSTREAM_AUTH_BASIC) {
		pthread_mutex_lock(&p->lock);
		p->basic = true;
		pthread_mutex_unlock(&p->lock);
	}
	upstream_auth_challenge_dispose(&best);
out:
	xfer_exchange_dispose(&x);
	handle_put(p, h);
	free(url);
	return rc;
}
