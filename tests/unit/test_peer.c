/* test_peer: the peer streaming client and its authentication (proxy/upstream/peer.c). The
 * HMAC header: accepted for its method, path and time window only, refused with another
 * secret, a malformed value or none, never carrying the secret itself. The client against a
 * libmicrohttpd server on loopback (fakepeer.h) that checks the header the way api/blobs.c does: the body
 * streamed to the callbacks with its size, 401 and 404 mapped to their codes, a refused port
 * answered at once with a message that names the peer and not the secret. The endpoint itself
 * is exercised by tests/integration/test_cluster_pull.sh. */
#include "peer.h"

#include "fakepeer.h"
#include "fixture.h"

#include <arpa/inet.h>
#include <check.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SECRET "0123456789abcdef-peer-secret"
#define PATH "/_regslim/peer/blobs/sha256:aa"

START_TEST(auth_accepts_its_own_request)
{
	char v[PEER_AUTH_MAX];
	peer_auth_sign(v, SECRET, "GET", PATH, 1700000000);
	ck_assert(peer_auth_check(v, SECRET, "GET", PATH, 1700000000));
	ck_assert(peer_auth_check(v, SECRET, "GET", PATH, 1700000000 + PEER_AUTH_SKEW_S));
	ck_assert(peer_auth_check(v, SECRET, "GET", PATH, 1700000000 - PEER_AUTH_SKEW_S));
	ck_assert_ptr_null(strstr(v, SECRET));
	ck_assert_uint_eq(strlen(v), 10 + 1 + 64);
}
END_TEST

START_TEST(auth_refuses_everything_else)
{
	char v[PEER_AUTH_MAX];
	int64_t now = 1700000000;
	peer_auth_sign(v, SECRET, "GET", PATH, now);
	ck_assert(!peer_auth_check(v, "another-secret-of-16+", "GET", PATH, now));
	ck_assert(!peer_auth_check(v, SECRET, "HEAD", PATH, now));
	ck_assert(!peer_auth_check(v, SECRET, "GET", PATH "b", now));
	ck_assert(!peer_auth_check(v, SECRET, "GET", PATH, now + PEER_AUTH_SKEW_S + 1));
	ck_assert(!peer_auth_check(v, SECRET, "GET", PATH, now - PEER_AUTH_SKEW_S - 1));
	ck_assert(!peer_auth_check(NULL, SECRET, "GET", PATH, now));
	ck_assert(!peer_auth_check(v, NULL, "GET", PATH, now));
	ck_assert(!peer_auth_check(v, "", "GET", PATH, now));
	ck_assert(!peer_auth_check("", SECRET, "GET", PATH, now));
	ck_assert(!peer_auth_check(SECRET, SECRET, "GET", PATH, now)); /* the secret as a bearer */
	char bad[PEER_AUTH_MAX + 8];
	snprintf(bad, sizeof(bad), "%s", v);
	bad[strlen(bad) - 1] ^= 1; /* one hex digit off */
	ck_assert(!peer_auth_check(bad, SECRET, "GET", PATH, now));
	snprintf(bad, sizeof(bad), "%s", v);
	bad[strlen(bad) - 1] = '\0'; /* 63 hex digits */
	ck_assert(!peer_auth_check(bad, SECRET, "GET", PATH, now));
	snprintf(bad, sizeof(bad), "x%s", v);
	ck_assert(!peer_auth_check(bad, SECRET, "GET", PATH, now));
	/* another time in the header than the one signed */
	snprintf(bad, sizeof(bad), "%lld%s", (long long)now + 1, strchr(v, ' '));
	ck_assert(!peer_auth_check(bad, SECRET, "GET", PATH, now));
}
END_TEST

/* ---- the client against a loopback server ---------------------------------------------- */

static const char BODY[] = "the bytes of a blob, streamed from the replica that downloads it";

