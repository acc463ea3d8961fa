/* squash: the path table and the per-entry decisions of the optimizer (see
 * squash.h for the semantics). Entries and path nodes live in two growable
 * arrays capped together at max_entries; path nodes form a tree (parent,
 * first child, next sibling) indexed by a hash of (parent, component). A
 * node's `cur` is the entry that holds the path at the point pass 1 has
 * reached, exactly as an unpacker would see it; kills and overwrites record
 * the id of the entry that caused them so that finish() can tell whether it
 * happened inside the same output group and before or after a given link.
 *
 * No I/O, no layer bytes: the pipeline feeds metadata and asks decisions. */
#include "squash.h"

#include "digest.h"
#include "rs_limits.h"
#include "xalloc.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define NONE UINT32_MAX

enum kind { K_NORMAL = 0, K_WHITEOUT, K_OPAQUE, K_META, K_GLOBAL };

#define F_IN_LINK 1u
#define F_WH_APPLIED 2u
#define F_SPOOL 4u

struct ent {
	uint64_t size;
	uint64_t hdr_off;
	uint64_t wh_size; /* whiteouts: bytes they removed (dive) */
	uint32_t node;
	uint32_t layer;
	uint32_t link_target, link_src;
	uint32_t dup_of;
	uint32_t killed_by, superseded_by;
	uint32_t carrier;
	uint32_t spool_id;
	uint32_t aux; /* MATERIALIZE: spool slot; RELINK: target node */
	uint8_t type, kind, flags, action, reason;
	int8_t rule;
	char ident[SQUASH_IDENT_LEN];
};

struct node {
	uint32_t parent, first_child, next_sibling, hnext;
	uint32_t name_off, name_len;
	uint32_t cur;
	uint32_t sstate; /* strip state of the path (strip_states), 0 without strip */
};

struct squash_plan {
	struct squash_opts o;
	uint64_t max;
	struct ent *ents;
	uint32_t nents, ents_cap;
	struct node *nodes;
	uint32_t nnodes, nodes_cap;
	uint32_t *buckets;
	uint32_t nbuckets;
	char *names;
	size_t names_len, names_cap;
	uint32_t *layer_first; /* layer_count + 1 */
	size_t cur_layer;
	bool started, finished;
	uint32_t spools;
	bool *layer_spool;
	struct squash_layer_stats *lstats;
	struct squash_stats stats;
	uint64_t *rule_bytes, *rule_entries;
	struct strip_states *sstates; /* NULL without strip rules */
	char *scratch;
	size_t scratch_cap;
	uint32_t *stack;
	size_t stack_cap;
};

static enum rs_code nomem(struct rs_err *err)
{
	return rs_err_set(err, RS_NOMEM, "out of memory in the squash path table");
}

static bool grow(void **arr, uint32_t *cap, uint32_t need, size_t elem)
{
	if (need <= *cap)
		return true;
	uint64_t nc = *cap ? (uint64_t)*cap * 2 : 1024;
	while (nc < need)
		nc *= 2;
	if (nc > UINT32_MAX - 1)
		nc = UINT32_MAX - 1;
	void *n = xalloc_realloc(*arr, nc * elem);
	if (!n)
		return false;
	*arr = n;
	*cap = (uint32_t)nc;
	return true;
}

static uint32_t hash_key(uint32_t parent, const char *name, size_t len)
{
	uint32_t h = 2166136261u ^ (parent * 0x9E3779B1u);
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)name[i];
		h *= 16777619u;
	}
	return h;
}

static bool rehash(struct squash_plan *p, uint32_t nb)
{
	uint32_t *b = xalloc_malloc((size_t)nb * sizeof(uint32_t));
	if (!b)
		return false;
	for (uint32_t i = 0; i < nb; i++)
		b[i] = NONE;
	for (uint32_t i = 1; i < p->nnodes; i++) {
		struct node *n = &p->nodes[i];
		uint32_t h = hash_key(n->parent, p->names + n->name_off, n->name_len) & (nb - 1);
		n->hnext = b[h];
		b[h] = i;
	}
	free(p->buckets);
	p->buckets = b;
	p->nbuckets = nb;
	return true;
}

