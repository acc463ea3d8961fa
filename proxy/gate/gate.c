/* gate: push policy evaluation and forwarding (see gate.h). Talks to the
 * store (store.h: pushed images for a push, the cache for checks on pull), optimizer/scan.h for the layer pass,
 * optimizer/pipeline.h for optimize modes, upstream_push.h for the upstream,
 * and config/gate_policy.h for the rules. */
#include "gate.h"

#include "codec.h"
#include "gate_scan.h"
#include "digest.h"
#include "fsutil.h"
#include "image.h"
#include "imagejson.h"
#include "imagewalk.h"
#include "layout.h"
#include "log.h"
#include "pipeline.h"
#include "policy.h"
#include "report.h"
#include "route.h"
#include "rs_limits.h"
#include "scan.h"
#include "strip.h"
#include "upstream.h"
#include "upstream_push.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CONFIG_MAX_BYTES (4u * 1024 * 1024)

/* A layer's recorded scan never holds more findings than a report keeps,
 * so replaying it in layer order gives the inline scan's report (below). */
_Static_assert(GATE_SCAN_FINDINGS_MAX == GATE_FINDINGS_MAX, "recorded scans are capped as reports are");

void gate_report_dispose(struct gate_report *r)
{
	for (size_t i = 0; i < r->count; i++) {
		free(r->items[i].text);
		free(r->items[i].platform);
		free(r->items[i].layer_digest);
		free(r->items[i].path);
	}
	free(r->items);
	memset(r, 0, sizeof(*r));
}

void gate_outcome_dispose(struct gate_outcome *o)
{
	free(o->optimizer_report);
	memset(o, 0, sizeof(*o));
}

/* Where a finding is: the image's platform (index children), a layer, a
 * file in it. Unset fields are NULL / 0. */
struct where {
	const char *platform;
	size_t layer;
	const char *layer_digest;
	const char *path;
};

static bool dup_or_null(char **out, const char *s)
{
	*out = s ? strdup(s) : NULL;
	return !s || *out;
}

/* Fill f (zeroed) with copies of its strings; false when memory ran out
 * (what was copied is freed with the report). */
static bool finding_fill(struct gate_finding *f, enum gate_action a, const char *rule, const char *text,
			 const struct where *at)
{
	f->action = a;
	f->rule = rule;
	f->layer = at->layer;
	return dup_or_null(&f->text, text) && dup_or_null(&f->platform, at->platform) &&
	       dup_or_null(&f->layer_digest, at->layer_digest) && dup_or_null(&f->path, at->path);
}

static enum rs_code add(struct gate_report *r, enum gate_action a, const char *rule, const struct where *at,
			struct rs_err *err, const char *fmt, ...) RS_PRINTF(6, 7);

static enum rs_code add(struct gate_report *r, enum gate_action a, const char *rule, const struct where *at,
			struct rs_err *err, const char *fmt, ...)
{
	if (a == GATE_DENY)
		r->denies++;
	else
		r->warns++;
	if (r->count >= GATE_FINDINGS_MAX) {
		r->dropped++;
		return RS_OK;
	}
	if (!r->items && !(r->items = calloc(GATE_FINDINGS_MAX, sizeof(*r->items))))
		return rs_err_set(err, RS_NOMEM, "out of memory for the policy report");
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		buf[0] = '\0';
	/* Counted before the copies, so dispose frees whatever was made. */
	if (!finding_fill(&r->items[r->count++], a, rule, buf, at))
		return rs_err_set(err, RS_NOMEM, "out of memory for the policy report");
	return RS_OK;
}

/* ---- approved base references ---- */

struct base_entry {
	char key[512]; /* reference "\n" os "/" arch */
	time_t expires;
	char **layers;
	size_t count;
};

struct gate_resolver {
	const struct rs_config *cfg;
	struct upstream **ups; /* parallel to cfg->upstreams */
	pthread_mutex_t mu;    /* guards cache */
	struct base_entry cache[RS_LIMIT_GATE_BASE_CACHE_ENTRIES];
	size_t next; /* round-robin replacement */
};

static void free_chain(char **l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(l[i]);
	free(l);
}

static enum rs_code copy_chain(char ***out, size_t *n, char *const *l, size_t count, struct rs_err *err)
{
	*out = calloc(count ? count : 1, sizeof(char *));
	*n = 0;
	if (!*out)
		return rs_err_set(err, RS_NOMEM, "out of memory for a base layer chain");
	for (size_t i = 0; i < count; i++) {
		if (!((*out)[i] = strdup(l[i]))) {
			free_chain(*out, i);
			*out = NULL;
			return rs_err_set(err, RS_NOMEM, "out of memory for a base layer chain");
		}
	}
	*n = count;
	return RS_OK;
}

enum rs_code gate_resolver_new(struct gate_resolver **out, const struct rs_config *cfg, struct rs_err *err)
{
	struct gate_resolver *r = calloc(1, sizeof(*r));
	if (!r || !(r->ups = calloc(cfg->upstream_count ? cfg->upstream_count : 1, sizeof(*r->ups)))) {
		free(r);
		return rs_err_set(err, RS_NOMEM, "out of memory for the base resolver");
	}
	r->cfg = cfg;
	pthread_mutex_init(&r->mu, NULL);
	for (size_t i = 0; i < cfg->upstream_count; i++) {
		enum rs_code rc = upstream_new(&r->ups[i], &cfg->upstreams[i], err);
		if (rc) {
			gate_resolver_free(r);
			return rc;
		}
	}
	*out = r;
	return RS_OK;
}

