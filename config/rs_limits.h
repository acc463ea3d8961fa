/* limits: every size cap and default bound of regslim, named in one place.
 * Configuration may override the ones marked (config: key); the rest are
 * hard caps that protect memory from untrusted input. */
#ifndef RS_CONFIG_RS_LIMITS_H
#define RS_CONFIG_RS_LIMITS_H

/* config: limits.manifest_max_bytes. Manifests and indexes are held in memory. */
#define RS_LIMIT_MANIFEST_MAX_BYTES (4u * 1024 * 1024)
/* Image config JSON is held in memory while it is parsed or rewritten. */
#define RS_LIMIT_CONFIG_MAX_BYTES (8u * 1024 * 1024)
/* A configuration file is read whole before it is parsed. */
#define RS_LIMIT_CONFIG_FILE_MAX_BYTES (1u * 1024 * 1024)
/* Upstream token responses and error bodies are read into memory. */
#define RS_LIMIT_TOKEN_MAX_BYTES (256u * 1024)
#define RS_LIMIT_ERROR_BODY_MAX_BYTES (64u * 1024)
/* Request header values we copy (Accept, Authorization, Range). */
#define RS_LIMIT_HEADER_MAX_BYTES (8u * 1024)
/* How many Accept header lines a manifest request may forward. */
#define RS_LIMIT_ACCEPT_MAX 32
/* Repository names: the distribution spec caps name components; we cap the whole. */
#define RS_LIMIT_NAME_MAX 255
#define RS_LIMIT_TAG_MAX 128
/* config: listen.max_connections */
#define RS_LIMIT_CONNECTIONS_DEFAULT 1024
/* config: max_connections_per_ip: connections one address (IPv6: one /64)
 * may hold at once; 0 is no cap. A quarter of the default max_connections,
 * so one client cannot take every slot, yet CI runners behind one NAT
 * address pulling in parallel fit. */
#define RS_LIMIT_CONNECTIONS_PER_IP_DEFAULT 256
/* config: limits.header_timeout_s: the whole request head (and a new TLS
 * connection's handshake) must arrive within this many seconds of its first
 * byte; 0 is no bound. Real clients send a head in one packet. */
#define RS_LIMIT_HEADER_TIMEOUT_DEFAULT_S 20
#define RS_LIMIT_HEADER_TIMEOUT_MAX_S 3600
/* config: limits.body_min_bytes_per_s and limits.body_rate_window_s: a
 * request body must average this rate over every window of body time (the
 * first window is the grace); 0 is no minimum. */
#define RS_LIMIT_BODY_MIN_RATE_DEFAULT 1024
#define RS_LIMIT_BODY_MIN_RATE_MAX (1024ull * 1024 * 1024)
#define RS_LIMIT_BODY_RATE_WINDOW_DEFAULT_S 20
#define RS_LIMIT_BODY_RATE_WINDOW_MAX_S 600
/* config: cache.max_bytes (20 GiB) */
#define RS_LIMIT_CACHE_DEFAULT_BYTES (20ull * 1024 * 1024 * 1024)
/* cache.optimized_pin_s: how long eviction leaves alone every object of an
 * optimized image after its manifest was served (clients fetch its blobs
 * next), and its ceiling. */
#define RS_LIMIT_OPT_PIN_DEFAULT_S 900u
#define RS_LIMIT_OPT_PIN_MAX_S 86400u
/* cache.scrub_bytes_per_s and cache.scrub_interval_s: the background scrub
 * rehashes every stored object at this rate, one full pass this often. */
