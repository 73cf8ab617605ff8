/* SPDX-License-Identifier: MIT */
/* Fork-late and store-and-forward MESSAGE in the built proxy. Devices are played by the
 * minimal UA of test/lib/sipua.h, which sees every request it receives (order, duplicates) and
 * can go away (its socket closed: the proxy's sends are refused) and come back on a new port.
 * Covers: messages to a user with no device answered 202 and delivered in order, once each,
 * when he registers; an online and an unreachable device; pending messages kept across a
 * SIGTERM and a SIGKILL of the proxy; a call that waits (fork-late) for the callee's device to
 * come back; the store limits; messages that are not stored; the delivery timeout;
 * MESSAGES_PENDING. Every case runs twice: with the embedded store (SQLite), and with the
 * registrar and the pending messages in a real redis-server. */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "sipua.h"
#include "testlib-redis.h"
#include "testlib.h"

static struct tl_proxy proxy;
static struct tl_redis redis; /* port 0: the SQLite run */
static bool internal_store;   /* the registrar in memory (its "internal" run) */

static void redis_setup(void) {
        tl_redis_start(&redis, NULL);
}

static void redis_teardown(void) {
        tl_redis_stop(&redis);
}

/* Redis: the registrar answers and the message store restored what this proxy owned. */
static void wait_ready(void) {
        for (int i = 0; i < 100; i++) {
                json_t *j = tl_ctl(proxy.sock, "REGISTRAR_GET sip:nobody@localhost");
                bool registrar = j && !json_object_get(j, "error");
                json_decref(j);
                if (registrar &&
                    tl_counter(proxy.sock, "module::Router/message-store-ready") == 1)
                        return;
                usleep(100 * 1000);
        }
        ck_abort_msg("the proxy did not get ready on Redis");
}

static void internal_setup(void) {
        internal_store = true;
}

static void internal_teardown(void) {
        internal_store = false;
}

static void start_proxy_with(const char *registrar_extra, const char *router_extra) {
        _cleanup_free_ char *db = tl_path("messages.db");
        _cleanup_free_ char *conf = NULL;
        _cleanup_free_ char *store = NULL;
        if (redis.port)
                ck_assert_int_ge(asprintf(&store,
                                          "db-implementation=redis\n"
                                          "redis-server-port=%d\n",
                                          redis.port),
                                 0);
        else if (internal_store)
                store = strdup("db-implementation=internal\n");
        else
                ck_assert_int_ge(asprintf(&store,
                                          "db-implementation=sqlite\n"
                                          "database-path=%s.registrar\n",
                                          db),
                                 0);
        ck_assert_int_ge(asprintf(&conf,
                                  "log-level=debug\n"
                                  "[module::Registrar]\n"
                                  "%s%s"
                                  "[module::Router]\n"
                                  "message-database-path=%s\n"
                                  "message-accept-timeout=2s\n"
                                  "%s",
                                  store, registrar_extra ? registrar_extra : "", db,
                                  router_extra ? router_extra : ""),
                         0);
        tl_proxy_start(&proxy, conf);
        wait_ready();
}

static void start_proxy(const char *router_extra) {
        start_proxy_with(NULL, router_extra);
}

static json_t *pending(const char *aor) {
        _cleanup_free_ char *line = NULL;
        ck_assert_int_ge(asprintf(&line, "MESSAGES_PENDING%s%s", aor ? " " : "", aor ? aor : ""),
                         0);
        json_t *j = tl_ctl(proxy.sock, line);
        json_t *list = json_object_get(j, "messages");
        ck_assert_msg(json_is_array(list), "MESSAGES_PENDING: no list");
        json_incref(list);
        json_decref(j);
        return list;
}

static size_t n_pending(const char *aor) {
        json_t *list = pending(aor);
        size_t n = json_array_size(list);
        json_decref(list);
        return n;
}

/* Receives n MESSAGEs on ua, answering each 200, and checks their bodies are prefix0..n-1 in
 * this order, each sent only after the previous one was answered (nothing else arrives while
 * one waits for its answer); then that nothing more comes within quiet_ms (no duplicate). */
