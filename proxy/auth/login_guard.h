/* login_guard: a back-off for failed password logins (HTTP Basic, on the
 * registry API and the token endpoint), so that passwords cannot be guessed
 * at the speed bcrypt allows. Failures are counted per client address and
 * per (user, address): past RS_LIMIT_LOGIN_FREE_FAILURES failures a key
 * waits 1, 2, 4 ... up to RS_LIMIT_LOGIN_BACKOFF_MAX_S seconds before its
 * next try, and a try during the wait is refused without checking the
 * password. A user is never locked out as such: a correct password from an
 * address that has not failed goes through whatever other addresses did.
 * A success clears the (user, address) key. Memory is a fixed table of
 * RS_LIMIT_LOGIN_TRACKED keys (the oldest is forgotten when it is full).
 * Thread-safe; knows nothing of HTTP or passwords. */
#ifndef RS_PROXY_LOGIN_GUARD_H
#define RS_PROXY_LOGIN_GUARD_H

#include "errors.h"

#include <stdbool.h>
#include <time.h>

struct login_guard;

/* A new, empty guard (login_guard_free). RS_NOMEM. */
RS_MUST_CHECK enum rs_code login_guard_new(struct login_guard **out, struct rs_err *err);
void login_guard_free(struct login_guard *g);

/* May user try a password from addr at now? When not, *retry_s says how
 * long until it may (at least 1). addr NULL counts as one unknown address. */
bool login_guard_allow(struct login_guard *g, const char *user, const char *addr, time_t now, unsigned *retry_s);

/* Record the outcome of a password check. */
void login_guard_failed(struct login_guard *g, const char *user, const char *addr, time_t now);
void login_guard_succeeded(struct login_guard *g, const char *user, const char *addr);

#endif
