/* test_squash: the squash plan's decisions for OCI overlay semantics
 * (whiteouts, opaque directories, same-layer rules), squash groups
 * (all / none / keep-base), identical-rewrite dedupe, strip with directory
 * retention, hard-link repair, limits and dive's efficiency score. Entries
 * are fed as parsed tar metadata, as the pipeline's pass 1 does. */
#include "policy.h"

#include "fixture.h"
#include "xalloc.h"
#include "squash.h"
#include "strip.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IDENT_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define IDENT_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

struct fx {
	struct squash_plan *plan;
	struct strip_rules *strip;
	struct policy pol;
	uint64_t off[8];   /* next header offset per layer */
	uint64_t count[8]; /* entries fed per layer */
	uint64_t at[8][32]; /* header offset of each entry */
};

static void fx_init(struct fx *f, enum policy_squash mode, size_t layers, size_t base, bool strip)
{
	memset(f, 0, sizeof(*f));
	struct rs_err err = {0};
	ck_assert_int_eq(policy_init_defaults(&f->pol, &err), RS_OK);
	if (strip)
		ck_assert_int_eq(strip_new(&f->strip, &f->pol, &err), RS_OK);
	struct squash_opts o = {mode, layers, base, true, f->strip, 0};
	ck_assert_int_eq(squash_new(&f->plan, &o, &err), RS_OK);
}

static void fx_free(struct fx *f)
{
	squash_free(f->plan);
	strip_free(f->strip);
	policy_dispose(&f->pol);
}

/* Feed one entry; returns its ordinal within the layer. */
static uint64_t add(struct fx *f, size_t layer, const char *path, char type, const char *link, uint64_t size,
		    const char *ident)
{
	struct tar_entry e;
	memset(&e, 0, sizeof(e));
	e.path = path;
	e.type = type;
	e.linkpath = link ? link : "";
	e.size = size;
	e.real_size = size;
	e.uname = e.gname = "";
	e.mode = type == '5' ? 0755 : 0644;
	e.header_offset = f->off[layer];
	e.index = f->count[layer];
	ck_assert_uint_lt(f->count[layer], 32);
	f->at[layer][f->count[layer]] = e.header_offset;
	f->off[layer] += 512 + ((size + 511) / 512) * 512;
	struct rs_err err = {0};
	enum rs_code rc = squash_add(f->plan, layer, &e, ident ? ident : IDENT_A, &err);
	ck_assert_msg(rc == RS_OK, "squash_add %s: %s", path, err.msg);
	return f->count[layer]++;
}

static void finish(struct fx *f)
{
	struct rs_err err = {0};
	ck_assert_int_eq(squash_finish(f->plan, &err), RS_OK);
}

/* The decision for the ordinal-th entry of layer. */
static struct squash_decision decide(struct fx *f, size_t layer, uint64_t ordinal)
{
	struct squash_decision d;
	struct rs_err err = {0};
	enum rs_code rc = squash_decide(f->plan, layer, ordinal, f->at[layer][ordinal], &d, &err);
	ck_assert_msg(rc == RS_OK, "decide layer %zu entry %llu: %s", layer, (unsigned long long)ordinal, err.msg);
	return d;
}

START_TEST(whiteout_deletes_lower_layer_paths)
{
	struct fx f;
	fx_init(&f, POLICY_SQUASH_ALL, 2, 0, false);
	uint64_t a = add(&f, 0, "a", '5', NULL, 0, NULL);
	uint64_t x = add(&f, 0, "a/x", '0', NULL, 10, NULL);
	uint64_t y = add(&f, 0, "a/y", '0', NULL, 10, NULL);
	uint64_t w = add(&f, 1, "a/.wh.x", '0', NULL, 0, NULL);
	uint64_t x2 = add(&f, 1, "a/x2", '0', NULL, 10, NULL);
	finish(&f);
	ck_assert_int_eq(decide(&f, 0, a).action, SQUASH_EMIT);
	ck_assert_int_eq(decide(&f, 0, x).action, SQUASH_DROP);
	ck_assert_int_eq(decide(&f, 0, x).reason, SQUASH_BY_OVERLAY);
	ck_assert_int_eq(decide(&f, 0, y).action, SQUASH_EMIT);
	ck_assert_int_eq(decide(&f, 1, w).action, SQUASH_DROP);
	ck_assert_int_eq(decide(&f, 1, x2).action, SQUASH_EMIT);
	struct squash_stats st;
	squash_stats(f.plan, &st);
	ck_assert_uint_eq(st.whiteouts_applied, 1);
	fx_free(&f);
}
END_TEST

