/* push_http: the write side of the Distribution API (OCI distribution spec,
 * "Push"): struct push_http and its lifecycle over the store's uploads and
 * pushed images (store.h), the
 * auth decisions (auth.c, only with an "auth" section), and the push
 * policy's approved-base resolver, check memo (gate.c) and the layer scans
 * at upload (gate_scan.c). The work is done
 * by the files behind it (api_int.h): uploads.c recognises the write routes
 * and streams their bodies, manifest_put.c answers a manifest PUT under a
 * push policy, auth_gate.c is the auth gate registry.c calls for every API
 * request, token.c serves /auth/token. */
#include "push_http.h"

#include "api_int.h"
#include "auth.h"
#include "gate.h"
#include "gate_scan.h"
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
	gate_scan_free(ph->scans); /* first: its workers read the store and the policies */
	auth_free(ph->auth);
	gate_resolver_free(ph->bases);
	gate_memo_free(ph->memo);
	free(ph);
}

struct gate_resolver *push_http_bases(struct push_http *ph)
{
	return ph->bases;
}

void push_http_maintain(struct push_http *ph)
{
	store_upload_sweep(ph->store, time(NULL), NULL);
}

