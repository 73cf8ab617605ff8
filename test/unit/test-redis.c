/* SPDX-License-Identifier: MIT */
#include <check.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <sofia-sip/su_wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop.h"
#include "macro.h"
#include "redis.h"
#include "testlib-redis.h"
#include "testlib.h"

/* Each test drives a real loop until a counter reaches a target (callbacks call loop_quit()),
 * with a safety timer so that nothing hangs, against a real redis-server. */

enum backend { BACKEND_SU, BACKEND_EVENT };

struct result {
        int called;
        int error;
        int type;
        long long integer;
        size_t len;
        char text[4096]; /* like tl_redis_cmd: arrays joined with '\n' */
};

static struct {
        su_root_t *root;
        struct event_base *base;
        struct loop *loop;
        struct loop_timer *safety;
        const int *wait_var;
        int wait_target;
        bool timed_out;

        struct redis *redis;

        int up[_REDIS_LINK_MAX], down[_REDIS_LINK_MAX];
        int last_error[_REDIS_LINK_MAX];
        char last_reason[_REDIS_LINK_MAX][256];

        int n_subscribed, n_messages;
        char last_channel[128], last_pattern[128], last_data[256];
        size_t last_len;

        int n_done; /* generic counter for callbacks */
} T;

/* ---- servers ------------------------------------------------------------------------- */

/* A failed assertion ends a forked test with _exit(), leaving its redis-server running: every
 * server's pid goes to a file that main() reads to kill the leftovers after the run. */
static char *pid_file;

static void server_record(pid_t pid) {
        FILE *f = fopen(pid_file, "ae");
        ck_assert_ptr_nonnull(f);
        fprintf(f, "%d\n", (int)pid);
        ck_assert_int_eq(fclose(f), 0);
}

static void servers_kill_leftovers(void) {
        FILE *f = fopen(pid_file, "re");
        int pid;

        if (!f)
                return;
        while (fscanf(f, "%d", &pid) == 1) {
                char path[64], comm[64] = "";
                snprintf(path, sizeof path, "/proc/%d/comm", pid);
                FILE *c = fopen(path, "re");
                if (!c)
                        continue;
                if (fgets(comm, sizeof comm, c) && (strncmp(comm, "redis-server", 12) == 0 ||
                                                    strncmp(comm, "redis-sentinel", 14) == 0))
                        kill(pid, SIGKILL);
                fclose(c);
        }
        fclose(f);
}

/* Like tl_redis_start(), on a given port (a restart, or a server that was not there at
 * first), and with the pid recorded before anything can fail. */
static void server_start_on(struct tl_redis *srv, int port, const char *const *extra) {
        char port_s[16], name[32];
        snprintf(port_s, sizeof port_s, "%d", port);
        snprintf(name, sizeof name, "redis-%d", port);
        char *argv[32] = {"/usr/bin/redis-server", "--port", port_s, "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no", "--dir", (char *)tl_tmpdir()};
        size_t n = 11;
        for (; extra && *extra && n < ELEMENTSOF(argv) - 1; extra++)
                argv[n++] = (char *)*extra;
        argv[n] = NULL;

        free(srv->proc.log); /* from an earlier run on this port */
        srv->proc.log = NULL;
        srv->port = port;
        ck_assert_int_eq(tl_spawn(name, argv, &srv->proc), 0);
        server_record(srv->proc.pid);
        for (int i = 0; i < 500; i++) {
                _cleanup_free_ char *pong = tl_redis_cmd(srv, "PING");
                if (pong && streq(pong, "PONG"))
                        return;
                nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        }
        _cleanup_free_ char *log = tl_log(&srv->proc);
        ck_abort_msg("redis-server did not start on port %d: %s", port, log);
}

static void server_start(struct tl_redis *srv, const char *const *extra) {
        *srv = (struct tl_redis){0};
        server_start_on(srv, tl_free_port(), extra);
}

static void server_stop(struct tl_redis *srv) {
        tl_kill(&srv->proc, SIGCONT);
        tl_redis_stop(srv);
        free(srv->proc.log);
        srv->proc.log = NULL;
}

/* ---- loop driving -------------------------------------------------------------------- */

static void wake(void) {
        if (T.wait_var && *T.wait_var >= T.wait_target)
                loop_quit(T.loop);
}

static void on_safety(struct loop_timer *t, void *userdata) {
        T.timed_out = true;
        loop_quit(T.loop);
}

/* Run the loop until *var >= target; false after timeout_ms. */
static bool wait_for(const int *var, int target, uint64_t timeout_ms) {
        if (*var >= target)
                return true;
        T.wait_var = var;
        T.wait_target = target;
        T.timed_out = false;
        ck_assert_int_eq(loop_timer_arm(T.safety, timeout_ms), 0);
        while (*var < target && !T.timed_out)
                loop_run(T.loop);
        loop_timer_disarm(T.safety);
        T.wait_var = NULL;
        return *var >= target;
}

/* Run the loop for ms, whatever happens. */
static void run_for(uint64_t ms) {
        static const int never = 0;
        ck_assert(!wait_for(&never, 1, ms));
}

static void setup_backend(enum backend b) {
        memset(&T, 0, sizeof T);
        if (b == BACKEND_SU) {
                ck_assert_int_eq(su_init(), 0);
                T.root = su_root_create(NULL);
                ck_assert_ptr_nonnull(T.root);
                ck_assert_int_eq(loop_new_su(T.root, &T.loop), 0);
        } else {
                T.base = event_base_new();
                ck_assert_ptr_nonnull(T.base);
                ck_assert_int_eq(loop_new_event(T.base, &T.loop), 0);
        }
        ck_assert_int_eq(loop_timer_new(T.loop, on_safety, NULL, &T.safety), 0);
}

static void teardown(void) {
        redis_free(T.redis);
        T.redis = NULL;
        loop_timer_free(T.safety);
        loop_free(T.loop);
        if (T.root) {
                su_root_destroy(T.root);
                su_deinit();
        }
        if (T.base)
                event_base_free(T.base);
}

/* ---- callbacks ----------------------------------------------------------------------- */

static void on_state(struct redis *r, enum redis_link link, bool up, int error, const char *reason,
                     void *userdata) {
        ck_assert_ptr_eq(r, T.redis);
        if (up) {
                ck_assert_int_eq(error, 0);
                T.up[link]++;
        } else {
                ck_assert_int_lt(error, 0);
                ck_assert_ptr_nonnull(reason);
                T.down[link]++;
                T.last_error[link] = error;
                snprintf(T.last_reason[link], sizeof T.last_reason[link], "%s", reason);
        }
        wake();
}

static void reply_text(FILE *f, const redisReply *reply) {
        switch (reply->type) {
        case REDIS_REPLY_INTEGER:
                fprintf(f, "%lld", reply->integer);
                break;
        case REDIS_REPLY_NIL:
                break;
        case REDIS_REPLY_ARRAY:
                for (size_t i = 0; i < reply->elements; i++) {
                        if (i > 0)
                                fputc('\n', f);
                        reply_text(f, reply->element[i]);
                }
                break;
        default:
                fwrite(reply->str, 1, reply->len, f);
        }
}

