/* policy: loads an optimization policy (JSON) into struct policy and
 * validates every key, refusing unknown keys at every level. Errors are one
 * line: "FILE: key.path: expected ..., got ...", or "FILE:LINE:COLUMN:
 * invalid JSON: ..." for syntax errors. It also defines the built-in strip
 * rules and writes the canonical form of a policy that the optimizer hashes.
 *
 * It reads one file (capped at RS_LIMIT_CONFIG_FILE_MAX_BYTES) and creates
 * nothing; json_t values live only inside this file. */
#include "policy.h"

#include "jsonload.h"
#include "xalloc.h"
#include "rs_limits.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULTS_SOURCE "(defaults)"
#define PATH_MAX_CHARS 128
#define SHOW_MAX_CHARS 60

struct builtin_rule {
	const char *name;
	const char *summary;
	bool enabled;
	const char *include[8];
	const char *keep[8];
};

/* The defaults are safe for running images: nothing a program needs at run
 * time (apt recreates its lists and caches, Python recompiles bytecode). */
static const struct builtin_rule builtins[] = {
	{"apt-lists", "apt package lists (apt-get update recreates them)", true,
	 {"var/lib/apt/lists/*", NULL}, {NULL}},
	{"apt-cache", "apt caches: pkgcache.bin, srcpkgcache.bin, downloaded .debs", true,
	 {"var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/cache/apt/archives/partial/*",
	  NULL},
	 {NULL}},
	{"apt-dpkg-logs", "dpkg and apt logs", true,
	 {"var/log/apt/*", "var/log/dpkg.log*", "var/log/alternatives.log*", NULL}, {NULL}},
	{"docs", "/usr/share/doc except copyright and license files", true,
	 {"usr/share/doc/*", NULL},
	 {"usr/share/doc/**/copyright", "usr/share/doc/**/COPYING*", "usr/share/doc/**/LICEN[CS]E*",
	  "usr/share/doc/**/NOTICE*", NULL}},
	{"man-pages", "man pages", true, {"usr/share/man/*", NULL}, {NULL}},
	{"info-pages", "info pages", true, {"usr/share/info/*", NULL}, {NULL}},
	{"pip-cache", "pip download and wheel cache", true, {"**/.cache/pip", NULL}, {NULL}},
	{"npm-cache", "npm cache and logs", true, {"**/.npm/_cacache", "**/.npm/_logs", NULL}, {NULL}},
	{"yarn-cache", "yarn cache", true,
	 {"**/.cache/yarn", "**/.yarn-cache", "usr/local/share/.cache/yarn", NULL}, {NULL}},
	{"go-cache", "go build cache and module download cache", true,
	 {"**/.cache/go-build", "**/go/pkg/mod/cache", NULL}, {NULL}},
	{"tmp", "contents of /tmp and /var/tmp", true, {"tmp/*", "var/tmp/*", NULL}, {NULL}},
	{"pycache", "Python bytecode caches (__pycache__)", true, {"**/__pycache__", NULL}, {NULL}},
	{"locales", "translations under /usr/share/locale except strip.locales_keep", false,
	 {"usr/share/locale/*", NULL}, {"usr/share/locale/locale.alias", NULL}},
};
#define BUILTIN_COUNT (sizeof(builtins) / sizeof(builtins[0]))

const char *const policy_builtin_rule_names[] = {
	"apt-lists", "apt-cache", "apt-dpkg-logs", "docs",  "man-pages", "info-pages", "pip-cache",
	"npm-cache", "yarn-cache", "go-cache",     "tmp",   "pycache",   "locales",    NULL,
};

static const char *const top_keys[] = {"squash", "base_layers", "dedupe", "compression",
				       "level",  "strip",       NULL};
static const char *const strip_keys[] = {"rules", "locales_keep", "custom", NULL};
static const char *const custom_keys[] = {"name", "paths", "keep", NULL};

static void key_path(char *out, size_t cap, const char *parent, const char *key)
{
	int n = parent && parent[0] ? snprintf(out, cap, "%s.%s", parent, key) : snprintf(out, cap, "%s", key);
	if (n < 0 || (size_t)n >= cap)
		memcpy(out + cap - 4, "...", 4); /* key paths are cut, not failed */
}

