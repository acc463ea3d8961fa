/* metrics: process-wide counters rendered as Prometheus text on /metrics.
 * Counters are lock-free atomics; the per-(route, method, status) and
 * per-upstream tables are small fixed arrays behind a mutex. */
#ifndef RS_PROXY_METRICS_H
#define RS_PROXY_METRICS_H

#include "errors.h"

#include <stddef.h>
#include <stdint.h>

enum metrics_kind { METRICS_MANIFEST, METRICS_BLOB, METRICS_KIND_COUNT };

enum metrics_counter {
	METRICS_UPSTREAM_BYTES,
	METRICS_CLIENT_BYTES,
	METRICS_STALE_SERVED,
	METRICS_LOGIN_FAILED,    /* wrong Basic passwords */
	METRICS_LOGIN_THROTTLED, /* logins refused by the back-off (login_guard.h) */
	METRICS_DROP_HEADER_TIMEOUT, /* connections ended by conn_guard.h, by reason */
	METRICS_DROP_SLOW_BODY,
	METRICS_DROP_PER_IP_LIMIT,
	METRICS_SCRUB_OBJECTS, /* objects rehashed by the background scrub (scrub.h) */
	METRICS_SCRUB_BYTES,
	METRICS_SCRUB_CORRUPT, /* ... that did not hash to their name (removed) */
	METRICS_SCRUB_PASSES,  /* full passes finished */
	METRICS_GC_SWEEPS,     /* garbage collection sweeps of the pushed images (push_http.c) */
	METRICS_GC_FAILED,     /* ... that stopped without finishing (nothing more removed) */
	METRICS_GC_BLOBS_REMOVED,
	METRICS_GC_MANIFESTS_REMOVED,
	METRICS_GC_BYTES_REMOVED,
	METRICS_COUNTER_COUNT
};

enum metrics_upstream_counter {
	METRICS_UP_REQUESTS,
	METRICS_UP_ERRORS,
	METRICS_UP_BLOB_FETCHES,
	METRICS_UP_COUNTER_COUNT
};

void metrics_add(enum metrics_counter c, uint64_t n);
void metrics_cache(enum metrics_kind kind, int hit);
void metrics_request(const char *route, const char *method, unsigned status);
/* upstream is the configured name (borrowed; must stay valid for the process). */
void metrics_upstream(const char *upstream, enum metrics_upstream_counter c);

/* Optimized pull path (optpull.c, api/manifests_policy.c). Label values are our own
 * constants: reason, family and variant must be static strings from a small
 * fixed set (rows are capped anyway). */
void metrics_optimization(int ok, double seconds);
void metrics_opt_fallback(const char *reason);
void metrics_variant_served(const char *family, const char *variant);
/* A tag pull whose original did not verify (signatures.verify): action is
 * "serve-original" or "refuse" (a static string). */
void metrics_signature_unverified(const char *action);
/* kind: "stored" (once per optimization) or "served" (per optimized pull). */
void metrics_bytes_saved(const char *kind, uint64_t n);

/* Push gate (gate.c). result: "accepted", "denied", "upstream_failed";
 * rule and action: static strings ("secrets", "deny"). */
void metrics_gate_push(const char *result);
void metrics_gate_finding(const char *rule, const char *action);
/* One layer scan of the push gate (gate_scan.c). when: "upload" (as the
 * blob's upload arrived, or by a background worker after it), "manifest"
 * (at the manifest PUT, for a layer not scanned before) or "repeat" (a
 * layer uploaded again was scanned as it arrived, its result was stored
 * already). */
void metrics_gate_layer_scan(const char *when);
/* Compressed bytes of uploads scanned as they arrived (gate_scan_feed). */
void metrics_gate_layer_scan_streamed(uint64_t bytes);
/* An upload streamed on to the upstream ended: "completed", "deleted" or "failed". */
void metrics_gate_staged_upload(const char *result);
/* Bytes of an upload that waited in a spill file because its scan was behind. */
void metrics_gate_layer_scan_spilled(uint64_t bytes);

/* Gauge regslim_data_dir_writable: 1 (the default) or 0 (the store cannot
 * write: degraded, serving the cache only). */
void metrics_set_data_dir_writable(int writable);

/* Gauge regslim_redis_up (cluster.c): 1 Redis answers, 0 degraded, -1 no cluster section (the
 * default: not rendered). */
void metrics_set_redis_up(int up);

/* Counter regslim_cluster_locks_total{result}: one single-flight lock attempt. */
enum metrics_lock_result { METRICS_LOCK_REDIS, METRICS_LOCK_LOCAL, METRICS_LOCK_BUSY };
void metrics_cluster_lock(enum metrics_lock_result r);

/* Scale-out series (issue 13), per replica; each sums across the cluster. Label values are
 * static strings of the callers except an S3 error code, which is copied (rows are capped).
 *  regslim_cluster_optimization_waits_total{outcome},
 *  regslim_cluster_optimization_wait_seconds_total{outcome}: an optimization found its cluster
 *    lock held by another replica and waited (optpull.c); outcome "result" (the owner's result
 *    came), "takeover" (the lock came free without a result: this replica did the work),
 *    "failed" (the owner's failure was adopted), "timeout";
 *  regslim_s3_errors_total{operation,code}: S3 requests that failed (a missing key is no error):
 *    operation "GET", "PUT", "ListObjectsV2", ...; code S3's error code, "HTTP <status>" or
 *    "transport";
 *  regslim_cache_evictions_total{scope}, regslim_cache_evicted_bytes_total{scope}: objects and
 *    bytes eviction of the s3 store removed from the cache area; scope "cluster" (the elected
 *    evictor's cluster-wide LRU) or "replica" (no cluster, or Redis down);
 *  regslim_cache_eviction_passes_total{result}: "run" (this replica evicted, or looked and had
 *    nothing to do), "skipped" (another replica is the evictor), "degraded" (Redis down: the
 *    per-replica approximation ran);
 *  regslim_cluster_evictor: 1 while this replica is the elected evictor. */
void metrics_optimization_wait(const char *outcome, double seconds);
void metrics_s3_error(const char *operation, const char *code);
void metrics_eviction(const char *scope, unsigned objects, uint64_t bytes);
void metrics_eviction_pass(const char *result);
void metrics_set_evictor(int on);

/* Counters regslim_cluster_* of the pull path across replicas (store/source.c, api/blobs.c),
 * rendered with a cluster section only. */
enum metrics_cluster_pull {
	METRICS_CL_UPSTREAM_FETCHES, /* blob downloads from an upstream under the cluster lock */
	METRICS_CL_LOCK_WAITS,       /* downloads that found the lock held by another replica */
	METRICS_CL_PEER_OK,          /* blobs relayed from a peer and verified */
	METRICS_CL_PEER_FAILED,      /* relays cut off or not verified */
	METRICS_CL_PEER_SERVED,      /* peer requests this replica answered with bytes */
	METRICS_CL_PEER_BYTES,       /* bytes received from peers */
	METRICS_CL_PEER_REFUSED,     /* peer requests refused (authentication) */
	METRICS_CL_PULL_COUNT
};
void metrics_cluster_pull(enum metrics_cluster_pull c, uint64_t n);

/* Gauge callback for regslim_inflight_downloads. */
void metrics_set_inflight_source(unsigned (*fn)(void *), void *arg);

/* Render into a new NUL-terminated buffer (caller frees with free()). */
RS_MUST_CHECK enum rs_code metrics_render(char **out, size_t *out_len, struct rs_err *err);

/* Current value of a counter (tests, logs). */
uint64_t metrics_get(enum metrics_counter c);

#endif
