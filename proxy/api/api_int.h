/* api_int: what the files of the registry API's read side share, and no one
 * outside api/ includes. registry.c owns struct registry (its lifecycle and
 * the route dispatch); one file per resource answers: manifests.c (by tag,
 * by digest, the Accept list) and manifests_policy.c (tags served optimized
 * or checked by a push policy), blobs.c (stored blobs, the stream of the
 * shared upstream download, ranges), tags.c (tags/list), reports.c, ops.c
 * (/metrics). Where a blob's or manifest's bytes come from is the source's
 * (source.h); mirror.c maps the upstream's error answers.
 * The write side, behind push_http.h: push_http.c owns struct push_http
 * (its lifecycle), uploads.c recognises the write routes, streams bodies and
 * answers uploads and mounts, manifest_put.c answers a manifest PUT under a
 * push policy, auth_gate.c is the auth gate of every API request, token.c
 * the token endpoint. */
#ifndef RS_PROXY_API_INT_H
#define RS_PROXY_API_INT_H

#include "config.h"
#include "digest.h"
#include "errors.h"
#include "gate_policy.h"
#include "http.h"
#include "reply.h"
#include "route.h"
#include "rs_limits.h"
#include "store.h"
#include "upstream.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_TYPE "application/json"

/* The service name of the auth challenge and the token endpoint. */
#define SERVICE "regslim"

struct registry {
	const struct rs_config *cfg;
	struct store *store;
	struct source *src; /* where bytes come from: pushed, cache, upstream (source.h); owns the downloads */
	struct upstream **ups; /* parallel to cfg->upstreams */
	struct push_http *ph;  /* write routes, auth gate, pushed images (push_http.h) */
	struct optpull *opt;   /* optimized pull path; NULL when optimization is off */
	struct sign *sign;     /* signatures (sign.h); NULL without a signatures section */
	struct scrub *scrub;   /* background scrub of the stores; NULL when off */
	struct cluster *cluster; /* coordination with the other replicas (cluster.h); local without "cluster" */
	/* Push-policy verdicts on pull (enforce_on_pull), per manifest digest and
	 * policy; NULL when no policy enforces on pull. */
	struct pull_verdict *verdicts;
	size_t verdict_next;
	pthread_mutex_t verdict_mu; /* guards verdicts and verdict_next */
	/* The data directory's health (issue 12 item 8): checked at start and by
	 * every registry_maintain; /healthz reports it. */
	pthread_mutex_t health_mu; /* guards the two below */
	bool data_dir_read_only;
	char data_dir_error[256];
	_Atomic bool gc_requested; /* registry_request_gc: the next maintenance pass sweeps */
};

struct pull_verdict {
	char digest[DIGEST_STR_SIZE]; /* "" when the slot is free */
	const struct rs_gate_policy *policy;
	size_t denies;
	char *text; /* the deny findings, owned; NULL when denies == 0 */
};

/* Set on the request (rq->manifest_capture) while api_manifest_by_tag runs
 * for the optimized pull path: the manifest answer it would queue is
 * captured here instead, and api_manifest_tag_optimized answers the
 * request. Error answers are queued as usual. */
struct manifest_capture {
	bool got;
	char *body; /* owned */
	size_t len;
	char *type; /* owned */
	char digest[DIGEST_STR_SIZE];
};

/* The client's Accept header values (borrowed from the connection). */
struct accept_list {
	const char *values[RS_LIMIT_ACCEPT_MAX];
	size_t n;
};

/* manifests.c: content negotiation. api_collect_accept is an MHD header
 * iterator that fills a struct accept_list. */
bool api_accepts(const struct accept_list *a, const char *type);
enum MHD_Result api_collect_accept(void *cls, enum MHD_ValueKind kind, const char *key, const char *value);

/* manifests.c: answers (or captures, see struct manifest_capture) a
 * manifest; serves one from the store (RS_NOT_FOUND when absent); checks a
 * reference with a ':' (false with RS_DIGEST_INVALID otherwise). */
