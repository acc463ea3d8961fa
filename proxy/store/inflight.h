/* inflight: one upstream download per blob digest, however many clients ask
 * at once, with every client streamed from the growing temp file while it is
 * written (DESIGN.md "The pull path" point 6).
 *
 * The first inflight_join() for a digest starts a worker thread that runs the
 * caller's download function; later joins share it. The download function
 * reports the upstream's answer with inflight_fetch_begin() and pushes bytes
 * with inflight_fetch_write(), which go into a store writer (store.h, the
 * cache area). When it
 * returns RS_OK the blob is committed (digest and size verified); otherwise
 * the temp file is removed and every reader fails.
 *
 * Readers never see the last byte of a blob before it is verified, so a
 * client of a blob that fails verification always gets a short body (and the
 * proxy aborts its connection), never one that looks complete. The same
 * holds for a range that ends before the blob does: its reader holds the
 * range's last byte back until inflight_wait_verified() says the whole blob
 * verified (api/blobs.c), so a ranged answer of a cold blob completes only
 * once every byte of the blob was checked. */
#ifndef RS_PROXY_INFLIGHT_H
#define RS_PROXY_INFLIGHT_H

#include "store.h"
#include "errors.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct inflight;
struct inflight_fetch;

/* Runs in the worker thread. Must call inflight_fetch_begin() once before any
 * write. arg is the one given to the join that started the download. */
typedef enum rs_code (*inflight_download_fn)(struct inflight_fetch *f, void *arg, struct rs_err *err);

/* A table over the cache area of s (borrowed; must outlive the table). */
RS_MUST_CHECK enum rs_code inflight_new(struct inflight **out, struct store *s, struct rs_err *err);
/* Waits for running downloads to end (it does not cancel them: the download
 * function's own timeouts bound the wait), then frees. Fetch references still
 * held stay valid after this (s must outlive them). */
void inflight_free(struct inflight *t);

/* Join the download of digest, starting it with fn(arg) if none runs. arg
 * is owned by the table from here on and released with arg_free (may be
 * NULL) when the download ends, or at once if a download was already
 * running. *out holds a reference: release it with inflight_release().
 * arg is released on every path, failures included. If no download runs but
 * the blob is already committed, *out is a finished fetch reading the stored
 * blob and fn is never called. RS_DIGEST_INVALID for a bad digest; RS_IO or
 * RS_NOMEM when the temp file or worker cannot be created. */
RS_MUST_CHECK enum rs_code inflight_join(struct inflight *t, const char *digest, int64_t expected_size,
                                         inflight_download_fn fn, void *arg, void (*arg_free)(void *),
                                         struct inflight_fetch **out, struct rs_err *err);

/* Worker side: the upstream answered with a body of size bytes (-1 when
 * unknown). A known size that contradicts join's expected_size is
 * RS_DIGEST_MISMATCH (the download then fails before it began); a known size
 * must then be delivered exactly (checked by writes and at the end). */
RS_MUST_CHECK enum rs_code inflight_fetch_begin(struct inflight_fetch *f, int64_t size, struct rs_err *err);
/* Worker side, instead of inflight_fetch_begin: the bytes come from another
 * replica that downloads (and commits) the blob itself (peer streaming,
 * docs/scale-out.md). They go to a nameless scratch file of the store
 * instead of a store writer, hashed as they arrive; at the end the download
 * succeeds only when they hash to the digest, and nothing is committed (no
 * second copy of the blob in the store). Readers see no difference, the last
 * byte is held back until that check as for any download. RS_IO, RS_NOMEM,
 * and inflight_fetch_begin's errors. */
RS_MUST_CHECK enum rs_code inflight_fetch_begin_relay(struct inflight_fetch *f, int64_t size, struct rs_err *err);
/* Worker side, relay mode, once every byte was written: do they hash to the
 * digest? RS_DIGEST_MISMATCH naming both; the download must then fail (return
 * it). Checked at the end by the worker when the download function does not
 * ask (at most once). */
RS_MUST_CHECK enum rs_code inflight_fetch_relay_check(struct inflight_fetch *f, struct rs_err *err);
/* Worker side: append bytes (to the temp file, waking readers). */
RS_MUST_CHECK enum rs_code inflight_fetch_write(struct inflight_fetch *f, const void *buf, size_t len,
                                                struct rs_err *err);

/* Join the download of digest only if one runs now (never starts one): the
 * peer endpoint serving another replica. RS_OK with *out (a reference:
 * inflight_release), RS_NOT_FOUND with *out NULL. */
RS_MUST_CHECK enum rs_code inflight_peek(struct inflight *t, const char *digest, struct inflight_fetch **out);

/* Reader side: wait (at most timeout_s) until the upstream answered. On
 * success *out_size is the body size or -1. If the download failed before it
 * began, returns its code and message (RS_NOT_FOUND for an upstream 404,
 * RS_UPSTREAM when unreachable, ...). */
RS_MUST_CHECK enum rs_code inflight_wait_begin(struct inflight_fetch *f, unsigned timeout_s, int64_t *out_size,
                                               struct rs_err *err);

/* Reader side: copy up to len bytes at offset pos, waiting (at most
 * stall_s without progress) for them to arrive. Returns the number of bytes
 * copied; 0 only at the verified end of the blob; -1 when the download failed
 * or stalled (err says why). len must be > 0. Until the blob is verified at
 * most written - 1 bytes are readable. A stall fails this read only; the
 * download goes on and a later read may succeed. */
ssize_t inflight_read(struct inflight_fetch *f, uint64_t pos, void *buf, size_t len, unsigned stall_s,
                      struct rs_err *err);

/* Reader side: wait until the whole blob is verified and committed: RS_OK;
 * the download's failure (code and message) when it failed; RS_TIMEOUT when
 * no byte arrived for stall_s (the download goes on; a later call may
 * succeed). */
RS_MUST_CHECK enum rs_code inflight_wait_verified(struct inflight_fetch *f, unsigned stall_s, struct rs_err *err);

/* Reader side: wait at most max_ms for the download to end. RS_OK with
 * *out_ended true once the blob is verified and committed, RS_OK with
 * *out_ended false while it still runs (*out_written: bytes so far, for the
 * caller's own stall rule); the download's failure when it failed. For
 * waiters that must also watch something else (a shutdown). */
RS_MUST_CHECK enum rs_code inflight_wait_end(struct inflight_fetch *f, unsigned max_ms, bool *out_ended,
                                             uint64_t *out_written, struct rs_err *err);

/* Drop a reference taken by inflight_join(). NULL is fine. */
void inflight_release(struct inflight_fetch *f);

/* Number of downloads running (for metrics and shutdown). */
unsigned inflight_count(struct inflight *t);

#endif
