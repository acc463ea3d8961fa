/* pipeline: the drive of the optimizer (see pipeline.h): picks the image
 * (or every platform of an index, or a docker archive's image), and for
 * each runs pass 1 (pipeline_scan.c), the decisions (squash.c), pass 2
 * (pipeline_write.c) group by group, then writes the rewritten config, the
 * manifest, the index and fills the report. pipeline_int.h lists the
 * pipeline's files and what they share. Talks to layout.c (files),
 * squash.c, strip.c and config/imagejson.c (documents). No network, no
 * clock. */
#include "pipeline.h"
#include "pipeline_int.h"

#include "image.h"
#include "rs_limits.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef REGSLIM_VERSION
#define REGSLIM_VERSION "0"
#endif

void pipeline_progress_report(struct run *r)
{
	if (!r->o->progress)
		return;
	struct pipeline_progress p = {r->phase, r->image, r->image_count, r->layer, r->layer_count, r->done,
				      r->total < r->done ? r->done : r->total};
	r->o->progress(r->o->progress_ctx, &p);
}

enum rs_code pipeline_policy_digest(char out[DIGEST_STR_SIZE], const struct policy *p, struct rs_err *err)
{
	char *c;
	size_t n;
	enum rs_code rc = policy_canonical(&c, &n, p, err);
	if (rc != RS_OK)
		return rc;
	digest_buffer(out, c, n);
	free(c);
	return RS_OK;
}

uint64_t pipeline_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

enum rs_code pipeline_check_stop(const struct pipeline_opts *o, struct rs_err *err)
{
	if (o->cancel && atomic_load(o->cancel))
		return rs_err_set(err, RS_TIMEOUT, "optimization cancelled");
	if (o->deadline_ms && pipeline_now_ms() > o->deadline_ms)
		return rs_err_set(err, RS_TIMEOUT, "optimization ran over its time limit");
	return RS_OK;
}

