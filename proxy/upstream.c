/* upstream: the libcurl client for one configured upstream registry.
 *
 * Every call runs one logical request on an easy handle taken from a small
 * mutex-guarded pool (connections stay open between calls). One request may
 * be several HTTP exchanges: redirects are followed by hand (so credentials
 * are only sent to the upstream's own scheme://host:port), and a 401 is
 * answered once per request with the auth the upstream asked for: Basic with
 * the configured credentials, or a bearer token fetched from the challenge's
 * realm and cached per scope (upstream_auth.c). Bodies go into memory
 * (manifests, tags, error bodies; capped) or are streamed to the caller's
 * callbacks (blobs; nothing is held). No total timeout: a transfer is
 * aborted when it stalls for the upstream's timeout_s.
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

#include "rs_limits.h"
#include "upstream_auth.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef REGSLIM_VERSION
#define REGSLIM_VERSION "0"
#endif

#define POOL_MAX 16
#define WWW_AUTH_MAX 4
#define USER_AGENT "regslim/" REGSLIM_VERSION

struct upstream {
	const struct rs_upstream_config *cfg; /* borrowed */
	struct upstream_auth_tokens *tokens;
	pthread_mutex_t lock; /* guards pool, npool, basic, realm, service */
	CURL *pool[POOL_MAX];
	size_t npool;
	bool basic;    /* the upstream challenged with Basic: send credentials up front */
	char *realm;   /* last Bearer challenge, for fetching tokens before the 401 */
	char *service;
};

/* ---- small helpers ---------------------------------------------------- */

static char *str_printf(const char *fmt, ...) RS_PRINTF(1, 2);
static char *str_printf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	char *s = malloc((size_t)n + 1);
	if (!s)
		return NULL;
	va_start(ap, fmt);
	(void)vsnprintf(s, (size_t)n + 1, fmt, ap); /* same format, same length */
	va_end(ap);
	return s;
}

/* Length of url without its query and fragment, for messages. */
static int url_log_len(const char *url)
{
	size_t n = strcspn(url, "?#");
	return n > 200 ? 200 : (int)n;
}

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
	CURLcode c = curl_global_init(CURL_GLOBAL_DEFAULT);
	if (c != CURLE_OK)
		return rs_err_set(err, RS_UPSTREAM, "curl_global_init: %s", curl_easy_strerror(c));
	return RS_OK;
}

void upstream_global_cleanup(void)
{
	curl_global_cleanup();
}

enum rs_code upstream_new(struct upstream **out, const struct rs_upstream_config *cfg, struct rs_err *err)
{
	*out = NULL;
	if (!upstream_auth_is_http_url(cfg->url))
		return rs_err_set(err, RS_CONFIG, "upstream %s: url '%.200s' is not an http(s) URL",
		                  cfg->name ? cfg->name : "?", cfg->url ? cfg->url : "");
	struct upstream *u = calloc(1, sizeof(*u));
	if (!u)
		return rs_err_set(err, RS_NOMEM, "out of memory creating upstream %s", cfg->name ? cfg->name : "?");
	u->cfg = cfg;
	u->tokens = upstream_auth_tokens_new();
	if (!u->tokens) {
		free(u);
		return rs_err_set(err, RS_NOMEM, "out of memory creating upstream %s", cfg->name ? cfg->name : "?");
	}
	if (pthread_mutex_init(&u->lock, NULL) != 0) {
		upstream_auth_tokens_free(u->tokens);
		free(u);
		return rs_err_set(err, RS_NOMEM, "cannot create a mutex for upstream %s", cfg->name ? cfg->name : "?");
	}
	*out = u;
	return RS_OK;
}

void upstream_free(struct upstream *u)
{
	if (!u)
		return;
	for (size_t i = 0; i < u->npool; i++)
		curl_easy_cleanup(u->pool[i]);
	free(u->realm);
	free(u->service);
	upstream_auth_tokens_free(u->tokens);
	pthread_mutex_destroy(&u->lock);
	free(u);
}

const struct rs_upstream_config *upstream_config(const struct upstream *u)
{
	return u->cfg;
}

