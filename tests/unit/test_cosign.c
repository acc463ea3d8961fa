/* test_cosign: proxy/sign/cosign.c with a real store and OpenSSL. keygen
 * makes a 0600 P-256 key that cosign_new loads and never overwrites; a
 * missing file, a public key, a P-384 key and an encrypted key are RS_CONFIG
 * naming the setting; a signature of bytes verifies with the public key
 * (OpenSSL's verifier, called by the test) and not over other bytes; a
 * manifest of the cache gets its sha256-<hex>.sig manifest in the pushed
 * area (subject = the manifest, one layer per identity, not twice for the
 * same identity), listed among the manifest's referrers, the replaced one
 * no longer; a signature someone else pushed there keeps its annotations
 * (bundle, certificate) beside regslim's. A .sig made for the push gate
 * (cosign_sig_make) is cosign's payload and config, and a manifest naming
 * them, its subject and a signature that verifies over the payload. */
#include "proxy/sign/cosign.h"

#include "cosigndoc.h"
#include "digest.h"
#include "fixture.h"
#include "store_fixture.h"

#include <check.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define KP "signatures.sign.cosign_key_file"
#define MT_MANIFEST "application/vnd.oci.image.manifest.v1+json"

static char dir[1100], key[1200], pub[1200];

static void setup(void)
{
	store_fixture_setup();
	snprintf(dir, sizeof(dir), "%s/cosign", fixture_dir());
	struct rs_err err = {0};
	ck_assert_msg(cosign_keygen(dir, key, pub, sizeof(key), &err) == RS_OK, "%s", err.msg);
}

static void teardown(void)
{
	store_fixture_teardown();
}

/* Whether sig (base64 DER) verifies over buf with the public key file pub. */
static bool verifies(const char *sig, const void *buf, size_t len)
{
	FILE *f = fopen(pub, "r");
	ck_assert_ptr_nonnull(f);
	EVP_PKEY *k = PEM_read_PUBKEY(f, NULL, NULL, NULL);
	fclose(f);
	ck_assert_ptr_nonnull(k);
	unsigned char der[256];
	int n = EVP_DecodeBlock(der, (const unsigned char *)sig, (int)strlen(sig));
	ck_assert_int_gt(n, 0);
	/* EVP_DecodeBlock counts the padding's zero bytes; DER says its own length */
	size_t dlen = (size_t)der[1] + 2;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k) == 1 &&
	          EVP_DigestVerify(md, der, dlen, buf, len) == 1;
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(k);
	return ok;
}

START_TEST(keygen_makes_a_p256_key_that_signs)
{
	struct stat sb;
	ck_assert_int_eq(stat(key, &sb), 0);
	ck_assert_uint_eq(sb.st_mode & 0777, 0600);
	struct rs_err err = {0};
	char k2[1200], p2[1200];
	ck_assert_int_eq(cosign_keygen(dir, k2, p2, sizeof(k2), &err), RS_IO);
	ck_assert_ptr_nonnull(strstr(err.msg, "File exists"));
	struct store *st = store_fixture_store(0);
	struct cosign *c = NULL;
	ck_assert_msg(cosign_new(&c, key, KP, st, &err) == RS_OK, "%s", err.msg);
	ck_assert_uint_eq(strlen(cosign_key_id(c)), DIGEST_STR_SIZE - 1);
	char *sig = NULL;
	ck_assert_int_eq(cosign_sign_bytes(c, "payload", 7, &sig, &err), RS_OK);
	ck_assert(verifies(sig, "payload", 7));
	ck_assert(!verifies(sig, "payloaD", 7));
	free(sig);
	cosign_free(c);
	store_free(st);
}
END_TEST

START_TEST(refuses_what_is_not_an_unencrypted_p256_key)
{
	struct store *st = store_fixture_store(0);
	struct cosign *c = NULL;
	struct rs_err err = {0};
	char path[1200], cmd[2600];
	ck_assert_int_eq(cosign_new(&c, "/nonexistent/cosign.key", KP, st, &err), RS_CONFIG);
	ck_assert_ptr_nonnull(strstr(err.msg, KP ": cannot read"));
	ck_assert_int_eq(cosign_new(&c, pub, KP, st, &err), RS_CONFIG);
	ck_assert_ptr_nonnull(strstr(err.msg, "is not an unencrypted PEM private key"));
	snprintf(path, sizeof(path), "%s/p384.pem", fixture_dir());
	snprintf(cmd, sizeof(cmd), "timeout 30 openssl ecparam -name secp384r1 -genkey -noout -out '%s' 2> /dev/null", path);
	ck_assert_int_eq(system(cmd), 0);
	ck_assert_int_eq(cosign_new(&c, path, KP, st, &err), RS_CONFIG);
	ck_assert_ptr_nonnull(strstr(err.msg, "is not an ECDSA P-256 key"));
	snprintf(path, sizeof(path), "%s/enc.pem", fixture_dir());
	snprintf(cmd, sizeof(cmd), "timeout 30 openssl pkey -in '%s' -aes256 -passout pass:secret -out '%s' 2> /dev/null",
	         key, path);
	ck_assert_int_eq(system(cmd), 0);
	ck_assert_int_eq(cosign_new(&c, path, KP, st, &err), RS_CONFIG);
	ck_assert_ptr_null(c);
	store_free(st);
}
END_TEST

