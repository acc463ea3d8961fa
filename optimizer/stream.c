/* stream: the stage base (poisoning after failure, finish-once) and the
 * terminal sinks: file descriptor, digest, count and capped memory. The
 * codec and tar stages build on the base; nothing here knows formats. */
#include "stream.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void stream_sink_init(struct stream_sink *s, const struct stream_sink_ops *ops)
{
	s->ops = ops;
	s->failed = RS_OK;
	s->finished = false;
}

/* A poisoned sink repeats its code; it fills err only if the caller's err
 * carries no message yet, so the first message still wins. */
static enum rs_code repeat_failure(struct stream_sink *s, struct rs_err *err)
{
	if (err && err->code == RS_OK)
		return rs_err_set(err, s->failed, "%s: stream already failed", s->ops->name);
	return s->failed;
}

enum rs_code stream_write(struct stream_sink *s, const void *buf, size_t len, struct rs_err *err)
{
	assert(s);
	if (s->failed)
		return repeat_failure(s, err);
	assert(!s->finished);
	enum rs_code rc = s->ops->write(s, buf, len, err);
	if (rc)
		s->failed = rc;
	return rc;
}

enum rs_code stream_finish(struct stream_sink *s, struct rs_err *err)
{
	assert(s);
	if (s->failed)
		return repeat_failure(s, err);
	assert(!s->finished);
	s->finished = true;
	enum rs_code rc = s->ops->finish(s, err);
	if (rc)
		s->failed = rc;
	return rc;
}

void stream_free(struct stream_sink *s)
{
	if (s)
		s->ops->free(s);
}

enum rs_code stream_pump_fd(struct stream_sink *s, int fd, struct rs_err *err)
{
	uint8_t *buf = malloc(STREAM_BUF_SIZE);
	if (!buf)
		return rs_err_set(err, RS_NOMEM, "stream: out of memory for a %u byte read buffer",
				  STREAM_BUF_SIZE);
	enum rs_code rc = RS_OK;
	for (;;) {
		ssize_t n = read(fd, buf, STREAM_BUF_SIZE);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = rs_err_set(err, RS_IO, "stream: read from fd %d: %s", fd, strerror(errno));
			break;
		}
		if (n == 0)
			break;
		rc = stream_write(s, buf, (size_t)n, err);
		if (rc)
			break;
	}
	free(buf);
	return rc;
}

/* ---- fd sink ---------------------------------------------------------- */

struct fd_sink {
	struct stream_sink base;
	int fd;
};

static enum rs_code fd_write(struct stream_sink *self, const void *buf, size_t len,
			     struct rs_err *err)
{
	struct fd_sink *s = (struct fd_sink *)self;
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = write(s->fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return rs_err_set(err, RS_IO, "stream: write to fd %d: %s", s->fd,
					  strerror(errno));
		p += n;
		len -= (size_t)n;
	}
	return RS_OK;
}

static enum rs_code fd_finish(struct stream_sink *self, struct rs_err *err)
{
	(void)self;
	(void)err;
	return RS_OK;
}

static void plain_free(struct stream_sink *self)
{
	free(self);
}

static const struct stream_sink_ops fd_ops = { "fd", fd_write, fd_finish, plain_free };

enum rs_code stream_fd_sink_new(struct stream_sink **out, int fd, struct rs_err *err)
{
	struct fd_sink *s = calloc(1, sizeof(*s));
	if (!s)
		return rs_err_set(err, RS_NOMEM, "stream: out of memory for an fd sink");
	stream_sink_init(&s->base, &fd_ops);
	s->fd = fd;
	*out = &s->base;
	return RS_OK;
}

/* ---- digest sink ------------------------------------------------------ */

struct digest_sink {
	struct stream_sink base;
	struct digest_ctx *d;
	struct stream_sink *next;
};

static enum rs_code digest_write(struct stream_sink *self, const void *buf, size_t len,
				 struct rs_err *err)
{
	struct digest_sink *s = (struct digest_sink *)self;
	if (len)
		digest_update(s->d, buf, len);
	return s->next ? stream_write(s->next, buf, len, err) : RS_OK;
}

static enum rs_code digest_finish(struct stream_sink *self, struct rs_err *err)
{
	struct digest_sink *s = (struct digest_sink *)self;
	return s->next ? stream_finish(s->next, err) : RS_OK;
}

static void digest_sink_free(struct stream_sink *self)
{
	struct digest_sink *s = (struct digest_sink *)self;
	digest_free(s->d);
	free(s);
}

static const struct stream_sink_ops digest_ops = { "digest", digest_write, digest_finish,
						   digest_sink_free };

