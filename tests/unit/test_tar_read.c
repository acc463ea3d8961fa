/* test_tar_read: the streaming tar reader and the tar writer helpers.
 * Archives come from the seeded generator tests/fixtures/targen in every
 * header flavour (ustar, pax with xattrs and sub-second times, GNU long
 * names and links, base-256, v7, old GNU sparse, pax sparse 0.1 and 1.0,
 * global headers). Each is parsed in seeded random splits: the events and
 * a byte-for-byte copy must be identical for every split and equal to the
 * input. Bad archives must fail with the exact message and offset. */
#include "tar_read.h"
#include "tar_sparse.h"
#include "tar_write.h"
#include "targen.h"

#include "digest.h"
#include "fixture.h"
#include "rs_limits.h"

#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a test consumer records. */
struct rec_entry {
	char path[1024];
	char link[1024];
	char type;
	uint32_t mode;
	uint64_t uid, gid, size, real_size, header_offset, data_offset, raw_len;
	int64_t mtime;
	char mtime_pax[64];
	char uname[64];
	uint32_t devmajor, devminor;
	bool sparse;
	size_t xattr_count;
	char xattr0[64];
	char xval0[64];
	size_t xval0_len;
	uint64_t data_seen, pad_seen;
};

struct consumer {
	struct stream_sink *copy; /* kept entries are copied here */
	struct digest_ctx *events;
	struct rec_entry *ents;
	size_t n, alloc;
	unsigned drop_every; /* drop entries whose index % drop_every == 1 */
	int fail_at;         /* return an error from on_entry at this index (-1 none) */
	bool ended;
};

static enum rs_code on_entry(void *ctx, const struct tar_entry *e, const void *raw, size_t raw_len,
			     enum tar_verdict *verdict, struct rs_err *err)
{
	struct consumer *c = ctx;
	if (c->fail_at >= 0 && e->index == (uint64_t)c->fail_at)
		return rs_err_set(err, RS_POLICY, "consumer refused '%s'", e->path);
	ck_assert_uint_eq(raw_len % TAR_BLOCK, 0);
	ck_assert_uint_eq(e->data_offset, e->header_offset + raw_len);
	if (c->n == c->alloc) {
		c->alloc = c->alloc ? 2 * c->alloc : 64;
		c->ents = realloc(c->ents, c->alloc * sizeof(*c->ents));
		ck_assert_ptr_nonnull(c->ents);
	}
	struct rec_entry *r = &c->ents[c->n++];
	memset(r, 0, sizeof(*r));
	snprintf(r->path, sizeof(r->path), "%s", e->path);
	snprintf(r->link, sizeof(r->link), "%s", e->linkpath);
	snprintf(r->uname, sizeof(r->uname), "%s", e->uname);
	if (e->mtime_pax)
		snprintf(r->mtime_pax, sizeof(r->mtime_pax), "%s", e->mtime_pax);
	r->type = e->type;
	r->mode = e->mode;
	r->uid = e->uid;
	r->gid = e->gid;
	r->size = e->size;
	r->real_size = e->real_size;
	r->header_offset = e->header_offset;
	r->data_offset = e->data_offset;
	r->raw_len = raw_len;
	r->mtime = e->mtime;
	r->devmajor = e->devmajor;
	r->devminor = e->devminor;
	r->sparse = e->sparse;
	r->xattr_count = e->xattr_count;
	if (e->xattr_count) {
		snprintf(r->xattr0, sizeof(r->xattr0), "%s", e->xattrs[0].name);
		r->xval0_len = e->xattrs[0].value_len < 63 ? e->xattrs[0].value_len : 63;
		memcpy(r->xval0, e->xattrs[0].value, r->xval0_len);
	}
	char line[3000];
	int n = snprintf(line, sizeof(line), "%s|%s|%c|%o|%" PRIu64 "|%" PRIu64 "|%" PRIu64 "|%" PRId64
			 "|%s|%s|%s|%u|%u|%d|%" PRIu64 "|%zu|%" PRIu64 "\n",
			 e->path, e->linkpath, e->type, e->mode, e->uid, e->gid, e->size, e->mtime,
			 e->mtime_pax ? e->mtime_pax : "-", e->uname, e->gname, e->devmajor,
			 e->devminor, e->sparse, e->real_size, e->xattr_count, e->header_offset);
	digest_update(c->events, line, (size_t)n);
	for (size_t i = 0; i < e->xattr_count; i++) {
		digest_update(c->events, e->xattrs[i].name, strlen(e->xattrs[i].name) + 1);
		digest_update(c->events, e->xattrs[i].value, e->xattrs[i].value_len);
	}
	digest_update(c->events, raw, raw_len);
	if (c->drop_every && e->index % c->drop_every == 1) {
		*verdict = TAR_DROP;
		return RS_OK;
	}
	return c->copy ? stream_write(c->copy, raw, raw_len, err) : RS_OK;
}

