/* pipeline_write: pass 2 of the pipeline (pipeline_int.h). Each layer's
 * tar is read again (from pass 1's tar spool, or decoded from the blob) and
 * every entry handled as squash.c decided: copied byte for byte, dropped,
 * relinked, or materialized from the hard-link spool, into the tar of its
 * output group; a group's tar goes through the policy's encoder into a temp
 * blob that the layout writer commits under its digest. Talks to codec,
 * tar_read/tar_write/tar_sparse, squash and layout; no network. */
#include "pipeline_int.h"

#include "rs_limits.h"
#include "tar_sparse.h"
#include "tar_write.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- hard-link spool --------------------------------------------------------- */

void pipeline_spool_dispose(struct spool *s)
{
	if (s->fd >= 0)
		close(s->fd);
	for (uint32_t i = 0; i < s->n; i++) {
		for (int k = 0; k < 5; k++)
			free(s->slots[i].strs[k]);
		if (s->slots[i].x)
			for (size_t k = 0; k < s->slots[i].meta.xattr_count; k++) {
				free((char *)s->slots[i].x[k].name);
				free((void *)s->slots[i].x[k].value);
			}
		free(s->slots[i].x);
		free(s->slots[i].raw);
	}
	free(s->slots);
	memset(s, 0, sizeof(*s));
	s->fd = -1;
}

enum rs_code pipeline_spool_open(struct run *r, struct squash_plan *plan, struct spool *sp, struct rs_err *err)
{
	memset(sp, 0, sizeof(*sp));
	sp->fd = -1;
	if (squash_spool_count(plan) == 0)
		return RS_OK;
	char tmp[4200];
	enum rs_code rc = layout_writer_tmp(r->w, &sp->fd, tmp, sizeof(tmp), err);
	if (rc != RS_OK)
		return rc;
	(void)unlink(tmp); /* anonymous: the fd keeps it until pipeline_spool_dispose */
	sp->n = squash_spool_count(plan);
	sp->slots = calloc(sp->n, sizeof(*sp->slots));
	if (!sp->slots)
		return rs_err_set(err, RS_NOMEM, "out of memory");
	return RS_OK;
}

static enum rs_code spool_keep_meta(struct spool *s, uint32_t slot, const struct tar_entry *e, const void *raw,
				    size_t raw_len, struct rs_err *err)
{
	struct spool_slot *sl = &s->slots[slot];
	sl->meta = *e;
	if (e->sparse) {
		sl->raw = malloc(raw_len);
		if (!sl->raw)
			return rs_err_set(err, RS_NOMEM, "out of memory spooling %s", e->path);
		memcpy(sl->raw, raw, raw_len);
		sl->raw_len = raw_len;
	}
	const char *src[5] = {e->path, e->linkpath, e->uname, e->gname, e->mtime_pax};
	for (int k = 0; k < 5; k++) {
		sl->strs[k] = report_strdup(src[k]);
		if (src[k] && !sl->strs[k])
			return rs_err_set(err, RS_NOMEM, "out of memory spooling %s", e->path);
	}
	sl->meta.path = sl->strs[0];
	sl->meta.linkpath = sl->strs[1];
	sl->meta.uname = sl->strs[2];
	sl->meta.gname = sl->strs[3];
	sl->meta.mtime_pax = sl->strs[4];
	sl->meta.xattrs = NULL;
	if (e->xattr_count) {
		sl->x = calloc(e->xattr_count, sizeof(*sl->x));
		if (!sl->x)
			return rs_err_set(err, RS_NOMEM, "out of memory spooling %s", e->path);
		for (size_t k = 0; k < e->xattr_count; k++) {
			sl->x[k].name = report_strdup(e->xattrs[k].name);
			void *v = malloc(e->xattrs[k].value_len + 1);
			if (v)
				memcpy(v, e->xattrs[k].value, e->xattrs[k].value_len);
			sl->x[k].value = v;
			sl->x[k].value_len = e->xattrs[k].value_len;
			if (!sl->x[k].name || !v)
				return rs_err_set(err, RS_NOMEM, "out of memory spooling %s", e->path);
		}
		sl->meta.xattrs = sl->x;
	}
	sl->off = s->end;
	sl->filled = true;
	return RS_OK;
}

