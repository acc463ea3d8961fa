/* gate: the push gate. At a manifest PUT to a repository that a push
 * policy matches (config/gate_policy.h), gate_check() evaluates every rule
 * over the pushed image held in the push store: sizes and layer count from
 * the manifest, user and labels from the config, base layers by digest, and
 * one streaming pass per layer (optimizer/scan.h) for forbidden paths, the
 * secret scan and the uncompressed size. Every layer is scanned, so a file
 * that a later layer deletes is still found. Layers are scanned on their
 * own (no state crosses layers), so the push path scans them as their
 * uploads arrive (gate_scan.h) and the manifest PUT replays each layer's
 * recorded findings in layer order: the same report. gate_forward() then sends the
 * image to the upstream per the policy's mode (optimize-and-push,
 * push-original-and-optimized, check-only) with upstream_push.h, running
 * the optimizer pipeline over a temporary OCI layout the store exports into
 * its scratch area (store.h). api/manifest_put.c calls both; no HTTP here. */
#ifndef RS_PROXY_GATE_H
#define RS_PROXY_GATE_H

#include "config.h"
#include "digest.h"
#include "errors.h"
#include "gate_policy.h"
#include "rs_limits.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Findings kept per report; more are counted in gate_report.dropped. */
#define GATE_FINDINGS_MAX 64

/* One violation. text is the whole human line; the other fields say where
 * it is, for the stored report (NULL / 0 when the finding is about the
 * whole image rather than a platform, a layer or a file). */
struct gate_finding {
	enum gate_action action;
	const char *rule;   /* static: "secrets", "forbidden_paths", "non_root", ... */
	char *text;         /* "layer 1 of 2 (sha256:..) root/.ssh/id_rsa: OpenSSH private key" */
	char *platform;     /* "linux/arm64" for an index's child image */
	size_t layer;       /* 1-based layer index */
	char *layer_digest; /* that layer's digest */
	char *path;         /* the file in that layer */
};

struct gate_report {
	struct gate_finding *items;
	size_t count;
	size_t denies, warns; /* all findings, also dropped ones */
	size_t dropped;
	uint64_t compressed_bytes, uncompressed_bytes;
	bool scanned; /* the layers were read: uncompressed_bytes is known */
	size_t layers;
};

/* What gate_forward() sent upstream: one entry per tag pushed. */
struct gate_pushed {
	char tag[RS_LIMIT_TAG_MAX + 1];
	char digest[DIGEST_STR_SIZE];
	bool optimized;
};

struct gate_outcome {
	struct gate_pushed pushed[2];
	size_t count;
	char *optimizer_report; /* the optimizer's JSON report (report.h) when it ran; owned */
};

/* Release what o owns and zero it. */
void gate_outcome_dispose(struct gate_outcome *o);

/* Resolves the approved base image references of allowed_bases ("images")
 * to their layer digest chains: the manifest is fetched from the upstream
 * the reference routes to (route_pick over the configured upstreams, as a
 * pull through regslim would; "latest" when no tag), and for an index the
 * entry of the checked image's platform is taken. Results are cached per
 * (reference, platform) for RS_LIMIT_GATE_BASE_TTL_S. Thread-safe; owns its
 * own upstream clients. cfg is borrowed and must outlive it. */
struct gate_resolver;
RS_MUST_CHECK enum rs_code gate_resolver_new(struct gate_resolver **out, const struct rs_config *cfg,
					     struct rs_err *err);
void gate_resolver_free(struct gate_resolver *r);

/* The layer chain of reference ref for platform os/arch (either may be ""
 * when unknown: then the index's first entry). *layers (new, free each and
 * the array) and *count. RS_UPSTREAM / RS_NOT_FOUND naming the reference,
 * RS_BAD_INPUT for a malformed reference or manifest, RS_NOMEM. */
RS_MUST_CHECK enum rs_code gate_resolve_base(struct gate_resolver *r, const char *ref, const char *os,
					     const char *arch, char ***layers, size_t *count, struct rs_err *err);

/* Release everything r owns and zero it. */
void gate_report_dispose(struct gate_report *r);

/* gate_check flags. NAME_PLATFORM: an image manifest (not an index) is
 * named by its config's platform in findings ("platform linux/arm64: "),
 * as an index's images always are; for manifests pushed by digest, which
 * are the platforms of an index being pushed. */
#define GATE_CHECK_NAME_PLATFORM 1u

/* Evaluate policy p over the image manifest or index with digest `digest`
 * in area of store (for an index: every child image manifest). res (borrowed; may
 * be NULL when p has no allowed_bases "images") resolves approved base
 * references. Findings go to rep
 * (zeroed by the caller; gate_report_dispose also on error). An error is a
 * failure to evaluate (unreadable or corrupt layer: RS_BAD_INPUT,
 * RS_DIGEST_MISMATCH, RS_IO, RS_NOT_FOUND), not a violation. */
RS_MUST_CHECK enum rs_code gate_check(struct gate_report *rep, const struct rs_gate_policy *p,
				      struct store *store, enum store_area area, const char *digest, unsigned flags,
				      struct gate_resolver *res, struct rs_err *err);

