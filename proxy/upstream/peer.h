/* peer: the client side of peer streaming between the replicas of one cluster
 * (docs/scale-out.md "Peer streaming"), and the request authentication both
 * sides share.
 *
 * A replica that finds a blob's single-flight lock held by another replica
 * asks that owner for the bytes: GET <owner's advertise_url>/_regslim/peer/
 * blobs/<digest>, streamed to the caller's callbacks as they arrive (libcurl,
 * one easy handle per call, no redirects, http and https only, a stall bound
 * instead of a total timeout). The request carries PEER_AUTH_HEADER:
 * "<unix time> <hex HMAC-SHA256 under the peer secret of METHOD \n PATH \n
 * time>", so the secret itself never crosses the network; the serving side
 * (api/blobs.c) checks it with peer_auth_check (constant-time compare, at
 * most PEER_AUTH_SKEW_S apart from its clock). A captured header opens the
 * same path only, for that window.
 *
 * It knows nothing of the store, the cluster or HTTP serving; nothing here
 * logs, and the secret never enters a message. */
#ifndef RS_PROXY_PEER_H
#define RS_PROXY_PEER_H

#include "errors.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The request header, the path prefix of the endpoint, the clock window. */
#define PEER_AUTH_HEADER "X-Regslim-Peer-Auth"
#define PEER_BLOB_PATH "/_regslim/peer/blobs/"
#define PEER_AUTH_SKEW_S 300
/* Longest header value with its NUL: 20 digits, a space, 64 hex. */
#define PEER_AUTH_MAX 96

/* The header value for method and path (the path as sent, no query) at unix
 * time now. secret: the peer secret (borrowed). */
void peer_auth_sign(char out[PEER_AUTH_MAX], const char *secret, const char *method, const char *path, int64_t now);

/* Whether value (NULL: absent) authenticates method and path at unix time
 * now: well formed, at most PEER_AUTH_SKEW_S from now, and the HMAC matches
 * (compared in constant time). A NULL or empty secret authenticates nothing. */
bool peer_auth_check(const char *value, const char *secret, const char *method, const char *path, int64_t now);

/* Called once the owner answered 200, with the body's size (-1 unknown), then
 * with each piece of the body. An error stops the transfer and is returned. */
typedef enum rs_code (*peer_begin_fn)(void *arg, int64_t size, struct rs_err *err);
typedef enum rs_code (*peer_data_fn)(void *arg, const void *buf, size_t len, struct rs_err *err);

/* GET base_url PEER_BLOB_PATH digest, authenticated with secret, the body
 * streamed to begin and data. connect_ms bounds the connection, stall_s a
 * time without a byte. RS_OK once the whole body arrived (begin was called);
 * otherwise *out_began says whether begin was (bytes may have gone to data).
 * RS_NOT_FOUND for a 404 (the owner neither downloads nor holds it),
 * RS_UNAUTHORIZED for a 401, RS_UPSTREAM for any other status, a transport
 * failure or a stall (the message names the peer and never the secret),
 * the callbacks' errors. */
RS_MUST_CHECK enum rs_code peer_blob_get(const char *base_url, const char *secret, const char *digest,
                                         unsigned connect_ms, unsigned stall_s, peer_begin_fn begin, peer_data_fn data,
                                         void *arg, bool *out_began, struct rs_err *err);

#endif
