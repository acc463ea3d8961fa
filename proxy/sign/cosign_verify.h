/* cosign_verify: verification of a publisher's cosign signatures of an
 * original image (docs/signatures.md "Verifying originals").
 *
 * A cosign signature lives in the image's registry: a manifest whose layers
 * have the media type application/vnd.dev.cosign.simplesigning.v1+json; each
 * such layer is a simple-signing payload (sigpayload.h, type "cosign
 * container image signature") and carries its ECDSA signature, base64 DER
 * over SHA-256 of the payload, in the annotation
 * dev.cosignproject.cosign/signature. The manifest is found at the tag
 * sha256-<hex>.sig of the signed digest, or among the digest's referrers
 * (the referrers API, else the referrers tag sha256-<hex>). This module
 * fetches both through the upstream client (upstream.h; every document and
 * blob checked against its digest), checks each signature with OpenSSL
 * against each configured public key (ECDSA P-256 PEM files: several keys
 * for rotation), then the payload's digest and identity.
 *
 * It does not sign (cosign.c does), cache results (sign.c does) or log key
 * material: keys are named by "sha256:<hex>" of their DER encoding. */
#ifndef RS_PROXY_COSIGN_VERIFY_H
#define RS_PROXY_COSIGN_VERIFY_H

#include "errors.h"
#include "sign.h"
#include "upstream.h"

#include <stddef.h>

struct cosign_verify_keys;

/* Load the PEM public keys files[0..n): each must be an ECDSA P-256 key
 * (RS_CONFIG naming kp[i] and the file otherwise). Each key's id is logged
 * at INFO. *out: new, cosign_verify_keys_free(). RS_NOMEM. */
RS_MUST_CHECK enum rs_code cosign_verify_keys_load(struct cosign_verify_keys **out, char *const *files, size_t n,
                                                   const char *kp, struct rs_err *err);
void cosign_verify_keys_free(struct cosign_verify_keys *k);

/* Verify digest of repo in upstream u (named upstream: the identity's
 * registry part) as pulled by tag (NULL: any tag): RS_OK when a cosign
 * signature found at the sha256-<hex>.sig tag or among the referrers is by
 * one of k's keys and its payload names digest and the repository (and
 * the tag, when it names one); *out (may be NULL) says which. RS_POLICY
 * with the reason otherwise; RS_UPSTREAM when the upstream cannot answer;
 * RS_NOMEM. For docker.io, "index.docker.io/<repo>" (what cosign writes)
 * names the repository too. */
RS_MUST_CHECK enum rs_code cosign_verify_original(const struct cosign_verify_keys *k, struct upstream *u,
                                                  const char *upstream, const char *repo, const char *tag,
                                                  const char *digest, struct sign_verified *out, struct rs_err *err);

#endif
