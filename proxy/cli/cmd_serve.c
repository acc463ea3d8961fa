/* cmd_serve: `regslim serve`: load the configuration, open the registry
 * (store, upstream clients), start the HTTP server, and wait for SIGTERM or
 * SIGINT; then drain requests for shutdown_grace_s and exit 0 (abandoning,
 * after a short margin, downloads and optimizations still running). SIGHUP reloads
 * the TLS certificate files (a bad new file keeps the old certificate).
 * Signals are blocked in every thread and taken with sigtimedwait here, which
 * also drives periodic cache eviction. */
#include "cli.h"

#include "config.h"
#include "http.h"
#include "log.h"
#include "registry.h"
#include "tls.h"
#include "upstream.h"

#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAINTAIN_INTERVAL_S 60
/* How long the shutdown waits, after the grace, for cancelled optimizations. */
#define SHUTDOWN_OPT_MARGIN_MS 1000

static void usage(FILE *f)
{
	fprintf(f, "usage: regslim serve [--config FILE] [--listen ADDR:PORT] [--upstream URL] [--data-dir DIR] "
	           "[--no-optimize]\n"
	           "                     [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]\n"
	           "Without --config: a Docker Hub mirror on 127.0.0.1:5000 with data in ./regslim-data.\n");
}

/* Log the listener's certificate (serial, subject, expiry) and warn when it
 * is expired or not yet valid. Nothing without TLS. */
static void log_certificate(struct http_server *srv, const char *what)
{
	struct tls_info info;
	if (!http_tls_info(&info, srv))
		return;
	char text[RS_ERR_MSG_MAX];
	tls_info_describe(text, sizeof(text), &info);
	log_event(LOG_INFO, "tls: %s %s", what, text);
	if (tls_info_warning(text, sizeof(text), &info, time(NULL)))
		log_event(LOG_WARN, "tls: %s", text);
}

/* SIGHUP: read the certificate files again; keep the old ones on error. */
static void reload(struct http_server *srv)
{
	struct tls_info info;
	if (!http_tls_info(&info, srv)) {
		log_event(LOG_INFO, "SIGHUP: no tls section, nothing to reload");
		return;
	}
	struct rs_err err = {0};
	if (http_reload_tls(srv, &err) != RS_OK) {
		log_event(LOG_ERROR, "SIGHUP: certificate reload failed, keeping serial %s: %s", info.serial, err.msg);
		return;
	}
	log_certificate(srv, "reloaded");
}

