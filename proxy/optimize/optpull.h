/* optpull: the optimized pull path (DESIGN.md "The pull path", points 3-5).
 *
 * Given an upstream manifest that is already in the store (an image
 * manifest or an index), it produces the digest of its optimized twin for
 * one layer compression variant (zstd or gzip). Results are keyed by
 * (source digest, policy digest, optimizer version = REGSLIM_VERSION,
 * variant) and persisted as small JSON documents of the store (store.h
 * STORE_DOC_OPT_RESULT, replaced atomically), with the optimizer's report
 * JSON beside them (STORE_DOC_OPT_REPORT, keyed by the optimized digest).
 *
 * For every object of an optimized image the key of the result that made it
 * is kept too (STORE_DOC_OPT_OWNER, keyed by the object's hex), so that an
 * object evicted from under a client can be made again (optpull_regenerate).
 * Objects of a result are pinned in the store (cache.optimized_pin_s) each
 * time the result is looked up for a pull, so eviction does not take them
 * from a client that was just given the manifest.
 *
 * One optimization per key runs at a time however many pulls ask
 * (single-flight); it runs in its own thread (at most RS_LIMIT_OPT_WORKERS
 * at once, each for at most RS_LIMIT_OPT_MAX_S), so a caller can stop
 * waiting after its sync timeout and the job still finishes for the next
 * pull. A failure is remembered for
 * RS_LIMIT_OPT_FAILURE_TTL_S and logged once; callers then serve the
 * original.
 *
 * The adapter to the offline pipeline (optimizer/pipeline.h): a temporary
 * OCI layout in a scratch directory of the store (store_export_layout: hard
 * links to the fs driver's files; blobs the store lacks are fetched first through the caller's fetch
 * callbacks, i.e. the registry's single-flight download)), pipeline_run into
 * a second temporary layout, then every output manifest and blob imported
 * into the store (verified writes) and both layouts removed.
 *
 * It talks to the store (store.h, the cache area), the optimizer and config;
 * never to HTTP. */
#ifndef RS_PROXY_OPTPULL_H
#define RS_PROXY_OPTPULL_H

#include "config.h"
#include "digest.h"
#include "errors.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct optpull;

enum optpull_variant { OPTPULL_ZSTD = 0, OPTPULL_GZIP, OPTPULL_VARIANT_COUNT };

enum optpull_family {
	OPTPULL_FAMILY_DOCKER_LEGACY = 0, /* Docker Engine < 23: cannot unpack zstd */
	OPTPULL_FAMILY_CONTAINERD,
	OPTPULL_FAMILY_DOCKER,     /* Docker Engine >= 23 */
	OPTPULL_FAMILY_CONTAINERS, /* containers/image: podman, skopeo, buildah, CRI-O */
	OPTPULL_FAMILY_UNKNOWN,
};

struct optpull_client {
	enum optpull_family family;
	bool zstd_ok; /* meaningful when family != UNKNOWN */
};

/* Classify a User-Agent (may be NULL). */
struct optpull_client optpull_client_of(const char *user_agent);
/* The variant a client gets under policy p's "compression" setting. */
enum optpull_variant optpull_choose_variant(const struct rs_opt_policy *p, struct optpull_client c);
/* Stable names for logs and metrics: "docker-legacy", ...; "zstd" / "gzip". */
const char *optpull_family_name(enum optpull_family f);
const char *optpull_variant_name(enum optpull_variant v);

/* Fetch callbacks into the registry. Each makes sure the object is in the
 * store (fetching it from upstream up_index, repository repo, when absent)
 * and returns RS_OK only once it is committed. Called from worker threads. */
struct optpull_ops {
	enum rs_code (*fetch_blob)(void *ctx, size_t up_index, const char *repo, const char *digest,
	                           struct rs_err *err);
	enum rs_code (*fetch_manifest)(void *ctx, size_t up_index, const char *repo, const char *digest,
	                               struct rs_err *err);
	void *ctx;
};

/* What one pull asks for. Strings are borrowed for the call. */
struct optpull_request {
	size_t up_index;
	const char *repo;          /* upstream repository ("library/tiny") */
	const char *source_digest; /* the upstream manifest, already in the store */
	const struct rs_opt_policy *policy; /* from cfg (config_find_opt_policy) */
	enum optpull_variant variant;
};

