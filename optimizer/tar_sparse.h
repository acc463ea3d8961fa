/* tar_sparse: expands the stored data of a GNU sparse tar entry into the
 * file's real bytes (holes as zeros), so that an entry the optimizer must
 * synthesize from a sparse source (a hard link materialized as a regular
 * file, squash.h) can be written as a plain regular entry.
 *
 * Formats (GNU tar manual, "Sparse Formats"; the same ones tar_read.h
 * passes through): old GNU ('S' header, map in the header at byte 386 and
 * in extension blocks), pax 0.0 (repeated GNU.sparse.offset /
 * GNU.sparse.numbytes records), pax 0.1 (GNU.sparse.map "off,len,...") and
 * pax 1.0 (GNU.sparse.major=1: the map is at the start of the data, decimal
 * numbers each ending in '\n' (count, then offset and length per chunk),
 * padded to 512 bytes). The map is read from the entry's raw header bytes
 * as tar_read reported them (and, for 1.0, from the data).
 *
 * The map must be sane: chunks in increasing offset order without
 * overlap, each inside the real size, their lengths adding up to the
 * stored data; otherwise RS_BAD_INPUT naming the entry. A real size above
 * RS_LIMIT_EXPANSION_RATIO times the stored size (once past
 * RS_LIMIT_EXPANSION_MIN_BYTES) is RS_TOO_LARGE. Memory: the map (at most
 * what the capped headers hold, or RS_LIMIT_TAR_EXT_MAX_BYTES of 1.0 map
 * text); data passes through, zeros come from a static block.
 *
 * Not a stream stage: the caller owns the output sink and keeps writing to
 * it after the entry (finishing it would end the whole output tar). */
#ifndef RS_OPTIMIZER_TAR_SPARSE_H
#define RS_OPTIMIZER_TAR_SPARSE_H

#include "errors.h"
#include "stream.h"
#include "tar_read.h"

#include <stddef.h>
#include <stdint.h>

struct tar_sparse;

/* A new expander for entry e (e->sparse must be true) whose raw header
 * bytes are raw (raw_len, as on_entry gave them); both borrowed for the
 * call. *out is new (tar_sparse_free). RS_BAD_INPUT for a missing or
 * malformed map, RS_TOO_LARGE (see above), RS_NOMEM. */
RS_MUST_CHECK enum rs_code tar_sparse_new(struct tar_sparse **out, const struct tar_entry *e,
					  const void *raw, size_t raw_len, struct rs_err *err);

/* Feed len bytes of the entry's stored data (any split; e->size bytes in
 * all) and write the expanded bytes they complete to out (borrowed). */
RS_MUST_CHECK enum rs_code tar_sparse_write(struct tar_sparse *s, const void *buf, size_t len,
					    struct stream_sink *out, struct rs_err *err);

/* After the last data byte: write the zeros up to the real size. Exactly
 * e->real_size bytes have then gone to out. RS_BAD_INPUT when the stored
 * data did not match the map. */
RS_MUST_CHECK enum rs_code tar_sparse_end(struct tar_sparse *s, struct stream_sink *out,
					  struct rs_err *err);

void tar_sparse_free(struct tar_sparse *s);

#endif
