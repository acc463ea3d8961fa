/* test_upstream: the upstream registry client (proxy/upstream.c) and its
 * auth helpers (proxy/upstream_auth.c).
 *
 * (a) Pure functions: WWW-Authenticate parsing (valid, odd and hostile
 *     headers, plus a seeded random-input run), token answers, redirect URL
 *     resolution, the same-origin rule and the token cache.
 * (b) The client against an in-process fake registry (libmicrohttpd on
 *     127.0.0.1, ephemeral port) with a second server on 127.0.0.2 acting as
 *     another host (blob storage): Accept lines, Basic and bearer auth with
 *     token reuse and refetch, redirects with and without credentials,
 *     truncated and stalled bodies, size caps, error bodies, callbacks that
 *     abort, many threads at once.
 * (c) The client against the real registries of /work/shared/tools
 *     (docker-registry 2.8: plain, htpasswd, token), skipped with a printed
 *     reason when docker-registry is not installed. */
#include "digest.h"
#include "fakepeer.h"
#include "lab.h"
#include "rs_limits.h"
#include "upstream.h"
#include "upstream_auth.h"

#include <check.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ---- (a) pure functions ----------------------------------------------- */

static struct upstream_auth_challenge parse_ok(const char *v)
{
	struct upstream_auth_challenge c;
	struct rs_err err = {0};
	enum rs_code rc = upstream_auth_parse_challenge(&c, v, &err);
	ck_assert_msg(rc == RS_OK, "parsing [%s]: %s", v, err.msg);
	return c;
}

static enum rs_code parse_code(const char *v, struct rs_err *err)
{
	struct upstream_auth_challenge c;
	enum rs_code rc = upstream_auth_parse_challenge(&c, v, err);
	upstream_auth_challenge_dispose(&c);
	return rc;
}

START_TEST(parses_docker_hub_challenge)
{
	struct upstream_auth_challenge c = parse_ok("Bearer realm=\"https://auth.docker.io/token\","
	                                            "service=\"registry.docker.io\","
	                                            "scope=\"repository:library/tiny:pull\"");
	ck_assert_int_eq(c.scheme, UPSTREAM_AUTH_BEARER);
	ck_assert_str_eq(c.realm, "https://auth.docker.io/token");
	ck_assert_str_eq(c.service, "registry.docker.io");
	ck_assert_str_eq(c.scope, "repository:library/tiny:pull");
	upstream_auth_challenge_dispose(&c);
	c = parse_ok("Bearer realm=\"http://127.0.0.1:5001/auth\",service=\"reg\"");
	ck_assert_int_eq(c.scheme, UPSTREAM_AUTH_BEARER);
	ck_assert_ptr_null(c.scope);
	upstream_auth_challenge_dispose(&c);
}
END_TEST

START_TEST(parses_case_insensitive_and_unquoted)
{
	struct upstream_auth_challenge c = parse_ok("bEaReR   REALM = \"http://x/t\" ,  Service=svc ,scope=repository:a/b:pull");
	ck_assert_int_eq(c.scheme, UPSTREAM_AUTH_BEARER);
	ck_assert_str_eq(c.realm, "http://x/t");
	ck_assert_str_eq(c.service, "svc");
	ck_assert_str_eq(c.scope, "repository:a/b:pull");
	upstream_auth_challenge_dispose(&c);
	c = parse_ok("BASIC realm=\"Registry Realm\"");
	ck_assert_int_eq(c.scheme, UPSTREAM_AUTH_BASIC);
	ck_assert_str_eq(c.realm, "Registry Realm");
	upstream_auth_challenge_dispose(&c);
}
END_TEST

START_TEST(parses_escapes_and_commas_inside_quotes)
{
	struct upstream_auth_challenge c =
		parse_ok("Bearer realm=\"http://x/t?a=1,b=2\",scope=\"repository:a/b:pull,push\","
		         "service=\"s \\\"q\\\" \\\\ z\",error=\"insufficient_scope\"");
	ck_assert_int_eq(c.scheme, UPSTREAM_AUTH_BEARER);
	ck_assert_str_eq(c.realm, "http://x/t?a=1,b=2");
	ck_assert_str_eq(c.scope, "repository:a/b:pull,push");
	ck_assert_str_eq(c.service, "s \"q\" \\ z");
	upstream_auth_challenge_dispose(&c);
}
END_TEST

START_TEST(prefers_bearer_among_several_challenges)
{
	struct upstream_auth_challenge c = parse_ok("Basic realm=\"r\", Bearer realm=\"http://x/t\",service=\"s\"");
	ck_assert_int_eq(c.scheme, UPSTREAM_AUTH_BEARER);
	ck_assert_str_eq(c.realm, "http://x/t");
	ck_assert_str_eq(c.service, "s");
	upstream_auth_challenge_dispose(&c);
	c = parse_ok("Negotiate abc==, Basic realm=\"x\"");
	ck_assert_int_eq(c.scheme, UPSTREAM_AUTH_BASIC);
	upstream_auth_challenge_dispose(&c);
	c = parse_ok("Negotiate");
	ck_assert_int_eq(c.scheme, UPSTREAM_AUTH_NONE);
	upstream_auth_challenge_dispose(&c);
	c = parse_ok("");
	ck_assert_int_eq(c.scheme, UPSTREAM_AUTH_NONE);
	upstream_auth_challenge_dispose(&c);
	/* a bearer challenge without realm cannot be answered */
	c = parse_ok("Bearer service=\"s\"");
	ck_assert_int_eq(c.scheme, UPSTREAM_AUTH_NONE);
	upstream_auth_challenge_dispose(&c);
	/* the first of a repeated parameter wins */
	c = parse_ok("Bearer realm=\"http://first/\",realm=\"http://second/\",,, service=\"b\"");
	ck_assert_str_eq(c.realm, "http://first/");
	ck_assert_str_eq(c.service, "b");
	upstream_auth_challenge_dispose(&c);
}
END_TEST

START_TEST(rejects_malformed_challenges)
{
	struct rs_err err = {0};
	ck_assert_int_eq(parse_code("Bearer realm=\"unterminated", &err), RS_BAD_INPUT);
	ck_assert_ptr_nonnull(strstr(err.msg, "unterminated"));
	ck_assert_int_eq(parse_code("Bearer realm=\"x\" junk", &err), RS_BAD_INPUT);
	ck_assert_int_eq(parse_code("=realm", &err), RS_BAD_INPUT);
	ck_assert_int_eq(parse_code("Bearer realm=\"a\x01b\"", &err), RS_BAD_INPUT);
	ck_assert_int_eq(parse_code("Bearer realm=\"a\\", &err), RS_BAD_INPUT);
	ck_assert_int_eq(parse_code("\"Bearer\"", &err), RS_BAD_INPUT);
	/* the message names the offset, never the value */
	ck_assert_int_eq(parse_code("Bearer realm=\"http://secret-host/\" service", &err), RS_BAD_INPUT);
	ck_assert_ptr_null(strstr(err.msg, "secret-host"));
	size_t n = RS_LIMIT_HEADER_MAX_BYTES + 100;
	char *big = malloc(n + 64);
	ck_assert_ptr_nonnull(big);
	memcpy(big, "Bearer realm=\"", 14);
	memset(big + 14, 'a', n);
	memcpy(big + 14 + n, "\"", 2);
	ck_assert_int_eq(parse_code(big, &err), RS_TOO_LARGE);
	free(big);
}
END_TEST

