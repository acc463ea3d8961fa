/* gate_policy: loading and printing "push.policies" (see gate_policy.h),
 * and the image config facts the gate reads. jansson stays in this file. */
#include "gate_policy.h"

#include "jsonload.h"

#include "rs_limits.h"

#include <fnmatch.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const policy_keys[] = {"repositories", "mode", "optimized_tag_suffix", "optimizer_policy",
					  "rules", "enforce_on_pull", NULL};
static const char *const rule_keys[] = {"max_compressed_size", "max_uncompressed_size", "max_layers", "non_root",
					"required_labels", "allowed_bases", "forbidden_paths", "secrets", NULL};


static enum rs_code nomem(const struct jsonload *ld)
{
	return rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
}

/* parent "." key into out (cut when too long); returns out. */
static const char *join(char *out, size_t cap, const char *parent, const char *key)
{
	int n = snprintf(out, cap, "%s.%s", parent, key);
	if (n < 0)
		out[0] = '\0';
	return out;
}

static enum rs_code check_keys(const struct jsonload *ld, const char *path, const json_t *obj, const char *const allowed[])
{
	const char *key = jsonload_unknown_key(obj, allowed);
	if (!key)
		return RS_OK;
	char list[RS_ERR_MSG_MAX], kp[300];
	jsonload_key_list(list, sizeof(list), allowed);
	return jsonload_fail(ld, RS_CONFIG, join(kp, sizeof(kp), path, key), "unknown key (allowed: %s)", list);
}

static bool parse_size(uint64_t *out, const char *s)
{
	char *end = NULL;
	if (*s < '0' || *s > '9')
		return false;
	unsigned long long v = strtoull(s, &end, 10);
	static const struct {
		const char *unit;
		uint64_t mul;
	} units[] = {{"", 1},
		     {"B", 1},
		     {"KB", 1000},
		     {"MB", 1000 * 1000},
		     {"GB", 1000 * 1000 * 1000ull},
		     {"TB", 1000ull * 1000 * 1000 * 1000},
		     {"KiB", 1024},
		     {"MiB", 1024 * 1024},
		     {"GiB", 1024ull * 1024 * 1024},
		     {"TiB", 1024ull * 1024 * 1024 * 1024}};
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].unit) != 0)
			continue;
		if (v > UINT64_MAX / units[i].mul)
			return false;
		*out = (uint64_t)v * units[i].mul;
		return true;
	}
	return false;
}

static enum rs_code get_action(enum gate_action *out, const struct jsonload *ld, const char *path, const json_t *obj)
{
	char kp[256];
	snprintf(kp, sizeof(kp), "%s.action", path);
	const json_t *a = json_object_get(obj, "action");
	const char *s = json_is_string(a) ? json_string_value(a) : NULL;
	if (!a)
		return jsonload_fail(ld, RS_CONFIG, kp, "missing; expected \"deny\" or \"warn\"");
	if (s && strcmp(s, "deny") == 0)
		*out = GATE_DENY;
	else if (s && strcmp(s, "warn") == 0)
		*out = GATE_WARN;
	else
		return jsonload_fail(ld, RS_CONFIG, kp, "expected \"deny\" or \"warn\"");
	return RS_OK;
}

static enum rs_code get_strings(char ***out, size_t *n, const struct jsonload *ld, const char *path, const json_t *v,
				const char *what, size_t max)
{
	if (!json_is_array(v) || json_array_size(v) == 0)
		return jsonload_fail(ld, RS_CONFIG, path, "expected a non-empty array of %s", what);
	if (json_array_size(v) > max)
		return jsonload_fail(ld, RS_CONFIG, path, "has %zu entries, the limit is %zu", json_array_size(v), max);
	*out = calloc(json_array_size(v), sizeof(char *));
	if (!*out)
		return nomem(ld);
	for (size_t i = 0; i < json_array_size(v); i++) {
		const json_t *e = json_array_get(v, i);
		if (!json_is_string(e) || json_string_length(e) == 0)
			return jsonload_fail(ld, RS_CONFIG, path, "[%zu]: expected %s", i, what);
		(*out)[i] = strdup(json_string_value(e));
		if (!(*out)[i])
			return nomem(ld);
		*n = i + 1;
	}
	return RS_OK;
}

static void free_strings(char **s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(s[i]);
	free(s);
}

