/* jsonw: streaming JSON writer (see jsonw.h). */
#include "jsonw.h"

#include <inttypes.h>
#include <string.h>

void jsonw_init(struct jsonw *w, FILE *out)
{
	memset(w, 0, sizeof(*w));
	w->out = out;
}

/* Before a value or a key: the comma that separates it from the previous
 * member of its container. A value right after its key needs none. */
static void separate(struct jsonw *w)
{
	if (w->after_key) {
		w->after_key = false;
		return;
	}
	if (w->depth > 0 && w->depth <= JSONW_DEPTH) {
		if (w->has_item[w->depth - 1])
			fputc(',', w->out);
		w->has_item[w->depth - 1] = true;
	}
}

static void open_container(struct jsonw *w, char c)
{
	separate(w);
	fputc(c, w->out);
	if (w->depth < JSONW_DEPTH)
		w->has_item[w->depth] = false;
	w->depth++;
}

static void close_container(struct jsonw *w, char c)
{
	if (w->depth > 0)
		w->depth--;
	fputc(c, w->out);
}

void jsonw_object_begin(struct jsonw *w)
{
	open_container(w, '{');
}

void jsonw_object_end(struct jsonw *w)
{
	close_container(w, '}');
}

void jsonw_array_begin(struct jsonw *w)
{
	open_container(w, '[');
}

void jsonw_array_end(struct jsonw *w)
{
	close_container(w, ']');
}

static void put_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"': fputs("\\\"", out); break;
		case '\\': fputs("\\\\", out); break;
		case '\n': fputs("\\n", out); break;
		case '\r': fputs("\\r", out); break;
		case '\t': fputs("\\t", out); break;
		default:
			if (*p < 0x20)
				fprintf(out, "\\u%04x", *p);
			else
				fputc(*p, out);
		}
	}
	fputc('"', out);
}

void jsonw_key(struct jsonw *w, const char *key)
{
	separate(w);
	put_string(w->out, key);
	fputc(':', w->out);
	w->after_key = true;
}

void jsonw_string(struct jsonw *w, const char *s)
{
	separate(w);
	if (s)
		put_string(w->out, s);
	else
		fputs("null", w->out);
}

void jsonw_u64(struct jsonw *w, uint64_t v)
{
	separate(w);
	fprintf(w->out, "%" PRIu64, v);
}

void jsonw_i64(struct jsonw *w, int64_t v)
{
	separate(w);
	fprintf(w->out, "%" PRId64, v);
}

void jsonw_member_string(struct jsonw *w, const char *key, const char *s)
{
	jsonw_key(w, key);
	jsonw_string(w, s);
}

void jsonw_member_u64(struct jsonw *w, const char *key, uint64_t v)
{
	jsonw_key(w, key);
	jsonw_u64(w, v);
}

void jsonw_member_bool(struct jsonw *w, const char *key, bool v)
{
	jsonw_key(w, key);
	jsonw_bool(w, v);
}

void jsonw_double(struct jsonw *w, double v, int decimals)
{
	separate(w);
	fprintf(w->out, "%.*f", decimals, v);
}

void jsonw_bool(struct jsonw *w, bool v)
{
	separate(w);
	fputs(v ? "true" : "false", w->out);
}

void jsonw_null(struct jsonw *w)
{
	separate(w);
	fputs("null", w->out);
}

void jsonw_raw(struct jsonw *w, const char *json)
{
	separate(w);
	if (!json) {
		fputs("null", w->out);
		return;
	}
	size_t n = strlen(json);
	while (n > 0 && (json[n - 1] == '\n' || json[n - 1] == ' ' || json[n - 1] == '\r' || json[n - 1] == '\t'))
		n--;
	fwrite(json, 1, n, w->out);
}
