/* SPDX-License-Identifier: MIT */
#pragma once

/* The daemon skeleton, the same in every sipfleet daemon:
 *   1. daemon_new(): parse arguments (--config, --dump-default, --check-config, --set, --version,
 *      --help), open logging, register the common [global] options;
 *   2. the role registers its own config tables, then daemon_load_config() (fatal on error; also
 *      handles --dump-default and --check-config);
 *   3. daemon_start(): loop, signals (signalfd on the loop), control socket, Prometheus, watchdog;
 *   4. the role binds its sockets; daemon_listen() opens the control socket (so a client that
 *      can connect finds the daemon serving); daemon_drop_privileges();
 *   5. daemon_ready() (sd_notify READY=1), daemon_run();
 *   6. SIGTERM/SIGINT: the role's stop hook stops accepting and drains in-flight work, calling
 *      daemon_drained() when done or at [global] shutdown-timeout; SIGHUP reloads. */

#include <stdbool.h>
#include <stdint.h>

#include "conf.h"
#include "log.h"

struct loop;
struct ctl;
struct stats;
struct daemon;

/* The [global] keys every daemon has. */
struct daemon_global_config {
        char *control_socket;
        int log_level;                        /* index into "error".."debug" */
        int log_levels[_LOG_SUBSYSTEM_MAX];   /* 0 = inherit log-level, else index + 1 */
        int64_t sofia_level;
        uint64_t shutdown_timeout_ms;
        char *user;
        struct conf_address prometheus_listen;
};

struct daemon_hooks {
        /* SIGTERM: stop accepting new work and drain; call daemon_drained() when done (may be
         * immediately). NULL = stop at once. */
        void (*stop)(struct daemon *d, void *userdata);
        /* After a successful reload or SET of reloadable keys. */
        void (*config_changed)(struct daemon *d, char *const *changed, void *userdata);
        /* After every successful reload (SIGHUP, RELOAD), keys changed or not: the time to
         * re-read files the configuration points to (routes, password files). */
        void (*reloaded)(struct daemon *d, void *userdata);
        void *userdata;
};

enum daemon_args_result {
        DAEMON_CONTINUE,
        DAEMON_EXIT_OK,
        DAEMON_EXIT_FAILURE,
};

/* role: "proxy", "presence"... Builds the conf, parses argv. On DAEMON_EXIT_* the caller
 * exits with that status after daemon_free(). */
int daemon_new(const char *role, int argc, char **argv, struct daemon **ret,
               enum daemon_args_result *result);
void daemon_free(struct daemon *d);

struct conf *daemon_conf(struct daemon *d);
struct daemon_global_config *daemon_global(struct daemon *d);
const char *daemon_role(struct daemon *d);

/* Loads the configuration (or dumps/checks it as asked). Returns DAEMON_CONTINUE to go on. */
enum daemon_args_result daemon_load_config(struct daemon *d);

/* Creates the loop on the given backend (su_root for SIP daemons, libevent otherwise). */
enum daemon_loop_kind { DAEMON_LOOP_SU, DAEMON_LOOP_EVENT };
int daemon_start(struct daemon *d, enum daemon_loop_kind kind, const struct daemon_hooks *hooks);

struct loop *daemon_loop(struct daemon *d);
struct ctl *daemon_ctl(struct daemon *d);
struct stats *daemon_stats(struct daemon *d);

int daemon_listen(struct daemon *d);
int daemon_drop_privileges(struct daemon *d);
void daemon_ready(struct daemon *d);
/* Runs until stopped. Returns the exit status: 0 after a clean stop. */
int daemon_run(struct daemon *d);
/* From the stop hook when draining is finished. */
void daemon_drained(struct daemon *d);
bool daemon_stopping(struct daemon *d);
