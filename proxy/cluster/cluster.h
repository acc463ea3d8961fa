/* cluster: coordination between the replicas of one regslim cluster through Redis (DESIGN.md
 * "Scale-out", docs/scale-out.md "Redis coordination"): single-flight locks with an owner, an
 * expiry and renewal; a shared key/value map with expiry (the tag cache); upload-session state
 * (a hash per upload); scored sets (the cache's access times and holds). The only user of
 * hiredis.
 *
 * Without a "cluster" section, or while Redis is unreachable, a replica coordinates with itself
 * only: locks come from a table in this process, and the map and upload calls answer
 * RS_IO ("Redis unavailable") at once so that their callers do what a lone process does. Redis being
 * unreachable is the degraded mode: one warning when it begins, one when it ends, reconnection
 * in the background with backoff (0.1 s doubling to 5 s), and every call bounded by
 * cluster.timeout_ms, so no request hangs on a Redis that accepts and never answers.
 *
 * It knows nothing of HTTP, the store or blobs: names and values are the callers' strings. It
 * talks to Redis and to obs/log.h. Thread-safe: one connection, its commands serialized. */
#ifndef RS_PROXY_CLUSTER_H
#define RS_PROXY_CLUSTER_H

#include "config.h"
#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cluster;
struct cluster_lock;

/* What a replica coordinates through. */
enum cluster_mode {
	CLUSTER_LOCAL = 0, /* no cluster section: this process alone */
	CLUSTER_UP,        /* Redis answers */
	CLUSTER_DOWN,      /* Redis configured but unreachable: degraded, per process */
};

/* Longest owner value of a lock ("<replica id> <random hex>") with its NUL. */
#define CLUSTER_OWNER_MAX 192

/* Start coordinating per cfg (borrowed; must outlive the cluster). cfg NULL or not enabled:
 * CLUSTER_LOCAL. Otherwise connects once (bounded by cfg->timeout_ms) and starts the
 * maintenance thread (reconnection, lock renewal, a PING a second); an unreachable Redis is
 * not an error: the cluster starts CLUSTER_DOWN and logs it. replica_id names this replica in
 * lock owners (NULL: cfg's advertise_url, else "<hostname>:<pid>"). RS_NOMEM, RS_IO (a thread). */
RS_MUST_CHECK enum rs_code cluster_new(struct cluster **out, const struct rs_cluster_config *cfg,
                                       const char *replica_id, struct rs_err *err);

/* Stop the thread, close the connection. Locks still held are released first (best effort).
 * NULL is fine. */
void cluster_free(struct cluster *c);

/* The mode now; when why is given, the last Redis error ("" when up or local). */
enum cluster_mode cluster_mode(struct cluster *c, char *why, size_t why_cap);

/* "local", "up", "down". */
const char *cluster_mode_name(enum cluster_mode m);

/* This replica's id in lock owners. Borrowed from c. */
const char *cluster_replica_id(const struct cluster *c);

/* ---- single-flight locks ---------------------------------------------------------------- */

/* Try to take the lock `name` (a digest, an optimization key) once, without waiting. Up: SET
 * <prefix>lock:<name> <owner> NX PX <lock_ttl>, where owner is "<replica id> <16 random hex>",
 * new for every acquisition. Down or local: a table of this process. *out is the new lock (free
 * it with cluster_lock_release) or NULL when somebody else holds it; then holder (if given)
 * receives the holder's owner value ("" when it could not be read). The maintenance thread
 * renews a held lock every lock_ttl/3. RS_NOMEM. */
RS_MUST_CHECK enum rs_code cluster_lock_try(struct cluster_lock **out, struct cluster *c, const char *name,
                                            char *holder, size_t holder_cap, struct rs_err *err);

/* cluster_lock_try every 50 ms until it succeeds or wait_ms ran out (*out NULL then, holder as
 * above). RS_NOMEM. */
RS_MUST_CHECK enum rs_code cluster_lock_wait(struct cluster_lock **out, struct cluster *c, const char *name,
                                             unsigned wait_ms, char *holder, size_t holder_cap, struct rs_err *err);

/* Renew now (PEXPIRE only while the value is still ours, one Lua script). false when the lock
 * was lost: it expired and somebody else took it, or Redis forgot it. A Redis that does not
 * answer keeps the lock held until lock_ttl after the last successful renewal. */
bool cluster_lock_renew(struct cluster_lock *l);

/* Whether l is still ours, as of the last renewal (no Redis round trip). */
bool cluster_lock_held(struct cluster_lock *l);

/* Where the lock lives: CLUSTER_UP (Redis) or CLUSTER_LOCAL (this process). */
enum cluster_mode cluster_lock_scope(const struct cluster_lock *l);

/* The owner value of l. Borrowed from l. */
const char *cluster_lock_owner(const struct cluster_lock *l);

/* Release l: DEL only while the value is still ours (compare-and-delete, one Lua script), so a
 * lock that expired and was taken over is never released by its former owner. Frees l; NULL
 * is fine. */
