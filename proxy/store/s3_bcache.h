/* s3_bcache: a replica's local copies of blobs of the s3 store
 * (store.s3.local_cache_bytes; docs/scale-out.md "Warm reads"). A blob this
 * replica wrote, or read from the bucket from its first byte to its last,
 * is kept as a file named by its digest's hex under one directory of the
 * data directory, so that the next GET of it goes out by sendfile instead
 * of ranged GETs from the object store.
 *
 * Only verified bytes become a copy: a write's staging file once the store
 * committed it (the digest matched), or a read whose bytes hashed to the
 * digest; files appear by rename or link, whole. The bucket stays the truth:
 * the driver confirms an object exists (HEAD) before it uses a copy, so a
 * blob deleted or evicted by any replica is never served from here (the
 * copy is dropped then). Bounded in bytes: the least recently used copies
 * (file mtime, touched on use) go first. Copies live as long as the process
 * (they are not fsynced; the directory is emptied at open); losing them
 * loses nothing.
 *
 * It knows files and digests, not S3 or keys. Thread-safe. */
#ifndef RS_STORE_S3_BCACHE_H
#define RS_STORE_S3_BCACHE_H

#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct s3_bcache;
struct s3_bcache_fill;

/* Copies under dir (made if missing; whatever an earlier process left removed), at
 * most max_bytes of them. max_bytes 0: *out is NULL and every call below
 * does nothing. RS_IO, RS_NOMEM. */
RS_MUST_CHECK enum rs_code s3_bcache_open(struct s3_bcache **out, const char *dir, uint64_t max_bytes,
                                          struct rs_err *err);
void s3_bcache_free(struct s3_bcache *b);

/* A read-only descriptor of hex's copy when there is one of exactly size
 * bytes (touched: it was used now), else -1. */
int s3_bcache_open_fd(struct s3_bcache *b, const char *hex, uint64_t size);

/* Link hex's copy (exactly size bytes) to the new path to (a layout for the
 * optimizer, which only reads it): true when done (touched: used now). */
bool s3_bcache_link_out(struct s3_bcache *b, const char *hex, uint64_t size, const char *to);

/* path holds hex's verified bytes (size of them): link it in as the copy.
 * Best effort (a copy is an optimization). */
void s3_bcache_adopt(struct s3_bcache *b, const char *hex, const char *path, uint64_t size);

/* Forget hex's copy (the object is gone from the bucket). */
void s3_bcache_drop(struct s3_bcache *b, const char *hex);

/* A copy made while reading: bytes handed over in order from offset 0
 * (s3_bcache_fill_add) become hex's copy once all size of them arrived and
 * they hash to "sha256:<hex>". Bytes out of order end the fill (nothing is
 * kept). NULL when b is NULL or a file cannot be made. */
struct s3_bcache_fill *s3_bcache_fill_new(struct s3_bcache *b, const char *hex, uint64_t size);
void s3_bcache_fill_add(struct s3_bcache_fill *f, uint64_t off, const void *buf, size_t len);
/* Whether f is still taking bytes (false once done or ended). */
bool s3_bcache_fill_active(const struct s3_bcache_fill *f);
/* End f: adopt the copy if it is complete and verified, else remove it. NULL is fine. */
void s3_bcache_fill_free(struct s3_bcache_fill *f);

/* Bytes of copies held now (tests, metrics). */
uint64_t s3_bcache_bytes(struct s3_bcache *b);

#endif
