/* codec: streaming layer decoders (gzip, zstd, plain) and encoders (zstd,
 * gzip, none) as stream stages (see stream.h).
 *
 * Decoders take untrusted compressed bytes and push the decompressed stream
 * to `next`. They check the magic bytes against the kind the media type
 * announced, cap the zstd window, and cap the expansion ratio (zip bombs).
 * gzip may have several members (as pigz and `cat a.gz b.gz` write). Every
 * error names the compressed offset. Inflate uses isa-l when the build has
 * it (REGSLIM_HAVE_ISAL) and it is faster (bench/codec.sh), zlib otherwise;
 * both give the same bytes and the same error classes.
 *
 * Encoders are deterministic: the same input bytes give the same output
 * bytes whatever the input split and whatever the thread count. zstd always
 * runs in the multithreaded (nbWorkers >= 1) mode for that reason, with
 * checksum on, no dictionary, content size not written, window at most
 * 2^RS_LIMIT_ZSTD_WINDOW_LOG. gzip writes a fixed header (mtime 0, no name,
 * OS byte 255 "unknown", as Go's compress/gzip does).
 *
 * Stages borrow `next` and never free it; see stream.h for the chain rules.
 * No tar knowledge here. */
#ifndef RS_OPTIMIZER_CODEC_H
#define RS_OPTIMIZER_CODEC_H

#include "errors.h"
#include "stream.h"

#include <stdint.h>

enum codec_kind {
	CODEC_NONE = 0, /* plain tar */
	CODEC_GZIP,
	CODEC_ZSTD,
};

/* Inflate implementation for gzip decoding. */
enum codec_inflate_impl {
	CODEC_INFLATE_DEFAULT = 0, /* the faster available one (isa-l if built with it) */
	CODEC_INFLATE_ZLIB,
	CODEC_INFLATE_ISAL, /* RS_UNSUPPORTED at decoder creation when not built in */
};

/* Stable lower-case name: "none", "gzip", "zstd". */
const char *codec_kind_name(enum codec_kind kind);

/* Map a layer media type to its compression:
 *   ...tar / ...tar (docker "diff.tar")            -> CODEC_NONE
 *   ...tar+gzip, ...tar.gzip, docker rootfs.diff.tar.gzip,
 *   application/vnd.docker.image.rootfs.foreign.diff.tar.gzip -> CODEC_GZIP
 *   ...tar+zstd, docker ...tar.zstd                  -> CODEC_ZSTD
 * Anything else (and NULL) is RS_UNSUPPORTED naming the media type. */
RS_MUST_CHECK enum rs_code codec_kind_from_media_type(enum codec_kind *out, const char *media_type,
						      struct rs_err *err);

/* Guess the kind from the first bytes (gzip 1f 8b, zstd 28 b5 2f fd, anything
 * else CODEC_NONE). len may be short; fewer than 4 bytes give CODEC_NONE
 * unless they already match a gzip magic. */
enum codec_kind codec_kind_sniff(const void *buf, size_t len);

/* Decoder options; a zeroed struct (or NULL) means the defaults. */
struct codec_decode_opts {
	/* Refuse when decompressed > ratio * compressed, once decompressed
	 * passes min_bytes. 0: RS_LIMIT_EXPANSION_RATIO / RS_LIMIT_EXPANSION_MIN_BYTES. */
	uint64_t max_ratio;
	uint64_t ratio_min_bytes;
	/* zstd frames with a larger window are refused. 0: RS_LIMIT_ZSTD_DECODE_WINDOW_LOG. */
	unsigned zstd_window_log_max;
	enum codec_inflate_impl inflate; /* gzip only */
};

/* A new decoder stage for kind pushing into next (borrowed).
 *   CODEC_GZIP: the input must start with 1f 8b; CODEC_ZSTD with 28 b5 2f fd;
 *   otherwise the first write fails RS_BAD_INPUT
 *   "layer announced as gzip but starts with 28 b5 2f fd (zstd)".
 *   CODEC_NONE passes bytes through unchanged, but refuses input that starts
 *   with a gzip or zstd magic the same way (a mislabelled compressed layer
 *   would otherwise be parsed as tar).
 * Errors from write/finish (offsets are compressed byte offsets; isa-l
 * reads up to 8 bytes ahead, so its offsets can be a few bytes late):
 *   RS_BAD_INPUT "gzip: invalid stored block lengths at compressed offset N"
 *   (zlib's reason; isa-l's are "invalid deflate block", "invalid deflate
 *   symbol", "invalid distance too far back", "invalid gzip header",
 *   "unknown compression method", "incorrect data check"),
 *   "zstd: <libzstd reason> at compressed offset N",
 *   "gzip: truncated stream: ended after N compressed bytes" (at finish;
 *   "...: no data" for an empty stream; the same for zstd),
 *   "gzip: trailing garbage (byte 0x78) after the member ending at compressed offset M",
 *   RS_TOO_LARGE "zstd: frame at compressed offset N needs a window above 2^27 bytes
 *   (RS_LIMIT_ZSTD_DECODE_WINDOW_LOG)",
 *   RS_TOO_LARGE "gzip: expands more than 1000x (X bytes from Y) at compressed offset Y,
 *   limit RS_LIMIT_EXPANSION_RATIO", RS_NOMEM, and anything from next.
 * An empty input (0 bytes) is accepted for CODEC_NONE and refused
 * (truncated) for gzip and zstd. *out is a new sink (stream_free). */
RS_MUST_CHECK enum rs_code codec_decoder_new(struct stream_sink **out, enum codec_kind kind,
					     const struct codec_decode_opts *opts,
					     struct stream_sink *next, struct rs_err *err);

/* Compressed bytes consumed and decompressed bytes produced so far by a
 * decoder made by codec_decoder_new (assert on another sink). Either
 * pointer may be NULL. */
void codec_decoder_counts(const struct stream_sink *s, uint64_t *in_out, uint64_t *out_out);

/* The inflate implementation CODEC_INFLATE_DEFAULT resolves to. */
enum codec_inflate_impl codec_inflate_default(void);

struct codec_encode_opts {
	enum codec_kind kind;
	/* zstd: 1..19 (ZSTD_maxCLevel() accepted); gzip: 1..9 (libdeflate's
	 * levels); 0 means the default (zstd 3, gzip 3). Out of range:
	 * RS_BAD_INPUT naming it. */
	int level;
	/* zstd worker threads, gzip compression threads (pgzip.h); 0 means 1.
	 * Output bytes do not depend on it. */
	unsigned threads;
	/* zstd window log, 0 means RS_LIMIT_ZSTD_WINDOW_LOG (23, 8 MiB);
	 * larger than that is RS_BAD_INPUT. */
	unsigned zstd_window_log;
	/* zstd job size in bytes (ZSTD_c_jobSize); 0 means libzstd's default
	 * (4 windows). Each worker holds a job's input and output, so this bounds
	 * memory: the optimizer uses RS_LIMIT_ZSTD_JOB_BYTES. Output depends on
	 * it, never on the thread count. */
	size_t zstd_job_bytes;
};

/* A new encoder stage pushing into next (borrowed). CODEC_NONE is a pass
 * through. Errors: RS_BAD_INPUT for bad options, RS_NOMEM, RS_IO if zstd
 * cannot start its threads, and anything from next. *out is a new sink
 * (stream_free). */
RS_MUST_CHECK enum rs_code codec_encoder_new(struct stream_sink **out,
					     const struct codec_encode_opts *opts,
					     struct stream_sink *next, struct rs_err *err);

#endif
