/* tar_sparse: turns the stored chunks of a GNU sparse entry back into the
 * file's bytes (see tar_sparse.h). The map comes from the raw header bytes
 * tar_read reported: the old GNU header and its extension blocks, or the
 * GNU.sparse.* records of the entry's pax headers; for pax 1.0 it is parsed
 * from the front of the data as it streams in. Only the pipeline's
 * hard-link materialization uses it; tar_read itself passes sparse entries
 * through untouched. */
#include "tar_sparse.h"

#include "rs_limits.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct chunk {
	uint64_t off, len;
};

struct tar_sparse {
	const char *what;  /* "sparse entry '<path>'" for messages (owned) */
	struct chunk *c;
	size_t n, cap;
	uint64_t real_size;
	uint64_t entry_size; /* e->size: stored bytes, with the 1.0 map */
	uint64_t stored;     /* data bytes the map holds */
	/* pax 1.0: the map at the front of the data */
	bool map_in_data;
	uint64_t map_numbers_left; /* numbers still to read; count first */
	bool have_count;
	uint64_t num;        /* number being read */
	size_t num_digits;
	uint64_t map_bytes;  /* map text read so far */
	uint64_t map_skip;   /* padding after the map still to skip */
	/* expansion */
	size_t ci;        /* chunk being filled */
	uint64_t cdone;   /* bytes of it written */
	uint64_t emitted; /* expanded bytes written */
	uint64_t data_in; /* stored data bytes after the map */
};

static const uint8_t zeros[64 * 1024];

static enum rs_code bad(struct tar_sparse *s, const char *why, struct rs_err *err)
{
	return rs_err_set(err, RS_BAD_INPUT, "tar: %s: %s", s->what, why);
}

static enum rs_code add_chunk(struct tar_sparse *s, uint64_t off, uint64_t len, struct rs_err *err)
{
	if (s->n == s->cap) {
		size_t nc = s->cap ? 2 * s->cap : 16;
		struct chunk *q = realloc(s->c, nc * sizeof(*q));
		if (!q)
			return rs_err_set(err, RS_NOMEM, "tar: out of memory for a sparse map");
		s->c = q;
		s->cap = nc;
	}
	s->c[s->n].off = off;
	s->c[s->n].len = len;
	s->n++;
	return RS_OK;
}

/* Chunks ordered, disjoint and inside the real size; their lengths add up
 * to the stored data. */
static enum rs_code check_map(struct tar_sparse *s, uint64_t stored, struct rs_err *err)
{
	uint64_t end = 0, sum = 0;
	for (size_t i = 0; i < s->n; i++) {
		const struct chunk *c = &s->c[i];
		if (c->off < end)
			return bad(s, "sparse map chunks overlap or are out of order", err);
		if (c->off > s->real_size || c->len > s->real_size - c->off)
			return bad(s, "sparse map chunk beyond the real size", err);
		end = c->off + c->len;
		sum += c->len;
	}
	if (sum != stored)
		return rs_err_set(err, RS_BAD_INPUT, "tar: %s: sparse map holds %" PRIu64 " bytes, the entry stores %" PRIu64,
				  s->what, sum, stored);
	s->stored = stored;
	return RS_OK;
}

/* The 24-byte old GNU map entries at p (count of them); an entry whose
 * offset field starts with NUL ends the map (*ended). */
static enum rs_code old_gnu_entries(struct tar_sparse *s, const uint8_t *p, size_t count, bool *ended,
				    struct rs_err *err)
{
	for (size_t i = 0; i < count && !*ended; i++) {
		const uint8_t *f = p + i * 24;
		if (f[0] == 0) {
			*ended = true;
			break;
		}
		int64_t off, len;
		if (!tar_parse_number(f, 12, &off) || !tar_parse_number(f + 12, 12, &len) || off < 0 || len < 0)
			return bad(s, "invalid old GNU sparse map entry", err);
		enum rs_code rc = add_chunk(s, (uint64_t)off, (uint64_t)len, err);
		if (rc != RS_OK)
			return rc;
	}
	return RS_OK;
}

/* pax 0.1 "off,len,off,len". */
static enum rs_code map01(struct tar_sparse *s, const char *v, size_t n, struct rs_err *err)
{
	size_t i = 0;
	uint64_t pair[2];
	int k = 0;
	while (i < n) {
		size_t j = i;
		while (j < n && v[j] != ',')
			j++;
		if (!tar_parse_decimal(v + i, j - i, &pair[k]))
			return bad(s, "invalid GNU.sparse.map", err);
		if (++k == 2) {
			enum rs_code rc = add_chunk(s, pair[0], pair[1], err);
			if (rc != RS_OK)
				return rc;
			k = 0;
		}
		i = j + 1;
	}
	if (k != 0)
		return bad(s, "GNU.sparse.map has an odd count of numbers", err);
	return RS_OK;
}

static bool key_is(const char *k, size_t kn, const char *lit)
{
	size_t n = strlen(lit);
	return kn == n && memcmp(k, lit, n) == 0;
}

