/* strip: glob matching for strip rules. A glob is compiled into its
 * components and run as a small automaton over a path's components: the
 * state of a glob is the set of its component positions still alive (one
 * bit each, "**" keeps its position alive), so matching costs the same for
 * every component however deep the path is, and a path's state is derived
 * from its parent's. States of path prefixes are interned (strip_states),
 * so the squash path table stores one id per node. Talks to nobody;
 * squash.c asks for the state of each new path, the scan and the gate for
 * whole paths. */
#include "strip.h"
#include "rs_limits.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* One compiled glob: its components, which of them are "**", and the rule
 * it belongs to. */
struct glob {
	const char *text; /* the glob (owned by strip_rules, borrowed by strip_glob_match) */
	uint16_t off[RS_LIMIT_GLOB_COMPONENTS]; /* start of component k in text */
	uint16_t len[RS_LIMIT_GLOB_COMPONENTS]; /* its length */
	uint64_t dstar;                         /* bit k: component k is "**" */
	uint32_t n;                             /* components */
	uint32_t rule;
	bool keep; /* a keep glob (else an include glob) */
};

struct compiled_rule {
	char *name;
	bool enabled;
};

struct strip_rules {
	struct compiled_rule *rules;
	size_t count;
	struct glob *globs; /* every enabled rule's include and keep globs */
	size_t nglobs;
};

/* Compile text (borrowed: it must outlive g) into g: components split at
 * '/', one trailing '/' ignored. RS_TOO_LARGE past RS_LIMIT_GLOB_COMPONENTS
 * components or 65535 bytes. */
static enum rs_code glob_compile(struct glob *g, const char *text, uint32_t rule, bool keep, struct rs_err *err)
{
	g->text = text;
	g->dstar = 0;
	g->n = 0;
	g->rule = rule;
	g->keep = keep;
	size_t tl = strlen(text);
	if (tl && text[tl - 1] == '/')
		tl--;
	size_t n = 1;
	for (size_t i = 0; i < tl; i++)
		n += text[i] == '/';
	if (n > RS_LIMIT_GLOB_COMPONENTS || tl > UINT16_MAX)
		return rs_err_set(err, RS_TOO_LARGE, "glob '%.80s' has %zu components, limit is %d (RS_LIMIT_GLOB_COMPONENTS)",
				  text, n, RS_LIMIT_GLOB_COMPONENTS);
	size_t k = 0, start = 0;
	for (size_t i = 0; i <= tl; i++) {
		if (i < tl && text[i] != '/')
			continue;
		g->off[k] = (uint16_t)start;
		g->len[k] = (uint16_t)(i - start);
		if (i - start == 2 && text[start] == '*' && text[start + 1] == '*')
			g->dstar |= (uint64_t)1 << k;
		k++;
		start = i + 1;
	}
	g->n = (uint32_t)k;
	return RS_OK;
}

void strip_free(struct strip_rules *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->count; i++)
		free(s->rules[i].name);
	for (size_t i = 0; i < s->nglobs; i++)
		free((char *)s->globs[i].text);
	free(s->globs);
	free(s->rules);
	free(s);
}

