/* SPDX-License-Identifier: MIT */
#include <event2/event.h>
#include <sofia-sip/su.h>
#include <sofia-sip/su_wait.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sysexits.h>

#include "config.h"
#include "conf.h"
#include "ctl.h"
#include "log.h"
#include "loop.h"
#include "macro.h"
#include "stats.h"
#include "testlib.h"

/* The daemon side (loop, ctl, conf, stats) runs in the test's thread; clients run in a second
 * thread (or a child process for sipfleet-cli) while the loop turns. */

struct test_config {
        int64_t max_things;
        char *name;
        char *password;
};

static const struct conf_section test_sections[] = {
        {.name = "global", .doc = "global things"},
};

static const struct conf_option test_rows[] = {
        {.section = "global", .key = "max-things", .type = CONF_INT,
         .offset = offsetof(struct test_config, max_things), .def = "10", .min = 1, .max = 100,
         .flags = CONF_RELOADABLE, .doc = "how many things"},
        {.section = "global", .key = "name", .type = CONF_STRING,
         .offset = offsetof(struct test_config, name), .def = "fleet", .doc = "a name"},
        {.section = "global", .key = "password", .type = CONF_STRING,
         .offset = offsetof(struct test_config, password), .def = "hunter2",
         .flags = CONF_SECRET | CONF_RELOADABLE, .doc = "a secret"},
};

static struct {
        struct event_base *base; /* libevent backend */
        su_root_t *root;         /* or su_root backend */
        struct loop *loop;
        struct conf *conf;
        struct stats *stats;
        struct ctl *ctl;
        char *path;
        struct test_config cfg;
        struct stats_counter *requests;

        /* LATER: an async command answered by a timer */
        struct ctl_request *later;
        char *later_arg;
        struct loop_timer *later_timer;
        unsigned later_fired;
        int later_dispatched; /* read by client threads */

        int reload_result;
        unsigned reloads;
} F;

/* ---- test commands ---- */

static void later_fire(struct loop_timer *t, void *userdata) {
        struct ctl_request *req = TAKE_PTR(F.later);

        F.later_fired++;
        ctl_reply(req, json_pack("{ss}", "later", F.later_arg));
        free(TAKE_PTR(F.later_arg));
}

#define LATER_USAGE "LATER <arg> [ms]: answers later"

/* LATER <arg> [delay-ms]: replies {"later": arg} after the delay (50 ms). */
static int cmd_later(struct ctl_request *req, int argc, char **argv, void *userdata) {
        uint64_t ms = argc > 2 ? strtoull(argv[2], NULL, 10) : 50;

        if (argc < 2)
                return -EINVAL;
        ck_assert_ptr_null(F.later);
        F.later = req;
        F.later_arg = strdup(argv[1]);
        __atomic_store_n(&F.later_dispatched, 1, __ATOMIC_SEQ_CST);
        ck_assert_int_eq(loop_timer_arm(F.later_timer, ms), 0);
        return 0;
}

static int cmd_echo(struct ctl_request *req, int argc, char **argv, void *userdata) {
        json_t *args = json_array();

        for (int i = 1; i < argc; i++)
                json_array_append_new(args, json_string(argv[i]));
        ctl_reply(req, json_pack("{so}", "args", args));
        return 0;
}

static int cmd_fail(struct ctl_request *req, int argc, char **argv, void *userdata) {
        return -EIO;
}

static int reload_hook(void *userdata, char **error) {
        F.reloads++;
        if (F.reload_result < 0)
                *error = strdup("broken.conf:3: bad things");
        return F.reload_result;
}

/* ---- fixture ---- */

static void setup_common(void) {
        _cleanup_free_ char *error = NULL;

        ck_assert_int_eq(conf_new("test", &F.conf), 0);
        ck_assert_int_eq(conf_add_sections(F.conf, test_sections, ELEMENTSOF(test_sections)), 0);
        ck_assert_int_eq(conf_add_table(F.conf, test_rows, ELEMENTSOF(test_rows), &F.cfg), 0);
        ck_assert_msg(conf_load(F.conf, NULL, &error) == 0, "conf_load: %s", strna(error));

        ck_assert_int_eq(stats_new(&F.stats), 0);
        F.requests = stats_declare(F.stats, "global", "requests", "requests handled");
        stats_add(F.requests, 3);

        F.path = tl_path("run/sipfleet/test.sock");
        ck_assert_int_eq(ctl_new(F.loop, F.path, F.conf, F.stats, &F.ctl), 0);
        ck_assert_int_eq(ctl_register(F.ctl, "LATER", LATER_USAGE, cmd_later, NULL), 0);
        ck_assert_int_eq(ctl_register(F.ctl, "ECHO", "ECHO [args...]: the arguments", cmd_echo,
                                      NULL), 0);
        ck_assert_int_eq(ctl_register(F.ctl, "FAIL", "FAIL: fails", cmd_fail, NULL), 0);
        ck_assert_int_eq(loop_timer_new(F.loop, later_fire, NULL, &F.later_timer), 0);
}

