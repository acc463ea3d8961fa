/* test_pipeline: end-to-end optimization of generated OCI layouts (seeded
 * targen layers, gzip and zstd) in a private temp directory per test. The
 * output is decoded and applied with a small reference overlay applier
 * written here (whiteouts, opaque directories, hard links resolved to
 * content) and compared with the input's tree minus the stripped paths.
 * Also: determinism across thread counts, squash modes, the report, the
 * tar spool's fallbacks (REGSLIM_TAR_SPOOL) giving the same output, and bad
 * input (corrupt gzip, wrong diff_id, '..' names, truncated tar) failing
 * with a message naming the layer while DST stays absent. */
#include "codec.h"

#include "fixture.h"
#include "digest.h"
#include "pipeline.h"
#include "policy.h"
#include "report.h"
#include "stream.h"
#include "tar_read.h"
#include "targen.h"

#include <check.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- layout builder ---------------------------------------------------- */

static void put_blob(const char *dir, const void *buf, size_t len, char digest[DIGEST_STR_SIZE])
{
	digest_buffer(digest, buf, len);
	char p[512];
	snprintf(p, sizeof(p), "%s/blobs/sha256/%s", dir, digest + 7);
	fixture_write_file(p, buf, len);
}

struct lay {
	const uint8_t *blob;
	size_t len;
	const char *media_type;
	char diff_id[DIGEST_STR_SIZE];
};

static void add_image_ann(const char *name, const char *tag, struct lay *ls, size_t n, const char *annotations,
			  char manifest_digest[DIGEST_STR_SIZE], bool index_it);

/* Add an image tagged tag to the OCI layout at fixture_dir()/name (created when
 * missing). */
static void add_image(const char *name, const char *tag, struct lay *ls, size_t n)
{
	char md[DIGEST_STR_SIZE];
	add_image_ann(name, tag, ls, n, NULL, md, true);
}

/* add_image with manifest annotations (a JSON object, or NULL); with
 * index_it false the manifest is only a blob, not in index.json. */
static void add_image_ann(const char *name, const char *tag, struct lay *ls, size_t n, const char *annotations,
			  char md[DIGEST_STR_SIZE], bool index_it)
{
	char dir[256], p[512];
	snprintf(dir, sizeof(dir), "%s/%s", fixture_dir(), name);
	mkdir(dir, 0755);
	snprintf(p, sizeof(p), "%s/blobs", dir);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/blobs/sha256", dir);
	mkdir(p, 0755);
	snprintf(p, sizeof(p), "%s/oci-layout", dir);
	fixture_write_file(p, "{\"imageLayoutVersion\":\"1.0.0\"}", 30);
	char cfg[4096], man[4096];
	size_t co = (size_t)snprintf(cfg, sizeof(cfg), "{\"architecture\":\"amd64\",\"os\":\"linux\",\"created\":\"2025-05-20T00:00:00Z\","
						     "\"config\":{\"Cmd\":[\"/bin/sh\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[");
	for (size_t i = 0; i < n; i++)
		co += (size_t)snprintf(cfg + co, sizeof(cfg) - co, "%s\"%s\"", i ? "," : "", ls[i].diff_id);
	co += (size_t)snprintf(cfg + co, sizeof(cfg) - co, "]},\"history\":[");
	for (size_t i = 0; i < n; i++)
		co += (size_t)snprintf(cfg + co, sizeof(cfg) - co, "%s{\"created\":\"2025-05-20T00:00:0%zuZ\",\"created_by\":\"step %zu\"}",
				       i ? "," : "", i, i);
	co += (size_t)snprintf(cfg + co, sizeof(cfg) - co, ",{\"created_by\":\"ENV X=1\",\"empty_layer\":true}]}");
	char cd[DIGEST_STR_SIZE];
	put_blob(dir, cfg, co, cd);
	size_t mo = (size_t)snprintf(man, sizeof(man),
				     "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{"
				     "\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"%s\",\"size\":%zu},\"layers\":[",
				     cd, co);
	for (size_t i = 0; i < n; i++) {
		char ld[DIGEST_STR_SIZE];
		put_blob(dir, ls[i].blob, ls[i].len, ld);
		mo += (size_t)snprintf(man + mo, sizeof(man) - mo, "%s{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu}", i ? "," : "",
				       ls[i].media_type, ld, ls[i].len);
	}
	mo += (size_t)snprintf(man + mo, sizeof(man) - mo, "]%s%s}", annotations ? ",\"annotations\":" : "",
			       annotations ? annotations : "");
	put_blob(dir, man, mo, md);
	if (!index_it)
		return;
	char entry[512], idx[2048];
	snprintf(entry, sizeof(entry),
		 "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"%s\",\"size\":%zu,"
		 "\"annotations\":{\"org.opencontainers.image.ref.name\":\"%s\"}}",
		 md, mo, tag);
	snprintf(p, sizeof(p), "%s/index.json", dir);
	int il;
	if (access(p, F_OK) == 0) {
		size_t ol;
		char *old = fixture_read_file(p, &ol);
		ck_assert(ol > 2 && strcmp(old + ol - 2, "]}") == 0);
		il = snprintf(idx, sizeof(idx), "%.*s,%s]}", (int)(ol - 2), old, entry);
		free(old);
	} else {
		il = snprintf(idx, sizeof(idx), "{\"schemaVersion\":2,\"manifests\":[%s]}", entry);
	}
	fixture_write_file(p, idx, (size_t)il);
}

/* An OCI layout at fixture_dir()/name with one image tagged "latest". */
static void make_layout(const char *name, struct lay *ls, size_t n)
{
	add_image(name, "latest", ls, n);
}

/* The two-layer test image: every overlay and strip case the optimizer must
 * get right. *t1 / *t2 receive the tar generators (the caller frees). */
static void image_tars(struct targen **t1, struct targen **t2)
{
	struct targen *a = targen_new(7);
	targen_add_dir(a, "bin");
	targen_add_file(a, "bin/sh", "#!shell\n", 8);
	targen_add_dir(a, "etc");
	targen_add_file(a, "etc/gone.conf", "x=1\n", 4);
	targen_add_dir(a, "data");
	targen_add_file(a, "data/old.txt", "old\n", 4);
	targen_add_dir(a, "data/sub");
	targen_add_file(a, "data/sub/deep.txt", "deep\n", 5);
	targen_add_dir(a, "usr");
	targen_add_dir(a, "usr/share");
	targen_add_dir(a, "usr/share/doc");
	targen_add_dir(a, "usr/share/doc/p");
	targen_add_file(a, "usr/share/doc/p/README", "read me, or link me\n", 20);
	targen_add_file(a, "usr/share/doc/p/copyright", "(c) someone\n", 12);
	targen_add_dir(a, "usr/lib");
	targen_add_dir(a, "usr/lib/py");
	targen_add_dir(a, "usr/lib/py/__pycache__");
	targen_add_file(a, "usr/lib/py/__pycache__/m.pyc", "\x42\x0d\x0d\x0a", 4);
	targen_add_file(a, "usr/lib/py/m.py", "print(1)\n", 9);
	targen_add_dir(a, "var");
	targen_add_dir(a, "var/cache");
	targen_add_dir(a, "var/cache/apt");
	targen_add_file(a, "var/cache/apt/pkgcache.bin", "cache cache cache", 17);
	targen_add_global(a, NULL); /* a comment-only pax global header */
	targen_add_hardlink(a, "bin/sh-link", "bin/sh");
	targen_add(a, &(struct targen_entry){.path = "usr/lib/with-xattr", .type = '0', .size = 300,
					     .flavour = TARGEN_PAX, .xattr_name = {"user.k"}, .xattr_value = {"v"},
					     .mtime_pax = "1700000000.25"});
	targen_add(a, &(struct targen_entry){.path = "usr/lib/a/very/long/path/name/that/does/not/fit/into/the/one/hundred/bytes/of/a/ustar/name/field/file.txt",
					     .type = '0', .size = 1000, .flavour = TARGEN_GNU});
	targen_add(a, &(struct targen_entry){.path = "dev-null", .type = '3', .devmajor = 1, .devminor = 3});
	targen_end(a, 2, false);

	struct targen *b = targen_new(8);
	targen_add_file(b, "etc/.wh.gone.conf", "", 0);
	targen_add_file(b, "data/.wh..wh..opq", "", 0);
	targen_add_file(b, "data/new.txt", "new\n", 4);
	targen_add_file(b, "bin/sh", "#!shell\n", 8); /* identical rewrite */
	targen_add_hardlink(b, "bin/tool", "usr/share/doc/p/README"); /* target is stripped */
	targen_add_hardlink(b, "bin/tool2", "usr/share/doc/p/README");
	targen_add_symlink(b, "bin/ln", "sh");
	targen_add_file(b, "tmp-not-tmp.txt", "keep", 4);
	targen_end(b, 2, false);
	*t1 = a;
	*t2 = b;
}

