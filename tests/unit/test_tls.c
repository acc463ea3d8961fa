/* test_tls: the listener's TLS credentials (proxy/tls.c). Certificates are
 * generated per test (tests/fixtures/tlscerts.c). Good files load and report
 * the certificate; every bad file is refused with the key, the file and the
 * reason; an expired certificate only warns; a reload swaps the certificate,
 * keeps the old one when the new files are bad, and never frees what a
 * connection still pins (ASan checks the last part). The protocol mix-up
 * check answers plain HTTP on the TLS port and TLS on the plain port with a
 * 400 and leaves the right protocol alone. Handshakes with real clients are
 * in tests/integration/test_tls.sh. */
#include "tls.h"

#include "fixture.h"
#include "tlscerts.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct rs_tls_config files(const char *cert, const char *key, const char *ca)
{
	struct rs_tls_config c = {.enabled = true};
	c.cert_file = strdup(fixture_path(cert));
	c.key_file = strdup(fixture_path(key));
	c.client_ca_file = ca ? strdup(fixture_path(ca)) : NULL;
	ck_assert_ptr_nonnull(c.cert_file);
	ck_assert_ptr_nonnull(c.key_file);
	return c;
}

static void files_free(struct rs_tls_config *c)
{
	free(c->cert_file);
	free(c->key_file);
	free(c->client_ca_file);
}

/* tls_check_files must fail with RS_CONFIG and a message containing want
 * ("DIR/" replaced by the test's directory). */
static void check_refused(const char *cert, const char *key, const char *ca, const char *want)
{
	struct rs_tls_config c = files(cert, key, ca);
	struct tls_info info;
	struct rs_err err = {0};
	ck_assert_int_eq(tls_check_files(&info, &c, &err), RS_CONFIG);
	char expected[1024];
	const char *dir = strstr(want, "DIR/");
	if (dir)
		snprintf(expected, sizeof(expected), "%.*s%s/%s", (int)(dir - want), want, fixture_dir(), dir + 4);
	else
		snprintf(expected, sizeof(expected), "%s", want);
	char *again = strstr(expected, "DIR/");
	if (again) {
		char rest[512];
		snprintf(rest, sizeof(rest), "%s", again + 4);
		snprintf(again, sizeof(expected) - (size_t)(again - expected), "%s/%s", fixture_dir(), rest);
	}
	ck_assert_msg(strstr(err.msg, expected), "expected \"%s\" in \"%s\"", expected, err.msg);
	files_free(&c);
}

START_TEST(loads_a_good_pair_and_reports_it)
{
	tlscerts_make_default();
	struct rs_tls_config c = files("server.crt", "server.key", NULL);
	struct tls_info info;
	struct rs_err err = {0};
	ck_assert_msg(tls_check_files(&info, &c, &err) == RS_OK, "%s", err.msg);
	ck_assert_str_eq(info.serial, "1001");
	ck_assert_str_eq(info.subject, "CN=regslim-test-server");
	ck_assert_uint_eq(info.chain_len, 1);
	ck_assert(!info.client_ca);
	char warn[256];
	ck_assert(!tls_info_warning(warn, sizeof(warn), &info, time(NULL)));
	char text[256];
	tls_info_describe(text, sizeof(text), &info);
	ck_assert_ptr_nonnull(strstr(text, "certificate serial 1001 (CN=regslim-test-server)"));
	files_free(&c);
}
END_TEST

START_TEST(loads_a_chain_and_a_client_ca)
{
	tlscerts_make_default();
	tlscerts_make("inter", "ca", true, 2, -60, 3600);
	tlscerts_make("leaf", "inter", false, 0x2002, -60, 3600);
	char *leaf = fixture_read_file(fixture_path("leaf.crt"), NULL);
	char *inter = fixture_read_file(fixture_path("inter.crt"), NULL);
	char both[16384];
	snprintf(both, sizeof(both), "%s%s", leaf, inter);
	fixture_write_text(fixture_path("chain.crt"), both);
	free(leaf);
	free(inter);
	struct rs_tls_config c = files("chain.crt", "leaf.key", "ca.crt");
	struct tls_info info;
	struct rs_err err = {0};
	ck_assert_msg(tls_check_files(&info, &c, &err) == RS_OK, "%s", err.msg);
	ck_assert_uint_eq(info.chain_len, 2);
	ck_assert_str_eq(info.serial, "2002");
	ck_assert(info.client_ca);
	files_free(&c);
}
END_TEST

START_TEST(refuses_a_missing_file)
{
	tlscerts_make_default();
	check_refused("nope.crt", "server.key", NULL, "tls.cert_file: open DIR/nope.crt: No such file or directory");
	check_refused("server.crt", "server.key", "nope.pem",
	              "tls.client_ca_file: open DIR/nope.pem: No such file or directory");
}
END_TEST