START_TEST(survives_random_challenges)
{
	static const char alphabet[] = "=, \t\\\"aBeRrlmBearerBasicrealm=scope,service\"\x01\xff/:";
	unsigned seed = 12345;
	char buf[96];
	for (int i = 0; i < 20000; i++) {
		size_t n = (size_t)(rand_r(&seed) % (sizeof(buf) - 1));
		for (size_t j = 0; j < n; j++)
			buf[j] = alphabet[rand_r(&seed) % (sizeof(alphabet) - 1)];
		buf[n] = '\0';
		if (i % 3 == 0 && n > 8)
			memcpy(buf, "Bearer r", 8);
		struct upstream_auth_challenge c;
		struct rs_err err = {0};
		enum rs_code rc = upstream_auth_parse_challenge(&c, buf, &err);
		ck_assert(rc == RS_OK || rc == RS_BAD_INPUT);
		if (rc == RS_OK && c.scheme == UPSTREAM_AUTH_BEARER)
			ck_assert_ptr_nonnull(c.realm);
		if (rc != RS_OK)
			ck_assert(err.msg[0] != '\0');
		upstream_auth_challenge_dispose(&c);
	}
}
END_TEST

static char *token_of(const char *json, long *expires, enum rs_code want)
{
	char *tok = NULL;
	struct rs_err err = {0};
	enum rs_code rc = upstream_auth_parse_token(&tok, expires, json, strlen(json), &err);
	ck_assert_msg(rc == want, "%s: got %d (%s)", json, rc, err.msg);
	return tok;
}

START_TEST(parses_token_answers)
{
	long exp = 0;
	char *t = token_of("{\"token\":\"abc.def\",\"expires_in\":300,\"issued_at\":\"2025-01-01T00:00:00Z\"}", &exp, RS_OK);
	ck_assert_str_eq(t, "abc.def");
	ck_assert_int_eq(exp, 300);
	free(t);
	t = token_of("{\"access_token\":\"x\\/y\"}", &exp, RS_OK);
	ck_assert_str_eq(t, "x/y");
	ck_assert_int_eq(exp, 60);
	free(t);
	t = token_of("{\"token\":\"\",\"access_token\":\"z\",\"expires_in\":-5}", &exp, RS_OK);
	ck_assert_str_eq(t, "z");
	ck_assert_int_eq(exp, 60);
	free(t);
	t = token_of("{\"token\":\"q\",\"expires_in\":\"300\"}", &exp, RS_OK);
	ck_assert_int_eq(exp, 60);
	free(t);
	ck_assert_ptr_null(token_of("{\"token\":\"a b\"}", &exp, RS_BAD_INPUT));
	ck_assert_ptr_null(token_of("{\"token\":\"a\\r\\nX-Evil: 1\"}", &exp, RS_BAD_INPUT));
	ck_assert_ptr_null(token_of("{\"token\":\"a\\u0000b\"}", &exp, RS_BAD_INPUT));
	ck_assert_ptr_null(token_of("not json", &exp, RS_BAD_INPUT));
	ck_assert_ptr_null(token_of("[\"token\"]", &exp, RS_BAD_INPUT));
	ck_assert_ptr_null(token_of("{\"token\":42}", &exp, RS_BAD_INPUT));
	char *tok = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(upstream_auth_parse_token(&tok, &exp, "{}", RS_LIMIT_TOKEN_MAX_BYTES + 1, &err), RS_TOO_LARGE);
}
END_TEST

static void resolves(const char *base, const char *loc, const char *want)
{
	char *out = NULL;
	struct rs_err err = {0};
	enum rs_code rc = upstream_auth_resolve_url(&out, base, loc, &err);
	ck_assert_msg(rc == RS_OK, "%s + %s: %s", base, loc, err.msg);
	ck_assert_str_eq(out, want);
	free(out);
}

static void refuses(const char *base, const char *loc)
{
	char *out = NULL;
	struct rs_err err = {0};
	ck_assert_msg(upstream_auth_resolve_url(&out, base, loc, &err) == RS_BAD_INPUT, "%s accepted", loc);
	ck_assert_ptr_null(out);
	ck_assert(err.msg[0]);
}

START_TEST(resolves_redirect_locations)
{
	const char *b = "http://h:1/v2/a/blobs/sha256:00";
	resolves(b, "/storage/y", "http://h:1/storage/y");
	resolves(b, "y?z=1", "http://h:1/v2/a/blobs/y?z=1");
	resolves(b, "../z", "http://h:1/v2/a/z");
	resolves(b, "//other:2/p", "http://other:2/p");
	resolves(b, "https://s3.example/b/c?X-Amz-Signature=abc", "https://s3.example/b/c?X-Amz-Signature=abc");
	resolves("https://reg.example/v2/x", "HTTP://Storage.example:8080/x", "http://Storage.example:8080/x");
	refuses(b, "file:///etc/passwd");
	refuses(b, "ftp://x/y");
	refuses(b, "gopher://x/");
	refuses(b, "javascript:alert(1)");
	refuses(b, "http://a b/");
	refuses(b, "");
	refuses(b, "/x\r\nX-Evil: 1");
	refuses("not a url", "/x");
}
END_TEST

START_TEST(compares_origins)
{
	ck_assert(upstream_auth_same_origin("http://a:80/x", "http://A/y"));
	ck_assert(upstream_auth_same_origin("https://a:443/", "https://a"));
	ck_assert(upstream_auth_same_origin("http://127.0.0.1:5000/v2/", "http://127.0.0.1:5000"));
	ck_assert(!upstream_auth_same_origin("http://a", "https://a"));
	ck_assert(!upstream_auth_same_origin("http://a:5000", "http://a:5001"));
	ck_assert(!upstream_auth_same_origin("http://127.0.0.1:5000", "http://127.0.0.2:5000"));
	ck_assert(!upstream_auth_same_origin("http://a.example.evil/", "http://a.example"));
	ck_assert(!upstream_auth_same_origin("garbage", "garbage"));
	ck_assert(!upstream_auth_same_origin("file:///x", "file:///x"));
	ck_assert(upstream_auth_is_http_url("https://auth.docker.io/token"));
	ck_assert(!upstream_auth_is_http_url("ftp://auth.docker.io/token"));
	ck_assert(!upstream_auth_is_http_url("/token"));
	ck_assert(!upstream_auth_is_http_url(NULL));
}
END_TEST