static CURL *handle_get(struct upstream *u)
{
	CURL *h = NULL;
	pthread_mutex_lock(&u->lock);
	if (u->npool)
		h = u->pool[--u->npool];
	pthread_mutex_unlock(&u->lock);
	return h ? h : curl_easy_init();
}

/* Back into the pool: curl_easy_reset keeps the connection and DNS caches. */
static void handle_put(struct upstream *u, CURL *h)
{
	if (!h)
		return;
	curl_easy_reset(h);
	pthread_mutex_lock(&u->lock);
	if (u->npool < POOL_MAX) {
		u->pool[u->npool++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&u->lock);
	if (h)
		curl_easy_cleanup(h);
}

/* ---- one HTTP exchange ------------------------------------------------ */

enum body_mode {
	BODY_MEMORY, /* 2xx body into buf, up to max_bytes */
	BODY_STREAM, /* 2xx body to on_begin / on_data */
};

/* What the exchange is and what its answer was. The response part is reset
 * for every status line. */
struct xfer {
	/* request */
	enum body_mode mode;
	bool head;
	size_t max_bytes;
	upstream_begin_fn on_begin;
	upstream_data_fn on_data;
	void *arg;
	bool begun; /* on_begin was called: no retry, no redirect any more */
	/* response */
	long status;
	int64_t content_length;
	char *content_type, *link, *location;
	char digest[DIGEST_STR_SIZE];
	char *www_auth[WWW_AUTH_MAX];
	size_t nwww;
	bool deliver;   /* a 2xx answer whose body goes to the sink */
	bool discard;   /* a redirect's body */
	bool capped;    /* an error body hit its cap: stopped reading on purpose */
	char *buf;
	size_t len, cap, limit;
	uint64_t received; /* body bytes of this answer */
	/* a failure raised inside a callback; the first one wins */
	enum rs_code cb_code;
	struct rs_err cb_err;
	const char *what; /* "GET /v2/..." for messages */
};

static void xfer_reset_response(struct xfer *x)
{
	free(x->content_type);
	free(x->link);
	free(x->location);
	for (size_t i = 0; i < x->nwww; i++)
		free(x->www_auth[i]);
	free(x->buf);
	x->status = 0;
	x->content_length = -1;
	x->content_type = x->link = x->location = NULL;
	x->digest[0] = '\0';
	x->nwww = 0;
	x->deliver = x->discard = x->capped = false;
	x->buf = NULL;
	x->len = x->cap = x->limit = 0;
	x->received = 0;
}

static void xfer_dispose(struct xfer *x)
{
	xfer_reset_response(x);
}

static size_t cb_fail(struct xfer *x, enum rs_code code, const struct rs_err *e)
{
	if (!x->cb_code) {
		x->cb_code = code;
		x->cb_err = *e;
		x->cb_err.code = code;
		if (!x->cb_err.msg[0])
			(void)rs_err_set(&x->cb_err, code, "%s: transfer aborted by its receiver (%s)", x->what,
			                 rs_code_name(code));
	}
	return 0; /* any value other than the one expected aborts the transfer */
}

static size_t cb_failf(struct xfer *x, enum rs_code code, const char *fmt, ...) RS_PRINTF(3, 4);
static size_t cb_failf(struct xfer *x, enum rs_code code, const char *fmt, ...)
{
	if (!x->cb_code) {
		va_list ap;
		va_start(ap, fmt);
		char msg[RS_ERR_MSG_MAX];
		(void)vsnprintf(msg, sizeof(msg), fmt, ap); /* truncation is acceptable in a message */
		va_end(ap);
		struct rs_err e;
		(void)rs_err_set(&e, code, "%s", msg);
		return cb_fail(x, code, &e);
	}
	return 0;
}

static bool is_redirect(long status)
{
	return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/* Copy a header value (trimmed) into *slot, once. */
static bool header_store(char **slot, const char *v, size_t n)
{
	if (*slot)
		return true;
	*slot = strndup(v, n);
	return *slot != NULL;
}

/* All headers are seen; decide where the body goes. */
static size_t headers_done(struct xfer *x, size_t ret)
{
	if (is_redirect(x->status) && x->location && !x->begun) {
		x->discard = true;
		return ret;
	}
	if (x->status >= 200 && x->status < 300) {
		if (x->mode == BODY_MEMORY) {
			if (!x->head && x->content_length >= 0 && (uint64_t)x->content_length > x->max_bytes)
				return cb_failf(x, RS_TOO_LARGE, "%s: upstream answer is %" PRId64 " bytes, limit is %zu",
				                x->what, x->content_length, x->max_bytes);
			x->limit = x->max_bytes;
		} else if (!x->head) {
			struct rs_err e = {0};
			x->begun = true;
			enum rs_code rc = x->on_begin ? x->on_begin(x->arg, x->content_length, &e) : RS_OK;
			if (rc)
				return cb_fail(x, rc, &e);
		}
		x->deliver = true;
		return ret;
	}
	x->limit = RS_LIMIT_ERROR_BODY_MAX_BYTES;
	return ret;
}

static size_t on_header(char *data, size_t size, size_t nitems, void *arg)
{
	struct xfer *x = arg;
	size_t n = size * nitems;
	size_t ret = n;
	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		xfer_reset_response(x);
		const char *p = memchr(data, ' ', n);
		if (p && (size_t)(p - data) + 4 <= n && p[1] >= '1' && p[1] <= '5' && p[2] >= '0' && p[2] <= '9' &&
		    p[3] >= '0' && p[3] <= '9')
			x->status = (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
		return ret;
	}
	if ((n == 2 && data[0] == '\r' && data[1] == '\n') || (n == 1 && data[0] == '\n'))
		return headers_done(x, ret);
	const char *colon = memchr(data, ':', n);
	if (!colon)
		return ret;
	size_t nlen = (size_t)(colon - data);
	const char *v = colon + 1;
	const char *end = data + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
		end--;
	size_t vlen = (size_t)(end - v);
#define IS(name) (nlen == sizeof(name) - 1 && strncasecmp(data, name, nlen) == 0)
	bool wanted = IS("content-type") || IS("link") || IS("location") || IS("www-authenticate") ||
	              IS("docker-content-digest") || IS("content-length");
	if (!wanted)
		return ret;
	if (vlen > RS_LIMIT_HEADER_MAX_BYTES)
		return cb_failf(x, RS_UPSTREAM, "%s: upstream header %.*s is %zu bytes, limit is %u", x->what, (int)nlen,
		                data, vlen, (unsigned)RS_LIMIT_HEADER_MAX_BYTES);
	bool ok = true;
	if (IS("content-type")) {
		ok = header_store(&x->content_type, v, vlen);
	} else if (IS("link")) {
		ok = header_store(&x->link, v, vlen);
	} else if (IS("location")) {
		ok = header_store(&x->location, v, vlen);
	} else if (IS("www-authenticate")) {
		if (x->nwww < WWW_AUTH_MAX) {
			x->www_auth[x->nwww] = strndup(v, vlen);
			ok = x->www_auth[x->nwww++] != NULL;
		}
	} else if (IS("docker-content-digest")) {
		char d[DIGEST_STR_SIZE];
		if (vlen < sizeof(d)) {
			memcpy(d, v, vlen);
			d[vlen] = '\0';
			if (digest_valid(d))
				memcpy(x->digest, d, sizeof(d));
		}
	} else if (IS("content-length")) {
		int64_t cl = 0;
		size_t i = 0;
		for (; i < vlen && i < 19 && v[i] >= '0' && v[i] <= '9'; i++)
			cl = cl * 10 + (v[i] - '0');
		x->content_length = (i == vlen && vlen > 0) ? cl : -1;
	}
#undef IS
	if (!ok)
		return cb_failf(x, RS_NOMEM, "%s: out of memory storing a header", x->what);
	return ret;
}

static size_t buf_append(struct xfer *x, const char *data, size_t n)
{
	if (x->len + n + 1 > x->cap) {
		size_t cap = x->cap ? x->cap : 4096;
		while (cap < x->len + n + 1)
			cap *= 2;
		char *b = realloc(x->buf, cap);
		if (!b)
			return cb_failf(x, RS_NOMEM, "%s: out of memory reading %zu bytes", x->what, x->len + n);
		x->buf = b;
		x->cap = cap;
	}
	memcpy(x->buf + x->len, data, n);
	x->len += n;
	x->buf[x->len] = '\0';
	return n;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t n = size * nmemb;
	x->received += n;
	if (x->discard)
		return n;
	if (x->deliver && x->mode == BODY_STREAM) {
		struct rs_err e = {0};
		enum rs_code rc = x->on_data ? x->on_data(x->arg, data, n, &e) : RS_OK;
		if (rc)
			return cb_fail(x, rc, &e);
		return n;
	}
	if (x->len + n > x->limit) {
		if (x->deliver)
			return cb_failf(x, RS_TOO_LARGE, "%s: upstream answer is more than %zu bytes, limit is %zu",
			                x->what, x->limit, x->limit);
		/* an error body: keep its head, stop reading the rest */
		size_t room = x->limit - x->len;
		if (room && buf_append(x, data, room) != room)
			return 0;
		x->capped = true;
		return 0;
	}
	return buf_append(x, data, n);
}

/* The auth to send with one exchange. */
struct auth {
	const char *bearer; /* token, or NULL */
	bool basic;         /* the configured username/password */
};

/* Perform one exchange of x on h: GET (or HEAD) url with the given headers.
 * Returns RS_OK for any HTTP answer. */
static enum rs_code perform(struct upstream *u, CURL *h, struct xfer *x, const char *url,
                            const char *const *accept, size_t naccept, const struct auth *auth,
                            enum rs_code timeout_code, struct rs_err *err)
{
	const struct rs_upstream_config *cfg = u->cfg;
	long timeout = cfg->timeout_s ? (long)cfg->timeout_s : RS_LIMIT_UPSTREAM_TIMEOUT_DEFAULT_S;
	struct curl_slist *hdrs = NULL, *t;
	char *authz = NULL;
	char errbuf[CURL_ERROR_SIZE] = "";
	enum rs_code rc = RS_OK;

	xfer_reset_response(x);
	x->cb_code = RS_OK;
	for (size_t i = 0; i < naccept; i++) {
		char *line = str_printf("Accept: %s", accept[i]);
		if (!line || !(t = curl_slist_append(hdrs, line))) {
			free(line);
			rc = rs_err_set(err, RS_NOMEM, "%s: out of memory building headers", x->what);
			goto out;
		}
		free(line);
		hdrs = t;
	}
	if (naccept == 0) { /* send no Accept rather than curl's default */
		if (!(t = curl_slist_append(hdrs, "Accept:"))) {
			rc = rs_err_set(err, RS_NOMEM, "%s: out of memory building headers", x->what);
			goto out;
		}
		hdrs = t;
	}
	if (auth && auth->bearer) {
		authz = str_printf("Authorization: Bearer %s", auth->bearer);
		if (!authz || !(t = curl_slist_append(hdrs, authz))) {
			rc = rs_err_set(err, RS_NOMEM, "%s: out of memory building headers", x->what);
			goto out;
		}
		hdrs = t;
	}

	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, USER_AGENT);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	if (x->head)
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	else
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, timeout);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, timeout);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, cfg->tls_verify ? 1L : 0L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, cfg->tls_verify ? 2L : 0L);
	if (cfg->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, cfg->ca_file);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	if (auth && auth->basic && cfg->username && cfg->password) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERNAME, cfg->username);
		curl_easy_setopt(h, CURLOPT_PASSWORD, cfg->password);
	} else {
		curl_easy_setopt(h, CURLOPT_USERNAME, NULL);
		curl_easy_setopt(h, CURLOPT_PASSWORD, NULL);
	}

	CURLcode c = curl_easy_perform(h);
	/* the handle goes back to the pool: drop pointers into this frame */
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
	curl_easy_setopt(h, CURLOPT_USERNAME, NULL);
	curl_easy_setopt(h, CURLOPT_PASSWORD, NULL);
	if (c == CURLE_OK) {
		if (!x->head && x->content_length >= 0 && !x->discard && x->received != (uint64_t)x->content_length)
			rc = rs_err_set(err, RS_UPSTREAM, "%s: upstream sent %" PRIu64 " of %" PRId64 " bytes", x->what,
			                x->received, x->content_length);
		goto out;
	}
	if (x->cb_code) {
		rc = x->cb_code;
		if (err)
			*err = x->cb_err;
		goto out;
	}
	if (c == CURLE_WRITE_ERROR && x->capped)
		goto out; /* an error body longer than we keep */
	if (c == CURLE_PARTIAL_FILE || (c == CURLE_RECV_ERROR && x->status && x->content_length >= 0)) {
		if (x->content_length >= 0)
			rc = rs_err_set(err, RS_UPSTREAM, "%s: upstream sent %" PRIu64 " of %" PRId64 " bytes", x->what,
			                x->received, x->content_length);
		else
			rc = rs_err_set(err, RS_UPSTREAM, "%s: upstream body ended early after %" PRIu64 " bytes",
			                x->what, x->received);
		goto out;
	}
	if (c == CURLE_OPERATION_TIMEDOUT) {
		rc = rs_err_set(err, timeout_code, "%s: no progress from %.*s for %ld s (timeout_s)", x->what,
		                url_log_len(url), url, timeout);
		goto out;
	}
	rc = rs_err_set(err, RS_UPSTREAM, "%s: %.*s: %s%s%s", x->what, url_log_len(url), url, curl_easy_strerror(c),
	                errbuf[0] ? ": " : "", errbuf);
