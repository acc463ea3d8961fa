/* uploads: the write routes of the Distribution API over libmicrohttpd
 * (push_http.h: push_http_is_write, push_http_body, push_http_handle).
 *
 * Routes (name is the repository as the client writes it):
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
 *   DELETE /v2/<name>/manifests/<ref>, /v2/<name>/blobs/<digest>  202 (deletes.c)
 * setup() prepares every kind through one table (write_kinds): the same
 * steps in the same order (route, name, deletes disabled without auth, push permission, the
 * kind's own step, the upload session, the chunk's Content-Range).
 * Bodies stream into the store's upload sessions (store.h) as MHD hands them over; an error found while
 * the body is still arriving (too large, out-of-order chunk, no
 * permission) is answered at once and MHD closes the connection.
 *
 * Status codes and registry error codes come from reply_map_error() (one
 * table, the spec's "Error Codes" only) and every answer goes out through
 * reply.h; the headers specific to a route are decided here. docs/push.md
 * has the spec conformance table. */
#include "api_int.h"

#include "digest.h"
#include "gate_fwd.h"
#include "gate_policy.h"
#include "gate_scan.h"
#include "gate_stage.h"
#include "log.h"
#include "push_http.h"
#include "refindex.h"
#include "refname.h"
#include "reply.h"
#include "rs_limits.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void wreq_free(void *state);

/* ------------------------------------------------------------ replies */

static void range_value(char *out, size_t cap, uint64_t size)
{
	snprintf(out, cap, "0-%llu", (unsigned long long)(size ? size - 1 : 0));
}

static void upload_location(char *out, size_t cap, const char *name, const char *uuid)
{
	snprintf(out, cap, "/v2/%s/blobs/uploads/%s", name, uuid);
}

static enum MHD_Result fail_as(struct request *rq, const struct wreq *w, enum reply_what what,
                               const struct rs_err *err, uint64_t size, bool with_range)
{
	if (reply_map_error(err->code, what).status >= 500)
		log_event(LOG_ERROR, "%s %s: %s", rq->method, rq->url, err->msg);
	char loc[RS_LIMIT_NAME_MAX + 96], range[48];
	upload_location(loc, sizeof(loc), w->name, w->uuid);
	range_value(range, sizeof(range), size);
	struct reply_header h[] = {{"Location", loc}, {"Range", range}, {"Docker-Upload-UUID", w->uuid}};
	return reply_fail(rq, err, what, h, with_range && w->uuid[0] ? 3 : 0);
}

enum MHD_Result api_fail(struct request *rq, const struct wreq *w, const struct rs_err *err, uint64_t size,
                            bool with_range)
{
	return fail_as(rq, w, w->kind == W_MANIFEST_PUT ? REPLY_MANIFEST_PUT : REPLY_UPLOAD, err, size, with_range);
}

/* Answer now, while the body may still be arriving; later pieces are dropped. */
static enum MHD_Result fail_early(struct request *rq, struct wreq *w, const struct rs_err *err, uint64_t size,
                                  bool with_range)
{
	rq->answered = true;
	return api_fail(rq, w, err, size, with_range);
}

static enum MHD_Result upload_accepted(struct request *rq, const struct wreq *w, unsigned status, uint64_t size)
{
	char loc[RS_LIMIT_NAME_MAX + 96], range[48];
	upload_location(loc, sizeof(loc), w->name, w->uuid);
	range_value(range, sizeof(range), size);
	struct reply_header h[] = {{"Location", loc}, {"Range", range}, {"Docker-Upload-UUID", w->uuid}};
	return reply_empty(rq, status, h, 3);
}