static void on_reply(struct redis *r, struct redisReply *reply, int error, void *userdata) {
        struct result *res = userdata;

        ck_assert_int_eq(res->called, 0); /* exactly once */
        res->called++;
        res->error = error;
        if (error < 0)
                ck_assert_ptr_null(reply);
        else {
                ck_assert_ptr_nonnull(reply);
                res->type = reply->type;
                res->integer = reply->integer;
                res->len = reply->len;
                FILE *f = fmemopen(res->text, sizeof res->text - 1, "w");
                ck_assert_ptr_nonnull(f);
                reply_text(f, reply);
                fclose(f);
        }
        T.n_done++;
        wake();
}

static void on_message(struct redis *r, const struct redis_message *m, void *userdata) {
        ck_assert_ptr_nonnull(m->channel);
        if (m->type == REDIS_MESSAGE_SUBSCRIBED) {
                ck_assert_ptr_null(m->data);
                T.n_subscribed++;
        } else {
                ck_assert_ptr_nonnull(m->data);
                T.n_messages++;
                snprintf(T.last_channel, sizeof T.last_channel, "%s", m->channel);
                snprintf(T.last_pattern, sizeof T.last_pattern, "%s", strempty(m->pattern));
                ck_assert_uint_lt(m->len, sizeof T.last_data);
                memcpy(T.last_data, m->data, m->len);
                T.last_data[m->len] = 0;
                T.last_len = m->len;
        }
        wake();
}

/* ---- helpers ------------------------------------------------------------------------- */

static struct redis_config config_for(const struct tl_redis *srv) {
        return (struct redis_config){
                .host = "127.0.0.1",
                .port = (uint16_t)srv->port,
                .reconnect_min_ms = 20,
                .reconnect_max_ms = 200,
        };
}

static void client_new(const struct redis_config *cfg) {
        ck_assert_int_eq(redis_new(T.loop, cfg, &T.redis), 0);
        redis_set_state_callback(T.redis, on_state, NULL);
}

static void wait_up(enum redis_link link, int n) {
        ck_assert_msg(wait_for(&T.up[link], n, 10000), "%s link not up (%d), last error: %s",
                      redis_link_name(link), T.up[link], T.last_reason[link]);
}

/* Run one command to the end. */
static void command(struct result *res, const char *fmt, ...) {
        memset(res, 0, sizeof *res);
        va_list ap;
        va_start(ap, fmt);
        int k = redis_commandv(T.redis, on_reply, res, fmt, ap);
        va_end(ap);
        ck_assert_int_eq(k, 0);
        ck_assert_int_eq(res->called, 0); /* never from within redis_command() */
        ck_assert(wait_for(&res->called, 1, 10000));
}

static void assert_set_get(const char *key, const char *value) {
        struct result res;
        command(&res, "SET %s %s", key, value);
        ck_assert_int_eq(res.error, 0);
        ck_assert_int_eq(res.type, REDIS_REPLY_STATUS);
        ck_assert_str_eq(res.text, "OK");
        command(&res, "GET %s", key);
        ck_assert_int_eq(res.error, 0);
        ck_assert_int_eq(res.type, REDIS_REPLY_STRING);
        ck_assert_str_eq(res.text, value);
}

/* One command on a connection authenticated with password; asserts an OK reply. */
static void admin_cmd(struct tl_redis *srv, const char *password, const char *cmd) {
        redisContext *c = redisConnectWithTimeout("127.0.0.1", srv->port, (struct timeval){1, 0});
        ck_assert_ptr_nonnull(c);
        ck_assert_int_eq(c->err, 0);
        redisReply *reply = redisCommand(c, "AUTH %s", password);
        ck_assert_ptr_nonnull(reply);
        ck_assert_int_eq(reply->type, REDIS_REPLY_STATUS);
        freeReplyObject(reply);
        reply = redisCommand(c, cmd);
        ck_assert_ptr_nonnull(reply);
        ck_assert_int_eq(reply->type, REDIS_REPLY_STATUS);
        freeReplyObject(reply);
        redisFree(c);
}

/* After start: tl_redis_start() waits for a PONG, which requirepass would refuse. */
static void require_password(struct tl_redis *srv, const char *password) {
        _cleanup_free_ char *ok = tl_redis_cmd(srv, "CONFIG SET requirepass %s", password);
        ck_assert_str_eq(ok, "OK");
}

static void publish(struct tl_redis *srv, const char *channel, const char *data) {
        _cleanup_free_ char *n = tl_redis_cmd(srv, "PUBLISH %s %s", channel, data);
        ck_assert_ptr_nonnull(n);
        ck_assert_str_eq(n, "1");
}

/* ---- basics -------------------------------------------------------------------------- */

START_TEST(test_redis_set_get) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};

        server_start(&srv, NULL);
        struct redis_config cfg = config_for(&srv);
        client_new(&cfg);

        ck_assert(!redis_is_connected(T.redis));
        ck_assert_int_eq(redis_command(T.redis, on_reply, NULL, "PING"), -ENOTCONN);
        wait_up(REDIS_LINK_COMMAND, 1);
        ck_assert(redis_is_connected(T.redis));
        ck_assert(!redis_link_is_up(T.redis, REDIS_LINK_PUBSUB)); /* lazily opened */

        assert_set_get("greeting", "hello world");

        struct result res;
        command(&res, "GET %s", "missing");
        ck_assert_int_eq(res.error, 0);
        ck_assert_int_eq(res.type, REDIS_REPLY_NIL);
        command(&res, "INCRBY n %d", 41);
        ck_assert_int_eq(res.type, REDIS_REPLY_INTEGER);
        ck_assert_int_eq(res.integer, 41);
        command(&res, "NOSUCHCOMMAND");
        ck_assert_int_eq(res.error, 0);
        ck_assert_int_eq(res.type, REDIS_REPLY_ERROR);

        /* Mode-changing commands belong to the pub/sub link. */
        ck_assert_int_eq(redis_command(T.redis, on_reply, NULL, "SUBSCRIBE %s", "x"), -EINVAL);
        ck_assert_int_eq(redis_command(T.redis, on_reply, NULL, "%s", "monitor"), -EINVAL);
        const char *argv[] = {"Unsubscribe"};
        ck_assert_int_eq(redis_command_argv(T.redis, on_reply, NULL, 1, argv, NULL), -EINVAL);
        command(&res, "PUBSUB %s", "CHANNELS"); /* a prefix is not a match */
        ck_assert_int_eq(res.type, REDIS_REPLY_ARRAY);

        ck_assert_int_eq(T.down[REDIS_LINK_COMMAND], 0);
        redis_free(T.redis);
        T.redis = NULL;
        server_stop(&srv);
}
END_TEST

