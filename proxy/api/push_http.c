/* push_http: the write routes of the Distribution API over libmicrohttpd,
 * the auth gate and the token endpoint (OCI distribution spec, "Push").
 *
 * Routes (name is the repository as the client writes it):
 *   POST   /v2/<name>/blobs/uploads/                 202 new upload (Location, Range 0-0, Docker-Upload-UUID)
 *   POST   /v2/<name>/blobs/uploads/?digest=<d>      201 monolithic upload (body is the blob)
 *   POST   /v2/<name>/blobs/uploads/?mount=<d>&from=<repo>  201 when <repo> holds the blob and the client
 *                                                    may pull <repo>, else 202 as above (no from=: 202)
 *   PATCH  /v2/<name>/blobs/uploads/<uuid>           202 chunk (Content-Range "a-b" must start at the size
 *                                                    and agree with the chunk's length: else 416)
 *   PUT    /v2/<name>/blobs/uploads/<uuid>?digest=<d> 201 last chunk (optional) and verification
 *   GET    /v2/<name>/blobs/uploads/<uuid>           204 status (Range)
 *   DELETE /v2/<name>/blobs/uploads/<uuid>           204 cancel
 *   PUT    /v2/<name>/manifests/<tag|digest>         201 (Location, Docker-Content-Digest)
 *   DELETE /v2/<name>/manifests/<ref>, /v2/<name>/blobs/<digest>  405 UNSUPPORTED
 * Bodies stream into push.c as MHD hands them over; an error found while
 * the body is still arriving (too large, out-of-order chunk, no
 * permission) is answered at once and MHD closes the connection.
 *
 * Status codes and registry error codes come from route_map_error() (one
 * table, the spec's "Error Codes" only); the headers they travel with are
 * decided here. docs/push.md has the spec conformance table. */
#include "push_http.h"

#include "digest.h"
#include "gate.h"
#include "gate_policy.h"
#include "log.h"
#include "metrics.h"
#include "refname.h"
#include "route.h"
#include "rs_limits.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define JSON_TYPE "application/json"
#define SERVICE "regslim"

struct push_http {
	const struct rs_config *cfg;
	struct push *push;
	struct auth *auth; /* NULL without an auth section */
	struct gate_resolver *bases; /* approved base references; NULL without push policies */
	struct gate_memo *memo;      /* remembered checks; NULL without push policies */
};

enum wkind {
	W_NONE,
	W_UPLOAD_START,
	W_UPLOAD_PATCH,
	W_UPLOAD_PUT,
	W_UPLOAD_STATUS,
	W_UPLOAD_DELETE,
	W_MANIFEST_PUT,
	W_MANIFEST_DELETE, /* not supported yet: 405 */
	W_BLOB_DELETE,     /* not supported yet: 405 */
};

/* One write request. */
struct wreq {
	enum wkind kind;
	bool ready; /* setup done (gate passed, upload open, ...) */
	char name[RS_LIMIT_NAME_MAX + 1];
	char ref[RS_LIMIT_TAG_MAX + DIGEST_STR_SIZE];
	bool ref_long; /* the reference did not fit ref (which holds its start): invalid */
	char uuid[PUSH_UUID_SIZE];
	struct push_upload *u;
	uint64_t limit; /* bytes this request may still append (Content-Range), UINT64_MAX: no limit */
	char *buf;      /* manifest body */
	size_t len, cap;
	bool in_body;   /* answers are deferred until the body is read */
	bool deferred;  /* an answer is waiting; later body bytes are dropped */
	unsigned d_status;
	char *d_type, *d_body;
	char *d_name[4], *d_value[4];
	size_t d_n;
};

static void wreq_free(void *state);

/* ------------------------------------------------------------ lifecycle */

enum rs_code push_http_new(struct push_http **out, const struct rs_config *cfg, struct blobstore *cache,
                           struct rs_err *err)
{
	*out = NULL;
	struct push_http *ph = calloc(1, sizeof(*ph));
	if (!ph)
		return rs_err_set(err, RS_NOMEM, "out of memory starting push");
	ph->cfg = cfg;
	enum rs_code rc = push_new(&ph->push, cfg, cache, err);
	if (rc == RS_OK && cfg->auth.enabled) {
		rc = auth_new(&ph->auth, &cfg->auth, err);
		if (rc)
			rs_err_prefix(err, "auth: ");
	}
	if (rc == RS_OK && cfg->push.policy_count)
		rc = gate_resolver_new(&ph->bases, cfg, err);
	if (rc == RS_OK && cfg->push.policy_count)
		rc = gate_memo_new(&ph->memo, err);
	if (rc) {
		push_http_free(ph);
		return rc;
	}
	*out = ph;
	return RS_OK;
}

void push_http_free(struct push_http *ph)
{
	if (!ph)
		return;
	auth_free(ph->auth);
	gate_resolver_free(ph->bases);
	gate_memo_free(ph->memo);
	push_free(ph->push);
	free(ph);
}

struct push *push_http_push(struct push_http *ph)
{
	return ph->push;
}

struct gate_resolver *push_http_bases(struct push_http *ph)
{
	return ph->bases;
}

void push_http_maintain(struct push_http *ph)
{
	push_sweep(ph->push, time(NULL), NULL);
}

/* ------------------------------------------------------------ replies */

struct hdr {
	const char *name, *value;
};