void gate_resolver_free(struct gate_resolver *r)
{
	if (!r)
		return;
	for (size_t i = 0; r->ups && i < r->cfg->upstream_count; i++)
		if (r->ups[i])
			upstream_free(r->ups[i]);
	free(r->ups);
	for (size_t i = 0; i < RS_LIMIT_GATE_BASE_CACHE_ENTRIES; i++)
		free_chain(r->cache[i].layers, r->cache[i].count);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

static enum rs_code fetch_ref(struct upstream *u, const char *upname, const char *repo, const char *ref,
			      struct upstream_reply *rep, struct rs_err *err)
{
	static const char *const acc[] = {IMAGE_MT_OCI_MANIFEST, IMAGE_MT_DOCKER_MANIFEST, IMAGE_MT_OCI_INDEX,
					  IMAGE_MT_DOCKER_LIST};
	enum rs_code rc = upstream_manifest(u, repo, ref, acc, 4, false, RS_LIMIT_MANIFEST_MAX_BYTES, rep, err);
	if (rc)
		return rs_err_prefix(err, "approved base %s/%s:%s: ", upname, repo, ref), rc;
	if (rep->status < 200 || rep->status > 299 || !rep->body)
		return rs_err_set(err, rep->status == 404 ? RS_NOT_FOUND : RS_UPSTREAM,
				  "approved base %s:%s: upstream %s answered HTTP %ld", repo, ref, upname, rep->status);
	if (rep->digest[0] && strncmp(ref, "sha256:", 7) == 0) {
		char got[DIGEST_STR_SIZE];
		digest_buffer(got, rep->body, rep->body_len);
		if (strcmp(got, ref) != 0)
			return rs_err_set(err, RS_DIGEST_MISMATCH, "approved base %s@%s: the upstream sent %s", repo, ref, got);
	}
	return RS_OK;
}

/* The walk of an approved base: the image of the reference, or the first
 * of its index's entries for the platform; its layers are the chain. */
struct base_walk {
	struct upstream *u;
	const char *upname, *repo, *ref, *os, *arch;
	char child[DIGEST_STR_SIZE]; /* the entry picked */
	char **layers;               /* out: the chain (new) */
	size_t count;
};

static enum rs_code base_load(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len, char **type,
			      struct rs_err *err)
{
	struct base_walk *w = ctx;
	*type = NULL;
	if (n->depth > 0)
		snprintf(w->child, sizeof(w->child), "%s", n->digest);
	struct upstream_reply rep = {0};
	enum rs_code rc = fetch_ref(w->u, w->upname, w->repo, n->depth > 0 ? w->child : n->digest, &rep, err);
	if (rc == RS_OK) {
		*buf = rep.body;
		*len = rep.body_len;
		rep.body = NULL;
	}
	upstream_reply_dispose(&rep);
	return rc;
}

static enum rs_code base_chain(struct base_walk *w, const struct imagejson_manifest *m, struct rs_err *err)
{
	enum rs_code rc = RS_OK;
	w->layers = calloc(m->layer_count ? m->layer_count : 1, sizeof(char *));
	w->count = 0;
	if (!w->layers)
		rc = rs_err_set(err, RS_NOMEM, "out of memory for a base layer chain");
	for (size_t i = 0; rc == RS_OK && i < m->layer_count; i++) {
		if (!(w->layers[i] = strdup(m->layers[i].digest)))
			rc = rs_err_set(err, RS_NOMEM, "out of memory for a base layer chain");
		else
			w->count = i + 1;
	}
	return rc;
}

static enum rs_code base_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
			       enum imagewalk_step *step, struct rs_err *err)
{
	struct base_walk *w = ctx;
	if (ev == IMAGEWALK_LOADED && n->depth > 0 && n->kind != IMAGEWALK_MANIFEST)
		return rs_err_set(err, RS_BAD_INPUT, "approved base %s: index entry %s is not an image manifest", w->ref,
				  w->child);
	if (ev == IMAGEWALK_REF && n->kind == IMAGEWALK_ENTRY) {
		const struct imagejson_descriptor *d = n->desc;
		bool any = !w->os[0] && !w->arch[0];
		if (any ||
		    (d->os && d->architecture && strcmp(d->os, w->os) == 0 && strcmp(d->architecture, w->arch) == 0))
			*step = d->digest[0] ? IMAGEWALK_CONTINUE : IMAGEWALK_STOP; /* the first for the platform */
		else
			*step = IMAGEWALK_SKIP;
	} else if (ev == IMAGEWALK_ENTER && n->kind == IMAGEWALK_MANIFEST) {
		*step = IMAGEWALK_STOP;
		return base_chain(w, n->manifest, err);
	}
	return RS_OK;
}

static enum rs_code resolve_uncached(struct gate_resolver *r, const char *ref, const char *os, const char *arch,
				     char ***layers, size_t *count, struct rs_err *err)
{
	char name[256], tagref[136];
	if (!gate_base_ref_split(ref, name, tagref))
		return rs_err_set(err, RS_BAD_INPUT, "approved base reference \"%.200s\" is malformed", ref);
	struct route_target t;
	enum rs_code rc = route_pick(r->cfg, NULL, name, &t, err);
	if (rc)
		return rs_err_prefix(err, "approved base %s: ", ref), rc;
	struct base_walk w = {.u = r->ups[t.up_index], .upname = r->cfg->upstreams[t.up_index].name, .repo = t.repo,
			      .ref = ref, .os = os, .arch = arch};
	const struct imagewalk walk = {.load = base_load, .visit = base_visit, .ctx = &w,
				       .manifest_what = "approved base manifest", .index_what = "approved base index"};
	rc = imagewalk_run(&walk, tagref, err);
	if (rc == RS_OK && !w.layers)
		rc = rs_err_set(err, RS_NOT_FOUND, "approved base %s has no image for platform %s/%s", ref, os, arch);
	if (rc) {
		free_chain(w.layers, w.count);
		w.layers = NULL;
		w.count = 0;
	}
	*layers = w.layers;
	*count = w.count;
	return rc;
}

