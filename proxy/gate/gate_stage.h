/* gate_stage: pushed layers streamed on to the upstream while they arrive.
 * In the modes that send the pushed image itself upstream (check-only,
 * push-original-and-optimized), the first bytes of an upload into a
 * repository under such a policy open an upload session at the upstream
 * (POST), and one PATCH sends the upload's bytes on as the store takes
 * them, read back from the upload's file (store_upload_reader). The session
 * is completed (PUT with the digest) only when the upload was committed
 * here and the layer's own scan (gate_scan.h) has no finding the policy
 * denies, the rule of gate_fwd.h's early sends; in every other case (a
 * denied finding, no scan result, the upload failed its digest check, was
 * cancelled, left idle, or is an image config) the session is deleted: the
 * upstream then never stores a blob the gate would refuse, though the
 * bytes of such a layer did reach the upstream's upload area for the
 * while (docs/policy.md; push.stream_uploads turns this off). So the send
 * of a large layer overlaps its upload instead of starting after its scan.
 * A stage that cannot go on (the upstream refuses, the PATCH breaks, a store
 * that keeps uploads in no file: s3) leaves the layer to the early send or
 * the manifest PUT, as without stages. The PATCH without Content-Range is
 * docker-distribution's streamed upload, outside the OCI spec: an upstream
 * that refuses it (a client error) turns stages off until restart. At most RS_LIMIT_GATE_STAGES at
 * once, each a thread and an upstream client. Talks to the store,
 * gate_scan.h, gate_fwd.h (gate_fwd_clean) and upstream/upstream_push.h;
 * no HTTP replies, no policy messages. */
#ifndef RS_PROXY_GATE_STAGE_H
#define RS_PROXY_GATE_STAGE_H

#include "config.h"
#include "errors.h"
#include "gate_policy.h"
#include "gate_scan.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gate_stage;

/* cfg (the push upstream, push.stream_uploads) and scans are borrowed and
 * must outlive it; *out is NULL when push.stream_uploads is off (every call
 * then does nothing). RS_NOMEM. */
RS_MUST_CHECK enum rs_code gate_stage_new(struct gate_stage **out, const struct rs_config *cfg,
                                          struct gate_scan *scans, struct rs_err *err);
/* Running stages end (their uploads are cancelled upstream). */
void gate_stage_free(struct gate_stage *g);

/* After the store took len bytes of upload uuid (u, borrowed) of repo at
 * offset under policy p (borrowed; must outlive g): offset 0 starts a stage
 * when p's mode sends the original and a stage is free; later feeds let it
 * send up to offset + len. A feed out of step ends the stage. Never blocks
 * on the upstream, never fails. */
void gate_stage_feed(struct gate_stage *g, const struct rs_gate_policy *p, const char *repo, const char *uuid,
                     struct store_upload *u, uint64_t offset, size_t len);
/* Upload uuid was committed as digest (size bytes, verified): its stage
 * sends the rest and completes the session once the layer's scan is clean
 * (else deletes it). true when a stage took the blob on (no early send is
 * needed); false when there is none in step with the upload. */
bool gate_stage_commit(struct gate_stage *g, const char *uuid, uint64_t size, const char *digest);
/* The upload failed or was cancelled: its stage deletes the session. */
void gate_stage_forget(struct gate_stage *g, const char *uuid);
/* Before the manifest PUT of repo: wait for its committed stages to finish
 * (complete or delete their sessions). */
void gate_stage_join(struct gate_stage *g, const char *repo);

#endif
