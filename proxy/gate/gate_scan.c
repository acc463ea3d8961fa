/* gate_scan: layer scans at upload, a bounded queue of background workers,
 * results kept as store documents (see gate_scan.h). Talks to the store
 * (store.h: the pushed blob, STORE_DOC_GATE_SCAN), optimizer/scan.h for
 * the pass, strip.h for the forbidden-path globs, obs/metrics.h.
 *
 * Why the store and not memory: a result is a fact about immutable bytes
 * under fixed parameters, so it never goes stale (regslim's version is part
 * of the key); as a document it survives a restart (a re-push after one is
 * not rescanned), costs no memory however many layers are pushed, and is
 * where another replica would look. Memory holds only the table of scans
 * queued or running: queue_max + workers + RS_LIMIT_GATE_SCAN_QUEUE slots
 * of fixed size, and RS_LIMIT_GATE_SCAN_STREAMS scans fed by uploads (each
 * a ring, a decoder, a tar reader on a second thread and the secret
 * scanner's fixed window). An upload that outruns its scan does not wait
 * for it: what the ring cannot take goes to an unlinked scratch file (the
 * spill, bounded by RS_LIMIT_GATE_SCAN_SPILL_BYTES), read back by the scan
 * in order and given back to the file system as it is scanned.
 *
 * The document is lines of text (only config/ parses JSON):
 *   regslim-gate-scan 1
 *   uncompressed <bytes>
 *   more <forbidden past the cap> <secrets past the cap>
 *   f <glob index> <path>        a forbidden path, in the pass's order
 *   s <detector> <path>          a secret
 * paths with bytes <= 0x20, 0x7f and '%' written as %XX. A document that
 * does not parse is treated as absent (the layer is scanned again). */
#include "gate_scan.h"

#include "fsutil.h"
#include "log.h"
#include "metrics.h"
#include "rs_limits.h"
#include "scan.h"
#include "strip.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define GATE_SPILL_READ (256u * 1024)         /* the thread reads the spill in pieces of this */
#define GATE_SPILL_PUNCH (16u * 1024 * 1024) /* scanned spill bytes are given back in pieces of this */
/* An idle scan thread is woken when this much is in the ring (or at the
 * upload's end), not for every piece the server hands over (~16 KiB): a
 * wake-up per piece cost a context switch per piece. */
#define GATE_WAKE_BYTES (256u * 1024)

void gate_scan_result_dispose(struct gate_scan_result *r)
{
	for (size_t i = 0; i < r->count; i++)
		free(r->items[i].path);
	free(r->items);
	memset(r, 0, sizeof(*r));
}

/* ---- key ---- */

static void hash_str(struct digest_ctx *d, const char *tag, const char *s)
{
	digest_update(d, tag, strlen(tag) + 1);
	digest_update(d, s, strlen(s) + 1);
}

void gate_scan_key(char out[GATE_SCAN_KEY_SIZE], const struct rs_gate_policy *p, enum codec_kind codec,
                   const char *digest)
{
	out[0] = '\0';
	struct digest_ctx *d = digest_valid(digest) ? digest_new() : NULL;
	if (!d)
		return; /* no key: the layer is scanned where it is needed, not cached */
	char num[96];
	snprintf(num, sizeof(num), "%d %d %llu %d", (int)codec, p->secrets != GATE_OFF,
	         (unsigned long long)p->secret_file_cap, (int)p->secret_scan_binaries);
	hash_str(d, "regslim-gate-scan 1", REGSLIM_VERSION);
	hash_str(d, "params", num);
	for (size_t i = 0; i < p->secret_allow_path_count; i++)
		hash_str(d, "allow", p->secret_allow_paths[i]);
	for (size_t i = 0; p->forbidden_paths.action != GATE_OFF && i < p->forbidden_paths.count; i++)
		hash_str(d, "forbid", p->forbidden_paths.items[i]);
	char h[DIGEST_STR_SIZE];
	digest_final(d, h);
	digest_free(d);
	snprintf(out, GATE_SCAN_KEY_SIZE, "%s-%.16s", digest_hex(digest), digest_hex(h));
}

/* ---- the recorded pass ---- */

struct recorder {
	const struct rs_gate_policy *p;
	struct gate_scan_result *r;
	const atomic_bool *stop;
};

static enum rs_code note(struct recorder *c, enum gate_scan_kind kind, unsigned which, const char *path,
                         struct rs_err *err)
{
	struct gate_scan_result *r = c->r;
	if (r->count >= GATE_SCAN_FINDINGS_MAX) {
		if (kind == GATE_SCAN_FORBIDDEN)
			r->more_forbidden++;
		else
			r->more_secrets++;
		return RS_OK;
	}
	if (!r->items && !(r->items = calloc(GATE_SCAN_FINDINGS_MAX, sizeof(*r->items))))
		return rs_err_set(err, RS_NOMEM, "out of memory for the policy report");
	struct gate_scan_finding *f = &r->items[r->count];
	if (!(f->path = strdup(path)))
		return rs_err_set(err, RS_NOMEM, "out of memory for the policy report");
	f->kind = kind;
	f->which = which;
	r->count++;
	return RS_OK;
}

static bool is_whiteout(const char *path)
{
	const char *b = strrchr(path, '/');
	b = b ? b + 1 : path;
	return strncmp(b, ".wh.", 4) == 0;
}

