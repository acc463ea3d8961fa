/* blobstore: the content-addressed disk cache under one data directory.
 *
 * Objects (blobs and manifests) are written to tmp/<random>, hashed while
 * they are written (optimizer/digest.h), fsynced, verified against the digest
 * and size the caller expected, renamed to <kind>/sha256/<2 hex>/<hex> and the
 * directory fsynced (STYLE.md section 2; redis rdbSave, libgit2 filebuf).
 * A file its caller wrote, fsynced and verified on the same file system (an
 * upload, push.c) is renamed into place the same way (blobstore_place_file).
 * Tag maps are small fixed-format JSON files written the same way.
 *
 * Accounting: the bytes under blobs/ and manifests/ are counted once at open
 * and then tracked. An in-memory index (hash table + LRU list, oldest first)
 * orders objects by last use; it is seeded from file mtimes at open, and every
 * use also sets the file's mtime so the order survives a restart. One mutex
 * covers the index and the namespace changes that must agree with it (rename
 * into place, unlink on eviction); data writes, reads and fsyncs happen
 * outside it. An eviction pass takes it in short batches, so lookups and
 * commits interleave with a long pass.
 *
 * Serving: a use sets the file's mtime at most once per TOUCH_EVERY_S (a hot
 * object served thousands of times a second costs no metadata write per
 * request). Verified manifests are kept in a small cache (MCACHE_SLOTS slots
 * of at most MCACHE_ENTRY_MAX bytes), tag maps in another (TCACHE_SLOTS, by
 * path), each next to its file's identity (device, inode, size, ctime): a
 * read whose stat(2) finds the same identity gets the kept answer without
 * opening, reading or hashing the file. A removal fails the stat, a rename
 * over the file changes the inode and a write into it the ctime, so the next
 * read goes to the disk (a corrupted manifest is dropped as before); only a
 * write within the same clock tick as the read that filled the entry (file
 * times have the kernel's tick resolution) would go unseen. The store's own
 * changes (put_manifest's sidecar, tag puts and removals, dropped objects)
 * forget the entry.
 *
 * What it does not do: HTTP, upstreams, deciding when to evict (callers call
 * blobstore_evict()), reading tmp/ (only inflight.c opens a writer's own temp
 * path). It talks to the file system and nothing else. */
#include "blobstore.h"

#include "fsutil.h"
#include "image.h"
#include "imagejson.h"
#include "imagewalk.h"
#include "refname.h"
#include "rs_limits.h"
#include "store_local.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A media type we keep beside a manifest or in a tag map (one line). */
#define MEDIA_TYPE_MAX (sizeof(((struct blobstore_tag *)0)->media_type) - 1)
/* Tag files are tiny; anything larger is corrupt. */
#define TAG_FILE_MAX 512
/* Longest path we build. config/limits.h shadows <limits.h> on the include
 * path, so PATH_MAX is not used here; Linux's value. */
#define STORE_PATH_MAX 4096
/* Upstream names are single path components. */
#define UPSTREAM_NAME_MAX 255

struct entry {
	struct entry *hnext;       /* hash chain */
	struct entry *prev, *next; /* LRU list: head is the least recently used */
	uint64_t size;
	time_t pinned_until; /* eviction passes over it before this time (blobstore_pin) */
	enum blobstore_kind kind;
	char hex[DIGEST_HEX_LEN + 1];
};

/* A use sets an object's mtime (the LRU order across restarts) only when it
 * is at least this old: the order on disk is exact to this many seconds. */
#define TOUCH_EVERY_S 1
/* The verified-manifest cache: slots (by digest) and the largest manifest
 * kept, so it holds at most MCACHE_SLOTS * MCACHE_ENTRY_MAX bytes (2 MiB). */
#define MCACHE_SLOTS 128
#define MCACHE_ENTRY_MAX (16 * 1024)

/* Tag maps read, by path, kept the same way (they are replaced by rename). */
#define TCACHE_SLOTS 128

/* What identifies a file's content for the caches: any write into the file
 * changes its ctime, a rename over it its inode. */
struct file_id {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec ctim;
};

struct mcache_entry {
	char hex[DIGEST_HEX_LEN + 1]; /* "": empty */
	struct file_id id;
	char *body; /* len bytes and a NUL */
	size_t len;
	char *type;
};

struct tcache_entry {
	char *path; /* NULL: empty */
	struct file_id id;
	struct blobstore_tag tag;
};

/* One hold of the store lock removes at most this many objects (eviction). */
#define EVICT_BATCH_OBJECTS 64

struct evicted {
	enum blobstore_kind kind;
	char hex[DIGEST_HEX_LEN + 1];
};

struct blobstore {
	char *root;
	uint64_t max_bytes;
	_Atomic uint64_t size;
	pthread_mutex_t mu; /* guards everything below */
	struct entry **buckets;
	size_t nbuckets; /* power of two */
	size_t count;
	struct entry *lru_head, *lru_tail;
	unsigned migrated; /* tags whose images got links at open (blobstore_links_migrated) */
	blobstore_evict_hook hook; /* told of each object a pass evicted */
	void *hook_ctx;
	struct evicted evicted[EVICT_BATCH_OBJECTS]; /* the current batch's, for the hook */
	unsigned evicted_n;
	pthread_mutex_t mc_mu; /* guards mcache and tcache only */
	struct mcache_entry mcache[MCACHE_SLOTS];
	struct tcache_entry tcache[TCACHE_SLOTS];
};

static void mcache_forget(struct blobstore *bs, const char *hex);

struct blobstore_writer {
	struct blobstore *bs;
	enum blobstore_kind kind;
	char digest[DIGEST_STR_SIZE];
	int64_t expected_size;
	int fd;
	struct digest_ctx *dc;
	bool failed;          /* sticky: a write failed, commit reports it */
	struct rs_err sticky; /* the first failure */
	char path[STORE_PATH_MAX];
};

/* ---- paths ------------------------------------------------------------ */

static const char *kind_dir(enum blobstore_kind kind)
{
	return kind == BLOBSTORE_BLOB ? "blobs" : "manifests";
}

static const char *kind_name(enum blobstore_kind kind)
{
	return kind == BLOBSTORE_BLOB ? "blob" : "manifest";
}

static enum rs_code path_fmt(char out[STORE_PATH_MAX], struct rs_err *err, const char *fmt, ...) RS_PRINTF(3, 4);

static enum rs_code path_fmt(char out[STORE_PATH_MAX], struct rs_err *err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, STORE_PATH_MAX, fmt, ap);
	va_end(ap);
	if (n < 0 || n >= STORE_PATH_MAX)
		return rs_err_set(err, RS_TOO_LARGE, "path under the data directory is longer than %d bytes",
		                  STORE_PATH_MAX - 1);
	return RS_OK;
}

/* <root>/<kind>/sha256/<2 hex>/<hex><suffix> for a valid hex string. */
static enum rs_code object_path(char out[STORE_PATH_MAX], const struct blobstore *bs, enum blobstore_kind kind,
                                const char *hex, const char *suffix, struct rs_err *err)
{
	return path_fmt(out, err, "%s/%s/sha256/%.2s/%s%s", bs->root, kind_dir(kind), hex, hex, suffix);
}

static enum rs_code object_dir(char out[STORE_PATH_MAX], const struct blobstore *bs, enum blobstore_kind kind,
                               const char *hex, struct rs_err *err)
{
	return path_fmt(out, err, "%s/%s/sha256/%.2s", bs->root, kind_dir(kind), hex);
}

/* mkdir -p; *out_created (may be NULL) tells whether the last component was
 * new, so the caller can fsync its parent. */
/* ---- in-memory index -------------------------------------------------- */

