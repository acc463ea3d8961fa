/* errors: formatting of struct rs_err. No allocation, no I/O. */
#include "errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void mark_truncated(struct rs_err *err, int n)
{
	if (n >= (int)sizeof(err->msg))
		memcpy(err->msg + sizeof(err->msg) - 4, "...", 4);
}

enum rs_code rs_err_set(struct rs_err *err, enum rs_code code, const char *fmt, ...)
{
	if (!err)
		return code;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		err->msg[0] = '\0';
	mark_truncated(err, n);
	err->code = code;
	return code;
}

void rs_err_prefix(struct rs_err *err, const char *fmt, ...)
{
	if (!err)
		return;
	char head[RS_ERR_MSG_MAX];
	char old[RS_ERR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(head, sizeof(head), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	memcpy(old, err->msg, sizeof(old));
	n = snprintf(err->msg, sizeof(err->msg), "%s%s", head, old);
	mark_truncated(err, n);
}

void rs_err_clear(struct rs_err *err)
{
	if (!err)
		return;
	err->code = RS_OK;
	err->msg[0] = '\0';
}

const char *rs_code_name(enum rs_code code)
{
	static const char *const names[RS_CODE_COUNT] = {
		[RS_OK] = "ok",
		[RS_NOMEM] = "nomem",
		[RS_IO] = "io",
		[RS_BAD_INPUT] = "bad_input",
		[RS_NOT_FOUND] = "not_found",
		[RS_DIGEST_MISMATCH] = "digest_mismatch",
		[RS_DIGEST_INVALID] = "digest_invalid",
		[RS_TOO_LARGE] = "too_large",
		[RS_UPSTREAM] = "upstream",
		[RS_POLICY] = "policy",
		[RS_UNAUTHORIZED] = "unauthorized",
		[RS_DENIED] = "denied",
		[RS_UNSUPPORTED] = "unsupported",
		[RS_RANGE] = "range",
		[RS_TIMEOUT] = "timeout",
		[RS_CONFIG] = "config",
		[RS_THROTTLED] = "throttled",
		[RS_UNAVAILABLE] = "unavailable",
	};
	if ((unsigned)code >= RS_CODE_COUNT || !names[code])
		return "unknown";
	return names[code];
}
