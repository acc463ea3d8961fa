/* s3: the S3 client of the store's s3 driver (see s3.h): URLs, signing,
 * one libcurl exchange per attempt, retries, error wording, the object and
 * multipart operations; s3_xml.c reads their small XML answers.
 *
 * Why the signature is ours and not libcurl's (CURLOPT_AWS_SIGV4): Debian 12's
 * libcurl 7.88 signs the payload hash but does not send x-amz-content-sha256
 * (RGW then assumes UNSIGNED-PAYLOAD and answers SignatureDoesNotMatch), does
 * not sort or percent-encode query parameters (ListObjectsV2's prefix with
 * '/', continuation tokens), needs '=' after valueless parameters ("?uploads")
 * and sorts header names that prefix one another wrongly. Working around all
 * four would mean pre-encoding every URL by hand anyway; s3_sign.c is ~300
 * lines pinned by AWS's published vectors. The signed URL we send is built
 * from the same sorted, encoded query the signature covers, so the two cannot
 * disagree.
 *
 * Why not upstream/xfer.h's transfer core: it carries the registry's auth
 * (challenges, tokens) and knows GET/HEAD/POST/PUT without custom headers; a
 * signed request needs its own headers (Host, x-amz-*, Range) computed per
 * attempt, DELETE, and bodies in both directions per call. Bending xfer to that
 * would give it a second personality; this file uses libcurl directly, the same
 * way (a small pool of easy handles, stall timeouts, streamed bodies).
 *
 * Talks to: libcurl, s3_sign.c; counts failed requests in obs/metrics.h
 * (regslim_s3_errors_total). Nothing here logs. */
#include "s3.h"

#include "metrics.h"
#include "s3_sign.h"
#include "s3_xml.h"

#include <curl/curl.h>
#include <openssl/crypto.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define POOL_MAX 32
#define ERR_BODY_MAX 65536          /* an error document kept to read its Code and Message */
#define DOC_MAX (8u << 20)          /* a listing or multipart document */
#define KEY_MAX 1024                /* S3's longest key */

struct s3_client {
	char *scheme;
	char *authority; /* host[:port] of the endpoint */
	char *base;      /* the endpoint's path, without trailing '/', usually "" */
	char *region;
	char *bucket;
	char *access_key;
	char *secret_key;
	bool vhost;
	long timeout_s;
	int max_attempts;
	long backoff_ms;
	size_t part_size;
	char *spool_dir;
	pthread_mutex_t lock;
	CURL *idle[POOL_MAX];
	int nidle;
};

/* ---- configuration ------------------------------------------------------ */

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static enum rs_code parse_endpoint(struct s3_client *c, const char *endpoint, struct rs_err *err)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
	enum rs_code rc = RS_OK;
	if (!u)
		return rs_err_set(err, RS_NOMEM, "s3: out of memory");
	if (curl_url_set(u, CURLUPART_URL, endpoint, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
		rc = rs_err_set(err, RS_CONFIG, "store.s3.endpoint '%.100s' is not an http(s) URL", endpoint);
		goto out;
	}
	(void)curl_url_get(u, CURLUPART_PORT, &port, 0); /* absent when the URL has none */
	(void)curl_url_get(u, CURLUPART_PATH, &path, 0);
	c->scheme = strdup(scheme);
	if (asprintf(&c->authority, "%s%s%s", host, port ? ":" : "", port ? port : "") < 0)
		c->authority = NULL;
	c->base = strdup(path ? path : "");
	if (c->base) {
		size_t n = strlen(c->base);
		while (n > 0 && c->base[n - 1] == '/')
			c->base[--n] = '\0';
	}
	if (!c->scheme || !c->authority || !c->base)
		rc = rs_err_set(err, RS_NOMEM, "s3: out of memory");
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
	return rc;
}

