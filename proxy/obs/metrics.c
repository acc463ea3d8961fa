/* metrics: counters for /metrics. The route and method strings given to
 * metrics_request are our own constants and the status a number, so the
 * label set is bounded; the tables cap their rows anyway and count overflow
 * into a catch-all row. */
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REQ_ROWS 256
#define UP_ROWS 64

struct req_row {
	const char *route;
	char method[12];
	unsigned status;
	uint64_t count;
};

struct up_row {
	const char *name;
	uint64_t counts[METRICS_UP_COUNTER_COUNT];
};

static _Atomic uint64_t counters[METRICS_COUNTER_COUNT];
static _Atomic uint64_t cache_hits[METRICS_KIND_COUNT];
static _Atomic uint64_t cache_misses[METRICS_KIND_COUNT];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct req_row req_rows[REQ_ROWS];
static size_t req_count;
static uint64_t req_overflow;
static struct up_row up_rows[UP_ROWS];
static size_t up_count;
static unsigned (*inflight_fn)(void *);

/* Optimized pull path: small fixed tables keyed by static label strings. */
#define OPT_ROWS 32
struct label_row {
	const char *a, *b;
	uint64_t count;
};
static _Atomic uint64_t opt_ok, opt_failed, opt_usec_sum;
static struct label_row fallback_rows[OPT_ROWS], variant_rows[OPT_ROWS], saved_rows[OPT_ROWS];
/* push gate (gate.c): pushes by result, findings by (rule, action) */
static struct label_row gate_push_rows[OPT_ROWS], gate_finding_rows[OPT_ROWS], gate_scan_rows[OPT_ROWS];
static size_t gate_push_count, gate_finding_count, gate_scan_count;
static struct label_row gate_stage_rows[OPT_ROWS];
static size_t gate_stage_count;
/* signatures (sign.c): tag pulls whose original did not verify, by action */
static struct label_row unverified_rows[OPT_ROWS];
static size_t unverified_count;
static size_t fallback_count, variant_count, saved_count;
static void *inflight_arg;

void metrics_add(enum metrics_counter c, uint64_t n)
{
	atomic_fetch_add_explicit(&counters[c], n, memory_order_relaxed);
}

uint64_t metrics_get(enum metrics_counter c)
{
	return atomic_load(&counters[c]);
}

void metrics_cache(enum metrics_kind kind, int hit)
{
	atomic_fetch_add_explicit(hit ? &cache_hits[kind] : &cache_misses[kind], 1, memory_order_relaxed);
}

void metrics_request(const char *route, const char *method, unsigned status)
{
	pthread_mutex_lock(&lock);
	size_t i;
	for (i = 0; i < req_count; i++)
		if (req_rows[i].route == route && req_rows[i].status == status &&
		    strcmp(req_rows[i].method, method) == 0)
			break;
	if (i == req_count) {
		if (req_count == REQ_ROWS) {
			req_overflow++;
			pthread_mutex_unlock(&lock);
			return;
		}
		req_rows[i].route = route;
		snprintf(req_rows[i].method, sizeof(req_rows[i].method), "%s", method);
		req_rows[i].status = status;
		req_count++;
	}
	req_rows[i].count++;
	pthread_mutex_unlock(&lock);
}

void metrics_upstream(const char *upstream, enum metrics_upstream_counter c)
{
	pthread_mutex_lock(&lock);
	size_t i;
	for (i = 0; i < up_count; i++)
		if (strcmp(up_rows[i].name, upstream) == 0)
			break;
	if (i == up_count && up_count < UP_ROWS) {
		up_rows[i].name = upstream;
		up_count++;
	}
	if (i < up_count)
		up_rows[i].counts[c]++;
	pthread_mutex_unlock(&lock);
}

void metrics_optimization(int ok, double seconds)
{
	atomic_fetch_add_explicit(ok ? &opt_ok : &opt_failed, 1, memory_order_relaxed);
	if (seconds > 0)
		atomic_fetch_add_explicit(&opt_usec_sum, (uint64_t)(seconds * 1e6), memory_order_relaxed);
}

