/*
 * registry.h — an OCI Distribution Spec v1.1 registry over an encrypted cmkstore, as
 * libmicrohttpd callbacks (see tools/SERVE.md).
 *
 * Every blob and manifest goes through the store: request bodies are streamed into
 * cmk_put_write chunk by chunk, responses are read with cmk_get_read from the response
 * callback; only manifests (bounded by max_manifest) are held in memory, to validate them.
 * Repository metadata lives in the store as encrypted records (registry_meta.h).
 *
 * Threading: the callbacks are meant for MHD_USE_THREAD_PER_CONNECTION; every registry
 * function is thread-safe.
 */
#ifndef CMK_REGISTRY_H
#define CMK_REGISTRY_H

#include <microhttpd.h>
#include <stdint.h>

#include "cmkstore.h"
#include "tools/serve/http_auth.h"
#include "tools/serve/http_conn.h"
#include "tools/serve/http_metrics.h"
#include "tools/serve/http_token.h"
#include "tools/serve/registry_access.h"

typedef struct registry registry;

/* How a cache hit is sent. sendfile: the cached pages go to the socket without a copy in the
 * server, which is what a client on another machine wants (the NIC reads them). copy: through a
 * buffer of the server's, which a client on the same machine wants: on loopback the kernel
 * copies the bytes into the client once either way, and from a buffer the server has just
 * written that copy is warm, where from the cache's pages it reads memory cold (measured: the
 * pull phase of bench/registry_bench.sh cost 1.70 core-seconds in all, against 2.08 with
 * sendfile). auto: copy for loopback clients, sendfile for the others. */
enum { REG_CACHE_SEND_AUTO, REG_CACHE_SEND_SENDFILE, REG_CACHE_SEND_COPY };

typedef struct registry_opts {
    cmk_store *store;          /* borrowed; must outlive the registry */
    http_auth *auth;           /* borrowed; NULL: no authentication */
    http_token *token;         /* borrowed; token authentication instead of auth; may be NULL */
    reg_access *access;        /* borrowed; per-repository access of auth's users; may be NULL */
    http_metrics *metrics;     /* borrowed; may be NULL */
    http_conn *conns;          /* borrowed; may be NULL: no per-address limit, no trust */
    uint64_t max_manifest;     /* bytes; 0: 4 MiB */
    uint64_t max_blob;         /* bytes per blob upload; 0: no limit */
    unsigned max_uploads;      /* concurrent upload sessions; 0: 256 */
    unsigned upload_timeout_s; /* idle upload sessions are dropped after this; 0: 3600 */
    int upload_save_after_s;   /* save sessions parked this long (crash safety); <0: never */
    uint64_t upload_memory;    /* bytes of chunk buffers uploads in flight may hold; 0: 1 GiB */
    uint64_t cache_bytes;      /* decrypted hot blobs kept in memory (blob_cache.h); 0: none */
    int cache_send;            /* how cache hits are sent: REG_CACHE_SEND_* */
    int log_requests;          /* one line per request on stderr */
    int read_only;             /* pulls only: pushes and deletes get 405 UNSUPPORTED */
    uint64_t quota_repo;       /* bytes a repository may hold; 0: no limit */
    uint64_t quota_total;      /* bytes the store may hold; 0: no limit */
    unsigned gc_interval_s;    /* run a garbage collection this often; 0: never */
    int64_t gc_grace_s;        /* its grace period */
} registry_opts;

cmk_err registry_new(const registry_opts *o, registry **out);
/* Aborts every upload session still open (nothing partial is ever published) and frees the
 * registry. Call only once the HTTP daemon is stopped. NULL is a no-op. */
void registry_free(registry *r);

/* MHD_AccessHandlerCallback and MHD_RequestCompletedCallback; cls is the registry. */
enum MHD_Result registry_access(void *cls, struct MHD_Connection *c, const char *url,
                                const char *method, const char *version, const char *upload_data,
                                size_t *upload_data_size, void **con_cls);
void registry_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                        enum MHD_RequestTerminationCode toe);

/* Upload sessions across a restart or a crash (registry_upload.h): at shutdown, once the
 * HTTP daemon is stopped, every open session is saved in the store (and while serving, the
 * housekeeping saves parked ones); at start, before the daemon starts, the ones instance
 * saved come back (those idle longer than the upload timeout are dropped, and so are other
 * instances' saved longer ago than that; *others: the other instances' left alone). */
cmk_err registry_suspend_uploads(registry *r, unsigned *saved);
cmk_err registry_restore_uploads(registry *r, const char *instance, unsigned *restored,
                                 unsigned *expired, unsigned *others);

/* From now on every new request is refused with 503 (graceful shutdown). */
void registry_drain(registry *r);
/* Requests being served now. */
unsigned registry_inflight(registry *r);
/* Upload sessions open now. */
unsigned registry_uploads(registry *r);
/* Housekeeping, about once a second: drops idle upload sessions, saves parked ones (see
 * upload_save_after_s), samples the key state for the metrics. */
void registry_tick(registry *r);

#endif
