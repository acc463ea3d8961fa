/* scrub: walking a store's object files, rehashing them, and the background
 * scrubber thread. See scrub.h. The thread reads objects by path without the
 * store's lock (committed objects are never rewritten in place: a rename
 * replaces one whole), removes a failing one through blobstore_remove so the
 * store's accounting stays right, and sleeps between chunks to hold its byte
 * rate. It talks to blobstore.h, fsutil, digest and metrics; never to HTTP. */
#include "scrub.h"

#include "digest.h"
#include "fsutil.h"
#include "log.h"
#include "metrics.h"

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

#define SCRUB_PATH_MAX 4096
#define SCRUB_CHUNK (256 * 1024)

static bool is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return s[n] == '\0';
}

/* The files of one <2 hex> directory of kind. */
static enum rs_code walk_bucket(const char *root, const char *kdir, const char *bucket, enum blobstore_kind kind,
                                scrub_visit_fn fn, void *ctx, bool *stop, struct rs_err *err)
{
	char dir[SCRUB_PATH_MAX];
	if (snprintf(dir, sizeof(dir), "%s/%s/sha256/%s", root, kdir, bucket) >= (int)sizeof(dir))
		return rs_err_set(err, RS_IO, "path too long under %s", root);
	DIR *d = opendir(dir);
	if (!d)
		return rs_err_set(err, RS_IO, "opendir %s: %s", dir, strerror(errno));
	struct dirent *de;
	while (!*stop && (de = readdir(d)) != NULL) {
		const char *n = de->d_name;
		if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0)
			continue;
		size_t len = strlen(n);
		if (kind == BLOBSTORE_MANIFEST && len == 64 + 5 && strcmp(n + 64, ".type") == 0)
			continue; /* a manifest's media type, checked with the manifest */
		char path[SCRUB_PATH_MAX + 300], rel[600];
		snprintf(path, sizeof(path), "%s/%s", dir, n);
		snprintf(rel, sizeof(rel), "%s/sha256/%s/%s", kdir, bucket, n);
		bool obj = len == 64 && is_hex(n, 64) && strncmp(n, bucket, 2) == 0;
		if (!fn(ctx, kind, obj ? n : NULL, !obj, path, rel))
			*stop = true;
	}
	closedir(d);
	return RS_OK;
}

enum rs_code scrub_walk(const char *root, scrub_visit_fn fn, void *ctx, struct rs_err *err)
{
	static const char *const kdirs[] = {"blobs", "manifests"};
	bool stop = false;
	for (int k = 0; k < 2 && !stop; k++) {
		enum blobstore_kind kind = k == 0 ? BLOBSTORE_BLOB : BLOBSTORE_MANIFEST;
		char dir[SCRUB_PATH_MAX];
		if (snprintf(dir, sizeof(dir), "%s/%s/sha256", root, kdirs[k]) >= (int)sizeof(dir))
			return rs_err_set(err, RS_IO, "path too long under %s", root);
		DIR *d = opendir(dir);
		if (!d) {
			if (errno == ENOENT)
				continue;
			return rs_err_set(err, RS_IO, "opendir %s: %s", dir, strerror(errno));
		}
		struct dirent *de;
		enum rs_code rc = RS_OK;
		while (rc == RS_OK && !stop && (de = readdir(d)) != NULL) {
			const char *b = de->d_name;
			if (strcmp(b, ".") == 0 || strcmp(b, "..") == 0)
				continue;
			struct stat st;
			char p[SCRUB_PATH_MAX + 300], rel[600];
			snprintf(p, sizeof(p), "%s/%s", dir, b);
			snprintf(rel, sizeof(rel), "%s/sha256/%s", kdirs[k], b);
			if (strlen(b) == 2 && is_hex(b, 2) && stat(p, &st) == 0 && S_ISDIR(st.st_mode))
				rc = walk_bucket(root, kdirs[k], b, kind, fn, ctx, &stop, err);
			else if (!fn(ctx, kind, NULL, true, p, rel))
				stop = true;
		}
		closedir(d);
		if (rc)
			return rc;
	}
	return RS_OK;
}