static const char *const stripped_paths[] = {
	"usr/lib/py/__pycache__", "usr/lib/py/__pycache__/m.pyc", "usr/share/doc/p/README", "var/cache/apt/pkgcache.bin", NULL};

/* ---- reference applier --------------------------------------------------- */

struct rec {
	char path[256];
	char type;
	uint32_t mode;
	uint64_t size;
	char hash[DIGEST_STR_SIZE];
	char link[256];
	unsigned layer;
	bool dead;
};

struct tree {
	struct rec r[256];
	size_t n;
	unsigned layer;
	struct digest_ctx *d;
	struct rec cur;
};

static struct rec *find(struct tree *t, const char *p)
{
	for (size_t i = 0; i < t->n; i++)
		if (!t->r[i].dead && strcmp(t->r[i].path, p) == 0)
			return &t->r[i];
	return NULL;
}

static bool below(const char *p, const char *dir)
{
	size_t n = strlen(dir);
	return strncmp(p, dir, n) == 0 && p[n] == '/';
}

static enum rs_code t_entry(void *ctx, const struct tar_entry *e, const void *raw, size_t raw_len,
			    enum tar_verdict *v, struct rs_err *err)
{
	(void)raw;
	(void)raw_len;
	(void)err;
	struct tree *t = ctx;
	memset(&t->cur, 0, sizeof(t->cur));
	snprintf(t->cur.path, sizeof(t->cur.path), "%s", e->path);
	t->cur.type = e->type;
	t->cur.mode = e->mode;
	t->cur.size = e->size;
	t->cur.layer = t->layer;
	snprintf(t->cur.link, sizeof(t->cur.link), "%s", e->linkpath);
	digest_reset(t->d);
	*v = TAR_KEEP;
	return RS_OK;
}

static enum rs_code t_data(void *ctx, const struct tar_entry *e, const void *buf, size_t len, bool pad,
			   struct rs_err *err)
{
	(void)e;
	(void)err;
	struct tree *t = ctx;
	if (!pad)
		digest_update(t->d, buf, len);
	return RS_OK;
}

static enum rs_code t_end(void *ctx, const struct tar_entry *e, enum tar_verdict v, struct rs_err *err)
{
	(void)e;
	(void)v;
	(void)err;
	struct tree *t = ctx;
	struct rec c = t->cur;
	digest_final(t->d, c.hash);
	if (c.type == TAR_TYPE_GLOBAL)
		return RS_OK; /* not a file: its records apply to the entries after it */
	const char *base = strrchr(c.path, '/');
	base = base ? base + 1 : c.path;
	char dir[256];
	snprintf(dir, sizeof(dir), "%.*s", (int)(base - c.path ? base - c.path - 1 : 0), c.path);
	if (strcmp(base, ".wh..wh..opq") == 0) {
		for (size_t i = 0; i < t->n; i++)
			if (!t->r[i].dead && t->r[i].layer < t->layer && below(t->r[i].path, dir))
				t->r[i].dead = true;
		return RS_OK;
	}
	if (strncmp(base, ".wh.", 4) == 0) {
		char target[600];
		snprintf(target, sizeof(target), "%s%s%s", dir, dir[0] ? "/" : "", base + 4);
		for (size_t i = 0; i < t->n; i++)
			if (!t->r[i].dead && t->r[i].layer < t->layer &&
			    (strcmp(t->r[i].path, target) == 0 || below(t->r[i].path, target)))
				t->r[i].dead = true;
		return RS_OK;
	}
	if (c.type == '1') { /* resolve to the target's content */
		struct rec *tg = find(t, c.link);
		ck_assert_msg(tg != NULL, "hard link %s -> %s: target missing", c.path, c.link);
		c.type = tg->type;
		c.size = tg->size;
		c.mode = tg->mode;
		memcpy(c.hash, tg->hash, sizeof(c.hash));
		c.link[0] = '\0';
	}
	struct rec *old = find(t, c.path);
	if (old) {
		if (old->type == '5' && c.type == '5') {
			old->mode = c.mode;
			return RS_OK;
		}
		old->dead = true;
	}
	ck_assert_uint_lt(t->n, 256);
	t->r[t->n++] = c;
	return RS_OK;
}

static void decode_tar(const struct tar_read_cbs *cbs, void *ctx, const void *blob, size_t len, enum codec_kind kind)
{
	struct stream_sink *tar, *dec;
	struct rs_err err = {0};
	ck_assert_int_eq(tar_read_new(&tar, cbs, ctx, &err), RS_OK);
	ck_assert_int_eq(codec_decoder_new(&dec, kind, NULL, tar, &err), RS_OK);
	ck_assert_msg(stream_write(dec, blob, len, &err) == RS_OK, "%s", err.msg);
	ck_assert_msg(stream_finish(dec, &err) == RS_OK, "%s", err.msg);
	stream_free(dec);
	stream_free(tar);
}

/* Decode every layer of the image tagged tag in layout dir, bottom first,
 * into a tar reader calling cbs; after_layer (may be NULL) runs after each. */
