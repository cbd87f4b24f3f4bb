/*
 * s3_link.c — the S3 backend's link objects (s3_link.h).
 */
#include "core/backend/s3_link.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

int cmk_s3_link_format(char *out, size_t cap, const char *data, uint64_t size)
{
    int n = snprintf(out, cap, CMK_S3_LINK_MAGIC "%s\n%" PRIu64 "\n", data, size);

    return n < 0 || (size_t)n >= cap ? -1 : n;
}

static int key_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

int cmk_s3_link_parse(const void *buf, size_t len, char *data, size_t cap, uint64_t *size)
{
    const unsigned char *p = buf, *end = p + len;
    const size_t ml = sizeof(CMK_S3_LINK_MAGIC) - 1;
    size_t kl = 0;
    uint64_t v = 0;
    int digits = 0;

    if (cap)
        data[0] = '\0';
    *size = 0;
    if (len < ml || len >= CMK_S3_LINK_MAX || memcmp(p, CMK_S3_LINK_MAGIC, ml) != 0)
        return 0;
    p += ml;
    /* The data key: "data/" and a name of [A-Za-z0-9._-] not starting with '.', then '\n'
     * (what a record key may be: one object right below data/). */
    if ((size_t)(end - p) < 6 || memcmp(p, "data/", 5) != 0 || p[5] == '.')
        return -1;
    kl = 5;
    while (p + kl < end && p[kl] != '\n') {
        if (!key_char(p[kl]))
            return -1;
        kl++;
    }
    if (p + kl == end || kl == 5 || kl >= cap)
        return -1;
    memcpy(data, p, kl);
    data[kl] = '\0';
    p += kl + 1;
    /* Decimal as written: no sign, no leading zero (one spelling per size). */
    if (p < end && *p == '0' && p + 1 < end && p[1] >= '0' && p[1] <= '9')
        goto bad;
    while (p < end && *p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            goto bad;
        v = v * 10 + d;
        digits++;
        p++;
    }
    if (digits == 0 || p == end || *p != '\n' || p + 1 != end)
        goto bad;
    *size = v;
    return 1;
bad:
    data[0] = '\0';
    return -1;
}
