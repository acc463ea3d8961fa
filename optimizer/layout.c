/* layout: OCI image layout and docker-archive sources, and the atomic OCI
 * layout writer (see layout.h). File I/O only: open/pread/write/fsync/
 * rename; JSON goes through config/imagejson.c. */
#include "layout.h"
#include "fsutil.h"
#include "rs_limits.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define OCI_LAYOUT_JSON "{\"imageLayoutVersion\":\"1.0.0\"}"
#define COPY_BUF (256u * 1024)

struct member {
	char *name;
	uint64_t offset, size;
};

struct layout_src {
	enum layout_kind kind;
	char *path;
	char *tag;
	int fd; /* archive file, or -1 */
	struct imagejson_index index;
	struct imagejson_archive archive;
	struct member *members;
	size_t member_count;
	/* OCI: open blob fds, closed at free */
	int *fds;
	size_t fd_count;
};

static enum rs_code read_all_fd(int fd, uint64_t off, uint64_t size, size_t cap, char **out, size_t *len,
				const char *what, struct rs_err *err)
{
	*out = NULL;
	*len = 0;
	if (size > cap)
		return rs_err_set(err, RS_TOO_LARGE, "%s is %" PRIu64 " bytes, limit is %zu", what, size, cap);
	char *buf = malloc(size + 1);
	if (!buf)
		return rs_err_set(err, RS_NOMEM, "out of memory reading %s", what);
	uint64_t got = 0;
	while (got < size) {
		ssize_t n = pread(fd, buf + got, size - got, (off_t)(off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(buf);
			if (n == 0)
				return rs_err_set(err, RS_BAD_INPUT, "%s: short read: expected %" PRIu64 " bytes, got %" PRIu64,
						  what, size, got);
			return rs_err_set(err, RS_IO, "%s: read failed: %s", what, strerror(errno));
		}
		got += (uint64_t)n;
	}
	buf[size] = '\0';
	*out = buf;
	*len = size;
	return RS_OK;
}

/* ---- docker-archive outer tar ------------------------------------------ */

static bool parse_num(const unsigned char *f, size_t n, uint64_t *out)
{
	if (f[0] & 0x80) { /* base-256 */
		uint64_t v = f[0] & 0x3f;
		for (size_t i = 1; i < n; i++) {
			if (v >> 56)
				return false;
			v = (v << 8) | f[i];
		}
		*out = v;
		return true;
	}
	uint64_t v = 0;
	size_t i = 0;
	while (i < n && (f[i] == ' ' || f[i] == '\0'))
		i++;
	for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v >> 60)
			return false;
		v = v * 8 + (uint64_t)(f[i] - '0');
	}
	for (; i < n; i++)
		if (f[i] != ' ' && f[i] != '\0')
			return false;
	*out = v;
	return true;
}

static void norm_name(char *s)
{
	while (s[0] == '.' && s[1] == '/')
		memmove(s, s + 2, strlen(s + 2) + 1);
	size_t n = strlen(s);
	while (n > 0 && s[n - 1] == '/')
		s[--n] = '\0';
}

