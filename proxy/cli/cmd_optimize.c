/* cmd_optimize: `regslim optimize [--policy FILE] [--json] [--threads N]
 * [--quiet] SRC DST`. Loads the policy (config/policy.c), runs the
 * optimizer pipeline (optimizer/pipeline.c) and prints the report on stdout
 * (a table, or JSON with --json). On a terminal, stderr shows a progress
 * bar (phase, layer, bytes, rate, ETA); the clock is read only for that
 * display, never for anything written to DST. */
#include "cli.h"
#include "pipeline.h"
#include "policy.h"
#include "report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct bar {
	bool on;
	double start, last;
	bool drawn;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void draw(void *ctx, const struct pipeline_progress *p)
{
	struct bar *b = ctx;
	if (!b->on)
		return;
	double t = now_s();
	if (t - b->last < 0.1 && p->done < p->total)
		return;
	b->last = t;
	double frac = p->total ? (double)p->done / (double)p->total : 0;
	double el = t - b->start;
	double rate = el > 0 ? (double)p->done / el : 0;
	double eta = rate > 0 ? (double)(p->total - p->done) / rate : 0;
	char bar[31];
	int fill = (int)(frac * 30);
	for (int i = 0; i < 30; i++)
		bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
	bar[30] = '\0';
	fprintf(stderr, "\r[%s] %3.0f%% %-5s image %zu/%zu layer %zu/%zu %7.1f/%.1f MB %6.1f MB/s ETA %3.0fs ", bar,
		frac * 100, p->phase ? p->phase : "", p->image + 1, p->image_count, p->layer + 1, p->layer_count,
		(double)p->done / 1e6, (double)p->total / 1e6, rate / 1e6, eta);
	b->drawn = true;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: regslim optimize [--policy FILE] [--json] [--threads N] [--quiet] SRC DST\n"
		   "  SRC  oci:DIR[:TAG] | docker-archive:FILE[:REPO:TAG]\n"
		   "  DST  oci:DIR[:TAG]   (written atomically; untouched on error)\n");
}

int cmd_optimize(int argc, char **argv)
{
	const char *policy_file = NULL, *src = NULL, *dst = NULL;
	bool json = false, quiet = false;
	unsigned threads = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--policy") == 0 && i + 1 < argc)
			policy_file = argv[++i];
		else if (strncmp(a, "--policy=", 9) == 0)
			policy_file = a + 9;
		else if (strcmp(a, "--json") == 0)
			json = true;
		else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0)
			quiet = true;
		else if ((strcmp(a, "--threads") == 0 && i + 1 < argc) || strncmp(a, "--threads=", 10) == 0) {
			const char *v = a[9] == '=' ? a + 10 : argv[++i];
			char *end;
			unsigned long t = strtoul(v, &end, 10);
			if (*end || t < 1 || t > 256) {
				fprintf(stderr, "regslim optimize: --threads: expected 1..256, got '%s'\n", v);
				return 2;
			}
			threads = (unsigned)t;
		} else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "regslim optimize: unknown option '%s'\n", a);
			usage(stderr);
			return 2;
		} else if (!src)
			src = a;
		else if (!dst)
			dst = a;
		else {
			fprintf(stderr, "regslim optimize: unexpected argument '%s'\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (!src || !dst) {
		usage(stderr);
		return 2;
	}
	if (!threads) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		threads = n > 0 ? (unsigned)n : 1;
	}
	struct rs_err err = {0};
	struct policy pol;
	enum rs_code rc = policy_file ? policy_load(&pol, policy_file, &err) : policy_init_defaults(&pol, &err);
	if (rc != RS_OK) {
		fprintf(stderr, "regslim optimize: %s\n", err.msg);
		return rc == RS_CONFIG ? 2 : 1;
	}
	struct bar b = {!quiet && isatty(STDERR_FILENO), now_s(), 0, false};
	struct pipeline_opts o = {src, dst, &pol, threads, CODEC_INFLATE_DEFAULT, draw, &b, NULL, 0};
	struct report rep;
	report_init(&rep);
	rc = pipeline_run(&rep, &o, &err);
	if (b.drawn)
		fputc('\n', stderr);
	int status = 0;
	if (rc != RS_OK) {
		fprintf(stderr, "regslim optimize: %s\n", err.msg);
		status = 1;
	} else {
		if (json)
			report_print_json(&rep, stdout);
		else
			report_print_text(&rep, stdout);
		if (fflush(stdout) != 0 || ferror(stdout)) {
			fprintf(stderr, "regslim optimize: writing the report failed\n");
			status = 1;
		}
	}
	report_dispose(&rep);
	policy_dispose(&pol);
	return status;
}