enum rs_code squash_new(struct squash_plan **out, const struct squash_opts *opts, struct rs_err *err)
{
	*out = NULL;
	struct squash_plan *p = xalloc_calloc(1, sizeof(*p));
	if (!p)
		return nomem(err);
	p->o = *opts;
	p->max = opts->max_entries ? opts->max_entries : RS_LIMIT_PATH_TABLE_ENTRIES;
	size_t rc = opts->strip ? strip_rule_count(opts->strip) : 0;
	p->layer_first = xalloc_calloc(opts->layer_count + 1, sizeof(uint32_t));
	p->layer_spool = xalloc_calloc(opts->layer_count + 1, sizeof(bool));
	p->lstats = xalloc_calloc(opts->layer_count + 1, sizeof(*p->lstats));
	p->rule_bytes = xalloc_calloc(rc + 1, sizeof(uint64_t));
	p->rule_entries = xalloc_calloc(rc + 1, sizeof(uint64_t));
	if (!p->layer_first || !p->layer_spool || !p->lstats || !p->rule_bytes || !p->rule_entries ||
	    !grow((void **)&p->nodes, &p->nodes_cap, 1, sizeof(struct node)) || !rehash(p, 1024)) {
		squash_free(p);
		return nomem(err);
	}
	if (opts->strip) {
		enum rs_code src = strip_states_new(&p->sstates, opts->strip, err);
		if (src != RS_OK) {
			squash_free(p);
			return src;
		}
	}
	memset(&p->nodes[0], 0, sizeof(p->nodes[0])); /* sstate 0: the root's */
	p->nodes[0].parent = NONE;
	p->nodes[0].first_child = NONE;
	p->nodes[0].next_sibling = NONE;
	p->nodes[0].cur = NONE;
	p->nnodes = 1;
	*out = p;
	return RS_OK;
}

void squash_free(struct squash_plan *p)
{
	if (!p)
		return;
	free(p->ents);
	free(p->nodes);
	free(p->buckets);
	free(p->names);
	free(p->layer_first);
	free(p->layer_spool);
	free(p->lstats);
	free(p->rule_bytes);
	free(p->rule_entries);
	strip_states_free(p->sstates);
	free(p->scratch);
	free(p->stack);
	free(p);
}

static void feed_str(struct digest_ctx *d, const char *tag, const char *s)
{
	digest_update(d, tag, strlen(tag) + 1);
	if (s)
		digest_update(d, s, strlen(s) + 1);
	else
		digest_update(d, "", 1);
}

static void feed_u64(struct digest_ctx *d, const char *tag, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	digest_update(d, tag, strlen(tag) + 1);
	digest_update(d, b, sizeof(b));
}

void squash_identity_feed_meta(struct digest_ctx *d, const struct tar_entry *e)
{
	char t[2] = {e->type, 0};
	feed_str(d, "type", t);
	feed_u64(d, "mode", e->mode);
	feed_u64(d, "uid", e->uid);
	feed_u64(d, "gid", e->gid);
	feed_str(d, "uname", e->uname);
	feed_str(d, "gname", e->gname);
	feed_u64(d, "mtime", (uint64_t)e->mtime);
	feed_str(d, "mtime_pax", e->mtime_pax);
	feed_u64(d, "size", e->size);
	feed_u64(d, "real_size", e->real_size);
	feed_u64(d, "sparse", e->sparse);
	feed_str(d, "link", e->linkpath);
	feed_u64(d, "dev", ((uint64_t)e->devmajor << 32) | e->devminor);
	feed_u64(d, "xattrs", e->xattr_count);
	for (size_t i = 0; i < e->xattr_count; i++) {
		feed_str(d, "xn", e->xattrs[i].name);
		feed_u64(d, "xl", e->xattrs[i].value_len);
		digest_update(d, e->xattrs[i].value, e->xattrs[i].value_len);
	}
	feed_u64(d, "data", 0);
}

/* ---- path table ---------------------------------------------------------- */

static uint32_t find_child(const struct squash_plan *p, uint32_t parent, const char *name, size_t len)
{
	uint32_t h = hash_key(parent, name, len) & (p->nbuckets - 1);
	for (uint32_t i = p->buckets[h]; i != NONE; i = p->nodes[i].hnext) {
		const struct node *n = &p->nodes[i];
		if (n->parent == parent && n->name_len == len && memcmp(p->names + n->name_off, name, len) == 0)
			return i;
	}
	return NONE;
}

static enum rs_code check_room(struct squash_plan *p, struct rs_err *err)
{
	if ((uint64_t)p->nents + p->nnodes >= p->max || p->nents >= UINT32_MAX - 2 ||
	    p->nnodes >= UINT32_MAX - 2)
		return rs_err_set(err, RS_TOO_LARGE,
				  "image has more than %" PRIu64 " entries and paths, limit is %" PRIu64
				  " (RS_LIMIT_PATH_TABLE_ENTRIES)",
				  (uint64_t)p->nents + p->nnodes, p->max);
	return RS_OK;
}

