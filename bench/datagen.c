/* datagen.c — deterministic benchmark data (see datagen.h). */
#define _GNU_SOURCE
#include "bench/datagen.h"

#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

/* ---- random numbers ---- */

uint64_t dg_mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* xoshiro256**: fast and good enough for shaping data; seeded through dg_mix. */
typedef struct rng {
    uint64_t s[4];
} rng;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static void rng_seed(rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = dg_mix(seed + (uint64_t)i * 0x632BE59BD9B4E019ull);
}

static uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

/* Uniform in [0, n). */
static uint32_t rng_below(rng *r, uint32_t n)
{
    return (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

/* Uniform in [0, 1). */
static double rng_unit(rng *r)
{
    return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* About log-uniform in [lo, hi]: a uniform number of doublings, linear within the last
 * one (no libm: the benchmark links only what the library links). */
static size_t rng_logsize(rng *r, size_t lo, size_t hi)
{
    double doublings = 0, v;
    int k;

    for (size_t x = lo; x * 2 <= hi; x *= 2)
        doublings += 1;
    doublings += (double)(hi - (lo << (int)doublings)) / (double)(lo << (int)doublings);
    v = rng_unit(r) * doublings;
    k = (int)v;
    v = (double)(lo << k) * (1.0 + (v - k));
    return v > (double)hi ? hi : (size_t)v;
}

/* ---- an output cursor over the pool ---- */

typedef struct out {
    uint8_t *p;
    size_t len, cap;
} out;

static size_t room(const out *o)
{
    return o->cap - o->len;
}

static void put_bytes(out *o, const void *b, size_t n)
{
    if (n > room(o))
        n = room(o);
    memcpy(o->p + o->len, b, n);
    o->len += n;
}

static void put_str(out *o, const char *s)
{
    put_bytes(o, s, strlen(s));
}

static void put_byte(out *o, uint8_t b)
{
    if (room(o))
        o->p[o->len++] = b;
}

static void put_zeros(out *o, size_t n)
{
    if (n > room(o))
        n = room(o);
    memset(o->p + o->len, 0, n);
    o->len += n;
}

static void put_random(out *o, rng *r, size_t n)
{
    while (n > 0 && room(o)) {
        uint64_t v = rng_next(r);
        size_t k = n < 8 ? n : 8;
        put_bytes(o, &v, k);
        n -= k;
    }
}

/* ---- vocabulary: pseudo-words with a Zipf-like frequency ---- */

#define NWORDS  4096
#define NIDENTS 2048
static char words[NWORDS][16];
static char idents[NIDENTS][32];

static void make_word(rng *r, char *w, size_t cap)
{
    static const char *syl[] = {"re",  "con", "ta",  "in", "er", "st",  "al",  "de", "ti", "ou",
                                "ing", "ex",  "pro", "ma", "lo", "ver", "com", "ly", "ne", "ra",
                                "se",  "ch",  "ul",  "ab", "it", "ion", "ent", "or", "an", "mi"};
    size_t n = 1 + rng_below(r, 3), len = 0;

    for (size_t i = 0; i < n; i++) {
        const char *s = syl[rng_below(r, sizeof(syl) / sizeof(*syl))];
        size_t l = strlen(s);
        if (len + l + 1 >= cap)
            break;
        memcpy(w + len, s, l);
        len += l;
    }
    w[len] = '\0';
}

static void build_vocab(void)
{
    static const char *pre[] = {"get",   "set",  "init", "free", "read", "write", "open",  "close",
                                "parse", "load", "save", "find", "make", "check", "update"};
    static const char *suf[] = {"_ctx",   "_buf",   "_len", "_t",   "_list",  "_node", "_opts", "",
                                "_state", "_count", "_fd",  "_map", "_entry", "_cb",   "_id"};
    rng r;

    rng_seed(&r, 0xC0FFEE);
    for (int i = 0; i < NWORDS; i++)
        make_word(&r, words[i], sizeof(words[i]));
    for (int i = 0; i < NIDENTS; i++) {
        char w[16];
        make_word(&r, w, sizeof(w));
        snprintf(idents[i], sizeof(idents[i]), "%s_%s%s", pre[rng_below(&r, 15)], w,
                 suf[rng_below(&r, 15)]);
    }
}

/* Zipf-like pick: small indexes are much more frequent, as in natural text. */
static const char *word(rng *r)
{
    double u = rng_unit(r);
    return words[(size_t)(NWORDS * u * u * u)];
}

static const char *ident(rng *r)
{
    double u = rng_unit(r);
    return idents[(size_t)(NIDENTS * u * u)];
}

/* ---- file bodies ---- */

static void gen_prose(out *o, rng *r, size_t n)
{
    size_t end = o->len + n, col = 0;

    while (o->len < end && room(o)) {
        const char *w = word(r);
        put_str(o, w);
        col += strlen(w) + 1;
        if (rng_below(r, 14) == 0)
            put_byte(o, rng_below(r, 2) ? ',' : '.');
        if (col > 72) {
            put_byte(o, '\n');
            col = 0;
        } else {
            put_byte(o, ' ');
        }
    }
    o->len = end < o->cap ? end : o->cap;
}

static void put_fmt(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put_fmt(out *o, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        put_bytes(o, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void gen_source(out *o, rng *r, size_t n)
{
    size_t end = o->len + n;
    int depth = 0;

    while (o->len < end && room(o)) {
        unsigned t = rng_below(r, 16);
        const char *a = ident(r), *b = rng_below(r, 3) ? ident(r) : word(r), *c = ident(r),
                   *d = word(r);
        if ((t == 4 || t == 11) && depth > 0)
            depth--;
        for (int i = 0; i < depth; i++)
            put_str(o, "    ");
        switch (t) {
        case 0:
            put_fmt(o, "if (%s == %s) {\n", a, b);
            break;
        case 1:
            put_fmt(o, "return %s;\n", a);
            break;
        case 2:
            put_fmt(o, "%s = %s(%s, %s);\n", a, b, c, d);
            break;
        case 3:
            put_fmt(o, "for (i = 0; i < %s; i++) {\n", a);
            break;
        case 4:
            put_str(o, "}\n");
            break;
        case 5:
            put_fmt(o, "%s->%s = %s;\n", a, b, c);
            break;
        case 6:
            put_fmt(o, "if (!%s)\n", a);
            break;
        case 7:
            put_str(o, "goto out;\n");
            break;
        case 8:
            put_fmt(o, "static int %s(struct %s *%s)\n", a, b, c);
            break;
        case 9:
            put_fmt(o, "rc = %s(%s, &%s);\n", a, b, c);
            break;
        case 10:
            put_fmt(o, "/* %s %s %s %s */\n", a, b, c, d);
            break;
        case 11:
            put_str(o, "} else {\n");
            break;
        case 12:
            put_fmt(o, "#include <%s.h>\n", d);
            break;
        case 13:
            put_fmt(o, "size_t %s = %s(%s);\n", a, b, c);
            break;
        case 14:
            put_fmt(o, "uint32_t %s;\n", a);
            break;
        default:
            put_fmt(o, "    %s(%s, %s, %s);\n", a, b, c, d);
        }
        if ((t == 0 || t == 3 || t == 11) && depth < 5)
            depth++;
        if (rng_below(r, 12) == 0)
            put_byte(o, '\n');
    }
    o->len = end < o->cap ? end : o->cap;
}

static void gen_config(out *o, rng *r, size_t n)
{
    size_t end = o->len + n;

    while (o->len < end && room(o)) {
        switch (rng_below(r, 4)) {
        case 0:
            put_fmt(o, "[%s.%s]\n", word(r), word(r));
            break;
        case 1:
            put_fmt(o, "%s = %u\n", ident(r), rng_below(r, 100000));
            break;
        case 2:
            put_fmt(o, "  %s: \"/usr/lib/%s/%s.so.%u\"\n", word(r), word(r), word(r),
                    rng_below(r, 9));
            break;
        default:
            put_fmt(o, "%s=%s %s\n", ident(r), word(r), word(r));
        }
    }
    o->len = end < o->cap ? end : o->cap;
}

/* x86-64-like machine code: functions made of a prologue, a body of common opcode patterns
 * with immediates, displacements and call targets, an epilogue and alignment padding. Real
 * .text sections get about 2x with fast compressors; the repeated idioms are what they
 * find. */
static void gen_code(out *o, rng *r, size_t n)
{
    static const struct {
        uint8_t op[4];
        uint8_t oplen, immlen;
    } ins[] = {
        {{0x48, 0x89, 0xe5}, 3, 0},
        {{0x48, 0x8b, 0x45}, 3, 1},
        {{0x48, 0x89, 0x45}, 3, 1},
        {{0xe8}, 1, 4},
        {{0x0f, 0x1f, 0x44, 0x00}, 4, 1},
        {{0xc3}, 1, 0},
        {{0x55}, 1, 0},
        {{0x41, 0x57}, 2, 0},
        {{0x48, 0x83, 0xec}, 3, 1},
        {{0x48, 0x8d, 0x3d}, 3, 4},
        {{0x74}, 1, 1},
        {{0x75}, 1, 1},
        {{0x0f, 0x84}, 2, 4},
        {{0x31, 0xc0}, 2, 0},
        {{0x89, 0xc7}, 2, 0},
        {{0x48, 0x8b, 0x7c, 0x24}, 4, 1},
        {{0xb8}, 1, 4},
        {{0x48, 0x85, 0xc0}, 3, 0},
        {{0x41, 0x5f}, 2, 0},
        {{0x5d}, 1, 0},
        {{0xe9}, 1, 4},
        {{0x48, 0x8b, 0x05}, 3, 4},
        {{0x8b, 0x54, 0x24}, 3, 1},
        {{0x4c, 0x89, 0xe6}, 3, 0},
    };
    static const uint8_t prologue[] = {0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89,
                                       0xe5, 0x41, 0x57, 0x41, 0x56, 0x41, 0x55,
                                       0x41, 0x54, 0x53, 0x48, 0x83, 0xec, 0x28};
    static const uint8_t epilogue[] = {0x48, 0x83, 0xc4, 0x28, 0x5b, 0x41, 0x5c, 0x41,
                                       0x5d, 0x41, 0x5e, 0x41, 0x5f, 0x5d, 0xc3};
    static const uint8_t small_imm[] = {0x00, 0x01, 0x08, 0x10, 0x18, 0x20, 0x28, 0xff};
    size_t end = o->len + n;
    /* Call targets and globals repeat within a function and across nearby functions. */
    uint32_t targets[8];

    for (int i = 0; i < 8; i++)
        targets[i] = (uint32_t)rng_next(r) & 0xfffff;
    while (o->len < end && room(o)) {
        put_bytes(o, prologue, sizeof(prologue) - rng_below(r, 3));
        for (unsigned i = 0, len = 8 + rng_below(r, 60); i < len; i++) {
            unsigned k = rng_below(r, sizeof(ins) / sizeof(*ins));
            put_bytes(o, ins[k].op, ins[k].oplen);
            if (ins[k].immlen == 4 && rng_below(r, 5)) {
                put_bytes(o, &targets[rng_below(r, 8)], 4);
            } else if (ins[k].immlen == 1 && rng_below(r, 4)) {
                put_byte(o, small_imm[rng_below(r, sizeof(small_imm))]);
            } else {
                put_random(o, r, ins[k].immlen);
            }
        }
        put_bytes(o, epilogue, sizeof(epilogue));
        /* Functions are 16-byte aligned with multi-byte nops. */
        while (o->len % 16 && room(o))
            put_byte(o, 0x90);
        if (rng_below(r, 4) == 0)
            targets[rng_below(r, 8)] = (uint32_t)rng_next(r) & 0xfffff;
    }
    o->len = end < o->cap ? end : o->cap;
}

/* Relocation entries (Elf64_Rela): increasing offsets, small symbol indexes. */
static void gen_rela(out *o, rng *r, size_t n)
{
    size_t end = o->len + n;
    uint64_t off = 0x3d000 + 8 * rng_below(r, 4096);

    while (o->len < end && room(o)) {
        uint64_t e[3];
        e[0] = off;
        e[1] = ((uint64_t)rng_below(r, 300) << 32) | (rng_below(r, 4) ? 7 : 8);
        e[2] = rng_below(r, 3) ? 0 : (uint64_t)rng_below(r, 1u << 20);
        put_bytes(o, e, sizeof(e));
        off += 8;
    }
    o->len = end < o->cap ? end : o->cap;
}

static void gen_symtab(out *o, rng *r, size_t n)
{
    size_t end = o->len + n;
    uint64_t addr = 0x401000 + 16 * rng_below(r, 4096);
    uint32_t name = 1;

    while (o->len < end && room(o)) {
        uint8_t e[24] = {0};
        uint64_t sz = 16 + 16 * rng_below(r, 64);
        memcpy(e, &name, 4);
        e[4] = rng_below(r, 4) ? 0x12 : 0x11;
        e[6] = 14;
        memcpy(e + 8, &addr, 8);
        memcpy(e + 16, &sz, 8);
        put_bytes(o, e, sizeof(e));
        name += 8 + rng_below(r, 24);
        addr += sz;
    }
    o->len = end < o->cap ? end : o->cap;
}

static void gen_strtab(out *o, rng *r, size_t n)
{
    size_t end = o->len + n;

    while (o->len < end && room(o)) {
        put_str(o, ident(r));
        put_byte(o, 0);
    }
    o->len = end < o->cap ? end : o->cap;
}

static void pad_to(out *o, size_t align)
{
    size_t r = o->len % align;
    if (r)
        put_zeros(o, align - r);
}

/* An ELF-like shared object: header, .text, .rodata, relocations, .symtab, .strtab and the
 * zero padding between page-aligned segments. */
static void gen_elf(out *o, rng *r, size_t n)
{
    static const uint8_t ehdr[16] = {0x7f, 'E', 'L', 'F', 2, 1, 1, 0};
    size_t start = o->len, end = o->len + n;

    put_bytes(o, ehdr, sizeof(ehdr));
    put_zeros(o, 48);
    pad_to(o, 4096);
    gen_code(o, r, n * 33 / 100);
    pad_to(o, 4096);
    gen_prose(o, r, n * 12 / 100); /* .rodata strings */
    put_random(o, r, n * 1 / 100); /* constants, tables */
    pad_to(o, 4096);
    gen_rela(o, r, n * 12 / 100);
    gen_symtab(o, r, n * 12 / 100);
    gen_strtab(o, r, n * 12 / 100);
    if (o->len < end)
        put_zeros(o, end - o->len);
    if (o->len > start + n && start + n <= o->cap)
        o->len = start + n;
}

/* ---- tar framing ---- */

static void tar_header(out *o, rng *r, const char *dir, const char *ext, size_t size)
{
    uint8_t h[512] = {0};
    unsigned sum = 0;

    snprintf((char *)h, 100, "%s/%s%s", dir, word(r), ext);
    snprintf((char *)h + 100, 8, "%07o", rng_below(r, 4) ? 0644u : 0755u);
    snprintf((char *)h + 108, 8, "%07o", 0u);
    snprintf((char *)h + 116, 8, "%07o", 0u);
    snprintf((char *)h + 124, 12, "%011llo", (unsigned long long)size);
    snprintf((char *)h + 136, 12, "%011o", 1700000000u + rng_below(r, 1u << 24));
    h[156] = '0';
    memcpy(h + 257, "ustar  ", 8);
    memcpy(h + 265, "root", 4);
    memcpy(h + 297, "root", 4);
    memset(h + 148, ' ', 8);
    for (int i = 0; i < 512; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    put_bytes(o, h, sizeof(h));
}

/* Member kinds and their share of members (by count); sizes differ per kind. The weights
 * set the corpus' overall zstd-1 ratio (see `cmkbench gen --stats`). */
enum { K_SOURCE, K_CONFIG, K_DOC, K_ELF, K_PACKED, K_NKINDS };
static const unsigned kind_weight[K_NKINDS] = {60, 30, 25, 16, 3};

static void gen_tar(uint8_t *buf, size_t cap)
{
    static const char *dirs[] = {
        "usr/lib/x86_64-linux-gnu", "usr/share/doc", "etc", "usr/include", "usr/bin", "opt/app/lib",
        "usr/share/locale"};
    out o = {buf, 0, cap};
    unsigned wsum = 0;
    rng r;

    for (int k = 0; k < K_NKINDS; k++)
        wsum += kind_weight[k];
    rng_seed(&r, 0x7A12);
    while (room(&o) > 0) {
        unsigned pick = rng_below(&r, wsum), kind = 0;
        size_t size;
        while (pick >= kind_weight[kind])
            pick -= kind_weight[kind++];
        const char *dir = dirs[rng_below(&r, sizeof(dirs) / sizeof(*dirs))];
        switch (kind) {
        case K_SOURCE:
            size = rng_logsize(&r, 300, 96 << 10);
            tar_header(&o, &r, dir, ".c", size);
            gen_source(&o, &r, size);
            break;
        case K_CONFIG:
            size = rng_logsize(&r, 200, 32 << 10);
            tar_header(&o, &r, dir, ".conf", size);
            gen_config(&o, &r, size);
            break;
        case K_DOC:
            size = rng_logsize(&r, 500, 64 << 10);
            tar_header(&o, &r, dir, ".txt", size);
            gen_prose(&o, &r, size);
            break;
        case K_ELF:
            size = rng_logsize(&r, 8 << 10, 1 << 20);
            tar_header(&o, &r, dir, ".so", size);
            gen_elf(&o, &r, size);
            break;
        default:
            size = rng_logsize(&r, 4 << 10, 256 << 10);
            tar_header(&o, &r, dir, ".gz", size);
            put_random(&o, &r, size);
        }
        pad_to(&o, 512);
    }
}

/* ---- the pool ---- */

static uint8_t *pool;
static size_t pool_len;
static uint64_t pool_nseg;
static pthread_once_t vocab_once = PTHREAD_ONCE_INIT;

int dg_init(size_t pool_bytes)
{
    void *p;

    if (pool_bytes == 0)
        pool_bytes = DG_POOL_DEFAULT;
    /* The segment order is a stride permutation, which needs a power-of-two segment count. */
    size_t nseg = pool_bytes / DG_SEGMENT;
    if (nseg < 2 || (nseg & (nseg - 1)) != 0 || nseg * DG_SEGMENT != pool_bytes)
        return -1;
    if (pool && pool_len == pool_bytes)
        return 0;
    dg_release();
    pthread_once(&vocab_once, build_vocab);
    p = mmap(NULL, pool_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    gen_tar(p, pool_bytes);
    pool = p;
    pool_len = pool_bytes;
    pool_nseg = nseg;
    return 0;
}

void dg_release(void)
{
    if (pool)
        munmap(pool, pool_len);
    pool = NULL;
    pool_len = 0;
    pool_nseg = 0;
}

size_t dg_pool_size(void)
{
    return pool_len;
}

int dg_shape_parse(const char *s)
{
    if (!s)
        return -1;
    if (strcmp(s, "tar") == 0)
        return DG_TAR;
    if (strcmp(s, "random") == 0)
        return DG_RANDOM;
    if (strcmp(s, "json") == 0)
        return DG_JSON;
    return -1;
}

const char *dg_shape_name(dg_shape s)
{
    switch (s) {
    case DG_TAR:
        return "tar";
    case DG_RANDOM:
        return "random";
    case DG_JSON:
        return "json";
    }
    return "?";
}

/* ---- fills ---- */

static void fill_tar(uint64_t seed, uint64_t off, uint8_t *dst, size_t len)
{
    uint64_t start = dg_mix(seed ^ 0x5EEDull) % pool_nseg;
    uint64_t stride = (dg_mix(seed ^ 0x57D1DEull) % pool_nseg) | 1;

    while (len > 0) {
        uint64_t k = off / DG_SEGMENT, in = off % DG_SEGMENT;
        uint64_t src = (start + k * stride) % pool_nseg;
        size_t n = DG_SEGMENT - in;
        uint8_t stamp[16];

        if (n > len)
            n = len;
        memcpy(dst, pool + src * DG_SEGMENT + in, n);
        /* The stamp makes every blob and every segment of a long blob distinct. */
        if (in < sizeof(stamp)) {
            size_t m = sizeof(stamp) - in;
            if (m > n)
                m = n;
            memcpy(stamp, &seed, 8);
            memcpy(stamp + 8, &k, 8);
            memcpy(dst, stamp + in, m);
        }
        dst += n;
        off += n;
        len -= n;
    }
}

/* Counter-based (position-addressable) random bytes: word i is dg_mix(key + i). */
static void fill_random(uint64_t seed, uint64_t off, uint8_t *dst, size_t len)
{
    uint64_t key = dg_mix(seed ^ 0xABCDEF12345ull);
    uint64_t w = off / 8;
    size_t skip = (size_t)(off % 8);

    while (len > 0) {
        uint64_t v = dg_mix(key + w * 0x9E3779B97F4A7C15ull);
        size_t n = 8 - skip;
        if (n > len)
            n = len;
        memcpy(dst, (uint8_t *)&v + skip, n);
        skip = 0;
        dst += n;
        len -= n;
        w++;
    }
}

static void fill_json(uint64_t seed, uint64_t off, uint8_t *dst, size_t len)
{
    uint8_t doc[4096];

    while (len > 0) {
        uint64_t k = off / sizeof(doc), in = off % sizeof(doc);
        size_t n = sizeof(doc) - in;
        if (n > len)
            n = len;
        dg_json(dg_mix(seed + k), doc, sizeof(doc));
        memcpy(dst, doc + in, n);
        dst += n;
        off += n;
        len -= n;
    }
}

void dg_fill(dg_shape shape, uint64_t seed, uint64_t off, void *buf, size_t len)
{
    switch (shape) {
    case DG_TAR:
        fill_tar(seed, off, buf, len);
        break;
    case DG_RANDOM:
        fill_random(seed, off, buf, len);
        break;
    case DG_JSON:
        fill_json(seed, off, buf, len);
        break;
    }
}

/* ---- registry documents ---- */

static void put_hex(out *o, rng *r, size_t nhex)
{
    static const char hex[] = "0123456789abcdef";
    while (nhex > 0 && room(o)) {
        uint64_t v = rng_next(r);
        for (int i = 0; i < 16 && nhex > 0; i++, nhex--)
            put_byte(o, (uint8_t)hex[(v >> (4 * i)) & 15]);
    }
}

static void put_digest(out *o, rng *r)
{
    put_str(o, "\"sha256:");
    put_hex(o, r, 64);
    put_byte(o, '"');
}

static void json_manifest(out *o, rng *r)
{
    put_str(o, "{\n  \"schemaVersion\": 2,\n  \"mediaType\": "
               "\"application/vnd.oci.image.manifest.v1+json\",\n  \"config\": {\n    "
               "\"mediaType\": \"application/vnd.oci.image.config.v1+json\",\n    \"digest\": ");
    put_digest(o, r);
    put_fmt(o, ",\n    \"size\": %u\n  },\n  \"layers\": [\n", 800 + rng_below(r, 9000));
    while (room(o) > 0) {
        put_str(o, "    {\n      \"mediaType\": "
                   "\"application/vnd.oci.image.layer.v1.tar+gzip\",\n      \"digest\": ");
        put_digest(o, r);
        put_fmt(o, ",\n      \"size\": %u,\n      \"annotations\": {\n", rng_below(r, 1u << 30));
        put_fmt(o,
                "        \"org.opencontainers.image.title\": \"%s-%u.tar.gz\"\n      }\n    },\n",
                word(r), rng_below(r, 100));
    }
}

static void json_config(out *o, rng *r)
{
    put_str(o, "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"PATH=/usr/"
               "local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"");
    for (unsigned i = 0, n = 2 + rng_below(r, 6); i < n; i++)
        put_fmt(o, ",\"%s=%u\"", ident(r), rng_below(r, 1000));
    put_fmt(o,
            "],\"Cmd\":[\"/usr/bin/%s\",\"--port=%u\"]},\"rootfs\":{\"type\":\"layers\","
            "\"diff_ids\":[",
            word(r), 1024 + rng_below(r, 60000));
    for (unsigned i = 0, n = 1 + rng_below(r, 12); i < n; i++) {
        if (i)
            put_byte(o, ',');
        put_digest(o, r);
    }
    put_str(o, "]},\"history\":[");
    while (room(o) > 0) {
        put_fmt(o, "{\"created\":\"2024-0%u-11T10:22:33Z\",\"created_by\":\"/bin/sh -c ",
                1 + rng_below(r, 9));
        put_fmt(o, "apt-get install -y %s && rm -rf /var/lib/apt/lists/* # buildkit %u\"", word(r),
                rng_below(r, 99));
        put_str(o, rng_below(r, 3) ? "}," : ",\"empty_layer\":true},");
    }
}

static void json_index(out *o, rng *r)
{
    static const char *arch[] = {"amd64", "arm64", "arm", "ppc64le", "s390x", "386"};
    put_str(o, "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
               "\"manifests\":[");
    while (room(o) > 0) {
        put_str(o, "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":");
        put_digest(o, r);
        put_fmt(o, ",\"size\":%u,\"platform\":{\"architecture\":\"%s\",\"os\":\"linux\"}},",
                400 + rng_below(r, 2000), arch[rng_below(r, 6)]);
    }
}

void dg_json(uint64_t seed, void *buf, size_t len)
{
    out o = {buf, 0, len};
    rng r;

    pthread_once(&vocab_once, build_vocab);
    rng_seed(&r, seed ^ 0x150Bull);
    switch (rng_below(&r, 3)) {
    case 0:
        json_manifest(&o, &r);
        break;
    case 1:
        json_config(&o, &r);
        break;
    default:
        json_index(&o, &r);
    }
    /* A document cut at its size still ends like one. */
    if (len >= 2) {
        ((uint8_t *)buf)[len - 2] = '}';
        ((uint8_t *)buf)[len - 1] = '\n';
    }
}

size_t dg_small_size(uint64_t seed, uint64_t i)
{
    rng r;
    rng_seed(&r, dg_mix(seed) ^ dg_mix(i + 1));
    return rng_logsize(&r, 1u << 10, 64u << 10);
}
