/* imagejson: parse and write OCI / Docker image JSON documents with jansson,
 * converting to and from the plain structs of imagejson.h. Untrusted input:
 * duplicate keys are refused, every field's type is checked and named by its
 * key path, and nothing here allocates more than the document's own size
 * (the caller caps that, RS_LIMIT_MANIFEST_MAX_BYTES / _CONFIG_MAX_BYTES).
 * No I/O. json_t values never leave this file. */
#include "imagejson.h"

#include "jsonload.h"
#include "rs_limits.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KP_MAX 96

static enum rs_code bad(struct rs_err *err, const char *what, const char *path, const char *fmt, ...)
	RS_PRINTF(4, 5);
static enum rs_code bad(struct rs_err *err, const char *what, const char *path, const char *fmt, ...)
{
	const struct jsonload ld = {what, err};
	va_list ap;
	va_start(ap, fmt);
	enum rs_code rc = jsonload_vfail(&ld, RS_BAD_INPUT, path, fmt, ap);
	va_end(ap);
	return rc;
}

static enum rs_code nomem(struct rs_err *err, const char *what)
{
	return rs_err_set(err, RS_NOMEM, "%s: out of memory", what);
}

static char *dupn(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	if (!d)
		return NULL;
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

static char *dupstr(const char *s)
{
	return s ? dupn(s, strlen(s)) : NULL;
}

static void kp_join(char *out, const char *parent, const char *key)
{
	int n = parent && parent[0] ? snprintf(out, KP_MAX, "%s.%s", parent, key)
				    : snprintf(out, KP_MAX, "%s", key);
	if (n < 0 || n >= KP_MAX)
		memcpy(out + KP_MAX - 4, "...", 4); /* key paths are cut, not failed */
}

static enum rs_code load(json_t **out, const char *buf, size_t len, const char *what, struct rs_err *err)
{
	json_error_t jerr;
	*out = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!*out)
		return rs_err_set(err, RS_BAD_INPUT, "%s: invalid JSON at line %d column %d: %s", what, jerr.line,
				  jerr.column, jerr.text);
	if (!json_is_object(*out)) {
		enum rs_code rc = bad(err, what, NULL, "expected a JSON object, got %s", jsonload_type_name(*out));
		json_decref(*out);
		*out = NULL;
		return rc;
	}
	return RS_OK;
}

/* Optional string field: absent or null gives NULL. A string containing a
 * NUL byte is refused (it would be cut in C). */
static enum rs_code opt_string(char **out, const json_t *obj, const char *key, const char *parent,
			       const char *what, struct rs_err *err)
{
	*out = NULL;
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return RS_OK;
	char kp[KP_MAX];
	kp_join(kp, parent, key);
	if (!json_is_string(v))
		return bad(err, what, kp, "expected a string, got %s", jsonload_type_name(v));
	size_t n = json_string_length(v);
	if (strlen(json_string_value(v)) != n)
		return bad(err, what, kp, "string contains a NUL byte");
	*out = dupn(json_string_value(v), n);
	return *out ? RS_OK : nomem(err, what);
}

static enum rs_code req_string(char **out, const json_t *obj, const char *key, const char *parent,
			       const char *what, struct rs_err *err)
{
	enum rs_code rc = opt_string(out, obj, key, parent, what, err);
	if (rc != RS_OK)
		return rc;
	if (!*out) {
		char kp[KP_MAX];
		kp_join(kp, parent, key);
		return bad(err, what, kp, "missing (expected a string)");
	}
	return RS_OK;
}

static enum rs_code parse_annotations(struct imagejson_kv **out, size_t *n, const json_t *obj,
				      const char *parent, const char *what, struct rs_err *err)
{
	*out = NULL;
	*n = 0;
	json_t *a = json_object_get(obj, "annotations");
	if (!a || json_is_null(a))
		return RS_OK;
	char kp[KP_MAX];
	kp_join(kp, parent, "annotations");
	if (!json_is_object(a))
		return bad(err, what, kp, "expected an object of strings, got %s", jsonload_type_name(a));
	size_t cnt = json_object_size(a);
	if (cnt == 0)
		return RS_OK;
	*out = calloc(cnt, sizeof(**out));
	if (!*out)
		return nomem(err, what);
	const char *key;
	json_t *v;
	json_object_foreach(a, key, v) {
		if (!json_is_string(v)) {
			char kk[KP_MAX];
			kp_join(kk, kp, key);
			return bad(err, what, kk, "expected a string, got %s", jsonload_type_name(v));
		}
		struct imagejson_kv *kv = &(*out)[*n];
		kv->key = dupstr(key);
		kv->value = dupstr(json_string_value(v));
		(*n)++;
		if (!kv->key || !kv->value)
			return nomem(err, what);
	}
	return RS_OK;
}