static void each_layer(const char *dir, const char *tag, size_t *nlayers, const struct tar_read_cbs *cbs, void *ctx,
		       void (*after_layer)(void *ctx))
{
	char p[512];
	size_t len;
	snprintf(p, sizeof(p), "%s/index.json", dir);
	char *idx = fixture_read_file(p, &len);
	char want[128];
	snprintf(want, sizeof(want), "\"org.opencontainers.image.ref.name\":\"%s\"", tag);
	ck_assert_ptr_nonnull(strstr(idx, want));
	char *d = strstr(idx, "\"digest\":\"sha256:");
	ck_assert_ptr_nonnull(d);
	snprintf(p, sizeof(p), "%s/blobs/sha256/%.64s", dir, d + 17);
	free(idx);
	char *man = fixture_read_file(p, &len);
	*nlayers = 0;
	char *l = strstr(man, "\"layers\":[");
	for (char *q = strstr(l, "\"mediaType\":\""); q; q = strstr(q + 1, "\"mediaType\":\"")) {
		char mt[128];
		snprintf(mt, sizeof(mt), "%.*s", (int)(strchr(q + 13, '"') - (q + 13)), q + 13);
		enum codec_kind k = strstr(mt, "+zstd") ? CODEC_ZSTD : strstr(mt, "+gzip") ? CODEC_GZIP : CODEC_NONE;
		char *dg = strstr(q, "sha256:");
		snprintf(p, sizeof(p), "%s/blobs/sha256/%.64s", dir, dg + 7);
		size_t bl;
		char *blob = fixture_read_file(p, &bl);
		decode_tar(cbs, ctx, blob, bl, k);
		free(blob);
		if (after_layer)
			after_layer(ctx);
		(*nlayers)++;
	}
	free(man);
}

static void next_layer(void *ctx)
{
	((struct tree *)ctx)->layer++;
}

/* Apply every layer of the image tagged tag in layout dir. */
static void apply_layout(struct tree *t, const char *dir, const char *tag, size_t *nlayers)
{
	struct tar_read_cbs cbs = {t_entry, t_data, t_end};
	each_layer(dir, tag, nlayers, &cbs, t, next_layer);
}

static bool is_stripped(const char *p)
{
	for (size_t i = 0; stripped_paths[i]; i++)
		if (strcmp(stripped_paths[i], p) == 0)
			return true;
	return false;
}

/* out must equal in minus the stripped paths (content, type, mode, links). */
static void expect_same_tree(struct tree *in, struct tree *out, bool strip)
{
	size_t live_in = 0, live_out = 0;
	for (size_t i = 0; i < in->n; i++) {
		const struct rec *a = &in->r[i];
		if (a->dead)
			continue;
		struct rec *b = find(out, a->path);
		if (strip && is_stripped(a->path)) {
			ck_assert_msg(b == NULL, "%s should be stripped", a->path);
			continue;
		}
		live_in++;
		ck_assert_msg(b != NULL, "%s missing from the output", a->path);
		ck_assert_msg(a->type == b->type && a->mode == b->mode && a->size == b->size, "%s differs", a->path);
		ck_assert_msg(strcmp(a->hash, b->hash) == 0, "%s content differs", a->path);
		ck_assert_str_eq(a->link, b->link);
	}
	for (size_t i = 0; i < out->n; i++)
		live_out += !out->r[i].dead;
	ck_assert_uint_eq(live_in, live_out);
}

struct image {
	uint8_t *gz, *zs;
	size_t gzl, zsl;
	struct lay l[2];
	struct targen *t1, *t2;
};

static void build_image(struct image *im, const char *name)
{
	image_tars(&im->t1, &im->t2);
	size_t n1, n2;
	const uint8_t *d1 = targen_data(im->t1, &n1), *d2 = targen_data(im->t2, &n2);
	targen_gzip(d1, n1, 6, 2, &im->gz, &im->gzl); /* two gzip members */
	targen_zstd(d2, n2, 3, &im->zs, &im->zsl);
	im->l[0] = (struct lay){im->gz, im->gzl, "application/vnd.oci.image.layer.v1.tar+gzip", ""};
	im->l[1] = (struct lay){im->zs, im->zsl, "application/vnd.oci.image.layer.v1.tar+zstd", ""};
	digest_buffer(im->l[0].diff_id, d1, n1);
	digest_buffer(im->l[1].diff_id, d2, n2);
	make_layout(name, im->l, 2);
}

static void free_image(struct image *im)
{
	free(im->gz);
	free(im->zs);
	targen_free(im->t1);
	targen_free(im->t2);
}

/* Optimize the source reference src_ref (any kind) into oci:fixture_dir()/dst. */
static enum rs_code run_ref(const char *src_ref, const char *dst, const char *policy_json, unsigned threads,
			    struct report *rep, struct rs_err *err)
{
	struct policy pol;
	struct rs_err perr = {0};
	if (policy_json)
		ck_assert_int_eq(policy_load_buffer(&pol, "test-policy", policy_json, strlen(policy_json), &perr), RS_OK);
	else
		ck_assert_int_eq(policy_init_defaults(&pol, &perr), RS_OK);
	char d[256];
	snprintf(d, sizeof(d), "oci:%s/%s", fixture_dir(), dst);
	struct pipeline_opts o = {src_ref, d, &pol, threads, CODEC_INFLATE_DEFAULT, NULL, NULL, NULL, 0};
	report_init(rep);
	enum rs_code rc = pipeline_run(rep, &o, err);
	policy_dispose(&pol);
	return rc;
}

static enum rs_code run(const char *src, const char *dst, const char *policy_json, unsigned threads,
			struct report *rep, struct rs_err *err)
{
	char sref[256];
	snprintf(sref, sizeof(sref), "oci:%s/%s", fixture_dir(), src);
	return run_ref(sref, dst, policy_json, threads, rep, err);
}

/* ---- tests -------------------------------------------------------------------- */

