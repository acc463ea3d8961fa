/* s3_writer: a verified write of one S3 object (s3_writer.h).
 *
 * Bytes are hashed (SHA-256) and appended to an unlinked spool file of at
 * most one part (the client's part size). When the spool is full and more
 * bytes come, a multipart upload is started (once) and the spool goes up as
 * the next part. At commit the digest (and the size, when the caller knew it)
 * is compared with what the caller expected: on a match, an object that never
 * filled a part is PUT from the spool in one request, a larger one gets its
 * last part and CompleteMultipartUpload; on a mismatch the multipart upload is
 * aborted. Until that complete (or that PUT) succeeds nothing is visible
 * under the key, so a writer that fails, is freed early, or whose process
 * dies leaves no object (a killed process leaves an unfinished multipart
 * upload, invisible to GET and listings; a bucket lifecycle rule or GC ends it).
 *
 * Memory: one fixed part list (ETags) grows with the part count; bytes live
 * in the spool file, never in memory. Talks to s3.c (requests) and
 * optimizer/digest.h (the hash). */
#include "s3_writer.h"

#include "digest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PARTS_MAX 10000 /* S3's limit */

struct s3_writer {
	struct s3_client *c;
	char *key;
	char want[DIGEST_STR_SIZE];
	char got[DIGEST_STR_SIZE]; /* set by the commit */
	int64_t want_size;
	struct digest_ctx *d;
	int fd;
	uint64_t spooled;
	uint64_t total;
	size_t part_size;
	char *upload_id;
	char (*etags)[S3_ETAG_MAX];
	int nparts;
	int cap;
	bool failed;
	bool committed;
	bool abort_failed; /* kept for a look in a debugger; the upload is invisible either way */
};

static int spool_open(const char *dir)
{
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != ENOENT))
		return fd;
	char path[4096];
	snprintf(path, sizeof(path), "%s/s3spool-XXXXXX", dir);
	fd = mkostemp(path, O_CLOEXEC);
	if (fd >= 0)
		(void)unlink(path); /* open and nameless: gone with the last close */
	return fd;
}

enum rs_code s3_writer_new(struct s3_writer **out, struct s3_client *c, const char *key, const char *digest,
                           int64_t size, struct rs_err *err)
{
	*out = NULL;
	if (!key[0] || strlen(key) > 1024)
		return rs_err_set(err, RS_BAD_INPUT, "s3 key of %zu bytes (1 to 1024)", strlen(key));
	if (!digest_valid(digest) || strncmp(digest, "sha256:", 7) != 0)
		return rs_err_set(err, RS_DIGEST_INVALID, "s3 writer of %.100s: '%.80s' is not a sha256 digest", key, digest);
	struct s3_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return rs_err_set(err, RS_NOMEM, "s3: out of memory");
	w->fd = -1;
	w->c = c;
	w->want_size = size;
	w->part_size = s3_client_part_size(c);
	snprintf(w->want, sizeof(w->want), "%s", digest);
	if (!(w->key = strdup(key)) || !(w->d = digest_new())) {
		s3_writer_free(w);
		return rs_err_set(err, RS_NOMEM, "s3: out of memory");
	}
	if ((w->fd = spool_open(s3_client_spool_dir(c))) < 0) {
		int e = errno;
		s3_writer_free(w);
		return rs_err_set(err, RS_IO, "s3 spool in %.150s: %s", s3_client_spool_dir(c), strerror(e));
	}
	*out = w;
	return RS_OK;
}

/* the spool goes up as the next part (the multipart upload is started first if need be) */
static enum rs_code flush_part(struct s3_writer *w, struct rs_err *err)
{
	enum rs_code rc;
	if (!w->upload_id && (rc = s3_multipart_init(w->c, w->key, &w->upload_id, err)) != RS_OK)
		return rc;
	if (w->nparts == w->cap) {
		if (w->cap == PARTS_MAX)
			return rs_err_set(err, RS_TOO_LARGE, "s3 writer of %.100s: more than %d parts of %zu bytes", w->key,
			                  PARTS_MAX, w->part_size);
		int ncap = w->cap ? w->cap * 2 : 16;
		if (ncap > PARTS_MAX)
			ncap = PARTS_MAX;
		void *n = realloc(w->etags, (size_t)ncap * sizeof(*w->etags));
		if (!n)
			return rs_err_set(err, RS_NOMEM, "s3: out of memory");
		w->etags = n;
		w->cap = ncap;
	}
	rc = s3_multipart_part(w->c, w->key, w->upload_id, w->nparts + 1, w->fd, 0, w->spooled, w->etags[w->nparts],
	                       err);
	if (rc != RS_OK)
		return rc;
	w->nparts++;
	w->spooled = 0;
	return RS_OK;
}