static enum rs_code parse_descriptor(struct imagejson_descriptor *d, const json_t *v, const char *kp,
				     const char *what, struct rs_err *err)
{
	memset(d, 0, sizeof(*d));
	if (!json_is_object(v))
		return bad(err, what, kp, "expected a descriptor object, got %s", jsonload_type_name(v));
	enum rs_code rc = opt_string(&d->media_type, v, "mediaType", kp, what, err);
	if (rc == RS_OK)
		rc = req_string(&d->digest, v, "digest", kp, what, err);
	if (rc != RS_OK)
		return rc;
	json_t *sz = json_object_get(v, "size");
	char sk[KP_MAX];
	kp_join(sk, kp, "size");
	if (!json_is_integer(sz) || json_integer_value(sz) < 0)
		return bad(err, what, sk, "expected a non-negative integer, got %s", jsonload_type_name(sz));
	d->size = (uint64_t)json_integer_value(sz);
	json_t *pf = json_object_get(v, "platform");
	if (pf && !json_is_null(pf)) {
		char pk[KP_MAX];
		kp_join(pk, kp, "platform");
		if (!json_is_object(pf))
			return bad(err, what, pk, "expected an object, got %s", jsonload_type_name(pf));
		rc = opt_string(&d->os, pf, "os", pk, what, err);
		if (rc == RS_OK)
			rc = opt_string(&d->architecture, pf, "architecture", pk, what, err);
		if (rc == RS_OK)
			rc = opt_string(&d->variant, pf, "variant", pk, what, err);
		if (rc != RS_OK)
			return rc;
	}
	if ((rc = opt_string(&d->artifact_type, v, "artifactType", kp, what, err)) != RS_OK)
		return rc;
	return parse_annotations(&d->annotations, &d->annotation_count, v, kp, what, err);
}

/* The optional artifactType and subject of a manifest or index (image-spec
 * v1.1): a subject that is present must be a descriptor. */
static enum rs_code parse_v11(char **out_type, struct imagejson_descriptor **out_subject, const json_t *root,
			      const char *what, struct rs_err *err)
{
	enum rs_code rc = opt_string(out_type, root, "artifactType", NULL, what, err);
	json_t *sub = json_object_get(root, "subject");
	if (rc != RS_OK || !sub || json_is_null(sub))
		return rc;
	*out_subject = calloc(1, sizeof(**out_subject));
	if (!*out_subject)
		return nomem(err, what);
	return parse_descriptor(*out_subject, sub, "subject", what, err);
}

static enum rs_code parse_schema(int *out, const json_t *root, const char *what, struct rs_err *err)
{
	json_t *v = json_object_get(root, "schemaVersion");
	if (!json_is_integer(v))
		return bad(err, what, "schemaVersion", "expected the integer 2, got %s", jsonload_type_name(v));
	if (json_integer_value(v) != 2)
		return bad(err, what, "schemaVersion", "expected 2, got %lld", (long long)json_integer_value(v));
	*out = 2;
	return RS_OK;
}

enum rs_code imagejson_sniff(enum imagejson_kind *out, const char *buf, size_t len, const char *what,
			     struct rs_err *err)
{
	json_t *root;
	enum rs_code rc = load(&root, buf, len, what, err);
	if (rc != RS_OK)
		return rc;
	json_t *mt = json_object_get(root, "mediaType");
	const char *m = json_is_string(mt) ? json_string_value(mt) : NULL;
	if (m && (strstr(m, "image.index") || strstr(m, "manifest.list")))
		*out = IMAGEJSON_INDEX;
	else if (m && (strstr(m, "image.manifest") || strstr(m, "distribution.manifest.v2")))
		*out = IMAGEJSON_MANIFEST;
	else if (json_object_get(root, "manifests"))
		*out = IMAGEJSON_INDEX;
	else if (json_object_get(root, "layers") || json_object_get(root, "config"))
		*out = IMAGEJSON_MANIFEST;
	else
		rc = bad(err, what, NULL, "neither an image manifest nor an index (media type %s)",
			 m ? m : "absent");
	json_decref(root);
	return rc;
}