static void label_add(struct label_row *rows, size_t *count, const char *a, const char *b, uint64_t n)
{
	pthread_mutex_lock(&lock);
	size_t i;
	for (i = 0; i < *count; i++)
		if (strcmp(rows[i].a, a) == 0 && strcmp(rows[i].b, b) == 0)
			break;
	if (i == *count && *count < OPT_ROWS) {
		rows[i].a = a;
		rows[i].b = b;
		(*count)++;
	}
	if (i < *count)
		rows[i].count += n;
	pthread_mutex_unlock(&lock);
}

void metrics_opt_fallback(const char *reason)
{
	label_add(fallback_rows, &fallback_count, reason, "", 1);
}

void metrics_signature_unverified(const char *action)
{
	label_add(unverified_rows, &unverified_count, action, "", 1);
}

void metrics_variant_served(const char *family, const char *variant)
{
	label_add(variant_rows, &variant_count, family, variant, 1);
}

void metrics_bytes_saved(const char *kind, uint64_t n)
{
	label_add(saved_rows, &saved_count, kind, "", n);
}

void metrics_gate_push(const char *result)
{
	label_add(gate_push_rows, &gate_push_count, result, "", 1);
}

void metrics_gate_finding(const char *rule, const char *action)
{
	label_add(gate_finding_rows, &gate_finding_count, rule, action, 1);
}

void metrics_gate_layer_scan(const char *when)
{
	label_add(gate_scan_rows, &gate_scan_count, when, "", 1);
}

void metrics_gate_staged_upload(const char *result)
{
	label_add(gate_stage_rows, &gate_stage_count, result, "", 1);
}

static _Atomic uint64_t gate_streamed_bytes;

void metrics_gate_layer_scan_streamed(uint64_t bytes)
{
	atomic_fetch_add(&gate_streamed_bytes, bytes);
}

static _Atomic uint64_t gate_spilled_bytes;

void metrics_gate_layer_scan_spilled(uint64_t bytes)
{
	atomic_fetch_add(&gate_spilled_bytes, bytes);
}

static _Atomic int data_dir_writable = 1;

void metrics_set_data_dir_writable(int writable)
{
	atomic_store(&data_dir_writable, writable ? 1 : 0);
}

/* Cluster coordination (proxy/cluster/): -1 without a cluster section (not rendered). */
static _Atomic int redis_up = -1;
static _Atomic uint64_t cluster_locks[3]; /* taken in Redis, taken per process, found held */

void metrics_set_redis_up(int up)
{
	atomic_store(&redis_up, up < 0 ? -1 : up ? 1 : 0);
}

void metrics_cluster_lock(enum metrics_lock_result r)
{
	if ((unsigned)r < 3)
		atomic_fetch_add(&cluster_locks[r], 1);
}

/* The pull path across replicas (store/source.c, api/blobs.c). */
static _Atomic uint64_t cluster_pull[METRICS_CL_PULL_COUNT];

void metrics_cluster_pull(enum metrics_cluster_pull c, uint64_t n)
{
	if ((unsigned)c < METRICS_CL_PULL_COUNT)
		atomic_fetch_add(&cluster_pull[c], n);
}

void metrics_set_inflight_source(unsigned (*fn)(void *), void *arg)
{
	pthread_mutex_lock(&lock);
	inflight_fn = fn;
	inflight_arg = arg;
	pthread_mutex_unlock(&lock);
}

static uint64_t rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long pages = 0, rss = 0;
	if (!f)
		return 0;
	if (fscanf(f, "%lu %lu", &pages, &rss) != 2)
		rss = 0;
	fclose(f);
	return (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* A growing text buffer for the rendered page; the page is small and
 * bounded by the row caps above. */
struct page {
	char *buf;
	size_t len, cap;
	bool failed;
};

static void emit(struct page *p, const char *fmt, ...) RS_PRINTF(2, 3);
static void emit(struct page *p, const char *fmt, ...)
{
	if (p->failed)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(p->buf + p->len, p->cap - p->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			p->failed = true;
			return;
		}
		if ((size_t)n < p->cap - p->len) {
			p->len += (size_t)n;
			return;
		}
		size_t ncap = p->cap * 2 + (size_t)n;
		char *nb = realloc(p->buf, ncap);
		if (!nb) {
			p->failed = true;
			return;
		}
		p->buf = nb;
		p->cap = ncap;
	}
}

