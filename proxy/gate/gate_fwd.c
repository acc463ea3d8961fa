/* gate_fwd: early forwarding of pushed layers upstream (see gate_fwd.h).
 * A fixed table of jobs (queued or running, per repository and digest)
 * under one lock, worker threads that each own an upstream_push client
 * (upstream_push.h; made at their first job), the layer's scan result from
 * gate_scan.h (waited for while its scan runs) and the blob read from the
 * store's pushed area. Memory: the table and one client per worker. */
#include "gate_fwd.h"

#include "log.h"
#include "rs_limits.h"
#include "upstream_push.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum job_state { JOB_FREE, JOB_QUEUED, JOB_RUNNING };

struct job {
	enum job_state state;
	uint64_t seq; /* queue order */
	char repo[RS_LIMIT_NAME_MAX + 1];
	char digest[DIGEST_STR_SIZE];
	const struct rs_gate_policy *p;
};

struct gate_fwd {
	const struct rs_config *cfg;
	struct store *store;
	struct gate_scan *scans;
	pthread_mutex_t mu;  /* guards everything below */
	pthread_cond_t work; /* a job was queued, or stop */
	pthread_cond_t done; /* a job ended */
	struct job *jobs;
	size_t njobs, queue_max, queued;
	uint64_t seq;
	atomic_bool stop;
	struct gate_fwd_stats st;
	pthread_t *threads;
	size_t nthreads;
};

static struct job *find(struct gate_fwd *f, const char *repo, const char *digest)
{
	for (size_t i = 0; i < f->njobs; i++)
		if (f->jobs[i].state != JOB_FREE && strcmp(f->jobs[i].repo, repo) == 0 &&
		    strcmp(f->jobs[i].digest, digest) == 0)
			return &f->jobs[i];
	return NULL;
}

bool gate_fwd_clean(const struct rs_gate_policy *p, const struct gate_scan_result *r, uint64_t size)
{
	if (p->max_compressed_bytes.action == GATE_DENY && size > p->max_compressed_bytes.limit)
		return false;
	if (p->max_uncompressed_bytes.action == GATE_DENY && r->uncompressed_bytes > p->max_uncompressed_bytes.limit)
		return false;
	bool forbid = p->forbidden_paths.action == GATE_DENY, secret = p->secrets == GATE_DENY;
	if ((forbid && r->more_forbidden) || (secret && r->more_secrets))
		return false;
	for (size_t i = 0; i < r->count; i++)
		if ((r->items[i].kind == GATE_SCAN_FORBIDDEN && forbid) || (r->items[i].kind == GATE_SCAN_SECRET && secret))
			return false;
	return true;
}

static enum rs_code open_pushed(void *ctx, const char *digest, int *fd, uint64_t *size, struct rs_err *err)
{
	return store_open_fd(ctx, STORE_PUSHED, STORE_BLOB, digest, fd, size, err);
}

static double since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* One job; *up is the worker's client (made here the first time). */
static void run(struct gate_fwd *f, struct upstream_push **up, const struct job *job)
{
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct gate_scan_result r = {0};
	struct rs_err err = {0};
	uint64_t size = 0;
	bool have = gate_scan_result(f->scans, &r, job->p, job->digest);
	int fd = -1;
	if (have && store_open_fd(f->store, STORE_PUSHED, STORE_BLOB, job->digest, &fd, &size, &err) == RS_OK)
		close(fd);
	bool ok = have && fd >= 0 && gate_fwd_clean(job->p, &r, size);
	gate_scan_result_dispose(&r);
	if (!ok || atomic_load(&f->stop)) {
		pthread_mutex_lock(&f->mu);
		f->st.held += !atomic_load(&f->stop);
		pthread_mutex_unlock(&f->mu);
		log_event(LOG_DEBUG, "gate: layer %s of %s not sent upstream before its manifest: %s", job->digest,
		          job->repo, !have ? "no scan result" : "the policy denies what it holds");
		return;
	}
	const struct rs_upstream_config *upc = f->cfg->push.upstream ? config_find_upstream(f->cfg, f->cfg->push.upstream)
	                                                             : &f->cfg->upstreams[f->cfg->default_upstream];
	enum rs_code rc = RS_OK;
	if (!*up)
		rc = upc ? upstream_push_new(up, upc, &err) : rs_err_set(&err, RS_UPSTREAM, "no push upstream");
	bool sent = false;
	struct upstream_push_source src = {open_pushed, NULL, f->store};
	if (rc == RS_OK)
		rc = upstream_push_blob(*up, job->repo, job->digest, &src, NULL, &sent, &err);
	pthread_mutex_lock(&f->mu);
	if (rc)
		f->st.failed++;
	else if (sent)
		f->st.sent++;
	else
		f->st.present++;
	pthread_mutex_unlock(&f->mu);
	if (rc)
		log_event(LOG_INFO, "gate: layer %s of %s not sent upstream early (the manifest PUT will): %s", job->digest,
		          job->repo, err.msg);
	else
		log_event(LOG_DEBUG, "gate: layer %s of %s %s upstream before its manifest (%.3f s)", job->digest, job->repo,
		          sent ? "sent" : "already", since(&t0));
}

