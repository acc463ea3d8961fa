/* tar_read: a push-fed tar parser. Header blocks (extension headers, their
 * payloads, the main header, old GNU sparse extension blocks) are collected
 * in one capped raw buffer per entry; when the main header is complete the
 * entry is resolved (globals, then 'x'/'L'/'K' in archive order, as Go's
 * archive/tar and GNU tar apply them), validated and reported together with
 * the raw bytes. Data then passes straight from the caller's buffer to
 * on_data without a copy. It knows nothing of compression or policy; it
 * talks only to its consumer through the callbacks of tar_read.h. */
#include "tar_read.h"

#include "rs_limits.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#define SEG_MAX 16 /* extension headers before one entry */

static const struct stream_sink_ops tar_ops;

static uint64_t pad_of(uint64_t size)
{
	return (TAR_BLOCK - size % TAR_BLOCK) % TAR_BLOCK;
}

enum mode {
	M_HEADER,      /* next block is a header (or a zero block) */
	M_EXT_PAYLOAD, /* blocks of an extension header's payload */
	M_SPARSE_EXT,  /* old GNU sparse extension blocks */
	M_DATA,
	M_PAD,
	M_END, /* after the two zero blocks */
};

struct seg {
	char type; /* 'x', 'g', 'L', 'K' */
	size_t off, len; /* payload in raw */
};

/* One entry's resolved attributes while they are assembled. */
struct attrs {
	const char *path, *linkpath, *uname, *gname, *mtime;
	size_t path_len, linkpath_len, uname_len, gname_len, mtime_len;
	const char *size, *uid, *gid, *sparse_name, *sparse_realsize, *sparse_size, *sparse_major;
	size_t size_len, uid_len, gid_len, sparse_name_len, sparse_realsize_len, sparse_size_len,
		sparse_major_len;
	bool sparse;
	const char *lname, *llink; /* GNU 'L' and 'K' payloads */
	size_t lname_len, llink_len;
};

struct tar_reader {
	struct stream_sink base;
	const struct tar_read_cbs *cbs;
	void *ctx;
	enum mode mode;
	uint8_t blk[TAR_BLOCK];
	size_t blk_len;
	uint8_t *raw;
	size_t raw_len, raw_alloc;
	struct seg segs[SEG_MAX];
	size_t nseg;
	size_t ext_blocks_left;
	size_t main_off; /* main header block in raw */
	uint8_t *global; /* payload of the last 'g' header */
	size_t global_len;
	char *arena;
	size_t arena_len, arena_alloc;
	struct tar_xattr *xattrs;
	size_t nxattr, xattr_alloc;
	struct tar_entry e;
	enum tar_verdict verdict;
	uint64_t data_left, pad_left;
	uint64_t pos;         /* stream bytes consumed */
	uint64_t entry_start; /* offset of the entry's first raw block */
	bool zero1;
	struct tar_read_stats st;
};

/* ---- small parsers ---------------------------------------------------- */

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* A numeric header field: octal (leading spaces, NUL/space terminated) or
 * base-256 (first byte 0x80 positive, 0xff negative). */
bool tar_parse_number(const uint8_t *f, size_t n, int64_t *out)
{
	if (n && (f[0] == 0x80 || f[0] == 0xff)) {
		/* big-endian two's complement; the first byte's top bit is the
		 * marker, 0xff marks a negative value */
		bool neg = f[0] == 0xff;
		uint64_t v = neg ? 0 : (uint64_t)(f[0] & 0x7f);
		for (size_t i = 1; i < n; i++) {
			uint8_t b = neg ? (uint8_t)~f[i] : f[i];
			if (v >> 55)
				return false;
			v = (v << 8) | b;
		}
		if (v > (uint64_t)INT64_MAX)
			return false;
		*out = neg ? -(int64_t)v - 1 : (int64_t)v;
		return true;
	}
	size_t i = 0;
	while (i < n && f[i] == ' ')
		i++;
	uint64_t v = 0;
	size_t digits = 0;
	for (; i < n && f[i] >= '0' && f[i] <= '7'; i++, digits++) {
		if (v >> 60)
			return false;
		v = v * 8 + (uint64_t)(f[i] - '0');
	}
	for (; i < n; i++)
		if (f[i] != ' ' && f[i] != 0)
			return false;
	(void)digits; /* an all-blank field is 0 */
	if (v > (uint64_t)INT64_MAX)
		return false;
	*out = (int64_t)v;
	return true;
}

bool tar_parse_decimal(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return true;
}

/* pax mtime: [-]digits[.digits] */
static bool parse_pax_time(const char *s, size_t n, int64_t *out)
{
	bool neg = n && s[0] == '-';
	size_t i = neg ? 1 : 0, start = i;
	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	uint64_t v;
	if (!tar_parse_decimal(s + start, i - start, &v) || v > (uint64_t)INT64_MAX)
		return false;
	if (i < n) {
		if (s[i] != '.')
			return false;
		for (i++; i < n; i++)
			if (s[i] < '0' || s[i] > '9')
				return false;
	}
	*out = neg ? -(int64_t)v : (int64_t)v;
	return true;
}

