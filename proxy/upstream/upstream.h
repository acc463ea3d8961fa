/* upstream: the libcurl client for one configured upstream registry.
 *
 * Speaks Registry API v2 to it: manifests (GET/HEAD, every Accept value the
 * client sent forwarded), blobs (streaming GET, HEAD), tags/list and /v2/.
 * Auth: anonymous, Basic, and the bearer-token flow (WWW-Authenticate
 * challenge, token endpoint with the configured credentials, token reused per
 * scope until it expires, fetched again on 401). Credentials go only to the
 * upstream's own host and its token realm; redirects (blob storage) are
 * followed without Authorization when they lead to another host.
 * Thread-safe: one struct upstream is shared by all request threads. */
#ifndef RS_PROXY_UPSTREAM_H
#define RS_PROXY_UPSTREAM_H

#include "config.h"
#include "digest.h"
#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct upstream;

/* What the upstream answered. Strings are owned by the reply: release with
 * upstream_reply_dispose(). For a non-2xx status, body holds the upstream's
 * error body (capped at RS_LIMIT_ERROR_BODY_MAX_BYTES). */
struct upstream_reply {
	long status;
	char *content_type;                /* NULL if absent */
	char digest[DIGEST_STR_SIZE];      /* Docker-Content-Digest, "" if absent or invalid */
	int64_t content_length;            /* -1 if absent */
	char *link;                        /* Link header (tags/list pagination), NULL if absent */
	char *body;                        /* NUL-terminated; NULL for HEAD */
	size_t body_len;
	bool supports_signatures;          /* X-Registry-Supports-Signatures: 1 was sent */
};
void upstream_reply_dispose(struct upstream_reply *r);

/* curl_global_init; call once at start, before threads. */
RS_MUST_CHECK enum rs_code upstream_global_init(struct rs_err *err);
void upstream_global_cleanup(void);

/* cfg is borrowed and must outlive the upstream. */
RS_MUST_CHECK enum rs_code upstream_new(struct upstream **out, const struct rs_upstream_config *cfg,
                                        struct rs_err *err);
void upstream_free(struct upstream *u);

/* GET (or HEAD when head is true) /v2/<repo>/manifests/<ref> with each of the
 * naccept values sent as its own Accept header line, in order. The body is
 * read into memory up to max_bytes (RS_TOO_LARGE beyond). Any HTTP answer is
 * RS_OK with out->status set; transport failures (refused, timeout, TLS)
 * are RS_UPSTREAM. */
RS_MUST_CHECK enum rs_code upstream_manifest(struct upstream *u, const char *repo, const char *ref,
                                             const char *const *accept, size_t naccept, bool head,
                                             size_t max_bytes, struct upstream_reply *out, struct rs_err *err);

/* Called once the upstream answered a blob GET with 200: size is its
 * Content-Length or -1. Returning non-RS_OK cancels the transfer. */
typedef enum rs_code (*upstream_begin_fn)(void *arg, int64_t size, struct rs_err *err);
/* Called for every chunk of body. Returning non-RS_OK cancels the transfer. */
typedef enum rs_code (*upstream_data_fn)(void *arg, const void *buf, size_t len, struct rs_err *err);

/* Streaming GET /v2/<repo>/blobs/<digest>, following redirects. on_begin is
 * called only for a 2xx answer; a 404 is RS_NOT_FOUND, 401/403 after auth
 * RS_UNAUTHORIZED/RS_DENIED, other statuses and transport failures
 * RS_UPSTREAM; a body shorter than its Content-Length is RS_UPSTREAM
 * ("upstream sent N of M bytes"). A transfer that makes no progress for the
 * upstream's timeout_s is aborted (RS_TIMEOUT). */
RS_MUST_CHECK enum rs_code upstream_blob(struct upstream *u, const char *repo, const char *digest,
                                         upstream_begin_fn on_begin, upstream_data_fn on_data, void *arg,
                                         struct rs_err *err);

/* HEAD /v2/<repo>/blobs/<digest>. Any HTTP answer is RS_OK with out->status. */
RS_MUST_CHECK enum rs_code upstream_blob_head(struct upstream *u, const char *repo, const char *digest,
                                              struct upstream_reply *out, struct rs_err *err);

/* GET /v2/<repo>/tags/list[?query] (query without '?', may be NULL), body
 * into memory up to max_bytes. Any HTTP answer is RS_OK with out->status. */
RS_MUST_CHECK enum rs_code upstream_tags(struct upstream *u, const char *repo, const char *query,
                                         size_t max_bytes, struct upstream_reply *out, struct rs_err *err);

/* GET /v2/<repo>/referrers/<digest> (distribution-spec v1.1, the referrers
 * API), body into memory up to max_bytes. Any HTTP answer is RS_OK with
 * out->status (a registry without the API answers 404). */
RS_MUST_CHECK enum rs_code upstream_referrers(struct upstream *u, const char *repo, const char *digest,
                                              size_t max_bytes, struct upstream_reply *out, struct rs_err *err);

/* GET /extensions/v2/<repo>/signatures/<digest>: the signature extension
 * of registries that answer manifest requests with
 * X-Registry-Supports-Signatures: 1 (OpenShift's integrated registry; the
 * atomic format, sigpayload.h sigdoc_parse_extension), with the pull scope
 * of repo, body into memory up to max_bytes. Any HTTP answer is RS_OK with
 * out->status. */
RS_MUST_CHECK enum rs_code upstream_signatures(struct upstream *u, const char *repo, const char *digest,
                                               size_t max_bytes, struct upstream_reply *out, struct rs_err *err);

/* GET /v2/ (authenticated as needed): RS_OK when the upstream answers 200. */
RS_MUST_CHECK enum rs_code upstream_ping(struct upstream *u, struct rs_err *err);

/* The configuration this upstream was made from (borrowed). */
const struct rs_upstream_config *upstream_config(const struct upstream *u);

#endif