static bool all_zero_or_fail(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

static enum rs_code on_data(void *ctx, const struct tar_entry *e, const void *buf, size_t len,
			    bool padding, struct rs_err *err)
{
	(void)e;
	struct consumer *c = ctx;
	struct rec_entry *r = &c->ents[c->n - 1];
	if (padding) {
		ck_assert(all_zero_or_fail(buf, len));
		r->pad_seen += len;
	} else {
		ck_assert_uint_eq(r->pad_seen, 0);
		r->data_seen += len;
	}
	digest_update(c->events, buf, len);
	return c->copy ? stream_write(c->copy, buf, len, err) : RS_OK;
}

static enum rs_code on_end_entry(void *ctx, const struct tar_entry *e, enum tar_verdict v,
				 struct rs_err *err)
{
	(void)err;
	struct consumer *c = ctx;
	struct rec_entry *r = &c->ents[c->n - 1];
	if (v == TAR_KEEP) {
		ck_assert_uint_eq(r->data_seen, e->size);
		ck_assert_uint_eq(r->pad_seen, tar_padding(e->size));
	} else {
		ck_assert_uint_eq(r->data_seen, 0);
	}
	digest_update(c->events, "|end\n", 5);
	return RS_OK;
}

static const struct tar_read_cbs cbs = { on_entry, on_data, on_end_entry };

struct run {
	enum rs_code rc;
	struct rs_err err;
	char events[DIGEST_STR_SIZE];
	uint8_t *copy;
	size_t copy_len;
	struct tar_read_stats st;
	struct rec_entry *ents;
	size_t n;
};

static void run_free(struct run *r)
{
	free(r->copy);
	free(r->ents);
}

/* Parse data split by seed; kept entries copied (then end blocks). */
static struct run parse(const uint8_t *data, size_t len, uint64_t seed, size_t max_chunk,
			unsigned drop_every, int fail_at)
{
	struct run out = { 0 };
	struct consumer c = { 0 };
	c.drop_every = drop_every;
	c.fail_at = fail_at;
	c.events = digest_new();
	ck_assert_int_eq(stream_mem_sink_new(&c.copy, 1u << 30, "copy", &out.err), RS_OK);
	struct stream_sink *tr;
	ck_assert_int_eq(tar_read_new(&tr, &cbs, &c, &out.err), RS_OK);
	struct targen_splitter sp;
	targen_splitter_init(&sp, seed, max_chunk);
	size_t off = 0;
	out.rc = RS_OK;
	while (off < len && !out.rc) {
		size_t n = targen_splitter_next(&sp);
		if (n > len - off)
			n = len - off;
		out.rc = stream_write(tr, n ? data + off : NULL, n, &out.err);
		off += n;
	}
	if (!out.rc)
		out.rc = stream_finish(tr, &out.err);
	if (!out.rc)
		out.rc = tar_write_end(c.copy, &out.err);
	tar_read_stats(tr, &out.st);
	digest_final(c.events, out.events);
	out.copy = stream_mem_sink_take(c.copy, &out.copy_len);
	out.ents = c.ents;
	out.n = c.n;
	stream_free(tr);
	stream_free(c.copy);
	digest_free(c.events);
	return out;
}

static void check_against_written(const struct targen *g, const struct run *r)
{
	ck_assert_uint_eq(r->n, targen_count(g));
	for (size_t i = 0; i < r->n; i++) {
		const struct targen_written *w = targen_entry_at(g, i);
		const struct rec_entry *e = &r->ents[i];
		ck_assert_msg(strcmp(e->path, w->path) == 0, "entry %zu flavour %d: '%s' != '%s'", i,
			      w->flavour, e->path, w->path);
		ck_assert_str_eq(e->link, w->linkpath);
		ck_assert_msg(e->type == w->type, "entry %zu '%s' flavour %d: type %c != %c", i,
			      e->path, w->flavour, e->type, w->type);
		ck_assert_uint_eq(e->header_offset, w->header_offset);
		ck_assert_uint_eq(e->raw_len, w->raw_len);
		ck_assert_uint_eq(e->data_offset, w->data_offset);
		if (w->type == 'g')
			continue;
		ck_assert_uint_eq(e->size, w->stored_size);
		ck_assert_uint_eq(e->real_size, w->real_size);
		ck_assert_int_eq(e->sparse, w->sparse);
		ck_assert_uint_eq(e->mode, w->mode);
		ck_assert_uint_eq(e->uid, w->uid);
		ck_assert_uint_eq(e->gid, w->gid);
		ck_assert_int_eq(e->mtime, w->mtime);
		ck_assert_uint_eq(e->xattr_count, w->xattr_count);
	}
}

static uint8_t *copy_of(struct targen *g, size_t *len)
{
	const uint8_t *d = targen_data(g, len);
	uint8_t *c = malloc(*len ? *len : 1);
	memcpy(c, d, *len);
	return c;
}

/* ---- round trips ------------------------------------------------------ */

START_TEST(round_trips_each_flavour_for_every_split)
{
	for (unsigned f = 0; f <= TARGEN_FLAVOUR_COUNT; f++) {
		unsigned mask = f == TARGEN_FLAVOUR_COUNT ? TARGEN_ALL_FLAVOURS : TARGEN_FLAVOUR_BIT(f);
		struct targen *g = targen_new(100 + f);
		if (f == TARGEN_FLAVOUR_COUNT)
			(void)targen_add_global(g, NULL);
		targen_add_random(g, 60, mask, 3000);
		targen_end(g, 2, false);
		size_t len;
		const uint8_t *data = targen_data(g, &len);
		struct run ref = parse(data, len, 1, 1u << 20, 0, -1);
		ck_assert_msg(ref.rc == RS_OK, "flavour %u: %s", f, ref.err.msg);
		check_against_written(g, &ref);
		ck_assert_uint_eq(ref.copy_len, len);
		ck_assert_msg(memcmp(ref.copy, data, len) == 0, "flavour %u: copy differs", f);
		ck_assert_uint_eq(ref.st.end_blocks, 2);
		ck_assert_uint_eq(ref.st.bytes, len);
		ck_assert_uint_eq(ref.st.kept_bytes, len - 1024);
		for (uint64_t seed = 2; seed <= 8; seed++) {
			struct run r = parse(data, len, seed, seed < 5 ? seed * 3 : 4000, 0, -1);
			ck_assert_msg(r.rc == RS_OK, "flavour %u seed %d: %s", f, (int)seed, r.err.msg);
			ck_assert_str_eq(r.events, ref.events);
			ck_assert_uint_eq(r.copy_len, len);
			ck_assert_int_eq(memcmp(r.copy, data, len), 0);
			run_free(&r);
		}
		run_free(&ref);
		targen_free(g);
	}
}
END_TEST

START_TEST(dropped_entries_vanish_whole)
{
	struct targen *g = targen_new(7);
	targen_add_random(g, 80, TARGEN_ALL_FLAVOURS, 5000);
	targen_end(g, 2, true);
	size_t len;
	const uint8_t *data = targen_data(g, &len);
	/* expected: the bytes of every entry whose index % 3 != 1, then end blocks */
	uint8_t *want = malloc(len + 1024);
	size_t wl = 0;
	for (size_t i = 0; i < targen_count(g); i++) {
		const struct targen_written *w = targen_entry_at(g, i);
		size_t end = i + 1 < targen_count(g) ? targen_entry_at(g, i + 1)->header_offset
						      : w->data_offset + w->stored_size +
								tar_padding(w->stored_size);
		if (i % 3 == 1)
			continue;
		memcpy(want + wl, data + w->header_offset, end - w->header_offset);
		wl += end - w->header_offset;
	}
	memset(want + wl, 0, 1024);
	wl += 1024;
	for (uint64_t seed = 1; seed <= 5; seed++) {
		struct run r = parse(data, len, seed, 2000 * seed, 3, -1);
		ck_assert_msg(r.rc == RS_OK, "%s", r.err.msg);
		ck_assert_uint_eq(r.copy_len, wl);
		ck_assert_int_eq(memcmp(r.copy, want, wl), 0);
		ck_assert_uint_eq(r.st.kept_bytes + r.st.dropped_bytes + r.st.trailing_bytes + 1024, len);
		ck_assert_uint_gt(r.st.trailing_bytes, 0);
		run_free(&r);
	}
	free(want);
	targen_free(g);
}
END_TEST

START_TEST(reads_pax_details_and_globals)
{
	struct targen *g = targen_new(3);
	(void)targen_add_global(g, "20 uname=globaluser\n");
	targen_add_file(g, "./etc/hosts", "x", 1);
	targen_add(g, &(struct targen_entry){
			      .path = "opt/app/bin",
			      .type = '0',
			      .size = 10,
			      .uname = "a-very-long-user-name-over-32-characters",
			      .mtime = 1700000000,
			      .mtime_pax = "1700000000.123456789",
			      .xattr_name = { "security.capability", "u" },
			      .xattr_value = { "caps", "1" },
			      .flavour = TARGEN_PAX,
		      });
	targen_add(g, &(struct targen_entry){ .path = "opt/la", .type = '0', .size = 3,
					      .xattr_name = { "user.na%3Dme" },
					      .xattr_value = { "binary" },
					      .libarchive_xattr = true,
					      .flavour = TARGEN_PAX });
	targen_add(g, &(struct targen_entry){ .path = "big/uid", .type = '0', .size = 3,
					      .uid = 5000000000ull, .gid = 7,
					      .mtime = -5, .flavour = TARGEN_BASE256 });
	targen_add(g, &(struct targen_entry){ .path = "dev/sda", .type = '4', .devmajor = 8,
					      .devminor = 1 });
	targen_add(g, &(struct targen_entry){ .path = "old/dir", .type = '5',
					      .flavour = TARGEN_V7 });
	targen_add_dir(g, "./");
	targen_end(g, 2, false);
	size_t len;
	uint8_t *data = copy_of(g, &len);
	struct run r = parse(data, len, 5, 100, 0, -1);
	ck_assert_msg(r.rc == RS_OK, "%s", r.err.msg);
	ck_assert_uint_eq(r.n, 8);
	ck_assert_int_eq(r.ents[0].type, 'g');
	ck_assert_str_eq(r.ents[0].path, "pax_global_header");
	ck_assert_uint_eq(r.ents[0].size, 0);
	ck_assert_str_eq(r.ents[1].path, "etc/hosts");
	ck_assert_str_eq(r.ents[1].uname, "globaluser");
	ck_assert_str_eq(r.ents[2].uname, "a-very-long-user-name-over-32-characters");
	ck_assert_str_eq(r.ents[2].mtime_pax, "1700000000.123456789");
	ck_assert_int_eq(r.ents[2].mtime, 1700000000);
	ck_assert_uint_eq(r.ents[2].xattr_count, 2);
	ck_assert_str_eq(r.ents[2].xattr0, "security.capability");
	ck_assert_uint_eq(r.ents[2].xval0_len, 4);
	ck_assert_int_eq(memcmp(r.ents[2].xval0, "caps", 4), 0);
	ck_assert_str_eq(r.ents[3].xattr0, "user.na=me");
	ck_assert_uint_eq(r.ents[3].xval0_len, 6);
	ck_assert_int_eq(memcmp(r.ents[3].xval0, "binary", 6), 0);
	ck_assert_uint_eq(r.ents[4].uid, 5000000000ull);
	ck_assert_uint_eq(r.ents[4].gid, 7);
	ck_assert_int_eq(r.ents[4].mtime, -5);
	ck_assert_int_eq(r.ents[5].type, '4');
	ck_assert_uint_eq(r.ents[5].devmajor, 8);
	ck_assert_uint_eq(r.ents[5].devminor, 1);
	ck_assert_int_eq(r.ents[6].type, '5');
	ck_assert_str_eq(r.ents[6].path, "old/dir");
	ck_assert_str_eq(r.ents[7].path, ".");
	run_free(&r);
	free(data);
	targen_free(g);
}
END_TEST

START_TEST(reads_long_gnu_names_and_sparse_sizes)
{
	char longname[400], longlink[400];
	memset(longname, 'n', sizeof(longname));
	memcpy(longname, "deep/", 5);
	longname[350] = 0;
	memset(longlink, 'l', sizeof(longlink));
	longlink[300] = 0;
	struct targen *g = targen_new(4);
	targen_add(g, &(struct targen_entry){ .path = longname, .type = '0', .size = 700, .flavour = TARGEN_GNU });
	targen_add(g, &(struct targen_entry){ .path = "s", .type = '2', .linkpath = longlink, .flavour = TARGEN_GNU });
	targen_add(g, &(struct targen_entry){ .path = "sp/old", .type = '0', .size = 100000, .flavour = TARGEN_OLDGNU_SPARSE });
	targen_add(g, &(struct targen_entry){ .path = "sp/pax01", .type = '0', .size = 50000, .flavour = TARGEN_PAX_SPARSE_01 });
	targen_add(g, &(struct targen_entry){ .path = "sp/pax10", .type = '0', .size = 70000, .flavour = TARGEN_PAX_SPARSE_10 });
	targen_end(g, 2, false);
	size_t len;
	uint8_t *data = copy_of(g, &len);
	struct run r = parse(data, len, 9, 700, 0, -1);
	ck_assert_msg(r.rc == RS_OK, "%s", r.err.msg);
	check_against_written(g, &r);
	ck_assert_str_eq(r.ents[0].path, longname);
	ck_assert_str_eq(r.ents[1].link, longlink);
	ck_assert_int_eq(r.ents[2].type, 'S');
	ck_assert_uint_eq(r.ents[2].real_size, 100000);
	ck_assert(r.ents[3].sparse && r.ents[3].real_size == 50000);
	ck_assert_str_eq(r.ents[4].path, "sp/pax10");
	ck_assert(r.ents[4].sparse && r.ents[4].real_size == 70000);
	ck_assert_uint_eq(r.copy_len, len);
	ck_assert_int_eq(memcmp(r.copy, data, len), 0);
	run_free(&r);
	free(data);
	targen_free(g);
}
END_TEST

START_TEST(accepts_missing_or_short_end_and_empty_stream)
{
	for (unsigned zb = 0; zb <= 2; zb++) {
		struct targen *g = targen_new(5);
		targen_add_random(g, 10, TARGEN_ALL_FLAVOURS, 2000);
		targen_end(g, zb, false);
		size_t len;
		const uint8_t *data = targen_data(g, &len);
		struct run r = parse(data, len, zb + 1, 300, 0, -1);
		ck_assert_msg(r.rc == RS_OK, "%s", r.err.msg);
		ck_assert_uint_eq(r.n, 10);
		ck_assert_uint_eq(r.st.end_blocks, zb);
		run_free(&r);
		targen_free(g);
	}
	struct run r = parse(NULL, 0, 1, 1, 0, -1);
	ck_assert_int_eq(r.rc, RS_OK);
	ck_assert_uint_eq(r.n, 0);
	run_free(&r);
}
END_TEST

/* ---- bad input -------------------------------------------------------- */

static void expect_error(const uint8_t *data, size_t len, enum rs_code code, const char *msg)
{
	for (uint64_t seed = 1; seed <= 4; seed++) {
		struct run r = parse(data, len, seed, seed == 1 ? 100000000 : 700, 0, -1);
		ck_assert_int_eq(r.rc, code);
		ck_assert_str_eq(r.err.msg, msg);
		run_free(&r);
	}
}

START_TEST(refuses_dotdot_and_absolute_names)
{
	struct targen *g = targen_new(1);
	targen_add_file(g, "ok", "1", 1);
	targen_add_file(g, "a/../../etc/passwd", "x", 1);
	targen_end(g, 2, false);
	size_t len;
	const uint8_t *d = targen_data(g, &len);
	expect_error(d, len, RS_BAD_INPUT, "tar: entry 'a/../../etc/passwd' at offset 1024: name has a '..' component");
	targen_free(g);

	g = targen_new(1);
	targen_add_file(g, "/etc/shadow", "x", 1);
	targen_end(g, 2, false);
	d = targen_data(g, &len);
	expect_error(d, len, RS_BAD_INPUT, "tar: entry '/etc/shadow' at offset 0: absolute name");
	targen_free(g);

	g = targen_new(1);
	targen_add_file(g, "f", "x", 1);
	targen_add_hardlink(g, "h", "../../f");
	targen_end(g, 2, false);
	d = targen_data(g, &len);
	expect_error(d, len, RS_BAD_INPUT, "tar: entry 'h' at offset 1024: hard link target has a '..' component");
	targen_free(g);

	/* pax path wins over the harmless ustar name */
	g = targen_new(1);
	targen_add(g, &(struct targen_entry){ .path = "x/../..", .type = '5', .flavour = TARGEN_PAX });
	targen_end(g, 2, false);
	d = targen_data(g, &len);
	expect_error(d, len, RS_BAD_INPUT, "tar: entry 'x/../..' at offset 0: name has a '..' component");
	targen_free(g);

	/* symlink targets are free-form */
	g = targen_new(1);
	targen_add_symlink(g, "l", "../../../etc");
	targen_end(g, 2, false);
	d = targen_data(g, &len);
	struct run r = parse(d, len, 1, 100, 0, -1);
	ck_assert_int_eq(r.rc, RS_OK);
	ck_assert_str_eq(r.ents[0].link, "../../../etc");
	run_free(&r);
	targen_free(g);
}
END_TEST

START_TEST(refuses_bad_checksum_and_fields)
{
	struct targen *g = targen_new(1);
	targen_add_file(g, "a", "1", 1);
	targen_add_file(g, "b", "2", 1);
	targen_end(g, 2, false);
	size_t len;
	uint8_t *d = targen_data_mut(g, &len);
	/* unsigned sum of the header with the checksum field as spaces */
	d[1024] = 'c';
	unsigned sum = 0;
	for (size_t i = 0; i < 512; i++)
		sum += (i >= 148 && i < 156) ? ' ' : d[1024 + i];
	char want[200];
	snprintf(want, sizeof(want), "tar: header at offset 1024: checksum %u does not match stored %u", sum, sum - 1);
	expect_error(d, len, RS_BAD_INPUT, want);
	/* a signed-sum checksum (old writers) is accepted */
	targen_fix_checksum(g, 1024);
	d[1024 + 100] = 0xe4; /* a high byte in the mode field's NUL area would be invalid; use name */
	d[1024 + 100] = '0';
	d[1024 + 50] = 0xe4;
	int ssum = 0;
	for (size_t i = 0; i < 512; i++)
		ssum += (i >= 148 && i < 156) ? ' ' : (int8_t)d[1024 + i];
	snprintf((char *)d + 1024 + 148, 8, "%06o", ssum);
	d[1024 + 155] = ' ';
	struct run r = parse(d, len, 1, 100, 0, -1);
	ck_assert_msg(r.rc == RS_OK, "%s", r.err.msg);
	run_free(&r);
	d[1024 + 50] = 0;
	/* invalid octal in the mode field */
	memcpy(d + 1024 + 100, "00z0644", 7);
	targen_fix_checksum(g, 1024);
	expect_error(d, len, RS_BAD_INPUT, "tar: header at offset 1024: invalid mode field");
	targen_free(g);
}
END_TEST

START_TEST(refuses_truncated_archives)
{
	struct targen *g = targen_new(1);
	targen_add_file(g, "a", "1", 1);
	targen_add(g, &(struct targen_entry){ .path = "big", .type = '0', .size = 5000 });
	targen_end(g, 2, false);
	size_t len;
	const uint8_t *d = targen_data(g, &len);
	expect_error(d, 1024 + 512 + 1000, RS_BAD_INPUT,
		     "tar: truncated archive: entry 'big' at offset 1024 needs 4000 more data bytes");
	expect_error(d, 1024 + 512 + 5000 + 10, RS_BAD_INPUT,
		     "tar: truncated archive: entry 'big' at offset 1024 needs 110 more padding bytes");
	expect_error(d, 1024 + 100, RS_BAD_INPUT,
		     "tar: truncated archive: partial header block (100 of 512 bytes) at offset 1024");
	targen_free(g);

	g = targen_new(1);
	targen_add(g, &(struct targen_entry){ .path = "p", .type = '0', .size = 1, .flavour = TARGEN_PAX });
	targen_end(g, 2, false);
	d = targen_data(g, &len);
	expect_error(d, 1024, RS_BAD_INPUT,
		     "tar: truncated archive: headers at offset 0 are not followed by their entry");
	targen_free(g);
}
END_TEST

/* Names are bounded (RS_LIMIT_TAR_PATH_BYTES, _DEPTH): a pax path of
 * thousands of components is refused, not walked by every later stage. */
START_TEST(refuses_names_past_the_path_limits)
{
	char *long_name = malloc(RS_LIMIT_TAR_PATH_BYTES + 2);
	ck_assert_ptr_nonnull(long_name);
	memset(long_name, 'n', RS_LIMIT_TAR_PATH_BYTES + 1);
	long_name[RS_LIMIT_TAR_PATH_BYTES + 1] = '\0';
	char want[512];
	struct targen *g = targen_new(1);
	targen_add_file(g, long_name, "x", 1);
	targen_end(g, 2, false);
	size_t len;
	const uint8_t *d = targen_data(g, &len);
	snprintf(want, sizeof(want), "tar: entry '%.120s' at offset 0: name is %d bytes, limit is %d (RS_LIMIT_TAR_PATH_BYTES)",
		 long_name, RS_LIMIT_TAR_PATH_BYTES + 1, RS_LIMIT_TAR_PATH_BYTES);
	expect_error(d, len, RS_BAD_INPUT, want);
	targen_free(g);

	/* 1025 components of one byte: within the bytes, past the depth */
	size_t k = RS_LIMIT_TAR_PATH_DEPTH + 1;
	for (size_t i = 0; i < k; i++)
		memcpy(long_name + 2 * i, i + 1 < k ? "d/" : "f", 2);
	g = targen_new(1);
	targen_add_file(g, long_name, "x", 1);
	targen_end(g, 2, false);
	d = targen_data(g, &len);
	snprintf(want, sizeof(want), "tar: entry '%.120s' at offset 0: name has %zu components, limit is %d (RS_LIMIT_TAR_PATH_DEPTH)",
		 long_name, k, RS_LIMIT_TAR_PATH_DEPTH);
	expect_error(d, len, RS_BAD_INPUT, want);
	targen_free(g);

	/* exactly at the limits is fine; so is a hard link to such a name */
	long_name[2 * (RS_LIMIT_TAR_PATH_DEPTH - 1) + 1] = '\0';
	g = targen_new(1);
	targen_add_file(g, long_name, "x", 1);
	targen_add_hardlink(g, "h", long_name);
	targen_end(g, 2, false);
	d = targen_data(g, &len);
	struct run r = parse(d, len, 1, 100000000, 0, -1);
	ck_assert_int_eq(r.rc, RS_OK);
	run_free(&r);
	targen_free(g);
	free(long_name);
}
END_TEST

START_TEST(refuses_lone_zero_block_and_bad_pax)
{
	struct targen *g = targen_new(1);
	targen_add_file(g, "a", "1", 1);
	targen_end(g, 1, false);
	targen_add_file(g, "b", "1", 1);
	targen_end(g, 2, false);
	size_t len;
	const uint8_t *d = targen_data(g, &len);
	expect_error(d, len, RS_BAD_INPUT, "tar: lone zero block at offset 1024 followed by a header");
	targen_free(g);

	/* a pax payload that is not "len key=value\n" */
	static const uint8_t zero[512];
	g = targen_new(1);
	targen_add(g, &(struct targen_entry){ .path = "p", .type = '0', .size = 1, .flavour = TARGEN_PAX });
	targen_end(g, 2, false);
	uint8_t *m = targen_data_mut(g, &len);
	memcpy(m + 512, "99", 2); /* first record length now exceeds the payload */
	expect_error(m, len, RS_BAD_INPUT, "tar: pax header at offset 0: malformed record at payload byte 0");
	targen_free(g);

	/* an extension header announcing more than the cap */
	g = targen_new(1);
	targen_add(g, &(struct targen_entry){ .path = "p", .type = '0', .size = 1, .flavour = TARGEN_PAX });
	m = targen_data_mut(g, &len);
	snprintf((char *)m + 124, 12, "%011o", 2u << 20);
	targen_fix_checksum(g, 0);
	char want[160];
	snprintf(want, sizeof(want), "tar: 'x' extension header at offset 0 has %u bytes, limit is %u (RS_LIMIT_TAR_EXT_MAX_BYTES)", 2u << 20, RS_LIMIT_TAR_EXT_MAX_BYTES);
	expect_error(m, len, RS_TOO_LARGE, want);
	targen_free(g);

	/* a zero block right after an extension header */
	g = targen_new(1);
	targen_add(g, &(struct targen_entry){ .path = "p", .type = '0', .size = 1, .flavour = TARGEN_PAX });
	m = targen_data_mut(g, &len);
	memcpy(m + 1024, zero, 512);
	expect_error(m, len, RS_BAD_INPUT, "tar: zero block at offset 1024 where the entry of the extension header at offset 0 was expected");
	targen_free(g);
}
END_TEST

START_TEST(consumer_error_stops_the_reader)
{
	struct targen *g = targen_new(2);
	targen_add_random(g, 20, TARGEN_ALL_FLAVOURS, 1000);
	targen_end(g, 2, false);
	size_t len;
	const uint8_t *d = targen_data(g, &len);
	struct run r = parse(d, len, 3, 500, 0, 5);
	ck_assert_int_eq(r.rc, RS_POLICY);
	char want[700];
	snprintf(want, sizeof(want), "consumer refused '%s'", targen_entry_at(g, 5)->path);
	ck_assert_str_eq(r.err.msg, want);
	ck_assert_uint_eq(r.n, 5);
	run_free(&r);
	targen_free(g);
}
END_TEST

/* ---- writer ----------------------------------------------------------- */

START_TEST(writes_headers_that_read_back)
{
	char longp[300], longl[200];
	memset(longp, 'p', sizeof(longp));
	memcpy(longp, "a/", 2);
	longp[299] = 0;
	memset(longl, 'k', sizeof(longl));
	longl[199] = 0;
	static const struct tar_xattr xs[] = { { "user.z", "zz", 2 }, { "security.capability", "\0\1", 2 } };
	struct tar_entry es[] = {
		{ .path = "usr/bin/tool", .type = '0', .mode = 04755, .size = 1000, .mtime = 1700000000, .uname = "root", .gname = "root", .linkpath = "" },
		{ .path = longp, .type = '0', .mode = 0644, .size = 3, .mtime = 5, .xattrs = xs, .xattr_count = 2, .mtime_pax = "5.25" },
		{ .path = "l", .type = '1', .linkpath = longl, .mode = 0644 },
		{ .path = "big", .type = '0', .size = 10, .uid = 1ull << 40, .gid = 3, .uname = "a-name-longer-than-thirty-two-bytes" },
		{ .path = "d", .type = '5', .mode = 0755 },
		{ .path = "dev/null", .type = '3', .devmajor = 1, .devminor = 3, .mode = 0666 },
	};
	size_t n = sizeof(es) / sizeof(es[0]);
	struct rs_err err = { 0 };
	uint8_t *prev = NULL;
	size_t prev_len = 0;
	for (int round = 0; round < 2; round++) {
		struct stream_sink *mem;
		ck_assert_int_eq(stream_mem_sink_new(&mem, 1u << 20, "tar", &err), RS_OK);
		for (size_t i = 0; i < n; i++) {
			ck_assert_msg(tar_write_header(mem, &es[i], &err) == RS_OK, "%s", err.msg);
			uint8_t buf[1000];
			memset(buf, 'A' + (int)i, sizeof(buf));
			ck_assert_int_eq(stream_write(mem, buf, es[i].type == '0' ? es[i].size : 0, &err), RS_OK);
			ck_assert_int_eq(tar_write_padding(mem, es[i].type == '0' ? es[i].size : 0, &err), RS_OK);
		}
		ck_assert_int_eq(tar_write_end(mem, &err), RS_OK);
		size_t len;
		uint8_t *d = stream_mem_sink_take(mem, &len);
		stream_free(mem);
		ck_assert_uint_eq(len % 512, 0);
		if (prev) {
			/* no clock, no host state: the same bytes */
			ck_assert_uint_eq(len, prev_len);
			ck_assert_int_eq(memcmp(d, prev, len), 0);
			free(d);
			break;
		}
		struct run r = parse(d, len, 4, 300, 0, -1);
		ck_assert_msg(r.rc == RS_OK, "%s", r.err.msg);
		ck_assert_uint_eq(r.n, n);
		for (size_t i = 0; i < n; i++) {
			ck_assert_str_eq(r.ents[i].path, es[i].path);
			ck_assert_str_eq(r.ents[i].link, es[i].linkpath ? es[i].linkpath : "");
			ck_assert_int_eq(r.ents[i].type, es[i].type);
			ck_assert_uint_eq(r.ents[i].mode, es[i].mode);
			ck_assert_uint_eq(r.ents[i].uid, es[i].uid);
			ck_assert_uint_eq(r.ents[i].size, es[i].type == '0' ? es[i].size : 0);
			ck_assert_uint_eq(r.ents[i].xattr_count, es[i].xattr_count);
			ck_assert_uint_eq(r.ents[i].devmajor, es[i].devmajor);
		}
		ck_assert_str_eq(r.ents[1].mtime_pax, "5.25");
		ck_assert_str_eq(r.ents[1].xattr0, "security.capability");
		ck_assert_str_eq(r.ents[3].uname, "a-name-longer-than-thirty-two-bytes");
		ck_assert_uint_eq(r.copy_len, len);
		ck_assert_int_eq(memcmp(r.copy, d, len), 0);
		run_free(&r);
		prev = d;
		prev_len = len;
	}
	free(prev);
	struct stream_sink *mem;
	ck_assert_int_eq(stream_mem_sink_new(&mem, 1u << 20, "tar", &err), RS_OK);
	struct tar_entry bad = { .path = "g", .type = 'g' };
	ck_assert_int_eq(tar_write_header(mem, &bad, &err), RS_BAD_INPUT);
	ck_assert_str_eq(err.msg, "tar: cannot write an entry of type 'g' for 'g'");
	stream_free(mem);
}
END_TEST

START_TEST(normalizes_paths)
{
	static const struct {
		const char *in, *out;
	} ok[] = { { "./a/b", "a/b" }, { "a//b/", "a/b" }, { "./", "." }, { ".", "." },
		   { "a/./b/.", "a/b" }, { "..a/b..", "..a/b.." }, { "././x", "x" } };
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		char p[64];
		snprintf(p, sizeof(p), "%s", ok[i].in);
		ck_assert(tar_path_normalize(p));
		ck_assert_str_eq(p, ok[i].out);
	}
	static const char *const bad[] = { "/a", "..", "a/..", "a/../b", "./../x" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char p[64];
		snprintf(p, sizeof(p), "%s", bad[i]);
		ck_assert_msg(!tar_path_normalize(p), "%s", bad[i]);
	}
}
END_TEST

