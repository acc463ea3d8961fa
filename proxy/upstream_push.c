/* upstream_push: the push client towards the upstream registry (see
 * upstream_push.h). Each request is one libcurl easy transfer; response
 * bodies are kept only up to a small cap (error messages, tokens), upload
 * bodies stream from a file descriptor with pread. Talks to libcurl,
 * upstream_auth.h (challenges, token answers, token cache) and
 * config/imagejson.h (the references of a manifest). Never logs secrets. */
#include "upstream_push.h"

#include "digest.h"
#include "imagejson.h"
#include "rs_limits.h"
#include "upstream_auth.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define BODY_CAP (64u * 1024)
#define UA "regslim-push/1"

struct upstream_push {
	const struct rs_upstream_config *up;
	struct upstream_auth_tokens *tokens;
	bool probed;           /* GET /v2/ done */
	enum upstream_auth_scheme scheme;
	char *realm, *service;
	unsigned uploaded, skipped, manifests;
};

enum rs_code upstream_push_new(struct upstream_push **out, const struct rs_upstream_config *up, struct rs_err *err)
{
	*out = NULL;
	struct upstream_push *u = calloc(1, sizeof(*u));
	if (!u || !(u->tokens = upstream_auth_tokens_new())) {
		free(u);
		return rs_err_set(err, RS_NOMEM, "out of memory starting an upstream push");
	}
	u->up = up;
	*out = u;
	return RS_OK;
}

void upstream_push_free(struct upstream_push *u)
{
	if (!u)
		return;
	upstream_auth_tokens_free(u->tokens);
	free(u->realm);
	free(u->service);
	free(u);
}

void upstream_push_counts(const struct upstream_push *u, unsigned *uploaded, unsigned *skipped, unsigned *manifests)
{
	*uploaded = u->uploaded;
	*skipped = u->skipped;
	*manifests = u->manifests;
}

/* ---- one transfer ---- */

struct resp {
	long status;
	char *location, *www_auth, *digest; /* Location, WWW-Authenticate, Docker-Content-Digest */
	char body[BODY_CAP + 1];
	size_t body_len;
	/* upload source */
	int fd;
	uint64_t off, size;
	const char *mem;
};

static void resp_dispose(struct resp *r)
{
	free(r->location);
	free(r->www_auth);
	free(r->digest);
	r->location = r->www_auth = r->digest = NULL;
}

static size_t on_header(char *data, size_t size, size_t nitems, void *arg)
{
	struct resp *r = arg;
	size_t n = size * nitems;
	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		resp_dispose(r);
		r->body_len = 0;
		return n;
	}
	const char *colon = memchr(data, ':', n);
	if (!colon)
		return n;
	size_t nl = (size_t)(colon - data);
	const char *v = colon + 1, *end = data + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	if ((size_t)(end - v) > RS_LIMIT_HEADER_MAX_BYTES)
		return n;
	char **slot = NULL;
	if (nl == 8 && strncasecmp(data, "location", 8) == 0)
		slot = &r->location;
	else if (nl == 16 && strncasecmp(data, "www-authenticate", 16) == 0)
		slot = &r->www_auth;
	else if (nl == 21 && strncasecmp(data, "docker-content-digest", 21) == 0)
		slot = &r->digest;
	if (slot) {
		free(*slot);
		*slot = strndup(v, (size_t)(end - v));
	}
	return n;
}

static size_t on_write(char *data, size_t size, size_t nitems, void *arg)
{
	struct resp *r = arg;
	size_t n = size * nitems;
	size_t room = BODY_CAP - r->body_len;
	size_t take = n < room ? n : room;
	memcpy(r->body + r->body_len, data, take);
	r->body_len += take;
	r->body[r->body_len] = '\0';
	return n;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *arg)
{
	struct resp *r = arg;
	size_t want = size * nitems;
	if (r->off >= r->size)
		return 0;
	if (want > r->size - r->off)
		want = (size_t)(r->size - r->off);
	if (r->mem) {
		memcpy(buf, r->mem + r->off, want);
		r->off += want;
		return want;
	}
	ssize_t got = pread(r->fd, buf, want, (off_t)r->off);
	if (got <= 0)
		return CURL_READFUNC_ABORT;
	r->off += (uint64_t)got;
	return (size_t)got;
}

