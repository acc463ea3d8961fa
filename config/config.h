/* config: the regslim configuration as plain C structs, loaded from one JSON
 * file and validated key by key. Only config/ includes jansson; no json_t
 * leaves this directory.
 *
 * Every error names the file, the key path (e.g. upstreams[1].auth.username)
 * and what was expected; unknown keys are refused. Secrets (passwords, tokens)
 * are read from environment variables or files named in the configuration and
 * are never printed by config_print(). */
#ifndef RS_CONFIG_CONFIG_H
#define RS_CONFIG_CONFIG_H

#include "errors.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define RS_DOCKER_HUB_NAME "docker.io"
#define RS_DOCKER_HUB_URL "https://registry-1.docker.io"

struct rs_gate_policy;

struct rs_upstream_config {
	char *name;            /* "docker.io", "ghcr.io": matched against ?ns= and a first path component */
	char *url;             /* scheme://host[:port], no trailing slash */
	char *username;        /* NULL for anonymous */
	char *password;        /* resolved secret (from password_env / password_file), NULL if none */
	char *password_source; /* "env:NAME" or "file:PATH": what to print instead of the secret */
	unsigned tag_ttl_s;    /* tag revalidation interval */
	unsigned timeout_s;    /* connect and stall bound for one upstream request */
	bool tls_verify;       /* verify the upstream's certificate (default true) */
	char *ca_file;         /* extra CA bundle, NULL for the system one */
	bool library_prefix;   /* one-component names get "library/" (default: true for docker.io) */
};

/* One ACL rule (auth.acl[i]): who may do what on repositories matching a
 * glob. fnmatch(3) without FNM_PATHNAME: '*' also matches '/'. */
struct rs_acl_rule {
	char *repository; /* glob over the repository name as the client writes it */
	char **users;     /* user names; "*" is any authenticated user */
	size_t user_count;
	char **groups;    /* names defined in auth.groups */
	size_t group_count;
	bool pull, push;  /* the actions granted */
};

struct rs_auth_group {
	char *name;
	char **members;
	size_t member_count;
};

/* Client authentication to regslim ("auth"). enabled is false when the file
 * has no auth section: then pulls are anonymous and pushes are refused. */
struct rs_auth_config {
	bool enabled;
	char *htpasswd;          /* bcrypt htpasswd file (required when enabled) */
	char *token_secret_file; /* HMAC key for tokens; NULL: random at each start */
	char *realm;             /* token realm URL; NULL: http://<Host>/auth/token */
	unsigned token_ttl_s;    /* lifetime of issued tokens */
	bool anonymous_pull;     /* pulls without credentials (default true) */
	bool acl_set;            /* an "acl" key was given (else: users may pull and push everything) */
	struct rs_acl_rule *acl;
	size_t acl_count;
	struct rs_auth_group *groups;
	size_t group_count;
};

/* Blob uploads and manifest pushes ("push"). */
struct rs_push_config {
	uint64_t max_blob_bytes;        /* one uploaded blob */
	unsigned upload_idle_timeout_s; /* uploads idle this long are removed */
	unsigned gc_grace_s;    /* unreferenced pushed objects unused this long are garbage */
	unsigned gc_interval_s; /* seconds between garbage collection sweeps; 0: only on SIGUSR1 */
	/* In the modes that send the pushed image upstream, stream a layer on
	 * into an upstream upload session while it arrives, completed only once
	 * its scan is clean (proxy/gate/gate_stage.h). Default true. */
	bool stream_uploads;
	/* Push gate (config/gate_policy.h, docs/policy.md): a push to a
	 * repository that a policy matches is checked, optimized per its mode
	 * and forwarded to this upstream (NULL: the default upstream) with
	 * regslim's own credentials. No matching policy: kept locally only. */
	char *upstream;
	struct rs_gate_policy *policies; /* first match wins */
	size_t policy_count;
};

/* How a policy picks the layer compression ("optimize.policies[].compression"). */
enum rs_opt_compression {
	RS_OPT_COMPRESS_AUTO = 0, /* by the client's User-Agent */
	RS_OPT_COMPRESS_ZSTD,
	RS_OPT_COMPRESS_GZIP,
};

/* One optimization policy of the pull path ("optimize.policies[i]"): which
 * repositories of which upstream it optimizes, and how. */
struct rs_opt_policy {
	char *upstream;      /* configured upstream name */
	char **repositories; /* fnmatch(3) globs without FNM_PATHNAME ('*' matches '/') */
	size_t repository_count;
	char *policy_file;   /* optimizer policy JSON (config/policy.h); NULL: the default policy */
	enum rs_opt_compression compression;
	enum rs_opt_compression unknown_clients; /* ZSTD or GZIP: auto's choice for unknown User-Agents */
};

