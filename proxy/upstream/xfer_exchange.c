/* xfer_exchange: one HTTP exchange of the transfer core (see
 * xfer_exchange.h). The callbacks never let a failure pass silently: the
 * first one raised inside a callback is kept in the exchange and becomes the
 * result of the perform. Talks to libcurl only. */
#include "xfer_exchange.h"

#include "rs_limits.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* ---- small helpers ---------------------------------------------------- */

char *xfer_printf(const char *fmt, ...)
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

int xfer_exchange_url_len(const char *url)
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

enum rs_code xfer_exchange_word(const struct xfer_exchange_site *site, struct rs_err *err, enum rs_code code,
                                struct xfer_fault_info *f)
{
	f->cfg = site->cfg;
	f->url_len = xfer_exchange_url_len(f->url);
	return (site->word ? site->word : word_default)(err, code, f);
}

/* ---- the answer ------------------------------------------------------- */

static void answer_reset(struct xfer_exchange *x)
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

void xfer_exchange_init(struct xfer_exchange *x, const struct xfer_request *r)
{
	memset(x, 0, sizeof(*x));
	x->r = r;
	x->what = r->what;
	x->head = r->method == XFER_HEAD;
	x->max_bytes = r->max_bytes;
	x->a.content_length = -1;
}

void xfer_exchange_dispose(struct xfer_exchange *x)
{
	x->a.streamed = false;
	answer_reset(x);
}

static size_t cb_fail(struct xfer_exchange *x, enum rs_code code, const struct rs_err *e)
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

static size_t cb_failf(struct xfer_exchange *x, enum rs_code code, const char *fmt, ...) RS_PRINTF(3, 4);
static size_t cb_failf(struct xfer_exchange *x, enum rs_code code, const char *fmt, ...)
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

static bool streaming(const struct xfer_exchange *x)
{
	return x->r && x->r->sink == XFER_SINK_STREAM;
}

/* All headers are seen; decide where the body goes. */
static size_t headers_done(struct xfer_exchange *x, size_t ret)
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
static bool header_take(struct xfer_exchange *x, const char *name, size_t nlen, const char *v, size_t vlen)
{
#define IS(s) (nlen == sizeof(s) - 1 && strncasecmp(name, s, nlen) == 0)
	if (IS("content-type"))
		return header_store(&x->a.content_type, v, vlen);
	if (IS("link"))
		return header_store(&x->a.link, v, vlen);
	if (IS("location"))
		return header_store(&x->a.location, v, vlen);
	if (IS("www-authenticate")) {
		if (x->nwww == XFER_EXCHANGE_WWW_AUTH_MAX)
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
	if (IS("x-registry-supports-signatures")) {
		x->a.supports_signatures = vlen == 1 && v[0] == '1';
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
	                                     "docker-content-digest", "content-length",
	                                     "x-registry-supports-signatures"};
	for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++)
		if (strlen(wanted[i]) == nlen && strncasecmp(name, wanted[i], nlen) == 0)
			return true;
	return false;
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The stall watch. libcurl's low-speed check averages over a window of
 * several seconds, so a transfer that stops dead after a burst was only
 * aborted about timeout_s + 6 s later (issue 12 item 7). Here a transfer is
 * aborted once no byte moved (headers, body, either way) for timeout_s;
 * libcurl calls this at least once a second while nothing moves. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	(void)dltotal;
	(void)ultotal;
	struct xfer_exchange *x = arg;
	int64_t now = mono_ms();
	uint64_t moved = (uint64_t)dlnow + (uint64_t)ulnow;
	if (moved != x->moved || x->moved_at_ms == 0) {
		x->moved = moved;
		x->moved_at_ms = now;
		return 0;
	}
	if (now - x->moved_at_ms >= (int64_t)x->stall_s * 1000) {
		x->stalled = true;
		return 1; /* CURLE_ABORTED_BY_CALLBACK */
	}
	return 0;
}

