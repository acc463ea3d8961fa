/* cmd_keygen: `regslim keygen --gpg DIR [--uid UID]`. Makes a first signing
 * key for signatures.sign (sign.h sign_keygen_gpg): an unprotected OpenPGP
 * key (a service has no one to type a passphrase), no expiry, in the GnuPG
 * home DIR (created 0700 when missing). Prints the fingerprint to put in
 * signatures.sign.gpg_key and how to export the public key for clients.
 * `--cosign` is not supported yet (the cosign part of the signatures issue).
 *
 * Exit status: 0 made, 1 gpg failed, 2 usage error. */
#include "cli.h"

#include "sign.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
	fprintf(f, "usage: regslim keygen --gpg DIR [--uid UID]\n"
	           "  Make an unprotected OpenPGP signing key (no passphrase, no expiry) in the\n"
	           "  GnuPG home DIR for signatures.sign, and print its fingerprint.\n"
	           "  UID defaults to \"regslim signing key\".\n");
}

int cmd_keygen(int argc, char **argv)
{
	const char *dir = NULL, *uid = "regslim signing key";
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		}
		if (strcmp(argv[i], "--gpg") == 0 && i + 1 < argc) {
			dir = argv[++i];
		} else if (strcmp(argv[i], "--uid") == 0 && i + 1 < argc) {
			uid = argv[++i];
		} else if (strcmp(argv[i], "--cosign") == 0) {
			fprintf(stderr, "regslim keygen: --cosign is not supported yet (docs/signatures.md)\n");
			return 2;
		} else {
			fprintf(stderr, "regslim keygen: unexpected argument %s\n", argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (!dir || !uid[0]) {
		usage(stderr);
		return 2;
	}
	char fpr[41];
	struct rs_err err = {0};
	if (sign_keygen_gpg(dir, uid, fpr, &err) != RS_OK) {
		fprintf(stderr, "regslim keygen: %s\n", err.msg);
		return 1;
	}
	printf("%s\n", fpr);
	fprintf(stderr,
	        "regslim keygen: made key %s in %s\n"
	        "  configuration: \"signatures\": {\"sign\": {\"gpg_home\": \"%s\", \"gpg_key\": \"%s\"}}\n"
	        "  public key for clients: gpg --homedir %s --export %s > regslim-signing.gpg\n",
	        fpr, dir, dir, fpr, dir, fpr);
	return 0;
}
