/* fuzz_manifest: libFuzzer target for the image documents and policies:
 * imagejson_sniff / parse_manifest / parse_index / parse_config /
 * parse_archive, image validation, the deterministic writers (parse ->
 * write -> parse must succeed and write the same bytes again), the config
 * rewrite, and policy_load_buffer. Any crash, leak or sanitizer report is a
 * bug; every input must end in RS_OK or a clean error. */
#include "image.h"
#include "imagejson.h"
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