START_TEST(whiteout_never_hides_its_own_layer)
{
	struct fx f;
	fx_init(&f, POLICY_SQUASH_ALL, 2, 0, false);
	uint64_t lz = add(&f, 0, "z", '0', NULL, 5, NULL);
	uint64_t z = add(&f, 1, "z", '0', NULL, 7, IDENT_B);
	add(&f, 1, ".wh.z", '0', NULL, 0, NULL);
	finish(&f);
	ck_assert_int_eq(decide(&f, 0, lz).action, SQUASH_DROP);
	ck_assert_int_eq(decide(&f, 1, z).action, SQUASH_EMIT);
	fx_free(&f);
}
END_TEST

START_TEST(opaque_hides_lower_children_only)
{
	struct fx f;
	fx_init(&f, POLICY_SQUASH_ALL, 2, 0, false);
	uint64_t d = add(&f, 0, "d", '5', NULL, 0, NULL);
	uint64_t a = add(&f, 0, "d/a", '0', NULL, 1, NULL);
	uint64_t sub = add(&f, 0, "d/sub", '5', NULL, 0, NULL);
	uint64_t b = add(&f, 0, "d/sub/b", '0', NULL, 1, NULL);
	uint64_t other = add(&f, 0, "e/keep", '0', NULL, 1, NULL);
	uint64_t c = add(&f, 1, "d/c", '0', NULL, 1, NULL);
	uint64_t o = add(&f, 1, "d/.wh..wh..opq", '0', NULL, 0, NULL);
	uint64_t e = add(&f, 1, "d/e", '0', NULL, 1, NULL);
	finish(&f);
	ck_assert_int_eq(decide(&f, 0, d).action, SQUASH_EMIT);
	ck_assert_int_eq(decide(&f, 0, a).action, SQUASH_DROP);
	ck_assert_int_eq(decide(&f, 0, sub).action, SQUASH_DROP);
	ck_assert_int_eq(decide(&f, 0, b).action, SQUASH_DROP);
	ck_assert_int_eq(decide(&f, 0, other).action, SQUASH_EMIT);
	ck_assert_int_eq(decide(&f, 1, c).action, SQUASH_EMIT);
	ck_assert_int_eq(decide(&f, 1, o).action, SQUASH_DROP);
	ck_assert_int_eq(decide(&f, 1, e).action, SQUASH_EMIT);
	fx_free(&f);
}
END_TEST

START_TEST(file_replacing_directory_removes_its_subtree)
{
	struct fx f;
	fx_init(&f, POLICY_SQUASH_ALL, 2, 0, false);
	uint64_t d = add(&f, 0, "d", '5', NULL, 0, NULL);
	uint64_t x = add(&f, 0, "d/x", '0', NULL, 1, NULL);
	uint64_t nd = add(&f, 1, "d", '2', "elsewhere", 0, NULL);
	finish(&f);
	ck_assert_int_eq(decide(&f, 0, d).action, SQUASH_DROP);
	ck_assert_int_eq(decide(&f, 0, x).action, SQUASH_DROP);
	ck_assert_int_eq(decide(&f, 1, nd).action, SQUASH_EMIT);
	fx_free(&f);
}
END_TEST

START_TEST(keep_base_keeps_whiteouts_above_the_base)
{
	struct fx f;
	fx_init(&f, POLICY_SQUASH_KEEP_BASE, 3, 1, false);
	uint64_t x = add(&f, 0, "x", '0', NULL, 1, NULL);
	uint64_t y = add(&f, 1, "y", '0', NULL, 1, NULL);
	uint64_t w = add(&f, 2, ".wh.x", '0', NULL, 0, NULL);
	uint64_t wy = add(&f, 2, ".wh.y", '0', NULL, 0, NULL);
	finish(&f);
	ck_assert_uint_eq(squash_group_count(f.plan), 2);
	ck_assert(squash_group_is_base(f.plan, 0));
	ck_assert(!squash_group_is_base(f.plan, 1));
	ck_assert_int_eq(decide(&f, 0, x).action, SQUASH_EMIT);
	ck_assert_int_eq(decide(&f, 1, y).action, SQUASH_DROP);
	struct squash_decision d = decide(&f, 2, w);
	ck_assert_int_eq(d.action, SQUASH_EMIT);
	ck_assert_uint_eq(d.group, 1);
	ck_assert_int_eq(decide(&f, 2, wy).action, SQUASH_EMIT);
	fx_free(&f);
}
END_TEST

