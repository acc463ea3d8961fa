/* auth: client authentication and authorisation for regslim itself.
 *
 * Passwords: an htpasswd file of "user:$2y$..." lines (htpasswd -B), read
 * whole at start and again when its mtime or size changes; only bcrypt
 * hashes are accepted (a line with another scheme is a configuration error
 * naming the file and line). Verification is crypt_r(3) from libxcrypt and a
 * constant-time compare; an unknown user is checked against a dummy hash so
 * that timing does not tell which users exist.
 *
 * Tokens: "<base64url(payload)>.<base64url(HMAC-SHA256(secret, payload))>",
 * payload "rs1|<user>|<iat>|<exp>|<grants>" where grants is a space-separated
 * list "name:pull,push". Clients treat tokens as opaque, so the format is
 * ours; it is small, has no JSON parser behind it, and a change of one byte
 * breaks the MAC. The secret is read from auth.token_secret_file (at least 32
 * bytes) or drawn from getrandom() at start (tokens then die with the
 * process, which clients handle by asking again).
 *
 * ACL: without auth.acl every authenticated user may pull and push
 * everything; with it, a user gets the union of the actions of the rules
 * whose glob matches the repository and that name the user, "*" or one of
 * the user's groups. auth.anonymous_pull lets everybody pull everything.
 *
 * It talks to the file system (htpasswd, secret), libxcrypt and libcrypto;
 * never to HTTP. */
#include "auth.h"

#include "fsutil.h"
#include "log.h"
#include "login_guard.h"
#include "metrics.h"

#include <crypt.h>
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>

#define SECRET_MIN_BYTES 32
#define SECRET_MAX_BYTES 4096
#define TOKEN_VERSION "rs1"
#define HMAC_LEN 32
/* A bcrypt hash of "x" at cost 5: checked for unknown users so that a
 * missing user costs as much time as a wrong password. */
#define DUMMY_HASH "$2y$05$zEB9F9TmBm9o1n6Lcb/EDuZBDHjBKQmoGfNq0x.Z8jnECwJX96u1m"

struct htuser {
	char *name;
	char *hash;
};

struct htable {
	struct htuser *v;
	size_t n;
	struct timespec mtime;
	off_t size;
};

struct auth {
	const struct rs_auth_config *cfg;
	pthread_mutex_t mu; /* guards users */
	struct htable users;
	unsigned char secret[SECRET_MAX_BYTES];
	size_t secret_len;
	struct login_guard *guard; /* failed-login back-off */
};

/* ------------------------------------------------------------ htpasswd */

static void htable_dispose(struct htable *t)
{
	for (size_t i = 0; t->v && i < t->n; i++) {
		free(t->v[i].name);
		if (t->v[i].hash)
			explicit_bzero(t->v[i].hash, strlen(t->v[i].hash));
		free(t->v[i].hash);
	}
	free(t->v);
	memset(t, 0, sizeof(*t));
}

static bool is_bcrypt(const char *h)
{
	return strlen(h) == 60 && h[0] == '$' && h[1] == '2' && (h[2] == 'y' || h[2] == 'b' || h[2] == 'a') &&
	       h[3] == '$';
}

