/* errors: the one error code type and error carrier shared by every module.
 *
 * Fallible functions return enum rs_code, are marked RS_MUST_CHECK and take a
 * struct rs_err *err as their last argument. rs_err_set() fills it and
 * returns the code, so a failure is one statement. The first message wins:
 * callers pass the code up unchanged and may only prepend context with
 * rs_err_prefix(). Codes become HTTP statuses only in proxy/server/reply.c. */
#ifndef RS_CONFIG_ERRORS_H
#define RS_CONFIG_ERRORS_H

#include <stddef.h>

#define RS_MUST_CHECK __attribute__((warn_unused_result))
#define RS_PRINTF(a, b) __attribute__((format(printf, a, b)))

enum rs_code {
	RS_OK = 0,
	RS_NOMEM,           /* allocation failed */
	RS_IO,              /* file system or socket error */
	RS_BAD_INPUT,       /* malformed input: JSON, tar, gzip, headers, names */
	RS_NOT_FOUND,       /* no such blob, manifest, tag, repository or file */
	RS_DIGEST_MISMATCH, /* bytes do not hash to the digest they claim */
	RS_DIGEST_INVALID,  /* a digest string that is not a supported digest */
	RS_TOO_LARGE,       /* a configured cap was hit */
	RS_UPSTREAM,        /* the upstream registry failed or is unreachable */
	RS_POLICY,          /* a policy rule refused the input */
	RS_UNAUTHORIZED,    /* authentication required or failed */
	RS_DENIED,          /* authenticated but not allowed */
	RS_UNSUPPORTED,     /* unknown media type, method or feature */
	RS_RANGE,           /* unsatisfiable byte range */
	RS_TIMEOUT,         /* a bounded wait ran out */
	RS_CONFIG,          /* invalid configuration */
	RS_THROTTLED,       /* too many attempts: try again later */
	RS_UNAVAILABLE,     /* a service regslim stores in (the object store) is unreachable: try again later */
	RS_CODE_COUNT
};

#define RS_ERR_MSG_MAX 256

struct rs_err {
	enum rs_code code;
	char msg[RS_ERR_MSG_MAX];
};

/* Set err (if not NULL) to code and the formatted one-line message; returns
 * code. A message longer than the buffer is truncated with "...". */
enum rs_code rs_err_set(struct rs_err *err, enum rs_code code, const char *fmt, ...)
	RS_PRINTF(3, 4);

/* Prepend formatted context to err->msg ("pulling sha256:ab12..: "). The
 * code is kept. Does nothing when err is NULL. */
void rs_err_prefix(struct rs_err *err, const char *fmt, ...) RS_PRINTF(2, 3);

/* Reset err to RS_OK with an empty message. */
void rs_err_clear(struct rs_err *err);

/* Stable lower-case name of a code ("digest_mismatch"), for logs. */
const char *rs_code_name(enum rs_code code);

#endif
