/* test_xfer: the libcurl transfer core (proxy/xfer.c, proxy/xfer_exchange.c)
 * on its own, for what the two clients' suites (test_upstream,
 * test_upstream_push) do not reach through their APIs: upload bodies from
 * memory and from a file descriptor sent again in full on a retry, a body
 * source that fails, a Content-Type that would forge a header, the owner's
 * wording of transport failures and token refusals (URL without its query),
 * the probe that learns a Bearer challenge so the token is fetched before
 * the first request, and the answer's headers (raw and validated digest,
 * Location not followed when the request says so).
 *
 * The peer is an in-process fake registry and token server (libmicrohttpd on
 * 127.0.0.1, ephemeral port: tests/fixtures/fakepeer.h). */
#include "digest.h"
#include "fakepeer.h"
#include "xfer.h"

#include <check.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BODY_SIZE (200u * 1024)

enum peer_auth {
	AUTH_NONE,
	AUTH_BASIC_ONCE, /* the first PUT is answered 401 (Basic), the second 201 */
	AUTH_BEARER,     /* everything but /token wants "Bearer tok" */
};

static struct fake {
	struct MHD_Daemon *d;
	char url[64];
	pthread_mutex_t lock;
	enum peer_auth auth;
	bool token_refuse;
	int requests, token_hits, puts, put_401s;
	char put_digests[4][DIGEST_STR_SIZE];
	char content_type[128], authz[128], token_query_scope[128];
} F;

static char *BODY;

struct upload {
	struct digest_ctx *d;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *body, const char *h1,
                             const char *v1, const char *h2, const char *v2)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
	if (h1)
		MHD_add_response_header(r, h1, v1);
	if (h2)
		MHD_add_response_header(r, h2, v2);
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static void copy_value(char *dst, size_t n, struct MHD_Connection *c, enum MHD_ValueKind kind, const char *name)
{
	const char *v = MHD_lookup_connection_value(c, kind, name);
	snprintf(dst, n, "%s", v ? v : "");
}

