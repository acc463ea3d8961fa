/* cmd_check_config: `regslim check-config FILE`. Loads and validates the
 * configuration file with config_load(), parses the TLS certificate files it
 * names (tls_check_files: PEM, key match; an expired certificate is a
 * warning on stderr) and the cosign signing key (cosign_new: an
 * unencrypted P-256 PEM key) and prints the effective
 * configuration (defaults filled in, secrets replaced by where they come
 * from) as JSON on stdout. It starts nothing and writes no file: the same
 * check an operator runs before a deploy or a reload.
 *
 * Exit status: 0 valid, 1 invalid or unreadable ("regslim: <message>" on
 * stderr), 2 usage error. */
#include "cli.h"

#include "config.h"
#include "cosign.h"
#include "tls.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: regslim check-config FILE\n"
	           "  Validate the configuration FILE and print the effective configuration\n"
	           "  (defaults filled in, passwords shown as their source) as JSON. With a\n"
	           "  tls section it also parses the certificate, key and client CA files;\n"
	           "  it loads signatures.sign.cosign_key_file as serve does.\n"
	           "  Exit status: 0 valid, 1 invalid, 2 usage error.\n");
}

int cmd_check_config(int argc, char **argv)
{
	const char *file = NULL;
	bool options_done = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!options_done && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
			usage(stdout);
			return 0;
		}
		if (!options_done && strcmp(a, "--") == 0) {
			options_done = true;
			continue;
		}
		if (!options_done && a[0] == '-' && a[1] != '\0') {
			fprintf(stderr, "regslim: check-config: unknown option '%s'\n", a);
			usage(stderr);
			return 2;
		}
		if (file) {
			fprintf(stderr, "regslim: check-config: expected one FILE, got also '%s'\n", a);
			usage(stderr);
			return 2;
		}
		file = a;
	}
	if (!file) {
		fprintf(stderr, "regslim: check-config: missing FILE\n");
		usage(stderr);
		return 2;
	}

	struct rs_config cfg;
	struct rs_err err = {0};
	if (config_load(&cfg, file, &err) != RS_OK) {
		fprintf(stderr, "regslim: %s\n", err.msg);
		return 1;
	}
	if (cfg.tls.enabled) {
		/* Parse the certificate files like serve does, so that a bad
		 * or mismatched file is caught before a deploy or a SIGHUP. */
		struct tls_info info;
		char warn[RS_ERR_MSG_MAX];
		if (tls_check_files(&info, &cfg.tls, &err) != RS_OK) {
			fprintf(stderr, "regslim: %s: %s\n", file, err.msg);
			config_dispose(&cfg);
			return 1;
		}
		if (tls_info_warning(warn, sizeof(warn), &info, time(NULL)))
			fprintf(stderr, "regslim: warning: %s: %s\n", file, warn);
	}
	if (cfg.signatures.cosign_key_file) {
		struct cosign *c = NULL;
		if (cosign_new(&c, cfg.signatures.cosign_key_file, "signatures.sign.cosign_key_file", NULL, &err) != RS_OK) {
			fprintf(stderr, "regslim: %s: %s\n", file, err.msg);
			config_dispose(&cfg);
			return 1;
		}
		cosign_free(c);
	}
	enum rs_code rc = config_print(&cfg, stdout, &err);
	config_dispose(&cfg);
	if (rc != RS_OK) {
		fprintf(stderr, "regslim: %s\n", err.msg);
		return 1;
	}
	return 0;
}
