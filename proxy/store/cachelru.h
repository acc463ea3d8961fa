/* cachelru: the cluster-wide access bookkeeping of the cache area (issue 13, docs/scale-out.md
 * "Eviction"), for a store shared by replicas (the s3 driver). Each replica reports, in batches
 * (a thread, every CACHELRU_FLUSH_MS, never a Redis round trip on a request's path), the cache
 * objects it used and since when, and what it holds now (objects being read, pinned optimized
 * images) with an expiry; one elected replica (the cluster lock "evictor", kept and renewed
 * while it lives) evicts least recently used across the cluster, never what any replica holds.
 *
 * Redis keys (cluster.h's scored sets, under cluster.key_prefix): zset "cache:lru" (member
 * "b:<hex>" or "m:<hex>", score: last use in ms since the epoch, only ever raised) and zset
 * "cache:holds" (same members, score: until when, in ms, the object is held); the map entry
 * "cache:size" (the evictor's last listing of the area, for the other replicas' accounting).
 *
 * It knows the store's kinds and digests, not where objects live: the driver reports through a
 * collect callback and asks for the evictor's view. Talks to cluster.h and obs/. Thread-safe. */
#ifndef RS_PROXY_STORE_CACHELRU_H
#define RS_PROXY_STORE_CACHELRU_H

#include "digest.h"
#include "errors.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cluster;
struct cachelru;

#define CACHELRU_FLUSH_MS 1000  /* how often a replica publishes its uses and holds */
#define CACHELRU_HOLD_MS 5000   /* an open read's hold lasts this long unless published again */
#define CACHELRU_MEMBER_SIZE (2 + DIGEST_HEX_LEN + 1)

/* "b:<hex>" (blob) or "m:<hex>" (manifest) into out. */
void cachelru_member(char out[CACHELRU_MEMBER_SIZE], enum store_kind kind, const char *hex);

/* What one flush publishes; the driver adds to it from its collect callback. */
struct cachelru_batch;
/* member was used at ms (ms since the epoch). */
void cachelru_batch_touch(struct cachelru_batch *b, enum store_kind kind, const char *hex, uint64_t ms);
/* member is held (read now, or pinned) until until_ms. */
void cachelru_batch_hold(struct cachelru_batch *b, enum store_kind kind, const char *hex, uint64_t until_ms);
/* Called by the flush thread (and cachelru_flush) with the time now in ms: add what was used
 * since the last call and everything held now. */
typedef void (*cachelru_collect_fn)(void *ctx, struct cachelru_batch *b, uint64_t now_ms);

/* Start the bookkeeping over cluster c (borrowed; must outlive l) with the driver's collect
 * (ctx borrowed). RS_NOMEM, RS_IO (the thread). */
RS_MUST_CHECK enum rs_code cachelru_new(struct cachelru **out, struct cluster *c, cachelru_collect_fn collect,
                                        void *ctx, struct rs_err *err);
/* Stop the thread, release the evictor lock. NULL is fine. */
void cachelru_free(struct cachelru *l);

/* Publish now (the evictor, before it reads the cluster's view). Redis down: nothing. */
void cachelru_flush(struct cachelru *l);

/* The cluster size of the area the evictor last listed (map "cache:size", read by the flush
 * thread every few seconds): true and *out when known. */
bool cachelru_cluster_size(struct cachelru *l, uint64_t *out);
/* The evictor tells the other replicas what its listing found. */
void cachelru_publish_size(struct cachelru *l, uint64_t bytes);

enum cachelru_role {
	CACHELRU_EVICTOR,  /* this replica holds the "evictor" lock: it evicts for the cluster */
	CACHELRU_FOLLOWER, /* another replica does (holder names it) */
	CACHELRU_ALONE,    /* Redis is unreachable: each replica evicts by its own view */
};
/* Take or keep the "evictor" lock (renewed by cluster.c's thread while this replica lives;
 * taken over by another replica lock_ttl_s after it died). holder (may be NULL) receives the
 * evictor's replica id when FOLLOWER. Logs a change of role once. */
enum cachelru_role cachelru_elect(struct cachelru *l, char *holder, size_t holder_cap);

/* One cache object as eviction sees it. */
struct cachelru_cand {
	enum store_kind kind;
	char hex[DIGEST_HEX_LEN + 1];
	uint64_t size;
	uint64_t used_ms; /* last use (0: none known) */
	bool held;        /* read or pinned by some replica: not evicted */
};

/* Members held by any replica, sorted (cachelru_holds_has). */
struct cachelru_holds {
	char (*v)[CACHELRU_MEMBER_SIZE];
	size_t n, cap;
};
void cachelru_holds_dispose(struct cachelru_holds *h);
/* Add a member (the array is sorted by cachelru_holds_sort). RS_NOMEM. */
RS_MUST_CHECK enum rs_code cachelru_holds_add(struct cachelru_holds *h, const char *member, struct rs_err *err);
void cachelru_holds_sort(struct cachelru_holds *h);
bool cachelru_holds_has(const struct cachelru_holds *h, enum store_kind kind, const char *hex);

/* The evictor's view: each candidate's last use in the cluster (raised to what v already says,
 * e.g. this replica's own use) and held flag (set when *out_holds has it; v[i].held set by the
 * caller is kept), and every member held now into *out_holds (caller disposes); expired holds
 * are dropped from Redis on the way. RS_IO when Redis does not answer, RS_NOMEM. */
RS_MUST_CHECK enum rs_code cachelru_view(struct cachelru *l, struct cachelru_cand *v, size_t n,
                                         struct cachelru_holds *out_holds, struct rs_err *err);

/* Just before removing kind/hex: false when a replica used it after used_ms or holds it now (one
 * Redis round trip for both); true also when Redis does not answer (the snapshot stands). */
bool cachelru_still_evictable(struct cachelru *l, enum store_kind kind, const char *hex, uint64_t used_ms);

/* The evicted objects leave the access set (members as cachelru_member gives). */
void cachelru_forget(struct cachelru *l, const char *const *members, size_t n);

/* Eviction order (pure): held objects last, then least recently used first (never used
 * first), ties in key order. */
void cachelru_order(struct cachelru_cand *v, size_t n);

#endif
