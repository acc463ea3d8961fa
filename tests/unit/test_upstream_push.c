/* test_upstream_push: the push client towards the upstream
 * (proxy/upstream_push.c), which sends gated images upstream with regslim's
 * own credentials.
 *
 * (a) Against the real docker-registry 2.8 of the test lab (plain,
 *     htpasswd and bearer-token registries; tests/fixtures/lab.h starts and
 *     stops them in a lab of this suite's own), read back with the pull
 *     client (upstream.h): an image, its blobs skipped when present, an
 *     index with its platform manifests by digest, a cross-repository mount,
 *     a blob pushed from memory (then skipped), a staged blob filled by a
 *     PATCH of unknown length then completed or deleted,
 *     and wrong credentials of both kinds. Skipped with a printed reason when
 *     docker-registry is not installed.
 * (b) Against small in-process fake peers (libmicrohttpd on 127.0.0.1, a
 *     second one on 127.0.0.2 as another origin) for the error paths: 401 for
 *     every try, 500 on the blob PUT, an upload Location that is missing,
 *     absolute, on another origin or relative, a manifest PUT answered with
 *     another Docker-Content-Digest, and a peer that never answers. */
#include "digest.h"
#include "fakepeer.h"
#include "lab.h"
#include "upstream.h"
#include "upstream_push.h"

#include <check.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ---- an image held in memory, served to upstream_push as its source ---- */

#define LAYER_SIZE (300u * 1024)
#define MT_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_INDEX "application/vnd.oci.image.index.v1+json"

struct object {
	char digest[DIGEST_STR_SIZE];
	char *bytes;
	size_t len;
	const char *media_type; /* manifests only */
};

static struct image {
	struct object config, layer, manifest, config2, manifest2, index, nested; /* nested: an index of index */
	int opens; /* open_blob calls */
} I;

static void object_set(struct object *o, char *bytes, size_t len, const char *mt)
{
	o->bytes = bytes;
	o->len = len;
	o->media_type = mt;
	digest_buffer(o->digest, bytes, len);
}

static char *str_new(const char *fmt, const char *a, size_t an, const char *b, size_t bn)
{
	size_t n = strlen(fmt) + 200;
	char *s = malloc(n);
	ck_assert_ptr_nonnull(s);
	snprintf(s, n, fmt, a, an, b, bn);
	return s;
}

/* A two-platform image whose bytes depend on seed (so runs never collide). */
static void image_make(unsigned seed)
{
	memset(&I, 0, sizeof(I));
	char *layer = malloc(LAYER_SIZE);
	ck_assert_ptr_nonnull(layer);
	for (size_t i = 0; i < LAYER_SIZE; i++)
		layer[i] = (char)(rand_r(&seed) >> 5);
	object_set(&I.layer, layer, LAYER_SIZE, NULL);
	char cfg[200];
	for (int p = 0; p < 2; p++) {
		snprintf(cfg, sizeof(cfg), "{\"architecture\":\"%s\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\","
		         "\"diff_ids\":[]},\"config\":{\"Labels\":{\"seed\":\"%u\"}}}",
		         p ? "arm64" : "amd64", seed);
		object_set(p ? &I.config2 : &I.config, strdup(cfg), strlen(cfg), NULL);
	}
	static const char mf[] = "{\"schemaVersion\":2,\"mediaType\":\"" MT_MANIFEST "\",\"config\":{\"mediaType\":"
	                         "\"application/vnd.oci.image.config.v1+json\",\"digest\":\"%s\",\"size\":%zu},"
	                         "\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\","
	                         "\"digest\":\"%s\",\"size\":%zu}]}";
	char *m = str_new(mf, I.config.digest, I.config.len, I.layer.digest, I.layer.len);
	object_set(&I.manifest, m, strlen(m), MT_MANIFEST);
	m = str_new(mf, I.config2.digest, I.config2.len, I.layer.digest, I.layer.len);
	object_set(&I.manifest2, m, strlen(m), MT_MANIFEST);
	static const char xf[] = "{\"schemaVersion\":2,\"mediaType\":\"" MT_INDEX "\",\"manifests\":["
	                         "{\"mediaType\":\"" MT_MANIFEST "\",\"digest\":\"%s\",\"size\":%zu,"
	                         "\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}},"
	                         "{\"mediaType\":\"" MT_MANIFEST "\",\"digest\":\"%s\",\"size\":%zu,"
	                         "\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\"}}]}\n";
	m = str_new(xf, I.manifest.digest, I.manifest.len, I.manifest2.digest, I.manifest2.len);
	object_set(&I.index, m, strlen(m), MT_INDEX);
	m = malloc(400);
	ck_assert_ptr_nonnull(m);
	snprintf(m, 400, "{\"schemaVersion\":2,\"mediaType\":\"" MT_INDEX "\",\"manifests\":[{\"mediaType\":\"" MT_INDEX
	         "\",\"digest\":\"%s\",\"size\":%zu}]}", I.index.digest, I.index.len);
	object_set(&I.nested, m, strlen(m), MT_INDEX);
}

static void image_free(void)
{
	struct object *all[] = {&I.config, &I.layer, &I.manifest, &I.config2, &I.manifest2, &I.index, &I.nested};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		free(all[i]->bytes);
	memset(&I, 0, sizeof(I));
}

