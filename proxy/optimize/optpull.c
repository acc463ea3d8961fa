/* optpull: the optimized pull path: cache of optimization results, the
 * single-flight job table with its worker threads, and the adapter that runs
 * the offline pipeline (optimizer/pipeline.c) over temporary OCI layouts
 * the store exports into its scratch area; results and reports are the
 * store's documents (store.h). See optpull.h for the contract. It never speaks
 * HTTP: blobs the store lacks come through the caller's fetch callbacks. */
#include "optpull.h"

#include "cluster.h"
#include "fsutil.h"
#include "image.h"
#include "imagewalk.h"
#include "log.h"
#include "metrics.h"
#include "pipeline.h"
#include "policy.h"
#include "report.h"
#include "rs_limits.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef REGSLIM_VERSION
#define REGSLIM_VERSION "0"
#endif

#define OPT_PATH_MAX 4096
#define COPY_BUF (64 * 1024)
/* How long a replica waits for another one's optimization of the same key: the owner's own
 * bound, and a minute to import and persist its output. */
#define CLUSTER_WAIT_S (RS_LIMIT_OPT_MAX_S + 60)
#define CLUSTER_WAIT_STEP_MS 1000 /* the result and a failure are looked for this often */

struct loaded_policy {
	struct policy base;
	char digest[OPTPULL_VARIANT_COUNT][DIGEST_STR_SIZE];
};

struct job {
	struct job *next;
	char key[OPTPULL_KEY_SIZE];
	unsigned refs;  /* the table's link counts as one while listed */
	bool listed;
	bool done;
	enum rs_code rc;
	struct rs_err err;
	struct optpull_result result;
	time_t failed_at;
	/* the work */
	struct optpull *op;
	size_t up_index;
	char repo[RS_LIMIT_NAME_MAX + 16];
	char source[DIGEST_STR_SIZE];
	const struct policy *base;
	char policy_digest[DIGEST_STR_SIZE];
	enum optpull_variant variant;
};

struct optpull {
	const struct rs_config *cfg;
	struct store *bs;
	struct cluster *cluster; /* one optimization per key in the cluster (optpull_set_cluster), or NULL */
	struct optpull_ops ops;
	struct loaded_policy *pols; /* parallel to cfg->optimize.policies */
	size_t pol_count;
	pthread_mutex_t lock;
	pthread_cond_t cond;        /* job done, worker slot free, or thread ended */
	struct job *jobs;
	unsigned threads;           /* worker threads alive */
	unsigned running;           /* holding a worker slot */
	_Atomic bool stopping;      /* optpull_free: running jobs stop, waiting ones do not start */
};

/* ------------------------------------------------------------ clients */

static int version_major(const char *s, int *minor)
{
	int major = 0, mi = 0;
	if (!isdigit((unsigned char)*s))
		return -1;
	while (isdigit((unsigned char)*s) && major < 100000)
		major = major * 10 + (*s++ - '0');
	if (*s == '.') {
		s++;
		while (isdigit((unsigned char)*s) && mi < 100000)
			mi = mi * 10 + (*s++ - '0');
	}
	if (minor)
		*minor = mi;
	return major;
}

struct optpull_client optpull_client_of(const char *ua)
{
	struct optpull_client c = {OPTPULL_FAMILY_UNKNOWN, false};
	if (!ua)
		return c;
	int minor = 0, major;
	if (strncmp(ua, "docker/", 7) == 0 && (major = version_major(ua + 7, &minor)) >= 0) {
		c.family = major < 23 ? OPTPULL_FAMILY_DOCKER_LEGACY : OPTPULL_FAMILY_DOCKER;
		c.zstd_ok = major >= 23;
	} else if (strncmp(ua, "containerd/", 11) == 0 && (major = version_major(ua + 11, &minor)) >= 0) {
		c.family = OPTPULL_FAMILY_CONTAINERD;
		c.zstd_ok = major > 1 || (major == 1 && minor >= 5);
	} else if (strncmp(ua, "containers/", 11) == 0 || strncmp(ua, "skopeo/", 7) == 0 ||
	           strncmp(ua, "cri-o/", 6) == 0 || strncmp(ua, "podman/", 7) == 0 ||
	           strncmp(ua, "Buildah/", 8) == 0 || strncmp(ua, "buildah/", 8) == 0) {
		c.family = OPTPULL_FAMILY_CONTAINERS;
		c.zstd_ok = true;
	}
	return c;
}

enum optpull_variant optpull_choose_variant(const struct rs_opt_policy *p, struct optpull_client c)
{
	if (p->compression == RS_OPT_COMPRESS_ZSTD)
		return OPTPULL_ZSTD;
	if (p->compression == RS_OPT_COMPRESS_GZIP)
		return OPTPULL_GZIP;
	if (c.family == OPTPULL_FAMILY_UNKNOWN)
		return p->unknown_clients == RS_OPT_COMPRESS_ZSTD ? OPTPULL_ZSTD : OPTPULL_GZIP;
	return c.zstd_ok ? OPTPULL_ZSTD : OPTPULL_GZIP;
}

const char *optpull_family_name(enum optpull_family f)
{
	static const char *const names[] = {"docker-legacy", "containerd", "docker", "containers", "unknown"};
	return (unsigned)f <= OPTPULL_FAMILY_UNKNOWN ? names[f] : "unknown";
}

