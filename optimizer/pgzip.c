/* pgzip: parallel, deterministic gzip (see pgzip.h). The writer fills the
 * slot at `tail`, hands it to the workers, and emits finished slots from
 * `head` in order; a slot is reused only after it was emitted, so at most
 * nslots chunks are in memory. Workers take submitted slots in sequence
 * order under the lock and compress outside it, each with its own
 * libdeflate compressor. Only the writer's thread calls `next`. */
#include "pgzip.h"

#include "rs_limits.h"

#include <libdeflate.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct slot {
	uint8_t *in, *out;
	size_t in_len, out_len;
	bool done;
};

struct pgz {
	struct stream_sink base;
	struct stream_sink *next;
	int level;
	size_t chunk, out_cap;
	struct slot *slots;
	unsigned nslots;
	uint64_t head;     /* next sequence number to emit */
	uint64_t tail;     /* sequence number of the slot being filled */
	uint64_t taken;    /* next submitted sequence number a worker takes */
	bool any;          /* a chunk was submitted (an empty input still gets one member) */
	pthread_t *th;
	unsigned nthreads; /* started */
	struct libdeflate_compressor *own; /* threads == 0: the writer compresses */
	pthread_mutex_t mu;
	pthread_cond_t work, done;
	bool stop;
	bool failed; /* a compression failed (out of room: cannot happen with the bound) */
};

static void compress_slot(struct pgz *z, struct libdeflate_compressor *c, struct slot *s)
{
	s->out_len = libdeflate_gzip_compress(c, s->in, s->in_len, s->out, z->out_cap);
}

static void *worker(void *arg)
{
	struct pgz *z = arg;
	struct libdeflate_compressor *c = libdeflate_alloc_compressor(z->level);
	pthread_mutex_lock(&z->mu);
	for (;;) {
		while (!z->stop && z->taken >= z->tail)
			pthread_cond_wait(&z->work, &z->mu);
		if (z->stop)
			break;
		struct slot *s = &z->slots[z->taken % z->nslots];
		z->taken++;
		pthread_mutex_unlock(&z->mu);
		if (c)
			compress_slot(z, c, s);
		pthread_mutex_lock(&z->mu);
		if (!c || s->out_len == 0)
			z->failed = true;
		s->done = true;
		pthread_cond_broadcast(&z->done);
	}
	pthread_mutex_unlock(&z->mu);
	libdeflate_free_compressor(c);
	return NULL;
}

/* Emit the slot at head once it is done (waiting when wait), in order. */
static enum rs_code emit(struct pgz *z, bool wait, struct rs_err *err)
{
	while (z->head < z->tail) {
		struct slot *s = &z->slots[z->head % z->nslots];
		pthread_mutex_lock(&z->mu);
		while (wait && !s->done && !z->failed)
			pthread_cond_wait(&z->done, &z->mu);
		bool ready = s->done, failed = z->failed;
		pthread_mutex_unlock(&z->mu);
		if (failed)
			return rs_err_set(err, RS_NOMEM, "gzip: compressing a chunk failed (out of memory)");
		if (!ready)
			return RS_OK;
		enum rs_code rc = stream_write(z->next, s->out, s->out_len, err);
		if (rc)
			return rc;
		s->done = false;
		s->in_len = s->out_len = 0;
		z->head++;
	}
	return RS_OK;
}

/* Hand the slot being filled to the workers (or compress it here). */
static enum rs_code submit(struct pgz *z, struct rs_err *err)
{
	struct slot *s = &z->slots[z->tail % z->nslots];
	z->any = true;
	if (z->own) {
		compress_slot(z, z->own, s);
		if (s->out_len == 0)
			return rs_err_set(err, RS_NOMEM, "gzip: compressing a chunk failed");
		s->done = true;
		z->tail++;
		return emit(z, true, err);
	}
	pthread_mutex_lock(&z->mu);
	z->tail++;
	pthread_cond_signal(&z->work);
	pthread_mutex_unlock(&z->mu);
	/* the next slot to fill must have been emitted */
	if (z->tail - z->head >= z->nslots)
		return emit(z, true, err);
	return emit(z, false, err);
}

