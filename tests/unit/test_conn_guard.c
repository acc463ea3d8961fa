/* Unit tests for conn_guard: real loopback TCP connections (the guard reads
 * TCP_INFO and shuts sockets down), the watchdog driven by hand through
 * conn_guard_tick() with chosen times, metrics read back. The listener uses
 * the suite's port from the build's block (lab_port_base, offset 200). */
#include "proxy/server/conn_guard.h"
#include "proxy/obs/metrics.h"

#include "fixture.h"
#include "lab.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int listener = -1;

static void setup(void)
{
	listener = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(listener, 0);
	int one = 1;
	ck_assert_int_eq(setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)lab_port_base(NULL, 200))};
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	ck_assert_msg(bind(listener, (struct sockaddr *)&a, sizeof(a)) == 0, "bind: %s", strerror(errno));
	ck_assert_int_eq(listen(listener, 64), 0);
}

static void teardown(void)
{
	close(listener);
}

/* A connected pair: the client (bound to src) and the accepted server end;
 * the client's address goes to *peer. */
struct pair {
	int client, server;
	struct sockaddr_in peer;
};

static struct pair connect_from(const char *src)
{
	struct pair p;
	p.client = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(p.client, 0);
	struct sockaddr_in s = {.sin_family = AF_INET};
	inet_pton(AF_INET, src, &s.sin_addr);
	ck_assert_int_eq(bind(p.client, (struct sockaddr *)&s, sizeof(s)), 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)lab_port_base(NULL, 200))};
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	ck_assert_int_eq(connect(p.client, (struct sockaddr *)&a, sizeof(a)), 0);
	socklen_t sl = sizeof(p.peer);
	p.server = accept(listener, (struct sockaddr *)&p.peer, &sl);
	ck_assert_int_ge(p.server, 0);
	return p;
}

static void pair_close(struct pair *p)
{
	close(p->client);
	close(p->server);
}

