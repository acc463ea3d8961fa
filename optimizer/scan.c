/* scan: streaming layer scan and secret detectors for the push gate (see
 * scan.h). Chain: fd -> digest (compressed) -> decoder -> tar_read ->
 * callbacks; file contents go through a fixed work buffer that carries the
 * last SCAN_WINDOW bytes over to the next round, so a pattern split across
 * chunks is still seen and is reported once. The detectors (match_at) run
 * only at the positions where one could start, found 64 at a time as
 * bitmasks from byte classes computed once per byte (vectorised): see
 * "candidate positions". Talks to codec/tar_read/stream only: no HTTP, no
 * policy. */
#include "scan.h"

#include "handoff.h"
#include "stream.h"
#include "strip.h"

#include <assert.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1 /* see "candidate positions" */
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WORK_CHUNK (64u * 1024)
#define WORK_CAP (SCAN_WINDOW + WORK_CHUNK)
#define AWS_NEIGHBOUR 512

/* scan_to's masks read up to 2 * 64 + 1 bytes past the data: zeros there */
#define WORK_PAD 160

static const char *const detector_names[SCAN_DETECTOR_COUNT] = {
	[SCAN_PEM_PRIVATE_KEY] = "PEM private key",
	[SCAN_OPENSSH_PRIVATE_KEY] = "OpenSSH private key",
	[SCAN_PGP_PRIVATE_KEY] = "PGP private key block",
	[SCAN_AWS_ACCESS_KEY] = "AWS access key id with secret key",
	[SCAN_GITHUB_TOKEN] = "GitHub token",
	[SCAN_SLACK_TOKEN] = "Slack token",
	[SCAN_AWS_CREDENTIALS_FILE] = "AWS credentials file",
	[SCAN_DOCKER_CONFIG_AUTH] = "Docker config.json with registry auth",
	[SCAN_GCLOUD_CREDENTIALS] = "gcloud credentials file",
	[SCAN_NPMRC_TOKEN] = ".npmrc with _authToken",
	[SCAN_GIT_CREDENTIALS] = ".git-credentials with a password",
};

const char *scan_detector_name(enum scan_detector d)
{
	return (unsigned)d < SCAN_DETECTOR_COUNT ? detector_names[d] : "unknown detector";
}

enum file_kind {
	FK_AWS = 1u << 0,
	FK_DOCKER = 1u << 1,
	FK_GCLOUD = 1u << 2,
	FK_NPMRC = 1u << 3,
	FK_GITCRED = 1u << 4,
};

struct scan_secrets {
	uint64_t file_cap;
	bool scan_binaries;
	scan_finding_fn on_finding;
	void *ctx;
	char *path;
	unsigned kinds;
	bool sniffed;   /* the file's first bytes have been looked at */
	bool key_blocks; /* run the key-block detectors in this file */
	bool avx2;       /* classify with AVX2 (scan_to) */
	bool reported[SCAN_DETECTOR_COUNT];
	uint64_t fed;        /* content bytes taken (capped) */
	uint64_t base;       /* file offset of work[0] */
	uint64_t next_start; /* first file offset not yet tested as a match start */
	size_t len;
	int64_t last_secret; /* offset of the last secret-like token, -1 none */
	int64_t aws_pending; /* an AWS key id wants a secret at or before this offset, -1 none */
	enum rs_code failed; /* a callback failed: sticks */
	uint8_t work[WORK_CAP + WORK_PAD];
};

enum rs_code scan_secrets_new(struct scan_secrets **out, uint64_t file_cap, bool scan_binaries,
			      scan_finding_fn on_finding, void *ctx, struct rs_err *err)
{
	*out = NULL;
	struct scan_secrets *s = calloc(1, sizeof(*s));
	if (!s)
		return rs_err_set(err, RS_NOMEM, "out of memory for the secret scanner");
	s->file_cap = file_cap ? file_cap : SCAN_FILE_CAP_DEFAULT;
	s->scan_binaries = scan_binaries;
#ifdef HAVE_AVX2_PATH
	s->avx2 = __builtin_cpu_supports("avx2");
#endif
	s->on_finding = on_finding;
	s->ctx = ctx;
	*out = s;
	return RS_OK;
}

