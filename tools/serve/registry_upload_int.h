/* registry_upload_int.h — what the two halves of the upload sessions share
 * (registry_upload.h): the session table (registry_upload.c) and its persistence, the saves
 * and restores that let sessions outlive the process (registry_upload_save.c). Internal to
 * those two files. */
#ifndef CMK_SERVE_REGISTRY_UPLOAD_INT_H
#define CMK_SERVE_REGISTRY_UPLOAD_INT_H

#include <pthread.h>

#include "tools/serve/registry_upload.h"

#define INSTANCE_MAX 256

struct reg_sessions {
    cmk_store *s;
    unsigned max;
    uint64_t mem_budget;  /* bytes of chunk buffers upload requests may hold at once */
    uint64_t mem_used;    /* reserved by requests in flight */
    pthread_mutex_t mu;   /* guards everything below and every session's busy, last, offset */
    pthread_cond_t saved; /* a session's save ended (requests wait for it) */
    reg_session *open;
    reg_session *revoked; /* dropped on a key-access loss (see reg_sessions_expire) */
    unsigned n;
    int round;                   /* reg_sessions_save_idle calls */
    char instance[INSTANCE_MAX]; /* names this front-end in the records it saves */
};

/* Frees u (its put must be gone). */
void reg_upl_session_free(reg_session *u);
/* Takes u out of the open list (t->mu held). */
void reg_upl_unlink_locked(reg_sessions *t, reg_session *u);
/* Drops what a saved session keeps in the store (its record, its parts). */
void reg_upl_forget_saved(reg_sessions *t, reg_session *u);

#endif
