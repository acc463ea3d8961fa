/* s3: a small S3 client for the store's s3 driver (issue 13): one bucket on an
 * S3-compatible endpoint (Ceph RGW, MinIO, AWS), path-style or virtual-host
 * URLs, every request signed with SigV4 by s3_sign.c.
 *
 * Operations: PUT of an object from memory or from a file descriptor of known
 * length (streamed, never read whole), GET streamed to a callback with an
 * optional byte range, HEAD (size, ETag), DELETE, ListObjectsV2 one page at a
 * time (prefix, continuation token), the multipart calls, and a verified
 * writer (s3_writer_*): bytes are hashed as they arrive, parked in a local
 * spool file of at most one part, and uploaded as multipart parts; the object
 * becomes visible (the multipart upload completed, or the spool PUT for a
 * small object) only when the SHA-256 matches the digest the caller expects.
 * Otherwise, or when the writer is freed before its commit, the upload is
 * aborted and nothing is visible under the key.
 *
 * Requests that fail with a 5xx, a transport error or a stall are retried with
 * exponential backoff, at most max_attempts times in all (a GET only until
 * its first body byte reached the callback). Errors name the operation,
 * bucket, key, HTTP status and the S3 error code and message of the XML body:
 * "s3 GET regslim/a/b: HTTP 404 NoSuchKey (The specified key does not exist.)".
 * NoSuchKey (and a 404 to a HEAD) is RS_NOT_FOUND, a digest mismatch
 * RS_DIGEST_MISMATCH, a stall RS_TIMEOUT, an endpoint that cannot be
 * reached or keeps answering 5xx RS_UNAVAILABLE, anything else RS_IO. No secret
 * enters a message. Thread-safe: one client serves every thread (a small pool
 * of libcurl handles keeps connections open).
 *
 * What it does not know: registry objects, key layout, configuration files
 * (the driver gives it a struct s3_config), and HTTP serving. */
#ifndef RS_STORE_S3_H
#define RS_STORE_S3_H

#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define S3_ETAG_MAX 80
#define S3_PART_MIN (5u << 20) /* S3's smallest part but the last one */

struct s3_config {
	const char *endpoint;   /* "http://127.0.0.1:9000", "https://s3.eu-west-1.amazonaws.com" */
	const char *region;     /* "us-east-1" */
	const char *bucket;
	const char *access_key;
	const char *secret_key;
	bool virtual_host;      /* https://BUCKET.host/key instead of https://host/BUCKET/key */
	long timeout_s;         /* a request that makes no progress for this long fails; 0: 30 */
	int max_attempts;       /* tries per request (5xx, transport errors, stalls); 0: 4 */
	long backoff_ms;        /* first retry delay, doubled each time; 0: 200 */
	size_t part_size;       /* multipart part size of the writer, >= S3_PART_MIN; 0: 8 MiB */
	const char *spool_dir;  /* where the writer's spool file lives; NULL: $TMPDIR or /tmp */
};

struct s3_client;

/* A client for cfg (copied: cfg's strings may go after the call). *out:
 * s3_client_free(). RS_CONFIG for a missing or malformed setting (the message
 * names it), RS_NOMEM. */
RS_MUST_CHECK enum rs_code s3_client_new(struct s3_client **out, const struct s3_config *cfg, struct rs_err *err);
void s3_client_free(struct s3_client *c);
/* The writer's part size and spool directory (borrowed from c). */
size_t s3_client_part_size(const struct s3_client *c);
const char *s3_client_spool_dir(const struct s3_client *c);

/* A secret from the environment variable env_name (when not NULL and set) or
 * else from the file path (when not NULL; one line, trailing newline
 * dropped). *out is malloc'd: free it (after wiping). RS_CONFIG naming the
 * variable or file when neither gives a value. */
RS_MUST_CHECK enum rs_code s3_secret_load(char **out, const char *env_name, const char *path, struct rs_err *err);

struct s3_object_info {
	int64_t size;          /* the object's size (for a ranged GET: of the whole object when known, else -1) */
	char etag[S3_ETAG_MAX]; /* as sent, quotes included; "" if none */
};

