/* tls: the listener's TLS credentials (configuration "tls", docs/
 * configuration.md) for libmicrohttpd's GnuTLS support. It reads and checks
 * the PEM files (certificate chain, private key, optional client CA for
 * mutual TLS), hands the current credentials to GnuTLS during each
 * handshake, and swaps them for new ones on reload without touching open
 * connections. It also spots the two protocol mix-ups on a fresh connection
 * (plain HTTP sent to the TLS port, a TLS handshake sent to the plain port)
 * and answers them with a readable 400 instead of a stall.
 *
 * Only this module includes GnuTLS; http.c passes the MHD options built here
 * and calls the connection hooks from MHD's connection notifier.
 *
 * Lifetime of credentials: each load is a generation. A connection pins the
 * generation that was current when it was accepted; every generation holds a
 * reference to the one that replaced it, so a pinned generation keeps all
 * later ones alive and whatever a handshake is handed stays valid until the
 * connection closes. Generations nobody pins are freed at the next swap. */
#ifndef RS_PROXY_TLS_H
#define RS_PROXY_TLS_H

#include "config.h"
#include "errors.h"

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* What the loaded certificate says, for logs and check-config. */
struct tls_info {
	char subject[160];  /* the server certificate's subject DN */
	char serial[80];    /* its serial number, hex */
	time_t not_before;
	time_t not_after;
	unsigned chain_len; /* certificates in cert_file */
	bool client_ca;     /* client certificates are required */
};

/* Read and check cfg's files as the server would load them, without
 * starting anything (check-config, and the first step of tls_server_new).
 * cfg->enabled must be true. RS_CONFIG names the key, the file and the
 * reason: unreadable, not PEM, no certificate or key in the file, a key that
 * does not belong to the certificate, a client CA file without a CA;
 * RS_UNSUPPORTED when libmicrohttpd was built without TLS; RS_NOMEM.
 * Expiry is not an error: see tls_info_warning(). */
RS_MUST_CHECK enum rs_code tls_check_files(struct tls_info *out, const struct rs_tls_config *cfg,
                                           struct rs_err *err);

/* "certificate serial S (SUBJECT), N in chain, valid until DATE[, client
 * certificates required]" into out[size]. */
void tls_info_describe(char *out, size_t size, const struct tls_info *info);

/* When the certificate in info is expired or not yet valid at now, write a
 * one-line warning to out[size] and return true; else false. */
bool tls_info_warning(char *out, size_t size, const struct tls_info *info, time_t now);

struct tls_server;

/* Load cfg's files (tls_check_files' errors) into the first generation.
 * cfg is borrowed and must outlive the server (reloads read the same paths).
 * Only one tls_server may exist at a time (GnuTLS's certificate callback has
 * no user pointer); the caller frees it with tls_server_free(). */
RS_MUST_CHECK enum rs_code tls_server_new(struct tls_server **out, const struct rs_tls_config *cfg,
                                          struct rs_err *err);

/* Read the files again; on success new handshakes use them at once and
 * connections already open keep theirs. On failure nothing changes (the old
 * credentials stay) and err says which file and why. */
RS_MUST_CHECK enum rs_code tls_server_reload(struct tls_server *t, struct rs_err *err);

/* The current generation's certificate info. */
void tls_server_info(struct tls_info *out, struct tls_server *t);

/* Fill items[0..n) with the MHD options of a TLS daemon (certificate
 * callback, cipher priorities), the last one MHD_OPTION_END, for
 * MHD_OPTION_ARRAY. n must be at least TLS_MHD_OPTIONS. */
#define TLS_MHD_OPTIONS 3
void tls_server_mhd_options(struct MHD_OptionItem *items, size_t n, struct tls_server *t);

/* MHD_CONNECTION_NOTIFY_STARTED: pin the current generation for this
 * connection in *socket_context, then check its first bytes with
 * tls_sniff_mixup(fd, true, peer) (peer: "ADDR:PORT"). */
void tls_server_conn_started(struct tls_server *t, void **socket_context, int fd, const char *peer);

/* A request arrived on the connection (MHD's socket_context). */
void tls_server_conn_served(void *socket_context);

/* MHD_CONNECTION_NOTIFY_CLOSED: log a connection that closed before any
 * request (a failed handshake; peer is "ADDR:PORT"), then unpin. gnutls_session is MHD's session (may be
 * NULL); socket_context what tls_server_conn_started set. */
void tls_server_conn_closed(struct tls_server *t, void *socket_context, void *gnutls_session, const char *peer);

/* Free the server and its generation; connections must all be closed. */
void tls_server_free(struct tls_server *t);

/* A newly accepted connection on fd: when its first bytes are plain HTTP on
 * a TLS listener (tls_listener) or a TLS handshake on a plain one, answer a
 * short 400 saying which protocol the port speaks, shut the socket down (MHD
 * then closes it at its first read), log a warning naming peer, and return
 * true. Otherwise (or when no byte has arrived yet) touch nothing and return
 * false. Never blocks. */
bool tls_sniff_mixup(int fd, bool tls_listener, const char *peer);

#endif
