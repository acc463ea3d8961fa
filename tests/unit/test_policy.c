/* test_policy: loading and validating optimization policies (defaults,
 * every key, error messages naming file, key path and expectation) and the
 * canonical form the optimizer hashes. Policies are written to a private
 * temp directory per test. */
#include "policy.h"

#include "fixture.h"
#include "xalloc.h"

#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char file[128];

static void setup(void)
{
	fixture_tmpdir_setup();
	ck_assert_int_lt(snprintf(file, sizeof(file), "%s", fixture_path("policy.json")), (int)sizeof(file));
}

static enum rs_code load(struct policy *p, const char *json, struct rs_err *err)
{
	fixture_write_text(file, json);
	return policy_load(p, file, err);
}

static const struct policy_rule *rule(const struct policy *p, const char *name)
{
	for (size_t i = 0; i < p->rule_count; i++)
		if (strcmp(p->rules[i].name, name) == 0)
			return &p->rules[i];
	return NULL;
}

/* Expect a failure whose message is "<file>: <rest>". */
static void expect_error(const char *json, enum rs_code code, const char *rest)
{
	struct policy p;
	struct rs_err err = {0};
	ck_assert_int_eq(load(&p, json, &err), code);
	char want[512];
	snprintf(want, sizeof(want), "%s: %s", file, rest);
	ck_assert_str_eq(err.msg, want);
	ck_assert_ptr_null(p.rules);
}

START_TEST(defaults_are_safe)
{
	struct policy p;
	struct rs_err err = {0};
	ck_assert_int_eq(policy_init_defaults(&p, &err), RS_OK);
	ck_assert_int_eq(p.squash, POLICY_SQUASH_ALL);
	ck_assert_int_eq(p.compression, POLICY_COMPRESS_ZSTD);
	ck_assert_int_eq(p.level, 3);
	ck_assert(p.dedupe);
	for (size_t i = 0; policy_builtin_rule_names[i]; i++) {
		const struct policy_rule *r = rule(&p, policy_builtin_rule_names[i]);
		ck_assert_ptr_nonnull(r);
		ck_assert_msg(r->enabled == (strcmp(r->name, "locales") != 0), "rule %s", r->name);
		ck_assert_uint_gt(r->include_count, 0);
	}
	ck_assert_uint_gt(rule(&p, "docs")->keep_count, 0);
	policy_dispose(&p);
	policy_dispose(&p); /* twice is harmless */
}
END_TEST

START_TEST(loads_every_key)
{
	struct policy p;
	struct rs_err err = {0};
	const char *json = "{\"squash\": \"keep-base\", \"base_layers\": [\"sha256:"
			   "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"],"
			   " \"dedupe\": false, \"compression\": \"gzip\", \"level\": 9,"
			   " \"strip\": {\"rules\": {\"docs\": false, \"locales\": true}, \"locales_keep\": [\"en\", \"pt_BR\"],"
			   " \"custom\": [{\"name\": \"logs\", \"paths\": [\"/var/log/*.log\"], \"keep\": [\"var/log/keep.log\"]}]}}";
	ck_assert_msg(load(&p, json, &err) == RS_OK, "%s", err.msg);
	ck_assert_int_eq(p.squash, POLICY_SQUASH_KEEP_BASE);
	ck_assert_uint_eq(p.base_layer_count, 1);
	ck_assert(!p.dedupe);
	ck_assert_int_eq(p.compression, POLICY_COMPRESS_GZIP);
	ck_assert_int_eq(p.level, 9);
	ck_assert(!rule(&p, "docs")->enabled);
	const struct policy_rule *loc = rule(&p, "locales");
	ck_assert(loc->enabled);
	ck_assert_str_eq(loc->keep[loc->keep_count - 1], "usr/share/locale/pt_BR");
	const struct policy_rule *c = rule(&p, "logs");
	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(c->include[0], "var/log/*.log"); /* leading '/' dropped */
	ck_assert_str_eq(c->keep[0], "var/log/keep.log");
	ck_assert_str_eq(p.source, file);
	policy_dispose(&p);
}
END_TEST

START_TEST(level_default_follows_compression)
{
	struct policy p;
	struct rs_err err = {0};
	ck_assert_int_eq(load(&p, "{\"compression\": \"gzip\"}", &err), RS_OK);
	ck_assert_int_eq(p.level, 6);
	policy_dispose(&p);
}
END_TEST

START_TEST(rejects_unknown_key)
{
	expect_error("{\"squash\": \"all\", \"sqush\": 1}", RS_CONFIG, "sqush: unknown key");
	expect_error("{\"strip\": {\"rule\": {}}}", RS_CONFIG, "strip.rule: unknown key");
	expect_error("{\"strip\": {\"custom\": [{\"paths\": [\"a\"], \"kep\": []}]}}", RS_CONFIG,
		     "strip.custom[0].kep: unknown key");
}
END_TEST

