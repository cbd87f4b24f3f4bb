/*
 * http_daemon.h — the libmicrohttpd daemon of `cmkstore serve` on a listening socket, over
 * plain HTTP or HTTPS (http_tls.h: the operator's PEM chain and key, TLS 1.2 and 1.3 only,
 * GnuTLS underneath libmicrohttpd), with the certificate reloaded without a restart.
 *
 * Reload (SIGHUP): libmicrohttpd takes its certificate when a daemon starts, so a reload
 * loads and checks the files, then starts a new daemon on the same listening socket (handed
 * over by MHD_quiesce_daemon) and retires the old one: connections already open finish on
 * it (keep-alive clients keep the old certificate until they reconnect), new connections
 * get the new certificate. A retired daemon is stopped once it has no connection left, or
 * after max_age seconds (http_daemon_reap). If the new files do not load, nothing changes.
 *
 * Not thread-safe: one thread (the main thread of serve) calls these.
 */
#ifndef CMK_HTTP_DAEMON_H
#define CMK_HTTP_DAEMON_H

#include <microhttpd.h>
#include <stddef.h>

#include "cmkstore.h"

typedef struct http_daemon_cfg {
    unsigned flags; /* extra MHD flags (MHD_USE_IPv6) */
    MHD_AcceptPolicyCallback accept;
    void *accept_cls;
    MHD_AccessHandlerCallback access;
    void *access_cls;
    MHD_RequestCompletedCallback completed;
    void *completed_cls;
    MHD_NotifyConnectionCallback notify;
    void *notify_cls;
    void (*logger)(void *cls, const char *fmt, va_list ap);
    unsigned conn_limit, conn_timeout;
    size_t mem_limit;
    const char *tls_cert, *tls_key; /* PEM files; both NULL: plain HTTP */
} http_daemon_cfg;

typedef struct http_daemon http_daemon;

/* Starts the daemon on listen_fd (owned from now on). cfg is copied (its strings too).
 * CMK_E_INVAL / CMK_E_REFUSED / CMK_E_NOT_FOUND (the TLS files, see http_tls_load),
 * CMK_E_UNSUPPORTED (libmicrohttpd without TLS), CMK_E_IO (the daemon did not start),
 * CMK_E_NOMEM; err says what (never key material). */
cmk_err http_daemon_start(const http_daemon_cfg *cfg, int listen_fd, http_daemon **out, char *err,
                          size_t cap);
int http_daemon_is_tls(const http_daemon *d);
/* The SHA-256 fingerprint of the serving certificate ("" without TLS). */
const char *http_daemon_fingerprint(const http_daemon *d);
/* The port bound (0 if unknown). */
unsigned http_daemon_port(const http_daemon *d);
/* Reloads the certificate and key files (see above). Without TLS: CMK_E_INVAL. On failure
 * the running daemon is unchanged and err says why. */
cmk_err http_daemon_reload(http_daemon *d, char *err, size_t cap);
/* Stops retired daemons that have no connection left or were retired max_age seconds ago. */
void http_daemon_reap(http_daemon *d, double max_age);
/* Stops accepting connections (the listening socket is closed); open ones go on. */
void http_daemon_quiesce(http_daemon *d);
/* Stops every daemon (open connections are closed) and frees d. NULL is a no-op. */
void http_daemon_stop(http_daemon *d);

#endif