static struct object *image_find(const char *digest)
{
	struct object *all[] = {&I.config, &I.layer, &I.manifest, &I.config2, &I.manifest2, &I.index, &I.nested};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (all[i]->bytes && strcmp(all[i]->digest, digest) == 0)
			return all[i];
	return NULL;
}

static enum rs_code src_open_blob(void *ctx, const char *digest, int *fd, uint64_t *size, struct rs_err *err)
{
	(void)ctx;
	struct object *o = image_find(digest);
	if (!o)
		return rs_err_set(err, RS_NOT_FOUND, "no blob %s", digest);
	I.opens++;
	char path[] = "/tmp/rs-upush-XXXXXX";
	*fd = mkstemp(path);
	ck_assert_int_ge(*fd, 0);
	unlink(path);
	ck_assert_int_eq(write(*fd, o->bytes, o->len), (ssize_t)o->len);
	*size = o->len;
	return RS_OK;
}

static enum rs_code src_read_manifest(void *ctx, const char *digest, char **buf, size_t *len, char **mt,
                                      struct rs_err *err)
{
	(void)ctx;
	struct object *o = image_find(digest);
	if (!o || !o->media_type)
		return rs_err_set(err, RS_NOT_FOUND, "no manifest %s", digest);
	*buf = malloc(o->len);
	ck_assert_ptr_nonnull(*buf);
	memcpy(*buf, o->bytes, o->len);
	*len = o->len;
	*mt = strdup(o->media_type);
	return RS_OK;
}

static const struct upstream_push_source SRC = {src_open_blob, src_read_manifest, NULL};

static struct upstream_push *push_new(const struct rs_upstream_config *cfg)
{
	struct upstream_push *u = NULL;
	struct rs_err err = {0};
	ck_assert_msg(upstream_push_new(&u, cfg, &err) == RS_OK, "%s", err.msg);
	return u;
}

static void expect_counts(struct upstream_push *u, unsigned up, unsigned skip, unsigned man)
{
	unsigned a, b, c;
	upstream_push_counts(u, &a, &b, &c);
	ck_assert_msg(a == up && b == skip && c == man, "uploaded %u skipped %u manifests %u, expected %u %u %u", a, b,
	              c, up, skip, man);
}

/* ---- (a) the real registries ------------------------------------------- */

static struct lab LAB;
static enum lab_state LAB_STATE;

static void lab_setup(void)
{
	struct rs_err err = {0};
	if (upstream_global_init(&err) != RS_OK)
		abort(); /* libcurl cannot start: nothing here can run */
	LAB_STATE = lab_start(&LAB, lab_port_base("RS_UPSTREAM_PUSH_LAB_PORT_BASE", 100), "all", false);
	if (LAB_STATE == LAB_UP)
		printf("upstream_push lab: registries on 127.0.0.1:%d..%d (%s)\n", LAB.port, LAB.port + 3, LAB.dir);
	else
		printf("upstream_push lab: %s: %s\n", LAB_STATE == LAB_SKIP ? "SKIP" : "FAILED", LAB.why);
	fflush(stdout);
	if (LAB_STATE == LAB_FAILED)
		lab_stop(&LAB, true);
}

static void lab_teardown(void)
{
	lab_stop(&LAB, false);
	upstream_global_cleanup();
}

/* Skip (printing why) when the lab could not run here; fail when it should have. */
#define LAB_REQUIRED()                                                                                   \
	do {                                                                                             \
		if (LAB_STATE == LAB_SKIP) {                                                             \
			printf("upstream_push lab: SKIP %s: %s\n", __func__, LAB.why);                    \
			return;                                                                          \
		}                                                                                        \
		ck_assert_msg(LAB_STATE == LAB_UP, "lab: %s", LAB.why);                                  \
	} while (0)

static struct rs_upstream_config lab_cfg(char *url, size_t n, int index, const char *user, const char *pass)
{
	lab_url(&LAB, index, url, n);
	struct rs_upstream_config cfg = {
		.name = "lab", .url = url, .username = (char *)user, .password = (char *)pass,
		.tag_ttl_s = 300, .timeout_s = 30, .tls_verify = true,
	};
	return cfg;
}

/* The registry's manifest at repo:ref, read back with the pull client: its
 * digest must be want (and the bytes hash to it). */
static void expect_upstream_manifest(const struct rs_upstream_config *cfg, const char *repo, const char *ref,
                                     const char *want)
{
	static const char *const accept[] = {MT_MANIFEST, MT_INDEX};
	struct upstream *u = NULL;
	struct upstream_reply r;
	memset(&r, 0, sizeof(r));
	struct rs_err err = {0};
	ck_assert_msg(upstream_new(&u, cfg, &err) == RS_OK, "%s", err.msg);
	ck_assert_msg(upstream_manifest(u, repo, ref, accept, 2, false, 1 << 20, &r, &err) == RS_OK, "%s", err.msg);
	ck_assert_msg(r.status == 200, "%s:%s answered %ld", repo, ref, r.status);
	char got[DIGEST_STR_SIZE];
	digest_buffer(got, r.body, r.body_len);
	ck_assert_str_eq(got, want);
	ck_assert_str_eq(r.digest, want);
	upstream_reply_dispose(&r);
	upstream_free(u);
}