out:
	if (authz) {
		memset(authz, 0, strlen(authz));
		free(authz);
	}
	curl_slist_free_all(hdrs);
	return rc;
}

/* ---- bearer tokens ---------------------------------------------------- */

/* Append "name=value" (value URL-encoded) to the query of h. */
static bool query_add(CURLU *h, const char *name, const char *value)
{
	char *kv = str_printf("%s=%s", name, value);
	if (!kv)
		return false;
	bool ok = curl_url_set(h, CURLUPART_QUERY, kv, CURLU_APPENDQUERY | CURLU_URLENCODE) == CURLUE_OK;
	free(kv);
	return ok;
}

/* GET the token for scope (may be NULL) from realm; *out_token is new.
 * The token endpoint refusing (401/403) is RS_UNAUTHORIZED/RS_DENIED. */
static enum rs_code token_fetch(struct upstream *u, CURL *h, const char *realm, const char *service,
                                const char *scope, char **out_token, long *out_expires, struct rs_err *err)
{
	*out_token = NULL;
	if (!upstream_auth_is_http_url(realm))
		return rs_err_set(err, RS_UPSTREAM, "token realm '%.100s' of upstream %s is not an http(s) URL", realm,
		                  u->cfg->name ? u->cfg->name : "?");
	CURLU *cu = curl_url();
	char *url = NULL;
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
		/* several scopes are separated by spaces: one parameter each */
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
	if (ok && u->cfg->username && u->cfg->password)
		ok = query_add(cu, "account", u->cfg->username);
	if (!ok || curl_url_get(cu, CURLUPART_URL, &url, 0) != CURLUE_OK) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory building the token request");
		goto out;
	}
	struct xfer x = {.mode = BODY_MEMORY, .max_bytes = RS_LIMIT_TOKEN_MAX_BYTES, .what = "token request"};
	xfer_reset_response(&x);
	struct auth a = {.basic = true};
	rc = perform(u, h, &x, url, NULL, 0, &a, RS_UPSTREAM, err);
	if (rc == RS_OK) {
		if (x.status == 200) {
			rc = upstream_auth_parse_token(out_token, out_expires, x.buf ? x.buf : "", x.len, err);
			if (rc == RS_BAD_INPUT) /* the token server's answer, not the client's request */
				rc = err->code = RS_UPSTREAM;
			if (rc)
				rs_err_prefix(err, "token from %.*s: ", url_log_len(url), url);
		} else {
			enum rs_code code = x.status == 401 ? RS_UNAUTHORIZED : x.status == 403 ? RS_DENIED : RS_UPSTREAM;
			rc = rs_err_set(err, code, "token endpoint %.*s answered %ld for scope '%.100s'%s", url_log_len(url),
			                url, x.status, scope ? scope : "",
			                code == RS_UNAUTHORIZED && u->cfg->username ? " (check the credentials)" : "");
		}
	}
	xfer_dispose(&x);
