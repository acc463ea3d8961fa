/* blobs: GET and HEAD of /v2/<name>/blobs/<digest> for the pull-through
 * mirror (DESIGN.md "The pull path", point 4). A blob pushed to regslim or
 * cached and linked to the repository is served from the store (ranges
 * included: a local descriptor sent with sendfile, or positional reads of
 * the store's reader for a driver without one); a missing one is streamed
 * to every client from one shared upstream download (inflight.c) while it
 * is verified and cached. It also fetches blobs into the store for
 * optpull.c. It talks to the store (store.h), inflight.c and upstream.c,
 * through mirror.c for repository links, and answers through reply.h. */
#include "api_int.h"

#include "inflight.h"
#include "log.h"
#include "metrics.h"
#include "optpull.h"
#include "store.h"
#include "push_http.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Extra seconds a reader waits beyond the upstream's own timeout. */
#define BEGIN_WAIT_SLACK_S 5

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

/* The download job handed to inflight.c. */
struct download {
	struct registry *r;
	size_t up_index;
	struct upstream *u;
	const char *upname;
	char repo[RS_LIMIT_NAME_MAX + 16];
	char digest[DIGEST_STR_SIZE];
	bool new_link; /* download_begin made the link: it goes again if the download fails */
};

struct download_sink {
	struct inflight_fetch *f;
	struct download *d;
};

static enum rs_code download_begin(void *arg, int64_t size, struct rs_err *err)
{
	struct download_sink *s = arg;
	/* The upstream answered 200 for this repository: linked before any
	 * reader is woken, so a reader that finds no link knows the download
	 * was another repository's. */
	struct download *d = s->d;
	if (!api_mirror_linked(d->r, d->up_index, d->repo, STORE_BLOB, d->digest)) {
		api_mirror_link(d->r, d->up_index, d->repo, STORE_BLOB, d->digest);
		d->new_link = true;
	}
	return inflight_fetch_begin(s->f, size, err);
}

static enum rs_code download_data(void *arg, const void *buf, size_t len, struct rs_err *err)
{
	struct download_sink *s = arg;
	metrics_add(METRICS_UPSTREAM_BYTES, len);
	return inflight_fetch_write(s->f, buf, len, err);
}

static enum rs_code download_run(struct inflight_fetch *f, void *arg, struct rs_err *err)
{
	struct download *d = arg;
	struct download_sink sink = {.f = f, .d = d};
	metrics_upstream(d->upname, METRICS_UP_REQUESTS);
	metrics_upstream(d->upname, METRICS_UP_BLOB_FETCHES);
	enum rs_code rc = upstream_blob(d->u, d->repo, d->digest, download_begin, download_data, &sink, err);
	if (rc && rc != RS_NOT_FOUND)
		metrics_upstream(d->upname, METRICS_UP_ERRORS);
	if (rc)
		log_event(rc == RS_NOT_FOUND ? LOG_INFO : LOG_WARN, "download of %s from %s/%s failed: %s", d->digest,
		          d->upname, d->repo, err->msg);
	return rc;
}

/* inflight's arg_free, called once the download is committed or abandoned:
 * a link made for it goes again when the blob did not make it into the store
 * (cut off, or failed its digest check), since a link comes with its content. */