/* The descriptor array arr under key (layers[], manifests[]): at most limit
 * entries ("N <noun>, limit is L (limit_name)" beyond). *count counts the entries parsed, so
 * the caller's dispose releases a partial array too. */
static enum rs_code parse_descriptors(struct imagejson_descriptor **out, size_t *count, json_t *arr, const char *key,
				      const char *noun, size_t limit, const char *limit_name, const char *what,
				      struct rs_err *err)
{
	size_t n = json_array_size(arr);
	if (n > limit)
		return bad(err, what, key, "%zu %s, limit is %u (%s)", n, noun, (unsigned)limit, limit_name);
	if (n == 0)
		return RS_OK;
	*out = calloc(n, sizeof(**out));
	if (!*out)
		return nomem(err, what);
	enum rs_code rc = RS_OK;
	size_t i;
	json_t *d;
	json_array_foreach(arr, i, d) {
		char kp[KP_MAX];
		snprintf(kp, sizeof(kp), "%s[%zu]", key, i);
		rc = parse_descriptor(&(*out)[i], d, kp, what, err);
		*count = i + 1;
		if (rc != RS_OK)
			break;
	}
	return rc;
}

enum rs_code imagejson_parse_manifest(struct imagejson_manifest *out, const char *buf, size_t len,
				      const char *what, struct rs_err *err)
{
	memset(out, 0, sizeof(*out));
	json_t *root;
	enum rs_code rc = load(&root, buf, len, what, err);
	if (rc != RS_OK)
		return rc;
	rc = parse_schema(&out->schema_version, root, what, err);
	if (rc == RS_OK)
		rc = opt_string(&out->media_type, root, "mediaType", NULL, what, err);
	if (rc == RS_OK)
		rc = parse_descriptor(&out->config, json_object_get(root, "config"), "config", what, err);
	json_t *layers = json_object_get(root, "layers");
	if (rc == RS_OK && !json_is_array(layers))
		rc = bad(err, what, "layers", "expected an array, got %s", jsonload_type_name(layers));
	if (rc == RS_OK)
		rc = parse_descriptors(&out->layers, &out->layer_count, layers, "layers", "layers", RS_LIMIT_IMAGE_LAYERS_MAX,
				       "RS_LIMIT_IMAGE_LAYERS_MAX", what, err);
	if (rc == RS_OK)
		rc = parse_annotations(&out->annotations, &out->annotation_count, root, NULL, what, err);
	if (rc == RS_OK)
		rc = parse_v11(&out->artifact_type, &out->subject, root, what, err);
	json_decref(root);
	if (rc != RS_OK)
		imagejson_manifest_dispose(out);
	return rc;
}

enum rs_code imagejson_parse_index(struct imagejson_index *out, const char *buf, size_t len,
				   const char *what, struct rs_err *err)
{
	memset(out, 0, sizeof(*out));
	json_t *root;
	enum rs_code rc = load(&root, buf, len, what, err);
	if (rc != RS_OK)
		return rc;
	rc = parse_schema(&out->schema_version, root, what, err);
	if (rc == RS_OK)
		rc = opt_string(&out->media_type, root, "mediaType", NULL, what, err);
	json_t *ms = json_object_get(root, "manifests");
	if (rc == RS_OK && !json_is_array(ms))
		rc = bad(err, what, "manifests", "expected an array, got %s", jsonload_type_name(ms));
	if (rc == RS_OK)
		rc = parse_descriptors(&out->manifests, &out->manifest_count, ms, "manifests", "entries",
				       RS_LIMIT_INDEX_MANIFESTS_MAX, "RS_LIMIT_INDEX_MANIFESTS_MAX", what, err);
	if (rc == RS_OK)
		rc = parse_annotations(&out->annotations, &out->annotation_count, root, NULL, what, err);
	if (rc == RS_OK)
		rc = parse_v11(&out->artifact_type, &out->subject, root, what, err);
	json_decref(root);
	if (rc != RS_OK)
		imagejson_index_dispose(out);
	return rc;
}