bool tar_path_normalize(char *p)
{
	if (p[0] == '/')
		return false;
	char *w = p;
	const char *r = p;
	while (*r) {
		while (*r == '/')
			r++;
		const char *c = r;
		while (*r && *r != '/')
			r++;
		size_t n = (size_t)(r - c);
		if (n == 0 || (n == 1 && c[0] == '.'))
			continue;
		if (n == 2 && c[0] == '.' && c[1] == '.')
			return false;
		if (w != p)
			*w++ = '/';
		memmove(w, c, n);
		w += n;
	}
	if (w == p)
		*w++ = '.';
	*w = 0;
	return true;
}

/* ---- buffers ---------------------------------------------------------- */

static enum rs_code raw_append(struct tar_reader *r, const uint8_t *p, size_t n,
			       struct rs_err *err)
{
	if (r->raw_len + n > RS_LIMIT_TAR_HEADER_MAX_BYTES)
		return rs_err_set(err, RS_TOO_LARGE,
				  "tar: headers of the entry at offset %" PRIu64
				  " are more than %u bytes (RS_LIMIT_TAR_HEADER_MAX_BYTES)",
				  r->entry_start, RS_LIMIT_TAR_HEADER_MAX_BYTES);
	if (r->raw_len + n > r->raw_alloc) {
		size_t a = r->raw_alloc ? r->raw_alloc : 4 * TAR_BLOCK;
		while (a < r->raw_len + n)
			a *= 2;
		uint8_t *q = realloc(r->raw, a);
		if (!q)
			return rs_err_set(err, RS_NOMEM, "tar: out of memory for %zu header bytes", a);
		r->raw = q;
		r->raw_alloc = a;
	}
	memcpy(r->raw + r->raw_len, p, n);
	r->raw_len += n;
	return RS_OK;
}

/* Copy a string into the entry arena, NUL-terminated. The arena was sized
 * for the entry beforehand, so this cannot fail. */
static char *arena_put(struct tar_reader *r, const char *s, size_t n)
{
	assert(r->arena_len + n + 1 <= r->arena_alloc);
	char *d = r->arena + r->arena_len;
	memcpy(d, s, n);
	d[n] = 0;
	r->arena_len += n + 1;
	return d;
}

static size_t field_len(const uint8_t *f, size_t n)
{
	size_t i = 0;
	while (i < n && f[i])
		i++;
	return i;
}

/* ---- pax records ------------------------------------------------------ */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int b64val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

static enum rs_code add_xattr(struct tar_reader *r, const char *name, size_t name_len,
			      const char *val, size_t val_len, bool libarchive, struct rs_err *err)
{
	char *n = arena_put(r, name, name_len);
	uint8_t *v = (uint8_t *)arena_put(r, val, val_len);
	if (libarchive) {
		/* LIBARCHIVE.xattr.<url-encoded name>=<base64 value> */
		size_t w = 0;
		for (size_t i = 0; i < name_len; i++) {
			if (n[i] == '%' && i + 2 < name_len && hexval(n[i + 1]) >= 0 &&
			    hexval(n[i + 2]) >= 0) {
				n[w++] = (char)(hexval(n[i + 1]) * 16 + hexval(n[i + 2]));
				i += 2;
			} else {
				n[w++] = n[i];
			}
		}
		n[w] = 0;
		size_t o = 0;
		uint32_t acc = 0;
		int bits = 0;
		for (size_t i = 0; i < val_len; i++) {
			if (v[i] == '=')
				break;
			int b = b64val((char)v[i]);
			if (b < 0)
				return rs_err_set(err, RS_BAD_INPUT,
						  "tar: entry at offset %" PRIu64
						  ": LIBARCHIVE.xattr.%s value is not base64",
						  r->entry_start, n);
			acc = (acc << 6) | (uint32_t)b;
			bits += 6;
			if (bits >= 8) {
				bits -= 8;
				v[o++] = (uint8_t)(acc >> bits);
			}
		}
		val_len = o;
		v[o] = 0;
	}
	for (size_t i = 0; i < r->nxattr; i++) {
		if (strcmp(r->xattrs[i].name, n) == 0) {
			r->xattrs[i].value = v;
			r->xattrs[i].value_len = val_len;
			return RS_OK;
		}
	}
	if (r->nxattr == RS_LIMIT_TAR_XATTRS_MAX)
		return rs_err_set(err, RS_TOO_LARGE,
				  "tar: entry at offset %" PRIu64
				  " has more than %u xattrs (RS_LIMIT_TAR_XATTRS_MAX)",
				  r->entry_start, RS_LIMIT_TAR_XATTRS_MAX);
	if (r->nxattr == r->xattr_alloc) {
		size_t a = r->xattr_alloc ? 2 * r->xattr_alloc : 8;
		struct tar_xattr *q = realloc(r->xattrs, a * sizeof(*q));
		if (!q)
			return rs_err_set(err, RS_NOMEM, "tar: out of memory for xattrs");
		r->xattrs = q;
		r->xattr_alloc = a;
	}
	r->xattrs[r->nxattr++] = (struct tar_xattr){ n, v, val_len };
	return RS_OK;
}