START_TEST(refuses_a_file_that_is_not_pem)
{
	tlscerts_make_default();
	fixture_write_file(fixture_path("der.crt"), "\x30\x82\x01\x0a\x02", 5);
	check_refused("der.crt", "server.key", NULL,
	              "tls.cert_file \"DIR/der.crt\": no certificate in the file: the file is not PEM (no \"-----BEGIN\" "
	              "line; DER is not supported)");
}
END_TEST

START_TEST(refuses_a_key_where_the_certificate_belongs)
{
	tlscerts_make_default();
	check_refused("server.key", "server.key", NULL,
	              "tls.cert_file \"DIR/server.key\": no certificate in the file: found only \"PRIVATE KEY\"");
	check_refused("server.crt", "server.crt", NULL,
	              "tls.key_file \"DIR/server.crt\": no private key in the file: found only \"CERTIFICATE\"");
}
END_TEST

START_TEST(refuses_a_damaged_certificate)
{
	tlscerts_make_default();
	fixture_write_text(fixture_path("bad.crt"), "-----BEGIN CERTIFICATE-----\nAAAAbm90IGEgY2VydA==\n"
	                                            "-----END CERTIFICATE-----\n");
	check_refused("bad.crt", "server.key", NULL, "tls.cert_file \"DIR/bad.crt\": not a valid PEM certificate: ");
}
END_TEST

START_TEST(refuses_a_key_of_another_certificate)
{
	tlscerts_make_default();
	tlscerts_make("other", "ca", false, 0x3003, -60, 3600);
	check_refused("server.crt", "other.key", NULL,
	              "tls.key_file \"DIR/other.key\" does not belong to the certificate in tls.cert_file "
	              "\"DIR/server.crt\"");
}
END_TEST

START_TEST(refuses_an_encrypted_key)
{
	tlscerts_make_default();
	fixture_write_text(fixture_path("enc.key"), "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n"
	                                            "-----END ENCRYPTED PRIVATE KEY-----\n");
	check_refused("server.crt", "enc.key", NULL,
	              "tls.key_file \"DIR/enc.key\": encrypted private keys are not supported");
}
END_TEST

START_TEST(refuses_a_client_ca_file_without_a_certificate)
{
	tlscerts_make_default();
	check_refused("server.crt", "server.key", "server.key",
	              "tls.client_ca_file \"DIR/server.key\": no CA certificate in the file: found only \"PRIVATE KEY\"");
}
END_TEST

START_TEST(an_expired_certificate_only_warns)
{
	tlscerts_make("ca", NULL, true, 1, -7200, 86400);
	tlscerts_make("old", "ca", false, 0x4004, -7200, -3600);
	tlscerts_make("future", "ca", false, 0x5005, 3600, 7200);
	struct rs_tls_config c = files("old.crt", "old.key", NULL);
	struct tls_info info;
	struct rs_err err = {0};
	ck_assert_msg(tls_check_files(&info, &c, &err) == RS_OK, "%s", err.msg);
	char warn[256];
	ck_assert(tls_info_warning(warn, sizeof(warn), &info, time(NULL)));
	ck_assert_msg(strstr(warn, "the certificate (serial 4004, CN=regslim-test-old) expired on 20"), "%s", warn);
	files_free(&c);
	c = files("future.crt", "future.key", NULL);
	ck_assert_msg(tls_check_files(&info, &c, &err) == RS_OK, "%s", err.msg);
	ck_assert(tls_info_warning(warn, sizeof(warn), &info, time(NULL)));
	ck_assert_msg(strstr(warn, "is not valid before 20"), "%s", warn);
	files_free(&c);
}
END_TEST

static void copy_file(const char *from, const char *to)
{
	size_t len = 0;
	char *text = fixture_read_file(fixture_path(from), &len);
	fixture_write_file(fixture_path(to), text, len);
	free(text);
}

START_TEST(reload_swaps_and_keeps_the_old_on_error)
{
	tlscerts_make_default();
	tlscerts_make("next", "ca", false, 0x6006, -60, 3600);
	copy_file("server.crt", "live.crt");
	copy_file("server.key", "live.key");
	struct rs_tls_config c = files("live.crt", "live.key", NULL);
	struct tls_server *t = NULL;
	struct rs_err err = {0};
	ck_assert_msg(tls_server_new(&t, &c, &err) == RS_OK, "%s", err.msg);
	struct tls_info info;
	tls_server_info(&info, t);
	ck_assert_str_eq(info.serial, "1001");

	/* Half-replaced files (new certificate, old key): refused, old kept. */
	copy_file("next.crt", "live.crt");
	ck_assert_int_eq(tls_server_reload(t, &err), RS_CONFIG);
	ck_assert_ptr_nonnull(strstr(err.msg, "does not belong to the certificate"));
	tls_server_info(&info, t);
	ck_assert_str_eq(info.serial, "1001");

	copy_file("next.key", "live.key");
	ck_assert_msg(tls_server_reload(t, &err) == RS_OK, "%s", err.msg);
	tls_server_info(&info, t);
	ck_assert_str_eq(info.serial, "6006");

	fixture_write_text(fixture_path("live.crt"), "garbage\n");
	ck_assert_int_eq(tls_server_reload(t, &err), RS_CONFIG);
	ck_assert_ptr_nonnull(strstr(err.msg, "the file is not PEM"));
	tls_server_info(&info, t);
	ck_assert_str_eq(info.serial, "6006");
	tls_server_free(t);
	files_free(&c);
}
END_TEST