static void expect_upstream_blob_size(const struct rs_upstream_config *cfg, const char *repo, const struct object *o)
{
	struct upstream *u = NULL;
	struct upstream_reply h;
	memset(&h, 0, sizeof(h));
	struct rs_err err = {0};
	ck_assert_msg(upstream_new(&u, cfg, &err) == RS_OK, "%s", err.msg);
	ck_assert_msg(upstream_blob_head(u, repo, o->digest, &h, &err) == RS_OK, "%s", err.msg);
	ck_assert_msg(h.status == 200 && h.content_length == (int64_t)o->len, "blob %s: status %ld size %lld",
	              o->digest, h.status, (long long)h.content_length);
	upstream_reply_dispose(&h);
	upstream_free(u);
}

START_TEST(pushes_an_image_then_skips_the_blobs_the_registry_has)
{
	LAB_REQUIRED();
	image_make(101);
	char url[64];
	struct rs_upstream_config cfg = lab_cfg(url, sizeof(url), 0, NULL, NULL);
	struct upstream_push *u = push_new(&cfg);
	struct rs_err err = {0};
	ck_assert_msg(upstream_push_image(u, "t/plain", "v1", I.manifest.digest, &SRC, &err) == RS_OK, "%s", err.msg);
	expect_counts(u, 2, 0, 1);
	expect_upstream_manifest(&cfg, "t/plain", "v1", I.manifest.digest);
	expect_upstream_blob_size(&cfg, "t/plain", &I.layer);
	expect_upstream_blob_size(&cfg, "t/plain", &I.config);
	/* again, to another tag: nothing is uploaded twice */
	int opens = I.opens;
	ck_assert_msg(upstream_push_image(u, "t/plain", "v2", I.manifest.digest, &SRC, &err) == RS_OK, "%s", err.msg);
	expect_counts(u, 2, 2, 2);
	ck_assert_int_eq(I.opens, opens);
	expect_upstream_manifest(&cfg, "t/plain", "v2", I.manifest.digest);
	upstream_push_free(u);
	image_free();
}
END_TEST

START_TEST(pushes_with_basic_credentials)
{
	LAB_REQUIRED();
	image_make(102);
	char url[64];
	struct rs_upstream_config cfg = lab_cfg(url, sizeof(url), 1, "lab", "labpass");
	struct upstream_push *u = push_new(&cfg);
	struct rs_err err = {0};
	ck_assert_msg(upstream_push_image(u, "t/basic", "v1", I.manifest.digest, &SRC, &err) == RS_OK, "%s", err.msg);
	expect_counts(u, 2, 0, 1);
	expect_upstream_manifest(&cfg, "t/basic", "v1", I.manifest.digest);
	upstream_push_free(u);
	image_free();
}
END_TEST

START_TEST(refuses_wrong_basic_credentials_naming_the_request)
{
	LAB_REQUIRED();
	image_make(103);
	char url[64], want[300];
	struct rs_upstream_config cfg = lab_cfg(url, sizeof(url), 1, "lab", "wrong");
	struct upstream_push *u = push_new(&cfg);
	struct rs_err err = {0};
	ck_assert_int_eq(upstream_push_image(u, "t/basic", "v2", I.manifest.digest, &SRC, &err), RS_UPSTREAM);
	snprintf(want, sizeof(want),
	         "upstream lab: HEAD /v2/t/basic/blobs/%s: 401 unauthorized with regslim's credentials",
	         I.config.digest);
	ck_assert_str_eq(err.msg, want);
	expect_counts(u, 0, 0, 0);
	upstream_push_free(u);
	image_free();
}
END_TEST

START_TEST(pushes_an_index_through_the_token_server)
{
	LAB_REQUIRED();
	image_make(104);
	char url[64];
	struct rs_upstream_config cfg = lab_cfg(url, sizeof(url), 2, "lab", "labpass");
	struct upstream_push *u = push_new(&cfg);
	struct rs_err err = {0};
	ck_assert_msg(upstream_push_image(u, "t/token", "multi", I.index.digest, &SRC, &err) == RS_OK, "%s", err.msg);
	/* the layer is shared by both platforms: uploaded once, then found */
	expect_counts(u, 3, 1, 3);
	expect_upstream_manifest(&cfg, "t/token", "multi", I.index.digest);
	expect_upstream_manifest(&cfg, "t/token", I.manifest.digest, I.manifest.digest);
	expect_upstream_manifest(&cfg, "t/token", I.manifest2.digest, I.manifest2.digest);
	/* the token server saw regslim's account asking for push on t/token */
	char cmd[900];
	snprintf(cmd, sizeof(cmd),
	         "grep -qi 'GET /token?[^ ]*scope=repository%%3At%%2Ftoken%%3Apull%%2Cpush' '%s/logs/tokenserver.log' && "
	         "grep -q 'authed=True access=.*\"t/token\", \"actions\": \\[\"pull\", \"push\"\\]' '%s/logs/tokenserver.log'",
	         LAB.dir, LAB.dir);
	ck_assert_msg(lab_sh(cmd) == 0, "no authenticated push token request for t/token in %s/logs/tokenserver.log",
	              LAB.dir);
	upstream_push_free(u);
	image_free();
}
END_TEST

