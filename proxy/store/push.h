/* push: the write side of the Distribution API without the HTTP: blob
 * upload sessions (streamed to disk under <data>/uploads/, hashed as they
 * go, size-limited, resumable across connections and restarts, swept when
 * idle), cross-repository mounts, manifest pushes with the spec's reference
 * checks, the push tag map, deletes (manifests with their tags and
 * referrers-index entries, tags, blob links) and the garbage collection of
 * the pushed-image store.
 *
 * Pushed images are kept locally in their own store, <data>/push/ (same
 * layout as the cache, see blobstore.h), which is never evicted and whose
 * tag maps are separate from the mirror's cached upstream tags: a pushed tag
 * shadows the upstream's tag of the same repository name. Every object is
 * linked to the repositories that hold it (blobstore.h "Repository links",
 * namespace "pushed"): an upload completed in the repository, a mount from
 * a repository that holds it, a manifest PUT there. It is an internal of the
 * fs storage driver (store_fs.c), which offers it as store.h's uploads and
 * pushed images (STORE_PUSHED); nothing outside proxy/store/ includes this
 * header (scripts/lint.sh). Forwarding pushes upstream is not here. */
#ifndef RS_PROXY_PUSH_H
#define RS_PROXY_PUSH_H

#include "blobstore.h"
#include "config.h"
#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define PUSH_UUID_SIZE 37 /* 36 characters and NUL */

struct push;
struct push_upload;

/* Open <cfg->data_dir>/push (the pushed-image store) and uploads/. cache is
 * the mirror's store (borrowed): blobs and manifests found there satisfy
 * mounts and manifest references and are copied into the push store.
 * *out: push_free(). */
RS_MUST_CHECK enum rs_code push_new(struct push **out, const struct rs_config *cfg, struct blobstore *cache,
                                    struct rs_err *err);
void push_free(struct push *p);

/* The store of pushed blobs and manifests (borrowed from p). */
struct blobstore *push_store(struct push *p);

/* Start an upload for repo; *out receives its UUID. RS_TOO_LARGE when
 * RS_LIMIT_UPLOADS_MAX uploads are open. */
RS_MUST_CHECK enum rs_code push_upload_start(struct push *p, const char *repo, char out[PUSH_UUID_SIZE],
                                             struct rs_err *err);

/* Take exclusive use of an upload of repo. RS_NOT_FOUND when no such upload
 * (or it belongs to another repository); RS_BAD_INPUT when another request
 * is using it. The handle is released by push_upload_close(),
 * push_upload_commit() or push_upload_cancel(). */
RS_MUST_CHECK enum rs_code push_upload_open(struct push *p, const char *repo, const char *uuid,
                                            struct push_upload **out, struct rs_err *err);

/* Bytes received so far. */
uint64_t push_upload_size(const struct push_upload *u);

/* Append bytes. RS_TOO_LARGE when the upload would exceed
 * push.max_blob_bytes (nothing of this piece is written); RS_IO. */
RS_MUST_CHECK enum rs_code push_upload_write(struct push_upload *u, const void *buf, size_t len, struct rs_err *err);

/* Finish: the bytes must hash to digest (RS_DIGEST_MISMATCH, and the upload
 * is removed; RS_DIGEST_INVALID for a bad digest string, the upload kept).
 * On success the blob is in the push store (the upload's file renamed
 * there, fsynced), linked to the upload's repository, and the upload is
 * gone. Releases u whatever the outcome. */
RS_MUST_CHECK enum rs_code push_upload_commit(struct push_upload *u, const char *digest, struct rs_err *err);

/* What the commits of p's uploads did since push_new (tests, bench/):
 * uploads renamed into the push store, uploads copied there (another file
 * system), and bytes read back from upload files to rebuild a running hash
 * (an upload resumed after a restart, or after a write that failed). */
struct push_commit_stats {
	uint64_t renamed, copied, rehashed_bytes;
};
void push_commit_stats(struct push *p, struct push_commit_stats *out);

/* A new read-only descriptor of u's data file (close() it): it reads what
 * is written later too, and the bytes stay readable after a commit renames
 * (or a cancel removes) the file. RS_IO. */
