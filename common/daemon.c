/* SPDX-License-Identifier: MIT */
#define LOG_SUBSYSTEM LOG_main
#include <event2/event.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <malloc.h>
#include <pwd.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include <sofia-sip/su.h>
#include <sofia-sip/su_wait.h>

#include "config.h"
#include "ctl.h"
#include "daemon.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "stats.h"

struct daemon {
        char *role;
        char *ident;
        struct conf *conf;
        struct daemon_global_config global;
        struct conf_option *global_rows; /* the template, with role-specific defaults */
        size_t n_global_rows;
        char *default_socket;

        char *config_path;       /* NULL: built-in defaults */
        bool config_path_given;  /* --config: a missing file is an error */
        bool dump_default, check_config;

        enum daemon_loop_kind kind;
        su_root_t *root;
        struct event_base *base;
        struct loop *loop;
        struct stats *stats;
        struct ctl *ctl;
        struct http_server *metrics;
        int signal_fd;
        struct loop_io *signal_io;
        struct loop_timer *watchdog_timer;
        uint64_t watchdog_usec;
        struct loop_timer *trim_timer;
        struct loop_timer *drain_timer;

        struct daemon_hooks hooks;
        bool stopping;
        bool su_initialized;
        int exit_status;
        int verbosity_boost; /* SIGUSR1 steps */
};

static const char *const level_choices[] = {"error", "warning", "notice", "info", "debug", NULL};
static const char *const sublevel_choices[] = {"inherit", "error", "warning", "notice",
                                               "info",    "debug",  NULL};

#define G(field) offsetof(struct daemon_global_config, field)

static const struct conf_option global_rows_template[] = {
        {"global", "control-socket", CONF_STRING, G(control_socket), NULL, 0, 0, 0,
         "Unix socket for sipfleet-cli (mode 0660, directory created when missing)"},
        {"global", "log-level", CONF_ENUM, G(log_level), "notice", 0, 0, CONF_RELOADABLE,
         "Log level of every subsystem not set below", .choices = level_choices},
#define X(name, doc)                                                                              \
        {"global", "log-level-" #name, CONF_ENUM,                                                  \
         G(log_levels) + LOG_##name * sizeof(int), "inherit", 0, 0, CONF_RELOADABLE,              \
         "Log level for " doc, .choices = sublevel_choices},
#include "log-subsystems.inc"
#undef X
        {"global", "sofia-level", CONF_INT, G(sofia_level), "1", 0, 9, CONF_RELOADABLE,
         "Verbosity of sofia-sip's own messages, 0 (none) to 9; at 1-3 they are warnings, "
         "above debug"},
        {"global", "shutdown-timeout", CONF_DURATION, G(shutdown_timeout_ms), "5s", 0, 0,
         CONF_RELOADABLE,
         "On SIGTERM, how long in-flight transactions may drain before the daemon exits",
         .unit = CONF_UNIT_S},
        {"global", "user", CONF_STRING, G(user), NULL, 0, 0, 0,
         "When started as root, switch to this user after binding sockets"},
        {"global", "prometheus-listen", CONF_ADDRESS, G(prometheus_listen), NULL, 0, 0, 0,
         "Serve counters as Prometheus text on http://<address>/metrics (empty: off)"},
};

static const struct conf_section global_sections[] = {
        {"global", "Settings every sipfleet daemon has: control socket, logging, shutdown."},
};

static void apply_log_levels(struct daemon *d) {
        for (int s = 0; s < _LOG_SUBSYSTEM_MAX; s++) {
                int idx = d->global.log_levels[s] > 0 ? d->global.log_levels[s] - 1
                                                      : d->global.log_level;
                log_set_level(s, MIN(LOG_ERR + idx + d->verbosity_boost, LOG_DEBUG));
        }
        log_set_sofia_level((int)d->global.sofia_level);
}

static void help(const char *role) {
        printf("Usage: sipfleet-%s [OPTIONS]\n\n"
               "The sipfleet %s daemon.\n\n"
               "  -c, --config=FILE          configuration file (default " CONFDIR "/%s.conf;\n"
               "                             built-in defaults when that file is absent)\n"
               "  -s, --set=SECTION/KEY=VAL  override a configuration value (repeatable)\n"
               "      --dump-default         print the default configuration and exit\n"
               "      --check-config         load the configuration, report errors and exit\n"
               "      --version              print the version and exit\n"
               "  -h, --help                 show this help\n",
               role, role, role);
}

