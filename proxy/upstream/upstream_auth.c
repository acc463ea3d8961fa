/* upstream_auth: challenge parsing, token answers, URL resolution and the
 * per-scope bearer-token cache for the transfer core (xfer.c). Pure functions plus one
 * mutex-guarded table; no network I/O and no logging (secrets pass through
 * here). URL handling uses libcurl's URL API (CURLU), JSON goes through config/wire.c. */
#include "upstream_auth.h"

#include "wire.h"

#include "rs_limits.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- challenge parsing ------------------------------------------------ */

void upstream_auth_challenge_dispose(struct upstream_auth_challenge *c)
{
	if (!c)
		return;
	free(c->realm);
	free(c->service);
	free(c->scope);
	memset(c, 0, sizeof(*c));
}

static bool is_tchar(char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_token68_char(char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("-._~+/", c) != NULL;
}

static const char *skip_ows(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* One challenge while it is being parsed: the params we care about. */
struct parsed {
	enum upstream_auth_scheme scheme;
	char *realm, *service, *scope;
};

static void parsed_dispose(struct parsed *c)
{
	free(c->realm);
	free(c->service);
	free(c->scope);
	memset(c, 0, sizeof(*c));
}

/* Parse a quoted-string at *pp (which points at the opening quote) into a
 * new string; advances *pp past the closing quote. */
static enum rs_code parse_quoted(char **out, const char **pp, const char *start, struct rs_err *err)
{
	const char *p = *pp + 1;
	size_t n = 0;
	/* first pass: length and termination */
	const char *q = p;
	while (*q && *q != '"') {
		if (*q == '\\') {
			q++;
			if (!*q)
				break;
		}
		if ((unsigned char)*q < 0x20 && *q != '\t')
			return rs_err_set(err, RS_BAD_INPUT, "WWW-Authenticate: control character in quoted value at offset %zu",
			                  (size_t)(q - start));
		q++;
		n++;
	}
	if (*q != '"')
		return rs_err_set(err, RS_BAD_INPUT, "WWW-Authenticate: unterminated quoted value at offset %zu",
		                  (size_t)(*pp - start));
	if (n > RS_LIMIT_HEADER_MAX_BYTES)
		return rs_err_set(err, RS_TOO_LARGE, "WWW-Authenticate: parameter value of %zu bytes, limit is %u", n,
		                  (unsigned)RS_LIMIT_HEADER_MAX_BYTES);
	char *s = malloc(n + 1);
	if (!s)
		return rs_err_set(err, RS_NOMEM, "out of memory parsing WWW-Authenticate");
	size_t i = 0;
	while (*p != '"') {
		if (*p == '\\')
			p++;
		s[i++] = *p++;
	}
	s[i] = '\0';
	*out = s;
	*pp = p + 1;
	return RS_OK;
}

static enum rs_code parse_param_value(char **out, const char **pp, const char *start, struct rs_err *err)
{
	const char *p = *pp;
	if (*p == '"')
		return parse_quoted(out, pp, start, err);
	const char *b = p;
	while (is_tchar(*p) || *p == '/' || *p == ':' || *p == '=')
		p++;
	/* '/', ':' and '=' are not tchars, but unquoted URLs and scopes are seen
	 * in the wild and unambiguous here. */
	size_t n = (size_t)(p - b);
	if (n > RS_LIMIT_HEADER_MAX_BYTES)
		return rs_err_set(err, RS_TOO_LARGE, "WWW-Authenticate: parameter value of %zu bytes, limit is %u", n,
		                  (unsigned)RS_LIMIT_HEADER_MAX_BYTES);
	char *s = strndup(b, n);
	if (!s)
		return rs_err_set(err, RS_NOMEM, "out of memory parsing WWW-Authenticate");
	*out = s;
	*pp = p;
	return RS_OK;
}

static bool name_is(const char *b, size_t n, const char *name)
{
	return strlen(name) == n && strncasecmp(b, name, n) == 0;
}

static bool usable(const struct parsed *c)
{
	return c->scheme == UPSTREAM_AUTH_BASIC || (c->scheme == UPSTREAM_AUTH_BEARER && c->realm);
}

/* Keep the better of best and cur in best; cur is consumed. */
static void keep_best(struct parsed *best, struct parsed *cur)
{
	bool take = false;
	if (usable(cur)) {
		if (!usable(best))
			take = true;
		else if (best->scheme == UPSTREAM_AUTH_BASIC && cur->scheme == UPSTREAM_AUTH_BEARER)
			take = true;
	}
	if (take) {
		parsed_dispose(best);
		*best = *cur;
		memset(cur, 0, sizeof(*cur));
	} else {
		parsed_dispose(cur);
	}
}

/* Parse the auth-params of one challenge, p just after the scheme. Stops at
 * the end of the value or at the start of the next challenge. */
static enum rs_code parse_params(struct parsed *cur, const char **pp, const char *start, struct rs_err *err)
{
	const char *p = skip_ows(*pp);
	/* token68 form ("Negotiate abc=="): a run of token68 characters and
	 * '='s that ends the challenge; consumed and ignored */
	const char *q = p;
	while (is_token68_char(*q))
		q++;
	if (q > p) {
		while (*q == '=')
			q++;
		const char *r = skip_ows(q);
		if (*r == '\0' || *r == ',') {
			*pp = r;
			return RS_OK;
		}
	}
	for (;;) {
		p = skip_ows(p);
		while (*p == ',' || *p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		const char *name = p;
		while (is_tchar(*p))
			p++;
		size_t nlen = (size_t)(p - name);
		if (nlen == 0)
			return rs_err_set(err, RS_BAD_INPUT, "WWW-Authenticate: unexpected character at offset %zu",
			                  (size_t)(p - start));
		const char *after = skip_ows(p);
		if (*after != '=') {
			/* a new challenge starts at name */
			p = name;
			break;
		}
		p = skip_ows(after + 1);
		char *value = NULL;
		enum rs_code rc = parse_param_value(&value, &p, start, err);
		if (rc)
			return rc;
		char **slot = NULL;
		if (name_is(name, nlen, "realm"))
			slot = &cur->realm;
		else if (name_is(name, nlen, "service"))
			slot = &cur->service;
		else if (name_is(name, nlen, "scope"))
			slot = &cur->scope;
		if (slot && !*slot)
			*slot = value; /* the first occurrence wins */
		else
			free(value);
		p = skip_ows(p);
		if (*p && *p != ',')
			return rs_err_set(err, RS_BAD_INPUT, "WWW-Authenticate: expected ',' at offset %zu",
			                  (size_t)(p - start));
	}
	*pp = p;
	return RS_OK;
}

enum rs_code upstream_auth_parse_challenge(struct upstream_auth_challenge *out, const char *value,
                                           struct rs_err *err)
{
	memset(out, 0, sizeof(*out));
	struct parsed best = {0};
	enum rs_code rc = RS_OK;
	const char *p = value;
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (!*p)
			break;
		const char *scheme = p;
		while (is_tchar(*p))
			p++;
		size_t slen = (size_t)(p - scheme);
		if (slen == 0) {
			rc = rs_err_set(err, RS_BAD_INPUT, "WWW-Authenticate: expected an auth scheme at offset %zu",
			                (size_t)(p - value));
			break;
		}
		if (*p && *p != ' ' && *p != '\t' && *p != ',') {
			rc = rs_err_set(err, RS_BAD_INPUT, "WWW-Authenticate: unexpected character at offset %zu",
			                (size_t)(p - value));
			break;
		}
		struct parsed cur = {0};
		if (name_is(scheme, slen, "bearer"))
			cur.scheme = UPSTREAM_AUTH_BEARER;
		else if (name_is(scheme, slen, "basic"))
			cur.scheme = UPSTREAM_AUTH_BASIC;
		rc = parse_params(&cur, &p, value, err);
		if (rc) {
			parsed_dispose(&cur);
			break;
		}
		keep_best(&best, &cur);
	}
	if (rc && !usable(&best)) {
		parsed_dispose(&best);
		return rc;
	}
	/* a syntax error after a usable challenge: act on what we understood */
	if (rc)
		rs_err_clear(err);
	out->scheme = usable(&best) ? best.scheme : UPSTREAM_AUTH_NONE;
	if (out->scheme == UPSTREAM_AUTH_NONE) {
		parsed_dispose(&best);
		return RS_OK;
	}
	out->realm = best.realm;
	out->service = best.service;
	out->scope = best.scope;
	return RS_OK;
}

/* ---- token answers ---------------------------------------------------- */

static bool header_safe(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x21 || (unsigned char)*s == 0x7f)
			return false;
	return true;
}

enum rs_code upstream_auth_parse_token(char **out_token, long *out_expires_in, const char *body, size_t len,
                                       struct rs_err *err)
{
	*out_token = NULL;
	*out_expires_in = 60;
	if (len > RS_LIMIT_TOKEN_MAX_BYTES)
		return rs_err_set(err, RS_TOO_LARGE, "token answer is %zu bytes, limit is %u", len,
		                  (unsigned)RS_LIMIT_TOKEN_MAX_BYTES);
	enum rs_code rc = wire_parse_token(out_token, out_expires_in, body, len, err);
	if (rc)
		return rc;
	if (!header_safe(*out_token)) {
		free(*out_token);
		*out_token = NULL;
		return rs_err_set(err, RS_BAD_INPUT, "token answer holds a token with characters not allowed in a header");
	}
	return RS_OK;
}

/* ---- URLs ------------------------------------------------------------- */

static bool has_bad_url_chars(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f)
			return true;
	return false;
}

