/* conn_guard: limits against clients that hold connections without using
 * them (slowloris), enforced from outside libmicrohttpd, whose own timeout
 * only measures inactivity:
 *
 *  - the request head (and, on a new TLS connection, the handshake) must be
 *    complete within header_timeout_s of its first byte. A connection is
 *    idle between requests; its next head starts when the kernel has
 *    received a byte more than at the end of the previous request
 *    (TCP_INFO tcpi_bytes_received), so keep-alive idle time is not counted
 *    (MHD's connection timeout bounds it);
 *  - a request body must arrive at body_min_bytes_per_s on average over
 *    every body_rate_window_s seconds of body time; the time our own
 *    handler spends on a piece (conn_guard_busy) is not body time;
 *  - an address may hold at most max_per_ip connections (IPv4: the
 *    address; IPv6: its /64); the next one is refused at once with a short
 *    503 (plain HTTP) or a closed socket (TLS). libmicrohttpd's own
 *    MHD_OPTION_PER_IP_CONNECTION_LIMIT works in thread-per-connection mode
 *    too, but resets the refused client without an answer and tells us
 *    nothing to count or log.
 *
 * A watchdog thread checks every connection once a second and ends the
 * offending ones with shutdown(2): the connection's own thread then reads
 * end-of-file and libmicrohttpd closes it as usual, so nothing is freed
 * under its feet. Every drop and refusal is counted in metrics
 * (regslim_connections_dropped_total) and logged (at most one line a
 * second per reason). http.c calls these hooks from MHD's callbacks; this
 * module knows nothing of HTTP beyond the refusal's few bytes. */
#ifndef RS_PROXY_CONN_GUARD_H
#define RS_PROXY_CONN_GUARD_H

#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Why a connection was ended (metrics label, log text). */
enum conn_guard_reason {
	CONN_GUARD_OK = 0,
	CONN_GUARD_HEADER_TIMEOUT,
	CONN_GUARD_SLOW_BODY,
	CONN_GUARD_PER_IP_LIMIT,
};

/* Limits; 0 turns one off. */
struct conn_guard_limits {
	unsigned header_timeout_s;
	uint64_t body_min_bytes_per_s;
	unsigned body_rate_window_s; /* at least 1 when body_min_bytes_per_s is set */
	unsigned max_per_ip;
	bool tls; /* the listener speaks TLS: refusals send no plain-text answer */
};

struct conn_guard;
struct conn_guard_conn;

/* A guard with these limits (copied) and no thread yet. RS_NOMEM. */
RS_MUST_CHECK enum rs_code conn_guard_new(struct conn_guard **out, const struct conn_guard_limits *lim,
                                          struct rs_err *err);

/* Start the watchdog thread (conn_guard_tick once a second). RS_NOMEM when
 * the thread cannot be created. Without it nothing is dropped (tests drive
 * conn_guard_tick themselves). */
RS_MUST_CHECK enum rs_code conn_guard_start(struct conn_guard *g, struct rs_err *err);

/* Stop the thread and free the guard. Connections still registered are
 * forgotten (their entries freed); call it after the server closed them.
 * NULL does nothing. */
void conn_guard_free(struct conn_guard *g);

/* A connection was accepted on fd from peer (peer_text "ADDR:PORT" for
 * logs; both borrowed). Returns false when the connection is refused: its
 * address is at max_per_ip; the socket was answered and shut down (MHD
 * closes it at its first read). Else true with *out its entry (owned by the
 * guard until conn_guard_close), or NULL when memory ran out (the
 * connection then goes unguarded). */
bool conn_guard_open(struct conn_guard_conn **out, struct conn_guard *g, int fd, const struct sockaddr *peer,
                     const char *peer_text);

/* The connection is closing (MHD's NOTIFY_CLOSED): unregister and free c,
 * before its socket is closed. NULL does nothing. */
void conn_guard_close(struct conn_guard *g, struct conn_guard_conn *c);

/* Request phases, called from the connection's own thread: the head is
 * complete (first call of the access handler); n more body bytes arrived;
 * the body is complete or the request was answered (no more body limits);
 * the request ended (completion callback: the connection is idle until the
 * next byte arrives). Each c may be NULL. */
void conn_guard_head_done(struct conn_guard_conn *c);
void conn_guard_body(struct conn_guard_conn *c, size_t n);
void conn_guard_body_done(struct conn_guard_conn *c);
void conn_guard_request_done(struct conn_guard_conn *c);

/* Our handler runs (busy true) or returned (false): time in between is not
 * counted against the client's body rate. */
void conn_guard_busy(struct conn_guard_conn *c, bool busy);

/* Why the guard ended the connection, CONN_GUARD_OK if it did not. */
enum conn_guard_reason conn_guard_dropped(const struct conn_guard_conn *c);

/* A one-line description of reason with the limit and its setting
 * ("request head not complete within 20 s (limits.header_timeout_s)") into
 * out[size]. */
void conn_guard_describe(char *out, size_t size, const struct conn_guard *g, enum conn_guard_reason reason);

/* One watchdog pass at now_ms (CLOCK_MONOTONIC milliseconds): the checks
 * above, dropping what is over a limit. Returns how many it dropped. */
unsigned conn_guard_tick(struct conn_guard *g, uint64_t now_ms);

#endif
