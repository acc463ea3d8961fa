/* test_sign: proxy/sign/sign.c with real GPG (GPGME and gpg in a GnuPG home
 * of the test's temp directory, the key made by sign_keygen_gpg). An
 * index and its manifests in a store get one signature each for the
 * identity, served as signature-1 (not twice for the same identity, a
 * second tag adds a second); the signature, exported key and a file://
 * lookaside then verify as a publisher's: the right digest and tag pass
 * (and are remembered), another tag, another repository, a tampered byte
 * and a missing signature are RS_POLICY naming why, and the result names
 * the key and signature. A signing key that is not in gpg_home stops
 * sign_new with RS_CONFIG, so does a cosign key that is not ECDSA P-256.
 * The push gate's optimized image (sign_pushed) is signed for the pushed
 * reference, index and manifests, once; with a cosign key, a .sig that cannot
 * be pushed (nothing listens at the upstream) or a manifest the gate's source
 * lacks fail it, naming the .sig. Cosign's signature, attestation and
 * SBOM tags and the referrers tag pass through. */
#include "proxy/sign/sign.h"

#include "cosign.h"
#include "fixture.h"
#include "config.h"
#include "digest.h"
#include "store_fixture.h"
#include "upstream.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define REPO "org/app"
#define UP "docker.io"
#define MT_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_INDEX "application/vnd.oci.image.index.v1+json"

static char home[1024], fpr[41];

static void setup(void)
{
	store_fixture_setup();
	snprintf(home, sizeof(home), "%s/gnupg", fixture_dir());
	struct rs_err err = {0};
	ck_assert_msg(sign_keygen_gpg(home, "regslim unit test", fpr, &err) == RS_OK, "%s", err.msg);
}

static void teardown(void)
{
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "timeout 20 gpgconf --homedir '%s' --kill gpg-agent > /dev/null 2>&1", home);
	(void)!system(cmd); /* an agent left behind only costs a process */
	store_fixture_teardown();
}

/* Put a manifest (config digest seed) into the store; its digest in out. */
static void put_manifest(struct store *st, char out[DIGEST_STR_SIZE], int seed)
{
	char body[512];
	snprintf(body, sizeof(body),
	         "{\"schemaVersion\":2,\"mediaType\":\"" MT_MANIFEST "\",\"config\":{\"mediaType\":"
	         "\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:%064d\",\"size\":2},\"layers\":[]}",
	         seed);
	digest_buffer(out, body, strlen(body));
	struct rs_err err = {0};
	ck_assert_msg(store_manifest_put(st, STORE_CACHE, out, MT_MANIFEST, body, strlen(body), &err) == RS_OK, "%s",
	              err.msg);
}

static void put_index(struct store *st, char out[DIGEST_STR_SIZE], const char *a, const char *b)
{
	char body[1024];
	snprintf(body, sizeof(body),
	         "{\"schemaVersion\":2,\"mediaType\":\"" MT_INDEX "\",\"manifests\":[{\"mediaType\":\"" MT_MANIFEST
	         "\",\"digest\":\"%s\",\"size\":10,\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}},"
	         "{\"mediaType\":\"" MT_MANIFEST "\",\"digest\":\"%s\",\"size\":10,\"platform\":{\"architecture\":"
	         "\"arm64\",\"os\":\"linux\"}}]}",
	         a, b);
	digest_buffer(out, body, strlen(body));
	struct rs_err err = {0};
	ck_assert_msg(store_manifest_put(st, STORE_CACHE, out, MT_INDEX, body, strlen(body), &err) == RS_OK, "%s", err.msg);
}

static struct sign *sign_open(struct rs_config *cfg, struct store *st)
{
	struct sign *s = NULL;
	struct rs_err err = {0};
	ck_assert_msg(sign_new(&s, cfg, st, &err) == RS_OK, "%s", err.msg);
	return s;
}

