/* SPDX-License-Identifier: MIT */
/* Interop: Debian's Kamailio with its rtpengine module pointed at sipfleet-mediarelay. Kamailio
 * runs a small stateful-proxy config on a free loopback port (rtpengine_offer on the INVITE,
 * rtpengine_answer on replies with SDP, rtpengine_delete on BYE, CANCEL and failure); a SIPp
 * call goes through it to a SIPp callee. The relay must have seen offer, answer and delete,
 * hold no call afterwards, and both SIPp peers must have received SDP naming the relay. */
#include <arpa/inet.h>
#include <glob.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "testlib.h"

#define KAMAILIO     "/usr/sbin/kamailio"

static struct tl_daemon relay;
static int ng_port, port_lo, port_hi;

static void relay_start(void) {
        _cleanup_free_ char *conf = NULL;
        ng_port = tl_free_port();
        port_lo = tl_free_port() & ~1;
        if (port_lo > 65000)
                port_lo = 50000;
        port_hi = port_lo + 99;
        ck_assert_int_ge(asprintf(&conf,
                                  "log-level=debug\n[mediarelay]\nng-listen=127.0.0.1:%d\n"
                                  "port-range=%d-%d\npacket-threads=1\n",
                                  ng_port, port_lo, port_hi),
                         0);
        tl_daemon_start(&relay, "mediarelay", conf);
}

static bool udp_port_bound(int port) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        bool busy = bind(fd, (struct sockaddr *)&a, sizeof a) < 0;
        close(fd);
        return busy;
}

static void wait_bound(int port, const char *what) {
        for (int i = 0; i < 500; i++) {
                if (udp_port_bound(port))
                        return;
                nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        }
        ck_abort_msg("%s did not bind port %d", what, port);
}

static const char kamailio_cfg[] =
        "#!KAMAILIO\n"
        "debug=2\n"
        "log_stderror=yes\n"
        "fork=no\n"
        "children=1\n"
        "listen=udp:127.0.0.1:%d\n"
        "mpath=\"%s\"\n"
        "loadmodule \"tm.so\"\n"
        "loadmodule \"sl.so\"\n"
        "loadmodule \"rr.so\"\n"
        "loadmodule \"pv.so\"\n"
        "loadmodule \"maxfwd.so\"\n"
        "loadmodule \"textops.so\"\n"
        "loadmodule \"siputils.so\"\n"
        "loadmodule \"rtpengine.so\"\n"
        "modparam(\"rtpengine\", \"rtpengine_sock\", \"udp:127.0.0.1:%d\")\n"
        "request_route {\n"
        "        if (!mf_process_maxfwd_header(\"10\")) { sl_send_reply(\"483\", \"Too Many "
        "Hops\"); exit; }\n"
        "        if (is_method(\"CANCEL\")) {\n"
        "                if (t_check_trans()) { rtpengine_delete(); t_relay(); }\n"
        "                exit;\n"
        "        }\n"
        "        if (has_totag()) {\n"
        "                if (loose_route()) {\n"
        "                        if (is_method(\"BYE\")) rtpengine_delete();\n"
        "                        else if (is_method(\"INVITE\") && has_body(\"application/sdp\"))\n"
        "                                rtpengine_offer(\"replace-origin "
        "replace-session-connection\");\n"
        "                        t_on_reply(\"REPLY\");\n"
        "                        t_relay();\n"
        "                        exit;\n"
        "                }\n"
        "                if (is_method(\"ACK\") && t_check_trans()) t_relay();\n"
        "                exit;\n"
        "        }\n"
        "        if (is_method(\"INVITE\")) {\n"
        "                record_route();\n"
        "                if (has_body(\"application/sdp\"))\n"
        "                        rtpengine_offer(\"replace-origin replace-session-connection\");\n"
        "                t_on_reply(\"REPLY\");\n"
        "                t_on_failure(\"FAIL\");\n"
        "        }\n"
        "        $du = \"sip:127.0.0.1:%d\";\n"
        "        t_relay();\n"
        "}\n"
        "onreply_route[REPLY] {\n"
        "        if (has_body(\"application/sdp\"))\n"
        "                rtpengine_answer(\"replace-origin replace-session-connection\");\n"
        "}\n"
        "failure_route[FAIL] {\n"
        "        rtpengine_delete();\n"
        "}\n";

/* The SDP port of the first message in a SIPp message trace that starts with first_line and
 * has a body; -1 when none. */
static int traced_sdp_port(const char *trace, const char *first_line, char *conn, size_t size) {
        for (const char *p = strstr(trace, first_line); p; p = strstr(p + 1, first_line)) {
                const char *end = strstr(p, "\n----");
                const char *m = strstr(p, "m=audio ");
                if (!m || (end && m > end))
                        continue;
                const char *c = strstr(p, "c=IN IP4 ");
                if (c && c < m)
                        snprintf(conn, size, "%.*s", (int)strcspn(c + 9, "\r\n"), c + 9);
                return atoi(m + 8);
        }
        return -1;
}