enum rs_code gate_resolve_base(struct gate_resolver *r, const char *ref, const char *os, const char *arch,
			       char ***layers, size_t *count, struct rs_err *err)
{
	char key[512];
	int kn = snprintf(key, sizeof(key), "%s\n%s/%s", ref, os, arch);
	if (kn < 0 || (size_t)kn >= sizeof(key))
		return rs_err_set(err, RS_BAD_INPUT, "approved base reference \"%.200s\" is too long", ref);
	time_t now = time(NULL);
	enum rs_code rc = RS_NOT_FOUND;
	pthread_mutex_lock(&r->mu);
	for (size_t i = 0; i < RS_LIMIT_GATE_BASE_CACHE_ENTRIES; i++) {
		struct base_entry *e = &r->cache[i];
		if (e->layers && now < e->expires && strcmp(e->key, key) == 0) {
			rc = copy_chain(layers, count, e->layers, e->count, err);
			break;
		}
	}
	pthread_mutex_unlock(&r->mu);
	if (rc != RS_NOT_FOUND)
		return rc;
	if ((rc = resolve_uncached(r, ref, os, arch, layers, count, err)))
		return rc;
	char **copy = NULL;
	size_t n = 0;
	struct rs_err ignored = {0};
	if (copy_chain(&copy, &n, *layers, *count, &ignored) != RS_OK)
		return RS_OK; /* not cached; the answer stands */
	pthread_mutex_lock(&r->mu);
	struct base_entry *e = &r->cache[r->next];
	r->next = (r->next + 1) % RS_LIMIT_GATE_BASE_CACHE_ENTRIES;
	free_chain(e->layers, e->count);
	snprintf(e->key, sizeof(e->key), "%s", key);
	e->layers = copy;
	e->count = n;
	e->expires = now + RS_LIMIT_GATE_BASE_TTL_S;
	pthread_mutex_unlock(&r->mu);
	log_event(LOG_INFO, "approved base %s (%s/%s) resolved to %zu layer(s)", ref, os, arch, n);
	return RS_OK;
}

/* Whether the image's bottom layers equal chain l[0..n). */
static bool chain_matches(const struct imagejson_manifest *m, char *const *l, size_t n)
{
	if (n > m->layer_count)
		return false;
	for (size_t i = 0; i < n; i++)
		if (strcmp(l[i], m->layers[i].digest) != 0)
			return false;
	return true;
}

/* ---- per-layer scan callbacks ---- */

struct layer_eval {
	const struct rs_gate_policy *p;
	struct gate_report *rep;
	const char *where; /* "layer 1 of 3 (sha256:..)" */
	struct where at;   /* platform and layer; path set per finding */
};

static bool is_whiteout(const char *path)
{
	const char *b = strrchr(path, '/');
	b = b ? b + 1 : path;
	return strncmp(b, ".wh.", 4) == 0;
}

static enum rs_code on_entry(void *ctx, const struct tar_entry *e, struct rs_err *err)
{
	struct layer_eval *c = ctx;
	const struct gate_list_rule *fp = &c->p->forbidden_paths;
	if (fp->action == GATE_OFF || is_whiteout(e->path))
		return RS_OK;
	for (size_t i = 0; i < fp->count; i++) {
		if (strip_glob_match(fp->items[i], e->path)) {
			struct where at = c->at;
			at.path = e->path;
			return add(c->rep, fp->action, "forbidden_paths", &at, err, "%s %s: forbidden path (matches %s)",
				   c->where, e->path, fp->items[i]);
		}
	}
	return RS_OK;
}

static enum rs_code on_finding(void *ctx, const char *path, enum scan_detector d, struct rs_err *err)
{
	struct layer_eval *c = ctx;
	struct where at = c->at;
	at.path = path;
	return add(c->rep, c->p->secrets, "secrets", &at, err, "%s %s: %s", c->where, path, scan_detector_name(d));
}

static bool is_root(const char *user)
{
	size_t n = strcspn(user, ":");
	return n == 0 || (n == 4 && strncmp(user, "root", 4) == 0) || (n == 1 && user[0] == '0');
}

static enum rs_code read_all_fd(int fd, uint64_t size, size_t cap, char **out, size_t *len, struct rs_err *err)
{
	if (size > cap)
		return rs_err_set(err, RS_TOO_LARGE, "image config is %llu bytes, limit is %zu",
				  (unsigned long long)size, cap);
	char *b = malloc((size_t)size + 1);
	if (!b)
		return rs_err_set(err, RS_NOMEM, "out of memory reading the image config");
	size_t got = 0;
	while (got < size) {
		ssize_t n = pread(fd, b + got, (size_t)size - got, (off_t)got);
		if (n <= 0) {
			free(b);
			return rs_err_set(err, RS_IO, "reading the image config: %s", n < 0 ? strerror(errno) : "short file");
		}
		got += (size_t)n;
	}
	b[got] = '\0';
	*out = b;
	*len = got;
	return RS_OK;
}

/* The image config's platform as "os/arch[/variant]" into out. */
static enum rs_code config_platform(char *out, size_t cap, const char *cfgbuf, size_t cfglen, struct rs_err *err)
{
	char *os = NULL, *arch = NULL, *variant = NULL;
	enum rs_code rc = gate_image_platform(&os, &arch, &variant, cfgbuf, cfglen, err);
	if (rc == RS_OK)
		snprintf(out, cap, "%s/%s%s%s", os[0] ? os : "?", arch[0] ? arch : "?", variant[0] ? "/" : "", variant);
	free(os);
	free(arch);
	free(variant);
	return rc;
}

/* A finding past the report's cap: counted, as add() counts it. */
static void drop(struct gate_report *r, enum gate_action a)
{
	assert(r->count >= GATE_FINDINGS_MAX); /* a layer records GATE_FINDINGS_MAX findings before any is past its cap */
	if (a == GATE_DENY)
		r->denies++;
	else
		r->warns++;
	r->dropped++;
}

/* A layer's recorded scan (gate_scan.h) through the rules, in the order the
 * pass reported it: the findings on_entry and on_finding would have added. */