/* Signature n of digest into a file of the lookaside <dir>/org/app@sha256=<hex>/signature-<n>. */
static void to_lookaside(const char *dir, const char *digest, unsigned n, const char *sig, size_t len)
{
	char p[1400];
	snprintf(p, sizeof(p), "%s/" REPO "@sha256=%s", dir, digest_hex(digest));
	char cmd[1500];
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", p);
	ck_assert_int_eq(system(cmd), 0);
	snprintf(p + strlen(p), sizeof(p) - strlen(p), "/signature-%u", n);
	fixture_write_file(p, sig, len);
}

START_TEST(signs_index_and_manifests_once_per_identity_then_verifies_as_publisher)
{
	struct store *st = store_fixture_store(0);
	struct rs_config *cfg = store_fixture_config();
	cfg->signatures.gpg_home = strdup(home);
	cfg->signatures.gpg_key = strdup(fpr);
	char m1[DIGEST_STR_SIZE], m2[DIGEST_STR_SIZE], idx[DIGEST_STR_SIZE];
	put_manifest(st, m1, 1);
	put_manifest(st, m2, 2);
	put_index(st, idx, m1, m2);
	struct sign *s = sign_open(cfg, st);
	ck_assert(sign_signs(s));
	struct rs_err err = {0};
	ck_assert_msg(sign_image(s, UP, REPO, "1.0", idx, &err) == RS_OK, "%s", err.msg);
	ck_assert_msg(sign_image(s, UP, REPO, "1.0", idx, &err) == RS_OK, "%s", err.msg);
	char *sig = NULL;
	size_t len = 0;
	const char *all[] = {idx, m1, m2};
	for (size_t i = 0; i < 3; i++) {
		ck_assert_msg(sign_lookaside_get(s, UP, REPO, all[i], 1, &sig, &len, &err) == RS_OK, "%s", err.msg);
		ck_assert_uint_gt(len, 100);
		free(sig);
		ck_assert_int_eq(sign_lookaside_get(s, UP, REPO, all[i], 2, &sig, &len, &err), RS_NOT_FOUND);
	}
	ck_assert_int_eq(sign_lookaside_get(s, UP, "org/other", idx, 1, &sig, &len, &err), RS_NOT_FOUND);
	/* a second tag of the same digest: a second signature */
	ck_assert_msg(sign_image(s, UP, REPO, "latest", m1, &err) == RS_OK, "%s", err.msg);
	ck_assert_int_eq(sign_lookaside_get(s, UP, REPO, m1, 2, &sig, &len, &err), RS_OK);
	free(sig);
	ck_assert_int_eq(sign_lookaside_get(s, UP, REPO, m1, 1, &sig, &len, &err), RS_OK);
	sign_free(s);

	/* that signature, as a publisher's in a file:// lookaside */
	char look[1100], ring[1100], cmd[2400];
	snprintf(look, sizeof(look), "%s/lookaside", fixture_dir());
	snprintf(ring, sizeof(ring), "%s/publisher.gpg", fixture_dir());
	to_lookaside(look, m1, 1, sig, len);
	snprintf(cmd, sizeof(cmd), "timeout 30 gpg --homedir '%s' --batch --export %s > '%s' 2> /dev/null", home, fpr, ring);
	ck_assert_int_eq(system(cmd), 0);
	struct rs_verify_rule *rule = calloc(1, sizeof(*rule));
	cfg->signatures.verify = rule;
	cfg->signatures.verify_count = 1;
	rule->upstream = strdup(UP);
	rule->repositories = calloc(1, sizeof(char *));
	rule->repositories[0] = strdup("org/*");
	rule->repository_count = 1;
	rule->gpg_keyring = strdup(ring);
	snprintf(cmd, sizeof(cmd), "file://%s", look);
	rule->lookaside = strdup(cmd);
	rule->on_unverified = RS_UNVERIFIED_REFUSE;
	s = sign_open(cfg, st);
	struct sign_verified how = {0}, again = {0};
	ck_assert_msg(sign_verify_original(s, rule, NULL, UP, REPO, "1.0", m1, &how, &err) == RS_OK, "%s", err.msg);
	/* which signature verified, with which key (for the attestation) */
	ck_assert(how.gpg);
	ck_assert(!how.cosign);
	ck_assert_str_eq(how.gpg_fpr, fpr);
	ck_assert_uint_eq(how.gpg_index, 1);
	ck_assert_str_eq(how.gpg_source, rule->lookaside);
	/* remembered with the result */
	ck_assert_msg(sign_verify_original(s, rule, NULL, UP, REPO, "1.0", m1, &again, &err) == RS_OK, "%s", err.msg);
	ck_assert_str_eq(again.gpg_fpr, fpr);
	ck_assert_msg(sign_verify_original(s, rule, NULL, UP, REPO, NULL, m1, &how, &err) == RS_OK, "%s", err.msg);
	ck_assert_int_eq(sign_verify_original(s, rule, NULL, UP, REPO, "2.0", m1, &how, &err), RS_POLICY);
	ck_assert_ptr_nonnull(strstr(err.msg, "is not tag 2.0"));
	ck_assert_int_eq(sign_verify_original(s, rule, NULL, UP, "org/other", "1.0", m1, &how, &err), RS_POLICY);
	ck_assert_ptr_nonnull(strstr(err.msg, "no signature of"));
	ck_assert_int_eq(sign_verify_original(s, rule, NULL, UP, REPO, "1.0", m2, &how, &err), RS_POLICY);
	ck_assert_ptr_nonnull(strstr(err.msg, "no signature of"));
	/* the publisher's signature is what regslim's lookaside serves for a digest it did not sign */
	char *proxied = NULL;
	size_t plen = 0;
	ck_assert_int_eq(sign_lookaside_get(s, UP, "org/mirror", m1, 1, &proxied, &plen, &err), RS_NOT_FOUND);
	ck_assert_int_eq(sign_lookaside_get(s, UP, REPO, m1, 1, &proxied, &plen, &err), RS_OK);
	free(proxied);
	/* one byte changed: a success is remembered (RS_LIMIT_VERIFIED_TTL_S), a new start checks again */
	sig[len / 2] ^= 0x55;
	to_lookaside(look, m1, 1, sig, len);
	ck_assert_int_eq(sign_verify_original(s, rule, NULL, UP, REPO, "1.0", m1, &how, &err), RS_OK);
	sign_free(s);
	s = sign_open(cfg, st);
	ck_assert_int_eq(sign_verify_original(s, rule, NULL, UP, REPO, "1.0", m1, &how, &err), RS_POLICY);
	ck_assert_ptr_nonnull(strstr(err.msg, "signature 1 of"));
	free(sig);
	sign_free(s);
	store_free(st);
}
END_TEST

