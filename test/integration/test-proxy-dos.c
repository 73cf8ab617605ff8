/* SPDX-License-Identifier: MIT */
/* DoSProtection in the built proxy: bounded bursts of OPTIONS over UDP from 127.0.0.2 (loopback
 * but not in the default white-list): the first ones are answered, then the source is banned
 * (503 with Retry-After, or nothing with action=drop), counters and the log line say so, other
 * sources are still served, and the ban ends after ban-time. Also: a white-listed network is
 * never banned, DOS_BANS/DOS_UNBAN, stray responses count against the packet rate, and a TCP
 * connection of a banned source is closed in drop mode. */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "loop.h"
#include "macro.h"
#include "testlib.h"

/* How long to wait for an answer that must come, and for one that must not. */
#define ANSWER_TIMEOUT_MS 3000
#define SILENCE_MS 500
#define MAX_BURST 32

struct answer {
        int status;      /* 0: none */
        int retry_after; /* -1: no Retry-After */
};

static int socket_from(const char *local_ip, int type, int port) {
        int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        struct sockaddr_in local = {.sin_family = AF_INET};
        ck_assert_int_eq(inet_pton(AF_INET, local_ip, &local.sin_addr), 1);
        ck_assert_msg(bind(fd, (struct sockaddr *)&local, sizeof local) == 0, "bind %s: %s",
                      local_ip, strerror(errno));
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(connect(fd, (struct sockaddr *)&to, sizeof to), 0);
        return fd;
}

static int local_port(int fd) {
        struct sockaddr_in a;
        socklen_t len = sizeof a;
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
        return ntohs(a.sin_port);
}

/* A request to the proxy itself: OPTIONS is answered 200 by Capabilities. */
static char *request(const char *method, const char *local_ip, int lport, int port,
                     const char *transport, const char *id) {
        char *text = NULL;
        ck_assert_int_ge(asprintf(&text,
                                  "%s sip:127.0.0.1:%d SIP/2.0\r\n"
                                  "Via: SIP/2.0/%s %s:%d;rport;branch=z9hG4bK-%s\r\n"
                                  "From: <sip:flood@127.0.0.1>;tag=%s\r\n"
                                  "To: <sip:127.0.0.1:%d>\r\n"
                                  "Call-ID: %s@dos\r\n"
                                  "CSeq: 1 %s\r\n"
                                  "Contact: <sip:flood@%s:%d>\r\n"
                                  "Max-Forwards: 70\r\n"
                                  "Content-Length: 0\r\n\r\n",
                                  method, port, transport, local_ip, lport, id, id, port, id,
                                  method, local_ip, lport),
                         0);
        return text;
}

/* The value of a header in a response, or NULL. */
static const char *header(const char *msg, const char *name, char *buf, size_t size) {
        size_t n = strlen(name);
        for (const char *p = strstr(msg, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
                if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':') {
                        const char *v = p + 3 + n;
                        v += strspn(v, " \t");
                        snprintf(buf, size, "%.*s", (int)strcspn(v, "\r\n"), v);
                        return buf;
                }
        }
        return NULL;
}

/* Sends n OPTIONS from fd at once (ids "<tag>-<i>"), then collects the answers by Call-ID until
 * each request has one or nothing came for wait_ms. */
