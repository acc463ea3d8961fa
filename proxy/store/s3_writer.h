/* s3_writer: a verified write of one S3 object through an s3 client: the
 * object becomes visible only when its bytes hash to the digest the caller
 * expects (s3_writer.c says how; s3.h describes the client). */
#ifndef RS_STORE_S3_WRITER_H
#define RS_STORE_S3_WRITER_H

#include "errors.h"
#include "s3.h"

#include <stddef.h>
#include <stdint.h>

struct s3_writer;

/* A writer of key that commits only bytes hashing to digest ("sha256:<hex>")
 * and, when size >= 0, exactly size bytes. *out: s3_writer_free(). */
RS_MUST_CHECK enum rs_code s3_writer_new(struct s3_writer **out, struct s3_client *c, const char *key,
                                         const char *digest, int64_t size, struct rs_err *err);
/* Append len bytes (hashed, spooled; a full part is uploaded now). */
RS_MUST_CHECK enum rs_code s3_writer_write(struct s3_writer *w, const void *buf, size_t len, struct rs_err *err);
/* Check digest and size, then make the object visible. RS_DIGEST_MISMATCH
 * ("expected sha256:..., got sha256:...") or RS_BAD_INPUT (size) after
 * aborting: nothing is visible under key. After any failure the writer can
 * only be freed. */
RS_MUST_CHECK enum rs_code s3_writer_commit(struct s3_writer *w, struct rs_err *err);
/* What the bytes written hashed to ("sha256:<hex>"), once s3_writer_commit
 * checked them; "" before. Borrowed from w. */
const char *s3_writer_got(const struct s3_writer *w);
/* Free w; an uncommitted write is abandoned (multipart upload aborted, spool dropped). */
void s3_writer_free(struct s3_writer *w);

#endif
