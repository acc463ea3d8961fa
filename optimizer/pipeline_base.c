/* pipeline_base: where an image's base ends, for squash keep-base
 * (pipeline_int.h): the bottom layers named by the policy's base_layers, or
 * else those the image shares with its base image or with another image of
 * the source layout. Reads documents through layout.c only. */
#include "pipeline_int.h"

#include "rs_limits.h"

#include <stdlib.h>
#include <string.h>

static bool in_list(char *const *list, size_t n, const char *d)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i], d) == 0)
			return true;
	return false;
}

/* How many bottom layers of m (by digest) the manifest in buf also has. */
static size_t common_prefix(const struct imagejson_manifest *m, const char *buf, size_t len, const char *what)
{
	struct imagejson_manifest other;
	struct rs_err e2;
	if (imagejson_parse_manifest(&other, buf, len, what, &e2) != RS_OK)
		return 0;
	size_t k = 0;
	while (k < m->layer_count && k < other.layer_count && strcmp(m->layers[k].digest, other.layers[k].digest) == 0)
		k++;
	imagejson_manifest_dispose(&other);
	return k;
}

/* The manifest (or, for an index, each manifest) of the source layout with
 * this digest: the largest common prefix with m; 0 when it is not there. */
static size_t prefix_with_blob(struct run *r, const struct imagejson_manifest *m, const char *digest, uint64_t size,
			       bool follow_index)
{
	char *buf;
	size_t len;
	struct rs_err e2;
	if (layout_src_read_blob(r->src, digest, size, RS_LIMIT_MANIFEST_MAX_BYTES, &buf, &len, &e2) != RS_OK)
		return 0; /* an unreadable neighbour just shares nothing */
	size_t best = common_prefix(m, buf, len, digest);
	struct imagejson_index idx;
	if (follow_index && best == 0 && imagejson_parse_index(&idx, buf, len, digest, &e2) == RS_OK) {
		for (size_t i = 0; i < idx.manifest_count; i++) {
			size_t k = prefix_with_blob(r, m, idx.manifests[i].digest, idx.manifests[i].size, false);
			best = k > best ? k : best;
		}
		imagejson_index_dispose(&idx);
	}
	free(buf);
	return best;
}

/* Docker archive: bottom layers (by diff_id) this image shares with the
 * archive's other images. self: this image's config digest. */
static size_t prefix_in_archive(struct run *r, const struct imagejson_config *cfg, const char *self)
{
	const struct imagejson_archive *a = layout_src_archive(r->src);
	size_t best = 0;
	for (size_t i = 0; a && i < a->image_count; i++) {
		char *buf;
		size_t len;
		struct rs_err e2;
		if (layout_src_read_member(r->src, a->images[i].config, RS_LIMIT_CONFIG_MAX_BYTES, &buf, &len, &e2) != RS_OK)
			continue;
		char d[DIGEST_STR_SIZE];
		digest_buffer(d, buf, len);
		struct imagejson_config other;
		if (strcmp(d, self) != 0 && imagejson_parse_config(&other, buf, len, a->images[i].config, &e2) == RS_OK) {
			size_t k = 0;
			while (k < cfg->diff_id_count && k < other.diff_id_count &&
			       strcmp(cfg->diff_ids[k], other.diff_ids[k]) == 0)
				k++;
			best = k > best ? k : best;
			imagejson_config_dispose(&other);
		}
		free(buf);
	}
	return best;
}

/* keep-base without base_layers: the bottom layers this image shares with
 * its base image, named by the manifest's org.opencontainers.image.base.digest
 * annotation when that manifest (or index) is in the source layout, or with
 * another image of the source (other entries of index.json, except this
 * image's siblings in exclude; the other images of a docker archive, by
 * diff_id). The largest such run of identical bottom layers; 0 when none.
 * The history has no sound marker of where a base ends (docs/optimizer.md),
 * so it is not used. self: the manifest digest (OCI) or config digest
 * (archive). */
static size_t shared_base(struct run *r, const struct imagejson_manifest *m, const struct imagejson_config *cfg,
			  const char *self, char *const *exclude, size_t nex)
{
	if (layout_src_kind(r->src) != LAYOUT_OCI)
		return prefix_in_archive(r, cfg, self);
	size_t best = 0;
	const char *bd = imagejson_kv_get(m->annotations, m->annotation_count, "org.opencontainers.image.base.digest");
	if (bd && strcmp(bd, self) != 0)
		best = prefix_with_blob(r, m, bd, UINT64_MAX, true);
	const struct imagejson_index *idx = layout_src_index(r->src);
	for (size_t i = 0; idx && i < idx->manifest_count; i++) {
		const struct imagejson_descriptor *d = &idx->manifests[i];
		if (strcmp(d->digest, self) == 0 || in_list(exclude, nex, d->digest) || d->size > RS_LIMIT_MANIFEST_MAX_BYTES)
			continue;
		size_t k = prefix_with_blob(r, m, d->digest, d->size, false);
		best = k > best ? k : best;
	}
	return best;
}

size_t pipeline_base_layers(struct run *r, const struct imagejson_manifest *m, const struct imagejson_config *cfg,
			    const struct layer_in *layers, size_t n, const char *self, char *const *siblings,
			    size_t nsib)
{
	const struct policy *pol = r->o->policy;
	if (pol->squash != POLICY_SQUASH_KEEP_BASE)
		return 0;
	if (!pol->base_layer_count)
		return shared_base(r, m, cfg, self, siblings, nsib);
	size_t base = 0;
	while (base < n && (in_list(pol->base_layers, pol->base_layer_count, m->layers[base].digest) ||
			    in_list(pol->base_layers, pol->base_layer_count, layers[base].diff_id)))
		base++;
	return base;
}
