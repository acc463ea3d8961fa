/* store_s3_gc: deletes and garbage collection of pushed images on the "s3"
 * storage driver (store_s3.h; the fs driver's are push.c's, with the same
 * rules, docs/push.md "Deletes" and "Garbage collection").
 *
 * Deletes remove keys under P push/: a manifest delete the tags of the
 * repository that point at it, then its link and its referrers-index entry;
 * a tag delete the tag; a blob delete the repository's link. The bytes stay
 * until a sweep.
 *
 * A sweep (s3s_pushed_gc) lists P push/links/ with ListObjectsV2: every
 * manifest link is a root, walked (config/imagewalk.h) to mark what it keeps;
 * then P push/manifests/ and P push/blobs/: an object no root keeps goes when
 * its last use (its own LastModified, or that of a link to it, rewritten by
 * every upload, mount or manifest push that takes it) is older than
 * push.gc_grace_s. Before removing anything it lists the links again: a
 * root that appeared meanwhile (a push on any replica during the sweep) is
 * walked too, and an object a link took meanwhile is kept ("raced"). A
 * manifest kept for its age keeps what it references. Nothing is removed
 * when a listing or a root's walk fails. Objects an upload in progress
 * will produce do not exist yet (parts live under P uploads/), so no upload
 * is touched. No HTTP, no Redis. */
#include "store_s3.h"

#include "imagewalk.h"
#include "refindex.h"
#include "refname.h"
#include "rs_limits.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ deletes */

/* RS_OK when key exists, RS_NOT_FOUND when not, another code when the bucket does not answer. */
static enum rs_code present(struct s3s *s, const char *key, struct rs_err *err)
{
	struct s3_object_info info;
	return s3_head(s->c, key, &info, err);
}

/* Remove every tag of repo that points at digest; the count. */
static unsigned untag(struct s3s *s, const char *repo, const char *digest)
{
	char key[S3S_KEY_MAX];
	struct rs_err e = {0};
	struct s3s_names ns = {0};
	unsigned n = 0;
	if (s3s_key(key, s, &e, "push/tags/%s/_tags/", repo) != RS_OK || s3s_list_names(s, key, &ns, &e) != RS_OK) {
		s3s_names_free(&ns);
		return 0;
	}
	for (size_t i = 0; i < ns.n; i++) {
		struct store_tag t;
		if (!refname_tag_valid(ns.v[i]) || s3s_key(key, s, &e, "push/tags/%s/_tags/%s", repo, ns.v[i]) != RS_OK ||
		    s3s_tag_read(s, key, &t, &e) != RS_OK || strcmp(t.digest, digest) != 0)
			continue;
		if (s3_delete(s->c, key, &e) == RS_OK)
			n++;
	}
	s3s_names_free(&ns);
	return n;
}

enum rs_code s3s_pushed_delete_manifest(void *impl, const char *repo, const char *digest, unsigned *out_tags,
                                        struct rs_err *err)
{
	struct s3s *s = impl;
	char link[S3S_KEY_MAX], key[S3S_KEY_MAX];
	if (!refname_repo_valid(repo))
		return rs_err_set(err, RS_NOT_FOUND, "manifest %s is unknown to repository %.200s", digest, repo);
	enum rs_code rc = s3s_key(link, s, err, "push/links/%s/_manifests/%s", repo, digest_hex(digest));
	if (rc == RS_OK && (rc = present(s, link, err)) == RS_NOT_FOUND)
		return rs_err_set(err, RS_NOT_FOUND, "manifest %s is unknown to repository %.200s", digest, repo);
	if (rc)
		return rc;
	/* the tags first: a tag is served without a look at the link */
	unsigned tags = untag(s, repo, digest);
	char subject[DIGEST_STR_SIZE] = "";
	char *buf = NULL, *type = NULL;
	size_t len = 0;
	struct rs_err e = {0};
	if (s3s_manifest_get(s, STORE_PUSHED, digest, s->cfg->manifest_max_bytes, &buf, &len, &type, &e) == RS_OK &&
	    refindex_subject_of(subject, buf, len, &e) != RS_OK)
		subject[0] = '\0'; /* checked at its push: not reached */
	free(buf);
	free(type);
	if ((rc = s3_delete(s->c, link, err)))
		return rc;
	if (subject[0] &&
	    s3s_key(key, s, &e, "push/referrers/%s/_subjects/%s/%s", repo, digest_hex(subject), digest_hex(digest)) ==
	            RS_OK)
		s3s_delete_quiet(s, key); /* an entry left is filtered by store_pushed_holds */
	if (out_tags)
		*out_tags = tags;
	return RS_OK;
}