static void setup_event(void) {
        memset(&F, 0, sizeof F);
        F.base = event_base_new();
        ck_assert_ptr_nonnull(F.base);
        ck_assert_int_eq(loop_new_event(F.base, &F.loop), 0);
        setup_common();
}

static void setup_su(void) {
        memset(&F, 0, sizeof F);
        ck_assert_int_eq(su_init(), 0);
        F.root = su_root_create(NULL);
        ck_assert_ptr_nonnull(F.root);
        ck_assert_int_eq(loop_new_su(F.root, &F.loop), 0);
        setup_common();
}

static void teardown(void) {
        ctl_free(F.ctl);
        if (F.later) /* never answered: the reply to a gone client is dropped */
                ctl_reply(TAKE_PTR(F.later), json_object());
        free(F.later_arg);
        loop_timer_free(F.later_timer);
        conf_free(F.conf);
        stats_free(F.stats);
        loop_free(F.loop);
        if (F.base)
                event_base_free(F.base);
        if (F.root) {
                su_root_destroy(F.root);
                su_deinit();
        }
        free(F.path);
}

/* ---- driving the loop ---- */

struct job {
        void (*fn)(void *arg);
        void *arg;
        int done_fd;
};

static void *job_main(void *userdata) {
        struct job *j = userdata;

        j->fn(j->arg);
        close(j->done_fd); /* wakes the loop */
        return NULL;
}

static void quit_io(struct loop_io *io, int fd, unsigned events, void *userdata) {
        loop_quit(F.loop);
}

static void guard_timer(struct loop_timer *t, void *userdata) {
        ck_abort_msg("test client did not finish in time");
}

/* Runs the loop while fn(arg) runs in a thread. */
static void run_with_client(void (*fn)(void *arg), void *arg) {
        struct loop_io *io;
        struct loop_timer *guard;
        pthread_t thread;
        struct job j = {fn, arg, -1};
        int p[2];

        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        j.done_fd = p[1];
        ck_assert_int_eq(loop_io_add(F.loop, p[0], LOOP_READ, quit_io, NULL, &io), 0);
        ck_assert_int_eq(loop_timer_new(F.loop, guard_timer, NULL, &guard), 0);
        ck_assert_int_eq(loop_timer_arm(guard, 20000), 0);
        ck_assert_int_eq(pthread_create(&thread, NULL, job_main, &j), 0);
        ck_assert_int_eq(loop_run(F.loop), 0);
        ck_assert_int_eq(pthread_join(thread, NULL), 0);
        loop_timer_free(guard);
        loop_io_free(io);
        close(p[0]);
}

static void quit_timer(struct loop_timer *t, void *userdata) {
        loop_quit(F.loop);
}

static void run_for(uint64_t ms) {
        struct loop_timer *t;

        ck_assert_int_eq(loop_timer_new(F.loop, quit_timer, NULL, &t), 0);
        ck_assert_int_eq(loop_timer_arm(t, ms), 0);
        ck_assert_int_eq(loop_run(F.loop), 0);
        loop_timer_free(t);
}

/* ---- clients ---- */

struct call {
        const char *path;
        const char *line;
        int timeout_ms;
        int r;
        char *reply;
};

static void call_run(void *arg) {
        struct call *c = arg;

        c->r = ctl_client_call(c->path, c->line, c->timeout_ms, &c->reply);
}

/* One command over ctl_client_call(); the reply line. */
static char *call(const char *line) {
        struct call c = {.path = F.path, .line = line, .timeout_ms = 5000};

        run_with_client(call_run, &c);
        ck_assert_msg(c.r == 0, "ctl_client_call('%s'): %s", line, strerror(-c.r));
        ck_assert_ptr_nonnull(c.reply);
        return c.reply;
}

struct raw {
        const char *data;
        size_t len;
        bool shut_wr;      /* shutdown(SHUT_WR) after sending */
        bool close_early;  /* close right after sending (after LATER was dispatched) */
        unsigned lines;    /* stop after this many reply lines (0: read until EOF) */
        int read_ms;       /* give up reading after this (default 5 s) */
        char *out;
        size_t out_len;
        bool eof;
};

static void raw_run(void *arg) {
        struct raw *w = arg;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        unsigned lines = 0;
        FILE *m;
        int fd;

        m = open_memstream(&w->out, &w->out_len);
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", F.path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
                goto done;
        for (size_t sent = 0; sent < w->len;) {
                ssize_t n = send(fd, w->data + sent, w->len - sent, MSG_NOSIGNAL);

                if (n <= 0)
                        break;
                sent += n;
        }
        if (w->close_early) {
                for (int i = 0; i < 500; i++) {
                        if (__atomic_load_n(&F.later_dispatched, __ATOMIC_SEQ_CST))
                                break;
                        (void)poll(NULL, 0, 10);
                }
                goto done;
        }
        if (w->shut_wr)
                shutdown(fd, SHUT_WR);
        while (w->lines == 0 || lines < w->lines) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                char buf[4096];
                ssize_t n;

                if (poll(&p, 1, w->read_ms ? w->read_ms : 5000) <= 0)
                        break;
                n = recv(fd, buf, sizeof buf, 0);
                if (n <= 0) {
                        w->eof = n == 0 || errno == ECONNRESET;
                        break;
                }
                fwrite(buf, 1, n, m);
                for (ssize_t i = 0; i < n; i++)
                        lines += buf[i] == '\n';
        }