static bool bucket_name_ok(const char *b)
{
	size_t n = strlen(b);
	if (n < 3 || n > 63)
		return false;
	for (const char *p = b; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
			return false;
	return true;
}

enum rs_code s3_client_new(struct s3_client **out, const struct s3_config *cfg, struct rs_err *err)
{
	*out = NULL;
	const char *missing = !cfg->endpoint ? "endpoint" : !cfg->region ? "region" : !cfg->bucket ? "bucket"
	                      : !cfg->access_key ? "access key" : !cfg->secret_key ? "secret key" : NULL;
	if (missing)
		return rs_err_set(err, RS_CONFIG, "store.s3: no %s", missing);
	if (!bucket_name_ok(cfg->bucket))
		return rs_err_set(err, RS_CONFIG, "store.s3.bucket '%.70s' is not a bucket name (3-63 of a-z 0-9 . -)",
		                  cfg->bucket);
	if (cfg->part_size && cfg->part_size < S3_PART_MIN)
		return rs_err_set(err, RS_CONFIG, "s3 part size %zu is below S3's minimum of %u bytes", cfg->part_size,
		                  S3_PART_MIN);
	struct s3_client *c = calloc(1, sizeof(*c));
	if (!c)
		return rs_err_set(err, RS_NOMEM, "s3: out of memory");
	enum rs_code rc = parse_endpoint(c, cfg->endpoint, err);
	if (rc != RS_OK) {
		s3_client_free(c);
		return rc;
	}
	c->region = strdup(cfg->region);
	c->bucket = strdup(cfg->bucket);
	c->access_key = strdup(cfg->access_key);
	c->secret_key = strdup(cfg->secret_key);
	c->spool_dir = dup_or_null(cfg->spool_dir ? cfg->spool_dir : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	c->vhost = cfg->virtual_host;
	c->timeout_s = cfg->timeout_s > 0 ? cfg->timeout_s : 30;
	c->max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : 4;
	c->backoff_ms = cfg->backoff_ms > 0 ? cfg->backoff_ms : 200;
	c->part_size = cfg->part_size ? cfg->part_size : (8u << 20);
	pthread_mutex_init(&c->lock, NULL);
	if (!c->region || !c->bucket || !c->access_key || !c->secret_key || !c->spool_dir) {
		s3_client_free(c);
		return rs_err_set(err, RS_NOMEM, "s3: out of memory");
	}
	*out = c;
	return RS_OK;
}

static void wipe_free(char *s)
{
	if (s) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

void s3_client_free(struct s3_client *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->nidle; i++)
		curl_easy_cleanup(c->idle[i]);
	if (c->region)
		pthread_mutex_destroy(&c->lock);
	free(c->scheme);
	free(c->authority);
	free(c->base);
	free(c->region);
	free(c->bucket);
	wipe_free(c->access_key);
	wipe_free(c->secret_key);
	free(c->spool_dir);
	free(c);
}

enum rs_code s3_secret_load(char **out, const char *env_name, const char *path, struct rs_err *err)
{
	*out = NULL;
	const char *v = env_name ? getenv(env_name) : NULL;
	if (v && *v) {
		if (!(*out = strdup(v)))
			return rs_err_set(err, RS_NOMEM, "s3: out of memory");
		return RS_OK;
	}
	if (!path)
		return rs_err_set(err, RS_CONFIG, "s3 credential: environment variable %.60s is not set",
		                  env_name ? env_name : "(none)");
	FILE *f = fopen(path, "re");
	if (!f)
		return rs_err_set(err, RS_CONFIG, "s3 credential file %.150s: %s", path, strerror(errno));
	char buf[1024];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (!buf[0]) {
		OPENSSL_cleanse(buf, sizeof(buf));
		return rs_err_set(err, RS_CONFIG, "s3 credential file %.150s is empty", path);
	}
	*out = strdup(buf);
	OPENSSL_cleanse(buf, sizeof(buf));
	return *out ? RS_OK : rs_err_set(err, RS_NOMEM, "s3: out of memory");
}

/* ---- one request -------------------------------------------------------- */

struct req {
	const char *op;           /* GET PUT HEAD DELETE POST */
	const char *what;         /* for messages: "PUT", "CompleteMultipartUpload" ... */
	const char *key;          /* NULL: the bucket itself */
	struct s3_sign_param q[5];
	size_t nq;
	char range[64];           /* "" or "bytes=A-B" */
	const char *content_type;
	const char *body;         /* memory body (hash signed) */
	size_t body_len;
	int fd;                   /* file body (UNSIGNED-PAYLOAD) when >= 0 and has_fd */
	bool has_fd;
	uint64_t fd_off, fd_len;
	s3_data_fn fn;            /* 2xx body to fn; NULL: into resp.body up to doc_max */
	void *arg;
	size_t doc_max;
};

struct resp {
	long status;
	int64_t content_length;
	int64_t range_total;
	char etag[S3_ETAG_MAX];
	char *body;
	size_t body_len;
	bool delivered;           /* bytes went to fn: no retry */
};

struct transfer {
	const struct req *rq;
	struct resp *rs;
	uint64_t sent;
	enum rs_code cb_rc;
	struct rs_err cb_err;
	bool too_large;
};

static bool is_2xx(long s) { return s >= 200 && s < 300; }

static size_t on_header(char *b, size_t sz, size_t n, void *ud)
{
	struct transfer *t = ud;
	size_t len = sz * n;
	char line[512];
	size_t l = len < sizeof(line) - 1 ? len : sizeof(line) - 1;
	memcpy(line, b, l);
	line[l] = '\0';
	line[strcspn(line, "\r\n")] = '\0';
	if (strncmp(line, "HTTP/", 5) == 0) { /* a new answer (after 100 Continue, too) */
		const char *sp = strchr(line, ' ');
		t->rs->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		t->rs->content_length = -1;
		t->rs->range_total = -1;
		t->rs->etag[0] = '\0';
		return len;
	}
	char *colon = strchr(line, ':');
	if (!colon)
		return len;
	*colon = '\0';
	char *v = colon + 1;
	while (*v == ' ' || *v == '\t')
		v++;
	if (strcasecmp(line, "etag") == 0)
		snprintf(t->rs->etag, sizeof(t->rs->etag), "%s", v);
	else if (strcasecmp(line, "content-length") == 0)
		t->rs->content_length = strtoll(v, NULL, 10);
	else if (strcasecmp(line, "content-range") == 0 && strchr(v, '/') && strchr(v, '/')[1] != '*')
		t->rs->range_total = strtoll(strchr(v, '/') + 1, NULL, 10);
	return len;
}

static bool keep(struct resp *rs, const char *b, size_t len, size_t cap)
{
	if (rs->body_len + len > cap)
		return false;
	char *nb = realloc(rs->body, rs->body_len + len + 1);
	if (!nb)
		return false;
	memcpy(nb + rs->body_len, b, len);
	rs->body = nb;
	rs->body_len += len;
	nb[rs->body_len] = '\0';
	return true;
}

static size_t on_body(char *b, size_t sz, size_t n, void *ud)
{
	struct transfer *t = ud;
	size_t len = sz * n;
	if (!is_2xx(t->rs->status)) {
		(void)keep(t->rs, b, len, ERR_BODY_MAX); /* the rest of a long error document is not needed */
		return len;
	}
	if (t->rq->fn) {
		t->rs->delivered = true;
		t->cb_rc = t->rq->fn(t->rq->arg, b, len, &t->cb_err);
		return t->cb_rc == RS_OK ? len : 0;
	}
	if (!keep(t->rs, b, len, t->rq->doc_max)) {
		t->too_large = true;
		return 0;
	}
	return len;
}

static size_t on_read(char *b, size_t sz, size_t n, void *ud)
{
	struct transfer *t = ud;
	const struct req *rq = t->rq;
	uint64_t total = rq->has_fd ? rq->fd_len : rq->body_len;
	size_t want = sz * n;
	if (t->sent >= total)
		return 0;
	if (want > total - t->sent)
		want = (size_t)(total - t->sent);
	if (!rq->has_fd) {
		memcpy(b, rq->body + t->sent, want);
		t->sent += want;
		return want;
	}
	ssize_t r = pread(rq->fd, b, want, (off_t)(rq->fd_off + t->sent));
	if (r <= 0) {
		t->cb_rc = rs_err_set(&t->cb_err, RS_IO, "reading the body to upload: %s", r < 0 ? strerror(errno)
		                                                                              : "file shorter than expected");
		return CURL_READFUNC_ABORT;
	}
	t->sent += (uint64_t)r;
	return (size_t)r;
}

static CURL *handle_get(struct s3_client *c)
{
	CURL *h = NULL;
	pthread_mutex_lock(&c->lock);
	if (c->nidle > 0)
		h = c->idle[--c->nidle];
	pthread_mutex_unlock(&c->lock);
	if (h)
		curl_easy_reset(h); /* keeps the connection cache */
	else
		h = curl_easy_init();
	return h;
}

static void handle_put(struct s3_client *c, CURL *h)
{
	pthread_mutex_lock(&c->lock);
	if (c->nidle < POOL_MAX) {
		c->idle[c->nidle++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&c->lock);
	if (h)
		curl_easy_cleanup(h);
}

/* the raw path ("/bucket/key" or "/key" for virtual hosts) and the Host header value */
static enum rs_code target(const struct s3_client *c, const struct req *rq, char **out_path, char **out_host,
                           struct rs_err *err)
{
	int a = c->vhost ? asprintf(out_path, "%s/%s", c->base, rq->key ? rq->key : "")
	                 : asprintf(out_path, "%s/%s%s%s", c->base, c->bucket, rq->key ? "/" : "", rq->key ? rq->key : "");
	int b = c->vhost ? asprintf(out_host, "%s.%s", c->bucket, c->authority) : asprintf(out_host, "%s", c->authority);
	if (a < 0 || b < 0) {
		if (a >= 0)
			free(*out_path);
		if (b >= 0)
			free(*out_host);
		*out_path = *out_host = NULL;
		return rs_err_set(err, RS_NOMEM, "s3: out of memory");
	}
	return RS_OK;
}

/* the URL: scheme://host + encoded path + the canonical (sorted, encoded) query the signature covers */
static char *build_url(const struct s3_client *c, const char *host, const char *path, const struct req *rq)
{
	char *url = NULL, *p = NULL;
	size_t ulen = 0;
	FILE *f = open_memstream(&url, &ulen);
	if (!f)
		return NULL;
	size_t n = s3_sign_uri_encode(NULL, 0, path, true);
	if ((p = malloc(n + 1)))
		(void)s3_sign_uri_encode(p, n + 1, path, true);
	fprintf(f, "%s://%s%s", c->scheme, host, p ? p : "");
	/* sorted by name: every query we send has distinct names */
	const struct s3_sign_param *sorted[5];
	size_t nq = rq->nq;
	for (size_t i = 0; i < nq; i++) {
		size_t j = i;
		for (; j > 0 && strcmp(sorted[j - 1]->name, rq->q[i].name) > 0; j--)
			sorted[j] = sorted[j - 1];
		sorted[j] = &rq->q[i];
	}
	bool ok = p != NULL;
	for (size_t i = 0; i < nq && ok; i++) {
		const char *v = sorted[i]->value ? sorted[i]->value : "";
		size_t en = s3_sign_uri_encode(NULL, 0, v, false);
		char *ev = malloc(en + 1);
		if (ev) {
			(void)s3_sign_uri_encode(ev, en + 1, v, false);
			fprintf(f, "%c%s=%s", i ? '&' : '?', sorted[i]->name, ev);
		}
		ok = ev != NULL;
		free(ev);
	}
	free(p);
	if (fclose(f) != 0 || !ok) {
		free(url);
		return NULL;
	}
	return url;
}

static void amz_now(char out[17])
{
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

/* headers of one attempt, signed; *out: curl_slist_free_all() */
static enum rs_code sign_headers(struct s3_client *c, const struct req *rq, const char *path, const char *host,
                                 struct curl_slist **out, struct rs_err *err)
{
	char date[17], ph[65], auth[512], line[600];
	struct s3_sign_header h[5];
	size_t nh = 0;
	amz_now(date);
	if (rq->has_fd)
		snprintf(ph, sizeof(ph), "%s", S3_SIGN_UNSIGNED);
	else
		s3_sign_sha256_hex(ph, rq->body ? rq->body : "", rq->body_len);
	h[nh++] = (struct s3_sign_header){"host", host};
	h[nh++] = (struct s3_sign_header){"x-amz-date", date};
	h[nh++] = (struct s3_sign_header){"x-amz-content-sha256", ph};
	if (rq->range[0])
		h[nh++] = (struct s3_sign_header){"range", rq->range};
	if (rq->content_type)
		h[nh++] = (struct s3_sign_header){"content-type", rq->content_type};
	struct s3_sign_request sr = {.method = rq->op, .path = path, .query = rq->q, .nquery = rq->nq, .headers = h,
	                             .nheaders = nh, .payload_hash = ph, .amz_date = date, .region = c->region,
	                             .service = "s3", .access_key = c->access_key, .secret_key = c->secret_key};
	enum rs_code rc = s3_sign(auth, sizeof(auth), &sr, err);
	if (rc != RS_OK)
		return rc;
	struct curl_slist *l = NULL;
	for (size_t i = 0; i < nh; i++) {
		snprintf(line, sizeof(line), "%s: %s", h[i].name, h[i].value);
		struct curl_slist *nl = curl_slist_append(l, line);
		if (!nl)
			goto nomem;
		l = nl;
	}
	snprintf(line, sizeof(line), "Authorization: %s", auth);
	struct curl_slist *nl = curl_slist_append(l, line);
	OPENSSL_cleanse(line, sizeof(line));
	if (!nl)
		goto nomem;
	*out = nl;
	return RS_OK;
nomem:
	curl_slist_free_all(l);
	return rs_err_set(err, RS_NOMEM, "s3: out of memory");
}

static void set_method(CURL *h, const struct req *rq)
{
	if (strcmp(rq->op, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (strcmp(rq->op, "PUT") == 0) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)(rq->has_fd ? rq->fd_len : rq->body_len));
	} else if (strcmp(rq->op, "POST") == 0) {
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
	} else if (strcmp(rq->op, "DELETE") == 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
	}
}

/* one attempt: *out_curl is libcurl's result (CURLE_OK: rs holds an HTTP answer) */
static enum rs_code attempt(struct s3_client *c, const struct req *rq, struct resp *rs, CURLcode *out_curl,
                            char curl_msg[CURL_ERROR_SIZE], struct rs_err *err)
{
	char *path = NULL, *host = NULL, *url = NULL;
	struct curl_slist *hdrs = NULL;
	struct transfer t = {.rq = rq, .rs = rs, .cb_rc = RS_OK};
	enum rs_code rc = target(c, rq, &path, &host, err);
	if (rc != RS_OK)
		return rc;
	CURL *h = NULL;
	if (!(url = build_url(c, host, path, rq)) || !(h = handle_get(c))) {
		rc = rs_err_set(err, RS_NOMEM, "s3: out of memory");
		goto out;
	}
	if ((rc = sign_headers(c, rq, path, host, &hdrs, err)) != RS_OK)
		goto out;
	curl_msg[0] = '\0';
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, c->timeout_s);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, c->timeout_s);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_msg);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
	curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
	curl_easy_setopt(h, CURLOPT_READDATA, &t);
	if (strcmp(rq->op, "POST") == 0 && rq->body_len == 0)
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
	set_method(h, rq);
	*out_curl = curl_easy_perform(h);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
	if (t.cb_rc != RS_OK) {
		*err = t.cb_err;
		rc = t.cb_rc;
	} else if (t.too_large) {
		rc = rs_err_set(err, RS_TOO_LARGE, "s3 %s %s: answer over %zu bytes", rq->what, c->bucket, rq->doc_max);
	}
out:
	curl_slist_free_all(hdrs);
	if (h)
		handle_put(c, h);
	free(url);
	free(path);
	free(host);
	return rc;
}

