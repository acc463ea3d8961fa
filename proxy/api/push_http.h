/* push_http: the HTTP face of the store's uploads and pushed images (store.h)
 * and of auth.c. It recognises the write routes of the Distribution API
 * (blob uploads, mounts, manifest PUT, DELETE), streams request bodies into uploads as they arrive, answers with
 * the spec's status codes and headers (Location, Range, Docker-Upload-UUID,
 * Docker-Content-Digest), serves regslim's token endpoint /auth/token, and
 * is the auth gate the read side calls for every API request: 401 with a
 * Bearer challenge whose realm is derived from the Host header, 403 DENIED,
 * or go ahead. Without an "auth" section pulls stay anonymous and pushes
 * are refused with 403 and a hint (docs/push.md). A manifest PUT to a
 * repository that a push policy matches goes through the push gate
 * (gate.h, docs/policy.md): 403 DENIED listing every violation, or the image
 * is forwarded upstream before the 201 (502 UNAVAILABLE when that fails).
 * The files behind it: push_http.c (lifecycle), uploads.c (routes, bodies,
 * uploads), manifest_put.c (gated manifest PUT), auth_gate.c, token.c. */
#ifndef RS_PROXY_PUSH_HTTP_H
#define RS_PROXY_PUSH_HTTP_H

#include "auth.h"
#include "config.h"
#include "errors.h"
#include "http.h"
#include "store.h"

#include <microhttpd.h>
#include <stdbool.h>

struct push_http;

/* cfg and cache are borrowed and must outlive it. Loads the htpasswd file
 * when auth is configured (errors name the file and line). */
RS_MUST_CHECK enum rs_code push_http_new(struct push_http **out, const struct rs_config *cfg, struct store *store,
                                         struct rs_err *err);
void push_http_free(struct push_http *ph);

/* The approved-base resolver of the push gate (borrowed; gate.h), NULL when
 * no push policy is configured: manifests_policy.c uses it for checks on pull. */
struct gate_resolver;
struct gate_resolver *push_http_bases(struct push_http *ph);

/* Periodic work: remove abandoned uploads, then a garbage collection sweep
 * of the pushed images (store_pushed_gc, push.gc_grace_s) when
 * push.gc_interval_s passed since the last one (the first comes one
 * interval after start), or at once when gc_now (SIGUSR1). One log line
 * and the regslim_gc_* metrics per sweep. */
void push_http_maintain(struct push_http *ph, bool gc_now);

/* May this request go on? repo NULL is /v2/ itself; need AUTH_PULL or
 * AUTH_PUSH. When not, an answer (401/403) was queued and *ret holds
 * MHD's result. */
bool push_http_gate(struct push_http *ph, struct request *rq, const char *repo, unsigned need, enum MHD_Result *ret);

/* Is this (method, url) a write route that push_http_handle() answers
 * (including GET of an upload's status)? */
bool push_http_is_write(const char *method, const char *url);

/* Is url the token endpoint (/auth/token, any query)? */
bool push_http_is_token(const char *url);
enum MHD_Result push_http_token(struct push_http *ph, struct request *rq);

/* A piece of the request body (called before push_http_handle, zero or more
 * times). Bodies of other routes are discarded. May queue an early error
 * answer (then rq->answered is set and later pieces are dropped). */
enum MHD_Result push_http_body(struct push_http *ph, struct request *rq, const char *data, size_t len);

/* The request is complete: answer a write route. */
enum MHD_Result push_http_handle(struct push_http *ph, struct request *rq);

#endif
