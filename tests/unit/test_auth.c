/* test_auth: regslim's client authentication: bcrypt htpasswd entries (a
 * fixed line made with `htpasswd -Bbn alice secret1`), token issue and
 * verification (round trip, expiry, tampering, another secret), ACL globs
 * and groups, decisions (anonymous pull, challenge, insufficient scope,
 * denied) and hostile Authorization headers. Per-test temp directory. */
#include "auth.h"

#include "fixture.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ALICE_LINE "alice:$2y$05$du12rz7KuV8PuIZ9F.5QiuzsFXdSJmA4DRrNgt9ruOKHxqKUbMF9C\n"
/* base64("alice:secret1"), base64("bob:x") */
#define ALICE_BASIC "Basic YWxpY2U6c2VjcmV0MQ=="
#define T0 ((time_t)1800000000)

static char htp[320];

static void setup(void)
{
	fixture_tmpdir_setup();
	snprintf(htp, sizeof(htp), "%s", fixture_path("htpasswd"));
	fixture_write_text(htp, "# users\n" ALICE_LINE);
}

/* ACL: alice (group devs) may push everything, bob may pull team/ repositories. */
static char *devs_members[] = {"alice"};
static struct rs_auth_group groups[] = {{.name = "devs", .members = devs_members, .member_count = 1}};
static char *devs[] = {"devs"};
static char *bob[] = {"bob"};
static struct rs_acl_rule rules[] = {
	{.repository = "*", .groups = devs, .group_count = 1, .pull = true, .push = true},
	{.repository = "team/*", .users = bob, .user_count = 1, .pull = true},
};

static struct rs_auth_config make_cfg(bool anon, bool acl)
{
	struct rs_auth_config c = {
		.enabled = true,
		.htpasswd = htp,
		.token_ttl_s = 300,
		.anonymous_pull = anon,
		.acl_set = acl,
		.acl = acl ? rules : NULL,
		.acl_count = acl ? 2 : 0,
		.groups = groups,
		.group_count = 1,
	};
	return c;
}

static struct auth *open_auth(const struct rs_auth_config *c)
{
	struct auth *a = NULL;
	struct rs_err err = {0};
	ck_assert_msg(auth_new(&a, c, &err) == RS_OK, "%s", err.msg);
	return a;
}

START_TEST(verifies_bcrypt_password)
{
	struct rs_auth_config c = make_cfg(true, false);
	struct auth *a = open_auth(&c);
	struct rs_err err = {0};
	ck_assert_int_eq(auth_check_password(a, "alice", "secret1", &err), RS_OK);
	ck_assert_int_eq(auth_check_password(a, "alice", "secret2", &err), RS_UNAUTHORIZED);
	ck_assert_int_eq(auth_check_password(a, "alice", "", &err), RS_UNAUTHORIZED);
	ck_assert_int_eq(auth_check_password(a, "mallory", "secret1", &err), RS_UNAUTHORIZED);
	ck_assert_str_eq(err.msg, "invalid username or password");
	auth_free(a);
}
END_TEST

START_TEST(refuses_non_bcrypt_entries)
{
	fixture_write_text(htp, ALICE_LINE "bob:{SHA}C+7Hteo/D9vJXQ3UfzxbwnXaijM=\n");
	struct rs_auth_config c = make_cfg(true, false);
	struct auth *a = NULL;
	struct rs_err err = {0};
	ck_assert_int_eq(auth_new(&a, &c, &err), RS_CONFIG);
	ck_assert_ptr_null(a);
	ck_assert_msg(strstr(err.msg, "line 2") && strstr(err.msg, "bob") && strstr(err.msg, "htpasswd -B"), "%s",
	              err.msg);
}
END_TEST