#define RS_LIMIT_SCRUB_RATE_DEFAULT (16ull * 1024 * 1024)
#define RS_LIMIT_SCRUB_RATE_MAX (16ull * 1024 * 1024 * 1024)
#define RS_LIMIT_SCRUB_INTERVAL_DEFAULT_S 604800u
#define RS_LIMIT_SCRUB_INTERVAL_MAX_S 31536000u
/* config: upstreams[].tag_ttl_s */
#define RS_LIMIT_TAG_TTL_DEFAULT_S 300
/* config: upstreams[].timeout_s: connect + idle stall bound for upstream transfers */
#define RS_LIMIT_UPSTREAM_TIMEOUT_DEFAULT_S 30
/* config: shutdown_grace_s */
#define RS_LIMIT_SHUTDOWN_GRACE_DEFAULT_S 30
/* Tar: pax extended header and GNU long name/link payloads are buffered. */
#define RS_LIMIT_TAR_EXT_MAX_BYTES (1u * 1024 * 1024)
/* Decompressed / compressed ratio above which a layer is refused (zip bomb). */
#define RS_LIMIT_EXPANSION_RATIO 1000u
/* zstd window for untrusted input and for what we write (8 MiB = 2^23). */
#define RS_LIMIT_ZSTD_WINDOW_LOG 23
/* The expansion-ratio cap applies once a layer has decompressed to this
 * many bytes, so small highly compressible layers are never refused. */
#define RS_LIMIT_EXPANSION_MIN_BYTES (64ull * 1024 * 1024)
/* zstd window accepted on input (2^27 = 128 MiB, libzstd's own default
 * decode limit, so every frame `zstd -d` accepts is accepted). What we write
 * stays within RS_LIMIT_ZSTD_WINDOW_LOG. */
#define RS_LIMIT_ZSTD_DECODE_WINDOW_LOG 27
/* Tar: all raw header bytes of one entry (extension headers, their payloads,
 * old GNU sparse extension blocks and the ustar header) are held at once. */
#define RS_LIMIT_TAR_HEADER_MAX_BYTES (4u * 1024 * 1024)
/* Tar: an entry's path and hard-link target, after normalisation: bytes
 * (Linux's PATH_MAX, so every path a runtime can create fits) and
 * components. Longer names (pax and GNU long names allow ~1 MiB) are
 * refused: they cannot be unpacked, and every stage that walks a path is
 * bounded by them. */
#define RS_LIMIT_TAR_PATH_BYTES 4096
#define RS_LIMIT_TAR_PATH_DEPTH 1024
/* Tar: xattrs kept per entry from pax SCHILY.xattr.* / LIBARCHIVE.xattr.*. */
#define RS_LIMIT_TAR_XATTRS_MAX 1024
/* Path tables in squash / dedupe are capped by entry count. */
#define RS_LIMIT_PATH_TABLE_ENTRIES (4u * 1024 * 1024)

/* Ranges the configuration loader enforces (config/config.c). */
/* config: max_connections upper bound */
#define RS_LIMIT_CONNECTIONS_MAX 65536
/* config: limits.manifest_max_bytes upper bound; manifests are held in memory. */
#define RS_LIMIT_MANIFEST_HARD_MAX_BYTES (64u * 1024 * 1024)
/* config: upstreams[].tag_ttl_s upper bound (one year) */
#define RS_LIMIT_TAG_TTL_MAX_S 31536000
/* config: upstreams[].timeout_s upper bound */
#define RS_LIMIT_UPSTREAM_TIMEOUT_MAX_S 3600
/* config: shutdown_grace_s upper bound */
#define RS_LIMIT_SHUTDOWN_GRACE_MAX_S 3600
/* config: upstreams; how many upstreams one configuration may name. */
#define RS_LIMIT_UPSTREAMS_MAX 256
/* config: upstreams[].auth.password_file is read whole; a password is short. */
#define RS_LIMIT_PASSWORD_FILE_MAX_BYTES 4096

/* store.s3.local_cache_bytes: verified local copies of blobs a replica served or wrote, so that
 * warm blob GETs go out by sendfile (docs/scale-out.md "Warm reads"); 0 turns it off. */
#define RS_LIMIT_S3_LOCAL_CACHE_DEFAULT_BYTES (4ull << 30)

