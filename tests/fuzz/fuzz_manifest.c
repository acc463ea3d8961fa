/* fuzz_manifest: libFuzzer target for the image documents and policies:
 * imagejson_sniff / parse_manifest / parse_index / parse_config /
 * parse_archive, image validation, the deterministic writers (parse ->
 * write -> parse must succeed and write the same bytes again), the config
 * rewrite, the image walk (config/imagewalk.c, over an image whose every
 * document is the input itself, two levels deep), and policy_load_buffer. Any crash, leak or sanitizer report is a
 * bug; every input must end in RS_OK or a clean error. */
#include "image.h"
#include "imagejson.h"
#include "imagewalk.h"
#include "policy.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void roundtrip_manifest(const struct imagejson_manifest *m)
{
	char *a = NULL, *b = NULL;
	size_t la, lb;
	struct rs_err err;
	if (imagejson_write_manifest(&a, &la, m, &err) != RS_OK)
		return;
	struct imagejson_manifest m2;
	if (imagejson_parse_manifest(&m2, a, la, "fuzz", &err) != RS_OK)
		abort(); /* what we write must parse */
	if (imagejson_write_manifest(&b, &lb, &m2, &err) == RS_OK && (la != lb || memcmp(a, b, la) != 0))
		abort(); /* and be a fixed point */
	free(b);
	free(a);
	imagejson_manifest_dispose(&m2);
}

struct input {
	const uint8_t *data;
	size_t size;
};

/* Every document of the walked image is the input again. */
static enum rs_code walk_load(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len, char **mt,
			      struct rs_err *err)
{
	(void)n;
	const struct input *in = ctx;
	*mt = NULL;
	if (!(*buf = malloc(in->size + 1)))
		return rs_err_set(err, RS_NOMEM, "out of memory");
	memcpy(*buf, in->data, in->size);
	(*buf)[in->size] = '\0';
	*len = in->size;
	return RS_OK;
}

/* The first four entries of each index are walked best effort, the rest skipped. */
static enum rs_code walk_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
			       enum imagewalk_step *step, struct rs_err *err)
{
	(void)ctx;
	(void)err;
	if (ev == IMAGEWALK_REF && n->kind == IMAGEWALK_ENTRY)
		*step = n->pos < 4 ? IMAGEWALK_BEST_EFFORT : IMAGEWALK_SKIP;
	if (n->parent && n->parent->depth + 1 != n->depth)
		abort(); /* a node is one deeper than its document */
	return RS_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	struct rs_err err;
	enum imagejson_kind kind;
	(void)imagejson_sniff(&kind, buf, size, "fuzz", &err); /* any result is fine */

	struct imagejson_manifest m;
	if (imagejson_parse_manifest(&m, buf, size, "fuzz", &err) == RS_OK) {
		(void)image_validate_manifest(&m, "fuzz", &err); /* any result is fine */
		roundtrip_manifest(&m);
		imagejson_manifest_dispose(&m);
	}
	struct imagejson_index idx;
	if (imagejson_parse_index(&idx, buf, size, "fuzz", &err) == RS_OK) {
		(void)image_validate_index(&idx, "fuzz", &err); /* any result is fine */
		char *out;
		size_t len;
		if (imagejson_write_index(&out, &len, &idx, &err) == RS_OK)
			free(out);
		imagejson_index_dispose(&idx);
	}
	struct input in = {data, size};
	const struct imagewalk w = {.load = walk_load, .visit = walk_visit, .ctx = &in, .max_depth = 2};
	(void)imagewalk_run(&w, "sha256:fuzz", &err); /* any result is fine */
	struct imagejson_config c;
	if (imagejson_parse_config(&c, buf, size, "fuzz", &err) == RS_OK) {
		char *out;
		size_t len;
		if (imagejson_rewrite_config(&out, &len, buf, size, c.diff_ids, c.diff_id_count, c.history,
					     c.history_count, "fuzz", &err) == RS_OK)
			free(out);
		imagejson_config_dispose(&c);
	}
	struct imagejson_archive a;
	if (imagejson_parse_archive(&a, buf, size, "fuzz", &err) == RS_OK)
		imagejson_archive_dispose(&a);
	struct policy p;
	if (policy_load_buffer(&p, "fuzz", buf, size, &err) == RS_OK) {
		char *canon;
		size_t len;
		if (policy_canonical(&canon, &len, &p, &err) == RS_OK)
			free(canon);
		policy_dispose(&p);
	}
	return 0;
}
