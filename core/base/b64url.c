/* b64url.c — base64url (see b64url.h). */
#include "core/base/b64url.h"

static const char b64url_abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

long cmk_b64url_encode(const unsigned char *in, size_t n, char *out, size_t cap)
{
    size_t o = 0, i = 0;

    if (cap < (n + 2) / 3 * 4 + 1)
        return -1;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url_abc[v >> 18];
        out[o++] = b64url_abc[(v >> 12) & 63];
        out[o++] = b64url_abc[(v >> 6) & 63];
        out[o++] = b64url_abc[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0);
        out[o++] = b64url_abc[v >> 18];
        out[o++] = b64url_abc[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = b64url_abc[(v >> 6) & 63];
    }
    out[o] = '\0';
    return (long)o;
}

static int b64url_val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '-' ? 62 : c == '_' ? 63 : -1;
}

long cmk_b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
    unsigned acc = 0;
    size_t o = 0;
    int bits = 0;

    while (n > 0 && in[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_val(in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6 | (unsigned)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    /* The leftover bits of the last character must be zero (a canonical encoding). */
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return -1;
    return (long)o;
}