static enum rs_code add_globs(struct strip_rules *s, char **globs, size_t count, uint32_t rule, bool keep,
			      struct rs_err *err)
{
	for (size_t k = 0; k < count; k++) {
		char *text = strdup(globs[k]);
		if (!text)
			return rs_err_set(err, RS_NOMEM, "out of memory compiling strip rules");
		s->globs[s->nglobs].text = text; /* freed by strip_free from here on */
		enum rs_code rc = glob_compile(&s->globs[s->nglobs], text, rule, keep, err);
		s->nglobs++;
		if (rc != RS_OK)
			return rc;
	}
	return RS_OK;
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
	size_t total = 0;
	for (size_t i = 0; i < p->rule_count; i++)
		if (p->rules[i].enabled)
			total += p->rules[i].include_count + p->rules[i].keep_count;
	s->rules = p->rule_count ? calloc(p->rule_count, sizeof(*s->rules)) : NULL;
	s->globs = total ? calloc(total, sizeof(*s->globs)) : NULL;
	if ((p->rule_count && !s->rules) || (total && !s->globs)) {
		strip_free(s);
		return rs_err_set(err, RS_NOMEM, "out of memory compiling strip rules");
	}
	s->count = p->rule_count;
	enum rs_code rc = RS_OK;
	for (size_t i = 0; rc == RS_OK && i < p->rule_count; i++) {
		struct compiled_rule *r = &s->rules[i];
		const struct policy_rule *pr = &p->rules[i];
		r->enabled = pr->enabled;
		r->name = strdup(pr->name);
		if (!r->name)
			rc = rs_err_set(err, RS_NOMEM, "out of memory compiling strip rules");
		if (rc == RS_OK && r->enabled)
			rc = add_globs(s, pr->include, pr->include_count, (uint32_t)i, false, err);
		if (rc == RS_OK && r->enabled)
			rc = add_globs(s, pr->keep, pr->keep_count, (uint32_t)i, true, err);
	}
	if (rc != RS_OK) {
		strip_free(s);
		return rc;
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

/* ---- the automaton ------------------------------------------------------ */

/* Positions reachable without consuming a component: a "**" may match
 * zero components. Positions only move forward, so one pass suffices. */
static uint64_t closure(const struct glob *g, uint64_t st)
{
	for (uint32_t k = 0; k < g->n; k++)
		if ((st >> k & 1) && (g->dstar >> k & 1))
			st |= (uint64_t)1 << (k + 1);
	return st;
}

/* The state after one more path component c[0..cl). */
static uint64_t step(const struct glob *g, uint64_t st, const char *c, size_t cl)
{
	uint64_t next = 0;
	st = closure(g, st);
	for (uint32_t k = 0; k < g->n; k++) {
		if (!(st >> k & 1))
			continue;
		if (g->dstar >> k & 1)
			next |= (uint64_t)1 << k; /* "**" takes the component and stays */
		else if (match_component(g->text + g->off[k], g->len[k], c, cl))
			next |= (uint64_t)1 << (k + 1);
	}
	return next;
}

/* Does a path in state st match the whole glob? */
static bool accepts(const struct glob *g, uint64_t st)
{
	return closure(g, st) >> g->n & 1;
}

bool strip_glob_match(const char *glob, const char *path)
{
	struct glob g; /* on the stack: the gate matches every entry */
	struct rs_err e;
	bool ok = false;
	if (glob_compile(&g, glob, 0, false, &e) == RS_OK) {
		uint64_t st = 1;
		const char *p = path;
		for (;;) {
			const char *slash = strchr(p, '/');
			size_t cl = slash ? (size_t)(slash - p) : strlen(p);
			st = step(&g, st, p, cl);
			if (!st || !slash)
				break;
			p = slash + 1;
		}
		ok = accepts(&g, st);
	}
	return ok;
}

/* A state of a path prefix: the rule masks, then one automaton state per
 * glob (strip_rules.globs). Words: 2 + nglobs. */
static size_t state_words(const struct strip_rules *s)
{
	return 2 + s->nglobs;
}

static void state_root(const struct strip_rules *s, uint64_t *st)
{
	st[0] = st[1] = 0;
	for (size_t i = 0; i < s->nglobs; i++)
		st[2 + i] = 1;
}

/* child = the state of parent's path plus component c[0..cl). A rule's bit,
 * once set, stays set, and its globs of that kind stop running. */
static void state_child(const struct strip_rules *s, const uint64_t *parent, const char *c, size_t cl,
			uint64_t *child)
{
	child[0] = parent[0];
	child[1] = parent[1];
	for (size_t i = 0; i < s->nglobs; i++) {
		const struct glob *g = &s->globs[i];
		uint64_t bit = (uint64_t)1 << g->rule;
		uint64_t *mask = g->keep ? &child[1] : &child[0];
		uint64_t st = (parent[g->keep ? 1 : 0] & bit) ? 0 : step(g, parent[2 + i], c, cl);
		if (st && accepts(g, st))
			*mask |= bit;
		child[2 + i] = st;
	}
	/* a glob whose rule got its bit here is done too */
	for (size_t i = 0; i < s->nglobs; i++) {
		const struct glob *g = &s->globs[i];
		if (child[g->keep ? 1 : 0] >> g->rule & 1)
			child[2 + i] = 0;
	}
}

int strip_rule_of(uint64_t inc, uint64_t keep)
{
	uint64_t m = inc & ~keep;
	if (!m)
		return -1;
	return __builtin_ctzll(m);
}

/* ---- interned states ------------------------------------------------------- */

struct strip_states {
	const struct strip_rules *s;
	size_t words;
	uint64_t *v;        /* state i at v + i * words */
	uint32_t n, cap;
	uint32_t *index;    /* open addressing: id + 1, 0 when empty */
	uint32_t index_cap; /* a power of two, at least twice n */
	uint64_t *tmp;      /* words: the state being computed */
};

static uint32_t state_hash(const uint64_t *st, size_t words)
{
	uint64_t h = 0x9E3779B97F4A7C15ull;
	for (size_t i = 0; i < words; i++) {
		h ^= st[i];
		h *= 0xBF58476D1CE4E5B9ull;
		h ^= h >> 31;
	}
	return (uint32_t)(h ^ (h >> 32));
}

static bool index_grow(struct strip_states *t)
{
	uint32_t nc = t->index_cap ? t->index_cap * 2 : 64;
	uint32_t *ix = calloc(nc, sizeof(*ix));
	if (!ix)
		return false;
	for (uint32_t id = 0; id < t->n; id++) {
		uint32_t h = state_hash(t->v + (size_t)id * t->words, t->words) & (nc - 1);
		while (ix[h])
			h = (h + 1) & (nc - 1);
		ix[h] = id + 1;
	}
	free(t->index);
	t->index = ix;
	t->index_cap = nc;
	return true;
}

/* The id of the state in t->tmp, added when new. */
static enum rs_code intern(struct strip_states *t, uint32_t *out, struct rs_err *err)
{
	size_t bytes = t->words * sizeof(uint64_t);
	uint32_t h = state_hash(t->tmp, t->words) & (t->index_cap - 1);
	for (; t->index[h]; h = (h + 1) & (t->index_cap - 1)) {
		uint32_t id = t->index[h] - 1;
		if (memcmp(t->v + (size_t)id * t->words, t->tmp, bytes) == 0) {
			*out = id;
			return RS_OK;
		}
	}
	if (t->n == UINT32_MAX / 2)
		return rs_err_set(err, RS_TOO_LARGE, "too many distinct strip states");
	if (t->n == t->cap) {
		uint32_t nc = t->cap ? t->cap * 2 : 64;
		uint64_t *v = realloc(t->v, (size_t)nc * bytes);
		if (!v)
			return rs_err_set(err, RS_NOMEM, "out of memory for strip states");
		t->v = v;
		t->cap = nc;
	}
	memcpy(t->v + (size_t)t->n * t->words, t->tmp, bytes);
	*out = t->n++;
	if (t->n * 2 > t->index_cap) {
		if (!index_grow(t))
			return rs_err_set(err, RS_NOMEM, "out of memory for strip states");
		return RS_OK;
	}
	t->index[h] = *out + 1;
	return RS_OK;
}

enum rs_code strip_states_new(struct strip_states **out, const struct strip_rules *s, struct rs_err *err)
{
	*out = NULL;
	struct strip_states *t = calloc(1, sizeof(*t));
	if (!t)
		return rs_err_set(err, RS_NOMEM, "out of memory for strip states");
	t->s = s;
	t->words = state_words(s);
	t->tmp = calloc(t->words, sizeof(uint64_t));
	uint32_t root;
	enum rs_code rc = t->tmp && index_grow(t) ? RS_OK : rs_err_set(err, RS_NOMEM, "out of memory for strip states");
	if (rc == RS_OK) {
		state_root(s, t->tmp);
		rc = intern(t, &root, err);
	}
	if (rc != RS_OK) {
		strip_states_free(t);
		return rc;
	}
	*out = t;
	return RS_OK;
}

void strip_states_free(struct strip_states *t)
{
	if (!t)
		return;
	free(t->v);
	free(t->index);
	free(t->tmp);
	free(t);
}

enum rs_code strip_states_child(struct strip_states *t, uint32_t parent, const char *name, size_t len,
				uint32_t *out, struct rs_err *err)
{
	assert(parent < t->n);
	state_child(t->s, t->v + (size_t)parent * t->words, name, len, t->tmp);
	return intern(t, out, err);
}

int strip_states_rule(const struct strip_states *t, uint32_t id)
{
	const uint64_t *st = t->v + (size_t)id * t->words;
	return strip_rule_of(st[0], st[1]);
}

/* ---- whole paths -------------------------------------------------------------- */

int strip_path_rule(const struct strip_rules *s, const char *path, struct strip_cache *cache)
{
	struct strip_cache local = {0};
	struct strip_cache *c = cache ? cache : &local;
	size_t words = state_words(s);
	if (!c->st && !(c->st = calloc(3 * words, sizeof(uint64_t))))
		return -2;
	uint64_t *dir_st = c->st, *cur = c->st + words, *next = c->st + 2 * words;
	const char *slash = strrchr(path, '/');
	size_t dlen = slash ? (size_t)(slash - path) : 0;
	const char *p = path;
	if (c->dir && dlen && c->dir_len == dlen && memcmp(c->dir, path, dlen) == 0) {
		memcpy(cur, dir_st, words * sizeof(uint64_t));
		p = path + dlen + 1;
	} else {
		state_root(s, cur);
	}
	/* each component in turn: the ancestors, then the path itself */
	for (;;) {
		const char *e = strchr(p, '/');
		size_t cl = e ? (size_t)(e - p) : strlen(p);
		state_child(s, cur, p, cl, next);
		uint64_t *x = cur;
		cur = next;
		next = x;
		if (!e)
			break;
		if (cache && (size_t)(e - path) == dlen) { /* remember the directory */
			char *d = realloc(c->dir, dlen + 1);
			if (d) {
				memcpy(d, path, dlen);
				d[dlen] = '\0';
				c->dir = d;
				c->dir_len = dlen;
				memcpy(dir_st, cur, words * sizeof(uint64_t));
			}
		}
		p = e + 1;
	}
	int rule = strip_rule_of(cur[0], cur[1]);
	if (!cache)
		strip_cache_dispose(&local);
	return rule;
}

void strip_cache_dispose(struct strip_cache *c)
{
	free(c->dir);
	free(c->st);
	memset(c, 0, sizeof(*c));
}
