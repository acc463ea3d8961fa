/* tls: reads and checks the listener's PEM files with GnuTLS, keeps the
 * loaded credentials as reference-counted generations and hands the current
 * one to GnuTLS from the certificate callback that libmicrohttpd installs on
 * its credentials (MHD_OPTION_HTTPS_CERT_CALLBACK). Mutual TLS is done here
 * too: the callback asks for a client certificate and installs a verify
 * function that checks it against the generation's client CA list during the
 * handshake, so a missing or untrusted certificate fails the handshake.
 *
 * It links GnuTLS directly because MHD's own key/cert options load once, at
 * start: only a callback returning our own gnutls_pcert_st/gnutls_privkey_t
 * can change them while the daemon runs. No file is written; nothing here
 * talks to upstreams. */
#include "tls.h"

#include "fsutil.h"
#include "log.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* GnuTLS priorities of the listener: its defaults without TLS 1.0/1.1. */
#define TLS_PRIORITIES "NORMAL:-VERS-TLS1.0:-VERS-TLS1.1:-VERS-DTLS-ALL"
/* A PEM bundle larger than this is not a certificate file. */
#define TLS_FILE_MAX_BYTES (1024 * 1024)
/* Certificates in cert_file (server certificate plus intermediates). */
#define TLS_CHAIN_MAX 16
/* Certificates a client may present (its own plus intermediates). */
#define TLS_PEER_CHAIN_MAX 8
/* The first bytes of a connection looked at for a protocol mix-up. */
#define SNIFF_BYTES 8
/* Bytes of a mistaken request read away before answering, so that closing
 * the socket does not reset the connection before the client reads us. */
#define SNIFF_DRAIN_MAX (64 * 1024)

struct tls_gen {
	atomic_uint refs;
	struct tls_gen *next; /* the generation that replaced this one (a reference), or NULL */
	gnutls_pcert_st pcerts[TLS_CHAIN_MAX];
	unsigned pcert_count;
	gnutls_privkey_t key;
	gnutls_x509_trust_list_t client_ca; /* NULL: no client certificates */
	struct tls_info info;
};

struct tls_server {
	const struct rs_tls_config *cfg; /* borrowed */
	pthread_mutex_t lock;            /* guards current */
	struct tls_gen *current;         /* one reference held by the server */
};

/* Per connection (MHD's socket_context). */
struct tls_conn {
	struct tls_gen *pinned; /* a reference */
	bool logged;            /* its failure was already logged */
	bool served;            /* a request arrived: the handshake completed */
};

/* GnuTLS's certificate callback gets no user pointer: the one server. */
static struct tls_server *active;

static void gen_free(struct tls_gen *g)
{
	for (unsigned i = 0; i < g->pcert_count; i++)
		gnutls_pcert_deinit(&g->pcerts[i]);
	if (g->key)
		gnutls_privkey_deinit(g->key);
	if (g->client_ca)
		gnutls_x509_trust_list_deinit(g->client_ca, 1);
	free(g);
}

/* Drop one reference; a freed generation drops its reference to the next,
 * iteratively so that a long chain does not recurse. */
static void gen_release(struct tls_gen *g)
{
	while (g && atomic_fetch_sub(&g->refs, 1) == 1) {
		struct tls_gen *next = g->next;
		gen_free(g);
		g = next;
	}
}

/* ---------------------------------------------------------------- loading */

struct pem_file {
	const char *key;  /* "tls.cert_file" */
	const char *path; /* borrowed */
	char *text;       /* owned, NUL-terminated */
	gnutls_datum_t datum;
};

static enum rs_code pem_read(struct pem_file *f, const char *key, const char *path, struct rs_err *err)
{
	f->key = key;
	f->path = path;
	size_t len = 0;
	enum rs_code rc = fsutil_read_small(&f->text, &len, path, TLS_FILE_MAX_BYTES, err);
	if (rc) {
		rs_err_prefix(err, "%s: ", key);
		return rc == RS_NOMEM ? rc : RS_CONFIG;
	}
	f->datum.data = (unsigned char *)f->text;
	f->datum.size = (unsigned)len;
	return RS_OK;
}

