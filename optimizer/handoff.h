/* handoff: a stream stage (stream.h) that runs the stages after it on a
 * thread of its own, so that a layer's scan uses two cores: decoding on the
 * caller's thread, hashing, spooling and tar parsing on the stage's. Bytes
 * reach next in order, exactly as a direct chain would deliver them, through
 * a fixed ring of buffers (bounded memory; the writer waits while the ring
 * is full). After next fails, the rest is discarded and the writer gets
 * next's code and message at its next write or at finish. */
#ifndef RS_OPTIMIZER_HANDOFF_H
#define RS_OPTIMIZER_HANDOFF_H

#include "errors.h"
#include "stream.h"

/* A new stage in *out feeding next (borrowed; it must outlive the stage).
 * Freeing the stage stops its thread first, so free it before next.
 * RS_NOMEM, RS_IO when the thread cannot start. */
RS_MUST_CHECK enum rs_code handoff_new(struct stream_sink **out, struct stream_sink *next, struct rs_err *err);

/* After a failure before s (a handoff stage; for any other stage or NULL
 * this does nothing): the bytes s had already taken came before the failing
 * ones, so a failure of next on them is the one to report. Stops the
 * thread; returns next's code (its message in err), RS_OK when next did not
 * fail. */
enum rs_code handoff_settle(struct stream_sink *s, struct rs_err *err);

#endif