START_TEST(squash_all_equals_input_minus_stripped)
{
	struct image im;
	build_image(&im, "in");
	struct report rep;
	struct rs_err err = {0};
	ck_assert_msg(run("in:latest", "out:opt", NULL, 1, &rep, &err) == RS_OK, "%s", err.msg);
	static struct tree tin, tout;
	memset(&tin, 0, sizeof(tin));
	memset(&tout, 0, sizeof(tout));
	tin.d = digest_new();
	tout.d = digest_new();
	char p[256];
	size_t nl;
	snprintf(p, sizeof(p), "%s/in", fixture_dir());
	apply_layout(&tin, p, "latest", &nl);
	ck_assert_uint_eq(nl, 2);
	snprintf(p, sizeof(p), "%s/out", fixture_dir());
	apply_layout(&tout, p, "opt", &nl);
	ck_assert_uint_eq(nl, 1);
	expect_same_tree(&tin, &tout, true);
	ck_assert_ptr_null(find(&tout, "etc/gone.conf"));
	ck_assert_ptr_null(find(&tout, "data/old.txt"));
	ck_assert_ptr_nonnull(find(&tout, "bin/tool"));
	/* the report */
	ck_assert_uint_eq(rep.image_count, 1);
	const struct report_image *ri = &rep.images[0];
	ck_assert_uint_eq(ri->whiteouts_applied, 2);
	ck_assert_uint_ge(ri->dup_entries, 1);
	/* bin/tool (target stripped) and bin/sh-link (target bin/sh rewritten
	 * by layer 2, so the link keeps the old inode) */
	ck_assert_uint_eq(ri->links_materialized, 2);
	ck_assert_uint_eq(ri->links_relinked, 1);
	ck_assert_uint_eq(ri->stripped_count, 4);
	ck_assert_uint_eq(ri->out_layer_count, 1);
	ck_assert_str_eq(ri->out_layers[0].media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
	ck_assert(ri->efficiency_in < 1.0);
	ck_assert_str_eq(rep.tag, "opt");
	digest_free(tin.d);
	digest_free(tout.d);
	report_dispose(&rep);
	free_image(&im);
}
END_TEST

START_TEST(output_is_identical_for_any_thread_count)
{
	struct image im;
	build_image(&im, "in");
	struct report a, b, c;
	struct rs_err err = {0};
	ck_assert_msg(run("in:latest", "o1", NULL, 1, &a, &err) == RS_OK, "%s", err.msg);
	ck_assert_msg(run("in:latest", "o2", NULL, 2, &b, &err) == RS_OK, "%s", err.msg);
	ck_assert_msg(run("in:latest", "o3", NULL, 4, &c, &err) == RS_OK, "%s", err.msg);
	ck_assert_str_eq(a.digest, b.digest);
	ck_assert_str_eq(a.digest, c.digest);
	ck_assert_str_eq(b.tag, "latest"); /* the source tag when DST names none */
	report_dispose(&a);
	report_dispose(&b);
	report_dispose(&c);
	free_image(&im);
}
END_TEST

START_TEST(squash_none_and_keep_base_keep_the_tree)
{
	struct image im;
	build_image(&im, "in");
	struct rs_err err = {0};
	const char *pols[] = {"{\"squash\":\"none\"}", "{\"squash\":\"none\",\"compression\":\"gzip\"}", NULL};
	for (int k = 0; k < 3; k++) {
		char pj[256];
		if (!pols[k])
			snprintf(pj, sizeof(pj), "{\"squash\":\"keep-base\",\"base_layers\":[\"%s\"]}", im.l[0].diff_id);
		struct report rep;
		char dst[32];
		snprintf(dst, sizeof(dst), "o%d:x", k);
		ck_assert_msg(run("in:latest", dst, pols[k] ? pols[k] : pj, 2, &rep, &err) == RS_OK, "%s", err.msg);
		static struct tree tin, tout;
		memset(&tin, 0, sizeof(tin));
		memset(&tout, 0, sizeof(tout));
		tin.d = digest_new();
		tout.d = digest_new();
		char p[256];
		size_t nl;
		snprintf(p, sizeof(p), "%s/in", fixture_dir());
		apply_layout(&tin, p, "latest", &nl);
		snprintf(p, sizeof(p), "%s/o%d", fixture_dir(), k);
		apply_layout(&tout, p, "x", &nl);
		ck_assert_uint_eq(nl, 2);
		if (pols[k]) {
			expect_same_tree(&tin, &tout, true);
		} else {
			/* the base layer is copied untouched: its strippable paths stay */
			ck_assert(rep.images[0].out_layers[0].copied);
			ck_assert_str_eq(rep.images[0].out_layers[0].media_type, "application/vnd.oci.image.layer.v1.tar+gzip");
			ck_assert_ptr_nonnull(find(&tout, "var/cache/apt/pkgcache.bin"));
			ck_assert_ptr_nonnull(find(&tout, "bin/tool"));
			ck_assert_ptr_null(find(&tout, "etc/gone.conf")); /* whiteout kept above the base */
			ck_assert_ptr_null(find(&tout, "data/sub/deep.txt")); /* opaque kept above the base */
		}
		digest_free(tin.d);
		digest_free(tout.d);
		report_dispose(&rep);
	}
	free_image(&im);
}
END_TEST

static void expect_failure_src_untagged(void);

START_TEST(keep_base_finds_layers_shared_in_the_layout)
{
	struct image im;
	build_image(&im, "in");
	/* a second image in the same layout shares only the bottom layer */
	struct targen *other = targen_new(99);
	targen_add_file(other, "other.txt", "other\n", 6);
	targen_end(other, 2, false);
	size_t on;
	const uint8_t *od = targen_data(other, &on);
	struct lay l2[2] = {im.l[0], {od, on, "application/vnd.oci.image.layer.v1.tar", ""}};
	digest_buffer(l2[1].diff_id, od, on);
	add_image("in", "other", l2, 2);
	struct report rep;
	struct rs_err err = {0};
	ck_assert_msg(run("in:latest", "out:x", "{\"squash\":\"keep-base\"}", 2, &rep, &err) == RS_OK, "%s", err.msg);
	ck_assert_uint_eq(rep.images[0].out_layer_count, 2);
	ck_assert(rep.images[0].out_layers[0].copied);
	ck_assert(rep.images[0].layers[0].base);
	ck_assert(!rep.images[0].layers[1].base);
	char d0[DIGEST_STR_SIZE];
	digest_buffer(d0, im.gz, im.gzl);
	ck_assert_str_eq(rep.images[0].out_layers[0].digest, d0);
	report_dispose(&rep);
	/* with SRC holding two images, an untagged reference is refused */
	expect_failure_src_untagged();
	targen_free(other);
	free_image(&im);
}
END_TEST

static void expect_failure(const char *src, const char *dst, const char *needle1, const char *needle2)
{
	/* one thread, and two (the scan then decodes and parses on two threads):
	 * the same failure */
	char first[RS_ERR_MSG_MAX] = "";
	for (unsigned threads = 1; threads <= 2; threads++) {
		struct report rep;
		struct rs_err err = {0};
		ck_assert_int_ne(run(src, dst, NULL, threads, &rep, &err), RS_OK);
		ck_assert_msg(strstr(err.msg, needle1) && strstr(err.msg, needle2), "message: %s", err.msg);
		if (threads == 1)
			snprintf(first, sizeof(first), "%s", err.msg);
		else
			ck_assert_str_eq(err.msg, first);
		report_dispose(&rep);
	}
	char p[256];
	snprintf(p, sizeof(p), "%s/%s", fixture_dir(), dst);
	char *colon = strrchr(p, ':');
	if (colon)
		*colon = '\0';
	ck_assert_msg(access(p, F_OK) != 0, "%s exists after a failure", p);
	/* no staging directory left next to it */
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "ls -a %s | grep -q regslim", fixture_dir());
	ck_assert_int_ne(system(cmd), 0);
}

static void expect_failure_src_untagged(void)
{
	expect_failure("in", "never:x", "holds 2 images", "oci:DIR:TAG");
}

START_TEST(corrupt_gzip_fails_naming_layer_and_offset)
{
	struct image im;
	image_tars(&im.t1, &im.t2);
	size_t n1, n2;
	const uint8_t *d1 = targen_data(im.t1, &n1), *d2 = targen_data(im.t2, &n2);
	targen_gzip(d1, n1, 6, 1, &im.gz, &im.gzl);
	targen_zstd(d2, n2, 3, &im.zs, &im.zsl);
	im.gz[im.gzl / 2] ^= 0x55; /* the manifest describes the corrupt blob exactly */
	im.l[0] = (struct lay){im.gz, im.gzl, "application/vnd.oci.image.layer.v1.tar+gzip", ""};
	im.l[1] = (struct lay){im.zs, im.zsl, "application/vnd.oci.image.layer.v1.tar+zstd", ""};
	digest_buffer(im.l[0].diff_id, d1, n1);
	digest_buffer(im.l[1].diff_id, d2, n2);
	make_layout("bad", im.l, 2);
	expect_failure("bad:latest", "never:x", "layer 1/2", "offset");
	free_image(&im);
}
END_TEST

/* Progress callback that cancels the run once pass 2 ("write") begins. */
static void cancel_at_write(void *ctx, const struct pipeline_progress *p)
{
	if (strcmp(p->phase, "write") == 0)
		atomic_store((_Atomic bool *)ctx, true);
}

