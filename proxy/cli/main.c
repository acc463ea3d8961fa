/* main: the regslim command line: serve, check-config, optimize, fsck, keygen, version. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: regslim <command> [options]\n"
	           "  serve [--config FILE] [--listen ADDR:PORT] [--upstream URL] [--data-dir DIR]\n"
	           "  check-config FILE\n"
	           "  optimize [--policy FILE] [--json] SRC DST\n"
	           "  fsck [--repair] DATA_DIR\n"
	           "  keygen --gpg DIR [--uid UID]\n"
	           "  version\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "serve") == 0)
		return cmd_serve(argc - 1, argv + 1);
	if (strcmp(cmd, "check-config") == 0)
		return cmd_check_config(argc - 1, argv + 1);
	if (strcmp(cmd, "optimize") == 0)
		return cmd_optimize(argc - 1, argv + 1);
	if (strcmp(cmd, "fsck") == 0)
		return cmd_fsck(argc - 1, argv + 1);
	if (strcmp(cmd, "keygen") == 0)
		return cmd_keygen(argc - 1, argv + 1);
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
		printf("regslim %s\n", REGSLIM_VERSION);
		return 0;
	}
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "regslim: unknown command '%s'\n", cmd);
	usage(stderr);
	return 2;
}
