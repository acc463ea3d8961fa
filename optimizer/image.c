/* image: validation of image documents parsed by config/imagejson.c and
 * the media types the optimizer writes. See image.h. */
#include "image.h"
#include "digest.h"

#include <stdio.h>
#include <string.h>

bool image_is_manifest_type(const char *mt)
{
	return mt && (strcmp(mt, IMAGE_MT_OCI_MANIFEST) == 0 || strcmp(mt, IMAGE_MT_DOCKER_MANIFEST) == 0);
}

bool image_is_index_type(const char *mt)
{
	return mt && (strcmp(mt, IMAGE_MT_OCI_INDEX) == 0 || strcmp(mt, IMAGE_MT_DOCKER_LIST) == 0);
}

const char *image_layer_type(enum codec_kind kind)
{
	switch (kind) {
	case CODEC_GZIP: return IMAGE_MT_OCI_LAYER_GZIP;
	case CODEC_ZSTD: return IMAGE_MT_OCI_LAYER_ZSTD;
	case CODEC_NONE: break;
	}
	return IMAGE_MT_OCI_LAYER;
}

static enum rs_code check_digest(const char *d, const char *what, const char *field, struct rs_err *err)
{
	enum rs_code rc = digest_parse(d, err);
	if (rc != RS_OK)
		rs_err_prefix(err, "%s: %s: ", what, field);
	return rc;
}

enum rs_code image_validate_manifest(const struct imagejson_manifest *m, const char *what,
				     struct rs_err *err)
{
	if (m->media_type && !image_is_manifest_type(m->media_type))
		return rs_err_set(err, RS_UNSUPPORTED, "%s: unsupported manifest media type %s", what,
				  m->media_type);
	if (m->config.media_type && strcmp(m->config.media_type, IMAGE_MT_OCI_CONFIG) != 0 &&
	    strcmp(m->config.media_type, IMAGE_MT_DOCKER_CONFIG) != 0)
		return rs_err_set(err, RS_UNSUPPORTED, "%s: config has media type %s, not an image config", what,
				  m->config.media_type);
	enum rs_code rc = check_digest(m->config.digest, what, "config.digest", err);
	if (rc != RS_OK)
		return rc;
	if (m->layer_count == 0)
		return rs_err_set(err, RS_BAD_INPUT, "%s: has no layers", what);
	for (size_t i = 0; i < m->layer_count; i++) {
		char field[48];
		snprintf(field, sizeof(field), "layers[%zu].digest", i);
		rc = check_digest(m->layers[i].digest, what, field, err);
		if (rc != RS_OK)
			return rc;
		enum codec_kind k;
		rc = codec_kind_from_media_type(&k, m->layers[i].media_type, err);
		if (rc != RS_OK) {
			rs_err_prefix(err, "%s: layers[%zu]: ", what, i);
			return rc;
		}
	}
	return RS_OK;
}

enum rs_code image_validate_index(const struct imagejson_index *idx, const char *what, struct rs_err *err)
{
	if (idx->media_type && !image_is_index_type(idx->media_type))
		return rs_err_set(err, RS_UNSUPPORTED, "%s: unsupported index media type %s", what, idx->media_type);
	for (size_t i = 0; i < idx->manifest_count; i++) {
		char field[48];
		snprintf(field, sizeof(field), "manifests[%zu].digest", i);
		enum rs_code rc = check_digest(idx->manifests[i].digest, what, field, err);
		if (rc != RS_OK)
			return rc;
	}
	return RS_OK;
}

enum rs_code image_validate_config(const struct imagejson_config *c, const struct imagejson_manifest *m,
				   const char *what, bool *history_ok, struct rs_err *err)
{
	*history_ok = false;
	if (c->diff_id_count != m->layer_count)
		return rs_err_set(err, RS_BAD_INPUT, "%s: %zu diff_ids for %zu layers", what, c->diff_id_count,
				  m->layer_count);
	for (size_t i = 0; i < c->diff_id_count; i++) {
		char field[48];
		snprintf(field, sizeof(field), "rootfs.diff_ids[%zu]", i);
		enum rs_code rc = check_digest(c->diff_ids[i], what, field, err);
		if (rc != RS_OK)
			return rc;
	}
	size_t nonempty = 0;
	for (size_t i = 0; i < c->history_count; i++)
		if (!c->history[i].empty_layer)
			nonempty++;
	*history_ok = c->has_history && nonempty == m->layer_count;
	return RS_OK;
}
