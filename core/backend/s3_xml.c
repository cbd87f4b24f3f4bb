/* s3_xml.c — readers of S3's XML answers (s3_xml.h): a bounded scan for elements by name;
 * nothing is trusted to be NUL-terminated or well-formed. */
#define _GNU_SOURCE
#include "core/backend/s3_xml.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The next element <tag>text</tag> in [*pos, end): its text in [*vs, *ve), *pos after its
 * end. An element written <tag/> has empty text. 0 if there is none. */
static int next_elem(const char **pos, const char *end, const char *tag, const char **vs,
                     const char **ve)
{
    char open[80], close[80], empty[80];
    size_t tl = strlen(tag);
    const char *p = *pos;

    if (tl + 4 > sizeof(open) || p >= end)
        return 0;
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    snprintf(empty, sizeof(empty), "<%s/>", tag);
    for (;;) {
        const char *o = memmem(p, (size_t)(end - p), open, tl + 2);
        const char *e = memmem(p, (size_t)(end - p), empty, tl + 3);
        const char *c;

        if (e && (!o || e < o)) {
            *vs = *ve = e + tl + 3;
            *pos = e + tl + 3;
            return 1;
        }
        if (!o)
            return 0;
        o += tl + 2;
        c = memmem(o, (size_t)(end - o), close, tl + 3);
        if (!c)
            return 0;
        *vs = o;
        *ve = c;
        *pos = c + tl + 3;
        return 1;
    }
}

/* The text of the first <tag> in [p, end) decoded into out; -1 if absent or bad. */
static int first_text(const char *p, const char *end, const char *tag, char *out, size_t cap)
{
    const char *vs, *ve;

    if (!next_elem(&p, end, tag, &vs, &ve))
        return -1;
    return cmk_s3_xml_text(vs, (size_t)(ve - vs), out, cap);
}

static int put_byte(char *out, size_t cap, size_t *n, unsigned c)
{
    if (*n + 1 >= cap)
        return -1;
    out[(*n)++] = (char)c;
    return 0;
}

/* UTF-8 of code point cp (no NUL, no surrogates, at most U+10FFFF). */
static int put_utf8(char *out, size_t cap, size_t *n, unsigned long cp)
{
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return -1;
    if (cp < 0x80)
        return put_byte(out, cap, n, (unsigned)cp);
    if (cp < 0x800)
        return put_byte(out, cap, n, 0xC0 | (unsigned)(cp >> 6)) ||
                       put_byte(out, cap, n, 0x80 | (unsigned)(cp & 0x3F))
                   ? -1
                   : 0;
    if (cp < 0x10000)
        return put_byte(out, cap, n, 0xE0 | (unsigned)(cp >> 12)) ||
                       put_byte(out, cap, n, 0x80 | (unsigned)((cp >> 6) & 0x3F)) ||
                       put_byte(out, cap, n, 0x80 | (unsigned)(cp & 0x3F))
                   ? -1
                   : 0;
    return put_byte(out, cap, n, 0xF0 | (unsigned)(cp >> 18)) ||
                   put_byte(out, cap, n, 0x80 | (unsigned)((cp >> 12) & 0x3F)) ||
                   put_byte(out, cap, n, 0x80 | (unsigned)((cp >> 6) & 0x3F)) ||
                   put_byte(out, cap, n, 0x80 | (unsigned)(cp & 0x3F))
               ? -1
               : 0;
}