enum rs_code s3s_pushed_delete_tag(void *impl, const char *repo, const char *tag, struct rs_err *err)
{
	struct s3s *s = impl;
	char key[S3S_KEY_MAX];
	if (!refname_repo_valid(repo) || !refname_tag_valid(tag))
		return rs_err_set(err, RS_NOT_FOUND, "no tag '%.130s' in repository %.200s", tag, repo);
	enum rs_code rc = s3s_key(key, s, err, "push/tags/%s/_tags/%s", repo, tag);
	if (rc == RS_OK && (rc = present(s, key, err)) == RS_NOT_FOUND)
		return rs_err_set(err, RS_NOT_FOUND, "no tag %s in repository %.200s", tag, repo);
	return rc ? rc : s3_delete(s->c, key, err);
}

enum rs_code s3s_pushed_delete_blob(void *impl, const char *repo, const char *digest, struct rs_err *err)
{
	struct s3s *s = impl;
	char key[S3S_KEY_MAX];
	if (!refname_repo_valid(repo))
		return rs_err_set(err, RS_NOT_FOUND, "blob %s is unknown to repository %.200s", digest, repo);
	enum rs_code rc = s3s_key(key, s, err, "push/links/%s/_blobs/%s", repo, digest_hex(digest));
	if (rc == RS_OK && (rc = present(s, key, err)) == RS_NOT_FOUND)
		return rs_err_set(err, RS_NOT_FOUND, "blob %s is unknown to repository %.200s", digest, repo);
	return rc ? rc : s3_delete(s->c, key, err);
}

/* ------------------------------------------------------------ garbage collection */

/* A digest's hex with a time (a link's or an object's LastModified) and a size. */
struct dated {
	char hex[DIGEST_HEX_LEN + 1];
	time_t t;
	int64_t size;
	bool manifest; /* a root (links) or a manifest object */
	char repo[RS_LIMIT_NAME_MAX + 1];
};

struct dates {
	struct dated *v;
	size_t n, cap;
	size_t plen;       /* the listed prefix's length */
	bool links;        /* keys are <repo>/_blobs|_manifests/<hex> */
	enum rs_code rc;
};

static enum rs_code add_dated(void *arg, const char *key, int64_t size, time_t modified, struct rs_err *err)
{
	struct dates *d = arg;
	const char *rest = key + d->plen, *name = strrchr(rest, '/');
	name = name ? name + 1 : rest;
	if (strlen(name) != DIGEST_HEX_LEN)
		return RS_OK; /* a manifest's .type, anything else */
	struct dated x = {.t = modified, .size = size};
	memcpy(x.hex, name, DIGEST_HEX_LEN + 1);
	if (d->links) {
		const char *m = strstr(rest, "/_manifests/"), *b = strstr(rest, "/_blobs/");
		const char *sep = m && m + 12 == name ? m : b && b + 8 == name ? b : NULL;
		if (!sep || (size_t)(sep - rest) > RS_LIMIT_NAME_MAX)
			return RS_OK;
		x.manifest = sep == m;
		memcpy(x.repo, rest, (size_t)(sep - rest));
	}
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 256;
		struct dated *v = realloc(d->v, cap * sizeof(*v));
		if (!v)
			return rs_err_set(err, RS_NOMEM, "out of memory listing %.100s", key);
		d->v = v;
		d->cap = cap;
	}
	d->v[d->n++] = x;
	return RS_OK;
}

/* Every key under P<sub> with its date. */
static enum rs_code list_dated(struct s3s *s, const char *sub, struct dates *d, struct rs_err *err)
{
	char prefix[S3S_KEY_MAX];
	enum rs_code rc = s3s_key(prefix, s, err, "%s", sub);
	d->plen = strlen(prefix);
	char *token = NULL;
	while (rc == RS_OK) {
		char *next = NULL;
		rc = s3_list_dated(s->c, prefix, token, add_dated, d, &next, err);
		free(token);
		token = next;
		if (!token)
			break;
	}
	free(token);
	return rc;
}

