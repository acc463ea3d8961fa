/* store_driver: what a storage driver implements behind store.h, and what
 * only store.c and the drivers include. A driver is a const table of
 * operations over its own state (impl), in the manner of libgit2's
 * git_odb_backend and distribution's storagedriver.StorageDriver; store.c
 * checks arguments common to every driver and dispatches. Readers, writers
 * and uploads are the driver's own structs with the base below first.
 *
 * Drivers: store_fs.c ("fs": the data directory, through blobstore.c and
 * push.c) and store_s3.c ("s3": an S3 bucket, through s3.c). The contract of each operation is that of the store.h function
 * of the same name. */
#ifndef RS_PROXY_STORE_DRIVER_H
#define RS_PROXY_STORE_DRIVER_H

#include "store.h"

struct store_reader {
	const struct store_driver *drv;
	uint64_t size;
	int fd; /* a local descriptor owned by the reader, or -1 */
};

struct store_writer {
	const struct store_driver *drv;
};

struct store_upload {
	const struct store_driver *drv;
};

struct store_driver {
	const char *name;
	void (*free)(void *impl);
	void (*set_cluster)(void *impl, struct cluster *c); /* NULL: the driver does not coordinate */

	bool (*has)(void *impl, enum store_area area, enum store_kind kind, const char *digest);
	enum rs_code (*reader_open)(void *impl, enum store_area area, enum store_kind kind, const char *digest,
	                            struct store_reader **out, struct rs_err *err);
	ssize_t (*reader_pread)(struct store_reader *r, void *buf, size_t len, uint64_t off, struct rs_err *err);
	void (*reader_close)(struct store_reader *r);
	void (*remove)(void *impl, enum store_area area, enum store_kind kind, const char *digest);

	enum rs_code (*writer_new)(void *impl, enum store_area area, enum store_kind kind, const char *digest,
	                           int64_t size, struct store_writer **out, struct rs_err *err);
	enum rs_code (*writer_write)(struct store_writer *w, const void *buf, size_t len, struct rs_err *err);
	uint64_t (*writer_size)(const struct store_writer *w);
	const char *(*writer_path)(const struct store_writer *w);
	enum rs_code (*writer_commit)(struct store_writer *w, struct rs_err *err);
	void (*writer_abort)(struct store_writer *w);

	enum rs_code (*manifest_put)(void *impl, enum store_area area, const char *digest, const char *media_type,
	                             const void *buf, size_t len, struct rs_err *err);
	enum rs_code (*manifest_get)(void *impl, enum store_area area, const char *digest, size_t max_bytes,
	                             char **out_buf, size_t *out_len, char **out_type, struct rs_err *err);

	enum rs_code (*tag_get)(void *impl, const char *upstream, const char *repo, const char *tag,
	                        struct store_tag *out, struct rs_err *err);
	enum rs_code (*tag_put)(void *impl, const char *upstream, const char *repo, const char *tag,
	                        const struct store_tag *t, struct rs_err *err);
	enum rs_code (*link)(void *impl, const char *upstream, const char *repo, enum store_kind kind,
	                     const char *digest, struct rs_err *err);
	bool (*linked)(void *impl, const char *upstream, const char *repo, enum store_kind kind, const char *digest);
	void (*unlink)(void *impl, const char *upstream, const char *repo, enum store_kind kind, const char *digest);
	enum rs_code (*link_image)(void *impl, const char *upstream, const char *repo, const char *digest,
	                           struct rs_err *err);
	bool (*linked_by_image)(void *impl, const char *upstream, const char *repo, enum store_kind kind,
	                        const char *digest);

	enum rs_code (*export_layout)(void *impl, enum store_area area, const char *digest, const char *tag,
	                              const char *dir, size_t manifest_max, store_fetch_fn fetch, void *ctx,
	                              struct rs_err *err);
	enum rs_code (*scratch_new)(void *impl, const char *prefix, char *out, size_t cap, struct rs_err *err);
	void (*scratch_remove)(void *impl, const char *dir);
	size_t (*scrub_paths)(const void *impl, char *text);

	enum rs_code (*doc_put)(void *impl, enum store_doc doc, const char *repository, const char *key,
	                        const void *buf, size_t len, struct rs_err *err);
	enum rs_code (*doc_get)(void *impl, enum store_doc doc, const char *repository, const char *key, size_t max,
	                        char **out, size_t *out_len, struct rs_err *err);

