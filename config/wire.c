/* wire: jansson-backed decoding of token answers. See wire.h. */
#include "wire.h"

#include <jansson.h>
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
