/* fsutil: small file-system helpers shared by config/, optimizer/ and proxy/
 * (see fsutil.h). Plain POSIX calls, no allocation except the buffer
 * fsutil_read_small returns. */
#include "fsutil.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum rs_code fsutil_mkdir_p(const char *path, bool *out_created, struct rs_err *err)
{
	char buf[FSUTIL_PATH_MAX];
	size_t len = strlen(path);
	if (out_created)
		*out_created = false;
	if (len >= sizeof(buf))
		return rs_err_set(err, RS_TOO_LARGE, "path %.100s... is %zu bytes, limit is %zu", path, len,
		                  sizeof(buf) - 1);
	memcpy(buf, path, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		char saved = buf[i];
		buf[i] = '\0';
		if (mkdir(buf, 0755) == 0) {
			if (saved == '\0' && out_created)
				*out_created = true;
		} else if (errno != EEXIST) {
			return rs_err_set(err, RS_IO, "mkdir %s: %s", buf, strerror(errno));
		}
		buf[i] = saved;
	}
	struct stat st;
	if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
		return rs_err_set(err, RS_IO, "%s exists and is not a directory", path);
	return RS_OK;
}

/* Open path for reading and check it is a regular file of at most max bytes. */
static enum rs_code open_small(int *out_fd, size_t *out_size, const char *path, size_t max, struct rs_err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return rs_err_set(err, errno == ENOENT ? RS_NOT_FOUND : RS_IO, "open %s: %s", path, strerror(errno));
	struct stat st;
	enum rs_code rc = RS_OK;
	if (fstat(fd, &st) != 0)
		rc = rs_err_set(err, RS_IO, "stat %s: %s", path, strerror(errno));
	else if (!S_ISREG(st.st_mode))
		rc = rs_err_set(err, RS_BAD_INPUT, "%s is not a regular file", path);
	else if ((uint64_t)st.st_size > max)
		rc = rs_err_set(err, RS_TOO_LARGE, "%s is %lld bytes, limit is %zu", path, (long long)st.st_size, max);
	if (rc != RS_OK) {
		close(fd);
		return rc;
	}
	*out_fd = fd;
	*out_size = (size_t)st.st_size;
	return RS_OK;
}

/* Read exactly size bytes from fd into buf and make sure nothing follows: a
 * file that changes while we read it is an error, never a silent truncation. */
static enum rs_code read_exact(int fd, char *buf, size_t size, const char *path, struct rs_err *err)
{
	size_t got = 0;
	for (;;) {
		char probe;
		bool past = got == size;
		ssize_t n = past ? read(fd, &probe, 1) : read(fd, buf + got, size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return rs_err_set(err, RS_IO, "read %s: %s", path, strerror(errno));
		if (n == 0 && past)
			return RS_OK;
		if (n == 0 || past)
			return rs_err_set(err, RS_IO, "%s changed size while it was read (expected %zu bytes)", path,
			                  size);
		got += (size_t)n;
	}
}

enum rs_code fsutil_read_small(char **out, size_t *out_len, const char *path, size_t max, struct rs_err *err)
{
	*out = NULL;
	int fd = -1;
	size_t size = 0;
	enum rs_code rc = open_small(&fd, &size, path, max, err);
	if (rc != RS_OK)
		return rc;
	char *buf = malloc(size + 1);
	if (!buf)
		rc = rs_err_set(err, RS_NOMEM, "out of memory reading %s (%zu bytes)", path, size);
	else
		rc = read_exact(fd, buf, size, path, err);
	close(fd);
	if (rc != RS_OK) {
		free(buf);
		return rc;
	}
	buf[size] = '\0';
	*out = buf;
	*out_len = size;
	return RS_OK;
}

enum rs_code fsutil_read_into(char *out, size_t cap, size_t *out_len, const char *path, struct rs_err *err)
{
	int fd = -1;
	size_t size = 0;
	enum rs_code rc = open_small(&fd, &size, path, cap - 1, err);
	if (rc != RS_OK)
		return rc;
	rc = read_exact(fd, out, size, path, err);
	close(fd);
	if (rc != RS_OK)
		return rc;
	out[size] = '\0';
	*out_len = size;
	return RS_OK;
}

/* Write all of buf: at the file offset when off is negative, else with pwrite at off. */
static enum rs_code write_loop(int fd, const void *buf, size_t len, int64_t off, const char *path,
                               struct rs_err *err)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = off < 0 ? write(fd, p, len) : pwrite(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return rs_err_set(err, RS_IO, "write %s: %s", path, strerror(errno));
		p += n;
		len -= (size_t)n;
		if (off >= 0)
			off += n;
	}
	return RS_OK;
}