START_TEST(a_key_not_in_gpg_home_stops_the_start)
{
	struct store *st = store_fixture_store(0);
	struct rs_config *cfg = store_fixture_config();
	cfg->signatures.gpg_home = strdup(home);
	cfg->signatures.gpg_key = strdup("0123456789ABCDEF0123456789ABCDEF01234567");
	struct sign *s = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(sign_new(&s, cfg, st, &err), RS_CONFIG);
	ck_assert_ptr_nonnull(strstr(err.msg, "signatures.sign.gpg_key: 0123456789ABCDEF0123456789ABCDEF01234567 is not"));
	ck_assert_ptr_null(s);
	store_free(st);
}
END_TEST

/* openssl CLI: a public key file made by cmd (a pipeline writing PEM to stdout) at path. */
static void make_key(const char *path, const char *cmd)
{
	char c[2400];
	snprintf(c, sizeof(c), "(%s) 2> /dev/null | timeout 30 openssl pkey -pubout -out '%s' 2> /dev/null", cmd, path);
	ck_assert_int_eq(system(c), 0);
}

START_TEST(cosign_keys_must_be_ecdsa_p256)
{
	struct store *st = store_fixture_store(0);
	struct rs_config *cfg = store_fixture_config();
	char p256[1100], p384[1100], rsa[1100], junk[1100];
	snprintf(p256, sizeof(p256), "%s/p256.pub", fixture_dir());
	snprintf(p384, sizeof(p384), "%s/p384.pub", fixture_dir());
	snprintf(rsa, sizeof(rsa), "%s/rsa.pub", fixture_dir());
	snprintf(junk, sizeof(junk), "%s/junk.pub", fixture_dir());
	make_key(p256, "timeout 30 openssl ecparam -name prime256v1 -genkey -noout");
	make_key(p384, "timeout 30 openssl ecparam -name secp384r1 -genkey -noout");
	make_key(rsa, "timeout 60 openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048");
	FILE *f = fopen(junk, "w");
	ck_assert_ptr_nonnull(f);
	fputs("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n", f);
	fclose(f);
	struct rs_verify_rule *rule = calloc(1, sizeof(*rule));
	cfg->signatures.verify = rule;
	cfg->signatures.verify_count = 1;
	rule->upstream = strdup(UP);
	rule->repositories = calloc(1, sizeof(char *));
	rule->repositories[0] = strdup("org/*");
	rule->repository_count = 1;
	rule->cosign_public_keys = calloc(2, sizeof(char *));
	rule->cosign_public_keys[0] = strdup(p256);
	rule->cosign_key_count = 2;
	const char *bad[] = {p384, rsa, junk};
	struct rs_err err = {0};
	struct sign *s = NULL;
	for (size_t i = 0; i < 3; i++) {
		free(rule->cosign_public_keys[1]);
		rule->cosign_public_keys[1] = strdup(bad[i]);
		ck_assert_int_eq(sign_new(&s, cfg, st, &err), RS_CONFIG);
		ck_assert_ptr_null(s);
		ck_assert_msg(strstr(err.msg, "signatures.verify[0].cosign_public_keys[1]: ") &&
		                  strstr(err.msg, "is not a PEM ECDSA P-256 public key"),
		              "%s", err.msg);
	}
	/* two P-256 keys (rotation) load; without the upstream nothing verifies */
	free(rule->cosign_public_keys[1]);
	rule->cosign_public_keys[1] = strdup(p256);
	s = sign_open(cfg, st);
	struct sign_verified how = {0};
	ck_assert_int_eq(sign_verify_original(s, rule, NULL, UP, REPO, "1.0",
	                                      "sha256:1111111111111111111111111111111111111111111111111111111111111111",
	                                      &how, &err),
	                 RS_POLICY);
	ck_assert(!how.gpg && !how.cosign);
	sign_free(s);
	store_free(st);
}
END_TEST