const char *optpull_variant_name(enum optpull_variant v)
{
	return v == OPTPULL_GZIP ? "gzip" : "zstd";
}

/* ------------------------------------------------------------ files */

void optpull_key(char out[OPTPULL_KEY_SIZE], const char *source_digest, const char *policy_digest,
                 enum optpull_variant v)
{
	char ver[32];
	size_t j = 0;
	/* the version goes into a file name: keep [A-Za-z0-9.-] only */
	for (const char *s = REGSLIM_VERSION; *s && j + 1 < sizeof(ver); s++)
		ver[j++] = isalnum((unsigned char)*s) || *s == '.' || *s == '-' ? *s : '_';
	ver[j] = '\0';
	snprintf(out, OPTPULL_KEY_SIZE, "%s-%.16s-%s-v%s", digest_hex(source_digest), digest_hex(policy_digest),
	         optpull_variant_name(v), ver);
}

/* Tiny parser for our own result file: "key":"value" and "key":number. */
static bool json_field(const char *doc, const char *key, char *out, size_t cap)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *p = strstr(doc, pat);
	if (!p)
		return false;
	p += strlen(pat);
	size_t n = 0;
	if (*p == '"') {
		p++;
		while (*p && *p != '"' && n + 1 < cap)
			out[n++] = *p++;
		if (*p != '"')
			return false;
	} else {
		while (*p && (isdigit((unsigned char)*p)) && n + 1 < cap)
			out[n++] = *p++;
	}
	out[n] = '\0';
	return n > 0;
}

/* ------------------------------------------------------------ lifecycle */

enum rs_code optpull_new(struct optpull **out, const struct rs_config *cfg, struct store *bs,
                         const struct optpull_ops *ops, struct rs_err *err)
{
	struct optpull *op = calloc(1, sizeof(*op));
	if (!op)
		return rs_err_set(err, RS_NOMEM, "optpull: out of memory");
	op->cfg = cfg;
	op->bs = bs;
	op->ops = *ops;
	pthread_mutex_init(&op->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&op->cond, &ca);
	pthread_condattr_destroy(&ca);
	enum rs_code rc = RS_OK;
	size_t n = cfg->optimize.policy_count;
	op->pols = calloc(n ? n : 1, sizeof(*op->pols));
	if (!op->pols) {
		rc = rs_err_set(err, RS_NOMEM, "optpull: out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const struct rs_opt_policy *cp = &cfg->optimize.policies[i];
		struct loaded_policy *lp = &op->pols[i];
		rc = cp->policy_file ? policy_load(&lp->base, cp->policy_file, err) : policy_init_defaults(&lp->base, err);
		if (rc) {
			rs_err_prefix(err, "optimize.policies[%zu]: ", i);
			goto out;
		}
		op->pol_count = i + 1;
		for (int v = 0; v < OPTPULL_VARIANT_COUNT; v++) {
			struct policy eff = lp->base; /* shallow: borrows lp->base's strings */
			enum policy_compression want = v == OPTPULL_GZIP ? POLICY_COMPRESS_GZIP : POLICY_COMPRESS_ZSTD;
			if (eff.compression != want)
				eff.level = 0;
			eff.compression = want;
			if ((rc = pipeline_policy_digest(lp->digest[v], &eff, err)))
				goto out;
		}
	}
	*out = op;
	return RS_OK;
out:
	optpull_free(op);
	return rc;
}

void optpull_set_cluster(struct optpull *op, struct cluster *c)
{
	if (op)
		op->cluster = c;
}

void optpull_stop(struct optpull *op)
{
	if (!op)
		return;
	atomic_store(&op->stopping, true);
	pthread_mutex_lock(&op->lock);
	pthread_cond_broadcast(&op->cond); /* workers waiting for a slot see it */
	pthread_mutex_unlock(&op->lock);
}

bool optpull_wait_idle(struct optpull *op, unsigned max_ms)
{
	if (!op)
		return true;
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += (time_t)(max_ms / 1000);
	until.tv_nsec += (long)(max_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&op->lock);
	while (op->threads && pthread_cond_timedwait(&op->cond, &op->lock, &until) != ETIMEDOUT)
		;
	bool idle = op->threads == 0;
	pthread_mutex_unlock(&op->lock);
	return idle;
}

void optpull_free(struct optpull *op)
{
	if (!op)
		return;
	optpull_stop(op);
	pthread_mutex_lock(&op->lock);
	while (op->threads)
		pthread_cond_wait(&op->cond, &op->lock);
	struct job *j = op->jobs;
	op->jobs = NULL;
	pthread_mutex_unlock(&op->lock);
	while (j) {
		struct job *next = j->next;
		free(j); /* no thread and no waiter holds it any more */
		j = next;
	}
	for (size_t i = 0; i < op->pol_count; i++)
		policy_dispose(&op->pols[i].base);
	free(op->pols);
	pthread_cond_destroy(&op->cond);
	pthread_mutex_destroy(&op->lock);
	free(op);
}

static const struct loaded_policy *policy_of(const struct optpull *op, const struct rs_opt_policy *p)
{
	for (size_t i = 0; i < op->pol_count; i++)
		if (&op->cfg->optimize.policies[i] == p)
			return &op->pols[i];
	return NULL;
}

/* ------------------------------------------------------------ cache */

/* Is object kind/digest of an optimized image in the store? It is pinned
 * first (cache.optimized_pin_s), so a yes holds for the client about to
 * fetch it: eviction passes over it until the pin expires. */
static bool keep(struct optpull *op, enum store_kind kind, const char *digest)
{
	unsigned pin_s = op->cfg->cache_optimized_pin_s;
	if (pin_s == 0)
		return store_has(op->bs, STORE_CACHE, kind, digest);
	time_t until = time(NULL) + (time_t)pin_s;
	bool pinned = store_pin(op->bs, STORE_CACHE, kind, digest, until);
	/* the store's objects have the last word (a file removed behind its
	 * index's back); has() adopts one the index did not know: pinned then */
	return store_has(op->bs, STORE_CACHE, kind, digest) &&
	       (pinned || store_pin(op->bs, STORE_CACHE, kind, digest, until));
}

/* The walk of result_complete: every manifest, config and layer that a
 * stored manifest or index names is in the store; one level of index.
 * Each is pinned as it is checked (keep), so a complete answer stays true
 * for the clients served it. */
static enum rs_code result_load(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len, char **type,
                                struct rs_err *err)
{
	struct optpull *op = ctx;
	if (!keep(op, STORE_MANIFEST, n->digest))
		return rs_err_set(err, RS_NOT_FOUND, "optimized manifest %s is no longer in the store", n->digest);
	return store_manifest_get(op->bs, STORE_CACHE, n->digest, RS_LIMIT_MANIFEST_MAX_BYTES, buf, len, type, err);
}

static enum rs_code result_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                                 enum imagewalk_step *step, struct rs_err *err)
{
	(void)step;
	struct optpull *op = ctx;
	if (ev == IMAGEWALK_LOADED && n->kind == IMAGEWALK_INDEX && n->depth > 0)
		return rs_err_set(err, RS_NOT_FOUND, "optimized %s: unexpected nested index", n->digest);
	if (ev != IMAGEWALK_REF || n->kind == IMAGEWALK_ENTRY || keep(op, STORE_BLOB, n->digest))
		return RS_OK;
	return rs_err_set(err, RS_NOT_FOUND, "%s %s of optimized %s is no longer in the store",
	                  n->kind == IMAGEWALK_CONFIG ? "config" : "layer", n->digest, n->parent->digest);
}

