/* blobstore: the content-addressed on-disk cache of blobs, manifests and tag
 * maps under one data directory. It knows nothing of HTTP or upstreams. It
 * is an internal of the fs storage driver (store_fs.c): one blobstore is the
 * cache area, another (under <data>/push, push.c) the pushed area. Nothing
 * outside proxy/store/ includes this header (scripts/lint.sh): the rest of
 * regslim uses the storage interface, store.h.
 *
 * Layout (DESIGN.md "Store"):
 *   <data>/blobs/sha256/<2 hex>/<64 hex>        blob bytes
 *   <data>/manifests/sha256/<2 hex>/<64 hex>    manifest bytes, exactly as served
 *   <data>/manifests/sha256/<2 hex>/<64 hex>.type  its media type (one line)
 *   <data>/tags/<upstream>/<repo...>/<tag>.json tag -> digest, media type, fetch time
 *   <data>/links/<ns>/<repo...>/_links/<blobs|manifests>/<64 hex>
 *                                               repository links (the digest, one line)
 *   <data>/tmp/                                 temp files; nothing reads here
 * Every write goes to tmp/, is fsynced, verified against the expected digest
 * and size, renamed into place, and the directory fsynced. A blob that fails
 * verification never appears under blobs/. Thread-safe. */
#ifndef RS_PROXY_BLOBSTORE_H
#define RS_PROXY_BLOBSTORE_H

#include "errors.h"
#include "digest.h"

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct blobstore;
struct blobstore_writer;

enum blobstore_kind { BLOBSTORE_BLOB, BLOBSTORE_MANIFEST };

/* Open (creating directories as needed) the store at data_dir with an
 * eviction target of max_bytes (0: no limit). Stale temp files from an
 * earlier run are removed. *out is owned by the caller: blobstore_free(). */
RS_MUST_CHECK enum rs_code blobstore_open(struct blobstore **out, const char *data_dir, uint64_t max_bytes,
                                          struct rs_err *err);
void blobstore_free(struct blobstore *bs);

/* Open a committed object for reading. *out_fd is the caller's to close.
 * RS_NOT_FOUND when absent, RS_DIGEST_INVALID for a bad digest string.
 * Marks the object as recently used for eviction. The descriptor keeps
 * reading the whole object even if it is evicted meanwhile. */
RS_MUST_CHECK enum rs_code blobstore_open_object(struct blobstore *bs, enum blobstore_kind kind, const char *digest,
                                                 int *out_fd, uint64_t *out_size, struct rs_err *err);

/* True when a committed object exists. */
bool blobstore_has(struct blobstore *bs, enum blobstore_kind kind, const char *digest);

/* Remove object digest (and a manifest's type) with its accounting, if it
 * is there. Best effort: readers that opened it keep reading. */
void blobstore_remove(struct blobstore *bs, enum blobstore_kind kind, const char *digest);

/* Start writing an object that must hash to expected_digest and, when
 * expected_size >= 0, be that many bytes. The temp file is created at once,
 * so blobstore_writer_path() can be opened by readers that follow the write.
 * *out is released by blobstore_writer_commit() or blobstore_writer_abort(). */
RS_MUST_CHECK enum rs_code blobstore_writer_new(struct blobstore_writer **out, struct blobstore *bs,
                                                enum blobstore_kind kind, const char *expected_digest,
                                                int64_t expected_size, struct rs_err *err);
/* Bytes beyond expected_size are refused at once (RS_DIGEST_MISMATCH,
 * "expected N bytes, got M"), so a runaway upstream cannot fill the disk. A
 * failed write sticks: later writes and the commit return the same error. */
RS_MUST_CHECK enum rs_code blobstore_writer_write(struct blobstore_writer *w, const void *buf, size_t len,
                                                  struct rs_err *err);
/* Temp file path (borrowed) and bytes written so far. */
const char *blobstore_writer_path(const struct blobstore_writer *w);
uint64_t blobstore_writer_size(const struct blobstore_writer *w);
/* fsync, verify digest and size ("expected N bytes, got M";
 * RS_DIGEST_MISMATCH naming both digests), rename into place, fsync the
 * directory. Frees w whatever the outcome; on failure the temp file is gone.
 * Size and digest failures are both RS_DIGEST_MISMATCH. If the object is
 * already in the store, the temp file is dropped and the result is RS_OK. */
