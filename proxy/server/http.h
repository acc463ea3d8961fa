/* http: the libmicrohttpd daemon (thread per connection), the request
 * lifecycle (one struct request per request, freed in MHD's completion
 * callback, where the request is logged and counted) and graceful shutdown.
 * It knows no route: every request goes to the handler given at start (the
 * registry API, api/registry.h). */
#ifndef RS_PROXY_HTTP_H
#define RS_PROXY_HTTP_H

#include "config.h"
#include "errors.h"

#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct manifest_capture;
struct reply_kept;

/* Per-request state. Strings are owned by the request. */
struct request {
	struct MHD_Connection *conn;
	bool tls;             /* the listener speaks TLS (blob bodies are read, not sent with sendfile) */
	const char *method;   /* MHD's copy, valid for the request */
	const char *url;      /* MHD's copy */
	const char *route;    /* static string: "base", "manifest", ... */
	const char *cache;    /* static string or NULL */
	const char *upstream; /* configured upstream name (borrowed from config) */
	const char *oci_namespace; /* upstream name when ?ns= chose it (answer header), else NULL */
	unsigned status;
	uint64_t body_bytes;  /* bytes the response will carry (fd and buffer responses), or a streaming reader sent */
	bool body_counted;    /* body bytes already counted by a streaming reader */
	char *error;          /* message of a failed request */
	struct timespec start;
	struct manifest_capture *manifest_capture; /* api/manifests.c: capture instead of queueing a manifest */
	void *body_state;     /* a write route's state (api/uploads.c), owned by the request */
	void (*body_free)(void *state); /* releases body_state in the completion callback */
	bool answered;        /* a response was queued before the body was complete */
	struct reply_kept *hold; /* reply.h: answers are kept here, not queued, while set */
};

struct http_server;
struct tls_info;

/* What the server calls for each request. ctx is the handler's own. */
struct http_handler {
	/* The request is complete (head and body): answer it, once, by queueing
	 * a response on rq->conn (reply.h). */
	enum MHD_Result (*handle)(void *ctx, struct request *rq);
	/* A piece of the request body, before handle (zero or more times); may
	 * answer early (rq->answered), after which later pieces are dropped. */
	enum MHD_Result (*body)(void *ctx, struct request *rq, const char *data, size_t len);
	void *ctx;
};

/* A response with len bytes of fd from offset, taking fd (closed with the
 * response). Plain HTTP: MHD's own fd response (sendfile); tls: read in
 * 64 KiB pieces, so that TLS records are full. NULL on allocation failure,
 * and then fd is still the caller's. */
struct MHD_Response *http_response_from_fd(int fd, uint64_t offset, uint64_t len, bool tls);

/* Start listening on cfg->listen and handing requests to h (copied; its
 * ctx and cfg are borrowed and must outlive the server), over TLS when
 * cfg->tls.enabled (tls.h; its errors). RS_IO with the address when binding
 * fails. */
RS_MUST_CHECK enum rs_code http_start(struct http_server **out, const struct rs_config *cfg,
                                      const struct http_handler *h, struct rs_err *err);

/* Reload the TLS certificate files (SIGHUP): tls_server_reload(). RS_CONFIG
 * when the server has no TLS. On failure the old credentials stay. */
RS_MUST_CHECK enum rs_code http_reload_tls(struct http_server *s, struct rs_err *err);

/* The current certificate's info; false (out untouched) without TLS. */
bool http_tls_info(struct tls_info *out, struct http_server *s);

/* Stop accepting, wait up to grace_s for running requests, then stop. */
void http_stop(struct http_server *s, unsigned grace_s);

#endif