START_TEST(caches_tokens_per_scope_until_expiry)
{
	struct upstream_auth_tokens *t = upstream_auth_tokens_new();
	struct rs_err err = {0};
	ck_assert_ptr_nonnull(t);
	ck_assert_ptr_null(upstream_auth_tokens_get(t, "repository:a:pull", 1000));
	ck_assert_int_eq(upstream_auth_tokens_put(t, "repository:a:pull", "tokA", 300, 1000, &err), RS_OK);
	ck_assert_int_eq(upstream_auth_tokens_put(t, "repository:b:pull", "tokB", 5, 1000, &err), RS_OK);
	char *s = upstream_auth_tokens_get(t, "repository:a:pull", 1100);
	ck_assert_str_eq(s, "tokA");
	free(s);
	ck_assert_ptr_null(upstream_auth_tokens_get(t, "repository:c:pull", 1000));
	/* expired (with the renewal margin) */
	ck_assert_ptr_null(upstream_auth_tokens_get(t, "repository:a:pull", 1300));
	ck_assert_ptr_null(upstream_auth_tokens_get(t, "repository:b:pull", 1005));
	s = upstream_auth_tokens_get(t, "repository:b:pull", 1004);
	ck_assert_str_eq(s, "tokB");
	free(s);
	/* dropping a token another thread already replaced keeps the new one */
	ck_assert_int_eq(upstream_auth_tokens_put(t, "repository:a:pull", "tokA2", 300, 1000, &err), RS_OK);
	upstream_auth_tokens_drop(t, "repository:a:pull", "tokA");
	s = upstream_auth_tokens_get(t, "repository:a:pull", 1000);
	ck_assert_str_eq(s, "tokA2");
	free(s);
	upstream_auth_tokens_drop(t, "repository:a:pull", "tokA2");
	ck_assert_ptr_null(upstream_auth_tokens_get(t, "repository:a:pull", 1000));
	/* the table is bounded */
	char scope[64];
	for (int i = 0; i < RS_LIMIT_TOKEN_CACHE_ENTRIES + 50; i++) {
		snprintf(scope, sizeof(scope), "repository:r%d:pull", i);
		ck_assert_int_eq(upstream_auth_tokens_put(t, scope, "x", 100 + i, 2000, &err), RS_OK);
	}
	s = upstream_auth_tokens_get(t, scope, 2000);
	ck_assert_str_eq(s, "x");
	free(s);
	ck_assert_ptr_null(upstream_auth_tokens_get(t, "repository:r0:pull", 2000));
	upstream_auth_tokens_free(t);
	upstream_auth_tokens_free(NULL);
}
END_TEST

/* ---- (b) the client against a fake registry ---------------------------- */

#define BASIC_LAB "Basic bGFiOmxhYnBhc3M=" /* lab:labpass */
#define BLOB_SIZE (256u * 1024 + 17)
#define MANIFEST_BODY "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\"}"
#define D_OTHER "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D_SAME "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D_SHORT "sha256:3333333333333333333333333333333333333333333333333333333333333333"
#define D_STALL "sha256:4444444444444444444444444444444444444444444444444444444444444444"
#define D_LOOP "sha256:5555555555555555555555555555555555555555555555555555555555555555"
#define D_MISSING "sha256:6666666666666666666666666666666666666666666666666666666666666666"
#define D_BADLOC "sha256:7777777777777777777777777777777777777777777777777777777777777777"

enum fake_auth { FAKE_NONE, FAKE_BASIC, FAKE_BEARER };

static struct fake {
	struct MHD_Daemon *d1, *d2;
	char url1[64], url2[64];
	pthread_mutex_t lock;
	enum fake_auth auth;
	const char *realm_override; /* challenge realm instead of /token */
	bool token_refuse;          /* /token answers 401 */
	bool token_access;          /* /token answers access_token instead of token */
	int token_gen;              /* the valid token is tok-<gen> */
	int token_hits, unauthorized, v2_hits;
	char token_service[128], token_scope[256], token_account[64], token_authz[128];
	char accepts[16][128];
	int naccept;
	char ua[128];
	bool storage_hit, other_hit;
	char storage_authz[128], other_authz[128];
	volatile int stop;
	unsigned char *blob;
	char blob_digest[DIGEST_STR_SIZE];
	char manifest_digest[DIGEST_STR_SIZE];
} F;

static void copy_hdr(char *dst, size_t n, struct MHD_Connection *c, const char *name)
{
	const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
	snprintf(dst, n, "%s", v ? v : "");
}

static enum MHD_Result collect_accept(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	(void)cls;
	(void)kind;
	if (strcasecmp(key, "Accept") == 0 && F.naccept < 16)
		snprintf(F.accepts[F.naccept++], sizeof(F.accepts[0]), "%s", value ? value : "");
	return MHD_YES;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type, const void *body, size_t len,
                             const char *hname, const char *hvalue)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (type)
		MHD_add_response_header(r, "Content-Type", type);
	if (hname)
		MHD_add_response_header(r, hname, hvalue);
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result reply_str(struct MHD_Connection *c, unsigned status, const char *body)
{
	return reply(c, status, "application/json", body, strlen(body), NULL, NULL);
}

/* 1000 bytes declared, 500 sent, then the connection is cut. */
static ssize_t short_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)cls;
	if (pos >= 500)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	size_t n = 500 - pos < max ? 500 - pos : max;
	memset(buf, 'S', n);
	return (ssize_t)n;
}

/* 100 bytes, then nothing until the test ends (or 20 s). */
static ssize_t stall_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)cls;
	if (pos < 100) {
		size_t n = 100 - pos < max ? 100 - pos : max;
		memset(buf, 'T', n);
		return (ssize_t)n;
	}
	for (int i = 0; i < 200 && !F.stop; i++)
		usleep(100 * 1000);
	return MHD_CONTENT_READER_END_WITH_ERROR;
}

/* 2000 bytes, chunked (no Content-Length). */
static ssize_t chunked_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)cls;
	if (pos >= 2000)
		return MHD_CONTENT_READER_END_OF_STREAM;
	size_t n = 2000 - pos < max ? 2000 - pos : max;
	if (n > 300)
		n = 300;
	memset(buf, 'C', n);
	return (ssize_t)n;
}

static enum MHD_Result reply_reader(struct MHD_Connection *c, uint64_t size, MHD_ContentReaderCallback cb)
{
	struct MHD_Response *r = MHD_create_response_from_callback(size, 1024, cb, NULL, NULL);
	enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

/* The repository of /v2/<repo>/(manifests|blobs|tags)/..., into out. */
static void repo_of(char *out, size_t n, const char *url)
{
	const char *p = url + 4;
	const char *e = strstr(p, "/manifests/");
	if (!e)
		e = strstr(p, "/blobs/");
	if (!e)
		e = strstr(p, "/tags/");
	if (!e)
		e = p;
	snprintf(out, n, "%.*s", (int)(e - p), p);
}

static enum MHD_Result challenge(struct MHD_Connection *c, const char *url)
{
	char value[512], repo[128];
	F.unauthorized++;
	if (F.auth == FAKE_BASIC)
		return reply(c, 401, "application/json", "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}", 36,
		             "WWW-Authenticate", "Basic realm=\"fake registry\"");
	repo_of(repo, sizeof(repo), url);
	if (strcmp(url, "/v2/") == 0)
		snprintf(value, sizeof(value), "Bearer realm=\"%s\",service=\"fake \\\"svc\\\"\"",
		         F.realm_override ? F.realm_override : "");
	else
		snprintf(value, sizeof(value), "Bearer realm=\"%s\",service=\"fake \\\"svc\\\"\",scope=\"repository:%s:pull\"",
		         F.realm_override ? F.realm_override : "", repo);
	if (!F.realm_override) { /* realm is our own /token */
		char full[600];
		snprintf(full, sizeof(full), "Bearer realm=\"%s/token\"%s", F.url1, strchr(value, ','));
		return reply(c, 401, "application/json", "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}", 36,
		             "WWW-Authenticate", full);
	}
	return reply(c, 401, "application/json", "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}", 36, "WWW-Authenticate",
	             value);
}

static enum MHD_Result handle_token(struct MHD_Connection *c)
{
	F.token_hits++;
	const char *v;
	v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "service");
	snprintf(F.token_service, sizeof(F.token_service), "%s", v ? v : "");
	v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "scope");
	snprintf(F.token_scope, sizeof(F.token_scope), "%s", v ? v : "");
	v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "account");
	snprintf(F.token_account, sizeof(F.token_account), "%s", v ? v : "");
	copy_hdr(F.token_authz, sizeof(F.token_authz), c, "Authorization");
	if (F.token_refuse)
		return reply_str(c, 401, "{\"details\":\"bad credentials\"}");
	char body[128];
	snprintf(body, sizeof(body), "{\"%s\":\"tok-%d\",\"expires_in\":300}", F.token_access ? "access_token" : "token",
	         F.token_gen);
	return reply_str(c, 200, body);
}

