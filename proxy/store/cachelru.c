/* cachelru: the cluster-wide access bookkeeping of the cache area (cachelru.h). A thread
 * publishes, every CACHELRU_FLUSH_MS while Redis answers, what the driver's collect callback
 * reports (uses: ZADD GT into "cache:lru"; holds: ZADD GT into "cache:holds" with their expiry)
 * and reads the evictor's last listed size. The evictor's side (election, the view of the
 * candidates, the recheck before a removal) runs on the maintenance pass's thread. Nothing here
 * runs on a request's path: the driver's hot path only marks its own table.
 *
 * With Redis down the thread publishes nothing (the driver keeps its marks until Redis is
 * back), cachelru_elect answers CACHELRU_ALONE and the driver evicts by its own view. It talks
 * to cluster.h, obs/log.h and obs/metrics.h; it does not know S3 or the data directory. */
#include "cachelru.h"

#include "cluster.h"
#include "log.h"
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LRU_SET "cache:lru"
#define HOLD_SET "cache:holds"
#define SIZE_KEY "cache:size"
#define SIZE_TTL_S 3600
#define SIZE_READ_EVERY 5 /* flushes between two reads of the evictor's size */
#define HOLDS_MAX 1000000 /* members read back from the holds set at most */

struct cachelru_batch {
	char (*m)[CACHELRU_MEMBER_SIZE];
	uint64_t *ms;
	size_t n, cap;
	bool nomem;
	struct cachelru_batch *holds; /* the batch of holds beside the batch of uses */
};

struct cachelru {
	struct cluster *c;
	cachelru_collect_fn collect;
	void *ctx;
	pthread_mutex_t mu; /* flushes (thread and cachelru_flush), the lock, the role */
	pthread_mutex_t stop_mu;
	pthread_cond_t stop_cv;
	bool stopping;
	pthread_t thread;
	struct cluster_lock *lock; /* "evictor", while this replica is it */
	enum cachelru_role role;
	bool role_known;
	_Atomic uint64_t size; /* the evictor's listing, +1 (0: unknown) */
};

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void cachelru_member(char out[CACHELRU_MEMBER_SIZE], enum store_kind kind, const char *hex)
{
	snprintf(out, CACHELRU_MEMBER_SIZE, "%c:%.64s", kind == STORE_BLOB ? 'b' : 'm', hex);
}

/* ------------------------------------------------------------ batches */

static void batch_add(struct cachelru_batch *b, enum store_kind kind, const char *hex, uint64_t ms)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 256;
		char(*m)[CACHELRU_MEMBER_SIZE] = realloc(b->m, cap * sizeof(*m));
		if (m)
			b->m = m;
		uint64_t *t = m ? realloc(b->ms, cap * sizeof(*t)) : NULL;
		if (t)
			b->ms = t;
		if (!m || !t) {
			b->nomem = true; /* published without it: a use or hold missed once */
			return;
		}
		b->cap = cap;
	}
	cachelru_member(b->m[b->n], kind, hex);
	b->ms[b->n++] = ms;
}

void cachelru_batch_touch(struct cachelru_batch *b, enum store_kind kind, const char *hex, uint64_t ms)
{
	batch_add(b, kind, hex, ms);
}

void cachelru_batch_hold(struct cachelru_batch *b, enum store_kind kind, const char *hex, uint64_t until_ms)
{
	batch_add(b->holds, kind, hex, until_ms);
}

static void batch_dispose(struct cachelru_batch *b)
{
	free(b->m);
	free(b->ms);
}

/* ZADD GT of a batch; members as a pointer array for cluster.h. */
static void publish(struct cachelru *l, const char *set, const struct cachelru_batch *b)
{
	if (!b->n)
		return;
	const char **mv = malloc(b->n * sizeof(*mv));
	if (!mv)
		return; /* out of memory: this round is lost, the next one carries the holds again */
	for (size_t i = 0; i < b->n; i++)
		mv[i] = b->m[i];
	struct rs_err err = {0};
	if (cluster_zset_raise(l->c, set, mv, b->ms, b->n, &err) != RS_OK)
		log_event(LOG_DEBUG, "cache bookkeeping: publishing %zu entries of %s failed: %s", b->n, set, err.msg);
	free(mv);
}

