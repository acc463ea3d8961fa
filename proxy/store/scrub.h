/* scrub: finding bit rot in the store. An object's name is its digest, so
 * checking it needs nothing but its bytes: scrub_walk visits every object
 * file under a store root (blobs/sha256/<2 hex>/<64 hex>, manifests/...)
 * and every file there that is not one, scrub_hash_file rehashes one file
 * (optionally throttled), and the background scrubber (scrub_start) does
 * both for the cache and the push store at cache.scrub_bytes_per_s, once
 * every cache.scrub_interval_s, removing what fails (blobstore_remove: the
 * next request fetches it again) and counting in metrics.
 *
 * The offline checker with reference checks and repair is fsck.c. It does
 * no HTTP and knows nothing of upstreams. */
#ifndef RS_PROXY_SCRUB_H
#define RS_PROXY_SCRUB_H

#include "blobstore.h"
#include "config.h"
#include "errors.h"

#include <stdbool.h>
#include <stdint.h>

/* One file under root's blobs/ or manifests/. kind and hex (64 lower-case
 * hex digits) name the object; stray is true for a file whose name or place
 * is not an object's (hex is then NULL; a manifest's ".type" sidecar is not
 * visited). rel is the path relative to root. Return false to stop. */
typedef bool (*scrub_visit_fn)(void *ctx, enum blobstore_kind kind, const char *hex, bool stray, const char *path,
                               const char *rel);

/* Visit every object file under root (a data directory, or its push/).
 * Directories that do not exist are skipped. RS_IO when a directory cannot
 * be read. */
RS_MUST_CHECK enum rs_code scrub_walk(const char *root, scrub_visit_fn fn, void *ctx, struct rs_err *err);

/* Hash the file at path: *ok when it hashes to sha256:<hex>; *size its
 * length. throttle (may be NULL) is called after each chunk with its length
 * and may sleep or ask to stop (return false: RS_TIMEOUT "stopped"). RS_IO
 * when it cannot be read (RS_NOT_FOUND when it is gone). */
RS_MUST_CHECK enum rs_code scrub_hash_file(const char *path, const char *hex, bool *ok, uint64_t *size,
                                           bool (*throttle)(void *ctx, uint64_t n), void *tctx, struct rs_err *err);

struct scrub;

/* Start the background scrubber over cache and push (either may be NULL),
 * stores under cfg->data_dir and cfg->data_dir/push. Nothing runs when
 * cfg->cache_scrub_bytes_per_s is 0 (*out is then NULL). The time of the
 * last full pass is kept in <data>/scrub.last, so restarts do not restart
 * the schedule. *out: scrub_stop(). */
RS_MUST_CHECK enum rs_code scrub_start(struct scrub **out, const struct rs_config *cfg, struct blobstore *cache,
                                       struct blobstore *push, struct rs_err *err);

/* Stop the scrubber (at its next chunk) and wait for it. NULL is fine. */
void scrub_stop(struct scrub *s);

#endif
