/*
 * fuzz_s3_xml.c — libFuzzer target: the readers of S3's answers (core/backend/s3_xml.c):
 * error documents, ListObjectsV2 pages, ListMultipartUploads pages and InitiateMultipartUpload
 * results, which come from the network.
 *
 * Properties checked on every input (read as the body, not NUL-terminated):
 *  - nothing is read outside the input (ASan);
 *  - outputs are NUL-terminated within their buffers;
 *  - a listing either fails with CMK_E_CORRUPT and a message, or gives keys of at most
 *    CMK_S3_KEY_MAX - 1 bytes without NULs and times at or after the epoch (or -1: none),
 *    and a truncated page always has a token;
 *  - an upload listing likewise: keys and ids nonempty and NUL-terminated, times at or after
 *    the epoch, a truncated page always has a key marker;
 *  - a time is read only if all of it is one (the input as a string).
 * Seeds: tests/fuzz/corpus/fuzz_s3_xml/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend/s3_xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_obj(const cmk_s3_obj *o, void *arg)
{
    size_t n = strnlen(o->key, sizeof(o->key));

    if (n == 0 || n >= sizeof(o->key) || o->mtime < -1)
        abort();
    (*(int *)arg)++;
    return 0;
}

static int on_upload(const cmk_s3_upload *u, void *arg)
{
    size_t kn = strnlen(u->key, sizeof(u->key)), in = strnlen(u->id, sizeof(u->id));

    if (kn == 0 || kn >= sizeof(u->key) || in == 0 || in >= sizeof(u->id) || u->initiated < 0)
        abort();
    (*(int *)arg)++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = malloc(size ? size : 1), code[16], msg[64], next[128], id[64];
    cmk_errbuf eb;
    int trunc, stopped, n = 0;
    cmk_err rc;

    if (!body)
        return 0;
    memcpy(body, data, size);
    memset(&eb, 0, sizeof(eb));
    cmk_s3_xml_error(body, size, code, sizeof(code), msg, sizeof(msg));
    if (strnlen(code, sizeof(code)) >= sizeof(code) || strnlen(msg, sizeof(msg)) >= sizeof(msg))
        abort();
    rc = cmk_s3_xml_list(body, size, on_obj, &n, &trunc, next, sizeof(next), &stopped, &eb);
    if (rc != CMK_OK && (rc != CMK_E_CORRUPT || !eb.msg[0]))
        abort();
    if (rc == CMK_OK && trunc && !next[0])
        abort();
    memset(&eb, 0, sizeof(eb));
    rc = cmk_s3_xml_uploads(body, size, on_upload, &n, &trunc, next, sizeof(next), id, sizeof(id),
                            &stopped, &eb);
    if (rc != CMK_OK && (rc != CMK_E_CORRUPT || !eb.msg[0]))
        abort();
    if (rc == CMK_OK && trunc && !next[0])
        abort();
    if (strnlen(next, sizeof(next)) >= sizeof(next) || strnlen(id, sizeof(id)) >= sizeof(id))
        abort();
    {
        char *str = malloc(size + 1);
        int64_t t = -1;

        if (str) {
            memcpy(str, data, size);
            str[size] = '\0';
            if (cmk_s3_xml_time(str, &t) == 0 && t < 0)
                abort();
            free(str);
        }
    }
    memset(&eb, 0, sizeof(eb));
    rc = cmk_s3_xml_upload_id(body, size, id, sizeof(id), &eb);
    if (rc == CMK_OK && (!id[0] || strnlen(id, sizeof(id)) >= sizeof(id)))
        abort();
    free(body);
    return 0;
}