static size_t entry_hash(enum blobstore_kind kind, const char *hex, size_t nbuckets)
{
	/* Digests are uniformly distributed: their first 16 hex digits will do. */
	uint64_t h = 0;
	for (int i = 0; i < 16; i++) {
		char c = hex[i];
		h = (h << 4) | (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
	}
	h ^= (uint64_t)kind * 0x9e3779b97f4a7c15ull;
	return (size_t)(h & (nbuckets - 1));
}

static struct entry *index_find(struct blobstore *bs, enum blobstore_kind kind, const char *hex)
{
	for (struct entry *e = bs->buckets[entry_hash(kind, hex, bs->nbuckets)]; e; e = e->hnext)
		if (e->kind == kind && memcmp(e->hex, hex, DIGEST_HEX_LEN) == 0)
			return e;
	return NULL;
}

static void lru_unlink(struct blobstore *bs, struct entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		bs->lru_head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		bs->lru_tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_append(struct blobstore *bs, struct entry *e)
{
	e->prev = bs->lru_tail;
	e->next = NULL;
	if (bs->lru_tail)
		bs->lru_tail->next = e;
	else
		bs->lru_head = e;
	bs->lru_tail = e;
}

/* Grow the table when it gets dense. Failure to grow only costs speed. */
static void index_maybe_grow(struct blobstore *bs)
{
	if (bs->count < bs->nbuckets)
		return;
	size_t n = bs->nbuckets * 2;
	struct entry **nb = calloc(n, sizeof(*nb));
	if (!nb)
		return;
	for (size_t i = 0; i < bs->nbuckets; i++) {
		struct entry *e = bs->buckets[i];
		while (e) {
			struct entry *next = e->hnext;
			size_t h = entry_hash(e->kind, e->hex, n);
			e->hnext = nb[h];
			nb[h] = e;
			e = next;
		}
	}
	free(bs->buckets);
	bs->buckets = nb;
	bs->nbuckets = n;
}

/* Insert e (not yet in the index) as the most recently used; counts its size. */
static void index_insert(struct blobstore *bs, struct entry *e)
{
	index_maybe_grow(bs);
	size_t h = entry_hash(e->kind, e->hex, bs->nbuckets);
	e->hnext = bs->buckets[h];
	bs->buckets[h] = e;
	bs->count++;
	lru_append(bs, e);
	atomic_fetch_add(&bs->size, e->size);
}

/* Take e out of the index and the size count; the caller frees it. */
static void index_remove(struct blobstore *bs, struct entry *e)
{
	struct entry **pp = &bs->buckets[entry_hash(e->kind, e->hex, bs->nbuckets)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	bs->count--;
	lru_unlink(bs, e);
	atomic_fetch_sub(&bs->size, e->size);
}

static void index_touch(struct blobstore *bs, struct entry *e)
{
	lru_unlink(bs, e);
	lru_append(bs, e);
}

static struct entry *entry_new(enum blobstore_kind kind, const char *hex, uint64_t size)
{
	struct entry *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->kind = kind;
	e->size = size;
	memcpy(e->hex, hex, DIGEST_HEX_LEN);
	e->hex[DIGEST_HEX_LEN] = '\0';
	return e;
}

/* Record a use of an object found on disk with size bytes. Under bs->mu.
 * An object that is not indexed yet (put there behind our back) is adopted,
 * so accounting follows the disk. spare is used for that if given and then
 * set to NULL. */
static void index_note_use(struct blobstore *bs, enum blobstore_kind kind, const char *hex, uint64_t size,
                           struct entry **spare)
{
	struct entry *e = index_find(bs, kind, hex);
	if (e) {
		index_touch(bs, e);
		return;
	}
	if (spare && *spare) {
		e = *spare;
		*spare = NULL;
		e->size = size;
	} else {
		e = entry_new(kind, hex, size);
	}
	/* Without memory the object simply stays unindexed until the next
	 * open; it is still served. */
	if (e)
		index_insert(bs, e);
}

/* ---- scanning at open ------------------------------------------------- */

struct scanned {
	struct entry *e;
	struct timespec mtime;
};

struct scan_list {
	struct scanned *v;
	size_t n, cap;
};

static bool is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return s[n] == '\0';
}

static enum rs_code links_from_tags(struct blobstore *bs, struct rs_err *err);

static enum rs_code scan_kind(struct blobstore *bs, enum blobstore_kind kind, struct scan_list *sl,
                              struct rs_err *err)
{
	char top[STORE_PATH_MAX];
	enum rs_code rc = path_fmt(top, err, "%s/%s/sha256", bs->root, kind_dir(kind));
	if (rc != RS_OK)
		return rc;
	DIR *d = opendir(top);
	if (!d)
		return rs_err_set(err, RS_IO, "opendir %s: %s", top, strerror(errno));
	struct dirent *de;
	while (rc == RS_OK && (de = readdir(d)) != NULL) {
		if (!is_hex(de->d_name, 2))
			continue;
		int sfd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (sfd < 0)
			continue; /* not a directory: not ours */
		DIR *sd = fdopendir(sfd);
		if (!sd) {
			close(sfd);
			rc = rs_err_set(err, RS_IO, "opendir %s/%s: %s", top, de->d_name, strerror(errno));
			break;
		}
		struct dirent *fe;
		while ((fe = readdir(sd)) != NULL) {
			if (!is_hex(fe->d_name, DIGEST_HEX_LEN) || memcmp(fe->d_name, de->d_name, 2) != 0)
				continue;
			struct stat st;
			if (fstatat(dirfd(sd), fe->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
				continue;
			if (sl->n == sl->cap) {
				size_t cap = sl->cap ? sl->cap * 2 : 256;
				struct scanned *v = realloc(sl->v, cap * sizeof(*v));
				if (!v) {
					rc = rs_err_set(err, RS_NOMEM, "out of memory indexing %s", top);
					break;
				}
				sl->v = v;
				sl->cap = cap;
			}
			struct entry *e = entry_new(kind, fe->d_name, (uint64_t)st.st_size);
			if (!e) {
				rc = rs_err_set(err, RS_NOMEM, "out of memory indexing %s", top);
				break;
			}
			sl->v[sl->n].e = e;
			sl->v[sl->n].mtime = st.st_mtim;
			sl->n++;
		}
		closedir(sd);
	}
	closedir(d);
	return rc;
}

static int cmp_scanned(const void *a, const void *b)
{
	const struct scanned *x = a, *y = b;
	if (x->mtime.tv_sec != y->mtime.tv_sec)
		return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
	if (x->mtime.tv_nsec != y->mtime.tv_nsec)
		return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
	return 0;
}

/* Temp files are only ever valid for the process that made them. */
static enum rs_code clean_tmp(struct blobstore *bs, struct rs_err *err)
{
	char tmp[STORE_PATH_MAX];
	enum rs_code rc = path_fmt(tmp, err, "%s/tmp", bs->root);
	if (rc != RS_OK)
		return rc;
	DIR *d = opendir(tmp);
	if (!d)
		return rs_err_set(err, RS_IO, "opendir %s: %s", tmp, strerror(errno));
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || S_ISDIR(st.st_mode))
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) != 0 && errno != ENOENT) {
			rc = rs_err_set(err, RS_IO, "removing stale temp file %s/%s: %s", tmp, de->d_name,
			                strerror(errno));
			break;
		}
	}
	closedir(d);
	return rc;
}

/* ---- open / free ------------------------------------------------------ */

enum rs_code blobstore_open(struct blobstore **out, const char *data_dir, uint64_t max_bytes, struct rs_err *err)
{
	assert(out && data_dir);
	*out = NULL;
	/* Leave room for the longest path we build (tags: 255 + 255 + 128 + ...). */
	if (data_dir[0] == '\0' || strlen(data_dir) > STORE_PATH_MAX - 1024)
		return rs_err_set(err, RS_BAD_INPUT, "data directory '%.80s' is empty or longer than %d bytes",
		                  data_dir, STORE_PATH_MAX - 1024);
	struct blobstore *bs = calloc(1, sizeof(*bs));
	struct scan_list sl = {0};
	enum rs_code rc = RS_OK;
	if (!bs)
		return rs_err_set(err, RS_NOMEM, "out of memory opening the store");
	bs->max_bytes = max_bytes;
	atomic_init(&bs->size, 0);
	bs->nbuckets = 1024;
	bs->root = strdup(data_dir);
	bs->buckets = calloc(bs->nbuckets, sizeof(*bs->buckets));
	if (!bs->root || !bs->buckets) {
		free(bs->root);
		free(bs->buckets);
		free(bs);
		return rs_err_set(err, RS_NOMEM, "out of memory opening the store");
	}
	/* Strip trailing slashes so paths read well in messages. */
	for (size_t n = strlen(bs->root); n > 1 && bs->root[n - 1] == '/'; n--)
		bs->root[n - 1] = '\0';
	if (pthread_mutex_init(&bs->mu, NULL) != 0) {
		free(bs->root);
		free(bs->buckets);
		free(bs);
		return rs_err_set(err, RS_NOMEM, "cannot create the store mutex");
	}
	if (pthread_mutex_init(&bs->mc_mu, NULL) != 0) {
		pthread_mutex_destroy(&bs->mu);
		free(bs->root);
		free(bs->buckets);
		free(bs);
		return rs_err_set(err, RS_NOMEM, "cannot create the store mutex");
	}

	static const char *const subdirs[] = {"blobs/sha256", "manifests/sha256", "tags", "links", "tmp"};
	for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		char p[STORE_PATH_MAX];
		rc = path_fmt(p, err, "%s/%s", bs->root, subdirs[i]);
		if (rc == RS_OK)
			rc = fsutil_mkdir_p(p, NULL, err);
		if (rc != RS_OK)
			goto out;
	}
	rc = clean_tmp(bs, err);
	if (rc == RS_OK)
		rc = scan_kind(bs, BLOBSTORE_BLOB, &sl, err);
	if (rc == RS_OK)
		rc = scan_kind(bs, BLOBSTORE_MANIFEST, &sl, err);
	if (rc != RS_OK)
		goto out;
	if (sl.n > 0)
		qsort(sl.v, sl.n, sizeof(*sl.v), cmp_scanned);
	for (size_t i = 0; i < sl.n; i++) {
		index_insert(bs, sl.v[i].e);
		sl.v[i].e = NULL;
	}
	if ((rc = links_from_tags(bs, err)) != RS_OK)
		goto out;
	*out = bs;
	bs = NULL;
out:
	for (size_t i = 0; i < sl.n; i++)
		free(sl.v[i].e);
	free(sl.v);
	if (rc != RS_OK)
		rs_err_prefix(err, "opening store %s: ", data_dir);
	blobstore_free(bs);
	return rc;
}

void blobstore_free(struct blobstore *bs)
{
	if (!bs)
		return;
	struct entry *e = bs->lru_head;
	while (e) {
		struct entry *next = e->next;
		free(e);
		e = next;
	}
	pthread_mutex_destroy(&bs->mu);
	for (size_t i = 0; i < MCACHE_SLOTS; i++) {
		free(bs->mcache[i].body);
		free(bs->mcache[i].type);
	}
	for (size_t i = 0; i < TCACHE_SLOTS; i++)
		free(bs->tcache[i].path);
	pthread_mutex_destroy(&bs->mc_mu);
	free(bs->buckets);
	free(bs->root);
	free(bs);
}

uint64_t blobstore_size(const struct blobstore *bs)
{
	return atomic_load(&bs->size);
}

/* ---- reading objects -------------------------------------------------- */

/* Whether a use should set the mtime of an object whose stat is st. */
static bool mtime_stale(const struct stat *st)
{
	time_t now = time(NULL);
	return now < st->st_mtime || now - st->st_mtime >= TOUCH_EVERY_S;
}

/* Open a committed object; touch: mark it used (index and mtime). out_st
 * (may be NULL): its stat before the touch. */
static enum rs_code open_object(struct blobstore *bs, enum blobstore_kind kind, const char *digest, bool touch,
                                int *out_fd, uint64_t *out_size, struct stat *out_st, struct rs_err *err)
{
	*out_fd = -1;
	enum rs_code rc = digest_parse(digest, err);
	if (rc != RS_OK)
		return rc;
	const char *hex = digest_hex(digest);
	char path[STORE_PATH_MAX];
	rc = object_path(path, bs, kind, hex, "", err);
	if (rc != RS_OK)
		return rc;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return rs_err_set(err, RS_NOT_FOUND, "%s %s is not in the store", kind_name(kind), digest);
		return rs_err_set(err, RS_IO, "open %s: %s", path, strerror(errno));
	}
	struct stat st;
	if (fstat(fd, &st) != 0) {
		rc = rs_err_set(err, RS_IO, "fstat %s: %s", path, strerror(errno));
		close(fd);
		return rc;
	}
	if (touch) {
		pthread_mutex_lock(&bs->mu);
		index_note_use(bs, kind, hex, (uint64_t)st.st_size, NULL);
		pthread_mutex_unlock(&bs->mu);
		/* The mtime carries the LRU order across restarts; failing to set it
		 * only makes that order less exact. */
		if (mtime_stale(&st))
			(void)futimens(fd, NULL);
	}
	*out_fd = fd;
	if (out_size)
		*out_size = (uint64_t)st.st_size;
	if (out_st)
		*out_st = st;
	return RS_OK;
}

enum rs_code blobstore_open_object(struct blobstore *bs, enum blobstore_kind kind, const char *digest, int *out_fd,
                                   uint64_t *out_size, struct rs_err *err)
{
	return open_object(bs, kind, digest, true, out_fd, out_size, NULL, err);
}

