/* SPDX-License-Identifier: MIT */
/* liblinphone and the presence server: two lp-ua clients register through the built proxy,
 * whose [module::Presence] sends their PUBLISH and SUBSCRIBE to the built sipfleet-presence.
 * alice publishes online, then away, then online again; bob, who watches her as a friend
 * (a plain subscription, then through a friend list with an RLS address: one list
 * subscription with the list in its body), must see away and then online. The presence server has a
 * loopback address of its own (127.0.0.2): requests from its host are its own and never routed back
 * to it. Every client runs under its own --max-time; every wait here is bounded. */
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>

#include "macro.h"
#include "testlib.h"

#define UA_MAX_TIME     "40"
#define WATCH_MAX_TIME  "30"
#define EXIT_TIMEOUT_MS 45000

static struct tl_proc *started[4];
static struct tl_proxy proxy;
static struct tl_daemon presence;

static void kill_all(void) {
        for (size_t i = 0; i < ELEMENTSOF(started); i++)
                if (started[i] && started[i]->pid > 0)
                        kill(started[i]->pid, SIGKILL);
        tl_kill(&proxy.proc, SIGKILL);
        tl_kill(&presence.proc, SIGKILL);
}

static void ua_start(struct tl_proc *p, const char *name, const char *const *args) {
        _cleanup_free_ char *bin = tl_build_path("test/ua/lp-ua");
        _cleanup_free_ char *proxy_uri = NULL;
        ck_assert_int_ge(asprintf(&proxy_uri, "sip:127.0.0.1:%d;transport=udp", proxy.port), 0);
        const char *argv[24] = {bin, "--proxy", proxy_uri, "--expires", "120"};
        size_t n = 5;
        for (; *args; args++) {
                ck_assert_uint_lt(n, ELEMENTSOF(argv) - 1);
                argv[n++] = *args;
        }
        argv[n] = NULL;
        for (size_t i = 0; i < ELEMENTSOF(started); i++)
                if (!started[i]) {
                        started[i] = p;
                        break;
                }
        /* The client's private directory goes inside the test's, removed with it. */
        _cleanup_free_ char *tmpdir = getenv("TMPDIR") ? strdup(getenv("TMPDIR")) : NULL;
        setenv("TMPDIR", tl_tmpdir(), 1);
        /* In the sanitizer build, liblinphone's presence parsing leaves a few libxml2 objects
         * behind (264 bytes, stacks inside libxml2 only), and its capabilities code (parsing
         * the OMA service descriptions, asking a capability's version) leaks its map entries
         * and their strings: suppressed for the client alone, with full stacks so that the
         * liblinphone frames match; the daemons under test keep the full leak check. */
        _cleanup_free_ char *supp = tl_write_file(
                "lsan-lp-ua.supp", "leak:libxml2.so\n"
                                   "leak:linphone_presence_service_add_capability\n"
                                   "leak:linphone_notify_parse_presence\n"
                                   "leak:linphone_presence_service_get_capability_version\n");
        _cleanup_free_ char *lsan = NULL;
        ck_assert_int_ge(asprintf(&lsan,
                                  "suppressions=%s:print_suppressions=0:fast_unwind_on_malloc=0",
                                  supp),
                         0);
        setenv("LSAN_OPTIONS", lsan, 1);
        tl_spawn(name, (char *const *)argv, p);
        unsetenv("LSAN_OPTIONS");
        if (tmpdir)
                setenv("TMPDIR", tmpdir, 1);
        else
                unsetenv("TMPDIR");
}

static int ua_wait(struct tl_proc *p, const char *name) {
        int st = tl_wait(p, EXIT_TIMEOUT_MS);
        if (st == -ETIMEDOUT) {
                tl_kill(p, SIGKILL);
                st = tl_wait(p, 5000);
        }
        for (size_t i = 0; i < ELEMENTSOF(started); i++)
                if (started[i] == p)
                        started[i] = NULL;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                _cleanup_free_ char *log = tl_log(p);
                fprintf(stderr, "---- %s (status %d) ----\n%s", name, st, log);
        }
        return st;
}

static void run_watch(const char *rls) {
        struct tl_proc alice, bob;
        const char *alice_args[] = {"--identity",         "sip:alice@localhost", "--presence",
                                    "online,away,online", "--presence-interval", "4",
                                    "--max-time",         UA_MAX_TIME,           NULL};
        ua_start(&alice, "alice", alice_args);
        const char *bob_args[] = {"--identity",
                                  "sip:bob@localhost",
                                  "--watch",
                                  "sip:alice@localhost",
                                  "--expect",
                                  "away,online",
                                  "--max-time",
                                  WATCH_MAX_TIME,
                                  rls ? "--rls" : NULL,
                                  rls,
                                  NULL};
        ua_start(&bob, "bob", bob_args);
        int st = ua_wait(&bob, "bob");
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "bob did not see alice's changes");
        _cleanup_free_ char *log = tl_log(&bob);
        ck_assert_ptr_nonnull(strstr(log, "event=presence-received uri=sip:alice@localhost "
                                          "state=away"));
        free(bob.log);
        tl_kill(&alice, SIGTERM);
        st = ua_wait(&alice, "alice");
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "alice did not exit cleanly");
        _cleanup_free_ char *alog = tl_log(&alice);
        ck_assert_ptr_nonnull(strstr(alog, "event=presence-published state=away"));
        free(alice.log);
}

