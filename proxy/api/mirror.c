/* mirror: what every read-side resource asks of the upstream and the store
 * about the mirror's repositories. A cached object is served under a
 * repository only when linked to it (store.h links: the upstream
 * answered for that repository); this file makes and checks those links,
 * asks the upstream with HEAD when a link is missing, decides when a cached
 * copy may be served anyway (stale-if-error), and maps the upstream's error
 * answers to ours. It talks to the store (store.h), upstream.c and metrics.c, and
 * answers through reply.h. */
#include "api_int.h"

#include "image.h"
#include "log.h"
#include "metrics.h"
#include "wire.h"

#include <stdlib.h>
#include <string.h>

/* The upstream's error answer, passed through when it is registry JSON
 * with the spec's codes only, else mapped. Upstream auth failures become DENIED: the client cannot fix
 * the proxy's credentials, and a bare 401 would send it looking for a token
 * service we do not have. */
enum MHD_Result api_answer_upstream_error(struct request *rq, const struct upstream_reply *rep, enum reply_what what)
{
	const char *up = rq->upstream ? rq->upstream : "upstream";
	struct rs_err e;
	if (rep->status == 401 || rep->status == 403) {
		rs_err_set(&e, RS_DENIED, "upstream %s refused access (HTTP %ld); check its credentials", up, rep->status);
		return reply_fail(rq, &e, what, NULL, 0);
	}
	if (rep->status == 404) {
		rs_err_set(&e, RS_NOT_FOUND, "%s not found upstream (%s)",
		           what == REPLY_MANIFEST ? "manifest" : what == REPLY_BLOB ? "blob" : "repository", up);
		/* passed on only when every code is the spec's (Harbor answers
		 * NOT_FOUND, for one): else regslim's own 404 */
		if (rep->body_len < RS_LIMIT_ERROR_BODY_MAX_BYTES &&
		    wire_error_codes_all(rep->body, rep->body_len, reply_code_is_spec)) {
			char *copy = malloc(rep->body_len);
			if (copy) {
				memcpy(copy, rep->body, rep->body_len);
				return reply_error_passed(rq, RS_NOT_FOUND, what, copy, rep->body_len, e.msg);
			}
		}
		return reply_fail(rq, &e, what, NULL, 0);
	}
	if (rep->status == 429) {
		rs_err_set(&e, RS_THROTTLED, "upstream %s is rate limiting requests (HTTP 429)", up);
		return reply_fail(rq, &e, what, NULL, 0);
	}
	rs_err_set(&e, RS_UPSTREAM, "upstream %s answered HTTP %ld", up, rep->status);
	return reply_fail(rq, &e, what, NULL, 0);
}

bool api_status_ok(long s)
{
	return s >= 200 && s < 300;
}

/* ------------------------------------------------------------ repository links */

/* The mirror's repository links (store.h): (upstream name, upstream
 * repository) holds a cached object once the upstream answered for it. A
 * link that cannot be written is logged: the next request asks again. */
bool api_mirror_linked(struct registry *r, size_t up_index, const char *repo, enum store_kind kind,
                          const char *digest)
{
	return store_linked(r->store, r->cfg->upstreams[up_index].name, repo, kind, digest);
}

void api_mirror_link(struct registry *r, size_t up_index, const char *repo, enum store_kind kind,
                        const char *digest)
{
	struct rs_err err = {0};
	if (store_link(r->store, r->cfg->upstreams[up_index].name, repo, kind, digest, &err) != RS_OK)
		log_event(LOG_WARN, "could not link %s to %s/%s: %s", digest, r->cfg->upstreams[up_index].name, repo,
		          err.msg);
}

/* Ask the upstream whether repo has digest (HEAD); a 2xx answer links it.
 * RS_OK with rep->status set for any HTTP answer (rep is the caller's to
 * dispose); RS_UPSTREAM / RS_TIMEOUT when it cannot be asked. */
enum rs_code api_mirror_ask(struct registry *r, size_t up_index, const char *repo, enum store_kind kind,
                               const char *digest, struct upstream_reply *rep, struct rs_err *err)
{
	static const char *const acc[] = {IMAGE_MT_OCI_MANIFEST, IMAGE_MT_DOCKER_MANIFEST, IMAGE_MT_OCI_INDEX,
	                                  IMAGE_MT_DOCKER_LIST};
	const char *upname = r->cfg->upstreams[up_index].name;
	metrics_upstream(upname, METRICS_UP_REQUESTS);
	enum rs_code rc =
		kind == STORE_BLOB
			? upstream_blob_head(r->ups[up_index], repo, digest, rep, err)
			: upstream_manifest(r->ups[up_index], repo, digest, acc, 4, true, r->cfg->manifest_max_bytes, rep, err);
	if (rc || rep->status >= 500)
		metrics_upstream(upname, METRICS_UP_ERRORS);
	if (rc == RS_OK && api_status_ok(rep->status)) {
		api_mirror_link(r, up_index, repo, kind, digest);
		log_event(LOG_DEBUG, "upstream %s confirmed %s for %s", upname, digest, repo);
	}
	return rc;
}

/* api_mirror_ask as one code: RS_OK when the upstream confirmed (now linked),
 * RS_NOT_FOUND for 404, RS_DENIED for 401/403, RS_UPSTREAM otherwise. */
enum rs_code api_mirror_confirm(struct registry *r, size_t up_index, const char *repo, enum store_kind kind,
                                   const char *digest, struct rs_err *err)
{
	struct upstream_reply rep = {0};
	enum rs_code rc = api_mirror_ask(r, up_index, repo, kind, digest, &rep, err);
	const char *upname = r->cfg->upstreams[up_index].name;
	if (rc == RS_OK && !api_status_ok(rep.status))
		rc = rs_err_set(err,
		                rep.status == 404                          ? RS_NOT_FOUND
		                : rep.status == 401 || rep.status == 403 ? RS_DENIED
		                                                           : RS_UPSTREAM,
		                "upstream %s answered HTTP %ld for %s in %s", upname, rep.status, digest, repo);
	upstream_reply_dispose(&rep);
	return rc;
}

/* The upstream could not be asked whether repo holds a cached object (rc,
 * or a 5xx/429 answer in rep): serve it anyway (stale-if-error) only when a
 * manifest linked to repo references it, since a registry that holds a
 * manifest holds what it references. Never under a repository with no such
 * manifest. */
bool api_mirror_stale_ok(struct registry *r, size_t up_index, const char *repo, enum store_kind kind,
                            const char *digest, enum rs_code rc, const struct upstream_reply *rep)
{
	if (rc == RS_OK && rep->status < 500 && rep->status != 429)
		return false;
	if (!store_linked_by_image(r->store, r->cfg->upstreams[up_index].name, repo, kind, digest))
		return false;
	metrics_add(METRICS_STALE_SERVED, 1);
	log_event(LOG_WARN, "serving cached %s under %s: the upstream %s could not confirm it, a manifest of %s names it",
	          digest, repo, r->cfg->upstreams[up_index].name, repo);
	return true;
}