static void deferred_dispose(struct wreq *w)
{
	free(w->d_type);
	free(w->d_body);
	for (size_t i = 0; i < w->d_n; i++) {
		free(w->d_name[i]);
		free(w->d_value[i]);
	}
	w->d_type = w->d_body = NULL;
	w->d_n = 0;
	w->deferred = false;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* While the body is still arriving, an answer is kept and sent once the
 * whole request was read: clients (Go's net/http among them) that are still
 * writing a body when the server answers and closes see only a broken
 * connection. The bytes in between are read and dropped. */
static enum MHD_Result keep_for_later(struct request *rq, struct wreq *w, unsigned status, const char *type,
                                      const char *body, const struct hdr *h, size_t nh)
{
	deferred_dispose(w);
	w->deferred = true;
	w->d_status = status;
	w->d_type = dup_or_null(type);
	w->d_body = dup_or_null(body);
	for (size_t i = 0; i < nh && i < 4; i++) {
		if (!h[i].name || !h[i].value)
			continue;
		w->d_name[w->d_n] = strdup(h[i].name);
		w->d_value[w->d_n] = strdup(h[i].value);
		w->d_n++;
	}
	rq->answered = false; /* keep reading (and dropping) the body */
	return MHD_YES;
}

static enum MHD_Result reply(struct request *rq, unsigned status, const char *type, const char *body,
                             const struct hdr *h, size_t nh)
{
	struct wreq *w = rq->body_free == wreq_free ? rq->body_state : NULL;
	if (w && w->in_body)
		return keep_for_later(rq, w, status, type, body, h, nh);
	size_t len = body ? strlen(body) : 0;
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)(body ? body : ""), MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	if (type)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(resp, "Docker-Distribution-API-Version", "registry/2.0");
	for (size_t i = 0; i < nh; i++)
		if (h[i].name && h[i].value)
			MHD_add_response_header(resp, h[i].name, h[i].value);
	rq->status = status;
	rq->body_bytes = strcmp(rq->method, "HEAD") == 0 ? 0 : len;
	enum MHD_Result ret = MHD_queue_response(rq->conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result reply_error(struct request *rq, unsigned status, const char *code, const char *msg,
                                   const struct hdr *h, size_t nh)
{
	char body[1024];
	size_t pos = (size_t)snprintf(body, sizeof(body), "{\"errors\":[{\"code\":\"%s\",\"message\":\"", code);
	log_json_escape(body, sizeof(body) - 32, &pos, msg);
	snprintf(body + pos, sizeof(body) - pos, "\",\"detail\":{}}]}\n");
	free(rq->error);
	rq->error = strdup(msg);
	return reply(rq, status, JSON_TYPE, body, h, nh);
}

static void range_value(char *out, size_t cap, uint64_t size)
{
	snprintf(out, cap, "0-%llu", (unsigned long long)(size ? size - 1 : 0));
}

static void upload_location(char *out, size_t cap, const char *name, const char *uuid)
{
	snprintf(out, cap, "/v2/%s/blobs/uploads/%s", name, uuid);
}

static enum MHD_Result fail_as(struct request *rq, const struct wreq *w, enum route_what what,
                               const struct rs_err *err, uint64_t size, bool with_range)
{
	struct route_error m = route_map_error(err->code, what);
	unsigned status = m.status;
	const char *code = m.code;
	if (status >= 500)
		log_event(LOG_ERROR, "%s %s: %s", rq->method, rq->url, err->msg);
	char loc[RS_LIMIT_NAME_MAX + 96], range[48];
	upload_location(loc, sizeof(loc), w->name, w->uuid);
	range_value(range, sizeof(range), size);
	struct hdr h[] = {{"Location", loc}, {"Range", range}, {"Docker-Upload-UUID", w->uuid}};
	return reply_error(rq, status, code, err->msg[0] ? err->msg : rs_code_name(err->code), h,
	                   with_range && w->uuid[0] ? 3 : 0);
}

static enum MHD_Result fail(struct request *rq, const struct wreq *w, const struct rs_err *err, uint64_t size,
                            bool with_range)
{
	return fail_as(rq, w, w->kind == W_MANIFEST_PUT ? ROUTE_MANIFEST_PUT : ROUTE_UPLOAD, err, size, with_range);
}

/* Answer now, while the body may still be arriving; later pieces are dropped. */
static enum MHD_Result fail_early(struct request *rq, struct wreq *w, const struct rs_err *err, uint64_t size,
                                  bool with_range)
{
	rq->answered = true;
	return fail(rq, w, err, size, with_range);
}

static enum MHD_Result upload_accepted(struct request *rq, const struct wreq *w, unsigned status, uint64_t size)
{
	char loc[RS_LIMIT_NAME_MAX + 96], range[48];
	upload_location(loc, sizeof(loc), w->name, w->uuid);
	range_value(range, sizeof(range), size);
	struct hdr h[] = {{"Location", loc}, {"Range", range}, {"Docker-Upload-UUID", w->uuid}};
	return reply(rq, status, NULL, NULL, h, 3);
}

static enum MHD_Result blob_created(struct request *rq, const struct wreq *w, const char *digest)
{
	char loc[RS_LIMIT_NAME_MAX + DIGEST_STR_SIZE + 32];
	snprintf(loc, sizeof(loc), "/v2/%s/blobs/%s", w->name, digest);
	struct hdr h[] = {{"Location", loc}, {"Docker-Content-Digest", digest}};
	return reply(rq, 201, NULL, NULL, h, 2);
}

/* ------------------------------------------------------------ gate */

static bool host_ok(const char *h)
{
	if (!h || !h[0] || strlen(h) > 255)
		return false;
	for (const char *p = h; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr(".-:[]_", *p))
			return false;
	return true;
}

/* Safe inside a quoted header value: a repository name, with an upstream
 * host[:port] in front. */
static bool header_safe(const char *s)
{
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._/:-", *s))
			return false;
	return true;
}

static enum MHD_Result challenge(struct push_http *ph, struct request *rq, const char *repo, unsigned need,
                                 const char *error, const char *msg)
{
	char realm[512];
	const char *host = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
	if (ph->cfg->auth.realm)
		snprintf(realm, sizeof(realm), "%s", ph->cfg->auth.realm);
	else
		snprintf(realm, sizeof(realm), "http://%s/auth/token", host_ok(host) ? host : ph->cfg->listen);
	char www[1024];
	int n = snprintf(www, sizeof(www), "Bearer realm=\"%s\",service=\"" SERVICE "\"", realm);
	/* callers validate repo first; what is not a plain name never goes into the header */
	if (repo && header_safe(repo) && n > 0 && (size_t)n < sizeof(www))
		n += snprintf(www + n, sizeof(www) - (size_t)n, ",scope=\"repository:%s:%s\"", repo,
		              need & AUTH_PUSH ? "pull,push" : "pull");
	if (error && n > 0 && (size_t)n < sizeof(www))
		snprintf(www + n, sizeof(www) - (size_t)n, ",error=\"%s\"", error);
	struct hdr h[] = {{MHD_HTTP_HEADER_WWW_AUTHENTICATE, www}};
	rq->answered = true;
	return reply_error(rq, 401, "UNAUTHORIZED", msg, h, 1);
}

/* The client's address as text (for the failed-login back-off). */
static void client_addr(struct request *rq, char *out, size_t cap)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;
	snprintf(out, cap, "?");
	if (sa && sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out, (socklen_t)cap);
	else if (sa && sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out, (socklen_t)cap);
}

/* 429 TOOMANYREQUESTS with Retry-After, for a login refused by the back-off. */
static enum MHD_Result throttled(struct request *rq, const char *msg, unsigned retry_after)
{
	char secs[16];
	snprintf(secs, sizeof(secs), "%u", retry_after ? retry_after : 1);
	struct hdr h[] = {{MHD_HTTP_HEADER_RETRY_AFTER, secs}};
	rq->answered = true;
	return reply_error(rq, 429, "TOOMANYREQUESTS", msg, h, 1);
}

bool push_http_gate(struct push_http *ph, struct request *rq, const char *repo, unsigned need, enum MHD_Result *ret)
{
	if (!ph->auth) {
		if (!(need & AUTH_PUSH))
			return true;
		rq->answered = true;
		*ret = reply_error(rq, 403, "DENIED",
		                   "pushing is disabled: add an \"auth\" section (htpasswd users, acl) to the configuration "
		                   "to enable it; see docs/push.md",
		                   NULL, 0);
		return false;
	}
	const char *authz = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	struct auth_decision d;
	char addr[64];
	client_addr(rq, addr, sizeof(addr));
	struct auth_client client = {.addr = addr};
	auth_decide(ph->auth, authz, &client, repo, need, time(NULL), &d);
	if (d.verdict == AUTH_ALLOW)
		return true;
	if (d.verdict == AUTH_THROTTLED) {
		*ret = throttled(rq, d.msg, client.retry_after);
		return false;
	}
	if (d.verdict == AUTH_DENY) {
		rq->answered = true;
		*ret = reply_error(rq, 403, "DENIED", d.msg, NULL, 0);
		return false;
	}
	const char *error = d.insufficient_scope ? "insufficient_scope"
	                    : authz && strncasecmp(authz, "Bearer", 6) == 0 ? "invalid_token"
	                                                                   : NULL;
	*ret = challenge(ph, rq, repo, need, error, d.msg);
	return false;
}

/* ------------------------------------------------------------ token endpoint */

bool push_http_is_token(const char *url)
{
	return strcmp(url, "/auth/token") == 0;
}

struct scope_list {
	char *v[RS_LIMIT_TOKEN_SCOPES_MAX + 1];
	size_t n;
	bool too_many;
};

static enum MHD_Result collect_scope(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	(void)kind;
	struct scope_list *s = cls;
	if (!key || !value || strcmp(key, "scope") != 0)
		return MHD_YES;
	/* OAuth style: several scopes in one parameter, space-separated. */
	const char *p = value;
	while (*p) {
		size_t l = strcspn(p, " ");
		if (l > 0) {
			if (s->n >= RS_LIMIT_TOKEN_SCOPES_MAX) {
				s->too_many = true;
				return MHD_NO;
			}
			s->v[s->n] = strndup(p, l);
			if (s->v[s->n])
				s->n++;
		}
		p += l;
		while (*p == ' ')
			p++;
	}
	return MHD_YES;
}

enum MHD_Result push_http_token(struct push_http *ph, struct request *rq)
{
	rq->route = "token";
	if (!ph->auth)
		return reply_error(rq, 404, "NOT_FOUND", "no token endpoint: authentication is not configured (auth)", NULL, 0);
	if (strcmp(rq->method, "GET") != 0)
		/* containerd tries an OAuth POST first and falls back to GET on 405. */
		return reply_error(rq, 405, "UNSUPPORTED", "use GET /auth/token with Basic credentials", NULL, 0);
	struct scope_list sl = {.n = 0};
	MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND, collect_scope, &sl);
	enum MHD_Result ret;
	if (sl.too_many) {
		char msg[96];
		snprintf(msg, sizeof(msg), "more than %u scopes requested", (unsigned)RS_LIMIT_TOKEN_SCOPES_MAX);
		ret = reply_error(rq, 400, "UNSUPPORTED", msg, NULL, 0);
		goto out;
	}
	const char *authz = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	char *body = malloc(3 * RS_LIMIT_TOKEN_MAX_CHARS);
	if (!body) {
		ret = MHD_NO;
		goto out;
	}
	struct rs_err err = {0};
	char addr[64];
	client_addr(rq, addr, sizeof(addr));
	struct auth_client client = {.addr = addr};
	enum rs_code rc = auth_issue_token(ph->auth, authz, &client, (const char *const *)sl.v, sl.n, time(NULL), body,
	                                   3 * RS_LIMIT_TOKEN_MAX_CHARS, &err);
	if (rc == RS_OK) {
		struct hdr h[] = {{MHD_HTTP_HEADER_CACHE_CONTROL, "no-store"}};
		ret = reply(rq, 200, JSON_TYPE, body, h, 1);
	} else if (rc == RS_THROTTLED) {
		ret = throttled(rq, err.msg, client.retry_after);
	} else if (rc == RS_UNAUTHORIZED) {
		struct hdr h[] = {{MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Basic realm=\"" SERVICE "\""}};
		ret = reply_error(rq, 401, "UNAUTHORIZED", err.msg, h, 1);
	} else {
		ret = reply_error(rq, rc == RS_NOMEM ? 500 : 400, "UNSUPPORTED", err.msg, NULL, 0);
	}
	free(body);
out:
	for (size_t i = 0; i < sl.n; i++)
		free(sl.v[i]);
	return ret;
}

/* ------------------------------------------------------------ routes */

/* Split a /v2/<name>/<...> url into name and the route; false if it is not
 * a write route. */
static bool parse_write(const char *method, const char *url, struct wreq *w)
{
	if (strncmp(url, "/v2/", 4) != 0)
		return false;
	const char *path = url + 4;
	size_t len = strlen(path);
	const char *up = NULL;
	for (const char *p = path; (p = strstr(p, "/blobs/uploads")) != NULL; p++)
		up = p; /* the last one: names may not contain it, but be strict */
	bool post = strcmp(method, "POST") == 0, put = strcmp(method, "PUT") == 0;
	bool patch = strcmp(method, "PATCH") == 0, get = strcmp(method, "GET") == 0;
	bool del = strcmp(method, "DELETE") == 0;
	if (up) {
		size_t nl = (size_t)(up - path);
		const char *rest = up + strlen("/blobs/uploads");
		if (nl == 0 || nl > RS_LIMIT_NAME_MAX)
			return false;
		memcpy(w->name, path, nl);
		w->name[nl] = '\0';
		if (rest[0] == '\0' || (rest[0] == '/' && rest[1] == '\0')) {
			if (!post)
				return false;
			w->kind = W_UPLOAD_START;
			return true;
		}
		if (rest[0] != '/' || strchr(rest + 1, '/') || strlen(rest + 1) >= sizeof(w->uuid) + 8)
			return false;
		snprintf(w->uuid, sizeof(w->uuid), "%.36s", rest + 1);
		if (strlen(rest + 1) != PUSH_UUID_SIZE - 1)
			w->uuid[0] = '\0', snprintf(w->ref, sizeof(w->ref), "%s", rest + 1); /* unknown upload */
		w->kind = patch ? W_UPLOAD_PATCH : put ? W_UPLOAD_PUT : get ? W_UPLOAD_STATUS : del ? W_UPLOAD_DELETE : W_NONE;
		return w->kind != W_NONE;
	}
	if (!put && !del)
		return false;
	const char *last = strrchr(path, '/');
	if (!last || last == path)
		return false;
	const char *kindp = last;
	while (kindp > path && kindp[-1] != '/')
		kindp--;
	if (kindp == path)
		return false;
	size_t nl = (size_t)(kindp - 1 - path);
	size_t kl = (size_t)(last - kindp);
	if (nl == 0 || nl > RS_LIMIT_NAME_MAX || len == 0)
		return false;
	memcpy(w->name, path, nl);
	w->name[nl] = '\0';
	/* A reference too long for any tag or digest is still this route, so the
	 * client hears that its tag is invalid, not that the method is unknown. */
	w->ref_long = strlen(last + 1) >= sizeof(w->ref);
	snprintf(w->ref, sizeof(w->ref), "%.*s", (int)sizeof(w->ref) - 1, last + 1);
	if (kl == 9 && strncmp(kindp, "manifests", 9) == 0) {
		w->kind = put ? W_MANIFEST_PUT : W_MANIFEST_DELETE;
		return true;
	}
	if (kl == 5 && strncmp(kindp, "blobs", 5) == 0 && del) {
		w->kind = W_BLOB_DELETE;
		return true;
	}
	return false;
}

bool push_http_is_write(const char *method, const char *url)
{
	struct wreq w = {.kind = W_NONE};
	return parse_write(method, url, &w);
}

static void wreq_free(void *state)
{
	struct wreq *w = state;
	if (!w)
		return;
	push_upload_close(w->u); /* a broken connection keeps the bytes so far: resumable */
	deferred_dispose(w);
	free(w->buf);
	free(w);
}

static const char *arg(struct request *rq, const char *key)
{
	return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, key);
}