static enum rs_code load_limit(struct gate_limit_rule *r, const struct jsonload *ld, const char *path, const json_t *v,
			       bool bytes)
{
	enum rs_code rc;
	static const char *const keys[] = {"limit", "action", NULL};
	if (!json_is_object(v))
		return jsonload_fail(ld, RS_CONFIG, path, "expected an object {\"limit\": ..., \"action\": \"deny\"|\"warn\"}");
	if ((rc = check_keys(ld, path, v, keys)) || (rc = get_action(&r->action, ld, path, v)))
		return rc;
	const json_t *l = json_object_get(v, "limit");
	char kp[256];
	snprintf(kp, sizeof(kp), "%s.limit", path);
	if (json_is_integer(l) && json_integer_value(l) > 0)
		r->limit = (uint64_t)json_integer_value(l);
	else if (bytes && json_is_string(l) && parse_size(&r->limit, json_string_value(l)) && r->limit > 0)
		;
	else
		return jsonload_fail(ld, RS_CONFIG, kp, "%s", bytes ? "expected a positive size (bytes, or a string like \"500MiB\")"
						 : "expected a positive integer");
	return RS_OK;
}

static enum rs_code load_list(struct gate_list_rule *r, const struct jsonload *ld, const char *path, const json_t *v,
			      const char *key, const char *what)
{
	enum rs_code rc;
	const char *keys[] = {key, "action", NULL};
	if (!json_is_object(v))
		return jsonload_fail(ld, RS_CONFIG, path, "expected an object {\"%s\": [...], \"action\": \"deny\"|\"warn\"}", key);
	if ((rc = check_keys(ld, path, v, keys)) || (rc = get_action(&r->action, ld, path, v)))
		return rc;
	char kp[256];
	snprintf(kp, sizeof(kp), "%s.%s", path, key);
	return get_strings(&r->items, &r->count, ld, kp, json_object_get(v, key), what, RS_LIMIT_POLICY_GLOBS_MAX);
}

