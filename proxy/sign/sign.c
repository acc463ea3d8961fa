/* sign: GPG simple signing and verification with GPGME (sign.h). The
 * signed payloads and the stored signature lists are config/sigpayload.c's;
 * this file runs gpg (through GPGME, one context per operation), keeps the
 * lists in the store (STORE_DOC_SIGNATURES, read-modify-write under one
 * mutex) and reads publishers' lookasides: file:// with the file helpers,
 * http(s):// with the upstream transfer core (one peer per verify rule).
 *
 * Each verify rule's keyring is imported once, at sign_new, into a private
 * GnuPG home in the store's scratch area, so verification accepts exactly
 * the keys of that file (several keys: rotation); its cosign public keys are
 * loaded by cosign_verify.c. Nothing of it is logged but fingerprints. GPG
 * signatures come from the rule's lookaside and from the upstream's
 * signature extension (X-Registry-Supports-Signatures); a GPG or a cosign
 * signature verified is enough. */
#include "sign.h"

#include "cosign.h"
#include "cosign_verify.h"
#include "digest.h"
#include "fsutil.h"
#include "image.h"
#include "imagewalk.h"
#include "log.h"
#include "rs_limits.h"
#include "sigpayload.h"
#include "xfer.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <gpgme.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define SIGN_PATH_MAX 4096
#define SIGN_REF_MAX 1024

struct sign_rule {
	const struct rs_verify_rule *rule; /* borrowed from cfg */
	char home[SIGN_PATH_MAX];          /* scratch GnuPG home with the keyring imported; "" without keyring */
	struct rs_upstream_config peer_cfg; /* http(s) lookasides: the peer's view of the host */
	struct xfer_peer *peer;
	struct cosign_verify_keys *ck; /* cosign_public_keys; NULL without */
};

/* A remembered successful verification. */
struct verified {
	char key[SIGN_REF_MAX]; /* "<rule>|<upstream>/<repo>:<tag>@<digest>"; "" when free */
	time_t until;
	struct sign_verified what;
};

struct sign {
	const struct rs_config *cfg;
	struct store *st;
	pthread_mutex_t lock; /* the signature lists' read-modify-write (held while gpg signs) */
	pthread_mutex_t verified_lock; /* verified[] */
	struct sign_rule *rules;
	size_t rule_count;
	struct verified *verified; /* RS_LIMIT_VERIFIED_SLOTS, direct-mapped by a hash of the key */
	struct cosign *cosign;     /* signatures.sign.cosign_key_file; NULL without */
};

/* ------------------------------------------------------------ GPGME */

static pthread_once_t gpgme_once = PTHREAD_ONCE_INIT;

static void gpgme_setup(void)
{
	(void)gpgme_check_version(NULL); /* initialises the library; any version of Debian's will do */
}

/* A context on the OpenPGP engine with home as its GnuPG home. */
static enum rs_code ctx_new(gpgme_ctx_t *out, const char *home, struct rs_err *err)
{
	pthread_once(&gpgme_once, gpgme_setup);
	gpgme_error_t ge = gpgme_new(out);
	if (!ge)
		ge = gpgme_ctx_set_engine_info(*out, GPGME_PROTOCOL_OpenPGP, NULL, home);
	if (ge) {
		if (*out)
			gpgme_release(*out);
		*out = NULL;
		return rs_err_set(err, RS_IO, "gpgme with home %.200s: %s", home, gpgme_strerror(ge));
	}
	gpgme_set_armor(*out, 0);
	return RS_OK;
}

/* gpgme data into a new buffer of ours (free()); releases d. */
static enum rs_code data_take(gpgme_data_t d, char **out, size_t *out_len, struct rs_err *err)
{
	size_t n = 0;
	char *mem = gpgme_data_release_and_get_mem(d, &n);
	*out = malloc(n + 1);
	if (*out) {
		if (n)
			memcpy(*out, mem, n);
		(*out)[n] = '\0';
		*out_len = n;
	}
	gpgme_free(mem);
	return *out ? RS_OK : rs_err_set(err, RS_NOMEM, "out of memory reading gpg's output");
}