static int cmp_hex(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

/* The digests a sweep keeps, as a sorted set of hex. */
struct mark {
	struct s3s *s;
	char (*v)[DIGEST_HEX_LEN + 1];
	size_t n, cap, sorted;
	unsigned roots;
	enum rs_code rc;
	struct rs_err *err;
};

static void mark_add(struct mark *m, const char *digest)
{
	if (m->rc || !digest || !digest_valid(digest))
		return;
	if (m->n == m->cap) {
		size_t nc = m->cap ? m->cap * 2 : 256;
		char(*nv)[DIGEST_HEX_LEN + 1] = realloc(m->v, nc * sizeof(*nv));
		if (!nv) {
			m->rc = rs_err_set(m->err, RS_NOMEM, "out of memory marking %zu objects", m->n);
			return;
		}
		m->v = nv;
		m->cap = nc;
	}
	snprintf(m->v[m->n++], DIGEST_HEX_LEN + 1, "%s", digest_hex(digest));
}

static bool marked(const struct mark *m, const char *hex)
{
	if (m->sorted && bsearch(hex, m->v, m->sorted, sizeof(*m->v), cmp_hex))
		return true;
	for (size_t i = m->sorted; i < m->n; i++) /* added since the last sort */
		if (strcmp(m->v[i], hex) == 0)
			return true;
	return false;
}

static void mark_sort(struct mark *m)
{
	if (m->n)
		qsort(m->v, m->n, sizeof(*m->v), cmp_hex);
	m->sorted = m->n;
}

static enum rs_code mark_load(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len, char **type,
                              struct rs_err *err)
{
	const struct mark *m = ctx;
	return s3s_manifest_get(m->s, STORE_PUSHED, n->digest, RS_LIMIT_MANIFEST_MAX_BYTES, buf, len, type, err);
}

static enum rs_code mark_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                               enum imagewalk_step *step, struct rs_err *err)
{
	(void)err;
	struct mark *m = ctx;
	if (ev != IMAGEWALK_REF)
		return RS_OK;
	mark_add(m, n->digest);
	if (n->kind == IMAGEWALK_ENTRY)
		*step = n->digest && digest_valid(n->digest) && s3s_has(m->s, STORE_PUSHED, STORE_MANIFEST, n->digest)
		                ? IMAGEWALK_BEST_EFFORT
		                : IMAGEWALK_SKIP;
	return m->rc;
}

/* Mark manifest hex and everything it references; false when the walk failed (m->rc says why). */
static bool mark_root(struct mark *m, const char *repo, const char *hex)
{
	char digest[DIGEST_STR_SIZE];
	snprintf(digest, sizeof(digest), "sha256:%s", hex);
	m->roots++;
	mark_add(m, digest);
	struct rs_err e = {0};
	const struct imagewalk walk = {.load = mark_load, .visit = mark_visit, .ctx = m};
	enum rs_code rc = m->rc ? m->rc : imagewalk_run(&walk, digest, &e);
	if (rc != RS_OK && rc != RS_NOT_FOUND && m->rc == RS_OK) /* gone: it keeps nothing */
		m->rc = rs_err_set(m->err, rc, "reading pushed manifest %s of %.200s: %s", digest, repo, e.msg);
	return m->rc == RS_OK;
}

/* Links in order: digest, then kind, then repository. */
static int cmp_link(const void *a, const void *b)
{
	const struct dated *x = a, *y = b;
	int c = strcmp(x->hex, y->hex);
	if (c == 0)
		c = (int)x->manifest - (int)y->manifest;
	return c ? c : strcmp(x->repo, y->repo);
}

static void links_sort(struct dates *links)
{
	if (links->n)
		qsort(links->v, links->n, sizeof(*links->v), cmp_link);
}