static void setup(void) {
        int port = tl_free_port();
        _cleanup_free_ char *pconf = NULL, *xconf = NULL;
        ck_assert_int_ge(asprintf(&pconf, "log-level=debug\ntransports=sip:127.0.0.2:%d\n", port),
                         0);
        tl_daemon_start(&presence, "presence", pconf);
        ck_assert_int_ge(asprintf(&xconf,
                                  "log-level=debug\n"
                                  "[module::Registrar]\nreg-domains=localhost\n"
                                  "db-implementation=internal\n"
                                  "[module::Presence]\nenabled=true\n"
                                  "presence-server=sip:127.0.0.2:%d;transport=tcp\n",
                                  port),
                         0);
        tl_proxy_start(&proxy, xconf);
}

static void teardown(void) {
        tl_proxy_done(&proxy);
        tl_daemon_done(&presence);
}

START_TEST(test_presence_linphone_friend) {
        setup();
        run_watch(NULL);
        ck_assert_int_ge(tl_counter(presence.sock, "presence/count-publish-new"), 1);
        ck_assert_int_ge(tl_counter(presence.sock, "presence/count-notify-sent"), 2);
        teardown();
}
END_TEST

/* Long-term presence with capabilities: alice registers with +org.linphone.specs through the
 * proxy on the Redis registrar and publishes nothing; the presence server finds her account
 * and reads her device in the registrar; bob, watching her, sees her online with the
 * capabilities liblinphone finds in the PIDF (its friend capabilities). */
START_TEST(test_presence_linphone_capabilities) {
        struct tl_redis redis = {0};
        tl_redis_start(&redis, NULL);
        int port = tl_free_port();
        _cleanup_free_ char *pw = tl_write_file("passwords", "version:1\n"
                                                             "alice@localhost clrtxt:a ;\n"
                                                             "bob@localhost clrtxt:b ;\n");
        _cleanup_free_ char *pconf = NULL, *xconf = NULL;
        ck_assert_int_ge(asprintf(&pconf,
                                  "log-level=debug\ntransports=sip:127.0.0.2:%d\n"
                                  "[presence]\nlong-term-enabled=true\n"
                                  "[accounts]\nfile-path=%s\n"
                                  "[registrar]\nredis-server-domain=127.0.0.1\n"
                                  "redis-server-port=%d\n",
                                  port, pw, redis.port),
                         0);
        tl_daemon_start(&presence, "presence", pconf);
        ck_assert_int_ge(asprintf(&xconf,
                                  "log-level=debug\n"
                                  "[module::Registrar]\nreg-domains=localhost\n"
                                  "db-implementation=redis\nredis-server-port=%d\n"
                                  "[module::Presence]\nenabled=true\n"
                                  "presence-server=sip:127.0.0.2:%d;transport=tcp\n",
                                  redis.port, port),
                         0);
        tl_proxy_start(&proxy, xconf);

        struct tl_proc alice, bob;
        const char *alice_args[] = {"--identity", "sip:alice@localhost", "--specs",
                                    "groupchat/1.1,lime,ephemeral/1.1", "--max-time",
                                    UA_MAX_TIME, NULL};
        ua_start(&alice, "alice", alice_args);
        /* Her binding, with the specs, in the registrar (bounded wait). */
        bool bound = false;
        _cleanup_free_ char *binding = NULL;
        for (int i = 0; i < 200 && !bound; i++) {
                free(binding);
                binding = tl_redis_cmd(&redis, "HVALS fs:alice@localhost");
                bound = binding && strstr(binding, "+org.linphone.specs");
                if (!bound)
                        nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
        }
        ck_assert_msg(bound, "alice's binding with +org.linphone.specs never reached Redis");

        const char *bob_args[] = {"--identity", "sip:bob@localhost", "--watch",
                                  "sip:alice@localhost", "--expect", "online", "--max-time",
                                  WATCH_MAX_TIME, NULL};
        ua_start(&bob, "bob", bob_args);
        int st = ua_wait(&bob, "bob");
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "bob did not see alice online");
        _cleanup_free_ char *log = tl_log(&bob);
        ck_assert_msg(strstr(log, "event=presence-received uri=sip:alice@localhost state=online "
                                  "capabilities=groupchat,lime,ephemeral, "
                                  "groupchat-version=1.1"),
                      "binding %s\nbob: %s", binding, log);
        free(bob.log);
        tl_kill(&alice, SIGTERM);
        st = ua_wait(&alice, "alice");
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "alice did not exit cleanly");
        free(alice.log);
        ck_assert_int_eq(tl_counter(presence.sock, "presence/count-publish-new"), 0);
        ck_assert_int_ge(tl_counter(presence.sock, "presence/count-devices-read"), 1);
        teardown();
        tl_redis_stop(&redis);
}
END_TEST

START_TEST(test_presence_linphone_friend_list) {
        setup();
        run_watch("sip:bob-friends@localhost");
        ck_assert_int_ge(tl_counter(presence.sock, "presence/count-subscribe-list"), 1);
        teardown();
}
END_TEST

int main(void) {
        atexit(kill_all);
        Suite *s = suite_create("presence-linphone");
        TCase *tc = tcase_create("linphone");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_presence_linphone_friend);
        tcase_add_test(tc, test_presence_linphone_friend_list);
        tcase_add_test(tc, test_presence_linphone_capabilities);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
