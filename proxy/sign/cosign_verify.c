/* cosign_verify: the publisher's cosign signatures of an original, found in
 * the upstream (the sha256-<hex>.sig tag, the referrers API or the
 * referrers tag) and checked with OpenSSL (cosign_verify.h). Manifests and
 * indexes are read with the image walk (imagewalk.h); payloads are checked
 * by sigpayload.c. Every fetched document and blob must hash to the digest
 * that named it. The first failure's reason is the one reported. */
#include "cosign_verify.h"

#include "digest.h"
#include "fsutil.h"
#include "image.h"
#include "imagejson.h"
#include "imagewalk.h"
#include "log.h"
#include "rs_limits.h"
#include "sigpayload.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COSIGN_LAYER_MT "application/vnd.dev.cosign.simplesigning.v1+json"
#define COSIGN_SIG_ANNOTATION "dev.cosignproject.cosign/signature"
#define COSIGN_ARTIFACT_TYPE "application/vnd.dev.cosign.artifact.sig.v1+json"
#define COSIGN_KEY_FILE_MAX (16u * 1024u)
#define COSIGN_LAYERS_MAX 16
#define COSIGN_REF_MAX 1024

struct cosign_key {
	EVP_PKEY *pk;
	char id[DIGEST_STR_SIZE]; /* sha256 of the DER SubjectPublicKeyInfo */
};

struct cosign_verify_keys {
	struct cosign_key *v;
	size_t n;
};

/* ------------------------------------------------------------ keys */

static enum rs_code key_load(struct cosign_key *k, const char *file, const char *kp, struct rs_err *err)
{
	char *pem = NULL;
	size_t len = 0;
	enum rs_code rc = fsutil_read_small(&pem, &len, file, COSIGN_KEY_FILE_MAX, err);
	if (rc)
		return rc == RS_NOMEM ? rc : rs_err_set(err, RS_CONFIG, "%s: cannot read \"%.200s\"", kp, file);
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	k->pk = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
	BIO_free(b);
	free(pem);
	char group[64] = "";
	size_t glen = 0;
	if (!k->pk || !EVP_PKEY_is_a(k->pk, "EC") ||
	    EVP_PKEY_get_group_name(k->pk, group, sizeof(group), &glen) != 1 || strcmp(group, "prime256v1") != 0) {
		ERR_clear_error();
		return rs_err_set(err, RS_CONFIG, "%s: \"%.200s\" is not a PEM ECDSA P-256 public key", kp, file);
	}
	unsigned char *der = NULL;
	int dlen = i2d_PUBKEY(k->pk, &der);
	if (dlen <= 0) {
		ERR_clear_error();
		return rs_err_set(err, RS_NOMEM, "%s: out of memory encoding the key", kp);
	}
	digest_buffer(k->id, der, (size_t)dlen);
	OPENSSL_free(der);
	log_event(LOG_INFO, "%s: cosign public key %s from %s accepted for verification", kp, k->id, file);
	return RS_OK;
}

enum rs_code cosign_verify_keys_load(struct cosign_verify_keys **out, char *const *files, size_t n, const char *kp,
                                     struct rs_err *err)
{
	struct cosign_verify_keys *k = calloc(1, sizeof(*k));
	if (!k || !(k->v = calloc(n ? n : 1, sizeof(*k->v)))) {
		free(k);
		return rs_err_set(err, RS_NOMEM, "out of memory loading %s", kp);
	}
	enum rs_code rc = RS_OK;
	for (size_t i = 0; rc == RS_OK && i < n; i++) {
		char ip[96];
		snprintf(ip, sizeof(ip), "%s[%zu]", kp, i);
		k->n = i + 1;
		rc = key_load(&k->v[i], files[i], ip, err);
	}
	if (rc) {
		cosign_verify_keys_free(k);
		return rc;
	}
	*out = k;
	return RS_OK;
}

