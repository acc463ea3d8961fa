/* test_scan: the secret detectors (each one, with its false-positive
 * guard), findings independent of how the content is split into chunks
 * (every split point, and patterns straddling the scanner's work buffer),
 * the per-file cap, and the layer scan over gzip layers (entries reported,
 * digest verified, a secret in a file that a later layer deletes). */
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
	TCase *l = tcase_create("layer");
	tcase_add_checked_fixture(l, fixture_tmpdir_setup, fixture_tmpdir_teardown);
	tcase_add_test(l, layer_scan_finds_secret_in_a_file_a_later_layer_deletes);
	tcase_add_test(l, layer_scan_refuses_bytes_that_do_not_match_the_digest);
	tcase_add_test(l, layer_scan_skips_exactly_the_allowed_paths);
	suite_add_tcase(s, l);
	return s;
}

int main(void)
{
	return fixture_run_suite(scan_suite());
}
