/* http: libmicrohttpd in thread-per-connection mode. A blocking handler is
 * fine here: each connection has its own thread, so a blob reader waiting
 * for upstream bytes holds up nobody else. The access handler answers once the
 * request is fully read; request bodies are handed piece by piece to the
 * handler given at start (the registry API: uploads stream to disk, the read
 * side discards them); the server knows no route. The
 * completion callback logs and counts the request and frees it.
 *
 * Each connection carries a struct http_conn (MHD's socket context) from
 * the connection notifier's start to its close: its slowloris guard entry
 * (conn_guard.h), its TLS state, and what the URL decoder saw. Requests
 * whose framing HTTP/1.1 forbids (no Host, conflicting Content-Length) or
 * whose decoded URL holds a NUL are refused here with 400, before routing. */
#include "http.h"

#include "conn_guard.h"
#include "log.h"
#include "metrics.h"
#include "reply.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONNECTION_IDLE_TIMEOUT_S 120
/* accept() waits this long for a connection's first bytes (TCP_DEFER_ACCEPT),
 * so that the connection notifier can look at them (tls_sniff_mixup). Every
 * HTTP or TLS client speaks first; a silent one is accepted after it anyway. */
#define DEFER_ACCEPT_S 5
/* Without sendfile (TLS), MHD reads a file body 4 KiB at a time and sends
 * each piece as its own TLS record; reading 64 KiB lets GnuTLS fill whole
 * 16 KiB records (bench/serve.sh: about 1.5x the blob throughput). */
#define TLS_FILE_BLOCK (64 * 1024)

struct http_server {
	struct MHD_Daemon *daemon;
	struct http_handler h;
	struct tls_server *tls; /* NULL: plain HTTP */
	struct conn_guard *guard;
	atomic_uint active; /* requests between first call and completion */
};

/* Per connection (MHD's socket_context), from NOTIFY_STARTED to
 * NOTIFY_CLOSED; only the connection's own thread touches it. */
struct http_conn {
	struct conn_guard_conn *guard; /* NULL: unguarded (out of memory) or refused */
	void *tls;                     /* tls_server_conn_started's context */
	bool nul_in_url;               /* the URL decoder produced a NUL for the coming request */
};

static struct http_conn *conn_ctx(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci ? ci->socket_context : NULL;
}

static uint64_t ms_since(const struct timespec *t0)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	int64_t ms = (int64_t)(now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
	return ms > 0 ? (uint64_t)ms : 0;
}

/* The header iterator of request_framing(): counts and the first value. */
struct framing {
	unsigned hosts, lengths, encodings;
	const char *length; /* the first Content-Length */
	bool lengths_differ;
};

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	(void)kind;
	struct framing *f = cls;
	if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
		f->hosts++;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
		if (f->lengths++ == 0)
			f->length = value;
		else if (strcmp(f->length, value ? value : "") != 0)
			f->lengths_differ = true;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
		f->encodings++;
	}
	return MHD_YES;
}

/* What is wrong with the request's framing, or NULL. libmicrohttpd 0.9.75
 * accepts all of these: it reads the body by the first Content-Length. */
static const char *request_framing(struct MHD_Connection *conn, const char *version)
{
	struct framing f = {0};
	MHD_get_connection_values(conn, MHD_HEADER_KIND, count_header, &f);
	/* RFC 9112 section 3.2: a Host in every HTTP/1.1 request, never two. */
	bool http11 = strcmp(version, MHD_HTTP_VERSION_1_0) != 0 && strncmp(version, "HTTP/1.", 7) == 0;
	if (f.hosts == 0 && http11)
		return "an HTTP/1.1 request needs a Host header (RFC 9112, section 3.2)";
	if (f.hosts > 1)
		return "more than one Host header (RFC 9112, section 3.2)";
	/* Section 6.3: differing lengths leave the framing unknown; a length
	 * next to a transfer coding is how requests are smuggled. */
	if (f.lengths_differ)
		return "conflicting Content-Length headers (RFC 9112, section 6.3)";
	if (f.lengths && f.encodings)
		return "both Transfer-Encoding and Content-Length (RFC 9112, section 6.3)";
	return NULL;
}