void scan_secrets_portable(struct scan_secrets *s)
{
	s->avx2 = false;
}

void scan_secrets_free(struct scan_secrets *s)
{
	if (!s)
		return;
	free(s->path);
	free(s);
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* path equals name or ends with "/" name. */
static bool is_file(const char *path, const char *name)
{
	size_t a = strlen(path), b = strlen(name);
	if (a == b)
		return strcmp(path, name) == 0;
	return a > b && path[a - b - 1] == '/' && strcmp(path + a - b, name) == 0;
}

static unsigned kinds_of(const char *path)
{
	unsigned k = 0;
	if (is_file(path, ".aws/credentials"))
		k |= FK_AWS;
	if (is_file(path, ".docker/config.json"))
		k |= FK_DOCKER;
	if ((strstr(path, "gcloud/") != NULL) &&
	    (ends_with(path, "/credentials.db") || ends_with(path, "/application_default_credentials.json") ||
	     ends_with(path, "/adc.json") || ends_with(path, "/access_tokens.db")))
		k |= FK_GCLOUD;
	if (is_file(path, ".npmrc") || is_file(path, "etc/npmrc"))
		k |= FK_NPMRC;
	if (is_file(path, ".git-credentials") || is_file(path, ".config/git/credentials"))
		k |= FK_GITCRED;
	return k;
}

enum rs_code scan_secrets_begin(struct scan_secrets *s, const char *path, struct rs_err *err)
{
	free(s->path);
	s->path = strdup(path);
	if (!s->path)
		return rs_err_set(err, RS_NOMEM, "out of memory for the secret scanner");
	s->kinds = kinds_of(path);
	s->sniffed = false;
	s->key_blocks = true;
	memset(s->reported, 0, sizeof(s->reported));
	s->fed = s->base = s->next_start = 0;
	s->len = 0;
	s->last_secret = s->aws_pending = -1;
	s->failed = RS_OK;
	return RS_OK;
}

static enum rs_code report(struct scan_secrets *s, enum scan_detector d, struct rs_err *err)
{
	if (s->reported[d])
		return RS_OK;
	s->reported[d] = true;
	return s->on_finding(s->ctx, s->path, d, err);
}

static bool is_alnum(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_upper_alnum(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool is_b64(uint8_t c)
{
	return is_alnum(c) || c == '+' || c == '/';
}

static bool has(const uint8_t *p, size_t n, const char *lit)
{
	size_t l = strlen(lit);
	return n >= l && memcmp(p, lit, l) == 0;
}

/* p starts with lit (lower case) in any case; ASCII only, as strncasecmp
 * in the C locale, without its call per byte. */
static bool has_ci(const uint8_t *p, size_t n, const char *lit)
{
	size_t k = 0;
	for (; lit[k]; k++) {
		if (k >= n)
			return false;
		uint8_t c = p[k] >= 'A' && p[k] <= 'Z' ? (uint8_t)(p[k] + ('a' - 'A')) : p[k];
		if (c != (uint8_t)lit[k])
			return false;
	}
	return true;
}

/* A line break: "\r\n", "\n" or a literal backslash-n (JSON). 0 when none. */
static size_t line_break(const uint8_t *p, size_t n)
{
	size_t i = 0;
	if (i < n && p[i] == '\r')
		i++;
	if (i < n && p[i] == '\n')
		return i + 1;
	if (i + 1 < n && p[i] == '\\' && p[i + 1] == 'n')
		return i + 2;
	return 0;
}

static size_t b64_run(const uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i < n && (is_b64(p[i]) || p[i] == '='))
		i++;
	return i;
}

/* After a BEGIN header: a key body must follow (base64 line, armor or PEM
 * headers, or an empty line and base64). */
static bool key_body_follows(const uint8_t *p, size_t n)
{
	size_t i = line_break(p, n);
	if (!i)
		return false;
	p += i;
	n -= i;
	if (b64_run(p, n) >= 40)
		return true;
	if (has(p, n, "Proc-Type:") || has(p, n, "Version:") || has(p, n, "Comment:") || has(p, n, "Hash:"))
		return true;
	size_t j = line_break(p, n);
	return j && b64_run(p + j, n - j) >= 40;
}

/* "-----BEGIN <label>PRIVATE KEY-----" or "... PRIVATE KEY BLOCK-----". */
static enum rs_code match_begin(struct scan_secrets *s, const uint8_t *p, size_t n, struct rs_err *err)
{
	if (!has(p, n, "-----BEGIN "))
		return RS_OK;
	size_t i = 11, label = i;
	while (i < n && i < label + 40 && ((p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= '0' && p[i] <= '9') || p[i] == ' '))
		i++;
	/* the label ends with "PRIVATE KEY"; find it in [label, i) */
	size_t end = i;
	const char *tails[] = {"PRIVATE KEY-----", "PRIVATE KEY BLOCK-----"};
	for (size_t t = 0; t < 2; t++) {
		size_t tl = strlen(tails[t]);
		/* the label run swallowed "PRIVATE KEY" (and " BLOCK"); back up */
		for (size_t k = label; k <= end && k + tl <= n; k++) {
			if (memcmp(p + k, tails[t], tl) != 0)
				continue;
			if (k != label && p[k - 1] != ' ')
				continue;
			if (!key_body_follows(p + k + tl, n - k - tl))
				return RS_OK;
			enum scan_detector d = SCAN_PEM_PRIVATE_KEY;
			if (t == 1 || has(p + label, k - label, "PGP "))
				d = SCAN_PGP_PRIVATE_KEY;
			else if (has(p + label, k - label, "OPENSSH "))
				d = SCAN_OPENSSH_PRIVATE_KEY;
			return report(s, d, err);
		}
	}
	return RS_OK;
}

/* A secret-access-key-like token: exactly 40 base64 characters with both
 * cases and a digit, not part of a longer run. */
static bool secret_token(const uint8_t *p, size_t n)
{
	if (n < 40)
		return false;
	bool lo = false, up = false, dg = false;
	for (size_t i = 0; i < 40; i++) {
		if (!is_b64(p[i]))
			return false;
		lo |= p[i] >= 'a' && p[i] <= 'z';
		up |= p[i] >= 'A' && p[i] <= 'Z';
		dg |= p[i] >= '0' && p[i] <= '9';
	}
	return lo && up && dg && (n == 40 || !is_b64(p[40]));
}

static enum rs_code secret_seen(struct scan_secrets *s, uint64_t off, struct rs_err *err)
{
	s->last_secret = (int64_t)off;
	if (s->aws_pending >= 0 && (int64_t)off <= s->aws_pending) {
		s->aws_pending = -1;
		return report(s, SCAN_AWS_ACCESS_KEY, err);
	}
	return RS_OK;
}

/* Test every detector at work[i]; n bytes are available from there. */
static enum rs_code match_at(struct scan_secrets *s, size_t i, size_t n, struct rs_err *err)
{
	const uint8_t *p = s->work + i;
	uint64_t off = s->base + i;
	bool boundary = off == 0 || (i > 0 && !is_alnum(s->work[i - 1]));
	bool b64_boundary = off == 0 || (i > 0 && !is_b64(s->work[i - 1]) && s->work[i - 1] != '=');
	enum rs_code rc = RS_OK;
	switch (p[0]) {
	case '-':
		if (s->key_blocks)
			rc = match_begin(s, p, n, err);
		break;
	case 'A':
		if (boundary && n >= 20 && (has(p, n, "AKIA") || has(p, n, "ASIA"))) {
			size_t k = 4;
			while (k < 20 && is_upper_alnum(p[k]))
				k++;
			if (k == 20 && (n == 20 || !is_alnum(p[20])) && memcmp(p, "AKIAIOSFODNN7EXAMPLE", 20) != 0) {
				if (s->last_secret >= 0 && off - (uint64_t)s->last_secret <= AWS_NEIGHBOUR)
					rc = report(s, SCAN_AWS_ACCESS_KEY, err);
				else
					s->aws_pending = (int64_t)(off + 20 + AWS_NEIGHBOUR);
			}
		}
		break;
	case 'g':
		if (boundary && n >= 40 && p[1] == 'h' && strchr("posur", p[2]) && p[2] && p[3] == '_') {
			size_t k = 4;
			while (k < 40 && is_alnum(p[k]))
				k++;
			if (k == 40 && (n == 40 || !is_alnum(p[40])))
				rc = report(s, SCAN_GITHUB_TOKEN, err);
		}
		break;
	case 'x':
		if (boundary && has(p, n, "xox") && n > 5 && strchr("baprs", p[3]) && p[3] && p[4] == '-') {
			size_t k = 5;
			while (k < n && k < 5 + 10 && (is_alnum(p[k]) || p[k] == '-'))
				k++;
			if (k == 15)
				rc = report(s, SCAN_SLACK_TOKEN, err);
		}
		break;
	case '"':
		if ((s->kinds & FK_DOCKER) && has(p, n, "\"auth\"")) {
			size_t k = 6;
			while (k < n && (p[k] == ' ' || p[k] == '\t'))
				k++;
			if (k < n && p[k] == ':') {
				k++;
				while (k < n && (p[k] == ' ' || p[k] == '\t' || p[k] == '\n' || p[k] == '\r'))
					k++;
				if (k + 1 < n && p[k] == '"' && is_b64(p[k + 1]))
					rc = report(s, SCAN_DOCKER_CONFIG_AUTH, err);
			}
		}
		if (rc == RS_OK && (s->kinds & FK_GCLOUD) &&
		    (has(p, n, "\"refresh_token\"") || has(p, n, "\"private_key\"")))
			rc = report(s, SCAN_GCLOUD_CREDENTIALS, err);
		break;
	case '_':
		if ((s->kinds & FK_NPMRC) && has(p, n, "_authToken")) {
			size_t k = 10;
			while (k < n && p[k] == ' ')
				k++;
			if (k < n && p[k] == '=') {
				k++;
				while (k < n && p[k] == ' ')
					k++;
				if (k < n && p[k] != '$' && p[k] != '\n' && p[k] != '\r' && p[k] != '"')
					rc = report(s, SCAN_NPMRC_TOKEN, err);
			}
		}
		break;
	case ':':
		if ((s->kinds & FK_GITCRED) && has(p, n, "://")) {
			size_t k = 3, user = 0, pass = 0;
			while (k < n && p[k] != ':' && p[k] != '/' && p[k] != '@' && p[k] > ' ')
				k++, user++;
			if (user && k < n && p[k] == ':') {
				k++;
				while (k < n && p[k] != '@' && p[k] > ' ')
					k++, pass++;
				if (pass && k < n && p[k] == '@')
					rc = report(s, SCAN_GIT_CREDENTIALS, err);
			}
		}
		break;
	default:
		break;
	}
	if (rc)
		return rc;
	/* keyword checks (case-insensitive) */
	if ((p[0] == 'a' || p[0] == 'A') && has_ci(p, n, "aws_secret_access_key")) {
		if (s->kinds & FK_AWS)
			rc = report(s, SCAN_AWS_CREDENTIALS_FILE, err);
		if (rc == RS_OK)
			rc = secret_seen(s, off, err);
	} else if (b64_boundary && is_b64(p[0]) && secret_token(p, n)) {
		rc = secret_seen(s, off, err);
	}
	return rc;
}

/* ---- candidate positions ------------------------------------------------
 * match_at acts only where one of these starts, so scan_to calls it only
 * there, in order, finding them 64 positions at a time as bitmasks (bit k:
 * position p + k):
 *   - a secret-like token: a run of exactly 40 base64 characters (the
 *     base64 mask is clear at k - 1 and k + 40 and set from k to k + 39);
 *   - "gh" or "xo" after a non-alphanumeric byte (GitHub, Slack tokens);
 *   - "aw" in any case (aws_secret_access_key), "AK" and "AS" (AKIA, ASIA);
 *   - "--" (key blocks), unless the key-block detectors are off;
 *   - in credential files also '"', '_' and ':'.
 * A superset ('=' before a token, the case mix, the rest of each pattern):
 * match_at decides. Each byte is classified once, with GNU C vector
 * extensions: 32 at a time where the CPU has AVX2 (chosen at run time: the
 * build does not require it), else 16 at a time (SSE2 on x86-64, plain code
 * elsewhere). */
#define WORD 64
typedef uint8_t vec16 __attribute__((vector_size(16)));
typedef uint8_t vec32 __attribute__((vector_size(32)));

struct masks {
	uint64_t b64;       /* [A-Za-z0-9+/] */
	uint64_t alnum;     /* [A-Za-z0-9] */
	uint64_t word_pair; /* "gh", "xo": need a word boundary before */
	uint64_t pair;      /* "aw" (any case), "AK", "AS", "--" (when on) */
};

/* The classes of the lanes of c (n: the bytes after c's, dash: 0xff lanes
 * when "--" counts), as vectors of c's type with lanes 0 or 0xff; a macro,
 * for both vector widths. */
#define CLASSIFY_LANES(c, n, dash, b64, alnum, word_pair, pair)                                                  \
	do {                                                                                                     \
		__typeof__(c) lc_ = (c) | 0x20;                                                                  \
		alnum = (__typeof__(c))((__typeof__(c))(lc_ - 'a') <= 'z' - 'a') |                               \
			(__typeof__(c))((__typeof__(c))((c) - '0') <= 9);                                        \
		b64 = alnum | (__typeof__(c))((c) == '+') | (__typeof__(c))((c) == '/');                         \
		word_pair = ((__typeof__(c))((c) == 'g') & (__typeof__(c))((n) == 'h')) |                        \
			    ((__typeof__(c))((c) == 'x') & (__typeof__(c))((n) == 'o'));                         \
		pair = ((__typeof__(c))(lc_ == 'a') & (__typeof__(c))(((n) | 0x20) == 'w')) |                    \
		       ((__typeof__(c))((c) == 'A') & ((__typeof__(c))((n) == 'K') | (__typeof__(c))((n) == 'S'))) | \
		       ((__typeof__(c))((c) == '-') & (__typeof__(c))((n) == '-') & (dash));                     \
	} while (0)

/* Bit k: lane k is 0xff (lanes are 0 or 0xff). */
static uint64_t movemask16(vec16 v)
{
#if defined(__SSE2__)
	return (uint16_t)_mm_movemask_epi8((__m128i)v);
#else
	uint64_t m = 0;
	for (unsigned k = 0; k < 16; k++)
		m |= (uint64_t)(v[k] >> 7) << k;
	return m;
#endif
}

/* The masks of p[0] to p[WORD - 1]; reads p[0] to p[WORD]. */
__attribute__((always_inline)) static inline void classify(struct masks *m, const uint8_t *p, bool dash_on)
{
	const vec16 dash = (vec16){0} + (uint8_t)(dash_on ? 0xff : 0);
	*m = (struct masks){0};
#pragma GCC unroll 4
	for (unsigned k = 0; k < WORD; k += 16) {
		vec16 c, n, b64, alnum, word_pair, pair;
		memcpy(&c, p + k, sizeof(c));
		memcpy(&n, p + k + 1, sizeof(n));
		CLASSIFY_LANES(c, n, dash, b64, alnum, word_pair, pair);
		m->b64 |= movemask16(b64) << k;
		m->alnum |= movemask16(alnum) << k;
		m->word_pair |= movemask16(word_pair) << k;
		m->pair |= movemask16(pair) << k;
	}
}

#ifdef HAVE_AVX2_PATH
/* classify with 32-byte vectors, for CPUs with AVX2 (chosen at run time). */
__attribute__((always_inline, target("avx2"))) static inline void classify_avx2(struct masks *m, const uint8_t *p,
										   bool dash_on)
{
	const vec32 dash = (vec32){0} + (uint8_t)(dash_on ? 0xff : 0);
	*m = (struct masks){0};
#pragma GCC unroll 2
	for (unsigned k = 0; k < WORD; k += 32) {
		vec32 c, n, b64, alnum, word_pair, pair;
		memcpy(&c, p + k, sizeof(c));
		memcpy(&n, p + k + 1, sizeof(n));
		CLASSIFY_LANES(c, n, dash, b64, alnum, word_pair, pair);
		m->b64 |= (uint64_t)(uint32_t)_mm256_movemask_epi8((__m256i)b64) << k;
		m->alnum |= (uint64_t)(uint32_t)_mm256_movemask_epi8((__m256i)alnum) << k;
		m->word_pair |= (uint64_t)(uint32_t)_mm256_movemask_epi8((__m256i)word_pair) << k;
		m->pair |= (uint64_t)(uint32_t)_mm256_movemask_epi8((__m256i)pair) << k;
	}
}
#endif

/* Bit k (k < 64): bits k to k + 39 of the 128-bit value hi:lo are all set;
 * by doubling the width of the run. */
__attribute__((always_inline)) static inline uint64_t run40(uint64_t lo, uint64_t hi)
{
	uint64_t l2 = lo & (lo >> 1 | hi << 63), h2 = hi & hi >> 1;
	uint64_t l4 = l2 & (l2 >> 2 | h2 << 62), h4 = h2 & h2 >> 2;
	uint64_t l8 = l4 & (l4 >> 4 | h4 << 60), h8 = h4 & h4 >> 4;
	uint64_t l16 = l8 & (l8 >> 8 | h8 << 56), h16 = h8 & h8 >> 8;
	uint64_t l32 = l16 & (l16 >> 16 | h16 << 48);
	return l32 & (l8 >> 32 | h8 << 32);
}

/* '"', '_', ':' in p[0] to p[WORD - 1] (credential files only: rare). */
static uint64_t cred_bytes(const uint8_t *p)
{
	uint64_t m = 0;
	for (unsigned k = 0; k < WORD; k++)
		m |= (uint64_t)(p[k] == '"' || p[k] == '_' || p[k] == ':') << k;
	return m;
}

typedef void classify_fn(struct masks *m, const uint8_t *p, bool dash_on);

/* match_at at every candidate position in [from, limit), in increasing
 * order; inlined into one function per classify, which it calls with a
 * constant. */
__attribute__((always_inline)) static inline enum rs_code scan_words(struct scan_secrets *s, size_t from, size_t limit,
								    classify_fn *classify_word, struct rs_err *err)
{
	const uint8_t *w = s->work;
	struct masks cur, next;
	classify_word(&cur, w + from, s->key_blocks);
	/* the byte before from, or none at the file's start (a boundary) */
	uint64_t b64_before = from > 0 && is_b64(w[from - 1]), alnum_before = from > 0 && is_alnum(w[from - 1]);
	for (size_t p = from; p < limit; p += WORD) {
		classify_word(&next, w + p + WORD, s->key_blocks);
		uint64_t run_start = cur.b64 & ~(cur.b64 << 1 | b64_before);
		uint64_t after_40 = cur.b64 >> 40 | next.b64 << 24;
		uint64_t word_start = ~(cur.alnum << 1 | alnum_before);
		uint64_t cand = (run_start & run40(cur.b64, next.b64) & ~after_40) | (word_start & cur.word_pair) |
				cur.pair;
		if (s->kinds)
			cand |= cred_bytes(w + p);
		if (limit - p < WORD)
			cand &= ((uint64_t)1 << (limit - p)) - 1;
		for (; cand; cand &= cand - 1) {
			size_t i = p + (size_t)__builtin_ctzll(cand);
			enum rs_code rc = match_at(s, i, s->len - i, err);
			if (rc)
				return rc;
		}
		b64_before = cur.b64 >> 63;
		alnum_before = cur.alnum >> 63;
		cur = next;
	}
	return RS_OK;
}

static enum rs_code scan_words_default(struct scan_secrets *s, size_t from, size_t limit, struct rs_err *err)
{
	return scan_words(s, from, limit, classify, err);
}

#ifdef HAVE_AVX2_PATH
__attribute__((target("avx2"))) static enum rs_code scan_words_avx2(struct scan_secrets *s, size_t from,
								   size_t limit, struct rs_err *err)
{
	return scan_words(s, from, limit, classify_avx2, err);
}
#endif

/* Test match starts up to limit (an index into work): match_at at every
 * candidate position (see above) in increasing order. match_at keeps every
 * rule (boundaries, window, pairing), so the findings and their order are
 * those of testing every byte; tests/unit/test_scan.c compares the two. */
static enum rs_code scan_to(struct scan_secrets *s, size_t limit, struct rs_err *err)
{
	if (!s->sniffed) {
		/* the first call sees the file's start: base is still 0 */
		s->sniffed = true;
		s->key_blocks = s->scan_binaries || s->len < 4 || memcmp(s->work, "\x7f" "ELF", 4) != 0;
	}
	size_t from = (size_t)(s->next_start - s->base);
	/* only the file's first byte has no byte before it in work */
	assert(from > 0 || s->base == 0);
	if (limit <= from)
		return RS_OK;
	/* the masks of the last positions read up to 2 * WORD + 1 bytes past
	 * them: zeros, in no class, past the data */
	memset(s->work + s->len, 0, WORK_PAD);
	enum rs_code rc;
#ifdef HAVE_AVX2_PATH
	if (s->avx2)
		rc = scan_words_avx2(s, from, limit, err);
	else
#endif
		rc = scan_words_default(s, from, limit, err);
	if (rc)
		return s->failed = rc;
	s->next_start = s->base + limit;
	return RS_OK;
}

enum rs_code scan_secrets_feed(struct scan_secrets *s, const void *buf, size_t len, struct rs_err *err)
{
	if (s->failed)
		return rs_err_set(err, s->failed, "secret scanner failed earlier");
	const uint8_t *in = buf;
	if (s->fed >= s->file_cap)
		return RS_OK;
	if (len > s->file_cap - s->fed)
		len = (size_t)(s->file_cap - s->fed);
	s->fed += len;
	while (len > 0) {
		size_t n = WORK_CAP - s->len;
		if (n > len)
			n = len;
		memcpy(s->work + s->len, in, n);
		s->len += n;
		in += n;
		len -= n;
		if (s->len == WORK_CAP) {
			size_t limit = WORK_CAP - SCAN_WINDOW;
			enum rs_code rc = scan_to(s, limit, err);
			if (rc)
				return rc;
			/* keep one byte before the next start for the boundary checks */
			size_t keep_from = limit - 1;
			memmove(s->work, s->work + keep_from, s->len - keep_from);
			s->len -= keep_from;
			s->base += keep_from;
		}
	}
	return RS_OK;
}

enum rs_code scan_secrets_end(struct scan_secrets *s, struct rs_err *err)
{
	if (s->failed)
		return rs_err_set(err, s->failed, "secret scanner failed earlier");
	return scan_to(s, s->len, err);
}

/* ---- layer scan -------------------------------------------------------- */

struct layer_ctx {
	const struct scan_opts *o;
	struct scan_secrets *sec;
	struct scan_stats *st;
	bool in_file;
};

static enum rs_code on_entry(void *ctx, const struct tar_entry *e, const void *raw, size_t raw_len,
			     enum tar_verdict *verdict, struct rs_err *err)
{
	(void)raw;
	(void)raw_len;
	struct layer_ctx *c = ctx;
	c->st->entries++;
	if (c->o->on_entry) {
		enum rs_code rc = c->o->on_entry(c->o->ctx, e, err);
		if (rc)
			return rc;
	}
	c->in_file = false;
	*verdict = TAR_DROP;
	if (c->sec && e->type == TAR_TYPE_FILE && e->size > 0) {
		for (size_t i = 0; i < c->o->allow_path_count; i++) {
			if (strip_glob_match(c->o->allow_paths[i], e->path)) {
				c->st->files_allowed++;
				return RS_OK;
			}
		}
		enum rs_code rc = scan_secrets_begin(c->sec, e->path, err);
		if (rc)
			return rc;
		c->in_file = true;
		c->st->files_scanned++;
		*verdict = TAR_KEEP;
	}
	return RS_OK;
}

static enum rs_code on_data(void *ctx, const struct tar_entry *e, const void *buf, size_t len, bool padding,
			    struct rs_err *err)
{
	(void)e;
	struct layer_ctx *c = ctx;
	if (padding || !c->in_file)
		return RS_OK;
	return scan_secrets_feed(c->sec, buf, len, err);
}

static enum rs_code on_end_entry(void *ctx, const struct tar_entry *e, enum tar_verdict verdict,
				 struct rs_err *err)
{
	(void)e;
	(void)verdict;
	struct layer_ctx *c = ctx;
	if (!c->in_file)
		return RS_OK;
	c->in_file = false;
	return scan_secrets_end(c->sec, err);
}

struct scan_layer {
	struct scan_opts o; /* a copy; what it points to is borrowed */
	struct scan_stats st;
	struct layer_ctx c;
	struct stream_sink *tar, *dec, *dig; /* dig: only with o.digest */
	struct stream_sink *hand;            /* between dec and tar: only with o.threaded */
	struct stream_sink *head;            /* dig, else dec */
	enum rs_code failed;
};

void scan_layer_free(struct scan_layer *l)
{
	if (!l)
		return;
	stream_free(l->dig);
	stream_free(l->dec);
	stream_free(l->hand); /* stops its thread before the tar reader goes */
	stream_free(l->tar);
	scan_secrets_free(l->c.sec);
	free(l);
}

enum rs_code scan_layer_new(struct scan_layer **out, const struct scan_opts *o, struct rs_err *err)
{
	static const struct tar_read_cbs cbs = {on_entry, on_data, on_end_entry};
	*out = NULL;
	struct scan_layer *l = calloc(1, sizeof(*l));
	if (!l)
		return rs_err_set(err, RS_NOMEM, "out of memory for a layer scan");
	l->o = *o;
	l->c.o = &l->o;
	l->c.st = &l->st;
	enum rs_code rc = RS_OK;
	if (o->secrets)
		rc = scan_secrets_new(&l->c.sec, o->file_cap, o->scan_binaries, o->on_finding, o->ctx, err);
	if (rc == RS_OK)
		rc = tar_read_new(&l->tar, &cbs, &l->c, err);
	if (rc == RS_OK && o->threaded)
		rc = handoff_new(&l->hand, l->tar, err);
	if (rc == RS_OK)
		rc = codec_decoder_new(&l->dec, o->codec, NULL, l->hand ? l->hand : l->tar, err);
	if (rc == RS_OK && o->digest)
		rc = stream_digest_sink_new(&l->dig, l->dec, err);
	if (rc) {
		scan_layer_free(l);
		return rc;
	}
	l->head = l->dig ? l->dig : l->dec;
	*out = l;
	return RS_OK;
}

/* After rc from a stage before the tar thread (threaded): a failure of the
 * tar walk or a callback on earlier bytes is the one to report, as the
 * unthreaded chain would have met it first. */
static enum rs_code settle(struct scan_layer *l, enum rs_code rc, struct rs_err *err)
{
	if (rc == RS_OK || !l->hand)
		return rc;
	struct rs_err e2 = {0};
	if (handoff_settle(l->hand, &e2) != RS_OK && e2.code != RS_OK) {
		if (err)
			*err = e2;
		return e2.code;
	}
	return rc;
}

enum rs_code scan_layer_write(struct scan_layer *l, const void *buf, size_t len, struct rs_err *err)
{
	if (l->failed)
		return rs_err_set(err, l->failed, "the layer scan failed earlier");
	enum rs_code rc = len ? stream_write(l->head, buf, len, err) : RS_OK;
	return l->failed = settle(l, rc, err);
}

enum rs_code scan_layer_finish(struct scan_layer *l, struct scan_stats *out, struct rs_err *err)
{
	if (l->failed)
		return rs_err_set(err, l->failed, "the layer scan failed earlier");
	enum rs_code rc = settle(l, stream_finish(l->head, err), err);
	if (l->dig) {
		char got[DIGEST_STR_SIZE];
		uint64_t n = 0;
		stream_digest_sink_result(l->dig, got, &n);
		if (rc == RS_OK && strcmp(got, l->o.digest) != 0)
			rc = rs_err_set(err, RS_DIGEST_MISMATCH, "layer bytes hash to %s, not %s", got, l->o.digest);
	}
	codec_decoder_counts(l->dec, &l->st.compressed_bytes, &l->st.uncompressed_bytes);
	*out = l->st;
	return l->failed = rc;
}

/* The incremental scan fed from fd: the same stages, the same findings. */
enum rs_code scan_layer_fd(struct scan_stats *out, int fd, const struct scan_opts *o, struct rs_err *err)
{
	memset(out, 0, sizeof(*out));
	struct scan_layer *l = NULL;
	enum rs_code rc = scan_layer_new(&l, o, err);
	if (rc)
		return rc;
	rc = settle(l, stream_pump_fd(l->head, fd, err), err);
	if (rc == RS_OK)
		rc = scan_layer_finish(l, out, err);
	else
		codec_decoder_counts(l->dec, &out->compressed_bytes, &out->uncompressed_bytes);
	scan_layer_free(l);
	return rc;
}