/* Parse the htpasswd text into t. RS_CONFIG naming file and line. */
static enum rs_code htable_parse(struct htable *t, const char *file, char *text, size_t len, struct rs_err *err)
{
	size_t cap = 0;
	size_t lineno = 0;
	char *p = text;
	char *end = text + len;
	while (p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		char *le = nl ? nl : end;
		lineno++;
		if (le > p && le[-1] == '\r')
			le[-1] = '\0';
		*le = '\0';
		char *line = p;
		p = nl ? nl + 1 : end;
		if (line[0] == '\0' || line[0] == '#')
			continue;
		char *colon = strchr(line, ':');
		if (!colon || colon == line)
			return rs_err_set(err, RS_CONFIG, "%s: line %zu: expected user:bcrypt-hash", file, lineno);
		*colon = '\0';
		const char *hash = colon + 1;
		if (!is_bcrypt(hash))
			return rs_err_set(err, RS_CONFIG,
			                  "%s: line %zu: user \"%.64s\": only bcrypt hashes ($2y$) are supported; create the entry with htpasswd -B",
			                  file, lineno, line);
		for (size_t i = 0; i < t->n; i++)
			if (strcmp(t->v[i].name, line) == 0)
				return rs_err_set(err, RS_CONFIG, "%s: line %zu: user \"%.64s\" appears twice", file,
				                  lineno, line);
		if (t->n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct htuser *nv = realloc(t->v, ncap * sizeof(*nv));
			if (!nv)
				return rs_err_set(err, RS_NOMEM, "out of memory reading %s", file);
			t->v = nv;
			cap = ncap;
		}
		t->v[t->n].name = strdup(line);
		t->v[t->n].hash = strdup(hash);
		t->n++;
		if (!t->v[t->n - 1].name || !t->v[t->n - 1].hash)
			return rs_err_set(err, RS_NOMEM, "out of memory reading %s", file);
	}
	return RS_OK;
}

/* Read a small file named in the auth configuration whole (NUL-terminated,
 * *out is the caller's). Any failure but memory is a configuration error. */
static enum rs_code read_config_file(char **out, size_t *out_len, const char *path, size_t max,
                                     struct rs_err *err)
{
	enum rs_code rc = fsutil_read_small(out, out_len, path, max, err);
	if (rc == RS_OK || rc == RS_NOMEM)
		return rc;
	if (err)
		err->code = RS_CONFIG; /* keep fsutil's message, which names the file and the cause */
	return RS_CONFIG;
}

static enum rs_code htable_load(struct htable *out, const char *file, struct rs_err *err)
{
	char *text = NULL;
	size_t len = 0;
	struct stat st;
	struct htable t = {0};
	/* Stat before reading: if the file changes in between, the next
	 * maybe_reload sees a newer mtime and loads it again. */
	if (stat(file, &st) != 0)
		memset(&st, 0, sizeof(st)); /* the read below reports why */
	enum rs_code rc = read_config_file(&text, &len, file, RS_LIMIT_HTPASSWD_MAX_BYTES, err);
	if (rc)
		return rc;
	rc = htable_parse(&t, file, text, len, err);
	explicit_bzero(text, len);
	free(text);
	if (rc) {
		htable_dispose(&t);
		return rc;
	}
	t.mtime = st.st_mtim;
	t.size = st.st_size;
	*out = t;
	return RS_OK;
}

/* Reload the table when the file changed; keep the old one on failure. */
static void maybe_reload(struct auth *a)
{
	struct stat st;
	if (stat(a->cfg->htpasswd, &st) != 0) {
		log_event(LOG_WARN, "htpasswd %s: %s; keeping the users loaded before", a->cfg->htpasswd, strerror(errno));
		return;
	}
	pthread_mutex_lock(&a->mu);
	bool same = st.st_mtim.tv_sec == a->users.mtime.tv_sec && st.st_mtim.tv_nsec == a->users.mtime.tv_nsec &&
	            st.st_size == a->users.size;
	pthread_mutex_unlock(&a->mu);
	if (same)
		return;
	struct htable t = {0};
	struct rs_err err = {0};
	if (htable_load(&t, a->cfg->htpasswd, &err) != RS_OK) {
		log_event(LOG_WARN, "reloading htpasswd failed, keeping the users loaded before: %s", err.msg);
		return;
	}
	pthread_mutex_lock(&a->mu);
	struct htable old = a->users;
	a->users = t;
	pthread_mutex_unlock(&a->mu);
	log_event(LOG_INFO, "htpasswd %s reloaded: %zu users", a->cfg->htpasswd, t.n);
	htable_dispose(&old);
}