enum rs_code imagejson_parse_config(struct imagejson_config *out, const char *buf, size_t len,
				    const char *what, struct rs_err *err)
{
	memset(out, 0, sizeof(*out));
	json_t *root;
	enum rs_code rc = load(&root, buf, len, what, err);
	if (rc != RS_OK)
		return rc;
	rc = opt_string(&out->os, root, "os", NULL, what, err);
	if (rc == RS_OK)
		rc = opt_string(&out->architecture, root, "architecture", NULL, what, err);
	if (rc == RS_OK)
		rc = opt_string(&out->variant, root, "variant", NULL, what, err);
	if (rc == RS_OK)
		rc = opt_string(&out->created, root, "created", NULL, what, err);
	json_t *rootfs = json_object_get(root, "rootfs");
	json_t *ids = rootfs ? json_object_get(rootfs, "diff_ids") : NULL;
	if (rc == RS_OK && !json_is_object(rootfs))
		rc = bad(err, what, "rootfs", "expected an object, got %s", jsonload_type_name(rootfs));
	if (rc == RS_OK && !json_is_array(ids))
		rc = bad(err, what, "rootfs.diff_ids", "expected an array, got %s", jsonload_type_name(ids));
	if (rc == RS_OK && json_array_size(ids) > RS_LIMIT_IMAGE_LAYERS_MAX)
		rc = bad(err, what, "rootfs.diff_ids", "%zu entries, limit is %u (RS_LIMIT_IMAGE_LAYERS_MAX)",
			 json_array_size(ids), (unsigned)RS_LIMIT_IMAGE_LAYERS_MAX);
	if (rc == RS_OK && json_array_size(ids) > 0) {
		out->diff_ids = calloc(json_array_size(ids), sizeof(char *));
		if (!out->diff_ids)
			rc = nomem(err, what);
		size_t i;
		json_t *v;
		json_array_foreach(ids, i, v) {
			if (rc != RS_OK)
				break;
			if (!json_is_string(v)) {
				char kp[KP_MAX];
				snprintf(kp, sizeof(kp), "rootfs.diff_ids[%zu]", i);
				rc = bad(err, what, kp, "expected a string, got %s", jsonload_type_name(v));
				break;
			}
			out->diff_ids[i] = dupstr(json_string_value(v));
			out->diff_id_count = i + 1;
			if (!out->diff_ids[i])
				rc = nomem(err, what);
		}
	}
	json_t *hist = json_object_get(root, "history");
	if (rc == RS_OK && hist && !json_is_null(hist)) {
		out->has_history = true;
		if (!json_is_array(hist))
			rc = bad(err, what, "history", "expected an array, got %s", jsonload_type_name(hist));
		else if (json_array_size(hist) > RS_LIMIT_IMAGE_LAYERS_MAX * 4)
			rc = bad(err, what, "history", "%zu entries, limit is %u (4 x RS_LIMIT_IMAGE_LAYERS_MAX)",
				 json_array_size(hist), (unsigned)RS_LIMIT_IMAGE_LAYERS_MAX * 4);
		else if (json_array_size(hist) > 0) {
			out->history = calloc(json_array_size(hist), sizeof(*out->history));
			if (!out->history)
				rc = nomem(err, what);
			size_t i;
			json_t *h;
			json_array_foreach(hist, i, h) {
				if (rc != RS_OK)
					break;
				char kp[KP_MAX];
				snprintf(kp, sizeof(kp), "history[%zu]", i);
				if (!json_is_object(h)) {
					rc = bad(err, what, kp, "expected an object, got %s", jsonload_type_name(h));
					break;
				}
				struct imagejson_history *e = &out->history[i];
				out->history_count = i + 1;
				rc = opt_string(&e->created, h, "created", kp, what, err);
				if (rc == RS_OK)
					rc = opt_string(&e->created_by, h, "created_by", kp, what, err);
				if (rc == RS_OK)
					rc = opt_string(&e->author, h, "author", kp, what, err);
				if (rc == RS_OK)
					rc = opt_string(&e->comment, h, "comment", kp, what, err);
				json_t *el = json_object_get(h, "empty_layer");
				if (rc == RS_OK && el && !json_is_null(el)) {
					if (!json_is_boolean(el)) {
						char ek[KP_MAX];
						kp_join(ek, kp, "empty_layer");
						rc = bad(err, what, ek, "expected a boolean, got %s", jsonload_type_name(el));
					} else
						e->empty_layer = json_is_true(el);
				}
			}
		}
	}
	json_decref(root);
	if (rc != RS_OK)
		imagejson_config_dispose(out);
	return rc;
}

