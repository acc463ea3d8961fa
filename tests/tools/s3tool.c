/* s3tool: a test-only command line over proxy/store/s3.c and s3_writer.c, so
 * that tests/integration/test_s3.sh drives the real client against the lab's
 * RGW (tests/lab/s3.sh). Not installed, not a regslim subcommand.
 *
 *   s3tool [--vhost] [--part-size BYTES] [--attempts N] [--timeout S] COMMAND ARGS
 *     put KEY FILE              PUT streamed from FILE (UNSIGNED-PAYLOAD)
 *     putmem KEY FILE           PUT from memory (the payload hash signed)
 *     get KEY [FIRST [LAST]]    GET (a range when FIRST is given) to stdout
 *     head KEY                  prints "SIZE ETAG"
 *     delete KEY
 *     list [PREFIX [MAX_KEYS]]  every page; prints "KEY SIZE" per key, "# pages N" on stderr
 *     write KEY DIGEST [SIZE]   the verified writer, bytes from stdin
 *     abandon KEY DIGEST        the writer fed stdin, then freed without its commit
 *     uploads KEY               unfinished multipart upload ids of KEY
 *     pget KEY N                N threads GET KEY at once through one client; prints each one's digest
 *
 * Settings from the environment: S3_ENDPOINT, S3_REGION, S3_BUCKET,
 * S3_ACCESS_KEY, S3_SECRET_KEY (or S3_SECRET_KEY_FILE). Exit status: 0, 3 for
 * RS_NOT_FOUND, 4 for RS_DIGEST_MISMATCH, 5 for RS_RANGE, 1 for anything else;
 * the error message on stderr. */
#include "s3.h"
#include "s3_writer.h"

#include "digest.h"

#include <curl/curl.h>
#include <pthread.h>

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static enum rs_code to_stdout(void *arg, const void *buf, size_t len, struct rs_err *err)
{
	(void)arg;
	if (fwrite(buf, 1, len, stdout) != len)
		return rs_err_set(err, RS_IO, "writing stdout failed");
	return RS_OK;
}

static enum rs_code print_key(void *arg, const char *key, int64_t size, struct rs_err *err)
{
	(void)err;
	(*(long *)arg)++;
	if (size >= 0)
		printf("%s %" PRId64 "\n", key, size);
	else
		printf("%s\n", key);
	return RS_OK;
}

static enum rs_code cmd_put(struct s3_client *c, const char *key, const char *file, bool mem, struct rs_err *err)
{
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0)
		return rs_err_set(err, RS_IO, "cannot open %s", file);
	enum rs_code rc;
	if (!mem) {
		rc = s3_put_fd(c, key, fd, (uint64_t)st.st_size, err);
	} else {
		char *b = malloc((size_t)st.st_size + 1);
		if (!b || read(fd, b, (size_t)st.st_size) != st.st_size)
			rc = rs_err_set(err, RS_IO, "cannot read %s", file);
		else
			rc = s3_put(c, key, b, (size_t)st.st_size, err);
		free(b);
	}
	close(fd);
	return rc;
}

static enum rs_code cmd_list(struct s3_client *c, const char *prefix, int max, struct rs_err *err)
{
	char *token = NULL, *next = NULL;
	long pages = 0, keys = 0;
	enum rs_code rc;
	do {
		rc = s3_list(c, prefix, token, max, print_key, &keys, &next, err);
		free(token);
		token = next;
		pages++;
	} while (rc == RS_OK && token);
	free(token);
	fprintf(stderr, "# pages %ld keys %ld\n", pages, keys);
	return rc;
}

static enum rs_code cmd_write(struct s3_client *c, const char *key, const char *digest, int64_t size, bool commit,
                              struct rs_err *err)
{
	struct s3_writer *w;
	char buf[65536];
	enum rs_code rc = s3_writer_new(&w, c, key, digest, size, err);
	if (rc != RS_OK)
		return rc;
	size_t n;
	while (rc == RS_OK && (n = fread(buf, 1, sizeof(buf), stdin)) > 0)
		rc = s3_writer_write(w, buf, n, err);
	if (rc == RS_OK && commit)
		rc = s3_writer_commit(w, err);
	s3_writer_free(w);
	return rc;
}

struct pget {
	struct s3_client *c;
	const char *key;
	struct digest_ctx *d;
	enum rs_code rc;
	struct rs_err err;
};

static enum rs_code to_digest(void *arg, const void *buf, size_t len, struct rs_err *err)
{
	(void)err;
	digest_update(arg, buf, len);
	return RS_OK;
}

static void *pget_one(void *arg)
{
	struct pget *g = arg;
	g->rc = s3_get(g->c, g->key, -1, -1, to_digest, g->d, NULL, &g->err);
	return NULL;
}