/* Parse "a-b" (Content-Range of a chunk; "bytes a-b/total" also taken). */
static bool parse_content_range(const char *s, uint64_t *a, uint64_t *b)
{
	if (strncmp(s, "bytes ", 6) == 0)
		s += 6;
	char *end;
	if (!isdigit((unsigned char)*s))
		return false;
	unsigned long long x = strtoull(s, &end, 10);
	if (*end != '-' || !isdigit((unsigned char)end[1]))
		return false;
	unsigned long long y = strtoull(end + 1, &end, 10);
	if ((*end != '\0' && *end != '/') || y < x)
		return false;
	*a = x;
	*b = y;
	return true;
}

/* Gate, validate and open what the request needs; answers on failure. */
static bool setup(struct push_http *ph, struct request *rq, struct wreq *w, enum MHD_Result *ret)
{
	struct rs_err err = {0};
	w->limit = UINT64_MAX;
	rq->route = w->kind == W_MANIFEST_PUT || w->kind == W_MANIFEST_DELETE ? "manifest"
	            : w->kind == W_BLOB_DELETE                                 ? "blob"
	                                                                       : "upload";
	if (w->kind == W_MANIFEST_DELETE || w->kind == W_BLOB_DELETE) {
		rq->answered = true;
		*ret = reply_error(rq, 405, "UNSUPPORTED", "deleting manifests and blobs is not supported by regslim",
		                   NULL, 0);
		return false;
	}
	if (!refname_repo_valid(w->name)) {
		rq->answered = true;
		rs_err_set(&err, RS_BAD_INPUT, "invalid repository name '%.200s'", w->name);
		*ret = reply_error(rq, 400, "NAME_INVALID", err.msg, NULL, 0);
		return false;
	}
	if (!push_http_gate(ph, rq, w->name, AUTH_PUSH, ret))
		return false;
	if (w->kind == W_MANIFEST_PUT) {
		/* Distribution spec, "Pulling manifests": a reference is a digest or
		 * a tag of at most 128 characters matching [a-zA-Z0-9_][a-zA-Z0-9._-]*;
		 * the error codes of "Error Codes" only (no TAG_INVALID there). */
		bool by_digest = strchr(w->ref, ':') != NULL;
		enum rs_code rc = RS_OK;
		if (by_digest && w->ref_long)
			rc = rs_err_set(&err, RS_DIGEST_INVALID, "invalid digest '%.80s...': longer than any supported digest",
			                w->ref);
		else if (by_digest)
			rc = digest_parse(w->ref, &err);
		else if (w->ref_long || !refname_tag_valid(w->ref))
			rc = rs_err_set(&err, RS_BAD_INPUT,
			                "invalid tag '%.130s%s': a tag is 1 to %d characters of [a-zA-Z0-9_][a-zA-Z0-9._-]*",
			                w->ref, w->ref_long ? "..." : "", RS_LIMIT_TAG_MAX);
		if (rc) {
			*ret = fail_early(rq, w, &err, 0, false);
			return false;
		}
		return true;
	}
	if (w->kind == W_UPLOAD_START) {
		const char *mount = arg(rq, "mount");
		const char *from = arg(rq, "from");
		if (mount && from && refname_repo_valid(from)) {
			/* Mounting needs pull on the source repository, and the source
			 * must hold the blob (push_mount_blob); else a plain upload (spec,
			 * "Mounting a blob": 202 when the registry cannot mount). Without
			 * from= there is no mount at all: holding a digest somewhere in
			 * regslim gives no right to it (issue 11). */
			struct auth_decision d = {.verdict = AUTH_ALLOW};
			char addr[64];
			client_addr(rq, addr, sizeof(addr));
			struct auth_client client = {.addr = addr};
			if (ph->auth)
				auth_decide(ph->auth,
				            MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
				            &client, from, AUTH_PULL, time(NULL), &d);
			if (d.verdict == AUTH_ALLOW && push_mount_blob(ph->push, w->name, from, mount, &err) == RS_OK) {
				log_event(LOG_DEBUG, "blob %s mounted from %s into %s", mount, from, w->name);
				rq->answered = true;
				*ret = blob_created(rq, w, mount);
				return false;
			}
			rs_err_clear(&err);
		}
		const char *dg = arg(rq, "digest");
		if (dg && digest_parse(dg, &err) != RS_OK) {
			*ret = fail_early(rq, w, &err, 0, false);
			return false;
		}
		if (push_upload_start(ph->push, w->name, w->uuid, &err) != RS_OK) {
			rq->answered = true;
			*ret = fail_as(rq, w, ROUTE_UPLOAD_START, &err, 0, false);
			return false;
		}
	}
	if (w->kind == W_UPLOAD_PUT) {
		const char *dg = arg(rq, "digest");
		if (!dg) {
			rs_err_set(&err, RS_DIGEST_INVALID, "PUT of an upload needs ?digest=");
			*ret = fail_early(rq, w, &err, 0, false);
			return false;
		}
		if (digest_parse(dg, &err) != RS_OK) {
			*ret = fail_early(rq, w, &err, 0, false);
			return false;
		}
	}
	if (!w->uuid[0]) {
		rs_err_set(&err, RS_NOT_FOUND, "unknown upload '%.60s'", w->ref);
		*ret = fail_early(rq, w, &err, 0, false);
		return false;
	}
	if (push_upload_open(ph->push, w->name, w->uuid, &w->u, &err) != RS_OK) {
		*ret = fail_early(rq, w, &err, 0, false);
		return false;
	}
	uint64_t size = push_upload_size(w->u);
	const char *cr = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_RANGE);
	if (cr && (w->kind == W_UPLOAD_PATCH || w->kind == W_UPLOAD_PUT)) {
		uint64_t a, b;
		if (!parse_content_range(cr, &a, &b)) {
			rs_err_set(&err, RS_RANGE, "Content-Range '%.60s' is not 'start-end'", cr);
			*ret = fail_early(rq, w, &err, size, true);
			return false;
		}
		if (a != size) {
			rs_err_set(&err, RS_RANGE, "chunk starts at byte %llu but the upload has %llu bytes",
			           (unsigned long long)a, (unsigned long long)size);
			*ret = fail_early(rq, w, &err, size, true);
			return false;
		}
		w->limit = b - a + 1;
		/* "<length> is the content-length of the current chunk": a range
		 * that disagrees with it is refused before a byte is written. */
		const char *cl = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		char *end = NULL;
		unsigned long long n = cl && isdigit((unsigned char)*cl) ? strtoull(cl, &end, 10) : 0;
		if (end && *end == '\0' && n != w->limit) {
			rs_err_set(&err, RS_RANGE, "Content-Range %llu-%llu is %llu bytes but Content-Length is %llu",
			           (unsigned long long)a, (unsigned long long)b, (unsigned long long)w->limit, n);
			*ret = fail_early(rq, w, &err, size, true);
			return false;
		}
	}
	return true;
}