START_TEST(test_redis_binary_value) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};
        const char value[] = {'a', 0, 'b', '\r', '\n', (char)0xff, 0, 'z'};
        struct result res;

        server_start(&srv, NULL);
        struct redis_config cfg = config_for(&srv);
        client_new(&cfg);
        wait_up(REDIS_LINK_COMMAND, 1);

        command(&res, "SET %b %b", "bin\0key", (size_t)7, value, sizeof value);
        ck_assert_str_eq(res.text, "OK");
        command(&res, "GET %b", "bin\0key", (size_t)7);
        ck_assert_int_eq(res.type, REDIS_REPLY_STRING);
        ck_assert_uint_eq(res.len, sizeof value);
        ck_assert(memcmp(res.text, value, sizeof value) == 0);
        command(&res, "STRLEN %b", "bin\0key", (size_t)7);
        ck_assert_int_eq(res.integer, (long long)sizeof value);
        server_stop(&srv);
}
END_TEST

START_TEST(test_redis_hash_array) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};
        struct result res;

        server_start(&srv, NULL);
        struct redis_config cfg = config_for(&srv);
        client_new(&cfg);
        wait_up(REDIS_LINK_COMMAND, 1);

        const char *argv[] = {"HSET", "aor:alice", "dev1", "contact-1", "dev2", "contact-2"};
        memset(&res, 0, sizeof res);
        ck_assert_int_eq(redis_command_argv(T.redis, on_reply, &res, (int)ELEMENTSOF(argv), argv, NULL), 0);
        ck_assert(wait_for(&res.called, 1, 5000));
        ck_assert_int_eq(res.type, REDIS_REPLY_INTEGER);
        ck_assert_int_eq(res.integer, 2);

        command(&res, "HGETALL %s", "aor:alice");
        ck_assert_int_eq(res.type, REDIS_REPLY_ARRAY);
        ck_assert_str_eq(res.text, "dev1\ncontact-1\ndev2\ncontact-2");
        command(&res, "HGETALL %s", "aor:nobody");
        ck_assert_int_eq(res.type, REDIS_REPLY_ARRAY);
        ck_assert_str_eq(res.text, "");

        /* MULTI/EXEC is just pipelining. */
        command(&res, "MULTI");
        ck_assert_str_eq(res.text, "OK");
        command(&res, "HSET %s %s %s", "aor:bob", "d", "c");
        ck_assert_str_eq(res.text, "QUEUED");
        command(&res, "EXPIRE %s %d", "aor:bob", 60);
        command(&res, "EXEC");
        ck_assert_int_eq(res.type, REDIS_REPLY_ARRAY);
        ck_assert_str_eq(res.text, "1\n1");
        server_stop(&srv);
}
END_TEST

#define N_PIPELINE 1000

static int pipeline_next, pipeline_errors;

static void on_pipeline_reply(struct redis *r, struct redisReply *reply, int error, void *userdata) {
        long long i = (long long)(intptr_t)userdata;
        if (error < 0 || reply->type != REDIS_REPLY_INTEGER || reply->integer != i + 1 || i != pipeline_next)
                pipeline_errors++;
        pipeline_next++;
        T.n_done++;
        wake();
}

START_TEST(test_redis_pipeline_order) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};

        server_start(&srv, NULL);
        struct redis_config cfg = config_for(&srv);
        client_new(&cfg);
        wait_up(REDIS_LINK_COMMAND, 1);

        pipeline_next = pipeline_errors = 0;
        for (intptr_t i = 0; i < N_PIPELINE; i++)
                ck_assert_int_eq(redis_command(T.redis, on_pipeline_reply, (void *)i, "INCR counter"), 0);
        ck_assert(wait_for(&T.n_done, N_PIPELINE, 10000));
        ck_assert_int_eq(pipeline_errors, 0);
        ck_assert_int_eq(pipeline_next, N_PIPELINE);

        _cleanup_free_ char *v = tl_redis_cmd(&srv, "GET counter");
        ck_assert_str_eq(v, "1000");
        server_stop(&srv);
}
END_TEST

START_TEST(test_redis_max_pending) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};
        struct result res[11];

        server_start(&srv, NULL);
        struct redis_config cfg = config_for(&srv);
        cfg.max_pending = 10;
        client_new(&cfg);
        wait_up(REDIS_LINK_COMMAND, 1);

        memset(res, 0, sizeof res);
        for (size_t i = 0; i < 10; i++)
                ck_assert_int_eq(redis_command(T.redis, on_reply, &res[i], "PING"), 0);
        ck_assert_int_eq(redis_command(T.redis, on_reply, &res[10], "PING"), -ENOBUFS);
        ck_assert(wait_for(&T.n_done, 10, 5000));
        ck_assert_int_eq(redis_command(T.redis, on_reply, &res[10], "PING"), 0);
        ck_assert(wait_for(&T.n_done, 11, 5000));
        server_stop(&srv);
}
END_TEST

START_TEST(test_redis_select_and_name) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};
        struct result res;

        server_start(&srv, NULL);
        struct redis_config cfg = config_for(&srv);
        cfg.db = 3;
        cfg.client_name = "unit";
        client_new(&cfg);
        wait_up(REDIS_LINK_COMMAND, 1);

        command(&res, "CLIENT INFO");
        ck_assert_ptr_nonnull(strstr(res.text, " db=3 "));
        ck_assert_ptr_nonnull(strstr(res.text, " name=unit-cmd "));
        command(&res, "SET %s %s", "where", "three");
        _cleanup_free_ char *v = tl_redis_cmd(&srv, "GET where");
        ck_assert_str_eq(v, ""); /* not in db 0 */
        server_stop(&srv);
}
END_TEST

START_TEST(test_redis_unix_socket) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};
        _cleanup_free_ char *path = tl_path("redis.sock");
        const char *extra[] = {"--unixsocket", path, "--unixsocketperm", "700", NULL};

        server_start(&srv, extra);
        struct redis_config cfg = {.unix_path = path};
        client_new(&cfg);
        wait_up(REDIS_LINK_COMMAND, 1);
        assert_set_get("over", "unix");
        server_stop(&srv);
}
END_TEST

/* ---- authentication ------------------------------------------------------------------ */

START_TEST(test_redis_auth_password) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};
        server_start(&srv, NULL);
        require_password(&srv, "s3cret");
        struct redis_config cfg = config_for(&srv);
        cfg.password = "s3cret";
        cfg.db = 1;
        client_new(&cfg);
        wait_up(REDIS_LINK_COMMAND, 1);
        assert_set_get("k", "v");

        ck_assert_int_eq(redis_subscribe(T.redis, "authed", on_message, NULL), 0);
        wait_up(REDIS_LINK_PUBSUB, 1);
        ck_assert_int_eq(T.n_subscribed, 1);
        ck_assert_int_eq(T.down[REDIS_LINK_COMMAND] + T.down[REDIS_LINK_PUBSUB], 0);
        server_stop(&srv);
}
END_TEST