START_TEST(keep_base_never_strips_paths_the_base_holds)
{
	struct fx f;
	fx_init(&f, POLICY_SQUASH_KEEP_BASE, 2, 1, true);
	uint64_t b = add(&f, 0, "tmp/a", '0', NULL, 3, IDENT_A);
	uint64_t u = add(&f, 1, "tmp/a", '0', NULL, 4, IDENT_B);
	uint64_t v = add(&f, 1, "tmp/b", '0', NULL, 4, IDENT_B);
	finish(&f);
	ck_assert_int_eq(decide(&f, 0, b).action, SQUASH_EMIT);
	ck_assert_int_eq(decide(&f, 1, u).action, SQUASH_EMIT); /* else the base's tmp/a would show */
	ck_assert_int_eq(decide(&f, 1, v).action, SQUASH_DROP);
	ck_assert_int_eq(decide(&f, 1, v).reason, SQUASH_BY_STRIP);
	fx_free(&f);
}
END_TEST

START_TEST(squash_none_drops_identical_rewrites_only)
{
	struct fx f;
	fx_init(&f, POLICY_SQUASH_NONE, 2, 0, false);
	add(&f, 0, "same", '0', NULL, 9, IDENT_A);
	add(&f, 0, "diff", '0', NULL, 9, IDENT_A);
	uint64_t s = add(&f, 1, "same", '0', NULL, 9, IDENT_A);
	uint64_t d = add(&f, 1, "diff", '0', NULL, 9, IDENT_B);
	finish(&f);
	ck_assert_uint_eq(squash_group_count(f.plan), 2);
	ck_assert_int_eq(decide(&f, 1, s).action, SQUASH_DROP);
	ck_assert_int_eq(decide(&f, 1, s).reason, SQUASH_BY_DEDUPE);
	ck_assert_int_eq(decide(&f, 1, d).action, SQUASH_EMIT);
	ck_assert_int_eq(decide(&f, 0, 0).action, SQUASH_EMIT);
	struct squash_stats st;
	squash_stats(f.plan, &st);
	ck_assert_uint_eq(st.dup_entries, 1);
	ck_assert_uint_eq(st.dup_bytes, 9);
	fx_free(&f);
}
END_TEST

START_TEST(dedupe_is_cancelled_when_the_layer_hides_the_original)
{
	struct fx f;
	fx_init(&f, POLICY_SQUASH_NONE, 2, 0, false);
	add(&f, 0, "d", '5', NULL, 0, NULL);
	add(&f, 0, "d/f", '0', NULL, 3, IDENT_A);
	uint64_t n = add(&f, 1, "d/f", '0', NULL, 3, IDENT_A);
	add(&f, 1, "d/.wh..wh..opq", '0', NULL, 0, NULL);
	finish(&f);
	ck_assert_int_eq(decide(&f, 1, n).action, SQUASH_EMIT);
	fx_free(&f);
}
END_TEST

START_TEST(squash_all_counts_identical_rewrite_as_duplicate)
{
	struct fx f;
	fx_init(&f, POLICY_SQUASH_ALL, 2, 0, false);
	uint64_t e = add(&f, 0, "bin/sh", '0', NULL, 100, IDENT_A);
	uint64_t n = add(&f, 1, "bin/sh", '0', NULL, 100, IDENT_A);
	finish(&f);
	ck_assert_int_eq(decide(&f, 0, e).action, SQUASH_DROP);
	ck_assert_int_eq(decide(&f, 0, e).reason, SQUASH_BY_DEDUPE);
	ck_assert_int_eq(decide(&f, 1, n).action, SQUASH_EMIT);
	struct squash_stats st;
	squash_stats(f.plan, &st);
	ck_assert_uint_eq(st.dup_entries, 1);
	fx_free(&f);
}
END_TEST