START_TEST(a_pinned_generation_outlives_reloads)
{
	tlscerts_make_default();
	struct rs_tls_config c = files("server.crt", "server.key", "ca.crt");
	struct tls_server *t = NULL;
	struct rs_err err = {0};
	ck_assert_msg(tls_server_new(&t, &c, &err) == RS_OK, "%s", err.msg);
	int sv[2];
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	void *first = NULL, *second = NULL;
	tls_server_conn_started(t, &first, sv[0], "test:1"); /* nothing sent yet: no mix-up */
	ck_assert_ptr_nonnull(first);
	for (int i = 0; i < 3; i++)
		ck_assert_msg(tls_server_reload(t, &err) == RS_OK, "%s", err.msg);
	tls_server_conn_started(t, &second, sv[0], "test:2");
	ck_assert_msg(tls_server_reload(t, &err) == RS_OK, "%s", err.msg);
	/* Closing in any order frees every generation exactly once (ASan). */
	tls_server_conn_served(first);
	tls_server_conn_closed(t, first, NULL, "test:1");
	tls_server_free(t);
	tls_server_conn_closed(NULL, second, NULL, "test:2");
	close(sv[0]);
	close(sv[1]);
	files_free(&c);
}
END_TEST

/* Send what a client sends first to one end of a socket pair, run the check
 * on the other; returns whether it answered, the answer in reply[]. */
static bool sniff(const void *first, size_t len, bool tls_listener, char *reply, size_t cap)
{
	int sv[2];
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ck_assert_int_eq(write(sv[1], first, len), (ssize_t)len);
	bool answered = tls_sniff_mixup(sv[0], tls_listener, "127.0.0.1:1");
	ssize_t n = 0;
	reply[0] = '\0';
	if (answered) {
		n = read(sv[1], reply, cap - 1);
		ck_assert_int_gt(n, 0);
		reply[n] = '\0';
	} else {
		char again[64];
		ck_assert_int_eq(recv(sv[0], again, sizeof(again), MSG_DONTWAIT), (ssize_t)len); /* untouched */
	}
	close(sv[0]);
	close(sv[1]);
	return answered;
}

START_TEST(answers_protocol_mixups_with_400)
{
	static const unsigned char hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03};
	const char *get = "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
	char reply[512];
	ck_assert(sniff(get, strlen(get), true, reply, sizeof(reply)));
	ck_assert_ptr_nonnull(strstr(reply, "HTTP/1.1 400 Bad Request\r\n"));
	ck_assert_ptr_nonnull(strstr(reply, "\r\n\r\nthis port speaks TLS, use https://\n"));
	ck_assert(sniff(hello, sizeof(hello), false, reply, sizeof(reply)));
	ck_assert_ptr_nonnull(strstr(reply, "HTTP/1.1 400 Bad Request\r\n"));
	ck_assert_ptr_nonnull(strstr(reply, "use http://"));
	/* The right protocol, or bytes that are neither, pass untouched. */
	ck_assert(!sniff(hello, sizeof(hello), true, reply, sizeof(reply)));
	ck_assert(!sniff(get, strlen(get), false, reply, sizeof(reply)));
	ck_assert(!sniff("\x01\x02\x03", 3, true, reply, sizeof(reply)));
	ck_assert(!sniff("G", 1, true, reply, sizeof(reply)));
	int sv[2];
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ck_assert(!tls_sniff_mixup(sv[0], true, "127.0.0.1:1")); /* nothing sent yet: no wait */
	close(sv[0]);
	close(sv[1]);
}
END_TEST

static Suite *tls_suite(void)
{
	Suite *s = suite_create("tls");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, fixture_tmpdir_setup, fixture_tmpdir_teardown);
	tcase_add_test(tc, loads_a_good_pair_and_reports_it);
	tcase_add_test(tc, loads_a_chain_and_a_client_ca);
	tcase_add_test(tc, refuses_a_missing_file);
	tcase_add_test(tc, refuses_a_file_that_is_not_pem);
	tcase_add_test(tc, refuses_a_key_where_the_certificate_belongs);
	tcase_add_test(tc, refuses_a_damaged_certificate);
	tcase_add_test(tc, refuses_a_key_of_another_certificate);
	tcase_add_test(tc, refuses_an_encrypted_key);
	tcase_add_test(tc, refuses_a_client_ca_file_without_a_certificate);
	tcase_add_test(tc, an_expired_certificate_only_warns);
	tcase_add_test(tc, reload_swaps_and_keeps_the_old_on_error);
	tcase_add_test(tc, a_pinned_generation_outlives_reloads);
	tcase_add_test(tc, answers_protocol_mixups_with_400);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(tls_suite());
}
