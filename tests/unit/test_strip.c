/* test_strip: glob matching ('*', '?', classes, escapes, "**") and the
 * incremental rule evaluation with keep-exceptions over ancestor paths, for
 * the built-in rules and custom ones. */
#include "policy.h"

#include "fixture.h"
#include "strip.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

START_TEST(glob_star_stays_within_a_component)
{
	ck_assert(strip_glob_match("usr/share/doc/*", "usr/share/doc/bash"));
	ck_assert(!strip_glob_match("usr/share/doc/*", "usr/share/doc/bash/README"));
	ck_assert(!strip_glob_match("usr/share/doc/*", "usr/share/doc"));
	ck_assert(strip_glob_match("var/log/dpkg.log*", "var/log/dpkg.log.1"));
	ck_assert(strip_glob_match("a*b*c", "aXXbYYc"));
	ck_assert(!strip_glob_match("a*b*c", "aXXbYY"));
	ck_assert(strip_glob_match("?.txt", "a.txt"));
	ck_assert(!strip_glob_match("?.txt", "ab.txt"));
}
END_TEST

START_TEST(glob_double_star_matches_zero_or_more_components)
{
	ck_assert(strip_glob_match("**/__pycache__", "__pycache__"));
	ck_assert(strip_glob_match("**/__pycache__", "usr/lib/python3/__pycache__"));
	ck_assert(!strip_glob_match("**/__pycache__", "usr/lib/python3/__pycache__/x.pyc"));
	ck_assert(strip_glob_match("usr/share/doc/**/copyright", "usr/share/doc/copyright"));
	ck_assert(strip_glob_match("usr/share/doc/**/copyright", "usr/share/doc/a/b/copyright"));
	ck_assert(!strip_glob_match("usr/share/doc/**/copyright", "usr/share/doc/a/b/copyright.txt"));
	ck_assert(strip_glob_match("a/**", "a/b/c"));
	ck_assert(strip_glob_match("a/**", "a"));
	ck_assert(strip_glob_match("**", "anything/at/all"));
	ck_assert(!strip_glob_match("a/**/b", "x/a/b"));
}
END_TEST

START_TEST(glob_classes_and_escapes)
{
	ck_assert(strip_glob_match("LICEN[CS]E*", "LICENSE.md"));
	ck_assert(strip_glob_match("LICEN[CS]E*", "LICENCE"));
	ck_assert(!strip_glob_match("LICEN[CS]E*", "LICENXE"));
	ck_assert(strip_glob_match("[!a]x", "bx"));
	ck_assert(!strip_glob_match("[^a]x", "ax"));
	ck_assert(strip_glob_match("[a-c]", "b"));
	ck_assert(strip_glob_match("\\*", "*"));
	ck_assert(!strip_glob_match("\\*", "x"));
	ck_assert(strip_glob_match("[x", "[x")); /* unclosed class is literal */
}
END_TEST

/* strip_path_rule's cache, emptied with the rules (free_rules). */
static struct strip_cache cache;

static void free_rules(struct strip_rules *s)
{
	strip_cache_dispose(&cache);
	strip_free(s);
}

/* Evaluate a path the way squash.c does: component by component, through
 * interned states. */
static int rule_for(const struct strip_rules *s, const char *path)
{
	struct strip_states *t;
	struct rs_err err = {0};
	ck_assert_int_eq(strip_states_new(&t, s, &err), RS_OK);
	uint32_t st = 0;
	for (const char *p = path;;) {
		const char *e = strchr(p, '/');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		ck_assert_int_eq(strip_states_child(t, st, p, n, &st, &err), RS_OK);
		if (!e)
			break;
		p = e + 1;
	}
	int want = strip_states_rule(t, st);
	strip_states_free(t);
	/* strip_path_rule walks the same prefixes, with and without its cache
	 * of the last directory (kept across calls, as the scan does) */
	ck_assert_int_eq(strip_path_rule(s, path, NULL), want);
	ck_assert_int_eq(strip_path_rule(s, path, &cache), want);
	ck_assert_int_eq(strip_path_rule(s, path, &cache), want);
	return want;
}

static const char *rule_name(const struct strip_rules *s, const char *path)
{
	int r = rule_for(s, path);
	return r < 0 ? "-" : strip_rule_name(s, (size_t)r);
}

