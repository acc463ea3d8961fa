/* wire: decoding of the small JSON documents that registries exchange on the
 * wire (token answers), into plain values. It lives in config/ because only
 * this directory includes jansson (STYLE.md section 1). */
#ifndef RS_CONFIG_WIRE_H
#define RS_CONFIG_WIRE_H

#include "errors.h"

#include <stddef.h>

/* Parse a token endpoint answer {"token"|"access_token": "...",
 * "expires_in": N}. *out_token is a new string (free()); *out_expires_in is
 * the lifetime in seconds (60 when absent or invalid, capped at a year).
 * RS_BAD_INPUT for malformed JSON or a missing token, RS_NOMEM. */
RS_MUST_CHECK enum rs_code wire_parse_token(char **out_token, long *out_expires_in, const char *body, size_t len,
                                            struct rs_err *err);

#endif
