/* stream: the one stage shape of the optimizer, and the small sinks every
 * chain ends in.
 *
 * A stage is a push-style sink: the producer calls stream_write() with bytes
 * as they arrive (any split, any length including 0) and stream_finish() once
 * at the end of input. A stage transforms what it receives and pushes its
 * output to its `next` sink through one fixed-size output buffer it owns;
 * nothing in a stage grows with input size. finish() flushes what the stage
 * still holds, checks trailers (truncation, checksums) and then finishes
 * `next`, so a whole chain is finished by finishing its head.
 *
 * Ownership: a stage BORROWS its `next` sink; it never frees it. The builder
 * of a chain frees every stage itself (in any order, after the last write or
 * finish). stream_free(NULL) does nothing.
 *
 * Errors: write() and finish() return enum rs_code with the first message in
 * err (first message wins: a stage passes the code from `next` up unchanged).
 * After a failed write or finish the sink is poisoned: later calls return
 * the same code again without touching `next`, so a producer may stop at the
 * first failure and just free the chain.
 *
 * This file has no codec or tar knowledge; see codec.h and tar_read.h for
 * the stages, and digest.h for the hash the digest sink uses. */
#ifndef RS_OPTIMIZER_STREAM_H
#define RS_OPTIMIZER_STREAM_H

#include "digest.h"
#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Size of the fixed output buffer of each stage in this library. */
#define STREAM_BUF_SIZE (128u * 1024)

struct stream_sink;

/* Push len bytes (buf may be NULL when len is 0). */
typedef enum rs_code (*stream_write_fn)(struct stream_sink *self, const void *buf, size_t len,
					struct rs_err *err);
/* End of input: flush, verify trailers, then finish `next`. Called once. */
typedef enum rs_code (*stream_finish_fn)(struct stream_sink *self, struct rs_err *err);
/* Release the stage (not its `next`). */
typedef void (*stream_free_fn)(struct stream_sink *self);

struct stream_sink_ops {
	const char *name; /* short stage name for messages ("gzip", "tar") */
	stream_write_fn write;
	stream_finish_fn finish;
	stream_free_fn free;
};

/* The base every stage embeds FIRST in its state struct; callers treat
 * sinks as opaque and use the functions below. */
struct stream_sink {
	const struct stream_sink_ops *ops;
	enum rs_code failed; /* RS_OK until a write or finish failed */
	bool finished;
};

/* Initialise the embedded base of a stage (used by stage implementations). */
void stream_sink_init(struct stream_sink *s, const struct stream_sink_ops *ops);

/* Push len bytes into s. Returns RS_OK or the first failure of the chain
 * below s. After a failure (or after finish) every call fails: a write after
 * finish is a programmer error (assert). */
RS_MUST_CHECK enum rs_code stream_write(struct stream_sink *s, const void *buf, size_t len,
					struct rs_err *err);

/* End of input for s and, through it, for the rest of the chain. Exactly
 * once. Truncated compressed input, a tar archive cut mid-entry and similar
 * are reported here (RS_BAD_INPUT). */
RS_MUST_CHECK enum rs_code stream_finish(struct stream_sink *s, struct rs_err *err);

/* Release s (not its next). NULL is fine. */
void stream_free(struct stream_sink *s);

/* Read fd until EOF in STREAM_BUF_SIZE chunks and write everything into s
 * (does NOT finish s). RS_IO naming errno on a read error. The fd is
 * borrowed and left open. */
RS_MUST_CHECK enum rs_code stream_pump_fd(struct stream_sink *s, int fd, struct rs_err *err);

/* ---- Terminal and pass-through sinks ---------------------------------- */

/* A sink that writes everything to fd (retrying short writes and EINTR).
 * The fd is borrowed: never closed, never fsync'd (the blob writer does that).
 * finish() does nothing else. *out is a new sink (stream_free). RS_NOMEM. */
RS_MUST_CHECK enum rs_code stream_fd_sink_new(struct stream_sink **out, int fd,
					      struct rs_err *err);

/* A sink that hashes (SHA-256) and counts every byte, then passes the bytes
 * on to next unchanged. next may be NULL (the digest sink is then terminal).
 * next is borrowed. *out is a new sink (stream_free). RS_NOMEM. */
RS_MUST_CHECK enum rs_code stream_digest_sink_new(struct stream_sink **out,
						  struct stream_sink *next, struct rs_err *err);

/* The digest ("sha256:<hex>", DIGEST_STR_SIZE bytes) and byte count of what
 * passed so far; valid at any time, final after finish. s must be a digest
 * sink (assert). size_out may be NULL. */
void stream_digest_sink_result(struct stream_sink *s, char digest_out[DIGEST_STR_SIZE],
			       uint64_t *size_out);

/* A sink that counts bytes and passes them to next (NULL: discard them).
 * next is borrowed. *out is a new sink (stream_free). RS_NOMEM. */
RS_MUST_CHECK enum rs_code stream_count_sink_new(struct stream_sink **out,
						 struct stream_sink *next, struct rs_err *err);

/* Bytes that passed through a count sink (assert on another kind). */
uint64_t stream_count_sink_bytes(const struct stream_sink *s);

/* A sink that collects bytes in memory up to cap bytes; more is
 * RS_TOO_LARGE "<what> is more than <cap> bytes". For small things only
 * (config JSON, manifests, tests); what names the content in the message
 * and is copied. *out is a new sink (stream_free). RS_NOMEM. */
RS_MUST_CHECK enum rs_code stream_mem_sink_new(struct stream_sink **out, size_t cap,
					       const char *what, struct rs_err *err);

/* The bytes a memory sink holds (borrowed from s, valid until the next
 * write or free; NUL-terminated for convenience, the NUL not counted). */
const uint8_t *stream_mem_sink_data(const struct stream_sink *s, size_t *len_out);

/* Hand the buffer of a memory sink over to the caller (free() it; it is
 * NUL-terminated, the NUL not counted in *len_out) and reset the sink to
 * empty. Returns NULL (and *len_out 0) when nothing was written. */
uint8_t *stream_mem_sink_take(struct stream_sink *s, size_t *len_out);

#endif