static enum rs_code str_array(char ***out, size_t *n, const json_t *arr, const char *kp, const char *what,
			      struct rs_err *err)
{
	*out = NULL;
	*n = 0;
	if (!arr || json_is_null(arr))
		return RS_OK;
	if (!json_is_array(arr))
		return bad(err, what, kp, "expected an array of strings, got %s", jsonload_type_name(arr));
	if (json_array_size(arr) == 0)
		return RS_OK;
	*out = calloc(json_array_size(arr), sizeof(char *));
	if (!*out)
		return nomem(err, what);
	size_t i;
	json_t *v;
	json_array_foreach((json_t *)arr, i, v) {
		if (!json_is_string(v)) {
			char k[KP_MAX];
			snprintf(k, sizeof(k), "%s[%zu]", kp, i);
			return bad(err, what, k, "expected a string, got %s", jsonload_type_name(v));
		}
		(*out)[i] = dupstr(json_string_value(v));
		*n = i + 1;
		if (!(*out)[i])
			return nomem(err, what);
	}
	return RS_OK;
}

enum rs_code imagejson_parse_archive(struct imagejson_archive *out, const char *buf, size_t len,
				     const char *what, struct rs_err *err)
{
	memset(out, 0, sizeof(*out));
	json_error_t jerr;
	json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return rs_err_set(err, RS_BAD_INPUT, "%s: invalid JSON at line %d column %d: %s", what, jerr.line,
				  jerr.column, jerr.text);
	enum rs_code rc = RS_OK;
	if (!json_is_array(root) || json_array_size(root) == 0)
		rc = bad(err, what, NULL, "expected a non-empty array of images, got %s", jsonload_type_name(root));
	else if (json_array_size(root) > RS_LIMIT_INDEX_MANIFESTS_MAX)
		rc = bad(err, what, NULL, "%zu images, limit is %u (RS_LIMIT_INDEX_MANIFESTS_MAX)",
			 json_array_size(root), (unsigned)RS_LIMIT_INDEX_MANIFESTS_MAX);
	if (rc == RS_OK) {
		out->images = calloc(json_array_size(root), sizeof(*out->images));
		if (!out->images)
			rc = nomem(err, what);
	}
	size_t i;
	json_t *im;
	json_array_foreach(root, i, im) {
		if (rc != RS_OK)
			break;
		char kp[KP_MAX], sub[KP_MAX];
		snprintf(kp, sizeof(kp), "[%zu]", i);
		struct imagejson_archive_image *a = &out->images[i];
		out->image_count = i + 1;
		if (!json_is_object(im)) {
			rc = bad(err, what, kp, "expected an object, got %s", jsonload_type_name(im));
			break;
		}
		rc = req_string(&a->config, im, "Config", kp, what, err);
		if (rc != RS_OK)
			break;
		json_t *layers = json_object_get(im, "Layers");
		kp_join(sub, kp, "Layers");
		if (!json_is_array(layers)) {
			rc = bad(err, what, sub, "expected an array, got %s", jsonload_type_name(layers));
			break;
		}
		if (json_array_size(layers) > RS_LIMIT_IMAGE_LAYERS_MAX) {
			rc = bad(err, what, sub, "%zu layers, limit is %u (RS_LIMIT_IMAGE_LAYERS_MAX)",
				 json_array_size(layers), (unsigned)RS_LIMIT_IMAGE_LAYERS_MAX);
			break;
		}
		rc = str_array(&a->layers, &a->layer_count, layers, sub, what, err);
		if (rc != RS_OK)
			break;
		kp_join(sub, kp, "RepoTags");
		rc = str_array(&a->repo_tags, &a->repo_tag_count, json_object_get(im, "RepoTags"), sub, what,
			       err);
	}
	json_decref(root);
	if (rc != RS_OK)
		imagejson_archive_dispose(out);
	return rc;
}