bool blobstore_has(struct blobstore *bs, enum blobstore_kind kind, const char *digest)
{
	char path[STORE_PATH_MAX];
	if (!digest_valid(digest) || object_path(path, bs, kind, digest_hex(digest), "", NULL) != RS_OK)
		return false;
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---- writing ---------------------------------------------------------- */

/* Create tmp/<32 random hex> exclusively; fd is write-only. */
static enum rs_code temp_create(const struct blobstore *bs, char out_path[STORE_PATH_MAX], int *out_fd,
                                struct rs_err *err)
{
	for (int attempt = 0; attempt < 8; attempt++) {
		unsigned char rnd[16];
		size_t got = 0;
		while (got < sizeof(rnd)) {
			ssize_t n = getrandom(rnd + got, sizeof(rnd) - got, 0);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				return rs_err_set(err, RS_IO, "getrandom: %s", strerror(errno));
			}
			got += (size_t)n;
		}
		char name[2 * sizeof(rnd) + 1];
		static const char hx[] = "0123456789abcdef";
		for (size_t i = 0; i < sizeof(rnd); i++) {
			name[2 * i] = hx[rnd[i] >> 4];
			name[2 * i + 1] = hx[rnd[i] & 15];
		}
		name[2 * sizeof(rnd)] = '\0';
		enum rs_code rc = path_fmt(out_path, err, "%s/tmp/%s", bs->root, name);
		if (rc != RS_OK)
			return rc;
		int fd = open(out_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd >= 0) {
			*out_fd = fd;
			return RS_OK;
		}
		if (errno != EEXIST)
			return rs_err_set(err, RS_IO, "create %s: %s", out_path, strerror(errno));
	}
	return rs_err_set(err, RS_IO, "cannot create a unique temp file under %s/tmp", bs->root);
}

enum rs_code blobstore_writer_new(struct blobstore_writer **out, struct blobstore *bs, enum blobstore_kind kind,
                                  const char *expected_digest, int64_t expected_size, struct rs_err *err)
{
	*out = NULL;
	enum rs_code rc = digest_parse(expected_digest, err);
	if (rc != RS_OK)
		return rc;
	struct blobstore_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return rs_err_set(err, RS_NOMEM, "out of memory starting %s", expected_digest);
	w->fd = -1;
	w->bs = bs;
	w->kind = kind;
	w->expected_size = expected_size;
	memcpy(w->digest, expected_digest, DIGEST_STR_SIZE);
	w->dc = digest_new();
	if (!w->dc) {
		free(w);
		return rs_err_set(err, RS_NOMEM, "out of memory starting %s", expected_digest);
	}
	rc = temp_create(bs, w->path, &w->fd, err);
	if (rc != RS_OK) {
		digest_free(w->dc);
		free(w);
		return rc;
	}
	*out = w;
	return RS_OK;
}

enum rs_code blobstore_writer_write(struct blobstore_writer *w, const void *buf, size_t len, struct rs_err *err)
{
	if (w->failed) {
		if (err)
			*err = w->sticky;
		return w->sticky.code;
	}
	enum rs_code rc = RS_OK;
	uint64_t have = digest_count(w->dc);
	/* Refuse bytes beyond the expected size at once, so an upstream that
	 * sends too much cannot fill the disk. */
	if (w->expected_size >= 0 && (uint64_t)w->expected_size - have < len)
		rc = rs_err_set(&w->sticky, RS_DIGEST_MISMATCH, "expected %lld bytes, got %llu",
		                (long long)w->expected_size, (unsigned long long)(have + len));
	else
		rc = fsutil_write_all(w->fd, buf, len, w->path, &w->sticky);
	if (rc != RS_OK) {
		w->failed = true;
		if (err)
			*err = w->sticky;
		return rc;
	}
	digest_update(w->dc, buf, len);
	return RS_OK;
}

const char *blobstore_writer_path(const struct blobstore_writer *w)
{
	return w->path;
}

uint64_t blobstore_writer_size(const struct blobstore_writer *w)
{
	return digest_count(w->dc);
}

static void writer_release(struct blobstore_writer *w)
{
	if (w->fd >= 0)
		close(w->fd);
	digest_free(w->dc);
	free(w);
}

/* Create an object's fan-out directory; when it is new, fsync its parent so
 * the directory survives a crash along with what is renamed into it. */
static enum rs_code make_object_dir(const char *dir, struct rs_err *err)
{
	bool created = false;
	enum rs_code rc = fsutil_mkdir_p(dir, &created, err);
	if (rc != RS_OK || !created)
		return rc;
	char parent[STORE_PATH_MAX];
	fsutil_parent(parent, sizeof(parent), dir);
	return fsutil_fsync_dir(parent, err);
}

/* Rename a verified temp file into place and index it. If the object is
 * already there, the temp file is dropped: same digest, same bytes. */
static enum rs_code place_object(struct blobstore *bs, enum blobstore_kind kind, const char *hex, const char *temp,
                                 uint64_t size, struct rs_err *err)
{
	char dir[STORE_PATH_MAX], target[STORE_PATH_MAX];
	enum rs_code rc = object_dir(dir, bs, kind, hex, err);
	if (rc == RS_OK)
		rc = object_path(target, bs, kind, hex, "", err);
	if (rc == RS_OK)
		rc = make_object_dir(dir, err);
	if (rc != RS_OK)
		return rc;
	struct entry *spare = entry_new(kind, hex, size);
	if (!spare)
		return rs_err_set(err, RS_NOMEM, "out of memory indexing %s sha256:%s", kind_name(kind), hex);

	bool renamed = false;
	pthread_mutex_lock(&bs->mu);
	struct stat st;
	if (stat(target, &st) == 0) {
		index_note_use(bs, kind, hex, (uint64_t)st.st_size, &spare);
	} else if (rename(temp, target) == 0) {
		renamed = true;
		struct entry *old = index_find(bs, kind, hex);
		if (old) { /* indexed but gone from disk: replace it */
			index_remove(bs, old);
			free(old);
		}
		index_insert(bs, spare);
		spare = NULL;
	} else {
		int e = errno; /* EXDEV: blobstore_place_file's file is on another file system */
		rc = rs_err_set(err, e == EXDEV ? RS_UNSUPPORTED : RS_IO, "rename %s to %s: %s", temp, target, strerror(e));
	}
	pthread_mutex_unlock(&bs->mu);
	free(spare);
	if (rc != RS_OK)
		return rc;
	if (!renamed) {
		if (unlink(temp) != 0 && errno != ENOENT)
			return rs_err_set(err, RS_IO, "unlink %s: %s", temp, strerror(errno));
		return RS_OK;
	}
	return fsutil_fsync_dir(dir, err);
}

enum rs_code blobstore_writer_commit(struct blobstore_writer *w, struct rs_err *err)
{
	enum rs_code rc = RS_OK;
	char got[DIGEST_STR_SIZE];
	uint64_t size = digest_count(w->dc);
	if (w->failed) {
		if (err)
			*err = w->sticky;
		rc = w->sticky.code;
		goto out;
	}
	if (fsync(w->fd) != 0) {
		rc = rs_err_set(err, RS_IO, "fsync %s: %s", w->path, strerror(errno));
		goto out;
	}
	int fd = w->fd;
	w->fd = -1;
	if (close(fd) != 0) {
		rc = rs_err_set(err, RS_IO, "close %s: %s", w->path, strerror(errno));
		goto out;
	}
	if (w->expected_size >= 0 && (uint64_t)w->expected_size != size) {
		rc = rs_err_set(err, RS_DIGEST_MISMATCH, "expected %lld bytes, got %llu", (long long)w->expected_size,
		                (unsigned long long)size);
		goto out;
	}
	digest_final(w->dc, got);
	if (strcmp(got, w->digest) != 0) {
		rc = rs_err_set(err, RS_DIGEST_MISMATCH, "digest mismatch: expected %s, got %s", w->digest, got);
		goto out;
	}
	rc = place_object(w->bs, w->kind, digest_hex(w->digest), w->path, size, err);
out:
	/* After a successful place the temp name is gone (renamed or unlinked). */
	if (rc != RS_OK)
		(void)unlink(w->path); /* may already be gone; nothing else to do */
	writer_release(w);
	return rc;
}

enum rs_code blobstore_place_file(struct blobstore *bs, enum blobstore_kind kind, const char *digest, const char *path,
                                  uint64_t size, struct rs_err *err)
{
	enum rs_code rc = digest_parse(digest, err);
	return rc != RS_OK ? rc : place_object(bs, kind, digest_hex(digest), path, size, err);
}

void blobstore_writer_abort(struct blobstore_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0) {
		close(w->fd);
		w->fd = -1;
	}
	(void)unlink(w->path); /* cleanup: failure leaves a temp file the next open removes */
	writer_release(w);
}

/* ---- small files written atomically (sidecars, tags) ------------------ */

/* Sidecars and tag maps are replaced atomically through tmp/, which
 * blobstore_open sweeps, so a crash leaves no stray file beside them. */
static enum rs_code write_small_file(struct blobstore *bs, const char *target, const void *buf, size_t len,
                                     struct rs_err *err)
{
	char tmp[STORE_PATH_MAX];
	enum rs_code rc = path_fmt(tmp, err, "%s/tmp", bs->root);
	return rc != RS_OK ? rc : fsutil_write_atomic(target, tmp, buf, len, err);
}

/* Media types are one line of RFC 6838 characters (with parameters); no
 * quote, backslash or control character, so they need no escaping. */
static bool media_type_valid(const char *s)
{
	size_t n = 0;
	bool slash = false;
	for (; s[n]; n++) {
		unsigned char c = (unsigned char)s[n];
		if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
			return false;
		if (c == '/')
			slash = true;
	}
	return n > 0 && n <= MEDIA_TYPE_MAX && slash;
}

/* ---- manifests -------------------------------------------------------- */

/* Find the string value of a top-level key of a JSON object without a
 * parser: track nesting and strings, and look at strings at depth 1 that are
 * followed by ':'. Enough to sniff mediaType and the distinguishing keys. */
struct sniff {
	char media_type[MEDIA_TYPE_MAX + 1];
	bool manifests, fs_layers, signatures;
};

static size_t skip_ws(const char *buf, size_t len, size_t i)
{
	while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r'))
		i++;
	return i;
}

/* Index of the closing quote of the string opening at buf[i], or len. */
static size_t string_end(const char *buf, size_t len, size_t i)
{
	for (i++; i < len; i++) {
		if (buf[i] == '\\')
			i++;
		else if (buf[i] == '"')
			return i;
	}
	return len;
}

