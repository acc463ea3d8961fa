/* store: THE storage interface of regslim (DESIGN.md "Layout": store/). Every
 * byte regslim keeps goes through here: verified blobs and manifests, tag
 * maps, repository links, upload sessions and pushed images, optimization
 * results and their reports, push-gate reports, and a scratch area for work
 * directories. Nothing outside proxy/store/ builds a store path, opens a
 * store file or includes a driver's internals.
 *
 * A struct store is one driver behind a table of operations (store_driver.h,
 * in the manner of libgit2's odb backends and distribution's storage
 * driver). The fs driver (store_fs.c) keeps everything under the data
 * directory with blobstore.c (content-addressed objects, tags, links,
 * eviction) and push.c (uploads, pushed images) as its internals; an object
 * store driver (issue 13) implements the same table: writers verify on
 * commit (an object appears only once its digest and size match), readers
 * are handles with a size and positional reads, manifests and documents are
 * small whole objects.
 *
 * Areas: STORE_CACHE is the mirror's cache of upstream content (evicted
 * least recently used first); STORE_PUSHED holds images pushed to regslim
 * (never evicted; what no pushed image references any more is removed by
 * store_pushed_gc). Objects are addressed by (area, kind, digest).
 *
 * Thread-safe. It knows nothing of HTTP or upstreams: what the store lacks
 * comes through callbacks of the caller (store_fetch_fn, store_pushed_fetch_fn). */
#ifndef RS_PROXY_STORE_H
#define RS_PROXY_STORE_H

#include "config.h"
#include "digest.h"
#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define STORE_UUID_SIZE 37 /* an upload's UUID: 36 characters and NUL */

struct store;
struct store_reader;
struct store_writer;
struct store_upload;
struct cluster;

enum store_area { STORE_CACHE, STORE_PUSHED };
enum store_kind { STORE_BLOB, STORE_MANIFEST };

/* Small documents regslim writes about images, each replaced atomically and
 * durably (staged under the store's tmp/, fsynced, renamed):
 *  STORE_DOC_OPT_RESULT  an optimized pull's result, key = the optpull key
 *                        ([A-Za-z0-9._-], at most 255 bytes), no repository;
 *  STORE_DOC_OPT_REPORT  the optimizer's report, key = optimized digest;
 *  STORE_DOC_GATE_REPORT a push gate report, key = the pushed digest,
 *                        repository = the pushed repository;
 *  STORE_DOC_OPT_OWNER   the optpull key of the result that made an object
 *                        of an optimized image, key = the object's digest;
 *  STORE_DOC_GATE_SCAN   the push gate's scan of one layer blob, key = the
 *                        gate's scan key ([A-Za-z0-9._-], at most 255
 *                        bytes: layer digest and scan parameters), no
 *                        repository (a blob's scan is the same in all);
 *  STORE_DOC_SIGNATURES  the simple-signing signatures of a manifest
 *                        (config/sigpayload.h's list), key = the manifest
 *                        digest, repository = the repository they name. */
enum store_doc {
	STORE_DOC_OPT_RESULT,
	STORE_DOC_OPT_REPORT,
	STORE_DOC_GATE_REPORT,
	STORE_DOC_OPT_OWNER,
	STORE_DOC_GATE_SCAN,
	STORE_DOC_SIGNATURES,
};

struct store_tag {
	char digest[DIGEST_STR_SIZE];
	char media_type[128];
	time_t fetched; /* when the upstream last confirmed this mapping */
};

/* ------------------------------------------------------------ lifecycle */

/* Open the store cfg names (cfg->store.driver: "fs", the data directory, or
 * "s3", the bucket of cfg->store.s3 with cfg->data_dir as scratch; cache
 * eviction target cfg->cache_max_bytes, push settings from cfg->push): its
 * areas are created as needed, temp files and scratch directories of an
 * earlier run are swept. cfg is borrowed and must outlive the store.
 * *out: store_free(). RS_IO naming the path, RS_CONFIG (s3: a credential
 * or setting), RS_NOMEM. An unreachable object store is not an error here:
 * its operations fail with RS_UNAVAILABLE until it answers. */
RS_MUST_CHECK enum rs_code store_open(struct store **out, const struct rs_config *cfg, struct rs_err *err);
void store_free(struct store *s);

/* The driver's name ("fs"). */
const char *store_driver_name(const struct store *s);