static enum rs_code index_archive(struct layout_src *s, struct rs_err *err)
{
	struct stat st;
	if (fstat(s->fd, &st) != 0)
		return rs_err_set(err, RS_IO, "%s: cannot stat: %s", s->path, strerror(errno));
	uint64_t fsize = (uint64_t)st.st_size, off = 0;
	char *longname = NULL;
	size_t cap = 0;
	enum rs_code rc = RS_OK;
	while (off + 512 <= fsize) {
		unsigned char h[512];
		char *tmp;
		size_t tl;
		rc = read_all_fd(s->fd, off, 512, 512, &tmp, &tl, s->path, err);
		if (rc != RS_OK)
			break;
		memcpy(h, tmp, 512);
		free(tmp);
		bool zero = true;
		for (int i = 0; i < 512 && zero; i++)
			zero = h[i] == 0;
		if (zero)
			break;
		uint64_t sum = 0, stored;
		for (int i = 0; i < 512; i++)
			sum += (i >= 148 && i < 156) ? ' ' : h[i];
		uint64_t size;
		if (!parse_num(h + 148, 8, &stored) || stored != sum || !parse_num(h + 124, 12, &size)) {
			rc = rs_err_set(err, RS_BAD_INPUT, "%s: bad tar header at offset %" PRIu64, s->path, off);
			break;
		}
		char type = (char)h[156];
		uint64_t data = off + 512;
		uint64_t next = data + ((size + 511) & ~(uint64_t)511);
		if (next > fsize || next < data) {
			rc = rs_err_set(err, RS_BAD_INPUT, "%s: truncated: member at offset %" PRIu64 " needs %" PRIu64
					" bytes", s->path, off, size);
			break;
		}
		if (type == 'L' || type == 'x') {
			char *payload;
			size_t pl;
			rc = read_all_fd(s->fd, data, size, RS_LIMIT_TAR_EXT_MAX_BYTES, &payload, &pl, s->path, err);
			if (rc != RS_OK)
				break;
			free(longname);
			longname = NULL;
			if (type == 'L') {
				longname = payload;
				longname[strnlen(payload, pl)] = '\0';
			} else {
				/* pax: find "path=" record */
				size_t p = 0;
				while (p < pl) {
					char *end;
					unsigned long rl = strtoul(payload + p, &end, 10);
					if (rl == 0 || p + rl > pl || *end != ' ')
						break;
					char *kv = end + 1;
					size_t kvl = (size_t)(payload + p + rl - kv);
					if (kvl > 5 && strncmp(kv, "path=", 5) == 0) {
						free(longname);
						longname = malloc(kvl - 5);
						if (longname) {
							memcpy(longname, kv + 5, kvl - 6);
							longname[kvl - 6] = '\0';
						}
					}
					p += rl;
				}
				free(payload);
			}
			off = next;
			continue;
		}
		if (type == '0' || type == '\0' || type == '7') {
			char name[257];
			if (longname) {
				/* use the long name */
			} else if (memcmp(h + 257, "ustar", 5) == 0 && h[345]) {
				snprintf(name, sizeof(name), "%.155s/%.100s", (const char *)h + 345, (const char *)h);
			} else {
				snprintf(name, sizeof(name), "%.100s", (const char *)h);
			}
			if (s->member_count >= RS_LIMIT_ARCHIVE_MEMBERS_MAX) {
				rc = rs_err_set(err, RS_TOO_LARGE, "%s: more than %u members (RS_LIMIT_ARCHIVE_MEMBERS_MAX)",
						s->path, (unsigned)RS_LIMIT_ARCHIVE_MEMBERS_MAX);
				break;
			}
			if (s->member_count == cap) {
				size_t nc = cap ? cap * 2 : 64;
				struct member *m = realloc(s->members, nc * sizeof(*m));
				if (!m) {
					rc = rs_err_set(err, RS_NOMEM, "out of memory indexing %s", s->path);
					break;
				}
				s->members = m;
				cap = nc;
			}
			struct member *m = &s->members[s->member_count];
			m->name = longname ? longname : strdup(name);
			longname = NULL;
			if (!m->name) {
				rc = rs_err_set(err, RS_NOMEM, "out of memory indexing %s", s->path);
				break;
			}
			norm_name(m->name);
			m->offset = data;
			m->size = size;
			s->member_count++;
		} else {
			free(longname);
			longname = NULL;
		}
		off = next;
	}
	free(longname);
	return rc;
}

static const struct member *find_member(const struct layout_src *s, const char *name)
{
	while (name[0] == '.' && name[1] == '/')
		name += 2;
	/* the last member of a name wins, as when extracting */
	for (size_t i = s->member_count; i-- > 0;)
		if (strcmp(s->members[i].name, name) == 0)
			return &s->members[i];
	return NULL;
}

/* ---- sources -------------------------------------------------------------- */