START_TEST(mounts_a_blob_from_another_repository)
{
	LAB_REQUIRED();
	image_make(105);
	char url[64];
	struct rs_upstream_config cfg = lab_cfg(url, sizeof(url), 2, "lab", "labpass");
	struct upstream_push *u = push_new(&cfg);
	struct rs_err err = {0};
	bool sent = false;
	ck_assert_msg(upstream_push_blob(u, "t/from", I.layer.digest, &SRC, NULL, &sent, &err) == RS_OK, "%s", err.msg);
	ck_assert(sent);
	int opens = I.opens;
	ck_assert_msg(upstream_push_blob(u, "t/to", I.layer.digest, &SRC, "t/from", &sent, &err) == RS_OK, "%s",
	              err.msg);
	ck_assert(!sent);
	ck_assert_int_eq(I.opens, opens); /* mounted: the bytes were not read again */
	expect_counts(u, 1, 1, 0);
	expect_upstream_blob_size(&cfg, "t/to", &I.layer);
	upstream_push_free(u);
	image_free();
}
END_TEST

START_TEST(pushes_a_blob_from_memory_once)
{
	LAB_REQUIRED();
	char url[64];
	struct rs_upstream_config cfg = lab_cfg(url, sizeof(url), 2, "lab", "labpass");
	struct upstream_push *u = push_new(&cfg);
	struct rs_err err = {0};
	static const char doc[] = "{\"a signature document\":\"held in memory\"}";
	struct object o = {.len = sizeof(doc) - 1};
	ck_assert_msg(upstream_push_blob_bytes(u, "t/mem", doc, o.len, o.digest, &err) == RS_OK, "%s", err.msg);
	char want[DIGEST_STR_SIZE];
	digest_buffer(want, doc, o.len);
	ck_assert_str_eq(o.digest, want);
	expect_counts(u, 1, 0, 0);
	expect_upstream_blob_size(&cfg, "t/mem", &o);
	/* again: the upstream has it */
	ck_assert_msg(upstream_push_blob_bytes(u, "t/mem", doc, o.len, o.digest, &err) == RS_OK, "%s", err.msg);
	expect_counts(u, 1, 1, 0);
	upstream_push_free(u);
}
END_TEST

/* A staged blob's body handed over in pieces of 1000 bytes, then ended. */
struct pieces {
	const char *buf;
	size_t len, at, calls;
};

static enum rs_code give_pieces(void *arg, void *buf, size_t cap, size_t *out_len, struct rs_err *err)
{
	(void)err;
	struct pieces *p = arg;
	size_t n = p->len - p->at < 1000 ? p->len - p->at : 1000;
	n = n < cap ? n : cap;
	memcpy(buf, p->buf + p->at, n);
	p->at += n;
	p->calls++;
	*out_len = n;
	return RS_OK;
}

static enum rs_code give_up(void *arg, void *buf, size_t cap, size_t *out_len, struct rs_err *err)
{
	(void)arg;
	(void)buf;
	(void)cap;
	(void)out_len;
	return rs_err_set(err, RS_IO, "the client went away");
}

/* Staged blobs through the token server: filled by one PATCH read in
 * pieces, completed under the digest (then present upstream); one deleted
 * (not present), one completed under a wrong digest (refused, naming it),
 * and a body that fails (its error). */
START_TEST(stages_a_blob_then_completes_or_deletes_it)
{
	LAB_REQUIRED();
	char url[64];
	struct rs_upstream_config cfg = lab_cfg(url, sizeof(url), 2, "lab", "labpass");
	struct upstream_push *u = push_new(&cfg);
	struct rs_err err = {0};
	static char body[25000];
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (char)(i * 131 + i / 7);
	struct object o = {.len = sizeof(body)};
	digest_buffer(o.digest, body, o.len);
	struct upstream_push_stage *st = NULL;
	ck_assert_msg(upstream_push_stage_open(u, "t/staged", &st, &err) == RS_OK, "%s", err.msg);
	struct pieces p = {body, sizeof(body), 0, 0};
	ck_assert_msg(upstream_push_stage_fill(st, give_pieces, &p, NULL, &err) == RS_OK, "%s", err.msg);
	ck_assert_uint_ge(p.calls, 25);
	ck_assert_msg(upstream_push_stage_commit(st, o.digest, &err) == RS_OK, "%s", err.msg);
	upstream_push_stage_close(st, false);
	expect_counts(u, 1, 0, 0);
	expect_upstream_blob_size(&cfg, "t/staged", &o);
	/* deleted: the upstream never has it */
	body[0] ^= 1;
	struct object gone = {.len = sizeof(body)};
	digest_buffer(gone.digest, body, gone.len);
	ck_assert_msg(upstream_push_stage_open(u, "t/staged", &st, &err) == RS_OK, "%s", err.msg);
	p = (struct pieces){body, sizeof(body), 0, 0};
	ck_assert_msg(upstream_push_stage_fill(st, give_pieces, &p, NULL, &err) == RS_OK, "%s", err.msg);
	upstream_push_stage_close(st, true);
	struct upstream *pull = NULL;
	struct upstream_reply h;
	memset(&h, 0, sizeof(h));
	ck_assert_msg(upstream_new(&pull, &cfg, &err) == RS_OK, "%s", err.msg);
	ck_assert_msg(upstream_blob_head(pull, "t/staged", gone.digest, &h, &err) == RS_OK, "%s", err.msg);
	ck_assert_int_eq(h.status, 404);
	upstream_reply_dispose(&h);
	upstream_free(pull);
	/* completed under another digest: the registry refuses, the error names it */
	ck_assert_msg(upstream_push_stage_open(u, "t/staged", &st, &err) == RS_OK, "%s", err.msg);
	p = (struct pieces){body, sizeof(body), 0, 0};
	ck_assert_msg(upstream_push_stage_fill(st, give_pieces, &p, NULL, &err) == RS_OK, "%s", err.msg);
	ck_assert_int_eq(upstream_push_stage_commit(st, o.digest, &err), RS_UPSTREAM);
	ck_assert_msg(strstr(err.msg, o.digest) != NULL, "%s", err.msg);
	upstream_push_stage_close(st, true);
	/* a body that fails: its error */
	ck_assert_msg(upstream_push_stage_open(u, "t/staged", &st, &err) == RS_OK, "%s", err.msg);
	rs_err_clear(&err);
	ck_assert_int_ne(upstream_push_stage_fill(st, give_up, NULL, NULL, &err), RS_OK);
	ck_assert_msg(strstr(err.msg, "the client went away") != NULL, "%s", err.msg);
	upstream_push_stage_close(st, true);
	expect_counts(u, 1, 0, 0);
	upstream_push_free(u);
}
END_TEST