/* An OpenPGP signed message (not detached, binary) of payload by key fpr. */
static enum rs_code gpg_sign(const struct sign *s, const char *payload, size_t len, char **out, size_t *out_len,
                             struct rs_err *err)
{
	gpgme_ctx_t ctx = NULL;
	gpgme_key_t key = NULL;
	gpgme_data_t in = NULL, sig = NULL;
	const struct rs_signatures_config *g = &s->cfg->signatures;
	enum rs_code rc = ctx_new(&ctx, g->gpg_home, err);
	if (rc)
		return rc;
	gpgme_error_t ge = gpgme_get_key(ctx, g->gpg_key, &key, 1);
	if (!ge)
		ge = gpgme_signers_add(ctx, key);
	if (!ge)
		ge = gpgme_data_new_from_mem(&in, payload, len, 0);
	if (!ge)
		ge = gpgme_data_new(&sig);
	if (!ge)
		ge = gpgme_op_sign(ctx, in, sig, GPGME_SIG_MODE_NORMAL);
	if (!ge) {
		gpgme_sign_result_t sr = gpgme_op_sign_result(ctx);
		if (!sr || sr->invalid_signers || !sr->signatures)
			ge = gpgme_error(GPG_ERR_UNUSABLE_SECKEY);
	}
	if (ge) {
		rc = rs_err_set(err, RS_IO, "signing with key %s of signatures.sign.gpg_home: %s", g->gpg_key,
		                gpgme_strerror(ge));
	} else {
		rc = data_take(sig, out, out_len, err);
		sig = NULL;
	}
	gpgme_data_release(sig);
	gpgme_data_release(in);
	gpgme_key_unref(key);
	gpgme_release(ctx);
	return rc;
}

/* Verify one signed message in home: RS_OK with the signed payload in *out
 * when a signature by a key of home is good; RS_POLICY with the reason. */
static enum rs_code gpg_verify(const char *home, const char *msg, size_t len, char **out, size_t *out_len,
                               char fpr[41], struct rs_err *err)
{
	gpgme_ctx_t ctx = NULL;
	gpgme_data_t sig = NULL, plain = NULL;
	enum rs_code rc = ctx_new(&ctx, home, err);
	if (rc)
		return rc;
	gpgme_error_t ge = gpgme_data_new_from_mem(&sig, msg, len, 0);
	if (!ge)
		ge = gpgme_data_new(&plain);
	if (!ge)
		ge = gpgme_op_verify(ctx, sig, NULL, plain);
	gpgme_verify_result_t vr = ge ? NULL : gpgme_op_verify_result(ctx);
	gpgme_signature_t good = NULL;
	for (gpgme_signature_t x = vr ? vr->signatures : NULL; x && !good; x = x->next) {
		gpgme_key_t k = NULL;
		/* a good signature by a key of the keyring (status says good and
		 * not expired or revoked; trust in the web of trust is not asked) */
		if (gpgme_err_code(x->status) == GPG_ERR_NO_ERROR && x->fpr && !gpgme_get_key(ctx, x->fpr, &k, 0)) {
			good = x;
			gpgme_key_unref(k);
		}
		if (!good)
			ge = x->status ? x->status : gpgme_error(GPG_ERR_NO_PUBKEY);
	}
	if (!good) {
		rc = rs_err_set(err, RS_POLICY, "not signed by a key of the keyring: %s",
		                ge ? gpgme_strerror(ge) : "no signature");
	} else {
		snprintf(fpr, 41, "%s", good->fpr);
		rc = data_take(plain, out, out_len, err);
		plain = NULL;
	}
	gpgme_data_release(plain);
	gpgme_data_release(sig);
	gpgme_release(ctx);
	return rc;
}

/* Import the keyring file into home; RS_CONFIG when it holds no key. */
static enum rs_code gpg_import(const char *home, const char *file, const char *kp, struct rs_err *err)
{
	gpgme_ctx_t ctx = NULL;
	gpgme_data_t keys = NULL;
	enum rs_code rc = ctx_new(&ctx, home, err);
	if (rc)
		return rc;
	gpgme_error_t ge = gpgme_data_new_from_file(&keys, file, 1);
	if (!ge)
		ge = gpgme_op_import(ctx, keys);
	gpgme_import_result_t ir = ge ? NULL : gpgme_op_import_result(ctx);
	if (ge)
		rc = rs_err_set(err, RS_CONFIG, "%s: cannot import \"%.200s\": %s", kp, file, gpgme_strerror(ge));
	else if (!ir || ir->considered == 0 || (ir->imported == 0 && ir->unchanged == 0))
		rc = rs_err_set(err, RS_CONFIG, "%s: \"%.200s\" holds no OpenPGP public key", kp, file);
	else
		log_event(LOG_INFO, "%s: %d key(s) from %s accepted for verification", kp, ir->considered, file);
	gpgme_data_release(keys);
	gpgme_release(ctx);
	return rc;
}