START_TEST(hardlink_to_stripped_target_is_materialized_once)
{
	struct fx f;
	fx_init(&f, POLICY_SQUASH_ALL, 1, 0, true);
	uint64_t doc = add(&f, 0, "usr/share/doc/p/README", '0', NULL, 50, NULL);
	uint64_t x = add(&f, 0, "bin/x", '1', "usr/share/doc/p/README", 0, NULL);
	uint64_t y = add(&f, 0, "bin/y", '1', "usr/share/doc/p/README", 0, NULL);
	uint64_t z = add(&f, 0, "bin/z", '1', "bin/x", 0, NULL);
	finish(&f);
	struct squash_decision d = decide(&f, 0, doc);
	ck_assert_int_eq(d.action, SQUASH_DROP);
	ck_assert_int_eq(d.reason, SQUASH_BY_STRIP);
	ck_assert(d.spool);
	uint32_t slot = d.spool_id;
	d = decide(&f, 0, x);
	ck_assert_int_eq(d.action, SQUASH_MATERIALIZE);
	ck_assert_uint_eq(d.source_spool, slot);
	d = decide(&f, 0, y);
	ck_assert_int_eq(d.action, SQUASH_RELINK);
	ck_assert_str_eq(d.link_path, "bin/x");
	/* bin/z links to bin/x, which is still there: unchanged */
	ck_assert_int_eq(decide(&f, 0, z).action, SQUASH_EMIT);
	ck_assert_uint_eq(squash_spool_count(f.plan), 1);
	fx_free(&f);
}
END_TEST

START_TEST(hardlink_whose_target_is_overwritten_keeps_old_content)
{
	struct fx f;
	fx_init(&f, POLICY_SQUASH_ALL, 2, 0, false);
	uint64_t a = add(&f, 0, "a", '0', NULL, 4, IDENT_A);
	uint64_t b = add(&f, 0, "b", '1', "a", 0, NULL);
	uint64_t a2 = add(&f, 1, "a", '0', NULL, 8, IDENT_B);
	finish(&f);
	struct squash_decision d = decide(&f, 0, a);
	ck_assert_int_eq(d.action, SQUASH_DROP);
	ck_assert(d.spool);
	ck_assert_int_eq(decide(&f, 0, b).action, SQUASH_MATERIALIZE);
	ck_assert_int_eq(decide(&f, 1, a2).action, SQUASH_EMIT);
	fx_free(&f);
}
END_TEST

START_TEST(hardlink_to_surviving_target_is_copied)
{
	struct fx f;
	fx_init(&f, POLICY_SQUASH_ALL, 2, 0, true);
	add(&f, 0, "usr/bin/python3.11", '0', NULL, 40, NULL);
	uint64_t l = add(&f, 1, "usr/bin/python3", '1', "usr/bin/python3.11", 0, NULL);
	finish(&f);
	ck_assert_int_eq(decide(&f, 1, l).action, SQUASH_EMIT);
	fx_free(&f);
}
END_TEST

START_TEST(stripped_directory_stays_for_kept_children)
{
	struct fx f;
	fx_init(&f, POLICY_SQUASH_ALL, 1, 0, true);
	uint64_t dir = add(&f, 0, "usr/share/doc/p", '5', NULL, 0, NULL);
	uint64_t rd = add(&f, 0, "usr/share/doc/p/README.gz", '0', NULL, 10, NULL);
	uint64_t cp = add(&f, 0, "usr/share/doc/p/copyright", '0', NULL, 10, NULL);
	uint64_t gone = add(&f, 0, "usr/share/doc/q", '5', NULL, 0, NULL);
	uint64_t gone2 = add(&f, 0, "usr/share/doc/q/changelog.gz", '0', NULL, 10, NULL);
	uint64_t loc = add(&f, 0, "usr/share/locale/de/LC_MESSAGES/x.mo", '0', NULL, 10, NULL);
	uint64_t pyc = add(&f, 0, "usr/lib/python3/__pycache__/a.pyc", '0', NULL, 10, NULL);
	finish(&f);
	ck_assert_int_eq(decide(&f, 0, dir).action, SQUASH_EMIT);
	ck_assert_int_eq(decide(&f, 0, rd).action, SQUASH_DROP);
	ck_assert_int_eq(decide(&f, 0, cp).action, SQUASH_EMIT);
	ck_assert_int_eq(decide(&f, 0, gone).action, SQUASH_DROP);
	ck_assert_int_eq(decide(&f, 0, gone2).action, SQUASH_DROP);
	ck_assert_int_eq(decide(&f, 0, loc).action, SQUASH_EMIT); /* locales kept by default */
	ck_assert_int_eq(decide(&f, 0, pyc).action, SQUASH_DROP);
	struct squash_stats st;
	squash_stats(f.plan, &st);
	ck_assert_uint_eq(st.rule_entries[3], 3); /* docs: README, q, changelog */
	ck_assert_uint_eq(st.rule_bytes[3], 20);
	fx_free(&f);
}
END_TEST

