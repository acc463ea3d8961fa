/* tar_read: a push-fed streaming tar parser (a stream stage, see stream.h)
 * that reports each entry's parsed metadata together with the exact raw
 * header bytes it was read from, then the entry's data in chunks, so a
 * consumer can copy a kept entry byte-for-byte and drop others whole.
 *
 * Formats: ustar and old GNU/v7 headers, pax extended ('x') and global ('g')
 * headers, GNU long names ('L') and long link names ('K'), base-256 (binary)
 * numeric fields, old GNU sparse ('S', with its extension blocks) and pax
 * sparse 0.0/0.1/1.0. Sparse entries are passed through intact: their stored
 * data region (for 1.0 including the sparse map at its start) is the entry's
 * data, delivered verbatim; the metadata says sparse and gives the real size.
 *
 * Validation (all RS_BAD_INPUT naming the entry and the byte offset of its
 * first header block in the uncompressed tar stream):
 *   header checksum (the signed and the unsigned sum are both accepted),
 *   malformed octal / base-256 fields, an unknown extension header payload
 *   that is not "len key=value\n" records, absolute names ("/etc/x"), names
 *   with a ".." component (also hard-link targets), an empty name, a NUL in
 *   a pax path, a lone zero block followed by a non-zero block, and a
 *   truncated archive (a partial header block or partial entry data at
 *   finish). Extension payloads above RS_LIMIT_TAR_EXT_MAX_BYTES and raw
 *   headers above RS_LIMIT_TAR_HEADER_MAX_BYTES are RS_TOO_LARGE.
 *   Message shape (offsets in bytes of the uncompressed tar stream):
 *     "tar: entry 'a/b' at offset 1536: name has a '..' component"
 *     "tar: entry '/etc/x' at offset 0: absolute name"
 *     "tar: entry 'h' at offset 1024: hard link target has a '..' component"
 *     "tar: header at offset 1024: invalid mode field"
 *     "tar: lone zero block at offset 1024 followed by a header"
 *     "tar: pax header at offset 0: malformed record at payload byte 0"
 *     "tar: 'x' extension header at offset 0 has 2097152 bytes, limit is 1048576 (RS_LIMIT_TAR_EXT_MAX_BYTES)"
 *     "tar: header at offset 1024: checksum 1234 does not match stored 4321"
 *     "tar: truncated archive: entry 'a' at offset 0 needs 100 more data bytes"
 *     (also "... more padding bytes", "partial header block (100 of 512
 *     bytes) at offset N", "headers at offset N are not followed by their entry")
 *
 * Semantics (as Go's archive/tar, which docker and containerd use): hard
 * links, symlinks, devices, directories and fifos ('1'..'6') carry no data
 * whatever their size field says; a typeflag '\0' entry whose name ends in
 * '/' is a directory; Solaris 'X' headers are read as 'x'; at most 16
 * extension headers may precede one entry; a 'g' header must not follow
 * other extension headers. A 'g' header's records apply to every later
 * entry (below its own 'x' records); a consumer that copies entries into
 * another archive must copy the 'g' entry too to keep that meaning.
 *
 * End of archive: two zero blocks end the archive; bytes after them (GNU tar
 * record padding) are ignored and counted in tar_read_stats.trailing_bytes.
 * Docker layers sometimes lack the end blocks: EOF right after an entry's
 * data (or after a single zero block) is accepted as a clean end, as Go's
 * archive/tar and GNU tar do; tar_read_stats.end_blocks says how many zero
 * blocks were seen (0, 1 or 2). An empty stream is an archive with no
 * entries.
 *
 * Memory: the reader buffers at most one entry's raw headers (capped) and
 * passes data straight from the caller's input chunk, without a copy. Any
 * split of the input gives identical entries, raw bytes and data bytes (data
 * chunk boundaries follow the input split).
 *
 * The reader has no `next`: it is a terminal stage that talks to its
 * consumer through the callbacks. It never writes tar; see tar_write.h. */
