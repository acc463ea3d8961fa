/* cluster: Redis coordination of the replicas (cluster.h): one hiredis connection under one
 * mutex, a maintenance thread that reconnects with backoff, renews the locks this process
 * holds and PINGs an idle connection once a second, and the per-process fallbacks of the
 * degraded mode (a lock table; the map and upload calls answer RS_IO at once).
 *
 * Every command is bounded by cluster.timeout_ms (connect timeout and SO_RCVTIMEO/SO_SNDTIMEO
 * through redisSetTimeout). A command that fails on the connection (refused, reset, timed out)
 * drops it and makes the cluster CLUSTER_DOWN: from then on callers never wait for Redis, only
 * the thread tries again, 0.1 s after the failure, doubling to 5 s. An error reply (WRONGTYPE,
 * NOSCRIPT, ...) fails that call only.
 *
 * Lock values are "<replica id> <16 random hex>", fresh per acquisition, so that compare-and-
 * delete and compare-and-renew (Lua, EVAL) touch only the acquisition they belong to. It does
 * not know what a lock protects; it talks to hiredis and obs/log.h only. */
#include "cluster.h"

#include "log.h"
#include "metrics.h"

#include <hiredis/hiredis.h>

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 100
#define PING_IDLE_MS 1000
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000
#define WAIT_STEP_MS 50

/* PEXPIRE / DEL only while the key still holds our value: one round trip, no race with an
 * owner that took the lock over after ours expired. */
static const char renew_lua[] =
	"if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0";
static const char release_lua[] =
	"if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0";
/* A whole upload hash at once, with its expiry. */
static const char upload_put_lua[] =
	"redis.call('del', KEYS[1]) "
	"redis.call('hset', KEYS[1], 'repository', ARGV[1], 'size', ARGV[2], 'owner', ARGV[3]) "
	"return redis.call('expire', KEYS[1], ARGV[4])";
/* {1} advanced; {0, size} the size is not ARGV[1]; {-1} no such upload. */
static const char upload_advance_lua[] =
	"local s = redis.call('hget', KEYS[1], 'size') "
	"if not s then return {-1} end "
	"if s ~= ARGV[1] then return {0, s} end "
	"redis.call('hset', KEYS[1], 'size', ARGV[2]) "
	"redis.call('expire', KEYS[1], ARGV[3]) "
	"return {1}";

/* A lock of this process while Redis is not there (or not configured). */
struct local_lock {
	struct local_lock *next;
	char *name;
	char owner[CLUSTER_OWNER_MAX];
};

struct cluster_lock {
	struct cluster *c;
	struct cluster_lock *prev, *next; /* c->held, when scope is CLUSTER_UP */
	char *name;
	char *key;
	char owner[CLUSTER_OWNER_MAX];
	enum cluster_mode scope;
	uint64_t confirmed_ms; /* last time Redis said it is ours */
	bool lost;
};

struct cluster {
	const struct rs_cluster_config *cfg; /* NULL: local */
	char replica[128];
	char endpoint[300]; /* host:port/db, for messages */
	pthread_mutex_t mu; /* everything below, and the connection's use */
	pthread_cond_t cv;
	redisContext *ctx;
	enum cluster_mode mode;
	char why[RS_ERR_MSG_MAX];
	unsigned failures;
	uint64_t next_attempt_ms;
	uint64_t last_io_ms;
	struct cluster_lock *held;
	struct local_lock *local;
	pthread_t thread;
	bool thread_started;
	bool stopping;
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct timeval ms_tv(unsigned ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	return tv;
}

unsigned cluster_backoff_ms(unsigned failures)
{
	unsigned ms = BACKOFF_FIRST_MS;
	for (unsigned i = 1; i < failures && ms < BACKOFF_MAX_MS; i++)
		ms *= 2;
	return ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS;
}

void cluster_owner_replica(char *out, size_t cap, const char *owner)
{
	size_t n = strcspn(owner, " ");
	snprintf(out, cap, "%.*s", (int)n, owner);
}

const char *cluster_mode_name(enum cluster_mode m)
{
	return m == CLUSTER_UP ? "up" : m == CLUSTER_DOWN ? "down" : "local";
}

/* "<replica> <16 random hex>" into out. */
static void new_owner(const struct cluster *c, char *out, size_t cap)
{
	uint64_t r = 0;
	if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		/* no entropy source: the time and the address still make acquisitions distinct
		 * within this process, which is what the value must tell apart */
		r = now_ms() ^ ((uint64_t)(uintptr_t)out << 16) ^ (uint64_t)getpid();
	}
	snprintf(out, cap, "%s %016" PRIx64, c->replica, r);
}

