/* upstream_push: the push client towards the upstream registry (see
 * upstream_push.h), on top of the transfer core (xfer.h), which owns the
 * libcurl handles, the bodies and the auth handshake. This file decides what
 * to send: the GET /v2/ probe that learns the upstream's challenge once, the
 * blob HEAD / mount / POST + PUT sequence, manifest PUTs, the walk of an image
 * (config/imagejson.h) and what each answer means, in messages that start
 * with "upstream <name>: ". Upload bodies stream from a file descriptor
 * (small documents regslim makes, such as signatures, are sent from
 * memory); answers are kept only up to a small cap (error messages). Never
 * logs secrets. */
#include "upstream_push.h"

#include "digest.h"
#include "imagewalk.h"
#include "rs_limits.h"
#include "upstream_auth.h"
#include "xfer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UA "regslim-push/1"

struct upstream_push {
	const struct rs_upstream_config *up;
	struct xfer_peer *peer;
	bool probed; /* GET /v2/ done */
	unsigned uploaded, skipped, manifests;
};

/* The push side's words for failures below HTTP and token refusals. */
static enum rs_code word(struct rs_err *err, enum rs_code code, const struct xfer_fault_info *f)
{
	const char *name = f->cfg->name;
	switch (f->fault) {
	case XFER_FAULT_STALLED:
		return rs_err_set(err, code, "upstream %s: %s: timed out (no progress for %ld s)", name, f->what,
				  f->timeout_s);
	case XFER_FAULT_TRANSPORT:
		return rs_err_set(err, code, "upstream %s: %s: %s", name, f->what,
				  f->curl_detail[0] ? f->curl_detail : f->curl_error);
	case XFER_FAULT_TOKEN:
		break;
	}
	return rs_err_set(err, code, "upstream %s: token endpoint answered %ld for scope %s%s", name, f->status,
			  f->scope, f->status == 401 ? " (check the upstream's username and password)" : "");
}

enum rs_code upstream_push_new(struct upstream_push **out, const struct rs_upstream_config *up, struct rs_err *err)
{
	*out = NULL;
	struct upstream_push *u = calloc(1, sizeof(*u));
	if (!u)
		return rs_err_set(err, RS_NOMEM, "out of memory starting an upstream push");
	enum rs_code rc = xfer_peer_new(&u->peer, up, UA, word, err);
	if (rc) {
		free(u);
		return rc;
	}
	u->up = up;
	*out = u;
	return RS_OK;
}

void upstream_push_free(struct upstream_push *u)
{
	if (!u)
		return;
	xfer_peer_free(u->peer);
	free(u);
}

void upstream_push_counts(const struct upstream_push *u, unsigned *uploaded, unsigned *skipped, unsigned *manifests)
{
	*uploaded = u->uploaded;
	*skipped = u->skipped;
	*manifests = u->manifests;
}

/* ---- one request ---- */

/* The registry's error message from a body, for our message. */
static const char *reason(const struct xfer_answer *a)
{
	const char *m = a->body ? strstr(a->body, "\"message\"") : NULL;
	static __thread char out[160];
	if (m) {
		m = strchr(m + 9, '"');
		if (m) {
			size_t i = 0;
			for (m++; *m && *m != '"' && i + 1 < sizeof(out); m++)
				out[i++] = (unsigned char)*m < 0x20 ? '?' : *m;
			out[i] = '\0';
			return out;
		}
	}
	return "";
}

/* Learn the challenge from GET /v2/, once. */
static enum rs_code probe(struct upstream_push *u, struct rs_err *err)
{
	if (u->probed)
		return RS_OK;
	long status = 0;
	enum upstream_auth_scheme scheme;
	enum rs_code rc = xfer_probe(u->peer, &status, &scheme, err);
	if (rc == RS_OK && status != 200 && !(status == 401 && scheme != UPSTREAM_AUTH_NONE))
		rc = rs_err_set(err, RS_UPSTREAM, "upstream %s: GET /v2/ answered %ld", u->up->name, status);
	if (rc == RS_OK)
		u->probed = true;
	return rc;
}