/* ---- tar_sparse -------------------------------------------------------------- */

/* The one entry of a generated archive: its raw headers and stored data. */
struct one {
	uint8_t raw[8192];
	size_t raw_len;
	uint8_t *data;
	size_t len;
	struct tar_entry e;
	char path[256];
};

static enum rs_code one_entry(void *ctx, const struct tar_entry *e, const void *raw, size_t raw_len,
			      enum tar_verdict *verdict, struct rs_err *err)
{
	(void)verdict;
	(void)err;
	struct one *o = ctx;
	ck_assert_uint_le(raw_len, sizeof(o->raw));
	memcpy(o->raw, raw, raw_len);
	o->raw_len = raw_len;
	o->e = *e;
	snprintf(o->path, sizeof(o->path), "%s", e->path);
	o->e.path = o->path;
	o->data = malloc(e->size + 1);
	o->len = 0;
	return RS_OK;
}

static enum rs_code one_data(void *ctx, const struct tar_entry *e, const void *buf, size_t len, bool padding,
			     struct rs_err *err)
{
	(void)e;
	(void)err;
	struct one *o = ctx;
	if (!padding) {
		memcpy(o->data + o->len, buf, len);
		o->len += len;
	}
	return RS_OK;
}

static void read_one(const uint8_t *tar, size_t len, struct one *o)
{
	struct tar_read_cbs cbs = {one_entry, one_data, NULL};
	struct stream_sink *r;
	struct rs_err err = {0};
	ck_assert_int_eq(tar_read_new(&r, &cbs, o, &err), RS_OK);
	ck_assert_msg(stream_write(r, tar, len, &err) == RS_OK && stream_finish(r, &err) == RS_OK, "%s", err.msg);
	stream_free(r);
}

