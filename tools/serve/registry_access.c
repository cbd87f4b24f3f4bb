/* registry_access.c — see registry_access.h. */
#include "tools/serve/registry_access.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base/fsutil.h"
#include "tools/serve/http_util.h"

#define SUBJ_MAX  256 /* a user name (at most 255, as htpasswd's) or @group */
#define PAT_MAX   REG_NAME_MAX
#define MAX_ITEMS 100000 /* rules + members + catalog subjects */

struct rule {
    char subj[SUBJ_MAX + 1];
    char pat[PAT_MAX + 1];
    unsigned actions;
};

struct member {
    char group[SUBJ_MAX + 1];
    char user[SUBJ_MAX + 1];
};

struct reg_access {
    struct rule *rules;
    size_t nrules;
    struct member *members;
    size_t nmembers;
    char (*catalog)[SUBJ_MAX + 1];
    size_t ncatalog;
};

#define fail http_fail /* tools/serve/http_util.h */

unsigned reg_access_needs(enum reg_rt rt, const char *method)
{
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

    switch (rt) {
    case REG_RT_PING:
    case REG_RT_METRICS:
        return 0;
    case REG_RT_CATALOG:
        return REG_NEED_CATALOG;
    case REG_RT_TAGS:
    case REG_RT_REFERRERS:
        return JWT_ACT_PULL;
    case REG_RT_MANIFEST:
    case REG_RT_BLOB:
        if (get)
            return JWT_ACT_PULL;
        if (strcmp(method, "DELETE") == 0)
            return JWT_ACT_DELETE;
        return JWT_ACT_PULL | JWT_ACT_PUSH;
    case REG_RT_UPLOAD_NEW:
    case REG_RT_UPLOAD:
        /* An upload session is part of a push, whatever the method (status, cancel too). */
        return JWT_ACT_PULL | JWT_ACT_PUSH;
    }
    return JWT_ACT_PULL | JWT_ACT_PUSH | JWT_ACT_DELETE; /* unreachable: the strictest */
}

void reg_access_actions_str(unsigned bits, char *out, size_t cap)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {{JWT_ACT_PULL, "pull"}, {JWT_ACT_PUSH, "push"}, {JWT_ACT_DELETE, "delete"}};
    size_t n = 0;

    if (cap == 0)
        return;
    out[0] = '\0';
    if (bits & REG_NEED_CATALOG) {
        snprintf(out, cap, "*");
        return;
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (!(bits & names[i].bit))
            continue;
        int w = snprintf(out + n, cap - n, "%s%s", n ? "," : "", names[i].name);
        if (w < 0 || (size_t)w >= cap - n)
            return;
        n += (size_t)w;
    }
}

int reg_access_match(const char *pattern, const char *name)
{
    /* A row of the match table (pattern prefix vs name prefixes), rolled: O(P x N), no
     * backtracking, whatever the stars. */
    unsigned char cur[REG_NAME_MAX + 2], nxt[REG_NAME_MAX + 2];
    size_t n = strlen(name), plen = strlen(pattern);

    if (n > REG_NAME_MAX || plen > PAT_MAX)
        return 0;
    memset(cur, 0, n + 1);
    cur[0] = 1;
    for (size_t i = 0; i < plen;) {
        int star = pattern[i] == '*', dstar = star && pattern[i + 1] == '*';
        if (star) {
            nxt[0] = cur[0];
            for (size_t j = 1; j <= n; j++)
                nxt[j] = cur[j] || (nxt[j - 1] && (dstar || name[j - 1] != '/'));
            i += dstar ? 2 : 1;
        } else {
            nxt[0] = 0;
            for (size_t j = 1; j <= n; j++)
                nxt[j] = cur[j - 1] && name[j - 1] == pattern[i];
            i++;
        }
        memcpy(cur, nxt, n + 1);
    }
    return cur[n];
}

static int pattern_ok(const char *p, size_t n)
{
    if (n == 0 || n > PAT_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-' || c == '/' || c == '*'))
            return 0;
        if (c == '*' && i + 2 < n && p[i + 1] == '*' && p[i + 2] == '*')
            return 0; /* *** means nothing */
    }
    return 1;
}

/* A user name as htpasswd takes it (no ':', no control characters, no spaces here since
 * fields are space-separated), or @group, or *. */
static int subject_ok(const char *s, size_t n, int allow_star)
{
    if (n == 0 || n > SUBJ_MAX)
        return 0;
    if (n == 1 && s[0] == '*')
        return allow_star;
    if (s[0] == '@' && n == 1)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f || s[i] == ':' || s[i] == '*')
            return 0;
    return 1;
}