RS_MUST_CHECK enum rs_code blobstore_writer_commit(struct blobstore_writer *w, struct rs_err *err);
/* Unlink the temp file and free w. NULL is fine. */
void blobstore_writer_abort(struct blobstore_writer *w);

/* Move a file the caller wrote, fsynced and verified against digest (size
 * bytes) into place with rename(2), index it and fsync the directory, as
 * blobstore_writer_commit() does after its own checks: the caller vouches for
 * the bytes (push.c's uploads, hashed as they arrived). The file must be on
 * the store's file system: RS_UNSUPPORTED when rename(2) says EXDEV, and the
 * file stays where it was (as on any failure before the rename). If the
 * object is already there, the file is unlinked and the result is RS_OK. */
RS_MUST_CHECK enum rs_code blobstore_place_file(struct blobstore *bs, enum blobstore_kind kind, const char *digest,
                                                const char *path, uint64_t size, struct rs_err *err);

/* Store a manifest held in memory: verified against digest, media type kept
 * beside it. Idempotent. */
RS_MUST_CHECK enum rs_code blobstore_put_manifest(struct blobstore *bs, const char *digest, const char *media_type,
                                                  const void *buf, size_t len, struct rs_err *err);
/* Read a manifest into a new buffer (caller frees *out_buf and *out_type
 * with free()), re-verifying its digest; at most max_bytes. RS_NOT_FOUND when
 * absent; a file that fails verification is removed and reported as
 * RS_NOT_FOUND too (logged by the caller from err). */
struct blobstore_tag;

/* The media type of a manifest without a recorded one, as get_manifest
 * finds it: its mediaType, else an index if it has "manifests", a Docker v1
 * manifest if it has "fsLayers", an OCI manifest otherwise (for the other
 * drivers of store.h). And whether s is a media type a sidecar may hold. */
#define BLOBSTORE_MEDIA_TYPE_SIZE 128
/* A tag record as the tag maps hold it (one line of JSON) into buf, and
 * back (false for anything but exactly that shape). RS_DIGEST_INVALID,
 * RS_BAD_INPUT for a bad media type, RS_TOO_LARGE when cap is short. */
RS_MUST_CHECK enum rs_code blobstore_tag_format(char *buf, size_t cap, const struct blobstore_tag *t,
                                                struct rs_err *err);
bool blobstore_tag_parse(const char *text, struct blobstore_tag *out);
void blobstore_sniff_media_type(char out[BLOBSTORE_MEDIA_TYPE_SIZE], const char *buf, size_t len);
bool blobstore_media_type_valid(const char *s);

RS_MUST_CHECK enum rs_code blobstore_get_manifest(struct blobstore *bs, const char *digest, size_t max_bytes,
                                                  char **out_buf, size_t *out_len, char **out_type,
                                                  struct rs_err *err);

/* blobstore_get_manifest without marking the manifest used (its mtime is
 * what the garbage collection's grace period counts from): for the sweep's
 * walk and for deletes. */
RS_MUST_CHECK enum rs_code blobstore_peek_manifest(struct blobstore *bs, const char *digest, size_t max_bytes,
                                                   char **out_buf, size_t *out_len, char **out_type,
                                                   struct rs_err *err);

struct blobstore_tag {
	char digest[DIGEST_STR_SIZE];
	char media_type[128];
	time_t fetched; /* when the upstream last confirmed this mapping */
};

/* ---- garbage collection of a store whose objects are not evicted (push.c) */

/* The digests of every object of kind the store holds (its index), in a new
 * array (*out: free(); NULL when none). RS_NOMEM. */
RS_MUST_CHECK enum rs_code blobstore_objects(struct blobstore *bs, enum blobstore_kind kind,
                                             char (**out)[DIGEST_STR_SIZE], size_t *out_n, struct rs_err *err);
/* Mark object digest as used now (its mtime), so an age check counts from
 * now. True when the object is there. */
bool blobstore_touch(struct blobstore *bs, enum blobstore_kind kind, const char *digest);
/* Remove object digest when it was last used at or before idle_since and is
 * not pinned at now, under the store lock (a use that lands first keeps it).
 * True when it was removed; *out_size (may be NULL) its bytes. */