/* Coordinate with the other replicas through c (cluster.h; borrowed, it
 * must outlive the store; NULL: alone). The s3 driver shares upload
 * sessions through it while Redis answers (docs/scale-out.md "Upload
 * sessions") and, with a cluster section, evicts least recently used
 * across the replicas, by one elected replica, never what any replica
 * holds ("Eviction"); the fs driver, on one disk, ignores it. Call before
 * serving. */
void store_set_cluster(struct store *s, struct cluster *c);

/* ------------------------------------------------------------ objects */

/* True when the committed object is there. */
bool store_has(struct store *s, enum store_area area, enum store_kind kind, const char *digest);

/* Open a committed object for reading (marks it recently used). *out:
 * store_reader_close(). A reader keeps reading the whole object even if it
 * is evicted meanwhile. RS_NOT_FOUND when absent, RS_DIGEST_INVALID. */
RS_MUST_CHECK enum rs_code store_reader_open(struct store *s, enum store_area area, enum store_kind kind,
                                             const char *digest, struct store_reader **out, struct rs_err *err);
uint64_t store_reader_size(const struct store_reader *r);
/* Up to len bytes at offset off into buf (a ranged read): the number read,
 * 0 at the end, -1 on failure (err says why). */
ssize_t store_reader_pread(struct store_reader *r, void *buf, size_t len, uint64_t off, struct rs_err *err);
/* A local descriptor on the object's bytes (borrowed from r), or -1 when the
 * driver keeps none: then read with store_reader_pread. */
int store_reader_fd(const struct store_reader *r);
/* Hand r's local descriptor over to the caller (who closes it), or -1 when
 * the driver keeps none; r stays to be closed and can no longer be read. */
int store_reader_take_fd(struct store_reader *r);
void store_reader_close(struct store_reader *r);

/* A descriptor on the whole object for code that reads files (sendfile, the
 * layer scanner): *out_fd is the caller's to close. A driver with local
 * files hands out its file; otherwise the bytes are copied into an unlinked
 * file of the scratch area. Errors of store_reader_open, RS_IO. */
RS_MUST_CHECK enum rs_code store_open_fd(struct store *s, enum store_area area, enum store_kind kind,
                                         const char *digest, int *out_fd, uint64_t *out_size, struct rs_err *err);

/* Remove an object (and a manifest's media type), best effort; readers that
 * opened it keep reading. */
void store_remove(struct store *s, enum store_area area, enum store_kind kind, const char *digest);

/* Start writing an object that must hash to expected_digest and, when
 * expected_size >= 0, be that many bytes. *out is released by
 * store_writer_commit() or store_writer_abort(). */
RS_MUST_CHECK enum rs_code store_writer_new(struct store_writer **out, struct store *s, enum store_area area,
                                            enum store_kind kind, const char *expected_digest, int64_t expected_size,
                                            struct rs_err *err);
/* Bytes beyond expected_size are refused at once (RS_DIGEST_MISMATCH). A
 * failed write sticks: later writes and the commit return the same error. */
RS_MUST_CHECK enum rs_code store_writer_write(struct store_writer *w, const void *buf, size_t len,
                                              struct rs_err *err);
uint64_t store_writer_size(const struct store_writer *w);
/* The local file the bytes are staged in so far (borrowed), for readers that
 * follow a write (inflight.c); every driver stages locally. */
const char *store_writer_path(const struct store_writer *w);
/* Verify digest and size ("expected N bytes, got M"; RS_DIGEST_MISMATCH
 * naming both digests) and make the object visible; nothing is visible on
 * failure. Frees w whatever the outcome. An object already there: RS_OK. */
RS_MUST_CHECK enum rs_code store_writer_commit(struct store_writer *w, struct rs_err *err);
/* Drop what was written and free w. NULL is fine. */
void store_writer_abort(struct store_writer *w);

/* A manifest held in memory: verified against digest, its media type kept
 * beside it. Idempotent. */
RS_MUST_CHECK enum rs_code store_manifest_put(struct store *s, enum store_area area, const char *digest,
                                              const char *media_type, const void *buf, size_t len,
                                              struct rs_err *err);
/* A manifest in new buffers (*out_buf, *out_type: free()), re-verified, at
 * most max_bytes. RS_NOT_FOUND when absent or when it failed verification
 * (then it is removed). */
RS_MUST_CHECK enum rs_code store_manifest_get(struct store *s, enum store_area area, const char *digest,
                                              size_t max_bytes, char **out_buf, size_t *out_len, char **out_type,
                                              struct rs_err *err);

