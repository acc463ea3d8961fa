/* config: loads the regslim JSON configuration file into struct rs_config
 * and validates every key (type, range, format), refusing unknown keys at
 * every level. Errors are one line: "FILE: key.path: expected ..., got ...",
 * or "FILE:LINE:COLUMN: invalid JSON: ..." for syntax errors.
 *
 * It reads the file whole (capped at RS_LIMIT_CONFIG_FILE_MAX_BYTES), the
 * password files named in it (capped at RS_LIMIT_PASSWORD_FILE_MAX_BYTES) and
 * the environment variables named in it. It does no network I/O and creates
 * nothing. It is the only user of jansson for configuration: json_t values
 * live only inside this file; the structs it fills own plain C strings. */
#include "config.h"

#include "gate_policy.h"
#include "jsonload.h"
#include "xalloc.h"
#include "policy.h"
#include "rs_limits.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_LISTEN "127.0.0.1:5000"
#define DEFAULT_DATA_DIR "./regslim-data"
#define DEFAULT_LOG_LEVEL "info"
#define DEFAULTS_SOURCE "(defaults)"
#define DEFAULT_CLUSTER_PREFIX "regslim:"

/* A key path like "upstreams[12].auth.password_env" fits comfortably. */
#define PATH_MAX_CHARS 128
/* How much of an offending value an error message quotes. */
#define SHOW_MAX_CHARS 60

/* Sizes must survive a round trip through a JSON integer (long long). */
#define SIZE_MAX_BYTES ((uint64_t)INT64_MAX)

static const char *const top_keys[] = {"listen", "max_connections", "max_connections_per_ip", "data_dir", "cache", "limits",
                                       "shutdown_grace_s", "log", "upstreams", "auth", "push", "optimize", "tls",
                                       "signatures", "store", "cluster", NULL};
static const char *const cache_keys[] = {"max_bytes", "optimized_pin_s", "scrub_bytes_per_s", "scrub_interval_s",
                                         NULL};
static const char *const limits_keys[] = {"manifest_max_bytes", "header_timeout_s", "body_min_bytes_per_s",
                                          "body_rate_window_s", NULL};
static const char *const log_keys[] = {"level", "requests", NULL};
static const char *const upstream_keys[] = {"name", "url", "default", "tag_ttl_s", "timeout_s",
                                            "tls_verify", "ca_file", "library_prefix", "auth", NULL};
static const char *const auth_keys[] = {"username", "password_env", "password_file", NULL};
static const char *const auth_section_keys[] = {"htpasswd", "token_secret_file", "realm", "token_ttl_s",
                                               "anonymous_pull", "groups", "acl", NULL};
static const char *const acl_keys[] = {"repository", "users", "groups", "actions", NULL};
static const char *const push_keys[] = {"max_blob_bytes", "upload_idle_timeout_s", "gc_grace_s", "gc_interval_s",
                                        "upstream", "stream_uploads", "policies", NULL};
static const char *const optimize_keys[] = {"enabled", "sync_timeout_s", "policies", NULL};
static const char *const opt_policy_keys[] = {"upstream", "repositories", "policy_file", "compression",
                                              "unknown_clients", NULL};
static const char *const store_keys[] = {"driver", "s3", NULL};
static const char *const store_s3_keys[] = {"endpoint", "region", "bucket", "access_key_env", "secret_key_env",
                                            "access_key_file", "secret_key_file", "path_style", "prefix",
                                            "local_cache_bytes", NULL};
static const char *const tls_keys[] = {"cert_file", "key_file", "client_ca_file", NULL};
static const char *const signatures_keys[] = {"sign", "verify", NULL};
static const char *const sign_keys[] = {"gpg_home", "gpg_key", "cosign_key_file", NULL};
static const char *const verify_keys[] = {"upstream", "repositories", "gpg_keyring", "cosign_public_keys",
                                          "lookaside", "on_unverified", NULL};
static const char *const cluster_keys[] = {"redis", "redis_password_env", "redis_password_file", "peer_secret_file",
                                           "advertise_url", "advertise_url_env", "timeout_ms", "lock_ttl_s", "key_prefix", NULL};
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

/* Where messages come from (the file name) and the error to fill. */
/* ---- messages ---------------------------------------------------------- */


/* Copy s into out for a message: at most SHOW_MAX_CHARS characters, control
 * characters replaced by '?', "..." when cut, so a message stays one line. */
static void show_text(char *out, size_t size, const char *s, size_t max)
{
	size_t o = 0;
	size_t i = 0;
	for (; s[i] && o + 4 < size && i < max; i++)
		out[o++] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
	if (s[i] && o + 4 <= size) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

/* Release memory jansson allocated (json_dumps) with jansson's own free. */
static void jansson_free(void *p)
{
	json_free_t release = NULL;
	json_get_alloc_funcs(NULL, &release);
	if (release)
		release(p);
}

/* Describe a JSON value for "got ...": scalars as compact JSON, containers
 * by kind. No allocation for containers; scalars use jansson's encoder. */
static void show_value(char *out, size_t size, const json_t *v)
{
	if (json_is_object(v)) {
		snprintf(out, size, "%s", json_object_size(v) ? "an object" : "{}");
		return;
	}
	if (json_is_array(v)) {
		snprintf(out, size, "%s", json_array_size(v) ? "an array" : "[]");
		return;
	}
	char *dump = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
	if (!dump) {
		snprintf(out, size, "%s", "a value");
		return;
	}
	show_text(out, size, dump, SHOW_MAX_CHARS);
	jansson_free(dump);
}

static enum rs_code fail_value(const struct jsonload *ld, const char *path, const json_t *v,
                               const char *expected)
{
	char got[SHOW_MAX_CHARS + 8];
	show_value(got, sizeof(got), v);
	return jsonload_fail(ld, RS_CONFIG, path, "expected %s, got %s", expected, got);
}

static void path_key(char *out, size_t size, const char *parent, const char *key)
{
	char shown[SHOW_MAX_CHARS + 8];
	show_text(shown, sizeof(shown), key, SHOW_MAX_CHARS);
	if (parent && parent[0])
		snprintf(out, size, "%s.%s", parent, shown);
	else
		snprintf(out, size, "%s", shown);
}

static void path_index(char *out, size_t size, const char *parent, size_t i)
{
	snprintf(out, size, "%s[%zu]", parent, i);
}

/* ---- small validators (no JSON) --------------------------------------- */

static bool parse_port(const char *s, size_t len)
{
	if (len == 0 || len > 5)
		return false;
	unsigned v = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	return v >= 1 && v <= 65535;
}

/* "ADDR:PORT": an IPv4 address or a bracketed IPv6 address, port 1-65535. */
static bool valid_listen(const char *s)
{
	char addr[INET6_ADDRSTRLEN + 1];
	unsigned char bin[sizeof(struct in6_addr)];
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return false;
		size_t n = (size_t)(close - s - 1);
		if (n == 0 || n >= sizeof(addr))
			return false;
		memcpy(addr, s + 1, n);
		addr[n] = '\0';
		return inet_pton(AF_INET6, addr, bin) == 1 && parse_port(close + 2, strlen(close + 2));
	}
	const char *colon = strrchr(s, ':');
	if (!colon)
		return false;
	size_t n = (size_t)(colon - s);
	if (n == 0 || n >= sizeof(addr))
		return false;
	memcpy(addr, s, n);
	addr[n] = '\0';
	return inet_pton(AF_INET, addr, bin) == 1 && parse_port(colon + 1, strlen(colon + 1));
}

/* DNS-style host: dot-separated labels of 1-63 letters, digits and '-', not
 * starting or ending with '-'. lower_only refuses upper-case letters. */
static bool valid_hostname(const char *s, size_t len, bool lower_only)
{
	if (len == 0 || len > 253)
		return false;
	size_t label = 0;
	for (size_t i = 0; i <= len; i++) {
		char c = i < len ? s[i] : '.';
		if (c == '.') {
			if (label == 0 || label > 63 || s[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
		          (!lower_only && c >= 'A' && c <= 'Z');
		if (!ok || (label == 0 && c == '-'))
			return false;
		label++;
	}
	return true;
}

/* Registry host syntax for upstream names: "docker.io", "localhost:5000". */
static bool valid_registry_name(const char *s)
{
	const char *colon = strchr(s, ':');
	size_t host_len = colon ? (size_t)(colon - s) : strlen(s);
	if (!valid_hostname(s, host_len, true))
		return false;
	return !colon || parse_port(colon + 1, strlen(colon + 1));
}

/* host[:port] of a URL: a hostname, an IPv4 address or [IPv6]. */
static bool valid_authority(const char *s, size_t len)
{
	if (len == 0)
		return false;
	if (s[0] == '[') {
		const char *close = memchr(s, ']', len);
		if (!close)
			return false;
		size_t n = (size_t)(close - s - 1);
		char addr[INET6_ADDRSTRLEN + 1];
		unsigned char bin[sizeof(struct in6_addr)];
		if (n == 0 || n >= sizeof(addr))
			return false;
		memcpy(addr, s + 1, n);
		addr[n] = '\0';
		if (inet_pton(AF_INET6, addr, bin) != 1)
			return false;
		size_t rest = len - (size_t)(close + 1 - s);
		if (rest == 0)
			return true;
		return close[1] == ':' && parse_port(close + 2, rest - 1);
	}
	const char *colon = memchr(s, ':', len);
	size_t host_len = colon ? (size_t)(colon - s) : len;
	if (!valid_hostname(s, host_len, false))
		return false;
	return !colon || parse_port(colon + 1, len - host_len - 1);
}

/* http:// or https:// with host[:port] and no path, query, fragment or
 * user info. A trailing slash is allowed and dropped. Returns a new string
 * in *out (caller frees) or NULL in *out when s is not such a URL. */
static enum rs_code normalize_url(char **out, const char *s)
{
	*out = NULL;
	size_t len = strlen(s);
	size_t skip;
	if (strncmp(s, "https://", 8) == 0)
		skip = 8;
	else if (strncmp(s, "http://", 7) == 0)
		skip = 7;
	else
		return RS_OK;
	if (len > skip && s[len - 1] == '/')
		len--;
	if (!valid_authority(s + skip, len - skip))
		return RS_OK;
	*out = xalloc_strndup(s, len);
	return *out ? RS_OK : RS_NOMEM;
}

/* "scheme://user:secret@host": never echo such a value in a message. */
static bool url_has_userinfo(const char *s)
{
	const char *start = strstr(s, "://");
	start = start ? start + 3 : s;
	size_t auth_len = strcspn(start, "/?#");
	return memchr(start, '@', auth_len) != NULL;
}

static bool valid_env_name(const char *s)
{
	if (!(isalpha((unsigned char)s[0]) || s[0] == '_'))
		return false;
	for (const char *p = s; *p; p++)
		if (!(isalnum((unsigned char)*p) || *p == '_'))
			return false;
	return true;
}

/* "1024", "4MB", "512MiB", "20GiB": digits then an optional unit. */
static bool parse_size(uint64_t *out, const char *s)
{
	static const struct {
		const char *unit;
		uint64_t mult;
	} units[] = {
		{"", 1},
		{"B", 1},
		{"kB", 1000ull},
		{"KB", 1000ull},
		{"KiB", 1ull << 10},
		{"MB", 1000ull * 1000},
		{"MiB", 1ull << 20},
		{"GB", 1000ull * 1000 * 1000},
		{"GiB", 1ull << 30},
		{"TB", 1000ull * 1000 * 1000 * 1000},
		{"TiB", 1ull << 40},
	};
	uint64_t v = 0;
	const char *p = s;
	if (*p < '0' || *p > '9')
		return false;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(p, units[i].unit) != 0)
			continue;
		if (v > UINT64_MAX / units[i].mult)
			return false;
		*out = v * units[i].mult;
		return true;
	}
	return false;
}

/* ---- JSON accessors ----------------------------------------------------- */

static enum rs_code check_keys(const struct jsonload *ld, const char *path, const json_t *obj,
                               const char *const allowed[])
{
	const char *key = jsonload_unknown_key(obj, allowed);
	if (!key)
		return RS_OK;
	char list[RS_ERR_MSG_MAX], kp[PATH_MAX_CHARS];
	jsonload_key_list(list, sizeof(list), allowed);
	path_key(kp, sizeof(kp), path, key);
	return jsonload_fail(ld, RS_CONFIG, kp, "unknown key (allowed: %s)", list);
}

static enum rs_code get_object(const struct jsonload *ld, const char *path, const json_t *v)
{
	if (!json_is_object(v))
		return fail_value(ld, path, v, "an object");
	return RS_OK;
}

static enum rs_code get_bool(bool *out, const struct jsonload *ld, const char *path, const json_t *v)
{
	if (!json_is_boolean(v))
		return fail_value(ld, path, v, "true or false");
	*out = json_is_true(v);
	return RS_OK;
}

static enum rs_code get_uint(unsigned *out, const struct jsonload *ld, const char *path,
                             const json_t *v, unsigned min, unsigned max)
{
	if (!json_is_integer(v) || (min == 0 && json_integer_value(v) < 0))
		return fail_value(ld, path, v,
		                  min == 0 ? "a non-negative integer" : "a positive integer");
	json_int_t i = json_integer_value(v);
	if (i < (json_int_t)min || i > (json_int_t)max)
		return jsonload_fail(ld, RS_CONFIG, path, "expected an integer from %u to %u, got %" JSON_INTEGER_FORMAT,
		            min, max, i);
	*out = (unsigned)i;
	return RS_OK;
}

/* A new copy of a non-empty JSON string (caller frees). */
static enum rs_code get_string(char **out, const struct jsonload *ld, const char *path,
                               const json_t *v, const char *expected)
{
	if (!json_is_string(v) || json_string_length(v) == 0)
		return fail_value(ld, path, v, expected);
	*out = xalloc_strdup(json_string_value(v));
	if (!*out)
		return rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
	return RS_OK;
}

static enum rs_code get_size(uint64_t *out, const struct jsonload *ld, const char *path,
                             const json_t *v, uint64_t min, uint64_t max)
{
	uint64_t n = 0;
	bool ok = false;
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		n = (uint64_t)json_integer_value(v);
		ok = true;
	} else if (json_is_string(v)) {
		const char *s = json_string_value(v);
		ok = parse_size(&n, s);
		size_t digits = strspn(s, "0123456789");
		char probe[8];
		/* digits and a known unit that do not fit in 64 bits: too large,
		 * not garbage ("1" with the same unit parses) */
		if (!ok && digits > 0 && strlen(s + digits) < sizeof(probe) - 1) {
			probe[0] = '1';
			memcpy(probe + 1, s + digits, strlen(s + digits) + 1);
			uint64_t one;
			if (parse_size(&one, probe)) {
				char got[SHOW_MAX_CHARS + 8];
				show_value(got, sizeof(got), v);
				return jsonload_fail(ld, RS_CONFIG, path,
				            "expected a size from %" PRIu64 " to %" PRIu64 " bytes, got %s", min,
				            max, got);
			}
		}
	}
	if (!ok)
		return fail_value(ld, path, v,
		                  "a size: a non-negative integer or a string like \"20GiB\", \"512MiB\", \"4MB\"");
	if (n < min || n > max) {
		char got[SHOW_MAX_CHARS + 8];
		show_value(got, sizeof(got), v);
		return jsonload_fail(ld, RS_CONFIG, path,
		            "expected a size from %" PRIu64 " to %" PRIu64 " bytes, got %s", min, max, got);
	}
	*out = n;
	return RS_OK;
}