static void expect_messages(struct tl_ua *ua, const char *prefix, int first, int n, int quiet_ms) {
        for (int i = first; i < first + n; i++) {
                _cleanup_free_ char *req = tl_ua_recv_request(ua, 10000);
                ck_assert_msg(req, "%s: message %d of %d not received", ua->user, i, first + n);
                _cleanup_free_ char *method = tl_sip_method(req);
                ck_assert_str_eq(method, "MESSAGE");
                _cleanup_free_ char *body = tl_sip_body(req);
                char want[64];
                snprintf(want, sizeof want, "%s%d", prefix, i);
                ck_assert_msg(streq(body, want), "%s: got '%s' where '%s' was due", ua->user, body,
                              want);
                /* Less than T1 (500 ms): a retransmission would not be a new message. */
                _cleanup_free_ char *early = tl_ua_recv_request(ua, 300);
                ck_assert_msg(!early, "%s: another request before '%s' was answered:\n%s",
                              ua->user, want, early);
                tl_ua_reply(ua, req, 200, false);
        }
        _cleanup_free_ char *more = tl_ua_recv_request(ua, quiet_ms);
        ck_assert_msg(!more, "%s received more than expected:\n%s", ua->user, more);
}

static void send_messages(struct tl_ua *from, const char *to, const char *prefix, int n,
                          int want_status) {
        for (int i = 0; i < n; i++) {
                char body[64];
                snprintf(body, sizeof body, "%s%d", prefix, i);
                int status = tl_ua_message(from, to, NULL, body, NULL, NULL, 0);
                ck_assert_int_eq(status, want_status);
        }
}

START_TEST(test_forklate_offline_recipient) {
        struct tl_ua alice, bob;
        start_proxy(NULL);
        tl_ua_open(&alice, "alice", NULL, proxy.port);
        tl_ua_open(&bob, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000b1", proxy.port);

        /* Nobody of bob's is registered: each is accepted at once. */
        send_messages(&alice, "bob", "offline-", 10, 202);
        json_t *list = pending("sip:bob@localhost");
        ck_assert_uint_eq(json_array_size(list), 10);
        json_t *first = json_array_get(list, 0);
        ck_assert_str_eq(json_string_value(json_object_get(first, "aor")), "sip:bob@localhost");
        ck_assert_str_eq(json_string_value(json_object_get(first, "from")),
                         "sip:alice@localhost");
        ck_assert_uint_eq(json_array_size(json_object_get(first, "waiting")), 0);
        json_decref(list);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::Router/pending-messages"), 10);

        ck_assert_int_eq(tl_ua_register(&bob, 600), 200);
        expect_messages(&bob, "offline-", 0, 10, 1500);
        ck_assert_uint_eq(n_pending(NULL), 0);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::Router/count-messages-stored"), 10);

        /* Online now: the next one is delivered at once and alice gets bob's 200. */
        char body[] = "online-0";
        ck_assert_int_eq(tl_ua_register(&bob, 600), 200);
        /* bob answers from this process: send without waiting, then receive. */
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                _cleanup_free_ char *req = tl_ua_recv_request(&bob, 5000);
                if (req)
                        tl_ua_reply(&bob, req, 200, false);
                _exit(req && strstr(req, body) ? 0 : 1);
        }
        ck_assert_int_eq(tl_ua_message(&alice, "bob", NULL, body, NULL, NULL, 0), 200);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "bob did not get it");
        ck_assert_uint_eq(n_pending(NULL), 0);

        tl_ua_close(&alice);
        tl_ua_close(&bob);
        tl_proxy_done(&proxy);
}
END_TEST