enum rs_code layout_src_open(struct layout_src **out, const char *ref, struct rs_err *err)
{
	*out = NULL;
	struct layout_src *s = calloc(1, sizeof(*s));
	if (!s)
		return rs_err_set(err, RS_NOMEM, "out of memory");
	s->fd = -1;
	enum rs_code rc = RS_OK;
	if (strncmp(ref, "oci:", 4) == 0) {
		s->kind = LAYOUT_OCI;
		s->path = strdup(ref + 4);
		if (!s->path) {
			layout_src_free(s);
			return rs_err_set(err, RS_NOMEM, "out of memory");
		}
		char *colon = strrchr(s->path, ':');
		if (colon) {
			*colon = '\0';
			s->tag = strdup(colon + 1);
			if (!s->tag) {
				layout_src_free(s);
				return rs_err_set(err, RS_NOMEM, "out of memory");
			}
		}
		char p[4096];
		snprintf(p, sizeof(p), "%s/oci-layout", s->path);
		char *buf;
		size_t len;
		rc = fsutil_read_small(&buf, &len, p, 4096, err);
		if (rc == RS_OK) {
			bool ok = strstr(buf, "imageLayoutVersion") != NULL;
			free(buf);
			if (!ok)
				rc = rs_err_set(err, RS_BAD_INPUT, "%s: not an OCI image layout (oci-layout has no imageLayoutVersion)",
						s->path);
		} else
			rs_err_prefix(err, "not an OCI image layout: ");
		if (rc == RS_OK) {
			snprintf(p, sizeof(p), "%s/index.json", s->path);
			rc = fsutil_read_small(&buf, &len, p, RS_LIMIT_MANIFEST_MAX_BYTES, err);
			if (rc == RS_OK) {
				rc = imagejson_parse_index(&s->index, buf, len, p, err);
				free(buf);
			}
		}
	} else if (strncmp(ref, "docker-archive:", 15) == 0) {
		s->kind = LAYOUT_ARCHIVE;
		s->path = strdup(ref + 15);
		if (!s->path) {
			layout_src_free(s);
			return rs_err_set(err, RS_NOMEM, "out of memory");
		}
		/* "FILE:REPO:TAG" picks an image by RepoTags; a bare FILE is image 0 */
		struct stat st;
		char *colon = strchr(s->path, ':');
		if (colon && stat(s->path, &st) != 0) {
			*colon = '\0';
			s->tag = strdup(colon + 1);
			if (!s->tag) {
				layout_src_free(s);
				return rs_err_set(err, RS_NOMEM, "out of memory");
			}
		}
		s->fd = open(s->path, O_RDONLY | O_CLOEXEC);
		if (s->fd < 0)
			rc = rs_err_set(err, errno == ENOENT ? RS_NOT_FOUND : RS_IO, "%s: cannot open: %s", s->path,
					strerror(errno));
		if (rc == RS_OK)
			rc = index_archive(s, err);
		if (rc == RS_OK) {
			char *buf;
			size_t len;
			rc = layout_src_read_member(s, "manifest.json", RS_LIMIT_MANIFEST_MAX_BYTES, &buf, &len, err);
			if (rc == RS_OK) {
				char what[4200];
				snprintf(what, sizeof(what), "%s: manifest.json", s->path);
				rc = imagejson_parse_archive(&s->archive, buf, len, what, err);
				free(buf);
			}
		}
	} else {
		rc = rs_err_set(err, RS_BAD_INPUT,
				"unsupported source '%.80s': expected oci:DIR[:TAG] or docker-archive:FILE", ref);
	}
	if (rc != RS_OK) {
		layout_src_free(s);
		return rc;
	}
	*out = s;
	return RS_OK;
}

void layout_src_free(struct layout_src *s)
{
	if (!s)
		return;
	if (s->fd >= 0)
		close(s->fd);
	for (size_t i = 0; i < s->fd_count; i++)
		close(s->fds[i]);
	free(s->fds);
	for (size_t i = 0; i < s->member_count; i++)
		free(s->members[i].name);
	free(s->members);
	imagejson_index_dispose(&s->index);
	imagejson_archive_dispose(&s->archive);
	free(s->path);
	free(s->tag);
	free(s);
}

enum layout_kind layout_src_kind(const struct layout_src *s)
{
	return s->kind;
}

const char *layout_src_tag(const struct layout_src *s)
{
	return s->tag;
}

const char *layout_src_path(const struct layout_src *s)
{
	return s->path;
}

const struct imagejson_index *layout_src_index(const struct layout_src *s)
{
	return s->kind == LAYOUT_OCI ? &s->index : NULL;
}

const struct imagejson_archive *layout_src_archive(const struct layout_src *s)
{
	return s->kind == LAYOUT_ARCHIVE ? &s->archive : NULL;
}