/* ---- secrets ------------------------------------------------------------ */

static void free_secret(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

/* Read a password file: regular file, at most RS_LIMIT_PASSWORD_FILE_MAX_BYTES,
 * trailing newline stripped, non-empty, one line, no NUL byte. */
static enum rs_code read_password_file(char **out, const struct jsonload *ld, const char *path,
                                       const char *file)
{
	enum rs_code rc = RS_OK;
	char buf[RS_LIMIT_PASSWORD_FILE_MAX_BYTES + 1];
	size_t len = 0;
	*out = NULL;
	FILE *f = fopen(file, "rb");
	if (!f)
		return jsonload_fail(ld, RS_CONFIG, path, "cannot open \"%s\": %s", file, strerror(errno));
	struct stat st;
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
		rc = jsonload_fail(ld, RS_CONFIG, path, "\"%s\" is not a regular file", file);
		goto out;
	}
	len = fread(buf, 1, sizeof(buf), f);
	if (ferror(f)) {
		rc = jsonload_fail(ld, RS_CONFIG, path, "cannot read \"%s\": %s", file, strerror(errno));
		goto out;
	}
	if (len > RS_LIMIT_PASSWORD_FILE_MAX_BYTES) {
		rc = jsonload_fail(ld, RS_CONFIG, path, "\"%s\" is larger than %u bytes (RS_LIMIT_PASSWORD_FILE_MAX_BYTES)",
		          file, (unsigned)RS_LIMIT_PASSWORD_FILE_MAX_BYTES);
		goto out;
	}
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	if (len == 0) {
		rc = jsonload_fail(ld, RS_CONFIG, path, "\"%s\" is empty, expected the password", file);
		goto out;
	}
	if (memchr(buf, '\0', len) || memchr(buf, '\n', len)) {
		rc = jsonload_fail(ld, RS_CONFIG, path,
		          "\"%s\" must hold the password on one line, without NUL bytes", file);
		goto out;
	}
	*out = xalloc_strndup(buf, len);
	if (!*out)
		rc = rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
out:
	explicit_bzero(buf, sizeof(buf));
	fclose(f);
	return rc;
}

static enum rs_code make_source(char **out, const struct jsonload *ld, const char *kind,
                                const char *what)
{
	size_t n = strlen(kind) + 1 + strlen(what) + 1;
	*out = xalloc_malloc(n);
	if (!*out)
		return rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
	snprintf(*out, n, "%s:%s", kind, what);
	return RS_OK;
}

/* ---- sections ----------------------------------------------------------- */

/* Whether path is not a readable regular file; then why[] says so:
 * 'cannot read "PATH": <errno text>' or '"PATH" is not a regular file'. */
static bool unreadable(char *why, size_t size, const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0 || (S_ISREG(st.st_mode) && access(path, R_OK) != 0)) {
		snprintf(why, size, "cannot read \"%s\": %s", path, strerror(errno));
		return true;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(why, size, "\"%s\" is not a regular file", path);
		return true;
	}
	return false;
}

static void upstream_dispose(struct rs_upstream_config *u)
{
	free(u->name);
	free(u->url);
	free(u->username);
	free_secret(u->password);
	free(u->password_source);
	free(u->ca_file);
	memset(u, 0, sizeof(*u));
}

static enum rs_code load_auth(struct rs_upstream_config *u, const struct jsonload *ld,
                              const char *path, const json_t *v)
{
	enum rs_code rc;
	char kp[PATH_MAX_CHARS];
	if ((rc = get_object(ld, path, v)) || (rc = check_keys(ld, path, v, auth_keys)))
		return rc;
	const json_t *user = json_object_get(v, "username");
	const json_t *penv = json_object_get(v, "password_env");
	const json_t *pfile = json_object_get(v, "password_file");
	path_key(kp, sizeof(kp), path, "username");
	if (!user)
		return jsonload_fail(ld, RS_CONFIG, kp, "missing, expected the user name as a string");
	if ((rc = get_string(&u->username, ld, kp, user, "a non-empty string")))
		return rc;
	if ((penv && pfile) || (!penv && !pfile))
		return jsonload_fail(ld, RS_CONFIG, path, "expected exactly one of password_env or password_file, got %s",
		            penv ? "both" : "neither");
	if (penv) {
		path_key(kp, sizeof(kp), path, "password_env");
		if (!json_is_string(penv) || !valid_env_name(json_string_value(penv)))
			return fail_value(ld, kp, penv, "an environment variable name");
		const char *name = json_string_value(penv);
		const char *val = getenv(name);
		if (!val || !val[0])
			return jsonload_fail(ld, RS_CONFIG, kp, "environment variable %s is %s, expected the password",
			            name, val ? "empty" : "not set");
		u->password = xalloc_strdup(val);
		if (!u->password)
			return rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
		return make_source(&u->password_source, ld, "env", name);
	}
	path_key(kp, sizeof(kp), path, "password_file");
	if (!json_is_string(pfile) || json_string_length(pfile) == 0)
		return fail_value(ld, kp, pfile, "a file path");
	const char *file = json_string_value(pfile);
	if ((rc = read_password_file(&u->password, ld, kp, file)))
		return rc;
	return make_source(&u->password_source, ld, "file", file);
}

/* One element of "upstreams". *is_default tells whether it said "default": true. */
static enum rs_code load_upstream(struct rs_upstream_config *u, bool *is_default,
                                  const struct jsonload *ld, const char *path, const json_t *v)
{
	enum rs_code rc;
	char kp[PATH_MAX_CHARS];
	const json_t *x;
	if ((rc = get_object(ld, path, v)) || (rc = check_keys(ld, path, v, upstream_keys)))
		return rc;

	path_key(kp, sizeof(kp), path, "name");
	x = json_object_get(v, "name");
	if (!x)
		return jsonload_fail(ld, RS_CONFIG, kp, "missing, expected a registry host name like \"docker.io\"");
	if (!json_is_string(x) || !valid_registry_name(json_string_value(x)))
		return fail_value(ld, kp, x,
		                  "a registry host name (lower-case letters, digits, '.', '-', optional :port)");
	if ((rc = get_string(&u->name, ld, kp, x, "a string")))
		return rc;

	path_key(kp, sizeof(kp), path, "url");
	x = json_object_get(v, "url");
	if (!x)
		return jsonload_fail(ld, RS_CONFIG, kp, "missing, expected an http:// or https:// URL");
	if (json_is_string(x) && (rc = normalize_url(&u->url, json_string_value(x))))
		return rs_err_set(ld->err, rc, "out of memory loading %s", ld->file);
	if (!u->url && json_is_string(x) && url_has_userinfo(json_string_value(x)))
		return jsonload_fail(ld, RS_CONFIG, kp, "expected a URL without user info, put credentials in auth");
	if (!u->url)
		return fail_value(ld, kp, x, "an http:// or https:// URL with host[:port] and no path");

	*is_default = false;
	path_key(kp, sizeof(kp), path, "default");
	if ((x = json_object_get(v, "default")) && (rc = get_bool(is_default, ld, kp, x)))
		return rc;

	u->tag_ttl_s = RS_LIMIT_TAG_TTL_DEFAULT_S;
	path_key(kp, sizeof(kp), path, "tag_ttl_s");
	if ((x = json_object_get(v, "tag_ttl_s")) &&
	    (rc = get_uint(&u->tag_ttl_s, ld, kp, x, 0, RS_LIMIT_TAG_TTL_MAX_S)))
		return rc;

	u->timeout_s = RS_LIMIT_UPSTREAM_TIMEOUT_DEFAULT_S;
	path_key(kp, sizeof(kp), path, "timeout_s");
	if ((x = json_object_get(v, "timeout_s")) &&
	    (rc = get_uint(&u->timeout_s, ld, kp, x, 1, RS_LIMIT_UPSTREAM_TIMEOUT_MAX_S)))
		return rc;

	u->tls_verify = true;
	path_key(kp, sizeof(kp), path, "tls_verify");
	if ((x = json_object_get(v, "tls_verify")) && (rc = get_bool(&u->tls_verify, ld, kp, x)))
		return rc;

	path_key(kp, sizeof(kp), path, "ca_file");
	if ((x = json_object_get(v, "ca_file"))) {
		if ((rc = get_string(&u->ca_file, ld, kp, x, "a file path")))
			return rc;
		char why[RS_ERR_MSG_MAX];
		if (unreadable(why, sizeof(why), u->ca_file))
			return jsonload_fail(ld, RS_CONFIG, kp, "%s", why);
	}

	u->library_prefix = strcmp(u->name, RS_DOCKER_HUB_NAME) == 0;
	path_key(kp, sizeof(kp), path, "library_prefix");
	if ((x = json_object_get(v, "library_prefix")) &&
	    (rc = get_bool(&u->library_prefix, ld, kp, x)))
		return rc;

	path_key(kp, sizeof(kp), path, "auth");
	if ((x = json_object_get(v, "auth")) && (rc = load_auth(u, ld, kp, x)))
		return rc;
	return RS_OK;
}

static void upstreams_free(struct rs_upstream_config *ups, size_t count)
{
	for (size_t i = 0; i < count; i++)
		upstream_dispose(&ups[i]);
	free(ups);
}

static enum rs_code load_upstreams(struct rs_config *cfg, const struct jsonload *ld, const json_t *v)
{
	enum rs_code rc = RS_OK;
	size_t n = json_array_size(v);
	if (!json_is_array(v) || n == 0)
		return fail_value(ld, "upstreams", v, "a non-empty array of upstream objects");
	if (n > RS_LIMIT_UPSTREAMS_MAX)
		return jsonload_fail(ld, RS_CONFIG, "upstreams", "has %zu entries, the limit is %u (RS_LIMIT_UPSTREAMS_MAX)",
		            n, (unsigned)RS_LIMIT_UPSTREAMS_MAX);
	struct rs_upstream_config *ups = xalloc_calloc(n, sizeof(*ups));
	if (!ups)
		return rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
	size_t def = 0;
	bool have_def = false;
	for (size_t i = 0; i < n; i++) {
		char path[PATH_MAX_CHARS];
		char kp[PATH_MAX_CHARS];
		bool is_def = false;
		path_index(path, sizeof(path), "upstreams", i);
		if ((rc = load_upstream(&ups[i], &is_def, ld, path, json_array_get(v, i))))
			goto out;
		for (size_t j = 0; j < i; j++) {
			if (strcmp(ups[j].name, ups[i].name) == 0) {
				path_key(kp, sizeof(kp), path, "name");
				rc = jsonload_fail(ld, RS_CONFIG, kp, "duplicate upstream name \"%s\" (also upstreams[%zu].name)",
				          ups[i].name, j);
				goto out;
			}
		}
		if (is_def && have_def) {
			path_key(kp, sizeof(kp), path, "default");
			rc = jsonload_fail(ld, RS_CONFIG, kp, "only one upstream may be the default, upstreams[%zu] already is",
			          def);
			goto out;
		}
		if (is_def) {
			have_def = true;
			def = i;
		}
	}
	upstreams_free(cfg->upstreams, cfg->upstream_count);
	cfg->upstreams = ups;
	cfg->upstream_count = n;
	cfg->default_upstream = def;
	return RS_OK;
out:
	/* calloc'd: entries not reached are zeroed and dispose as nothing */
	upstreams_free(ups, n);
	return rc;
}

