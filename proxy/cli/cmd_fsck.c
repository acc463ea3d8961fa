/* cmd_fsck: `regslim fsck [--repair] DATA_DIR`. Checks a data directory
 * offline (store/fsck.h): every object rehashed, tag maps, pushed images'
 * references, optimization results, temp files; one line per finding and a
 * summary on stdout. With --repair it removes what regslim can fetch or make
 * again. Run it with regslim stopped.
 *
 * Exit status: 0 nothing wrong (or everything found was repaired), 1
 * findings remain, 2 usage error or a directory that cannot be checked. */
#include "cli.h"

#include "fsck.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: regslim fsck [--repair] DATA_DIR\n"
	           "  Check a regslim data directory while regslim is stopped: rehash every\n"
	           "  blob and manifest (cache and pushed images), check tag maps, the references\n"
	           "  of pushed images, optimization results and temp files. One line per\n"
	           "  finding, then a summary. --repair removes what can be fetched or optimized\n"
	           "  again (corrupt or stray files, broken tag maps and results, temp files);\n"
	           "  a pushed image that lost a blob is reported and left.\n"
	           "  Exit status: 0 clean (or all repaired), 1 findings remain, 2 error.\n");
}

int cmd_fsck(int argc, char **argv)
{
	const char *dir = NULL;
	bool repair = false, options_done = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!options_done && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
			usage(stdout);
			return 0;
		}
		if (!options_done && strcmp(a, "--") == 0) {
			options_done = true;
		} else if (!options_done && strcmp(a, "--repair") == 0) {
			repair = true;
		} else if (!options_done && a[0] == '-') {
			fprintf(stderr, "regslim fsck: unknown option %s\n", a);
			usage(stderr);
			return 2;
		} else if (dir) {
			fprintf(stderr, "regslim fsck: one data directory only\n");
			usage(stderr);
			return 2;
		} else {
			dir = a;
		}
	}
	if (!dir) {
		usage(stderr);
		return 2;
	}
	struct fsck_stats st;
	struct rs_err err = {0};
	if (fsck_run(dir, repair, stdout, &st, &err) != RS_OK) {
		fprintf(stderr, "regslim fsck: %s\n", err.msg);
		return 2;
	}
	printf("fsck %s: %llu objects (%llu bytes) rehashed; %llu corrupt, %llu stray, %llu broken, %llu dangling, "
	       "%llu temp; %llu repaired, %llu left\n",
	       dir, (unsigned long long)st.objects, (unsigned long long)st.bytes, (unsigned long long)st.corrupt,
	       (unsigned long long)st.stray, (unsigned long long)st.broken, (unsigned long long)st.dangling,
	       (unsigned long long)st.temp, (unsigned long long)st.repaired, (unsigned long long)st.left);
	return st.left ? 1 : 0;
}