static void burst(int fd, const char *local_ip, int port, const char *tag, int n,
                  struct answer *answers, int wait_ms) {
        ck_assert_int_le(n, MAX_BURST);
        for (int i = 0; i < n; i++) {
                char id[64];
                snprintf(id, sizeof id, "%s-%d", tag, i);
                answers[i] = (struct answer){0, -1};
                _cleanup_free_ char *req = request("OPTIONS", local_ip, local_port(fd), port,
                                                   "UDP", id);
                ck_assert_int_eq(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
        }
        int got = 0;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        while (got < n && poll(&pfd, 1, wait_ms) > 0) {
                char buf[4096], value[256];
                ssize_t len = recv(fd, buf, sizeof buf - 1, 0);
                ck_assert_int_gt(len, 0);
                buf[len] = 0;
                int status = 0, i = -1;
                ck_assert_msg(sscanf(buf, "SIP/2.0 %3d ", &status) == 1, "not a response: %s",
                              buf);
                size_t tl = strlen(tag);
                char *end = NULL;
                if (header(buf, "Call-ID", value, sizeof value) && strncmp(value, tag, tl) == 0 &&
                    value[tl] == '-')
                        i = (int)strtol(value + tl + 1, &end, 10);
                ck_assert_msg(end && streq(end, "@dos") && i >= 0 && i < n,
                              "unexpected answer: %s", buf);
                ck_assert_msg(answers[i].status == 0, "two answers to %s-%d", tag, i);
                answers[i].status = status;
                if (header(buf, "Retry-After", value, sizeof value))
                        answers[i].retry_after = atoi(value);
                got++;
        }
}

/* One OPTIONS from local_ip over UDP: the status (0: no answer within wait_ms). */
static int options_from(const char *local_ip, int port, const char *id, int wait_ms) {
        _cleanup_close_ int fd = socket_from(local_ip, SOCK_DGRAM, port);
        struct answer a;
        burst(fd, local_ip, port, id, 1, &a, wait_ms);
        return a.status;
}

static char *proxy_conf(const char *dos_lines) {
        char *text = NULL;
        ck_assert_int_ge(asprintf(&text, "log-level=notice\n[module::DoSProtection]\n%s",
                                  dos_lines),
                         0);
        return text;
}

/* Waits (bounded) until the proxy's log holds text. */
static bool log_has(struct tl_proxy *f, const char *text) {
        uint64_t deadline = now_msec() + ANSWER_TIMEOUT_MS;
        do {
                _cleanup_free_ char *log = tl_log(&f->proc);
                if (strstr(log, text))
                        return true;
                poll(NULL, 0, 20);
        } while (now_msec() < deadline);
        return false;
}

static json_t *first_ban(json_t *j) {
        json_t *bans = json_object_get(j, "bans");
        ck_assert_msg(json_is_array(bans), "no bans array");
        ck_assert_int_eq(json_array_size(bans), 1);
        return json_array_get(bans, 0);
}

START_TEST(test_dos_reject_bans_then_serves_again) {
        struct tl_proxy f = {0};
        _cleanup_free_ char *conf = proxy_conf("time-period=5s\n"
                                               "packet-rate-limit=1000\n"
                                               "request-rate-limit=1\n"
                                               "ban-time=2s\n");
        tl_proxy_start(&f, conf);
        _cleanup_close_ int fd = socket_from("127.0.0.2", SOCK_DGRAM, f.port);
        struct answer a[12];

        /* A burst of 5 fits (1 request/s over 5 s, refilled one per second); the 6th bans. */
        burst(fd, "127.0.0.2", f.port, "reject", 12, a, ANSWER_TIMEOUT_MS);
        uint64_t banned_at = now_msec();
        for (int i = 0; i < 5; i++)
                ck_assert_msg(a[i].status == 200, "request %d: %d", i, a[i].status);
        for (int i = 5; i < 12; i++) {
                ck_assert_msg(a[i].status == 503, "request %d: %d", i, a[i].status);
                ck_assert_msg(a[i].retry_after >= 1 && a[i].retry_after <= 2,
                              "request %d: Retry-After %d", i, a[i].retry_after);
        }
        ck_assert_int_eq(tl_counter(f.sock, "module::DoSProtection/count-bans"), 1);
        ck_assert_int_eq(tl_counter(f.sock, "module::DoSProtection/count-banned-requests"), 7);
        ck_assert_int_eq(tl_counter(f.sock, "module::DoSProtection/banned-sources"), 1);
        ck_assert_int_eq(tl_counter(f.sock, "module::DoSProtection/tracked-sources"), 1);
        ck_assert_int_eq(tl_counter(f.sock, "global/count-reply-503"), 7);
        /* First in the chain: the refused requests went no further. */
        ck_assert_int_eq(tl_counter(f.sock, "module::DoSProtection/count-requests"), 12);
        ck_assert_int_eq(tl_counter(f.sock, "module::SanityChecker/count-requests"), 5);
        ck_assert_msg(log_has(&f, "Banning 127.0.0.2 for 2s: over request-rate-limit "
                                  "(1 requests/s averaged over 5s)."),
                      "no ban line in the log");

        json_t *j = tl_ctl(f.sock, "DOS_BANS");
        json_t *ban = first_ban(j);
        ck_assert_str_eq(json_string_value(json_object_get(ban, "source")), "127.0.0.2");
        ck_assert_str_eq(json_string_value(json_object_get(ban, "reason")),
                         "request-rate-limit");
        json_int_t left = json_integer_value(json_object_get(ban, "remaining-ms"));
        ck_assert_msg(left > 0 && left <= 2000, "remaining-ms %lld", (long long)left);
        ck_assert_int_eq(json_integer_value(json_object_get(ban, "refused")), 7);
        json_decref(j);

        /* Another source is served during the ban (127.0.0.1 is white-listed by default). */
        ck_assert_int_eq(options_from("127.0.0.1", f.port, "other", ANSWER_TIMEOUT_MS), 200);

        /* After ban-time it is served again: poll, bounded. */
        int status = 0, probes = 0;
        uint64_t deadline = now_msec() + 10000;
        while (now_msec() < deadline) {
                char id[32];
                snprintf(id, sizeof id, "probe%d", probes++);
                struct answer p;
                burst(fd, "127.0.0.2", f.port, id, 1, &p, ANSWER_TIMEOUT_MS);
                status = p.status;
                if (status == 200)
                        break;
                ck_assert_int_eq(status, 503);
                poll(NULL, 0, 100);
        }
        ck_assert_int_eq(status, 200);
        ck_assert_msg(now_msec() - banned_at >= 1500, "served again after %llu ms",
                      (unsigned long long)(now_msec() - banned_at));
        ck_assert_int_eq(tl_counter(f.sock, "module::DoSProtection/count-bans"), 1);
        /* The cleanup timer (1 s) forgets the ended ban. */
        deadline = now_msec() + 5000;
        while (tl_counter(f.sock, "module::DoSProtection/banned-sources") != 0 &&
               now_msec() < deadline)
                poll(NULL, 0, 100);
        ck_assert_int_eq(tl_counter(f.sock, "module::DoSProtection/banned-sources"), 0);
        tl_proxy_done(&f);
}
END_TEST

START_TEST(test_dos_drop_sends_nothing) {
        struct tl_proxy f = {0};
        _cleanup_free_ char *conf = proxy_conf("time-period=3s\n"
                                               "request-rate-limit=1\n"
                                               "ban-time=60s\n"
                                               "action=drop\n");
        tl_proxy_start(&f, conf);
        _cleanup_close_ int fd = socket_from("127.0.0.2", SOCK_DGRAM, f.port);
        struct answer a[8];

        burst(fd, "127.0.0.2", f.port, "drop", 8, a, SILENCE_MS);
        for (int i = 0; i < 3; i++)
                ck_assert_msg(a[i].status == 200, "request %d: %d", i, a[i].status);
        for (int i = 3; i < 8; i++)
                ck_assert_msg(a[i].status == 0, "request %d answered %d", i, a[i].status);
        ck_assert_int_eq(tl_counter(f.sock, "module::DoSProtection/count-bans"), 1);
        ck_assert_int_eq(tl_counter(f.sock, "module::DoSProtection/count-banned-requests"), 5);
        ck_assert_int_eq(tl_counter(f.sock, "global/count-reply-503"), 0);
        ck_assert_msg(log_has(&f, "Banning 127.0.0.2 for 60s: over request-rate-limit "
                                  "(1 requests/s averaged over 3s)."),
                      "no ban line in the log");

        /* nta cannot end an INVITE transaction silently: it gets the 503. (Own socket: nta
         * retransmits the 503 until an ACK that this test does not send.) */
        {
                _cleanup_close_ int ifd = socket_from("127.0.0.2", SOCK_DGRAM, f.port);
                _cleanup_free_ char *inv = request("INVITE", "127.0.0.2", local_port(ifd),
                                                   f.port, "UDP", "drop-invite");
                ck_assert_int_eq(send(ifd, inv, strlen(inv), 0), (ssize_t)strlen(inv));
                struct pollfd pfd = {.fd = ifd, .events = POLLIN};
                char buf[4096], value[64];
                do { /* the proxy sends 100 Trying before the module chain runs */
                        ck_assert_msg(poll(&pfd, 1, ANSWER_TIMEOUT_MS) == 1, "no answer to INVITE");
                        ssize_t n = recv(ifd, buf, sizeof buf - 1, 0);
                        ck_assert_int_gt(n, 0);
                        buf[n] = 0;
                } while (strncmp(buf, "SIP/2.0 1", 9) == 0);
                ck_assert_msg(strncmp(buf, "SIP/2.0 503 ", 12) == 0, "%s", buf);
                ck_assert_msg(header(buf, "Retry-After", value, sizeof value) && atoi(value) > 50,
                              "%s", buf);
        }

        /* Over TCP the banned source gets no answer and its connection is closed. */
        {
                _cleanup_close_ int tfd = socket_from("127.0.0.2", SOCK_STREAM, f.port);
                _cleanup_free_ char *req = request("OPTIONS", "127.0.0.2", local_port(tfd),
                                                   f.port, "TCP", "drop-tcp");
                ck_assert_int_eq(send(tfd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
                struct pollfd pfd = {.fd = tfd, .events = POLLIN};
                ck_assert_msg(poll(&pfd, 1, ANSWER_TIMEOUT_MS) == 1,
                              "TCP connection of a banned source still open");
                char buf[512];
                ssize_t n = recv(tfd, buf, sizeof buf, 0);
                ck_assert_msg(n == 0 || (n < 0 && errno == ECONNRESET),
                              "expected the connection closed, got %zd bytes", n);
        }
        ck_assert_int_eq(tl_counter(f.sock, "module::DoSProtection/count-banned-requests"), 7);

        ck_assert_int_eq(options_from("127.0.0.1", f.port, "other", ANSWER_TIMEOUT_MS), 200);
        tl_proxy_done(&f);
}
END_TEST

START_TEST(test_dos_white_list_network_exempt) {
        struct tl_proxy f = {0};
        _cleanup_free_ char *conf = proxy_conf("time-period=3s\n"
                                               "request-rate-limit=1\n"
                                               "ban-time=60s\n"
                                               "white-list=127.0.0.0/30 ::1\n");
        tl_proxy_start(&f, conf);
        struct answer a[20];
        {
                _cleanup_close_ int fd = socket_from("127.0.0.2", SOCK_DGRAM, f.port);
                burst(fd, "127.0.0.2", f.port, "white", 20, a, ANSWER_TIMEOUT_MS);
                for (int i = 0; i < 20; i++)
                        ck_assert_msg(a[i].status == 200, "request %d: %d", i, a[i].status);
        }
        ck_assert_int_eq(tl_counter(f.sock, "module::DoSProtection/count-bans"), 0);
        ck_assert_int_eq(tl_counter(f.sock, "module::DoSProtection/tracked-sources"), 0);

        /* 127.0.0.5 is outside the network: counted and banned. */
        {
                _cleanup_close_ int fd = socket_from("127.0.0.5", SOCK_DGRAM, f.port);
                burst(fd, "127.0.0.5", f.port, "black", 5, a, ANSWER_TIMEOUT_MS);
                for (int i = 0; i < 5; i++)
                        ck_assert_msg(a[i].status == (i < 3 ? 200 : 503), "request %d: %d", i,
                                      a[i].status);
        }
        ck_assert_int_eq(tl_counter(f.sock, "module::DoSProtection/count-bans"), 1);
        tl_proxy_done(&f);
}
END_TEST

START_TEST(test_dos_bad_white_list_refused) {
        struct tl_proxy f = {0};
        _cleanup_free_ char *conf = proxy_conf("white-list=127.0.0.1 10.0.0.0/33\n");
        _cleanup_free_ char *bin = tl_build_path("proxy/sipfleet-proxy");
        tl_proxy_write_conf(&f, conf);
        char *argv[] = {bin, "--config", f.conf, NULL};
        struct tl_proc p = {0};
        tl_spawn("bad-white-list", argv, &p);
        int status = tl_wait(&p, 10000);
        ck_assert_int_ge(status, 0);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0);
        _cleanup_free_ char *log = tl_log(&p);
        ck_assert_msg(strstr(log, "white-list: invalid address or network '10.0.0.0/33'"), "%s",
                      log);
        free(p.log);
        tl_proxy_done(&f);
}
END_TEST

START_TEST(test_dos_ctl_bans_and_unban) {
        struct tl_proxy f = {0};
        _cleanup_free_ char *conf = proxy_conf("time-period=2s\n"
                                               "request-rate-limit=1\n"
                                               "ban-time=60s\n");
        tl_proxy_start(&f, conf);
        _cleanup_close_ int fd = socket_from("127.0.0.2", SOCK_DGRAM, f.port);
        struct answer a[4];

        json_t *j = tl_ctl(f.sock, "DOS_BANS");
        ck_assert_int_eq(json_array_size(json_object_get(j, "bans")), 0);
        json_decref(j);

        burst(fd, "127.0.0.2", f.port, "ctl", 4, a, ANSWER_TIMEOUT_MS);
        ck_assert_int_eq(a[1].status, 200);
        ck_assert_int_eq(a[2].status, 503);
        ck_assert_int_ge(a[2].retry_after, 59);

        j = tl_ctl(f.sock, "DOS_BANS");
        json_t *ban = first_ban(j);
        ck_assert_str_eq(json_string_value(json_object_get(ban, "source")), "127.0.0.2");
        ck_assert_int_gt(json_integer_value(json_object_get(ban, "remaining-ms")), 50000);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "tracked-sources")), 1);
        json_decref(j);

        j = tl_ctl(f.sock, "DOS_UNBAN 127.0.0.2");
        ck_assert_str_eq(json_string_value(json_object_get(j, "unbanned")), "127.0.0.2");
        json_decref(j);
        j = tl_ctl(f.sock, "DOS_BANS");
        ck_assert_int_eq(json_array_size(json_object_get(j, "bans")), 0);
        json_decref(j);
        ck_assert_msg(log_has(&f, "Ban of 127.0.0.2 lifted by the control socket."), "no log");

        burst(fd, "127.0.0.2", f.port, "after", 1, a, ANSWER_TIMEOUT_MS);
        ck_assert_int_eq(a[0].status, 200);

        static const struct {
                const char *line, *error;
        } bad[] = {
                {"DOS_UNBAN 127.0.0.2", "'127.0.0.2' is not banned"},
                {"DOS_UNBAN not-an-address", "Invalid address 'not-an-address'"},
                {"DOS_UNBAN", "Usage: DOS_UNBAN <address>"},
                {"DOS_BANS extra", "Usage: DOS_BANS"},
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                j = tl_ctl(f.sock, bad[i].line);
                const char *e = json_string_value(json_object_get(j, "error"));
                ck_assert_msg(e && streq(e, bad[i].error), "%s: %s", bad[i].line, strna(e));
                json_decref(j);
        }
        tl_proxy_done(&f);
}
END_TEST