/* Expand o's data fed in seeded random splits; *out is malloc'd. */
static enum rs_code expand(const struct one *o, uint64_t seed, uint8_t **out, size_t *out_len, struct rs_err *err)
{
	struct stream_sink *mem;
	ck_assert_int_eq(stream_mem_sink_new(&mem, 1u << 24, "expanded", err), RS_OK);
	struct tar_sparse *sp = NULL;
	enum rs_code rc = tar_sparse_new(&sp, &o->e, o->raw, o->raw_len, err);
	struct targen_splitter sl;
	targen_splitter_init(&sl, seed, 3000);
	size_t done = 0;
	while (rc == RS_OK && done < o->len) {
		size_t k = targen_splitter_next(&sl);
		if (k > o->len - done)
			k = o->len - done;
		rc = tar_sparse_write(sp, o->data + done, k, mem, err);
		done += k;
	}
	if (rc == RS_OK)
		rc = tar_sparse_end(sp, mem, err);
	tar_sparse_free(sp);
	*out = rc == RS_OK ? stream_mem_sink_take(mem, out_len) : NULL;
	stream_free(mem);
	return rc;
}

START_TEST(expands_sparse_entries_in_every_format)
{
	enum { REAL = 60000 };
	static uint8_t content[REAL];
	for (size_t i = 0; i < REAL; i++)
		content[i] = (uint8_t)(1 + (i * 13) % 253);
	const enum targen_flavour fl[] = {TARGEN_OLDGNU_SPARSE, TARGEN_PAX_SPARSE_01, TARGEN_PAX_SPARSE_10};
	for (size_t f = 0; f < 3; f++) {
		for (uint64_t seed = 1; seed <= 6; seed++) { /* seeds give 1..30 chunks (extension blocks too) */
			struct targen *g = targen_new(seed * 10 + f);
			targen_add(g, &(struct targen_entry){.path = "s", .type = '0', .size = REAL, .data = content,
							    .flavour = fl[f]});
			targen_end(g, 2, false);
			size_t len;
			const uint8_t *tar = targen_data(g, &len);
			struct one o;
			read_one(tar, len, &o);
			ck_assert(o.e.sparse);
			uint8_t *first = NULL;
			size_t first_len = 0;
			for (uint64_t split = 0; split < 4; split++) {
				uint8_t *x;
				size_t xl;
				struct rs_err err = {0};
				ck_assert_msg(expand(&o, split, &x, &xl, &err) == RS_OK, "flavour %zu: %s", f, err.msg);
				ck_assert_uint_eq(xl, REAL);
				size_t nonzero = 0;
				for (size_t i = 0; i < REAL; i++) {
					ck_assert(x[i] == 0 || x[i] == content[i]);
					nonzero += x[i] != 0;
				}
				if (fl[f] != TARGEN_PAX_SPARSE_10)
					ck_assert_uint_eq(nonzero, o.len);
				if (first) {
					ck_assert_int_eq(memcmp(first, x, REAL), 0);
					free(x);
				} else {
					first = x;
					first_len = xl;
				}
			}
			(void)first_len;
			free(first);
			free(o.data);
			targen_free(g);
		}
	}
}
END_TEST