static struct wreq *wreq_of(struct request *rq, bool *fresh)
{
	*fresh = false;
	if (rq->body_state)
		return rq->body_state;
	struct wreq *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	if (!parse_write(rq->method, rq->url, w))
		w->kind = W_NONE;
	rq->body_state = w;
	rq->body_free = wreq_free;
	*fresh = true;
	return w;
}

enum MHD_Result push_http_body(struct push_http *ph, struct request *rq, const char *data, size_t len)
{
	bool fresh;
	struct wreq *w = wreq_of(rq, &fresh);
	if (!w)
		return MHD_NO;
	enum MHD_Result ret = MHD_YES;
	if (rq->answered || w->kind == W_NONE || w->deferred)
		return MHD_YES; /* discarded */
	w->in_body = true;
	if (!w->ready) {
		if (!setup(ph, rq, w, &ret))
			return ret;
		w->ready = true;
	}
	struct rs_err err = {0};
	switch (w->kind) {
	case W_MANIFEST_PUT:
		if (w->len + len > ph->cfg->manifest_max_bytes) {
			rs_err_set(&err, RS_TOO_LARGE, "manifest is larger than %llu bytes (limits.manifest_max_bytes)",
			           (unsigned long long)ph->cfg->manifest_max_bytes);
			return fail_early(rq, w, &err, 0, false);
		}
		if (w->len + len > w->cap) {
			size_t nc = w->cap ? w->cap : 16384;
			while (nc < w->len + len)
				nc *= 2;
			char *nb = realloc(w->buf, nc + 1);
			if (!nb)
				return MHD_NO;
			w->buf = nb;
			w->cap = nc;
		}
		memcpy(w->buf + w->len, data, len);
		w->len += len;
		return MHD_YES;
	case W_UPLOAD_START:
	case W_UPLOAD_PATCH:
	case W_UPLOAD_PUT:
		if (len > w->limit) {
			rs_err_set(&err, RS_RANGE, "chunk is longer than its Content-Range says");
			return fail_early(rq, w, &err, push_upload_size(w->u), true);
		}
		if (w->limit != UINT64_MAX)
			w->limit -= len;
		if (push_upload_write(w->u, data, len, &err) != RS_OK)
			return fail_early(rq, w, &err, push_upload_size(w->u), err.code != RS_TOO_LARGE);
		return MHD_YES;
	default:
		return MHD_YES; /* GET/DELETE bodies are ignored */
	}
}