static enum rs_code replay(const struct layer_eval *c, const struct gate_scan_result *r, struct rs_err *err)
{
	const struct gate_list_rule *fp = &c->p->forbidden_paths;
	enum rs_code rc = RS_OK;
	for (size_t i = 0; rc == RS_OK && i < r->count; i++) {
		const struct gate_scan_finding *f = &r->items[i];
		struct where at = c->at;
		at.path = f->path;
		if (f->kind == GATE_SCAN_FORBIDDEN)
			rc = add(c->rep, fp->action, "forbidden_paths", &at, err, "%s %s: forbidden path (matches %s)",
				 c->where, f->path, fp->items[f->which]);
		else
			rc = add(c->rep, c->p->secrets, "secrets", &at, err, "%s %s: %s", c->where, f->path,
				 scan_detector_name((enum scan_detector)f->which));
	}
	for (size_t i = 0; rc == RS_OK && i < r->more_forbidden; i++)
		drop(c->rep, fp->action);
	for (size_t i = 0; rc == RS_OK && i < r->more_secrets; i++)
		drop(c->rep, c->p->secrets);
	return rc;
}

/* One layer through the scans of uploads (gate_scan.h): its stored result,
 * or the result of a scan still running, else scanned here (and kept). The
 * errors are those of the inline pass, with the same prefix. */
static enum rs_code scan_joined(uint64_t *uncompressed, const struct layer_eval *ev, struct gate_scan *sc,
				struct store *store, enum store_area area, enum codec_kind kind, const char *digest,
				struct rs_err *err)
{
	struct gate_scan_result r = {0};
	int ticket = -1;
	enum rs_code rc = RS_OK;
	if (!gate_scan_claim(sc, &r, &ticket, ev->p, area, kind, digest)) {
		int fd = -1;
		uint64_t size = 0;
		rc = store_open_fd(store, area, STORE_BLOB, digest, &fd, &size, err);
		if (rc == RS_OK && (rc = gate_scan_record(&r, fd, ev->p, kind, digest, NULL, err)))
			rs_err_prefix(err, "scanning %s: ", ev->where);
		if (fd >= 0)
			close(fd);
		gate_scan_done(sc, ticket, ev->p, kind, digest, rc ? NULL : &r);
	}
	if (rc == RS_OK && (rc = replay(ev, &r, err)) == RS_OK)
		*uncompressed += r.uncompressed_bytes;
	gate_scan_result_dispose(&r);
	return rc;
}

/* The layer pass of one image, layer by layer in manifest order: each
 * scanned here (sc NULL) or joined from the scans of uploads; findings go
 * to rep, the uncompressed sizes add up in *uncompressed. */
