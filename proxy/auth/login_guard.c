/* login_guard: failed-login back-off (see login_guard.h). One open-addressing
 * table of fixed size keyed by a 64-bit hash of "a\0ADDR" or "u\0USER\0ADDR";
 * a colliding key only makes another key look like it failed too, which
 * costs a legitimate client at most a short wait. */
#include "login_guard.h"

#include "rs_limits.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct slot {
	uint64_t key; /* 0: empty */
	unsigned failures;
	time_t last;  /* last failure */
	time_t until; /* no try before this */
};

struct login_guard {
	pthread_mutex_t mu;
	struct slot slots[RS_LIMIT_LOGIN_TRACKED];
};

enum rs_code login_guard_new(struct login_guard **out, struct rs_err *err)
{
	struct login_guard *g = calloc(1, sizeof(*g));
	if (!g)
		return rs_err_set(err, RS_NOMEM, "out of memory for the login guard");
	pthread_mutex_init(&g->mu, NULL);
	*out = g;
	return RS_OK;
}

void login_guard_free(struct login_guard *g)
{
	if (!g)
		return;
	pthread_mutex_destroy(&g->mu);
	free(g);
}

static uint64_t fnv1a(uint64_t h, const char *s)
{
	do { /* the terminating NUL too, so that parts cannot run together */
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ull;
	} while (*s++);
	return h;
}

/* Kind 'a': an address; 'u': a user at an address. Never 0 (empty slot). */
static uint64_t key_of(const char *kind, const char *user, const char *addr)
{
	uint64_t h = fnv1a(0xcbf29ce484222325ull, kind);
	h = fnv1a(h, user ? user : "");
	h = fnv1a(h, addr ? addr : "?");
	return h ? h : 1;
}

/* The slot of key, or NULL; with create, an empty slot of the probe window
 * or else its oldest, taken over. */
static struct slot *find(struct login_guard *g, uint64_t key, bool create)
{
	struct slot *victim = NULL;
	for (unsigned i = 0; i < RS_LIMIT_LOGIN_PROBE; i++) {
		struct slot *s = &g->slots[(key + i) % RS_LIMIT_LOGIN_TRACKED];
		if (s->key == key)
			return s;
		if (!victim || (victim->key && (!s->key || s->last < victim->last)))
			victim = s;
	}
	if (!create)
		return NULL;
	memset(victim, 0, sizeof(*victim));
	victim->key = key;
	return victim;
}

/* Seconds a key waits after its last failure: none for the first free
 * ones, then 1, 2, 4 ... capped. */
static time_t backoff(unsigned failures, unsigned free_failures)
{
	if (failures <= free_failures)
		return 0;
	unsigned shift = failures - free_failures - 1;
	return shift >= 16 || ((time_t)1 << shift) > RS_LIMIT_LOGIN_BACKOFF_MAX_S ? RS_LIMIT_LOGIN_BACKOFF_MAX_S
										     : (time_t)1 << shift;
}

bool login_guard_allow(struct login_guard *g, const char *user, const char *addr, time_t now, unsigned *retry_s)
{
	uint64_t keys[2] = {key_of("a", NULL, addr), key_of("u", user, addr)};
	time_t until = 0;
	pthread_mutex_lock(&g->mu);
	for (int k = 0; k < 2; k++) {
		struct slot *s = find(g, keys[k], false);
		if (s && s->until > until)
			until = s->until;
	}
	pthread_mutex_unlock(&g->mu);
	if (until <= now)
		return true;
	*retry_s = (unsigned)(until - now);
	return false;
}

void login_guard_failed(struct login_guard *g, const char *user, const char *addr, time_t now)
{
	/* an address gets more free tries than one user at it (an office
	 * behind one NAT address) */
	static const unsigned free_failures[2] = {RS_LIMIT_LOGIN_FREE_FAILURES_ADDR, RS_LIMIT_LOGIN_FREE_FAILURES};
	uint64_t keys[2] = {key_of("a", NULL, addr), key_of("u", user, addr)};
	pthread_mutex_lock(&g->mu);
	for (int k = 0; k < 2; k++) {
		struct slot *s = find(g, keys[k], true);
		if (now - s->last > RS_LIMIT_LOGIN_FORGET_S)
			s->failures = 0; /* an old streak is forgiven */
		s->failures++;
		s->last = now;
		s->until = now + backoff(s->failures, free_failures[k]);
	}
	pthread_mutex_unlock(&g->mu);
}

void login_guard_succeeded(struct login_guard *g, const char *user, const char *addr)
{
	pthread_mutex_lock(&g->mu);
	struct slot *s = find(g, key_of("u", user, addr), false);
	if (s)
		memset(s, 0, sizeof(*s));
	pthread_mutex_unlock(&g->mu);
}
