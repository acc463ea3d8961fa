/* route: routing and request validation without HTTP. See route.h. */
#include "route.h"

#include "refname.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum rs_code route_pick(const struct rs_config *cfg, const char *ns, const char *name, struct route_target *t,
                        struct rs_err *err)
{
	const char *rest = name;
	t->up_index = cfg->default_upstream;
	t->by_ns = false;
	if (ns && *ns) {
		size_t i;
		for (i = 0; i < cfg->upstream_count; i++)
			if (strcmp(cfg->upstreams[i].name, ns) == 0)
				break;
		if (i == cfg->upstream_count)
			return rs_err_set(err, RS_NOT_FOUND, "no upstream named '%.100s' is configured (ns=%.100s)", ns,
			                  ns);
		t->up_index = i;
		t->by_ns = true;
	} else {
		const char *slash = strchr(name, '/');
		for (size_t i = 0; slash && i < cfg->upstream_count; i++) {
			size_t n = strlen(cfg->upstreams[i].name);
			if (n == (size_t)(slash - name) && strncmp(name, cfg->upstreams[i].name, n) == 0) {
				t->up_index = i;
				rest = slash + 1;
				break;
			}
		}
	}
	if (strlen(name) >= sizeof(t->name) || !refname_repo_valid(rest))
		return rs_err_set(err, RS_BAD_INPUT, "invalid repository name '%.200s'", rest);
	snprintf(t->name, sizeof(t->name), "%s", name);
	const struct rs_upstream_config *up = &cfg->upstreams[t->up_index];
	bool lib = up->library_prefix && !strchr(rest, '/');
	int n = snprintf(t->repo, sizeof(t->repo), "%s%s", lib ? "library/" : "", rest);
	if (n < 0 || (size_t)n > RS_LIMIT_NAME_MAX)
		return rs_err_set(err, RS_BAD_INPUT, "repository name '%.200s' is longer than %d bytes", rest,
		                  RS_LIMIT_NAME_MAX);
	return RS_OK;
}

enum rs_code route_parse_range(const char *h, uint64_t size, struct route_range *out, struct rs_err *err)
{
	out->partial = false;
	out->start = 0;
	out->end = size;
	if (!h || strncasecmp(h, "bytes=", 6) != 0 || strchr(h, ','))
		return RS_OK;
	const char *p = h + 6;
	while (*p == ' ')
		p++;
	char *endp;
	if (*p == '-') {
		if (!isdigit((unsigned char)p[1]))
			return RS_OK;
		errno = 0;
		unsigned long long n = strtoull(p + 1, &endp, 10);
		if (errno || *endp)
			return RS_OK;
		if (n == 0 || size == 0)
			return rs_err_set(err, RS_RANGE, "range '%.60s' is not satisfiable for a %llu-byte blob", h,
			                  (unsigned long long)size);
		out->start = n >= size ? 0 : size - n;
		out->partial = true;
		return RS_OK;
	}
	if (!isdigit((unsigned char)*p))
		return RS_OK;
	errno = 0;
	unsigned long long a = strtoull(p, &endp, 10);
	if (errno || *endp != '-')
		return RS_OK;
	const char *q = endp + 1;
	unsigned long long b = size ? size - 1 : 0;
	if (*q) {
		if (!isdigit((unsigned char)*q))
			return RS_OK;
		errno = 0;
		b = strtoull(q, &endp, 10);
		if (errno || *endp || b < a)
			return RS_OK;
		if (size && b >= size)
			b = size - 1;
	}
	if (a >= size)
		return rs_err_set(err, RS_RANGE, "range '%.60s' starts beyond the blob's %llu bytes", h,
		                  (unsigned long long)size);
	out->start = a;
	out->end = b + 1;
	out->partial = true;
	return RS_OK;
}