static void pem_dispose(struct pem_file *f)
{
	free(f->text);
	f->text = NULL;
}

static enum rs_code pem_fail(const struct pem_file *f, struct rs_err *err, const char *what, const char *detail)
{
	return rs_err_set(err, RS_CONFIG, "%s \"%s\": %s%s%s", f->key, f->path, what, detail ? ": " : "",
	                  detail ? detail : "");
}

/* Why a file holds no block of the wanted kind: it is not PEM at all, or
 * names the first block it has instead. */
static enum rs_code pem_missing(const struct pem_file *f, struct rs_err *err, const char *wanted)
{
	const char *begin = strstr(f->text, "-----BEGIN ");
	if (!begin)
		return pem_fail(f, err, wanted, "the file is not PEM (no \"-----BEGIN\" line; DER is not supported)");
	char found[64];
	size_t n = strcspn(begin + 11, "-\n");
	snprintf(found, sizeof(found), "found only \"%.*s\"", (int)(n < 40 ? n : 40), begin + 11);
	return pem_fail(f, err, wanted, found);
}

static void info_fill(struct tls_info *info, gnutls_x509_crt_t crt, unsigned chain_len)
{
	memset(info, 0, sizeof(*info));
	info->chain_len = chain_len;
	info->not_before = gnutls_x509_crt_get_activation_time(crt);
	info->not_after = gnutls_x509_crt_get_expiration_time(crt);
	gnutls_datum_t dn = {NULL, 0};
	if (gnutls_x509_crt_get_dn3(crt, &dn, 0) == 0) {
		snprintf(info->subject, sizeof(info->subject), "%.*s", (int)dn.size, (const char *)dn.data);
		gnutls_free(dn.data);
	}
	unsigned char serial[40];
	size_t sl = sizeof(serial);
	if (gnutls_x509_crt_get_serial(crt, serial, &sl) == 0) {
		size_t o = 0;
		for (size_t i = 0; i < sl && o + 3 <= sizeof(info->serial); i++)
			o += (size_t)snprintf(info->serial + o, sizeof(info->serial) - o, "%02x", serial[i]);
	}
}

/* The certificate chain of cert into g->pcerts, its info into g->info; the
 * first certificate's key id (SHA-256) into id[*id_len]. */
static enum rs_code load_chain(struct tls_gen *g, unsigned char *id, size_t *id_len, const struct pem_file *cert,
                               struct rs_err *err)
{
	if (!strstr(cert->text, "-----BEGIN CERTIFICATE-----") &&
	    !strstr(cert->text, "-----BEGIN X509 CERTIFICATE-----"))
		return pem_missing(cert, err, "no certificate in the file");
	gnutls_x509_crt_t *crts = NULL;
	unsigned n = 0;
	int gr = gnutls_x509_crt_list_import2(&crts, &n, &cert->datum, GNUTLS_X509_FMT_PEM, 0);
	if (gr < 0)
		return pem_fail(cert, err, "not a valid PEM certificate", gnutls_strerror(gr));
	enum rs_code rc = RS_OK;
	if (n == 0) {
		rc = pem_missing(cert, err, "no certificate in the file");
	} else if (n > TLS_CHAIN_MAX) {
		char d[64];
		snprintf(d, sizeof(d), "%u certificates, limit is %d", n, TLS_CHAIN_MAX);
		rc = pem_fail(cert, err, "chain too long", d);
	} else if ((gr = gnutls_x509_crt_get_key_id(crts[0], GNUTLS_KEYID_USE_SHA256, id, id_len)) < 0) {
		rc = pem_fail(cert, err, "cannot read the certificate's public key", gnutls_strerror(gr));
	} else {
		info_fill(&g->info, crts[0], n);
		unsigned got = n;
		if ((gr = gnutls_pcert_import_x509_list(g->pcerts, crts, &got, 0)) < 0)
			rc = gr == GNUTLS_E_MEMORY_ERROR ? rs_err_set(err, RS_NOMEM, "%s: out of memory", cert->key)
			                                 : pem_fail(cert, err, "unusable certificate", gnutls_strerror(gr));
		else
			g->pcert_count = got;
	}
	for (unsigned i = 0; i < n; i++)
		gnutls_x509_crt_deinit(crts[i]);
	gnutls_free(crts);
	return rc;
}

