/* squash: the plan that decides, for every tar entry of every layer, what
 * the optimized image keeps. It applies OCI layer semantics (image-spec
 * layer.md "Whiteouts": later layers win, ".wh.<name>" deletes <name> and
 * everything below it in LOWER layers, ".wh..wh..opq" hides the lower
 * layers' children of its directory; both never affect entries of their own
 * layer), squash groups, strip rules, identical-rewrite dedupe and hard-link
 * repair. It never sees layer bytes: pass 1 of the pipeline feeds every
 * entry's metadata (squash_add), squash_finish() decides, and pass 2 asks
 * squash_decide() for each entry in the same order and copies or drops it.
 *
 * Output groups: squash "all" puts every layer in group 0; "none" gives each
 * layer its own group; "keep-base" gives each base layer its own group
 * (copied untouched by the pipeline) and squashes the rest into one group.
 * Within a group an entry survives when no later entry of the same group
 * overwrote or deleted it; whiteouts survive only in groups above 0 (they
 * must still hide what lower groups hold).
 *
 * Hard links: a link whose target entry does not survive is repointed to
 * the surviving member of its inode group (SQUASH_RELINK) or, when none
 * survives, the first surviving link becomes a regular file carrying the
 * source's data and metadata (SQUASH_MATERIALIZE, data spooled in pass 2
 * from the source entry marked spool). The rest link to it.
 *
 * Memory: one record per entry and per path component, capped at
 * max_entries (RS_LIMIT_PATH_TABLE_ENTRIES) entries + nodes together. */
#ifndef RS_OPTIMIZER_SQUASH_H
#define RS_OPTIMIZER_SQUASH_H

#include "errors.h"
#include "policy.h"
#include "strip.h"
#include "tar_read.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length of the identity the caller computes per entry (see
 * squash_identity_feed_meta): the first 32 hex digits of a SHA-256. */
#define SQUASH_IDENT_LEN 32

struct squash_plan;
struct digest_ctx;

struct squash_opts {
	enum policy_squash mode;
	size_t layer_count;
	size_t base_count;   /* keep-base: the bottom base_count layers are base */
	bool dedupe;
	const struct strip_rules *strip; /* borrowed, may be NULL (no stripping) */
	uint64_t max_entries; /* 0: RS_LIMIT_PATH_TABLE_ENTRIES */
};

enum squash_action {
	SQUASH_EMIT = 0,     /* copy the entry byte-for-byte */
	SQUASH_DROP,         /* leave it out */
	SQUASH_RELINK,       /* hard link: write a new header linking to link_path */
	SQUASH_MATERIALIZE,  /* hard link: write a regular entry from spool source_spool */
};

enum squash_reason {
	SQUASH_KEPT = 0,
	SQUASH_BY_OVERLAY,  /* overwritten or deleted by a later entry of the same group */
	SQUASH_BY_WHITEOUT, /* a whiteout that has nothing below it to hide */
	SQUASH_BY_STRIP,
	SQUASH_BY_DEDUPE,
	SQUASH_BY_META,     /* AUFS ".wh..wh.*" bookkeeping entries; pax global
			     * headers of a group that merges layers */
};

struct squash_decision {
	enum squash_action action;
	enum squash_reason reason;
	int rule;              /* SQUASH_BY_STRIP: the rule index */
	size_t group;          /* output group of the entry's layer */
	/* The group merges layers: its pax global headers are dropped
	 * (SQUASH_BY_META) and an emitted entry must carry the records of the
	 * one in effect for it itself (tar_write_folded). */
	bool fold_global;
	bool spool;            /* pass 2 must keep this entry's metadata and data as spool_id */
	uint32_t spool_id;
	uint32_t source_spool; /* SQUASH_MATERIALIZE: which spool to write */
	const char *link_path; /* SQUASH_RELINK: borrowed until the next squash_decide */
};

/* A new empty plan. *out is new (squash_free). RS_NOMEM. */
RS_MUST_CHECK enum rs_code squash_new(struct squash_plan **out, const struct squash_opts *opts,
				      struct rs_err *err);
