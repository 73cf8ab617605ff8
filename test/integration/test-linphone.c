/* SPDX-License-Identifier: MIT */
/* liblinphone user agents (test/ua/lp-ua) through the built proxy, over UDP and over TLS: two
 * UAs register and the registrar shows their bindings; then alice calls bob, who answers, the
 * call reaches StreamsRunning on both sides, RTP flows both ways over loopback (a generated
 * tone: no sound card), alice hangs up and both see the call end. Every UA runs under its own
 * --max-time, and every wait here is bounded. */
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>

#include "macro.h"
#include "testlib.h"

/* Each UA gives up by itself after this many seconds (exit status 3). */
#define UA_MAX_TIME         "30"
#define REGISTER_TIMEOUT_MS 10000
/* alice: register, call, 2 s of established call, hang up, unregister. */
#define CALL_DURATION   "2"
#define CALL_TIMEOUT_MS 25000
#define EXIT_TIMEOUT_MS 10000

struct ua {
        const char *name;
        struct tl_proc proc;
        int status; /* wait status, once exited */
        bool exited;
};

/* The proxy's config: debug log; the registrar in memory for localhost. */
static const char *proxy_conf(const char *tls_dir) {
        static char text[1024];
        snprintf(text, sizeof text,
                 "log-level=debug\n"
                 "%s%s%s"
                 "[module::Registrar]\n"
                 "reg-domains=localhost\n"
                 "db-implementation=internal\n",
                 tls_dir ? "tls-certificates-dir=" : "", tls_dir ? tls_dir : "",
                 tls_dir ? "\n" : "");
        return text;
}

/* Every UA started and the proxy, killed at exit if still running (a failed assertion ends
 * the test process with exit()). */
static struct ua *started[8];
static struct tl_proxy *running_proxy;

static void kill_uas(void) {
        for (size_t i = 0; i < ELEMENTSOF(started); i++)
                if (started[i] && !started[i]->exited && started[i]->proc.pid > 0)
                        kill(started[i]->proc.pid, SIGKILL);
        if (running_proxy)
                tl_kill(&running_proxy->proc, SIGKILL);
}

static void proxy_start(struct tl_proxy *f, const char *tls_dir) {
        running_proxy = f;
        tl_proxy_start(f, proxy_conf(tls_dir));
}

static void proxy_done(struct tl_proxy *f) {
        running_proxy = NULL;
        tl_proxy_done(f);
}

/* Starts lp-ua for identity through proxy_uri; ca_file (may be NULL) is its trusted CA; args
 * (NULL-terminated, may be NULL) follow. */
static void ua_start(struct ua *ua, const char *name, const char *identity, const char *proxy_uri,
                     const char *ca_file, const char *const *args) {
        _cleanup_free_ char *bin = tl_build_path("test/ua/lp-ua");
        const char *argv[32] = {bin, "--identity", identity, "--proxy", proxy_uri,
                                "--expires", "120", "--max-time", UA_MAX_TIME};
        size_t n = 9;
        if (ca_file) {
                argv[n++] = "--ca-file";
                argv[n++] = ca_file;
        }
        for (; args && *args; args++) {
                ck_assert_uint_lt(n, ELEMENTSOF(argv) - 1);
                argv[n++] = *args;
        }
        argv[n] = NULL;

        *ua = (struct ua){.name = name};
        for (size_t i = 0; i < ELEMENTSOF(started); i++)
                if (!started[i]) {
                        started[i] = ua;
                        break;
                }
        /* The UA's private directory goes inside ours, removed with it even when the UA is
         * killed. */
        _cleanup_free_ char *tmpdir = getenv("TMPDIR") ? strdup(getenv("TMPDIR")) : NULL;
        setenv("TMPDIR", tl_tmpdir(), 1);
        tl_spawn(name, (char *const *)argv, &ua->proc);
        if (tmpdir)
                setenv("TMPDIR", tmpdir, 1);
        else
                unsetenv("TMPDIR");
}

