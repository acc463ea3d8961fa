/* test_login_guard: the failed-login back-off: free failures, doubling
 * waits up to the cap, per (user, address) and per address, no lock-out of
 * a user at another address, success and time forgive, a bounded table
 * under many keys; and through auth.c, a wrong-password streak refused with
 * RS_THROTTLED before the password is checked. */
#include "proxy/auth/login_guard.h"
#include "proxy/auth/auth.h"

#include "config/rs_limits.h"
#include "fixture.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T0 1700000000

static struct login_guard *guard(void)
{
	struct login_guard *g;
	struct rs_err err = {0};
	ck_assert_int_eq(login_guard_new(&g, &err), RS_OK);
	return g;
}

START_TEST(free_failures_then_doubling_waits)
{
	struct login_guard *g = guard();
	unsigned wait = 0;
	time_t now = T0;
	for (int i = 0; i < RS_LIMIT_LOGIN_FREE_FAILURES; i++) {
		ck_assert(login_guard_allow(g, "alice", "10.0.0.1", now, &wait));
		login_guard_failed(g, "alice", "10.0.0.1", now);
	}
	ck_assert(login_guard_allow(g, "alice", "10.0.0.1", now, &wait));
	unsigned expect = 1;
	for (int i = 0; i < 10; i++) {
		login_guard_failed(g, "alice", "10.0.0.1", now);
		ck_assert(!login_guard_allow(g, "alice", "10.0.0.1", now, &wait));
		ck_assert_uint_eq(wait, expect);
		now += wait; /* waits it out, then fails again */
		ck_assert(login_guard_allow(g, "alice", "10.0.0.1", now, &wait));
		expect = expect * 2 > RS_LIMIT_LOGIN_BACKOFF_MAX_S ? RS_LIMIT_LOGIN_BACKOFF_MAX_S : expect * 2;
	}
	ck_assert_uint_eq(expect, RS_LIMIT_LOGIN_BACKOFF_MAX_S);
	/* the same user from another address, another user here: not held */
	ck_assert(login_guard_allow(g, "alice", "10.0.0.2", now - 1, &wait));
	ck_assert(login_guard_allow(g, "bob", "10.0.0.1", now - 1, &wait));
	login_guard_free(g);
}
END_TEST

START_TEST(success_and_time_forgive)
{
	struct login_guard *g = guard();
	unsigned wait;
	for (int i = 0; i <= RS_LIMIT_LOGIN_FREE_FAILURES; i++)
		login_guard_failed(g, "alice", "10.0.0.1", T0);
	ck_assert(!login_guard_allow(g, "alice", "10.0.0.1", T0, &wait));
	login_guard_succeeded(g, "alice", "10.0.0.1");
	ck_assert(login_guard_allow(g, "alice", "10.0.0.1", T0, &wait));
	/* a streak older than RS_LIMIT_LOGIN_FORGET_S starts again at zero */
	for (int i = 0; i < RS_LIMIT_LOGIN_FREE_FAILURES; i++)
		login_guard_failed(g, "carol", "10.0.0.1", T0);
	login_guard_failed(g, "carol", "10.0.0.1", T0 + RS_LIMIT_LOGIN_FORGET_S + 1);
	ck_assert(login_guard_allow(g, "carol", "10.0.0.1", T0 + RS_LIMIT_LOGIN_FORGET_S + 1, &wait));
	login_guard_free(g);
}
END_TEST

START_TEST(an_address_guessing_many_users_is_held)
{
	struct login_guard *g = guard();
	unsigned wait;
	char user[32];
	for (int i = 0; i <= RS_LIMIT_LOGIN_FREE_FAILURES_ADDR; i++) {
		snprintf(user, sizeof(user), "user%d", i);
		login_guard_failed(g, user, "10.0.0.9", T0);
	}
	ck_assert(!login_guard_allow(g, "someone-new", "10.0.0.9", T0, &wait));
	ck_assert_uint_ge(wait, 1);
	ck_assert(login_guard_allow(g, "someone-new", "10.0.0.10", T0, &wait));
	login_guard_free(g);
}
END_TEST