#ifndef RS_OPTIMIZER_TAR_READ_H
#define RS_OPTIMIZER_TAR_READ_H

#include "errors.h"
#include "stream.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TAR_BLOCK 512

/* Type flags as found in the header ('\0' and '7' are reported as '0'). */
#define TAR_TYPE_FILE '0'
#define TAR_TYPE_HARDLINK '1'
#define TAR_TYPE_SYMLINK '2'
#define TAR_TYPE_CHAR '3'
#define TAR_TYPE_BLOCK '4'
#define TAR_TYPE_DIR '5'
#define TAR_TYPE_FIFO '6'
#define TAR_TYPE_GLOBAL 'g' /* pax global header, reported as its own entry */
#define TAR_TYPE_GNU_SPARSE 'S'

struct tar_xattr {
	const char *name;  /* "user.foo", "security.capability" (prefix removed) */
	const void *value; /* raw bytes, may contain NUL; value_len long */
	size_t value_len;
};

/* Parsed metadata of one entry. Every pointer is borrowed from the reader
 * and valid only during the on_entry callback and the on_data / on_end_entry
 * callbacks of that same entry. Strings are NUL-terminated. */
struct tar_entry {
	/* Resolved name: pax "path" (or GNU.sparse.name) > GNU 'L' > ustar
	 * prefix "/" name > name. Normalised: leading "./" and "/"-runs of "."
	 * components removed, repeated '/' collapsed, trailing '/' removed; the
	 * archive root ("./") is ".". Never absolute, never contains "..". */
	const char *path;
	/* Link target: pax "linkpath" > GNU 'K' > ustar linkname; "" when none.
	 * For hard links normalised and validated like path; for symlinks
	 * exactly as stored (any string). */
	const char *linkpath;
	char type;        /* TAR_TYPE_* (or any other flag byte as stored) */
	uint32_t mode;    /* permission and setuid/setgid/sticky bits (07777) */
	uint64_t uid, gid;
	const char *uname, *gname; /* pax uname/gname > ustar fields; may be "" */
	/* Bytes of entry data that follow the headers in the archive (pax
	 * "size" > header size field). For sparse entries this is the stored
	 * size, not real_size. Padding to 512 is not included. */
	uint64_t size;
	int64_t mtime;            /* seconds (pax mtime integer part > header) */
	const char *mtime_pax;    /* pax "mtime" string verbatim (sub-second), or NULL */
	uint32_t devmajor, devminor;
	const struct tar_xattr *xattrs; /* pax SCHILY.xattr.* and LIBARCHIVE.xattr.* (base64-decoded) */
	size_t xattr_count;
	/* The payload of the pax global header ('g') in effect for this
	 * entry (the archive's last one before it; its records are already
	 * applied above), or NULL. Borrowed like the rest. */
	const char *pax_global;
	size_t pax_global_len;
	bool sparse;          /* 'S' or pax GNU.sparse.* */
	uint64_t real_size;   /* file size after expanding holes (== size unless sparse) */
	/* Offsets in the uncompressed tar stream. */
	uint64_t header_offset; /* first raw header block (an extension header if any) */
	uint64_t data_offset;   /* first data byte */
	uint64_t index;         /* 0-based entry number, counting 'g' entries */
};

enum tar_verdict {
	TAR_KEEP = 0, /* deliver data (on_data) */
	TAR_DROP,     /* skip the data silently */
};