static enum rs_code scan_layers(uint64_t *uncompressed, struct gate_report *rep, const struct rs_gate_policy *p,
				struct store *store, enum store_area area, const struct imagejson_manifest *m,
				const char *prefix, const char *platform, struct gate_scan *sc, struct rs_err *err)
{
	enum rs_code rc = RS_OK;
	int fd = -1;
	for (size_t i = 0; i < m->layer_count; i++) {
		const struct imagejson_descriptor *l = &m->layers[i];
		const char *lmt = l->media_type ? l->media_type : "";
		if (strstr(lmt, "nondistributable") || strstr(lmt, "foreign"))
			continue;
		enum codec_kind kind;
		if ((rc = codec_kind_from_media_type(&kind, l->media_type, err)))
			goto out;
		char where[320];
		snprintf(where, sizeof(where), "%slayer %zu of %zu (%s)", prefix, i + 1, m->layer_count, l->digest);
		struct layer_eval ev = {p, rep, where, {.platform = platform, .layer = i + 1, .layer_digest = l->digest}};
		if (sc) {
			if ((rc = scan_joined(uncompressed, &ev, sc, store, area, kind, l->digest, err)))
				goto out;
			continue;
		}
		if (fd >= 0)
			close(fd);
		fd = -1;
		uint64_t size = 0;
		if ((rc = store_open_fd(store, area, STORE_BLOB, l->digest, &fd, &size, err)))
			goto out;
		struct scan_opts o = {.codec = kind,
				      .digest = l->digest,
				      .secrets = p->secrets != GATE_OFF,
				      .file_cap = p->secret_file_cap,
				      .scan_binaries = p->secret_scan_binaries,
				      .allow_paths = p->secret_allow_paths,
				      .allow_path_count = p->secret_allow_path_count,
				      .on_entry = on_entry,
				      .on_finding = on_finding,
				      .ctx = &ev,
				      .threaded = true};
		struct scan_stats st;
		if ((rc = scan_layer_fd(&st, fd, &o, err))) {
			rs_err_prefix(err, "scanning %s: ", where);
			goto out;
		}
		*uncompressed += st.uncompressed_bytes;
	}
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

static enum rs_code check_image(struct gate_report *rep, const struct rs_gate_policy *p, struct store *store,
				enum store_area area, const struct imagejson_manifest *m, const char *prefix,
				const char *platform, unsigned flags, struct gate_resolver *res, struct gate_scan *sc,
				struct rs_err *err)
{
	char *cfgbuf = NULL, *user = NULL;
	size_t cfglen = 0, nlabels = 0;
	struct imagejson_kv *labels = NULL;
	int fd = -1;
	char own_platform[96], own_prefix[128];
	enum rs_code rc = RS_OK;
	bool name_platform = !platform && (flags & GATE_CHECK_NAME_PLATFORM);
	bool base_images = p->allowed_bases_action && p->allowed_base_image_count;
	if (name_platform || p->non_root || p->required_labels.action || base_images) {
		uint64_t size = 0;
		if ((rc = store_open_fd(store, area, STORE_BLOB, m->config.digest, &fd, &size, err)) ||
		    (rc = read_all_fd(fd, size, CONFIG_MAX_BYTES, &cfgbuf, &cfglen, err)))
			goto out;
		close(fd);
		fd = -1;
	}
	if (name_platform) {
		if ((rc = config_platform(own_platform, sizeof(own_platform), cfgbuf, cfglen, err)))
			goto out;
		platform = own_platform;
		snprintf(own_prefix, sizeof(own_prefix), "platform %s: ", platform);
		prefix = own_prefix;
	}
	const struct where image = {.platform = platform};
	rep->layers += m->layer_count;
	uint64_t compressed = 0;
	for (size_t i = 0; i < m->layer_count; i++)
		compressed += m->layers[i].size;
	rep->compressed_bytes += compressed;
	if (p->max_layers.action && m->layer_count > p->max_layers.limit &&
	    (rc = add(rep, p->max_layers.action, "max_layers", &image, err, "%simage has %zu layers, the limit is %llu",
		      prefix, m->layer_count, (unsigned long long)p->max_layers.limit)))
		goto out;
	if (p->max_compressed_bytes.action && compressed > p->max_compressed_bytes.limit &&
	    (rc = add(rep, p->max_compressed_bytes.action, "max_compressed_size", &image, err,
		      "%simage is %llu bytes compressed, the limit is %llu", prefix, (unsigned long long)compressed,
		      (unsigned long long)p->max_compressed_bytes.limit)))
		goto out;
	/* config: user and labels */
	if (p->non_root || p->required_labels.action) {
		if ((rc = gate_image_facts(&user, &labels, &nlabels, cfgbuf, cfglen, err)))
			goto out;
		if (p->non_root && is_root(user) &&
		    (rc = add(rep, p->non_root, "non_root", &image, err, "%simage runs as root (config.User is \"%.60s\")%s",
			      prefix, user, user[0] ? "" : ", set USER to a non-root user")))
			goto out;
		for (size_t i = 0; i < p->required_labels.count; i++)
			if (!imagejson_kv_get(labels, nlabels, p->required_labels.items[i]) &&
			    (rc = add(rep, p->required_labels.action, "required_labels", &image, err,
				      "%simage lacks label %s", prefix, p->required_labels.items[i])))
				goto out;
	}
	if (p->allowed_bases_action) {
		bool ok = false;
		for (size_t b = 0; !ok && b < p->allowed_base_count; b++)
			ok = chain_matches(m, p->allowed_bases[b].layers, p->allowed_bases[b].count);
		char *os = NULL, *arch = NULL, *variant = NULL;
		if (!ok && base_images) {
			if (!res) {
				rc = rs_err_set(err, RS_UPSTREAM, "no resolver for approved base images");
				goto out;
			}
			if ((rc = gate_image_platform(&os, &arch, &variant, cfgbuf, cfglen, err)))
				goto out;
		}
		for (size_t b = 0; rc == RS_OK && !ok && b < p->allowed_base_image_count; b++) {
			char **l = NULL;
			size_t n = 0;
			rc = gate_resolve_base(res, p->allowed_base_images[b], os, arch, &l, &n, err);
			ok = rc == RS_OK && n > 0 && chain_matches(m, l, n);
			free_chain(l, n);
		}
		free(os);
		free(arch);
		free(variant);
		if (rc)
			goto out;
		if (!ok && (rc = add(rep, p->allowed_bases_action, "allowed_bases", &image, err,
				     "%simage is not built on an allowed base (bottom layer %s is not the start of an allowed chain or approved image)",
				     prefix, m->layer_count ? m->layers[0].digest : "(none)")))
			goto out;
	}
	bool need_scan = p->secrets || p->forbidden_paths.action || p->max_uncompressed_bytes.action;
	uint64_t uncompressed = 0;
	if (need_scan && (rc = scan_layers(&uncompressed, rep, p, store, area, m, prefix, platform, sc, err)))
		goto out;
	rep->uncompressed_bytes += uncompressed;
	rep->scanned = need_scan;
	if (need_scan && p->max_uncompressed_bytes.action && uncompressed > p->max_uncompressed_bytes.limit)
		rc = add(rep, p->max_uncompressed_bytes.action, "max_uncompressed_size", &image, err,
			 "%simage is %llu bytes uncompressed, the limit is %llu", prefix, (unsigned long long)uncompressed,
			 (unsigned long long)p->max_uncompressed_bytes.limit);
out:
	if (fd >= 0)
		close(fd);
	free(cfgbuf);
	free(user);
	imagejson_kv_free(labels, nlabels);
	return rc;
}

/* The walk of gate_check: the root image, or every image of the root
 * index (an index inside it is not checked), from the push store. */
struct check_walk {
	struct gate_report *rep;
	const struct rs_gate_policy *p;
	struct store *store;
	enum store_area area;
	unsigned flags;
	struct gate_resolver *res;
	struct gate_scan *sc; /* NULL: every layer scanned here */
};

static enum rs_code check_load(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len, char **type,
			       struct rs_err *err)
{
	const struct check_walk *w = ctx;
	return store_manifest_get(w->store, w->area, n->digest, RS_LIMIT_MANIFEST_MAX_BYTES, buf, len, type, err);
}

static enum rs_code check_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
				enum imagewalk_step *step, struct rs_err *err)
{
	const struct check_walk *w = ctx;
	if (ev == IMAGEWALK_LOADED && n->kind == IMAGEWALK_INDEX && n->depth > 0)
		*step = IMAGEWALK_SKIP;
	if (ev != IMAGEWALK_ENTER || n->kind != IMAGEWALK_MANIFEST)
		return RS_OK;
	*step = IMAGEWALK_SKIP; /* check_image reads the config and layers itself */
	if (n->depth == 0)
		return check_image(w->rep, w->p, w->store, w->area, n->manifest, "", NULL, w->flags, w->res, w->sc, err);
	const struct imagejson_descriptor *d = n->desc;
	char platform[96], prefix[200];
	snprintf(platform, sizeof(platform), "%s/%s%s%s", d->os ? d->os : "?", d->architecture ? d->architecture : "?",
		 d->variant ? "/" : "", d->variant ? d->variant : "");
	snprintf(prefix, sizeof(prefix), "platform %s (%s): ", platform, d->digest);
	return check_image(w->rep, w->p, w->store, w->area, n->manifest, prefix, platform, w->flags, w->res, w->sc, err);
}

