/*
 * s3_xml.h — the S3 backend's readers of what an object store answers (core/backend/s3*.c):
 * error documents, ListObjectsV2 pages, ListMultipartUploads pages and InitiateMultipartUpload
 * results. Pure functions
 * over the bytes received, bounded by their length (the body is not NUL-terminated and may
 * be anything a peer sends): tests/fuzz/fuzz_s3_xml.c.
 *
 * Only what S3 and its compatible servers send is read: elements without attributes, text
 * with the five predefined entities and numeric character references. A document that is
 * not of that shape is CMK_E_CORRUPT ("the object store's answer ... is malformed").
 */
#ifndef CMK_BACKEND_S3_XML_H
#define CMK_BACKEND_S3_XML_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"

/* Longest object key S3 takes (1024 bytes UTF-8) and its NUL. */
#define CMK_S3_KEY_MAX 1025

/* The <Code> and <Message> of an S3 error document, each cut to its buffer (always
 * NUL-terminated; "" when absent). 1 if a <Code> was found, else 0. */
int cmk_s3_xml_error(const char *body, size_t len, char *code, size_t code_cap, char *msg,
                     size_t msg_cap);

/* One object of a listing page. */
typedef struct cmk_s3_obj {
    char key[CMK_S3_KEY_MAX];
    uint64_t size;
    int64_t mtime; /* <LastModified>, seconds since the epoch; -1 if absent */
} cmk_s3_obj;

/* Reads a ListObjectsV2 page: cb for every <Contents> (a nonzero return stops: *stopped 1),
 * *truncated from <IsTruncated>, and next (cap bytes) the <NextContinuationToken> (""
 * if none). CMK_E_CORRUPT if the page is malformed (a key too long or with a NUL, a size
 * that is no number, a <LastModified> that is not an ISO 8601 UTC time, a truncated page
 * without a token). */
CMK_MUST_CHECK cmk_err cmk_s3_xml_list(const char *body, size_t len,
                                       int (*cb)(const cmk_s3_obj *o, void *arg), void *arg,
                                       int *truncated, char *next, size_t cap, int *stopped,
                                       cmk_errbuf *eb);

/* Longest upload id taken (S3's are ~100 bytes, RGW's ~40) and its NUL. */
#define CMK_S3_UPLOAD_ID_MAX 512

/* One incomplete multipart upload of a ListMultipartUploads page. */
typedef struct cmk_s3_upload {
    char key[CMK_S3_KEY_MAX];
    char id[CMK_S3_UPLOAD_ID_MAX];
    int64_t initiated; /* <Initiated>, seconds since the epoch (UTC, fraction dropped) */
} cmk_s3_upload;

/* Reads a ListMultipartUploads page: cb for every <Upload> (a nonzero return stops:
 * *stopped 1), *truncated from <IsTruncated>, and the markers of the next page into
 * next_key (kcap) and next_id (icap) from <NextKeyMarker> and <NextUploadIdMarker> (""
 * if none). CMK_E_CORRUPT if the page is malformed (a key or id missing, too long or with a
 * NUL, an <Initiated> that is not an ISO 8601 UTC time, a truncated page without a key
 * marker). */
CMK_MUST_CHECK cmk_err cmk_s3_xml_uploads(const char *body, size_t len,
                                          int (*cb)(const cmk_s3_upload *u, void *arg), void *arg,
                                          int *truncated, char *next_key, size_t kcap,
                                          char *next_id, size_t icap, int *stopped, cmk_errbuf *eb);

/* Seconds since the epoch of an ISO 8601 UTC time "YYYY-MM-DDTHH:MM:SS[.fff]Z" (s, NUL-
 * terminated): -1 if it is not one (fields out of range, another zone, trailing bytes). */
int cmk_s3_xml_time(const char *s, int64_t *out);

/* The <UploadId> of an InitiateMultipartUploadResult into id (cap bytes): CMK_E_CORRUPT if
 * missing, empty or too long. */
CMK_MUST_CHECK cmk_err cmk_s3_xml_upload_id(const char *body, size_t len, char *id, size_t cap,
                                            cmk_errbuf *eb);

/* Decodes the text between two tags (entities, character references) into out (cap bytes,
 * NUL-terminated): -1 if malformed, holds a NUL, or does not fit; else its length. */
int cmk_s3_xml_text(const char *p, size_t n, char *out, size_t cap);

/* Escapes s for element text (&, <, >) into out: -1 if it does not fit, else its length. */
int cmk_s3_xml_escape(const char *s, char *out, size_t cap);

#endif