/* ------------------------------------------------------------ connection (c->mu held, but where said) */

/* x's error for a message; a read or write that ran out of time says so (hiredis gives the
 * errno text of SO_RCVTIMEO, "Resource temporarily unavailable"). */
static void describe(char *out, size_t cap, const redisContext *x, unsigned timeout_ms)
{
	if (x->err == REDIS_ERR_IO && (strstr(x->errstr, "temporarily unavailable") || strstr(x->errstr, "timed out")))
		snprintf(out, cap, "no answer within %u ms (cluster.timeout_ms)", timeout_ms);
	else
		snprintf(out, cap, "%s", x->errstr[0] ? x->errstr : "connection lost");
}

/* The connection failed (or never came): drop it, schedule the next attempt, and say so once
 * per change from up (or at the first attempt). */
static void went_down(struct cluster *c, const char *why)
{
	if (c->ctx) {
		redisFree(c->ctx);
		c->ctx = NULL;
	}
	snprintf(c->why, sizeof(c->why), "%s", why);
	c->failures++;
	c->next_attempt_ms = now_ms() + cluster_backoff_ms(c->failures);
	if (c->mode != CLUSTER_DOWN)
		log_event(LOG_WARN,
		          "DEGRADED: Redis at %s is unreachable (%s): coordinating per process (locks, tag cache, "
		          "uploads) until it is back; /healthz says \"degraded\"",
		          c->endpoint, why);
	c->mode = CLUSTER_DOWN;
	metrics_set_redis_up(0);
}

/* A command on x that must answer +OK or PONG (AUTH, SELECT, PING); why on failure. */
static bool setup_command(redisContext *x, unsigned timeout_ms, char *why, size_t cap, const char *what,
                          const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(x, fmt, ap);
	va_end(ap);
	bool ok = r && r->type == REDIS_REPLY_STATUS;
	char text[160];
	if (!r)
		describe(text, sizeof(text), x, timeout_ms);
	if (!ok)
		snprintf(why, cap, "%s: %.160s", what, r ? (r->str ? r->str : "unexpected reply") : text);
	if (r)
		freeReplyObject(r);
	return ok;
}

/* Connect, authenticate, select the database and PING: a new context, or NULL with why. Called
 * WITHOUT c->mu (only by cluster_new and the thread, one at a time), so that callers never wait
 * behind a connection attempt to a Redis that does not answer. */
static redisContext *open_redis(const struct rs_cluster_config *cfg, char *why, size_t cap)
{
	struct timeval tv = ms_tv(cfg->timeout_ms);
	redisContext *x = redisConnectWithTimeout(cfg->redis_host, (int)cfg->redis_port, tv);
	if (!x || x->err) {
		snprintf(why, cap, "connect: %.200s", x ? x->errstr : "out of memory");
		redisFree(x);
		return NULL;
	}
	bool ok = redisSetTimeout(x, tv) == REDIS_OK;
	if (!ok)
		snprintf(why, cap, "setting the timeout: %s", strerror(errno));
	(void)redisEnableKeepAlive(x); /* a dead peer is also found by the PING of idle connections */
	/* PING last: a Redis that accepts connections but does not answer (stopped) fails here */
	if (ok && cfg->redis_password)
		ok = setup_command(x, cfg->timeout_ms, why, cap, "AUTH", "AUTH %s", cfg->redis_password);
	if (ok && cfg->redis_db)
		ok = setup_command(x, cfg->timeout_ms, why, cap, "SELECT", "SELECT %u", cfg->redis_db);
	if (ok)
		ok = setup_command(x, cfg->timeout_ms, why, cap, "PING", "PING");
	if (!ok) {
		redisFree(x);
		return NULL;
	}
	return x;
}

/* One connection attempt (c->mu NOT held): installs the connection and says so, or marks the
 * cluster down. */
static bool connect_redis(struct cluster *c)
{
	char why[RS_ERR_MSG_MAX];
	redisContext *x = open_redis(c->cfg, why, sizeof(why));
	pthread_mutex_lock(&c->mu);
	if (!x) {
		went_down(c, why);
		pthread_mutex_unlock(&c->mu);
		return false;
	}
	c->ctx = x;
	c->failures = 0;
	c->why[0] = '\0';
	c->last_io_ms = now_ms();
	if (c->mode == CLUSTER_DOWN)
		log_event(LOG_WARN, "Redis at %s answers again: coordinating through it, no longer degraded", c->endpoint);
	else
		log_event(LOG_INFO, "coordinating through Redis at %s as replica %s", c->endpoint, c->replica);
	c->mode = CLUSTER_UP;
	metrics_set_redis_up(1);
	pthread_mutex_unlock(&c->mu);
	return true;
}