/* One flush (l->mu held). */
static void flush_locked(struct cachelru *l)
{
	if (cluster_mode(l->c, NULL, 0) != CLUSTER_UP)
		return; /* the driver keeps its marks: they go when Redis is back */
	struct cachelru_batch holds = {0};
	struct cachelru_batch uses = {.holds = &holds};
	l->collect(l->ctx, &uses, wall_ms());
	publish(l, LRU_SET, &uses);
	publish(l, HOLD_SET, &holds);
	if (uses.nomem || holds.nomem)
		log_event(LOG_DEBUG, "cache bookkeeping: out of memory: some uses or holds were not published");
	batch_dispose(&uses);
	batch_dispose(&holds);
}

void cachelru_flush(struct cachelru *l)
{
	pthread_mutex_lock(&l->mu);
	flush_locked(l);
	pthread_mutex_unlock(&l->mu);
}

static void read_size(struct cachelru *l)
{
	char *v = NULL;
	struct rs_err err = {0};
	if (cluster_map_get(&v, l->c, SIZE_KEY, &err) == RS_OK && v) {
		char *end = NULL;
		unsigned long long n = strtoull(v, &end, 10);
		if (end != v)
			atomic_store(&l->size, (uint64_t)n + 1);
	}
	free(v);
}

static void *flusher(void *arg)
{
	struct cachelru *l = arg;
	unsigned round = 0;
	pthread_mutex_lock(&l->stop_mu);
	while (!l->stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += CACHELRU_FLUSH_MS / 1000;
		ts.tv_nsec += (long)(CACHELRU_FLUSH_MS % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		(void)pthread_cond_timedwait(&l->stop_cv, &l->stop_mu, &ts); /* woken early only to stop */
		if (l->stopping)
			break;
		pthread_mutex_unlock(&l->stop_mu);
		cachelru_flush(l);
		if (round++ % SIZE_READ_EVERY == 0 && cluster_mode(l->c, NULL, 0) == CLUSTER_UP)
			read_size(l);
		pthread_mutex_lock(&l->stop_mu);
	}
	pthread_mutex_unlock(&l->stop_mu);
	return NULL;
}

/* ------------------------------------------------------------ lifecycle */

enum rs_code cachelru_new(struct cachelru **out, struct cluster *c, cachelru_collect_fn collect, void *ctx,
                          struct rs_err *err)
{
	*out = NULL;
	struct cachelru *l = calloc(1, sizeof(*l));
	if (!l)
		return rs_err_set(err, RS_NOMEM, "out of memory starting the cache bookkeeping");
	l->c = c;
	l->collect = collect;
	l->ctx = ctx;
	pthread_mutex_init(&l->mu, NULL);
	pthread_mutex_init(&l->stop_mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->stop_cv, &ca);
	pthread_condattr_destroy(&ca);
	int e = pthread_create(&l->thread, NULL, flusher, l);
	if (e) {
		pthread_cond_destroy(&l->stop_cv);
		pthread_mutex_destroy(&l->stop_mu);
		pthread_mutex_destroy(&l->mu);
		free(l);
		return rs_err_set(err, RS_IO, "cannot start the cache bookkeeping thread: %s", strerror(e));
	}
	*out = l;
	return RS_OK;
}

void cachelru_free(struct cachelru *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->stop_mu);
	l->stopping = true;
	pthread_cond_signal(&l->stop_cv);
	pthread_mutex_unlock(&l->stop_mu);
	pthread_join(l->thread, NULL);
	cluster_lock_release(l->lock); /* another replica becomes the evictor at its next pass */
	metrics_set_evictor(0);
	pthread_cond_destroy(&l->stop_cv);
	pthread_mutex_destroy(&l->stop_mu);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

bool cachelru_cluster_size(struct cachelru *l, uint64_t *out)
{
	uint64_t v = atomic_load(&l->size);
	if (v)
		*out = v - 1;
	return v != 0;
}

void cachelru_publish_size(struct cachelru *l, uint64_t bytes)
{
	char v[24];
	struct rs_err err = {0};
	snprintf(v, sizeof(v), "%llu", (unsigned long long)bytes);
	atomic_store(&l->size, bytes + 1);
	if (cluster_map_set(l->c, SIZE_KEY, v, SIZE_TTL_S, &err) != RS_OK)
		log_event(LOG_DEBUG, "cache bookkeeping: publishing the size failed: %s", err.msg);
}

/* ------------------------------------------------------------ election */

static void say_role(struct cachelru *l, enum cachelru_role role, const char *holder)
{
	if (l->role_known && l->role == role)
		return;
	if (role == CACHELRU_EVICTOR)
		log_event(LOG_INFO, "eviction: this replica (%s) is the cluster's evictor now (lock \"evictor\")",
		          cluster_replica_id(l->c));
	else if (role == CACHELRU_FOLLOWER)
		log_event(LOG_INFO, "eviction: replica %s is the cluster's evictor; this one leaves eviction to it", holder);
	else
		log_event(LOG_WARN, "eviction: Redis is unreachable: this replica evicts by its own view of the cache "
		                    "(its own reads and pins only) until Redis is back");
	l->role = role;
	l->role_known = true;
	metrics_set_evictor(role == CACHELRU_EVICTOR);
}

enum cachelru_role cachelru_elect(struct cachelru *l, char *holder, size_t holder_cap)
{
	char who[CLUSTER_OWNER_MAX] = "";
	enum cachelru_role role = CACHELRU_ALONE;
	pthread_mutex_lock(&l->mu);
	if (l->lock && (cluster_lock_scope(l->lock) != CLUSTER_UP || !cluster_lock_held(l->lock))) {
		cluster_lock_release(l->lock); /* lost (expired, or Redis forgot it): take it again below */
		l->lock = NULL;
	}
	if (!l->lock && cluster_mode(l->c, NULL, 0) == CLUSTER_UP) {
		struct rs_err err = {0};
		if (cluster_lock_try(&l->lock, l->c, "evictor", who, sizeof(who), &err) != RS_OK)
			log_event(LOG_WARN, "eviction: %s", err.msg);
		if (l->lock && cluster_lock_scope(l->lock) != CLUSTER_UP) {
			cluster_lock_release(l->lock); /* Redis failed between: a process lock elects nobody */
			l->lock = NULL;
			who[0] = '\0';
		}
	}
	if (l->lock)
		role = CACHELRU_EVICTOR;
	else if (cluster_mode(l->c, NULL, 0) == CLUSTER_UP && who[0])
		role = CACHELRU_FOLLOWER;
	char id[CLUSTER_OWNER_MAX];
	cluster_owner_replica(id, sizeof(id), who);
	say_role(l, role, id);
	pthread_mutex_unlock(&l->mu);
	if (holder && holder_cap)
		snprintf(holder, holder_cap, "%s", id);
	return role;
}

/* ------------------------------------------------------------ the evictor's view */

void cachelru_holds_dispose(struct cachelru_holds *h)
{
	free(h->v);
	memset(h, 0, sizeof(*h));
}

enum rs_code cachelru_holds_add(struct cachelru_holds *h, const char *member, struct rs_err *err)
{
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		char(*v)[CACHELRU_MEMBER_SIZE] = realloc(h->v, cap * sizeof(*v));
		if (!v)
			return rs_err_set(err, RS_NOMEM, "out of memory reading the cluster's holds");
		h->v = v;
		h->cap = cap;
	}
	snprintf(h->v[h->n++], CACHELRU_MEMBER_SIZE, "%s", member);
	return RS_OK;
}

