/* refname: the grammar of repository names and tags (OCI distribution spec,
 * "Pulling manifests"), the one place that decides what a name or tag may
 * be. Used by the routes (what a client may ask for), the push side and the
 * store (what may become part of a key). Pure functions, no allocation. */
#ifndef RS_CONFIG_REFNAME_H
#define RS_CONFIG_REFNAME_H

#include <stdbool.h>

/* Components [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* joined by '/', at most
 * RS_LIMIT_NAME_MAX bytes in all. */
bool refname_repo_valid(const char *name);

/* [A-Za-z0-9_][A-Za-z0-9._-]{0,127} (RS_LIMIT_TAG_MAX bytes). */
bool refname_tag_valid(const char *tag);

#endif
