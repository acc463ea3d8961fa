/* pipeline_int: what the files of the pipeline share, and nothing outside
 * them includes. The pipeline (pipeline.h) is split along its seams:
 *   pipeline.c        the drive: documents in, keep-base, one image's passes
 *                     in order, config, manifest, index, report;
 *   pipeline_base.c   how many bottom layers keep-base keeps;
 *   pipeline_scan.c   pass 1: layers decoded, verified and recorded in
 *                     parallel, and the tar spool they leave for pass 2;
 *   pipeline_write.c  pass 2: the survivors written into output groups,
 *                     the hard-link spool, the encoder chain of a group;
 * with the hand-off stage (handoff.c) and the fast data hash (xxh64.c) as
 * modules of their own. */
#ifndef RS_OPTIMIZER_PIPELINE_INT_H
#define RS_OPTIMIZER_PIPELINE_INT_H

#include "codec.h"
#include "digest.h"
#include "errors.h"
#include "imagejson.h"
#include "layout.h"
#include "pipeline.h"
#include "report.h"
#include "squash.h"
#include "stream.h"
#include "strip.h"
#include "tar_read.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PUMP_BUF (256u * 1024)

/* One source layer of the image being optimized. */
struct layer_in {
	struct layout_range range;
	enum codec_kind kind;
	const char *media_type; /* borrowed from the manifest */
	char digest[DIGEST_STR_SIZE]; /* "" when unknown (docker-archive) */
	char diff_id[DIGEST_STR_SIZE];
	uint64_t uncompressed;
	/* The decompressed tar pass 1 spooled (an unlinked file in the staging
	 * directory), or -1: pass 2 decodes the blob again. Owned by the image's
	 * drive, which closes it on every path. */
	int tar_fd;
	/* Entries whose data the spool left out (see "tar spool" in
	 * pipeline_scan.c): pairs of entry index and header offset. Owned by
	 * the image's drive. */
	uint64_t *holes;
	size_t nholes, holes_cap;
};

/* The hard-link spool of one image (pipeline_write.c): the metadata and data
 * of entries squash.c may need again as the source of a materialized link. */
struct spool_slot {
	bool filled;
	struct tar_entry meta;
	char *strs[5];
	struct tar_xattr *x;
	uint8_t *raw; /* sparse sources: the raw headers (their sparse map) */
	size_t raw_len;
	uint64_t off;
};

struct spool {
	int fd;
	uint64_t end;
	struct spool_slot *slots;
	uint32_t n;
};

/* One run of the pipeline (one pipeline_run call). */
struct run {
	const struct pipeline_opts *o;
	struct report *rep;
	struct layout_src *src;
	struct layout_writer *w;
	struct strip_rules *strip;
	char policy_digest[DIGEST_STR_SIZE];
	char *buf;  /* PUMP_BUF: compressed input of pass 2 */
	char *tbuf; /* PUMP_BUF: tar spool input of pass 2 */
	char *mbuf; /* PUMP_BUF: hard-link spool reads (the decoder and the tar
		     * reader still point into the input buffer meanwhile) */
	bool spool_tar;     /* pass 1 spools decompressed tars (REGSLIM_TAR_SPOOL) */
	uint64_t spool_max; /* their byte budget per image; 0: half the free space */
	uint64_t done, total;
	size_t image, image_count;
	const char *phase;
	size_t layer, layer_count;
	/* results by source manifest digest, for indexes naming one twice */
	struct done_image {
		char src[DIGEST_STR_SIZE];
		struct imagejson_descriptor out;
	} *dones;
	size_t done_count;
};

/* ---- pipeline.c: shared by the passes ---- */

/* Report progress to the caller's callback, if any. */
void pipeline_progress_report(struct run *r);

/* RS_TIMEOUT when o's run was cancelled or ran past its deadline. Any
 * thread; called between reads. */
RS_MUST_CHECK enum rs_code pipeline_check_stop(const struct pipeline_opts *o, struct rs_err *err);