/* "name:tag" or "name@digest", for messages. */
static void ref_text(char *out, size_t cap, const char *name, const char *ref)
{
	int n = snprintf(out, cap, "%s%s%s", name, strchr(ref, ':') ? "@" : ":", ref);
	if (n < 0)
		out[0] = '\0'; /* a cut text is fine for a message */
}

/* Keep the gate's report of this push (gate.h) under the pushed digest
 * and under every optimized digest it sent upstream, so the report of
 * either is at /regslim/v1/reports/<name>/<digest>. A report that cannot
 * be written is logged; the push's answer stands. */
static void save_report(struct push_http *ph, const struct gate_report *rep, const struct gate_report_meta *m)
{
	struct rs_err err = {0};
	char *json = NULL;
	size_t len = 0;
	enum rs_code rc = gate_report_json(&json, &len, rep, m, &err);
	if (rc == RS_OK)
		rc = gate_report_save(ph->cfg->data_dir, m->repository, m->digest, json, len, &err);
	for (size_t i = 0; rc == RS_OK && m->outcome && i < m->outcome->count; i++)
		if (m->outcome->pushed[i].optimized)
			rc = gate_report_save(ph->cfg->data_dir, m->repository, m->outcome->pushed[i].digest, json, len,
			                      &err);
	if (rc) {
		char shown[RS_LIMIT_NAME_MAX + RS_LIMIT_TAG_MAX + DIGEST_STR_SIZE];
		ref_text(shown, sizeof(shown), m->repository, m->reference);
		log_event(LOG_WARN, "push %s (%s): %s", shown, m->digest, err.msg);
	}
	free(json);
}

