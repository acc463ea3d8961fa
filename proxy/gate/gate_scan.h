/* gate_scan: the push gate's layer scans, done while a layer's upload
 * arrives, or when it completes, rather than inside the manifest PUT. The
 * bytes of an upload into a repository that a push policy covers go through
 * a scan as they are written (gate_scan_feed), whose result counts once the
 * digest verified (gate_scan_commit). A blob committed (or mounted) without
 * such a scan in step with it is queued for a
 * bounded pool of background workers; each scans it once per (digest,
 * policy scan parameters) with the same streaming pass the gate runs
 * (optimizer/scan.h) and keeps what the pass reported, in order, as a
 * document of the store (STORE_DOC_GATE_SCAN; it outlives restarts and
 * holds no memory). At the manifest PUT, gate.c asks for each layer's
 * result: a stored one is used, a scan still running is waited for, a
 * queued one is taken over, and a layer never queued is scanned there and
 * then (gate_scan_claim / gate_scan_done around the caller's own scan).
 * A blob that is not a gzip, zstd or tar stream (an image config) is not
 * queued. No policy decisions (actions, messages) here: gate.c replays the
 * recorded findings through its rules. Talks to the store (store.h) and
 * obs/metrics.h. */
#ifndef RS_PROXY_GATE_SCAN_H
#define RS_PROXY_GATE_SCAN_H

#include "codec.h"
#include "digest.h"
#include "errors.h"
#include "gate_policy.h"
#include "store.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Findings recorded per layer; more are counted (more_forbidden,
 * more_secrets). Equal to GATE_FINDINGS_MAX (gate.h): a layer can never
 * add more findings than a report keeps. */
#define GATE_SCAN_FINDINGS_MAX 64

/* "<digest hex>-<16 hex of the scan parameters>" */
#define GATE_SCAN_KEY_SIZE 160

enum gate_scan_kind { GATE_SCAN_FORBIDDEN, GATE_SCAN_SECRET };

struct gate_scan_finding {
	enum gate_scan_kind kind;
	unsigned which; /* FORBIDDEN: index of the matching glob in forbidden_paths; SECRET: enum scan_detector */
	char *path;
};

/* What one layer's pass reported, in the order the pass reported it. */
struct gate_scan_result {
	uint64_t uncompressed_bytes;
	struct gate_scan_finding *items; /* count of them */
	size_t count;
	size_t more_forbidden, more_secrets; /* findings past GATE_SCAN_FINDINGS_MAX */
};

void gate_scan_result_dispose(struct gate_scan_result *r);

/* The key of digest's scan under p's scan parameters (secret detectors on,
 * file cap, binaries, allowed paths, forbidden globs when that rule is on,
 * codec, regslim's version). */
void gate_scan_key(char out[GATE_SCAN_KEY_SIZE], const struct rs_gate_policy *p, enum codec_kind codec,
                   const char *digest);

/* The gate's pass over the layer read from fd (borrowed, at offset 0): what
 * gate.c's inline scan reports, recorded into out (zeroed by the caller;
 * gate_scan_result_dispose also on error). stop (may be NULL) ends the
 * pass at the next entry with RS_IO when it becomes true. Errors of
 * scan_layer_fd, RS_NOMEM. */
RS_MUST_CHECK enum rs_code gate_scan_record(struct gate_scan_result *out, int fd, const struct rs_gate_policy *p,
                                            enum codec_kind codec, const char *digest, const atomic_bool *stop,
                                            struct rs_err *err);

/* The queue and its workers. workers 0: no threads (queued scans run only
 * when a manifest PUT takes them over; tests). queue_max: scans waiting at
 * most; more are not queued (counted as dropped). store is borrowed and
 * must outlive it. RS_NOMEM, RS_IO (thread creation). */
struct gate_scan;
RS_MUST_CHECK enum rs_code gate_scan_new(struct gate_scan **out, struct store *store, size_t workers,
                                         size_t queue_max, struct rs_err *err);
/* Stops the workers: queued scans are dropped, running ones end at their
 * next tar entry. */
void gate_scan_free(struct gate_scan *s);

/* Queue the scan of blob digest of the pushed area under p (borrowed; must
 * outlive s): nothing when s or p is NULL, the blob is not a layer, its scan
 * is stored, queued or running, or the queue is full. Never blocks on a
 * scan; reads the blob's first bytes. */