/* The private key of key into g->key; it must have the key id cert_id. */
static enum rs_code load_key(struct tls_gen *g, const unsigned char *cert_id, size_t cert_id_len,
                             const struct pem_file *key, const struct pem_file *cert, struct rs_err *err)
{
	if (strstr(key->text, "-----BEGIN ENCRYPTED PRIVATE KEY-----") || strstr(key->text, "Proc-Type: 4,ENCRYPTED"))
		return pem_fail(key, err, "encrypted private keys are not supported", NULL);
	if (!strstr(key->text, "PRIVATE KEY-----"))
		return pem_missing(key, err, "no private key in the file");
	gnutls_x509_privkey_t xkey = NULL;
	int gr = gnutls_x509_privkey_init(&xkey);
	if (gr < 0)
		return rs_err_set(err, RS_NOMEM, "%s: out of memory", key->key);
	if ((gr = gnutls_x509_privkey_import2(xkey, &key->datum, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN)) < 0) {
		gnutls_x509_privkey_deinit(xkey);
		return pem_fail(key, err, "not a valid PEM private key", gnutls_strerror(gr));
	}
	unsigned char id[64];
	size_t id_len = sizeof(id);
	if ((gr = gnutls_x509_privkey_get_key_id(xkey, GNUTLS_KEYID_USE_SHA256, id, &id_len)) < 0) {
		gnutls_x509_privkey_deinit(xkey);
		return pem_fail(key, err, "cannot read the key", gnutls_strerror(gr));
	}
	if (id_len != cert_id_len || memcmp(id, cert_id, id_len) != 0) {
		gnutls_x509_privkey_deinit(xkey);
		return rs_err_set(err, RS_CONFIG, "%s \"%s\" does not belong to the certificate in %s \"%s\"", key->key,
		                  key->path, cert->key, cert->path);
	}
	if ((gr = gnutls_privkey_init(&g->key)) < 0 ||
	    (gr = gnutls_privkey_import_x509(g->key, xkey, GNUTLS_PRIVKEY_IMPORT_AUTO_RELEASE)) < 0) {
		gnutls_x509_privkey_deinit(xkey);
		return pem_fail(key, err, "unusable private key", gnutls_strerror(gr));
	}
	return RS_OK;
}

static enum rs_code load_client_ca(struct tls_gen *g, const struct pem_file *ca, struct rs_err *err)
{
	if (!strstr(ca->text, "-----BEGIN CERTIFICATE-----"))
		return pem_missing(ca, err, "no CA certificate in the file");
	int gr = gnutls_x509_trust_list_init(&g->client_ca, 0);
	if (gr < 0)
		return rs_err_set(err, RS_NOMEM, "%s: out of memory", ca->key);
	gr = gnutls_x509_trust_list_add_trust_mem(g->client_ca, &ca->datum, NULL, GNUTLS_X509_FMT_PEM, 0, 0);
	if (gr < 0)
		return pem_fail(ca, err, "not a valid PEM CA file", gnutls_strerror(gr));
	if (gr == 0)
		return pem_missing(ca, err, "no CA certificate in the file");
	g->info.client_ca = true;
	return RS_OK;
}

static enum rs_code gen_load(struct tls_gen **out, const struct rs_tls_config *cfg, struct rs_err *err)
{
	if (!MHD_is_feature_supported(MHD_FEATURE_TLS) || !MHD_is_feature_supported(MHD_FEATURE_HTTPS_CERT_CALLBACK))
		return rs_err_set(err, RS_UNSUPPORTED,
		                  "tls: this libmicrohttpd was built without TLS or certificate callbacks (MHD_FEATURE_TLS)");
	struct pem_file cert = {0}, key = {0}, ca = {0};
	unsigned char id[64];
	size_t id_len = sizeof(id);
	enum rs_code rc;
	struct tls_gen *g = calloc(1, sizeof(*g));
	if (!g)
		return rs_err_set(err, RS_NOMEM, "tls: out of memory");
	atomic_init(&g->refs, 1);
	if ((rc = pem_read(&cert, "tls.cert_file", cfg->cert_file, err)) ||
	    (rc = pem_read(&key, "tls.key_file", cfg->key_file, err)) ||
	    (rc = load_chain(g, id, &id_len, &cert, err)) || (rc = load_key(g, id, id_len, &key, &cert, err)))
		goto out;
	if (cfg->client_ca_file &&
	    ((rc = pem_read(&ca, "tls.client_ca_file", cfg->client_ca_file, err)) || (rc = load_client_ca(g, &ca, err))))
		goto out;
	*out = g;
	g = NULL;
out:
	pem_dispose(&ca);
	pem_dispose(&key);
	pem_dispose(&cert);
	if (g)
		gen_free(g);
	return rc;
}

