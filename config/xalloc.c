/* xalloc: allocations with a failure hook for tests (see xalloc.h). */
#include "xalloc.h"

#include <stdlib.h>
#include <string.h>

static bool (*fail_hook)(void);

void xalloc_set_fail_hook(bool (*should_fail)(void))
{
	fail_hook = should_fail;
}

static bool fails(void)
{
	return fail_hook && fail_hook();
}

void *xalloc_malloc(size_t n)
{
	return fails() ? NULL : malloc(n);
}

void *xalloc_calloc(size_t n, size_t size)
{
	return fails() ? NULL : calloc(n, size);
}

void *xalloc_realloc(void *p, size_t n)
{
	return fails() ? NULL : realloc(p, n);
}

char *xalloc_strdup(const char *s)
{
	return fails() ? NULL : strdup(s);
}

char *xalloc_strndup(const char *s, size_t n)
{
	return fails() ? NULL : strndup(s, n);
}
