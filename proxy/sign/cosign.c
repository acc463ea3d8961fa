/* cosign: the organisation's ECDSA P-256 key and the `sha256-<hex>.sig`
 * signature manifests made with it (cosign.h). The key is read with
 * OpenSSL (never with a passphrase prompt: an encrypted key is refused),
 * signatures are ECDSA over SHA-256 in ASN.1 DER, as cosign makes and
 * checks them. The .sig manifests are written through store.h into the
 * pushed area of the repository the client pulled from, under one mutex
 * (read, add a layer, write, drop the replaced manifest); those of an image
 * the push gate sends upstream are made from the same builders and pushed
 * there with the gate's push client (upstream_push.h). JSON comes from
 * config/cosigndoc.c; the manifests read back are walked with imagewalk. */
#include "cosign.h"

#include "cosigndoc.h"
#include "imagewalk.h"
#include "log.h"
#include "rs_limits.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct cosign {
	EVP_PKEY *key;
	char key_id[DIGEST_STR_SIZE];
	struct store *st;
	pthread_mutex_t lock; /* a .sig manifest's read-modify-write */
};

/* OpenSSL's passphrase callback: no passphrase, never a prompt. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return -1;
}

/* Whether key is an EC key on P-256. */
static bool is_p256(EVP_PKEY *key)
{
	char group[64] = "";
	if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC ||
	    !EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL))
		return false;
	return strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0;
}

enum rs_code cosign_new(struct cosign **out, const char *file, const char *kp, struct store *st, struct rs_err *err)
{
	BIO *bio = BIO_new_file(file, "r");
	if (!bio)
		return rs_err_set(err, RS_CONFIG, "%s: cannot read \"%.200s\"", kp, file);
	EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	if (!key)
		return rs_err_set(err, RS_CONFIG,
		                  "%s: \"%.200s\" is not an unencrypted PEM private key (cosign's own encrypted key files "
		                  "are not read: make one with regslim keygen --cosign)",
		                  kp, file);
	if (!is_p256(key)) {
		EVP_PKEY_free(key);
		return rs_err_set(err, RS_CONFIG, "%s: the key in \"%.200s\" is not an ECDSA P-256 key", kp, file);
	}
	unsigned char *der = NULL;
	int n = i2d_PUBKEY(key, &der);
	struct cosign *c = n > 0 ? calloc(1, sizeof(*c)) : NULL;
	if (!c) {
		OPENSSL_free(der);
		EVP_PKEY_free(key);
		return rs_err_set(err, RS_NOMEM, "out of memory loading %s", kp);
	}
	digest_buffer(c->key_id, der, (size_t)n);
	OPENSSL_free(der);
	c->key = key;
	c->st = st;
	pthread_mutex_init(&c->lock, NULL);
	*out = c;
	return RS_OK;
}

void cosign_free(struct cosign *c)
{
	if (!c)
		return;
	EVP_PKEY_free(c->key);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

const char *cosign_key_id(const struct cosign *c)
{
	return c->key_id;
}

enum rs_code cosign_sign_bytes(struct cosign *c, const void *buf, size_t len, char **out, struct rs_err *err)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char *sig = NULL;
	size_t slen = 0;
	enum rs_code rc = RS_OK;
	if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, c->key) != 1 ||
	    EVP_DigestSign(md, NULL, &slen, buf, len) != 1 || !(sig = malloc(slen)) ||
	    EVP_DigestSign(md, sig, &slen, buf, len) != 1)
		rc = rs_err_set(err, RS_IO, "signing with the cosign key %s failed", c->key_id);
	*out = rc ? NULL : malloc((slen + 2) / 3 * 4 + 1);
	if (!rc && !*out)
		rc = rs_err_set(err, RS_NOMEM, "out of memory signing");
	if (!rc)
		EVP_EncodeBlock((unsigned char *)*out, sig, (int)slen);
	free(sig);
	EVP_MD_CTX_free(md);
	return rc;
}

