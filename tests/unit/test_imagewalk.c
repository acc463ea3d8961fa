/* test_imagewalk: the one walk of an image's documents (config/imagewalk.c)
 * over documents held in memory by the test's loader: the events of an image
 * manifest and of an index in order, entries present and absent (an error,
 * skipped, best effort), nested indexes and the depth bound, the bound on
 * documents per walk, bad JSON, how documents are named in errors, and a
 * visitor that stops, skips or fails. */
#include "imagewalk.h"
#include "rs_limits.h"

#include "fixture.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MT_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_INDEX "application/vnd.oci.image.index.v1+json"

static const char *manifest_doc = "{\"schemaVersion\":2,\"mediaType\":\"" MT_MANIFEST "\","
                                  "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
                                  "\"digest\":\"sha256:c1\",\"size\":7},\"layers\":["
                                  "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\","
                                  "\"digest\":\"sha256:l1\",\"size\":10},"
                                  "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\","
                                  "\"digest\":\"sha256:l2\",\"size\":20}]}";
static const char *manifest_b = "{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:c2\",\"size\":1},"
                                "\"layers\":[{\"digest\":\"sha256:l3\",\"size\":3}]}";
static const char *index_doc = "{\"schemaVersion\":2,\"mediaType\":\"" MT_INDEX "\",\"manifests\":["
                               "{\"mediaType\":\"" MT_MANIFEST "\",\"digest\":\"sha256:ma\",\"size\":1,"
                               "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}},"
                               "{\"mediaType\":\"" MT_MANIFEST "\",\"digest\":\"sha256:gone\",\"size\":2},"
                               "{\"mediaType\":\"" MT_MANIFEST "\",\"digest\":\"sha256:mb\",\"size\":3}]}";
/* indexes of indexes: n1 -> n2 -> n3 -> ... -> n9 -> mb */
static const char *nested_fmt = "{\"schemaVersion\":2,\"manifests\":[{\"digest\":\"%s\",\"size\":1}]}";

/* What the test's loader and visitor share. */
struct t {
	char trace[4096];
	unsigned loads;
	/* the visitor's choices */
	const char *skip_ref;    /* SKIP at the REF of this entry */
	const char *best_ref;    /* BEST_EFFORT at the REF of this entry */
	const char *stop_at;     /* STOP at the REF of this descriptor */
	const char *fail_at;     /* fail (RS_POLICY) at the REF of this descriptor */
	bool skip_loaded;        /* SKIP at every LOADED */
	bool skip_enter;         /* SKIP at every ENTER */
	bool synth;              /* generated indexes "x1-<n>" below "big" */
	bool check_fields;       /* check_fields() on every event */
	unsigned fields_seen;
};

static void check_fields(struct t *t, enum imagewalk_event ev, const struct imagewalk_node *n);

