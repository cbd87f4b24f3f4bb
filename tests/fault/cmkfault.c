/*
 * cmkfault.c — a fault-injection shim for the tests, loaded with LD_PRELOAD: chosen file
 * operations fail (or write short) at chosen points, so tests can check what the store does
 * after each fault. Test-only; never linked into cmkstore.
 *
 * Rules, one per line or separated by ';', each a list of key=value words:
 *
 *   op=open,write path=*.pem errno=ENOSPC nth=2 count=1
 *
 *   op     open (open, openat, creat), read (read, pread), write (write, pwrite), fsync
 *          (fsync, fdatasync), rename (rename, renameat, renameat2), link (link, linkat),
 *          unlink (unlink, unlinkat); opens made with syscall(SYS_openat2) count as open;
 *          a comma list; default: every one of them
 *   path   fnmatch pattern ('*' also matches '/') against the absolute path: for read, write
 *          and fsync the path the descriptor was opened with (openat paths are resolved
 *          against their directory; an O_TMPFILE descriptor has its directory's path); for
 *          rename and link either path. Default '*'
 *   errno  EIO, ENOSPC, EACCES, EROFS, EDQUOT, EPERM, ENOENT or a number; or 'short': a write
 *          moves half of its bytes (at least one) and succeeds. Default EIO
 *   nth    the first matching call that fails (1-based, default 1)
 *   count  how many matching calls fail from there (default 0: every one)
 *
 * Rules come from $CMKFAULT_RULES, or from the file $CMKFAULT_FILE, read again whenever it
 * changes, so a test can switch faults on and off in a running server: looked at on every
 * open, fsync, rename, link and unlink (so a rule written before a request is in force for
 * it, whatever the timing), and at most every 20 ms on reads and writes (which come in
 * floods); a missing file means no faults. Each injected fault appends "op errno path" to
 * $CMKFAULT_LOG, if set, so a test can prove its fault was met.
 *
 * io_uring: requests the kernel runs from a ring never pass through libc, so data reads,
 * writes and fsyncs of puts and gets are seen here only with the sync engine
 * (CMKSTORE_IO=sync); opens, links, renames, metadata and key files go through libc on both
 * engines. The store's error handling above the engine is the same for both.
 *
 * Under AddressSanitizer the ASan runtime must come first: LD_PRELOAD="libasan.so.N:cmkfault.so"
 * (ASan's read/write interceptors then call into this shim, which calls libc).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

enum {
    OP_OPEN = 1,
    OP_READ = 2,
    OP_WRITE = 4,
    OP_FSYNC = 8,
    OP_RENAME = 16,
    OP_LINK = 32,
    OP_UNLINK = 64,
    OP_ALL = 127
};
static const char *const op_names[] = {"open",   "read", "write", "fsync",
                                       "rename", "link", "unlink"};

#define MAX_RULES 16
#define MAX_FDS   8192
#define SHORT     (-1)

typedef struct rule {
    unsigned ops;
    char path[512];
    int err; /* errno, or SHORT */
    unsigned long nth, count, seen;
} rule;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static rule rules[MAX_RULES];
static int nrules;
static char *fd_path[MAX_FDS];
static struct timespec last_look;
static struct stat rules_st;
static int rules_loaded;

/* The real functions. */
static int (*r_open)(const char *, int, ...);
static int (*r_openat)(int, const char *, int, ...);
static ssize_t (*r_read)(int, void *, size_t);
static ssize_t (*r_pread)(int, void *, size_t, off_t);
static ssize_t (*r_write)(int, const void *, size_t);
static ssize_t (*r_pwrite)(int, const void *, size_t, off_t);
static int (*r_fsync)(int);
static int (*r_fdatasync)(int);
static int (*r_renameat2)(int, const char *, int, const char *, unsigned);
static int (*r_linkat)(int, const char *, int, const char *, int);
static int (*r_unlinkat)(int, const char *, int);
static int (*r_close)(int);
static long (*r_syscall)(long, ...);