static enum MHD_Result handle_v2(struct MHD_Connection *c, const char *url)
{
	F.v2_hits++;
	copy_hdr(F.ua, sizeof(F.ua), c, "User-Agent");
	const char *authz = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	if (F.auth == FAKE_BASIC && (!authz || strcmp(authz, BASIC_LAB) != 0))
		return challenge(c, url);
	if (F.auth == FAKE_BEARER) {
		char want[64];
		snprintf(want, sizeof(want), "Bearer tok-%d", F.token_gen);
		if (!authz || strcmp(authz, want) != 0)
			return challenge(c, url);
	}
	if (strcmp(url, "/v2/") == 0)
		return reply_str(c, 200, "{}");
	const char *m = strstr(url, "/manifests/");
	if (m) {
		const char *ref = m + 11;
		F.naccept = 0;
		MHD_get_connection_values(c, MHD_HEADER_KIND, collect_accept, NULL);
		if (strcmp(ref, "big") == 0) {
			static char big[2000];
			memset(big, 'B', sizeof(big));
			return reply(c, 200, "application/vnd.oci.image.manifest.v1+json", big, sizeof(big), NULL, NULL);
		}
		if (strcmp(ref, "bigchunked") == 0)
			return reply_reader(c, MHD_SIZE_UNKNOWN, chunked_reader);
		if (strcmp(ref, "missing") == 0)
			return reply_str(c, 404, "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"manifest unknown\"}]}");
		if (strcmp(ref, "hugeerror") == 0) {
			size_t n = RS_LIMIT_ERROR_BODY_MAX_BYTES * 2;
			char *b = malloc(n);
			memset(b, 'E', n);
			enum MHD_Result r = reply(c, 500, "text/plain", b, n, NULL, NULL);
			free(b);
			return r;
		}
		const char *dig = strcmp(ref, "baddigest") == 0 ? "sha256:XYZ" : F.manifest_digest;
		return reply(c, 200, "application/vnd.docker.distribution.manifest.v2+json", MANIFEST_BODY,
		             strlen(MANIFEST_BODY), "Docker-Content-Digest", dig);
	}
	const char *b = strstr(url, "/blobs/");
	if (b) {
		const char *d = b + 7;
		char loc[256];
		if (strcmp(d, F.blob_digest) == 0)
			return reply(c, 200, "application/octet-stream", F.blob, BLOB_SIZE, "Docker-Content-Digest",
			             F.blob_digest);
		if (strcmp(d, D_OTHER) == 0) {
			snprintf(loc, sizeof(loc), "%s/storage/blob?X-Signature=s3cr3t", F.url2);
			return reply(c, 307, NULL, "", 0, "Location", loc);
		}
		if (strcmp(d, D_SAME) == 0)
			return reply(c, 302, NULL, "redirecting", 11, "Location", "../../../../storage/blob");
		if (strcmp(d, D_LOOP) == 0)
			return reply(c, 302, NULL, "", 0, "Location", url);
		if (strcmp(d, D_BADLOC) == 0)
			return reply(c, 302, NULL, "", 0, "Location", "file:///etc/passwd");
		if (strcmp(d, D_SHORT) == 0)
			return reply_reader(c, 1000, short_reader);
		if (strcmp(d, D_STALL) == 0)
			return reply_reader(c, 1000, stall_reader);
		return reply_str(c, 404, "{\"errors\":[{\"code\":\"BLOB_UNKNOWN\",\"message\":\"blob unknown to registry\"}]}");
	}
	if (strstr(url, "/tags/list")) {
		const char *n = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "n");
		const char *body = n ? "{\"name\":\"lib/app\",\"tags\":[\"a\"]}" : "{\"name\":\"lib/app\",\"tags\":[\"a\",\"b\"]}";
		return reply(c, 200, "application/json", body, strlen(body), "Link",
		             "</v2/lib/app/tags/list?last=a&n=1>; rel=\"next\"");
	}
	return reply_str(c, 404, "{\"errors\":[{\"code\":\"NAME_UNKNOWN\"}]}");
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **state)
{
	(void)method;
	(void)version;
	(void)upload;
	(void)upload_size;
	(void)state;
	int server = *(int *)cls;
	pthread_mutex_lock(&F.lock);
	enum MHD_Result r;
	if (server == 2 || strncmp(url, "/storage/", 9) == 0) {
		if (server == 2) {
			F.other_hit = true;
			copy_hdr(F.other_authz, sizeof(F.other_authz), c, "Authorization");
		} else {
			F.storage_hit = true;
			copy_hdr(F.storage_authz, sizeof(F.storage_authz), c, "Authorization");
		}
		r = reply(c, 200, "application/octet-stream", F.blob, BLOB_SIZE, NULL, NULL);
	} else if (strcmp(url, "/token") == 0) {
		r = handle_token(c);
	} else if (strncmp(url, "/v2/", 4) == 0) {
		r = handle_v2(c, url);
	} else {
		r = reply_str(c, 404, "{}");
	}
	pthread_mutex_unlock(&F.lock);
	return r;
}

static int server_ids[2] = {1, 2};

static struct MHD_Daemon *start_on(const char *ip, int *id, char *url, size_t n)
{
	struct MHD_Daemon *d = fakepeer_start(ip, handler, id, NULL, url, n);
	ck_assert_msg(d != NULL, "cannot start a test server on %s", ip);
	return d;
}

static void fake_setup(void)
{
	memset(&F, 0, sizeof(F));
	pthread_mutex_init(&F.lock, NULL);
	F.token_gen = 1;
	F.blob = malloc(BLOB_SIZE);
	ck_assert_ptr_nonnull(F.blob);
	unsigned seed = 42;
	for (size_t i = 0; i < BLOB_SIZE; i++)
		F.blob[i] = (unsigned char)(rand_r(&seed) >> 7);
	digest_buffer(F.blob_digest, F.blob, BLOB_SIZE);
	digest_buffer(F.manifest_digest, MANIFEST_BODY, strlen(MANIFEST_BODY));
	struct rs_err err = {0};
	ck_assert_int_eq(upstream_global_init(&err), RS_OK);
	F.d1 = start_on("127.0.0.1", &server_ids[0], F.url1, sizeof(F.url1));
	F.d2 = start_on("127.0.0.2", &server_ids[1], F.url2, sizeof(F.url2));
}

static void fake_teardown(void)
{
	F.stop = 1;
	if (F.d1)
		MHD_stop_daemon(F.d1);
	if (F.d2)
		MHD_stop_daemon(F.d2);
	upstream_global_cleanup();
	free(F.blob);
	pthread_mutex_destroy(&F.lock);
}

static struct rs_upstream_config fake_cfg(const char *user, const char *pass)
{
	struct rs_upstream_config cfg = {
		.name = "fake", .url = F.url1, .username = (char *)user, .password = (char *)pass,
		.tag_ttl_s = 300, .timeout_s = 1, .tls_verify = true,
	};
	return cfg;
}

static struct upstream *fake_upstream(const struct rs_upstream_config *cfg)
{
	struct upstream *u = NULL;
	struct rs_err err = {0};
	ck_assert_msg(upstream_new(&u, cfg, &err) == RS_OK, "%s", err.msg);
	return u;
}

/* A blob sink that hashes what it receives. */
struct sink {
	struct digest_ctx *d;
	int begins;
	int64_t size;
	enum rs_code fail_with; /* returned from on_data once this many bytes arrived */
	uint64_t fail_after;
};