static int parse_actions(const char *s, size_t n, unsigned *out)
{
    *out = 0;
    while (n > 0) {
        const char *comma = memchr(s, ',', n);
        size_t w = comma ? (size_t)(comma - s) : n;
        if (w == 4 && memcmp(s, "pull", 4) == 0)
            *out |= JWT_ACT_PULL;
        else if (w == 4 && memcmp(s, "push", 4) == 0)
            *out |= JWT_ACT_PUSH;
        else if (w == 6 && memcmp(s, "delete", 6) == 0)
            *out |= JWT_ACT_DELETE;
        else if (w == 1 && s[0] == '*')
            *out |= JWT_ACT_PULL | JWT_ACT_PUSH | JWT_ACT_DELETE;
        else
            return -1;
        if (!comma)
            break;
        s = comma + 1;
        n -= w + 1;
        if (n == 0)
            return -1; /* a trailing comma */
    }
    return *out ? 0 : -1;
}

/* The fields of a line, split on spaces and tabs. */
#define FIELDS_MAX 1024
struct fields {
    const char *p[FIELDS_MAX];
    size_t n[FIELDS_MAX];
    size_t count;
};

static int split(const char *line, size_t len, struct fields *f)
{
    size_t i = 0;

    f->count = 0;
    while (i < len) {
        while (i < len && (line[i] == ' ' || line[i] == '\t'))
            i++;
        if (i >= len)
            break;
        if (f->count == FIELDS_MAX)
            return -1;
        f->p[f->count] = line + i;
        while (i < len && line[i] != ' ' && line[i] != '\t')
            i++;
        f->n[f->count] = (size_t)(line + i - f->p[f->count]);
        f->count++;
    }
    return 0;
}

static int grow(void **arr, size_t n, size_t elem)
{
    void *na;

    if (n >= MAX_ITEMS)
        return -1;
    /* Doubling: n is a power of two when the array is full. */
    if (n && (n & (n - 1)))
        return 0;
    na = realloc(*arr, (n ? 2 * n : 8) * elem);
    if (!na)
        return -1;
    *arr = na;
    return 0;
}

static void copy_field(char *dst, const char *s, size_t n)
{
    memcpy(dst, s, n);
    dst[n] = '\0';
}

static cmk_err parse_line(reg_access *a, const struct fields *f, size_t lineno, char *err,
                          size_t cap)
{
    const char *kw = f->p[0];
    size_t kn = f->n[0];

    if (kn == 5 && memcmp(kw, "group", 5) == 0) {
        if (f->count < 3 || !subject_ok(f->p[1], f->n[1], 0) || f->p[1][0] == '@')
            return fail(err, cap, CMK_E_INVAL, "line %zu: expected group NAME USER...", lineno);
        for (size_t i = 2; i < f->count; i++) {
            if (!subject_ok(f->p[i], f->n[i], 0) || f->p[i][0] == '@')
                return fail(err, cap, CMK_E_INVAL,
                            "line %zu: a group's members are user names (field %zu)", lineno,
                            i + 1);
            if (grow((void **)&a->members, a->nmembers, sizeof(*a->members)) != 0)
                return fail(err, cap, CMK_E_NOMEM, "line %zu: too many statements", lineno);
            copy_field(a->members[a->nmembers].group, f->p[1], f->n[1]);
            copy_field(a->members[a->nmembers].user, f->p[i], f->n[i]);
            a->nmembers++;
        }
        return CMK_OK;
    }
    if (kn == 5 && memcmp(kw, "allow", 5) == 0) {
        struct rule *r;
        if (f->count != 4 || !subject_ok(f->p[1], f->n[1], 1))
            return fail(err, cap, CMK_E_INVAL,
                        "line %zu: expected allow USER|@GROUP|* PATTERN pull,push,delete", lineno);
        if (!pattern_ok(f->p[2], f->n[2]))
            return fail(err, cap, CMK_E_INVAL,
                        "line %zu: a pattern is a repository name (lower case, digits, . _ - /) "
                        "with * or ** (at most %d characters)",
                        lineno, PAT_MAX);
        if (grow((void **)&a->rules, a->nrules, sizeof(*a->rules)) != 0)
            return fail(err, cap, CMK_E_NOMEM, "line %zu: too many statements", lineno);
        r = &a->rules[a->nrules];
        if (parse_actions(f->p[3], f->n[3], &r->actions) != 0)
            return fail(err, cap, CMK_E_INVAL,
                        "line %zu: actions are a comma-separated list of pull, push, delete or *",
                        lineno);
        copy_field(r->subj, f->p[1], f->n[1]);
        copy_field(r->pat, f->p[2], f->n[2]);
        a->nrules++;
        return CMK_OK;
    }
    if (kn == 7 && memcmp(kw, "catalog", 7) == 0) {
        if (f->count < 2)
            return fail(err, cap, CMK_E_INVAL, "line %zu: expected catalog USER|@GROUP|*...",
                        lineno);
        for (size_t i = 1; i < f->count; i++) {
            if (!subject_ok(f->p[i], f->n[i], 1))
                return fail(err, cap, CMK_E_INVAL,
                            "line %zu: field %zu is not a user name, @GROUP or *", lineno, i + 1);
            if (grow((void **)&a->catalog, a->ncatalog, sizeof(*a->catalog)) != 0)
                return fail(err, cap, CMK_E_NOMEM, "line %zu: too many statements", lineno);
            copy_field(a->catalog[a->ncatalog], f->p[i], f->n[i]);
            a->ncatalog++;
        }
        return CMK_OK;
    }
    return fail(err, cap, CMK_E_INVAL, "line %zu: a statement starts with group, allow or catalog",
                lineno);
}