static enum rs_code load(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len, char **mt,
                         struct rs_err *err)
{
	struct t *t = ctx;
	t->loads++;
	char tmp[256];
	const char *doc = NULL;
	const char *d = n->digest;
	if (strcmp(d, "sha256:m") == 0 || strcmp(d, "sha256:ma") == 0)
		doc = manifest_doc;
	else if (strcmp(d, "sha256:mb") == 0)
		doc = manifest_b;
	else if (strcmp(d, "sha256:idx") == 0)
		doc = index_doc;
	else if (strcmp(d, "sha256:bad") == 0)
		doc = "{\"schemaVersion\":2,";
	else if (strcmp(d, "sha256:badidx") == 0)
		doc = "{\"schemaVersion\":2,\"manifests\":5}";
	else if (strncmp(d, "n", 1) == 0 && d[1] >= '1' && d[1] <= '9') {
		char next[16];
		if (d[1] == '9')
			snprintf(next, sizeof(next), "sha256:mb");
		else
			snprintf(next, sizeof(next), "n%c", d[1] + 1);
		snprintf(tmp, sizeof(tmp), nested_fmt, next);
		doc = tmp;
	} else if (t->synth && (strcmp(d, "big") == 0 || strncmp(d, "x1-", 3) == 0)) {
		/* big: an index of 1024 indexes of 4 manifests each */
		bool top = strcmp(d, "big") == 0;
		size_t count = top ? RS_LIMIT_INDEX_MANIFESTS_MAX : 4, cap = 64 * count + 64;
		char *s = malloc(cap);
		ck_assert_ptr_nonnull(s);
		size_t off = (size_t)snprintf(s, cap, "{\"schemaVersion\":2,\"manifests\":[");
		for (size_t i = 0; i < count; i++)
			off += (size_t)snprintf(s + off, cap - off, "%s{\"digest\":\"%s%zu\",\"size\":1}", i ? "," : "",
			                        top ? "x1-" : "sha256:mb#", i);
		off += (size_t)snprintf(s + off, cap - off, "]}");
		*buf = s;
		*len = off;
		*mt = NULL;
		return RS_OK;
	} else if (t->synth && strncmp(d, "sha256:mb#", 10) == 0)
		doc = manifest_b;
	if (!doc)
		return rs_err_set(err, RS_NOT_FOUND, "manifest %s is not in the store", d);
	*len = strlen(doc);
	*buf = strdup(doc);
	*mt = strdup(doc == index_doc ? MT_INDEX : MT_MANIFEST);
	ck_assert_ptr_nonnull(*buf);
	ck_assert_ptr_nonnull(*mt);
	return RS_OK;
}

static enum rs_code visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                          enum imagewalk_step *step, struct rs_err *err)
{
	struct t *t = ctx;
	static const char evs[] = "RLEV", kinds[] = "eimcl";
	size_t off = strlen(t->trace);
	snprintf(t->trace + off, sizeof(t->trace) - off, "%c%c%u:%s ", evs[ev], kinds[n->kind], n->depth,
	         n->digest ? n->digest : "-");
	/* the parent is the document one level up, and loaded */
	if (n->parent) {
		ck_assert_uint_eq(n->parent->depth + 1, n->depth);
		ck_assert(n->parent->kind == IMAGEWALK_INDEX || n->parent->kind == IMAGEWALK_MANIFEST);
		ck_assert_ptr_eq(n->digest, n->desc->digest);
	} else {
		ck_assert_uint_eq(n->depth, 0);
	}
	if (ev == IMAGEWALK_ENTER || ev == IMAGEWALK_LOADED)
		ck_assert_ptr_nonnull(n->buf);
	if (ev == IMAGEWALK_ENTER)
		ck_assert(n->kind == IMAGEWALK_INDEX ? n->index != NULL : n->manifest != NULL);
	if (t->check_fields)
		check_fields(t, ev, n);
	const char *d = n->digest ? n->digest : "";
	if (ev == IMAGEWALK_REF && t->fail_at && strcmp(d, t->fail_at) == 0)
		return rs_err_set(err, RS_POLICY, "visitor refuses %s", d);
	if (ev == IMAGEWALK_REF && t->stop_at && strcmp(d, t->stop_at) == 0)
		*step = IMAGEWALK_STOP;
	else if (ev == IMAGEWALK_REF && t->skip_ref && strcmp(d, t->skip_ref) == 0)
		*step = IMAGEWALK_SKIP;
	else if (ev == IMAGEWALK_REF && t->best_ref && strcmp(d, t->best_ref) == 0)
		*step = IMAGEWALK_BEST_EFFORT;
	else if ((ev == IMAGEWALK_LOADED && t->skip_loaded) || (ev == IMAGEWALK_ENTER && t->skip_enter))
		*step = IMAGEWALK_SKIP;
	return RS_OK;
}

static enum rs_code run(struct t *t, const char *root, unsigned max_depth, struct rs_err *err)
{
	const struct imagewalk w = {.load = load, .visit = visit, .ctx = t, .max_depth = max_depth};
	return imagewalk_run(&w, root, err);
}