/* Optimization on the pull path ("optimize"). Without the key: enabled, one
 * policy for docker.io, every repository, default policy, compression auto. */
struct rs_optimize_config {
	bool enabled;
	unsigned sync_timeout_s; /* a tag pull waits this long for a cold optimization */
	struct rs_opt_policy *policies; /* first match wins */
	size_t policy_count;
};

/* Native TLS on the listener ("tls"). enabled is false when the file has no
 * tls section and no --tls-cert/--tls-key was given. config/ only checks that
 * the files can be read; proxy/tls.c parses them (PEM, key match, expiry). */
struct rs_tls_config {
	bool enabled;
	char *cert_file;      /* PEM certificate chain, the server's first */
	char *key_file;       /* PEM private key of that certificate */
	char *client_ca_file; /* PEM CA bundle: client certificates required and verified; NULL: none */
};

/* The store section: which storage driver keeps regslim's bytes. "fs"
 * (default) is the data directory; "s3" an S3-compatible bucket
 * (proxy/store/store_s3.c, docs/scale-out.md). Secrets are never in the
 * file: the access and secret keys come from an environment variable
 * (*_env, tried first) or a file (*_file, its first line). */
struct rs_store_s3_config {
	char *endpoint;        /* "http://127.0.0.1:9000" */
	char *region;          /* "us-east-1" */
	char *bucket;
	char *access_key_env, *secret_key_env;   /* variable names, may be NULL */
	char *access_key_file, *secret_key_file; /* paths, may be NULL */
	bool path_style;       /* http://host/BUCKET/key (default) or http://BUCKET.host/key */
	char *prefix;          /* prepended to every key ("" when unset) */
	uint64_t local_cache_bytes; /* verified local copies of blobs under data_dir, at most this much; 0: none */
};

struct rs_store_config {
	char *driver;          /* "fs" (default) or "s3" */
	struct rs_store_s3_config s3;
};

/* What a verify rule does with an original whose signatures do not verify
 * ("signatures.verify[].on_unverified"). */
enum rs_on_unverified {
	RS_UNVERIFIED_SERVE_ORIGINAL = 0, /* no optimization: the original bytes, logged and counted */
	RS_UNVERIFIED_REFUSE,             /* 403 DENIED naming the reason */
};

/* One verify rule ("signatures.verify[i]"): originals of the repositories
 * it matches are verified before they are optimized. */
struct rs_verify_rule {
	char *upstream;      /* configured upstream name */
	char **repositories; /* fnmatch(3) globs without FNM_PATHNAME, like optimize policies */
	size_t repository_count;
	char *gpg_keyring;   /* file of the publisher's public keys (binary or armored); NULL: no GPG check */
	char **cosign_public_keys; /* PEM ECDSA P-256 public key files (read by proxy/sign/cosign_verify.c) */
	size_t cosign_key_count;
	char *lookaside;     /* "file:///dir" or "http(s)://host[:port]/path", no trailing slash */
	enum rs_on_unverified on_unverified;
};

/* Signatures ("signatures"): what regslim signs with and what it verifies.
 * Key material is only named here (files); config/ never reads a key. */
struct rs_signatures_config {
	char *gpg_home;        /* GnuPG home holding the signing key; NULL: no GPG signing */
	char *gpg_key;         /* fingerprint of the signing key, 40 upper-case hex digits */
	char *cosign_key_file; /* PEM ECDSA P-256 private key (parsed, not yet used) */
	struct rs_verify_rule *verify; /* first match wins */
	size_t verify_count;
};

/* Cluster coordination ("cluster"; DESIGN.md "Scale-out", docs/scale-out.md). enabled is false
 * when the file has no cluster section: then a replica coordinates only with itself. */
struct rs_cluster_config {
	bool enabled;
	char *redis;                 /* the URL as written: redis://host[:port][/db], never with a password */
	char *redis_host;            /* host name or address (an IPv6 address without brackets) */
	unsigned redis_port;         /* default 6379 */
	unsigned redis_db;           /* SELECTed after connecting; default 0 */
	char *redis_password;        /* resolved secret (redis_password_env / _file), NULL if none */
	char *redis_password_source; /* "env:NAME" or "file:PATH" */
	char *peer_secret_file;      /* the key peers authenticate each other with; NULL if none */
	char *peer_secret;           /* its content (resolved secret) */
	char *advertise_url;         /* how peers reach this replica: scheme://host[:port]; NULL if none */
	unsigned timeout_ms;         /* bound on a connect and on every Redis command */
	unsigned lock_ttl_s;         /* expiry of a single-flight lock its owner stopped renewing */
	char *key_prefix;            /* prefix of every Redis key (default "regslim:") */
};

