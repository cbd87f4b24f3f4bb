/*
 * test_s3_xml.c — the S3 backend's pure parts: XML answers (errors, listings, upload ids,
 * entities, bounds), store names, endpoints and object URLs (s3_conf.c).
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "core/backend/s3_conf.h"
#include "core/backend/s3_xml.h"
#include "tests/check.h"

static cmk_errbuf eb;

static int collect(const cmk_s3_obj *o, void *arg)
{
    char *all = arg;
    char n[32];
    strcat(all, o->key);
    snprintf(n, sizeof(n), "=%llu;", (unsigned long long)o->size);
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
                       "<Contents><Key>p/meta/a&amp;b</Key><Size>12</Size><ETag>&quot;x&quot;"
                       "</ETag></Contents><Contents><Key>p/blobs/sha256/ab</Key><Size>0</Size>"
                       "</Contents><IsTruncated>true</IsTruncated>"
                       "<NextContinuationToken>tok/+=</NextContinuationToken></ListBucketResult>";
    char all[512] = "", next[64];
    int trunc = 0, stopped = 0, n = 0;

    CHECK_OK(cmk_s3_xml_list(page, strlen(page), collect, all, &trunc, next, sizeof(next), &stopped,
                             &eb));
    CHECK_MSG(strcmp(all, "p/meta/a&b=12;p/blobs/sha256/ab=0;") == 0, "%s", all);
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
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
            CHECK_MSG(cmk_s3_xml_list(bad[i], strlen(bad[i]), collect, all, &trunc, next,
                                      sizeof(next), &stopped, &eb) == CMK_E_CORRUPT,
                      "%s", bad[i]);
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

int main(void)
{
    test_error();
    test_list();
    test_text();
    test_names();
    test_conf_env();
    return check_summary();
}
