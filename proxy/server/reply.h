/* reply: every answer regslim gives over HTTP is queued here (the future
 * server/reply of DESIGN.md's Layout). It owns the headers every answer
 * carries (Docker-Distribution-API-Version; OCI-Namespace when ?ns= chose
 * the upstream), the headers of manifests and blobs (Docker-Content-Digest,
 * ETag, Accept-Ranges, Content-Range), the registry error JSON
 * ({"errors":[{"code","message","detail"}]}, built in one function), and the
 * one table mapping enum rs_code and what a request was about to an HTTP
 * status and a registry error code. Handlers (the files of api/)
 * decide what to answer; they never build a libmicrohttpd response. It
 * records the answer's status, body size and error message in the request
 * (http.c logs and counts them). */
#ifndef RS_PROXY_REPLY_H
#define RS_PROXY_REPLY_H

#include "errors.h"
#include "http.h"
#include "route.h"

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the request was about: picks the *_UNKNOWN code for RS_NOT_FOUND,
 * and the write-side meaning of a code for uploads and manifest PUTs (where
 * a digest mismatch is the client's fault, not the upstream's).
 * REPLY_UPLOAD_START is the opening of a new upload session, where
 * RS_TOO_LARGE means too many uploads at once (429 TOOMANYREQUESTS), not a
 * blob over the size limit. The last four: a path or method regslim does
 * not serve (RS_NOT_FOUND is 404 NOT_FOUND, RS_TOO_LARGE a path too long,
 * 414), the auth gate and token endpoint (401, 403, 429; any other refusal of a token
 * request is 400 UNSUPPORTED), and forwarding a pushed image upstream (502
 * when the upstream failed, else 500 UNAVAILABLE). REPLY_FRAMING: a request
 * HTTP/1.1 forbids (http.c: no Host, conflicting Content-Length; RFC 9112),
 * RS_BAD_INPUT is 400 UNSUPPORTED. REPLY_QUERY: a query parameter outside
 * its grammar (tags/list's n), RS_BAD_INPUT is 400 UNSUPPORTED too (the
 * spec names no code for it). */
enum reply_what {
	REPLY_MANIFEST,
	REPLY_BLOB,
	REPLY_NAME,
	REPLY_OTHER,
	REPLY_UPLOAD,
	REPLY_UPLOAD_START,
	REPLY_MANIFEST_PUT,
	REPLY_ENDPOINT,
	REPLY_AUTH,
	REPLY_FORWARD,
	REPLY_QUERY,
	REPLY_FRAMING
};

struct reply_status {
	unsigned status;  /* HTTP status */
	const char *code; /* registry error code, e.g. "BLOB_UNKNOWN" (static); NULL: a plain-text answer */
};

/* The single mapping of our codes to HTTP statuses and registry errors:
 * every error answer's status and code come from here. Every 4xx code is
 * one of the distribution spec's "Error Codes" table (a path regslim does
 * not serve is 404 UNSUPPORTED); a Range beyond a blob (RS_RANGE on the
 * read side) is 416 without a registry code: the answer is plain text. */
struct reply_status reply_map_error(enum rs_code code, enum reply_what what);

/* Is code one of the distribution spec's "Error Codes" (BLOB_UNKNOWN ...
 * TOOMANYREQUESTS)? */
bool reply_code_is_spec(const char *code);

/* An extra header of an answer; entries with a NULL name or value are
 * skipped. Strings are borrowed for the call. */
struct reply_header {
	const char *name, *value;
};

/* How reply_buffer holds the body. */
enum reply_mem {
	REPLY_STATIC, /* lives as long as the process: used in place */
	REPLY_OWNED,  /* malloc'd: taken (freed with the response, or at once on failure) */
	REPLY_COPY,   /* borrowed for the call: copied */
};

/* At most this many extra headers travel with a kept answer. */
#define REPLY_KEPT_HEADERS 4

/* An answer kept while the request body is still arriving: clients (Go's
 * net/http among them) still writing a body when the server answers and
 * closes see only a broken connection, so the answer waits until the whole
 * request was read. While rq->hold points at one, reply_buffer, reply_empty
 * and the error answers fill it instead of queueing (and clears rq->answered, so the rest of the
 * body is read and dropped); reply_send_kept() queues it later. The caller
 * embeds it (zeroed) and disposes of it; strings are owned. */
