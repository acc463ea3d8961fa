/* strip: the policy's strip rules compiled for matching archive paths.
 *
 * A rule strips a path when the path or one of its ancestors matches one of
 * the rule's include globs and neither the path nor an ancestor matches one
 * of its keep globs. Matching is incremental and linear in a path's length:
 * the state of a path (two rule masks and one small automaton state per
 * glob) is derived from its parent's state and its last component, so a
 * component costs the same at any depth. Whether a stripped directory must
 * stay because something below it is kept is the caller's business
 * (squash.c).
 *
 * Globs ('/'-separated, relative): '*' any run of characters within a
 * component, '?' one character, [abc] / [a-z] / [!x] / [^x] a class, '\'
 * escapes; a "**" component matches zero or more whole components. A glob
 * has at most RS_LIMIT_GLOB_COMPONENTS components.
 *
 * No I/O; memory is a copy of the enabled rules' globs, and for
 * strip_states one entry per distinct state. */
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

/* Interned states of path prefixes, for a path table (squash.c): id 0 is
 * the root (the empty path); a node's state is its parent's plus its name.
 * s is borrowed and must outlive the table. RS_NOMEM. */
struct strip_states;
RS_MUST_CHECK enum rs_code strip_states_new(struct strip_states **out, const struct strip_rules *s,
					    struct rs_err *err);
void strip_states_free(struct strip_states *t);

/* The state id of parent's path plus the component name[0..len) (no '/').
 * RS_NOMEM, RS_TOO_LARGE past 2^31 distinct states. */
RS_MUST_CHECK enum rs_code strip_states_child(struct strip_states *t, uint32_t parent, const char *name,
					      size_t len, uint32_t *out, struct rs_err *err);

/* The rule that strips a path in state id (lowest index), or -1. */
int strip_states_rule(const struct strip_states *t, uint32_t id);

/* The rule that strips a path with these masks (lowest index), or -1. */
int strip_rule_of(uint64_t inc, uint64_t keep);

/* The last directory strip_path_rule() evaluated, so that entries of the
 * same directory only match their last component, and its scratch states.
 * Zero it before use; strip_cache_dispose() frees it. */
struct strip_cache {
	char *dir;
	size_t dir_len;
	uint64_t *st; /* the directory's state, then two scratch states */
};

/* The rule that strips path (a normalised archive path) by itself or by an
 * ancestor, as a path table walking it from the root would find
 * (strip_states_child on every prefix); -1 when none, -2 when out of
 * memory. cache may be NULL. */
int strip_path_rule(const struct strip_rules *s, const char *path, struct strip_cache *cache);
void strip_cache_dispose(struct strip_cache *c);

/* True when path matches glob (syntax above). Exposed for tests. */
bool strip_glob_match(const char *glob, const char *path);

#endif