static int parse_args(struct daemon *d, int argc, char **argv, enum daemon_args_result *result) {
        enum { ARG_DUMP = 0x100, ARG_CHECK, ARG_VERSION };
        static const struct option options[] = {
                {"config", required_argument, NULL, 'c'},
                {"set", required_argument, NULL, 's'},
                {"dump-default", no_argument, NULL, ARG_DUMP},
                {"check-config", no_argument, NULL, ARG_CHECK},
                {"version", no_argument, NULL, ARG_VERSION},
                {"help", no_argument, NULL, 'h'},
                {NULL, 0, NULL, 0},
        };
        int c;
        optind = 1;
        *result = DAEMON_CONTINUE;
        while ((c = getopt_long(argc, argv, "c:s:h", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        free(d->config_path);
                        if (!(d->config_path = strdup(optarg)))
                                return -ENOMEM;
                        d->config_path_given = true;
                        break;
                case 's': {
                        _cleanup_free_ char *error = NULL;
                        if (conf_add_override(d->conf, optarg, &error) < 0) {
                                fprintf(stderr, "sipfleet-%s: --set %s: %s\n", d->role, optarg,
                                        strna(error));
                                *result = DAEMON_EXIT_FAILURE;
                                return 0;
                        }
                        break;
                }
                case ARG_DUMP:
                        d->dump_default = true;
                        break;
                case ARG_CHECK:
                        d->check_config = true;
                        break;
                case ARG_VERSION:
                        printf("sipfleet-%s %s\n", d->role, PACKAGE_VERSION);
                        *result = DAEMON_EXIT_OK;
                        return 0;
                case 'h':
                        help(d->role);
                        *result = DAEMON_EXIT_OK;
                        return 0;
                default:
                        fprintf(stderr, "Try 'sipfleet-%s --help'.\n", d->role);
                        *result = DAEMON_EXIT_FAILURE;
                        return 0;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "sipfleet-%s: unexpected argument '%s'. Try --help.\n", d->role,
                        argv[optind]);
                *result = DAEMON_EXIT_FAILURE;
        }
        return 0;
}

int daemon_new(const char *role, int argc, char **argv, struct daemon **ret,
               enum daemon_args_result *result) {
        struct daemon *d = calloc(1, sizeof *d);
        int r;
        if (!d)
                return -ENOMEM;
        d->signal_fd = -1;
        if (!(d->role = strdup(role)) || asprintf(&d->ident, "sipfleet-%s", role) < 0 ||
            asprintf(&d->default_socket, RUNSTATEDIR "/sipfleet/%s.sock", role) < 0) {
                d->ident = NULL;
                r = -ENOMEM;
                goto fail;
        }
        log_open(d->ident, LOG_TARGET_AUTO);

        d->n_global_rows = ELEMENTSOF(global_rows_template);
        d->global_rows = malloc(sizeof global_rows_template);
        if (!d->global_rows) {
                r = -ENOMEM;
                goto fail;
        }
        memcpy(d->global_rows, global_rows_template, sizeof global_rows_template);
        d->global_rows[0].def = d->default_socket;

        r = conf_new(role, &d->conf);
        if (r < 0)
                goto fail;
        r = conf_add_sections(d->conf, global_sections, ELEMENTSOF(global_sections));
        if (r < 0)
                goto fail;
        r = conf_add_table(d->conf, d->global_rows, d->n_global_rows, &d->global);
        if (r < 0)
                goto fail;
        r = parse_args(d, argc, argv, result);
        if (r < 0)
                goto fail;
        *ret = d;
        return 0;
fail:
        daemon_free(d);
        return r;
}

struct conf *daemon_conf(struct daemon *d) {
        return d->conf;
}

struct daemon_global_config *daemon_global(struct daemon *d) {
        return &d->global;
}

const char *daemon_role(struct daemon *d) {
        return d->role;
}

struct loop *daemon_loop(struct daemon *d) {
        return d->loop;
}

struct ctl *daemon_ctl(struct daemon *d) {
        return d->ctl;
}

struct stats *daemon_stats(struct daemon *d) {
        return d->stats;
}

bool daemon_stopping(struct daemon *d) {
        return d->stopping;
}

enum daemon_args_result daemon_load_config(struct daemon *d) {
        if (d->dump_default)
                return conf_dump_default(d->conf, stdout) < 0 ? DAEMON_EXIT_FAILURE
                                                               : DAEMON_EXIT_OK;

        if (!d->config_path_given) {
                _cleanup_free_ char *def = NULL;
                if (asprintf(&def, CONFDIR "/%s.conf", d->role) < 0)
                        return log_oom(), DAEMON_EXIT_FAILURE;
                if (access(def, F_OK) == 0)
                        d->config_path = TAKE_PTR(def);
                else
                        log_notice("No configuration file '%s': running on built-in defaults "
                                   "and --set overrides.", def);
        }

        _cleanup_free_ char *error = NULL;
        int r = conf_load(d->conf, d->config_path, &error);
        if (r < 0) {
                log_error("Invalid configuration: %s", error ? error : strerror(-r));
                return DAEMON_EXIT_FAILURE;
        }
        apply_log_levels(d);
        if (d->check_config) {
                printf("%s: configuration OK\n", d->config_path ? d->config_path : "(defaults)");
                return DAEMON_EXIT_OK;
        }
        return DAEMON_CONTINUE;
}

static void stop_now(struct daemon *d) {
        loop_quit(d->loop);
}

static void drain_timeout(struct loop_timer *t, void *userdata) {
        struct daemon *d = userdata;
        log_warning("Drain deadline of %" PRIu64 " ms passed; exiting with work still in flight.",
                    d->global.shutdown_timeout_ms);
        stop_now(d);
}

void daemon_drained(struct daemon *d) {
        log_info("Drained, exiting.");
        stop_now(d);
}

static void begin_stop(struct daemon *d, const char *why) {
        if (d->stopping) {
                log_notice("Second %s: exiting now.", why);
                stop_now(d);
                return;
        }
        d->stopping = true;
        log_notice("Stopping on %s.", why);
        sd_notify(0, "STOPPING=1");
        if (!d->hooks.stop) {
                stop_now(d);
                return;
        }
        if (loop_timer_new(d->loop, drain_timeout, d, &d->drain_timer) < 0 ||
            loop_timer_arm(d->drain_timer, d->global.shutdown_timeout_ms) < 0) {
                stop_now(d);
                return;
        }
        d->hooks.stop(d, d->hooks.userdata);
}

static void on_changed(struct conf *c, char *const *changed, void *userdata) {
        struct daemon *d = userdata;
        apply_log_levels(d);
        STRV_FOREACH(k, changed)
                log_info("Configuration '%s' changed.", *k);
        if (d->hooks.config_changed)
                d->hooks.config_changed(d, changed, d->hooks.userdata);
}

static int reload(void *userdata, char **error) {
        struct daemon *d = userdata;
        _cleanup_free_ char *warnings = NULL;
        sd_notify(0, "RELOADING=1");
        int r = conf_reload(d->conf, error, &warnings);
        sd_notify(0, "READY=1");
        if (r < 0)
                return log_error_errno(r, "Reload failed, keeping the running configuration: %s",
                                       *error ? *error : strerror(-r));
        if (warnings)
                log_warning("%s", warnings);
        log_notice("Configuration reloaded.");
        if (d->hooks.reloaded)
                d->hooks.reloaded(d, d->hooks.userdata);
        return 0;
}

static void on_signal(struct loop_io *io, int fd, unsigned events, void *userdata) {
        struct daemon *d = userdata;
        struct signalfd_siginfo si;
        while (read(fd, &si, sizeof si) == sizeof si) {
                switch (si.ssi_signo) {
                case SIGTERM:
                        begin_stop(d, "SIGTERM");
                        break;
                case SIGINT:
                        begin_stop(d, "SIGINT");
                        break;
                case SIGHUP: {
                        _cleanup_free_ char *error = NULL;
                        reload(d, &error);
                        break;
                }
                case SIGUSR1:
                        d->verbosity_boost = MIN(d->verbosity_boost + 1, LOG_DEBUG - LOG_ERR);
                        apply_log_levels(d);
                        log_notice("SIGUSR1: logging one level more verbose.");
                        break;
                case SIGUSR2:
                        d->verbosity_boost = 0;
                        apply_log_levels(d);
                        log_notice("SIGUSR2: log levels back to the configuration.");
                        break;
                }
        }
}

static void on_watchdog(struct loop_timer *t, void *userdata) {
        struct daemon *d = userdata;
        sd_notify(0, "WATCHDOG=1");
        loop_timer_arm(t, d->watchdog_usec / 2000);
}

/* After a burst (a registration storm, a failover) the heap holds many freed transactions:
 * give the free pages back to the system once there is a lot of it, so that RSS follows what
 * is really in use. mallinfo2() is cheap next to malloc_trim(), which walks every arena. */
#define TRIM_INTERVAL_MS 10000
#define TRIM_THRESHOLD   (32u << 20)

static void on_trim(struct loop_timer *t, void *userdata) {
        struct mallinfo2 mi = mallinfo2();
        if (mi.fordblks > TRIM_THRESHOLD) {
                malloc_trim(0);
                log_debug("Returned free heap memory to the system (%zu MB free).",
                          mi.fordblks >> 20);
        }
        loop_timer_arm(t, TRIM_INTERVAL_MS);
}

static int setup_signals(struct daemon *d) {
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGUSR1);
        sigaddset(&mask, SIGUSR2);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return -errno;
        signal(SIGPIPE, SIG_IGN);
        d->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        if (d->signal_fd < 0)
                return -errno;
        return loop_io_add(d->loop, d->signal_fd, LOOP_READ, on_signal, d, &d->signal_io);
}