/* ------------------------------------------------------------ cache tags and links */

/* The mirror's tag maps, keyed by (upstream name, repository, tag); names
 * follow the distribution grammar (RS_BAD_INPUT otherwise). get:
 * RS_NOT_FOUND when absent or corrupt. */
RS_MUST_CHECK enum rs_code store_tag_get(struct store *s, const char *upstream, const char *repo, const char *tag,
                                         struct store_tag *out, struct rs_err *err);
RS_MUST_CHECK enum rs_code store_tag_put(struct store *s, const char *upstream, const char *repo, const char *tag,
                                         const struct store_tag *t, struct rs_err *err);

/* The mirror's repository links (issue 11): (upstream, repo, kind, digest)
 * records that the upstream's repository holds the object; a cached object
 * is served under a repository only through a link. Links are durable and
 * outlive their objects. See blobstore.h for the exact contract. */
RS_MUST_CHECK enum rs_code store_link(struct store *s, const char *upstream, const char *repo, enum store_kind kind,
                                      const char *digest, struct rs_err *err);
bool store_linked(struct store *s, const char *upstream, const char *repo, enum store_kind kind, const char *digest);
void store_unlink(struct store *s, const char *upstream, const char *repo, enum store_kind kind, const char *digest);
/* Link a cached manifest and everything it references (root last).
 * RS_NOT_FOUND when the manifest is not cached. */
RS_MUST_CHECK enum rs_code store_link_image(struct store *s, const char *upstream, const char *repo,
                                            const char *digest, struct rs_err *err);
/* True when a manifest linked to (upstream, repo) references digest (for
 * stale-if-error only). */
bool store_linked_by_image(struct store *s, const char *upstream, const char *repo, enum store_kind kind,
                           const char *digest);

/* ------------------------------------------------------------ layouts */

/* Bring kind/digest into the cache (a fetch from the upstream); RS_OK only
 * once it is committed. */
typedef enum rs_code (*store_fetch_fn)(void *ctx, enum store_kind kind, const char *digest, struct rs_err *err);

/* An OCI image layout in dir (it must not exist; normally under a scratch
 * directory) for the manifest or index digest of area, naming tag (may be
 * NULL) as org.opencontainers.image.ref.name: oci-layout, index.json and
 * every manifest, config and layer it references, placed without copying
 * where the driver can (hard links). What the store lacks comes through
 * fetch (NULL: a missing manifest or config is RS_NOT_FOUND, a missing
 * layer is left out). Manifests above manifest_max bytes: RS_TOO_LARGE. */
RS_MUST_CHECK enum rs_code store_export_layout(struct store *s, enum store_area area, const char *digest,
                                               const char *tag, const char *dir, size_t manifest_max,
                                               store_fetch_fn fetch, void *ctx, struct rs_err *err);

/* ------------------------------------------------------------ scratch */

/* A new private directory of the scratch area (the store's tmp/), named
 * <prefix>-XXXXXX; out (cap bytes) receives its path. The caller removes it
 * with store_scratch_remove(); what a crash leaves is swept at the next
 * store_open(). prefix: [a-z]+. RS_IO. */
RS_MUST_CHECK enum rs_code store_scratch_new(struct store *s, const char *prefix, char *out, size_t cap,
                                             struct rs_err *err);
/* Remove a directory made by store_scratch_new() with all it holds. */
void store_scratch_remove(struct store *s, const char *dir);

/* Replace, in the NUL-terminated text, every mention of where the store
 * keeps its files by "<data>" (messages and documents shown to clients).
 * Returns the new length. */
size_t store_scrub_paths(const struct store *s, char *text);

/* ------------------------------------------------------------ documents */

/* Store (replace) a document; repository is NULL except for
 * STORE_DOC_GATE_REPORT and STORE_DOC_SIGNATURES. RS_DIGEST_INVALID for a bad digest key,
 * RS_BAD_INPUT for a bad result key, RS_NOT_FOUND for a repository name
 * outside the distribution grammar (no such repository holds documents),
 * RS_TOO_LARGE for a path too long, RS_IO. */
RS_MUST_CHECK enum rs_code store_doc_put(struct store *s, enum store_doc doc, const char *repository,
                                         const char *key, const void *buf, size_t len, struct rs_err *err);
/* A document in a new NUL-terminated buffer (*out: free()), at most max
 * bytes (RS_TOO_LARGE). RS_NOT_FOUND when absent. */