/* As gate.c's on_entry: the first matching glob, whiteouts never. */
static enum rs_code rec_entry(void *ctx, const struct tar_entry *e, struct rs_err *err)
{
	struct recorder *c = ctx;
	if (c->stop && atomic_load(c->stop))
		return rs_err_set(err, RS_IO, "regslim is stopping");
	const struct gate_list_rule *fp = &c->p->forbidden_paths;
	if (fp->action == GATE_OFF || is_whiteout(e->path))
		return RS_OK;
	for (size_t i = 0; i < fp->count; i++)
		if (strip_glob_match(fp->items[i], e->path))
			return note(c, GATE_SCAN_FORBIDDEN, (unsigned)i, e->path, err);
	return RS_OK;
}

static enum rs_code rec_finding(void *ctx, const char *path, enum scan_detector d, struct rs_err *err)
{
	return note(ctx, GATE_SCAN_SECRET, (unsigned)d, path, err);
}

enum rs_code gate_scan_record(struct gate_scan_result *out, int fd, const struct rs_gate_policy *p,
                              enum codec_kind codec, const char *digest, const atomic_bool *stop,
                              struct rs_err *err)
{
	struct recorder c = {p, out, stop};
	struct scan_opts o = {.codec = codec,
	                      .digest = digest,
	                      .secrets = p->secrets != GATE_OFF,
	                      .file_cap = p->secret_file_cap,
	                      .scan_binaries = p->secret_scan_binaries,
	                      .allow_paths = p->secret_allow_paths,
	                      .allow_path_count = p->secret_allow_path_count,
	                      .on_entry = rec_entry,
	                      .on_finding = rec_finding,
	                      .ctx = &c,
	                      .threaded = true};
	struct scan_stats st;
	enum rs_code rc = scan_layer_fd(&st, fd, &o, err);
	if (rc == RS_OK)
		out->uncompressed_bytes = st.uncompressed_bytes;
	return rc;
}

/* ---- the document ---- */

static void put_path(FILE *f, const char *s)
{
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c <= 0x20 || *c == 0x7f || *c == '%')
			fprintf(f, "%%%02X", *c);
		else
			fputc(*c, f);
	}
}

