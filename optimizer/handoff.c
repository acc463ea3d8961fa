/* handoff: a stream stage that hands its input to a thread of its own,
 * which pushes it into the next stage (see handoff.h). Bytes are copied into
 * a fixed ring of HANDOFF_SLOTS buffers; the producer waits when the ring is
 * full, so memory never grows with the stream. Talks to stream.h only. */
#include "handoff.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HANDOFF_SLOTS 4
#define HANDOFF_SLOT_BYTES (256u * 1024)

struct handoff {
	struct stream_sink base;
	struct stream_sink *next;
	pthread_t th;
	bool started;
	pthread_mutex_t mu;
	pthread_cond_t cv_prod, cv_cons;
	uint8_t *slot[HANDOFF_SLOTS];
	size_t slot_len[HANDOFF_SLOTS];
	size_t head, count; /* published slots, consumed from head (under mu) */
	size_t tail, fill;  /* the slot being filled and its bytes (producer only) */
	bool eof;
	enum rs_code crc; /* next's failure, set under mu */
	struct rs_err cerr;
};

static void *run_consumer(void *arg)
{
	struct handoff *a = arg;
	pthread_mutex_lock(&a->mu);
	for (;;) {
		while (a->count == 0 && !a->eof)
			pthread_cond_wait(&a->cv_cons, &a->mu);
		if (a->count == 0)
			break;
		size_t k = a->head;
		bool failed = a->crc != RS_OK;
		pthread_mutex_unlock(&a->mu);
		enum rs_code rc = failed ? RS_OK : stream_write(a->next, a->slot[k], a->slot_len[k], &a->cerr);
		pthread_mutex_lock(&a->mu);
		if (rc != RS_OK)
			a->crc = rc;
		a->head = (a->head + 1) % HANDOFF_SLOTS;
		a->count--;
		pthread_cond_signal(&a->cv_prod);
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

static enum rs_code failure(struct handoff *a, struct rs_err *err)
{
	if (err)
		*err = a->cerr;
	return a->crc;
}

/* Publish the slot being filled (caller holds nothing). */
static void publish(struct handoff *a)
{
	pthread_mutex_lock(&a->mu);
	a->slot_len[a->tail] = a->fill;
	a->count++;
	a->fill = 0;
	pthread_cond_signal(&a->cv_cons);
	pthread_mutex_unlock(&a->mu);
}

static enum rs_code sink_write(struct stream_sink *self, const void *buf, size_t len, struct rs_err *err)
{
	struct handoff *a = (struct handoff *)self;
	const uint8_t *b = buf;
	while (len > 0) {
		if (a->fill == 0) { /* a fresh slot: wait for room */
			pthread_mutex_lock(&a->mu);
			while (a->count == HANDOFF_SLOTS && a->crc == RS_OK)
				pthread_cond_wait(&a->cv_prod, &a->mu);
			enum rs_code crc = a->crc;
			a->tail = (a->head + a->count) % HANDOFF_SLOTS; /* not published: the thread leaves it alone */
			pthread_mutex_unlock(&a->mu);
			if (crc != RS_OK)
				return failure(a, err);
		}
		size_t take = HANDOFF_SLOT_BYTES - a->fill < len ? HANDOFF_SLOT_BYTES - a->fill : len;
		memcpy(a->slot[a->tail] + a->fill, b, take);
		a->fill += take;
		b += take;
		len -= take;
		if (a->fill == HANDOFF_SLOT_BYTES)
			publish(a);
	}
	return RS_OK;
}

/* Publish what is pending, wait until the thread has taken everything, stop it. */
static void stop_consumer(struct handoff *a)
{
	if (!a->started)
		return;
	if (a->fill > 0)
		publish(a);
	pthread_mutex_lock(&a->mu);
	a->eof = true;
	pthread_cond_signal(&a->cv_cons);
	pthread_mutex_unlock(&a->mu);
	pthread_join(a->th, NULL);
	a->started = false;
}

static enum rs_code sink_finish(struct stream_sink *self, struct rs_err *err)
{
	struct handoff *a = (struct handoff *)self;
	stop_consumer(a);
	if (a->crc != RS_OK)
		return failure(a, err);
	return stream_finish(a->next, err);
}

static void sink_free(struct stream_sink *self)
{
	struct handoff *a = (struct handoff *)self;
	stop_consumer(a);
	for (size_t k = 0; k < HANDOFF_SLOTS; k++)
		free(a->slot[k]);
	pthread_cond_destroy(&a->cv_prod);
	pthread_cond_destroy(&a->cv_cons);
	pthread_mutex_destroy(&a->mu);
	free(a);
}

static const struct stream_sink_ops handoff_ops = {"handoff", sink_write, sink_finish, sink_free};

enum rs_code handoff_new(struct stream_sink **out, struct stream_sink *next, struct rs_err *err)
{
	struct handoff *a = calloc(1, sizeof(*a));
	if (!a)
		return rs_err_set(err, RS_NOMEM, "out of memory");
	stream_sink_init(&a->base, &handoff_ops);
	a->next = next;
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv_prod, NULL);
	pthread_cond_init(&a->cv_cons, NULL);
	bool ok = true;
	for (size_t k = 0; k < HANDOFF_SLOTS; k++)
		ok = ok && (a->slot[k] = malloc(HANDOFF_SLOT_BYTES)) != NULL;
	if (ok && pthread_create(&a->th, NULL, run_consumer, a) == 0)
		a->started = true;
	if (!a->started) {
		sink_free(&a->base);
		return ok ? rs_err_set(err, RS_IO, "cannot start a scan thread") : rs_err_set(err, RS_NOMEM, "out of memory");
	}
	*out = &a->base;
	return RS_OK;
}

enum rs_code handoff_settle(struct stream_sink *s, struct rs_err *err)
{
	if (!s || s->ops != &handoff_ops)
		return RS_OK;
	struct handoff *a = (struct handoff *)s;
	stop_consumer(a);
	return a->crc != RS_OK ? failure(a, err) : RS_OK;
}