#define SET(field, v, n)                                                                       \
	do {                                                                                   \
		a->field = (n) ? (v) : NULL;                                                   \
		a->field##_len = (n);                                                          \
	} while (0)

static bool key_is(const char *k, size_t kn, const char *lit)
{
	size_t n = strlen(lit);
	return kn == n && memcmp(k, lit, n) == 0;
}

enum tar_pax_step tar_pax_next(const char *p, size_t n, size_t *pos, const char **key, size_t *key_len,
			       const char **val, size_t *val_len)
{
	size_t i = *pos, start = i;
	if (i >= n)
		return TAR_PAX_END;
	uint64_t rec = 0;
	size_t digits = 0;
	while (i < n && p[i] >= '0' && p[i] <= '9' && digits < 20) {
		rec = rec * 10 + (uint64_t)(p[i] - '0');
		i++;
		digits++;
	}
	if (digits == 0 && all_zero((const uint8_t *)p + start, n - start))
		return TAR_PAX_END; /* NUL padding inside the payload */
	if (digits == 0 || i >= n || p[i] != ' ' || rec > n - start || rec < digits + 3 ||
	    p[start + rec - 1] != '\n')
		return TAR_PAX_MALFORMED;
	const char *kv = p + i + 1;
	size_t kvn = start + rec - 1 - (i + 1);
	const char *eq = memchr(kv, '=', kvn);
	if (!eq || eq == kv)
		return TAR_PAX_NO_KEY;
	*key = kv;
	*key_len = (size_t)(eq - kv);
	*val = eq + 1;
	*val_len = kvn - *key_len - 1;
	*pos = start + rec;
	return TAR_PAX_RECORD;
}

/* Apply "len key=value\n" records. An empty value unsets the key (pax
 * says it removes a global value). */
static enum rs_code apply_pax(struct tar_reader *r, struct attrs *a, const char *p, size_t n,
			      uint64_t hdr_off, struct rs_err *err)
{
	size_t i = 0;
	while (1) {
		size_t start = i;
		const char *k, *v;
		size_t kn, vn;
		enum tar_pax_step st = tar_pax_next(p, n, &i, &k, &kn, &v, &vn);
		if (st == TAR_PAX_END)
			break;
		if (st == TAR_PAX_MALFORMED)
			return rs_err_set(err, RS_BAD_INPUT,
					  "tar: pax header at offset %" PRIu64
					  ": malformed record at payload byte %zu",
					  hdr_off, start);
		if (st == TAR_PAX_NO_KEY)
			return rs_err_set(err, RS_BAD_INPUT,
					  "tar: pax header at offset %" PRIu64
					  ": record without key=value at payload byte %zu",
					  hdr_off, start);
		if (key_is(k, kn, "path"))
			SET(path, v, vn);
		else if (key_is(k, kn, "linkpath"))
			SET(linkpath, v, vn);
		else if (key_is(k, kn, "uname"))
			SET(uname, v, vn);
		else if (key_is(k, kn, "gname"))
			SET(gname, v, vn);
		else if (key_is(k, kn, "mtime"))
			SET(mtime, v, vn);
		else if (key_is(k, kn, "size"))
			SET(size, v, vn);
		else if (key_is(k, kn, "uid"))
			SET(uid, v, vn);
		else if (key_is(k, kn, "gid"))
			SET(gid, v, vn);
		else if (key_is(k, kn, "GNU.sparse.name"))
			SET(sparse_name, v, vn);
		else if (key_is(k, kn, "GNU.sparse.realsize"))
			SET(sparse_realsize, v, vn);
		else if (key_is(k, kn, "GNU.sparse.size"))
			SET(sparse_size, v, vn);
		else if (key_is(k, kn, "GNU.sparse.major"))
			SET(sparse_major, v, vn);
		else if (kn > 13 && memcmp(k, "SCHILY.xattr.", 13) == 0) {
			enum rs_code rc = add_xattr(r, k + 13, kn - 13, v, vn, false, err);
			if (rc)
				return rc;
		} else if (kn > 17 && memcmp(k, "LIBARCHIVE.xattr.", 17) == 0) {
			enum rs_code rc = add_xattr(r, k + 17, kn - 17, v, vn, true, err);
			if (rc)
				return rc;
		}
		if (kn > 11 && memcmp(k, "GNU.sparse.", 11) == 0)
			a->sparse = true;
	}
	return RS_OK;
}

/* ---- entry resolution ------------------------------------------------- */

static enum rs_code bad_field(struct tar_reader *r, const char *what, struct rs_err *err)
{
	return rs_err_set(err, RS_BAD_INPUT, "tar: header at offset %" PRIu64 ": invalid %s field",
			  r->entry_start + r->main_off, what);
}