/* One command; NULL when there is no connection or it failed (then the cluster is down). An
 * error reply is returned: the caller decides. */
static redisReply *command(struct cluster *c, const char *fmt, ...)
{
	if (!c->ctx)
		return NULL;
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(c->ctx, fmt, ap);
	va_end(ap);
	if (!r) {
		char why[RS_ERR_MSG_MAX];
		describe(why, sizeof(why), c->ctx, c->cfg->timeout_ms);
		went_down(c, why);
		return NULL;
	}
	c->last_io_ms = now_ms();
	return r;
}

/* ------------------------------------------------------------ maintenance thread */

static bool renew_locked(struct cluster_lock *l);

static void *maintain(void *arg)
{
	struct cluster *c = arg;
	pthread_mutex_lock(&c->mu);
	while (!c->stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += TICK_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		(void)pthread_cond_timedwait(&c->cv, &c->mu, &ts); /* woken early only to stop */
		if (c->stopping)
			break;
		uint64_t now = now_ms();
		if (!c->ctx && now >= c->next_attempt_ms) {
			pthread_mutex_unlock(&c->mu); /* the attempt may take timeout_ms: nobody waits for it */
			(void)connect_redis(c);       /* a failure is logged once and rescheduled */
			pthread_mutex_lock(&c->mu);
			if (c->stopping)
				break;
			now = now_ms();
		}
		uint64_t every = (uint64_t)c->cfg->lock_ttl_s * 1000 / 3;
		for (struct cluster_lock *l = c->held; l; l = l->next)
			if (!l->lost && now - l->confirmed_ms >= every)
				(void)renew_locked(l); /* a lost lock is marked: its holder sees it */
		if (c->ctx && now - c->last_io_ms >= PING_IDLE_MS) {
			redisReply *r = command(c, "PING");
			if (r)
				freeReplyObject(r);
		}
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* ------------------------------------------------------------ lifecycle */

enum rs_code cluster_new(struct cluster **out, const struct rs_cluster_config *cfg, const char *replica_id,
                         struct rs_err *err)
{
	*out = NULL;
	struct cluster *c = calloc(1, sizeof(*c));
	if (!c)
		return rs_err_set(err, RS_NOMEM, "cluster: out of memory");
	c->cfg = cfg && cfg->enabled ? cfg : NULL;
	c->mode = CLUSTER_LOCAL;
	if (replica_id)
		snprintf(c->replica, sizeof(c->replica), "%s", replica_id);
	else if (c->cfg && c->cfg->advertise_url)
		snprintf(c->replica, sizeof(c->replica), "%s", c->cfg->advertise_url);
	else {
		char host[64] = "localhost";
		(void)gethostname(host, sizeof(host) - 1); /* the default name is fine when it fails */
		snprintf(c->replica, sizeof(c->replica), "%s:%ld", host, (long)getpid());
	}
	for (char *p = c->replica; *p; p++)
		if (*p == ' ')
			*p = '_'; /* the owner value's separator */
	pthread_mutex_init(&c->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (!c->cfg) {
		*out = c;
		return RS_OK;
	}
	const char *h = c->cfg->redis_host;
	snprintf(c->endpoint, sizeof(c->endpoint), strchr(h, ':') ? "[%s]:%u/%u" : "%s:%u/%u", h, c->cfg->redis_port,
	         c->cfg->redis_db);
	(void)connect_redis(c); /* unreachable: CLUSTER_DOWN, logged; the thread keeps trying */
	int e = pthread_create(&c->thread, NULL, maintain, c);
	if (e) {
		cluster_free(c);
		return rs_err_set(err, RS_IO, "cluster: cannot start its thread: %s", strerror(e));
	}
	c->thread_started = true;
	*out = c;
	return RS_OK;
}

void cluster_free(struct cluster *c)
{
	if (!c)
		return;
	if (c->thread_started) {
		pthread_mutex_lock(&c->mu);
		c->stopping = true;
		pthread_cond_signal(&c->cv);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->thread, NULL);
	}
	assert(!c->held && "every lock is released before cluster_free");
	while (c->local) {
		struct local_lock *n = c->local->next;
		free(c->local->name);
		free(c->local);
		c->local = n;
	}
	if (c->ctx)
		redisFree(c->ctx);
	if (c->cfg)
		metrics_set_redis_up(-1);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

enum cluster_mode cluster_mode(struct cluster *c, char *why, size_t why_cap)
{
	pthread_mutex_lock(&c->mu);
	enum cluster_mode m = c->mode;
	if (why && why_cap)
		snprintf(why, why_cap, "%s", m == CLUSTER_DOWN ? c->why : "");
	pthread_mutex_unlock(&c->mu);
	return m;
}

const char *cluster_replica_id(const struct cluster *c)
{
	return c->replica;
}

/* "<prefix><kind>:<name>", a new string, or NULL. */
static char *make_key(const struct cluster *c, const char *kind, const char *name)
{
	const char *prefix = c->cfg ? c->cfg->key_prefix : "";
	size_t n = strlen(prefix) + strlen(kind) + 1 + strlen(name) + 1;
	char *k = malloc(n);
	if (k)
		snprintf(k, n, "%s%s:%s", prefix, kind, name);
	return k;
}

/* ------------------------------------------------------------ locks */

static struct local_lock *local_find(struct cluster *c, const char *name)
{
	for (struct local_lock *x = c->local; x; x = x->next)
		if (strcmp(x->name, name) == 0)
			return x;
	return NULL;
}

static void local_remove(struct cluster *c, const char *name, const char *owner)
{
	for (struct local_lock **p = &c->local; *p; p = &(*p)->next) {
		struct local_lock *x = *p;
		if (strcmp(x->name, name) == 0 && strcmp(x->owner, owner) == 0) {
			*p = x->next;
			free(x->name);
			free(x);
			return;
		}
	}
}

/* The per-process table: taken unless somebody of this process holds name. */
static bool local_try(struct cluster *c, struct cluster_lock *l, char *holder, size_t holder_cap)
{
	struct local_lock *x = local_find(c, l->name);
	if (x) {
		if (holder && holder_cap)
			snprintf(holder, holder_cap, "%s", x->owner);
		return false;
	}
	x = calloc(1, sizeof(*x));
	if (!x || !(x->name = strdup(l->name))) {
		free(x);
		return false; /* reported as RS_NOMEM by the caller, which sees no holder */
	}
	snprintf(x->owner, sizeof(x->owner), "%s", l->owner);
	x->next = c->local;
	c->local = x;
	l->scope = CLUSTER_LOCAL;
	return true;
}

/* SET NX PX in Redis. 1 taken, 0 held by somebody (holder filled), -1 Redis is not there. */
static int redis_try(struct cluster *c, struct cluster_lock *l, char *holder, size_t holder_cap)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		redisReply *r = command(c, "SET %s %s NX PX %u", l->key, l->owner, c->cfg->lock_ttl_s * 1000);
		if (!r)
			return -1;
		bool taken = r->type == REDIS_REPLY_STATUS;
		bool busy = r->type == REDIS_REPLY_NIL;
		freeReplyObject(r);
		if (taken) {
			l->scope = CLUSTER_UP;
			l->confirmed_ms = now_ms();
			l->next = c->held;
			if (c->held)
				c->held->prev = l;
			c->held = l;
			return 1;
		}
		if (!busy)
			return 0; /* an error reply: not ours, holder unknown */
		r = command(c, "GET %s", l->key);
		if (!r)
			return -1;
		bool gone = r->type == REDIS_REPLY_NIL;
		if (holder && holder_cap)
			snprintf(holder, holder_cap, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
		freeReplyObject(r);
		if (!gone)
			return 0;
		/* it expired between SET and GET: one more try */
	}
	return 0;
}

static void lock_free(struct cluster_lock *l)
{
	free(l->name);
	free(l->key);
	free(l);
}

enum rs_code cluster_lock_try(struct cluster_lock **out, struct cluster *c, const char *name, char *holder,
                              size_t holder_cap, struct rs_err *err)
{
	*out = NULL;
	if (holder && holder_cap)
		holder[0] = '\0';
	struct cluster_lock *l = calloc(1, sizeof(*l));
	if (!l || !(l->name = strdup(name)) || !(l->key = make_key(c, "lock", name))) {
		if (l)
			lock_free(l);
		return rs_err_set(err, RS_NOMEM, "cluster: out of memory locking %s", name);
	}
	l->c = c;
	new_owner(c, l->owner, sizeof(l->owner));
	pthread_mutex_lock(&c->mu);
	int got = c->ctx ? redis_try(c, l, holder, holder_cap) : -1;
	bool nomem = false;
	if (got < 0) {
		got = local_try(c, l, holder, holder_cap) ? 1 : 0;
		nomem = !got && !local_find(c, name);
	}
	pthread_mutex_unlock(&c->mu);
	if (c->cfg)
		metrics_cluster_lock(got != 1 ? METRICS_LOCK_BUSY : l->scope == CLUSTER_UP ? METRICS_LOCK_REDIS
		                                                                            : METRICS_LOCK_LOCAL);
	if (got != 1) {
		lock_free(l);
		return nomem ? rs_err_set(err, RS_NOMEM, "cluster: out of memory locking %s", name) : RS_OK;
	}
	*out = l;
	return RS_OK;
}

enum rs_code cluster_lock_wait(struct cluster_lock **out, struct cluster *c, const char *name, unsigned wait_ms,
                               char *holder, size_t holder_cap, struct rs_err *err)
{
	uint64_t until = now_ms() + wait_ms;
	for (;;) {
		enum rs_code rc = cluster_lock_try(out, c, name, holder, holder_cap, err);
		if (rc || *out || now_ms() >= until)
			return rc;
		struct timespec ts = {0, WAIT_STEP_MS * 1000000L};
		nanosleep(&ts, NULL);
	}
}

/* c->mu held. */
static bool renew_locked(struct cluster_lock *l)
{
	struct cluster *c = l->c;
	if (l->scope != CLUSTER_UP || l->lost)
		return !l->lost;
	redisReply *r = command(c, "EVAL %s 1 %s %s %u", renew_lua, l->key, l->owner, c->cfg->lock_ttl_s * 1000);
	if (!r) {
		/* no answer: ours until the expiry the last renewal set, as far as anyone can tell */
		if (now_ms() - l->confirmed_ms >= (uint64_t)c->cfg->lock_ttl_s * 1000)
			l->lost = true;
		return !l->lost;
	}
	if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
		l->confirmed_ms = now_ms();
	} else if (r->type == REDIS_REPLY_INTEGER) {
		l->lost = true;
		log_event(LOG_WARN, "cluster: lock %s was lost (it expired or Redis forgot it): another replica may own it",
		          l->name);
	}
	freeReplyObject(r);
	return !l->lost;
}

bool cluster_lock_renew(struct cluster_lock *l)
{
	pthread_mutex_lock(&l->c->mu);
	bool held = renew_locked(l);
	pthread_mutex_unlock(&l->c->mu);
	return held;
}

bool cluster_lock_held(struct cluster_lock *l)
{
	struct cluster *c = l->c;
	pthread_mutex_lock(&c->mu);
	if (l->scope == CLUSTER_UP && !l->lost && now_ms() - l->confirmed_ms >= (uint64_t)c->cfg->lock_ttl_s * 1000)
		l->lost = true;
	bool held = !l->lost;
	pthread_mutex_unlock(&c->mu);
	return held;
}

enum cluster_mode cluster_lock_scope(const struct cluster_lock *l)
{
	return l->scope;
}

const char *cluster_lock_owner(const struct cluster_lock *l)
{
	return l->owner;
}

/* Take l off the renewal list or the local table (c->mu held). */
static void detach(struct cluster_lock *l)
{
	struct cluster *c = l->c;
	if (l->scope == CLUSTER_LOCAL) {
		local_remove(c, l->name, l->owner);
		return;
	}
	if (l->prev)
		l->prev->next = l->next;
	else
		c->held = l->next;
	if (l->next)
		l->next->prev = l->prev;
}

void cluster_lock_release(struct cluster_lock *l)
{
	if (!l)
		return;
	struct cluster *c = l->c;
	pthread_mutex_lock(&c->mu);
	detach(l);
	if (l->scope == CLUSTER_UP && !l->lost) {
		redisReply *r = command(c, "EVAL %s 1 %s %s", release_lua, l->key, l->owner);
		if (r)
			freeReplyObject(r);
		/* no answer: the lock expires after lock_ttl */
	}
	pthread_mutex_unlock(&c->mu);
	lock_free(l);
}

void cluster_lock_abandon(struct cluster_lock *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->c->mu);
	detach(l);
	pthread_mutex_unlock(&l->c->mu);
	lock_free(l);
}