int cmk_s3_xml_text(const char *p, size_t len, char *out, size_t cap)
{
    static const struct {
        const char *name;
        char c;
    } ents[] = {{"amp;", '&'}, {"lt;", '<'}, {"gt;", '>'}, {"quot;", '"'}, {"apos;", '\''}};
    size_t n = 0, i = 0;

    if (cap == 0)
        return -1;
    while (i < len) {
        unsigned char c = (unsigned char)p[i];

        if (c == '\0' || c == '<')
            return -1;
        if (c != '&') {
            if (put_byte(out, cap, &n, c))
                return -1;
            i++;
            continue;
        }
        i++;
        if (i < len && p[i] == '#') {
            unsigned long cp = 0;
            int hex = 0, digits = 0;

            i++;
            if (i < len && (p[i] == 'x' || p[i] == 'X')) {
                hex = 1;
                i++;
            }
            for (; i < len && p[i] != ';'; i++, digits++) {
                char d = p[i];
                int v = d >= '0' && d <= '9'          ? d - '0'
                        : hex && d >= 'a' && d <= 'f' ? d - 'a' + 10
                        : hex && d >= 'A' && d <= 'F' ? d - 'A' + 10
                                                      : -1;
                if (v < 0 || digits >= 8)
                    return -1;
                cp = cp * (hex ? 16 : 10) + (unsigned long)v;
            }
            if (i >= len || digits == 0 || put_utf8(out, cap, &n, cp))
                return -1;
            i++;
            continue;
        }
        {
            size_t k;

            for (k = 0; k < sizeof(ents) / sizeof(ents[0]); k++) {
                size_t el = strlen(ents[k].name);
                if (len - i >= el && memcmp(p + i, ents[k].name, el) == 0) {
                    if (put_byte(out, cap, &n, (unsigned char)ents[k].c))
                        return -1;
                    i += el;
                    break;
                }
            }
            if (k == sizeof(ents) / sizeof(ents[0]))
                return -1;
        }
    }
    out[n] = '\0';
    return (int)n;
}

int cmk_s3_xml_escape(const char *s, char *out, size_t cap)
{
    size_t n = 0;

    for (; *s; s++) {
        const char *rep = *s == '&' ? "&amp;" : *s == '<' ? "&lt;" : *s == '>' ? "&gt;" : NULL;
        size_t rl = rep ? strlen(rep) : 1;

        if (n + rl >= cap)
            return -1;
        if (rep)
            memcpy(out + n, rep, rl);
        else
            out[n] = *s;
        n += rl;
    }
    if (cap == 0)
        return -1;
    out[n] = '\0';
    return (int)n;
}

int cmk_s3_xml_error(const char *body, size_t len, char *code, size_t code_cap, char *msg,
                     size_t msg_cap)
{
    const char *end = body ? body + len : NULL;
    int found;

    if (code_cap)
        code[0] = '\0';
    if (msg_cap)
        msg[0] = '\0';
    if (!body)
        return 0;
    found = first_text(body, end, "Code", code, code_cap) > 0;
    if (!found && code_cap)
        code[0] = '\0';
    if (first_text(body, end, "Message", msg, msg_cap) < 0 && msg_cap)
        msg[0] = '\0';
    return found;
}

static cmk_err malformed(cmk_errbuf *eb, const char *what)
{
    return cmk_errbuf_set(eb, CMK_E_CORRUPT, "the object store's answer (%s) is malformed", what);
}

cmk_err cmk_s3_xml_list(const char *body, size_t len, int (*cb)(const cmk_s3_obj *o, void *arg),
                        void *arg, int *truncated, char *next, size_t cap, int *stopped,
                        cmk_errbuf *eb)
{
    const char *end = body + len, *pos = body, *vs, *ve;
    char tr[16];
    cmk_s3_obj *o = malloc(sizeof(*o));
    cmk_err rc = CMK_OK;

    *truncated = 0;
    *stopped = 0;
    if (cap)
        next[0] = '\0';
    if (!o)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (listing)");
    if (!memmem(body, len, "<ListBucketResult", 17)) {
        rc = malformed(eb, "object listing");
        goto out;
    }
    while (next_elem(&pos, end, "Contents", &vs, &ve)) {
        char sz[32], tm[64], *e = NULL;

        if (first_text(vs, ve, "Key", o->key, sizeof(o->key)) <= 0) {
            rc = malformed(eb, "object listing: a key");
            goto out;
        }
        if (first_text(vs, ve, "Size", sz, sizeof(sz)) <= 0 || sz[0] < '0' || sz[0] > '9') {
            rc = malformed(eb, "object listing: a size");
            goto out;
        }
        o->size = strtoull(sz, &e, 10);
        if (*e != '\0') {
            rc = malformed(eb, "object listing: a size");
            goto out;
        }
        /* LastModified: what a sweep's grace is measured from; -1 where a server omits it
         * (never old enough to delete). */
        o->mtime = -1;
        if (first_text(vs, ve, "LastModified", tm, sizeof(tm)) > 0 &&
            cmk_s3_xml_time(tm, &o->mtime) < 0) {
            rc = malformed(eb, "object listing: a time");
            goto out;
        }
        if (cb(o, arg)) {
            *stopped = 1;
            goto out;
        }
    }
    if (first_text(body, end, "IsTruncated", tr, sizeof(tr)) > 0 && strcmp(tr, "true") == 0)
        *truncated = 1;
    if (*truncated && first_text(body, end, "NextContinuationToken", next, cap) <= 0) {
        rc = malformed(eb, "object listing: no continuation token");
        goto out;
    }
out:
    free(o);
    return rc;
}