enum rs_code cosign_put_blob(struct store *st, const char *name, const void *buf, size_t len,
                             char out[DIGEST_STR_SIZE], struct rs_err *err)
{
	digest_buffer(out, buf, len);
	if (store_pushed_holds(st, name, STORE_BLOB, out))
		return RS_OK;
	char uuid[STORE_UUID_SIZE];
	struct store_upload *u = NULL;
	enum rs_code rc = store_upload_start(st, name, uuid, err);
	if (!rc)
		rc = store_upload_open(st, name, uuid, &u, err);
	if (rc)
		return rc;
	if ((rc = store_upload_write(u, buf, len, err))) {
		store_upload_cancel(u);
		return rc;
	}
	return store_upload_commit(u, out, err);
}

/* The signature layers of a .sig manifest (its simple-signing layers with a
 * signature annotation), at most RS_LIMIT_SIGNATURES_PER_DIGEST - 1: the
 * oldest go first, leaving room for one more. Each keeps all its
 * annotations (a signature someone else pushed may carry a bundle or a
 * certificate beside it). */
struct sig_layer {
	char digest[DIGEST_STR_SIZE];
	uint64_t size;
	struct imagejson_kv *annotations; /* strings owned */
	size_t annotation_count;
};
struct sig_layers {
	struct sig_layer v[RS_LIMIT_SIGNATURES_PER_DIGEST];
	size_t n;
	bool nomem;
};

static void layer_dispose(struct sig_layer *x)
{
	for (size_t i = 0; i < x->annotation_count; i++) {
		free(x->annotations[i].key);
		free(x->annotations[i].value);
	}
	free(x->annotations);
	x->annotations = NULL;
	x->annotation_count = 0;
}

static void layers_dispose(struct sig_layers *l)
{
	for (size_t i = 0; i < l->n; i++)
		layer_dispose(&l->v[i]);
	l->n = 0;
}

static enum rs_code layers_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                                 enum imagewalk_step *step, struct rs_err *err)
{
	(void)step, (void)err;
	struct sig_layers *l = ctx;
	if (ev != IMAGEWALK_REF || n->kind != IMAGEWALK_LAYER || !n->media_type ||
	    strcmp(n->media_type, COSIGNDOC_SIMPLESIGNING_MT) != 0 || !digest_valid(n->digest))
		return RS_OK;
	const struct imagejson_descriptor *d = n->desc;
	bool signed_ = false;
	for (size_t i = 0; i < d->annotation_count; i++)
		signed_ = signed_ || strcmp(d->annotations[i].key, COSIGNDOC_SIGNATURE_ANNOTATION) == 0;
	if (!signed_)
		return RS_OK;
	if (l->n == RS_LIMIT_SIGNATURES_PER_DIGEST - 1) {
		layer_dispose(&l->v[0]);
		memmove(l->v, l->v + 1, --l->n * sizeof(*l->v));
	}
	struct sig_layer *x = &l->v[l->n++];
	memset(x, 0, sizeof(*x));
	snprintf(x->digest, sizeof(x->digest), "%s", n->digest);
	x->size = n->size;
	if (!(x->annotations = calloc(d->annotation_count, sizeof(*x->annotations))))
		l->nomem = true;
	for (size_t i = 0; x->annotations && i < d->annotation_count; i++, x->annotation_count++) {
		x->annotations[i].key = strdup(d->annotations[i].key);
		x->annotations[i].value = strdup(d->annotations[i].value);
		if (!x->annotations[i].key || !x->annotations[i].value)
			l->nomem = true;
	}
	return RS_OK;
}

/* "now" in RFC 3339 (UTC), into out (32 bytes). */
static void now_rfc3339(char out[32])
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The config and the manifest of a .sig manifest with signature layers
 * layers[0..n) (at most RS_LIMIT_SIGNATURES_PER_DIGEST) and subject. *config
 * and *manifest new (free()), also on error. */