cmk_err reg_access_parse(const char *text, size_t len, reg_access **out, char *err, size_t cap)
{
    reg_access *a = calloc(1, sizeof(*a));
    struct fields *f = malloc(sizeof(*f));
    const char *p = text, *end = text + len;
    size_t lineno = 0;
    cmk_err rc = CMK_OK;

    *out = NULL;
    if (!a || !f) {
        rc = fail(err, cap, CMK_E_NOMEM, "out of memory");
        goto out;
    }
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        const char *line = p;

        lineno++;
        p = nl ? nl + 1 : end;
        if (n && line[n - 1] == '\r')
            n--;
        if (memchr(line, '\0', n)) {
            rc = fail(err, cap, CMK_E_INVAL, "line %zu: holds a NUL byte", lineno);
            goto out;
        }
        if (split(line, n, f) != 0) {
            rc = fail(err, cap, CMK_E_INVAL, "line %zu: too many fields", lineno);
            goto out;
        }
        if (f->count == 0 || f->p[0][0] == '#')
            continue;
        rc = parse_line(a, f, lineno, err, cap);
        if (rc != CMK_OK)
            goto out;
    }
    *out = a;
    a = NULL;
out:
    free(f);
    reg_access_free(a);
    return rc;
}

cmk_err reg_access_load(const char *path, reg_access **out, char *err, size_t cap)
{
    char *buf = NULL, sub[400];
    cmk_errbuf eb = {0};
    size_t got = 0;
    cmk_err rc;
    int fd;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return fail(err, cap, errno == ENOENT ? CMK_E_NOT_FOUND : CMK_E_IO, "cannot open %s: %s",
                    path, strerror(errno));
    /* Closes fd. Not a regular file, or over the limit: a bad option value, as before. */
    rc = cmk_read_fd(fd, path, REG_ACCESS_FILE_MAX, &buf, &got, NULL, &eb);
    if (rc != CMK_OK)
        return fail(err, cap, rc == CMK_E_CORRUPT ? CMK_E_INVAL : rc, "%s", eb.msg);
    rc = reg_access_parse(buf, got, out, sub, sizeof(sub));
    if (rc != CMK_OK)
        fail(err, cap, rc, "%s %s", path, sub);
    free(buf);
    return rc;
}

void reg_access_free(reg_access *a)
{
    if (!a)
        return;
    free(a->rules);
    free(a->members);
    free(a->catalog);
    free(a);
}

size_t reg_access_rules(const reg_access *a)
{
    return a ? a->nrules + a->ncatalog : 0;
}

static int subject_matches(const reg_access *a, const char *subj, const char *user)
{
    if (strcmp(subj, "*") == 0)
        return 1;
    if (!user[0])
        return 0;
    if (subj[0] != '@')
        return strcmp(subj, user) == 0;
    for (size_t i = 0; i < a->nmembers; i++)
        if (strcmp(a->members[i].group, subj + 1) == 0 && strcmp(a->members[i].user, user) == 0)
            return 1;
    return 0;
}

unsigned reg_access_granted(const reg_access *a, const char *user, const char *repo)
{
    unsigned got = 0;

    for (size_t i = 0; i < a->nrules; i++)
        /* A rule that would add nothing is not matched. */
        if ((a->rules[i].actions & ~got) != 0 && subject_matches(a, a->rules[i].subj, user) &&
            reg_access_match(a->rules[i].pat, repo))
            got |= a->rules[i].actions;
    return got;
}

int reg_access_catalog(const reg_access *a, const char *user)
{
    for (size_t i = 0; i < a->ncatalog; i++)
        if (subject_matches(a, a->catalog[i], user))
            return 1;
    return 0;
}
