/* s3_memo: a small LRU of immutable objects for the s3 driver (s3_memo.h).
 * A table of fixed capacity, searched linearly (a few hundred entries of
 * short keys: cheaper than one network round trip by orders of magnitude);
 * each entry carries a use stamp, and the entry with the oldest stamp makes
 * room for a new one. */
#include "s3_memo.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct memo_entry {
	char *key;
	char *buf;
	size_t len;
	char *type;
	uint64_t used;
};

struct s3_memo {
	pthread_mutex_t lock;
	struct memo_entry *e;
	size_t cap, max_bytes, bytes;
	uint64_t clock;
};

struct s3_memo *s3_memo_new(size_t max_entries, size_t max_bytes)
{
	struct s3_memo *m = calloc(1, sizeof(*m));
	if (!m || !(m->e = calloc(max_entries ? max_entries : 1, sizeof(*m->e)))) {
		free(m);
		return NULL;
	}
	pthread_mutex_init(&m->lock, NULL);
	m->cap = max_entries ? max_entries : 1;
	m->max_bytes = max_bytes;
	return m;
}

static void entry_clear(struct s3_memo *m, struct memo_entry *e)
{
	if (!e->key)
		return;
	m->bytes -= e->len;
	free(e->key);
	free(e->buf);
	free(e->type);
	memset(e, 0, sizeof(*e));
}

void s3_memo_free(struct s3_memo *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->cap; i++)
		entry_clear(m, &m->e[i]);
	pthread_mutex_destroy(&m->lock);
	free(m->e);
	free(m);
}

static struct memo_entry *find(struct s3_memo *m, const char *key)
{
	for (size_t i = 0; i < m->cap; i++)
		if (m->e[i].key && strcmp(m->e[i].key, key) == 0)
			return &m->e[i];
	return NULL;
}

bool s3_memo_get(struct s3_memo *m, const char *key, char **out_buf, size_t *out_len, char **out_type)
{
	bool ok = false;
	pthread_mutex_lock(&m->lock);
	struct memo_entry *e = find(m, key);
	if (e) {
		char *b = malloc(e->len + 1);
		char *t = strdup(e->type);
		if (b && t) {
			memcpy(b, e->buf, e->len);
			b[e->len] = '\0';
			e->used = ++m->clock;
			*out_buf = b;
			*out_len = e->len;
			*out_type = t;
			ok = true;
		} else {
			free(b);
			free(t);
		}
	}
	pthread_mutex_unlock(&m->lock);
	return ok;
}

/* the free slot, else the least recently used one, cleared */
static struct memo_entry *victim(struct s3_memo *m)
{
	struct memo_entry *v = NULL;
	for (size_t i = 0; i < m->cap; i++) {
		if (!m->e[i].key)
			return &m->e[i];
		if (!v || m->e[i].used < v->used)
			v = &m->e[i];
	}
	entry_clear(m, v);
	return v;
}

void s3_memo_put(struct s3_memo *m, const char *key, const char *buf, size_t len, const char *type)
{
	if (len > m->max_bytes / 8)
		return;
	char *k = strdup(key), *b = malloc(len ? len : 1), *t = strdup(type ? type : "");
	if (!k || !b || !t) {
		free(k);
		free(b);
		free(t);
		return;
	}
	memcpy(b, buf, len);
	pthread_mutex_lock(&m->lock);
	struct memo_entry *e = find(m, key);
	if (e)
		entry_clear(m, e);
	while (m->bytes + len > m->max_bytes) {
		struct memo_entry *old = NULL;
		for (size_t i = 0; i < m->cap; i++)
			if (m->e[i].key && (!old || m->e[i].used < old->used))
				old = &m->e[i];
		if (!old)
			break;
		entry_clear(m, old);
	}
	e = victim(m);
	*e = (struct memo_entry){.key = k, .buf = b, .len = len, .type = t, .used = ++m->clock};
	m->bytes += len;
	pthread_mutex_unlock(&m->lock);
}

void s3_memo_drop(struct s3_memo *m, const char *key)
{
	pthread_mutex_lock(&m->lock);
	struct memo_entry *e = find(m, key);
	if (e)
		entry_clear(m, e);
	pthread_mutex_unlock(&m->lock);
}

void s3_memo_stats(struct s3_memo *m, size_t *entries, size_t *bytes)
{
	size_t n = 0;
	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < m->cap; i++)
		n += m->e[i].key != NULL;
	if (bytes)
		*bytes = m->bytes;
	pthread_mutex_unlock(&m->lock);
	if (entries)
		*entries = n;
}