static enum rs_code pgz_write(struct stream_sink *self, const void *buf, size_t len, struct rs_err *err)
{
	struct pgz *z = (struct pgz *)self;
	const uint8_t *p = buf;
	while (len > 0) {
		struct slot *s = &z->slots[z->tail % z->nslots];
		size_t n = z->chunk - s->in_len;
		if (n > len)
			n = len;
		memcpy(s->in + s->in_len, p, n);
		s->in_len += n;
		p += n;
		len -= n;
		if (s->in_len == z->chunk) {
			enum rs_code rc = submit(z, err);
			if (rc)
				return rc;
		}
	}
	return RS_OK;
}

static enum rs_code pgz_finish(struct stream_sink *self, struct rs_err *err)
{
	struct pgz *z = (struct pgz *)self;
	enum rs_code rc = RS_OK;
	if (z->slots[z->tail % z->nslots].in_len > 0 || !z->any)
		rc = submit(z, err);
	if (rc == RS_OK)
		rc = emit(z, true, err);
	if (rc)
		return rc;
	return stream_finish(z->next, err);
}

static void pgz_free(struct stream_sink *self)
{
	struct pgz *z = (struct pgz *)self;
	if (!z)
		return;
	pthread_mutex_lock(&z->mu);
	z->stop = true;
	pthread_cond_broadcast(&z->work);
	pthread_mutex_unlock(&z->mu);
	for (unsigned i = 0; i < z->nthreads; i++)
		pthread_join(z->th[i], NULL);
	free(z->th);
	libdeflate_free_compressor(z->own);
	if (z->slots)
		for (unsigned i = 0; i < z->nslots; i++) {
			free(z->slots[i].in);
			free(z->slots[i].out);
		}
	free(z->slots);
	pthread_cond_destroy(&z->work);
	pthread_cond_destroy(&z->done);
	pthread_mutex_destroy(&z->mu);
	free(z);
}

static const struct stream_sink_ops pgz_ops = {"gzip", pgz_write, pgz_finish, pgz_free};

enum rs_code pgzip_encoder_new(struct stream_sink **out, int level, unsigned threads, size_t chunk,
                               struct stream_sink *next, struct rs_err *err)
{
	if (level < 1 || level > 9)
		return rs_err_set(err, RS_BAD_INPUT, "gzip: level %d is outside 1..9", level);
	if (threads > RS_LIMIT_GZIP_THREADS_MAX)
		return rs_err_set(err, RS_BAD_INPUT, "gzip: %u threads, limit is %d", threads, RS_LIMIT_GZIP_THREADS_MAX);
	struct pgz *z = calloc(1, sizeof(*z));
	if (!z)
		return rs_err_set(err, RS_NOMEM, "gzip: out of memory for an encoder");
	stream_sink_init(&z->base, &pgz_ops);
	pthread_mutex_init(&z->mu, NULL);
	pthread_cond_init(&z->work, NULL);
	pthread_cond_init(&z->done, NULL);
	z->next = next;
	z->level = level;
	z->chunk = chunk ? chunk : RS_LIMIT_GZIP_CHUNK_BYTES;
	unsigned workers = threads > 1 ? threads : 0;
	z->nslots = workers ? 2 * workers : 1;
	enum rs_code rc = RS_OK;
	if (!workers && !(z->own = libdeflate_alloc_compressor(level)))
		rc = rs_err_set(err, RS_NOMEM, "gzip: out of memory for a compressor");
	if (rc == RS_OK) {
		/* the bound is the compressor's, the same for every level and thread */
		z->out_cap = libdeflate_gzip_compress_bound(NULL, z->chunk);
		z->slots = calloc(z->nslots, sizeof(*z->slots));
		if (!z->slots)
			rc = rs_err_set(err, RS_NOMEM, "gzip: out of memory for chunk slots");
	}
	for (unsigned i = 0; rc == RS_OK && i < z->nslots; i++)
		if (!(z->slots[i].in = malloc(z->chunk)) || !(z->slots[i].out = malloc(z->out_cap)))
			rc = rs_err_set(err, RS_NOMEM, "gzip: out of memory for chunk slots");
	if (rc == RS_OK && workers && !(z->th = calloc(workers, sizeof(*z->th))))
		rc = rs_err_set(err, RS_NOMEM, "gzip: out of memory for threads");
	for (unsigned i = 0; rc == RS_OK && i < workers; i++) {
		if (pthread_create(&z->th[i], NULL, worker, z) != 0)
			rc = rs_err_set(err, RS_NOMEM, "gzip: cannot start a compression thread");
		else
			z->nthreads++;
	}
	if (rc) {
		pgz_free(&z->base);
		return rc;
	}
	*out = &z->base;
	return RS_OK;
}