enum rs_code auth_check_password(struct auth *a, const char *user, const char *password, struct rs_err *err)
{
	maybe_reload(a);
	char hash[64];
	bool known = false;
	pthread_mutex_lock(&a->mu);
	for (size_t i = 0; i < a->users.n; i++) {
		if (strcmp(a->users.v[i].name, user) == 0) {
			snprintf(hash, sizeof(hash), "%s", a->users.v[i].hash);
			known = true;
			break;
		}
	}
	pthread_mutex_unlock(&a->mu);
	if (!known)
		snprintf(hash, sizeof(hash), "%s", DUMMY_HASH);
	struct crypt_data *cd = calloc(1, sizeof(*cd));
	if (!cd)
		return rs_err_set(err, RS_NOMEM, "out of memory checking a password");
	const char *got = crypt_r(password, hash, cd);
	bool ok = got && got[0] != '*' && strlen(got) == strlen(hash) && CRYPTO_memcmp(got, hash, strlen(hash)) == 0;
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	explicit_bzero(hash, sizeof(hash));
	if (!ok || !known)
		return rs_err_set(err, RS_UNAUTHORIZED, "invalid username or password");
	return RS_OK;
}

/* ------------------------------------------------------------ lifecycle */

enum rs_code auth_new(struct auth **out, const struct rs_auth_config *cfg, struct rs_err *err)
{
	*out = NULL;
	struct auth *a = calloc(1, sizeof(*a));
	if (!a)
		return rs_err_set(err, RS_NOMEM, "out of memory starting auth");
	a->cfg = cfg;
	pthread_mutex_init(&a->mu, NULL);
	enum rs_code rc = login_guard_new(&a->guard, err);
	if (rc == RS_OK)
		rc = htable_load(&a->users, cfg->htpasswd, err);
	if (rc)
		goto out;
	if (cfg->token_secret_file) {
		char *text = NULL;
		size_t len = 0;
		rc = read_config_file(&text, &len, cfg->token_secret_file, SECRET_MAX_BYTES, err);
		if (rc)
			goto out;
		while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
			len--;
		if (len < SECRET_MIN_BYTES) {
			free(text);
			rc = rs_err_set(err, RS_CONFIG, "%s: the token secret is %zu bytes, at least %d are needed",
			                cfg->token_secret_file, len, SECRET_MIN_BYTES);
			goto out;
		}
		memcpy(a->secret, text, len);
		a->secret_len = len;
		explicit_bzero(text, len);
		free(text);
	} else {
		size_t got = 0;
		while (got < SECRET_MIN_BYTES) {
			ssize_t n = getrandom(a->secret + got, SECRET_MIN_BYTES - got, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				rc = rs_err_set(err, RS_IO, "getrandom for the token secret: %s", strerror(errno));
				goto out;
			}
			got += (size_t)n;
		}
		a->secret_len = SECRET_MIN_BYTES;
	}
	*out = a;
	return RS_OK;
out:
	auth_free(a);
	return rc;
}

void auth_free(struct auth *a)
{
	if (!a)
		return;
	htable_dispose(&a->users);
	login_guard_free(a->guard);
	explicit_bzero(a->secret, sizeof(a->secret));
	pthread_mutex_destroy(&a->mu);
	free(a);
}

/* ------------------------------------------------------------ ACL */

bool auth_glob_match(const char *glob, const char *name)
{
	return fnmatch(glob, name, 0) == 0;
}

static bool in_list(char *const *v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], s) == 0)
			return true;
	return false;
}

static bool rule_names(const struct rs_auth_config *cfg, const struct rs_acl_rule *r, const char *user)
{
	if (in_list(r->users, r->user_count, user) || in_list(r->users, r->user_count, "*"))
		return true;
	for (size_t i = 0; i < r->group_count; i++)
		for (size_t j = 0; j < cfg->group_count; j++)
			if (strcmp(cfg->groups[j].name, r->groups[i]) == 0 &&
			    in_list(cfg->groups[j].members, cfg->groups[j].member_count, user))
				return true;
	return false;
}