/* MHD_OPTION_UNESCAPE_CALLBACK: MHD's own decoding, and a note when it
 * produced a NUL, which would silently cut the C string the handlers see
 * ("/v2/a/manifests/v1%00../x" would be served as tag v1). Called for the
 * path and each query argument, before the access handler. */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
	(void)cls;
	size_t n = MHD_http_unescape(s);
	if (memchr(s, '\0', n)) {
		struct http_conn *hc = conn_ctx(conn);
		if (hc)
			hc->nul_in_url = true;
	}
	return n;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls)
{
	struct http_server *s = cls;
	struct request *rq = *con_cls;
	struct http_conn *hc = conn_ctx(conn);
	struct conn_guard_conn *guard = hc ? hc->guard : NULL;
	if (rq) {
		if (*upload_data_size) {
			/* Write routes stream the body into their upload; the read side
			 * discards bodies. After an early answer (an error found while
			 * the body arrives) the rest is dropped. */
			size_t n = *upload_data_size;
			*upload_data_size = 0;
			conn_guard_body(guard, n);
			if (rq->answered)
				return MHD_YES;
			conn_guard_busy(guard, true); /* our time is not the client's */
			enum MHD_Result ret = s->h.body(s->h.ctx, rq, upload_data, n);
			conn_guard_busy(guard, false);
			if (rq->answered)
				conn_guard_body_done(guard);
			return ret;
		}
		conn_guard_body_done(guard);
		if (rq->answered)
			return MHD_YES;
		/* Answering only after the full request was read keeps HTTP/1.1
		 * connections alive; an answer queued on the first call makes MHD
		 * close the connection afterwards. */
		return s->h.handle(s->h.ctx, rq);
	}
	conn_guard_head_done(guard);
	if (hc && hc->tls)
		tls_server_conn_served(hc->tls);
	rq = calloc(1, sizeof(*rq));
	if (!rq)
		return MHD_NO;
	clock_gettime(CLOCK_MONOTONIC, &rq->start);
	rq->tls = s->tls != NULL;
	rq->conn = conn;
	rq->method = method;
	rq->url = url;
	rq->route = "other";
	*con_cls = rq;
	atomic_fetch_add(&s->active, 1);
	bool nul = hc && hc->nul_in_url;
	if (hc)
		hc->nul_in_url = false;
	const char *bad = request_framing(conn, version);
	if (nul || bad) {
		conn_guard_body_done(guard);
		/* Answered on the first call: MHD reads no body and closes the
		 * connection after it (RFC 9112 6.3 asks for the close). */
		static const struct reply_header close_hdr[] = {{MHD_HTTP_HEADER_CONNECTION, "close"}};
		rq->answered = true;
		return nul ? reply_error(rq, RS_BAD_INPUT, REPLY_NAME, "the request URL has an encoded NUL byte (%00)",
		                         close_hdr, 1)
		           : reply_error(rq, RS_BAD_INPUT, REPLY_FRAMING, bad, close_hdr, 1);
	}
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
	struct http_conn *hc = conn_ctx(conn);
	enum conn_guard_reason dropped = hc ? conn_guard_dropped(hc->guard) : CONN_GUARD_OK;
	if (hc)
		conn_guard_request_done(hc->guard);
	char drop_msg[200];
	if (dropped)
		conn_guard_describe(drop_msg, sizeof(drop_msg), s->guard, dropped);
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
		.error = dropped ? drop_msg : rq->error ? rq->error : why,
	};
	log_request(&lr);
	if (rq->body_free)
		rq->body_free(rq->body_state);
	free(rq->error);
	free(rq);
	atomic_fetch_sub(&s->active, 1);
}

static void conn_peer(char *out, size_t size, struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	bool v6 = false;
	if (ci && ci->client_addr) {
		const struct sockaddr *sa = ci->client_addr;
		if (sa->sa_family == AF_INET) {
			const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
			inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
			port = ntohs(a->sin_port);
		} else if (sa->sa_family == AF_INET6) {
			const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
			inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
			port = ntohs(a->sin6_port);
			v6 = true;
		}
	}
	snprintf(out, size, v6 ? "[%s]:%u" : "%s:%u", host, port);
}

/* Connection start and end (not requests): the slowloris guard, TLS
 * generation pins and the protocol mix-up check on the first bytes. MHD
 * calls NOTIFY_CLOSED before it closes the socket. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
	struct http_server *s = cls;
	char peer[INET6_ADDRSTRLEN + 16];
	conn_peer(peer, sizeof(peer), conn);
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *fd = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		const union MHD_ConnectionInfo *ca = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		if (!fd)
			return;
		struct http_conn *hc = calloc(1, sizeof(*hc));
		if (!hc) {
			log_event(LOG_ERROR, "out of memory accepting %s; closing it", peer);
			(void)shutdown(fd->connect_fd, SHUT_RDWR); /* MHD closes it at its first read */
			return;
		}
		*socket_context = hc;
		if (!conn_guard_open(&hc->guard, s->guard, fd->connect_fd, ca ? ca->client_addr : NULL, peer))
			return; /* refused (max_connections_per_ip): answered, logged and counted */
		if (s->tls)
			tls_server_conn_started(s->tls, &hc->tls, fd->connect_fd, peer);
		else
			(void)tls_sniff_mixup(fd->connect_fd, false, peer); /* it logs what it did */
		return;
	}
	struct http_conn *hc = *socket_context;
	*socket_context = NULL;
	if (!hc)
		return;
	if (s->tls) {
		const union MHD_ConnectionInfo *si = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
		tls_server_conn_closed(s->tls, hc->tls, si ? si->tls_session : NULL, peer);
	}
	conn_guard_close(s->guard, hc->guard);
	free(hc);
}

/* A file body read with pread in TLS_FILE_BLOCK pieces (see http_response_from_fd). */
struct fd_body {
	int fd;
	uint64_t offset;
};