/* ------------------------------------------------------------ map and uploads */

/* c->mu held. RS_IO (and err) when there is no Redis to ask. */
static enum rs_code unavailable(struct cluster *c, const char *what, struct rs_err *err)
{
	if (!c->cfg)
		return rs_err_set(err, RS_IO, "cluster: %s: no cluster configured", what);
	return rs_err_set(err, RS_IO, "cluster: %s: Redis at %s unavailable (degraded): %s", what, c->endpoint,
	                  c->why[0] ? c->why : "not connected");
}

/* A reply that is an error: RS_IO naming it. Frees r. */
static enum rs_code reply_error(redisReply *r, const char *what, struct rs_err *err)
{
	enum rs_code rc = rs_err_set(err, RS_IO, "cluster: %s: Redis answered %s", what, r->str ? r->str : "an error");
	freeReplyObject(r);
	return rc;
}

/* The reply r of a command just sent (c->mu held): r, or NULL with err set when there was none
 * (the connection is gone: degraded from now on) or it is an error (freed). */
static redisReply *checked(struct cluster *c, redisReply *r, const char *what, struct rs_err *err)
{
	if (!r) {
		char why[RS_ERR_MSG_MAX];
		describe(why, sizeof(why), c->ctx, c->cfg->timeout_ms);
		went_down(c, why);
		(void)unavailable(c, what, err);
		return NULL;
	}
	c->last_io_ms = now_ms();
	if (r->type == REDIS_REPLY_ERROR) {
		(void)reply_error(r, what, err);
		return NULL;
	}
	return r;
}