/* A cancelled run (before, or in the middle of pass 2) and one past its
 * deadline fail with RS_TIMEOUT and leave no destination (issue 11: SIGTERM
 * stops a running optimization cleanly). */
START_TEST(cancel_and_deadline_stop_the_run)
{
	struct image im;
	build_image(&im, "in");
	struct policy pol;
	struct rs_err err = {0};
	ck_assert_int_eq(policy_init_defaults(&pol, &err), RS_OK);
	char src[300], dst[300], dir[256];
	snprintf(src, sizeof(src), "oci:%s/in:latest", fixture_dir());
	snprintf(dir, sizeof(dir), "%s/stopped", fixture_dir());
	snprintf(dst, sizeof(dst), "oci:%s:x", dir);
	_Atomic bool cancel = true;
	for (int k = 0; k < 3; k++) {
		struct pipeline_opts o = {src, dst, &pol, 1, CODEC_INFLATE_DEFAULT, NULL, NULL, &cancel, 0};
		if (k == 1) { /* cancelled in the middle: from the progress of pass 2 */
			atomic_store(&cancel, false);
			o.progress = cancel_at_write;
			o.progress_ctx = &cancel;
		} else if (k == 2) { /* a deadline already gone */
			o.cancel = NULL;
			o.deadline_ms = pipeline_now_ms() - 1;
		}
		struct report rep;
		report_init(&rep);
		rs_err_clear(&err);
		ck_assert_int_eq(pipeline_run(&rep, &o, &err), RS_TIMEOUT);
		ck_assert_msg(strstr(err.msg, k == 2 ? "time limit" : "cancelled"), "%s", err.msg);
		report_dispose(&rep);
		ck_assert_int_ne(access(dir, F_OK), 0);
	}
	policy_dispose(&pol);
	free_image(&im);
}
END_TEST

START_TEST(wrong_diff_id_fails)
{
	struct image im;
	image_tars(&im.t1, &im.t2);
	size_t n1, n2;
	const uint8_t *d1 = targen_data(im.t1, &n1), *d2 = targen_data(im.t2, &n2);
	im.gz = im.zs = NULL;
	im.l[0] = (struct lay){d1, n1, "application/vnd.oci.image.layer.v1.tar", ""};
	im.l[1] = (struct lay){d2, n2, "application/vnd.oci.image.layer.v1.tar", ""};
	digest_buffer(im.l[0].diff_id, d1, n1);
	digest_buffer(im.l[1].diff_id, d1, n1); /* wrong on purpose */
	make_layout("bad", im.l, 2);
	expect_failure("bad:latest", "never:x", "layer 2/2", "diff_id");
	free_image(&im);
}
END_TEST

START_TEST(dotdot_names_and_truncated_tars_fail)
{
	struct targen *g = targen_new(3);
	targen_add_file(g, "ok", "1", 1);
	targen_add(g, &(struct targen_entry){.path = "a/../../etc/passwd", .type = '0', .size = 3, .flavour = TARGEN_PAX});
	targen_end(g, 2, false);
	size_t n;
	const uint8_t *d = targen_data(g, &n);
	struct lay l = {d, n, "application/vnd.oci.image.layer.v1.tar", ""};
	digest_buffer(l.diff_id, d, n);
	make_layout("dotdot", &l, 1);
	expect_failure("dotdot:latest", "never:x", "layer 1/1", "'..'");

	struct targen *h = targen_new(4);
	targen_add_file(h, "big", NULL, 5000);
	size_t hn;
	const uint8_t *hd = targen_data(h, &hn);
	struct lay t = {hd, hn - 1000, "application/vnd.oci.image.layer.v1.tar", ""};
	digest_buffer(t.diff_id, hd, hn - 1000);
	make_layout("trunc", &t, 1);
	expect_failure("trunc:latest", "never:x", "layer 1/1", "truncated");
	targen_free(g);
	targen_free(h);
}
END_TEST

START_TEST(unknown_tag_and_bad_refs_fail)
{
	struct image im;
	build_image(&im, "in");
	expect_failure("in:nope", "never:x", "no image tagged nope", "in");
	struct report rep;
	struct rs_err err = {0};
	struct policy pol;
	ck_assert_int_eq(policy_init_defaults(&pol, &err), RS_OK);
	struct pipeline_opts o = {"docker://x", "oci:/tmp/never", &pol, 1, CODEC_INFLATE_DEFAULT, NULL, NULL, NULL, 0};
	report_init(&rep);
	ck_assert_int_eq(pipeline_run(&rep, &o, &err), RS_BAD_INPUT);
	ck_assert_str_eq(err.msg, "unsupported source 'docker://x': expected oci:DIR[:TAG] or docker-archive:FILE");
	report_dispose(&rep);
	policy_dispose(&pol);
	free_image(&im);
}
END_TEST

/* The number of entries of dir/blobs/sha256 whose name is not 64 hex digits
 * (a temporary file left behind). */
static int stray_blob_files(const char *dir)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "ls -A %s/%s/blobs/sha256 | grep -cv '^[0-9a-f]\\{64\\}$'", fixture_dir(), dir);
	FILE *f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	int n = -1;
	ck_assert_int_eq(fscanf(f, "%d", &n), 1);
	pclose(f);
	return n;
}

START_TEST(tar_spool_fallbacks_give_identical_output)
{
	/* pass 2 reads pass 1's spooled tar (default), decodes again (spool
	 * off), or mixes both when the spool budget runs out mid-layer: the
	 * output is the same, and no spool file is left anywhere */
	struct image im;
	build_image(&im, "in");
	size_t n1;
	(void)targen_data(im.t1, &n1);
	char first_only[32];
	snprintf(first_only, sizeof(first_only), "%zu", n1 + 1); /* layer 1 fits, layer 2 does not */
	const char *knobs[] = {NULL, "auto", "0", "1", first_only};
	const char *policies[] = {NULL, "{\"squash\": \"none\"}"};
	for (size_t p = 0; p < 2; p++) {
		char want[DIGEST_STR_SIZE] = "";
		for (size_t k = 0; k < sizeof(knobs) / sizeof(knobs[0]); k++) {
			if (knobs[k])
				ck_assert_int_eq(setenv("REGSLIM_TAR_SPOOL", knobs[k], 1), 0);
			else
				ck_assert_int_eq(unsetenv("REGSLIM_TAR_SPOOL"), 0);
			char dst[32];
			snprintf(dst, sizeof(dst), "o%zu-%zu", p, k);
			struct report rep;
			struct rs_err err = {0};
			ck_assert_msg(run("in:latest", dst, policies[p], 1, &rep, &err) == RS_OK, "knob %s: %s",
				      knobs[k] ? knobs[k] : "unset", err.msg);
			if (!want[0])
				snprintf(want, sizeof(want), "%s", rep.digest);
			ck_assert_msg(strcmp(rep.digest, want) == 0, "knob %s: %s != %s", knobs[k] ? knobs[k] : "unset",
				      rep.digest, want);
			ck_assert_int_eq(stray_blob_files(dst), 0);
			report_dispose(&rep);
		}
	}
	unsetenv("REGSLIM_TAR_SPOOL");
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "ls -a %s | grep -q regslim", fixture_dir()); /* no staging directory left */
	ck_assert_int_ne(system(cmd), 0);
	free_image(&im);
}
END_TEST

