/* imagewalk: one depth-first walk of a manifest or index and what it names
 * (imagewalk.h). Each document is loaded through the caller's loader,
 * sniffed and parsed with imagejson.c, and held (bytes and parsed struct)
 * until its LEAVE; so at most RS_LIMIT_WALK_DEPTH + 1 documents are in
 * memory at once. No I/O of its own: it talks only to the caller's loader
 * and visitor. */
#include "imagewalk.h"

#include "rs_limits.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>

struct walk {
	const struct imagewalk *w;
	unsigned max_depth;
	unsigned loaded;
	bool stopped;
};

/* A document's parsed form, owned by the one who loaded it. */
struct doc {
	struct imagejson_index index;
	struct imagejson_manifest manifest;
};

static const char *doc_name(const char *what, const struct imagewalk_node *n)
{
	return what ? what : n->digest ? n->digest : "document";
}

static enum rs_code visit(struct walk *k, enum imagewalk_event ev, const struct imagewalk_node *n,
                          enum imagewalk_step *step, struct rs_err *err)
{
	*step = IMAGEWALK_CONTINUE;
	enum rs_code rc = k->w->visit(k->w->ctx, ev, n, step, err);
	if (rc == RS_OK && *step == IMAGEWALK_STOP)
		k->stopped = true;
	return rc;
}

/* REF of the config and of each layer of manifest n. */
static enum rs_code walk_blobs(struct walk *k, const struct imagewalk_node *n, struct rs_err *err)
{
	const struct imagejson_manifest *m = n->manifest;
	for (size_t i = 0; i <= m->layer_count; i++) {
		const struct imagejson_descriptor *d = i == 0 ? &m->config : &m->layers[i - 1];
		struct imagewalk_node c = {
			.kind = i == 0 ? IMAGEWALK_CONFIG : IMAGEWALK_LAYER,
			.digest = d->digest,
			.media_type = d->media_type,
			.size = d->size,
			.depth = n->depth + 1,
			.pos = i == 0 ? 0 : i - 1,
			.parent = n,
			.desc = d,
		};
		enum imagewalk_step step;
		enum rs_code rc = visit(k, IMAGEWALK_REF, &c, &step, err);
		if (rc != RS_OK || k->stopped)
			return rc;
	}
	return RS_OK;
}

static enum rs_code walk_entry(struct walk *k, struct imagewalk_node *c, enum imagewalk_step how,
                               struct rs_err *err);

/* n's bytes are loaded: sniff, LOADED, parse into d, ENTER, its descriptors. */
static enum rs_code walk_document(struct walk *k, struct imagewalk_node *n, struct doc *d, struct rs_err *err)
{
	enum imagejson_kind kind;
	enum rs_code rc = imagejson_sniff(&kind, n->buf, n->len, doc_name(k->w->manifest_what, n), err);
	if (rc != RS_OK)
		return rc;
	n->kind = kind == IMAGEJSON_INDEX ? IMAGEWALK_INDEX : IMAGEWALK_MANIFEST;
	enum imagewalk_step step;
	if ((rc = visit(k, IMAGEWALK_LOADED, n, &step, err)) != RS_OK || step == IMAGEWALK_SKIP || k->stopped)
		return rc;
	if (kind == IMAGEJSON_INDEX) {
		if ((rc = imagejson_parse_index(&d->index, n->buf, n->len, doc_name(k->w->index_what, n), err)))
			return rc;
		n->index = &d->index;
	} else {
		const char *what = doc_name(k->w->manifest_what, n);
		if ((rc = imagejson_parse_manifest(&d->manifest, n->buf, n->len, what, err)))
			return rc;
		n->manifest = &d->manifest;
	}
	if ((rc = visit(k, IMAGEWALK_ENTER, n, &step, err)) != RS_OK || step == IMAGEWALK_SKIP || k->stopped)
		return rc;
	if (kind != IMAGEJSON_INDEX)
		return walk_blobs(k, n, err);
	for (size_t i = 0; i < d->index.manifest_count; i++) {
		const struct imagejson_descriptor *e = &d->index.manifests[i];
		struct imagewalk_node c = {
			.kind = IMAGEWALK_ENTRY,
			.digest = e->digest,
			.media_type = e->media_type,
			.size = e->size,
			.depth = n->depth + 1,
			.pos = i,
			.parent = n,
			.desc = e,
		};
		if ((rc = visit(k, IMAGEWALK_REF, &c, &step, err)) != RS_OK || k->stopped)
			return rc;
		if ((rc = walk_entry(k, &c, step, err)) != RS_OK || k->stopped)
			return rc;
	}
	return RS_OK;
}