enum rs_code tls_check_files(struct tls_info *out, const struct rs_tls_config *cfg, struct rs_err *err)
{
	struct tls_gen *g = NULL;
	enum rs_code rc = gen_load(&g, cfg, err);
	if (rc)
		return rc;
	*out = g->info;
	gen_release(g);
	return RS_OK;
}

static void format_time(char *out, size_t size, time_t t)
{
	struct tm tm;
	if (!gmtime_r(&t, &tm) || strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, size, "%lld", (long long)t);
}

void tls_info_describe(char *out, size_t size, const struct tls_info *info)
{
	char until[32];
	format_time(until, sizeof(until), info->not_after);
	snprintf(out, size, "certificate serial %s (%s), %u in chain, valid until %s%s", info->serial, info->subject,
	         info->chain_len, until, info->client_ca ? ", client certificates required" : "");
}

bool tls_info_warning(char *out, size_t size, const struct tls_info *info, time_t now)
{
	char when[32];
	if (info->not_after != (time_t)-1 && info->not_after < now) {
		format_time(when, sizeof(when), info->not_after);
		snprintf(out, size, "the certificate (serial %s, %s) expired on %s", info->serial, info->subject, when);
		return true;
	}
	if (info->not_before != (time_t)-1 && info->not_before > now) {
		format_time(when, sizeof(when), info->not_before);
		snprintf(out, size, "the certificate (serial %s, %s) is not valid before %s", info->serial, info->subject,
		         when);
		return true;
	}
	return false;
}

/* ---------------------------------------------------------------- handshakes */

static struct tls_gen *current_gen(void)
{
	struct tls_server *t = active;
	pthread_mutex_lock(&t->lock);
	struct tls_gen *g = t->current;
	pthread_mutex_unlock(&t->lock);
	return g;
}

static void session_peer(char *out, size_t size, gnutls_session_t s)
{
	int fd = gnutls_transport_get_int(s);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (fd >= 0 && getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET) {
			const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
			port = ntohs(a->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
			port = ntohs(a->sin6_port);
		}
	}
	snprintf(out, size, ss.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
}

/* Called by GnuTLS when the client's certificate arrived (mutual TLS). A
 * non-zero return fails the handshake with a bad_certificate alert. The
 * generation is the current one: the connection pins an older or equal one,
 * which keeps it alive. */
static int verify_client(gnutls_session_t s)
{
	struct tls_gen *g = current_gen();
	char peer[64];
	unsigned n = 0;
	const gnutls_datum_t *raw = gnutls_certificate_get_peers(s, &n);
	gnutls_x509_crt_t crts[TLS_PEER_CHAIN_MAX];
	unsigned imported = 0;
	const char *why = NULL;
	char text[160];
	if (!raw || n == 0)
		why = "no client certificate";
	for (; !why && imported < n && imported < TLS_PEER_CHAIN_MAX; imported++) {
		if (gnutls_x509_crt_init(&crts[imported]) < 0) {
			why = "out of memory";
			break;
		}
		if (gnutls_x509_crt_import(crts[imported], &raw[imported], GNUTLS_X509_FMT_DER) < 0) {
			imported++;
			why = "the client certificate is not valid DER";
		}
	}
	if (!why) {
		unsigned status = 0;
		gnutls_typed_vdata_st purpose = {GNUTLS_DT_KEY_PURPOSE_OID, (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT, 0};
		int gr = gnutls_x509_trust_list_verify_crt2(g->client_ca, crts, imported, &purpose, 1, 0, &status, NULL);
		gnutls_datum_t msg = {NULL, 0};
		if (gr < 0) {
			snprintf(text, sizeof(text), "%s", gnutls_strerror(gr));
			why = text;
		} else if (status) {
			if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &msg, 0) == 0) {
				int len = (int)msg.size;
				while (len > 0 && (msg.data[len - 1] == ' ' || msg.data[len - 1] == '\0'))
					len--;
				snprintf(text, sizeof(text), "%.*s", len, (const char *)msg.data);
				gnutls_free(msg.data);
			} else {
				snprintf(text, sizeof(text), "verification status 0x%x", status);
			}
			why = text;
		}
	}
	for (unsigned i = 0; i < imported; i++)
		gnutls_x509_crt_deinit(crts[i]);
	if (!why)
		return 0;
	session_peer(peer, sizeof(peer), s);
	log_event(LOG_WARN, "tls: client certificate from %s refused: %s", peer, why);
	return -1;
}