bool blobstore_remove_idle(struct blobstore *bs, enum blobstore_kind kind, const char *digest, time_t idle_since,
                           time_t now, uint64_t *out_size);

/* Tag maps, keyed by (upstream name, repository, tag). Names are validated
 * by the caller; the store refuses anything with "..", a leading '/' or
 * characters outside the distribution grammar (RS_BAD_INPUT). Grammar:
 * repo components [a-z0-9]+((.|_|__|-+)[a-z0-9]+)* joined by '/', at most
 * RS_LIMIT_NAME_MAX bytes; tag [A-Za-z0-9_][A-Za-z0-9._-]{0,127}; upstream
 * [A-Za-z0-9][A-Za-z0-9._:-]* (host[:port]). media_type must be one line
 * without '"' or '\' (RS_BAD_INPUT otherwise). get: RS_NOT_FOUND when absent
 * and also when the file is corrupt (the message says so; the caller
 * refetches and the put overwrites it). */
RS_MUST_CHECK enum rs_code blobstore_get_tag(struct blobstore *bs, const char *upstream, const char *repo,
                                             const char *tag, struct blobstore_tag *out, struct rs_err *err);
RS_MUST_CHECK enum rs_code blobstore_put_tag(struct blobstore *bs, const char *upstream, const char *repo,
                                             const char *tag, const struct blobstore_tag *t, struct rs_err *err);

/* Remove tag (ns, repo, tag). RS_NOT_FOUND when there is no such tag,
 * RS_BAD_INPUT for names outside the grammar, RS_IO. */
RS_MUST_CHECK enum rs_code blobstore_remove_tag(struct blobstore *bs, const char *upstream, const char *repo,
                                                const char *tag, struct rs_err *err);

/* Repository links (issue 11; distribution's repository links): a link
 * (ns, repo, kind, digest) records that repository repo of namespace ns (an
 * upstream name for the mirror cache, "pushed" for the push store) holds the
 * object: it was pushed or mounted there, or the upstream answered for that
 * repository. Readers serve an object under a repository only through a
 * link. A link is a small file written atomically and durably (tmp/, fsync,
 * rename, fsync the directory); it outlives its object (an evicted blob
 * leaves a stale link: the caller fetches again). Names follow the tag map
 * grammar (RS_BAD_INPUT otherwise), the digest must be valid
 * (RS_DIGEST_INVALID). Linking twice is fine. */
RS_MUST_CHECK enum rs_code blobstore_link(struct blobstore *bs, const char *ns, const char *repo,
                                          enum blobstore_kind kind, const char *digest, struct rs_err *err);
/* True when the link exists (whether or not the object is in the store). */
bool blobstore_linked(struct blobstore *bs, const char *ns, const char *repo, enum blobstore_kind kind,
                      const char *digest);
/* Remove a link if it is there. */
void blobstore_unlink(struct blobstore *bs, const char *ns, const char *repo, enum blobstore_kind kind,
                      const char *digest);
/* Call fn for every link of kind in namespace ns (every repository), with
 * the repository and the digest; fn returns false to stop. Entries that are
 * not links are skipped. RS_IO when a directory cannot be read (the walk
 * is then incomplete: callers that decide what to keep must not go on). */
typedef bool (*blobstore_link_fn)(void *ctx, const char *repo, const char *digest);
RS_MUST_CHECK enum rs_code blobstore_each_link(struct blobstore *bs, const char *ns, enum blobstore_kind kind,
                                               blobstore_link_fn fn, void *ctx, struct rs_err *err);
/* True when repository repo of ns has any link (of either kind). */
bool blobstore_repo_linked(struct blobstore *bs, const char *ns, const char *repo);
/* Link manifest digest and everything it references to (ns, repo): the
 * config and layers of an image manifest, the manifests of an index and
 * (when they are in the store) their configs and layers; the root manifest
 * is linked last, so its link implies the others'. RS_NOT_FOUND when the
 * manifest is not in the store (nothing is linked). */
RS_MUST_CHECK enum rs_code blobstore_link_image(struct blobstore *bs, const char *ns, const char *repo,
                                                const char *digest, struct rs_err *err);