done:
        if (fd >= 0)
                close(fd);
        fclose(m);
}

static char *raw(const char *data, size_t len, bool *eof) {
        struct raw w = {.data = data, .len = len, .shut_wr = true};

        run_with_client(raw_run, &w);
        if (eof)
                *eof = w.eof;
        return w.out;
}

/* ---- assertions ---- */

static json_t *parse(const char *text) {
        json_error_t e;
        json_t *j = json_loads(text, 0, &e);

        ck_assert_msg(j, "invalid JSON reply '%s': %s", text, e.text);
        ck_assert_msg(json_is_object(j), "reply is not an object: '%s'", text);
        return j;
}

static void jsonp(json_t **j) {
        json_decref(*j);
}
#define _cleanup_json_ _cleanup_(jsonp)

/* The reply is {"error": "..."} containing each of the given substrings. */
#define assert_error(reply, ...)                                                                   \
        do {                                                                                       \
                _cleanup_json_ json_t *_j = parse(reply);                                         \
                const char *_subs[] = {__VA_ARGS__};                                               \
                const char *_msg = json_string_value(json_object_get(_j, "error"));                \
                ck_assert_msg(_msg, "not an error reply: '%s'", reply);                            \
                ck_assert_int_eq(json_object_size(_j), 1);                                         \
                for (size_t _i = 0; _i < ELEMENTSOF(_subs); _i++)                                  \
                        ck_assert_msg(strstr(_msg, _subs[_i]), "'%s' lacks '%s'", _msg,            \
                                      _subs[_i]);                                                  \
        } while (0)

static void assert_call_eq(const char *line, const char *expected) {
        _cleanup_free_ char *reply = call(line);

        ck_assert_str_eq(reply, expected);
}

static void assert_call_error(const char *line, const char *sub) {
        _cleanup_free_ char *reply = call(line);

        assert_error(reply, sub);
}

/* ---- tests ---- */

START_TEST(test_ctl_help) {
        _cleanup_free_ char *reply = call("HELP");
        _cleanup_json_ json_t *j = parse(reply);
        json_t *commands = json_object_get(j, "commands");
        const char *names[] = {"HELP",   "GET",   "LIST", "SET",  "STATS",
                               "LOG_LEVEL", "RELOAD", "LATER", "ECHO"};

        ck_assert(json_is_object(commands));
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                ck_assert_msg(json_is_string(json_object_get(commands, names[i])), "no %s in %s",
                              names[i], reply);
        ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(commands, "GET")),
                                     "GET <section/key>"));
        ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(commands, "LIST")),
                                     "\"counters\""));
        ck_assert_str_eq(json_string_value(json_object_get(commands, "LATER")), LATER_USAGE);

        /* Commands are case-insensitive. */
        free(reply);
        reply = call("help");
        ck_assert_ptr_nonnull(strstr(reply, "\"commands\":{"));
}
END_TEST

START_TEST(test_ctl_get) {
        _cleanup_free_ char *hint = NULL, *far = NULL;

        assert_call_eq("GET global/max-things", "{\"global/max-things\":\"10\"}");
        assert_call_eq("GET global/name", "{\"global/name\":\"fleet\"}");
        assert_call_eq("GET global/password", "{\"global/password\":\"(secret)\"}");
        /* Counters are integers. */
        assert_call_eq("GET global/requests", "{\"global/requests\":3}");
        stats_inc(F.requests);
        assert_call_eq("get global/requests", "{\"global/requests\":4}");

        hint = call("GET global/max-thing");
        assert_error(hint, "unknown key 'global/max-thing'", "did you mean", "max-things");
        far = call("GET zzzzzz/qqqqqqqq");
        assert_error(far, "unknown key 'zzzzzz/qqqqqqqq'");
        assert_call_error("GET nosection", "expected <section/key>");
        assert_call_error("GET", "usage: GET <section/key>");
        assert_call_error("GET a/b c/d", "usage");
}
END_TEST

START_TEST(test_ctl_list) {
        _cleanup_free_ char *one = call("LIST global"), *all = call("LIST all"),
                            *none = call("LIST");
        _cleanup_json_ json_t *j = parse(one), *ja = parse(all), *jn = parse(none);
        json_t *options = json_object_get(j, "options"), *counters = json_object_get(j, "counters");
        json_t *opt = json_object_get(options, "global/max-things");

        ck_assert_msg(json_is_object(opt), "%s", one);
        ck_assert_str_eq(json_string_value(json_object_get(opt, "value")), "10");
        ck_assert(json_is_object(json_object_get(options, "global/password")));
        ck_assert_ptr_null(strstr(one, "hunter2"));
        ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(counters, "global"),
                                                            "requests")), 3);

        ck_assert(json_is_object(json_object_get(json_object_get(ja, "options"), "global/name")));
        ck_assert(json_is_object(json_object_get(json_object_get(ja, "counters"), "global")));
        ck_assert(json_equal(ja, jn));

        assert_call_error("LIST nosuchsection", "unknown section 'nosuchsection'");
        assert_call_error("LIST a b", "usage");
}
END_TEST