void cosign_verify_keys_free(struct cosign_verify_keys *k)
{
	if (!k)
		return;
	for (size_t i = 0; i < k->n; i++)
		EVP_PKEY_free(k->v[i].pk);
	free(k->v);
	free(k);
}

/* The key of k whose ECDSA signature sig over msg verifies, or NULL. */
static const struct cosign_key *key_verifying(const struct cosign_verify_keys *k, const unsigned char *sig,
                                              size_t slen, const char *msg, size_t mlen)
{
	const struct cosign_key *found = NULL;
	for (size_t i = 0; !found && i < k->n; i++) {
		EVP_MD_CTX *c = EVP_MD_CTX_new();
		if (c && EVP_DigestVerifyInit(c, NULL, EVP_sha256(), NULL, k->v[i].pk) == 1 &&
		    EVP_DigestVerify(c, sig, slen, (const unsigned char *)msg, mlen) == 1)
			found = &k->v[i];
		EVP_MD_CTX_free(c);
	}
	ERR_clear_error(); /* a signature by another key leaves errors in OpenSSL's queue */
	return found;
}

/* ------------------------------------------------------------ fetching */

/* The manifest ref (a tag, or a digest it must hash to) of repo into *out
 * (new), its digest into mdigest; *out NULL when the upstream has none. */
static enum rs_code fetch_manifest(struct upstream *u, const char *repo, const char *ref, const char *accept_type,
                                   char **out, size_t *out_len, char mdigest[DIGEST_STR_SIZE], struct rs_err *err)
{
	static const char *const image[] = {IMAGE_MT_OCI_MANIFEST, IMAGE_MT_DOCKER_MANIFEST};
	const char *const index[] = {accept_type ? accept_type : IMAGE_MT_OCI_INDEX};
	struct upstream_reply rep = {0};
	*out = NULL;
	enum rs_code rc = upstream_manifest(u, repo, ref, accept_type ? index : image, accept_type ? 1 : 2, false,
	                                    RS_LIMIT_MANIFEST_MAX_BYTES, &rep, err);
	if (rc == RS_OK && rep.status == 200 && rep.body) {
		digest_buffer(mdigest, rep.body, rep.body_len);
		if (strchr(ref, ':') && strcmp(mdigest, ref) != 0) {
			rc = rs_err_set(err, RS_UPSTREAM, "the upstream's manifest %s of %s hashes to %s", ref, repo, mdigest);
		} else {
			*out = rep.body;
			*out_len = rep.body_len;
			rep.body = NULL;
		}
	} else if (rc == RS_OK && (rep.status < 400 || rep.status >= 500 || rep.status == 429)) {
		rc = rs_err_set(err, RS_UPSTREAM, "the upstream answered %ld for %s:%s", rep.status, repo, ref);
	}
	upstream_reply_dispose(&rep);
	return rc;
}

struct membuf {
	char *buf;
	size_t len, cap;
};

static enum rs_code blob_begin(void *arg, int64_t size, struct rs_err *err)
{
	struct membuf *m = arg;
	if (size > (int64_t)m->cap)
		return rs_err_set(err, RS_TOO_LARGE, "a cosign payload of %lld bytes, limit is %zu", (long long)size, m->cap);
	return RS_OK;
}

static enum rs_code blob_data(void *arg, const void *buf, size_t len, struct rs_err *err)
{
	struct membuf *m = arg;
	if (len > m->cap - m->len)
		return rs_err_set(err, RS_TOO_LARGE, "a cosign payload is over %zu bytes", m->cap);
	memcpy(m->buf + m->len, buf, len);
	m->len += len;
	return RS_OK;
}

/* The payload blob digest of repo into *out (new, NUL-terminated),
 * checked against its digest. */
