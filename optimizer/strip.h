/* strip: the policy's strip rules compiled for matching archive paths.
 *
 * A rule strips a path when the path or one of its ancestors matches one of
 * the rule's include globs and neither the path nor an ancestor matches one
 * of its keep globs. Matching is incremental: callers walk a path from the
 * root and pass each component's parent state (two bit masks, one bit per
 * rule) to strip_eval(), so every path is matched once however deep it is.
 * Whether a stripped directory must stay because something below it is kept
 * is the caller's business (squash.c).
 *
 * Globs ('/'-separated, relative): '*' any run of characters within a
 * component, '?' one character, [abc] / [a-z] / [!x] / [^x] a class, '\'
 * escapes; a "**" component matches zero or more whole components.
 *
 * No I/O; memory is a copy of the enabled rules' globs. */
#ifndef RS_OPTIMIZER_STRIP_H
#define RS_OPTIMIZER_STRIP_H

#include "errors.h"
#include "policy.h"

#include <stdbool.h>
#include <stdint.h>

struct strip_rules;

/* Compile the rules of p (borrowed for the call; globs are copied). At most
 * 64 rules (RS_LIMIT_POLICY_RULES_MAX). *out is new (strip_free). RS_NOMEM,
 * RS_TOO_LARGE. */
RS_MUST_CHECK enum rs_code strip_new(struct strip_rules **out, const struct policy *p,
				     struct rs_err *err);
void strip_free(struct strip_rules *s);

/* Number of rules (enabled or not) and the name of rule i (borrowed). */
size_t strip_rule_count(const struct strip_rules *s);
const char *strip_rule_name(const struct strip_rules *s, size_t i);

/* Masks of path given its parent's masks (0, 0 for a top-level path).
 * Bit i of *inc_out: rule i's include matched the path or an ancestor; of
 * *keep_out: rule i's keep did. Only enabled rules set bits. */
void strip_eval(const struct strip_rules *s, const char *path, uint64_t parent_inc,
		uint64_t parent_keep, uint64_t *inc_out, uint64_t *keep_out);

/* The rule that strips a path with these masks (lowest index), or -1. */
int strip_rule_of(uint64_t inc, uint64_t keep);

/* The last directory strip_path_rule() evaluated, so that entries of the
 * same directory only match their last component. Zero it before use;
 * strip_cache_dispose() frees it. */
struct strip_cache {
	char *dir;
	size_t dir_len;
	uint64_t inc, keep;
};

/* The rule that strips path (a normalised archive path) by itself or by an
 * ancestor, as a path table walking it from the root would find
 * (strip_eval on every prefix, then strip_rule_of); -1 when none, -2 when
 * out of memory (a path of 1 KiB or more needs a copy). cache may be NULL. */
int strip_path_rule(const struct strip_rules *s, const char *path, struct strip_cache *cache);
void strip_cache_dispose(struct strip_cache *c);

/* True when path matches glob (syntax above). Exposed for tests. */
bool strip_glob_match(const char *glob, const char *path);

#endif
