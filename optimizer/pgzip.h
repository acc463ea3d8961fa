/* pgzip: the gzip encoder stage of codec.h, compressed in parallel and
 * deterministically. The input is cut into fixed chunks of
 * RS_LIMIT_GZIP_CHUNK_BYTES; each chunk becomes one complete gzip member
 * (libdeflate, whole-buffer deflate: fast, and no dependence on how the
 * input was split into writes), and the members are written in input order.
 * A gzip file may hold several members (RFC 1952 2.2); gunzip, Go's
 * compress/gzip (so Docker and containerd), pigz, isa-l and zlib's
 * inflateReset loop read them as one stream. The bytes depend on the input,
 * the level and the chunk size only, never on the thread count or on
 * scheduling: threads == 1 compresses in the caller's thread and gives the
 * same bytes.
 *
 * Memory: 2 x threads chunk slots (input and worst-case output each), so
 * about 4 MiB per thread at 1 MiB chunks. It talks to libdeflate and its
 * borrowed `next` sink only. */
#ifndef RS_OPTIMIZER_PGZIP_H
#define RS_OPTIMIZER_PGZIP_H

#include "errors.h"
#include "stream.h"

#include <stddef.h>

/* A gzip encoder at level (1..9) over threads worker threads (0 or 1: none,
 * the caller's thread compresses), pushing to next (borrowed). chunk 0
 * means RS_LIMIT_GZIP_CHUNK_BYTES. RS_NOMEM, RS_BAD_INPUT (level). */
RS_MUST_CHECK enum rs_code pgzip_encoder_new(struct stream_sink **out, int level, unsigned threads, size_t chunk,
                                             struct stream_sink *next, struct rs_err *err);

#endif