out:
	free(scopes);
	curl_free(url);
	curl_url_cleanup(cu);
	return rc;
}

/* Remember the realm of a Bearer challenge so that tokens for new scopes
 * can be fetched before the first 401. */
static void remember_realm(struct upstream *u, const struct upstream_auth_challenge *c)
{
	char *realm = strdup(c->realm);
	char *service = c->service ? strdup(c->service) : NULL;
	if (!realm || (c->service && !service)) {
		free(realm);
		free(service);
		return; /* only an optimization */
	}
	pthread_mutex_lock(&u->lock);
	free(u->realm);
	free(u->service);
	u->realm = realm;
	u->service = service;
	pthread_mutex_unlock(&u->lock);
}

/* Fetch a token for scope from the remembered realm, if there is one. */
static char *token_proactive(struct upstream *u, CURL *h, const char *scope)
{
	char *realm = NULL, *service = NULL;
	pthread_mutex_lock(&u->lock);
	if (u->realm) {
		realm = strdup(u->realm);
		service = u->service ? strdup(u->service) : NULL;
	}
	pthread_mutex_unlock(&u->lock);
	char *token = NULL;
	long expires = 0;
	struct rs_err e = {0};
	if (realm && token_fetch(u, h, realm, service, scope, &token, &expires, &e) == RS_OK &&
	    upstream_auth_tokens_put(u->tokens, scope, token, expires, upstream_auth_now(), &e) != RS_OK) {
		/* not cached, but still good for this request */
	}
	free(realm);
	free(service);
	return token;
}

