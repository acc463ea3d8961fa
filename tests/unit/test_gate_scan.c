/* test_gate_scan: the push gate's layer scans at upload (gate_scan.h) over
 * a real store. A gated image whose layers hold forbidden paths, secrets,
 * a key deleted by a later layer's whiteout and more findings than a report
 * keeps: the report joined from the scans of uploads equals gate_check's
 * inline report field by field (texts, order, counts, dropped, sizes); each
 * layer digest is scanned once however often it is queued, also across a
 * restart (the results are store documents); the queue is bounded (workers
 * 0: queued scans wait for the manifest PUT, which takes them over, and
 * what did not fit is scanned there); other scan parameters are other scans;
 * an image config is not queued; an unreadable stored result is scanned
 * again; scans fed by uploads in small pieces give the inline report too,
 * and keep nothing for a feed out of step, another size or a forgotten
 * upload. */
#include "digest.h"
#include "fixture.h"
#include "gate.h"
#include "gate_policy.h"
#include "gate_scan.h"
#include "store_fixture.h"
#include "targen.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KEY "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n"
#define GH "export GH=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789\n"

struct image {
	char layers[3][DIGEST_STR_SIZE];
	char config[DIGEST_STR_SIZE];
	char manifest[DIGEST_STR_SIZE];
};

static void put(struct store *bs, const void *buf, size_t len, char digest[DIGEST_STR_SIZE])
{
	struct rs_err err = {0};
	struct store_writer *w = NULL;
	digest_buffer(digest, buf, len);
	ck_assert_int_eq(store_writer_new(&w, bs, STORE_PUSHED, STORE_BLOB, digest, (int64_t)len, &err), RS_OK);
	ck_assert_int_eq(store_writer_write(w, buf, len, &err), RS_OK);
	ck_assert_int_eq(store_writer_commit(w, &err), RS_OK);
}

static void put_layer(struct store *bs, struct targen *g, char digest[DIGEST_STR_SIZE], size_t *size)
{
	targen_end(g, 2, false);
	size_t n = 0;
	const uint8_t *tar = targen_data(g, &n);
	uint8_t *gz = NULL;
	targen_gzip(tar, n, 6, 1, &gz, size);
	put(bs, gz, *size, digest);
	free(gz);
	targen_free(g);
}

static void put_manifest(struct store *bs, struct image *im, const char *cfg, const size_t sizes[3])
{
	char man[2048];
	int n = snprintf(man, sizeof(man),
			 "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
			 "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"%s\",\"size\":%zu},"
			 "\"layers\":[",
			 im->config, strlen(cfg));
	for (int i = 0; i < 3; i++)
		n += snprintf(man + n, sizeof(man) - (size_t)n,
			      "%s{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"%s\",\"size\":%zu}",
			      i ? "," : "", im->layers[i], sizes[i]);
	n += snprintf(man + n, sizeof(man) - (size_t)n, "]}");
	digest_buffer(im->manifest, man, (size_t)n);
	struct rs_err err = {0};
	ck_assert_int_eq(store_manifest_put(bs, STORE_PUSHED, im->manifest, "application/vnd.oci.image.manifest.v1+json",
					    man, (size_t)n, &err),
			 RS_OK);
}

/* Layer 1: a private key, a .env, an app file; layer 2: the key's
 * whiteout, a GitHub token; layer 3: 70 files with a token and 3 .env files
 * (more findings than a report keeps). */
static void put_image(struct store *bs, struct image *im)
{
	size_t sizes[3];
	struct targen *g = targen_new(1);
	targen_add_dir(g, "root");
	targen_add_dir(g, "root/.ssh");
	targen_add_file(g, "root/.ssh/id_ed25519", KEY, strlen(KEY));
	targen_add_file(g, "app/.env", "A=1\n", 4);
	targen_add_file(g, "app/main.sh", "echo hi\n", 8);
	put_layer(bs, g, im->layers[0], &sizes[0]);
	g = targen_new(2);
	targen_add_file(g, "root/.ssh/.wh.id_ed25519", "", 0);
	targen_add_file(g, "etc/ci.sh", GH, strlen(GH));
	put_layer(bs, g, im->layers[1], &sizes[1]);
	g = targen_new(3);
	char path[64];
	for (int i = 0; i < 70; i++) {
		snprintf(path, sizeof(path), "srv/t%02d/run.sh", i);
		targen_add_file(g, path, GH, strlen(GH));
		if (i % 30 == 0) {
			snprintf(path, sizeof(path), "srv/t%02d/.env", i);
			targen_add_file(g, path, "B=2\n", 4);
		}
	}
	put_layer(bs, g, im->layers[2], &sizes[2]);
	const char *cfg = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"User\":\"1000\"},"
			  "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
	put(bs, cfg, strlen(cfg), im->config);
	put_manifest(bs, im, cfg, sizes);
}

