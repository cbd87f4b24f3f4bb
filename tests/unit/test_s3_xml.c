/*
 * test_s3_xml.c — the S3 backend's pure parts: XML answers (errors, listings and their
 * LastModified, upload listings and their times, upload ids, entities, bounds), store names,
 * endpoints and object URLs (s3_conf.c), link objects (s3_link.c).
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "core/backend/s3_conf.h"
#include "core/backend/s3_link.h"
#include "core/backend/s3_xml.h"
#include "tests/check.h"

static cmk_errbuf eb;

static int collect(const cmk_s3_obj *o, void *arg)
{
    char *all = arg;
    char n[32];
    strcat(all, o->key);
    snprintf(n, sizeof(n), "=%llu@%lld;", (unsigned long long)o->size, (long long)o->mtime);
    strcat(all, n);
    return 0;
}

static int stop(const cmk_s3_obj *o, void *arg)
{
    (void)o;
    (*(int *)arg)++;
    return 1;
}

static void test_error(void)
{
    const char *doc = "<?xml version=\"1.0\"?><Error><Code>PreconditionFailed</Code>"
                      "<Message>At least one &lt;condition&gt; failed</Message>"
                      "<BucketName>b</BucketName></Error>";
    char code[64], msg[256];

    CHECK(cmk_s3_xml_error(doc, strlen(doc), code, sizeof(code), msg, sizeof(msg)) == 1);
    CHECK(strcmp(code, "PreconditionFailed") == 0);
    CHECK(strcmp(msg, "At least one <condition> failed") == 0);
    /* Cut off before the closing tag: nothing is read past the end. */
    CHECK(cmk_s3_xml_error(doc, 50, code, sizeof(code), msg, sizeof(msg)) == 0);
    CHECK(code[0] == '\0' && msg[0] == '\0');
    CHECK(cmk_s3_xml_error("", 0, code, sizeof(code), msg, sizeof(msg)) == 0);
    CHECK(cmk_s3_xml_error(NULL, 0, code, sizeof(code), msg, sizeof(msg)) == 0);
    /* A code longer than the buffer is refused, not cut into another code. */
    CHECK(cmk_s3_xml_error("<Code>AAAAAAAAAAAAAAAAAAAA</Code>", 32, code, 8, msg, sizeof(msg)) ==
          0);
}