START_TEST(test_ctl_set) {
        _cleanup_free_ char *secret = NULL;

        assert_call_eq("SET global/max-things 42", "{\"global/max-things\":\"42\"}");
        ck_assert_int_eq(F.cfg.max_things, 42);
        assert_call_eq("GET global/max-things", "{\"global/max-things\":\"42\"}");

        /* Not reloadable, bad values, unknown keys: errors, nothing changes. */
        assert_call_error("SET global/name other", "");
        ck_assert_str_eq(F.cfg.name, "fleet");
        assert_call_error("SET global/max-things abc", "");
        assert_call_error("SET global/max-things 1000", "");
        ck_assert_int_eq(F.cfg.max_things, 42);
        assert_call_error("SET global/nothing 1", "");
        assert_call_error("SET global/max-things", "usage: SET <section/key> <value>");

        /* A quoted value keeps its spaces; a secret stays hidden in the reply. */
        secret = call("SET global/password \"a  b\"");
        ck_assert_ptr_null(strstr(secret, "a  b"));
        ck_assert_str_eq(F.cfg.password, "a  b");
        assert_call_eq("SET global/password x y", "{\"global/password\":\"(secret)\"}");
        ck_assert_str_eq(F.cfg.password, "x y");
}
END_TEST

START_TEST(test_ctl_stats) {
        assert_call_eq("STATS", "{\"global\":{\"requests\":3}}");
        assert_call_eq("STATS global", "{\"global\":{\"requests\":3}}");
        stats_add(F.requests, 2);
        assert_call_eq("STATS all", "{\"global\":{\"requests\":5}}");
}
END_TEST

static uint64_t gauge_five(void *userdata) {
        return 5;
}

START_TEST(test_ctl_stats_sections) {
        ck_assert_int_eq(stats_declare_gauge(F.stats, "module::Registrar", "bindings", NULL,
                                             gauge_five, NULL), 0);
        assert_call_eq("STATS",
                       "{\"global\":{\"requests\":3},\"module::Registrar\":{\"bindings\":5}}");
        assert_call_eq("STATS module::Registrar", "{\"module::Registrar\":{\"bindings\":5}}");
        assert_call_eq("GET module::Registrar/bindings", "{\"module::Registrar/bindings\":5}");
        assert_call_error("STATS nothing", "no counters in section 'nothing'");
        assert_call_error("STATS a b", "usage");
}
END_TEST

START_TEST(test_ctl_log_level) {
        _cleanup_free_ char *levels = call("LOG_LEVEL"), *bad = NULL, *badlevel = NULL;
        _cleanup_json_ json_t *j = parse(levels);

        ck_assert_int_eq(json_object_size(j), _LOG_SUBSYSTEM_MAX);
        for (int s = 0; s < _LOG_SUBSYSTEM_MAX; s++)
                ck_assert_str_eq(json_string_value(json_object_get(j, log_subsystem_name(s))),
                                 log_level_name(log_levels[s]));

        assert_call_eq("LOG_LEVEL sip debug", "{\"sip\":\"debug\"}");
        ck_assert_int_eq(log_levels[LOG_sip], LOG_DEBUG);
        assert_call_eq("LOG_LEVEL sip", "{\"sip\":\"debug\"}");

        free(levels);
        levels = call("LOG_LEVEL all warning");
        json_decref(j);
        j = parse(levels);
        ck_assert_int_eq(json_object_size(j), _LOG_SUBSYSTEM_MAX);
        for (int s = 0; s < _LOG_SUBSYSTEM_MAX; s++) {
                ck_assert_int_eq(log_levels[s], LOG_WARNING);
                ck_assert_str_eq(json_string_value(json_object_get(j, log_subsystem_name(s))),
                                 "warning");
        }

        bad = call("LOG_LEVEL nosuch info");
        assert_error(bad, "unknown subsystem 'nosuch'", "valid: all, main, config");
        badlevel = call("LOG_LEVEL sip loud");
        assert_error(badlevel, "unknown level 'loud'", "error, warning, notice, info, debug");
        ck_assert_int_eq(log_levels[LOG_sip], LOG_WARNING);
        assert_call_error("LOG_LEVEL a b c", "usage");
}
END_TEST

START_TEST(test_ctl_reload) {
        assert_call_error("RELOAD", "not supported");

        ctl_set_reload(F.ctl, reload_hook, NULL);
        assert_call_eq("RELOAD", "{\"reloaded\":true}");
        ck_assert_uint_eq(F.reloads, 1);

        F.reload_result = -EINVAL;
        assert_call_eq("RELOAD", "{\"error\":\"reload failed: broken.conf:3: bad things\"}");
        ck_assert_uint_eq(F.reloads, 2);
}
END_TEST