/* Reaps the UA if it has exited; true then. */
static bool ua_reap(struct ua *ua) {
        if (ua->exited)
                return true;
        int status;
        pid_t r = waitpid(ua->proc.pid, &status, WNOHANG);
        if (r != ua->proc.pid)
                return false;
        ua->proc.pid = 0;
        ua->status = status;
        ua->exited = true;
        return true;
}

/* The UA's log (stdout events and stderr), malloc'd. */
static char *ua_log(struct ua *ua) {
        return tl_log(&ua->proc);
}

/* The first line of text that starts with the word(s) in prefix, or NULL. */
static const char *find_line(const char *text, const char *prefix) {
        size_t n = strlen(prefix);
        for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
                if (strncmp(l, prefix, n) == 0 && (l[n] == ' ' || l[n] == '\n' || !l[n]))
                        return l;
        return NULL;
}

static bool ua_has(struct ua *ua, const char *prefix) {
        _cleanup_free_ char *log = ua_log(ua);
        return find_line(log, prefix);
}

static void ua_dump(struct ua *ua) {
        _cleanup_free_ char *log = ua_log(ua);
        fprintf(stderr, "---- %s (%s, status %d) ----\n%s", ua->name,
                ua->exited ? "exited" : "running", ua->exited ? ua->status : 0, log);
}

/* Waits until the UA prints a line starting with prefix; false when it exits or the time runs
 * out first. */
static bool ua_wait_event(struct ua *ua, const char *prefix, int timeout_ms) {
        for (int waited = 0;; waited += 20) {
                bool gone = ua_reap(ua);
                if (ua_has(ua, prefix))
                        return true;
                if (gone || waited >= timeout_ms)
                        return false;
                nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
        }
}

/* Waits for the UA to exit (SIGKILL after timeout_ms); true when it exited with status 0. */
static bool ua_wait_exit(struct ua *ua, int timeout_ms) {
        for (int waited = 0; !ua_reap(ua); waited += 20) {
                if (waited >= timeout_ms) {
                        kill(ua->proc.pid, SIGKILL);
                        fprintf(stderr, "%s did not exit within %d ms, killed\n", ua->name,
                                timeout_ms);
                        while (!ua_reap(ua))
                                nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
                        return false;
                }
                nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
        }
        return WIFEXITED(ua->status) && WEXITSTATUS(ua->status) == 0;
}

/* SIGTERM: a registered UA unregisters and exits 0. */
static bool ua_stop(struct ua *ua) {
        if (!ua->exited && ua->proc.pid > 0)
                kill(ua->proc.pid, SIGTERM);
        return ua_wait_exit(ua, EXIT_TIMEOUT_MS);
}

static void ua_done(struct ua *ua) {
        for (size_t i = 0; i < ELEMENTSOF(started); i++)
                if (started[i] == ua)
                        started[i] = NULL;
        free(ua->proc.log);
        ua->proc.log = NULL;
}

static void assert_stopped(struct ua *ua) {
        if (!ua_stop(ua)) {
                ua_dump(ua);
                ck_abort_msg("%s did not unregister and exit cleanly on SIGTERM", ua->name);
        }
}

static void assert_registered(struct ua *ua) {
        if (!ua_wait_event(ua, "event=registered", REGISTER_TIMEOUT_MS)) {
                ua_dump(ua);
                ck_abort_msg("%s did not register", ua->name);
        }
}

/* The single binding of aor: its contact URI, malloc'd. */
static char *binding_of(struct tl_proxy *f, const char *aor) {
        _cleanup_free_ char *line = NULL;
        ck_assert_int_ge(asprintf(&line, "REGISTRAR_GET %s", aor), 0);
        json_t *j = tl_ctl(f->sock, line);
        json_t *c = json_object_get(j, "contacts");
        ck_assert_msg(json_is_array(c) && json_array_size(c) == 1, "%s: %zu bindings", aor,
                      json_is_array(c) ? json_array_size(c) : 0);
        json_t *b = json_array_get(c, 0);
        const char *contact = json_string_value(json_object_get(b, "contact"));
        ck_assert_ptr_nonnull(contact);
        /* The expiry the UA asked for (120 s) was granted. */
        json_int_t expires = json_integer_value(json_object_get(b, "expires"));
        ck_assert_msg(expires > 100 && expires <= 120, "%s expires in %" JSON_INTEGER_FORMAT, aor,
                      expires);
        /* liblinphone identifies the device with +sip.instance. */
        ck_assert_str_ne(json_string_value(json_object_get(b, "unique-id")), "");
        char *ret = strdup(contact);
        json_decref(j);
        return ret;
}