/* ---- auth and push ------------------------------------------------------ */

static void names_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

/* A user or group name: non-empty, printable, no ':' (htpasswd separator),
 * no whitespace, no '|' (token field separator). */
static bool valid_principal(const char *s)
{
	if (!s[0] || strlen(s) > 255)
		return false;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p <= ' ' || *p == ':' || *p == '|' || *p == 0x7f)
			return false;
	return true;
}

/* A non-empty array of principal names (or "*" when allow_star). */
static enum rs_code get_names(char ***out, size_t *out_n, const struct jsonload *ld, const char *path,
                              const json_t *v, bool allow_star)
{
	size_t n = json_array_size(v);
	if (!json_is_array(v) || n == 0)
		return fail_value(ld, path, v, "a non-empty array of names");
	if (n > RS_LIMIT_ACL_NAMES_MAX)
		return jsonload_fail(ld, RS_CONFIG, path, "has %zu entries, the limit is %u (RS_LIMIT_ACL_NAMES_MAX)", n,
		            (unsigned)RS_LIMIT_ACL_NAMES_MAX);
	char **names = xalloc_calloc(n, sizeof(*names));
	if (!names)
		return rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
	enum rs_code rc = RS_OK;
	for (size_t i = 0; i < n; i++) {
		char ip[PATH_MAX_CHARS + 32];
		const json_t *e = json_array_get(v, i);
		path_index(ip, sizeof(ip), path, i);
		if (!json_is_string(e) ||
		    !(valid_principal(json_string_value(e)) || (allow_star && strcmp(json_string_value(e), "*") == 0))) {
			rc = fail_value(ld, ip, e,
			                allow_star ? "a user name without ':', '|' or spaces, or \"*\""
			                           : "a name without ':', '|' or spaces");
			goto out;
		}
		if ((rc = get_string(&names[i], ld, ip, e, "a name")))
			goto out;
	}
	*out = names;
	*out_n = n;
	return RS_OK;
out:
	names_free(names, n);
	return rc;
}

static void auth_dispose(struct rs_auth_config *a)
{
	free(a->htpasswd);
	free(a->token_secret_file);
	free(a->realm);
	for (size_t i = 0; a->acl && i < a->acl_count; i++) {
		free(a->acl[i].repository);
		names_free(a->acl[i].users, a->acl[i].user_count);
		names_free(a->acl[i].groups, a->acl[i].group_count);
	}
	free(a->acl);
	for (size_t i = 0; a->groups && i < a->group_count; i++) {
		free(a->groups[i].name);
		names_free(a->groups[i].members, a->groups[i].member_count);
	}
	free(a->groups);
	memset(a, 0, sizeof(*a));
}

static enum rs_code load_groups(struct rs_auth_config *a, const struct jsonload *ld, const json_t *v)
{
	if (!json_is_object(v))
		return fail_value(ld, "auth.groups", v, "an object mapping group names to arrays of user names");
	size_t n = json_object_size(v);
	if (n > RS_LIMIT_ACL_NAMES_MAX)
		return jsonload_fail(ld, RS_CONFIG, "auth.groups", "has %zu groups, the limit is %u (RS_LIMIT_ACL_NAMES_MAX)", n,
		            (unsigned)RS_LIMIT_ACL_NAMES_MAX);
	if (n == 0)
		return RS_OK;
	a->groups = xalloc_calloc(n, sizeof(*a->groups));
	if (!a->groups)
		return rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
	const char *key;
	json_t *members;
	enum rs_code rc;
	json_object_foreach((json_t *)v, key, members) {
		char kp[PATH_MAX_CHARS];
		path_key(kp, sizeof(kp), "auth.groups", key);
		if (!valid_principal(key))
			return jsonload_fail(ld, RS_CONFIG, kp, "a group name must be non-empty, without ':', '|' or spaces");
		struct rs_auth_group *g = &a->groups[a->group_count++];
		if (!(g->name = xalloc_strdup(key)))
			return rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
		if ((rc = get_names(&g->members, &g->member_count, ld, kp, members, false)))
			return rc;
	}
	return RS_OK;
}

static enum rs_code load_acl_rule(struct rs_acl_rule *r, const struct rs_auth_config *a, const struct jsonload *ld,
                                  const char *path, const json_t *v)
{
	enum rs_code rc;
	const json_t *x;
	char kp[PATH_MAX_CHARS];
	if ((rc = get_object(ld, path, v)) || (rc = check_keys(ld, path, v, acl_keys)))
		return rc;
	path_key(kp, sizeof(kp), path, "repository");
	if (!(x = json_object_get(v, "repository")))
		return jsonload_fail(ld, RS_CONFIG, kp, "missing; expected a repository glob such as \"team-a/*\" or \"*\"");
	if (json_is_string(x) && json_string_length(x) > RS_LIMIT_NAME_MAX)
		return jsonload_fail(ld, RS_CONFIG, kp, "longer than %u bytes (RS_LIMIT_NAME_MAX)", (unsigned)RS_LIMIT_NAME_MAX);
	if ((rc = get_string(&r->repository, ld, kp, x, "a repository glob such as \"team-a/*\"")))
		return rc;
	const json_t *users = json_object_get(v, "users");
	const json_t *groups = json_object_get(v, "groups");
	if (!users && !groups)
		return jsonload_fail(ld, RS_CONFIG, path, "needs \"users\" or \"groups\" (or both)");
	path_key(kp, sizeof(kp), path, "users");
	if (users && (rc = get_names(&r->users, &r->user_count, ld, kp, users, true)))
		return rc;
	path_key(kp, sizeof(kp), path, "groups");
	if (groups && (rc = get_names(&r->groups, &r->group_count, ld, kp, groups, false)))
		return rc;
	for (size_t i = 0; i < r->group_count; i++) {
		bool found = false;
		for (size_t j = 0; j < a->group_count; j++)
			if (strcmp(a->groups[j].name, r->groups[i]) == 0)
				found = true;
		if (!found) {
			char ip[PATH_MAX_CHARS + 32];
			path_index(ip, sizeof(ip), kp, i);
			return jsonload_fail(ld, RS_CONFIG, ip, "group \"%s\" is not defined in auth.groups", r->groups[i]);
		}
	}
	path_key(kp, sizeof(kp), path, "actions");
	x = json_object_get(v, "actions");
	size_t n = json_array_size(x);
	if (!x)
		return jsonload_fail(ld, RS_CONFIG, kp, "missing; expected an array of \"pull\" and \"push\"");
	if (!json_is_array(x) || n == 0)
		return fail_value(ld, kp, x, "a non-empty array of \"pull\" and \"push\"");
	for (size_t i = 0; i < n; i++) {
		const json_t *e = json_array_get(x, i);
		const char *s = json_is_string(e) ? json_string_value(e) : "";
		if (strcmp(s, "pull") == 0) {
			r->pull = true;
		} else if (strcmp(s, "push") == 0) {
			r->push = true;
		} else {
			char ip[PATH_MAX_CHARS + 32];
			path_index(ip, sizeof(ip), kp, i);
			return fail_value(ld, ip, e, "\"pull\" or \"push\"");
		}
	}
	return RS_OK;
}

static enum rs_code load_auth_section(struct rs_config *cfg, const struct jsonload *ld, const json_t *v)
{
	enum rs_code rc;
	const json_t *x;
	struct rs_auth_config *a = &cfg->auth;
	if ((rc = get_object(ld, "auth", v)) || (rc = check_keys(ld, "auth", v, auth_section_keys)))
		return rc;
	a->enabled = true;
	if (!(x = json_object_get(v, "htpasswd")))
		return jsonload_fail(ld, RS_CONFIG, "auth.htpasswd",
		            "missing; expected the path of an htpasswd file with bcrypt entries (htpasswd -B)");
	if ((rc = get_string(&a->htpasswd, ld, "auth.htpasswd", x, "the path of an htpasswd file")))
		return rc;
	if ((x = json_object_get(v, "token_secret_file")) &&
	    (rc = get_string(&a->token_secret_file, ld, "auth.token_secret_file", x, "a file path")))
		return rc;
	if ((x = json_object_get(v, "realm"))) {
		if (!json_is_string(x) || (strncmp(json_string_value(x), "http://", 7) != 0 &&
		                           strncmp(json_string_value(x), "https://", 8) != 0))
			return fail_value(ld, "auth.realm", x, "an http:// or https:// URL of the token endpoint");
		if (strpbrk(json_string_value(x), "\"\\ \r\n"))
			return fail_value(ld, "auth.realm", x, "a URL without quotes, backslashes or spaces");
		if ((rc = get_string(&a->realm, ld, "auth.realm", x, "a URL")))
			return rc;
	}
	if ((x = json_object_get(v, "token_ttl_s")) &&
	    (rc = get_uint(&a->token_ttl_s, ld, "auth.token_ttl_s", x, 1, RS_LIMIT_TOKEN_TTL_MAX_S)))
		return rc;
	if ((x = json_object_get(v, "anonymous_pull")) &&
	    (rc = get_bool(&a->anonymous_pull, ld, "auth.anonymous_pull", x)))
		return rc;
	if ((x = json_object_get(v, "groups")) && (rc = load_groups(a, ld, x)))
		return rc;
	if ((x = json_object_get(v, "acl"))) {
		size_t n = json_array_size(x);
		if (!json_is_array(x))
			return fail_value(ld, "auth.acl", x, "an array of rules");
		if (n > RS_LIMIT_ACL_RULES_MAX)
			return jsonload_fail(ld, RS_CONFIG, "auth.acl", "has %zu rules, the limit is %u (RS_LIMIT_ACL_RULES_MAX)", n,
			            (unsigned)RS_LIMIT_ACL_RULES_MAX);
		a->acl_set = true;
		if (n > 0 && !(a->acl = xalloc_calloc(n, sizeof(*a->acl))))
			return rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
		for (size_t i = 0; i < n; i++) {
			char path[PATH_MAX_CHARS];
			path_index(path, sizeof(path), "auth.acl", i);
			a->acl_count = i + 1;
			if ((rc = load_acl_rule(&a->acl[i], a, ld, path, json_array_get(x, i))))
				return rc;
		}
	}
	return RS_OK;
}

static enum rs_code load_push_section(struct rs_config *cfg, const struct jsonload *ld, const json_t *v)
{
	enum rs_code rc;
	const json_t *x;
	if ((rc = get_object(ld, "push", v)) || (rc = check_keys(ld, "push", v, push_keys)))
		return rc;
	if ((x = json_object_get(v, "max_blob_bytes")) &&
	    (rc = get_size(&cfg->push.max_blob_bytes, ld, "push.max_blob_bytes", x, 1, SIZE_MAX_BYTES)))
		return rc;
	if ((x = json_object_get(v, "upload_idle_timeout_s")) &&
	    (rc = get_uint(&cfg->push.upload_idle_timeout_s, ld, "push.upload_idle_timeout_s", x, 1,
	                   RS_LIMIT_UPLOAD_IDLE_MAX_S)))
		return rc;
	if ((x = json_object_get(v, "gc_grace_s")) &&
	    (rc = get_uint(&cfg->push.gc_grace_s, ld, "push.gc_grace_s", x, 0, RS_LIMIT_GC_GRACE_MAX_S)))
		return rc;
	if ((x = json_object_get(v, "gc_interval_s")) &&
	    (rc = get_uint(&cfg->push.gc_interval_s, ld, "push.gc_interval_s", x, 0, RS_LIMIT_GC_INTERVAL_MAX_S)))
		return rc;
	if ((x = json_object_get(v, "stream_uploads")) &&
	    (rc = get_bool(&cfg->push.stream_uploads, ld, "push.stream_uploads", x)))
		return rc;
	if ((x = json_object_get(v, "upstream"))) {
		if (!json_is_string(x) || !config_find_upstream(cfg, json_string_value(x)))
			return fail_value(ld, "push.upstream", x, "the name of a configured upstream");
		if ((rc = get_string(&cfg->push.upstream, ld, "push.upstream", x, "a string")))
			return rc;
	}
	if ((x = json_object_get(v, "policies")) &&
	    (rc = gate_policies_load(&cfg->push.policies, &cfg->push.policy_count, ld->file, "push.policies", x,
	                             ld->err)))
		return rc;
	return RS_OK;
}

/* ------------------------------------------------------------ optimize */

static void opt_policy_dispose(struct rs_opt_policy *p)
{
	free(p->upstream);
	names_free(p->repositories, p->repository_count);
	free(p->policy_file);
	memset(p, 0, sizeof(*p));
}

static void optimize_dispose(struct rs_optimize_config *o)
{
	for (size_t i = 0; o->policies && i < o->policy_count; i++)
		opt_policy_dispose(&o->policies[i]);
	free(o->policies);
	o->policies = NULL;
	o->policy_count = 0;
}

/* The built-in policy list: docker.io, every repository, default policy, auto. */
static enum rs_code optimize_defaults(struct rs_optimize_config *o)
{
	o->enabled = true;
	o->sync_timeout_s = RS_LIMIT_OPT_SYNC_TIMEOUT_DEFAULT_S;
	o->policies = xalloc_calloc(1, sizeof(*o->policies));
	if (!o->policies)
		return RS_NOMEM;
	o->policy_count = 1;
	struct rs_opt_policy *p = &o->policies[0];
	p->upstream = xalloc_strdup(RS_DOCKER_HUB_NAME);
	p->repositories = xalloc_calloc(1, sizeof(*p->repositories));
	if (p->repositories) {
		p->repository_count = 1;
		p->repositories[0] = xalloc_strdup("*");
	}
	p->compression = RS_OPT_COMPRESS_AUTO;
	p->unknown_clients = RS_OPT_COMPRESS_GZIP;
	if (!p->upstream || !p->repositories || !p->repositories[0])
		return RS_NOMEM;
	return RS_OK;
}