static enum rs_code entry_error(struct tar_reader *r, const char *path, const char *what,
				struct rs_err *err)
{
	return rs_err_set(err, RS_BAD_INPUT, "tar: entry '%.120s' at offset %" PRIu64 ": %s", path,
			  r->entry_start, what);
}

/* A normalised path within RS_LIMIT_TAR_PATH_BYTES and _DEPTH? what says
 * which name it is in the message ("name", "hard link target"). */
static enum rs_code check_path_bounds(struct tar_reader *r, const char *entry, const char *path, const char *what,
				      struct rs_err *err)
{
	size_t len = strlen(path), depth = 1;
	for (const char *p = path; *p; p++)
		depth += *p == '/';
	char msg[160];
	if (len > RS_LIMIT_TAR_PATH_BYTES)
		snprintf(msg, sizeof(msg), "%s is %zu bytes, limit is %d (RS_LIMIT_TAR_PATH_BYTES)", what, len,
			 RS_LIMIT_TAR_PATH_BYTES);
	else if (depth > RS_LIMIT_TAR_PATH_DEPTH)
		snprintf(msg, sizeof(msg), "%s has %zu components, limit is %d (RS_LIMIT_TAR_PATH_DEPTH)", what, depth,
			 RS_LIMIT_TAR_PATH_DEPTH);
	else
		return RS_OK;
	return entry_error(r, entry, msg, err);
}

static bool header_only_type(char t)
{
	return t == '1' || t == '2' || t == '3' || t == '4' || t == '5' || t == '6';
}

/* The entry's extensions into a: pax global and per-entry records, GNU long
 * name and link; and room in the arena for the entry's strings. */
static enum rs_code collect_ext(struct tar_reader *r, struct attrs *a, struct rs_err *err)
{
	enum rs_code rc;
	/* xattrs take at most the payload bytes; path and link are copied
	 * twice (normalised and as read, for messages) */
	size_t need = 2 * (r->raw_len + r->global_len) + 4096;
	if (need > r->arena_alloc) {
		char *q = realloc(r->arena, need);
		if (!q)
			return rs_err_set(err, RS_NOMEM, "tar: out of memory for %zu bytes of names",
					  need);
		r->arena = q;
		r->arena_alloc = need;
	}
	r->arena_len = 0;
	r->nxattr = 0;
	if (r->global_len) {
		rc = apply_pax(r, a, (const char *)r->global, r->global_len, r->entry_start, err);
		if (rc)
			return rc;
	}
	for (size_t i = 0; i < r->nseg; i++) {
		const struct seg *s = &r->segs[i];
		const char *p = (const char *)r->raw + s->off;
		if (s->type == 'x') {
			rc = apply_pax(r, a, p, s->len, r->entry_start + s->off - TAR_BLOCK, err);
			if (rc)
				return rc;
		} else if (s->type == 'L') {
			a->lname = p;
			a->lname_len = field_len((const uint8_t *)p, s->len);
		} else if (s->type == 'K') {
			a->llink = p;
			a->llink_len = field_len((const uint8_t *)p, s->len);
		}
	}
	return RS_OK;
}

/* The entry's path: GNU.sparse.name > pax path > 'L' > prefix/name > name;
 * relative, normalized, no '..'. */
static enum rs_code resolve_path(struct tar_reader *r, const uint8_t *h, const struct attrs *a, bool posix,
				 struct rs_err *err)
{
	size_t name_len = field_len(h, 100);
	char *path;
	if (a->sparse_name) {
		path = arena_put(r, a->sparse_name, a->sparse_name_len);
	} else if (a->path) {
		path = arena_put(r, a->path, a->path_len);
	} else if (a->lname) {
		path = arena_put(r, a->lname, a->lname_len);
	} else if (posix && h[345]) {
		size_t pn = field_len(h + 345, 155);
		path = r->arena + r->arena_len;
		(void)arena_put(r, (const char *)h + 345, pn);
		r->arena_len--; /* join: overwrite the NUL with '/' + name */
		r->arena[r->arena_len++] = '/';
		(void)arena_put(r, (const char *)h, name_len);
	} else {
		path = arena_put(r, (const char *)h, name_len);
	}
	if (a->path && memchr(a->path, 0, a->path_len))
		return entry_error(r, path, "pax path contains a NUL byte", err);
	if (path[0] == 0)
		return entry_error(r, "", "empty name", err);
	if (path[0] == '/')
		return entry_error(r, path, "absolute name", err);
	{
		/* keep the original for the message */
		char *copy = arena_put(r, path, strlen(path));
		if (!tar_path_normalize(path))
			return entry_error(r, copy, "name has a '..' component", err);
	}
	enum rs_code rc = check_path_bounds(r, path, path, "name", err);
	if (rc)
		return rc;
	r->e.path = path;
	return RS_OK;
}

/* The link target (pax linkpath > 'K' > linkname); a hard link's must be a
 * relative path without '..'. */
