/* pipeline: optimizes an image (or every platform of an index) from a
 * source layout to a destination layout: the driver behind `regslim
 * optimize` and, later, the optimized pull path.
 *
 * For each image it runs two passes over the layer streams. Pass 1 decodes
 * every layer (verifying the compressed digest against the manifest and the
 * uncompressed digest against the config's diff_id), parses the tar headers
 * and hashes each entry's metadata and data, and feeds squash.c, which
 * decides every entry (layers in parallel, up to opts.threads; with two or
 * more threads each layer's decoded bytes are hashed and parsed on a thread
 * of their own, through a fixed ring of buffers). Pass 1 also spools each
 * layer's verified decompressed tar to an unlinked file in the destination's
 * staging directory (written at the bytes' offsets as they are parsed; with
 * squash all the data of stripped regular files is left out as holes, and
 * pass 2 seeks over the data it drops), so pass 2 reads the
 * tar back instead of decoding the blob again; each spool is closed (and
 * its space freed) as soon as pass 2 has read it, and on every error path.
 * The spool is only a cache: when it cannot be written (ENOSPC, EIO), when
 * the image's budget (half the filesystem's free space at its first spool,
 * or REGSLIM_TAR_SPOOL=N bytes) is used up, past RS_LIMIT_TAR_SPOOL_LAYERS
 * layers, or with REGSLIM_TAR_SPOOL=0, that layer is decoded again in pass
 * 2. Either way the output is the same bytes. Pass 2 writes the survivors
 * byte-for-byte, lowest layer first, into one output tar per output group,
 * through the encoder (zstd / gzip / none) into a blob file.
 * Memory does not depend on layer size: fixed stage buffers, the path table
 * (capped) and spool files on disk (decompressed tars, hard-link data that
 * must be moved). Disk: up to the layers' uncompressed size in the staging
 * directory while the image is optimized.
 *
 * Output: OCI manifests (and an OCI index for an index source) with
 * annotations io.regslim.source.digest, io.regslim.policy.digest and
 * io.regslim.optimizer.version; the config with rewritten rootfs.diff_ids
 * and history. Everything is a function of the input and the policy only:
 * no clocks, no host names, thread count irrelevant.
 *
 * Errors name the image, the layer (index and digest) and the offset the
 * inner stage reported; DST is untouched on any error (layout.h). */
#ifndef RS_OPTIMIZER_PIPELINE_H
#define RS_OPTIMIZER_PIPELINE_H

#include "codec.h"
#include "errors.h"
#include "policy.h"
#include "report.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pipeline_progress {
	const char *phase;   /* "scan" (pass 1), "write" (pass 2), "copy" */
	size_t image, image_count; /* 0-based image */
	size_t layer, layer_count; /* 0-based layer of that image */
	uint64_t done, total;      /* compressed bytes over both passes of all images */
};

typedef void (*pipeline_progress_fn)(void *ctx, const struct pipeline_progress *p);

struct pipeline_opts {
	const char *src;              /* "oci:DIR[:TAG]" or "docker-archive:FILE" */
	const char *dst;              /* "oci:DIR[:TAG]" */
	const struct policy *policy;  /* borrowed */
	unsigned threads;             /* encoder worker threads; 0 means 1 */
	enum codec_inflate_impl inflate;
	pipeline_progress_fn progress; /* may be NULL; called often, from this thread */
	void *progress_ctx;
	/* Stop early, between two reads of at most 256 KiB: when *cancel
	 * becomes true (may be NULL; another thread sets it, e.g. at shutdown),
	 * or once CLOCK_MONOTONIC passes deadline_ms (0: none). pipeline_run
	 * then fails with RS_TIMEOUT and DST is untouched. */
	const _Atomic bool *cancel;
	uint64_t deadline_ms;
};

/* The SHA-256 digest of the policy's canonical form into out. RS_NOMEM. */
RS_MUST_CHECK enum rs_code pipeline_policy_digest(char out[DIGEST_STR_SIZE], const struct policy *p,
						  struct rs_err *err);

/* Milliseconds of CLOCK_MONOTONIC, for pipeline_opts.deadline_ms. */
uint64_t pipeline_now_ms(void);

/* Run the optimization described by o and fill rep (report_init'ed by the
 * caller, report_dispose'd by the caller also on error). */
RS_MUST_CHECK enum rs_code pipeline_run(struct report *rep, const struct pipeline_opts *o,
					struct rs_err *err);

#endif