static enum rs_code get_compression(enum rs_opt_compression *out, const struct jsonload *ld, const char *path,
                                    const json_t *v, bool allow_auto)
{
	const char *s = json_is_string(v) ? json_string_value(v) : "";
	if (allow_auto && strcmp(s, "auto") == 0)
		*out = RS_OPT_COMPRESS_AUTO;
	else if (strcmp(s, "zstd") == 0)
		*out = RS_OPT_COMPRESS_ZSTD;
	else if (strcmp(s, "gzip") == 0)
		*out = RS_OPT_COMPRESS_GZIP;
	else
		return fail_value(ld, path, v, allow_auto ? "one of \"auto\", \"zstd\", \"gzip\"" : "\"gzip\" or \"zstd\"");
	return RS_OK;
}

static enum rs_code load_opt_policy(struct rs_opt_policy *p, const struct rs_config *cfg, const struct jsonload *ld,
                                    const char *path, const json_t *v)
{
	enum rs_code rc;
	char kp[PATH_MAX_CHARS];
	const json_t *x;
	if ((rc = get_object(ld, path, v)) || (rc = check_keys(ld, path, v, opt_policy_keys)))
		return rc;
	p->compression = RS_OPT_COMPRESS_AUTO;
	p->unknown_clients = RS_OPT_COMPRESS_GZIP;

	path_key(kp, sizeof(kp), path, "upstream");
	x = json_object_get(v, "upstream");
	if (!x)
		return jsonload_fail(ld, RS_CONFIG, kp, "missing, expected the name of a configured upstream");
	if (!json_is_string(x) || !config_find_upstream(cfg, json_string_value(x)))
		return fail_value(ld, kp, x, "the name of a configured upstream");
	if ((rc = get_string(&p->upstream, ld, kp, x, "a string")))
		return rc;

	path_key(kp, sizeof(kp), path, "repositories");
	x = json_object_get(v, "repositories");
	if (!x)
		return jsonload_fail(ld, RS_CONFIG, kp, "missing, expected a non-empty array of repository globs like [\"*\"]");
	size_t n = json_array_size(x);
	if (!json_is_array(x) || n == 0)
		return fail_value(ld, kp, x, "a non-empty array of repository globs");
	if (n > RS_LIMIT_OPT_GLOBS_MAX)
		return jsonload_fail(ld, RS_CONFIG, kp, "has %zu entries, the limit is %u (RS_LIMIT_OPT_GLOBS_MAX)", n,
		            (unsigned)RS_LIMIT_OPT_GLOBS_MAX);
	p->repositories = xalloc_calloc(n, sizeof(*p->repositories));
	if (!p->repositories)
		return rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
	p->repository_count = n;
	for (size_t i = 0; i < n; i++) {
		char ip[PATH_MAX_CHARS + 32];
		path_index(ip, sizeof(ip), kp, i);
		if ((rc = get_string(&p->repositories[i], ld, ip, json_array_get(x, i), "a non-empty glob string")))
			return rc;
	}

	path_key(kp, sizeof(kp), path, "policy_file");
	if ((x = json_object_get(v, "policy_file"))) {
		if ((rc = get_string(&p->policy_file, ld, kp, x, "a policy file path")))
			return rc;
		struct policy pol;
		struct rs_err perr = {0};
		if (policy_load(&pol, p->policy_file, &perr) != RS_OK)
			return jsonload_fail(ld, RS_CONFIG, kp, "%s", perr.msg);
		policy_dispose(&pol);
	}
	path_key(kp, sizeof(kp), path, "compression");
	if ((x = json_object_get(v, "compression")) && (rc = get_compression(&p->compression, ld, kp, x, true)))
		return rc;
	path_key(kp, sizeof(kp), path, "unknown_clients");
	if ((x = json_object_get(v, "unknown_clients")) &&
	    (rc = get_compression(&p->unknown_clients, ld, kp, x, false)))
		return rc;
	return RS_OK;
}

static enum rs_code load_optimize_section(struct rs_config *cfg, const struct jsonload *ld, const json_t *v)
{
	enum rs_code rc;
	const json_t *x;
	struct rs_optimize_config *o = &cfg->optimize;
	if ((rc = get_object(ld, "optimize", v)) || (rc = check_keys(ld, "optimize", v, optimize_keys)))
		return rc;
	if ((x = json_object_get(v, "enabled")) && (rc = get_bool(&o->enabled, ld, "optimize.enabled", x)))
		return rc;
	if ((x = json_object_get(v, "sync_timeout_s")) &&
	    (rc = get_uint(&o->sync_timeout_s, ld, "optimize.sync_timeout_s", x, 0, RS_LIMIT_OPT_SYNC_TIMEOUT_MAX_S)))
		return rc;
	if (!(x = json_object_get(v, "policies")))
		return RS_OK;
	size_t n = json_array_size(x);
	if (!json_is_array(x))
		return fail_value(ld, "optimize.policies", x, "an array of policy objects");
	if (n > RS_LIMIT_OPT_POLICIES_MAX)
		return jsonload_fail(ld, RS_CONFIG, "optimize.policies", "has %zu entries, the limit is %u (RS_LIMIT_OPT_POLICIES_MAX)",
		            n, (unsigned)RS_LIMIT_OPT_POLICIES_MAX);
	optimize_dispose(o);
	if (n == 0)
		return RS_OK;
	o->policies = xalloc_calloc(n, sizeof(*o->policies));
	if (!o->policies)
		return rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
	o->policy_count = n;
	for (size_t i = 0; i < n; i++) {
		char kp[PATH_MAX_CHARS];
		path_index(kp, sizeof(kp), "optimize.policies", i);
		if ((rc = load_opt_policy(&o->policies[i], cfg, ld, kp, json_array_get(x, i))))
			return rc;
	}
	return RS_OK;
}

static const char *opt_compression_name(enum rs_opt_compression c)
{
	return c == RS_OPT_COMPRESS_ZSTD ? "zstd" : c == RS_OPT_COMPRESS_GZIP ? "gzip" : "auto";
}

const struct rs_opt_policy *config_find_opt_policy(const struct rs_config *cfg, const char *upstream,
                                                   const char *repo)
{
	if (!cfg->optimize.enabled)
		return NULL;
	const char *short_name = strncmp(repo, "library/", 8) == 0 && !strchr(repo + 8, '/') ? repo + 8 : NULL;
	for (size_t i = 0; i < cfg->optimize.policy_count; i++) {
		const struct rs_opt_policy *p = &cfg->optimize.policies[i];
		if (strcmp(p->upstream, upstream) != 0)
			continue;
		for (size_t j = 0; j < p->repository_count; j++)
			if (fnmatch(p->repositories[j], repo, 0) == 0 ||
			    (short_name && fnmatch(p->repositories[j], short_name, 0) == 0))
				return p;
	}
	return NULL;
}

static void replace_string(char **slot, char *fresh)
{
	free(*slot);
	*slot = fresh;
}

static void tls_dispose(struct rs_tls_config *t)
{
	free(t->cert_file);
	free(t->key_file);
	free(t->client_ca_file);
	memset(t, 0, sizeof(*t));
}

/* One file of the tls section: a readable regular file. */
static enum rs_code get_tls_file(char **out, const struct jsonload *ld, const json_t *tls, const char *key,
                                 const char *kp, const char *what)
{
	char why[RS_ERR_MSG_MAX];
	enum rs_code rc;
	const json_t *x = json_object_get(tls, key);
	if (!x)
		return jsonload_fail(ld, RS_CONFIG, kp, "missing, expected %s", what);
	if ((rc = get_string(out, ld, kp, x, what)))
		return rc;
	if (unreadable(why, sizeof(why), *out))
		return jsonload_fail(ld, RS_CONFIG, kp, "%s", why);
	return RS_OK;
}

static enum rs_code load_tls_section(struct rs_config *cfg, const struct jsonload *ld, const json_t *v)
{
	enum rs_code rc;
	struct rs_tls_config *t = &cfg->tls;
	if ((rc = get_object(ld, "tls", v)) || (rc = check_keys(ld, "tls", v, tls_keys)))
		return rc;
	t->enabled = true;
	if ((rc = get_tls_file(&t->cert_file, ld, v, "cert_file", "tls.cert_file", "the path of a PEM certificate file")) ||
	    (rc = get_tls_file(&t->key_file, ld, v, "key_file", "tls.key_file", "the path of a PEM private key file")))
		return rc;
	if (json_object_get(v, "client_ca_file") &&
	    (rc = get_tls_file(&t->client_ca_file, ld, v, "client_ca_file", "tls.client_ca_file",
	                                 "the path of a PEM CA file")))
		return rc;
	return RS_OK;
}

/* ------------------------------------------------------------ store */

static void store_dispose(struct rs_store_config *st)
{
	struct rs_store_s3_config *c = &st->s3;
	free(st->driver);
	free(c->endpoint);
	free(c->region);
	free(c->bucket);
	free(c->access_key_env);
	free(c->secret_key_env);
	free(c->access_key_file);
	free(c->secret_key_file);
	free(c->prefix);
	memset(st, 0, sizeof(*st));
}

/* One optional string key of store.s3 into *slot (replacing nothing: the
 * section is read once). */
static enum rs_code get_s3_string(char **slot, const struct jsonload *ld, const json_t *v, const char *key,
                                  const char *expected)
{
	const json_t *x = json_object_get(v, key);
	if (!x)
		return RS_OK;
	char kp[PATH_MAX_CHARS];
	snprintf(kp, sizeof(kp), "store.s3.%s", key);
	return get_string(slot, ld, kp, x, expected);
}

static enum rs_code load_store_s3(struct rs_store_s3_config *c, const struct jsonload *ld, const json_t *v)
{
	enum rs_code rc;
	const json_t *x;
	if ((rc = get_object(ld, "store.s3", v)) || (rc = check_keys(ld, "store.s3", v, store_s3_keys)))
		return rc;
	static const char *const required[] = {"endpoint", "region", "bucket"};
	for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
		if (!json_object_get(v, required[i])) {
			char kp[PATH_MAX_CHARS];
			snprintf(kp, sizeof(kp), "store.s3.%s", required[i]);
			return jsonload_fail(ld, RS_CONFIG, kp, "missing; the s3 driver needs endpoint, region and bucket");
		}
	x = json_object_get(v, "endpoint");
	if (!json_is_string(x) || (strncmp(json_string_value(x), "http://", 7) != 0 &&
	                           strncmp(json_string_value(x), "https://", 8) != 0))
		return fail_value(ld, "store.s3.endpoint", x, "an http:// or https:// URL");
	if ((rc = get_s3_string(&c->endpoint, ld, v, "endpoint", "an http:// or https:// URL")) ||
	    (rc = get_s3_string(&c->region, ld, v, "region", "a region name such as \"us-east-1\"")) ||
	    (rc = get_s3_string(&c->bucket, ld, v, "bucket", "a bucket name")) ||
	    (rc = get_s3_string(&c->access_key_env, ld, v, "access_key_env", "an environment variable name")) ||
	    (rc = get_s3_string(&c->secret_key_env, ld, v, "secret_key_env", "an environment variable name")) ||
	    (rc = get_s3_string(&c->access_key_file, ld, v, "access_key_file", "a file path")) ||
	    (rc = get_s3_string(&c->secret_key_file, ld, v, "secret_key_file", "a file path")) ||
	    (rc = get_s3_string(&c->prefix, ld, v, "prefix", "a non-empty key prefix")))
		return rc;
	if ((x = json_object_get(v, "path_style")) && (rc = get_bool(&c->path_style, ld, "store.s3.path_style", x)))
		return rc;
	if ((x = json_object_get(v, "local_cache_bytes")) &&
	    (rc = get_size(&c->local_cache_bytes, ld, "store.s3.local_cache_bytes", x, 0, SIZE_MAX_BYTES)))
		return rc;
	if (!c->access_key_env && !c->access_key_file)
		return jsonload_fail(ld, RS_CONFIG, "store.s3.access_key_env",
		                     "missing; set access_key_env or access_key_file (secrets never go in the file)");
	if (!c->secret_key_env && !c->secret_key_file)
		return jsonload_fail(ld, RS_CONFIG, "store.s3.secret_key_env",
		                     "missing; set secret_key_env or secret_key_file (secrets never go in the file)");
	if (c->prefix && (c->prefix[0] == '/' || strstr(c->prefix, "..") || strlen(c->prefix) > 200))
		return fail_value(ld, "store.s3.prefix", json_object_get(v, "prefix"),
		                  "a key prefix without a leading '/' or '..', at most 200 bytes");
	return RS_OK;
}

