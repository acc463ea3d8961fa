/* log: JSON log lines on stderr, one per event or request. Thread-safe
 * (one write(2) per line). Values are JSON-escaped; secrets are never passed
 * here by callers. */
#ifndef RS_PROXY_LOG_H
#define RS_PROXY_LOG_H

#include "errors.h"

#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Minimum level printed; "debug" | "info" | "warn" | "error". Unknown names
 * keep the current level. */
void log_set_level(const char *name);
void log_set_requests(bool on);
bool log_requests_enabled(void);

/* {"ts":..,"level":..,"msg":"<formatted>"} */
void log_event(enum log_level level, const char *fmt, ...) RS_PRINTF(2, 3);

struct log_request {
	const char *method;
	const char *path;
	const char *route;
	unsigned status;
	uint64_t bytes;
	uint64_t ms;
	const char *cache; /* "hit" | "miss" | "stale" | NULL */
	const char *upstream;
	const char *ua;
	const char *error; /* message of a failed request, NULL otherwise */
};
void log_request(const struct log_request *r);

/* Append s JSON-escaped (without quotes) to out[cap] at *pos. When it does
 * not fit, as much as fits before the marker "...(truncated)" is written,
 * never half an escape or half a UTF-8 sequence; out stays NUL-terminated
 * at the new *pos. */
void log_json_escape(char *out, size_t cap, size_t *pos, const char *s);

#endif
