/* fuzz_scan: libFuzzer target for the push gate's content scanner
 * (optimizer/scan.c, scan_secrets_*). The first byte picks the file's path
 * (a plain file or one of the credential files), scan_binaries and a file
 * cap; the second byte seeds the feed sizes; the rest is the file's
 * content. The content is scanned three times with one scanner: whole with
 * the default classifier, in pieces with the portable one, and in other
 * pieces with the default one again (the scanner then holds the earlier
 * runs' bytes past the end of the data). The three must report the same
 * findings in the same order: how the bytes are fed and how they are
 * classified must never change a finding. */
#include "scan.h"

#include <stdlib.h>
#include <string.h>

#define MAX_EVENTS 16

struct events {
	unsigned n;
	enum scan_detector d[MAX_EVENTS];
};

static enum rs_code on_finding(void *ctx, const char *path, enum scan_detector d, struct rs_err *err)
{
	(void)path;
	(void)err;
	struct events *e = ctx;
	/* each detector reports at most once per file */
	if (e->n >= MAX_EVENTS || (unsigned)d >= SCAN_DETECTOR_COUNT)
		abort();
	e->d[e->n++] = d;
	return RS_OK;
}

static const char *const paths[] = {
	"f", "usr/lib/libx.so", "root/.aws/credentials", "home/u/.docker/config.json",
	"root/.config/gcloud/adc.json", "app/.npmrc", "root/.git-credentials", "etc/npmrc",
};

/* Scan one file: data fed whole (seed 0) or in pieces of pseudo-random
 * sizes from 1 byte to 128 KiB; ev (the scanner's ctx) is reset first. */
static void scan_once(struct scan_secrets *s, struct events *ev, const char *path, const uint8_t *data,
		      size_t len, unsigned seed)
{
	struct rs_err err = {0};
	memset(ev, 0, sizeof(*ev));
	if (scan_secrets_begin(s, path, &err) != RS_OK)
		abort();
	uint32_t x = seed * 2654435761u + 1;
	for (size_t off = 0; off < len;) {
		size_t n = len - off;
		if (seed) {
			x ^= x << 13, x ^= x >> 17, x ^= x << 5;
			size_t piece = 1 + x % ((size_t)4 << (x >> 28));
			if (n > piece)
				n = piece;
		}
		if (scan_secrets_feed(s, data + off, n, &err) != RS_OK)
			abort();
		off += n;
	}
	if (scan_secrets_end(s, &err) != RS_OK)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	unsigned flags = data[0], seed = data[1];
	data += 2;
	size -= 2;
	const char *path = paths[flags & 7];
	bool bin = flags & 8;
	uint64_t cap = flags & 16 ? 1 + (size_t)(flags >> 5) * 97 : 0;
	struct events ev[3];
	struct rs_err err = {0};
	struct scan_secrets *s = NULL;
	if (scan_secrets_new(&s, cap, bin, on_finding, &ev[0], &err) != RS_OK)
		abort();
	scan_once(s, &ev[0], path, data, size, 0);
	scan_secrets_free(s);
	if (scan_secrets_new(&s, cap, bin, on_finding, &ev[1], &err) != RS_OK)
		abort();
	scan_secrets_portable(s);
	scan_once(s, &ev[1], path, data, size, seed + 1);
	scan_secrets_free(s);
	if (scan_secrets_new(&s, cap, bin, on_finding, &ev[2], &err) != RS_OK)
		abort();
	/* a file of base64 characters first: stale bytes of a class past the end */
	static uint8_t stale[80 * 1024];
	if (!stale[0])
		memset(stale, 'Q', sizeof(stale));
	scan_once(s, &ev[2], "stale", stale, size + 300 < sizeof(stale) ? size + 300 : sizeof(stale), 0);
	scan_once(s, &ev[2], path, data, size, seed + 7);
	scan_secrets_free(s);
	for (int k = 1; k < 3; k++) {
		if (ev[k].n != ev[0].n || memcmp(ev[k].d, ev[0].d, ev[0].n * sizeof(ev[0].d[0])) != 0)
			abort();
	}
	return 0;
}
