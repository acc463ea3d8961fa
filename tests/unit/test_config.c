/* test_config: the configuration loader (config/config.c). Valid files load
 * into the expected structs; every invalid case under
 * $RS_TEST_DATA/config/<case>/{input,expected} fails with exactly the
 * expected one-line message; overrides validate like the file; printing
 * never shows a secret and prints a file that loads back to the same
 * configuration. Each test works in its own temporary directory. */
#include "config.h"

#include "fixture.h"
#include "xalloc.h"
#include "gate_policy.h"
#include "rs_limits.h"

#include <check.h>
#include <jansson.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *write_file(const char *name, const char *text)
{
	const char *p = fixture_path(name);
	fixture_write_text(p, text);
	return p;
}

/* Load text written to regslim.json; expects failure with code, returns the message. */
static const char *load_fails(const char *text, enum rs_code code)
{
	static struct rs_err err;
	struct rs_config cfg;
	memset(&err, 0, sizeof(err));
	enum rs_code rc = config_load(&cfg, write_file("regslim.json", text), &err);
	ck_assert_msg(rc == code, "expected code %s, got %s (%s)", rs_code_name(code), rs_code_name(rc),
	              err.msg);
	ck_assert_ptr_null(cfg.listen);
	ck_assert_ptr_null(cfg.upstreams);
	ck_assert_ptr_null(strchr(err.msg, '\n'));
	return err.msg;
}

/* err.msg after the "<fixture_dir()>/" prefix, so tests compare "regslim.json: ..." */
static const char *relative(const char *msg)
{
	size_t n = strlen(fixture_dir());
	ck_assert_msg(strncmp(msg, fixture_dir(), n) == 0 && msg[n] == '/', "message does not start with the file: %s", msg);
	return msg + n + 1;
}

static void load_ok(struct rs_config *cfg, const char *text)
{
	struct rs_err err = {0};
	enum rs_code rc = config_load(cfg, write_file("regslim.json", text), &err);
	ck_assert_msg(rc == RS_OK, "load failed: %s", err.msg);
}

/* Everything config_print writes for cfg, as a new string (caller frees). */
static char *print_to_string(const struct rs_config *cfg)
{
	char *buf = NULL;
	size_t len = 0;
	struct rs_err err = {0};
	FILE *f = open_memstream(&buf, &len);
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(config_print(cfg, f, &err), RS_OK);
	ck_assert_int_eq(fclose(f), 0);
	return buf;
}

START_TEST(defaults_mirror_docker_hub)
{
	struct rs_config cfg;
	struct rs_err err = {0};
	ck_assert_int_eq(config_init_defaults(&cfg, &err), RS_OK);
	ck_assert_str_eq(cfg.listen, "127.0.0.1:5000");
	ck_assert_str_eq(cfg.data_dir, "./regslim-data");
	ck_assert_str_eq(cfg.log_level, "info");
	ck_assert(cfg.log_requests);
	ck_assert_uint_eq(cfg.max_connections, RS_LIMIT_CONNECTIONS_DEFAULT);
	ck_assert_uint_eq(cfg.cache_max_bytes, 20ull << 30);
	ck_assert_uint_eq(cfg.cache_optimized_pin_s, RS_LIMIT_OPT_PIN_DEFAULT_S);
	ck_assert_uint_eq(cfg.manifest_max_bytes, RS_LIMIT_MANIFEST_MAX_BYTES);
	ck_assert_uint_eq(cfg.shutdown_grace_s, RS_LIMIT_SHUTDOWN_GRACE_DEFAULT_S);
	ck_assert_uint_eq(cfg.max_connections_per_ip, RS_LIMIT_CONNECTIONS_PER_IP_DEFAULT);
	ck_assert_uint_eq(cfg.header_timeout_s, RS_LIMIT_HEADER_TIMEOUT_DEFAULT_S);
	ck_assert_uint_eq(cfg.body_min_bytes_per_s, RS_LIMIT_BODY_MIN_RATE_DEFAULT);
	ck_assert_uint_eq(cfg.body_rate_window_s, RS_LIMIT_BODY_RATE_WINDOW_DEFAULT_S);
	ck_assert_uint_eq(cfg.upstream_count, 1);
	ck_assert_uint_eq(cfg.default_upstream, 0);
	const struct rs_upstream_config *u = &cfg.upstreams[0];
	ck_assert_str_eq(u->name, "docker.io");
	ck_assert_str_eq(u->url, "https://registry-1.docker.io");
	ck_assert(u->library_prefix);
	ck_assert(u->tls_verify);
	ck_assert_uint_eq(u->tag_ttl_s, RS_LIMIT_TAG_TTL_DEFAULT_S);
	ck_assert_uint_eq(u->timeout_s, RS_LIMIT_UPSTREAM_TIMEOUT_DEFAULT_S);
	ck_assert_ptr_null(u->username);
	ck_assert_ptr_null(u->password);
	ck_assert_ptr_null(u->ca_file);
	config_dispose(&cfg);
	ck_assert_ptr_null(cfg.listen);
	config_dispose(&cfg); /* a zeroed struct disposes as nothing */
}
END_TEST

START_TEST(empty_object_gives_defaults)
{
	struct rs_config cfg;
	load_ok(&cfg, "{}\n");
	ck_assert_str_eq(cfg.source, fixture_path("regslim.json"));
	ck_assert_str_eq(cfg.listen, "127.0.0.1:5000");
	ck_assert_uint_eq(cfg.upstream_count, 1);
	ck_assert_str_eq(cfg.upstreams[0].name, "docker.io");
	config_dispose(&cfg);
}
END_TEST