struct rs_config {
	char *source;           /* file it was loaded from, or "(defaults)" */
	char *listen;           /* "ADDR:PORT"; default 127.0.0.1:5000 */
	unsigned max_connections;
	unsigned max_connections_per_ip; /* per address (IPv6: per /64); 0: no cap */
	char *data_dir;         /* default ./regslim-data */
	uint64_t cache_max_bytes; /* eviction target; 0: no limit */
	unsigned cache_optimized_pin_s; /* an optimized image served is kept this long (eviction skips it) */
	uint64_t cache_scrub_bytes_per_s; /* background scrub's rate; 0: no scrub */
	unsigned cache_scrub_interval_s;  /* a full scrub pass this often */
	uint64_t manifest_max_bytes;
	unsigned header_timeout_s;       /* limits.header_timeout_s: bound on a request head; 0: none */
	uint64_t body_min_bytes_per_s;   /* limits.body_min_bytes_per_s: slowest request body; 0: none */
	unsigned body_rate_window_s;     /* limits.body_rate_window_s: averaging window of that rate */
	unsigned shutdown_grace_s;
	char *log_level;        /* "debug" | "info" | "warn" | "error" */
	bool log_requests;      /* one JSON line per request (default true) */
	struct rs_upstream_config *upstreams;
	size_t upstream_count;
	size_t default_upstream; /* index into upstreams */
	struct rs_auth_config auth;
	struct rs_push_config push;
	struct rs_optimize_config optimize;
	struct rs_tls_config tls;
	struct rs_store_config store;
	struct rs_signatures_config signatures;
	struct rs_cluster_config cluster;
};

/* Fill cfg with the defaults: listen 127.0.0.1:5000, data dir ./regslim-data,
 * one upstream docker.io -> https://registry-1.docker.io (the default). The
 * caller owns cfg and releases it with config_dispose(). */
RS_MUST_CHECK enum rs_code config_init_defaults(struct rs_config *cfg, struct rs_err *err);

/* Load and validate the JSON file at path into cfg (defaults for what it does
 * not set). On error cfg is left disposed (zeroed) and err names the file,
 * line/column or key path, and what was expected. Returns RS_CONFIG, RS_IO,
 * RS_TOO_LARGE or RS_NOMEM. */
RS_MUST_CHECK enum rs_code config_load(struct rs_config *cfg, const char *path, struct rs_err *err);

/* Apply the serve command-line overrides; each may be NULL. --upstream URL
 * replaces the URL of the default upstream. Validates like config_load. */
RS_MUST_CHECK enum rs_code config_override(struct rs_config *cfg, const char *listen,
                                           const char *upstream_url, const char *data_dir,
                                           struct rs_err *err);

/* Apply the serve TLS flags; each may be NULL. --tls-cert and --tls-key
 * replace the files of the tls section (and enable it); both are needed when
 * the file has no tls section. --tls-client-ca needs TLS on. RS_CONFIG when
 * a file cannot be read or a flag is missing, RS_NOMEM; cfg is unchanged on
 * error. */
RS_MUST_CHECK enum rs_code config_override_tls(struct rs_config *cfg, const char *cert_file, const char *key_file,
                                               const char *client_ca_file, struct rs_err *err);

/* Write the effective configuration as pretty JSON to out (every key, the
 * defaults filled in), secrets replaced by their source: auth is printed as
 * {"username", "password_env": NAME} or {"username", "password_file": PATH},
 * so the output is itself a valid configuration file. RS_IO, RS_NOMEM. */
RS_MUST_CHECK enum rs_code config_print(const struct rs_config *cfg, FILE *out, struct rs_err *err);

/* Upstream by name, or NULL. Borrowed from cfg. */
const struct rs_upstream_config *config_find_upstream(const struct rs_config *cfg, const char *name);

/* The first optimize policy matching (upstream name, repository), or NULL
 * (also when optimization is disabled). repo is matched as given and, for a
 * "library/x" name, as "x" too. Borrowed from cfg. */
const struct rs_opt_policy *config_find_opt_policy(const struct rs_config *cfg, const char *upstream,
                                                   const char *repo);

/* The first verify rule matching (upstream name, repository), matched like
 * config_find_opt_policy, or NULL. Borrowed from cfg. */
const struct rs_verify_rule *config_find_verify_rule(const struct rs_config *cfg, const char *upstream,
                                                     const char *repo);

/* Release everything cfg owns and zero it. Safe on a zeroed struct. */
void config_dispose(struct rs_config *cfg);

#endif
