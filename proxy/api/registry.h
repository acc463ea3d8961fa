/* registry: the Distribution API v2 read side of the pull-through mirror:
 * routing (?ns=, upstream path component, default upstream, library/),
 * manifests, blobs, tags/list, /v2/, /healthz, /metrics. Answers go out
 * through reply.h. */
#ifndef RS_PROXY_REGISTRY_H
#define RS_PROXY_REGISTRY_H

#include "config.h"
#include "errors.h"
#include "http.h"

#include <microhttpd.h>
#include <stdbool.h>

struct registry;

/* Open the store and one upstream client per configured upstream. cfg is
 * borrowed and must outlive the registry. */
RS_MUST_CHECK enum rs_code registry_new(struct registry **out, const struct rs_config *cfg, struct rs_err *err);
void registry_free(struct registry *r);

/* Answer one request (called once per request, after it was fully read).
 * Queues a response on rq->conn and records status and route in rq. */
enum MHD_Result registry_handle(struct registry *r, struct request *rq);

/* A piece of the request body, before registry_handle(). Write routes
 * stream it into their upload; other routes discard it. May queue an early
 * error answer (rq->answered). */
enum MHD_Result registry_body(struct registry *r, struct request *rq, const char *data, size_t len);

/* The server's handler (http.h) for r: registry_handle and registry_body. */
struct http_handler registry_http_handler(struct registry *r);

/* Shutdown has begun: stop running optimizations now, so that requests
 * waiting for them are answered (with the original) within the grace. */
void registry_shutdown(struct registry *r);

/* After registry_shutdown (and once the server stopped): wait at most
 * max_ms for the optimizations to end (they were cancelled). false when
 * some still run: the caller exits without freeing r. */
bool registry_quiesce(struct registry *r, unsigned max_ms);

/* Number of upstream downloads still running. */
unsigned registry_inflight(struct registry *r);

/* Check that the data directory can be written (a read-only one makes the
 * proxy degraded: logged loudly, reported by /healthz and the
 * regslim_data_dir_writable gauge; registry_new checks it too), then run
 * store eviction and the sweep of abandoned uploads once unless degraded
 * (called periodically by the server). */
void registry_maintain(struct registry *r);

/* Make the next registry_maintain run a garbage collection sweep of the
 * pushed images whatever push.gc_interval_s says (SIGUSR1). */
void registry_request_gc(struct registry *r);

#endif