/* Run one command on behalf of a map or upload call: the reply, or NULL with err set. */
static redisReply *call(struct cluster *c, const char *what, struct rs_err *err, const char *fmt, ...)
{
	assert(err && "the map and upload calls report through err->code");
	if (!c->ctx) {
		(void)unavailable(c, what, err);
		return NULL;
	}
	va_list ap;
	va_start(ap, fmt);
	redisReply *r = redisvCommand(c->ctx, fmt, ap);
	va_end(ap);
	return checked(c, r, what, err);
}

enum rs_code cluster_map_get(char **out, struct cluster *c, const char *key, struct rs_err *err)
{
	*out = NULL;
	char *k = make_key(c, "map", key);
	if (!k)
		return rs_err_set(err, RS_NOMEM, "cluster: out of memory");
	enum rs_code rc = RS_OK;
	pthread_mutex_lock(&c->mu);
	redisReply *r = call(c, "map get", err, "GET %s", k);
	if (!r)
		rc = err->code;
	else if (r->type == REDIS_REPLY_STRING && !(*out = strndup(r->str, r->len)))
		rc = rs_err_set(err, RS_NOMEM, "cluster: out of memory");
	pthread_mutex_unlock(&c->mu);
	if (r)
		freeReplyObject(r);
	free(k);
	return rc;
}