/* ---- writing ----------------------------------------------------------- */

static int kv_cmp(const void *a, const void *b)
{
	return strcmp(((const struct imagejson_kv *)a)->key, ((const struct imagejson_kv *)b)->key);
}

/* A new object of the annotations sorted by key, or NULL on allocation
 * failure. *ok is cleared on failure. */
static json_t *annotations_json(const struct imagejson_kv *kv, size_t n, bool *ok)
{
	json_t *o = json_object();
	struct imagejson_kv *s = n ? malloc(n * sizeof(*s)) : NULL;
	if (!o || (n && !s)) {
		json_decref(o);
		free(s);
		*ok = false;
		return NULL;
	}
	if (n)
		memcpy(s, kv, n * sizeof(*s));
	qsort(s, n, sizeof(*s), kv_cmp);
	for (size_t i = 0; i < n; i++)
		if (json_object_set_new(o, s[i].key, json_string(s[i].value)) != 0)
			*ok = false;
	free(s);
	return o;
}

static json_t *descriptor_json(const struct imagejson_descriptor *d, bool *ok)
{
	json_t *o = json_object();
	if (!o) {
		*ok = false;
		return NULL;
	}
	if (d->media_type && json_object_set_new(o, "mediaType", json_string(d->media_type)) != 0)
		*ok = false;
	if (json_object_set_new(o, "digest", json_string(d->digest)) != 0)
		*ok = false;
	if (json_object_set_new(o, "size", json_integer((json_int_t)d->size)) != 0)
		*ok = false;
	if (d->os || d->architecture) {
		json_t *p = json_object();
		if (!p || json_object_set_new(o, "platform", p) != 0)
			*ok = false;
		else {
			if (d->architecture && json_object_set_new(p, "architecture", json_string(d->architecture)))
				*ok = false;
			if (d->os && json_object_set_new(p, "os", json_string(d->os)))
				*ok = false;
			if (d->variant && json_object_set_new(p, "variant", json_string(d->variant)))
				*ok = false;
		}
	}
	if (d->artifact_type && json_object_set_new(o, "artifactType", json_string(d->artifact_type)))
		*ok = false;
	if (d->annotation_count &&
	    json_object_set_new(o, "annotations", annotations_json(d->annotations, d->annotation_count, ok)))
		*ok = false;
	return o;
}

static enum rs_code dump(char **out, size_t *len_out, json_t *root, bool ok, struct rs_err *err)
{
	*out = NULL;
	*len_out = 0;
	char *s = ok && root ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(root);
	if (!s)
		return rs_err_set(err, RS_NOMEM, "out of memory serialising JSON");
	*len_out = strlen(s);
	*out = s;
	return RS_OK;
}

enum rs_code imagejson_write_manifest(char **out, size_t *len_out, const struct imagejson_manifest *m,
				      struct rs_err *err)
{
	bool ok = true;
	json_t *root = json_object();
	json_t *layers = json_array();
	if (!root || !layers)
		ok = false;
	if (ok && json_object_set_new(root, "schemaVersion", json_integer(2)))
		ok = false;
	if (ok && m->media_type && json_object_set_new(root, "mediaType", json_string(m->media_type)))
		ok = false;
	if (ok && m->artifact_type && json_object_set_new(root, "artifactType", json_string(m->artifact_type)))
		ok = false;
	if (ok && json_object_set_new(root, "config", descriptor_json(&m->config, &ok)))
		ok = false;
	for (size_t i = 0; ok && i < m->layer_count; i++)
		if (json_array_append_new(layers, descriptor_json(&m->layers[i], &ok)))
			ok = false;
	if (ok && json_object_set(root, "layers", layers))
		ok = false;
	if (ok && m->subject && json_object_set_new(root, "subject", descriptor_json(m->subject, &ok)))
		ok = false;
	if (ok && m->annotation_count &&
	    json_object_set_new(root, "annotations", annotations_json(m->annotations, m->annotation_count, &ok)))
		ok = false;
	json_decref(layers);
	return dump(out, len_out, root, ok, err);
}

