/* policy: the optimization policy as plain C structs, loaded from JSON and
 * validated key by key (file + key path + expectation, like config.c).
 *
 * A policy says how an image is rewritten: the squash mode, which base layers
 * to keep, the output compression and level, which strip rules run and the
 * custom globs with their keep-exceptions. The built-in strip rules are
 * defined here (policy_builtin_rules) so that the policy loader can refuse an
 * unknown rule name and docs/optimizer.md has one place to mirror.
 *
 * policy_canonical() serialises the effective policy with a fixed key order;
 * the optimizer hashes it to name the policy in annotations and cache keys.
 * The thread count is not part of a policy: it never changes the output.
 *
 * Only this directory includes jansson; no json_t leaves it. */
#ifndef RS_CONFIG_POLICY_H
#define RS_CONFIG_POLICY_H

#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum policy_squash {
	POLICY_SQUASH_ALL = 0, /* one output layer */
	POLICY_SQUASH_NONE,     /* one output layer per input layer */
	POLICY_SQUASH_KEEP_BASE /* base layers copied untouched, the rest squashed */
};

enum policy_compression {
	POLICY_COMPRESS_ZSTD = 0,
	POLICY_COMPRESS_GZIP,
	POLICY_COMPRESS_NONE,
};

/* One strip rule: a path is stripped when it or one of its ancestors matches
 * an include glob and neither it nor an ancestor matches a keep glob.
 * Globs are relative paths ('/'-separated, no leading '/'): '*' and '?' and
 * [...] match within one component, a "**" component matches zero or more
 * components. */
struct policy_rule {
	char *name;      /* "apt-lists", or the custom rule's name */
	char *summary;   /* one line for reports and docs ("" for custom rules) */
	bool enabled;
	char **include;  /* NULL-terminated */
	char **keep;     /* NULL-terminated (may be just NULL) */
	size_t include_count, keep_count;
};

struct policy {
	char *source; /* file it was loaded from, or "(defaults)" */
	enum policy_squash squash;
	char **base_layers; /* layer digests that form the base (keep-base); may be empty */
	size_t base_layer_count;
	bool dedupe;        /* drop identical rewrites (default true) */
	enum policy_compression compression;
	int level;          /* 0 = codec default (zstd 3, gzip 6) */
	struct policy_rule *rules; /* built-in rules first (fixed order), then custom ones */
	size_t rule_count;
};

/* The built-in rule names in their fixed order, NULL-terminated. */
extern const char *const policy_builtin_rule_names[];

/* Fill p with the default policy: squash all, dedupe on, zstd level 3,
 * every built-in rule enabled except "locales". The caller owns p and
 * releases it with policy_dispose(). RS_NOMEM. */
RS_MUST_CHECK enum rs_code policy_init_defaults(struct policy *p, struct rs_err *err);

/* Load and validate the policy JSON file at path into p (defaults for what
 * it does not set). On error p is left disposed (zeroed) and err names the
 * file, line/column or key path and what was expected. RS_CONFIG, RS_IO,
 * RS_TOO_LARGE, RS_NOMEM. */
RS_MUST_CHECK enum rs_code policy_load(struct policy *p, const char *path, struct rs_err *err);

/* Same from a buffer (len bytes, need not be NUL-terminated); name is used
 * in messages in place of the file name. */
RS_MUST_CHECK enum rs_code policy_load_buffer(struct policy *p, const char *name, const char *buf,
					      size_t len, struct rs_err *err);

/* The effective policy as compact JSON with a fixed key order (rules in
 * their order, every field written). *out is a new NUL-terminated string
 * (free()), *len_out its length. RS_NOMEM. */
RS_MUST_CHECK enum rs_code policy_canonical(char **out, size_t *len_out, const struct policy *p,
					    struct rs_err *err);

/* Stable names: "all" / "none" / "keep-base"; "zstd" / "gzip" / "none". */
const char *policy_squash_name(enum policy_squash s);
const char *policy_compression_name(enum policy_compression c);

/* Release everything p owns and zero it. Safe on a zeroed struct. */
void policy_dispose(struct policy *p);

#endif