START_TEST(loads_full_valid_file)
{
	setenv("RS_TEST_LAB_PASS", "env-secret", 1);
	write_file("ca.pem", "-----BEGIN CERTIFICATE-----\n");
	write_file("ghcr.pass", "file-secret\n");
	char text[2048];
	snprintf(text, sizeof(text),
	         "{\"listen\": \"[::1]:5443\", \"max_connections\": 64, \"max_connections_per_ip\": 0,\n"
	         " \"data_dir\": \"/var/lib/regslim\",\n"
	         " \"cache\": {\"max_bytes\": \"512MiB\", \"optimized_pin_s\": 30}, \"limits\": {\"manifest_max_bytes\": \"8MiB\",\n"
	         "   \"header_timeout_s\": 0, \"body_min_bytes_per_s\": \"4KiB\", \"body_rate_window_s\": 5},\n"
	         " \"shutdown_grace_s\": 0, \"log\": {\"level\": \"debug\", \"requests\": false},\n"
	         " \"upstreams\": [\n"
	         "  {\"name\": \"docker.io\", \"url\": \"http://127.0.0.1:18000/\", \"tag_ttl_s\": 60,\n"
	         "   \"auth\": {\"username\": \"lab\", \"password_env\": \"RS_TEST_LAB_PASS\"}},\n"
	         "  {\"name\": \"ghcr.io\", \"url\": \"https://ghcr.io\", \"default\": true, \"timeout_s\": 5,\n"
	         "   \"tls_verify\": false, \"ca_file\": \"%s\",\n"
	         "   \"auth\": {\"username\": \"bot\", \"password_file\": \"%s\"}},\n"
	         "  {\"name\": \"localhost:5001\", \"url\": \"http://[::1]:5001\", \"library_prefix\": true}\n"
	         " ]}\n",
	         fixture_path("ca.pem"), fixture_path("ghcr.pass"));
	struct rs_config cfg;
	load_ok(&cfg, text);
	ck_assert_str_eq(cfg.listen, "[::1]:5443");
	ck_assert_uint_eq(cfg.max_connections, 64);
	ck_assert_str_eq(cfg.data_dir, "/var/lib/regslim");
	ck_assert_uint_eq(cfg.cache_max_bytes, 512ull << 20);
	ck_assert_uint_eq(cfg.cache_optimized_pin_s, 30);
	ck_assert_uint_eq(cfg.manifest_max_bytes, 8ull << 20);
	ck_assert_uint_eq(cfg.shutdown_grace_s, 0);
	ck_assert_uint_eq(cfg.max_connections_per_ip, 0);
	ck_assert_uint_eq(cfg.header_timeout_s, 0);
	ck_assert_uint_eq(cfg.body_min_bytes_per_s, 4096);
	ck_assert_uint_eq(cfg.body_rate_window_s, 5);
	ck_assert_str_eq(cfg.log_level, "debug");
	ck_assert(!cfg.log_requests);
	ck_assert_uint_eq(cfg.upstream_count, 3);
	ck_assert_uint_eq(cfg.default_upstream, 1);

	const struct rs_upstream_config *hub = config_find_upstream(&cfg, "docker.io");
	ck_assert_ptr_eq(hub, &cfg.upstreams[0]);
	ck_assert_str_eq(hub->url, "http://127.0.0.1:18000"); /* trailing slash stripped */
	ck_assert_uint_eq(hub->tag_ttl_s, 60);
	ck_assert_uint_eq(hub->timeout_s, RS_LIMIT_UPSTREAM_TIMEOUT_DEFAULT_S);
	ck_assert(hub->library_prefix);
	ck_assert(hub->tls_verify);
	ck_assert_str_eq(hub->username, "lab");
	ck_assert_str_eq(hub->password, "env-secret");
	ck_assert_str_eq(hub->password_source, "env:RS_TEST_LAB_PASS");

	const struct rs_upstream_config *gh = config_find_upstream(&cfg, "ghcr.io");
	ck_assert_ptr_eq(gh, &cfg.upstreams[1]);
	ck_assert_uint_eq(gh->timeout_s, 5);
	ck_assert_uint_eq(gh->tag_ttl_s, RS_LIMIT_TAG_TTL_DEFAULT_S);
	ck_assert(!gh->tls_verify);
	ck_assert(!gh->library_prefix); /* default true only for docker.io */
	ck_assert_str_eq(gh->ca_file, fixture_path("ca.pem"));
	ck_assert_str_eq(gh->username, "bot");
	ck_assert_str_eq(gh->password, "file-secret"); /* trailing newline stripped */
	ck_assert_str_eq(gh->password_source + 5, fixture_path("ghcr.pass"));
	ck_assert(strncmp(gh->password_source, "file:", 5) == 0);

	const struct rs_upstream_config *local = config_find_upstream(&cfg, "localhost:5001");
	ck_assert_ptr_nonnull(local);
	ck_assert_str_eq(local->url, "http://[::1]:5001");
	ck_assert(local->library_prefix);
	ck_assert_ptr_null(local->username);
	ck_assert_ptr_null(config_find_upstream(&cfg, "quay.io"));
	config_dispose(&cfg);
}
END_TEST

START_TEST(first_upstream_is_default_without_flag)
{
	struct rs_config cfg;
	load_ok(&cfg, "{\"upstreams\": [{\"name\": \"quay.io\", \"url\": \"https://quay.io\"},"
	              " {\"name\": \"docker.io\", \"url\": \"https://registry-1.docker.io\", \"default\": false}]}");
	ck_assert_uint_eq(cfg.upstream_count, 2);
	ck_assert_uint_eq(cfg.default_upstream, 0);
	ck_assert_str_eq(cfg.upstreams[0].name, "quay.io");
	ck_assert(!cfg.upstreams[0].library_prefix);
	ck_assert(cfg.upstreams[1].library_prefix);
	config_dispose(&cfg);
}
END_TEST

START_TEST(size_strings_and_integers_parse)
{
	static const struct {
		const char *json;
		unsigned long long bytes;
	} cases[] = {
		{"0", 0}, /* no limit */
		{"1024", 1024},
		{"\"1024\"", 1024},
		{"\"7B\"", 7},
		{"\"3kB\"", 3000},
		{"\"3KB\"", 3000},
		{"\"3KiB\"", 3072},
		{"\"4MB\"", 4000000},
		{"\"512MiB\"", 512ull << 20},
		{"\"20GiB\"", 20ull << 30},
		{"\"2GB\"", 2000000000ull},
		{"\"1TiB\"", 1ull << 40},
		{"\"5TB\"", 5000000000000ull},
		{"21474836480", 21474836480ull},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[128];
		snprintf(text, sizeof(text), "{\"cache\": {\"max_bytes\": %s}}", cases[i].json);
		struct rs_config cfg;
		load_ok(&cfg, text);
		ck_assert_msg(cfg.cache_max_bytes == cases[i].bytes, "%s gave %llu", cases[i].json,
		              (unsigned long long)cfg.cache_max_bytes);
		config_dispose(&cfg);
	}
}
END_TEST

START_TEST(accepts_listen_and_url_forms)
{
	static const char *const good[] = {
		"{\"listen\": \"0.0.0.0:5000\"}",
		"{\"listen\": \"[::]:1\"}",
		"{\"listen\": \"127.0.0.1:65535\"}",
		"{\"upstreams\": [{\"name\": \"registry.example.com:8443\", \"url\": \"https://Registry.Example.com:8443/\"}]}",
		"{\"upstreams\": [{\"name\": \"r-1.example\", \"url\": \"http://10.0.0.1\"}]}",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct rs_config cfg;
		load_ok(&cfg, good[i]);
		config_dispose(&cfg);
	}
}
END_TEST

