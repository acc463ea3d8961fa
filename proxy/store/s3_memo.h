/* s3_memo: what the s3 driver remembers of small immutable objects it read
 * (manifests, addressed by digest): their bytes and media type, so that a
 * warm manifest GET costs one HEAD (does the object still exist?) instead of
 * a GET of the manifest and a GET of its type (docs/scale-out.md "Warm
 * reads").
 *
 * Entries are keyed by the object's key in the bucket; the caller verified
 * the bytes' digest before remembering them, and confirms the object still
 * exists before using a remembered copy (another replica may have deleted
 * or evicted it), so the memo never serves what the bucket no longer has.
 * Bounded in entries and bytes; the least recently used entry goes first.
 * Thread-safe (one mutex). No S3, no keys of its own: the caller's strings. */
#ifndef RS_STORE_S3_MEMO_H
#define RS_STORE_S3_MEMO_H

#include <stdbool.h>
#include <stddef.h>

struct s3_memo;

/* A memo of at most max_entries entries and max_bytes bytes of content; an
 * object larger than max_bytes / 8 is never remembered. NULL when out of memory. */
struct s3_memo *s3_memo_new(size_t max_entries, size_t max_bytes);
void s3_memo_free(struct s3_memo *m);

/* Copies of key's bytes and media type (caller frees both) and true, or
 * false when key is not remembered (or out of memory). */
bool s3_memo_get(struct s3_memo *m, const char *key, char **out_buf, size_t *out_len, char **out_type);

/* Remember key's bytes and type (copied), replacing an older entry of key. */
void s3_memo_put(struct s3_memo *m, const char *key, const char *buf, size_t len, const char *type);

/* Forget key (removed, evicted, or found missing). */
void s3_memo_drop(struct s3_memo *m, const char *key);

/* Entries and bytes held now (tests). */
void s3_memo_stats(struct s3_memo *m, size_t *entries, size_t *bytes);

#endif