struct tar_read_cbs {
	/* Once per entry after all its headers are parsed. raw is every header
	 * block of the entry exactly as read (extension headers with their
	 * padded payloads, then the main header block, then for old GNU
	 * sparse 'S' its extension blocks), raw_len a multiple of 512;
	 * borrowed for the call. For a 'g' entry raw is the global header
	 * and its padded payload, and e->size is 0 (no data follows).
	 * Set *verdict (initialised to TAR_KEEP). A non-RS_OK return stops
	 * the reader with that code and message. Required. */
	enum rs_code (*on_entry)(void *ctx, const struct tar_entry *e, const void *raw, size_t raw_len,
				 enum tar_verdict *verdict, struct rs_err *err);
	/* Data of a kept entry in order, in chunks of any size (borrowed for
	 * the call). The e->size data bytes come with padding == false, then
	 * the zero padding up to the next 512 boundary with padding == true,
	 * so data + padding chunks are exactly the archive bytes. Optional. */
	enum rs_code (*on_data)(void *ctx, const struct tar_entry *e, const void *buf, size_t len,
				bool padding, struct rs_err *err);
	/* After the last data (kept) or after the skip (dropped). Optional. */
	enum rs_code (*on_end_entry)(void *ctx, const struct tar_entry *e, enum tar_verdict verdict,
				     struct rs_err *err);
};

struct tar_read_stats {
	uint64_t entries;        /* entries reported (including 'g') */
	uint64_t bytes;          /* tar stream bytes consumed (including trailing) */
	uint64_t kept_bytes;     /* raw + data + padding bytes of kept entries */
	uint64_t dropped_bytes;  /* the same for dropped entries */
	uint64_t trailing_bytes; /* bytes after the end-of-archive blocks */
	unsigned end_blocks;     /* zero blocks seen at the end: 0, 1 or 2 */
};

/* A new tar reader sink calling cbs with ctx (both borrowed, must outlive
 * the sink). Feed it with stream_write() in any split; stream_finish()
 * checks for truncation. *out is a new sink (stream_free). RS_NOMEM. */
RS_MUST_CHECK enum rs_code tar_read_new(struct stream_sink **out, const struct tar_read_cbs *cbs,
					void *ctx, struct rs_err *err);

/* Counters so far (final after finish). s must be a tar reader (assert). */
void tar_read_stats(const struct stream_sink *s, struct tar_read_stats *out);

/* Bytes the reader would now pass over without looking at them: the rest
 * of a dropped entry's data and padding (0 otherwise, and after a
 * failure). A producer that can seek may skip them in its input and call
 * tar_read_skip() instead of writing them. s must be a tar reader. */
uint64_t tar_read_skippable(const struct stream_sink *s);

/* Advance over n <= tar_read_skippable(s) bytes as if they had been
 * written (on_end_entry runs when the entry ends). */
RS_MUST_CHECK enum rs_code tar_read_skip(struct stream_sink *s, uint64_t n, struct rs_err *err);

/* Normalise an archive path in place the way tar_entry.path is (strip "./",
 * collapse "//", drop "." components and a trailing '/'; "" becomes ".").
 * Returns false for absolute paths and paths with a ".." component (p is
 * then unspecified). Exposed for policy code that matches paths. */
bool tar_path_normalize(char *p);

/* A numeric header field of n bytes: octal (leading spaces, NUL or space
 * terminated) or base-256 (first byte 0x80, or 0xff for negative). False
 * when malformed or out of range. */
bool tar_parse_number(const uint8_t *field, size_t n, int64_t *out);

/* n decimal digits (n >= 1, nothing else) into *out; false on overflow. */
bool tar_parse_decimal(const char *s, size_t n, uint64_t *out);

enum tar_pax_step {
	TAR_PAX_RECORD = 0, /* *key / *val set (borrowed from p), *pos advanced */
	TAR_PAX_END,        /* no more records (the rest is NUL padding) */
	TAR_PAX_MALFORMED,  /* not "len key=value\n" at *pos */
	TAR_PAX_NO_KEY,     /* a record without "key=" */
};

/* The pax extended-header record of payload p (n bytes) at offset *pos
 * (start with 0). Values may be empty and may hold any bytes. */
enum tar_pax_step tar_pax_next(const char *p, size_t n, size_t *pos, const char **key, size_t *key_len,
			       const char **val, size_t *val_len);

#endif