/* Debian's modules directory, under the multiarch triplet (scripts/deps.sh installs kamailio). */
static char *kamailio_modules(void) {
        glob_t g;
        ck_assert_msg(glob("/usr/lib/*/kamailio/modules/rtpengine.so", 0, NULL, &g) == 0,
                      "kamailio's rtpengine module is not installed (package kamailio)");
        char *dir = strndup(g.gl_pathv[0], strlen(g.gl_pathv[0]) - strlen("rtpengine.so"));
        globfree(&g);
        ck_assert_ptr_nonnull(dir);
        return dir;
}

START_TEST(test_kamailio_rtpengine_module) {
        _cleanup_free_ char *mpath = kamailio_modules();
        relay_start();
        int kport = tl_free_port(), uas_port = tl_free_port();
        _cleanup_free_ char *cfg_text = NULL, *rundir = tl_path("kamailio-run");
        ck_assert_int_ge(asprintf(&cfg_text, kamailio_cfg, kport, mpath, ng_port, uas_port), 0);
        _cleanup_free_ char *cfg = tl_write_file("kamailio.cfg", cfg_text);
        ck_assert_int_eq(mkdir(rundir, 0700), 0);
        char *kargv[] = {KAMAILIO, "-f", cfg, "-DD", "-E", "-Y", rundir, "-w", rundir,
                         "-m", "32", "-M", "8", NULL};
        struct tl_proc kam;
        ck_assert_int_eq(tl_spawn("kamailio", kargv, &kam), 0);
        wait_bound(kport, "kamailio");
        /* The module pings every relay when it starts. */
        for (int i = 0; i < 200 && tl_counter(relay.sock, "mediarelay/count-ng-ping") < 1; i++)
                nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
        ck_assert_int_ge(tl_counter(relay.sock, "mediarelay/count-ng-ping"), 1);

        _cleanup_free_ char *uas_trace = tl_path("uas-messages.log");
        _cleanup_free_ char *uac_trace = tl_path("uac-messages.log");
        char remote[32];
        snprintf(remote, sizeof remote, "127.0.0.1:%d", kport);
        const char *uas_args[] = {"-m", "1", "-s", "bob", "-trace_msg", "-message_file",
                                  uas_trace, NULL};
        struct tl_proc uas, uac;
        tl_sipp_spawn(&uas, "uas", "test/sipp/uas-answer.xml", uas_port, uas_args);
        wait_bound(uas_port, "sipp uas");
        const char *uac_args[] = {remote, "-m", "1", "-s", "bob", "-trace_msg", "-message_file",
                                  uac_trace, NULL};
        tl_sipp_spawn(&uac, "uac", "test/sipp/uac-call.xml", 0, uac_args);
        ck_assert_int_eq(tl_sipp_wait(&uac, "uac", 30000), 0);
        ck_assert_int_eq(tl_sipp_wait(&uas, "uas", 30000), 0);

        /* The relay ran the whole call, and holds nothing now. */
        ck_assert_int_ge(tl_counter(relay.sock, "mediarelay/count-ng-offer"), 1);
        ck_assert_int_ge(tl_counter(relay.sock, "mediarelay/count-ng-answer"), 1);
        ck_assert_int_ge(tl_counter(relay.sock, "mediarelay/count-ng-delete"), 1);
        ck_assert_int_eq(tl_counter(relay.sock, "mediarelay/count-ng-errors"), 0);
        ck_assert_int_eq(tl_counter(relay.sock, "mediarelay/calls"), 0);

        /* Both sides saw the relay's SDP. */
        _cleanup_free_ char *ut = tl_read_file(uas_trace, NULL), *ct = tl_read_file(uac_trace, NULL);
        ck_assert_ptr_nonnull(ut);
        ck_assert_ptr_nonnull(ct);
        char conn[64] = "";
        int p = traced_sdp_port(ut, "INVITE sip:", conn, sizeof conn);
        ck_assert_msg(p >= port_lo && p <= port_hi, "callee's offer port %d:\n%s", p, ut);
        ck_assert_str_eq(conn, "127.0.0.1");
        p = traced_sdp_port(ct, "SIP/2.0 200 OK", conn, sizeof conn);
        ck_assert_msg(p >= port_lo && p <= port_hi, "caller's answer port %d:\n%s", p, ct);

        int st = tl_stop(&kam);
        ck_assert_msg(WIFEXITED(st) || WIFSIGNALED(st), "kamailio");
        free(kam.log);
        tl_daemon_done(&relay);
}
END_TEST

static Suite *kamailio_suite(void) {
        Suite *s = suite_create("mediarelay-kamailio");
        TCase *tc = tcase_create("kamailio");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_kamailio_rtpengine_module);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run(kamailio_suite());
}
