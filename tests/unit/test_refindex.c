/* test_refindex: the push store's referrers index (add, list sorted, idempotent,
 * per repository and subject, on disk so a new process sees it, remove, bad
 * names and digests) and the referrers list documents (descriptors of pushed
 * manifests and indexes with their artifactType rule and annotations, an
 * upstream's index merged without duplicates, the artifactType filter, the
 * empty list, the entries of a referrers tag). */
#include "refindex.h"

#include "fixture.h"
#include "image.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"
#define DS "sha256:5555555555555555555555555555555555555555555555555555555555555555"
#define EMPTY_CFG "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

static void setup(void)
{
	fixture_tmpdir_setup();
	ck_assert_int_eq(mkdir(fixture_path("push"), 0755), 0);
	ck_assert_int_eq(mkdir(fixture_path("push/tmp"), 0755), 0);
}

START_TEST(lists_added_referrers_sorted_and_once)
{
	struct rs_err err = {0};
	const char *dd = fixture_dir();
	ck_assert_int_eq(refindex_add(dd, "team/app", DS, D3, &err), RS_OK);
	ck_assert_int_eq(refindex_add(dd, "team/app", DS, D1, &err), RS_OK);
	ck_assert_int_eq(refindex_add(dd, "team/app", DS, D1, &err), RS_OK); /* idempotent */
	ck_assert_int_eq(refindex_add(dd, "team/app", D2, D2, &err), RS_OK);  /* another subject */
	ck_assert_int_eq(refindex_add(dd, "team/other", DS, D2, &err), RS_OK); /* another repository */
	char(*v)[DIGEST_STR_SIZE] = NULL;
	size_t n = 0;
	ck_assert_int_eq(refindex_list(&v, &n, dd, "team/app", DS, 100, &err), RS_OK);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(v[0], D1);
	ck_assert_str_eq(v[1], D3);
	free(v);
	/* the cap */
	ck_assert_int_eq(refindex_list(&v, &n, dd, "team/app", DS, 1, &err), RS_OK);
	ck_assert_uint_eq(n, 1);
	free(v);
	/* isolation: only the repository's own */
	ck_assert_int_eq(refindex_list(&v, &n, dd, "team/other", DS, 100, &err), RS_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(v[0], D2);
	free(v);
	/* nothing recorded, or a name nothing can be pushed to: empty */
	ck_assert_int_eq(refindex_list(&v, &n, dd, "nobody", DS, 100, &err), RS_OK);
	ck_assert_uint_eq(n, 0);
	ck_assert_ptr_null(v);
	ck_assert_int_eq(refindex_list(&v, &n, dd, "Bad..Name", DS, 100, &err), RS_OK);
	ck_assert_uint_eq(n, 0);
	/* on disk, one file per referrer, no temp file left */
	ck_assert_int_eq(fixture_count_files(fixture_path("push/tmp")), 0);
	char *line = fixture_read_file(
		fixture_path("push/referrers/team/app/_subjects/"
	                     "5555555555555555555555555555555555555555555555555555555555555555/"
	                     "1111111111111111111111111111111111111111111111111111111111111111"),
		NULL);
	ck_assert_str_eq(line, D1 "\n");
	free(line);
	refindex_remove(dd, "team/app", DS, D1);
	refindex_remove(dd, "team/app", DS, D1); /* gone already: fine */
	ck_assert_int_eq(refindex_list(&v, &n, dd, "team/app", DS, 100, &err), RS_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(v[0], D3);
	free(v);
}
END_TEST

START_TEST(refuses_bad_names_and_digests)
{
	struct rs_err err = {0};
	const char *dd = fixture_dir();
	ck_assert_int_eq(refindex_add(dd, "../escape", DS, D1, &err), RS_BAD_INPUT);
	ck_assert_int_eq(refindex_add(dd, "team/app", "sha256:abc", D1, &err), RS_DIGEST_INVALID);
	ck_assert_int_eq(refindex_add(dd, "team/app", DS, "md5:00", &err), RS_DIGEST_INVALID);
	char(*v)[DIGEST_STR_SIZE] = NULL;
	size_t n = 0;
	ck_assert_int_eq(refindex_list(&v, &n, dd, "team/app", "sha256:zz", 10, &err), RS_DIGEST_INVALID);
}
END_TEST

static const char *artifact = "{\"schemaVersion\":2,\"mediaType\":\"" IMAGE_MT_OCI_MANIFEST "\","
                              "\"artifactType\":\"application/vnd.example.sbom\",\"config\":{\"mediaType\":"
                              "\"application/vnd.oci.empty.v1+json\",\"digest\":\"" EMPTY_CFG "\",\"size\":2},"
                              "\"layers\":[],\"subject\":{\"mediaType\":\"" IMAGE_MT_OCI_MANIFEST "\","
                              "\"digest\":\"" DS "\",\"size\":10},\"annotations\":{\"b\":\"2\",\"a\":\"1\"}}";
static const char *sig = "{\"schemaVersion\":2,\"mediaType\":\"" IMAGE_MT_OCI_MANIFEST "\",\"config\":{"
                         "\"mediaType\":\"application/vnd.example.sig.config\",\"digest\":\"" D1 "\",\"size\":3},"
                         "\"layers\":[],\"subject\":{\"digest\":\"" DS "\",\"size\":10}}";
static const char *idx = "{\"schemaVersion\":2,\"mediaType\":\"" IMAGE_MT_OCI_INDEX "\",\"manifests\":[],"
                         "\"subject\":{\"digest\":\"" DS "\",\"size\":10}}";

START_TEST(subject_of_manifests_and_indexes)
{
	struct rs_err err = {0};
	char s[DIGEST_STR_SIZE];
	ck_assert_int_eq(refindex_subject_of(s, artifact, strlen(artifact), &err), RS_OK);
	ck_assert_str_eq(s, DS);
	ck_assert_int_eq(refindex_subject_of(s, idx, strlen(idx), &err), RS_OK);
	ck_assert_str_eq(s, DS);
	const char *plain = "{\"schemaVersion\":2,\"config\":{\"digest\":\"" D1 "\",\"size\":2},\"layers\":[]}";
	ck_assert_int_eq(refindex_subject_of(s, plain, strlen(plain), &err), RS_OK);
	ck_assert_str_eq(s, "");
	const char *bad = "{\"schemaVersion\":2,\"config\":{\"digest\":\"" D1 "\",\"size\":2},\"layers\":[],"
	                  "\"subject\":{\"digest\":\"sha256:nothex\",\"size\":1}}";
	ck_assert_int_eq(refindex_subject_of(s, bad, strlen(bad), &err), RS_BAD_INPUT);
	ck_assert_ptr_nonnull(strstr(err.msg, "subject.digest"));
}
END_TEST

START_TEST(describes_referrers_merges_and_filters)
{
	struct rs_err err = {0};
	struct refindex_list l = {0};
	ck_assert_int_eq(refindex_list_add_manifest(&l, D1, IMAGE_MT_OCI_MANIFEST, artifact, strlen(artifact), &err),
	                 RS_OK);
	ck_assert_int_eq(refindex_list_add_manifest(&l, D2, IMAGE_MT_OCI_MANIFEST, sig, strlen(sig), &err), RS_OK);
	ck_assert_int_eq(refindex_list_add_manifest(&l, D3, IMAGE_MT_OCI_INDEX, idx, strlen(idx), &err), RS_OK);
	/* twice: kept once */
	ck_assert_int_eq(refindex_list_add_manifest(&l, D1, IMAGE_MT_OCI_MANIFEST, artifact, strlen(artifact), &err),
	                 RS_OK);
	ck_assert_uint_eq(l.n, 3);
	/* an upstream's list: its entries unchanged, a digest already listed skipped */
	const char *up = "{\"schemaVersion\":2,\"mediaType\":\"" IMAGE_MT_OCI_INDEX "\",\"manifests\":["
	                 "{\"mediaType\":\"" IMAGE_MT_OCI_MANIFEST "\",\"digest\":\"" D2 "\",\"size\":1,"
	                 "\"artifactType\":\"x/y\"},{\"mediaType\":\"" IMAGE_MT_OCI_MANIFEST "\",\"digest\":\"" DS "\","
	                 "\"size\":7,\"artifactType\":\"application/vnd.example.sbom\",\"annotations\":{\"u\":\"1\"}}]}";
	ck_assert_int_eq(refindex_list_add_index(&l, up, strlen(up), &err), RS_OK);
	ck_assert_uint_eq(l.n, 4);
	ck_assert_int_eq(refindex_list_add_index(&l, artifact, strlen(artifact), &err), RS_BAD_INPUT);

	char *out;
	size_t len;
	ck_assert_int_eq(refindex_list_write(&out, &len, &l, NULL, &err), RS_OK);
	char want[4096];
	snprintf(want, sizeof(want),
	         "{\"schemaVersion\":2,\"mediaType\":\"%s\",\"manifests\":["
	         "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu,\"artifactType\":\"application/vnd.example.sbom\","
	         "\"annotations\":{\"a\":\"1\",\"b\":\"2\"}},"
	         "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu,\"artifactType\":\"application/vnd.example.sig.config\"},"
	         "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":%zu},"
	         "{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":7,\"artifactType\":\"application/vnd.example.sbom\","
	         "\"annotations\":{\"u\":\"1\"}}]}",
	         IMAGE_MT_OCI_INDEX, IMAGE_MT_OCI_MANIFEST, D1, strlen(artifact), IMAGE_MT_OCI_MANIFEST, D2, strlen(sig),
	         IMAGE_MT_OCI_INDEX, D3, strlen(idx), IMAGE_MT_OCI_MANIFEST, DS);
	ck_assert_str_eq(out, want);
	ck_assert_uint_eq(len, strlen(want));
	free(out);

	ck_assert_int_eq(refindex_list_write(&out, &len, &l, "application/vnd.example.sbom", &err), RS_OK);
	ck_assert_ptr_nonnull(strstr(out, D1));
	ck_assert_ptr_nonnull(strstr(out, DS));
	ck_assert_ptr_null(strstr(out, D2));
	ck_assert_ptr_null(strstr(out, D3));
	free(out);
	ck_assert_int_eq(refindex_list_write(&out, &len, &l, "no/such", &err), RS_OK);
	ck_assert_str_eq(out, refindex_empty());
	free(out);
	refindex_list_dispose(&l);

	/* the empty list */
	ck_assert_int_eq(refindex_list_write(&out, &len, &l, NULL, &err), RS_OK);
	ck_assert_str_eq(out, "{\"schemaVersion\":2,\"mediaType\":\"" IMAGE_MT_OCI_INDEX "\",\"manifests\":[]}");
	free(out);
}
END_TEST

START_TEST(reads_the_entries_of_a_referrers_tag)
{
	struct rs_err err = {0};
	const char *tag = "{\"schemaVersion\":2,\"mediaType\":\"" IMAGE_MT_OCI_INDEX "\",\"manifests\":["
	                  "{\"digest\":\"" D2 "\",\"size\":1},{\"digest\":\"sha256:bad\",\"size\":1},"
	                  "{\"digest\":\"" D1 "\",\"size\":1}]}";
	char(*v)[DIGEST_STR_SIZE] = NULL;
	size_t n = 0;
	ck_assert_int_eq(refindex_entries(&v, &n, tag, strlen(tag), 10, &err), RS_OK);
	ck_assert_uint_eq(n, 2); /* the invalid digest skipped, the order kept */
	ck_assert_str_eq(v[0], D2);
	ck_assert_str_eq(v[1], D1);
	free(v);
	ck_assert_int_eq(refindex_entries(&v, &n, tag, strlen(tag), 1, &err), RS_OK);
	ck_assert_uint_eq(n, 1);
	free(v);
	ck_assert_int_eq(refindex_entries(&v, &n, artifact, strlen(artifact), 10, &err), RS_BAD_INPUT);
	ck_assert_ptr_null(v);
	const char *empty = refindex_empty();
	ck_assert_int_eq(refindex_entries(&v, &n, empty, strlen(empty), 10, &err), RS_OK);
	ck_assert_uint_eq(n, 0);
	ck_assert_ptr_null(v);
}
END_TEST

static Suite *refindex_suite(void)
{
	Suite *s = suite_create("refindex");
	TCase *tc = tcase_create("core");
	tcase_add_checked_fixture(tc, setup, fixture_tmpdir_teardown);
	tcase_add_test(tc, lists_added_referrers_sorted_and_once);
	tcase_add_test(tc, refuses_bad_names_and_digests);
	tcase_add_test(tc, subject_of_manifests_and_indexes);
	tcase_add_test(tc, describes_referrers_merges_and_filters);
	tcase_add_test(tc, reads_the_entries_of_a_referrers_tag);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(refindex_suite());
}
