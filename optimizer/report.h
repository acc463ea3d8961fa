/* report: what an optimization changed, for people (a table) and machines
 * (JSON): sizes before and after (compressed and uncompressed), bytes and
 * entries removed per strip rule and per layer, whiteouts applied,
 * duplicates dropped, hard links repaired, dive's efficiency score of input
 * and output, the digests written, and the list of stripped paths (JSON).
 *
 * The pipeline fills it; cmd_optimize prints it. The report owns every
 * string it holds; report_dispose() releases them. Printing writes to a
 * FILE* given by the caller and never fails loudly (stdout errors are the
 * caller's to check with ferror). JSON is written by hand here with full
 * string escaping so that no JSON library is needed in optimizer/. */
#ifndef RS_OPTIMIZER_REPORT_H
#define RS_OPTIMIZER_REPORT_H

#include "digest.h"
#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct report_rule {
	char *name;
	uint64_t bytes, entries;
};

struct report_layer { /* one input layer */
	char digest[DIGEST_STR_SIZE];
	char diff_id[DIGEST_STR_SIZE];
	char *media_type;
	uint64_t size, uncompressed;
	uint64_t entries, kept_entries;
	uint64_t stripped_entries, stripped_bytes;
	uint64_t overlay_entries, overlay_bytes;
	uint64_t dup_entries, dup_bytes;
	uint64_t whiteouts, whiteouts_applied;
	size_t out_layer; /* index of the output layer it went into */
	bool base;        /* copied untouched (keep-base) */
};

struct report_out_layer {
	char digest[DIGEST_STR_SIZE];
	char diff_id[DIGEST_STR_SIZE];
	char *media_type;
	uint64_t size, uncompressed;
	bool copied;
};

struct report_image {
	char *platform; /* "linux/arm64/v8", or NULL */
	char source_digest[DIGEST_STR_SIZE];
	char digest[DIGEST_STR_SIZE];
	uint64_t in_size, in_uncompressed, out_size, out_uncompressed;
	struct report_layer *layers;
	size_t layer_count;
	struct report_out_layer *out_layers;
	size_t out_layer_count;
	struct report_rule *rules;
	size_t rule_count;
	uint64_t entries, final_paths;
	uint64_t whiteouts_applied, dup_entries, dup_bytes;
	uint64_t links_relinked, links_materialized;
	double efficiency_in, efficiency_out;
	uint64_t wasted_in, wasted_out;
	char **stripped_paths; /* with stripped_rules[i] naming the rule */
	char **stripped_rules;
	size_t stripped_count, stripped_cap;
	uint64_t stripped_total;  /* paths stripped, also those past the list's cap */
	bool stripped_truncated;  /* the list stopped at RS_LIMIT_REPORT_PATHS */
};

struct report {
	char *source, *dest, *tag;
	char policy_digest[DIGEST_STR_SIZE];
	const char *squash, *compression; /* static names */
	int level;
	char digest[DIGEST_STR_SIZE]; /* what DST's tag points to */
	char *media_type;
	struct report_image *images;
	size_t image_count;
};

/* Zero rep. */
void report_init(struct report *rep);
/* Release everything rep owns and zero it. */
void report_dispose(struct report *rep);

/* Append a zeroed image and return it (borrowed from rep). NULL on
 * allocation failure. */
struct report_image *report_add_image(struct report *rep);

/* Append a stripped path (copied). Past RS_LIMIT_REPORT_PATHS paths only
 * the count grows and stripped_truncated is set. RS_NOMEM. */
RS_MUST_CHECK enum rs_code report_add_stripped(struct report_image *img, const char *path,
					       const char *rule, struct rs_err *err);

/* Copy s into a new string (free()); NULL for NULL and on allocation failure. */
char *report_strdup(const char *s);

/* Totals over all images (an index counts each platform). */
void report_totals(const struct report *rep, uint64_t *in_size, uint64_t *in_unc, uint64_t *out_size,
		   uint64_t *out_unc);

/* Human table: one block per image with per-layer and per-rule lines. */
void report_print_text(const struct report *rep, FILE *out);
/* JSON document (see docs/optimizer.md for the fields). */
void report_print_json(const struct report *rep, FILE *out);

#endif
