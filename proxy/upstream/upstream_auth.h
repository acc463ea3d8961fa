/* upstream_auth: the pure parts of upstream authentication, apart from the
 * libcurl transfers of the transfer core (xfer.c) so that they can be tested
 * on their own.
 *
 * - WWW-Authenticate challenge parsing (RFC 7235 auth-params: tokens or
 *   quoted strings with escapes, commas inside quotes, several challenges in
 *   one header, case-insensitive scheme and parameter names).
 * - Token endpoint answers ({"token": ..., "expires_in": ...} or
 *   "access_token"), parsed with jansson; no json_t leaves this file.
 * - Redirect URL resolution and the same-origin check (scheme, host, port)
 *   that decides whether credentials may be sent.
 * - The bearer-token cache: one token per scope with its expiry, guarded by
 *   a mutex, shared by all request threads of one upstream.
 * No network I/O here and nothing is logged: tokens and passwords are
 * secrets. */
#ifndef RS_PROXY_UPSTREAM_AUTH_H
#define RS_PROXY_UPSTREAM_AUTH_H

#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum upstream_auth_scheme {
	UPSTREAM_AUTH_NONE = 0, /* no challenge we can answer */
	UPSTREAM_AUTH_BASIC,
	UPSTREAM_AUTH_BEARER,
};

/* The challenge we act on. Strings are owned by the struct (NULL when the
 * parameter was absent): release with upstream_auth_challenge_dispose(). */
struct upstream_auth_challenge {
	enum upstream_auth_scheme scheme;
	char *realm;
	char *service;
	char *scope;
};
void upstream_auth_challenge_dispose(struct upstream_auth_challenge *c);

/* Parse one WWW-Authenticate header value into out (which must be zeroed or
 * disposed). Of several challenges, Bearer with a realm wins over Basic;
 * unknown schemes give UPSTREAM_AUTH_NONE and RS_OK. A syntax error before a
 * usable challenge was seen is RS_BAD_INPUT (the message gives the offset,
 * never the value); a parameter value longer than RS_LIMIT_HEADER_MAX_BYTES
 * is RS_TOO_LARGE. value is borrowed. */
RS_MUST_CHECK enum rs_code upstream_auth_parse_challenge(struct upstream_auth_challenge *out, const char *value,
                                                         struct rs_err *err);

/* Parse a token endpoint answer (len bytes, need not be NUL-terminated):
 * "token", else "access_token"; "expires_in" in seconds (default 60 when
 * absent, not a positive number, or unparseable). *out_token is a new
 * string the caller frees. A token that is empty, longer than
 * RS_LIMIT_TOKEN_MAX_BYTES or holds characters not allowed in a header is
 * RS_BAD_INPUT. */
RS_MUST_CHECK enum rs_code upstream_auth_parse_token(char **out_token, long *out_expires_in, const char *body,
                                                     size_t len, struct rs_err *err);

/* Resolve location (absolute, scheme-relative, absolute-path or relative
 * reference) against base. *out is a new string the caller frees. Only
 * http and https results are accepted; anything else (other schemes, control
 * characters or spaces, unparseable URLs) is RS_BAD_INPUT. */
RS_MUST_CHECK enum rs_code upstream_auth_resolve_url(char **out, const char *base, const char *location,
                                                     struct rs_err *err);

/* True when a and b have the same scheme, host (case-insensitive) and port
 * (default ports filled in). False when either does not parse. */
bool upstream_auth_same_origin(const char *a, const char *b);

/* True when url is an absolute http:// or https:// URL that parses. */
bool upstream_auth_is_http_url(const char *url);

/* Bearer tokens per scope string ("" for requests without a scope, e.g.
 * GET /v2/). Thread-safe. Times are seconds of CLOCK_MONOTONIC (pass
 * upstream_auth_now()), a parameter so tests can move the clock. */
struct upstream_auth_tokens;

/* NULL on allocation failure. Free with upstream_auth_tokens_free(). */
struct upstream_auth_tokens *upstream_auth_tokens_new(void);
void upstream_auth_tokens_free(struct upstream_auth_tokens *t);

/* Seconds on the monotonic clock. */
int64_t upstream_auth_now(void);

/* A copy of the unexpired token for scope (the caller frees it), or NULL
 * when there is none or on allocation failure. */
char *upstream_auth_tokens_get(struct upstream_auth_tokens *t, const char *scope, int64_t now);

/* Remember token for scope until now + expires_in (minus a safety margin
 * for long-lived tokens), replacing what was there. A full cache drops
 * expired entries first, then the entry closest to expiry. RS_NOMEM only. */
RS_MUST_CHECK enum rs_code upstream_auth_tokens_put(struct upstream_auth_tokens *t, const char *scope,
                                                    const char *token, long expires_in, int64_t now,
                                                    struct rs_err *err);

/* Forget the token for scope if it is still token (another thread may have
 * stored a fresh one meanwhile); token NULL forgets whatever is there. */
void upstream_auth_tokens_drop(struct upstream_auth_tokens *t, const char *scope, const char *token);

#endif