START_TEST(test_redis_auth_wrong_password) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};
        server_start(&srv, NULL);
        require_password(&srv, "s3cret");
        struct redis_config cfg = config_for(&srv);
        cfg.password = "wr0ng-pa55";
        client_new(&cfg);

        ck_assert(wait_for(&T.down[REDIS_LINK_COMMAND], 1, 5000));
        ck_assert_int_eq(T.last_error[REDIS_LINK_COMMAND], -EACCES);
        ck_assert_ptr_nonnull(strstr(T.last_reason[REDIS_LINK_COMMAND], "AUTH"));
        ck_assert_ptr_nonnull(strstr(T.last_reason[REDIS_LINK_COMMAND], "WRONGPASS"));
        ck_assert_ptr_null(strstr(T.last_reason[REDIS_LINK_COMMAND], "wr0ng"));
        ck_assert_int_eq(redis_command(T.redis, on_reply, NULL, "PING"), -ENOTCONN);

        /* Retried with backoff, reported once, never up. */
        run_for(600);
        ck_assert_int_eq(T.down[REDIS_LINK_COMMAND], 1);
        ck_assert_int_eq(T.up[REDIS_LINK_COMMAND], 0);
        ck_assert_int_eq(redis_command(T.redis, on_reply, NULL, "PING"), -ENOTCONN);

        /* The server's password changes to ours: the retries get through by themselves. */
        admin_cmd(&srv, "s3cret", "CONFIG SET requirepass wr0ng-pa55");
        wait_up(REDIS_LINK_COMMAND, 1);
        assert_set_get("finally", "in");
        admin_cmd(&srv, "wr0ng-pa55", "CONFIG SET requirepass s3cret");

        /* No password at all: NOAUTH, also an access error. */
        redis_free(T.redis);
        T.redis = NULL;
        memset(T.down, 0, sizeof T.down);
        cfg.password = NULL;
        client_new(&cfg);
        ck_assert(wait_for(&T.down[REDIS_LINK_COMMAND], 1, 5000));
        ck_assert_int_eq(T.last_error[REDIS_LINK_COMMAND], -EACCES);
        ck_assert_ptr_nonnull(strstr(T.last_reason[REDIS_LINK_COMMAND], "NOAUTH"));
        server_stop(&srv);
}
END_TEST

START_TEST(test_redis_acl_user) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};

        server_start(&srv, NULL);
        _cleanup_free_ char *ok = tl_redis_cmd(&srv, "ACL SETUSER alice on >wonderland ~* &* +@all");
        ck_assert_str_eq(ok, "OK");

        struct redis_config cfg = config_for(&srv);
        cfg.username = "alice";
        cfg.password = "wonderland";
        client_new(&cfg);
        wait_up(REDIS_LINK_COMMAND, 1);

        struct result res;
        command(&res, "ACL WHOAMI");
        ck_assert_str_eq(res.text, "alice");

        ck_assert_int_eq(redis_subscribe(T.redis, "acl-news", on_message, NULL), 0);
        wait_up(REDIS_LINK_PUBSUB, 1);
        command(&res, "PUBLISH %s %s", "acl-news", "hi");
        ck_assert_int_eq(res.integer, 1);
        ck_assert(wait_for(&T.n_messages, 1, 5000));
        ck_assert_str_eq(T.last_data, "hi");

        /* Right user, wrong password. */
        redis_free(T.redis);
        T.redis = NULL;
        cfg.password = "looking-glass";
        client_new(&cfg);
        ck_assert(wait_for(&T.down[REDIS_LINK_COMMAND], 1, 5000));
        ck_assert_int_eq(T.last_error[REDIS_LINK_COMMAND], -EACCES);

        /* A user without channel permissions: the refused SUBSCRIBE is reported, retried, and
         * goes through once granted. */
        _cleanup_free_ char *ok2 = tl_redis_cmd(&srv, "ACL SETUSER carol on >pw ~* resetchannels +@all");
        ck_assert_str_eq(ok2, "OK");
        redis_free(T.redis);
        T.redis = NULL;
        memset(T.up, 0, sizeof T.up);
        memset(T.down, 0, sizeof T.down);
        cfg.username = "carol";
        cfg.password = "pw";
        client_new(&cfg);
        ck_assert_int_eq(redis_subscribe(T.redis, "acl-news", on_message, NULL), 0);
        wait_up(REDIS_LINK_COMMAND, 1);
        ck_assert(wait_for(&T.down[REDIS_LINK_PUBSUB], 1, 5000));
        ck_assert_int_eq(T.last_error[REDIS_LINK_PUBSUB], -EACCES);
        ck_assert_ptr_nonnull(strstr(T.last_reason[REDIS_LINK_PUBSUB], "NOPERM"));
        _cleanup_free_ char *ok3 = tl_redis_cmd(&srv, "ACL SETUSER carol &acl-*");
        ck_assert_str_eq(ok3, "OK");
        run_for(300); /* the keep-alive channel is still refused */
        ck_assert(!redis_link_is_up(T.redis, REDIS_LINK_PUBSUB));
        _cleanup_free_ char *ok4 = tl_redis_cmd(&srv, "ACL SETUSER carol &__sipfleet__:*");
        ck_assert_str_eq(ok4, "OK");
        wait_up(REDIS_LINK_PUBSUB, 1);
        ck_assert_int_eq(T.up[REDIS_LINK_COMMAND], 1);

        /* A username needs a password. */
        struct redis *r = NULL;
        cfg.password = NULL;
        ck_assert_int_eq(redis_new(T.loop, &cfg, &r), -EINVAL);
        ck_assert_ptr_null(r);
        server_stop(&srv);
}
END_TEST

/* ---- connection loss ----------------------------------------------------------------- */

START_TEST(test_redis_connect_refused_then_server_starts) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};
        int port = tl_free_port();

        struct redis_config cfg = {.host = "127.0.0.1", .port = (uint16_t)port,
                                   .reconnect_min_ms = 20, .reconnect_max_ms = 200};
        client_new(&cfg);
        ck_assert(wait_for(&T.down[REDIS_LINK_COMMAND], 1, 5000));
        ck_assert_int_eq(T.last_error[REDIS_LINK_COMMAND], -ECONNREFUSED);
        ck_assert_int_eq(redis_command(T.redis, on_reply, NULL, "PING"), -ENOTCONN);

        /* Subscribing while nothing is reachable is fine: it is kept. */
        ck_assert_int_eq(redis_subscribe(T.redis, "later", on_message, NULL), 0);

        /* Still refused: retried quietly. */
        run_for(500);
        ck_assert_int_eq(T.down[REDIS_LINK_COMMAND], 1);
        ck_assert_int_eq(redis_command(T.redis, on_reply, NULL, "PING"), -ENOTCONN);

        server_start_on(&srv, port, NULL);
        wait_up(REDIS_LINK_COMMAND, 1);
        wait_up(REDIS_LINK_PUBSUB, 1);
        assert_set_get("after", "refused");
        ck_assert_int_eq(T.n_subscribed, 1);
        publish(&srv, "later", "arrived");
        ck_assert(wait_for(&T.n_messages, 1, 5000));
        ck_assert_str_eq(T.last_data, "arrived");
        server_stop(&srv);
}
END_TEST