/* The registry's error message from a body, for our message. */
static const char *reason(const struct resp *r)
{
	const char *m = strstr(r->body, "\"message\"");
	static __thread char out[160];
	if (m) {
		m = strchr(m + 9, '"');
		if (m) {
			size_t i = 0;
			for (m++; *m && *m != '"' && i + 1 < sizeof(out); m++)
				out[i++] = (unsigned char)*m < 0x20 ? '?' : *m;
			out[i] = '\0';
			return out;
		}
	}
	return "";
}

enum method { M_GET, M_HEAD, M_POST, M_PUT };

/* One request. url absolute. body: mem (len) or fd (size), or none. */
static enum rs_code perform(struct upstream_push *u, struct resp *r, enum method m, const char *url,
			    const char *content_type, const char *auth_header, bool basic, const char *what,
			    struct rs_err *err)
{
	CURL *h = curl_easy_init();
	if (!h)
		return rs_err_set(err, RS_NOMEM, "out of memory starting a request to %s", u->up->name);
	struct curl_slist *hdrs = NULL, *t;
	char ct[200];
	bool ok = true;
	if (content_type) {
		snprintf(ct, sizeof(ct), "Content-Type: %s", content_type);
		ok = (t = curl_slist_append(hdrs, ct)) != NULL;
		hdrs = ok ? t : hdrs;
	}
	if (ok && auth_header) {
		ok = (t = curl_slist_append(hdrs, auth_header)) != NULL;
		hdrs = ok ? t : hdrs;
	}
	if (ok && (m == M_PUT || m == M_POST)) {
		ok = (t = curl_slist_append(hdrs, "Expect:")) != NULL;
		hdrs = ok ? t : hdrs;
	}
	if (!ok) {
		curl_slist_free_all(hdrs);
		curl_easy_cleanup(h);
		return rs_err_set(err, RS_NOMEM, "out of memory building a request to %s", u->up->name);
	}
	long timeout = u->up->timeout_s ? (long)u->up->timeout_s : 30;
	char errbuf[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, UA);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, timeout);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, timeout);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, u->up->tls_verify ? 1L : 0L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, u->up->tls_verify ? 2L : 0L);
	if (u->up->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, u->up->ca_file);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	if (basic && u->up->username && u->up->password) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERNAME, u->up->username);
		curl_easy_setopt(h, CURLOPT_PASSWORD, u->up->password);
	}
	r->off = 0;
	switch (m) {
	case M_HEAD:
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
		break;
	case M_GET:
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
		break;
	case M_POST:
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, r);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->size);
		break;
	case M_PUT:
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, r);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->size);
		break;
	}
	CURLcode c = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	if (c == CURLE_OPERATION_TIMEDOUT)
		return rs_err_set(err, RS_UPSTREAM, "upstream %s: %s: timed out (no progress for %ld s)", u->up->name,
				  what, timeout);
	if (c != CURLE_OK)
		return rs_err_set(err, RS_UPSTREAM, "upstream %s: %s: %s", u->up->name, what,
				  errbuf[0] ? errbuf : curl_easy_strerror(c));
	return RS_OK;
}

/* Learn the challenge from GET /v2/. */
static enum rs_code probe(struct upstream_push *u, struct rs_err *err)
{
	if (u->probed)
		return RS_OK;
	char url[1024];
	snprintf(url, sizeof(url), "%s/v2/", u->up->url);
	struct resp *r = calloc(1, sizeof(*r));
	if (!r)
		return rs_err_set(err, RS_NOMEM, "out of memory");
	enum rs_code rc = perform(u, r, M_GET, url, NULL, NULL, false, "GET /v2/", err);
	if (rc == RS_OK && r->status == 401 && r->www_auth) {
		struct upstream_auth_challenge ch = {0};
		rc = upstream_auth_parse_challenge(&ch, r->www_auth, err);
		if (rc == RS_OK) {
			u->scheme = ch.scheme;
			u->realm = ch.realm;
			u->service = ch.service;
			ch.realm = ch.service = NULL;
		}
		upstream_auth_challenge_dispose(&ch);
	} else if (rc == RS_OK && r->status != 200) {
		rc = rs_err_set(err, RS_UPSTREAM, "upstream %s: GET /v2/ answered %ld", u->up->name, r->status);
	}
	resp_dispose(r);
	free(r);
	if (rc == RS_OK)
		u->probed = true;
	return rc;
}