static void *real(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);

    if (!f) {
        static const char msg[] = "cmkfault: a libc function is missing\n";
        (void)!write(2, msg, sizeof(msg) - 1);
        abort();
    }
    return f;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void resolve(void)
{
    r_open = real("open");
    r_openat = real("openat");
    r_read = real("read");
    r_pread = real("pread");
    r_write = real("write");
    r_pwrite = real("pwrite");
    r_fsync = real("fsync");
    r_fdatasync = real("fdatasync");
    r_renameat2 = real("renameat2");
    r_linkat = real("linkat");
    r_unlinkat = real("unlinkat");
    r_close = real("close");
    r_syscall = real("syscall");
}

static void init(void)
{
    pthread_once(&once, resolve);
}

/* ---- rules ---- */

static int parse_errno(const char *v)
{
    static const struct {
        const char *name;
        int e;
    } names[] = {{"EIO", EIO},       {"ENOSPC", ENOSPC}, {"EACCES", EACCES}, {"EROFS", EROFS},
                 {"EDQUOT", EDQUOT}, {"EPERM", EPERM},   {"ENOENT", ENOENT}};

    if (strcmp(v, "short") == 0)
        return SHORT;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(v, names[i].name) == 0)
            return names[i].e;
    return atoi(v) > 0 ? atoi(v) : EIO;
}

static unsigned parse_ops(char *v)
{
    unsigned ops = 0;
    char *save = NULL;

    for (char *t = strtok_r(v, ",", &save); t; t = strtok_r(NULL, ",", &save))
        for (size_t i = 0; i < sizeof(op_names) / sizeof(op_names[0]); i++)
            if (strcmp(t, op_names[i]) == 0)
                ops |= 1u << i;
    return ops;
}

/* Replaces the rules with those in text (caller holds mu). */
static void parse_rules(char *text)
{
    char *save = NULL;

    nrules = 0;
    for (char *line = strtok_r(text, ";\n", &save); line && nrules < MAX_RULES;
         line = strtok_r(NULL, ";\n", &save)) {
        rule r = {.ops = OP_ALL, .path = "*", .err = EIO, .nth = 1};
        char *wsave = NULL;
        int any = 0;

        for (char *w = strtok_r(line, " \t", &wsave); w; w = strtok_r(NULL, " \t", &wsave)) {
            char *eq = strchr(w, '=');
            if (!eq)
                continue;
            *eq++ = '\0';
            any = 1;
            if (strcmp(w, "op") == 0)
                r.ops = parse_ops(eq);
            else if (strcmp(w, "path") == 0)
                snprintf(r.path, sizeof(r.path), "%s", eq);
            else if (strcmp(w, "errno") == 0)
                r.err = parse_errno(eq);
            else if (strcmp(w, "nth") == 0)
                r.nth = strtoul(eq, NULL, 10);
            else if (strcmp(w, "count") == 0)
                r.count = strtoul(eq, NULL, 10);
        }
        if (any)
            rules[nrules++] = r;
    }
}

/* Reads $CMKFAULT_FILE again if it changed (caller holds mu); throttle: not if it was looked
 * at less than 20 ms ago. */
static void look_at_file(const char *file, int throttle)
{
    struct timespec now;
    struct stat st;
    char buf[4096];
    ssize_t n = 0;
    int fd;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
    if (rules_loaded && throttle &&
        (now.tv_sec - last_look.tv_sec) * 1000000000L + now.tv_nsec - last_look.tv_nsec < 20000000L)
        return;
    last_look = now;
    if (stat(file, &st) != 0) {
        nrules = 0;
        memset(&rules_st, 0, sizeof(rules_st));
        rules_loaded = 1;
        return;
    }
    if (rules_loaded && st.st_ino == rules_st.st_ino && st.st_size == rules_st.st_size &&
        st.st_mtim.tv_sec == rules_st.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == rules_st.st_mtim.tv_nsec)
        return;
    fd = r_open(file, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        n = r_read(fd, buf, sizeof(buf) - 1);
        r_close(fd);
    }
    buf[n > 0 ? n : 0] = '\0';
    parse_rules(buf);
    rules_st = st;
    rules_loaded = 1;
}