START_TEST(rejects_hardlink_to_missing_target)
{
	struct fx f;
	fx_init(&f, POLICY_SQUASH_ALL, 1, 0, false);
	struct tar_entry e;
	memset(&e, 0, sizeof(e));
	e.path = "bin/a";
	e.type = '1';
	e.linkpath = "bin/nothing";
	e.uname = e.gname = "";
	e.header_offset = 1024;
	struct rs_err err = {0};
	ck_assert_int_eq(squash_add(f.plan, 0, &e, IDENT_A, &err), RS_BAD_INPUT);
	ck_assert_str_eq(err.msg,
			 "tar: entry 'bin/a' at offset 1024 in layer 1: hard link to 'bin/nothing', which is not in the image");
	fx_free(&f);
}
END_TEST

START_TEST(path_table_is_capped)
{
	struct squash_plan *p;
	struct rs_err err = {0};
	struct squash_opts o = {POLICY_SQUASH_ALL, 1, 0, true, NULL, 8};
	ck_assert_int_eq(squash_new(&p, &o, &err), RS_OK);
	enum rs_code rc = RS_OK;
	for (int i = 0; i < 20 && rc == RS_OK; i++) {
		char name[32];
		snprintf(name, sizeof(name), "f%d", i);
		struct tar_entry e;
		memset(&e, 0, sizeof(e));
		e.path = name;
		e.type = '0';
		e.linkpath = e.uname = e.gname = "";
		rc = squash_add(p, 0, &e, IDENT_A, &err);
	}
	ck_assert_int_eq(rc, RS_TOO_LARGE);
	ck_assert_ptr_nonnull(strstr(err.msg, "RS_LIMIT_PATH_TABLE_ENTRIES"));
	squash_free(p);
}
END_TEST

START_TEST(decide_refuses_a_changed_layer)
{
	struct fx f;
	fx_init(&f, POLICY_SQUASH_ALL, 1, 0, false);
	add(&f, 0, "a", '0', NULL, 1, NULL);
	finish(&f);
	struct squash_decision d;
	struct rs_err err = {0};
	ck_assert_int_eq(squash_decide(f.plan, 0, 0, 4096, &d, &err), RS_BAD_INPUT);
	ck_assert_ptr_nonnull(strstr(err.msg, "changed between passes"));
	ck_assert_int_eq(squash_decide(f.plan, 0, 5, 0, &d, &err), RS_BAD_INPUT);
	fx_free(&f);
}
END_TEST