static void sniff_keys(const char *buf, size_t len, struct sniff *s)
{
	int depth = 0;
	for (size_t i = 0; i < len; i++) {
		char c = buf[i];
		if (c == '"') {
			size_t j = string_end(buf, len, i);
			if (j >= len)
				return;
			size_t k = skip_ws(buf, len, j + 1);
			if (depth == 1 && k < len && buf[k] == ':') {
				const char *key = buf + i + 1;
				size_t klen = j - i - 1;
#define KEY_IS(lit) (klen == sizeof(lit) - 1 && memcmp(key, lit, klen) == 0)
				if (KEY_IS("mediaType")) {
					size_t v = skip_ws(buf, len, k + 1);
					if (v < len && buf[v] == '"') {
						size_t ve = string_end(buf, len, v);
						size_t vlen = ve - v - 1;
						if (ve < len && vlen <= MEDIA_TYPE_MAX && !memchr(buf + v + 1, '\\', vlen)) {
							memcpy(s->media_type, buf + v + 1, vlen);
							s->media_type[vlen] = '\0';
							if (!media_type_valid(s->media_type))
								s->media_type[0] = '\0';
						}
					}
				} else if (KEY_IS("manifests")) {
					s->manifests = true;
				} else if (KEY_IS("fsLayers")) {
					s->fs_layers = true;
				} else if (KEY_IS("signatures")) {
					s->signatures = true;
				}
#undef KEY_IS
			}
			i = j;
		} else if (c == '{' || c == '[') {
			depth++;
		} else if (c == '}' || c == ']') {
			depth--;
		}
	}
}

static const char *sniff_media_type(const char *buf, size_t len, struct sniff *s)
{
	memset(s, 0, sizeof(*s));
	sniff_keys(buf, len, s);
	if (s->media_type[0])
		return s->media_type;
	if (s->manifests)
		return IMAGE_MT_OCI_INDEX;
	if (s->fs_layers)
		return s->signatures ? IMAGE_MT_DOCKER_V1_SIGNED : IMAGE_MT_DOCKER_V1;
	return IMAGE_MT_OCI_MANIFEST;
}

void blobstore_sniff_media_type(char out[BLOBSTORE_MEDIA_TYPE_SIZE], const char *buf, size_t len)
{
	struct sniff s;
	snprintf(out, BLOBSTORE_MEDIA_TYPE_SIZE, "%s", sniff_media_type(buf, len, &s));
}

bool blobstore_media_type_valid(const char *s)
{
	return media_type_valid(s);
}

enum rs_code blobstore_put_manifest(struct blobstore *bs, const char *digest, const char *media_type,
                                    const void *buf, size_t len, struct rs_err *err)
{
	enum rs_code rc = digest_parse(digest, err);
	if (rc != RS_OK)
		return rc;
	if (!media_type || !media_type_valid(media_type))
		return rs_err_set(err, RS_BAD_INPUT, "invalid media type '%.100s' for manifest %s",
		                  media_type ? media_type : "(null)", digest);
	char got[DIGEST_STR_SIZE];
	digest_buffer(got, buf, len);
	if (strcmp(got, digest) != 0)
		return rs_err_set(err, RS_DIGEST_MISMATCH, "digest mismatch: expected %s, got %s", digest, got);

	const char *hex = digest_hex(digest);
	char dir[STORE_PATH_MAX], sidecar[STORE_PATH_MAX];
	rc = object_dir(dir, bs, BLOBSTORE_MANIFEST, hex, err);
	if (rc == RS_OK)
		rc = object_path(sidecar, bs, BLOBSTORE_MANIFEST, hex, ".type", err);
	if (rc == RS_OK)
		rc = make_object_dir(dir, err);
	if (rc != RS_OK)
		return rc;
	/* The sidecar goes first, so committed bytes always have their type. */
	char line[MEDIA_TYPE_MAX + 2];
	int n = snprintf(line, sizeof(line), "%s\n", media_type);
	rc = write_small_file(bs, sidecar, line, (size_t)n, err);
	mcache_forget(bs, hex); /* a cached type may be the old one */
	if (rc != RS_OK)
		return rc;
	if (blobstore_has(bs, BLOBSTORE_MANIFEST, digest))
		return RS_OK;

	struct blobstore_writer *w = NULL;
	rc = blobstore_writer_new(&w, bs, BLOBSTORE_MANIFEST, digest, (int64_t)len, err);
	if (rc != RS_OK)
		return rc;
	rc = blobstore_writer_write(w, buf, len, err);
	if (rc != RS_OK) {
		blobstore_writer_abort(w);
		return rc;
	}
	return blobstore_writer_commit(w, err);
}

/* Remove an object that failed verification, with its accounting. */
static void drop_object(struct blobstore *bs, enum blobstore_kind kind, const char *hex)
{
	char path[STORE_PATH_MAX], sidecar[STORE_PATH_MAX];
	if (object_path(path, bs, kind, hex, "", NULL) != RS_OK ||
	    object_path(sidecar, bs, kind, hex, ".type", NULL) != RS_OK)
		return;
	if (kind == BLOBSTORE_MANIFEST)
		mcache_forget(bs, hex);
	pthread_mutex_lock(&bs->mu);
	struct entry *e = index_find(bs, kind, hex);
	if (e) {
		index_remove(bs, e);
		free(e);
	}
	/* Best effort: if these fail, the next verification fails again. */
	(void)unlink(path);
	if (kind == BLOBSTORE_MANIFEST)
		(void)unlink(sidecar);
	pthread_mutex_unlock(&bs->mu);
}

void blobstore_remove(struct blobstore *bs, enum blobstore_kind kind, const char *digest)
{
	if (digest_valid(digest))
		drop_object(bs, kind, digest_hex(digest));
}

/* ---- garbage collection ---------------------------------------------- */

enum rs_code blobstore_objects(struct blobstore *bs, enum blobstore_kind kind, char (**out)[DIGEST_STR_SIZE],
                               size_t *out_n, struct rs_err *err)
{
	*out = NULL;
	*out_n = 0;
	pthread_mutex_lock(&bs->mu);
	size_t n = 0;
	char(*v)[DIGEST_STR_SIZE] = bs->count ? malloc(bs->count * sizeof(*v)) : NULL;
	if (bs->count && !v) {
		pthread_mutex_unlock(&bs->mu);
		return rs_err_set(err, RS_NOMEM, "out of memory listing %zu objects", bs->count);
	}
	for (size_t i = 0; v && i < bs->nbuckets; i++)
		for (struct entry *e = bs->buckets[i]; e && n < bs->count; e = e->hnext)
			if (e->kind == kind)
				snprintf(v[n++], DIGEST_STR_SIZE, "sha256:%s", e->hex);
	pthread_mutex_unlock(&bs->mu);
	*out = v;
	*out_n = n;
	return RS_OK;
}

bool blobstore_touch(struct blobstore *bs, enum blobstore_kind kind, const char *digest)
{
	char path[STORE_PATH_MAX];
	if (!digest_valid(digest) || object_path(path, bs, kind, digest_hex(digest), "", NULL) != RS_OK)
		return false;
	/* under the lock: blobstore_remove_idle's check and unlink see the
	 * new time or the object is gone already */
	pthread_mutex_lock(&bs->mu);
	bool ok = utimensat(AT_FDCWD, path, NULL, 0) == 0;
	pthread_mutex_unlock(&bs->mu);
	return ok;
}

bool blobstore_remove_idle(struct blobstore *bs, enum blobstore_kind kind, const char *digest, time_t idle_since,
                           time_t now, uint64_t *out_size)
{
	char path[STORE_PATH_MAX], sidecar[STORE_PATH_MAX];
	if (!digest_valid(digest) || object_path(path, bs, kind, digest_hex(digest), "", NULL) != RS_OK ||
	    object_path(sidecar, bs, kind, digest_hex(digest), ".type", NULL) != RS_OK)
		return false;
	const char *hex = digest_hex(digest);
	bool removed = false;
	struct stat st;
	pthread_mutex_lock(&bs->mu);
	struct entry *e = index_find(bs, kind, hex);
	if ((!e || e->pinned_until <= now) && stat(path, &st) == 0 && st.st_mtime <= idle_since &&
	    unlink(path) == 0) {
		removed = true;
		if (kind == BLOBSTORE_MANIFEST)
			(void)unlink(sidecar); /* a stray sidecar is harmless: rewritten on the next put */
		if (e) {
			index_remove(bs, e);
			free(e);
		}
		if (out_size)
			*out_size = (uint64_t)st.st_size;
	}
	pthread_mutex_unlock(&bs->mu);
	return removed;
}

/* ---- the verified-manifest cache (see the top of the file) ---- */

static struct mcache_entry *mcache_slot(struct blobstore *bs, const char *hex)
{
	unsigned v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 4 | (unsigned)(hex[i] <= '9' ? hex[i] - '0' : hex[i] - 'a' + 10);
	return &bs->mcache[v % MCACHE_SLOTS];
}

static void file_id_of(struct file_id *id, const struct stat *st)
{
	id->dev = st->st_dev;
	id->ino = st->st_ino;
	id->size = st->st_size;
	id->ctim = st->st_ctim;
}

static bool file_id_is(const struct file_id *id, const struct stat *st)
{
	return id->dev == st->st_dev && id->ino == st->st_ino && id->size == st->st_size &&
	       id->ctim.tv_sec == st->st_ctim.tv_sec && id->ctim.tv_nsec == st->st_ctim.tv_nsec;
}

static bool mcache_same(const struct mcache_entry *e, const char *hex, const struct stat *st)
{
	return strcmp(e->hex, hex) == 0 && file_id_is(&e->id, st);
}

static void mcache_clear(struct mcache_entry *e)
{
	free(e->body);
	free(e->type);
	memset(e, 0, sizeof(*e));
}

/* Keep verified bytes of manifest hex whose file had the stat st. */
static void mcache_put(struct blobstore *bs, const char *hex, const struct stat *st, const char *buf, size_t len,
                       const char *type)
{
	if (len > MCACHE_ENTRY_MAX)
		return;
	char *b = malloc(len + 1), *t = strdup(type);
	if (!b || !t) {
		free(b);
		free(t);
		return;
	}
	memcpy(b, buf, len);
	b[len] = '\0';
	pthread_mutex_lock(&bs->mc_mu);
	struct mcache_entry *e = mcache_slot(bs, hex);
	mcache_clear(e);
	memcpy(e->hex, hex, DIGEST_HEX_LEN);
	file_id_of(&e->id, st);
	e->body = b;
	e->len = len;
	e->type = t;
	pthread_mutex_unlock(&bs->mc_mu);
}

