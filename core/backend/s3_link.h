/*
 * s3_link.h — the S3 backend's link objects: a blob stored as a completed multipart upload
 * is published by creating blobs/<alg>/<hex> exclusively as a small object that names it,
 * "CMKSLINK\n<data key>\n<size>\n" (data key: "data/<16 hex>", below the store's prefix;
 * size: decimal, the container's bytes). The blob space writes and follows them
 * (s3_publish.c, s3_source.c), the sweep of unreferenced data objects reads every one
 * (s3_sweep.c).
 *
 * The parser is a pure function over bytes read from the object store, bounded by their
 * length: tests/fuzz/fuzz_s3_link.c.
 */
#ifndef CMK_BACKEND_S3_LINK_H
#define CMK_BACKEND_S3_LINK_H

#include <stddef.h>
#include <stdint.h>

#define CMK_S3_LINK_MAGIC "CMKSLINK\n"
/* A link object is shorter than this; anything as long or longer is a blob's own bytes. */
#define CMK_S3_LINK_MAX 1024

/* Writes the link to data key `data` of `size` bytes into out (cap bytes, NUL-terminated):
 * its length, or -1 if it does not fit. */
int cmk_s3_link_format(char *out, size_t cap, const char *data, uint64_t size);

/* Reads buf[0..len), a whole object: 1 if it is a link (its data key into data, cap bytes,
 * and the size into *size), 0 if it is not one (it does not start with the magic, or is
 * CMK_S3_LINK_MAX bytes or more: a blob's own container), -1 if it starts with the magic but
 * is malformed (no key "data/<name>", name of [A-Za-z0-9._-] not starting with '.', that fits in
 * cap, a size that is not a canonical decimal number below 2^64, anything after the size's
 * newline). */
int cmk_s3_link_parse(const void *buf, size_t len, char *data, size_t cap, uint64_t *size);

#endif