START_TEST(rejects_bad_values)
{
	expect_error("{\"squash\": \"some\"}", RS_CONFIG, "squash: expected \"all\", \"none\" or \"keep-base\", got \"some\"");
	expect_error("{\"squash\": 1}", RS_CONFIG, "squash: expected a string, got an integer");
	expect_error("{\"level\": 25}", RS_CONFIG, "level: expected 1..19 for zstd, got 25");
	expect_error("{\"compression\": \"gzip\", \"level\": 12}", RS_CONFIG, "level: expected 1..9 for gzip, got 12");
	expect_error("{\"compression\": \"none\", \"level\": 1}", RS_CONFIG,
		     "level: has no meaning with compression \"none\"");
	expect_error("{\"compression\": \"lz4\"}", RS_CONFIG,
		     "compression: expected \"zstd\", \"gzip\" or \"none\", got \"lz4\"");
	expect_error("{\"dedupe\": \"yes\"}", RS_CONFIG, "dedupe: expected true or false, got a string");
	expect_error("{\"strip\": {\"rules\": {\"nope\": true}}}", RS_CONFIG,
		     "strip.rules.nope: unknown rule (known: apt-lists, apt-cache, apt-dpkg-logs, docs, man-pages, "
		     "info-pages, pip-cache, npm-cache, yarn-cache, go-cache, tmp, pycache, locales)");
	expect_error("{\"strip\": {\"rules\": {\"docs\": 0}}}", RS_CONFIG,
		     "strip.rules.docs: expected true or false, got an integer");
	expect_error("[]", RS_CONFIG, "expected a JSON object at the top level, got an array");
}
END_TEST

START_TEST(rejects_bad_digests_and_globs)
{
	expect_error("{\"squash\": \"keep-base\", \"base_layers\": [\"sha256:abc\"]}", RS_CONFIG,
		     "base_layers[0]: expected \"sha256:\" and 64 lower-case hex digits, got \"sha256:abc\"");
	expect_error("{\"base_layers\": [\"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"]}",
		     RS_CONFIG, "base_layers: only has a meaning with squash \"keep-base\"");
	expect_error("{\"strip\": {\"custom\": [{\"paths\": [\"usr/../etc\"]}]}}", RS_CONFIG,
		     "strip.custom[0].paths[0]: expected a relative path glob without empty, '.' or '..' components, got "
		     "\"usr/../etc\"");
	expect_error("{\"strip\": {\"custom\": [{\"paths\": [\"/\"]}]}}", RS_CONFIG,
		     "strip.custom[0].paths[0]: expected a non-empty path glob, got \"/\"");
	/* the matcher keeps one bit per glob component (RS_LIMIT_GLOB_COMPONENTS) */
	char deep[300], json[400], want[400];
	size_t n = 0;
	for (int i = 0; i < 64; i++)
		n += (size_t)snprintf(deep + n, sizeof(deep) - n, i ? "/a" : "a");
	snprintf(json, sizeof(json), "{\"strip\": {\"custom\": [{\"paths\": [\"%s\"]}]}}", deep);
	snprintf(want, sizeof(want), "strip.custom[0].paths[0]: glob has more than 63 components, got \"%.60s...\"", deep);
	expect_error(json, RS_CONFIG, want);
	deep[n - 2] = '\0'; /* 63 components are fine */
	snprintf(json, sizeof(json), "{\"strip\": {\"custom\": [{\"paths\": [\"%s\"]}]}}", deep);
	struct policy p;
	struct rs_err err = {0};
	ck_assert_int_eq(policy_load_buffer(&p, "p.json", json, strlen(json), &err), RS_OK);
	policy_dispose(&p);
	expect_error("{\"strip\": {\"custom\": [{\"paths\": []}]}}", RS_CONFIG,
		     "strip.custom[0].paths: expected at least one path glob");
	expect_error("{\"strip\": {\"custom\": [{\"keep\": [\"a\"]}]}}", RS_CONFIG,
		     "strip.custom[0].paths: missing: a custom rule needs path globs");
	expect_error("{\"strip\": {\"custom\": [{\"name\": \"docs\", \"paths\": [\"x\"]}]}}", RS_CONFIG,
		     "strip.custom[0].name: rule name \"docs\" is already used");
	expect_error("{\"strip\": {\"locales_keep\": [\"../x\"]}}", RS_CONFIG,
		     "strip.locales_keep[0]: expected a locale directory name like \"en\" or \"pt_BR\", got \"../x\"");
}
END_TEST

START_TEST(reports_json_syntax_position)
{
	struct policy p;
	struct rs_err err = {0};
	ck_assert_int_eq(load(&p, "{\n  \"squash\": \"all\",,\n}", &err), RS_CONFIG);
	char want[256];
	snprintf(want, sizeof(want), "%s:2:19: invalid JSON:", file);
	ck_assert_msg(strncmp(err.msg, want, strlen(want)) == 0, "got %s", err.msg);
	ck_assert_int_eq(load(&p, "{\"squash\": \"all\", \"squash\": \"none\"}", &err), RS_CONFIG);
	ck_assert_ptr_nonnull(strstr(err.msg, "duplicate"));
}
END_TEST

