/* sign: GPG simple signing of the images regslim serves (docs/signatures.md).
 *
 * - Signs, with the configured key (signatures.sign: gpg_home + gpg_key),
 *   every optimized manifest served for a tag: the manifest or index the
 *   client gets and, for an index, each of its manifests. One signature per
 *   (digest, identity), the identity being the reference the client pulls
 *   ("<upstream name>/<repository>:<tag>", what containers/image checks with
 *   a registries.conf mirror: the original reference). Signatures are
 *   documents of the store (STORE_DOC_SIGNATURES), made once and kept.
 * - Answers regslim's lookaside (GET /sigstore/<repository>@sha256=<hex>/
 *   signature-<n>): its own signatures of a digest, else the publisher's,
 *   proxied from the lookaside of the verify rule matching the repository.
 * - Verifies originals before they are optimized (signatures.verify): the
 *   publisher's GPG signatures from the rule's lookaside (file:// or
 *   http(s)://) and from the upstream's signature extension when it offers
 *   one (X-Registry-Supports-Signatures), checked with GPGME against the
 *   rule's keyring (imported into a private GnuPG home in the store's
 *   scratch area); and the publisher's cosign signatures in the upstream
 *   (cosign_verify.h: the sha256-<hex>.sig tag and referrers, ECDSA P-256
 *   keys of cosign_public_keys); then the signed digest and the identity
 *   (sigpayload_check). Either kind verified is enough.
 *
 * It uses GPGME (gpg as engine), OpenSSL (cosign_verify.c), the store
 * (store.h), the upstream client (upstream.h) and the transfer core for
 * http(s) lookasides (xfer.h); never HTTP replies. Keys and signatures are
 * never logged, only their fingerprints. The cosign signing key
 * (signatures.sign.cosign_key_file) is loaded here and used by cosign.c and
 * attest.c; the push gate's optimized image gets its cosign signature pushed
 * upstream beside it (sign_pushed). Thread-safe: one GPGME context per operation. */
#ifndef RS_PROXY_SIGN_H
#define RS_PROXY_SIGN_H

#include "config.h"
#include "digest.h"
#include "errors.h"
#include "store.h"
#include "upstream.h"
#include "upstream_push.h"

#include <stdbool.h>
#include <stddef.h>

struct sign;
struct cosign;

/* What verified an original (sign_verify_original), for the attestation
 * (attest.h) that links an optimized image to it. Either part is set. */
struct sign_verified {
	/* GPG simple signing: the key (fingerprint) that made the good
	 * signature, and which signature of the lookaside it was */
	bool gpg;
	char gpg_fpr[41];
	unsigned gpg_index; /* signature-<n>, or the n-th of the upstream's signature extension */
	const char *gpg_source; /* the rule's lookaside (borrowed from the configuration), or
	                           SIGN_SOURCE_EXTENSION */
	/* cosign (cosign_verify.c): the public key ("sha256:<hex>" of its DER)
	 * and the signature manifest that verified */
	bool cosign;
	char cosign_key[DIGEST_STR_SIZE];
	char cosign_signature[DIGEST_STR_SIZE];
	const char *cosign_source; /* SIGN_SOURCE_SIG_TAG or SIGN_SOURCE_REFERRER (static) */
};
#define SIGN_SOURCE_EXTENSION "the upstream's signature extension"
#define SIGN_SOURCE_SIG_TAG "tag"
#define SIGN_SOURCE_REFERRER "referrer"

/* Whether tag names a signature, attestation or SBOM of a digest in
 * cosign's tag scheme ("sha256-<64 hex>.sig", ".att", ".sbom") or the
 * referrers tag scheme ("sha256-<64 hex>"): such tags are served as the
 * upstream has them, never optimized, verified or rewritten. */
bool sign_passthrough_tag(const char *tag);

/* Set up what cfg->signatures asks for: the signing key must be a secret key
 * of gpg_home (RS_CONFIG naming the key path when not), every gpg_keyring
 * is imported (RS_CONFIG when it holds no key). cfg and st are borrowed and
 * must outlive the object. A configuration without a signatures section
 * gives an object that signs and verifies nothing. RS_IO, RS_NOMEM. */
RS_MUST_CHECK enum rs_code sign_new(struct sign **out, const struct rs_config *cfg, struct store *st,
                                    struct rs_err *err);
/* Release s and the scratch homes it made. NULL is fine. */
void sign_free(struct sign *s);

/* Whether optimized images are signed (signatures.sign.gpg_key set). */
bool sign_signs(const struct sign *s);

/* The cosign signing key (signatures.sign.cosign_key_file), or NULL when
 * none is configured. Borrowed from s. */
struct cosign *sign_cosign(const struct sign *s);