enum rs_code cluster_map_set(struct cluster *c, const char *key, const char *value, unsigned ttl_s,
                             struct rs_err *err)
{
	assert(ttl_s >= 1);
	char *k = make_key(c, "map", key);
	if (!k)
		return rs_err_set(err, RS_NOMEM, "cluster: out of memory");
	pthread_mutex_lock(&c->mu);
	redisReply *r = call(c, "map set", err, "SET %s %s EX %u", k, value, ttl_s);
	pthread_mutex_unlock(&c->mu);
	free(k);
	if (!r)
		return err->code;
	freeReplyObject(r);
	return RS_OK;
}

/* DEL <prefix><space>:<name> (what names the call in errors). */
static enum rs_code del_key(struct cluster *c, const char *space, const char *name, const char *what,
                            struct rs_err *err)
{
	char *k = make_key(c, space, name);
	if (!k)
		return rs_err_set(err, RS_NOMEM, "cluster: out of memory");
	pthread_mutex_lock(&c->mu);
	redisReply *r = call(c, what, err, "DEL %s", k);
	pthread_mutex_unlock(&c->mu);
	free(k);
	if (!r)
		return err->code;
	freeReplyObject(r);
	return RS_OK;
}

enum rs_code cluster_map_del(struct cluster *c, const char *key, struct rs_err *err)
{
	return del_key(c, "map", key, "map del", err);
}

enum rs_code cluster_upload_put(struct cluster *c, const char *id, const struct cluster_upload *u, unsigned ttl_s,
                                struct rs_err *err)
{
	if (strlen(u->repository) >= sizeof(u->repository) - 1)
		return rs_err_set(err, RS_BAD_INPUT, "cluster: upload %s: repository name too long", id);
	char *k = make_key(c, "upload", id);
	if (!k)
		return rs_err_set(err, RS_NOMEM, "cluster: out of memory");
	char size[24];
	snprintf(size, sizeof(size), "%" PRIu64, u->size);
	pthread_mutex_lock(&c->mu);
	redisReply *r = call(c, "upload put", err, "EVAL %s 1 %s %s %s %s %u", upload_put_lua, k, u->repository, size,
	                     u->owner, ttl_s);
	pthread_mutex_unlock(&c->mu);
	free(k);
	if (!r)
		return err->code;
	freeReplyObject(r);
	return RS_OK;
}

