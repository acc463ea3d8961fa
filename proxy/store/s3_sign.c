/* s3_sign: AWS Signature Version 4, computed with OpenSSL (see s3_sign.h).
 *
 * Canonical request, per the SigV4 documentation ("Create a canonical request"):
 *   METHOD \n URI \n QUERY \n HEADERS (name:value\n each) \n SIGNED-HEADERS \n PAYLOAD-HASH
 * with the query sorted by encoded name then value, header names lower-cased
 * and sorted byte-wise (so "x-amz-copy-source" comes before
 * "x-amz-copy-source-if-match", which libcurl 7.88's own signer gets wrong),
 * values trimmed with inner runs of spaces collapsed. The string to sign is
 * "AWS4-HMAC-SHA256\n<date>\n<day>/<region>/<service>/aws4_request\n<hex sha256
 * of the canonical request>"; the key is HMAC("AWS4"+secret, day) chained
 * over region, service and "aws4_request".
 *
 * Talks to nobody; s3.c calls it for every request it sends. Strings are
 * built with open_memstream; nothing is kept between calls. */
#include "s3_sign.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIGN_MAX_ITEMS 64 /* headers or query parameters in one request */

static bool unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
	       c == '_' || c == '~';
}

size_t s3_sign_uri_encode(char *out, size_t cap, const char *s, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (unreserved(*p) || (keep_slash && *p == '/')) {
			if (n + 1 < cap)
				out[n] = (char)*p;
			n++;
		} else {
			if (n + 3 < cap) {
				out[n] = '%';
				out[n + 1] = hex[*p >> 4];
				out[n + 2] = hex[*p & 15];
			}
			n += 3;
		}
	}
	if (cap)
		out[n < cap ? n : cap - 1] = '\0';
	return n;
}

/* a freshly allocated encoding of s, or NULL */
static char *encode_new(const char *s, bool keep_slash)
{
	size_t n = s3_sign_uri_encode(NULL, 0, s, keep_slash);
	char *o = malloc(n + 1);
	if (o)
		(void)s3_sign_uri_encode(o, n + 1, s, keep_slash);
	return o;
}

void s3_sign_sha256_hex(char out[65], const void *buf, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[SHA256_DIGEST_LENGTH];
	SHA256(buf, len, md);
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = '\0';
}

struct qitem {
	char *name;
	char *value;
};

static int qitem_cmp(const void *a, const void *b)
{
	const struct qitem *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : strcmp(x->value, y->value);
}

/* QUERY line: each name and value encoded ('/' too), sorted, "name=value" joined by '&' */
static enum rs_code put_query(FILE *f, const struct s3_sign_request *r, struct rs_err *err)
{
	struct qitem q[SIGN_MAX_ITEMS];
	size_t n = 0;
	enum rs_code rc = RS_OK;
	if (r->nquery > SIGN_MAX_ITEMS)
		return rs_err_set(err, RS_TOO_LARGE, "sigv4: %zu query parameters, limit is %d", r->nquery, SIGN_MAX_ITEMS);
	for (; n < r->nquery; n++) {
		q[n].name = encode_new(r->query[n].name, false);
		q[n].value = encode_new(r->query[n].value ? r->query[n].value : "", false);
		if (!q[n].name || !q[n].value) {
			n++;
			rc = rs_err_set(err, RS_NOMEM, "sigv4: out of memory");
			goto out;
		}
	}
	qsort(q, n, sizeof(q[0]), qitem_cmp);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s%s=%s", i ? "&" : "", q[i].name, q[i].value);
out:
	for (size_t i = 0; i < n; i++) {
		free(q[i].name);
		free(q[i].value);
	}
	return rc;
}

/* a header value trimmed, inner runs of spaces and tabs collapsed to one space */
static void put_trimmed(FILE *f, const char *v)
{
	bool space = false, any = false;
	for (; *v; v++) {
		if (*v == ' ' || *v == '\t') {
			space = any;
			continue;
		}
		if (space)
			fputc(' ', f);
		fputc(*v, f);
		space = false;
		any = true;
	}
}

static int hname_cmp(const char *a, const char *b)
{
	for (;; a++, b++) {
		int x = (unsigned char)*a, y = (unsigned char)*b;
		if (x >= 'A' && x <= 'Z')
			x += 32;
		if (y >= 'A' && y <= 'Z')
			y += 32;
		if (x != y || !x)
			return x - y;
	}
}

static void put_lower(FILE *f, const char *s)
{
	for (; *s; s++)
		fputc((*s >= 'A' && *s <= 'Z') ? *s + 32 : *s, f);
}

/* HEADERS lines then the SIGNED-HEADERS line (into sf as well, for the Authorization header) */
static enum rs_code put_headers(FILE *f, FILE *sf, const struct s3_sign_request *r, struct rs_err *err)
{
	size_t idx[SIGN_MAX_ITEMS], n = r->nheaders;
	if (n > SIGN_MAX_ITEMS)
		return rs_err_set(err, RS_TOO_LARGE, "sigv4: %zu headers, limit is %d", n, SIGN_MAX_ITEMS);
	/* stable insertion sort by lower-case name: repeated names keep the order they were given in */
	for (size_t i = 0; i < n; i++) {
		size_t j = i;
		for (; j > 0 && hname_cmp(r->headers[idx[j - 1]].name, r->headers[i].name) > 0; j--)
			idx[j] = idx[j - 1];
		idx[j] = i;
	}
	for (size_t i = 0; i < n; i++) {
		const struct s3_sign_header *h = &r->headers[idx[i]];
		if (!h->name[0] || strpbrk(h->name, ":\r\n ") || strpbrk(h->value, "\r\n"))
			return rs_err_set(err, RS_BAD_INPUT, "sigv4: header '%.40s' cannot be signed", h->name);
		if (i > 0 && hname_cmp(r->headers[idx[i - 1]].name, h->name) == 0) {
			fputc(',', f);
		} else {
			if (i > 0)
				fputc('\n', f);
			put_lower(f, h->name);
			fputc(':', f);
			if (sf != f) {
				if (i > 0)
					fputc(';', sf);
				put_lower(sf, h->name);
			}
		}
		put_trimmed(f, h->value);
	}
	fputc('\n', f);
	return RS_OK;
}