static enum rs_code sink_begin(void *arg, int64_t size, struct rs_err *err)
{
	(void)err;
	struct sink *s = arg;
	s->begins++;
	s->size = size;
	return RS_OK;
}

static enum rs_code sink_data(void *arg, const void *buf, size_t len, struct rs_err *err)
{
	struct sink *s = arg;
	digest_update(s->d, buf, len);
	if (s->fail_with && digest_count(s->d) >= s->fail_after)
		return rs_err_set(err, s->fail_with, "disk full after %llu bytes", (unsigned long long)s->fail_after);
	return RS_OK;
}

static enum rs_code get_blob(struct upstream *u, const char *repo, const char *digest, struct sink *s,
                             struct rs_err *err)
{
	if (!s->d)
		s->d = digest_new();
	ck_assert_ptr_nonnull(s->d);
	return upstream_blob(u, repo, digest, sink_begin, sink_data, s, err);
}

static void expect_blob(struct upstream *u, const char *repo, const char *digest)
{
	struct sink s = {0};
	struct rs_err err = {0};
	enum rs_code rc = get_blob(u, repo, digest, &s, &err);
	ck_assert_msg(rc == RS_OK, "blob %s: %s", digest, err.msg);
	ck_assert_int_eq(s.begins, 1);
	ck_assert_int_eq(s.size, BLOB_SIZE);
	char got[DIGEST_STR_SIZE];
	digest_final(s.d, got);
	ck_assert_str_eq(got, F.blob_digest);
	ck_assert_uint_eq(digest_count(s.d), BLOB_SIZE);
	digest_free(s.d);
}

static const char *const ACCEPT6[] = {
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.v1+prettyjws",
	"application/vnd.docker.distribution.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.index.v1+json",
};

static void expect_manifest(struct upstream *u, const char *repo)
{
	struct upstream_reply r;
	struct rs_err err = {0};
	ck_assert_msg(upstream_manifest(u, repo, "latest", ACCEPT6, 6, false, 4096, &r, &err) == RS_OK, "%s", err.msg);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, MANIFEST_BODY);
	upstream_reply_dispose(&r);
}

START_TEST(forwards_each_accept_line_in_order)
{
	struct rs_upstream_config cfg = fake_cfg(NULL, NULL);
	struct upstream *u = fake_upstream(&cfg);
	struct upstream_reply r;
	struct rs_err err = {0};
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "latest", ACCEPT6, 6, false, 4096, &r, &err), RS_OK);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.content_type, "application/vnd.docker.distribution.manifest.v2+json");
	ck_assert_str_eq(r.digest, F.manifest_digest);
	ck_assert_int_eq(r.content_length, (int64_t)strlen(MANIFEST_BODY));
	ck_assert_uint_eq(r.body_len, strlen(MANIFEST_BODY));
	ck_assert_str_eq(r.body, MANIFEST_BODY);
	upstream_reply_dispose(&r);
	ck_assert_int_eq(F.naccept, 6);
	for (int i = 0; i < 6; i++)
		ck_assert_str_eq(F.accepts[i], ACCEPT6[i]);
	ck_assert_msg(strncmp(F.ua, "regslim/", 8) == 0, "User-Agent %s", F.ua);
	/* reversed order arrives reversed; none sends no Accept at all */
	const char *rev[2] = {ACCEPT6[1], ACCEPT6[0]};
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "latest", rev, 2, true, 4096, &r, &err), RS_OK);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_null(r.body);
	ck_assert_str_eq(r.digest, F.manifest_digest);
	ck_assert_int_eq(r.content_length, (int64_t)strlen(MANIFEST_BODY));
	upstream_reply_dispose(&r);
	ck_assert_int_eq(F.naccept, 2);
	ck_assert_str_eq(F.accepts[0], ACCEPT6[1]);
	ck_assert_str_eq(F.accepts[1], ACCEPT6[0]);
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "latest", NULL, 0, false, 4096, &r, &err), RS_OK);
	upstream_reply_dispose(&r);
	ck_assert_int_eq(F.naccept, 0);
	/* a header injection attempt never leaves */
	const char *evil[1] = {"text/plain\r\nX-Evil: 1"};
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "latest", evil, 1, false, 4096, &r, &err), RS_BAD_INPUT);
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "latest?x", NULL, 0, false, 4096, &r, &err), RS_BAD_INPUT);
	ck_assert_int_eq(upstream_manifest(u, "lib app", "latest", NULL, 0, false, 4096, &r, &err), RS_BAD_INPUT);
	upstream_free(u);
}
END_TEST

START_TEST(drops_invalid_content_digest)
{
	struct rs_upstream_config cfg = fake_cfg(NULL, NULL);
	struct upstream *u = fake_upstream(&cfg);
	struct upstream_reply r;
	struct rs_err err = {0};
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "baddigest", ACCEPT6, 6, false, 4096, &r, &err), RS_OK);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.digest, "");
	upstream_reply_dispose(&r);
	upstream_free(u);
}
END_TEST

START_TEST(enforces_manifest_max_bytes)
{
	struct rs_upstream_config cfg = fake_cfg(NULL, NULL);
	struct upstream *u = fake_upstream(&cfg);
	struct upstream_reply r;
	struct rs_err err = {0};
	/* Content-Length says too much */
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "big", NULL, 0, false, 1999, &r, &err), RS_TOO_LARGE);
	ck_assert_msg(strstr(err.msg, "2000 bytes, limit is 1999"), "%s", err.msg);
	ck_assert_ptr_null(r.body);
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "big", NULL, 0, false, 2000, &r, &err), RS_OK);
	ck_assert_uint_eq(r.body_len, 2000);
	upstream_reply_dispose(&r);
	/* no Content-Length: caught while reading */
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "bigchunked", NULL, 0, false, 1000, &r, &err), RS_TOO_LARGE);
	ck_assert_msg(strstr(err.msg, "limit is 1000"), "%s", err.msg);
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "bigchunked", NULL, 0, false, 2000, &r, &err), RS_OK);
	ck_assert_uint_eq(r.body_len, 2000);
	ck_assert_int_eq(r.content_length, -1);
	upstream_reply_dispose(&r);
	/* tags share the cap logic */
	ck_assert_int_eq(upstream_tags(u, "lib/app", NULL, 10, &r, &err), RS_TOO_LARGE);
	upstream_free(u);
}
END_TEST