static enum rs_code load_store_section(struct rs_config *cfg, const struct jsonload *ld, const json_t *v)
{
	enum rs_code rc;
	const json_t *x;
	if ((rc = get_object(ld, "store", v)) || (rc = check_keys(ld, "store", v, store_keys)))
		return rc;
	if ((x = json_object_get(v, "driver"))) {
		if (!json_is_string(x) ||
		    (strcmp(json_string_value(x), "fs") != 0 && strcmp(json_string_value(x), "s3") != 0))
			return fail_value(ld, "store.driver", x, "\"fs\" or \"s3\"");
		char *s = NULL;
		if ((rc = get_string(&s, ld, "store.driver", x, "\"fs\" or \"s3\"")))
			return rc;
		replace_string(&cfg->store.driver, s);
	}
	bool s3 = strcmp(cfg->store.driver, "s3") == 0;
	x = json_object_get(v, "s3");
	if (s3 && !x)
		return jsonload_fail(ld, RS_CONFIG, "store.s3", "missing; driver \"s3\" needs the s3 section");
	if (!s3 && x)
		return jsonload_fail(ld, RS_CONFIG, "store.s3", "set, but store.driver is \"fs\"; set it to \"s3\"");
	return x ? load_store_s3(&cfg->store.s3, ld, x) : RS_OK;
}

/* ------------------------------------------------------------ signatures */

static void signatures_dispose(struct rs_signatures_config *g)
{
	free(g->gpg_home);
	free(g->gpg_key);
	free(g->cosign_key_file);
	for (size_t i = 0; g->verify && i < g->verify_count; i++) {
		struct rs_verify_rule *v = &g->verify[i];
		free(v->upstream);
		names_free(v->repositories, v->repository_count);
		free(v->gpg_keyring);
		names_free(v->cosign_public_keys, v->cosign_key_count);
		free(v->lookaside);
	}
	free(g->verify);
	memset(g, 0, sizeof(*g));
}

/* A readable regular file named by key kp of obj (a new string in *out). */
static enum rs_code get_key_file(char **out, const struct jsonload *ld, const char *kp, const json_t *x,
                                 const char *what)
{
	char why[RS_ERR_MSG_MAX];
	enum rs_code rc = get_string(out, ld, kp, x, what);
	if (rc == RS_OK && unreadable(why, sizeof(why), *out))
		rc = jsonload_fail(ld, RS_CONFIG, kp, "%s", why);
	return rc;
}

/* An OpenPGP v4 fingerprint: 40 hex digits, spaces allowed between groups
 * (as gpg prints it); kept upper-case without spaces. */
static enum rs_code get_fingerprint(char **out, const struct jsonload *ld, const char *kp, const json_t *x)
{
	char fpr[41];
	size_t n = 0;
	const char *s = json_is_string(x) ? json_string_value(x) : "";
	for (; *s; s++) {
		if (*s == ' ')
			continue;
		if (!isxdigit((unsigned char)*s) || n == 40) {
			n = 41;
			break;
		}
		fpr[n++] = (char)toupper((unsigned char)*s);
	}
	if (n != 40)
		return fail_value(ld, kp, x, "the 40 hex digits of an OpenPGP key fingerprint");
	fpr[40] = '\0';
	*out = xalloc_strdup(fpr);
	return *out ? RS_OK : rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
}

static enum rs_code load_sign_section(struct rs_signatures_config *g, const struct jsonload *ld, const json_t *v)
{
	enum rs_code rc;
	const json_t *x;
	if ((rc = get_object(ld, "signatures.sign", v)) || (rc = check_keys(ld, "signatures.sign", v, sign_keys)))
		return rc;
	const json_t *home = json_object_get(v, "gpg_home");
	const json_t *key = json_object_get(v, "gpg_key");
	if (!home && !key && !json_object_get(v, "cosign_key_file"))
		return jsonload_fail(ld, RS_CONFIG, "signatures.sign",
		                     "expected gpg_home and gpg_key, or cosign_key_file (or both)");
	if (home || key) {
		if (!home)
			return jsonload_fail(ld, RS_CONFIG, "signatures.sign.gpg_home",
			                     "missing, expected the GnuPG home directory holding gpg_key");
		if (!key)
			return jsonload_fail(ld, RS_CONFIG, "signatures.sign.gpg_key",
			                     "missing, expected the fingerprint of the signing key in gpg_home");
		if ((rc = get_string(&g->gpg_home, ld, "signatures.sign.gpg_home", home, "a directory path")))
			return rc;
		struct stat st;
		if (stat(g->gpg_home, &st) != 0)
			return jsonload_fail(ld, RS_CONFIG, "signatures.sign.gpg_home", "cannot use \"%s\": %s",
			                     g->gpg_home, strerror(errno));
		if (!S_ISDIR(st.st_mode))
			return jsonload_fail(ld, RS_CONFIG, "signatures.sign.gpg_home", "\"%s\" is not a directory",
			                     g->gpg_home);
		if ((rc = get_fingerprint(&g->gpg_key, ld, "signatures.sign.gpg_key", key)))
			return rc;
	}
	if ((x = json_object_get(v, "cosign_key_file")) &&
	    (rc = get_key_file(&g->cosign_key_file, ld, "signatures.sign.cosign_key_file", x,
	                       "the path of a PEM private key file")))
		return rc;
	return RS_OK;
}

/* "file:///absolute/dir" or an http(s) URL with a host and any path; the
 * trailing slash is dropped. NULL in *out when v is neither. */
static enum rs_code normalize_lookaside(char **out, const char *s)
{
	*out = NULL;
	size_t len = strlen(s);
	while (len > 1 && s[len - 1] == '/')
		len--;
	if (strncmp(s, "file:///", 8) == 0) {
		if (len <= 8 || memchr(s, '?', len) || memchr(s, '#', len))
			return RS_OK;
	} else {
		size_t skip = strncmp(s, "https://", 8) == 0 ? 8 : strncmp(s, "http://", 7) == 0 ? 7 : 0;
		if (!skip || url_has_userinfo(s) || strpbrk(s, "?# "))
			return RS_OK;
		size_t auth = strcspn(s + skip, "/");
		if (skip + auth > len || !valid_authority(s + skip, auth))
			return RS_OK;
	}
	*out = xalloc_strndup(s, len);
	return *out ? RS_OK : RS_NOMEM;
}

/* A non-empty array of non-empty strings (globs or files), at most max. */
static enum rs_code get_strings(char ***out, size_t *out_n, const struct jsonload *ld, const char *kp, const json_t *x,
                                size_t max, const char *what, bool files)
{
	enum rs_code rc = RS_OK;
	size_t n = json_array_size(x);
	if (!json_is_array(x) || n == 0)
		return fail_value(ld, kp, x, what);
	if (n > max)
		return jsonload_fail(ld, RS_CONFIG, kp, "has %zu entries, the limit is %zu", n, max);
	*out = xalloc_calloc(n, sizeof(**out));
	if (!*out)
		return rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
	*out_n = n;
	for (size_t i = 0; i < n && rc == RS_OK; i++) {
		char ip[PATH_MAX_CHARS + 32];
		path_index(ip, sizeof(ip), kp, i);
		rc = files ? get_key_file(&(*out)[i], ld, ip, json_array_get(x, i), "the path of a PEM public key file")
		           : get_string(&(*out)[i], ld, ip, json_array_get(x, i), "a non-empty glob string");
	}
	return rc;
}

static enum rs_code load_verify_rule(struct rs_verify_rule *r, const struct rs_config *cfg, const struct jsonload *ld,
                                     const char *path, const json_t *v)
{
	enum rs_code rc;
	char kp[PATH_MAX_CHARS];
	const json_t *x;
	if ((rc = get_object(ld, path, v)) || (rc = check_keys(ld, path, v, verify_keys)))
		return rc;
	path_key(kp, sizeof(kp), path, "upstream");
	if (!(x = json_object_get(v, "upstream")))
		return jsonload_fail(ld, RS_CONFIG, kp, "missing, expected the name of a configured upstream");
	if (!json_is_string(x) || !config_find_upstream(cfg, json_string_value(x)))
		return fail_value(ld, kp, x, "the name of a configured upstream");
	if ((rc = get_string(&r->upstream, ld, kp, x, "a string")))
		return rc;
	path_key(kp, sizeof(kp), path, "repositories");
	if (!(x = json_object_get(v, "repositories")))
		return jsonload_fail(ld, RS_CONFIG, kp, "missing, expected a non-empty array of repository globs like [\"org/*\"]");
	if ((rc = get_strings(&r->repositories, &r->repository_count, ld, kp, x, RS_LIMIT_OPT_GLOBS_MAX,
	                      "a non-empty array of repository globs", false)))
		return rc;
	path_key(kp, sizeof(kp), path, "gpg_keyring");
	if ((x = json_object_get(v, "gpg_keyring")) &&
	    (rc = get_key_file(&r->gpg_keyring, ld, kp, x, "the path of a GPG public keyring file")))
		return rc;
	path_key(kp, sizeof(kp), path, "cosign_public_keys");
	if ((x = json_object_get(v, "cosign_public_keys")) &&
	    (rc = get_strings(&r->cosign_public_keys, &r->cosign_key_count, ld, kp, x, RS_LIMIT_COSIGN_KEYS_MAX,
	                      "a non-empty array of PEM public key files", true)))
		return rc;
	if (!r->gpg_keyring && !r->cosign_public_keys)
		return jsonload_fail(ld, RS_CONFIG, path, "expected gpg_keyring or cosign_public_keys (or both)");
	path_key(kp, sizeof(kp), path, "lookaside");
	if ((x = json_object_get(v, "lookaside"))) {
		if (!json_is_string(x) || normalize_lookaside(&r->lookaside, json_string_value(x)) != RS_OK)
			return fail_value(ld, kp, x, "a file:///dir or http(s)://host[:port]/path URL");
		if (!r->lookaside)
			return fail_value(ld, kp, x, "a file:///dir or http(s)://host[:port]/path URL");
	} else if (r->gpg_keyring) {
		return jsonload_fail(ld, RS_CONFIG, kp, "missing, expected the publisher's signature store "
		                     "(file:///dir or http(s)://host/path) for gpg_keyring");
	}
	path_key(kp, sizeof(kp), path, "on_unverified");
	if (!(x = json_object_get(v, "on_unverified")))
		return jsonload_fail(ld, RS_CONFIG, kp, "missing, expected \"serve-original\" or \"refuse\"");
	const char *s = json_is_string(x) ? json_string_value(x) : "";
	if (strcmp(s, "serve-original") == 0)
		r->on_unverified = RS_UNVERIFIED_SERVE_ORIGINAL;
	else if (strcmp(s, "refuse") == 0)
		r->on_unverified = RS_UNVERIFIED_REFUSE;
	else
		return fail_value(ld, kp, x, "\"serve-original\" or \"refuse\"");
	return RS_OK;
}

static enum rs_code load_signatures_section(struct rs_config *cfg, const struct jsonload *ld, const json_t *v)
{
	enum rs_code rc;
	const json_t *x;
	struct rs_signatures_config *g = &cfg->signatures;
	if ((rc = get_object(ld, "signatures", v)) || (rc = check_keys(ld, "signatures", v, signatures_keys)))
		return rc;
	if ((x = json_object_get(v, "sign")) && (rc = load_sign_section(g, ld, x)))
		return rc;
	if (!(x = json_object_get(v, "verify")))
		return RS_OK;
	size_t n = json_array_size(x);
	if (!json_is_array(x))
		return fail_value(ld, "signatures.verify", x, "an array of verify rules");
	if (n > RS_LIMIT_VERIFY_RULES_MAX)
		return jsonload_fail(ld, RS_CONFIG, "signatures.verify",
		                     "has %zu entries, the limit is %u (RS_LIMIT_VERIFY_RULES_MAX)", n,
		                     (unsigned)RS_LIMIT_VERIFY_RULES_MAX);
	if (n == 0)
		return RS_OK;
	g->verify = xalloc_calloc(n, sizeof(*g->verify));
	if (!g->verify)
		return rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
	g->verify_count = n;
	for (size_t i = 0; i < n; i++) {
		char kp[PATH_MAX_CHARS];
		path_index(kp, sizeof(kp), "signatures.verify", i);
		if ((rc = load_verify_rule(&g->verify[i], cfg, ld, kp, json_array_get(x, i))))
			return rc;
	}
	return RS_OK;
}

const struct rs_verify_rule *config_find_verify_rule(const struct rs_config *cfg, const char *upstream,
                                                     const char *repo)
{
	const char *short_name = strncmp(repo, "library/", 8) == 0 && !strchr(repo + 8, '/') ? repo + 8 : NULL;
	for (size_t i = 0; i < cfg->signatures.verify_count; i++) {
		const struct rs_verify_rule *v = &cfg->signatures.verify[i];
		if (strcmp(v->upstream, upstream) != 0)
			continue;
		for (size_t j = 0; j < v->repository_count; j++)
			if (fnmatch(v->repositories[j], repo, 0) == 0 ||
			    (short_name && fnmatch(v->repositories[j], short_name, 0) == 0))
				return v;
	}
	return NULL;
}

/* ------------------------------------------------------------ cluster */

static void cluster_dispose(struct rs_cluster_config *c)
{
	free(c->redis);
	free(c->redis_host);
	free_secret(c->redis_password);
	free(c->redis_password_source);
	free(c->peer_secret_file);
	free_secret(c->peer_secret);
	free(c->advertise_url);
	free(c->key_prefix);
	memset(c, 0, sizeof(*c));
}

/* "redis://host[:port][/db]" into c's redis_host, redis_port, redis_db. A password in the URL is
 * refused (secrets come from the environment or files only), so the URL can be printed and logged. */