/* Node of the component path[start..start+len) below parent. */
static enum rs_code child(struct squash_plan *p, uint32_t parent, const char *path, size_t start,
			  size_t len, bool create, uint32_t *out, struct rs_err *err)
{
	const char *name = path + start;
	uint32_t id = find_child(p, parent, name, len);
	if (id != NONE || !create) {
		*out = id;
		return RS_OK;
	}
	enum rs_code rc = check_room(p, err);
	if (rc != RS_OK)
		return rc;
	if (!grow((void **)&p->nodes, &p->nodes_cap, p->nnodes + 1, sizeof(struct node)))
		return nomem(err);
	if (p->names_len + len > UINT32_MAX)
		return rs_err_set(err, RS_TOO_LARGE, "path names exceed 4 GiB in the squash path table");
	if (p->names_len + len > p->names_cap) {
		size_t nc = p->names_cap ? p->names_cap * 2 : 65536;
		while (nc < p->names_len + len)
			nc *= 2;
		char *nn = xalloc_realloc(p->names, nc);
		if (!nn)
			return nomem(err);
		p->names = nn;
		p->names_cap = nc;
	}
	memcpy(p->names + p->names_len, name, len);
	id = p->nnodes++;
	struct node *n = &p->nodes[id];
	n->parent = parent;
	n->name_off = (uint32_t)p->names_len;
	n->name_len = (uint32_t)len;
	p->names_len += len;
	n->first_child = NONE;
	n->cur = NONE;
	n->next_sibling = p->nodes[parent].first_child;
	p->nodes[parent].first_child = id;
	n->sstate = 0;
	if (p->sstates) {
		rc = strip_states_child(p->sstates, p->nodes[parent].sstate, name, len, &n->sstate, err);
		if (rc != RS_OK)
			return rc;
	}
	uint32_t h = hash_key(parent, name, len) & (p->nbuckets - 1);
	n->hnext = p->buckets[h];
	p->buckets[h] = id;
	if (p->nnodes > p->nbuckets / 2 * 1 + p->nbuckets / 4 && !rehash(p, p->nbuckets * 2))
		return nomem(err);
	*out = id;
	return RS_OK;
}

/* Node of a normalised path ("." is the root). With create, missing nodes
 * are made; without, NONE when any component is missing. */
static enum rs_code lookup(struct squash_plan *p, const char *path, size_t plen, bool create,
			   uint32_t *out, struct rs_err *err)
{
	uint32_t cur = 0;
	if (plen == 0 || (plen == 1 && path[0] == '.')) {
		*out = 0;
		return RS_OK;
	}
	size_t i = 0;
	while (i < plen) {
		size_t j = i;
		while (j < plen && path[j] != '/')
			j++;
		if (j > i) {
			enum rs_code rc = child(p, cur, path, i, j - i, create, &cur, err);
			if (rc != RS_OK)
				return rc;
			if (cur == NONE) {
				*out = NONE;
				return RS_OK;
			}
		}
		i = j + 1;
	}
	*out = cur;
	return RS_OK;
}

static bool push(struct squash_plan *p, size_t *sp, uint32_t v)
{
	if (*sp >= p->stack_cap) {
		size_t nc = p->stack_cap ? p->stack_cap * 2 : 1024;
		uint32_t *s = xalloc_realloc(p->stack, nc * sizeof(uint32_t));
		if (!s)
			return false;
		p->stack = s;
		p->stack_cap = nc;
	}
	p->stack[(*sp)++] = v;
	return true;
}

/* Remove from the tree every entry below n (and n's own with self) whose
 * layer is < lim; killer is recorded. *bytes gets their data sizes. */