enum rs_code imagejson_write_index(char **out, size_t *len_out, const struct imagejson_index *idx,
				   struct rs_err *err)
{
	bool ok = true;
	json_t *root = json_object();
	json_t *ms = json_array();
	if (!root || !ms)
		ok = false;
	if (ok && json_object_set_new(root, "schemaVersion", json_integer(2)))
		ok = false;
	if (ok && idx->media_type && json_object_set_new(root, "mediaType", json_string(idx->media_type)))
		ok = false;
	if (ok && idx->artifact_type && json_object_set_new(root, "artifactType", json_string(idx->artifact_type)))
		ok = false;
	for (size_t i = 0; ok && i < idx->manifest_count; i++)
		if (json_array_append_new(ms, descriptor_json(&idx->manifests[i], &ok)))
			ok = false;
	if (ok && json_object_set(root, "manifests", ms))
		ok = false;
	if (ok && idx->subject && json_object_set_new(root, "subject", descriptor_json(idx->subject, &ok)))
		ok = false;
	if (ok && idx->annotation_count &&
	    json_object_set_new(root, "annotations", annotations_json(idx->annotations, idx->annotation_count, &ok)))
		ok = false;
	json_decref(ms);
	return dump(out, len_out, root, ok, err);
}

enum rs_code imagejson_rewrite_config(char **out, size_t *len_out, const char *in, size_t in_len,
				      char *const *diff_ids, size_t diff_id_count,
				      const struct imagejson_history *hist, size_t history_count,
				      const char *what, struct rs_err *err)
{
	*out = NULL;
	*len_out = 0;
	json_t *root;
	enum rs_code rc = load(&root, in, in_len, what, err);
	if (rc != RS_OK)
		return rc;
	bool ok = true;
	json_t *rootfs = json_object();
	json_t *ids = json_array();
	if (!rootfs || !ids)
		ok = false;
	for (size_t i = 0; ok && i < diff_id_count; i++)
		if (json_array_append_new(ids, json_string(diff_ids[i])))
			ok = false;
	if (ok && json_object_set_new(rootfs, "type", json_string("layers")))
		ok = false;
	if (ok && json_object_set(rootfs, "diff_ids", ids))
		ok = false;
	if (ok && json_object_set(root, "rootfs", rootfs))
		ok = false;
	json_decref(ids);
	json_decref(rootfs);
	if (ok && (history_count > 0 || json_object_get(root, "history"))) {
		json_t *h = json_array();
		if (!h)
			ok = false;
		for (size_t i = 0; ok && i < history_count; i++) {
			json_t *e = json_object();
			if (!e || json_array_append_new(h, e)) {
				ok = false;
				break;
			}
			const struct imagejson_history *x = &hist[i];
			if (x->created && json_object_set_new(e, "created", json_string(x->created)))
				ok = false;
			if (x->created_by && json_object_set_new(e, "created_by", json_string(x->created_by)))
				ok = false;
			if (x->author && json_object_set_new(e, "author", json_string(x->author)))
				ok = false;
			if (x->comment && json_object_set_new(e, "comment", json_string(x->comment)))
				ok = false;
			if (x->empty_layer && json_object_set_new(e, "empty_layer", json_true()))
				ok = false;
		}
		if (ok && json_object_set(root, "history", h))
			ok = false;
		json_decref(h);
	}
	return dump(out, len_out, root, ok, err);
}

/* ---- lifecycle ---------------------------------------------------------- */

void imagejson_kv_free(struct imagejson_kv *kv, size_t n)
{
	if (!kv)
		return;
	for (size_t i = 0; i < n; i++) {
		free(kv[i].key);
		free(kv[i].value);
	}
	free(kv);
}

void imagejson_descriptor_dispose(struct imagejson_descriptor *d)
{
	if (!d)
		return;
	free(d->media_type);
	free(d->digest);
	free(d->os);
	free(d->architecture);
	free(d->variant);
	free(d->artifact_type);
	imagejson_kv_free(d->annotations, d->annotation_count);
	memset(d, 0, sizeof(*d));
}