void cluster_lock_release(struct cluster_lock *l);

/* Stop renewing l and free it without releasing: the lock expires in Redis after lock_ttl, as
 * when its owner dies (tests; a replica shutting down abruptly). NULL is fine. */
void cluster_lock_abandon(struct cluster_lock *l);

/* ---- shared map ------------------------------------------------------------------------- */

/* GET <prefix>map:<key>. *out: a new string (caller frees) or NULL when absent. RS_IO
 * when local or down (no wait: the caller does without), RS_NOMEM. */
RS_MUST_CHECK enum rs_code cluster_map_get(char **out, struct cluster *c, const char *key, struct rs_err *err);

/* SET <prefix>map:<key> value EX ttl_s (ttl_s >= 1). RS_IO, RS_NOMEM. */
RS_MUST_CHECK enum rs_code cluster_map_set(struct cluster *c, const char *key, const char *value, unsigned ttl_s,
                                           struct rs_err *err);

/* DEL <prefix>map:<key>. RS_IO. */
RS_MUST_CHECK enum rs_code cluster_map_del(struct cluster *c, const char *key, struct rs_err *err);

/* ---- upload sessions -------------------------------------------------------------------- */

/* One upload's state (hash <prefix>upload:<id>: repository, size, owner). */
struct cluster_upload {
	char repository[256];
	uint64_t size;                 /* bytes received so far */
	char owner[CLUSTER_OWNER_MAX]; /* replica id of the replica that started it */
};

/* Create or replace upload id's hash, expiring after ttl_s without an update. RS_BAD_INPUT (a
 * repository longer than the struct holds), RS_IO. */
RS_MUST_CHECK enum rs_code cluster_upload_put(struct cluster *c, const char *id, const struct cluster_upload *u,
                                              unsigned ttl_s, struct rs_err *err);

/* Read upload id. RS_NOT_FOUND when there is none (expired, finished), RS_IO. */
RS_MUST_CHECK enum rs_code cluster_upload_get(struct cluster_upload *out, struct cluster *c, const char *id,
                                              struct rs_err *err);

/* A chunk of from..to-1 arrived: set size to `to` only if it is `from` now (one Lua script, so
 * two replicas cannot both append at the same offset) and refresh the expiry. RS_RANGE with
 * the current size in the message when it is not `from`, RS_NOT_FOUND, RS_IO. */
RS_MUST_CHECK enum rs_code cluster_upload_advance(struct cluster *c, const char *id, uint64_t from, uint64_t to,
                                                  unsigned ttl_s, struct rs_err *err);

/* Forget upload id (finished or cancelled). RS_IO. */
RS_MUST_CHECK enum rs_code cluster_upload_del(struct cluster *c, const char *id, struct rs_err *err);

/* ---- scored sets (cluster-wide access bookkeeping) -------------------------------------- */

/* Sorted sets <prefix>zset:<set> of members (the callers' strings, at most 255 bytes) scored by
 * a time in ms. The eviction of the s3 store keeps its access times and its holds here
 * (store/cachelru.c). Every call answers RS_IO at once when local or down (no wait: the caller
 * does without), as the map calls do. */

/* ZADD GT: each member's score becomes scores[i] unless it is already higher (several replicas
 * report accesses out of order). n members in commands of at most 512. RS_IO, RS_NOMEM. */
RS_MUST_CHECK enum rs_code cluster_zset_raise(struct cluster *c, const char *set, const char *const *members,
                                              const uint64_t *scores, size_t n, struct rs_err *err);

/* ZMSCORE: out[i] is the score of members[i], 0 when it has none. RS_IO, RS_NOMEM. */
RS_MUST_CHECK enum rs_code cluster_zset_scores(struct cluster *c, const char *set, const char *const *members,
                                               size_t n, uint64_t *out, struct rs_err *err);

/* Each member scored at least min (ZRANGEBYSCORE min +inf WITHSCORES) to fn, in score order;
 * at most max members (the rest are left out). RS_IO, RS_NOMEM. */
typedef void (*cluster_zset_fn)(void *ctx, const char *member, uint64_t score);
RS_MUST_CHECK enum rs_code cluster_zset_from(struct cluster *c, const char *set, uint64_t min, size_t max,
                                             cluster_zset_fn fn, void *ctx, struct rs_err *err);

/* ZREM members; ZREMRANGEBYSCORE -inf below-1 when below > 0 (either may be empty). RS_IO,
 * RS_NOMEM. */
RS_MUST_CHECK enum rs_code cluster_zset_remove(struct cluster *c, const char *set, const char *const *members,
                                               size_t n, uint64_t below, struct rs_err *err);

/* ---- pure helpers (exposed for the unit tests) ------------------------------------------ */

/* The reconnection delay after `failures` failed attempts in a row (>= 1): 100 ms doubling,
 * at most 5000 ms. */
unsigned cluster_backoff_ms(unsigned failures);

/* The replica id part of an owner value (before the first space) into out. */
void cluster_owner_replica(char *out, size_t cap, const char *owner);

#endif
