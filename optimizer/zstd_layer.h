/* zstd_layer: the zstd encoder stage the optimizer writes layers with. It is
 * codec.h's zstd encoder (multithreaded mode always, checksum on, no content
 * size, no dictionary id, window 2^RS_LIMIT_ZSTD_WINDOW_LOG) plus a fixed job
 * size (RS_LIMIT_ZSTD_JOB_BYTES): libzstd's default job is 4 windows (32 MiB
 * with an 8 MiB window), and each worker holds its input and output, which
 * took peak RSS past 200 MiB with 2 workers; 8 MiB jobs keep it near 70 MiB
 * for 0.1% more output. The output depends only on the input bytes, the
 * level and these fixed parameters: never on the worker count or the split.
 *
 * TODO(optimg): fold the job size into codec_encode_opts (optimizer/compress.c)
 * and drop this file. #3
 *
 * Borrows next (stream.h chain rules). */
#ifndef RS_OPTIMIZER_ZSTD_LAYER_H
#define RS_OPTIMIZER_ZSTD_LAYER_H

#include "errors.h"
#include "stream.h"

/* A new zstd encoder stage: level 1..19 (0 means 3), threads >= 1 workers
 * (0 means 1). RS_BAD_INPUT for a bad level, RS_NOMEM, RS_IO when libzstd
 * refuses a parameter. *out is a new sink (stream_free). */
RS_MUST_CHECK enum rs_code zstd_layer_encoder_new(struct stream_sink **out, int level, unsigned threads,
						  struct stream_sink *next, struct rs_err *err);

#endif