START_TEST(test_redis_server_killed_and_restarted) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};
        struct result inflight[3], res;

        server_start(&srv, NULL);
        int port = srv.port;
        struct redis_config cfg = config_for(&srv);
        cfg.command_timeout_ms = 20000;
        client_new(&cfg);
        ck_assert_int_eq(redis_subscribe(T.redis, "presence", on_message, NULL), 0);
        wait_up(REDIS_LINK_COMMAND, 1);
        wait_up(REDIS_LINK_PUBSUB, 1);
        ck_assert_int_eq(T.n_subscribed, 1);

        /* Stopped, the server holds our commands; then it dies with them. */
        tl_kill(&srv.proc, SIGSTOP);
        memset(inflight, 0, sizeof inflight);
        for (size_t i = 0; i < ELEMENTSOF(inflight); i++)
                ck_assert_int_eq(redis_command(T.redis, on_reply, &inflight[i], "INCR %s", "x"), 0);
        run_for(100);
        ck_assert_int_eq(T.n_done, 0);
        tl_kill(&srv.proc, SIGKILL);
        tl_wait(&srv.proc, 5000);

        ck_assert(wait_for(&T.n_done, 3, 5000));
        for (size_t i = 0; i < ELEMENTSOF(inflight); i++) {
                ck_assert_int_eq(inflight[i].called, 1);
                ck_assert_int_lt(inflight[i].error, 0);
                ck_assert_int_ne(inflight[i].error, -ETIMEDOUT);
        }
        ck_assert_int_eq(T.down[REDIS_LINK_COMMAND], 1);
        ck_assert(!redis_is_connected(T.redis));
        ck_assert_int_eq(redis_command(T.redis, on_reply, NULL, "PING"), -ENOTCONN);
        ck_assert(wait_for(&T.down[REDIS_LINK_PUBSUB], 1, 5000));

        /* Down for a while: commands keep failing fast. */
        run_for(300);
        ck_assert_int_eq(redis_command(T.redis, on_reply, NULL, "PING"), -ENOTCONN);
        ck_assert_int_eq(T.up[REDIS_LINK_COMMAND], 1);

        server_start_on(&srv, port, NULL);
        wait_up(REDIS_LINK_COMMAND, 2);
        wait_up(REDIS_LINK_PUBSUB, 2);
        ck_assert_int_eq(T.n_subscribed, 2); /* confirmed again */
        command(&res, "GET %s", "x");
        ck_assert_int_eq(res.error, 0);
        ck_assert_int_eq(res.type, REDIS_REPLY_NIL); /* a fresh server */

        publish(&srv, "presence", "alice@example.org;device=1");
        ck_assert(wait_for(&T.n_messages, 1, 5000));
        ck_assert_str_eq(T.last_channel, "presence");
        ck_assert_str_eq(T.last_data, "alice@example.org;device=1");
        server_stop(&srv);
}
END_TEST

START_TEST(test_redis_command_timeout) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};
        struct result sleeping, behind, res;
        const char *extra[] = {"--enable-debug-command", "yes", NULL};

        server_start(&srv, extra);
        struct redis_config cfg = config_for(&srv);
        cfg.command_timeout_ms = 300;
        cfg.connect_timeout_ms = 500;
        client_new(&cfg);
        wait_up(REDIS_LINK_COMMAND, 1);

        memset(&sleeping, 0, sizeof sleeping);
        memset(&behind, 0, sizeof behind);
        uint64_t start = now_msec();
        ck_assert_int_eq(redis_command(T.redis, on_reply, &sleeping, "DEBUG SLEEP %d", 2), 0);
        ck_assert_int_eq(redis_command(T.redis, on_reply, &behind, "GET %s", "k"), 0);
        ck_assert(wait_for(&T.n_done, 2, 5000));
        uint64_t took = now_msec() - start;
        ck_assert_int_eq(sleeping.error, -ETIMEDOUT);
        ck_assert_int_eq(behind.error, -ETIMEDOUT);
        ck_assert_uint_ge(took, 290);
        ck_assert_uint_lt(took, 1500);
        ck_assert_int_eq(T.down[REDIS_LINK_COMMAND], 1);
        ck_assert_int_eq(T.last_error[REDIS_LINK_COMMAND], -ETIMEDOUT);
        ck_assert_int_eq(redis_command(T.redis, on_reply, NULL, "PING"), -ENOTCONN);

        /* Back once the server answers again. */
        wait_up(REDIS_LINK_COMMAND, 2);
        command(&res, "PING");
        ck_assert_str_eq(res.text, "PONG");
        server_stop(&srv);
}
END_TEST

/* ---- pub/sub ------------------------------------------------------------------------- */

static int other_messages;

static void on_other_message(struct redis *r, const struct redis_message *m, void *userdata) {
        if (m->type == REDIS_MESSAGE_DATA)
                other_messages++;
        else
                T.n_done++;
        wake();
}

START_TEST(test_redis_pubsub) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};
        struct result res;

        server_start(&srv, NULL);
        struct redis_config cfg = config_for(&srv);
        client_new(&cfg);
        wait_up(REDIS_LINK_COMMAND, 1);
        ck_assert_int_eq(T.up[REDIS_LINK_PUBSUB], 0);

        ck_assert_int_eq(redis_subscribe(T.redis, "reg:alice", on_message, NULL), 0);
        ck_assert_int_eq(redis_subscribe(T.redis, "reg:alice", on_message, NULL), -EEXIST);
        ck_assert_int_eq(redis_psubscribe(T.redis, "push:*", on_message, NULL), 0);
        ck_assert_int_eq(redis_subscribe(T.redis, "", on_message, NULL), -EINVAL);
        wait_up(REDIS_LINK_PUBSUB, 1);
        ck_assert_int_eq(T.n_subscribed, 2);

        /* From our own command link, binary payload. */
        command(&res, "PUBLISH %s %b", "reg:alice", "dev\0ice", (size_t)7);
        ck_assert_int_eq(res.integer, 1);
        ck_assert(wait_for(&T.n_messages, 1, 5000));
        ck_assert_str_eq(T.last_channel, "reg:alice");
        ck_assert_str_eq(T.last_pattern, "");
        ck_assert_uint_eq(T.last_len, 7);
        ck_assert(memcmp(T.last_data, "dev\0ice", 7) == 0);

        publish(&srv, "push:bob", "result");
        ck_assert(wait_for(&T.n_messages, 2, 5000));
        ck_assert_str_eq(T.last_channel, "push:bob");
        ck_assert_str_eq(T.last_pattern, "push:*");
        ck_assert_str_eq(T.last_data, "result");

        /* A second subscriber on the same channel gets its own confirmation, then both get
         * the messages. */
        T.n_done = 0;
        ck_assert_int_eq(redis_subscribe(T.redis, "reg:alice", on_other_message, NULL), 0);
        ck_assert(wait_for(&T.n_done, 1, 5000));
        ck_assert_int_eq(T.n_subscribed, 2);
        publish(&srv, "reg:alice", "both");
        ck_assert(wait_for(&T.n_messages, 3, 5000));
        ck_assert(wait_for(&other_messages, 1, 5000));

        /* Unsubscribed: nothing more for on_message on that channel. */
        ck_assert_int_eq(redis_unsubscribe(T.redis, "reg:alice", on_message, NULL), 0);
        ck_assert_int_eq(redis_unsubscribe(T.redis, "reg:alice", on_message, NULL), -ENOENT);
        ck_assert_int_eq(redis_unsubscribe(T.redis, "nope", on_message, NULL), -ENOENT);
        publish(&srv, "reg:alice", "other only");
        ck_assert(wait_for(&other_messages, 2, 5000));
        ck_assert_int_eq(T.n_messages, 3);

        /* Last subscriber gone: the server drops the channel. */
        ck_assert_int_eq(redis_unsubscribe(T.redis, "reg:alice", on_other_message, NULL), 0);
        ck_assert_int_eq(redis_punsubscribe(T.redis, "push:*", on_message, NULL), 0);
        for (int i = 0; i < 100; i++) {
                _cleanup_free_ char *n = tl_redis_cmd(&srv, "PUBSUB NUMSUB reg:alice");
                if (n && streq(n, "reg:alice\n0"))
                        break;
                run_for(20);
        }
        _cleanup_free_ char *n = tl_redis_cmd(&srv, "PUBSUB NUMSUB reg:alice");
        ck_assert_str_eq(n, "reg:alice\n0");
        _cleanup_free_ char *np = tl_redis_cmd(&srv, "PUBSUB NUMPAT");
        ck_assert_str_eq(np, "0");
        ck_assert(redis_link_is_up(T.redis, REDIS_LINK_PUBSUB));
        server_stop(&srv);
}
END_TEST