/* A registry error whose message may be long (policy reports): the body
 * is built in a buffer of its own size. */
static enum MHD_Result reply_error_long(struct request *rq, unsigned status, const char *code, const char *msg)
{
	size_t cap = strlen(msg) * 6 + 128;
	char *body = malloc(cap);
	if (!body)
		return reply_error(rq, 500, "UNKNOWN", "out of memory", NULL, 0);
	size_t pos = (size_t)snprintf(body, cap, "{\"errors\":[{\"code\":\"%s\",\"message\":\"", code);
	log_json_escape(body, cap - 32, &pos, msg);
	snprintf(body + pos, cap - pos, "\",\"detail\":{}}]}\n");
	free(rq->error);
	rq->error = strdup(msg);
	enum MHD_Result ret = reply(rq, status, JSON_TYPE, body, NULL, 0);
	free(body);
	return ret;
}

/* Manifest PUT under a push policy (docs/policy.md): store by digest (the
 * spec's checks), evaluate the policy over every layer, refuse with 403
 * DENIED listing every violation, forward a tag push to the upstream per the
 * policy's mode, and only then set the local tag and answer 201. A push by
 * digest is checked and kept; it goes upstream with the tag that names it. */
static enum MHD_Result gated_manifest_put(struct push_http *ph, struct request *rq, struct wreq *w,
                                          const struct rs_gate_policy *gp, const char *ct)
{
	struct rs_err err = {0};
	char digest[DIGEST_STR_SIZE], got[DIGEST_STR_SIZE];
	digest_buffer(digest, w->buf, w->len);
	bool by_tag = strchr(w->ref, ':') == NULL;
	struct blobstore *store = push_store(ph->push);
	bool had = blobstore_has(store, BLOBSTORE_MANIFEST, digest);
	bool had_link = push_holds(ph->push, w->name, BLOBSTORE_MANIFEST, digest);
	if (push_put_manifest(ph->push, w->name, by_tag ? digest : w->ref, ct, w->buf, w->len, got, &err) != RS_OK)
		return fail(rq, w, &err, 0, false);
	struct gate_report rep = {0};
	struct gate_outcome out = {0};
	struct gate_report_meta meta = {w->name, w->ref, digest, gate_mode_name(gp->mode), "accepted", time(NULL), NULL};
	char *text = NULL, report_url[RS_LIMIT_NAME_MAX + DIGEST_STR_SIZE + 32];
	snprintf(report_url, sizeof(report_url), "/regslim/v1/reports/%s/%s", w->name, digest);
	char shown[RS_LIMIT_NAME_MAX + RS_LIMIT_TAG_MAX + DIGEST_STR_SIZE];
	ref_text(shown, sizeof(shown), w->name, w->ref);
	enum MHD_Result ret;
	bool remembered = false;
	enum rs_code rc = gate_check_memo(ph->memo, &remembered, &rep, gp, store, digest,
	                                  by_tag ? 0 : GATE_CHECK_NAME_PLATFORM, ph->bases, &err);
	if (rc == RS_OK && remembered)
		log_event(LOG_INFO, "push %s (%s): policy check remembered from an earlier push of the same image", shown,
		          digest);
	if (rc) {
		metrics_gate_push("check_failed");
		rs_err_prefix(&err, "policy check of %s: ", digest);
		ret = fail(rq, w, &err, 0, false);
		goto done;
	}
	for (size_t i = 0; i < rep.count; i++)
		metrics_gate_finding(rep.items[i].rule, rep.items[i].action == GATE_DENY ? "deny" : "warn");
	if (rep.warns && gate_report_text(&text, &rep, GATE_WARN, &err) == RS_OK) {
		log_event(LOG_WARN, "push %s (%s): %zu policy warning(s): %s", shown, digest, rep.warns, text);
		free(text);
		text = NULL;
	}
	if (rep.denies) {
		/* Refused: what this PUT added goes again, so the image cannot be
		 * pulled by digest from regslim; the report stays. */
		if (!had)
			blobstore_remove(store, BLOBSTORE_MANIFEST, digest);
		if (!had_link)
			push_forget_manifest(ph->push, w->name, digest);
		meta.verdict = "denied";
		save_report(ph, &rep, &meta);
		if (gate_report_text(&text, &rep, GATE_DENY, &err) != RS_OK) {
			ret = fail(rq, w, &err, 0, false);
		} else {
			size_t n = strlen(text) + sizeof(report_url) + 256;
			char *msg = malloc(n);
			if (msg)
				snprintf(msg, n, "push of %s refused by policy: %zu violation(s): %s (report: %s)", shown,
				         rep.denies, text, report_url);
			log_event(LOG_WARN, "%s", msg ? msg : text);
			ret = reply_error_long(rq, 403, "DENIED", msg ? msg : text);
			free(msg);
		}
		metrics_gate_push("denied");
		goto done;
	}
	if (by_tag) {
		char tmp_dir[4096];
		snprintf(tmp_dir, sizeof(tmp_dir), "%s/tmp", ph->cfg->data_dir);
		rs_err_clear(&err);
		enum rs_code frc = gate_forward(&out, gp, ph->cfg, store, tmp_dir, w->name, w->ref, digest, &err);
		if (frc == RS_BAD_INPUT) {
			/* the image passed the policy but cannot be optimized: the client's to fix */
			if (!had)
				blobstore_remove(store, BLOBSTORE_MANIFEST, digest);
			if (!had_link)
				push_forget_manifest(ph->push, w->name, digest);
			metrics_gate_push("invalid");
			log_event(LOG_WARN, "push %s (%s) refused: %s", shown, digest, err.msg);
			ret = reply_error(rq, 400, "MANIFEST_INVALID", err.msg, NULL, 0);
			goto done;
		}
		if (frc != RS_OK) {
			metrics_gate_push("upstream_failed");
			log_event(LOG_ERROR, "push %s (%s) not forwarded: %s", shown, digest, err.msg);
			char msg[RS_ERR_MSG_MAX + 64];
			snprintf(msg, sizeof(msg), "forwarding to the upstream failed: %s", err.msg);
			ret = reply_error(rq, err.code == RS_UPSTREAM ? 502 : 500, "UNAVAILABLE", msg, NULL, 0);
			goto done;
		}
		char pushed[600] = "";
		for (size_t i = 0; i < out.count; i++) {
			size_t l = strlen(pushed);
			snprintf(pushed + l, sizeof(pushed) - l, "%s%s:%s -> %s (%s)", i ? ", " : "", w->name,
			         out.pushed[i].tag, out.pushed[i].digest, out.pushed[i].optimized ? "optimized" : "original");
		}
		log_event(LOG_INFO, "push %s (%s) accepted by policy (mode %s, %zu warning(s)), upstream: %s", shown, digest,
		          gate_mode_name(gp->mode), rep.warns, pushed);
		if (push_put_manifest(ph->push, w->name, w->ref, ct, w->buf, w->len, got, &err) != RS_OK) {
			ret = fail(rq, w, &err, 0, false);
			goto done;
		}
		meta.outcome = &out;
	}
	save_report(ph, &rep, &meta);
	metrics_gate_push("accepted");
	char loc[RS_LIMIT_NAME_MAX + DIGEST_STR_SIZE + 32], nwarn[24];
	snprintf(loc, sizeof(loc), "/v2/%s/manifests/%s", w->name, digest);
	snprintf(nwarn, sizeof(nwarn), "%zu", rep.warns);
	struct hdr h[] = {{"Location", loc},
	                  {"Docker-Content-Digest", digest},
	                  {"X-Regslim-Policy-Warnings", nwarn},
	                  {"X-Regslim-Report", report_url}};
	ret = reply(rq, 201, NULL, NULL, h, 4);
done:
	free(text);
	gate_report_dispose(&rep);
	gate_outcome_dispose(&out);
	return ret;
}