static void mcache_forget(struct blobstore *bs, const char *hex)
{
	pthread_mutex_lock(&bs->mc_mu);
	struct mcache_entry *e = mcache_slot(bs, hex);
	if (strcmp(e->hex, hex) == 0)
		mcache_clear(e);
	pthread_mutex_unlock(&bs->mc_mu);
}

/* A manifest read answered from the cache: true when the file still has the
 * identity its verified bytes were kept with (copies in *out_buf and
 * *out_type, the use noted as open_object notes it). false: read the file
 * (which also reports a missing, unreadable or too large one). */
static bool mcache_get(struct blobstore *bs, const char *digest, size_t max_bytes, bool touch, char **out_buf,
                       size_t *out_len, char **out_type)
{
	char path[STORE_PATH_MAX];
	struct stat st;
	if (!digest_valid(digest) || object_path(path, bs, BLOBSTORE_MANIFEST, digest_hex(digest), "", NULL) != RS_OK ||
	    stat(path, &st) != 0 || (uint64_t)st.st_size > max_bytes)
		return false;
	const char *hex = digest_hex(digest);
	char *buf = NULL, *type = NULL;
	size_t len = 0;
	pthread_mutex_lock(&bs->mc_mu);
	const struct mcache_entry *e = mcache_slot(bs, hex);
	if (mcache_same(e, hex, &st) && (buf = malloc(e->len + 1)) && (type = strdup(e->type))) {
		memcpy(buf, e->body, e->len + 1);
		len = e->len;
	}
	pthread_mutex_unlock(&bs->mc_mu);
	if (!type) {
		free(buf);
		return false;
	}
	if (touch) {
		pthread_mutex_lock(&bs->mu);
		index_note_use(bs, BLOBSTORE_MANIFEST, hex, (uint64_t)st.st_size, NULL);
		pthread_mutex_unlock(&bs->mu);
		if (mtime_stale(&st)) /* the entry no longer matches (ctime); the next read refills it */
			(void)utimensat(AT_FDCWD, path, NULL, 0);
	}
	*out_buf = buf;
	*out_len = len;
	*out_type = type;
	return true;
}

