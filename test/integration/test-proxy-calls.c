/* SPDX-License-Identifier: MIT */
/* Router, fork engine and Forward in the built proxy, with real SIPp peers:
 * callees register (test/sipp/reg-user.xml) and then answer as UAS scenarios on
 * the same port; a SIPp caller calls them through the proxy. Covers calls over
 * UDP and TCP through Record-Route, forking (first 2xx wins and the others get
 * CANCEL with the 200 Reason, 486 + 200, 6xx cancels with the 600 Reason),
 * q-groups with their timeout, caller CANCEL with its Reason, Timer C, 404,
 * 482, 483, 481 for a stray CANCEL, MESSAGE, and a callee still reachable after
 * a proxy restart. */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "testlib.h"

static struct tl_proxy proxy;
static char remote[64];

static const char *base_conf = "log-level=debug\n"
                               "[module::Router]\n"
                               "call-fork-current-branches-timeout=1s\n"
                               "timer-c=2s\n";

static void start_proxy(const char *extra) {
        _cleanup_free_ char *conf = NULL;
        ck_assert_int_ge(
                asprintf(&conf, "%s%s", base_conf,
                         extra ? extra : "[module::Registrar]\ndb-implementation=internal\n"),
                0);
        tl_proxy_start(&proxy, conf);
        snprintf(remote, sizeof remote, "127.0.0.1:%d", proxy.port);
}

static void stop_proxy(void) {
        tl_proxy_done(&proxy);
}

struct ua {
        struct tl_proc proc;
        char name[32];
        int port;
};

/* REGISTER user from a free port with -t transport, q ("1", "0.5"). */
static int ua_register(const char *user, const char *transport, const char *q) {
        int port = tl_free_port();
        const char *args[] = {remote, "-m", "1", "-s", user, "-t", transport, "-key", "q", q, NULL};
        struct tl_proc p;
        tl_sipp_spawn(&p, "register", "test/sipp/reg-user.xml", port, args);
        ck_assert_msg(tl_sipp_wait(&p, "register", 20000) == 0, "REGISTER of %s", user);
        return port;
}

