/* store_s3: the internals shared by the two files of the "s3" storage driver
 * (store_driver.h): store_s3.c (objects, manifests, tags, links, documents,
 * layouts, scratch, accounting) and store_s3_push.c (upload sessions and
 * pushed images). Only they include it. The key layout and the driver's
 * limits are described in store_s3.c and docs/scale-out.md. */
#ifndef RS_PROXY_STORE_S3_H
#define RS_PROXY_STORE_S3_H

#include "s3.h"
#include "store_driver.h"

#include <pthread.h>

#define S3S_KEY_MAX 1024  /* S3's longest key */
#define S3S_PATH_MAX 4096 /* local scratch paths */

struct cachelru;
struct s3s_use; /* the replica's own access bookkeeping of one cache object (store_s3.c) */

struct s3_memo;
struct s3_bcache;

struct s3s {
	const struct rs_config *cfg;
	struct s3_client *c;
	char prefix[256];             /* store.s3.prefix, "" when unset */
	char root[S3S_PATH_MAX];      /* the data directory: scratch only */
	char tmp[S3S_PATH_MAX + 8];   /* <data>/tmp: spools, staged writes, scratch directories */
	char uploads[S3S_PATH_MAX + 16]; /* <data>/s3-uploads: bytes of uploads in progress */
	char *real;                   /* realpath of root, for scrubbing; may be NULL */
	pthread_mutex_t mu;           /* guards what follows */
	uint64_t size;                /* bytes of the cache area (listed at open, tracked since) */
	time_t listed;                /* when eviction last listed the cache area */
	struct s3s_use *uses;         /* cache objects this replica used, pinned or is reading */
	size_t nuses, capuses;
	char (*busy)[STORE_UUID_SIZE]; /* uploads open by a request */
	size_t nbusy, capbusy;
	store_pushed_fetch_fn fetch;
	void *fetch_ctx;
	struct cachelru *lru;         /* the cluster's access bookkeeping (store_set_cluster), or NULL */
	struct s3_memo *memo;         /* manifests read lately (s3_memo.h) */
	struct s3_bcache *bcache;     /* local copies of blobs (s3_bcache.h); NULL when off */
	struct cluster *cluster; /* shares upload sessions while Redis answers; NULL: alone (store_set_cluster) */
};

/* The key of object kind/digest of area (no validation of digest). */
void s3s_object_key(char out[S3S_KEY_MAX], const struct s3s *s, enum store_area area, enum store_kind kind,
                    const char *digest);
/* prefix + the formatted rest; RS_TOO_LARGE when it does not fit a key. */
RS_MUST_CHECK enum rs_code s3s_key(char out[S3S_KEY_MAX], const struct s3s *s, struct rs_err *err, const char *fmt,
                                   ...) RS_PRINTF(4, 5);

/* A small object whole into a new NUL-terminated buffer (*out: free()), at
 * most max bytes (RS_TOO_LARGE). RS_NOT_FOUND when absent. */
RS_MUST_CHECK enum rs_code s3s_get_small(struct s3s *s, const char *key, size_t max, char **out, size_t *out_len,
                                         struct rs_err *err);

/* Object kind/digest of area from a local descriptor (size bytes from
 * offset 0), verified by s3_writer: visible only when it hashes to digest. */
RS_MUST_CHECK enum rs_code s3s_put_verified_fd(struct s3s *s, enum store_area area, enum store_kind kind,
                                               const char *digest, int fd, uint64_t size, struct rs_err *err);

/* Manifest and tag records of either area (store_s3.c). */
RS_MUST_CHECK enum rs_code s3s_manifest_put(void *impl, enum store_area area, const char *digest,
                                            const char *media_type, const void *buf, size_t len, struct rs_err *err);
RS_MUST_CHECK enum rs_code s3s_manifest_get(void *impl, enum store_area area, const char *digest, size_t max_bytes,
                                            char **out_buf, size_t *out_len, char **out_type, struct rs_err *err);
bool s3s_has(void *impl, enum store_area area, enum store_kind kind, const char *digest);
RS_MUST_CHECK enum rs_code s3s_tag_write(struct s3s *s, const char *key, const struct store_tag *t,
                                         struct rs_err *err);