static enum rs_code fetch_payload(struct upstream *u, const char *repo, const char *digest, char **out, size_t *out_len,
                                  struct rs_err *err)
{
	struct membuf m = {malloc(RS_LIMIT_SIGNATURE_MAX_BYTES + 1), 0, RS_LIMIT_SIGNATURE_MAX_BYTES};
	if (!m.buf)
		return rs_err_set(err, RS_NOMEM, "out of memory fetching a cosign payload");
	enum rs_code rc = upstream_blob(u, repo, digest, blob_begin, blob_data, &m, err);
	char got[DIGEST_STR_SIZE];
	if (rc == RS_OK) {
		digest_buffer(got, m.buf, m.len);
		if (strcmp(got, digest) != 0)
			rc = rs_err_set(err, RS_POLICY, "payload %s hashes to %s", digest, got);
	}
	if (rc) {
		free(m.buf);
		return rc;
	}
	m.buf[m.len] = '\0';
	*out = m.buf;
	*out_len = m.len;
	return RS_OK;
}

/* ------------------------------------------------------------ one signature manifest */

struct sig_layer {
	char digest[DIGEST_STR_SIZE];
	char *sig_b64;
	uint64_t size;
};

struct layer_walk {
	struct sig_layer v[COSIGN_LAYERS_MAX];
	size_t n;
};

static enum rs_code layer_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                                enum imagewalk_step *step, struct rs_err *err)
{
	(void)step;
	struct layer_walk *w = ctx;
	if (ev != IMAGEWALK_REF || n->kind != IMAGEWALK_LAYER || !n->desc->media_type ||
	    strcmp(n->desc->media_type, COSIGN_LAYER_MT) != 0 || w->n == COSIGN_LAYERS_MAX)
		return RS_OK;
	const char *sig = imagejson_kv_get(n->desc->annotations, n->desc->annotation_count, COSIGN_SIG_ANNOTATION);
	if (!sig || !digest_valid(n->digest))
		return RS_OK;
	struct sig_layer *l = &w->v[w->n];
	if (!(l->sig_b64 = strdup(sig)))
		return rs_err_set(err, RS_NOMEM, "out of memory reading a cosign signature");
	snprintf(l->digest, sizeof(l->digest), "%s", n->digest);
	l->size = n->size;
	w->n++;
	return RS_OK;
}

/* What one verification looks at. */
struct look {
	const struct cosign_verify_keys *k;
	struct upstream *u;
	const char *upstream, *repo, *tag, *digest;
	struct sign_verified *out;
	struct rs_err why; /* the first reason a signature did not count */
	unsigned seen;     /* signature layers looked at */
};

static void note_why(struct look *lk, const char *mdigest, size_t layer, const char *msg)
{
	if (!lk->why.code)
		rs_err_set(&lk->why, RS_POLICY, "cosign signature %s layer %zu: %s", mdigest, layer, msg);
}

/* Check the payload's digest and identity (the repository as the upstream
 * names it, or index.docker.io's name for docker.io). */
static enum rs_code payload_check(const struct look *lk, const char *payload, size_t len, struct rs_err *err)
{
	char repository[COSIGN_REF_MAX];
	snprintf(repository, sizeof(repository), "%s/%s", lk->upstream, lk->repo);
	enum rs_code rc =
		sigpayload_check_type(payload, len, SIGPAYLOAD_COSIGN_TYPE, lk->digest, repository, lk->tag, err);
	if (rc == RS_POLICY && strcmp(lk->upstream, "docker.io") == 0) {
		struct rs_err e2 = {0};
		snprintf(repository, sizeof(repository), "index.docker.io/%s", lk->repo);
		if (sigpayload_check_type(payload, len, SIGPAYLOAD_COSIGN_TYPE, lk->digest, repository, lk->tag, &e2) ==
		    RS_OK)
			rc = RS_OK;
	}
	return rc;
}

/* One layer: RS_OK when it verifies (lk->out filled; source static),
 * RS_POLICY when it does not (reason noted), other codes for failures to
 * look. */
