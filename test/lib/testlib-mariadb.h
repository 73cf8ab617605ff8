/* SPDX-License-Identifier: MIT */
#pragma once

#include "testlib.h"

/* A real mariadbd (Debian's mariadb-server) on a Unix socket in the test's tmpdir, with a
 * fresh data directory and no grant tables: connect with unix_socket=<sock> and any user. */
struct tl_mariadb {
        struct tl_proc proc;
        char *dir;
        char *sock;
};
/* Fails the test when the server cannot start. */
void tl_mariadb_start(struct tl_mariadb *m);
/* Stops the server if running and starts it again on the same data and socket. */
void tl_mariadb_restart(struct tl_mariadb *m);
/* Runs SQL with the mariadb client; fails the test on an error. */
void tl_mariadb_sql(struct tl_mariadb *m, const char *sql);
void tl_mariadb_stop(struct tl_mariadb *m);