/* RS_NOT_FOUND naming the first object of the result digest that is missing. */
static enum rs_code result_complete(struct optpull *op, const char *digest, struct rs_err *err)
{
	const struct imagewalk walk = {.load = result_load, .visit = result_visit, .ctx = op};
	return imagewalk_run(&walk, digest, err);
}

static enum rs_code read_result(struct optpull *op, const char *key, struct optpull_result *out,
                                struct rs_err *err)
{
	char *doc = NULL;
	size_t len = 0;
	enum rs_code rc = store_doc_get(op->bs, STORE_DOC_OPT_RESULT, NULL, key, RS_LIMIT_OPT_RESULT_MAX_BYTES, &doc, &len,
	                                err);
	if (rc)
		return rc;
	char num[32] = "0";
	memset(out, 0, sizeof(*out));
	bool ok = json_field(doc, "digest", out->digest, sizeof(out->digest)) && digest_valid(out->digest) &&
	          json_field(doc, "media_type", out->media_type, sizeof(out->media_type));
	if (json_field(doc, "bytes_saved", num, sizeof(num)))
		out->bytes_saved = strtoull(num, NULL, 10);
	free(doc);
	if (!ok)
		return rs_err_set(err, RS_NOT_FOUND, "result %s is not valid; optimizing again", key);
	if (!store_has(op->bs, STORE_CACHE, STORE_MANIFEST, out->digest))
		return rs_err_set(err, RS_NOT_FOUND, "optimized manifest %s is no longer in the store", out->digest);
	/* Eviction may have taken a blob the result needs: a result is only as
	 * good as every blob it names, else it is optimized again. */
	return result_complete(op, out->digest, err);
}

static enum rs_code key_of(struct optpull *op, const struct optpull_request *rq, char key[OPTPULL_KEY_SIZE],
                           const struct loaded_policy **lp_out, struct rs_err *err)
{
	const struct loaded_policy *lp = policy_of(op, rq->policy);
	if (!lp)
		return rs_err_set(err, RS_BAD_INPUT, "optpull: the policy is not one of the configuration's");
	if (!digest_valid(rq->source_digest))
		return rs_err_set(err, RS_DIGEST_INVALID, "optpull: invalid source digest '%.80s'", rq->source_digest);
	optpull_key(key, rq->source_digest, lp->digest[rq->variant], rq->variant);
	if (lp_out)
		*lp_out = lp;
	return RS_OK;
}

enum rs_code optpull_lookup(struct optpull *op, struct optpull_result *out, const struct optpull_request *rq,
                            struct rs_err *err)
{
	char key[OPTPULL_KEY_SIZE];
	enum rs_code rc = key_of(op, rq, key, NULL, err);
	if (rc)
		return rc;
	return read_result(op, key, out, err);
}

enum rs_code optpull_report(struct optpull *op, const char *digest, char **out, size_t *out_len,
                            struct rs_err *err)
{
	if (!digest_valid(digest))
		return rs_err_set(err, RS_DIGEST_INVALID, "invalid digest '%.80s'", digest);
	enum rs_code rc =
		store_doc_get(op->bs, STORE_DOC_OPT_REPORT, NULL, digest, RS_LIMIT_OPT_REPORT_MAX_BYTES, out, out_len, err);
	if (rc == RS_NOT_FOUND)
		rs_err_set(err, RS_NOT_FOUND, "no optimization report for %s", digest);
	return rc;
}