static enum rs_code kill(struct squash_plan *p, uint32_t n, bool self, uint32_t lim, uint32_t killer,
			 uint64_t *bytes, bool *any, struct rs_err *err)
{
	size_t sp = 0;
	if (self) {
		if (!push(p, &sp, n))
			return nomem(err);
	} else {
		for (uint32_t c = p->nodes[n].first_child; c != NONE; c = p->nodes[c].next_sibling)
			if (!push(p, &sp, c))
				return nomem(err);
	}
	while (sp > 0) {
		uint32_t x = p->stack[--sp];
		struct node *nd = &p->nodes[x];
		if (nd->cur != NONE && p->ents[nd->cur].layer < lim) {
			struct ent *e = &p->ents[nd->cur];
			e->killed_by = killer;
			*bytes += e->type == TAR_TYPE_HARDLINK ? 0 : e->size;
			*any = true;
			nd->cur = NONE;
		} else if (nd->cur != NONE && p->ents[nd->cur].dup_of != NONE &&
			   p->ents[p->ents[nd->cur].dup_of].layer < lim) {
			/* the same layer rewrote the path identically and then hid
			 * the lower copy: the rewrite is the only copy, keep it */
			p->ents[nd->cur].dup_of = NONE;
		}
		for (uint32_t c = nd->first_child; c != NONE; c = p->nodes[c].next_sibling)
			if (!push(p, &sp, c))
				return nomem(err);
	}
	return RS_OK;
}

enum rs_code squash_add(struct squash_plan *p, size_t layer, const struct tar_entry *e,
			const char ident[SQUASH_IDENT_LEN], struct rs_err *err)
{
	if (layer >= p->o.layer_count || (p->started && layer < p->cur_layer) || p->finished)
		return rs_err_set(err, RS_BAD_INPUT, "squash: layer %zu fed out of order", layer);
	while (!p->started || p->cur_layer < layer) {
		if (!p->started) {
			p->started = true;
			for (size_t l = 0; l <= layer; l++)
				p->layer_first[l] = p->nents;
			p->cur_layer = layer;
		} else {
			p->cur_layer++;
			p->layer_first[p->cur_layer] = p->nents;
		}
	}
	enum rs_code rc = check_room(p, err);
	if (rc != RS_OK)
		return rc;
	if (!grow((void **)&p->ents, &p->ents_cap, p->nents + 1, sizeof(struct ent)))
		return nomem(err);
	uint32_t xid = p->nents;
	struct ent x;
	memset(&x, 0, sizeof(x));
	x.size = e->size;
	x.hdr_off = e->header_offset;
	x.layer = (uint32_t)layer;
	x.node = x.link_target = x.link_src = x.dup_of = x.killed_by = x.superseded_by = NONE;
	x.carrier = x.spool_id = x.aux = NONE;
	x.type = (uint8_t)e->type;
	x.rule = -1;
	memcpy(x.ident, ident, SQUASH_IDENT_LEN);
	p->lstats[layer].entries++;

	if (e->type == TAR_TYPE_GLOBAL) {
		x.kind = K_GLOBAL;
		p->ents[p->nents++] = x;
		return RS_OK;
	}
	const char *path = e->path;
	size_t plen = strlen(path);
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	size_t dirlen = slash ? (size_t)(slash - path) : 0;
	if (strncmp(base, ".wh.", 4) == 0) {
		uint64_t bytes = 0;
		bool any = false;
		uint32_t n;
		p->lstats[layer].whiteouts++;
		if (strcmp(base, ".wh..wh..opq") == 0) {
			x.kind = K_OPAQUE;
			rc = lookup(p, path, dirlen, true, &n, err);
			if (rc == RS_OK)
				rc = kill(p, n, false, (uint32_t)layer, xid, &bytes, &any, err);
		} else if (strncmp(base, ".wh..wh.", 8) == 0) {
			x.kind = K_META;
			n = NONE;
		} else {
			x.kind = K_WHITEOUT;
			/* the target path: dir + "/" + name without ".wh." */
			size_t tl = dirlen + (dirlen ? 1 : 0) + strlen(base + 4);
			char *t = xalloc_malloc(tl + 1);
			if (!t)
				return nomem(err);
			if (dirlen) {
				memcpy(t, path, dirlen);
				t[dirlen] = '/';
			}
			memcpy(t + dirlen + (dirlen ? 1 : 0), base + 4, strlen(base + 4) + 1);
			rc = lookup(p, t, tl, true, &n, err);
			free(t);
			if (rc == RS_OK)
				rc = kill(p, n, true, (uint32_t)layer, xid, &bytes, &any, err);
		}
		if (rc != RS_OK)
			return rc;
		x.node = n;
		x.wh_size = bytes;
		if (any) {
			x.flags |= F_WH_APPLIED;
			p->lstats[layer].whiteouts_applied++;
		}
		p->ents[p->nents++] = x;
		return RS_OK;
	}
	(void)plen;
	uint32_t n;
	rc = lookup(p, path, strlen(path), true, &n, err);
	if (rc != RS_OK)
		return rc;
	x.node = n;
	uint32_t eid = p->nodes[n].cur;
	if (eid != NONE) {
		struct ent *old = &p->ents[eid];
		if (old->type == TAR_TYPE_DIR && x.type != TAR_TYPE_DIR) {
			/* a non-directory replaces a directory and everything below it */
			uint64_t bytes = 0;
			bool any = false;
			rc = kill(p, n, false, (uint32_t)layer + 1, xid, &bytes, &any, err);
			if (rc != RS_OK)
				return rc;
			old = &p->ents[eid];
		}
		old->superseded_by = xid;
		if (p->o.dedupe && old->layer < layer && old->kind == K_NORMAL && old->type == x.type &&
		    x.type != TAR_TYPE_HARDLINK && memcmp(old->ident, x.ident, SQUASH_IDENT_LEN) == 0)
			x.dup_of = eid;
	}
	if (x.type == TAR_TYPE_HARDLINK) {
		uint32_t tn;
		rc = lookup(p, e->linkpath, strlen(e->linkpath), false, &tn, err);
		if (rc != RS_OK)
			return rc;
		uint32_t t = tn == NONE ? NONE : p->nodes[tn].cur;
		if (t == NONE)
			return rs_err_set(err, RS_BAD_INPUT,
					  "tar: entry '%s' at offset %" PRIu64 " in layer %zu: hard link to '%s', which is not in the image",
					  e->path, e->header_offset, layer + 1, e->linkpath);
		x.link_target = t;
		x.link_src = p->ents[t].type == TAR_TYPE_HARDLINK ? p->ents[t].link_src : t;
		x.flags |= F_IN_LINK;
		p->ents[t].flags |= F_IN_LINK;
		p->ents[x.link_src].flags |= F_IN_LINK;
	}
	p->nodes[n].cur = xid;
	p->ents[p->nents++] = x;
	return RS_OK;
}