/* ------------------------------------------------------------ set-up */

static enum rs_code rule_setup(struct sign *s, struct sign_rule *sr, size_t i, struct rs_err *err)
{
	const struct rs_verify_rule *r = sr->rule;
	char kp[64];
	snprintf(kp, sizeof(kp), "signatures.verify[%zu].gpg_keyring", i);
	if (r->gpg_keyring) {
		enum rs_code rc = store_scratch_new(s->st, "gpgverify", sr->home, sizeof(sr->home), err);
		if (rc)
			return rc;
		if ((rc = gpg_import(sr->home, r->gpg_keyring, kp, err)))
			return rc;
	}
	if (r->cosign_key_count) {
		char ckp[64];
		snprintf(ckp, sizeof(ckp), "signatures.verify[%zu].cosign_public_keys", i);
		enum rs_code rc = cosign_verify_keys_load(&sr->ck, r->cosign_public_keys, r->cosign_key_count, ckp, err);
		if (rc)
			return rc;
	}
	if (r->lookaside && strncmp(r->lookaside, "http", 4) == 0) {
		/* the peer's URL is scheme://authority; requests name the full URL */
		const char *auth = strstr(r->lookaside, "://") + 3;
		size_t n = (size_t)(auth - r->lookaside) + strcspn(auth, "/");
		sr->peer_cfg.name = strndup(r->lookaside, n);
		sr->peer_cfg.url = sr->peer_cfg.name;
		sr->peer_cfg.timeout_s = 30;
		sr->peer_cfg.tls_verify = true;
		if (!sr->peer_cfg.name)
			return rs_err_set(err, RS_NOMEM, "out of memory setting up %s", kp);
		return xfer_peer_new(&sr->peer, &sr->peer_cfg, "regslim/" REGSLIM_VERSION, NULL, err);
	}
	return RS_OK;
}

enum rs_code sign_new(struct sign **out, const struct rs_config *cfg, struct store *st, struct rs_err *err)
{
	struct sign *s = calloc(1, sizeof(*s));
	if (!s)
		return rs_err_set(err, RS_NOMEM, "out of memory setting up signatures");
	s->cfg = cfg;
	s->st = st;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->verified_lock, NULL);
	enum rs_code rc = RS_OK;
	if (cfg->signatures.verify_count && !(s->verified = calloc(RS_LIMIT_VERIFIED_SLOTS, sizeof(*s->verified))))
		rc = rs_err_set(err, RS_NOMEM, "out of memory setting up signatures");
	const struct rs_signatures_config *g = &cfg->signatures;
	if (!rc && g->cosign_key_file &&
	    !(rc = cosign_new(&s->cosign, g->cosign_key_file, "signatures.sign.cosign_key_file", st, err)))
		log_event(LOG_INFO, "signatures.sign.cosign_key_file: cosign signing key %s", cosign_key_id(s->cosign));
	if (!rc && g->gpg_key) {
		gpgme_ctx_t ctx = NULL;
		gpgme_key_t key = NULL;
		if (!(rc = ctx_new(&ctx, g->gpg_home, err))) {
			gpgme_error_t ge = gpgme_get_key(ctx, g->gpg_key, &key, 1);
			if (ge || !key->can_sign)
				rc = rs_err_set(err, RS_CONFIG, "signatures.sign.gpg_key: %s is not a signing secret key of %s%s%s",
				                g->gpg_key, g->gpg_home, ge ? ": " : "", ge ? gpgme_strerror(ge) : "");
			gpgme_key_unref(key);
			gpgme_release(ctx);
		}
	}
	if (!rc && g->verify_count && !(s->rules = calloc(g->verify_count, sizeof(*s->rules))))
		rc = rs_err_set(err, RS_NOMEM, "out of memory setting up signatures");
	for (size_t i = 0; !rc && i < g->verify_count; i++) {
		s->rules[i].rule = &g->verify[i];
		s->rule_count = i + 1;
		rc = rule_setup(s, &s->rules[i], i, err);
	}
	if (rc) {
		sign_free(s);
		return rc;
	}
	*out = s;
	return RS_OK;
}

void sign_free(struct sign *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->rule_count; i++) {
		xfer_peer_free(s->rules[i].peer);
		cosign_verify_keys_free(s->rules[i].ck);
		free(s->rules[i].peer_cfg.name);
		if (s->rules[i].home[0])
			store_scratch_remove(s->st, s->rules[i].home);
	}
	free(s->rules);
	free(s->verified);
	cosign_free(s->cosign);
	pthread_mutex_destroy(&s->verified_lock);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

