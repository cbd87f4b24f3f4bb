/* jsonfile.c — JSON documents on disk. */
#define _GNU_SOURCE
#include "core/base/jsonfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base/fsutil.h"

#define JSON_MAX_FILE (4u << 20)

cmk_err cmk_json_parse(const char *text, size_t len, const char *what, json_t **out, cmk_errbuf *eb)
{
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);

    *out = NULL;
    if (!j)
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "%s is not valid JSON (line %d, column %d): %s",
                              what, je.line, je.column, je.text);
    if (!json_is_object(j)) {
        json_decref(j);
        return cmk_errbuf_set(eb, CMK_E_CORRUPT, "%s: expected a JSON object", what);
    }
    *out = j;
    return CMK_OK;
}

cmk_err cmk_json_load(const char *path, json_t **out, cmk_errbuf *eb)
{
    char *text = NULL;
    size_t len = 0;
    cmk_err rc;

    *out = NULL;
    rc = cmk_read_file(path, JSON_MAX_FILE, &text, &len, eb);
    if (rc != CMK_OK)
        return rc;
    rc = cmk_json_parse(text, len, path, out, eb);
    free(text);
    return rc;
}

cmk_err cmk_json_load_at(int dirfd, const char *dir, const char *rel, json_t **out, cmk_errbuf *eb)
{
    char shown[4200];
    char *text = NULL;
    size_t len = 0;
    cmk_err rc;

    *out = NULL;
    rc = cmk_read_file_at(dirfd, dir, rel, JSON_MAX_FILE, &text, &len, eb);
    if (rc != CMK_OK)
        return rc;
    snprintf(shown, sizeof(shown), "%s/%s", dir, rel);
    rc = cmk_json_parse(text, len, shown, out, eb);
    free(text);
    return rc;
}

char *cmk_json_dump_line(const json_t *obj, int pretty, size_t *n)
{
    char *text = json_dumps(obj, (pretty ? JSON_INDENT(2) : JSON_COMPACT) | JSON_SORT_KEYS), *line;

    if (!text)
        return NULL;
    *n = strlen(text);
    line = realloc(text, *n + 2);
    if (!line) {
        free(text);
        return NULL;
    }
    line[(*n)++] = '\n';
    line[*n] = '\0';
    return line;
}

cmk_err cmk_json_save(const char *path, const json_t *obj, mode_t mode, cmk_errbuf *eb)
{
    size_t n;
    char *text = cmk_json_dump_line(obj, 1, &n);
    cmk_err rc;

    if (!text)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "cannot serialise %s", path);
    rc = cmk_write_file_atomic(path, text, n, mode, eb);
    free(text);
    return rc;
}

cmk_err cmk_json_save_at(int dirfd, const char *dir, const char *rel, const json_t *obj,
                         mode_t mode, cmk_errbuf *eb)
{
    size_t n;
    char *text = cmk_json_dump_line(obj, 1, &n);
    cmk_err rc;

    if (!text)
        return cmk_errbuf_set(eb, CMK_E_NOMEM, "cannot serialise %s/%s", dir, rel);
    rc = cmk_write_file_at(dirfd, dir, rel, text, n, mode, eb);
    free(text);
    return rc;
}

/* Appends obj as one line to the open log fd (closed here), named shown in messages. */
static cmk_err append_fd(int fd, const json_t *obj, const char *shown, cmk_errbuf *eb)
{
    size_t n;
    char *line = cmk_json_dump_line(obj, 0, &n);
    cmk_err rc;

    rc = line ? cmk_append_fd(fd, line, n, shown, eb)
              : cmk_errbuf_set(eb, CMK_E_NOMEM, "cannot serialise a log record");
    free(line);
    close(fd);
    return rc;
}

cmk_err cmk_json_append_line(const char *path, const json_t *obj, cmk_errbuf *eb)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);

    if (fd < 0)
        return cmk_errbuf_sys(eb, CMK_E_IO, errno, "cannot open log %s", path);
    return append_fd(fd, obj, path, eb);
}

const char *cmk_json_str(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int64_t cmk_json_int(const json_t *obj, const char *key, int64_t def)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}

int cmk_json_bool(const json_t *obj, const char *key, int def)
{
    json_t *v = json_object_get(obj, key);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

void cmk_iso8601(time_t t, char out[32])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

time_t cmk_parse_iso8601(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm) : NULL;
    if (!end || *end)
        return (time_t)-1;
    return timegm(&tm);
}

int64_t cmk_now(void)
{
    return (int64_t)time(NULL);
}

double cmk_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