/* ---- the request loop: retries, error wording --------------------------- */

static bool retryable_curl(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_COULDNT_RESOLVE_HOST:
		return true;
	default:
		return false;
	}
}

static enum rs_code status_error(const struct s3_client *c, const struct req *rq, const struct resp *rs,
                                 struct rs_err *err)
{
	char code[64], msg[128];
	s3_xml_get(code, sizeof(code), rs->body, rs->body_len, "Code");
	s3_xml_get(msg, sizeof(msg), rs->body, rs->body_len, "Message");
	enum rs_code rc = rs->status >= 500 ? RS_UNAVAILABLE : RS_IO;
	if (strcmp(code, "NoSuchKey") == 0 || (rs->status == 404 && !code[0] && rq->key))
		rc = RS_NOT_FOUND;
	else if (rs->status == 416 || strcmp(code, "InvalidRange") == 0)
		rc = RS_RANGE;
	if (!code[0] && rs->status == 404)
		snprintf(code, sizeof(code), "%s", rq->key ? "NoSuchKey" : "NoSuchBucket"); /* HEAD: no body */
	const char *none = strcmp(rq->op, "HEAD") == 0 ? "(a HEAD answer has no error document)" : "(no error code)";
	if (rc != RS_NOT_FOUND) {
		char label[sizeof(code)];
		if (code[0])
			snprintf(label, sizeof(label), "%s", code);
		else
			snprintf(label, sizeof(label), "HTTP %ld", rs->status);
		metrics_s3_error(rq->what, label);
	}
	return rs_err_set(err, rc, "s3 %s %s%s%.100s: HTTP %ld %s%s%.80s%s", rq->what, c->bucket, rq->key ? "/" : "",
	                  rq->key ? rq->key : "", rs->status, code[0] ? code : none, msg[0] ? " (" : "", msg,
	                  msg[0] ? ")" : "");
}

