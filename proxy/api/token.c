/* token: regslim's token endpoint, GET /auth/token with Basic credentials
 * and the requested scopes (docker's token protocol). auth.c checks the
 * password and the ACL and issues the token; a refused login is 401 with a
 * Basic challenge, or 429 from the back-off (auth_gate.c). Answers go out
 * through reply.h. */
#include "api_int.h"

#include "auth.h"
#include "push_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------ token endpoint */

bool push_http_is_token(const char *url)
{
	return strcmp(url, "/auth/token") == 0;
}

struct scope_list {
	char *v[RS_LIMIT_TOKEN_SCOPES_MAX + 1];
	size_t n;
	bool too_many;
};

static enum MHD_Result collect_scope(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	(void)kind;
	struct scope_list *s = cls;
	if (!key || !value || strcmp(key, "scope") != 0)
		return MHD_YES;
	/* OAuth style: several scopes in one parameter, space-separated. */
	const char *p = value;
	while (*p) {
		size_t l = strcspn(p, " ");
		if (l > 0) {
			if (s->n >= RS_LIMIT_TOKEN_SCOPES_MAX) {
				s->too_many = true;
				return MHD_NO;
			}
			s->v[s->n] = strndup(p, l);
			if (s->v[s->n])
				s->n++;
		}
		p += l;
		while (*p == ' ')
			p++;
	}
	return MHD_YES;
}

enum MHD_Result push_http_token(struct push_http *ph, struct request *rq)
{
	rq->route = "token";
	if (!ph->auth)
		return reply_error(rq, RS_NOT_FOUND, REPLY_AUTH, "no token endpoint: authentication is not configured (auth)",
		                   NULL, 0);
	if (strcmp(rq->method, "GET") != 0)
		/* containerd tries an OAuth POST first and falls back to GET on 405. */
		return reply_error(rq, RS_UNSUPPORTED, REPLY_AUTH, "use GET /auth/token with Basic credentials", NULL, 0);
	struct scope_list sl = {.n = 0};
	MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND, collect_scope, &sl);
	enum MHD_Result ret;
	if (sl.too_many) {
		char msg[96];
		snprintf(msg, sizeof(msg), "more than %u scopes requested", (unsigned)RS_LIMIT_TOKEN_SCOPES_MAX);
		ret = reply_error(rq, RS_BAD_INPUT, REPLY_AUTH, msg, NULL, 0);
		goto out;
	}
	const char *authz = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	char *body = malloc(3 * RS_LIMIT_TOKEN_MAX_CHARS);
	if (!body) {
		ret = MHD_NO;
		goto out;
	}
	struct rs_err err = {0};
	char addr[64];
	api_client_addr(rq, addr, sizeof(addr));
	struct auth_client client = {.addr = addr};
	enum rs_code rc = auth_issue_token(ph->auth, authz, &client, (const char *const *)sl.v, sl.n, time(NULL), body,
	                                   3 * RS_LIMIT_TOKEN_MAX_CHARS, &err);
	if (rc == RS_OK) {
		struct reply_header h[] = {{MHD_HTTP_HEADER_CACHE_CONTROL, "no-store"}};
		ret = reply_buffer(rq, 200, JSON_TYPE, body, strlen(body), REPLY_COPY, h, 1);
	} else if (rc == RS_THROTTLED) {
		ret = api_throttled(rq, err.msg, client.retry_after);
	} else if (rc == RS_UNAUTHORIZED) {
		struct reply_header h[] = {{MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Basic realm=\"" SERVICE "\""}};
		ret = reply_error(rq, RS_UNAUTHORIZED, REPLY_AUTH, err.msg, h, 1);
	} else {
		ret = reply_error(rq, rc, REPLY_AUTH, err.msg, NULL, 0);
	}
	free(body);
out:
	for (size_t i = 0; i < sl.n; i++)
		free(sl.v[i]);
	return ret;
}