START_TEST(test_ctl_unknown_command) {
        assert_call_eq("FOO bar", "{\"error\":\"unknown command 'FOO', try HELP\"}");
        /* A handler failing without a reply: its error. */
        assert_call_eq("FAIL", "{\"error\":\"Input/output error\"}");
        assert_call_eq("ECHO \"unterminated", "{\"error\":\"unterminated quote in command\"}");
}
END_TEST

START_TEST(test_ctl_quoting) {
        assert_call_eq("ECHO \"a b\" c \"d\\\"e\" \"\" f\"g h\"i \\x",
                       "{\"args\":[\"a b\",\"c\",\"d\\\"e\",\"\",\"fg hi\",\"\\\\x\"]}");
        assert_call_eq("  ECHO\ta  \t b ", "{\"args\":[\"a\",\"b\"]}");
}
END_TEST

START_TEST(test_ctl_overlong_line) {
        _cleanup_free_ char *big = malloc(CTL_MAX_LINE + 1000), *out = NULL, *ok = NULL;
        bool eof = false;

        /* Exactly CTL_MAX_LINE characters (plus CR LF) is fine. */
        memset(big, 'x', CTL_MAX_LINE);
        memcpy(big, "ECHO ", 5);
        big[CTL_MAX_LINE] = 0;
        ok = call(big);
        ck_assert_ptr_nonnull(strstr(ok, "{\"args\":[\"xxx"));

        /* One more: error, then closed, the next command is never run. */
        memset(big, 'x', CTL_MAX_LINE + 1);
        memcpy(big + CTL_MAX_LINE + 1, "\nECHO after\n", 13);
        out = raw(big, strlen(big), &eof);
        ck_assert_str_eq(out, "{\"error\":\"command too long\"}\n");
        ck_assert(eof);

        /* No line feed at all. */
        free(out);
        memset(big, 'y', CTL_MAX_LINE + 500);
        out = raw(big, CTL_MAX_LINE + 500, &eof);
        ck_assert_str_eq(out, "{\"error\":\"command too long\"}\n");
        ck_assert(eof);
}
END_TEST

START_TEST(test_ctl_nul_byte) {
        static const char data[] = "ECHO a\0b\nECHO c\n";
        _cleanup_free_ char *out = NULL;
        bool eof;

        out = raw(data, sizeof data - 1, &eof);
        ck_assert_str_eq(out, "{\"error\":\"command contains a NUL byte\"}\n"
                              "{\"args\":[\"c\"]}\n");
        ck_assert(eof);
}
END_TEST

START_TEST(test_ctl_invalid_utf8) {
        static const char data[] = "ECHO \xff\xfe\n"
                                   "ECHO \xc0\xaf\n"          /* overlong '/' */
                                   "ECHO \xed\xa0\x80\n"      /* surrogate */
                                   "ECHO \xe2\x82\n"          /* truncated */
                                   "\xff\n"                   /* as the command word */
                                   "ECHO h\xc3\xa9llo \xe2\x82\xac\n";
        _cleanup_free_ char *out = NULL;
        bool eof;

        out = raw(data, sizeof data - 1, &eof);
        ck_assert_str_eq(out, "{\"error\":\"command is not valid UTF-8\"}\n"
                              "{\"error\":\"command is not valid UTF-8\"}\n"
                              "{\"error\":\"command is not valid UTF-8\"}\n"
                              "{\"error\":\"command is not valid UTF-8\"}\n"
                              "{\"error\":\"command is not valid UTF-8\"}\n"
                              "{\"args\":[\"h\xc3\xa9llo\",\"\xe2\x82\xac\"]}\n");
        ck_assert(eof);
}
END_TEST

START_TEST(test_ctl_empty_lines) {
        static const char data[] = "\n\r\n   \n\t\r\nECHO x\n\n";
        _cleanup_free_ char *out = NULL;
        bool eof;

        out = raw(data, sizeof data - 1, &eof);
        ck_assert_str_eq(out, "{\"args\":[\"x\"]}\n");
        ck_assert(eof);
}
END_TEST

START_TEST(test_ctl_pipelined) {
        static const char data[] = "GET global/requests\r\nECHO a\nFOO\nECHO last";
        _cleanup_free_ char *out = NULL;
        bool eof;

        /* Several commands in one write, CR LF or LF, and a last line without a line feed before
         * the end of input: answered in order, then the connection is closed. */
        out = raw(data, sizeof data - 1, &eof);
        ck_assert_str_eq(out, "{\"global/requests\":3}\n"
                              "{\"args\":[\"a\"]}\n"
                              "{\"error\":\"unknown command 'FOO', try HELP\"}\n"
                              "{\"args\":[\"last\"]}\n");
        ck_assert(eof);
}
END_TEST