static enum rs_code spool_append(struct spool *s, const void *buf, size_t len, struct rs_err *err)
{
	const char *b = buf;
	while (len > 0) {
		ssize_t n = pwrite(s->fd, b, len, (off_t)s->end);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return rs_err_set(err, RS_IO, "hard-link spool: write failed: %s", strerror(errno));
		b += n;
		len -= (size_t)n;
		s->end += (uint64_t)n;
	}
	return RS_OK;
}

/* ---- pass 2 ----------------------------------------------------------------- */

struct p2 {
	struct run *r;
	struct squash_plan *plan;
	size_t layer;
	struct stream_sink *out; /* NULL: spool only */
	struct spool *sp;
	bool writing, spooling;
};

/* A hard link whose inode lost every surviving copy becomes a regular file
 * with the source's metadata and data. A sparse source is written expanded
 * (holes as zeros): synthesized headers are never sparse (tar_write.h). */
static enum rs_code write_materialized(struct p2 *c, const struct tar_entry *e, uint32_t slot, struct rs_err *err)
{
	if (slot >= c->sp->n || !c->sp->slots[slot].filled)
		return rs_err_set(err, RS_BAD_INPUT, "entry '%s': hard-link source was not spooled", e->path);
	const struct spool_slot *sl = &c->sp->slots[slot];
	struct tar_entry m = sl->meta;
	struct tar_sparse *sp = NULL;
	enum rs_code rc = RS_OK;
	m.path = e->path;
	if (m.sparse) {
		rc = tar_sparse_new(&sp, &sl->meta, sl->raw, sl->raw_len, err);
		m.type = TAR_TYPE_FILE;
		m.size = m.real_size;
		m.sparse = false;
	}
	if (rc == RS_OK)
		rc = tar_write_header(c->out, &m, err);
	uint64_t done = 0;
	while (rc == RS_OK && done < sl->meta.size) {
		size_t want = sl->meta.size - done > PUMP_BUF ? PUMP_BUF : (size_t)(sl->meta.size - done);
		ssize_t n = pread(c->sp->fd, c->r->mbuf, want, (off_t)(sl->off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = rs_err_set(err, RS_IO, "hard-link spool: read failed");
			break;
		}
		if (sp)
			rc = tar_sparse_write(sp, c->r->mbuf, (size_t)n, c->out, err);
		else
			rc = stream_write(c->out, c->r->mbuf, (size_t)n, err);
		done += (uint64_t)n;
	}
	if (rc == RS_OK && sp)
		rc = tar_sparse_end(sp, c->out, err);
	if (rc == RS_OK)
		rc = tar_write_padding(c->out, m.size, err);
	tar_sparse_free(sp);
	return rc;
}

static enum rs_code p2_entry(void *ctx, const struct tar_entry *e, const void *raw, size_t raw_len,
			     enum tar_verdict *verdict, struct rs_err *err)
{
	struct p2 *c = ctx;
	struct squash_decision d;
	enum rs_code rc = squash_decide(c->plan, c->layer, e->index, e->header_offset, &d, err);
	if (rc != RS_OK)
		return rc;
	c->writing = c->spooling = false;
	*verdict = TAR_DROP;
	if (d.spool) {
		rc = spool_keep_meta(c->sp, d.spool_id, e, raw, raw_len, err);
		if (rc != RS_OK)
			return rc;
		c->spooling = true;
		*verdict = TAR_KEEP;
	}
	if (!c->out)
		return RS_OK;
	switch (d.action) {
	case SQUASH_EMIT:
		if (d.fold_global)
			rc = tar_write_folded(c->out, e, raw, raw_len, err);
		else
			rc = tar_write_raw(c->out, raw, raw_len, err);
		c->writing = true;
		*verdict = TAR_KEEP;
		break;
	case SQUASH_DROP: break;
	case SQUASH_RELINK: {
		struct tar_entry m = *e;
		m.linkpath = d.link_path;
		m.size = 0;
		m.sparse = false;
		rc = tar_write_header(c->out, &m, err);
		break;
	}
	case SQUASH_MATERIALIZE: rc = write_materialized(c, e, d.source_spool, err); break;
	}
	return rc;
}

static enum rs_code p2_data(void *ctx, const struct tar_entry *e, const void *buf, size_t len, bool padding,
			    struct rs_err *err)
{
	(void)e;
	struct p2 *c = ctx;
	enum rs_code rc = RS_OK;
	if (c->spooling && !padding)
		rc = spool_append(c->sp, buf, len, err);
	if (rc == RS_OK && c->writing)
		rc = stream_write(c->out, buf, len, err);
	return rc;
}

/* Feed layer l's tar spool (pass 1's verified decompressed tar) into tar,
 * with progress in compressed-byte units. */
static enum rs_code pump_spool(struct run *r, const struct layer_in *l, struct stream_sink *tar,
			       struct rs_err *err)
{
	uint64_t base = r->done, done = 0, last = 0;
	while (done < l->uncompressed) {
		enum rs_code sc = pipeline_check_stop(r->o, err);
		if (sc != RS_OK)
			return sc;
		size_t want = l->uncompressed - done > PUMP_BUF ? PUMP_BUF : (size_t)(l->uncompressed - done);
		ssize_t n = read(l->tar_fd, r->tbuf, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return rs_err_set(err, RS_IO, "tar spool: read failed at offset %" PRIu64 ": %s", done,
					  strerror(errno));
		if (n == 0)
			return rs_err_set(err, RS_IO, "tar spool: ended at %" PRIu64 " of %" PRIu64 " bytes", done,
					  l->uncompressed);
		enum rs_code rc = stream_write(tar, r->tbuf, (size_t)n, err);
		if (rc != RS_OK)
			return rc;
		done += (uint64_t)n;
		/* the rest of a dropped entry's data is not read at all */
		uint64_t skip = tar_read_skippable(tar);
		if (skip > l->uncompressed - done)
			skip = l->uncompressed - done;
		if (skip >= PUMP_BUF / 4) {
			if (lseek(l->tar_fd, (off_t)skip, SEEK_CUR) < 0)
				return rs_err_set(err, RS_IO, "tar spool: seek failed at offset %" PRIu64 ": %s", done,
						  strerror(errno));
			rc = tar_read_skip(tar, skip, err);
			if (rc != RS_OK)
				return rc;
			done += skip;
		}
		if (done - last >= 16 * PUMP_BUF || done == l->uncompressed) {
			last = done;
			r->done = base + (uint64_t)((double)l->range.size * ((double)done / (double)l->uncompressed));
			pipeline_progress_report(r);
		}
	}
	r->done = base + l->range.size;
	return RS_OK;
}

enum rs_code pipeline_write_layer(struct run *r, struct squash_plan *plan, size_t i, size_t n, struct layer_in *l,
				  struct stream_sink *out, struct spool *sp, struct rs_err *err)
{
	struct p2 c = {r, plan, i, out, sp, false, false};
	struct tar_read_cbs cbs = {p2_entry, p2_data, NULL};
	struct stream_sink *tar = NULL, *dec = NULL;
	struct codec_decode_opts dopts = {0};
	dopts.inflate = r->o->inflate;
	enum rs_code rc = tar_read_new(&tar, &cbs, &c, err);
	if (rc == RS_OK && l->tar_fd < 0)
		rc = codec_decoder_new(&dec, l->kind, &dopts, tar, err);
	r->phase = out ? "write" : "spool";
	r->layer = i;
	r->layer_count = n;
	if (rc == RS_OK && dec)
		rc = pipeline_pump(r, &l->range, dec, err);
	else if (rc == RS_OK)
		rc = pump_spool(r, l, tar, err);
	if (rc == RS_OK)
		rc = stream_finish(dec ? dec : tar, err);
	if (rc == RS_OK && tar) {
		struct tar_read_stats st;
		tar_read_stats(tar, &st);
		if (st.entries != squash_layer_entries(plan, i))
			rc = rs_err_set(err, RS_BAD_INPUT, "layer changed between passes: %" PRIu64 " entries, was %" PRIu64,
					st.entries, squash_layer_entries(plan, i));
	}
	if (rc != RS_OK)
		pipeline_layer_prefix(err, i, n, l);
	stream_free(dec);
	stream_free(tar);
	if (l->tar_fd >= 0) {
		close(l->tar_fd); /* read once: frees its space now */
		l->tar_fd = -1;
	}
	return rc;
}

/* ---- output groups ----------------------------------------------------------- */

enum codec_kind pipeline_out_kind(const struct policy *p)
{
	return p->compression == POLICY_COMPRESS_ZSTD ? CODEC_ZSTD
	       : p->compression == POLICY_COMPRESS_GZIP ? CODEC_GZIP
							: CODEC_NONE;
}

void pipeline_group_abandon(struct group_out *g)
{
	stream_free(g->dsu);
	stream_free(g->enc);
	stream_free(g->dsc);
	stream_free(g->fds);
	if (g->fd >= 0) {
		close(g->fd);
		(void)unlink(g->tmp); /* our temp file */
	}
	g->fd = -1;
	g->fds = g->dsc = g->enc = g->dsu = NULL;
}

enum rs_code pipeline_group_open(struct run *r, struct group_out *g, struct rs_err *err)
{
	memset(g, 0, sizeof(*g));
	g->fd = -1;
	enum rs_code rc = layout_writer_tmp(r->w, &g->fd, g->tmp, sizeof(g->tmp), err);
	struct codec_encode_opts eo = {0};
	eo.kind = pipeline_out_kind(r->o->policy);
	eo.level = r->o->policy->level;
	eo.threads = r->o->threads ? r->o->threads : 1;
	eo.zstd_job_bytes = RS_LIMIT_ZSTD_JOB_BYTES; /* bounds the workers' memory (codec.h) */
	if (rc == RS_OK)
		rc = stream_fd_sink_new(&g->fds, g->fd, err);
	if (rc == RS_OK)
		rc = stream_digest_sink_new(&g->dsc, g->fds, err);
	if (rc == RS_OK)
		rc = codec_encoder_new(&g->enc, &eo, g->dsc, err);
	if (rc == RS_OK)
		rc = stream_digest_sink_new(&g->dsu, g->enc, err);
	if (rc != RS_OK)
		pipeline_group_abandon(g);
	return rc;
}

enum rs_code pipeline_group_close(struct run *r, struct group_out *g, struct report_out_layer *ol,
				  struct rs_err *err)
{
	enum rs_code rc = tar_write_end(g->dsu, err);
	if (rc == RS_OK)
		rc = stream_finish(g->dsu, err);
	if (rc != RS_OK) {
		pipeline_group_abandon(g);
		return rc;
	}
	stream_digest_sink_result(g->dsu, ol->diff_id, &ol->uncompressed);
	stream_digest_sink_result(g->dsc, ol->digest, &ol->size);
	int fd = g->fd;
	g->fd = -1;
	pipeline_group_abandon(g);
	return layout_writer_commit_tmp(r->w, fd, g->tmp, ol->digest, err);
}

enum rs_code pipeline_holes_check(struct squash_plan *plan, struct layer_in *layers, size_t n, struct rs_err *err)
{
	for (size_t i = 0; i < n; i++) {
		struct layer_in *l = &layers[i];
		for (size_t k = 0; l->tar_fd >= 0 && k < l->nholes; k += 2) {
			struct squash_decision d;
			enum rs_code rc = squash_decide(plan, i, l->holes[k], l->holes[k + 1], &d, err);
			if (rc != RS_OK)
				return rc;
			if (d.action != SQUASH_DROP || d.spool) {
				close(l->tar_fd);
				l->tar_fd = -1;
			}
		}
	}
	return RS_OK;
}