static void resp_reset(struct resp *rs)
{
	free(rs->body);
	memset(rs, 0, sizeof(*rs));
	rs->content_length = rs->range_total = -1;
}

/* run rq with retries; RS_OK only for a 2xx answer (rs holds it; resp_reset() it) */
static enum rs_code request(struct s3_client *c, const struct req *rq, struct resp *rs, struct rs_err *err)
{
	char curl_msg[CURL_ERROR_SIZE];
	long delay = c->backoff_ms;
	memset(rs, 0, sizeof(*rs));
	for (int n = 1;; n++) {
		CURLcode cc = CURLE_OK;
		resp_reset(rs);
		enum rs_code rc = attempt(c, rq, rs, &cc, curl_msg, err);
		if (rc != RS_OK)
			return rc;
		bool last = n >= c->max_attempts || rs->delivered;
		if (cc == CURLE_OK && is_2xx(rs->status)) {
			/* CompleteMultipartUpload may answer 200 with an <Error> document */
			if (!(rs->body && memmem(rs->body, rs->body_len, "<Error>", 7)))
				return RS_OK;
			if (last)
				return status_error(c, rq, rs, err);
		} else if ((cc == CURLE_OK || (rs->status >= 400 && rs->status < 500)) && (rs->status < 500 || last)) {
			/* a 4xx that cut an upload short (curl then reports a send error) is still the 4xx */
			return status_error(c, rq, rs, err);
		} else if (cc != CURLE_OK && (!retryable_curl(cc) || last)) {
			metrics_s3_error(rq->what, "transport");
			return rs_err_set(err, cc == CURLE_OPERATION_TIMEDOUT ? RS_TIMEOUT : RS_UNAVAILABLE,
			                  "s3 %s %s%s%.100s (endpoint %s://%s, %d attempt%s): %s%s%.80s", rq->what, c->bucket,
			                  rq->key ? "/" : "", rq->key ? rq->key : "", c->scheme, c->authority, n, n > 1 ? "s" : "",
			                  curl_easy_strerror(cc), curl_msg[0] ? ": " : "", curl_msg);
		}
		struct timespec ts = {delay / 1000, (delay % 1000) * 1000000L};
		nanosleep(&ts, NULL);
		delay *= 2;
	}
}

