/* imagejson: OCI / Docker image JSON documents (manifest, index, image
 * config, docker-archive manifest.json) <-> plain C structs.
 *
 * It lives in config/ because only config/ may include jansson (STYLE.md);
 * the optimizer's image model (optimizer/image.c) validates what these
 * parsers return (digests, media types, counts) and builds what the writers
 * serialise. Parsing checks JSON syntax, duplicate keys and field types and
 * names the offending key path ("manifest: layers[2].size: expected a
 * non-negative integer, got a string"); it does not judge media types.
 * Writers emit compact JSON with a fixed key order and annotations sorted by
 * key, so the same struct always gives the same bytes.
 *
 * Every struct owns its strings; the _dispose functions release them and
 * zero the struct (safe on a zeroed struct). All errors are RS_BAD_INPUT
 * (with the document name given by the caller as prefix) or RS_NOMEM. */
#ifndef RS_CONFIG_IMAGEJSON_H
#define RS_CONFIG_IMAGEJSON_H

#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct imagejson_kv {
	char *key;
	char *value;
};

struct imagejson_descriptor {
	char *media_type; /* NULL when absent */
	char *digest;
	uint64_t size;
	/* platform (index entries); NULL when absent */
	char *os, *architecture, *variant;
	struct imagejson_kv *annotations;
	size_t annotation_count;
	char *artifact_type; /* artifactType (image-spec v1.1); NULL when absent */
};

enum imagejson_kind {
	IMAGEJSON_MANIFEST = 0, /* OCI image manifest or Docker schema2 manifest */
	IMAGEJSON_INDEX,        /* OCI index or Docker manifest list */
};

struct imagejson_manifest {
	int schema_version;
	char *media_type; /* NULL when the document has no mediaType field */
	struct imagejson_descriptor config;
	struct imagejson_descriptor *layers;
	size_t layer_count;
	struct imagejson_kv *annotations;
	size_t annotation_count;
	/* image-spec v1.1: artifactType and subject (the manifest this one refers
	 * to, distribution-spec "Listing Referrers"); NULL when absent */
	char *artifact_type;
	struct imagejson_descriptor *subject;
};

struct imagejson_index {
	int schema_version;
	char *media_type; /* NULL when absent */
	struct imagejson_descriptor *manifests;
	size_t manifest_count;
	struct imagejson_kv *annotations;
	size_t annotation_count;
	char *artifact_type;                  /* NULL when absent */
	struct imagejson_descriptor *subject; /* NULL when absent */
};

struct imagejson_history {
	char *created, *created_by, *author, *comment; /* NULL when absent */
	bool empty_layer;
};

struct imagejson_config {
	char *os, *architecture, *variant, *created; /* NULL when absent */
	char **diff_ids;
	size_t diff_id_count;
	struct imagejson_history *history;
	size_t history_count;
	bool has_history; /* the document has a "history" key */
};

/* One image of a docker-archive manifest.json. */
struct imagejson_archive_image {
	char *config;   /* member name of the config JSON */
	char **layers;  /* member names of the layer tars, bottom first */
	size_t layer_count;
	char **repo_tags;
	size_t repo_tag_count;
};

struct imagejson_archive {
	struct imagejson_archive_image *images;
	size_t image_count;
};

/* Which kind of document buf is: its mediaType when present, else an index
 * when it has "manifests", a manifest when it has "layers" or "config".
 * what names the document in messages ("manifest sha256:ab.."). */
RS_MUST_CHECK enum rs_code imagejson_sniff(enum imagejson_kind *out, const char *buf, size_t len,
					   const char *what, struct rs_err *err);

RS_MUST_CHECK enum rs_code imagejson_parse_manifest(struct imagejson_manifest *out, const char *buf,
						    size_t len, const char *what, struct rs_err *err);
RS_MUST_CHECK enum rs_code imagejson_parse_index(struct imagejson_index *out, const char *buf,
						 size_t len, const char *what, struct rs_err *err);
RS_MUST_CHECK enum rs_code imagejson_parse_config(struct imagejson_config *out, const char *buf,
						  size_t len, const char *what, struct rs_err *err);
RS_MUST_CHECK enum rs_code imagejson_parse_archive(struct imagejson_archive *out, const char *buf,
						   size_t len, const char *what, struct rs_err *err);

/* Serialise m / idx as compact JSON: schemaVersion, mediaType, artifactType,
 * config (or manifests), layers, subject, annotations; descriptors as
 * mediaType, digest, size, platform, artifactType, annotations. Fields that
 * are NULL / empty are left out. *out is
 * a new NUL-terminated string (free()), *len_out its length. RS_NOMEM. */
RS_MUST_CHECK enum rs_code imagejson_write_manifest(char **out, size_t *len_out,
						    const struct imagejson_manifest *m,
						    struct rs_err *err);
RS_MUST_CHECK enum rs_code imagejson_write_index(char **out, size_t *len_out,
						 const struct imagejson_index *idx, struct rs_err *err);

/* Rewrite a config document: rootfs becomes {"type":"layers","diff_ids":
 * diff_ids}; history is replaced by hist (written even when the input had
 * none, if history_count > 0). Every other key is kept in its order. *out is
 * a new string (free()). RS_BAD_INPUT (not a JSON object), RS_NOMEM. */
RS_MUST_CHECK enum rs_code imagejson_rewrite_config(char **out, size_t *len_out, const char *in,
						    size_t in_len, char *const *diff_ids,
						    size_t diff_id_count,
						    const struct imagejson_history *hist,
						    size_t history_count, const char *what,
						    struct rs_err *err);

void imagejson_descriptor_dispose(struct imagejson_descriptor *d);
void imagejson_manifest_dispose(struct imagejson_manifest *m);
void imagejson_index_dispose(struct imagejson_index *idx);
void imagejson_config_dispose(struct imagejson_config *c);
void imagejson_archive_dispose(struct imagejson_archive *a);
void imagejson_kv_free(struct imagejson_kv *kv, size_t n);

/* Deep copy of a descriptor into out (disposed first by the caller). RS_NOMEM. */
RS_MUST_CHECK enum rs_code imagejson_descriptor_copy(struct imagejson_descriptor *out,
						     const struct imagejson_descriptor *in,
						     struct rs_err *err);

/* Set (replace or add) annotation key=value in *kv / *n. RS_NOMEM. */
RS_MUST_CHECK enum rs_code imagejson_kv_set(struct imagejson_kv **kv, size_t *n, const char *key,
					    const char *value, struct rs_err *err);

/* Value of annotation key, or NULL (borrowed). */
const char *imagejson_kv_get(const struct imagejson_kv *kv, size_t n, const char *key);

#endif
