/* blobs: GET and HEAD of /v2/<name>/blobs/<digest> for the pull-through
 * mirror (DESIGN.md "The pull path", point 4). Where the blob comes from is
 * the source's decision (source.h: pushed, cached and linked, confirmed by
 * the upstream, regenerated, or the shared upstream download); this file
 * maps its answers to HTTP: a stored blob served with its ranges (a local
 * descriptor sent with sendfile, or positional reads of the store's reader
 * for a driver without one), a missing one streamed from the shared
 * download (inflight.h readers), the access log's cache labels, errors. It
 * also hands optpull.c the source's blob fetch, and serves the cluster's
 * peer endpoint (/_regslim/peer/blobs/<digest>, authenticated by peer.h's
 * HMAC): another replica streams a blob this one downloads or stored. It
 * talks to the source, inflight.h and peer.h, and answers through reply.h. */
#include "api_int.h"

#include "inflight.h"
#include "log.h"
#include "metrics.h"
#include "peer.h"
#include "source.h"
#include "store.h"
#include "push_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ blobs */

/* The body of a stored blob from a driver without local descriptors:
 * positional reads of the reader (a ranged read per call). */
struct stored_stream {
	struct store_reader *rd;
	struct request *rq;
	uint64_t start, end;
};

static ssize_t stored_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct stored_stream *s = cls;
	uint64_t at = s->start + pos;
	if (at >= s->end)
		return MHD_CONTENT_READER_END_OF_STREAM;
	if (max > s->end - at)
		max = (size_t)(s->end - at);
	struct rs_err err = {0};
	ssize_t n = store_reader_pread(s->rd, buf, max, at, &err);
	if (n > 0) {
		metrics_add(METRICS_CLIENT_BYTES, (uint64_t)n);
		return n;
	}
	/* a stored blob that ends early or cannot be read: never a body that
	 * looks complete */
	log_event(LOG_WARN, "aborting blob response for %s at byte %llu: %s", s->rq->url, (unsigned long long)at,
	          n < 0 ? err.msg : "the stored blob ended early");
	return MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stored_free(void *cls)
{
	struct stored_stream *s = cls;
	store_reader_close(s->rd);
	free(s);
}

/* Serve a stored blob (rd is taken): its local descriptor when the driver
 * has one (sendfile), else positional reads. */
static enum MHD_Result blob_from_store(struct request *rq, const char *digest, struct store_reader *rd)
{
	struct route_range rg;
	struct rs_err err = {0};
	uint64_t size = store_reader_size(rd);
	const char *rh = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_RANGE);
	if (route_parse_range(rh, size, &rg, &err) != RS_OK) {
		store_reader_close(rd);
		return reply_range_error(rq, &err, size);
	}
	struct reply_blob b = {digest, &rg, size, true};
	int fd = store_reader_take_fd(rd);
	if (fd >= 0) {
		store_reader_close(rd);
		return reply_blob_fd(rq, &b, fd, rq->tls);
	}
	struct stored_stream *s = malloc(sizeof(*s));
	if (!s) {
		store_reader_close(rd);
		rs_err_set(&err, RS_NOMEM, "out of memory serving %s", digest);
		return reply_fail(rq, &err, REPLY_BLOB, NULL, 0);
	}
	*s = (struct stored_stream){rd, rq, rg.start, rg.end};
	return reply_blob_stream(rq, &b, stored_read, s, stored_free);
}

struct blob_stream {
	struct inflight_fetch *f;
	struct request *rq;
	uint64_t start, end; /* end UINT64_MAX when unknown */
	unsigned stall_s;
	bool hold_last; /* a range ending before the blob: its last byte waits for the blob's verification */
	bool failed;
};

static ssize_t blob_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct blob_stream *s = cls;
	uint64_t at = s->start + pos;
	if (at >= s->end)
		return MHD_CONTENT_READER_END_OF_STREAM;
	if (max > s->end - at)
		max = (size_t)(s->end - at);
	struct rs_err err = {0};
	ssize_t n = -1;
	bool verified = true;
	if (s->hold_last && at + max == s->end && max > 1)
		max--; /* everything but the range's last byte now */
	else if (s->hold_last && at + 1 == s->end)
		/* The range's bytes are upstream bytes until the whole blob
		 * verified: a bad blob must not end as a complete 206. */
		verified = inflight_wait_verified(s->f, s->stall_s, &err) == RS_OK;
	if (verified)
		n = inflight_read(s->f, at, buf, max, s->stall_s, &err);
	if (n > 0) {
		metrics_add(METRICS_CLIENT_BYTES, (uint64_t)n);
		s->rq->body_bytes += (uint64_t)n; /* the access log's "bytes": what was sent */
		return n;
	}
	if (n == 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	/* Abort the connection: the client must not see a body that looks
	 * complete (STYLE.md "Tees fail loudly"). */
	s->failed = true;
	log_event(LOG_WARN, "aborting blob response for %s at byte %llu: %s", s->rq->url, (unsigned long long)at,
	          err.msg);
	return MHD_CONTENT_READER_END_WITH_ERROR;
}