/* A UAS scenario on port for one call. keys: NULL-terminated pairs for -key. */
static void ua_start(struct ua *u, const char *name, const char *scenario, const char *user,
                     int port, const char *transport, const char *const *keys) {
        const char *args[32] = {"-m", "1", "-s", user, "-t", transport};
        size_t n = 6;
        for (size_t i = 0; keys && keys[i]; i += 2) {
                ck_assert_uint_lt(n + 3, ELEMENTSOF(args));
                args[n++] = "-key";
                args[n++] = keys[i];
                args[n++] = keys[i + 1];
        }
        args[n] = NULL;
        snprintf(u->name, sizeof u->name, "%s", name);
        u->port = port;
        _cleanup_free_ char *sf = NULL;
        if (scenario[0] == '/')
                sf = strdup(scenario);
        else
                ck_assert_int_ge(asprintf(&sf, "test/sipp/%s.xml", scenario), 0);
        tl_sipp_spawn(&u->proc, u->name, sf, port, args);
        /* A SIPp UAS is ready once its port is bound: wait until it is no longer
         * free. */
        for (int i = 0; i < 500; i++) {
                int fd = socket(AF_INET,
                                (strcmp(transport, "t1") == 0 ? SOCK_STREAM : SOCK_DGRAM) |
                                        SOCK_CLOEXEC,
                                0);
                struct sockaddr_in a = {.sin_family = AF_INET,
                                        .sin_port = htons((uint16_t)port),
                                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
                int busy = bind(fd, (struct sockaddr *)&a, sizeof a) < 0;
                close(fd);
                if (busy)
                        return;
                nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        }
        ck_abort_msg("SIPp %s did not bind port %d", name, port);
}

static void ua_expect_pass(struct ua *u) {
        ck_assert_msg(tl_sipp_wait(&u->proc, u->name, 30000) == 0, "callee %s failed", u->name);
}

/* A scenario of test/sipp with "[key]" replaced by value everywhere, written to
 * the tmpdir: SIPp substitutes -key keywords in messages but not in attributes
 * (response codes, regexps). Returns the path (static storage, one per
 * key/value). */
static const char *templated(const char *scenario, const char *key, const char *value) {
        static char paths[8][512];
        static unsigned next;
        _cleanup_free_ char *tpl_path = NULL, *needle = NULL, *name = NULL;
        ck_assert_int_ge(asprintf(&tpl_path, "test/sipp/%s.xml", scenario), 0);
        _cleanup_free_ char *src = tl_source_path(tpl_path);
        _cleanup_free_ char *text = tl_read_file(src, NULL);
        ck_assert_ptr_nonnull(text);
        ck_assert_int_ge(asprintf(&needle, "[%s]", key), 0);
        char *at;
        while ((at = strstr(text, needle))) {
                *at = 0;
                char *joined;
                ck_assert_int_ge(asprintf(&joined, "%s%s%s", text, value, at + strlen(needle)), 0);
                free(text);
                text = joined;
        }
        ck_assert_int_ge(asprintf(&name, "%s-%u.xml", scenario, next), 0);
        _cleanup_free_ char *written = tl_write_file(name, text);
        char *path = paths[next++ % ELEMENTSOF(paths)];
        snprintf(path, sizeof paths[0], "%s", written);
        return path;
}

/* A ringing callee whose CANCEL must match the regexp (no double quotes: XML
 * attribute). */
static const char *cancelled_scenario(const char *regexp) {
        return templated("uas-cancelled", "reason", regexp);
}

static const char *fail_scenario(const char *status) {
        return templated("uac-fail", "status", status);
}

/* Runs a caller scenario to the end; keys as for ua_start. */
static int caller(const char *scenario, const char *user, const char *transport,
                  const char *const *keys) {
        const char *args[32] = {remote, "-m", "1", "-s", user, "-t", transport};
        size_t n = 7;
        for (size_t i = 0; keys && keys[i]; i += 2) {
                ck_assert_uint_lt(n + 3, ELEMENTSOF(args));
                args[n++] = "-key";
                args[n++] = keys[i];
                args[n++] = keys[i + 1];
        }
        args[n] = NULL;
        _cleanup_free_ char *sf = NULL;
        if (scenario[0] == '/')
                sf = strdup(scenario);
        else
                ck_assert_int_ge(asprintf(&sf, "test/sipp/%s.xml", scenario), 0);
        struct tl_proc p;
        tl_sipp_spawn(&p, "caller", sf, 0, args);
        return tl_sipp_wait(&p, "caller", 30000);
}

static void call_between_two_uas(const char *transport) {
        start_proxy(NULL);
        int port = ua_register("bob", transport, "1");
        struct ua bob;
        ua_start(&bob, "bob", "uas-answer", "bob", port, transport, NULL);
        ck_assert_int_eq(caller("uac-call", "bob", transport, NULL), 0);
        ua_expect_pass(&bob);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::Router/count-forks"), 1);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::Router/live-forks"), 0);
        stop_proxy();
}

START_TEST(test_calls_udp) {
        call_between_two_uas("u1");
}
END_TEST

START_TEST(test_calls_tcp) {
        call_between_two_uas("t1");
}
END_TEST

/* Debian's SIPp has no TLS: stunnel4 (client mode) turns SIPp's TCP into TLS to the proxy's
 * TLS transport, verifying the proxy's certificate against the test CA. Returns the local
 * TCP port to give SIPp. */
static int stunnel_start(struct tl_proc *p, const char *tls_dir, int tls_port) {
        int port = tl_free_port();
        _cleanup_free_ char *conf = NULL, *path = NULL;
        ck_assert_int_ge(asprintf(&conf,
                                  "foreground = yes\n"
                                  "pid =\n"
                                  "[sip-tls]\n"
                                  "client = yes\n"
                                  "accept = 127.0.0.1:%d\n"
                                  "connect = 127.0.0.1:%d\n"
                                  "CAfile = %s/cafile.pem\n"
                                  "verifyChain = yes\n"
                                  "checkIP = 127.0.0.1\n",
                                  port, tls_port, tls_dir),
                         0);
        path = tl_write_file("stunnel.conf", conf);
        char *argv[] = {"/usr/bin/stunnel4", path, NULL};
        tl_spawn("stunnel", argv, p);
        ck_assert_msg(tl_wait_tcp(port, 10000) == 0, "stunnel did not start");
        return port;
}

