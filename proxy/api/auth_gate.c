/* auth_gate: push_http_gate, which registry.c and uploads.c ask before any
 * API request goes on. Without an "auth" section pulls stay anonymous and
 * pushes are refused with 403 and a hint (docs/push.md); with one, auth.c
 * decides and the answer is go ahead, 401 with a Bearer challenge whose
 * realm is derived from the Host header, 403 DENIED, or 429 with
 * Retry-After from the failed-login back-off. Answers go out through
 * reply.h. */
#include "api_int.h"

#include "auth.h"
#include "push_http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ------------------------------------------------------------ gate */

static bool host_ok(const char *h)
{
	if (!h || !h[0] || strlen(h) > 255)
		return false;
	for (const char *p = h; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr(".-:[]_", *p))
			return false;
	return true;
}

/* Safe inside a quoted header value: a repository name, with an upstream
 * host[:port] in front. */
static bool header_safe(const char *s)
{
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._/:-", *s))
			return false;
	return true;
}

static enum MHD_Result challenge(struct push_http *ph, struct request *rq, const char *repo, unsigned need,
                                 const char *error, const char *msg)
{
	char realm[512];
	const char *host = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
	if (ph->cfg->auth.realm)
		snprintf(realm, sizeof(realm), "%s", ph->cfg->auth.realm);
	else
		snprintf(realm, sizeof(realm), "http://%s/auth/token", host_ok(host) ? host : ph->cfg->listen);
	char www[1024];
	int n = snprintf(www, sizeof(www), "Bearer realm=\"%s\",service=\"" SERVICE "\"", realm);
	/* callers validate repo first; what is not a plain name never goes into the header */
	if (repo && header_safe(repo) && n > 0 && (size_t)n < sizeof(www))
		n += snprintf(www + n, sizeof(www) - (size_t)n, ",scope=\"repository:%s:%s\"", repo,
		              need & AUTH_PUSH ? "pull,push" : "pull");
	if (error && n > 0 && (size_t)n < sizeof(www))
		snprintf(www + n, sizeof(www) - (size_t)n, ",error=\"%s\"", error);
	struct reply_header h[] = {{MHD_HTTP_HEADER_WWW_AUTHENTICATE, www}};
	rq->answered = true;
	return reply_error(rq, RS_UNAUTHORIZED, REPLY_AUTH, msg, h, 1);
}

/* The client's address as text (for the failed-login back-off). */
void api_client_addr(struct request *rq, char *out, size_t cap)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	const struct sockaddr *sa = ci ? ci->client_addr : NULL;
	snprintf(out, cap, "?");
	if (sa && sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out, (socklen_t)cap);
	else if (sa && sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out, (socklen_t)cap);
}

/* 429 TOOMANYREQUESTS with Retry-After, for a login refused by the back-off. */
enum MHD_Result api_throttled(struct request *rq, const char *msg, unsigned retry_after)
{
	rq->answered = true;
	return reply_throttled(rq, msg, retry_after);
}

bool push_http_gate(struct push_http *ph, struct request *rq, const char *repo, unsigned need, enum MHD_Result *ret)
{
	if (!ph->auth) {
		if (!(need & AUTH_PUSH))
			return true;
		rq->answered = true;
		*ret = reply_error(rq, RS_DENIED, REPLY_AUTH,
		                   "pushing is disabled: add an \"auth\" section (htpasswd users, acl) to the configuration "
		                   "to enable it; see docs/push.md",
		                   NULL, 0);
		return false;
	}
	const char *authz = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	struct auth_decision d;
	char addr[64];
	api_client_addr(rq, addr, sizeof(addr));
	struct auth_client client = {.addr = addr};
	auth_decide(ph->auth, authz, &client, repo, need, time(NULL), &d);
	if (d.verdict == AUTH_ALLOW)
		return true;
	if (d.verdict == AUTH_THROTTLED) {
		*ret = api_throttled(rq, d.msg, client.retry_after);
		return false;
	}
	if (d.verdict == AUTH_DENY) {
		rq->answered = true;
		*ret = reply_error(rq, RS_DENIED, REPLY_AUTH, d.msg, NULL, 0);
		return false;
	}
	const char *error = d.insufficient_scope ? "insufficient_scope"
	                    : authz && strncasecmp(authz, "Bearer", 6) == 0 ? "invalid_token"
	                                                                   : NULL;
	*ret = challenge(ph, rq, repo, need, error, d.msg);
	return false;
}