static void test_list(void)
{
    const char *page = "<ListBucketResult><Name>b</Name><Prefix>p/</Prefix>"
                       "<Contents><Key>p/meta/a&amp;b</Key><Size>12</Size>"
                       "<LastModified>2026-12-06T09:48:01.123Z</LastModified><ETag>&quot;x&quot;"
                       "</ETag></Contents><Contents><Key>p/blobs/sha256/ab</Key><Size>0</Size>"
                       "</Contents><IsTruncated>true</IsTruncated>"
                       "<NextContinuationToken>tok/+=</NextContinuationToken></ListBucketResult>";
    char all[512] = "", next[64];
    int trunc = 0, stopped = 0, n = 0;

    CHECK_OK(cmk_s3_xml_list(page, strlen(page), collect, all, &trunc, next, sizeof(next), &stopped,
                             &eb));
    CHECK_MSG(strcmp(all, "p/meta/a&b=12@1796550481;p/blobs/sha256/ab=0@-1;") == 0, "%s", all);
    CHECK(trunc == 1 && stopped == 0 && strcmp(next, "tok/+=") == 0);
    CHECK_OK(
        cmk_s3_xml_list(page, strlen(page), stop, &n, &trunc, next, sizeof(next), &stopped, &eb));
    CHECK(n == 1 && stopped == 1);
    {
        const char *last = "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>";
        CHECK_OK(cmk_s3_xml_list(last, strlen(last), collect, all, &trunc, next, sizeof(next),
                                 &stopped, &eb));
        CHECK(trunc == 0 && next[0] == '\0');
    }
    {
        const char *bad[] = {
            "<Error><Code>x</Code></Error>",
            "<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><Key>k</Key><Size>1x</Size></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><Key>a&bogus;</Key><Size>1</Size></Contents>"
            "</ListBucketResult>",
            "<ListBucketResult><Contents><Key>a&#0;</Key><Size>1</Size></Contents>"
            "</ListBucketResult>",
            "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
            "<ListBucketResult><Contents><Key>k</Key><Size>1</Size><LastModified>yesterday"
            "</LastModified></Contents></ListBucketResult>",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
            CHECK_MSG(cmk_s3_xml_list(bad[i], strlen(bad[i]), collect, all, &trunc, next,
                                      sizeof(next), &stopped, &eb) == CMK_E_CORRUPT,
                      "%s", bad[i]);
    }
}

static int collect_up(const cmk_s3_upload *u, void *arg)
{
    char *all = arg;
    char n[32];
    strcat(all, u->key);
    strcat(all, "|");
    strcat(all, u->id);
    snprintf(n, sizeof(n), "@%lld;", (long long)u->initiated);
    strcat(all, n);
    return 0;
}

static void test_uploads(void)
{
    const char *page =
        "<?xml version=\"1.0\"?><ListMultipartUploadsResult><Bucket>b</Bucket>"
        "<NextKeyMarker>p/data/b</NextKeyMarker><NextUploadIdMarker>2~y</NextUploadIdMarker>"
        "<IsTruncated>true</IsTruncated>"
        "<Upload><Key>p/data/a</Key><UploadId>2~x&amp;1</UploadId><Initiator><ID>u</ID>"
        "</Initiator><Initiated>1970-01-02T00:00:01.500Z</Initiated></Upload>"
        "<Upload><Key>p/data/b</Key><UploadId>2~y</UploadId>"
        "<Initiated>2026-12-06T08:14:30Z</Initiated></Upload></ListMultipartUploadsResult>";
    char all[512] = "", nk[64], ni[64];
    int trunc = 0, stopped = 0;
    int64_t t = 0;

    CHECK_OK(cmk_s3_xml_uploads(page, strlen(page), collect_up, all, &trunc, nk, sizeof(nk), ni,
                                sizeof(ni), &stopped, &eb));
    CHECK_MSG(strcmp(all, "p/data/a|2~x&1@86401;p/data/b|2~y@1796544870;") == 0, "%s", all);
    CHECK(trunc == 1 && stopped == 0 && strcmp(nk, "p/data/b") == 0 && strcmp(ni, "2~y") == 0);
    {
        const char *last = "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated>"
                           "</ListMultipartUploadsResult>";
        all[0] = '\0';
        CHECK_OK(cmk_s3_xml_uploads(last, strlen(last), collect_up, all, &trunc, nk, sizeof(nk), ni,
                                    sizeof(ni), &stopped, &eb));
        CHECK(trunc == 0 && nk[0] == '\0' && ni[0] == '\0' && all[0] == '\0');
    }
    {
        const char *bad[] = {
            "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>",
            "<ListMultipartUploadsResult><Upload><UploadId>x</UploadId><Initiated>"
            "2026-01-01T00:00:00Z</Initiated></Upload></ListMultipartUploadsResult>",
            "<ListMultipartUploadsResult><Upload><Key>k</Key><Initiated>"
            "2026-01-01T00:00:00Z</Initiated></Upload></ListMultipartUploadsResult>",
            "<ListMultipartUploadsResult><Upload><Key>k</Key><UploadId>x</UploadId>"
            "</Upload></ListMultipartUploadsResult>",
            "<ListMultipartUploadsResult><Upload><Key>k</Key><UploadId>x</UploadId><Initiated>"
            "2026-01-01T00:00:00+01:00</Initiated></Upload></ListMultipartUploadsResult>",
            "<ListMultipartUploadsResult><IsTruncated>true</IsTruncated>"
            "</ListMultipartUploadsResult>",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
            CHECK_MSG(cmk_s3_xml_uploads(bad[i], strlen(bad[i]), collect_up, all, &trunc, nk,
                                         sizeof(nk), ni, sizeof(ni), &stopped,
                                         &eb) == CMK_E_CORRUPT,
                      "%s", bad[i]);
    }
    /* Times: exactly "YYYY-MM-DDTHH:MM:SS[.f+]Z", real dates only. */
    CHECK(cmk_s3_xml_time("1970-01-01T00:00:00Z", &t) == 0 && t == 0);
    CHECK(cmk_s3_xml_time("2000-03-01T00:00:00.000Z", &t) == 0 && t == 951868800);
    CHECK(cmk_s3_xml_time("2024-02-29T12:00:00Z", &t) == 0 && t == 1709208000);
    {
        const char *bad[] = {"",
                             "2023-02-29T00:00:00Z",
                             "1969-12-31T23:59:59Z",
                             "2026-13-01T00:00:00Z",
                             "2026-01-01T24:00:00Z",
                             "2026-01-01T00:00:00",
                             "2026-01-01T00:00:00.Z",
                             "2026-01-01T00:00:00Zx",
                             "2026-01-01 00:00:00Z",
                             "2026-1-01T00:00:00Z"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
            CHECK_MSG(cmk_s3_xml_time(bad[i], &t) == -1, "%s", bad[i]);
    }
}

static void test_text(void)
{
    char out[16];

    CHECK(cmk_s3_xml_text("a&#x41;&#66;&apos;", 18, out, sizeof(out)) == 4);
    CHECK(strcmp(out, "aAB'") == 0);
    CHECK(cmk_s3_xml_text("&#xe9;", 6, out, sizeof(out)) == 2);
    CHECK(cmk_s3_xml_text("&#xD800;", 8, out, sizeof(out)) == -1);
    CHECK(cmk_s3_xml_text("&#x110000;", 10, out, sizeof(out)) == -1);
    CHECK(cmk_s3_xml_text("&amp", 4, out, sizeof(out)) == -1);
    CHECK(cmk_s3_xml_text("0123456789abcdef", 16, out, sizeof(out)) == -1);
    {
        char big[32];
        CHECK(cmk_s3_xml_escape("a<b&c>", big, sizeof(big)) == 16);
        CHECK(strcmp(big, "a&lt;b&amp;c&gt;") == 0);
    }
    CHECK(cmk_s3_xml_escape("&&&&", out, 8) == -1);
    {
        char id[64];
        const char *doc = "<InitiateMultipartUploadResult><UploadId>2~abc.def</UploadId>"
                          "</InitiateMultipartUploadResult>";
        CHECK_OK(cmk_s3_xml_upload_id(doc, strlen(doc), id, sizeof(id), &eb));
        CHECK(strcmp(id, "2~abc.def") == 0);
        CHECK_RC(cmk_s3_xml_upload_id("<UploadId></UploadId>", 21, id, sizeof(id), &eb),
                 CMK_E_CORRUPT);
        CHECK_RC(cmk_s3_xml_upload_id(doc, strlen(doc), id, 4, &eb), CMK_E_CORRUPT);
    }
}

static void test_names(void)
{
    char b[64], p[512], url[2048], name[700];
    cmk_s3_conf c;

    CHECK_OK(cmk_s3_parse_name("s3://my-bucket", b, sizeof(b), p, sizeof(p), &eb));
    CHECK(strcmp(b, "my-bucket") == 0 && p[0] == '\0');
    CHECK_OK(cmk_s3_parse_name("s3://my.bucket//a//b_c/", b, sizeof(b), p, sizeof(p), &eb));
    CHECK(strcmp(b, "my.bucket") == 0 && strcmp(p, "a/b_c/") == 0);
    {
        const char *bad[] = {"s3://",        "s3://ab",   "s3://Abc",      "s3://-abc",
                             "s3://abc-",    "s3://a..b", "s3://abc/../x", "s3://abc/./x",
                             "s3://abc/a b", "file:///x", "s3://abc/x?y"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
            CHECK_MSG(cmk_s3_parse_name(bad[i], b, sizeof(b), p, sizeof(p), &eb) == CMK_E_INVAL,
                      "%s", bad[i]);
    }
    memset(&c, 0, sizeof(c));
    CHECK_OK(cmk_s3_parse_endpoint("http://127.0.0.1:8080/", &c, &eb));
    CHECK(strcmp(c.endpoint, "http://127.0.0.1:8080") == 0 && c.https == 0);
    CHECK_RC(cmk_s3_parse_endpoint("ftp://x", &c, &eb), CMK_E_INVAL);
    CHECK_RC(cmk_s3_parse_endpoint("http://u:p@x", &c, &eb), CMK_E_INVAL);
    CHECK_RC(cmk_s3_parse_endpoint("http://x/path", &c, &eb), CMK_E_INVAL);
    CHECK_RC(cmk_s3_parse_endpoint("https://", &c, &eb), CMK_E_INVAL);
    snprintf(c.bucket, sizeof(c.bucket), "bkt");
    snprintf(c.prefix, sizeof(c.prefix), "a/b/");
    cmk_s3_conf_name(&c, name, sizeof(name));
    CHECK(strcmp(name, "s3://bkt/a/b") == 0);
    c.path_style = 1;
    CHECK_OK(cmk_s3_url(&c, "a/b/x y+z", "uploads=", url, sizeof(url), &eb));
    CHECK_MSG(strcmp(url, "http://127.0.0.1:8080/bkt/a/b/x%20y%2Bz?uploads=") == 0, "%s", url);
    c.path_style = 0;
    CHECK_OK(cmk_s3_parse_endpoint("https://s3.example.test", &c, &eb));
    CHECK_OK(cmk_s3_url(&c, "k", NULL, url, sizeof(url), &eb));
    CHECK_MSG(strcmp(url, "https://bkt.s3.example.test/k") == 0, "%s", url);
    CHECK(cmk_s3_query_escape("a/b=c~", url, sizeof(url)) > 0 && strcmp(url, "a%2Fb%3Dc~") == 0);
}

static void test_conf_env(void)
{
    cmk_s3_conf c;

    unsetenv("AWS_ENDPOINT_URL_S3");
    setenv("AWS_ENDPOINT_URL", "http://localhost:9000", 1);
    setenv("AWS_REGION", "eu-west-3", 1);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("CMKSTORE_S3_ADDRESSING");
    setenv("AWS_SECRET_ACCESS_KEY", "not-shown-anywhere", 1);
    CHECK_RC(cmk_s3_conf_load("s3://bkt/p", &c, &eb), CMK_E_REFUSED);
    CHECK(strstr(eb.msg, "AWS_ACCESS_KEY_ID") != NULL && !strstr(eb.msg, "not-shown-anywhere"));
    setenv("AWS_ACCESS_KEY_ID", "AKID", 1);
    CHECK_OK(cmk_s3_conf_load("s3://bkt/p", &c, &eb));
    CHECK(c.path_style == 1 && strcmp(c.region, "eu-west-3") == 0 && strcmp(c.prefix, "p/") == 0);
    setenv("AWS_ENDPOINT_URL_S3", "https://objects.example.test", 1);
    CHECK_OK(cmk_s3_conf_load("s3://bkt", &c, &eb));
    CHECK(c.path_style == 0 && c.https == 1);
    setenv("CMKSTORE_S3_ADDRESSING", "path", 1);
    CHECK_OK(cmk_s3_conf_load("s3://bkt", &c, &eb));
    CHECK(c.path_style == 1);
    cmk_s3_conf_wipe(&c);
    CHECK(c.secret_key[0] == '\0');
    setenv("CMKSTORE_S3_ADDRESSING", "sideways", 1);
    CHECK_RC(cmk_s3_conf_load("s3://bkt", &c, &eb), CMK_E_INVAL);
}

static void test_link(void)
{
    char out[CMK_S3_LINK_MAX], data[64], small[8];
    uint64_t size = 0;
    int n = cmk_s3_link_format(out, sizeof(out), "data/0123456789abcdef", 41943040);

    CHECK(n > 0 && strcmp(out, "CMKSLINK\ndata/0123456789abcdef\n41943040\n") == 0);
    CHECK(cmk_s3_link_parse(out, (size_t)n, data, sizeof(data), &size) == 1);
    CHECK(strcmp(data, "data/0123456789abcdef") == 0 && size == 41943040);
    CHECK(cmk_s3_link_format(small, sizeof(small), "data/0123456789abcdef", 1) == -1);
    /* Not links: another blob's bytes, too short, too long. */
    CHECK(cmk_s3_link_parse("CMKS\x01\x00", 6, data, sizeof(data), &size) == 0 && !data[0]);
    CHECK(cmk_s3_link_parse("CMKSLIN", 7, data, sizeof(data), &size) == 0);
    {
        static char big[CMK_S3_LINK_MAX];
        memcpy(big, out, (size_t)n);
        memset(big + n, 'x', sizeof(big) - (size_t)n);
        CHECK(cmk_s3_link_parse(big, sizeof(big), data, sizeof(data), &size) == 0);
    }
    /* Malformed: fail closed (-1), the key left empty. */
    {
        const char *bad[] = {
            "CMKSLINK\n",
            "CMKSLINK\ndata/x",
            "CMKSLINK\ndata/\n5\n",
            "CMKSLINK\nblobs/x\n5\n",
            "CMKSLINK\ndata/../store.json\n5\n",
            "CMKSLINK\ndata/.hidden\n5\n",
            "CMKSLINK\ndata/a b\n5\n",
            "CMKSLINK\ndata/x\n\n",
            "CMKSLINK\ndata/x\n05\n",
            "CMKSLINK\ndata/x\n-5\n",
            "CMKSLINK\ndata/x\n5",
            "CMKSLINK\ndata/x\n5\ntrailing",
            "CMKSLINK\ndata/x\n18446744073709551616\n",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            int r = cmk_s3_link_parse(bad[i], strlen(bad[i]), data, sizeof(data), &size);
            CHECK_MSG(r == -1 && data[0] == '\0', "%zu: %d", i, r);
        }
    }
    CHECK(cmk_s3_link_parse("CMKSLINK\ndata/x\n18446744073709551615\n", 37, data, sizeof(data),
                            &size) == 1 &&
          size == UINT64_MAX);
    CHECK(cmk_s3_link_parse("CMKSLINK\ndata/x\n0\n", 18, data, sizeof(data), &size) == 1 &&
          size == 0);
    /* A key that does not fit the caller's buffer is malformed, not cut. */
    CHECK(cmk_s3_link_parse(out, (size_t)n, small, sizeof(small), &size) == -1 && !small[0]);
}

int main(void)
{
    test_link();
    test_error();
    test_list();
    test_uploads();
    test_text();
    test_names();
    test_conf_env();
    return check_summary();
}