/* The pushed manifest tagged sha256-<hex>.sig in name, in new buffers. */
static char *sig_manifest(struct store *st, const char *name, const char *digest, char out[DIGEST_STR_SIZE])
{
	char tag[80], *buf = NULL, *type = NULL;
	size_t len = 0;
	struct store_tag t = {0};
	struct rs_err err = {0};
	snprintf(tag, sizeof(tag), "sha256-%s.sig", digest_hex(digest));
	ck_assert_msg(store_pushed_tag_get(st, name, tag, &t, &err) == RS_OK, "%s", err.msg);
	ck_assert_msg(store_manifest_get(st, STORE_PUSHED, t.digest, 1 << 20, &buf, &len, &type, &err) == RS_OK, "%s",
	              err.msg);
	ck_assert_str_eq(type, MT_MANIFEST);
	free(type);
	snprintf(out, DIGEST_STR_SIZE, "%s", t.digest);
	return buf;
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;
	for (const char *p = hay; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

START_TEST(sig_manifest_has_one_layer_per_identity_and_a_subject)
{
	struct store *st = store_fixture_store(0);
	struct rs_err err = {0};
	const char *body = "{\"schemaVersion\":2,\"mediaType\":\"" MT_MANIFEST "\",\"config\":{\"mediaType\":"
	                   "\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:"
	                   "1111111111111111111111111111111111111111111111111111111111111111\",\"size\":2},\"layers\":[]}";
	char d[DIGEST_STR_SIZE], s1[DIGEST_STR_SIZE], s2[DIGEST_STR_SIZE], s3[DIGEST_STR_SIZE];
	digest_buffer(d, body, strlen(body));
	ck_assert_int_eq(store_manifest_put(st, STORE_CACHE, d, MT_MANIFEST, body, strlen(body), &err), RS_OK);
	struct cosign *c = NULL;
	ck_assert_msg(cosign_new(&c, key, KP, st, &err) == RS_OK, "%s", err.msg);
	ck_assert_msg(cosign_sign_manifest(c, STORE_CACHE, "org/app", "docker.io/org/app:1.0", d, &err) == RS_OK, "%s", err.msg);
	char *m1 = sig_manifest(st, "org/app", d, s1);
	ck_assert_uint_eq(count(m1, COSIGNDOC_SIGNATURE_ANNOTATION), 1);
	char subject[200];
	snprintf(subject, sizeof(subject), "\"subject\":{\"mediaType\":\"" MT_MANIFEST "\",\"digest\":\"%s\",\"size\":%zu}",
	         d, strlen(body));
	ck_assert_ptr_nonnull(strstr(m1, subject));
	ck_assert_ptr_nonnull(strstr(m1, "\"artifactType\":\"" COSIGNDOC_SIG_ARTIFACT_TYPE "\""));
	/* the same identity again: nothing new */
	ck_assert_int_eq(cosign_sign_manifest(c, STORE_CACHE, "org/app", "docker.io/org/app:1.0", d, &err), RS_OK);
	char *again = sig_manifest(st, "org/app", d, s2);
	ck_assert_str_eq(s2, s1);
	free(again);
	/* the payload blob is held by org/app */
	char *payload = NULL;
	size_t plen = 0;
	char pd[DIGEST_STR_SIZE];
	ck_assert_int_eq(cosigndoc_payload(&payload, &plen, "docker.io/org/app:1.0", d, &err), RS_OK);
	digest_buffer(pd, payload, plen);
	ck_assert(store_pushed_holds(st, "org/app", STORE_BLOB, pd));
	ck_assert(!store_pushed_holds(st, "org/other", STORE_BLOB, pd));
	free(payload);
	/* a second identity: a second layer, a new manifest; the old one leaves the referrers */
	ck_assert_int_eq(cosign_sign_manifest(c, STORE_CACHE, "org/app", "docker.io/org/app:latest", d, &err), RS_OK);
	char *m2 = sig_manifest(st, "org/app", d, s3);
	ck_assert_str_ne(s3, s1);
	ck_assert_uint_eq(count(m2, COSIGNDOC_SIGNATURE_ANNOTATION), 2);
	char(*v)[DIGEST_STR_SIZE] = NULL;
	size_t n = 0, held = 0;
	ck_assert_int_eq(store_pushed_referrers(st, "org/app", d, &v, &n, 100, &err), RS_OK);
	for (size_t i = 0; i < n; i++)
		if (store_pushed_holds(st, "org/app", STORE_MANIFEST, v[i])) {
			ck_assert_str_eq(v[i], s3);
			held++;
		}
	ck_assert_uint_eq(held, 1);
	free(v);
	/* a digest not in the cache */
	ck_assert_int_eq(cosign_sign_manifest(c, STORE_CACHE, "org/app", "docker.io/org/app:1.0",
	                                      "sha256:2222222222222222222222222222222222222222222222222222222222222222",
	                                      &err),
	                 RS_NOT_FOUND);
	free(m1);
	free(m2);
	cosign_free(c);
	store_free(st);
}
END_TEST

START_TEST(keeps_signatures_someone_else_pushed)
{
	struct store *st = store_fixture_store(0);
	struct rs_err err = {0};
	const char *body = "{\"schemaVersion\":2,\"mediaType\":\"" MT_MANIFEST "\",\"config\":{\"mediaType\":"
	                   "\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:"
	                   "3333333333333333333333333333333333333333333333333333333333333333\",\"size\":2},\"layers\":[]}";
	char d[DIGEST_STR_SIZE], pd[DIGEST_STR_SIZE], cd[DIGEST_STR_SIZE], md[DIGEST_STR_SIZE], tag[80];
	digest_buffer(d, body, strlen(body));
	ck_assert_int_eq(store_manifest_put(st, STORE_CACHE, d, MT_MANIFEST, body, strlen(body), &err), RS_OK);
	/* a keyless signature pushed by a client: its bundle and certificate beside the signature */
	char *payload = NULL, *m = NULL;
	size_t plen = 0, mlen = 0;
	ck_assert_int_eq(cosigndoc_payload(&payload, &plen, "docker.io/org/app", d, &err), RS_OK);
	ck_assert_int_eq(cosign_put_blob(st, "org/app", payload, plen, pd, &err), RS_OK);
	ck_assert_int_eq(cosign_put_blob(st, "org/app", "{}", 2, cd, &err), RS_OK);
	struct imagejson_kv ann[] = {{"dev.cosignproject.cosign/signature", "MEUCIQkeyless=="},
	                             {"dev.sigstore.cosign/bundle", "{\"SignedEntryTimestamp\":\"x\"}"},
	                             {"dev.sigstore.cosign/certificate", "-----BEGIN CERTIFICATE-----"}};
	const struct cosigndoc_desc config = {.media_type = COSIGNDOC_CONFIG_MT, .digest = cd, .size = 2};
	const struct cosigndoc_desc layer = {.media_type = COSIGNDOC_SIMPLESIGNING_MT, .digest = pd, .size = plen,
	                                     .annotations = ann, .annotation_count = 3};
	ck_assert_int_eq(cosigndoc_manifest(&m, &mlen, NULL, &config, &layer, 1, NULL, NULL, &err), RS_OK);
	snprintf(tag, sizeof(tag), "sha256-%s.sig", digest_hex(d));
	ck_assert_msg(store_pushed_put_manifest(st, "org/app", tag, MT_MANIFEST, m, mlen, md, &err) == RS_OK, "%s",
	              err.msg);
	struct cosign *c = NULL;
	ck_assert_msg(cosign_new(&c, key, KP, st, &err) == RS_OK, "%s", err.msg);
	ck_assert_msg(cosign_sign_manifest(c, STORE_CACHE, "org/app", "docker.io/org/app:1.0", d, &err) == RS_OK, "%s",
	              err.msg);
	char now[DIGEST_STR_SIZE];
	char *m2 = sig_manifest(st, "org/app", d, now);
	ck_assert_str_ne(now, md);
	ck_assert_uint_eq(count(m2, COSIGNDOC_SIGNATURE_ANNOTATION), 2);
	ck_assert_ptr_nonnull(strstr(m2, "\"dev.cosignproject.cosign/signature\":\"MEUCIQkeyless==\",\"dev.sigstore.cosign/"
	                                 "bundle\":\"{\\\"SignedEntryTimestamp\\\":\\\"x\\\"}\",\"dev.sigstore.cosign/"
	                                 "certificate\":\"-----BEGIN CERTIFICATE-----\""));
	free(payload);
	free(m);
	free(m2);
	cosign_free(c);
	store_free(st);
}
END_TEST

START_TEST(a_sig_made_for_a_push_holds_one_signature_of_its_subject)
{
	struct rs_err err = {0};
	struct cosign *c = NULL;
	ck_assert_msg(cosign_new(&c, key, KP, NULL, &err) == RS_OK, "%s", err.msg);
	const char *body = "{\"schemaVersion\":2,\"mediaType\":\"" MT_MANIFEST "\",\"config\":{\"mediaType\":"
	                   "\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:"
	                   "4444444444444444444444444444444444444444444444444444444444444444\",\"size\":2},\"layers\":[]}";
	char d[DIGEST_STR_SIZE], pd[DIGEST_STR_SIZE], cd[DIGEST_STR_SIZE], want_tag[80], frag[400];
	digest_buffer(d, body, strlen(body));
	const struct cosigndoc_desc sub = {.media_type = MT_MANIFEST, .digest = d, .size = strlen(body)};
	struct cosign_sig sig = {0};
	ck_assert_msg(cosign_sig_make(c, "reg.example.com/org/app:1.0", &sub, "2026-12-07T15:00:00Z", &sig, &err) == RS_OK,
	              "%s", err.msg);
	snprintf(want_tag, sizeof(want_tag), "sha256-%s.sig", digest_hex(d));
	ck_assert_str_eq(sig.tag, want_tag);
	/* the payload is cosign's, naming the identity and the subject */
	char *payload = NULL, *config = NULL;
	size_t plen = 0, clen = 0;
	ck_assert_int_eq(cosigndoc_payload(&payload, &plen, "reg.example.com/org/app:1.0", d, &err), RS_OK);
	ck_assert_uint_eq(sig.payload_len, plen);
	ck_assert_mem_eq(sig.payload, payload, plen);
	/* the config names the payload as its one diff_id */
	digest_buffer(pd, payload, plen);
	const char *ids[] = {pd};
	ck_assert_int_eq(cosigndoc_sig_config(&config, &clen, ids, 1, "2026-12-07T15:00:00Z", &err), RS_OK);
	ck_assert_uint_eq(sig.config_len, clen);
	ck_assert_mem_eq(sig.config, config, clen);
	digest_buffer(cd, config, clen);
	/* the manifest: that config, one payload layer whose signature verifies, the subject */
	ck_assert_uint_eq(strlen(sig.manifest), sig.manifest_len);
	snprintf(frag, sizeof(frag), "\"config\":{\"mediaType\":\"" COSIGNDOC_CONFIG_MT "\",\"digest\":\"%s\",\"size\":%zu}",
	         cd, clen);
	ck_assert_msg(strstr(sig.manifest, frag), "%s", sig.manifest);
	snprintf(frag, sizeof(frag), "{\"mediaType\":\"" COSIGNDOC_SIMPLESIGNING_MT "\",\"digest\":\"%s\",\"size\":%zu,", pd,
	         plen);
	ck_assert_msg(strstr(sig.manifest, frag), "%s", sig.manifest);
	snprintf(frag, sizeof(frag), "\"subject\":{\"mediaType\":\"" MT_MANIFEST "\",\"digest\":\"%s\",\"size\":%zu}", d,
	         strlen(body));
	ck_assert_msg(strstr(sig.manifest, frag), "%s", sig.manifest);
	ck_assert_ptr_nonnull(strstr(sig.manifest, "\"artifactType\":\"" COSIGNDOC_SIG_ARTIFACT_TYPE "\""));
	ck_assert_uint_eq(count(sig.manifest, COSIGNDOC_SIGNATURE_ANNOTATION), 1);
	const char *a = strstr(sig.manifest, "\"" COSIGNDOC_SIGNATURE_ANNOTATION "\":\"");
	ck_assert_ptr_nonnull(a);
	a += strlen(COSIGNDOC_SIGNATURE_ANNOTATION) + 4;
	char b64[200];
	size_t n = strcspn(a, "\"");
	ck_assert_uint_lt(n, sizeof(b64));
	memcpy(b64, a, n);
	b64[n] = '\0';
	ck_assert(verifies(b64, sig.payload, sig.payload_len));
	ck_assert(!verifies(b64, body, strlen(body)));
	cosign_sig_dispose(&sig);
	ck_assert_ptr_null(sig.manifest);
	cosign_sig_dispose(&sig); /* twice is fine */
	free(payload);
	free(config);
	cosign_free(c);
}
END_TEST

static Suite *cosign_suite(void)
{
	Suite *s = suite_create("cosign");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, keygen_makes_a_p256_key_that_signs);
	tcase_add_test(tc, refuses_what_is_not_an_unencrypted_p256_key);
	tcase_add_test(tc, sig_manifest_has_one_layer_per_identity_and_a_subject);
	tcase_add_test(tc, keeps_signatures_someone_else_pushed);
	tcase_add_test(tc, a_sig_made_for_a_push_holds_one_signature_of_its_subject);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(cosign_suite());
}