static char *globs[] = {"**/.env", "root/.ssh/**"};
static char *globs2[] = {"**/.env"};

static struct rs_gate_policy policy(void)
{
	struct rs_gate_policy p = {.forbidden_paths = {.items = globs, .count = 2, .action = GATE_DENY},
				   .secrets = GATE_WARN,
				   .max_uncompressed_bytes = {.limit = 1000, .action = GATE_DENY}};
	return p;
}

static void inline_report(struct gate_report *r, struct store *bs, const struct rs_gate_policy *p, const char *d)
{
	struct rs_err err = {0};
	ck_assert_msg(gate_check(r, p, bs, STORE_PUSHED, d, 0, NULL, &err) == RS_OK, "%s", err.msg);
}

static void joined_report(struct gate_report *r, struct gate_scan *sc, struct store *bs, const struct rs_gate_policy *p,
			  const char *d)
{
	struct gate_memo *m = NULL; /* a fresh memo: the layers are joined, not the whole report remembered */
	struct rs_err err = {0};
	bool hit = true;
	ck_assert_int_eq(gate_memo_new(&m, &err), RS_OK);
	ck_assert_msg(gate_check_push(m, sc, &hit, r, p, bs, STORE_PUSHED, d, 0, NULL, &err) == RS_OK, "%s", err.msg);
	ck_assert(!hit);
	gate_memo_free(m);
}

static void same_str(const char *a, const char *b)
{
	if (!a || !b)
		ck_assert_ptr_eq(a, b);
	else
		ck_assert_str_eq(a, b);
}

static void assert_same(const struct gate_report *a, const struct gate_report *b)
{
	ck_assert_uint_eq(a->count, b->count);
	ck_assert_uint_eq(a->denies, b->denies);
	ck_assert_uint_eq(a->warns, b->warns);
	ck_assert_uint_eq(a->dropped, b->dropped);
	ck_assert_uint_eq(a->compressed_bytes, b->compressed_bytes);
	ck_assert_uint_eq(a->uncompressed_bytes, b->uncompressed_bytes);
	ck_assert_int_eq(a->scanned, b->scanned);
	ck_assert_uint_eq(a->layers, b->layers);
	for (size_t i = 0; i < a->count; i++) {
		ck_assert_int_eq(a->items[i].action, b->items[i].action);
		ck_assert_str_eq(a->items[i].rule, b->items[i].rule);
		ck_assert_str_eq(a->items[i].text, b->items[i].text);
		ck_assert_uint_eq(a->items[i].layer, b->items[i].layer);
		same_str(a->items[i].platform, b->items[i].platform);
		same_str(a->items[i].layer_digest, b->items[i].layer_digest);
		same_str(a->items[i].path, b->items[i].path);
	}
}

static void queue_all(struct gate_scan *sc, const struct rs_gate_policy *p, const struct image *im)
{
	gate_scan_queue(sc, p, im->config);
	for (int i = 0; i < 3; i++)
		gate_scan_queue(sc, p, im->layers[i]);
}