static void blob_stream_free(void *cls)
{
	struct blob_stream *s = cls;
	inflight_release(s->f);
	free(s);
}

static enum MHD_Result blob_head_miss(struct registry *r, struct request *rq, const struct route_target *t)
{
	struct upstream_reply rep = {0};
	struct rs_err err = {0};
	if (source_ask(r->src, t->up_index, t->repo, STORE_BLOB, t->ref, &rep, &err) != RS_OK)
		return reply_fail(rq, &err, REPLY_BLOB, NULL, 0);
	enum MHD_Result ret;
	if (!api_status_ok(rep.status)) {
		ret = api_answer_upstream_error(rq, &rep, REPLY_BLOB);
	} else {
		struct route_range rg = {.partial = false};
		struct reply_blob b = {t->ref, &rg, rep.content_length >= 0 ? (uint64_t)rep.content_length : 0,
		                       rep.content_length >= 0};
		ret = reply_blob_head(rq, &b);
	}
	upstream_reply_dispose(&rep);
	return ret;
}

/* A cached blob the upstream did not confirm for this repository (or that
 * it could not be asked about): its answer, or why it could not answer. */
static enum MHD_Result blob_unlinked(struct request *rq, struct source_found *f, const struct rs_err *err)
{
	rq->cache = "unlinked";
	enum MHD_Result ret =
		f->ask_rc ? reply_fail(rq, err, REPLY_BLOB, NULL, 0) : api_answer_upstream_error(rq, &f->rep, REPLY_BLOB);
	source_found_dispose(f);
	return ret;
}

/* A blob is served under t only if t's repository holds it (issue 11;
 * source.h decides where its bytes come from): pushed to the name, cached
 * and linked (or confirmed by the upstream now), an evicted optimized blob
 * made again, else the shared download for this repository. This maps the
 * answers to HTTP: labels, ranges, streaming, errors. */
enum MHD_Result api_blob_get(struct registry *r, struct request *rq, const struct route_target *t, bool head)
{
	struct rs_err err = {0};
	if (!api_ref_digest_ok(t->ref, &err))
		return reply_fail(rq, &err, REPLY_BLOB, NULL, 0);
	const struct source_ref ref = {t->name, t->up_index, t->repo, STORE_BLOB, t->ref};
	struct source_found f;
	enum rs_code rc = source_locate(r->src, &ref, &f, &err);
	if (rc) {
		source_found_dispose(&f);
		return reply_fail(rq, &err, REPLY_BLOB, NULL, 0);
	}
	if (f.where == SOURCE_UNLINKED)
		return blob_unlinked(rq, &f, &err);
	if (f.where != SOURCE_UPSTREAM) {
		rq->cache = f.where == SOURCE_PUSHED ? "pushed" : f.where == SOURCE_CACHE ? "hit" : "regenerated";
		if (f.where == SOURCE_CACHE)
			metrics_cache(METRICS_BLOB, 1);
		struct store_reader *rd = f.rd;
		f.rd = NULL;
		source_found_dispose(&f);
		return blob_from_store(rq, t->ref, rd);
	}
	source_found_dispose(&f);
	rq->cache = "miss";
	metrics_cache(METRICS_BLOB, 0);
	if (head)
		return blob_head_miss(r, rq, t);