START_TEST(reloads_changed_htpasswd)
{
	struct rs_auth_config c = make_cfg(true, false);
	struct auth *a = open_auth(&c);
	struct rs_err err = {0};
	sleep(1); /* a new mtime; the line is `htpasswd -Bbn carol pw3` */
	ck_assert_int_eq(auth_check_password(a, "carol", "pw3", &err), RS_UNAUTHORIZED);
	fixture_write_text(htp, ALICE_LINE "carol:$2y$05$sP8MNrR2C7Su0nm3o6Tm1.scArJBwFTkt4e3e5N8URq9vcwoU7a.W\n");
	ck_assert_int_eq(auth_check_password(a, "carol", "pw3", &err), RS_OK);
	ck_assert_int_eq(auth_check_password(a, "alice", "secret1", &err), RS_OK);
	fixture_write_text(htp, "broken line without colon\n");
	sleep(1);
	ck_assert_int_eq(auth_check_password(a, "alice", "secret1", &err), RS_OK); /* kept the old table */
	auth_free(a);
}
END_TEST

START_TEST(token_round_trip_grants_scope)
{
	struct rs_auth_config c = make_cfg(false, true);
	struct auth *a = open_auth(&c);
	char body[8192];
	struct rs_err err = {0};
	const char *scopes[] = {"repository:team/app:pull,push", "repository:other:pull", "registry:catalog:*"};
	ck_assert_int_eq(auth_issue_token(a, ALICE_BASIC, NULL, scopes, 3, T0, body, sizeof(body), &err), RS_OK);
	ck_assert_ptr_nonnull(strstr(body, "\"expires_in\":300"));
	char *t = strstr(body, "\"token\":\"");
	ck_assert_ptr_nonnull(t);
	t += 9;
	char tok[4200];
	size_t l = strcspn(t, "\"");
	memcpy(tok, t, l);
	tok[l] = '\0';
	char hdr[4300];
	snprintf(hdr, sizeof(hdr), "Bearer %s", tok);
	struct auth_identity id;
	ck_assert_int_eq(auth_identify(a, hdr, NULL, T0 + 10, &id, &err), RS_OK);
	ck_assert_str_eq(id.user, "alice");
	ck_assert_str_eq(id.scopes, "team/app:pull,push other:pull");
	struct auth_decision d;
	auth_decide(a, hdr, NULL, "team/app", AUTH_PUSH, T0 + 10, &d);
	ck_assert_int_eq(d.verdict, AUTH_ALLOW);
	auth_decide(a, hdr, NULL, "other", AUTH_PUSH, T0 + 10, &d);
	ck_assert_int_eq(d.verdict, AUTH_CHALLENGE); /* the ACL would grant it: ask for a new token */
	ck_assert(d.insufficient_scope);
	/* expiry */
	ck_assert_int_eq(auth_identify(a, hdr, NULL, T0 + 300, &id, &err), RS_UNAUTHORIZED);
	ck_assert_ptr_nonnull(strstr(err.msg, "expired"));
	/* tampering: every single-character change of the token is refused */
	for (size_t i = 7; i < strlen(hdr); i++) {
		char saved = hdr[i];
		hdr[i] = saved == 'A' ? 'B' : 'A';
		ck_assert_int_eq(auth_identify(a, hdr, NULL, T0 + 10, &id, &err), RS_UNAUTHORIZED);
		hdr[i] = saved;
	}
	/* another regslim (another secret) does not accept it */
	struct auth *b = open_auth(&c);
	ck_assert_int_eq(auth_identify(b, hdr, NULL, T0 + 10, &id, &err), RS_UNAUTHORIZED);
	auth_free(b);
	auth_free(a);
}
END_TEST

START_TEST(token_secret_file_survives_restart)
{
	char sec[400];
	snprintf(sec, sizeof(sec), "%s", fixture_path("secret"));
	fixture_write_text(sec, "0123456789abcdef0123456789abcdef-long-enough\n");
	struct rs_auth_config c = make_cfg(true, false);
	c.token_secret_file = sec;
	struct auth *a = open_auth(&c);
	char tok[4200], hdr[4300];
	struct rs_err err = {0};
	ck_assert_int_eq(auth_token_make(a, "alice", "x:pull", T0, tok, sizeof(tok), &err), RS_OK);
	auth_free(a);
	a = open_auth(&c);
	snprintf(hdr, sizeof(hdr), "Bearer %s", tok);
	struct auth_identity id;
	ck_assert_int_eq(auth_identify(a, hdr, NULL, T0 + 1, &id, &err), RS_OK);
	auth_free(a);
	fixture_write_text(sec, "short\n");
	ck_assert_int_eq(auth_new(&a, &c, &err), RS_CONFIG);
	ck_assert_ptr_nonnull(strstr(err.msg, "at least 32"));
}
END_TEST

