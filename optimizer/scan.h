/* scan: the streaming layer scan behind the push gate (proxy/gate.c): it
 * decodes one layer blob (gzip, zstd or plain) from a file descriptor,
 * verifies its compressed digest, parses it as tar and reports every entry
 * (for forbidden-path rules) and every secret found in the content of a
 * regular file (for the secret rule). Every layer is scanned on its own, so
 * a file that a later layer deletes is still seen: it ships in its layer.
 *
 * Secret detectors (scan_detector_name gives the names used in messages):
 *   PEM private keys ("-----BEGIN [...] PRIVATE KEY-----" followed by a
 *   base64 body line or a Proc-Type header, also with a literal "\n" as in
 *   JSON key files), OpenSSH private keys, PGP private key blocks, AWS access
 *   key ids (AKIA/ASIA + 16 upper-case letters or digits) that have a secret
 *   access key (40 base64 characters) or "aws_secret_access_key" within 512
 *   bytes, GitHub tokens (ghp_/gho_/ghs_/ghu_/ghr_ + 36 alphanumerics),
 *   Slack tokens (xoxb-/xoxp-/xoxa-/xoxr-/xoxs- + at least 10 more token
 *   characters), and cloud credential files recognised by name and content:
 *   .aws/credentials with aws_secret_access_key, .docker/config.json with a
 *   non-empty "auth", gcloud credential files with a refresh token or key,
 *   .npmrc with a literal _authToken (not a ${VAR} reference), and
 *   .git-credentials with a user:password@ URL.
 * False-positive guards: matches need a word boundary on both sides, the
 * AWS documentation example key id (AKIAIOSFODNN7EXAMPLE) is ignored, and a
 * PEM header alone (as in source code that parses keys) is not a finding.
 * In an ELF object (content starting with "\x7fELF") the three key-block
 * detectors (PEM, OpenSSH, PGP) are off unless scan_binaries is set: keys
 * compiled into system libraries are self-test vectors (Debian's libgnutls30
 * holds ten). The token detectors (AWS, GitHub, Slack) and the credential
 * files still apply there: a token embedded in a program is a real leak.
 * Layer scans skip files whose path matches one of scan_opts.allow_paths.
 *
 * Memory: the content scanner keeps a fixed window (SCAN_WINDOW bytes of
 * carry across chunk boundaries plus one fixed work buffer); any split of
 * the input gives the same findings. Each file is scanned up to a cap
 * (scan_opts.file_cap); bytes beyond it are skipped. Each detector reports
 * at most once per file. No HTTP, no policy decisions here. */
#ifndef RS_OPTIMIZER_SCAN_H
#define RS_OPTIMIZER_SCAN_H

#include "codec.h"
#include "digest.h"
#include "errors.h"
#include "tar_read.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest pattern a detector needs to see at once (bytes). */
#define SCAN_WINDOW 256u
/* Default bytes scanned per file. */
#define SCAN_FILE_CAP_DEFAULT (16u * 1024 * 1024)

enum scan_detector {
	SCAN_PEM_PRIVATE_KEY = 0,
	SCAN_OPENSSH_PRIVATE_KEY,
	SCAN_PGP_PRIVATE_KEY,
	SCAN_AWS_ACCESS_KEY,
	SCAN_GITHUB_TOKEN,
	SCAN_SLACK_TOKEN,
	SCAN_AWS_CREDENTIALS_FILE,
	SCAN_DOCKER_CONFIG_AUTH,
	SCAN_GCLOUD_CREDENTIALS,
	SCAN_NPMRC_TOKEN,
	SCAN_GIT_CREDENTIALS,
	SCAN_DETECTOR_COUNT
};

/* Stable human name ("PEM private key", "AWS access key id with secret", ...). */
const char *scan_detector_name(enum scan_detector d);

/* A finding: path is borrowed for the call. */
typedef enum rs_code (*scan_finding_fn)(void *ctx, const char *path, enum scan_detector d,
					struct rs_err *err);

/* ---- content scanner (one file at a time) ------------------------------ */

struct scan_secrets;

/* *out is new (scan_secrets_free). file_cap 0 means SCAN_FILE_CAP_DEFAULT.
 * scan_binaries: also run the key-block detectors inside ELF objects.
 * on_finding and ctx are borrowed. RS_NOMEM. */