static void on_message_unsubscribe_self(struct redis *r, const struct redis_message *m, void *userdata) {
        if (m->type != REDIS_MESSAGE_DATA)
                return;
        /* From within the dispatch to this very channel. */
        ck_assert_int_eq(redis_unsubscribe(r, m->channel, on_message_unsubscribe_self, userdata), 0);
        ck_assert_int_eq(redis_unsubscribe(r, m->channel, on_message_unsubscribe_self, userdata), -ENOENT);
        T.n_done++;
        wake();
}

START_TEST(test_redis_unsubscribe_in_callback) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};

        server_start(&srv, NULL);
        struct redis_config cfg = config_for(&srv);
        client_new(&cfg);
        ck_assert_int_eq(redis_subscribe(T.redis, "once", on_message_unsubscribe_self, (void *)1), 0);
        ck_assert_int_eq(redis_subscribe(T.redis, "once", on_message_unsubscribe_self, (void *)2), 0);
        ck_assert_int_eq(redis_subscribe(T.redis, "tick", on_message, NULL), 0);
        wait_up(REDIS_LINK_PUBSUB, 1);

        publish(&srv, "once", "x");
        ck_assert(wait_for(&T.n_done, 2, 5000));
        /* The channel is dropped on the server once the dispatch is over. */
        for (int i = 0; i < 100; i++) {
                _cleanup_free_ char *n = tl_redis_cmd(&srv, "PUBSUB NUMSUB once");
                if (n && streq(n, "once\n0"))
                        break;
                run_for(20);
        }
        _cleanup_free_ char *n = tl_redis_cmd(&srv, "PUBSUB NUMSUB once");
        ck_assert_str_eq(n, "once\n0");
        publish(&srv, "tick", "1");
        ck_assert(wait_for(&T.n_messages, 1, 5000));
        ck_assert_int_eq(T.n_done, 2);
        server_stop(&srv);
}
END_TEST

START_TEST(test_redis_pubsub_client_kill) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};

        server_start(&srv, NULL);
        struct redis_config cfg = config_for(&srv);
        cfg.keepalive_interval_ms = 200;
        client_new(&cfg);
        ck_assert_int_eq(redis_subscribe(T.redis, "conf:room1", on_message, NULL), 0);
        wait_up(REDIS_LINK_PUBSUB, 1);
        ck_assert_int_eq(T.n_subscribed, 1);

        /* Idle, the keep-alive keeps it up. */
        run_for(1000);
        ck_assert_int_eq(T.down[REDIS_LINK_PUBSUB], 0);

        _cleanup_free_ char *killed = tl_redis_cmd(&srv, "CLIENT KILL TYPE pubsub");
        ck_assert_str_eq(killed, "1");
        ck_assert(wait_for(&T.down[REDIS_LINK_PUBSUB], 1, 5000));
        wait_up(REDIS_LINK_PUBSUB, 2);
        ck_assert_int_eq(T.n_subscribed, 2);
        publish(&srv, "conf:room1", "joined");
        ck_assert(wait_for(&T.n_messages, 1, 5000));
        ck_assert_str_eq(T.last_data, "joined");
        /* The command link was not affected. */
        ck_assert_int_eq(T.down[REDIS_LINK_COMMAND], 0);
        server_stop(&srv);
}
END_TEST

START_TEST(test_redis_pubsub_keepalive_timeout) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};

        server_start(&srv, NULL);
        struct redis_config cfg = config_for(&srv);
        cfg.keepalive_interval_ms = 100;
        cfg.command_timeout_ms = 300;
        cfg.connect_timeout_ms = 300;
        client_new(&cfg);
        ck_assert_int_eq(redis_subscribe(T.redis, "conf:room2", on_message, NULL), 0);
        wait_up(REDIS_LINK_PUBSUB, 1);

        /* A server that stops answering (the TCP connection stays open). */
        tl_kill(&srv.proc, SIGSTOP);
        ck_assert(wait_for(&T.down[REDIS_LINK_PUBSUB], 1, 5000));
        ck_assert_int_eq(T.last_error[REDIS_LINK_PUBSUB], -ETIMEDOUT);
        ck_assert_ptr_nonnull(strstr(T.last_reason[REDIS_LINK_PUBSUB], "keep-alive"));
        run_for(500); /* a few connect timeouts */
        tl_kill(&srv.proc, SIGCONT);

        wait_up(REDIS_LINK_PUBSUB, 2);
        publish(&srv, "conf:room2", "back");
        ck_assert(wait_for(&T.n_messages, 1, 5000));
        ck_assert_str_eq(T.last_data, "back");
        server_stop(&srv);
}
END_TEST

/* ---- redis_free() -------------------------------------------------------------------- */

START_TEST(test_redis_free_with_commands_in_flight) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};
        struct result res[100];

        server_start(&srv, NULL);
        struct redis_config cfg = config_for(&srv);
        client_new(&cfg);
        ck_assert_int_eq(redis_subscribe(T.redis, "gone", on_message, NULL), 0);
        wait_up(REDIS_LINK_COMMAND, 1);
        wait_up(REDIS_LINK_PUBSUB, 1);

        /* Half sent and waiting on a stopped server, half still in the output buffer. */
        tl_kill(&srv.proc, SIGSTOP);
        memset(res, 0, sizeof res);
        for (size_t i = 0; i < 50; i++)
                ck_assert_int_eq(redis_command(T.redis, on_reply, &res[i], "SET k%d v", (int)i), 0);
        run_for(100);
        for (size_t i = 50; i < ELEMENTSOF(res); i++)
                ck_assert_int_eq(redis_command(T.redis, on_reply, &res[i], "SET k%d v", (int)i), 0);
        ck_assert_int_eq(T.n_done, 0);

        redis_free(T.redis);
        T.redis = NULL;
        ck_assert_int_eq(T.n_done, (int)ELEMENTSOF(res));
        for (size_t i = 0; i < ELEMENTSOF(res); i++) {
                ck_assert_int_eq(res[i].called, 1);
                ck_assert_int_eq(res[i].error, -ECANCELED);
        }
        /* Nothing more afterwards. */
        run_for(100);
        ck_assert_int_eq(T.n_done, (int)ELEMENTSOF(res));
        server_stop(&srv);
}
END_TEST