/* True when a manifest linked to (ns, repo) and in the store references
 * digest: as a config or layer (kind BLOB) or as a manifest of an index
 * (kind MANIFEST; blobs of an index's manifests count too). At most
 * RS_LIMIT_LINK_SCAN_MANIFESTS linked manifests are read. For the mirror's
 * stale-if-error only: a registry that holds a manifest holds what it
 * references. */
bool blobstore_linked_by_image(struct blobstore *bs, const char *ns, const char *repo, enum blobstore_kind kind,
                               const char *digest);
/* Links derived from the tag maps when the store was opened the first time
 * with links (a data directory written before them): every tag's image is
 * linked to its repository, once (links/.from-tags marks it done). The number
 * of tags whose images were linked at this open (0 on later opens). */
unsigned blobstore_links_migrated(const struct blobstore *bs);

/* Bring kind/digest into the store (a fetch from the upstream, for
 * blobstore_export_layout); RS_OK only once it is committed. */
typedef enum rs_code (*blobstore_fetch_fn)(void *ctx, enum blobstore_kind kind, const char *digest,
                                           struct rs_err *err);

/* An OCI image layout in dir (created; it must not exist) for the manifest
 * or index digest: oci-layout, index.json naming it (with the media type the
 * store recorded, and tag as org.opencontainers.image.ref.name when not
 * NULL), and every manifest, config and layer it references hard-linked from
 * the store, so that the optimizer reads the store's own files without a
 * copy. What the store lacks is brought first by fetch (ctx passed along);
 * without fetch a missing manifest or config is RS_NOT_FOUND and a missing
 * layer is left out (an image checked without its absent layers). A blob
 * evicted between the check and the link is fetched again once. The layout
 * is scratch: the caller removes dir. Manifests larger than manifest_max
 * bytes are refused (RS_TOO_LARGE). RS_IO, RS_NOT_FOUND, RS_BAD_INPUT
 * (documents that do not parse), or fetch's code. */
RS_MUST_CHECK enum rs_code blobstore_export_layout(struct blobstore *bs, const char *digest, const char *tag,
                                                   const char *dir, size_t manifest_max, blobstore_fetch_fn fetch,
                                                   void *ctx, struct rs_err *err);

/* Can the store write? Creates and removes a file under tmp/ (what every
 * download and commit needs first). RS_IO naming the path and the system's
 * reason (a read-only mount, a full disk) when it cannot. */
RS_MUST_CHECK enum rs_code blobstore_check_writable(struct blobstore *bs, struct rs_err *err);

/* Bytes held under blobs/ and manifests/ (tracked, not re-scanned). */
uint64_t blobstore_size(const struct blobstore *bs);

/* Keep object kind/digest from eviction until time until (a later time
 * extends a pin, an earlier one does nothing) and mark it recently used.
 * True when the object is in the store, so pinned: pin first, then trust
 * that it stays. Pins live in memory (lost on restart, when no client can
 * be mid-pull anyway). Explicit removals (blobstore_remove) ignore pins. */
bool blobstore_pin(struct blobstore *bs, enum blobstore_kind kind, const char *digest, time_t until);
/* Told of every object an eviction pass removed (digest "sha256:<hex>"),
 * after the batch, without the store's lock held (it may call
 * blobstore_evict_object). One hook per store; NULL turns it off. */
typedef void (*blobstore_evict_hook)(void *ctx, enum blobstore_kind kind, const char *digest);
void blobstore_set_evict_hook(struct blobstore *bs, blobstore_evict_hook fn, void *ctx);
/* Evict one object now if it is there and not pinned (its bytes added to
 * *freed). True when it went. Not reported to the hook. */
bool blobstore_evict_object(struct blobstore *bs, enum blobstore_kind kind, const char *digest, uint64_t *freed);
/* Remove least recently used objects until the store is under its limit.
 * Pinned objects are passed over (moved to the recent end).
 * The store never calls this itself: call it after commits (or on a timer).
 * Open file descriptors held by in-flight requests keep working (unlink
 * leaves the inode until the last close), and temp files are never touched.
 * The pass works in small batches and releases the store lock between them,
 * so lookups and commits are not held up for a whole pass. *out_freed may be
 * NULL. */
RS_MUST_CHECK enum rs_code blobstore_evict(struct blobstore *bs, uint64_t *out_freed, struct rs_err *err);

#endif
