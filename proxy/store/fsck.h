/* fsck: the offline check of a data directory (`regslim fsck`). It rehashes
 * every object of the cache and of the push store, checks what refers to
 * objects (a manifest's media type beside it, tag maps, the references of
 * pushed manifests and pushed tags, optimization results and their owner
 * files) and reports leftovers (temp files, files that are no object). With
 * repair it removes what is wrong and can be fetched or made again (corrupt
 * or stray files, corrupt tag maps and results, temp files); what cannot be
 * (a pushed image that lost a blob) is reported and left for the operator.
 *
 * Run it while regslim is stopped: it removes files behind a running
 * process's back (the background scrub, scrub.h, is the online check).
 * It talks to the file system only; no HTTP, no upstream. */
#ifndef RS_PROXY_FSCK_H
#define RS_PROXY_FSCK_H

#include "errors.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct fsck_stats {
	uint64_t objects, bytes; /* objects rehashed and their bytes */
	uint64_t corrupt;        /* objects that do not hash to their name */
	uint64_t stray;          /* files under blobs/ or manifests/ that are no object */
	uint64_t broken;         /* documents that do not parse, missing media types */
	uint64_t dangling;       /* pushed references to objects that are gone */
	uint64_t temp;           /* temp files left by a crash */
	uint64_t repaired;       /* findings removed by repair */
	uint64_t left;           /* findings that remain */
};

/* Check data_dir; one line per finding on out ("corrupt blobs/sha256/..:
 * hashes to sha256:..., removed"). RS_NOT_FOUND when data_dir is not a
 * regslim data directory; RS_IO when it cannot be read. */
RS_MUST_CHECK enum rs_code fsck_run(const char *data_dir, bool repair, FILE *out, struct fsck_stats *st,
                                    struct rs_err *err);

#endif
