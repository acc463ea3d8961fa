/* Unit tests for api/tags.c's page rule (api_tags_page): tags after `last`,
 * at most n, a next page while tags remain, none for n=0, and the bound of
 * a merged page: when the upstream's page has a next one, no tag after that
 * page's last tag is answered, so an upstream tag between it and a later
 * pushed tag is never skipped. The lab's docker-registry ignores n and last
 * (it never sends short pages), so this rule is pinned here;
 * test_conformance.sh covers the answers over HTTP. */
#include "proxy/api/api_int.h"

#include "fixture.h"

#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The page as "a,b|more" or "a,b|end". */
static const char *page(char *const *tags, size_t n, const char *last, const char *bound, size_t limit, bool up_more)
{
	static char out[256];
	size_t s = 99, k = 99;
	bool more = api_tags_page(tags, n, last, bound, limit, up_more, &s, &k);
	out[0] = '\0';
	for (size_t i = 0; i < k; i++) {
		size_t len = strlen(out);
		snprintf(out + len, sizeof(out) - len, "%s%s", i ? "," : "", tags[s + i]);
	}
	size_t len = strlen(out);
	snprintf(out + len, sizeof(out) - len, "|%s", more ? "more" : "end");
	return out;
}

START_TEST(pages_after_last)
{
	char *t[] = {"a", "b", "c", "d", "e"};
	ck_assert_str_eq(page(t, 5, NULL, NULL, SIZE_MAX, false), "a,b,c,d,e|end");
	ck_assert_str_eq(page(t, 5, NULL, NULL, 2, false), "a,b|more");
	ck_assert_str_eq(page(t, 5, "b", NULL, 2, false), "c,d|more");
	ck_assert_str_eq(page(t, 5, "d", NULL, 2, false), "e|end");
	ck_assert_str_eq(page(t, 5, "e", NULL, 2, false), "|end");
	ck_assert_str_eq(page(t, 5, "bb", NULL, 2, false), "c,d|more"); /* last need not be in the list */
	ck_assert_str_eq(page(t, 5, "c", NULL, SIZE_MAX, false), "d,e|end");
	ck_assert_str_eq(page(t, 5, NULL, NULL, 5, false), "a,b,c,d,e|end");
	ck_assert_str_eq(page(t, 0, NULL, NULL, 3, false), "|end");
}
END_TEST

START_TEST(n_zero_is_empty_without_next)
{
	char *t[] = {"a", "b"};
	ck_assert_str_eq(page(t, 2, NULL, NULL, 0, false), "|end");
	ck_assert_str_eq(page(t, 2, NULL, "a", 0, true), "|end");
}
END_TEST

START_TEST(upstream_page_bounds_the_merged_page)
{
	/* The client asks n=10; the upstream answers a short page [a, c] with a
	 * Link (it has cc and more); pushed b and d. Without the bound the page
	 * would be a,b,c,d and the next last=d would skip the upstream's cc. */
	char *merged[] = {"a", "b", "c", "d"};
	ck_assert_str_eq(page(merged, 4, NULL, "c", 10, true), "a,b,c|more");
	/* next page: last=c; the upstream's next page [cc, e] is its last */
	char *next[] = {"a", "b", "c", "cc", "d", "e"};
	ck_assert_str_eq(page(next, 6, "c", NULL, 10, false), "cc,d,e|end");
	/* the upstream has more but its page is all at or before last: empty,
	 * and there is nothing to name in a Link */
	ck_assert_str_eq(page(merged, 4, "c", "c", 10, true), "|more");
}
END_TEST

static Suite *tags_suite(void)
{
	Suite *s = suite_create("tags");
	TCase *tc = tcase_create("tags");
	tcase_add_test(tc, pages_after_last);
	tcase_add_test(tc, n_zero_is_empty_without_next);
	tcase_add_test(tc, upstream_page_bounds_the_merged_page);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(tags_suite());
}