START_TEST(joined_report_equals_the_inline_scan)
{
	struct store *bs = store_fixture_store(0);
	struct image im;
	put_image(bs, &im);
	struct rs_gate_policy p = policy();
	struct gate_report want = {0}, got = {0};
	inline_report(&want, bs, &p, im.manifest);
	/* what the image is: the deleted key of layer 1 is found, the report is full */
	ck_assert_uint_eq(want.count, GATE_FINDINGS_MAX);
	ck_assert_uint_gt(want.dropped, 0);
	char line[300];
	snprintf(line, sizeof(line), "layer 1 of 3 (%s) root/.ssh/id_ed25519: forbidden path (matches root/.ssh/**)",
		 im.layers[0]);
	ck_assert_str_eq(want.items[1].text, line);
	snprintf(line, sizeof(line), "layer 1 of 3 (%s) root/.ssh/id_ed25519: OpenSSH private key", im.layers[0]);
	ck_assert_str_eq(want.items[2].text, line);

	struct gate_scan *sc = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(gate_scan_new(&sc, bs, 2, 8, &err), RS_OK);
	queue_all(sc, &p, &im);
	gate_scan_idle(sc);
	struct gate_scan_stats st;
	gate_scan_stats(sc, &st);
	ck_assert_uint_eq(st.upload_scans, 3); /* the config is no layer: not queued */
	joined_report(&got, sc, bs, &p, im.manifest);
	assert_same(&want, &got);
	gate_scan_stats(sc, &st);
	ck_assert_uint_eq(st.upload_scans, 3);
	ck_assert_uint_eq(st.manifest_scans, 0);
	ck_assert_uint_eq(st.cached, 3);
	gate_report_dispose(&got);
	gate_report_dispose(&want);
	gate_scan_free(sc);
	store_free(bs);
}
END_TEST

/* Feed blob digest of the store into gate_scan_feed as upload uuid, in
 * pieces of 1, 2, 3, ... bytes up to 4 KiB (cuts inside the gzip header
 * and the first tar headers), then 64 KiB; skip: leave out the first
 * piece at or after that offset (a feed out of step). Returns the size. */
