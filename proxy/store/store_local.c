/* store_local: see store_local.h. Local directories and name grammars shared
 * by the store drivers; it talks to fsutil and the image walk only. */
#include "store_local.h"

#include "digest.h"
#include "fsutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

enum rs_code store_local_scratch_new(const char *tmp, const char *prefix, char *out, size_t cap, struct rs_err *err)
{
	if (snprintf(out, cap, "%s/%s-XXXXXX", tmp, prefix) >= (int)cap)
		return rs_err_set(err, RS_IO, "scratch path under %s is too long", tmp);
	if (!mkdtemp(out))
		return rs_err_set(err, RS_IO, "creating a scratch directory under %s: %s", tmp, strerror(errno));
	return RS_OK;
}

void store_local_scratch_remove(const char *tmp, const char *dir)
{
	size_t n = strlen(tmp);
	/* only what store_local_scratch_new made: a direct child of tmp/ */
	if (strncmp(dir, tmp, n) != 0 || dir[n] != '/' || strchr(dir + n + 1, '/') || strstr(dir, ".."))
		return;
	fsutil_rm_tree(dir);
}

size_t store_local_scrub_paths(const char *root, const char *real, char *text)
{
	size_t len = fsutil_scrub_path(text, root, "<data>");
	if (real)
		len = fsutil_scrub_path(text, real, "<data>");
	return len;
}

bool store_local_key_ok(const char *key)
{
	size_t n = strlen(key);
	return n > 0 && n <= STORE_LOCAL_KEY_MAX && key[0] != '.' &&
	       strspn(key, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

bool store_local_uuid_valid(const char *s)
{
	if (strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? s[i] != '-' : !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	}
	return true;
}

enum rs_code store_local_uuid_new(char out[37], struct rs_err *err)
{
	unsigned char r[16];
	size_t got = 0;
	while (got < sizeof(r)) {
		ssize_t n = getrandom(r + got, sizeof(r) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return rs_err_set(err, RS_IO, "getrandom: %s", strerror(errno));
		got += (size_t)n;
	}
	r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
	r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
	static const char hx[] = "0123456789abcdef";
	size_t o = 0;
	for (size_t i = 0; i < sizeof(r); i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hx[r[i] >> 4];
		out[o++] = hx[r[i] & 15];
	}
	out[o] = '\0';
	return RS_OK;
}

enum rs_code store_find_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                              enum imagewalk_step *step, struct rs_err *err)
{
	(void)err;
	struct store_find *f = ctx;
	if (ev == IMAGEWALK_LOADED && n->kind == IMAGEWALK_MANIFEST && f->manifest)
		*step = IMAGEWALK_SKIP; /* a manifest names blobs only */
	if (ev != IMAGEWALK_REF)
		return RS_OK;
	if (n->kind == IMAGEWALK_ENTRY) {
		if (!n->digest || !digest_valid(n->digest)) {
			*step = IMAGEWALK_SKIP;
			return RS_OK;
		}
		f->found = f->manifest && strcmp(n->digest, f->digest) == 0;
		*step = n->depth == 1 ? IMAGEWALK_BEST_EFFORT : IMAGEWALK_SKIP;
	} else {
		f->found = n->digest && strcmp(n->digest, f->digest) == 0;
	}
	if (f->found)
		*step = IMAGEWALK_STOP;
	return RS_OK;
}