static bool scheme_is_http(const char *scheme)
{
	return scheme && (strcasecmp(scheme, "http") == 0 || strcasecmp(scheme, "https") == 0);
}

enum rs_code upstream_auth_resolve_url(char **out, const char *base, const char *location, struct rs_err *err)
{
	*out = NULL;
	if (!*location || has_bad_url_chars(location) || strlen(location) > RS_LIMIT_HEADER_MAX_BYTES)
		return rs_err_set(err, RS_BAD_INPUT, "redirect Location is empty, too long or holds spaces or control characters");
	CURLU *h = curl_url();
	if (!h)
		return rs_err_set(err, RS_NOMEM, "out of memory resolving a redirect");
	enum rs_code rc = RS_OK;
	char *scheme = NULL;
	char *url = NULL;
	if (curl_url_set(h, CURLUPART_URL, base, 0) != CURLUE_OK) {
		rc = rs_err_set(err, RS_BAD_INPUT, "cannot parse the URL a redirect came from");
		goto out;
	}
	if (curl_url_set(h, CURLUPART_URL, location, 0) != CURLUE_OK ||
	    curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK || !scheme_is_http(scheme) ||
	    curl_url_get(h, CURLUPART_URL, &url, 0) != CURLUE_OK) {
		rc = rs_err_set(err, RS_BAD_INPUT, "redirect Location is not an http(s) URL or relative reference");
		goto out;
	}
	*out = strdup(url);
	if (!*out)
		rc = rs_err_set(err, RS_NOMEM, "out of memory resolving a redirect");
out:
	curl_free(url);
	curl_free(scheme);
	curl_url_cleanup(h);
	return rc;
}

