/* fsutil: the small file-system helpers every module needs: create a
 * directory with its parents, read a small file whole, write a buffer fully,
 * write a small file (optionally durably), replace a file atomically (temp
 * file, fsync, rename, fsync of the directory; STYLE.md section 2, redis
 * rdbSave), and remove a tree.
 *
 * It lives in config/ beside errors.[ch] because all three libraries use it
 * (rs_config <- rs_optimizer <- rs_proxy) and it needs nothing but errors.h.
 * It does no streaming of large data and knows nothing of blobs or digests:
 * the blob store's verified writer and the layout writer keep their own
 * temp-file logic and use these helpers for the plain steps.
 *
 * Every message names the path and, for a failed system call, the errno
 * text: "mkdir /data/x: Permission denied". */
#ifndef RS_CONFIG_FSUTIL_H
#define RS_CONFIG_FSUTIL_H

#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest path the helpers build (Linux's PATH_MAX; config/rs_limits.h is
 * not <limits.h>). */
#define FSUTIL_PATH_MAX 4096

/* Create directory path (mode 0755) and its missing parents, like mkdir -p.
 * An existing directory is fine. *out_created (may be NULL) is set to true
 * only when this call created path itself, so the caller knows to fsync the
 * parent. Errors: RS_TOO_LARGE path longer than FSUTIL_PATH_MAX - 1 bytes;
 * RS_IO a mkdir failed, or path exists and is not a directory. */
RS_MUST_CHECK enum rs_code fsutil_mkdir_p(const char *path, bool *out_created, struct rs_err *err);

/* Read the regular file path whole into a new NUL-terminated buffer: *out is
 * the caller's (free()), *out_len excludes the NUL. Nothing is allocated on
 * failure (*out is NULL). Errors: RS_NOT_FOUND no such file; RS_TOO_LARGE the
 * file is more than max bytes ("<path> is N bytes, limit is <max>"); RS_BAD_INPUT
 * not a regular file; RS_NOMEM; RS_IO any other failure, or the file changed
 * size while it was read. */
RS_MUST_CHECK enum rs_code fsutil_read_small(char **out, size_t *out_len, const char *path, size_t max,
                                             struct rs_err *err);

/* fsutil_read_small into the caller's buffer out of cap bytes (cap >= 1):
 * the file may have at most cap - 1 bytes, out is NUL-terminated. Same
 * errors, without RS_NOMEM. */
RS_MUST_CHECK enum rs_code fsutil_read_into(char *out, size_t cap, size_t *out_len, const char *path,
                                            struct rs_err *err);

/* Write all len bytes of buf to fd at its file offset, retrying short writes
 * and EINTR; path (borrowed) is only for the message. Errors: RS_IO. */
RS_MUST_CHECK enum rs_code fsutil_write_all(int fd, const void *buf, size_t len, const char *path,
                                            struct rs_err *err);

/* fsutil_write_all with pwrite at offset off; the file offset is unchanged. */
RS_MUST_CHECK enum rs_code fsutil_pwrite_all(int fd, const void *buf, size_t len, uint64_t off, const char *path,
                                             struct rs_err *err);

/* Create or truncate path (mode 0644) and write buf to it; with sync, fsync
 * it before closing. Not atomic: a reader may see a partial file (use
 * fsutil_write_atomic for files others read). Errors: RS_IO. */
RS_MUST_CHECK enum rs_code fsutil_write_file(const char *path, const void *buf, size_t len, bool sync,
                                             struct rs_err *err);

/* Replace path with buf atomically and durably: write a temp file (mode
 * 0644), fsync it, rename it over path, fsync path's directory. The temp file
 * is made in temp_dir, which must be on path's file system (the blob store's
 * tmp/, swept at open), or beside path as "<path>.tmp-XXXXXX" when temp_dir
 * is NULL. On failure before the rename the temp file is removed and path is
 * unchanged. Errors: RS_TOO_LARGE a path too long; RS_IO. */
RS_MUST_CHECK enum rs_code fsutil_write_atomic(const char *path, const char *temp_dir, const void *buf, size_t len,
                                               struct rs_err *err);

/* fsync directory dir, so that a rename or create inside it survives a
 * crash. Errors: RS_IO. */
RS_MUST_CHECK enum rs_code fsutil_fsync_dir(const char *dir, struct rs_err *err);

/* The directory part of path into out (cap bytes, truncated to fit): "." when
 * path has no '/', "/" for a file in the root. */
void fsutil_parent(char *out, size_t cap, const char *path);

/* Remove path and everything under it, best effort, never following symbolic
 * links. What cannot be removed stays; a missing path is fine. */
void fsutil_rm_tree(const char *path);

/* Replace every occurrence of path in the NUL-terminated text by repl, in
 * place, so that messages and documents shown to clients do not reveal
 * where regslim keeps its files. Nothing happens when repl is longer than
 * path (the text never grows). Returns the new length of text. */
size_t fsutil_scrub_path(char *text, const char *path, const char *repl);

#endif