enum rs_code pipeline_pump_buf(const struct pipeline_opts *o, const struct layout_range *rg,
			       struct stream_sink *head, char *buf, _Atomic uint64_t *counter, struct rs_err *err)
{
	uint64_t done = 0;
	while (done < rg->size) {
		enum rs_code sc = pipeline_check_stop(o, err);
		if (sc != RS_OK)
			return sc;
		size_t want = rg->size - done > PUMP_BUF ? PUMP_BUF : (size_t)(rg->size - done);
		ssize_t n = pread(rg->fd, buf, want, (off_t)(rg->offset + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return rs_err_set(err, RS_IO, "read failed at offset %" PRIu64 ": %s", done, strerror(errno));
		if (n == 0)
			return rs_err_set(err, RS_BAD_INPUT, "file ended at %" PRIu64 " of %" PRIu64 " bytes", done,
					  rg->size);
		enum rs_code rc = stream_write(head, buf, (size_t)n, err);
		if (rc != RS_OK)
			return rc;
		done += (uint64_t)n;
		if (counter)
			*counter += (uint64_t)n;
	}
	return RS_OK;
}

enum rs_code pipeline_pump(struct run *r, const struct layout_range *rg, struct stream_sink *head,
			   struct rs_err *err)
{
	struct layout_range part = *rg;
	uint64_t done = 0;
	while (done < rg->size) {
		part.offset = rg->offset + done;
		part.size = rg->size - done > 16 * PUMP_BUF ? 16 * PUMP_BUF : rg->size - done;
		enum rs_code rc = pipeline_pump_buf(r->o, &part, head, r->buf, NULL, err);
		if (rc != RS_OK)
			return rc;
		done += part.size;
		r->done += part.size;
		pipeline_progress_report(r);
	}
	return RS_OK;
}

void pipeline_layer_prefix(struct rs_err *err, size_t i, size_t n, const struct layer_in *l)
{
	rs_err_prefix(err, "layer %zu/%zu (%.19s): ", i + 1, n, l->digest[0] ? l->digest : l->diff_id);
}

/* ---- one image ------------------------------------------------------------- */

struct history_text {
	char by[160];
	char comment[128];
};

static enum rs_code history_for(struct imagejson_history **out, size_t *n, const struct imagejson_config *c,
				enum policy_squash mode, size_t base, bool squashed_group, size_t squashed_layers,
				const char *policy_digest, struct history_text *txt, struct rs_err *err)
{
	*out = NULL;
	*n = 0;
	if (!c->has_history)
		return RS_OK;
	struct imagejson_history *h = calloc(c->history_count + 1, sizeof(*h));
	if (!h)
		return rs_err_set(err, RS_NOMEM, "out of memory");
	size_t nonempty = 0;
	const char *last_created = c->created;
	for (size_t i = 0; i < c->history_count; i++) {
		h[i] = c->history[i]; /* borrowed strings */
		if (c->history[i].created)
			last_created = c->history[i].created;
		if (mode == POLICY_SQUASH_NONE)
			continue;
		if (!h[i].empty_layer) {
			if (!(mode == POLICY_SQUASH_KEEP_BASE && nonempty < base))
				h[i].empty_layer = true;
			nonempty++;
		}
	}
	*n = c->history_count;
	if (mode != POLICY_SQUASH_NONE && squashed_group) {
		char *by = txt->by, *comment = txt->comment;
		snprintf(txt->by, sizeof(txt->by), "regslim optimize: %zu layer%s squashed", squashed_layers,
			 squashed_layers == 1 ? "" : "s");
		snprintf(txt->comment, sizeof(txt->comment), "policy %s", policy_digest);
		h[*n].created = c->created ? c->created : (char *)last_created;
		h[*n].created_by = by;
		h[*n].comment = comment;
		h[*n].empty_layer = false;
		(*n)++;
	}
	*out = h;
	return RS_OK;
}

struct strip_collect {
	struct report_image *img;
};

static enum rs_code collect_stripped(void *ctx, const char *path, const char *rule, struct rs_err *err)
{
	struct strip_collect *s = ctx;
	return report_add_stripped(s->img, path, rule, err);
}

/* The annotations naming where an optimized document comes from: the source
 * digest, the policy and the optimizer version (image.h). */
static enum rs_code add_provenance(struct imagejson_kv **kv, size_t *count, const char *src_digest,
				   const struct run *r, struct rs_err *err)
{
	enum rs_code rc = imagejson_kv_set(kv, count, IMAGE_ANN_SOURCE, src_digest, err);
	if (rc == RS_OK)
		rc = imagejson_kv_set(kv, count, IMAGE_ANN_POLICY, r->policy_digest, err);
	if (rc == RS_OK)
		rc = imagejson_kv_set(kv, count, IMAGE_ANN_VERSION, REGSLIM_VERSION, err);
	return rc;
}

/* One image being optimized: its inputs (borrowed from the caller) and what
 * the steps of optimize_image build, released by image_job_dispose. */
struct image_job {
	struct run *r;
	const struct imagejson_manifest *m;
	const struct imagejson_config *cfg;
	const char *cfg_buf;
	size_t cfg_len;
	struct layer_in *layers;
	size_t n;
	const char *src_digest;
	const struct imagejson_descriptor *entry; /* its index entry, or NULL */
	size_t base;                              /* bottom layers kept as they are */
	struct squash_plan *plan;
	struct spool sp; /* hard-link spool */
	struct report_image *img;
	size_t ng;       /* output groups */
	char **diff_ids; /* ng, borrowed from img->out_layers */
	struct imagejson_manifest om; /* the output manifest (layers borrowed from img) */
};

/* The report's entry for the image: source digest and platform. */
static enum rs_code image_report_entry(struct image_job *j, struct rs_err *err)
{
	j->img = report_add_image(j->r->rep);
	if (!j->img)
		return rs_err_set(err, RS_NOMEM, "out of memory");
	snprintf(j->img->source_digest, sizeof(j->img->source_digest), "%s", j->src_digest);
	const struct imagejson_descriptor *e = j->entry;
	const char *os = e && e->os ? e->os : j->cfg->os;
	const char *arch = e && e->architecture ? e->architecture : j->cfg->architecture;
	const char *var = e && e->os ? e->variant : j->cfg->variant;
	if (os && arch) {
		char plat[128];
		snprintf(plat, sizeof(plat), "%s/%s%s%s", os, arch, var ? "/" : "", var ? var : "");
		j->img->platform = report_strdup(plat);
	}
	return RS_OK;
}

/* Pass 1 and the decisions: the plan, the hard-link spool it needs, and
 * room for the output groups. */
static enum rs_code image_plan(struct image_job *j, struct rs_err *err)
{
	const struct policy *pol = j->r->o->policy;
	struct squash_opts so = {pol->squash, j->n, j->base, pol->dedupe, j->r->strip, 0};
	enum rs_code rc = squash_new(&j->plan, &so, err);
	j->img->layers = calloc(j->n, sizeof(*j->img->layers));
	if (rc == RS_OK && !j->img->layers)
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
	if (rc == RS_OK)
		j->img->layer_count = j->n;
	if (rc == RS_OK)
		rc = pipeline_scan(j->r, j->plan, j->layers, j->n, j->base, err);
	if (rc == RS_OK)
		rc = squash_finish(j->plan, err);
	if (rc == RS_OK)
		rc = pipeline_holes_check(j->plan, j->layers, j->n, err);
	if (rc == RS_OK)
		rc = pipeline_spool_open(j->r, j->plan, &j->sp, err);
	if (rc != RS_OK)
		return rc;
	size_t ng = squash_group_count(j->plan);
	j->img->out_layers = ng ? calloc(ng, sizeof(*j->img->out_layers)) : NULL;
	j->diff_ids = ng ? calloc(ng, sizeof(char *)) : NULL;
	j->om.layers = ng ? calloc(ng, sizeof(*j->om.layers)) : NULL;
	if (ng && (!j->img->out_layers || !j->diff_ids || !j->om.layers))
		return rs_err_set(err, RS_NOMEM, "out of memory");
	j->ng = j->img->out_layer_count = ng;
	return RS_OK;
}

/* Output group g is base layer li, copied as it is (after pass 2 filled the
 * hard-link spool from it, when later layers need that). */
static enum rs_code copy_base_layer(struct image_job *j, size_t li, size_t g, struct report_out_layer *ol,
				    struct rs_err *err)
{
	struct run *r = j->r;
	struct layer_in *l = &j->layers[li];
	enum rs_code rc = RS_OK;
	if (squash_layer_needs_spool(j->plan, li))
		rc = pipeline_write_layer(r, j->plan, li, j->n, l, NULL, &j->sp, err);
	r->phase = "copy";
	r->layer = li;
	if (rc == RS_OK)
		rc = layout_writer_copy(r->w, &l->range, l->digest, err);
	if (rc != RS_OK) {
		pipeline_layer_prefix(err, li, j->n, l);
		return rc;
	}
	r->done += l->range.size;
	pipeline_progress_report(r);
	memcpy(ol->digest, l->digest, DIGEST_STR_SIZE);
	memcpy(ol->diff_id, l->diff_id, DIGEST_STR_SIZE);
	ol->size = l->range.size;
	ol->uncompressed = l->uncompressed;
	ol->copied = true;
	ol->media_type = report_strdup(image_layer_type(l->kind));
	j->img->layers[li].base = true;
	j->img->layers[li].out_layer = g;
	return RS_OK;
}

/* Output group g: the layers from *li on that squash.c put in it, written
 * into one new blob; *li moves past them. */
static enum rs_code write_group(struct image_job *j, size_t *li, size_t g, struct report_out_layer *ol,
				struct rs_err *err)
{
	struct group_out go;
	enum rs_code rc = pipeline_group_open(j->r, &go, err);
	while (rc == RS_OK && *li < j->n && squash_layer_group(j->plan, *li) == g) {
		rc = pipeline_write_layer(j->r, j->plan, *li, j->n, &j->layers[*li], go.dsu, &j->sp, err);
		j->img->layers[*li].out_layer = g;
		(*li)++;
	}
	if (rc == RS_OK)
		rc = pipeline_group_close(j->r, &go, ol, err);
	else
		pipeline_group_abandon(&go);
	ol->media_type = report_strdup(image_layer_type(pipeline_out_kind(j->r->o->policy)));
	return rc;
}

/* Pass 2: every output group, lowest first. */
static enum rs_code image_write_layers(struct image_job *j, struct rs_err *err)
{
	size_t li = 0;
	enum rs_code rc = RS_OK;
	for (size_t g = 0; rc == RS_OK && g < j->ng; g++) {
		struct report_out_layer *ol = &j->img->out_layers[g];
		if (squash_group_is_base(j->plan, g))
			rc = copy_base_layer(j, li++, g, ol, err);
		else
			rc = write_group(j, &li, g, ol, err);
		if (rc == RS_OK && !ol->media_type)
			rc = rs_err_set(err, RS_NOMEM, "out of memory");
		if (rc == RS_OK) {
			j->diff_ids[g] = ol->diff_id;
			j->om.layers[g].media_type = ol->media_type;
			j->om.layers[g].digest = ol->digest;
			j->om.layers[g].size = ol->size;
			j->img->out_size += ol->size;
			j->img->out_uncompressed += ol->uncompressed;
		}
	}
	return rc;
}

/* The rewritten config (diff_ids, history) into the layout; its digest in
 * digest_out and its size in j->om.config. */
static enum rs_code image_write_config(struct image_job *j, char digest_out[DIGEST_STR_SIZE], struct rs_err *err)
{
	struct imagejson_history *hist = NULL;
	size_t hist_n = 0;
	struct history_text htxt;
	char *cfg_out = NULL;
	size_t cfg_out_len = 0;
	bool squashed = j->ng > 0 && !squash_group_is_base(j->plan, j->ng - 1);
	enum rs_code rc = history_for(&hist, &hist_n, j->cfg, j->r->o->policy->squash, j->base, squashed,
				      j->n - j->base, j->r->policy_digest, &htxt, err);
	if (rc == RS_OK)
		rc = imagejson_rewrite_config(&cfg_out, &cfg_out_len, j->cfg_buf, j->cfg_len, j->diff_ids, j->ng, hist,
					      hist_n, "config", err);
	if (rc == RS_OK)
		rc = layout_writer_put(j->r->w, cfg_out, cfg_out_len, digest_out, err);
	j->om.config.size = cfg_out_len;
	free(hist);
	free(cfg_out);
	return rc;
}

/* Config and manifest into the layout; out describes the manifest. */
static enum rs_code image_write_docs(struct image_job *j, struct imagejson_descriptor *out, struct rs_err *err)
{
	char cfg_digest[DIGEST_STR_SIZE] = "", man_digest[DIGEST_STR_SIZE] = "";
	char *man_out = NULL;
	size_t man_out_len = 0;
	struct imagejson_manifest *om = &j->om;
	enum rs_code rc = image_write_config(j, cfg_digest, err);
	if (rc == RS_OK) {
		om->schema_version = 2;
		om->media_type = (char *)IMAGE_MT_OCI_MANIFEST;
		om->config.media_type = (char *)IMAGE_MT_OCI_CONFIG;
		om->config.digest = cfg_digest;
		om->layer_count = j->ng;
		for (size_t i = 0; rc == RS_OK && i < j->m->annotation_count; i++)
			rc = imagejson_kv_set(&om->annotations, &om->annotation_count, j->m->annotations[i].key,
					      j->m->annotations[i].value, err);
		if (rc == RS_OK)
			rc = add_provenance(&om->annotations, &om->annotation_count, j->src_digest, j->r, err);
	}
	if (rc == RS_OK)
		rc = imagejson_write_manifest(&man_out, &man_out_len, om, err);
	om->config.digest = NULL; /* cfg_digest goes out of scope */
	if (rc == RS_OK)
		rc = layout_writer_put(j->r->w, man_out, man_out_len, man_digest, err);
	free(man_out);
	if (rc != RS_OK)
		return rc;
	memset(out, 0, sizeof(*out));
	out->media_type = report_strdup(IMAGE_MT_OCI_MANIFEST);
	out->digest = report_strdup(man_digest);
	out->size = man_out_len;
	if (j->entry) {
		out->os = report_strdup(j->entry->os);
		out->architecture = report_strdup(j->entry->architecture);
		out->variant = report_strdup(j->entry->variant);
	}
	if (!out->media_type || !out->digest)
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
	snprintf(j->img->digest, sizeof(j->img->digest), "%s", man_digest);
	return rc;
}

/* The report's numbers for the image, from the plan. */
static enum rs_code image_fill_report(struct image_job *j, struct rs_err *err)
{
	struct report_image *img = j->img;
	struct squash_stats st;
	squash_stats(j->plan, &st);
	for (size_t i = 0; i < j->n; i++) {
		const struct layer_in *l = &j->layers[i];
		struct report_layer *rl = &img->layers[i];
		struct squash_layer_stats ls;
		squash_layer_stats(j->plan, i, &ls);
		memcpy(rl->digest, l->digest, DIGEST_STR_SIZE);
		memcpy(rl->diff_id, l->diff_id, DIGEST_STR_SIZE);
		rl->media_type = report_strdup(l->media_type ? l->media_type : "");
		rl->size = l->range.size;
		rl->uncompressed = l->uncompressed;
		rl->entries = ls.entries;
		rl->kept_entries = ls.kept_entries;
		rl->stripped_entries = ls.stripped_entries;
		rl->stripped_bytes = ls.stripped_bytes;
		rl->overlay_entries = ls.overlay_entries;
		rl->overlay_bytes = ls.overlay_bytes;
		rl->dup_entries = ls.dup_entries;
		rl->dup_bytes = ls.dup_bytes;
		rl->whiteouts = ls.whiteouts;
		rl->whiteouts_applied = ls.whiteouts_applied;
		img->in_size += rl->size;
		img->in_uncompressed += rl->uncompressed;
	}
	img->rules = st.rule_count ? calloc(st.rule_count, sizeof(*img->rules)) : NULL;
	if (st.rule_count && !img->rules)
		return rs_err_set(err, RS_NOMEM, "out of memory");
	for (size_t i = 0; i < st.rule_count; i++) {
		img->rules[i].name = report_strdup(strip_rule_name(j->r->strip, i));
		img->rules[i].bytes = st.rule_bytes[i];
		img->rules[i].entries = st.rule_entries[i];
		img->rule_count = i + 1;
	}
	img->entries = st.entries;
	img->final_paths = st.final_paths;
	img->whiteouts_applied = st.whiteouts_applied;
	img->dup_entries = st.dup_entries;
	img->dup_bytes = st.dup_bytes;
	img->links_relinked = st.links_relinked;
	img->links_materialized = st.links_materialized;
	img->efficiency_in = st.efficiency_in;
	img->efficiency_out = st.efficiency_out;
	img->wasted_in = st.wasted_in;
	img->wasted_out = st.wasted_out;
	struct strip_collect sc = {img};
	return squash_each_stripped(j->plan, collect_stripped, &sc, err);
}

static void image_job_dispose(struct image_job *j)
{
	if (j->om.annotations)
		imagejson_kv_free(j->om.annotations, j->om.annotation_count);
	free(j->om.layers);
	free(j->diff_ids);
	for (size_t i = 0; i < j->n; i++) {
		struct layer_in *l = &j->layers[i];
		if (l->tar_fd >= 0) {
			close(l->tar_fd);
			l->tar_fd = -1;
		}
		free(l->holes);
		l->holes = NULL;
		l->nholes = l->holes_cap = 0;
	}
	pipeline_spool_dispose(&j->sp);
	squash_free(j->plan);
}

/* Optimize one image (manifest m, config cfg in cfg_buf, layers) into the
 * destination layout; out describes the new manifest. entry: the image's
 * index entry (platform), or NULL; siblings: the other entries of that
 * index (keep-base looks for a base among the layout's other images). */
static enum rs_code optimize_image(struct run *r, const struct imagejson_manifest *m,
				   const struct imagejson_config *cfg, const char *cfg_buf, size_t cfg_len,
				   struct layer_in *layers, size_t n, const char *src_digest,
				   const struct imagejson_descriptor *entry, char *const *siblings, size_t nsib,
				   struct imagejson_descriptor *out, struct rs_err *err)
{
	struct image_job j = {.r = r, .m = m, .cfg = cfg, .cfg_buf = cfg_buf, .cfg_len = cfg_len, .layers = layers,
			      .n = n, .src_digest = src_digest, .entry = entry, .sp = {.fd = -1}};
	enum rs_code rc = image_report_entry(&j, err);
	if (rc != RS_OK)
		return rc;
	j.base = pipeline_base_layers(r, m, cfg, layers, n, src_digest, siblings, nsib);
	for (size_t i = 0; i < n; i++) {
		layers[i].tar_fd = -1;
		r->total += layers[i].range.size * (i < j.base ? 1 : 2);
	}
	rc = image_plan(&j, err);
	if (rc == RS_OK)
		rc = image_write_layers(&j, err);
	if (rc == RS_OK)
		rc = image_write_docs(&j, out, err);
	if (rc == RS_OK)
		rc = image_fill_report(&j, err);
	image_job_dispose(&j);
	return rc;
}

/* ---- documents -------------------------------------------------------------- */

static const struct imagejson_descriptor *find_done(struct run *r, const char *src)
{
	for (size_t i = 0; i < r->done_count; i++)
		if (strcmp(r->dones[i].src, src) == 0)
			return &r->dones[i].out;
	return NULL;
}

static enum rs_code remember(struct run *r, const char *src, const struct imagejson_descriptor *out,
			     struct rs_err *err)
{
	struct done_image *n = realloc(r->dones, (r->done_count + 1) * sizeof(*n));
	if (!n)
		return rs_err_set(err, RS_NOMEM, "out of memory");
	r->dones = n;
	snprintf(n[r->done_count].src, DIGEST_STR_SIZE, "%s", src);
	enum rs_code rc = imagejson_descriptor_copy(&n[r->done_count].out, out, err);
	if (rc == RS_OK)
		r->done_count++;
	return rc;
}

/* An image manifest of an OCI layout (buf already verified against digest). */
static enum rs_code process_manifest(struct run *r, const char *buf, size_t len, const char *digest,
				     const struct imagejson_descriptor *entry, char *const *siblings, size_t nsib,
				     struct imagejson_descriptor *out, struct rs_err *err)
{
	const struct imagejson_descriptor *prev = find_done(r, digest);
	if (prev) {
		enum rs_code rc = imagejson_descriptor_copy(out, prev, err);
		if (rc == RS_OK && entry) {
			free(out->os);
			free(out->architecture);
			free(out->variant);
			out->os = report_strdup(entry->os);
			out->architecture = report_strdup(entry->architecture);
			out->variant = report_strdup(entry->variant);
		}
		return rc;
	}
	char what[128];
	snprintf(what, sizeof(what), "manifest %.19s", digest);
	struct imagejson_manifest m;
	struct imagejson_config c;
	memset(&c, 0, sizeof(c));
	char *cbuf = NULL;
	size_t clen = 0;
	struct layer_in *layers = NULL;
	enum rs_code rc = imagejson_parse_manifest(&m, buf, len, what, err);
	if (rc != RS_OK)
		return rc;
	rc = image_validate_manifest(&m, what, err);
	if (rc == RS_OK) {
		rc = layout_src_read_blob(r->src, m.config.digest, m.config.size, RS_LIMIT_CONFIG_MAX_BYTES, &cbuf, &clen,
					  err);
		if (rc != RS_OK)
			rs_err_prefix(err, "%s: config: ", what);
	}
	char cwhat[128];
	snprintf(cwhat, sizeof(cwhat), "config %.19s", m.config.digest ? m.config.digest : "?");
	if (rc == RS_OK)
		rc = imagejson_parse_config(&c, cbuf, clen, cwhat, err);
	bool hist_ok;
	if (rc == RS_OK)
		rc = image_validate_config(&c, &m, cwhat, &hist_ok, err);
	if (rc == RS_OK) {
		layers = calloc(m.layer_count, sizeof(*layers));
		if (!layers)
			rc = rs_err_set(err, RS_NOMEM, "out of memory");
	}
	for (size_t i = 0; rc == RS_OK && i < m.layer_count; i++) {
		struct layer_in *l = &layers[i];
		l->media_type = m.layers[i].media_type;
		snprintf(l->digest, sizeof(l->digest), "%s", m.layers[i].digest);
		snprintf(l->diff_id, sizeof(l->diff_id), "%s", c.diff_ids[i]);
		rc = codec_kind_from_media_type(&l->kind, l->media_type, err);
		if (rc == RS_OK)
			rc = layout_src_blob_range(r->src, l->digest, &l->range, err);
		if (rc == RS_OK && l->range.size != m.layers[i].size)
			rc = rs_err_set(err, RS_DIGEST_MISMATCH, "blob is %" PRIu64 " bytes, the manifest says %" PRIu64,
					l->range.size, m.layers[i].size);
		if (rc != RS_OK)
			pipeline_layer_prefix(err, i, m.layer_count, l);
	}
	if (rc == RS_OK)
		rc = optimize_image(r, &m, &c, cbuf, clen, layers, m.layer_count, digest, entry, siblings, nsib, out, err);
	if (rc == RS_OK)
		rc = remember(r, digest, out, err);
	free(layers);
	free(cbuf);
	imagejson_config_dispose(&c);
	imagejson_manifest_dispose(&m);
	return rc;
}

static enum rs_code read_doc(struct run *r, const struct imagejson_descriptor *d, char **buf, size_t *len,
			     enum imagejson_kind *kind, struct rs_err *err)
{
	enum rs_code rc = layout_src_read_blob(r->src, d->digest, d->size, RS_LIMIT_MANIFEST_MAX_BYTES, buf, len, err);
	if (rc != RS_OK)
		return rc;
	if (image_is_index_type(d->media_type))
		*kind = IMAGEJSON_INDEX;
	else if (image_is_manifest_type(d->media_type))
		*kind = IMAGEJSON_MANIFEST;
	else if (d->media_type) {
		free(*buf);
		*buf = NULL;
		return rs_err_set(err, RS_UNSUPPORTED, "%.19s: unsupported media type %s", d->digest, d->media_type);
	} else {
		char what[64];
		snprintf(what, sizeof(what), "%.19s", d->digest);
		rc = imagejson_sniff(kind, *buf, *len, what, err);
		if (rc != RS_OK) {
			free(*buf);
			*buf = NULL;
		}
	}
	return rc;
}

static enum rs_code process_index(struct run *r, const char *buf, size_t len, const char *digest,
				  struct imagejson_descriptor *out, struct rs_err *err)
{
	char what[128];
	snprintf(what, sizeof(what), "index %.19s", digest);
	struct imagejson_index in, on;
	memset(&on, 0, sizeof(on));
	enum rs_code rc = imagejson_parse_index(&in, buf, len, what, err);
	if (rc != RS_OK)
		return rc;
	rc = image_validate_index(&in, what, err);
	char **sib = calloc(in.manifest_count + 1, sizeof(char *));
	on.manifests = calloc(in.manifest_count + 1, sizeof(*on.manifests));
	if (rc == RS_OK && (!sib || !on.manifests))
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
	for (size_t i = 0; rc == RS_OK && i < in.manifest_count; i++)
		sib[i] = in.manifests[i].digest;
	r->image_count = in.manifest_count;
	for (size_t i = 0; rc == RS_OK && i < in.manifest_count; i++) {
		const struct imagejson_descriptor *d = &in.manifests[i];
		/* attestation manifests (buildkit) carry no runnable image */
		if (d->os && strcmp(d->os, "unknown") == 0)
			continue;
		r->image = i;
		char *mb = NULL;
		size_t ml = 0;
		enum imagejson_kind kind;
		rc = read_doc(r, d, &mb, &ml, &kind, err);
		if (rc == RS_OK && kind != IMAGEJSON_MANIFEST)
			rc = rs_err_set(err, RS_UNSUPPORTED, "%s: manifests[%zu] is a nested index", what, i);
		struct imagejson_descriptor *od = &on.manifests[on.manifest_count];
		if (rc == RS_OK)
			rc = process_manifest(r, mb, ml, d->digest, d, sib, in.manifest_count, od, err);
		if (rc == RS_OK) {
			on.manifest_count++;
			for (size_t k = 0; rc == RS_OK && k < d->annotation_count; k++)
				rc = imagejson_kv_set(&od->annotations, &od->annotation_count, d->annotations[k].key,
						      d->annotations[k].value, err);
		}
		free(mb);
	}
	if (rc == RS_OK) {
		on.schema_version = 2;
		on.media_type = report_strdup(IMAGE_MT_OCI_INDEX);
		for (size_t i = 0; rc == RS_OK && i < in.annotation_count; i++)
			rc = imagejson_kv_set(&on.annotations, &on.annotation_count, in.annotations[i].key,
					      in.annotations[i].value, err);
		if (rc == RS_OK)
			rc = add_provenance(&on.annotations, &on.annotation_count, digest, r, err);
	}
	char *json = NULL;
	size_t jl = 0;
	if (rc == RS_OK)
		rc = imagejson_write_index(&json, &jl, &on, err);
	char d[DIGEST_STR_SIZE];
	if (rc == RS_OK)
		rc = layout_writer_put(r->w, json, jl, d, err);
	if (rc == RS_OK) {
		memset(out, 0, sizeof(*out));
		out->media_type = report_strdup(IMAGE_MT_OCI_INDEX);
		out->digest = report_strdup(d);
		out->size = jl;
		if (!out->media_type || !out->digest)
			rc = rs_err_set(err, RS_NOMEM, "out of memory");
	}
	free(json);
	free(sib);
	imagejson_index_dispose(&on);
	imagejson_index_dispose(&in);
	return rc;
}

static enum rs_code process_archive(struct run *r, struct imagejson_descriptor *out, struct rs_err *err)
{
	const struct imagejson_archive *a = layout_src_archive(r->src);
	const struct imagejson_archive_image *im = &a->images[0];
	const char *tag = layout_src_tag(r->src);
	if (tag) {
		im = NULL;
		for (size_t i = 0; i < a->image_count && !im; i++)
			for (size_t k = 0; k < a->images[i].repo_tag_count; k++)
				if (strcmp(a->images[i].repo_tags[k], tag) == 0)
					im = &a->images[i];
		if (!im)
			return rs_err_set(err, RS_NOT_FOUND, "%s: no image tagged %s", layout_src_path(r->src), tag);
	}
	char *cbuf = NULL;
	size_t clen = 0;
	enum rs_code rc = layout_src_read_member(r->src, im->config, RS_LIMIT_CONFIG_MAX_BYTES, &cbuf, &clen, err);
	if (rc != RS_OK)
		return rc;
	char cdig[DIGEST_STR_SIZE];
	digest_buffer(cdig, cbuf, clen);
	struct imagejson_config c;
	struct imagejson_manifest m;
	memset(&m, 0, sizeof(m));
	struct layer_in *layers = NULL;
	char cwhat[128];
	snprintf(cwhat, sizeof(cwhat), "config %.19s", cdig);
	rc = imagejson_parse_config(&c, cbuf, clen, cwhat, err);
	if (rc == RS_OK && c.diff_id_count != im->layer_count)
		rc = rs_err_set(err, RS_BAD_INPUT, "%s: %zu diff_ids for %zu layers in manifest.json", cwhat,
				c.diff_id_count, im->layer_count);
	if (rc == RS_OK) {
		layers = calloc(im->layer_count + 1, sizeof(*layers));
		m.layers = calloc(im->layer_count + 1, sizeof(*m.layers));
		if (!layers || !m.layers)
			rc = rs_err_set(err, RS_NOMEM, "out of memory");
	}
	for (size_t i = 0; rc == RS_OK && i < im->layer_count; i++) {
		struct layer_in *l = &layers[i];
		snprintf(l->diff_id, sizeof(l->diff_id), "%s", c.diff_ids[i]);
		rc = digest_parse(l->diff_id, err);
		if (rc == RS_OK)
			rc = layout_src_member_range(r->src, im->layers[i], &l->range, err);
		if (rc == RS_OK) {
			unsigned char magic[4] = {0};
			ssize_t got = pread(l->range.fd, magic, l->range.size < 4 ? (size_t)l->range.size : 4,
					    (off_t)l->range.offset);
			l->kind = codec_kind_sniff(magic, got > 0 ? (size_t)got : 0);
		}
		const char *name = im->layers[i];
		if (strncmp(name, "blobs/sha256/", 13) == 0 && strlen(name) == 13 + 64)
			snprintf(l->digest, sizeof(l->digest), "sha256:%s", name + 13);
		else if (l->kind == CODEC_NONE)
			snprintf(l->digest, sizeof(l->digest), "%s", l->diff_id);
		l->media_type = l->kind == CODEC_GZIP   ? "application/vnd.docker.image.rootfs.diff.tar.gzip"
				: l->kind == CODEC_ZSTD ? "application/vnd.docker.image.rootfs.diff.tar.zstd"
							: "application/vnd.docker.image.rootfs.diff.tar";
		m.layers[i].digest = l->digest;
		if (rc != RS_OK)
			pipeline_layer_prefix(err, i, im->layer_count, l);
	}
	m.layer_count = im->layer_count;
	r->image_count = 1;
	if (rc == RS_OK)
		rc = optimize_image(r, &m, &c, cbuf, clen, layers, im->layer_count, cdig, NULL, NULL, 0, out, err);
	free(m.layers); /* digests were borrowed from layers */
	free(layers);
	free(cbuf);
	imagejson_config_dispose(&c);
	return rc;
}

/* REGSLIM_TAR_SPOOL: unset or "auto" spools with a budget of half the free
 * space of the destination's filesystem; "0" turns the tar spool off (pass 2
 * decodes again); a number N caps the spooled bytes of each image at N. */
static enum rs_code spool_knob(struct run *r, struct rs_err *err)
{
	const char *v = getenv("REGSLIM_TAR_SPOOL");
	r->spool_tar = true;
	r->spool_max = 0;
	if (!v || !*v || strcmp(v, "auto") == 0)
		return RS_OK;
	char *end = NULL;
	errno = 0;
	unsigned long long n = strtoull(v, &end, 10);
	if (errno != 0 || !end || *end != '\0' || v[0] == '-' || v[0] == '+' || v[0] == ' ')
		return rs_err_set(err, RS_BAD_INPUT, "REGSLIM_TAR_SPOOL: expected auto, 0 or a byte count, got '%s'", v);
	r->spool_tar = n > 0;
	r->spool_max = (uint64_t)n;
	return RS_OK;
}

enum rs_code pipeline_run(struct report *rep, const struct pipeline_opts *o, struct rs_err *err)
{
	struct run r;
	memset(&r, 0, sizeof(r));
	r.o = o;
	r.rep = rep;
	r.image_count = 1;
	char *dir = NULL, *dtag = NULL;
	struct imagejson_descriptor root_out;
	memset(&root_out, 0, sizeof(root_out));
	enum rs_code rc = pipeline_policy_digest(r.policy_digest, o->policy, err);
	memcpy(rep->policy_digest, r.policy_digest, DIGEST_STR_SIZE);
	rep->squash = policy_squash_name(o->policy->squash);
	rep->compression = policy_compression_name(o->policy->compression);
	rep->level = o->policy->level;
	rep->source = report_strdup(o->src);
	rep->dest = report_strdup(o->dst);
	r.buf = malloc(PUMP_BUF);
	r.tbuf = malloc(PUMP_BUF);
	r.mbuf = malloc(PUMP_BUF);
	if (rc == RS_OK && (!rep->source || !rep->dest || !r.buf || !r.tbuf || !r.mbuf))
		rc = rs_err_set(err, RS_NOMEM, "out of memory");
	if (rc == RS_OK)
		rc = spool_knob(&r, err);
	if (rc == RS_OK)
		rc = layout_parse_dest(&dir, &dtag, o->dst, err);
	if (rc == RS_OK)
		rc = layout_src_open(&r.src, o->src, err);
	if (rc == RS_OK)
		rc = strip_new(&r.strip, o->policy, err);
	if (rc == RS_OK)
		rc = layout_writer_new(&r.w, dir, err);
	if (rc == RS_OK && layout_src_kind(r.src) == LAYOUT_ARCHIVE) {
		rc = process_archive(&r, &root_out, err);
	} else if (rc == RS_OK) {
		const struct imagejson_index *idx = layout_src_index(r.src);
		const char *tag = layout_src_tag(r.src);
		const struct imagejson_descriptor *pick = NULL;
		for (size_t i = 0; i < idx->manifest_count && !pick; i++) {
			const char *t = imagejson_kv_get(idx->manifests[i].annotations, idx->manifests[i].annotation_count,
							 IMAGE_ANN_REF_NAME);
			if (tag ? (t && strcmp(t, tag) == 0) : idx->manifest_count == 1)
				pick = &idx->manifests[i];
		}
		if (!pick && tag)
			rc = rs_err_set(err, RS_NOT_FOUND, "%s: no image tagged %s", layout_src_path(r.src), tag);
		else if (!pick)
			rc = rs_err_set(err, RS_BAD_INPUT, "%s holds %zu images: name one as oci:DIR:TAG",
					layout_src_path(r.src), idx->manifest_count);
		char *buf = NULL;
		size_t len = 0;
		enum imagejson_kind kind = IMAGEJSON_MANIFEST;
		if (rc == RS_OK)
			rc = digest_parse(pick->digest, err);
		if (rc == RS_OK)
			rc = read_doc(&r, pick, &buf, &len, &kind, err);
		if (rc == RS_OK && kind == IMAGEJSON_INDEX)
			rc = process_index(&r, buf, len, pick->digest, &root_out, err);
		else if (rc == RS_OK)
			rc = process_manifest(&r, buf, len, pick->digest, NULL, NULL, 0, &root_out, err);
		free(buf);
	}
	const char *tag = dtag ? dtag : (r.src && layout_src_tag(r.src) ? layout_src_tag(r.src) : "latest");
	if (rc == RS_OK)
		rc = layout_writer_set_ref(r.w, &root_out, tag, err);
	if (rc == RS_OK)
		rc = layout_writer_commit(r.w, err);
	if (rc == RS_OK) {
		snprintf(rep->digest, sizeof(rep->digest), "%s", root_out.digest);
		rep->media_type = report_strdup(root_out.media_type);
		rep->tag = report_strdup(tag);
	}
	imagejson_descriptor_dispose(&root_out);
	for (size_t i = 0; i < r.done_count; i++)
		imagejson_descriptor_dispose(&r.dones[i].out);
	free(r.dones);
	layout_writer_free(r.w);
	strip_free(r.strip);
	layout_src_free(r.src);
	free(r.buf);
	free(r.tbuf);
	free(r.mbuf);
	free(dir);
	free(dtag);
	return rc;
}