/* Stream a file range into head through buf (PUMP_BUF bytes), checking o's
 * stop conditions between reads. counter, when not NULL, is advanced as
 * bytes go (shared with the progress display). Any thread. RS_IO,
 * RS_BAD_INPUT (the file is short), RS_TIMEOUT, or head's code. */
RS_MUST_CHECK enum rs_code pipeline_pump_buf(const struct pipeline_opts *o, const struct layout_range *rg,
					     struct stream_sink *head, char *buf, _Atomic uint64_t *counter,
					     struct rs_err *err);

/* pipeline_pump_buf from the driving thread through r->buf, with progress. */
RS_MUST_CHECK enum rs_code pipeline_pump(struct run *r, const struct layout_range *rg, struct stream_sink *head,
					 struct rs_err *err);

/* Prefix err's message with "layer I/N (digest): ". */
void pipeline_layer_prefix(struct rs_err *err, size_t i, size_t n, const struct layer_in *l);

/* ---- pipeline_base.c: keep-base ---- */

/* How many bottom layers of the image keep-base keeps as they are: 0 unless
 * the policy's squash is keep-base; the leading layers named in the policy's
 * base_layers (by digest or diff_id); without base_layers, the longest run of
 * bottom layers shared with the base named by the manifest's
 * org.opencontainers.image.base.digest annotation or with another image of
 * the source (not one of siblings, this image's own index entries; for a
 * docker archive, by diff_id). self: the manifest digest (OCI layouts) or
 * the config digest (archives). */
size_t pipeline_base_layers(struct run *r, const struct imagejson_manifest *m, const struct imagejson_config *cfg,
			    const struct layer_in *layers, size_t n, const char *self, char *const *siblings,
			    size_t nsib);

/* ---- pipeline_scan.c: pass 1 ---- */

/* Pass 1 over the n layers (decode, verify both digests, record every entry
 * in plan, in layer order); layers from spool_from on are spooled when
 * r->spool_tar. The first failing layer, in layer order, names the error. */
RS_MUST_CHECK enum rs_code pipeline_scan(struct run *r, struct squash_plan *plan, struct layer_in *layers, size_t n,
					 size_t spool_from, struct rs_err *err);

/* ---- pipeline_write.c: pass 2 ---- */

/* The output of one group: a temp blob file behind the encoder chain. */
struct group_out {
	int fd;
	char tmp[4200];
	struct stream_sink *fds, *dsc, *enc, *dsu; /* dsu: where the group's tar goes */
};

/* The codec of the policy's output layers. */
enum codec_kind pipeline_out_kind(const struct policy *p);

/* Open a group's temp file and encoder (the policy's compression). */
RS_MUST_CHECK enum rs_code pipeline_group_open(struct run *r, struct group_out *g, struct rs_err *err);
/* End the group's tar, commit its blob, fill ol's digests and sizes. */
RS_MUST_CHECK enum rs_code pipeline_group_close(struct run *r, struct group_out *g, struct report_out_layer *ol,
						struct rs_err *err);
/* Drop the group's stages and temp file (after a failure). */
void pipeline_group_abandon(struct group_out *g);

/* Pass 2 of layer i of n into out (a group's tar stream, or NULL: only fill
 * the hard-link spool sp). Closes the layer's tar spool. */
RS_MUST_CHECK enum rs_code pipeline_write_layer(struct run *r, struct squash_plan *plan, size_t i, size_t n,
						struct layer_in *l, struct stream_sink *out, struct spool *sp,
						struct rs_err *err);

/* An empty hard-link spool in sp (fd -1), then, when the plan needs one, an
 * anonymous file in the staging directory and its slots. */
RS_MUST_CHECK enum rs_code pipeline_spool_open(struct run *r, struct squash_plan *plan, struct spool *sp,
					       struct rs_err *err);
void pipeline_spool_dispose(struct spool *s);

/* Every entry whose data a layer's tar spool left out must be dropped and
 * not needed as a hard-link source; a layer where one is not is decoded
 * again in pass 2 (its tar spool is closed here). */
RS_MUST_CHECK enum rs_code pipeline_holes_check(struct squash_plan *plan, struct layer_in *layers, size_t n,
						struct rs_err *err);

#endif