	rs_err_clear(&err);
	if (source_fetch(r->src, &ref, &f, &err) != RS_OK)
		return reply_fail(rq, &err, REPLY_BLOB, NULL, 0);
	if (f.where == SOURCE_UNLINKED)
		return blob_unlinked(rq, &f, &err);
	int64_t total = f.size;
	struct route_range rg = {.partial = false, .start = 0, .end = UINT64_MAX};
	if (total >= 0) {
		const char *rh = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_RANGE);
		rs_err_clear(&err);
		if (route_parse_range(rh, (uint64_t)total, &rg, &err) != RS_OK) {
			source_found_dispose(&f);
			return reply_range_error(rq, &err, (uint64_t)total);
		}
	}
	struct blob_stream *s = calloc(1, sizeof(*s));
	if (!s) {
		source_found_dispose(&f);
		return MHD_NO;
	}
	s->f = f.fetch;
	f.fetch = NULL;
	s->rq = rq;
	s->start = rg.start;
	s->end = rg.end;
	s->stall_s = f.stall_s;
	source_found_dispose(&f);
	/* Bytes of a range ending before the blob does arrive long before the
	 * blob is verified; a range reaching the end is held by inflight.c. */
	s->hold_last = rg.partial && total >= 0 && rg.end < (uint64_t)total;
	struct reply_blob b = {t->ref, &rg, total >= 0 ? (uint64_t)total : 0, total >= 0};
	return reply_blob_stream(rq, &b, blob_stream_read, s, blob_stream_free);
}

/* ------------------------------------------------------------ peers */

/* Another replica holds no lock on this blob and streams what this one has:
 * the running download (its bytes as they arrive, the last one once the
 * commit verified the blob) or the stored copy. Never starts a download. */
enum MHD_Result api_peer_blob_get(struct registry *r, struct request *rq)
{
	rq->route = "peer";
	const char *secret = r->cfg->cluster.enabled ? r->cfg->cluster.peer_secret : NULL;
	if (!secret)
		return reply_error(rq, RS_NOT_FOUND, REPLY_ENDPOINT, "no such endpoint", NULL, 0);
	if (strcmp(rq->method, "GET") != 0)
		return reply_error(rq, RS_UNSUPPORTED, REPLY_OTHER, "only GET is allowed on the peer endpoint", NULL, 0);
	const char *auth = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, PEER_AUTH_HEADER);
	if (!peer_auth_check(auth, secret, "GET", rq->url, (int64_t)time(NULL))) {
		metrics_cluster_pull(METRICS_CL_PEER_REFUSED, 1);
		log_event(LOG_WARN, "peer request refused: %s", auth ? "wrong or expired " PEER_AUTH_HEADER : "no " PEER_AUTH_HEADER);
		return reply_error(rq, RS_UNAUTHORIZED, REPLY_OTHER, "peer authentication required (cluster.peer_secret_file)",
		                   NULL, 0);
	}
	const char *digest = rq->url + strlen(PEER_BLOB_PATH);
	struct rs_err err = {0};
	if (!api_ref_digest_ok(digest, &err))
		return reply_fail(rq, &err, REPLY_BLOB, NULL, 0);
	struct source_found f;
	if (source_peer_open(r->src, digest, &f, &err) != RS_OK) {
		source_found_dispose(&f);
		return reply_fail(rq, &err, REPLY_BLOB, NULL, 0);
	}
	metrics_cluster_pull(METRICS_CL_PEER_SERVED, 1);
	if (f.rd) {
		rq->cache = "hit";
		struct store_reader *rd = f.rd;
		f.rd = NULL;
		source_found_dispose(&f);
		return blob_from_store(rq, digest, rd);
	}
	rq->cache = "inflight";
	log_event(LOG_INFO, "peer streaming %s while downloading it (%lld bytes)", digest, (long long)f.size);
	struct blob_stream *s = calloc(1, sizeof(*s));
	if (!s) {
		source_found_dispose(&f);
		return MHD_NO;
	}
	struct route_range rg = {.partial = false, .start = 0, .end = f.size >= 0 ? (uint64_t)f.size : UINT64_MAX};
	*s = (struct blob_stream){.f = f.fetch, .rq = rq, .start = 0, .end = rg.end, .stall_s = f.stall_s};
	f.fetch = NULL;
	int64_t total = f.size;
	source_found_dispose(&f);
	struct reply_blob b = {digest, &rg, total >= 0 ? (uint64_t)total : 0, total >= 0};
	return reply_blob_stream(rq, &b, blob_stream_read, s, blob_stream_free);
}

/* ------------------------------------------------------------ optimized pulls */

/* optpull's blob fetch (and the policy check on pull's): into the store
 * through the source's shared download. */
enum rs_code api_opt_fetch_blob(void *ctx, size_t up_index, const char *repo, const char *digest,
                                   struct rs_err *err)
{
	struct registry *r = ctx;
	return source_ensure_blob(r->src, up_index, repo, digest, err);
}
