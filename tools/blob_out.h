/*
 * blob_out.h — the output side of `blob get`: bytes handed over in order, written behind the
 * caller's back so that decryption and the writes overlap.
 *
 * To a regular file the writes go through the io engine (io/io.h: io_uring, else pwrite) with
 * up to BLOB_OUT_SLOTS buffers in flight at increasing offsets; to anything else (a pipe, a
 * terminal, a socket) each buffer is written with write(2) before the next is handed out, as
 * the order of a stream requires.
 *
 * Use: b = blob_out_open(fd); loop { p = blob_out_buf(b, &cap); fill p with n <= cap bytes;
 * blob_out_put(b, n); } blob_out_finish(b); blob_out_free(b). The fd stays the caller's.
 * Errors: 0 or -1 with errno set to the first write failure (later calls then fail at once);
 * nothing is retried. Not thread-safe: one thread drives one writer.
 */
#ifndef CMK_TOOLS_BLOB_OUT_H
#define CMK_TOOLS_BLOB_OUT_H

#include <stddef.h>

#define BLOB_OUT_SLOTS 4
#define BLOB_OUT_BUF   (1u << 20)

typedef struct blob_out blob_out;

/* NULL with errno set (ENOMEM, or the io engine's failure as EIO). */
blob_out *blob_out_open(int fd);
/* A free buffer of *cap bytes, waiting for a write in flight to finish if all are busy;
 * NULL (errno set) once a write has failed. */
unsigned char *blob_out_buf(blob_out *b, size_t *cap);
/* Hands over the first n bytes of the buffer blob_out_buf returned last. */
int blob_out_put(blob_out *b, size_t n);
/* Waits for every write in flight; 0 when all bytes handed over are written. */
int blob_out_finish(blob_out *b);
/* Waits for writes still in flight (their results are dropped), frees. NULL is a no-op. */
void blob_out_free(blob_out *b);

#endif
