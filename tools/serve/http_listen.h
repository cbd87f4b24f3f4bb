/*
 * http_listen.h — the listening socket of the servers of tools/serve/ (`cmkstore serve`,
 * `cmkstore vault serve`): the --listen ADDR:PORT syntax, and a bound socket made before
 * libmicrohttpd starts (MHD_OPTION_LISTEN_SOCKET), so that port 0 can be resolved and errors
 * are reported plainly.
 */
#ifndef CMK_HTTP_LISTEN_H
#define CMK_HTTP_LISTEN_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

/* Parses "ADDR:PORT" ("[v6]:PORT"; ":PORT" and "localhost:PORT" mean 127.0.0.1; numeric
 * addresses only) into *ss, host (the address text) and *port. Returns 0 or -1. */
int http_parse_listen(const char *in, struct sockaddr_storage *ss, char *host, size_t hcap,
                      unsigned *port);

/* 1 if ss is a loopback address (127/8, ::1). */
int http_is_loopback(const struct sockaddr_storage *ss);

/* Binds and listens on addr; *port receives the port bound. The socket, or -1 (errno). */
int http_listen_open(const struct sockaddr_storage *addr, unsigned *port);

#endif
