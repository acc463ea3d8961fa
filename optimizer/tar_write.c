/* tar_write: emits tar blocks into a sink. New headers are ustar, with a
 * pax 'x' header in front when a value does not fit (POSIX.1-2001 pax,
 * "pax Header Block"); records are sorted by key so output depends only on
 * the entry. Used for entries the optimizer synthesizes (a hard link whose
 * target was stripped becomes a regular file) and the end blocks; kept
 * entries are copied raw. */
#include "tar_write.h"

#include "rs_limits.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t zeros[2 * TAR_BLOCK];

uint64_t tar_padding(uint64_t size)
{
	return (TAR_BLOCK - size % TAR_BLOCK) % TAR_BLOCK;
}

enum rs_code tar_write_raw(struct stream_sink *out, const void *raw, size_t raw_len,
			   struct rs_err *err)
{
	return stream_write(out, raw, raw_len, err);
}

enum rs_code tar_write_padding(struct stream_sink *out, uint64_t size, struct rs_err *err)
{
	return stream_write(out, zeros, (size_t)tar_padding(size), err);
}

enum rs_code tar_write_end(struct stream_sink *out, struct rs_err *err)
{
	return stream_write(out, zeros, sizeof(zeros), err);
}

/* True when v fits in an n-byte octal field (n-1 digits and a NUL). */
static bool fits(uint64_t v, size_t n)
{
	return (n - 1) * 3 >= 64 || v < ((uint64_t)1 << ((n - 1) * 3));
}

static void put_octal(uint8_t *f, size_t n, uint64_t v)
{
	if (!fits(v, n))
		v = 0; /* the pax record carries the value */
	for (size_t i = n - 1; i-- > 0;) {
		f[i] = (uint8_t)('0' + (v & 7));
		v >>= 3;
	}
	f[n - 1] = 0;
}

static void put_str(uint8_t *f, size_t n, const char *s)
{
	size_t l = strlen(s);
	memcpy(f, s, l < n ? l : n);
}

static void finish_block(uint8_t *b)
{
	memcpy(b + 257, "ustar\0" "00", 8);
	memset(b + 148, ' ', 8);
	unsigned sum = 0;
	for (size_t i = 0; i < TAR_BLOCK; i++)
		sum += b[i];
	snprintf((char *)b + 148, 8, "%06o", sum);
	b[155] = ' ';
}

/* A growing pax payload, capped. */
struct pax {
	char *buf;
	size_t len, alloc;
};

static enum rs_code pax_addk(struct pax *p, const char *key, size_t klen, const void *val, size_t vlen,
			     struct rs_err *err)
{
	size_t body = 1 + klen + 1 + vlen + 1; /* " key=value\n" */
	size_t digits = 1;
	/* the length counts its own digits */
	while (1) {
		size_t total = digits + body;
		size_t d = 0;
		for (size_t t = total; t; t /= 10)
			d++;
		if (d == digits)
			break;
		digits = d;
	}
	size_t total = digits + body;
	if (p->len + total > RS_LIMIT_TAR_EXT_MAX_BYTES)
		return rs_err_set(err, RS_TOO_LARGE,
				  "tar: pax header would pass %u bytes (RS_LIMIT_TAR_EXT_MAX_BYTES)",
				  RS_LIMIT_TAR_EXT_MAX_BYTES);
	if (p->len + total > p->alloc) {
		size_t a = p->alloc ? p->alloc : 1024;
		while (a < p->len + total)
			a *= 2;
		char *q = realloc(p->buf, a);
		if (!q)
			return rs_err_set(err, RS_NOMEM, "tar: out of memory for a pax header");
		p->buf = q;
		p->alloc = a;
	}
	char *w = p->buf + p->len;
	int n = snprintf(w, digits + 2, "%zu ", total);
	w += n;
	memcpy(w, key, klen);
	w += klen;
	*w++ = '=';
	memcpy(w, val, vlen);
	w += vlen;
	*w++ = '\n';
	p->len += total;
	return RS_OK;
}