void gate_scan_queue(struct gate_scan *s, const struct rs_gate_policy *p, const char *digest);

/* At the manifest PUT: digest's result under p and codec. true: *out holds
 * it (stored, or finished by a scan this call waited for). false: the
 * caller scans the layer itself (gate_scan_record), then calls
 * gate_scan_done with *ticket, whatever happened. The blob must be in area
 * (else false, so the caller's own read fails as it would have). */
bool gate_scan_claim(struct gate_scan *s, struct gate_scan_result *out, int *ticket, const struct rs_gate_policy *p,
                     enum store_area area, enum codec_kind codec, const char *digest);
/* digest's result under p (the codec from the pushed blob's first bytes),
 * waiting while its scan is queued or running; false when none is stored
 * (no layer, the scan failed, was dropped, or regslim is stopping). *out
 * (zeroed by the caller) as gate_scan_claim's. Never takes a scan over. */
bool gate_scan_result(struct gate_scan *s, struct gate_scan_result *out, const struct rs_gate_policy *p,
                      const char *digest);
/* End of a claimed scan: res (NULL when the scan failed) is stored under
 * its key, other callers waiting for it go on. */
void gate_scan_done(struct gate_scan *s, int ticket, const struct rs_gate_policy *p, enum codec_kind codec,
                    const char *digest, const struct gate_scan_result *res);

/* Scans fed by uploads, as the bytes arrive (uploads.c): gate_scan_feed
 * after the store took len bytes of upload uuid at offset (the upload's
 * size before them) in a repository under policy p (borrowed; must outlive
 * s; NULL: nothing). The first feed at offset 0 starts a stream (at most
 * RS_LIMIT_GATE_SCAN_STREAMS at once): a thread that scans what the feeds
 * copy into its ring (RS_LIMIT_GATE_SCAN_STREAM_BUF bytes). When the scan
 * is behind and the ring is full, the feeds append to a spill file in the
 * store's scratch area instead, so the upload goes on at the client's pace;
 * a feed waits only when the spill holds RS_LIMIT_GATE_SCAN_SPILL_BYTES
 * not yet scanned, or cannot be written. A feed that does not start where
 * the last one ended drops the stream. Never fails (a stream that cannot go
 * on is dropped: the upload is then scanned once complete,
 * gate_scan_queue). */
void gate_scan_feed(struct gate_scan *s, const struct rs_gate_policy *p, const char *uuid, uint64_t offset,
                    const void *buf, size_t len);
/* After the store committed upload uuid (size bytes) as digest (verified):
 * its stream finishes the scan and keeps the result as the layer's scan (a
 * result stored before is kept as it is); until then a running scan stands
 * for it, so gate_scan_claim and gate_scan_result wait for it. true when
 * such a stream took every byte; false when there was none in step with
 * the upload (or the blob is no layer, or its scan failed already): queue
 * it (gate_scan_queue). A scan that fails after true leaves no result: the
 * manifest PUT scans the layer itself. */
bool gate_scan_commit(struct gate_scan *s, const char *uuid, uint64_t size, const char *digest);
/* The upload failed its digest check or was cancelled: its stream goes. */
void gate_scan_forget(struct gate_scan *s, const char *uuid);

struct gate_scan_stats {
	uint64_t streamed;       /* results of scans fed by uploads (also counted in upload_scans or repeated) */
	uint64_t repeated;       /* of those, a layer whose result was stored already (uploaded again) */
	uint64_t streamed_bytes; /* compressed bytes scanned as uploads arrived */
	uint64_t spilled_bytes;  /* of those, bytes that waited in a spill file (the scan was behind) */
	uint64_t upload_scans;   /* scans at upload: by the workers, or fed by the upload */
	uint64_t manifest_scans; /* scans claimed at a manifest PUT */
	uint64_t cached;         /* results taken from the store (queue or claim) */
	uint64_t dropped;        /* not queued: the queue was full */
};
void gate_scan_stats(struct gate_scan *s, struct gate_scan_stats *out);

/* Wait until no scan is queued or running, and no stream is finishing
 * (tests, benchmarks). */
void gate_scan_idle(struct gate_scan *s);

#endif
