/* peer: the peer streaming client and the peer request authentication
 * (peer.h). One libcurl easy handle per call: a replica asks a peer only
 * when it found the blob's lock held, so a pool would rarely be reused. It
 * talks to libcurl and OpenSSL's HMAC; no logging, no store, no cluster. */
#include "peer.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------ authentication */

/* hex HMAC-SHA256(secret, "METHOD\nPATH\nTIME") into out (65 bytes). */
static void mac_hex(char out[65], const char *secret, const char *method, const char *path, int64_t t)
{
	char msg[2048];
	int n = snprintf(msg, sizeof(msg), "%s\n%s\n%" PRId64, method, path, t);
	if (n < 0 || (size_t)n >= sizeof(msg))
		n = 0; /* a path that long is refused by the server before; sign nothing useful */
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)msg, (size_t)n, mac, &len))
		len = 0;
	static const char hx[] = "0123456789abcdef";
	memset(out, '0', 64);
	for (unsigned i = 0; i < len && i < 32; i++) {
		out[2 * i] = hx[mac[i] >> 4];
		out[2 * i + 1] = hx[mac[i] & 15];
	}
	out[64] = '\0';
}

void peer_auth_sign(char out[PEER_AUTH_MAX], const char *secret, const char *method, const char *path, int64_t now)
{
	char mac[65];
	mac_hex(mac, secret ? secret : "", method, path, now);
	snprintf(out, PEER_AUTH_MAX, "%" PRId64 " %s", now, mac);
}

bool peer_auth_check(const char *value, const char *secret, const char *method, const char *path, int64_t now)
{
	if (!value || !secret || !secret[0])
		return false;
	int64_t t = 0;
	size_t i = 0;
	for (; value[i] >= '0' && value[i] <= '9' && i < 19; i++)
		t = t * 10 + (value[i] - '0');
	if (i == 0 || value[i] != ' ' || strlen(value + i + 1) != 64)
		return false;
	if (t > now + PEER_AUTH_SKEW_S || t < now - PEER_AUTH_SKEW_S)
		return false;
	char want[65];
	mac_hex(want, secret, method, path, t);
	return CRYPTO_memcmp(want, value + i + 1, 64) == 0;
}

/* ------------------------------------------------------------ the client */

struct call {
	CURL *h;
	peer_begin_fn begin;
	peer_data_fn data;
	void *arg;
	bool began;
	long status;
	struct rs_err cb_err; /* a callback's error, which stops the transfer */
	bool cb_failed;
};

/* The body of a 200 goes to the callbacks (begin first); any other body is
 * dropped. */
static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct call *c = ud;
	size_t len = size * nmemb;
	if (!c->status)
		curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &c->status);
	if (c->status != 200)
		return len;
	enum rs_code rc = RS_OK;
	if (!c->began) {
		curl_off_t cl = -1;
		if (curl_easy_getinfo(c->h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) != CURLE_OK)
			cl = -1;
		c->began = true;
		rc = c->begin(c->arg, cl >= 0 ? (int64_t)cl : -1, &c->cb_err);
	}
	if (rc == RS_OK && len)
		rc = c->data(c->arg, ptr, len, &c->cb_err);
	if (rc != RS_OK) {
		c->cb_failed = true;
		return 0; /* stops the transfer */
	}
	return len;
}

enum rs_code peer_blob_get(const char *base_url, const char *secret, const char *digest, unsigned connect_ms,
                           unsigned stall_s, peer_begin_fn begin, peer_data_fn data, void *arg, bool *out_began,
                           struct rs_err *err)
{
	*out_began = false;
	char path[256];
	char url[2048];
	snprintf(path, sizeof(path), "%s%s", PEER_BLOB_PATH, digest);
	int n = snprintf(url, sizeof(url), "%s%s", base_url, path);
	if (n < 0 || (size_t)n >= sizeof(url))
		return rs_err_set(err, RS_BAD_INPUT, "peer URL too long: %.200s", base_url);
	char auth[PEER_AUTH_MAX];
	char hdr[PEER_AUTH_MAX + 64];
	peer_auth_sign(auth, secret, "GET", path, (int64_t)time(NULL));
	snprintf(hdr, sizeof(hdr), "%s: %s", PEER_AUTH_HEADER, auth);
	struct call c = {.begin = begin, .data = data, .arg = arg};
	if (!(c.h = curl_easy_init()))
		return rs_err_set(err, RS_NOMEM, "peer %s: cannot create a transfer", base_url);
	struct curl_slist *hl = curl_slist_append(NULL, hdr);
	if (!hl) {
		curl_easy_cleanup(c.h);
		return rs_err_set(err, RS_NOMEM, "peer %s: out of memory", base_url);
	}
	char ebuf[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(c.h, CURLOPT_URL, url);
	curl_easy_setopt(c.h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c.h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c.h, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_ms);
	curl_easy_setopt(c.h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c.h, CURLOPT_LOW_SPEED_TIME, (long)stall_s);
	curl_easy_setopt(c.h, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(c.h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c.h, CURLOPT_WRITEDATA, &c);
	curl_easy_setopt(c.h, CURLOPT_ERRORBUFFER, ebuf);
	curl_easy_setopt(c.h, CURLOPT_USERAGENT, "regslim-peer");
	CURLcode cc = curl_easy_perform(c.h);
	if (!c.status)
		curl_easy_getinfo(c.h, CURLINFO_RESPONSE_CODE, &c.status);
	enum rs_code rc = RS_OK;
	if (c.cb_failed) {
		*err = c.cb_err;
		rc = c.cb_err.code ? c.cb_err.code : RS_IO;
	} else if (cc != CURLE_OK) {
		rc = rs_err_set(err, RS_UPSTREAM, "peer %s: GET %s: %s%s%s", base_url, path, curl_easy_strerror(cc),
		                ebuf[0] ? ": " : "", ebuf);
	} else if (c.status == 200 && !c.began) { /* an empty body */
		c.began = true;
		rc = begin(arg, 0, err);
	} else if (c.status != 200) {
		rc = rs_err_set(err, c.status == 404 ? RS_NOT_FOUND : c.status == 401 ? RS_UNAUTHORIZED : RS_UPSTREAM,
		                "peer %s answered HTTP %ld for %s", base_url, c.status, path);
	}
	*out_began = c.began;
	curl_slist_free_all(hl);
	curl_easy_cleanup(c.h);
	return rc;
}