static void download_free(void *arg)
{
	struct download *d = arg;
	if (d && d->new_link && !store_has(d->r->store, STORE_CACHE, STORE_BLOB, d->digest))
		store_unlink(d->r->store, d->upname, d->repo, STORE_BLOB, d->digest);
	free(d);
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
	if (api_mirror_ask(r, t->up_index, t->repo, STORE_BLOB, t->ref, &rep, &err) != RS_OK)
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

/* A blob is served under t only if t's repository holds it (issue 11):
 * linked to the mirror's repository, or pushed to the name. A cached blob
 * without a link for this repository is served only once the upstream
 * confirms it (HEAD); a missing one is downloaded for this repository. */
enum MHD_Result api_blob_get(struct registry *r, struct request *rq, const struct route_target *t, bool head)
{
	struct rs_err err = {0};
	if (!api_ref_digest_ok(t->ref, &err))
		return reply_fail(rq, &err, REPLY_BLOB, NULL, 0);
	struct store_reader *rd = NULL;
	if (store_pushed_holds(r->store, t->name, STORE_BLOB, t->ref) &&
	    store_reader_open(r->store, STORE_PUSHED, STORE_BLOB, t->ref, &rd, &err) == RS_OK) {
		rq->cache = "pushed";
		return blob_from_store(rq, t->ref, rd);
	}
	rs_err_clear(&err);
	bool cached = store_has(r->store, STORE_CACHE, STORE_BLOB, t->ref);
	if (cached && !api_mirror_linked(r, t->up_index, t->repo, STORE_BLOB, t->ref)) {
		struct upstream_reply rep = {0};
		enum rs_code rc = api_mirror_ask(r, t->up_index, t->repo, STORE_BLOB, t->ref, &rep, &err);
		if ((rc || !api_status_ok(rep.status)) &&
		    !api_mirror_stale_ok(r, t->up_index, t->repo, STORE_BLOB, t->ref, rc, &rep)) {
			rq->cache = "unlinked";
			enum MHD_Result ret = rc ? reply_fail(rq, &err, REPLY_BLOB, NULL, 0) : api_answer_upstream_error(rq, &rep, REPLY_BLOB);
			upstream_reply_dispose(&rep);
			return ret;
		}
		upstream_reply_dispose(&rep);
	}
	enum rs_code rc = cached ? store_reader_open(r->store, STORE_CACHE, STORE_BLOB, t->ref, &rd, &err) : RS_NOT_FOUND;
	if (rc == RS_OK) {
		rq->cache = "hit";
		metrics_cache(METRICS_BLOB, 1);
		return blob_from_store(rq, t->ref, rd);
	}
	if (rc != RS_NOT_FOUND)
		return reply_fail(rq, &err, REPLY_BLOB, NULL, 0);
	if (!cached && api_opt_regenerated(r, t, STORE_BLOB)) {
		rs_err_clear(&err);
		if (store_reader_open(r->store, STORE_CACHE, STORE_BLOB, t->ref, &rd, &err) == RS_OK) {
			rq->cache = "regenerated";
			return blob_from_store(rq, t->ref, rd);
		}
	}
	rq->cache = "miss";
	metrics_cache(METRICS_BLOB, 0);
	if (head)
		return blob_head_miss(r, rq, t);

	const struct rs_upstream_config *upc = &r->cfg->upstreams[t->up_index];
	struct download *d = calloc(1, sizeof(*d));
	if (!d)
		return MHD_NO;
	d->r = r;
	d->up_index = t->up_index;
	d->u = r->ups[t->up_index];
	d->upname = upc->name;
	snprintf(d->repo, sizeof(d->repo), "%s", t->repo);
	snprintf(d->digest, sizeof(d->digest), "%s", t->ref);
	struct inflight_fetch *f = NULL;
	rs_err_clear(&err);
	if (inflight_join(r->inflight, t->ref, -1, download_run, d, download_free, &f, &err) != RS_OK)
		return reply_fail(rq, &err, REPLY_BLOB, NULL, 0);
	int64_t total = -1;
	rs_err_clear(&err);
	rc = inflight_wait_begin(f, upc->timeout_s + BEGIN_WAIT_SLACK_S, &total, &err);
	if (rc) {
		inflight_release(f);
		if (rc == RS_DIGEST_MISMATCH)
			err.code = RS_UPSTREAM;
		return reply_fail(rq, &err, REPLY_BLOB, NULL, 0);
	}
	/* Joined a download started for another repository (or the blob was
	 * committed meanwhile): this repository must be confirmed too. */
	if (!api_mirror_linked(r, t->up_index, t->repo, STORE_BLOB, t->ref)) {
		struct upstream_reply rep = {0};
		rs_err_clear(&err);
		rc = api_mirror_ask(r, t->up_index, t->repo, STORE_BLOB, t->ref, &rep, &err);
		if (rc || !api_status_ok(rep.status)) {
			inflight_release(f);
			rq->cache = "unlinked";
			enum MHD_Result ret = rc ? reply_fail(rq, &err, REPLY_BLOB, NULL, 0) : api_answer_upstream_error(rq, &rep, REPLY_BLOB);
			upstream_reply_dispose(&rep);
			return ret;
		}
		upstream_reply_dispose(&rep);
	}
	struct route_range rg = {.partial = false, .start = 0, .end = UINT64_MAX};
	if (total >= 0) {
		const char *rh = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_RANGE);
		rs_err_clear(&err);
		if (route_parse_range(rh, (uint64_t)total, &rg, &err) != RS_OK) {
			inflight_release(f);
			return reply_range_error(rq, &err, (uint64_t)total);
		}
	}
	struct blob_stream *s = calloc(1, sizeof(*s));
	if (!s) {
		inflight_release(f);
		return MHD_NO;
	}
	s->f = f;
	s->rq = rq;
	s->start = rg.start;
	s->end = rg.end;
	s->stall_s = upc->timeout_s;
	/* Bytes of a range ending before the blob does arrive long before the
	 * blob is verified; a range reaching the end is held by inflight.c. */
	s->hold_last = rg.partial && total >= 0 && rg.end < (uint64_t)total;
	struct reply_blob b = {t->ref, &rg, total >= 0 ? (uint64_t)total : 0, total >= 0};
	return reply_blob_stream(rq, &b, blob_stream_read, s, blob_stream_free);
}