RS_MUST_CHECK enum rs_code push_upload_reader(struct push_upload *u, int *out_fd, struct rs_err *err);

/* Release u, keeping the upload for later requests. NULL is fine. */
void push_upload_close(struct push_upload *u);

/* Remove the upload and release u. */
void push_upload_cancel(struct push_upload *u);

/* Does repository repo hold object digest in the push store (linked there,
 * and the bytes present)? Only then may it be served under repo. */
bool push_holds(struct push *p, const char *repo, enum blobstore_kind kind, const char *digest);

/* Mount blob digest from repository from into repo. The caller checked that
 * the client may pull from. RS_OK when from holds the blob (pushed or
 * mounted there, or held by the mirror's repository from: see
 * push_set_fetcher) and it is now linked to repo too; RS_NOT_FOUND when from
 * does not hold it (content of other repositories never counts);
 * RS_BAD_INPUT for an invalid name. */
RS_MUST_CHECK enum rs_code push_mount_blob(struct push *p, const char *repo, const char *from, const char *digest,
                                           struct rs_err *err);

/* Remove repo's link to manifest digest (a push the gate refused). */
void push_forget_manifest(struct push *p, const char *repo, const char *digest);

/* The manifests pushed to repo whose subject is subject, from the push
 * store's referrers index (refindex.h refindex_list: sorted, at most max,
 * *out free()). Whether repo still holds each is the caller's check
 * (push_holds). RS_DIGEST_INVALID, RS_NOMEM. */
RS_MUST_CHECK enum rs_code push_referrers(struct push *p, const char *repo, const char *subject,
                                          char (**out)[DIGEST_STR_SIZE], size_t *out_n, size_t max,
                                          struct rs_err *err);

/* Store a pushed manifest for repo under ref (a tag, or the digest of body).
 * content_type (may be NULL or generic) and the body's mediaType decide the
 * type: OCI or Docker image manifest or index. The body must be valid JSON
 * of that type (RS_BAD_INPUT), at most limits.manifest_max_bytes
 * (RS_TOO_LARGE), every referenced blob or manifest must be held by repo
 * (pushed or mounted there, or held by the mirror's repo; RS_NOT_FOUND
 * naming the digest), a digest ref must match the body
 * (RS_DIGEST_MISMATCH). out_digest receives the manifest's digest. */
/* The mirror's side of a reference or mount: RS_OK only when the mirror's
 * repository repo (as the client names it, routed like a pull) holds the blob
 * (manifest false) or manifest (true), i.e. it is linked there or the
 * upstream confirms it for repo now, and the cache has its bytes (fetched
 * from the upstream for repo when absent). Called from the request's thread;
 * RS_NOT_FOUND when the upstream does not have it under repo. */
typedef enum rs_code (*push_fetch_fn)(void *ctx, const char *repo, const char *digest, bool manifest,
                                      struct rs_err *err);

/* Let manifest PUTs and mounts take references through the mirror: a client
 * that HEADs a blob sees the upstream's answer through regslim and skips the
 * upload, so the blob must come from there. fn NULL turns it off. */
void push_set_fetcher(struct push *p, push_fetch_fn fn, void *ctx);

RS_MUST_CHECK enum rs_code push_put_manifest(struct push *p, const char *repo, const char *ref,
                                             const char *content_type, const char *body, size_t len,
                                             char out_digest[DIGEST_STR_SIZE], struct rs_err *err);

/* The checks of push_put_manifest without storing anything, for every
 * driver: size, declared and actual type, a digest ref against the body, a
 * valid tag, and each reference through ref_fn (RS_OK when repo holds kind
 * digest, now kept in the pushed area; RS_NOT_FOUND when it does not).
 * out: the body's digest, the type to store it with, the subject's digest
 * ("" when none). Errors as push_put_manifest. */
typedef enum rs_code (*push_ref_fn)(void *ctx, const char *repo, enum blobstore_kind kind, const char *digest,
                                    struct rs_err *err);