START_TEST(refuses_wrong_token_credentials_naming_the_token_endpoint)
{
	LAB_REQUIRED();
	image_make(106);
	char url[64];
	struct rs_upstream_config cfg = lab_cfg(url, sizeof(url), 2, "lab", "wrong");
	struct upstream_push *u = push_new(&cfg);
	struct rs_err err = {0};
	ck_assert_int_eq(upstream_push_image(u, "t/token", "bad", I.manifest.digest, &SRC, &err), RS_UPSTREAM);
	ck_assert_str_eq(err.msg, "upstream lab: token endpoint answered 401 for scope repository:t/token:pull,push "
	                          "(check the upstream's username and password)");
	expect_counts(u, 0, 0, 0);
	upstream_push_free(u);
	image_free();
}
END_TEST

/* ---- (b) fake peers ---------------------------------------------------- */

enum fake_mode {
	PEER_OK,           /* a working registry without auth */
	PEER_DENY_ALL,     /* 401 with a Basic challenge for everything */
	PEER_BEARER_DENY,  /* a token server that gives tokens the registry never accepts */
	PEER_PUT_500,      /* the blob PUT fails */
	PEER_NO_LOCATION,  /* POST answers 202 without Location */
	PEER_LOC_ABSOLUTE, /* Location is an absolute URL on the same origin */
	PEER_LOC_OTHER,    /* Location is on another origin (127.0.0.2) */
	PEER_LOC_RELATIVE, /* Location is relative to the POST URL */
	PEER_WRONG_DIGEST, /* the manifest PUT answers another Docker-Content-Digest */
	PEER_SILENT,       /* accepts, never answers */
};

static struct fake {
	struct MHD_Daemon *d1, *d2;
	char url1[64], url2[64];
	pthread_mutex_t lock;
	enum fake_mode mode;
	int requests, token_hits, other_hits, basic_hits, bearer_hits;
	char put_path[256], put_query_state[64], put_query_digest[80], put_body_digest[DIGEST_STR_SIZE];
	char manifest_type[128];
	volatile int stop;
} F;

#define BASIC_USER_PASS "Basic dXNlcjpwYXNz" /* user:pass */

struct upload {
	struct digest_ctx *d;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *body, const char *h1,
                             const char *v1, const char *h2, const char *v2)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
	MHD_add_response_header(r, "Content-Type", "application/json");
	if (h1)
		MHD_add_response_header(r, h1, v1);
	if (h2)
		MHD_add_response_header(r, h2, v2);
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static void lookup(char *dst, size_t n, struct MHD_Connection *c, enum MHD_ValueKind kind, const char *name)
{
	const char *v = MHD_lookup_connection_value(c, kind, name);
	snprintf(dst, n, "%s", v ? v : "");
}