/* ---- decisions ------------------------------------------------------------ */

static size_t group_of(const struct squash_plan *p, uint32_t layer)
{
	switch (p->o.mode) {
	case POLICY_SQUASH_ALL: return 0;
	case POLICY_SQUASH_NONE: return layer;
	case POLICY_SQUASH_KEEP_BASE: return layer < p->o.base_count ? layer : p->o.base_count;
	}
	return 0;
}

bool squash_group_is_base(const struct squash_plan *p, size_t g)
{
	return p->o.mode == POLICY_SQUASH_KEEP_BASE && g < p->o.base_count;
}

size_t squash_group_count(const struct squash_plan *p)
{
	if (p->o.layer_count == 0)
		return 0;
	return group_of(p, (uint32_t)p->o.layer_count - 1) + 1;
}

size_t squash_layer_group(const struct squash_plan *p, size_t layer)
{
	return group_of(p, (uint32_t)layer);
}

/* True when group g holds more than one input layer: a pax global header
 * copied into it would reach the entries of the layers above its own. */
static bool group_merges(const struct squash_plan *p, size_t g)
{
	switch (p->o.mode) {
	case POLICY_SQUASH_ALL: return p->o.layer_count > 1;
	case POLICY_SQUASH_NONE: return false;
	case POLICY_SQUASH_KEEP_BASE: return g == p->o.base_count && p->o.layer_count > p->o.base_count + 1;
	}
	return false;
}

static bool present(const struct ent *e)
{
	return e->action != SQUASH_DROP;
}

/* Still at its path when entry `at` is processed (and written out). */
static bool valid_at(const struct squash_plan *p, uint32_t y, uint32_t at)
{
	const struct ent *e = &p->ents[y];
	return present(e) && (e->superseded_by == NONE || e->superseded_by > at) &&
	       (e->killed_by == NONE || e->killed_by > at);
}

static void drop(struct ent *e, enum squash_reason why)
{
	e->action = SQUASH_DROP;
	e->reason = (uint8_t)why;
}

struct eff {
	uint64_t cum;
	int64_t min;
};

static void eff_add(struct eff *a, uint32_t node, uint64_t size)
{
	if (node == NONE)
		return;
	a[node].cum += size;
	if (a[node].min < 0 || (int64_t)size < a[node].min)
		a[node].min = (int64_t)size;
}

static void eff_score(const struct eff *a, uint32_t n, double *score, uint64_t *wasted)
{
	uint64_t cum = 0, min = 0;
	for (uint32_t i = 0; i < n; i++) {
		cum += a[i].cum;
		if (a[i].min > 0)
			min += (uint64_t)a[i].min;
	}
	*score = cum ? (double)min / (double)cum : 1.0;
	*wasted = cum - min;
}

