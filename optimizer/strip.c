/* strip: glob matching for strip rules. Patterns are matched component by
 * component; "**" backtracks over whole components only, so matching is
 * O(components^2) in the worst case for one "**" and stays small for real
 * paths. Talks to nobody; squash.c calls strip_eval() once per new path. */
#include "strip.h"
#include "rs_limits.h"

#include <stdlib.h>
#include <string.h>

struct compiled_rule {
	char *name;
	bool enabled;
	char **include;
	size_t include_count;
	char **keep;
	size_t keep_count;
};

struct strip_rules {
	struct compiled_rule *rules;
	size_t count;
};

static bool copy_globs(char ***out, size_t *n, char **in, size_t count)
{
	*out = NULL;
	*n = 0;
	if (!count)
		return true;
	*out = calloc(count, sizeof(char *));
	if (!*out)
		return false;
	for (size_t i = 0; i < count; i++) {
		(*out)[i] = strdup(in[i]);
		if (!(*out)[i])
			return false;
		*n = i + 1;
	}
	return true;
}

void strip_free(struct strip_rules *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->count; i++) {
		struct compiled_rule *r = &s->rules[i];
		free(r->name);
		for (size_t k = 0; k < r->include_count; k++)
			free(r->include[k]);
		free(r->include);
		for (size_t k = 0; k < r->keep_count; k++)
			free(r->keep[k]);
		free(r->keep);
	}
	free(s->rules);
	free(s);
}

enum rs_code strip_new(struct strip_rules **out, const struct policy *p, struct rs_err *err)
{
	*out = NULL;
	if (p->rule_count > 64 || p->rule_count > RS_LIMIT_POLICY_RULES_MAX)
		return rs_err_set(err, RS_TOO_LARGE, "policy has %zu strip rules, limit is %u (RS_LIMIT_POLICY_RULES_MAX)",
				  p->rule_count, (unsigned)RS_LIMIT_POLICY_RULES_MAX);
	struct strip_rules *s = calloc(1, sizeof(*s));
	if (!s)
		return rs_err_set(err, RS_NOMEM, "out of memory compiling strip rules");
	s->rules = p->rule_count ? calloc(p->rule_count, sizeof(*s->rules)) : NULL;
	if (p->rule_count && !s->rules) {
		free(s);
		return rs_err_set(err, RS_NOMEM, "out of memory compiling strip rules");
	}
	s->count = p->rule_count;
	for (size_t i = 0; i < p->rule_count; i++) {
		struct compiled_rule *r = &s->rules[i];
		const struct policy_rule *pr = &p->rules[i];
		r->enabled = pr->enabled;
		r->name = strdup(pr->name);
		if (!r->name || !copy_globs(&r->include, &r->include_count, pr->include, pr->include_count) ||
		    !copy_globs(&r->keep, &r->keep_count, pr->keep, pr->keep_count)) {
			strip_free(s);
			return rs_err_set(err, RS_NOMEM, "out of memory compiling strip rules");
		}
	}
	*out = s;
	return RS_OK;
}

size_t strip_rule_count(const struct strip_rules *s)
{
	return s->count;
}

const char *strip_rule_name(const struct strip_rules *s, size_t i)
{
	return i < s->count ? s->rules[i].name : "?";
}

/* Match one component: pattern p[0..pl) against s[0..sl). */
static bool match_component(const char *p, size_t pl, const char *s, size_t sl)
{
	size_t pi = 0, si = 0;
	size_t star_p = (size_t)-1, star_s = 0;
	while (si < sl) {
		if (pi < pl && p[pi] == '*') {
			star_p = ++pi;
			star_s = si;
			continue;
		}
		if (pi < pl) {
			char c = s[si];
			bool ok = false;
			size_t next = pi + 1;
			if (p[pi] == '?') {
				ok = true;
			} else if (p[pi] == '[') {
				size_t k = pi + 1;
				bool neg = false;
				if (k < pl && (p[k] == '!' || p[k] == '^')) {
					neg = true;
					k++;
				}
				bool in = false, closed = false;
				size_t first = k;
				while (k < pl) {
					if (p[k] == ']' && k > first) {
						closed = true;
						break;
					}
					char lo = p[k], hi = p[k];
					if (k + 2 < pl && p[k + 1] == '-' && p[k + 2] != ']') {
						hi = p[k + 2];
						k += 2;
					}
					if ((unsigned char)c >= (unsigned char)lo && (unsigned char)c <= (unsigned char)hi)
						in = true;
					k++;
				}
				if (closed) {
					ok = in != neg;
					next = k + 1;
				} else {
					ok = c == '['; /* an unclosed '[' is literal */
				}
			} else if (p[pi] == '\\' && pi + 1 < pl) {
				ok = p[pi + 1] == c;
				next = pi + 2;
			} else {
				ok = p[pi] == c;
			}
			if (ok) {
				pi = next;
				si++;
				continue;
			}
		}
		if (star_p == (size_t)-1)
			return false;
		pi = star_p;
		si = ++star_s;
	}
	while (pi < pl && p[pi] == '*')
		pi++;
	return pi == pl;
}

