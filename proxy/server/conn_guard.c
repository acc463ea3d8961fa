/* conn_guard: the slowloris limits (see conn_guard.h). One mutex guards a
 * list of every open connection and a hash of them by address; the
 * watchdog walks the list once a second. A connection's entry is freed only
 * in conn_guard_close(), which MHD's close notification calls before it
 * closes the socket, so a socket shut down under the mutex is always still
 * the connection's own (never a reused descriptor). The connection threads
 * touch their entry only to change its phase (under the mutex) and to add
 * body bytes (an atomic). */
#include "conn_guard.h"

#include "log.h"
#include "metrics.h"

#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_received (glibc's lacks it) */
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define IP_BUCKETS 4096
/* The watchdog's period. */
#define TICK_MS 1000
/* Bytes of a refused connection's request read away before answering, so
 * that closing the socket does not reset the connection before the client
 * reads the answer. */
#define REFUSE_DRAIN_MAX (64 * 1024)
#define REASON_COUNT 4

enum phase {
	PHASE_IDLE, /* between requests: waiting for a byte past idle_mark */
	PHASE_HEAD, /* the head (or TLS handshake) is arriving */
	PHASE_BODY, /* the access handler was called; the body may be arriving */
	PHASE_BUSY, /* the request is being answered */
	PHASE_DROPPED,
};

struct conn_guard_conn {
	struct conn_guard *g;
	struct conn_guard_conn *prev, *next;       /* g->conns */
	struct conn_guard_conn *ip_prev, *ip_next; /* g->by_ip[ip_hash] */
	unsigned char ip[16];                      /* the per-address key */
	unsigned ip_hash;
	int fd;
	char peer[64];
	enum phase phase;
	enum conn_guard_reason dropped;
	uint64_t idle_mark;    /* tcpi_bytes_received when the last request ended */
	uint64_t head_since;   /* ms; 0: set at the next tick */
	uint64_t body_ms;      /* body time so far (ticks while not busy) */
	bool body_seen;        /* a tick saw the body phase (its clock runs from there) */
	uint64_t body_check;   /* body_ms of the next rate check */
	uint64_t body_mark;    /* body bytes at the previous rate check */
	_Atomic uint64_t body_bytes;
	atomic_bool busy;
};

struct rate_log {
	uint64_t last_ms;   /* when a line was last written */
	unsigned suppressed; /* events since, not logged */
};

