/* http_conn.c — see http_conn.h. */
#include "tools/serve/http_conn.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/serve/http_util.h"

#define BUCKETS 256

/* Open connections of one address key. */
struct addr_count {
    struct addr_count *next;
    unsigned n;
    char key[HTTP_CLIENT_KEY_MAX];
};

/* One connection (libmicrohttpd's socket context). */
struct conn_state {
    char key[HTTP_CLIENT_KEY_MAX];
    int counted; /* holds one in its address's count */
    int over;    /* arrived over the per-address limit */
    int excess;  /* arrived while max_total were open */
    int trusted; /* has the normal idle timeout */
};

struct http_conn {
    unsigned per_ip, max_total, conn_timeout;
    http_metrics *metrics;
    pthread_mutex_t mu; /* guards buckets and total */
    unsigned total;     /* connections open */
    struct addr_count *buckets[BUCKETS];
};

static unsigned bucket_of(const char *key)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (; *key; key++)
        h = (h ^ (unsigned char)*key) * 16777619u;
    return h % BUCKETS;
}

/* The count of key (callers hold g->mu); with create, a new one at 0. NULL: none (or out of
 * memory). */
static struct addr_count *find(http_conn *g, const char *key, int create)
{
    struct addr_count **pp = &g->buckets[bucket_of(key)], *e;

    for (e = *pp; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    if (!create || !(e = calloc(1, sizeof(*e))))
        return NULL;
    snprintf(e->key, sizeof(e->key), "%s", key);
    e->next = *pp;
    *pp = e;
    return e;
}

static void drop(http_conn *g, const char *key)
{
    struct addr_count **pp = &g->buckets[bucket_of(key)], *e;

    for (; (e = *pp) != NULL; pp = &e->next) {
        if (strcmp(e->key, key) == 0) {
            if (e->n > 0 && --e->n == 0) {
                *pp = e->next;
                free(e);
            }
            return;
        }
    }
}

http_conn *http_conn_new(unsigned per_ip, unsigned max_total, unsigned conn_timeout_s,
                         http_metrics *m)
{
    http_conn *g = calloc(1, sizeof(*g));

    if (!g)
        return NULL;
    if (pthread_mutex_init(&g->mu, NULL) != 0) {
        free(g);
        return NULL;
    }
    g->per_ip = per_ip;
    g->max_total = max_total;
    g->conn_timeout = conn_timeout_s;
    g->metrics = m;
    return g;
}

void http_conn_free(http_conn *g)
{
    if (!g)
        return;
    for (unsigned i = 0; i < BUCKETS; i++) {
        struct addr_count *e = g->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    pthread_mutex_destroy(&g->mu);
    free(g);
}

enum MHD_Result http_conn_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    http_conn *g = cls;
    char key[HTTP_CLIENT_KEY_MAX];
    const struct addr_count *e;
    int refuse;

    (void)addrlen;
    if (!g->per_ip || http_client_key(addr, key, sizeof(key)) != 0)
        return MHD_YES;
    pthread_mutex_lock(&g->mu);
    e = find(g, key, 0);
    refuse = e && e->n >= 2 * (uint64_t)g->per_ip;
    pthread_mutex_unlock(&g->mu);
    if (refuse)
        http_metrics_inc(g->metrics, HTTP_C_CONN_REFUSED);
    return refuse ? MHD_NO : MHD_YES;
}

void http_conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                      enum MHD_ConnectionNotificationCode code)
{
    http_conn *g = cls;
    struct conn_state *st = *socket_context;
    const union MHD_ConnectionInfo *ci;
    struct addr_count *e;

    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        pthread_mutex_lock(&g->mu);
        g->total--;
        if (st && st->counted)
            drop(g, st->key);
        pthread_mutex_unlock(&g->mu);
        free(st);
        *socket_context = NULL;
        return;
    }
    /* Without its state a connection is neither counted by address nor trusted early: it
     * keeps the short header timeout, the safe side. */
    st = calloc(1, sizeof(*st));
    *socket_context = st;
    ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    pthread_mutex_lock(&g->mu);
    g->total++;
    if (st) {
        st->excess = g->max_total && g->total > g->max_total;
        if (g->per_ip && ci && http_client_key(ci->client_addr, st->key, sizeof(st->key)) == 0 &&
            (e = find(g, st->key, 1)) != NULL) {
            e->n++;
            st->counted = 1;
            st->over = e->n > g->per_ip;
        }
    }
    pthread_mutex_unlock(&g->mu);
    if (st && st->over)
        http_metrics_inc(g->metrics, HTTP_C_CONN_OVER_LIMIT);
}

static struct conn_state *state_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return ci ? ci->socket_context : NULL;
}

int http_conn_over_limit(struct MHD_Connection *c)
{
    const struct conn_state *st = state_of(c);

    return st && st->over;
}

int http_conn_excess(struct MHD_Connection *c)
{
    const struct conn_state *st = state_of(c);

    return st && st->excess;
}

void http_conn_trust(http_conn *g, struct MHD_Connection *c)
{
    struct conn_state *st;

    if (!g || !(st = state_of(c)) || st->trusted)
        return;
    /* Called from the connection's own thread, inside the access handler, as libmicrohttpd
     * allows. */
    if (MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, g->conn_timeout) == MHD_YES)
        st->trusted = 1;
}
