/* wire: jansson-backed decoding of token answers, tag lists and error
 * answers, and the writing of tag lists. See wire.h. */
#include "wire.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_DEFAULT_EXPIRES_S 60
#define TOKEN_MAX_EXPIRES_S (86400L * 365)

enum rs_code wire_parse_token(char **out_token, long *out_expires_in, const char *body, size_t len,
                              struct rs_err *err)
{
	*out_token = NULL;
	*out_expires_in = TOKEN_DEFAULT_EXPIRES_S;
	json_error_t jerr;
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return rs_err_set(err, RS_BAD_INPUT, "token answer is not JSON (line %d column %d: %s)", jerr.line,
		                  jerr.column, jerr.text);
	enum rs_code rc = RS_OK;
	if (!json_is_object(root)) {
		rc = rs_err_set(err, RS_BAD_INPUT, "token answer is not a JSON object");
		goto out;
	}
	json_t *tok = json_object_get(root, "token");
	if (!json_is_string(tok) || json_string_length(tok) == 0)
		tok = json_object_get(root, "access_token");
	if (!json_is_string(tok) || json_string_length(tok) == 0) {
		rc = rs_err_set(err, RS_BAD_INPUT, "token answer has no \"token\" or \"access_token\" string");
		goto out;
	}
	const char *s = json_string_value(tok);
	if (strlen(s) != json_string_length(tok)) {
		rc = rs_err_set(err, RS_BAD_INPUT, "token answer holds a token with a NUL byte");
		goto out;
	}
	json_t *exp = json_object_get(root, "expires_in");
	if (json_is_integer(exp) && json_integer_value(exp) > 0)
		*out_expires_in = json_integer_value(exp) > TOKEN_MAX_EXPIRES_S ? TOKEN_MAX_EXPIRES_S
		                                                                 : (long)json_integer_value(exp);
	else if (json_is_real(exp) && json_real_value(exp) >= 1 && json_real_value(exp) < (double)TOKEN_MAX_EXPIRES_S)
		*out_expires_in = (long)json_real_value(exp);
	*out_token = strdup(s);
	if (!*out_token)
		rc = rs_err_set(err, RS_NOMEM, "out of memory copying a token");
out:
	json_decref(root);
	return rc;
}

enum rs_code wire_parse_tag_list(const char *body, size_t len, wire_tag_fn add, void *ctx, struct rs_err *err)
{
	json_error_t jerr;
	json_t *root = json_loadb(body ? body : "", body ? len : 0, 0, &jerr);
	if (!root)
		return rs_err_set(err, RS_BAD_INPUT, "tag list is not JSON (line %d column %d: %s)", jerr.line,
		                  jerr.column, jerr.text);
	enum rs_code rc = RS_OK;
	json_t *tags = json_is_object(root) ? json_object_get(root, "tags") : NULL;
	if (!json_is_object(root) || (tags && !json_is_null(tags) && !json_is_array(tags))) {
		rc = rs_err_set(err, RS_BAD_INPUT, "tag list is not {\"name\":..,\"tags\":[..]}");
		goto out;
	}
	size_t i;
	json_t *v;
	if (json_is_array(tags))
		json_array_foreach(tags, i, v) {
			if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
				continue;
			if ((rc = add(ctx, json_string_value(v), err)) != RS_OK)
				break;
		}
out:
	json_decref(root);
	return rc;
}

enum rs_code wire_write_tag_list(char **out, size_t *out_len, const char *name, char *const *tags, size_t n,
                                 struct rs_err *err)
{
	*out = NULL;
	*out_len = 0;
	json_t *root = json_object();
	json_t *arr = json_array();
	bool ok = root && arr && json_object_set_new(root, "name", json_string(name)) == 0;
	for (size_t i = 0; ok && i < n; i++)
		ok = json_array_append_new(arr, json_string(tags[i])) == 0;
	ok = ok && json_object_set(root, "tags", arr) == 0;
	char *text = ok ? json_dumps(root, JSON_COMPACT) : NULL;
	json_decref(arr);
	json_decref(root);
	size_t len = text ? strlen(text) : 0;
	char *buf = text ? malloc(len + 2) : NULL;
	if (buf) {
		memcpy(buf, text, len);
		buf[len++] = '\n';
		buf[len] = '\0';
	}
	free(text); /* jansson's default allocator: malloc */
	if (!buf)
		return rs_err_set(err, RS_NOMEM, "out of memory writing a tag list");
	*out = buf;
	*out_len = len;
	return RS_OK;
}

bool wire_error_codes_all(const char *body, size_t len, wire_code_fn ok)
{
	if (!body)
		return false;
	json_t *root = json_loadb(body, len, 0, NULL);
	json_t *errors = json_is_object(root) ? json_object_get(root, "errors") : NULL;
	bool all = json_is_array(errors) && json_array_size(errors) > 0;
	size_t i;
	json_t *e;
	if (all)
		json_array_foreach(errors, i, e) {
			json_t *code = json_is_object(e) ? json_object_get(e, "code") : NULL;
			if (!json_is_string(code) || !ok(json_string_value(code))) {
				all = false;
				break;
			}
		}
	json_decref(root);
	return all;
}