static uint64_t feed_blob(struct gate_scan *sc, struct store *bs, const struct rs_gate_policy *p, const char *uuid,
			  const char *digest, uint64_t skip)
{
	int fd = -1;
	uint64_t size = 0;
	struct rs_err err = {0};
	ck_assert_int_eq(store_open_fd(bs, STORE_PUSHED, STORE_BLOB, digest, &fd, &size, &err), RS_OK);
	char *buf = malloc(size ? size : 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(pread(fd, buf, size, 0), (ssize_t)size);
	close(fd);
	uint64_t at = 0;
	for (size_t n = 1; at < size; n = n < 4096 ? n + 1 : 65536) {
		size_t len = size - at < n ? (size_t)(size - at) : n;
		if (at >= skip)
			skip = UINT64_MAX; /* left out */
		else
			gate_scan_feed(sc, p, uuid, at, buf + at, len);
		at += len;
	}
	free(buf);
	return size;
}

START_TEST(scans_fed_by_uploads_equal_the_inline_scan)
{
	struct store *bs = store_fixture_store(0);
	struct image im;
	put_image(bs, &im);
	struct rs_gate_policy p = policy();
	struct gate_report want = {0}, got = {0};
	inline_report(&want, bs, &p, im.manifest);
	struct gate_scan *sc = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(gate_scan_new(&sc, bs, 0, 8, &err), RS_OK); /* no workers: only the feeds scan */
	char uuid[4][STORE_UUID_SIZE];
	for (int i = 0; i < 4; i++)
		snprintf(uuid[i], sizeof(uuid[i]), "00000000-0000-4000-8000-00000000000%d", i);
	struct gate_scan_stats st;
	/* a digest that does not verify: the upload is forgotten, nothing kept */
	feed_blob(sc, bs, &p, uuid[0], im.layers[0], UINT64_MAX);
	gate_scan_forget(sc, uuid[0]);
	ck_assert(!gate_scan_commit(sc, uuid[0], 1, im.layers[0]));
	/* the config is no layer: nothing kept */
	uint64_t n = feed_blob(sc, bs, &p, uuid[3], im.config, UINT64_MAX);
	ck_assert(!gate_scan_commit(sc, uuid[3], n, im.config));
	/* a feed out of step drops the stream: the upload is scanned once complete */
	n = feed_blob(sc, bs, &p, uuid[1], im.layers[1], 100);
	ck_assert(!gate_scan_commit(sc, uuid[1], n, im.layers[1]));
	/* a commit of another size than was fed keeps nothing */
	n = feed_blob(sc, bs, &p, uuid[1], im.layers[1], UINT64_MAX);
	ck_assert(!gate_scan_commit(sc, uuid[1], n + 1, im.layers[1]));
	gate_scan_idle(sc);
	gate_scan_stats(sc, &st);
	ck_assert_uint_eq(st.streamed, 0);
	for (int i = 0; i < 3; i++) {
		n = feed_blob(sc, bs, &p, uuid[i], im.layers[i], UINT64_MAX);
		ck_assert(gate_scan_commit(sc, uuid[i], n, im.layers[i]));
	}
	gate_scan_idle(sc); /* the streams' threads finish after the commits */
	gate_scan_stats(sc, &st);
	ck_assert_uint_eq(st.streamed, 3);
	ck_assert_uint_eq(st.upload_scans, 3);
	ck_assert_uint_eq(st.repeated, 0);
	joined_report(&got, sc, bs, &p, im.manifest);
	assert_same(&want, &got);
	gate_scan_stats(sc, &st);
	ck_assert_uint_eq(st.manifest_scans, 0);
	ck_assert_uint_eq(st.cached, 3);
	/* the same layer uploaded again: scanned as it arrives, the stored result stays */
	n = feed_blob(sc, bs, &p, uuid[2], im.layers[0], UINT64_MAX);
	ck_assert(gate_scan_commit(sc, uuid[2], n, im.layers[0]));
	gate_scan_idle(sc);
	gate_scan_stats(sc, &st);
	ck_assert_uint_eq(st.upload_scans, 3);
	ck_assert_uint_eq(st.repeated, 1);
	gate_report_dispose(&got);
	gate_report_dispose(&want);
	gate_scan_free(sc);
	store_free(bs);
}
END_TEST

/* Layer 2 of 16 MiB of random text (about 12 MB gzip, far more than the
 * ring between an upload and its scan) with a token near its end, between
 * two small layers with findings. */
static void put_big_image(struct store *bs, struct image *im)
{
	size_t sizes[3];
	struct targen *g = targen_new(4);
	targen_add_file(g, "root/.ssh/id_ed25519", KEY, strlen(KEY));
	targen_add_file(g, "app/.env", "A=1\n", 4);
	put_layer(bs, g, im->layers[0], &sizes[0]);
	size_t big = 16u << 20;
	char *text = malloc(big);
	ck_assert_ptr_nonnull(text);
	static const char alpha[] = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;\n";
	unsigned seed = 42;
	for (size_t i = 0; i < big; i++) {
		seed = seed * 1103515245u + 12345u;
		text[i] = alpha[(seed >> 16) % (sizeof(alpha) - 1)];
	}
	memcpy(text + big - 1000, "\n" GH, strlen(GH) + 1);
	g = targen_new(5);
	targen_add_file(g, "srv/big/data.txt", text, big);
	targen_add_file(g, "srv/big/.env", "B=2\n", 4);
	put_layer(bs, g, im->layers[1], &sizes[1]);
	free(text);
	g = targen_new(6);
	targen_add_file(g, "etc/ci.sh", GH, strlen(GH));
	put_layer(bs, g, im->layers[2], &sizes[2]);
	ck_assert_uint_gt(sizes[1], 8u << 20);
	const char *cfg = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"User\":\"1000\"},"
			  "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
	put(bs, cfg, strlen(cfg), im->config);
	put_manifest(bs, im, cfg, sizes);
}

/* Uploads that outrun their scans: the bytes the ring cannot take wait in
 * a spill file, the feeds do not wait for the scan, and the report is the
 * inline scan's; no scratch file is left. */
START_TEST(a_scan_behind_its_upload_spills_and_reports_the_same)
{
	struct store *bs = store_fixture_store(0);
	struct image im;
	put_big_image(bs, &im);
	struct rs_gate_policy p = policy();
	struct gate_report want = {0}, got = {0};
	inline_report(&want, bs, &p, im.manifest);
	ck_assert_uint_gt(want.count, 2);
	struct gate_scan *sc = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(gate_scan_new(&sc, bs, 0, 8, &err), RS_OK);
	for (int i = 0; i < 3; i++) {
		char uuid[STORE_UUID_SIZE];
		snprintf(uuid, sizeof(uuid), "00000000-0000-4000-8000-00000000010%d", i);
		uint64_t n = feed_blob(sc, bs, &p, uuid, im.layers[i], UINT64_MAX);
		ck_assert(gate_scan_commit(sc, uuid, n, im.layers[i]));
	}
	gate_scan_idle(sc);
	struct gate_scan_stats st;
	gate_scan_stats(sc, &st);
	ck_assert_uint_eq(st.streamed, 3);
	ck_assert_uint_gt(st.spilled_bytes, 0);
	ck_assert_uint_lt(st.spilled_bytes, st.streamed_bytes);
	ck_assert_int_eq(store_fixture_count_files("tmp"), 0);
	joined_report(&got, sc, bs, &p, im.manifest);
	assert_same(&want, &got);
	gate_scan_stats(sc, &st);
	ck_assert_uint_eq(st.manifest_scans, 0);
	gate_report_dispose(&got);
	gate_report_dispose(&want);
	gate_scan_free(sc);
	store_free(bs);
}
END_TEST

START_TEST(each_digest_is_scanned_once_also_after_a_restart)
{
	struct store *bs = store_fixture_store(0);
	struct image im;
	put_image(bs, &im);
	struct rs_gate_policy p = policy(), p_same = policy();
	struct gate_scan *sc = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(gate_scan_new(&sc, bs, 2, 8, &err), RS_OK);
	for (int round = 0; round < 3; round++) {
		queue_all(sc, &p, &im);
		queue_all(sc, &p_same, &im); /* another policy with the same scan parameters */
	}
	gate_scan_idle(sc);
	queue_all(sc, &p, &im);
	gate_scan_idle(sc);
	struct gate_scan_stats st;
	gate_scan_stats(sc, &st);
	ck_assert_uint_eq(st.upload_scans, 3);
	ck_assert_uint_eq(st.dropped, 0);
	gate_scan_free(sc);

	/* a restart: the results are in the store */
	ck_assert_int_eq(gate_scan_new(&sc, bs, 2, 8, &err), RS_OK);
	queue_all(sc, &p, &im);
	gate_scan_idle(sc);
	struct gate_report want = {0}, got = {0};
	inline_report(&want, bs, &p, im.manifest);
	joined_report(&got, sc, bs, &p_same, im.manifest);
	assert_same(&want, &got);
	gate_scan_stats(sc, &st);
	ck_assert_uint_eq(st.upload_scans, 0);
	ck_assert_uint_eq(st.manifest_scans, 0);
	ck_assert_uint_eq(st.cached, 6);
	gate_report_dispose(&got);
	gate_report_dispose(&want);
	gate_scan_free(sc);
	store_free(bs);
}
END_TEST

START_TEST(queue_is_bounded_and_the_manifest_put_takes_over)
{
	struct store *bs = store_fixture_store(0);
	struct image im;
	put_image(bs, &im);
	struct rs_gate_policy p = policy();
	struct gate_scan *sc = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(gate_scan_new(&sc, bs, 0, 2, &err), RS_OK); /* no workers: nothing runs by itself */
	queue_all(sc, &p, &im);
	struct gate_scan_stats st;
	gate_scan_stats(sc, &st);
	ck_assert_uint_eq(st.upload_scans, 0);
	ck_assert_uint_eq(st.dropped, 1);
	struct gate_report want = {0}, got = {0};
	inline_report(&want, bs, &p, im.manifest);
	joined_report(&got, sc, bs, &p, im.manifest);
	assert_same(&want, &got);
	gate_scan_stats(sc, &st);
	ck_assert_uint_eq(st.manifest_scans, 3); /* two taken from the queue, one never queued */
	gate_scan_idle(sc);                       /* nothing left queued or running */
	gate_report_dispose(&got);
	/* the second join finds every result stored */
	joined_report(&got, sc, bs, &p, im.manifest);
	assert_same(&want, &got);
	gate_scan_stats(sc, &st);
	ck_assert_uint_eq(st.manifest_scans, 3);
	ck_assert_uint_eq(st.cached, 3);
	gate_report_dispose(&got);
	gate_report_dispose(&want);
	gate_scan_free(sc);
	store_free(bs);
}
END_TEST

START_TEST(other_scan_parameters_are_other_scans)
{
	struct store *bs = store_fixture_store(0);
	struct image im;
	put_image(bs, &im);
	struct rs_gate_policy p = policy(), q = policy();
	q.forbidden_paths.items = globs2;
	q.forbidden_paths.count = 1;
	struct gate_scan *sc = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(gate_scan_new(&sc, bs, 1, 8, &err), RS_OK);
	queue_all(sc, &p, &im);
	gate_scan_idle(sc);
	struct gate_report want = {0}, got = {0};
	inline_report(&want, bs, &q, im.manifest);
	joined_report(&got, sc, bs, &q, im.manifest);
	assert_same(&want, &got);
	struct gate_scan_stats st;
	gate_scan_stats(sc, &st);
	ck_assert_uint_eq(st.upload_scans, 3);
	ck_assert_uint_eq(st.manifest_scans, 3);
	/* the key names the digest and the parameters */
	char k1[GATE_SCAN_KEY_SIZE], k2[GATE_SCAN_KEY_SIZE], k3[GATE_SCAN_KEY_SIZE];
	gate_scan_key(k1, &p, CODEC_GZIP, im.layers[0]);
	gate_scan_key(k2, &q, CODEC_GZIP, im.layers[0]);
	gate_scan_key(k3, &p, CODEC_ZSTD, im.layers[0]);
	ck_assert_str_ne(k1, k2);
	ck_assert_str_ne(k1, k3);
	ck_assert(strncmp(k1, digest_hex(im.layers[0]), 64) == 0);
	gate_report_dispose(&got);
	gate_report_dispose(&want);
	gate_scan_free(sc);
	store_free(bs);
}
END_TEST

START_TEST(an_unreadable_stored_result_is_scanned_again)
{
	struct store *bs = store_fixture_store(0);
	struct image im;
	put_image(bs, &im);
	struct rs_gate_policy p = policy();
	struct gate_scan *sc = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(gate_scan_new(&sc, bs, 1, 8, &err), RS_OK);
	queue_all(sc, &p, &im);
	gate_scan_idle(sc);
	char key[GATE_SCAN_KEY_SIZE];
	gate_scan_key(key, &p, CODEC_GZIP, im.layers[1]);
	static const char junk[] = "regslim-gate-scan 1\nuncompressed 5\nmore 0 0\ns 99 x\n";
	ck_assert_int_eq(store_doc_put(bs, STORE_DOC_GATE_SCAN, NULL, key, junk, strlen(junk), &err), RS_OK);
	struct gate_report want = {0}, got = {0};
	inline_report(&want, bs, &p, im.manifest);
	joined_report(&got, sc, bs, &p, im.manifest);
	assert_same(&want, &got);
	struct gate_scan_stats st;
	gate_scan_stats(sc, &st);
	ck_assert_uint_eq(st.manifest_scans, 1);
	gate_report_dispose(&got);
	gate_report_dispose(&want);
	gate_scan_free(sc);
	store_free(bs);
}
END_TEST

static Suite *gate_scan_suite(void)
{
	Suite *s = suite_create("gate_scan");
	TCase *t = tcase_create("scans");
	tcase_add_checked_fixture(t, store_fixture_setup, store_fixture_teardown);
	tcase_set_timeout(t, 60);
	tcase_add_test(t, joined_report_equals_the_inline_scan);
	tcase_add_test(t, scans_fed_by_uploads_equal_the_inline_scan);
	tcase_add_test(t, a_scan_behind_its_upload_spills_and_reports_the_same);
	tcase_add_test(t, each_digest_is_scanned_once_also_after_a_restart);
	tcase_add_test(t, queue_is_bounded_and_the_manifest_put_takes_over);
	tcase_add_test(t, other_scan_parameters_are_other_scans);
	tcase_add_test(t, an_unreadable_stored_result_is_scanned_again);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	return fixture_run_suite(gate_scan_suite());
}