enum MHD_Result push_http_handle(struct push_http *ph, struct request *rq)
{
	bool fresh;
	struct wreq *w = wreq_of(rq, &fresh);
	if (!w)
		return MHD_NO;
	enum MHD_Result ret = MHD_YES;
	if (rq->answered)
		return MHD_YES;
	w->in_body = false;
	if (w->deferred) {
		struct hdr h[4];
		for (size_t i = 0; i < w->d_n; i++)
			h[i] = (struct hdr){w->d_name[i], w->d_value[i]};
		return reply(rq, w->d_status, w->d_type, w->d_body, h, w->d_n);
	}
	if (w->kind == W_NONE)
		return reply_error(rq, 404, "NOT_FOUND", "no such endpoint", NULL, 0);
	if (!w->ready) {
		if (!setup(ph, rq, w, &ret))
			return ret;
		w->ready = true;
	}
	struct rs_err err = {0};
	if ((w->kind == W_UPLOAD_PATCH || w->kind == W_UPLOAD_PUT) && w->limit != UINT64_MAX && w->limit > 0) {
		/* A chunk (sent without Content-Length) that ended before its
		 * Content-Range did: its bytes are kept, Range says where the upload
		 * stands, and the client resumes from there. */
		uint64_t size = push_upload_size(w->u);
		push_upload_close(w->u);
		w->u = NULL;
		rs_err_set(&err, RS_RANGE, "the chunk ended %llu bytes short of its Content-Range; the upload has %llu bytes",
		           (unsigned long long)w->limit, (unsigned long long)size);
		return fail(rq, w, &err, size, true);
	}
	switch (w->kind) {
	case W_MANIFEST_PUT: {
		char digest[DIGEST_STR_SIZE];
		const char *ct = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
		if (w->len == 0) {
			rs_err_set(&err, RS_BAD_INPUT, "empty manifest body");
			return fail(rq, w, &err, 0, false);
		}
		const struct rs_gate_policy *gp = gate_policy_find(ph->cfg->push.policies, ph->cfg->push.policy_count, w->name);
		if (gp)
			return gated_manifest_put(ph, rq, w, gp, ct);
		if (push_put_manifest(ph->push, w->name, w->ref, ct, w->buf, w->len, digest, &err) != RS_OK)
			return fail(rq, w, &err, 0, false);
		char loc[RS_LIMIT_NAME_MAX + DIGEST_STR_SIZE + 32];
		snprintf(loc, sizeof(loc), "/v2/%s/manifests/%s", w->name, digest);
		struct hdr h[] = {{"Location", loc}, {"Docker-Content-Digest", digest}};
		char shown[RS_LIMIT_NAME_MAX + RS_LIMIT_TAG_MAX + DIGEST_STR_SIZE];
		ref_text(shown, sizeof(shown), w->name, w->ref);
		log_event(LOG_INFO, "pushed %s (%s)", shown, digest);
		return reply(rq, 201, NULL, NULL, h, 2);
	}
	case W_UPLOAD_START: {
		const char *dg = arg(rq, "digest");
		if (!dg) {
			uint64_t size = push_upload_size(w->u);
			push_upload_close(w->u);
			w->u = NULL;
			return upload_accepted(rq, w, 202, size);
		}
		struct push_upload *u = w->u;
		w->u = NULL;
		if (push_upload_commit(u, dg, &err) != RS_OK)
			return fail(rq, w, &err, 0, false);
		return blob_created(rq, w, dg);
	}
	case W_UPLOAD_PATCH: {
		uint64_t size = push_upload_size(w->u);
		push_upload_close(w->u);
		w->u = NULL;
		return upload_accepted(rq, w, 202, size);
	}
	case W_UPLOAD_STATUS: {
		uint64_t size = push_upload_size(w->u);
		push_upload_close(w->u);
		w->u = NULL;
		return upload_accepted(rq, w, 204, size);
	}
	case W_UPLOAD_DELETE:
		push_upload_cancel(w->u);
		w->u = NULL;
		return reply(rq, 204, NULL, NULL, NULL, 0);
	case W_UPLOAD_PUT: {
		const char *dg = arg(rq, "digest");
		struct push_upload *u = w->u;
		uint64_t size = push_upload_size(u);
		w->u = NULL;
		if (push_upload_commit(u, dg, &err) != RS_OK)
			return fail(rq, w, &err, size, false);
		log_event(LOG_DEBUG, "blob %s pushed to %s (%llu bytes)", dg, w->name, (unsigned long long)size);
		return blob_created(rq, w, dg);
	}
	default:
		return reply_error(rq, 404, "NOT_FOUND", "no such endpoint", NULL, 0);
	}
}