START_TEST(missing_file_is_io_error)
{
	struct policy p;
	struct rs_err err = {0};
	ck_assert_int_eq(policy_load(&p, "/nonexistent/policy.json", &err), RS_IO);
	ck_assert_str_eq(err.msg, "/nonexistent/policy.json: cannot open: No such file or directory");
}
END_TEST

START_TEST(canonical_form_is_stable_and_complete)
{
	struct policy a, b, c;
	struct rs_err err = {0};
	ck_assert_int_eq(load(&a, "{\"level\": 3, \"squash\": \"all\"}", &err), RS_OK);
	ck_assert_int_eq(policy_init_defaults(&b, &err), RS_OK);
	ck_assert_int_eq(load(&c, "{\"strip\": {\"rules\": {\"tmp\": false}}}", &err), RS_OK);
	char *ca, *cb, *cc;
	size_t la, lb, lc;
	ck_assert_int_eq(policy_canonical(&ca, &la, &a, &err), RS_OK);
	ck_assert_int_eq(policy_canonical(&cb, &lb, &b, &err), RS_OK);
	ck_assert_int_eq(policy_canonical(&cc, &lc, &c, &err), RS_OK);
	ck_assert_str_eq(ca, cb); /* the same effective policy, spelled differently */
	ck_assert_str_ne(ca, cc);
	ck_assert_uint_eq(la, strlen(ca));
	const char *head = "{\"squash\":\"all\",\"base_layers\":[],\"dedupe\":true,\"compression\":\"zstd\",\"level\":3,";
	ck_assert_msg(strncmp(ca, head, strlen(head)) == 0, "%s", ca);
	free(ca);
	free(cb);
	free(cc);
	policy_dispose(&a);
	policy_dispose(&b);
	policy_dispose(&c);
}
END_TEST

static long alloc_budget = -1; /* -1: unlimited */

static bool budget_exhausted(void)
{
	if (alloc_budget < 0)
		return false;
	if (alloc_budget == 0)
		return true;
	alloc_budget--;
	return false;
}

static void *budget_malloc(size_t n)
{
	return budget_exhausted() ? NULL : malloc(n);
}

/* Fail the n-th allocation for n = 0, 1, ... until the load succeeds: with
 * policy.c's own allocations failing the result is exactly RS_NOMEM; with
 * jansson's failing too, jansson's parser reports some failed allocations as
 * syntax errors, so RS_CONFIG is accepted there. Always a zeroed policy and
 * no leak (the ASan build checks that). */
static void alloc_failures(bool jansson_too)
{
	const char *json = "{\"squash\": \"keep-base\", \"base_layers\": [\"sha256:"
			   "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"],"
			   " \"strip\": {\"rules\": {\"locales\": true}, \"locales_keep\": [\"en\"],"
			   " \"custom\": [{\"name\": \"x\", \"paths\": [\"a/*\", \"b\"], \"keep\": [\"a/k\"]}]}}";
	long n;
	for (n = 0;; n++) {
		struct policy p;
		struct rs_err err = {0};
		alloc_budget = n;
		xalloc_set_fail_hook(budget_exhausted);
		if (jansson_too)
			json_set_alloc_funcs(budget_malloc, free);
		enum rs_code rc = policy_load_buffer(&p, "p.json", json, strlen(json), &err);
		char *canon = NULL;
		size_t len;
		if (rc == RS_OK) {
			rc = policy_canonical(&canon, &len, &p, &err);
			policy_dispose(&p);
		}
		xalloc_set_fail_hook(NULL);
		json_set_alloc_funcs(malloc, free);
		alloc_budget = -1;
		free(canon);
		if (rc == RS_OK)
			break;
		ck_assert_msg(rc == RS_NOMEM || (jansson_too && rc == RS_CONFIG), "allocation %ld: %s (%d)", n,
			      err.msg, rc);
		ck_assert_ptr_null(p.rules);
		ck_assert_ptr_null(strchr(err.msg, '\n'));
		ck_assert_uint_lt(n, 100000);
	}
	ck_assert_uint_gt(n, 20);
}

START_TEST(every_allocation_failure_gives_nomem)
{
	alloc_failures(false);
	alloc_failures(true);
}
END_TEST

static Suite *policy_suite(void)
{
	Suite *s = suite_create("policy");
	TCase *t = tcase_create("core");
	tcase_add_checked_fixture(t, setup, fixture_tmpdir_teardown);
	tcase_add_test(t, defaults_are_safe);
	tcase_add_test(t, loads_every_key);
	tcase_add_test(t, level_default_follows_compression);
	tcase_add_test(t, rejects_unknown_key);
	tcase_add_test(t, rejects_bad_values);
	tcase_add_test(t, rejects_bad_digests_and_globs);
	tcase_add_test(t, reports_json_syntax_position);
	tcase_add_test(t, missing_file_is_io_error);
	tcase_add_test(t, canonical_form_is_stable_and_complete);
	tcase_add_test(t, every_allocation_failure_gives_nomem);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	return fixture_run_suite(policy_suite());
}
