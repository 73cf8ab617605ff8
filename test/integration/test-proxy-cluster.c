/* SPDX-License-Identifier: MIT */
/* Two proxies of a [cluster] sharing the Redis registrar: bob registers on B, alice (the
 * caller) on A. A call to bob arriving at A goes through B (B's Path in the binding), and a
 * call to alice arriving at B goes through A; both nodes Record-Route, so the dialog's ACK and
 * BYE take the same way. Real SIPp on both ends. Fork-late across nodes: a MESSAGE held on A
 * for bob reaches him when he registers on B (the registration is published through Redis);
 * and when A dies (SIGKILL) holding a message, B takes it over from Redis and delivers it, to
 * the device that did not get it only. */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <time.h>

#include "macro.h"
#include "sipua.h"
#include "testlib-redis.h"
#include "testlib.h"

static struct tl_redis redis;
static struct tl_proxy a = {.name = "proxy-a"}, b = {.name = "proxy-b"};

static void start_node_with(struct tl_proxy *p, const char *extra) {
        tl_proxy_write_conf(p, NULL); /* picks the ports */
        _cleanup_free_ char *conf = NULL;
        ck_assert_int_ge(asprintf(&conf,
                                  "log-level=debug\n"
                                  "[cluster]\n"
                                  "enabled=true\n"
                                  "nodes=127.0.0.1\n"
                                  "cluster-domain=cluster.test\n"
                                  "internal-transport=sip:127.0.0.1:%d;transport=udp\n"
                                  "[module::Registrar]\n"
                                  "db-implementation=redis\n"
                                  "redis-server-port=%d\n"
                                  "%s",
                                  p->port, redis.port, extra ? extra : ""),
                         0);
        tl_proxy_start(p, conf);
}

static void start_node(struct tl_proxy *p) {
        start_node_with(p, NULL);
}

/* REGISTER user at node (from a SIPp on a new port, which is returned). */
static int ua_register(struct tl_proxy *node, const char *user) {
        char remote[32];
        snprintf(remote, sizeof remote, "127.0.0.1:%d", node->port);
        int port = tl_free_port();
        const char *args[] = {remote, "-m", "1", "-s", user, "-key", "q", "1", NULL};
        for (int attempt = 0; attempt < 20; attempt++) {
                struct tl_proc p;
                tl_sipp_spawn(&p, "register", "test/sipp/reg-user.xml", port, args);
                if (tl_sipp_wait(&p, "register", 20000) == 0)
                        return port; /* the first may meet Redis not connected yet: 503 */
                nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
        }
        ck_abort_msg("REGISTER of %s", user);
        return -1;
}

/* uas-answer.xml expecting two proxies on the way (Max-Forwards 68). */
static char *uas_two_hops(void) {
        _cleanup_free_ char *src = tl_source_path("test/sipp/uas-answer.xml");
        _cleanup_free_ char *text = tl_read_file(src, NULL);
        ck_assert_ptr_nonnull(text);
        char *mf = strstr(text, "Max-Forwards: 69");
        ck_assert_ptr_nonnull(mf);
        mf[strlen("Max-Forwards: 6")] = '8';
        return tl_write_file("uas-answer-two-hops.xml", text);
}

/* callee (registered from callee_port) called through entry; the callee's SIPp checks the
 * request came through two proxies, each Record-Routing. */
static void call(struct tl_proxy *entry, const char *callee, int callee_port, int caller_port) {
        _cleanup_free_ char *uas = uas_two_hops();
        const char *uas_args[] = {"-m", "1", "-s", callee, NULL};
        struct tl_proc callee_proc;
        tl_sipp_spawn(&callee_proc, callee, uas, callee_port, uas_args);
        char remote[32];
        snprintf(remote, sizeof remote, "127.0.0.1:%d", entry->port);
        const char *args[] = {remote, "-m", "1", "-s", callee, NULL};
        struct tl_proc caller;
        tl_sipp_spawn(&caller, "caller", "test/sipp/uac-call.xml", caller_port, args);
        ck_assert_msg(tl_sipp_wait(&caller, "caller", 30000) == 0, "call to %s", callee);
        ck_assert_msg(tl_sipp_wait(&callee_proc, callee, 30000) == 0, "%s answered", callee);
}