static enum rs_code sig_docs(const struct cosigndoc_desc *layers, size_t n, const struct cosigndoc_desc *subject,
                             const char *created, char **config, size_t *clen, char **manifest, size_t *mlen,
                             struct rs_err *err)
{
	const char *ids[RS_LIMIT_SIGNATURES_PER_DIGEST];
	for (size_t i = 0; i < n; i++)
		ids[i] = layers[i].digest;
	char cdigest[DIGEST_STR_SIZE];
	enum rs_code rc = cosigndoc_sig_config(config, clen, ids, n, created, err);
	if (rc)
		return rc;
	digest_buffer(cdigest, *config, *clen);
	struct cosigndoc_desc cd = {.media_type = COSIGNDOC_CONFIG_MT, .digest = cdigest, .size = *clen, .signature = NULL};
	return cosigndoc_manifest(manifest, mlen, COSIGNDOC_SIG_ARTIFACT_TYPE, &cd, layers, n, subject, NULL, err);
}

/* The new .sig manifest: old's signature layers (the oldest dropped past the
 * cap) and the new one, its config, the subject. Blobs go to name first. */
static enum rs_code write_sig(struct cosign *c, const char *name, const struct sig_layers *old,
                              const struct cosigndoc_desc *added, const struct cosigndoc_desc *subject, char **out,
                              size_t *out_len, struct rs_err *err)
{
	struct cosigndoc_desc layers[RS_LIMIT_SIGNATURES_PER_DIGEST];
	size_t n = 0;
	for (size_t i = 0; i < old->n; i++)
		layers[n++] = (struct cosigndoc_desc){COSIGNDOC_SIMPLESIGNING_MT, old->v[i].digest, old->v[i].size, NULL,
		                                      old->v[i].annotations, old->v[i].annotation_count};
	layers[n++] = *added;
	char created[32], *config = NULL, cdigest[DIGEST_STR_SIZE];
	size_t clen = 0;
	now_rfc3339(created);
	enum rs_code rc = sig_docs(layers, n, subject, created, &config, &clen, out, out_len, err);
	if (!rc)
		rc = cosign_put_blob(c->st, name, config, clen, cdigest, err);
	free(config);
	if (rc) {
		free(*out);
		*out = NULL;
	}
	return rc;
}

/* The signature layers of the current .sig manifest of tag in name into l
 * (none when there is none); its digest in old ("" when none). */
static enum rs_code read_sig(struct cosign *c, const char *name, const char *tag, struct sig_layers *l,
                             char old[DIGEST_STR_SIZE], struct rs_err *err)
{
	struct store_tag bt = {0};
	struct rs_err e = {0};
	char *buf = NULL, *type = NULL;
	size_t len = 0;
	old[0] = '\0';
	if (store_pushed_tag_get(c->st, name, tag, &bt, &e) != RS_OK ||
	    store_manifest_get(c->st, STORE_PUSHED, bt.digest, RS_LIMIT_MANIFEST_MAX_BYTES, &buf, &len, &type, &e) !=
	            RS_OK)
		return e.code == RS_UNAVAILABLE ? rs_err_set(err, e.code, "%s", e.msg) : RS_OK;
	const struct imagewalk walk = {.visit = layers_visit, .ctx = l, .manifest_what = "cosign signature manifest"};
	enum rs_code rc = imagewalk_bytes(&walk, bt.digest, buf, len, type, &e);
	if (rc == RS_OK && l->nomem)
		rc = rs_err_set(&e, RS_NOMEM, "out of memory reading %s:%s", name, tag);
	if (rc == RS_OK) {
		snprintf(old, DIGEST_STR_SIZE, "%s", bt.digest);
	} else { /* not ours to read: replaced by a new one */
		layers_dispose(l);
		if (rc != RS_NOMEM)
			log_event(LOG_WARN, "%s:%s is replaced: %s", name, tag, e.msg);
	}
	free(buf);
	free(type);
	return rc == RS_NOMEM ? rs_err_set(err, rc, "%s", e.msg) : RS_OK;
}