static bool valid_date(const char *d)
{
	if (!d || strlen(d) != 16 || d[8] != 'T' || d[15] != 'Z')
		return false;
	for (int i = 0; i < 15; i++)
		if (i != 8 && (d[i] < '0' || d[i] > '9'))
			return false;
	return true;
}

static void hmac(unsigned char out[32], const void *key, size_t klen, const char *msg)
{
	unsigned int ol = 32;
	HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &ol);
}

/* the canonical request and the signed-header list, both NUL-terminated and malloc'd */
static enum rs_code canonical(char **out_creq, char **out_signed, const struct s3_sign_request *r, struct rs_err *err)
{
	char *creq = NULL, *sh = NULL, *path = NULL;
	size_t clen = 0, slen = 0;
	enum rs_code rc = RS_NOMEM;
	FILE *f = open_memstream(&creq, &clen);
	FILE *sf = f ? open_memstream(&sh, &slen) : NULL;
	path = encode_new(r->path && r->path[0] ? r->path : "/", true);
	if (!f || !sf || !path) {
		rs_err_set(err, RS_NOMEM, "sigv4: out of memory");
		goto out;
	}
	fprintf(f, "%s\n%s\n", r->method, path);
	if ((rc = put_query(f, r, err)) != RS_OK)
		goto out;
	fputc('\n', f);
	if ((rc = put_headers(f, sf, r, err)) != RS_OK)
		goto out;
	fflush(sf);
	fprintf(f, "\n%s\n%s", sh, r->payload_hash);
out:
	free(path);
	if (sf && fclose(sf) != 0 && rc == RS_OK)
		rc = rs_err_set(err, RS_NOMEM, "sigv4: out of memory");
	if (f && fclose(f) != 0 && rc == RS_OK)
		rc = rs_err_set(err, RS_NOMEM, "sigv4: out of memory");
	if (rc != RS_OK) {
		free(creq);
		free(sh);
		return rc;
	}
	*out_creq = creq;
	*out_signed = sh;
	return RS_OK;
}

enum rs_code s3_sign_explain(struct s3_sign_explained *out, const struct s3_sign_request *r, struct rs_err *err)
{
	char *sh = NULL, hash[65], day[9], sig[65];
	unsigned char k[32];
	enum rs_code rc;
	memset(out, 0, sizeof(*out));
	if (!valid_date(r->amz_date))
		return rs_err_set(err, RS_BAD_INPUT, "sigv4: x-amz-date '%.20s' is not YYYYMMDDTHHMMSSZ",
		                  r->amz_date ? r->amz_date : "");
	if ((rc = canonical(&out->canonical_request, &sh, r, err)) != RS_OK)
		return rc;
	memcpy(day, r->amz_date, 8);
	day[8] = '\0';
	s3_sign_sha256_hex(hash, out->canonical_request, strlen(out->canonical_request));
	if (asprintf(&out->string_to_sign, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", r->amz_date, day,
	             r->region, r->service, hash) < 0) {
		out->string_to_sign = NULL;
		goto nomem;
	}
	{
		char *kSecret = NULL;
		if (asprintf(&kSecret, "AWS4%s", r->secret_key) < 0)
			goto nomem;
		hmac(k, kSecret, strlen(kSecret), day);
		OPENSSL_cleanse(kSecret, strlen(kSecret));
		free(kSecret);
	}
	hmac(k, k, 32, r->region);
	hmac(k, k, 32, r->service);
	hmac(k, k, 32, "aws4_request");
	hmac(k, k, 32, out->string_to_sign);
	for (int i = 0; i < 32; i++)
		snprintf(sig + 2 * i, 3, "%02x", k[i]);
	OPENSSL_cleanse(k, sizeof(k));
	if (asprintf(&out->authorization, "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, Signature=%s",
	             r->access_key, day, r->region, r->service, sh, sig) < 0) {
		out->authorization = NULL;
		goto nomem;
	}
	free(sh);
	return RS_OK;
nomem:
	free(sh);
	s3_sign_explained_dispose(out);
	return rs_err_set(err, RS_NOMEM, "sigv4: out of memory");
}

void s3_sign_explained_dispose(struct s3_sign_explained *e)
{
	free(e->canonical_request);
	free(e->string_to_sign);
	free(e->authorization);
	memset(e, 0, sizeof(*e));
}

enum rs_code s3_sign(char *out, size_t cap, const struct s3_sign_request *r, struct rs_err *err)
{
	struct s3_sign_explained e;
	enum rs_code rc = s3_sign_explain(&e, r, err);
	if (rc != RS_OK)
		return rc;
	size_t n = strlen(e.authorization);
	if (n >= cap)
		rc = rs_err_set(err, RS_TOO_LARGE, "sigv4: Authorization is %zu bytes, room for %zu", n, cap);
	else
		memcpy(out, e.authorization, n + 1);
	s3_sign_explained_dispose(&e);
	return rc;
}