START_TEST(test_forklate_two_devices) {
        struct tl_ua alice, phone, tablet;
        start_proxy(NULL);
        tl_ua_open(&alice, "alice", NULL, proxy.port);
        tl_ua_open(&phone, "bob", "urn:uuid:00000000-0000-0000-0000-00000000b0b1", proxy.port);
        tl_ua_open(&tablet, "bob", "urn:uuid:00000000-0000-0000-0000-00000000b0b2", proxy.port);
        ck_assert_int_eq(tl_ua_register(&phone, 600), 200);
        ck_assert_int_eq(tl_ua_register(&tablet, 600), 200);
        /* The tablet goes away without unregistering. */
        tl_ua_close(&tablet);

        /* Two messages: the phone gets both at once; the tablet's branch fails (its port
         * refuses), the messages wait for it. alice gets 202 (no final answer from every
         * device within message-accept-timeout) or the phone's 200. */
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                int ok = 0;
                for (int i = 0; i < 2; i++) {
                        _cleanup_free_ char *req = tl_ua_recv_request(&phone, 10000);
                        char want[32];
                        snprintf(want, sizeof want, "two-%d", i);
                        if (req && strstr(req, want))
                                ok++;
                        if (req)
                                tl_ua_reply(&phone, req, 200, false);
                }
                _cleanup_free_ char *more = tl_ua_recv_request(&phone, 3000);
                _exit(ok == 2 && !more ? 0 : 1);
        }
        for (int i = 0; i < 2; i++) {
                char body[32];
                snprintf(body, sizeof body, "two-%d", i);
                int s = tl_ua_message(&alice, "bob", NULL, body, NULL, NULL, 0);
                ck_assert_msg(s == 200 || s == 202, "status %d", s);
        }
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "the phone did not get both messages exactly once");

        json_t *list = pending("sip:bob@localhost");
        ck_assert_uint_eq(json_array_size(list), 2);
        json_t *m = json_array_get(list, 0);
        ck_assert_uint_eq(json_array_size(json_object_get(m, "delivered")), 1);
        ck_assert_str_eq(json_string_value(json_array_get(json_object_get(m, "delivered"), 0)),
                         "\"<urn:uuid:00000000-0000-0000-0000-00000000b0b1>\"");
        ck_assert_uint_eq(json_array_size(json_object_get(m, "waiting")), 1);
        json_decref(list);

        /* The tablet comes back on a new port: both messages, in order, once; the phone
         * nothing more. */
        tl_ua_reopen(&tablet);
        ck_assert_int_eq(tl_ua_register(&tablet, 600), 200);
        expect_messages(&tablet, "two-", 0, 2, 1500);
        _cleanup_free_ char *extra = tl_ua_recv_request(&phone, 200);
        ck_assert_ptr_null(extra);
        ck_assert_uint_eq(n_pending(NULL), 0);

        tl_ua_close(&alice);
        tl_ua_close(&phone);
        tl_ua_close(&tablet);
        tl_proxy_done(&proxy);
}
END_TEST