/* Cluster coordination (proxy/cluster/). config: cluster.timeout_ms (connect and every Redis
 * command) and cluster.lock_ttl_s (expiry of a single-flight lock not renewed), default and
 * bounds; the peer secret's shortest length; the longest cluster.key_prefix. */
#define RS_LIMIT_CLUSTER_TIMEOUT_DEFAULT_MS 500
#define RS_LIMIT_CLUSTER_TIMEOUT_MIN_MS 10
#define RS_LIMIT_CLUSTER_TIMEOUT_MAX_MS 60000
#define RS_LIMIT_CLUSTER_LOCK_TTL_DEFAULT_S 30
#define RS_LIMIT_CLUSTER_LOCK_TTL_MAX_S 3600
#define RS_LIMIT_CLUSTER_SECRET_MIN_BYTES 16
#define RS_LIMIT_CLUSTER_PREFIX_MAX_CHARS 64
#define RS_LIMIT_CLUSTER_DB_MAX 65535

/* Push (proxy/push.c). config: push.max_blob_bytes default (10 GiB). */
#define RS_LIMIT_PUSH_BLOB_DEFAULT_BYTES (10ull * 1024 * 1024 * 1024)
/* config: push.upload_idle_timeout_s default and upper bound. */
#define RS_LIMIT_UPLOAD_IDLE_DEFAULT_S 3600
#define RS_LIMIT_UPLOAD_IDLE_MAX_S (7 * 24 * 3600)
/* config: push.gc_grace_s (unreferenced pushed objects unused this long are
 * removed) and push.gc_interval_s (between two sweeps; 0: on SIGUSR1 only):
 * defaults and upper bounds. */
#define RS_LIMIT_GC_GRACE_DEFAULT_S 3600
#define RS_LIMIT_GC_GRACE_MAX_S (30 * 24 * 3600)
#define RS_LIMIT_GC_INTERVAL_DEFAULT_S 3600
#define RS_LIMIT_GC_INTERVAL_MAX_S (7 * 24 * 3600)
/* Upload sessions open at once (each holds a hash context in memory). */
#define RS_LIMIT_UPLOADS_MAX 4096
/* Auth (proxy/auth.c). config: auth.token_ttl_s default and upper bound. */
#define RS_LIMIT_TOKEN_TTL_DEFAULT_S 300
#define RS_LIMIT_TOKEN_TTL_MAX_S 86400
/* htpasswd file read whole at start (and on change); users it may hold. */
#define RS_LIMIT_HTPASSWD_MAX_BYTES (4u * 1024 * 1024)
/* auth.acl rules, auth.groups, and names per list. */
#define RS_LIMIT_ACL_RULES_MAX 1024
#define RS_LIMIT_ACL_NAMES_MAX 1024
/* Scopes one token request may name; issued tokens are capped in size. */
#define RS_LIMIT_TOKEN_SCOPES_MAX 16
#define RS_LIMIT_TOKEN_MAX_CHARS 4096

/* Upstream client: redirects followed per request (blob storage), bearer
 * tokens cached per upstream (one per repository scope). */
#define RS_LIMIT_UPSTREAM_REDIRECTS 5
#define RS_LIMIT_TOKEN_CACHE_ENTRIES 1024

/* Optimizer (policy.c, imagejson.c, pipeline.c). */
/* Strip rules per policy (built-in plus custom) and globs per rule list. */
#define RS_LIMIT_POLICY_RULES_MAX 64
#define RS_LIMIT_POLICY_GLOBS_MAX 256
/* Components of one glob (strip rules, forbidden paths): the matcher keeps
 * one bit per component position. */
#define RS_LIMIT_GLOB_COMPONENTS 63
/* Layers per image and manifests per index we accept. */
#define RS_LIMIT_IMAGE_LAYERS_MAX 1024
#define RS_LIMIT_INDEX_MANIFESTS_MAX 1024
/* The image walk (config/imagewalk.c): how deep indexes may nest below the
 * root (the root is depth 0, an index's entries depth 1), and how many
 * documents one walk may load (an index of RS_LIMIT_INDEX_MANIFESTS_MAX
 * images is 1025). */
