/* serve_passwd.c — `cmkstore serve-passwd USER`: an htpasswd line (PBKDF2-SHA256) for
 * `cmkstore serve --htpasswd`, the password read from standard input without echo. */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <termios.h>
#include <unistd.h>

#include "tools/serve/http_auth.h"
#include "tools/serve/serve.h"

const cli_opt serve_passwd_opts[] = {
    {"iterations", 0, CLI_UINT, 0, "N", "PBKDF2-SHA256 iterations (default 600000)."},
    CLI_OPT_END,
};

/* Reads one line (the password) from stdin, without echo on a terminal. */
static int read_password(char *buf, size_t cap, size_t *len)
{
    struct termios old, noecho;
    int tty = isatty(STDIN_FILENO), restored = 1, c;
    size_t n = 0;

    if (tty) {
        fputs("Password: ", stderr);
        if (tcgetattr(STDIN_FILENO, &old) == 0) {
            noecho = old;
            noecho.c_lflag &= ~(tcflag_t)ECHO;
            restored = tcsetattr(STDIN_FILENO, TCSAFLUSH, &noecho) != 0;
        }
    }
    while ((c = getchar()) != EOF && c != '\n') {
        if (n + 1 >= cap) {
            n = cap; /* too long: reported by the caller */
            while ((c = getchar()) != EOF && c != '\n')
                ;
            break;
        }
        buf[n++] = (char)c;
    }
    if (tty) {
        if (!restored)
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    if (n >= cap)
        return -1;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    *len = n;
    return 0;
}

int serve_run_passwd(const cli_cmd *cmd, cli_args *a)
{
    char pass[1100], err[256];
    uint64_t iter = cli_num(a, "iterations", HTTP_AUTH_DEFAULT_ITERATIONS);
    char *line = NULL;
    size_t plen = 0;
    cmk_err rc;
    int ex;

    if (iter < HTTP_AUTH_MIN_ITERATIONS || iter > HTTP_AUTH_MAX_ITERATIONS)
        return cli_usage_error(cmd, "--iterations must be between %u and %u",
                               HTTP_AUTH_MIN_ITERATIONS, HTTP_AUTH_MAX_ITERATIONS);
    if (read_password(pass, sizeof(pass), &plen) != 0 || plen == 0) {
        OPENSSL_cleanse(pass, sizeof(pass));
        return cli_usage_error(cmd, "give the password (1 to 1024 bytes) on standard input");
    }
    rc = http_auth_make_line(a->pos[0], pass, plen, (unsigned)iter, &line, err, sizeof(err));
    OPENSSL_cleanse(pass, sizeof(pass));
    if (rc != CMK_OK) {
        fprintf(stderr, "cmkstore: error: %s\n", err);
        return cli_exit_code(rc);
    }
    ex = printf("%s\n", line) < 0 ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
    free(line);
    return ex;
}
