/* log: formats JSON lines into a fixed stack buffer and writes each with a
 * single write(2) to stderr, so lines from concurrent threads never mix. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096

static atomic_int min_level = LOG_INFO;
static atomic_bool requests_on = true;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(const char *name)
{
	for (int i = 0; i < 4; i++)
		if (name && strcmp(name, level_names[i]) == 0)
			atomic_store(&min_level, i);
}

void log_set_requests(bool on)
{
	atomic_store(&requests_on, on);
}

bool log_requests_enabled(void)
{
	return atomic_load(&requests_on);
}

void log_json_escape(char *out, size_t cap, size_t *pos, const char *s)
{
	static const char hx[] = "0123456789abcdef";
	size_t p = *pos;
	for (; s && *s && p + 7 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			out[p++] = '\\';
			out[p++] = (char)c;
		} else if (c == '\n') {
			out[p++] = '\\';
			out[p++] = 'n';
		} else if (c < 0x20 || c == 0x7f) {
			out[p++] = '\\';
			out[p++] = 'u';
			out[p++] = '0';
			out[p++] = '0';
			out[p++] = hx[c >> 4];
			out[p++] = hx[c & 15];
		} else {
			out[p++] = (char)c;
		}
	}
	out[p < cap ? p : cap - 1] = '\0';
	*pos = p;
}

static void put(char *out, size_t cap, size_t *pos, const char *s)
{
	size_t n = strlen(s);
	if (*pos + n >= cap)
		n = *pos + 1 < cap ? cap - *pos - 1 : 0;
	memcpy(out + *pos, s, n);
	*pos += n;
	out[*pos] = '\0';
}

static void putf(char *out, size_t cap, size_t *pos, const char *fmt, ...) RS_PRINTF(4, 5);
static void putf(char *out, size_t cap, size_t *pos, const char *fmt, ...)
{
	if (*pos + 1 >= cap)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out + *pos, cap - *pos, fmt, ap);
	va_end(ap);
	if (n > 0)
		*pos += (size_t)n < cap - *pos ? (size_t)n : cap - *pos - 1;
}

static void begin_line(char *out, size_t cap, size_t *pos, enum log_level level)
{
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	putf(out, cap, pos, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\"", tm.tm_year + 1900,
	     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(tv.tv_usec / 1000),
	     level_names[level]);
}

static void end_line(char *out, size_t cap, size_t *pos)
{
	/* Always room for the closing brace and newline. */
	if (*pos > cap - 3)
		*pos = cap - 3;
	out[(*pos)++] = '}';
	out[(*pos)++] = '\n';
	out[*pos] = '\0';
	/* A short write to stderr has no better place to be reported. */
	(void)!write(STDERR_FILENO, out, *pos);
}

static void field(char *out, size_t cap, size_t *pos, const char *key, const char *val)
{
	if (!val)
		return;
	putf(out, cap, pos, ",\"%s\":\"", key);
	log_json_escape(out, cap - 8, pos, val);
	put(out, cap - 4, pos, "\"");
}

void log_event(enum log_level level, const char *fmt, ...)
{
	if ((int)level < atomic_load(&min_level))
		return;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		msg[0] = '\0';
	char line[LINE_MAX_BYTES];
	size_t pos = 0;
	begin_line(line, sizeof(line), &pos, level);
	field(line, sizeof(line), &pos, "msg", msg);
	end_line(line, sizeof(line), &pos);
}

void log_request(const struct log_request *r)
{
	if (!atomic_load(&requests_on))
		return;
	char line[LINE_MAX_BYTES];
	size_t pos = 0;
	enum log_level level = r->status >= 500 ? LOG_WARN : LOG_INFO;
	begin_line(line, sizeof(line), &pos, level);
	field(line, sizeof(line), &pos, "msg", "request");
	field(line, sizeof(line), &pos, "method", r->method);
	field(line, sizeof(line), &pos, "path", r->path);
	field(line, sizeof(line), &pos, "route", r->route);
	putf(line, sizeof(line), &pos, ",\"status\":%u,\"bytes\":%llu,\"ms\":%llu", r->status,
	     (unsigned long long)r->bytes, (unsigned long long)r->ms);
	field(line, sizeof(line), &pos, "cache", r->cache ? r->cache : "-");
	field(line, sizeof(line), &pos, "upstream", r->upstream);
	field(line, sizeof(line), &pos, "ua", r->ua);
	field(line, sizeof(line), &pos, "error", r->error);
	end_line(line, sizeof(line), &pos);
}
