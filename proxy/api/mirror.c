/* mirror: the upstream's error answers mapped to ours, for every read-side
 * resource, and the check of a repository link for those that make one
 * themselves. Where a cached object may be served from (links, the
 * upstream's confirmation, stale-if-error) is decided by the source
 * (source.h). It talks to the source and answers through reply.h. */
#include "api_int.h"

#include "source.h"
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

/* The mirror's repository links (store.h), for the resources that check
 * one themselves (reports, optimized tags); the decisions over them are the
 * source's (source.h). */
bool api_mirror_linked(struct registry *r, size_t up_index, const char *repo, enum store_kind kind,
                          const char *digest)
{
	return source_linked(r->src, up_index, repo, kind, digest);
}
