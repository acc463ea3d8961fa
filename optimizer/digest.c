/* digest: SHA-256 through OpenSSL's EVP interface with a byte counter.
 * Digest strings are validated strictly: only sha256 with lower-case hex is
 * accepted, since every path and cache key is built from it. */
#include "digest.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

struct digest_ctx {
	EVP_MD_CTX *md;
	uint64_t count;
};

struct digest_ctx *digest_new(void)
{
	struct digest_ctx *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->md = EVP_MD_CTX_new();
	if (!d->md || EVP_DigestInit_ex(d->md, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(d->md);
		free(d);
		return NULL;
	}
	return d;
}

void digest_free(struct digest_ctx *d)
{
	if (!d)
		return;
	EVP_MD_CTX_free(d->md);
	free(d);
}

void digest_update(struct digest_ctx *d, const void *buf, size_t len)
{
	if (len == 0)
		return;
	/* EVP_DigestUpdate on an initialised SHA-256 context cannot fail. */
	(void)EVP_DigestUpdate(d->md, buf, len);
	d->count += len;
}

uint64_t digest_count(const struct digest_ctx *d)
{
	return d->count;
}

static void to_hex(char *out, const unsigned char *md, unsigned n)
{
	static const char hx[] = "0123456789abcdef";
	for (unsigned i = 0; i < n; i++) {
		out[2 * i] = hx[md[i] >> 4];
		out[2 * i + 1] = hx[md[i] & 15];
	}
	out[2 * n] = '\0';
}

void digest_final(struct digest_ctx *d, char out[DIGEST_STR_SIZE])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	EVP_MD_CTX *copy = EVP_MD_CTX_new();
	/* Finalise a copy so the running hash can go on. */
	if (!copy || EVP_MD_CTX_copy_ex(copy, d->md) != 1 || EVP_DigestFinal_ex(copy, md, &n) != 1)
		abort(); /* only allocation can fail here; nothing sane to return */
	EVP_MD_CTX_free(copy);
	memcpy(out, "sha256:", 7);
	to_hex(out + 7, md, n);
}

void digest_reset(struct digest_ctx *d)
{
	(void)EVP_DigestInit_ex(d->md, EVP_sha256(), NULL);
	d->count = 0;
}

void digest_buffer(char out[DIGEST_STR_SIZE], const void *buf, size_t len)
{
	unsigned char md[32];
	unsigned n = 0;
	if (EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL) != 1)
		abort();
	memcpy(out, "sha256:", 7);
	to_hex(out + 7, md, n);
}

bool digest_valid(const char *s)
{
	if (!s || strncmp(s, "sha256:", 7) != 0)
		return false;
	const char *h = s + 7;
	size_t i;
	for (i = 0; h[i]; i++) {
		char c = h[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	}
	return i == DIGEST_HEX_LEN;
}

enum rs_code digest_parse(const char *s, struct rs_err *err)
{
	if (digest_valid(s))
		return RS_OK;
	const char *colon = s ? strchr(s, ':') : NULL;
	if (colon && strncmp(s, "sha256:", 7) != 0) {
		int alg_len = (int)(colon - s);
		if (alg_len > 32)
			alg_len = 32;
		return rs_err_set(err, RS_UNSUPPORTED, "digest algorithm '%.*s' is not supported (only sha256)",
		                  alg_len, s);
	}
	return rs_err_set(err, RS_DIGEST_INVALID,
	                  "invalid digest '%.80s': expected sha256: and 64 lower-case hex digits",
	                  s ? s : "(null)");
}

const char *digest_hex(const char *s)
{
	return s + 7;
}