/* Load n's document (within the bounds) and walk it; *buf and *mt are the
 * loader's, freed by the caller. */
static enum rs_code load_and_walk(struct walk *k, struct imagewalk_node *n, struct doc *d, char **buf, char **mt,
                                  struct rs_err *err)
{
	if (n->depth > k->max_depth)
		return rs_err_set(err, RS_BAD_INPUT, "%s: indexes nested more than %u deep (RS_LIMIT_WALK_DEPTH)",
		                  n->parent && n->parent->digest ? n->parent->digest : "index", k->max_depth);
	if (k->loaded >= RS_LIMIT_WALK_DOCUMENTS)
		return rs_err_set(err, RS_BAD_INPUT,
		                  "%s: the image names more than %u manifests (RS_LIMIT_WALK_DOCUMENTS)", n->digest ? n->digest : "document", (unsigned)RS_LIMIT_WALK_DOCUMENTS);
	k->loaded++;
	size_t len = 0;
	enum rs_code rc = k->w->load(k->w->ctx, n, buf, &len, mt, err);
	if (rc != RS_OK)
		return rc;
	n->buf = *buf;
	n->len = len;
	n->size = len;
	n->media_type = *mt;
	return walk_document(k, n, d, err);
}

/* Index entry c after its REF: loaded and walked unless how is SKIP (or
 * there is no loader), then LEAVE. */
static enum rs_code walk_entry(struct walk *k, struct imagewalk_node *c, enum imagewalk_step how,
                               struct rs_err *err)
{
	struct doc d = {0};
	char *buf = NULL, *mt = NULL;
	enum rs_code rc = RS_OK;
	if (how != IMAGEWALK_SKIP && k->w->load) {
		struct rs_err below = {0};
		rc = load_and_walk(k, c, &d, &buf, &mt, how == IMAGEWALK_BEST_EFFORT ? &below : err);
		if (rc != RS_OK && how == IMAGEWALK_BEST_EFFORT) {
			/* the visitor asked for best effort: the entry is left as
			 * if it had not been loaded, and the walk goes on */
			rc = RS_OK;
			*c = (struct imagewalk_node){.kind = IMAGEWALK_ENTRY, .digest = c->desc->digest,
			                             .media_type = c->desc->media_type, .size = c->desc->size,
			                             .depth = c->depth, .pos = c->pos, .parent = c->parent,
			                             .desc = c->desc};
		}
	}
	enum imagewalk_step step;
	if (rc == RS_OK && !k->stopped)
		rc = visit(k, IMAGEWALK_LEAVE, c, &step, err);
	imagejson_index_dispose(&d.index);
	imagejson_manifest_dispose(&d.manifest);
	free(buf);
	free(mt);
	return rc;
}

static struct walk walk_init(const struct imagewalk *w)
{
	assert(w->visit);
	struct walk k = {.w = w, .max_depth = w->max_depth};
	if (k.max_depth == 0 || k.max_depth > RS_LIMIT_WALK_DEPTH)
		k.max_depth = RS_LIMIT_WALK_DEPTH;
	return k;
}

enum rs_code imagewalk_run(const struct imagewalk *w, const char *digest, struct rs_err *err)
{
	assert(w->load);
	struct walk k = walk_init(w);
	struct imagewalk_node n = {.kind = IMAGEWALK_ENTRY, .digest = digest};
	struct doc d = {0};
	char *buf = NULL, *mt = NULL;
	enum rs_code rc = load_and_walk(&k, &n, &d, &buf, &mt, err);
	enum imagewalk_step step;
	if (rc == RS_OK && !k.stopped)
		rc = visit(&k, IMAGEWALK_LEAVE, &n, &step, err);
	imagejson_index_dispose(&d.index);
	imagejson_manifest_dispose(&d.manifest);
	free(buf);
	free(mt);
	return rc;
}

enum rs_code imagewalk_bytes(const struct imagewalk *w, const char *digest, const char *buf, size_t len,
                             const char *media_type, struct rs_err *err)
{
	struct walk k = walk_init(w);
	struct imagewalk_node n = {.kind = IMAGEWALK_ENTRY, .digest = digest, .media_type = media_type, .size = len,
	                           .buf = buf, .len = len};
	struct doc d = {0};
	k.loaded = 1;
	enum rs_code rc = walk_document(&k, &n, &d, err);
	enum imagewalk_step step;
	if (rc == RS_OK && !k.stopped)
		rc = visit(&k, IMAGEWALK_LEAVE, &n, &step, err);
	imagejson_index_dispose(&d.index);
	imagejson_manifest_dispose(&d.manifest);
	return rc;
}
