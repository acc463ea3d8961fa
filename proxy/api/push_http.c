/* push_http: the write side of the Distribution API (OCI distribution spec,
 * "Push"): struct push_http and its lifecycle over the store's uploads and
 * pushed images (store.h), the
 * auth decisions (auth.c, only with an "auth" section), and the push
 * policy's approved-base resolver, check memo (gate.c), the layer scans
 * at upload (gate_scan.c) and the early forwards (gate_fwd.c). The work is done
 * by the files behind it (api_int.h): uploads.c recognises the write routes
 * and streams their bodies, manifest_put.c answers a manifest PUT under a
 * push policy, auth_gate.c is the auth gate registry.c calls for every API
 * request, token.c serves /auth/token. */
#include "push_http.h"

#include "api_int.h"
#include "auth.h"
#include "gate.h"
#include "gate_fwd.h"
#include "gate_scan.h"
#include "gate_stage.h"
#include "log.h"
#include "metrics.h"
#include "store.h"

#include <stdlib.h>
#include <time.h>

/* ------------------------------------------------------------ lifecycle */

enum rs_code push_http_new(struct push_http **out, const struct rs_config *cfg, struct store *store,
                           struct rs_err *err)
{
	*out = NULL;
	struct push_http *ph = calloc(1, sizeof(*ph));
	if (!ph)
		return rs_err_set(err, RS_NOMEM, "out of memory starting push");
	ph->cfg = cfg;
	ph->store = store;
	enum rs_code rc = RS_OK;
	if (cfg->auth.enabled) {
		rc = auth_new(&ph->auth, &cfg->auth, err);
		if (rc)
			rs_err_prefix(err, "auth: ");
	}
	if (rc == RS_OK && cfg->push.policy_count)
		rc = gate_resolver_new(&ph->bases, cfg, err);
	if (rc == RS_OK && cfg->push.policy_count)
		rc = gate_memo_new(&ph->memo, err);
	if (rc == RS_OK && cfg->push.policy_count)
		rc = gate_scan_new(&ph->scans, store, RS_LIMIT_GATE_SCAN_WORKERS, RS_LIMIT_GATE_SCAN_QUEUE, err);
	if (rc == RS_OK && cfg->push.policy_count)
		rc = gate_fwd_new(&ph->fwd, cfg, store, ph->scans, RS_LIMIT_GATE_FWD_WORKERS, RS_LIMIT_GATE_FWD_QUEUE, err);
	if (rc == RS_OK && cfg->push.policy_count)
		rc = gate_stage_new(&ph->stages, cfg, ph->scans, err);
	if (rc) {
		push_http_free(ph);
		return rc;
	}
	*out = ph;
	return RS_OK;
}

void push_http_free(struct push_http *ph)
{
	if (!ph)
		return;
	gate_stage_free(ph->stages); /* first: stages wait for scans, read uploads and the policies */
	gate_fwd_free(ph->fwd);    /* its workers wait for scans, read the store and the policies */
	gate_scan_free(ph->scans); /* its workers read the store and the policies */
	auth_free(ph->auth);
	gate_resolver_free(ph->bases);
	gate_memo_free(ph->memo);
	free(ph);
}

struct gate_resolver *push_http_bases(struct push_http *ph)
{
	return ph->bases;
}

static void gc_sweep(struct push_http *ph, time_t now)
{
	struct store_gc_stats st;
	struct rs_err err = {0};
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	enum rs_code rc = store_pushed_gc(ph->store, now, ph->cfg->push.gc_grace_s, &st, &err);
	if (rc == RS_UNSUPPORTED)
		return; /* a store driver without garbage collection: nothing is collected, nothing to say each time */
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long ms = (long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
	metrics_add(METRICS_GC_SWEEPS, 1);
	metrics_add(METRICS_GC_BLOBS_REMOVED, st.blobs_removed);
	metrics_add(METRICS_GC_MANIFESTS_REMOVED, st.manifests_removed);
	metrics_add(METRICS_GC_BYTES_REMOVED, st.bytes_removed);
	if (rc != RS_OK) {
		metrics_add(METRICS_GC_FAILED, 1);
		log_event(LOG_WARN, "push gc: sweep stopped, %u blobs and %u manifests removed before: %s",
		          st.blobs_removed, st.manifests_removed, err.msg);
		return;
	}
	log_event(LOG_INFO,
	          "push gc: %u manifests linked keep %u objects; removed %u blobs and %u manifests (%llu bytes); kept %u "
	          "unreferenced (used within push.gc_grace_s %us) and %u taken by pushes during the sweep; %ld ms",
	          st.roots, st.marked, st.blobs_removed, st.manifests_removed, (unsigned long long)st.bytes_removed,
	          st.young, ph->cfg->push.gc_grace_s, st.raced, ms);
}

void push_http_maintain(struct push_http *ph, bool gc_now)
{
	time_t now = time(NULL);
	store_upload_sweep(ph->store, now, NULL);
	unsigned every = ph->cfg->push.gc_interval_s;
	if (ph->gc_last == 0)
		ph->gc_last = now; /* the first periodic sweep one interval after start */
	if (gc_now || (every && now - ph->gc_last >= (time_t)every)) {
		ph->gc_last = now;
		gc_sweep(ph, now);
	}
}