/* "Authorization: Bearer <token>" for scope into out, or "" (Basic/none). */
static enum rs_code auth_header(struct upstream_push *u, const char *scope, char **out, bool fresh,
				struct rs_err *err)
{
	*out = NULL;
	if (u->scheme != UPSTREAM_AUTH_BEARER)
		return RS_OK;
	char *tok = fresh ? NULL : upstream_auth_tokens_get(u->tokens, scope, upstream_auth_now());
	if (!tok) {
		CURLU *cu = curl_url();
		char *url = NULL;
		char q[600];
		bool ok = cu && curl_url_set(cu, CURLUPART_URL, u->realm, 0) == CURLUE_OK;
		if (ok && u->service) {
			snprintf(q, sizeof(q), "service=%s", u->service);
			ok = curl_url_set(cu, CURLUPART_QUERY, q, CURLU_APPENDQUERY | CURLU_URLENCODE) == CURLUE_OK;
		}
		/* scopes are separated by a space in one parameter, as docker does with several "scope=" */
		const char *s = scope;
		while (ok && *s) {
			const char *sp = strchr(s, ' ');
			size_t l = sp ? (size_t)(sp - s) : strlen(s);
			snprintf(q, sizeof(q), "scope=%.*s", (int)l, s);
			ok = curl_url_set(cu, CURLUPART_QUERY, q, CURLU_APPENDQUERY | CURLU_URLENCODE) == CURLUE_OK;
			s += l + (sp ? 1 : 0);
		}
		ok = ok && curl_url_get(cu, CURLUPART_URL, &url, 0) == CURLUE_OK;
		curl_url_cleanup(cu);
		if (!ok) {
			curl_free(url);
			return rs_err_set(err, RS_UPSTREAM, "upstream %s: cannot build the token URL from realm", u->up->name);
		}
		struct resp *r = calloc(1, sizeof(*r));
		enum rs_code rc = r ? perform(u, r, M_GET, url, NULL, NULL, true, "token request", err)
				    : rs_err_set(err, RS_NOMEM, "out of memory");
		curl_free(url);
		long exp = 0;
		if (rc == RS_OK && r->status != 200)
			rc = rs_err_set(err, RS_UPSTREAM, "upstream %s: token endpoint answered %ld for scope %s%s",
					u->up->name, r->status, scope,
					r->status == 401 ? " (check the upstream's username and password)" : "");
		if (rc == RS_OK)
			rc = upstream_auth_parse_token(&tok, &exp, r->body, r->body_len, err);
		if (r)
			resp_dispose(r);
		free(r);
		if (rc)
			return rc;
		if ((rc = upstream_auth_tokens_put(u->tokens, scope, tok, exp, upstream_auth_now(), err))) {
			free(tok);
			return rc;
		}
	}
	size_t n = strlen(tok) + 32;
	*out = malloc(n);
	if (*out)
		snprintf(*out, n, "Authorization: Bearer %s", tok);
	free(tok);
	return *out ? RS_OK : rs_err_set(err, RS_NOMEM, "out of memory");
}

/* A request with auth, retried once after a 401. */
static enum rs_code request(struct upstream_push *u, struct resp *r, enum method m, const char *url,
			    const char *content_type, const char *scope, const char *what, struct rs_err *err)
{
	enum rs_code rc = probe(u, err);
	for (int attempt = 0; rc == RS_OK && attempt < 2; attempt++) {
		char *ah = NULL;
		if ((rc = auth_header(u, scope, &ah, attempt > 0, err)))
			break;
		rc = perform(u, r, m, url, content_type, ah, u->scheme == UPSTREAM_AUTH_BASIC, what, err);
		free(ah);
		if (rc || r->status != 401)
			break;
		upstream_auth_tokens_drop(u->tokens, scope, NULL);
	}
	if (rc == RS_OK && r->status == 401)
		rc = rs_err_set(err, RS_UPSTREAM, "upstream %s: %s: 401 unauthorized with regslim's credentials%s%s",
				u->up->name, what, r->body_len ? ": " : "", reason(r));
	return rc;
}

