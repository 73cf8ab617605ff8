/* SPDX-License-Identifier: MIT */
/* A real MariaDB server for the tests: a fresh data directory in the test's tmpdir, reached
 * only through a Unix socket there (no TCP), grant tables off so that any user name connects. */
#include <stdio.h>
#include <unistd.h>

#include "macro.h"
#include "testlib-mariadb.h"

static int run(const char *name, const char *const *argv, char **log) {
        struct tl_proc p;
        tl_spawn(name, (char *const *)argv, &p);
        int status = tl_wait(&p, 60000);
        if (status == -ETIMEDOUT) {
                tl_kill(&p, 9);
                tl_wait(&p, 5000);
        }
        *log = tl_log(&p);
        free(p.log);
        return status;
}

void tl_mariadb_start(struct tl_mariadb *m) {
        *m = (struct tl_mariadb){0};
        m->dir = tl_path("mariadb");
        ck_assert_int_ge(asprintf(&m->sock, "%s/sock", m->dir), 0);
        ck_assert_msg(strlen(m->sock) < 100, "socket path too long: %s", m->sock);
        _cleanup_free_ char *datadir_opt = NULL;
        ck_assert_int_ge(asprintf(&datadir_opt, "--datadir=%s/data", m->dir), 0);
        const char *user_opt = geteuid() == 0 ? "--user=root" : "--skip-name-resolve";
        const char *install[] = {"/usr/bin/mariadb-install-db", "--no-defaults", datadir_opt,
                                 "--auth-root-authentication-method=normal", "--skip-test-db",
                                 user_opt, NULL};
        _cleanup_free_ char *log = NULL;
        ck_assert_msg(run("mariadb-install-db", install, &log) == 0, "mariadb-install-db: %s",
                      log);
        tl_mariadb_restart(m);
}

void tl_mariadb_restart(struct tl_mariadb *m) {
        if (m->proc.pid > 0)
                tl_stop(&m->proc);
        free(m->proc.log);
        m->proc.log = NULL;
        _cleanup_free_ char *datadir_opt = NULL, *sock_opt = NULL, *pid_opt = NULL;
        ck_assert_int_ge(asprintf(&datadir_opt, "--datadir=%s/data", m->dir), 0);
        ck_assert_int_ge(asprintf(&sock_opt, "--socket=%s", m->sock), 0);
        ck_assert_int_ge(asprintf(&pid_opt, "--pid-file=%s/pid", m->dir), 0);
        const char *user_opt = geteuid() == 0 ? "--user=root" : "--skip-name-resolve";
        const char *server[] = {"/usr/sbin/mariadbd", "--no-defaults", datadir_opt, sock_opt,
                                pid_opt, "--skip-networking", "--skip-grant-tables",
                                "--skip-log-bin", "--innodb-buffer-pool-size=16M", user_opt,
                                NULL};
        tl_spawn("mariadbd", (char *const *)server, &m->proc);
        if (tl_wait_unix(m->sock, 30000) < 0) {
                _cleanup_free_ char *slog = tl_log(&m->proc);
                ck_abort_msg("mariadbd did not start: %s", slog);
        }
}

void tl_mariadb_sql(struct tl_mariadb *m, const char *sql) {
        _cleanup_free_ char *sock_opt = NULL;
        ck_assert_int_ge(asprintf(&sock_opt, "--socket=%s", m->sock), 0);
        const char *argv[] = {"/usr/bin/mariadb", "--no-defaults", sock_opt, "-e", sql, NULL};
        _cleanup_free_ char *log = NULL;
        ck_assert_msg(run("mariadb", argv, &log) == 0, "mariadb -e '%s': %s", sql, log);
}

void tl_mariadb_stop(struct tl_mariadb *m) {
        if (m->proc.pid > 0)
                tl_stop(&m->proc);
        free(m->proc.log);
        free(m->dir);
        free(m->sock);
        *m = (struct tl_mariadb){0};
}