enum rs_code scrub_hash_file(const char *path, const char *hex, bool *ok, uint64_t *size,
                             bool (*throttle)(void *ctx, uint64_t n), void *tctx, struct rs_err *err)
{
	*ok = false;
	*size = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return rs_err_set(err, errno == ENOENT ? RS_NOT_FOUND : RS_IO, "open %s: %s", path, strerror(errno));
	struct digest_ctx *dc = digest_new();
	char *buf = malloc(SCRUB_CHUNK);
	enum rs_code rc = dc && buf ? RS_OK : rs_err_set(err, RS_NOMEM, "out of memory hashing %s", path);
	while (rc == RS_OK) {
		ssize_t n = read(fd, buf, SCRUB_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			rc = rs_err_set(err, RS_IO, "reading %s: %s", path, strerror(errno));
		if (n <= 0)
			break;
		digest_update(dc, buf, (size_t)n);
		*size += (uint64_t)n;
		if (throttle && !throttle(tctx, (uint64_t)n))
			rc = rs_err_set(err, RS_TIMEOUT, "stopped");
	}
	if (rc == RS_OK) {
		char got[DIGEST_STR_SIZE];
		digest_final(dc, got);
		*ok = strcmp(digest_hex(got), hex) == 0;
	}
	free(buf);
	digest_free(dc);
	close(fd);
	return rc;
}

/* ------------------------------------------------------------ the thread */

struct scrub {
	const struct rs_config *cfg;
	struct blobstore *stores[2]; /* cache, push */
	char roots[2][SCRUB_PATH_MAX];
	char state[SCRUB_PATH_MAX];
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	_Atomic bool stopping;
	/* rate: bytes hashed since t0 (monotonic seconds) */
	double t0;
	uint64_t done;
};

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleep until at most seconds have passed or the scrubber is stopped. */
static void nap(struct scrub *s, double seconds)
{
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	double whole = (double)(long)seconds;
	until.tv_sec += (time_t)whole;
	until.tv_nsec += (long)((seconds - whole) * 1e9);
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&s->mu);
	while (!atomic_load(&s->stopping) && pthread_cond_timedwait(&s->cond, &s->mu, &until) == 0)
		;
	pthread_mutex_unlock(&s->mu);
}

/* After n more bytes: sleep as long as it takes to stay at the rate. */
static bool throttle(void *ctx, uint64_t n)
{
	struct scrub *s = ctx;
	s->done += n;
	metrics_add(METRICS_SCRUB_BYTES, n);
	double due = s->t0 + (double)s->done / (double)s->cfg->cache_scrub_bytes_per_s;
	double now = mono_s();
	if (due > now)
		nap(s, due - now);
	return !atomic_load(&s->stopping);
}

struct pass {
	struct scrub *s;
	struct blobstore *bs;
	const char *root;
	uint64_t objects, corrupt;
};

static bool visit(void *ctx, enum blobstore_kind kind, const char *hex, bool stray, const char *path,
                  const char *rel)
{
	struct pass *p = ctx;
	(void)rel;
	if (stray) /* strays are fsck's to report */
		return !atomic_load(&p->s->stopping);
	bool ok = false;
	uint64_t size = 0;
	struct rs_err err = {0};
	enum rs_code rc = scrub_hash_file(path, hex, &ok, &size, throttle, p->s, &err);
	if (rc == RS_OK) {
		p->objects++;
		metrics_add(METRICS_SCRUB_OBJECTS, 1);
		if (!ok) {
			char digest[DIGEST_STR_SIZE];
			snprintf(digest, sizeof(digest), "sha256:%s", hex);
			p->corrupt++;
			metrics_add(METRICS_SCRUB_CORRUPT, 1);
			blobstore_remove(p->bs, kind, digest);
			log_event(LOG_ERROR, "scrub: %s %s in %s does not hash to its name (%llu bytes): removed%s",
			          kind == BLOBSTORE_BLOB ? "blob" : "manifest", digest, p->root, (unsigned long long)size,
			          p->bs == p->s->stores[1] ? "; it was pushed here: push it again"
			                                   : "; the next request fetches it again");
		}
	} else if (rc != RS_NOT_FOUND && rc != RS_TIMEOUT) { /* RS_NOT_FOUND: evicted meanwhile */
		log_event(LOG_WARN, "scrub: %s", err.msg);
	}
	return !atomic_load(&p->s->stopping);
}