unsigned auth_allowed(const struct auth *a, const char *user, const char *repo)
{
	const struct rs_auth_config *cfg = a->cfg;
	unsigned got = cfg->anonymous_pull ? AUTH_PULL : 0;
	if (!user || !user[0])
		return got;
	if (!cfg->acl_set)
		return AUTH_PULL | AUTH_PUSH;
	for (size_t i = 0; i < cfg->acl_count; i++) {
		const struct rs_acl_rule *r = &cfg->acl[i];
		if (auth_glob_match(r->repository, repo) && rule_names(cfg, r, user))
			got |= (r->pull ? AUTH_PULL : 0) | (r->push ? AUTH_PUSH : 0);
	}
	return got;
}

/* ------------------------------------------------------------ base64 */

static const char b64std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Encode without padding (url alphabet). false when out is too small. */
static bool b64url_encode(char *out, size_t cap, const unsigned char *in, size_t len)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		size_t k = len - i;
		if (k > 1)
			v |= (uint32_t)in[i + 1] << 8;
		if (k > 2)
			v |= in[i + 2];
		size_t emit = k >= 3 ? 4 : k + 1;
		if (o + emit + 1 > cap)
			return false;
		for (size_t j = 0; j < emit; j++)
			out[o++] = b64url[(v >> (18 - 6 * j)) & 63];
	}
	out[o] = '\0';
	return true;
}

static int b64_value(char c, const char *alpha)
{
	const char *p = c ? strchr(alpha, c) : NULL;
	return p ? (int)(p - alpha) : -1;
}

/* Decode (padding optional) into out; false on any invalid character or
 * when out (cap bytes, one kept for a NUL) is too small. */