START_TEST(the_gate_s_optimized_image_is_signed_for_the_pushed_reference)
{
	struct store *st = store_fixture_store(0);
	struct rs_config *cfg = store_fixture_config();
	struct rs_upstream_config upc = {.name = "reg.example.com"};
	char m1[DIGEST_STR_SIZE], m2[DIGEST_STR_SIZE], idx[DIGEST_STR_SIZE];
	digest_buffer(m1, "m1", 2);
	digest_buffer(m2, "m2", 2);
	digest_buffer(idx, "idx", 3);
	char children[2][DIGEST_STR_SIZE];
	memcpy(children[0], m1, sizeof(m1));
	memcpy(children[1], m2, sizeof(m2));
	struct rs_err err = {0};
	/* no signing key: nothing to do */
	struct sign *s = sign_open(cfg, st);
	const char(*kids)[DIGEST_STR_SIZE] = (const char(*)[DIGEST_STR_SIZE])children;
	ck_assert_int_eq(sign_pushed(s, &upc, NULL, NULL, REPO, "1.0", idx, kids, 2, &err), RS_OK);
	char *sig = NULL;
	size_t len = 0;
	ck_assert_int_eq(sign_lookaside_get(s, UP, REPO, idx, 1, &sig, &len, &err), RS_NOT_FOUND);
	sign_free(s);
	cfg->signatures.gpg_home = strdup(home);
	cfg->signatures.gpg_key = strdup(fpr);
	s = sign_open(cfg, st);
	for (int twice = 0; twice < 2; twice++)
		ck_assert_msg(sign_pushed(s, &upc, NULL, NULL, REPO, "1.0", idx, kids, 2, &err) == RS_OK, "%s", err.msg);
	const char *all[] = {idx, m1, m2};
	char look[1100], ring[1100], cmd[2400];
	snprintf(look, sizeof(look), "%s/lookaside", fixture_dir());
	snprintf(ring, sizeof(ring), "%s/org.gpg", fixture_dir());
	for (size_t i = 0; i < 3; i++) {
		ck_assert_msg(sign_lookaside_get(s, UP, REPO, all[i], 1, &sig, &len, &err) == RS_OK, "%s", err.msg);
		to_lookaside(look, all[i], 1, sig, len);
		free(sig);
		ck_assert_int_eq(sign_lookaside_get(s, UP, REPO, all[i], 2, &sig, &len, &err), RS_NOT_FOUND);
	}
	sign_free(s);
	/* each verifies, with the signing key, as a signature of the pushed reference */
	snprintf(cmd, sizeof(cmd), "timeout 30 gpg --homedir '%s' --batch --export %s > '%s' 2> /dev/null", home, fpr, ring);
	ck_assert_int_eq(system(cmd), 0);
	struct rs_verify_rule *rule = calloc(1, sizeof(*rule));
	cfg->signatures.verify = rule;
	cfg->signatures.verify_count = 1;
	rule->upstream = strdup(upc.name);
	rule->repositories = calloc(1, sizeof(char *));
	rule->repositories[0] = strdup("org/*");
	rule->repository_count = 1;
	rule->gpg_keyring = strdup(ring);
	snprintf(cmd, sizeof(cmd), "file://%s", look);
	rule->lookaside = strdup(cmd);
	s = sign_open(cfg, st);
	for (size_t i = 0; i < 3; i++) {
		ck_assert_msg(sign_verify_original(s, rule, NULL, upc.name, REPO, "1.0", all[i], NULL, &err) == RS_OK, "%s",
		              err.msg);
		ck_assert_int_eq(sign_verify_original(s, rule, NULL, "docker.io", REPO, "1.0", all[i], NULL, &err),
		                 RS_POLICY);
		ck_assert_int_eq(sign_verify_original(s, rule, NULL, upc.name, REPO, "2.0", all[i], NULL, &err), RS_POLICY);
	}
	sign_free(s);
	store_free(st);
}
END_TEST