#define RS_LIMIT_WALK_DEPTH 4
#define RS_LIMIT_WALK_DOCUMENTS 4096
/* Entries of a docker-archive tarball's outer tar that are indexed. */
#define RS_LIMIT_ARCHIVE_MEMBERS_MAX 65536
/* Pass 1 records each entry's metadata (path, link, size, identity) per layer. */
#define RS_LIMIT_SCAN_RECORD_BYTES (1024u * 1024 * 1024)
/* zstd job size of the layers the optimizer writes (codec_encode_opts.zstd_job_bytes, set by pipeline.c):
 * bounds the encoder's memory to about (2 x workers + 2) jobs. */
#define RS_LIMIT_ZSTD_JOB_BYTES (8u * 1024 * 1024)
/* gzip output is compressed in independent chunks of this many input bytes,
 * one gzip member each (optimizer/pgzip.h): the output depends on it, never
 * on the thread count. 1 MiB: 1.6 % smaller than zlib -6 as one stream on
 * the big fixture's largest layer, and 2 x 2 MiB of buffers per thread. */
#define RS_LIMIT_GZIP_CHUNK_BYTES (1024u * 1024)
#define RS_LIMIT_GZIP_THREADS_MAX 256
/* Layers of one image whose decompressed tar pass 1 spools for pass 2 (one open file each);
 * layers past this are decoded again in pass 2. */
#define RS_LIMIT_TAR_SPOOL_LAYERS 128
/* Stripped paths listed per image in the optimization report (the counts stay exact). */
#define RS_LIMIT_REPORT_PATHS (1024u * 1024)

/* Optimized pull path (config "optimize", proxy/optpull.c). */
#define RS_LIMIT_OPT_SYNC_TIMEOUT_DEFAULT_S 30
#define RS_LIMIT_OPT_SYNC_TIMEOUT_MAX_S 3600
#define RS_LIMIT_OPT_POLICIES_MAX 256
#define RS_LIMIT_OPT_GLOBS_MAX 256
/* signatures.verify: rules, and cosign public keys per rule (rotation). */
#define RS_LIMIT_VERIFY_RULES_MAX 256
#define RS_LIMIT_COSIGN_KEYS_MAX 16
/* Simple-signing signatures kept per (repository, manifest digest): one per
 * tag that names the digest; the oldest goes first past the limit. */
#define RS_LIMIT_SIGNATURES_PER_DIGEST 32
/* One signature (an OpenPGP message around a small JSON payload). */
#define RS_LIMIT_SIGNATURE_MAX_BYTES (64u * 1024u)
/* Publisher signatures fetched per original (signature-1 .. signature-N). */
#define RS_LIMIT_VERIFY_SIGNATURES_MAX 16
/* A verified original (rule, repository, tag, digest) is not verified again
 * for this long; failures are never remembered. Slots of that memory. */
#define RS_LIMIT_VERIFIED_TTL_S 300
#define RS_LIMIT_VERIFIED_SLOTS 1024
/* A failed optimization is not retried for this long (pulls serve the original). */
#define RS_LIMIT_OPT_FAILURE_TTL_S 300
/* Optimizations running at once (worker threads); more wait their turn. */
#define RS_LIMIT_OPT_WORKERS 2
/* Longest one optimized-pull optimization may hold a worker; past it the job
 * fails (remembered for RS_LIMIT_OPT_FAILURE_TTL_S) and the original is served. */
#define RS_LIMIT_OPT_MAX_S 900
/* Repository links (proxy/blobstore.c): while the upstream cannot be asked,
 * a cached object not linked to a repository is served there only when one
 * of the repository's linked manifests references it; at most this many of
 * them are read to find out. */
