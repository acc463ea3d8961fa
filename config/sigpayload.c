/* sigpayload: makes and checks the simple-signing payload and reads and
 * writes regslim's signature list documents (sigpayload.h). Pure JSON and
 * base64 over memory: no files, no cryptography, no network; proxy/sign/ is
 * its only caller. Base64 is the standard alphabet with padding (RFC 4648
 * section 4), decoded strictly. */
#include "sigpayload.h"

#include "xalloc.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* A new NUL-terminated base64 text of buf (free()), or NULL. */
static char *b64_encode(const unsigned char *buf, size_t len)
{
	char *out = xalloc_malloc((len + 2) / 3 * 4 + 1);
	if (!out)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < len; i += 3) {
		unsigned v = (unsigned)buf[i] << 16;
		if (i + 1 < len)
			v |= (unsigned)buf[i + 1] << 8;
		if (i + 2 < len)
			v |= buf[i + 2];
		out[o++] = b64[(v >> 18) & 63];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = i + 1 < len ? b64[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? b64[v & 63] : '=';
	}
	out[o] = '\0';
	return out;
}

static int b64_value(char c)
{
	const char *p = c ? strchr(b64, c) : NULL;
	return p ? (int)(p - b64) : -1;
}

/* Decode s strictly (length a multiple of 4, padding only at the end).
 * false for bad input; *out NULL with true means out of memory. */
static bool b64_decode(unsigned char **out, size_t *out_len, const char *s)
{
	size_t n = strlen(s);
	*out = NULL;
	if (n == 0 || n % 4)
		return false;
	size_t pad = s[n - 1] == '=' ? (s[n - 2] == '=' ? 2 : 1) : 0;
	unsigned char *buf = xalloc_malloc(n / 4 * 3);
	if (!buf)
		return true;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 4) {
		int q[4];
		for (int k = 0; k < 4; k++) {
			bool padded = i + 4 == n && (size_t)k >= 4 - pad;
			q[k] = padded ? 0 : b64_value(s[i + (size_t)k]);
			if (q[k] < 0) {
				free(buf);
				return false;
			}
		}
		unsigned v = (unsigned)q[0] << 18 | (unsigned)q[1] << 12 | (unsigned)q[2] << 6 | (unsigned)q[3];
		buf[o++] = (unsigned char)(v >> 16);
		if (!(i + 4 == n && pad == 2))
			buf[o++] = (unsigned char)(v >> 8);
		if (!(i + 4 == n && pad))
			buf[o++] = (unsigned char)v;
	}
	*out = buf;
	*out_len = o;
	return true;
}

/* jansson's text into a buffer of ours (free()). */
static enum rs_code take_dump(json_t *root, char **out, size_t *out_len, struct rs_err *err)
{
	char *text = root ? json_dumps(root, JSON_COMPACT) : NULL;
	json_decref(root);
	if (!text)
		return rs_err_set(err, RS_NOMEM, "out of memory writing a signature document");
	*out = xalloc_strdup(text);
	json_free_t release = NULL;
	json_get_alloc_funcs(NULL, &release);
	if (release)
		release(text);
	if (!*out)
		return rs_err_set(err, RS_NOMEM, "out of memory writing a signature document");
	*out_len = strlen(*out);
	return RS_OK;
}

enum rs_code sigpayload_make(char **out, size_t *out_len, const char *identity, const char *digest,
                             const char *creator, int64_t timestamp, struct rs_err *err)
{
	json_t *root = json_pack("{s:{s:{s:s},s:{s:s},s:s},s:{s:s,s:I}}", "critical", "identity", "docker-reference",
	                         identity, "image", "docker-manifest-digest", digest, "type", SIGPAYLOAD_TYPE,
	                         "optional", "creator", creator, "timestamp", (json_int_t)timestamp);
	return take_dump(root, out, out_len, err);
}

/* Split a reference into its name (out, NUL-terminated) and tag (NULL when
 * none or a digest reference). false when it does not fit. */