bool sign_signs(const struct sign *s)
{
	return s && s->cfg->signatures.gpg_key;
}

struct cosign *sign_cosign(const struct sign *s)
{
	return s ? s->cosign : NULL;
}

/* ------------------------------------------------------------ signing */

/* Add a signature for identity to the list of (repo, digest) unless it
 * has one. */
static enum rs_code sign_one(struct sign *s, const char *repo, const char *identity, const char *digest,
                             struct rs_err *err)
{
	char *text = NULL, *payload = NULL, *sig = NULL;
	size_t len = 0, plen = 0, slen = 0;
	struct sigdoc doc = {0};
	pthread_mutex_lock(&s->lock);
	enum rs_code rc = store_doc_get(s->st, STORE_DOC_SIGNATURES, repo, digest,
	                                RS_LIMIT_SIGNATURES_PER_DIGEST * RS_LIMIT_SIGNATURE_MAX_BYTES * 2, &text, &len, err);
	if (rc == RS_OK)
		rc = sigdoc_parse(&doc, text, len, err);
	else if (rc == RS_NOT_FOUND)
		rc = RS_OK;
	if (rc || sigdoc_find(&doc, identity) >= 0)
		goto out;
	free(text);
	text = NULL;
	if ((rc = sigpayload_make(&payload, &plen, identity, digest, "regslim " REGSLIM_VERSION, (int64_t)time(NULL),
	                          err)) ||
	    (rc = gpg_sign(s, payload, plen, &sig, &slen, err)) ||
	    (rc = sigdoc_add(&doc, identity, sig, slen, RS_LIMIT_SIGNATURES_PER_DIGEST, err)) ||
	    (rc = sigdoc_dump(&doc, &text, &len, err)) ||
	    (rc = store_doc_put(s->st, STORE_DOC_SIGNATURES, repo, digest, text, len, err)))
		goto out;
	log_event(LOG_INFO, "signed %s as %s with key %s", digest, identity, s->cfg->signatures.gpg_key);
out:
	pthread_mutex_unlock(&s->lock);
	sigdoc_dispose(&doc);
	free(text);
	free(payload);
	free(sig);
	return rc;
}

/* The walk of sign_image: the manifests an index lists (not loaded). */
struct sign_walk {
	char (*digests)[DIGEST_STR_SIZE];
	size_t n, cap;
	struct store *st;
};

static enum rs_code walk_load(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len, char **type,
                              struct rs_err *err)
{
	struct sign_walk *w = ctx;
	return store_manifest_get(w->st, STORE_CACHE, n->digest, RS_LIMIT_MANIFEST_MAX_BYTES, buf, len, type, err);
}

static enum rs_code walk_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                               enum imagewalk_step *step, struct rs_err *err)
{
	struct sign_walk *w = ctx;
	if (ev != IMAGEWALK_REF || n->kind != IMAGEWALK_ENTRY)
		return RS_OK;
	*step = IMAGEWALK_SKIP;
	if (!digest_valid(n->digest) || w->n == w->cap)
		return rs_err_set(err, RS_BAD_INPUT, "index entry %zu of %s cannot be signed", n->pos, n->parent->digest);
	snprintf(w->digests[w->n++], DIGEST_STR_SIZE, "%s", n->digest);
	return RS_OK;
}

enum rs_code sign_index_manifests(struct sign *s, const char *digest, char (**out)[DIGEST_STR_SIZE], size_t *out_n,
                                  struct rs_err *err)
{
	struct sign_walk w = {.cap = RS_LIMIT_WALK_DOCUMENTS, .st = s->st};
	*out = NULL;
	*out_n = 0;
	w.digests = calloc(w.cap, sizeof(*w.digests));
	if (!w.digests)
		return rs_err_set(err, RS_NOMEM, "out of memory signing %s", digest);
	const struct imagewalk walk = {.load = walk_load, .visit = walk_visit, .ctx = &w, .max_depth = 1};
	enum rs_code rc = imagewalk_run(&walk, digest, err);
	if (rc) {
		free(w.digests);
		return rc;
	}
	*out = w.digests;
	*out_n = w.n;
	return RS_OK;
}

enum rs_code sign_gpg_manifest(struct sign *s, const char *repo, const char *identity, const char *digest,
                               struct rs_err *err)
{
	return sign_signs(s) ? sign_one(s, repo, identity, digest, err) : RS_OK;
}