static enum rs_code blob_path(const struct layout_src *s, const char *digest, char *out, size_t cap,
			      struct rs_err *err)
{
	enum rs_code rc = digest_parse(digest, err);
	if (rc != RS_OK)
		return rc;
	int n = snprintf(out, cap, "%s/blobs/sha256/%s", s->path, digest_hex(digest));
	if (n < 0 || (size_t)n >= cap)
		return rs_err_set(err, RS_BAD_INPUT, "layout path %.80s is too long", s->path);
	return RS_OK;
}

enum rs_code layout_src_read_blob(struct layout_src *s, const char *digest, uint64_t size, size_t cap,
				  char **out, size_t *len, struct rs_err *err)
{
	*out = NULL;
	if (s->kind != LAYOUT_OCI)
		return rs_err_set(err, RS_NOT_FOUND, "%s: a docker archive has no blobs by digest", s->path);
	char p[4200];
	enum rs_code rc = blob_path(s, digest, p, sizeof(p), err);
	if (rc != RS_OK)
		return rc;
	rc = fsutil_read_small(out, len, p, cap, err);
	if (rc == RS_NOT_FOUND)
		return rs_err_set(err, RS_NOT_FOUND, "blob %s is not in %s", digest, s->path);
	if (rc != RS_OK)
		return rc;
	if (size != UINT64_MAX && *len != size) {
		free(*out);
		*out = NULL;
		return rs_err_set(err, RS_DIGEST_MISMATCH, "blob %s: expected %" PRIu64 " bytes, got %zu", digest, size,
				  *len);
	}
	char got[DIGEST_STR_SIZE];
	digest_buffer(got, *out, *len);
	if (strcmp(got, digest) != 0) {
		free(*out);
		*out = NULL;
		return rs_err_set(err, RS_DIGEST_MISMATCH, "blob %s: content hashes to %s", digest, got);
	}
	return RS_OK;
}

enum rs_code layout_src_read_member(struct layout_src *s, const char *name, size_t cap, char **out,
				    size_t *len, struct rs_err *err)
{
	*out = NULL;
	const struct member *m = find_member(s, name);
	if (!m)
		return rs_err_set(err, RS_NOT_FOUND, "%s: no member %.200s", s->path, name);
	char what[4200];
	snprintf(what, sizeof(what), "%s: %s", s->path, m->name);
	return read_all_fd(s->fd, m->offset, m->size, cap, out, len, what, err);
}

enum rs_code layout_src_blob_range(struct layout_src *s, const char *digest, struct layout_range *out,
				   struct rs_err *err)
{
	char p[4200];
	enum rs_code rc = blob_path(s, digest, p, sizeof(p), err);
	if (rc != RS_OK)
		return rc;
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return rs_err_set(err, errno == ENOENT ? RS_NOT_FOUND : RS_IO, "blob %s: cannot open %s: %s", digest, p,
				  strerror(errno));
	struct stat st;
	if (fstat(fd, &st) != 0) {
		close(fd);
		return rs_err_set(err, RS_IO, "%s: cannot stat: %s", p, strerror(errno));
	}
	int *nf = realloc(s->fds, (s->fd_count + 1) * sizeof(int));
	if (!nf) {
		close(fd);
		return rs_err_set(err, RS_NOMEM, "out of memory");
	}
	s->fds = nf;
	s->fds[s->fd_count++] = fd;
	out->fd = fd;
	out->offset = 0;
	out->size = (uint64_t)st.st_size;
	return RS_OK;
}

enum rs_code layout_src_member_range(struct layout_src *s, const char *name, struct layout_range *out,
				     struct rs_err *err)
{
	const struct member *m = find_member(s, name);
	if (!m)
		return rs_err_set(err, RS_NOT_FOUND, "%s: no member %.200s", s->path, name);
	out->fd = s->fd;
	out->offset = m->offset;
	out->size = m->size;
	return RS_OK;
}

/* ---- writer -------------------------------------------------------------- */

struct layout_writer {
	char *dir;
	char *staging;
	bool existing;
	bool committed;
	unsigned tmp_seq;
	struct imagejson_descriptor ref;
	char *tag;
	bool has_ref;
};