static enum MHD_Result serve(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                             const char *version, const char *upload, size_t *upload_len, void **state)
{
	(void)cls;
	(void)version;
	(void)upload;
	(void)upload_len;
	(void)state;
	const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, PEER_AUTH_HEADER);
	unsigned status = 200;
	const char *body = BODY;
	if (!peer_auth_check(auth, SECRET, method, url, (int64_t)time(NULL))) {
		status = 401;
		body = "{}";
	} else if (strstr(url, "missing")) {
		status = 404;
		body = "{}";
	}
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

struct sink {
	char got[256];
	size_t len;
	int64_t size;
	int begins;
};

static enum rs_code on_begin(void *arg, int64_t size, struct rs_err *err)
{
	(void)err;
	struct sink *s = arg;
	s->size = size;
	s->begins++;
	return RS_OK;
}

static enum rs_code on_data(void *arg, const void *buf, size_t len, struct rs_err *err)
{
	struct sink *s = arg;
	if (s->len + len > sizeof(s->got))
		return rs_err_set(err, RS_TOO_LARGE, "too much");
	memcpy(s->got + s->len, buf, len);
	s->len += len;
	return RS_OK;
}

static struct MHD_Daemon *server(char *base, size_t cap)
{
	struct MHD_Daemon *d = fakepeer_start("127.0.0.1", serve, NULL, NULL, base, cap);
	ck_assert_ptr_nonnull(d);
	return d;
}

START_TEST(client_streams_an_authenticated_body)
{
	char base[64];
	struct MHD_Daemon *d = server(base, sizeof(base));
	struct sink s = {.size = -2};
	bool began = false;
	struct rs_err err = {0};
	ck_assert_int_eq(peer_blob_get(base, SECRET, "sha256:aa", 2000, 5, on_begin, on_data, &s, &began, &err), RS_OK);
	ck_assert(began);
	ck_assert_int_eq(s.begins, 1);
	ck_assert_int_eq(s.size, (int64_t)strlen(BODY));
	ck_assert_uint_eq(s.len, strlen(BODY));
	ck_assert(memcmp(s.got, BODY, s.len) == 0);

	struct sink w = {.size = -2};
	rs_err_clear(&err);
	ck_assert_int_eq(peer_blob_get(base, "a-wrong-secret-of-16", "sha256:aa", 2000, 5, on_begin, on_data, &w,
	                               &began, &err),
	                 RS_UNAUTHORIZED);
	ck_assert(!began);
	ck_assert_int_eq(w.begins, 0);
	ck_assert_uint_eq(w.len, 0);
	ck_assert_ptr_null(strstr(err.msg, "a-wrong-secret"));

	rs_err_clear(&err);
	ck_assert_int_eq(peer_blob_get(base, SECRET, "sha256:missing", 2000, 5, on_begin, on_data, &w, &began, &err),
	                 RS_NOT_FOUND);
	ck_assert(!began);
	MHD_stop_daemon(d);
}
END_TEST

START_TEST(client_refused_port_fails_at_once)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	socklen_t n = sizeof(a);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &n), 0);
	close(fd); /* nothing listens there now */
	char base[64];
	snprintf(base, sizeof(base), "http://127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
	struct sink s = {.size = -2};
	bool began = true;
	struct rs_err err = {0};
	time_t t0 = time(NULL);
	ck_assert_int_eq(peer_blob_get(base, SECRET, "sha256:aa", 2000, 5, on_begin, on_data, &s, &began, &err),
	                 RS_UPSTREAM);
	ck_assert(time(NULL) - t0 <= 2);
	ck_assert(!began);
	ck_assert_ptr_nonnull(strstr(err.msg, base));
	ck_assert_ptr_null(strstr(err.msg, SECRET));
}
END_TEST

static Suite *peer_suite(void)
{
	Suite *s = suite_create("peer");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, auth_accepts_its_own_request);
	tcase_add_test(tc, auth_refuses_everything_else);
	tcase_add_test(tc, client_streams_an_authenticated_body);
	tcase_add_test(tc, client_refused_port_fails_at_once);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(peer_suite());
}