static ssize_t fd_body_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct fd_body *b = cls;
	ssize_t n;
	do
		n = pread(b->fd, buf, max, (off_t)(b->offset + pos));
	while (n < 0 && errno == EINTR);
	/* 0 here means the file is shorter than the length announced. */
	return n > 0 ? n : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void fd_body_free(void *cls)
{
	struct fd_body *b = cls;
	close(b->fd);
	free(b);
}

struct MHD_Response *http_response_from_fd(int fd, uint64_t offset, uint64_t len, bool tls)
{
	if (!tls)
		return MHD_create_response_from_fd_at_offset64(len, fd, (int64_t)offset);
	struct fd_body *b = malloc(sizeof(*b));
	if (!b)
		return NULL;
	b->fd = fd;
	b->offset = offset;
	struct MHD_Response *resp = MHD_create_response_from_callback(len, TLS_FILE_BLOCK, fd_body_read, b, fd_body_free);
	if (!resp)
		free(b);
	return resp;
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

/* MHD tells us nothing about why a bind failed; probe it ourselves so the
 * message names the address and the errno. */
static enum rs_code probe_bind(const struct sockaddr_storage *ss, const char *listen, struct rs_err *err)
{
	int probe = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe < 0)
		return RS_OK; /* MHD will fail the same way, and say so */
	int one = 1;
	(void)setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)); /* as MHD does */
	socklen_t sl = ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	int rc = bind(probe, (const struct sockaddr *)ss, sl);
	int e = errno;
	close(probe);
	if (rc != 0)
		return rs_err_set(err, RS_IO, "cannot listen on %s: %s", listen, strerror(e));
	return RS_OK;
}

enum rs_code http_start(struct http_server **out, const struct rs_config *cfg, const struct http_handler *h,
                        struct rs_err *err)
{
	struct sockaddr_storage ss;
	enum rs_code rc = parse_listen(cfg->listen, &ss, err);
	if (rc || (rc = probe_bind(&ss, cfg->listen, err)))
		return rc;
	struct http_server *s = calloc(1, sizeof(*s));
	if (!s)
		return rs_err_set(err, RS_NOMEM, "http: out of memory");
	s->h = *h;
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC |
	                 MHD_USE_ERROR_LOG;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	struct conn_guard_limits lim = {
		.header_timeout_s = cfg->header_timeout_s,
		.body_min_bytes_per_s = cfg->body_min_bytes_per_s,
		.body_rate_window_s = cfg->body_rate_window_s,
		.max_per_ip = cfg->max_connections_per_ip,
		.tls = cfg->tls.enabled,
	};
	if ((rc = conn_guard_new(&s->guard, &lim, err))) {
		free(s);
		return rc;
	}
	struct MHD_OptionItem tls_opts[TLS_MHD_OPTIONS] = {{MHD_OPTION_END, 0, NULL}};
	if (cfg->tls.enabled) {
		if ((rc = tls_server_new(&s->tls, &cfg->tls, err))) {
			conn_guard_free(s->guard);
			free(s);
			return rc;
		}
		flags |= MHD_USE_TLS;
		tls_server_mhd_options(tls_opts, TLS_MHD_OPTIONS, s->tls);
	}
	s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_access, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	                             MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
	                             MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONNECTION_IDLE_TIMEOUT_S,
	                             MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION,
	                             on_connection, s, MHD_OPTION_UNESCAPE_CALLBACK, unescape, s,
	                             MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
	                             MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_ARRAY, tls_opts,
	                             MHD_OPTION_END);
	if (!s->daemon) {
		tls_server_free(s->tls);
		conn_guard_free(s->guard);
		free(s);
		return rs_err_set(err, RS_IO, "cannot start the %s server on %s", cfg->tls.enabled ? "HTTPS" : "HTTP",
		                  cfg->listen);
	}
	if (cfg->max_connections_per_ip && cfg->max_connections_per_ip >= cfg->max_connections)
		log_event(LOG_WARN, "max_connections_per_ip (%u) is not below max_connections (%u): one address can take "
		                    "every connection slot",
		          cfg->max_connections_per_ip, cfg->max_connections);
	if ((rc = conn_guard_start(s->guard, err))) {
		MHD_stop_daemon(s->daemon);
		tls_server_free(s->tls);
		conn_guard_free(s->guard);
		free(s);
		return rc;
	}
	const union MHD_DaemonInfo *li = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_LISTEN_FD);
	int defer = DEFER_ACCEPT_S;
	if (!li || setsockopt(li->listen_fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof(defer)) != 0)
		log_event(LOG_WARN, "http: no TCP_DEFER_ACCEPT on %s: protocol mix-ups may not be answered", cfg->listen);
	*out = s;
	return RS_OK;
}

enum rs_code http_reload_tls(struct http_server *s, struct rs_err *err)
{
	if (!s->tls)
		return rs_err_set(err, RS_CONFIG, "no tls section: nothing to reload");
	return tls_server_reload(s->tls, err);
}

bool http_tls_info(struct tls_info *out, struct http_server *s)
{
	if (!s->tls)
		return false;
	tls_server_info(out, s->tls);
	return true;
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
	conn_guard_free(s->guard); /* after the daemon: it closed every connection */
	tls_server_free(s->tls);
	free(s);
}