/* ---- one logical request ---------------------------------------------- */

struct request {
	const char *path;    /* "/v2/..." (with query) */
	const char *scope;   /* "repository:<repo>:pull", or NULL */
	const char *const *accept;
	size_t naccept;
	enum rs_code timeout_code;
};

static bool have_credentials(const struct upstream *u)
{
	return u->cfg->username && u->cfg->password;
}

/* Run r with x: redirects, auth and one retry after a 401. On RS_OK, x holds
 * the final answer. */
static enum rs_code run(struct upstream *u, const struct request *r, struct xfer *x, struct rs_err *err)
{
	const char *key = r->scope ? r->scope : "";
	char *base = str_printf("%s%s", u->cfg->url, r->path);
	CURL *h = handle_get(u);
	char *token = NULL;
	char *url = NULL;
	enum rs_code rc = RS_OK;
	if (!base || !h) {
		rc = rs_err_set(err, RS_NOMEM, "%s: out of memory", x->what);
		goto out;
	}
	token = upstream_auth_tokens_get(u->tokens, key, upstream_auth_now());
	if (!token && r->scope)
		token = token_proactive(u, h, key);
	for (bool retried = false;; retried = true) {
		pthread_mutex_lock(&u->lock);
		bool basic = u->basic && have_credentials(u);
		pthread_mutex_unlock(&u->lock);
		free(url);
		url = strdup(base);
		if (!url) {
			rc = rs_err_set(err, RS_NOMEM, "%s: out of memory", x->what);
			goto out;
		}
		bool home = true;
		for (int hops = 0;; hops++) {
			home = upstream_auth_same_origin(url, u->cfg->url);
			struct auth a = {.bearer = home ? token : NULL, .basic = home && !token && basic};
			rc = perform(u, h, x, url, r->accept, r->naccept, &a, r->timeout_code, err);
			if (rc)
				goto out;
			if (!(x->discard && x->location))
				break;
			if (hops == RS_LIMIT_UPSTREAM_REDIRECTS) {
				rc = rs_err_set(err, RS_UPSTREAM, "%s: more than %d redirects, last to %.*s", x->what,
				                RS_LIMIT_UPSTREAM_REDIRECTS, url_log_len(url), url);
				goto out;
			}
			char *next = NULL;
			rc = upstream_auth_resolve_url(&next, url, x->location, err);
			if (rc) {
				/* a redirect we will not follow is the upstream's fault (502), not the client's */
				if (rc == RS_BAD_INPUT)
					rc = err->code = RS_UPSTREAM;
				rs_err_prefix(err, "%s: %ld from %.*s: ", x->what, x->status, url_log_len(url), url);
				goto out;
			}
			free(url);
			url = next;
		}
		if (x->status != 401 || !home || retried || x->begun)
			break;
		/* 401 from the upstream itself: answer its challenge once */
		struct upstream_auth_challenge best = {0};
		for (size_t i = 0; i < x->nwww; i++) {
			struct upstream_auth_challenge c;
			struct rs_err ignored;
			if (upstream_auth_parse_challenge(&c, x->www_auth[i], &ignored) != RS_OK)
				continue;
			if (c.scheme > best.scheme) {
				upstream_auth_challenge_dispose(&best);
				best = c;
			} else {
				upstream_auth_challenge_dispose(&c);
			}
		}
		if (best.scheme == UPSTREAM_AUTH_BEARER) {
			if (token) {
				upstream_auth_tokens_drop(u->tokens, key, token);
				memset(token, 0, strlen(token));
				free(token);
				token = NULL;
			}
			remember_realm(u, &best);
			long expires = 0;
			struct rs_err terr = {0};
			const char *scope = best.scope ? best.scope : r->scope;
			enum rs_code trc = token_fetch(u, h, best.realm, best.service, scope, &token, &expires, &terr);
			upstream_auth_challenge_dispose(&best);
			if (trc == RS_UNAUTHORIZED || trc == RS_DENIED) {
				/* the token endpoint refused us: the 401 is the answer,
				 * the reason goes to streaming callers */
				if (x->mode == BODY_STREAM) {
					rc = trc;
					if (err)
						*err = terr;
					goto out;
				}
				break;
			}
			if (trc) {
				/* an unusable token endpoint is an upstream failure */
				rc = trc == RS_NOMEM ? RS_NOMEM : RS_UPSTREAM;
				if (err) {
					*err = terr;
					err->code = rc;
				}
				goto out;
			}
			rc = upstream_auth_tokens_put(u->tokens, key, token, expires, upstream_auth_now(), err);
			if (rc)
				goto out;
			continue;
		}
		if (best.scheme == UPSTREAM_AUTH_BASIC && have_credentials(u) && !basic) {
			upstream_auth_challenge_dispose(&best);
			pthread_mutex_lock(&u->lock);
			u->basic = true;
			pthread_mutex_unlock(&u->lock);
			continue;
		}
		upstream_auth_challenge_dispose(&best);
		break;
	}
out:
	if (token) {
		memset(token, 0, strlen(token));
		free(token);
	}
	free(url);
	free(base);
	handle_put(u, h);
	return rc;
}