static enum rs_code get_manifest(struct blobstore *bs, const char *digest, size_t max_bytes, bool touch, char **out_buf,
                                 size_t *out_len, char **out_type, struct rs_err *err)
{
	*out_buf = NULL;
	*out_type = NULL;
	*out_len = 0;
	if (mcache_get(bs, digest, max_bytes, touch, out_buf, out_len, out_type))
		return RS_OK;
	int fd = -1;
	uint64_t size = 0;
	char *buf = NULL;
	char *type = NULL;
	struct stat st;
	enum rs_code rc = open_object(bs, BLOBSTORE_MANIFEST, digest, touch, &fd, &size, &st, err);
	if (rc != RS_OK)
		return rc;
	const char *hex = digest_hex(digest);
	if (size > max_bytes) {
		rc = rs_err_set(err, RS_TOO_LARGE, "manifest %s is %llu bytes, limit is %zu (limits.manifest_max_bytes)",
		                digest, (unsigned long long)size, max_bytes);
		goto out;
	}
	buf = malloc((size_t)size + 1);
	if (!buf) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory reading manifest %s (%llu bytes)", digest,
		                (unsigned long long)size);
		goto out;
	}
	size_t len = 0;
	while (len < size) {
		ssize_t n = pread(fd, buf + len, (size_t)size - len, (off_t)len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = rs_err_set(err, RS_IO, "read manifest %s: %s", digest, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	char got[DIGEST_STR_SIZE];
	digest_buffer(got, buf, len);
	if (strcmp(got, digest) != 0) {
		drop_object(bs, BLOBSTORE_MANIFEST, hex);
		rc = rs_err_set(err, RS_NOT_FOUND, "manifest %s in the store hashes to %s; removed", digest, got);
		goto out;
	}

	char sidecar[STORE_PATH_MAX], line[MEDIA_TYPE_MAX + 2];
	size_t llen = 0;
	struct rs_err serr;
	const char *mt = NULL;
	if (object_path(sidecar, bs, BLOBSTORE_MANIFEST, hex, ".type", NULL) == RS_OK &&
	    fsutil_read_into(line, sizeof(line), &llen, sidecar, &serr) == RS_OK) {
		while (llen > 0 && (line[llen - 1] == '\n' || line[llen - 1] == '\r'))
			line[--llen] = '\0';
		if (media_type_valid(line))
			mt = line;
	}
	struct sniff s;
	if (!mt)
		mt = sniff_media_type(buf, len, &s);
	type = strdup(mt);
	if (!type) {
		rc = rs_err_set(err, RS_NOMEM, "out of memory reading manifest %s", digest);
		goto out;
	}
	/* The stat is from before open_object's touch; after a touch the next
	 * read refills the entry. */
	if (len == size && !(touch && mtime_stale(&st)))
		mcache_put(bs, hex, &st, buf, len, type);
	*out_buf = buf;
	*out_len = len;
	*out_type = type;
	buf = NULL;
	type = NULL;
out:
	free(type);
	free(buf);
	close(fd);
	return rc;
}

enum rs_code blobstore_get_manifest(struct blobstore *bs, const char *digest, size_t max_bytes, char **out_buf,
                                    size_t *out_len, char **out_type, struct rs_err *err)
{
	return get_manifest(bs, digest, max_bytes, true, out_buf, out_len, out_type, err);
}

enum rs_code blobstore_peek_manifest(struct blobstore *bs, const char *digest, size_t max_bytes, char **out_buf,
                                     size_t *out_len, char **out_type, struct rs_err *err)
{
	return get_manifest(bs, digest, max_bytes, false, out_buf, out_len, out_type, err);
}

/* ---- tags ------------------------------------------------------------- */

/* host[:port] characters; one path component that is never "." or "..". */
static bool upstream_valid(const char *up)
{
	size_t n = 0;
	for (; up[n]; n++) {
		char c = up[n];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		          c == '-' || c == '_' || c == ':';
		if (!ok)
			return false;
	}
	if (n == 0 || n > UPSTREAM_NAME_MAX)
		return false;
	char c0 = up[0];
	return (c0 >= 'a' && c0 <= 'z') || (c0 >= 'A' && c0 <= 'Z') || (c0 >= '0' && c0 <= '9');
}

static enum rs_code tag_path(char out[STORE_PATH_MAX], const struct blobstore *bs, const char *upstream, const char *repo,
                             const char *tag, struct rs_err *err)
{
	if (!upstream || !upstream_valid(upstream))
		return rs_err_set(err, RS_BAD_INPUT, "invalid upstream name '%.100s' (expected host[:port])",
		                  upstream ? upstream : "(null)");
	if (!repo || !refname_repo_valid(repo))
		return rs_err_set(err, RS_BAD_INPUT,
		                  "invalid repository name '%.100s' (distribution name grammar, at most %d bytes)",
		                  repo ? repo : "(null)", RS_LIMIT_NAME_MAX);
	if (!tag || !refname_tag_valid(tag))
		return rs_err_set(err, RS_BAD_INPUT, "invalid tag '%.140s' (expected [A-Za-z0-9_][A-Za-z0-9._-]{0,%d})",
		                  tag ? tag : "(null)", RS_LIMIT_TAG_MAX - 1);
	return path_fmt(out, err, "%s/tags/%s/%s/_tags/%s.json", bs->root, upstream, repo, tag);
}

/* Parse exactly what blobstore_put_tag writes. */
static bool parse_tag_file(const char *s, struct blobstore_tag *out)
{
	static const char k_digest[] = "{\"digest\":\"";
	static const char k_type[] = "\",\"media_type\":\"";
	static const char k_fetched[] = "\",\"fetched\":";
	if (strncmp(s, k_digest, sizeof(k_digest) - 1) != 0)
		return false;
	s += sizeof(k_digest) - 1;
	const char *q = strchr(s, '"');
	if (!q || (size_t)(q - s) != DIGEST_STR_SIZE - 1)
		return false;
	memcpy(out->digest, s, DIGEST_STR_SIZE - 1);
	out->digest[DIGEST_STR_SIZE - 1] = '\0';
	if (!digest_valid(out->digest))
		return false;
	s = q;
	if (strncmp(s, k_type, sizeof(k_type) - 1) != 0)
		return false;
	s += sizeof(k_type) - 1;
	q = strchr(s, '"');
	if (!q || (size_t)(q - s) > MEDIA_TYPE_MAX)
		return false;
	memcpy(out->media_type, s, (size_t)(q - s));
	out->media_type[q - s] = '\0';
	if (!media_type_valid(out->media_type))
		return false;
	s = q;
	if (strncmp(s, k_fetched, sizeof(k_fetched) - 1) != 0)
		return false;
	s += sizeof(k_fetched) - 1;
	bool neg = false;
	if (*s == '-') {
		neg = true;
		s++;
	}
	if (*s < '0' || *s > '9')
		return false;
	int64_t v = 0;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (v > (INT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (*s - '0');
	}
	out->fetched = (time_t)(neg ? -v : v);
	return strcmp(s, "}\n") == 0 || strcmp(s, "}") == 0;
}

bool blobstore_tag_parse(const char *text, struct blobstore_tag *out)
{
	return parse_tag_file(text, out);
}

enum rs_code blobstore_tag_format(char *buf, size_t cap, const struct blobstore_tag *t, struct rs_err *err)
{
	enum rs_code rc = digest_parse(t->digest, err);
	if (rc != RS_OK)
		return rc;
	if (!media_type_valid(t->media_type))
		return rs_err_set(err, RS_BAD_INPUT, "invalid media type '%.100s' for a tag", t->media_type);
	int n = snprintf(buf, cap, "{\"digest\":\"%s\",\"media_type\":\"%s\",\"fetched\":%lld}\n", t->digest,
	                 t->media_type, (long long)t->fetched);
	return n > 0 && (size_t)n < cap ? RS_OK : rs_err_set(err, RS_TOO_LARGE, "tag record over %zu bytes", cap);
}

static struct tcache_entry *tcache_slot(struct blobstore *bs, const char *path)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (const unsigned char *c = (const unsigned char *)path; *c; c++)
		h = (h ^ *c) * 16777619u;
	return &bs->tcache[h % TCACHE_SLOTS];
}

/* The tag map at path as read when the file had the identity of st, if kept. */
static bool tcache_get(struct blobstore *bs, const char *path, const struct stat *st, struct blobstore_tag *out)
{
	pthread_mutex_lock(&bs->mc_mu);
	const struct tcache_entry *e = tcache_slot(bs, path);
	bool hit = e->path && strcmp(e->path, path) == 0 && file_id_is(&e->id, st);
	if (hit)
		*out = e->tag;
	pthread_mutex_unlock(&bs->mc_mu);
	return hit;
}

/* Keep t, read from path after a stat gave st (a file replaced in between is
 * kept with the older identity: the next read does not match and reads it). */
static void tcache_put(struct blobstore *bs, const char *path, const struct stat *st, const struct blobstore_tag *t)
{
	char *p = strdup(path);
	if (!p)
		return;
	pthread_mutex_lock(&bs->mc_mu);
	struct tcache_entry *e = tcache_slot(bs, path);
	free(e->path);
	e->path = p;
	file_id_of(&e->id, st);
	e->tag = *t;
	pthread_mutex_unlock(&bs->mc_mu);
}

/* Drop what is kept of path (this process replaces or removes it): even a
 * rename within one tick of the clock that reuses an inode is then seen. */
static void tcache_forget(struct blobstore *bs, const char *path)
{
	pthread_mutex_lock(&bs->mc_mu);
	struct tcache_entry *e = tcache_slot(bs, path);
	if (e->path && strcmp(e->path, path) == 0) {
		free(e->path);
		memset(e, 0, sizeof(*e));
	}
	pthread_mutex_unlock(&bs->mc_mu);
}

enum rs_code blobstore_get_tag(struct blobstore *bs, const char *upstream, const char *repo, const char *tag,
                               struct blobstore_tag *out, struct rs_err *err)
{
	char path[STORE_PATH_MAX], buf[TAG_FILE_MAX + 1];
	size_t len = 0;
	enum rs_code rc = tag_path(path, bs, upstream, repo, tag, err);
	if (rc != RS_OK)
		return rc;
	/* Served from the cache while the file is the one read (see the top). */
	struct stat st;
	bool stated = stat(path, &st) == 0;
	if (!stated && errno == ENOENT)
		return rs_err_set(err, RS_NOT_FOUND, "no cached tag %s:%s at %s", repo, tag, upstream);
	if (stated && tcache_get(bs, path, &st, out))
		return RS_OK;
	rc = fsutil_read_into(buf, sizeof(buf), &len, path, err);
	if (rc == RS_NOT_FOUND)
		return rs_err_set(err, RS_NOT_FOUND, "no cached tag %s:%s at %s", repo, tag, upstream);
	if (rc == RS_TOO_LARGE || rc == RS_BAD_INPUT || (rc == RS_OK && (memchr(buf, '\0', len) || !parse_tag_file(buf, out))))
		return rs_err_set(err, RS_NOT_FOUND, "tag file %s is corrupt; ignored", path);
	if (rc == RS_OK && stated)
		tcache_put(bs, path, &st, out);
	return rc;
}

enum rs_code blobstore_put_tag(struct blobstore *bs, const char *upstream, const char *repo, const char *tag,
                               const struct blobstore_tag *t, struct rs_err *err)
{
	char path[STORE_PATH_MAX], dir[STORE_PATH_MAX], buf[TAG_FILE_MAX];
	enum rs_code rc = tag_path(path, bs, upstream, repo, tag, err);
	if (rc != RS_OK)
		return rc;
	rc = digest_parse(t->digest, err);
	if (rc != RS_OK)
		return rc;
	if (!media_type_valid(t->media_type))
		return rs_err_set(err, RS_BAD_INPUT, "invalid media type '%.100s' for tag %s:%s", t->media_type, repo,
		                  tag);
	int n = snprintf(buf, sizeof(buf), "{\"digest\":\"%s\",\"media_type\":\"%s\",\"fetched\":%lld}\n", t->digest,
	                 t->media_type, (long long)t->fetched);
	assert(n > 0 && (size_t)n < sizeof(buf));
	fsutil_parent(dir, STORE_PATH_MAX, path);
	rc = fsutil_mkdir_p(dir, NULL, err);
	if (rc != RS_OK)
		return rc;
	rc = write_small_file(bs, path, buf, (size_t)n, err);
	tcache_forget(bs, path);
	return rc;
}

enum rs_code blobstore_remove_tag(struct blobstore *bs, const char *upstream, const char *repo, const char *tag,
                                  struct rs_err *err)
{
	char path[STORE_PATH_MAX];
	enum rs_code rc = tag_path(path, bs, upstream, repo, tag, err);
	if (rc != RS_OK)
		return rc;
	tcache_forget(bs, path);
	if (unlink(path) != 0)
		return errno == ENOENT ? rs_err_set(err, RS_NOT_FOUND, "no tag %s:%s", repo, tag)
		                       : rs_err_set(err, RS_IO, "unlink %s: %s", path, strerror(errno));
	char dir[STORE_PATH_MAX];
	fsutil_parent(dir, STORE_PATH_MAX, path);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		(void)fsync(dfd); /* the removal is durable where the file system allows it */
		close(dfd);
	}
	return RS_OK;
}

/* ---- eviction --------------------------------------------------------- */

bool blobstore_pin(struct blobstore *bs, enum blobstore_kind kind, const char *digest, time_t until)
{
	if (!digest_valid(digest))
		return false;
	pthread_mutex_lock(&bs->mu);
	struct entry *e = index_find(bs, kind, digest_hex(digest));
	if (e) {
		if (e->pinned_until < until)
			e->pinned_until = until;
		index_touch(bs, e);
	}
	pthread_mutex_unlock(&bs->mu);
	return e != NULL;
}

/* One hold of the store lock removes at most EVICT_BATCH_OBJECTS objects,
 * for at most this long: a pass over tens of thousands of objects must not
 * keep a cache hit (blobstore_open_object, a commit) waiting for the whole
 * pass. */
#define EVICT_BATCH_NS (2 * 1000000L)
/* Pause between two holds, so that a thread waiting for the lock gets it
 * (a mutex is not fair: the evicting thread would otherwise take it back at
 * once). 64 objects per 50 us of pause costs a 50,000-object pass ~40 ms. */
#define EVICT_PAUSE_NS 50000L

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Evict the least recently used object, under bs->mu. Returns false when it
 * is pinned or could not be removed (it goes to the back of the list; *rc
 * and err keep the first failure). */
static bool evict_entry(struct blobstore *bs, struct entry *e, uint64_t *freed, enum rs_code *rc,
                        struct rs_err *err)
{
	char path[STORE_PATH_MAX], sidecar[STORE_PATH_MAX];
	struct rs_err one;
	enum rs_code prc = object_path(path, bs, e->kind, e->hex, "", &one);
	if (prc == RS_OK)
		prc = object_path(sidecar, bs, e->kind, e->hex, ".type", &one);
	/* Unlinking removes the name only: readers that opened the object
	 * (blobstore_open_object, inflight fetches) keep their inode until
	 * they close it. That is how eviction never takes bytes away from a
	 * request in flight. Temp files are not indexed, so never seen. */
	if (prc == RS_OK && unlink(path) != 0 && errno != ENOENT)
		prc = rs_err_set(&one, RS_IO, "evicting %s: unlink %s: %s", kind_name(e->kind), path, strerror(errno));
	if (prc != RS_OK) {
		if (*rc == RS_OK) { /* first message wins */
			*rc = prc;
			if (err)
				*err = one;
		}
		index_touch(bs, e);
		return false;
	}
	if (e->kind == BLOBSTORE_MANIFEST)
		(void)unlink(sidecar); /* a stray sidecar is harmless: rewritten on the next put */
	*freed += e->size;
	if (bs->evicted_n < EVICT_BATCH_OBJECTS) { /* for the hook, called once the lock is released */
		bs->evicted[bs->evicted_n].kind = e->kind;
		memcpy(bs->evicted[bs->evicted_n].hex, e->hex, sizeof(e->hex));
		bs->evicted_n++;
	}
	index_remove(bs, e);
	free(e);
	return true;
}

static bool evict_one(struct blobstore *bs, time_t now, uint64_t *freed, enum rs_code *rc, struct rs_err *err)
{
	struct entry *e = bs->lru_head;
	if (e->pinned_until > now) { /* pinned: passed over, tried again next pass */
		index_touch(bs, e);
		return false;
	}
	return evict_entry(bs, e, freed, rc, err);
}

/* Tell the hook what the batch just evicted; called without the lock, by
 * the one thread that evicts (evict_mu). */
static void run_hook(struct blobstore *bs, struct evicted *batch, unsigned n)
{
	char digest[DIGEST_STR_SIZE];
	for (unsigned i = 0; bs->hook && i < n; i++) {
		snprintf(digest, sizeof(digest), "sha256:%s", batch[i].hex);
		bs->hook(bs->hook_ctx, batch[i].kind, digest);
	}
}

void blobstore_set_evict_hook(struct blobstore *bs, blobstore_evict_hook fn, void *ctx)
{
	pthread_mutex_lock(&bs->mu);
	bs->hook = fn;
	bs->hook_ctx = ctx;
	pthread_mutex_unlock(&bs->mu);
}

bool blobstore_evict_object(struct blobstore *bs, enum blobstore_kind kind, const char *digest, uint64_t *freed)
{
	if (!digest_valid(digest))
		return false;
	pthread_mutex_lock(&bs->mu);
	struct entry *e = index_find(bs, kind, digest_hex(digest));
	bool gone = false;
	if (e && e->pinned_until <= time(NULL)) {
		enum rs_code rc = RS_OK;
		unsigned before = bs->evicted_n;
		gone = evict_entry(bs, e, freed, &rc, NULL);
		bs->evicted_n = before; /* the hook is for passes only */
	}
	pthread_mutex_unlock(&bs->mu);
	return gone;
}

enum rs_code blobstore_evict(struct blobstore *bs, uint64_t *out_freed, struct rs_err *err)
{
	uint64_t freed = 0;
	enum rs_code rc = RS_OK;
	if (out_freed)
		*out_freed = 0;
	if (bs->max_bytes == 0)
		return RS_OK;
	pthread_mutex_lock(&bs->mu);
	/* Each object is tried at most once: one that cannot be removed goes to
	 * the back of the list, so the pass ends even when unlink keeps failing.
	 * Objects used or added between two batches only shorten the pass. */
	size_t budget = bs->count;
	time_t now = time(NULL);
	for (;;) {
		int64_t t0 = mono_ns();
		unsigned n = 0;
		bs->evicted_n = 0;
		while (budget > 0 && atomic_load(&bs->size) > bs->max_bytes && bs->lru_head && n < EVICT_BATCH_OBJECTS &&
		       mono_ns() - t0 < EVICT_BATCH_NS) {
			budget--;
			n++;
			(void)evict_one(bs, now, &freed, &rc, err); /* a failure is kept in rc and err */
		}
		bool more = budget > 0 && atomic_load(&bs->size) > bs->max_bytes && bs->lru_head;
		struct evicted batch[EVICT_BATCH_OBJECTS];
		unsigned nb = bs->evicted_n;
		memcpy(batch, bs->evicted, nb * sizeof(batch[0]));
		bs->evicted_n = 0;
		pthread_mutex_unlock(&bs->mu);
		run_hook(bs, batch, nb); /* may evict more (blobstore_evict_object): its own locking */
		if (!more)
			break;
		struct timespec pause = {0, EVICT_PAUSE_NS};
		(void)nanosleep(&pause, NULL); /* EINTR only shortens the pause */
		pthread_mutex_lock(&bs->mu);
	}
	if (out_freed)
		*out_freed = freed;
	return rc;
}

/* ---- repository links ------------------------------------------------- */

static enum rs_code link_path(char out[STORE_PATH_MAX], const struct blobstore *bs, const char *ns, const char *repo,
                              enum blobstore_kind kind, const char *digest, struct rs_err *err)
{
	if (!ns || !upstream_valid(ns))
		return rs_err_set(err, RS_BAD_INPUT, "invalid link namespace '%.100s'", ns ? ns : "(null)");
	if (!repo || !refname_repo_valid(repo))
		return rs_err_set(err, RS_BAD_INPUT,
		                  "invalid repository name '%.100s' (distribution name grammar, at most %d bytes)",
		                  repo ? repo : "(null)", RS_LIMIT_NAME_MAX);
	enum rs_code rc = digest_parse(digest, err);
	if (rc != RS_OK)
		return rc;
	return path_fmt(out, err, "%s/links/%s/%s/_links/%s/%s", bs->root, ns, repo, kind_dir(kind), digest_hex(digest));
}

bool blobstore_linked(struct blobstore *bs, const char *ns, const char *repo, enum blobstore_kind kind,
                      const char *digest)
{
	char path[STORE_PATH_MAX];
	struct rs_err err;
	struct stat st;
	return link_path(path, bs, ns, repo, kind, digest, &err) == RS_OK && stat(path, &st) == 0 &&
	       S_ISREG(st.st_mode);
}

enum rs_code blobstore_link(struct blobstore *bs, const char *ns, const char *repo, enum blobstore_kind kind,
                            const char *digest, struct rs_err *err)
{
	char path[STORE_PATH_MAX], dir[STORE_PATH_MAX];
	enum rs_code rc = link_path(path, bs, ns, repo, kind, digest, err);
	if (rc != RS_OK)
		return rc;
	struct stat st;
	if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
		return RS_OK;
	fsutil_parent(dir, STORE_PATH_MAX, path);
	if ((rc = fsutil_mkdir_p(dir, NULL, err)) != RS_OK)
		return rc;
	char line[DIGEST_STR_SIZE + 1];
	int n = snprintf(line, sizeof(line), "%s\n", digest);
	return write_small_file(bs, path, line, (size_t)n, err);
}

void blobstore_unlink(struct blobstore *bs, const char *ns, const char *repo, enum blobstore_kind kind,
                      const char *digest)
{
	char path[STORE_PATH_MAX];
	struct rs_err err;
	if (link_path(path, bs, ns, repo, kind, digest, &err) == RS_OK)
		(void)unlink(path); /* absent is fine */
}

/* The links of kind under dir (<links>/<ns>/<repo...>, repo its name, ""
 * at the top): every <repo>/_links/<kind>/<hex> found. */
struct link_walk {
	blobstore_link_fn fn;
	void *ctx;
	const char *kdir;
	bool stopped;
	enum rs_code rc;
	struct rs_err *err;
};

static void each_link_in(struct link_walk *lw, const char *repo, const char *dir)
{
	DIR *d = opendir(dir);
	if (!d) {
		if (errno != ENOENT && lw->rc == RS_OK)
			lw->rc = rs_err_set(lw->err, RS_IO, "opendir %s: %s", dir, strerror(errno));
		return;
	}
	struct dirent *de;
	while (!lw->stopped && (de = readdir(d)) != NULL) {
		char digest[DIGEST_STR_SIZE];
		if (strlen(de->d_name) != DIGEST_HEX_LEN || !is_hex(de->d_name, DIGEST_HEX_LEN))
			continue;
		memcpy(digest, "sha256:", 7);
		memcpy(digest + 7, de->d_name, DIGEST_HEX_LEN + 1);
		lw->stopped = !lw->fn(lw->ctx, repo, digest);
	}
	closedir(d);
}

static void each_link_walk(struct link_walk *lw, const char *repo, const char *dir, int depth)
{
	if (depth > RS_LIMIT_NAME_MAX / 2 || lw->stopped)
		return;
	DIR *d = opendir(dir);
	if (!d) {
		if (errno != ENOENT && lw->rc == RS_OK)
			lw->rc = rs_err_set(lw->err, RS_IO, "opendir %s: %s", dir, strerror(errno));
		return;
	}
	struct dirent *de;
	while (!lw->stopped && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		char sub[STORE_PATH_MAX], name[RS_LIMIT_NAME_MAX + 2];
		struct rs_err e;
		if (path_fmt(sub, &e, "%s/%s", dir, de->d_name) != RS_OK)
			continue;
		if (strcmp(de->d_name, "_links") == 0) {
			char kd[STORE_PATH_MAX];
			if (repo[0] && refname_repo_valid(repo) && path_fmt(kd, &e, "%s/%s", sub, lw->kdir) == RS_OK)
				each_link_in(lw, repo, kd);
			continue;
		}
		int n = snprintf(name, sizeof(name), "%s%s%s", repo, repo[0] ? "/" : "", de->d_name);
		if (n < 0 || (size_t)n >= sizeof(name))
			continue;
		struct stat st;
		if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
			each_link_walk(lw, name, sub, depth + 1);
	}
	closedir(d);
}

enum rs_code blobstore_each_link(struct blobstore *bs, const char *ns, enum blobstore_kind kind, blobstore_link_fn fn,
                                 void *ctx, struct rs_err *err)
{
	char top[STORE_PATH_MAX];
	if (!ns || !upstream_valid(ns))
		return rs_err_set(err, RS_BAD_INPUT, "invalid link namespace '%.100s'", ns ? ns : "(null)");
	enum rs_code rc = path_fmt(top, err, "%s/links/%s", bs->root, ns);
	if (rc != RS_OK)
		return rc;
	struct link_walk lw = {.fn = fn, .ctx = ctx, .kdir = kind_dir(kind), .err = err};
	each_link_walk(&lw, "", top, 0);
	return lw.rc;
}

static bool any_link(void *ctx, const char *repo, const char *digest)
{
	(void)repo;
	(void)digest;
	*(bool *)ctx = true;
	return false;
}

bool blobstore_repo_linked(struct blobstore *bs, const char *ns, const char *repo)
{
	char dir[STORE_PATH_MAX];
	struct rs_err e;
	if (!ns || !upstream_valid(ns) || !repo || !refname_repo_valid(repo))
		return false;
	bool found = false;
	for (int k = 0; k < 2 && !found; k++) {
		if (path_fmt(dir, &e, "%s/links/%s/%s/_links/%s", bs->root, ns, repo,
		             kind_dir(k ? BLOBSTORE_MANIFEST : BLOBSTORE_BLOB)) != RS_OK)
			return false;
		struct link_walk lw = {.fn = any_link, .ctx = &found, .err = &e};
		each_link_in(&lw, repo, dir);
	}
	return found;
}

/* The image walks of blobstore_link_image and blobstore_linked_by_image over the store's manifests. */
struct walker {
	struct store_find find; /* first: store_find_visit's context */
	struct blobstore *bs;
	const char *ns, *repo; /* link_visit: the links of repo */
};

static enum rs_code store_load(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len, char **type,
                               struct rs_err *err)
{
	const struct walker *w = ctx;
	return blobstore_get_manifest(w->bs, n->digest, RS_LIMIT_MANIFEST_MAX_BYTES, buf, len, type, err);
}

/* Link what the image references: the config and layers of each manifest,
 * each index entry after its own references. Only the root's entries are
 * walked, and on a best-effort basis below the root. */
static enum rs_code link_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                               enum imagewalk_step *step, struct rs_err *err)
{
	const struct walker *w = ctx;
	bool valid = n->digest && digest_valid(n->digest);
	if (n->kind == IMAGEWALK_CONFIG || n->kind == IMAGEWALK_LAYER)
		return valid ? blobstore_link(w->bs, w->ns, w->repo, BLOBSTORE_BLOB, n->digest, err) : RS_OK;
	if (ev == IMAGEWALK_REF)
		/* a child not in the store is linked all the same: its blobs
		 * are confirmed one by one when they are fetched */
		*step = valid && n->depth == 1 && blobstore_has(w->bs, BLOBSTORE_MANIFEST, n->digest)
		                ? IMAGEWALK_BEST_EFFORT
		                : IMAGEWALK_SKIP;
	else if (ev == IMAGEWALK_LEAVE && n->depth > 0 && valid)
		return blobstore_link(w->bs, w->ns, w->repo, BLOBSTORE_MANIFEST, n->digest, err);
	return RS_OK;
}