static enum rs_code check_run(struct gate_report *rep, const struct rs_gate_policy *p, struct store *store,
			      enum store_area area, const char *digest, unsigned flags, struct gate_resolver *res,
			      struct gate_scan *sc, struct rs_err *err)
{
	struct check_walk w = {rep, p, store, area, flags, res, sc};
	const struct imagewalk walk = {.load = check_load, .visit = check_visit, .ctx = &w, .manifest_what = "manifest",
				       .index_what = "index"};
	return imagewalk_run(&walk, digest, err);
}

enum rs_code gate_check(struct gate_report *rep, const struct rs_gate_policy *p, struct store *store,
			enum store_area area, const char *digest, unsigned flags, struct gate_resolver *res,
			struct rs_err *err)
{
	return check_run(rep, p, store, area, digest, flags, res, NULL, err);
}

/* ---- remembered checks ---- */

struct memo_entry {
	const struct rs_gate_policy *p; /* NULL: free slot */
	unsigned flags;
	char digest[DIGEST_STR_SIZE];
	time_t expires;
	struct gate_report rep;
};

struct gate_memo {
	pthread_mutex_t mu; /* guards e and next */
	struct memo_entry e[RS_LIMIT_GATE_MEMO_ENTRIES];
	size_t next; /* round-robin replacement */
};

enum rs_code gate_memo_new(struct gate_memo **out, struct rs_err *err)
{
	struct gate_memo *m = calloc(1, sizeof(*m));
	if (!m)
		return rs_err_set(err, RS_NOMEM, "out of memory for the gate's memo");
	pthread_mutex_init(&m->mu, NULL);
	*out = m;
	return RS_OK;
}

void gate_memo_free(struct gate_memo *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < RS_LIMIT_GATE_MEMO_ENTRIES; i++)
		gate_report_dispose(&m->e[i].rep);
	pthread_mutex_destroy(&m->mu);
	free(m);
}

/* Deep copy of src into dst (zeroed); on RS_NOMEM dst holds what was
 * copied (gate_report_dispose frees it). */
static enum rs_code report_copy(struct gate_report *dst, const struct gate_report *src, struct rs_err *err)
{
	*dst = *src;
	dst->items = NULL;
	dst->count = 0;
	if (!src->count)
		return RS_OK;
	if (!(dst->items = calloc(GATE_FINDINGS_MAX, sizeof(*dst->items))))
		return rs_err_set(err, RS_NOMEM, "out of memory for the policy report");
	for (size_t i = 0; i < src->count; i++) {
		const struct gate_finding *f = &src->items[i];
		const struct where at = {f->platform, f->layer, f->layer_digest, f->path};
		if (!finding_fill(&dst->items[dst->count++], f->action, f->rule, f->text, &at))
			return rs_err_set(err, RS_NOMEM, "out of memory for the policy report");
	}
	return RS_OK;
}

enum rs_code gate_check_memo(struct gate_memo *m, bool *hit, struct gate_report *rep, const struct rs_gate_policy *p,
			     struct store *store, enum store_area area, const char *digest, unsigned flags,
			     struct gate_resolver *res,
			     struct rs_err *err)
{
	return gate_check_push(m, NULL, hit, rep, p, store, area, digest, flags, res, err);
}

enum rs_code gate_check_push(struct gate_memo *m, struct gate_scan *sc, bool *hit, struct gate_report *rep,
			     const struct rs_gate_policy *p, struct store *store, enum store_area area,
			     const char *digest, unsigned flags, struct gate_resolver *res, struct rs_err *err)
{
	*hit = false;
	time_t now = time(NULL);
	enum rs_code rc = RS_OK;
	pthread_mutex_lock(&m->mu);
	for (size_t i = 0; i < RS_LIMIT_GATE_MEMO_ENTRIES; i++) {
		struct memo_entry *e = &m->e[i];
		if (e->p == p && e->flags == flags && now < e->expires && strcmp(e->digest, digest) == 0) {
			*hit = true;
			rc = report_copy(rep, &e->rep, err);
			break;
		}
	}
	pthread_mutex_unlock(&m->mu);
	if (*hit)
		return rc;
	if ((rc = check_run(rep, p, store, area, digest, flags, res, sc, err)))
		return rc;
	struct gate_report copy = {0};
	if (report_copy(&copy, rep, NULL) != RS_OK) {
		gate_report_dispose(&copy); /* not remembered; the check stands */
		return RS_OK;
	}
	pthread_mutex_lock(&m->mu);
	struct memo_entry *e = &m->e[m->next];
	m->next = (m->next + 1) % RS_LIMIT_GATE_MEMO_ENTRIES;
	gate_report_dispose(&e->rep);
	e->p = p;
	e->flags = flags;
	snprintf(e->digest, sizeof(e->digest), "%s", digest);
	e->expires = now + RS_LIMIT_GATE_MEMO_TTL_S;
	e->rep = copy;
	pthread_mutex_unlock(&m->mu);
	return RS_OK;
}

enum rs_code gate_report_text(char **out, const struct gate_report *r, enum gate_action which, struct rs_err *err)
{
	size_t cap = 128;
	for (size_t i = 0; i < r->count; i++)
		cap += strlen(r->items[i].text) + strlen(r->items[i].rule) + 8;
	char *s = malloc(cap);
	if (!s)
		return rs_err_set(err, RS_NOMEM, "out of memory for the policy report");
	size_t o = 0;
	s[0] = '\0';
	for (size_t i = 0; i < r->count; i++) {
		if (r->items[i].action != which)
			continue;
		int n = snprintf(s + o, cap - o, "%s[%s] %s", o ? "; " : "", r->items[i].rule, r->items[i].text);
		if (n > 0)
			o += (size_t)n < cap - o ? (size_t)n : cap - o - 1;
	}
	if (r->dropped) {
		int n = snprintf(s + o, cap - o, " (and %zu more)", r->dropped);
		(void)n; /* cap has room for it */
	}
	*out = s;
	return RS_OK;
}

