/* fuzz_tar_read: libFuzzer target for the streaming tar reader. The input is
 * a tar stream; it is parsed twice, once in one write and once split at
 * points derived from the input, and both runs must report the same events
 * (entries, raw header bytes, data), the same code and the same message.
 * Reported entries must satisfy the reader's promises: raw headers in whole
 * blocks ending where the data starts, normalised relative paths without
 * "..", hard-link targets likewise. Kept data is re-emitted through the tar
 * writer helpers so they run on hostile metadata too. */
#include "digest.h"
#include "stream.h"
#include "tar_read.h"
#include "tar_write.h"

#include <stdlib.h>
#include <string.h>

struct ctx {
	struct digest_ctx *events;
	struct stream_sink *out;
	uint64_t n;
	uint64_t data_bytes, pad_bytes; /* chunking differs per split; totals do not */
};

static void check_path(const char *p)
{
	if (p[0] == '/' || strcmp(p, "..") == 0 || strncmp(p, "../", 3) == 0 ||
	    strstr(p, "/../") || (strlen(p) >= 3 && strcmp(p + strlen(p) - 3, "/..") == 0))
		abort();
}

static enum rs_code on_entry(void *vc, const struct tar_entry *e, const void *raw, size_t raw_len,
			     enum tar_verdict *verdict, struct rs_err *err)
{
	struct ctx *c = vc;
	if (raw_len % TAR_BLOCK || e->data_offset != e->header_offset + raw_len)
		abort();
	if (e->type != TAR_TYPE_GLOBAL) {
		check_path(e->path);
		if (e->type == TAR_TYPE_HARDLINK)
			check_path(e->linkpath);
	}
	digest_update(c->events, e->path, strlen(e->path) + 1);
	digest_update(c->events, e->linkpath, strlen(e->linkpath) + 1);
	digest_update(c->events, e->uname, strlen(e->uname) + 1);
	digest_update(c->events, e->gname, strlen(e->gname) + 1);
	if (e->mtime_pax)
		digest_update(c->events, e->mtime_pax, strlen(e->mtime_pax) + 1);
	uint64_t nums[] = { (uint64_t)e->type, e->mode, e->uid, e->gid, e->size, (uint64_t)e->mtime,
			    e->devmajor, e->devminor, e->sparse, e->real_size, e->header_offset,
			    e->index, e->xattr_count };
	digest_update(c->events, nums, sizeof(nums));
	for (size_t i = 0; i < e->xattr_count; i++) {
		digest_update(c->events, e->xattrs[i].name, strlen(e->xattrs[i].name) + 1);
		digest_update(c->events, e->xattrs[i].value, e->xattrs[i].value_len);
	}
	digest_update(c->events, raw, raw_len);
	*verdict = (c->n++ % 3 == 2) ? TAR_DROP : TAR_KEEP;
	/* exercise the writer on whatever metadata the reader accepted */
	if (c->out && e->type != TAR_TYPE_GLOBAL && !e->sparse) {
		struct rs_err werr = { 0 };
		enum rs_code rc = tar_write_header(c->out, e, &werr);
		if (rc != RS_OK && rc != RS_BAD_INPUT && rc != RS_TOO_LARGE)
			abort();
	}
	(void)err;
	return RS_OK;
}

static enum rs_code on_data(void *vc, const struct tar_entry *e, const void *buf, size_t len,
			    bool padding, struct rs_err *err)
{
	(void)e;
	(void)err;
	struct ctx *c = vc;
	if (padding)
		c->pad_bytes += len;
	else
		c->data_bytes += len;
	digest_update(c->events, buf, len);
	return RS_OK;
}

static const struct tar_read_cbs cbs = { on_entry, on_data, NULL };

struct result {
	enum rs_code rc;
	struct rs_err err;
	char events[DIGEST_STR_SIZE];
	struct tar_read_stats st;
	uint64_t data_bytes, pad_bytes;
};

static void run(const uint8_t *data, size_t size, size_t step_seed, struct result *r)
{
	struct ctx c = { 0 };
	c.events = digest_new();
	struct stream_sink *tr = NULL, *out = NULL;
	memset(r, 0, sizeof(*r));
	if (!c.events || stream_count_sink_new(&out, NULL, &r->err) ||
	    tar_read_new(&tr, &cbs, &c, &r->err))
		abort();
	c.out = step_seed ? out : NULL;
	size_t off = 0, k = step_seed;
	while (off < size && !r->rc) {
		size_t n = size - off;
		if (step_seed) {
			k = k * 1103515245u + 12345u;
			n = 1 + (k >> 16) % 1100;
			if (n > size - off)
				n = size - off;
		}
		r->rc = stream_write(tr, data + off, n, &r->err);
		off += n;
	}
	if (!r->rc)
		r->rc = stream_finish(tr, &r->err);
	tar_read_stats(tr, &r->st);
	r->data_bytes = c.data_bytes;
	r->pad_bytes = c.pad_bytes;
	digest_final(c.events, r->events);
	stream_free(tr);
	stream_free(out);
	digest_free(c.events);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct result a, b;
	run(data, size, 0, &a);
	run(data, size, size ? data[0] + 1u : 1u, &b);
	if (a.rc != b.rc || strcmp(a.err.msg, b.err.msg) != 0 || strcmp(a.events, b.events) != 0 ||
	    a.st.entries != b.st.entries || a.data_bytes != b.data_bytes ||
	    a.pad_bytes != b.pad_bytes || a.st.kept_bytes != b.st.kept_bytes)
		abort();
	if (a.rc != RS_OK && a.err.msg[0] == 0)
		abort(); /* every failure carries a message */
	return 0;
}
