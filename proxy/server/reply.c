/* reply: every HTTP answer, its common headers, the registry error JSON and
 * the table from enum rs_code to HTTP status and registry error code. See
 * reply.h. It talks to libmicrohttpd (responses), log.c (JSON escaping) and
 * http.c (the request, the TLS file reader); it knows no route. */
#include "reply.h"

#include "digest.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define JSON_TYPE "application/json"
/* Room for an error answer with an ordinary message (a struct rs_err's). */
#define ERROR_BODY_MAX 1024
/* What a streamed blob body is read in (and a HEAD's never-called reader). */
#define STREAM_BLOCK (64 * 1024)
#define HEAD_BLOCK 4096

/* ------------------------------------------------------------ the status table */

/* Every 4xx JSON body carries a code of the distribution spec's "Error
 * Codes" table (v1.1: "The code field MUST be one of the following"); 5xx
 * answers, which the spec leaves alone, keep distribution's UNKNOWN and
 * UNAVAILABLE. docs/conformance.md lists them.
 *
 * The write side (distribution spec, "Push"): codes for uploads and
 * manifest PUTs. */
static struct reply_status map_write_error(enum rs_code code, bool manifest)
{
	switch (code) {
	case RS_NOT_FOUND:
		return manifest ? (struct reply_status){400, "MANIFEST_BLOB_UNKNOWN"}
		                : (struct reply_status){404, "BLOB_UPLOAD_UNKNOWN"};
	case RS_DIGEST_MISMATCH:
	case RS_DIGEST_INVALID:
		return (struct reply_status){400, "DIGEST_INVALID"};
	case RS_UNSUPPORTED:
		return (struct reply_status){400, manifest ? "MANIFEST_INVALID" : "DIGEST_INVALID"};
	case RS_TOO_LARGE:
		return (struct reply_status){413, "SIZE_INVALID"};
	case RS_RANGE:
		return (struct reply_status){416, "BLOB_UPLOAD_INVALID"};
	case RS_BAD_INPUT:
		return (struct reply_status){400, manifest ? "MANIFEST_INVALID" : "BLOB_UPLOAD_INVALID"};
	case RS_POLICY: /* a push policy refused the image (docs/policy.md) */
		return (struct reply_status){403, "DENIED"};
	default:
		return (struct reply_status){500, "UNKNOWN"};
	}
}

/* The auth gate and the token endpoint (a token request refused for any
 * other reason is the client's 400 UNSUPPORTED; out of memory is ours). */
static struct reply_status map_auth_error(enum rs_code code)
{
	switch (code) {
	case RS_NOT_FOUND: /* no token endpoint configured */
		return (struct reply_status){404, "UNSUPPORTED"};
	case RS_UNSUPPORTED:
		return (struct reply_status){405, "UNSUPPORTED"};
	case RS_UNAUTHORIZED:
		return (struct reply_status){401, "UNAUTHORIZED"};
	case RS_DENIED:
	case RS_POLICY:
		return (struct reply_status){403, "DENIED"};
	case RS_THROTTLED:
		return (struct reply_status){429, "TOOMANYREQUESTS"};
	case RS_NOMEM:
		return (struct reply_status){500, "UNSUPPORTED"};
	default:
		return (struct reply_status){400, "UNSUPPORTED"};
	}
}