RS_MUST_CHECK enum rs_code store_doc_get(struct store *s, enum store_doc doc, const char *repository,
                                         const char *key, size_t max, char **out, size_t *out_len,
                                         struct rs_err *err);

/* ------------------------------------------------------------ uploads */

/* Upload sessions of pushed blobs (resumable across connections and
 * restarts; see push.h for the exact contract): start, take exclusive use
 * (open), append, finish into STORE_PUSHED linked to the repository
 * (commit, verified: RS_DIGEST_MISMATCH removes the upload), keep for later
 * (close) or remove (cancel). RS_TOO_LARGE past push.max_blob_bytes or
 * RS_LIMIT_UPLOADS_MAX open uploads; RS_NOT_FOUND for an unknown upload or
 * another repository's; RS_BAD_INPUT when another request is using it. */
RS_MUST_CHECK enum rs_code store_upload_start(struct store *s, const char *repo, char out[STORE_UUID_SIZE],
                                              struct rs_err *err);
RS_MUST_CHECK enum rs_code store_upload_open(struct store *s, const char *repo, const char *uuid,
                                             struct store_upload **out, struct rs_err *err);
uint64_t store_upload_size(const struct store_upload *u);
RS_MUST_CHECK enum rs_code store_upload_write(struct store_upload *u, const void *buf, size_t len,
                                              struct rs_err *err);
RS_MUST_CHECK enum rs_code store_upload_commit(struct store_upload *u, const char *digest, struct rs_err *err);
/* Make what was written so far part of the upload for every replica before
 * the request that carried it is answered (a chunk's PATCH). A session kept
 * on local disk has nothing to do. A session shared through the cluster
 * (store_set_cluster) appends the bytes as a part at the offset it was
 * opened at: RS_RANGE when another request appended there meanwhile (the
 * bytes are dropped), RS_NOT_FOUND when the session expired, RS_UNAVAILABLE
 * or RS_IO when the part could not be stored (the session stays as it
 * was). close() saves too, best effort. */
RS_MUST_CHECK enum rs_code store_upload_save(struct store_upload *u, struct rs_err *err);
void store_upload_close(struct store_upload *u);
void store_upload_cancel(struct store_upload *u);
/* A new file descriptor (close() it) that reads u's bytes from offset 0,
 * including those written after this call, and stays readable after the
 * upload is committed or cancelled (the gate streams a layer on while it
 * arrives). RS_UNSUPPORTED when the driver keeps uploads where no file can
 * be read as it grows (s3); RS_IO. */
RS_MUST_CHECK enum rs_code store_upload_reader(struct store_upload *u, int *out_fd, struct rs_err *err);
/* Remove uploads idle for push.upload_idle_timeout_s at time now;
 * *out_removed (may be NULL) counts them. */
void store_upload_sweep(struct store *s, time_t now, unsigned *out_removed);

/* ------------------------------------------------------------ pushed images */

/* Does repository repo hold object digest among pushed images (linked
 * there, and the bytes present)? Only then may it be served under repo. */
bool store_pushed_holds(struct store *s, const char *repo, enum store_kind kind, const char *digest);

/* The mirror's side of a pushed reference or mount (push.h push_fetch_fn):
 * RS_OK only when the mirror's repository repo holds the blob or manifest
 * and the cache has its bytes. */
typedef enum rs_code (*store_pushed_fetch_fn)(void *ctx, const char *repo, const char *digest, bool manifest,
                                              struct rs_err *err);
/* Let manifest PUTs and mounts take references through the mirror; fn NULL
 * turns it off. */
void store_pushed_set_fetcher(struct store *s, store_pushed_fetch_fn fn, void *ctx);

/* Mount blob digest from repository from into repo (push.h
 * push_mount_blob). RS_NOT_FOUND when from does not hold it. */
RS_MUST_CHECK enum rs_code store_pushed_mount(struct store *s, const char *repo, const char *from,
                                              const char *digest, struct rs_err *err);
/* Store a pushed manifest for repo under ref (a tag or the body's digest)
 * with the spec's checks (push.h push_put_manifest). */
RS_MUST_CHECK enum rs_code store_pushed_put_manifest(struct store *s, const char *repo, const char *ref,
                                                     const char *content_type, const char *body, size_t len,
                                                     char out_digest[DIGEST_STR_SIZE], struct rs_err *err);
/* Remove repo's link to manifest digest (a push the gate refused). */
void store_pushed_forget_manifest(struct store *s, const char *repo, const char *digest);
/* The pushed tag repo:tag. RS_NOT_FOUND when never pushed (or its manifest
 * is gone). */