START_TEST(test_ctl_async_reply) {
        _cleanup_free_ char *out = NULL;
        bool eof;

        assert_call_eq("LATER one", "{\"later\":\"one\"}");
        ck_assert_uint_eq(F.later_fired, 1);

        /* The sync ECHO waits for the async LATER before it: replies in order. */
        out = raw("LATER two\nECHO three\nLATER four 10\n", 33, &eof);
        ck_assert_str_eq(out, "{\"later\":\"two\"}\n"
                              "{\"args\":[\"three\"]}\n"
                              "{\"later\":\"four\"}\n");
        ck_assert(eof);
        ck_assert_uint_eq(F.later_fired, 3);
}
END_TEST

START_TEST(test_ctl_async_client_gone) {
        struct raw w = {.data = "LATER gone 500\nECHO never\n", .len = 26, .close_early = true};

        /* The client leaves before the reply: it is dropped, nothing leaks, nothing breaks. */
        run_with_client(raw_run, &w);
        free(w.out);
        ck_assert_ptr_nonnull(F.later);
        ck_assert_uint_eq(F.later_fired, 0);
        run_for(700);
        ck_assert_uint_eq(F.later_fired, 1);
        ck_assert_ptr_null(F.later);

        assert_call_eq("ECHO still", "{\"args\":[\"still\"]}");
}
END_TEST

START_TEST(test_ctl_free_with_pending) {
        struct raw w = {.data = "LATER forever 100000\n", .len = 21, .lines = 1, .read_ms = 200};

        /* No reply within 200 ms; then the ctl goes away with the request pending. The late
         * reply (teardown) is dropped. */
        run_with_client(raw_run, &w);
        ck_assert_str_eq(w.out, "");
        free(w.out);
        ck_assert_ptr_nonnull(F.later);
        ctl_free(TAKE_PTR(F.ctl));
        ck_assert_int_ne(access(F.path, F_OK), 0);
}
END_TEST

struct crowd {
        int fds[CTL_MAX_CLIENTS];
        char *last;
        bool eof;
};

/* CTL_MAX_CLIENTS connections that stay, then one more. */
static void crowd_run(void *arg) {
        struct crowd *c = arg;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct raw w = {.lines = 1};

        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", F.path);
        for (int i = 0; i < CTL_MAX_CLIENTS; i++) {
                c->fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (connect(c->fds[i], (struct sockaddr *)&sa, sizeof sa) < 0)
                        return;
        }
        raw_run(&w);
        c->last = w.out;
        c->eof = w.eof;
        for (int i = 0; i < CTL_MAX_CLIENTS; i++)
                close(c->fds[i]);
}

START_TEST(test_ctl_max_clients) {
        struct crowd c = {0};

        run_with_client(crowd_run, &c);
        ck_assert_ptr_nonnull(c.last);
        ck_assert_str_eq(c.last, "{\"error\":\"too many clients\"}\n");
        free(c.last);

        /* Room again once they left. */
        run_for(100);
        assert_call_eq("ECHO back", "{\"args\":[\"back\"]}");
}
END_TEST

START_TEST(test_ctl_socket_file) {
        _cleanup_free_ char *dir = tl_path("run/sipfleet");
        struct stat st;

        ck_assert_int_eq(stat(F.path, &st), 0);
        ck_assert(S_ISSOCK(st.st_mode));
        ck_assert_int_eq(st.st_mode & 07777, 0660);
        ck_assert_int_eq(stat(dir, &st), 0);
        ck_assert(S_ISDIR(st.st_mode));
        ck_assert_int_eq(st.st_mode & 07777, 0755);

        ctl_free(TAKE_PTR(F.ctl));
        ck_assert_int_ne(access(F.path, F_OK), 0);
}
END_TEST

START_TEST(test_ctl_socket_in_use) {
        struct ctl *other = NULL;

        /* A live daemon holds it: refused, and its socket stays. */
        ck_assert_int_eq(ctl_new(F.loop, F.path, F.conf, F.stats, &other), -EADDRINUSE);
        ck_assert_ptr_null(other);
        ck_assert_int_eq(access(F.path, F_OK), 0);
        assert_call_eq("ECHO alive", "{\"args\":[\"alive\"]}");
}
END_TEST

