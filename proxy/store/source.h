/* source: the one place that decides where the bytes of a blob or a
 * manifest come from (DESIGN.md "Layout", store/): an image pushed to
 * regslim, the cache (linked to the repository, or confirmed for it by the
 * upstream now, or stale-if-error), an evicted optimized object made again,
 * or the upstream. The pull path (api/blobs.c, api/manifests.c), optimized
 * pulls (optpull.h's fetches), the policy check on pull and the push side's
 * fetcher (references and mounts taken through the mirror) all ask it.
 *
 * The isolation rules of docs/security.md "Repository links" live here: a
 * cached object is served under a repository only through a link, made when
 * the upstream gave or confirmed the object for that repository; a download
 * links on its first byte and unlinks again when the object did not make it
 * into the store.
 *
 * It owns the single-flight download table (inflight.h) and the download
 * job; it borrows the store, the upstream clients and the configuration. It
 * knows no HTTP server: what the upstream answered comes back as a struct
 * upstream_reply for the caller to map. Regeneration of evicted optimized
 * objects is a hook (optimize/ is above this room). */
#ifndef RS_PROXY_SOURCE_H
#define RS_PROXY_SOURCE_H

#include "config.h"
#include "digest.h"
#include "errors.h"
#include "store.h"
#include "upstream.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct source;
struct inflight_fetch;
struct cluster;

/* What a client names: the name as it wrote it (pushed images; NULL: none)
 * and, routed like a pull, the upstream and its repository. */
struct source_ref {
	const char *name;
	size_t up_index; /* into cfg->upstreams */
	const char *repo;
	enum store_kind kind;
	const char *digest;
};

enum source_where {
	SOURCE_PUSHED,      /* an image pushed to the name holds it */
	SOURCE_CACHE,       /* cached, and linked to the repository (or confirmed now, or stale-if-error) */
	SOURCE_REGENERATED, /* an evicted object of an optimized image linked to the repository, made again */
	SOURCE_UNLINKED,    /* cached for another repository; the upstream did not confirm it for this one */
	SOURCE_UPSTREAM,    /* not in the store: the upstream has to give it */
};

/* The answer of source_locate and source_fetch. */
struct source_found {
	enum source_where where;
	/* PUSHED, CACHE, REGENERATED: a blob's reader (the caller's to close),
	 * or a manifest's bytes and media type (the caller's to free). */
	struct store_reader *rd;
	char *body;
	size_t len;
	char *type;
	/* UNLINKED: ask_rc is RS_OK with the upstream's answer in rep (not 2xx),
	 * or the error (in err) that kept it from answering. rep is the caller's
	 * to dispose (source_found_dispose). */
	enum rs_code ask_rc;
	struct upstream_reply rep;
	/* source_fetch, UPSTREAM: the shared download (the caller's reference:
	 * inflight_release), the blob's size (-1: unknown) and how long a read
	 * may wait for bytes. */
	struct inflight_fetch *fetch;
	int64_t size;
	unsigned stall_s;
};

/* Make an evicted object of an optimized image again (optpull_regenerate's
 * shape): RS_OK once it is in the store. */
typedef enum rs_code (*source_regen_fn)(void *ctx, enum store_kind kind, const char *digest, unsigned wait_s,
                                        struct rs_err *err);

/* A source over s with ups[i] the client of cfg->upstreams[i] (all borrowed;
 * they must outlive it). It makes the download table. */
RS_MUST_CHECK enum rs_code source_new(struct source **out, const struct rs_config *cfg, struct store *s,
                                      struct upstream **ups, struct rs_err *err);
/* Waits for running downloads (inflight_free), then frees. NULL is fine. */
void source_free(struct source *src);
/* Regeneration of evicted optimized objects (fn NULL: none). */
void source_set_regenerate(struct source *src, source_regen_fn fn, void *ctx);
/* Coordinate blob downloads with the other replicas through c (borrowed; NULL,
 * a cluster without a "cluster" section or a store that replicas do not share,
 * the fs driver: this process only, logged). A download
 * then takes the cluster lock "blob:<digest>" first; while another replica
 * holds it, the bytes are streamed from that replica (its advertise_url, the
 * peer secret) or read from the store once it committed them, never fetched
 * from the upstream a second time (docs/scale-out.md). */
void source_set_cluster(struct source *src, struct cluster *c);
/* Shutting down: source_ensure's waits end at once (the downloads go on). */
void source_stop(struct source *src);
/* Number of downloads running. */
unsigned source_inflight(struct source *src);