static enum rs_code resolve_link(struct tar_reader *r, const uint8_t *h, const struct attrs *a, struct rs_err *err)
{
	char *link;
	if (a->linkpath)
		link = arena_put(r, a->linkpath, a->linkpath_len);
	else if (a->llink)
		link = arena_put(r, a->llink, a->llink_len);
	else
		link = arena_put(r, (const char *)h + 157, field_len(h + 157, 100));
	if (r->e.type == TAR_TYPE_HARDLINK) {
		if (link[0] == 0)
			return entry_error(r, r->e.path, "hard link without a target", err);
		if (link[0] == '/')
			return entry_error(r, r->e.path, "absolute hard link target", err);
		char *copy = arena_put(r, link, strlen(link));
		if (!tar_path_normalize(link)) {
			(void)copy;
			return entry_error(r, r->e.path, "hard link target has a '..' component", err);
		}
		enum rs_code rc = check_path_bounds(r, r->e.path, link, "hard link target", err);
		if (rc)
			return rc;
	}
	r->e.linkpath = link;
	return RS_OK;
}

/* Mode, owners, size (into *size), mtime and device numbers from the ustar
 * fields, then the pax records that override them. */
static enum rs_code resolve_numbers(struct tar_reader *r, const uint8_t *h, const struct attrs *a, bool ustar,
				    uint64_t *size, struct rs_err *err)
{
	struct tar_entry *e = &r->e;
	int64_t v;
	if (!tar_parse_number(h + 100, 8, &v) || v < 0)
		return bad_field(r, "mode", err);
	e->mode = (uint32_t)(v & 07777);
	if (!tar_parse_number(h + 108, 8, &v) || v < 0)
		return bad_field(r, "uid", err);
	e->uid = (uint64_t)v;
	if (!tar_parse_number(h + 116, 8, &v) || v < 0)
		return bad_field(r, "gid", err);
	e->gid = (uint64_t)v;
	if (!tar_parse_number(h + 124, 12, &v) || v < 0)
		return bad_field(r, "size", err);
	*size = (uint64_t)v;
	if (!tar_parse_number(h + 136, 12, &v))
		return bad_field(r, "mtime", err);
	e->mtime = v;
	if (ustar) {
		if (!tar_parse_number(h + 329, 8, &v) || v < 0 || v > UINT32_MAX)
			return bad_field(r, "devmajor", err);
		e->devmajor = (uint32_t)v;
		if (!tar_parse_number(h + 337, 8, &v) || v < 0 || v > UINT32_MAX)
			return bad_field(r, "devminor", err);
		e->devminor = (uint32_t)v;
		e->uname = arena_put(r, (const char *)h + 265, field_len(h + 265, 32));
		e->gname = arena_put(r, (const char *)h + 297, field_len(h + 297, 32));
	} else {
		e->uname = e->gname = "";
	}
	uint64_t u;
	if (a->uid) {
		if (!tar_parse_decimal(a->uid, a->uid_len, &u))
			return entry_error(r, e->path, "invalid pax uid", err);
		e->uid = u;
	}
	if (a->gid) {
		if (!tar_parse_decimal(a->gid, a->gid_len, &u))
			return entry_error(r, e->path, "invalid pax gid", err);
		e->gid = u;
	}
	if (a->size) {
		if (!tar_parse_decimal(a->size, a->size_len, &u) || u > (uint64_t)INT64_MAX)
			return entry_error(r, e->path, "invalid pax size", err);
		*size = u;
	}
	if (a->uname)
		e->uname = arena_put(r, a->uname, a->uname_len);
	if (a->gname)
		e->gname = arena_put(r, a->gname, a->gname_len);
	if (a->mtime) {
		if (!parse_pax_time(a->mtime, a->mtime_len, &v))
			return entry_error(r, e->path, "invalid pax mtime", err);
		e->mtime = v;
		e->mtime_pax = arena_put(r, a->mtime, a->mtime_len);
	}
	return RS_OK;
}

/* Old GNU sparse headers and pax GNU.sparse records: the real size. */
static enum rs_code resolve_sparse(struct tar_reader *r, const uint8_t *h, const struct attrs *a, struct rs_err *err)
{
	struct tar_entry *e = &r->e;
	int64_t v;
	uint64_t u;
	if (e->type == TAR_TYPE_GNU_SPARSE) {
		e->sparse = true;
		if (!tar_parse_number(h + 483, 12, &v) || v < 0)
			return bad_field(r, "sparse realsize", err);
		e->real_size = (uint64_t)v;
	} else if (a->sparse) {
		e->sparse = true;
		const char *rs = a->sparse_realsize ? a->sparse_realsize : a->sparse_size;
		size_t rn = a->sparse_realsize ? a->sparse_realsize_len : a->sparse_size_len;
		if (rs && !tar_parse_decimal(rs, rn, &u))
			return entry_error(r, e->path, "invalid pax GNU.sparse real size", err);
		if (rs)
			e->real_size = u;
	}
	return RS_OK;
}