struct origin {
	char *scheme, *host, *port;
};

static void origin_dispose(struct origin *o)
{
	curl_free(o->scheme);
	curl_free(o->host);
	curl_free(o->port);
}

static bool origin_get(struct origin *o, const char *url)
{
	memset(o, 0, sizeof(*o));
	if (!url || has_bad_url_chars(url))
		return false;
	CURLU *h = curl_url();
	if (!h)
		return false;
	bool ok = curl_url_set(h, CURLUPART_URL, url, 0) == CURLUE_OK &&
	          curl_url_get(h, CURLUPART_SCHEME, &o->scheme, 0) == CURLUE_OK &&
	          curl_url_get(h, CURLUPART_HOST, &o->host, 0) == CURLUE_OK &&
	          curl_url_get(h, CURLUPART_PORT, &o->port, CURLU_DEFAULT_PORT) == CURLUE_OK;
	curl_url_cleanup(h);
	return ok && scheme_is_http(o->scheme);
}

bool upstream_auth_same_origin(const char *a, const char *b)
{
	struct origin oa, ob;
	bool ok = origin_get(&oa, a) && origin_get(&ob, b);
	bool same = ok && strcasecmp(oa.scheme, ob.scheme) == 0 && strcasecmp(oa.host, ob.host) == 0 &&
	            strcmp(oa.port, ob.port) == 0;
	origin_dispose(&oa);
	if (ok)
		origin_dispose(&ob);
	return same;
}