static enum rs_code parse_redis_url(struct rs_cluster_config *c, const struct jsonload *ld, const json_t *v)
{
	static const char scheme[] = "redis://";
	const char *kp = "cluster.redis";
	if (!json_is_string(v))
		return fail_value(ld, kp, v, "a URL redis://host[:port][/db]");
	const char *s = json_string_value(v);
	if (strncmp(s, scheme, strlen(scheme)) != 0)
		return fail_value(ld, kp, v, "a URL redis://host[:port][/db]");
	const char *a = s + strlen(scheme);
	size_t alen = strcspn(a, "/?#");
	if (memchr(a, '@', alen))
		return jsonload_fail(ld, RS_CONFIG, kp,
		                     "a password in the URL is refused (secrets come from the environment or a file): "
		                     "use cluster.redis_password_env or cluster.redis_password_file");
	if (!valid_authority(a, alen))
		return fail_value(ld, kp, v, "a URL redis://host[:port][/db] with a host name or an address");
	const char *rest = a + alen;
	unsigned long db = 0;
	if (*rest == '/' && rest[1]) {
		size_t digits = strspn(rest + 1, "0123456789");
		if (digits == 0 || digits > 5 || rest[1 + digits] ||
		    (db = strtoul(rest + 1, NULL, 10)) > RS_LIMIT_CLUSTER_DB_MAX)
			return jsonload_fail(ld, RS_CONFIG, kp, "the database after the host must be a number from 0 to %u",
			                     (unsigned)RS_LIMIT_CLUSTER_DB_MAX);
	} else if (*rest && strcmp(rest, "/") != 0) {
		return fail_value(ld, kp, v, "a URL redis://host[:port][/db] without query or fragment");
	}
	const char *host = a, *port = NULL;
	size_t hlen = alen;
	if (a[0] == '[') {
		const char *close = memchr(a, ']', alen);
		host = a + 1;
		hlen = (size_t)(close - a - 1);
		port = close[1] == ':' ? close + 2 : NULL;
	} else if ((port = memchr(a, ':', alen))) {
		hlen = (size_t)(port - a);
		port++;
	}
	c->redis_port = port ? (unsigned)strtoul(port, NULL, 10) : 6379;
	c->redis_db = (unsigned)db;
	c->redis_host = xalloc_strndup(host, hlen);
	c->redis = xalloc_strdup(s);
	if (!c->redis_host || !c->redis)
		return rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
	return RS_OK;
}

/* The Redis password: cluster.redis_password_env or _file, at most one. */
static enum rs_code load_redis_password(struct rs_cluster_config *c, const struct jsonload *ld, const json_t *v)
{
	enum rs_code rc;
	const json_t *penv = json_object_get(v, "redis_password_env");
	const json_t *pfile = json_object_get(v, "redis_password_file");
	if (penv && pfile)
		return jsonload_fail(ld, RS_CONFIG, "cluster",
		                     "expected at most one of redis_password_env or redis_password_file, got both");
	if (penv) {
		const char *kp = "cluster.redis_password_env";
		if (!json_is_string(penv) || !valid_env_name(json_string_value(penv)))
			return fail_value(ld, kp, penv, "an environment variable name");
		const char *name = json_string_value(penv);
		const char *val = getenv(name);
		if (!val || !val[0])
			return jsonload_fail(ld, RS_CONFIG, kp, "environment variable %s is %s, expected the password", name,
			                     val ? "empty" : "not set");
		c->redis_password = xalloc_strdup(val);
		if (!c->redis_password)
			return rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
		return make_source(&c->redis_password_source, ld, "env", name);
	}
	if (pfile) {
		const char *kp = "cluster.redis_password_file";
		if (!json_is_string(pfile) || json_string_length(pfile) == 0)
			return fail_value(ld, kp, pfile, "a file path");
		const char *file = json_string_value(pfile);
		if ((rc = read_password_file(&c->redis_password, ld, kp, file)))
			return rc;
		return make_source(&c->redis_password_source, ld, "file", file);
	}
	return RS_OK;
}

/* cluster.key_prefix: printable ASCII without spaces (it begins every key in Redis). */
static bool valid_key_prefix(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > RS_LIMIT_CLUSTER_PREFIX_MAX_CHARS)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return false;
	return true;
}

/* cluster.advertise_url, or cluster.advertise_url_env: the name of an environment variable that
 * holds it (each replica of one shared configuration has its own address, e.g. a pod's IP). */
static enum rs_code load_advertise_url(struct rs_cluster_config *c, const struct jsonload *ld, const json_t *v)
{
	const json_t *x = json_object_get(v, "advertise_url");
	const json_t *e = json_object_get(v, "advertise_url_env");
	const char *key = x ? "cluster.advertise_url" : "cluster.advertise_url_env";
	const char *url;
	if (!x && !e)
		return RS_OK;
	if (x && e)
		return jsonload_fail(ld, RS_CONFIG, "cluster.advertise_url_env",
		                     "give either cluster.advertise_url or cluster.advertise_url_env, not both");
	if (x) {
		url = json_is_string(x) ? json_string_value(x) : NULL;
	} else {
		if (!json_is_string(e) || !json_string_value(e)[0])
			return fail_value(ld, key, e, "the name of an environment variable");
		url = getenv(json_string_value(e));
		if (!url || !url[0])
			return jsonload_fail(ld, RS_CONFIG, key, "the environment variable %s is not set or empty",
			                     json_string_value(e));
	}
	if (url && normalize_url(&c->advertise_url, url))
		return rs_err_set(ld->err, RS_NOMEM, "out of memory loading %s", ld->file);
	if (!c->advertise_url) {
		if (x)
			return fail_value(ld, key, x, "a URL http(s)://host[:port] without path, query or user info");
		return jsonload_fail(ld, RS_CONFIG, key,
		                     "$%s is \"%s\", expected a URL http(s)://host[:port] without path, query or user info",
		                     json_string_value(e), url);
	}
	if (!c->peer_secret)
		return jsonload_fail(ld, RS_CONFIG, key, "needs cluster.peer_secret_file (peers authenticate with it)");
	return RS_OK;
}

static enum rs_code load_cluster_section(struct rs_config *cfg, const struct jsonload *ld, const json_t *v)
{
	enum rs_code rc;
	const json_t *x;
	struct rs_cluster_config *c = &cfg->cluster;
	if ((rc = get_object(ld, "cluster", v)) || (rc = check_keys(ld, "cluster", v, cluster_keys)))
		return rc;
	c->enabled = true;
	if (!(x = json_object_get(v, "redis")))
		return jsonload_fail(ld, RS_CONFIG, "cluster.redis", "missing, expected a URL redis://host[:port][/db]");
	if ((rc = parse_redis_url(c, ld, x)) || (rc = load_redis_password(c, ld, v)))
		return rc;
	if ((x = json_object_get(v, "peer_secret_file"))) {
		const char *kp = "cluster.peer_secret_file";
		if ((rc = get_string(&c->peer_secret_file, ld, kp, x, "a file path")) ||
		    (rc = read_password_file(&c->peer_secret, ld, kp, c->peer_secret_file)))
			return rc;
		if (strlen(c->peer_secret) < RS_LIMIT_CLUSTER_SECRET_MIN_BYTES)
			return jsonload_fail(ld, RS_CONFIG, kp, "the secret in \"%s\" is %zu bytes, expected at least %u",
			                     c->peer_secret_file, strlen(c->peer_secret),
			                     (unsigned)RS_LIMIT_CLUSTER_SECRET_MIN_BYTES);
	}
	if ((rc = load_advertise_url(c, ld, v)))
		return rc;
	if ((x = json_object_get(v, "timeout_ms")) &&
	    (rc = get_uint(&c->timeout_ms, ld, "cluster.timeout_ms", x, RS_LIMIT_CLUSTER_TIMEOUT_MIN_MS,
	                   RS_LIMIT_CLUSTER_TIMEOUT_MAX_MS)))
		return rc;
	if ((x = json_object_get(v, "lock_ttl_s")) &&
	    (rc = get_uint(&c->lock_ttl_s, ld, "cluster.lock_ttl_s", x, 1, RS_LIMIT_CLUSTER_LOCK_TTL_MAX_S)))
		return rc;
	if ((x = json_object_get(v, "key_prefix"))) {
		if (!json_is_string(x) || !valid_key_prefix(json_string_value(x)))
			return fail_value(ld, "cluster.key_prefix", x, "1 to 64 printable characters without spaces");
		free(c->key_prefix);
		c->key_prefix = NULL;
		if ((rc = get_string(&c->key_prefix, ld, "cluster.key_prefix", x, "a string")))
			return rc;
	}
	return RS_OK;
}

static enum rs_code load_root(struct rs_config *cfg, const struct jsonload *ld, const json_t *root)
{
	enum rs_code rc;
	const json_t *x;
	const json_t *y;
	char *s = NULL;
	if (!json_is_object(root))
		return jsonload_fail(ld, RS_CONFIG, NULL, "expected a JSON object at the top level, got an array");
	if ((rc = check_keys(ld, NULL, root, top_keys)))
		return rc;

	if ((x = json_object_get(root, "listen"))) {
		if (!json_is_string(x) || !valid_listen(json_string_value(x)))
			return fail_value(ld, "listen", x,
			                  "\"ADDR:PORT\" with an IPv4 address or [IPv6] and a port from 1 to 65535");
		if ((rc = get_string(&s, ld, "listen", x, "a string")))
			return rc;
		replace_string(&cfg->listen, s);
	}
	if ((x = json_object_get(root, "max_connections")) &&
	    (rc = get_uint(&cfg->max_connections, ld, "max_connections", x, 1, RS_LIMIT_CONNECTIONS_MAX)))
		return rc;
	if ((x = json_object_get(root, "max_connections_per_ip")) &&
	    (rc = get_uint(&cfg->max_connections_per_ip, ld, "max_connections_per_ip", x, 0, RS_LIMIT_CONNECTIONS_MAX)))
		return rc;
	if ((x = json_object_get(root, "data_dir"))) {
		if ((rc = get_string(&s, ld, "data_dir", x, "a non-empty directory path")))
			return rc;
		replace_string(&cfg->data_dir, s);
	}
	if ((x = json_object_get(root, "cache"))) {
		if ((rc = get_object(ld, "cache", x)) || (rc = check_keys(ld, "cache", x, cache_keys)))
			return rc;
		if ((y = json_object_get(x, "max_bytes")) &&
		    (rc = get_size(&cfg->cache_max_bytes, ld, "cache.max_bytes", y, 0, SIZE_MAX_BYTES)))
			return rc;
		if ((y = json_object_get(x, "optimized_pin_s")) &&
		    (rc = get_uint(&cfg->cache_optimized_pin_s, ld, "cache.optimized_pin_s", y, 0,
		                   RS_LIMIT_OPT_PIN_MAX_S)))
			return rc;
		if ((y = json_object_get(x, "scrub_bytes_per_s")) &&
		    (rc = get_size(&cfg->cache_scrub_bytes_per_s, ld, "cache.scrub_bytes_per_s", y, 0,
		                   RS_LIMIT_SCRUB_RATE_MAX)))
			return rc;
		if ((y = json_object_get(x, "scrub_interval_s")) &&
		    (rc = get_uint(&cfg->cache_scrub_interval_s, ld, "cache.scrub_interval_s", y, 1,
		                   RS_LIMIT_SCRUB_INTERVAL_MAX_S)))
			return rc;
	}
	if ((x = json_object_get(root, "limits"))) {
		if ((rc = get_object(ld, "limits", x)) || (rc = check_keys(ld, "limits", x, limits_keys)))
			return rc;
		if ((y = json_object_get(x, "manifest_max_bytes")) &&
		    (rc = get_size(&cfg->manifest_max_bytes, ld, "limits.manifest_max_bytes", y, 1,
		                   RS_LIMIT_MANIFEST_HARD_MAX_BYTES)))
			return rc;
		if ((y = json_object_get(x, "header_timeout_s")) &&
		    (rc = get_uint(&cfg->header_timeout_s, ld, "limits.header_timeout_s", y, 0,
		                   RS_LIMIT_HEADER_TIMEOUT_MAX_S)))
			return rc;
		if ((y = json_object_get(x, "body_min_bytes_per_s")) &&
		    (rc = get_size(&cfg->body_min_bytes_per_s, ld, "limits.body_min_bytes_per_s", y, 0,
		                   RS_LIMIT_BODY_MIN_RATE_MAX)))
			return rc;
		if ((y = json_object_get(x, "body_rate_window_s")) &&
		    (rc = get_uint(&cfg->body_rate_window_s, ld, "limits.body_rate_window_s", y, 1,
		                   RS_LIMIT_BODY_RATE_WINDOW_MAX_S)))
			return rc;
	}
	if ((x = json_object_get(root, "shutdown_grace_s")) &&
	    (rc = get_uint(&cfg->shutdown_grace_s, ld, "shutdown_grace_s", x, 0,
	                   RS_LIMIT_SHUTDOWN_GRACE_MAX_S)))
		return rc;
	if ((x = json_object_get(root, "log"))) {
		if ((rc = get_object(ld, "log", x)) || (rc = check_keys(ld, "log", x, log_keys)))
			return rc;
		if ((y = json_object_get(x, "level"))) {
			bool ok = false;
			for (size_t i = 0; json_is_string(y) && log_levels[i]; i++)
				if (strcmp(json_string_value(y), log_levels[i]) == 0)
					ok = true;
			if (!ok)
				return fail_value(ld, "log.level", y, "one of \"debug\", \"info\", \"warn\", \"error\"");
			if ((rc = get_string(&s, ld, "log.level", y, "a string")))
				return rc;
			replace_string(&cfg->log_level, s);
		}
		if ((y = json_object_get(x, "requests")) &&
		    (rc = get_bool(&cfg->log_requests, ld, "log.requests", y)))
			return rc;
	}
	if ((x = json_object_get(root, "upstreams")) && (rc = load_upstreams(cfg, ld, x)))
		return rc;
	if ((x = json_object_get(root, "auth")) && (rc = load_auth_section(cfg, ld, x)))
		return rc;
	if ((x = json_object_get(root, "push")) && (rc = load_push_section(cfg, ld, x)))
		return rc;
	if ((x = json_object_get(root, "optimize")) && (rc = load_optimize_section(cfg, ld, x)))
		return rc;
	if ((x = json_object_get(root, "tls")) && (rc = load_tls_section(cfg, ld, x)))
		return rc;
	if ((x = json_object_get(root, "store")) && (rc = load_store_section(cfg, ld, x)))
		return rc;
	if ((x = json_object_get(root, "signatures")) && (rc = load_signatures_section(cfg, ld, x)))
		return rc;
	if ((x = json_object_get(root, "cluster")) && (rc = load_cluster_section(cfg, ld, x)))
		return rc;
	return RS_OK;
}