START_TEST(captures_error_bodies)
{
	struct rs_upstream_config cfg = fake_cfg(NULL, NULL);
	struct upstream *u = fake_upstream(&cfg);
	struct upstream_reply r;
	struct rs_err err = {0};
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "missing", ACCEPT6, 6, false, 4096, &r, &err), RS_OK);
	ck_assert_int_eq(r.status, 404);
	ck_assert_ptr_nonnull(strstr(r.body, "MANIFEST_UNKNOWN"));
	ck_assert_str_eq(r.content_type, "application/json");
	upstream_reply_dispose(&r);
	/* an error body bigger than the cap is cut there, not refused */
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "hugeerror", NULL, 0, false, 4096, &r, &err), RS_OK);
	ck_assert_int_eq(r.status, 500);
	ck_assert_uint_eq(r.body_len, RS_LIMIT_ERROR_BODY_MAX_BYTES);
	upstream_reply_dispose(&r);
	/* blobs: 404 is RS_NOT_FOUND naming the registry's code */
	struct sink s = {0};
	ck_assert_int_eq(get_blob(u, "lib/app", D_MISSING, &s, &err), RS_NOT_FOUND);
	ck_assert_msg(strstr(err.msg, "404") && strstr(err.msg, "BLOB_UNKNOWN"), "%s", err.msg);
	ck_assert_int_eq(s.begins, 0);
	ck_assert_uint_eq(digest_count(s.d), 0);
	digest_free(s.d);
	ck_assert_int_eq(upstream_blob_head(u, "lib/app", D_MISSING, &r, &err), RS_OK);
	ck_assert_int_eq(r.status, 404);
	upstream_reply_dispose(&r);
	ck_assert_int_eq(upstream_blob_head(u, "lib/app", F.blob_digest, &r, &err), RS_OK);
	ck_assert_int_eq(r.status, 200);
	ck_assert_int_eq(r.content_length, BLOB_SIZE);
	ck_assert_str_eq(r.digest, F.blob_digest);
	upstream_reply_dispose(&r);
	/* tags pass through with their Link header and query */
	ck_assert_int_eq(upstream_tags(u, "lib/app", "n=1", 4096, &r, &err), RS_OK);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, "{\"name\":\"lib/app\",\"tags\":[\"a\"]}");
	ck_assert_ptr_nonnull(r.link);
	ck_assert_ptr_nonnull(strstr(r.link, "rel=\"next\""));
	upstream_reply_dispose(&r);
	upstream_free(u);
}
END_TEST

START_TEST(streams_blobs_with_digest_intact)
{
	struct rs_upstream_config cfg = fake_cfg(NULL, NULL);
	struct upstream *u = fake_upstream(&cfg);
	expect_blob(u, "lib/app", F.blob_digest);
	expect_blob(u, "lib/app", F.blob_digest);
	struct rs_err err = {0};
	ck_assert_int_eq(upstream_ping(u, &err), RS_OK);
	upstream_free(u);
}
END_TEST

START_TEST(aborts_when_the_receiver_fails)
{
	struct rs_upstream_config cfg = fake_cfg(NULL, NULL);
	struct upstream *u = fake_upstream(&cfg);
	struct sink s = {.fail_with = RS_IO, .fail_after = 1};
	struct rs_err err = {0};
	ck_assert_int_eq(get_blob(u, "lib/app", F.blob_digest, &s, &err), RS_IO);
	ck_assert_str_eq(err.msg, "disk full after 1 bytes");
	ck_assert_uint_lt(digest_count(s.d), BLOB_SIZE);
	digest_free(s.d);
	/* the pooled handle still works afterwards */
	expect_blob(u, "lib/app", F.blob_digest);
	upstream_free(u);
}
END_TEST

START_TEST(rejects_truncated_blob)
{
	struct rs_upstream_config cfg = fake_cfg(NULL, NULL);
	struct upstream *u = fake_upstream(&cfg);
	struct sink s = {0};
	struct rs_err err = {0};
	ck_assert_int_eq(get_blob(u, "lib/app", D_SHORT, &s, &err), RS_UPSTREAM);
	ck_assert_msg(strstr(err.msg, "upstream sent 500 of 1000 bytes"), "%s", err.msg);
	ck_assert_int_eq(s.begins, 1);
	ck_assert_int_eq(s.size, 1000);
	digest_free(s.d);
	upstream_free(u);
}
END_TEST

START_TEST(times_out_stalled_blob)
{
	struct rs_upstream_config cfg = fake_cfg(NULL, NULL);
	struct upstream *u = fake_upstream(&cfg);
	struct sink s = {0};
	struct rs_err err = {0};
	ck_assert_int_eq(get_blob(u, "lib/app", D_STALL, &s, &err), RS_TIMEOUT);
	ck_assert_msg(strstr(err.msg, "timeout_s"), "%s", err.msg);
	ck_assert_uint_eq(digest_count(s.d), 100);
	digest_free(s.d);
	upstream_free(u);
}
END_TEST

START_TEST(reports_unreachable_upstream)
{
	/* a port of our range where nothing listens */
	struct rs_upstream_config cfg = fake_cfg(NULL, NULL);
	cfg.url = "http://127.0.0.1:19198";
	struct upstream *u = fake_upstream(&cfg);
	struct upstream_reply r;
	struct rs_err err = {0};
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "latest", NULL, 0, false, 4096, &r, &err), RS_UPSTREAM);
	ck_assert_msg(strstr(err.msg, "127.0.0.1:19198"), "%s", err.msg);
	ck_assert_int_eq(upstream_ping(u, &err), RS_UPSTREAM);
	struct sink s = {0};
	ck_assert_int_eq(get_blob(u, "lib/app", F.blob_digest, &s, &err), RS_UPSTREAM);
	ck_assert_int_eq(s.begins, 0);
	digest_free(s.d);
	upstream_free(u);
	/* TLS to a plain HTTP server is a transport failure */
	char https[80];
	snprintf(https, sizeof(https), "https://%.60s", F.url1 + 7);
	cfg.url = https;
	u = fake_upstream(&cfg);
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "latest", NULL, 0, false, 4096, &r, &err), RS_UPSTREAM);
	upstream_free(u);
	/* bad URLs are refused at creation */
	cfg.url = "ftp://127.0.0.1/";
	ck_assert_int_eq(upstream_new(&u, &cfg, &err), RS_CONFIG);
	ck_assert_ptr_null(u);
}
END_TEST

START_TEST(sends_basic_credentials_when_challenged)
{
	F.auth = FAKE_BASIC;
	struct rs_upstream_config cfg = fake_cfg("lab", "labpass");
	struct upstream *u = fake_upstream(&cfg);
	expect_manifest(u, "lib/app");
	ck_assert_int_eq(F.unauthorized, 1);
	/* later requests carry the credentials up front */
	expect_manifest(u, "lib/app");
	expect_blob(u, "lib/app", F.blob_digest);
	struct rs_err err = {0};
	ck_assert_int_eq(upstream_ping(u, &err), RS_OK);
	ck_assert_int_eq(F.unauthorized, 1);
	upstream_free(u);
	/* without credentials the 401 is the answer */
	cfg = fake_cfg(NULL, NULL);
	u = fake_upstream(&cfg);
	struct upstream_reply r;
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "latest", NULL, 0, false, 4096, &r, &err), RS_OK);
	ck_assert_int_eq(r.status, 401);
	ck_assert_ptr_nonnull(strstr(r.body, "UNAUTHORIZED"));
	upstream_reply_dispose(&r);
	struct sink s = {0};
	ck_assert_int_eq(get_blob(u, "lib/app", F.blob_digest, &s, &err), RS_UNAUTHORIZED);
	digest_free(s.d);
	ck_assert_int_eq(upstream_ping(u, &err), RS_UNAUTHORIZED);
	upstream_free(u);
	/* wrong credentials: one retry, then the 401 */
	cfg = fake_cfg("lab", "wrong");
	u = fake_upstream(&cfg);
	int before = F.unauthorized;
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "latest", NULL, 0, false, 4096, &r, &err), RS_OK);
	ck_assert_int_eq(r.status, 401);
	ck_assert_int_eq(F.unauthorized, before + 2);
	upstream_reply_dispose(&r);
	upstream_free(u);
}
END_TEST

