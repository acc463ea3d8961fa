/* gate_fwd: early forwarding of pushed layers to the upstream. In the modes
 * that send the pushed image itself upstream (check-only,
 * push-original-and-optimized), a layer whose upload completed is sent to
 * the upstream repository of the same name by a bounded pool of background
 * workers while the client is still uploading the rest, so the manifest PUT
 * finds it there (HEAD) instead of uploading it after the verdict. Only a
 * layer whose own scan (gate_scan.h) has no finding the policy denies
 * (forbidden path, secret, its size alone past a deny limit) goes early: a
 * layer that would make the push refused is never sent before the verdict.
 * A push refused for another reason (user, labels, base, the image's total
 * size) can leave its clean layers upstream without a manifest; they are
 * unreferenced blobs, which the registry's garbage collection removes
 * (docs/push.md). The manifest PUT joins the forwards of its repository
 * (waits for those running, drops those still queued: it sends them
 * itself) and cancels them when it refuses the push. Talks to gate_scan.h
 * (the layer's result), the store (the pushed blob) and
 * upstream/upstream_push.h; no HTTP replies, no policy messages. */
#ifndef RS_PROXY_GATE_FWD_H
#define RS_PROXY_GATE_FWD_H

#include "config.h"
#include "errors.h"
#include "gate_policy.h"
#include "gate_scan.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

struct gate_fwd;

/* No finding in a layer's own scan result r (size bytes compressed) that p
 * denies: sending it before the verdict cannot leak what the gate exists
 * to stop. */
bool gate_fwd_clean(const struct rs_gate_policy *p, const struct gate_scan_result *r, uint64_t size);

/* workers background threads, at most queue_max forwards waiting (more are
 * left to the manifest PUT). cfg (the push upstream), store and scans are
 * borrowed and must outlive it. RS_NOMEM, RS_IO (threads). */
RS_MUST_CHECK enum rs_code gate_fwd_new(struct gate_fwd **out, const struct rs_config *cfg, struct store *store,
                                        struct gate_scan *scans, size_t workers, size_t queue_max,
                                        struct rs_err *err);
/* Queued forwards are dropped; running ones end (their transfer is bounded
 * by the upstream's timeout_s). */
void gate_fwd_free(struct gate_fwd *f);

/* Blob digest just committed (or mounted) into repo under policy p
 * (borrowed; must outlive f): queued for the upstream when p's mode sends
 * the original. Nothing when f or p is NULL, the mode is optimize-and-push,
 * it is queued or running for repo already, or the queue is full. Never
 * blocks. */
void gate_fwd_queue(struct gate_fwd *f, const struct rs_gate_policy *p, const char *repo, const char *digest);

/* Before the manifest PUT forwards repo: forwards of repo still queued are
 * dropped (the PUT sends what is missing), running ones waited for. */
void gate_fwd_join(struct gate_fwd *f, const char *repo);
/* The push to repo was refused: its queued forwards are dropped (running
 * ones end by themselves). */
void gate_fwd_cancel(struct gate_fwd *f, const char *repo);

struct gate_fwd_stats {
	uint64_t sent;    /* layers uploaded upstream early */
	uint64_t present; /* the upstream had them */
	uint64_t held;    /* not sent early: a denied finding, or no scan result */
	uint64_t failed;  /* the upstream refused or failed (the manifest PUT tries again) */
	uint64_t dropped; /* queued, then dropped (queue full, joined, cancelled) */
};
void gate_fwd_stats(struct gate_fwd *f, struct gate_fwd_stats *out);

#endif