START_TEST(bad_tar_spool_knob_is_refused)
{
	struct image im;
	build_image(&im, "in");
	ck_assert_int_eq(setenv("REGSLIM_TAR_SPOOL", "lots", 1), 0);
	struct report rep;
	struct rs_err err = {0};
	ck_assert_int_eq(run("in:latest", "out", NULL, 1, &rep, &err), RS_BAD_INPUT);
	unsetenv("REGSLIM_TAR_SPOOL");
	ck_assert_msg(strstr(err.msg, "REGSLIM_TAR_SPOOL") && strstr(err.msg, "'lots'"), "message: %s", err.msg);
	report_dispose(&rep);
	char p[256];
	snprintf(p, sizeof(p), "%s/out", fixture_dir());
	ck_assert_int_ne(access(p, F_OK), 0);
	free_image(&im);
}
END_TEST

/* An OCI layout at fixture_dir()/name whose two uncompressed layers are a and b. */
static void make_plain_layout(const char *name, struct targen *a, struct targen *b)
{
	size_t n1, n2;
	const uint8_t *d1 = targen_data(a, &n1), *d2 = targen_data(b, &n2);
	struct lay l[2] = {{d1, n1, "application/vnd.oci.image.layer.v1.tar", ""},
			   {d2, n2, "application/vnd.oci.image.layer.v1.tar", ""}};
	digest_buffer(l[0].diff_id, d1, n1);
	digest_buffer(l[1].diff_id, d2, n2);
	make_layout(name, l, 2);
}

/* Entries of the output captured whole (small images only). */
struct grab {
	struct {
		char path[128];
		char type;
		bool sparse;
		uint64_t size;
		uint8_t *data;
		size_t len;
	} e[64];
	size_t n;
};

static enum rs_code g_entry(void *ctx, const struct tar_entry *e, const void *raw, size_t raw_len,
			    enum tar_verdict *v, struct rs_err *err)
{
	(void)raw;
	(void)raw_len;
	(void)err;
	struct grab *g = ctx;
	ck_assert_uint_lt(g->n, 64);
	snprintf(g->e[g->n].path, sizeof(g->e[g->n].path), "%s", e->path);
	g->e[g->n].type = e->type;
	g->e[g->n].sparse = e->sparse;
	g->e[g->n].size = e->size;
	g->e[g->n].data = malloc(e->size + 1);
	g->e[g->n].len = 0;
	g->n++;
	*v = TAR_KEEP;
	return RS_OK;
}

static enum rs_code g_data(void *ctx, const struct tar_entry *e, const void *buf, size_t len, bool pad,
			   struct rs_err *err)
{
	(void)e;
	(void)err;
	struct grab *g = ctx;
	if (!pad) {
		memcpy(g->e[g->n - 1].data + g->e[g->n - 1].len, buf, len);
		g->e[g->n - 1].len += len;
	}
	return RS_OK;
}

static int grab_find(const struct grab *g, const char *path)
{
	for (size_t i = 0; i < g->n; i++)
		if (strcmp(g->e[i].path, path) == 0)
			return (int)i;
	return -1;
}

static void grab_free(struct grab *g)
{
	for (size_t i = 0; i < g->n; i++)
		free(g->e[i].data);
}

START_TEST(hard_link_to_a_sparse_file_is_materialized_expanded)
{
	/* layer 1: a sparse file in each GNU format and a hard link to each;
	 * layer 2 rewrites the sparse files, so the links keep the old inode
	 * and must become regular files holding the expanded bytes */
	enum { REAL = 50000 };
	static uint8_t content[REAL];
	for (size_t i = 0; i < REAL; i++)
		content[i] = (uint8_t)(1 + (i * 7) % 251); /* never 0: holes show */
	const struct {
		const char *file, *link;
		enum targen_flavour f;
	} sp[] = {{"sp/old", "l/old", TARGEN_OLDGNU_SPARSE},
		  {"sp/pax01", "l/pax01", TARGEN_PAX_SPARSE_01},
		  {"sp/pax10", "l/pax10", TARGEN_PAX_SPARSE_10}};
	struct targen *a = targen_new(21), *b = targen_new(22);
	targen_add_dir(a, "sp");
	targen_add_dir(a, "l");
	uint64_t stored[3];
	for (size_t i = 0; i < 3; i++) {
		size_t k = targen_add(a, &(struct targen_entry){.path = sp[i].file, .type = '0', .size = REAL,
								.data = content, .flavour = sp[i].f, .uid = 7,
								.mode = 0640});
		stored[i] = targen_entry_at(a, k)->stored_size;
		targen_add_hardlink(a, sp[i].link, sp[i].file);
		targen_add_file(b, sp[i].file, "new\n", 4);
	}
	targen_end(a, 2, false);
	targen_end(b, 2, false);
	make_plain_layout("in", a, b);
	struct report rep;
	struct rs_err err = {0};
	ck_assert_msg(run("in:latest", "out:x", NULL, 2, &rep, &err) == RS_OK, "%s", err.msg);
	ck_assert_uint_eq(rep.images[0].links_materialized, 3);
	report_dispose(&rep);
	static struct grab g;
	memset(&g, 0, sizeof(g));
	struct tar_read_cbs cbs = {g_entry, g_data, NULL};
	char p[256];
	size_t nl;
	snprintf(p, sizeof(p), "%s/out", fixture_dir());
	each_layer(p, "x", &nl, &cbs, &g, NULL);
	for (size_t i = 0; i < 3; i++) {
		int k = grab_find(&g, sp[i].link);
		ck_assert_msg(k >= 0, "%s missing", sp[i].link);
		ck_assert_int_eq(g.e[k].type, '0');
		ck_assert(!g.e[k].sparse);
		ck_assert_uint_eq(g.e[k].size, REAL);
		ck_assert_uint_eq(g.e[k].len, REAL);
		/* every byte is the file's or a hole's zero; the data bytes are
		 * exactly the stored ones (1.0 also stores its map, in 512s) */
		uint64_t nonzero = 0;
		for (size_t x = 0; x < REAL; x++) {
			ck_assert_msg(g.e[k].data[x] == 0 || g.e[k].data[x] == content[x], "%s byte %zu", sp[i].link, x);
			nonzero += g.e[k].data[x] != 0;
		}
		ck_assert_uint_lt(nonzero, REAL); /* there were holes */
		if (sp[i].f == TARGEN_PAX_SPARSE_10)
			ck_assert_msg(stored[i] > nonzero && (stored[i] - nonzero) % 512 == 0, "%s: %" PRIu64 " stored, %" PRIu64 " data",
				      sp[i].link, stored[i], nonzero);
		else
			ck_assert_uint_eq(nonzero, stored[i]);
		ck_assert_int_eq(g.e[grab_find(&g, sp[i].file)].len, 4);
	}
	grab_free(&g);
	targen_free(a);
	targen_free(b);
}
END_TEST

/* Owners, names, times and xattrs per path, as tar_read resolves them
 * (global headers applied within their own archive); later layers win. */
struct attrs {
	struct {
		char path[64];
		char line[512];
	} e[32];
	size_t n;
	unsigned globals; /* 'g' entries seen */
};

