/* xfer: the transfer core of the upstream clients (see xfer.h).
 *
 * One exchange is one curl_easy_perform on a pooled handle: the request
 * (method, headers, body source) is set up from scratch, the header callback
 * reads the status line and the headers both clients need, and the write
 * callback sends the body to its sink. Around it, run_request() follows
 * redirects and answers a 401 once, fetching bearer tokens from the realm the
 * upstream named (cached per scope in upstream_auth.c). Talks to libcurl and
 * upstream_auth.h only; the words of a failure come from the peer's owner. */
#include "xfer.h"

#include "rs_limits.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define POOL_MAX 16
#define WWW_AUTH_MAX 4

struct xfer_peer {
	const struct rs_upstream_config *cfg; /* borrowed */
	const char *user_agent;               /* borrowed */
	xfer_word_fn word;
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

static bool header_value_ok(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 && *s != '\t')
			return false;
	return true;
}

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

/* The core's own words for a failure (xfer_peer_new with word NULL). */
static enum rs_code word_default(struct rs_err *err, enum rs_code code, const struct xfer_fault_info *f)
{
	switch (f->fault) {
	case XFER_FAULT_STALLED:
		return rs_err_set(err, code, "%s: no progress from %.*s for %ld s (timeout_s)", f->what, f->url_len,
		                  f->url, f->timeout_s);
	case XFER_FAULT_TRANSPORT:
		return rs_err_set(err, code, "%s: %.*s: %s%s%s", f->what, f->url_len, f->url, f->curl_error,
		                  f->curl_detail[0] ? ": " : "", f->curl_detail);
	case XFER_FAULT_TOKEN:
		break;
	}
	return rs_err_set(err, code, "token endpoint %.*s answered %ld for scope '%.100s'%s", f->url_len, f->url,
	                  f->status, f->scope,
	                  code == RS_UNAUTHORIZED && f->cfg->username ? " (check the credentials)" : "");
}