/* ---- object operations -------------------------------------------------- */

enum rs_code s3_put(struct s3_client *c, const char *key, const void *buf, size_t len, struct rs_err *err)
{
	struct req rq = {.op = "PUT", .what = "PUT", .key = key, .body = len ? buf : "", .body_len = len};
	struct resp rs;
	enum rs_code rc = request(c, &rq, &rs, err);
	resp_reset(&rs);
	return rc;
}

enum rs_code s3_put_fd(struct s3_client *c, const char *key, int fd, uint64_t size, struct rs_err *err)
{
	struct req rq = {.op = "PUT", .what = "PUT", .key = key, .fd = fd, .has_fd = true, .fd_len = size};
	struct resp rs;
	enum rs_code rc = request(c, &rq, &rs, err);
	resp_reset(&rs);
	return rc;
}

enum rs_code s3_get(struct s3_client *c, const char *key, int64_t first, int64_t last, s3_data_fn fn, void *arg,
                    struct s3_object_info *out_info, struct rs_err *err)
{
	struct req rq = {.op = "GET", .what = "GET", .key = key, .fn = fn, .arg = arg};
	if (first >= 0 && last >= 0)
		snprintf(rq.range, sizeof(rq.range), "bytes=%" PRId64 "-%" PRId64, first, last);
	else if (first >= 0)
		snprintf(rq.range, sizeof(rq.range), "bytes=%" PRId64 "-", first);
	struct resp rs;
	enum rs_code rc = request(c, &rq, &rs, err);
	if (rc == RS_OK && out_info) {
		out_info->size = rs.status == 206 ? rs.range_total : rs.content_length;
		snprintf(out_info->etag, sizeof(out_info->etag), "%s", rs.etag);
	}
	resp_reset(&rs);
	return rc;
}