static size_t on_header(char *data, size_t size, size_t nitems, void *arg)
{
	struct xfer_exchange *x = arg;
	size_t n = size * nitems;
	x->moved_at_ms = mono_ms(); /* header bytes are progress too */
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

static size_t buf_append(struct xfer_exchange *x, const char *data, size_t n)
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
	struct xfer_exchange *x = arg;
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
	struct xfer_exchange *x = arg;
	const struct xfer_request *r = x->r;
	size_t want = size * nitems;
	if (r->body_fn) {
		size_t got = 0;
		struct rs_err e = {0};
		enum rs_code rc = r->body_fn(r->body_arg, buf, want, &got, &e);
		if (rc) {
			(void)cb_failf(x, rc, "%s", e.msg);
			return CURL_READFUNC_ABORT;
		}
		x->sent += got;
		return got;
	}
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

/* The header lines of one exchange into *out (curl_slist_free_all). */
static enum rs_code build_headers(struct curl_slist **out, const struct xfer_request *r, enum xfer_method m,
                                  const struct xfer_exchange_auth *auth, const char *what, struct rs_err *err)
{
	struct curl_slist *hdrs = NULL, *t = NULL;
	char *line = NULL;
	if (r->content_type && !header_value_ok(r->content_type))
		return rs_err_set(err, RS_BAD_INPUT, "%s: Content-Type holds control characters", what);
	bool ok = true;
	for (size_t i = 0; ok && i < r->naccept; i++) {
		ok = (line = xfer_printf("Accept: %s", r->accept[i])) && (t = curl_slist_append(hdrs, line));
		hdrs = ok ? t : hdrs;
		free(line);
	}
	if (ok && r->naccept == 0) /* send no Accept rather than curl's default */
		ok = (t = curl_slist_append(hdrs, "Accept:")) && (hdrs = t);
	if (ok && r->content_type && m != XFER_GET && m != XFER_HEAD) {
		ok = (line = xfer_printf("Content-Type: %s", r->content_type)) && (t = curl_slist_append(hdrs, line));
		hdrs = ok ? t : hdrs;
		free(line);
	}
	if (ok && (m == XFER_POST || m == XFER_PUT || m == XFER_PATCH)) /* no 100-continue round trip */
		ok = (t = curl_slist_append(hdrs, "Expect:")) && (hdrs = t);
	if (ok && auth->bearer) {
		ok = (line = xfer_printf("Authorization: Bearer %s", auth->bearer)) && (t = curl_slist_append(hdrs, line));
		hdrs = ok ? t : hdrs;
		if (line) /* it holds the token */
			memset(line, 0, strlen(line));
		free(line);
	}
	if (!ok) {
		curl_slist_free_all(hdrs);
		return rs_err_set(err, RS_NOMEM, "%s: out of memory building headers", what);
	}
	*out = hdrs;
	return RS_OK;
}

static void set_method(CURL *h, struct xfer_exchange *x, enum xfer_method m)
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
	case XFER_PATCH: /* no size: HTTP/1.1 chunked transfer encoding */
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PATCH");
		curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, (long)RS_LIMIT_XFER_STREAM_BODY_BUFFER);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, x);
		break;
	case XFER_DELETE:
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
		break;
	}
}

/* Everything but the method and headers: the same for every exchange. */
static void set_common(const struct xfer_exchange_site *site, CURL *h, struct xfer_exchange *x, const char *url,
                       long timeout, char *errbuf)
{
	const struct rs_upstream_config *cfg = site->cfg;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, site->user_agent);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, timeout);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, timeout);
	x->stall_s = timeout;
	x->moved = 0;
	x->moved_at_ms = 0;
	x->stalled = false;
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, x);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
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
static enum rs_code perform_failed(const struct xfer_exchange_site *site, struct xfer_exchange *x, CURLcode c,
                                   const char *url, long timeout, const char *errbuf, struct rs_err *err)
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
	if (c == CURLE_OPERATION_TIMEDOUT || (c == CURLE_ABORTED_BY_CALLBACK && x->stalled)) {
		f.fault = XFER_FAULT_STALLED;
		return xfer_exchange_word(site, err, x->r->timeout_code, &f);
	}
	f.fault = XFER_FAULT_TRANSPORT;
	return xfer_exchange_word(site, err, RS_UPSTREAM, &f);
}

enum rs_code xfer_exchange_perform(struct xfer_exchange *x, CURL *h, const struct xfer_exchange_site *site,
                                   enum xfer_method m, const char *url, const struct xfer_exchange_auth *auth,
                                   struct rs_err *err)
{
	const struct rs_upstream_config *cfg = site->cfg;
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
	set_common(site, h, x, url, timeout, errbuf);
	set_method(h, x, m);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	if (auth->basic && cfg->username && cfg->password) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERNAME, cfg->username);
		curl_easy_setopt(h, CURLOPT_PASSWORD, cfg->password);
	}

	CURLcode c = curl_easy_perform(h);
	/* the handle goes back to the pool: drop pointers into this frame */
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 1L);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, NULL);
	curl_easy_setopt(h, CURLOPT_USERNAME, NULL);
	curl_easy_setopt(h, CURLOPT_PASSWORD, NULL);
	curl_slist_free_all(hdrs);
	if (c != CURLE_OK)
		return perform_failed(site, x, c, url, timeout, errbuf, err);
	if (!x->head && x->a.content_length >= 0 && !x->discard && x->received != (uint64_t)x->a.content_length)
		return rs_err_set(err, RS_UPSTREAM, "%s: upstream sent %" PRIu64 " of %" PRId64 " bytes", x->what,
		                  x->received, x->a.content_length);
	return RS_OK;
}