START_TEST(reuses_bearer_token_and_refetches_after_401)
{
	F.auth = FAKE_BEARER;
	struct rs_upstream_config cfg = fake_cfg("lab", "labpass");
	struct upstream *u = fake_upstream(&cfg);
	expect_manifest(u, "lib/app");
	ck_assert_int_eq(F.token_hits, 1);
	ck_assert_int_eq(F.unauthorized, 1);
	ck_assert_str_eq(F.token_service, "fake \"svc\"");
	ck_assert_str_eq(F.token_scope, "repository:lib/app:pull");
	ck_assert_str_eq(F.token_account, "lab");
	ck_assert_str_eq(F.token_authz, BASIC_LAB);
	/* same scope: the cached token goes out up front */
	expect_blob(u, "lib/app", F.blob_digest);
	expect_manifest(u, "lib/app");
	ck_assert_int_eq(F.token_hits, 1);
	ck_assert_int_eq(F.unauthorized, 1);
	/* the registry stops accepting it: dropped, fetched again, once */
	F.token_gen = 2;
	expect_manifest(u, "lib/app");
	ck_assert_int_eq(F.token_hits, 2);
	ck_assert_int_eq(F.unauthorized, 2);
	expect_manifest(u, "lib/app");
	ck_assert_int_eq(F.token_hits, 2);
	/* another repository: token fetched from the known realm before any 401 */
	F.token_access = true;
	expect_manifest(u, "lib/other");
	ck_assert_int_eq(F.token_hits, 3);
	ck_assert_str_eq(F.token_scope, "repository:lib/other:pull");
	ck_assert_int_eq(F.unauthorized, 2);
	upstream_free(u);
}
END_TEST

START_TEST(fetches_anonymous_tokens_without_credentials)
{
	F.auth = FAKE_BEARER;
	struct rs_upstream_config cfg = fake_cfg(NULL, NULL);
	struct upstream *u = fake_upstream(&cfg);
	struct rs_err err = {0};
	ck_assert_int_eq(upstream_ping(u, &err), RS_OK);
	ck_assert_int_eq(F.token_hits, 1);
	ck_assert_str_eq(F.token_scope, "");
	ck_assert_str_eq(F.token_authz, "");
	ck_assert_str_eq(F.token_account, "");
	ck_assert_int_eq(upstream_ping(u, &err), RS_OK);
	ck_assert_int_eq(F.token_hits, 1);
	expect_blob(u, "lib/app", F.blob_digest);
	ck_assert_int_eq(F.token_hits, 2);
	ck_assert_str_eq(F.token_scope, "repository:lib/app:pull");
	upstream_free(u);
}
END_TEST

START_TEST(reports_refused_tokens)
{
	F.auth = FAKE_BEARER;
	F.token_refuse = true;
	struct rs_upstream_config cfg = fake_cfg("lab", "wrong");
	struct upstream *u = fake_upstream(&cfg);
	struct upstream_reply r;
	struct rs_err err = {0};
	/* memory requests: the upstream's 401 is the answer */
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "latest", ACCEPT6, 6, false, 4096, &r, &err), RS_OK);
	ck_assert_int_eq(r.status, 401);
	upstream_reply_dispose(&r);
	/* blobs: RS_UNAUTHORIZED naming the token endpoint, never the password */
	struct sink s = {0};
	ck_assert_int_eq(get_blob(u, "lib/app", F.blob_digest, &s, &err), RS_UNAUTHORIZED);
	ck_assert_msg(strstr(err.msg, "/token") && strstr(err.msg, "401"), "%s", err.msg);
	ck_assert_ptr_null(strstr(err.msg, "wrong"));
	ck_assert_int_eq(s.begins, 0);
	digest_free(s.d);
	upstream_free(u);
}
END_TEST

START_TEST(refuses_non_http_realm)
{
	F.auth = FAKE_BEARER;
	F.realm_override = "file:///etc/passwd";
	struct rs_upstream_config cfg = fake_cfg("lab", "labpass");
	struct upstream *u = fake_upstream(&cfg);
	struct upstream_reply r;
	struct rs_err err = {0};
	ck_assert_int_eq(upstream_manifest(u, "lib/app", "latest", NULL, 0, false, 4096, &r, &err), RS_UPSTREAM);
	ck_assert_msg(strstr(err.msg, "not an http(s) URL"), "%s", err.msg);
	ck_assert_int_eq(F.token_hits, 0);
	upstream_free(u);
}
END_TEST

START_TEST(keeps_credentials_off_other_hosts)
{
	F.auth = FAKE_BASIC;
	struct rs_upstream_config cfg = fake_cfg("lab", "labpass");
	struct upstream *u = fake_upstream(&cfg);
	expect_blob(u, "lib/app", D_OTHER);
	ck_assert(F.other_hit);
	ck_assert_str_eq(F.other_authz, "");
	expect_blob(u, "lib/app", D_SAME);
	ck_assert(F.storage_hit);
	ck_assert_str_eq(F.storage_authz, BASIC_LAB);
	upstream_free(u);
}
END_TEST

START_TEST(keeps_tokens_off_other_hosts)
{
	F.auth = FAKE_BEARER;
	struct rs_upstream_config cfg = fake_cfg(NULL, NULL);
	struct upstream *u = fake_upstream(&cfg);
	expect_blob(u, "lib/app", D_OTHER);
	ck_assert(F.other_hit);
	ck_assert_str_eq(F.other_authz, "");
	expect_blob(u, "lib/app", D_SAME);
	ck_assert_str_eq(F.storage_authz, "Bearer tok-1");
	ck_assert_int_eq(F.token_hits, 1);
	upstream_free(u);
}
END_TEST

START_TEST(bounds_redirects)
{
	struct rs_upstream_config cfg = fake_cfg(NULL, NULL);
	struct upstream *u = fake_upstream(&cfg);
	struct sink s = {0};
	struct rs_err err = {0};
	ck_assert_int_eq(get_blob(u, "lib/app", D_LOOP, &s, &err), RS_UPSTREAM);
	ck_assert_msg(strstr(err.msg, "more than 5 redirects"), "%s", err.msg);
	/* a redirect regslim will not follow is the upstream's fault: 502 for the client (issue 11) */
	ck_assert_int_eq(get_blob(u, "lib/app", D_BADLOC, &s, &err), RS_UPSTREAM);
	ck_assert_int_eq(s.begins, 0);
	digest_free(s.d);
	upstream_free(u);
}
END_TEST

struct worker {
	struct upstream *u;
	int ok;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < 12; i++) {
		struct sink s = {.d = digest_new()};
		struct rs_err err = {0};
		char got[DIGEST_STR_SIZE] = "";
		const char *d = i % 3 == 2 ? D_OTHER : F.blob_digest;
		if (s.d && upstream_blob(w->u, i % 2 ? "lib/app" : "lib/other", d, sink_begin, sink_data, &s, &err) == RS_OK) {
			digest_final(s.d, got);
			if (strcmp(got, F.blob_digest) == 0 && s.begins == 1)
				w->ok++;
		}
		digest_free(s.d);
	}
	return NULL;
}