/* The document of r as a new buffer (*out, free()); false when memory ran out. */
static bool encode(char **out, size_t *len, const struct gate_scan_result *r)
{
	FILE *f = open_memstream(out, len);
	if (!f)
		return false;
	fprintf(f, "regslim-gate-scan 1\nuncompressed %llu\nmore %zu %zu\n", (unsigned long long)r->uncompressed_bytes,
	        r->more_forbidden, r->more_secrets);
	for (size_t i = 0; i < r->count; i++) {
		fprintf(f, "%c %u ", r->items[i].kind == GATE_SCAN_FORBIDDEN ? 'f' : 's', r->items[i].which);
		put_path(f, r->items[i].path);
		fputc('\n', f);
	}
	bool bad = ferror(f) != 0;
	if (fclose(f) != 0 || bad) {
		free(*out);
		*out = NULL;
		return false;
	}
	return true;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decode the %XX path in s (up to end) into a new string; NULL when bad. */
static char *get_path(const char *s, const char *end)
{
	char *o = malloc((size_t)(end - s) + 1), *w = o;
	if (!o)
		return NULL;
	while (s < end) {
		if (*s == '%') {
			int a = end - s >= 3 ? hexval(s[1]) : -1, b = end - s >= 3 ? hexval(s[2]) : -1;
			if (a < 0 || b < 0 || (a == 0 && b == 0)) {
				free(o);
				return NULL;
			}
			*w++ = (char)(a * 16 + b);
			s += 3;
		} else {
			*w++ = *s++;
		}
	}
	*w = '\0';
	if (w == o) {
		free(o);
		return NULL;
	}
	return o;
}

/* Parse doc into r (zeroed); false (r disposed) when it is not a valid
 * result for p: then the layer is scanned again. */
static bool decode(struct gate_scan_result *r, const char *doc, const struct rs_gate_policy *p)
{
	unsigned long long unc = 0;
	size_t mf = 0, ms = 0;
	int used = 0;
	if (sscanf(doc, "regslim-gate-scan 1\nuncompressed %llu\nmore %zu %zu\n%n", &unc, &mf, &ms, &used) != 3 ||
	    used <= 0)
		return false;
	r->uncompressed_bytes = unc;
	r->more_forbidden = mf;
	r->more_secrets = ms;
	const char *s = doc + used;
	while (*s) {
		const char *eol = strchr(s, '\n');
		char kind = 0;
		unsigned which = 0;
		int n = 0;
		if (!eol || r->count >= GATE_SCAN_FINDINGS_MAX || sscanf(s, "%c %u %n", &kind, &which, &n) != 2 || n <= 0 ||
		    s + n >= eol)
			goto bad;
		if (!(kind == 'f' && which < p->forbidden_paths.count) && !(kind == 's' && which < SCAN_DETECTOR_COUNT))
			goto bad;
		if (!r->items && !(r->items = calloc(GATE_SCAN_FINDINGS_MAX, sizeof(*r->items))))
			goto bad;
		struct gate_scan_finding *f = &r->items[r->count];
		if (!(f->path = get_path(s + n, eol)))
			goto bad;
		f->kind = kind == 'f' ? GATE_SCAN_FORBIDDEN : GATE_SCAN_SECRET;
		f->which = which;
		r->count++;
		s = eol + 1;
	}
	if ((mf || ms) && r->count < GATE_SCAN_FINDINGS_MAX)
		goto bad;
	return true;
bad:
	gate_scan_result_dispose(r);
	return false;
}

/* The stored result of key; false when there is none (or it is unusable). */
static bool load(struct store *store, const char *key, const struct rs_gate_policy *p, struct gate_scan_result *r)
{
	char *doc = NULL;
	size_t len = 0;
	struct rs_err err = {0};
	if (!key[0] || store_doc_get(store, STORE_DOC_GATE_SCAN, NULL, key, RS_LIMIT_GATE_SCAN_DOC_BYTES, &doc, &len,
	                             &err) != RS_OK)
		return false;
	bool ok = strlen(doc) == len && decode(r, doc, p);
	free(doc);
	return ok;
}

static void save(struct store *store, const char *key, const struct gate_scan_result *r)
{
	char *doc = NULL;
	size_t len = 0;
	struct rs_err err = {0};
	if (!key[0] || !encode(&doc, &len, r))
		return; /* not kept: the manifest PUT scans the layer again */
	if (store_doc_put(store, STORE_DOC_GATE_SCAN, NULL, key, doc, len, &err) != RS_OK)
		log_event(LOG_WARN, "gate: layer scan %s not kept: %s", key, err.msg);
	free(doc);
}

/* ---- queue and workers ---- */

static bool sniff_head(const unsigned char *b, size_t n, enum codec_kind *out);

enum slot_state { SLOT_FREE, SLOT_QUEUED, SLOT_RUNNING };

/* A scan fed by an upload's bytes as they arrive (gate_scan_feed): the
 * request that writes them copies them into ring, a thread of the stream
 * scans them from there (so receiving and scanning run side by side). All
 * fields but those the thread alone uses (head, codec, scan, rec, res) are
 * under gate_scan.mu. */
struct stream {
	bool used;               /* the entry is taken (until the thread dropped it) */
	bool feeding;            /* a request is copying into ring (it may wait for room) */
	bool ending;             /* committed: no more bytes, finish and keep the result */
	bool aborting;           /* dropped: the thread ends without a result */
	bool failed;             /* the scan failed or the blob is no layer: feeds are ignored */
	bool idle;               /* the thread waits for bytes (woken for GATE_WAKE_BYTES, the end or an abort) */
	char uuid[STORE_UUID_SIZE];
	char digest[DIGEST_STR_SIZE]; /* set when ending */
	char key[GATE_SCAN_KEY_SIZE]; /* set when ending */
	int slot;                /* the RUNNING slot that stands for this scan once ending; -1: none */
	uint64_t fed;            /* bytes of the upload taken so far */
	time_t last;             /* last fed */
	const struct rs_gate_policy *p;
	unsigned char first[512]; /* the upload's first bytes (the codec, at commit) */
	size_t first_len;
	bool layer;              /* the first bytes say it is a layer: its bytes are counted */
	uint64_t counted;        /* bytes counted in streamed_bytes */
	unsigned char *ring;     /* RS_LIMIT_GATE_SCAN_STREAM_BUF bytes */
	size_t r_off, r_len;     /* unscanned bytes: r_len from r_off (wrapping) */
	/* The spill: when the ring is full the feeds append to an unlinked
	 * scratch file instead of waiting, until the scan has caught up with
	 * it (all its bytes come after the ring's). */
	int spill_fd;            /* -1 until the scan first fell behind */
	bool spilling;           /* feeds go to the spill (the ring is empty until it is drained) */
	uint64_t spill_w, spill_r; /* offsets written by the feeds, scanned by the thread */
	pthread_cond_t cv;       /* bytes, room, end or abort */
	struct gate_scan *owner;
	/* the thread's own */
	unsigned char *sbuf;     /* what the thread reads the spill into (GATE_SPILL_READ bytes) */
	uint64_t punched;        /* the spill's bytes below this are given back to the file system */
	unsigned char head[512]; /* the first bytes, until the codec is known (sniff) */
	size_t head_len;
	enum codec_kind codec;
	struct scan_layer *scan; /* NULL until the codec is known */
	struct recorder rec;
	struct gate_scan_result res;
};

struct slot {
	enum slot_state state;
	uint64_t seq; /* queue order */
	char key[GATE_SCAN_KEY_SIZE];
	char digest[DIGEST_STR_SIZE];
	enum codec_kind codec;
	const struct rs_gate_policy *p;
};

struct gate_scan {
	struct store *store;
	pthread_mutex_t mu;    /* guards everything below */
	pthread_cond_t work;   /* a slot was queued, or stop */
	pthread_cond_t done;   /* a slot was freed */
	struct slot *slots;
	size_t nslots, queue_max, queued;
	uint64_t seq;
	atomic_bool stop;     /* read by the workers' scans without the lock */
	struct gate_scan_stats st;
	pthread_t *threads;
	size_t nthreads;
	struct stream *streams; /* RS_LIMIT_GATE_SCAN_STREAMS scans fed by uploads */
};

static struct slot *find(struct gate_scan *s, const char *key)
{
	for (size_t i = 0; i < s->nslots; i++)
		if (s->slots[i].state != SLOT_FREE && strcmp(s->slots[i].key, key) == 0)
			return &s->slots[i];
	return NULL;
}

static struct slot *free_slot(struct gate_scan *s)
{
	for (size_t i = 0; i < s->nslots; i++)
		if (s->slots[i].state == SLOT_FREE)
			return &s->slots[i];
	return NULL;
}

static void run(struct gate_scan *s, const struct slot *job)
{
	int fd = -1;
	uint64_t size = 0;
	struct rs_err err = {0};
	struct gate_scan_result r = {0};
	enum rs_code rc = store_open_fd(s->store, STORE_PUSHED, STORE_BLOB, job->digest, &fd, &size, &err);
	if (rc == RS_OK)
		rc = gate_scan_record(&r, fd, job->p, job->codec, job->digest, &s->stop, &err);
	if (fd >= 0)
		close(fd);
	if (rc == RS_OK)
		save(s->store, job->key, &r);
	else if (!atomic_load(&s->stop))
		log_event(LOG_INFO, "gate: layer %s not scanned at upload (the manifest PUT will): %s", job->digest,
		          err.msg);
	gate_scan_result_dispose(&r);
	metrics_gate_layer_scan("upload");
}

static void *worker(void *arg)
{
	struct gate_scan *s = arg;
	pthread_mutex_lock(&s->mu);
	while (!atomic_load(&s->stop)) {
		struct slot *next = NULL;
		for (size_t i = 0; i < s->nslots; i++)
			if (s->slots[i].state == SLOT_QUEUED && (!next || s->slots[i].seq < next->seq))
				next = &s->slots[i];
		if (!next) {
			pthread_cond_wait(&s->work, &s->mu);
			continue;
		}
		next->state = SLOT_RUNNING;
		s->queued--;
		s->st.upload_scans++;
		struct slot job = *next;
		pthread_mutex_unlock(&s->mu);
		run(s, &job);
		pthread_mutex_lock(&s->mu);
		next->state = SLOT_FREE;
		pthread_cond_broadcast(&s->done);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* ---- scans fed by uploads ----
 *
 * An upload's bytes go through a scan as they arrive (gate_scan_feed, from
 * the request that writes them, into the stream's ring; the stream's thread
 * scans them), so the scan of a layer ends about when its upload does. The
 * digest is known only at the end: the scan runs without one, and its
 * result counts only once the store verified the digest (gate_scan_commit:
 * from then on a RUNNING slot stands for it, so gate_scan_claim and
 * gate_scan_result wait for it): the bytes scanned are exactly those the
 * store took, in order (each feed starts where the last ended). An upload
 * whose bytes did not all pass through one stream of this process (resumed
 * after a restart, a feed that failed, no free stream) is scanned once
 * complete, by the workers, as before. */

static bool scans_wanted(const struct rs_gate_policy *p)
{
	return p && (p->secrets || p->forbidden_paths.action || p->max_uncompressed_bytes.action);
}

static struct stream *stream_find(struct gate_scan *s, const char *uuid)
{
	for (size_t i = 0; i < RS_LIMIT_GATE_SCAN_STREAMS; i++) {
		struct stream *t = &s->streams[i];
		if (t->used && !t->aborting && !t->ending && strcmp(t->uuid, uuid) == 0)
			return t;
	}
	return NULL;
}

/* Under the lock: t's thread ends without a result. */
static void stream_abort(struct stream *t)
{
	t->aborting = true;
	pthread_cond_broadcast(&t->cv);
}

/* The scan of t once its codec is known, fed the bytes held so far. */
static enum rs_code stream_start(struct gate_scan *s, struct stream *t, struct rs_err *err)
{
	t->rec = (struct recorder){t->p, &t->res, &s->stop};
	struct scan_opts o = {.codec = t->codec,
	                      .secrets = t->p->secrets != GATE_OFF,
	                      .file_cap = t->p->secret_file_cap,
	                      .scan_binaries = t->p->secret_scan_binaries,
	                      .allow_paths = t->p->secret_allow_paths,
	                      .allow_path_count = t->p->secret_allow_path_count,
	                      .on_entry = rec_entry,
	                      .on_finding = rec_finding,
	                      .ctx = &t->rec,
	                      .threaded = true};
	enum rs_code rc = scan_layer_new(&t->scan, &o, err);
	return rc ? rc : scan_layer_write(t->scan, t->head, t->head_len, err);
}

/* Scan len bytes (the thread, outside the lock). The first bytes are held
 * until they tell the codec (as sniff reads them); RS_UNSUPPORTED when they
 * say the blob is no layer. */
static enum rs_code stream_take(struct gate_scan *s, struct stream *t, const unsigned char *buf, size_t len,
                                struct rs_err *err)
{
	if (!t->scan) {
		size_t n = sizeof(t->head) - t->head_len;
		n = n < len ? n : len;
		memcpy(t->head + t->head_len, buf, n);
		t->head_len += n;
		buf += n;
		len -= n;
		bool layer = sniff_head(t->head, t->head_len, &t->codec);
		if (!layer && t->head_len < sizeof(t->head))
			return RS_OK; /* the next bytes tell */
		if (!layer)
			return rs_err_set(err, RS_UNSUPPORTED, "not a layer");
		enum rs_code rc = stream_start(s, t, err);
		if (rc)
			return rc;
	}
	return len ? scan_layer_write(t->scan, buf, len, err) : RS_OK;
}

/* The end of a committed stream's scan (the thread, outside the lock):
 * finish and keep the result; true when it was kept. *known: a result was
 * stored before (a layer uploaded again). */
static bool stream_end(struct gate_scan *s, struct stream *t, bool *known)
{
	struct rs_err err = {0};
	enum rs_code rc = RS_OK;
	if (!t->scan)
		rc = stream_start(s, t, &err); /* a layer shorter than 512 bytes */
	struct scan_stats st;
	if (rc == RS_OK)
		rc = scan_layer_finish(t->scan, &st, &err);
	if (rc) {
		if (!atomic_load(&s->stop))
			log_event(LOG_INFO, "gate: layer %s not scanned as its upload arrived (the manifest PUT will): %s",
			          t->digest, err.msg);
		return false;
	}
	t->res.uncompressed_bytes = st.uncompressed_bytes;
	struct gate_scan_result old = {0};
	*known = load(s->store, t->key, t->p, &old);
	gate_scan_result_dispose(&old);
	if (!*known)
		save(s->store, t->key, &t->res);
	log_event(LOG_DEBUG, "gate: layer %s scanned as its upload arrived (%llu bytes uncompressed)%s", t->digest,
	          (unsigned long long)st.uncompressed_bytes, *known ? ", as stored before" : "");
	return true;
}

/* The next bytes for the thread (under the lock): from the ring, else
 * from the spill (read outside the lock into t->sbuf); 0 when neither
 * holds any. */
static size_t next_bytes(struct stream *t, const unsigned char **at, bool *from_spill)
{
	if (t->r_len > 0) {
		size_t n = RS_LIMIT_GATE_SCAN_STREAM_BUF - t->r_off;
		*at = t->ring + t->r_off;
		*from_spill = false;
		return n < t->r_len ? n : t->r_len;
	}
	uint64_t left = t->spill_w - t->spill_r;
	*at = t->sbuf;
	*from_spill = true;
	return left < GATE_SPILL_READ ? (size_t)left : GATE_SPILL_READ;
}

/* Read n bytes of the spill at off into t->sbuf and give back to the file
 * system what was scanned (the thread, outside the lock). */
static enum rs_code spill_read(struct stream *t, uint64_t off, size_t n, struct rs_err *err)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(t->spill_fd, t->sbuf + got, n - got, (off_t)(off + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return rs_err_set(err, RS_IO, "reading the gate's spill file: %s", r < 0 ? strerror(errno) : "short");
		got += (size_t)r;
	}
	if (off + n - t->punched >= GATE_SPILL_PUNCH) { /* best effort: the file only holds what is unscanned */
		(void)fallocate(t->spill_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)t->punched,
		                (off_t)(off + n - t->punched));
		t->punched = off + n;
	}
	return RS_OK;
}

/* The stream's thread: scan what the feeds put into the ring (or the spill)
 * until the upload is committed (then keep the result) or the stream is
 * dropped (or idle for RS_LIMIT_GATE_SCAN_STREAM_IDLE_S). */
static void *stream_thread(void *arg)
{
	struct stream *t = arg;
	struct gate_scan *s = t->owner;
	pthread_mutex_lock(&s->mu);
	bool ok = true;
	for (;;) {
		if (t->aborting || atomic_load(&s->stop))
			break;
		if (t->r_len == 0 && t->spill_r == t->spill_w) {
			if (t->spilling && !t->feeding) { /* caught up: the next feeds go to the ring again */
				t->spilling = false;
				t->spill_r = t->spill_w = t->punched = 0;
				if (ftruncate(t->spill_fd, 0) != 0)
					log_event(LOG_DEBUG, "gate: emptying a spill file: %s", strerror(errno));
			}
			if (t->ending)
				break;
			struct timespec until;
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += RS_LIMIT_GATE_SCAN_STREAM_IDLE_S;
			t->idle = true;
			int w = pthread_cond_timedwait(&t->cv, &s->mu, &until);
			t->idle = false;
			if (w != 0 && t->r_len == 0 && !t->ending && !t->feeding && t->spill_r == t->spill_w)
				t->aborting = true; /* an upload left half done: scanned once complete, if ever */
			continue;
		}
		const unsigned char *at;
		bool from_spill;
		size_t n = next_bytes(t, &at, &from_spill);
		uint64_t off = t->spill_r;
		bool skip = t->failed;
		pthread_mutex_unlock(&s->mu);
		struct rs_err err = {0};
		enum rs_code rc = skip ? RS_OK : from_spill ? spill_read(t, off, n, &err) : RS_OK;
		if (!skip && rc == RS_OK)
			rc = stream_take(s, t, at, n, &err);
		if (rc && rc != RS_UNSUPPORTED && !atomic_load(&s->stop))
			log_event(LOG_DEBUG, "gate: upload %s not scanned as it arrives (scanned once complete): %s", t->uuid,
			          err.msg);
		pthread_mutex_lock(&s->mu);
		t->failed = t->failed || rc != RS_OK;
		if (from_spill) {
			t->spill_r += n;
		} else {
			t->r_off = (t->r_off + n) % RS_LIMIT_GATE_SCAN_STREAM_BUF;
			t->r_len -= n;
		}
		pthread_cond_broadcast(&t->cv);
	}
	ok = t->ending && !t->aborting && !t->failed && !atomic_load(&s->stop);
	while (t->feeding) /* a feed copying in sees aborting and lets go */
		pthread_cond_wait(&t->cv, &s->mu);
	pthread_mutex_unlock(&s->mu);
	bool known = false, kept = ok && stream_end(s, t, &known);
	pthread_mutex_lock(&s->mu);
	s->st.upload_scans += kept && !known;
	s->st.streamed += kept;
	s->st.repeated += kept && known;
	if (t->slot >= 0)
		s->slots[t->slot].state = SLOT_FREE;
	scan_layer_free(t->scan);
	gate_scan_result_dispose(&t->res);
	if (t->spill_fd >= 0)
		close(t->spill_fd);
	free(t->sbuf);
	free(t->ring);
	pthread_cond_destroy(&t->cv);
	memset(t, 0, sizeof(*t));
	pthread_cond_broadcast(&s->done);
	pthread_mutex_unlock(&s->mu);
	if (kept)
		metrics_gate_layer_scan(known ? "repeat" : "upload");
	return NULL;
}

/* A stream (and its thread) for a new upload, in a free entry; NULL when
 * all are taken or memory or threads run out. Under the lock. Streams idle
 * for RS_LIMIT_GATE_SCAN_STREAM_IDLE_S are dropped on the way (their entry
 * is free once their thread is gone). */
static struct stream *stream_new(struct gate_scan *s, const char *uuid, const struct rs_gate_policy *p)
{
	struct stream *t = NULL;
	time_t now = time(NULL);
	for (size_t i = 0; i < RS_LIMIT_GATE_SCAN_STREAMS; i++) {
		struct stream *c = &s->streams[i];
		if (!c->used && !t)
			t = c;
		else if (c->used && !c->ending && !c->aborting && !c->feeding && now - c->last >= RS_LIMIT_GATE_SCAN_STREAM_IDLE_S)
			stream_abort(c);
	}
	if (!t || !(t->ring = malloc(RS_LIMIT_GATE_SCAN_STREAM_BUF)))
		return NULL;
	t->used = true;
	t->slot = -1;
	t->spill_fd = -1;
	t->p = p;
	t->last = now;
	t->owner = s;
	snprintf(t->uuid, sizeof(t->uuid), "%s", uuid);
	pthread_cond_init(&t->cv, NULL);
	pthread_t th;
	pthread_attr_t attr;
	bool started = pthread_attr_init(&attr) == 0;
	if (started) {
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		started = pthread_create(&th, &attr, stream_thread, t) == 0;
		pthread_attr_destroy(&attr);
	}
	if (!started) {
		free(t->ring);
		pthread_cond_destroy(&t->cv);
		memset(t, 0, sizeof(*t));
		return NULL;
	}
	return t;
}
/* Under the lock: t's spill file is open (or opened now: an unlinked file
 * in the store's scratch area, so nothing is left behind by a crash), with
 * t->sbuf for the thread; false when it cannot be (the feed then waits for
 * room in the ring, as without a spill). */
static bool spill_ready(struct gate_scan *s, struct stream *t)
{
	if (t->spill_fd >= 0)
		return true;
	char dir[512], path[600];
	struct rs_err err = {0};
	if (store_scratch_new(s->store, "gatespill", dir, sizeof(dir), &err) != RS_OK) {
		log_event(LOG_DEBUG, "gate: no spill for upload %s: %s", t->uuid, err.msg);
		return false;
	}
	snprintf(path, sizeof(path), "%s/spill", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd >= 0)
		unlink(path);
	store_scratch_remove(s->store, dir);
	if (fd < 0 || !(t->sbuf = malloc(GATE_SPILL_READ))) {
		if (fd >= 0)
			close(fd);
		return false;
	}
	t->spill_fd = fd;
	return true;
}

/* Keep the upload's first bytes (the codec, at commit). */
static void note_first(struct stream *t, const unsigned char *in, size_t n)
{
	if (t->first_len < sizeof(t->first)) {
		size_t f = sizeof(t->first) - t->first_len < n ? sizeof(t->first) - t->first_len : n;
		memcpy(t->first + t->first_len, in, f);
		t->first_len += f;
	}
}

/* Under the lock (dropped while writing): append n of in to t's spill;
 * false when the write failed (the stream is dropped). */
static bool spill_append(struct gate_scan *s, struct stream *t, const unsigned char *in, size_t n)
{
	uint64_t at = t->spill_w;
	pthread_mutex_unlock(&s->mu); /* t->feeding: the thread leaves the spill's end alone */
	struct rs_err err = {0};
	enum rs_code rc = fsutil_pwrite_all(t->spill_fd, in, n, at, "the gate's spill file", &err);
	pthread_mutex_lock(&s->mu);
	if (rc) {
		log_event(LOG_INFO, "gate: upload %s not scanned as it arrives (scanned once complete): %s", t->uuid,
		          err.msg);
		stream_abort(t);
		return false;
	}
	t->spill_w += n;
	s->st.spilled_bytes += n;
	metrics_gate_layer_scan_spilled(n);
	return true;
}

/* Under the lock: put len bytes of in into t's ring, or its spill once the
 * ring is full (the scan is behind); waits only when neither has room.
 * Returns the bytes taken (less when the stream was dropped meanwhile). */
static size_t stream_put(struct gate_scan *s, struct stream *t, const unsigned char *in, size_t len)
{
	size_t taken = 0;
	while (taken < len && !t->aborting && !t->failed && !atomic_load(&s->stop)) {
		size_t n = len - taken;
		if (!t->spilling && t->r_len < RS_LIMIT_GATE_SCAN_STREAM_BUF) {
			size_t w = (t->r_off + t->r_len) % RS_LIMIT_GATE_SCAN_STREAM_BUF;
			/* the free run from w: up to the unscanned bytes, or to the end */
			size_t room = w < t->r_off ? t->r_off - w : RS_LIMIT_GATE_SCAN_STREAM_BUF - w;
			n = n < room ? n : room;
			memcpy(t->ring + w, in + taken, n);
			t->r_len += n;
		} else if ((t->spilling || spill_ready(s, t)) &&
		           t->spill_w - t->spill_r < RS_LIMIT_GATE_SCAN_SPILL_BYTES) {
			t->spilling = true;
			uint64_t room = RS_LIMIT_GATE_SCAN_SPILL_BYTES - (t->spill_w - t->spill_r);
			n = n < room ? n : (size_t)room;
			if (!spill_append(s, t, in + taken, n))
				break;
		} else {
			pthread_cond_wait(&t->cv, &s->mu); /* no room anywhere: wait for the scan */
			continue;
		}
		note_first(t, in + taken, n);
		t->fed += n;
		taken += n;
		if (t->idle && (t->r_len >= GATE_WAKE_BYTES || t->spilling))
			pthread_cond_broadcast(&t->cv);
	}
	return taken;
}

void gate_scan_feed(struct gate_scan *s, const struct rs_gate_policy *p, const char *uuid, uint64_t offset,
                    const void *buf, size_t len)
{
	if (!s || !scans_wanted(p) || !len || atomic_load(&s->stop))
		return;
	pthread_mutex_lock(&s->mu);
	struct stream *t = stream_find(s, uuid);
	if (!t && offset == 0)
		t = stream_new(s, uuid, p);
	if (t && (t->feeding || t->failed || t->fed != offset || t->p != p)) {
		stream_abort(t); /* bytes went by without it: scanned once complete */
		t = NULL;
	}
	uint64_t taken = 0;
	if (t) {
		t->feeding = true;
		len -= stream_put(s, t, buf, len);
	}
	if (t) {
		t->feeding = false;
		if (t->aborting || atomic_load(&s->stop))
			pthread_cond_broadcast(&t->cv); /* a thread ending waits for the feed to let go */
		t->last = time(NULL);
		enum codec_kind codec;
		t->layer = t->layer || sniff_head(t->first, t->first_len, &codec);
		if (len > 0 || (!t->layer && t->first_len == sizeof(t->first)))
			stream_abort(t); /* not all of it went in, or no layer */
		taken = t->layer && !t->aborting ? t->fed - t->counted : 0;
		t->counted += taken;
		s->st.streamed_bytes += taken;
	}
	pthread_mutex_unlock(&s->mu);
	if (taken)
		metrics_gate_layer_scan_streamed(taken);
}

bool gate_scan_commit(struct gate_scan *s, const char *uuid, uint64_t size, const char *digest)
{
	if (!s)
		return false;
	pthread_mutex_lock(&s->mu);
	struct stream *t = stream_find(s, uuid);
	enum codec_kind codec;
	bool ok = t && !t->feeding && !t->failed && t->fed == size && !atomic_load(&s->stop) &&
	          sniff_head(t->first, t->first_len, &codec);
	if (ok) {
		gate_scan_key(t->key, t->p, codec, digest);
		ok = t->key[0] != '\0';
	}
	if (t && !ok)
		stream_abort(t);
	if (ok) {
		/* from now on a RUNNING slot stands for the scan: the manifest PUT
		 * waits for it (unless another scan of the key is on already) */
		struct slot *e = find(s, t->key) ? NULL : free_slot(s);
		if (e) {
			e->state = SLOT_RUNNING;
			e->codec = codec;
			e->p = t->p;
			snprintf(e->key, sizeof(e->key), "%s", t->key);
			snprintf(e->digest, sizeof(e->digest), "%s", digest);
			t->slot = (int)(e - s->slots);
		}
		snprintf(t->digest, sizeof(t->digest), "%s", digest);
		t->ending = true;
		pthread_cond_broadcast(&t->cv);
	}
	pthread_mutex_unlock(&s->mu);
	return ok;
}

void gate_scan_forget(struct gate_scan *s, const char *uuid)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	struct stream *t = stream_find(s, uuid);
	if (t)
		stream_abort(t);
	pthread_mutex_unlock(&s->mu);
}