struct conn_guard {
	struct conn_guard_limits lim;
	pthread_mutex_t mu;
	pthread_cond_t cond; /* wakes the watchdog to stop */
	pthread_t thread;
	bool running, stopping;
	struct conn_guard_conn *conns;
	struct conn_guard_conn *by_ip[IP_BUCKETS];
	uint64_t seed;
	uint64_t last_tick_ms;
	bool tcp_info_warned;
	struct rate_log logs[REASON_COUNT];
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

enum rs_code conn_guard_new(struct conn_guard **out, const struct conn_guard_limits *lim, struct rs_err *err)
{
	struct conn_guard *g = calloc(1, sizeof(*g));
	if (!g)
		return rs_err_set(err, RS_NOMEM, "out of memory for the connection guard");
	g->lim = *lim;
	if (g->lim.body_min_bytes_per_s && !g->lim.body_rate_window_s)
		g->lim.body_rate_window_s = 1;
	/* The address hash is seeded so that a client cannot pick addresses
	 * that pile into one bucket; a weak seed only costs speed. */
	if (getrandom(&g->seed, sizeof(g->seed), GRND_NONBLOCK) != (ssize_t)sizeof(g->seed))
		g->seed = now_ms() ^ (uint64_t)(uintptr_t)g;
	pthread_mutex_init(&g->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&g->cond, &ca);
	pthread_condattr_destroy(&ca);
	*out = g;
	return RS_OK;
}

static void *watchdog(void *arg)
{
	struct conn_guard *g = arg;
	pthread_mutex_lock(&g->mu);
	while (!g->stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += TICK_MS / 1000;
		int rc;
		do
			rc = pthread_cond_timedwait(&g->cond, &g->mu, &ts);
		while (rc == 0 && !g->stopping);
		if (g->stopping)
			break;
		pthread_mutex_unlock(&g->mu);
		(void)conn_guard_tick(g, now_ms()); /* it logs and counts what it drops */
		pthread_mutex_lock(&g->mu);
	}
	pthread_mutex_unlock(&g->mu);
	return NULL;
}

enum rs_code conn_guard_start(struct conn_guard *g, struct rs_err *err)
{
	int rc = pthread_create(&g->thread, NULL, watchdog, g);
	if (rc)
		return rs_err_set(err, RS_NOMEM, "cannot start the connection watchdog thread: %s", strerror(rc));
	g->running = true;
	return RS_OK;
}

void conn_guard_free(struct conn_guard *g)
{
	if (!g)
		return;
	if (g->running) {
		pthread_mutex_lock(&g->mu);
		g->stopping = true;
		pthread_cond_signal(&g->cond);
		pthread_mutex_unlock(&g->mu);
		pthread_join(g->thread, NULL);
	}
	while (g->conns) {
		struct conn_guard_conn *c = g->conns;
		g->conns = c->next;
		free(c);
	}
	pthread_cond_destroy(&g->cond);
	pthread_mutex_destroy(&g->mu);
	free(g);
}

/* ---------------------------------------------------------------- addresses */

/* IPv4 as ::ffff:a.b.c.d; IPv6 cut to its /64 (one client usually holds a
 * whole /64); anything else all zeros. */
static void ip_key(unsigned char key[16], const struct sockaddr *sa)
{
	memset(key, 0, 16);
	if (sa && sa->sa_family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa && sa->sa_family == AF_INET6) {
		const unsigned char *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		memcpy(key, a, memcmp(a, v4mapped, 12) == 0 ? 16 : 8);
	}
}

static unsigned ip_hash(const struct conn_guard *g, const unsigned char key[16])
{
	uint64_t h = 0xcbf29ce484222325ull ^ g->seed;
	for (int i = 0; i < 16; i++) {
		h ^= key[i];
		h *= 0x100000001b3ull;
	}
	return (unsigned)(h ^ (h >> 32)) % IP_BUCKETS;
}

static unsigned ip_count(const struct conn_guard *g, const unsigned char key[16], unsigned hash)
{
	unsigned n = 0;
	for (const struct conn_guard_conn *c = g->by_ip[hash]; c; c = c->ip_next)
		if (memcmp(c->ip, key, 16) == 0)
			n++;
	return n;
}

/* ---------------------------------------------------------------- logging */

static const char *reason_name(enum conn_guard_reason r)
{
	switch (r) {
	case CONN_GUARD_HEADER_TIMEOUT:
		return "header_timeout";
	case CONN_GUARD_SLOW_BODY:
		return "slow_body";
	case CONN_GUARD_PER_IP_LIMIT:
		return "per_ip_limit";
	case CONN_GUARD_OK:
		break;
	}
	return "none";
}

void conn_guard_describe(char *out, size_t size, const struct conn_guard *g, enum conn_guard_reason reason)
{
	const struct conn_guard_limits *l = &g->lim;
	switch (reason) {
	case CONN_GUARD_HEADER_TIMEOUT:
		snprintf(out, size, "request head not complete within %u s (limits.header_timeout_s)", l->header_timeout_s);
		return;
	case CONN_GUARD_SLOW_BODY:
		snprintf(out, size, "request body slower than %llu bytes/s over %u s (limits.body_min_bytes_per_s)",
		         (unsigned long long)l->body_min_bytes_per_s, l->body_rate_window_s);
		return;
	case CONN_GUARD_PER_IP_LIMIT:
		snprintf(out, size, "the address already has %u connections (max_connections_per_ip)", l->max_per_ip);
		return;
	case CONN_GUARD_OK:
		break;
	}
	snprintf(out, size, "not dropped");
}

/* A drop or refusal: count it; when no line was logged for this reason in
 * the last second, fill line[size] (logged by the caller outside the lock)
 * and return true. Under g->mu. */
static bool note_drop(struct conn_guard *g, enum conn_guard_reason reason, const char *peer, uint64_t now,
                      char *line, size_t size)
{
	static const enum metrics_counter counter[REASON_COUNT] = {
		[CONN_GUARD_HEADER_TIMEOUT] = METRICS_DROP_HEADER_TIMEOUT,
		[CONN_GUARD_SLOW_BODY] = METRICS_DROP_SLOW_BODY,
		[CONN_GUARD_PER_IP_LIMIT] = METRICS_DROP_PER_IP_LIMIT,
	};
	metrics_add(counter[reason], 1);
	struct rate_log *rl = &g->logs[reason];
	if (rl->last_ms && now - rl->last_ms < 1000) {
		rl->suppressed++;
		return false;
	}
	char why[160];
	conn_guard_describe(why, sizeof(why), g, reason);
	char more[64] = "";
	if (rl->suppressed)
		snprintf(more, sizeof(more), " (and %u more since the last such line)", rl->suppressed);
	snprintf(line, size, "%s connection from %s (%s): %s%s",
	         reason == CONN_GUARD_PER_IP_LIMIT ? "refused" : "dropped", peer, reason_name(reason), why, more);
	rl->last_ms = now;
	rl->suppressed = 0;
	return true;
}

/* ---------------------------------------------------------------- connections */

/* Bytes the kernel has received on fd; false when it cannot say. */
static bool bytes_received(uint64_t *out, int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
	    len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti.tcpi_bytes_received))
		return false;
	*out = ti.tcpi_bytes_received;
	return true;
}