static bool digest_like(const char *s)
{
	if (strncmp(s, "sha256:", 7) != 0 || strlen(s) != 71)
		return false;
	for (size_t i = 7; i < 71; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

bool gate_base_ref_split(const char *ref, char name[256], char tagref[136])
{
	const char *at = strchr(ref, '@');
	const char *end = at ? at : ref + strlen(ref);
	const char *slash = NULL, *colon = NULL;
	for (const char *c = ref; c < end; c++) {
		if (*c == '/')
			slash = c, colon = NULL;
		else if (*c == ':' && slash)
			colon = c; /* a ':' before the first '/' is a registry port */
		else if (*c == ':' && !memchr(c, '/', (size_t)(end - c)))
			colon = c;
	}
	size_t nlen = colon ? (size_t)(colon - ref) : at ? (size_t)(at - ref) : strlen(ref);
	if (nlen == 0 || nlen >= 256 || strcspn(ref, " \t\r\n\"\\") != strlen(ref))
		return false;
	memcpy(name, ref, nlen);
	name[nlen] = '\0';
	if (at) {
		if (!digest_like(at + 1))
			return false;
		snprintf(tagref, 136, "%s", at + 1);
		return true;
	}
	const char *tag = colon ? colon + 1 : "latest";
	size_t tl = strlen(tag);
	if (tl == 0 || tl > 128 || tag[0] == '.' || tag[0] == '-' ||
	    strspn(tag, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != tl)
		return false;
	snprintf(tagref, 136, "%s", tag);
	return true;
}

static enum rs_code load_bases(struct rs_gate_policy *p, const struct jsonload *ld, const char *path, const json_t *v)
{
	enum rs_code rc;
	static const char *const keys[] = {"bases", "images", "action", NULL};
	if (!json_is_object(v))
		return jsonload_fail(ld, RS_CONFIG, path, "expected an object {\"images\": [\"registry/repo:tag\", ...] and/or \"bases\": [[\"sha256:...\", ...], ...], \"action\": ...}");
	if ((rc = check_keys(ld, path, v, keys)) || (rc = get_action(&p->allowed_bases_action, ld, path, v)))
		return rc;
	const json_t *b = json_object_get(v, "bases");
	const json_t *im = json_object_get(v, "images");
	char kp[256];
	if (!b && !im)
		return jsonload_fail(ld, RS_CONFIG, path, "expected \"images\" (approved image references) or \"bases\" (layer digest chains)");
	if (im) {
		join(kp, sizeof(kp), path, "images");
		if ((rc = get_strings(&p->allowed_base_images, &p->allowed_base_image_count, ld, kp, im,
				      "image references (registry/repository:tag or @sha256:...)", RS_LIMIT_GATE_BASE_IMAGES_MAX)))
			return rc;
		for (size_t i = 0; i < p->allowed_base_image_count; i++) {
			char n[256], r[136];
			if (!gate_base_ref_split(p->allowed_base_images[i], n, r))
				return jsonload_fail(ld, RS_CONFIG, kp, "[%zu]: expected an image reference registry/repository[:tag][@sha256:<64 hex>], got \"%.80s\"",
					    i, p->allowed_base_images[i]);
		}
	}
	if (!b)
		return RS_OK;
	join(kp, sizeof(kp), path, "bases");
	if (!json_is_array(b) || json_array_size(b) == 0 || json_array_size(b) > RS_LIMIT_POLICY_GLOBS_MAX)
		return jsonload_fail(ld, RS_CONFIG, kp, "expected a non-empty array (at most %u) of layer digest chains",
			    (unsigned)RS_LIMIT_POLICY_GLOBS_MAX);
	p->allowed_bases = calloc(json_array_size(b), sizeof(*p->allowed_bases));
	if (!p->allowed_bases)
		return nomem(ld);
	for (size_t i = 0; i < json_array_size(b); i++) {
		char ip[280];
		snprintf(ip, sizeof(ip), "%s[%zu]", kp, i);
		struct gate_base *g = &p->allowed_bases[i];
		p->allowed_base_count = i + 1;
		if ((rc = get_strings(&g->layers, &g->count, ld, ip, json_array_get(b, i), "layer digests (sha256:<64 hex>)",
				      RS_LIMIT_IMAGE_LAYERS_MAX)))
			return rc;
		for (size_t k = 0; k < g->count; k++)
			if (!digest_like(g->layers[k]))
				return jsonload_fail(ld, RS_CONFIG, ip, "entry %zu: expected a layer digest sha256:<64 hex>, got \"%.80s\"", k,
					    g->layers[k]);
	}
	return RS_OK;
}

/* A path glob names something inside the image: after any leading '/'
 * (archive paths have none), no empty, "." or ".." component, which no
 * archive path has either. */
static bool glob_inside_image(const char *g)
{
	g += strspn(g, "/");
	for (;;) {
		size_t len = strcspn(g, "/");
		if (len == 0 || (len == 1 && g[0] == '.') || (len == 2 && g[0] == '.' && g[1] == '.'))
			return false;
		if (!g[len])
			return true;
		g += len + 1;
	}
}

static size_t strcount(const char *s, char c)
{
	size_t n = 0;
	for (; *s; s++)
		n += *s == c;
	return n;
}

/* At most RS_LIMIT_GLOB_COMPONENTS components per glob: the matcher's
 * bound (strip.h). */
static enum rs_code check_glob_depth(char *const *globs, size_t n, const struct jsonload *ld, const char *path)
{
	for (size_t i = 0; i < n; i++)
		if (strcount(globs[i] + strspn(globs[i], "/"), '/') >= RS_LIMIT_GLOB_COMPONENTS)
			return jsonload_fail(ld, RS_CONFIG, path, "[%zu]: glob has more than %d components, got \"%.80s\"", i,
					     RS_LIMIT_GLOB_COMPONENTS, globs[i]);
	return RS_OK;
}

/* Check the globs, then drop their leading '/'. */
static enum rs_code check_path_globs(char **globs, size_t n, const struct jsonload *ld, const char *path)
{
	for (size_t i = 0; i < n; i++) {
		if (!glob_inside_image(globs[i]))
			return jsonload_fail(ld, RS_CONFIG, path,
				    "[%zu]: expected a path glob inside the image (no empty, '.' or '..' components), got \"%.80s\"",
				    i, globs[i]);
		size_t skip = strspn(globs[i], "/");
		memmove(globs[i], globs[i] + skip, strlen(globs[i] + skip) + 1);
	}
	return check_glob_depth(globs, n, ld, path);
}

static enum rs_code load_secrets(struct rs_gate_policy *p, const struct jsonload *ld, const char *path, const json_t *x)
{
	enum rs_code rc;
	static const char *const keys[] = {"action", "max_file_size", "scan_binaries", "allow_paths", NULL};
	char kp[300];
	if (!json_is_object(x))
		return jsonload_fail(ld, RS_CONFIG, path, "expected an object {\"action\": \"deny\"|\"warn\"}");
	if ((rc = check_keys(ld, path, x, keys)) || (rc = get_action(&p->secrets, ld, path, x)))
		return rc;
	const json_t *c = json_object_get(x, "max_file_size");
	if (c && !(json_is_integer(c) && json_integer_value(c) > 0 && (p->secret_file_cap = (uint64_t)json_integer_value(c))) &&
	    !(json_is_string(c) && parse_size(&p->secret_file_cap, json_string_value(c)) && p->secret_file_cap))
		return jsonload_fail(ld, RS_CONFIG, join(kp, sizeof(kp), path, "max_file_size"), "expected a positive size");
	if ((c = json_object_get(x, "scan_binaries"))) {
		if (!json_is_boolean(c))
			return jsonload_fail(ld, RS_CONFIG, join(kp, sizeof(kp), path, "scan_binaries"), "expected true or false");
		p->secret_scan_binaries = json_is_true(c);
	}
	if ((c = json_object_get(x, "allow_paths"))) {
		join(kp, sizeof(kp), path, "allow_paths");
		if ((rc = get_strings(&p->secret_allow_paths, &p->secret_allow_path_count, ld, kp, c, "path globs",
				      RS_LIMIT_POLICY_GLOBS_MAX)) ||
		    (rc = check_path_globs(p->secret_allow_paths, p->secret_allow_path_count, ld, kp)))
			return rc;
	}
	return RS_OK;
}

static enum rs_code load_rules(struct rs_gate_policy *p, const struct jsonload *ld, const char *path, const json_t *v)
{
	enum rs_code rc;
	if (!json_is_object(v))
		return jsonload_fail(ld, RS_CONFIG, path, "expected an object of rules");
	if ((rc = check_keys(ld, path, v, rule_keys)))
		return rc;
	char kp[256];
	const json_t *x;
#define KP(k) join(kp, sizeof(kp), path, k)
	if ((x = json_object_get(v, "max_compressed_size")) &&
	    (rc = load_limit(&p->max_compressed_bytes, ld, KP("max_compressed_size"), x, true)))
		return rc;
	if ((x = json_object_get(v, "max_uncompressed_size")) &&
	    (rc = load_limit(&p->max_uncompressed_bytes, ld, KP("max_uncompressed_size"), x, true)))
		return rc;
	if ((x = json_object_get(v, "max_layers")) && (rc = load_limit(&p->max_layers, ld, KP("max_layers"), x, false)))
		return rc;
	if ((x = json_object_get(v, "non_root"))) {
		static const char *const keys[] = {"action", NULL};
		KP("non_root");
		if (!json_is_object(x))
			return jsonload_fail(ld, RS_CONFIG, kp, "expected an object {\"action\": \"deny\"|\"warn\"}");
		if ((rc = check_keys(ld, kp, x, keys)) || (rc = get_action(&p->non_root, ld, kp, x)))
			return rc;
	}
	if ((x = json_object_get(v, "required_labels")) &&
	    (rc = load_list(&p->required_labels, ld, KP("required_labels"), x, "labels", "label names")))
		return rc;
	if ((x = json_object_get(v, "allowed_bases")) && (rc = load_bases(p, ld, KP("allowed_bases"), x)))
		return rc;
	if ((x = json_object_get(v, "forbidden_paths")) &&
	    ((rc = load_list(&p->forbidden_paths, ld, KP("forbidden_paths"), x, "paths", "path globs")) ||
	     (rc = check_glob_depth(p->forbidden_paths.items, p->forbidden_paths.count, ld, KP("forbidden_paths.paths")))))
		return rc;
	if ((x = json_object_get(v, "secrets")) && (rc = load_secrets(p, ld, KP("secrets"), x)))
		return rc;
#undef KP
	return RS_OK;
}

static enum rs_code load_policy(struct rs_gate_policy *p, const struct jsonload *ld, const char *path, const json_t *v)
{
	enum rs_code rc;
	char kp[256];
	if (!json_is_object(v))
		return jsonload_fail(ld, RS_CONFIG, path, "expected an object");
	if ((rc = check_keys(ld, path, v, policy_keys)))
		return rc;
	snprintf(kp, sizeof(kp), "%s.repositories", path);
	const json_t *x = json_object_get(v, "repositories");
	if (!x)
		return jsonload_fail(ld, RS_CONFIG, kp, "missing; expected an array of repository globs");
	if ((rc = get_strings(&p->repositories, &p->repository_count, ld, kp, x, "repository globs",
			      RS_LIMIT_OPT_GLOBS_MAX)))
		return rc;
	p->mode = GATE_MODE_OPTIMIZE_AND_PUSH;
	if ((x = json_object_get(v, "mode"))) {
		const char *s = json_is_string(x) ? json_string_value(x) : "";
		snprintf(kp, sizeof(kp), "%s.mode", path);
		if (strcmp(s, "optimize-and-push") == 0)
			p->mode = GATE_MODE_OPTIMIZE_AND_PUSH;
		else if (strcmp(s, "push-original-and-optimized") == 0)
			p->mode = GATE_MODE_PUSH_BOTH;
		else if (strcmp(s, "check-only") == 0)
			p->mode = GATE_MODE_CHECK_ONLY;
		else
			return jsonload_fail(ld, RS_CONFIG, kp,
				    "expected \"optimize-and-push\", \"push-original-and-optimized\" or \"check-only\"");
	}
	x = json_object_get(v, "optimized_tag_suffix");
	snprintf(kp, sizeof(kp), "%s.optimized_tag_suffix", path);
	const char *suffix = x && json_is_string(x) ? json_string_value(x) : "-slim";
	if (x && !json_is_string(x))
		return jsonload_fail(ld, RS_CONFIG, kp, "expected a string");
	if (!suffix[0] || strlen(suffix) > 32 || strspn(suffix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != strlen(suffix))
		return jsonload_fail(ld, RS_CONFIG, kp, "expected 1 to 32 tag characters [A-Za-z0-9._-], got \"%.40s\"", suffix);
	if (!(p->optimized_tag_suffix = strdup(suffix)))
		return nomem(ld);
	if ((x = json_object_get(v, "optimizer_policy"))) {
		snprintf(kp, sizeof(kp), "%s.optimizer_policy", path);
		if (!json_is_string(x) || !json_string_length(x))
			return jsonload_fail(ld, RS_CONFIG, kp, "expected the path of an optimizer policy file");
		if (!(p->optimizer_policy = strdup(json_string_value(x))))
			return nomem(ld);
	}
	if ((x = json_object_get(v, "enforce_on_pull"))) {
		snprintf(kp, sizeof(kp), "%s.enforce_on_pull", path);
		if (!json_is_boolean(x))
			return jsonload_fail(ld, RS_CONFIG, kp, "expected true or false");
		p->enforce_on_pull = json_is_true(x);
	}
	snprintf(kp, sizeof(kp), "%s.rules", path);
	if ((x = json_object_get(v, "rules")) && (rc = load_rules(p, ld, kp, x)))
		return rc;
	return RS_OK;
}

enum rs_code gate_policies_load(struct rs_gate_policy **out, size_t *n, const char *file, const char *path,
				const struct json_t *v, struct rs_err *err)
{
	struct jsonload ld = {file, err};
	*out = NULL;
	*n = 0;
	if (!json_is_array(v))
		return jsonload_fail(&ld, RS_CONFIG, path, "expected an array of push policies");
	if (json_array_size(v) > RS_LIMIT_OPT_POLICIES_MAX)
		return jsonload_fail(&ld, RS_CONFIG, path, "has %zu policies, the limit is %u", json_array_size(v),
			    (unsigned)RS_LIMIT_OPT_POLICIES_MAX);
	if (json_array_size(v) == 0)
		return RS_OK;
	struct rs_gate_policy *p = calloc(json_array_size(v), sizeof(*p));
	if (!p)
		return nomem(&ld);
	size_t count = 0;
	enum rs_code rc = RS_OK;
	for (size_t i = 0; rc == RS_OK && i < json_array_size(v); i++) {
		char ip[128];
		snprintf(ip, sizeof(ip), "%s[%zu]", path, i);
		count = i + 1;
		rc = load_policy(&p[i], &ld, ip, json_array_get(v, i));
	}
	if (rc) {
		gate_policies_free(p, count);
		return rc;
	}
	*out = p;
	*n = count;
	return RS_OK;
}

void gate_policies_free(struct rs_gate_policy *p, size_t n)
{
	if (!p)
		return;
	for (size_t i = 0; i < n; i++) {
		free_strings(p[i].repositories, p[i].repository_count);
		free(p[i].optimized_tag_suffix);
		free(p[i].optimizer_policy);
		free_strings(p[i].required_labels.items, p[i].required_labels.count);
		free_strings(p[i].forbidden_paths.items, p[i].forbidden_paths.count);
		free_strings(p[i].secret_allow_paths, p[i].secret_allow_path_count);
		for (size_t k = 0; k < p[i].allowed_base_count; k++)
			free_strings(p[i].allowed_bases[k].layers, p[i].allowed_bases[k].count);
		free(p[i].allowed_bases);
		free_strings(p[i].allowed_base_images, p[i].allowed_base_image_count);
	}
	free(p);
}

const struct rs_gate_policy *gate_policy_find(const struct rs_gate_policy *p, size_t n, const char *repo)
{
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < p[i].repository_count; k++)
			if (fnmatch(p[i].repositories[k], repo, 0) == 0)
				return &p[i];
	return NULL;
}

const char *gate_mode_name(enum gate_mode m)
{
	switch (m) {
	case GATE_MODE_PUSH_BOTH:
		return "push-original-and-optimized";
	case GATE_MODE_CHECK_ONLY:
		return "check-only";
	default:
		return "optimize-and-push";
	}
}

const char *gate_action_name(enum gate_action a)
{
	return a == GATE_DENY ? "deny" : a == GATE_WARN ? "warn" : "off";
}

/* ---- printing ---- */

static json_t *strings_json(char **s, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++)
		if (json_array_append_new(a, json_string(s[i]))) {
			json_decref(a);
			return NULL;
		}
	return a;
}

static bool put(json_t *o, const char *k, json_t *v)
{
	return v && json_object_set_new(o, k, v) == 0;
}

static bool put_limit(json_t *r, const char *k, const struct gate_limit_rule *l)
{
	if (l->action == GATE_OFF)
		return true;
	json_t *o = json_object();
	return o && put(o, "limit", json_integer((json_int_t)l->limit)) &&
	       put(o, "action", json_string(gate_action_name(l->action))) && put(r, k, o);
}

static bool put_list(json_t *r, const char *k, const char *ik, const struct gate_list_rule *l)
{
	if (l->action == GATE_OFF)
		return true;
	json_t *o = json_object();
	return o && put(o, ik, strings_json(l->items, l->count)) &&
	       put(o, "action", json_string(gate_action_name(l->action))) && put(r, k, o);
}

static bool put_action(json_t *r, const char *k, enum gate_action a, json_t *o)
{
	if (a == GATE_OFF) {
		json_decref(o);
		return true;
	}
	return o && put(o, "action", json_string(gate_action_name(a))) && put(r, k, o);
}

struct json_t *gate_policies_to_json(const struct rs_gate_policy *p, size_t n)
{
	json_t *arr = json_array();
	bool ok = arr != NULL;
	for (size_t i = 0; ok && i < n; i++) {
		json_t *o = json_object(), *r = json_object();
		ok = o && r && put(o, "repositories", strings_json(p[i].repositories, p[i].repository_count)) &&
		     put(o, "mode", json_string(gate_mode_name(p[i].mode))) &&
		     put(o, "optimized_tag_suffix", json_string(p[i].optimized_tag_suffix)) &&
		     put(o, "enforce_on_pull", json_boolean(p[i].enforce_on_pull)) &&
		     (!p[i].optimizer_policy || put(o, "optimizer_policy", json_string(p[i].optimizer_policy))) &&
		     put_limit(r, "max_compressed_size", &p[i].max_compressed_bytes) &&
		     put_limit(r, "max_uncompressed_size", &p[i].max_uncompressed_bytes) &&
		     put_limit(r, "max_layers", &p[i].max_layers) && put_action(r, "non_root", p[i].non_root, json_object()) &&
		     put_list(r, "required_labels", "labels", &p[i].required_labels) &&
		     put_list(r, "forbidden_paths", "paths", &p[i].forbidden_paths);
		if (ok && p[i].allowed_bases_action != GATE_OFF) {
			json_t *b = json_object(), *bases = json_array();
			for (size_t k = 0; b && bases && k < p[i].allowed_base_count; k++)
				if (json_array_append_new(bases, strings_json(p[i].allowed_bases[k].layers,
									    p[i].allowed_bases[k].count)))
					ok = false;
			if (!p[i].allowed_base_count) {
				json_decref(bases);
				bases = NULL;
			}
			ok = ok && b && (!p[i].allowed_base_count || put(b, "bases", bases)) &&
			     (!p[i].allowed_base_image_count ||
			      put(b, "images", strings_json(p[i].allowed_base_images, p[i].allowed_base_image_count))) &&
			     put(b, "action", json_string(gate_action_name(p[i].allowed_bases_action))) &&
			     put(r, "allowed_bases", b);
		}
		if (ok && p[i].secrets != GATE_OFF) {
			json_t *s = json_object();
			ok = s && (!p[i].secret_file_cap || put(s, "max_file_size", json_integer((json_int_t)p[i].secret_file_cap))) &&
			     put(s, "scan_binaries", json_boolean(p[i].secret_scan_binaries)) &&
			     (!p[i].secret_allow_path_count ||
			      put(s, "allow_paths", strings_json(p[i].secret_allow_paths, p[i].secret_allow_path_count))) &&
			     put_action(r, "secrets", p[i].secrets, s);
		}
		ok = ok && put(o, "rules", r) && json_array_append_new(arr, o) == 0;
		if (!ok) {
			json_decref(o);
			json_decref(r);
			o = r = NULL;
		}
	}
	if (!ok) {
		json_decref(arr);
		return NULL;
	}
	return arr;
}

/* ---- image facts ---- */

enum rs_code gate_image_facts(char **user, struct imagejson_kv **labels, size_t *label_count, const char *buf,
			      size_t len, struct rs_err *err)
{
	*user = NULL;
	*labels = NULL;
	*label_count = 0;
	json_error_t je;
	json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return rs_err_set(err, RS_BAD_INPUT, "image config: invalid JSON at line %d: %.100s", je.line, je.text);
	enum rs_code rc = RS_OK;
	const json_t *c = json_object_get(root, "config");
	const json_t *u = c ? json_object_get(c, "User") : NULL;
	if (u && !json_is_string(u) && !json_is_null(u))
		rc = rs_err_set(err, RS_BAD_INPUT, "image config: config.User is not a string");
	if (rc == RS_OK && !(*user = strdup(json_is_string(u) ? json_string_value(u) : "")))
		rc = rs_err_set(err, RS_NOMEM, "out of memory reading the image config");
	const json_t *l = c ? json_object_get(c, "Labels") : NULL;
	if (rc == RS_OK && l && !json_is_null(l)) {
		if (!json_is_object(l)) {
			rc = rs_err_set(err, RS_BAD_INPUT, "image config: config.Labels is not an object");
		} else {
			const char *k;
			json_t *v;
			json_object_foreach((json_t *)l, k, v) {
				const char *s = json_is_string(v) ? json_string_value(v) : "";
				if ((rc = imagejson_kv_set(labels, label_count, k, s, err)))
					break;
			}
		}
	}
	json_decref(root);
	if (rc) {
		free(*user);
		*user = NULL;
		imagejson_kv_free(*labels, *label_count);
		*labels = NULL;
		*label_count = 0;
	}
	return rc;
}

enum rs_code gate_image_platform(char **os, char **arch, char **variant, const char *buf, size_t len,
				 struct rs_err *err)
{
	*os = *arch = *variant = NULL;
	json_error_t je;
	json_t *root = json_loadb(buf, len, 0, &je);
	if (!root)
		return rs_err_set(err, RS_BAD_INPUT, "image config: invalid JSON at line %d: %.100s", je.line, je.text);
	const json_t *o = json_object_get(root, "os"), *a = json_object_get(root, "architecture"),
		     *v = json_object_get(root, "variant");
	*os = strdup(json_is_string(o) ? json_string_value(o) : "");
	*arch = strdup(json_is_string(a) ? json_string_value(a) : "");
	*variant = strdup(json_is_string(v) ? json_string_value(v) : "");
	json_decref(root);
	if (!*os || !*arch || !*variant) {
		free(*os);
		free(*arch);
		free(*variant);
		*os = *arch = *variant = NULL;
		return rs_err_set(err, RS_NOMEM, "out of memory reading the image config");
	}
	return RS_OK;
}