/* Remembered push checks: pushing one image to several tags (":1.4" and
 * ":latest") reads its layers once. gate_check_memo() answers a copy of
 * the report of an earlier check of the same manifest digest under the same
 * policy and flags within RS_LIMIT_GATE_MEMO_TTL_S, else runs gate_check()
 * and remembers a successful result (RS_LIMIT_GATE_MEMO_ENTRIES, oldest
 * replaced first). *hit says which. Thread-safe. */
struct gate_memo;
RS_MUST_CHECK enum rs_code gate_memo_new(struct gate_memo **out, struct rs_err *err);
void gate_memo_free(struct gate_memo *m);
RS_MUST_CHECK enum rs_code gate_check_memo(struct gate_memo *m, bool *hit, struct gate_report *rep,
					   const struct rs_gate_policy *p, struct store *store, enum store_area area,
					   const char *digest,
					   unsigned flags, struct gate_resolver *res, struct rs_err *err);

/* gate_check_memo with the scans of uploads (gate_scan.h; sc may be NULL):
 * each layer's findings come from its scan at upload when there is one
 * (waiting for a scan still running), else it is scanned here and its
 * result kept. The report is the one gate_check gives. */
struct gate_scan;
RS_MUST_CHECK enum rs_code gate_check_push(struct gate_memo *m, struct gate_scan *sc, bool *hit,
					   struct gate_report *rep, const struct rs_gate_policy *p, struct store *store,
					   enum store_area area, const char *digest, unsigned flags,
					   struct gate_resolver *res, struct rs_err *err);

/* The findings with action `which` as one message line, "; "-separated,
 * each prefixed "[rule] ", with "(and N more)" when cut; *out is new
 * (free()). RS_NOMEM. */
RS_MUST_CHECK enum rs_code gate_report_text(char **out, const struct gate_report *r, enum gate_action which,
					    struct rs_err *err);

/* Signs the optimized image gate_forward is about to push (the API passes
 * sign.h's sign_pushed; gate/ and sign/ do not know each other): upc is the
 * push upstream and up the forward's push client to it (for signatures that
 * go to the registry: cosign's .sig manifests), src reads the optimized
 * image, repo:tag is what the image is pushed as, digest its manifest or
 * index and children[0..n) the manifests an index lists. A failure stops the
 * forward before the optimized image is pushed. */
struct upstream_push;
struct upstream_push_source;
typedef enum rs_code (*gate_sign_fn)(void *ctx, const struct rs_upstream_config *upc, struct upstream_push *up,
				     const struct upstream_push_source *src, const char *repo, const char *tag,
				     const char *digest, const char (*children)[DIGEST_STR_SIZE], size_t n,
				     struct rs_err *err);
struct gate_signer {
	gate_sign_fn sign;
	void *ctx;
};

/* Push repo:tag (manifest digest among the store's pushed images) to the
 * push upstream of cfg per p's mode. The optimize modes work in a scratch
 * directory of the store (store_scratch_new, store_export_layout); the
 * optimized image is signed by signer (NULL: not signed) before it is
 * pushed. out (zeroed by the caller; gate_outcome_dispose also on error)
 * receives what went where and the optimizer's report. RS_UPSTREAM for
 * upstream failures, the signer's errors, anything the pipeline returns. */
RS_MUST_CHECK enum rs_code gate_forward(struct gate_outcome *out, const struct rs_gate_policy *p,
					const struct rs_config *cfg, struct store *store,
					const char *repo, const char *tag, const char *digest,
					const struct gate_signer *signer, struct rs_err *err);

/* ---- the stored report (gate_report.c) ---- */

/* What a report says besides the findings. */
struct gate_report_meta {
	const char *repository, *reference, *digest; /* the push */
	const char *mode;                            /* gate_mode_name() */
	const char *verdict;                         /* "accepted" or "denied" */
	time_t checked_at;
	const struct gate_outcome *outcome; /* what went upstream; NULL when nothing did */
};

/* The report as a JSON document (docs/policy.md "Reports"): *out is new
 * (free()), *out_len its length. RS_NOMEM. */
RS_MUST_CHECK enum rs_code gate_report_json(char **out, size_t *out_len, const struct gate_report *r,
					    const struct gate_report_meta *m, struct rs_err *err);

/* Keep report json as the store's gate report of repository@digest
 * (store.h STORE_DOC_GATE_REPORT: replaced atomically). RS_IO naming the
 * path. */
RS_MUST_CHECK enum rs_code gate_report_save(struct store *store, const char *repository, const char *digest,
					    const char *json, size_t len, struct rs_err *err);

/* The stored report of repository@digest: *out new (free()).
 * RS_NOT_FOUND when there is none, RS_DIGEST_INVALID, RS_IO. */
RS_MUST_CHECK enum rs_code gate_report_load(struct store *store, const char *repository, const char *digest,
					    char **out, size_t *out_len, struct rs_err *err);

#endif
