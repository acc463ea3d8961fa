/* test_scan: the secret detectors (each one, with its false-positive
 * guard), findings independent of how the content is split into chunks
 * (every split point, and patterns straddling the scanner's work buffer),
 * the per-file cap, the findings of testing every byte (a test-only copy of
 * the old scanner) against the library's, with both of its byte
 * classifiers, on random files and on near-miss secret tokens, the layer
 * scan over gzip layers (entries reported, digest verified, a secret in a
 * file that a later layer deletes), and the incremental layer scan (fed as
 * an upload's bytes arrive) against the one-shot scan over plain, gzip and
 * zstd layers cut everywhere: one byte at a time, inside the codec's
 * header, inside every tar header, at random. */
#include "codec.h"

#include "fixture.h"
#include "digest.h"
#include "scan.h"
#include "stream.h"
#include "targen.h"

#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct found {
	unsigned count[SCAN_DETECTOR_COUNT];
	unsigned total;
	char last_path[256];
	char entries[2048];
};

static enum rs_code on_find(void *ctx, const char *path, enum scan_detector d, struct rs_err *err)
{
	(void)err;
	struct found *f = ctx;
	f->count[d]++;
	f->total++;
	snprintf(f->last_path, sizeof(f->last_path), "%s", path);
	return RS_OK;
}

/* Scan one file's content split into pieces of `piece` bytes (0: whole);
 * bin: scan_binaries. */
static struct found scan_content_bin(const char *path, const void *data, size_t len, size_t piece, uint64_t cap,
				     bool bin)
{
	struct found f = {0};
	struct rs_err err = {0};
	struct scan_secrets *s = NULL;
	ck_assert_int_eq(scan_secrets_new(&s, cap, bin, on_find, &f, &err), RS_OK);
	ck_assert_int_eq(scan_secrets_begin(s, path, &err), RS_OK);
	const char *p = data;
	size_t left = len;
	while (left > 0) {
		size_t n = piece && piece < left ? piece : left;
		ck_assert_int_eq(scan_secrets_feed(s, p, n, &err), RS_OK);
		p += n;
		left -= n;
	}
	ck_assert_int_eq(scan_secrets_end(s, &err), RS_OK);
	scan_secrets_free(s);
	return f;
}

static struct found scan_content(const char *path, const void *data, size_t len, size_t piece, uint64_t cap)
{
	return scan_content_bin(path, data, len, piece, cap, false);
}

static struct found scan_str(const char *path, const char *text)
{
	return scan_content(path, text, strlen(text), 0, 0);
}

#define B64LINE "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"

START_TEST(detects_pem_private_keys)
{
	struct found f = scan_str("etc/ssl/private/server.key",
				  "-----BEGIN RSA PRIVATE KEY-----\n" B64LINE "\n-----END RSA PRIVATE KEY-----\n");
	ck_assert_uint_eq(f.count[SCAN_PEM_PRIVATE_KEY], 1);
	ck_assert_str_eq(f.last_path, "etc/ssl/private/server.key");
	f = scan_str("k.pem", "-----BEGIN PRIVATE KEY-----\r\n" B64LINE "\r\n");
	ck_assert_uint_eq(f.count[SCAN_PEM_PRIVATE_KEY], 1);
	f = scan_str("k.pem", "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES\n\n" B64LINE);
	ck_assert_uint_eq(f.count[SCAN_PEM_PRIVATE_KEY], 1);
	/* a service-account JSON keeps the key with literal \n escapes */
	f = scan_str("sa.json", "{\"private_key\": \"-----BEGIN PRIVATE KEY-----\\n" B64LINE "\\n\"}");
	ck_assert_uint_eq(f.count[SCAN_PEM_PRIVATE_KEY], 1);
}
END_TEST