static enum rs_code word(const struct xfer_peer *p, struct rs_err *err, enum rs_code code,
                         struct xfer_fault_info *f)
{
	f->cfg = p->cfg;
	f->url_len = url_log_len(f->url);
	return (p->word ? p->word : word_default)(err, code, f);
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
	p->cfg = cfg;
	p->user_agent = user_agent;
	p->word = word_fn;
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

/* ---- one HTTP exchange ------------------------------------------------ */

/* What the exchange is and what its answer was. The answer part is reset
 * for every status line. */
struct exchange {
	const struct xfer_request *r;
	bool head;
	size_t max_bytes;
	uint64_t sent; /* request body bytes read so far */
	/* answer */
	struct xfer_answer a;
	char *www_auth[WWW_AUTH_MAX];
	size_t nwww;
	bool deliver; /* a 2xx answer whose body goes to the sink */
	bool discard; /* a redirect's body */
	bool capped;  /* an error body hit its cap: stopped reading on purpose */
	size_t cap, limit;
	uint64_t received; /* body bytes of this answer */
	/* a failure raised inside a callback; the first one wins */
	enum rs_code cb_code;
	struct rs_err cb_err;
	const char *what;
};

static void answer_reset(struct exchange *x)
{
	bool streamed = x->a.streamed;
	xfer_answer_dispose(&x->a);
	x->a.streamed = streamed;
	for (size_t i = 0; i < x->nwww; i++)
		free(x->www_auth[i]);
	x->nwww = 0;
	x->deliver = x->discard = x->capped = false;
	x->cap = x->limit = 0;
	x->received = 0;
}

static void exchange_init(struct exchange *x, const struct xfer_request *r)
{
	memset(x, 0, sizeof(*x));
	x->r = r;
	x->what = r->what;
	x->head = r->method == XFER_HEAD;
	x->max_bytes = r->max_bytes;
	x->a.content_length = -1;
}

static void exchange_dispose(struct exchange *x)
{
	x->a.streamed = false;
	answer_reset(x);
}

static size_t cb_fail(struct exchange *x, enum rs_code code, const struct rs_err *e)
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

static size_t cb_failf(struct exchange *x, enum rs_code code, const char *fmt, ...) RS_PRINTF(3, 4);
static size_t cb_failf(struct exchange *x, enum rs_code code, const char *fmt, ...)
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

static bool streaming(const struct exchange *x)
{
	return x->r && x->r->sink == XFER_SINK_STREAM;
}

/* All headers are seen; decide where the body goes. */
static size_t headers_done(struct exchange *x, size_t ret)
{
	if (x->r && x->r->follow && is_redirect(x->a.status) && x->a.location && !x->a.streamed) {
		x->discard = true;
		return ret;
	}
	if (x->a.status >= 200 && x->a.status < 300) {
		if (!streaming(x)) {
			if (!x->head && x->a.content_length >= 0 && (uint64_t)x->a.content_length > x->max_bytes)
				return cb_failf(x, RS_TOO_LARGE, "%s: upstream answer is %" PRId64 " bytes, limit is %zu",
				                x->what, x->a.content_length, x->max_bytes);
			x->limit = x->max_bytes;
		} else if (!x->head) {
			struct rs_err e = {0};
			x->a.streamed = true;
			enum rs_code rc = x->r->on_begin ? x->r->on_begin(x->r->arg, x->a.content_length, &e) : RS_OK;
			if (rc)
				return cb_fail(x, rc, &e);
		}
		x->deliver = true;
		return ret;
	}
	x->limit = RS_LIMIT_ERROR_BODY_MAX_BYTES;
	return ret;
}

/* Copy a header value into *slot, once (the first occurrence wins). */
static bool header_store(char **slot, const char *v, size_t n)
{
	if (*slot)
		return true;
	*slot = strndup(v, n);
	return *slot != NULL;
}

/* One header line name: value (value trimmed); false when out of memory. */
static bool header_take(struct exchange *x, const char *name, size_t nlen, const char *v, size_t vlen)
{
#define IS(s) (nlen == sizeof(s) - 1 && strncasecmp(name, s, nlen) == 0)
	if (IS("content-type"))
		return header_store(&x->a.content_type, v, vlen);
	if (IS("link"))
		return header_store(&x->a.link, v, vlen);
	if (IS("location"))
		return header_store(&x->a.location, v, vlen);
	if (IS("www-authenticate")) {
		if (x->nwww == WWW_AUTH_MAX)
			return true;
		x->www_auth[x->nwww] = strndup(v, vlen);
		return x->www_auth[x->nwww++] != NULL;
	}
	if (IS("docker-content-digest")) {
		if (x->a.digest_header)
			return true;
		if (!(x->a.digest_header = strndup(v, vlen)))
			return false;
		if (vlen < sizeof(x->a.digest) && digest_valid(x->a.digest_header))
			memcpy(x->a.digest, x->a.digest_header, vlen + 1);
		return true;
	}
	if (IS("content-length")) {
		int64_t cl = 0;
		size_t i = 0;
		for (; i < vlen && i < 19 && v[i] >= '0' && v[i] <= '9'; i++)
			cl = cl * 10 + (v[i] - '0');
		x->a.content_length = (i == vlen && vlen > 0) ? cl : -1;
	}
	return true;
#undef IS
}

static bool header_wanted(const char *name, size_t nlen)
{
	static const char *const wanted[] = {"content-type", "link", "location", "www-authenticate",
	                                     "docker-content-digest", "content-length"};
	for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++)
		if (strlen(wanted[i]) == nlen && strncasecmp(name, wanted[i], nlen) == 0)
			return true;
	return false;
}

static size_t on_header(char *data, size_t size, size_t nitems, void *arg)
{
	struct exchange *x = arg;
	size_t n = size * nitems;
	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		answer_reset(x);
		const char *p = memchr(data, ' ', n);
		if (p && (size_t)(p - data) + 4 <= n && p[1] >= '1' && p[1] <= '5' && p[2] >= '0' && p[2] <= '9' &&
		    p[3] >= '0' && p[3] <= '9')
			x->a.status = (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
		return n;
	}
	if ((n == 2 && data[0] == '\r' && data[1] == '\n') || (n == 1 && data[0] == '\n'))
		return headers_done(x, n);
	const char *colon = memchr(data, ':', n);
	if (!colon)
		return n;
	size_t nlen = (size_t)(colon - data);
	const char *v = colon + 1;
	const char *end = data + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
		end--;
	size_t vlen = (size_t)(end - v);
	if (!header_wanted(data, nlen))
		return n;
	if (vlen > RS_LIMIT_HEADER_MAX_BYTES)
		return cb_failf(x, RS_UPSTREAM, "%s: upstream header %.*s is %zu bytes, limit is %u", x->what, (int)nlen,
		                data, vlen, (unsigned)RS_LIMIT_HEADER_MAX_BYTES);
	if (!header_take(x, data, nlen, v, vlen))
		return cb_failf(x, RS_NOMEM, "%s: out of memory storing a header", x->what);
	return n;
}