enum rs_code stream_digest_sink_new(struct stream_sink **out, struct stream_sink *next,
				    struct rs_err *err)
{
	struct digest_sink *s = calloc(1, sizeof(*s));
	if (!s)
		return rs_err_set(err, RS_NOMEM, "stream: out of memory for a digest sink");
	s->d = digest_new();
	if (!s->d) {
		free(s);
		return rs_err_set(err, RS_NOMEM, "stream: out of memory for a SHA-256 context");
	}
	stream_sink_init(&s->base, &digest_ops);
	s->next = next;
	*out = &s->base;
	return RS_OK;
}

void stream_digest_sink_result(struct stream_sink *self, char digest_out[DIGEST_STR_SIZE],
			       uint64_t *size_out)
{
	assert(self->ops == &digest_ops);
	struct digest_sink *s = (struct digest_sink *)self;
	digest_final(s->d, digest_out);
	if (size_out)
		*size_out = digest_count(s->d);
}

/* ---- count sink ------------------------------------------------------- */

struct count_sink {
	struct stream_sink base;
	uint64_t n;
	struct stream_sink *next;
};

static enum rs_code count_write(struct stream_sink *self, const void *buf, size_t len,
				struct rs_err *err)
{
	struct count_sink *s = (struct count_sink *)self;
	s->n += len;
	return s->next ? stream_write(s->next, buf, len, err) : RS_OK;
}

static enum rs_code count_finish(struct stream_sink *self, struct rs_err *err)
{
	struct count_sink *s = (struct count_sink *)self;
	return s->next ? stream_finish(s->next, err) : RS_OK;
}

static const struct stream_sink_ops count_ops = { "count", count_write, count_finish,
						  plain_free };

enum rs_code stream_count_sink_new(struct stream_sink **out, struct stream_sink *next,
				   struct rs_err *err)
{
	struct count_sink *s = calloc(1, sizeof(*s));
	if (!s)
		return rs_err_set(err, RS_NOMEM, "stream: out of memory for a count sink");
	stream_sink_init(&s->base, &count_ops);
	s->next = next;
	*out = &s->base;
	return RS_OK;
}

uint64_t stream_count_sink_bytes(const struct stream_sink *self)
{
	assert(self->ops == &count_ops);
	return ((const struct count_sink *)self)->n;
}

/* ---- memory sink ------------------------------------------------------ */

struct mem_sink {
	struct stream_sink base;
	uint8_t *buf;
	size_t len, alloc, cap;
	char what[64];
};

static enum rs_code mem_write(struct stream_sink *self, const void *buf, size_t len,
			      struct rs_err *err)
{
	struct mem_sink *s = (struct mem_sink *)self;
	if (len > s->cap - s->len)
		return rs_err_set(err, RS_TOO_LARGE, "%s is more than %zu bytes", s->what, s->cap);
	if (s->len + len + 1 > s->alloc) {
		size_t n = s->alloc ? s->alloc : 4096;
		while (n < s->len + len + 1)
			n *= 2;
		if (n > s->cap + 1)
			n = s->cap + 1;
		uint8_t *p = realloc(s->buf, n);
		if (!p)
			return rs_err_set(err, RS_NOMEM, "%s: out of memory for %zu bytes", s->what, n);
		s->buf = p;
		s->alloc = n;
	}
	if (len)
		memcpy(s->buf + s->len, buf, len);
	s->len += len;
	s->buf[s->len] = 0;
	return RS_OK;
}

static enum rs_code mem_finish(struct stream_sink *self, struct rs_err *err)
{
	(void)self;
	(void)err;
	return RS_OK;
}

static void mem_free(struct stream_sink *self)
{
	struct mem_sink *s = (struct mem_sink *)self;
	free(s->buf);
	free(s);
}

static const struct stream_sink_ops mem_ops = { "memory", mem_write, mem_finish, mem_free };

enum rs_code stream_mem_sink_new(struct stream_sink **out, size_t cap, const char *what,
				 struct rs_err *err)
{
	struct mem_sink *s = calloc(1, sizeof(*s));
	if (!s)
		return rs_err_set(err, RS_NOMEM, "stream: out of memory for a memory sink");
	stream_sink_init(&s->base, &mem_ops);
	s->cap = cap;
	size_t n = strlen(what ? what : "data");
	if (n >= sizeof(s->what))
		n = sizeof(s->what) - 1;
	memcpy(s->what, what ? what : "data", n);
	s->what[n] = 0;
	*out = &s->base;
	return RS_OK;
}

const uint8_t *stream_mem_sink_data(const struct stream_sink *self, size_t *len_out)
{
	assert(self->ops == &mem_ops);
	const struct mem_sink *s = (const struct mem_sink *)self;
	if (len_out)
		*len_out = s->len;
	return s->buf ? s->buf : (const uint8_t *)"";
}

uint8_t *stream_mem_sink_take(struct stream_sink *self, size_t *len_out)
{
	assert(self->ops == &mem_ops);
	struct mem_sink *s = (struct mem_sink *)self;
	uint8_t *p = s->buf;
	if (len_out)
		*len_out = s->len;
	s->buf = NULL;
	s->len = s->alloc = 0;
	return p;
}