enum rs_code s3_head(struct s3_client *c, const char *key, struct s3_object_info *out, struct rs_err *err)
{
	struct req rq = {.op = "HEAD", .what = "HEAD", .key = key};
	struct resp rs;
	enum rs_code rc = request(c, &rq, &rs, err);
	if (rc == RS_OK) {
		out->size = rs.content_length;
		snprintf(out->etag, sizeof(out->etag), "%s", rs.etag);
	}
	resp_reset(&rs);
	return rc;
}

enum rs_code s3_delete(struct s3_client *c, const char *key, struct rs_err *err)
{
	struct req rq = {.op = "DELETE", .what = "DELETE", .key = key};
	struct resp rs;
	enum rs_code rc = request(c, &rq, &rs, err);
	resp_reset(&rs);
	return rc;
}

/* each <block> of a document: its <name> (decoded) and <value> text to fn */
static enum rs_code each_entry(const struct resp *rs, const char *block, const char *name, const char *value,
                               s3_list_fn fn, void *arg, const char *only, struct rs_err *err)
{
	const char *from = rs->body, *end = rs->body + rs->body_len, *bs, *be;
	char key[KEY_MAX + 1], val[256];
	while (s3_xml_span(&from, end, block, &bs, &be)) {
		const char *f2 = bs, *vs, *ve;
		if (!s3_xml_span(&f2, be, name, &vs, &ve) || !s3_xml_text(key, sizeof(key), vs, ve))
			return rs_err_set(err, RS_IO, "s3 listing of %s: an entry without a readable <%s>", "bucket", name);
		f2 = bs;
		val[0] = '\0';
		if (s3_xml_span(&f2, be, value, &vs, &ve) && !s3_xml_text(val, sizeof(val), vs, ve))
			val[0] = '\0';
		if (only && strcmp(key, only) != 0)
			continue;
		enum rs_code rc = only ? fn(arg, val, -1, err) : fn(arg, key, strtoll(val, NULL, 10), err);
		if (rc != RS_OK)
			return rc;
	}
	return RS_OK;
}