static size_t buf_append(struct exchange *x, const char *data, size_t n)
{
	if (x->a.body_len + n + 1 > x->cap) {
		size_t cap = x->cap ? x->cap : 4096;
		while (cap < x->a.body_len + n + 1)
			cap *= 2;
		char *b = realloc(x->a.body, cap);
		if (!b)
			return cb_failf(x, RS_NOMEM, "%s: out of memory reading %zu bytes", x->what, x->a.body_len + n);
		x->a.body = b;
		x->cap = cap;
	}
	memcpy(x->a.body + x->a.body_len, data, n);
	x->a.body_len += n;
	x->a.body[x->a.body_len] = '\0';
	return n;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct exchange *x = arg;
	size_t n = size * nmemb;
	x->received += n;
	if (x->discard)
		return n;
	if (x->deliver && streaming(x)) {
		struct rs_err e = {0};
		enum rs_code rc = x->r->on_data ? x->r->on_data(x->r->arg, data, n, &e) : RS_OK;
		if (rc)
			return cb_fail(x, rc, &e);
		return n;
	}
	if (x->a.body_len + n > x->limit) {
		if (x->deliver)
			return cb_failf(x, RS_TOO_LARGE, "%s: upstream answer is more than %zu bytes, limit is %zu",
			                x->what, x->limit, x->limit);
		/* an error body: keep its head, stop reading the rest */
		size_t room = x->limit - x->a.body_len;
		if (room && buf_append(x, data, room) != room)
			return 0;
		x->capped = true;
		return 0;
	}
	return buf_append(x, data, n);
}

/* The request body: from memory, or pread from the caller's fd. */
static size_t on_read(char *buf, size_t size, size_t nitems, void *arg)
{
	struct exchange *x = arg;
	const struct xfer_request *r = x->r;
	size_t want = size * nitems;
	if (x->sent >= r->body_size)
		return 0;
	if (want > r->body_size - x->sent)
		want = (size_t)(r->body_size - x->sent);
	if (r->body) {
		memcpy(buf, r->body + x->sent, want);
		x->sent += want;
		return want;
	}
	ssize_t got = pread(r->fd, buf, want, (off_t)x->sent);
	if (got <= 0) {
		(void)cb_failf(x, RS_IO, "%s: reading the body to send at byte %" PRIu64 " failed", x->what, x->sent);
		return CURL_READFUNC_ABORT;
	}
	x->sent += (uint64_t)got;
	return (size_t)got;
}

/* The auth to send with one exchange. */
struct auth {
	const char *bearer; /* token, or NULL */
	bool basic;         /* the configured username/password */
};

/* The header lines of one exchange into *out (curl_slist_free_all). */
static enum rs_code build_headers(struct curl_slist **out, const struct xfer_request *r, enum xfer_method m,
                                  const struct auth *auth, const char *what, struct rs_err *err)
{
	struct curl_slist *hdrs = NULL, *t = NULL;
	char *line = NULL;
	if (r->content_type && !header_value_ok(r->content_type))
		return rs_err_set(err, RS_BAD_INPUT, "%s: Content-Type holds control characters", what);
	bool ok = true;
	for (size_t i = 0; ok && i < r->naccept; i++) {
		ok = (line = str_printf("Accept: %s", r->accept[i])) && (t = curl_slist_append(hdrs, line));
		hdrs = ok ? t : hdrs;
		free(line);
	}
	if (ok && r->naccept == 0) /* send no Accept rather than curl's default */
		ok = (t = curl_slist_append(hdrs, "Accept:")) && (hdrs = t);
	if (ok && r->content_type && m != XFER_GET && m != XFER_HEAD) {
		ok = (line = str_printf("Content-Type: %s", r->content_type)) && (t = curl_slist_append(hdrs, line));
		hdrs = ok ? t : hdrs;
		free(line);
	}
	if (ok && (m == XFER_POST || m == XFER_PUT)) /* no 100-continue round trip */
		ok = (t = curl_slist_append(hdrs, "Expect:")) && (hdrs = t);
	if (ok && auth->bearer) {
		ok = (line = str_printf("Authorization: Bearer %s", auth->bearer)) && (t = curl_slist_append(hdrs, line));
		hdrs = ok ? t : hdrs;
		secret_free(line);
	}
	if (!ok) {
		curl_slist_free_all(hdrs);
		return rs_err_set(err, RS_NOMEM, "%s: out of memory building headers", what);
	}
	*out = hdrs;
	return RS_OK;
}