struct optpull_result {
	char digest[DIGEST_STR_SIZE]; /* the optimized manifest or index (in the store) */
	char media_type[128];
	uint64_t bytes_saved; /* compressed bytes, all images */
	char policy_digest[DIGEST_STR_SIZE]; /* the policy's digest for the variant (optpull_get) */
};

/* Load the policies of cfg->optimize (policy files or the default policy)
 * and compute their digests per variant. cfg, bs and ops are borrowed and
 * must outlive the object (abandoned scratch layouts of an earlier run are
 * the store's to sweep, at store_open). RS_CONFIG (a policy
 * file that no longer loads), RS_IO, RS_NOMEM. */
RS_MUST_CHECK enum rs_code optpull_new(struct optpull **out, const struct rs_config *cfg, struct store *bs,
                                       const struct optpull_ops *ops, struct rs_err *err);
struct cluster;
/* One optimization per key in the whole cluster (docs/scale-out.md): before optimizing, a job
 * takes the cluster lock "opt:<key>" (cluster.h; c borrowed, must outlive op); a replica that
 * finds it held waits for the owner's result document (or adopts its failure) and takes over
 * when the lock expires without one (the owner died). Without it (no cluster section): one per
 * key in this process, as before. */
void optpull_set_cluster(struct optpull *op, struct cluster *c);

/* Shutting down: running optimizations stop at their next read (cleanly:
 * nothing of them reaches the store), queued ones do not start; callers
 * waiting in optpull_get get the failure and serve the original. */
void optpull_stop(struct optpull *op);
/* After optpull_stop: wait at most max_ms for every worker thread to end.
 * true when none runs (or op is NULL). */
bool optpull_wait_idle(struct optpull *op, unsigned max_ms);
/* optpull_stop, wait for the workers to end, then free. NULL is fine. */
void optpull_free(struct optpull *op);

/* The optimized twin of rq's source: RS_OK with *out filled when it is
 * cached or finishes within wait_s seconds; RS_TIMEOUT when it is still
 * running (it goes on in the background); the failure's code and message
 * (remembered for RS_LIMIT_OPT_FAILURE_TTL_S) otherwise. */
RS_MUST_CHECK enum rs_code optpull_get(struct optpull *op, struct optpull_result *out,
                                       const struct optpull_request *rq, unsigned wait_s, struct rs_err *err);

/* Only the cache: RS_OK when a result for rq is persisted and its manifest
 * is in the store, RS_NOT_FOUND otherwise. */
RS_MUST_CHECK enum rs_code optpull_lookup(struct optpull *op, struct optpull_result *out,
                                          const struct optpull_request *rq, struct rs_err *err);

/* The report JSON of the optimization that produced digest (an optimized
 * manifest or index). *out is new (free()). RS_NOT_FOUND when none. */
RS_MUST_CHECK enum rs_code optpull_report(struct optpull *op, const char *digest, char **out, size_t *out_len,
                                          struct rs_err *err);

/* Make object kind/digest of an optimized image again after it left the
 * store (evicted, or removed as corrupt): the optimizer is deterministic, so
 * running the optimization that made it (its source fetched again when it is
 * gone too) gives back the same bytes. Waits like optpull_get. RS_OK once the
 * object is in the store; RS_NOT_FOUND when the optimizer did not make it
 * (or its result no longer says how); RS_TIMEOUT; the optimization's error.
 * The caller checked that the client may see it (repository links). */
RS_MUST_CHECK enum rs_code optpull_regenerate(struct optpull *op, enum store_kind kind, const char *digest,
                                              unsigned wait_s, struct rs_err *err);

/* The cache key file name for (source, policy digest, variant), without
 * directory, into out (at least OPTPULL_KEY_SIZE bytes). Exposed for tests. */
#define OPTPULL_KEY_SIZE 192
void optpull_key(char out[OPTPULL_KEY_SIZE], const char *source_digest, const char *policy_digest,
                 enum optpull_variant v);

#endif
