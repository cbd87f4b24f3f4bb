/*
 * backend_contract.h — the checks every storage backend must pass (core/backend/backend.h):
 * records (versions, stale tokens, create-if-absent, conditional delete, names), namespace
 * listing, create-if-absent and lock-free read-modify-write races between threads on several
 * handles, the event log (through the backend and the library), and the lock or its absence.
 * test_backend_local and test_backend_s3 run them on their backend; what only one backend
 * has (files on disk, processes, object keys, blobs) stays in its own test.
 */
#ifndef CMK_TEST_BACKEND_CONTRACT_H
#define CMK_TEST_BACKEND_CONTRACT_H

#include <stddef.h>

#include "core/backend/backend.h"

/* A backend under test: stores are made and opened by name through core/backend/select.h. */
typedef struct bk_contract_factory {
    const char *backend; /* the name its ops table gives ("local", "s3") */
    /* Writes into name (cap bytes) a location where no store is yet, distinct per tag. */
    void (*where)(const char *tag, char *name, size_t cap);
} bk_contract_factory;

/* Expects a cmk_err from a call that fills eb (a cmk_errbuf in the caller's scope); prints
 * eb's message on a mismatch. Needs tests/check.h. */
#define RC(expr, want)                                                                             \
    do {                                                                                           \
        cmk_errbuf_clear(&eb);                                                                     \
        cmk_err rc_ = (expr);                                                                      \
        CHECK_MSG(rc_ == (want), "%s -> %s (want %s): %s", #expr, cmk_errname(rc_),                \
                  cmk_errname(want), eb.msg);                                                      \
    } while (0)

/* Runs every contract check on stores f makes; failures are counted by tests/check.h. */
void bk_contract_run(const bk_contract_factory *f);

/* Adds 1 to the decimal record "counter" of b n times, re-reading on every conflict (no
 * lock); 0 on success, -1 on an error other than a conflict. */
int bk_contract_increment(cmk_backend *b, int n);
/* A cmk_bk_rec_list callback appending "name;" to the string in arg (order unspecified). */
int bk_contract_collect(const char *name, void *arg);

#endif