enum rs_code cosign_sign_manifest(struct cosign *c, enum store_area area, const char *name, const char *identity,
                                  const char *digest, struct rs_err *err)
{
	char *subject = NULL, *stype = NULL, *payload = NULL, *sig = NULL, *body = NULL;
	size_t slen = 0, plen = 0, blen = 0;
	char tag[80], pdigest[DIGEST_STR_SIZE], old[DIGEST_STR_SIZE] = "", mdigest[DIGEST_STR_SIZE];
	struct sig_layers *l = calloc(1, sizeof(*l));
	if (!l)
		return rs_err_set(err, RS_NOMEM, "out of memory signing %s", digest);
	snprintf(tag, sizeof(tag), "sha256-%s.sig", digest_hex(digest));
	enum rs_code rc = store_manifest_get(c->st, area, digest, RS_LIMIT_MANIFEST_MAX_BYTES, &subject, &slen, &stype,
	                                     err);
	if (!rc)
		rc = cosigndoc_payload(&payload, &plen, identity, digest, err);
	if (rc)
		goto done;
	/* the payload has no timestamp: its digest says whether identity is signed */
	digest_buffer(pdigest, payload, plen);
	pthread_mutex_lock(&c->lock);
	if ((rc = read_sig(c, name, tag, l, old, err)))
		goto out;
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i].digest, pdigest) == 0)
			goto out; /* made before */
	struct cosigndoc_desc sub = {.media_type = stype, .digest = digest, .size = slen, .signature = NULL};
	if ((rc = cosign_sign_bytes(c, payload, plen, &sig, err)) ||
	    (rc = cosign_put_blob(c->st, name, payload, plen, pdigest, err)))
		goto out;
	struct cosigndoc_desc added = {.media_type = COSIGNDOC_SIMPLESIGNING_MT, .digest = pdigest, .size = plen, .signature = sig};
	if ((rc = write_sig(c, name, l, &added, &sub, &body, &blen, err)) ||
	    (rc = store_pushed_put_manifest(c->st, name, tag, COSIGNDOC_MANIFEST_MT, body, blen, mdigest, err)))
		goto out;
	if (old[0] && strcmp(old, mdigest) != 0) {
		struct rs_err e = {0};
		if (store_pushed_delete_manifest(c->st, name, old, NULL, &e) != RS_OK)
			log_event(LOG_WARN, "the replaced cosign signature manifest %s of %s stays listed: %s", old, name, e.msg);
	}
	log_event(LOG_INFO, "cosign-signed %s as %s with key %s (%s:%s)", digest, identity, c->key_id, name, tag);
out:
	pthread_mutex_unlock(&c->lock);
done:
	if (l)
		layers_dispose(l);
	free(l);
	free(subject);
	free(stype);
	free(payload);
	free(sig);
	free(body);
	return rc;
}

enum rs_code cosign_sig_make(struct cosign *c, const char *identity, const struct cosigndoc_desc *subject,
                             const char *created, struct cosign_sig *out, struct rs_err *err)
{
	char now[32], pdigest[DIGEST_STR_SIZE], *sig = NULL;
	if (!created) {
		now_rfc3339(now);
		created = now;
	}
	snprintf(out->tag, sizeof(out->tag), "sha256-%s.sig", digest_hex(subject->digest));
	enum rs_code rc = cosigndoc_payload(&out->payload, &out->payload_len, identity, subject->digest, err);
	if (!rc)
		rc = cosign_sign_bytes(c, out->payload, out->payload_len, &sig, err);
	if (!rc) {
		digest_buffer(pdigest, out->payload, out->payload_len);
		struct cosigndoc_desc layer = {.media_type = COSIGNDOC_SIMPLESIGNING_MT, .digest = pdigest,
		                               .size = out->payload_len, .signature = sig};
		rc = sig_docs(&layer, 1, subject, created, &out->config, &out->config_len, &out->manifest,
		              &out->manifest_len, err);
	}
	free(sig);
	return rc;
}

void cosign_sig_dispose(struct cosign_sig *s)
{
	free(s->payload);
	free(s->config);
	free(s->manifest);
	memset(s, 0, sizeof(*s));
}

