/* gate_stage: uploads streamed on to the upstream as they arrive (see
 * gate_stage.h). A fixed table of stages under one lock; each stage is a
 * detached thread with an upstream client of its own that opens the
 * session, runs one PATCH whose body is read (read_bytes) from the upload's
 * file up to what the feeds say the store holds, and once the upload is
 * committed asks gate_scan.h for the layer's result (waiting while its scan
 * runs) to complete or delete the session. The request that writes an
 * upload only updates counters under the lock (and wakes the stage per
 * GATE_STAGE_WAKE bytes): it never waits for the upstream. Memory: the
 * table, and per running stage a thread, a client and curl's buffer. */
#include "gate_stage.h"

#include "gate_fwd.h"
#include "log.h"
#include "metrics.h"
#include "rs_limits.h"
#include "upstream_push.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* a stage waiting for bytes is woken when this many are there to send (or
 * at the upload's end), not for every piece the server hands over */
#define GATE_STAGE_WAKE (256u * 1024)

struct stage {
	bool used;      /* the entry is taken, until its thread let go of it */
	bool committed; /* the upload was committed: size and digest are set */
	bool ending;    /* aborted (failed, cancelled, idle, out of step) or stopping: delete the session */
	bool failed;    /* the PATCH ended with an error: commit answers false */
	bool waiting;   /* the thread waits for bytes */
	char uuid[STORE_UUID_SIZE];
	char repo[RS_LIMIT_NAME_MAX + 1];
	char digest[DIGEST_STR_SIZE];
	const struct rs_gate_policy *p;
	int fd;         /* reads the upload's bytes */
	uint64_t fed;   /* bytes the store holds */
	uint64_t sent;  /* bytes given to the PATCH */
	uint64_t size;  /* once committed */
	time_t last;    /* last fed */
	pthread_cond_t cv;
	struct gate_stage *owner;
};

struct gate_stage {
	const struct rs_config *cfg;
	struct gate_scan *scans;
	pthread_mutex_t mu;  /* guards everything below */
	pthread_cond_t done; /* a stage finished */
	struct stage stages[RS_LIMIT_GATE_STAGES];
	size_t running;      /* threads still holding an entry */
	atomic_bool stop;
	atomic_bool refused; /* the upstream refuses streamed PATCHes: no more stages until restart */
};

static struct stage *find(struct gate_stage *g, const char *uuid)
{
	for (size_t i = 0; i < RS_LIMIT_GATE_STAGES; i++) {
		struct stage *t = &g->stages[i];
		if (t->used && !t->ending && !t->committed && strcmp(t->uuid, uuid) == 0)
			return t;
	}
	return NULL;
}

/* Under the lock: t's session is deleted, whatever it holds. */
static void end_stage(struct stage *t)
{
	t->ending = true;
	pthread_cond_broadcast(&t->cv);
}

/* The PATCH body: the upload's next bytes, waiting until the store holds
 * some; the end once the committed upload was sent whole, or at once when
 * the stage ends. The body is ended, not broken off: a registry that is
 * still storing a broken PATCH can outlive the DELETE that follows it
 * (docker-registry then keeps the bytes), and its answer brings the
 * session's current URL, which the DELETE needs. */
static enum rs_code read_bytes(void *arg, void *buf, size_t cap, size_t *out_len, struct rs_err *err)
{
	struct stage *t = arg;
	struct gate_stage *g = t->owner;
	*out_len = 0;
	pthread_mutex_lock(&g->mu);
	while (!t->ending && !atomic_load(&g->stop) && t->sent >= t->fed && !t->committed) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 1;
		t->waiting = true;
		pthread_cond_timedwait(&t->cv, &g->mu, &until);
		t->waiting = false;
		if (time(NULL) - t->last >= RS_LIMIT_GATE_SCAN_STREAM_IDLE_S)
			t->ending = true; /* an upload left half done */
	}
	bool stop = t->ending || atomic_load(&g->stop);
	uint64_t off = t->sent, avail = t->fed - t->sent;
	pthread_mutex_unlock(&g->mu);
	if (stop) /* end the body, so the PATCH is answered (and the session known) before it is deleted */
		return RS_OK;
	size_t n = avail < cap ? (size_t)avail : cap;
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(t->fd, (char *)buf + got, n - got, (off_t)(off + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return rs_err_set(err, RS_IO, "reading upload %s to send it on: %s", t->uuid,
			                  r < 0 ? strerror(errno) : "short read");
		got += (size_t)r;
	}
	pthread_mutex_lock(&g->mu);
	t->sent += n;
	pthread_mutex_unlock(&g->mu);
	*out_len = n; /* 0: committed and all sent, the end of the body */
	return RS_OK;
}

