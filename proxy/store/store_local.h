/* store_local: what every store driver does the same way, whatever holds its
 * objects: scratch directories under the data directory's tmp/ on the
 * replica's own disk, scrubbing the data directory out of messages, the
 * grammar of document keys and upload UUIDs, and the search for an object
 * among what a stored image names (the visitor of linked_by_image). Used by
 * the fs driver (store_fs.c, blobstore.c, push.c) and the s3 driver
 * (store_s3.c, store_s3_push.c). No HTTP, no network. */
#ifndef RS_PROXY_STORE_LOCAL_H
#define RS_PROXY_STORE_LOCAL_H

#include "errors.h"
#include "imagewalk.h"

#include <stdbool.h>
#include <stddef.h>

/* Longest document key (store.h documents keyed by name). */
#define STORE_LOCAL_KEY_MAX 255

/* A new directory "<tmp>/<prefix>-XXXXXX" into out (cap bytes). RS_IO. */
RS_MUST_CHECK enum rs_code store_local_scratch_new(const char *tmp, const char *prefix, char *out, size_t cap,
                                                   struct rs_err *err);
/* Remove dir and what it holds, only if it is a direct child of tmp (what
 * store_local_scratch_new made); anything else is left alone. */
void store_local_scratch_remove(const char *tmp, const char *dir);
/* Replace the data directory root (and its real path, when not NULL) in
 * text by "<data>"; the new length. */
size_t store_local_scrub_paths(const char *root, const char *real, char *text);
/* A document key: 1..STORE_LOCAL_KEY_MAX of [A-Za-z0-9._-], not starting
 * with '.'. */
bool store_local_key_ok(const char *key);
/* An upload UUID as regslim makes them: 8-4-4-4-12 lower-case hex. */
bool store_local_uuid_valid(const char *s);
/* A new random (version 4) UUID of that form into out (37 bytes). RS_IO
 * when the kernel's random source fails. */
RS_MUST_CHECK enum rs_code store_local_uuid_new(char out[37], struct rs_err *err);

/* The search of linked_by_image: does an image name digest, as a config or
 * layer (manifest false) or as a manifest of its root index (manifest
 * true)? Put a struct store_find FIRST in the walk's context and pass
 * store_find_visit as its visitor; found says the answer after the walk. */
struct store_find {
	bool manifest;
	const char *digest;
	bool found;
};
RS_MUST_CHECK enum rs_code store_find_visit(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                                            enum imagewalk_step *step, struct rs_err *err);

#endif