/* Every committed invalid case: exact message, RS_CONFIG, one line. */
START_TEST(rejects_every_committed_invalid_case)
{
	const char *data = getenv("RS_TEST_DATA");
	ck_assert_msg(data != NULL, "RS_TEST_DATA is not set (ctest sets it to tests/data)");
	unsetenv("RS_TEST_UNSET_PASSWORD");
	char dirpath[512];
	snprintf(dirpath, sizeof(dirpath), "%s/config", data);
	DIR *d = opendir(dirpath);
	ck_assert_msg(d != NULL, "cannot open %s: %s", dirpath, strerror(errno));
	size_t cases = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char p[1024];
		char input[8192];
		char expected[512];
		snprintf(p, sizeof(p), "%s/%s/input", dirpath, e->d_name);
		FILE *f = fopen(p, "rb");
		ck_assert_msg(f != NULL, "cannot open %s", p);
		size_t n = fread(input, 1, sizeof(input) - 1, f);
		input[n] = '\0';
		fclose(f);
		snprintf(p, sizeof(p), "%s/%s/expected", dirpath, e->d_name);
		f = fopen(p, "rb");
		ck_assert_msg(f != NULL, "cannot open %s", p);
		n = fread(expected, 1, sizeof(expected) - 1, f);
		expected[n] = '\0';
		fclose(f);
		expected[strcspn(expected, "\n")] = '\0';

		const char *msg = relative(load_fails(input, RS_CONFIG));
		ck_assert_msg(strcmp(msg, expected) == 0, "case %s:\n  expected: %s\n  got:      %s", e->d_name,
		              expected, msg);
		cases++;
	}
	closedir(d);
	ck_assert_uint_ge(cases, 40);
}
END_TEST

START_TEST(syntax_error_names_line_and_column)
{
	const char *msg = relative(load_fails("{\n  \"listen\": \"127.0.0.1:5000\",\n  \"data_dir\": ,\n}\n", RS_CONFIG));
	ck_assert_str_eq(msg, "regslim.json:3:15: invalid JSON: unexpected token near ','");
}
END_TEST

START_TEST(refuses_oversized_file)
{
	size_t n = RS_LIMIT_CONFIG_FILE_MAX_BYTES + 2;
	char *big = malloc(n + 1);
	ck_assert_ptr_nonnull(big);
	memset(big, ' ', n);
	big[0] = '{';
	big[n - 1] = '}';
	big[n] = '\0';
	const char *msg = relative(load_fails(big, RS_TOO_LARGE));
	free(big);
	ck_assert_str_eq(msg, "regslim.json: file is larger than 1048576 bytes (RS_LIMIT_CONFIG_FILE_MAX_BYTES)");
}
END_TEST

START_TEST(file_at_the_size_limit_loads)
{
	size_t n = RS_LIMIT_CONFIG_FILE_MAX_BYTES;
	char *big = malloc(n + 1);
	ck_assert_ptr_nonnull(big);
	memset(big, ' ', n);
	big[0] = '{';
	big[n - 1] = '}';
	big[n] = '\0';
	struct rs_config cfg;
	load_ok(&cfg, big);
	free(big);
	config_dispose(&cfg);
}
END_TEST

START_TEST(missing_file_is_io_error)
{
	struct rs_config cfg;
	struct rs_err err = {0};
	ck_assert_int_eq(config_load(&cfg, fixture_path("nope.json"), &err), RS_IO);
	ck_assert_str_eq(relative(err.msg), "nope.json: cannot open: No such file or directory");
	ck_assert_ptr_null(cfg.upstreams);
}
END_TEST

START_TEST(password_env_empty_is_refused)
{
	setenv("RS_TEST_EMPTY_PASS", "", 1);
	const char *msg = relative(load_fails(
		"{\"upstreams\": [{\"name\": \"ghcr.io\", \"url\": \"https://ghcr.io\","
		" \"auth\": {\"username\": \"u\", \"password_env\": \"RS_TEST_EMPTY_PASS\"}}]}",
		RS_CONFIG));
	ck_assert_str_eq(msg, "regslim.json: upstreams[0].auth.password_env: environment variable "
	                      "RS_TEST_EMPTY_PASS is empty, expected the password");
}
END_TEST

static const char *auth_file_config(void)
{
	static char text[1024];
	snprintf(text, sizeof(text),
	         "{\"upstreams\": [{\"name\": \"ghcr.io\", \"url\": \"https://ghcr.io\","
	         " \"auth\": {\"username\": \"u\", \"password_file\": \"%s\"}}]}",
	         fixture_path("pass"));
	return text;
}

START_TEST(password_file_empty_is_refused)
{
	write_file("pass", "\n");
	const char *msg = load_fails(auth_file_config(), RS_CONFIG);
	ck_assert_ptr_nonnull(strstr(msg, "upstreams[0].auth.password_file: "));
	ck_assert_ptr_nonnull(strstr(msg, "is empty, expected the password"));
}
END_TEST

