/* jsonload: shared pieces of config/'s JSON loaders (see jsonload.h). */
#include "jsonload.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

enum rs_code jsonload_vfail(const struct jsonload *ld, enum rs_code code, const char *path, const char *fmt,
			    va_list ap)
{
	char body[RS_ERR_MSG_MAX];
	int n = vsnprintf(body, sizeof(body), fmt, ap);
	if (n < 0)
		body[0] = '\0';
	if (path && path[0])
		return rs_err_set(ld->err, code, "%s: %s: %s", ld->file, path, body);
	return rs_err_set(ld->err, code, "%s: %s", ld->file, body);
}

enum rs_code jsonload_fail(const struct jsonload *ld, enum rs_code code, const char *path, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	enum rs_code rc = jsonload_vfail(ld, code, path, fmt, ap);
	va_end(ap);
	return rc;
}

const char *jsonload_type_name(const json_t *v)
{
	if (!v)
		return "nothing";
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	case JSON_NULL: return "null";
	}
	return "a value";
}

const char *jsonload_unknown_key(const json_t *obj, const char *const allowed[])
{
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)obj, key, v) {
		bool known = false;
		for (size_t i = 0; allowed[i] && !known; i++)
			known = strcmp(key, allowed[i]) == 0;
		if (!known)
			return key;
	}
	return NULL;
}

void jsonload_key_list(char *out, size_t cap, const char *const allowed[])
{
	size_t o = 0;
	out[0] = '\0';
	for (size_t i = 0; allowed[i] && o < cap; i++) {
		int n = snprintf(out + o, cap - o, "%s%s", i ? ", " : "", allowed[i]);
		if (n < 0)
			break;
		o += (size_t)n;
	}
}

