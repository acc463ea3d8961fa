/* cosign: cosign-format signatures of the images regslim serves
 * (docs/signatures.md "cosign signatures").
 *
 * - Loads the organisation's ECDSA P-256 key (signatures.sign.cosign_key_file,
 *   an unencrypted PEM private key) and signs bytes with it (ECDSA over
 *   SHA-256, ASN.1 DER, base64: the value of cosign's
 *   dev.cosignproject.cosign/signature annotation).
 * - Keeps, for a manifest digest and a repository name, the cosign
 *   signature manifest: an OCI image manifest tagged `sha256-<hex>.sig` in
 *   that repository, one simple-signing payload layer per identity (what
 *   cosign writes), with the signed manifest as its subject so the referrers
 *   API lists it. It is kept as content of the repository in the store's
 *   pushed area (store.h: blobs through an upload, the manifest with
 *   store_pushed_put_manifest), made once per identity and never evicted,
 *   so the registry API serves it like any pushed artifact (tag, digest,
 *   blobs, referrers).
 * - Makes the signature manifest of an image the push gate sends upstream
 *   and pushes it there, beside the image (its blobs and the
 *   `sha256-<hex>.sig` manifest, with the push client upstream_push.h).
 * - Makes a first key pair (`regslim keygen --cosign DIR`).
 *
 * The JSON is config/cosigndoc.c's; cryptography is OpenSSL's (libcrypto).
 * Keys are never logged, only the public key's digest. Thread-safe. */
#ifndef RS_PROXY_COSIGN_H
#define RS_PROXY_COSIGN_H

#include "cosigndoc.h"
#include "digest.h"
#include "errors.h"
#include "store.h"
#include "upstream_push.h"

#include <stddef.h>

struct cosign;

/* Load the private key of file for the configuration key kp (messages name
 * both): an unencrypted PEM private key (PKCS#8 "PRIVATE KEY" or SEC1 "EC
 * PRIVATE KEY") on the P-256 curve. RS_CONFIG when it is not one (no key,
 * encrypted, another algorithm or curve), RS_NOMEM. st is borrowed and must
 * outlive the object; NULL only checks the key (regslim check-config): such
 * an object signs bytes but keeps no .sig manifest. */
RS_MUST_CHECK enum rs_code cosign_new(struct cosign **out, const char *file, const char *kp, struct store *st,
                                      struct rs_err *err);
/* NULL is fine. */
void cosign_free(struct cosign *c);

/* The public key's identity, "sha256:<hex>" of its DER SubjectPublicKeyInfo
 * (what logs and the attestation name). Borrowed from c. */
const char *cosign_key_id(const struct cosign *c);

/* The base64 ECDSA-P256-SHA256 signature (ASN.1 DER) of buf[0..len). *out:
 * new NUL-terminated text (free()). RS_IO (OpenSSL failed), RS_NOMEM. */
RS_MUST_CHECK enum rs_code cosign_sign_bytes(struct cosign *c, const void *buf, size_t len, char **out,
                                             struct rs_err *err);

/* A blob (buf, len) held by repository name in the pushed area (uploaded
 * unless name holds it already); out receives its digest. Errors of the
 * store's uploads. */
RS_MUST_CHECK enum rs_code cosign_put_blob(struct store *st, const char *name, const void *buf, size_t len,
                                           char out[DIGEST_STR_SIZE], struct rs_err *err);

/* Make sure the `sha256-<hex>.sig` manifest of digest (a manifest or index
 * of the store's area: the cache for optimized images, the pushed area for
 * regslim's attestations) in repository name has a signature for identity
 * (a docker reference: "docker.io/library/alpine:3.19"); at most
 * RS_LIMIT_SIGNATURES_PER_DIGEST identities, the oldest goes first. The
 * manifest replaced by a new one leaves the referrers list. Strings
 * borrowed. RS_NOT_FOUND (digest left the cache), the store's errors,
 * RS_IO (signing failed), RS_NOMEM. */
RS_MUST_CHECK enum rs_code cosign_sign_manifest(struct cosign *c, enum store_area area, const char *name,
                                                const char *identity, const char *digest, struct rs_err *err);

/* The documents of a new cosign signature manifest holding one signature
 * (what cosign writes for a first signature of a digest). */
struct cosign_sig {
	char tag[80];           /* "sha256-<hex>.sig" of the signed digest */
	char *payload;          /* the simple-signing payload: the layer's blob */
	size_t payload_len;
	char *config;           /* the config blob, naming the payload as its diff_id */
	size_t config_len;
	char *manifest;         /* the OCI image manifest (artifactType, subject) */
	size_t manifest_len;
};

/* Sign subject (a manifest or index: media type, digest, size) for
 * identity (a docker reference) and make *out's documents, created (RFC
 * 3339; NULL: now) being the config's "created". out is zeroed by the
 * caller; cosign_sig_dispose also on error. RS_IO (signing failed),
 * RS_NOMEM. */
RS_MUST_CHECK enum rs_code cosign_sig_make(struct cosign *c, const char *identity,
                                           const struct cosigndoc_desc *subject, const char *created,
                                           struct cosign_sig *out, struct rs_err *err);
/* Release what s holds; a zeroed s is fine. */
void cosign_sig_dispose(struct cosign_sig *s);

/* Sign digest (a manifest or index that src reads) for identity and push
 * the signature to repo with up: the payload and config blobs, then the
 * manifest at tag `sha256-<hex>.sig` (its subject is digest, so a registry
 * with a referrers API lists it). A `.sig` the upstream had for digest is
 * replaced. All borrowed. Errors of src, cosign_sig_make and the push
 * client (RS_UPSTREAM naming the request), prefixed with the .sig's
 * reference. */
RS_MUST_CHECK enum rs_code cosign_push_signature(struct cosign *c, struct upstream_push *up,
                                                 const struct upstream_push_source *src, const char *repo,
                                                 const char *identity, const char *digest, struct rs_err *err);

/* Make a new ECDSA P-256 key pair in dir (created 0700 when missing):
 * cosign.key (unencrypted PKCS#8 PEM, mode 0600, never overwritten) and
 * cosign.pub (PEM public key, 0644). out_key / out_pub receive their paths
 * (cap bytes each). RS_IO (a file exists, cannot be written), RS_NOMEM. */
RS_MUST_CHECK enum rs_code cosign_keygen(const char *dir, char *out_key, char *out_pub, size_t cap,
                                         struct rs_err *err);

#endif