START_TEST(test_cluster_calls_go_through_the_node_of_the_callee) {
        tl_redis_start_on(&redis, 0, NULL);
        start_node(&a);
        start_node(&b);

        int bob_port = ua_register(&b, "bob");
        int alice_port = ua_register(&a, "caller");

        /* The binding names B first: the way to bob from any node. */
        json_t *j = tl_ctl(a.sock, "REGISTRAR_GET sip:bob@localhost");
        json_t *path = json_object_get(json_array_get(json_object_get(j, "contacts"), 0), "path");
        char want[64];
        snprintf(want, sizeof want, "<sip:127.0.0.1:%d;transport=udp;lr>", b.port);
        ck_assert_msg(json_is_string(json_array_get(path, 0)) &&
                              streq(json_string_value(json_array_get(path, 0)), want),
                      "path of bob: %s", json_dumps(path, 0));
        json_decref(j);

        /* alice (on A) calls bob (on B) through A. */
        call(&a, "bob", bob_port, alice_port);
        ck_assert_int_eq(tl_counter(a.sock, "global/count-incoming-request-invite"), 1);
        ck_assert_int_eq(tl_counter(b.sock, "global/count-incoming-request-invite"), 1);
        ck_assert_int_eq(tl_counter(b.sock, "global/count-incoming-request-bye"), 1);

        /* The other way: a call to alice (registered on A) arriving at B. */
        call(&b, "caller", alice_port, 0);
        ck_assert_int_eq(tl_counter(a.sock, "global/count-incoming-request-invite"), 2);
        ck_assert_int_eq(tl_counter(b.sock, "global/count-incoming-request-invite"), 2);

        tl_proxy_stop(&a);
        tl_proxy_stop(&b);
        tl_proxy_done(&a);
        tl_proxy_done(&b);
        tl_redis_stop(&redis);
}
END_TEST

static size_t pending_on(struct tl_proxy *p) {
        json_t *j = tl_ctl(p->sock, "MESSAGES_PENDING");
        size_t n = json_array_size(json_object_get(j, "messages"));
        json_decref(j);
        return n;
}