/* Called for every chunk of a GET body; non-RS_OK cancels the transfer. */
typedef enum rs_code (*s3_data_fn)(void *arg, const void *buf, size_t len, struct rs_err *err);
/* Called for each key of a listing page. */
typedef enum rs_code (*s3_list_fn)(void *arg, const char *key, int64_t size, struct rs_err *err);

/* PUT key from len bytes at buf (the payload hash is signed). */
RS_MUST_CHECK enum rs_code s3_put(struct s3_client *c, const char *key, const void *buf, size_t len,
                                  struct rs_err *err);
/* PUT key from size bytes of fd, read with pread from offset 0 (UNSIGNED-PAYLOAD). */
RS_MUST_CHECK enum rs_code s3_put_fd(struct s3_client *c, const char *key, int fd, uint64_t size, struct rs_err *err);
/* GET key, bytes first..last inclusive (first < 0: the whole object; last < 0:
 * to the end), each chunk to fn. out_info may be NULL. RS_RANGE for an
 * unsatisfiable range. */
RS_MUST_CHECK enum rs_code s3_get(struct s3_client *c, const char *key, int64_t first, int64_t last, s3_data_fn fn,
                                  void *arg, struct s3_object_info *out_info, struct rs_err *err);
/* HEAD key. RS_NOT_FOUND when there is no such object. */
RS_MUST_CHECK enum rs_code s3_head(struct s3_client *c, const char *key, struct s3_object_info *out,
                                   struct rs_err *err);
/* DELETE key (S3 answers 204 whether it existed or not). */
RS_MUST_CHECK enum rs_code s3_delete(struct s3_client *c, const char *key, struct rs_err *err);
/* Called for each key of a dated listing, with its LastModified (0 when unreadable). */
typedef enum rs_code (*s3_list_dated_fn)(void *arg, const char *key, int64_t size, time_t modified,
                                         struct rs_err *err);
/* As s3_list (the server's page size), each key with its LastModified (the garbage collection's ages). */
RS_MUST_CHECK enum rs_code s3_list_dated(struct s3_client *c, const char *prefix, const char *token,
                                         s3_list_dated_fn fn, void *arg, char **out_next, struct rs_err *err);
/* One ListObjectsV2 page: keys under prefix (NULL: all) after token (NULL:
 * from the start), at most max_keys (0: the server's 1000), each to fn.
 * *out_next: the next page's token (malloc'd) or NULL after the last page. */
RS_MUST_CHECK enum rs_code s3_list(struct s3_client *c, const char *prefix, const char *token, int max_keys,
                                   s3_list_fn fn, void *arg, char **out_next, struct rs_err *err);

/* ---- multipart, as S3 defines it --------------------------------------- */

/* *out_upload_id is malloc'd. */
RS_MUST_CHECK enum rs_code s3_multipart_init(struct s3_client *c, const char *key, char **out_upload_id,
                                             struct rs_err *err);
/* Part part_no (1..10000) from len bytes of fd at offset off; its ETag into out_etag. */
RS_MUST_CHECK enum rs_code s3_multipart_part(struct s3_client *c, const char *key, const char *upload_id,
                                             int part_no, int fd, uint64_t off, uint64_t len,
                                             char out_etag[S3_ETAG_MAX], struct rs_err *err);
/* Complete with nparts ETags (part i+1 has etags[i]). */
RS_MUST_CHECK enum rs_code s3_multipart_complete(struct s3_client *c, const char *key, const char *upload_id,
                                                 const char (*etags)[S3_ETAG_MAX], int nparts, struct rs_err *err);
RS_MUST_CHECK enum rs_code s3_multipart_abort(struct s3_client *c, const char *key, const char *upload_id,
                                              struct rs_err *err);
/* The upload ids of unfinished multipart uploads of key (for tests and GC): calls fn(arg, upload_id, -1). */
RS_MUST_CHECK enum rs_code s3_multipart_list(struct s3_client *c, const char *key, s3_list_fn fn, void *arg,
                                             struct rs_err *err);

#endif