enum MHD_Result api_answer_manifest(struct request *rq, char *body, size_t len, const char *type, const char *digest);
RS_MUST_CHECK enum rs_code api_serve_stored_manifest(struct registry *r, struct request *rq, const char *digest,
                                                     enum MHD_Result *ret, struct rs_err *err);
bool api_ref_digest_ok(const char *ref, struct rs_err *err);

/* manifests.c: 404 MANIFEST_UNKNOWN for a reference that is neither a valid
 * tag nor a digest regslim can hold (no such manifest can exist). */
enum MHD_Result api_manifest_cannot_exist(struct request *rq, const char *ref);

/* sigstore.c: GET/HEAD /sigstore/<repository>@sha256=<hex>/signature-<n>,
 * regslim's lookaside (sign.h). path is what follows "/sigstore/". */
enum MHD_Result api_sigstore_get(struct registry *r, struct request *rq, const char *path);

/* manifests.c: GET/HEAD of a manifest by digest or by tag (the mirror). */
enum MHD_Result api_manifest_by_digest(struct registry *r, struct request *rq, const struct route_target *t,
                                       const struct accept_list *acc);
enum MHD_Result api_manifest_by_tag(struct registry *r, struct request *rq, const struct route_target *t,
                                    const struct accept_list *acc);

/* manifests_policy.c: a tag served optimized (optpull.h), or checked by a
 * push policy that enforces on pull (gate.h) first. The original is
 * verified first when a signatures.verify rule applies; pol may be NULL
 * for a repository that such a rule covers but no optimize policy. */
enum MHD_Result api_manifest_tag_optimized(struct registry *r, struct request *rq, const struct route_target *t,
                                           const struct accept_list *acc, const struct rs_opt_policy *pol);
enum MHD_Result api_manifest_tag_gated(struct registry *r, struct request *rq, const struct route_target *t,
                                       const struct accept_list *acc, const struct rs_gate_policy *gp,
                                       const struct rs_opt_policy *pol);

/* blobs.c: GET/HEAD of a blob. */
enum MHD_Result api_blob_get(struct registry *r, struct request *rq, const struct route_target *t, bool head);
/* GET /_regslim/peer/blobs/<digest> (peer.h): another replica of the cluster
 * streams a blob this one downloads, or has stored. Authenticated with the
 * peer secret (401 otherwise); 404 as an unknown endpoint without one. */
enum MHD_Result api_peer_blob_get(struct registry *r, struct request *rq);

/* The fetches of optpull.h (ctx is the registry), also used by the policy
 * check on pull: a blob through the single-flight download (blobs.c), a
 * manifest by digest (manifests.c); both verified and stored by the source
 * (source.h source_ensure_blob, source_ensure_manifest). */
RS_MUST_CHECK enum rs_code api_opt_fetch_blob(void *ctx, size_t up_index, const char *repo, const char *digest,
                                              struct rs_err *err);
RS_MUST_CHECK enum rs_code api_opt_fetch_manifest(void *ctx, size_t up_index, const char *repo, const char *digest,
                                                  struct rs_err *err);

/* tags.c: the page of tags[0..n) (sorted, unique) that starts after last
 * (NULL: at the start), holds no tag after bound (NULL: no bound; the last
 * tag of an upstream page that has a next one) and at most limit tags:
 * *out_start, *out_count. True when tags remain after it (or up_more, the
 * upstream has more); never for limit 0 (n=0 has no Link). */
bool api_tags_page(char *const *tags, size_t n, const char *last, const char *bound, size_t limit, bool up_more,
                   size_t *out_start, size_t *out_count);

/* tags.c, reports.c, ops.c: the other routes. */
enum MHD_Result api_tags_list(struct registry *r, struct request *rq, const struct route_target *t);
enum MHD_Result api_serve_report(struct registry *r, struct request *rq);
enum MHD_Result api_serve_metrics(struct request *rq);

/* referrers.c: GET/HEAD /v2/<name>/referrers/<digest>. */
enum MHD_Result api_referrers_get(struct registry *r, struct request *rq, const struct route_target *t);

