/* xxh64: XXH64 by its published algorithm (see xxh64.h): four 64-bit lanes
 * over 32-byte stripes, then the tail and the avalanche. */
#include "xxh64.h"

#include <string.h>

#define XP1 0x9E3779B185EBCA87ull
#define XP2 0xC2B2AE3D27D4EB4Full
#define XP3 0x165667B19E3779F9ull
#define XP4 0x85EBCA77C2B2AE63ull
#define XP5 0x27D4EB2F165667C5ull

static uint64_t rotl64(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

static uint64_t rd64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v; /* little-endian hosts; the value only has to be stable per host */
}

static uint32_t rd32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static uint64_t xround(uint64_t acc, uint64_t in)
{
	acc += in * XP2;
	return rotl64(acc, 31) * XP1;
}

static uint64_t xmerge(uint64_t acc, uint64_t val)
{
	acc ^= xround(0, val);
	return acc * XP1 + XP4;
}

void xxh64_reset(struct xxh64 *s)
{
	memset(s, 0, sizeof(*s));
	s->v[0] = XP1 + XP2;
	s->v[1] = XP2;
	s->v[2] = 0;
	s->v[3] = (uint64_t)0 - XP1;
}

void xxh64_update(struct xxh64 *s, const void *buf, size_t len)
{
	const uint8_t *p = buf, *end = p + len;
	s->total += len;
	if (s->memsize + len < 32) {
		memcpy(s->mem + s->memsize, p, len);
		s->memsize += len;
		return;
	}
	if (s->memsize) {
		size_t take = 32 - s->memsize;
		memcpy(s->mem + s->memsize, p, take);
		for (int i = 0; i < 4; i++)
			s->v[i] = xround(s->v[i], rd64(s->mem + 8 * i));
		p += take;
		s->memsize = 0;
	}
	while (p + 32 <= end) {
		for (int i = 0; i < 4; i++)
			s->v[i] = xround(s->v[i], rd64(p + 8 * i));
		p += 32;
	}
	if (p < end) {
		memcpy(s->mem, p, (size_t)(end - p));
		s->memsize = (size_t)(end - p);
	}
}

uint64_t xxh64_digest(const struct xxh64 *s)
{
	uint64_t h;
	if (s->total >= 32) {
		h = rotl64(s->v[0], 1) + rotl64(s->v[1], 7) + rotl64(s->v[2], 12) + rotl64(s->v[3], 18);
		for (int i = 0; i < 4; i++)
			h = xmerge(h, s->v[i]);
	} else {
		h = s->v[2] + XP5;
	}
	h += s->total;
	const uint8_t *p = s->mem, *end = s->mem + s->memsize;
	while (p + 8 <= end) {
		h ^= xround(0, rd64(p));
		h = rotl64(h, 27) * XP1 + XP4;
		p += 8;
	}
	if (p + 4 <= end) {
		h ^= (uint64_t)rd32(p) * XP1;
		h = rotl64(h, 23) * XP2 + XP3;
		p += 4;
	}
	while (p < end) {
		h ^= (*p++) * XP5;
		h = rotl64(h, 11) * XP1;
	}
	h ^= h >> 33;
	h *= XP2;
	h ^= h >> 29;
	h *= XP3;
	h ^= h >> 32;
	return h;
}
