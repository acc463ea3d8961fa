/* test_cachelru: the parts of the cluster-wide access bookkeeping (proxy/store/cachelru.c) that
 * need no Redis: the eviction order (held objects last, least recently used first, never used
 * first, ties in key order), member names, the holds snapshot's membership, and a cluster
 * whose Redis refuses connections: no evictor is elected (each replica evicts alone), the
 * view fails at once with RS_IO and the recheck before a removal lets the snapshot stand. The
 * cluster itself (election, holds published by another replica, LRU across replicas) is
 * exercised by tests/integration/test_cluster_evict.sh. */
#include "cachelru.h"

#include "cluster.h"
#include "fixture.h"
#include "log.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void hex_of(char out[DIGEST_HEX_LEN + 1], char c)
{
	memset(out, c, DIGEST_HEX_LEN);
	out[DIGEST_HEX_LEN] = '\0';
}

static struct cachelru_cand cand(enum store_kind kind, char c, uint64_t used_ms, bool held)
{
	struct cachelru_cand x = {.kind = kind, .size = 1, .used_ms = used_ms, .held = held};
	hex_of(x.hex, c);
	return x;
}

START_TEST(orders_held_last_then_least_recent_then_key)
{
	struct cachelru_cand v[] = {
		cand(STORE_BLOB, 'e', 5000, false), cand(STORE_BLOB, 'a', 0, true),   cand(STORE_BLOB, 'd', 0, false),
		cand(STORE_BLOB, 'c', 0, false),    cand(STORE_MANIFEST, 'b', 3000, false), cand(STORE_BLOB, 'f', 1, true),
	};
	cachelru_order(v, sizeof(v) / sizeof(v[0]));
	/* never used (0) first in key order, then by last use, held ones at the end */
	const char want[] = {'c', 'd', 'b', 'e', 'a', 'f'};
	for (size_t i = 0; i < sizeof(want); i++)
		ck_assert_msg(v[i].hex[0] == want[i], "position %zu: %c, want %c", i, v[i].hex[0], want[i]);
	ck_assert_int_eq(v[2].kind, STORE_MANIFEST);
}
END_TEST

START_TEST(members_name_kind_and_hex)
{
	char hex[DIGEST_HEX_LEN + 1], m[CACHELRU_MEMBER_SIZE];
	hex_of(hex, '7');
	cachelru_member(m, STORE_BLOB, hex);
	ck_assert_int_eq(strncmp(m, "b:7777", 6), 0);
	ck_assert_uint_eq(strlen(m), 2 + DIGEST_HEX_LEN);
	cachelru_member(m, STORE_MANIFEST, hex);
	ck_assert_int_eq(strncmp(m, "m:7777", 6), 0);
}
END_TEST

START_TEST(holds_snapshot_membership)
{
	struct cachelru_holds h = {0};
	struct rs_err err = {0};
	char hex[DIGEST_HEX_LEN + 1], m[CACHELRU_MEMBER_SIZE];
	ck_assert(!cachelru_holds_has(&h, STORE_BLOB, "00"));
	for (char c = 'f'; c >= 'a'; c--) {
		hex_of(hex, c);
		cachelru_member(m, c == 'c' ? STORE_MANIFEST : STORE_BLOB, hex);
		ck_assert_int_eq(cachelru_holds_add(&h, m, &err), RS_OK);
	}
	cachelru_holds_sort(&h);
	hex_of(hex, 'a');
	ck_assert(cachelru_holds_has(&h, STORE_BLOB, hex));
	ck_assert(!cachelru_holds_has(&h, STORE_MANIFEST, hex)); /* a blob's hold is not its manifest twin's */
	hex_of(hex, 'c');
	ck_assert(cachelru_holds_has(&h, STORE_MANIFEST, hex));
	hex_of(hex, '9');
	ck_assert(!cachelru_holds_has(&h, STORE_BLOB, hex));
	cachelru_holds_dispose(&h);
	ck_assert_uint_eq(h.n, 0);
}
END_TEST

static unsigned collected;
static void collect(void *ctx, struct cachelru_batch *b, uint64_t now_ms)
{
	(void)ctx;
	(void)b;
	(void)now_ms;
	collected++;
}

/* Redis configured on a port where nothing listens: degraded from the start. */
START_TEST(without_redis_no_evictor_and_the_view_fails_at_once)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	socklen_t n = sizeof(a);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &n), 0);
	struct rs_cluster_config cfg = {.enabled = true, .redis = (char *)"redis://127.0.0.1",
	                                .redis_host = (char *)"127.0.0.1", .redis_port = ntohs(a.sin_port),
	                                .timeout_ms = 200, .lock_ttl_s = 1, .key_prefix = (char *)"regslim-test:"};
	struct cluster *c = NULL;
	struct cachelru *l = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(cluster_new(&c, &cfg, "replica-a", &err), RS_OK);
	ck_assert_int_eq(cachelru_new(&l, c, collect, NULL, &err), RS_OK);
	char holder[64] = "x";
	ck_assert_int_eq(cachelru_elect(l, holder, sizeof(holder)), CACHELRU_ALONE);
	ck_assert_str_eq(holder, "");
	struct cachelru_cand v[1] = {cand(STORE_BLOB, 'a', 7, false)};
	struct cachelru_holds h;
	ck_assert_int_eq(cachelru_view(l, v, 1, &h, &err), RS_IO);
	ck_assert_msg(strstr(err.msg, "degraded") != NULL, "%s", err.msg);
	ck_assert_uint_eq(v[0].used_ms, 7);
	ck_assert(cachelru_still_evictable(l, STORE_BLOB, v[0].hex, 7));
	uint64_t size = 0;
	ck_assert(!cachelru_cluster_size(l, &size));
	cachelru_flush(l);
	ck_assert_uint_eq(collected, 0); /* nothing collected while Redis is away: the marks wait for it */
	cachelru_free(l);
	cluster_free(c);
	close(fd);
}
END_TEST

static Suite *cachelru_suite(void)
{
	Suite *s = suite_create("cachelru");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, orders_held_last_then_least_recent_then_key);
	tcase_add_test(tc, members_name_kind_and_hex);
	tcase_add_test(tc, holds_snapshot_membership);
	tcase_add_test(tc, without_redis_no_evictor_and_the_view_fails_at_once);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	log_set_level("error");
	return fixture_run_suite(cachelru_suite());
}