static enum MHD_Result blob_created(struct request *rq, const struct wreq *w, const char *digest)
{
	char loc[RS_LIMIT_NAME_MAX + DIGEST_STR_SIZE + 32];
	snprintf(loc, sizeof(loc), "/v2/%s/blobs/%s", w->name, digest);
	struct reply_header h[] = {{"Location", loc}, {"Docker-Content-Digest", digest}};
	return reply_empty(rq, 201, h, 2);
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
		if (strlen(rest + 1) != STORE_UUID_SIZE - 1)
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
	store_upload_close(w->u); /* a broken connection keeps the bytes so far: resumable */
	reply_kept_dispose(&w->kept);
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

/* ------------------------------------------------------------ setup */

/* The steps of setup that belong to one kind: true to go on, false when
 * the request was answered (*ret). */
typedef bool (*setup_fn)(struct push_http *ph, struct request *rq, struct wreq *w, enum MHD_Result *ret);

/* Manifest PUT: the reference must be a digest or a tag. Distribution spec,
 * "Pulling manifests": a reference is a digest or a tag of at most 128
 * characters matching [a-zA-Z0-9_][a-zA-Z0-9._-]*; the error codes of
 * "Error Codes" only (no TAG_INVALID there). */
static bool setup_manifest_ref(struct push_http *ph, struct request *rq, struct wreq *w, enum MHD_Result *ret)
{
	(void)ph;
	struct rs_err err = {0};
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

static const struct rs_gate_policy *push_policy(const struct push_http *ph, const char *repo)
{
	return gate_policy_find(ph->cfg->push.policies, ph->cfg->push.policy_count, repo);
}

/* A blob now in repo: under a push policy, its layer scan starts now
 * (gate_scan.h), so the manifest PUT only joins results; scanned is true
 * when its scan is stored already. Then it is queued for the upstream
 * (gate_fwd.h: when the mode sends the original and its scan is clean). */
static void queue_scan(struct push_http *ph, const char *repo, const char *digest, bool scanned, bool staged)
{
	if (!ph->scans)
		return;
	const struct rs_gate_policy *p = push_policy(ph, repo);
	if (!scanned)
		gate_scan_queue(ph->scans, p, digest);
	if (!staged) /* a stage sends it on already (gate_stage.h) */
		gate_fwd_queue(ph->fwd, p, repo, digest);
}

/* An upload committed as digest (size bytes): the scan its bytes went
 * through as they arrived gives the layer's result, else the layer is
 * queued for a scan now (gate_scan.h). */
static void upload_done(struct push_http *ph, const struct wreq *w, uint64_t size, const char *digest)
{
	bool scanned = gate_scan_commit(ph->scans, w->uuid, size, digest);
	queue_scan(ph, w->name, digest, scanned, gate_stage_commit(ph->stages, w->uuid, size, digest));
}

/* POST .../blobs/uploads/: a mount when it can be one, else a new upload
 * session (with ?digest=, a monolithic upload: the digest must parse). */
static bool setup_upload_start(struct push_http *ph, struct request *rq, struct wreq *w, enum MHD_Result *ret)
{
	struct rs_err err = {0};
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
		api_client_addr(rq, addr, sizeof(addr));
		struct auth_client client = {.addr = addr};
		if (ph->auth)
			auth_decide(ph->auth,
			            MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
			            &client, from, AUTH_PULL, time(NULL), &d);
		if (d.verdict == AUTH_ALLOW && store_pushed_mount(ph->store, w->name, from, mount, &err) == RS_OK) {
			log_event(LOG_DEBUG, "blob %s mounted from %s into %s", mount, from, w->name);
			queue_scan(ph, w->name, mount, false, false);
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
	if (store_upload_start(ph->store, w->name, w->uuid, &err) != RS_OK) {
		rq->answered = true;
		*ret = fail_as(rq, w, REPLY_UPLOAD_START, &err, 0, false);
		return false;
	}
	return true;
}

/* PUT .../blobs/uploads/<uuid>: the ?digest= it is committed under. */
static bool setup_upload_digest(struct push_http *ph, struct request *rq, struct wreq *w, enum MHD_Result *ret)
{
	(void)ph;
	struct rs_err err = {0};
	const char *dg = arg(rq, "digest");
	if (!dg)
		rs_err_set(&err, RS_DIGEST_INVALID, "PUT of an upload needs ?digest=");
	if (!dg || digest_parse(dg, &err) != RS_OK) {
		*ret = fail_early(rq, w, &err, 0, false);
		return false;
	}
	return true;
}

/* A chunk's Content-Range: it starts where the upload stands and agrees
 * with Content-Length; it bounds what the request may append (w->limit). */
static bool setup_chunk_range(struct request *rq, struct wreq *w, enum MHD_Result *ret)
{
	struct rs_err err = {0};
	uint64_t size = store_upload_size(w->u);
	const char *cr = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_RANGE);
	if (!cr)
		return true;
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
	return true;
}

/* Every write kind and what setup does for it. */
static const struct write_kind {
	const char *route;   /* rq->route, for logs and metrics */
	setup_fn check;      /* the kind's own step after the push gate; NULL: none */
	bool upload;         /* works on an upload session, opened here */
	bool chunk;          /* carries a chunk: its Content-Range is checked */
} write_kinds[] = {
	[W_NONE] = {"upload", NULL, false, false}, /* never set up: no such endpoint */
	[W_UPLOAD_START] = {"upload", setup_upload_start, true, false},
	[W_UPLOAD_PATCH] = {"upload", NULL, true, true},
	[W_UPLOAD_PUT] = {"upload", setup_upload_digest, true, true},
	[W_UPLOAD_STATUS] = {"upload", NULL, true, false},
	[W_UPLOAD_DELETE] = {"upload", NULL, true, false},
	[W_MANIFEST_PUT] = {"manifest", setup_manifest_ref, false, false},
	[W_MANIFEST_DELETE] = {"manifest", NULL, false, false},
	[W_BLOB_DELETE] = {"blob", NULL, false, false},
};

/* Gate, validate and open what the request needs, by write_kinds: the same
 * steps in the same order for every kind (route; repository name; a
 * delete without an auth section, disabled; push permission; the kind's own
 * step; the upload session; the chunk's range). Answers on failure. */
static bool setup(struct push_http *ph, struct request *rq, struct wreq *w, enum MHD_Result *ret)
{
	const struct write_kind *k = &write_kinds[w->kind];
	struct rs_err err = {0};
	w->limit = UINT64_MAX;
	rq->route = k->route;
	if (!refname_repo_valid(w->name)) {
		rq->answered = true;
		rs_err_set(&err, RS_BAD_INPUT, "invalid repository name '%.200s'", w->name);
		*ret = reply_error(rq, RS_BAD_INPUT, REPLY_OTHER, err.msg, NULL, 0);
		return false;
	}
	if ((w->kind == W_MANIFEST_DELETE || w->kind == W_BLOB_DELETE) && !ph->auth) {
		rq->answered = true;
		*ret = api_delete_disabled(ph, rq, w);
		return false;
	}
	if (!push_http_gate(ph, rq, w->name, AUTH_PUSH, ret))
		return false;
	if (k->check && !k->check(ph, rq, w, ret))
		return false;
	if (!k->upload)
		return true;
	if (!w->uuid[0]) {
		rs_err_set(&err, RS_NOT_FOUND, "unknown upload '%.60s'", w->ref);
		*ret = fail_early(rq, w, &err, 0, false);
		return false;
	}
	if (store_upload_open(ph->store, w->name, w->uuid, &w->u, &err) != RS_OK) {
		*ret = fail_early(rq, w, &err, 0, false);
		return false;
	}
	return !k->chunk || setup_chunk_range(rq, w, ret);
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

static enum MHD_Result body_piece(struct push_http *ph, struct request *rq, struct wreq *w, const char *data,
                                  size_t len);

enum MHD_Result push_http_body(struct push_http *ph, struct request *rq, const char *data, size_t len)
{
	bool fresh;
	struct wreq *w = wreq_of(rq, &fresh);
	if (!w)
		return MHD_NO;
	if (rq->answered || w->kind == W_NONE || w->kept.set)
		return MHD_YES; /* discarded */
	/* Answers given while the body arrives wait until it was read
	 * (reply.h); push_http_handle sends them. */
	rq->hold = &w->kept;
	enum MHD_Result ret = body_piece(ph, rq, w, data, len);
	rq->hold = NULL;
	return ret;
}

static enum MHD_Result body_piece(struct push_http *ph, struct request *rq, struct wreq *w, const char *data,
                                  size_t len)
{
	enum MHD_Result ret = MHD_YES;
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
			return fail_early(rq, w, &err, store_upload_size(w->u), true);
		}
		if (w->limit != UINT64_MAX)
			w->limit -= len;
		uint64_t at = store_upload_size(w->u);
		if (store_upload_write(w->u, data, len, &err) != RS_OK)
			return fail_early(rq, w, &err, store_upload_size(w->u), err.code != RS_TOO_LARGE);
		if (ph->scans) { /* the layer is scanned, and sent on upstream, as it arrives */
			const struct rs_gate_policy *p = push_policy(ph, w->name);
			gate_scan_feed(ph->scans, p, w->uuid, at, data, len);
			gate_stage_feed(ph->stages, p, w->name, w->uuid, w->u, at, len);
		}
		return MHD_YES;
	default:
		return MHD_YES; /* GET/DELETE bodies are ignored */
	}
}

/* A chunk (or an upload's start) received: saved into the session for every
 * replica before the 202 (store_upload_save: a shared session's part); 416
 * when another request appended meanwhile. */
static enum MHD_Result chunk_saved(struct request *rq, struct wreq *w)
{
	struct rs_err err = {0};
	enum rs_code rc = store_upload_save(w->u, &err);
	uint64_t size = store_upload_size(w->u);
	store_upload_close(w->u);
	w->u = NULL;
	return rc ? api_fail(rq, w, &err, size, true) : upload_accepted(rq, w, 202, size);
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
	if (w->kept.set)
		return reply_send_kept(rq, &w->kept);
	if (w->kind == W_NONE)
		return reply_error(rq, RS_NOT_FOUND, REPLY_ENDPOINT, "no such endpoint", NULL, 0);
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
		uint64_t size = store_upload_size(w->u);
		store_upload_close(w->u);
		w->u = NULL;
		rs_err_set(&err, RS_RANGE, "the chunk ended %llu bytes short of its Content-Range; the upload has %llu bytes",
		           (unsigned long long)w->limit, (unsigned long long)size);
		return api_fail(rq, w, &err, size, true);
	}
	switch (w->kind) {
	case W_MANIFEST_PUT: {
		char digest[DIGEST_STR_SIZE];
		const char *ct = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
		if (w->len == 0) {
			rs_err_set(&err, RS_BAD_INPUT, "empty manifest body");
			return api_fail(rq, w, &err, 0, false);
		}
		const struct rs_gate_policy *gp = gate_policy_find(ph->cfg->push.policies, ph->cfg->push.policy_count, w->name);
		if (gp)
			return api_gated_manifest_put(ph, rq, w, gp, ct);
		if (store_pushed_put_manifest(ph->store, w->name, w->ref, ct, w->buf, w->len, digest, &err) != RS_OK)
			return api_fail(rq, w, &err, 0, false);
		char loc[RS_LIMIT_NAME_MAX + DIGEST_STR_SIZE + 32], subject[DIGEST_STR_SIZE];
		snprintf(loc, sizeof(loc), "/v2/%s/manifests/%s", w->name, digest);
		if (refindex_subject_of(subject, w->buf, w->len, &err) != RS_OK)
			subject[0] = '\0'; /* not reached: push_put_manifest checked it */
		struct reply_header h[] = {{"Location", loc},
		                           {"Docker-Content-Digest", digest},
		                           {"OCI-Subject", subject[0] ? subject : NULL}};
		char shown[RS_LIMIT_NAME_MAX + RS_LIMIT_TAG_MAX + DIGEST_STR_SIZE];
		api_ref_text(shown, sizeof(shown), w->name, w->ref);
		log_event(LOG_INFO, "pushed %s (%s)", shown, digest);
		return reply_empty(rq, 201, h, 3);
	}
	case W_UPLOAD_START: {
		const char *dg = arg(rq, "digest");
		if (!dg)
			return chunk_saved(rq, w);
		struct store_upload *u = w->u;
		uint64_t size = store_upload_size(u);
		w->u = NULL;
		if (store_upload_commit(u, dg, &err) != RS_OK) {
			gate_scan_forget(ph->scans, w->uuid);
			gate_stage_forget(ph->stages, w->uuid);
			return api_fail(rq, w, &err, 0, false);
		}
		upload_done(ph, w, size, dg);
		return blob_created(rq, w, dg);
	}
	case W_UPLOAD_PATCH:
		return chunk_saved(rq, w);
	case W_UPLOAD_STATUS: {
		uint64_t size = store_upload_size(w->u);
		store_upload_close(w->u);
		w->u = NULL;
		return upload_accepted(rq, w, 204, size);
	}
	case W_UPLOAD_DELETE:
		store_upload_cancel(w->u);
		w->u = NULL;
		gate_scan_forget(ph->scans, w->uuid);
		gate_stage_forget(ph->stages, w->uuid);
		return reply_empty(rq, 204, NULL, 0);
	case W_MANIFEST_DELETE:
	case W_BLOB_DELETE:
		return api_delete(ph, rq, w);
	case W_UPLOAD_PUT: {
		const char *dg = arg(rq, "digest");
		struct store_upload *u = w->u;
		uint64_t size = store_upload_size(u);
		w->u = NULL;
		if (store_upload_commit(u, dg, &err) != RS_OK) {
			gate_scan_forget(ph->scans, w->uuid);
			gate_stage_forget(ph->stages, w->uuid);
			return api_fail(rq, w, &err, size, false);
		}
		log_event(LOG_DEBUG, "blob %s pushed to %s (%llu bytes)", dg, w->name, (unsigned long long)size);
		upload_done(ph, w, size, dg);
		return blob_created(rq, w, dg);
	}
	default:
		return reply_error(rq, RS_NOT_FOUND, REPLY_ENDPOINT, "no such endpoint", NULL, 0);
	}
}