/* abort the multipart upload, if any: nothing becomes visible */
static void abandon(struct s3_writer *w)
{
	w->failed = true;
	if (!w->upload_id)
		return;
	struct rs_err ignored = {0};
	/* a failed abort leaves an unfinished upload: invisible, and ended by the bucket's lifecycle rule or GC */
	if (s3_multipart_abort(w->c, w->key, w->upload_id, &ignored) != RS_OK)
		w->abort_failed = true;
	free(w->upload_id);
	w->upload_id = NULL;
}

enum rs_code s3_writer_write(struct s3_writer *w, const void *buf, size_t len, struct rs_err *err)
{
	const char *p = buf;
	enum rs_code rc = RS_OK;
	if (w->failed || w->committed)
		return rs_err_set(err, RS_BAD_INPUT, "s3 writer of %.100s: write after %s", w->key,
		                  w->failed ? "a failure" : "the commit");
	if (w->want_size >= 0 && w->total + len > (uint64_t)w->want_size) {
		abandon(w);
		return rs_err_set(err, RS_BAD_INPUT, "s3 writer of %.100s: more than the %lld bytes expected", w->key,
		                  (long long)w->want_size);
	}
	digest_update(w->d, buf, len);
	w->total += len;
	while (len > 0) {
		if (w->spooled == w->part_size && (rc = flush_part(w, err)) != RS_OK)
			break;
		size_t n = w->part_size - w->spooled < len ? (size_t)(w->part_size - w->spooled) : len;
		ssize_t r = pwrite(w->fd, p, n, (off_t)w->spooled);
		if (r <= 0) {
			rc = rs_err_set(err, RS_IO, "s3 spool of %.100s: %s", w->key, r < 0 ? strerror(errno) : "short write");
			break;
		}
		w->spooled += (uint64_t)r;
		p += r;
		len -= (size_t)r;
	}
	if (rc != RS_OK)
		abandon(w);
	return rc;
}

const char *s3_writer_got(const struct s3_writer *w)
{
	return w->got;
}

enum rs_code s3_writer_commit(struct s3_writer *w, struct rs_err *err)
{
	char *got = w->got;
	enum rs_code rc;
	if (w->failed || w->committed)
		return rs_err_set(err, RS_BAD_INPUT, "s3 writer of %.100s: commit after %s", w->key,
		                  w->failed ? "a failure" : "the commit");
	digest_final(w->d, got);
	if (w->want_size >= 0 && w->total != (uint64_t)w->want_size) {
		abandon(w);
		return rs_err_set(err, RS_BAD_INPUT, "s3 writer of %.100s: expected %lld bytes, got %llu; nothing stored",
		                  w->key, (long long)w->want_size, (unsigned long long)w->total);
	}
	if (strcmp(got, w->want) != 0) {
		abandon(w);
		return rs_err_set(err, RS_DIGEST_MISMATCH, "s3 writer of %.60s: expected %.20s..., got %.20s... (%llu bytes); "
		                  "nothing stored", w->key, w->want, got, (unsigned long long)w->total);
	}
	if (!w->upload_id) {
		rc = s3_put_fd(w->c, w->key, w->fd, w->spooled, err);
	} else {
		rc = w->spooled > 0 ? flush_part(w, err) : RS_OK;
		if (rc == RS_OK)
			rc = s3_multipart_complete(w->c, w->key, w->upload_id, (const char (*)[S3_ETAG_MAX])w->etags, w->nparts,
			                           err);
	}
	if (rc != RS_OK) {
		abandon(w);
		return rc;
	}
	w->committed = true;
	return RS_OK;
}

void s3_writer_free(struct s3_writer *w)
{
	if (!w)
		return;
	if (!w->committed)
		abandon(w);
	if (w->fd >= 0)
		close(w->fd);
	digest_free(w->d);
	free(w->upload_id);
	free(w->etags);
	free(w->key);
	free(w);
}