static size_t bindings_of(struct tl_proxy *f, const char *aor) {
        _cleanup_free_ char *line = NULL;
        ck_assert_int_ge(asprintf(&line, "REGISTRAR_GET %s", aor), 0);
        json_t *j = tl_ctl(f->sock, line);
        size_t n = json_array_size(json_object_get(j, "contacts"));
        json_decref(j);
        return n;
}

/* alice and bob register through proxy_uri; the registrar holds one binding each, a loopback
 * contact on the given transport ("udp", "tls"); on SIGTERM both unregister and exit 0. */
static void check_register(struct tl_proxy *f, const char *proxy_uri, const char *ca_file,
                           const char *transport) {
        struct ua alice, bob;
        ua_start(&alice, "alice-reg", "sip:alice@localhost", proxy_uri, ca_file, NULL);
        ua_start(&bob, "bob-reg", "sip:bob@localhost", proxy_uri, ca_file, NULL);
        assert_registered(&alice);
        assert_registered(&bob);

        _cleanup_free_ char *want = NULL;
        ck_assert_int_ge(asprintf(&want, ";transport=%s", transport), 0);
        const char *aors[] = {"sip:alice@localhost", "sip:bob@localhost"};
        const char *users[] = {"sip:alice@127.0.0.1:", "sip:bob@127.0.0.1:"};
        for (size_t i = 0; i < ELEMENTSOF(aors); i++) {
                _cleanup_free_ char *contact = binding_of(f, aors[i]);
                ck_assert_msg(strncmp(contact, users[i], strlen(users[i])) == 0, "%s", contact);
                ck_assert_msg(strcasestr(contact, want), "%s: no %s", contact, want);
        }
        json_t *j = tl_ctl(f->sock, "REGISTRAR_DUMP");
        ck_assert_uint_eq(json_array_size(json_object_get(j, "aors")), 2);
        json_decref(j);

        assert_stopped(&alice);
        assert_stopped(&bob);
        ck_assert(ua_has(&alice, "event=unregistered"));
        ck_assert(ua_has(&bob, "event=unregistered"));
        ck_assert_uint_eq(bindings_of(f, "sip:alice@localhost"), 0);
        ck_assert_uint_eq(bindings_of(f, "sip:bob@localhost"), 0);
        ua_done(&alice);
        ua_done(&bob);
}

/* The UA's last rtp-stats line: packets sent and received. */
static void rtp_stats(struct ua *ua, uint64_t *sent, uint64_t *received) {
        _cleanup_free_ char *log = ua_log(ua);
        const char *l = find_line(log, "event=rtp-stats");
        ck_assert_msg(l, "%s printed no rtp-stats", ua->name);
        ck_assert_int_eq(
                sscanf(l, "event=rtp-stats sent=%" SCNu64 " received=%" SCNu64, sent, received), 2);
}

/* bob answers, alice calls him, 2 s of audio, alice hangs up: both exit 0 having seen
 * StreamsRunning, RTP both ways, and the end of the call. */
