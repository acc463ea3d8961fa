/* s3_bcache: local copies of s3 blobs (s3_bcache.h). Copies are files
 * <dir>/<hex>; fills in progress are <dir>/.fill-<hex>-XXXXXX. Both are
 * removed at open (copies are not fsynced: only this process's own are
 * trusted). The byte count starts at zero and is kept since; when an adoption
 * passes the bound, the directory is listed and the copies with the oldest
 * mtime are removed until it is under nine tenths of it. A copy removed
 * while a response still reads it is fine: the open descriptor keeps it. */
#include "s3_bcache.h"

#include "digest.h"
#include "fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct s3_bcache {
	char dir[4096];
	uint64_t max, bytes;
	pthread_mutex_t lock;
};

struct s3_bcache_fill {
	struct s3_bcache *b;
	char hex[DIGEST_HEX_LEN + 1];
	char path[4200];
	int fd;
	uint64_t size, next;
	struct digest_ctx *dc;
	bool ended;
};

static bool hex_ok(const char *hex)
{
	size_t n = strlen(hex);
	return n == DIGEST_HEX_LEN && strspn(hex, "0123456789abcdef") == n;
}

enum rs_code s3_bcache_open(struct s3_bcache **out, const char *dir, uint64_t max_bytes, struct rs_err *err)
{
	*out = NULL;
	if (max_bytes == 0)
		return RS_OK;
	enum rs_code rc = fsutil_mkdir_p(dir, NULL, err);
	if (rc)
		return rc;
	struct s3_bcache *b = calloc(1, sizeof(*b));
	if (!b)
		return rs_err_set(err, RS_NOMEM, "out of memory opening the local blob copies");
	if (snprintf(b->dir, sizeof(b->dir), "%s", dir) >= (int)sizeof(b->dir)) {
		free(b);
		return rs_err_set(err, RS_CONFIG, "local blob copies: directory path too long");
	}
	b->max = max_bytes;
	pthread_mutex_init(&b->lock, NULL);
	DIR *d = opendir(dir);
	if (!d) {
		rc = rs_err_set(err, RS_IO, "listing %s: %s", dir, strerror(errno));
		s3_bcache_free(b);
		return rc;
	}
	/* copies do not outlive the process: after a power loss a file may have its size but not its
	 * bytes (nothing is fsynced, a copy is only an optimization), so every start begins empty */
	for (struct dirent *de; (de = readdir(d)) != NULL;)
		if (hex_ok(de->d_name) || strncmp(de->d_name, ".fill-", 6) == 0)
			(void)unlinkat(dirfd(d), de->d_name, 0);
	closedir(d);
	*out = b;
	return RS_OK;
}

void s3_bcache_free(struct s3_bcache *b)
{
	if (!b)
		return;
	pthread_mutex_destroy(&b->lock);
	free(b);
}

int s3_bcache_open_fd(struct s3_bcache *b, const char *hex, uint64_t size)
{
	if (!b || !hex_ok(hex))
		return -1;
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", b->dir, hex);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != size) {
		close(fd);
		return -1;
	}
	(void)futimens(fd, NULL); /* used now: the mtime orders the trim */
	return fd;
}

bool s3_bcache_link_out(struct s3_bcache *b, const char *hex, uint64_t size, const char *to)
{
	int fd = s3_bcache_open_fd(b, hex, size); /* the size checked and the use noted */
	if (fd < 0)
		return false;
	close(fd);
	char path[4200];
	snprintf(path, sizeof(path), "%s/%.64s", b->dir, hex);
	return link(path, to) == 0;
}

struct copy {
	char hex[DIGEST_HEX_LEN + 1];
	time_t mtime;
	uint64_t size;
};

static int older_first(const void *a, const void *b)
{
	const struct copy *x = a, *y = b;
	return x->mtime < y->mtime ? -1 : x->mtime > y->mtime;
}