static bool split_reference(char *name, size_t cap, const char **tag, const char *ref)
{
	size_t n = strcspn(ref, "@");
	const char *slash = strrchr(ref, '/');
	const char *colon = strrchr(ref, ':');
	*tag = NULL;
	if (!ref[n] && colon && (!slash || colon > slash)) {
		n = (size_t)(colon - ref);
		*tag = colon + 1;
	}
	if (n >= cap)
		return false;
	memcpy(name, ref, n);
	name[n] = '\0';
	return true;
}

enum rs_code sigpayload_check(const char *payload, size_t len, const char *digest, const char *repository,
                              const char *tag, struct rs_err *err)
{
	return sigpayload_check_type(payload, len, SIGPAYLOAD_TYPE, digest, repository, tag, err);
}

enum rs_code sigpayload_check_type(const char *payload, size_t len, const char *want_type, const char *digest,
                                   const char *repository, const char *tag, struct rs_err *err)
{
	json_error_t jerr;
	json_t *root = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &jerr);
	const char *type = NULL, *ref = NULL, *signed_digest = NULL;
	if (!root || json_unpack(root, "{s:{s:s,s:{s:s},s:{s:s}}}", "critical", "type", &type, "identity",
	                         "docker-reference", &ref, "image", "docker-manifest-digest", &signed_digest) != 0) {
		json_decref(root);
		return rs_err_set(err, RS_BAD_INPUT, "the signed payload is not a simple-signing document");
	}
	enum rs_code rc = RS_OK;
	char name[512];
	const char *signed_tag = NULL;
	if (strcmp(type, want_type) != 0)
		rc = rs_err_set(err, RS_POLICY, "signature type \"%.60s\" is not \"%s\"", type, want_type);
	else if (strcmp(signed_digest, digest) != 0)
		rc = rs_err_set(err, RS_POLICY, "signed digest %.80s is not %.80s", signed_digest, digest);
	else if (!split_reference(name, sizeof(name), &signed_tag, ref) || strcmp(name, repository) != 0)
		rc = rs_err_set(err, RS_POLICY, "signed identity %.100s is not of %.100s", ref, repository);
	else if (tag && signed_tag && strcmp(signed_tag, tag) != 0)
		rc = rs_err_set(err, RS_POLICY, "signed identity %.100s is not tag %.60s", ref, tag);
	json_decref(root);
	return rc;
}

void sigdoc_dispose(struct sigdoc *doc)
{
	for (size_t i = 0; doc->v && i < doc->n; i++) {
		free(doc->v[i].identity);
		free(doc->v[i].signature);
	}
	free(doc->v);
	doc->v = NULL;
	doc->n = 0;
}

enum rs_code sigdoc_add(struct sigdoc *doc, const char *identity, const void *sig, size_t sig_len, size_t max,
                        struct rs_err *err)
{
	if (max && doc->n >= max) {
		free(doc->v[0].identity);
		free(doc->v[0].signature);
		memmove(doc->v, doc->v + 1, (doc->n - 1) * sizeof(*doc->v));
		doc->n--;
	}
	struct sigdoc_entry e = {xalloc_strdup(identity), xalloc_malloc(sig_len ? sig_len : 1), sig_len};
	struct sigdoc_entry *v = xalloc_realloc(doc->v, (doc->n + 1) * sizeof(*v));
	if (!e.identity || !e.signature || !v) {
		free(e.identity);
		free(e.signature);
		if (v)
			doc->v = v;
		return rs_err_set(err, RS_NOMEM, "out of memory adding a signature");
	}
	memcpy(e.signature, sig, sig_len);
	doc->v = v;
	doc->v[doc->n++] = e;
	return RS_OK;
}

long sigdoc_find(const struct sigdoc *doc, const char *identity)
{
	for (size_t i = 0; i < doc->n; i++)
		if (strcmp(doc->v[i].identity, identity) == 0)
			return (long)i;
	return -1;
}