static enum rs_code pax_add(struct pax *p, const char *key, const void *val, size_t vlen, struct rs_err *err)
{
	return pax_addk(p, key, strlen(key), val, vlen, err);
}

static enum rs_code pax_num(struct pax *p, const char *key, uint64_t v, struct rs_err *err)
{
	char s[24];
	int n = snprintf(s, sizeof(s), "%" PRIu64, v);
	return pax_add(p, key, s, (size_t)n, err);
}

static int cmp_xattr(const void *a, const void *b)
{
	const struct tar_xattr *x = *(const struct tar_xattr *const *)a;
	const struct tar_xattr *y = *(const struct tar_xattr *const *)b;
	return strcmp(x->name, y->name);
}

/* Split path into prefix (<= 155) and name (<= 100) at a '/'. */
static bool split_ustar(const char *path, size_t len, size_t *cut)
{
	if (len <= 100) {
		*cut = 0;
		return true;
	}
	for (size_t i = 1; i < len && i <= 155; i++) {
		if (path[i] == '/' && len - i - 1 <= 100 && len - i - 1 > 0) {
			*cut = i;
			return true;
		}
	}
	return false;
}

/* A pax 'x' header block named "<dir>/PaxHeaders/<base>" (as GNU tar's
 * default %d/PaxHeaders/%f) for path, its payload and the padding. */
static enum rs_code write_pax(struct stream_sink *out, const char *path, uint64_t mtime, const char *payload,
			      size_t len, struct rs_err *err)
{
	uint8_t b[TAR_BLOCK];
	memset(b, 0, sizeof(b));
	char pname[101];
	const char *base = strrchr(path, '/');
	int dn = base ? (int)(base - path) : 0;
	const char *bn = base ? base + 1 : path;
	if (dn)
		snprintf(pname, sizeof(pname), "%.*s/PaxHeaders/%s", dn > 80 ? 80 : dn, path, bn);
	else
		snprintf(pname, sizeof(pname), "PaxHeaders/%s", bn);
	put_str(b, 100, pname);
	put_octal(b + 100, 8, 0644);
	put_octal(b + 108, 8, 0);
	put_octal(b + 116, 8, 0);
	put_octal(b + 124, 12, len);
	put_octal(b + 136, 12, fits(mtime, 12) ? mtime : 0);
	b[156] = 'x';
	finish_block(b);
	enum rs_code rc = stream_write(out, b, TAR_BLOCK, err);
	if (rc == RS_OK)
		rc = stream_write(out, payload, len, err);
	if (rc == RS_OK)
		rc = tar_write_padding(out, len, err);
	return rc;
}

enum rs_code tar_write_header(struct stream_sink *out, const struct tar_entry *e,
			      struct rs_err *err)
{
	char t = e->type;
	if (t != '0' && t != '1' && t != '2' && t != '3' && t != '4' && t != '5' && t != '6')
		return rs_err_set(err, RS_BAD_INPUT, "tar: cannot write an entry of type '%c' for '%.120s'",
				  t ? t : '?', e->path);
	if (e->sparse)
		return rs_err_set(err, RS_BAD_INPUT, "tar: cannot write sparse entry '%.120s'",
				  e->path);
	enum rs_code rc = RS_OK;
	struct pax p = { 0 };
	const struct tar_xattr **xs = NULL;
	char *path = NULL;
	size_t plen = strlen(e->path);
	path = malloc(plen + 2);
	if (!path)
		return rs_err_set(err, RS_NOMEM, "tar: out of memory for a header");
	memcpy(path, e->path, plen + 1);
	if (t == '5' && (plen == 0 || path[plen - 1] != '/')) {
		path[plen++] = '/';
		path[plen] = 0;
	}
	const char *link = e->linkpath ? e->linkpath : "";
	const char *uname = e->uname ? e->uname : "";
	const char *gname = e->gname ? e->gname : "";
	size_t cut = 0;
	bool path_fits = split_ustar(path, plen, &cut);
	uint64_t size = (t == '0') ? e->size : 0;
	uint64_t mtime = e->mtime < 0 ? 0 : (uint64_t)e->mtime;