struct push_checked {
	char digest[DIGEST_STR_SIZE];
	char type[128];
	char subject[DIGEST_STR_SIZE];
};
RS_MUST_CHECK enum rs_code push_check_manifest(const struct rs_config *cfg, const char *repo, const char *ref,
                                               const char *content_type, const char *body, size_t len,
                                               push_ref_fn ref_fn, void *ref_ctx, struct push_checked *out,
                                               struct rs_err *err);

/* The pushed tag repo:tag. RS_NOT_FOUND when it was never pushed. */
RS_MUST_CHECK enum rs_code push_get_tag(struct push *p, const char *repo, const char *tag, struct blobstore_tag *out,
                                        struct rs_err *err);

/* The pushed tags of repo as the tags/list JSON {"name":..,"tags":[..]}
 * (sorted) in a new buffer (*out: free()). A repository that holds
 * something but has no tag left (all deleted, or pushed by digest only)
 * gets the empty list (spec, "Listing Tags": the list MAY be empty).
 * RS_NOT_FOUND when repo holds nothing. */
RS_MUST_CHECK enum rs_code push_list_tags(struct push *p, const char *repo, char **out, size_t *out_len,
                                          struct rs_err *err);

/* ------------------------------------------------------------ deletes (spec "Content Management") */

/* Delete manifest digest from repo: every pushed tag of repo that points at
 * it goes (as distribution does), then repo's link to it, then its entry in
 * the referrers index when it has a subject. Other repositories holding the
 * same digest keep it; the bytes stay until the garbage collection.
 * *out_tags (may be NULL) counts the tags removed. RS_NOT_FOUND when repo
 * does not hold it, RS_DIGEST_INVALID, RS_IO. */
RS_MUST_CHECK enum rs_code push_delete_manifest(struct push *p, const char *repo, const char *digest,
                                                unsigned *out_tags, struct rs_err *err);
/* Delete the pushed tag repo:tag (the manifest stays). RS_NOT_FOUND when
 * there is no such tag, RS_IO. */
RS_MUST_CHECK enum rs_code push_delete_tag(struct push *p, const char *repo, const char *tag, struct rs_err *err);
/* Remove repo's link to blob digest. RS_NOT_FOUND when repo does not hold
 * it, RS_DIGEST_INVALID. */
RS_MUST_CHECK enum rs_code push_delete_blob(struct push *p, const char *repo, const char *digest,
                                            struct rs_err *err);

/* ------------------------------------------------------------ garbage collection */

struct push_gc_stats {
	unsigned roots;            /* manifest links read (every repository) */
	unsigned marked;           /* objects they keep (themselves and what they reference) */
	unsigned blobs_removed, manifests_removed;
	uint64_t bytes_removed;
	unsigned young;            /* unreferenced, but used within the grace period: kept */
	unsigned raced;            /* unreferenced, but taken by a push during the sweep: kept */
};

/* One sweep of the push store at time now: every blob and manifest that no
 * manifest linked in any pushed repository is or references (through an
 * index's entries too) is removed, unless it was used (written, linked by
 * an upload or mount) within grace_s seconds, is pinned, or a push running
 * during the sweep took it. Blob links alone keep nothing past the grace
 * period (a blob uploaded and never referenced is garbage), so refused
 * pushes, deleted images and abandoned uploads' blobs go. Manifest pushes
 * wait for the start of a sweep (they hold off its start while they check
 * and link), and a push during the sweep names what it takes first: nothing
 * a push relies on is removed. Nothing is removed when the walk of the
 * links fails (RS_IO naming it, RS_NOMEM). */
RS_MUST_CHECK enum rs_code push_gc(struct push *p, time_t now, unsigned grace_s, struct push_gc_stats *out,
                                   struct rs_err *err);
/* Tests: fn(ctx) runs in every sweep between the reading of the links and
 * the removals, the window a push during the sweep falls into. NULL: none. */
void push_set_gc_hook(struct push *p, void (*fn)(void *ctx), void *ctx);

/* Remove uploads idle for push.upload_idle_timeout_s or more at time now
 * (uploads in use are skipped). *out_removed (may be NULL) counts them. */
void push_sweep(struct push *p, time_t now, unsigned *out_removed);

#endif