/* Resolve the main header at raw + main_off with the collected extensions. */
static enum rs_code resolve_entry(struct tar_reader *r, struct rs_err *err)
{
	const uint8_t *h = r->raw + r->main_off;
	struct tar_entry *e = &r->e;
	struct attrs a = { 0 };
	bool posix = memcmp(h + 257, "ustar\0", 6) == 0;
	bool gnu = memcmp(h + 257, "ustar  \0", 8) == 0;
	memset(e, 0, sizeof(*e));
	enum rs_code rc = collect_ext(r, &a, err);
	if (rc)
		return rc;

	/* type */
	char t = (char)h[156];
	if (t == 0) {
		size_t name_len = field_len(h, 100);
		t = (name_len && h[name_len - 1] == '/') ? TAR_TYPE_DIR : TAR_TYPE_FILE;
	} else if (t == '7') {
		t = TAR_TYPE_FILE;
	}
	e->type = t;

	uint64_t size = 0;
	rc = resolve_path(r, h, &a, posix, err);
	if (!rc)
		rc = resolve_link(r, h, &a, err);
	if (!rc)
		rc = resolve_numbers(r, h, &a, posix || gnu, &size, err);
	if (rc)
		return rc;
	if (header_only_type(t))
		size = 0;
	e->size = size;
	e->real_size = size;

	rc = resolve_sparse(r, h, &a, err);
	if (rc)
		return rc;
	e->xattrs = r->nxattr ? r->xattrs : NULL;
	e->xattr_count = r->nxattr;
	if (r->global_len) {
		e->pax_global = (const char *)r->global;
		e->pax_global_len = r->global_len;
	}
	e->header_offset = r->entry_start;
	e->data_offset = r->entry_start + r->raw_len;
	e->index = r->st.entries;
	return RS_OK;
}

/* ---- the state machine ------------------------------------------------ */

static void reset_entry(struct tar_reader *r)
{
	r->raw_len = 0;
	r->nseg = 0;
	r->mode = M_HEADER;
	r->entry_start = r->pos;
}

static enum rs_code end_entry(struct tar_reader *r, struct rs_err *err)
{
	enum rs_code rc = RS_OK;
	if (r->cbs->on_end_entry)
		rc = r->cbs->on_end_entry(r->ctx, &r->e, r->verdict, err);
	reset_entry(r);
	return rc;
}

static enum rs_code report_entry(struct tar_reader *r, struct rs_err *err)
{
	r->verdict = TAR_KEEP;
	r->st.entries++;
	enum rs_code rc = r->cbs->on_entry(r->ctx, &r->e, r->raw, r->raw_len, &r->verdict, err);
	if (rc)
		return rc;
	uint64_t total = r->raw_len + r->e.size + pad_of(r->e.size);
	if (r->verdict == TAR_KEEP)
		r->st.kept_bytes += total;
	else
		r->st.dropped_bytes += total;
	r->data_left = r->e.size;
	r->pad_left = pad_of(r->e.size);
	if (r->data_left)
		r->mode = M_DATA;
	else if (r->pad_left)
		r->mode = M_PAD;
	else
		return end_entry(r, err);
	return RS_OK;
}

/* A 'g' header's payload is complete: remember it and report the entry. */
static enum rs_code finish_global(struct tar_reader *r, struct rs_err *err)
{
	const struct seg *s = &r->segs[0];
	uint8_t *g = malloc(s->len ? s->len : 1);
	if (!g)
		return rs_err_set(err, RS_NOMEM, "tar: out of memory for a global header");
	memcpy(g, r->raw + s->off, s->len);
	/* validate now so a broken global header is blamed on itself */
	struct attrs a = { 0 };
	size_t need = r->raw_len + 2048;
	if (need > r->arena_alloc) {
		char *q = realloc(r->arena, need);
		if (!q) {
			free(g);
			return rs_err_set(err, RS_NOMEM, "tar: out of memory for a global header");
		}
		r->arena = q;
		r->arena_alloc = need;
	}
	r->arena_len = 0;
	r->nxattr = 0;
	enum rs_code rc = apply_pax(r, &a, (const char *)g, s->len, r->entry_start, err);
	if (rc) {
		free(g);
		return rc;
	}
	free(r->global);
	r->global = g;
	r->global_len = s->len;
	struct tar_entry *e = &r->e;
	memset(e, 0, sizeof(*e));
	r->arena_len = 0;
	char *name = arena_put(r, (const char *)r->raw, field_len(r->raw, 100));
	if (!tar_path_normalize(name))
		name[0] = 0;
	e->path = name;
	e->linkpath = e->uname = e->gname = "";
	e->type = TAR_TYPE_GLOBAL;
	e->header_offset = r->entry_start;
	e->data_offset = r->entry_start + r->raw_len;
	e->index = r->st.entries;
	r->main_off = 0;
	return report_entry(r, err);
}

