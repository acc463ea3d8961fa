/* sigpayload: the JSON side of image signatures, without any cryptography.
 *
 * 1. The containers/image "simple signing" payload (the "atomic container
 *    signature" document that an OpenPGP signature wraps):
 *      {"critical": {"identity": {"docker-reference": REF},
 *                    "image": {"docker-manifest-digest": DIGEST},
 *                    "type": "atomic container signature"},
 *       "optional": {"creator": ..., "timestamp": ...}}
 *    made for regslim's own signatures, and checked (type, digest, identity)
 *    for the publisher's signatures that proxy/sign/ has verified.
 * 2. The signature list document regslim keeps per (repository, manifest
 *    digest) in its store: {"signatures": [{"identity": REF, "signature":
 *    BASE64}, ...]}, served one by one as the lookaside's signature-<n>.
 *
 * It does not sign, verify, fetch or store anything (proxy/sign/ does, with
 * GPGME and store.h). jansson stays inside config/: callers see plain C. */
#ifndef RS_CONFIG_SIGPAYLOAD_H
#define RS_CONFIG_SIGPAYLOAD_H

#include "errors.h"

#include <stddef.h>
#include <stdint.h>

#define SIGPAYLOAD_TYPE "atomic container signature"
/* critical.type of the same document in a cosign signature (the payload
 * layer of a sha256-<hex>.sig manifest or of a referrer). */
#define SIGPAYLOAD_COSIGN_TYPE "cosign container image signature"

/* The simple-signing payload for identity (a full docker reference with a
 * tag: "docker.io/library/alpine:3.19") and digest ("sha256:<hex>"), creator
 * and timestamp in "optional". *out: a new buffer (free()), not
 * NUL-counted in *out_len. RS_NOMEM. */
RS_MUST_CHECK enum rs_code sigpayload_make(char **out, size_t *out_len, const char *identity, const char *digest,
                                           const char *creator, int64_t timestamp, struct rs_err *err);

/* Check a verified payload: critical.type is SIGPAYLOAD_TYPE, the signed
 * digest is digest, and the identity names repository (a full name without
 * tag or digest: "docker.io/library/alpine") and, when tag is not NULL and
 * the identity has a tag, that tag; an identity without tag (or with a
 * digest) matches every tag of the repository, as containers/image's
 * matchRepoDigestOrExact does for digests. RS_POLICY with the reason
 * ("signed digest sha256:.. is not sha256:..", "identity x is not y"),
 * RS_BAD_INPUT for a payload that is not such a document, RS_NOMEM. */
RS_MUST_CHECK enum rs_code sigpayload_check(const char *payload, size_t len, const char *digest,
                                            const char *repository, const char *tag, struct rs_err *err);
/* sigpayload_check with critical.type required to be type
 * (SIGPAYLOAD_COSIGN_TYPE for a cosign payload). */
RS_MUST_CHECK enum rs_code sigpayload_check_type(const char *payload, size_t len, const char *type,
                                                 const char *digest, const char *repository, const char *tag,
                                                 struct rs_err *err);

/* Decode standard base64 (padded, as cosign's signature annotation and the
 * signature extension's "content" are). *out: new buffer (free()).
 * RS_BAD_INPUT for text that is not such base64, RS_NOMEM. */
RS_MUST_CHECK enum rs_code sigpayload_base64_decode(unsigned char **out, size_t *out_len, const char *s,
                                                    struct rs_err *err);

struct sigdoc_entry {
	char *identity;
	unsigned char *signature; /* the OpenPGP message, binary */
	size_t signature_len;
};

/* A signature list (caller embeds; zeroed = empty). */
struct sigdoc {
	struct sigdoc_entry *v;
	size_t n;
};

/* Parse a stored list (NUL-terminated text of len bytes) into doc, which
 * must be zeroed. RS_BAD_INPUT for a document that is not such a list,
 * RS_NOMEM. */
RS_MUST_CHECK enum rs_code sigdoc_parse(struct sigdoc *doc, const char *text, size_t len, struct rs_err *err);
/* Index of the entry for identity, or -1. */
long sigdoc_find(const struct sigdoc *doc, const char *identity);
/* Append (copies both); when the list already holds max entries the oldest
 * is dropped first. RS_NOMEM. */
RS_MUST_CHECK enum rs_code sigdoc_add(struct sigdoc *doc, const char *identity, const void *sig, size_t sig_len,
                                      size_t max, struct rs_err *err);
/* Parse the answer of a registry's signature extension (GET
 * /extensions/v2/<repository>/signatures/<digest>, offered by registries
 * that send X-Registry-Supports-Signatures: 1; the OpenShift / atomic
 * format): {"signatures": [{"version": 2, "type": "atomic", "name": ...,
 * "content": BASE64}, ...]} into doc (zeroed), each entry's identity being
 * its name and its signature the decoded content. Entries of another type
 * are skipped; at most max are taken. RS_BAD_INPUT, RS_NOMEM. */
RS_MUST_CHECK enum rs_code sigdoc_parse_extension(struct sigdoc *doc, const char *text, size_t len, size_t max,
                                                  struct rs_err *err);
/* The list as JSON text: *out a new NUL-terminated buffer (free()). RS_NOMEM. */
RS_MUST_CHECK enum rs_code sigdoc_dump(const struct sigdoc *doc, char **out, size_t *out_len, struct rs_err *err);
void sigdoc_dispose(struct sigdoc *doc);

#endif