static const struct rs_upstream_config *push_upstream(const struct rs_config *cfg)
{
	return cfg->push.upstream ? config_find_upstream(cfg, cfg->push.upstream) : &cfg->upstreams[cfg->default_upstream];
}

/* After the PATCH: complete the session when the committed layer is clean.
 * true when it was completed. */
static bool complete(struct gate_stage *g, struct stage *t, struct upstream_push_stage *sess, bool *failed,
                     struct rs_err *err)
{
	struct gate_scan_result r = {0};
	bool have = gate_scan_result(g->scans, &r, t->p, t->digest);
	bool clean = have && gate_fwd_clean(t->p, &r, t->size);
	gate_scan_result_dispose(&r);
	if (!clean || atomic_load(&g->stop)) {
		log_event(LOG_DEBUG, "gate: staged upload of %s to %s deleted upstream: %s", t->digest, t->repo,
		          !have ? "no scan result (no layer, or its scan failed)" : "the policy denies what it holds");
		return false;
	}
	if (upstream_push_stage_commit(sess, t->digest, err) != RS_OK) {
		*failed = true;
		return false;
	}
	return true;
}

/* The stage's thread: open, fill, then complete or delete the session. */
static void *stage_thread(void *arg)
{
	struct stage *t = arg;
	struct gate_stage *g = t->owner;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct upstream_push *up = NULL;
	struct upstream_push_stage *sess = NULL;
	struct rs_err err = {0};
	const struct rs_upstream_config *upc = push_upstream(g->cfg);
	enum rs_code rc = upc ? upstream_push_new(&up, upc, &err) : rs_err_set(&err, RS_UPSTREAM, "no push upstream");
	if (rc == RS_OK && (rc = upstream_push_stage_open(up, t->repo, &sess, &err)) == RS_OK) {
		bool refused = false;
		rc = upstream_push_stage_fill(sess, read_bytes, t, &refused, &err);
		if (refused && !atomic_exchange(&g->refused, true))
			log_event(LOG_WARN, "gate: the upstream refuses streamed uploads (%s); layers go upstream after their "
			          "scan until regslim restarts (push.stream_uploads)", err.msg);
	}
	pthread_mutex_lock(&g->mu);
	bool aborted = t->ending || atomic_load(&g->stop);
	t->failed = rc != RS_OK && !aborted;
	bool go = rc == RS_OK && t->committed && !aborted;
	pthread_mutex_unlock(&g->mu);
	bool failed = t->failed, kept = go && complete(g, t, sess, &failed, &err);
	upstream_push_stage_close(sess, !kept);
	upstream_push_free(up);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (kept)
		log_event(LOG_DEBUG, "gate: layer %s of %s streamed upstream as it arrived (%llu bytes, %.3f s)", t->digest,
		          t->repo, (unsigned long long)t->size, s);
	else if (failed)
		log_event(LOG_INFO, "gate: upload %s of %s not streamed upstream (sent later): %s", t->uuid, t->repo,
		          err.msg);
	if (kept || failed || sess)
		metrics_gate_staged_upload(kept ? "completed" : failed ? "failed" : "deleted");
	pthread_mutex_lock(&g->mu);
	close(t->fd);
	pthread_cond_destroy(&t->cv);
	memset(t, 0, sizeof(*t));
	g->running--;
	pthread_cond_broadcast(&g->done);
	pthread_mutex_unlock(&g->mu);
	return NULL;
}

/* A stage for upload uuid reading fd (taken: closed here on failure) in a
 * free entry, its thread started; NULL when none is free or the thread
 * cannot start. Under the lock. */
static struct stage *stage_new(struct gate_stage *g, const struct rs_gate_policy *p, const char *repo,
                               const char *uuid, int fd)
{
	struct stage *t = NULL;
	for (size_t i = 0; i < RS_LIMIT_GATE_STAGES && !t; i++)
		if (!g->stages[i].used)
			t = &g->stages[i];
	if (!t) {
		close(fd);
		return NULL;
	}
	t->used = true;
	t->p = p;
	t->fd = fd;
	t->owner = g;
	t->last = time(NULL);
	snprintf(t->uuid, sizeof(t->uuid), "%s", uuid);
	snprintf(t->repo, sizeof(t->repo), "%s", repo);
	pthread_cond_init(&t->cv, NULL);
	pthread_t th;
	pthread_attr_t attr;
	bool started = pthread_attr_init(&attr) == 0;
	if (started) {
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		started = pthread_create(&th, &attr, stage_thread, t) == 0;
		pthread_attr_destroy(&attr);
	}
	if (!started) {
		close(fd);
		pthread_cond_destroy(&t->cv);
		memset(t, 0, sizeof(*t));
		return NULL;
	}
	g->running++;
	return t;
}