static int cmp_member(const void *a, const void *b)
{
	return strcmp(a, b);
}

void cachelru_holds_sort(struct cachelru_holds *h)
{
	if (h->n)
		qsort(h->v, h->n, sizeof(*h->v), cmp_member);
}

bool cachelru_holds_has(const struct cachelru_holds *h, enum store_kind kind, const char *hex)
{
	char m[CACHELRU_MEMBER_SIZE];
	cachelru_member(m, kind, hex);
	return h->n && bsearch(m, h->v, h->n, sizeof(*h->v), cmp_member) != NULL;
}

struct holds_read {
	struct cachelru_holds *h;
	struct rs_err *err;
	enum rs_code rc;
};

static void hold_seen(void *ctx, const char *member, uint64_t score)
{
	(void)score;
	struct holds_read *r = ctx;
	if (r->rc == RS_OK && strlen(member) < CACHELRU_MEMBER_SIZE)
		r->rc = cachelru_holds_add(r->h, member, r->err);
}

enum rs_code cachelru_view(struct cachelru *l, struct cachelru_cand *v, size_t n, struct cachelru_holds *out_holds,
                           struct rs_err *err)
{
	memset(out_holds, 0, sizeof(*out_holds));
	uint64_t now = wall_ms();
	const char *none = NULL;
	struct holds_read hr = {out_holds, err, RS_OK};
	/* expired holds go first (a replica that died leaves its own behind) */
	enum rs_code rc = cluster_zset_remove(l->c, HOLD_SET, &none, 0, now, err);
	if (rc == RS_OK)
		rc = cluster_zset_from(l->c, HOLD_SET, now, HOLDS_MAX, hold_seen, &hr, err);
	if (rc == RS_OK)
		rc = hr.rc;
	char(*m)[CACHELRU_MEMBER_SIZE] = rc ? NULL : malloc((n ? n : 1) * sizeof(*m));
	const char **mv = m ? malloc((n ? n : 1) * sizeof(*mv)) : NULL;
	uint64_t *scores = mv ? malloc((n ? n : 1) * sizeof(*scores)) : NULL;
	if (rc == RS_OK && !scores)
		rc = rs_err_set(err, RS_NOMEM, "out of memory reading the cluster's access times");
	for (size_t i = 0; rc == RS_OK && i < n; i++) {
		cachelru_member(m[i], v[i].kind, v[i].hex);
		mv[i] = m[i];
	}
	if (rc == RS_OK)
		rc = cluster_zset_scores(l->c, LRU_SET, mv, n, scores, err);
	if (rc == RS_OK) {
		cachelru_holds_sort(out_holds);
		for (size_t i = 0; i < n; i++) {
			if (scores[i] > v[i].used_ms)
				v[i].used_ms = scores[i];
			if (cachelru_holds_has(out_holds, v[i].kind, v[i].hex))
				v[i].held = true;
		}
	}
	free(scores);
	free(mv);
	free(m);
	if (rc)
		cachelru_holds_dispose(out_holds);
	return rc;
}