/* What to send besides the method and URL. */
struct body {
	const char *content_type;
	const char *mem; /* or fd */
	int fd;
	uint64_t size;
	upstream_push_read_fn read; /* or a body of unknown length (PATCH) */
	void *arg;
};

/* A request with regslim's credentials (a 401 is retried once by the core):
 * any answer but a final 401 is RS_OK with *a holding it. */
static enum rs_code request(struct upstream_push *u, struct xfer_answer *a, enum xfer_method m, const char *url,
			    const struct body *b, const char *scope, const char *what, struct rs_err *err)
{
	enum rs_code rc = probe(u, err);
	if (rc)
		return rc;
	struct xfer_request r = {.method = m, .url = url, .what = what, .scope = scope, .auth = XFER_AUTH_PROBED,
				 .sink = XFER_SINK_MEMORY, .max_bytes = RS_LIMIT_ERROR_BODY_MAX_BYTES,
				 .timeout_code = RS_UPSTREAM, .fd = -1};
	if (b) {
		r.content_type = b->content_type;
		r.body = b->mem;
		r.fd = b->fd;
		r.body_size = b->size;
		r.body_fn = b->read;
		r.body_arg = b->arg;
	}
	rc = xfer_run(u->peer, &r, a, err);
	if (rc == RS_OK && a->status == 401)
		rc = rs_err_set(err, RS_UPSTREAM, "upstream %s: %s: 401 unauthorized with regslim's credentials%s%s",
				u->up->name, what, a->body_len ? ": " : "", reason(a));
	return rc;
}

static enum rs_code bad_status(struct upstream_push *u, const struct xfer_answer *a, const char *what,
			       struct rs_err *err)
{
	const char *why = reason(a);
	return rs_err_set(err, RS_UPSTREAM, "upstream %s: %s answered %ld%s%s", u->up->name, what, a->status,
			  why[0] ? ": " : "", why);
}

/* A new string from fmt (free()); NULL when out of memory. */
RS_PRINTF(1, 2) static char *fmt_new(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
	if (!s)
		return NULL;
	va_start(ap, fmt);
	(void)vsnprintf(s, (size_t)n + 1, fmt, ap); /* sized by the first pass */
	va_end(ap);
	return s;
}

/* The answer's Docker-Content-Digest, when it has one, must be want. */
static enum rs_code check_digest(struct upstream_push *u, const struct xfer_answer *a, const char *what,
				 const char *want, struct rs_err *err)
{
	if (!a->digest_header || strcmp(a->digest_header, want) == 0)
		return RS_OK;
	return rs_err_set(err, RS_UPSTREAM, "upstream %s: %s: the upstream stored %.80s instead of %s", u->up->name,
			  what, a->digest_header, want);
}

/* The upload URL of a 202 answer to post: its Location (absolute, or relative
 * to post) on the upstream's own origin, into *out (free()). */
static enum rs_code upload_location(struct upstream_push *u, char **out, const struct xfer_answer *a,
				    const char *post, const char *what, struct rs_err *err)
{
	*out = NULL;
	if (!a->location)
		return rs_err_set(err, RS_UPSTREAM, "upstream %s: %s answered 202 without a Location header",
				  u->up->name, what);
	struct rs_err lerr = {0};
	if (upstream_auth_resolve_url(out, post, a->location, &lerr) != RS_OK)
		return rs_err_set(err, lerr.code == RS_NOMEM ? RS_NOMEM : RS_UPSTREAM, "upstream %s: %s: %s",
				  u->up->name, what, lerr.msg);
	if (!upstream_auth_same_origin(*out, u->up->url)) {
		free(*out);
		*out = NULL;
		return rs_err_set(err, RS_UPSTREAM,
				  "upstream %s: %s: upload Location is on another origin; not sending credentials there",
				  u->up->name, what);
	}
	return RS_OK;
}

/* POST an upload for digest into repo, or a mount from `from`: *out_loc is
 * the upload URL (free()), NULL when the upstream mounted the blob. */