/* ---- forwarding ---- */

struct store_src {
	struct store *store;
};

static enum rs_code store_open_blob(void *ctx, const char *digest, int *fd, uint64_t *size, struct rs_err *err)
{
	struct store_src *s = ctx;
	return store_open_fd(s->store, STORE_PUSHED, STORE_BLOB, digest, fd, size, err);
}

static enum rs_code store_read_manifest(void *ctx, const char *digest, char **buf, size_t *len, char **mt,
					struct rs_err *err)
{
	struct store_src *s = ctx;
	return store_manifest_get(s->store, STORE_PUSHED, digest, RS_LIMIT_MANIFEST_MAX_BYTES, buf, len, mt, err);
}

struct dir_src {
	const char *dir; /* OCI layout */
};

static void blob_path(char *out, size_t cap, const char *dir, const char *digest)
{
	int n = snprintf(out, cap, "%s/blobs/sha256/%s", dir, digest + 7);
	if (n < 0)
		out[0] = '\0';
}

static enum rs_code dir_open_blob(void *ctx, const char *digest, int *fd, uint64_t *size, struct rs_err *err)
{
	struct dir_src *s = ctx;
	char path[4096];
	blob_path(path, sizeof(path), s->dir, digest);
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (*fd < 0 || fstat(*fd, &st) != 0) {
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
		return rs_err_set(err, RS_NOT_FOUND, "optimized blob %s: %s", digest, strerror(errno));
	}
	*size = (uint64_t)st.st_size;
	return RS_OK;
}

static enum rs_code dir_read_manifest(void *ctx, const char *digest, char **buf, size_t *len, char **mt,
				      struct rs_err *err)
{
	int fd;
	uint64_t size;
	enum rs_code rc = dir_open_blob(ctx, digest, &fd, &size, err);
	if (rc)
		return rc;
	rc = read_all_fd(fd, size, RS_LIMIT_MANIFEST_MAX_BYTES, buf, len, err);
	close(fd);
	if (rc)
		return rc;
	enum imagejson_kind kind;
	if ((rc = imagejson_sniff(&kind, *buf, *len, "optimized manifest", err))) {
		free(*buf);
		return rc;
	}
	*mt = strdup(kind == IMAGEJSON_INDEX ? IMAGE_MT_OCI_INDEX : IMAGE_MT_OCI_MANIFEST);
	return *mt ? RS_OK : rs_err_set(err, RS_NOMEM, "out of memory");
}

/* The optimizer's JSON report as a new string (*out), or NULL if memory
 * ran out: the report is informational, its loss is not an error. */
static void report_json(char **out, const struct report *rep)
{
	size_t len = 0;
	FILE *mf = open_memstream(out, &len);
	if (!mf) {
		*out = NULL;
		return;
	}
	report_print_json(rep, mf);
	bool bad = ferror(mf) != 0;
	if (fclose(mf) != 0 || bad) {
		free(*out);
		*out = NULL;
	}
}

/* Run the optimizer over store's repo:tag into a new layout; out_digest
 * receives the optimized manifest's digest, *out_report its JSON report
 * (new, may be NULL), dst the layout directory. */
static enum rs_code optimize(char out_digest[DIGEST_STR_SIZE], char **out_report, const char *work,
			     const struct rs_gate_policy *p, struct store *store,
			     const char *repo, const char *tag, const char *digest, struct rs_err *err)
{
	char src[4096], dst[4096], sref[4200], dref[4200];
	snprintf(src, sizeof(src), "%s/src", work);
	snprintf(dst, sizeof(dst), "%s/dst", work);
	enum rs_code rc =
		store_export_layout(store, STORE_PUSHED, digest, tag, src, RS_LIMIT_MANIFEST_MAX_BYTES, NULL, NULL, err);
	if (rc)
		return rc;
	struct policy pol = {0};
	rc = p->optimizer_policy ? policy_load(&pol, p->optimizer_policy, err) : policy_init_defaults(&pol, err);
	if (rc)
		return rc;
	snprintf(sref, sizeof(sref), "oci:%s:%s", src, tag);
	snprintf(dref, sizeof(dref), "oci:%s:%s", dst, tag);
	struct report rep;
	report_init(&rep);
	struct pipeline_opts o = {.src = sref, .dst = dref, .policy = &pol, .threads = 1};
	rc = pipeline_run(&rep, &o, err);
	if (rc == RS_OK) {
		/* the report names images, never where regslim keeps them */
		char name[4400];
		free(rep.source);
		free(rep.dest);
		snprintf(name, sizeof(name), "%s:%s@%s", repo, tag, digest);
		rep.source = report_strdup(name);
		snprintf(name, sizeof(name), "%s:%s (optimized)", repo, tag);
		rep.dest = report_strdup(name);
		report_json(out_report, &rep);
	}
	report_dispose(&rep);
	policy_dispose(&pol);
	if (rc) {
		/* what the optimizer refuses in the pushed image is the client's
		 * fault (400); the message must not show where regslim keeps it */
		if (rc == RS_DIGEST_MISMATCH || rc == RS_UNSUPPORTED || rc == RS_TOO_LARGE || rc == RS_NOT_FOUND)
			rc = err->code = RS_BAD_INPUT;
		(void)fsutil_scrub_path(err->msg, work, "<image>"); /* the new length is not needed */
		rs_err_prefix(err, "the image cannot be optimized: ");
		return rc;
	}
	struct layout_src *ls = NULL;
	if ((rc = layout_src_open(&ls, dref, err)))
		return rc;
	const struct imagejson_index *idx = layout_src_index(ls);
	const char *found = NULL;
	for (size_t i = 0; idx && i < idx->manifest_count; i++) {
		const char *name = imagejson_kv_get(idx->manifests[i].annotations, idx->manifests[i].annotation_count,
						    "org.opencontainers.image.ref.name");
		if (name && strcmp(name, tag) == 0)
			found = idx->manifests[i].digest;
	}
	if (found)
		snprintf(out_digest, DIGEST_STR_SIZE, "%s", found);
	else
		rc = rs_err_set(err, RS_NOT_FOUND, "the optimizer wrote no image for tag %s", tag);
	layout_src_free(ls);
	return rc;
}