/* Move the answer in x into out. */
static void reply_take(struct upstream_reply *out, struct xfer *x)
{
	out->status = x->status;
	out->content_type = x->content_type;
	x->content_type = NULL;
	out->link = x->link;
	x->link = NULL;
	memcpy(out->digest, x->digest, sizeof(out->digest));
	out->content_length = x->content_length;
	if (!x->head) {
		if (!x->buf)
			x->buf = calloc(1, 1);
		out->body = x->buf;
		out->body_len = x->buf ? x->len : 0;
		x->buf = NULL;
		x->len = x->cap = 0;
	}
}

static enum rs_code memory_request(struct upstream *u, const struct request *r, bool head, size_t max_bytes,
                                   struct upstream_reply *out, struct rs_err *err)
{
	char what[160];
	(void)snprintf(what, sizeof(what), "%s %s", head ? "HEAD" : "GET", r->path); /* truncation: message only */
	struct xfer x = {.mode = BODY_MEMORY, .head = head, .max_bytes = max_bytes, .what = what};
	xfer_reset_response(&x);
	enum rs_code rc = run(u, r, &x, err);
	if (rc == RS_OK) {
		reply_take(out, &x);
		if (!head && !out->body)
			rc = rs_err_set(err, RS_NOMEM, "%s: out of memory", what);
	}
	xfer_dispose(&x);
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
	char *path = str_printf("/v2/%s/manifests/%s", repo, ref);
	char *scope = str_printf("repository:%s:pull", repo);
	if (!path || !scope) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
		goto out;
	}
	struct request r = {.path = path, .scope = scope, .accept = accept, .naccept = naccept,
	                    .timeout_code = RS_UPSTREAM};
	rc = memory_request(u, &r, head, max_bytes, out, err);