static void set_method(CURL *h, struct exchange *x, enum xfer_method m)
{
	switch (m) {
	case XFER_HEAD:
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
		break;
	case XFER_GET:
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
		break;
	case XFER_POST:
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, x);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->r->body_size);
		break;
	case XFER_PUT:
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, x);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)x->r->body_size);
		break;
	}
}

/* Everything but the method and headers: the same for every exchange. */
static void set_common(struct xfer_peer *p, CURL *h, struct exchange *x, const char *url, long timeout,
                       char *errbuf)
{
	const struct rs_upstream_config *cfg = p->cfg;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, p->user_agent);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
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
}

/* The answer of a perform that did not end with CURLE_OK. */
static enum rs_code perform_failed(struct xfer_peer *p, struct exchange *x, CURLcode c, const char *url,
                                   long timeout, enum rs_code timeout_code, const char *errbuf, struct rs_err *err)
{
	if (x->cb_code) {
		if (err)
			*err = x->cb_err;
		return x->cb_code;
	}
	if (c == CURLE_WRITE_ERROR && x->capped)
		return RS_OK; /* an error body longer than we keep */
	if (c == CURLE_PARTIAL_FILE || (c == CURLE_RECV_ERROR && x->a.status && x->a.content_length >= 0)) {
		if (x->a.content_length >= 0)
			return rs_err_set(err, RS_UPSTREAM, "%s: upstream sent %" PRIu64 " of %" PRId64 " bytes", x->what,
			                  x->received, x->a.content_length);
		return rs_err_set(err, RS_UPSTREAM, "%s: upstream body ended early after %" PRIu64 " bytes", x->what,
		                  x->received);
	}
	struct xfer_fault_info f = {.what = x->what, .url = url, .timeout_s = timeout,
	                            .curl_error = curl_easy_strerror(c), .curl_detail = errbuf};
	if (c == CURLE_OPERATION_TIMEDOUT) {
		f.fault = XFER_FAULT_STALLED;
		return word(p, err, timeout_code, &f);
	}
	f.fault = XFER_FAULT_TRANSPORT;
	return word(p, err, RS_UPSTREAM, &f);
}

/* Perform one exchange of x on h: method m on url with the request's headers
 * and body. Returns RS_OK for any HTTP answer. */