START_TEST(acl_globs_and_groups)
{
	ck_assert(auth_glob_match("team/*", "team/app"));
	ck_assert(auth_glob_match("team/*", "team/a/b"));
	ck_assert(!auth_glob_match("team/*", "teams/app"));
	ck_assert(auth_glob_match("*", "library/tiny"));
	ck_assert(auth_glob_match("app-?", "app-1"));
	ck_assert(!auth_glob_match("app-?", "app-10"));
	struct rs_auth_config c = make_cfg(false, true);
	struct auth *a = open_auth(&c);
	ck_assert_uint_eq(auth_allowed(a, "alice", "anything/at/all"), AUTH_PULL | AUTH_PUSH);
	ck_assert_uint_eq(auth_allowed(a, "bob", "team/app"), AUTH_PULL);
	ck_assert_uint_eq(auth_allowed(a, "bob", "other/app"), 0);
	ck_assert_uint_eq(auth_allowed(a, NULL, "team/app"), 0);
	auth_free(a);
	c = make_cfg(true, false); /* no acl: users do everything, anonymous pulls */
	a = open_auth(&c);
	ck_assert_uint_eq(auth_allowed(a, "bob", "x"), AUTH_PULL | AUTH_PUSH);
	ck_assert_uint_eq(auth_allowed(a, NULL, "x"), AUTH_PULL);
	auth_free(a);
}
END_TEST

START_TEST(decides_anonymous_challenge_and_denied)
{
	struct rs_auth_config c = make_cfg(true, true);
	struct auth *a = open_auth(&c);
	struct auth_decision d;
	auth_decide(a, NULL, NULL, "team/app", AUTH_PULL, T0, &d);
	ck_assert_int_eq(d.verdict, AUTH_ALLOW);
	auth_decide(a, NULL, NULL, "team/app", AUTH_PUSH, T0, &d);
	ck_assert_int_eq(d.verdict, AUTH_CHALLENGE);
	auth_decide(a, NULL, NULL, NULL, AUTH_PULL, T0, &d); /* /v2/ challenges so that docker login checks */
	ck_assert_int_eq(d.verdict, AUTH_CHALLENGE);
	auth_decide(a, ALICE_BASIC, NULL, NULL, AUTH_PULL, T0, &d);
	ck_assert_int_eq(d.verdict, AUTH_ALLOW);
	auth_decide(a, ALICE_BASIC, NULL, "x/y", AUTH_PUSH, T0, &d);
	ck_assert_int_eq(d.verdict, AUTH_ALLOW);
	auth_decide(a, "Basic YWxpY2U6d3Jvbmc=", NULL, "x/y", AUTH_PULL, T0, &d); /* alice:wrong */
	ck_assert_int_eq(d.verdict, AUTH_CHALLENGE);
	auth_free(a);
	/* a user the ACL gives pull only: push is 403 DENIED (`htpasswd -Bbn carol pw3`) */
	fixture_write_text(htp, ALICE_LINE "carol:$2y$05$sP8MNrR2C7Su0nm3o6Tm1.scArJBwFTkt4e3e5N8URq9vcwoU7a.W\n");
	a = open_auth(&c);
	auth_decide(a, "Basic Y2Fyb2w6cHcz", NULL, "team/app", AUTH_PUSH, T0, &d); /* carol:pw3 */
	ck_assert_int_eq(d.verdict, AUTH_DENY);
	ck_assert_ptr_nonnull(strstr(d.msg, "carol may not push team/app"));
	auth_free(a);
}
END_TEST

