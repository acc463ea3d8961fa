/* jsonw: a small streaming JSON writer over a stdio stream, for the
 * documents regslim builds outside config/ (only config/ includes
 * jansson): the optimizer's and the push gate's reports. It places the
 * commas and escapes strings; the caller keeps keys and values in order.
 * Write errors stay in the stream (check ferror() at the end). */
#ifndef RS_OPTIMIZER_JSONW_H
#define RS_OPTIMIZER_JSONW_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Nesting depth the writer tracks; deeper documents are a caller bug. */
#define JSONW_DEPTH 16

struct jsonw {
	FILE *out;              /* borrowed */
	int depth;              /* open objects and arrays */
	bool has_item[JSONW_DEPTH]; /* the container at each depth has a member */
	bool after_key;         /* a key was written; its value comes next */
};

void jsonw_init(struct jsonw *w, FILE *out);
void jsonw_object_begin(struct jsonw *w);
void jsonw_object_end(struct jsonw *w);
void jsonw_array_begin(struct jsonw *w);
void jsonw_array_end(struct jsonw *w);
/* An object member's name; its value is the next value written. */
void jsonw_key(struct jsonw *w, const char *key);
/* A string value, escaped; NULL writes null. */
void jsonw_string(struct jsonw *w, const char *s);
void jsonw_u64(struct jsonw *w, uint64_t v);
void jsonw_double(struct jsonw *w, double v, int decimals);
void jsonw_bool(struct jsonw *w, bool v);
void jsonw_null(struct jsonw *w);
void jsonw_i64(struct jsonw *w, int64_t v);
/* A key and its value in one call. */
void jsonw_member_string(struct jsonw *w, const char *key, const char *s);
void jsonw_member_u64(struct jsonw *w, const char *key, uint64_t v);
void jsonw_member_bool(struct jsonw *w, const char *key, bool v);
/* A value that is already a JSON document (trailing whitespace dropped);
 * NULL writes null. */
void jsonw_raw(struct jsonw *w, const char *json);

#endif