enum rs_code sign_image(struct sign *s, const char *upstream, const char *repo, const char *tag,
                        const char *digest, struct rs_err *err)
{
	if (!sign_signs(s))
		return RS_OK;
	char identity[SIGN_REF_MAX];
	if ((size_t)snprintf(identity, sizeof(identity), "%s/%s:%s", upstream, repo, tag) >= sizeof(identity))
		return rs_err_set(err, RS_BAD_INPUT, "reference %.100s/%.100s:%.60s is too long to sign", upstream, repo, tag);
	char(*v)[DIGEST_STR_SIZE] = NULL;
	size_t n = 0;
	enum rs_code rc = sign_index_manifests(s, digest, &v, &n, err);
	if (!rc)
		rc = sign_one(s, repo, identity, digest, err);
	for (size_t i = 0; !rc && i < n; i++)
		rc = sign_one(s, repo, identity, v[i], err);
	free(v);
	return rc;
}

enum rs_code sign_pushed(struct sign *s, const struct rs_upstream_config *upc, struct upstream_push *up,
                         const struct upstream_push_source *src, const char *repo, const char *tag, const char *digest,
                         const char (*children)[DIGEST_STR_SIZE], size_t n, struct rs_err *err)
{
	if (!sign_signs(s) && !sign_cosign(s))
		return RS_OK;
	char identity[SIGN_REF_MAX];
	if ((size_t)snprintf(identity, sizeof(identity), "%s/%s:%s", upc->name, repo, tag) >= sizeof(identity))
		return rs_err_set(err, RS_BAD_INPUT, "reference %.100s/%.100s:%.60s is too long to sign", upc->name, repo,
		                  tag);
	enum rs_code rc = RS_OK;
	if (sign_signs(s)) {
		rc = sign_one(s, repo, identity, digest, err);
		for (size_t i = 0; !rc && i < n; i++)
			rc = sign_one(s, repo, identity, children[i], err);
	}
	if (rc || !sign_cosign(s))
		return rc;
	assert(up && src);
	/* before the image: the tag that announces it comes last (the spec lets
	 * a manifest's subject be pushed after it) */
	rc = cosign_push_signature(s->cosign, up, src, repo, identity, digest, err);
	for (size_t i = 0; !rc && i < n; i++)
		rc = cosign_push_signature(s->cosign, up, src, repo, identity, children[i], err);
	return rc;
}

bool sign_passthrough_tag(const char *tag)
{
	if (strncmp(tag, "sha256-", 7) != 0)
		return false;
	size_t hex = strspn(tag + 7, "0123456789abcdef");
	const char *rest = tag + 7 + hex;
	return hex == 64 && (!*rest || strcmp(rest, ".sig") == 0 || strcmp(rest, ".att") == 0 || strcmp(rest, ".sbom") == 0);
}

/* ------------------------------------------------------------ lookasides */

static const struct sign_rule *rule_of(const struct sign *s, const struct rs_verify_rule *r)
{
	for (size_t i = 0; i < s->rule_count; i++)
		if (s->rules[i].rule == r)
			return &s->rules[i];
	return NULL;
}

/* Signature n of (repo, digest) in the publisher's lookaside of sr.
 * RS_NOT_FOUND when it has none. */
static enum rs_code publisher_get(const struct sign_rule *sr, const char *repo, const char *digest, unsigned n,
                                  char **out, size_t *out_len, struct rs_err *err)
{
	const char *base = sr->rule->lookaside;
	char url[SIGN_PATH_MAX];
	if ((size_t)snprintf(url, sizeof(url), "%s/%s@sha256=%s/signature-%u", base, repo, digest_hex(digest), n) >=
	    sizeof(url))
		return rs_err_set(err, RS_BAD_INPUT, "lookaside path of %.100s is too long", repo);
	if (strncmp(base, "file://", 7) == 0) {
		enum rs_code rc = fsutil_read_small(out, out_len, url + 7, RS_LIMIT_SIGNATURE_MAX_BYTES, err);
		if (rc == RS_NOT_FOUND)
			rc = rs_err_set(err, RS_NOT_FOUND, "no signature %u of %s in %s", n, digest, base);
		return rc;
	}
	struct xfer_request rq = {.method = XFER_GET, .url = url, .what = "GET lookaside signature",
	                          .auth = XFER_AUTH_ANSWER, .follow = true, .sink = XFER_SINK_MEMORY,
	                          .max_bytes = RS_LIMIT_SIGNATURE_MAX_BYTES, .timeout_code = RS_UPSTREAM};
	struct xfer_answer a = {0};
	enum rs_code rc = xfer_run(sr->peer, &rq, &a, err);
	if (rc == RS_OK && (a.status == 404 || a.status == 403))
		rc = rs_err_set(err, RS_NOT_FOUND, "no signature %u of %s in %s", n, digest, base);
	else if (rc == RS_OK && a.status != 200)
		rc = rs_err_set(err, RS_UPSTREAM, "lookaside %s answered %ld for signature %u of %s", base, a.status, n,
		                digest);
	if (rc == RS_OK) {
		*out = a.body;
		*out_len = a.body_len;
		a.body = NULL;
	}
	xfer_answer_dispose(&a);
	return rc;
}