START_TEST(hostile_authorization_headers)
{
	struct rs_auth_config c = make_cfg(false, false);
	struct auth *a = open_auth(&c);
	struct auth_identity id;
	struct rs_err err = {0};
	static const char *const bad[] = {
		"Basic",
		"Basic ",
		"Basic !!!!",
		"Basic YWxpY2U=",           /* "alice": no colon */
		"Basic OnNlY3JldDE=",       /* ":secret1": empty user */
		"Basic YWxpAGNlOnNlY3JldDE=", /* NUL inside */
		"Basic YWxpY2U6c2VjcmV0MQ==garbage",
		"Bearer",
		"Bearer ",
		"Bearer a.b.c",
		"Bearer .",
		"Bearer abc",
		"Bearer YWJj.YWJj",
		"Bearer tok extra",
		"Digest username=\"alice\"",
		"Basicfoo YWxpY2U6c2VjcmV0MQ==",
		"\x01\x02\x03",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(auth_identify(a, bad[i], NULL, T0, &id, &err) == RS_UNAUTHORIZED, "accepted '%s'", bad[i]);
	/* very long headers */
	size_t n = 20000;
	char *big = malloc(n + 8);
	ck_assert_ptr_nonnull(big);
	memcpy(big, "Bearer ", 7);
	memset(big + 7, 'A', n);
	big[n + 7] = '\0';
	ck_assert_int_eq(auth_identify(a, big, NULL, T0, &id, &err), RS_UNAUTHORIZED);
	memcpy(big, "Basic  ", 7);
	ck_assert_int_eq(auth_identify(a, big, NULL, T0, &id, &err), RS_UNAUTHORIZED);
	big[7 + 1500] = '\0';
	ck_assert_int_eq(auth_identify(a, big, NULL, T0, &id, &err), RS_UNAUTHORIZED);
	free(big);
	/* scheme names are case-insensitive */
	ck_assert_int_eq(auth_identify(a, "basic YWxpY2U6c2VjcmV0MQ==", NULL, T0, &id, &err), RS_OK);
	ck_assert_str_eq(id.user, "alice");
	/* a password with a colon in it keeps everything after the first colon */
	ck_assert_int_eq(auth_identify(a, "Basic YWxpY2U6c2VjcmV0MTo=", NULL, T0, &id, &err), RS_UNAUTHORIZED);
	/* the token endpoint refuses Bearer credentials and too many scopes */
	char body[8192];
	ck_assert_int_eq(auth_issue_token(a, "Bearer x.y", NULL, NULL, 0, T0, body, sizeof(body), &err), RS_UNAUTHORIZED);
	const char *many[RS_LIMIT_TOKEN_SCOPES_MAX + 1];
	for (size_t i = 0; i <= RS_LIMIT_TOKEN_SCOPES_MAX; i++)
		many[i] = "repository:a:pull";
	ck_assert_int_eq(auth_issue_token(a, NULL, NULL, many, RS_LIMIT_TOKEN_SCOPES_MAX + 1, T0, body, sizeof(body), &err),
	                 RS_BAD_INPUT);
	/* hostile scope strings grant nothing */
	const char *odd[] = {"repository:a|b:pull", "repository::pull", "repository:x", "repository:a b:push"};
	ck_assert_int_eq(auth_issue_token(a, ALICE_BASIC, NULL, odd, 4, T0, body, sizeof(body), &err), RS_OK);
	auth_free(a);
}
END_TEST

static Suite *auth_suite(void)
{
	Suite *s = suite_create("auth");
	TCase *tc = tcase_create("auth");
	tcase_add_checked_fixture(tc, setup, fixture_tmpdir_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, verifies_bcrypt_password);
	tcase_add_test(tc, refuses_non_bcrypt_entries);
	tcase_add_test(tc, reloads_changed_htpasswd);
	tcase_add_test(tc, token_round_trip_grants_scope);
	tcase_add_test(tc, token_secret_file_survives_restart);
	tcase_add_test(tc, acl_globs_and_groups);
	tcase_add_test(tc, decides_anonymous_challenge_and_denied);
	tcase_add_test(tc, hostile_authorization_headers);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(auth_suite());
}