static void *worker(void *arg)
{
	struct gate_fwd *f = arg;
	struct upstream_push *up = NULL;
	pthread_mutex_lock(&f->mu);
	while (!atomic_load(&f->stop)) {
		struct job *next = NULL;
		for (size_t i = 0; i < f->njobs; i++)
			if (f->jobs[i].state == JOB_QUEUED && (!next || f->jobs[i].seq < next->seq))
				next = &f->jobs[i];
		if (!next) {
			pthread_cond_wait(&f->work, &f->mu);
			continue;
		}
		next->state = JOB_RUNNING;
		f->queued--;
		struct job job = *next;
		pthread_mutex_unlock(&f->mu);
		run(f, &up, &job);
		pthread_mutex_lock(&f->mu);
		next->state = JOB_FREE;
		pthread_cond_broadcast(&f->done);
	}
	pthread_mutex_unlock(&f->mu);
	upstream_push_free(up);
	return NULL;
}

enum rs_code gate_fwd_new(struct gate_fwd **out, const struct rs_config *cfg, struct store *store,
                          struct gate_scan *scans, size_t workers, size_t queue_max, struct rs_err *err)
{
	*out = NULL;
	struct gate_fwd *f = calloc(1, sizeof(*f));
	if (!f)
		return rs_err_set(err, RS_NOMEM, "out of memory for the gate's forwarders");
	f->cfg = cfg;
	f->store = store;
	f->scans = scans;
	atomic_init(&f->stop, false);
	f->queue_max = queue_max;
	f->njobs = queue_max + workers;
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->work, NULL);
	pthread_cond_init(&f->done, NULL);
	if (!(f->jobs = calloc(f->njobs ? f->njobs : 1, sizeof(*f->jobs))) ||
	    (workers && !(f->threads = calloc(workers, sizeof(*f->threads))))) {
		gate_fwd_free(f);
		return rs_err_set(err, RS_NOMEM, "out of memory for the gate's forwarders");
	}
	for (; f->nthreads < workers; f->nthreads++) {
		if (pthread_create(&f->threads[f->nthreads], NULL, worker, f) != 0) {
			gate_fwd_free(f);
			return rs_err_set(err, RS_IO, "cannot start the gate's forwarders");
		}
	}
	*out = f;
	return RS_OK;
}

void gate_fwd_free(struct gate_fwd *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->mu);
	atomic_store(&f->stop, true);
	pthread_cond_broadcast(&f->work);
	pthread_mutex_unlock(&f->mu);
	for (size_t i = 0; i < f->nthreads; i++)
		pthread_join(f->threads[i], NULL);
	free(f->threads);
	free(f->jobs);
	pthread_cond_destroy(&f->done);
	pthread_cond_destroy(&f->work);
	pthread_mutex_destroy(&f->mu);
	free(f);
}

void gate_fwd_queue(struct gate_fwd *f, const struct rs_gate_policy *p, const char *repo, const char *digest)
{
	if (!f || !p || !f->nthreads || (p->mode != GATE_MODE_CHECK_ONLY && p->mode != GATE_MODE_PUSH_BOTH) ||
	    !digest_valid(digest) || strlen(repo) > RS_LIMIT_NAME_MAX)
		return;
	pthread_mutex_lock(&f->mu);
	if (!atomic_load(&f->stop) && !find(f, repo, digest)) {
		struct job *j = NULL;
		for (size_t i = 0; i < f->njobs && !j && f->queued < f->queue_max; i++)
			if (f->jobs[i].state == JOB_FREE)
				j = &f->jobs[i];
		if (j) {
			j->state = JOB_QUEUED;
			j->seq = f->seq++;
			j->p = p;
			snprintf(j->repo, sizeof(j->repo), "%s", repo);
			snprintf(j->digest, sizeof(j->digest), "%s", digest);
			f->queued++;
			pthread_cond_signal(&f->work);
		} else {
			f->st.dropped++;
		}
	}
	pthread_mutex_unlock(&f->mu);
}

/* Drop the queued jobs of repo; under the lock. */
static void drop_queued(struct gate_fwd *f, const char *repo)
{
	for (size_t i = 0; i < f->njobs; i++) {
		if (f->jobs[i].state == JOB_QUEUED && strcmp(f->jobs[i].repo, repo) == 0) {
			f->jobs[i].state = JOB_FREE;
			f->queued--;
			f->st.dropped++;
		}
	}
}

void gate_fwd_join(struct gate_fwd *f, const char *repo)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->mu);
	drop_queued(f, repo);
	for (;;) {
		bool running = false;
		for (size_t i = 0; i < f->njobs && !running; i++)
			running = f->jobs[i].state == JOB_RUNNING && strcmp(f->jobs[i].repo, repo) == 0;
		if (!running)
			break;
		pthread_cond_wait(&f->done, &f->mu);
	}
	pthread_mutex_unlock(&f->mu);
}

void gate_fwd_cancel(struct gate_fwd *f, const char *repo)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->mu);
	drop_queued(f, repo);
	pthread_mutex_unlock(&f->mu);
}

void gate_fwd_stats(struct gate_fwd *f, struct gate_fwd_stats *out)
{
	pthread_mutex_lock(&f->mu);
	*out = f->st;
	pthread_mutex_unlock(&f->mu);
}