START_TEST(test_ctl_socket_stale) {
        _cleanup_free_ char *stale = tl_path("stale.sock"), *file = tl_path("file.sock"),
                            *reply = NULL;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct ctl *other = NULL;
        struct call c = {.path = stale, .line = "ECHO", .timeout_ms = 1000};
        char toolong[sizeof sa.sun_path + 1];
        int fd;

        /* A socket file nobody listens on (a crashed daemon): replaced. */
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", stale);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        ck_assert_int_eq(listen(fd, 1), 0);
        close(fd);
        ck_assert_int_eq(ctl_client_call(stale, "HELP", 1000, &reply), -ECONNREFUSED);

        ck_assert_int_eq(ctl_new(F.loop, stale, NULL, NULL, &other), 0);
        ck_assert_int_eq(ctl_register(other, "ECHO", NULL, cmd_echo, NULL), 0);
        run_with_client(call_run, &c);
        ck_assert_int_eq(c.r, 0);
        ck_assert_str_eq(c.reply, "{\"args\":[]}");
        free(c.reply);
        /* Without conf and stats: empty answers, no crash. */
        c.line = "STATS";
        run_with_client(call_run, &c);
        ck_assert_str_eq(c.reply, "{}");
        free(c.reply);
        c.line = "GET a/b";
        run_with_client(call_run, &c);
        ck_assert_str_eq(c.reply, "{\"error\":\"unknown key 'a/b', try LIST\"}");
        free(c.reply);
        ctl_free(other);

        /* Not a socket: left alone. */
        free(tl_write_file("file.sock", "data\n"));
        ck_assert_int_eq(ctl_new(F.loop, file, NULL, NULL, &other), -EEXIST);
        ck_assert_int_eq(access(file, F_OK), 0);

        /* Longer than sun_path. */
        memset(toolong, 'x', sizeof toolong - 1);
        toolong[0] = '/';
        toolong[sizeof toolong - 1] = 0;
        ck_assert_int_eq(ctl_new(F.loop, toolong, NULL, NULL, &other), -ENAMETOOLONG);
}
END_TEST

START_TEST(test_ctl_register) {
        ck_assert_int_eq(ctl_register(F.ctl, "ECHO", NULL, cmd_echo, NULL), -EEXIST);
        ck_assert_int_eq(ctl_register(F.ctl, "help", NULL, cmd_echo, NULL), -EEXIST);
        ck_assert_int_eq(ctl_register(F.ctl, "TWO WORDS", NULL, cmd_echo, NULL), -EINVAL);
        ck_assert_int_eq(ctl_register(F.ctl, "", NULL, cmd_echo, NULL), -EINVAL);
        ck_assert_int_eq(ctl_register(F.ctl, "ECHO2", NULL, cmd_echo, NULL), 0);
        assert_call_eq("echo2 z", "{\"args\":[\"z\"]}");
}
END_TEST

START_TEST(test_ctl_client_errors) {
        _cleanup_free_ char *missing = tl_path("missing.sock");
        struct call c = {.path = F.path, .line = "LATER slow 3000", .timeout_ms = 200};
        char *reply = NULL;

        ck_assert_int_eq(ctl_client_call(missing, "HELP", 1000, &reply), -ENOENT);
        ck_assert_int_eq(ctl_client_call(F.path, "HELP\nHELP", 1000, &reply), -EINVAL);
        ck_assert_ptr_null(reply);

        run_with_client(call_run, &c);
        ck_assert_int_eq(c.r, -ETIMEDOUT);
        ck_assert_ptr_null(c.reply);
}
END_TEST

/* ---- sipfleet-cli ---- */

struct cli {
        struct tl_proc proc;
        int status;
        char *out;
};

static void cli_poll(struct loop_timer *t, void *userdata) {
        struct cli *c = userdata;
        int r = tl_wait(&c->proc, 0);

        if (r == -ETIMEDOUT) {
                ck_assert_int_eq(loop_timer_arm(t, 10), 0);
                return;
        }
        c->status = r;
        loop_quit(F.loop);
}

/* Runs sipfleet-cli with args while the loop serves; returns its exit status. */
static int cli(char **out, ...) {
        _cleanup_free_ char *bin = tl_build_path("common/sipfleet-cli");
        static unsigned n;
        char name[32], *argv[16] = {bin};
        struct cli c = {0};
        struct loop_timer *t, *guard;
        size_t argc = 1;
        va_list ap;

        va_start(ap, out);
        for (char *a; argc < ELEMENTSOF(argv) - 1 && (a = va_arg(ap, char *));)
                argv[argc++] = a;
        va_end(ap);
        argv[argc] = NULL;

        snprintf(name, sizeof name, "cli-%u", n++);
        ck_assert_int_eq(tl_spawn(name, argv, &c.proc), 0);
        ck_assert_int_eq(loop_timer_new(F.loop, cli_poll, &c, &t), 0);
        ck_assert_int_eq(loop_timer_new(F.loop, guard_timer, NULL, &guard), 0);
        ck_assert_int_eq(loop_timer_arm(t, 1), 0);
        ck_assert_int_eq(loop_timer_arm(guard, 20000), 0);
        ck_assert_int_eq(loop_run(F.loop), 0);
        loop_timer_free(t);
        loop_timer_free(guard);

        *out = tl_log(&c.proc);
        free(c.proc.log);
        ck_assert_msg(WIFEXITED(c.status), "sipfleet-cli did not exit: %d", c.status);
        return WEXITSTATUS(c.status);
}

