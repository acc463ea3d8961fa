/* auth: who a client is and what it may do, for regslim's own clients (not
 * the upstream's credentials, see upstream_auth.h). It checks HTTP Basic
 * credentials against an htpasswd file with bcrypt entries (libxcrypt
 * crypt_r), issues and verifies regslim's own bearer tokens (HMAC-SHA256 over
 * a small text payload, key from auth.token_secret_file or random at start),
 * and evaluates the ACL of auth.acl (repository glob, users or groups,
 * actions pull/push; anonymous pull when auth.anonymous_pull).
 *
 * It knows nothing of HTTP libraries: auth_http.c turns decisions into 401
 * challenges, 403 DENIED answers and the /auth/token endpoint. Thread-safe:
 * the htpasswd table is reloaded under a lock when the file changes. */
#ifndef RS_PROXY_AUTH_H
#define RS_PROXY_AUTH_H

#include "config.h"
#include "errors.h"
#include "rs_limits.h"

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* Actions, as a bit set. */
#define AUTH_PULL 1u
#define AUTH_PUSH 2u

#define AUTH_USER_MAX 256
#define AUTH_MSG_MAX 256

struct auth;

/* Load the htpasswd file and the token secret named in cfg (borrowed; must
 * outlive the auth). cfg->enabled must be true. RS_CONFIG naming the file and
 * line for a bad htpasswd entry or secret file. *out: auth_free(). */
RS_MUST_CHECK enum rs_code auth_new(struct auth **out, const struct rs_auth_config *cfg, struct rs_err *err);
void auth_free(struct auth *a);

/* RS_OK when user/password match an htpasswd entry, else RS_UNAUTHORIZED.
 * Rereads the file first when it changed on disk (a reload that fails keeps
 * the previous table and is logged). */
RS_MUST_CHECK enum rs_code auth_check_password(struct auth *a, const char *user, const char *password,
                                               struct rs_err *err);

/* Actions (AUTH_PULL | AUTH_PUSH) that user may perform on repo; user NULL is
 * an anonymous client. */
unsigned auth_allowed(const struct auth *a, const char *user, const char *repo);

/* The client a request comes from: its address (for the failed-login
 * back-off, login_guard.h; NULL counts as one unknown address) and, after a
 * refusal with RS_THROTTLED / AUTH_THROTTLED, how long it should wait. */
struct auth_client {
	const char *addr;
	unsigned retry_after; /* seconds; set when throttled */
};

/* What an Authorization header (may be NULL) says about the client. */
struct auth_identity {
	bool anonymous;             /* no credentials, or an anonymous token */
	bool bearer;                /* came from a token (else Basic or none) */
	char user[AUTH_USER_MAX];   /* "" when anonymous */
	char scopes[RS_LIMIT_TOKEN_MAX_CHARS]; /* a token's grants: "name:pull,push name2:pull" */
};

/* Parse and check credentials from client (may be NULL). RS_OK with *out
 * filled (also for no header: anonymous); RS_UNAUTHORIZED with a message for
 * malformed headers, wrong passwords, bad or expired tokens; RS_THROTTLED,
 * without checking the password, while this user or address is in its
 * failed-login back-off (client->retry_after says how long). now: the
 * current time (tests pass their own). */
RS_MUST_CHECK enum rs_code auth_identify(struct auth *a, const char *header, struct auth_client *client, time_t now,
                                         struct auth_identity *out, struct rs_err *err);

enum auth_verdict {
	AUTH_ALLOW,     /* go ahead */
	AUTH_CHALLENGE, /* 401: log in, or get a token with the scope */
	AUTH_DENY,      /* 403: this identity may not do this */
	AUTH_THROTTLED, /* 429: too many failed logins, try again later (client->retry_after) */
};

struct auth_decision {
	enum auth_verdict verdict;
	bool insufficient_scope; /* 401 because the token lacks a scope the ACL would grant */
	char msg[AUTH_MSG_MAX];
};

/* Decide a request. repo is NULL for /v2/ itself (any valid credentials will
 * do; anonymous clients are challenged so that `docker login` checks the
 * password). need is AUTH_PULL or AUTH_PUSH. */
void auth_decide(struct auth *a, const char *header, struct auth_client *client, const char *repo, unsigned need,
                 time_t now, struct auth_decision *out);

/* Issue a token for the credentials in header (Basic, or NULL for an
 * anonymous token) covering what the ACL grants of the n requested scopes
 * ("repository:NAME:pull,push"; other types are ignored). Writes the JSON
 * answer {"token","access_token","expires_in","issued_at"} into out (cap
 * bytes). RS_UNAUTHORIZED for wrong credentials, RS_THROTTLED as for
 * auth_identify, RS_BAD_INPUT for too many scopes, RS_TOO_LARGE when the
 * token would exceed RS_LIMIT_TOKEN_MAX_CHARS. */
RS_MUST_CHECK enum rs_code auth_issue_token(struct auth *a, const char *header, struct auth_client *client,
                                            const char *const *scopes, size_t n, time_t now, char *out, size_t cap,
                                            struct rs_err *err);

/* Token text for subject user ("" anonymous) with grants ("name:pull,push
 * ..."), valid from iat for the configured lifetime. Exposed for tests. */
RS_MUST_CHECK enum rs_code auth_token_make(struct auth *a, const char *user, const char *grants, time_t iat,
                                           char *out, size_t cap, struct rs_err *err);

/* fnmatch-style glob used by the ACL: '*' matches any run of characters
 * (including '/'), '?' one character, [...] a class. */
bool auth_glob_match(const char *glob, const char *name);

#endif