static enum rs_code a_entry(void *ctx, const struct tar_entry *e, const void *raw, size_t raw_len,
			    enum tar_verdict *v, struct rs_err *err)
{
	(void)raw;
	(void)raw_len;
	(void)err;
	struct attrs *a = ctx;
	*v = TAR_KEEP;
	if (e->type == TAR_TYPE_GLOBAL) {
		a->globals++;
		return RS_OK;
	}
	size_t i = 0;
	while (i < a->n && strcmp(a->e[i].path, e->path) != 0)
		i++;
	ck_assert_uint_lt(i, 32);
	if (i == a->n)
		a->n++;
	snprintf(a->e[i].path, sizeof(a->e[i].path), "%s", e->path);
	int o = snprintf(a->e[i].line, sizeof(a->e[i].line), "%c %o uid=%" PRIu64 " gid=%" PRIu64 " %s/%s mtime=%" PRId64 " %s size=%" PRIu64,
			 e->type, e->mode, e->uid, e->gid, e->uname, e->gname, e->mtime, e->mtime_pax ? e->mtime_pax : "-",
			 e->size);
	for (size_t x = 0; x < e->xattr_count; x++)
		o += snprintf(a->e[i].line + o, sizeof(a->e[i].line) - (size_t)o, " %s=%.*s", e->xattrs[x].name,
			      (int)e->xattrs[x].value_len, (const char *)e->xattrs[x].value);
	return RS_OK;
}

static const char *attrs_of(const struct attrs *a, const char *path)
{
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->e[i].path, path) == 0)
			return a->e[i].line;
	return "(missing)";
}

/* "len key=value\n" */
static void pax_rec(char *buf, size_t cap, const char *kv)
{
	size_t n = strlen(kv) + 2, len = n + 1;
	while (len != n + (size_t)snprintf(NULL, 0, "%zu", len))
		len = n + (size_t)snprintf(NULL, 0, "%zu", len);
	size_t o = strlen(buf);
	snprintf(buf + o, cap - o, "%zu %s\n", len, kv);
}

START_TEST(global_header_stays_within_its_layer_when_squashed)
{
	/* layer 1 sets owners, names, a time and an xattr in a pax global
	 * header half-way; layer 2 (no global header) must keep its own
	 * attributes in the merged layer, and layer 1's entries after the
	 * global header must keep the global ones */
	char g[512] = "";
	pax_rec(g, sizeof(g), "comment=built by a test");
	pax_rec(g, sizeof(g), "uid=77");
	pax_rec(g, sizeof(g), "gid=78");
	pax_rec(g, sizeof(g), "uname=global-user");
	pax_rec(g, sizeof(g), "mtime=1000.5");
	pax_rec(g, sizeof(g), "SCHILY.xattr.user.g=from-global");
	struct targen *a = targen_new(31), *b = targen_new(32);
	targen_add_file(a, "before", "b\n", 2);
	targen_add_global(a, g);
	targen_add_file(a, "after", "a\n", 2);
	targen_add(a, &(struct targen_entry){.path = "own-pax", .type = '0', .size = 10, .flavour = TARGEN_PAX,
					     .uid = 5, .mtime_pax = "1700000000.25", .uname = "own",
					     .xattr_name = {"user.own"}, .xattr_value = {"x"}});
	targen_add_dir(a, "d");
	targen_end(a, 2, false);
	targen_add_file(b, "upper", "u\n", 2);
	targen_add(b, &(struct targen_entry){.path = "d/upper-pax", .type = '0', .size = 3, .flavour = TARGEN_PAX,
					     .mtime_pax = "1700000001.5"});
	targen_end(b, 2, false);
	make_plain_layout("in", a, b);
	static struct attrs in, out, none;
	memset(&in, 0, sizeof(in));
	memset(&out, 0, sizeof(out));
	memset(&none, 0, sizeof(none));
	struct tar_read_cbs cbs = {a_entry, NULL, NULL};
	char p[256];
	size_t nl;
	snprintf(p, sizeof(p), "%s/in", fixture_dir());
	each_layer(p, "latest", &nl, &cbs, &in, NULL);
	ck_assert_str_eq(attrs_of(&in, "after"), "0 644 uid=77 gid=78 global-user/ mtime=1000 1000.5 size=2 user.g=from-global");
	struct report rep;
	struct rs_err err = {0};
	ck_assert_msg(run("in:latest", "out:x", NULL, 2, &rep, &err) == RS_OK, "%s", err.msg);
	report_dispose(&rep);
	snprintf(p, sizeof(p), "%s/out", fixture_dir());
	each_layer(p, "x", &nl, &cbs, &out, NULL);
	ck_assert_uint_eq(nl, 1);
	ck_assert_uint_eq(in.n, out.n);
	for (size_t i = 0; i < in.n; i++)
		ck_assert_msg(strcmp(in.e[i].line, attrs_of(&out, in.e[i].path)) == 0, "%s: in  %s\n out %s", in.e[i].path,
			      in.e[i].line, attrs_of(&out, in.e[i].path));
	ck_assert_uint_eq(out.globals, 0); /* no global header in the merged layer */
	/* squash none: each layer is its own archive, the global header is copied */
	ck_assert_msg(run("in:latest", "none:x", "{\"squash\":\"none\"}", 2, &rep, &err) == RS_OK, "%s", err.msg);
	report_dispose(&rep);
	snprintf(p, sizeof(p), "%s/none", fixture_dir());
	each_layer(p, "x", &nl, &cbs, &none, NULL);
	ck_assert_uint_eq(nl, 2);
	ck_assert_uint_eq(none.globals, 1);
	for (size_t i = 0; i < in.n; i++)
		ck_assert_str_eq(in.e[i].line, attrs_of(&none, in.e[i].path));
	targen_free(a);
	targen_free(b);
}
END_TEST

START_TEST(spool_holes_fall_back_when_a_stripped_file_stays)
{
	/* squash all leaves the data of stripped files out of the tar spool;
	 * here one of them stays after all (a path that also has a kept child,
	 * so the strip rule spares it) and another is a hard-link source: the
	 * output must be the same as without a spool, with their data */
	struct targen *a = targen_new(41), *b = targen_new(42);
	targen_add_dir(a, "usr");
	targen_add_dir(a, "usr/share");
	targen_add_dir(a, "usr/share/doc");
	targen_add_file(a, "usr/share/doc/odd", "a file with a child\n", 20);
	targen_add_file(a, "usr/share/doc/odd/copyright", "(c)\n", 4);
	targen_add_file(a, "usr/share/doc/README", "linked docs\n", 12);
	targen_add_hardlink(a, "bin-tool", "usr/share/doc/README");
	targen_add(a, &(struct targen_entry){.path = "usr/share/doc/big", .type = '0', .size = 900000});
	targen_end(a, 2, false);
	targen_add_file(b, "upper", "u\n", 2);
	targen_end(b, 2, false);
	make_plain_layout("in", a, b);
	char want[DIGEST_STR_SIZE] = "";
	const char *knobs[] = {"0", "auto"};
	for (size_t k = 0; k < 2; k++) {
		ck_assert_int_eq(setenv("REGSLIM_TAR_SPOOL", knobs[k], 1), 0);
		char dst[32];
		snprintf(dst, sizeof(dst), "o%zu:x", k);
		struct report rep;
		struct rs_err err = {0};
		ck_assert_msg(run("in:latest", dst, NULL, 2, &rep, &err) == RS_OK, "%s", err.msg);
		if (k == 0)
			snprintf(want, sizeof(want), "%s", rep.digest);
		else
			ck_assert_str_eq(rep.digest, want);
		report_dispose(&rep);
	}
	unsetenv("REGSLIM_TAR_SPOOL");
	static struct grab g;
	memset(&g, 0, sizeof(g));
	struct tar_read_cbs cbs = {g_entry, g_data, NULL};
	char p[256];
	size_t nl;
	snprintf(p, sizeof(p), "%s/o1", fixture_dir());
	each_layer(p, "x", &nl, &cbs, &g, NULL);
	int i = grab_find(&g, "usr/share/doc/odd");
	ck_assert_int_ge(i, 0);
	ck_assert_uint_eq(g.e[i].len, 20);
	ck_assert_int_eq(memcmp(g.e[i].data, "a file with a child\n", 20), 0);
	i = grab_find(&g, "bin-tool");
	ck_assert_int_ge(i, 0);
	ck_assert_uint_eq(g.e[i].len, 12);
	ck_assert_int_eq(memcmp(g.e[i].data, "linked docs\n", 12), 0);
	ck_assert_int_lt(grab_find(&g, "usr/share/doc/big"), 0);
	grab_free(&g);
	targen_free(a);
	targen_free(b);
}
END_TEST