START_TEST(default_rules_strip_caches_and_docs_but_keep_licenses)
{
	struct policy p;
	struct strip_rules *s;
	struct rs_err err = {0};
	ck_assert_int_eq(policy_init_defaults(&p, &err), RS_OK);
	ck_assert_int_eq(strip_new(&s, &p, &err), RS_OK);
	ck_assert_str_eq(rule_name(s, "var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease"), "apt-lists");
	ck_assert_str_eq(rule_name(s, "var/lib/apt/lists"), "-");
	ck_assert_str_eq(rule_name(s, "var/lib/apt/lists/partial/x"), "apt-lists");
	ck_assert_str_eq(rule_name(s, "var/cache/apt/pkgcache.bin"), "apt-cache");
	ck_assert_str_eq(rule_name(s, "var/cache/apt/archives/curl_7.88_amd64.deb"), "apt-cache");
	ck_assert_str_eq(rule_name(s, "var/log/apt/term.log"), "apt-dpkg-logs");
	ck_assert_str_eq(rule_name(s, "var/log/dpkg.log"), "apt-dpkg-logs");
	ck_assert_str_eq(rule_name(s, "usr/share/doc/bash/README.gz"), "docs");
	ck_assert_str_eq(rule_name(s, "usr/share/doc/bash"), "docs");
	ck_assert_str_eq(rule_name(s, "usr/share/doc/bash/copyright"), "-");
	ck_assert_str_eq(rule_name(s, "usr/share/doc/node/LICENSE.md"), "-");
	ck_assert_str_eq(rule_name(s, "usr/share/man/man1/ls.1.gz"), "man-pages");
	ck_assert_str_eq(rule_name(s, "usr/share/info/dir"), "info-pages");
	ck_assert_str_eq(rule_name(s, "root/.cache/pip/http/x"), "pip-cache");
	ck_assert_str_eq(rule_name(s, "root/.npm/_cacache/index-v5/00"), "npm-cache");
	ck_assert_str_eq(rule_name(s, "home/app/.cache/yarn/v6/x"), "yarn-cache");
	ck_assert_str_eq(rule_name(s, "root/.cache/go-build/00/x"), "go-cache");
	ck_assert_str_eq(rule_name(s, "tmp/x"), "tmp");
	ck_assert_str_eq(rule_name(s, "tmp"), "-");
	ck_assert_str_eq(rule_name(s, "var/tmp/a/b"), "tmp");
	ck_assert_str_eq(rule_name(s, "usr/lib/python3/dist-packages/__pycache__/a.cpython-311.pyc"), "pycache");
	ck_assert_str_eq(rule_name(s, "usr/share/locale/de/LC_MESSAGES/x.mo"), "-");
	ck_assert_str_eq(rule_name(s, "usr/bin/python3"), "-");
	ck_assert_str_eq(rule_name(s, "etc/apt/sources.list"), "-");
	free_rules(s);
	policy_dispose(&p);
}
END_TEST

START_TEST(locales_and_custom_rules_honour_keep)
{
	struct policy p;
	struct strip_rules *s;
	struct rs_err err = {0};
	const char *json = "{\"strip\": {\"rules\": {\"locales\": true}, \"locales_keep\": [\"en\"],"
			   " \"custom\": [{\"name\": \"opt\", \"paths\": [\"opt/app/*\"], \"keep\": [\"opt/app/bin\"]}]}}";
	ck_assert_int_eq(policy_load_buffer(&p, "p.json", json, strlen(json), &err), RS_OK);
	ck_assert_int_eq(strip_new(&s, &p, &err), RS_OK);
	ck_assert_str_eq(rule_name(s, "usr/share/locale/de/LC_MESSAGES/x.mo"), "locales");
	ck_assert_str_eq(rule_name(s, "usr/share/locale/en/LC_MESSAGES/x.mo"), "-");
	ck_assert_str_eq(rule_name(s, "usr/share/locale/locale.alias"), "-");
	ck_assert_str_eq(rule_name(s, "opt/app/share/x"), "opt");
	ck_assert_str_eq(rule_name(s, "opt/app/bin/tool"), "-"); /* keep applies to what is below it */
	ck_assert_str_eq(rule_name(s, "opt/app"), "-");
	free_rules(s);
	policy_dispose(&p);
}
END_TEST

START_TEST(disabled_rules_strip_nothing)
{
	struct policy p;
	struct strip_rules *s;
	struct rs_err err = {0};
	const char *json = "{\"strip\": {\"rules\": {\"docs\": false, \"pycache\": false}}}";
	ck_assert_int_eq(policy_load_buffer(&p, "p.json", json, strlen(json), &err), RS_OK);
	ck_assert_int_eq(strip_new(&s, &p, &err), RS_OK);
	ck_assert_str_eq(rule_name(s, "usr/share/doc/bash/README.gz"), "-");
	ck_assert_str_eq(rule_name(s, "a/__pycache__/b.pyc"), "-");
	ck_assert_str_eq(rule_name(s, "tmp/x"), "tmp");
	free_rules(s);
	policy_dispose(&p);
}
END_TEST


/* ---- the automaton against the recursive matcher it replaced ---- */

/* The previous matcher (component recursion with backtracking on "**"),
 * kept as the reference for the automaton's results. */
/* Match one component: pattern p[0..pl) against s[0..sl). */
static bool ref_component(const char *p, size_t pl, const char *s, size_t sl)
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

