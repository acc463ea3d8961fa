/* xfer: the libcurl transfer core under both upstream clients, the pull
 * side (upstream.c) and the push side (upstream_push.c).
 *
 * A peer is one configured upstream: its libcurl easy handles (a small pool,
 * so connections stay open between calls), its user agent and its auth state
 * (a Basic challenge seen, the last Bearer realm, the token cache per scope of
 * upstream_auth.h). xfer_run() carries out one logical request on it, which
 * may be several HTTP exchanges: redirects followed by hand (credentials only
 * to the peer's own scheme://host:port), and a 401 answered once with the
 * auth the upstream asked for. Bodies come from memory or a file descriptor
 * and go into memory (capped) or to the caller's streaming callbacks. Only
 * http and https, no automatic redirects, the upstream's TLS settings, and no
 * total timeout: a transfer is aborted when it stalls for timeout_s.
 *
 * What the core does not know: API paths, which requests to make and what an
 * answer means; the two clients decide that. Messages about failures below
 * HTTP and about the token endpoint are worded by the peer's owner (an
 * xfer_word_fn), so each client keeps its own voice. Nothing here logs, and
 * no secret enters a message; URLs in messages lose their query. Thread-safe:
 * one peer may serve all request threads. */
#ifndef RS_PROXY_XFER_H
#define RS_PROXY_XFER_H

#include "config.h"
#include "digest.h"
#include "errors.h"
#include "upstream_auth.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct xfer_peer;

/* curl_global_init; call once at start, before threads. */
RS_MUST_CHECK enum rs_code xfer_global_init(struct rs_err *err);
void xfer_global_cleanup(void);

/* ---- wording of failures ---------------------------------------------- */

enum xfer_fault {
	XFER_FAULT_STALLED,   /* no progress for timeout_s (or no connection in that time) */
	XFER_FAULT_TRANSPORT, /* refused, reset, TLS, DNS ...: curl_error and curl_detail say which */
	XFER_FAULT_TOKEN,     /* the token endpoint answered status (not 200) */
};

/* The facts of one failure; all strings borrowed for the call. */
struct xfer_fault_info {
	enum xfer_fault fault;
	const struct rs_upstream_config *cfg;
	const char *what;        /* the request ("GET /v2/", "token request") */
	const char *url;         /* with its query: print url_len bytes only */
	int url_len;             /* length of url without query and fragment, at most 200 */
	long timeout_s;          /* STALLED */
	const char *curl_error;  /* TRANSPORT: curl_easy_strerror() */
	const char *curl_detail; /* TRANSPORT: libcurl's error buffer, may be "" */
	long status;             /* TOKEN */
	const char *scope;       /* TOKEN, "" for none */
};

/* Fill err with code and a message for f; returns code. */
typedef enum rs_code (*xfer_word_fn)(struct rs_err *err, enum rs_code code, const struct xfer_fault_info *f);

/* ---- peers ------------------------------------------------------------ */

/* cfg and user_agent are borrowed and must outlive the peer. word may be
 * NULL for the core's own wording ("<what>: no progress from <url> for N s
 * (timeout_s)", "token endpoint <url> answered 401 for scope '<scope>'").
 * *out: xfer_peer_free(). RS_CONFIG when cfg->url is not an http(s) URL. */
RS_MUST_CHECK enum rs_code xfer_peer_new(struct xfer_peer **out, const struct rs_upstream_config *cfg,
                                         const char *user_agent, xfer_word_fn word, struct rs_err *err);
void xfer_peer_free(struct xfer_peer *p);

/* The configuration the peer was made from (borrowed). */
const struct rs_upstream_config *xfer_peer_config(const struct xfer_peer *p);

/* ---- requests and answers --------------------------------------------- */

enum xfer_method { XFER_GET, XFER_HEAD, XFER_POST, XFER_PUT, XFER_PATCH, XFER_DELETE };

/* Where a 2xx body goes. Other bodies (errors) are kept in memory up to
 * RS_LIMIT_ERROR_BODY_MAX_BYTES; the rest is not read. */
enum xfer_sink {
	XFER_SINK_MEMORY, /* into the answer, up to max_bytes (RS_TOO_LARGE beyond) */
	XFER_SINK_STREAM, /* to on_begin, then on_data per chunk; nothing is kept */
};