static enum rs_code check_layer(struct look *lk, const char *mdigest, const char *source, size_t i,
                                const struct sig_layer *l, struct rs_err *err)
{
	unsigned char *sig = NULL;
	char *payload = NULL;
	size_t slen = 0, plen = 0;
	struct rs_err e = {0};
	lk->seen++;
	if (l->size > RS_LIMIT_SIGNATURE_MAX_BYTES) {
		note_why(lk, mdigest, i + 1, "the payload is too large");
		return RS_POLICY;
	}
	enum rs_code rc = sigpayload_base64_decode(&sig, &slen, l->sig_b64, &e);
	if (rc == RS_OK)
		rc = fetch_payload(lk->u, lk->repo, l->digest, &payload, &plen, &e);
	const struct cosign_key *key = NULL;
	if (rc == RS_OK && !(key = key_verifying(lk->k, sig, slen, payload, plen)))
		rc = rs_err_set(&e, RS_POLICY, "not signed by a key of cosign_public_keys");
	if (rc == RS_OK)
		rc = payload_check(lk, payload, plen, &e);
	if (rc == RS_OK && lk->out) {
		struct sign_verified *o = lk->out;
		memset(o, 0, sizeof(*o));
		o->cosign = true;
		snprintf(o->cosign_key, sizeof(o->cosign_key), "%s", key->id);
		snprintf(o->cosign_signature, sizeof(o->cosign_signature), "%s", mdigest);
		o->cosign_source = source;
	}
	free(sig);
	free(payload);
	if (rc == RS_NOMEM || rc == RS_UPSTREAM || rc == RS_TIMEOUT)
		return rs_err_set(err, rc, "cosign signature %s: %s", mdigest, e.msg);
	if (rc) {
		note_why(lk, mdigest, i + 1, e.msg);
		return RS_POLICY;
	}
	return RS_OK;
}

/* The signature layers of manifest buf (digest mdigest): RS_OK when one
 * verifies, RS_POLICY when none does, other codes for failures to look. */
static enum rs_code check_manifest(struct look *lk, const char *buf, size_t len, const char *mdigest,
                                   const char *source, struct rs_err *err)
{
	struct layer_walk lw = {.n = 0};
	const struct imagewalk walk = {.visit = layer_visit, .ctx = &lw, .manifest_what = "cosign signature manifest"};
	struct rs_err e = {0};
	enum rs_code rc = imagewalk_bytes(&walk, mdigest, buf, len, NULL, &e);
	if (rc == RS_NOMEM)
		rc = rs_err_set(err, rc, "%s", e.msg);
	else if (rc) {
		note_why(lk, mdigest, 0, e.msg);
		rc = RS_POLICY;
	} else {
		rc = RS_POLICY;
		if (lw.n == 0)
			note_why(lk, mdigest, 0, "no layer " COSIGN_LAYER_MT " with a signature");
	}
	for (size_t i = 0; rc == RS_POLICY && i < lw.n; i++)
		rc = check_layer(lk, mdigest, source, i, &lw.v[i], err);
	for (size_t i = 0; i < lw.n; i++)
		free(lw.v[i].sig_b64);
	return rc;
}

/* ------------------------------------------------------------ referrers */

struct entry_walk {
	char (*v)[DIGEST_STR_SIZE];
	size_t n, cap;
};

/* Index entries that may be cosign signatures: artifactType of cosign's
 * signatures, or none said (the referrers tag lists what its writer put). */
static enum rs_code entry_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                                enum imagewalk_step *step, struct rs_err *err)
{
	(void)err;
	struct entry_walk *w = ctx;
	if (ev != IMAGEWALK_REF || n->kind != IMAGEWALK_ENTRY)
		return RS_OK;
	*step = IMAGEWALK_SKIP;
	const char *at = n->desc->artifact_type;
	if (w->n < w->cap && digest_valid(n->digest) && (!at || strcmp(at, COSIGN_ARTIFACT_TYPE) == 0))
		snprintf(w->v[w->n++], DIGEST_STR_SIZE, "%s", n->digest);
	return RS_OK;
}

/* The referrers of lk->digest that may be cosign signatures, into w: the
 * upstream's referrers API, else its referrers tag (sha256-<hex>). */