static enum MHD_Result answer(struct MHD_Connection *c, const char *url, const char *method, const char *body_digest)
{
	char loc[256], authz[256];
	lookup(authz, sizeof(authz), c, MHD_HEADER_KIND, "Authorization");
	if (strcmp(authz, BASIC_USER_PASS) == 0)
		F.basic_hits++;
	if (strncmp(authz, "Bearer ", 7) == 0)
		F.bearer_hits++;
	if (strcmp(url, "/token") == 0) {
		F.token_hits++;
		return reply(c, 200, "{\"token\":\"never-good\",\"expires_in\":300}", NULL, NULL, NULL, NULL);
	}
	if (F.mode == PEER_SILENT) {
		for (int i = 0; i < 200 && !F.stop; i++)
			usleep(50 * 1000);
		return MHD_NO;
	}
	if (F.mode == PEER_DENY_ALL)
		return reply(c, 401, "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}",
		             "WWW-Authenticate", "Basic realm=\"fake\"", NULL, NULL);
	if (F.mode == PEER_BEARER_DENY) {
		char ch[200];
		snprintf(ch, sizeof(ch), "Bearer realm=\"%s/token\",service=\"fake\"", F.url1);
		return reply(c, 401, "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"token rejected\"}]}",
		             "WWW-Authenticate", ch, NULL, NULL);
	}
	if (strcmp(url, "/v2/") == 0)
		return reply(c, 200, "{}", NULL, NULL, NULL, NULL);
	if (strcmp(method, "HEAD") == 0)
		return reply(c, 404, "", NULL, NULL, NULL, NULL);
	if (strcmp(method, "POST") == 0 && strcmp(url, "/v2/r/blobs/uploads/") == 0) {
		const char *l = "/v2/r/blobs/uploads/u1?_state=abc";
		if (F.mode == PEER_LOC_ABSOLUTE) {
			snprintf(loc, sizeof(loc), "%s/v2/r/blobs/uploads/u2?_state=abs", F.url1);
			l = loc;
		} else if (F.mode == PEER_LOC_OTHER) {
			snprintf(loc, sizeof(loc), "%s/v2/r/blobs/uploads/u9?_state=x", F.url2);
			l = loc;
		} else if (F.mode == PEER_LOC_RELATIVE) {
			l = "u3?_state=rel";
		}
		if (F.mode == PEER_NO_LOCATION)
			return reply(c, 202, "", NULL, NULL, NULL, NULL);
		return reply(c, 202, "", "Location", l, "Range", "0-0");
	}
	if (strcmp(method, "PUT") == 0 && strncmp(url, "/v2/r/blobs/uploads/", 20) == 0) {
		snprintf(F.put_path, sizeof(F.put_path), "%s", url);
		lookup(F.put_query_state, sizeof(F.put_query_state), c, MHD_GET_ARGUMENT_KIND, "_state");
		lookup(F.put_query_digest, sizeof(F.put_query_digest), c, MHD_GET_ARGUMENT_KIND, "digest");
		snprintf(F.put_body_digest, sizeof(F.put_body_digest), "%s", body_digest);
		if (F.mode == PEER_PUT_500)
			return reply(c, 500, "{\"errors\":[{\"code\":\"UNKNOWN\",\"message\":\"storage driver failed\"}]}",
			             NULL, NULL, NULL, NULL);
		return reply(c, 201, "", "Docker-Content-Digest", body_digest, NULL, NULL);
	}
	if (strcmp(method, "PUT") == 0 && strncmp(url, "/v2/r/manifests/", 16) == 0) {
		lookup(F.manifest_type, sizeof(F.manifest_type), c, MHD_HEADER_KIND, "Content-Type");
		const char *d = F.mode == PEER_WRONG_DIGEST
		                        ? "sha256:0000000000000000000000000000000000000000000000000000000000000000"
		                        : body_digest;
		return reply(c, 201, "", "Docker-Content-Digest", d, NULL, NULL);
	}
	return reply(c, 404, "{\"errors\":[{\"code\":\"NAME_UNKNOWN\"}]}", NULL, NULL, NULL, NULL);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *data, size_t *data_size, void **state)
{
	(void)version;
	struct upload *up = *state;
	if (!up) { /* first call: headers only */
		up = calloc(1, sizeof(*up));
		if (!up || !(up->d = digest_new())) {
			free(up);
			return MHD_NO;
		}
		*state = up;
		return MHD_YES;
	}
	if (*data_size) {
		digest_update(up->d, data, *data_size);
		*data_size = 0;
		return MHD_YES;
	}
	char body_digest[DIGEST_STR_SIZE];
	digest_final(up->d, body_digest);
	pthread_mutex_lock(&F.lock);
	F.requests++;
	enum MHD_Result r;
	if (*(int *)cls == 2) {
		F.other_hits++;
		r = reply(c, 201, "", NULL, NULL, NULL, NULL);
	} else {
		r = answer(c, url, method, body_digest);
	}
	pthread_mutex_unlock(&F.lock);
	return r;
}

static void done(void *cls, struct MHD_Connection *c, void **state, enum MHD_RequestTerminationCode code)
{
	(void)cls;
	(void)c;
	(void)code;
	struct upload *up = *state;
	if (up) {
		digest_free(up->d);
		free(up);
		*state = NULL;
	}
}

static int ids[2] = {1, 2};

static void fake_setup(void)
{
	memset(&F, 0, sizeof(F));
	pthread_mutex_init(&F.lock, NULL);
	struct rs_err err = {0};
	ck_assert_int_eq(upstream_global_init(&err), RS_OK);
	F.d1 = fakepeer_start("127.0.0.1", handler, &ids[0], done, F.url1, sizeof(F.url1));
	F.d2 = fakepeer_start("127.0.0.2", handler, &ids[1], done, F.url2, sizeof(F.url2));
	ck_assert_msg(F.d1 && F.d2, "cannot start the fake peers on 127.0.0.1 and 127.0.0.2");
	image_make(7);
}

static void fake_teardown(void)
{
	F.stop = 1;
	MHD_stop_daemon(F.d1);
	MHD_stop_daemon(F.d2);
	upstream_global_cleanup();
	pthread_mutex_destroy(&F.lock);
	image_free();
}

static struct rs_upstream_config fake_cfg(enum fake_mode mode)
{
	F.mode = mode;
	struct rs_upstream_config cfg = {
		.name = "fake", .url = F.url1, .username = "user", .password = "pass",
		.tag_ttl_s = 300, .timeout_s = 1, .tls_verify = true,
	};
	return cfg;
}