START_TEST(refuses_bad_sparse_maps)
{
	/* old GNU map: the second chunk overlapping the first */
	struct targen *g = targen_new(3);
	targen_add(g, &(struct targen_entry){.path = "s", .type = '0', .size = 40000, .flavour = TARGEN_OLDGNU_SPARSE});
	targen_end(g, 2, false);
	size_t len;
	uint8_t *tar = targen_data_mut(g, &len);
	struct one o;
	struct rs_err err = {0};
	read_one(tar, len, &o);
	int64_t off0 = 0;
	ck_assert(tar_parse_number(o.raw + 386, 12, &off0));
	ck_assert(o.raw[386 + 24]); /* at least two chunks: move the second onto the first */
	snprintf((char *)o.raw + 386 + 24, 12, "%011" PRIo64, (uint64_t)off0);
	uint8_t *x;
	size_t xl;
	ck_assert_int_eq(expand(&o, 1, &x, &xl, &err), RS_BAD_INPUT);
	ck_assert_msg(strstr(err.msg, "sparse entry 's'") && strstr(err.msg, "overlap"), "%s", err.msg);
	free(o.data);
	/* pax 0.1 map holding more bytes than the entry stores */
	targen_free(g);
	g = targen_new(4);
	targen_add(g, &(struct targen_entry){.path = "t", .type = '0', .size = 40000, .flavour = TARGEN_PAX_SPARSE_01});
	targen_end(g, 2, false);
	tar = targen_data_mut(g, &len);
	read_one(tar, len, &o);
	o.e.size -= 1;
	o.len -= 1;
	memset(&err, 0, sizeof(err));
	ck_assert_int_eq(expand(&o, 1, &x, &xl, &err), RS_BAD_INPUT);
	ck_assert_msg(strstr(err.msg, "sparse map holds"), "%s", err.msg);
	free(o.data);
	/* a huge real size over a few stored bytes */
	read_one(tar, len, &o);
	o.e.real_size = 1ull << 40;
	memset(&err, 0, sizeof(err));
	ck_assert_int_eq(expand(&o, 1, &x, &xl, &err), RS_TOO_LARGE);
	free(o.data);
	targen_free(g);
}
END_TEST

static Suite *tar_read_suite(void)
{
	Suite *s = suite_create("tar_read");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, round_trips_each_flavour_for_every_split);
	tcase_add_test(tc, dropped_entries_vanish_whole);
	tcase_add_test(tc, reads_pax_details_and_globals);
	tcase_add_test(tc, reads_long_gnu_names_and_sparse_sizes);
	tcase_add_test(tc, accepts_missing_or_short_end_and_empty_stream);
	tcase_add_test(tc, refuses_dotdot_and_absolute_names);
	tcase_add_test(tc, refuses_names_past_the_path_limits);
	tcase_add_test(tc, refuses_bad_checksum_and_fields);
	tcase_add_test(tc, refuses_truncated_archives);
	tcase_add_test(tc, refuses_lone_zero_block_and_bad_pax);
	tcase_add_test(tc, consumer_error_stops_the_reader);
	tcase_add_test(tc, writes_headers_that_read_back);
	tcase_add_test(tc, normalizes_paths);
	tcase_add_test(tc, expands_sparse_entries_in_every_format);
	tcase_add_test(tc, refuses_bad_sparse_maps);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(tar_read_suite());
}