/* Answer a refused connection and shut its socket down (MHD closes it). */
static void refuse(int fd, bool tls, unsigned max_per_ip)
{
	char drain[4096];
	size_t drained = 0;
	ssize_t got;
	while (drained < REFUSE_DRAIN_MAX && (got = recv(fd, drain, sizeof(drain), MSG_DONTWAIT)) > 0)
		drained += (size_t)got;
	if (!tls) {
		char body[192], reply[384];
		int bl = snprintf(body, sizeof(body),
		                  "{\"errors\":[{\"code\":\"UNAVAILABLE\",\"message\":\"too many connections from your "
		                  "address (max_connections_per_ip is %u)\",\"detail\":{}}]}\n",
		                  max_per_ip);
		int len = snprintf(reply, sizeof(reply),
		                   "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
		                   "Retry-After: 5\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		                   bl, body);
		/* A fresh socket's send buffer takes these few bytes at once; if
		 * not, the client sees the connection close without an answer. */
		(void)send(fd, reply, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
	}
	(void)shutdown(fd, SHUT_RDWR); /* if it fails MHD still closes the socket */
}

bool conn_guard_open(struct conn_guard_conn **out, struct conn_guard *g, int fd, const struct sockaddr *peer,
                     const char *peer_text)
{
	*out = NULL;
	unsigned char key[16];
	ip_key(key, peer);
	unsigned hash = ip_hash(g, key);
	char line[320];
	bool log_it = false;
	uint64_t now = now_ms();
	pthread_mutex_lock(&g->mu);
	if (g->lim.max_per_ip && ip_count(g, key, hash) >= g->lim.max_per_ip) {
		log_it = note_drop(g, CONN_GUARD_PER_IP_LIMIT, peer_text, now, line, sizeof(line));
		pthread_mutex_unlock(&g->mu);
		refuse(fd, g->lim.tls, g->lim.max_per_ip);
		if (log_it)
			log_event(LOG_WARN, "%s", line);
		return false;
	}
	struct conn_guard_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		pthread_mutex_unlock(&g->mu);
		log_event(LOG_ERROR, "out of memory accepting %s: its connection is not guarded", peer_text);
		return true;
	}
	c->g = g;
	memcpy(c->ip, key, 16);
	c->ip_hash = hash;
	c->fd = fd;
	snprintf(c->peer, sizeof(c->peer), "%s", peer_text);
	atomic_init(&c->body_bytes, 0);
	atomic_init(&c->busy, false);
	/* With TCP_DEFER_ACCEPT the first bytes usually came with the accept:
	 * the head has begun. */
	uint64_t got = 0;
	if (!bytes_received(&got, fd) || got > 0)
		c->phase = PHASE_HEAD;
	c->next = g->conns;
	if (g->conns)
		g->conns->prev = c;
	g->conns = c;
	c->ip_next = g->by_ip[hash];
	if (c->ip_next)
		c->ip_next->ip_prev = c;
	g->by_ip[hash] = c;
	pthread_mutex_unlock(&g->mu);
	*out = c;
	return true;
}

void conn_guard_close(struct conn_guard *g, struct conn_guard_conn *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&g->mu);
	if (c->prev)
		c->prev->next = c->next;
	else
		g->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->ip_prev)
		c->ip_prev->ip_next = c->ip_next;
	else
		g->by_ip[c->ip_hash] = c->ip_next;
	if (c->ip_next)
		c->ip_next->ip_prev = c->ip_prev;
	pthread_mutex_unlock(&g->mu);
	free(c);
}

/* The phase hooks run on the connection's own thread; the watchdog reads
 * the phase under the mutex. A dropped connection stays dropped. */

void conn_guard_head_done(struct conn_guard_conn *c)
{
	if (!c)
		return;
	struct conn_guard *g = c->g;
	pthread_mutex_lock(&g->mu);
	if (c->phase != PHASE_DROPPED) {
		c->phase = PHASE_BODY;
		c->body_ms = 0;
		c->body_seen = false;
		c->body_check = (uint64_t)g->lim.body_rate_window_s * 1000;
		c->body_mark = 0;
		atomic_store(&c->body_bytes, 0);
	}
	pthread_mutex_unlock(&g->mu);
}

void conn_guard_body(struct conn_guard_conn *c, size_t n)
{
	if (c)
		atomic_fetch_add_explicit(&c->body_bytes, n, memory_order_relaxed);
}

void conn_guard_body_done(struct conn_guard_conn *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->g->mu);
	if (c->phase != PHASE_DROPPED)
		c->phase = PHASE_BUSY;
	pthread_mutex_unlock(&c->g->mu);
}