/* The plain counters: logins, dropped connections, the scrub and the push
 * store's garbage collection. */
static void render_counters(struct page *p)
{
	emit(p,
	     "# HELP regslim_login_failures_total Basic logins with a wrong user or password.\n"
	     "# TYPE regslim_login_failures_total counter\nregslim_login_failures_total %llu\n"
	     "# HELP regslim_login_throttled_total Logins refused unchecked during a failed-login back-off.\n"
	     "# TYPE regslim_login_throttled_total counter\nregslim_login_throttled_total %llu\n",
	     (unsigned long long)metrics_get(METRICS_LOGIN_FAILED),
	     (unsigned long long)metrics_get(METRICS_LOGIN_THROTTLED));
	emit(p,
	     "# HELP regslim_connections_dropped_total Connections ended by the limits against abusive clients: "
	     "request head too slow (header_timeout), request body too slow (slow_body), refused because the "
	     "address had max_connections_per_ip (per_ip_limit).\n"
	     "# TYPE regslim_connections_dropped_total counter\n"
	     "regslim_connections_dropped_total{reason=\"header_timeout\"} %llu\n"
	     "regslim_connections_dropped_total{reason=\"slow_body\"} %llu\n"
	     "regslim_connections_dropped_total{reason=\"per_ip_limit\"} %llu\n",
	     (unsigned long long)metrics_get(METRICS_DROP_HEADER_TIMEOUT),
	     (unsigned long long)metrics_get(METRICS_DROP_SLOW_BODY),
	     (unsigned long long)metrics_get(METRICS_DROP_PER_IP_LIMIT));
	emit(p,
	     "# HELP regslim_scrub_objects_total Stored objects rehashed by the background scrub.\n"
	     "# TYPE regslim_scrub_objects_total counter\nregslim_scrub_objects_total %llu\n"
	     "# HELP regslim_scrub_bytes_total Bytes rehashed by the background scrub.\n"
	     "# TYPE regslim_scrub_bytes_total counter\nregslim_scrub_bytes_total %llu\n"
	     "# HELP regslim_scrub_corrupt_total Stored objects that did not hash to their digest (removed).\n"
	     "# TYPE regslim_scrub_corrupt_total counter\nregslim_scrub_corrupt_total %llu\n"
	     "# HELP regslim_scrub_passes_total Full scrub passes over the store.\n"
	     "# TYPE regslim_scrub_passes_total counter\nregslim_scrub_passes_total %llu\n",
	     (unsigned long long)metrics_get(METRICS_SCRUB_OBJECTS), (unsigned long long)metrics_get(METRICS_SCRUB_BYTES),
	     (unsigned long long)metrics_get(METRICS_SCRUB_CORRUPT),
	     (unsigned long long)metrics_get(METRICS_SCRUB_PASSES));
	emit(p,
	     "# HELP regslim_gc_sweeps_total Garbage collection sweeps of the pushed images.\n"
	     "# TYPE regslim_gc_sweeps_total counter\nregslim_gc_sweeps_total %llu\n"
	     "# HELP regslim_gc_failures_total Sweeps that stopped early (the links could not be read in full).\n"
	     "# TYPE regslim_gc_failures_total counter\nregslim_gc_failures_total %llu\n"
	     "# HELP regslim_gc_objects_removed_total Pushed objects removed as garbage, by kind.\n"
	     "# TYPE regslim_gc_objects_removed_total counter\n"
	     "regslim_gc_objects_removed_total{kind=\"blob\"} %llu\n"
	     "regslim_gc_objects_removed_total{kind=\"manifest\"} %llu\n"
	     "# HELP regslim_gc_bytes_removed_total Bytes of pushed objects removed as garbage.\n"
	     "# TYPE regslim_gc_bytes_removed_total counter\nregslim_gc_bytes_removed_total %llu\n",
	     (unsigned long long)metrics_get(METRICS_GC_SWEEPS), (unsigned long long)metrics_get(METRICS_GC_FAILED),
	     (unsigned long long)metrics_get(METRICS_GC_BLOBS_REMOVED),
	     (unsigned long long)metrics_get(METRICS_GC_MANIFESTS_REMOVED),
	     (unsigned long long)metrics_get(METRICS_GC_BYTES_REMOVED));
}