enum rs_code sign_lookaside_get(struct sign *s, const char *upstream, const char *repo, const char *digest,
                                unsigned n, char **out, size_t *out_len, struct rs_err *err)
{
	char *text = NULL;
	size_t len = 0;
	struct sigdoc doc = {0};
	if (n == 0 || !digest_valid(digest))
		return rs_err_set(err, RS_NOT_FOUND, "no signature %u of %.80s", n, digest);
	enum rs_code rc = store_doc_get(s->st, STORE_DOC_SIGNATURES, repo, digest,
	                                RS_LIMIT_SIGNATURES_PER_DIGEST * RS_LIMIT_SIGNATURE_MAX_BYTES * 2, &text, &len, err);
	if (rc == RS_OK && (rc = sigdoc_parse(&doc, text, len, err)) == RS_OK && doc.n > 0) {
		if (n > doc.n) {
			rc = rs_err_set(err, RS_NOT_FOUND, "no signature %u of %s", n, digest);
		} else {
			*out = malloc(doc.v[n - 1].signature_len + 1);
			if (!*out)
				rc = rs_err_set(err, RS_NOMEM, "out of memory serving a signature");
			else
				memcpy(*out, doc.v[n - 1].signature, *out_len = doc.v[n - 1].signature_len);
		}
		sigdoc_dispose(&doc);
		free(text);
		return rc;
	}
	free(text);
	if (rc != RS_OK && rc != RS_NOT_FOUND)
		return rc;
	/* not one of ours: the publisher's, when a rule names a lookaside */
	const struct rs_verify_rule *r = config_find_verify_rule(s->cfg, upstream, repo);
	const struct sign_rule *sr = r ? rule_of(s, r) : NULL;
	if (!sr || !r->lookaside)
		return rs_err_set(err, RS_NOT_FOUND, "no signature %u of %s", n, digest);
	return publisher_get(sr, repo, digest, n, out, out_len, err);
}

/* ------------------------------------------------------------ verification */

/* The slot of key in s->verified (FNV-1a). */
static struct verified *slot_of(struct sign *s, const char *key)
{
	uint32_t h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		h = (h ^ *p) * 16777619u;
	return &s->verified[h % RS_LIMIT_VERIFIED_SLOTS];
}

/* Whether key was verified less than RS_LIMIT_VERIFIED_TTL_S ago (what
 * verified it in *what); with remember, note that it was just now, by
 * *what. */
static bool verified_recently(struct sign *s, const char *key, bool remember, struct sign_verified *what)
{
	time_t now = time(NULL);
	pthread_mutex_lock(&s->verified_lock);
	struct verified *v = slot_of(s, key);
	bool hit = strcmp(v->key, key) == 0 && now < v->until;
	if (remember) {
		snprintf(v->key, sizeof(v->key), "%s", key);
		v->until = now + RS_LIMIT_VERIFIED_TTL_S;
		v->what = *what;
	} else if (hit) {
		*what = v->what;
	}
	pthread_mutex_unlock(&s->verified_lock);
	return hit;
}

/* One GPG signed message msg (signature n of source, a string that
 * outlives *out): RS_OK with *out filled when it verifies and names digest
 * and the reference; RS_POLICY
 * with the reason in *why (the first one kept) otherwise; RS_NOMEM, RS_IO. */