static enum rs_code header_block(struct tar_reader *r, const uint8_t *b, struct rs_err *err)
{
	uint64_t off = r->pos - TAR_BLOCK;
	if (all_zero(b, TAR_BLOCK)) {
		if (r->nseg)
			return rs_err_set(err, RS_BAD_INPUT,
					  "tar: zero block at offset %" PRIu64
					  " where the entry of the extension header at offset %" PRIu64
					  " was expected",
					  off, r->entry_start);
		r->st.end_blocks++;
		if (r->zero1) {
			r->mode = M_END;
			return RS_OK;
		}
		r->zero1 = true;
		r->entry_start = r->pos;
		return RS_OK;
	}
	if (r->zero1)
		return rs_err_set(err, RS_BAD_INPUT,
				  "tar: lone zero block at offset %" PRIu64 " followed by a header",
				  off - TAR_BLOCK);
	/* checksum: the field counts as spaces; old writers summed signed chars */
	int64_t stored;
	if (!tar_parse_number(b + 148, 8, &stored) || b[148] == 0x80 || b[148] == 0xff)
		return rs_err_set(err, RS_BAD_INPUT,
				  "tar: header at offset %" PRIu64 ": invalid checksum field", off);
	int64_t us = 0, ss = 0;
	for (size_t i = 0; i < TAR_BLOCK; i++) {
		uint8_t c = (i >= 148 && i < 156) ? ' ' : b[i];
		us += c;
		ss += (int8_t)c;
	}
	if (stored != us && stored != ss)
		return rs_err_set(err, RS_BAD_INPUT,
				  "tar: header at offset %" PRIu64
				  ": checksum %" PRId64 " does not match stored %" PRId64,
				  off, us, stored);
	enum rs_code rc = raw_append(r, b, TAR_BLOCK, err);
	if (rc)
		return rc;
	char t = (char)b[156];
	if (t == 'x' || t == 'g' || t == 'L' || t == 'K' || t == 'X') {
		int64_t sz;
		if (!tar_parse_number(b + 124, 12, &sz) || sz < 0)
			return rs_err_set(err, RS_BAD_INPUT,
					  "tar: header at offset %" PRIu64 ": invalid size field", off);
		if ((uint64_t)sz > RS_LIMIT_TAR_EXT_MAX_BYTES)
			return rs_err_set(err, RS_TOO_LARGE,
					  "tar: '%c' extension header at offset %" PRIu64
					  " has %" PRId64 " bytes, limit is %u (RS_LIMIT_TAR_EXT_MAX_BYTES)",
					  t, off, sz, RS_LIMIT_TAR_EXT_MAX_BYTES);
		if (t == 'g' && r->nseg)
			return rs_err_set(err, RS_BAD_INPUT,
					  "tar: global header at offset %" PRIu64
					  " follows extension headers for another entry",
					  off);
		if (r->nseg == SEG_MAX)
			return rs_err_set(err, RS_BAD_INPUT,
					  "tar: more than %d extension headers before the entry at "
					  "offset %" PRIu64,
					  SEG_MAX, r->entry_start);
		r->segs[r->nseg++] = (struct seg){ t == 'X' ? 'x' : t, r->raw_len, (size_t)sz };
		r->ext_blocks_left = ((size_t)sz + TAR_BLOCK - 1) / TAR_BLOCK;
		if (r->ext_blocks_left) {
			r->mode = M_EXT_PAYLOAD;
			return RS_OK;
		}
		return t == 'g' ? finish_global(r, err) : RS_OK;
	}
	r->main_off = r->raw_len - TAR_BLOCK;
	if (t == TAR_TYPE_GNU_SPARSE && b[482]) {
		r->mode = M_SPARSE_EXT;
		return RS_OK;
	}
	rc = resolve_entry(r, err);
	return rc ? rc : report_entry(r, err);
}

static enum rs_code block(struct tar_reader *r, const uint8_t *b, struct rs_err *err)
{
	enum rs_code rc;
	switch (r->mode) {
	case M_HEADER:
		return header_block(r, b, err);
	case M_EXT_PAYLOAD:
		rc = raw_append(r, b, TAR_BLOCK, err);
		if (rc)
			return rc;
		if (--r->ext_blocks_left)
			return RS_OK;
		r->mode = M_HEADER;
		return r->segs[r->nseg - 1].type == 'g' ? finish_global(r, err) : RS_OK;
	case M_SPARSE_EXT:
		rc = raw_append(r, b, TAR_BLOCK, err);
		if (rc)
			return rc;
		if (b[504])
			return RS_OK;
		rc = resolve_entry(r, err);
		return rc ? rc : report_entry(r, err);
	default:
		assert(0);
		return RS_OK;
	}
}

