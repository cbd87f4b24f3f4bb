/*
 * http_listen.c — the listening socket of the servers (see http_listen.h).
 */
#include "tools/serve/http_listen.h"

#include <errno.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int http_parse_listen(const char *in, struct sockaddr_storage *ss, char *host, size_t hcap,
                      unsigned *port_out)
{
    char buf[300];
    const char *h, *p;
    struct addrinfo hints, *res = NULL;
    uint64_t port;
    char *end;
    int ok;

    if (strlen(in) >= sizeof(buf))
        return -1;
    snprintf(buf, sizeof(buf), "%s", in);
    if (buf[0] == '[') {
        char *rb = strchr(buf, ']');
        if (!rb || rb[1] != ':')
            return -1;
        *rb = '\0';
        h = buf + 1;
        p = rb + 2;
    } else {
        char *colon = strrchr(buf, ':');
        if (!colon || strchr(buf, ':') != colon)
            return -1;
        *colon = '\0';
        h = buf[0] ? buf : "127.0.0.1";
        p = colon + 1;
    }
    if (strcmp(h, "localhost") == 0)
        h = "127.0.0.1";
    errno = 0;
    port = strtoull(p, &end, 10);
    if (!*p || *end || errno || port > 65535)
        return -1;
    memset(&hints, 0, sizeof(hints));
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(h, p, &hints, &res) != 0 || !res)
        return -1;
    ok = res->ai_addrlen <= sizeof(*ss);
    if (ok) {
        memset(ss, 0, sizeof(*ss));
        memcpy(ss, res->ai_addr, res->ai_addrlen);
    }
    freeaddrinfo(res);
    snprintf(host, hcap, "%s", h);
    *port_out = (unsigned)port;
    return ok ? 0 : -1;
}

int http_is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)ss;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)ss;
        return IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
    }
    return 0;
}

/* Binds and listens on addr (SO_REUSEADDR, IPv6 only for an IPv6 address, as
 * libmicrohttpd would) and sets *port to the port bound. Done here rather than by
 * libmicrohttpd, which logs "Failed to bind to port 0" (the port argument, unused with an
 * address) ahead of the real error. Returns the socket, or -1 with errno set. */
int http_listen_open(const struct sockaddr_storage *addr, unsigned *port)
{
    struct sockaddr_storage got;
    socklen_t len =
        addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    socklen_t glen = sizeof(got);
    int one = 1, e;
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (addr->ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
        bind(fd, (const struct sockaddr *)addr, len) != 0 || listen(fd, SOMAXCONN) != 0 ||
        getsockname(fd, (struct sockaddr *)&got, &glen) != 0) {
        e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    *port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
                                            : ((struct sockaddr_in *)&got)->sin_port);
    return fd;
}
