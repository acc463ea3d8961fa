/* refname: repository name and tag grammar (see refname.h). */
#include "refname.h"

#include "rs_limits.h"

#include <ctype.h>
#include <string.h>

static bool is_alnum_lower(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool component_valid(const char *s, size_t len)
{
	if (len == 0 || !is_alnum_lower(s[0]) || !is_alnum_lower(s[len - 1]))
		return false;
	for (size_t i = 0; i < len;) {
		if (is_alnum_lower(s[i])) {
			i++;
			continue;
		}
		size_t j;
		if (s[i] == '.')
			j = i + 1;
		else if (s[i] == '_')
			j = (i + 1 < len && s[i + 1] == '_') ? i + 2 : i + 1;
		else if (s[i] == '-')
			for (j = i; j < len && s[j] == '-'; j++)
				;
		else
			return false;
		if (j >= len || !is_alnum_lower(s[j]))
			return false;
		i = j;
	}
	return true;
}

bool refname_repo_valid(const char *name)
{
	size_t total = strlen(name);
	if (total == 0 || total > RS_LIMIT_NAME_MAX)
		return false;
	const char *p = name;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (!component_valid(p, len))
			return false;
		if (!slash)
			return true;
		p = slash + 1;
	}
}

bool refname_tag_valid(const char *t)
{
	size_t len = strlen(t);
	if (len == 0 || len > RS_LIMIT_TAG_MAX)
		return false;
	if (!(isalnum((unsigned char)t[0]) || t[0] == '_'))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!(isalnum((unsigned char)t[i]) || t[i] == '_' || t[i] == '.' || t[i] == '-'))
			return false;
	return true;
}
