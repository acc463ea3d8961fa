/* digest: SHA-256 over a byte stream with its byte count, and parsing of
 * OCI digest strings ("sha256:<64 lower-case hex>"). The only OpenSSL user;
 * the blob store and the optimizer both hash through it. */
#ifndef RS_OPTIMIZER_DIGEST_H
#define RS_OPTIMIZER_DIGEST_H

#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DIGEST_HEX_LEN 64
/* "sha256:" + 64 hex + NUL */
#define DIGEST_STR_SIZE (7 + DIGEST_HEX_LEN + 1)

struct digest_ctx; /* opaque running SHA-256 */

/* A new running hash; NULL on allocation failure. Free with digest_free(). */
struct digest_ctx *digest_new(void);
void digest_free(struct digest_ctx *d);

/* Feed len bytes. */
void digest_update(struct digest_ctx *d, const void *buf, size_t len);

/* Bytes fed so far. */
uint64_t digest_count(const struct digest_ctx *d);

/* Write "sha256:<hex>" into out (DIGEST_STR_SIZE bytes). The context stays
 * usable: the value is that of the bytes fed so far. */
void digest_final(struct digest_ctx *d, char out[DIGEST_STR_SIZE]);

/* Reset to the empty stream. */
void digest_reset(struct digest_ctx *d);

/* One-shot digest of a buffer. */
void digest_buffer(char out[DIGEST_STR_SIZE], const void *buf, size_t len);

/* True when s is "sha256:" followed by exactly 64 lower-case hex digits. */
bool digest_valid(const char *s);

/* Validate s as a digest reference; RS_DIGEST_INVALID with a message naming
 * the value otherwise (other algorithms are RS_UNSUPPORTED). */
RS_MUST_CHECK enum rs_code digest_parse(const char *s, struct rs_err *err);

/* The 64 hex characters of a valid digest (borrowed from s). */
const char *digest_hex(const char *s);

#endif