cmk_err cmk_s3_xml_upload_id(const char *body, size_t len, char *id, size_t cap, cmk_errbuf *eb)
{
    if (first_text(body, body + len, "UploadId", id, cap) <= 0)
        return malformed(eb, "multipart upload: no upload id");
    return CMK_OK;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (valid y, m, d). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* n decimal digits at s into *v: -1 if any is not a digit. */
static int digits(const char *s, int n, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        *v = *v * 10 + (unsigned)(s[i] - '0');
    }
    return 0;
}

int cmk_s3_xml_time(const char *s, int64_t *out)
{
    static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned y, mo, d, h, mi, se;
    size_t n = strlen(s), i = 19;

    /* Each field is read only after the length check shows it is there. */
    if (n < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
        digits(s, 4, &y) || digits(s + 5, 2, &mo) || digits(s + 8, 2, &d) ||
        digits(s + 11, 2, &h) || digits(s + 14, 2, &mi) || digits(s + 17, 2, &se))
        return -1;
    if (s[i] == '.') {
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            ;
        if (i == 20)
            return -1;
    }
    if (i + 1 != n || s[i] != 'Z')
        return -1;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
        (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))) || h > 23 ||
        mi > 59 || se > 60)
        return -1;
    *out = days_from_civil(y, mo, d) * 86400 + (int64_t)h * 3600 + mi * 60 + se;
    return 0;
}

cmk_err cmk_s3_xml_uploads(const char *body, size_t len,
                           int (*cb)(const cmk_s3_upload *u, void *arg), void *arg, int *truncated,
                           char *next_key, size_t kcap, char *next_id, size_t icap, int *stopped,
                           cmk_errbuf *eb)
{
    const char *end = body + len, *pos = body, *vs, *ve;
    char tr[16];
    cmk_s3_upload *u = malloc(sizeof(*u));
    cmk_err rc = CMK_OK;

    *truncated = 0;
    *stopped = 0;
    if (kcap)
        next_key[0] = '\0';
    if (icap)
        next_id[0] = '\0';
    if (!u)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "out of memory (upload listing)");
    if (!memmem(body, len, "<ListMultipartUploadsResult", 27)) {
        rc = malformed(eb, "upload listing");
        goto out;
    }
    while (next_elem(&pos, end, "Upload", &vs, &ve)) {
        char when[40];

        if (first_text(vs, ve, "Key", u->key, sizeof(u->key)) <= 0) {
            rc = malformed(eb, "upload listing: a key");
            goto out;
        }
        if (first_text(vs, ve, "UploadId", u->id, sizeof(u->id)) <= 0) {
            rc = malformed(eb, "upload listing: an upload id");
            goto out;
        }
        if (first_text(vs, ve, "Initiated", when, sizeof(when)) <= 0 ||
            cmk_s3_xml_time(when, &u->initiated) < 0) {
            rc = malformed(eb, "upload listing: a time");
            goto out;
        }
        if (cb(u, arg)) {
            *stopped = 1;
            goto out;
        }
    }
    if (first_text(body, end, "IsTruncated", tr, sizeof(tr)) > 0 && strcmp(tr, "true") == 0)
        *truncated = 1;
    if (*truncated && first_text(body, end, "NextKeyMarker", next_key, kcap) <= 0) {
        rc = malformed(eb, "upload listing: no next key marker");
        goto out;
    }
    /* The id marker may be absent (the next page then starts after every upload of the key). */
    if (*truncated && first_text(body, end, "NextUploadIdMarker", next_id, icap) < 0 && icap)
        next_id[0] = '\0';
out:
    free(u);
    return rc;
}
