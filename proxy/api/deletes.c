/* deletes: the content-management routes of the Distribution API
 * (distribution spec v1.1, "Content Management") for what regslim itself
 * holds, its pushed images:
 *   DELETE /v2/<name>/manifests/<digest>  202: the repository's link to the
 *          manifest goes, with every pushed tag of the repository pointing
 *          at it and its referrers-index entry (store.h
 *          store_pushed_delete_manifest); other repositories keep it;
 *   DELETE /v2/<name>/manifests/<tag>     202: the tag only ("Deleting
 *          tags", which the spec lets a registry support);
 *   DELETE /v2/<name>/blobs/<digest>      202: the repository's link to it.
 * What the name does not hold is 404 (MANIFEST_UNKNOWN, BLOB_UNKNOWN), and a
 * malformed digest 400 DIGEST_INVALID. The mirror's cache of an upstream is
 * read-only: deleting what regslim only caches for the name is 405
 * UNSUPPORTED with a message that says so (the upstream is where it can be
 * deleted). The bytes stay until the garbage collection of the pushed
 * images (push_http_maintain). uploads.c recognises the routes and runs the
 * push permission check first (deleting needs push; docs/push.md); answers
 * go out through reply.h. */
#include "api_int.h"

#include "digest.h"
#include "log.h"
#include "push_http.h"
#include "refname.h"
#include "reply.h"
#include "route.h"
#include "store.h"

#include <stdio.h>
#include <string.h>

/* Does the mirror cache the object (or the tag) under the client's name?
 * up receives the upstream's name. */
static bool cached(struct push_http *ph, struct request *rq, const struct wreq *w, bool manifest, bool by_digest,
                   const char **up)
{
	struct route_target t = {0};
	struct rs_err e = {0};
	const char *ns = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, "ns");
	if (route_pick(ph->cfg, ns, w->name, &t, &e) != RS_OK)
		return false;
	*up = ph->cfg->upstreams[t.up_index].name;
	if (manifest && !by_digest) {
		struct store_tag tag;
		return store_tag_get(ph->store, *up, t.repo, w->ref, &tag, &e) == RS_OK;
	}
	return store_linked(ph->store, *up, t.repo, manifest ? STORE_MANIFEST : STORE_BLOB, w->ref);
}

enum MHD_Result api_delete_disabled(struct push_http *ph, struct request *rq, const struct wreq *w)
{
	const char *up = NULL;
	bool manifest = w->kind == W_MANIFEST_DELETE;
	char msg[RS_LIMIT_NAME_MAX + 400];
	if (!w->ref_long && cached(ph, rq, w, manifest, !manifest || strchr(w->ref, ':') != NULL, &up))
		snprintf(msg, sizeof(msg),
		         "regslim is a cache of %s for %s: cached content is read-only here; delete it at the upstream", up,
		         w->name);
	else
		snprintf(msg, sizeof(msg), "deleting is disabled: this regslim is a read-only mirror (deleting pushed "
		                           "images needs push rights, given by an \"auth\" section; docs/push.md)");
	return reply_error(rq, RS_UNSUPPORTED, REPLY_OTHER, msg, NULL, 0);
}

enum MHD_Result api_delete(struct push_http *ph, struct request *rq, const struct wreq *w)
{
	bool manifest = w->kind == W_MANIFEST_DELETE;
	enum reply_what what = manifest ? REPLY_MANIFEST : REPLY_BLOB;
	bool by_digest = !manifest || strchr(w->ref, ':') != NULL;
	struct rs_err err = {0};
	enum rs_code rc = RS_OK;
	if (by_digest && w->ref_long)
		rc = rs_err_set(&err, RS_DIGEST_INVALID, "invalid digest '%.80s...': longer than any supported digest",
		                w->ref);
	else if (by_digest)
		rc = digest_parse(w->ref, &err);
	else if (w->ref_long || !refname_tag_valid(w->ref))
		/* such a tag cannot exist, so there is nothing to delete (the read side's 404 too) */
		rc = rs_err_set(&err, RS_NOT_FOUND, "manifest unknown: '%.130s%s' is not a tag (1 to %d characters of "
		           "[a-zA-Z0-9_][a-zA-Z0-9._-]*) nor a digest", w->ref, w->ref_long ? "..." : "", RS_LIMIT_TAG_MAX);
	if (rc)
		return reply_fail(rq, &err, what, NULL, 0);

	unsigned tags = 0;
	rc = !manifest  ? store_pushed_delete_blob(ph->store, w->name, w->ref, &err)
	                  : by_digest ? store_pushed_delete_manifest(ph->store, w->name, w->ref, &tags, &err)
	                              : store_pushed_delete_tag(ph->store, w->name, w->ref, &err);
	char shown[RS_LIMIT_NAME_MAX + RS_LIMIT_TAG_MAX + DIGEST_STR_SIZE];
	api_ref_text(shown, sizeof(shown), w->name, w->ref);
	if (rc == RS_OK) {
		if (manifest && by_digest)
			log_event(LOG_INFO, "deleted manifest %s (and %u tags pointing at it)", shown, tags);
		else
			log_event(LOG_INFO, "deleted %s %s", manifest ? "tag" : "blob", shown);
		return reply_empty(rq, 202, NULL, 0);
	}
	if (rc != RS_NOT_FOUND)
		return reply_fail(rq, &err, what, NULL, 0);
	const char *up = NULL;
	if (cached(ph, rq, w, manifest, by_digest, &up)) {
		char msg[RS_LIMIT_NAME_MAX + 400];
		snprintf(msg, sizeof(msg),
		         "regslim is a cache of %s for %s: cached content is read-only here; delete it at the upstream", up,
		         w->name);
		return reply_error(rq, RS_UNSUPPORTED, REPLY_OTHER, msg, NULL, 0);
	}
	return reply_fail(rq, &err, what, NULL, 0);
}
