/* xfer_exchange: one HTTP exchange of the transfer core, the part of xfer.c
 * that speaks libcurl: an easy handle set up from scratch for one request
 * (http/https only, no automatic redirects, the upstream's timeouts and TLS
 * settings, the user agent), the header callback (status line,
 * Content-Type, Content-Length, Link, Location, WWW-Authenticate,
 * Docker-Content-Digest; values capped at RS_LIMIT_HEADER_MAX_BYTES), the
 * body sinks (memory with a cap, streaming callbacks, error bodies kept up
 * to RS_LIMIT_ERROR_BODY_MAX_BYTES) and body sources (memory, pread from an
 * fd). Redirects, retries and auth are xfer.c's; only xfer.c includes this
 * header. */
#ifndef RS_PROXY_XFER_EXCHANGE_H
#define RS_PROXY_XFER_EXCHANGE_H

#include "xfer.h"

#include <curl/curl.h>

#define XFER_EXCHANGE_WWW_AUTH_MAX 4

/* Whom the exchange is with; everything borrowed from the peer. */
struct xfer_exchange_site {
	const struct rs_upstream_config *cfg;
	const char *user_agent;
	xfer_word_fn word; /* NULL: the core's own wording */
};

/* The credentials one exchange carries. */
struct xfer_exchange_auth {
	const char *bearer; /* token, or NULL */
	bool basic;         /* the configured username/password */
};

/* What the exchange is and what its answer was. The answer part is reset
 * for every status line. */
struct xfer_exchange {
	const struct xfer_request *r;
	bool head;
	size_t max_bytes;
	uint64_t sent; /* request body bytes read so far */
	/* answer */
	struct xfer_answer a;
	char *www_auth[XFER_EXCHANGE_WWW_AUTH_MAX];
	size_t nwww;
	bool deliver; /* a 2xx answer whose body goes to the sink */
	bool discard; /* a redirect's body */
	bool capped;  /* an error body hit its cap: stopped reading on purpose */
	size_t cap, limit;
	uint64_t received; /* body bytes of this answer */
	/* stall watch (the progress callback): bytes moved either way, and when
	 * they last moved (CLOCK_MONOTONIC, ms) */
	long stall_s;
	uint64_t moved;
	int64_t moved_at_ms;
	bool stalled; /* the progress callback aborted the transfer */
	/* a failure raised inside a callback; the first one wins */
	enum rs_code cb_code;
	struct rs_err cb_err;
	const char *what;
};

/* x is embedded by the caller; r (borrowed) must outlive it. */
void xfer_exchange_init(struct xfer_exchange *x, const struct xfer_request *r);
void xfer_exchange_dispose(struct xfer_exchange *x);

/* Perform method m on url with h, the request's headers and body, and auth
 * (borrowed): RS_OK for any HTTP answer, then x->a holds it (its body only
 * when it went to memory). x->discard is true for a redirect to follow.
 * Failures: a callback's own code and message, RS_UPSTREAM for a body
 * shorter than announced, RS_TOO_LARGE for a memory body over its cap, and
 * the site's wording for stalls (x's request's timeout_code) and transport
 * failures (RS_UPSTREAM); RS_NOMEM, RS_BAD_INPUT for a Content-Type with
 * control characters. */
RS_MUST_CHECK enum rs_code xfer_exchange_perform(struct xfer_exchange *x, CURL *h,
                                                 const struct xfer_exchange_site *site, enum xfer_method m,
                                                 const char *url, const struct xfer_exchange_auth *auth,
                                                 struct rs_err *err);

/* Word the failure f (url_len and cfg are filled in here) with the site's
 * xfer_word_fn or the core's; returns code. */
enum rs_code xfer_exchange_word(const struct xfer_exchange_site *site, struct rs_err *err, enum rs_code code,
                                struct xfer_fault_info *f);

/* Length of url without its query and fragment (at most 200), for
 * messages: signed storage URLs carry credentials in the query. */
int xfer_exchange_url_len(const char *url);

/* A new string printed from fmt (free()), NULL when out of memory. */
char *xfer_printf(const char *fmt, ...) RS_PRINTF(1, 2);

#endif
