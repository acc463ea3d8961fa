/* wire: decoding of the small JSON documents that registries exchange on the
 * wire (token answers, tag lists, error answers) into plain values, and
 * writing tag lists. It lives in config/ because only
 * this directory includes jansson (STYLE.md section 1). */
#ifndef RS_CONFIG_WIRE_H
#define RS_CONFIG_WIRE_H

#include "errors.h"

#include <stdbool.h>
#include <stddef.h>

/* Parse a token endpoint answer {"token"|"access_token": "...",
 * "expires_in": N}. *out_token is a new string (free()); *out_expires_in is
 * the lifetime in seconds (60 when absent or invalid, capped at a year).
 * RS_BAD_INPUT for malformed JSON or a missing token, RS_NOMEM. */
RS_MUST_CHECK enum rs_code wire_parse_token(char **out_token, long *out_expires_in, const char *body, size_t len,
                                            struct rs_err *err);

/* Called with each tag of a tag list (borrowed for the call). */
typedef enum rs_code (*wire_tag_fn)(void *ctx, const char *tag, struct rs_err *err);

/* Parse a tags/list answer {"name": .., "tags": [..]} and call add for each
 * string of "tags" (strings with a NUL byte are skipped); a null or absent
 * "tags" is an empty list (Docker Hub answers null). RS_BAD_INPUT for
 * anything else, else add's first failure. */
RS_MUST_CHECK enum rs_code wire_parse_tag_list(const char *body, size_t len, wire_tag_fn add, void *ctx,
                                               struct rs_err *err);

/* The tags/list answer {"name":name,"tags":[tags[0..n)]} and a newline in a
 * new buffer (*out: free()), strings JSON-escaped. RS_NOMEM. */
RS_MUST_CHECK enum rs_code wire_write_tag_list(char **out, size_t *out_len, const char *name, char *const *tags,
                                               size_t n, struct rs_err *err);

/* Says whether an error code is acceptable. */
typedef bool (*wire_code_fn)(const char *code);

/* Is body a registry error answer {"errors":[{"code": "..", ..}, ..]} with
 * at least one error, every code a string that ok accepts? */
bool wire_error_codes_all(const char *body, size_t len, wire_code_fn ok);

#endif