/* ------------------------------------------------------------ the adapter */

/* store_export_layout's fetch: the registry's single-flight download of
 * what the job's source needs, from its upstream repository. */
static enum rs_code fetch_for_job(void *ctx, enum store_kind kind, const char *digest, struct rs_err *err)
{
	struct job *j = ctx;
	const struct optpull_ops *ops = &j->op->ops;
	return kind == STORE_MANIFEST ? ops->fetch_manifest(ops->ctx, j->up_index, j->repo, digest, err)
	                                  : ops->fetch_blob(ops->ctx, j->up_index, j->repo, digest, err);
}

/* Copy one output blob into the store (verified). */
static enum rs_code import_blob(struct optpull *op, const char *path, const char *digest, struct rs_err *err)
{
	if (store_has(op->bs, STORE_CACHE, STORE_BLOB, digest))
		return RS_OK;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return rs_err_set(err, RS_IO, "open %s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) != 0) {
		close(fd);
		return rs_err_set(err, RS_IO, "stat %s: %s", path, strerror(errno));
	}
	struct store_writer *w = NULL;
	enum rs_code rc = store_writer_new(&w, op->bs, STORE_CACHE, STORE_BLOB, digest, (int64_t)st.st_size, err);
	char *buf = rc ? NULL : malloc(COPY_BUF);
	if (rc == RS_OK && !buf)
		rc = rs_err_set(err, RS_NOMEM, "out of memory importing %s", digest);
	while (rc == RS_OK) {
		ssize_t n = read(fd, buf, COPY_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			rc = rs_err_set(err, RS_IO, "reading %s: %s", path, strerror(errno));
		if (n <= 0)
			break;
		rc = store_writer_write(w, buf, (size_t)n, err);
	}
	free(buf);
	close(fd);
	if (rc) {
		store_writer_abort(w);
		return rc;
	}
	return store_writer_commit(w, err);
}

static bool is_manifest(const struct report *rep, const char *digest, const char **type)
{
	if (strcmp(rep->digest, digest) == 0) {
		*type = rep->media_type ? rep->media_type : IMAGE_MT_OCI_MANIFEST;
		return true;
	}
	for (size_t i = 0; i < rep->image_count; i++)
		if (strcmp(rep->images[i].digest, digest) == 0) {
			*type = IMAGE_MT_OCI_MANIFEST;
			return true;
		}
	return false;
}

/* Record how object digest of an optimized image was made
 * (STORE_DOC_OPT_OWNER): the result key and the request (source, upstream,
 * repository, policy, variant), so that the object can be made again when it
 * left the store (optpull_regenerate), even after eviction took its result
 * too. An object two results share names the latest. */
static enum rs_code owner_note(struct job *j, const char *digest, struct rs_err *err)
{
	struct optpull *op = j->op;
	char doc[1024];
	int n = snprintf(doc, sizeof(doc),
	                 "{\"key\":\"%s\",\"source\":\"%s\",\"upstream\":\"%s\",\"repository\":\"%s\","
	                 "\"policy\":\"%s\",\"variant\":\"%s\"}\n",
	                 j->key, j->source, op->cfg->upstreams[j->up_index].name, j->repo, j->policy_digest,
	                 optpull_variant_name(j->variant));
	if (n < 0 || (size_t)n >= sizeof(doc))
		return rs_err_set(err, RS_TOO_LARGE, "owner document too large");
	return store_doc_put(op->bs, STORE_DOC_OPT_OWNER, NULL, digest, doc, (size_t)n, err);
}

/* Import every blob and manifest of the output layout dir into the store:
 * blobs first, so that a stored manifest never names a missing blob. Each
 * object's owner (the result key) is noted before the object is stored. */
static enum rs_code import_output(struct job *j, const char *dir, const struct report *rep, struct rs_err *err)
{
	struct optpull *op = j->op;
	char bdir[OPT_PATH_MAX + 64];
	snprintf(bdir, sizeof(bdir), "%s/blobs/sha256", dir);
	enum rs_code rc = RS_OK;
	for (int pass = 0; pass < 2 && rc == RS_OK; pass++) {
		DIR *d = opendir(bdir);
		if (!d)
			return rs_err_set(err, RS_IO, "opendir %s: %s", bdir, strerror(errno));
		struct dirent *de;
		while (rc == RS_OK && (de = readdir(d)) != NULL) {
			if (strlen(de->d_name) != DIGEST_HEX_LEN)
				continue;
			char digest[DIGEST_STR_SIZE], path[OPT_PATH_MAX + 160];
			snprintf(digest, sizeof(digest), "sha256:%.64s", de->d_name);
			snprintf(path, sizeof(path), "%s/%.64s", bdir, de->d_name);
			const char *type = NULL;
			bool man = is_manifest(rep, digest, &type);
			if (pass == (man ? 1 : 0))
				rc = owner_note(j, digest, err);
			if (rc != RS_OK)
				break;
			if (pass == 0 && !man) {
				rc = import_blob(op, path, digest, err);
			} else if (pass == 1 && man && !store_has(op->bs, STORE_CACHE, STORE_MANIFEST, digest)) {
				char *buf = NULL;
				size_t len = 0;
				rc = fsutil_read_small(&buf, &len, path, op->cfg->manifest_max_bytes, err);
				if (rc == RS_OK)
					rc = store_manifest_put(op->bs, STORE_CACHE, digest, type, buf, len, err);
				free(buf);
			}
		}
		closedir(d);
	}
	return rc;
}

static double mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Persist the result and the report; the result file goes last, so a
 * result always has its report. */
static enum rs_code persist(struct job *j, const struct report *rep, struct rs_err *err)
{
	struct optpull *op = j->op;
	char *rbuf = NULL;
	size_t rlen = 0;
	FILE *mf = open_memstream(&rbuf, &rlen);
	if (!mf)
		return rs_err_set(err, RS_NOMEM, "out of memory writing the report");
	report_print_json(rep, mf);
	bool bad = ferror(mf) != 0;
	fclose(mf);
	if (bad) {
		free(rbuf);
		return rs_err_set(err, RS_NOMEM, "out of memory writing the report");
	}
	enum rs_code rc = store_doc_put(op->bs, STORE_DOC_OPT_REPORT, NULL, j->result.digest, rbuf, rlen, err);
	free(rbuf);
	if (rc)
		return rc;
	char doc[1024];
	int n = snprintf(doc, sizeof(doc),
	                 "{\"source\":\"%s\",\"digest\":\"%s\",\"media_type\":\"%s\",\"policy\":\"%s\","
	                 "\"optimizer_version\":\"%s\",\"variant\":\"%s\",\"upstream\":\"%s\",\"repository\":\"%s\","
	                 "\"bytes_saved\":%llu}\n",
	                 j->source, j->result.digest, j->result.media_type, j->policy_digest, REGSLIM_VERSION,
	                 optpull_variant_name(j->variant), op->cfg->upstreams[j->up_index].name, j->repo,
	                 (unsigned long long)j->result.bytes_saved);
	if (n < 0 || (size_t)n >= sizeof(doc))
		return rs_err_set(err, RS_TOO_LARGE, "result document too large");
	return store_doc_put(op->bs, STORE_DOC_OPT_RESULT, NULL, j->key, doc, (size_t)n, err);
}

static enum rs_code run_job(struct job *j, struct rs_err *err)
{
	struct optpull *op = j->op;
	char top[OPT_PATH_MAX];
	enum rs_code rc = store_scratch_new(op->bs, "opt", top, sizeof(top), err);
	if (rc)
		return rc;
	char src[OPT_PATH_MAX + 8], dst[OPT_PATH_MAX + 8], sref[OPT_PATH_MAX + 16], dref[OPT_PATH_MAX + 16];
	snprintf(src, sizeof(src), "%s/src", top);
	snprintf(dst, sizeof(dst), "%s/dst", top);
	snprintf(sref, sizeof(sref), "oci:%s", src);
	snprintf(dref, sizeof(dref), "oci:%s", dst);
	struct report rep;
	report_init(&rep);
	rc = store_export_layout(op->bs, STORE_CACHE, j->source, NULL, src, op->cfg->manifest_max_bytes, fetch_for_job, j,
	                         err);
	if (rc == RS_OK) {
		struct policy eff = *j->base; /* shallow copy: borrows the loaded policy's strings */
		enum policy_compression want = j->variant == OPTPULL_GZIP ? POLICY_COMPRESS_GZIP : POLICY_COMPRESS_ZSTD;
		if (eff.compression != want)
			eff.level = 0;
		eff.compression = want;
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		/* cancelled at shutdown; bounded in time so that no image holds a
		 * worker for long (a failure is remembered: the original is served) */
		struct pipeline_opts o = {sref,
		                          dref,
		                          &eff,
		                          ncpu > 0 ? (unsigned)ncpu : 1,
		                          CODEC_INFLATE_DEFAULT,
		                          NULL,
		                          NULL,
		                          &op->stopping,
		                          pipeline_now_ms() + (uint64_t)RS_LIMIT_OPT_MAX_S * 1000};
		rc = pipeline_run(&rep, &o, err);
	}
	if (rc == RS_OK) {
		/* the report names images, never where regslim keeps them */
		char name[RS_LIMIT_NAME_MAX + 600];
		free(rep.source);
		free(rep.dest);
		snprintf(name, sizeof(name), "%s/%s@%s", op->cfg->upstreams[j->up_index].name, j->repo, j->source);
		rep.source = report_strdup(name);
		snprintf(name, sizeof(name), "%s/%s@%s", op->cfg->upstreams[j->up_index].name, j->repo,
		         rep.digest);
		rep.dest = report_strdup(name);
	}
	if (rc == RS_OK)
		rc = import_output(j, dst, &rep, err);
	if (rc == RS_OK) {
		snprintf(j->result.digest, sizeof(j->result.digest), "%s", rep.digest);
		snprintf(j->result.media_type, sizeof(j->result.media_type), "%s",
		         rep.media_type ? rep.media_type : IMAGE_MT_OCI_MANIFEST);
		uint64_t in_size = 0, in_unc = 0, out_size = 0, out_unc = 0;
		report_totals(&rep, &in_size, &in_unc, &out_size, &out_unc);
		j->result.bytes_saved = in_size > out_size ? in_size - out_size : 0;
		if (!store_has(op->bs, STORE_CACHE, STORE_MANIFEST, j->result.digest))
			rc = rs_err_set(err, RS_IO, "the optimized manifest %s did not reach the store", j->result.digest);
	}
	if (rc == RS_OK)
		rc = persist(j, &rep, err);
	report_dispose(&rep);
	store_scratch_remove(op->bs, top);
	return rc;
}

static void job_release_locked(struct optpull *op, struct job *j)
{
	(void)op;
	if (--j->refs == 0)
		free(j);
}

/* Remove j from the table; returns the number of references that frees
 * (the table's: 1 if it was listed). */
static unsigned unlist_locked(struct optpull *op, struct job *j)
{
	for (struct job **pp = &op->jobs; *pp; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			j->listed = false;
			return 1;
		}
	return 0;
}

/* ------------------------------------------------------------ one optimization per key in the cluster */

/* Another replica's failure of key, noted in the cluster's map for RS_LIMIT_OPT_FAILURE_TTL_S
 * ("<code> <message>"): adopted as ours. false when there is none. */
static bool adopt_failure(struct job *j, enum rs_code *rc, struct rs_err *err)
{
	char mkey[OPTPULL_KEY_SIZE + 16], *v = NULL;
	struct rs_err merr = {0};
	snprintf(mkey, sizeof(mkey), "optfail:%s", j->key);
	if (cluster_map_get(&v, j->op->cluster, mkey, &merr) != RS_OK || !v)
		return false;
	char *msg = NULL;
	long code = strtol(v, &msg, 10);
	*rc = rs_err_set(err, code > RS_OK && code < 64 ? (enum rs_code)code : RS_IO, "%s", *msg ? msg + 1 : "failed");
	free(v);
	return true;
}

static void note_failure(struct job *j, enum rs_code rc, const struct rs_err *err)
{
	char mkey[OPTPULL_KEY_SIZE + 16], v[RS_ERR_MSG_MAX + 32];
	struct rs_err merr = {0};
	snprintf(mkey, sizeof(mkey), "optfail:%s", j->key);
	snprintf(v, sizeof(v), "%d %s on replica %s", (int)rc, err->msg, cluster_replica_id(j->op->cluster));
	if (cluster_map_set(j->op->cluster, mkey, v, RS_LIMIT_OPT_FAILURE_TTL_S, &merr) != RS_OK)
		log_event(LOG_DEBUG, "optimization of %s: the failure was not shared: %s", j->source, merr.msg);
}

/* Take the cluster's lock "opt:<key>" before optimizing (docs/scale-out.md): *out is ours to
 * release after the work. While another replica holds it, wait (cluster_lock_wait, a second at
 * a time, at most CLUSTER_WAIT_S) and look for its result document: *out_done with j->result
 * filled when it came (or was there), a failure it noted is adopted; when its lock expires (the
 * owner died) this replica takes over. No cluster: nothing to take (*out NULL). */
static enum rs_code cluster_turn(struct job *j, struct cluster_lock **out, bool *out_done, struct rs_err *err)
{
	struct optpull *op = j->op;
	*out = NULL;
	*out_done = false;
	if (!op->cluster)
		return RS_OK;
	char name[OPTPULL_KEY_SIZE + 8], holder[CLUSTER_OWNER_MAX], who[CLUSTER_OWNER_MAX] = "";
	snprintf(name, sizeof(name), "opt:%s", j->key);
	double t0 = mono_now();
	const char *outcome = NULL;
	enum rs_code rc = RS_OK;
	for (bool waited = false; rc == RS_OK && !outcome; waited = true) {
		struct cluster_lock *l = NULL;
		struct rs_err cerr = {0};
		rc = cluster_lock_wait(&l, op->cluster, name, waited ? CLUSTER_WAIT_STEP_MS : 0, holder, sizeof(holder), err);
		if (rc)
			break;
		if (holder[0])
			cluster_owner_replica(who, sizeof(who), holder);
		if (read_result(op, j->key, &j->result, &cerr) == RS_OK) {
			*out_done = true; /* finished just before we looked, or while we waited */
			outcome = "result";
		} else if (adopt_failure(j, &rc, err)) {
			outcome = "failed";
		} else if (l) {
			*out = l;
			l = NULL;
			outcome = waited ? "takeover" : "own";
			if (waited)
				log_event(LOG_WARN, "optimizing %s %s (%s): replica %s stopped without a result (its lock "
				                    "expired): this replica takes over", j->repo, j->source,
				          optpull_variant_name(j->variant), who);
		} else if (atomic_load(&op->stopping)) {
			rc = rs_err_set(err, RS_TIMEOUT, "optimization cancelled");
		} else if (mono_now() - t0 >= CLUSTER_WAIT_S) {
			rc = rs_err_set(err, RS_TIMEOUT, "optimization of %s by replica %s still running after %us", j->source,
			                who, (unsigned)CLUSTER_WAIT_S);
			outcome = "timeout";
		} else if (!waited) {
			log_event(LOG_INFO, "optimizing %s %s (%s) runs on replica %s: waiting for its result (lock %s)",
			          j->repo, j->source, optpull_variant_name(j->variant), who, name);
		}
		cluster_lock_release(l); /* a lock that came with the result: not needed */
		if (outcome && waited)
			metrics_optimization_wait(outcome, mono_now() - t0);
	}
	if (*out_done)
		log_event(LOG_INFO, "optimized %s %s -> %s (%s) by replica %s: its result is ours", j->repo, j->source,
		          j->result.digest, optpull_variant_name(j->variant), who[0] ? who : "(another)");
	return rc;
}

/* The optimization itself on a worker slot (at most RS_LIMIT_OPT_WORKERS at once). */
static enum rs_code optimize_on_slot(struct job *j, struct rs_err *err)
{
	struct optpull *op = j->op;
	pthread_mutex_lock(&op->lock);
	while (op->running >= RS_LIMIT_OPT_WORKERS && !atomic_load(&op->stopping))
		pthread_cond_wait(&op->cond, &op->lock);
	op->running++;
	pthread_mutex_unlock(&op->lock);