enum rs_code blobstore_link_image(struct blobstore *bs, const char *ns, const char *repo, const char *digest,
                                  struct rs_err *err)
{
	char path[STORE_PATH_MAX];
	enum rs_code rc = link_path(path, bs, ns, repo, BLOBSTORE_MANIFEST, digest, err);
	if (rc == RS_OK) {
		struct walker w = {.bs = bs, .ns = ns, .repo = repo};
		const struct imagewalk walk = {.load = store_load, .visit = link_visit, .ctx = &w};
		rc = imagewalk_run(&walk, digest, err);
	}
	if (rc == RS_OK)
		rc = blobstore_link(bs, ns, repo, BLOBSTORE_MANIFEST, digest, err);
	return rc;
}

unsigned blobstore_links_migrated(const struct blobstore *bs)
{
	return bs->migrated;
}

/* Link the images of the tag files in dir (<tags>/<ns>/<repo>/_tags) to repo. */
static void migrate_tag_dir(struct blobstore *bs, const char *ns, const char *repo, const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		char path[STORE_PATH_MAX], buf[TAG_FILE_MAX + 1];
		size_t len = 0;
		struct blobstore_tag t;
		struct rs_err e = {0};
		if (l <= 5 || strcmp(de->d_name + l - 5, ".json") != 0 ||
		    path_fmt(path, &e, "%s/%s", dir, de->d_name) != RS_OK ||
		    fsutil_read_into(buf, sizeof(buf), &len, path, &e) != RS_OK || memchr(buf, '\0', len) ||
		    !parse_tag_file(buf, &t))
			continue; /* a corrupt tag file is refetched anyway */
		/* the tag proves the upstream (or the pusher) gave this image to
		 * repo; a manifest that is gone leaves a stale link */
		if (blobstore_link_image(bs, ns, repo, t.digest, &e) == RS_OK ||
		    blobstore_link(bs, ns, repo, BLOBSTORE_MANIFEST, t.digest, &e) == RS_OK)
			bs->migrated++;
	}
	closedir(d);
}

