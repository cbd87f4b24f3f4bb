/* test_http_addr.c — the server's view of client addresses (tools/serve/http_util.c): which
 * are loopback (how `serve --cache-send auto` sends a cache hit) and the key a client is
 * counted under by the limits. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "tests/check.h"
#include "tools/serve/http_util.h"

static int loop4(const char *a)
{
    struct sockaddr_in s = {.sin_family = AF_INET};

    REQUIRE(inet_pton(AF_INET, a, &s.sin_addr) == 1);
    return http_addr_is_loopback((const struct sockaddr *)&s);
}

static int loop6(const char *a)
{
    struct sockaddr_in6 s = {.sin6_family = AF_INET6};

    REQUIRE(inet_pton(AF_INET6, a, &s.sin6_addr) == 1);
    return http_addr_is_loopback((const struct sockaddr *)&s);
}

static const char *key6(const char *a, char *out)
{
    struct sockaddr_in6 s = {.sin6_family = AF_INET6};

    REQUIRE(inet_pton(AF_INET6, a, &s.sin6_addr) == 1);
    CHECK(http_client_key((const struct sockaddr *)&s, out, HTTP_CLIENT_KEY_MAX) == 0);
    return out;
}

int main(void)
{
    struct sockaddr_un_like {
        sa_family_t family;
    } other = {AF_UNIX};
    char k[HTTP_CLIENT_KEY_MAX];

    CHECK(loop4("127.0.0.1") && loop4("127.255.0.9"));
    CHECK(!loop4("128.0.0.1") && !loop4("10.0.0.1") && !loop4("0.0.0.0"));
    CHECK(loop6("::1") && loop6("::ffff:127.0.0.2"));
    CHECK(!loop6("::2") && !loop6("::ffff:10.0.0.1") && !loop6("2001:db8::1") && !loop6("::"));
    CHECK(!http_addr_is_loopback(NULL));
    CHECK(!http_addr_is_loopback((const struct sockaddr *)(const void *)&other));

    CHECK_MSG(strcmp(key6("::ffff:10.1.2.3", k), "10.1.2.3") == 0, "%s", k);
    CHECK_MSG(strcmp(key6("2001:db8:1:2:aaaa::1", k), "2001:db8:1:2::/64") == 0, "%s", k);
    CHECK(http_client_key(NULL, k, sizeof(k)) == -1 && strcmp(k, "-") == 0);
    return check_summary();
}
