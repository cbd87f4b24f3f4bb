/*
 * serve.h — `cmkstore serve` (an OCI registry over an encrypted store) and
 * `cmkstore serve-passwd` (htpasswd lines for its Basic authentication).
 *
 * Both take argv as the dispatcher gives a command: argv[0] is the command word ("serve",
 * "serve-passwd"), options follow (the global --home is also accepted after the command).
 * They return the process exit code (cli.h): 0 after a graceful shutdown (SIGTERM/SIGINT),
 * 2 usage, 3 store or file not found, 5 key access at setup, 6 refused (a secret file
 * readable by group/others), 1 otherwise. `--help` prints the help and returns 0.
 *
 * The commands are also listed in cli_serve_cmds, which the dispatcher picks up through its
 * weak reference when the server is built (see cli.h).
 */
#ifndef CMK_SERVE_H
#define CMK_SERVE_H

#include "tools/cli.h"

int cmd_serve(int argc, char **argv);
int cmd_serve_passwd(int argc, char **argv);

extern const cli_cmd cli_serve_cmds[];

/* serve-passwd's options and body (serve_passwd.c), for its entry in cli_serve_cmds. */
extern const cli_opt serve_passwd_opts[];
int serve_run_passwd(const cli_cmd *cmd, cli_args *a);

#endif