static void check_call_with(const char *proxy_uri, const char *ca_file, const char *alice_pw,
                            const char *bob_pw) {
        struct ua alice, bob;
        ua_start(&bob, "bob-call", "sip:bob@localhost", proxy_uri, ca_file,
                 (const char *[]){"--answer", bob_pw ? "--password" : NULL, bob_pw, NULL});
        assert_registered(&bob);
        ua_start(&alice, "alice-call", "sip:alice@localhost", proxy_uri, ca_file,
                 (const char *[]){"--call", "sip:bob@localhost", "--duration", CALL_DURATION,
                                  alice_pw ? "--password" : NULL, alice_pw, NULL});
        bool alice_ok = ua_wait_exit(&alice, CALL_TIMEOUT_MS);
        /* bob ends by himself once the call is over; if it never started, stop him. */
        bool bob_ok = alice_ok ? ua_wait_exit(&bob, EXIT_TIMEOUT_MS) : (ua_stop(&bob), false);
        if (!alice_ok || !bob_ok) {
                ua_dump(&alice);
                ua_dump(&bob);
                _cleanup_free_ char *log = ua_log(&alice);
                const char *err = find_line(log, "event=call-state state=Error");
                ck_abort_msg("call failed (alice %s, bob %s)%s%.*s", alice_ok ? "ok" : "failed",
                             bob_ok ? "ok" : "failed", err ? ": " : "",
                             err ? (int)strcspn(err, "\n") : 0, err ? err : "");
        }

        struct ua *both[] = {&alice, &bob};
        for (size_t i = 0; i < ELEMENTSOF(both); i++) {
                struct ua *ua = both[i];
                ck_assert_msg(ua_has(ua, "event=call-state state=StreamsRunning"), "%s: no media",
                              ua->name);
                uint64_t sent, received;
                rtp_stats(ua, &sent, &received);
                /* 50 packets/s of 20 ms audio: at least half a second each way. */
                ck_assert_msg(sent >= 25 && received >= 25,
                              "%s: sent %" PRIu64 " received %" PRIu64, ua->name, sent, received);
                ck_assert_msg(ua_has(ua, "event=call-end result=ok"), "%s: call did not end well",
                              ua->name);
                ck_assert(ua_has(ua, "event=unregistered"));
        }
        ck_assert(ua_has(&alice, "event=hangup"));
        ck_assert(ua_has(&bob, "event=answered"));
        ua_done(&alice);
        ua_done(&bob);
}

static void check_call(const char *proxy_uri, const char *ca_file) {
        check_call_with(proxy_uri, ca_file, NULL, NULL);
}

static char *udp_uri(struct tl_proxy *f) {
        char *uri;
        ck_assert_int_ge(asprintf(&uri, "sip:127.0.0.1:%d;transport=udp", f->port), 0);
        return uri;
}

static char *tls_uri(struct tl_proxy *f) {
        char *uri;
        ck_assert_int_ge(asprintf(&uri, "sips:127.0.0.1:%d", f->tls_port), 0);
        return uri;
}

/* The certificate names 127.0.0.1 as an IP and as a DNS name: liblinphone verifies the peer
 * with mbed TLS 2.28 (Debian 12), which matches the host only against DNS names. */
static char *tls_dir(const char *name) {
        return tl_tls_dir(name, "IP:127.0.0.1,DNS:127.0.0.1");
}

static char *ca_of(const char *dir) {
        char *ca;
        ck_assert_int_ge(asprintf(&ca, "%s/cafile.pem", dir), 0);
        return ca;
}

START_TEST(test_linphone_register_udp) {
        struct tl_proxy f = {0};
        proxy_start(&f, NULL);
        _cleanup_free_ char *uri = udp_uri(&f);
        check_register(&f, uri, NULL, "udp");
        proxy_done(&f);
}
END_TEST

START_TEST(test_linphone_register_tls) {
        _cleanup_free_ char *dir = tls_dir("tls"), *other = tls_dir("other-ca");
        _cleanup_free_ char *ca = ca_of(dir), *other_ca = ca_of(other);
        struct tl_proxy f = {.tls_port = tl_free_port()};
        proxy_start(&f, dir);
        _cleanup_free_ char *uri = tls_uri(&f);
        check_register(&f, uri, ca, "tls");

        /* The UA verifies the proxy: with a CA that did not sign its certificate, no
         * registration. */
        struct ua mallory;
        ua_start(&mallory, "mallory", "sip:mallory@localhost", uri, other_ca, NULL);
        ck_assert(!ua_wait_exit(&mallory, REGISTER_TIMEOUT_MS));
        ck_assert(ua_has(&mallory, "event=registration-failed"));
        ck_assert(!ua_has(&mallory, "event=registered"));
        ck_assert_uint_eq(bindings_of(&f, "sip:mallory@localhost"), 0);
        ua_done(&mallory);
        proxy_done(&f);
}
END_TEST

