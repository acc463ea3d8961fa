/* gate_scan: the push gate's layer scans, done when a layer's upload
 * completes rather than inside the manifest PUT. A blob committed (or
 * mounted) into a repository that a push policy covers is queued for a
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
/* End of a claimed scan: res (NULL when the scan failed) is stored under
 * its key, other callers waiting for it go on. */
void gate_scan_done(struct gate_scan *s, int ticket, const struct rs_gate_policy *p, enum codec_kind codec,
                    const char *digest, const struct gate_scan_result *res);

struct gate_scan_stats {
	uint64_t upload_scans;   /* scans by the workers */
	uint64_t manifest_scans; /* scans claimed at a manifest PUT */
	uint64_t cached;         /* results taken from the store (queue or claim) */
	uint64_t dropped;        /* not queued: the queue was full */
};
void gate_scan_stats(struct gate_scan *s, struct gate_scan_stats *out);

/* Wait until no scan is queued or running (tests, benchmarks). */
void gate_scan_idle(struct gate_scan *s);

#endif
