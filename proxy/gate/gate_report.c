/* gate_report: the push gate's stored report (see gate.h): every finding
 * with where it is, the verdict, what went upstream and the optimizer's
 * own report, as one JSON document per pushed repository@digest kept by
 * the store (store.h STORE_DOC_GATE_REPORT), served by
 * /regslim/v1/reports/<name>/<digest>. Written with optimizer/jsonw.h. */
#include "gate.h"

#include "jsonw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stored reports are regslim's own documents; this bounds a damaged one. */
#define GATE_REPORT_MAX_BYTES (4u * 1024 * 1024)

static const char *action_name(enum gate_action a)
{
	return a == GATE_DENY ? "deny" : "warn";
}

static void write_finding(struct jsonw *w, const struct gate_finding *f)
{
	jsonw_object_begin(w);
	jsonw_member_string(w, "rule", f->rule);
	jsonw_member_string(w, "action", action_name(f->action));
	jsonw_member_string(w, "platform", f->platform);
	jsonw_key(w, "layer");
	if (f->layer)
		jsonw_u64(w, f->layer);
	else
		jsonw_null(w);
	jsonw_member_string(w, "layer_digest", f->layer_digest);
	jsonw_member_string(w, "path", f->path);
	jsonw_member_string(w, "message", f->text);
	jsonw_object_end(w);
}

static void write_upstream(struct jsonw *w, const struct gate_outcome *o)
{
	jsonw_array_begin(w);
	for (size_t i = 0; o && i < o->count; i++) {
		jsonw_object_begin(w);
		jsonw_member_string(w, "tag", o->pushed[i].tag);
		jsonw_member_string(w, "digest", o->pushed[i].digest);
		jsonw_member_bool(w, "optimized", o->pushed[i].optimized);
		jsonw_object_end(w);
	}
	jsonw_array_end(w);
}

enum rs_code gate_report_json(char **out, size_t *out_len, const struct gate_report *r,
			      const struct gate_report_meta *m, struct rs_err *err)
{
	*out = NULL;
	*out_len = 0;
	FILE *f = open_memstream(out, out_len);
	if (!f)
		return rs_err_set(err, RS_NOMEM, "out of memory for the policy report");
	char when[32] = "";
	struct tm tm;
	if (gmtime_r(&m->checked_at, &tm))
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	struct jsonw w;
	jsonw_init(&w, f);
	jsonw_object_begin(&w);
	jsonw_member_string(&w, "kind", "push-policy");
	jsonw_member_string(&w, "repository", m->repository);
	jsonw_member_string(&w, "reference", m->reference);
	jsonw_member_string(&w, "digest", m->digest);
	jsonw_member_string(&w, "mode", m->mode);
	jsonw_member_string(&w, "verdict", m->verdict);
	jsonw_member_string(&w, "checked_at", when);
	jsonw_key(&w, "image");
	jsonw_object_begin(&w);
	jsonw_member_u64(&w, "layers", r->layers);
	jsonw_member_u64(&w, "compressed_bytes", r->compressed_bytes);
	jsonw_key(&w, "uncompressed_bytes");
	if (r->scanned)
		jsonw_u64(&w, r->uncompressed_bytes);
	else
		jsonw_null(&w);
	jsonw_object_end(&w);
	jsonw_member_u64(&w, "denies", r->denies);
	jsonw_member_u64(&w, "warnings", r->warns);
	jsonw_member_u64(&w, "findings_not_listed", r->dropped);
	jsonw_key(&w, "findings");
	jsonw_array_begin(&w);
	for (size_t i = 0; i < r->count; i++)
		write_finding(&w, &r->items[i]);
	jsonw_array_end(&w);
	jsonw_key(&w, "upstream");
	write_upstream(&w, m->outcome);
	jsonw_key(&w, "optimization");
	jsonw_raw(&w, m->outcome ? m->outcome->optimizer_report : NULL);
	jsonw_object_end(&w);
	fputc('\n', f);
	bool bad = ferror(f) != 0;
	if (fclose(f) != 0 || bad) {
		free(*out);
		*out = NULL;
		return rs_err_set(err, RS_NOMEM, "out of memory for the policy report");
	}
	return RS_OK;
}

enum rs_code gate_report_save(struct store *store, const char *repository, const char *digest, const char *json,
			      size_t len, struct rs_err *err)
{
	enum rs_code rc = store_doc_put(store, STORE_DOC_GATE_REPORT, repository, digest, json, len, err);
	if (rc)
		rs_err_prefix(err, "saving the policy report: ");
	return rc;
}

enum rs_code gate_report_load(struct store *store, const char *repository, const char *digest, char **out,
			      size_t *out_len, struct rs_err *err)
{
	enum rs_code rc = store_doc_get(store, STORE_DOC_GATE_REPORT, repository, digest, GATE_REPORT_MAX_BYTES, out,
					out_len, err);
	if (rc == RS_NOT_FOUND)
		rs_err_set(err, RS_NOT_FOUND, "no policy report for %s@%s", repository, digest);
	return rc;
}
