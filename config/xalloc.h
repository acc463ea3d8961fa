/* xalloc: the allocation calls of the document loaders and path tables
 * (config.c, policy.c, optimizer/squash.c), in one place so that tests can
 * make the Nth allocation fail (STYLE.md section 7: allocation-failure
 * tests) with one hook. Same contracts as the C library functions. */
#ifndef RS_CONFIG_XALLOC_H
#define RS_CONFIG_XALLOC_H

#include <stdbool.h>
#include <stddef.h>

/* Tests only: when should_fail (may be NULL) returns true, the allocation
 * in progress returns NULL. Not thread-safe: set it before the code under
 * test runs. */
void xalloc_set_fail_hook(bool (*should_fail)(void));

void *xalloc_malloc(size_t n);
void *xalloc_calloc(size_t n, size_t size);
void *xalloc_realloc(void *p, size_t n);
char *xalloc_strdup(const char *s);
char *xalloc_strndup(const char *s, size_t n);

#endif