/* The cluster's series (cluster.c), only with a cluster section. */
static void render_cluster(struct page *p)
{
	if (atomic_load(&redis_up) < 0)
		return;
	emit(p,
	     "# HELP regslim_redis_up 1 when the cluster's Redis answers, 0 when degraded (coordinating per process).\n"
	     "# TYPE regslim_redis_up gauge\nregslim_redis_up %d\n"
	     "# HELP regslim_cluster_locks_total Single-flight lock attempts: taken in Redis (redis), taken in this "
	     "process while Redis was down (local), held by another owner (busy).\n"
	     "# TYPE regslim_cluster_locks_total counter\n"
	     "regslim_cluster_locks_total{result=\"redis\"} %llu\n"
	     "regslim_cluster_locks_total{result=\"local\"} %llu\n"
	     "regslim_cluster_locks_total{result=\"busy\"} %llu\n",
	     atomic_load(&redis_up), (unsigned long long)atomic_load(&cluster_locks[METRICS_LOCK_REDIS]),
	     (unsigned long long)atomic_load(&cluster_locks[METRICS_LOCK_LOCAL]),
	     (unsigned long long)atomic_load(&cluster_locks[METRICS_LOCK_BUSY]));
}

/* ------------------------------------------------------------ scale-out (issue 13) */

#define SCALE_ROWS 64
struct scale_row {
	const char *a;
	char b[48]; /* a copied label value (an S3 error code) or a static one */
	uint64_t count;
	double sum;
};
static pthread_mutex_t scale_lock = PTHREAD_MUTEX_INITIALIZER;
static struct scale_row wait_rows[SCALE_ROWS], s3err_rows[SCALE_ROWS], evict_rows[SCALE_ROWS], pass_rows[SCALE_ROWS];
static size_t wait_count, s3err_count, evict_count, pass_count;
static uint64_t s3err_overflow;
static _Atomic int evictor = -1; /* -1: never elected nor refused (not rendered) */

/* The row (a, b) of t, made when absent; NULL when the table is full. scale_lock held. */
static struct scale_row *scale_row(struct scale_row *t, size_t *n, const char *a, const char *b)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp(t[i].a, a) == 0 && strcmp(t[i].b, b) == 0)
			return &t[i];
	if (*n == SCALE_ROWS)
		return NULL;
	struct scale_row *r = &t[(*n)++];
	r->a = a;
	snprintf(r->b, sizeof(r->b), "%s", b);
	return r;
}

void metrics_optimization_wait(const char *outcome, double seconds)
{
	pthread_mutex_lock(&scale_lock);
	struct scale_row *r = scale_row(wait_rows, &wait_count, outcome, "");
	if (r) {
		r->count++;
		r->sum += seconds;
	}
	pthread_mutex_unlock(&scale_lock);
}

void metrics_s3_error(const char *operation, const char *code)
{
	char clean[48];
	size_t j = 0;
	/* S3's text: keep what a label value may hold unquoted */
	for (const char *c = code; *c && j + 1 < sizeof(clean); c++)
		clean[j++] = (*c == '"' || *c == '\\' || *c == '\n') ? '_' : *c;
	clean[j] = '\0';
	pthread_mutex_lock(&scale_lock);
	struct scale_row *r = scale_row(s3err_rows, &s3err_count, operation, clean);
	if (r)
		r->count++;
	else
		s3err_overflow++;
	pthread_mutex_unlock(&scale_lock);
}

void metrics_eviction(const char *scope, unsigned objects, uint64_t bytes)
{
	pthread_mutex_lock(&scale_lock);
	struct scale_row *r = scale_row(evict_rows, &evict_count, scope, "");
	if (r) {
		r->count += objects;
		r->sum += (double)bytes;
	}
	pthread_mutex_unlock(&scale_lock);
}

