/* blob_out.c — the output side of `blob get` (see blob_out.h). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io.h"
#include "tools/blob_out.h"

struct blob_out {
    int fd;
    cmk_io *io; /* NULL: a stream, written in place */
    unsigned char *buf[BLOB_OUT_SLOTS];
    int busy[BLOB_OUT_SLOTS];
    unsigned next; /* the slot blob_out_buf hands out */
    uint64_t off;  /* where the next write to a file goes */
    int err;       /* the first write failure's errno */
};

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

blob_out *blob_out_open(int fd)
{
    blob_out *b = calloc(1, sizeof(*b));
    struct stat st;
    cmk_errbuf eb = {0};

    if (!b)
        return NULL;
    b->fd = fd;
    for (unsigned i = 0; i < BLOB_OUT_SLOTS; i++)
        if (!(b->buf[i] = malloc(BLOB_OUT_BUF)))
            goto fail;
    /* Offsets only mean something for a regular file opened by us at its start. */
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && lseek(fd, 0, SEEK_CUR) == 0 &&
        cmk_io_create(CMK_IO_AUTO, BLOB_OUT_SLOTS, &b->io, &eb) != CMK_OK) {
        errno = EIO;
        goto fail;
    }
    return b;
fail:
    blob_out_free(b);
    return NULL;
}

/* Reaps at least one completion; records the first failure. */
static void reap(blob_out *b)
{
    cmk_io_cqe cqe[BLOB_OUT_SLOTS];
    int n = cmk_io_reap(b->io, cqe, BLOB_OUT_SLOTS, 1);

    if (n < 0) {
        if (!b->err)
            b->err = -n;
        return;
    }
    for (int i = 0; i < n; i++) {
        b->busy[cqe[i].tag] = 0;
        if (cqe[i].res < 0 && !b->err)
            b->err = (int)-cqe[i].res;
    }
}

unsigned char *blob_out_buf(blob_out *b, size_t *cap)
{
    unsigned i = b->next;

    while (!b->err && b->busy[i])
        reap(b);
    if (b->err) {
        errno = b->err;
        return NULL;
    }
    *cap = BLOB_OUT_BUF;
    return b->buf[i];
}

int blob_out_put(blob_out *b, size_t n)
{
    unsigned i = b->next;
    cmk_errbuf eb = {0};

    if (b->err) {
        errno = b->err;
        return -1;
    }
    if (n == 0)
        return 0;
    if (!b->io) {
        if (write_all(b->fd, b->buf[i], n) != 0) {
            b->err = errno;
            return -1;
        }
        return 0;
    }
    if (cmk_io_queue_write(b->io, b->fd, b->buf[i], n, b->off, i, &eb) != CMK_OK ||
        cmk_io_submit(b->io, &eb) != CMK_OK) {
        b->err = EIO;
        errno = EIO;
        return -1;
    }
    b->busy[i] = 1;
    b->off += n;
    b->next = (i + 1) % BLOB_OUT_SLOTS;
    return 0;
}

int blob_out_finish(blob_out *b)
{
    while (b->io && cmk_io_pending(b->io) > 0)
        reap(b);
    if (b->err) {
        errno = b->err;
        return -1;
    }
    return 0;
}

void blob_out_free(blob_out *b)
{
    if (!b)
        return;
    cmk_io_free(b->io);
    for (unsigned i = 0; i < BLOB_OUT_SLOTS; i++)
        free(b->buf[i]);
    free(b);
}