static enum rs_code check_keys(const struct jsonload *ld, const json_t *obj, const char *path,
			       const char *const *allowed)
{
	const char *key = jsonload_unknown_key(obj, allowed);
	if (!key)
		return RS_OK;
	char kp[PATH_MAX_CHARS];
	key_path(kp, sizeof(kp), path, key);
	return jsonload_fail(ld, RS_CONFIG, kp, "unknown key");
}

static char *dupstr(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = xalloc_malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}

static void free_strv(char **v)
{
	if (!v)
		return;
	for (size_t i = 0; v[i]; i++)
		free(v[i]);
	free(v);
}

static void rule_dispose(struct policy_rule *r)
{
	free(r->name);
	free(r->summary);
	free_strv(r->include);
	free_strv(r->keep);
	memset(r, 0, sizeof(*r));
}

void policy_dispose(struct policy *p)
{
	if (!p)
		return;
	free(p->source);
	free_strv(p->base_layers);
	for (size_t i = 0; i < p->rule_count; i++)
		rule_dispose(&p->rules[i]);
	free(p->rules);
	memset(p, 0, sizeof(*p));
}

/* Append s to the NULL-terminated vector *v of *n strings. */
static bool strv_push(char ***v, size_t *n, const char *s)
{
	char **nv = xalloc_realloc(*v, (*n + 2) * sizeof(char *));
	if (!nv)
		return false;
	*v = nv;
	nv[*n] = dupstr(s);
	if (!nv[*n]) {
		nv[*n] = NULL;
		return false;
	}
	(*n)++;
	nv[*n] = NULL;
	return true;
}

static enum rs_code set_builtins(struct policy *p, struct rs_err *err)
{
	p->rules = xalloc_calloc(BUILTIN_COUNT, sizeof(*p->rules));
	if (!p->rules)
		return rs_err_set(err, RS_NOMEM, "out of memory building the default policy");
	p->rule_count = BUILTIN_COUNT;
	for (size_t i = 0; i < BUILTIN_COUNT; i++) {
		struct policy_rule *r = &p->rules[i];
		r->name = dupstr(builtins[i].name);
		r->summary = dupstr(builtins[i].summary);
		r->enabled = builtins[i].enabled;
		if (!r->name || !r->summary)
			return rs_err_set(err, RS_NOMEM, "out of memory building the default policy");
		for (size_t k = 0; builtins[i].include[k]; k++)
			if (!strv_push(&r->include, &r->include_count, builtins[i].include[k]))
				return rs_err_set(err, RS_NOMEM, "out of memory building the default policy");
		for (size_t k = 0; builtins[i].keep[k]; k++)
			if (!strv_push(&r->keep, &r->keep_count, builtins[i].keep[k]))
				return rs_err_set(err, RS_NOMEM, "out of memory building the default policy");
	}
	return RS_OK;
}

enum rs_code policy_init_defaults(struct policy *p, struct rs_err *err)
{
	memset(p, 0, sizeof(*p));
	p->squash = POLICY_SQUASH_ALL;
	p->dedupe = true;
	p->compression = POLICY_COMPRESS_ZSTD;
	p->level = 3;
	p->source = dupstr(DEFAULTS_SOURCE);
	if (!p->source) {
		policy_dispose(p);
		return rs_err_set(err, RS_NOMEM, "out of memory building the default policy");
	}
	enum rs_code rc = set_builtins(p, err);
	if (rc != RS_OK)
		policy_dispose(p);
	return rc;
}

static void show(char *out, size_t cap, const char *s)
{
	size_t n = strlen(s);
	if (n > SHOW_MAX_CHARS)
		snprintf(out, cap, "%.*s...", SHOW_MAX_CHARS, s);
	else
		snprintf(out, cap, "%s", s);
}

/* A glob must be a relative path without "..": "/usr/x" is accepted and
 * stored as "usr/x"; empty components and "." are refused. */