static size_t comp_len(const char *s)
{
	const char *e = strchr(s, '/');
	return e ? (size_t)(e - s) : strlen(s);
}

static bool match_path(const char *g, const char *path)
{
	if (!*g)
		return !*path;
	size_t gl = comp_len(g);
	const char *g_rest = g[gl] == '/' ? g + gl + 1 : g + gl;
	if (gl == 2 && g[0] == '*' && g[1] == '*') {
		if (!*g_rest)
			return true;
		const char *p = path;
		for (;;) {
			if (match_path(g_rest, p))
				return true;
			const char *slash = strchr(p, '/');
			if (!slash)
				return false;
			p = slash + 1;
		}
	}
	if (!*path)
		return false;
	size_t pl = comp_len(path);
	if (!match_component(g, gl, path, pl))
		return false;
	const char *p_rest = path[pl] == '/' ? path + pl + 1 : path + pl;
	if (!*g_rest)
		return !*p_rest && path[pl] != '/';
	if (!*p_rest) {
		/* the path ended; only trailing "**" components may remain */
		while (*g_rest) {
			size_t l = comp_len(g_rest);
			if (!(l == 2 && g_rest[0] == '*' && g_rest[1] == '*'))
				return false;
			g_rest += l + (g_rest[l] == '/');
		}
		return true;
	}
	return match_path(g_rest, p_rest);
}

bool strip_glob_match(const char *glob, const char *path)
{
	return match_path(glob, path);
}

void strip_eval(const struct strip_rules *s, const char *path, uint64_t parent_inc,
		uint64_t parent_keep, uint64_t *inc_out, uint64_t *keep_out)
{
	uint64_t inc = parent_inc, keep = parent_keep;
	for (size_t i = 0; i < s->count; i++) {
		const struct compiled_rule *r = &s->rules[i];
		uint64_t bit = (uint64_t)1 << i;
		if (!r->enabled)
			continue;
		if (!(inc & bit))
			for (size_t k = 0; k < r->include_count; k++)
				if (match_path(r->include[k], path)) {
					inc |= bit;
					break;
				}
		if (!(keep & bit))
			for (size_t k = 0; k < r->keep_count; k++)
				if (match_path(r->keep[k], path)) {
					keep |= bit;
					break;
				}
	}
	*inc_out = inc;
	*keep_out = keep;
}

int strip_rule_of(uint64_t inc, uint64_t keep)
{
	uint64_t m = inc & ~keep;
	if (!m)
		return -1;
	return __builtin_ctzll(m);
}

int strip_path_rule(const struct strip_rules *s, const char *path, struct strip_cache *cache)
{
	size_t len = strlen(path);
	const char *slash = strrchr(path, '/');
	size_t dlen = slash ? (size_t)(slash - path) : 0;
	uint64_t inc = 0, keep = 0;
	char stack[1024];
	char *buf = len < sizeof(stack) ? stack : malloc(len + 1);
	if (!buf)
		return -2;
	memcpy(buf, path, len + 1);
	size_t from = 0;
	if (cache && cache->dir && dlen && cache->dir_len == dlen && memcmp(cache->dir, path, dlen) == 0) {
		inc = cache->inc;
		keep = cache->keep;
		from = dlen + 1;
	}
	/* each prefix ending at a '/' (an ancestor), then the path itself */
	for (size_t i = from; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		char c = buf[i];
		buf[i] = '\0';
		strip_eval(s, buf, inc, keep, &inc, &keep);
		buf[i] = c;
		if (cache && i == dlen && dlen && from == 0) {
			char *d = realloc(cache->dir, dlen + 1);
			if (d) {
				memcpy(d, path, dlen);
				d[dlen] = '\0';
				cache->dir = d;
				cache->dir_len = dlen;
				cache->inc = inc;
				cache->keep = keep;
			}
		}
	}
	if (buf != stack)
		free(buf);
	return strip_rule_of(inc, keep);
}

void strip_cache_dispose(struct strip_cache *c)
{
	free(c->dir);
	memset(c, 0, sizeof(*c));
}