void metrics_eviction_pass(const char *result)
{
	pthread_mutex_lock(&scale_lock);
	struct scale_row *r = scale_row(pass_rows, &pass_count, result, "");
	if (r)
		r->count++;
	pthread_mutex_unlock(&scale_lock);
}

void metrics_set_evictor(int on)
{
	atomic_store(&evictor, on ? 1 : 0);
}

static void render_scale(struct page *p)
{
	pthread_mutex_lock(&scale_lock);
	emit(p, "# HELP regslim_cluster_optimization_waits_total Optimizations another replica was running that this "
	        "one waited for (the lock opt:<key>), by outcome.\n"
	        "# TYPE regslim_cluster_optimization_waits_total counter\n");
	for (size_t i = 0; i < wait_count; i++)
		emit(p, "regslim_cluster_optimization_waits_total{outcome=\"%s\"} %llu\n", wait_rows[i].a,
		     (unsigned long long)wait_rows[i].count);
	emit(p, "# HELP regslim_cluster_optimization_wait_seconds_total Time those waits took, by outcome.\n"
	        "# TYPE regslim_cluster_optimization_wait_seconds_total counter\n");
	for (size_t i = 0; i < wait_count; i++)
		emit(p, "regslim_cluster_optimization_wait_seconds_total{outcome=\"%s\"} %.3f\n", wait_rows[i].a,
		     wait_rows[i].sum);
	emit(p, "# HELP regslim_s3_errors_total S3 requests that failed, by operation and S3 error code.\n"
	        "# TYPE regslim_s3_errors_total counter\n");
	for (size_t i = 0; i < s3err_count; i++)
		emit(p, "regslim_s3_errors_total{operation=\"%s\",code=\"%s\"} %llu\n", s3err_rows[i].a, s3err_rows[i].b,
		     (unsigned long long)s3err_rows[i].count);
	if (s3err_overflow)
		emit(p, "regslim_s3_errors_total{operation=\"overflow\",code=\"\"} %llu\n",
		     (unsigned long long)s3err_overflow);
	emit(p, "# HELP regslim_cache_evictions_total Objects eviction removed from the cache, by scope (cluster: the "
	        "elected evictor's cluster-wide LRU; replica: this replica's own view).\n"
	        "# TYPE regslim_cache_evictions_total counter\n");
	for (size_t i = 0; i < evict_count; i++)
		emit(p, "regslim_cache_evictions_total{scope=\"%s\"} %llu\n", evict_rows[i].a,
		     (unsigned long long)evict_rows[i].count);
	emit(p, "# HELP regslim_cache_evicted_bytes_total Bytes eviction removed from the cache, by scope.\n"
	        "# TYPE regslim_cache_evicted_bytes_total counter\n");
	for (size_t i = 0; i < evict_count; i++)
		emit(p, "regslim_cache_evicted_bytes_total{scope=\"%s\"} %.0f\n", evict_rows[i].a, evict_rows[i].sum);
	emit(p, "# HELP regslim_cache_eviction_passes_total Eviction passes of the maintenance pass, by result (run, "
	        "skipped: another replica is the evictor, degraded: Redis down, per replica).\n"
	        "# TYPE regslim_cache_eviction_passes_total counter\n");
	for (size_t i = 0; i < pass_count; i++)
		emit(p, "regslim_cache_eviction_passes_total{result=\"%s\"} %llu\n", pass_rows[i].a,
		     (unsigned long long)pass_rows[i].count);
	pthread_mutex_unlock(&scale_lock);
	int e = atomic_load(&evictor);
	if (e >= 0)
		emit(p, "# HELP regslim_cluster_evictor 1 while this replica is the cluster's elected evictor.\n"
		        "# TYPE regslim_cluster_evictor gauge\nregslim_cluster_evictor %d\n", e);
}

/* Peer streaming and the cluster-wide single-flight of blob downloads, only with a cluster
 * section. Each is this replica's count: summed over the replicas, upstream_blob_fetches is
 * the cluster's downloads. */
