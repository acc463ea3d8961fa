/* upstream_push: pushes images to a configured upstream registry with
 * regslim's OWN credentials (the upstream's username / password from the
 * configuration; never the pushing client's). Runs on the transfer core
 * (xfer.h), one peer per upstream_push object.
 *
 * Auth: the first request learns the upstream's challenge from GET /v2/;
 * Basic is answered with the configured credentials, Bearer with a token
 * fetched from the realm for scope repository:<repo>:pull,push (plus
 * repository:<from>:pull for a cross-repository mount), cached per scope
 * (upstream_auth.h). A 401 drops the token and retries once.
 *
 * Staged blobs (upstream_push_stage_*): an upload session opened before
 * the blob's digest is known, filled by one PATCH whose body (chunked) is
 * read as it arrives, then completed with PUT ?digest= or deleted.
 *
 * Blobs: HEAD first (present: nothing to send), then a cross-repository
 * mount when a source repository is known, else POST an upload and PUT the
 * bytes monolithically, streamed from a file descriptor (never held in
 * memory; a small document regslim makes is sent from memory). Manifests:
 * PUT with their media type as Content-Type, after every blob (and, for an
 * index, every child manifest) it references. An upload Location may be
 * absolute or relative (to the POST URL) but must be on the upstream's
 * origin; a Docker-Content-Digest in the answer to a PUT must be
 * the digest of what was sent. Every request is bounded by the upstream's
 * timeout_s (connect, and no progress).
 * Errors are RS_UPSTREAM naming the upstream, the request and the status
 * with the registry's error message; RS_IO, RS_NOMEM. */
#ifndef RS_PROXY_UPSTREAM_PUSH_H
#define RS_PROXY_UPSTREAM_PUSH_H

#include "config.h"
#include "digest.h"
#include "errors.h"

#include <stddef.h>
#include <stdint.h>

struct upstream_push;

/* up is borrowed and must outlive the object. *out: upstream_push_free(). */
RS_MUST_CHECK enum rs_code upstream_push_new(struct upstream_push **out, const struct rs_upstream_config *up,
					     struct rs_err *err);
void upstream_push_free(struct upstream_push *u);

/* Where the bytes of an image come from. open_blob gives a readable fd
 * positioned at 0 (the caller of open_blob closes it) and its size;
 * read_manifest gives a new buffer (free()) and its media type (new,
 * free()). RS_NOT_FOUND when absent. */
struct upstream_push_source {
	enum rs_code (*open_blob)(void *ctx, const char *digest, int *fd, uint64_t *size, struct rs_err *err);
	enum rs_code (*read_manifest)(void *ctx, const char *digest, char **buf, size_t *len, char **media_type,
				      struct rs_err *err);
	void *ctx;
};

/* Push one blob to repo (skipped when the upstream has it; mounted from
 * `from` when not NULL and the upstream allows it). *out_sent (may be NULL)
 * is true when bytes were uploaded. */
RS_MUST_CHECK enum rs_code upstream_push_blob(struct upstream_push *u, const char *repo, const char *digest,
					      const struct upstream_push_source *src, const char *from,
					      bool *out_sent, struct rs_err *err);

/* Push a small blob held in memory (buf[0..len), borrowed) to repo, as
 * upstream_push_blob does (skipped when the upstream has it); out receives
 * its digest. For documents regslim makes, such as signatures. */
RS_MUST_CHECK enum rs_code upstream_push_blob_bytes(struct upstream_push *u, const char *repo, const void *buf,
						    size_t len, char out[DIGEST_STR_SIZE], struct rs_err *err);

/* PUT a manifest (borrowed bytes) at repo:ref with media_type. */
RS_MUST_CHECK enum rs_code upstream_push_manifest(struct upstream_push *u, const char *repo, const char *ref,
						  const char *media_type, const char *body, size_t len,
						  struct rs_err *err);

/* Push the image whose manifest (or index) has digest: every blob it
 * references (children of an index too, each manifest PUT by digest), then
 * the manifest at ref (a tag, or the digest itself). */
RS_MUST_CHECK enum rs_code upstream_push_image(struct upstream_push *u, const char *repo, const char *ref,
					       const char *digest, const struct upstream_push_source *src,
					       struct rs_err *err);

/* An upload session in an upstream repository, filled before its digest
 * is known (a layer streamed on while the client still uploads it). */
struct upstream_push_stage;
/* The next bytes of a staged blob: at most cap into buf, their count in
 * *out_len, 0 at the end; it may block until it has some. Non-RS_OK stops
 * the PATCH with that error. */
typedef enum rs_code (*upstream_push_read_fn)(void *arg, void *buf, size_t cap, size_t *out_len, struct rs_err *err);
/* POST an upload into repo (no mount). *out: upstream_push_stage_close. */
RS_MUST_CHECK enum rs_code upstream_push_stage_open(struct upstream_push *u, const char *repo,
						    struct upstream_push_stage **out, struct rs_err *err);
/* One PATCH of the session whose body is what read gives until its end
 * (sent once: a failure ends the session's use). A PATCH without
 * Content-Range is docker-distribution's streamed upload, which not every
 * registry takes: *refused (may be NULL) is true when the upstream answered
 * it with a client error other than 401, 403 and 429. */
RS_MUST_CHECK enum rs_code upstream_push_stage_fill(struct upstream_push_stage *st, upstream_push_read_fn read,
						    void *arg, bool *refused, struct rs_err *err);
/* Complete the session as digest (PUT ?digest=, no body): the upstream
 * checks the bytes it holds against it and stores the blob. */
RS_MUST_CHECK enum rs_code upstream_push_stage_commit(struct upstream_push_stage *st, const char *digest,
						      struct rs_err *err);
/* Free st; with cancel (not committed), DELETE the session first so the
 * upstream drops the bytes it holds (best effort: a registry also expires
 * abandoned uploads). */
void upstream_push_stage_close(struct upstream_push_stage *st, bool cancel);

/* Counters for tests and logs: blobs uploaded, blobs skipped (present or
 * mounted), manifests put. */
void upstream_push_counts(const struct upstream_push *u, unsigned *uploaded, unsigned *skipped,
			  unsigned *manifests);

#endif