/* SIPp over TLS (through stunnel): REGISTER, and a call from a TLS caller to a UDP callee
 * through Record-Route (ACK and BYE on the caller's TLS connection). */
START_TEST(test_calls_tls_via_stunnel) {
        _cleanup_free_ char *dir = tl_tls_dir("tls", NULL);
        proxy.tls_port = tl_free_port();
        _cleanup_free_ char *extra = NULL;
        ck_assert_int_ge(asprintf(&extra,
                                  "[global]\ntls-certificates-dir=%s\n"
                                  "[module::Registrar]\ndb-implementation=internal\n",
                                  dir),
                         0);
        start_proxy(extra);
        struct tl_proc tunnel;
        int tunnel_port = stunnel_start(&tunnel, dir, proxy.tls_port);
        char udp_remote[64];
        snprintf(udp_remote, sizeof udp_remote, "%s", remote);

        /* REGISTER over TLS: the binding names the TLS connection. SIPp writes TLS in its
         * Via and Contact (nta drops a request whose Via names another transport than the
         * one it came on). */
        snprintf(remote, sizeof remote, "127.0.0.1:%d", tunnel_port);
        const char *reg_args[] = {remote, "-m", "1", "-s", "carol", "-t", "t1", "-key", "q", "1",
                                  NULL};
        struct tl_proc reg;
        tl_sipp_spawn(&reg, "register", templated("reg-user", "transport", "TLS"), 0, reg_args);
        ck_assert_msg(tl_sipp_wait(&reg, "register", 20000) == 0, "REGISTER of carol over TLS");
        json_t *j = tl_ctl(proxy.sock, "REGISTRAR_GET sip:carol@localhost");
        _cleanup_free_ char *text = json_dumps(j, 0);
        ck_assert_msg(strstr(text, "transport=tls"), "carol's binding: %s", text);
        json_decref(j);

        /* bob over UDP, the caller over TLS. */
        snprintf(remote, sizeof remote, "%s", udp_remote);
        int port = ua_register("bob", "u1", "1");
        struct ua bob;
        ua_start(&bob, "bob", "uas-answer", "bob", port, "u1", NULL);
        snprintf(remote, sizeof remote, "127.0.0.1:%d", tunnel_port);
        ck_assert_int_eq(caller(templated("uac-call", "transport", "TLS"), "bob", "t1", NULL), 0);
        ua_expect_pass(&bob);
        ck_assert_int_eq(tl_counter(proxy.sock, "global/count-incoming-request-bye"), 1);
        tl_stop(&tunnel);
        free(tunnel.log);
        stop_proxy();
        proxy.tls_port = 0;
}
END_TEST

START_TEST(test_calls_fork_first_answer_wins) {
        start_proxy(NULL);
        int p1 = ua_register("bob", "u1", "1");
        int p2 = ua_register("bob", "u1", "1");
        struct ua answering, ringing;
        ua_start(&answering, "bob-answers", "uas-answer", "bob", p1, "u1", NULL);
        ua_start(&ringing, "bob-rings",
                 cancelled_scenario("Reason: SIP;cause=200;text=.Call completed elsewhere."), "bob",
                 p2, "u1", NULL);
        ck_assert_int_eq(caller("uac-call", "bob", "u1", NULL), 0);
        ua_expect_pass(&answering);
        ua_expect_pass(&ringing);
        stop_proxy();
}
END_TEST

