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

/* Every string field is cut to FIELD_MAX_BYTES of escaped output (with a
 * marker), so the eight fields of a request line and its numbers always fit
 * in LINE_MAX_BYTES and the line stays one valid JSON object. */
#define FIELD_MAX_BYTES 1536
#define LINE_MAX_BYTES 16384

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

/* One unit of escaped output for the input at s: an escape sequence, one
 * ASCII byte, or a whole UTF-8 sequence (so truncation never splits one).
 * Writes it to u (at least 7 bytes) and returns its length; *used gets the
 * input bytes it stands for. */
static size_t escape_unit(const unsigned char *s, char *u, size_t *used)
{
	static const char hx[] = "0123456789abcdef";
	unsigned char c = s[0];
	*used = 1;
	if (c == '"' || c == '\\') {
		u[0] = '\\';
		u[1] = (char)c;
		return 2;
	}
	if (c == '\n') {
		u[0] = '\\';
		u[1] = 'n';
		return 2;
	}
	if (c < 0x20 || c == 0x7f) {
		memcpy(u, "\\u00", 4);
		u[4] = hx[c >> 4];
		u[5] = hx[c & 15];
		return 6;
	}
	size_t n = 1;
	if (c >= 0xc0) /* a lead byte: take its continuation bytes along */
		while (n < 4 && (s[n] & 0xc0) == 0x80)
			n++;
	memcpy(u, s, n);
	*used = n;
	return n;
}

void log_json_escape(char *out, size_t cap, size_t *pos, const char *s)
{
	static const char mark[] = "...(truncated)";
	size_t p = *pos;
	if (p >= cap)
		return; /* nothing fits; out was terminated by whoever filled it */
	const unsigned char *in = (const unsigned char *)(s ? s : "");
	/* does all of it fit? */
	size_t total = 0, used;
	char u[8];
	for (const unsigned char *c = in; *c; c += used)
		total += escape_unit(c, u, &used);
	size_t end = cap - 1, marklen = sizeof(mark) - 1; /* the NUL goes at out[end] at the latest */
	bool fits = total <= end - p;
	size_t limit = fits ? end : (end - p > marklen ? end - marklen : p);
	for (const unsigned char *c = in; *c; c += used) {
		size_t n = escape_unit(c, u, &used);
		if (p + n > limit)
			break;
		memcpy(out + p, u, n);
		p += n;
	}
	if (!fits && p + marklen <= end) {
		memcpy(out + p, mark, marklen);
		p += marklen;
	}
	out[p] = '\0';
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
	size_t room = *pos + FIELD_MAX_BYTES + 1;
	log_json_escape(out, room < cap - 4 ? room : cap - 4, pos, val);
	put(out, cap - 3, pos, "\"");
}

void log_event(enum log_level level, const char *fmt, ...)
{
	if ((int)level < atomic_load(&min_level))
		return;
	char msg[FIELD_MAX_BYTES];
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