static void restart_keeps_messages(int sig) {
        struct tl_ua alice, bob;
        start_proxy(NULL);
        tl_ua_open(&alice, "alice", NULL, proxy.port);
        tl_ua_open(&bob, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000b3", proxy.port);
        send_messages(&alice, "bob", "kept-", 5, 202);
        ck_assert_uint_eq(n_pending(NULL), 5);

        if (sig == SIGTERM) {
                tl_proxy_stop(&proxy);
        } else {
                tl_kill(&proxy.proc, SIGKILL);
                tl_wait(&proxy.proc, 5000);
                proxy.proc.pid = 0;
        }
        start_proxy(NULL);
        ck_assert_uint_eq(n_pending("sip:bob@localhost"), 5);
        ck_assert_int_eq(tl_ua_register(&bob, 600), 200);
        expect_messages(&bob, "kept-", 0, 5, 1500);
        ck_assert_uint_eq(n_pending(NULL), 0);

        /* Delivered ones are gone from the store too. */
        tl_proxy_stop(&proxy);
        start_proxy(NULL);
        ck_assert_uint_eq(n_pending(NULL), 0);
        tl_ua_close(&alice);
        tl_ua_close(&bob);
        tl_proxy_done(&proxy);
}

START_TEST(test_forklate_restart_sigterm) {
        restart_keeps_messages(SIGTERM);
}
END_TEST

START_TEST(test_forklate_restart_sigkill) {
        restart_keeps_messages(SIGKILL);
}
END_TEST

/* bob's only device is unreachable when the call arrives; it registers again from a new
 * address within call-fork-timeout: the INVITE reaches it, the call is established (SIPp
 * caller: INVITE, 200, ACK, BYE, 200). */
START_TEST(test_forklate_call) {
        struct tl_ua bob;
        start_proxy("fork-late=true\ncall-fork-timeout=20s\n");
        tl_ua_open(&bob, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000b4", proxy.port);
        ck_assert_int_eq(tl_ua_register(&bob, 600), 200);
        tl_ua_close(&bob);

        char remote[64];
        snprintf(remote, sizeof remote, "127.0.0.1:%d", proxy.port);
        const char *args[] = {remote, "-m", "1", "-s", "bob", NULL};
        struct tl_proc caller;
        tl_sipp_spawn(&caller, "caller", "test/sipp/uac-call.xml", 0, args);
        /* The INVITE has failed on the closed port by now and the fork waits. */
        for (int i = 0; i < 50 && tl_counter(proxy.sock, "module::Router/live-forks") == 0; i++)
                usleep(100 * 1000);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::Router/live-forks"), 1);
        usleep(500 * 1000);

        tl_ua_reopen(&bob);
        ck_assert_int_eq(tl_ua_register(&bob, 600), 200);
        _cleanup_free_ char *invite = tl_ua_recv_request(&bob, 5000);
        ck_assert_msg(invite, "the INVITE did not reach the re-registered device");
        _cleanup_free_ char *method = tl_sip_method(invite);
        ck_assert_str_eq(method, "INVITE");
        tl_ua_reply(&bob, invite, 180, false);
        tl_ua_reply(&bob, invite, 200, true);
        _cleanup_free_ char *ack = tl_ua_recv_request(&bob, 5000);
        ck_assert_msg(ack && strncmp(ack, "ACK ", 4) == 0, "no ACK: %s", strna(ack));
        _cleanup_free_ char *bye = tl_ua_recv_request(&bob, 5000);
        ck_assert_msg(bye && strncmp(bye, "BYE ", 4) == 0, "no BYE: %s", strna(bye));
        tl_ua_reply(&bob, bye, 200, false);
        ck_assert_int_eq(tl_sipp_wait(&caller, "caller", 10000), 0);
        tl_ua_close(&bob);
        tl_proxy_done(&proxy);
}
END_TEST

/* A message that is not to be stored gets the unreachable device's failure at once. */
START_TEST(test_forklate_unstored_message_fails) {
        struct tl_ua bob, alice;
        start_proxy(NULL);
        tl_ua_open(&bob, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000b5", proxy.port);
        tl_ua_open(&alice, "alice", NULL, proxy.port);
        ck_assert_int_eq(tl_ua_register(&bob, 600), 200);
        tl_ua_close(&bob);
        /* A MESSAGE with Expires: 0 is not stored: the device's failure comes back (503 is
         * sent on as 500, RFC 3261 §16.7). */
        int s = tl_ua_message(&alice, "bob", NULL, "not-kept", "Expires: 0\r\n", NULL, 0);
        ck_assert_int_eq(s, 500);
        ck_assert_uint_eq(n_pending(NULL), 0);
        tl_ua_close(&alice);
        tl_proxy_done(&proxy);
}
END_TEST

START_TEST(test_forklate_not_stored) {
        struct tl_ua alice;
        start_proxy(NULL);
        tl_ua_open(&alice, "alice", NULL, proxy.port);
        /* is-composing notices and Expires: 0 messages to nobody: 404, nothing kept. */
        int s = tl_ua_message(&alice, "bob", "application/im-iscomposing+xml",
                              "<isComposing/>", NULL, NULL, 0);
        ck_assert_int_eq(s, 404);
        s = tl_ua_message(&alice, "bob", NULL, "volatile", "Expires: 0\r\n", NULL, 0);
        ck_assert_int_eq(s, 404);
        ck_assert_uint_eq(n_pending(NULL), 0);
        tl_ua_close(&alice);
        tl_proxy_done(&proxy);
}
END_TEST

START_TEST(test_forklate_limits) {
        struct tl_ua alice;
        char resp[4096];
        start_proxy("max-pending-messages-per-aor=2\nmax-stored-message-size=600B\n");
        tl_ua_open(&alice, "alice", NULL, proxy.port);
        send_messages(&alice, "bob", "limit-", 2, 202);
        ck_assert_int_eq(tl_ua_message(&alice, "bob", NULL, "limit-2", NULL, resp, sizeof resp),
                         486);
        _cleanup_free_ char *warning = tl_sip_header(resp, "Warning");
        ck_assert_msg(warning && strstr(warning, "Too many messages"), "Warning: %s",
                      strna(warning));
        /* Another address has room, but not for a large message. */
        char big[1024];
        memset(big, 'x', sizeof big - 1);
        big[sizeof big - 1] = '\0';
        ck_assert_int_eq(tl_ua_message(&alice, "carol", NULL, big, NULL, resp, sizeof resp), 513);
        ck_assert_int_eq(tl_ua_message(&alice, "carol", NULL, "small", NULL, NULL, 0), 202);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::Router/count-messages-refused"), 2);
        ck_assert_uint_eq(n_pending(NULL), 3);
        tl_ua_close(&alice);
        tl_proxy_done(&proxy);
}
END_TEST

START_TEST(test_forklate_delivery_timeout) {
        struct tl_ua alice, bob;
        start_proxy("message-delivery-timeout=2s\n");
        tl_ua_open(&alice, "alice", NULL, proxy.port);
        tl_ua_open(&bob, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000b6", proxy.port);
        send_messages(&alice, "bob", "late-", 1, 202);
        ck_assert_uint_eq(n_pending(NULL), 1);
        for (int i = 0; i < 50 && n_pending(NULL) > 0; i++)
                usleep(100 * 1000);
        ck_assert_uint_eq(n_pending(NULL), 0);
        _cleanup_free_ char *log = tl_log(&proxy.proc);
        ck_assert_msg(strstr(log, "expired: dropped"), "no log line for the expired message");
        ck_assert_int_eq(tl_ua_register(&bob, 600), 200);
        _cleanup_free_ char *none = tl_ua_recv_request(&bob, 1000);
        ck_assert_ptr_null(none);
        tl_ua_close(&alice);
        tl_ua_close(&bob);
        tl_proxy_done(&proxy);
}
END_TEST

/* KEYS pattern, polled up to 5 s until there are some (or none). */
static char *redis_keys(const char *pattern, bool some) {
        char *keys = NULL;
        for (int i = 0; i < 50; i++) {
                free(keys);
                keys = tl_redis_cmd(&redis, "KEYS %s", pattern);
                if (keys && !!*keys == some)
                        break;
                usleep(100 * 1000);
        }
        return keys;
}

/* The Redis layout of a pending message, and its removal once delivered. */
START_TEST(test_forklate_redis_layout) {
        struct tl_ua alice, bob;
        start_proxy("message-store-node=node-x\n");
        tl_ua_open(&alice, "alice", NULL, proxy.port);
        tl_ua_open(&bob, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000b7", proxy.port);
        send_messages(&alice, "bob", "layout-", 1, 202);
        /* The write is asynchronous: it may land just after the 202. */
        _cleanup_free_ char *keys = redis_keys("fsm:msg:*", true);
        ck_assert_msg(keys && strncmp(keys, "fsm:msg:node-x:", 15) == 0 && !strchr(keys, '\n'),
                      "keys: %s", strna(keys));
        _cleanup_free_ char *aor = tl_redis_cmd(&redis, "HGET %s aor", keys);
        ck_assert_str_eq(aor, "sip:bob@localhost");
        _cleanup_free_ char *owner = tl_redis_cmd(&redis, "HGET %s owner", keys);
        ck_assert_str_eq(owner, "node-x");
        _cleanup_free_ char *request = tl_redis_cmd(&redis, "HGET %s request", keys);
        ck_assert_msg(request && strncmp(request, "MESSAGE sip:bob@localhost", 25) == 0 &&
                              strstr(request, "layout-0"),
                      "request: %s", strna(request));
        _cleanup_free_ char *ttl = tl_redis_cmd(&redis, "PTTL %s", keys);
        ck_assert_msg(ttl && atoll(ttl) > 0, "PTTL %s", strna(ttl));
        _cleanup_free_ char *owned = tl_redis_cmd(&redis, "SMEMBERS fsm:owned:node-x");
        ck_assert_str_eq(owned, keys);
        _cleanup_free_ char *nodes = tl_redis_cmd(&redis, "SMEMBERS fsm:nodes");
        ck_assert_str_eq(nodes, "node-x");
        _cleanup_free_ char *lease = tl_redis_cmd(&redis, "PTTL fsm:node:node-x");
        ck_assert_msg(lease && atoll(lease) > 0 && atoll(lease) <= 30000, "lease PTTL %s",
                      strna(lease));
        /* Not among the registrar's AORs. */
        json_t *dump = tl_ctl(proxy.sock, "REGISTRAR_DUMP");
        _cleanup_free_ char *text = json_dumps(dump, 0);
        ck_assert_msg(!strstr(text, "msg"), "%s", text);
        json_decref(dump);

        ck_assert_int_eq(tl_ua_register(&bob, 600), 200);
        expect_messages(&bob, "layout-", 0, 1, 500);
        _cleanup_free_ char *left = redis_keys("fsm:msg:*", false);
        ck_assert_msg(left && !*left, "left in Redis: %s", strna(left));
        _cleanup_free_ char *none = tl_redis_cmd(&redis, "SCARD fsm:owned:node-x");
        ck_assert_str_eq(none, "0");
        ck_assert_int_eq(tl_counter(proxy.sock, "module::Router/message-store-errors"), 0);
        tl_ua_close(&alice);
        tl_ua_close(&bob);
        tl_proxy_done(&proxy);
}
END_TEST

/* REGISTRAR_GET of aor: how many live contacts and how many kept for messages only. */
static void registrar_counts(const char *aor, size_t *live, size_t *message_only) {
        _cleanup_free_ char *line = NULL;
        ck_assert_int_ge(asprintf(&line, "REGISTRAR_GET %s", aor), 0);
        json_t *j = tl_ctl(proxy.sock, line);
        ck_assert_msg(json_is_array(json_object_get(j, "contacts")), "REGISTRAR_GET: no list");
        *live = json_array_size(json_object_get(j, "contacts"));
        *message_only = json_array_size(json_object_get(j, "message-contacts"));
        json_decref(j);
}

START_TEST(test_forklate_message_expires) {
        /* bob registers for 2 s with message-expires=60 (lowered to 30) and lets it lapse: he is no longer
         * registered (REGISTER and REGISTRAR_GET list nothing, an INVITE gets 404) but a
         * MESSAGE still goes to his device at once (alice gets his 200, nothing is stored). */
        struct tl_ua alice, bob;
        start_proxy_with("min-expires=1s\nmax-message-expires=30s\n", NULL);
        tl_ua_open(&alice, "alice", NULL, proxy.port);
        tl_ua_open(&bob, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000e1", proxy.port);
        snprintf(bob.contact_header_params, sizeof bob.contact_header_params,
                 ";message-expires=60");
        ck_assert_int_eq(tl_ua_register(&bob, 2), 200);
        _cleanup_free_ char *contact = tl_sip_header(bob.last_response, "Contact");
        ck_assert_msg(contact && strstr(contact, "message-expires=60") &&
                              strstr(contact, ";expires=2"),
                      "Contact: %s", strna(contact));
        size_t live = 0, kept = 0;
        registrar_counts("sip:bob@localhost", &live, &kept);
        ck_assert_uint_eq(live, 1);
        ck_assert_uint_eq(kept, 0);
        /* Lowered to max-message-expires. */
        json_t *j = tl_ctl(proxy.sock, "REGISTRAR_GET sip:bob@localhost");
        json_t *c = json_array_get(json_object_get(j, "contacts"), 0);
        json_int_t left = json_integer_value(json_object_get(c, "message-expires"));
        ck_assert_msg(left > 25 && left <= 30, "message-expires %lld", (long long)left);
        json_decref(j);

        /* A value that is not a number of seconds is ignored, the registration stands. */
        struct tl_ua carol;
        tl_ua_open(&carol, "carol", NULL, proxy.port);
        snprintf(carol.contact_header_params, sizeof carol.contact_header_params,
                 ";message-expires=soon");
        ck_assert_int_eq(tl_ua_register(&carol, 600), 200);
        j = tl_ctl(proxy.sock, "REGISTRAR_GET sip:carol@localhost");
        c = json_array_get(json_object_get(j, "contacts"), 0);
        ck_assert_ptr_nonnull(c);
        ck_assert_ptr_null(json_object_get(c, "message-expires"));
        json_decref(j);
        tl_ua_close(&carol);

        /* Past the expiry (polled, at most 5 s). */
        for (int i = 0; i < 50 && live > 0; i++) {
                usleep(100 * 1000);
                registrar_counts("sip:bob@localhost", &live, &kept);
        }
        ck_assert_uint_eq(live, 0);
        ck_assert_uint_eq(kept, 1);
        if (redis.port) {
                _cleanup_free_ char *ttl = tl_redis_cmd(&redis, "PTTL fs:bob@localhost");
                ck_assert_msg(ttl && atoll(ttl) > 20000, "PTTL %s", strna(ttl));
        }

        /* A REGISTER without Contact (a query) lists no binding. */
        char response[8192];
        ck_assert_int_eq(tl_ua_request(&bob, "REGISTER", "bob", NULL, NULL, "", NULL, response,
                                       sizeof response),
                         200);
        _cleanup_free_ char *listed = tl_sip_header(response, "Contact");
        ck_assert_msg(!listed, "listed: %s", listed);

        /* A call: not routed to the lapsed device. */
        ck_assert_int_eq(tl_ua_request(&alice, "INVITE", "bob", NULL, "application/sdp",
                                       "v=0\r\n", NULL, NULL, 0),
                         404);
        _cleanup_free_ char *invite = tl_ua_recv_request(&bob, 300);
        ck_assert_msg(!invite, "bob got:\n%s", invite);

        /* A message: delivered to it directly. */
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                _cleanup_free_ char *req = tl_ua_recv_request(&bob, 5000);
                if (req)
                        tl_ua_reply(&bob, req, 200, false);
                _exit(req && strncmp(req, "MESSAGE ", 8) == 0 && strstr(req, "lapsed-0") ? 0
                                                                                        : 1);
        }
        ck_assert_int_eq(tl_ua_message(&alice, "bob", NULL, "lapsed-0", NULL, NULL, 0), 200);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "bob did not get it");
        ck_assert_uint_eq(n_pending(NULL), 0);

        /* Unregistering removes it for messages too: the next one waits (202). */
        ck_assert_int_eq(tl_ua_register(&bob, 0), 200);
        registrar_counts("sip:bob@localhost", &live, &kept);
        ck_assert_uint_eq(live + kept, 0);
        send_messages(&alice, "bob", "gone-", 1, 202);
        _cleanup_free_ char *none = tl_ua_recv_request(&bob, 300);
        ck_assert_msg(!none, "bob got:\n%s", none);
        ck_assert_uint_eq(n_pending("sip:bob@localhost"), 1);
        tl_ua_close(&alice);
        tl_ua_close(&bob);
        tl_proxy_done(&proxy);
}
END_TEST

START_TEST(test_forklate_cli_errors) {
        start_proxy(NULL);
        json_t *j = tl_ctl(proxy.sock, "MESSAGES_PENDING not-an-address");
        ck_assert_ptr_nonnull(json_object_get(j, "error"));
        json_decref(j);
        j = tl_ctl(proxy.sock, "MESSAGES_PENDING a b");
        ck_assert_ptr_nonnull(json_object_get(j, "error"));
        json_decref(j);
        tl_proxy_done(&proxy);
}
END_TEST

static void add_cases(TCase *tc) {
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_forklate_offline_recipient);
        tcase_add_test(tc, test_forklate_two_devices);
        tcase_add_test(tc, test_forklate_restart_sigterm);
        tcase_add_test(tc, test_forklate_restart_sigkill);
        tcase_add_test(tc, test_forklate_call);
        tcase_add_test(tc, test_forklate_unstored_message_fails);
        tcase_add_test(tc, test_forklate_not_stored);
        tcase_add_test(tc, test_forklate_limits);
        tcase_add_test(tc, test_forklate_delivery_timeout);
        tcase_add_test(tc, test_forklate_cli_errors);
        tcase_add_test(tc, test_forklate_message_expires);
}

static Suite *forklate_suite(void) {
        Suite *s = suite_create("forklate");
        TCase *tc = tcase_create("sqlite");
        add_cases(tc);
        suite_add_tcase(s, tc);
        tc = tcase_create("redis");
        tcase_add_checked_fixture(tc, redis_setup, redis_teardown);
        add_cases(tc);
        tcase_add_test(tc, test_forklate_redis_layout);
        suite_add_tcase(s, tc);
        /* message-expires with the third registrar store. */
        tc = tcase_create("internal");
        tcase_set_timeout(tc, 60);
        tcase_add_checked_fixture(tc, internal_setup, internal_teardown);
        tcase_add_test(tc, test_forklate_message_expires);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run(forklate_suite());
}