static enum rs_code bad_status(struct upstream_push *u, const struct resp *r, const char *what, struct rs_err *err)
{
	const char *why = reason(r);
	return rs_err_set(err, RS_UPSTREAM, "upstream %s: %s answered %ld%s%s", u->up->name, what, r->status,
			  why[0] ? ": " : "", why);
}

/* A new string from fmt (free()); NULL when out of memory. */
RS_PRINTF(1, 2) static char *fmt_new(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
	if (!s)
		return NULL;
	va_start(ap, fmt);
	(void)vsnprintf(s, (size_t)n + 1, fmt, ap); /* sized by the first pass */
	va_end(ap);
	return s;
}

/* The answer's Docker-Content-Digest, when it has one, must be want. */
static enum rs_code check_digest(struct upstream_push *u, const struct resp *r, const char *what, const char *want,
				 struct rs_err *err)
{
	if (!r->digest || strcmp(r->digest, want) == 0)
		return RS_OK;
	return rs_err_set(err, RS_UPSTREAM, "upstream %s: %s: the upstream stored %.80s instead of %s", u->up->name,
			  what, r->digest, want);
}

enum rs_code upstream_push_blob(struct upstream_push *u, const char *repo, const char *digest,
				const struct upstream_push_source *src, const char *from, bool *out_sent,
				struct rs_err *err)
{
	if (out_sent)
		*out_sent = false;
	char what[400];
	char *scope = fmt_new("repository:%s:pull,push", repo);
	char *url = fmt_new("%s/v2/%s/blobs/%s", u->up->url, repo, digest);
	char *mscope = NULL, *post = NULL, *put = NULL, *loc = NULL;
	struct resp *r = calloc(1, sizeof(*r));
	int fd = -1;
	enum rs_code rc = RS_OK;
	if (!r || !scope || !url) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
		goto out;
	}
	snprintf(what, sizeof(what), "HEAD /v2/%s/blobs/%s", repo, digest);
	if ((rc = request(u, r, M_HEAD, url, NULL, scope, what, err)))
		goto out;
	if (r->status == 200) {
		u->skipped++;
		goto out;
	}
	if (from && strcmp(from, repo) != 0) {
		mscope = fmt_new("%s repository:%s:pull", scope, from);
		post = fmt_new("%s/v2/%s/blobs/uploads/?mount=%s&from=%s", u->up->url, repo, digest, from);
		snprintf(what, sizeof(what), "mount %s from %s into %s", digest, from, repo);
	} else {
		post = fmt_new("%s/v2/%s/blobs/uploads/", u->up->url, repo);
		snprintf(what, sizeof(what), "POST /v2/%s/blobs/uploads/", repo);
	}
	if (!post || (from && strcmp(from, repo) != 0 && !mscope)) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
		goto out;
	}
	if ((rc = request(u, r, M_POST, post, NULL, mscope ? mscope : scope, what, err)))
		goto out;
	if (mscope && r->status == 201) {
		u->skipped++;
		goto out;
	}
	if (r->status != 202) {
		rc = bad_status(u, r, what, err);
		goto out;
	}
	if (!r->location) {
		rc = rs_err_set(err, RS_UPSTREAM, "upstream %s: %s answered 202 without a Location header", u->up->name,
				what);
		goto out;
	}
	/* a relative Location is relative to the URL that was POSTed */
	struct rs_err lerr = {0};
	if (upstream_auth_resolve_url(&loc, post, r->location, &lerr) != RS_OK) {
		rc = rs_err_set(err, lerr.code == RS_NOMEM ? RS_NOMEM : RS_UPSTREAM, "upstream %s: %s: %s", u->up->name,
				what, lerr.msg);
		goto out;
	}
	if (!upstream_auth_same_origin(loc, u->up->url)) {
		rc = rs_err_set(err, RS_UPSTREAM,
				"upstream %s: %s: upload Location is on another origin; not sending credentials there",
				u->up->name, what);
		goto out;
	}
	uint64_t size = 0;
	if ((rc = src->open_blob(src->ctx, digest, &fd, &size, err)))
		goto out;
	if (!(put = fmt_new("%s%sdigest=%s", loc, strchr(loc, '?') ? "&" : "?", digest))) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
		goto out;
	}
	snprintf(what, sizeof(what), "PUT blob %s (%llu bytes) to %s", digest, (unsigned long long)size, repo);
	r->fd = fd;
	r->size = size;
	if ((rc = request(u, r, M_PUT, put, "application/octet-stream", scope, what, err)))
		goto out;
	if (r->status != 201) {
		rc = bad_status(u, r, what, err);
		goto out;
	}
	if ((rc = check_digest(u, r, what, digest, err)))
		goto out;
	u->uploaded++;
	if (out_sent)
		*out_sent = true;