out:
	free(path);
	free(scope);
	return rc;
}

enum rs_code upstream_blob(struct upstream *u, const char *repo, const char *digest, upstream_begin_fn on_begin,
                           upstream_data_fn on_data, void *arg, struct rs_err *err)
{
	enum rs_code rc = check_name(repo, digest, err);
	if (rc)
		return rc;
	char *path = str_printf("/v2/%s/blobs/%s", repo, digest);
	char *scope = str_printf("repository:%s:pull", repo);
	char what[160] = "GET blob";
	struct xfer x = {.mode = BODY_STREAM, .on_begin = on_begin, .on_data = on_data, .arg = arg, .what = what};
	xfer_reset_response(&x);
	if (!path || !scope) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
		goto out;
	}
	(void)snprintf(what, sizeof(what), "GET %s", path); /* truncation: message only */
	struct request r = {.path = path, .scope = scope, .timeout_code = RS_TIMEOUT};
	rc = run(u, &r, &x, err);
	if (rc)
		goto out;
	if (x.status >= 200 && x.status < 300)
		goto out;
	enum rs_code code = x.status == 404 ? RS_NOT_FOUND
	                    : x.status == 401 ? RS_UNAUTHORIZED
	                    : x.status == 403 ? RS_DENIED
	                                      : RS_UPSTREAM;
	/* the registry error code, if the body is one, helps the reader */
	char detail[64] = "";
	const char *c = x.buf ? strstr(x.buf, "\"code\"") : NULL;
	if (c) {
		c = strchr(c + 6, '"');
		size_t n = c ? strcspn(c + 1, "\"") : 0;
		if (n && n < sizeof(detail) - 3 && header_value_ok(c + 1))
			(void)snprintf(detail, sizeof(detail), " (%.*s)", (int)n, c + 1);
	}
	rc = rs_err_set(err, code, "%s: upstream answered %ld%s", what, x.status, detail);