static void load_rules(unsigned op)
{
    const char *file = getenv("CMKFAULT_FILE"), *env;

    if (file && *file) {
        look_at_file(file, (op & ~(unsigned)(OP_READ | OP_WRITE)) == 0);
    } else if (!rules_loaded) {
        env = getenv("CMKFAULT_RULES");
        if (env) {
            char *copy = strdup(env);
            if (copy) {
                parse_rules(copy);
                free(copy);
            }
        }
        rules_loaded = 1;
    }
}

static void log_fault(unsigned op, int err, const char *path)
{
    const char *log = getenv("CMKFAULT_LOG");
    char line[1200];
    int fd, n, i = 0;

    if (!log || !*log)
        return;
    while (!(op & (1u << i)))
        i++;
    n = snprintf(line, sizeof(line), "%s %s %s\n", op_names[i],
                 err == SHORT ? "short" : strerrorname_np(err), path ? path : "?");
    fd = r_open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
        (void)!r_write(fd, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
        r_close(fd);
    }
}

/* The fault for this call: 0 (none), an errno, or SHORT. Counts the call against every
 * rule it matches. */
static int fault_for(unsigned op, const char *path, const char *path2)
{
    int err = 0;

    pthread_mutex_lock(&mu);
    load_rules(op);
    for (int i = 0; i < nrules; i++) {
        rule *r = &rules[i];
        if (!(r->ops & op))
            continue;
        if (!(path && fnmatch(r->path, path, 0) == 0) &&
            !(path2 && fnmatch(r->path, path2, 0) == 0))
            continue;
        r->seen++;
        if (err == 0 && r->seen >= r->nth && (r->count == 0 || r->seen < r->nth + r->count))
            err = r->err;
    }
    pthread_mutex_unlock(&mu);
    if (err)
        log_fault(op, err, path);
    return err;
}

/* ---- paths ---- */

/* The absolute form of path as seen from dirfd, in out. */
static const char *abs_path(int dirfd, const char *path, char *out, size_t cap)
{
    char link[64], dir[4096];
    ssize_t n;

    if (!path)
        return NULL;
    if (path[0] == '/')
        return path;
    if (dirfd == AT_FDCWD) {
        if (!getcwd(dir, sizeof(dir)))
            return path;
    } else {
        snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
        n = readlink(link, dir, sizeof(dir) - 1);
        if (n <= 0)
            return path;
        dir[n] = '\0';
    }
    if (strcmp(path, ".") == 0)
        snprintf(out, cap, "%s", dir);
    else
        snprintf(out, cap, "%s/%s", dir, path);
    return out;
}

static void remember_fd(int fd, const char *path)
{
    if (fd < 0 || fd >= MAX_FDS)
        return;
    char *copy = path ? strdup(path) : NULL;
    pthread_mutex_lock(&mu);
    free(fd_path[fd]);
    fd_path[fd] = copy;
    pthread_mutex_unlock(&mu);
}

/* The fault for an operation on fd (its path is copied while mu is held). */
static int fd_fault(unsigned op, int fd, char *buf, size_t cap)
{
    pthread_mutex_lock(&mu);
    int known = fd >= 0 && fd < MAX_FDS && fd_path[fd];
    if (known)
        snprintf(buf, cap, "%s", fd_path[fd]);
    pthread_mutex_unlock(&mu);
    return fault_for(op, known ? buf : NULL, NULL);
}

/* ---- the interposed functions ---- */

static int path_gate(unsigned op, int fd1, const char *p1, int fd2, const char *p2);

static int open_common(int dirfd, const char *path, int flags, mode_t mode)
{
    char full[4200];
    const char *p;
    int fd;

    p = abs_path(dirfd, path, full, sizeof(full));
    if (path_gate(OP_OPEN, AT_FDCWD, p, AT_FDCWD, NULL) < 0)
        return -1;
    fd = r_openat(dirfd, path, flags, mode);
    if (fd >= 0)
        remember_fd(fd, p);
    return fd;
}