static uint64_t data_size(const struct ent *e)
{
	return e->kind == K_NORMAL && e->type != TAR_TYPE_HARDLINK && e->type != TAR_TYPE_DIR ? e->size : 0;
}

/* Step 1 of squash_finish: overlay within each group (entries a later
 * entry of the same group replaces or whiteouts hide; metadata headers). */
static void decide_overlay(struct squash_plan *p)
{
	for (uint32_t i = 0; i < p->nents; i++) {
		struct ent *e = &p->ents[i];
		size_t g = group_of(p, e->layer);
		e->action = SQUASH_EMIT;
		e->reason = SQUASH_KEPT;
		if (squash_group_is_base(p, g))
			continue;
		switch (e->kind) {
		case K_GLOBAL:
			if (group_merges(p, g))
				drop(e, SQUASH_BY_META); /* its records are folded into the entries */
			break;
		case K_META: drop(e, SQUASH_BY_META); break;
		case K_WHITEOUT:
		case K_OPAQUE:
			if (g == 0)
				drop(e, SQUASH_BY_WHITEOUT);
			break;
		default:
			if (e->killed_by != NONE && group_of(p, p->ents[e->killed_by].layer) == g)
				drop(e, SQUASH_BY_OVERLAY);
			else if (e->superseded_by != NONE && group_of(p, p->ents[e->superseded_by].layer) == g)
				drop(e, SQUASH_BY_OVERLAY);
		}
	}
}

/* Step 2: strip; a stripped directory stays when something below it stays,
 * and base layers are never stripped. */
static enum rs_code decide_strip(struct squash_plan *p, struct rs_err *err)
{
	if (!p->o.strip || p->nnodes <= 1)
		return RS_OK;
	uint8_t *st = xalloc_calloc(p->nnodes, 1); /* bit0 kept entry, bit1 kept below, bit2 in a base layer */
	if (!st)
		return nomem(err);
	for (uint32_t i = 0; i < p->nents; i++) {
		const struct ent *e = &p->ents[i];
		if (e->kind != K_NORMAL || e->node == NONE || !present(e))
			continue;
		if (squash_group_is_base(p, group_of(p, e->layer))) {
			st[e->node] |= 4; /* the path exists in a base layer */
			if (p->nodes[e->node].cur != i)
				continue;
		}
		st[e->node] |= 1;
	}
	for (uint32_t n = p->nnodes - 1; n >= 1; n--) {
		const struct node *nd = &p->nodes[n];
		bool stripped = strip_states_rule(p->sstates, nd->sstate) >= 0;
		if ((st[n] & 2) || ((st[n] & 1) && !stripped))
			st[nd->parent] |= 2;
	}
	for (uint32_t i = 0; i < p->nents; i++) {
		struct ent *e = &p->ents[i];
		if (e->kind != K_NORMAL || e->node == NONE || !present(e) ||
		    squash_group_is_base(p, group_of(p, e->layer)))
			continue;
		const struct node *nd = &p->nodes[e->node];
		int r = strip_states_rule(p->sstates, nd->sstate);
		/* base layers are never stripped: a path they hold keeps the
		 * upper layers' version rather than showing the base's */
		if (r >= 0 && !(st[e->node] & 2) && !(st[e->node] & 4)) {
			drop(e, SQUASH_BY_STRIP);
			e->rule = (int8_t)r;
		}
	}
	free(st);
	return RS_OK;
}

/* Step 3: dedupe identical rewrites across groups. */
static void decide_dedupe(struct squash_plan *p)
{
	for (uint32_t i = 0; i < p->nents; i++) {
		struct ent *x = &p->ents[i];
		if (x->dup_of == NONE || !present(x))
			continue;
		struct ent *e = &p->ents[x->dup_of];
		if (group_of(p, e->layer) == group_of(p, x->layer)) {
			if (!present(e) && e->reason == SQUASH_BY_OVERLAY)
				e->reason = SQUASH_BY_DEDUPE;
			continue;
		}
		if (squash_group_is_base(p, group_of(p, x->layer)))
			continue;
		if (e->killed_by != NONE && p->ents[e->killed_by].layer == x->layer)
			continue;
		if ((e->flags | x->flags) & F_IN_LINK)
			continue;
		if (!present(e) && e->reason != SQUASH_BY_DEDUPE)
			continue;
		drop(x, SQUASH_BY_DEDUPE);
	}
}

/* Step 4: hard links whose target does not survive are relinked to a
 * surviving copy or materialized from the spool. */
