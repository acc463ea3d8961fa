/* cosigndoc: writes the cosign payload, the .sig config, the attestation and
 * their OCI manifests, and reads a cosign payload back (cosigndoc.h). Pure
 * jansson over memory: no files, no cryptography; proxy/sign/ is its
 * caller. Objects keep the order their keys are set in (jansson keeps
 * insertion order), which is the order cosign's Go structs give, so a
 * payload is the bytes cosign would sign. */
#include "cosigndoc.h"

#include "xalloc.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* jansson's text of root (released) into a buffer of ours (free()). */
static enum rs_code take_dump(json_t *root, bool ok, char **out, size_t *out_len, struct rs_err *err)
{
	char *text = root && ok ? json_dumps(root, JSON_COMPACT) : NULL;
	json_decref(root);
	*out = text ? xalloc_strdup(text) : NULL;
	if (text) {
		json_free_t release = NULL;
		json_get_alloc_funcs(NULL, &release);
		if (release)
			release(text);
	}
	if (!*out)
		return rs_err_set(err, RS_NOMEM, "out of memory writing a cosign document");
	*out_len = strlen(*out);
	return RS_OK;
}

/* Set key of o to v (stolen); a NULL v (out of memory) clears *ok. */
static void put(json_t *o, const char *key, json_t *v, bool *ok)
{
	if (!o || !v) {
		json_decref(v);
		*ok = false;
	} else if (json_object_set_new(o, key, v) != 0) {
		*ok = false;
	}
}

/* A string, or null for NULL. */
static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

enum rs_code cosigndoc_payload(char **out, size_t *out_len, const char *identity, const char *digest,
                               struct rs_err *err)
{
	json_t *root = json_pack("{s:{s:{s:s},s:{s:s},s:s},s:n}", "critical", "identity", "docker-reference", identity,
	                         "image", "docker-manifest-digest", digest, "type", COSIGNDOC_PAYLOAD_TYPE, "optional");
	return take_dump(root, true, out, out_len, err);
}

enum rs_code cosigndoc_payload_parse(char **identity, char **digest, const char *payload, size_t len,
                                     struct rs_err *err)
{
	json_error_t jerr;
	json_t *root = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &jerr);
	const char *type = NULL, *ref = NULL, *d = NULL;
	*identity = *digest = NULL;
	if (!root || json_unpack(root, "{s:{s:s,s:{s:s},s:{s:s}}}", "critical", "type", &type, "identity",
	                         "docker-reference", &ref, "image", "docker-manifest-digest", &d) != 0 ||
	    strcmp(type, COSIGNDOC_PAYLOAD_TYPE) != 0) {
		json_decref(root);
		return rs_err_set(err, RS_BAD_INPUT, "not a cosign simple-signing payload");
	}
	*identity = xalloc_strdup(ref);
	*digest = xalloc_strdup(d);
	json_decref(root);
	if (!*identity || !*digest) {
		free(*identity);
		free(*digest);
		*identity = *digest = NULL;
		return rs_err_set(err, RS_NOMEM, "out of memory reading a cosign payload");
	}
	return RS_OK;
}

enum rs_code cosigndoc_sig_config(char **out, size_t *out_len, const char *const *diff_ids, size_t n,
                                  const char *created, struct rs_err *err)
{
	bool ok = true;
	json_t *root = json_object(), *history = json_array(), *ids = json_array(), *rootfs = json_object();
	for (size_t i = 0; ok && history && ids && i < n; i++) {
		json_t *h = json_pack("{s:s}", "created", "0001-01-01T00:00:00Z");
		ok = h && json_array_append_new(history, h) == 0 && json_array_append_new(ids, json_string(diff_ids[i])) == 0;
	}
	put(root, "architecture", json_string(""), &ok);
	put(root, "created", json_string(created), &ok);
	put(root, "history", history, &ok);
	put(root, "os", json_string(""), &ok);
	put(rootfs, "type", json_string("layers"), &ok);
	put(rootfs, "diff_ids", ids, &ok);
	put(root, "rootfs", rootfs, &ok);
	put(root, "config", json_object(), &ok);
	return take_dump(root, ok, out, out_len, err);
}