bool route_accepts(const char *const *values, size_t n, const char *type)
{
	size_t tl = strlen(type);
	for (size_t i = 0; i < n; i++) {
		const char *p = values[i];
		while (*p) {
			while (*p == ' ' || *p == ',' || *p == '\t')
				p++;
			const char *end = p;
			while (*end && *end != ',' && *end != ';')
				end++;
			const char *e2 = end;
			while (e2 > p && (e2[-1] == ' ' || e2[-1] == '\t'))
				e2--;
			size_t len = (size_t)(e2 - p);
			if ((len == tl && strncasecmp(p, type, tl) == 0) || (len == 3 && strncmp(p, "*/*", 3) == 0))
				return true;
			while (*end && *end != ',')
				end++;
			p = end;
		}
	}
	return false;
}

/* The write side (distribution spec, "Push"; codes from its "Error Codes"
 * table, which a 4xx JSON body must keep to): codes for uploads and
 * manifest PUTs. */
static struct route_error map_write_error(enum rs_code code, bool manifest)
{
	switch (code) {
	case RS_NOT_FOUND:
		return manifest ? (struct route_error){400, "MANIFEST_BLOB_UNKNOWN"}
		                : (struct route_error){404, "BLOB_UPLOAD_UNKNOWN"};
	case RS_DIGEST_MISMATCH:
	case RS_DIGEST_INVALID:
		return (struct route_error){400, "DIGEST_INVALID"};
	case RS_UNSUPPORTED:
		return (struct route_error){400, manifest ? "MANIFEST_INVALID" : "DIGEST_INVALID"};
	case RS_TOO_LARGE:
		return (struct route_error){413, "SIZE_INVALID"};
	case RS_RANGE:
		return (struct route_error){416, "BLOB_UPLOAD_INVALID"};
	case RS_BAD_INPUT:
		return (struct route_error){400, manifest ? "MANIFEST_INVALID" : "BLOB_UPLOAD_INVALID"};
	default:
		return (struct route_error){500, "UNKNOWN"};
	}
}

struct route_error route_map_error(enum rs_code code, enum route_what what)
{
	if (what == ROUTE_UPLOAD_START && code == RS_TOO_LARGE)
		return (struct route_error){429, "TOOMANYREQUESTS"};
	if (what == ROUTE_UPLOAD || what == ROUTE_UPLOAD_START || what == ROUTE_MANIFEST_PUT)
		return map_write_error(code, what == ROUTE_MANIFEST_PUT);
	switch (code) {
	case RS_NOT_FOUND:
		return (struct route_error){404, what == ROUTE_MANIFEST ? "MANIFEST_UNKNOWN"
		                                 : what == ROUTE_BLOB   ? "BLOB_UNKNOWN"
		                                                        : "NAME_UNKNOWN"};
	case RS_DIGEST_INVALID:
		return (struct route_error){400, "DIGEST_INVALID"};
	case RS_DIGEST_MISMATCH:
		/* On the read side a mismatch is the upstream's fault: its bytes did
		 * not hash to what was asked for. */
		return (struct route_error){502, "UNAVAILABLE"};
	case RS_BAD_INPUT:
		return (struct route_error){400, what == ROUTE_MANIFEST ? "MANIFEST_INVALID" : "NAME_INVALID"};
	case RS_TOO_LARGE:
		return (struct route_error){413, "SIZE_INVALID"};
	case RS_UNAUTHORIZED:
		return (struct route_error){401, "UNAUTHORIZED"};
	case RS_DENIED:
	case RS_POLICY:
		return (struct route_error){403, "DENIED"};
	case RS_UNSUPPORTED:
		return (struct route_error){405, "UNSUPPORTED"};
	case RS_RANGE:
		return (struct route_error){416, "RANGE_INVALID"};
	case RS_UPSTREAM:
	case RS_TIMEOUT:
		return (struct route_error){502, "UNAVAILABLE"};
	case RS_THROTTLED:
		return (struct route_error){429, "TOOMANYREQUESTS"};
	case RS_NOMEM:
	case RS_IO:
	case RS_CONFIG:
	case RS_OK:
	case RS_CODE_COUNT:
		break;
	}
	return (struct route_error){500, "UNKNOWN"};
}
