/* http_daemon.c — see http_daemon.h. */
#include "tools/serve/http_daemon.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tools/serve/http_tls.h"
#include "tools/serve/http_util.h"

#define MAX_RETIRED 8

struct retired {
    struct MHD_Daemon *d;
    http_tls tls;
    double since;
};

struct http_daemon {
    http_daemon_cfg cfg;
    char *cert, *key; /* copies of the paths */
    struct MHD_Daemon *d;
    http_tls tls; /* the serving pair (TLS only) */
    int is_tls;
    unsigned port;
    struct retired retired[MAX_RETIRED];
    size_t nretired;
};

#define fail http_fail /* tools/serve/http_util.h */

/* Starts one daemon on fd with tls (NULL: plain HTTP). */
static struct MHD_Daemon *start_one(const http_daemon_cfg *c, int fd, const http_tls *tls)
{
    struct MHD_OptionItem o[16];
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG | c->flags;
    size_t n = 0;

    /* libmicrohttpd's option array takes a function and its closure as value and ptr_value. */
    o[n++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)c->logger, NULL};
    o[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, fd, NULL};
    o[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)c->completed,
                                     c->completed_cls};
    o[n++] =
        (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)c->notify, c->notify_cls};
    o[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, (intptr_t)c->conn_limit, NULL};
    o[n++] =
        (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)c->conn_timeout, NULL};
    o[n++] =
        (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)c->mem_limit, NULL};
    if (tls) {
        flags |= MHD_USE_TLS;
        o[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, tls->cert_pem};
        o[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, tls->key_pem};
        o[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0,
                                         (void *)(uintptr_t)HTTP_TLS_PRIORITIES};
    }
    o[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    return MHD_start_daemon(flags, 0, c->accept, c->accept_cls, c->access, c->access_cls,
                            MHD_OPTION_ARRAY, o, MHD_OPTION_END);
}

static unsigned bound_port(struct MHD_Daemon *d)
{
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);

    return di ? di->port : 0;
}

cmk_err http_daemon_start(const http_daemon_cfg *cfg, int listen_fd, http_daemon **out, char *err,
                          size_t cap)
{
    http_daemon *h;
    cmk_err rc;

    *out = NULL;
    if (!cfg->tls_cert != !cfg->tls_key) {
        close(listen_fd);
        return fail(err, cap, CMK_E_INVAL, "--tls-cert and --tls-key go together");
    }
    h = calloc(1, sizeof(*h));
    if (!h) {
        close(listen_fd);
        return fail(err, cap, CMK_E_NOMEM, "out of memory");
    }
    h->cfg = *cfg;
    h->is_tls = cfg->tls_cert != NULL;
    if (h->is_tls) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            rc = fail(err, cap, CMK_E_UNSUPPORTED,
                      "this libmicrohttpd is built without TLS support");
            goto fail;
        }
        h->cert = strdup(cfg->tls_cert);
        h->key = strdup(cfg->tls_key);
        if (!h->cert || !h->key) {
            rc = fail(err, cap, CMK_E_NOMEM, "out of memory");
            goto fail;
        }
        h->cfg.tls_cert = h->cert;
        h->cfg.tls_key = h->key;
        rc = http_tls_load(&h->tls, h->cert, h->key, NULL, NULL, NULL, 0, err, cap);
        if (rc != CMK_OK)
            goto fail;
    }
    errno = 0;
    h->d = start_one(&h->cfg, listen_fd, h->is_tls ? &h->tls : NULL);
    if (!h->d) {
        rc = fail(err, cap, CMK_E_IO, "cannot start the HTTP server%s%s", errno ? ": " : "",
                  errno ? strerror(errno) : "");
        goto fail;
    }
    h->port = bound_port(h->d);
    *out = h;
    return CMK_OK;
fail:
    /* listen_fd: whether libmicrohttpd closed it on failure is not specified; the process
     * exits next. */
    http_tls_free(&h->tls);
    free(h->cert);
    free(h->key);
    free(h);
    return rc;
}

int http_daemon_is_tls(const http_daemon *d)
{
    return d && d->is_tls;
}

const char *http_daemon_fingerprint(const http_daemon *d)
{
    return d && d->is_tls ? d->tls.fingerprint : "";
}

unsigned http_daemon_port(const http_daemon *d)
{
    return d ? d->port : 0;
}

static void stop_retired(http_daemon *h, size_t i)
{
    MHD_stop_daemon(h->retired[i].d);
    http_tls_free(&h->retired[i].tls);
    h->retired[i] = h->retired[--h->nretired];
}

cmk_err http_daemon_reload(http_daemon *h, char *err, size_t cap)
{
    http_tls fresh;
    struct MHD_Daemon *nd;
    MHD_socket fd;
    cmk_err rc;

    if (!h->is_tls)
        return fail(err, cap, CMK_E_INVAL, "not serving TLS: nothing to reload");
    rc = http_tls_load(&fresh, h->cert, h->key, NULL, NULL, NULL, 0, err, cap);
    if (rc != CMK_OK)
        return rc;
    if (h->nretired == MAX_RETIRED)
        stop_retired(h, 0); /* reloads in a burst: the oldest goes now */
    fd = MHD_quiesce_daemon(h->d);
    if (fd == MHD_INVALID_SOCKET) {
        http_tls_free(&fresh);
        return fail(err, cap, CMK_E_IO, "cannot take the listening socket over");
    }
    nd = start_one(&h->cfg, fd, &fresh);
    if (!nd) {
        /* The old daemon no longer accepts: a new one with the old pair takes the socket. */
        http_tls_free(&fresh);
        nd = start_one(&h->cfg, fd, &h->tls);
        if (!nd)
            return fail(err, cap, CMK_E_IO, "cannot restart the HTTP server after a reload");
        h->retired[h->nretired++] = (struct retired){h->d, {0}, http_mono()};
        h->d = nd;
        return fail(err, cap, CMK_E_IO,
                    "the new certificate was refused by the TLS library; the old one stays");
    }
    h->retired[h->nretired++] = (struct retired){h->d, h->tls, http_mono()};
    h->d = nd;
    h->tls = fresh;
    return CMK_OK;
}

void http_daemon_reap(http_daemon *h, double max_age)
{
    double now = http_mono();

    for (size_t i = 0; h && i < h->nretired;) {
        const union MHD_DaemonInfo *di =
            MHD_get_daemon_info(h->retired[i].d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if ((di && di->num_connections == 0) || now - h->retired[i].since > max_age)
            stop_retired(h, i);
        else
            i++;
    }
}

void http_daemon_quiesce(http_daemon *h)
{
    MHD_socket fd;

    if (!h || !h->d)
        return;
    fd = MHD_quiesce_daemon(h->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

void http_daemon_stop(http_daemon *h)
{
    if (!h)
        return;
    while (h->nretired)
        stop_retired(h, 0);
    if (h->d)
        MHD_stop_daemon(h->d);
    http_tls_free(&h->tls);
    free(h->cert);
    free(h->key);
    free(h);
}