enum rs_code cosigndoc_attestation(char **out, size_t *out_len, const struct cosigndoc_attestation *a,
                                   struct rs_err *err)
{
	bool ok = true;
	json_t *root = json_object(), *verification = json_object(), *verified = json_array();
	for (size_t i = 0; ok && verified && i < a->verified_count; i++) {
		const struct cosigndoc_verified *v = &a->verified[i];
		json_t *e = json_object();
		put(e, "method", str_or_null(v->method), &ok);
		put(e, "key", str_or_null(v->key), &ok);
		put(e, "signature", str_or_null(v->signature), &ok);
		put(e, "source", str_or_null(v->source), &ok);
		if (!e || json_array_append_new(verified, e) != 0)
			ok = false;
	}
	put(root, "type", json_string("regslim optimization"), &ok);
	put(root, "version", json_integer(1), &ok);
	put(root, "reference", str_or_null(a->reference), &ok);
	put(root, "optimized",
	    json_pack("{s:o,s:o}", "digest", str_or_null(a->optimized_digest), "mediaType",
	              str_or_null(a->optimized_media_type)),
	    &ok);
	put(root, "original", json_pack("{s:o}", "digest", str_or_null(a->original_digest)), &ok);
	put(verification, "rule", str_or_null(a->verify_rule), &ok);
	put(verification, "verified", verified, &ok);
	put(root, "verification", verification, &ok);
	put(root, "policy_digest", str_or_null(a->policy_digest), &ok);
	put(root, "optimizer_version", str_or_null(a->optimizer_version), &ok);
	put(root, "report_digest", str_or_null(a->report_digest), &ok);
	put(root, "created", str_or_null(a->created), &ok);
	return take_dump(root, ok, out, out_len, err);
}

/* A descriptor object: mediaType, digest, size, annotations. */
static json_t *desc_json(const struct cosigndoc_desc *d, bool *ok)
{
	json_t *o = json_object();
	put(o, "mediaType", json_string(d->media_type), ok);
	put(o, "digest", json_string(d->digest), ok);
	put(o, "size", json_integer((json_int_t)d->size), ok);
	if (!d->signature && !d->annotation_count)
		return o;
	json_t *a = json_object();
	if (d->signature)
		put(a, COSIGNDOC_SIGNATURE_ANNOTATION, json_string(d->signature), ok);
	for (size_t i = 0; i < d->annotation_count; i++)
		if (!d->signature || strcmp(d->annotations[i].key, COSIGNDOC_SIGNATURE_ANNOTATION) != 0)
			put(a, d->annotations[i].key, json_string(d->annotations[i].value), ok);
	put(o, "annotations", a, ok);
	return o;
}

enum rs_code cosigndoc_manifest(char **out, size_t *out_len, const char *artifact_type,
                                const struct cosigndoc_desc *config, const struct cosigndoc_desc *layers, size_t n,
                                const struct cosigndoc_desc *subject, const char *created, struct rs_err *err)
{
	bool ok = true;
	json_t *root = json_object(), *arr = json_array();
	put(root, "schemaVersion", json_integer(2), &ok);
	put(root, "mediaType", json_string(COSIGNDOC_MANIFEST_MT), &ok);
	if (artifact_type)
		put(root, "artifactType", json_string(artifact_type), &ok);
	put(root, "config", desc_json(config, &ok), &ok);
	for (size_t i = 0; ok && arr && i < n; i++) {
		json_t *l = desc_json(&layers[i], &ok);
		if (!l || json_array_append_new(arr, l) != 0)
			ok = false;
	}
	put(root, "layers", arr, &ok);
	if (subject)
		put(root, "subject", desc_json(subject, &ok), &ok);
	if (created)
		put(root, "annotations", json_pack("{s:s}", "org.opencontainers.image.created", created), &ok);
	return take_dump(root, ok, out, out_len, err);
}