static enum rs_code tr_write(struct stream_sink *self, const void *buf, size_t len,
			     struct rs_err *err)
{
	struct tar_reader *r = (struct tar_reader *)self;
	const uint8_t *p = buf;
	enum rs_code rc;
	while (len > 0) {
		switch (r->mode) {
		case M_DATA:
		case M_PAD: {
			bool pad = r->mode == M_PAD;
			uint64_t *left = pad ? &r->pad_left : &r->data_left;
			size_t n = len < *left ? len : (size_t)*left;
			if (r->verdict == TAR_KEEP && r->cbs->on_data) {
				rc = r->cbs->on_data(r->ctx, &r->e, p, n, pad, err);
				if (rc)
					return rc;
			}
			p += n;
			len -= n;
			r->pos += n;
			*left -= n;
			if (*left == 0) {
				if (!pad && r->pad_left) {
					r->mode = M_PAD;
				} else {
					rc = end_entry(r, err);
					if (rc)
						return rc;
				}
			}
			break;
		}
		case M_END:
			r->st.trailing_bytes += len;
			r->pos += len;
			return RS_OK;
		default: {
			size_t n = TAR_BLOCK - r->blk_len;
			if (n > len)
				n = len;
			const uint8_t *b;
			if (r->blk_len == 0 && n == TAR_BLOCK) {
				b = p; /* whole block in the input: no copy */
			} else {
				memcpy(r->blk + r->blk_len, p, n);
				r->blk_len += n;
				b = r->blk;
			}
			p += n;
			len -= n;
			r->pos += n;
			if (b == r->blk && r->blk_len < TAR_BLOCK)
				break;
			r->blk_len = 0;
			rc = block(r, b, err);
			if (rc)
				return rc;
			break;
		}
		}
	}
	return RS_OK;
}

uint64_t tar_read_skippable(const struct stream_sink *self)
{
	assert(self->ops == &tar_ops);
	const struct tar_reader *r = (const struct tar_reader *)self;
	if (self->failed != RS_OK || r->verdict != TAR_DROP)
		return 0;
	if (r->mode == M_DATA)
		return r->data_left + r->pad_left;
	return r->mode == M_PAD ? r->pad_left : 0;
}

enum rs_code tar_read_skip(struct stream_sink *self, uint64_t n, struct rs_err *err)
{
	assert(n <= tar_read_skippable(self));
	struct tar_reader *r = (struct tar_reader *)self;
	while (n > 0) {
		bool pad = r->mode == M_PAD;
		uint64_t *left = pad ? &r->pad_left : &r->data_left;
		uint64_t k = n < *left ? n : *left;
		*left -= k;
		n -= k;
		r->pos += k;
		if (*left == 0) {
			if (!pad && r->pad_left) {
				r->mode = M_PAD;
			} else {
				enum rs_code rc = end_entry(r, err);
				if (rc) {
					self->failed = rc;
					return rc;
				}
			}
		}
	}
	return RS_OK;
}

static enum rs_code tr_finish(struct stream_sink *self, struct rs_err *err)
{
	struct tar_reader *r = (struct tar_reader *)self;
	r->st.bytes = r->pos;
	switch (r->mode) {
	case M_END:
		return RS_OK;
	case M_DATA:
		return rs_err_set(err, RS_BAD_INPUT,
				  "tar: truncated archive: entry '%.120s' at offset %" PRIu64
				  " needs %" PRIu64 " more data bytes",
				  r->e.path, r->e.header_offset, r->data_left);
	case M_PAD:
		return rs_err_set(err, RS_BAD_INPUT,
				  "tar: truncated archive: entry '%.120s' at offset %" PRIu64
				  " needs %" PRIu64 " more padding bytes",
				  r->e.path, r->e.header_offset, r->pad_left);
	default:
		break;
	}
	if (r->blk_len)
		return rs_err_set(err, RS_BAD_INPUT,
				  "tar: truncated archive: partial header block (%zu of 512 bytes) "
				  "at offset %" PRIu64,
				  r->blk_len, r->pos - r->blk_len);
	if (r->raw_len)
		return rs_err_set(err, RS_BAD_INPUT,
				  "tar: truncated archive: headers at offset %" PRIu64
				  " are not followed by their entry",
				  r->entry_start);
	return RS_OK; /* EOF at an entry boundary or after one zero block */
}

static void tr_free(struct stream_sink *self)
{
	struct tar_reader *r = (struct tar_reader *)self;
	free(r->raw);
	free(r->global);
	free(r->arena);
	free(r->xattrs);
	free(r);
}

static const struct stream_sink_ops tar_ops = { "tar", tr_write, tr_finish, tr_free };

enum rs_code tar_read_new(struct stream_sink **out, const struct tar_read_cbs *cbs, void *ctx,
			  struct rs_err *err)
{
	assert(cbs && cbs->on_entry);
	struct tar_reader *r = calloc(1, sizeof(*r));
	if (!r)
		return rs_err_set(err, RS_NOMEM, "tar: out of memory for a reader");
	stream_sink_init(&r->base, &tar_ops);
	r->cbs = cbs;
	r->ctx = ctx;
	r->mode = M_HEADER;
	*out = &r->base;
	return RS_OK;
}

void tar_read_stats(const struct stream_sink *s, struct tar_read_stats *out)
{
	assert(s->ops == &tar_ops);
	const struct tar_reader *r = (const struct tar_reader *)s;
	*out = r->st;
	out->bytes = r->pos;
}