static void send_all(int fd, const char *s)
{
	ck_assert_int_eq(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
	usleep(20 * 1000); /* let the kernel count it on the other end */
}

/* What the client end reads within 1 s: up to n-1 bytes into buf; -1 when
 * nothing came (the connection is still open and silent), else the count
 * (0: end-of-file). */
static ssize_t client_read(int fd, char *buf, size_t n)
{
	struct pollfd pf = {.fd = fd, .events = POLLIN};
	if (poll(&pf, 1, 1000) != 1)
		return -1;
	ssize_t got = recv(fd, buf, n - 1, 0);
	if (got < 0 && errno == ECONNRESET)
		got = 0;
	buf[got > 0 ? got : 0] = '\0';
	return got;
}

static struct conn_guard *guard_with(unsigned header_s, uint64_t rate, unsigned window_s, unsigned per_ip)
{
	struct conn_guard_limits lim = {header_s, rate, window_s, per_ip, false};
	struct conn_guard *g = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(conn_guard_new(&g, &lim, &err), RS_OK);
	return g;
}

static struct conn_guard_conn *open_ok(struct conn_guard *g, struct pair *p)
{
	struct conn_guard_conn *c = NULL;
	ck_assert(conn_guard_open(&c, g, p->server, (struct sockaddr *)&p->peer, "test"));
	ck_assert_ptr_nonnull(c);
	return c;
}

START_TEST(per_ip_cap_refuses_with_503_and_counts)
{
	struct conn_guard *g = guard_with(0, 0, 0, 2);
	uint64_t before = metrics_get(METRICS_DROP_PER_IP_LIMIT);
	struct pair p[4];
	struct conn_guard_conn *c[2];
	for (int i = 0; i < 2; i++) {
		p[i] = connect_from("127.0.0.1");
		c[i] = open_ok(g, &p[i]);
	}
	p[2] = connect_from("127.0.0.1");
	send_all(p[2].client, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
	struct conn_guard_conn *refused = (void *)1;
	ck_assert(!conn_guard_open(&refused, g, p[2].server, (struct sockaddr *)&p[2].peer, "test"));
	ck_assert_ptr_null(refused);
	char buf[1024];
	ck_assert_int_gt(client_read(p[2].client, buf, sizeof(buf)), 0);
	ck_assert_msg(strncmp(buf, "HTTP/1.1 503 ", 13) == 0, "got %s", buf);
	ck_assert_ptr_nonnull(strstr(buf, "max_connections_per_ip is 2"));
	ck_assert_uint_eq(metrics_get(METRICS_DROP_PER_IP_LIMIT), before + 1);
	/* another address still gets in */
	p[3] = connect_from("127.0.0.2");
	struct conn_guard_conn *other = open_ok(g, &p[3]);
	/* a closed connection frees its slot */
	conn_guard_close(g, c[0]);
	struct pair again = connect_from("127.0.0.1");
	struct conn_guard_conn *c2 = open_ok(g, &again);
	conn_guard_close(g, c2);
	conn_guard_close(g, c[1]);
	conn_guard_close(g, other);
	pair_close(&again);
	for (int i = 0; i < 4; i++)
		pair_close(&p[i]);
	conn_guard_free(g);
}
END_TEST

START_TEST(trickled_head_is_dropped_after_the_bound)
{
	struct conn_guard *g = guard_with(3, 0, 0, 0);
	uint64_t before = metrics_get(METRICS_DROP_HEADER_TIMEOUT);
	struct pair p = connect_from("127.0.0.1");
	struct conn_guard_conn *c = open_ok(g, &p);
	send_all(p.client, "G");
	ck_assert_uint_eq(conn_guard_tick(g, 10000), 0); /* the head's clock starts */
	send_all(p.client, "E");
	ck_assert_uint_eq(conn_guard_tick(g, 11000), 0);
	ck_assert_uint_eq(conn_guard_tick(g, 12999), 0);
	ck_assert_uint_eq(conn_guard_dropped(c), CONN_GUARD_OK);
	ck_assert_uint_eq(conn_guard_tick(g, 13000), 1);
	ck_assert_uint_eq(conn_guard_dropped(c), CONN_GUARD_HEADER_TIMEOUT);
	ck_assert_uint_eq(metrics_get(METRICS_DROP_HEADER_TIMEOUT), before + 1);
	char buf[64];
	ck_assert_int_eq(client_read(p.client, buf, sizeof(buf)), 0); /* end-of-file */
	ck_assert_uint_eq(conn_guard_tick(g, 20000), 0);                /* once */
	/* the phase hooks of the connection's thread leave it dropped */
	conn_guard_head_done(c);
	conn_guard_request_done(c);
	ck_assert_uint_eq(conn_guard_dropped(c), CONN_GUARD_HEADER_TIMEOUT);
	conn_guard_close(g, c);
	pair_close(&p);
	conn_guard_free(g);
}
END_TEST

START_TEST(keepalive_idle_is_not_head_time)
{
	struct conn_guard *g = guard_with(3, 0, 0, 0);
	struct pair p = connect_from("127.0.0.1");
	send_all(p.client, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
	struct conn_guard_conn *c = open_ok(g, &p);
	ck_assert_uint_eq(conn_guard_tick(g, 1000), 0);
	conn_guard_head_done(c);
	conn_guard_body_done(c);
	ck_assert_uint_eq(conn_guard_tick(g, 9000), 0); /* answering takes what it takes */
	conn_guard_request_done(c);
	for (uint64_t t = 10000; t <= 200000; t += 1000)
		ck_assert_uint_eq(conn_guard_tick(g, t), 0);
	/* the next request's first byte starts its clock */
	send_all(p.client, "G");
	ck_assert_uint_eq(conn_guard_tick(g, 201000), 0);
	ck_assert_uint_eq(conn_guard_tick(g, 203000), 0);
	ck_assert_uint_eq(conn_guard_tick(g, 204000), 1);
	ck_assert_uint_eq(conn_guard_dropped(c), CONN_GUARD_HEADER_TIMEOUT);
	conn_guard_close(g, c);
	pair_close(&p);
	conn_guard_free(g);
}
END_TEST

START_TEST(no_header_bound_when_off)
{
	struct conn_guard *g = guard_with(0, 0, 0, 0);
	struct pair p = connect_from("127.0.0.1");
	send_all(p.client, "G");
	struct conn_guard_conn *c = open_ok(g, &p);
	for (uint64_t t = 1000; t <= 100000; t += 1000)
		ck_assert_uint_eq(conn_guard_tick(g, t), 0);
	conn_guard_close(g, c);
	pair_close(&p);
	conn_guard_free(g);
}
END_TEST

START_TEST(slow_body_is_dropped_fast_enough_one_is_not)
{
	/* 100 bytes/s over 2 s windows */
	struct conn_guard *g = guard_with(3, 100, 2, 0);
	uint64_t before = metrics_get(METRICS_DROP_SLOW_BODY);
	struct pair p = connect_from("127.0.0.1");
	send_all(p.client, "PUT / HTTP/1.1\r\n\r\n");
	struct conn_guard_conn *c = open_ok(g, &p);
	conn_guard_head_done(c);
	uint64_t t = 1000;
	ck_assert_uint_eq(conn_guard_tick(g, t), 0);
	/* 120 bytes a second: kept through many windows */
	for (int i = 0; i < 10; i++) {
		conn_guard_body(c, 120);
		ck_assert_uint_eq(conn_guard_tick(g, t += 1000), 0);
	}
	/* our handler holding the body for a long time is not the client's fault */
	conn_guard_busy(c, true);
	for (int i = 0; i < 10; i++)
		ck_assert_uint_eq(conn_guard_tick(g, t += 1000), 0);
	conn_guard_busy(c, false);
	/* then 50 bytes a second: dropped at the end of a window */
	unsigned dropped = 0;
	for (int i = 0; i < 4 && !dropped; i++) {
		conn_guard_body(c, 50);
		dropped = conn_guard_tick(g, t += 1000);
	}
	ck_assert_uint_eq(dropped, 1);
	ck_assert_uint_eq(conn_guard_dropped(c), CONN_GUARD_SLOW_BODY);
	ck_assert_uint_eq(metrics_get(METRICS_DROP_SLOW_BODY), before + 1);
	char buf[64];
	ck_assert_int_eq(client_read(p.client, buf, sizeof(buf)), 0);
	conn_guard_close(g, c);
	pair_close(&p);
	conn_guard_free(g);
}
END_TEST

START_TEST(complete_body_has_no_rate)
{
	struct conn_guard *g = guard_with(3, 1000, 1, 0);
	struct pair p = connect_from("127.0.0.1");
	send_all(p.client, "PUT / HTTP/1.1\r\n\r\n");
	struct conn_guard_conn *c = open_ok(g, &p);
	conn_guard_head_done(c);
	conn_guard_body(c, 10);
	conn_guard_body_done(c);
	for (uint64_t t = 1000; t <= 30000; t += 1000)
		ck_assert_uint_eq(conn_guard_tick(g, t), 0);
	conn_guard_close(g, c);
	pair_close(&p);
	conn_guard_free(g);
}
END_TEST

START_TEST(ipv6_counts_per_64_and_mapped_v4_as_v4)
{
	struct conn_guard *g = guard_with(0, 0, 0, 1);
	struct pair p[4];
	for (int i = 0; i < 4; i++)
		p[i] = connect_from("127.0.0.1");
	struct sockaddr_in6 a = {.sin6_family = AF_INET6};
	inet_pton(AF_INET6, "2001:db8:1:2::1", &a.sin6_addr);
	struct conn_guard_conn *c0 = NULL, *c1 = NULL, *c2 = NULL, *x = NULL;
	ck_assert(conn_guard_open(&c0, g, p[0].server, (struct sockaddr *)&a, "v6 a"));
	inet_pton(AF_INET6, "2001:db8:1:2:ffff::9", &a.sin6_addr); /* same /64 */
	ck_assert(!conn_guard_open(&x, g, p[1].server, (struct sockaddr *)&a, "v6 b"));
	inet_pton(AF_INET6, "2001:db8:1:3::1", &a.sin6_addr); /* another /64 */
	ck_assert(conn_guard_open(&c1, g, p[2].server, (struct sockaddr *)&a, "v6 c"));
	inet_pton(AF_INET6, "::ffff:127.0.0.1", &a.sin6_addr); /* the same as IPv4 127.0.0.1 */
	ck_assert(conn_guard_open(&c2, g, p[3].server, (struct sockaddr *)&a, "mapped"));
	struct pair q = connect_from("127.0.0.1");
	ck_assert(!conn_guard_open(&x, g, q.server, (struct sockaddr *)&q.peer, "v4"));
	conn_guard_close(g, c0);
	conn_guard_close(g, c1);
	conn_guard_close(g, c2);
	pair_close(&q);
	for (int i = 0; i < 4; i++)
		pair_close(&p[i]);
	conn_guard_free(g);
}
END_TEST

START_TEST(watchdog_thread_drops_and_stops)
{
	struct conn_guard *g = guard_with(1, 0, 0, 0);
	struct rs_err err = {0};
	ck_assert_int_eq(conn_guard_start(g, &err), RS_OK);
	struct pair p = connect_from("127.0.0.1");
	send_all(p.client, "G");
	struct conn_guard_conn *c = open_ok(g, &p);
	char buf[64];
	ssize_t got = -1;
	for (int i = 0; i < 5 && got < 0; i++)
		got = client_read(p.client, buf, sizeof(buf));
	ck_assert_int_eq(got, 0);
	ck_assert_uint_eq(conn_guard_dropped(c), CONN_GUARD_HEADER_TIMEOUT);
	conn_guard_close(g, c);
	pair_close(&p);
	conn_guard_free(g); /* joins the thread */
}
END_TEST

START_TEST(describe_names_the_setting)
{
	struct conn_guard *g = guard_with(20, 1024, 20, 256);
	char s[200];
	conn_guard_describe(s, sizeof(s), g, CONN_GUARD_HEADER_TIMEOUT);
	ck_assert_str_eq(s, "request head not complete within 20 s (limits.header_timeout_s)");
	conn_guard_describe(s, sizeof(s), g, CONN_GUARD_SLOW_BODY);
	ck_assert_str_eq(s, "request body slower than 1024 bytes/s over 20 s (limits.body_min_bytes_per_s)");
	conn_guard_describe(s, sizeof(s), g, CONN_GUARD_PER_IP_LIMIT);
	ck_assert_str_eq(s, "the address already has 256 connections (max_connections_per_ip)");
	conn_guard_free(g);
	conn_guard_free(NULL);
}
END_TEST

static Suite *conn_guard_suite(void)
{
	Suite *s = suite_create("conn_guard");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 30);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, per_ip_cap_refuses_with_503_and_counts);
	tcase_add_test(tc, trickled_head_is_dropped_after_the_bound);
	tcase_add_test(tc, keepalive_idle_is_not_head_time);
	tcase_add_test(tc, no_header_bound_when_off);
	tcase_add_test(tc, slow_body_is_dropped_fast_enough_one_is_not);
	tcase_add_test(tc, complete_body_has_no_rate);
	tcase_add_test(tc, ipv6_counts_per_64_and_mapped_v4_as_v4);
	tcase_add_test(tc, watchdog_thread_drops_and_stops);
	tcase_add_test(tc, describe_names_the_setting);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(conn_guard_suite());
}