void squash_free(struct squash_plan *p);

/* Feed the metadata identity of e into d: type, mode, uid, gid, uname, gname,
 * mtime (pax string when present), size, link path, device numbers, xattrs.
 * The caller then feeds the data bytes and takes the first SQUASH_IDENT_LEN
 * hex digits of the digest as the entry's identity. */
void squash_identity_feed_meta(struct digest_ctx *d, const struct tar_entry *e);

/* Pass 1: the entries of layer (0 = bottom, in order, each layer once and
 * every entry of it in archive order). ident is SQUASH_IDENT_LEN hex chars.
 * RS_BAD_INPUT for a hard link whose target is not in the image (naming the
 * entry, layer and offset), RS_TOO_LARGE when the path table is full. */
RS_MUST_CHECK enum rs_code squash_add(struct squash_plan *p, size_t layer, const struct tar_entry *e,
				      const char ident[SQUASH_IDENT_LEN], struct rs_err *err);

/* After the last squash_add: decide every entry. RS_NOMEM. */
RS_MUST_CHECK enum rs_code squash_finish(struct squash_plan *p, struct rs_err *err);

/* Pass 2: the decision for the ordinal-th entry of layer. header_offset must
 * be the same as in pass 1 (RS_BAD_INPUT "layer changed between passes"). */
RS_MUST_CHECK enum rs_code squash_decide(struct squash_plan *p, size_t layer, uint64_t ordinal,
					 uint64_t header_offset, struct squash_decision *out,
					 struct rs_err *err);

/* Entries pass 1 saw in layer. */
uint64_t squash_layer_entries(const struct squash_plan *p, size_t layer);

size_t squash_group_count(const struct squash_plan *p);
size_t squash_layer_group(const struct squash_plan *p, size_t layer);
/* True when group g is a base layer copied untouched. */
bool squash_group_is_base(const struct squash_plan *p, size_t g);
/* True when some entry of layer must be spooled in pass 2 (matters for base
 * layers, which pass 2 otherwise does not read). */
bool squash_layer_needs_spool(const struct squash_plan *p, size_t layer);
/* Number of spool slots pass 2 fills. */
uint32_t squash_spool_count(const struct squash_plan *p);

struct squash_layer_stats {
	uint64_t entries;
	uint64_t kept_entries;
	uint64_t stripped_entries, stripped_bytes;
	uint64_t overlay_entries, overlay_bytes; /* dropped as overwritten / deleted */
	uint64_t dup_entries, dup_bytes;
	uint64_t whiteouts, whiteouts_applied;
};

struct squash_stats {
	uint64_t entries;
	uint64_t whiteouts_applied;
	uint64_t dup_entries, dup_bytes;
	uint64_t links_relinked, links_materialized;
	uint64_t final_paths, stripped_paths;
	/* dive's efficiency: sum over paths of the smallest size seen divided
	 * by the sum of all sizes seen across layers (1.0 when empty). */
	double efficiency_in, efficiency_out;
	uint64_t wasted_in, wasted_out; /* sum of sizes seen minus the smallest per path */
	const uint64_t *rule_bytes;   /* per strip rule; borrowed from the plan */
	const uint64_t *rule_entries;
	size_t rule_count;
};

void squash_layer_stats(const struct squash_plan *p, size_t layer, struct squash_layer_stats *out);
void squash_stats(const struct squash_plan *p, struct squash_stats *out);

/* Call cb for every path of the input's final tree that the output lacks
 * because of a strip rule, in a fixed order; path is borrowed for the call.
 * Stops at the first non-RS_OK return and returns it. */
typedef enum rs_code (*squash_path_fn)(void *ctx, const char *path, const char *rule,
				       struct rs_err *err);
RS_MUST_CHECK enum rs_code squash_each_stripped(struct squash_plan *p, squash_path_fn cb, void *ctx,
						struct rs_err *err);

#endif