START_TEST(test_calls_fork_busy_and_answer) {
        start_proxy(NULL);
        int p1 = ua_register("bob", "u1", "1");
        int p2 = ua_register("bob", "u1", "1");
        struct ua busy, answering;
        ua_start(&busy, "bob-busy", templated("uas-reject", "status", "486"), "bob", p1, "u1",
                 (const char *[]){"phrase", "Busy Here", NULL});
        ua_start(&answering, "bob-answers", "uas-answer", "bob", p2, "u1", NULL);
        ck_assert_int_eq(caller("uac-call", "bob", "u1", NULL), 0);
        ua_expect_pass(&busy);
        ua_expect_pass(&answering);
        stop_proxy();
}
END_TEST

START_TEST(test_calls_fork_decline_everywhere) {
        start_proxy(NULL);
        int p1 = ua_register("bob", "u1", "1");
        int p2 = ua_register("bob", "u1", "1");
        struct ua declining, ringing;
        ua_start(&ringing, "bob-rings",
                 cancelled_scenario("Reason: SIP;cause=600;text=.Busy Everywhere."), "bob", p2,
                 "u1", NULL);
        ua_start(&declining, "bob-declines", templated("uas-reject", "status", "603"), "bob", p1,
                 "u1", (const char *[]){"phrase", "Decline", NULL});
        ck_assert_int_eq(
                caller(fail_scenario("603"), "bob", "u1",
                       (const char *[]){"domain", "localhost", "max_forwards", "70", NULL}),
                0);
        ua_expect_pass(&declining);
        ua_expect_pass(&ringing);
        stop_proxy();
}
END_TEST

START_TEST(test_calls_caller_cancel) {
        start_proxy(NULL);
        int p1 = ua_register("bob", "u1", "1");
        struct ua ringing;
        ua_start(&ringing, "bob-rings",
                 cancelled_scenario("Reason: SIP;cause=480;text=.Caller gave up."), "bob", p1, "u1",
                 NULL);
        ck_assert_int_eq(caller("uac-cancel", "bob", "u1", NULL), 0);
        ua_expect_pass(&ringing);
        stop_proxy();
}
END_TEST

START_TEST(test_calls_q_groups) {
        /* The q=1 device rings without answering; after the group timeout (1 s) the
         * q=0.5 device is tried, answers, and the first one is cancelled with the 200
         * Reason. */
        start_proxy(NULL);
        int high = ua_register("bob", "u1", "1");
        int low = ua_register("bob", "u1", "0.5");
        struct ua first, second;
        ua_start(&first, "bob-q1", cancelled_scenario("Reason: SIP;cause=200"), "bob", high, "u1",
                 NULL);
        ua_start(&second, "bob-q05", "uas-answer", "bob", low, "u1", NULL);
        ck_assert_int_eq(caller("uac-call", "bob", "u1", NULL), 0);
        ua_expect_pass(&first);
        ua_expect_pass(&second);
        _cleanup_free_ char *log = tl_log(&proxy.proc);
        ck_assert_ptr_nonnull(strstr(log, "next group"));
        stop_proxy();
}
END_TEST

START_TEST(test_calls_timer_c) {
        /* Ringing forever: Timer C (2 s) cancels the branch and the caller gets 408.
         */
        start_proxy(NULL);
        int port = ua_register("bob", "u1", "1");
        struct ua ringing;
        ua_start(&ringing, "bob-rings", cancelled_scenario("CANCEL sip:"), "bob", port, "u1", NULL);
        ck_assert_int_eq(
                caller(fail_scenario("408"), "bob", "u1",
                       (const char *[]){"domain", "localhost", "max_forwards", "70", NULL}),
                0);
        ua_expect_pass(&ringing);
        _cleanup_free_ char *log = tl_log(&proxy.proc);
        ck_assert_ptr_nonnull(strstr(log, "Timer C fired"));
        stop_proxy();
}
END_TEST