static enum rs_code perform(struct xfer_peer *p, CURL *h, struct exchange *x, enum xfer_method m, const char *url,
                            const struct auth *auth, struct rs_err *err)
{
	const struct rs_upstream_config *cfg = p->cfg;
	const struct xfer_request *r = x->r;
	long timeout = cfg->timeout_s ? (long)cfg->timeout_s : RS_LIMIT_UPSTREAM_TIMEOUT_DEFAULT_S;
	char errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *hdrs = NULL;

	answer_reset(x);
	x->cb_code = RS_OK;
	x->sent = 0;
	enum rs_code rc = build_headers(&hdrs, r, m, auth, x->what, err);
	if (rc)
		return rc;
	curl_easy_reset(h); /* nothing of the previous exchange (method, body source) carries over */
	set_common(p, h, x, url, timeout, errbuf);
	set_method(h, x, m);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	if (auth->basic && have_credentials(p)) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERNAME, cfg->username);
		curl_easy_setopt(h, CURLOPT_PASSWORD, cfg->password);
	}

	CURLcode c = curl_easy_perform(h);
	/* the handle goes back to the pool: drop pointers into this frame */
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
	curl_easy_setopt(h, CURLOPT_USERNAME, NULL);
	curl_easy_setopt(h, CURLOPT_PASSWORD, NULL);
	curl_slist_free_all(hdrs);
	if (c != CURLE_OK)
		return perform_failed(p, x, c, url, timeout, r->timeout_code, errbuf, err);
	if (!x->head && x->a.content_length >= 0 && !x->discard && x->received != (uint64_t)x->a.content_length)
		return rs_err_set(err, RS_UPSTREAM, "%s: upstream sent %" PRIu64 " of %" PRId64 " bytes", x->what,
		                  x->received, x->a.content_length);
	return RS_OK;
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
	struct exchange x;
	exchange_init(&x, &tr);
	struct auth a = {.basic = true};
	rc = perform(p, h, &x, XFER_GET, url, &a, err);
	if (rc == RS_OK && x.a.status == 200) {
		rc = upstream_auth_parse_token(out_token, out_expires, x.a.body ? x.a.body : "", x.a.body_len, err);
		if (rc == RS_BAD_INPUT) /* the token server's answer, not the client's request */
			rc = err->code = RS_UPSTREAM;
		if (rc)
			rs_err_prefix(err, "token from %.*s: ", url_log_len(url), url);
	} else if (rc == RS_OK) {
		long st = x.a.status;
		enum rs_code code = st == 401 ? RS_UNAUTHORIZED : st == 403 ? RS_DENIED : RS_UPSTREAM;
		struct xfer_fault_info f = {.fault = XFER_FAULT_TOKEN, .what = tr.what, .url = url, .status = st,
		                            .scope = scope ? scope : ""};
		rc = word(p, err, code, &f);
	}
	exchange_dispose(&x);
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
static void best_challenge(struct upstream_auth_challenge *best, const struct exchange *x)
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
static enum next answer_challenge(struct session *s, struct exchange *x, bool basic, enum rs_code *rc,
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
static enum rs_code follow(struct session *s, struct exchange *x, bool basic, bool *home, struct rs_err *err)
{
	struct xfer_peer *p = s->p;
	char *url = strdup(s->r->url);
	enum rs_code rc = url ? RS_OK : rs_err_set(err, RS_NOMEM, "%s: out of memory", x->what);
	for (int hops = 0; rc == RS_OK; hops++) {
		*home = upstream_auth_same_origin(url, p->cfg->url);
		struct auth a = {.bearer = *home ? s->token : NULL, .basic = *home && !s->token && basic};
		if ((rc = perform(p, s->h, x, s->r->method, url, &a, err)) || !(x->discard && x->a.location))
			break;
		if (hops == RS_LIMIT_UPSTREAM_REDIRECTS) {
			rc = rs_err_set(err, RS_UPSTREAM, "%s: more than %d redirects, last to %.*s", x->what,
			                RS_LIMIT_UPSTREAM_REDIRECTS, url_log_len(url), url);
			break;
		}
		char *next = NULL;
		if ((rc = upstream_auth_resolve_url(&next, url, x->a.location, err))) {
			/* a redirect we will not follow is the upstream's fault (502), not the client's */
			if (rc == RS_BAD_INPUT)
				rc = err->code = RS_UPSTREAM;
			rs_err_prefix(err, "%s: %ld from %.*s: ", x->what, x->a.status, url_log_len(url), url);
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
static enum rs_code run_request(struct xfer_peer *p, const struct xfer_request *r, struct exchange *x,
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
		if (x->a.status != 401 || !home || retried || x->a.streamed)
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
	struct exchange x;
	exchange_init(&x, r);
	enum rs_code rc = run_request(p, r, &x, err);
	if (rc == RS_OK) {
		*out = x.a;
		memset(&x.a, 0, sizeof(x.a));
		if (!x.head && !out->body && !out->streamed && !(out->body = calloc(1, 1)))
			rc = rs_err_set(err, RS_NOMEM, "%s: out of memory", r->what);
	}
	exchange_dispose(&x);
	return rc;
}

enum rs_code xfer_probe(struct xfer_peer *p, long *out_status, enum upstream_auth_scheme *out_scheme,
                        struct rs_err *err)
{
	*out_status = 0;
	*out_scheme = UPSTREAM_AUTH_NONE;
	char *url = str_printf("%s/v2/", p->cfg->url);
	CURL *h = handle_get(p);
	struct xfer_request r = {.method = XFER_GET, .url = url, .what = "GET /v2/",
	                         .max_bytes = RS_LIMIT_ERROR_BODY_MAX_BYTES, .timeout_code = RS_UPSTREAM};
	struct exchange x;
	exchange_init(&x, &r);
	enum rs_code rc = RS_OK;
	if (!url || !h) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
		goto out;
	}
	struct auth none = {0};
	if ((rc = perform(p, h, &x, XFER_GET, url, &none, err)))
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
	exchange_dispose(&x);
	handle_put(p, h);
	free(url);
	return rc;
}