void conn_guard_request_done(struct conn_guard_conn *c)
{
	if (!c)
		return;
	/* Bytes already received (a pipelined next request) count as idle:
	 * the next head's clock starts with the next byte, at most one tick
	 * later than it could. */
	uint64_t mark = 0;
	bool known = bytes_received(&mark, c->fd);
	pthread_mutex_lock(&c->g->mu);
	if (c->phase != PHASE_DROPPED) {
		c->phase = known ? PHASE_IDLE : PHASE_HEAD;
		c->idle_mark = mark;
		c->head_since = 0;
	}
	pthread_mutex_unlock(&c->g->mu);
}

void conn_guard_busy(struct conn_guard_conn *c, bool busy)
{
	if (c)
		atomic_store(&c->busy, busy);
}

enum conn_guard_reason conn_guard_dropped(const struct conn_guard_conn *c)
{
	if (!c)
		return CONN_GUARD_OK;
	pthread_mutex_lock(&c->g->mu);
	enum conn_guard_reason r = c->dropped;
	pthread_mutex_unlock(&c->g->mu);
	return r;
}

/* ---------------------------------------------------------------- watchdog */

/* Under g->mu: what limit c is over at now, if any. */
static enum conn_guard_reason check(struct conn_guard *g, struct conn_guard_conn *c, uint64_t now, uint64_t elapsed)
{
	const struct conn_guard_limits *l = &g->lim;
	uint64_t got;
	switch (c->phase) {
	case PHASE_IDLE:
		if (!bytes_received(&got, c->fd)) {
			if (!g->tcp_info_warned)
				log_event(LOG_WARN, "no TCP_INFO on the socket of %s: idle connections count against "
				                    "limits.header_timeout_s",
				          c->peer);
			g->tcp_info_warned = true;
		} else if (got <= c->idle_mark) {
			break;
		}
		c->phase = PHASE_HEAD;
		c->head_since = now;
		break;
	case PHASE_HEAD:
		if (!c->head_since)
			c->head_since = now;
		else if (l->header_timeout_s && now - c->head_since >= (uint64_t)l->header_timeout_s * 1000)
			return CONN_GUARD_HEADER_TIMEOUT;
		break;
	case PHASE_BODY:
		if (!l->body_min_bytes_per_s || atomic_load(&c->busy))
			break;
		/* The head completed somewhere since the last tick: the body's
		 * clock starts at this one. */
		if (c->body_seen)
			c->body_ms += elapsed;
		c->body_seen = true;
		if (c->body_ms < c->body_check)
			break;
		got = atomic_load(&c->body_bytes);
		if (got - c->body_mark < l->body_min_bytes_per_s * l->body_rate_window_s)
			return CONN_GUARD_SLOW_BODY;
		c->body_mark = got;
		c->body_check = c->body_ms + (uint64_t)l->body_rate_window_s * 1000;
		break;
	case PHASE_BUSY:
	case PHASE_DROPPED:
		break;
	}
	return CONN_GUARD_OK;
}

unsigned conn_guard_tick(struct conn_guard *g, uint64_t now)
{
	char lines[REASON_COUNT][320];
	bool log_it[REASON_COUNT] = {false};
	unsigned dropped = 0;
	pthread_mutex_lock(&g->mu);
	/* Body time advances by the real time between ticks, capped so that a
	 * stalled watchdog (a suspended process) does not count against
	 * clients. */
	uint64_t elapsed = g->last_tick_ms && now > g->last_tick_ms ? now - g->last_tick_ms : TICK_MS;
	if (elapsed > 2 * TICK_MS)
		elapsed = 2 * TICK_MS;
	g->last_tick_ms = now;
	for (struct conn_guard_conn *c = g->conns; c; c = c->next) {
		enum conn_guard_reason r = check(g, c, now, elapsed);
		if (r == CONN_GUARD_OK)
			continue;
		c->phase = PHASE_DROPPED;
		c->dropped = r;
		/* The connection's thread reads end-of-file (or fails its next
		 * write) and MHD closes the connection; the descriptor stays
		 * valid until conn_guard_close(), which needs the mutex. */
		(void)shutdown(c->fd, SHUT_RDWR); /* fails only if the peer is gone already */
		dropped++;
		char line[320];
		if (note_drop(g, r, c->peer, now, line, sizeof(line))) {
			memcpy(lines[r], line, sizeof(line));
			log_it[r] = true;
		}
	}
	pthread_mutex_unlock(&g->mu);
	for (int r = 0; r < REASON_COUNT; r++)
		if (log_it[r])
			log_event(LOG_WARN, "%s", lines[r]);
	return dropped;
}
