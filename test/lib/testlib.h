/* SPDX-License-Identifier: MIT */
#pragma once

/* Fixtures shared by the Check tests: TAP runner, free ports, temporary directories, child
 * processes (the built daemons, redis-server, sipp), readiness waits. */

#include <check.h>
#include <stdbool.h>
#include <sys/types.h>

/* Runs the suite with TAP output on stdout; returns the process exit status. */
int tl_run(Suite *s);

/* A port free on 127.0.0.1 for both UDP and TCP at the time of the call. */
int tl_free_port(void);

/* A fresh directory under $TMPDIR, removed (recursively) at exit. */
const char *tl_tmpdir(void);
/* tmpdir/name, malloc'd. */
char *tl_path(const char *name);
/* Write text to tmpdir/name; returns the malloc'd path. */
char *tl_write_file(const char *name, const char *text);

/* $SIPFLEET_BUILD_ROOT/rel, malloc'd. */
char *tl_build_path(const char *rel);
char *tl_source_path(const char *rel);

struct tl_proc {
        pid_t pid;
        char *log; /* stdout+stderr of the child */
};
/* Spawns argv[0] (a path) with stdout/stderr appended to tmpdir/<name>.log. */
int tl_spawn(const char *name, char *const argv[], struct tl_proc *p);
/* Waits up to timeout_ms; returns the wait status, or -ETIMEDOUT. */
int tl_wait(struct tl_proc *p, int timeout_ms);
/* SIGTERM, wait up to 5 s, then SIGKILL. Returns the wait status. */
int tl_stop(struct tl_proc *p);
void tl_kill(struct tl_proc *p, int sig);
/* The child's log so far (malloc'd, "" if none). */
char *tl_log(struct tl_proc *p);

/* Wait until connect() to the Unix socket succeeds. 0 or -ETIMEDOUT. */
int tl_wait_unix(const char *path, int timeout_ms);
/* Wait until a TCP connect to 127.0.0.1:port succeeds. */
int tl_wait_tcp(int port, int timeout_ms);

/* A real redis-server on a free loopback port, no persistence. */
struct tl_redis {
        struct tl_proc proc;
        int port;
};
/* Extra args (NULL-terminated) appended to the command line. Skips nothing: fails the test if
 * redis-server cannot start. */
int tl_redis_start(struct tl_redis *r, const char *const *extra);
void tl_redis_stop(struct tl_redis *r);
/* Runs one command with redis-cli-like semantics over a blocking hiredis connection; returns the
 * reply as text (integers in decimal, arrays joined with '\n'), malloc'd, or NULL. */
char *tl_redis_cmd(struct tl_redis *r, const char *fmt, ...);