static enum rs_code gpg_check_one(const struct sign_rule *sr, const char *msg, size_t len, const char *repository,
                                  const char *tag, const char *digest, const char *source, unsigned n,
                                  struct sign_verified *out, struct rs_err *why, struct rs_err *err)
{
	char *payload = NULL, fpr[41] = "";
	size_t plen = 0;
	struct rs_err e = {0};
	enum rs_code rc = gpg_verify(sr->home, msg, len, &payload, &plen, fpr, &e);
	if (rc == RS_OK)
		rc = sigpayload_check(payload, plen, digest, repository, tag, &e);
	free(payload);
	if (rc == RS_OK) {
		memset(out, 0, sizeof(*out));
		out->gpg = true;
		memcpy(out->gpg_fpr, fpr, sizeof(fpr));
		out->gpg_index = n;
		out->gpg_source = source;
		return RS_OK;
	}
	if (rc == RS_NOMEM || rc == RS_IO)
		return rs_err_set(err, rc, "%s", e.msg);
	if (!why->code)
		rs_err_set(why, RS_POLICY, "%ssignature %u of %s: %s",
		           strcmp(source, SIGN_SOURCE_EXTENSION) == 0 ? "the upstream's extension: " : "", n, digest, e.msg);
	return RS_POLICY;
}

/* The upstream's signature extension, when it says it has one
 * (X-Registry-Supports-Signatures on the manifest): its signatures of
 * digest, checked like the lookaside's. RS_NOT_FOUND when it offers none. */
static enum rs_code verify_extension(const struct sign_rule *sr, struct upstream *u, const char *repository,
                                     const char *repo, const char *tag, const char *digest, struct sign_verified *out,
                                     struct rs_err *why, struct rs_err *err)
{
	static const char *const accept[] = {IMAGE_MT_OCI_MANIFEST, IMAGE_MT_OCI_INDEX, IMAGE_MT_DOCKER_MANIFEST,
	                                     IMAGE_MT_DOCKER_LIST};
	struct upstream_reply rep = {0};
	enum rs_code rc = upstream_manifest(u, repo, digest, accept, 4, true, RS_LIMIT_MANIFEST_MAX_BYTES, &rep, err);
	bool offered = rc == RS_OK && rep.supports_signatures;
	upstream_reply_dispose(&rep);
	if (rc || !offered)
		return rc ? rc : RS_NOT_FOUND;
	rc = upstream_signatures(u, repo, digest, RS_LIMIT_VERIFY_SIGNATURES_MAX * RS_LIMIT_SIGNATURE_MAX_BYTES * 2, &rep,
	                         err);
	if (rc == RS_OK && rep.status == 404)
		rc = RS_NOT_FOUND;
	else if (rc == RS_OK && (rep.status != 200 || !rep.body))
		rc = rs_err_set(err, RS_UPSTREAM, "the upstream's signature extension answered %ld for %s", rep.status,
		                digest);
	struct sigdoc doc = {0};
	if (rc == RS_OK) {
		struct rs_err e = {0};
		rc = sigdoc_parse_extension(&doc, rep.body, rep.body_len, RS_LIMIT_VERIFY_SIGNATURES_MAX, &e);
		if (rc == RS_BAD_INPUT && !why->code)
			rs_err_set(why, RS_POLICY, "the upstream's signature extension: %s", e.msg);
		if (rc == RS_BAD_INPUT)
			rc = RS_NOT_FOUND;
		else if (rc)
			rs_err_set(err, rc, "%s", e.msg);
	}
	upstream_reply_dispose(&rep);
	if (rc == RS_OK && doc.n == 0)
		rc = RS_NOT_FOUND;
	for (size_t i = 0; rc == RS_OK && i < doc.n; i++) {
		rc = gpg_check_one(sr, (const char *)doc.v[i].signature, doc.v[i].signature_len, repository, tag, digest,
		                   SIGN_SOURCE_EXTENSION, (unsigned)(i + 1), out, why, err);
		if (rc == RS_POLICY && i + 1 < doc.n)
			rc = RS_OK; /* the next one */
	}
	sigdoc_dispose(&doc);
	return rc;
}

/* Fetch and check the publisher's GPG signatures of digest (see
 * sign_verify_original), without the memory of earlier results: the
 * lookaside's, then the upstream's signature extension's. */