enum rs_code layout_parse_dest(char **dir_out, char **tag_out, const char *ref, struct rs_err *err)
{
	*dir_out = *tag_out = NULL;
	if (strncmp(ref, "oci:", 4) != 0 || !ref[4])
		return rs_err_set(err, RS_BAD_INPUT, "unsupported destination '%.80s': expected oci:DIR[:TAG]", ref);
	char *d = strdup(ref + 4);
	if (!d)
		return rs_err_set(err, RS_NOMEM, "out of memory");
	char *colon = strrchr(d, ':');
	if (colon) {
		*colon = '\0';
		*tag_out = strdup(colon + 1);
		if (!*tag_out) {
			free(d);
			return rs_err_set(err, RS_NOMEM, "out of memory");
		}
	}
	*dir_out = d;
	return RS_OK;
}

enum rs_code layout_writer_new(struct layout_writer **out, const char *dir, struct rs_err *err)
{
	*out = NULL;
	struct layout_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return rs_err_set(err, RS_NOMEM, "out of memory");
	w->dir = strdup(dir);
	size_t n = strlen(dir) + 64;
	w->staging = calloc(1, n); /* freed (and read) by layout_writer_free on the early errors */
	if (!w->dir || !w->staging) {
		layout_writer_free(w);
		return rs_err_set(err, RS_NOMEM, "out of memory");
	}
	while (strlen(w->dir) > 1 && w->dir[strlen(w->dir) - 1] == '/')
		w->dir[strlen(w->dir) - 1] = '\0';
	struct stat st;
	if (stat(w->dir, &st) == 0) {
		char p[4200];
		snprintf(p, sizeof(p), "%s/oci-layout", w->dir);
		if (!S_ISDIR(st.st_mode) || access(p, R_OK) != 0) {
			layout_writer_free(w);
			return rs_err_set(err, RS_BAD_INPUT, "destination %s exists and is not an OCI image layout", dir);
		}
		w->existing = true;
	}
	const char *slash = strrchr(w->dir, '/');
	if (slash)
		snprintf(w->staging, n, "%.*s/.%s.regslim-XXXXXX", (int)(slash - w->dir), w->dir, slash + 1);
	else
		snprintf(w->staging, n, ".%s.regslim-XXXXXX", w->dir);
	if (!mkdtemp(w->staging)) {
		enum rs_code rc = rs_err_set(err, RS_IO, "%s: cannot create staging directory: %s", w->staging,
					     strerror(errno));
		w->staging[0] = '\0';
		layout_writer_free(w);
		return rc;
	}
	(void)chmod(w->staging, 0755); /* mkdtemp makes 0700; a layout is world-readable, best effort */
	char p[4200];
	snprintf(p, sizeof(p), "%s/blobs/sha256", w->staging);
	enum rs_code rc = fsutil_mkdir_p(p, NULL, err);
	if (rc != RS_OK) {
		layout_writer_free(w);
		return rc;
	}
	*out = w;
	return RS_OK;
}

void layout_writer_free(struct layout_writer *w)
{
	if (!w)
		return;
	if (w->staging && w->staging[0] && (!w->committed || w->existing))
		fsutil_rm_tree(w->staging);
	imagejson_descriptor_dispose(&w->ref);
	free(w->tag);
	free(w->dir);
	free(w->staging);
	free(w);
}

enum rs_code layout_writer_tmp(struct layout_writer *w, int *fd_out, char *path_out, size_t cap,
			       struct rs_err *err)
{
	int n = snprintf(path_out, cap, "%s/tmp-%u-XXXXXX", w->staging, w->tmp_seq++);
	if (n < 0 || (size_t)n >= cap)
		return rs_err_set(err, RS_IO, "staging path too long");
	int fd = mkstemp(path_out);
	if (fd < 0)
		return rs_err_set(err, RS_IO, "%s: cannot create: %s", path_out, strerror(errno));
	(void)fchmod(fd, 0644); /* mkstemp makes 0600; blobs are world-readable, best effort */
	*fd_out = fd;
	return RS_OK;
}