/* Under nine tenths of the bound again: the least recently used copies go. Called with the lock. */
static void trim(struct s3_bcache *b)
{
	DIR *d = opendir(b->dir);
	struct copy *v = NULL;
	size_t n = 0, cap = 0;
	uint64_t total = 0;
	for (struct dirent *de; d && (de = readdir(d)) != NULL;) {
		struct stat st;
		if (!hex_ok(de->d_name) || fstatat(dirfd(d), de->d_name, &st, 0) != 0)
			continue;
		if (n == cap) {
			struct copy *nv = realloc(v, (cap = cap ? cap * 2 : 256) * sizeof(*v));
			if (!nv)
				break;
			v = nv;
		}
		snprintf(v[n].hex, sizeof(v[n].hex), "%.64s", de->d_name); /* hex_ok: 64 characters */
		v[n].mtime = st.st_mtime;
		v[n++].size = (uint64_t)st.st_size;
		total += (uint64_t)st.st_size;
	}
	if (n)
		qsort(v, n, sizeof(*v), older_first);
	for (size_t i = 0; i < n && total > b->max / 10 * 9; i++)
		if (unlinkat(dirfd(d), v[i].hex, 0) == 0)
			total -= v[i].size;
	if (d)
		closedir(d);
	free(v);
	b->bytes = total;
}

static void account(struct s3_bcache *b, uint64_t size)
{
	pthread_mutex_lock(&b->lock);
	b->bytes += size;
	if (b->bytes > b->max)
		trim(b);
	pthread_mutex_unlock(&b->lock);
}

void s3_bcache_adopt(struct s3_bcache *b, const char *hex, const char *path, uint64_t size)
{
	if (!b || !hex_ok(hex) || size > b->max / 4)
		return;
	char dst[4200];
	snprintf(dst, sizeof(dst), "%s/%s", b->dir, hex);
	if (link(path, dst) == 0)
		account(b, size);
}

void s3_bcache_drop(struct s3_bcache *b, const char *hex)
{
	if (!b || !hex_ok(hex))
		return;
	char path[4200];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", b->dir, hex);
	if (stat(path, &st) == 0 && unlink(path) == 0) {
		pthread_mutex_lock(&b->lock);
		b->bytes -= (uint64_t)st.st_size <= b->bytes ? (uint64_t)st.st_size : b->bytes;
		pthread_mutex_unlock(&b->lock);
	}
}

struct s3_bcache_fill *s3_bcache_fill_new(struct s3_bcache *b, const char *hex, uint64_t size)
{
	if (!b || !hex_ok(hex) || size > b->max / 4)
		return NULL;
	struct s3_bcache_fill *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->b = b;
	f->size = size;
	snprintf(f->hex, sizeof(f->hex), "%s", hex);
	snprintf(f->path, sizeof(f->path), "%s/.fill-%s-XXXXXX", b->dir, hex);
	if ((f->fd = mkostemp(f->path, O_CLOEXEC)) < 0 || !(f->dc = digest_new())) {
		if (f->fd >= 0) {
			close(f->fd);
			(void)unlink(f->path);
		}
		free(f);
		return NULL;
	}
	return f;
}

static void fill_end(struct s3_bcache_fill *f)
{
	if (f->ended)
		return;
	f->ended = true;
	close(f->fd);
	f->fd = -1;
	(void)unlink(f->path);
}

void s3_bcache_fill_add(struct s3_bcache_fill *f, uint64_t off, const void *buf, size_t len)
{
	if (!f || f->ended)
		return;
	if (off > f->next || off + len <= f->next) { /* a gap, or bytes it already has */
		if (off > f->next)
			fill_end(f);
		return;
	}
	size_t skip = (size_t)(f->next - off); /* a window may overlap what came before */
	struct rs_err err = {0};
	if (len - skip > f->size - f->next ||
	    fsutil_write_all(f->fd, (const char *)buf + skip, len - skip, f->path, &err) != RS_OK) {
		fill_end(f);
		return;
	}
	digest_update(f->dc, (const char *)buf + skip, len - skip);
	f->next += len - skip;
}

bool s3_bcache_fill_active(const struct s3_bcache_fill *f)
{
	return f && !f->ended && f->next < f->size;
}

void s3_bcache_fill_free(struct s3_bcache_fill *f)
{
	if (!f)
		return;
	if (!f->ended && f->next == f->size) {
		char got[DIGEST_STR_SIZE], dst[4200];
		digest_final(f->dc, got);
		snprintf(dst, sizeof(dst), "%s/%s", f->b->dir, f->hex);
		if (strncmp(got, "sha256:", 7) == 0 && strcmp(got + 7, f->hex) == 0 && rename(f->path, dst) == 0) {
			close(f->fd);
			f->fd = -1;
			f->ended = true;
			account(f->b, f->size);
		}
	}
	fill_end(f);
	digest_free(f->dc);
	free(f);
}

uint64_t s3_bcache_bytes(struct s3_bcache *b)
{
	if (!b)
		return 0;
	pthread_mutex_lock(&b->lock);
	uint64_t n = b->bytes;
	pthread_mutex_unlock(&b->lock);
	return n;
}