int daemon_start(struct daemon *d, enum daemon_loop_kind kind, const struct daemon_hooks *hooks) {
        int r;
        d->kind = kind;
        if (hooks)
                d->hooks = *hooks;
        if (kind == DAEMON_LOOP_SU) {
                if (su_init() < 0)
                        return log_error_errno(EIO, "Failed to initialize sofia-sip.");
                d->su_initialized = true;
                log_redirect_sofia((int)d->global.sofia_level);
                d->root = su_root_create(NULL);
                if (!d->root)
                        return log_error_errno(ENOMEM, "Failed to create the su_root loop.");
                r = loop_new_su(d->root, &d->loop);
        } else {
                d->base = event_base_new();
                if (!d->base)
                        return log_error_errno(ENOMEM, "Failed to create the event loop.");
                r = loop_new_event(d->base, &d->loop);
        }
        if (r < 0)
                return log_error_errno(r, "Failed to create the loop: %m");

        r = setup_signals(d);
        if (r < 0)
                return log_error_errno(r, "Failed to set up signal handling: %m");

        r = stats_new(&d->stats);
        if (r < 0)
                return log_oom();

        conf_set_changed_callback(d->conf, on_changed, d);

        r = ctl_create(d->loop, d->global.control_socket, d->conf, d->stats, &d->ctl);
        if (r < 0)
                return log_error_errno(r, "Invalid control socket '%s': %m",
                                       d->global.control_socket);
        ctl_set_reload(d->ctl, reload, d);

        if (d->global.prometheus_listen.len > 0) {
                r = http_serve_metrics(d->loop, (struct sockaddr *)&d->global.prometheus_listen.sa,
                                       d->global.prometheus_listen.len, d->stats, d->role,
                                       &d->metrics);
                if (r < 0)
                        return log_error_errno(r, "Failed to listen for Prometheus on '%s': %m",
                                               d->global.prometheus_listen.str);
        }

        r = loop_timer_new(d->loop, on_trim, d, &d->trim_timer);
        if (r < 0)
                return log_oom();
        loop_timer_arm(d->trim_timer, TRIM_INTERVAL_MS);

        if (sd_watchdog_enabled(0, &d->watchdog_usec) > 0 && d->watchdog_usec >= 2000) {
                r = loop_timer_new(d->loop, on_watchdog, d, &d->watchdog_timer);
                if (r < 0)
                        return log_oom();
                loop_timer_arm(d->watchdog_timer, d->watchdog_usec / 2000);
        }
        return 0;
}