/* Walk <tags>/<ns>/<repo...>: dir is the directory of repo ("" at the top). */
static void migrate_walk(struct blobstore *bs, const char *ns, const char *repo, const char *dir, int depth)
{
	if (depth > RS_LIMIT_NAME_MAX / 2)
		return;
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		char sub[STORE_PATH_MAX], name[RS_LIMIT_NAME_MAX + 2];
		struct rs_err e;
		if (path_fmt(sub, &e, "%s/%s", dir, de->d_name) != RS_OK)
			continue;
		if (strcmp(de->d_name, "_tags") == 0) {
			if (repo[0] && refname_repo_valid(repo))
				migrate_tag_dir(bs, ns, repo, sub);
			continue;
		}
		int n = snprintf(name, sizeof(name), "%s%s%s", repo, repo[0] ? "/" : "", de->d_name);
		if (n < 0 || (size_t)n >= sizeof(name))
			continue;
		struct stat st;
		if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
			migrate_walk(bs, ns, name, sub, depth + 1);
	}
	closedir(d);
}

static enum rs_code links_from_tags(struct blobstore *bs, struct rs_err *err)
{
	char marker[STORE_PATH_MAX], tags[STORE_PATH_MAX];
	enum rs_code rc = path_fmt(marker, err, "%s/links/.from-tags", bs->root);
	if (rc == RS_OK)
		rc = path_fmt(tags, err, "%s/tags", bs->root);
	if (rc != RS_OK)
		return rc;
	if (access(marker, F_OK) == 0)
		return RS_OK;
	DIR *d = opendir(tags);
	if (d) {
		struct dirent *de;
		while ((de = readdir(d)) != NULL) {
			char sub[STORE_PATH_MAX];
			struct rs_err e;
			if (de->d_name[0] == '.' || !upstream_valid(de->d_name) ||
			    path_fmt(sub, &e, "%s/%s", tags, de->d_name) != RS_OK)
				continue;
			migrate_walk(bs, de->d_name, "", sub, 0);
		}
		closedir(d);
	}
	static const char note[] = "links derived from the tag maps\n";
	return write_small_file(bs, marker, note, sizeof(note) - 1, err);
}

/* Does the image reference w->digest (as a manifest: an entry of the root
 * or of an index it names; as a blob: a config or layer of the root or of
 * an index entry)? What cannot be read references nothing. */

bool blobstore_linked_by_image(struct blobstore *bs, const char *ns, const char *repo, enum blobstore_kind kind,
                               const char *digest)
{
	char any[DIGEST_STR_SIZE], dir[STORE_PATH_MAX];
	struct rs_err err;
	/* the directory of repo's manifest links, from the path of one */
	snprintf(any, sizeof(any), "sha256:%064d", 0);
	if (!digest_valid(digest) || link_path(dir, bs, ns, repo, BLOBSTORE_MANIFEST, any, &err) != RS_OK)
		return false;
	char *slash = strrchr(dir, '/');
	*slash = '\0';
	DIR *d = opendir(dir);
	if (!d)
		return false;
	bool found = false;
	unsigned seen = 0;
	struct dirent *de;
	while (!found && seen < RS_LIMIT_LINK_SCAN_MANIFESTS && (de = readdir(d)) != NULL) {
		if (!is_hex(de->d_name, DIGEST_HEX_LEN))
			continue;
		char md[DIGEST_STR_SIZE];
		snprintf(md, sizeof(md), "sha256:%.64s", de->d_name);
		seen++;
		struct walker w = {.find = {kind == BLOBSTORE_MANIFEST, digest, false}, .bs = bs};
		const struct imagewalk walk = {.load = store_load, .visit = store_find_visit, .ctx = &w};
		enum rs_code rc = imagewalk_run(&walk, md, &err);
		(void)rc; /* a manifest that cannot be read references nothing */
		found = w.find.found;
	}
	closedir(d);
	return found;
}

/* ---- OCI layout export -------------------------------------------------- */

struct export {
	struct blobstore *bs;
	const char *dir;
	size_t manifest_max;
	blobstore_fetch_fn fetch;
	void *ctx;
	char *root_type; /* the root document's media type and length, after the walk */
	size_t root_len;
};

/* Hard-link kind/digest into the layout's blobs/sha256/, fetching it first
 * when absent. *linked: false when it is absent and may be left out. */
static enum rs_code export_object(const struct export *x, enum blobstore_kind kind, const char *digest, bool optional,
                                  struct rs_err *err)
{
	if (!digest || !digest_valid(digest))
		return rs_err_set(err, RS_BAD_INPUT, "invalid digest '%.80s' in a manifest", digest ? digest : "(none)");
	const char *hex = digest_hex(digest);
	char from[STORE_PATH_MAX], to[STORE_PATH_MAX];
	enum rs_code rc = object_path(from, x->bs, kind, hex, "", err);
	if (rc == RS_OK)
		rc = path_fmt(to, err, "%s/blobs/sha256/%s", x->dir, hex);
	for (int attempt = 0; rc == RS_OK && attempt < 2; attempt++) {
		if (!blobstore_has(x->bs, kind, digest)) {
			if (!x->fetch)
				return optional ? RS_OK
				                : rs_err_set(err, RS_NOT_FOUND, "%s %s is not in the store",
				                             kind == BLOBSTORE_MANIFEST ? "manifest" : "blob", digest);
			if ((rc = x->fetch(x->ctx, kind, digest, err)))
				return rs_err_prefix(err, "fetching %s: ", digest), rc;
		}
		if (link(from, to) == 0 || errno == EEXIST)
			return RS_OK;
		if (errno != ENOENT) /* ENOENT: evicted between the check and the link, fetch again */
			return rs_err_set(err, RS_IO, "linking %s into %s: %s", digest, x->dir, strerror(errno));
	}
	return rc ? rc : rs_err_set(err, RS_IO, "%s vanished from the store twice while exporting it", digest);
}

/* A manifest or index into the layout (fetched first when absent), then its bytes. */
static enum rs_code export_load(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len, char **type,
                                struct rs_err *err)
{
	const struct export *x = ctx;
	enum rs_code rc = export_object(x, BLOBSTORE_MANIFEST, n->digest, false, err);
	if (rc == RS_OK)
		rc = blobstore_get_manifest(x->bs, n->digest, x->manifest_max, buf, len, type, err);
	return rc;
}

/* What a document references into the layout: every config, the layers
 * that are there (or can be fetched); one level of index only. */
static enum rs_code export_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                                 enum imagewalk_step *step, struct rs_err *err)
{
	(void)step;
	struct export *x = ctx;
	if (ev == IMAGEWALK_LOADED && n->kind == IMAGEWALK_INDEX && n->depth > 0)
		return rs_err_set(err, RS_BAD_INPUT, "%s: an index inside an index is not supported", n->digest);
	if (ev == IMAGEWALK_REF && n->kind == IMAGEWALK_CONFIG)
		return export_object(x, BLOBSTORE_BLOB, n->digest, false, err);
	if (ev == IMAGEWALK_REF && n->kind == IMAGEWALK_LAYER)
		return export_object(x, BLOBSTORE_BLOB, n->digest, true, err);
	if (ev == IMAGEWALK_LEAVE && n->depth == 0) {
		if (n->media_type && !(x->root_type = strdup(n->media_type)))
			return rs_err_set(err, RS_NOMEM, "out of memory");
		x->root_len = n->len;
	}
	return RS_OK;
}

enum rs_code blobstore_export_layout(struct blobstore *bs, const char *digest, const char *tag, const char *dir,
                                     size_t manifest_max, blobstore_fetch_fn fetch, void *ctx, struct rs_err *err)
{
	char path[STORE_PATH_MAX];
	enum rs_code rc = path_fmt(path, err, "%s/blobs/sha256", dir);
	if (rc)
		return rc;
	if (mkdir(dir, 0700) != 0 || (rc = fsutil_mkdir_p(path, NULL, err)) != RS_OK)
		return rc ? rc : rs_err_set(err, RS_IO, "creating %s: %s", dir, strerror(errno));
	static const char oci_layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
	if ((rc = path_fmt(path, err, "%s/oci-layout", dir)) ||
	    (rc = fsutil_write_file(path, oci_layout, sizeof(oci_layout) - 1, false, err)))
		return rc;
	struct export x = {bs, dir, manifest_max, fetch, ctx, NULL, 0};
	const struct imagewalk walk = {.load = export_load, .visit = export_visit, .ctx = &x};
	rc = imagewalk_run(&walk, digest, err);
	char *type = x.root_type;
	size_t len = x.root_len;
	char *json = NULL;
	size_t jlen = 0;
	if (rc == RS_OK) {
		struct imagejson_descriptor d = {.media_type = type, .digest = (char *)digest, .size = len};
		struct imagejson_index idx = {.schema_version = 2, .manifests = &d, .manifest_count = 1};
		if (tag)
			rc = imagejson_kv_set(&d.annotations, &d.annotation_count, IMAGE_ANN_REF_NAME, tag, err);
		if (rc == RS_OK)
			rc = imagejson_write_index(&json, &jlen, &idx, err);
		if (d.annotations)
			imagejson_kv_free(d.annotations, d.annotation_count);
	}
	if (rc == RS_OK && (rc = path_fmt(path, err, "%s/index.json", dir)) == RS_OK)
		rc = fsutil_write_file(path, json, jlen, false, err);
	free(json);
	free(type);
	return rc;
}

/* ---- health ----------------------------------------------------------- */

enum rs_code blobstore_check_writable(struct blobstore *bs, struct rs_err *err)
{
	char path[STORE_PATH_MAX];
	int fd = -1;
	enum rs_code rc = temp_create(bs, path, &fd, err);
	if (rc != RS_OK)
		return rc;
	close(fd);
	if (unlink(path) != 0)
		return rs_err_set(err, RS_IO, "unlink %s: %s", path, strerror(errno));
	return RS_OK;
}
