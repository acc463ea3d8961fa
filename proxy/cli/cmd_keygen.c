/* cmd_keygen: `regslim keygen --gpg DIR [--uid UID]` and `regslim keygen
 * --cosign DIR`. Makes a first signing key for signatures.sign:
 * - --gpg (sign.h sign_keygen_gpg): an unprotected OpenPGP key (a service
 *   has no one to type a passphrase), no expiry, in the GnuPG home DIR
 *   (created 0700 when missing). Prints the fingerprint to put in
 *   signatures.sign.gpg_key and how to export the public key for clients.
 * - --cosign (cosign.h cosign_keygen): an ECDSA P-256 key pair, DIR/cosign.key
 *   (unencrypted PEM, mode 0600) for signatures.sign.cosign_key_file and
 *   DIR/cosign.pub for `cosign verify --key` and policy.json. Prints the
 *   private key's path.
 *
 * Exit status: 0 made, 1 gpg or OpenSSL failed, 2 usage error. */
#include "cli.h"

#include "cosign.h"
#include "sign.h"

#include <stdio.h>
#include <string.h>

static int keygen_cosign(const char *dir)
{
	char key[4096], pub[4096];
	struct rs_err err = {0};
	if (cosign_keygen(dir, key, pub, sizeof(key), &err) != RS_OK) {
		fprintf(stderr, "regslim keygen: %s\n", err.msg);
		return 1;
	}
	printf("%s\n", key);
	fprintf(stderr,
	        "regslim keygen: made an ECDSA P-256 key pair in %s\n"
	        "  configuration: \"signatures\": {\"sign\": {\"cosign_key_file\": \"%s\"}}\n"
	        "  public key for clients (cosign verify --key, policy.json sigstoreSigned): %s\n",
	        dir, key, pub);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: regslim keygen --gpg DIR [--uid UID]\n"
	           "       regslim keygen --cosign DIR\n"
	           "  --gpg: make an unprotected OpenPGP signing key (no passphrase, no expiry) in the\n"
	           "  GnuPG home DIR for signatures.sign, and print its fingerprint.\n"
	           "  UID defaults to \"regslim signing key\".\n"
	           "  --cosign: make an ECDSA P-256 key pair DIR/cosign.key (unencrypted, mode 0600) and\n"
	           "  DIR/cosign.pub for signatures.sign.cosign_key_file, and print the key's path.\n");
}

int cmd_keygen(int argc, char **argv)
{
	const char *dir = NULL, *cosign_dir = NULL, *uid = "regslim signing key";
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		}
		if (strcmp(argv[i], "--gpg") == 0 && i + 1 < argc) {
			dir = argv[++i];
		} else if (strcmp(argv[i], "--uid") == 0 && i + 1 < argc) {
			uid = argv[++i];
		} else if (strcmp(argv[i], "--cosign") == 0 && i + 1 < argc) {
			cosign_dir = argv[++i];
		} else {
			fprintf(stderr, "regslim keygen: unexpected argument %s\n", argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (cosign_dir && !dir)
		return keygen_cosign(cosign_dir);
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