int cmd_serve(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},   {"listen", required_argument, NULL, 'l'},
		{"upstream", required_argument, NULL, 'u'}, {"data-dir", required_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},           {"no-optimize", no_argument, NULL, 'O'},
		{"tls-cert", required_argument, NULL, 'C'}, {"tls-key", required_argument, NULL, 'K'},
		{"tls-client-ca", required_argument, NULL, 'A'}, {NULL, 0, NULL, 0},
	};
	const char *config = NULL, *listen = NULL, *upstream = NULL, *data_dir = NULL;
	const char *tls_cert = NULL, *tls_key = NULL, *tls_ca = NULL;
	bool no_optimize = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "c:l:u:d:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c': config = optarg; break;
		case 'l': listen = optarg; break;
		case 'u': upstream = optarg; break;
		case 'd': data_dir = optarg; break;
		case 'h': usage(stdout); return 0;
		case 'O': no_optimize = true; break;
		case 'C': tls_cert = optarg; break;
		case 'K': tls_key = optarg; break;
		case 'A': tls_ca = optarg; break;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "regslim serve: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}

	struct rs_config cfg = {0};
	struct rs_err err = {0};
	struct registry *reg = NULL;
	struct http_server *srv = NULL;
	int status = 1;
	enum rs_code rc = config ? config_load(&cfg, config, &err) : config_init_defaults(&cfg, &err);
	if (rc == RS_OK)
		rc = config_override(&cfg, listen, upstream, data_dir, &err);
	if (rc == RS_OK)
		rc = config_override_tls(&cfg, tls_cert, tls_key, tls_ca, &err);
	if (rc == RS_OK && no_optimize)
		cfg.optimize.enabled = false; /* --no-optimize: a plain mirror */
	if (rc) {
		fprintf(stderr, "regslim: %s\n", err.msg);
		goto out;
	}
	log_set_level(cfg.log_level);
	log_set_requests(cfg.log_requests);

	/* Block the signals before any thread starts so that all inherit it. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	bool started = upstream_global_init(&err) == RS_OK && registry_new(&reg, &cfg, &err) == RS_OK;
	if (started) {
		struct http_handler handler = registry_http_handler(reg); /* the server calls the API through it */
		started = http_start(&srv, &cfg, &handler, &err) == RS_OK;
	}
	if (!started) {
		fprintf(stderr, "regslim: %s\n", err.msg);
		log_event(LOG_ERROR, "startup failed: %s", err.msg);
		goto out;
	}
	log_event(LOG_INFO, "regslim %s listening on %s%s, data in %s, default upstream %s (%s)", REGSLIM_VERSION,
	          cfg.listen, cfg.tls.enabled ? " (TLS)" : "", cfg.data_dir, cfg.upstreams[cfg.default_upstream].name,
	          cfg.upstreams[cfg.default_upstream].url);
	if (strcmp(cfg.store.driver, "s3") == 0)
		log_event(LOG_INFO, "store s3: bucket %s at %s (prefix '%s'); %s holds scratch files only",
		          cfg.store.s3.bucket, cfg.store.s3.endpoint, cfg.store.s3.prefix ? cfg.store.s3.prefix : "",
		          cfg.data_dir);
	log_certificate(srv, "loaded");
	registry_maintain(reg);
	for (;;) {
		struct timespec ts = {MAINTAIN_INTERVAL_S, 0};
		int sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGTERM || sig == SIGINT) {
			log_event(LOG_INFO, "signal %d: shutting down (grace %us)", sig, cfg.shutdown_grace_s);
			registry_shutdown(reg);
			break;
		}
		if (sig == SIGHUP)
			reload(srv);
		if (sig == SIGUSR1) {
			log_event(LOG_INFO, "signal %d: maintenance pass now (eviction, upload sweep, push gc)", sig);
			registry_request_gc(reg);
		}
		if (sig < 0 || sig == SIGUSR1)
			registry_maintain(reg);
	}
	http_stop(srv, cfg.shutdown_grace_s);
	srv = NULL;
	/* Optimizations were cancelled at the signal; one in a step that does
	 * not look at the cancel (a long write into the store) gets a short
	 * margin, then it is abandoned like a download (issue 12 item 6). */
	bool opt_idle = registry_quiesce(reg, SHUTDOWN_OPT_MARGIN_MS);
	if (!opt_idle || registry_inflight(reg) > 0) {
		/* Downloads still running belong to clients that are gone; their
		 * temp files, like an abandoned optimization's work directory, are
		 * removed at the next start. Nothing of them is half-committed:
		 * every store object, report and result is renamed into place
		 * whole, and an optimization without its result is redone. Their
		 * threads still run, so exit without library teardown (atexit
		 * handlers of the TLS and crypto libraries would pull the ground
		 * from under them); logs are written line by line, nothing is
		 * buffered. */
		log_event(LOG_WARN, "shutdown: %u upstream downloads%s abandoned", registry_inflight(reg),
		          opt_idle ? "" : " and the running optimizations");
		log_event(LOG_INFO, "stopped");
		_exit(0);
	}
	registry_free(reg);
	reg = NULL;
	log_event(LOG_INFO, "stopped");
	status = 0;
out:
	http_stop(srv, 0);
	registry_free(reg);
	upstream_global_cleanup();
	config_dispose(&cfg);
	return status;
}
