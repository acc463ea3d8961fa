/* tags: GET /v2/<name>/tags/list. A repository pushed to regslim lists its
 * pushed tags (the store's pushed images); otherwise the upstream's list is passed through
 * with its pagination (n, last) and its Link header rewritten to the
 * client's name. It talks to the store (store.h) and upstream.c, and answers through
 * reply.h. */
#include "api_int.h"

#include "metrics.h"
#include "store.h"
#include "push_http.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ tags/list */

/* Rewrite a Link header's upstream path (/v2/<repo>/) to the client's name. */
static char *rewrite_link(const char *link, const char *repo, const char *name)
{
	char from[RS_LIMIT_NAME_MAX + 32];
	snprintf(from, sizeof(from), "/v2/%s/", repo);
	const char *at = strstr(link, from);
	size_t cap = strlen(link) + strlen(name) + 8;
	char *out = malloc(cap);
	if (!out)
		return NULL;
	if (!at)
		snprintf(out, cap, "%s", link);
	else
		snprintf(out, cap, "%.*s/v2/%s/%s", (int)(at - link), link, name, at + strlen(from));
	return out;
}

static void url_encode(char *out, size_t cap, const char *s)
{
	static const char hx[] = "0123456789ABCDEF";
	size_t p = 0;
	for (; *s && p + 4 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
			out[p++] = (char)c;
		} else {
			out[p++] = '%';
			out[p++] = hx[c >> 4];
			out[p++] = hx[c & 15];
		}
	}
	out[p] = '\0';
}

enum MHD_Result api_tags_list(struct registry *r, struct request *rq, const struct route_target *t)
{
	const char *n = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, "n");
	const char *last = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, "last");
	char query[512] = "", enc[400];
	size_t q = 0;
	if (n) {
		url_encode(enc, sizeof(enc) / 2, n);
		q += (size_t)snprintf(query + q, sizeof(query) - q, "n=%s", enc);
	}
	if (last && q < sizeof(query)) {
		url_encode(enc, sizeof(enc), last);
		snprintf(query + q, sizeof(query) - q, "%slast=%s", q ? "&" : "", enc);
	}
	struct upstream_reply rep = {0};
	struct rs_err err = {0};
	char *pushed = NULL;
	size_t pushed_len = 0;
	/* A repository pushed to regslim lists its pushed tags. */
	if (store_pushed_tags_list(r->store, t->name, &pushed, &pushed_len, &err) == RS_OK)
		return reply_buffer(rq, 200, JSON_TYPE, pushed, pushed_len, REPLY_OWNED, NULL, 0);
	rs_err_clear(&err);
	const char *upname = r->cfg->upstreams[t->up_index].name;
	metrics_upstream(upname, METRICS_UP_REQUESTS);
	if (upstream_tags(r->ups[t->up_index], t->repo, query[0] ? query : NULL, r->cfg->manifest_max_bytes, &rep,
	                  &err) != RS_OK) {
		metrics_upstream(upname, METRICS_UP_ERRORS);
		return reply_fail(rq, &err, REPLY_NAME, NULL, 0);
	}
	enum MHD_Result ret;
	if (!api_status_ok(rep.status)) {
		ret = api_answer_upstream_error(rq, &rep, REPLY_NAME);
	} else {
		metrics_add(METRICS_UPSTREAM_BYTES, rep.body_len);
		char *link = rep.link ? rewrite_link(rep.link, t->repo, t->name) : NULL;
		struct reply_header h[] = {{MHD_HTTP_HEADER_LINK, link}};
		char *body = rep.body;
		rep.body = NULL; /* handed to the answer */
		ret = reply_buffer(rq, 200, JSON_TYPE, body, rep.body_len, REPLY_OWNED, h, 1);
		free(link);
	}
	upstream_reply_dispose(&rep);
	return ret;
}
