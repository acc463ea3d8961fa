/* store: the storage interface's front (store.h). It opens the driver the
 * configuration names, checks what every driver would check (digests, the
 * scratch prefix) and dispatches each call to the driver's table
 * (store_driver.h). The one thing it does itself is store_open_fd for
 * drivers without local files: the bytes are copied into an unlinked file
 * of the scratch area. It talks to the drivers only; no HTTP, no upstream. */
#include "store.h"

#include "store_driver.h"

#include "scrub.h"

#include "fsutil.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SPOOL_BUF (64 * 1024)

struct store {
	const struct store_driver *drv;
	void *impl;
};

/* ------------------------------------------------------------ lifecycle */

enum rs_code store_open_driver(struct store **out, const struct store_driver *drv, void *impl, struct rs_err *err)
{
	assert(out && drv);
	*out = NULL;
	struct store *s = calloc(1, sizeof(*s));
	if (!s) {
		drv->free(impl);
		return rs_err_set(err, RS_NOMEM, "out of memory opening the store");
	}
	s->drv = drv;
	s->impl = impl;
	*out = s;
	return RS_OK;
}

enum rs_code store_open(struct store **out, const struct rs_config *cfg, struct rs_err *err)
{
	assert(out && cfg);
	*out = NULL;
	void *impl = NULL;
	bool s3 = cfg->store.driver && strcmp(cfg->store.driver, "s3") == 0;
	enum rs_code rc = s3 ? store_s3_open(&impl, cfg, err) : store_fs_open(&impl, cfg, err);
	return rc ? rc : store_open_driver(out, s3 ? &store_s3_driver : &store_fs_driver, impl, err);
}

void store_free(struct store *s)
{
	if (!s)
		return;
	s->drv->free(s->impl);
	free(s);
}

const char *store_driver_name(const struct store *s)
{
	return s->drv->name;
}

void store_set_cluster(struct store *s, struct cluster *c)
{
	if (s->drv->set_cluster)
		s->drv->set_cluster(s->impl, c);
}

/* ------------------------------------------------------------ objects */

bool store_has(struct store *s, enum store_area area, enum store_kind kind, const char *digest)
{
	return digest_valid(digest) && s->drv->has(s->impl, area, kind, digest);
}

enum rs_code store_reader_open(struct store *s, enum store_area area, enum store_kind kind, const char *digest,
                               struct store_reader **out, struct rs_err *err)
{
	*out = NULL;
	return s->drv->reader_open(s->impl, area, kind, digest, out, err);
}

uint64_t store_reader_size(const struct store_reader *r)
{
	return r->size;
}

ssize_t store_reader_pread(struct store_reader *r, void *buf, size_t len, uint64_t off, struct rs_err *err)
{
	return r->drv->reader_pread(r, buf, len, off, err);
}

int store_reader_fd(const struct store_reader *r)
{
	return r->fd;
}

int store_reader_take_fd(struct store_reader *r)
{
	int fd = r->fd;
	r->fd = -1;
	return fd;
}

void store_reader_close(struct store_reader *r)
{
	if (r)
		r->drv->reader_close(r);
}