/* The first link (sorted) of digest hex, or links->n. */
static size_t link_first(const struct dates *links, const char *hex)
{
	size_t lo = 0, hi = links->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(links->v[mid].hex, hex) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The latest use of hex among the (sorted) links, or 0. */
static time_t link_use(const struct dates *links, const char *hex)
{
	time_t t = 0;
	for (size_t i = link_first(links, hex); i < links->n && strcmp(links->v[i].hex, hex) == 0; i++)
		if (links->v[i].t > t)
			t = links->v[i].t;
	return t;
}

/* Was link l in the (sorted) first listing, unchanged? */
static bool link_known(const struct dates *links, const struct dated *l)
{
	const struct dated *k = links->n ? bsearch(l, links->v, links->n, sizeof(*l), cmp_link) : NULL;
	return k && k->t == l->t;
}

struct sweep {
	struct s3s *s;
	time_t cutoff; /* used after this: young */
	struct mark m;
	struct dates links, cands;
	struct store_gc_stats *st;
};

/* The unmarked objects of kind: young ones are counted (a young manifest keeps what it references), the
 * others become candidates. */
static enum rs_code pick(struct sweep *w, enum store_kind kind, struct rs_err *err)
{
	struct dates objs = {0};
	enum rs_code rc = list_dated(w->s, kind == STORE_BLOB ? "push/blobs/sha256/" : "push/manifests/sha256/", &objs, err);
	for (size_t i = 0; rc == RS_OK && i < objs.n; i++) {
		struct dated *o = &objs.v[i];
		if (marked(&w->m, o->hex))
			continue;
		time_t used = link_use(&w->links, o->hex);
		if (o->t > used)
			used = o->t;
		if (used > w->cutoff) {
			w->st->young++;
			if (kind == STORE_MANIFEST) {
				if (!mark_root(&w->m, "(no repository)", o->hex))
					rc = w->m.rc;
				w->m.roots--; /* not a root: kept for its age */
			}
			continue;
		}
		o->manifest = kind == STORE_MANIFEST;
		if (w->cands.n == w->cands.cap) {
			size_t cap = w->cands.cap ? w->cands.cap * 2 : 64;
			struct dated *v = realloc(w->cands.v, cap * sizeof(*v));
			if (!v) {
				rc = rs_err_set(err, RS_NOMEM, "out of memory collecting pushed objects");
				break;
			}
			w->cands.v = v;
			w->cands.cap = cap;
		}
		w->cands.v[w->cands.n++] = *o;
	}
	free(objs.v);
	return rc;
}

/* The links listed again just before the removals: roots that appeared are walked, and a candidate a link
 * took since the first listing (or that a new root keeps) stays. */
static enum rs_code recheck(struct sweep *w, struct rs_err *err)
{
	struct dates again = {.links = true};
	enum rs_code rc = list_dated(w->s, "push/links/", &again, err);
	for (size_t i = 0; rc == RS_OK && i < again.n; i++) {
		const struct dated *l = &again.v[i];
		if (link_known(&w->links, l))
			continue;
		if (l->manifest && !mark_root(&w->m, l->repo, l->hex))
			rc = w->m.rc;
		for (size_t j = 0; j < w->cands.n; j++)
			if (strcmp(w->cands.v[j].hex, l->hex) == 0 && l->t > w->cutoff)
				w->cands.v[j].t = l->t; /* taken meanwhile */
	}
	free(again.v);
	return rc;
}

enum rs_code s3s_pushed_gc(void *impl, time_t now, unsigned grace_s, struct store_gc_stats *out, struct rs_err *err)
{
	struct s3s *s = impl;
	struct sweep w = {.s = s, .cutoff = now - (time_t)grace_s, .st = out, .links = {.links = true}};
	w.m = (struct mark){.s = s, .err = err};
	enum rs_code rc = list_dated(s, "push/links/", &w.links, err);
	links_sort(&w.links);
	for (size_t i = 0; rc == RS_OK && i < w.links.n; i++)
		if (w.links.v[i].manifest && !mark_root(&w.m, w.links.v[i].repo, w.links.v[i].hex))
			rc = w.m.rc;
	out->roots = w.m.roots;
	if (rc == RS_OK) {
		mark_sort(&w.m);
		out->marked = (unsigned)w.m.n;
		/* manifests first: what a young one references is kept with it */
		if ((rc = pick(&w, STORE_MANIFEST, err)) == RS_OK && (rc = w.m.rc) == RS_OK) {
			mark_sort(&w.m);
			rc = pick(&w, STORE_BLOB, err);
		}
	}
	if (rc == RS_OK && w.cands.n)
		rc = recheck(&w, err);
	for (size_t i = 0; rc == RS_OK && i < w.cands.n; i++) {
		const struct dated *c = &w.cands.v[i];
		if (marked(&w.m, c->hex) || c->t > w.cutoff) {
			out->raced++;
			continue;
		}
		char digest[DIGEST_STR_SIZE], key[S3S_KEY_MAX];
		snprintf(digest, sizeof(digest), "sha256:%s", c->hex);
		s3s_object_key(key, s, STORE_PUSHED, c->manifest ? STORE_MANIFEST : STORE_BLOB, digest);
		struct rs_err e = {0};
		if (s3_delete(s->c, key, &e) != RS_OK)
			continue; /* stays for the next sweep */
		if (c->manifest) {
			char tk[S3S_KEY_MAX + 8];
			snprintf(tk, sizeof(tk), "%s.type", key);
			s3s_delete_quiet(s, tk);
			out->manifests_removed++;
		} else {
			out->blobs_removed++;
		}
		out->bytes_removed += c->size > 0 ? (uint64_t)c->size : 0;
	}
	free(w.links.v);
	free(w.cands.v);
	free(w.m.v);
	return rc;
}