/* Read path whole into a new NUL-terminated buffer (caller frees), refusing
 * files larger than RS_LIMIT_CONFIG_FILE_MAX_BYTES. */
static enum rs_code read_file(char **out, size_t *out_len, const char *path, struct rs_err *err)
{
	enum rs_code rc = RS_OK;
	size_t cap = 4096;
	size_t len = 0;
	char *buf = NULL;
	*out = NULL;
	FILE *f = fopen(path, "rb");
	if (!f)
		return rs_err_set(err, RS_IO, "%s: cannot open: %s", path, strerror(errno));
	for (;;) {
		if (!buf || len == cap) {
			if (buf)
				cap *= 2;
			char *grown = xalloc_realloc(buf, cap + 1);
			if (!grown) {
				rc = rs_err_set(err, RS_NOMEM, "%s: out of memory reading the file", path);
				goto out;
			}
			buf = grown;
		}
		size_t want = cap - len;
		size_t got = fread(buf + len, 1, want, f);
		len += got;
		if (len > RS_LIMIT_CONFIG_FILE_MAX_BYTES) {
			rc = rs_err_set(err, RS_TOO_LARGE,
			                "%s: file is larger than %u bytes (RS_LIMIT_CONFIG_FILE_MAX_BYTES)", path,
			                (unsigned)RS_LIMIT_CONFIG_FILE_MAX_BYTES);
			goto out;
		}
		if (got < want) {
			if (ferror(f)) {
				rc = rs_err_set(err, RS_IO, "%s: cannot read: %s", path, strerror(errno));
				goto out;
			}
			break;
		}
	}
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	buf = NULL;
out:
	free(buf);
	fclose(f);
	return rc;
}

/* ---- exported ----------------------------------------------------------- */

enum rs_code config_init_defaults(struct rs_config *cfg, struct rs_err *err)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->max_connections = RS_LIMIT_CONNECTIONS_DEFAULT;
	cfg->max_connections_per_ip = RS_LIMIT_CONNECTIONS_PER_IP_DEFAULT;
	cfg->header_timeout_s = RS_LIMIT_HEADER_TIMEOUT_DEFAULT_S;
	cfg->body_min_bytes_per_s = RS_LIMIT_BODY_MIN_RATE_DEFAULT;
	cfg->body_rate_window_s = RS_LIMIT_BODY_RATE_WINDOW_DEFAULT_S;
	cfg->cache_max_bytes = RS_LIMIT_CACHE_DEFAULT_BYTES;
	cfg->cache_optimized_pin_s = RS_LIMIT_OPT_PIN_DEFAULT_S;
	cfg->cache_scrub_bytes_per_s = RS_LIMIT_SCRUB_RATE_DEFAULT;
	cfg->cache_scrub_interval_s = RS_LIMIT_SCRUB_INTERVAL_DEFAULT_S;
	cfg->manifest_max_bytes = RS_LIMIT_MANIFEST_MAX_BYTES;
	cfg->shutdown_grace_s = RS_LIMIT_SHUTDOWN_GRACE_DEFAULT_S;
	cfg->log_requests = true;
	cfg->auth.token_ttl_s = RS_LIMIT_TOKEN_TTL_DEFAULT_S;
	cfg->auth.anonymous_pull = true;
	cfg->push.max_blob_bytes = RS_LIMIT_PUSH_BLOB_DEFAULT_BYTES;
	cfg->push.upload_idle_timeout_s = RS_LIMIT_UPLOAD_IDLE_DEFAULT_S;
	cfg->push.gc_grace_s = RS_LIMIT_GC_GRACE_DEFAULT_S;
	cfg->push.gc_interval_s = RS_LIMIT_GC_INTERVAL_DEFAULT_S;
	cfg->push.stream_uploads = true;
	cfg->cluster.timeout_ms = RS_LIMIT_CLUSTER_TIMEOUT_DEFAULT_MS;
	cfg->cluster.lock_ttl_s = RS_LIMIT_CLUSTER_LOCK_TTL_DEFAULT_S;
	cfg->cluster.key_prefix = xalloc_strdup(DEFAULT_CLUSTER_PREFIX);
	cfg->source = xalloc_strdup(DEFAULTS_SOURCE);
	cfg->listen = xalloc_strdup(DEFAULT_LISTEN);
	cfg->data_dir = xalloc_strdup(DEFAULT_DATA_DIR);
	cfg->log_level = xalloc_strdup(DEFAULT_LOG_LEVEL);
	cfg->store.driver = xalloc_strdup("fs");
	cfg->store.s3.path_style = true;
	cfg->store.s3.local_cache_bytes = RS_LIMIT_S3_LOCAL_CACHE_DEFAULT_BYTES;
	cfg->upstreams = xalloc_calloc(1, sizeof(*cfg->upstreams));
	if (cfg->upstreams) {
		cfg->upstream_count = 1;
		struct rs_upstream_config *u = &cfg->upstreams[0];
		u->name = xalloc_strdup(RS_DOCKER_HUB_NAME);
		u->url = xalloc_strdup(RS_DOCKER_HUB_URL);
		u->tag_ttl_s = RS_LIMIT_TAG_TTL_DEFAULT_S;
		u->timeout_s = RS_LIMIT_UPSTREAM_TIMEOUT_DEFAULT_S;
		u->tls_verify = true;
		u->library_prefix = true;
	}
	enum rs_code orc = optimize_defaults(&cfg->optimize);
	if (orc || !cfg->cluster.key_prefix || !cfg->source || !cfg->listen || !cfg->data_dir || !cfg->log_level ||
	    !cfg->store.driver || !cfg->upstreams || !cfg->upstreams[0].name || !cfg->upstreams[0].url) {
		config_dispose(cfg);
		return rs_err_set(err, RS_NOMEM, "out of memory building the default configuration");
	}
	return RS_OK;
}

enum rs_code config_load(struct rs_config *cfg, const char *path, struct rs_err *err)
{
	enum rs_code rc;
	char *text = NULL;
	size_t len = 0;
	json_t *root = NULL;
	struct jsonload ld = {.file = path, .err = err};
	if ((rc = config_init_defaults(cfg, err)))
		return rc;
	char *source = xalloc_strdup(path);
	if (!source) {
		rc = rs_err_set(err, RS_NOMEM, "%s: out of memory", path);
		goto out;
	}
	replace_string(&cfg->source, source);
	if ((rc = read_file(&text, &len, path, err)))
		goto out;
	json_error_t jerr;
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		/* jansson leaves the error unset (empty text) when some of its
		 * allocations fail; a real syntax error always has a text. */
		if (json_error_code(&jerr) == json_error_out_of_memory || jerr.text[0] == '\0') {
			rc = rs_err_set(err, RS_NOMEM, "%s: out of memory parsing JSON", path);
			goto out;
		}
		char text_shown[JSON_ERROR_TEXT_LENGTH];
		show_text(text_shown, sizeof(text_shown), jerr.text, sizeof(text_shown));
		rc = rs_err_set(err, RS_CONFIG, "%s:%d:%d: invalid JSON: %s", path, jerr.line, jerr.column,
		                text_shown);
		goto out;
	}
	rc = load_root(cfg, &ld, root);
out:
	json_decref(root);
	free(text);
	if (rc)
		config_dispose(cfg);
	return rc;
}

enum rs_code config_override(struct rs_config *cfg, const char *listen, const char *upstream_url,
                             const char *data_dir, struct rs_err *err)
{
	char shown[SHOW_MAX_CHARS + 8];
	char *new_listen = NULL;
	char *new_url = NULL;
	char *new_dir = NULL;
	enum rs_code rc = RS_OK;
	if (listen) {
		show_text(shown, sizeof(shown), listen, SHOW_MAX_CHARS);
		if (!valid_listen(listen))
			return rs_err_set(err, RS_CONFIG,
			                  "--listen: expected ADDR:PORT with an IPv4 address or [IPv6] and a port from 1 to 65535, got \"%s\"",
			                  shown);
		if (!(new_listen = xalloc_strdup(listen)))
			goto nomem;
	}
	if (upstream_url) {
		show_text(shown, sizeof(shown), upstream_url, SHOW_MAX_CHARS);
		if (normalize_url(&new_url, upstream_url))
			goto nomem;
		if (!new_url && url_has_userinfo(upstream_url)) {
			rc = rs_err_set(err, RS_CONFIG,
			                "--upstream: expected a URL without user info, put credentials in the configuration file");
			goto out;
		}
		if (!new_url) {
			rc = rs_err_set(err, RS_CONFIG,
			                "--upstream: expected an http:// or https:// URL with host[:port] and no path, got \"%s\"",
			                shown);
			goto out;
		}
		if (cfg->upstream_count == 0) {
			rc = rs_err_set(err, RS_CONFIG, "--upstream: the configuration has no upstream to replace");
			goto out;
		}
	}
	if (data_dir) {
		if (!data_dir[0]) {
			rc = rs_err_set(err, RS_CONFIG, "--data-dir: expected a non-empty directory path, got \"\"");
			goto out;
		}
		if (!(new_dir = xalloc_strdup(data_dir)))
			goto nomem;
	}
	if (new_listen)
		replace_string(&cfg->listen, new_listen);
	if (new_url)
		replace_string(&cfg->upstreams[cfg->default_upstream].url, new_url);
	if (new_dir)
		replace_string(&cfg->data_dir, new_dir);
	return RS_OK;
nomem:
	rc = rs_err_set(err, RS_NOMEM, "out of memory applying command-line overrides");
out:
	free(new_listen);
	free(new_url);
	free(new_dir);
	return rc;
}

enum rs_code config_override_tls(struct rs_config *cfg, const char *cert_file, const char *key_file,
                                 const char *client_ca_file, struct rs_err *err)
{
	static const char *const flags[] = {"--tls-cert", "--tls-key", "--tls-client-ca"};
	const char *given[] = {cert_file, key_file, client_ca_file};
	char *fresh[3] = {NULL, NULL, NULL};
	char why[RS_ERR_MSG_MAX];
	enum rs_code rc = RS_OK;
	if (!cert_file && !key_file && !client_ca_file)
		return RS_OK;
	if (!cfg->tls.enabled && (!cert_file || !key_file))
		return rs_err_set(err, RS_CONFIG, "%s: needs %s too (the configuration has no tls section)",
		                  cert_file ? "--tls-cert" : key_file ? "--tls-key" : "--tls-client-ca",
		                  cert_file ? "--tls-key" : "--tls-cert");
	for (size_t i = 0; i < 3; i++) {
		if (!given[i])
			continue;
		if (!given[i][0] || unreadable(why, sizeof(why), given[i])) {
			rc = rs_err_set(err, RS_CONFIG, "%s: %s", flags[i],
			                given[i][0] ? why : "expected a file path, got \"\"");
			goto out;
		}
		if (!(fresh[i] = xalloc_strdup(given[i]))) {
			rc = rs_err_set(err, RS_NOMEM, "out of memory applying command-line overrides");
			goto out;
		}
	}
	cfg->tls.enabled = true;
	char **slots[] = {&cfg->tls.cert_file, &cfg->tls.key_file, &cfg->tls.client_ca_file};
	for (size_t i = 0; i < 3; i++) {
		if (fresh[i])
			replace_string(slots[i], fresh[i]);
		fresh[i] = NULL;
	}
out:
	for (size_t i = 0; i < 3; i++)
		free(fresh[i]);
	return rc;
}

/* Set key on obj to a new value; remembers failure in *ok (value may be NULL
 * after a failed allocation; jansson then fails the set). */
static void put(json_t *obj, const char *key, json_t *value, bool *ok)
{
	if (json_object_set_new(obj, key, value) != 0)
		*ok = false;
}