static void render_cluster_pull(struct page *p)
{
	if (atomic_load(&redis_up) < 0)
		return;
	unsigned long long v[METRICS_CL_PULL_COUNT];
	for (unsigned i = 0; i < METRICS_CL_PULL_COUNT; i++)
		v[i] = (unsigned long long)atomic_load(&cluster_pull[i]);
	emit(p,
	     "# HELP regslim_cluster_upstream_blob_fetches_total Blob downloads from an upstream this replica made "
	     "holding the blob's cluster lock (summed over the replicas: one per blob).\n"
	     "# TYPE regslim_cluster_upstream_blob_fetches_total counter\n"
	     "regslim_cluster_upstream_blob_fetches_total %llu\n"
	     "# HELP regslim_cluster_lock_waits_total Blob downloads that found the blob's lock held by another "
	     "replica and did not go to the upstream.\n"
	     "# TYPE regslim_cluster_lock_waits_total counter\n"
	     "regslim_cluster_lock_waits_total %llu\n"
	     "# HELP regslim_cluster_peer_streams_total Blobs streamed from the replica that downloads them: relayed "
	     "completely and verified (ok), cut off or not verified (failed), served to another replica (served).\n"
	     "# TYPE regslim_cluster_peer_streams_total counter\n"
	     "regslim_cluster_peer_streams_total{result=\"ok\"} %llu\n"
	     "regslim_cluster_peer_streams_total{result=\"failed\"} %llu\n"
	     "regslim_cluster_peer_streams_total{result=\"served\"} %llu\n"
	     "# HELP regslim_cluster_peer_bytes_total Blob bytes received from another replica (peer streaming).\n"
	     "# TYPE regslim_cluster_peer_bytes_total counter\n"
	     "regslim_cluster_peer_bytes_total %llu\n"
	     "# HELP regslim_cluster_peer_refused_total Peer requests refused for a missing or wrong peer "
	     "authentication.\n"
	     "# TYPE regslim_cluster_peer_refused_total counter\n"
	     "regslim_cluster_peer_refused_total %llu\n",
	     v[METRICS_CL_UPSTREAM_FETCHES], v[METRICS_CL_LOCK_WAITS], v[METRICS_CL_PEER_OK], v[METRICS_CL_PEER_FAILED],
	     v[METRICS_CL_PEER_SERVED], v[METRICS_CL_PEER_BYTES], v[METRICS_CL_PEER_REFUSED]);
}

enum rs_code metrics_render(char **out, size_t *out_len, struct rs_err *err)
{
	static const char *const kinds[METRICS_KIND_COUNT] = {"manifest", "blob"};
	static const char *const up_names[METRICS_UP_COUNTER_COUNT] = {
		"regslim_upstream_requests_total", "regslim_upstream_errors_total",
		"regslim_upstream_blob_fetches_total"};
	static const char *const up_help[METRICS_UP_COUNTER_COUNT] = {
		"Requests sent to each upstream.", "Upstream requests that failed (transport or 5xx).",
		"Blob downloads started from each upstream."};
	struct page p = {.buf = malloc(4096), .cap = 4096};
	if (!p.buf)
		return rs_err_set(err, RS_NOMEM, "metrics: out of memory");
	p.buf[0] = '\0';