START_TEST(test_calls_errors) {
        start_proxy(NULL);
        _cleanup_free_ char *us = NULL;
        ck_assert_int_ge(asprintf(&us, "127.0.0.1:%d", proxy.port), 0);
        /* Unknown user of a managed domain. */
        ck_assert_int_eq(
                caller(fail_scenario("404"), "nobody", "u1",
                       (const char *[]){"domain", "localhost", "max_forwards", "70", NULL}),
                0);
        /* A domain we do not manage whose next hop is ourselves: a loop. */
        ck_assert_int_eq(caller(fail_scenario("482"), "someone", "u1",
                                (const char *[]){"domain", us, "max_forwards", "70", NULL}),
                         0);
        /* Max-Forwards exhausted. */
        ck_assert_int_eq(caller(fail_scenario("483"), "nobody", "u1",
                                (const char *[]){"domain", "localhost", "max_forwards", "0", NULL}),
                         0);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::Router/count-not-found"), 1);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::Forward/count-loops"), 1);
        stop_proxy();
}
END_TEST

/* One request over UDP ("{port}" in it is replaced by the local port, for the Via), the first
 * line of the first final response (provisional ones skipped), malloc'd. */
static char *udp_exchange(const char *request) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        struct sockaddr_in local = {.sin_family = AF_INET,
                                    .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&local, sizeof local), 0);
        socklen_t len = sizeof local;
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&local, &len), 0);
        const char *at = strstr(request, "{port}");
        ck_assert_ptr_nonnull(at);
        _cleanup_free_ char *req = NULL;
        ck_assert_int_ge(asprintf(&req, "%.*s%u%s", (int)(at - request), request,
                                  ntohs(local.sin_port), at + strlen("{port}")),
                         0);
        struct sockaddr_in to = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)proxy.port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(sendto(fd, req, strlen(req), 0, (struct sockaddr *)&to, sizeof to),
                         (ssize_t)strlen(req));
        char buf[4096];
        for (;;) {
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                ck_assert_msg(poll(&pfd, 1, 5000) == 1, "no response to: %s", req);
                ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
                ck_assert_int_gt(n, 0);
                buf[n] = 0;
                if (strncmp(buf, "SIP/2.0 1", 9) != 0)
                        break;
        }
        close(fd);
        buf[strcspn(buf, "\r\n")] = 0;
        return strdup(buf);
}

/* A CANCEL that matches no transaction gets 481. */
START_TEST(test_calls_stray_cancel) {
        start_proxy(NULL);
        _cleanup_free_ char *status =
                udp_exchange("CANCEL sip:bob@localhost SIP/2.0\r\n"
                             "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-stray-1\r\n"
                             "From: <sip:caller@localhost>;tag=stray\r\n"
                             "To: <sip:bob@localhost>\r\n"
                             "Call-ID: stray-cancel@127.0.0.1\r\n"
                             "CSeq: 1 CANCEL\r\n"
                             "Max-Forwards: 70\r\n"
                             "Content-Length: 0\r\n\r\n");
        ck_assert_str_eq(status, "SIP/2.0 481 Call/Transaction Does Not Exist");
        stop_proxy();
}
END_TEST

/* Forward's routes file: a foreign domain goes to the next hop its rule names; RELOAD re-reads
 * the file; a broken file keeps the previous rules at reload and refuses start. */
