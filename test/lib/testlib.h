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

/* The whole file (may hold NUL bytes; a NUL is appended), malloc'd, or NULL when it cannot be
 * read. len may be NULL. */
char *tl_read_file(const char *path, size_t *len);

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
/* SIGSTOP, then wait (at most 5 s) until every thread of the process has stopped. */
void tl_freeze(struct tl_proc *p);
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

/* The built sipfleet-proxy with a generated config: [global] transports on a free UDP/TCP port
 * of 127.0.0.1, a control socket in the test's tmpdir, shutdown-timeout=3s and
 * prometheus-listen on a free port, followed by `extra` (more [global] lines, then any
 * sections). Ready means the control socket accepts, which the proxy opens only after its SIP
 * transports are bound. A tls_port set by the caller before the first start adds
 * sips:127.0.0.1:<tls_port> to the transports (extra then names tls-certificates-dir). */
struct tl_proxy {
        const char *name; /* set before the first start for several proxies; NULL: "proxy" */
        struct tl_proc proc;
        char *conf;
        char *sock;
        int port;
        int metrics_port;
        int tls_port;
};
/* Writes the config (again: for reload tests). Ports are picked on the first call only. */
void tl_proxy_write_conf(struct tl_proxy *f, const char *extra);
/* Writes the config and starts the proxy; called again after tl_proxy_stop() it restarts on
 * the same ports and socket. */
void tl_proxy_start(struct tl_proxy *f, const char *extra);
/* SIGTERM and wait; the fixture can be started again. Both fail the test when the proxy did
 * not exit 0 or its log holds a sanitizer report. */
void tl_proxy_stop(struct tl_proxy *f);
void tl_proxy_done(struct tl_proxy *f);

/* Any other sipfleet daemon (role "presence", "pushd", "mediarelay"...): the built
 * <role>/sipfleet-<role> with a generated config: [global] control-socket in the test's tmpdir,
 * shutdown-timeout=3s, prometheus-listen on a free port, followed by `extra` (more [global]
 * lines, then any sections). Ready means the control socket accepts. Stop and done fail the
 * test when the daemon did not exit 0 on SIGTERM or its log holds a sanitizer report. */
struct tl_daemon {
        struct tl_proc proc;
        char *role;
        char *conf;
        char *sock;
        int metrics_port;
};
void tl_daemon_write_conf(struct tl_daemon *f, const char *role, const char *extra);
/* Called again after tl_daemon_stop() it restarts with the same socket. */
void tl_daemon_start(struct tl_daemon *f, const char *role, const char *extra);
void tl_daemon_stop(struct tl_daemon *f);
void tl_daemon_done(struct tl_daemon *f);

struct json_t;
/* One control command; the reply parsed as JSON (caller json_decref). Fails the test when the
 * daemon cannot be reached or the reply is not JSON. */
struct json_t *tl_ctl(const char *sock, const char *line);
/* A counter read with GET; fails the test when it is not an integer. */
long long tl_counter(const char *sock, const char *path);

/* Starts SIPp in the background with a scenario (a path under the source root, or an absolute
 * path), bound to
 * 127.0.0.1:local_port (0: a free port), its own control port, no stdin, a 30 s timeout that
 * fails the run, errors traced to tmpdir/<name>-errors.log; args (NULL-terminated, may be NULL)
 * follow: the remote address, -m, -t, -key... */
int tl_sipp_spawn(struct tl_proc *p, const char *name, const char *scenario, int local_port,
                  const char *const *args);
/* Waits up to timeout_ms (then kills it); prints SIPp's output and error file when the run
 * failed. Returns the wait status: 0 when every call of the scenario passed. */
int tl_sipp_wait(struct tl_proc *p, const char *name, int timeout_ms);
/* Runs one call of a SIPp scenario (a path under the source root) against 127.0.0.1:port over
 * UDP; returns the wait status (0 when the scenario passed) and prints SIPp's output when not. */
int tl_sipp(const char *scenario, int port);
/* A TLS directory tmpdir/name for sofia: a fresh test CA (cafile.pem, ca.key), a key and a
 * certificate signed by it for subject_alt_name (NULL: "IP:127.0.0.1"), with agent.pem = key +
 * certificate, and agent.key / agent.crt separately for other peers. Returns the malloc'd
 * directory path. */
char *tl_tls_dir(const char *name, const char *subject_alt_name);
/* A client certificate signed by the test CA of a tl_tls_dir() directory: dir/<name>.key and
 * dir/<name>.crt, with CN cn and, unless NULL, the subjectAltName ("URI:sip:alice@example.org",
 * "DNS:client.test"). */
void tl_tls_client_cert(const char *dir, const char *name, const char *cn,
                        const char *subject_alt_name);