/* The optimized image of the cosign test below, as the gate's source reads it. */
static const char *PUSHED_BODY = "{\"schemaVersion\":2,\"mediaType\":\"" MT_MANIFEST "\",\"config\":{"
                                 "\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":"
                                 "\"sha256:5555555555555555555555555555555555555555555555555555555555555555\","
                                 "\"size\":2},\"layers\":[]}";

static enum rs_code pushed_open_blob(void *ctx, const char *digest, int *fd, uint64_t *size, struct rs_err *err)
{
	(void)ctx, (void)fd, (void)size;
	return rs_err_set(err, RS_NOT_FOUND, "no blob %s here", digest);
}

static enum rs_code pushed_read_manifest(void *ctx, const char *digest, char **buf, size_t *len, char **mt,
                                         struct rs_err *err)
{
	(void)ctx;
	char d[DIGEST_STR_SIZE];
	digest_buffer(d, PUSHED_BODY, strlen(PUSHED_BODY));
	if (strcmp(d, digest) != 0)
		return rs_err_set(err, RS_NOT_FOUND, "no manifest %s here", digest);
	*buf = strdup(PUSHED_BODY);
	*mt = strdup(MT_MANIFEST);
	*len = strlen(PUSHED_BODY);
	return RS_OK;
}

START_TEST(a_cosign_signature_that_cannot_be_pushed_fails_the_signing)
{
	struct store *st = store_fixture_store(0);
	struct rs_config *cfg = store_fixture_config();
	char dir[1100], key[1200], pub[1200];
	snprintf(dir, sizeof(dir), "%s/cosign", fixture_dir());
	struct rs_err err = {0};
	ck_assert_msg(cosign_keygen(dir, key, pub, sizeof(key), &err) == RS_OK, "%s", err.msg);
	cfg->signatures.cosign_key_file = strdup(key);
	ck_assert_int_eq(upstream_global_init(&err), RS_OK);
	/* nothing listens on port 1: the push client's first request is refused */
	struct rs_upstream_config upc = {.name = "reg.example.com", .url = "http://127.0.0.1:1", .timeout_s = 10};
	struct upstream_push *up = NULL;
	ck_assert_msg(upstream_push_new(&up, &upc, &err) == RS_OK, "%s", err.msg);
	const struct upstream_push_source src = {pushed_open_blob, pushed_read_manifest, NULL};
	char d[DIGEST_STR_SIZE];
	digest_buffer(d, PUSHED_BODY, strlen(PUSHED_BODY));
	/* a cosign key alone is a signing key for the gate */
	struct sign *s = sign_open(cfg, st);
	ck_assert(!sign_signs(s));
	ck_assert_int_eq(sign_pushed(s, &upc, up, &src, REPO, "1.0", d, NULL, 0, &err), RS_UPSTREAM);
	char want[200];
	snprintf(want, sizeof(want), "cosign signature " REPO ":sha256-%s.sig: upstream reg.example.com: ", digest_hex(d));
	ck_assert_msg(strncmp(err.msg, want, strlen(want)) == 0, "%s", err.msg);
	/* a manifest the source does not have is not signed either */
	char gone[DIGEST_STR_SIZE];
	digest_buffer(gone, "gone", 4);
	rs_err_clear(&err);
	ck_assert_int_eq(sign_pushed(s, &upc, up, &src, REPO, "1.0", gone, NULL, 0, &err), RS_NOT_FOUND);
	ck_assert_msg(strstr(err.msg, "cosign signature " REPO ":sha256-"), "%s", err.msg);
	sign_free(s);
	upstream_push_free(up);
	upstream_global_cleanup();
	store_free(st);
}
END_TEST