/* The GNU.sparse.* records of one pax payload. */
static enum rs_code pax_map(struct tar_sparse *s, const char *p, size_t n, bool *have_map, struct rs_err *err)
{
	size_t pos = 0;
	const char *k, *v;
	size_t kn, vn;
	enum rs_code rc = RS_OK;
	while (rc == RS_OK && tar_pax_next(p, n, &pos, &k, &kn, &v, &vn) == TAR_PAX_RECORD) {
		uint64_t x;
		if (key_is(k, kn, "GNU.sparse.major")) {
			s->map_in_data = vn == 1 && v[0] == '1';
		} else if (key_is(k, kn, "GNU.sparse.map")) {
			s->n = 0;
			rc = map01(s, v, vn, err);
			*have_map = true;
		} else if (key_is(k, kn, "GNU.sparse.offset")) {
			if (!tar_parse_decimal(v, vn, &x))
				return bad(s, "invalid GNU.sparse.offset", err);
			rc = add_chunk(s, x, 0, err);
			*have_map = true;
		} else if (key_is(k, kn, "GNU.sparse.numbytes")) {
			if (!tar_parse_decimal(v, vn, &x) || s->n == 0)
				return bad(s, "GNU.sparse.numbytes without an offset", err);
			s->c[s->n - 1].len = x;
		}
	}
	return rc;
}

/* Walk the raw header blocks: extension headers (their payloads), then the
 * main header and, for 'S', its extension blocks. */
static enum rs_code read_map(struct tar_sparse *s, const uint8_t *raw, size_t raw_len, struct rs_err *err)
{
	size_t off = 0;
	bool have_map = false;
	while (off + TAR_BLOCK <= raw_len) {
		const uint8_t *h = raw + off;
		char t = (char)h[156];
		int64_t size;
		if (t == 'x' || t == 'X' || t == 'g' || t == 'L' || t == 'K') {
			if (!tar_parse_number(h + 124, 12, &size) || size < 0 ||
			    (uint64_t)size > raw_len - off - TAR_BLOCK)
				return bad(s, "extension header size out of range", err);
			if (t == 'x' || t == 'X') {
				enum rs_code rc = pax_map(s, (const char *)h + TAR_BLOCK, (size_t)size, &have_map, err);
				if (rc != RS_OK)
					return rc;
			}
			off += TAR_BLOCK + (((size_t)size + TAR_BLOCK - 1) / TAR_BLOCK) * TAR_BLOCK;
			continue;
		}
		if (t != TAR_TYPE_GNU_SPARSE)
			break;
		/* old GNU: 4 entries at 386, "isextended" at 482, then blocks of
		 * 21 entries with "isextended" at 504 */
		s->n = 0;
		bool ended = false;
		enum rs_code rc = old_gnu_entries(s, h + 386, 4, &ended, err);
		bool more = h[482] != 0;
		off += TAR_BLOCK;
		while (rc == RS_OK && more) {
			if (off + TAR_BLOCK > raw_len)
				return bad(s, "old GNU sparse extension block missing", err);
			rc = old_gnu_entries(s, raw + off, 21, &ended, err);
			more = raw[off + 504] != 0;
			off += TAR_BLOCK;
		}
		return rc;
	}
	if (s->map_in_data)
		return RS_OK;
	if (!have_map)
		return bad(s, "sparse entry without a sparse map", err);
	return RS_OK;
}

enum rs_code tar_sparse_new(struct tar_sparse **out, const struct tar_entry *e, const void *raw, size_t raw_len,
			    struct rs_err *err)
{
	*out = NULL;
	struct tar_sparse *s = calloc(1, sizeof(*s));
	size_t wl = strlen(e->path) + 32;
	char *what = malloc(wl);
	if (!s || !what) {
		free(s);
		free(what);
		return rs_err_set(err, RS_NOMEM, "tar: out of memory for a sparse map");
	}
	snprintf(what, wl, "sparse entry '%s'", e->path);
	s->what = what;
	s->real_size = e->real_size;
	enum rs_code rc = read_map(s, raw, raw_len, err);
	if (rc == RS_OK && !s->map_in_data)
		rc = check_map(s, e->size, err);
	if (rc == RS_OK && s->real_size > RS_LIMIT_EXPANSION_MIN_BYTES &&
	    s->real_size / RS_LIMIT_EXPANSION_RATIO > e->size)
		rc = rs_err_set(err, RS_TOO_LARGE,
				"tar: %s: real size %" PRIu64 " is more than %u times its %" PRIu64 " stored bytes (RS_LIMIT_EXPANSION_RATIO)",
				s->what, s->real_size, RS_LIMIT_EXPANSION_RATIO, e->size);
	if (rc != RS_OK) {
		tar_sparse_free(s);
		return rc;
	}
	s->entry_size = e->size;
	s->map_numbers_left = 1; /* the count */
	s->map_skip = s->map_in_data ? UINT64_MAX : 0; /* unknown until the map ends */
	*out = s;
	return RS_OK;
}