/* gnutls_certificate_retrieve_function2: the current generation's chain and
 * key (GnuTLS does not free them). */
static int retrieve_cert(gnutls_session_t s, const gnutls_datum_t *req_ca_dn, int nreqs,
                         const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length, gnutls_pcert_st **pcert,
                         unsigned int *pcert_length, gnutls_privkey_t *pkey)
{
	(void)req_ca_dn;
	(void)nreqs;
	(void)pk_algos;
	(void)pk_algos_length;
	struct tls_gen *g = current_gen();
	if (g->client_ca) {
		/* Still before the server's CertificateRequest: require one, and
		 * check it when it arrives. */
		gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
		gnutls_session_set_verify_function(s, verify_client);
	}
	*pcert = g->pcerts;
	*pcert_length = g->pcert_count;
	*pkey = g->key;
	return 0;
}

/* ---------------------------------------------------------------- server */

enum rs_code tls_server_new(struct tls_server **out, const struct rs_tls_config *cfg, struct rs_err *err)
{
	assert(cfg->enabled);
	assert(!active);
	struct tls_server *t = calloc(1, sizeof(*t));
	if (!t)
		return rs_err_set(err, RS_NOMEM, "tls: out of memory");
	enum rs_code rc = gen_load(&t->current, cfg, err);
	if (rc) {
		free(t);
		return rc;
	}
	t->cfg = cfg;
	pthread_mutex_init(&t->lock, NULL);
	active = t;
	*out = t;
	return RS_OK;
}

enum rs_code tls_server_reload(struct tls_server *t, struct rs_err *err)
{
	struct tls_gen *fresh = NULL;
	enum rs_code rc = gen_load(&fresh, t->cfg, err);
	if (rc)
		return rc;
	pthread_mutex_lock(&t->lock);
	struct tls_gen *old = t->current;
	atomic_fetch_add(&fresh->refs, 1); /* the old generation's link */
	old->next = fresh;
	t->current = fresh;
	pthread_mutex_unlock(&t->lock);
	gen_release(old);
	return RS_OK;
}

void tls_server_info(struct tls_info *out, struct tls_server *t)
{
	pthread_mutex_lock(&t->lock);
	*out = t->current->info;
	pthread_mutex_unlock(&t->lock);
}

void tls_server_mhd_options(struct MHD_OptionItem *items, size_t n, struct tls_server *t)
{
	(void)t;
	assert(n >= TLS_MHD_OPTIONS);
	(void)n;
	items[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_CERT_CALLBACK, 0, (void *)retrieve_cert};
	items[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)TLS_PRIORITIES};
	items[2] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
}

void tls_server_conn_started(struct tls_server *t, void **socket_context, int fd, const char *peer)
{
	struct tls_conn *c = calloc(1, sizeof(*c));
	if (c) {
		pthread_mutex_lock(&t->lock);
		c->pinned = t->current;
		atomic_fetch_add(&c->pinned->refs, 1);
		pthread_mutex_unlock(&t->lock);
	} else {
		/* Without a pin a reload during this handshake could free what it
		 * uses: refuse the connection instead. */
		log_event(LOG_ERROR, "tls: out of memory accepting %s; closing it", peer);
		(void)shutdown(fd, SHUT_RDWR); /* MHD closes it at its first read */
	}
	*socket_context = c;
	if (tls_sniff_mixup(fd, true, peer) && c)
		c->logged = true;
}