/* Copy r's bytes into an unlinked file of the scratch area. */
static enum rs_code spool(struct store *s, struct store_reader *r, const char *digest, int *out_fd,
                          struct rs_err *err)
{
	char dir[4096], path[4200];
	enum rs_code rc = store_scratch_new(s, "spool", dir, sizeof(dir), err);
	if (rc)
		return rc;
	snprintf(path, sizeof(path), "%s/o", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	store_scratch_remove(s, dir); /* the open descriptor keeps the file */
	if (fd < 0)
		return rs_err_set(err, RS_IO, "spooling %s: %s", digest, strerror(errno));
	char *buf = malloc(SPOOL_BUF);
	if (!buf)
		rc = rs_err_set(err, RS_NOMEM, "out of memory spooling %s", digest);
	for (uint64_t off = 0; rc == RS_OK && off < r->size;) {
		ssize_t n = store_reader_pread(r, buf, SPOOL_BUF, off, err);
		if (n <= 0) {
			rc = n < 0 ? err->code : rs_err_set(err, RS_IO, "%s ended after %llu bytes", digest,
			                                         (unsigned long long)off);
			break;
		}
		if ((rc = fsutil_write_all(fd, buf, (size_t)n, path, err)))
			break;
		off += (uint64_t)n;
	}
	free(buf);
	if (rc == RS_OK && lseek(fd, 0, SEEK_SET) != 0)
		rc = rs_err_set(err, RS_IO, "spooling %s: %s", digest, strerror(errno));
	if (rc) {
		close(fd);
		return rc;
	}
	*out_fd = fd;
	return RS_OK;
}

enum rs_code store_open_fd(struct store *s, enum store_area area, enum store_kind kind, const char *digest,
                           int *out_fd, uint64_t *out_size, struct rs_err *err)
{
	*out_fd = -1;
	struct store_reader *r = NULL;
	enum rs_code rc = store_reader_open(s, area, kind, digest, &r, err);
	if (rc)
		return rc;
	*out_size = r->size;
	if ((*out_fd = store_reader_take_fd(r)) < 0)
		rc = spool(s, r, digest, out_fd, err);
	store_reader_close(r);
	return rc;
}

void store_remove(struct store *s, enum store_area area, enum store_kind kind, const char *digest)
{
	if (digest_valid(digest))
		s->drv->remove(s->impl, area, kind, digest);
}

enum rs_code store_writer_new(struct store_writer **out, struct store *s, enum store_area area,
                              enum store_kind kind, const char *expected_digest, int64_t expected_size,
                              struct rs_err *err)
{
	*out = NULL;
	return s->drv->writer_new(s->impl, area, kind, expected_digest, expected_size, out, err);
}

enum rs_code store_writer_write(struct store_writer *w, const void *buf, size_t len, struct rs_err *err)
{
	return w->drv->writer_write(w, buf, len, err);
}

uint64_t store_writer_size(const struct store_writer *w)
{
	return w->drv->writer_size(w);
}

const char *store_writer_path(const struct store_writer *w)
{
	return w->drv->writer_path(w);
}

enum rs_code store_writer_commit(struct store_writer *w, struct rs_err *err)
{
	return w->drv->writer_commit(w, err);
}

void store_writer_abort(struct store_writer *w)
{
	if (w)
		w->drv->writer_abort(w);
}

enum rs_code store_manifest_put(struct store *s, enum store_area area, const char *digest, const char *media_type,
                                const void *buf, size_t len, struct rs_err *err)
{
	return s->drv->manifest_put(s->impl, area, digest, media_type, buf, len, err);
}

enum rs_code store_manifest_get(struct store *s, enum store_area area, const char *digest, size_t max_bytes,
                                char **out_buf, size_t *out_len, char **out_type, struct rs_err *err)
{
	*out_buf = NULL;
	*out_type = NULL;
	return s->drv->manifest_get(s->impl, area, digest, max_bytes, out_buf, out_len, out_type, err);
}

/* ------------------------------------------------------------ cache tags and links */

enum rs_code store_tag_get(struct store *s, const char *upstream, const char *repo, const char *tag,
                           struct store_tag *out, struct rs_err *err)
{
	return s->drv->tag_get(s->impl, upstream, repo, tag, out, err);
}

enum rs_code store_tag_put(struct store *s, const char *upstream, const char *repo, const char *tag,
                           const struct store_tag *t, struct rs_err *err)
{
	return s->drv->tag_put(s->impl, upstream, repo, tag, t, err);
}

enum rs_code store_link(struct store *s, const char *upstream, const char *repo, enum store_kind kind,
                        const char *digest, struct rs_err *err)
{
	return s->drv->link(s->impl, upstream, repo, kind, digest, err);
}

bool store_linked(struct store *s, const char *upstream, const char *repo, enum store_kind kind, const char *digest)
{
	return s->drv->linked(s->impl, upstream, repo, kind, digest);
}

void store_unlink(struct store *s, const char *upstream, const char *repo, enum store_kind kind, const char *digest)
{
	s->drv->unlink(s->impl, upstream, repo, kind, digest);
}

enum rs_code store_link_image(struct store *s, const char *upstream, const char *repo, const char *digest,
                              struct rs_err *err)
{
	return s->drv->link_image(s->impl, upstream, repo, digest, err);
}

bool store_linked_by_image(struct store *s, const char *upstream, const char *repo, enum store_kind kind,
                           const char *digest)
{
	return s->drv->linked_by_image(s->impl, upstream, repo, kind, digest);
}

/* ------------------------------------------------------------ layouts, scratch */

enum rs_code store_export_layout(struct store *s, enum store_area area, const char *digest, const char *tag,
                                 const char *dir, size_t manifest_max, store_fetch_fn fetch, void *ctx,
                                 struct rs_err *err)
{
	return s->drv->export_layout(s->impl, area, digest, tag, dir, manifest_max, fetch, ctx, err);
}

enum rs_code store_scratch_new(struct store *s, const char *prefix, char *out, size_t cap, struct rs_err *err)
{
	size_t n = strlen(prefix);
	if (n == 0 || n > 32 || strspn(prefix, "abcdefghijklmnopqrstuvwxyz") != n)
		return rs_err_set(err, RS_BAD_INPUT, "scratch prefix '%.40s' is not [a-z]{1,32}", prefix);
	return s->drv->scratch_new(s->impl, prefix, out, cap, err);
}

void store_scratch_remove(struct store *s, const char *dir)
{
	if (dir && dir[0])
		s->drv->scratch_remove(s->impl, dir);
}

size_t store_scrub_paths(const struct store *s, char *text)
{
	return s->drv->scrub_paths(s->impl, text);
}

/* ------------------------------------------------------------ documents */

enum rs_code store_doc_put(struct store *s, enum store_doc doc, const char *repository, const char *key,
                           const void *buf, size_t len, struct rs_err *err)
{
	return s->drv->doc_put(s->impl, doc, repository, key, buf, len, err);
}

enum rs_code store_doc_get(struct store *s, enum store_doc doc, const char *repository, const char *key,
                           size_t max, char **out, size_t *out_len, struct rs_err *err)
{
	*out = NULL;
	return s->drv->doc_get(s->impl, doc, repository, key, max, out, out_len, err);
}

/* ------------------------------------------------------------ uploads */

enum rs_code store_upload_start(struct store *s, const char *repo, char out[STORE_UUID_SIZE], struct rs_err *err)
{
	return s->drv->upload_start(s->impl, repo, out, err);
}

enum rs_code store_upload_open(struct store *s, const char *repo, const char *uuid, struct store_upload **out,
                               struct rs_err *err)
{
	*out = NULL;
	return s->drv->upload_open(s->impl, repo, uuid, out, err);
}

uint64_t store_upload_size(const struct store_upload *u)
{
	return u->drv->upload_size(u);
}

enum rs_code store_upload_write(struct store_upload *u, const void *buf, size_t len, struct rs_err *err)
{
	return u->drv->upload_write(u, buf, len, err);
}

enum rs_code store_upload_reader(struct store_upload *u, int *out_fd, struct rs_err *err)
{
	*out_fd = -1;
	if (!u->drv->upload_reader)
		return rs_err_set(err, RS_UNSUPPORTED, "this store cannot read an upload as it arrives");
	return u->drv->upload_reader(u, out_fd, err);
}

enum rs_code store_upload_commit(struct store_upload *u, const char *digest, struct rs_err *err)
{
	return u->drv->upload_commit(u, digest, err);
}

enum rs_code store_upload_save(struct store_upload *u, struct rs_err *err)
{
	return u->drv->upload_save ? u->drv->upload_save(u, err) : RS_OK;
}

void store_upload_close(struct store_upload *u)
{
	if (u)
		u->drv->upload_close(u);
}

void store_upload_cancel(struct store_upload *u)
{
	if (u)
		u->drv->upload_cancel(u);
}

void store_upload_sweep(struct store *s, time_t now, unsigned *out_removed)
{
	s->drv->upload_sweep(s->impl, now, out_removed);
}

/* ------------------------------------------------------------ pushed images */

bool store_pushed_holds(struct store *s, const char *repo, enum store_kind kind, const char *digest)
{
	return s->drv->pushed_holds(s->impl, repo, kind, digest);
}

void store_pushed_set_fetcher(struct store *s, store_pushed_fetch_fn fn, void *ctx)
{
	s->drv->pushed_set_fetcher(s->impl, fn, ctx);
}

enum rs_code store_pushed_mount(struct store *s, const char *repo, const char *from, const char *digest,
                                struct rs_err *err)
{
	return s->drv->pushed_mount(s->impl, repo, from, digest, err);
}

enum rs_code store_pushed_put_manifest(struct store *s, const char *repo, const char *ref, const char *content_type,
                                       const char *body, size_t len, char out_digest[DIGEST_STR_SIZE],
                                       struct rs_err *err)
{
	return s->drv->pushed_put_manifest(s->impl, repo, ref, content_type, body, len, out_digest, err);
}

void store_pushed_forget_manifest(struct store *s, const char *repo, const char *digest)
{
	s->drv->pushed_forget_manifest(s->impl, repo, digest);
}

enum rs_code store_pushed_tag_get(struct store *s, const char *repo, const char *tag, struct store_tag *out,
                                  struct rs_err *err)
{
	return s->drv->pushed_tag_get(s->impl, repo, tag, out, err);
}

enum rs_code store_pushed_tags_list(struct store *s, const char *repo, char **out, size_t *out_len,
                                    struct rs_err *err)
{
	*out = NULL;
	return s->drv->pushed_tags_list(s->impl, repo, out, out_len, err);
}

/* A driver without deletes (both drivers have them; a test driver may not):
 * 405 UNSUPPORTED naming it, rather than a crash through a NULL entry. */
static enum rs_code no_deletes(const struct store *s, struct rs_err *err)
{
	return rs_err_set(err, RS_UNSUPPORTED, "deleting pushed content is not supported by the %s store driver yet",
	                  s->drv->name);
}

enum rs_code store_pushed_delete_manifest(struct store *s, const char *repo, const char *digest, unsigned *out_tags,
                                          struct rs_err *err)
{
	if (out_tags)
		*out_tags = 0;
	enum rs_code rc = digest_parse(digest, err);
	if (rc == RS_OK && !s->drv->pushed_delete_manifest)
		rc = no_deletes(s, err);
	return rc ? rc : s->drv->pushed_delete_manifest(s->impl, repo, digest, out_tags, err);
}

enum rs_code store_pushed_delete_tag(struct store *s, const char *repo, const char *tag, struct rs_err *err)
{
	return s->drv->pushed_delete_tag ? s->drv->pushed_delete_tag(s->impl, repo, tag, err) : no_deletes(s, err);
}

enum rs_code store_pushed_delete_blob(struct store *s, const char *repo, const char *digest, struct rs_err *err)
{
	enum rs_code rc = digest_parse(digest, err);
	if (rc == RS_OK && !s->drv->pushed_delete_blob)
		rc = no_deletes(s, err);
	return rc ? rc : s->drv->pushed_delete_blob(s->impl, repo, digest, err);
}

enum rs_code store_pushed_gc(struct store *s, time_t now, unsigned grace_s, struct store_gc_stats *out,
                             struct rs_err *err)
{
	memset(out, 0, sizeof(*out));
	return s->drv->pushed_gc ? s->drv->pushed_gc(s->impl, now, grace_s, out, err) : no_deletes(s, err);
}

/* ------------------------------------------------------------ accounting */

uint64_t store_size(const struct store *s)
{
	return s->drv->size(s->impl);
}

enum rs_code store_evict(struct store *s, uint64_t *out_freed, struct rs_err *err)
{
	return s->drv->evict(s->impl, out_freed, err);
}

/* ------------------------------------------------------------ referrers, pins, health */

enum rs_code store_pushed_referrers(struct store *s, const char *repo, const char *subject,
                                    char (**out)[DIGEST_STR_SIZE], size_t *out_n, size_t max, struct rs_err *err)
{
	*out = NULL;
	*out_n = 0;
	return s->drv->pushed_referrers(s->impl, repo, subject, out, out_n, max, err);
}

bool store_pin(struct store *s, enum store_area area, enum store_kind kind, const char *digest, time_t until)
{
	return digest_valid(digest) && s->drv->pin(s->impl, area, kind, digest, until);
}

enum rs_code store_check_writable(struct store *s, struct rs_err *err)
{
	return s->drv->check_writable(s->impl, err);
}

enum rs_code store_scrub_start(struct store *s, struct scrub **out, struct rs_err *err)
{
	*out = NULL;
	return s->drv->scrub_start ? s->drv->scrub_start(s->impl, out, err) : RS_OK;
}

void store_scrub_stop(struct scrub *sc)
{
	scrub_stop(sc);
}