enum rs_code layout_writer_commit_tmp(struct layout_writer *w, int fd, const char *path, const char *digest,
				      struct rs_err *err)
{
	enum rs_code rc = RS_OK;
	if (fsync(fd) != 0)
		rc = rs_err_set(err, RS_IO, "%s: fsync failed: %s", path, strerror(errno));
	if (close(fd) != 0 && rc == RS_OK)
		rc = rs_err_set(err, RS_IO, "%s: close failed: %s", path, strerror(errno));
	if (rc != RS_OK) {
		(void)unlink(path); /* the temp file is ours and useless now */
		return rc;
	}
	char p[4200];
	snprintf(p, sizeof(p), "%s/blobs/sha256/%s", w->staging, digest_hex(digest));
	if (rename(path, p) != 0) {
		rc = rs_err_set(err, RS_IO, "rename %s -> %s failed: %s", path, p, strerror(errno));
		(void)unlink(path); /* see above */
	}
	return rc;
}

enum rs_code layout_writer_put(struct layout_writer *w, const void *buf, size_t len,
			       char digest_out[DIGEST_STR_SIZE], struct rs_err *err)
{
	digest_buffer(digest_out, buf, len);
	char p[4200];
	int fd = -1;
	enum rs_code rc = layout_writer_tmp(w, &fd, p, sizeof(p), err);
	if (rc != RS_OK)
		return rc;
	rc = fsutil_write_all(fd, buf, len, p, err);
	if (rc != RS_OK) {
		close(fd);
		(void)unlink(p); /* our temp file */
		return rc;
	}
	return layout_writer_commit_tmp(w, fd, p, digest_out, err);
}