enum rs_code gate_scan_new(struct gate_scan **out, struct store *store, size_t workers, size_t queue_max,
                           struct rs_err *err)
{
	struct gate_scan *s = calloc(1, sizeof(*s));
	if (!s)
		return rs_err_set(err, RS_NOMEM, "out of memory for the gate's layer scans");
	s->store = store;
	atomic_init(&s->stop, false);
	s->queue_max = queue_max;
	s->nslots = queue_max + workers + RS_LIMIT_GATE_SCAN_QUEUE;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->work, NULL);
	pthread_cond_init(&s->done, NULL);
	if (!(s->slots = calloc(s->nslots, sizeof(*s->slots))) ||
	    !(s->streams = calloc(RS_LIMIT_GATE_SCAN_STREAMS, sizeof(*s->streams))) ||
	    (workers && !(s->threads = calloc(workers, sizeof(*s->threads))))) {
		gate_scan_free(s);
		return rs_err_set(err, RS_NOMEM, "out of memory for the gate's layer scans");
	}
	for (; s->nthreads < workers; s->nthreads++) {
		if (pthread_create(&s->threads[s->nthreads], NULL, worker, s) != 0) {
			gate_scan_free(s);
			return rs_err_set(err, RS_IO, "cannot start the gate's layer scan workers");
		}
	}
	*out = s;
	return RS_OK;
}

