/* layout: image sources and destinations on disk for `regslim optimize`.
 *
 * Sources: an OCI image layout directory ("oci:DIR[:TAG]", image-spec
 * image-layout.md: oci-layout, index.json, blobs/sha256/<hex>) or a
 * docker-archive tarball ("docker-archive:FILE[:REPO:TAG]", as `docker save`
 * writes: manifest.json, the config JSON and one tar per layer). The
 * archive's outer tar is indexed once by its headers (seeking over the data),
 * and members are then read as byte ranges of the file, so nothing is held
 * in memory but the small JSON documents (capped).
 *
 * Destination: an OCI image layout written atomically. Everything goes to a
 * staging directory next to DIR (".<name>.regslim-XXXXXX", same file
 * system); layout_writer_commit() renames it into place (DIR did not exist)
 * or moves the new blobs in and replaces index.json with rename (DIR was a
 * layout already). layout_writer_free() without a commit removes the staging
 * directory, so a failed run leaves DIR untouched.
 *
 * Blobs are verified against their digest and size when read whole (JSON)
 * and when copied; layer streams are verified by the pipeline as it decodes.
 * Errors: RS_IO naming the path and errno, RS_NOT_FOUND, RS_BAD_INPUT,
 * RS_DIGEST_MISMATCH, RS_TOO_LARGE, RS_NOMEM. */
#ifndef RS_OPTIMIZER_LAYOUT_H
#define RS_OPTIMIZER_LAYOUT_H

#include "digest.h"
#include "errors.h"
#include "imagejson.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum layout_kind { LAYOUT_OCI = 0, LAYOUT_ARCHIVE };

struct layout_src;

/* Open a source reference ("oci:DIR[:TAG]" or "docker-archive:FILE").
 * *out is new (layout_src_free). RS_BAD_INPUT for an unknown scheme. */
RS_MUST_CHECK enum rs_code layout_src_open(struct layout_src **out, const char *ref, struct rs_err *err);
void layout_src_free(struct layout_src *s);

enum layout_kind layout_src_kind(const struct layout_src *s);
/* The TAG part of the reference, or NULL (borrowed). */
const char *layout_src_tag(const struct layout_src *s);
/* The path part of the reference (borrowed). */
const char *layout_src_path(const struct layout_src *s);

/* OCI: the parsed index.json (borrowed). NULL for archives. */
const struct imagejson_index *layout_src_index(const struct layout_src *s);
/* Archive: the parsed manifest.json (borrowed). NULL for OCI. */
const struct imagejson_archive *layout_src_archive(const struct layout_src *s);

/* Read a whole blob (OCI: by digest, checked against digest and size; size
 * UINT64_MAX means unknown) of at most cap bytes. *out is new (free()),
 * NUL-terminated, *len its length. */
RS_MUST_CHECK enum rs_code layout_src_read_blob(struct layout_src *s, const char *digest, uint64_t size,
						size_t cap, char **out, size_t *len, struct rs_err *err);

/* Archive: read a member whole (at most cap bytes). *out is new (free()). */
RS_MUST_CHECK enum rs_code layout_src_read_member(struct layout_src *s, const char *name, size_t cap,
						  char **out, size_t *len, struct rs_err *err);

/* A byte range of a file to stream: a layer blob (OCI, by digest) or an
 * archive member (by name). fd is borrowed from the source (valid until
 * layout_src_free) — use pread on it, never its file offset. */
struct layout_range {
	int fd;
	uint64_t offset;
	uint64_t size;
};
RS_MUST_CHECK enum rs_code layout_src_blob_range(struct layout_src *s, const char *digest,
						 struct layout_range *out, struct rs_err *err);
RS_MUST_CHECK enum rs_code layout_src_member_range(struct layout_src *s, const char *name,
						   struct layout_range *out, struct rs_err *err);

/* ---- destination --------------------------------------------------------- */

struct layout_writer;

/* Parse "oci:DIR[:TAG]" for a destination. *dir_out and *tag_out are new
 * strings (free(); tag NULL when absent). */
RS_MUST_CHECK enum rs_code layout_parse_dest(char **dir_out, char **tag_out, const char *ref,
					     struct rs_err *err);

/* Start writing a layout at dir (which must not exist, or be an OCI layout).
 * *out is new (layout_writer_free). */
RS_MUST_CHECK enum rs_code layout_writer_new(struct layout_writer **out, const char *dir,
					     struct rs_err *err);
/* Abandon (if not committed) and release. NULL is fine. */
void layout_writer_free(struct layout_writer *w);

/* A new temporary file in the staging directory for a blob being written:
 * *fd_out (the caller closes it), path in path_out (cap bytes). */
RS_MUST_CHECK enum rs_code layout_writer_tmp(struct layout_writer *w, int *fd_out, char *path_out,
					     size_t cap, struct rs_err *err);
/* fsync and close fd, and move the temporary file at path to the blob
 * named digest (an existing blob of that digest is kept; path is removed). */
RS_MUST_CHECK enum rs_code layout_writer_commit_tmp(struct layout_writer *w, int fd, const char *path,
						    const char *digest, struct rs_err *err);
/* Write a small blob; its digest goes to digest_out. */
RS_MUST_CHECK enum rs_code layout_writer_put(struct layout_writer *w, const void *buf, size_t len,
					     char digest_out[DIGEST_STR_SIZE], struct rs_err *err);
/* Copy a range of another file as blob digest, verifying digest and size. */
RS_MUST_CHECK enum rs_code layout_writer_copy(struct layout_writer *w, const struct layout_range *r,
					      const char *digest, struct rs_err *err);
/* Name desc (copied) as the image of this layout under tag (annotation
 * org.opencontainers.image.ref.name). An existing entry with that tag is
 * replaced at commit. */
RS_MUST_CHECK enum rs_code layout_writer_set_ref(struct layout_writer *w,
						 const struct imagejson_descriptor *desc, const char *tag,
						 struct rs_err *err);
/* Publish: see the file comment. After success free() only releases. */
RS_MUST_CHECK enum rs_code layout_writer_commit(struct layout_writer *w, struct rs_err *err);

#endif