static enum rs_code referrer_candidates(struct look *lk, struct entry_walk *w, struct rs_err *err)
{
	struct upstream_reply rep = {0};
	char *list = NULL, mdigest[DIGEST_STR_SIZE];
	size_t len = 0;
	enum rs_code rc = upstream_referrers(lk->u, lk->repo, lk->digest, RS_LIMIT_MANIFEST_MAX_BYTES, &rep, err);
	if (rc)
		return rc;
	if (rep.status == 200 && rep.body) {
		list = rep.body;
		len = rep.body_len;
		rep.body = NULL;
	} else if (rep.status < 400 || rep.status >= 500 || rep.status == 429) {
		rc = rs_err_set(err, RS_UPSTREAM, "the upstream answered %ld for the referrers of %s", rep.status,
		                lk->digest);
	} else {
		char tag[80];
		snprintf(tag, sizeof(tag), "sha256-%s", digest_hex(lk->digest));
		rc = fetch_manifest(lk->u, lk->repo, tag, IMAGE_MT_OCI_INDEX, &list, &len, mdigest, err);
	}
	upstream_reply_dispose(&rep);
	if (rc || !list)
		return rc;
	const struct imagewalk walk = {.visit = entry_visit, .ctx = w, .index_what = "referrers list"};
	struct rs_err e = {0};
	rc = imagewalk_bytes(&walk, NULL, list, len, IMAGE_MT_OCI_INDEX, &e);
	if (rc == RS_NOMEM)
		rc = rs_err_set(err, rc, "%s", e.msg);
	else if (rc) {
		if (!lk->why.code)
			rs_err_set(&lk->why, RS_POLICY, "the referrers list of %s: %s", lk->digest, e.msg);
		rc = RS_OK;
	}
	free(list);
	return rc;
}

/* ------------------------------------------------------------ verification */

enum rs_code cosign_verify_original(const struct cosign_verify_keys *k, struct upstream *u, const char *upstream,
                                    const char *repo, const char *tag, const char *digest, struct sign_verified *out,
                                    struct rs_err *err)
{
	struct look lk = {.k = k, .u = u, .upstream = upstream, .repo = repo, .tag = tag, .digest = digest, .out = out};
	char sigtag[80], mdigest[DIGEST_STR_SIZE], *buf = NULL;
	size_t len = 0;
	snprintf(sigtag, sizeof(sigtag), "sha256-%s.sig", digest_hex(digest));
	enum rs_code rc = fetch_manifest(u, repo, sigtag, NULL, &buf, &len, mdigest, err);
	if (rc)
		return rc;
	if (buf) {
		rc = check_manifest(&lk, buf, len, mdigest, SIGN_SOURCE_SIG_TAG, err);
		free(buf);
		if (rc != RS_POLICY)
			return rc; /* verified, or the upstream failed */
	}
	struct entry_walk w = {.cap = RS_LIMIT_VERIFY_SIGNATURES_MAX};
	if (!(w.v = calloc(w.cap, sizeof(*w.v))))
		return rs_err_set(err, RS_NOMEM, "out of memory verifying %s", digest);
	bool ok = false;
	rc = referrer_candidates(&lk, &w, err);
	for (size_t i = 0; rc == RS_OK && !ok && i < w.n; i++) {
		buf = NULL;
		rc = fetch_manifest(u, repo, w.v[i], NULL, &buf, &len, mdigest, err);
		if (rc == RS_OK && !buf) {
			note_why(&lk, w.v[i], 0, "the upstream does not have it");
		} else if (rc == RS_OK) {
			rc = check_manifest(&lk, buf, len, mdigest, SIGN_SOURCE_REFERRER, err);
			ok = rc == RS_OK;
			if (rc == RS_POLICY)
				rc = RS_OK; /* the next one */
		}
		free(buf);
	}
	free(w.v);
	if (rc || ok)
		return rc;
	if (lk.why.code)
		return rs_err_set(err, RS_POLICY, "%s", lk.why.msg);
	return rs_err_set(err, RS_POLICY, "no cosign signature of %s", digest);
}