static void decide_links(struct squash_plan *p)
{
	for (uint32_t i = 0; i < p->nents; i++) {
		struct ent *x = &p->ents[i];
		if (x->type != TAR_TYPE_HARDLINK || x->kind != K_NORMAL || !present(x) ||
		    squash_group_is_base(p, group_of(p, x->layer)))
			continue;
		if (present(&p->ents[x->link_target]))
			continue;
		uint32_t s = x->link_src;
		struct ent *src = &p->ents[s];
		if (valid_at(p, s, i)) {
			x->action = SQUASH_RELINK;
			x->aux = src->node;
			p->stats.links_relinked++;
		} else if (src->carrier != NONE && valid_at(p, src->carrier, i)) {
			x->action = SQUASH_RELINK;
			x->aux = p->ents[src->carrier].node;
			p->stats.links_relinked++;
		} else {
			if (src->spool_id == NONE) {
				src->spool_id = p->spools++;
				src->flags |= F_SPOOL;
				p->layer_spool[src->layer] = true;
			}
			src->carrier = i;
			x->action = SQUASH_MATERIALIZE;
			x->aux = src->spool_id;
			p->stats.links_materialized++;
		}
	}
}

/* Step 5: statistics and dive's efficiency score, before and after. */
static enum rs_code plan_stats(struct squash_plan *p, struct rs_err *err)
{
	struct eff *in = xalloc_calloc(p->nnodes, sizeof(*in));
	struct eff *out = xalloc_calloc(p->nnodes, sizeof(*out));
	if (!in || !out) {
		free(in);
		free(out);
		return nomem(err);
	}
	for (uint32_t i = 0; i < p->nnodes; i++)
		in[i].min = out[i].min = -1;
	for (uint32_t i = 0; i < p->nents; i++) {
		const struct ent *e = &p->ents[i];
		struct squash_layer_stats *ls = &p->lstats[e->layer];
		uint64_t sz = data_size(e);
		if (e->kind == K_NORMAL)
			eff_add(in, e->node, sz);
		else if (e->kind == K_WHITEOUT)
			eff_add(in, e->node, e->wh_size);
		if (e->flags & F_WH_APPLIED)
			p->stats.whiteouts_applied++;
		if (present(e)) {
			ls->kept_entries++;
			if (e->kind == K_NORMAL) {
				uint64_t osz = sz;
				if (e->action == SQUASH_MATERIALIZE)
					osz = data_size(&p->ents[e->link_src]);
				eff_add(out, e->node, osz);
			} else if (e->kind == K_WHITEOUT)
				eff_add(out, e->node, e->wh_size);
			continue;
		}
		switch (e->reason) {
		case SQUASH_BY_STRIP:
			ls->stripped_entries++;
			ls->stripped_bytes += sz;
			p->rule_bytes[e->rule] += sz;
			p->rule_entries[e->rule]++;
			break;
		case SQUASH_BY_DEDUPE:
			ls->dup_entries++;
			ls->dup_bytes += sz;
			p->stats.dup_entries++;
			p->stats.dup_bytes += sz;
			break;
		case SQUASH_BY_OVERLAY:
			ls->overlay_entries++;
			ls->overlay_bytes += sz;
			break;
		default: break;
		}
	}
	eff_score(in, p->nnodes, &p->stats.efficiency_in, &p->stats.wasted_in);
	eff_score(out, p->nnodes, &p->stats.efficiency_out, &p->stats.wasted_out);
	free(in);
	free(out);
	p->stats.entries = p->nents;
	for (uint32_t n = 1; n < p->nnodes; n++) {
		uint32_t c = p->nodes[n].cur;
		if (c == NONE)
			continue;
		p->stats.final_paths++;
		if (!present(&p->ents[c]) && p->ents[c].reason == SQUASH_BY_STRIP)
			p->stats.stripped_paths++;
	}
	return RS_OK;
}

enum rs_code squash_finish(struct squash_plan *p, struct rs_err *err)
{
	if (p->finished)
		return RS_OK;
	/* layers that had no entries (or were never fed) start where the next does */
	if (!p->started) {
		p->started = true;
		p->cur_layer = 0;
	}
	for (size_t l = p->cur_layer + 1; l <= p->o.layer_count; l++)
		p->layer_first[l] = p->nents;
	p->finished = true;

	decide_overlay(p);
	enum rs_code rc = decide_strip(p, err);
	if (rc != RS_OK)
		return rc;
	decide_dedupe(p);
	decide_links(p);
	return plan_stats(p, err);
}