/* Responses that match no transaction reach proxy.c's on_message, which counts them against
 * the packet rate through dos_note_packet(). */
START_TEST(test_dos_stray_responses_count_as_packets) {
        struct tl_proxy f = {0};
        _cleanup_free_ char *conf = proxy_conf("time-period=3s\n"
                                               "packet-rate-limit=1\n"
                                               "request-rate-limit=0\n"
                                               "ban-time=60s\n");
        tl_proxy_start(&f, conf);
        _cleanup_close_ int fd = socket_from("127.0.0.3", SOCK_DGRAM, f.port);

        for (int i = 0; i < 5; i++) {
                _cleanup_free_ char *resp = NULL;
                ck_assert_int_ge(asprintf(&resp,
                                          "SIP/2.0 200 OK\r\n"
                                          "Via: SIP/2.0/UDP 192.0.2.1:5060;"
                                          "branch=z9hG4bK-stray%d\r\n"
                                          "From: <sip:a@192.0.2.1>;tag=stray%d\r\n"
                                          "To: <sip:b@192.0.2.1>;tag=x\r\n"
                                          "Call-ID: stray%d@dos\r\n"
                                          "CSeq: 1 OPTIONS\r\n"
                                          "Content-Length: 0\r\n\r\n",
                                          i, i, i),
                                 0);
                ck_assert_int_eq(send(fd, resp, strlen(resp), 0), (ssize_t)strlen(resp));
        }
        /* Answered after the responses were read (one socket, in order): banned by then. */
        struct answer a;
        burst(fd, "127.0.0.3", f.port, "after-stray", 1, &a, ANSWER_TIMEOUT_MS);
        ck_assert_int_eq(a.status, 503);
        ck_assert_int_eq(tl_counter(f.sock, "module::DoSProtection/count-bans"), 1);
        ck_assert_int_eq(tl_counter(f.sock, "module::DoSProtection/count-dropped-packets"), 2);
        ck_assert_int_eq(tl_counter(f.sock, "module::DoSProtection/count-banned-requests"), 1);
        ck_assert_msg(log_has(&f, "Banning 127.0.0.3 for 60s: over packet-rate-limit "
                                  "(1 messages/s averaged over 3s)."),
                      "no ban line in the log");
        tl_proxy_done(&f);
}
END_TEST

int main(void) {
        Suite *s = suite_create("proxy-dos");
        TCase *tc = tcase_create("dos");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_dos_reject_bans_then_serves_again);
        tcase_add_test(tc, test_dos_drop_sends_nothing);
        tcase_add_test(tc, test_dos_white_list_network_exempt);
        tcase_add_test(tc, test_dos_bad_white_list_refused);
        tcase_add_test(tc, test_dos_ctl_bans_and_unban);
        tcase_add_test(tc, test_dos_stray_responses_count_as_packets);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