/* Push the layer blob under mode; the code, err filled. */
static enum rs_code fake_push_layer(enum fake_mode mode, struct rs_err *err)
{
	struct rs_upstream_config cfg = fake_cfg(mode);
	struct upstream_push *u = push_new(&cfg);
	enum rs_code rc = upstream_push_blob(u, "r", I.layer.digest, &SRC, NULL, NULL, err);
	upstream_push_free(u);
	return rc;
}

START_TEST(gives_up_after_a_second_401_with_basic_credentials)
{
	struct rs_err err = {0};
	ck_assert_int_eq(fake_push_layer(PEER_DENY_ALL, &err), RS_UPSTREAM);
	char want[300];
	snprintf(want, sizeof(want),
	         "upstream fake: HEAD /v2/r/blobs/%s: 401 unauthorized with regslim's credentials", I.layer.digest);
	ck_assert_str_eq(err.msg, want);
	/* GET /v2/ without credentials, then the HEAD twice with them; nothing else */
	ck_assert_int_eq(F.requests, 3);
	ck_assert_int_eq(F.basic_hits, 2);
}
END_TEST

START_TEST(refetches_the_token_once_then_reports_the_401)
{
	struct rs_err err = {0};
	ck_assert_int_eq(fake_push_layer(PEER_BEARER_DENY, &err), RS_UPSTREAM);
	char want[300];
	snprintf(want, sizeof(want),
	         "upstream fake: HEAD /v2/r/blobs/%s: 401 unauthorized with regslim's credentials",
	         I.layer.digest);
	ck_assert_str_eq(err.msg, want);
	ck_assert_int_eq(F.token_hits, 2);
	ck_assert_int_eq(F.bearer_hits, 2);
	ck_assert_int_eq(F.basic_hits, 2); /* the Basic credentials went to the token endpoint only */
}
END_TEST

START_TEST(reports_a_failed_blob_put_with_the_registry_message)
{
	struct rs_err err = {0};
	ck_assert_int_eq(fake_push_layer(PEER_PUT_500, &err), RS_UPSTREAM);
	char want[300];
	snprintf(want, sizeof(want), "upstream fake: PUT blob %s (%u bytes) to r answered 500: storage driver failed",
	         I.layer.digest, LAYER_SIZE);
	ck_assert_str_eq(err.msg, want);
	ck_assert_str_eq(F.put_body_digest, I.layer.digest); /* the whole blob was streamed */
}
END_TEST

START_TEST(uploads_to_an_absolute_path_location)
{
	struct rs_err err = {0};
	ck_assert_msg(fake_push_layer(PEER_OK, &err) == RS_OK, "%s", err.msg);
	ck_assert_str_eq(F.put_path, "/v2/r/blobs/uploads/u1");
	ck_assert_str_eq(F.put_query_state, "abc");
	ck_assert_str_eq(F.put_query_digest, I.layer.digest);
	ck_assert_str_eq(F.put_body_digest, I.layer.digest);
}
END_TEST

START_TEST(uploads_to_an_absolute_url_location_on_the_same_origin)
{
	struct rs_err err = {0};
	ck_assert_msg(fake_push_layer(PEER_LOC_ABSOLUTE, &err) == RS_OK, "%s", err.msg);
	ck_assert_str_eq(F.put_path, "/v2/r/blobs/uploads/u2");
	ck_assert_str_eq(F.put_query_state, "abs");
	ck_assert_str_eq(F.put_body_digest, I.layer.digest);
}
END_TEST

START_TEST(resolves_a_relative_location_against_the_post_url)
{
	struct rs_err err = {0};
	ck_assert_msg(fake_push_layer(PEER_LOC_RELATIVE, &err) == RS_OK, "%s", err.msg);
	ck_assert_str_eq(F.put_path, "/v2/r/blobs/uploads/u3");
	ck_assert_str_eq(F.put_query_state, "rel");
	ck_assert_str_eq(F.put_query_digest, I.layer.digest);
	ck_assert_str_eq(F.put_body_digest, I.layer.digest);
}
END_TEST

/* A registry that does not take a PATCH without Content-Range (streamed
 * upload): the fill fails naming the request and status, and says the
 * upstream refused it (stages are turned off, not retried per layer). */
START_TEST(reports_a_refused_streamed_patch)
{
	struct rs_upstream_config cfg = fake_cfg(PEER_OK);
	struct upstream_push *u = push_new(&cfg);
	struct rs_err err = {0};
	struct upstream_push_stage *st = NULL;
	ck_assert_msg(upstream_push_stage_open(u, "r", &st, &err) == RS_OK, "%s", err.msg);
	static char body[5000];
	struct pieces p = {body, sizeof(body), 0, 0};
	bool refused = false;
	ck_assert_int_eq(upstream_push_stage_fill(st, give_pieces, &p, &refused, &err), RS_UPSTREAM);
	ck_assert(refused);
	ck_assert_msg(strstr(err.msg, "PATCH upload of r answered 404") != NULL, "%s", err.msg);
	upstream_push_stage_close(st, true);
	upstream_push_free(u);
}
END_TEST