/* How a 401 from the peer is answered (once per request either way). */
enum xfer_auth {
	/* the pull side: answer the 401's own challenge (a token from its realm
	 * and scope, or Basic when the upstream asks for it and we have
	 * credentials); a token endpoint that refuses makes the 401 the answer
	 * (memory sinks) or RS_UNAUTHORIZED/RS_DENIED (streams). A Bearer realm
	 * once seen is used to fetch tokens for new scopes before asking. */
	XFER_AUTH_ANSWER,
	/* the push side: the challenge was learned by xfer_probe(); a token is
	 * fetched for the request's scope before it is sent, and a 401 drops it
	 * and retries once with a fresh one (or the same Basic credentials).
	 * Every token endpoint failure is RS_UPSTREAM. */
	XFER_AUTH_PROBED,
};

/* Called once the upstream answered a streamed request with 2xx: size is
 * its Content-Length or -1. Returning non-RS_OK cancels the transfer. */
typedef enum rs_code (*xfer_begin_fn)(void *arg, int64_t size, struct rs_err *err);
/* Called for every chunk of a streamed body. Non-RS_OK cancels. */
typedef enum rs_code (*xfer_data_fn)(void *arg, const void *buf, size_t len, struct rs_err *err);
/* The next bytes of a request body of unknown length (XFER_PATCH): at most
 * cap into buf, their count in *out_len, 0 at its end; it may block until
 * it has some. Non-RS_OK cancels the transfer with that error. */
typedef enum rs_code (*xfer_body_fn)(void *arg, void *buf, size_t cap, size_t *out_len, struct rs_err *err);

/* One logical request. Everything is borrowed for the call. */
struct xfer_request {
	enum xfer_method method;
	const char *url;   /* absolute */
	const char *what;  /* names the request in messages: "GET /v2/r/blobs/sha256:..." */
	const char *scope; /* token scope ("repository:r:pull"), NULL for none */
	enum xfer_auth auth;
	bool follow;       /* follow redirects (at most RS_LIMIT_UPSTREAM_REDIRECTS) */
	/* each sent as its own Accept line, in order; none: no Accept header */
	const char *const *accept;
	size_t naccept;
	const char *content_type; /* of the request body, or NULL */
	/* POST/PUT body: body_size bytes from body, or (body NULL) read with
	 * pread from fd starting at offset 0; sent again on a retry */
	const char *body;
	int fd;
	uint64_t body_size;
	/* PATCH body: what body_fn gives (chunked transfer encoding). Such a
	 * request is sent once: no retry after a 401, no redirect followed. */
	xfer_body_fn body_fn;
	void *body_arg;
	enum xfer_sink sink;
	size_t max_bytes; /* XFER_SINK_MEMORY; not applied to HEAD */
	xfer_begin_fn on_begin;
	xfer_data_fn on_data;
	void *arg;
	enum rs_code timeout_code; /* for a stall: RS_UPSTREAM or RS_TIMEOUT */
};

/* The final answer. Strings are owned by it: xfer_answer_dispose(). */
struct xfer_answer {
	long status;
	int64_t content_length;     /* -1 if absent */
	char *content_type;         /* NULL if absent (likewise link, location) */
	char *link;
	char *location;
	char *digest_header;        /* Docker-Content-Digest as sent, NULL if absent */
	char digest[DIGEST_STR_SIZE]; /* the same when it is a valid digest, else "" */
	char *body;                 /* memory sink and error bodies: NUL-terminated, never NULL
	                               after xfer_run() except for HEAD; NULL when streamed */
	size_t body_len;
	bool streamed;              /* on_begin was called */
	bool supports_signatures;   /* X-Registry-Supports-Signatures: 1 (the signature extension, sign.h) */
};
void xfer_answer_dispose(struct xfer_answer *a);

/* Run r on p. Any HTTP answer is RS_OK with out (zeroed or disposed before)
 * holding it, except for streams: a body shorter than its Content-Length is
 * RS_UPSTREAM ("upstream sent N of M bytes"), a callback's failure is its own
 * code and message. Transport failures are RS_UPSTREAM, a stall
 * r->timeout_code, a redirect we will not follow RS_UPSTREAM; RS_NOMEM. */
RS_MUST_CHECK enum rs_code xfer_run(struct xfer_peer *p, const struct xfer_request *r, struct xfer_answer *out,
                                    struct rs_err *err);

/* GET <url>/v2/ without credentials and learn the challenge of a 401 (for
 * XFER_AUTH_PROBED). *out_status is the answer, *out_scheme the challenge
 * that will be answered (UPSTREAM_AUTH_NONE when none). Failures as
 * xfer_run(). */
RS_MUST_CHECK enum rs_code xfer_probe(struct xfer_peer *p, long *out_status, enum upstream_auth_scheme *out_scheme,
                                      struct rs_err *err);

#endif