/* "2026-12-07T14:10:00.000Z" (LastModified of a listing) as a time; 0 when unreadable. */
static time_t iso_time(const char *v)
{
	struct tm tm = {0};
	if (sscanf(v, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
	           &tm.tm_sec) != 6)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	time_t t = timegm(&tm);
	return t < 0 ? 0 : t;
}

/* each <Contents> of a listing: key, size and LastModified to fn */
static enum rs_code each_dated(const struct resp *rs, s3_list_dated_fn fn, void *arg, struct rs_err *err)
{
	const char *from = rs->body, *end = rs->body + rs->body_len, *bs, *be;
	char key[KEY_MAX + 1], size[32], mod[64];
	while (s3_xml_span(&from, end, "Contents", &bs, &be)) {
		const char *f2 = bs, *vs, *ve;
		if (!s3_xml_span(&f2, be, "Key", &vs, &ve) || !s3_xml_text(key, sizeof(key), vs, ve))
			return rs_err_set(err, RS_IO, "s3 listing of %s: an entry without a readable <%s>", "bucket", "Key");
		f2 = bs;
		if (!s3_xml_span(&f2, be, "Size", &vs, &ve) || !s3_xml_text(size, sizeof(size), vs, ve))
			size[0] = '\0';
		f2 = bs;
		if (!s3_xml_span(&f2, be, "LastModified", &vs, &ve) || !s3_xml_text(mod, sizeof(mod), vs, ve))
			mod[0] = '\0';
		enum rs_code rc = fn(arg, key, strtoll(size, NULL, 10), iso_time(mod), err);
		if (rc != RS_OK)
			return rc;
	}
	return RS_OK;
}

/* One ListObjectsV2 page to fn or (when fn is NULL) dfn. */
static enum rs_code list_page(struct s3_client *c, const char *prefix, const char *token, int max_keys,
                              s3_list_fn fn, s3_list_dated_fn dfn, void *arg, char **out_next, struct rs_err *err);

enum rs_code s3_list(struct s3_client *c, const char *prefix, const char *token, int max_keys, s3_list_fn fn,
                     void *arg, char **out_next, struct rs_err *err)
{
	return list_page(c, prefix, token, max_keys, fn, NULL, arg, out_next, err);
}

enum rs_code s3_list_dated(struct s3_client *c, const char *prefix, const char *token, s3_list_dated_fn fn,
                           void *arg, char **out_next, struct rs_err *err)
{
	return list_page(c, prefix, token, 0, NULL, fn, arg, out_next, err);
}

static enum rs_code list_page(struct s3_client *c, const char *prefix, const char *token, int max_keys,
                              s3_list_fn fn, s3_list_dated_fn dfn, void *arg, char **out_next, struct rs_err *err)
{
	char mk[16];
	struct req rq = {.op = "GET", .what = "ListObjectsV2", .doc_max = DOC_MAX};
	*out_next = NULL;
	rq.q[rq.nq++] = (struct s3_sign_param){"list-type", "2"};
	if (prefix && *prefix)
		rq.q[rq.nq++] = (struct s3_sign_param){"prefix", prefix};
	if (token)
		rq.q[rq.nq++] = (struct s3_sign_param){"continuation-token", token};
	if (max_keys > 0) {
		snprintf(mk, sizeof(mk), "%d", max_keys);
		rq.q[rq.nq++] = (struct s3_sign_param){"max-keys", mk};
	}
	struct resp rs;
	enum rs_code rc = request(c, &rq, &rs, err);
	if (rc == RS_OK)
		rc = fn ? each_entry(&rs, "Contents", "Key", "Size", fn, arg, NULL, err) : each_dated(&rs, dfn, arg, err);
	if (rc == RS_OK) {
		char trunc[8], next[KEY_MAX + 1];
		s3_xml_get(trunc, sizeof(trunc), rs.body, rs.body_len, "IsTruncated");
		s3_xml_get(next, sizeof(next), rs.body, rs.body_len, "NextContinuationToken");
		if (strcmp(trunc, "true") == 0) {
			if (!next[0])
				rc = rs_err_set(err, RS_IO, "s3 ListObjectsV2 %s: truncated page without NextContinuationToken",
				                c->bucket);
			else if (!(*out_next = strdup(next)))
				rc = rs_err_set(err, RS_NOMEM, "s3: out of memory");
		}
	}
	resp_reset(&rs);
	return rc;
}

/* ---- multipart ---------------------------------------------------------- */