bool cachelru_still_evictable(struct cachelru *l, enum store_kind kind, const char *hex, uint64_t used_ms)
{
	char m[CACHELRU_MEMBER_SIZE];
	cachelru_member(m, kind, hex);
	const char *mv[1] = {m};
	uint64_t used = 0, held = 0;
	struct rs_err err = {0};
	if (cluster_zset_scores(l->c, LRU_SET, mv, 1, &used, &err) != RS_OK ||
	    cluster_zset_scores(l->c, HOLD_SET, mv, 1, &held, &err) != RS_OK)
		return true;
	return used <= used_ms && held < wall_ms();
}

void cachelru_forget(struct cachelru *l, const char *const *members, size_t n)
{
	struct rs_err err = {0};
	if (n && cluster_zset_remove(l->c, LRU_SET, members, n, 0, &err) != RS_OK)
		log_event(LOG_DEBUG, "cache bookkeeping: forgetting %zu evicted objects failed: %s", n, err.msg);
}

/* ------------------------------------------------------------ order */

static int cmp_cand(const void *a, const void *b)
{
	const struct cachelru_cand *x = a, *y = b;
	if (x->held != y->held)
		return x->held ? 1 : -1;
	if (x->used_ms != y->used_ms)
		return x->used_ms < y->used_ms ? -1 : 1;
	int c = strcmp(x->hex, y->hex);
	return c ? c : (int)x->kind - (int)y->kind;
}

void cachelru_order(struct cachelru_cand *v, size_t n)
{
	if (n)
		qsort(v, n, sizeof(*v), cmp_cand);
}
