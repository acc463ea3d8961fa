/* s3_sign: AWS Signature Version 4 for the s3 store driver's requests.
 *
 * Builds the canonical request (method, URI, sorted and percent-encoded query,
 * sorted lower-case headers with trimmed values, signed-header list, payload
 * hash), the string to sign and the Authorization header value, with OpenSSL's
 * SHA-256 and HMAC. Pure functions: no clock, no network, no globals; the
 * caller gives the date and the credentials. What it does not do: choose which
 * headers to send (s3.c adds host, x-amz-date and x-amz-content-sha256 and
 * signs every header it sends), presigned URLs, chunked payload signing.
 *
 * The published AWS test vectors (tests/unit/test_sigv4.c) pin the output;
 * s3.c explains why we sign ourselves rather than with CURLOPT_AWS_SIGV4. */
#ifndef RS_STORE_S3_SIGN_H
#define RS_STORE_S3_SIGN_H

#include "errors.h"

#include <stdbool.h>
#include <stddef.h>

/* The SHA-256 of the empty string, hex: the payload hash of a request with no body. */
#define S3_SIGN_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/* The payload hash of a body streamed without hashing it first. */
#define S3_SIGN_UNSIGNED "UNSIGNED-PAYLOAD"

/* One header as sent; any case, value untrimmed. Repeated names are joined
 * with ',' in the order given (the spec's rule for a header sent twice). */
struct s3_sign_header {
	const char *name;
	const char *value;
};

/* One query parameter, not encoded; value NULL or "" for a valueless one
 * (signed as "name="). */
struct s3_sign_param {
	const char *name;
	const char *value;
};

/* One request to sign. Everything is borrowed for the call. */
struct s3_sign_request {
	const char *method;  /* "GET", "PUT" ... */
	const char *path;    /* not encoded: "/bucket/a key"; every byte but unreserved ones and '/' is
	                        percent-encoded once (S3's rule: no normalisation of "." or "//") */
	const struct s3_sign_param *query;
	size_t nquery;
	const struct s3_sign_header *headers; /* every header to sign; must contain host and x-amz-date */
	size_t nheaders;
	const char *payload_hash; /* hex SHA-256 of the body, or S3_SIGN_UNSIGNED */
	const char *amz_date;     /* "YYYYMMDDTHHMMSSZ", the x-amz-date header's value */
	const char *region;
	const char *service;      /* "s3" */
	const char *access_key;
	const char *secret_key;
};

/* The intermediate strings, for tests and for error messages (owned by the
 * caller after s3_sign_explain(): s3_sign_explained_dispose()). */
struct s3_sign_explained {
	char *canonical_request;
	char *string_to_sign;
	char *authorization; /* "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=..." */
};

/* The Authorization header value of r into out (cap bytes, NUL-terminated).
 * RS_BAD_INPUT when a date or header is malformed, RS_TOO_LARGE when out is
 * too small, RS_NOMEM. */
RS_MUST_CHECK enum rs_code s3_sign(char *out, size_t cap, const struct s3_sign_request *r, struct rs_err *err);

/* As s3_sign(), keeping every intermediate string. */
RS_MUST_CHECK enum rs_code s3_sign_explain(struct s3_sign_explained *out, const struct s3_sign_request *r,
                                           struct rs_err *err);
void s3_sign_explained_dispose(struct s3_sign_explained *e);

/* Percent-encode s the SigV4 way (unreserved A-Z a-z 0-9 - . _ ~ kept, '/'
 * kept when keep_slash, every other byte %XY upper-case) into out; returns
 * the length it needs (without the NUL); writes at most cap bytes. */
size_t s3_sign_uri_encode(char *out, size_t cap, const char *s, bool keep_slash);

/* Hex SHA-256 of len bytes at buf into out (65 bytes with the NUL). */
void s3_sign_sha256_hex(char out[65], const void *buf, size_t len);

#endif