static void copy_field(char *out, size_t cap, const redisReply *e)
{
	snprintf(out, cap, "%s", e->type == REDIS_REPLY_STRING ? e->str : "");
}

enum rs_code cluster_upload_get(struct cluster_upload *out, struct cluster *c, const char *id, struct rs_err *err)
{
	memset(out, 0, sizeof(*out));
	char *k = make_key(c, "upload", id);
	if (!k)
		return rs_err_set(err, RS_NOMEM, "cluster: out of memory");
	enum rs_code rc = RS_OK;
	pthread_mutex_lock(&c->mu);
	redisReply *r = call(c, "upload get", err, "HMGET %s repository size owner", k);
	pthread_mutex_unlock(&c->mu);
	free(k);
	if (!r)
		return err->code;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || r->element[0]->type != REDIS_REPLY_STRING) {
		rc = rs_err_set(err, RS_NOT_FOUND, "cluster: no upload %s", id);
	} else {
		char size[24];
		copy_field(out->repository, sizeof(out->repository), r->element[0]);
		copy_field(size, sizeof(size), r->element[1]);
		copy_field(out->owner, sizeof(out->owner), r->element[2]);
		out->size = strtoull(size, NULL, 10);
	}
	freeReplyObject(r);
	return rc;
}

enum rs_code cluster_upload_advance(struct cluster *c, const char *id, uint64_t from, uint64_t to, unsigned ttl_s,
                                    struct rs_err *err)
{
	char *k = make_key(c, "upload", id);
	if (!k)
		return rs_err_set(err, RS_NOMEM, "cluster: out of memory");
	char a[24], b[24];
	snprintf(a, sizeof(a), "%" PRIu64, from);
	snprintf(b, sizeof(b), "%" PRIu64, to);
	pthread_mutex_lock(&c->mu);
	redisReply *r = call(c, "upload advance", err, "EVAL %s 1 %s %s %s %u", upload_advance_lua, k, a, b, ttl_s);
	pthread_mutex_unlock(&c->mu);
	free(k);
	if (!r)
		return err->code;
	enum rs_code rc = RS_OK;
	long long status = r->type == REDIS_REPLY_ARRAY && r->elements >= 1 ? r->element[0]->integer : -1;
	if (status == -1)
		rc = rs_err_set(err, RS_NOT_FOUND, "cluster: no upload %s", id);
	else if (status == 0)
		rc = rs_err_set(err, RS_RANGE, "cluster: upload %s is at %s bytes, a chunk from %s does not follow",
		                id, r->elements == 2 && r->element[1]->str ? r->element[1]->str : "?", a);
	freeReplyObject(r);
	return rc;
}

enum rs_code cluster_upload_del(struct cluster *c, const char *id, struct rs_err *err)
{
	return del_key(c, "upload", id, "upload del", err);
}

/* ------------------------------------------------------------ scored sets */

#define ZSET_CHUNK 512

/* A score as Redis writes it (a double: "1733580000000", or with an exponent past 1e17). */
static uint64_t score_of(const char *s)
{
	double d = strtod(s, NULL);
	return d > 0 ? (uint64_t)d : 0;
}

/* call() for a command built as an argument vector (c->mu held). */
static redisReply *call_argv(struct cluster *c, const char *what, struct rs_err *err, int argc, const char **argv,
                             const size_t *lens)
{
	if (!c->ctx) {
		(void)unavailable(c, what, err);
		return NULL;
	}
	return checked(c, redisCommandArgv(c->ctx, argc, argv, lens), what, err);
}

/* One command "<cmd> <key> [<head>] then per member [score] member", members from..from+n-1
 * (n <= ZSET_CHUNK). scores NULL: members only. */
static enum rs_code zset_command(struct cluster *c, const char *what, const char *cmd, const char *key,
                                 const char *head, const char *const *members, const uint64_t *scores, size_t n,
                                 redisReply **out, struct rs_err *err)
{
	const char *argv[3 + 2 * ZSET_CHUNK];
	size_t lens[3 + 2 * ZSET_CHUNK];
	char (*nums)[24] = scores ? malloc(n * sizeof(*nums)) : NULL;
	if (scores && !nums)
		return rs_err_set(err, RS_NOMEM, "cluster: out of memory");
	int argc = 0;
	argv[argc++] = cmd;
	argv[argc++] = key;
	if (head)
		argv[argc++] = head;
	for (size_t i = 0; i < n; i++) {
		if (scores) {
			snprintf(nums[i], sizeof(nums[i]), "%" PRIu64, scores[i]);
			argv[argc++] = nums[i];
		}
		argv[argc++] = members[i];
	}
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	pthread_mutex_lock(&c->mu);
	redisReply *r = call_argv(c, what, err, argc, argv, lens);
	pthread_mutex_unlock(&c->mu);
	free(nums);
	if (!r)
		return err->code;
	if (out)
		*out = r;
	else
		freeReplyObject(r);
	return RS_OK;
}