START_TEST(serves_many_threads_at_once)
{
	F.auth = FAKE_BEARER;
	struct rs_upstream_config cfg = fake_cfg("lab", "labpass");
	struct upstream *u = fake_upstream(&cfg);
	struct worker w[8];
	pthread_t t[8];
	for (int i = 0; i < 8; i++) {
		w[i] = (struct worker){.u = u};
		ck_assert_int_eq(pthread_create(&t[i], NULL, worker_run, &w[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		ck_assert_int_eq(w[i].ok, 12);
	}
	upstream_free(u);
}
END_TEST

/* ---- (c) the real registries ------------------------------------------- */

/* Fetch library/tiny:latest (v2s2) and all its blobs from base with the
 * given credentials; NULL on success, else what failed (static). */
static const char *pull_tiny(const char *base, const char *user, const char *pass)
{
	static char why[512];
	struct rs_upstream_config cfg = {
		.name = "lab", .url = (char *)base, .username = (char *)user, .password = (char *)pass,
		.tag_ttl_s = 300, .timeout_s = 30, .tls_verify = true,
	};
	struct upstream *u = NULL;
	struct rs_err err = {0};
	struct upstream_reply r;
	memset(&r, 0, sizeof(r));
	json_t *root = NULL;
	const char *fail = NULL;
	if (upstream_new(&u, &cfg, &err) != RS_OK) {
		snprintf(why, sizeof(why), "%s: upstream_new: %s", base, err.msg);
		return why;
	}
	if (upstream_ping(u, &err) != RS_OK) {
		snprintf(why, sizeof(why), "%s: ping: %s", base, err.msg);
		fail = why;
		goto out;
	}
	static const char *const v2s2[] = {"application/vnd.docker.distribution.manifest.v2+json"};
	if (upstream_manifest(u, "library/tiny", "latest", v2s2, 1, false, RS_LIMIT_MANIFEST_MAX_BYTES, &r, &err) !=
	        RS_OK ||
	    r.status != 200) {
		snprintf(why, sizeof(why), "%s: manifest: status %ld %s", base, r.status, err.msg);
		fail = why;
		goto out;
	}
	char d[DIGEST_STR_SIZE];
	digest_buffer(d, r.body, r.body_len);
	if (strcmp(d, r.digest) != 0 || strncmp(d, "sha256:2072a756", 15) != 0 || !r.content_type ||
	    strcmp(r.content_type, v2s2[0]) != 0) {
		snprintf(why, sizeof(why), "%s: manifest digest %s, header %s, type %s", base, d, r.digest,
		         r.content_type ? r.content_type : "-");
		fail = why;
		goto out;
	}
	json_error_t jerr;
	root = json_loadb(r.body, r.body_len, 0, &jerr);
	json_t *layers = json_object_get(root, "layers");
	json_t *config = json_object_get(root, "config");
	if (!json_is_array(layers) || json_array_size(layers) != 2 || !json_is_object(config)) {
		snprintf(why, sizeof(why), "%s: manifest has no config or not 2 layers", base);
		fail = why;
		goto out;
	}
	for (size_t i = 0; i <= json_array_size(layers); i++) {
		json_t *desc = i == 0 ? config : json_array_get(layers, i - 1);
		const char *want = json_string_value(json_object_get(desc, "digest"));
		json_int_t size = json_integer_value(json_object_get(desc, "size"));
		struct sink s = {.d = digest_new()};
		char got[DIGEST_STR_SIZE] = "";
		enum rs_code rc = s.d ? upstream_blob(u, "library/tiny", want ? want : "", sink_begin, sink_data, &s, &err)
		                      : RS_NOMEM;
		if (rc == RS_OK)
			digest_final(s.d, got);
		bool good = rc == RS_OK && want && strcmp(got, want) == 0 && s.size == size &&
		            digest_count(s.d) == (uint64_t)size;
		digest_free(s.d);
		if (!good) {
			snprintf(why, sizeof(why), "%s: blob %s: %s got %s", base, want ? want : "?", err.msg, got);
			fail = why;
			goto out;
		}
		struct upstream_reply h;
		if (upstream_blob_head(u, "library/tiny", want, &h, &err) != RS_OK || h.status != 200 ||
		    h.content_length != size) {
			snprintf(why, sizeof(why), "%s: blob HEAD %s: status %ld %s", base, want, h.status, err.msg);
			upstream_reply_dispose(&h);
			fail = why;
			goto out;
		}
		upstream_reply_dispose(&h);
	}
	printf("upstream lab: %s: library/tiny manifest %s and its 3 blobs verified\n", base, r.digest);
out:
	json_decref(root);
	upstream_reply_dispose(&r);
	upstream_free(u);
	return fail;
}

START_TEST(pulls_tiny_from_real_registries)
{
	struct lab lab;
	enum lab_state st = lab_start(&lab, lab_port_base("RS_UPSTREAM_LAB_PORT_BASE", 0), "all", true);
	if (st == LAB_SKIP) {
		printf("upstream lab: SKIP: %s\n", lab.why);
		return;
	}
	struct rs_err err = {0};
	ck_assert_int_eq(upstream_global_init(&err), RS_OK);
	const char *fail = st == LAB_UP ? NULL : lab.why;
	char url[64];
	if (!fail) {
		lab_url(&lab, 0, url, sizeof(url));
		fail = pull_tiny(url, NULL, NULL);
	}
	if (!fail) {
		lab_url(&lab, 1, url, sizeof(url));
		fail = pull_tiny(url, "lab", "labpass");
	}
	if (!fail) {
		lab_url(&lab, 2, url, sizeof(url));
		fail = pull_tiny(url, "lab", "labpass");
	}
	if (!fail) { /* anonymous pull from the token registry */
		lab_url(&lab, 2, url, sizeof(url));
		fail = pull_tiny(url, NULL, NULL);
	}
	static char why[sizeof(lab.why)];
	snprintf(why, sizeof(why), "%s", fail ? fail : "");
	lab_stop(&lab, fail != NULL);
	upstream_global_cleanup();
	ck_assert_msg(fail == NULL, "%s", why);
}
END_TEST

Suite *upstream_suite(void)
{
	Suite *s = suite_create("upstream");
	TCase *tc = tcase_create("pure");
	tcase_add_test(tc, parses_docker_hub_challenge);
	tcase_add_test(tc, parses_case_insensitive_and_unquoted);
	tcase_add_test(tc, parses_escapes_and_commas_inside_quotes);
	tcase_add_test(tc, prefers_bearer_among_several_challenges);
	tcase_add_test(tc, rejects_malformed_challenges);
	tcase_add_test(tc, survives_random_challenges);
	tcase_add_test(tc, parses_token_answers);
	tcase_add_test(tc, resolves_redirect_locations);
	tcase_add_test(tc, compares_origins);
	tcase_add_test(tc, caches_tokens_per_scope_until_expiry);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	tc = tcase_create("fake");
	tcase_add_checked_fixture(tc, fake_setup, fake_teardown);
	tcase_add_test(tc, forwards_each_accept_line_in_order);
	tcase_add_test(tc, drops_invalid_content_digest);
	tcase_add_test(tc, enforces_manifest_max_bytes);
	tcase_add_test(tc, captures_error_bodies);
	tcase_add_test(tc, streams_blobs_with_digest_intact);
	tcase_add_test(tc, aborts_when_the_receiver_fails);
	tcase_add_test(tc, rejects_truncated_blob);
	tcase_add_test(tc, times_out_stalled_blob);
	tcase_add_test(tc, reports_unreachable_upstream);
	tcase_add_test(tc, sends_basic_credentials_when_challenged);
	tcase_add_test(tc, reuses_bearer_token_and_refetches_after_401);
	tcase_add_test(tc, fetches_anonymous_tokens_without_credentials);
	tcase_add_test(tc, reports_refused_tokens);
	tcase_add_test(tc, refuses_non_http_realm);
	tcase_add_test(tc, keeps_credentials_off_other_hosts);
	tcase_add_test(tc, keeps_tokens_off_other_hosts);
	tcase_add_test(tc, bounds_redirects);
	tcase_add_test(tc, serves_many_threads_at_once);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	tc = tcase_create("lab");
	tcase_add_test(tc, pulls_tiny_from_real_registries);
	tcase_set_timeout(tc, 280);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(upstream_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