static mode_t mode_arg(int flags, va_list ap)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return open_common(AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return open_common(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

int creat(const char *path, mode_t mode)
{
    return open_common(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

/* The store opens its files with openat2(2) through syscall(2) (RESOLVE_NO_SYMLINKS): those
 * are opens too. Every other system call passes through; syscall(2) takes six arguments
 * whatever the number, as libc's own does. */
long syscall(long nr, ...)
{
    long a[6];
    va_list ap;

    va_start(ap, nr);
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    init();
#ifdef SYS_openat2
    if (nr == SYS_openat2) {
        char full[4200];
        const char *p = abs_path((int)a[0], (const char *)a[1], full, sizeof(full));
        long fd;

        if (path_gate(OP_OPEN, AT_FDCWD, p, AT_FDCWD, NULL) < 0)
            return -1;
        fd = r_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
        if (fd >= 0)
            remember_fd((int)fd, p);
        return fd;
    }
#endif
    return r_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

int close(int fd)
{
    init();
    remember_fd(fd, NULL);
    return r_close(fd);
}

/* The verdict for a call on fd: -1 (fail it: errno is set), 0 (run it) or 1 (write short). */
static int fd_gate(unsigned op, int fd)
{
    char p[4200];
    int err;

    init();
    err = fd_fault(op, fd, p, sizeof(p));
    if (err > 0) {
        errno = err;
        return -1;
    }
    return err == SHORT;
}

/* Half of a write's bytes (at least one) when it is to be short. */
static size_t write_len(int gate, size_t len)
{
    return gate == 1 && len > 1 ? len / 2 : len;
}

ssize_t read(int fd, void *buf, size_t len)
{
    return fd_gate(OP_READ, fd) < 0 ? -1 : r_read(fd, buf, len);
}

ssize_t pread(int fd, void *buf, size_t len, off_t off)
{
    return fd_gate(OP_READ, fd) < 0 ? -1 : r_pread(fd, buf, len, off);
}

ssize_t pread64(int fd, void *buf, size_t len, off_t off) __attribute__((alias("pread")));

ssize_t write(int fd, const void *buf, size_t len)
{
    int gate = fd_gate(OP_WRITE, fd);

    return gate < 0 ? -1 : r_write(fd, buf, write_len(gate, len));
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    int gate = fd_gate(OP_WRITE, fd);

    return gate < 0 ? -1 : r_pwrite(fd, buf, write_len(gate, len), off);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off) __attribute__((alias("pwrite")));

int fsync(int fd)
{
    return fd_gate(OP_FSYNC, fd) < 0 ? -1 : r_fsync(fd);
}

int fdatasync(int fd)
{
    return fd_gate(OP_FSYNC, fd) < 0 ? -1 : r_fdatasync(fd);
}

/* Like fd_gate for an operation on one or two paths: -1 (errno set) or 0. */
static int path_gate(unsigned op, int fd1, const char *p1, int fd2, const char *p2)
{
    char a[4200], b[4200];
    int err;

    init();
    err = fault_for(op, abs_path(fd1, p1, a, sizeof(a)), abs_path(fd2, p2, b, sizeof(b)));
    if (err > 0) {
        errno = err;
        return -1;
    }
    return 0;
}

int renameat2(int ofd, const char *op, int nfd, const char *np, unsigned flags)
{
    return path_gate(OP_RENAME, ofd, op, nfd, np) < 0 ? -1 : r_renameat2(ofd, op, nfd, np, flags);
}

int renameat(int ofd, const char *op, int nfd, const char *np)
{
    return renameat2(ofd, op, nfd, np, 0);
}

int rename(const char *op, const char *np)
{
    return renameat2(AT_FDCWD, op, AT_FDCWD, np, 0);
}

int linkat(int ofd, const char *op, int nfd, const char *np, int flags)
{
    return path_gate(OP_LINK, ofd, op, nfd, np) < 0 ? -1 : r_linkat(ofd, op, nfd, np, flags);
}

int link(const char *op, const char *np)
{
    return linkat(AT_FDCWD, op, AT_FDCWD, np, 0);
}

int unlinkat(int dirfd, const char *path, int flags)
{
    return path_gate(OP_UNLINK, dirfd, path, AT_FDCWD, NULL) < 0 ? -1
                                                                 : r_unlinkat(dirfd, path, flags);
}

int unlink(const char *path)
{
    return unlinkat(AT_FDCWD, path, 0);
}