/* mirror.c: the upstream's error answer, passed on or mapped; 2xx. */
enum MHD_Result api_answer_upstream_error(struct request *rq, const struct upstream_reply *rep, enum reply_what what);
bool api_status_ok(long s);

/* mirror.c: is the object linked to the mirror's repository (source.h)? */
bool api_mirror_linked(struct registry *r, size_t up_index, const char *repo, enum store_kind kind,
                       const char *digest);


/* ------------------------------------------------------------ write side */

struct push_http {
	const struct rs_config *cfg;
	struct store *store; /* borrowed from the registry: uploads, pushed images */
	struct auth *auth; /* NULL without an auth section */
	struct gate_resolver *bases; /* approved base references; NULL without push policies */
	struct gate_memo *memo;      /* remembered checks; NULL without push policies */
	struct gate_scan *scans;     /* layer scans at upload (gate_scan.h); NULL without push policies */
	struct sign *sign;           /* borrowed from the registry: signs what the gate pushes; NULL: nothing */
	struct gate_fwd *fwd;        /* layers sent upstream early (gate_fwd.h); NULL without push policies */
	struct gate_stage *stages;   /* uploads streamed upstream as they arrive (gate_stage.h); NULL: none */
	time_t gc_last;              /* the last garbage collection sweep (push_http_maintain); 0: none yet */
};

enum wkind {
	W_NONE,
	W_UPLOAD_START,
	W_UPLOAD_PATCH,
	W_UPLOAD_PUT,
	W_UPLOAD_STATUS,
	W_UPLOAD_DELETE,
	W_MANIFEST_PUT,
	W_MANIFEST_DELETE, /* deletes.c */
	W_BLOB_DELETE,     /* deletes.c */
};

/* One write request. */
struct wreq {
	enum wkind kind;
	bool ready; /* setup done (gate passed, upload open, ...) */
	char name[RS_LIMIT_NAME_MAX + 1];
	char ref[RS_LIMIT_TAG_MAX + DIGEST_STR_SIZE];
	bool ref_long; /* the reference did not fit ref (which holds its start): invalid */
	char uuid[STORE_UUID_SIZE];
	struct store_upload *u;
	uint64_t limit; /* bytes this request may still append (Content-Range), UINT64_MAX: no limit */
	char *buf;      /* manifest body */
	size_t len, cap;
	/* an answer given while the body arrives waits here (rq->hold); later
	 * body bytes are dropped */
	struct reply_kept kept;
};


/* auth_gate.c: the client's address as text (for the failed-login
 * back-off); 429 TOOMANYREQUESTS with Retry-After. */
void api_client_addr(struct request *rq, char *out, size_t cap);
enum MHD_Result api_throttled(struct request *rq, const char *msg, unsigned retry_after);

/* uploads.c: a write request's error answer (with the upload's Location,
 * Range and Docker-Upload-UUID when with_range). */
enum MHD_Result api_fail(struct request *rq, const struct wreq *w, const struct rs_err *err, uint64_t size,
                         bool with_range);

/* deletes.c: DELETE of a pushed manifest (by digest), tag or blob: 202;
 * 404 when the name does not hold it, 405 UNSUPPORTED when the mirror only
 * caches it there. The push permission was checked. */
enum MHD_Result api_delete(struct push_http *ph, struct request *rq, const struct wreq *w);
/* deletes.c: a DELETE without an "auth" section (nothing can be pushed, so
 * deletion is disabled): 405 UNSUPPORTED saying so (the spec's answer for a
 * registry with deletion disabled). */
enum MHD_Result api_delete_disabled(struct push_http *ph, struct request *rq, const struct wreq *w);

/* manifest_put.c: "name:tag" or "name@digest" for messages; a manifest PUT
 * under push policy gp. */
void api_ref_text(char *out, size_t cap, const char *name, const char *ref);
enum MHD_Result api_gated_manifest_put(struct push_http *ph, struct request *rq, struct wreq *w,
                                       const struct rs_gate_policy *gp, const char *ct);

#endif