static enum rs_code upload_start(struct upstream_push *u, char **out_loc, const char *repo, const char *digest,
				 const char *from, const char *scope, struct rs_err *err)
{
	*out_loc = NULL;
	char what[400];
	bool mount = from && strcmp(from, repo) != 0;
	char *mscope = mount ? fmt_new("%s repository:%s:pull", scope, from) : NULL;
	char *post = mount ? fmt_new("%s/v2/%s/blobs/uploads/?mount=%s&from=%s", u->up->url, repo, digest, from)
			   : fmt_new("%s/v2/%s/blobs/uploads/", u->up->url, repo);
	if (mount)
		snprintf(what, sizeof(what), "mount %s from %s into %s", digest, from, repo);
	else
		snprintf(what, sizeof(what), "POST /v2/%s/blobs/uploads/", repo);
	struct xfer_answer a = {0};
	enum rs_code rc = RS_OK;
	if (!post || (mount && !mscope))
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
	else
		rc = request(u, &a, XFER_POST, post, NULL, mount ? mscope : scope, what, err);
	if (rc == RS_OK && mount && a.status == 201)
		u->skipped++;
	else if (rc == RS_OK && a.status != 202)
		rc = bad_status(u, &a, what, err);
	else if (rc == RS_OK)
		rc = upload_location(u, out_loc, &a, post, what, err);
	xfer_answer_dispose(&a);
	free(post);
	free(mscope);
	return rc;
}

/* Where the bytes of a blob come from: src (a file descriptor it opens), or
 * mem[0..len) when src is NULL. */
struct blob_bytes {
	const struct upstream_push_source *src;
	const void *mem;
	size_t len;
};

/* PUT the bytes of digest (from bb) to the upload URL loc. */
static enum rs_code upload_put(struct upstream_push *u, const char *repo, const char *digest, const char *loc,
			       const struct blob_bytes *bb, const char *scope, struct rs_err *err)
{
	struct body b = {.content_type = "application/octet-stream", .fd = -1};
	char *put = NULL;
	char what[400];
	struct xfer_answer a = {0};
	enum rs_code rc = RS_OK;
	if (bb->src)
		rc = bb->src->open_blob(bb->src->ctx, digest, &b.fd, &b.size, err);
	else
		b.mem = bb->mem, b.size = bb->len;
	if (rc)
		return rc;
	if (!(put = fmt_new("%s%sdigest=%s", loc, strchr(loc, '?') ? "&" : "?", digest))) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
		goto out;
	}
	snprintf(what, sizeof(what), "PUT blob %s (%llu bytes) to %s", digest, (unsigned long long)b.size, repo);
	if ((rc = request(u, &a, XFER_PUT, put, &b, scope, what, err)))
		goto out;
	if (a.status != 201)
		rc = bad_status(u, &a, what, err);
	else
		rc = check_digest(u, &a, what, digest, err);
out:
	xfer_answer_dispose(&a);
	free(put);
	if (b.fd >= 0)
		close(b.fd);
	return rc;
}

/* upstream_push_blob with the bytes of bb. */
static enum rs_code push_blob(struct upstream_push *u, const char *repo, const char *digest,
			      const struct blob_bytes *bb, const char *from, bool *out_sent, struct rs_err *err)
{
	if (out_sent)
		*out_sent = false;
	char what[400];
	char *scope = fmt_new("repository:%s:pull,push", repo);
	char *url = fmt_new("%s/v2/%s/blobs/%s", u->up->url, repo, digest);
	char *loc = NULL;
	struct xfer_answer a = {0};
	enum rs_code rc = RS_OK;
	if (!scope || !url) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
		goto out;
	}
	snprintf(what, sizeof(what), "HEAD /v2/%s/blobs/%s", repo, digest);
	if ((rc = request(u, &a, XFER_HEAD, url, NULL, scope, what, err)))
		goto out;
	if (a.status == 200) {
		u->skipped++;
		goto out;
	}
	if ((rc = upload_start(u, &loc, repo, digest, from, scope, err)) || !loc)
		goto out; /* failed, or mounted */
	if ((rc = upload_put(u, repo, digest, loc, bb, scope, err)))
		goto out;
	u->uploaded++;
	if (out_sent)
		*out_sent = true;