	emit(&p, "# HELP regslim_http_requests_total HTTP requests by route, method and status.\n"
	         "# TYPE regslim_http_requests_total counter\n");
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < req_count; i++)
		emit(&p, "regslim_http_requests_total{route=\"%s\",method=\"%s\",status=\"%u\"} %llu\n",
		     req_rows[i].route, req_rows[i].method, req_rows[i].status,
		     (unsigned long long)req_rows[i].count);
	if (req_overflow)
		emit(&p, "regslim_http_requests_total{route=\"overflow\",method=\"\",status=\"\"} %llu\n",
		     (unsigned long long)req_overflow);
	for (int c = 0; c < METRICS_UP_COUNTER_COUNT; c++) {
		emit(&p, "# HELP %s %s\n# TYPE %s counter\n", up_names[c], up_help[c], up_names[c]);
		for (size_t i = 0; i < up_count; i++)
			emit(&p, "%s{upstream=\"%s\"} %llu\n", up_names[c], up_rows[i].name,
			     (unsigned long long)up_rows[i].counts[c]);
	}
	emit(&p, "# HELP regslim_optimize_fallbacks_total Tag pulls of an optimized repository answered with the "
	         "original, by reason.\n# TYPE regslim_optimize_fallbacks_total counter\n");
	for (size_t i = 0; i < fallback_count; i++)
		emit(&p, "regslim_optimize_fallbacks_total{reason=\"%s\"} %llu\n", fallback_rows[i].a,
		     (unsigned long long)fallback_rows[i].count);
	emit(&p, "# HELP regslim_signature_unverified_total Tag pulls whose original's signatures did not verify "
	         "under a signatures.verify rule, by action.\n# TYPE regslim_signature_unverified_total counter\n");
	for (size_t i = 0; i < unverified_count; i++)
		emit(&p, "regslim_signature_unverified_total{action=\"%s\"} %llu\n", unverified_rows[i].a,
		     (unsigned long long)unverified_rows[i].count);
	emit(&p, "# HELP regslim_variant_served_total Optimized manifests served, by client family and layer "
	         "compression.\n# TYPE regslim_variant_served_total counter\n");
	for (size_t i = 0; i < variant_count; i++)
		emit(&p, "regslim_variant_served_total{family=\"%s\",variant=\"%s\"} %llu\n", variant_rows[i].a,
		     variant_rows[i].b, (unsigned long long)variant_rows[i].count);
	emit(&p, "# HELP regslim_bytes_saved_total Compressed image bytes saved by optimization: per optimization "
	         "(stored) and per optimized pull (served).\n# TYPE regslim_bytes_saved_total counter\n");
	for (size_t i = 0; i < saved_count; i++)
		emit(&p, "regslim_bytes_saved_total{kind=\"%s\"} %llu\n", saved_rows[i].a,
		     (unsigned long long)saved_rows[i].count);
	emit(&p, "# HELP regslim_gate_pushes_total Manifest pushes checked by a push policy, by result.\n"
	         "# TYPE regslim_gate_pushes_total counter\n");
	for (size_t i = 0; i < gate_push_count; i++)
		emit(&p, "regslim_gate_pushes_total{result=\"%s\"} %llu\n", gate_push_rows[i].a,
		     (unsigned long long)gate_push_rows[i].count);
	emit(&p, "# HELP regslim_gate_findings_total Push policy findings, by rule and action (deny or warn).\n"
	         "# TYPE regslim_gate_findings_total counter\n");
	for (size_t i = 0; i < gate_finding_count; i++)
		emit(&p, "regslim_gate_findings_total{rule=\"%s\",action=\"%s\"} %llu\n", gate_finding_rows[i].a,
		     gate_finding_rows[i].b, (unsigned long long)gate_finding_rows[i].count);
	emit(&p, "# HELP regslim_gate_layer_scans_total Layer scans of the push gate, by when: upload (as the upload "
	         "arrived or in the background after it, once per layer digest and scan parameters), manifest (at the "
	         "manifest PUT) or repeat (a layer uploaded again, scanned as it arrived; its result was stored).\n"
	         "# TYPE regslim_gate_layer_scans_total counter\n");
	emit(&p, "# HELP regslim_gate_staged_uploads_total Uploads streamed on to the upstream as they arrived, by "
	         "result: completed (the layer's scan was clean), deleted (a denied finding, no layer, an upload that "
	         "failed) or failed (the upstream or the transfer; the layer went the other way).\n"
	         "# TYPE regslim_gate_staged_uploads_total counter\n");
	for (size_t i = 0; i < gate_stage_count; i++)
		emit(&p, "regslim_gate_staged_uploads_total{result=\"%s\"} %llu\n", gate_stage_rows[i].a,
		     (unsigned long long)gate_stage_rows[i].count);
	for (size_t i = 0; i < gate_scan_count; i++)
		emit(&p, "regslim_gate_layer_scans_total{when=\"%s\"} %llu\n", gate_scan_rows[i].a,
		     (unsigned long long)gate_scan_rows[i].count);
	emit(&p, "# HELP regslim_gate_layer_scan_streamed_bytes_total Compressed bytes of pushed layers scanned as "
	         "their uploads arrived.\n# TYPE regslim_gate_layer_scan_streamed_bytes_total counter\n"
	         "regslim_gate_layer_scan_streamed_bytes_total %llu\n",
	     (unsigned long long)atomic_load(&gate_streamed_bytes));
	emit(&p, "# HELP regslim_gate_layer_scan_spilled_bytes_total Bytes of pushed layers that waited in a spill file "
	         "because their scan was behind the upload.\n# TYPE regslim_gate_layer_scan_spilled_bytes_total counter\n"
	         "regslim_gate_layer_scan_spilled_bytes_total %llu\n",
	     (unsigned long long)atomic_load(&gate_spilled_bytes));
	unsigned inflight = inflight_fn ? inflight_fn(inflight_arg) : 0;
	pthread_mutex_unlock(&lock);
	uint64_t ook = atomic_load(&opt_ok), ofail = atomic_load(&opt_failed);
	emit(&p,
	     "# HELP regslim_optimizations_total Optimizations run on the pull path, by result.\n"
	     "# TYPE regslim_optimizations_total counter\n"
	     "regslim_optimizations_total{result=\"ok\"} %llu\nregslim_optimizations_total{result=\"failed\"} %llu\n"
	     "# HELP regslim_optimization_seconds Time spent per optimization.\n"
	     "# TYPE regslim_optimization_seconds summary\n"
	     "regslim_optimization_seconds_sum %.6f\nregslim_optimization_seconds_count %llu\n",
	     (unsigned long long)ook, (unsigned long long)ofail, (double)atomic_load(&opt_usec_sum) / 1e6,
	     (unsigned long long)(ook + ofail));

	emit(&p, "# HELP regslim_cache_hits_total Requests answered from the local store.\n"
	         "# TYPE regslim_cache_hits_total counter\n");
	for (int k = 0; k < METRICS_KIND_COUNT; k++)
		emit(&p, "regslim_cache_hits_total{kind=\"%s\"} %llu\n", kinds[k],
		     (unsigned long long)atomic_load(&cache_hits[k]));
	emit(&p, "# HELP regslim_cache_misses_total Requests that needed the upstream.\n"
	         "# TYPE regslim_cache_misses_total counter\n");
	for (int k = 0; k < METRICS_KIND_COUNT; k++)
		emit(&p, "regslim_cache_misses_total{kind=\"%s\"} %llu\n", kinds[k],
		     (unsigned long long)atomic_load(&cache_misses[k]));
	emit(&p,
	     "# HELP regslim_stale_served_total Tag answers served stale because the upstream failed.\n"
	     "# TYPE regslim_stale_served_total counter\nregslim_stale_served_total %llu\n"
	     "# HELP regslim_upstream_bytes_total Body bytes received from upstreams.\n"
	     "# TYPE regslim_upstream_bytes_total counter\nregslim_upstream_bytes_total %llu\n"
	     "# HELP regslim_client_bytes_total Body bytes sent to clients.\n"
	     "# TYPE regslim_client_bytes_total counter\nregslim_client_bytes_total %llu\n"
	     "# HELP regslim_data_dir_writable 1 when the data directory can be written, 0 when degraded.\n"
	     "# TYPE regslim_data_dir_writable gauge\nregslim_data_dir_writable %d\n"
	     "# HELP regslim_inflight_downloads Upstream blob downloads running now.\n"
	     "# TYPE regslim_inflight_downloads gauge\nregslim_inflight_downloads %u\n"
	     "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
	     "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %llu\n",
	     (unsigned long long)metrics_get(METRICS_STALE_SERVED),
	     (unsigned long long)metrics_get(METRICS_UPSTREAM_BYTES),
	     (unsigned long long)metrics_get(METRICS_CLIENT_BYTES), atomic_load(&data_dir_writable), inflight,
	     (unsigned long long)rss_bytes());
	render_counters(&p);
	render_cluster(&p);
	render_cluster_pull(&p);
	render_scale(&p);
	if (p.failed) {
		free(p.buf);
		return rs_err_set(err, RS_NOMEM, "metrics: out of memory while rendering");
	}
	*out = p.buf;
	*out_len = p.len;
	return RS_OK;
}