out:
	xfer_dispose(&x);
	free(path);
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
	char *path = str_printf("/v2/%s/blobs/%s", repo, digest);
	char *scope = str_printf("repository:%s:pull", repo);
	if (!path || !scope) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
		goto out;
	}
	struct request r = {.path = path, .scope = scope, .timeout_code = RS_UPSTREAM};
	rc = memory_request(u, &r, true, SIZE_MAX, out, err);
out:
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
	char *path = query && *query ? str_printf("/v2/%s/tags/list?%s", repo, query)
	                             : str_printf("/v2/%s/tags/list", repo);
	char *scope = str_printf("repository:%s:pull", repo);
	if (!path || !scope) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
		goto out;
	}
	static const char *const json[] = {"application/json"};
	struct request r = {.path = path, .scope = scope, .accept = json, .naccept = 1,
	                    .timeout_code = RS_UPSTREAM};
	rc = memory_request(u, &r, false, max_bytes, out, err);
out:
	free(path);
	free(scope);
	return rc;
}

enum rs_code upstream_ping(struct upstream *u, struct rs_err *err)
{
	struct request r = {.path = "/v2/", .timeout_code = RS_UPSTREAM};
	struct upstream_reply rep;
	memset(&rep, 0, sizeof(rep));
	enum rs_code rc = memory_request(u, &r, false, RS_LIMIT_ERROR_BODY_MAX_BYTES, &rep, err);
	if (rc == RS_OK && rep.status != 200) {
		enum rs_code code = rep.status == 401 ? RS_UNAUTHORIZED : rep.status == 403 ? RS_DENIED : RS_UPSTREAM;
		rc = rs_err_set(err, code, "GET %s/v2/: upstream %s answered %ld", u->cfg->url,
		                u->cfg->name ? u->cfg->name : "?", rep.status);
	}
	upstream_reply_dispose(&rep);
	return rc;
}
