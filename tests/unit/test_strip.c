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

/* Evaluate a path the way squash.c does: component by component. */
static int rule_for(const struct strip_rules *s, const char *path)
{
	char buf[512];
	uint64_t inc = 0, keep = 0;
	size_t n = strlen(path);
	for (size_t i = 0; i <= n; i++) {
		if (path[i] == '/' || path[i] == '\0') {
			memcpy(buf, path, i);
			buf[i] = '\0';
			strip_eval(s, buf, inc, keep, &inc, &keep);
		}
	}
	int want = strip_rule_of(inc, keep);
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
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	return fixture_run_suite(strip_suite());
}
