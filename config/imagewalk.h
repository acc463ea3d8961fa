/* imagewalk: the one walk of an image's documents. From a root manifest or
 * index it goes depth first, in document order, through the entries of every
 * index it meets and the config and layers of every image manifest, and
 * tells a visitor about each. It is how regslim reads a manifest tree: the
 * store's links and layout export, the push checks, the gate, optimized-pull
 * results, pull policies and the push client all walk with it.
 *
 * It does not say where bytes come from, nor what a descriptor means: the
 * caller's loader returns a document's bytes (from the store, an upstream,
 * a pushed image), and the visitor links, pushes, fetches or checks, and
 * decides which index entries are loaded (walked), left alone (skipped) or
 * walked on a best-effort basis. It checks no digest and no media type
 * beyond telling a manifest from an index (imagejson_sniff). Nesting is
 * bounded (RS_LIMIT_WALK_DEPTH, or less per walk) and so are the documents
 * one walk loads (RS_LIMIT_WALK_DOCUMENTS); what a document may hold is
 * bounded by imagejson.c. Errors are the loader's, imagejson's (named by
 * the walk's manifest_what / index_what, else by the document's digest),
 * the visitor's, or RS_BAD_INPUT for a bound, naming the document. */
#ifndef RS_CONFIG_IMAGEWALK_H
#define RS_CONFIG_IMAGEWALK_H

#include "errors.h"
#include "imagejson.h"

#include <stddef.h>
#include <stdint.h>

enum imagewalk_kind {
	IMAGEWALK_ENTRY,    /* an index entry whose document is not loaded (yet, or at all) */
	IMAGEWALK_INDEX,    /* a loaded index or manifest list */
	IMAGEWALK_MANIFEST, /* a loaded image manifest */
	IMAGEWALK_CONFIG,   /* the config descriptor of a manifest */
	IMAGEWALK_LAYER,    /* a layer descriptor of a manifest */
};

enum imagewalk_event {
	IMAGEWALK_REF,    /* a descriptor in its document: an index entry (before loading), the config, a layer */
	IMAGEWALK_LOADED, /* a document's bytes are loaded and its kind is known; not parsed yet */
	IMAGEWALK_ENTER,  /* the document is parsed (index or manifest set); its descriptors come next */
	IMAGEWALK_LEAVE,  /* after a document or index entry and everything below it */
};

/* What the visitor wants next; the walk presets IMAGEWALK_CONTINUE.
 *  SKIP: at REF of an entry, do not load it (its LEAVE still comes); at
 *        LOADED, do not parse it; at ENTER, do not visit its descriptors.
 *  BEST_EFFORT: at REF of an entry, load and walk it, but a failure below
 *        the entry (loading, parsing, a bound, the visitor) only ends that
 *        entry's walk; the entry's LEAVE then sees it unloaded. Elsewhere it
 *        means CONTINUE.
 *  STOP: end the whole walk now; imagewalk_run returns RS_OK. */
enum imagewalk_step {
	IMAGEWALK_CONTINUE = 0,
	IMAGEWALK_SKIP,
	IMAGEWALK_BEST_EFFORT,
	IMAGEWALK_STOP,
};

/* One place in the walk. Every pointer is borrowed for the call. */
struct imagewalk_node {
	enum imagewalk_kind kind;
	const char *digest;     /* as the document (or the caller, for the root) names it: may be invalid */
	const char *media_type; /* REF: the descriptor's; a loaded document: the loader's; NULL when unknown */
	uint64_t size;          /* REF: the descriptor's; a loaded document: its length */
	unsigned depth;         /* the root is 0; an entry, config or layer is one deeper than its document */
	size_t pos;             /* place in the parent's list: manifests[pos], layers[pos]; 0 for root and config */
	const struct imagewalk_node *parent;      /* NULL for the root */
	const struct imagejson_descriptor *desc;  /* the descriptor in the parent; NULL for the root */
	const char *buf;                          /* a loaded document's bytes (LOADED, ENTER, LEAVE) */
	size_t len;
	const struct imagejson_index *index;       /* INDEX, parsed: ENTER and LEAVE */
	const struct imagejson_manifest *manifest; /* MANIFEST, parsed: ENTER and LEAVE */
};

/* The bytes of document n (n->digest; n->desc is NULL for the root).
 * *buf, *len and *media_type (NULL when unknown) are new (free()). */
typedef enum rs_code (*imagewalk_load_fn)(void *ctx, const struct imagewalk_node *n, char **buf, size_t *len,
                                          char **media_type, struct rs_err *err);
/* Told ev at n; may set *step. A failure ends the walk (or, below a
 * best-effort entry, that entry's walk) with this error. */
typedef enum rs_code (*imagewalk_visit_fn)(void *ctx, enum imagewalk_event ev, const struct imagewalk_node *n,
                                           enum imagewalk_step *step, struct rs_err *err);

struct imagewalk {
	imagewalk_load_fn load;   /* NULL: no index entry is loaded (REF and LEAVE only) */
	imagewalk_visit_fn visit; /* required */
	void *ctx;
	/* names of documents in imagejson's messages: manifest_what for a
	 * manifest and for a document not yet sniffed, index_what for an
	 * index; NULL: the document's digest */
	const char *manifest_what, *index_what;
	unsigned max_depth; /* deepest document loaded; 0 or above RS_LIMIT_WALK_DEPTH: RS_LIMIT_WALK_DEPTH */
};

/* Walk the image whose root document w->load returns for digest (which is
 * whatever the loader understands: a digest, or a tag for an upstream).
 * Events, depth first: LOADED, ENTER of the root, then for each index
 * entry REF, [LOADED, ENTER, ... of its document,] LEAVE; for a manifest REF
 * of its config, then of each layer; finally LEAVE of the root. */
RS_MUST_CHECK enum rs_code imagewalk_run(const struct imagewalk *w, const char *digest, struct rs_err *err);

/* The same from a root already in memory (buf, len; borrowed), as with a
 * manifest being pushed; digest and media_type may be NULL. */
RS_MUST_CHECK enum rs_code imagewalk_bytes(const struct imagewalk *w, const char *digest, const char *buf,
                                           size_t len, const char *media_type, struct rs_err *err);

#endif