static enum rs_code verify_gpg(const struct sign_rule *sr, struct upstream *u, const char *repository,
                               const char *repo, const char *tag, const char *digest, struct sign_verified *out,
                               struct rs_err *err)
{
	struct rs_err why = {0};
	for (unsigned n = 1; n <= RS_LIMIT_VERIFY_SIGNATURES_MAX; n++) {
		char *msg = NULL;
		size_t len = 0;
		struct rs_err e = {0};
		enum rs_code rc = publisher_get(sr, repo, digest, n, &msg, &len, &e);
		if (rc == RS_NOT_FOUND)
			break;
		if (rc)
			return rs_err_set(err, rc, "%s", e.msg);
		rc = gpg_check_one(sr, msg, len, repository, tag, digest, sr->rule->lookaside, n, out, &why, err);
		free(msg);
		if (rc != RS_POLICY)
			return rc;
	}
	enum rs_code rc = u ? verify_extension(sr, u, repository, repo, tag, digest, out, &why, err) : RS_NOT_FOUND;
	if (rc == RS_OK || rc == RS_NOMEM || rc == RS_IO)
		return rc;
	if (rc != RS_NOT_FOUND && rc != RS_POLICY && !why.code)
		return rc; /* the upstream could not say; with a bad signature in the lookaside, that one is the reason */
	if (why.code)
		return rs_err_set(err, RS_POLICY, "%s", why.msg);
	return rs_err_set(err, RS_POLICY, "no signature of %s in %s", digest, sr->rule->lookaside);
}

enum rs_code sign_verify_original(struct sign *s, const struct rs_verify_rule *rule, struct upstream *u,
                                  const char *upstream, const char *repo, const char *tag, const char *digest,
                                  struct sign_verified *out, struct rs_err *err)
{
	const struct sign_rule *sr = rule_of(s, rule);
	struct sign_verified what = {0};
	if (!sr || (!sr->home[0] && !sr->ck))
		return rs_err_set(err, RS_POLICY, "the verify rule of %.100s has no key", repo);
	char repository[SIGN_REF_MAX], key[SIGN_REF_MAX];
	if ((size_t)snprintf(repository, sizeof(repository), "%s/%s", upstream, repo) >= sizeof(repository) ||
	    (size_t)snprintf(key, sizeof(key), "%zu|%s:%s@%s", (size_t)(sr - s->rules), repository, tag ? tag : "",
	                     digest) >= sizeof(key))
		return rs_err_set(err, RS_BAD_INPUT, "repository %.100s/%.100s is too long", upstream, repo);
	if (verified_recently(s, key, false, &what)) {
		if (out)
			*out = what;
		return RS_OK;
	}
	/* either kind is enough (docs/signatures.md): GPG first, then cosign */
	struct rs_err gerr = {0};
	enum rs_code rc = RS_POLICY;
	if (sr->home[0])
		rc = verify_gpg(sr, u, repository, repo, tag, digest, &what, &gerr);
	if (rc != RS_OK && rc != RS_NOMEM && sr->ck && u) {
		rc = cosign_verify_original(sr->ck, u, upstream, repo, tag, digest, &what, err);
		if (rc != RS_OK && gerr.code)
			rs_err_prefix(err, "gpg: %s; cosign: ", gerr.msg);
	} else if (rc != RS_OK) {
		rs_err_set(err, gerr.code ? gerr.code : rc, "%s", gerr.code ? gerr.msg : "no cosign check without the upstream");
		rc = err->code;
	}
	if (rc == RS_OK) {
		if (what.cosign)
			log_event(LOG_INFO, "verified %s:%s (%s): cosign signature (%s) %s by key %s", repository,
			          tag ? tag : "", digest, what.cosign_source, what.cosign_signature, what.cosign_key);
		else
			log_event(LOG_INFO, "verified %s:%s (%s): gpg signature %u of %s by key %s", repository, tag ? tag : "",
			          digest, what.gpg_index, what.gpg_source, what.gpg_fpr);
		(void)verified_recently(s, key, true, &what); /* remembered for the next pulls */
		if (out)
			*out = what;
	}
	return rc;
}

/* ------------------------------------------------------------ keygen */

enum rs_code sign_keygen_gpg(const char *dir, const char *uid, char out[41], struct rs_err *err)
{
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return rs_err_set(err, RS_IO, "cannot create %.200s: %s", dir, strerror(errno));
	gpgme_ctx_t ctx = NULL;
	enum rs_code rc = ctx_new(&ctx, dir, err);
	if (rc)
		return rc;
	gpgme_error_t ge = gpgme_op_createkey(ctx, uid, "default", 0, 0, NULL,
	                                      GPGME_CREATE_SIGN | GPGME_CREATE_NOPASSWD | GPGME_CREATE_NOEXPIRE);
	gpgme_genkey_result_t gr = ge ? NULL : gpgme_op_genkey_result(ctx);
	if (ge || !gr || !gr->fpr || strlen(gr->fpr) != 40)
		rc = rs_err_set(err, RS_IO, "creating a key in %.200s: %s", dir,
		                ge ? gpgme_strerror(ge) : "gpg made no v4 key");
	else
		memcpy(out, gr->fpr, 41);
	gpgme_release(ctx);
	return rc;
}