static size_t ref_comp_len(const char *s)
{
	const char *e = strchr(s, '/');
	return e ? (size_t)(e - s) : strlen(s);
}

static bool ref_match(const char *g, const char *path)
{
	if (!*g)
		return !*path;
	size_t gl = ref_comp_len(g);
	const char *g_rest = g[gl] == '/' ? g + gl + 1 : g + gl;
	if (gl == 2 && g[0] == '*' && g[1] == '*') {
		if (!*g_rest)
			return true;
		const char *p = path;
		for (;;) {
			if (ref_match(g_rest, p))
				return true;
			const char *slash = strchr(p, '/');
			if (!slash)
				return false;
			p = slash + 1;
		}
	}
	if (!*path)
		return false;
	size_t pl = ref_comp_len(path);
	if (!ref_component(g, gl, path, pl))
		return false;
	const char *p_rest = path[pl] == '/' ? path + pl + 1 : path + pl;
	if (!*g_rest)
		return !*p_rest && path[pl] != '/';
	if (!*p_rest) {
		/* the path ended; only trailing "**" components may remain */
		while (*g_rest) {
			size_t l = ref_comp_len(g_rest);
			if (!(l == 2 && g_rest[0] == '*' && g_rest[1] == '*'))
				return false;
			g_rest += l + (g_rest[l] == '/');
		}
		return true;
	}
	return ref_match(g_rest, p_rest);
}


static void random_component(uint64_t *seed, char *out, size_t *n, bool glob)
{
	static const char alpha[] = "ab.";
	static const char *const pieces[] = {"*", "?", "[ab]", "[!a]", "a*", "*b", "**"};
	size_t len = 1 + fixture_rng_next(seed) % 3;
	for (size_t i = 0; i < len; i++) {
		if (glob && fixture_rng_next(seed) % 3 == 0) {
			const char *pc = pieces[fixture_rng_next(seed) % (len == 1 ? 7 : 6)];
			memcpy(out + *n, pc, strlen(pc));
			*n += strlen(pc);
		} else {
			out[(*n)++] = alpha[fixture_rng_next(seed) % 3];
		}
	}
}

static void random_path(uint64_t *seed, char *out, size_t max_components, bool glob)
{
	size_t n = 0, k = 1 + fixture_rng_next(seed) % max_components;
	for (size_t i = 0; i < k; i++) {
		if (i)
			out[n++] = '/';
		random_component(seed, out, &n, glob);
	}
	out[n] = '\0';
}

START_TEST(automaton_matches_the_reference_matcher)
{
	uint64_t seed = 0x5eed5eedULL;
	char glob[256], path[256];
	size_t matches = 0;
	for (int i = 0; i < 200000; i++) {
		random_path(&seed, glob, 5, true);
		random_path(&seed, path, 6, false);
		bool want = ref_match(glob, path);
		matches += want;
		ck_assert_msg(strip_glob_match(glob, path) == want, "glob '%s' path '%s': want %d", glob, path, want);
	}
	ck_assert_uint_gt(matches, 1000); /* the generator reaches both outcomes */
}
END_TEST

/* A path of 100,000 components costs what 100,000 short paths cost: the
 * matcher used to be quadratic in depth (minutes for such a path). */
START_TEST(deep_paths_cost_linear_time)
{
	struct policy p;
	struct strip_rules *s;
	struct rs_err err = {0};
	ck_assert_int_eq(policy_init_defaults(&p, &err), RS_OK);
	ck_assert_int_eq(strip_new(&s, &p, &err), RS_OK);
	size_t k = 100000;
	char *deep = malloc(2 * k + 32);
	ck_assert_ptr_nonnull(deep);
	for (size_t i = 0; i < k; i++)
		memcpy(deep + 2 * i, "a/", 2);
	memcpy(deep + 2 * k, "__pycache__/x.pyc", 18);
	ck_assert_str_eq(rule_name(s, deep), "pycache");
	ck_assert(!strip_glob_match("**/b/**/c", deep));
	free(deep);
	free_rules(s);
	policy_dispose(&p);
}
END_TEST

static Suite *strip_suite(void)
{
	Suite *s = suite_create("strip");
	TCase *t = tcase_create("core");
	tcase_add_test(t, glob_star_stays_within_a_component);
	tcase_add_test(t, glob_double_star_matches_zero_or_more_components);
	tcase_add_test(t, glob_classes_and_escapes);
	tcase_add_test(t, default_rules_strip_caches_and_docs_but_keep_licenses);
	tcase_add_test(t, locales_and_custom_rules_honour_keep);
	tcase_add_test(t, disabled_rules_strip_nothing);
	tcase_add_test(t, automaton_matches_the_reference_matcher);
	tcase_add_test(t, deep_paths_cost_linear_time);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	return fixture_run_suite(strip_suite());
}