struct reply_kept {
	bool set; /* an answer is waiting */
	unsigned status;
	char *type, *body;
	size_t len;
	char *name[REPLY_KEPT_HEADERS], *value[REPLY_KEPT_HEADERS];
	size_t n;
};

/* Queue the kept answer k on rq (rq->hold must be NULL by now). */
enum MHD_Result reply_send_kept(struct request *rq, const struct reply_kept *k);

/* Release what k holds and zero it; a zeroed k is fine. */
void reply_kept_dispose(struct reply_kept *k);

/* A body of len bytes (type NULL: no Content-Type) with status and the
 * headers h[0..nh). For HEAD the body is not sent (nor counted). MHD_NO
 * when the response cannot be made. */
enum MHD_Result reply_buffer(struct request *rq, unsigned status, const char *type, char *body, size_t len,
                             enum reply_mem mem, const struct reply_header *h, size_t nh);

/* An answer without a body (201, 202, 204 with Location, Range, ...). */
enum MHD_Result reply_empty(struct request *rq, unsigned status, const struct reply_header *h, size_t nh);

/* 200 with a manifest: body (taken, as REPLY_OWNED) of type, with
 * Docker-Content-Digest and ETag naming digest. */
enum MHD_Result reply_manifest(struct request *rq, char *body, size_t len, const char *type, const char *digest);

/* A blob answer's shape: digest, the range served (partial: 206 with
 * Content-Range, when the size is known) and the blob's size. */
struct reply_blob {
	const char *digest;
	const struct route_range *range;
	uint64_t size;
	bool size_known;
};

/* 200/206 with the range of fd (taken: closed with the response, or at
 * once on failure). Plain HTTP sends with sendfile; with tls set the file
 * is read in 64 KiB pieces so that TLS records are full
 * (http_response_from_fd). */
enum MHD_Result reply_blob_fd(struct request *rq, const struct reply_blob *b, int fd, bool tls);

/* 200/206 whose body comes from reader(cls) (an upstream tee) in 64 KiB
 * calls; free_cls(cls) runs once the response is done (or at once on
 * failure). The length is b's range when the size is known, else unknown.
 * The reader counts the bytes it sends (rq->body_counted). */
enum MHD_Result reply_blob_stream(struct request *rq, const struct reply_blob *b, MHD_ContentReaderCallback reader,
                                  void *cls, MHD_ContentReaderFreeCallback free_cls);

/* 200 to a HEAD of a blob: the headers of b and Content-Length of its size
 * (when known), no body. */
enum MHD_Result reply_blob_head(struct request *rq, const struct reply_blob *b);

/* A registry error answer for code about what (status and registry code
 * from reply_map_error) with msg (JSON escaped; a message too long for the
 * body is cut, and says so) and the headers h[0..nh). msg is recorded as
 * the request's error. */
enum MHD_Result reply_error(struct request *rq, enum rs_code code, enum reply_what what, const char *msg,
                            const struct reply_header *h, size_t nh);

/* reply_error for err: its code and its message (or the code's name when
 * it has none). */
enum MHD_Result reply_fail(struct request *rq, const struct rs_err *err, enum reply_what what,
                           const struct reply_header *h, size_t nh);

/* reply_error for a message that may be long (lists of policy
 * violations): the body is sized for all of it. */
enum MHD_Result reply_error_long(struct request *rq, enum rs_code code, enum reply_what what, const char *msg);

/* A registry error body made elsewhere (an upstream's, passed through):
 * body (taken, as REPLY_OWNED) of len bytes, with the status of code about
 * what; msg is recorded as the request's error. */
enum MHD_Result reply_error_passed(struct request *rq, enum rs_code code, enum reply_what what, char *body,
                                   size_t len, const char *msg);

/* 416 with Content-Range "bytes *\/size" (RFC 9110 15.5.17) and err's
 * message as plain text (no code of the spec's table fits). */
enum MHD_Result reply_range_error(struct request *rq, const struct rs_err *err, uint64_t size);

/* 429 TOOMANYREQUESTS with Retry-After (seconds; 0 gives 1). */
enum MHD_Result reply_throttled(struct request *rq, const char *msg, unsigned retry_after);

#endif