START_TEST(test_linphone_call_udp) {
        struct tl_proxy f = {0};
        proxy_start(&f, NULL);
        _cleanup_free_ char *uri = udp_uri(&f);
        check_call(uri, NULL);
        proxy_done(&f);
}
END_TEST

START_TEST(test_linphone_call_tls) {
        _cleanup_free_ char *dir = tls_dir("tls-call");
        _cleanup_free_ char *ca = ca_of(dir);
        struct tl_proxy f = {.tls_port = tl_free_port()};
        proxy_start(&f, dir);
        _cleanup_free_ char *uri = tls_uri(&f);
        check_call(uri, ca);
        proxy_done(&f);
}
END_TEST

/* With [module::Authentication] on: both UAs answer the digest challenges (SHA-256 offered
 * first, MD5 too) of their REGISTER and of the INVITE, over TLS; a wrong password does not
 * register. */
START_TEST(test_linphone_auth_call_tls) {
        _cleanup_free_ char *dir = tls_dir("tls-auth");
        _cleanup_free_ char *ca = ca_of(dir);
        _cleanup_free_ char *passwd = tl_write_file("passwd", "version:1\n"
                                                              "alice@localhost clrtxt:alice-pw ;\n"
                                                              "bob@localhost clrtxt:bob-pw ;\n");
        _cleanup_free_ char *conf = NULL;
        ck_assert_int_ge(asprintf(&conf,
                                  "%s[module::Authentication]\n"
                                  "enabled=true\n"
                                  "auth-domains=localhost\n"
                                  "available-algorithms=SHA-256 MD5\n"
                                  "file-path=%s\n",
                                  proxy_conf(dir), passwd),
                         0);
        struct tl_proxy f = {.tls_port = tl_free_port()};
        running_proxy = &f;
        tl_proxy_start(&f, conf);
        _cleanup_free_ char *uri = tls_uri(&f);
        check_call_with(uri, ca, "alice-pw", "bob-pw");
        ck_assert_int_ge(tl_counter(f.sock, "module::Authentication/count-challenges"), 3);
        ck_assert_int_eq(tl_counter(f.sock, "module::Authentication/count-auth-failed"), 0);
        {
                /* liblinphone took the first challenge, SHA-256. */
                _cleanup_free_ char *log = tl_log(&f.proc);
                ck_assert_ptr_nonnull(strstr(log, "'alice@localhost' authenticated (SHA-256)"));
                ck_assert_ptr_nonnull(strstr(log, "'bob@localhost' authenticated (SHA-256)"));
        }

        struct ua mallory;
        ua_start(&mallory, "mallory", "sip:alice@localhost", uri, ca,
                 (const char *[]){"--password", "guess", NULL});
        ck_assert(!ua_wait_event(&mallory, "event=registered", 3000));
        ua_stop(&mallory);
        ck_assert_int_ge(tl_counter(f.sock, "module::Authentication/count-auth-failed"), 1);
        ua_done(&mallory);
        proxy_done(&f);
}
END_TEST

/* The same call with sipfleet-mediarelay in the path ([module::MediaRelay]): both UAs get RTP
 * and the relay's counters show it went through it; the call's session is gone after BYE. */
