/* test_s3_xml: proxy/store/s3_xml.c, the reader of S3's XML answers: elements
 * found in order and only inside the buffer, entities and character
 * references decoded, everything that does not fit or does not decode
 * refused (never truncated), buffers without a terminating NUL never read past
 * their end. The documents are shaped like RGW's answers seen in test_s3. */
#include "s3_xml.h"

#include "fixture.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

static const char LIST[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
	"<Name>regslim</Name><Prefix>dir/</Prefix><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>"
	"<Contents><Key>dir/a &amp; b</Key><Size>3</Size></Contents>"
	"<Contents><Key>dir/&lt;c&gt;&#47;&#x41;</Key><Size>12</Size></Contents>"
	"<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken></ListBucketResult>";

START_TEST(elements_in_order_with_entities_decoded)
{
	const char *from = LIST, *end = LIST + strlen(LIST), *bs, *be, *vs, *ve;
	char key[64], size[16];
	const char *want_keys[] = {"dir/a & b", "dir/<c>/A"}, *want_sizes[] = {"3", "12"};
	int n = 0;
	while (s3_xml_span(&from, end, "Contents", &bs, &be)) {
		ck_assert_int_lt(n, 2);
		const char *f2 = bs;
		ck_assert(s3_xml_span(&f2, be, "Key", &vs, &ve));
		ck_assert(s3_xml_text(key, sizeof(key), vs, ve));
		f2 = bs;
		ck_assert(s3_xml_span(&f2, be, "Size", &vs, &ve));
		ck_assert(s3_xml_text(size, sizeof(size), vs, ve));
		ck_assert_str_eq(key, want_keys[n]);
		ck_assert_str_eq(size, want_sizes[n]);
		n++;
	}
	ck_assert_int_eq(n, 2);
	char tok[80];
	s3_xml_get(tok, sizeof(tok), LIST, strlen(LIST), "NextContinuationToken");
	ck_assert_str_eq(tok, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
	s3_xml_get(tok, sizeof(tok), LIST, strlen(LIST), "IsTruncated");
	ck_assert_str_eq(tok, "true");
}
END_TEST

START_TEST(error_document_code_and_absent_message)
{
	const char doc[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code><BucketName>regslim"
	                   "</BucketName><RequestId>tx0000</RequestId><HostId>1-default</HostId></Error>";
	char code[32], msg[32];
	s3_xml_get(code, sizeof(code), doc, strlen(doc), "Code");
	s3_xml_get(msg, sizeof(msg), doc, strlen(doc), "Message");
	ck_assert_str_eq(code, "NoSuchKey");
	ck_assert_str_eq(msg, "");
	s3_xml_get(code, sizeof(code), NULL, 0, "Code");
	ck_assert_str_eq(code, "");
}
END_TEST

START_TEST(element_past_the_end_is_not_found)
{
	const char doc[] = "<Key>a</Key><Key>b</Key>";
	const char *from = doc, *vs, *ve;
	/* the buffer ends inside the second element */
	ck_assert(s3_xml_span(&from, doc + 12, "Key", &vs, &ve));
	ck_assert(!s3_xml_span(&from, doc + 20, "Key", &vs, &ve));
	from = doc;
	ck_assert(!s3_xml_span(&from, doc + 8, "Key", &vs, &ve)); /* no closing tag inside */
	from = doc;
	ck_assert(!s3_xml_span(&from, doc + strlen(doc), "Size", &vs, &ve));
}
END_TEST

START_TEST(refuses_what_does_not_fit_or_decode)
{
	char out[8];
	const char *bad[] = {"a &nbsp; b", "&#0;", "&#x80;", "&#12a;", "&#;", "&", "&#1234567;", "&#x;"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(!s3_xml_text(out, sizeof(out), bad[i], bad[i] + strlen(bad[i])), "accepted '%s'", bad[i]);
	/* fits exactly: 7 characters and the NUL; one more does not */
	static const char seven[] = "abcdefg", eight[] = "abcdefgh";
	ck_assert(s3_xml_text(out, sizeof(out), seven, seven + 7));
	ck_assert_str_eq(out, "abcdefg");
	ck_assert(!s3_xml_text(out, sizeof(out), eight, eight + 8));
	ck_assert(!s3_xml_text(out, 0, "", ""));
	ck_assert(s3_xml_text(out, 1, "", ""));
	ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(never_reads_past_an_unterminated_buffer)
{
	/* heap buffers of exactly their length, no NUL after them (ASan catches an overread) */
	const char *cases[] = {"&#12", "&#x4", "&am", "<Key>ab</Ke"};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = strlen(cases[i]);
		char *b = malloc(n);
		ck_assert_ptr_nonnull(b);
		memcpy(b, cases[i], n);
		char out[16];
		const char *from = b, *vs, *ve;
		if (cases[i][0] == '&')
			ck_assert(!s3_xml_text(out, sizeof(out), b, b + n));
		else
			ck_assert(!s3_xml_span(&from, b + n, "Key", &vs, &ve));
		free(b);
	}
}
END_TEST

static Suite *s3_xml_suite(void)
{
	Suite *s = suite_create("s3_xml");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, elements_in_order_with_entities_decoded);
	tcase_add_test(tc, error_document_code_and_absent_message);
	tcase_add_test(tc, element_past_the_end_is_not_found);
	tcase_add_test(tc, refuses_what_does_not_fit_or_decode);
	tcase_add_test(tc, never_reads_past_an_unterminated_buffer);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return fixture_run_suite(s3_xml_suite());
}