START_TEST(detects_openssh_and_pgp_private_keys)
{
	struct found f = scan_str("root/.ssh/id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\n"
							  "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n");
	ck_assert_uint_eq(f.count[SCAN_OPENSSH_PRIVATE_KEY], 1);
	ck_assert_uint_eq(f.total, 1);
	f = scan_str("key.asc", "-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\nlQOYBF...\n");
	ck_assert_uint_eq(f.count[SCAN_PGP_PRIVATE_KEY], 1);
	f = scan_str("key.asc", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n" B64LINE "\n");
	ck_assert_uint_eq(f.count[SCAN_PGP_PRIVATE_KEY], 1);
}
END_TEST

START_TEST(pem_header_without_key_body_is_not_a_finding)
{
	/* source code that parses keys, docs that mention the header */
	struct found f = scan_str("usr/lib/go/src/crypto/x509/pem.go",
				  "if block.Type == \"-----BEGIN RSA PRIVATE KEY-----\" {\n\treturn parse(block)\n}\n");
	ck_assert_uint_eq(f.total, 0);
	f = scan_str("README", "Put your key (-----BEGIN PRIVATE KEY-----) in the file.\n");
	ck_assert_uint_eq(f.total, 0);
	f = scan_str("cert.pem", "-----BEGIN CERTIFICATE-----\n" B64LINE "\n");
	ck_assert_uint_eq(f.total, 0);
	f = scan_str("pub", "-----BEGIN PUBLIC KEY-----\n" B64LINE "\n");
	ck_assert_uint_eq(f.total, 0);
}
END_TEST

START_TEST(detects_aws_key_id_with_a_secret_neighbour)
{
	struct found f = scan_str("app/config.env", "AWS_ACCESS_KEY_ID=AKIAZ7QW3RT5YU8IO2PL\n"
						    "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9w\n");
	ck_assert_uint_eq(f.count[SCAN_AWS_ACCESS_KEY], 1);
	/* secret first, key id after */
	f = scan_str("a.py", "secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9w'\nkey = 'ASIAZ7QW3RT5YU8IO2PL'\n");
	ck_assert_uint_eq(f.count[SCAN_AWS_ACCESS_KEY], 1);
	/* keyword as neighbour */
	f = scan_str("b.ini", "aws_access_key_id = AKIAZ7QW3RT5YU8IO2PL\naws_secret_access_key = ${SECRET}\n");
	ck_assert_uint_eq(f.count[SCAN_AWS_ACCESS_KEY], 1);
}
END_TEST

START_TEST(aws_key_id_alone_or_example_is_not_a_finding)
{
	struct found f = scan_str("a.txt", "id: AKIAZ7QW3RT5YU8IO2PL only\n");
	ck_assert_uint_eq(f.total, 0);
	f = scan_str("docs.md", "AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9w\n");
	ck_assert_uint_eq(f.total, 0);
	/* part of a longer word */
	f = scan_str("a.txt", "XAKIAZ7QW3RT5YU8IO2PL wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9w\n");
	ck_assert_uint_eq(f.total, 0);
	/* a 40-character hex hash is not secret-like */
	f = scan_str("a.txt", "AKIAZ7QW3RT5YU8IO2PL 0123456789abcdef0123456789abcdef01234567\n");
	ck_assert_uint_eq(f.total, 0);
	/* secret too far away */
	char buf[2048];
	memset(buf, ' ', sizeof(buf));
	memcpy(buf, "AKIAZ7QW3RT5YU8IO2PL", 20);
	memcpy(buf + 1500, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9w", 40);
	f = scan_content("a.txt", buf, sizeof(buf), 0, 0);
	ck_assert_uint_eq(f.total, 0);
}
END_TEST

START_TEST(detects_github_and_slack_tokens)
{
	struct found f = scan_str("ci.sh", "export GH=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789\n");
	ck_assert_uint_eq(f.count[SCAN_GITHUB_TOKEN], 1);
	f = scan_str("ci.sh", "token: ghs_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789");
	ck_assert_uint_eq(f.count[SCAN_GITHUB_TOKEN], 1);
	f = scan_str("bot.py", "SLACK='xoxb-123456789012-abcdefABCDEF'\n");
	ck_assert_uint_eq(f.count[SCAN_SLACK_TOKEN], 1);
	/* too short, too long, no boundary, placeholders */
	f = scan_str("a", "ghp_short ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789X xghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 xoxb-123 xoxb-<token>\n");
	ck_assert_uint_eq(f.total, 0);
}
END_TEST

START_TEST(detects_cloud_credential_files)
{
	struct found f = scan_str("root/.aws/credentials", "[default]\naws_access_key_id = X\naws_secret_access_key = Y\n");
	ck_assert_uint_eq(f.count[SCAN_AWS_CREDENTIALS_FILE], 1);
	f = scan_str("home/u/.docker/config.json", "{\"auths\": {\"reg.example.com\": {\"auth\": \"dXNlcjpwYXNz\"}}}");
	ck_assert_uint_eq(f.count[SCAN_DOCKER_CONFIG_AUTH], 1);
	f = scan_str("root/.config/gcloud/application_default_credentials.json",
		     "{\"client_id\": \"x\", \"refresh_token\": \"1//abc\", \"type\": \"authorized_user\"}");
	ck_assert_uint_eq(f.count[SCAN_GCLOUD_CREDENTIALS], 1);
	f = scan_str("app/.npmrc", "//registry.npmjs.org/:_authToken=npm_abcdef123456\n");
	ck_assert_uint_eq(f.count[SCAN_NPMRC_TOKEN], 1);
	f = scan_str("root/.git-credentials", "https://bob:s3cret@github.com\n");
	ck_assert_uint_eq(f.count[SCAN_GIT_CREDENTIALS], 1);
}
END_TEST

START_TEST(credential_files_without_secrets_are_not_findings)
{
	struct found f = scan_str("root/.aws/credentials", "# fill in at runtime\n[default]\n");
	ck_assert_uint_eq(f.total, 0);
	f = scan_str("root/.docker/config.json", "{\"auths\": {}, \"credsStore\": \"pass\"}");
	ck_assert_uint_eq(f.total, 0);
	f = scan_str("app/.npmrc", "//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n");
	ck_assert_uint_eq(f.total, 0);
	f = scan_str("root/.git-credentials", "https://github.com\n");
	ck_assert_uint_eq(f.total, 0);
	/* the same content under another name is not a credential file */
	f = scan_str("usr/share/doc/npm/example-npmrc", "//registry.npmjs.org/:_authToken=npm_abcdef123456\n");
	ck_assert_uint_eq(f.total, 0);
	f = scan_str("app/config.json", "{\"auth\": \"dXNlcjpwYXNz\"}");
	ck_assert_uint_eq(f.total, 0);
}
END_TEST

static const char *const split_text =
	"junk junk\n-----BEGIN OPENSSH PRIVATE KEY-----\n"
	"b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
	"AKIAZ7QW3RT5YU8IO2PL wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9w "
	"ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 xoxp-1234567890-abc end";

START_TEST(findings_do_not_depend_on_the_split)
{
	size_t n = strlen(split_text);
	struct found whole = scan_content("f", split_text, n, 0, 0);
	ck_assert_uint_eq(whole.total, 4);
	for (size_t piece = 1; piece <= n; piece++) {
		struct found f = scan_content("f", split_text, n, piece, 0);
		ck_assert_uint_eq(f.total, whole.total);
		ck_assert_mem_eq(f.count, whole.count, sizeof(f.count));
	}
}
END_TEST

START_TEST(patterns_straddling_the_work_buffer_are_found_once)
{
	/* put the key header at every offset around the 64 KiB work boundary */
	size_t size = 200 * 1024;
	char *buf = malloc(size);
	ck_assert_ptr_nonnull(buf);
	const char *key = "-----BEGIN RSA PRIVATE KEY-----\n" B64LINE "\n";
	size_t kl = strlen(key);
	for (size_t at = 64 * 1024 - 300; at < 64 * 1024 + 40; at += 7) {
		memset(buf, '.', size);
		memcpy(buf + at, key, kl);
		memcpy(buf + size - 50, "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", 40);
		for (size_t piece = 4093; piece <= 70000; piece += 65907) {
			struct found f = scan_content("big", buf, size, piece, 0);
			ck_assert_uint_eq(f.count[SCAN_PEM_PRIVATE_KEY], 1);
			ck_assert_uint_eq(f.count[SCAN_GITHUB_TOKEN], 1);
			ck_assert_uint_eq(f.total, 2);
		}
	}
	free(buf);
}
END_TEST

START_TEST(each_detector_reports_once_per_file_and_cap_is_honoured)
{
	char buf[4096];
	size_t n = 0;
	for (int i = 0; i < 20; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ01234567%02d\n", i);
	struct found f = scan_content("t", buf, n, 0, 0);
	ck_assert_uint_eq(f.count[SCAN_GITHUB_TOKEN], 1);
	/* the token lies past the first 100 bytes: a 100-byte cap misses it */
	char late[300];
	memset(late, ' ', sizeof(late));
	memcpy(late + 200, "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", 40);
	f = scan_content("t", late, sizeof(late), 0, 100);
	ck_assert_uint_eq(f.total, 0);
	f = scan_content("t", late, sizeof(late), 0, 300);
	ck_assert_uint_eq(f.total, 1);
}
END_TEST


/* An ELF object holding a PEM key (as libgnutls holds its self-test keys)
 * and a GitHub token: the key is reported only with scan_binaries, the
 * token always; the magic is recognised in any split. */
START_TEST(elf_objects_hide_key_blocks_unless_scan_binaries)
{
	char buf[96 * 1024];
	memset(buf, 0, sizeof(buf));
	memcpy(buf, "\x7f" "ELF\x02\x01\x01", 7);
	const char *key = "\n-----BEGIN RSA PRIVATE KEY-----\n" B64LINE "\n-----END RSA PRIVATE KEY-----\n";
	memcpy(buf + 70000, key, strlen(key));
	const char *ossh = "-----BEGIN OPENSSH PRIVATE KEY-----\n" B64LINE "\n";
	memcpy(buf + 100, ossh, strlen(ossh));
	const char *pgp = "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n" B64LINE "\n";
	memcpy(buf + 400, pgp, strlen(pgp));
	const char *tok = " ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 ";
	memcpy(buf + 50000, tok, strlen(tok));
	size_t pieces[] = {0, 1, 3, 4093};
	for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
		struct found f = scan_content_bin("usr/lib/libx.so.1", buf, sizeof(buf), pieces[i], 0, false);
		ck_assert_uint_eq(f.count[SCAN_GITHUB_TOKEN], 1);
		ck_assert_uint_eq(f.total, 1);
		f = scan_content_bin("usr/lib/libx.so.1", buf, sizeof(buf), pieces[i], 0, true);
		ck_assert_uint_eq(f.count[SCAN_PEM_PRIVATE_KEY], 1);
		ck_assert_uint_eq(f.count[SCAN_OPENSSH_PRIVATE_KEY], 1);
		ck_assert_uint_eq(f.count[SCAN_PGP_PRIVATE_KEY], 1);
		ck_assert_uint_eq(f.total, 4);
	}
	/* AWS key pairs are reported inside ELF objects too */
	const char *aws = " AKIAZ7QW3RT5YU8IO2PL wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9w ";
	memcpy(buf + 60000, aws, strlen(aws));
	struct found f = scan_content_bin("app/server", buf, sizeof(buf), 0, 0, false);
	ck_assert_uint_eq(f.count[SCAN_AWS_ACCESS_KEY], 1);
	ck_assert_uint_eq(f.total, 2);
	/* only the ELF magic at offset 0 counts: not one byte off, not later */
	buf[3] = 'X';
	f = scan_content_bin("usr/lib/libx.so.1", buf, sizeof(buf), 0, 0, false);
	ck_assert_uint_eq(f.count[SCAN_PEM_PRIVATE_KEY], 1);
	char text[256];
	int n = snprintf(text, sizeof(text), "x\x7f" "ELF -----BEGIN PRIVATE KEY-----\n%s\n", B64LINE);
	f = scan_content_bin("k", text, (size_t)n, 0, 0, false);
	ck_assert_uint_eq(f.count[SCAN_PEM_PRIVATE_KEY], 1);
	/* a file shorter than the magic is no ELF object */
	f = scan_content_bin("k", "\x7f" "EL", 3, 0, 0, false);
	ck_assert_uint_eq(f.total, 0);
}
END_TEST

/* The machine's own libgnutls (Debian's libgnutls30, the file that made
 * every bookworm image fail a "secrets: deny" gate) passes by default; with
 * scan_binaries its compiled-in test keys are found, so the file really is
 * the case the exemption is for. Skipped where the library is absent. */
START_TEST(system_libgnutls_passes_by_default)
{
	const char *paths[] = {"/usr/lib/x86_64-linux-gnu/libgnutls.so.30", "/usr/lib/aarch64-linux-gnu/libgnutls.so.30"};
	FILE *fp = NULL;
	for (size_t i = 0; !fp && i < sizeof(paths) / sizeof(paths[0]); i++)
		fp = fopen(paths[i], "rb");
	if (!fp) {
		fprintf(stderr, "# system_libgnutls_passes_by_default: no libgnutls.so.30 here, skipped\n");
		return;
	}
	ck_assert_int_eq(fseek(fp, 0, SEEK_END), 0);
	long size = ftell(fp);
	ck_assert_int_gt(size, 0);
	rewind(fp);
	char *data = malloc((size_t)size);
	ck_assert_ptr_nonnull(data);
	ck_assert_uint_eq(fread(data, 1, (size_t)size, fp), (size_t)size);
	fclose(fp);
	struct found f = scan_content_bin("usr/lib/x86_64-linux-gnu/libgnutls.so.30", data, (size_t)size, 65536, 0, false);
	ck_assert_uint_eq(f.total, 0);
	f = scan_content_bin("usr/lib/x86_64-linux-gnu/libgnutls.so.30", data, (size_t)size, 65536, 0, true);
	ck_assert_uint_eq(f.count[SCAN_PEM_PRIVATE_KEY], 1);
	free(data);
}
END_TEST

/* ---- the reference: the scanner before the skip loop -------------------
 * optimizer/scan.c's content scanner as it was before scan_to skipped
 * positions (match_at tested at every byte, strncasecmp for the keyword),
 * kept verbatim here, test-only, with names prefixed ref_: the randomised
 * comparison below must see the same findings, in the same order, from
 * both. */
#define REF_WORK_CHUNK (64u * 1024)
#define REF_WORK_CAP (SCAN_WINDOW + REF_WORK_CHUNK)
#define REF_AWS_NEIGHBOUR 512

enum ref_file_kind {
	RFK_AWS = 1u << 0,
	RFK_DOCKER = 1u << 1,
	RFK_GCLOUD = 1u << 2,
	RFK_NPMRC = 1u << 3,
	RFK_GITCRED = 1u << 4,
};

struct ref_scan {
	uint64_t file_cap;
	bool scan_binaries;
	scan_finding_fn on_finding;
	void *ctx;
	char *path;
	unsigned kinds;
	bool sniffed;   /* the file's first bytes have been looked at */
	bool key_blocks; /* run the key-block detectors in this file */
	bool reported[SCAN_DETECTOR_COUNT];
	uint64_t fed;        /* content bytes taken (capped) */
	uint64_t base;       /* file offset of work[0] */
	uint64_t next_start; /* first file offset not yet tested as a match start */
	size_t len;
	int64_t last_secret; /* offset of the last secret-like token, -1 none */
	int64_t aws_pending; /* an AWS key id wants a secret at or before this offset, -1 none */
	enum rs_code failed; /* a callback failed: sticks */
	uint8_t work[REF_WORK_CAP];
};

static enum rs_code ref_new(struct ref_scan **out, uint64_t file_cap, bool scan_binaries,
			      scan_finding_fn on_finding, void *ctx, struct rs_err *err)
{
	*out = NULL;
	struct ref_scan *s = calloc(1, sizeof(*s));
	if (!s)
		return rs_err_set(err, RS_NOMEM, "out of memory for the secret scanner");
	s->file_cap = file_cap ? file_cap : SCAN_FILE_CAP_DEFAULT;
	s->scan_binaries = scan_binaries;
	s->on_finding = on_finding;
	s->ctx = ctx;
	*out = s;
	return RS_OK;
}

static void ref_free(struct ref_scan *s)
{
	if (!s)
		return;
	free(s->path);
	free(s);
}

static bool ref_ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* path equals name or ends with "/" name. */
static bool ref_is_file(const char *path, const char *name)
{
	size_t a = strlen(path), b = strlen(name);
	if (a == b)
		return strcmp(path, name) == 0;
	return a > b && path[a - b - 1] == '/' && strcmp(path + a - b, name) == 0;
}

static unsigned ref_kinds_of(const char *path)
{
	unsigned k = 0;
	if (ref_is_file(path, ".aws/credentials"))
		k |= RFK_AWS;
	if (ref_is_file(path, ".docker/config.json"))
		k |= RFK_DOCKER;
	if ((strstr(path, "gcloud/") != NULL) &&
	    (ref_ends_with(path, "/credentials.db") || ref_ends_with(path, "/application_default_credentials.json") ||
	     ref_ends_with(path, "/adc.json") || ref_ends_with(path, "/access_tokens.db")))
		k |= RFK_GCLOUD;
	if (ref_is_file(path, ".npmrc") || ref_is_file(path, "etc/npmrc"))
		k |= RFK_NPMRC;
	if (ref_is_file(path, ".git-credentials") || ref_is_file(path, ".config/git/credentials"))
		k |= RFK_GITCRED;
	return k;
}

static enum rs_code ref_begin(struct ref_scan *s, const char *path, struct rs_err *err)
{
	free(s->path);
	s->path = strdup(path);
	if (!s->path)
		return rs_err_set(err, RS_NOMEM, "out of memory for the secret scanner");
	s->kinds = ref_kinds_of(path);
	s->sniffed = false;
	s->key_blocks = true;
	memset(s->reported, 0, sizeof(s->reported));
	s->fed = s->base = s->next_start = 0;
	s->len = 0;
	s->last_secret = s->aws_pending = -1;
	s->failed = RS_OK;
	return RS_OK;
}

static enum rs_code ref_report(struct ref_scan *s, enum scan_detector d, struct rs_err *err)
{
	if (s->reported[d])
		return RS_OK;
	s->reported[d] = true;
	return s->on_finding(s->ctx, s->path, d, err);
}

static bool ref_is_alnum(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool ref_is_upper_alnum(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool ref_is_b64(uint8_t c)
{
	return ref_is_alnum(c) || c == '+' || c == '/';
}

static bool ref_has(const uint8_t *p, size_t n, const char *lit)
{
	size_t l = strlen(lit);
	return n >= l && memcmp(p, lit, l) == 0;
}

static bool ref_has_ci(const uint8_t *p, size_t n, const char *lit)
{
	size_t l = strlen(lit);
	return n >= l && strncasecmp((const char *)p, lit, l) == 0;
}

/* A line break: "\r\n", "\n" or a literal backslash-n (JSON). 0 when none. */
static size_t ref_line_break(const uint8_t *p, size_t n)
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

static size_t ref_b64_run(const uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i < n && (ref_is_b64(p[i]) || p[i] == '='))
		i++;
	return i;
}

/* After a BEGIN header: a key body must follow (base64 line, armor or PEM
 * headers, or an empty line and base64). */
static bool ref_key_body_follows(const uint8_t *p, size_t n)
{
	size_t i = ref_line_break(p, n);
	if (!i)
		return false;
	p += i;
	n -= i;
	if (ref_b64_run(p, n) >= 40)
		return true;
	if (ref_has(p, n, "Proc-Type:") || ref_has(p, n, "Version:") || ref_has(p, n, "Comment:") || ref_has(p, n, "Hash:"))
		return true;
	size_t j = ref_line_break(p, n);
	return j && ref_b64_run(p + j, n - j) >= 40;
}

/* "-----BEGIN <label>PRIVATE KEY-----" or "... PRIVATE KEY BLOCK-----". */
static enum rs_code ref_match_begin(struct ref_scan *s, const uint8_t *p, size_t n, struct rs_err *err)
{
	if (!ref_has(p, n, "-----BEGIN "))
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
			if (!ref_key_body_follows(p + k + tl, n - k - tl))
				return RS_OK;
			enum scan_detector d = SCAN_PEM_PRIVATE_KEY;
			if (t == 1 || ref_has(p + label, k - label, "PGP "))
				d = SCAN_PGP_PRIVATE_KEY;
			else if (ref_has(p + label, k - label, "OPENSSH "))
				d = SCAN_OPENSSH_PRIVATE_KEY;
			return ref_report(s, d, err);
		}
	}
	return RS_OK;
}

/* A secret-access-key-like token: exactly 40 base64 characters with both
 * cases and a digit, not part of a longer run. */
static bool ref_secret_token(const uint8_t *p, size_t n)
{
	if (n < 40)
		return false;
	bool lo = false, up = false, dg = false;
	for (size_t i = 0; i < 40; i++) {
		if (!ref_is_b64(p[i]))
			return false;
		lo |= p[i] >= 'a' && p[i] <= 'z';
		up |= p[i] >= 'A' && p[i] <= 'Z';
		dg |= p[i] >= '0' && p[i] <= '9';
	}
	return lo && up && dg && (n == 40 || !ref_is_b64(p[40]));
}

static enum rs_code ref_secret_seen(struct ref_scan *s, uint64_t off, struct rs_err *err)
{
	s->last_secret = (int64_t)off;
	if (s->aws_pending >= 0 && (int64_t)off <= s->aws_pending) {
		s->aws_pending = -1;
		return ref_report(s, SCAN_AWS_ACCESS_KEY, err);
	}
	return RS_OK;
}

/* Test every detector at work[i]; n bytes are available from there. */
static enum rs_code ref_match_at(struct ref_scan *s, size_t i, size_t n, struct rs_err *err)
{
	const uint8_t *p = s->work + i;
	uint64_t off = s->base + i;
	bool boundary = off == 0 || (i > 0 && !ref_is_alnum(s->work[i - 1]));
	bool b64_boundary = off == 0 || (i > 0 && !ref_is_b64(s->work[i - 1]) && s->work[i - 1] != '=');
	enum rs_code rc = RS_OK;
	switch (p[0]) {
	case '-':
		if (s->key_blocks)
			rc = ref_match_begin(s, p, n, err);
		break;
	case 'A':
		if (boundary && n >= 20 && (ref_has(p, n, "AKIA") || ref_has(p, n, "ASIA"))) {
			size_t k = 4;
			while (k < 20 && ref_is_upper_alnum(p[k]))
				k++;
			if (k == 20 && (n == 20 || !ref_is_alnum(p[20])) && memcmp(p, "AKIAIOSFODNN7EXAMPLE", 20) != 0) {
				if (s->last_secret >= 0 && off - (uint64_t)s->last_secret <= REF_AWS_NEIGHBOUR)
					rc = ref_report(s, SCAN_AWS_ACCESS_KEY, err);
				else
					s->aws_pending = (int64_t)(off + 20 + REF_AWS_NEIGHBOUR);
			}
		}
		break;
	case 'g':
		if (boundary && n >= 40 && p[1] == 'h' && strchr("posur", p[2]) && p[2] && p[3] == '_') {
			size_t k = 4;
			while (k < 40 && ref_is_alnum(p[k]))
				k++;
			if (k == 40 && (n == 40 || !ref_is_alnum(p[40])))
				rc = ref_report(s, SCAN_GITHUB_TOKEN, err);
		}
		break;
	case 'x':
		if (boundary && ref_has(p, n, "xox") && n > 5 && strchr("baprs", p[3]) && p[3] && p[4] == '-') {
			size_t k = 5;
			while (k < n && k < 5 + 10 && (ref_is_alnum(p[k]) || p[k] == '-'))
				k++;
			if (k == 15)
				rc = ref_report(s, SCAN_SLACK_TOKEN, err);
		}
		break;
	case '"':
		if ((s->kinds & RFK_DOCKER) && ref_has(p, n, "\"auth\"")) {
			size_t k = 6;
			while (k < n && (p[k] == ' ' || p[k] == '\t'))
				k++;
			if (k < n && p[k] == ':') {
				k++;
				while (k < n && (p[k] == ' ' || p[k] == '\t' || p[k] == '\n' || p[k] == '\r'))
					k++;
				if (k + 1 < n && p[k] == '"' && ref_is_b64(p[k + 1]))
					rc = ref_report(s, SCAN_DOCKER_CONFIG_AUTH, err);
			}
		}
		if (rc == RS_OK && (s->kinds & RFK_GCLOUD) &&
		    (ref_has(p, n, "\"refresh_token\"") || ref_has(p, n, "\"private_key\"")))
			rc = ref_report(s, SCAN_GCLOUD_CREDENTIALS, err);
		break;
	case '_':
		if ((s->kinds & RFK_NPMRC) && ref_has(p, n, "_authToken")) {
			size_t k = 10;
			while (k < n && p[k] == ' ')
				k++;
			if (k < n && p[k] == '=') {
				k++;
				while (k < n && p[k] == ' ')
					k++;
				if (k < n && p[k] != '$' && p[k] != '\n' && p[k] != '\r' && p[k] != '"')
					rc = ref_report(s, SCAN_NPMRC_TOKEN, err);
			}
		}
		break;
	case ':':
		if ((s->kinds & RFK_GITCRED) && ref_has(p, n, "://")) {
			size_t k = 3, user = 0, pass = 0;
			while (k < n && p[k] != ':' && p[k] != '/' && p[k] != '@' && p[k] > ' ')
				k++, user++;
			if (user && k < n && p[k] == ':') {
				k++;
				while (k < n && p[k] != '@' && p[k] > ' ')
					k++, pass++;
				if (pass && k < n && p[k] == '@')
					rc = ref_report(s, SCAN_GIT_CREDENTIALS, err);
			}
		}
		break;
	default:
		break;
	}
	if (rc)
		return rc;
	/* keyword checks (case-insensitive) */
	if ((p[0] == 'a' || p[0] == 'A') && ref_has_ci(p, n, "aws_secret_access_key")) {
		if (s->kinds & RFK_AWS)
			rc = ref_report(s, SCAN_AWS_CREDENTIALS_FILE, err);
		if (rc == RS_OK)
			rc = ref_secret_seen(s, off, err);
	} else if (b64_boundary && ref_is_b64(p[0]) && ref_secret_token(p, n)) {
		rc = ref_secret_seen(s, off, err);
	}
	return rc;
}

/* Test match starts up to limit (an index into work). */
static enum rs_code ref_scan_to(struct ref_scan *s, size_t limit, struct rs_err *err)
{
	if (!s->sniffed) {
		/* the first call sees the file's start: base is still 0 */
		s->sniffed = true;
		s->key_blocks = s->scan_binaries || s->len < 4 || memcmp(s->work, "\x7f" "ELF", 4) != 0;
	}
	size_t from = (size_t)(s->next_start - s->base);
	for (size_t i = from; i < limit; i++) {
		enum rs_code rc = ref_match_at(s, i, s->len - i, err);
		if (rc)
			return s->failed = rc;
	}
	if (limit > from)
		s->next_start = s->base + limit;
	return RS_OK;
}

static enum rs_code ref_feed(struct ref_scan *s, const void *buf, size_t len, struct rs_err *err)
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
		size_t n = REF_WORK_CAP - s->len;
		if (n > len)
			n = len;
		memcpy(s->work + s->len, in, n);
		s->len += n;
		in += n;
		len -= n;
		if (s->len == REF_WORK_CAP) {
			size_t limit = REF_WORK_CAP - SCAN_WINDOW;
			enum rs_code rc = ref_scan_to(s, limit, err);
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

static enum rs_code ref_end(struct ref_scan *s, struct rs_err *err)
{
	if (s->failed)
		return rs_err_set(err, s->failed, "secret scanner failed earlier");
	return ref_scan_to(s, s->len, err);
}

/* ---- randomised comparison with the reference ---- */

#define MAX_EVENTS 64

struct events {
	unsigned n;
	enum scan_detector d[MAX_EVENTS];
	char path[MAX_EVENTS][64];
};

static enum rs_code on_event(void *ctx, const char *path, enum scan_detector d, struct rs_err *err)
{
	(void)err;
	struct events *e = ctx;
	ck_assert_uint_lt(e->n, MAX_EVENTS);
	e->d[e->n] = d;
	snprintf(e->path[e->n], sizeof(e->path[0]), "%s", path);
	e->n++;
	return RS_OK;
}

static size_t rng_below(uint64_t *st, size_t n)
{
	return n ? (size_t)(fixture_rng_next(st) % n) : 0;
}

/* Patterns to plant: findings, near misses and the guards' cases. */
static const char *const planted[] = {
	"-----BEGIN RSA PRIVATE KEY-----\n" B64LINE "\n",
	"-----BEGIN PRIVATE KEY-----\r\n" B64LINE,
	"-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n",
	"-----BEGIN ENCRYPTED PRIVATE KEY-----\\n" B64LINE,
	"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n",
	"-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: x\n",
	"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n" B64LINE,
	"-----BEGIN RSA PRIVATE KEY-----\" {",
	"-----BEGIN CERTIFICATE-----\n" B64LINE,
	"-----BEGIN  PRIVATE KEY-----\n" B64LINE,
	"----BEGIN PRIVATE KEY-----\n" B64LINE,
	"AKIAZ7QW3RT5YU8IO2PL",
	"ASIAZ7QW3RT5YU8IO2PL",
	"ASIAZ7QW3RT5YU8IO2PL wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9w",
	"AKIAZ7QW3RT5YU8IO2PL\naws_secret_access_key",
	"AKIAIOSFODNN7EXAMPLE",
	"AKIAZ7QW3RT5YU8IO2P",
	"AKIAZ7QW3RT5YU8IO2PLX",
	"wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9w",
	"wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9",
	"wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9wQ",
	"=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9w=",
	"0123456789abcdef0123456789abcdef01234567",
	"aws_secret_access_key",
	"AWS_Secret_Access_KEY = x",
	"aws_secret_access_ke",
	"aWs_sEcReT_aCcEsS_kEy",
	"ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
	"gho_aBcDeFgHiJkLmNoPqRsTuVwXyZ012345678",
	"ghs_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789X",
	"xoxb-123456789012-abcdef",
	"xoxp-12345",
	"xoxq-123456789012",
	"\"auth\": \"dXNlcjpwYXNz\"",
	"\"auth\" :\n \"x\"",
	"\"auth\": \"\"",
	"\"refresh_token\"",
	"\"private_key\"",
	"_authToken=npm_abc",
	"_authToken = ${NPM}",
	"https://bob:s3cret@github.com",
	"https://github.com/x",
	"://u:@h",
};

static const char *const equiv_paths[] = {
	"f", "usr/lib/libx.so", "root/.aws/credentials", "home/u/.docker/config.json",
	"root/.config/gcloud/adc.json", "app/.npmrc", "root/.git-credentials",
};

/* Random content: bytes, text or base64-heavy runs, sometimes an ELF
 * object; patterns planted anywhere, also around the work buffer's first
 * and second boundary (64 KiB and 128 KiB - 1) and within 512 bytes of each
 * other (the AWS pairing distance). */
static size_t equiv_content(uint8_t *buf, size_t cap, uint64_t *st)
{
	static const char text[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \n\t.,;:-_=+/\"'{}";
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t sizes[] = {64, 2048, 70000, cap, cap};
	size_t len = 1 + rng_below(st, sizes[rng_below(st, 5)]);
	unsigned mode = (unsigned)rng_below(st, 3);
	for (size_t i = 0; i < len; i++) {
		if (mode == 0)
			buf[i] = (uint8_t)fixture_rng_next(st);
		else if (mode == 1)
			buf[i] = (uint8_t)text[rng_below(st, sizeof(text) - 1)];
		else
			buf[i] = rng_below(st, 41) == 0 ? ' ' : (uint8_t)b64[rng_below(st, 64)];
	}
	if (len >= 4 && rng_below(st, 4) == 0)
		memcpy(buf, "\x7f" "ELF", 4);
	size_t plants = rng_below(st, 16);
	size_t at = 0;
	for (size_t k = 0; k < plants; k++) {
		const char *pat = planted[rng_below(st, sizeof(planted) / sizeof(planted[0]))];
		size_t pl = strlen(pat);
		switch (rng_below(st, 6)) {
		case 0: /* near the previous plant */
			at += rng_below(st, 600);
			break;
		case 1: /* across the first work-buffer boundary */
			at = 64 * 1024 - 300 + rng_below(st, 600);
			break;
		case 2: /* across the second */
			at = 128 * 1024 - 1 - 300 + rng_below(st, 600);
			break;
		case 3:
		case 4: /* at the first position of a round of scan_to, give or take 2 */
			at = (rng_below(st, 2) ? 64 * 1024 : 128 * 1024 - 1) - 2 + rng_below(st, 5);
			break;
		default:
			at = rng_below(st, len);
		}
		if (at >= len)
			at = rng_below(st, len);
		if (at > 0 && rng_below(st, 2))
			buf[at - 1] = (uint8_t)" \n=+/xA-"[rng_below(st, 8)];
		size_t n = pl < len - at ? pl : len - at;
		memcpy(buf + at, pat, n);
		/* sometimes one letter in the other case: near misses, and the
		 * case-insensitive keyword */
		size_t flip = at + rng_below(st, n);
		if (n && rng_below(st, 3) == 0 && ((buf[flip] | 0x20) >= 'a' && (buf[flip] | 0x20) <= 'z'))
			buf[flip] ^= 0x20;
		at += n;
	}
	return len;
}

/* Feed buf to s in pieces of `piece` bytes, or (piece 0) of random sizes
 * from *st. */
static void feed_pieces(struct scan_secrets *s, const uint8_t *buf, size_t len, size_t piece, uint64_t *st)
{
	struct rs_err err = {0};
	for (size_t off = 0; off < len;) {
		size_t n = piece ? piece : 1 + rng_below(st, rng_below(st, 2) ? 64 : 90000);
		if (n > len - off)
			n = len - off;
		ck_assert_int_eq(scan_secrets_feed(s, buf + off, n, &err), RS_OK);
		off += n;
	}
}

/* A run of base64 characters, not a token (all 'A'), longer than the
 * scanner's work buffer. */
static uint8_t stale_b64[70 * 1024];

/* Scan buf with the reference (whole) and the library (in pieces, see
 * feed_pieces), the library both ways it classifies bytes (AVX2 where the
 * CPU has it, and the portable code); the findings must be the same, in the
 * same order. Returns their number. */
static unsigned compare_pieces(const uint8_t *buf, size_t len, const char *path, bool bin, uint64_t fcap,
			       size_t piece, uint64_t *st)
{
	struct events want = {0};
	struct rs_err err = {0};
	struct ref_scan *r = NULL;
	ck_assert_int_eq(ref_new(&r, fcap, bin, on_event, &want, &err), RS_OK);
	ck_assert_int_eq(ref_begin(r, path, &err), RS_OK);
	ck_assert_int_eq(ref_feed(r, buf, len, &err), RS_OK);
	ck_assert_int_eq(ref_end(r, &err), RS_OK);
	ref_free(r);
	for (int portable = 0; portable < 2; portable++) {
		struct events got = {0};
		struct scan_secrets *s = NULL;
		ck_assert_int_eq(scan_secrets_new(&s, fcap, bin, on_event, &got, &err), RS_OK);
		if (portable)
			scan_secrets_portable(s);
		/* first a file of base64 characters and nothing else, so that the
		 * work buffer past the end of buf holds stale bytes of that class */
		if (!stale_b64[0])
			memset(stale_b64, 'A', sizeof(stale_b64));
		size_t stale = len + 512 < sizeof(stale_b64) ? len + 512 : sizeof(stale_b64);
		ck_assert_int_eq(scan_secrets_begin(s, "stale", &err), RS_OK);
		ck_assert_int_eq(scan_secrets_feed(s, stale_b64, stale, &err), RS_OK);
		ck_assert_int_eq(scan_secrets_end(s, &err), RS_OK);
		ck_assert_uint_eq(got.n, 0);
		ck_assert_int_eq(scan_secrets_begin(s, path, &err), RS_OK);
		feed_pieces(s, buf, len, piece, st);
		ck_assert_int_eq(scan_secrets_end(s, &err), RS_OK);
		scan_secrets_free(s);
		ck_assert_msg(want.n == got.n, "%s, %zu bytes, %s: %u findings, the reference %u", path, len,
			      portable ? "portable" : "default", got.n, want.n);
		for (unsigned k = 0; k < want.n; k++) {
			ck_assert_int_eq(got.d[k], want.d[k]);
			ck_assert_str_eq(got.path[k], want.path[k]);
		}
	}
	return want.n;
}

/* compare_pieces in random pieces. */
static unsigned compare_with_reference(const uint8_t *buf, size_t len, const char *path, bool bin, uint64_t fcap,
				       uint64_t *st)
{
	return compare_pieces(buf, len, path, bin, fcap, 0, st);
}

#define ROUNDS 1500u

START_TEST(skip_loop_finds_what_testing_every_byte_finds)
{
	size_t cap = 200 * 1024;
	uint8_t *buf = malloc(cap);
	ck_assert_ptr_nonnull(buf);
	uint64_t st = 20261126;
	/* each finding pattern at every offset around the first position of
	 * scan_to's second and third round (65536, 131071) */
	static const char *const at_edge[] = {"-----BEGIN RSA PRIVATE KEY-----\n" B64LINE "\n",
					      "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
					      "AKIAZ7QW3RT5YU8IO2PL aws_secret_access_key",
					      "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9w AKIAZ7QW3RT5YU8IO2PL"};
	for (size_t k = 0; k < sizeof(at_edge) / sizeof(at_edge[0]); k++) {
		for (size_t at = 65536 - 4; at < 131071 + 4; at += at == 65536 + 3 ? 131071 - 65536 - 7 : 1) {
			memset(buf, ' ', cap);
			memcpy(buf + at, at_edge[k], strlen(at_edge[k]));
			ck_assert_uint_eq(compare_with_reference(buf, 140000, "f", false, 0, &st), 1);
		}
	}
	/* and their near misses: no token (39 and 41 characters, after '=',
	 * no upper case), the key id one character short */
	static const char *const missed_at_edge[] = {"wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9 AKIAZ7QW3RT5YU8IO2PL",
						     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9wQ AKIAZ7QW3RT5YU8IO2PL",
						     "=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9w AKIAZ7QW3RT5YU8IO2PL",
						     "0123456789abcdef0123456789abcdef01234567 AKIAZ7QW3RT5YU8IO2PL",
						     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9w AKIAZ7QW3RT5YU8IO2P"};
	for (size_t k = 0; k < sizeof(missed_at_edge) / sizeof(missed_at_edge[0]); k++) {
		for (size_t at = 65536 - 44; at < 131071 + 4; at += at == 65536 + 3 ? 131071 - 65536 - 47 : 1) {
			memset(buf, ' ', cap);
			memcpy(buf + at, missed_at_edge[k], strlen(missed_at_edge[k]));
			ck_assert_uint_eq(compare_with_reference(buf, 140000, "f", false, 0, &st), 0);
		}
	}
	unsigned files_with_findings = 0, total_events = 0;
	for (unsigned round = 0; round < ROUNDS; round++) {
		size_t len = equiv_content(buf, cap, &st);
		const char *path = equiv_paths[rng_below(&st, sizeof(equiv_paths) / sizeof(equiv_paths[0]))];
		bool bin = rng_below(&st, 4) == 0;
		uint64_t fcap = rng_below(&st, 8) == 0 ? 1 + rng_below(&st, len + 100) : 0;
		unsigned n = compare_with_reference(buf, len, path, bin, fcap, &st);
		files_with_findings += n > 0;
		total_events += n;
	}
	/* the comparison covers files with and without findings */
	ck_assert_uint_gt(files_with_findings, 100);
	ck_assert_uint_lt(files_with_findings, ROUNDS);
	fprintf(stderr, "# skip loop: %u of %u files with findings, %u findings, all as the reference\n",
		files_with_findings, ROUNDS, total_events);
	free(buf);
}
END_TEST

/* Content for the secret-token candidates: runs of base64 characters of
 * every length around a token's 40 (38 to 42, mostly shorter), of mixed
 * case or not (hex digests, no lower case, no digit), each after one
 * separator byte ('=' among them: a token may not follow it), and one or two
 * AWS key ids: the AWS finding then hangs on whether a run within 512 bytes
 * of an id is a token. */
static void near_miss_content(uint8_t *buf, size_t len, uint64_t *st)
{
	static const char sep[] = " \n\t.,;:-_=\"'{}=\\\0\x80\xff";
	static const char *const alphabets[] = {
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
		"0123456789abcdef",
		"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
	};
	for (size_t at = 0; at < len;) {
		buf[at++] = (uint8_t)sep[rng_below(st, sizeof(sep) - 1)];
		size_t run = rng_below(st, 4) == 0 ? 38 + rng_below(st, 5) : rng_below(st, 36);
		const char *a = alphabets[rng_below(st, 4)];
		size_t al = strlen(a);
		for (size_t k = 0; k < run && at < len; k++)
			buf[at++] = (uint8_t)a[rng_below(st, al)];
	}
	static const char id[] = " AKIAZ7QW3RT5YU8IO2PL ";
	for (size_t ids = 1 + rng_below(st, 2); ids > 0; ids--) {
		/* anywhere, or across the first or second work-buffer boundary */
		size_t at = (rng_below(st, 2) ? 65536 : 131071) - 30 + rng_below(st, 60);
		if (at >= len || rng_below(st, 3) == 0)
			at = rng_below(st, len);
		size_t n = sizeof(id) - 1 < len - at ? sizeof(id) - 1 : len - at;
		memcpy(buf + at, id, n);
	}
}

START_TEST(token_near_misses_are_judged_as_by_testing_every_byte)
{
	size_t cap = 200 * 1024;
	uint8_t *buf = malloc(cap);
	ck_assert_ptr_nonnull(buf);
	uint64_t st = 20261207;
	unsigned with = 0, rounds = 600;
	for (unsigned round = 0; round < rounds; round++) {
		size_t sizes[] = {300, 3000, 70000, 140000, cap};
		size_t len = 1 + rng_below(&st, sizes[rng_below(&st, 5)]);
		near_miss_content(buf, len, &st);
		const char *path = equiv_paths[rng_below(&st, sizeof(equiv_paths) / sizeof(equiv_paths[0]))];
		if (len >= 4 && rng_below(&st, 4) == 0)
			memcpy(buf, "\x7f" "ELF", 4);
		with += compare_with_reference(buf, len, path, rng_below(&st, 2), 0, &st) > 0;
	}
	/* the AWS finding goes both ways */
	ck_assert_uint_gt(with, rounds / 5);
	ck_assert_uint_lt(with, rounds - rounds / 5);
	/* small files fed in pieces of every size */
	unsigned small_with = 0;
	for (unsigned round = 0; round < 24; round++) {
		size_t len = 40 + rng_below(&st, 600);
		near_miss_content(buf, len, &st);
		for (size_t piece = 1; piece <= len; piece++)
			small_with += compare_pieces(buf, len, "f", false, 0, piece, &st) > 0;
	}
	ck_assert_uint_gt(small_with, 0);
	/* a token that ends the file (after a scanner that saw a base64 run
	 * there), and a run one character short, in files of every length
	 * around the first rounds of the work buffer */
	static const char *const tails[] = {"wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9w",
					    "JalrXUtnFEMI/K7MDENG/bPxRfiCYzq8fj3Kx9w"};
	static const size_t lens[][2] = {{61, 1000}, {65536 - 600, 65536 + 600}, {131071 - 600, 131071 + 600}};
	for (size_t k = 0; k < 2; k++) {
		for (size_t r = 0; r < 3; r++) {
			for (size_t len = lens[r][0]; len < lens[r][1]; len++) {
				memset(buf, ' ', len);
				memcpy(buf + len - 61, "AKIAZ7QW3RT5YU8IO2PL", 20);
				memcpy(buf + len - strlen(tails[k]), tails[k], strlen(tails[k]));
				ck_assert_uint_eq(compare_with_reference(buf, len, "f", false, 0, &st), k == 0);
			}
		}
	}
	fprintf(stderr, "# token near misses: %u of %u files with findings, %u of the small ones' splits\n", with,
		rounds, small_with);
	free(buf);
}
END_TEST

/* ---- layer scan ---- */

/* gzip tar bytes into a file; its digest into digest. Returns an fd at 0. */
static int gzip_layer(const uint8_t *tar, size_t len, const char *name, char digest[DIGEST_STR_SIZE])
{
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", fixture_dir(), name);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	struct rs_err err = {0};
	struct stream_sink *fs = NULL, *dg = NULL, *enc = NULL;
	ck_assert_int_eq(stream_fd_sink_new(&fs, fd, &err), RS_OK);
	ck_assert_int_eq(stream_digest_sink_new(&dg, fs, &err), RS_OK);
	struct codec_encode_opts eo = {.kind = CODEC_GZIP};
	ck_assert_int_eq(codec_encoder_new(&enc, &eo, dg, &err), RS_OK);
	ck_assert_int_eq(stream_write(enc, tar, len, &err), RS_OK);
	ck_assert_int_eq(stream_finish(enc, &err), RS_OK);
	stream_digest_sink_result(dg, digest, NULL);
	stream_free(enc);
	stream_free(dg);
	stream_free(fs);
	ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

static enum rs_code on_entry(void *ctx, const struct tar_entry *e, struct rs_err *err)
{
	(void)err;
	struct found *f = ctx;
	size_t l = strlen(f->entries);
	snprintf(f->entries + l, sizeof(f->entries) - l, "%s;", e->path);
	return RS_OK;
}

START_TEST(layer_scan_finds_secret_in_a_file_a_later_layer_deletes)
{
	struct targen *g1 = targen_new(1), *g2 = targen_new(2);
	targen_add_dir(g1, "root");
	targen_add_dir(g1, "root/.ssh");
	const char *key = "-----BEGIN OPENSSH PRIVATE KEY-----\n" B64LINE "\n-----END OPENSSH PRIVATE KEY-----\n";
	targen_add_file(g1, "root/.ssh/id_rsa", key, strlen(key));
	targen_add_file(g1, "app/main.sh", "echo hi\n", 8);
	targen_end(g1, 2, false);
	targen_add_file(g2, "root/.ssh/.wh.id_rsa", "", 0);
	targen_end(g2, 2, false);
	size_t n1, n2;
	const uint8_t *t1 = targen_data(g1, &n1), *t2 = targen_data(g2, &n2);
	char d1[DIGEST_STR_SIZE], d2[DIGEST_STR_SIZE];
	int fd1 = gzip_layer(t1, n1, "l1", d1), fd2 = gzip_layer(t2, n2, "l2", d2);

	struct found f = {0};
	struct rs_err err = {0};
	struct scan_stats st;
	struct scan_opts o = {.codec = CODEC_GZIP, .digest = d1, .secrets = true, .on_entry = on_entry,
			      .on_finding = on_find, .ctx = &f};
	ck_assert_int_eq(scan_layer_fd(&st, fd1, &o, &err), RS_OK);
	ck_assert_uint_eq(f.count[SCAN_OPENSSH_PRIVATE_KEY], 1);
	ck_assert_str_eq(f.last_path, "root/.ssh/id_rsa");
	ck_assert_str_eq(f.entries, "root;root/.ssh;root/.ssh/id_rsa;app/main.sh;");
	ck_assert_uint_eq(st.uncompressed_bytes, n1);
	ck_assert_uint_eq(st.files_scanned, 2);

	struct found f2 = {0};
	o.digest = d2;
	o.ctx = &f2;
	ck_assert_int_eq(scan_layer_fd(&st, fd2, &o, &err), RS_OK);
	ck_assert_uint_eq(f2.total, 0);
	ck_assert_str_eq(f2.entries, "root/.ssh/.wh.id_rsa;");
	close(fd1);
	close(fd2);
	targen_free(g1);
	targen_free(g2);
}
END_TEST

START_TEST(layer_scan_refuses_bytes_that_do_not_match_the_digest)
{
	struct targen *g = targen_new(3);
	targen_add_file(g, "a", "x", 1);
	targen_end(g, 2, false);
	size_t n;
	const uint8_t *t = targen_data(g, &n);
	char d[DIGEST_STR_SIZE];
	int fd = gzip_layer(t, n, "l", d);
	struct found f = {0};
	struct rs_err err = {0};
	struct scan_stats st;
	const char *wrong = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
	struct scan_opts o = {.codec = CODEC_GZIP, .digest = wrong, .secrets = true, .on_finding = on_find, .ctx = &f};
	ck_assert_int_eq(scan_layer_fd(&st, fd, &o, &err), RS_DIGEST_MISMATCH);
	ck_assert_ptr_nonnull(strstr(err.msg, wrong));
	/* a gzip layer announced as plain tar is refused */
	ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
	o.codec = CODEC_NONE;
	o.digest = NULL;
	ck_assert_int_eq(scan_layer_fd(&st, fd, &o, &err), RS_BAD_INPUT);
	close(fd);
	targen_free(g);
}
END_TEST


START_TEST(layer_scan_skips_exactly_the_allowed_paths)
{
	struct targen *g = targen_new(4);
	const char *key = "-----BEGIN PRIVATE KEY-----\n" B64LINE "\n-----END PRIVATE KEY-----\n";
	const char *files[] = {"app/test/fixtures/server.key", "app/test/a/b/c.key", "app/testdata/k.pem",
			       "root/.ssh/id_rsa", "usr/share/doc/x/examples/demo.pem", "usr/share/doc/x/demo.pem"};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		targen_add_file(g, files[i], key, strlen(key));
	targen_end(g, 2, false);
	size_t n;
	const uint8_t *t = targen_data(g, &n);
	char d[DIGEST_STR_SIZE];
	int fd = gzip_layer(t, n, "l", d);
	char *allow[] = {"app/test/**", "usr/share/doc/*/examples/*.pem"};
	struct found f = {0};
	struct rs_err err = {0};
	struct scan_stats st;
	struct scan_opts o = {.codec = CODEC_GZIP, .digest = d, .secrets = true, .allow_paths = allow,
			      .allow_path_count = 2, .on_entry = on_entry, .on_finding = on_find, .ctx = &f};
	ck_assert_int_eq(scan_layer_fd(&st, fd, &o, &err), RS_OK);
	ck_assert_uint_eq(f.count[SCAN_PEM_PRIVATE_KEY], 3);
	ck_assert_uint_eq(st.files_allowed, 3);
	ck_assert_uint_eq(st.files_scanned, 3);
	/* every entry is still reported (forbidden_paths sees them all) */
	ck_assert_str_eq(f.entries, "app/test/fixtures/server.key;app/test/a/b/c.key;app/testdata/k.pem;"
				    "root/.ssh/id_rsa;usr/share/doc/x/examples/demo.pem;usr/share/doc/x/demo.pem;");
	close(fd);
	targen_free(g);
}
END_TEST

/* ---- incremental scan (scan_layer_new/write/finish) against scan_layer_fd ---- */

/* What a pass reported, in order: entries and findings as lines. */
struct transcript {
	char *text;
	size_t len;
	FILE *f;
};

static enum rs_code tr_entry(void *ctx, const struct tar_entry *e, struct rs_err *err)
{
	(void)err;
	fprintf(((struct transcript *)ctx)->f, "E %c %s\n", e->type, e->path);
	return RS_OK;
}

static enum rs_code tr_find(void *ctx, const char *path, enum scan_detector d, struct rs_err *err)
{
	(void)err;
	fprintf(((struct transcript *)ctx)->f, "F %d %s\n", (int)d, path);
	return RS_OK;
}

static void tr_open(struct transcript *t)
{
	memset(t, 0, sizeof(*t));
	t->f = open_memstream(&t->text, &t->len);
	ck_assert_ptr_nonnull(t->f);
}

static void tr_close(struct transcript *t, enum rs_code rc, const struct scan_stats *st, const struct rs_err *err)
{
	fprintf(t->f, "rc %d %s\n", (int)rc, rc ? err->msg : "");
	if (rc == RS_OK)
		fprintf(t->f, "stats %llu %llu %llu %llu %llu\n", (unsigned long long)st->compressed_bytes,
			(unsigned long long)st->uncompressed_bytes, (unsigned long long)st->entries,
			(unsigned long long)st->files_scanned, (unsigned long long)st->files_allowed);
	ck_assert_int_eq(fclose(t->f), 0);
}

static char *allow_globs[] = {"app/test/**"};

/* The incremental passes (fed) walk the tar on a thread of their own */
static bool fed_threaded;
/* tr_entry fails at this entry (counted from 1; 0: never) */
static int fail_at_entry;
static int entries_seen;

static enum rs_code tr_entry_failing(void *ctx, const struct tar_entry *e, struct rs_err *err)
{
	if (++entries_seen == fail_at_entry)
		return rs_err_set(err, RS_DENIED, "refused at %s", e->path);
	return tr_entry(ctx, e, err);
}

static struct scan_opts tr_opts(struct transcript *t, enum codec_kind codec, const char *digest)
{
	entries_seen = 0;
	return (struct scan_opts){.codec = codec, .digest = digest, .secrets = true, .file_cap = 200000,
				  .allow_paths = allow_globs, .allow_path_count = 1,
				  .on_entry = fail_at_entry ? tr_entry_failing : tr_entry,
				  .on_finding = tr_find, .ctx = t};
}

/* The one-shot pass over the bytes (through a file, as the gate reads them). */
static char *one_shot(const uint8_t *b, size_t n, enum codec_kind codec, const char *digest)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/one-shot", fixture_dir());
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, b, n), (ssize_t)n);
	ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
	struct transcript t;
	tr_open(&t);
	struct scan_opts o = tr_opts(&t, codec, digest);
	struct scan_stats st;
	struct rs_err err = {0};
	enum rs_code rc = scan_layer_fd(&st, fd, &o, &err);
	close(fd);
	tr_close(&t, rc, &st, &err);
	return t.text;
}

/* The incremental pass fed the pieces cut at cuts[0..ncuts) (ascending). */
static char *fed(const uint8_t *b, size_t n, enum codec_kind codec, const char *digest, const size_t *cuts,
		 size_t ncuts)
{
	struct transcript t;
	tr_open(&t);
	struct scan_opts o = tr_opts(&t, codec, digest);
	o.threaded = fed_threaded;
	struct scan_stats st = {0};
	struct rs_err err = {0};
	struct scan_layer *l = NULL;
	enum rs_code rc = scan_layer_new(&l, &o, &err);
	ck_assert_int_eq(rc, RS_OK);
	size_t at = 0;
	for (size_t i = 0; i <= ncuts && rc == RS_OK; i++) {
		size_t end = i < ncuts ? cuts[i] : n;
		rc = scan_layer_write(l, b + at, end - at, &err);
		at = end;
	}
	if (rc == RS_OK)
		rc = scan_layer_finish(l, &st, &err);
	scan_layer_free(l);
	tr_close(&t, rc, &st, &err);
	return t.text;
}

static void expect_same(const char *want, const uint8_t *b, size_t n, enum codec_kind codec, const char *digest,
			const size_t *cuts, size_t ncuts, const char *what)
{
	char *got = fed(b, n, codec, digest, cuts, ncuts);
	if (strcmp(got, want) != 0)
		ck_abort_msg("%s (%s, %zu cuts, first at %zu): incremental scan differs:\n%s\n--- one-shot:\n%s", what,
			     codec_kind_name(codec), ncuts, ncuts ? cuts[0] : 0, got, want);
	free(got);
}

/* A layer with what the gate looks for: secrets (one in a file longer than
 * the scanner's work buffer, near its end), an allowed path, a whiteout,
 * long names in pax and GNU headers, and random entries of every flavour. */
static struct targen *rich_layer(void)
{
	struct targen *g = targen_new(16);
	targen_add_dir(g, "root/.ssh");
	const char *key = "-----BEGIN OPENSSH PRIVATE KEY-----\n" B64LINE "\n-----END OPENSSH PRIVATE KEY-----\n";
	targen_add_file(g, "root/.ssh/id_rsa", key, strlen(key));
	targen_add_file(g, "app/test/fixtures/server.key", key, strlen(key));
	targen_add_file(g, "app/.env", "GITHUB=ghp_0123456789abcdefghijABCDEFGHIJ012345\n", 48);
	static char big[150000];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)('a' + (i * 7 + i / 13) % 26);
	const char *aws = "\nAKIAABCDEFGHIJKLMNOP wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzzzKEYZ12\n";
	memcpy(big + sizeof(big) - 200, aws, strlen(aws));
	targen_add_file(g, "srv/data/blob.txt", big, sizeof(big));
	targen_add(g, &(struct targen_entry){.path = "usr/share/a/very/long/directory/name/that/needs/a/pax/"
						     "header/because/it/is/longer/than/one/hundred/bytes/key.pem",
					     .data = key, .size = strlen(key), .flavour = TARGEN_PAX});
	targen_add(g, &(struct targen_entry){.path = "opt/gnu/long/name/exceeding/the/ustar/name/field/of/one/"
						     "hundred/bytes/for/the/L/record/id_ed25519",
					     .data = key, .size = strlen(key), .flavour = TARGEN_GNU});
	targen_add_file(g, "root/.wh.old", "", 0);
	targen_add_random(g, 24, TARGEN_ALL_FLAVOURS, 3000);
	targen_end(g, 2, true);
	return g;
}

static void encode(uint8_t **out, size_t *n, const uint8_t *tar, size_t len, enum codec_kind kind, char *digest)
{
	if (kind == CODEC_NONE) {
		*out = malloc(len);
		ck_assert_ptr_nonnull(*out);
		memcpy(*out, tar, len);
		*n = len;
		digest_buffer(digest, tar, len);
		return;
	}
	char path[128];
	snprintf(path, sizeof(path), "%s/encoded", fixture_dir());
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	struct rs_err err = {0};
	struct stream_sink *fs = NULL, *enc = NULL;
	ck_assert_int_eq(stream_fd_sink_new(&fs, fd, &err), RS_OK);
	struct codec_encode_opts eo = {.kind = kind};
	ck_assert_int_eq(codec_encoder_new(&enc, &eo, fs, &err), RS_OK);
	ck_assert_int_eq(stream_write(enc, tar, len, &err), RS_OK);
	ck_assert_int_eq(stream_finish(enc, &err), RS_OK);
	stream_free(enc);
	stream_free(fs);
	off_t blen = lseek(fd, 0, SEEK_END);
	ck_assert_int_gt(blen, 0);
	uint8_t *buf = malloc((size_t)blen);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(pread(fd, buf, (size_t)blen, 0), (ssize_t)blen);
	close(fd);
	*out = buf;
	*n = (size_t)blen;
	digest_buffer(digest, buf, blen);
}

START_TEST(incremental_layer_scan_equals_the_one_shot_scan_for_every_split)
{
	struct targen *g = rich_layer();
	size_t tlen;
	const uint8_t *tar = targen_data(g, &tlen);
	static const enum codec_kind kinds[] = {CODEC_NONE, CODEC_GZIP, CODEC_ZSTD};
	for (size_t k = 0; k < 3; k++) {
		uint8_t *b;
		size_t n;
		char d[DIGEST_STR_SIZE];
		encode(&b, &n, tar, tlen, kinds[k], d);
		char *want = one_shot(b, n, kinds[k], d);
		ck_assert_ptr_nonnull(strstr(want, "rc 0 "));
		ck_assert_ptr_nonnull(strstr(want, "F 1 root/.ssh/id_rsa\n"));
		ck_assert_ptr_nonnull(strstr(want, "F 3 srv/data/blob.txt\n"));
		ck_assert_ptr_nonnull(strstr(want, "F 4 app/.env\n"));
		ck_assert_ptr_null(strstr(want, "F 1 app/test/"));
		/* whole, and one byte at a time */
		expect_same(want, b, n, kinds[k], d, NULL, 0, "whole");
		size_t *cuts = malloc(n * sizeof(*cuts));
		ck_assert_ptr_nonnull(cuts);
		for (size_t i = 1; i < n; i++)
			cuts[i - 1] = i;
		expect_same(want, b, n, kinds[k], d, cuts, n - 1, "1-byte chunks");
		/* two pieces, cut at every offset of the first 1100 bytes (the gzip
		 * or zstd header, the first tar headers) */
		for (size_t i = 1; i < n && i < (kinds[k] == CODEC_NONE ? 1100u : 64u); i++)
			expect_same(want, b, n, kinds[k], d, &i, 1, "cut in the first bytes");
		/* plain tar: cut at every offset inside every header block */
		for (size_t e = 0; kinds[k] == CODEC_NONE && e < targen_count(g); e++) {
			const struct targen_written *w = targen_entry_at(g, e);
			for (size_t i = 0; i < w->raw_len; i += w->raw_len > 2048 ? 5 : 1) {
				size_t c = (size_t)w->header_offset + i;
				if (c > 0 && c < n)
					expect_same(want, b, n, kinds[k], d, &c, 1, "cut in a tar header");
			}
		}
		/* seeded random pieces of 1 byte to 64 KiB, and cuts every 97 bytes */
		unsigned seed = 16;
		for (int round = 0; round < 20; round++) {
			size_t nc = 0;
			for (size_t at = 0;;) {
				seed = seed * 1103515245u + 12345u;
				size_t step = 1 + (seed >> 8) % (round % 2 ? 65536 : 600);
				if ((at += step) >= n)
					break;
				cuts[nc++] = at;
			}
			expect_same(want, b, n, kinds[k], d, cuts, nc, "random pieces");
		}
		size_t nc = 0;
		for (size_t at = 97; at < n; at += 97)
			cuts[nc++] = at;
		expect_same(want, b, n, kinds[k], d, cuts, nc, "every 97 bytes");
		/* a truncated stream, a wrong digest: the same error */
		free(want);
		want = one_shot(b, n - 1, kinds[k], NULL);
		expect_same(want, b, n - 1, kinds[k], NULL, cuts, nc > 10 ? 10 : nc, "truncated");
		free(want);
		const char *wrong = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
		want = one_shot(b, n, kinds[k], wrong);
		ck_assert_ptr_nonnull(strstr(want, wrong));
		expect_same(want, b, n, kinds[k], wrong, cuts, nc > 10 ? 10 : nc, "wrong digest");
		free(want);
		free(cuts);
		free(b);
	}
	targen_free(g);
}
END_TEST

/* With the tar walk and the content scan on a thread of their own: the
 * same entries, findings, stats and errors as the one-shot pass, also when
 * a callback fails or the tar is bad before the compressed stream ends. */
START_TEST(threaded_layer_scan_equals_the_one_shot_scan)
{
	struct targen *g = rich_layer();
	size_t tlen;
	const uint8_t *tar0 = targen_data(g, &tlen);
	uint8_t *tar = malloc(tlen);
	ck_assert_ptr_nonnull(tar);
	memcpy(tar, tar0, tlen);
	static const enum codec_kind kinds[] = {CODEC_NONE, CODEC_GZIP, CODEC_ZSTD};
	fed_threaded = true;
	for (size_t k = 0; k < 3; k++) {
		uint8_t *b;
		size_t n;
		char d[DIGEST_STR_SIZE];
		encode(&b, &n, tar, tlen, kinds[k], d);
		char *want = one_shot(b, n, kinds[k], d);
		ck_assert_ptr_nonnull(strstr(want, "F 1 root/.ssh/id_rsa\n"));
		expect_same(want, b, n, kinds[k], d, NULL, 0, "threaded, whole");
		size_t *cuts = malloc(n * sizeof(*cuts));
		ck_assert_ptr_nonnull(cuts);
		unsigned seed = 7;
		for (int round = 0; round < 10; round++) {
			size_t nc = 0;
			for (size_t at = 0;;) {
				seed = seed * 1103515245u + 12345u;
				if ((at += 1 + (seed >> 8) % (round % 2 ? 300000 : 700)) >= n)
					break;
				cuts[nc++] = at;
			}
			expect_same(want, b, n, kinds[k], d, cuts, nc, "threaded, random pieces");
		}
		free(want);
		want = one_shot(b, n - 1, kinds[k], NULL);
		expect_same(want, b, n - 1, kinds[k], NULL, NULL, 0, "threaded, truncated");
		free(want);
		const char *wrong = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
		want = one_shot(b, n, kinds[k], wrong);
		expect_same(want, b, n, kinds[k], wrong, NULL, 0, "threaded, wrong digest");
		free(want);
		/* a callback that refuses the 5th entry: its error, nothing after it */
		fail_at_entry = 5;
		want = one_shot(b, n, kinds[k], d);
		ck_assert_ptr_nonnull(strstr(want, "refused at"));
		expect_same(want, b, n, kinds[k], d, NULL, 0, "threaded, callback fails");
		free(want);
		want = one_shot(b, n - 1, kinds[k], NULL);
		expect_same(want, b, n - 1, kinds[k], NULL, NULL, 0, "threaded, callback fails, then truncated");
		fail_at_entry = 0;
		free(want);
		free(cuts);
		free(b);
	}
	/* a bad tar header early, then a truncated stream: the tar's error,
	 * met first on the bytes before, as the one-shot pass reports it */
	const struct targen_written *w = targen_entry_at(g, 3);
	tar[w->header_offset + 148] ^= 0x11; /* the header's checksum */
	for (size_t k = 1; k < 3; k++) {
		uint8_t *b;
		size_t n;
		char d[DIGEST_STR_SIZE];
		encode(&b, &n, tar, tlen, kinds[k], d);
		char *want = one_shot(b, n - 1, kinds[k], NULL);
		ck_assert_ptr_null(strstr(want, "rc 0 "));
		expect_same(want, b, n - 1, kinds[k], NULL, NULL, 0, "threaded, bad header then truncated");
		free(want);
		free(b);
	}
	fed_threaded = false;
	free(tar);
	targen_free(g);
}
END_TEST

static Suite *scan_suite(void)
{
	Suite *s = suite_create("scan");
	TCase *t = tcase_create("detectors");
	tcase_add_test(t, detects_pem_private_keys);
	tcase_add_test(t, detects_openssh_and_pgp_private_keys);
	tcase_add_test(t, pem_header_without_key_body_is_not_a_finding);
	tcase_add_test(t, detects_aws_key_id_with_a_secret_neighbour);
	tcase_add_test(t, aws_key_id_alone_or_example_is_not_a_finding);
	tcase_add_test(t, detects_github_and_slack_tokens);
	tcase_add_test(t, detects_cloud_credential_files);
	tcase_add_test(t, credential_files_without_secrets_are_not_findings);
	tcase_add_test(t, findings_do_not_depend_on_the_split);
	tcase_add_test(t, patterns_straddling_the_work_buffer_are_found_once);
	tcase_add_test(t, each_detector_reports_once_per_file_and_cap_is_honoured);
	tcase_add_test(t, elf_objects_hide_key_blocks_unless_scan_binaries);
	tcase_add_test(t, system_libgnutls_passes_by_default);
	suite_add_tcase(s, t);
	TCase *e = tcase_create("reference");
	tcase_set_timeout(e, 600);
	tcase_add_test(e, skip_loop_finds_what_testing_every_byte_finds);
	tcase_add_test(e, token_near_misses_are_judged_as_by_testing_every_byte);
	suite_add_tcase(s, e);
	TCase *l = tcase_create("layer");
	tcase_add_checked_fixture(l, fixture_tmpdir_setup, fixture_tmpdir_teardown);
	tcase_add_test(l, layer_scan_finds_secret_in_a_file_a_later_layer_deletes);
	tcase_add_test(l, layer_scan_refuses_bytes_that_do_not_match_the_digest);
	tcase_add_test(l, layer_scan_skips_exactly_the_allowed_paths);
	tcase_set_timeout(l, 600);
	tcase_add_test(l, incremental_layer_scan_equals_the_one_shot_scan_for_every_split);
	tcase_add_test(l, threaded_layer_scan_equals_the_one_shot_scan);
	suite_add_tcase(s, l);
	return s;
}

int main(void)
{
	return fixture_run_suite(scan_suite());
}
