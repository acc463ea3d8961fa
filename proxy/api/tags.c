/* tags: GET /v2/<name>/tags/list with the distribution spec's pagination
 * ("Content Discovery", "Listing Tags"): tags in lexical (byte) order, at
 * most n of them, only those after `last`, and a Link header
 * (rel="next") when more remain; n=0 is an empty list without Link. The
 * tags come from the upstream (n and last passed on; its page filtered,
 * cut and its Link rewritten to regslim's URL for the client's name) and
 * from what was pushed to regslim under that name (the store's pushed images); a repository
 * with both gets their union, de-duplicated, then paginated. An upstream
 * page that has a next one bounds the merged page: pushed tags after the
 * upstream page's last tag wait for the next page, so no upstream tag is
 * ever skipped (docs/conformance.md). It talks to the store (store.h) and upstream.c,
 * reads and writes the lists with wire.h, and answers through reply.h. */
#include "api_int.h"

#include "log.h"
#include "metrics.h"
#include "store.h"
#include "push_http.h"
#include "refname.h"
#include "wire.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A page asked with a larger n holds this many tags (and a Link). */
#define TAGS_PAGE_MAX 1000

/* ------------------------------------------------------------ the list */

struct tag_list {
	char **v;
	size_t n, cap;
};

static void list_dispose(struct tag_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

static enum rs_code list_add(struct tag_list *l, const char *tag, struct rs_err *err)
{
	if (l->n == l->cap) {
		size_t nc = l->cap ? l->cap * 2 : 64;
		char **nv = realloc(l->v, nc * sizeof(*nv));
		if (!nv)
			return rs_err_set(err, RS_NOMEM, "out of memory listing tags");
		l->v = nv;
		l->cap = nc;
	}
	if (!(l->v[l->n] = strdup(tag)))
		return rs_err_set(err, RS_NOMEM, "out of memory listing tags");
	l->n++;
	return RS_OK;
}

/* Only tags of the grammar (at most 128 characters) are listed: a Link's
 * last= always names the whole tag, so a client's walk cannot loop. */
static enum rs_code add_tag(void *ctx, const char *tag, struct rs_err *err)
{
	return refname_tag_valid(tag) ? list_add(ctx, tag, err) : RS_OK;
}

/* Add the tags of a tags/list body (what says whose, for messages). */
static enum rs_code list_add_json(struct tag_list *l, const char *body, size_t len, const char *what,
                                  struct rs_err *err)
{
	enum rs_code rc = wire_parse_tag_list(body, len, add_tag, l, err);
	if (rc == RS_BAD_INPUT)
		rs_err_prefix(err, "%s: ", what);
	return rc;
}

static int cmp_tag(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sort in byte order (the order of docker-registry and Go clients) and drop
 * duplicates (a tag both pushed and upstream). */
static void list_sort_unique(struct tag_list *l)
{
	if (l->n)
		qsort(l->v, l->n, sizeof(*l->v), cmp_tag);
	size_t o = 0;
	for (size_t i = 0; i < l->n; i++) {
		if (o && strcmp(l->v[o - 1], l->v[i]) == 0)
			free(l->v[i]);
		else
			l->v[o++] = l->v[i];
	}
	l->n = o;
}

/* ------------------------------------------------------------ the query */

struct page_req {
	bool has_n;
	size_t n;         /* tags asked for (has_n) */
	const char *last; /* the tag the page starts after, NULL: from the start */
};

/* n: a non-negative decimal integer (the spec names no error for others:
 * regslim answers 400 UNSUPPORTED rather than guess). */
static enum rs_code parse_page(struct request *rq, struct page_req *out, struct rs_err *err)
{
	const char *n = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, "n");
	out->last = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, "last");
	if (out->last && !*out->last)
		out->last = NULL;
	out->has_n = n != NULL;
	out->n = 0;
	if (!n)
		return RS_OK;
	size_t len = strlen(n);
	if (len == 0 || len > 9)
		return rs_err_set(err, RS_BAD_INPUT, "tags/list: n='%.20s' is not a number of tags (0 to 999999999)", n);
	for (size_t i = 0; i < len; i++) {
		if (!isdigit((unsigned char)n[i]))
			return rs_err_set(err, RS_BAD_INPUT, "tags/list: n='%.20s' is not a non-negative integer", n);
		out->n = out->n * 10 + (size_t)(n[i] - '0');
	}
	return RS_OK;
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

/* The query sent upstream: the client's last, and its n capped to a page
 * (n=0 asks for one tag: the answer is empty, but the repository must
 * exist). Empty when the client gave neither. */
static void upstream_query(char *out, size_t cap, const struct page_req *pq)
{
	char enc[RS_LIMIT_TAG_MAX * 3 + 1];
	size_t q = 0;
	out[0] = '\0';
	if (pq->has_n) {
		size_t n = pq->n == 0 ? 1 : pq->n > TAGS_PAGE_MAX ? TAGS_PAGE_MAX : pq->n;
		q += (size_t)snprintf(out, cap, "n=%zu", n);
	}
	if (pq->last && q < cap) {
		url_encode(enc, sizeof(enc), pq->last);
		snprintf(out + q, cap - q, "%slast=%s", q ? "&" : "", enc);
	}
}

/* ------------------------------------------------------------ Link */

/* The upstream's Link (rel="next") pointed at regslim: its query kept, the
 * path made /v2/<the client's name>/tags/list (an upstream's absolute URL
 * and repository name, library/ included, never reach the client), plus
 * ns= when ?ns= chose the upstream. NULL when it names no tags/list of
 * repo (or out of memory): the caller builds its own. */
static char *rewrite_link(const char *link, const struct route_target *t, const char *ns)
{
	const char *lt = strchr(link, '<');
	const char *gt = lt ? strchr(lt, '>') : NULL;
	if (!gt || !strstr(gt, "next"))
		return NULL;
	char path[RS_LIMIT_NAME_MAX + 32];
	snprintf(path, sizeof(path), "/v2/%s/tags/list?", t->repo);
	const char *at = strstr(lt, path);
	if (!at || at > gt)
		return NULL;
	const char *q = at + strlen(path);
	size_t cap = (size_t)(gt - q) + strlen(t->name) + (ns ? strlen(ns) : 0) + 64;
	char *out = malloc(cap);
	if (out)
		snprintf(out, cap, "</v2/%s/tags/list?%.*s%s%s>; rel=\"next\"", t->name, (int)(gt - q), q, ns ? "&ns=" : "",
		         ns ? ns : "");
	return out;
}

/* regslim's own Link to the page after tag after (n as the client asked). */
static char *own_link(const struct route_target *t, const char *ns, const struct page_req *pq, const char *after)
{
	char enc[RS_LIMIT_TAG_MAX * 3 + 1], num[32] = "";
	url_encode(enc, sizeof(enc), after);
	if (pq->has_n)
		snprintf(num, sizeof(num), "n=%zu&", pq->n);
	size_t cap = strlen(t->name) + strlen(enc) + (ns ? strlen(ns) : 0) + 96;
	char *out = malloc(cap);
	if (out)
		snprintf(out, cap, "</v2/%s/tags/list?%slast=%s%s%s>; rel=\"next\"", t->name, num, enc, ns ? "&ns=" : "",
		         ns ? ns : "");
	return out;
}

/* ------------------------------------------------------------ the page */

/* What the list is made of. */
struct page_src {
	bool up_more;        /* the upstream answered with a next page */
	const char *bound;   /* its page's last tag when up_more: nothing after it in this page */
	const char *up_link; /* the upstream's Link header, or NULL */
	bool merged;         /* pushed tags are in the list */
};

bool api_tags_page(char *const *tags, size_t n, const char *last, const char *bound, size_t limit, bool up_more,
                   size_t *out_start, size_t *out_count)
{
	size_t s = 0, e = n;
	while (last && s < n && strcmp(tags[s], last) <= 0)
		s++;
	while (bound && e > s && strcmp(tags[e - 1], bound) > 0)
		e--;
	size_t k = e - s < limit ? e - s : limit;
	*out_start = s;
	*out_count = k;
	/* n=0: "MUST return an empty list, and MUST NOT include a Link header" */
	return limit > 0 && (s + k < n || up_more);
}

/* Answer the page of l (sorted, unique) that pq asks for. */
static enum MHD_Result answer_page(struct registry *r, struct request *rq, const struct route_target *t,
                                   const struct tag_list *l, const struct page_req *pq, const struct page_src *src)
{
	size_t s, k;
	size_t limit = !pq->has_n ? SIZE_MAX : pq->n > TAGS_PAGE_MAX ? TAGS_PAGE_MAX : pq->n;
	bool more = api_tags_page(l->v, l->n, pq->last, src->bound, limit, src->up_more, &s, &k);
	char *body = NULL;
	size_t len = 0;
	struct rs_err err = {0};
	if (wire_write_tag_list(&body, &len, t->name, l->v + s, k, &err) != RS_OK)
		return reply_fail(rq, &err, REPLY_NAME, NULL, 0);
	const char *ns = t->by_ns ? r->cfg->upstreams[t->up_index].name : NULL;
	char *link = NULL;
	/* The upstream's own Link is kept when this page is its page unchanged. */
	if (more && k && src->up_link && !src->merged && s == 0 && s + k == l->n)
		link = rewrite_link(src->up_link, t, ns);
	if (more && k && !link)
		link = own_link(t, ns, pq, l->v[s + k - 1]);
	struct reply_header h[] = {{MHD_HTTP_HEADER_LINK, link}};
	enum MHD_Result ret = reply_buffer(rq, 200, JSON_TYPE, body, len, REPLY_OWNED, h, 1);
	free(link);
	return ret;
}

/* ------------------------------------------------------------ tags/list */

/* The upstream could not give its list for t: the pushed tags alone when
 * the name has some, else the upstream's answer. Logged when the upstream
 * failed (no answer, 5xx, 429); a 4xx is its way of saying it has no such
 * repository (Docker Hub answers 401 for one that does not exist). */
/* The pushed tags alone answer when there are some, or when the name holds
 * pushed content whose tags were all deleted (found) and the upstream does
 * not know the repository: "Assuming a repository is found, this request
 * MUST return a 200 OK response code. The list of tags MAY be empty". */
static bool pushed_only(const struct tag_list *pushed, bool found, const struct route_target *t, const char *why,
                        long status)
{
	if (!pushed->n)
		return found && status == 404;
	if (status == 0 || status >= 500 || status == 429)
		log_event(LOG_WARN, "tags/list of %s: only the pushed tags, the upstream's are missing: %s", t->name, why);
	return true;
}

enum MHD_Result api_tags_list(struct registry *r, struct request *rq, const struct route_target *t)
{
	struct page_req pq;
	struct rs_err err = {0};
	if (parse_page(rq, &pq, &err) != RS_OK)
		return reply_fail(rq, &err, REPLY_QUERY, NULL, 0);
	struct tag_list pushed = {0}, all = {0};
	char *pbody = NULL;
	size_t plen = 0;
	bool found = store_pushed_tags_list(r->store, t->name, &pbody, &plen, &err) == RS_OK;
	if (found && list_add_json(&pushed, pbody, plen, "the pushed", &err) != RS_OK) {
		if (err.code == RS_BAD_INPUT) /* our own store's list */
			err.code = RS_IO;
		free(pbody);
		list_dispose(&pushed);
		return reply_fail(rq, &err, REPLY_NAME, NULL, 0);
	}
	free(pbody);
	rs_err_clear(&err);

	char query[RS_LIMIT_TAG_MAX * 3 + 64];
	upstream_query(query, sizeof(query), &pq);
	struct upstream_reply rep = {0};
	const char *upname = r->cfg->upstreams[t->up_index].name;
	metrics_upstream(upname, METRICS_UP_REQUESTS);
	enum rs_code rc =
		upstream_tags(r->ups[t->up_index], t->repo, query[0] ? query : NULL, r->cfg->manifest_max_bytes, &rep, &err);
	if (rc)
		metrics_upstream(upname, METRICS_UP_ERRORS);
	struct page_src src = {.merged = pushed.n > 0};
	enum MHD_Result ret;
	if (rc == RS_OK && api_status_ok(rep.status)) {
		metrics_add(METRICS_UPSTREAM_BYTES, rep.body_len);
		rc = list_add_json(&all, rep.body, rep.body_len, "the upstream's", &err);
		if (rc == RS_BAD_INPUT) /* the upstream's fault: 502 */
			rc = err.code = RS_UPSTREAM;
		list_sort_unique(&all);
		src.up_link = rep.link;
		src.up_more = rep.link && strstr(rep.link, "next") && all.n;
		src.bound = src.up_more ? all.v[all.n - 1] : NULL;
		/* the bound is the upstream page's own last tag: kept apart from
		 * the merged list, which may free its duplicate */
		char *bound = src.bound ? strdup(src.bound) : NULL;
		src.bound = bound;
		for (size_t i = 0; rc == RS_OK && i < pushed.n; i++)
			rc = list_add(&all, pushed.v[i], &err);
		list_sort_unique(&all);
		ret = rc ? reply_fail(rq, &err, REPLY_NAME, NULL, 0)
		         : src.up_more && !bound ? MHD_NO : answer_page(r, rq, t, &all, &pq, &src);
		free(bound);
	} else if (pushed_only(&pushed, found, t, rc ? err.msg : "it answered with an error status", rc ? 0 : rep.status)) {
		src = (struct page_src){.merged = true};
		ret = answer_page(r, rq, t, &pushed, &pq, &src);
	} else if (rc) {
		ret = reply_fail(rq, &err, REPLY_NAME, NULL, 0);
	} else {
		ret = api_answer_upstream_error(rq, &rep, REPLY_NAME);
	}
	upstream_reply_dispose(&rep);
	list_dispose(&pushed);
	list_dispose(&all);
	return ret;
}