RS_MUST_CHECK enum rs_code scan_secrets_new(struct scan_secrets **out, uint64_t file_cap, bool scan_binaries,
					    scan_finding_fn on_finding, void *ctx, struct rs_err *err);
void scan_secrets_free(struct scan_secrets *s);
/* Classify bytes with the portable vector code even where the CPU has AVX2
 * (for tests and benchmarks: the findings are the same either way). */
void scan_secrets_portable(struct scan_secrets *s);

/* Start a file named path (copied, normalised archive path). */
RS_MUST_CHECK enum rs_code scan_secrets_begin(struct scan_secrets *s, const char *path, struct rs_err *err);
/* Content of the current file, in any split. */
RS_MUST_CHECK enum rs_code scan_secrets_feed(struct scan_secrets *s, const void *buf, size_t len,
					     struct rs_err *err);
/* End of the current file: the tail is scanned, findings are reported. */
RS_MUST_CHECK enum rs_code scan_secrets_end(struct scan_secrets *s, struct rs_err *err);

/* ---- layer scan -------------------------------------------------------- */

struct scan_opts {
	enum codec_kind codec;
	const char *digest;    /* expected compressed digest (NULL: not checked) */
	bool secrets;          /* run the secret detectors */
	uint64_t file_cap;     /* 0: SCAN_FILE_CAP_DEFAULT */
	bool scan_binaries;    /* key-block detectors also inside ELF objects */
	/* Files whose path matches one of these globs (strip_glob_match syntax)
	 * are not scanned for secrets; borrowed, may be NULL when count is 0. */
	char *const *allow_paths;
	size_t allow_path_count;
	/* Every entry (also whiteouts and directories), optional. */
	enum rs_code (*on_entry)(void *ctx, const struct tar_entry *e, struct rs_err *err);
	scan_finding_fn on_finding; /* required when secrets */
	void *ctx;
	/* Walk the tar and scan contents on a thread of their own (handoff.h),
	 * while the caller's thread hashes and decodes: the scan of one layer
	 * then uses two cores. The callbacks run on that thread; every one has
	 * returned when scan_layer_finish (or _fd) returns. Same findings, same
	 * order, same errors. */
	bool threaded;
};

struct scan_stats {
	uint64_t compressed_bytes;
	uint64_t uncompressed_bytes;
	uint64_t entries;
	uint64_t files_scanned;
	uint64_t files_allowed; /* regular files skipped by allow_paths */
};

/* The same scan fed by the caller, as the bytes arrive (a pushed layer's
 * upload): scan_layer_new copies o (what it points to is borrowed and must
 * outlive the scan), scan_layer_write takes the compressed bytes in any
 * split, scan_layer_finish ends the stream (truncation and the digest are
 * checked there) and gives the stats. Findings are reported through o's
 * callbacks as the bytes come, in the order scan_layer_fd reports them;
 * memory is fixed (the decoder's window, the tar reader's header buffer,
 * the content scanner's window). After an error every call fails with the
 * same code. Errors: those of scan_layer_fd. *out: scan_layer_free. */
struct scan_layer;
RS_MUST_CHECK enum rs_code scan_layer_new(struct scan_layer **out, const struct scan_opts *o, struct rs_err *err);
RS_MUST_CHECK enum rs_code scan_layer_write(struct scan_layer *l, const void *buf, size_t len, struct rs_err *err);
RS_MUST_CHECK enum rs_code scan_layer_finish(struct scan_layer *l, struct scan_stats *out, struct rs_err *err);
void scan_layer_free(struct scan_layer *l);

/* Scan the layer read from fd (borrowed, read to EOF from its current
 * offset): scan_layer_new, write, finish. Errors: the decoder's and the tar reader's (RS_BAD_INPUT,
 * RS_TOO_LARGE), RS_DIGEST_MISMATCH when the bytes do not hash to
 * o->digest, RS_IO, RS_NOMEM, and whatever a callback returns. */
RS_MUST_CHECK enum rs_code scan_layer_fd(struct scan_stats *out, int fd, const struct scan_opts *o,
					 struct rs_err *err);

#endif