/* ------------------------------------------------------------ optimized pulls */

bool api_opt_regenerated(struct registry *r, const struct route_target *t, enum store_kind kind)
{
	if (!r->opt || !api_mirror_linked(r, t->up_index, t->repo, kind, t->ref))
		return false;
	struct rs_err err = {0};
	enum rs_code rc = optpull_regenerate(r->opt, kind, t->ref, r->cfg->optimize.sync_timeout_s, &err);
	if (rc == RS_OK)
		return true;
	if (rc != RS_NOT_FOUND)
		log_event(LOG_WARN, "%s of %s was evicted and could not be made again: %s", t->ref, t->repo, err.msg);
	return false;
}

/* optpull's blob fetch: join (or start) the single-flight download of digest
 * and wait until it is verified and committed. Runs in an optpull worker. */
enum rs_code api_opt_fetch_blob(void *ctx, size_t up_index, const char *repo, const char *digest,
                                   struct rs_err *err)
{
	struct registry *r = ctx;
	const struct rs_upstream_config *upc = &r->cfg->upstreams[up_index];
	struct download *d = calloc(1, sizeof(*d));
	if (!d)
		return rs_err_set(err, RS_NOMEM, "out of memory fetching %s", digest);
	d->r = r;
	d->up_index = up_index;
	d->u = r->ups[up_index];
	d->upname = upc->name;
	snprintf(d->repo, sizeof(d->repo), "%s", repo);
	snprintf(d->digest, sizeof(d->digest), "%s", digest);
	struct inflight_fetch *f = NULL;
	enum rs_code rc = inflight_join(r->inflight, digest, -1, download_run, d, download_free, &f, err);
	if (rc)
		return rc;
	/* Wait for the verified end in steps of a second, so that a shutdown
	 * (registry_shutdown) ends the wait at once (issue 12 item 6): the
	 * optimization then fails and leaves nothing. The download itself goes
	 * on for the clients that share it. It fails after 3 * timeout_s
	 * without a byte (the download's own stall rule normally ends it at
	 * timeout_s). */
	uint64_t seen = 0;
	for (unsigned still_s = 0; rc == RS_OK;) {
		if (atomic_load(&r->stopping)) {
			rc = rs_err_set(err, RS_TIMEOUT, "shutting down: stopped waiting for %s", digest);
			break;
		}
		bool ended = false;
		uint64_t written = 0;
		rs_err_clear(err);
		rc = inflight_wait_end(f, 1000, &ended, &written, err);
		if (rc != RS_OK || ended)
			break;
		if (written != seen) {
			seen = written;
			still_s = 0;
		} else if (++still_s >= 3 * upc->timeout_s) {
			rc = rs_err_set(err, RS_TIMEOUT, "download of %s stalled: no data for %u s at byte %llu", digest,
			                still_s, (unsigned long long)written);
		}
	}
	inflight_release(f);
	if (rc == RS_OK && !store_has(r->store, STORE_CACHE, STORE_BLOB, digest))
		rc = rs_err_set(err, RS_IO, "blob %s was downloaded but is not in the store (evicted?)", digest);
	return rc;
}
