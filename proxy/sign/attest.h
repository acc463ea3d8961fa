/* attest: what regslim adds to an optimized tag beyond its GPG signatures
 * (docs/signatures.md "cosign signatures", "The attestation"):
 * - with a cosign key, the cosign signature manifests (cosign.h) of the
 *   optimized manifest and, for an index, of each manifest it lists;
 * - the attestation linking the optimized image to its original: an OCI
 *   manifest in the repository the client pulls from, artifactType
 *   COSIGNDOC_ATTEST_TYPE, subject = the optimized manifest (so the
 *   referrers API lists it), config the OCI empty blob, one layer: the JSON
 *   record (cosigndoc_attestation: original digest, the signatures of the
 *   original that verified and their keys, policy digest, optimizer version,
 *   report digest). It is signed with the cosign key (the layer's
 *   dev.cosignproject.cosign/signature annotation, over the layer's bytes)
 *   and the attestation manifest gets its own `sha256-<hex>.sig` (so `cosign
 *   verify` of the attestation's digest works), and with the GPG key (a
 *   simple-signing signature of the attestation manifest's digest in
 *   regslim's lookaside); both with identity "<upstream>/<repository>".
 *   One per (repository name, optimized digest),
 *   made at the first pull that serves it and kept (pushed area of the
 *   store: never evicted).
 *
 * It uses sign.h (the GPG key, the verification result), cosign.h and
 * store.h; never HTTP. Thread-safe. */
#ifndef RS_PROXY_ATTEST_H
#define RS_PROXY_ATTEST_H

#include "errors.h"
#include "sign.h"
#include "store.h"

/* One optimized tag pull (strings borrowed). */
struct attest_request {
	struct store *st;
	const char *upstream;         /* the upstream's name: "docker.io" */
	const char *repo;             /* its repository: "library/alpine" (the GPG lookaside's) */
	const char *name;             /* the repository the client pulls from (cosign manifests, referrers) */
	const char *tag;
	const char *optimized_digest; /* in the store's cache */
	const char *original_digest;
	const char *verify_rule;              /* "signatures.verify[<i>]"; NULL when no rule applied */
	const struct sign_verified *verified; /* what verified the original; NULL when no rule applied */
	const char *policy_digest;
	const char *report_digest; /* NULL when the optimization left no report */
};

/* Make (once) the cosign signatures and the attestation of rq. No-op when
 * neither a cosign nor a GPG signing key is configured. RS_NOT_FOUND (the
 * optimized manifest left the cache), the store's errors, RS_IO (signing
 * failed), RS_BAD_INPUT (a reference too long), RS_NOMEM. */
RS_MUST_CHECK enum rs_code attest_image(struct sign *s, const struct attest_request *rq, struct rs_err *err);

#endif
