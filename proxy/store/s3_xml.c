/* s3_xml: the little XML that S3 answers with (s3_xml.h). No parser library:
 * S3's documents are flat and generated, and we read a handful of elements by
 * name. Every scan is bounded by the end of the buffer (memmem, never a
 * terminator we did not check), every copy by the output's size; what does not
 * fit or does not decode is refused, never truncated silently. Talks to
 * nobody; s3.c calls it. */
#include "s3_xml.h"

#include <stdio.h>
#include <string.h>

/* the text between <tag> and </tag> at or after *from (before end); advances *from past it */
bool s3_xml_span(const char **from, const char *end, const char *tag, const char **vs, const char **ve)
{
	char open[64], close[64];
	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	const char *a = memmem(*from, (size_t)(end - *from), open, strlen(open));
	if (!a)
		return false;
	a += strlen(open);
	const char *b = memmem(a, (size_t)(end - a), close, strlen(close));
	if (!b)
		return false;
	*vs = a;
	*ve = b;
	*from = b + strlen(close);
	return true;
}

/* decode the five XML entities and &#N; / &#xN; (ASCII only); false when it does not fit or is malformed */
bool s3_xml_text(char *out, size_t cap, const char *s, const char *e)
{
	static const struct { const char *ent; char c; } ents[] = {
		{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
	size_t n = 0;
	if (cap == 0)
		return false;
	while (s < e) {
		char ch = *s;
		if (ch == '&') {
			size_t k = 0, nents = sizeof(ents) / sizeof(ents[0]);
			for (; k < nents; k++)
				if ((size_t)(e - s) >= strlen(ents[k].ent) && strncmp(s, ents[k].ent, strlen(ents[k].ent)) == 0)
					break;
			if (k < nents) {
				ch = ents[k].c;
				s += strlen(ents[k].ent);
			} else if (e - s > 3 && s[1] == '#') {
				/* &#N; or &#xN;, read within [s, e) only */
				bool hex = s[2] == 'x';
				const char *d = s + (hex ? 3 : 2);
				long v = 0;
				int digits = 0;
				for (; d < e && *d != ';' && digits < 6; d++, digits++) {
					int x = *d >= '0' && *d <= '9' ? *d - '0'
					        : hex && *d >= 'a' && *d <= 'f' ? *d - 'a' + 10
					        : hex && *d >= 'A' && *d <= 'F' ? *d - 'A' + 10 : -1;
					if (x < 0)
						return false;
					v = v * (hex ? 16 : 10) + x;
				}
				if (d >= e || *d != ';' || digits == 0 || v <= 0 || v > 127)
					return false;
				ch = (char)v;
				s = d + 1;
			} else {
				return false;
			}
		} else {
			s++;
		}
		if (n + 1 >= cap)
			return false;
		out[n++] = ch;
	}
	out[n] = '\0';
	return true;
}

/* the text of the first <tag> in the document, decoded, or "" */
void s3_xml_get(char *out, size_t cap, const char *doc, size_t len, const char *tag)
{
	const char *from = doc, *vs, *ve;
	out[0] = '\0';
	if (doc && s3_xml_span(&from, doc + len, tag, &vs, &ve) && !s3_xml_text(out, cap, vs, ve))
		out[0] = '\0';
}
