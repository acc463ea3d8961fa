/* xxh64: the 64-bit xxHash of Yann Collet (XXH64, seed 0), streaming. The
 * pipeline uses it for the data identity of entries when the squash mode is
 * "all": there the identity only counts duplicates in the report (the output
 * is the same either way), so a fast non-cryptographic hash is enough; modes
 * where dedupe drops entries hash data with SHA-256 (digest.h). Values are
 * stable on one host (little-endian reads), which is all the report needs.
 * No allocation, no I/O. */
#ifndef RS_OPTIMIZER_XXH64_H
#define RS_OPTIMIZER_XXH64_H

#include <stddef.h>
#include <stdint.h>

/* Embedded by callers; reset before use. */
struct xxh64 {
	uint64_t v[4];
	uint64_t total;
	uint8_t mem[32];
	size_t memsize;
};

/* Start a new hash in s. */
void xxh64_reset(struct xxh64 *s);
/* Feed len bytes of buf (borrowed). */
void xxh64_update(struct xxh64 *s, const void *buf, size_t len);
/* The hash of everything fed since the reset; s is left unchanged. */
uint64_t xxh64_digest(const struct xxh64 *s);

#endif
