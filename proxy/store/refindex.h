/* refindex: the referrers index of the push store (distribution-spec v1.1
 * "Listing Referrers", issue 14), and the referrers list documents.
 *
 * The index is a set of referrer digests per (repository, subject digest):
 *   <data>/push/referrers/<repo...>/_subjects/<subject 64 hex>/<referrer 64 hex>
 * one small file per referrer (its digest, one line), written atomically and
 * durably like the tag maps and repository links (temp file in the push
 * store's tmp/, fsync, rename, fsync of the directory), so the index survives
 * restarts. A referrer is indexed in the repository it was pushed to only
 * (docs/security.md, "Repository links"); the subject need not exist.
 *
 * A struct refindex_list gathers descriptors for a referrers answer: pushed
 * referrer manifests (described from their bytes: mediaType, digest, size,
 * artifactType, or an image manifest's config.mediaType, and annotations) and
 * the entries of an upstream's referrers index (its referrers API answer or
 * its referrers tag), and writes the OCI image index the API answers with.
 * Documents are read through config/imagewalk.h (the root only). It knows nothing of HTTP or the
 * upstream; push.c indexes pushed manifests, api/referrers.c answers. */
#ifndef RS_PROXY_REFINDEX_H
#define RS_PROXY_REFINDEX_H

#include "digest.h"
#include "errors.h"
#include "imagejson.h"

#include <stdbool.h>
#include <stddef.h>

/* Record that manifest referrer, pushed to repo, has subject subject (both
 * sha256 digests). data_dir is regslim's data directory (borrowed).
 * Idempotent. RS_BAD_INPUT for an invalid repository name,
 * RS_DIGEST_INVALID for a bad digest, RS_IO. */
RS_MUST_CHECK enum rs_code refindex_add(const char *data_dir, const char *repo, const char *subject,
                                        const char *referrer, struct rs_err *err);

/* Forget referrer from repo's referrers of subject, if it is there. */
void refindex_remove(const char *data_dir, const char *repo, const char *subject, const char *referrer);

/* The referrers of subject in repo, sorted by digest, at most max of them:
 * *out is a new array of *out_n digests (free(); NULL when there are none).
 * Nothing recorded is RS_OK with *out_n 0. RS_DIGEST_INVALID, RS_NOMEM. */
RS_MUST_CHECK enum rs_code refindex_list(char (**out)[DIGEST_STR_SIZE], size_t *out_n, const char *data_dir,
                                         const char *repo, const char *subject, size_t max, struct rs_err *err);

/* The subject of manifest or index body into out ("" when it has none).
 * RS_BAD_INPUT when body does not parse or its subject's digest is not a
 * sha256 digest (a push to refuse: 400 MANIFEST_INVALID). */
RS_MUST_CHECK enum rs_code refindex_subject_of(char out[DIGEST_STR_SIZE], const char *body, size_t len,
                                               struct rs_err *err);

/* The digests of the entries of image index body (a referrers tag's
 * index), in order, at most max: *out is a new array of *out_n (free();
 * NULL when none). Entries without a valid digest are skipped.
 * RS_BAD_INPUT when body is not an index, RS_NOMEM. */
RS_MUST_CHECK enum rs_code refindex_entries(char (**out)[DIGEST_STR_SIZE], size_t *out_n, const char *body,
                                            size_t len, size_t max, struct rs_err *err);

/* Descriptors of a referrers answer; zero it before the first use. */
struct refindex_list {
	struct imagejson_descriptor *d;
	size_t n, cap;
};

/* Add the descriptor of referrer manifest (or index) digest, of media type
 * media_type, whose bytes are body. A digest already in the list is skipped.
 * RS_BAD_INPUT (a document that does not parse), RS_NOMEM. */
RS_MUST_CHECK enum rs_code refindex_list_add_manifest(struct refindex_list *l, const char *digest,
                                                      const char *media_type, const char *body, size_t len,
                                                      struct rs_err *err);

/* Add every entry of the image index body (an upstream's referrers list:
 * its referrers API answer or its referrers tag), unchanged; digests already
 * in the list are skipped. RS_BAD_INPUT when body is not an index. */
RS_MUST_CHECK enum rs_code refindex_list_add_index(struct refindex_list *l, const char *body, size_t len,
                                                   struct rs_err *err);

/* The referrers answer: an OCI image index (schemaVersion 2, mediaType
 * application/vnd.oci.image.index.v1+json) of the list's descriptors, only
 * those whose artifactType is artifact_type when it is not NULL. *out is a
 * new string (free()). RS_NOMEM. */
RS_MUST_CHECK enum rs_code refindex_list_write(char **out, size_t *out_len, const struct refindex_list *l,
                                               const char *artifact_type, struct rs_err *err);

/* The empty referrers list (static). */
const char *refindex_empty(void);

void refindex_list_dispose(struct refindex_list *l);

#endif