START_TEST(efficiency_counts_overwritten_bytes_as_waste)
{
	struct fx f;
	fx_init(&f, POLICY_SQUASH_ALL, 2, 0, false);
	add(&f, 0, "big", '0', NULL, 100, IDENT_A);
	add(&f, 0, "other", '0', NULL, 100, IDENT_A);
	add(&f, 1, "big", '0', NULL, 100, IDENT_B);
	finish(&f);
	struct squash_stats st;
	squash_stats(f.plan, &st);
	ck_assert(st.efficiency_in > 0.66 && st.efficiency_in < 0.67);
	ck_assert(st.efficiency_out > 0.999);
	ck_assert_uint_eq(st.wasted_in, 100);
	ck_assert_uint_eq(st.wasted_out, 0);
	fx_free(&f);
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

/* One scenario touching every allocation site: tables growing past their
 * first size, whiteouts, opaque dirs, links repaired, strip, decisions. */
static enum rs_code scenario(const struct strip_rules *strip, struct rs_err *err)
{
	struct squash_plan *p = NULL;
	struct squash_opts o = {POLICY_SQUASH_ALL, 2, 0, true, strip, 0};
	enum rs_code rc = squash_new(&p, &o, err);
	uint64_t off = 0;
	char name[64];
	for (int i = 0; rc == RS_OK && i < 1500; i++) {
		struct tar_entry e;
		memset(&e, 0, sizeof(e));
		snprintf(name, sizeof(name), "usr/share/doc/d%d/f%d", i % 7, i);
		e.path = name;
		e.type = '0';
		e.linkpath = e.uname = e.gname = "";
		e.size = 1;
		e.header_offset = off;
		off += 1024;
		rc = squash_add(p, 0, &e, IDENT_A, err);
	}
	struct tar_entry l;
	memset(&l, 0, sizeof(l));
	l.uname = l.gname = "";
	l.type = '1';
	l.path = "bin/x";
	l.linkpath = "usr/share/doc/d0/f0";
	l.header_offset = off;
	if (rc == RS_OK)
		rc = squash_add(p, 0, &l, IDENT_A, err);
	l.path = "bin/y";
	l.header_offset = off + 512;
	if (rc == RS_OK)
		rc = squash_add(p, 0, &l, IDENT_A, err);
	struct tar_entry w;
	memset(&w, 0, sizeof(w));
	w.uname = w.gname = w.linkpath = "";
	w.type = '0';
	w.path = "usr/share/doc/d1/.wh..wh..opq";
	if (rc == RS_OK)
		rc = squash_add(p, 1, &w, IDENT_A, err);
	w.path = "usr/share/doc/.wh.d2";
	w.header_offset = 512;
	if (rc == RS_OK)
		rc = squash_add(p, 1, &w, IDENT_A, err);
	if (rc == RS_OK)
		rc = squash_finish(p, err);
	struct squash_decision d;
	if (rc == RS_OK)
		rc = squash_decide(p, 0, 1501, off + 512, &d, err);
	if (rc == RS_OK && d.action != SQUASH_RELINK)
		rc = rs_err_set(err, RS_BAD_INPUT, "expected a relink, got %d", (int)d.action);
	squash_free(p);
	return rc;
}

START_TEST(every_allocation_failure_gives_nomem)
{
	struct policy pol;
	struct strip_rules *strip;
	struct rs_err err = {0};
	ck_assert_int_eq(policy_init_defaults(&pol, &err), RS_OK);
	ck_assert_int_eq(strip_new(&strip, &pol, &err), RS_OK);
	long n;
	for (n = 0;; n++) {
		alloc_budget = n;
		xalloc_set_fail_hook(budget_exhausted);
		enum rs_code rc = scenario(strip, &err);
		xalloc_set_fail_hook(NULL);
		alloc_budget = -1;
		if (rc == RS_OK)
			break;
		ck_assert_msg(rc == RS_NOMEM, "allocation %ld: %s (%d)", n, err.msg, rc);
		ck_assert_uint_lt(n, 100000);
	}
	ck_assert_uint_gt(n, 10);
	strip_free(strip);
	policy_dispose(&pol);
}
END_TEST

static Suite *squash_suite(void)
{
	Suite *s = suite_create("squash");
	TCase *t = tcase_create("core");
	tcase_add_test(t, whiteout_deletes_lower_layer_paths);
	tcase_add_test(t, whiteout_never_hides_its_own_layer);
	tcase_add_test(t, opaque_hides_lower_children_only);
	tcase_add_test(t, file_replacing_directory_removes_its_subtree);
	tcase_add_test(t, keep_base_keeps_whiteouts_above_the_base);
	tcase_add_test(t, keep_base_never_strips_paths_the_base_holds);
	tcase_add_test(t, squash_none_drops_identical_rewrites_only);
	tcase_add_test(t, dedupe_is_cancelled_when_the_layer_hides_the_original);
	tcase_add_test(t, squash_all_counts_identical_rewrite_as_duplicate);
	tcase_add_test(t, hardlink_to_stripped_target_is_materialized_once);
	tcase_add_test(t, hardlink_whose_target_is_overwritten_keeps_old_content);
	tcase_add_test(t, hardlink_to_surviving_target_is_copied);
	tcase_add_test(t, stripped_directory_stays_for_kept_children);
	tcase_add_test(t, rejects_hardlink_to_missing_target);
	tcase_add_test(t, path_table_is_capped);
	tcase_add_test(t, decide_refuses_a_changed_layer);
	tcase_add_test(t, efficiency_counts_overwritten_bytes_as_waste);
	tcase_add_test(t, every_allocation_failure_gives_nomem);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	return fixture_run_suite(squash_suite());
}