START_TEST(many_keys_stay_bounded)
{
	struct login_guard *g = guard();
	unsigned wait;
	char addr[32];
	for (int i = 0; i < 4 * RS_LIMIT_LOGIN_TRACKED; i++) {
		snprintf(addr, sizeof(addr), "10.%d.%d.%d", i >> 16 & 255, i >> 8 & 255, i & 255);
		login_guard_failed(g, "mallory", addr, T0 + i / 1000);
	}
	/* the newest streaks are still known; nothing grew */
	for (int i = 0; i < RS_LIMIT_LOGIN_FREE_FAILURES; i++)
		login_guard_failed(g, "mallory", "192.0.2.1", T0 + 100);
	login_guard_failed(g, "mallory", "192.0.2.1", T0 + 100);
	ck_assert(!login_guard_allow(g, "mallory", "192.0.2.1", T0 + 100, &wait));
	login_guard_free(g);
}
END_TEST

/* alice:wrong, alice:secret1 (the test htpasswd below) */
#define WRONG "Basic YWxpY2U6d3Jvbmc="
#define RIGHT "Basic YWxpY2U6c2VjcmV0MQ=="

START_TEST(auth_refuses_a_streak_unchecked)
{
	/* `htpasswd -Bbn alice secret1` */
	char htp[320];
	snprintf(htp, sizeof(htp), "%s", fixture_path("htpasswd"));
	fixture_write_text(htp, "alice:$2y$05$du12rz7KuV8PuIZ9F.5QiuzsFXdSJmA4DRrNgt9ruOKHxqKUbMF9C\n");
	struct rs_auth_config cfg = {.enabled = true, .htpasswd = htp, .token_ttl_s = 300, .anonymous_pull = true};
	struct auth *a;
	struct rs_err err = {0};
	ck_assert_int_eq(auth_new(&a, &cfg, &err), RS_OK);
	struct auth_identity id;
	struct auth_client here = {.addr = "10.1.1.1"}, there = {.addr = "10.2.2.2"};
	for (int i = 0; i <= RS_LIMIT_LOGIN_FREE_FAILURES; i++)
		ck_assert_int_eq(auth_identify(a, WRONG, &here, T0, &id, &err), RS_UNAUTHORIZED);
	ck_assert_int_eq(auth_identify(a, RIGHT, &here, T0, &id, &err), RS_THROTTLED);
	ck_assert_uint_eq(here.retry_after, 1);
	ck_assert_ptr_nonnull(strstr(err.msg, "too many failed logins for alice"));
	struct auth_decision d;
	auth_decide(a, RIGHT, &here, "x", AUTH_PULL, T0, &d);
	ck_assert_int_eq(d.verdict, AUTH_THROTTLED);
	/* the right password from another address is not locked out */
	ck_assert_int_eq(auth_identify(a, RIGHT, &there, T0, &id, &err), RS_OK);
	ck_assert_str_eq(id.user, "alice");
	/* after the wait, the right password goes through and clears the streak */
	ck_assert_int_eq(auth_identify(a, RIGHT, &here, T0 + 1, &id, &err), RS_OK);
	ck_assert_int_eq(auth_identify(a, WRONG, &here, T0 + 1, &id, &err), RS_UNAUTHORIZED);
	ck_assert_int_eq(auth_identify(a, RIGHT, &here, T0 + 1, &id, &err), RS_OK);
	auth_free(a);
}
END_TEST

static Suite *login_guard_suite(void)
{
	Suite *s = suite_create("login_guard");
	TCase *t = tcase_create("core");
	tcase_add_checked_fixture(t, fixture_tmpdir_setup, fixture_tmpdir_teardown);
	tcase_add_test(t, free_failures_then_doubling_waits);
	tcase_add_test(t, success_and_time_forgive);
	tcase_add_test(t, an_address_guessing_many_users_is_held);
	tcase_add_test(t, many_keys_stay_bounded);
	tcase_add_test(t, auth_refuses_a_streak_unchecked);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	return fixture_run_suite(login_guard_suite());
}