void imagejson_manifest_dispose(struct imagejson_manifest *m)
{
	if (!m)
		return;
	free(m->media_type);
	imagejson_descriptor_dispose(&m->config);
	for (size_t i = 0; i < m->layer_count; i++)
		imagejson_descriptor_dispose(&m->layers[i]);
	free(m->layers);
	imagejson_kv_free(m->annotations, m->annotation_count);
	free(m->artifact_type);
	imagejson_descriptor_dispose(m->subject);
	free(m->subject);
	memset(m, 0, sizeof(*m));
}

void imagejson_index_dispose(struct imagejson_index *idx)
{
	if (!idx)
		return;
	free(idx->media_type);
	for (size_t i = 0; i < idx->manifest_count; i++)
		imagejson_descriptor_dispose(&idx->manifests[i]);
	free(idx->manifests);
	imagejson_kv_free(idx->annotations, idx->annotation_count);
	free(idx->artifact_type);
	imagejson_descriptor_dispose(idx->subject);
	free(idx->subject);
	memset(idx, 0, sizeof(*idx));
}

void imagejson_config_dispose(struct imagejson_config *c)
{
	if (!c)
		return;
	free(c->os);
	free(c->architecture);
	free(c->variant);
	free(c->created);
	for (size_t i = 0; i < c->diff_id_count; i++)
		free(c->diff_ids[i]);
	free(c->diff_ids);
	for (size_t i = 0; i < c->history_count; i++) {
		free(c->history[i].created);
		free(c->history[i].created_by);
		free(c->history[i].author);
		free(c->history[i].comment);
	}
	free(c->history);
	memset(c, 0, sizeof(*c));
}

void imagejson_archive_dispose(struct imagejson_archive *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < a->image_count; i++) {
		struct imagejson_archive_image *im = &a->images[i];
		free(im->config);
		for (size_t k = 0; k < im->layer_count; k++)
			free(im->layers[k]);
		free(im->layers);
		for (size_t k = 0; k < im->repo_tag_count; k++)
			free(im->repo_tags[k]);
		free(im->repo_tags);
	}
	free(a->images);
	memset(a, 0, sizeof(*a));
}

enum rs_code imagejson_descriptor_copy(struct imagejson_descriptor *out,
				       const struct imagejson_descriptor *in, struct rs_err *err)
{
	memset(out, 0, sizeof(*out));
	out->size = in->size;
	bool ok = true;
#define COPY(f)                                  \
	do {                                     \
		if (in->f) {                     \
			out->f = dupstr(in->f);  \
			if (!out->f)             \
				ok = false;      \
		}                                \
	} while (0)
	COPY(media_type);
	COPY(digest);
	COPY(os);
	COPY(architecture);
	COPY(variant);
	COPY(artifact_type);
#undef COPY
	for (size_t i = 0; ok && i < in->annotation_count; i++)
		if (imagejson_kv_set(&out->annotations, &out->annotation_count, in->annotations[i].key,
				     in->annotations[i].value, err) != RS_OK)
			ok = false;
	if (!ok) {
		imagejson_descriptor_dispose(out);
		return rs_err_set(err, RS_NOMEM, "out of memory copying a descriptor");
	}
	return RS_OK;
}

enum rs_code imagejson_kv_set(struct imagejson_kv **kv, size_t *n, const char *key, const char *value,
			      struct rs_err *err)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp((*kv)[i].key, key) == 0) {
			char *v = dupstr(value);
			if (!v)
				return rs_err_set(err, RS_NOMEM, "out of memory setting annotation %s", key);
			free((*kv)[i].value);
			(*kv)[i].value = v;
			return RS_OK;
		}
	struct imagejson_kv *nk = realloc(*kv, (*n + 1) * sizeof(*nk));
	if (!nk)
		return rs_err_set(err, RS_NOMEM, "out of memory setting annotation %s", key);
	*kv = nk;
	nk[*n].key = dupstr(key);
	nk[*n].value = dupstr(value);
	if (!nk[*n].key || !nk[*n].value) {
		free(nk[*n].key);
		free(nk[*n].value);
		return rs_err_set(err, RS_NOMEM, "out of memory setting annotation %s", key);
	}
	(*n)++;
	return RS_OK;
}

const char *imagejson_kv_get(const struct imagejson_kv *kv, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(kv[i].key, key) == 0)
			return kv[i].value;
	return NULL;
}