enum rs_code fsutil_write_all(int fd, const void *buf, size_t len, const char *path, struct rs_err *err)
{
	return write_loop(fd, buf, len, -1, path, err);
}

enum rs_code fsutil_pwrite_all(int fd, const void *buf, size_t len, uint64_t off, const char *path,
                               struct rs_err *err)
{
	assert(off <= INT64_MAX);
	return write_loop(fd, buf, len, (int64_t)off, path, err);
}

/* Write, optionally fsync, and close fd (always closed). */
static enum rs_code write_close(int fd, const void *buf, size_t len, bool sync, const char *path,
                                struct rs_err *err)
{
	enum rs_code rc = fsutil_write_all(fd, buf, len, path, err);
	if (rc == RS_OK && sync && fsync(fd) != 0)
		rc = rs_err_set(err, RS_IO, "fsync %s: %s", path, strerror(errno));
	if (close(fd) != 0 && rc == RS_OK)
		rc = rs_err_set(err, RS_IO, "close %s: %s", path, strerror(errno));
	return rc;
}

enum rs_code fsutil_write_file(const char *path, const void *buf, size_t len, bool sync, struct rs_err *err)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return rs_err_set(err, RS_IO, "create %s: %s", path, strerror(errno));
	return write_close(fd, buf, len, sync, path, err);
}

enum rs_code fsutil_write_atomic(const char *path, const char *temp_dir, const void *buf, size_t len,
                                 struct rs_err *err)
{
	char temp[FSUTIL_PATH_MAX], dir[FSUTIL_PATH_MAX];
	int n = temp_dir ? snprintf(temp, sizeof(temp), "%s/tmp-XXXXXX", temp_dir)
	                 : snprintf(temp, sizeof(temp), "%s.tmp-XXXXXX", path);
	if (n < 0 || (size_t)n >= sizeof(temp))
		return rs_err_set(err, RS_TOO_LARGE, "temp path for %.100s... is longer than %zu bytes", path,
		                  sizeof(temp) - 1);
	int fd = mkstemp(temp);
	if (fd < 0)
		return rs_err_set(err, RS_IO, "create %s: %s", temp, strerror(errno));
	enum rs_code rc = RS_OK;
	/* mkstemp makes 0600; what we publish is world-readable like any other file. */
	if (fchmod(fd, 0644) != 0)
		rc = rs_err_set(err, RS_IO, "chmod %s: %s", temp, strerror(errno));
	if (rc == RS_OK)
		rc = write_close(fd, buf, len, true, temp, err);
	else
		close(fd);
	if (rc == RS_OK && rename(temp, path) != 0)
		rc = rs_err_set(err, RS_IO, "rename %s to %s: %s", temp, path, strerror(errno));
	if (rc != RS_OK) {
		(void)unlink(temp); /* ours and useless now; path is unchanged */
		return rc;
	}
	fsutil_parent(dir, sizeof(dir), path);
	return fsutil_fsync_dir(dir, err);
}

enum rs_code fsutil_fsync_dir(const char *dir, struct rs_err *err)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return rs_err_set(err, RS_IO, "open %s: %s", dir, strerror(errno));
	enum rs_code rc = RS_OK;
	if (fsync(fd) != 0)
		rc = rs_err_set(err, RS_IO, "fsync %s: %s", dir, strerror(errno));
	close(fd);
	return rc;
}

void fsutil_parent(char *out, size_t cap, const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		snprintf(out, cap, ".");
	else if (slash == path)
		snprintf(out, cap, "/");
	else
		snprintf(out, cap, "%.*s", (int)(slash - path), path);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		(void)rmdir(path); /* best effort: the caller asked for no report */
	else
		(void)unlink(path); /* likewise */
	return 0;
}

void fsutil_rm_tree(const char *path)
{
	(void)nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); /* best effort, see rm_entry */
}

size_t fsutil_scrub_path(char *text, const char *path, const char *repl)
{
	size_t pl = strlen(path), rl = strlen(repl);
	if (pl == 0 || rl > pl)
		return strlen(text);
	for (char *p = strstr(text, path); p; p = strstr(p + rl, path)) {
		memcpy(p, repl, rl);
		memmove(p + rl, p + pl, strlen(p + pl) + 1);
	}
	return strlen(text);
}