static void on_reply_free(struct redis *r, struct redisReply *reply, int error, void *userdata) {
        on_reply(r, reply, error, userdata);
        if (T.redis) {
                redis_free(T.redis);
                T.redis = NULL;
        }
}

static void on_message_free(struct redis *r, const struct redis_message *m, void *userdata) {
        on_message(r, m, userdata);
        if (m->type == REDIS_MESSAGE_DATA && T.redis) {
                redis_free(T.redis);
                T.redis = NULL;
        }
}

static void on_state_free(struct redis *r, enum redis_link link, bool up, int error,
                          const char *reason, void *userdata) {
        on_state(r, link, up, error, reason, userdata);
        redis_free(T.redis);
        T.redis = NULL;
}

START_TEST(test_redis_free_from_callbacks) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct tl_redis srv = {0};
        struct result res[10];

        server_start(&srv, NULL);
        struct redis_config cfg = config_for(&srv);

        /* From a reply callback: the others in the pipeline are canceled. */
        client_new(&cfg);
        wait_up(REDIS_LINK_COMMAND, 1);
        memset(res, 0, sizeof res);
        ck_assert_int_eq(redis_command(T.redis, on_reply_free, &res[0], "PING"), 0);
        for (size_t i = 1; i < ELEMENTSOF(res); i++)
                ck_assert_int_eq(redis_command(T.redis, on_reply, &res[i], "PING"), 0);
        ck_assert(wait_for(&T.n_done, (int)ELEMENTSOF(res), 5000));
        ck_assert_ptr_null(T.redis);
        ck_assert_int_eq(res[0].error, 0);
        for (size_t i = 1; i < ELEMENTSOF(res); i++)
                ck_assert_int_eq(res[i].error, -ECANCELED);

        /* From a message callback. */
        memset(T.up, 0, sizeof T.up);
        client_new(&cfg);
        ck_assert_int_eq(redis_subscribe(T.redis, "bye", on_message_free, NULL), 0);
        wait_up(REDIS_LINK_PUBSUB, 1);
        publish(&srv, "bye", "now");
        ck_assert(wait_for(&T.n_messages, 1, 5000));
        ck_assert_ptr_null(T.redis);

        /* From the state callback: up, then down (connect refused). */
        memset(T.up, 0, sizeof T.up);
        ck_assert_int_eq(redis_new(T.loop, &cfg, &T.redis), 0);
        redis_set_state_callback(T.redis, on_state_free, NULL);
        wait_up(REDIS_LINK_COMMAND, 1);
        ck_assert_ptr_null(T.redis);

        struct redis_config refused = cfg;
        refused.port = (uint16_t)tl_free_port();
        memset(T.down, 0, sizeof T.down);
        ck_assert_int_eq(redis_new(T.loop, &refused, &T.redis), 0);
        redis_set_state_callback(T.redis, on_state_free, NULL);
        ck_assert(wait_for(&T.down[REDIS_LINK_COMMAND], 1, 5000));
        ck_assert_ptr_null(T.redis);

        /* While the reply of a timed-out command is still owed by a stopped server. */
        cfg.command_timeout_ms = 200;
        memset(T.up, 0, sizeof T.up);
        client_new(&cfg);
        wait_up(REDIS_LINK_COMMAND, 1);
        tl_kill(&srv.proc, SIGSTOP);
        T.n_done = 0;
        memset(res, 0, sizeof res);
        ck_assert_int_eq(redis_command(T.redis, on_reply_free, &res[0], "PING"), 0);
        ck_assert_int_eq(redis_command(T.redis, on_reply, &res[1], "PING"), 0);
        ck_assert(wait_for(&T.n_done, 2, 5000));
        ck_assert_int_eq(res[0].error, -ETIMEDOUT);
        ck_assert_int_eq(res[1].error, -ETIMEDOUT); /* failed already, told from redis_free() */
        ck_assert_ptr_null(T.redis);
        server_stop(&srv);
}
END_TEST

START_TEST(test_redis_bad_config) {
        setup_backend(_i == 0 ? BACKEND_SU : BACKEND_EVENT);
        struct redis *r = NULL;
        struct redis_config cfg = {.reconnect_min_ms = 500, .reconnect_max_ms = 100};
        ck_assert_int_eq(redis_new(T.loop, &cfg, &r), -EINVAL);
        cfg = (struct redis_config){.username = "u"};
        ck_assert_int_eq(redis_new(T.loop, &cfg, &r), -EINVAL);
        ck_assert_ptr_null(r);

        /* Nothing to connect to yet: freeing right away is fine. */
        cfg = (struct redis_config){.port = 1};
        ck_assert_int_eq(redis_new(T.loop, &cfg, &r), 0);
        ck_assert_int_eq(redis_subscribe(r, "__sipfleet__:keepalive", on_message, NULL), -EINVAL);
        redis_free(r);
        redis_free(NULL);
        ck_assert_str_eq(redis_link_name(REDIS_LINK_PUBSUB), "pub/sub");
}
END_TEST

/* ---- failover ------------------------------------------------------------------------ */

/* Wait (up to 10 s) until srv reports the field with this value in INFO replication. */
static void wait_info(struct tl_redis *srv, const char *line) {
        for (int i = 0; i < 1000; i++) {
                _cleanup_free_ char *info = tl_redis_cmd(srv, "INFO replication");
                if (info && strstr(info, line))
                        return;
                nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        }
        _cleanup_free_ char *info = tl_redis_cmd(srv, "INFO replication");
        ck_abort_msg("port %d: no '%s' in %s", srv->port, line, strna(info));
}

static void start_replica(struct tl_redis *replica, const struct tl_redis *master) {
        char port[16];
        snprintf(port, sizeof port, "%d", master->port);
        const char *args[] = {"--replicaof", "127.0.0.1", port, NULL};
        server_start(replica, args);
        wait_info(replica, "master_link_status:up");
}

static uint16_t current_port(void) {
        uint16_t port = 0;
        ck_assert_ptr_nonnull(redis_current_server(T.redis, &port));
        return port;
}

/* Set key in a loop until OK (a failover may refuse the first tries), at most 10 s. */
static void set_eventually(const char *key, const char *value) {
        for (int i = 0; i < 100; i++) {
                struct result res = {0};
                if (redis_command(T.redis, on_reply, &res, "SET %s %s", key, value) == 0) {
                        ck_assert(wait_for(&res.called, 1, 5000));
                        if (res.error == 0 && res.type == REDIS_REPLY_STATUS)
                                return;
                }
                run_for(100);
        }
        ck_abort_msg("SET never succeeded");
}