START_TEST(test_calls_routes_file) {
        int hop1 = tl_free_port(), hop2 = tl_free_port();
        _cleanup_free_ char *rules = NULL, *conf = NULL;
        ck_assert_int_ge(asprintf(&rules,
                                  "# test routes\n"
                                  "<sip:127.0.0.1:%d;transport=udp>  request.uri.domain == "
                                  "'example.org'\n"
                                  "    && request.method == 'MESSAGE'\n",
                                  hop1),
                         0);
        _cleanup_free_ char *routes = tl_write_file("routes.conf", rules);
        ck_assert_int_ge(asprintf(&conf,
                                  "[module::Registrar]\ndb-implementation=internal\n"
                                  "[module::Forward]\nroutes-config-path=%s\n",
                                  routes),
                         0);
        start_proxy(conf);
        struct ua first;
        ua_start(&first, "hop1", "uas-message", "bob", hop1, "u1", NULL);
        ck_assert_int_eq(
                caller("uac-message", "bob", "u1", (const char *[]){"domain", "example.org", NULL}),
                0);
        ua_expect_pass(&first);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::Forward/count-routed"), 1);

        free(rules);
        ck_assert_int_ge(asprintf(&rules, "<sip:127.0.0.1:%d>  *\n", hop2), 0);
        free(tl_write_file("routes.conf", rules));
        json_decref(tl_ctl(proxy.sock, "RELOAD"));
        struct ua second;
        ua_start(&second, "hop2", "uas-message", "bob", hop2, "u1", NULL);
        ck_assert_int_eq(
                caller("uac-message", "bob", "u1", (const char *[]){"domain", "example.org", NULL}),
                0);
        ua_expect_pass(&second);

        /* Broken at reload: the previous rules stay. */
        free(tl_write_file("routes.conf", "<sip:127.0.0.1:1> request.method ==\n"));
        json_decref(tl_ctl(proxy.sock, "RELOAD"));
        ua_start(&second, "hop2-again", "uas-message", "bob", hop2, "u1", NULL);
        ck_assert_int_eq(
                caller("uac-message", "bob", "u1", (const char *[]){"domain", "example.org", NULL}),
                0);
        ua_expect_pass(&second);
        _cleanup_free_ char *log = tl_log(&proxy.proc);
        ck_assert_ptr_nonnull(strstr(log, "routes.conf:1:"));
        ck_assert_ptr_nonnull(strstr(log, "Keeping the previous routes."));
        stop_proxy();

        /* Broken at start: refused, with the file and line. */
        tl_proxy_write_conf(&proxy, conf);
        _cleanup_free_ char *bin = tl_build_path("proxy/sipfleet-proxy");
        char *argv[] = {bin, "--config", proxy.conf, NULL};
        struct tl_proc p;
        tl_spawn("proxy-broken-routes", argv, &p);
        int status = tl_wait(&p, 10000);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0);
        _cleanup_free_ char *out = tl_log(&p);
        ck_assert_msg(strstr(out, "routes.conf:1:"), "log: %s", out);
        free(p.log);
        tl_proxy_done(&proxy);
}
END_TEST

/* A module's filter decides which requests enter it: with Capabilities filtered to 'alice',
 * her OPTIONS to the proxy gets 200, anyone else's goes on to Forward, which sees the next hop
 * is the proxy itself (482). A filter that does not compile refuses start. */
START_TEST(test_calls_module_filter) {
        start_proxy("[module::Registrar]\ndb-implementation=internal\n"
                    "[module::Capabilities]\nfilter=from.uri.user == 'alice'\n");
        char req[1024];
#define FILTER_OPTIONS                                                                             \
        "OPTIONS sip:127.0.0.1:%d SIP/2.0\r\n"                                                     \
        "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-filter-%s\r\n"                           \
        "From: <sip:%s@localhost>;tag=f\r\n"                                                       \
        "To: <sip:127.0.0.1:%d>\r\n"                                                               \
        "Call-ID: filter-%s@127.0.0.1\r\n"                                                         \
        "CSeq: 1 OPTIONS\r\n"                                                                      \
        "Max-Forwards: 70\r\n"                                                                     \
        "Content-Length: 0\r\n\r\n"
        snprintf(req, sizeof req, FILTER_OPTIONS, proxy.port, "a", "alice", proxy.port, "a");
        _cleanup_free_ char *alice = udp_exchange(req);
        ck_assert_str_eq(alice, "SIP/2.0 200 OK");
        snprintf(req, sizeof req, FILTER_OPTIONS, proxy.port, "b", "mallory", proxy.port, "b");
        _cleanup_free_ char *mallory = udp_exchange(req);
        ck_assert_str_eq(mallory, "SIP/2.0 482 Loop Detected");
        stop_proxy();

        tl_proxy_write_conf(&proxy, "[module::Capabilities]\nfilter=from.uri.user = 'x'\n");
        _cleanup_free_ char *bin = tl_build_path("proxy/sipfleet-proxy");
        char *argv[] = {bin, "--config", proxy.conf, NULL};
        struct tl_proc p;
        tl_spawn("proxy-broken-filter", argv, &p);
        int status = tl_wait(&p, 10000);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0);
        _cleanup_free_ char *out = tl_log(&p);
        ck_assert_msg(strstr(out, "[module::Capabilities] filter: filter: column"), "log: %s", out);
        free(p.log);
        tl_proxy_done(&proxy);
}
END_TEST