	/* pax records, sorted by key (upper-case SCHILY first) */
	if (e->xattr_count) {
		xs = malloc(e->xattr_count * sizeof(*xs));
		if (!xs) {
			rc = rs_err_set(err, RS_NOMEM, "tar: out of memory for xattrs");
			goto out;
		}
		for (size_t i = 0; i < e->xattr_count; i++)
			xs[i] = &e->xattrs[i];
		qsort(xs, e->xattr_count, sizeof(*xs), cmp_xattr);
		for (size_t i = 0; i < e->xattr_count && !rc; i++) {
			char key[300];
			int n = snprintf(key, sizeof(key), "SCHILY.xattr.%s", xs[i]->name);
			if (n < 0 || (size_t)n >= sizeof(key)) {
				rc = rs_err_set(err, RS_BAD_INPUT, "tar: xattr name '%.60s...' too long",
						xs[i]->name);
				goto out;
			}
			rc = pax_add(&p, key, xs[i]->value, xs[i]->value_len, err);
		}
		if (rc)
			goto out;
	}
	if (!fits(e->gid, 8) && (rc = pax_num(&p, "gid", e->gid, err)))
		goto out;
	if (strlen(gname) > 31 && (rc = pax_add(&p, "gname", gname, strlen(gname), err)))
		goto out;
	if (strlen(link) > 100 && (rc = pax_add(&p, "linkpath", link, strlen(link), err)))
		goto out;
	if (e->mtime_pax) {
		rc = pax_add(&p, "mtime", e->mtime_pax, strlen(e->mtime_pax), err);
	} else if (e->mtime < 0 || !fits(mtime, 12)) {
		char s[24];
		int n = snprintf(s, sizeof(s), "%" PRId64, e->mtime);
		rc = pax_add(&p, "mtime", s, (size_t)n, err);
	}
	if (rc)
		goto out;
	if (!path_fits && (rc = pax_add(&p, "path", path, plen, err)))
		goto out;
	if (!fits(size, 12) && (rc = pax_num(&p, "size", size, err)))
		goto out;
	if (!fits(e->uid, 8) && (rc = pax_num(&p, "uid", e->uid, err)))
		goto out;
	if (strlen(uname) > 31 && (rc = pax_add(&p, "uname", uname, strlen(uname), err)))
		goto out;
	if (!fits(e->devmajor, 8) || !fits(e->devminor, 8)) {
		rc = rs_err_set(err, RS_BAD_INPUT, "tar: device numbers %u,%u of '%.120s' do not fit",
				e->devmajor, e->devminor, e->path);
		goto out;
	}

	uint8_t b[TAR_BLOCK];
	if (p.len && (rc = write_pax(out, e->path, mtime, p.buf, p.len, err)))
		goto out;
	memset(b, 0, sizeof(b));
	if (path_fits && cut) {
		memcpy(b + 345, path, cut);
		memcpy(b, path + cut + 1, plen - cut - 1);
	} else {
		memcpy(b, path, plen < 100 ? plen : 100);
	}
	put_octal(b + 100, 8, e->mode & 07777);
	put_octal(b + 108, 8, e->uid);
	put_octal(b + 116, 8, e->gid);
	put_octal(b + 124, 12, size);
	put_octal(b + 136, 12, mtime);
	b[156] = (uint8_t)t;
	memcpy(b + 157, link, strlen(link) < 100 ? strlen(link) : 100);
	put_str(b + 265, 32, uname);
	put_str(b + 297, 32, gname);
	put_octal(b + 329, 8, e->devmajor);
	put_octal(b + 337, 8, e->devminor);
	finish_block(b);
	rc = stream_write(out, b, TAR_BLOCK, err);
out:
	free(xs);
	free(p.buf);
	free(path);
	return rc;
}

static bool ext_type(char t)
{
	return t == 'x' || t == 'X' || t == 'L' || t == 'K';
}