START_TEST(test_ctl_cli_exit_codes) {
        _cleanup_free_ char *missing = tl_path("missing.sock");
        char *out;

        ck_assert_int_eq(cli(&out, "--socket", missing, "HELP", NULL), EX_UNAVAILABLE);
        ck_assert_ptr_nonnull(strstr(out, "no daemon listening"));
        free(out);
        ck_assert_int_eq(cli(&out, "--role", "nosuchrole-xyz", "HELP", NULL), EX_UNAVAILABLE);
        ck_assert_ptr_nonnull(strstr(out, RUNSTATEDIR "/sipfleet/nosuchrole-xyz.sock"));
        free(out);
        ck_assert_int_eq(cli(&out, NULL), EX_USAGE);
        free(out);
        ck_assert_int_eq(cli(&out, "--socket", F.path, NULL), EX_USAGE);
        free(out);
        ck_assert_int_eq(cli(&out, "--bogus", "HELP", NULL), EX_USAGE);
        free(out);
        ck_assert_int_eq(cli(&out, "--timeout", "soon", "HELP", NULL), EX_USAGE);
        free(out);
        ck_assert_int_eq(cli(&out, "--role", "../etc", "HELP", NULL), EX_USAGE);
        free(out);
        ck_assert_int_eq(cli(&out, "--version", NULL), 0);
        ck_assert_str_eq(out, "sipfleet-cli " PACKAGE_VERSION "\n");
        free(out);
        ck_assert_int_eq(cli(&out, "--help", NULL), 0);
        ck_assert_ptr_nonnull(strstr(out, "Usage: sipfleet-cli"));
        free(out);
}
END_TEST

START_TEST(test_ctl_cli_commands) {
        char *out;

        /* Pretty-printed reply. */
        ck_assert_int_eq(cli(&out, "--socket", F.path, "GET", "global/requests", NULL), 0);
        ck_assert_str_eq(out, "{\n  \"global/requests\": 3\n}\n");
        free(out);

        /* Arguments with spaces and quotes arrive intact; options after the command are its
         * arguments. */
        ck_assert_int_eq(cli(&out, "-s", F.path, "ECHO", "a b", "c\"d", "", "-x", NULL), 0);
        ck_assert_str_eq(out, "{\n  \"args\": [\n    \"a b\",\n    \"c\\\"d\",\n"
                              "    \"\",\n    \"-x\"\n  ]\n}\n");
        free(out);

        ck_assert_int_eq(cli(&out, "--raw", "--socket", F.path, "STATS", NULL), 0);
        ck_assert_str_eq(out, "{\"global\":{\"requests\":3}}\n");
        free(out);

        ck_assert_int_eq(cli(&out, "--socket", F.path, "SET", "global/max-things", "77", NULL), 0);
        ck_assert_int_eq(F.cfg.max_things, 77);
        free(out);

        /* Error reply: status 1, the message on stderr. */
        ck_assert_int_eq(cli(&out, "--socket", F.path, "FOO", NULL), 1);
        ck_assert_str_eq(out, "sipfleet-cli: unknown command 'FOO', try HELP\n");
        free(out);

        /* Timeout. */
        ck_assert_int_eq(cli(&out, "--timeout", "100", "--socket", F.path, "LATER", "x", "2000",
                             NULL), EX_TEMPFAIL);
        free(out);
}
END_TEST

static void add_tcase(Suite *s, const char *name, void (*setup)(void), const TTest *const *tests,
                      size_t n) {
        TCase *tc = tcase_create(name);

        tcase_set_timeout(tc, 60);
        tcase_add_checked_fixture(tc, setup, teardown);
        for (size_t i = 0; i < n; i++)
                tcase_add_test(tc, tests[i]);
        suite_add_tcase(s, tc);
}

/* Every feature on both loop backends: libevent and sofia-sip's su_root. */
static Suite *ctl_suite(void) {
        Suite *s = suite_create("ctl");
        const TTest *commands_tests[] = {
                test_ctl_help, test_ctl_get, test_ctl_list, test_ctl_set, test_ctl_stats,
                test_ctl_stats_sections, test_ctl_log_level, test_ctl_reload,
                test_ctl_unknown_command, test_ctl_register,
        };
        const TTest *protocol_tests[] = {
                test_ctl_quoting, test_ctl_overlong_line, test_ctl_nul_byte, test_ctl_invalid_utf8,
                test_ctl_empty_lines, test_ctl_pipelined, test_ctl_async_reply,
                test_ctl_async_client_gone, test_ctl_free_with_pending, test_ctl_max_clients,
                test_ctl_client_errors,
        };
        const TTest *socket_tests[] = {
                test_ctl_socket_file, test_ctl_socket_in_use, test_ctl_socket_stale,
        };
        const TTest *cli_tests[] = {
                test_ctl_cli_exit_codes, test_ctl_cli_commands,
        };

        add_tcase(s, "commands", setup_event, commands_tests, ELEMENTSOF(commands_tests));
        add_tcase(s, "protocol", setup_event, protocol_tests, ELEMENTSOF(protocol_tests));
        add_tcase(s, "socket", setup_event, socket_tests, ELEMENTSOF(socket_tests));
        add_tcase(s, "cli", setup_event, cli_tests, ELEMENTSOF(cli_tests));
        add_tcase(s, "protocol_su", setup_su, protocol_tests, ELEMENTSOF(protocol_tests));
        add_tcase(s, "cli_su", setup_su, cli_tests, ELEMENTSOF(cli_tests));
        return s;
}

int main(void) {
        return tl_run(ctl_suite());
}
