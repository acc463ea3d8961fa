/* http: libmicrohttpd in thread-per-connection mode. A blocking handler is
 * fine here: each connection has its own thread, so a blob reader waiting
 * for upstream bytes holds up nobody else. The access handler answers once the
 * request is fully read; request bodies are handed piece by piece to
 * registry_body() (uploads stream to disk, the read side discards them). The
 * completion callback logs and counts the request and frees it. */
#include "http.h"

#include "log.h"
#include "metrics.h"
#include "registry.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONNECTION_IDLE_TIMEOUT_S 120

struct http_server {
	struct MHD_Daemon *daemon;
	struct registry *reg;
	atomic_uint active; /* requests between first call and completion */
};

static uint64_t ms_since(const struct timespec *t0)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	int64_t ms = (int64_t)(now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
	return ms > 0 ? (uint64_t)ms : 0;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls)
{
	(void)version;
	struct http_server *s = cls;
	struct request *rq = *con_cls;
	if (rq) {
		if (*upload_data_size) {
			/* Write routes stream the body into their upload; the read side
			 * discards bodies. After an early answer (an error found while
			 * the body arrives) the rest is dropped. */
			size_t n = *upload_data_size;
			*upload_data_size = 0;
			if (rq->answered)
				return MHD_YES;
			return registry_body(s->reg, rq, upload_data, n);
		}
		if (rq->answered)
			return MHD_YES;
		/* Answering only after the full request was read keeps HTTP/1.1
		 * connections alive; an answer queued on the first call makes MHD
		 * close the connection afterwards. */
		return registry_handle(s->reg, rq);
	}
	rq = calloc(1, sizeof(*rq));
	if (!rq)
		return MHD_NO;
	clock_gettime(CLOCK_MONOTONIC, &rq->start);
	rq->reg = s->reg;
	rq->conn = conn;
	rq->method = method;
	rq->url = url;
	rq->route = "other";
	*con_cls = rq;
	atomic_fetch_add(&s->active, 1);
	return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct http_server *s = cls;
	struct request *rq = *con_cls;
	if (!rq)
		return;
	*con_cls = NULL;
	bool ok = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK;
	if (ok && !rq->body_counted)
		metrics_add(METRICS_CLIENT_BYTES, rq->body_bytes);
	metrics_request(rq->route, rq->method, rq->status);
	const char *ua = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_USER_AGENT);
	const char *why = NULL;
	if (!ok)
		why = toe == MHD_REQUEST_TERMINATED_WITH_ERROR     ? "response aborted"
		      : toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? "connection timed out"
		      : toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT    ? "client closed the connection"
		      : toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN ? "server shutting down"
		                                                      : "connection error";
	struct log_request lr = {
		.method = rq->method,
		.path = rq->url,
		.route = rq->route,
		.status = rq->status,
		.bytes = rq->body_bytes,
		.ms = ms_since(&rq->start),
		.cache = rq->cache,
		.upstream = rq->upstream,
		.ua = ua,
		.error = rq->error ? rq->error : why,
	};
	log_request(&lr);
	if (rq->body_free)
		rq->body_free(rq->body_state);
	free(rq->error);
	free(rq);
	atomic_fetch_sub(&s->active, 1);
}

/* Parse "ADDR:PORT" / "[V6]:PORT" into a socket address. */
static enum rs_code parse_listen(const char *listen, struct sockaddr_storage *ss, struct rs_err *err)
{
	char host[128];
	const char *colon = strrchr(listen, ':');
	if (!colon || colon == listen)
		return rs_err_set(err, RS_CONFIG, "listen address '%s': expected ADDR:PORT", listen);
	size_t hl = (size_t)(colon - listen);
	if (listen[0] == '[') {
		if (hl < 2 || listen[hl - 1] != ']')
			return rs_err_set(err, RS_CONFIG, "listen address '%s': expected [IPV6]:PORT", listen);
		memcpy(host, listen + 1, hl - 2);
		host[hl - 2] = '\0';
	} else {
		if (hl >= sizeof(host))
			return rs_err_set(err, RS_CONFIG, "listen address '%s' is too long", listen);
		memcpy(host, listen, hl);
		host[hl] = '\0';
	}
	char *end;
	errno = 0;
	long port = strtol(colon + 1, &end, 10);
	if (errno || *end || port < 1 || port > 65535)
		return rs_err_set(err, RS_CONFIG, "listen address '%s': port must be 1-65535", listen);
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
	if (strcmp(host, "localhost") == 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons((uint16_t)port);
	} else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((uint16_t)port);
	} else {
		return rs_err_set(err, RS_CONFIG, "listen address '%s': '%s' is not an IP address", listen, host);
	}
	return RS_OK;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char msg[512];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	log_event(LOG_DEBUG, "microhttpd: %s", msg);
}

enum rs_code http_start(struct http_server **out, const struct rs_config *cfg, struct registry *reg,
                        struct rs_err *err)
{
	struct sockaddr_storage ss;
	enum rs_code rc = parse_listen(cfg->listen, &ss, err);
	if (rc)
		return rc;
	struct http_server *s = calloc(1, sizeof(*s));
	if (!s)
		return rs_err_set(err, RS_NOMEM, "http: out of memory");
	s->reg = reg;
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC |
	                 MHD_USE_ERROR_LOG;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* MHD tells us nothing about why a bind failed; probe it ourselves so
	 * the message names the address and the errno. */
	int probe = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0) {
		int one = 1;
		setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		socklen_t sl = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
		if (bind(probe, (struct sockaddr *)&ss, sl) != 0) {
			int e = errno;
			close(probe);
			free(s);
			return rs_err_set(err, RS_IO, "cannot listen on %s: %s", cfg->listen, strerror(e));
		}
		close(probe);
	}
	s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_access, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	                             MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
	                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_IDLE_TIMEOUT_S,
	                             MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_EXTERNAL_LOGGER,
	                             mhd_log, NULL, MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
	                             MHD_OPTION_END);
	if (!s->daemon) {
		free(s);
		return rs_err_set(err, RS_IO, "cannot start the HTTP server on %s", cfg->listen);
	}
	*out = s;
	return RS_OK;
}

void http_stop(struct http_server *s, unsigned grace_s)
{
	if (!s)
		return;
	MHD_socket lsock = MHD_quiesce_daemon(s->daemon);
	if (lsock != MHD_INVALID_SOCKET)
		close(lsock);
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	unsigned left;
	while ((left = atomic_load(&s->active)) > 0 && ms_since(&t0) < (uint64_t)grace_s * 1000) {
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	if (left)
		log_event(LOG_WARN, "shutdown: %u requests still running after %us; closing them", left, grace_s);
	MHD_stop_daemon(s->daemon);
	free(s);
}