/* Whether one of the 'x' payloads of raw (before main) sets key. */
static bool raw_sets(const uint8_t *raw, size_t main, const char *key, size_t kn)
{
	for (size_t off = 0; off < main;) {
		const uint8_t *h = raw + off;
		int64_t size = 0;
		(void)tar_parse_number(h + 124, 12, &size); /* checked by the caller's walk */
		if (h[156] == 'x' || h[156] == 'X') {
			size_t pos = 0;
			const char *k, *v;
			size_t kl, vl;
			while (tar_pax_next((const char *)h + TAR_BLOCK, (size_t)size, &pos, &k, &kl, &v, &vl) == TAR_PAX_RECORD)
				if (kl == kn && memcmp(k, key, kn) == 0)
					return true;
		}
		off += TAR_BLOCK + (size_t)(size + tar_padding((uint64_t)size));
	}
	return false;
}

enum rs_code tar_write_folded(struct stream_sink *out, const struct tar_entry *e, const void *raw_v, size_t raw_len,
			      struct rs_err *err)
{
	const uint8_t *raw = raw_v;
	if (!e->pax_global || e->type == TAR_TYPE_GLOBAL)
		return stream_write(out, raw, raw_len, err);
	/* find the main header: extension headers come first */
	size_t main = 0;
	while (main + TAR_BLOCK <= raw_len && ext_type((char)raw[main + 156])) {
		int64_t size;
		if (!tar_parse_number(raw + main + 124, 12, &size) || size < 0 ||
		    (uint64_t)size > raw_len - main - TAR_BLOCK)
			return rs_err_set(err, RS_BAD_INPUT, "tar: entry '%.120s': extension header size out of range",
					  e->path);
		main += TAR_BLOCK + (size_t)((uint64_t)size + tar_padding((uint64_t)size));
	}
	if (main + TAR_BLOCK > raw_len)
		return rs_err_set(err, RS_BAD_INPUT, "tar: entry '%.120s': no main header", e->path);
	/* the global records the entry does not set itself ("comment" is
	 * ignored by readers: POSIX pax, "comment"), then its own */
	struct pax p = {0};
	enum rs_code rc = RS_OK;
	size_t pos = 0;
	const char *k, *v;
	size_t kn, vn;
	while (rc == RS_OK &&
	       tar_pax_next(e->pax_global, e->pax_global_len, &pos, &k, &kn, &v, &vn) == TAR_PAX_RECORD) {
		if ((kn == 7 && memcmp(k, "comment", 7) == 0) || vn == 0 || raw_sets(raw, main, k, kn))
			continue;
		rc = pax_addk(&p, k, kn, v, vn, err);
	}
	if (rc == RS_OK && p.len == 0) { /* nothing inherited: the entry as it is */
		free(p.buf);
		return stream_write(out, raw, raw_len, err);
	}
	for (size_t off = 0; rc == RS_OK && off < main;) {
		const uint8_t *h = raw + off;
		int64_t size = 0;
		(void)tar_parse_number(h + 124, 12, &size); /* checked above */
		if (h[156] == 'x' || h[156] == 'X') {
			pos = 0;
			while (rc == RS_OK && tar_pax_next((const char *)h + TAR_BLOCK, (size_t)size, &pos, &k, &kn, &v,
							   &vn) == TAR_PAX_RECORD)
				rc = pax_addk(&p, k, kn, v, vn, err);
		}
		off += TAR_BLOCK + (size_t)((uint64_t)size + tar_padding((uint64_t)size));
	}
	uint64_t mtime = e->mtime < 0 ? 0 : (uint64_t)e->mtime;
	if (rc == RS_OK)
		rc = write_pax(out, e->path, mtime, p.buf, p.len, err);
	/* 'L' / 'K' records and the main header (with old GNU sparse blocks) */
	for (size_t off = 0; rc == RS_OK && off < main;) {
		const uint8_t *h = raw + off;
		int64_t size = 0;
		(void)tar_parse_number(h + 124, 12, &size);
		size_t len = TAR_BLOCK + (size_t)((uint64_t)size + tar_padding((uint64_t)size));
		if (h[156] == 'L' || h[156] == 'K')
			rc = stream_write(out, h, len, err);
		off += len;
	}
	if (rc == RS_OK)
		rc = stream_write(out, raw + main, raw_len - main, err);
	free(p.buf);
	return rc;
}