int daemon_listen(struct daemon *d) {
        int r = ctl_listen(d->ctl);
        if (r == -EADDRINUSE)
                return log_error_errno(r, "Control socket '%s' is held by a running daemon.",
                                       d->global.control_socket);
        if (r < 0)
                return log_error_errno(r, "Failed to open control socket '%s': %m",
                                       d->global.control_socket);
        return 0;
}

int daemon_drop_privileges(struct daemon *d) {
        if (geteuid() != 0)
                return 0;
        if (isempty(d->global.user)) {
                log_warning("Running as root; set [global] user to run unprivileged.");
                return 0;
        }
        struct passwd *pw = getpwnam(d->global.user);
        if (!pw)
                return log_error_errno(ENOENT, "Unknown user '%s' in [global] user.",
                                       d->global.user);
        /* The control socket was created as root: hand it over so the daemon can remove it. */
        if (chown(d->global.control_socket, pw->pw_uid, pw->pw_gid) < 0)
                log_debug_errno(errno, "chown '%s': %m", d->global.control_socket);
        if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
            setuid(pw->pw_uid) < 0)
                return log_error_errno(errno, "Failed to switch to user '%s': %m", pw->pw_name);
        log_notice("Running as user '%s'.", pw->pw_name);
        return 0;
}

void daemon_ready(struct daemon *d) {
        sd_notify(0, "READY=1");
        log_notice("sipfleet-%s %s ready; control socket %s.", d->role, PACKAGE_VERSION,
                   d->global.control_socket);
}

int daemon_run(struct daemon *d) {
        loop_run(d->loop);
        return d->exit_status;
}

void daemon_free(struct daemon *d) {
        if (!d)
                return;
        loop_timer_free(d->drain_timer);
        loop_timer_free(d->watchdog_timer);
        loop_timer_free(d->trim_timer);
        http_server_free(d->metrics);
        ctl_free(d->ctl);
        loop_io_free(d->signal_io);
        closep(&d->signal_fd);
        loop_free(d->loop);
        if (d->root)
                su_root_destroy(d->root);
        if (d->base)
                event_base_free(d->base);
        if (d->su_initialized)
                su_deinit();
        stats_free(d->stats);
        conf_free(d->conf);
        free(d->global_rows);
        free(d->default_socket);
        free(d->config_path);
        free(d->ident);
        free(d->role);
        free(d);
}