static bool b64_decode(unsigned char *out, size_t cap, size_t *out_len, const char *in, size_t len,
                       const char *alpha)
{
	while (len > 0 && in[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return false;
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64_value(in[i], alpha);
		if (v < 0)
			return false;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o + 1 >= cap)
				return false;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	out[o] = '\0';
	*out_len = o;
	return true;
}

/* ------------------------------------------------------------ tokens */

static void mac(const struct auth *a, const char *payload, size_t len, unsigned char out[HMAC_LEN])
{
	unsigned int ol = HMAC_LEN;
	HMAC(EVP_sha256(), a->secret, (int)a->secret_len, (const unsigned char *)payload, len, out, &ol);
}

enum rs_code auth_token_make(struct auth *a, const char *user, const char *grants, time_t iat, char *out, size_t cap,
                             struct rs_err *err)
{
	char payload[RS_LIMIT_TOKEN_MAX_CHARS];
	int n = snprintf(payload, sizeof(payload), TOKEN_VERSION "|%s|%lld|%lld|%s", user, (long long)iat,
	                 (long long)iat + a->cfg->token_ttl_s, grants);
	if (n < 0 || (size_t)n >= sizeof(payload) / 4 * 3 - 64)
		return rs_err_set(err, RS_TOO_LARGE, "token would be larger than %u characters (RS_LIMIT_TOKEN_MAX_CHARS)",
		                  (unsigned)RS_LIMIT_TOKEN_MAX_CHARS);
	unsigned char sig[HMAC_LEN];
	mac(a, payload, (size_t)n, sig);
	char sig64[64];
	if (!b64url_encode(out, cap, (const unsigned char *)payload, (size_t)n) ||
	    !b64url_encode(sig64, sizeof(sig64), sig, sizeof(sig)) || strlen(out) + 1 + strlen(sig64) + 1 > cap)
		return rs_err_set(err, RS_TOO_LARGE, "token would be larger than %zu characters", cap);
	size_t l = strlen(out);
	out[l] = '.';
	memcpy(out + l + 1, sig64, strlen(sig64) + 1);
	return RS_OK;
}

static bool parse_ll(const char *s, size_t len, long long *out)
{
	if (len == 0 || len > 19)
		return false;
	long long v = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

/* Verify a token and fill id. */
static enum rs_code token_verify(struct auth *a, const char *tok, time_t now, struct auth_identity *id,
                                 struct rs_err *err)
{
	size_t len = strlen(tok);
	const char *dot = strchr(tok, '.');
	if (len > RS_LIMIT_TOKEN_MAX_CHARS || !dot || strchr(dot + 1, '.'))
		return rs_err_set(err, RS_UNAUTHORIZED, "malformed bearer token");
	unsigned char payload[RS_LIMIT_TOKEN_MAX_CHARS];
	unsigned char sig[HMAC_LEN + 8];
	size_t plen = 0, slen = 0;
	if (!b64_decode(payload, sizeof(payload), &plen, tok, (size_t)(dot - tok), b64url) ||
	    !b64_decode(sig, sizeof(sig), &slen, dot + 1, strlen(dot + 1), b64url) || slen != HMAC_LEN)
		return rs_err_set(err, RS_UNAUTHORIZED, "malformed bearer token");
	/* Only the canonical encoding is accepted: unused low bits of the last
	 * character must not give a second spelling of the same token. */
	char canon[RS_LIMIT_TOKEN_MAX_CHARS + 1];
	if (!b64url_encode(canon, sizeof(canon), payload, plen) || strlen(canon) != (size_t)(dot - tok) ||
	    memcmp(canon, tok, strlen(canon)) != 0 || !b64url_encode(canon, sizeof(canon), sig, slen) ||
	    strcmp(canon, dot + 1) != 0)
		return rs_err_set(err, RS_UNAUTHORIZED, "malformed bearer token");
	unsigned char want[HMAC_LEN];
	mac(a, (const char *)payload, plen, want);
	if (CRYPTO_memcmp(want, sig, HMAC_LEN) != 0)
		return rs_err_set(err, RS_UNAUTHORIZED, "bearer token signature is invalid (issued by another regslim, or before a restart)");
	if (memchr(payload, '\0', plen))
		return rs_err_set(err, RS_UNAUTHORIZED, "malformed bearer token");
	/* rs1|user|iat|exp|grants */
	const char *f[5];
	size_t fl[5];
	const char *p = (const char *)payload;
	const char *end = p + plen;
	for (int i = 0; i < 5; i++) {
		const char *bar = i < 4 ? memchr(p, '|', (size_t)(end - p)) : NULL;
		if (i < 4 && !bar)
			return rs_err_set(err, RS_UNAUTHORIZED, "malformed bearer token");
		f[i] = p;
		fl[i] = bar ? (size_t)(bar - p) : (size_t)(end - p);
		p = bar ? bar + 1 : end;
	}
	long long iat, exp;
	if (fl[0] != strlen(TOKEN_VERSION) || memcmp(f[0], TOKEN_VERSION, fl[0]) != 0 || fl[1] >= AUTH_USER_MAX ||
	    !parse_ll(f[2], fl[2], &iat) || !parse_ll(f[3], fl[3], &exp) || fl[4] >= sizeof(id->scopes))
		return rs_err_set(err, RS_UNAUTHORIZED, "malformed bearer token");
	if ((long long)now >= exp)
		return rs_err_set(err, RS_UNAUTHORIZED, "bearer token expired %llds ago", (long long)now - exp);
	if ((long long)now + 60 < iat)
		return rs_err_set(err, RS_UNAUTHORIZED, "bearer token is not valid yet");
	id->bearer = true;
	memcpy(id->user, f[1], fl[1]);
	id->user[fl[1]] = '\0';
	id->anonymous = id->user[0] == '\0';
	memcpy(id->scopes, f[4], fl[4]);
	id->scopes[fl[4]] = '\0';
	return RS_OK;
}

/* Actions the token grants on repo. */
static unsigned token_grants(const struct auth_identity *id, const char *repo)
{
	size_t rl = strlen(repo);
	const char *p = id->scopes;
	while (*p) {
		const char *sp = strchr(p, ' ');
		size_t l = sp ? (size_t)(sp - p) : strlen(p);
		if (l > rl && memcmp(p, repo, rl) == 0 && p[rl] == ':') {
			unsigned got = 0;
			const char *act = p + rl + 1;
			size_t al = l - rl - 1;
			while (al > 0) {
				const char *c = memchr(act, ',', al);
				size_t one = c ? (size_t)(c - act) : al;
				if (one == 4 && memcmp(act, "pull", 4) == 0)
					got |= AUTH_PULL;
				if (one == 4 && memcmp(act, "push", 4) == 0)
					got |= AUTH_PUSH;
				al -= c ? one + 1 : one;
				act += c ? one + 1 : one;
			}
			return got;
		}
		p += l;
		while (*p == ' ')
			p++;
	}
	return 0;
}

/* ------------------------------------------------------------ identify */

static bool scheme_is(const char *h, const char *scheme, const char **rest)
{
	size_t n = strlen(scheme);
	if (strncasecmp(h, scheme, n) != 0 || (h[n] != ' ' && h[n] != '\t'))
		return false;
	h += n;
	while (*h == ' ' || *h == '\t')
		h++;
	*rest = h;
	return true;
}

/* Split a Basic credential into user and password (out buffers). */
static enum rs_code parse_basic(const char *b64, char *user, size_t ucap, char *pass, size_t pcap,
                                struct rs_err *err)
{
	unsigned char dec[1024];
	size_t dl = 0;
	size_t bl = strlen(b64);
	while (bl > 0 && (b64[bl - 1] == ' ' || b64[bl - 1] == '\t'))
		bl--;
	if (bl == 0 || bl > 1300 || !b64_decode(dec, sizeof(dec), &dl, b64, bl, b64std))
		return rs_err_set(err, RS_UNAUTHORIZED, "malformed Basic credentials (expected base64 of user:password)");
	enum rs_code rc = RS_OK;
	unsigned char *colon = memchr(dec, ':', dl);
	if (!colon || colon == dec || memchr(dec, '\0', dl)) {
		rc = rs_err_set(err, RS_UNAUTHORIZED, "malformed Basic credentials (expected base64 of user:password)");
		goto out;
	}
	size_t ul = (size_t)(colon - dec);
	size_t pl = dl - ul - 1;
	if (ul >= ucap || pl >= pcap) {
		rc = rs_err_set(err, RS_UNAUTHORIZED, "Basic credentials too long");
		goto out;
	}
	memcpy(user, dec, ul);
	user[ul] = '\0';
	memcpy(pass, colon + 1, pl);
	pass[pl] = '\0';
out:
	explicit_bzero(dec, sizeof(dec));
	return rc;
}

enum rs_code auth_identify(struct auth *a, const char *header, struct auth_client *client, time_t now,
                           struct auth_identity *out, struct rs_err *err)
{
	memset(out, 0, sizeof(*out));
	out->anonymous = true;
	if (!header || !header[0])
		return RS_OK;
	const char *rest;
	if (strlen(header) > RS_LIMIT_HEADER_MAX_BYTES)
		return rs_err_set(err, RS_UNAUTHORIZED, "Authorization header longer than %u bytes",
		                  (unsigned)RS_LIMIT_HEADER_MAX_BYTES);
	if (scheme_is(header, "Basic", &rest)) {
		char user[AUTH_USER_MAX], pass[512];
		const char *addr = client ? client->addr : NULL;
		enum rs_code rc = parse_basic(rest, user, sizeof(user), pass, sizeof(pass), err);
		unsigned wait = 0;
		if (rc == RS_OK && !login_guard_allow(a->guard, user, addr, now, &wait)) {
			explicit_bzero(pass, sizeof(pass));
			metrics_add(METRICS_LOGIN_THROTTLED, 1);
			if (client)
				client->retry_after = wait;
			return rs_err_set(err, RS_THROTTLED, "too many failed logins for %.64s from this address; try again in %u s",
			                  user, wait);
		}
		if (rc == RS_OK)
			rc = auth_check_password(a, user, pass, err);
		explicit_bzero(pass, sizeof(pass));
		if (rc == RS_UNAUTHORIZED) {
			login_guard_failed(a->guard, user, addr, now);
			metrics_add(METRICS_LOGIN_FAILED, 1);
		} else if (rc == RS_OK) {
			login_guard_succeeded(a->guard, user, addr);
		}
		if (rc)
			return rc == RS_NOMEM ? rc : RS_UNAUTHORIZED;
		out->anonymous = false;
		snprintf(out->user, sizeof(out->user), "%s", user);
		return RS_OK;
	}
	if (scheme_is(header, "Bearer", &rest)) {
		char tok[RS_LIMIT_TOKEN_MAX_CHARS + 1];
		size_t tl = strcspn(rest, " \t");
		if (tl == 0 || tl > RS_LIMIT_TOKEN_MAX_CHARS || rest[tl + strspn(rest + tl, " \t")] != '\0')
			return rs_err_set(err, RS_UNAUTHORIZED, "malformed bearer token");
		memcpy(tok, rest, tl);
		tok[tl] = '\0';
		return token_verify(a, tok, now, out, err);
	}
	return rs_err_set(err, RS_UNAUTHORIZED, "unsupported Authorization scheme (use Basic or Bearer)");
}

/* ------------------------------------------------------------ decide */

static const char *action_name(unsigned need)
{
	return need & AUTH_PUSH ? "push" : "pull";
}

void auth_decide(struct auth *a, const char *header, struct auth_client *client, const char *repo, unsigned need,
                 time_t now, struct auth_decision *out)
{
	memset(out, 0, sizeof(*out));
	struct auth_identity *id = calloc(1, sizeof(*id));
	struct rs_err err = {0};
	if (!id) {
		out->verdict = AUTH_CHALLENGE;
		snprintf(out->msg, sizeof(out->msg), "out of memory checking credentials");
		return;
	}
	if (auth_identify(a, header, client, now, id, &err) != RS_OK) {
		out->verdict = err.code == RS_THROTTLED ? AUTH_THROTTLED : AUTH_CHALLENGE;
		snprintf(out->msg, sizeof(out->msg), "%s", err.msg);
		goto out;
	}
	if (!repo) {
		/* /v2/: anonymous clients are asked to log in, so that docker
		 * login sees the challenge; valid credentials pass. */
		if (id->anonymous && !id->bearer) {
			out->verdict = AUTH_CHALLENGE;
			snprintf(out->msg, sizeof(out->msg), "authentication required");
		}
		goto out;
	}
	const char *user = id->anonymous ? NULL : id->user;
	unsigned acl = auth_allowed(a, user, repo);
	unsigned have = id->bearer ? token_grants(id, repo) : acl;
	if ((have & need) == need)
		goto out;
	if (id->bearer && (acl & need) == need) {
		out->verdict = AUTH_CHALLENGE;
		out->insufficient_scope = true;
		snprintf(out->msg, sizeof(out->msg), "the token does not grant %s on %.150s; request a token with that scope",
		         action_name(need), repo);
		goto out;
	}
	if (id->anonymous) {
		out->verdict = AUTH_CHALLENGE;
		snprintf(out->msg, sizeof(out->msg), "authentication required to %s %.150s", action_name(need), repo);
		goto out;
	}
	out->verdict = AUTH_DENY;
	snprintf(out->msg, sizeof(out->msg), "user %.64s may not %s %.150s (auth.acl)", id->user, action_name(need), repo);
out:
	explicit_bzero(id, sizeof(*id));
	free(id);
}

/* ------------------------------------------------------------ token endpoint */

enum rs_code auth_issue_token(struct auth *a, const char *header, struct auth_client *client,
                              const char *const *scopes, size_t n, time_t now, char *out, size_t cap,
                              struct rs_err *err)
{
	if (n > RS_LIMIT_TOKEN_SCOPES_MAX)
		return rs_err_set(err, RS_BAD_INPUT, "%zu scopes requested, the limit is %u (RS_LIMIT_TOKEN_SCOPES_MAX)", n,
		                  (unsigned)RS_LIMIT_TOKEN_SCOPES_MAX);
	struct auth_identity *id = calloc(1, sizeof(*id));
	char *grants = calloc(1, RS_LIMIT_TOKEN_MAX_CHARS);
	char *tok = calloc(1, RS_LIMIT_TOKEN_MAX_CHARS + 1);
	enum rs_code rc = RS_OK;
	if (!id || !grants || !tok) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory issuing a token");
		goto out;
	}
	if (header && header[0]) {
		const char *rest;
		if (!scheme_is(header, "Basic", &rest)) {
			rc = rs_err_set(err, RS_UNAUTHORIZED, "the token endpoint takes Basic credentials");
			goto out;
		}
	}
	if ((rc = auth_identify(a, header, client, now, id, err)))
		goto out;
	size_t g = 0;
	for (size_t i = 0; i < n; i++) {
		/* repository:NAME:ACTIONS; NAME has no ':' in the distribution grammar */
		const char *s = scopes[i];
		if (strncmp(s, "repository:", 11) != 0)
			continue;
		const char *name = s + 11;
		const char *colon = strrchr(name, ':');
		if (!colon || colon == name || (size_t)(colon - name) > RS_LIMIT_NAME_MAX)
			continue;
		char repo[RS_LIMIT_NAME_MAX + 1];
		memcpy(repo, name, (size_t)(colon - name));
		repo[colon - name] = '\0';
		if (strpbrk(repo, " |:"))
			continue;
		unsigned want = 0;
		const char *act = colon + 1;
		while (*act) {
			size_t one = strcspn(act, ",");
			if ((one == 4 && strncmp(act, "pull", 4) == 0) || (one == 1 && act[0] == '*'))
				want |= AUTH_PULL;
			if ((one == 4 && strncmp(act, "push", 4) == 0) || (one == 1 && act[0] == '*'))
				want |= AUTH_PUSH;
			act += one;
			if (*act == ',')
				act++;
		}
		unsigned got = want & auth_allowed(a, id->anonymous ? NULL : id->user, repo);
		if (!got)
			continue;
		int w = snprintf(grants + g, RS_LIMIT_TOKEN_MAX_CHARS - g, "%s%s:%s%s%s", g ? " " : "", repo,
		                 got & AUTH_PULL ? "pull" : "", got == (AUTH_PULL | AUTH_PUSH) ? "," : "",
		                 got & AUTH_PUSH ? "push" : "");
		if (w < 0 || (size_t)w >= RS_LIMIT_TOKEN_MAX_CHARS - g) {
			rc = rs_err_set(err, RS_TOO_LARGE, "the requested scopes make a token larger than %u characters",
			                (unsigned)RS_LIMIT_TOKEN_MAX_CHARS);
			goto out;
		}
		g += (size_t)w;
	}
	if ((rc = auth_token_make(a, id->user, grants, now, tok, RS_LIMIT_TOKEN_MAX_CHARS + 1, err)))
		goto out;
	struct tm tm;
	char when[32];
	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	int w = snprintf(out, cap, "{\"token\":\"%s\",\"access_token\":\"%s\",\"expires_in\":%u,\"issued_at\":\"%s\"}\n",
	                 tok, tok, a->cfg->token_ttl_s, when);
	if (w < 0 || (size_t)w >= cap)
		rc = rs_err_set(err, RS_TOO_LARGE, "token answer larger than %zu bytes", cap);
out:
	if (id)
		explicit_bzero(id, sizeof(*id));
	free(id);
	free(grants);
	free(tok);
	return rc;
}
