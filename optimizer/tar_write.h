/* tar_write: helpers that emit tar into a sink (stream.h): copies of raw
 * entry headers as tar_read reported them, new headers for synthesized
 * entries, data padding and the end-of-archive blocks.
 *
 * A synthesized header is ustar when everything fits (name split into
 * prefix/name at a '/', octal fields in range) and otherwise a pax 'x'
 * header (records sorted by key, path/linkpath/size/uid/gid/uname/gname/
 * mtime/xattrs as needed) followed by a ustar header whose fields hold the
 * truncated or zero value. Output is a pure function of the entry: no
 * clock, no host user names. The pax header block is named
 * "<dir>/PaxHeaders/<base>" (truncated to 100 bytes), mode 0644, mtime the
 * entry's, uid/gid 0.
 *
 * Stateless: every function writes straight to the sink (borrowed). */
#ifndef RS_OPTIMIZER_TAR_WRITE_H
#define RS_OPTIMIZER_TAR_WRITE_H

#include "errors.h"
#include "stream.h"
#include "tar_read.h"

#include <stdint.h>

/* Write raw header bytes (as on_entry gave them) unchanged. Same as
 * stream_write; here for symmetry. */
RS_MUST_CHECK enum rs_code tar_write_raw(struct stream_sink *out, const void *raw, size_t raw_len,
					 struct rs_err *err);

/* Write a header for e: ustar, or pax + ustar when needed (see above).
 * Uses path, linkpath, type, mode, uid, gid, uname, gname, size, mtime,
 * mtime_pax (written as the pax mtime when set), devmajor, devminor and
 * xattrs (as SCHILY.xattr.<name>); ignores offsets, sparse and index.
 * Directory paths get a trailing '/'. e->path must be a normalised path
 * (tar_path_normalize). RS_BAD_INPUT for a type that cannot be written
 * (sparse, 'g', 'x', 'L', 'K') naming it; RS_TOO_LARGE when the pax
 * payload would pass RS_LIMIT_TAR_EXT_MAX_BYTES; anything from out.
 * The caller then writes e->size data bytes and tar_write_padding(). */
RS_MUST_CHECK enum rs_code tar_write_header(struct stream_sink *out, const struct tar_entry *e,
					    struct rs_err *err);

/* Write entry e (raw, raw_len as on_entry gave them) so that it means the
 * same without the pax global header ('g') in effect for it: when the
 * global header sets records the entry does not set itself (ignoring
 * "comment", which readers ignore, and empty values, which only unset),
 * they are written first into one 'x' header together with the entry's
 * own 'x' records (which still win), followed by its 'L' / 'K' records and
 * its main header blocks unchanged; otherwise raw is copied as it is. For
 * a merged layer, where a copied 'g' header would reach the entries of
 * the layers above (POSIX pax: a global header holds for the rest of its
 * archive). RS_BAD_INPUT when raw is not an entry's headers, RS_TOO_LARGE
 * past RS_LIMIT_TAR_EXT_MAX_BYTES, anything from out. */
RS_MUST_CHECK enum rs_code tar_write_folded(struct stream_sink *out, const struct tar_entry *e, const void *raw,
					    size_t raw_len, struct rs_err *err);

/* Write the zero padding that follows size data bytes (0..511 bytes). */
RS_MUST_CHECK enum rs_code tar_write_padding(struct stream_sink *out, uint64_t size,
					     struct rs_err *err);

/* Write the two 512-byte zero blocks that end an archive. */
RS_MUST_CHECK enum rs_code tar_write_end(struct stream_sink *out, struct rs_err *err);

/* Bytes of padding after size data bytes. */
uint64_t tar_padding(uint64_t size);

#endif
