/* cmd_optimize: `regslim optimize` (owned by the optimizer work; replaced there). */
#include "cli.h"

#include <stdio.h>

int cmd_optimize(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	fprintf(stderr, "regslim optimize: not available in this build yet\n");
	return 2;
}