START_TEST(test_cluster_message_held_on_a_reaches_bob_on_b) {
        tl_redis_start_on(&redis, 0, NULL);
        start_node(&a);
        start_node(&b);
        struct tl_ua alice, bob;
        tl_ua_open(&alice, "alice", NULL, a.port);
        tl_ua_open(&bob, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000c1", b.port);

        /* bob has no device: A keeps the message (503 only until A reaches Redis). */
        int status = 0;
        for (int i = 0; i < 50; i++) {
                status = tl_ua_message(&alice, "bob", NULL, "held-on-a", NULL, NULL, 0);
                if (status != 503)
                        break;
                nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
        }
        ck_assert_int_eq(status, 202);
        ck_assert_uint_eq(pending_on(&a), 1);

        for (int i = 0; i < 50 && (status = tl_ua_register(&bob, 600)) == 503; i++)
                nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
        ck_assert_int_eq(status, 200);
        _cleanup_free_ char *msg = tl_ua_recv_request(&bob, 5000);
        ck_assert_msg(msg, "the message held on A did not reach bob registered on B");
        _cleanup_free_ char *body = tl_sip_body(msg);
        ck_assert_str_eq(body, "held-on-a");
        tl_ua_reply(&bob, msg, 200, false);
        /* Through B, bob's node (its Path). */
        ck_assert_int_eq(tl_counter(b.sock, "global/count-incoming-request-message"), 1);
        for (int i = 0; i < 50 && pending_on(&a) > 0; i++)
                nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
        ck_assert_uint_eq(pending_on(&a), 0);

        tl_ua_close(&alice);
        tl_ua_close(&bob);
        tl_proxy_done(&a);
        tl_proxy_done(&b);
        tl_redis_stop(&redis);
}
END_TEST

static void wait_store_ready(struct tl_proxy *p) {
        for (int i = 0; i < 100; i++) {
                if (tl_counter(p->sock, "module::Router/message-store-ready") == 1)
                        return;
                usleep(100 * 1000);
        }
        ck_abort_msg("%s: the message store did not get ready", p->name);
}

static int register_ua(struct tl_ua *ua) {
        int status = 0;
        for (int i = 0; i < 50 && (status = tl_ua_register(ua, 600)) == 503; i++)
                usleep(100 * 1000);
        return status;
}

/* bob has two devices registered on A; the tablet is unreachable. A message from alice reaches
 * the phone and waits (on A, in Redis) for the tablet. A is SIGKILLed; the tablet comes back
 * and registers on B: B takes the message over once A's lease is gone (2 s) and delivers it to
 * the tablet, once; the phone does not get it again. */
START_TEST(test_cluster_message_taken_over_when_a_dies) {
        tl_redis_start_on(&redis, 0, NULL);
        const char *router = "[module::Router]\nmessage-store-owner-ttl=2s\n"
                             "message-accept-timeout=1s\n";
        start_node_with(&a, router);
        start_node_with(&b, router);
        wait_store_ready(&a);
        wait_store_ready(&b);
        struct tl_ua alice, phone, tablet;
        tl_ua_open(&alice, "alice", NULL, a.port);
        tl_ua_open(&phone, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000d1", a.port);
        tl_ua_open(&tablet, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000d2", a.port);
        ck_assert_int_eq(register_ua(&phone), 200);
        ck_assert_int_eq(register_ua(&tablet), 200);
        tl_ua_close(&tablet);

        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                _cleanup_free_ char *req = tl_ua_recv_request(&phone, 10000);
                if (req)
                        tl_ua_reply(&phone, req, 200, false);
                _exit(req && strstr(req, "survives-a") ? 0 : 1);
        }
        int status = tl_ua_message(&alice, "bob", NULL, "survives-a", NULL, NULL, 0);
        ck_assert_msg(status == 200 || status == 202, "status %d", status);
        int ws;
        ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
        ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "the phone did not get it");
        /* A holds it, and Redis knows the phone got it. */
        json_t *j = NULL;
        for (int i = 0; i < 50; i++) {
                json_decref(j);
                j = tl_ctl(a.sock, "MESSAGES_PENDING");
                json_t *m = json_array_get(json_object_get(j, "messages"), 0);
                if (m && json_array_size(json_object_get(m, "delivered")) == 1)
                        break;
                usleep(100 * 1000);
        }
        ck_assert_uint_eq(json_array_size(json_object_get(j, "messages")), 1);
        json_decref(j);
        _cleanup_free_ char *key = NULL;
        for (int i = 0; i < 50; i++) {
                free(key);
                key = tl_redis_cmd(&redis, "KEYS fsm:msg:*");
                _cleanup_free_ char *d = key && *key ? tl_redis_cmd(&redis,
                        "HGET %s d:\"<urn:uuid:00000000-0000-0000-0000-0000000000d1>\"", key)
                                                    : NULL;
                if (d && streq(d, "200"))
                        break;
                usleep(100 * 1000);
        }
        char node_a[64];
        snprintf(node_a, sizeof node_a, "fsm:msg:sip:127.0.0.1:%d;transport=udp:", a.port);
        ck_assert_msg(key && strncmp(key, node_a, strlen(node_a)) == 0, "key %s", strna(key));
        ck_assert_uint_eq(pending_on(&b), 0);

        tl_kill(&a.proc, SIGKILL);
        tl_wait(&a.proc, 5000);
        a.proc.pid = 0;

        tl_ua_reopen(&tablet);
        tl_ua_close(&phone);
        tl_ua_open(&phone, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000d1", b.port);
        tablet.proxy_port = b.port;
        ck_assert_int_eq(register_ua(&tablet), 200);
        ck_assert_int_eq(register_ua(&phone), 200);
        _cleanup_free_ char *msg = tl_ua_recv_request(&tablet, 10000);
        ck_assert_msg(msg, "the message held by the dead proxy did not reach the tablet");
        _cleanup_free_ char *body = tl_sip_body(msg);
        ck_assert_str_eq(body, "survives-a");
        tl_ua_reply(&tablet, msg, 200, false);
        _cleanup_free_ char *again = tl_ua_recv_request(&tablet, 1500);
        ck_assert_msg(!again, "the tablet got it twice:\n%s", again);
        _cleanup_free_ char *dup = tl_ua_recv_request(&phone, 500);
        ck_assert_msg(!dup, "the phone got it again:\n%s", dup);
        for (int i = 0; i < 50 && pending_on(&b) > 0; i++)
                usleep(100 * 1000);
        ck_assert_uint_eq(pending_on(&b), 0);
        _cleanup_free_ char *left = NULL;
        for (int i = 0; i < 50; i++) {
                free(left);
                left = tl_redis_cmd(&redis, "KEYS fsm:msg:*");
                if (left && !*left)
                        break;
                usleep(100 * 1000);
        }
        ck_assert_msg(left && !*left, "left in Redis: %s", strna(left));
        _cleanup_free_ char *log = tl_log(&b.proc);
        ck_assert_msg(strstr(log, "Took over 1 pending message"), "B did not log the takeover");

        tl_ua_close(&alice);
        tl_ua_close(&phone);
        tl_ua_close(&tablet);
        tl_proxy_done(&a);
        tl_proxy_done(&b);
        tl_redis_stop(&redis);
}
END_TEST

/* Messages for bob held by A (the first and third) and B (the second): A dies, B takes its two
 * over and puts them in arrival order among its own; bob, registering on B, gets the three in
 * the order alice sent them. */
START_TEST(test_cluster_takeover_keeps_arrival_order) {
        tl_redis_start_on(&redis, 0, NULL);
        const char *router = "[module::Router]\nmessage-store-owner-ttl=2s\n";
        start_node_with(&a, router);
        start_node_with(&b, router);
        wait_store_ready(&a);
        wait_store_ready(&b);
        struct tl_ua alice_a, alice_b, bob;
        tl_ua_open(&alice_a, "alice", NULL, a.port);
        tl_ua_open(&alice_b, "alice", NULL, b.port);
        tl_ua_open(&bob, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000e1", b.port);
        struct tl_ua *via[] = {&alice_a, &alice_b, &alice_a};
        for (int i = 0; i < 3; i++) {
                char body[16];
                snprintf(body, sizeof body, "order-%d", i);
                int status = 0;
                for (int k = 0; k < 50; k++) {
                        status = tl_ua_message(via[i], "bob", NULL, body, NULL, NULL, 0);
                        if (status != 503)
                                break;
                        usleep(100 * 1000);
                }
                ck_assert_int_eq(status, 202);
                usleep(20 * 1000);
        }
        ck_assert_uint_eq(pending_on(&a), 2);
        ck_assert_uint_eq(pending_on(&b), 1);
        /* The writes are asynchronous: both of A's are in Redis before it dies. */
        for (int i = 0; i < 50; i++) {
                _cleanup_free_ char *n = NULL;
                char cmd[96];
                snprintf(cmd, sizeof cmd, "SCARD fsm:owned:sip:127.0.0.1:%d;transport=udp",
                         a.port);
                n = tl_redis_cmd(&redis, "%s", cmd);
                if (n && streq(n, "2"))
                        break;
                usleep(100 * 1000);
        }
        tl_kill(&a.proc, SIGKILL);
        tl_wait(&a.proc, 5000);
        a.proc.pid = 0;
        for (int i = 0; i < 100 && pending_on(&b) < 3; i++)
                usleep(100 * 1000);
        ck_assert_uint_eq(pending_on(&b), 3);

        ck_assert_int_eq(register_ua(&bob), 200);
        for (int i = 0; i < 3; i++) {
                _cleanup_free_ char *msg = tl_ua_recv_request(&bob, 10000);
                ck_assert_msg(msg, "message %d not received", i);
                _cleanup_free_ char *body = tl_sip_body(msg);
                char want[16];
                snprintf(want, sizeof want, "order-%d", i);
                ck_assert_msg(streq(body, want), "got '%s' where '%s' was due", body, want);
                tl_ua_reply(&bob, msg, 200, false);
        }
        _cleanup_free_ char *more = tl_ua_recv_request(&bob, 1000);
        ck_assert_msg(!more, "bob got more:\n%s", more);

        tl_ua_close(&alice_a);
        tl_ua_close(&alice_b);
        tl_ua_close(&bob);
        tl_proxy_done(&a);
        tl_proxy_done(&b);
        tl_redis_stop(&redis);
}
END_TEST

/* A holds a message for bob and is cut off (SIGSTOP) for longer than the owner TTL: B takes the
 * message over. When A comes back, it learns that its lease had expired and drops its copy;
 * bob, registering afterwards, gets the message once (from B), not from both. */
START_TEST(test_cluster_cut_off_holder_drops_taken_messages) {
        tl_redis_start_on(&redis, 0, NULL);
        const char *router = "[module::Router]\nmessage-store-owner-ttl=2s\n";
        start_node_with(&a, router);
        start_node_with(&b, router);
        wait_store_ready(&a);
        wait_store_ready(&b);
        struct tl_ua alice, bob;
        tl_ua_open(&alice, "alice", NULL, a.port);
        tl_ua_open(&bob, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000f1", b.port);
        int status = 0;
        for (int k = 0; k < 50; k++) {
                status = tl_ua_message(&alice, "bob", NULL, "cut-off", NULL, NULL, 0);
                if (status != 503)
                        break;
                usleep(100 * 1000);
        }
        ck_assert_int_eq(status, 202);
        char owned[96];
        snprintf(owned, sizeof owned, "SCARD fsm:owned:sip:127.0.0.1:%d;transport=udp", a.port);
        for (int i = 0; i < 50; i++) {
                _cleanup_free_ char *n = tl_redis_cmd(&redis, "%s", owned);
                if (n && streq(n, "1"))
                        break;
                usleep(100 * 1000);
        }

        tl_freeze(&a.proc);
        for (int i = 0; i < 100 && pending_on(&b) == 0; i++)
                usleep(100 * 1000);
        ck_assert_uint_eq(pending_on(&b), 1);
        tl_kill(&a.proc, SIGCONT);
        for (int i = 0; i < 50 && pending_on(&a) > 0; i++)
                usleep(100 * 1000);
        ck_assert_uint_eq(pending_on(&a), 0);
        _cleanup_free_ char *log = tl_log(&a.proc);
        ck_assert_msg(strstr(log, "is held by another proxy now"), "A did not drop its copy");
        ck_assert_int_ge(tl_counter(a.sock, "module::Router/message-store-errors"), 1);

        ck_assert_int_eq(register_ua(&bob), 200);
        _cleanup_free_ char *msg = tl_ua_recv_request(&bob, 10000);
        ck_assert_msg(msg, "bob did not get the message");
        _cleanup_free_ char *body = tl_sip_body(msg);
        ck_assert_str_eq(body, "cut-off");
        tl_ua_reply(&bob, msg, 200, false);
        _cleanup_free_ char *again = tl_ua_recv_request(&bob, 1500);
        ck_assert_msg(!again, "bob got it twice:\n%s", again);

        tl_ua_close(&alice);
        tl_ua_close(&bob);
        tl_proxy_done(&a);
        tl_proxy_done(&b);
        tl_redis_stop(&redis);
}
END_TEST

/* Two proxies given the same message-store-node: each finds the other's token in the lease
 * and says so (and counts it). */
START_TEST(test_cluster_duplicate_node_name_is_reported) {
        tl_redis_start_on(&redis, 0, NULL);
        const char *router = "[module::Router]\nmessage-store-owner-ttl=2s\n"
                             "message-store-node=twin\n";
        start_node_with(&a, router);
        start_node_with(&b, router);
        wait_store_ready(&a);
        wait_store_ready(&b);
        bool reported = false;
        for (int i = 0; i < 50 && !reported; i++) {
                _cleanup_free_ char *la = tl_log(&a.proc), *lb = tl_log(&b.proc);
                reported = strstr(la, "another proxy uses the node name 'twin'") ||
                           strstr(lb, "another proxy uses the node name 'twin'");
                if (!reported)
                        usleep(100 * 1000);
        }
        ck_assert_msg(reported, "the duplicate node name was not reported");
        ck_assert_int_ge(tl_counter(a.sock, "module::Router/message-store-errors") +
                                 tl_counter(b.sock, "module::Router/message-store-errors"),
                         1);
        tl_proxy_done(&a);
        tl_proxy_done(&b);
        tl_redis_stop(&redis);
}
END_TEST

/* The proxy refuses to start with conf, saying message. */
static void expect_refused(struct tl_proxy *p, const char *conf, const char *message) {
        tl_proxy_write_conf(p, conf);
        _cleanup_free_ char *bin = tl_build_path("proxy/sipfleet-proxy");
        char *argv[] = {bin, "--config", p->conf, NULL};
        free(p->proc.log);
        tl_spawn(p->name, argv, &p->proc);
        int status = tl_wait(&p->proc, 10000);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0);
        _cleanup_free_ char *log = tl_log(&p->proc);
        ck_assert_msg(strstr(log, message), "%s", log);
}

START_TEST(test_cluster_bad_config_refused) {
        struct tl_proxy p = {.name = "proxy-bad"};
        /* internal-transport must be one of the node's transports. */
        expect_refused(&p, "[cluster]\nenabled=true\nnodes=127.0.0.1\n"
                           "internal-transport=sip:127.0.0.1:1;transport=udp\n",
                       "is not one of this proxy's transports");
        /* Nodes are IP addresses (checked after internal-transport: give a valid one). */
        _cleanup_free_ char *conf = NULL;
        ck_assert_int_ge(asprintf(&conf,
                                  "[cluster]\nenabled=true\nnodes=not-an-ip\n"
                                  "internal-transport=sip:127.0.0.1:%d\n",
                                  p.port),
                         0);
        expect_refused(&p, conf, "'not-an-ip' is not an IP address");
        expect_refused(&p, "[cluster]\nenabled=true\nnodes=127.0.0.1\n",
                       "enabled=true needs internal-transport");
        /* The keys of pending messages must not fall under the registrar's prefix (its SCAN
         * would take them for AORs). */
        expect_refused(&p, "[module::Registrar]\ndb-implementation=redis\n"
                           "[module::Router]\nmessage-redis-key-prefix=fs:msg:\n",
                       "must not overlap the registrar's redis-key-prefix");
        expect_refused(&p, "[module::Registrar]\ndb-implementation=redis\n"
                           "[module::Router]\nmessage-store-owner-ttl=0\n",
                       "message-store-owner-ttl must be at least 1s");
        tl_proxy_done(&p);
}
END_TEST

int main(void) {
        Suite *s = suite_create("proxy-cluster");
        TCase *tc = tcase_create("cluster");
        tcase_set_timeout(tc, 90);
        tcase_add_test(tc, test_cluster_calls_go_through_the_node_of_the_callee);
        tcase_add_test(tc, test_cluster_message_held_on_a_reaches_bob_on_b);
        tcase_add_test(tc, test_cluster_message_taken_over_when_a_dies);
        tcase_add_test(tc, test_cluster_takeover_keeps_arrival_order);
        tcase_add_test(tc, test_cluster_cut_off_holder_drops_taken_messages);
        tcase_add_test(tc, test_cluster_duplicate_node_name_is_reported);
        tcase_add_test(tc, test_cluster_bad_config_refused);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