START_TEST(reports_a_202_without_location)
{
	struct rs_err err = {0};
	ck_assert_int_eq(fake_push_layer(PEER_NO_LOCATION, &err), RS_UPSTREAM);
	ck_assert_str_eq(err.msg, "upstream fake: POST /v2/r/blobs/uploads/ answered 202 without a Location header");
	ck_assert_str_eq(F.put_path, "");
}
END_TEST

START_TEST(keeps_credentials_off_an_upload_location_on_another_origin)
{
	struct rs_err err = {0};
	ck_assert_int_eq(fake_push_layer(PEER_LOC_OTHER, &err), RS_UPSTREAM);
	ck_assert_str_eq(err.msg, "upstream fake: POST /v2/r/blobs/uploads/: upload Location is on another origin; "
	                          "not sending credentials there");
	ck_assert_int_eq(F.other_hits, 0);
	ck_assert_int_eq(I.opens, 0);
}
END_TEST

START_TEST(refuses_a_manifest_stored_under_another_digest)
{
	struct rs_upstream_config cfg = fake_cfg(PEER_WRONG_DIGEST);
	struct upstream_push *u = push_new(&cfg);
	struct rs_err err = {0};
	ck_assert_int_eq(upstream_push_manifest(u, "r", "v1", MT_MANIFEST, I.manifest.bytes, I.manifest.len, &err),
	                 RS_UPSTREAM);
	char want[300];
	snprintf(want, sizeof(want),
	         "upstream fake: PUT /v2/r/manifests/v1: the upstream stored "
	         "sha256:0000000000000000000000000000000000000000000000000000000000000000 instead of %s",
	         I.manifest.digest);
	ck_assert_str_eq(err.msg, want);
	ck_assert_str_eq(F.manifest_type, MT_MANIFEST);
	expect_counts(u, 0, 0, 0);
	/* the same PUT with the right digest in the answer counts */
	F.mode = PEER_OK;
	ck_assert_msg(upstream_push_manifest(u, "r", "v1", MT_MANIFEST, I.manifest.bytes, I.manifest.len, &err) == RS_OK,
	              "%s", err.msg);
	expect_counts(u, 0, 0, 1);
	upstream_push_free(u);
}
END_TEST

/* An index inside an index is refused (upstream registries differ on it)
 * before anything is sent. */
START_TEST(refuses_a_nested_index_before_any_request)
{
	struct rs_err err = {0};
	struct rs_upstream_config cfg = fake_cfg(PEER_OK);
	struct upstream_push *u = push_new(&cfg);
	ck_assert_int_eq(upstream_push_image(u, "r", "v1", I.nested.digest, &SRC, &err), RS_BAD_INPUT);
	char want[200];
	snprintf(want, sizeof(want), "nested index %s is not supported for upstream pushes", I.index.digest);
	ck_assert_str_eq(err.msg, want);
	ck_assert_int_eq(F.requests, 0);
	expect_counts(u, 0, 0, 0);
	upstream_push_free(u);
}
END_TEST

START_TEST(times_out_on_a_peer_that_never_answers)
{
	struct rs_err err = {0};
	ck_assert_int_eq(fake_push_layer(PEER_SILENT, &err), RS_UPSTREAM);
	ck_assert_str_eq(err.msg, "upstream fake: GET /v2/: timed out (no progress for 1 s)");
}
END_TEST

Suite *upstream_push_suite(void)
{
	Suite *s = suite_create("upstream_push");
	TCase *tc = tcase_create("fake");
	tcase_add_checked_fixture(tc, fake_setup, fake_teardown);
	tcase_add_test(tc, gives_up_after_a_second_401_with_basic_credentials);
	tcase_add_test(tc, refetches_the_token_once_then_reports_the_401);
	tcase_add_test(tc, reports_a_failed_blob_put_with_the_registry_message);
	tcase_add_test(tc, uploads_to_an_absolute_path_location);
	tcase_add_test(tc, uploads_to_an_absolute_url_location_on_the_same_origin);
	tcase_add_test(tc, resolves_a_relative_location_against_the_post_url);
	tcase_add_test(tc, reports_a_202_without_location);
	tcase_add_test(tc, reports_a_refused_streamed_patch);
	tcase_add_test(tc, keeps_credentials_off_an_upload_location_on_another_origin);
	tcase_add_test(tc, refuses_a_manifest_stored_under_another_digest);
	tcase_add_test(tc, refuses_a_nested_index_before_any_request);
	tcase_add_test(tc, times_out_on_a_peer_that_never_answers);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	tc = tcase_create("lab");
	tcase_add_unchecked_fixture(tc, lab_setup, lab_teardown);
	tcase_add_test(tc, pushes_an_image_then_skips_the_blobs_the_registry_has);
	tcase_add_test(tc, pushes_with_basic_credentials);
	tcase_add_test(tc, refuses_wrong_basic_credentials_naming_the_request);
	tcase_add_test(tc, pushes_an_index_through_the_token_server);
	tcase_add_test(tc, mounts_a_blob_from_another_repository);
	tcase_add_test(tc, pushes_a_blob_from_memory_once);
	tcase_add_test(tc, stages_a_blob_then_completes_or_deletes_it);
	tcase_add_test(tc, refuses_wrong_token_credentials_naming_the_token_endpoint);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(upstream_push_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