RS_MUST_CHECK enum rs_code s3s_tag_read(struct s3s *s, const char *key, struct store_tag *out, struct rs_err *err);
/* A marker object (links, referrers index entries). */
RS_MUST_CHECK enum rs_code s3s_mark(struct s3s *s, const char *key, struct rs_err *err);
bool s3s_exists(struct s3s *s, const char *key);
/* DELETE key, best effort (failures ignored: callers are best effort by contract). */
void s3s_delete_quiet(struct s3s *s, const char *key);

/* Keys listed under a prefix, by their last component (store_s3_push.c):
 * max > 0 stops there, hex keeps 64-hex names only, below keeps the whole
 * rest of the key after the prefix instead. */
struct s3s_names {
	char **v;
	size_t n, cap, max;
	bool hex, below;
	size_t plen; /* the prefix's length (set by s3s_list_names) */
};
/* Every key under prefix into ns (sorted). */
RS_MUST_CHECK enum rs_code s3s_list_names(struct s3s *s, const char *prefix, struct s3s_names *ns,
                                          struct rs_err *err);
void s3s_names_free(struct s3s_names *ns);
/* The push link marker of kind/digest in repo. */
RS_MUST_CHECK enum rs_code s3s_push_link(struct s3s *s, const char *repo, enum store_kind kind, const char *digest,
                                         struct rs_err *err);

/* The push side's operations (store_s3_push.c), for the driver table. */
void s3s_set_cluster(void *impl, struct cluster *c);
/* Start the cluster-wide access bookkeeping of eviction over c (store_s3.c, cachelru.h) when c
 * has a cluster section; called by s3s_set_cluster. */
void s3s_lru_start(struct s3s *s, struct cluster *c);
enum rs_code s3s_upload_save(struct store_upload *u, struct rs_err *err);
enum rs_code s3s_upload_start(void *impl, const char *repo, char out[STORE_UUID_SIZE], struct rs_err *err);
enum rs_code s3s_upload_open(void *impl, const char *repo, const char *uuid, struct store_upload **out,
                             struct rs_err *err);
uint64_t s3s_upload_size(const struct store_upload *u);
enum rs_code s3s_upload_write(struct store_upload *u, const void *buf, size_t len, struct rs_err *err);
enum rs_code s3s_upload_commit(struct store_upload *u, const char *digest, struct rs_err *err);
void s3s_upload_close(struct store_upload *u);
void s3s_upload_cancel(struct store_upload *u);
void s3s_upload_sweep(void *impl, time_t now, unsigned *out_removed);
bool s3s_pushed_holds(void *impl, const char *repo, enum store_kind kind, const char *digest);
void s3s_pushed_set_fetcher(void *impl, store_pushed_fetch_fn fn, void *ctx);
enum rs_code s3s_pushed_mount(void *impl, const char *repo, const char *from, const char *digest,
                              struct rs_err *err);
enum rs_code s3s_pushed_put_manifest(void *impl, const char *repo, const char *ref, const char *content_type,
                                     const char *body, size_t len, char out_digest[DIGEST_STR_SIZE],
                                     struct rs_err *err);
void s3s_pushed_forget_manifest(void *impl, const char *repo, const char *digest);
enum rs_code s3s_pushed_tag_get(void *impl, const char *repo, const char *tag, struct store_tag *out,
                                struct rs_err *err);
enum rs_code s3s_pushed_tags_list(void *impl, const char *repo, char **out, size_t *out_len, struct rs_err *err);
enum rs_code s3s_pushed_referrers(void *impl, const char *repo, const char *subject, char (**out)[DIGEST_STR_SIZE],
                                  size_t *out_n, size_t max, struct rs_err *err);

/* Deletes and garbage collection of pushed images (store_s3_gc.c). */
enum rs_code s3s_pushed_delete_manifest(void *impl, const char *repo, const char *digest, unsigned *out_tags,
                                        struct rs_err *err);
enum rs_code s3s_pushed_delete_tag(void *impl, const char *repo, const char *tag, struct rs_err *err);
enum rs_code s3s_pushed_delete_blob(void *impl, const char *repo, const char *digest, struct rs_err *err);
enum rs_code s3s_pushed_gc(void *impl, time_t now, unsigned grace_s, struct store_gc_stats *out, struct rs_err *err);

#endif