/* The manifests an index lists (not an index: none), for signing each
 * platform's manifest: *out new (free()), *out_n entries. digest must be in
 * the store's cache. RS_NOT_FOUND, RS_BAD_INPUT, RS_NOMEM. */
RS_MUST_CHECK enum rs_code sign_index_manifests(struct sign *s, const char *digest, char (**out)[DIGEST_STR_SIZE],
                                                size_t *out_n, struct rs_err *err);

/* A GPG simple-signing signature of one manifest digest for identity, in
 * the lookaside of repo (as sign_image makes them), unless it has one. No-op
 * when no GPG key is configured. Errors of sign_image. */
RS_MUST_CHECK enum rs_code sign_gpg_manifest(struct sign *s, const char *repo, const char *identity,
                                             const char *digest, struct rs_err *err);

/* Make sure digest (a manifest or index of the store's cache) and, for an
 * index, each manifest it lists carry a signature for identity
 * "<upstream>/<repo>:<tag>". Strings borrowed. RS_IO / RS_UPSTREAM (gpg
 * failed), RS_NOT_FOUND (a manifest left the store), RS_NOMEM. */
RS_MUST_CHECK enum rs_code sign_image(struct sign *s, const char *upstream, const char *repo, const char *tag,
                                      const char *digest, struct rs_err *err);

/* Signature n (1-based) of (repo, digest) for the lookaside: regslim's own
 * when it signed the digest, else the publisher's from the lookaside of the
 * verify rule of (upstream, repo). *out: new buffer (free()).
 * RS_NOT_FOUND when there is no such signature, RS_UPSTREAM (the
 * publisher's lookaside failed), RS_NOMEM. */
RS_MUST_CHECK enum rs_code sign_lookaside_get(struct sign *s, const char *upstream, const char *repo,
                                              const char *digest, unsigned n, char **out, size_t *out_len,
                                              struct rs_err *err);

/* Verify the original digest of (upstream, repo), pulled as tag (NULL for a
 * pull by digest), under rule, u being that upstream's client (borrowed):
 * RS_OK when one of the publisher's signatures verifies and names digest
 * and the reference: a GPG signature (rule's gpg_keyring) from the lookaside
 * or the upstream's signature extension, or a cosign signature (rule's
 * cosign_public_keys) from the upstream's sha256-<hex>.sig tag or
 * referrers; either kind is enough. *out (may be NULL) then says which
 * signature and key. RS_POLICY with the reason otherwise ("no signature of
 * sha256:.. in <lookaside>", "signature 1 of sha256:..: <why>", "cosign:
 * ..."); RS_UPSTREAM when a source cannot be read; RS_NOMEM. A success is
 * remembered (with *out) for RS_LIMIT_VERIFIED_TTL_S per (rule, repository,
 * tag, digest); failures are checked again at every call. */
RS_MUST_CHECK enum rs_code sign_verify_original(struct sign *s, const struct rs_verify_rule *rule,
                                                struct upstream *u, const char *upstream, const char *repo,
                                                const char *tag, const char *digest, struct sign_verified *out,
                                                struct rs_err *err);

/* Sign an optimized image that the push gate sends upstream (gate.h
 * gate_sign_fn), before it is pushed: digest and each manifest of
 * children[0..n) (an index's platform manifests) get, for identity
 * "<upc->name>/<repo>:<tag>", a GPG signature (gpg_key set), kept like
 * sign_image's and served by regslim's lookaside, and a cosign signature
 * (cosign_key_file set; cosign.h cosign_push_signature), pushed to the
 * upstream with up, the gate's push client to upc: the `sha256-<hex>.sig`
 * manifest of each, in repo, with its blobs. src reads the optimized
 * image's manifests (their media type and size are the .sig's subject).
 * All borrowed; up and src may be NULL when no cosign key is configured.
 * Nothing to do when no signing key is configured. Errors as sign_image,
 * and those of cosign_push_signature (RS_UPSTREAM: the push failed). */
RS_MUST_CHECK enum rs_code sign_pushed(struct sign *s, const struct rs_upstream_config *upc, struct upstream_push *up,
                                       const struct upstream_push_source *src, const char *repo, const char *tag,
                                       const char *digest, const char (*children)[DIGEST_STR_SIZE], size_t n,
                                       struct rs_err *err);

/* Make a new unprotected OpenPGP signing key (for a service: no passphrase,
 * no expiry) in the GnuPG home dir (created 0700 if missing) for uid;
 * out receives its fingerprint (41 bytes). RS_IO (gpg failed), RS_NOMEM. */
RS_MUST_CHECK enum rs_code sign_keygen_gpg(const char *dir, const char *uid, char out[41], struct rs_err *err);

#endif
