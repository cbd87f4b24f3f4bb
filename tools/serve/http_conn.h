/*
 * http_conn.h — connection admission for `cmkstore serve` (libmicrohttpd callbacks): a limit
 * on connections from one client address, and a short idle timeout until a connection has
 * authenticated.
 *
 * Addresses are counted under http_client_key (IPv4 address, IPv6 /64). A connection that
 * arrives while `per_ip` from its address are open is accepted but marked: the registry
 * answers its first request with 429 and closes it, so a client learns why. One that arrives
 * while twice `per_ip` are open is closed at once, unanswered (answering needs a connection
 * slot, which is what is being protected).
 *
 * New connections get the header timeout (libmicrohttpd's daemon-wide connection timeout):
 * idle for that long before a request has authenticated, they are closed. The registry calls
 * http_conn_trust once a request on the connection has authenticated (or, without
 * authentication, once its headers are complete): from then on the connection gets the normal
 * idle timeout.
 */
#ifndef CMK_HTTP_CONN_H
#define CMK_HTTP_CONN_H

#include <microhttpd.h>

#include "tools/serve/http_metrics.h"

typedef struct http_conn http_conn;

/* per_ip: 0 = no limit. max_total: connections past this many open at once are marked excess
 * (http_conn_excess; 0: none are). conn_timeout_s: the idle timeout of trusted connections.
 * m: where to count refusals (may be NULL). NULL on allocation failure. */
http_conn *http_conn_new(unsigned per_ip, unsigned max_total, unsigned conn_timeout_s,
                         http_metrics *m);
/* Call only once the daemon is stopped. NULL is a no-op. */
void http_conn_free(http_conn *g);

/* MHD_AcceptPolicyCallback and MHD_NotifyConnectionCallback; cls is the http_conn. */
enum MHD_Result http_conn_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen);
void http_conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                      enum MHD_ConnectionNotificationCode code);

/* 1 if c arrived over the per-address limit (answer 429 and close it). */
int http_conn_over_limit(struct MHD_Connection *c);
/* 1 if c arrived while max_total connections were open. */
int http_conn_excess(struct MHD_Connection *c);
/* c has authenticated: give it the normal idle timeout (once; later calls are no-ops).
 * NULL g: no-op. */
void http_conn_trust(http_conn *g, struct MHD_Connection *c);

#endif