START_TEST(keep_base_uses_the_base_image_annotation)
{
	/* the image's manifest names its base by org.opencontainers.image.base.digest;
	 * the base's manifest is a blob of the layout (not in index.json) */
	struct image im;
	build_image(&im, "scratch");
	char bd[DIGEST_STR_SIZE], md[DIGEST_STR_SIZE], ann[256];
	add_image_ann("in", "base", im.l, 1, NULL, bd, false);
	snprintf(ann, sizeof(ann),
		 "{\"org.opencontainers.image.base.digest\":\"%s\",\"org.opencontainers.image.base.name\":\"example/base:1\"}", bd);
	add_image_ann("in", "latest", im.l, 2, ann, md, true);
	struct report rep;
	struct rs_err err = {0};
	ck_assert_msg(run("in:latest", "out:x", "{\"squash\":\"keep-base\"}", 2, &rep, &err) == RS_OK, "%s", err.msg);
	ck_assert_uint_eq(rep.images[0].out_layer_count, 2);
	ck_assert(rep.images[0].layers[0].base);
	ck_assert(!rep.images[0].layers[1].base);
	ck_assert(rep.images[0].out_layers[0].copied);
	report_dispose(&rep);
	/* without the annotation (and no other image) there is no base */
	add_image_ann("plain", "latest", im.l, 2, NULL, md, true);
	ck_assert_msg(run("plain:latest", "out2:x", "{\"squash\":\"keep-base\"}", 2, &rep, &err) == RS_OK, "%s", err.msg);
	ck_assert_uint_eq(rep.images[0].out_layer_count, 1);
	ck_assert(!rep.images[0].layers[0].base);
	report_dispose(&rep);
	free_image(&im);
}
END_TEST

START_TEST(keep_base_finds_layers_shared_in_a_docker_archive)
{
	/* docker save a b: both images start with the same layer */
	struct image im;
	build_image(&im, "scratch");
	size_t n1, n2, n3;
	const uint8_t *d1 = targen_data(im.t1, &n1), *d2 = targen_data(im.t2, &n2);
	struct targen *t3 = targen_new(51);
	targen_add_file(t3, "b-only.txt", "b\n", 2);
	targen_end(t3, 2, false);
	const uint8_t *d3 = targen_data(t3, &n3);
	char id1[DIGEST_STR_SIZE], id2[DIGEST_STR_SIZE], id3[DIGEST_STR_SIZE];
	digest_buffer(id1, d1, n1);
	digest_buffer(id2, d2, n2);
	digest_buffer(id3, d3, n3);
	char ca[1024], cb[1024];
	int la = snprintf(ca, sizeof(ca),
			  "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"%s\",\"%s\"]}}",
			  id1, id2);
	int lb = snprintf(cb, sizeof(cb),
			  "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"%s\",\"%s\"]}}",
			  id1, id3);
	const char *mj = "[{\"Config\":\"a.json\",\"RepoTags\":[\"a:latest\"],\"Layers\":[\"l1/layer.tar\",\"l2/layer.tar\"]},"
			 "{\"Config\":\"b.json\",\"RepoTags\":[\"b:latest\"],\"Layers\":[\"l1/layer.tar\",\"l3/layer.tar\"]}]";
	struct targen *ar = targen_new(52);
	targen_add_file(ar, "manifest.json", mj, strlen(mj));
	targen_add_file(ar, "a.json", ca, (size_t)la);
	targen_add_file(ar, "b.json", cb, (size_t)lb);
	targen_add_file(ar, "l1/layer.tar", d1, n1);
	targen_add_file(ar, "l2/layer.tar", d2, n2);
	targen_add_file(ar, "l3/layer.tar", d3, n3);
	targen_end(ar, 2, false);
	size_t an;
	const uint8_t *ad = targen_data(ar, &an);
	char path[256], ref[300];
	snprintf(path, sizeof(path), "%s/ab.tar", fixture_dir());
	fixture_write_file(path, ad, an);
	snprintf(ref, sizeof(ref), "docker-archive:%s:a:latest", path);
	struct report rep;
	struct rs_err err = {0};
	ck_assert_msg(run_ref(ref, "out:x", "{\"squash\":\"keep-base\"}", 2, &rep, &err) == RS_OK, "%s", err.msg);
	ck_assert_uint_eq(rep.images[0].out_layer_count, 2);
	ck_assert(rep.images[0].layers[0].base);
	ck_assert(!rep.images[0].layers[1].base);
	ck_assert(rep.images[0].out_layers[0].copied);
	ck_assert_str_eq(rep.images[0].out_layers[0].diff_id, id1);
	report_dispose(&rep);
	targen_free(ar);
	targen_free(t3);
	free_image(&im);
}
END_TEST

static Suite *pipeline_suite(void)
{
	Suite *s = suite_create("pipeline");
	TCase *t = tcase_create("core");
	tcase_set_timeout(t, 60);
	tcase_add_checked_fixture(t, fixture_tmpdir_setup, fixture_tmpdir_teardown);
	tcase_add_test(t, squash_all_equals_input_minus_stripped);
	tcase_add_test(t, output_is_identical_for_any_thread_count);
	tcase_add_test(t, squash_none_and_keep_base_keep_the_tree);
	tcase_add_test(t, keep_base_finds_layers_shared_in_the_layout);
	tcase_add_test(t, corrupt_gzip_fails_naming_layer_and_offset);
	tcase_add_test(t, wrong_diff_id_fails);
	tcase_add_test(t, dotdot_names_and_truncated_tars_fail);
	tcase_add_test(t, unknown_tag_and_bad_refs_fail);
	tcase_add_test(t, cancel_and_deadline_stop_the_run);
	tcase_add_test(t, tar_spool_fallbacks_give_identical_output);
	tcase_add_test(t, bad_tar_spool_knob_is_refused);
	tcase_add_test(t, hard_link_to_a_sparse_file_is_materialized_expanded);
	tcase_add_test(t, global_header_stays_within_its_layer_when_squashed);
	tcase_add_test(t, spool_holes_fall_back_when_a_stripped_file_stays);
	tcase_add_test(t, keep_base_uses_the_base_image_annotation);
	tcase_add_test(t, keep_base_finds_layers_shared_in_a_docker_archive);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	return fixture_run_suite(pipeline_suite());
}