enum rs_code layout_writer_copy(struct layout_writer *w, const struct layout_range *r, const char *digest,
				struct rs_err *err)
{
	char p[4200];
	int fd;
	enum rs_code rc = layout_writer_tmp(w, &fd, p, sizeof(p), err);
	if (rc != RS_OK)
		return rc;
	struct digest_ctx *d = digest_new();
	char *buf = malloc(COPY_BUF);
	if (!d || !buf)
		rc = rs_err_set(err, RS_NOMEM, "out of memory copying %s", digest);
	uint64_t done = 0;
	while (rc == RS_OK && done < r->size) {
		size_t want = r->size - done > COPY_BUF ? COPY_BUF : (size_t)(r->size - done);
		ssize_t n = pread(r->fd, buf, want, (off_t)(r->offset + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = rs_err_set(err, n == 0 ? RS_BAD_INPUT : RS_IO, "blob %s: read failed at %" PRIu64 ": %s",
					digest, done, n == 0 ? "unexpected end of file" : strerror(errno));
			break;
		}
		digest_update(d, buf, (size_t)n);
		rc = fsutil_write_all(fd, buf, (size_t)n, p, err);
		done += (uint64_t)n;
	}
	if (rc == RS_OK) {
		char got[DIGEST_STR_SIZE];
		digest_final(d, got);
		if (strcmp(got, digest) != 0)
			rc = rs_err_set(err, RS_DIGEST_MISMATCH, "blob %s: content hashes to %s", digest, got);
	}
	digest_free(d);
	free(buf);
	if (rc != RS_OK) {
		close(fd);
		(void)unlink(p); /* our temp file */
		return rc;
	}
	return layout_writer_commit_tmp(w, fd, p, digest, err);
}

enum rs_code layout_writer_set_ref(struct layout_writer *w, const struct imagejson_descriptor *desc,
				   const char *tag, struct rs_err *err)
{
	imagejson_descriptor_dispose(&w->ref);
	free(w->tag);
	w->tag = NULL;
	enum rs_code rc = imagejson_descriptor_copy(&w->ref, desc, err);
	if (rc != RS_OK)
		return rc;
	w->tag = strdup(tag);
	if (!w->tag)
		return rs_err_set(err, RS_NOMEM, "out of memory");
	rc = imagejson_kv_set(&w->ref.annotations, &w->ref.annotation_count, "org.opencontainers.image.ref.name",
			      tag, err);
	w->has_ref = rc == RS_OK;
	return rc;
}

/* fsync a directory after a rename into it; a failure loses nothing written
 * (the rename already happened), so it is only a durability hint. */
static void fsync_hint(const char *dir)
{
	if (fsutil_fsync_dir(dir, NULL) != RS_OK)
		return; /* see above */
}

enum rs_code layout_writer_commit(struct layout_writer *w, struct rs_err *err)
{
	if (!w->has_ref)
		return rs_err_set(err, RS_BAD_INPUT, "layout writer: nothing to publish");
	struct imagejson_index idx;
	memset(&idx, 0, sizeof(idx));
	enum rs_code rc = RS_OK;
	char p[4200], q[4200];
	if (w->existing) {
		snprintf(p, sizeof(p), "%s/index.json", w->dir);
		char *buf;
		size_t len;
		rc = fsutil_read_small(&buf, &len, p, RS_LIMIT_MANIFEST_MAX_BYTES, err);
		if (rc == RS_OK) {
			rc = imagejson_parse_index(&idx, buf, len, p, err);
			free(buf);
		}
		if (rc != RS_OK)
			return rc;
		/* drop the entries that carry our tag */
		size_t k = 0;
		for (size_t i = 0; i < idx.manifest_count; i++) {
			const char *t = imagejson_kv_get(idx.manifests[i].annotations, idx.manifests[i].annotation_count,
							 "org.opencontainers.image.ref.name");
			if (t && strcmp(t, w->tag) == 0)
				imagejson_descriptor_dispose(&idx.manifests[i]);
			else
				idx.manifests[k++] = idx.manifests[i];
		}
		idx.manifest_count = k;
	}
	struct imagejson_descriptor *nm = realloc(idx.manifests, (idx.manifest_count + 1) * sizeof(*nm));
	if (!nm) {
		imagejson_index_dispose(&idx);
		return rs_err_set(err, RS_NOMEM, "out of memory");
	}
	idx.manifests = nm;
	rc = imagejson_descriptor_copy(&idx.manifests[idx.manifest_count], &w->ref, err);
	if (rc != RS_OK) {
		imagejson_index_dispose(&idx);
		return rc;
	}
	idx.manifest_count++;
	idx.schema_version = 2;
	char *json = NULL;
	size_t jlen = 0;
	rc = imagejson_write_index(&json, &jlen, &idx, err);
	imagejson_index_dispose(&idx);
	if (rc != RS_OK)
		return rc;
	if (!w->existing) {
		snprintf(p, sizeof(p), "%s/oci-layout", w->staging);
		rc = fsutil_write_file(p, OCI_LAYOUT_JSON, strlen(OCI_LAYOUT_JSON), true, err);
		snprintf(p, sizeof(p), "%s/index.json", w->staging);
		if (rc == RS_OK)
			rc = fsutil_write_file(p, json, jlen, true, err);
		snprintf(p, sizeof(p), "%s/blobs/sha256", w->staging);
		fsync_hint(p);
		if (rc == RS_OK && rename(w->staging, w->dir) != 0)
			rc = rs_err_set(err, RS_IO, "rename %s -> %s failed: %s", w->staging, w->dir, strerror(errno));
		if (rc == RS_OK) {
			fsutil_parent(p, sizeof(p), w->dir);
			fsync_hint(p);
			w->committed = true;
		}
		free(json);
		return rc;
	}
	/* existing layout: move blobs in, then replace index.json */
	snprintf(p, sizeof(p), "%s/blobs/sha256", w->staging);
	DIR *d = opendir(p);
	if (!d) {
		free(json);
		return rs_err_set(err, RS_IO, "%s: cannot list: %s", p, strerror(errno));
	}
	struct dirent *de;
	while (rc == RS_OK && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/blobs/sha256/%s", w->staging, de->d_name);
		snprintf(q, sizeof(q), "%s/blobs/sha256/%s", w->dir, de->d_name);
		if (access(q, F_OK) == 0)
			continue;
		if (rename(p, q) != 0)
			rc = rs_err_set(err, RS_IO, "rename %s -> %s failed: %s", p, q, strerror(errno));
	}
	closedir(d);
	snprintf(p, sizeof(p), "%s/blobs/sha256", w->dir);
	fsync_hint(p);
	snprintf(q, sizeof(q), "%s/index.json", w->dir);
	if (rc == RS_OK)
		rc = fsutil_write_atomic(q, w->staging, json, jlen, err); /* temp file in our staging dir */
	if (rc == RS_OK)
		w->committed = true;
	free(json);
	return rc;
}