/* The walk of sign_layout: the manifests the optimized index lists. */
struct child_walk {
	struct dir_src *src;
	char (*v)[DIGEST_STR_SIZE];
	size_t n, cap;
};

static enum rs_code child_load(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len, char **type,
			       struct rs_err *err)
{
	struct child_walk *w = ctx;
	return dir_read_manifest(w->src, n->digest, buf, len, type, err);
}

static enum rs_code child_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
				enum imagewalk_step *step, struct rs_err *err)
{
	struct child_walk *w = ctx;
	if (ev != IMAGEWALK_REF || n->kind != IMAGEWALK_ENTRY)
		return RS_OK;
	*step = IMAGEWALK_SKIP;
	if (w->n == w->cap || !digest_valid(n->digest))
		return rs_err_set(err, RS_BAD_INPUT, "optimized index entry %zu cannot be signed", n->pos);
	snprintf(w->v[w->n++], DIGEST_STR_SIZE, "%s", n->digest);
	return RS_OK;
}

/* Have signer sign the optimized image opt of layout ds (and, for an
 * index, each manifest it lists; osrc reads them) as repo:tag, up being the
 * push client to upc. */
static enum rs_code sign_layout(const struct gate_signer *signer, const struct rs_upstream_config *upc,
				struct upstream_push *up, const struct upstream_push_source *osrc, struct dir_src *ds,
				const char *repo, const char *tag, const char *opt, struct rs_err *err)
{
	struct child_walk w = {.src = ds, .cap = RS_LIMIT_WALK_DOCUMENTS};
	if (!(w.v = calloc(w.cap, sizeof(*w.v))))
		return rs_err_set(err, RS_NOMEM, "out of memory signing %s", opt);
	const struct imagewalk walk = {.load = child_load, .visit = child_visit, .ctx = &w, .max_depth = 1};
	enum rs_code rc = imagewalk_run(&walk, opt, err);
	if (rc == RS_OK)
		rc = signer->sign(signer->ctx, upc, up, osrc, repo, tag, opt, (const char(*)[DIGEST_STR_SIZE])w.v, w.n,
				  err);
	if (rc)
		rs_err_prefix(err, "signing the optimized image %s: ", opt);
	free(w.v);
	return rc;
}

static void note_pushed(struct gate_outcome *out, const char *tag, const char *digest, bool optimized)
{
	struct gate_pushed *g = &out->pushed[out->count++];
	snprintf(g->tag, sizeof(g->tag), "%s", tag);
	snprintf(g->digest, sizeof(g->digest), "%s", digest);
	g->optimized = optimized;
}

enum rs_code gate_forward(struct gate_outcome *out, const struct rs_gate_policy *p, const struct rs_config *cfg,
			  struct store *store, const char *repo,
			  const char *tag, const char *digest, const struct gate_signer *signer, struct rs_err *err)
{
	const struct rs_upstream_config *upc =
		cfg->push.upstream ? config_find_upstream(cfg, cfg->push.upstream) : &cfg->upstreams[cfg->default_upstream];
	if (!upc)
		return rs_err_set(err, RS_UPSTREAM, "push upstream %s is not configured", cfg->push.upstream);
	struct upstream_push *up = NULL;
	enum rs_code rc = upstream_push_new(&up, upc, err);
	if (rc)
		return rc;
	struct store_src ss = {store};
	struct upstream_push_source orig = {store_open_blob, store_read_manifest, &ss};
	char work[4096] = "", opt[DIGEST_STR_SIZE] = "";
	if (p->mode == GATE_MODE_CHECK_ONLY || p->mode == GATE_MODE_PUSH_BOTH) {
		rc = upstream_push_image(up, repo, tag, digest, &orig, err);
		if (rc == RS_OK)
			note_pushed(out, tag, digest, false);
	}
	if (rc == RS_OK && p->mode != GATE_MODE_CHECK_ONLY) {
		if ((rc = store_scratch_new(store, "gate", work, sizeof(work), err)))
			work[0] = '\0';
		if (rc == RS_OK)
			rc = optimize(opt, &out->optimizer_report, work, p, store, repo, tag, digest, err);
		char otag[RS_LIMIT_TAG_MAX + 64];
		snprintf(otag, sizeof(otag), "%s%s", tag, p->mode == GATE_MODE_PUSH_BOTH ? p->optimized_tag_suffix : "");
		if (rc == RS_OK && strlen(otag) > 128)
			rc = rs_err_set(err, RS_BAD_INPUT, "tag %s with suffix %s is longer than 128 characters", tag,
					p->optimized_tag_suffix);
		if (rc == RS_OK) {
			char dst[4200];
			snprintf(dst, sizeof(dst), "%s/dst", work);
			struct dir_src ds = {dst};
			struct upstream_push_source osrc = {dir_open_blob, dir_read_manifest, &ds};
			if (signer && signer->sign)
				rc = sign_layout(signer, upc, up, &osrc, &ds, repo, otag, opt, err);
			if (rc == RS_OK)
				rc = upstream_push_image(up, repo, otag, opt, &osrc, err);
			if (rc == RS_OK)
				note_pushed(out, otag, opt, true);
		}
	}
	if (work[0])
		store_scratch_remove(store, work); /* best effort: a leftover is swept at the next start */
	upstream_push_free(up);
	return rc;
}