static bool mode_sends_original(const struct rs_gate_policy *p)
{
	return p && (p->mode == GATE_MODE_CHECK_ONLY || p->mode == GATE_MODE_PUSH_BOTH);
}

void gate_stage_feed(struct gate_stage *g, const struct rs_gate_policy *p, const char *repo, const char *uuid,
                     struct store_upload *u, uint64_t offset, size_t len)
{
	if (!g || !len || !mode_sends_original(p) || strlen(repo) > RS_LIMIT_NAME_MAX || atomic_load(&g->stop) ||
	    atomic_load(&g->refused))
		return;
	int fd = -1;
	struct rs_err err = {0};
	if (offset == 0 && store_upload_reader(u, &fd, &err) != RS_OK)
		return; /* a store without upload files (s3): layers go the other way */
	pthread_mutex_lock(&g->mu);
	struct stage *t = find(g, uuid);
	if (t && fd >= 0) { /* started again from 0: the old stage is out of step */
		end_stage(t);
		t = NULL;
	}
	if (!t && fd >= 0)
		t = stage_new(g, p, repo, uuid, fd);
	if (t && (t->fed != offset || t->p != p)) {
		end_stage(t); /* bytes went by without it */
	} else if (t) {
		t->fed += len;
		t->last = time(NULL);
		if (t->waiting && t->fed - t->sent >= GATE_STAGE_WAKE)
			pthread_cond_broadcast(&t->cv);
	}
	pthread_mutex_unlock(&g->mu);
}

bool gate_stage_commit(struct gate_stage *g, const char *uuid, uint64_t size, const char *digest)
{
	if (!g)
		return false;
	pthread_mutex_lock(&g->mu);
	struct stage *t = find(g, uuid);
	bool ok = t && !t->failed && t->fed == size && digest_valid(digest) && !atomic_load(&g->stop);
	if (ok) {
		t->committed = true;
		t->size = size;
		snprintf(t->digest, sizeof(t->digest), "%s", digest);
		pthread_cond_broadcast(&t->cv);
	} else if (t) {
		end_stage(t);
	}
	pthread_mutex_unlock(&g->mu);
	return ok;
}

void gate_stage_forget(struct gate_stage *g, const char *uuid)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->mu);
	struct stage *t = find(g, uuid);
	if (t)
		end_stage(t);
	pthread_mutex_unlock(&g->mu);
}

void gate_stage_join(struct gate_stage *g, const char *repo)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->mu);
	for (;;) {
		bool busy = false;
		for (size_t i = 0; i < RS_LIMIT_GATE_STAGES && !busy; i++)
			busy = g->stages[i].used && g->stages[i].committed && strcmp(g->stages[i].repo, repo) == 0;
		if (!busy)
			break;
		pthread_cond_wait(&g->done, &g->mu);
	}
	pthread_mutex_unlock(&g->mu);
}

enum rs_code gate_stage_new(struct gate_stage **out, const struct rs_config *cfg, struct gate_scan *scans,
                            struct rs_err *err)
{
	*out = NULL;
	if (!cfg->push.stream_uploads)
		return RS_OK; /* off: every call is a no-op on NULL */
	struct gate_stage *g = calloc(1, sizeof(*g));
	if (!g)
		return rs_err_set(err, RS_NOMEM, "out of memory for the gate's staged uploads");
	g->cfg = cfg;
	g->scans = scans;
	atomic_init(&g->stop, false);
	atomic_init(&g->refused, false);
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->done, NULL);
	*out = g;
	return RS_OK;
}

void gate_stage_free(struct gate_stage *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->mu);
	atomic_store(&g->stop, true);
	for (size_t i = 0; i < RS_LIMIT_GATE_STAGES; i++)
		if (g->stages[i].used)
			end_stage(&g->stages[i]);
	while (g->running) /* each thread deletes its session (bounded by the upstream's timeout) */
		pthread_cond_wait(&g->done, &g->mu);
	pthread_mutex_unlock(&g->mu);
	pthread_cond_destroy(&g->done);
	pthread_mutex_destroy(&g->mu);
	free(g);
}