out:
	xfer_answer_dispose(&a);
	free(loc);
	free(url);
	free(scope);
	return rc;
}

enum rs_code upstream_push_blob(struct upstream_push *u, const char *repo, const char *digest,
				const struct upstream_push_source *src, const char *from, bool *out_sent,
				struct rs_err *err)
{
	const struct blob_bytes bb = {.src = src};
	return push_blob(u, repo, digest, &bb, from, out_sent, err);
}

enum rs_code upstream_push_blob_bytes(struct upstream_push *u, const char *repo, const void *buf, size_t len,
				      char out[DIGEST_STR_SIZE], struct rs_err *err)
{
	digest_buffer(out, buf, len);
	const struct blob_bytes bb = {.mem = buf, .len = len};
	return push_blob(u, repo, out, &bb, NULL, NULL, err);
}

/* ---- staged blobs ---- */

struct upstream_push_stage {
	struct upstream_push *u;
	char *repo, *scope, *loc;
};

void upstream_push_stage_close(struct upstream_push_stage *st, bool cancel)
{
	if (!st)
		return;
	if (cancel && st->loc) {
		char what[400];
		struct xfer_answer a = {0};
		struct rs_err err = {0};
		snprintf(what, sizeof(what), "DELETE upload of %s", st->repo);
		(void)request(st->u, &a, XFER_DELETE, st->loc, NULL, st->scope, what, &err); /* best effort */
		xfer_answer_dispose(&a);
	}
	free(st->loc);
	free(st->scope);
	free(st->repo);
	free(st);
}

enum rs_code upstream_push_stage_open(struct upstream_push *u, const char *repo, struct upstream_push_stage **out,
				      struct rs_err *err)
{
	*out = NULL;
	struct upstream_push_stage *st = calloc(1, sizeof(*st));
	if (!st || !(st->repo = strdup(repo)) || !(st->scope = fmt_new("repository:%s:pull,push", repo))) {
		upstream_push_stage_close(st, false);
		return rs_err_set(err, RS_NOMEM, "out of memory");
	}
	st->u = u;
	enum rs_code rc = upload_start(u, &st->loc, repo, "", NULL, st->scope, err);
	if (rc == RS_OK && !st->loc)
		rc = rs_err_set(err, RS_UPSTREAM, "upstream %s: POST /v2/%s/blobs/uploads/ gave no upload", u->up->name, repo);
	if (rc) {
		upstream_push_stage_close(st, false);
		return rc;
	}
	*out = st;
	return RS_OK;
}

enum rs_code upstream_push_stage_fill(struct upstream_push_stage *st, upstream_push_read_fn read, void *arg,
				      bool *refused, struct rs_err *err)
{
	if (refused)
		*refused = false;
	char what[400];
	snprintf(what, sizeof(what), "PATCH upload of %s", st->repo);
	struct body b = {.content_type = "application/octet-stream", .fd = -1, .read = read, .arg = arg};
	struct xfer_answer a = {0};
	enum rs_code rc = request(st->u, &a, XFER_PATCH, st->loc, &b, st->scope, what, err);
	if (rc == RS_OK && a.status != 202) {
		if (refused)
			*refused = a.status >= 400 && a.status < 500 && a.status != 401 && a.status != 403 && a.status != 429;
		rc = bad_status(st->u, &a, what, err);
	}
	char *next = NULL;
	if (rc == RS_OK && a.location && (rc = upload_location(st->u, &next, &a, st->loc, what, err)) == RS_OK) {
		free(st->loc);
		st->loc = next;
	}
	xfer_answer_dispose(&a);
	return rc;
}