static enum MHD_Result answer(struct MHD_Connection *c, const char *url, const char *method, const char *digest)
{
	char challenge[160];
	snprintf(challenge, sizeof(challenge), "Bearer realm=\"%s/token\",service=\"fake\"", F.url);
	copy_value(F.authz, sizeof(F.authz), c, MHD_HEADER_KIND, "Authorization");
	if (strcmp(url, "/token") == 0) {
		F.token_hits++;
		copy_value(F.token_query_scope, sizeof(F.token_query_scope), c, MHD_GET_ARGUMENT_KIND, "scope");
		if (F.token_refuse)
			return reply(c, 401, "{}", NULL, NULL, NULL, NULL);
		return reply(c, 200, "{\"token\":\"tok\",\"expires_in\":300}", NULL, NULL, NULL, NULL);
	}
	if (F.auth == AUTH_BEARER && strcmp(F.authz, "Bearer tok") != 0)
		return reply(c, 401, "{}", "WWW-Authenticate", challenge, NULL, NULL);
	if (strcmp(url, "/v2/") == 0)
		return reply(c, 200, "{}", NULL, NULL, NULL, NULL);
	if (strcmp(url, "/put") == 0 && strcmp(method, "PUT") == 0) {
		copy_value(F.content_type, sizeof(F.content_type), c, MHD_HEADER_KIND, "Content-Type");
		if (F.puts < 4)
			snprintf(F.put_digests[F.puts], sizeof(F.put_digests[0]), "%s", digest);
		F.puts++;
		if (F.auth == AUTH_BASIC_ONCE && F.put_401s == 0) {
			F.put_401s++;
			return reply(c, 401, "{}", "WWW-Authenticate", "Basic realm=\"fake\"", NULL, NULL);
		}
		return reply(c, 201, "", "Docker-Content-Digest", digest, NULL, NULL);
	}
	if (strcmp(url, "/odd-digest") == 0)
		return reply(c, 200, "x", "Docker-Content-Digest", "sha256:not-hex", NULL, NULL);
	if (strcmp(url, "/moved") == 0)
		return reply(c, 307, "", "Location", "/v2/", NULL, NULL);
	return reply(c, 404, "{\"errors\":[{\"code\":\"NAME_UNKNOWN\"}]}", NULL, NULL, NULL, NULL);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *data, size_t *data_size, void **state)
{
	(void)cls;
	(void)version;
	struct upload *up = *state;
	if (!up) {
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
	char digest[DIGEST_STR_SIZE];
	digest_final(up->d, digest);
	pthread_mutex_lock(&F.lock);
	F.requests++;
	enum MHD_Result r = answer(c, url, method, digest);
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

static void setup(void)
{
	memset(&F, 0, sizeof(F));
	pthread_mutex_init(&F.lock, NULL);
	struct rs_err err = {0};
	ck_assert_int_eq(xfer_global_init(&err), RS_OK);
	F.d = fakepeer_start("127.0.0.1", handler, NULL, done, F.url, sizeof(F.url));
	ck_assert_msg(F.d != NULL, "cannot start the fake peer");
	BODY = malloc(BODY_SIZE);
	ck_assert_ptr_nonnull(BODY);
	unsigned seed = 11;
	for (size_t i = 0; i < BODY_SIZE; i++)
		BODY[i] = (char)(rand_r(&seed) >> 7);
}

static void teardown(void)
{
	MHD_stop_daemon(F.d);
	xfer_global_cleanup();
	pthread_mutex_destroy(&F.lock);
	free(BODY);
}

static struct rs_upstream_config cfg_for(char *url)
{
	struct rs_upstream_config cfg = {
		.name = "fake", .url = url, .username = "user", .password = "pass", .tag_ttl_s = 300, .timeout_s = 2,
		.tls_verify = true,
	};
	return cfg;
}

static struct xfer_peer *peer_new(const struct rs_upstream_config *cfg, xfer_word_fn word)
{
	struct xfer_peer *p = NULL;
	struct rs_err err = {0};
	ck_assert_msg(xfer_peer_new(&p, cfg, "regslim-test/1", word, &err) == RS_OK, "%s", err.msg);
	return p;
}

/* A PUT of the body; the answer into *a. */
static enum rs_code put(struct xfer_peer *p, const char *path, const char *mem, int fd, enum xfer_auth auth,
                        const char *content_type, struct xfer_answer *a, struct rs_err *err)
{
	char url[128];
	snprintf(url, sizeof(url), "%s%s", F.url, path);
	struct xfer_request r = {.method = XFER_PUT, .url = url, .what = "PUT test", .scope = "repository:r:push",
	                         .auth = auth, .content_type = content_type, .body = mem, .fd = fd,
	                         .body_size = BODY_SIZE, .sink = XFER_SINK_MEMORY, .max_bytes = 4096,
	                         .timeout_code = RS_UPSTREAM};
	return xfer_run(p, &r, a, err);
}

static int body_fd(void)
{
	char path[] = "/tmp/rs-xfer-XXXXXX";
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	unlink(path);
	ck_assert_int_eq(write(fd, BODY, BODY_SIZE), (ssize_t)BODY_SIZE);
	return fd;
}

START_TEST(sends_the_whole_fd_body_again_after_a_401)
{
	char want[DIGEST_STR_SIZE];
	digest_buffer(want, BODY, BODY_SIZE);
	struct rs_upstream_config cfg = cfg_for(F.url);
	struct xfer_peer *p = peer_new(&cfg, NULL);
	F.auth = AUTH_BASIC_ONCE;
	int fd = body_fd();
	struct xfer_answer a = {0};
	struct rs_err err = {0};
	ck_assert_msg(put(p, "/put", NULL, fd, XFER_AUTH_ANSWER, "application/octet-stream", &a, &err) == RS_OK,
	              "%s", err.msg);
	ck_assert_int_eq(a.status, 201);
	ck_assert_int_eq(F.puts, 2);
	ck_assert_str_eq(F.put_digests[0], want);
	ck_assert_str_eq(F.put_digests[1], want); /* read again from offset 0 */
	ck_assert_str_eq(F.content_type, "application/octet-stream");
	ck_assert_str_eq(F.authz, "Basic dXNlcjpwYXNz"); /* user:pass, after the Basic challenge */
	ck_assert_str_eq(a.digest, want);
	ck_assert_str_eq(a.digest_header, want);
	ck_assert_ptr_nonnull(a.body);
	ck_assert_uint_eq(a.body_len, 0);
	xfer_answer_dispose(&a);
	close(fd);
	xfer_peer_free(p);
}
END_TEST

START_TEST(sends_a_memory_body)
{
	char want[DIGEST_STR_SIZE];
	digest_buffer(want, BODY, BODY_SIZE);
	struct rs_upstream_config cfg = cfg_for(F.url);
	struct xfer_peer *p = peer_new(&cfg, NULL);
	struct xfer_answer a = {0};
	struct rs_err err = {0};
	ck_assert_msg(put(p, "/put", BODY, -1, XFER_AUTH_ANSWER, NULL, &a, &err) == RS_OK, "%s", err.msg);
	ck_assert_int_eq(a.status, 201);
	ck_assert_int_eq(F.puts, 1);
	ck_assert_str_eq(F.put_digests[0], want);
	ck_assert_str_eq(F.authz, ""); /* nobody asked for credentials */
	xfer_answer_dispose(&a);
	xfer_peer_free(p);
}
END_TEST

START_TEST(reports_a_failing_body_source)
{
	struct rs_upstream_config cfg = cfg_for(F.url);
	struct xfer_peer *p = peer_new(&cfg, NULL);
	int fd = body_fd();
	close(fd); /* pread fails with EBADF */
	struct xfer_answer a = {0};
	struct rs_err err = {0};
	ck_assert_int_eq(put(p, "/put", NULL, fd, XFER_AUTH_ANSWER, NULL, &a, &err), RS_IO);
	ck_assert_str_eq(err.msg, "PUT test: reading the body to send at byte 0 failed");
	xfer_answer_dispose(&a);
	xfer_peer_free(p);
}
END_TEST

START_TEST(refuses_a_content_type_with_control_characters)
{
	struct rs_upstream_config cfg = cfg_for(F.url);
	struct xfer_peer *p = peer_new(&cfg, NULL);
	struct xfer_answer a = {0};
	struct rs_err err = {0};
	ck_assert_int_eq(put(p, "/put", BODY, -1, XFER_AUTH_ANSWER, "text/plain\r\nX-Forged: 1", &a, &err),
	                 RS_BAD_INPUT);
	ck_assert_int_eq(F.requests, 0);
	xfer_answer_dispose(&a);
	xfer_peer_free(p);
}
END_TEST

/* The owner's words: which fault, and the facts it was given. */
static enum rs_code word_test(struct rs_err *err, enum rs_code code, const struct xfer_fault_info *f)
{
	switch (f->fault) {
	case XFER_FAULT_STALLED:
		return rs_err_set(err, code, "stalled %s", f->what);
	case XFER_FAULT_TRANSPORT:
		return rs_err_set(err, code, "transport %s %.*s (%s)", f->what, f->url_len, f->url, f->cfg->name);
	case XFER_FAULT_TOKEN:
		break;
	}
	return rs_err_set(err, code, "token %ld %s", f->status, f->scope);
}

START_TEST(lets_the_owner_word_transport_failures)
{
	/* a port nobody listens on: a free one, taken and given back */
	char url[64];
	struct MHD_Daemon *d = fakepeer_start("127.0.0.1", handler, NULL, done, url, sizeof(url));
	ck_assert_ptr_nonnull(d);
	MHD_stop_daemon(d);
	struct rs_upstream_config cfg = cfg_for(url);
	struct xfer_peer *p = peer_new(&cfg, word_test);
	char full[128], want[200];
	snprintf(full, sizeof(full), "%s/v2/?secret=1", url);
	struct xfer_request r = {.method = XFER_GET, .url = full, .what = "GET x", .sink = XFER_SINK_MEMORY,
	                         .max_bytes = 100, .timeout_code = RS_UPSTREAM};
	struct xfer_answer a = {0};
	struct rs_err err = {0};
	ck_assert_int_eq(xfer_run(p, &r, &a, &err), RS_UPSTREAM);
	snprintf(want, sizeof(want), "transport GET x %s/v2/ (fake)", url);
	ck_assert_str_eq(err.msg, want);
	xfer_answer_dispose(&a);
	xfer_peer_free(p);
}
END_TEST

START_TEST(probe_learns_the_realm_and_fetches_the_token_first)
{
	struct rs_upstream_config cfg = cfg_for(F.url);
	struct xfer_peer *p = peer_new(&cfg, word_test);
	F.auth = AUTH_BEARER;
	long status = 0;
	enum upstream_auth_scheme scheme = UPSTREAM_AUTH_NONE;
	struct rs_err err = {0};
	ck_assert_msg(xfer_probe(p, &status, &scheme, &err) == RS_OK, "%s", err.msg);
	ck_assert_int_eq(status, 401);
	ck_assert_int_eq(scheme, UPSTREAM_AUTH_BEARER);
	ck_assert_str_eq(F.authz, ""); /* the probe carries no credentials */
	int before = F.requests;
	struct xfer_answer a = {0};
	ck_assert_msg(put(p, "/put", BODY, -1, XFER_AUTH_PROBED, NULL, &a, &err) == RS_OK, "%s", err.msg);
	ck_assert_int_eq(a.status, 201);
	ck_assert_int_eq(F.requests - before, 2); /* the token, then the PUT: no 401 round trip */
	ck_assert_int_eq(F.token_hits, 1);
	ck_assert_str_eq(F.token_query_scope, "repository:r:push");
	ck_assert_str_eq(F.authz, "Bearer tok");
	xfer_answer_dispose(&a);
	/* the token endpoint refusing is worded by the owner and is RS_UPSTREAM in this mode */
	F.token_refuse = true;
	struct xfer_peer *q = peer_new(&cfg, word_test);
	ck_assert_int_eq(xfer_probe(q, &status, &scheme, &err), RS_OK);
	ck_assert_int_eq(put(q, "/put", BODY, -1, XFER_AUTH_PROBED, NULL, &a, &err), RS_UPSTREAM);
	ck_assert_str_eq(err.msg, "token 401 repository:r:push");
	xfer_answer_dispose(&a);
	xfer_peer_free(q);
	xfer_peer_free(p);
}
END_TEST

START_TEST(keeps_odd_digests_raw_and_redirects_unfollowed)
{
	struct rs_upstream_config cfg = cfg_for(F.url);
	struct xfer_peer *p = peer_new(&cfg, NULL);
	char url[128];
	snprintf(url, sizeof(url), "%s/odd-digest", F.url);
	struct xfer_request r = {.method = XFER_GET, .url = url, .what = "GET odd", .sink = XFER_SINK_MEMORY,
	                         .max_bytes = 100, .timeout_code = RS_UPSTREAM};
	struct xfer_answer a = {0};
	struct rs_err err = {0};
	ck_assert_msg(xfer_run(p, &r, &a, &err) == RS_OK, "%s", err.msg);
	ck_assert_int_eq(a.status, 200);
	ck_assert_str_eq(a.digest, "");
	ck_assert_str_eq(a.digest_header, "sha256:not-hex");
	ck_assert_str_eq(a.body, "x");
	snprintf(url, sizeof(url), "%s/moved", F.url);
	ck_assert_msg(xfer_run(p, &r, &a, &err) == RS_OK, "%s", err.msg);
	ck_assert_int_eq(a.status, 307);
	ck_assert_str_eq(a.location, "/v2/");
	r.follow = true;
	ck_assert_msg(xfer_run(p, &r, &a, &err) == RS_OK, "%s", err.msg);
	ck_assert_int_eq(a.status, 200);
	ck_assert_str_eq(a.body, "{}");
	xfer_answer_dispose(&a);
	xfer_peer_free(p);
}
END_TEST

Suite *xfer_suite(void)
{
	Suite *s = suite_create("xfer");
	TCase *tc = tcase_create("fake_peer");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, sends_the_whole_fd_body_again_after_a_401);
	tcase_add_test(tc, sends_a_memory_body);
	tcase_add_test(tc, reports_a_failing_body_source);
	tcase_add_test(tc, refuses_a_content_type_with_control_characters);
	tcase_add_test(tc, lets_the_owner_word_transport_failures);
	tcase_add_test(tc, probe_learns_the_realm_and_fetches_the_token_first);
	tcase_add_test(tc, keeps_odd_digests_raw_and_redirects_unfollowed);
	tcase_set_timeout(tc, 30);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(xfer_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
