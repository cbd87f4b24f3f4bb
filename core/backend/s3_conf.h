/*
 * s3_conf.h — where an S3 store lives and how it is reached: the store name
 * "s3://BUCKET[/PREFIX]", the endpoint, region, credentials and addressing taken the way the
 * AWS tools take them, and the URL of an object. Pure except cmk_s3_conf_load (environment).
 *
 * Environment: AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL (default
 * https://s3.<region>.amazonaws.com); AWS_REGION, else AWS_DEFAULT_REGION (default
 * us-east-1); AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN; AWS_CA_BUNDLE (a
 * CA file for TLS, which is always verified); CMKSTORE_S3_ADDRESSING "path" or "virtual"
 * (default: path for an IP address or localhost endpoint, else virtual-hosted).
 */
#ifndef CMK_BACKEND_S3_CONF_H
#define CMK_BACKEND_S3_CONF_H

#include <stddef.h>

#include "core/base/error.h"

#define CMK_S3_SCHEME "s3://"
/* Longest full object key this backend makes (prefix and name). */
#define CMK_S3_KEY_MAX_ENC 1100

typedef struct cmk_s3_conf {
    char endpoint[512]; /* "http[s]://host[:port]", no path, no trailing '/' */
    char host[300];     /* host[:port] of the endpoint */
    int https;
    int path_style;
    char region[64];
    char bucket[64];
    char prefix[512]; /* "" or "dir/sub/" (ends in '/'): every key of the store starts so */
    char cafile[1024];
    char access_key[256]; /* secret material from here on: wiped by cmk_s3_conf_wipe */
    char secret_key[256];
    char token[4096];
} cmk_s3_conf;

/* 1 if name is an S3 store name (starts with "s3://"). */
int cmk_s3_is_name(const char *name);

/* Splits "s3://BUCKET[/PREFIX]" into bucket (S3's rules: 3-63 of [a-z0-9.-], starting and
 * ending with a letter or digit) and prefix ("" or segments of [A-Za-z0-9._-] without "."
 * or ".." segments, joined by '/', stored with a trailing '/'; redundant slashes go).
 * CMK_E_INVAL naming what is wrong. */
CMK_MUST_CHECK cmk_err cmk_s3_parse_name(const char *name, char *bucket, size_t bcap, char *prefix,
                                         size_t pcap, cmk_errbuf *eb);

/* Checks an endpoint URL "http[s]://host[:port][/]" and fills c->endpoint, c->host and
 * c->https (CMK_E_INVAL: another scheme, a path, credentials or a query in it). */
CMK_MUST_CHECK cmk_err cmk_s3_parse_endpoint(const char *url, cmk_s3_conf *c, cmk_errbuf *eb);

/* The canonical store name of c: "s3://bucket[/prefix]" (no trailing '/'). */
void cmk_s3_conf_name(const cmk_s3_conf *c, char *out, size_t cap);

/* Fills c for the store `name` from the environment (see the top). CMK_E_INVAL for a bad
 * name or endpoint, CMK_E_REFUSED without credentials (naming the variables). */
CMK_MUST_CHECK cmk_err cmk_s3_conf_load(const char *name, cmk_s3_conf *c, cmk_errbuf *eb);

/* Zeroizes the credentials. */
void cmk_s3_conf_wipe(cmk_s3_conf *c);

/* The URL of object `key` (below the prefix already: the full key) with query (may be
 * NULL or ""; already encoded) into out: CMK_E_INVAL if it does not fit. The key is
 * percent-encoded but for '/' and RFC 3986's unreserved characters, as SigV4 signs it. */
CMK_MUST_CHECK cmk_err cmk_s3_url(const cmk_s3_conf *c, const char *key, const char *query,
                                  char *out, size_t cap, cmk_errbuf *eb);

/* Percent-encodes s for a query value (everything but unreserved characters) into out: -1 if
 * it does not fit, else the length. */
int cmk_s3_query_escape(const char *s, char *out, size_t cap);

#endif