struct reply_status reply_map_error(enum rs_code code, enum reply_what what)
{
	if (code == RS_UNAVAILABLE) /* the store's backend is down: every route, the client may retry */
		return (struct reply_status){503, "UNAVAILABLE"};
	if (what == REPLY_UPLOAD_START && code == RS_TOO_LARGE)
		return (struct reply_status){429, "TOOMANYREQUESTS"};
	if (what == REPLY_UPLOAD || what == REPLY_UPLOAD_START || what == REPLY_MANIFEST_PUT)
		return map_write_error(code, what == REPLY_MANIFEST_PUT);
	if (what == REPLY_AUTH)
		return map_auth_error(code);
	if (what == REPLY_FORWARD)
		return (struct reply_status){code == RS_UPSTREAM ? 502 : 500, "UNAVAILABLE"};
	if (what == REPLY_ENDPOINT && code == RS_NOT_FOUND) /* no such path: the spec has no code of its own */
		return (struct reply_status){404, "UNSUPPORTED"};
	if (what == REPLY_ENDPOINT && code == RS_TOO_LARGE)
		return (struct reply_status){414, "NAME_INVALID"}; /* the request path */
	if ((what == REPLY_FRAMING || what == REPLY_QUERY) && code == RS_BAD_INPUT)
		return (struct reply_status){400, "UNSUPPORTED"};
	switch (code) {
	case RS_NOT_FOUND:
		return (struct reply_status){404, what == REPLY_MANIFEST ? "MANIFEST_UNKNOWN"
		                                  : what == REPLY_BLOB   ? "BLOB_UNKNOWN"
		                                                         : "NAME_UNKNOWN"};
	case RS_DIGEST_INVALID:
		return (struct reply_status){400, "DIGEST_INVALID"};
	case RS_DIGEST_MISMATCH:
		/* On the read side a mismatch is the upstream's fault: its bytes did
		 * not hash to what was asked for. */
		return (struct reply_status){502, "UNAVAILABLE"};
	case RS_BAD_INPUT:
		return (struct reply_status){400, what == REPLY_MANIFEST ? "MANIFEST_INVALID" : "NAME_INVALID"};
	case RS_TOO_LARGE:
		return (struct reply_status){413, "SIZE_INVALID"};
	case RS_UNAUTHORIZED:
		return (struct reply_status){401, "UNAUTHORIZED"};
	case RS_DENIED:
	case RS_POLICY:
		return (struct reply_status){403, "DENIED"};
	case RS_UNSUPPORTED:
		return (struct reply_status){405, "UNSUPPORTED"};
	case RS_RANGE:
		/* No code of the spec's table fits a Range beyond a blob: a plain
		 * text 416 (RFC 9110 15.5.17), as Go's http.ServeContent answers. */
		return (struct reply_status){416, NULL};
	case RS_UPSTREAM:
	case RS_TIMEOUT:
		return (struct reply_status){502, "UNAVAILABLE"};
	case RS_THROTTLED:
		return (struct reply_status){429, "TOOMANYREQUESTS"};
	case RS_NOMEM:
	case RS_IO:
	case RS_CONFIG:
	case RS_UNAVAILABLE:
	case RS_OK:
	case RS_CODE_COUNT:
		break;
	}
	return (struct reply_status){500, "UNKNOWN"};
}

bool reply_code_is_spec(const char *code)
{
	static const char *const spec[] = {"BLOB_UNKNOWN",          "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN",
	                                   "DIGEST_INVALID",        "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID",
	                                   "MANIFEST_UNKNOWN",      "NAME_INVALID",        "NAME_UNKNOWN",
	                                   "SIZE_INVALID",          "UNAUTHORIZED",        "DENIED",
	                                   "UNSUPPORTED",           "TOOMANYREQUESTS"};
	for (size_t i = 0; code && i < sizeof(spec) / sizeof(spec[0]); i++)
		if (strcmp(code, spec[i]) == 0)
			return true;
	return false;
}

/* ------------------------------------------------------------ queueing */

static bool is_head(const struct request *rq)
{
	return strcmp(rq->method, "HEAD") == 0;
}

/* Headers every answer carries: the API version and, when ?ns= chose the
 * upstream, OCI-Namespace naming it. */
static void common_headers(const struct request *rq, struct MHD_Response *resp)
{
	MHD_add_response_header(resp, "Docker-Distribution-API-Version", "registry/2.0");
	if (rq->oci_namespace)
		MHD_add_response_header(resp, "OCI-Namespace", rq->oci_namespace);
}

static void extra_headers(struct MHD_Response *resp, const struct reply_header *h, size_t nh)
{
	for (size_t i = 0; i < nh; i++)
		if (h[i].name && h[i].value)
			MHD_add_response_header(resp, h[i].name, h[i].value);
}