/* Reads from a stream socket until text holds a full SIP message head (CRLF CRLF) or the
 * deadline passes. Returns the bytes read. */
static size_t tcp_read_message(int fd, char *buf, size_t size) {
        size_t n = 0;
        buf[0] = 0;
        while (!strstr(buf, "\r\n\r\n")) {
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                ck_assert_msg(poll(&pfd, 1, 10000) == 1, "nothing on the connection: %s", buf);
                ssize_t r = recv(fd, buf + n, size - 1 - n, 0);
                ck_assert_int_gt(r, 0);
                n += (size_t)r;
                buf[n] = 0;
        }
        return n;
}

/* Copies the "Name: value" lines of a header from a message head, in order. */
static void append_headers(char *out, size_t size, const char *msg, const char *name) {
        size_t len = strlen(name);
        for (const char *line = msg; line && *line; line = strstr(line, "\r\n")) {
                if (line != msg)
                        line += 2;
                if (strncasecmp(line, name, len) == 0 && line[len] == ':') {
                        size_t l = strcspn(line, "\r\n");
                        size_t used = strlen(out);
                        snprintf(out + used, size - used, "%.*s\r\n", (int)l, line);
                }
        }
}

/* A client behind NAT over TCP: it registers a contact naming an address nobody can reach;
 * NatHelper rewrites it to the connection's address with ;transport=tcp;verified, and a call
 * to it comes down that same connection, with the marker removed. */
START_TEST(test_calls_nat_tcp_flow) {
        start_proxy(NULL);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in to = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)proxy.port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(connect(fd, (struct sockaddr *)&to, sizeof to), 0);
        struct sockaddr_in local;
        socklen_t len = sizeof local;
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&local, &len), 0);
        const char *reg = "REGISTER sip:localhost SIP/2.0\r\n"
                          "Via: SIP/2.0/TCP 192.0.2.9:5062;branch=z9hG4bK-nat-1;rport\r\n"
                          "From: <sip:dave@localhost>;tag=nat\r\n"
                          "To: <sip:dave@localhost>\r\n"
                          "Call-ID: nat-flow@192.0.2.9\r\n"
                          "CSeq: 1 REGISTER\r\n"
                          "Contact: <sip:dave@192.0.2.9:5062;transport=tcp>\r\n"
                          "Expires: 600\r\n"
                          "Max-Forwards: 70\r\n"
                          "Content-Length: 0\r\n\r\n";
        ck_assert_int_eq(send(fd, reg, strlen(reg), 0), (ssize_t)strlen(reg));
        char buf[8192];
        tcp_read_message(fd, buf, sizeof buf);
        ck_assert_msg(strncmp(buf, "SIP/2.0 200 ", 12) == 0, "got: %s", buf);
        char expected[128];
        snprintf(expected, sizeof expected, "<sip:dave@127.0.0.1:%u;transport=tcp;verified>",
                 ntohs(local.sin_port));
        ck_assert_msg(strstr(buf, expected), "want %s in: %s", expected, buf);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::NatHelper/count-corrected-contacts"), 1);

        /* RFC 5626 keep-alive: a CRLF CRLF ping is answered with a CRLF pong. */
        ck_assert_int_eq(send(fd, "\r\n\r\n", 4, 0), 4);
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        ck_assert_int_eq(poll(&pfd, 1, 5000), 1);
        char pong[8];
        ck_assert_int_eq(recv(fd, pong, sizeof pong, 0), 2);
        ck_assert(pong[0] == '\r' && pong[1] == '\n');

        /* The caller (SIPp over UDP) expects the 486 that dave answers on his connection. */
        const char *args[] = {remote, "-m",     "1",         "-s",   "dave",         "-t", "u1",
                              "-key", "domain", "localhost", "-key", "max_forwards", "70", NULL};
        struct tl_proc callp;
        tl_sipp_spawn(&callp, "caller", fail_scenario("486"), 0, args);
        memset(buf, 0, sizeof buf);
        tcp_read_message(fd, buf, sizeof buf);
        snprintf(expected, sizeof expected, "INVITE sip:dave@127.0.0.1:%u;transport=tcp SIP/2.0",
                 ntohs(local.sin_port));
        ck_assert_msg(strncmp(buf, expected, strlen(expected)) == 0, "got: %s", buf);
        char resp[4096] = "SIP/2.0 486 Busy Here\r\n";
        append_headers(resp, sizeof resp, buf, "Via");
        append_headers(resp, sizeof resp, buf, "From");
        char *to_line = strstr(buf, "\nTo: ");
        ck_assert_ptr_nonnull(to_line);
        size_t used = strlen(resp);
        snprintf(resp + used, sizeof resp - used, "To: %.*s;tag=dave\r\n",
                 (int)strcspn(to_line + 5, "\r\n"), to_line + 5);
        append_headers(resp, sizeof resp, buf, "Call-ID");
        append_headers(resp, sizeof resp, buf, "CSeq");
        used = strlen(resp);
        snprintf(resp + used, sizeof resp - used, "Content-Length: 0\r\n\r\n");
        ck_assert_int_eq(send(fd, resp, strlen(resp), 0), (ssize_t)strlen(resp));
        ck_assert_int_eq(tl_sipp_wait(&callp, "caller", 30000), 0);
        close(fd);
        stop_proxy();
}
END_TEST