static enum rs_code check_glob(const struct jsonload *ld, const char *path, const char *g,
			       const char **norm)
{
	char shown[SHOW_MAX_CHARS + 8];
	show(shown, sizeof(shown), g);
	while (*g == '/')
		g++;
	if (!*g)
		return jsonload_fail(ld, RS_CONFIG, path, "expected a non-empty path glob, got \"%s\"", shown);
	if (strlen(g) > 4096)
		return jsonload_fail(ld, RS_CONFIG, path, "glob is longer than 4096 bytes");
	const char *c = g;
	size_t components = 0;
	while (*c) {
		const char *e = strchr(c, '/');
		size_t n = e ? (size_t)(e - c) : strlen(c);
		if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return jsonload_fail(ld, RS_CONFIG, path,
				    "expected a relative path glob without empty, '.' or '..' components, got \"%s\"",
				    shown);
		if (++components > RS_LIMIT_GLOB_COMPONENTS)
			return jsonload_fail(ld, RS_CONFIG, path, "glob has more than %d components, got \"%s\"",
					     RS_LIMIT_GLOB_COMPONENTS, shown);
		c += n;
		if (*c == '/')
			c++;
	}
	*norm = g;
	return RS_OK;
}

static enum rs_code load_globs(const struct jsonload *ld, const json_t *arr, const char *path,
			       char ***v, size_t *n)
{
	if (!json_is_array(arr))
		return jsonload_fail(ld, RS_CONFIG, path, "expected an array of path globs, got %s", jsonload_type_name(arr));
	if (json_array_size(arr) > RS_LIMIT_POLICY_GLOBS_MAX)
		return jsonload_fail(ld, RS_CONFIG, path, "%zu globs, limit is %u (RS_LIMIT_POLICY_GLOBS_MAX)",
			    json_array_size(arr), (unsigned)RS_LIMIT_POLICY_GLOBS_MAX);
	size_t i;
	json_t *g;
	json_array_foreach((json_t *)arr, i, g) {
		char kp[PATH_MAX_CHARS];
		snprintf(kp, sizeof(kp), "%s[%zu]", path, i);
		if (!json_is_string(g))
			return jsonload_fail(ld, RS_CONFIG, kp, "expected a string, got %s", jsonload_type_name(g));
		const char *norm = NULL;
		enum rs_code rc = check_glob(ld, kp, json_string_value(g), &norm);
		if (rc != RS_OK)
			return rc;
		if (!strv_push(v, n, norm))
			return jsonload_fail(ld, RS_NOMEM, NULL, "out of memory");
	}
	return RS_OK;
}

static bool valid_digest(const char *s)
{
	if (strncmp(s, "sha256:", 7) != 0 || strlen(s) != 71)
		return false;
	for (size_t i = 7; i < 71; i++)
		if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
			return false;
	return true;
}

