/* clustertool: a test-only command line over proxy/cluster/cluster.c, so that
 * tests/integration/test_cluster_redis.sh drives the real coordination against the lab's Redis
 * (tests/lab/redis.sh) from several processes at once. Not installed, not a regslim subcommand.
 *
 *   clustertool CONFIG COMMAND ARGS      CONFIG: a regslim configuration with a "cluster" section
 *     mode                         prints "up", "down" or "local" and the ms cluster_new took
 *     lock NAME HOLD_MS            take NAME once: "acquired SCOPE OWNER" (SCOPE up or local) or
 *                                  "busy HOLDER" (exit 3); hold it HOLD_MS (renewed by the
 *                                  cluster's thread), print "held" or "lost", release, "released"
 *     wait NAME WAIT_MS HOLD_MS    like lock, waiting up to WAIT_MS: "acquired after N ms SCOPE OWNER"
 *     until-up WAIT_MS NAME        print the mode, wait until it is "up" ("up after N ms"), then
 *                                  take and release NAME in Redis
 *     map-set KEY VALUE TTL_S | map-get KEY (prints the value; "absent", exit 3) | map-del KEY
 *     upload-put ID REPO SIZE | upload-get ID (prints "REPO SIZE OWNER") | upload-advance ID FROM TO
 *     upload-del ID
 *
 * Exit status: 0; 3 busy, absent or RS_NOT_FOUND; 4 RS_IO (Redis unavailable: the caller would
 * fall back); 5 RS_RANGE; 1 anything else. Messages on stderr. Lines go to stdout unbuffered, so
 * a test reading them sees each as it happens. */
#include "cluster.h"
#include "config.h"
#include "log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int exit_for(enum rs_code rc, const struct rs_err *err)
{
	if (rc == RS_OK)
		return 0;
	fprintf(stderr, "clustertool: %s\n", err->msg);
	return rc == RS_NOT_FOUND ? 3 : rc == RS_IO ? 4 : rc == RS_RANGE ? 5 : 1;
}

/* Hold l for hold_ms, then say whether it is still ours and release it. */
static void hold_and_release(struct cluster_lock *l, unsigned hold_ms)
{
	uint64_t until = now_ms() + hold_ms;
	while (now_ms() < until && cluster_lock_held(l))
		sleep_ms(20);
	printf("%s\n", cluster_lock_held(l) ? "held" : "lost");
	cluster_lock_release(l);
	printf("released\n");
}

static int cmd_lock(struct cluster *c, const char *name, unsigned wait_ms, unsigned hold_ms, bool waiting)
{
	struct rs_err err = {0};
	struct cluster_lock *l = NULL;
	char holder[CLUSTER_OWNER_MAX];
	uint64_t t0 = now_ms();
	enum rs_code rc = waiting ? cluster_lock_wait(&l, c, name, wait_ms, holder, sizeof(holder), &err)
	                          : cluster_lock_try(&l, c, name, holder, sizeof(holder), &err);
	if (rc)
		return exit_for(rc, &err);
	if (!l) {
		printf("busy %s\n", holder);
		return 3;
	}
	if (waiting)
		printf("acquired after %" PRIu64 " ms %s %s\n", now_ms() - t0, cluster_mode_name(cluster_lock_scope(l)),
		       cluster_lock_owner(l));
	else
		printf("acquired %s %s\n", cluster_mode_name(cluster_lock_scope(l)), cluster_lock_owner(l));
	hold_and_release(l, hold_ms);
	return 0;
}

static int cmd_until_up(struct cluster *c, unsigned wait_ms, const char *name)
{
	char why[RS_ERR_MSG_MAX];
	uint64_t t0 = now_ms();
	enum cluster_mode m = cluster_mode(c, why, sizeof(why));
	printf("%s%s%s\n", cluster_mode_name(m), why[0] ? " " : "", why);
	while (m != CLUSTER_UP && now_ms() - t0 < wait_ms) {
		sleep_ms(50);
		m = cluster_mode(c, NULL, 0);
	}
	if (m != CLUSTER_UP) {
		printf("still %s after %u ms\n", cluster_mode_name(m), wait_ms);
		return 3;
	}
	printf("up after %" PRIu64 " ms\n", now_ms() - t0);
	return cmd_lock(c, name, 0, 0, false);
}