#define RS_LIMIT_LINK_SCAN_MANIFESTS 256
/* Result and report files read back from <data_dir>/optimized/. */
#define RS_LIMIT_OPT_RESULT_MAX_BYTES (64u * 1024)
#define RS_LIMIT_OPT_REPORT_MAX_BYTES (64u * 1024 * 1024)

/* Push gate (proxy/gate.c): approved base image references per policy, how
 * long a resolved reference's layer chain is reused, resolutions cached,
 * pull verdicts remembered per manifest digest. */
#define RS_LIMIT_GATE_BASE_IMAGES_MAX 64
#define RS_LIMIT_GATE_BASE_TTL_S 300
#define RS_LIMIT_GATE_BASE_CACHE_ENTRIES 256
#define RS_LIMIT_GATE_PULL_VERDICTS 1024
/* Push-side checks remembered per (policy, manifest digest), and for how
 * long (the same TTL as approved base resolutions, which a check depends on). */
#define RS_LIMIT_GATE_MEMO_ENTRIES 256
#define RS_LIMIT_GATE_MEMO_TTL_S RS_LIMIT_GATE_BASE_TTL_S
/* Layer scans at upload (proxy/gate/gate_scan.c): background workers,
 * scans waiting for one (more are left to the manifest PUT), and the
 * largest stored per-layer result (findings are capped per layer). */
#define RS_LIMIT_GATE_SCAN_WORKERS 2
#define RS_LIMIT_GATE_SCAN_QUEUE 64
#define RS_LIMIT_GATE_SCAN_DOC_BYTES (1024u * 1024)
/* Uploads scanned as their bytes arrive at once (each holds two threads, a
 * ring of STREAM_BUF bytes between the request and the scan, a decoder, a
 * tar reader and the secret scanner's window); a stream not fed for
 * IDLE_S is dropped (its upload is scanned once complete). */
#define RS_LIMIT_GATE_SCAN_STREAMS 8
#define RS_LIMIT_GATE_SCAN_STREAM_BUF (2u * 1024 * 1024)
#define RS_LIMIT_GATE_SCAN_STREAM_IDLE_S 60
/* How far an upload may run ahead of its scan once the ring is full: the
 * bytes wait in a scratch file (space given back as they are scanned), so
 * the client is not held at the scan's pace; past this the feed waits. */
#define RS_LIMIT_GATE_SCAN_SPILL_BYTES (512ull * 1024 * 1024)
/* Uploads streamed on to the upstream as they arrive at once
 * (proxy/gate/gate_stage.c: a thread and an upstream client each); an
 * upload not fed for RS_LIMIT_GATE_SCAN_STREAM_IDLE_S ends its stage. */
#define RS_LIMIT_GATE_STAGES 8
/* curl's buffer for a request body of unknown length (a staged upload's
 * PATCH): its 64 KiB default meant a read callback per 64 KiB. */
#define RS_LIMIT_XFER_STREAM_BODY_BUFFER (512u * 1024)
/* Layers sent upstream before their manifest (proxy/gate/gate_fwd.c):
 * background workers and forwards waiting for one (more are left to the
 * manifest PUT). */
#define RS_LIMIT_GATE_FWD_WORKERS 2
#define RS_LIMIT_GATE_FWD_QUEUE 64

/* Failed password logins (proxy/login_guard.h): free failures per user at
 * one address and per address, the longest back-off, when a streak is
 * forgotten, and the keys tracked (a fixed table, probed this far). */
#define RS_LIMIT_LOGIN_FREE_FAILURES 5
#define RS_LIMIT_LOGIN_FREE_FAILURES_ADDR 20
#define RS_LIMIT_LOGIN_BACKOFF_MAX_S 60
#define RS_LIMIT_LOGIN_FORGET_S 900
#define RS_LIMIT_LOGIN_TRACKED 8192
#define RS_LIMIT_LOGIN_PROBE 16

#endif