enum rs_code sigdoc_parse(struct sigdoc *doc, const char *text, size_t len, struct rs_err *err)
{
	json_error_t jerr;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	json_t *arr = root ? json_object_get(root, "signatures") : NULL;
	enum rs_code rc = RS_OK;
	if (!json_is_array(arr))
		rc = rs_err_set(err, RS_BAD_INPUT, "signature document: expected {\"signatures\": [...]}");
	for (size_t i = 0; rc == RS_OK && i < json_array_size(arr); i++) {
		const char *id = NULL, *sig = NULL;
		unsigned char *bin = NULL;
		size_t bin_len = 0;
		if (json_unpack(json_array_get(arr, i), "{s:s,s:s}", "identity", &id, "signature", &sig) != 0 ||
		    !b64_decode(&bin, &bin_len, sig)) {
			rc = rs_err_set(err, RS_BAD_INPUT, "signature document: entry %zu is not {identity, signature}", i);
			break;
		}
		if (!bin) {
			rc = rs_err_set(err, RS_NOMEM, "out of memory reading a signature document");
			break;
		}
		rc = sigdoc_add(doc, id, bin, bin_len, 0, err);
		free(bin);
	}
	json_decref(root);
	if (rc)
		sigdoc_dispose(doc);
	return rc;
}

enum rs_code sigpayload_base64_decode(unsigned char **out, size_t *out_len, const char *s, struct rs_err *err)
{
	if (!b64_decode(out, out_len, s))
		return rs_err_set(err, RS_BAD_INPUT, "not base64 text");
	return *out ? RS_OK : rs_err_set(err, RS_NOMEM, "out of memory decoding base64");
}

enum rs_code sigdoc_parse_extension(struct sigdoc *doc, const char *text, size_t len, size_t max, struct rs_err *err)
{
	json_error_t jerr;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	json_t *arr = root ? json_object_get(root, "signatures") : NULL;
	enum rs_code rc = RS_OK;
	if (!json_is_array(arr))
		rc = rs_err_set(err, RS_BAD_INPUT, "signature extension answer: expected {\"signatures\": [...]}");
	for (size_t i = 0; rc == RS_OK && i < json_array_size(arr) && doc->n < max; i++) {
		const char *type = NULL, *name = "", *content = NULL;
		unsigned char *bin = NULL;
		size_t bin_len = 0;
		if (json_unpack(json_array_get(arr, i), "{s:s,s:s,s?s}", "type", &type, "content", &content, "name",
		                &name) != 0 || !b64_decode(&bin, &bin_len, content)) {
			rc = rs_err_set(err, RS_BAD_INPUT, "signature extension answer: entry %zu is not {type, content}", i);
			break;
		}
		if (!bin) {
			rc = rs_err_set(err, RS_NOMEM, "out of memory reading a signature extension answer");
			break;
		}
		if (strcmp(type, "atomic") == 0)
			rc = sigdoc_add(doc, name, bin, bin_len, 0, err);
		free(bin);
	}
	json_decref(root);
	if (rc)
		sigdoc_dispose(doc);
	return rc;
}

enum rs_code sigdoc_dump(const struct sigdoc *doc, char **out, size_t *out_len, struct rs_err *err)
{
	json_t *arr = json_array();
	json_t *root = arr ? json_pack("{s:o}", "signatures", arr) : NULL;
	bool ok = root != NULL;
	for (size_t i = 0; ok && i < doc->n; i++) {
		char *s = b64_encode(doc->v[i].signature, doc->v[i].signature_len);
		json_t *e = s ? json_pack("{s:s,s:s}", "identity", doc->v[i].identity, "signature", s) : NULL;
		free(s);
		ok = e && json_array_append_new(arr, e) == 0;
	}
	if (!ok) {
		json_decref(root);
		return rs_err_set(err, RS_NOMEM, "out of memory writing a signature document");
	}
	return take_dump(root, out, out_len, err);
}