static int cmd_map(struct cluster *c, int argc, char **argv)
{
	struct rs_err err = {0};
	enum rs_code rc;
	if (strcmp(argv[0], "map-set") == 0 && argc == 4) {
		rc = cluster_map_set(c, argv[1], argv[2], (unsigned)strtoul(argv[3], NULL, 10), &err);
	} else if (strcmp(argv[0], "map-get") == 0 && argc == 2) {
		char *v = NULL;
		rc = cluster_map_get(&v, c, argv[1], &err);
		if (!rc && !v) {
			printf("absent\n");
			return 3;
		}
		if (!rc)
			printf("%s\n", v);
		free(v);
	} else if (strcmp(argv[0], "map-del") == 0 && argc == 2) {
		rc = cluster_map_del(c, argv[1], &err);
	} else {
		fprintf(stderr, "clustertool: bad arguments for %s\n", argv[0]);
		return 2;
	}
	return exit_for(rc, &err);
}

static int cmd_upload(struct cluster *c, int argc, char **argv)
{
	struct rs_err err = {0};
	enum rs_code rc;
	struct cluster_upload u = {0};
	if (strcmp(argv[0], "upload-put") == 0 && argc == 4) {
		snprintf(u.repository, sizeof(u.repository), "%s", argv[2]);
		u.size = strtoull(argv[3], NULL, 10);
		snprintf(u.owner, sizeof(u.owner), "%s", cluster_replica_id(c));
		rc = cluster_upload_put(c, argv[1], &u, 60, &err);
	} else if (strcmp(argv[0], "upload-get") == 0 && argc == 2) {
		rc = cluster_upload_get(&u, c, argv[1], &err);
		if (!rc)
			printf("%s %" PRIu64 " %s\n", u.repository, u.size, u.owner);
	} else if (strcmp(argv[0], "upload-advance") == 0 && argc == 4) {
		rc = cluster_upload_advance(c, argv[1], strtoull(argv[2], NULL, 10), strtoull(argv[3], NULL, 10), 60, &err);
	} else if (strcmp(argv[0], "upload-del") == 0 && argc == 2) {
		rc = cluster_upload_del(c, argv[1], &err);
	} else {
		fprintf(stderr, "clustertool: bad arguments for %s\n", argv[0]);
		return 2;
	}
	return exit_for(rc, &err);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: clustertool CONFIG COMMAND ARGS (see tests/tools/clustertool.c)\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IONBF, 0);
	log_set_level("warn");
	struct rs_config cfg;
	struct rs_err err = {0};
	if (config_load(&cfg, argv[1], &err))
		return exit_for(err.code, &err);
	struct cluster *c = NULL;
	uint64_t t0 = now_ms();
	if (cluster_new(&c, &cfg.cluster, NULL, &err)) {
		config_dispose(&cfg);
		return exit_for(err.code, &err);
	}
	uint64_t took = now_ms() - t0;
	int rest = argc - 2;
	char **a = argv + 2;
	int st = 2;
	if (strcmp(a[0], "mode") == 0)
		st = (printf("%s %" PRIu64 "\n", cluster_mode_name(cluster_mode(c, NULL, 0)), took), 0);
	else if (strcmp(a[0], "lock") == 0 && rest == 3)
		st = cmd_lock(c, a[1], 0, (unsigned)strtoul(a[2], NULL, 10), false);
	else if (strcmp(a[0], "wait") == 0 && rest == 4)
		st = cmd_lock(c, a[1], (unsigned)strtoul(a[2], NULL, 10), (unsigned)strtoul(a[3], NULL, 10), true);
	else if (strcmp(a[0], "until-up") == 0 && rest == 3)
		st = cmd_until_up(c, (unsigned)strtoul(a[1], NULL, 10), a[2]);
	else if (strncmp(a[0], "map-", 4) == 0)
		st = cmd_map(c, rest, a);
	else if (strncmp(a[0], "upload-", 7) == 0)
		st = cmd_upload(c, rest, a);
	else
		fprintf(stderr, "clustertool: unknown command or arguments: %s\n", a[0]);
	cluster_free(c);
	config_dispose(&cfg);
	return st;
}