void tls_server_conn_closed(struct tls_server *t, void *socket_context, void *gnutls_session, const char *peer)
{
	(void)t;
	struct tls_conn *c = socket_context;
	if (!c)
		return;
	gnutls_session_t s = gnutls_session;
	if (s && !c->logged && !c->served) {
		/* No request came: the handshake failed (a client that does not
		 * trust us, a refused client certificate, another protocol) or
		 * the client left. Only plain fields of the session are read: it
		 * may be half set up. */
		const char *last = gnutls_handshake_description_get_name(gnutls_handshake_get_last_in(s));
		gnutls_alert_description_t alert = gnutls_alert_get(s);
		const char *an = alert != GNUTLS_A_CLOSE_NOTIFY ? gnutls_alert_get_name(alert) : NULL;
		bool known = last && strncmp(last, "Unknown", 7) != 0;
		log_event(LOG_WARN, "tls: connection from %s closed before any request (TLS handshake failed or the "
		                    "client left%s%s%s%s%s)",
		          peer, known ? "; last handshake message from the client: " : "", known ? last : "",
		          an ? "; its alert: " : "", an ? an : "",
		          c->pinned->client_ca ? "; client certificates are required" : "");
	}
	gen_release(c->pinned);
	free(c);
}

void tls_server_conn_served(void *socket_context)
{
	struct tls_conn *c = socket_context;
	if (c)
		c->served = true;
}

void tls_server_free(struct tls_server *t)
{
	if (!t)
		return;
	if (active == t)
		active = NULL;
	gen_release(t->current);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* ---------------------------------------------------------------- mix-ups */

static bool looks_like_http(const unsigned char *b, size_t n)
{
	/* A method token of upper-case letters, then a space: "GET /v2/". */
	size_t i = 0;
	while (i < n && b[i] >= 'A' && b[i] <= 'Z')
		i++;
	return i >= 3 && (i == n || b[i] == ' ');
}

static bool looks_like_tls(const unsigned char *b, size_t n)
{
	/* A handshake record (22) of version 3.x: SSL 3.0 to TLS 1.3. */
	return n >= 2 && b[0] == 0x16 && b[1] == 0x03;
}

bool tls_sniff_mixup(int fd, bool tls_listener, const char *peer)
{
	unsigned char b[SNIFF_BYTES];
	ssize_t n = recv(fd, b, sizeof(b), MSG_PEEK | MSG_DONTWAIT);
	if (n <= 0)
		return false;
	bool http = looks_like_http(b, (size_t)n);
	bool tls = looks_like_tls(b, (size_t)n);
	if (tls_listener ? !http : !tls)
		return false;
	char drain[4096];
	size_t drained = 0;
	ssize_t got;
	while (drained < SNIFF_DRAIN_MAX && (got = recv(fd, drain, sizeof(drain), MSG_DONTWAIT)) > 0)
		drained += (size_t)got;
	const char *body = tls_listener ? "this port speaks TLS, use https://\n"
	                                : "this port speaks plain HTTP, not TLS: use http://\n";
	char reply[256];
	int len = snprintf(reply, sizeof(reply),
	                   "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
	                   "Connection: close\r\n\r\n%s",
	                   strlen(body), body);
	/* A fresh socket's send buffer takes these few bytes at once. */
	ssize_t sent = send(fd, reply, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)shutdown(fd, SHUT_RDWR); /* nothing to do if it fails: MHD closes the socket anyway */
	if (tls_listener)
		log_event(LOG_WARN, "tls: plain HTTP from %s on the TLS listener; answered 400 (use https://)%s", peer,
		          sent == len ? "" : " (the answer could not be sent)");
	else
		log_event(LOG_WARN, "tls: TLS handshake from %s on the plain-HTTP listener; answered 400 (use http://)%s",
		          peer, sent == len ? "" : " (the answer could not be sent)");
	return true;
}