	double t0 = mono_now();
	enum rs_code rc = atomic_load(&op->stopping) ? rs_err_set(err, RS_TIMEOUT, "optimization cancelled")
	                                             : run_job(j, err);
	double secs = mono_now() - t0;
	metrics_optimization(rc == RS_OK, secs);
	if (rc == RS_OK) {
		metrics_bytes_saved("stored", j->result.bytes_saved);
		log_event(LOG_INFO, "optimized %s %s -> %s (%s, %.1fs, %llu bytes saved)", j->repo, j->source,
		          j->result.digest, optpull_variant_name(j->variant), secs,
		          (unsigned long long)j->result.bytes_saved);
	} else {
		log_event(LOG_WARN, "optimizing %s %s (%s) failed after %.1fs: %s; serving the original for %us",
		          j->repo, j->source, optpull_variant_name(j->variant), secs, err->msg,
		          (unsigned)RS_LIMIT_OPT_FAILURE_TTL_S);
	}
	pthread_mutex_lock(&op->lock);
	op->running--;
	pthread_mutex_unlock(&op->lock);
	return rc;
}

static void *worker(void *arg)
{
	struct job *j = arg;
	struct optpull *op = j->op;
	struct rs_err err = {0};
	struct cluster_lock *cl = NULL;
	bool elsewhere = false; /* another replica's result */
	enum rs_code rc = cluster_turn(j, &cl, &elsewhere, &err);
	if (rc == RS_OK && !elsewhere)
		rc = optimize_on_slot(j, &err);
	if (cl && rc != RS_OK && !atomic_load(&op->stopping))
		note_failure(j, rc, &err); /* the other replicas adopt it rather than try again at once */
	cluster_lock_release(cl);

	pthread_mutex_lock(&op->lock);
	j->done = true;
	j->rc = rc;
	j->err = err;
	j->failed_at = rc ? time(NULL) : 0;
	unsigned drop = 1; /* the worker's reference */
	if (rc == RS_OK)
		drop += unlist_locked(op, j); /* the result file is the cache from now on */
	op->threads--;
	j->refs -= drop;
	if (j->refs == 0)
		free(j);
	pthread_cond_broadcast(&op->cond);
	pthread_mutex_unlock(&op->lock);
	return NULL;
}

enum rs_code optpull_get(struct optpull *op, struct optpull_result *out, const struct optpull_request *rq,
                         unsigned wait_s, struct rs_err *err)
{
	char key[OPTPULL_KEY_SIZE];
	const struct loaded_policy *lp = NULL;
	enum rs_code rc = key_of(op, rq, key, &lp, err);
	if (rc)
		return rc;
	struct rs_err cerr = {0};
	if (read_result(op, key, out, &cerr) == RS_OK)
		goto done;

	pthread_mutex_lock(&op->lock);
	struct job *j;
	for (j = op->jobs; j; j = j->next)
		if (strcmp(j->key, key) == 0)
			break;
	if (j && j->done && j->rc != RS_OK && time(NULL) - j->failed_at >= RS_LIMIT_OPT_FAILURE_TTL_S) {
		j->refs -= unlist_locked(op, j); /* forget an old failure: try again */
		if (j->refs == 0)
			free(j);
		j = NULL;
	}
	if (!j) {
		/* a job that just finished may have written the file meanwhile */
		pthread_mutex_unlock(&op->lock);
		if (read_result(op, key, out, &cerr) == RS_OK)
			goto done;
		pthread_mutex_lock(&op->lock);
		for (j = op->jobs; j; j = j->next)
			if (strcmp(j->key, key) == 0)
				break;
	}
	if (!j) {
		j = calloc(1, sizeof(*j));
		if (!j) {
			pthread_mutex_unlock(&op->lock);
			return rs_err_set(err, RS_NOMEM, "optpull: out of memory");
		}
		snprintf(j->key, sizeof(j->key), "%s", key);
		j->op = op;
		j->up_index = rq->up_index;
		snprintf(j->repo, sizeof(j->repo), "%s", rq->repo);
		snprintf(j->source, sizeof(j->source), "%s", rq->source_digest);
		j->base = &lp->base;
		snprintf(j->policy_digest, sizeof(j->policy_digest), "%s", lp->digest[rq->variant]);
		j->variant = rq->variant;
		j->refs = 2; /* the table and the worker */
		j->listed = true;
		pthread_t th;
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		int e = pthread_create(&th, &attr, worker, j);
		pthread_attr_destroy(&attr);
		if (e != 0) {
			pthread_mutex_unlock(&op->lock);
			free(j);
			return rs_err_set(err, RS_NOMEM, "optpull: cannot start a worker thread: %s", strerror(e));
		}
		op->threads++;
		j->next = op->jobs;
		op->jobs = j;
		log_event(LOG_INFO, "optimizing %s %s (%s)", rq->repo, rq->source_digest,
		          optpull_variant_name(rq->variant));
	}
	j->refs++;
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += wait_s;
	/* optpull_stop wakes us: at shutdown the caller answers with the
	 * original at once instead of holding its request past the grace. */
	while (!j->done && !atomic_load(&op->stopping)) {
		if (pthread_cond_timedwait(&op->cond, &op->lock, &until) == ETIMEDOUT)
			break;
	}
	if (!j->done && atomic_load(&op->stopping)) {
		rc = rs_err_set(err, RS_TIMEOUT, "optimization of %s cancelled: shutting down", rq->source_digest);
	} else if (!j->done) {
		rc = rs_err_set(err, RS_TIMEOUT, "optimization of %s still running after %us (optimize.sync_timeout_s)",
		                rq->source_digest, wait_s);
	} else if (j->rc != RS_OK) {
		*err = j->err;
		rc = j->rc;
	} else {
		*out = j->result;
		rc = RS_OK;
	}
	job_release_locked(op, j);
	pthread_mutex_unlock(&op->lock);
	/* pinned for the client like a cached result; if eviction took a piece
	 * already (a cache far too small), the caller serves the original */
	if (rc == RS_OK)
		rc = result_complete(op, out->digest, err);
	if (rc)
		return rc;
done:
	snprintf(out->policy_digest, sizeof(out->policy_digest), "%s", lp->digest[rq->variant]);
	return RS_OK;
}

/* ------------------------------------------------------------ regeneration */

/* The request that made an object, from its owner document: source,
 * upstream, repository, policy and variant. RS_NOT_FOUND when the document
 * does not say (written by an older revision) or names what is no longer
 * configured. */
static enum rs_code request_of_owner(struct optpull *op, const char *doc, struct optpull_request *rq, char *repo,
                                     size_t repo_cap, char source[DIGEST_STR_SIZE], struct rs_err *err)
{
	char up[256] = "", policy[DIGEST_STR_SIZE] = "", variant[16] = "";
	bool ok = json_field(doc, "source", source, DIGEST_STR_SIZE) && digest_valid(source) &&
	          json_field(doc, "upstream", up, sizeof(up)) && json_field(doc, "repository", repo, repo_cap) &&
	          json_field(doc, "policy", policy, sizeof(policy)) && json_field(doc, "variant", variant, sizeof(variant));
	if (!ok)
		return rs_err_set(err, RS_NOT_FOUND, "its owner document does not say how it was made");
	memset(rq, 0, sizeof(*rq));
	rq->up_index = op->cfg->upstream_count;
	for (size_t i = 0; i < op->cfg->upstream_count; i++)
		if (strcmp(op->cfg->upstreams[i].name, up) == 0)
			rq->up_index = i;
	rq->variant = strcmp(variant, optpull_variant_name(OPTPULL_GZIP)) == 0 ? OPTPULL_GZIP : OPTPULL_ZSTD;
	for (size_t i = 0; i < op->pol_count && !rq->policy; i++)
		if (strcmp(op->pols[i].digest[rq->variant], policy) == 0)
			rq->policy = &op->cfg->optimize.policies[i];
	if (rq->up_index == op->cfg->upstream_count || !rq->policy)
		return rs_err_set(err, RS_NOT_FOUND, "its upstream or policy is no longer configured");
	rq->repo = repo;
	rq->source_digest = source;
	return RS_OK;
}

enum rs_code optpull_regenerate(struct optpull *op, enum store_kind kind, const char *digest, unsigned wait_s,
                                struct rs_err *err)
{
	if (!digest_valid(digest))
		return rs_err_set(err, RS_DIGEST_INVALID, "invalid digest '%.80s'", digest);
	char *doc = NULL;
	size_t len = 0;
	if (store_doc_get(op->bs, STORE_DOC_OPT_OWNER, NULL, digest, 1024, &doc, &len, err) != RS_OK)
		return rs_err_set(err, RS_NOT_FOUND, "%s was not made by the optimizer", digest);
	struct optpull_request rq;
	char repo[RS_LIMIT_NAME_MAX + 16], source[DIGEST_STR_SIZE];
	enum rs_code rc = request_of_owner(op, doc, &rq, repo, sizeof(repo), source, err);
	free(doc);
	if (rc)
		rs_err_prefix(err, "%s: ", digest);
	/* the source manifest comes first (the upstream's, fetched again if it
	 * was evicted too), then the same optimization: the same bytes */
	if (rc == RS_OK && !store_has(op->bs, STORE_CACHE, STORE_MANIFEST, source))
		rc = op->ops.fetch_manifest(op->ops.ctx, rq.up_index, repo, source, err);
	struct optpull_result res;
	if (rc == RS_OK)
		rc = optpull_get(op, &res, &rq, wait_s, err);
	if (rc == RS_OK && !store_has(op->bs, STORE_CACHE, kind, digest))
		rc = rs_err_set(err, RS_IO, "optimizing %s again did not give back %s", source, digest);
	if (rc == RS_OK)
		log_event(LOG_INFO, "made %s again (optimized %s from %s) after it was evicted", digest, res.digest, source);
	return rc;
}