out:
	if (fd >= 0)
		close(fd);
	free(loc);
	free(put);
	free(post);
	free(mscope);
	free(url);
	free(scope);
	if (r)
		resp_dispose(r);
	free(r);
	return rc;
}

enum rs_code upstream_push_manifest(struct upstream_push *u, const char *repo, const char *ref, const char *media_type,
				    const char *body, size_t len, struct rs_err *err)
{
	char what[400], want[DIGEST_STR_SIZE];
	snprintf(what, sizeof(what), "PUT /v2/%s/manifests/%s", repo, ref);
	char *scope = fmt_new("repository:%s:pull,push", repo);
	char *url = fmt_new("%s/v2/%s/manifests/%s", u->up->url, repo, ref);
	struct resp *r = calloc(1, sizeof(*r));
	enum rs_code rc = RS_OK;
	if (!r || !scope || !url) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
		goto out;
	}
	r->mem = body;
	r->size = len;
	rc = request(u, r, M_PUT, url, media_type, scope, what, err);
	if (rc == RS_OK && r->status != 201 && r->status != 200)
		rc = bad_status(u, r, what, err);
	if (rc == RS_OK) {
		/* the upstream must have stored these bytes, not a conversion of them */
		digest_buffer(want, body, len);
		rc = check_digest(u, r, what, want, err);
	}
	if (rc == RS_OK)
		u->manifests++;
out:
	if (r)
		resp_dispose(r);
	free(r);
	free(url);
	free(scope);
	return rc;
}

static enum rs_code push_tree(struct upstream_push *u, const char *repo, const char *ref, const char *digest,
			      const struct upstream_push_source *src, int depth, struct rs_err *err)
{
	char *buf = NULL, *mt = NULL;
	size_t len = 0;
	enum rs_code rc = src->read_manifest(src->ctx, digest, &buf, &len, &mt, err);
	if (rc)
		return rc;
	enum imagejson_kind kind;
	if ((rc = imagejson_sniff(&kind, buf, len, "manifest", err)))
		goto out;
	if (kind == IMAGEJSON_INDEX) {
		struct imagejson_index x = {0};
		if (depth > 0) {
			rc = rs_err_set(err, RS_BAD_INPUT, "nested index %s is not supported for upstream pushes", digest);
			goto out;
		}
		if ((rc = imagejson_parse_index(&x, buf, len, "index", err)))
			goto out;
		for (size_t i = 0; rc == RS_OK && i < x.manifest_count; i++)
			rc = push_tree(u, repo, x.manifests[i].digest, x.manifests[i].digest, src, depth + 1, err);
		imagejson_index_dispose(&x);
	} else {
		struct imagejson_manifest m = {0};
		if ((rc = imagejson_parse_manifest(&m, buf, len, "manifest", err)))
			goto out;
		rc = upstream_push_blob(u, repo, m.config.digest, src, NULL, NULL, err);
		for (size_t i = 0; rc == RS_OK && i < m.layer_count; i++) {
			const char *lmt = m.layers[i].media_type ? m.layers[i].media_type : "";
			if (strstr(lmt, "nondistributable") || strstr(lmt, "foreign"))
				continue;
			rc = upstream_push_blob(u, repo, m.layers[i].digest, src, NULL, NULL, err);
		}
		imagejson_manifest_dispose(&m);
	}
	if (rc == RS_OK)
		rc = upstream_push_manifest(u, repo, ref, mt, buf, len, err);
out:
	free(buf);
	free(mt);
	return rc;
}

enum rs_code upstream_push_image(struct upstream_push *u, const char *repo, const char *ref, const char *digest,
				 const struct upstream_push_source *src, struct rs_err *err)
{
	return push_tree(u, repo, ref, digest, src, 0, err);
}