static enum rs_code put_zeros(struct stream_sink *out, uint64_t n, struct rs_err *err)
{
	while (n > 0) {
		size_t k = n > sizeof(zeros) ? sizeof(zeros) : (size_t)n;
		enum rs_code rc = stream_write(out, zeros, k, err);
		if (rc != RS_OK)
			return rc;
		n -= k;
	}
	return RS_OK;
}

/* pax 1.0: consume map text from the front of the data; *used says how
 * many bytes of buf it took. */
static enum rs_code parse_map_text(struct tar_sparse *s, const char *buf, size_t len, size_t *used,
				   uint64_t stored_total, struct rs_err *err)
{
	size_t i = 0;
	while (i < len && s->map_numbers_left > 0) {
		char ch = buf[i++];
		if (++s->map_bytes > RS_LIMIT_TAR_EXT_MAX_BYTES)
			return rs_err_set(err, RS_TOO_LARGE, "tar: %s: sparse map is more than %u bytes (RS_LIMIT_TAR_EXT_MAX_BYTES)",
					  s->what, RS_LIMIT_TAR_EXT_MAX_BYTES);
		if (ch >= '0' && ch <= '9' && s->num_digits < 19) {
			s->num = s->num * 10 + (uint64_t)(ch - '0');
			s->num_digits++;
			continue;
		}
		if (ch != '\n' || s->num_digits == 0)
			return bad(s, "malformed pax 1.0 sparse map", err);
		uint64_t v = s->num;
		s->num = 0;
		s->num_digits = 0;
		s->map_numbers_left--;
		enum rs_code rc = RS_OK;
		if (!s->have_count) {
			s->have_count = true;
			if (v > RS_LIMIT_TAR_EXT_MAX_BYTES / 4)
				return bad(s, "pax 1.0 sparse map count out of range", err);
			s->map_numbers_left = 2 * v;
		} else if (s->map_numbers_left % 2 == 1) {
			rc = add_chunk(s, v, 0, err);
		} else {
			s->c[s->n - 1].len = v;
		}
		if (rc != RS_OK)
			return rc;
	}
	if (s->map_numbers_left == 0 && s->map_skip == UINT64_MAX) {
		uint64_t padded = (s->map_bytes + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
		if (padded > stored_total)
			return bad(s, "pax 1.0 sparse map runs past the data", err);
		s->map_skip = padded - s->map_bytes;
		enum rs_code rc = check_map(s, stored_total - padded, err);
		if (rc != RS_OK)
			return rc;
	}
	*used = i;
	return RS_OK;
}

enum rs_code tar_sparse_write(struct tar_sparse *s, const void *buf, size_t len, struct stream_sink *out,
			      struct rs_err *err)
{
	const char *p = buf;
	if (s->map_in_data && s->map_skip != 0) {
		size_t used = 0;
		if (s->map_skip == UINT64_MAX) {
			enum rs_code rc = parse_map_text(s, p, len, &used, s->entry_size, err);
			if (rc != RS_OK)
				return rc;
		}
		p += used;
		len -= used;
		if (s->map_skip != UINT64_MAX) {
			size_t k = len < s->map_skip ? len : (size_t)s->map_skip;
			for (size_t i = 0; i < k; i++)
				if (p[i] != 0)
					return bad(s, "non-zero padding after the pax 1.0 sparse map", err);
			s->map_skip -= k;
			p += k;
			len -= k;
		}
		if (s->map_skip != 0)
			return RS_OK;
	}
	while (len > 0) {
		while (s->ci < s->n && s->cdone == s->c[s->ci].len) {
			s->ci++;
			s->cdone = 0;
		}
		if (s->ci >= s->n)
			return bad(s, "more data than the sparse map holds", err);
		const struct chunk *c = &s->c[s->ci];
		enum rs_code rc = put_zeros(out, c->off + s->cdone - s->emitted, err);
		s->emitted = c->off + s->cdone;
		size_t k = len < c->len - s->cdone ? len : (size_t)(c->len - s->cdone);
		if (rc == RS_OK)
			rc = stream_write(out, p, k, err);
		if (rc != RS_OK)
			return rc;
		s->cdone += k;
		s->emitted += k;
		s->data_in += k;
		p += k;
		len -= k;
	}
	return RS_OK;
}

enum rs_code tar_sparse_end(struct tar_sparse *s, struct stream_sink *out, struct rs_err *err)
{
	if (s->map_in_data && s->map_skip != 0)
		return bad(s, "data ends inside the pax 1.0 sparse map", err);
	if (s->data_in != s->stored)
		return rs_err_set(err, RS_BAD_INPUT, "tar: %s: %" PRIu64 " data bytes, the sparse map holds %" PRIu64,
				  s->what, s->data_in, s->stored);
	enum rs_code rc = put_zeros(out, s->real_size - s->emitted, err);
	if (rc == RS_OK)
		s->emitted = s->real_size;
	return rc;
}

void tar_sparse_free(struct tar_sparse *s)
{
	if (!s)
		return;
	free((char *)s->what);
	free(s->c);
	free(s);
}