/* Queue resp (consumed) with status and record the status in rq. */
static enum MHD_Result queue(struct request *rq, unsigned status, struct MHD_Response *resp)
{
	rq->status = status;
	enum MHD_Result ret = MHD_queue_response(rq->conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* rq->hold is set: keep the answer there (an earlier kept one goes). */
static enum MHD_Result keep(struct request *rq, unsigned status, const char *type, const char *body, size_t len,
                            const struct reply_header *h, size_t nh)
{
	struct reply_kept *k = rq->hold;
	reply_kept_dispose(k);
	k->set = true;
	k->status = status;
	k->type = dup_or_null(type);
	if (body && (k->body = malloc(len + 1))) {
		memcpy(k->body, body, len);
		k->body[len] = '\0';
		k->len = len;
	}
	for (size_t i = 0; i < nh && k->n < REPLY_KEPT_HEADERS; i++) {
		if (!h[i].name || !h[i].value)
			continue;
		k->name[k->n] = strdup(h[i].name);
		k->value[k->n] = strdup(h[i].value);
		k->n++;
	}
	rq->answered = false; /* keep reading (and dropping) the body */
	return MHD_YES;
}

void reply_kept_dispose(struct reply_kept *k)
{
	free(k->type);
	free(k->body);
	for (size_t i = 0; i < k->n; i++) {
		free(k->name[i]);
		free(k->value[i]);
	}
	memset(k, 0, sizeof(*k));
}

enum MHD_Result reply_send_kept(struct request *rq, const struct reply_kept *k)
{
	struct reply_header h[REPLY_KEPT_HEADERS];
	for (size_t i = 0; i < k->n; i++)
		h[i] = (struct reply_header){k->name[i], k->value[i]};
	return reply_buffer(rq, k->status, k->type, k->body, k->body ? k->len : 0, REPLY_COPY, h, k->n);
}

enum MHD_Result reply_buffer(struct request *rq, unsigned status, const char *type, char *body, size_t len,
                             enum reply_mem mem, const struct reply_header *h, size_t nh)
{
	if (rq->hold) {
		enum MHD_Result ret = keep(rq, status, type, body, len, h, nh);
		if (mem == REPLY_OWNED)
			free(body);
		return ret;
	}
	enum MHD_ResponseMemoryMode mode = mem == REPLY_OWNED    ? MHD_RESPMEM_MUST_FREE
	                                   : mem == REPLY_STATIC ? MHD_RESPMEM_PERSISTENT
	                                                         : MHD_RESPMEM_MUST_COPY;
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, body ? (void *)body : (void *)"", mode);
	if (!resp) {
		if (mem == REPLY_OWNED)
			free(body);
		return MHD_NO;
	}
	if (type)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	common_headers(rq, resp);
	extra_headers(resp, h, nh);
	rq->body_bytes = is_head(rq) ? 0 : len;
	return queue(rq, status, resp);
}

enum MHD_Result reply_empty(struct request *rq, unsigned status, const struct reply_header *h, size_t nh)
{
	return reply_buffer(rq, status, NULL, NULL, 0, REPLY_COPY, h, nh);
}

/* ------------------------------------------------------------ manifests and blobs */

static void etag_of(char out[DIGEST_STR_SIZE + 2], const char *digest)
{
	snprintf(out, DIGEST_STR_SIZE + 2, "\"%s\"", digest);
}

enum MHD_Result reply_manifest(struct request *rq, char *body, size_t len, const char *type, const char *digest)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(resp, "Docker-Content-Digest", digest);
	common_headers(rq, resp);
	char etag[DIGEST_STR_SIZE + 2];
	etag_of(etag, digest);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
	rq->body_bytes = is_head(rq) ? 0 : len;
	return queue(rq, MHD_HTTP_OK, resp);
}

static void blob_headers(const struct request *rq, struct MHD_Response *resp, const struct reply_blob *b)
{
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
	MHD_add_response_header(resp, "Docker-Content-Digest", b->digest);
	common_headers(rq, resp);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
	char etag[DIGEST_STR_SIZE + 2];
	etag_of(etag, b->digest);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
	if (b->range->partial && b->size_known) {
		char cr[96];
		snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long)b->range->start,
		         (unsigned long long)b->range->end - 1, (unsigned long long)b->size);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_RANGE, cr);
	}
}

static unsigned blob_status(const struct reply_blob *b)
{
	return b->range->partial ? MHD_HTTP_PARTIAL_CONTENT : MHD_HTTP_OK;
}

enum MHD_Result reply_blob_fd(struct request *rq, const struct reply_blob *b, int fd, bool tls)
{
	uint64_t len = b->range->end - b->range->start;
	struct MHD_Response *resp = http_response_from_fd(fd, b->range->start, len, tls);
	if (!resp) {
		close(fd);
		return MHD_NO;
	}
	blob_headers(rq, resp, b);
	rq->body_bytes = is_head(rq) ? 0 : len;
	return queue(rq, blob_status(b), resp);
}

enum MHD_Result reply_blob_stream(struct request *rq, const struct reply_blob *b, MHD_ContentReaderCallback reader,
                                  void *cls, MHD_ContentReaderFreeCallback free_cls)
{
	uint64_t len = b->size_known ? b->range->end - b->range->start : MHD_SIZE_UNKNOWN;
	struct MHD_Response *resp = MHD_create_response_from_callback(len, STREAM_BLOCK, reader, cls, free_cls);
	if (!resp) {
		free_cls(cls);
		return MHD_NO;
	}
	blob_headers(rq, resp, b);
	rq->body_counted = true;
	return queue(rq, blob_status(b), resp);
}

/* Body reader of a HEAD answer: MHD never calls it for HEAD. */
static ssize_t no_body(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)cls;
	(void)pos;
	(void)buf;
	(void)max;
	return MHD_CONTENT_READER_END_WITH_ERROR;
}