enum rs_code s3_multipart_init(struct s3_client *c, const char *key, char **out_upload_id, struct rs_err *err)
{
	struct req rq = {.op = "POST", .what = "CreateMultipartUpload", .key = key, .doc_max = ERR_BODY_MAX};
	char id[512];
	*out_upload_id = NULL;
	rq.q[rq.nq++] = (struct s3_sign_param){"uploads", ""};
	struct resp rs;
	enum rs_code rc = request(c, &rq, &rs, err);
	if (rc == RS_OK) {
		s3_xml_get(id, sizeof(id), rs.body, rs.body_len, "UploadId");
		if (!id[0])
			rc = rs_err_set(err, RS_IO, "s3 CreateMultipartUpload %s/%.100s: no UploadId in the answer", c->bucket,
			                key);
		else if (!(*out_upload_id = strdup(id)))
			rc = rs_err_set(err, RS_NOMEM, "s3: out of memory");
	}
	resp_reset(&rs);
	return rc;
}

enum rs_code s3_multipart_part(struct s3_client *c, const char *key, const char *upload_id, int part_no, int fd,
                               uint64_t off, uint64_t len, char out_etag[S3_ETAG_MAX], struct rs_err *err)
{
	char pn[16];
	struct req rq = {.op = "PUT", .what = "UploadPart", .key = key, .fd = fd, .has_fd = true, .fd_off = off,
	                 .fd_len = len};
	snprintf(pn, sizeof(pn), "%d", part_no);
	rq.q[rq.nq++] = (struct s3_sign_param){"partNumber", pn};
	rq.q[rq.nq++] = (struct s3_sign_param){"uploadId", upload_id};
	struct resp rs;
	enum rs_code rc = request(c, &rq, &rs, err);
	if (rc == RS_OK && !rs.etag[0])
		rc = rs_err_set(err, RS_IO, "s3 UploadPart %s/%.100s part %d: no ETag in the answer", c->bucket, key, part_no);
	if (rc == RS_OK)
		snprintf(out_etag, S3_ETAG_MAX, "%s", rs.etag);
	resp_reset(&rs);
	return rc;
}

enum rs_code s3_multipart_complete(struct s3_client *c, const char *key, const char *upload_id,
                                   const char (*etags)[S3_ETAG_MAX], int nparts, struct rs_err *err)
{
	char *doc = NULL;
	size_t dlen = 0;
	FILE *f = open_memstream(&doc, &dlen);
	if (!f)
		return rs_err_set(err, RS_NOMEM, "s3: out of memory");
	fputs("<CompleteMultipartUpload>", f);
	for (int i = 0; i < nparts; i++) {
		fprintf(f, "<Part><PartNumber>%d</PartNumber><ETag>", i + 1);
		for (const char *p = etags[i]; *p; p++) { /* ETags are quoted hex; escape anyway */
			if (*p == '&' || *p == '<' || *p == '>')
				fputs(*p == '&' ? "&amp;" : *p == '<' ? "&lt;" : "&gt;", f);
			else
				fputc(*p, f);
		}
		fputs("</ETag></Part>", f);
	}
	fputs("</CompleteMultipartUpload>", f);
	if (fclose(f) != 0) {
		free(doc);
		return rs_err_set(err, RS_NOMEM, "s3: out of memory");
	}
	struct req rq = {.op = "POST", .what = "CompleteMultipartUpload", .key = key, .body = doc, .body_len = dlen,
	                 .content_type = "application/xml", .doc_max = ERR_BODY_MAX};
	rq.q[rq.nq++] = (struct s3_sign_param){"uploadId", upload_id};
	struct resp rs;
	enum rs_code rc = request(c, &rq, &rs, err);
	resp_reset(&rs);
	free(doc);
	return rc;
}

enum rs_code s3_multipart_abort(struct s3_client *c, const char *key, const char *upload_id, struct rs_err *err)
{
	struct req rq = {.op = "DELETE", .what = "AbortMultipartUpload", .key = key};
	rq.q[rq.nq++] = (struct s3_sign_param){"uploadId", upload_id};
	struct resp rs;
	enum rs_code rc = request(c, &rq, &rs, err);
	resp_reset(&rs);
	return rc;
}

enum rs_code s3_multipart_list(struct s3_client *c, const char *key, s3_list_fn fn, void *arg, struct rs_err *err)
{
	struct req rq = {.op = "GET", .what = "ListMultipartUploads", .doc_max = DOC_MAX};
	rq.q[rq.nq++] = (struct s3_sign_param){"uploads", ""};
	rq.q[rq.nq++] = (struct s3_sign_param){"prefix", key};
	struct resp rs;
	enum rs_code rc = request(c, &rq, &rs, err);
	if (rc == RS_OK)
		rc = each_entry(&rs, "Upload", "Key", "UploadId", fn, arg, key, err);
	resp_reset(&rs);
	return rc;
}

size_t s3_client_part_size(const struct s3_client *c) { return c->part_size; }

const char *s3_client_spool_dir(const struct s3_client *c) { return c->spool_dir; }