static json_t *print_upstream(const struct rs_upstream_config *u, bool is_default)
{
	bool ok = true;
	json_t *o = json_object();
	if (!o)
		return NULL;
	put(o, "name", json_string(u->name), &ok);
	put(o, "url", json_string(u->url), &ok);
	put(o, "default", json_boolean(is_default), &ok);
	put(o, "tag_ttl_s", json_integer(u->tag_ttl_s), &ok);
	put(o, "timeout_s", json_integer(u->timeout_s), &ok);
	put(o, "tls_verify", json_boolean(u->tls_verify), &ok);
	if (u->ca_file)
		put(o, "ca_file", json_string(u->ca_file), &ok);
	put(o, "library_prefix", json_boolean(u->library_prefix), &ok);
	if (u->username) {
		json_t *a = json_object();
		if (a) {
			put(a, "username", json_string(u->username), &ok);
			/* the source of the secret, never the secret */
			const char *src = u->password_source;
			if (src && strncmp(src, "env:", 4) == 0)
				put(a, "password_env", json_string(src + 4), &ok);
			else if (src && strncmp(src, "file:", 5) == 0)
				put(a, "password_file", json_string(src + 5), &ok);
		}
		put(o, "auth", a, &ok);
	}
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *names_json(char *const *v, size_t n, bool *ok)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++)
		if (json_array_append_new(a, json_string(v[i])))
			*ok = false;
	return a;
}

static json_t *print_auth(const struct rs_auth_config *a)
{
	bool ok = true;
	json_t *o = json_object();
	if (!o)
		return NULL;
	put(o, "htpasswd", json_string(a->htpasswd), &ok);
	if (a->token_secret_file)
		put(o, "token_secret_file", json_string(a->token_secret_file), &ok);
	if (a->realm)
		put(o, "realm", json_string(a->realm), &ok);
	put(o, "token_ttl_s", json_integer(a->token_ttl_s), &ok);
	put(o, "anonymous_pull", json_boolean(a->anonymous_pull), &ok);
	if (a->group_count) {
		json_t *g = json_object();
		for (size_t i = 0; g && i < a->group_count; i++)
			put(g, a->groups[i].name, names_json(a->groups[i].members, a->groups[i].member_count, &ok), &ok);
		put(o, "groups", g, &ok);
	}
	if (a->acl_set) {
		json_t *acl = json_array();
		for (size_t i = 0; acl && i < a->acl_count; i++) {
			const struct rs_acl_rule *r = &a->acl[i];
			json_t *ro = json_object();
			if (!ro) {
				ok = false;
				break;
			}
			put(ro, "repository", json_string(r->repository), &ok);
			if (r->user_count)
				put(ro, "users", names_json(r->users, r->user_count, &ok), &ok);
			if (r->group_count)
				put(ro, "groups", names_json(r->groups, r->group_count, &ok), &ok);
			json_t *act = json_array();
			if (act && r->pull && json_array_append_new(act, json_string("pull")))
				ok = false;
			if (act && r->push && json_array_append_new(act, json_string("push")))
				ok = false;
			put(ro, "actions", act, &ok);
			if (json_array_append_new(acl, ro))
				ok = false;
		}
		put(o, "acl", acl, &ok);
	}
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* The store section as configured (names of secret sources only). */
static json_t *store_to_json(const struct rs_store_config *st, bool *ok)
{
	json_t *o = json_object();
	if (!o) {
		*ok = false;
		return NULL;
	}
	put(o, "driver", json_string(st->driver), ok);
	if (strcmp(st->driver, "s3") != 0)
		return o;
	const struct rs_store_s3_config *c = &st->s3;
	json_t *s3 = json_object();
	if (s3) {
		const char *keys[] = {"endpoint", "region", "bucket", "access_key_env", "secret_key_env",
		                      "access_key_file", "secret_key_file", "prefix"};
		const char *vals[] = {c->endpoint, c->region, c->bucket, c->access_key_env, c->secret_key_env,
		                      c->access_key_file, c->secret_key_file, c->prefix};
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			if (vals[i])
				put(s3, keys[i], json_string(vals[i]), ok);
		put(s3, "path_style", json_boolean(c->path_style), ok);
		put(s3, "local_cache_bytes", json_integer((json_int_t)c->local_cache_bytes), ok);
	}
	put(o, "s3", s3, ok);
	return o;
}

static json_t *print_signatures(const struct rs_signatures_config *g, bool *ok)
{
	json_t *o = json_object();
	if (!o) {
		*ok = false;
		return NULL;
	}
	if (g->gpg_home || g->cosign_key_file) {
		json_t *sg = json_object();
		if (sg && g->gpg_home) {
			put(sg, "gpg_home", json_string(g->gpg_home), ok);
			put(sg, "gpg_key", json_string(g->gpg_key), ok);
		}
		if (sg && g->cosign_key_file)
			put(sg, "cosign_key_file", json_string(g->cosign_key_file), ok);
		put(o, "sign", sg, ok);
	}
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < g->verify_count; i++) {
		const struct rs_verify_rule *v = &g->verify[i];
		json_t *r = json_object();
		if (!r) {
			*ok = false;
			break;
		}
		put(r, "upstream", json_string(v->upstream), ok);
		put(r, "repositories", names_json(v->repositories, v->repository_count, ok), ok);
		if (v->gpg_keyring)
			put(r, "gpg_keyring", json_string(v->gpg_keyring), ok);
		if (v->cosign_public_keys)
			put(r, "cosign_public_keys", names_json(v->cosign_public_keys, v->cosign_key_count, ok), ok);
		if (v->lookaside)
			put(r, "lookaside", json_string(v->lookaside), ok);
		put(r, "on_unverified",
		    json_string(v->on_unverified == RS_UNVERIFIED_REFUSE ? "refuse" : "serve-original"), ok);
		if (json_array_append_new(arr, r))
			*ok = false;
	}
	put(o, "verify", arr, ok);
	return o;
}

/* The cluster section, secrets replaced by their source (redis_password_env/_file). */
static json_t *print_cluster(const struct rs_cluster_config *c, bool *ok)
{
	json_t *o = json_object();
	if (!o) {
		*ok = false;
		return NULL;
	}
	put(o, "redis", json_string(c->redis), ok);
	if (c->redis_password_source) {
		bool env = strncmp(c->redis_password_source, "env:", 4) == 0;
		put(o, env ? "redis_password_env" : "redis_password_file",
		    json_string(strchr(c->redis_password_source, ':') + 1), ok);
	}
	if (c->peer_secret_file)
		put(o, "peer_secret_file", json_string(c->peer_secret_file), ok);
	if (c->advertise_url)
		put(o, "advertise_url", json_string(c->advertise_url), ok);
	put(o, "timeout_ms", json_integer(c->timeout_ms), ok);
	put(o, "lock_ttl_s", json_integer(c->lock_ttl_s), ok);
	put(o, "key_prefix", json_string(c->key_prefix), ok);
	return o;
}

enum rs_code config_print(const struct rs_config *cfg, FILE *out, struct rs_err *err)
{
	bool ok = true;
	json_t *root = json_object();
	if (!root)
		return rs_err_set(err, RS_NOMEM, "out of memory printing the configuration");
	put(root, "listen", json_string(cfg->listen), &ok);
	put(root, "max_connections", json_integer(cfg->max_connections), &ok);
	put(root, "max_connections_per_ip", json_integer(cfg->max_connections_per_ip), &ok);
	put(root, "data_dir", json_string(cfg->data_dir), &ok);
	json_t *cache = json_object();
	if (cache)
		put(cache, "max_bytes", json_integer((json_int_t)cfg->cache_max_bytes), &ok);
	if (cache) {
		put(cache, "optimized_pin_s", json_integer(cfg->cache_optimized_pin_s), &ok);
		put(cache, "scrub_bytes_per_s", json_integer((json_int_t)cfg->cache_scrub_bytes_per_s), &ok);
		put(cache, "scrub_interval_s", json_integer(cfg->cache_scrub_interval_s), &ok);
	}
	put(root, "cache", cache, &ok);
	json_t *limits = json_object();
	if (limits) {
		put(limits, "manifest_max_bytes", json_integer((json_int_t)cfg->manifest_max_bytes), &ok);
		put(limits, "header_timeout_s", json_integer(cfg->header_timeout_s), &ok);
		put(limits, "body_min_bytes_per_s", json_integer((json_int_t)cfg->body_min_bytes_per_s), &ok);
		put(limits, "body_rate_window_s", json_integer(cfg->body_rate_window_s), &ok);
	}
	put(root, "limits", limits, &ok);
	put(root, "shutdown_grace_s", json_integer(cfg->shutdown_grace_s), &ok);
	json_t *log = json_object();
	if (log) {
		put(log, "level", json_string(cfg->log_level), &ok);
		put(log, "requests", json_boolean(cfg->log_requests), &ok);
	}
	put(root, "log", log, &ok);
	json_t *ups = json_array();
	for (size_t i = 0; ups && i < cfg->upstream_count; i++)
		if (json_array_append_new(ups, print_upstream(&cfg->upstreams[i], i == cfg->default_upstream)))
			ok = false;
	put(root, "upstreams", ups, &ok);
	if (cfg->auth.enabled)
		put(root, "auth", print_auth(&cfg->auth), &ok);
	json_t *push = json_object();
	if (push) {
		put(push, "max_blob_bytes", json_integer((json_int_t)cfg->push.max_blob_bytes), &ok);
		put(push, "upload_idle_timeout_s", json_integer(cfg->push.upload_idle_timeout_s), &ok);
		put(push, "gc_grace_s", json_integer(cfg->push.gc_grace_s), &ok);
		put(push, "gc_interval_s", json_integer(cfg->push.gc_interval_s), &ok);
		put(push, "stream_uploads", json_boolean(cfg->push.stream_uploads), &ok);
		if (cfg->push.upstream)
			put(push, "upstream", json_string(cfg->push.upstream), &ok);
		if (cfg->push.policy_count)
			put(push, "policies", gate_policies_to_json(cfg->push.policies, cfg->push.policy_count), &ok);
	}
	put(root, "push", push, &ok);
	json_t *opt = json_object();
	if (opt) {
		put(opt, "enabled", json_boolean(cfg->optimize.enabled), &ok);
		put(opt, "sync_timeout_s", json_integer(cfg->optimize.sync_timeout_s), &ok);
		json_t *pols = json_array();
		for (size_t i = 0; pols && i < cfg->optimize.policy_count; i++) {
			const struct rs_opt_policy *p = &cfg->optimize.policies[i];
			json_t *po = json_object();
			if (!po) {
				ok = false;
				break;
			}
			put(po, "upstream", json_string(p->upstream), &ok);
			put(po, "repositories", names_json(p->repositories, p->repository_count, &ok), &ok);
			if (p->policy_file)
				put(po, "policy_file", json_string(p->policy_file), &ok);
			put(po, "compression", json_string(opt_compression_name(p->compression)), &ok);
			put(po, "unknown_clients", json_string(opt_compression_name(p->unknown_clients)), &ok);
			if (json_array_append_new(pols, po))
				ok = false;
		}
		put(opt, "policies", pols, &ok);
	}
	put(root, "optimize", opt, &ok);
	if (cfg->tls.enabled) {
		json_t *tls = json_object();
		if (tls) {
			put(tls, "cert_file", json_string(cfg->tls.cert_file), &ok);
			put(tls, "key_file", json_string(cfg->tls.key_file), &ok);
			if (cfg->tls.client_ca_file)
				put(tls, "client_ca_file", json_string(cfg->tls.client_ca_file), &ok);
		}
		put(root, "tls", tls, &ok);
	}
	put(root, "store", store_to_json(&cfg->store, &ok), &ok);
	if (cfg->signatures.gpg_home || cfg->signatures.cosign_key_file || cfg->signatures.verify_count)
		put(root, "signatures", print_signatures(&cfg->signatures, &ok), &ok);
	if (cfg->cluster.enabled)
		put(root, "cluster", print_cluster(&cfg->cluster, &ok), &ok);
	if (!ok) {
		json_decref(root);
		return rs_err_set(err, RS_NOMEM, "out of memory printing the configuration");
	}
	/* Encode first so that an allocation failure is told apart from a
	 * write error; the text is small (bounded by the configuration). */
	char *text = json_dumps(root, JSON_INDENT(2));
	json_decref(root);
	if (!text)
		return rs_err_set(err, RS_NOMEM, "out of memory printing the configuration");
	size_t len = strlen(text);
	bool written = fwrite(text, 1, len, out) == len && fputc('\n', out) != EOF && fflush(out) == 0;
	jansson_free(text);
	if (!written)
		return rs_err_set(err, RS_IO, "cannot write the configuration: %s", strerror(errno));
	return RS_OK;
}

const struct rs_upstream_config *config_find_upstream(const struct rs_config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->upstream_count; i++)
		if (strcmp(cfg->upstreams[i].name, name) == 0)
			return &cfg->upstreams[i];
	return NULL;
}

void config_dispose(struct rs_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->source);
	free(cfg->listen);
	free(cfg->data_dir);
	free(cfg->log_level);
	upstreams_free(cfg->upstreams, cfg->upstream_count);
	auth_dispose(&cfg->auth);
	free(cfg->push.upstream);
	gate_policies_free(cfg->push.policies, cfg->push.policy_count);
	optimize_dispose(&cfg->optimize);
	tls_dispose(&cfg->tls);
	store_dispose(&cfg->store);
	signatures_dispose(&cfg->signatures);
	cluster_dispose(&cfg->cluster);
	memset(cfg, 0, sizeof(*cfg));
}