enum MHD_Result reply_blob_head(struct request *rq, const struct reply_blob *b)
{
	/* A HEAD carries the size in Content-Length but no body: MHD sends
	 * headers only for HEAD, so the reader is never called. */
	uint64_t size = b->size_known ? b->size : MHD_SIZE_UNKNOWN;
	struct MHD_Response *resp = MHD_create_response_from_callback(size, HEAD_BLOCK, no_body, NULL, NULL);
	if (!resp)
		return MHD_NO;
	blob_headers(rq, resp, b);
	return queue(rq, MHD_HTTP_OK, resp);
}

/* ------------------------------------------------------------ registry errors */

/* The registry error JSON of code and msg into out (cap bytes, at least
 * 64): {"errors":[{"code":..,"message":..,"detail":{}}]} and a newline.
 * A message too long for cap is cut by log_json_escape, which says so.
 * Returns the length. */
static size_t error_json(char *out, size_t cap, const char *code, const char *msg)
{
	static const char tail[] = "\",\"detail\":{}}]}\n";
	int n = snprintf(out, cap, "{\"errors\":[{\"code\":\"%s\",\"message\":\"", code);
	size_t pos = n > 0 ? (size_t)n : 0;
	log_json_escape(out, cap - 32, &pos, msg);
	n = snprintf(out + pos, cap - pos, "%s", tail);
	return pos + (n > 0 ? (size_t)n : 0);
}

static void record_error(struct request *rq, const char *msg)
{
	free(rq->error);
	rq->error = strdup(msg);
}

/* The error answer with status and registry code (from the table); an
 * answer without a registry code is msg as plain text. */
static enum MHD_Result error_answer(struct request *rq, struct reply_status m, const char *msg,
                                    const struct reply_header *h, size_t nh)
{
	char body[ERROR_BODY_MAX];
	record_error(rq, msg);
	if (!m.code) {
		int n = snprintf(body, sizeof(body), "%s\n", msg);
		size_t len = n < 0 ? 0 : (size_t)n >= sizeof(body) ? sizeof(body) - 1 : (size_t)n;
		return reply_buffer(rq, m.status, "text/plain; charset=utf-8", body, len, REPLY_COPY, h, nh);
	}
	size_t len = error_json(body, sizeof(body), m.code, msg);
	return reply_buffer(rq, m.status, JSON_TYPE, body, len, REPLY_COPY, h, nh);
}

enum MHD_Result reply_error(struct request *rq, enum rs_code code, enum reply_what what, const char *msg,
                            const struct reply_header *h, size_t nh)
{
	return error_answer(rq, reply_map_error(code, what), msg, h, nh);
}

enum MHD_Result reply_fail(struct request *rq, const struct rs_err *err, enum reply_what what,
                           const struct reply_header *h, size_t nh)
{
	return reply_error(rq, err->code, what, err->msg[0] ? err->msg : rs_code_name(err->code), h, nh);
}

enum MHD_Result reply_error_passed(struct request *rq, enum rs_code code, enum reply_what what, char *body,
                                   size_t len, const char *msg)
{
	record_error(rq, msg);
	return reply_buffer(rq, reply_map_error(code, what).status, JSON_TYPE, body, len, REPLY_OWNED, NULL, 0);
}

enum MHD_Result reply_error_long(struct request *rq, enum rs_code code, enum reply_what what, const char *msg)
{
	struct reply_status m = reply_map_error(code, what);
	size_t cap = strlen(msg) * 6 + 128; /* "\u00XX" is the longest escape of a byte */
	char *body = m.code ? malloc(cap) : NULL;
	if (!body)
		return error_answer(rq, m, msg, NULL, 0); /* cut to fit, and says so */
	size_t len = error_json(body, cap, m.code, msg);
	record_error(rq, msg);
	return reply_buffer(rq, m.status, JSON_TYPE, body, len, REPLY_OWNED, NULL, 0);
}

enum MHD_Result reply_range_error(struct request *rq, const struct rs_err *err, uint64_t size)
{
	char cr[64];
	snprintf(cr, sizeof(cr), "bytes */%llu", (unsigned long long)size);
	/* RFC 9110 15.5.17: a 416 names the current length. */
	struct reply_header h[] = {{MHD_HTTP_HEADER_CONTENT_RANGE, cr}};
	return reply_error(rq, RS_RANGE, REPLY_BLOB, err->msg, h, 1);
}

enum MHD_Result reply_throttled(struct request *rq, const char *msg, unsigned retry_after)
{
	char secs[16];
	snprintf(secs, sizeof(secs), "%u", retry_after ? retry_after : 1);
	struct reply_header h[] = {{MHD_HTTP_HEADER_RETRY_AFTER, secs}};
	return reply_error(rq, RS_THROTTLED, REPLY_AUTH, msg, h, 1);
}