enum rs_code upstream_push_stage_commit(struct upstream_push_stage *st, const char *digest, struct rs_err *err)
{
	char what[400];
	snprintf(what, sizeof(what), "PUT staged blob %s to %s", digest, st->repo);
	char *put = fmt_new("%s%sdigest=%s", st->loc, strchr(st->loc, '?') ? "&" : "?", digest);
	if (!put)
		return rs_err_set(err, RS_NOMEM, "out of memory");
	struct body b = {.content_type = "application/octet-stream", .mem = "", .fd = -1};
	struct xfer_answer a = {0};
	enum rs_code rc = request(st->u, &a, XFER_PUT, put, &b, st->scope, what, err);
	if (rc == RS_OK && a.status != 201)
		rc = bad_status(st->u, &a, what, err);
	else if (rc == RS_OK)
		rc = check_digest(st->u, &a, what, digest, err);
	if (rc == RS_OK) {
		st->u->uploaded++;
		free(st->loc); /* done: nothing left to cancel */
		st->loc = NULL;
	}
	xfer_answer_dispose(&a);
	free(put);
	return rc;
}

enum rs_code upstream_push_manifest(struct upstream_push *u, const char *repo, const char *ref, const char *media_type,
				    const char *body, size_t len, struct rs_err *err)
{
	char what[400], want[DIGEST_STR_SIZE];
	snprintf(what, sizeof(what), "PUT /v2/%s/manifests/%s", repo, ref);
	char *scope = fmt_new("repository:%s:pull,push", repo);
	char *url = fmt_new("%s/v2/%s/manifests/%s", u->up->url, repo, ref);
	struct body b = {.content_type = media_type, .mem = body, .fd = -1, .size = len};
	struct xfer_answer a = {0};
	enum rs_code rc = RS_OK;
	if (!scope || !url)
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
	else
		rc = request(u, &a, XFER_PUT, url, &b, scope, what, err);
	if (rc == RS_OK && a.status != 201 && a.status != 200)
		rc = bad_status(u, &a, what, err);
	if (rc == RS_OK) {
		/* the upstream must have stored these bytes, not a conversion of them */
		digest_buffer(want, body, len);
		rc = check_digest(u, &a, what, want, err);
	}
	if (rc == RS_OK)
		u->manifests++;
	xfer_answer_dispose(&a);
	free(url);
	free(scope);
	return rc;
}

/* The walk of upstream_push_image: each manifest's config and (distributable)
 * layers, then the manifest; an index's images, then the index (by digest
 * below the root, by ref at the root); one level of index. */
struct tree_walk {
	struct upstream_push *u;
	const char *repo, *ref;
	const struct upstream_push_source *src;
};

static enum rs_code tree_load(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len, char **mt,
			      struct rs_err *err)
{
	const struct tree_walk *w = ctx;
	return w->src->read_manifest(w->src->ctx, n->digest, buf, len, mt, err);
}

static enum rs_code tree_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
			       enum imagewalk_step *step, struct rs_err *err)
{
	(void)step;
	const struct tree_walk *w = ctx;
	const char *lmt = n->media_type ? n->media_type : "";
	switch (ev) {
	case IMAGEWALK_LOADED:
		if (n->kind == IMAGEWALK_INDEX && n->depth > 0)
			return rs_err_set(err, RS_BAD_INPUT, "nested index %s is not supported for upstream pushes",
					  n->digest);
		return RS_OK;
	case IMAGEWALK_REF:
		if (n->kind == IMAGEWALK_ENTRY ||
		    (n->kind == IMAGEWALK_LAYER && (strstr(lmt, "nondistributable") || strstr(lmt, "foreign"))))
			return RS_OK;
		return upstream_push_blob(w->u, w->repo, n->digest, w->src, NULL, NULL, err);
	case IMAGEWALK_LEAVE:
		return upstream_push_manifest(w->u, w->repo, n->depth ? n->digest : w->ref, n->media_type, n->buf,
					      n->len, err);
	default:
		return RS_OK;
	}
}

enum rs_code upstream_push_image(struct upstream_push *u, const char *repo, const char *ref, const char *digest,
				 const struct upstream_push_source *src, struct rs_err *err)
{
	struct tree_walk w = {u, repo, ref, src};
	const struct imagewalk walk = {.load = tree_load, .visit = tree_visit, .ctx = &w,
				       .manifest_what = "manifest", .index_what = "index"};
	return imagewalk_run(&walk, digest, err);
}