/* n threads GET key through the one client c (its handle pool shared) */
static enum rs_code cmd_pget(struct s3_client *c, const char *key, int n, struct rs_err *err)
{
	struct pget g[32];
	pthread_t t[32];
	enum rs_code rc = RS_OK;
	if (n < 1 || n > 32)
		return rs_err_set(err, RS_BAD_INPUT, "pget: 1 to 32 threads");
	for (int i = 0; i < n; i++) {
		g[i] = (struct pget){.c = c, .key = key, .d = digest_new()};
		if (!g[i].d || pthread_create(&t[i], NULL, pget_one, &g[i]) != 0)
			abort(); /* a test tool: no partial clean-up */
	}
	for (int i = 0; i < n; i++) {
		char out[DIGEST_STR_SIZE];
		pthread_join(t[i], NULL);
		digest_final(g[i].d, out);
		digest_free(g[i].d);
		if (g[i].rc != RS_OK && rc == RS_OK) {
			rc = g[i].rc;
			*err = g[i].err;
		}
		printf("%s\n", g[i].rc == RS_OK ? out : "failed");
	}
	return rc;
}

static enum rs_code run(struct s3_client *c, int argc, char **argv, struct rs_err *err)
{
	const char *cmd = argv[0];
	struct s3_object_info info;
	enum rs_code rc;
	if (strcmp(cmd, "put") == 0 && argc == 3)
		return cmd_put(c, argv[1], argv[2], false, err);
	if (strcmp(cmd, "putmem") == 0 && argc == 3)
		return cmd_put(c, argv[1], argv[2], true, err);
	if (strcmp(cmd, "get") == 0 && argc >= 2 && argc <= 4)
		return s3_get(c, argv[1], argc > 2 ? strtoll(argv[2], NULL, 10) : -1, argc > 3 ? strtoll(argv[3], NULL, 10) : -1,
		              to_stdout, NULL, NULL, err);
	if (strcmp(cmd, "head") == 0 && argc == 2) {
		if ((rc = s3_head(c, argv[1], &info, err)) == RS_OK)
			printf("%" PRId64 " %s\n", info.size, info.etag);
		return rc;
	}
	if (strcmp(cmd, "delete") == 0 && argc == 2)
		return s3_delete(c, argv[1], err);
	if (strcmp(cmd, "list") == 0 && argc <= 3)
		return cmd_list(c, argc > 1 ? argv[1] : NULL, argc > 2 ? (int)strtol(argv[2], NULL, 10) : 0, err);
	if (strcmp(cmd, "write") == 0 && (argc == 3 || argc == 4))
		return cmd_write(c, argv[1], argv[2], argc == 4 ? strtoll(argv[3], NULL, 10) : -1, true, err);
	if (strcmp(cmd, "abandon") == 0 && argc == 3)
		return cmd_write(c, argv[1], argv[2], -1, false, err);
	if (strcmp(cmd, "uploads") == 0 && argc == 2) {
		long n = 0;
		return s3_multipart_list(c, argv[1], print_key, &n, err);
	}
	if (strcmp(cmd, "pget") == 0 && argc == 3)
		return cmd_pget(c, argv[1], (int)strtol(argv[2], NULL, 10), err);
	return rs_err_set(err, RS_BAD_INPUT, "usage: s3tool [--vhost] [--part-size N] [--attempts N] [--timeout S] "
	                  "put|putmem|get|head|delete|list|write|abandon|uploads|pget ARGS");
}

int main(int argc, char **argv)
{
	struct s3_config cfg = {.endpoint = getenv("S3_ENDPOINT"), .region = getenv("S3_REGION"),
	                        .bucket = getenv("S3_BUCKET")};
	struct rs_err err = {0};
	char *ak = NULL, *sk = NULL;
	struct s3_client *c = NULL;
	int i = 1;
	for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		if (strcmp(argv[i], "--vhost") == 0)
			cfg.virtual_host = true;
		else if (strcmp(argv[i], "--part-size") == 0)
			cfg.part_size = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--attempts") == 0)
			cfg.max_attempts = (int)strtol(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--timeout") == 0)
			cfg.timeout_s = strtol(argv[++i], NULL, 10);
	}
	if (i >= argc) {
		fprintf(stderr, "s3tool: no command\n");
		return 2;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	enum rs_code rc = s3_secret_load(&ak, "S3_ACCESS_KEY", NULL, &err);
	if (rc == RS_OK)
		rc = s3_secret_load(&sk, "S3_SECRET_KEY", getenv("S3_SECRET_KEY_FILE"), &err);
	cfg.access_key = ak;
	cfg.secret_key = sk;
	if (rc == RS_OK)
		rc = s3_client_new(&c, &cfg, &err);
	if (rc == RS_OK)
		rc = run(c, argc - i, argv + i, &err);
	s3_client_free(c);
	free(ak);
	free(sk);
	curl_global_cleanup();
	fflush(stdout);
	if (rc == RS_OK)
		return 0;
	fprintf(stderr, "s3tool: %s\n", err.msg);
	return rc == RS_NOT_FOUND ? 3 : rc == RS_DIGEST_MISMATCH ? 4 : rc == RS_RANGE ? 5 : 1;
}