START_TEST(signature_tags_pass_through)
{
	const char *hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	const char *yes[] = {".sig", ".att", ".sbom", ""};
	const char *no[] = {".SIG", ".sig2", ".txt", "-x"};
	char tag[128];
	for (size_t i = 0; i < 4; i++) {
		snprintf(tag, sizeof(tag), "sha256-%s%s", hex, yes[i]);
		ck_assert_msg(sign_passthrough_tag(tag), "%s", tag);
		snprintf(tag, sizeof(tag), "sha256-%s%s", hex, no[i]);
		ck_assert_msg(!sign_passthrough_tag(tag), "%s", tag);
	}
	ck_assert(!sign_passthrough_tag("sha256-0123.sig"));
	ck_assert(!sign_passthrough_tag("sha256-0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef.sig"));
	ck_assert(!sign_passthrough_tag("latest"));
	ck_assert(!sign_passthrough_tag("sha512-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.sig"));
}
END_TEST

static Suite *sign_suite(void)
{
	Suite *s = suite_create("sign");
	TCase *tc = tcase_create("gpg");
	tcase_set_timeout(tc, 120);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, signs_index_and_manifests_once_per_identity_then_verifies_as_publisher);
	tcase_add_test(tc, a_key_not_in_gpg_home_stops_the_start);
	tcase_add_test(tc, cosign_keys_must_be_ecdsa_p256);
	tcase_add_test(tc, the_gate_s_optimized_image_is_signed_for_the_pushed_reference);
	tcase_add_test(tc, a_cosign_signature_that_cannot_be_pushed_fails_the_signing);
	tcase_add_test(tc, signature_tags_pass_through);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(sign_suite());
}
