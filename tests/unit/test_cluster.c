/* test_cluster: the parts of the cluster coordination (proxy/cluster/cluster.c) that need no
 * Redis: the reconnection backoff, owner values, the per-process locks of a replica without a
 * cluster section (exclusive between threads, released, abandoned), and the degraded mode
 * against real loopback sockets: a port where nothing listens (refused at once) and one that
 * accepts connections and never answers (a hung Redis: bounded by cluster.timeout_ms), where
 * locks fall back to the process and the map and upload calls answer RS_IO at once. Redis
 * itself is exercised by tests/integration/test_cluster_redis.sh. */
#include "cluster.h"

#include "fixture.h"
#include "log.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A loopback TCP socket on a free port; listening (backlog, never accepted) or closed. */
static int loopback_port(bool listening, int *out_fd)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(fd, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	socklen_t n = sizeof(a);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &n), 0);
	if (listening)
		ck_assert_int_eq(listen(fd, 16), 0);
	else
		close(fd); /* nobody listens there now: connections are refused */
	*out_fd = listening ? fd : -1;
	return ntohs(a.sin_port);
}

static void config_for(struct rs_cluster_config *c, int port, unsigned timeout_ms)
{
	memset(c, 0, sizeof(*c));
	c->enabled = true;
	c->redis = (char *)"redis://127.0.0.1";
	c->redis_host = (char *)"127.0.0.1";
	c->redis_port = (unsigned)port;
	c->timeout_ms = timeout_ms;
	c->lock_ttl_s = 1;
	c->key_prefix = (char *)"regslim-test:";
}

START_TEST(backoff_doubles_to_five_seconds)
{
	ck_assert_uint_eq(cluster_backoff_ms(1), 100);
	ck_assert_uint_eq(cluster_backoff_ms(2), 200);
	ck_assert_uint_eq(cluster_backoff_ms(3), 400);
	ck_assert_uint_eq(cluster_backoff_ms(6), 3200);
	ck_assert_uint_eq(cluster_backoff_ms(7), 5000);
	ck_assert_uint_eq(cluster_backoff_ms(1000), 5000);
}
END_TEST

START_TEST(owner_values_name_the_replica_and_differ)
{
	struct cluster *c = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(cluster_new(&c, NULL, "http://10.0.0.5:5000", &err), RS_OK);
	ck_assert_int_eq(cluster_mode(c, NULL, 0), CLUSTER_LOCAL);
	struct cluster_lock *a = NULL, *b = NULL;
	ck_assert_int_eq(cluster_lock_try(&a, c, "x", NULL, 0, &err), RS_OK);
	ck_assert_int_eq(cluster_lock_try(&b, c, "y", NULL, 0, &err), RS_OK);
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	char rep[128];
	cluster_owner_replica(rep, sizeof(rep), cluster_lock_owner(a));
	ck_assert_str_eq(rep, "http://10.0.0.5:5000");
	ck_assert_uint_eq(strlen(cluster_lock_owner(a)), strlen("http://10.0.0.5:5000") + 1 + 16);
	ck_assert_str_ne(cluster_lock_owner(a), cluster_lock_owner(b));
	cluster_lock_release(a);
	cluster_lock_release(b);
	cluster_free(c);
}
END_TEST

START_TEST(local_locks_are_exclusive_until_released)
{
	struct cluster *c = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(cluster_new(&c, NULL, NULL, &err), RS_OK);
	struct cluster_lock *a = NULL, *b = NULL;
	char holder[CLUSTER_OWNER_MAX];
	ck_assert_int_eq(cluster_lock_try(&a, c, "sha256:ab", holder, sizeof(holder), &err), RS_OK);
	ck_assert_ptr_nonnull(a);
	ck_assert_int_eq(cluster_lock_scope(a), CLUSTER_LOCAL);
	ck_assert(cluster_lock_held(a));
	ck_assert(cluster_lock_renew(a));
	ck_assert_int_eq(cluster_lock_try(&b, c, "sha256:ab", holder, sizeof(holder), &err), RS_OK);
	ck_assert_ptr_null(b);
	ck_assert_str_eq(holder, cluster_lock_owner(a));
	uint64_t t0 = now_ms();
	ck_assert_int_eq(cluster_lock_wait(&b, c, "sha256:ab", 120, holder, sizeof(holder), &err), RS_OK);
	ck_assert_ptr_null(b);
	ck_assert_uint_ge(now_ms() - t0, 100);
	cluster_lock_release(a);
	ck_assert_int_eq(cluster_lock_try(&b, c, "sha256:ab", NULL, 0, &err), RS_OK);
	ck_assert_ptr_nonnull(b);
	cluster_lock_abandon(b); /* the process forgets it: free again */
	ck_assert_int_eq(cluster_lock_try(&a, c, "sha256:ab", NULL, 0, &err), RS_OK);
	ck_assert_ptr_nonnull(a);
	cluster_lock_release(a);
	cluster_lock_release(NULL);
	cluster_free(c);
}
END_TEST

struct racer {
	struct cluster *c;
	int wins;
};

static void *race(void *arg)
{
	struct racer *r = arg;
	struct rs_err err = {0};
	for (int i = 0; i < 200; i++) {
		struct cluster_lock *l = NULL;
		ck_assert_int_eq(cluster_lock_try(&l, r->c, "contended", NULL, 0, &err), RS_OK);
		if (l) {
			r->wins++;
			/* nobody else may hold it now */
			struct cluster_lock *x = NULL;
			ck_assert_int_eq(cluster_lock_try(&x, r->c, "contended", NULL, 0, &err), RS_OK);
			ck_assert_ptr_null(x);
			cluster_lock_release(l);
		}
	}
	return NULL;
}