START_TEST(password_file_over_4k_is_refused_without_echo)
{
	char big[RS_LIMIT_PASSWORD_FILE_MAX_BYTES + 2];
	memset(big, 'S', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	write_file("pass", big);
	const char *msg = load_fails(auth_file_config(), RS_CONFIG);
	ck_assert_ptr_nonnull(strstr(msg, "is larger than 4096 bytes"));
	ck_assert_ptr_null(strstr(msg, "SSSS"));
}
END_TEST

START_TEST(password_file_of_exactly_4k_loads)
{
	char big[RS_LIMIT_PASSWORD_FILE_MAX_BYTES + 1];
	memset(big, 'p', sizeof(big) - 2);
	big[sizeof(big) - 2] = '\n'; /* 4096 bytes including the newline */
	big[sizeof(big) - 1] = '\0';
	write_file("pass", big);
	struct rs_config cfg;
	load_ok(&cfg, auth_file_config());
	ck_assert_uint_eq(strlen(cfg.upstreams[0].password), RS_LIMIT_PASSWORD_FILE_MAX_BYTES - 1);
	config_dispose(&cfg);
}
END_TEST

START_TEST(password_file_with_two_lines_is_refused)
{
	write_file("pass", "line-one\nline-two\n");
	const char *msg = load_fails(auth_file_config(), RS_CONFIG);
	ck_assert_ptr_nonnull(strstr(msg, "must hold the password on one line"));
	ck_assert_ptr_null(strstr(msg, "line-one"));
}
END_TEST

START_TEST(print_hides_secrets)
{
	setenv("RS_TEST_LAB_PASS", "hunter2-env", 1);
	write_file("pass", "hunter2-file\r\n");
	char text[1024];
	snprintf(text, sizeof(text),
	         "{\"upstreams\": [{\"name\": \"docker.io\", \"url\": \"https://registry-1.docker.io\","
	         " \"auth\": {\"username\": \"lab\", \"password_env\": \"RS_TEST_LAB_PASS\"}},"
	         " {\"name\": \"ghcr.io\", \"url\": \"https://ghcr.io\","
	         " \"auth\": {\"username\": \"bot\", \"password_file\": \"%s\"}}]}",
	         fixture_path("pass"));
	struct rs_config cfg;
	load_ok(&cfg, text);
	ck_assert_str_eq(cfg.upstreams[1].password, "hunter2-file");
	char *out = print_to_string(&cfg);
	config_dispose(&cfg);
	ck_assert_ptr_null(strstr(out, "hunter2"));
	ck_assert_ptr_nonnull(strstr(out, "\"password_env\": \"RS_TEST_LAB_PASS\""));
	ck_assert_ptr_nonnull(strstr(out, "\"password_file\": \""));
	ck_assert_ptr_nonnull(strstr(out, "\"username\": \"lab\""));
	free(out);
}
END_TEST

START_TEST(printed_config_loads_back_identically)
{
	setenv("RS_TEST_LAB_PASS", "x", 1);
	struct rs_config cfg;
	load_ok(&cfg, "{\"listen\": \"0.0.0.0:5000\", \"cache\": {\"max_bytes\": \"1GiB\"},"
	              " \"log\": {\"level\": \"warn\"}, \"upstreams\": ["
	              " {\"name\": \"docker.io\", \"url\": \"http://127.0.0.1:18000/\","
	              "  \"auth\": {\"username\": \"lab\", \"password_env\": \"RS_TEST_LAB_PASS\"}},"
	              " {\"name\": \"quay.io\", \"url\": \"https://quay.io\", \"default\": true, \"tag_ttl_s\": 0}]}");
	char *first = print_to_string(&cfg);
	config_dispose(&cfg);
	load_ok(&cfg, first);
	ck_assert_uint_eq(cfg.default_upstream, 1);
	char *second = print_to_string(&cfg);
	config_dispose(&cfg);
	ck_assert_str_eq(first, second);
	ck_assert_ptr_nonnull(strstr(first, "\"max_bytes\": 1073741824"));
	free(first);
	free(second);
}
END_TEST

START_TEST(push_gc_keys_default_load_and_print_back)
{
	struct rs_config cfg;
	load_ok(&cfg, "{}\n");
	ck_assert_uint_eq(cfg.push.gc_grace_s, RS_LIMIT_GC_GRACE_DEFAULT_S);
	ck_assert_uint_eq(cfg.push.gc_interval_s, RS_LIMIT_GC_INTERVAL_DEFAULT_S);
	config_dispose(&cfg);
	/* 0 is allowed for both: no grace (tests), no periodic sweep (SIGUSR1 only) */
	load_ok(&cfg, "{\"push\": {\"gc_grace_s\": 0, \"gc_interval_s\": 0}}");
	ck_assert_uint_eq(cfg.push.gc_grace_s, 0);
	ck_assert_uint_eq(cfg.push.gc_interval_s, 0);
	config_dispose(&cfg);
	load_ok(&cfg, "{\"push\": {\"gc_grace_s\": 120, \"gc_interval_s\": 600}}");
	char *text = print_to_string(&cfg);
	config_dispose(&cfg);
	ck_assert_ptr_nonnull(strstr(text, "\"gc_grace_s\": 120"));
	ck_assert_ptr_nonnull(strstr(text, "\"gc_interval_s\": 600"));
	load_ok(&cfg, text);
	ck_assert_uint_eq(cfg.push.gc_grace_s, 120);
	ck_assert_uint_eq(cfg.push.gc_interval_s, 600);
	config_dispose(&cfg);
	free(text);
	const char *msg = load_fails("{\"push\": {\"gc_grace_s\": -1}}", RS_CONFIG);
	ck_assert_ptr_nonnull(strstr(msg, "push.gc_grace_s"));
	msg = load_fails("{\"push\": {\"gc_interval_s\": \"1h\"}}", RS_CONFIG);
	ck_assert_ptr_nonnull(strstr(msg, "push.gc_interval_s"));
}
END_TEST

START_TEST(secrets_rule_options_load_and_print_back)
{
	struct rs_config cfg;
	load_ok(&cfg, "{\"push\": {\"policies\": [{\"repositories\": [\"*\"], \"rules\": {\"secrets\": {\"action\": \"deny\","
		      " \"scan_binaries\": true, \"allow_paths\": [\"/app/test/**\", \"usr/share/doc/*/examples/*.pem\"]}}}]}}");
	ck_assert_uint_eq(cfg.push.policy_count, 1);
	const struct rs_gate_policy *p = &cfg.push.policies[0];
	ck_assert(p->secret_scan_binaries);
	ck_assert_uint_eq(p->secret_allow_path_count, 2);
	ck_assert_str_eq(p->secret_allow_paths[0], "app/test/**"); /* archive paths have no leading '/' */
	ck_assert_str_eq(p->secret_allow_paths[1], "usr/share/doc/*/examples/*.pem");
	char *first = print_to_string(&cfg);
	config_dispose(&cfg);
	load_ok(&cfg, first);
	char *second = print_to_string(&cfg);
	ck_assert_str_eq(first, second);
	ck_assert_ptr_nonnull(strstr(first, "\"scan_binaries\": true"));
	ck_assert_ptr_nonnull(strstr(first, "\"app/test/**\""));
	config_dispose(&cfg);
	free(first);
	free(second);
	/* the default: key blocks inside ELF objects are not reported */
	load_ok(&cfg, "{\"push\": {\"policies\": [{\"repositories\": [\"*\"], \"rules\": {\"secrets\": {\"action\": \"deny\"}}}]}}");
	ck_assert(!cfg.push.policies[0].secret_scan_binaries);
	ck_assert_uint_eq(cfg.push.policies[0].secret_allow_path_count, 0);
	config_dispose(&cfg);
}
END_TEST

START_TEST(signatures_load_and_print_back)
{
	const char *ring = write_file("publisher.gpg", "keyring");
	const char *cpub = write_file("publisher-cosign.pub", "pem");
	const char *cpriv = write_file("cosign.pem", "pem");
	char text[2048];
	snprintf(text, sizeof(text),
	         "{\"signatures\": {\"sign\": {\"gpg_home\": \"%s\", \"gpg_key\": \"0123 4567 89ab CDEF 0123  4567 89AB cdef "
	         "0123 4567\", \"cosign_key_file\": \"%s\"}, \"verify\": [{\"upstream\": \"docker.io\", \"repositories\": "
	         "[\"org/*\", \"library/alpine\"], \"gpg_keyring\": \"%s\", \"cosign_public_keys\": [\"%s\"], "
	         "\"lookaside\": \"https://sigs.example.com/sigstore/\", \"on_unverified\": \"refuse\"}, {\"upstream\": "
	         "\"docker.io\", \"repositories\": [\"*\"], \"gpg_keyring\": \"%s\", \"lookaside\": \"file:///srv/sigs\", "
	         "\"on_unverified\": \"serve-original\"}]}}",
	         fixture_dir(), cpriv, ring, cpub, ring);
	struct rs_config cfg;
	load_ok(&cfg, text);
	const struct rs_signatures_config *g = &cfg.signatures;
	ck_assert_str_eq(g->gpg_home, fixture_dir());
	ck_assert_str_eq(g->gpg_key, "0123456789ABCDEF0123456789ABCDEF01234567");
	ck_assert_str_eq(g->cosign_key_file, cpriv);
	ck_assert_uint_eq(g->verify_count, 2);
	ck_assert_str_eq(g->verify[0].lookaside, "https://sigs.example.com/sigstore");
	ck_assert_int_eq(g->verify[0].on_unverified, RS_UNVERIFIED_REFUSE);
	ck_assert_uint_eq(g->verify[0].cosign_key_count, 1);
	ck_assert_str_eq(g->verify[1].lookaside, "file:///srv/sigs");
	ck_assert_int_eq(g->verify[1].on_unverified, RS_UNVERIFIED_SERVE_ORIGINAL);
	/* first match wins; "library/x" also matches as "x" */
	ck_assert_ptr_eq(config_find_verify_rule(&cfg, "docker.io", "org/app"), &g->verify[0]);
	ck_assert_ptr_eq(config_find_verify_rule(&cfg, "docker.io", "library/alpine"), &g->verify[0]);
	ck_assert_ptr_eq(config_find_verify_rule(&cfg, "docker.io", "other/app"), &g->verify[1]);
	ck_assert_ptr_null(config_find_verify_rule(&cfg, "ghcr.io", "org/app"));
	char *first = print_to_string(&cfg);
	config_dispose(&cfg);
	load_ok(&cfg, first);
	char *second = print_to_string(&cfg);
	ck_assert_str_eq(first, second);
	ck_assert_ptr_nonnull(strstr(first, "\"on_unverified\": \"refuse\""));
	config_dispose(&cfg);
	free(first);
	free(second);
	/* without the section: nothing signed, nothing verified, nothing printed */
	load_ok(&cfg, "{}");
	ck_assert_ptr_null(cfg.signatures.gpg_home);
	ck_assert_ptr_null(config_find_verify_rule(&cfg, "docker.io", "org/app"));
	first = print_to_string(&cfg);
	ck_assert_ptr_null(strstr(first, "signatures"));
	free(first);
	config_dispose(&cfg);
}
END_TEST

START_TEST(override_replaces_default_upstream_url)
{
	struct rs_config cfg;
	struct rs_err err = {0};
	load_ok(&cfg, "{\"upstreams\": [{\"name\": \"quay.io\", \"url\": \"https://quay.io\"},"
	              " {\"name\": \"docker.io\", \"url\": \"https://registry-1.docker.io\", \"default\": true}]}");
	ck_assert_int_eq(config_override(&cfg, "127.0.0.1:6000", "http://127.0.0.1:18000/", "/srv/cache", &err),
	                 RS_OK);
	ck_assert_str_eq(cfg.listen, "127.0.0.1:6000");
	ck_assert_str_eq(cfg.data_dir, "/srv/cache");
	ck_assert_str_eq(cfg.upstreams[1].url, "http://127.0.0.1:18000");
	ck_assert_str_eq(cfg.upstreams[0].url, "https://quay.io");
	ck_assert_str_eq(cfg.upstreams[1].name, "docker.io");
	/* NULL leaves a setting alone */
	ck_assert_int_eq(config_override(&cfg, NULL, NULL, NULL, &err), RS_OK);
	ck_assert_str_eq(cfg.listen, "127.0.0.1:6000");
	config_dispose(&cfg);
}
END_TEST

START_TEST(override_on_defaults_changes_docker_hub_url)
{
	struct rs_config cfg;
	struct rs_err err = {0};
	ck_assert_int_eq(config_init_defaults(&cfg, &err), RS_OK);
	ck_assert_int_eq(config_override(&cfg, NULL, "https://mirror.example:8443", NULL, &err), RS_OK);
	ck_assert_str_eq(cfg.upstreams[0].url, "https://mirror.example:8443");
	ck_assert_str_eq(cfg.upstreams[0].name, "docker.io");
	config_dispose(&cfg);
}
END_TEST

START_TEST(override_validates_and_changes_nothing_on_error)
{
	struct rs_config cfg;
	struct rs_err err = {0};
	ck_assert_int_eq(config_init_defaults(&cfg, &err), RS_OK);

	ck_assert_int_eq(config_override(&cfg, "localhost:5000", NULL, NULL, &err), RS_CONFIG);
	ck_assert_str_eq(err.msg, "--listen: expected ADDR:PORT with an IPv4 address or [IPv6] and a port "
	                          "from 1 to 65535, got \"localhost:5000\"");

	ck_assert_int_eq(config_override(&cfg, "127.0.0.1:7000", "ftp://x", "/d", &err), RS_CONFIG);
	ck_assert_str_eq(err.msg, "--upstream: expected an http:// or https:// URL with host[:port] and no path, got \"ftp://x\"");

	ck_assert_int_eq(config_override(&cfg, NULL, "https://u:topsecret@h", NULL, &err), RS_CONFIG);
	ck_assert_ptr_null(strstr(err.msg, "topsecret"));

	ck_assert_int_eq(config_override(&cfg, "127.0.0.1:7000", NULL, "", &err), RS_CONFIG);
	ck_assert_str_eq(err.msg, "--data-dir: expected a non-empty directory path, got \"\"");

	ck_assert_str_eq(cfg.listen, "127.0.0.1:5000");
	ck_assert_str_eq(cfg.data_dir, "./regslim-data");
	ck_assert_str_eq(cfg.upstreams[0].url, "https://registry-1.docker.io");
	config_dispose(&cfg);
}
END_TEST

START_TEST(tls_section_loads_and_prints_back)
{
	const char *cert = write_file("server.crt", "pem");
	const char *key = write_file("server.key", "pem");
	const char *ca = write_file("clients.pem", "pem");
	char text[1024];
	snprintf(text, sizeof(text), "{\"tls\": {\"cert_file\": \"%s\", \"key_file\": \"%s\", \"client_ca_file\": \"%s\"}}",
	         cert, key, ca);
	struct rs_config cfg;
	load_ok(&cfg, text);
	ck_assert(cfg.tls.enabled);
	ck_assert_str_eq(cfg.tls.cert_file, cert);
	ck_assert_str_eq(cfg.tls.key_file, key);
	ck_assert_str_eq(cfg.tls.client_ca_file, ca);
	char *printed = print_to_string(&cfg);
	config_dispose(&cfg);
	load_ok(&cfg, printed);
	free(printed);
	ck_assert(cfg.tls.enabled);
	ck_assert_str_eq(cfg.tls.client_ca_file, ca);
	config_dispose(&cfg);
	load_ok(&cfg, "{}");
	ck_assert(!cfg.tls.enabled);
	printed = print_to_string(&cfg);
	ck_assert_ptr_null(strstr(printed, "\"tls\""));
	free(printed);
	config_dispose(&cfg);
}
END_TEST

START_TEST(cluster_section_loads_and_prints_back)
{
	const char *secret = write_file("peer.key", "0123456789abcdef-peer\n");
	const char *pass = write_file("redis.pass", "redis-file-secret\n");
	char text[1024];
	snprintf(text, sizeof(text),
	         "{\"cluster\": {\"redis\": \"redis://[::1]:7000/3\", \"redis_password_file\": \"%s\", "
	         "\"peer_secret_file\": \"%s\", \"advertise_url\": \"http://10.0.0.5:5000/\", \"timeout_ms\": 250, "
	         "\"lock_ttl_s\": 12, \"key_prefix\": \"rs-a:\"}}",
	         pass, secret);
	struct rs_config cfg;
	load_ok(&cfg, text);
	ck_assert(cfg.cluster.enabled);
	ck_assert_str_eq(cfg.cluster.redis_host, "::1");
	ck_assert_uint_eq(cfg.cluster.redis_port, 7000);
	ck_assert_uint_eq(cfg.cluster.redis_db, 3);
	ck_assert_str_eq(cfg.cluster.redis_password, "redis-file-secret");
	ck_assert_str_eq(cfg.cluster.peer_secret, "0123456789abcdef-peer");
	ck_assert_str_eq(cfg.cluster.advertise_url, "http://10.0.0.5:5000");
	ck_assert_uint_eq(cfg.cluster.timeout_ms, 250);
	ck_assert_uint_eq(cfg.cluster.lock_ttl_s, 12);
	ck_assert_str_eq(cfg.cluster.key_prefix, "rs-a:");
	char *printed = print_to_string(&cfg);
	ck_assert_ptr_null(strstr(printed, "redis-file-secret"));
	ck_assert_ptr_null(strstr(printed, "0123456789abcdef"));
	config_dispose(&cfg);
	load_ok(&cfg, printed);
	free(printed);
	ck_assert_str_eq(cfg.cluster.redis_password, "redis-file-secret");
	ck_assert_uint_eq(cfg.cluster.redis_db, 3);
	config_dispose(&cfg);
	/* the defaults: port 6379, database 0, the password from the environment */
	setenv("RS_TEST_REDIS_PASSWORD", "env-secret", 1);
	load_ok(&cfg, "{\"cluster\": {\"redis\": \"redis://redis.internal\", \"redis_password_env\": "
	              "\"RS_TEST_REDIS_PASSWORD\"}}");
	ck_assert_str_eq(cfg.cluster.redis_host, "redis.internal");
	ck_assert_uint_eq(cfg.cluster.redis_port, 6379);
	ck_assert_uint_eq(cfg.cluster.redis_db, 0);
	ck_assert_str_eq(cfg.cluster.redis_password, "env-secret");
	ck_assert_uint_eq(cfg.cluster.timeout_ms, 500);
	ck_assert_uint_eq(cfg.cluster.lock_ttl_s, 30);
	ck_assert_str_eq(cfg.cluster.key_prefix, "regslim:");
	printed = print_to_string(&cfg);
	ck_assert_ptr_nonnull(strstr(printed, "\"redis_password_env\": \"RS_TEST_REDIS_PASSWORD\""));
	ck_assert_ptr_null(strstr(printed, "env-secret"));
	free(printed);
	config_dispose(&cfg);
	/* no section: no cluster, nothing printed */
	load_ok(&cfg, "{}");
	ck_assert(!cfg.cluster.enabled);
	printed = print_to_string(&cfg);
	ck_assert_ptr_null(strstr(printed, "\"cluster\""));
	free(printed);
	config_dispose(&cfg);
	/* a peer secret shorter than 16 bytes is refused */
	write_file("short.key", "short\n");
	snprintf(text, sizeof(text), "{\"cluster\": {\"redis\": \"redis://127.0.0.1\", \"peer_secret_file\": \"%s\"}}",
	         fixture_path("short.key"));
	const char *msg = relative(load_fails(text, RS_CONFIG));
	ck_assert_msg(strstr(msg, "cluster.peer_secret_file: the secret in") && strstr(msg, "is 5 bytes, expected at least 16"),
	              "%s", msg);
}
END_TEST

/* advertise_url_env: one configuration shared by replicas, each with its own address */
START_TEST(cluster_advertise_url_from_the_environment)
{
	const char *secret = write_file("peer.key", "0123456789abcdef-peer\n");
	char text[1024];
	const char *fmt = "{\"cluster\": {\"redis\": \"redis://127.0.0.1\", \"peer_secret_file\": \"%s\", %s}}";
	struct rs_config cfg;
	setenv("RS_TEST_ADVERTISE", "http://10.1.2.3:5000/", 1);
	snprintf(text, sizeof(text), fmt, secret, "\"advertise_url_env\": \"RS_TEST_ADVERTISE\"");
	load_ok(&cfg, text);
	ck_assert_str_eq(cfg.cluster.advertise_url, "http://10.1.2.3:5000");
	config_dispose(&cfg);
	setenv("RS_TEST_ADVERTISE", "ftp://x", 1);
	const char *msg = relative(load_fails(text, RS_CONFIG));
	ck_assert_msg(strstr(msg, "cluster.advertise_url_env: $RS_TEST_ADVERTISE is \"ftp://x\", expected a URL"), "%s", msg);
	unsetenv("RS_TEST_ADVERTISE");
	msg = relative(load_fails(text, RS_CONFIG));
	ck_assert_msg(strstr(msg, "cluster.advertise_url_env: the environment variable RS_TEST_ADVERTISE is not set or empty"),
	              "%s", msg);
	snprintf(text, sizeof(text), fmt, secret,
	         "\"advertise_url_env\": \"RS_TEST_ADVERTISE\", \"advertise_url\": \"http://10.0.0.5:5000\"");
	msg = relative(load_fails(text, RS_CONFIG));
	ck_assert_msg(strstr(msg, "give either cluster.advertise_url or cluster.advertise_url_env, not both"), "%s", msg);
}
END_TEST

START_TEST(tls_flags_need_both_files_and_readable_ones)
{
	const char *cert = write_file("server.crt", "pem");
	const char *key = write_file("server.key", "pem");
	struct rs_config cfg;
	struct rs_err err = {0};
	ck_assert_int_eq(config_init_defaults(&cfg, &err), RS_OK);
	ck_assert_int_eq(config_override_tls(&cfg, NULL, NULL, NULL, &err), RS_OK);
	ck_assert(!cfg.tls.enabled);
	ck_assert_int_eq(config_override_tls(&cfg, cert, NULL, NULL, &err), RS_CONFIG);
	ck_assert_str_eq(err.msg, "--tls-cert: needs --tls-key too (the configuration has no tls section)");
	ck_assert_int_eq(config_override_tls(&cfg, NULL, NULL, cert, &err), RS_CONFIG);
	ck_assert_str_eq(err.msg, "--tls-client-ca: needs --tls-cert too (the configuration has no tls section)");
	ck_assert_int_eq(config_override_tls(&cfg, cert, "/nonexistent/regslim-test/k.pem", NULL, &err), RS_CONFIG);
	ck_assert_str_eq(err.msg, "--tls-key: cannot read \"/nonexistent/regslim-test/k.pem\": No such file or directory");
	ck_assert(!cfg.tls.enabled);
	ck_assert_ptr_null(cfg.tls.cert_file);
	ck_assert_int_eq(config_override_tls(&cfg, cert, key, NULL, &err), RS_OK);
	ck_assert(cfg.tls.enabled);
	ck_assert_str_eq(cfg.tls.cert_file, cert);
	ck_assert_str_eq(cfg.tls.key_file, key);
	/* With TLS on, one flag replaces one file. */
	ck_assert_int_eq(config_override_tls(&cfg, NULL, NULL, cert, &err), RS_OK);
	ck_assert_str_eq(cfg.tls.client_ca_file, cert);
	config_dispose(&cfg);
}
END_TEST

START_TEST(store_section_defaults_to_fs_and_s3_loads_and_prints_back)
{
	struct rs_config cfg;
	load_ok(&cfg, "{}");
	ck_assert_str_eq(cfg.store.driver, "fs");
	config_dispose(&cfg);
	load_ok(&cfg, "{\"store\": {\"driver\": \"s3\", \"s3\": {\"endpoint\": \"http://127.0.0.1:9000\","
	              " \"region\": \"us-east-1\", \"bucket\": \"regslim\", \"access_key_env\": \"S3_ACCESS_KEY\","
	              " \"secret_key_file\": \"/etc/regslim/s3.secret\", \"prefix\": \"r1/\"}}}");
	ck_assert_str_eq(cfg.store.driver, "s3");
	ck_assert_str_eq(cfg.store.s3.endpoint, "http://127.0.0.1:9000");
	ck_assert_str_eq(cfg.store.s3.region, "us-east-1");
	ck_assert_str_eq(cfg.store.s3.bucket, "regslim");
	ck_assert_str_eq(cfg.store.s3.access_key_env, "S3_ACCESS_KEY");
	ck_assert_ptr_null(cfg.store.s3.secret_key_env);
	ck_assert_str_eq(cfg.store.s3.secret_key_file, "/etc/regslim/s3.secret");
	ck_assert_str_eq(cfg.store.s3.prefix, "r1/");
	ck_assert(cfg.store.s3.path_style);
	char *first = print_to_string(&cfg);
	config_dispose(&cfg);
	load_ok(&cfg, first);
	char *second = print_to_string(&cfg);
	ck_assert_str_eq(first, second);
	config_dispose(&cfg);
	free(first);
	free(second);
	load_ok(&cfg, "{\"store\": {\"driver\": \"s3\", \"s3\": {\"endpoint\": \"https://s3.example\","
	              " \"region\": \"eu-west-1\", \"bucket\": \"b\", \"access_key_file\": \"/a\","
	              " \"secret_key_env\": \"S\", \"path_style\": false}}}");
	ck_assert(!cfg.store.s3.path_style);
	ck_assert_ptr_null(cfg.store.s3.prefix);
	config_dispose(&cfg);
}
END_TEST

START_TEST(long_values_are_cut_in_messages)
{
	char text[512];
	char name[201];
	memset(name, 'a', 200);
	name[200] = '\0';
	snprintf(text, sizeof(text), "{\"listen\": \"%s\"}", name);
	const char *msg = relative(load_fails(text, RS_CONFIG));
	size_t len = strlen(msg);
	ck_assert_str_eq(msg + len - 6, "aaa...");
	ck_assert_uint_lt(strlen(msg), RS_ERR_MSG_MAX - 1);
}
END_TEST

/* Allocation-failure tests: config.c's own allocations go through the hook,
 * jansson's through json_set_alloc_funcs; both share one budget. */
static long alloc_budget = -1; /* -1: unlimited */

static bool budget_exhausted(void)
{
	if (alloc_budget < 0)
		return false;
	if (alloc_budget == 0)
		return true;
	alloc_budget--;
	return false;
}

static void *budget_malloc(size_t n)
{
	return budget_exhausted() ? NULL : malloc(n);
}

static void budget_on(long n, bool jansson_too)
{
	alloc_budget = n;
	xalloc_set_fail_hook(budget_exhausted);
	if (jansson_too)
		json_set_alloc_funcs(budget_malloc, free);
}

static void budget_off(void)
{
	alloc_budget = -1;
	xalloc_set_fail_hook(NULL);
	json_set_alloc_funcs(malloc, free);
}

START_TEST(every_allocation_failure_gives_nomem)
{
	setenv("RS_TEST_LAB_PASS", "env-secret", 1);
	write_file("pass", "file-secret\n");
	char text[2048];
	snprintf(text, sizeof(text),
	         "{\"listen\": \"0.0.0.0:5000\", \"cache\": {\"max_bytes\": \"1GiB\"}, \"log\": {\"level\": \"warn\"},"
	         " \"upstreams\": [{\"name\": \"docker.io\", \"url\": \"http://127.0.0.1:18000/\","
	         " \"auth\": {\"username\": \"lab\", \"password_env\": \"RS_TEST_LAB_PASS\"}},"
	         " {\"name\": \"ghcr.io\", \"url\": \"https://ghcr.io\", \"default\": true,"
	         " \"auth\": {\"username\": \"bot\", \"password_file\": \"%s\"}}],"
	         " \"tls\": {\"cert_file\": \"%s\", \"key_file\": \"%s\", \"client_ca_file\": \"%s\"}}",
	         fixture_path("pass"), fixture_path("pass"), fixture_path("pass"), fixture_path("pass"));
	const char *path = write_file("regslim.json", text);
	long n;
	struct rs_config cfg;
	struct rs_err err;
	/* config.c's own allocations: exactly RS_NOMEM every time */
	for (n = 0;; n++) {
		memset(&err, 0, sizeof(err));
		budget_on(n, false);
		enum rs_code rc = config_load(&cfg, path, &err);
		budget_off();
		if (rc == RS_OK)
			break;
		ck_assert_msg(rc == RS_NOMEM, "allocation %ld failing gave %s: %s", n + 1, rs_code_name(rc), err.msg);
		ck_assert_ptr_null(cfg.upstreams);
		ck_assert_ptr_null(cfg.listen);
		ck_assert_ptr_nonnull(strstr(err.msg, "out of memory"));
	}
	ck_assert_int_gt(n, 10); /* the load allocates: the hook did fail something */
	config_dispose(&cfg);

	/* jansson's allocations too: jansson's parser reports some failed
	 * allocations as syntax errors, so RS_CONFIG is accepted here; what
	 * matters is a clean one-line error, a zeroed cfg and no leak (ASan). */
	for (n = 0;; n++) {
		memset(&err, 0, sizeof(err));
		budget_on(n, true);
		enum rs_code rc = config_load(&cfg, path, &err);
		budget_off();
		if (rc == RS_OK)
			break;
		ck_assert_msg(rc == RS_NOMEM || rc == RS_CONFIG, "allocation %ld failing gave %s: %s", n + 1,
		              rs_code_name(rc), err.msg);
		ck_assert_ptr_null(cfg.upstreams);
		ck_assert_ptr_null(strchr(err.msg, '\n'));
		ck_assert_ptr_null(strstr(err.msg, "secret"));
	}

	/* overrides and printing under the same budget */
	for (long m = 0;; m++) {
		budget_on(m, true);
		enum rs_code rc = config_override(&cfg, "127.0.0.1:6000", "https://mirror.example", "/srv", &err);
		budget_off();
		if (rc == RS_OK)
			break;
		ck_assert_int_eq(rc, RS_NOMEM);
		ck_assert_str_eq(cfg.listen, "0.0.0.0:5000"); /* unchanged on failure */
	}
	for (long m = 0;; m++) {
		budget_on(m, true);
		enum rs_code rc = config_override_tls(&cfg, fixture_path("regslim.json"), fixture_path("pass"),
		                                      fixture_path("regslim.json"), &err);
		budget_off();
		if (rc == RS_OK)
			break;
		ck_assert_int_eq(rc, RS_NOMEM);
		ck_assert_str_eq(cfg.tls.cert_file, fixture_path("pass")); /* unchanged on failure */
	}
	for (long m = 0;; m++) {
		char *buf = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&buf, &len);
		ck_assert_ptr_nonnull(f);
		budget_on(m, true);
		enum rs_code rc = config_print(&cfg, f, &err);
		budget_off();
		fclose(f);
		free(buf);
		if (rc == RS_OK)
			break;
		ck_assert_msg(rc == RS_NOMEM, "print with allocation %ld failing gave %s: %s", m + 1,
		              rs_code_name(rc), err.msg);
	}
	config_dispose(&cfg);

	for (n = 0;; n++) {
		budget_on(n, false);
		enum rs_code rc = config_init_defaults(&cfg, &err);
		budget_off();
		if (rc == RS_OK)
			break;
		ck_assert_int_eq(rc, RS_NOMEM);
		ck_assert_ptr_null(cfg.listen);
	}
	config_dispose(&cfg);
}
END_TEST

Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, fixture_tmpdir_setup, fixture_tmpdir_teardown);
	tcase_add_test(tc, defaults_mirror_docker_hub);
	tcase_add_test(tc, empty_object_gives_defaults);
	tcase_add_test(tc, push_gc_keys_default_load_and_print_back);
	tcase_add_test(tc, loads_full_valid_file);
	tcase_add_test(tc, first_upstream_is_default_without_flag);
	tcase_add_test(tc, size_strings_and_integers_parse);
	tcase_add_test(tc, accepts_listen_and_url_forms);
	tcase_add_test(tc, rejects_every_committed_invalid_case);
	tcase_add_test(tc, store_section_defaults_to_fs_and_s3_loads_and_prints_back);
	tcase_add_test(tc, syntax_error_names_line_and_column);
	tcase_add_test(tc, refuses_oversized_file);
	tcase_add_test(tc, file_at_the_size_limit_loads);
	tcase_add_test(tc, missing_file_is_io_error);
	tcase_add_test(tc, password_env_empty_is_refused);
	tcase_add_test(tc, password_file_empty_is_refused);
	tcase_add_test(tc, password_file_over_4k_is_refused_without_echo);
	tcase_add_test(tc, password_file_of_exactly_4k_loads);
	tcase_add_test(tc, password_file_with_two_lines_is_refused);
	tcase_add_test(tc, print_hides_secrets);
	tcase_add_test(tc, secrets_rule_options_load_and_print_back);
	tcase_add_test(tc, signatures_load_and_print_back);
	tcase_add_test(tc, printed_config_loads_back_identically);
	tcase_add_test(tc, override_replaces_default_upstream_url);
	tcase_add_test(tc, override_on_defaults_changes_docker_hub_url);
	tcase_add_test(tc, override_validates_and_changes_nothing_on_error);
	tcase_add_test(tc, tls_section_loads_and_prints_back);
	tcase_add_test(tc, tls_flags_need_both_files_and_readable_ones);
	tcase_add_test(tc, cluster_section_loads_and_prints_back);
	tcase_add_test(tc, cluster_advertise_url_from_the_environment);
	tcase_add_test(tc, long_values_are_cut_in_messages);
	tcase_add_test(tc, every_allocation_failure_gives_nomem);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(config_suite());
}