/* The path of node n into the scratch buffer (NUL-terminated). */
static const char *node_path(struct squash_plan *p, uint32_t n, struct rs_err *err)
{
	size_t len = 0;
	for (uint32_t x = n; x != 0 && x != NONE; x = p->nodes[x].parent)
		len += p->nodes[x].name_len + 1;
	if (len + 2 > p->scratch_cap) {
		char *s = xalloc_realloc(p->scratch, len + 2);
		if (!s) {
			(void)nomem(err);
			return NULL;
		}
		p->scratch = s;
		p->scratch_cap = len + 2;
	}
	if (n == 0) {
		memcpy(p->scratch, ".", 2);
		return p->scratch;
	}
	size_t pos = len - 1; /* no trailing '/' */
	p->scratch[pos] = '\0';
	for (uint32_t x = n; x != 0; x = p->nodes[x].parent) {
		const struct node *nd = &p->nodes[x];
		pos -= nd->name_len;
		memcpy(p->scratch + pos, p->names + nd->name_off, nd->name_len);
		if (pos > 0)
			p->scratch[--pos] = '/';
	}
	return p->scratch;
}

enum rs_code squash_decide(struct squash_plan *p, size_t layer, uint64_t ordinal, uint64_t header_offset,
			   struct squash_decision *out, struct rs_err *err)
{
	memset(out, 0, sizeof(*out));
	if (layer >= p->o.layer_count || ordinal >= squash_layer_entries(p, layer))
		return rs_err_set(err, RS_BAD_INPUT,
				  "layer %zu changed between passes: entry %" PRIu64 " was not there before", layer + 1,
				  ordinal);
	const struct ent *e = &p->ents[p->layer_first[layer] + ordinal];
	if (e->hdr_off != header_offset)
		return rs_err_set(err, RS_BAD_INPUT,
				  "layer %zu changed between passes: entry %" PRIu64 " at offset %" PRIu64
				  ", was at %" PRIu64,
				  layer + 1, ordinal, header_offset, e->hdr_off);
	out->action = (enum squash_action)e->action;
	out->reason = (enum squash_reason)e->reason;
	out->rule = e->rule;
	out->group = group_of(p, e->layer);
	out->fold_global = group_merges(p, out->group);
	out->spool = (e->flags & F_SPOOL) != 0;
	out->spool_id = e->spool_id;
	if (e->action == SQUASH_MATERIALIZE)
		out->source_spool = e->aux;
	if (e->action == SQUASH_RELINK) {
		out->link_path = node_path(p, e->aux, err);
		if (!out->link_path)
			return RS_NOMEM;
	}
	return RS_OK;
}

uint64_t squash_layer_entries(const struct squash_plan *p, size_t layer)
{
	if (layer >= p->o.layer_count)
		return 0;
	if (!p->finished)
		return p->lstats[layer].entries;
	return p->layer_first[layer + 1] - p->layer_first[layer];
}

bool squash_layer_needs_spool(const struct squash_plan *p, size_t layer)
{
	return layer < p->o.layer_count && p->layer_spool[layer];
}

uint32_t squash_spool_count(const struct squash_plan *p)
{
	return p->spools;
}

void squash_layer_stats(const struct squash_plan *p, size_t layer, struct squash_layer_stats *out)
{
	if (layer >= p->o.layer_count) {
		memset(out, 0, sizeof(*out));
		return;
	}
	*out = p->lstats[layer];
}

void squash_stats(const struct squash_plan *p, struct squash_stats *out)
{
	*out = p->stats;
	out->rule_bytes = p->rule_bytes;
	out->rule_entries = p->rule_entries;
	out->rule_count = p->o.strip ? strip_rule_count(p->o.strip) : 0;
}

enum rs_code squash_each_stripped(struct squash_plan *p, squash_path_fn cb, void *ctx, struct rs_err *err)
{
	for (uint32_t n = 1; n < p->nnodes; n++) {
		uint32_t c = p->nodes[n].cur;
		if (c == NONE)
			continue;
		const struct ent *e = &p->ents[c];
		if (present(e) || e->reason != SQUASH_BY_STRIP)
			continue;
		const char *path = node_path(p, n, err);
		if (!path)
			return RS_NOMEM;
		enum rs_code rc = cb(ctx, path, strip_rule_name(p->o.strip, (size_t)e->rule), err);
		if (rc != RS_OK)
			return rc;
	}
	return RS_OK;
}
