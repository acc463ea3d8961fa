/* s3_xml: reading S3's small XML answers (error documents, ListObjectsV2,
 * multipart) without a parser library: the text of <Tag>...</Tag> elements
 * without attributes, the five XML entities and ASCII character references
 * decoded. CDATA, namespaces on the elements read and non-ASCII character
 * references are not supported (S3 does not send them there). */
#ifndef RS_STORE_S3_XML_H
#define RS_STORE_S3_XML_H

#include <stdbool.h>
#include <stddef.h>

/* The text between the first <tag> at or after *from and its </tag>, both
 * before end: *vs..*ve (borrowed from the buffer). Advances *from past the
 * closing tag. false when there is no complete element. */
bool s3_xml_span(const char **from, const char *end, const char *tag, const char **vs, const char **ve);

/* Decode s..e into out (cap bytes, NUL-terminated): false when it does not fit
 * or holds an entity we do not know (out is then unspecified). */
bool s3_xml_text(char *out, size_t cap, const char *s, const char *e);

/* The decoded text of the first <tag> of the len bytes at doc (doc may be
 * NULL), or "" when absent or undecodable. */
void s3_xml_get(char *out, size_t cap, const char *doc, size_t len, const char *tag);

#endif
