/* image: the optimizer's image model on top of config/imagejson.h: media
 * type classes, validation of parsed manifests, indexes and configs against
 * each other (digest syntax, known layer media types, diff_id count), and
 * the OCI media types the optimizer writes.
 *
 * Pure functions over borrowed structs; no I/O, no allocation. */
#ifndef RS_OPTIMIZER_IMAGE_H
#define RS_OPTIMIZER_IMAGE_H

#include "codec.h"
#include "errors.h"
#include "imagejson.h"

#include <stdbool.h>

#define IMAGE_MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define IMAGE_MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define IMAGE_MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define IMAGE_MT_OCI_LAYER "application/vnd.oci.image.layer.v1.tar"
#define IMAGE_MT_OCI_LAYER_GZIP "application/vnd.oci.image.layer.v1.tar+gzip"
#define IMAGE_MT_OCI_LAYER_ZSTD "application/vnd.oci.image.layer.v1.tar+zstd"
#define IMAGE_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define IMAGE_MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define IMAGE_MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"
/* Docker schema 1, which the read side passes through but never makes. */
#define IMAGE_MT_DOCKER_V1 "application/vnd.docker.distribution.manifest.v1+json"
#define IMAGE_MT_DOCKER_V1_SIGNED "application/vnd.docker.distribution.manifest.v1+prettyjws"

/* Annotations the optimizer puts on what it writes. */
#define IMAGE_ANN_SOURCE "io.regslim.source.digest"
#define IMAGE_ANN_POLICY "io.regslim.policy.digest"
#define IMAGE_ANN_VERSION "io.regslim.optimizer.version"
#define IMAGE_ANN_REF_NAME "org.opencontainers.image.ref.name"

/* True for OCI image manifest and Docker schema2 manifest media types. */
bool image_is_manifest_type(const char *media_type);
/* True for OCI index and Docker manifest list media types. */
bool image_is_index_type(const char *media_type);

/* The OCI layer media type for a compression. */
const char *image_layer_type(enum codec_kind kind);

/* Check a parsed manifest: schemaVersion 2, a manifest media type (or
 * none), config and layer digests valid sha256, every layer media type one
 * codec_kind_from_media_type knows (RS_UNSUPPORTED otherwise), at least one
 * layer. what names the manifest in messages. */
RS_MUST_CHECK enum rs_code image_validate_manifest(const struct imagejson_manifest *m,
						   const char *what, struct rs_err *err);

/* Check a parsed index: every entry's digest is valid. */
RS_MUST_CHECK enum rs_code image_validate_index(const struct imagejson_index *idx, const char *what,
						struct rs_err *err);

/* Check a config against its manifest: one valid diff_id per layer, and
 * when history is present, as many non-empty history entries as layers
 * (otherwise *history_ok is false and the rewrite keeps history as is). */
RS_MUST_CHECK enum rs_code image_validate_config(const struct imagejson_config *c,
						 const struct imagejson_manifest *m, const char *what,
						 bool *history_ok, struct rs_err *err);

#endif
