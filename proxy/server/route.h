/* route: the pure parts of request routing, with no HTTP library in them so
 * they can be tested alone: picking the upstream (?ns=, a first path
 * component naming an upstream, the default; library/ for one-component
 * names), validating repository names, tags and Range headers, matching
 * Accept values, and the one table mapping enum rs_code to an HTTP status
 * and a registry error code. */
#ifndef RS_PROXY_ROUTE_H
#define RS_PROXY_ROUTE_H

#include "config.h"
#include "errors.h"
#include "rs_limits.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a request names once routing is done. */
struct route_target {
	size_t up_index;                   /* into cfg->upstreams */
	bool by_ns;                        /* chosen by ?ns= (answer with OCI-Namespace) */
	char repo[RS_LIMIT_NAME_MAX + 16]; /* upstream repository, library/ added */
	char name[RS_LIMIT_NAME_MAX + 16]; /* the name as the client wrote it */
	const char *ref;                   /* tag or digest (borrowed, set by the caller) */
};

/* Choose the upstream and repository for name (the part of the path between
 * /v2/ and /manifests|blobs|tags), with ns the ?ns= value or NULL.
 * RS_NOT_FOUND for an ns naming no configured upstream; RS_BAD_INPUT for a
 * name outside the distribution grammar or too long. */
RS_MUST_CHECK enum rs_code route_pick(const struct rs_config *cfg, const char *ns, const char *name,
                                      struct route_target *out, struct rs_err *err);


struct route_range {
	bool partial;        /* false: serve the whole body with 200 */
	uint64_t start, end; /* [start, end) */
};

/* Parse a single "bytes=a-b" / "bytes=a-" / "bytes=-n" against size. A
 * missing header, several ranges, or syntax we do not know give
 * partial=false (RFC 9110 lets a server ignore them); a range that cannot be
 * satisfied is RS_RANGE. */
RS_MUST_CHECK enum rs_code route_parse_range(const char *header, uint64_t size, struct route_range *out,
                                             struct rs_err *err);

/* Does any of the n Accept header values (each possibly a comma-separated
 * list with parameters) name type exactly, or allow any type with "*\/\*"? */
bool route_accepts(const char *const *values, size_t n, const char *type);

/* What the request was about: picks the *_UNKNOWN code for RS_NOT_FOUND,
 * and the write-side meaning of a code for uploads and manifest PUTs (where
 * a digest mismatch is the client's fault, not the upstream's).
 * ROUTE_UPLOAD_START is the opening of a new upload session, where
 * RS_TOO_LARGE means too many uploads at once (429 TOOMANYREQUESTS), not a
 * blob over the size limit. */
enum route_what {
	ROUTE_MANIFEST,
	ROUTE_BLOB,
	ROUTE_NAME,
	ROUTE_OTHER,
	ROUTE_UPLOAD,
	ROUTE_UPLOAD_START,
	ROUTE_MANIFEST_PUT
};

struct route_error {
	unsigned status;  /* HTTP status */
	const char *code; /* registry error code, e.g. "BLOB_UNKNOWN" */
};

/* The single mapping of our codes to HTTP and registry errors. */
struct route_error route_map_error(enum rs_code code, enum route_what what);

#endif