RS_MUST_CHECK enum rs_code store_pushed_tag_get(struct store *s, const char *repo, const char *tag,
                                                struct store_tag *out, struct rs_err *err);
/* The pushed tags of repo as the tags/list JSON in a new buffer (*out:
 * free()). RS_NOT_FOUND when nothing was pushed to repo. */
RS_MUST_CHECK enum rs_code store_pushed_tags_list(struct store *s, const char *repo, char **out, size_t *out_len,
                                                  struct rs_err *err);

/* The manifests pushed to repo whose subject is subject (the referrers
 * index: sorted, at most max; *out free()). Whether repo still holds each
 * is the caller's check (store_pushed_holds). RS_DIGEST_INVALID, RS_NOMEM. */
RS_MUST_CHECK enum rs_code store_pushed_referrers(struct store *s, const char *repo, const char *subject,
                                                  char (**out)[DIGEST_STR_SIZE], size_t *out_n, size_t max,
                                                  struct rs_err *err);

/* Deletes (distribution spec, "Content Management"; docs/push.md).
 * delete_manifest: repo's pushed tags that point at digest go, then repo's
 * link to it and its referrers-index entry; other repositories keep it;
 * *out_tags (may be NULL) counts the tags removed. delete_tag: the tag only.
 * delete_blob: repo's link to the blob. The bytes stay until the garbage
 * collection. RS_NOT_FOUND when repo does not hold the manifest, tag or
 * blob; RS_DIGEST_INVALID; RS_IO. */
RS_MUST_CHECK enum rs_code store_pushed_delete_manifest(struct store *s, const char *repo, const char *digest,
                                                        unsigned *out_tags, struct rs_err *err);
RS_MUST_CHECK enum rs_code store_pushed_delete_tag(struct store *s, const char *repo, const char *tag,
                                                   struct rs_err *err);
RS_MUST_CHECK enum rs_code store_pushed_delete_blob(struct store *s, const char *repo, const char *digest,
                                                    struct rs_err *err);

struct store_gc_stats {
	unsigned roots;  /* manifests linked in pushed repositories */
	unsigned marked; /* objects kept by them (themselves and what they reference) */
	unsigned blobs_removed, manifests_removed;
	uint64_t bytes_removed;
	unsigned young; /* unreferenced but used within the grace period: kept */
	unsigned raced; /* unreferenced but taken by a push during the sweep: kept */
};
/* One garbage collection sweep of STORE_PUSHED at time now: blobs and
 * manifests that no manifest linked in a pushed repository is or
 * references, unused for grace_s seconds and not taken by a push during the
 * sweep, are removed (push.h push_gc has the exact rules). *out says what
 * happened. Nothing is removed when the links cannot be read in full
 * (RS_IO, RS_NOMEM). */
RS_MUST_CHECK enum rs_code store_pushed_gc(struct store *s, time_t now, unsigned grace_s, struct store_gc_stats *out,
                                           struct rs_err *err);

/* ------------------------------------------------------------ accounting */

/* Bytes held by the cache area (tracked, not re-scanned). */
uint64_t store_size(const struct store *s);
/* Remove least recently used cache objects until the cache is under its
 * limit (the store never calls this itself). *out_freed may be NULL. */
RS_MUST_CHECK enum rs_code store_evict(struct store *s, uint64_t *out_freed, struct rs_err *err);

/* Keep object kind/digest of area from eviction until time until (a later
 * time extends a pin) and mark it recently used. True when the store holds
 * it, so pinned: pin first, then trust that it stays. Pins live in memory
 * (a replica's own); explicit removals ignore them. */
bool store_pin(struct store *s, enum store_area area, enum store_kind kind, const char *digest, time_t until);

/* Can the store write now? RS_IO naming where and why (a read-only mount, a
 * full disk). Checked at start and by the maintenance pass (degraded mode). */
RS_MUST_CHECK enum rs_code store_check_writable(struct store *s, struct rs_err *err);

struct scrub;
/* Start the background scrub of every stored object (scrub.h), at the
 * configured rate; *out NULL when the configuration turns it off or the
 * driver has no scrub. store_scrub_stop() stops and frees it (NULL is fine). */
RS_MUST_CHECK enum rs_code store_scrub_start(struct store *s, struct scrub **out, struct rs_err *err);
void store_scrub_stop(struct scrub *sc);

#endif