START_TEST(test_linphone_call_media_relay) {
        struct tl_daemon relay = {0};
        int ng = tl_free_port(), lo = tl_free_port() & ~1;
        if (lo > 65000)
                lo = 50000;
        _cleanup_free_ char *relay_conf = NULL, *conf = NULL;
        ck_assert_int_ge(asprintf(&relay_conf,
                                  "[mediarelay]\nng-listen=127.0.0.1:%d\nport-range=%d-%d\n"
                                  "packet-threads=1\n",
                                  ng, lo, lo + 99),
                         0);
        tl_daemon_start(&relay, "mediarelay", relay_conf);
        ck_assert_int_ge(asprintf(&conf, "%s[module::MediaRelay]\nenabled=true\n"
                                         "relays=127.0.0.1:%d\n",
                                  proxy_conf(NULL), ng),
                         0);
        struct tl_proxy f = {0};
        running_proxy = &f;
        tl_proxy_start(&f, conf);
        _cleanup_free_ char *uri = udp_uri(&f);
        check_call(uri, NULL);

        /* 2 s of 50 packets/s each way went through the relay. */
        ck_assert_int_ge(tl_counter(relay.sock, "mediarelay/packets-relayed"), 100);
        ck_assert_int_ge(tl_counter(f.sock, "module::MediaRelay/count-offers"), 1);
        ck_assert_int_ge(tl_counter(f.sock, "module::MediaRelay/count-answers"), 1);
        ck_assert_int_eq(tl_counter(f.sock, "module::MediaRelay/count-unrelayed"), 0);
        ck_assert_int_ge(tl_counter(f.sock, "module::MediaRelay/count-deletes"), 1);
        long long calls = -1;
        for (int i = 0; i < 100 && (calls = tl_counter(relay.sock, "mediarelay/calls")) != 0; i++)
                nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
        ck_assert_int_eq(calls, 0);
        proxy_done(&f);
        tl_daemon_done(&relay);
}
END_TEST

/* Store-and-forward with real clients: alice sends a message to bob, who has never
 * registered (the proxy answers 202 and keeps it); bob's client starts later, registers and
 * receives it. */
START_TEST(test_linphone_offline_message) {
        struct tl_proxy f = {0};
        running_proxy = &f;
        tl_proxy_start(&f, proxy_conf(NULL));
        _cleanup_free_ char *uri = udp_uri(&f);
        struct ua alice, bob;
        ua_start(&alice, "alice", "sip:alice@localhost", uri, NULL,
                 (const char *[]){"--message-to", "sip:bob@localhost", "--message",
                                  "hello from the past", NULL});
        if (!ua_wait_exit(&alice, EXIT_TIMEOUT_MS * 4) || !ua_has(&alice, "event=message-delivered")) {
                ua_dump(&alice);
                ck_abort_msg("alice's message was not accepted");
        }
        ck_assert_int_eq(tl_counter(f.sock, "module::Router/pending-messages"), 1);

        ua_start(&bob, "bob", "sip:bob@localhost", uri, NULL,
                 (const char *[]){"--expect-messages", "1", NULL});
        if (!ua_wait_exit(&bob, EXIT_TIMEOUT_MS * 4)) {
                ua_dump(&bob);
                ck_abort_msg("bob did not receive the stored message");
        }
        _cleanup_free_ char *log = ua_log(&bob);
        const char *line = find_line(log, "event=message-received");
        ck_assert_msg(line && strstr(line, "from=sip:alice@localhost") &&
                              strstr(line, "text=\"hello from the past\""),
                      "bob's event: %s", line ? line : "(none)");
        /* Nothing waits for bob any more (what may wait is bob's delivery notification for
         * alice, who has gone offline). */
        size_t waiting = 1;
        for (int i = 0; i < 100 && waiting > 0; i++) {
                json_t *j = tl_ctl(f.sock, "MESSAGES_PENDING sip:bob@localhost");
                waiting = json_array_size(json_object_get(j, "messages"));
                json_decref(j);
                if (waiting)
                        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
        }
        ck_assert_uint_eq(waiting, 0);
        ua_done(&alice);
        ua_done(&bob);
        proxy_done(&f);
}
END_TEST

static Suite *linphone_suite(void) {
        Suite *s = suite_create("linphone");
        TCase *tc = tcase_create("register");
        tcase_add_test(tc, test_linphone_register_udp);
        tcase_add_test(tc, test_linphone_register_tls);
        suite_add_tcase(s, tc);
        tc = tcase_create("call");
        tcase_add_test(tc, test_linphone_call_udp);
        tcase_add_test(tc, test_linphone_call_tls);
        tcase_add_test(tc, test_linphone_auth_call_tls);
        tcase_add_test(tc, test_linphone_call_media_relay);
        tcase_add_test(tc, test_linphone_offline_message);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        /* Inherited by each forked test: a failed assertion exits, leaving no UA or proxy. */
        atexit(kill_uas);
        return tl_run(linphone_suite());
}
