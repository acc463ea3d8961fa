/* cosigndoc: the JSON documents of regslim's cosign-format signatures and of
 * its optimization attestation, without any cryptography (docs/signatures.md).
 *
 * 1. The cosign simple-signing payload, byte for byte what cosign writes
 *    (sigstore's payload.Cosign through Go's encoding/json):
 *      {"critical":{"identity":{"docker-reference":REF},
 *                   "image":{"docker-manifest-digest":DIGEST},
 *                   "type":"cosign container image signature"},"optional":null}
 *    It carries no timestamp, so the same (REF, DIGEST) always gives the
 *    same bytes and the same blob digest.
 * 2. The image config of a `sha256-<hex>.sig` manifest, as cosign's
 *    go-containerregistry empty image with one layer per signature:
 *      {"architecture":"","created":T,"history":[{"created":"0001-01-01T00:00:00Z"},..],
 *       "os":"","rootfs":{"type":"layers","diff_ids":[..]},"config":{}}
 * 3. The attestation linking an optimized image to its original (the blob of
 *    media type COSIGNDOC_ATTEST_TYPE).
 * 4. The OCI image manifests that carry them (layers with annotations, an
 *    artifactType and a subject), written by imagejson.
 *
 * It does not sign, store or serve anything: proxy/sign/ (cosign.c,
 * attest.c) does, with OpenSSL and store.h. jansson stays in config/. */
#ifndef RS_CONFIG_COSIGNDOC_H
#define RS_CONFIG_COSIGNDOC_H

#include "errors.h"
#include "imagejson.h"

#include <stddef.h>
#include <stdint.h>

#define COSIGNDOC_PAYLOAD_TYPE "cosign container image signature"
#define COSIGNDOC_SIMPLESIGNING_MT "application/vnd.dev.cosign.simplesigning.v1+json"
#define COSIGNDOC_SIGNATURE_ANNOTATION "dev.cosignproject.cosign/signature"
/* the referrers form's artifactType of a cosign signature (cosign's OCI 1.1 mode) */
#define COSIGNDOC_SIG_ARTIFACT_TYPE "application/vnd.dev.cosign.artifact.sig.v1+json"
#define COSIGNDOC_CONFIG_MT "application/vnd.oci.image.config.v1+json"
#define COSIGNDOC_MANIFEST_MT "application/vnd.oci.image.manifest.v1+json"
/* the attestation: its manifest's artifactType and its blob's media type */
#define COSIGNDOC_ATTEST_TYPE "application/vnd.regslim.optimization.v1+json"
/* the OCI empty descriptor's blob ("{}") */
#define COSIGNDOC_EMPTY_MT "application/vnd.oci.empty.v1+json"
#define COSIGNDOC_EMPTY_JSON "{}"

/* The cosign payload for identity (a docker reference, with or without a
 * tag) and digest ("sha256:<hex>"). *out: a new NUL-terminated buffer
 * (free()), *out_len its length. RS_NOMEM. */
RS_MUST_CHECK enum rs_code cosigndoc_payload(char **out, size_t *out_len, const char *identity, const char *digest,
                                             struct rs_err *err);

/* The identity and digest a cosign payload names (new strings, free()),
 * after checking its type. RS_BAD_INPUT when it is not such a payload,
 * RS_NOMEM. */
RS_MUST_CHECK enum rs_code cosigndoc_payload_parse(char **identity, char **digest, const char *payload, size_t len,
                                                   struct rs_err *err);

/* The config of a .sig manifest whose layers are diff_ids[0..n) (their
 * digests: the blobs are not compressed), created (RFC 3339) as its
 * "created". *out as for cosigndoc_payload. RS_NOMEM. */
RS_MUST_CHECK enum rs_code cosigndoc_sig_config(char **out, size_t *out_len, const char *const *diff_ids, size_t n,
                                                const char *created, struct rs_err *err);

/* One verified signature of the original, as the attestation records it. */
struct cosigndoc_verified {
	const char *method;    /* "gpg" or "cosign" */
	const char *key;       /* the key: an OpenPGP fingerprint, a cosign public key's "sha256:<hex>" */
	const char *signature; /* which signature: "signature-<n>" of a lookaside, a .sig manifest digest */
	const char *source;    /* where it was read: the lookaside URL, the upstream; may be NULL */
};

/* What the attestation says (all strings borrowed; NULL leaves the field
 * null in the document). */
struct cosigndoc_attestation {
	const char *reference;            /* what the client pulled: "docker.io/library/alpine:3.19" */
	const char *optimized_digest;     /* the subject */
	const char *optimized_media_type;
	const char *original_digest;      /* the upstream's manifest it was made from */
	const char *verify_rule;          /* "signatures.verify[<i>]", NULL when no rule applied */
	const struct cosigndoc_verified *verified;
	size_t verified_count;
	const char *policy_digest;        /* the optimize policy's digest (the variant's) */
	const char *optimizer_version;    /* "regslim <version>" */
	const char *report_digest;        /* sha256 of the optimization report document */
	const char *created;              /* RFC 3339 */
};

/* The attestation blob:
 *   {"type":"regslim optimization","version":1,"reference":..,
 *    "optimized":{"digest":..,"mediaType":..},"original":{"digest":..},
 *    "verification":{"rule":..,"verified":[{"method","key","signature","source"}..]},
 *    "policy_digest":..,"optimizer_version":..,"report_digest":..,"created":..}
 * *out as for cosigndoc_payload. RS_NOMEM. */
RS_MUST_CHECK enum rs_code cosigndoc_attestation(char **out, size_t *out_len, const struct cosigndoc_attestation *a,
                                                 struct rs_err *err);

/* A descriptor of the manifests below (strings borrowed). */
struct cosigndoc_desc {
	const char *media_type;
	const char *digest;
	uint64_t size;
	const char *signature; /* the layer's COSIGNDOC_SIGNATURE_ANNOTATION; NULL for none */
	/* more annotations, after the signature, in their order (a kept
	 * signature layer's own: its signature, bundle, certificate); a second
	 * COSIGNDOC_SIGNATURE_ANNOTATION beside signature is left out */
	const struct imagejson_kv *annotations;
	size_t annotation_count;
};

/* An OCI image manifest: artifact_type (NULL for none), config, layers[0..n),
 * subject (NULL for none), created as its org.opencontainers.image.created
 * annotation (NULL for none). *out as for cosigndoc_payload. RS_NOMEM. */
RS_MUST_CHECK enum rs_code cosigndoc_manifest(char **out, size_t *out_len, const char *artifact_type,
                                              const struct cosigndoc_desc *config,
                                              const struct cosigndoc_desc *layers, size_t n,
                                              const struct cosigndoc_desc *subject, const char *created,
                                              struct rs_err *err);

#endif