START_TEST(test_calls_message) {
        start_proxy(NULL);
        int port = ua_register("bob", "u1", "1");
        struct ua bob;
        ua_start(&bob, "bob", "uas-message", "bob", port, "u1", NULL);
        ck_assert_int_eq(
                caller("uac-message", "bob", "u1", (const char *[]){"domain", "localhost", NULL}),
                0);
        ua_expect_pass(&bob);
        stop_proxy();
}
END_TEST

START_TEST(test_calls_after_restart) {
        /* The embedded store keeps the binding: after a restart the callee is
         * reached. */
        _cleanup_free_ char *db = tl_path("restart.db");
        _cleanup_free_ char *conf = NULL;
        ck_assert_int_ge(asprintf(&conf,
                                  "[module::Registrar]\n"
                                  "db-implementation=sqlite\n"
                                  "database-path=%s\n",
                                  db),
                         0);
        start_proxy(conf);
        int port = ua_register("carol", "u1", "1");
        tl_proxy_stop(&proxy);
        start_proxy(conf); /* same ports and database */
        struct ua carol;
        ua_start(&carol, "carol", "uas-answer", "carol", port, "u1", NULL);
        ck_assert_int_eq(caller("uac-call", "carol", "u1", NULL), 0);
        ua_expect_pass(&carol);
        stop_proxy();
}
END_TEST

static Suite *calls_suite(void) {
        Suite *s = suite_create("proxy-calls");
        TCase *tc = tcase_create("calls");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_calls_udp);
        tcase_add_test(tc, test_calls_tcp);
        tcase_add_test(tc, test_calls_tls_via_stunnel);
        tcase_add_test(tc, test_calls_fork_first_answer_wins);
        tcase_add_test(tc, test_calls_fork_busy_and_answer);
        tcase_add_test(tc, test_calls_fork_decline_everywhere);
        tcase_add_test(tc, test_calls_caller_cancel);
        tcase_add_test(tc, test_calls_q_groups);
        tcase_add_test(tc, test_calls_timer_c);
        tcase_add_test(tc, test_calls_errors);
        tcase_add_test(tc, test_calls_stray_cancel);
        tcase_add_test(tc, test_calls_routes_file);
        tcase_add_test(tc, test_calls_module_filter);
        tcase_add_test(tc, test_calls_message);
        tcase_add_test(tc, test_calls_nat_tcp_flow);
        tcase_add_test(tc, test_calls_after_restart);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run(calls_suite());
}
