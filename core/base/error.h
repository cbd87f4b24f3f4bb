/*
 * error.h — internal error plumbing.
 *
 * Internal functions take a cmk_errbuf * (may be NULL) and return a cmk_err; the first
 * failure fills the buffer with a message saying what failed and what to do. Public entry
 * points copy the buffer to the calling thread's detail slot (cmk_errmsg) before returning.
 */
#ifndef CMK_ERROR_H
#define CMK_ERROR_H

#include "cmkstore_err.h"

/* Like cmk_errbuf_set but with errno text appended: "...: No such file or directory".
 * CMK_E_IO with ENOSPC or EDQUOT becomes CMK_E_NOSPACE (returned and stored). */
cmk_err cmk_errbuf_sys(cmk_errbuf *eb, cmk_err code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Publishes eb as the calling thread's last error (if code != CMK_OK) and returns its code,
 * or rc if eb carries no code. Use at the single exit of every public function. */
cmk_err cmk_publish(cmk_errbuf *eb, cmk_err rc);

/* Sets the thread's last error directly (for public functions without an errbuf). */
cmk_err cmk_set_last(cmk_err code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clears the buffer. */
static inline void cmk_errbuf_clear(cmk_errbuf *eb)
{
    if (eb) {
        eb->code = CMK_OK;
        eb->msg[0] = '\0';
    }
}

/* Keeps a stream's first failure: if *failed is CMK_OK it becomes rc, and first receives
 * src's message (src may be first itself, or NULL) with code rc. Returns *failed. */
static inline cmk_err cmk_errbuf_first(cmk_err *failed, cmk_errbuf *first, cmk_err rc,
                                       const cmk_errbuf *src)
{
    if (*failed == CMK_OK) {
        *failed = rc;
        if (src && src != first)
            *first = *src;
        first->code = rc;
    }
    return *failed;
}

/* Marks a call whose failure is deliberately not acted on (best-effort cleanup, a check that
 * records its own outcome): functions returning cmk_err warn when their result is unused. */
static inline void cmk_best_effort(cmk_err e)
{
    (void)e;
}

/* Maps an errno from a failed file operation to a code (ENOENT -> NOT_FOUND, ENOMEM ->
 * NOMEM, EEXIST -> EXISTS, ENOSPC/EDQUOT -> NOSPACE, otherwise IO). */
cmk_err cmk_err_from_errno(int errnum);

#endif