enum rs_code cosign_push_signature(struct cosign *c, struct upstream_push *up, const struct upstream_push_source *src,
                                   const char *repo, const char *identity, const char *digest, struct rs_err *err)
{
	char *subject = NULL, *stype = NULL, got[DIGEST_STR_SIZE];
	size_t slen = 0;
	struct cosign_sig sig = {0};
	snprintf(sig.tag, sizeof(sig.tag), "sha256-%s.sig", digest_hex(digest));
	enum rs_code rc = src->read_manifest(src->ctx, digest, &subject, &slen, &stype, err);
	if (!rc) {
		const struct cosigndoc_desc sub = {.media_type = stype, .digest = digest, .size = slen, .signature = NULL};
		rc = cosign_sig_make(c, identity, &sub, NULL, &sig, err);
	}
	/* the blobs first: the upstream checks that the manifest's blobs are in repo */
	if (!rc)
		rc = upstream_push_blob_bytes(up, repo, sig.payload, sig.payload_len, got, err);
	if (!rc)
		rc = upstream_push_blob_bytes(up, repo, sig.config, sig.config_len, got, err);
	if (!rc)
		rc = upstream_push_manifest(up, repo, sig.tag, COSIGNDOC_MANIFEST_MT, sig.manifest, sig.manifest_len, err);
	if (rc)
		rs_err_prefix(err, "cosign signature %s:%s: ", repo, sig.tag);
	else
		log_event(LOG_INFO, "cosign-signed %s as %s with key %s, pushed upstream as %s:%s", digest, identity,
		          c->key_id, repo, sig.tag);
	cosign_sig_dispose(&sig);
	free(subject);
	free(stype);
	return rc;
}

/* ------------------------------------------------------------ keygen */

/* Write text to path, created with mode (never over an existing file). */
static enum rs_code write_new(const char *path, const char *text, size_t len, mode_t mode, struct rs_err *err)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return rs_err_set(err, RS_IO, "cannot create %.200s: %s", path, strerror(errno));
	bool ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
	int e = errno;
	if (close(fd) != 0 && ok) {
		ok = false;
		e = errno;
	}
	if (!ok) {
		unlink(path);
		return rs_err_set(err, RS_IO, "cannot write %.200s: %s", path, strerror(e));
	}
	return RS_OK;
}

/* The PEM text of key (private: PKCS#8 unencrypted; else the public key). */
static char *pem_of(EVP_PKEY *key, bool private_key, size_t *len)
{
	BIO *mem = BIO_new(BIO_s_mem());
	char *data = NULL, *out = NULL;
	if (mem && (private_key ? PEM_write_bio_PKCS8PrivateKey(mem, key, NULL, NULL, 0, NULL, NULL)
	                        : PEM_write_bio_PUBKEY(mem, key)) == 1) {
		long n = BIO_get_mem_data(mem, &data);
		if (n > 0 && (out = malloc((size_t)n + 1))) {
			memcpy(out, data, (size_t)n);
			out[n] = '\0';
			*len = (size_t)n;
		}
	}
	BIO_free(mem);
	return out;
}

enum rs_code cosign_keygen(const char *dir, char *out_key, char *out_pub, size_t cap, struct rs_err *err)
{
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return rs_err_set(err, RS_IO, "cannot create %.200s: %s", dir, strerror(errno));
	if ((size_t)snprintf(out_key, cap, "%s/cosign.key", dir) >= cap ||
	    (size_t)snprintf(out_pub, cap, "%s/cosign.pub", dir) >= cap)
		return rs_err_set(err, RS_IO, "directory name %.200s is too long", dir);
	EVP_PKEY *key = EVP_EC_gen("P-256");
	if (!key)
		return rs_err_set(err, RS_IO, "OpenSSL could not make a P-256 key");
	size_t klen = 0, plen = 0;
	char *priv = pem_of(key, true, &klen), *pub = pem_of(key, false, &plen);
	EVP_PKEY_free(key);
	enum rs_code rc = priv && pub ? RS_OK : rs_err_set(err, RS_NOMEM, "out of memory writing the key pair");
	if (!rc && !(rc = write_new(out_key, priv, klen, 0600, err)) && (rc = write_new(out_pub, pub, plen, 0644, err)))
		unlink(out_key);
	if (priv)
		OPENSSL_cleanse(priv, klen);
	free(priv);
	free(pub);
	return rc;
}