START_TEST(walks_an_image_manifest_in_order)
{
	struct t t = {0};
	struct rs_err err = {0};
	ck_assert_int_eq(run(&t, "sha256:m", 0, &err), RS_OK);
	ck_assert_str_eq(t.trace, "Lm0:sha256:m Em0:sha256:m Rc1:sha256:c1 Rl1:sha256:l1 Rl1:sha256:l2 Vm0:sha256:m ");
	ck_assert_uint_eq(t.loads, 1);
}
END_TEST

/* The node carries the descriptor's fields at REF, the loader's at LOADED,
 * the parsed document from ENTER to LEAVE. */
static void check_fields(struct t *t, enum imagewalk_event ev, const struct imagewalk_node *n)
{
	if (ev == IMAGEWALK_REF && n->kind == IMAGEWALK_LAYER && n->pos == 1) {
		ck_assert_str_eq(n->digest, "sha256:l2");
		ck_assert_uint_eq(n->size, 20);
		ck_assert_str_eq(n->media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
		ck_assert_ptr_eq(n->desc, &n->parent->manifest->layers[1]);
		t->fields_seen++;
	}
	if (ev == IMAGEWALK_REF && n->kind == IMAGEWALK_ENTRY && n->pos == 0) {
		ck_assert_str_eq(n->desc->os, "linux");
		ck_assert_uint_eq(n->size, 1);
		ck_assert_str_eq(n->media_type, MT_MANIFEST);
		t->fields_seen++;
	}
	if (ev == IMAGEWALK_LOADED && n->depth == 1 && n->pos == 0) {
		ck_assert_int_eq(n->kind, IMAGEWALK_MANIFEST);
		ck_assert_str_eq(n->media_type, MT_MANIFEST);
		ck_assert_uint_eq(n->size, strlen(manifest_doc));
		ck_assert_uint_eq(n->len, strlen(manifest_doc));
		ck_assert_ptr_eq(n->desc, &n->parent->index->manifests[0]);
		t->fields_seen++;
	}
	if (ev == IMAGEWALK_LEAVE && n->depth == 0) {
		ck_assert_int_eq(n->kind, IMAGEWALK_INDEX);
		ck_assert_uint_eq(n->index->manifest_count, 3);
		ck_assert_str_eq(n->media_type, MT_INDEX);
		t->fields_seen++;
	}
}

START_TEST(nodes_carry_descriptor_and_document_fields)
{
	struct t t = {.skip_ref = "sha256:gone", .check_fields = true};
	struct rs_err err = {0};
	ck_assert_int_eq(run(&t, "sha256:idx", 0, &err), RS_OK);
	ck_assert_uint_eq(t.fields_seen, 4);
}
END_TEST

START_TEST(index_entry_absent_fails_the_walk)
{
	struct t t = {0};
	struct rs_err err = {0};
	ck_assert_int_eq(run(&t, "sha256:idx", 0, &err), RS_NOT_FOUND);
	ck_assert_str_eq(err.msg, "manifest sha256:gone is not in the store");
	/* the first entry was walked and left, the third never reached */
	ck_assert_str_eq(t.trace, "Li0:sha256:idx Ei0:sha256:idx "
	                          "Re1:sha256:ma Lm1:sha256:ma Em1:sha256:ma Rc2:sha256:c1 Rl2:sha256:l1 "
	                          "Rl2:sha256:l2 Vm1:sha256:ma Re1:sha256:gone ");
}
END_TEST

START_TEST(index_entry_skipped_is_not_loaded_but_left)
{
	struct t t = {.skip_ref = "sha256:gone"};
	struct rs_err err = {0};
	ck_assert_int_eq(run(&t, "sha256:idx", 0, &err), RS_OK);
	ck_assert_str_eq(t.trace, "Li0:sha256:idx Ei0:sha256:idx "
	                          "Re1:sha256:ma Lm1:sha256:ma Em1:sha256:ma Rc2:sha256:c1 Rl2:sha256:l1 "
	                          "Rl2:sha256:l2 Vm1:sha256:ma "
	                          "Re1:sha256:gone Ve1:sha256:gone "
	                          "Re1:sha256:mb Lm1:sha256:mb Em1:sha256:mb Rc2:sha256:c2 Rl2:sha256:l3 Vm1:sha256:mb "
	                          "Vi0:sha256:idx ");
	ck_assert_uint_eq(t.loads, 3);
}
END_TEST

START_TEST(index_entry_best_effort_absent_goes_on)
{
	struct t t = {.best_ref = "sha256:gone"};
	struct rs_err err = {0};
	ck_assert_int_eq(run(&t, "sha256:idx", 0, &err), RS_OK);
	ck_assert_str_eq(err.msg, ""); /* the best-effort failure does not reach err */
	ck_assert_ptr_nonnull(strstr(t.trace, "Re1:sha256:gone Ve1:sha256:gone Re1:sha256:mb "));
	ck_assert_ptr_nonnull(strstr(t.trace, "Vi0:sha256:idx "));
	ck_assert_uint_eq(t.loads, 4);
}
END_TEST

START_TEST(best_effort_covers_failures_below_the_entry_only)
{
	/* the visitor fails at a layer of the best-effort entry: that entry's walk
	 * ends, it is left as not loaded, the walk goes on */
	struct t t = {.best_ref = "sha256:ma", .fail_at = "sha256:l1"};
	struct rs_err err = {0};
	const struct imagewalk w = {.load = load, .visit = visit, .ctx = &t};
	ck_assert_int_eq(imagewalk_run(&w, "sha256:idx", &err), RS_NOT_FOUND); /* "gone" is not best effort */
	ck_assert_ptr_nonnull(strstr(t.trace, "Rl2:sha256:l1 Ve1:sha256:ma Re1:sha256:gone "));
	/* a failure at the entry's own REF is the walk's */
	struct t t2 = {.best_ref = "sha256:ma", .fail_at = "sha256:ma"};
	const struct imagewalk w2 = {.load = load, .visit = visit, .ctx = &t2};
	ck_assert_int_eq(imagewalk_run(&w2, "sha256:idx", &err), RS_POLICY);
	ck_assert_str_eq(err.msg, "visitor refuses sha256:ma");
}
END_TEST

START_TEST(nested_indexes_are_walked_within_the_depth_bound)
{
	/* n7 -> n8 -> n9 -> mb: three levels below the root */
	struct t t = {0};
	struct rs_err err = {0};
	ck_assert_int_eq(run(&t, "n7", 3, &err), RS_OK);
	ck_assert_str_eq(t.trace, "Li0:n7 Ei0:n7 Re1:n8 Li1:n8 Ei1:n8 Re2:n9 Li2:n9 Ei2:n9 Re3:sha256:mb Lm3:sha256:mb "
	                          "Em3:sha256:mb Rc4:sha256:c2 Rl4:sha256:l3 Vm3:sha256:mb Vi2:n9 Vi1:n8 Vi0:n7 ");
	/* one level less is refused, naming the index and the bound */
	struct t t2 = {0};
	ck_assert_int_eq(run(&t2, "n7", 2, &err), RS_BAD_INPUT);
	ck_assert_str_eq(err.msg, "n9: indexes nested more than 2 deep (RS_LIMIT_WALK_DEPTH)");
	ck_assert_uint_eq(t2.loads, 3);
	/* the default bound is RS_LIMIT_WALK_DEPTH: n1 .. n9 is deeper */
	struct t t3 = {0};
	ck_assert_int_eq(run(&t3, "n1", 0, &err), RS_BAD_INPUT);
	ck_assert_uint_eq(t3.loads, RS_LIMIT_WALK_DEPTH + 1);
	/* a bound above the limit is the limit */
	struct t t4 = {0};
	ck_assert_int_eq(run(&t4, "n1", 1000, &err), RS_BAD_INPUT);
	ck_assert_uint_eq(t4.loads, RS_LIMIT_WALK_DEPTH + 1);
	/* a visitor that skips the nested entries never meets the bound */
	struct t t5 = {.skip_ref = "n3"};
	ck_assert_int_eq(run(&t5, "n1", 1, &err), RS_OK);
	ck_assert_str_eq(t5.trace, "Li0:n1 Ei0:n1 Re1:n2 Li1:n2 Ei1:n2 Re2:n3 Ve2:n3 Vi1:n2 Vi0:n1 ");
}
END_TEST

START_TEST(documents_per_walk_are_bounded)
{
	/* 1 + 1024 indexes + 4096 manifests: past RS_LIMIT_WALK_DOCUMENTS */
	struct t t = {.synth = true};
	struct rs_err err = {0};
	const struct imagewalk w = {.load = load, .visit = visit, .ctx = &t};
	t.trace[0] = '\0';
	ck_assert_int_eq(imagewalk_run(&w, "big", &err), RS_BAD_INPUT);
	ck_assert_uint_eq(t.loads, RS_LIMIT_WALK_DOCUMENTS);
	ck_assert_ptr_nonnull(strstr(err.msg, "RS_LIMIT_WALK_DOCUMENTS"));
}
END_TEST

START_TEST(bad_json_is_named)
{
	struct t t = {0};
	struct rs_err err = {0};
	ck_assert_int_eq(run(&t, "sha256:bad", 0, &err), RS_BAD_INPUT);
	ck_assert_ptr_nonnull(strstr(err.msg, "sha256:bad"));
	ck_assert_str_eq(t.trace, "");
	/* named by the walk's names when it has them */
	const struct imagewalk w = {.load = load, .visit = visit, .ctx = &t, .manifest_what = "manifest",
	                            .index_what = "index"};
	ck_assert_int_eq(imagewalk_run(&w, "sha256:bad", &err), RS_BAD_INPUT);
	ck_assert_ptr_eq(strstr(err.msg, "manifest"), err.msg);
	/* an index that sniffs but does not parse: named as an index */
	ck_assert_int_eq(imagewalk_run(&w, "sha256:badidx", &err), RS_BAD_INPUT);
	ck_assert_ptr_eq(strstr(err.msg, "index"), err.msg);
	ck_assert_ptr_nonnull(strstr(err.msg, "manifests"));
	struct t t2 = {0};
	ck_assert_int_eq(run(&t2, "sha256:badidx", 0, &err), RS_BAD_INPUT);
	ck_assert_ptr_eq(strstr(err.msg, "sha256:badidx"), err.msg);
	ck_assert_str_eq(t2.trace, "Li0:sha256:badidx ");
	/* from bytes */
	struct t t3 = {0};
	const struct imagewalk w3 = {.visit = visit, .ctx = &t3, .manifest_what = "manifest"};
	ck_assert_int_eq(imagewalk_bytes(&w3, NULL, "[1,2]", 5, NULL, &err), RS_BAD_INPUT);
	ck_assert_ptr_eq(strstr(err.msg, "manifest"), err.msg);
}
END_TEST

START_TEST(visitor_skips_parsing_and_children)
{
	/* SKIP at LOADED: the document is not parsed, so one that would not parse passes */
	struct t t = {.skip_loaded = true};
	struct rs_err err = {0};
	ck_assert_int_eq(run(&t, "sha256:badidx", 0, &err), RS_OK);
	ck_assert_str_eq(t.trace, "Li0:sha256:badidx Vi0:sha256:badidx ");
	/* SKIP at ENTER: no descriptors */
	struct t t2 = {.skip_enter = true};
	ck_assert_int_eq(run(&t2, "sha256:idx", 0, &err), RS_OK);
	ck_assert_str_eq(t2.trace, "Li0:sha256:idx Ei0:sha256:idx Vi0:sha256:idx ");
}
END_TEST

START_TEST(visitor_stops_the_walk)
{
	struct t t = {.stop_at = "sha256:l1"};
	struct rs_err err = {0};
	ck_assert_int_eq(run(&t, "sha256:idx", 0, &err), RS_OK);
	/* nothing after the stop, not even LEAVE */
	ck_assert_str_eq(t.trace, "Li0:sha256:idx Ei0:sha256:idx Re1:sha256:ma Lm1:sha256:ma Em1:sha256:ma "
	                          "Rc2:sha256:c1 Rl2:sha256:l1 ");
	/* a stop below a best-effort entry stops the whole walk too */
	struct t t2 = {.stop_at = "sha256:l1", .best_ref = "sha256:ma"};
	ck_assert_int_eq(run(&t2, "sha256:idx", 0, &err), RS_OK);
	ck_assert_str_eq(t.trace, t2.trace);
}
END_TEST

START_TEST(visitor_failure_ends_the_walk)
{
	struct t t = {.fail_at = "sha256:c2", .skip_ref = "sha256:gone"};
	struct rs_err err = {0};
	ck_assert_int_eq(run(&t, "sha256:idx", 0, &err), RS_POLICY);
	ck_assert_str_eq(err.msg, "visitor refuses sha256:c2");
	ck_assert_ptr_null(strstr(t.trace, "l3"));
}
END_TEST

START_TEST(root_from_bytes_without_a_loader)
{
	/* no loader: index entries get REF and LEAVE only */
	struct t t = {0};
	struct rs_err err = {0};
	const struct imagewalk w = {.visit = visit, .ctx = &t};
	ck_assert_int_eq(imagewalk_bytes(&w, "sha256:idx", index_doc, strlen(index_doc), MT_INDEX, &err), RS_OK);
	ck_assert_str_eq(t.trace, "Li0:sha256:idx Ei0:sha256:idx Re1:sha256:ma Ve1:sha256:ma Re1:sha256:gone "
	                          "Ve1:sha256:gone Re1:sha256:mb Ve1:sha256:mb Vi0:sha256:idx ");
	ck_assert_uint_eq(t.loads, 0);
	/* a manifest: its config and layers */
	struct t t2 = {0};
	const struct imagewalk w2 = {.visit = visit, .ctx = &t2};
	ck_assert_int_eq(imagewalk_bytes(&w2, NULL, manifest_b, strlen(manifest_b), NULL, &err), RS_OK);
	ck_assert_str_eq(t2.trace, "Lm0:- Em0:- Rc1:sha256:c2 Rl1:sha256:l3 Vm0:- ");
}
END_TEST

START_TEST(root_load_failure_is_the_loaders)
{
	struct t t = {0};
	struct rs_err err = {0};
	ck_assert_int_eq(run(&t, "sha256:nothere", 0, &err), RS_NOT_FOUND);
	ck_assert_str_eq(err.msg, "manifest sha256:nothere is not in the store");
	ck_assert_str_eq(t.trace, "");
}
END_TEST

static Suite *imagewalk_suite(void)
{
	Suite *s = suite_create("imagewalk");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, walks_an_image_manifest_in_order);
	tcase_add_test(tc, nodes_carry_descriptor_and_document_fields);
	tcase_add_test(tc, index_entry_absent_fails_the_walk);
	tcase_add_test(tc, index_entry_skipped_is_not_loaded_but_left);
	tcase_add_test(tc, index_entry_best_effort_absent_goes_on);
	tcase_add_test(tc, best_effort_covers_failures_below_the_entry_only);
	tcase_add_test(tc, nested_indexes_are_walked_within_the_depth_bound);
	tcase_add_test(tc, documents_per_walk_are_bounded);
	tcase_add_test(tc, bad_json_is_named);
	tcase_add_test(tc, visitor_skips_parsing_and_children);
	tcase_add_test(tc, visitor_stops_the_walk);
	tcase_add_test(tc, visitor_failure_ends_the_walk);
	tcase_add_test(tc, root_from_bytes_without_a_loader);
	tcase_add_test(tc, root_load_failure_is_the_loaders);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(imagewalk_suite());
}
