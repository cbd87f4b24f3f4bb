/*
 * http_tls.h — HTTPS for the servers built on libmicrohttpd (`cmkstore vault serve`; any
 * other server of tools/serve/ the same way).
 *
 * Debian's libmicrohttpd is built with GnuTLS: a daemon serves HTTPS when started with
 * MHD_USE_TLS and the PEM certificate chain and private key in memory. This module gets
 * those two PEM texts:
 *  - from files the operator names (a chain, leaf first, and its key; the key file must not
 *    be readable by group or others), checked with OpenSSL: both parse, the key is the
 *    leaf's;
 *  - or, when none are named, from <home>/tls/<name>.crt and <name>.key, generated on first
 *    use as a self-signed pair (ECDSA P-256, 10 years, CA:TRUE so that clients can trust it
 *    directly as their CA; subjectAltName: localhost, 127.0.0.1, ::1, this host's name and
 *    the names given), the key written 0600.
 * and the SHA-256 fingerprint of the leaf (what a client operator compares before trusting
 * a self-signed certificate). TLS 1.2 and 1.3 only: pass HTTP_TLS_PRIORITIES.
 *
 *     http_tls t;
 *     if (http_tls_load(&t, cert, key, home, "vault-serve", sans, nsans, err, sizeof(err)))
 *         ... fail with err ...
 *     d = MHD_start_daemon(MHD_USE_TLS | ..., MHD_OPTION_HTTPS_MEM_CERT, t.cert_pem,
 *                          MHD_OPTION_HTTPS_MEM_KEY, t.key_pem,
 *                          MHD_OPTION_HTTPS_PRIORITIES, HTTP_TLS_PRIORITIES, ...);
 *     ... MHD_stop_daemon(d); http_tls_free(&t);
 *
 * Not thread-safe while loading; the loaded texts are read-only afterwards. The key text is
 * wiped when freed and never logged.
 */
#ifndef CMK_HTTP_TLS_H
#define CMK_HTTP_TLS_H

#include <stddef.h>

#include "cmkstore.h"

/* GnuTLS priority string: its secure defaults, protocol versions TLS 1.2 and 1.3 only. */
#define HTTP_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

typedef struct http_tls {
    char *cert_pem;       /* the certificate chain, PEM, leaf first */
    char *key_pem;        /* the leaf's private key, PEM (secret) */
    char fingerprint[96]; /* SHA-256 of the leaf's DER, "AB:CD:...", 32 bytes */
    char cert_path[4096]; /* where the chain was read from */
    int generated;        /* 1 if the self-signed pair was made by this call */
} http_tls;

/* Fills t (zeroed first). cert_file and key_file: both or neither (neither: the home's
 * self-signed pair <home>/tls/<name>.crt/.key, made if absent; name: letters, digits, '-').
 * sans: extra subjectAltName entries of a generated certificate (IP addresses or DNS
 * names; ignored when the pair exists or files are named). On failure t holds nothing and
 * err (never holding key material) says what failed: CMK_E_INVAL (one file without the
 * other, bad PEM, key not matching the certificate, bad name), CMK_E_NOT_FOUND, CMK_E_REFUSED
 * (key file readable by group or others), CMK_E_IO, CMK_E_CRYPTO, CMK_E_NOMEM. */
cmk_err http_tls_load(http_tls *t, const char *cert_file, const char *key_file, const char *home,
                      const char *name, const char *const *sans, size_t nsans, char *err,
                      size_t errcap);

/* Wipes and frees the texts; t may then be loaded again. NULL is a no-op. */
void http_tls_free(http_tls *t);

#endif