START_TEST(test_redis_follows_replica_to_master) {
        struct tl_redis master, replica;
        setup_backend(_i);
        server_start(&master, NULL);
        start_replica(&replica, &master);
        struct redis_config cfg = config_for(&replica);
        cfg.follow_master = true;
        client_new(&cfg);
        wait_up(REDIS_LINK_COMMAND, 1);
        ck_assert_int_eq(current_port(), master.port);
        assert_set_get("followed", "yes");
        _cleanup_free_ char *v = tl_redis_cmd(&master, "GET followed");
        ck_assert_str_eq(v, "yes");
        server_stop(&replica);
        server_stop(&master);
}
END_TEST

START_TEST(test_redis_master_lost_replica_promoted) {
        /* The replica is learned from the master's INFO; once the master dies and the replica
         * is promoted, the client gets there by itself. */
        struct tl_redis master, replica;
        setup_backend(_i);
        server_start(&master, NULL);
        start_replica(&replica, &master);
        struct redis_config cfg = config_for(&master);
        cfg.follow_master = true;
        cfg.use_replicas = true;
        client_new(&cfg);
        wait_up(REDIS_LINK_COMMAND, 1);
        assert_set_get("before", "1");
        struct result res;
        command(&res, "WAIT 1 2000"); /* replicated before the kill */
        ck_assert_int_eq(res.integer, 1);
        tl_kill(&master.proc, SIGKILL);
        tl_wait(&master.proc, 5000);
        run_for(300); /* the replica alone, its master gone: not writable */
        ck_assert(!redis_is_connected(T.redis));
        _cleanup_free_ char *ok = tl_redis_cmd(&replica, "REPLICAOF NO ONE");
        ck_assert_str_eq(ok, "OK");
        wait_up(REDIS_LINK_COMMAND, 2);
        ck_assert_int_eq(current_port(), replica.port);
        set_eventually("after", "2");
        _cleanup_free_ char *v = tl_redis_cmd(&replica, "GET before");
        ck_assert_str_eq(v, "1");
        server_stop(&replica);
        free(master.proc.log);
}
END_TEST

START_TEST(test_redis_readonly_moves_to_master) {
        /* The server we use becomes a replica of another one: writes answered READONLY (or a
         * dropped connection) make the client follow it to the new master. */
        struct tl_redis a, b;
        setup_backend(_i);
        server_start(&a, NULL);
        server_start(&b, NULL);
        struct redis_config cfg = config_for(&a);
        cfg.follow_master = true;
        client_new(&cfg);
        wait_up(REDIS_LINK_COMMAND, 1);
        _cleanup_free_ char *ok = tl_redis_cmd(&a, "REPLICAOF 127.0.0.1 %d", b.port);
        ck_assert_str_eq(ok, "OK");
        wait_info(&a, "master_link_status:up");
        set_eventually("moved", "yes");
        ck_assert_int_eq(current_port(), b.port);
        _cleanup_free_ char *v = tl_redis_cmd(&b, "GET moved");
        ck_assert_str_eq(v, "yes");
        server_stop(&a);
        server_stop(&b);
}
END_TEST

START_TEST(test_redis_sentinel_names_and_switches_master) {
        /* The configured address is wrong (nothing there): the sentinel names the master.
         * Then the master dies; on +switch-master the client moves to the promoted replica. */
        struct tl_redis master, replica;
        struct tl_sentinel sentinel = {0};
        setup_backend(_i);
        server_start(&master, NULL);
        start_replica(&replica, &master);
        tl_sentinel_start(&sentinel, "main", master.port, 1, 500, 3000);
        server_record(sentinel.proc.pid);
        char addr[64];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", sentinel.port);
        char *sentinels[] = {addr, NULL};
        struct redis_config cfg = {.host = "127.0.0.1", .port = (uint16_t)tl_free_port(),
                                   .reconnect_min_ms = 20, .reconnect_max_ms = 200,
                                   .sentinels = sentinels, .master_name = "main"};
        client_new(&cfg);
        wait_up(REDIS_LINK_COMMAND, 1);
        ck_assert_int_eq(current_port(), master.port);
        assert_set_get("k", "1");
        /* The sentinel knows the replica from the master's INFO. */
        for (int i = 0; i < 200; i++) {
                _cleanup_free_ char *r = tl_sentinel_cmd(&sentinel, "SENTINEL replicas main");
                if (r && strstr(r, "flags\nslave"))
                        break;
                nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
        }
        tl_kill(&master.proc, SIGKILL);
        tl_wait(&master.proc, 5000);
        ck_assert_msg(wait_for(&T.up[REDIS_LINK_COMMAND], 2, 20000), "no switch: %s",
                      T.last_reason[REDIS_LINK_COMMAND]);
        ck_assert_int_eq(current_port(), replica.port);
        set_eventually("k2", "2");
        tl_sentinel_stop(&sentinel);
        server_stop(&replica);
        free(master.proc.log);
}
END_TEST

/* Every test runs on both loop backends: _i 0 is su_root, 1 is libevent. */
static void add_tcase(Suite *s, const char *name, const TTest *const *tests, size_t n) {
        TCase *tc = tcase_create(name);
        tcase_set_timeout(tc, 60);
        tcase_add_checked_fixture(tc, NULL, teardown);
        for (size_t i = 0; i < n; i++)
                tcase_add_loop_test(tc, tests[i], 0, 2);
        suite_add_tcase(s, tc);
}

#define ADD_TCASE(s, name, ...)                                                                    \
        do {                                                                                       \
                const TTest *const _t[] = {__VA_ARGS__};                                           \
                add_tcase(s, name, _t, ELEMENTSOF(_t));                                            \
        } while (0)

static Suite *redis_suite(void) {
        Suite *s = suite_create("redis");

        ADD_TCASE(s, "commands", test_redis_set_get, test_redis_binary_value, test_redis_hash_array,
                  test_redis_pipeline_order, test_redis_max_pending, test_redis_select_and_name, test_redis_unix_socket,
                  test_redis_bad_config);
        ADD_TCASE(s, "auth", test_redis_auth_password, test_redis_auth_wrong_password,
                  test_redis_acl_user);
        ADD_TCASE(s, "reconnect", test_redis_connect_refused_then_server_starts,
                  test_redis_server_killed_and_restarted, test_redis_command_timeout);
        ADD_TCASE(s, "pubsub", test_redis_pubsub, test_redis_unsubscribe_in_callback,
                  test_redis_pubsub_client_kill, test_redis_pubsub_keepalive_timeout);
        ADD_TCASE(s, "free", test_redis_free_with_commands_in_flight, test_redis_free_from_callbacks);
        ADD_TCASE(s, "failover", test_redis_follows_replica_to_master,
                  test_redis_master_lost_replica_promoted, test_redis_readonly_moves_to_master,
                  test_redis_sentinel_names_and_switches_master);
        return s;
}

int main(void) {
        /* Not in tl_tmpdir(): the Check helpers cannot run outside a test. */
        const char *tmp = getenv("TMPDIR");
        if (asprintf(&pid_file, "%s/sipfleet-test-redis-%d.pids", tmp ? tmp : "/tmp", (int)getpid()) < 0)
                return EXIT_FAILURE;
        int ret = tl_run(redis_suite());
        servers_kill_leftovers();
        (void)unlink(pid_file);
        free(pid_file);
        return ret;
}
