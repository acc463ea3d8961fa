/* scan_bench: the push gate's secret scanner (optimizer/scan.c) on real
 * layers, for bench/scan.sh. Not part of the build; the script compiles it
 * against the optimizer sources (so the same file measures an old and a new
 * scan.c).
 *   scan_bench layers [--scan-binaries] GZLAYER...
 *       scan_layer_fd over each gzip layer twice: with the secret detectors
 *       (as the gate runs them) and without (inflate, digest and tar walk
 *       only); prints every finding and one line per layer and a total:
 *       "<layer> <uncompressed bytes> <files> <findings> <s with> <s without>"
 *   scan_bench raw ROUNDS FILE...
 *       the content scanner alone: every FILE (an uncompressed tar) is read
 *       into memory and fed to one scan_secrets file in 64 KiB pieces (all
 *       detectors on: the tar is no ELF object); best of ROUNDS:
 *       "raw <bytes> <findings> <seconds> <MB/s>" */
#include "codec.h"
#include "scan.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct tally {
	unsigned findings;
	const char *layer;
	bool print;
};

static enum rs_code on_finding(void *ctx, const char *path, enum scan_detector d, struct rs_err *err)
{
	(void)err;
	struct tally *t = ctx;
	t->findings++;
	if (t->print)
		printf("finding: %s %s: %s\n", t->layer, path, scan_detector_name(d));
	return RS_OK;
}

static int scan_file(double *secs, struct scan_stats *st, struct tally *t, const char *file, bool secrets,
		     bool binaries)
{
	int fd = open(file, O_RDONLY);
	if (fd < 0) {
		perror(file);
		return 1;
	}
	struct scan_opts o = {.codec = CODEC_GZIP, .secrets = secrets, .scan_binaries = binaries,
			      .on_finding = on_finding, .ctx = t};
	struct rs_err err = {0};
	double t0 = now();
	enum rs_code rc = scan_layer_fd(st, fd, &o, &err);
	*secs = now() - t0;
	close(fd);
	if (rc) {
		fprintf(stderr, "%s: %s\n", file, err.msg);
		return 1;
	}
	return 0;
}

static int cmd_layers(int argc, char **argv)
{
	bool binaries = false;
	int i = 0;
	if (i < argc && strcmp(argv[i], "--scan-binaries") == 0) {
		binaries = true;
		i++;
	}
	uint64_t total = 0, files = 0;
	unsigned findings = 0;
	double with_s = 0, without_s = 0;
	for (int n = 1; i < argc; i++, n++) {
		char name[32];
		snprintf(name, sizeof(name), "layer%d", n);
		struct tally t = {0, name, true}, quiet = {0, name, false};
		struct scan_stats st, st2;
		double a, b;
		if (scan_file(&a, &st, &t, argv[i], true, binaries) || scan_file(&b, &st2, &quiet, argv[i], false, binaries))
			return 1;
		printf("%s %llu %llu %u %.3f %.3f\n", name, (unsigned long long)st.uncompressed_bytes,
		       (unsigned long long)st.files_scanned, t.findings, a, b);
		total += st.uncompressed_bytes;
		files += st.files_scanned;
		findings += t.findings;
		with_s += a;
		without_s += b;
	}
	printf("total %llu %llu %u %.3f %.3f\n", (unsigned long long)total, (unsigned long long)files, findings, with_s,
	       without_s);
	return 0;
}

static int cmd_raw(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: scan_bench raw ROUNDS FILE...\n");
		return 2;
	}
	int rounds = (int)strtol(argv[0], NULL, 10);
	size_t cap = 0, len = 0;
	char *data = NULL;
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		struct stat sb;
		if (!f || fstat(fileno(f), &sb) != 0) {
			perror(argv[i]);
			return 1;
		}
		if (len + (size_t)sb.st_size > cap) {
			cap = len + (size_t)sb.st_size;
			char *d = realloc(data, cap);
			if (!d)
				return 1;
			data = d;
		}
		len += fread(data + len, 1, (size_t)sb.st_size, f);
		fclose(f);
	}
	double best = 0;
	unsigned findings = 0;
	for (int r = 0; r < (rounds > 0 ? rounds : 1); r++) {
		struct tally t = {0, "raw", false};
		struct scan_secrets *s = NULL;
		struct rs_err err = {0};
		/* no cap: every byte is scanned */
		if (scan_secrets_new(&s, (uint64_t)len + 1, false, on_finding, &t, &err) ||
		    scan_secrets_begin(s, "raw", &err)) {
			fprintf(stderr, "%s\n", err.msg);
			return 1;
		}
		double t0 = now();
		for (size_t off = 0; off < len; off += 65536) {
			size_t n = len - off < 65536 ? len - off : 65536;
			if (scan_secrets_feed(s, data + off, n, &err)) {
				fprintf(stderr, "%s\n", err.msg);
				return 1;
			}
		}
		if (scan_secrets_end(s, &err)) {
			fprintf(stderr, "%s\n", err.msg);
			return 1;
		}
		double secs = now() - t0;
		scan_secrets_free(s);
		if (r == 0 || secs < best)
			best = secs;
		findings = t.findings;
	}
	printf("raw %zu %u %.3f %.1f\n", len, findings, best, (double)len / 1e6 / best);
	free(data);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "layers") == 0)
		return cmd_layers(argc - 2, argv + 2);
	if (argc >= 2 && strcmp(argv[1], "raw") == 0)
		return cmd_raw(argc - 2, argv + 2);
	fprintf(stderr, "usage: scan_bench layers [--scan-binaries] GZLAYER... | raw ROUNDS FILE...\n");
	return 2;
}