/* Where ref's bytes come from, in this order: pushed to ref->name; cached
 * and linked to (upstream, repo) or confirmed for it by the upstream now
 * (HEAD; a 2xx links it) or served stale because the upstream could not say
 * and a manifest linked there names it; not cached but an optimized object
 * linked there that can be made again; else UPSTREAM (nothing opened). A
 * cached copy the upstream did not confirm is UNLINKED. A manifest cached
 * and linked that no longer reads back (evicted, or dropped as corrupt) is
 * logged and UPSTREAM. Errors: the store's, opening what it holds. Dispose
 * of *out with source_found_dispose whatever the outcome. */
RS_MUST_CHECK enum rs_code source_locate(struct source *src, const struct source_ref *ref,
                                         struct source_found *out, struct rs_err *err);

/* A blob not in the store (ref->kind STORE_BLOB): join the download of its
 * digest, or start it for (upstream, repo), and wait until the upstream
 * answered. UPSTREAM with out->fetch to stream from, out->size; UNLINKED
 * when the download joined was another repository's and the upstream does
 * not confirm the blob for this one. Errors: the download's (RS_NOT_FOUND
 * for an upstream 404, RS_UPSTREAM for one that fails or sends bytes that do
 * not verify, RS_TIMEOUT). */
RS_MUST_CHECK enum rs_code source_fetch(struct source *src, const struct source_ref *ref,
                                        struct source_found *out, struct rs_err *err);

void source_found_dispose(struct source_found *f);

/* What the peer endpoint serves another replica of digest (never starting a
 * download): the download running here (out->fetch, out->size once the
 * upstream answered, out->stall_s), else the cached blob (CACHE, out->rd).
 * RS_NOT_FOUND when neither; the download's error when it failed before it
 * began. Dispose of *out with source_found_dispose. */
RS_MUST_CHECK enum rs_code source_peer_open(struct source *src, const char *digest, struct source_found *out,
                                            struct rs_err *err);

/* Bring digest into the cache from upstream up_index, repository repo, and
 * wait until it is verified and committed (optpull.h's fetches, the policy
 * check on pull): a blob through the shared download (ending at once after
 * source_stop), a manifest by digest (RS_OK at once when cached). ctx is the
 * source. */
RS_MUST_CHECK enum rs_code source_ensure_blob(void *ctx, size_t up_index, const char *repo, const char *digest,
                                              struct rs_err *err);
RS_MUST_CHECK enum rs_code source_ensure_manifest(void *ctx, size_t up_index, const char *repo, const char *digest,
                                                  struct rs_err *err);

/* store.h store_pushed_fetch_fn (ctx is the source): does the mirror's
 * repository (repo routed like a pull) hold digest? Brought into the cache
 * for it when absent, confirmed by the upstream when the cached copy is not
 * linked to it. */
RS_MUST_CHECK enum rs_code source_pushed_fetch(void *ctx, const char *repo, const char *digest, bool manifest,
                                               struct rs_err *err);

/* A manifest from the upstream (GET ref, with the client's Accept values),
 * verified (against want_digest when not NULL, else against the upstream's
 * Docker-Content-Digest) and stored and linked to repo. RS_OK with rep->status
 * for any HTTP answer (rep is the caller's to dispose); on a 2xx rep holds the
 * body, out_digest its digest, *out_stored whether it is in the cache now (a
 * schema 1 manifest never is). */
RS_MUST_CHECK enum rs_code source_fetch_manifest(struct source *src, size_t up_index, const char *repo,
                                                 const char *ref, const char *const *accept, size_t n_accept,
                                                 const char *want_digest, struct upstream_reply *rep,
                                                 char out_digest[DIGEST_STR_SIZE], bool *out_stored,
                                                 struct rs_err *err);

/* The mirror's repository links (store.h) of (cfg->upstreams[up_index],
 * repo). A link that cannot be written is logged: the next request asks
 * again. */
bool source_linked(struct source *src, size_t up_index, const char *repo, enum store_kind kind, const char *digest);
void source_link(struct source *src, size_t up_index, const char *repo, enum store_kind kind, const char *digest);
/* Ask the upstream whether repo has digest (HEAD); a 2xx answer links it.
 * RS_OK with rep->status set for any HTTP answer (rep is the caller's to
 * dispose); RS_UPSTREAM / RS_TIMEOUT when it cannot be asked. */
RS_MUST_CHECK enum rs_code source_ask(struct source *src, size_t up_index, const char *repo, enum store_kind kind,
                                      const char *digest, struct upstream_reply *rep, struct rs_err *err);
/* source_ask as one code: RS_OK when the upstream confirmed (now linked),
 * RS_NOT_FOUND for 404, RS_DENIED for 401/403, RS_UPSTREAM otherwise. */
RS_MUST_CHECK enum rs_code source_confirm(struct source *src, size_t up_index, const char *repo,
                                          enum store_kind kind, const char *digest, struct rs_err *err);

#endif