static enum rs_code load_strip(const struct jsonload *ld, struct policy *p, const json_t *strip)
{
	if (!json_is_object(strip))
		return jsonload_fail(ld, RS_CONFIG, "strip", "expected an object, got %s", jsonload_type_name(strip));
	enum rs_code rc = check_keys(ld, strip, "strip", strip_keys);
	if (rc != RS_OK)
		return rc;
	json_t *rules = json_object_get(strip, "rules");
	if (rules) {
		if (!json_is_object(rules))
			return jsonload_fail(ld, RS_CONFIG, "strip.rules", "expected an object of rule name -> boolean, got %s",
				    jsonload_type_name(rules));
		const char *key;
		json_t *v;
		json_object_foreach(rules, key, v) {
			char kp[PATH_MAX_CHARS];
			key_path(kp, sizeof(kp), "strip.rules", key);
			size_t i;
			for (i = 0; i < BUILTIN_COUNT; i++)
				if (strcmp(p->rules[i].name, key) == 0)
					break;
			if (i == BUILTIN_COUNT)
				return jsonload_fail(ld, RS_CONFIG, kp,
					    "unknown rule (known: apt-lists, apt-cache, apt-dpkg-logs, docs, man-pages, "
					    "info-pages, pip-cache, npm-cache, yarn-cache, go-cache, tmp, pycache, locales)");
			if (!json_is_boolean(v))
				return jsonload_fail(ld, RS_CONFIG, kp, "expected true or false, got %s", jsonload_type_name(v));
			p->rules[i].enabled = json_is_true(v);
		}
	}
	json_t *lk = json_object_get(strip, "locales_keep");
	if (lk) {
		if (!json_is_array(lk))
			return jsonload_fail(ld, RS_CONFIG, "strip.locales_keep", "expected an array of locale names, got %s",
				    jsonload_type_name(lk));
		struct policy_rule *loc = NULL;
		for (size_t i = 0; i < p->rule_count; i++)
			if (strcmp(p->rules[i].name, "locales") == 0)
				loc = &p->rules[i];
		size_t i;
		json_t *v;
		json_array_foreach(lk, i, v) {
			char kp[PATH_MAX_CHARS];
			snprintf(kp, sizeof(kp), "strip.locales_keep[%zu]", i);
			if (!json_is_string(v))
				return jsonload_fail(ld, RS_CONFIG, kp, "expected a string, got %s", jsonload_type_name(v));
			const char *s = json_string_value(v);
			char shown[SHOW_MAX_CHARS + 8];
			show(shown, sizeof(shown), s);
			if (!*s || strlen(s) > 64 || strchr(s, '/') || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
				return jsonload_fail(ld, RS_CONFIG, kp,
					    "expected a locale directory name like \"en\" or \"pt_BR\", got \"%s\"", shown);
			char glob[96];
			snprintf(glob, sizeof(glob), "usr/share/locale/%s", s);
			if (loc && !strv_push(&loc->keep, &loc->keep_count, glob))
				return jsonload_fail(ld, RS_NOMEM, NULL, "out of memory");
		}
	}
	json_t *custom = json_object_get(strip, "custom");
	if (custom) {
		if (!json_is_array(custom))
			return jsonload_fail(ld, RS_CONFIG, "strip.custom", "expected an array of rules, got %s",
				    jsonload_type_name(custom));
		if (json_array_size(custom) + BUILTIN_COUNT > RS_LIMIT_POLICY_RULES_MAX)
			return jsonload_fail(ld, RS_CONFIG, "strip.custom",
				    "%zu custom rules, limit is %zu (RS_LIMIT_POLICY_RULES_MAX minus the built-in ones)",
				    json_array_size(custom), (size_t)RS_LIMIT_POLICY_RULES_MAX - BUILTIN_COUNT);
		struct policy_rule *nr =
			xalloc_realloc(p->rules, (p->rule_count + json_array_size(custom)) * sizeof(*nr));
		if (!nr)
			return jsonload_fail(ld, RS_NOMEM, NULL, "out of memory");
		p->rules = nr;
		size_t i;
		json_t *c;
		json_array_foreach(custom, i, c) {
			char kp[PATH_MAX_CHARS], sub[PATH_MAX_CHARS];
			snprintf(kp, sizeof(kp), "strip.custom[%zu]", i);
			if (!json_is_object(c))
				return jsonload_fail(ld, RS_CONFIG, kp, "expected an object, got %s", jsonload_type_name(c));
			rc = check_keys(ld, c, kp, custom_keys);
			if (rc != RS_OK)
				return rc;
			struct policy_rule *r = &p->rules[p->rule_count];
			memset(r, 0, sizeof(*r));
			p->rule_count++;
			r->enabled = true;
			json_t *name = json_object_get(c, "name");
			char defname[32];
			snprintf(defname, sizeof(defname), "custom-%zu", i);
			key_path(sub, sizeof(sub), kp, "name");
			if (name && !json_is_string(name))
				return jsonload_fail(ld, RS_CONFIG, sub, "expected a string, got %s", jsonload_type_name(name));
			const char *nm = name ? json_string_value(name) : defname;
			if (!*nm || strlen(nm) > 64)
				return jsonload_fail(ld, RS_CONFIG, sub, "expected a name of 1 to 64 characters");
			for (size_t k = 0; k + 1 < p->rule_count; k++)
				if (strcmp(p->rules[k].name, nm) == 0)
					return jsonload_fail(ld, RS_CONFIG, sub, "rule name \"%s\" is already used", nm);
			r->name = dupstr(nm);
			r->summary = dupstr("");
			if (!r->name || !r->summary)
				return jsonload_fail(ld, RS_NOMEM, NULL, "out of memory");
			json_t *paths = json_object_get(c, "paths");
			key_path(sub, sizeof(sub), kp, "paths");
			if (!paths)
				return jsonload_fail(ld, RS_CONFIG, sub, "missing: a custom rule needs path globs");
			rc = load_globs(ld, paths, sub, &r->include, &r->include_count);
			if (rc != RS_OK)
				return rc;
			if (r->include_count == 0)
				return jsonload_fail(ld, RS_CONFIG, sub, "expected at least one path glob");
			json_t *keep = json_object_get(c, "keep");
			if (keep) {
				key_path(sub, sizeof(sub), kp, "keep");
				rc = load_globs(ld, keep, sub, &r->keep, &r->keep_count);
				if (rc != RS_OK)
					return rc;
			}
		}
	}
	return RS_OK;
}

static enum rs_code load_root(const struct jsonload *ld, struct policy *p, const json_t *root)
{
	if (!json_is_object(root))
		return jsonload_fail(ld, RS_CONFIG, NULL, "expected a JSON object at the top level, got %s",
			    jsonload_type_name(root));
	enum rs_code rc = check_keys(ld, root, NULL, top_keys);
	if (rc != RS_OK)
		return rc;
	json_t *v = json_object_get(root, "squash");
	if (v) {
		const char *s = json_is_string(v) ? json_string_value(v) : NULL;
		if (s && strcmp(s, "all") == 0)
			p->squash = POLICY_SQUASH_ALL;
		else if (s && strcmp(s, "none") == 0)
			p->squash = POLICY_SQUASH_NONE;
		else if (s && strcmp(s, "keep-base") == 0)
			p->squash = POLICY_SQUASH_KEEP_BASE;
		else if (s) {
			char shown[SHOW_MAX_CHARS + 8];
			show(shown, sizeof(shown), s);
			return jsonload_fail(ld, RS_CONFIG, "squash", "expected \"all\", \"none\" or \"keep-base\", got \"%s\"",
				    shown);
		} else
			return jsonload_fail(ld, RS_CONFIG, "squash", "expected a string, got %s", jsonload_type_name(v));
	}
	v = json_object_get(root, "base_layers");
	if (v) {
		if (!json_is_array(v))
			return jsonload_fail(ld, RS_CONFIG, "base_layers", "expected an array of layer digests, got %s",
				    jsonload_type_name(v));
		if (json_array_size(v) > RS_LIMIT_IMAGE_LAYERS_MAX)
			return jsonload_fail(ld, RS_CONFIG, "base_layers", "%zu digests, limit is %u (RS_LIMIT_IMAGE_LAYERS_MAX)",
				    json_array_size(v), (unsigned)RS_LIMIT_IMAGE_LAYERS_MAX);
		size_t i;
		json_t *d;
		json_array_foreach(v, i, d) {
			char kp[PATH_MAX_CHARS];
			snprintf(kp, sizeof(kp), "base_layers[%zu]", i);
			if (!json_is_string(d))
				return jsonload_fail(ld, RS_CONFIG, kp, "expected a digest string, got %s", jsonload_type_name(d));
			if (!valid_digest(json_string_value(d))) {
				char shown[SHOW_MAX_CHARS + 8];
				show(shown, sizeof(shown), json_string_value(d));
				return jsonload_fail(ld, RS_CONFIG, kp, "expected \"sha256:\" and 64 lower-case hex digits, got \"%s\"",
					    shown);
			}
			if (!strv_push(&p->base_layers, &p->base_layer_count, json_string_value(d)))
				return jsonload_fail(ld, RS_NOMEM, NULL, "out of memory");
		}
	}
	v = json_object_get(root, "dedupe");
	if (v) {
		if (!json_is_boolean(v))
			return jsonload_fail(ld, RS_CONFIG, "dedupe", "expected true or false, got %s", jsonload_type_name(v));
		p->dedupe = json_is_true(v);
	}
	v = json_object_get(root, "compression");
	if (v) {
		const char *s = json_is_string(v) ? json_string_value(v) : NULL;
		if (!s)
			return jsonload_fail(ld, RS_CONFIG, "compression", "expected a string, got %s", jsonload_type_name(v));
		if (strcmp(s, "zstd") == 0)
			p->compression = POLICY_COMPRESS_ZSTD;
		else if (strcmp(s, "gzip") == 0)
			p->compression = POLICY_COMPRESS_GZIP;
		else if (strcmp(s, "none") == 0)
			p->compression = POLICY_COMPRESS_NONE;
		else {
			char shown[SHOW_MAX_CHARS + 8];
			show(shown, sizeof(shown), s);
			return jsonload_fail(ld, RS_CONFIG, "compression", "expected \"zstd\", \"gzip\" or \"none\", got \"%s\"",
				    shown);
		}
	}
	/* The level default follows the compression. */
	p->level = p->compression == POLICY_COMPRESS_ZSTD ? 3 : p->compression == POLICY_COMPRESS_GZIP ? 6 : 0;
	v = json_object_get(root, "level");
	if (v) {
		if (!json_is_integer(v))
			return jsonload_fail(ld, RS_CONFIG, "level", "expected an integer, got %s", jsonload_type_name(v));
		json_int_t l = json_integer_value(v);
		int lo = 1, hi = p->compression == POLICY_COMPRESS_ZSTD ? 19 : 9;
		if (p->compression == POLICY_COMPRESS_NONE)
			return jsonload_fail(ld, RS_CONFIG, "level", "has no meaning with compression \"none\"");
		if (l < lo || l > hi)
			return jsonload_fail(ld, RS_CONFIG, "level", "expected %d..%d for %s, got %lld", lo, hi,
				    policy_compression_name(p->compression), (long long)l);
		p->level = (int)l;
	}
	v = json_object_get(root, "strip");
	if (v) {
		rc = load_strip(ld, p, v);
		if (rc != RS_OK)
			return rc;
	}
	if (p->squash != POLICY_SQUASH_KEEP_BASE && p->base_layer_count > 0)
		return jsonload_fail(ld, RS_CONFIG, "base_layers", "only has a meaning with squash \"keep-base\"");
	return RS_OK;
}

enum rs_code policy_load_buffer(struct policy *p, const char *name, const char *buf, size_t len,
				struct rs_err *err)
{
	struct jsonload ld = {name, err};
	enum rs_code rc = policy_init_defaults(p, err);
	if (rc != RS_OK)
		return rc;
	free(p->source);
	p->source = dupstr(name);
	if (!p->source) {
		policy_dispose(p);
		return rs_err_set(err, RS_NOMEM, "%s: out of memory", name);
	}
	if (len > RS_LIMIT_CONFIG_FILE_MAX_BYTES) {
		policy_dispose(p);
		return rs_err_set(err, RS_TOO_LARGE, "%s: policy is %zu bytes, limit is %u (RS_LIMIT_CONFIG_FILE_MAX_BYTES)",
				  name, len, (unsigned)RS_LIMIT_CONFIG_FILE_MAX_BYTES);
	}
	json_error_t jerr;
	json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	/* jansson reports a failed allocation as json_error_out_of_memory, or
	 * (when its lexer cannot even start) with no message at all */
	if (!root && (json_error_code(&jerr) == json_error_out_of_memory || jerr.text[0] == '\0')) {
		policy_dispose(p);
		return rs_err_set(err, RS_NOMEM, "%s: out of memory parsing JSON", name);
	}
	if (!root) {
		policy_dispose(p);
		return rs_err_set(err, RS_CONFIG, "%s:%d:%d: invalid JSON: %s", name, jerr.line, jerr.column,
				  jerr.text);
	}
	rc = load_root(&ld, p, root);
	json_decref(root);
	if (rc != RS_OK)
		policy_dispose(p);
	return rc;
}

enum rs_code policy_load(struct policy *p, const char *path, struct rs_err *err)
{
	memset(p, 0, sizeof(*p));
	FILE *f = fopen(path, "rb");
	if (!f)
		return rs_err_set(err, RS_IO, "%s: cannot open: %s", path, strerror(errno));
	size_t cap = RS_LIMIT_CONFIG_FILE_MAX_BYTES + 1;
	char *buf = xalloc_malloc(cap);
	if (!buf) {
		fclose(f);
		return rs_err_set(err, RS_NOMEM, "%s: out of memory reading the file", path);
	}
	size_t n = fread(buf, 1, cap, f);
	bool bad = ferror(f);
	fclose(f);
	enum rs_code rc;
	if (bad)
		rc = rs_err_set(err, RS_IO, "%s: cannot read", path);
	else if (n > RS_LIMIT_CONFIG_FILE_MAX_BYTES)
		rc = rs_err_set(err, RS_TOO_LARGE, "%s: policy is more than %u bytes (RS_LIMIT_CONFIG_FILE_MAX_BYTES)",
				path, (unsigned)RS_LIMIT_CONFIG_FILE_MAX_BYTES);
	else
		rc = policy_load_buffer(p, path, buf, n, err);
	free(buf);
	return rc;
}

const char *policy_squash_name(enum policy_squash s)
{
	switch (s) {
	case POLICY_SQUASH_ALL: return "all";
	case POLICY_SQUASH_NONE: return "none";
	case POLICY_SQUASH_KEEP_BASE: return "keep-base";
	}
	return "unknown";
}

const char *policy_compression_name(enum policy_compression c)
{
	switch (c) {
	case POLICY_COMPRESS_ZSTD: return "zstd";
	case POLICY_COMPRESS_GZIP: return "gzip";
	case POLICY_COMPRESS_NONE: return "none";
	}
	return "unknown";
}

static json_t *strv_json(char **v)
{
	json_t *a = json_array();
	if (!a)
		return NULL;
	for (size_t i = 0; v && v[i]; i++)
		if (json_array_append_new(a, json_string(v[i])) != 0) {
			json_decref(a);
			return NULL;
		}
	return a;
}

enum rs_code policy_canonical(char **out, size_t *len_out, const struct policy *p, struct rs_err *err)
{
	*out = NULL;
	*len_out = 0;
	json_t *root = json_object();
	json_t *rules = json_array();
	bool ok = root && rules;
	ok = ok && json_object_set_new(root, "squash", json_string(policy_squash_name(p->squash))) == 0;
	ok = ok && json_object_set_new(root, "base_layers", strv_json(p->base_layers)) == 0;
	ok = ok && json_object_set_new(root, "dedupe", json_boolean(p->dedupe)) == 0;
	ok = ok && json_object_set_new(root, "compression",
				       json_string(policy_compression_name(p->compression))) == 0;
	ok = ok && json_object_set_new(root, "level", json_integer(p->level)) == 0;
	for (size_t i = 0; ok && i < p->rule_count; i++) {
		const struct policy_rule *r = &p->rules[i];
		json_t *o = json_object();
		ok = o && json_array_append_new(rules, o) == 0;
		ok = ok && json_object_set_new(o, "name", json_string(r->name)) == 0;
		ok = ok && json_object_set_new(o, "enabled", json_boolean(r->enabled)) == 0;
		ok = ok && json_object_set_new(o, "paths", strv_json(r->include)) == 0;
		ok = ok && json_object_set_new(o, "keep", strv_json(r->keep)) == 0;
	}
	if (ok) {
		ok = json_object_set_new(root, "rules", rules) == 0;
		rules = NULL;
	}
	char *s = NULL;
	if (ok)
		s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(rules);
	json_decref(root);
	if (!s)
		return rs_err_set(err, RS_NOMEM, "out of memory serialising the policy");
	/* json_dumps memory is released with free() (jansson's default allocator);
	 * copy anyway so the caller's free() is always right. */
	size_t n = strlen(s);
	*out = xalloc_malloc(n + 1);
	if (!*out) {
		free(s);
		return rs_err_set(err, RS_NOMEM, "out of memory serialising the policy");
	}
	memcpy(*out, s, n + 1);
	free(s);
	*len_out = n;
	return RS_OK;
}