START_TEST(local_locks_exclusive_between_threads)
{
	struct cluster *c = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(cluster_new(&c, NULL, NULL, &err), RS_OK);
	struct racer r[4];
	pthread_t t[4];
	for (int i = 0; i < 4; i++) {
		r[i] = (struct racer){c, 0};
		ck_assert_int_eq(pthread_create(&t[i], NULL, race, &r[i]), 0);
	}
	int total = 0;
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		total += r[i].wins;
	}
	ck_assert_int_gt(total, 0);
	cluster_free(c);
}
END_TEST

START_TEST(without_cluster_map_and_uploads_say_so)
{
	struct cluster *c = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(cluster_new(&c, NULL, NULL, &err), RS_OK);
	char *v = (char *)"x";
	ck_assert_int_eq(cluster_map_get(&v, c, "k", &err), RS_IO);
	ck_assert_ptr_null(v);
	ck_assert_str_eq(err.msg, "cluster: map get: no cluster configured");
	ck_assert_int_eq(cluster_map_set(c, "k", "v", 5, &err), RS_IO);
	struct cluster_upload u = {0};
	ck_assert_int_eq(cluster_upload_put(c, "id", &u, 5, &err), RS_IO);
	ck_assert_int_eq(cluster_upload_get(&u, c, "id", &err), RS_IO);
	ck_assert_int_eq(cluster_upload_advance(c, "id", 0, 1, 5, &err), RS_IO);
	cluster_free(c);
}
END_TEST

/* Redis configured on a port where nothing listens: degraded at once, locks per process. */
START_TEST(refused_redis_is_degraded_and_falls_back)
{
	int fd;
	int port = loopback_port(false, &fd);
	struct rs_cluster_config cfg;
	config_for(&cfg, port, 300);
	struct cluster *c = NULL;
	struct rs_err err = {0};
	uint64_t t0 = now_ms();
	ck_assert_int_eq(cluster_new(&c, &cfg, NULL, &err), RS_OK);
	char why[RS_ERR_MSG_MAX];
	ck_assert_int_eq(cluster_mode(c, why, sizeof(why)), CLUSTER_DOWN);
	ck_assert_msg(strstr(why, "connect:") != NULL, "%s", why);
	struct cluster_lock *l = NULL;
	ck_assert_int_eq(cluster_lock_try(&l, c, "sha256:cd", NULL, 0, &err), RS_OK);
	ck_assert_ptr_nonnull(l);
	ck_assert_int_eq(cluster_lock_scope(l), CLUSTER_LOCAL);
	char *v = NULL;
	ck_assert_int_eq(cluster_map_get(&v, c, "k", &err), RS_IO);
	ck_assert_msg(strstr(err.msg, "unavailable (degraded)") != NULL, "%s", err.msg);
	ck_assert_uint_lt(now_ms() - t0, 1000);
	cluster_lock_release(l);
	cluster_free(c);
}
END_TEST

/* A "Redis" that accepts connections and never answers: every call bounded by timeout_ms. */
START_TEST(hung_redis_is_bounded_by_the_timeout)
{
	int fd;
	int port = loopback_port(true, &fd);
	struct rs_cluster_config cfg;
	config_for(&cfg, port, 200);
	struct cluster *c = NULL;
	struct rs_err err = {0};
	uint64_t t0 = now_ms();
	ck_assert_int_eq(cluster_new(&c, &cfg, NULL, &err), RS_OK);
	uint64_t took = now_ms() - t0;
	ck_assert_uint_ge(took, 150);
	ck_assert_uint_lt(took, 1000);
	char why[RS_ERR_MSG_MAX];
	ck_assert_int_eq(cluster_mode(c, why, sizeof(why)), CLUSTER_DOWN);
	ck_assert_str_eq(why, "PING: no answer within 200 ms (cluster.timeout_ms)");
	/* the calls never wait for it: only the thread retries */
	t0 = now_ms();
	for (int i = 0; i < 20; i++) {
		struct cluster_lock *l = NULL;
		ck_assert_int_eq(cluster_lock_try(&l, c, "k", NULL, 0, &err), RS_OK);
		ck_assert_ptr_nonnull(l);
		cluster_lock_release(l);
		char *v = NULL;
		ck_assert_int_eq(cluster_map_get(&v, c, "k", &err), RS_IO);
	}
	/* the thread's reconnection attempts (200 ms each) run outside the mutex: nobody waits */
	ck_assert_uint_lt(now_ms() - t0, 500);
	cluster_free(c);
	close(fd);
}
END_TEST

static Suite *cluster_suite(void)
{
	Suite *s = suite_create("cluster");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, backoff_doubles_to_five_seconds);
	tcase_add_test(tc, owner_values_name_the_replica_and_differ);
	tcase_add_test(tc, local_locks_are_exclusive_until_released);
	tcase_add_test(tc, local_locks_exclusive_between_threads);
	tcase_add_test(tc, without_cluster_map_and_uploads_say_so);
	tcase_add_test(tc, refused_redis_is_degraded_and_falls_back);
	tcase_add_test(tc, hung_redis_is_bounded_by_the_timeout);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	log_set_level("error");
	return fixture_run_suite(cluster_suite());
}