static time_t last_pass(const struct scrub *s)
{
	char buf[32];
	size_t len = 0;
	struct rs_err err = {0};
	if (fsutil_read_into(buf, sizeof(buf), &len, s->state, &err) != RS_OK)
		return 0;
	return (time_t)strtoll(buf, NULL, 10);
}

static void save_last(const struct scrub *s, time_t t)
{
	char buf[32], tmp[SCRUB_PATH_MAX + 8];
	int n = snprintf(buf, sizeof(buf), "%lld\n", (long long)t);
	snprintf(tmp, sizeof(tmp), "%s/tmp", s->cfg->data_dir);
	struct rs_err err = {0};
	if (fsutil_write_atomic(s->state, tmp, buf, (size_t)n, &err) != RS_OK)
		log_event(LOG_WARN, "scrub: %s", err.msg);
}

static void run_pass(struct scrub *s)
{
	double t = mono_s();
	s->t0 = t;
	s->done = 0;
	uint64_t objects = 0, corrupt = 0;
	for (int i = 0; i < 2 && !atomic_load(&s->stopping); i++) {
		if (!s->stores[i])
			continue;
		struct pass p = {s, s->stores[i], s->roots[i], 0, 0};
		struct rs_err err = {0};
		if (scrub_walk(s->roots[i], visit, &p, &err) != RS_OK)
			log_event(LOG_WARN, "scrub: %s", err.msg);
		objects += p.objects;
		corrupt += p.corrupt;
	}
	if (atomic_load(&s->stopping))
		return;
	save_last(s, time(NULL));
	metrics_add(METRICS_SCRUB_PASSES, 1);
	log_event(corrupt ? LOG_WARN : LOG_INFO, "scrub: pass done: %llu objects, %llu bytes in %.1fs, %llu corrupt",
	          (unsigned long long)objects, (unsigned long long)s->done, mono_s() - t, (unsigned long long)corrupt);
}

static void *scrub_main(void *arg)
{
	struct scrub *s = arg;
	unsigned interval = s->cfg->cache_scrub_interval_s;
	/* a store never scrubbed waits a little after start (at most a minute) */
	time_t first = time(NULL) + (interval < 60 ? interval : 60);
	while (!atomic_load(&s->stopping)) {
		time_t last = last_pass(s), now = time(NULL);
		time_t due = last ? last + (time_t)interval : first;
		if (now < due) {
			nap(s, (double)(due - now < 3600 ? due - now : 3600));
			continue;
		}
		run_pass(s);
	}
	return NULL;
}

enum rs_code scrub_start(struct scrub **out, const struct rs_config *cfg, struct blobstore *cache,
                         struct blobstore *push, struct rs_err *err)
{
	*out = NULL;
	if (cfg->cache_scrub_bytes_per_s == 0 || (!cache && !push))
		return RS_OK;
	struct scrub *s = calloc(1, sizeof(*s));
	if (!s)
		return rs_err_set(err, RS_NOMEM, "scrub: out of memory");
	s->cfg = cfg;
	s->stores[0] = cache;
	s->stores[1] = push;
	if (snprintf(s->roots[0], sizeof(s->roots[0]), "%s", cfg->data_dir) >= (int)sizeof(s->roots[0]) ||
	    snprintf(s->roots[1], sizeof(s->roots[1]), "%s/push", cfg->data_dir) >= (int)sizeof(s->roots[1]) ||
	    snprintf(s->state, sizeof(s->state), "%s/scrub.last", cfg->data_dir) >= (int)sizeof(s->state)) {
		free(s);
		return rs_err_set(err, RS_IO, "scrub: data_dir path too long");
	}
	pthread_mutex_init(&s->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_condattr_destroy(&ca);
	int e = pthread_create(&s->th, NULL, scrub_main, s);
	if (e != 0) {
		pthread_cond_destroy(&s->cond);
		pthread_mutex_destroy(&s->mu);
		free(s);
		return rs_err_set(err, RS_NOMEM, "scrub: cannot start its thread: %s", strerror(e));
	}
	*out = s;
	return RS_OK;
}

void scrub_stop(struct scrub *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	atomic_store(&s->stopping, true);
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->th, NULL);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->mu);
	free(s);
}