bool upstream_auth_is_http_url(const char *url)
{
	if (!url || (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0))
		return false;
	struct origin o;
	bool ok = origin_get(&o, url);
	origin_dispose(&o);
	return ok;
}

/* ---- token cache ------------------------------------------------------ */

struct token_entry {
	char *scope;
	char *token;
	int64_t expires; /* monotonic seconds */
};

struct upstream_auth_tokens {
	pthread_mutex_t lock;
	struct token_entry *v;
	size_t n, cap;
};

struct upstream_auth_tokens *upstream_auth_tokens_new(void)
{
	struct upstream_auth_tokens *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	if (pthread_mutex_init(&t->lock, NULL) != 0) {
		free(t);
		return NULL;
	}
	return t;
}

static void entry_free(struct token_entry *e)
{
	if (e->token) /* wipe the secret before the memory is reused */
		memset(e->token, 0, strlen(e->token));
	free(e->token);
	free(e->scope);
}

void upstream_auth_tokens_free(struct upstream_auth_tokens *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		entry_free(&t->v[i]);
	free(t->v);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

int64_t upstream_auth_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec;
}

static struct token_entry *find(struct upstream_auth_tokens *t, const char *scope)
{
	for (size_t i = 0; i < t->n; i++)
		if (strcmp(t->v[i].scope, scope) == 0)
			return &t->v[i];
	return NULL;
}

static void remove_at(struct upstream_auth_tokens *t, size_t i)
{
	entry_free(&t->v[i]);
	t->v[i] = t->v[--t->n];
}

char *upstream_auth_tokens_get(struct upstream_auth_tokens *t, const char *scope, int64_t now)
{
	char *copy = NULL;
	pthread_mutex_lock(&t->lock);
	struct token_entry *e = find(t, scope);
	if (e && e->expires > now)
		copy = strdup(e->token);
	pthread_mutex_unlock(&t->lock);
	return copy;
}

enum rs_code upstream_auth_tokens_put(struct upstream_auth_tokens *t, const char *scope, const char *token,
                                      long expires_in, int64_t now, struct rs_err *err)
{
	if (expires_in <= 0)
		expires_in = 60;
	/* renew a little early so a token does not expire on its way */
	long margin = expires_in >= 60 ? 10 : expires_in >= 10 ? 2 : 0;
	char *s = strdup(scope);
	char *k = strdup(token);
	if (!s || !k) {
		free(s);
		free(k);
		return rs_err_set(err, RS_NOMEM, "out of memory caching a token");
	}
	enum rs_code rc = RS_OK;
	pthread_mutex_lock(&t->lock);
	struct token_entry *e = find(t, scope);
	if (!e) {
		if (t->n == RS_LIMIT_TOKEN_CACHE_ENTRIES) {
			size_t soonest = 0;
			for (size_t i = t->n; i-- > 0;) {
				if (t->v[i].expires <= now)
					remove_at(t, i);
				else if (t->v[i].expires < t->v[soonest].expires)
					soonest = i;
			}
			if (t->n == RS_LIMIT_TOKEN_CACHE_ENTRIES)
				remove_at(t, soonest);
		}
		if (t->n == t->cap) {
			size_t cap = t->cap ? t->cap * 2 : 8;
			struct token_entry *v = realloc(t->v, cap * sizeof(*v));
			if (!v) {
				rc = rs_err_set(err, RS_NOMEM, "out of memory caching a token");
				goto out;
			}
			t->v = v;
			t->cap = cap;
		}
		e = &t->v[t->n++];
		memset(e, 0, sizeof(*e));
	} else {
		entry_free(e);
	}
	e->scope = s;
	e->token = k;
	e->expires = now + expires_in - margin;
	s = k = NULL;
out:
	pthread_mutex_unlock(&t->lock);
	free(s);
	free(k);
	return rc;
}

void upstream_auth_tokens_drop(struct upstream_auth_tokens *t, const char *scope, const char *token)
{
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n; i++) {
		if (strcmp(t->v[i].scope, scope) == 0) {
			if (!token || strcmp(t->v[i].token, token) == 0)
				remove_at(t, i);
			break;
		}
	}
	pthread_mutex_unlock(&t->lock);
}