	enum rs_code (*upload_start)(void *impl, const char *repo, char out[STORE_UUID_SIZE], struct rs_err *err);
	enum rs_code (*upload_open)(void *impl, const char *repo, const char *uuid, struct store_upload **out,
	                            struct rs_err *err);
	uint64_t (*upload_size)(const struct store_upload *u);
	enum rs_code (*upload_write)(struct store_upload *u, const void *buf, size_t len, struct rs_err *err);
	enum rs_code (*upload_commit)(struct store_upload *u, const char *digest, struct rs_err *err);
	enum rs_code (*upload_save)(struct store_upload *u, struct rs_err *err); /* NULL: nothing to do */
	void (*upload_close)(struct store_upload *u);
	void (*upload_cancel)(struct store_upload *u);
	enum rs_code (*upload_reader)(struct store_upload *u, int *out_fd, struct rs_err *err); /* NULL: none */
	void (*upload_sweep)(void *impl, time_t now, unsigned *out_removed);

	bool (*pushed_holds)(void *impl, const char *repo, enum store_kind kind, const char *digest);
	void (*pushed_set_fetcher)(void *impl, store_pushed_fetch_fn fn, void *ctx);
	enum rs_code (*pushed_mount)(void *impl, const char *repo, const char *from, const char *digest,
	                             struct rs_err *err);
	enum rs_code (*pushed_put_manifest)(void *impl, const char *repo, const char *ref, const char *content_type,
	                                    const char *body, size_t len, char out_digest[DIGEST_STR_SIZE],
	                                    struct rs_err *err);
	void (*pushed_forget_manifest)(void *impl, const char *repo, const char *digest);
	enum rs_code (*pushed_tag_get)(void *impl, const char *repo, const char *tag, struct store_tag *out,
	                               struct rs_err *err);
	enum rs_code (*pushed_tags_list)(void *impl, const char *repo, char **out, size_t *out_len,
	                                 struct rs_err *err);

	enum rs_code (*pushed_delete_manifest)(void *impl, const char *repo, const char *digest, unsigned *out_tags,
	                                       struct rs_err *err);
	enum rs_code (*pushed_delete_tag)(void *impl, const char *repo, const char *tag, struct rs_err *err);
	enum rs_code (*pushed_delete_blob)(void *impl, const char *repo, const char *digest, struct rs_err *err);
	enum rs_code (*pushed_gc)(void *impl, time_t now, unsigned grace_s, struct store_gc_stats *out,
	                          struct rs_err *err);

	enum rs_code (*pushed_referrers)(void *impl, const char *repo, const char *subject,
	                                 char (**out)[DIGEST_STR_SIZE], size_t *out_n, size_t max, struct rs_err *err);

	uint64_t (*size)(const void *impl);
	enum rs_code (*evict)(void *impl, uint64_t *out_freed, struct rs_err *err);
	bool (*pin)(void *impl, enum store_area area, enum store_kind kind, const char *digest, time_t until);
	enum rs_code (*check_writable)(void *impl, struct rs_err *err);
	enum rs_code (*scrub_start)(void *impl, struct scrub **out, struct rs_err *err); /* NULL: no scrub */
};

/* A store over drv with its state impl (taken: drv->free(impl) runs at
 * store_free, or at once on failure). store_open() uses it for the driver
 * the configuration names; tests use it for drivers wrapped around one. */
RS_MUST_CHECK enum rs_code store_open_driver(struct store **out, const struct store_driver *drv, void *impl,
                                             struct rs_err *err);

/* The fs driver: open its state for cfg (*out_impl: store_fs_driver.free). */
extern const struct store_driver store_fs_driver;
RS_MUST_CHECK enum rs_code store_fs_open(void **out_impl, const struct rs_config *cfg, struct rs_err *err);

/* The s3 driver (store_s3.c): cfg->store.s3's bucket, cfg->data_dir as
 * scratch. An unreachable object store is not an error here (requests
 * fail with RS_UNAVAILABLE until it answers); RS_CONFIG for a missing
 * credential or a malformed setting, RS_IO for the scratch area. */
extern const struct store_driver store_s3_driver;
RS_MUST_CHECK enum rs_code store_s3_open(void **out_impl, const struct rs_config *cfg, struct rs_err *err);

#endif
