/* gate_policy: the push gate's policies ("push.policies" in the regslim
 * configuration) as plain C structs, loaded and validated key by key like
 * the rest of config.c (file + key path + expectation; unknown keys are
 * refused), and the two facts of an image config the gate needs (the user
 * and the labels), read here because only config/ includes jansson.
 *
 * A policy matches repositories by glob (fnmatch(3) without FNM_PATHNAME,
 * first match wins), says what happens to an accepted push (mode) and lists
 * rules, each with action "deny" or "warn". The evaluation is proxy/gate.c;
 * docs/policy.md documents every key. */
#ifndef RS_CONFIG_GATE_POLICY_H
#define RS_CONFIG_GATE_POLICY_H

#include "errors.h"
#include "imagejson.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_t;

enum gate_action {
	GATE_OFF = 0, /* rule not configured */
	GATE_WARN,
	GATE_DENY,
};

enum gate_mode {
	GATE_MODE_OPTIMIZE_AND_PUSH = 0, /* the upstream tag points at the optimized image */
	GATE_MODE_PUSH_BOTH,             /* original at the tag, optimized at tag + suffix */
	GATE_MODE_CHECK_ONLY,            /* policy only; the original is pushed unchanged */
};

struct gate_limit_rule {
	enum gate_action action;
	uint64_t limit;
};

struct gate_list_rule {
	enum gate_action action;
	char **items;
	size_t count;
};

/* One allowed base: the image's bottom layers must equal this chain. */
struct gate_base {
	char **layers; /* digests, bottom first */
	size_t count;
};

struct rs_gate_policy {
	char **repositories;
	size_t repository_count;
	enum gate_mode mode;
	char *optimized_tag_suffix; /* push-original-and-optimized; default "-slim" */
	char *optimizer_policy;     /* optimizer policy file (config/policy.h); NULL: defaults */
	struct gate_limit_rule max_compressed_bytes;   /* sum of layer sizes in the manifest */
	struct gate_limit_rule max_uncompressed_bytes; /* sum of decompressed layer sizes */
	struct gate_limit_rule max_layers;
	enum gate_action non_root;
	struct gate_list_rule required_labels;
	enum gate_action allowed_bases_action;
	struct gate_base *allowed_bases;
	size_t allowed_base_count;
	char **allowed_base_images; /* references "[host/]repo[:tag|@digest]", resolved by proxy/gate.c */
	size_t allowed_base_image_count;
	struct gate_list_rule forbidden_paths; /* globs, see strip.h: '*' within a component, "**" any */
	enum gate_action secrets;
	uint64_t secret_file_cap; /* bytes scanned per file; 0: the scanner's default */
	bool secret_scan_binaries; /* key-block detectors also inside ELF objects */
	char **secret_allow_paths; /* globs (strip.h syntax) of files not scanned */
	size_t secret_allow_path_count;
	bool enforce_on_pull;     /* also evaluate on tag pulls through the mirror (default upstream) */
};

/* Load the "push.policies" array v (a json_t; borrowed) into *out / *n
 * (new, gate_policies_free). file and path name the place in messages.
 * RS_CONFIG, RS_NOMEM. */
RS_MUST_CHECK enum rs_code gate_policies_load(struct rs_gate_policy **out, size_t *n, const char *file,
					      const char *path, const struct json_t *v, struct rs_err *err);

/* The policies as a JSON array (a new reference; NULL on allocation
 * failure) for config_print. */
struct json_t *gate_policies_to_json(const struct rs_gate_policy *p, size_t n);

void gate_policies_free(struct rs_gate_policy *p, size_t n);

/* The first policy whose glob matches repo, or NULL (borrowed from p). */
const struct rs_gate_policy *gate_policy_find(const struct rs_gate_policy *p, size_t n, const char *repo);

/* A base image reference "[host/]name[:tag][@sha256:<64 hex>]" split into
 * name (everything before the tag) and ref (the tag, "latest" when absent,
 * or the digest, which wins over a tag). False when ref is malformed or a
 * part does not fit (name: 256 bytes, ref: 136 bytes). */
bool gate_base_ref_split(const char *ref, char name[256], char tagref[136]);

/* The platform of an image config document: *os, *arch and *variant are
 * new strings ("" when absent). RS_BAD_INPUT, RS_NOMEM. */
RS_MUST_CHECK enum rs_code gate_image_platform(char **os, char **arch, char **variant, const char *buf, size_t len,
					       struct rs_err *err);

const char *gate_mode_name(enum gate_mode m);
const char *gate_action_name(enum gate_action a);

/* From an image config document: config.User (*user: new string, "" when
 * absent) and config.Labels (*labels / *label_count: new, free with
 * imagejson_kv_free). RS_BAD_INPUT naming what is wrong, RS_NOMEM. */
RS_MUST_CHECK enum rs_code gate_image_facts(char **user, struct imagejson_kv **labels, size_t *label_count,
					    const char *buf, size_t len, struct rs_err *err);

#endif