enum rs_code cluster_zset_raise(struct cluster *c, const char *set, const char *const *members,
                                const uint64_t *scores, size_t n, struct rs_err *err)
{
	char *k = make_key(c, "zset", set);
	if (!k)
		return rs_err_set(err, RS_NOMEM, "cluster: out of memory");
	enum rs_code rc = RS_OK;
	for (size_t i = 0; rc == RS_OK && i < n; i += ZSET_CHUNK)
		rc = zset_command(c, "zset raise", "ZADD", k, "GT", members + i, scores + i,
		                  n - i < ZSET_CHUNK ? n - i : ZSET_CHUNK, NULL, err);
	free(k);
	return rc;
}

enum rs_code cluster_zset_scores(struct cluster *c, const char *set, const char *const *members, size_t n,
                                 uint64_t *out, struct rs_err *err)
{
	char *k = make_key(c, "zset", set);
	if (!k)
		return rs_err_set(err, RS_NOMEM, "cluster: out of memory");
	enum rs_code rc = RS_OK;
	for (size_t i = 0; rc == RS_OK && i < n; i += ZSET_CHUNK) {
		size_t m = n - i < ZSET_CHUNK ? n - i : ZSET_CHUNK;
		redisReply *r = NULL;
		rc = zset_command(c, "zset scores", "ZMSCORE", k, NULL, members + i, NULL, m, &r, err);
		if (rc)
			break;
		for (size_t j = 0; j < m; j++) {
			const redisReply *e = r->type == REDIS_REPLY_ARRAY && j < r->elements ? r->element[j] : NULL;
			out[i + j] = e && e->type == REDIS_REPLY_STRING ? score_of(e->str) : 0; /* nil: none */
		}
		freeReplyObject(r);
	}
	free(k);
	return rc;
}

enum rs_code cluster_zset_from(struct cluster *c, const char *set, uint64_t min, size_t max, cluster_zset_fn fn,
                               void *ctx, struct rs_err *err)
{
	char *k = make_key(c, "zset", set);
	if (!k)
		return rs_err_set(err, RS_NOMEM, "cluster: out of memory");
	char lo[24], count[24];
	snprintf(lo, sizeof(lo), "%" PRIu64, min);
	snprintf(count, sizeof(count), "%zu", max);
	pthread_mutex_lock(&c->mu);
	redisReply *r = call(c, "zset from", err, "ZRANGEBYSCORE %s %s +inf WITHSCORES LIMIT 0 %s", k, lo, count);
	pthread_mutex_unlock(&c->mu);
	free(k);
	if (!r)
		return err->code;
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
		const redisReply *m = r->element[i], *s = r->element[i + 1];
		if (m->type == REDIS_REPLY_STRING)
			fn(ctx, m->str, s->type == REDIS_REPLY_STRING ? score_of(s->str) : 0);
	}
	freeReplyObject(r);
	return RS_OK;
}

enum rs_code cluster_zset_remove(struct cluster *c, const char *set, const char *const *members, size_t n,
                                 uint64_t below, struct rs_err *err)
{
	char *k = make_key(c, "zset", set);
	if (!k)
		return rs_err_set(err, RS_NOMEM, "cluster: out of memory");
	enum rs_code rc = RS_OK;
	for (size_t i = 0; rc == RS_OK && i < n; i += ZSET_CHUNK)
		rc = zset_command(c, "zset remove", "ZREM", k, NULL, members + i, NULL,
		                  n - i < ZSET_CHUNK ? n - i : ZSET_CHUNK, NULL, err);
	if (rc == RS_OK && below > 0) {
		char hi[24];
		snprintf(hi, sizeof(hi), "(%" PRIu64, below);
		pthread_mutex_lock(&c->mu);
		redisReply *r = call(c, "zset remove", err, "ZREMRANGEBYSCORE %s -inf %s", k, hi);
		pthread_mutex_unlock(&c->mu);
		if (!r)
			rc = err->code;
		else
			freeReplyObject(r);
	}
	free(k);
	return rc;
}
