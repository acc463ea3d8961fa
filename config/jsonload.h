/* jsonload: what the JSON document loaders of config/ share (config.c,
 * policy.c, gate_policy.c, imagejson.c): the loader's context, the one
 * message shape "<file>: <key path>: <what is wrong>" (without the key path
 * when there is none), and the names of JSON types for such messages.
 * Internal to config/ (it exposes jansson, which only config/ includes). */
#ifndef RS_CONFIG_JSONLOAD_H
#define RS_CONFIG_JSONLOAD_H

#include "errors.h"

#include <jansson.h>
#include <stdarg.h>

struct jsonload {
	const char *file;   /* the document's name in messages: a path, or "manifest" */
	struct rs_err *err; /* borrowed */
};

/* Set ld->err to code with "<file>: <path>: <fmt...>" ("<file>: <fmt...>"
 * when path is NULL or empty); returns code. */
enum rs_code jsonload_fail(const struct jsonload *ld, enum rs_code code, const char *path, const char *fmt, ...)
	RS_PRINTF(4, 5);
enum rs_code jsonload_vfail(const struct jsonload *ld, enum rs_code code, const char *path, const char *fmt,
			    va_list ap) RS_PRINTF(4, 0);

/* The first key of obj that is not in allowed (NULL-terminated), or NULL
 * when every key is allowed. Borrowed from obj. */
const char *jsonload_unknown_key(const json_t *obj, const char *const allowed[]);

/* allowed as "a, b, c" into out (cut to fit cap), for "allowed: ..." hints. */
void jsonload_key_list(char *out, size_t cap, const char *const allowed[]);

/* "an object", "an array", "a string", "an integer", "a number",
 * "a boolean", "null"; "nothing" for NULL. Static strings. */
const char *jsonload_type_name(const json_t *v);

#endif