void gate_scan_free(struct gate_scan *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	atomic_store(&s->stop, true);
	pthread_cond_broadcast(&s->work);
	pthread_mutex_unlock(&s->mu);
	for (size_t i = 0; i < s->nthreads; i++)
		pthread_join(s->threads[i], NULL);
	pthread_mutex_lock(&s->mu);
	for (;;) { /* the streams' threads see stop and drop their entries */
		bool left = false;
		for (size_t i = 0; s->streams && i < RS_LIMIT_GATE_SCAN_STREAMS; i++) {
			if (s->streams[i].used) {
				left = true;
				stream_abort(&s->streams[i]);
			}
		}
		if (!left)
			break;
		pthread_cond_wait(&s->done, &s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	free(s->streams);
	free(s->threads);
	free(s->slots);
	pthread_cond_destroy(&s->done);
	pthread_cond_destroy(&s->work);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

/* The codec of a layer blob by its first n bytes (n = min(512, its size));
 * false when it is none of gzip, zstd, tar (an image config, some other
 * artifact). */
static bool sniff_head(const unsigned char *b, size_t n, enum codec_kind *out)
{
	if (n >= 2 && b[0] == 0x1f && b[1] == 0x8b)
		*out = CODEC_GZIP;
	else if (n >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd)
		*out = CODEC_ZSTD;
	else if (n == 512 && memcmp(b + 257, "ustar", 5) == 0)
		*out = CODEC_NONE;
	else
		return false;
	return true;
}

/* The codec of a layer blob in the store by its first bytes (sniff_head). */
static bool sniff(struct store *store, const char *digest, enum codec_kind *out)
{
	int fd = -1;
	uint64_t size = 0;
	struct rs_err err = {0};
	if (store_open_fd(store, STORE_PUSHED, STORE_BLOB, digest, &fd, &size, &err) != RS_OK)
		return false;
	unsigned char b[512];
	ssize_t n = pread(fd, b, sizeof(b), 0);
	close(fd);
	return n >= 0 && sniff_head(b, (size_t)n, out);
}

void gate_scan_queue(struct gate_scan *s, const struct rs_gate_policy *p, const char *digest)
{
	enum codec_kind codec;
	if (!s || !p || !digest_valid(digest) || !(p->secrets || p->forbidden_paths.action || p->max_uncompressed_bytes.action))
		return;
	if (!sniff(s->store, digest, &codec))
		return;
	char key[GATE_SCAN_KEY_SIZE];
	gate_scan_key(key, p, codec, digest);
	if (!key[0])
		return;
	pthread_mutex_lock(&s->mu);
	bool known = find(s, key) != NULL;
	pthread_mutex_unlock(&s->mu);
	struct gate_scan_result r = {0};
	if (known || load(s->store, key, p, &r)) {
		gate_scan_result_dispose(&r);
		pthread_mutex_lock(&s->mu);
		s->st.cached += !known;
		pthread_mutex_unlock(&s->mu);
		return;
	}
	pthread_mutex_lock(&s->mu);
	struct slot *e = NULL;
	if (!find(s, key) && !atomic_load(&s->stop)) {
		if (s->queued >= s->queue_max || !(e = free_slot(s)))
			s->st.dropped++;
	}
	if (e) {
		e->state = SLOT_QUEUED;
		e->seq = s->seq++;
		e->codec = codec;
		e->p = p;
		snprintf(e->key, sizeof(e->key), "%s", key);
		snprintf(e->digest, sizeof(e->digest), "%s", digest);
		s->queued++;
		pthread_cond_signal(&s->work);
	}
	pthread_mutex_unlock(&s->mu);
}

bool gate_scan_result(struct gate_scan *s, struct gate_scan_result *out, const struct rs_gate_policy *p,
                      const char *digest)
{
	enum codec_kind codec;
	if (!s || !p || !digest_valid(digest) || !sniff(s->store, digest, &codec))
		return false;
	char key[GATE_SCAN_KEY_SIZE];
	gate_scan_key(key, p, codec, digest);
	if (!key[0])
		return false;
	pthread_mutex_lock(&s->mu);
	while (find(s, key) && !atomic_load(&s->stop))
		pthread_cond_wait(&s->done, &s->mu);
	pthread_mutex_unlock(&s->mu);
	return load(s->store, key, p, out);
}

bool gate_scan_claim(struct gate_scan *s, struct gate_scan_result *out, int *ticket, const struct rs_gate_policy *p,
                     enum store_area area, enum codec_kind codec, const char *digest)
{
	*ticket = -1;
	char key[GATE_SCAN_KEY_SIZE];
	gate_scan_key(key, p, codec, digest);
	if (!key[0] || !store_has(s->store, area, STORE_BLOB, digest))
		return false;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		struct slot *e = find(s, key);
		if (e && e->state == SLOT_RUNNING) {
			pthread_cond_wait(&s->done, &s->mu);
			continue;
		}
		if (e) { /* queued, not started: this PUT scans it now */
			e->state = SLOT_RUNNING;
			s->queued--;
			s->st.manifest_scans++;
			*ticket = (int)(e - s->slots);
			break;
		}
		pthread_mutex_unlock(&s->mu);
		bool hit = load(s->store, key, p, out);
		pthread_mutex_lock(&s->mu);
		if (hit) {
			s->st.cached++;
			pthread_mutex_unlock(&s->mu);
			return true;
		}
		if (find(s, key))
			continue; /* queued or started meanwhile */
		if ((e = free_slot(s))) {
			e->state = SLOT_RUNNING;
			e->codec = codec;
			e->p = p;
			snprintf(e->key, sizeof(e->key), "%s", key);
			snprintf(e->digest, sizeof(e->digest), "%s", digest);
			*ticket = (int)(e - s->slots);
		}
		s->st.manifest_scans++;
		break;
	}
	pthread_mutex_unlock(&s->mu);
	return false;
}

void gate_scan_done(struct gate_scan *s, int ticket, const struct rs_gate_policy *p, enum codec_kind codec,
                    const char *digest, const struct gate_scan_result *res)
{
	metrics_gate_layer_scan("manifest");
	if (res) {
		char key[GATE_SCAN_KEY_SIZE];
		gate_scan_key(key, p, codec, digest);
		save(s->store, key, res);
	}
	if (ticket < 0)
		return;
	pthread_mutex_lock(&s->mu);
	s->slots[ticket].state = SLOT_FREE;
	pthread_cond_broadcast(&s->done);
	pthread_mutex_unlock(&s->mu);
}

void gate_scan_stats(struct gate_scan *s, struct gate_scan_stats *out)
{
	pthread_mutex_lock(&s->mu);
	*out = s->st;
	pthread_mutex_unlock(&s->mu);
}

void gate_scan_idle(struct gate_scan *s)
{
	pthread_mutex_lock(&s->mu);
	for (;;) {
		bool busy = false;
		for (size_t i = 0; i < s->nslots && !busy; i++)
			busy = s->slots[i].state == SLOT_RUNNING || (s->nthreads && s->slots[i].state == SLOT_QUEUED);
		for (size_t i = 0; i < RS_LIMIT_GATE_SCAN_STREAMS && !busy; i++)
			busy = s->streams[i].used && (s->streams[i].ending || s->streams[i].aborting);
		if (!busy)
			break;
		pthread_cond_wait(&s->done, &s->mu);
	}
	pthread_mutex_unlock(&s->mu);
}
