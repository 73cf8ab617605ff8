/* SPDX-License-Identifier: MIT */
/* The proxy's MediaRelay module with real sipfleet-mediarelay daemons: a caller written here
 * (raw SIP over UDP) calls bob (test/lib/sipua.h for REGISTER and the requests bob receives)
 * through the built proxy; the SDP on both sides names the relay, RTP sent by plain UDP
 * sockets crosses the relay both ways, re-INVITEs from either side keep the ports, BYE,
 * CANCEL, a decline and
 * Timer C delete the relay's session (NG `list` on the relay), forked early media from two
 * devices, the marker of an already relayed call, failover when the first relay hangs
 * (SIGSTOP), a call going on unchanged when no relay answers, a late offer (SDP in the 200
 * and the ACK), and bad configs. */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bencode.h"
#include "macro.h"
#include "sipua.h"
#include "testlib.h"

struct relay {
        struct tl_daemon d;
        int ng, lo, hi;
};

static struct tl_proxy proxy;
static struct relay relays[2];

static void relay_start(struct relay *r) {
        _cleanup_free_ char *conf = NULL;
        r->ng = tl_free_port();
        r->lo = tl_free_port() & ~1;
        if (r->lo > 65000)
                r->lo = 50000;
        r->hi = r->lo + 99;
        ck_assert_int_ge(asprintf(&conf,
                                  "log-level=debug\n[mediarelay]\nng-listen=127.0.0.1:%d\nport-range=%d-%d\n"
                                  "packet-threads=1\n",
                                  r->ng, r->lo, r->hi),
                         0);
        if (r == &relays[1] && !r->d.sock) {
                /* Two relays at once: the fixture names the socket after the role. */
                r->d.sock = tl_path("mediarelay-2.sock");
                r->d.metrics_port = tl_free_port();
                r->d.role = strdup("mediarelay");
        }
        tl_daemon_start(&r->d, "mediarelay", conf);
}

static void proxy_start_with(const char *media_conf) {
        _cleanup_free_ char *conf = NULL;
        ck_assert_int_ge(asprintf(&conf,
                                  "log-level=debug\n"
                                  "[module::Registrar]\nreg-domains=localhost\n"
                                  "db-implementation=internal\n"
                                  "[module::Router]\ntimer-c=1s\n"
                                  "[module::MediaRelay]\nenabled=true\n%s",
                                  media_conf),
                         0);
        tl_proxy_start(&proxy, conf);
}

static struct sockaddr_in loopback(int port) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return sa;
}

/* ---- NG to a relay, from the test ---- */

static struct bencode *ng(struct relay *r, const char *command) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        /* A new cookie each time: the relay answers a datagram it saw before from a cache. */
        static unsigned cookie;
        char out[128];
        int n = snprintf(out, sizeof out, "t%u d7:command%zu:%se", ++cookie, strlen(command),
                         command);
        struct sockaddr_in sa = loopback(r->ng);
        ck_assert_int_eq(sendto(fd, out, (size_t)n, 0, (struct sockaddr *)&sa, sizeof sa), n);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ck_assert_int_eq(poll(&p, 1, 3000), 1);
        char buf[65536];
        ssize_t len = recv(fd, buf, sizeof buf, 0);
        close(fd);
        const char *space = memchr(buf, ' ', (size_t)(len > 0 ? len : 0));
        ck_assert_ptr_nonnull(space);
        size_t off = (size_t)(space - buf) + 1;
        struct bencode *b = NULL;
        ck_assert_int_eq(bencode_decode(buf + off, (size_t)len - off, NULL, &b, NULL, NULL), 0);
        return b;
}

static size_t relay_calls(struct relay *r) {
        _cleanup_bencode_ struct bencode *b = ng(r, "list");
        struct bencode *calls = bencode_dict_get(b, "calls");
        ck_assert_ptr_nonnull(calls);
        return calls->n;
}

static void wait_relay_calls(struct relay *r, size_t want) {
        size_t n = 0;
        for (int i = 0; i < 100 && (n = relay_calls(r)) != want; i++)
                nanosleep(&(struct timespec){0, 30 * 1000 * 1000}, NULL);
        ck_assert_uint_eq(n, want);
}

/* ---- SIP and RTP peers ---- */

struct sock {
        int fd, port;
};

static struct sock sock_new(void) {
        struct sock s = {.fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
        ck_assert_int_ge(s.fd, 0);
        struct sockaddr_in sa = loopback(0);
        ck_assert_int_eq(bind(s.fd, (struct sockaddr *)&sa, sizeof sa), 0);
        socklen_t len = sizeof sa;
        ck_assert_int_eq(getsockname(s.fd, (struct sockaddr *)&sa, &len), 0);
        s.port = ntohs(sa.sin_port);
        return s;
}

static void sock_send(struct sock *s, int port, const void *data, size_t len) {
        struct sockaddr_in sa = loopback(port);
        ck_assert_int_eq(sendto(s->fd, data, len, 0, (struct sockaddr *)&sa, sizeof sa),
                         (ssize_t)len);
}

/* One datagram (NUL-terminated) within timeout_ms; its length, 0 on timeout. */
static size_t sock_recv(struct sock *s, char *buf, size_t size, int timeout_ms) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, timeout_ms) != 1)
                return 0;
        ssize_t n = recv(s->fd, buf, size - 1, 0);
        ck_assert_int_ge(n, 0);
        buf[n] = '\0';
        return (size_t)n;
}

static char *make_sdp(int port, unsigned version) {
        char *s = NULL;
        ck_assert_int_ge(asprintf(&s,
                                  "v=0\r\no=- 1 %u IN IP4 127.0.0.1\r\ns=-\r\n"
                                  "c=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                                  "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
                                  version, port),
                         0);
        return s;
}

static int sdp_port(const char *msg) {
        _cleanup_free_ char *body = tl_sip_body(msg);
        const char *m = strstr(body, "m=audio ");
        ck_assert_msg(m, "no m=audio in:\n%s", msg);
        return atoi(m + 8);
}

static bool in_range(struct relay *r, int port) {
        return port >= r->lo && port <= r->hi;
}

/* RTP from one socket to a port, expected on another socket. */
static void expect_rtp(struct sock *from, int to_port, struct sock *at, uint16_t seq) {
        unsigned char pkt[172] = {0x80, 0x00};
        pkt[2] = (unsigned char)(seq >> 8);
        pkt[3] = (unsigned char)seq;
        pkt[11] = 0x42;
        char buf[2048];
        for (int tries = 0; tries < 20; tries++) {
                sock_send(from, to_port, pkt, sizeof pkt);
                size_t n = sock_recv(at, buf, sizeof buf, 100);
                if (n == sizeof pkt && (unsigned char)buf[3] == (unsigned char)seq)
                        return;
        }
        ck_abort_msg("RTP sent to port %d did not arrive on port %d", to_port, at->port);
}

/* The caller: raw SIP over UDP to the proxy. */
struct caller {
        struct sock sip, rtp;
        char call_id[64], tag[32];
        unsigned cseq;
        char branch[64];
        char *route, *contact, *to_tag; /* of the dialog, from the 2xx */
};

static void caller_new(struct caller *c, const char *call_id) {
        *c = (struct caller){.sip = sock_new(), .rtp = sock_new(), .cseq = 1};
        snprintf(c->call_id, sizeof c->call_id, "%s", call_id);
        snprintf(c->tag, sizeof c->tag, "ct%d", c->sip.port);
}

static void caller_free(struct caller *c) {
        close(c->sip.fd);
        close(c->rtp.fd);
        free(c->route);
        free(c->contact);
        free(c->to_tag);
}

/* An INVITE (in the dialog once it has one), BYE, ACK, CANCEL; sdp may be NULL. */
static void caller_send(struct caller *c, const char *method, const char *sdp, const char *extra,
                        bool new_transaction) {
        if (new_transaction)
                snprintf(c->branch, sizeof c->branch, "z9hG4bK-%s-%ld", method, random());
        bool dialog = c->to_tag && !streq(method, "CANCEL");
        _cleanup_free_ char *req = NULL, *route = NULL, *to_tag = NULL;
        if (dialog && c->route)
                ck_assert_int_ge(asprintf(&route, "Route: %s\r\n", c->route), 0);
        if (dialog)
                ck_assert_int_ge(asprintf(&to_tag, ";tag=%s", c->to_tag), 0);
        ck_assert_int_ge(
                asprintf(&req,
                         "%s %s SIP/2.0\r\n"
                         "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=%s;rport\r\n"
                         "%s"
                         "From: <sip:alice@localhost>;tag=%s\r\n"
                         "To: <sip:bob@localhost>%s\r\n"
                         "Call-ID: %s\r\n"
                         "CSeq: %u %s\r\n"
                         "Contact: <sip:alice@127.0.0.1:%d>\r\n"
                         "Max-Forwards: 70\r\n"
                         "%s"
                         "%s"
                         "Content-Length: %zu\r\n\r\n%s",
                         method, dialog && c->contact ? c->contact : "sip:bob@localhost",
                         c->sip.port, c->branch, route ? route : "", c->tag, to_tag ? to_tag : "",
                         c->call_id, c->cseq, method, c->sip.port, extra ? extra : "",
                         sdp ? "Content-Type: application/sdp\r\n" : "", sdp ? strlen(sdp) : 0,
                         sdp ? sdp : ""),
                0);
        sock_send(&c->sip, proxy.port, req, strlen(req));
}

/* The next response with this status (others skipped; 100 always), within 8 s. */
static char *caller_expect(struct caller *c, int status) {
        char *buf = malloc(65536);
        ck_assert_ptr_nonnull(buf);
        for (int waited = 0; waited < 8000;) {
                size_t n = sock_recv(&c->sip, buf, 65536, 250);
                waited += n ? 0 : 250;
                if (!n || strncmp(buf, "SIP/2.0 ", 8) != 0)
                        continue;
                int st = atoi(buf + 8);
                if (st == status)
                        return buf;
                ck_assert_msg(st == 100 || st < status, "caller got %d, wanted %d:\n%s", st,
                              status, buf);
        }
        ck_abort_msg("caller: no %d", status);
        return NULL;
}

/* Remembers the dialog of a 2xx: route set (Record-Route), remote target, to-tag. */
static void caller_dialog(struct caller *c, const char *resp) {
        free(c->route);
        free(c->contact);
        free(c->to_tag);
        c->route = tl_sip_header(resp, "Record-Route");
        _cleanup_free_ char *contact = tl_sip_header(resp, "Contact");
        _cleanup_free_ char *to = tl_sip_header(resp, "To");
        ck_assert_ptr_nonnull(contact);
        ck_assert_ptr_nonnull(to);
        const char *lt = strchr(contact, '<');
        c->contact = lt ? strndup(lt + 1, strcspn(lt + 1, ">")) : strdup(contact);
        const char *t = strstr(to, "tag=");
        ck_assert_ptr_nonnull(t);
        c->to_tag = strndup(t + 4, strcspn(t + 4, ";>"));
}

/* bob's answer: tl_ua_reply's headers with our own to-tag and SDP. */
static char *lines_of(const char *msg, const char *name) {
        size_t nl = strlen(name);
        const char *end = strstr(msg, "\r\n\r\n");
        char *out = strdup("");
        for (const char *p = strstr(msg, "\r\n"); p && p < end; p = strstr(p, "\r\n")) {
                p += 2;
                if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
                        char *n = NULL;
                        ck_assert_int_ge(asprintf(&n, "%s%.*s\r\n", out,
                                                  (int)(strstr(p, "\r\n") - p), p),
                                         0);
                        free(out);
                        out = n;
                }
        }
        return out;
}

static void bob_reply(struct tl_ua *ua, const char *req, int status, const char *tag,
                      const char *sdp) {
        _cleanup_free_ char *vias = lines_of(req, "Via"), *rrs = lines_of(req, "Record-Route");
        _cleanup_free_ char *from = tl_sip_header(req, "From"), *to = tl_sip_header(req, "To");
        _cleanup_free_ char *call_id = tl_sip_header(req, "Call-ID");
        _cleanup_free_ char *cseq = tl_sip_header(req, "CSeq"), *resp = NULL;
        bool has_tag = strstr(to, "tag=");
        ck_assert_int_ge(
                asprintf(&resp,
                         "SIP/2.0 %d Test\r\n%s%sFrom: %s\r\nTo: %s%s%s\r\nCall-ID: %s\r\n"
                         "CSeq: %s\r\nContact: <sip:bob@127.0.0.1:%d>\r\n%sContent-Length: %zu\r\n"
                         "\r\n%s",
                         status, vias, rrs, from, to, has_tag ? "" : ";tag=", has_tag ? "" : tag,
                         call_id, cseq, ua->port,
                         sdp ? "Content-Type: application/sdp\r\n" : "", sdp ? strlen(sdp) : 0,
                         sdp ? sdp : ""),
                0);
        ck_assert_int_eq(sendto(ua->fd, resp, strlen(resp), 0, (struct sockaddr *)&ua->peer,
                                ua->peer_len),
                         (ssize_t)strlen(resp));
}

/* The next request bob gets with this method (others answered 200 or skipped). */
static char *bob_expect(struct tl_ua *ua, const char *method) {
        for (int i = 0; i < 10; i++) {
                char *req = tl_ua_recv_request(ua, 5000);
                ck_assert_msg(req, "%s: no %s", ua->user, method);
                _cleanup_free_ char *m = tl_sip_method(req);
                if (streq(m, method))
                        return req;
                free(req);
        }
        ck_abort_msg("%s: no %s", ua->user, method);
        return NULL;
}

static long long media_counter(const char *name) {
        _cleanup_free_ char *path = NULL;
        ck_assert_int_ge(asprintf(&path, "module::MediaRelay/%s", name), 0);
        return tl_counter(proxy.sock, path);
}

static char *relays_conf(struct relay *a, struct relay *b, const char *extra) {
        static char text[512];
        if (b)
                snprintf(text, sizeof text, "relays=127.0.0.1:%d;weight=1000 127.0.0.1:%d\n%s",
                         a->ng, b->ng, extra ? extra : "");
        else
                snprintf(text, sizeof text, "relays=127.0.0.1:%d\n%s", a->ng, extra ? extra : "");
        return text;
}

/* ---- tests ---- */

START_TEST(test_media_call_rtp_reinvite_bye) {
        relay_start(&relays[0]);
        proxy_start_with(relays_conf(&relays[0], NULL, NULL));
        struct tl_ua bob;
        tl_ua_open(&bob, "bob", NULL, proxy.port);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        struct sock bob_rtp = sock_new();

        struct caller c;
        caller_new(&c, "media-call-1@test");
        _cleanup_free_ char *offer = make_sdp(c.rtp.port, 1);
        caller_send(&c, "INVITE", offer, NULL, true);
        _cleanup_free_ char *inv = bob_expect(&bob, "INVITE");
        /* The offer bob sees names the relay, and the marker is there. */
        int to_bob_port = sdp_port(inv);
        ck_assert_msg(in_range(&relays[0], to_bob_port), "offer not rewritten:\n%s", inv);
        _cleanup_free_ char *marker = tl_sip_header(inv, "X-Sipfleet-Media-Relay");
        ck_assert_msg(marker, "no marker:\n%s", inv);
        _cleanup_free_ char *answer = make_sdp(bob_rtp.port, 1);
        bob_reply(&bob, inv, 200, "bob1", answer);
        _cleanup_free_ char *ok = caller_expect(&c, 200);
        int to_alice_port = sdp_port(ok);
        ck_assert_msg(in_range(&relays[0], to_alice_port), "answer not rewritten:\n%s", ok);
        ck_assert_int_ne(to_alice_port, to_bob_port);
        caller_dialog(&c, ok);
        caller_send(&c, "ACK", NULL, NULL, true);
        ck_assert_uint_eq(relay_calls(&relays[0]), 1);

        /* RTP both ways through the relay. */
        expect_rtp(&c.rtp, to_alice_port, &bob_rtp, 1);
        expect_rtp(&bob_rtp, to_bob_port, &c.rtp, 2);
        expect_rtp(&c.rtp, to_alice_port, &bob_rtp, 3);

        /* A re-INVITE (hold/resume, codec change...) keeps the relay's ports. */
        c.cseq++;
        _cleanup_free_ char *offer2 = make_sdp(c.rtp.port, 2);
        caller_send(&c, "INVITE", offer2, NULL, true);
        _cleanup_free_ char *reinv = bob_expect(&bob, "INVITE");
        ck_assert_int_eq(sdp_port(reinv), to_bob_port);
        _cleanup_free_ char *answer2 = make_sdp(bob_rtp.port, 2);
        bob_reply(&bob, reinv, 200, "bob1", answer2);
        _cleanup_free_ char *ok2 = caller_expect(&c, 200);
        ck_assert_int_eq(sdp_port(ok2), to_alice_port);
        caller_send(&c, "ACK", NULL, NULL, true);
        expect_rtp(&bob_rtp, to_bob_port, &c.rtp, 4);

        /* A re-INVITE from bob's side (its own from-tag) finds the same ports too. */
        _cleanup_free_ char *bob_offer = make_sdp(bob_rtp.port, 3), *breq = NULL;
        ck_assert_int_ge(asprintf(&breq,
                                  "INVITE sip:alice@127.0.0.1:%d SIP/2.0\r\n"
                                  "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-bob-re;rport\r\n"
                                  "Route: %s\r\n"
                                  "From: <sip:bob@localhost>;tag=bob1\r\n"
                                  "To: <sip:alice@localhost>;tag=%s\r\n"
                                  "Call-ID: %s\r\nCSeq: 100 INVITE\r\n"
                                  "Contact: <sip:bob@127.0.0.1:%d>\r\nMax-Forwards: 70\r\n"
                                  "Content-Type: application/sdp\r\nContent-Length: %zu\r\n\r\n%s",
                                  c.sip.port, bob.port, c.route, c.tag, c.call_id,
                                  bob.port, strlen(bob_offer), bob_offer),
                         0);
        struct sockaddr_in proxy_sa = loopback(proxy.port);
        ck_assert_int_eq(sendto(bob.fd, breq, strlen(breq), 0, (struct sockaddr *)&proxy_sa,
                                sizeof proxy_sa),
                         (ssize_t)strlen(breq));
        char *got = malloc(65536);
        ck_assert_ptr_nonnull(got);
        do
                ck_assert_msg(sock_recv(&c.sip, got, 65536, 5000) > 0, "caller: no re-INVITE");
        while (strncmp(got, "INVITE ", 7) != 0);
        ck_assert_int_eq(sdp_port(got), to_alice_port);
        struct tl_ua as_caller = {.fd = c.sip.fd, .port = c.sip.port};
        memcpy(&as_caller.peer, &proxy_sa, sizeof proxy_sa);
        as_caller.peer_len = sizeof proxy_sa;
        _cleanup_free_ char *alice_answer = make_sdp(c.rtp.port, 3);
        bob_reply(&as_caller, got, 200, c.tag, alice_answer);
        free(got);
        char *bob_ok = malloc(65536);
        ck_assert_ptr_nonnull(bob_ok);
        struct sock bob_sip = {.fd = bob.fd, .port = bob.port};
        do
                ck_assert_msg(sock_recv(&bob_sip, bob_ok, 65536, 5000) > 0, "bob: no 200");
        while (strncmp(bob_ok, "SIP/2.0 200", 11) != 0);
        ck_assert_int_eq(sdp_port(bob_ok), to_bob_port);
        free(bob_ok);
        expect_rtp(&c.rtp, to_alice_port, &bob_rtp, 5);
        expect_rtp(&bob_rtp, to_bob_port, &c.rtp, 6);

        /* BYE deletes the relay's session. */
        c.cseq++;
        caller_send(&c, "BYE", NULL, NULL, true);
        _cleanup_free_ char *bye = bob_expect(&bob, "BYE");
        bob_reply(&bob, bye, 200, "bob1", NULL);
        free(caller_expect(&c, 200));
        wait_relay_calls(&relays[0], 0);
        ck_assert_int_eq(media_counter("count-offers"), 3);
        ck_assert_int_eq(media_counter("count-answers"), 3);
        ck_assert_int_eq(media_counter("count-deletes"), 1);
        ck_assert_int_eq(media_counter("calls"), 0);

        caller_free(&c);
        close(bob_rtp.fd);
        tl_ua_close(&bob);
        tl_proxy_done(&proxy);
        tl_daemon_done(&relays[0].d);
}
END_TEST

START_TEST(test_media_cancel_and_failure_delete) {
        relay_start(&relays[0]);
        proxy_start_with(relays_conf(&relays[0], NULL, NULL));
        struct tl_ua bob;
        tl_ua_open(&bob, "bob", NULL, proxy.port);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);

        /* CANCEL while bob rings. */
        struct caller c;
        caller_new(&c, "media-cancel@test");
        _cleanup_free_ char *offer = make_sdp(c.rtp.port, 1);
        caller_send(&c, "INVITE", offer, NULL, true);
        _cleanup_free_ char *inv = bob_expect(&bob, "INVITE");
        bob_reply(&bob, inv, 180, "bob1", NULL);
        free(caller_expect(&c, 180));
        ck_assert_uint_eq(relay_calls(&relays[0]), 1);
        caller_send(&c, "CANCEL", NULL, NULL, false);
        _cleanup_free_ char *cancel = bob_expect(&bob, "CANCEL");
        bob_reply(&bob, cancel, 200, "bob1", NULL);
        bob_reply(&bob, inv, 487, "bob1", NULL);
        free(caller_expect(&c, 487));
        caller_send(&c, "ACK", NULL, NULL, false);
        wait_relay_calls(&relays[0], 0);

        /* A call bob declines. */
        struct caller d;
        caller_new(&d, "media-busy@test");
        _cleanup_free_ char *offer2 = make_sdp(d.rtp.port, 1);
        caller_send(&d, "INVITE", offer2, NULL, true);
        _cleanup_free_ char *inv2 = bob_expect(&bob, "INVITE");
        ck_assert_uint_eq(relay_calls(&relays[0]), 1);
        bob_reply(&bob, inv2, 486, "bob2", NULL);
        free(caller_expect(&d, 486));
        caller_send(&d, "ACK", NULL, NULL, false);
        wait_relay_calls(&relays[0], 0);
        ck_assert_int_eq(media_counter("count-deletes"), 2);

        /* An offer another proxy relayed already (the marker) is left alone. */
        struct caller e;
        caller_new(&e, "media-marked@test");
        _cleanup_free_ char *offer3 = make_sdp(e.rtp.port, 1);
        caller_send(&e, "INVITE", offer3, "X-Sipfleet-Media-Relay: yes\r\n", true);
        _cleanup_free_ char *inv3 = bob_expect(&bob, "INVITE");
        ck_assert_int_eq(sdp_port(inv3), e.rtp.port);
        bob_reply(&bob, inv3, 603, "bob3", NULL);
        free(caller_expect(&e, 603));
        caller_send(&e, "ACK", NULL, NULL, false);
        ck_assert_int_eq(media_counter("count-skipped"), 1);
        ck_assert_uint_eq(relay_calls(&relays[0]), 0);

        caller_free(&c);
        caller_free(&d);
        caller_free(&e);
        tl_ua_close(&bob);
        tl_proxy_done(&proxy);
        tl_daemon_done(&relays[0].d);
}
END_TEST

/* Late offer: an INVITE without SDP, the offer in bob's 200, the answer in the ACK. */
START_TEST(test_media_late_offer) {
        relay_start(&relays[0]);
        proxy_start_with(relays_conf(&relays[0], NULL, NULL));
        struct tl_ua bob;
        tl_ua_open(&bob, "bob", NULL, proxy.port);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        struct sock bob_rtp = sock_new();
        struct caller c;
        caller_new(&c, "media-late@test");
        caller_send(&c, "INVITE", NULL, NULL, true);
        _cleanup_free_ char *inv = bob_expect(&bob, "INVITE");
        _cleanup_free_ char *marker = tl_sip_header(inv, "X-Sipfleet-Media-Relay");
        ck_assert_ptr_nonnull(marker);
        _cleanup_free_ char *offer = make_sdp(bob_rtp.port, 1);
        bob_reply(&bob, inv, 200, "bob1", offer);
        _cleanup_free_ char *ok = caller_expect(&c, 200);
        int to_alice = sdp_port(ok);
        ck_assert_msg(in_range(&relays[0], to_alice), "late offer not rewritten:\n%s", ok);
        caller_dialog(&c, ok);
        _cleanup_free_ char *answer = make_sdp(c.rtp.port, 1);
        caller_send(&c, "ACK", answer, NULL, true);
        _cleanup_free_ char *ack = bob_expect(&bob, "ACK");
        int to_bob = sdp_port(ack);
        ck_assert_msg(in_range(&relays[0], to_bob), "ACK's answer not rewritten:\n%s", ack);
        ck_assert_int_ne(to_bob, to_alice);
        expect_rtp(&c.rtp, to_alice, &bob_rtp, 1);
        expect_rtp(&bob_rtp, to_bob, &c.rtp, 2);
        ck_assert_int_eq(media_counter("count-offers"), 1);
        ck_assert_int_eq(media_counter("count-answers"), 1);

        c.cseq++;
        caller_send(&c, "BYE", NULL, NULL, true);
        _cleanup_free_ char *bye = bob_expect(&bob, "BYE");
        bob_reply(&bob, bye, 200, "bob1", NULL);
        free(caller_expect(&c, 200));
        wait_relay_calls(&relays[0], 0);
        caller_free(&c);
        close(bob_rtp.fd);
        tl_ua_close(&bob);
        tl_proxy_done(&proxy);
        tl_daemon_done(&relays[0].d);
}
END_TEST

/* bob rings and never answers: Timer C ends the branch with 408, and the session goes. */
START_TEST(test_media_timeout_delete) {
        relay_start(&relays[0]);
        proxy_start_with(relays_conf(&relays[0], NULL, NULL));
        struct tl_ua bob;
        tl_ua_open(&bob, "bob", NULL, proxy.port);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        struct caller c;
        caller_new(&c, "media-timeout@test");
        _cleanup_free_ char *offer = make_sdp(c.rtp.port, 1);
        caller_send(&c, "INVITE", offer, NULL, true);
        _cleanup_free_ char *inv = bob_expect(&bob, "INVITE");
        bob_reply(&bob, inv, 180, "bob1", NULL);
        ck_assert_uint_eq(relay_calls(&relays[0]), 1);
        free(caller_expect(&c, 408));
        caller_send(&c, "ACK", NULL, NULL, false);
        wait_relay_calls(&relays[0], 0);
        ck_assert_int_eq(media_counter("count-deletes"), 1);
        caller_free(&c);
        tl_ua_close(&bob);
        tl_proxy_done(&proxy);
        tl_daemon_done(&relays[0].d);
}
END_TEST

START_TEST(test_media_forked_early_media) {
        relay_start(&relays[0]);
        proxy_start_with(relays_conf(&relays[0], NULL, NULL));
        struct tl_ua b1, b2;
        tl_ua_open(&b1, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000b1", proxy.port);
        tl_ua_open(&b2, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000b2", proxy.port);
        ck_assert_int_eq(tl_ua_register(&b1, 3600), 200);
        ck_assert_int_eq(tl_ua_register(&b2, 3600), 200);
        struct sock r1 = sock_new(), r2 = sock_new();

        struct caller c;
        caller_new(&c, "media-fork@test");
        _cleanup_free_ char *offer = make_sdp(c.rtp.port, 1);
        caller_send(&c, "INVITE", offer, NULL, true);
        _cleanup_free_ char *inv1 = bob_expect(&b1, "INVITE");
        _cleanup_free_ char *inv2 = bob_expect(&b2, "INVITE");
        /* Each branch got the offer; the same call on the relay, so the same ports. */
        int to_bob = sdp_port(inv1);
        ck_assert(in_range(&relays[0], to_bob));
        ck_assert_int_eq(sdp_port(inv2), to_bob);

        /* Early media from both devices, each with its to-tag. */
        _cleanup_free_ char *sdp1 = make_sdp(r1.port, 1), *sdp2 = make_sdp(r2.port, 1);
        bob_reply(&b1, inv1, 183, "dev1", sdp1);
        _cleanup_free_ char *p1 = caller_expect(&c, 183);
        int to_alice = sdp_port(p1);
        ck_assert(in_range(&relays[0], to_alice));
        ck_assert_ptr_nonnull(strstr(p1, "tag=dev1"));
        expect_rtp(&r1, to_bob, &c.rtp, 1); /* early media of device 1 */
        expect_rtp(&c.rtp, to_alice, &r1, 2);
        bob_reply(&b2, inv2, 183, "dev2", sdp2);
        _cleanup_free_ char *p2 = caller_expect(&c, 183);
        ck_assert_ptr_nonnull(strstr(p2, "tag=dev2"));
        ck_assert_int_eq(sdp_port(p2), to_alice);
        ck_assert_int_eq(media_counter("count-answers"), 2);

        /* Device 2 answers: device 1 is cancelled, the media goes to device 2. */
        bob_reply(&b2, inv2, 200, "dev2", sdp2);
        _cleanup_free_ char *ok = caller_expect(&c, 200);
        ck_assert_int_eq(sdp_port(ok), to_alice);
        caller_dialog(&c, ok);
        caller_send(&c, "ACK", NULL, NULL, true);
        _cleanup_free_ char *cancel = bob_expect(&b1, "CANCEL");
        bob_reply(&b1, cancel, 200, "dev1", NULL);
        bob_reply(&b1, inv1, 487, "dev1", NULL);
        expect_rtp(&r2, to_bob, &c.rtp, 3);
        expect_rtp(&c.rtp, to_alice, &r2, 4);
        ck_assert_uint_eq(relay_calls(&relays[0]), 1);

        c.cseq++;
        caller_send(&c, "BYE", NULL, NULL, true);
        _cleanup_free_ char *bye = bob_expect(&b2, "BYE");
        bob_reply(&b2, bye, 200, "dev2", NULL);
        free(caller_expect(&c, 200));
        wait_relay_calls(&relays[0], 0);

        caller_free(&c);
        close(r1.fd);
        close(r2.fd);
        tl_ua_close(&b1);
        tl_ua_close(&b2);
        tl_proxy_done(&proxy);
        tl_daemon_done(&relays[0].d);
}
END_TEST

static json_t *relay_state(int i) {
        json_t *j = tl_ctl(proxy.sock, "MEDIA_RELAYS");
        json_t *r = json_array_get(json_object_get(j, "relays"), (size_t)i);
        ck_assert_ptr_nonnull(r);
        json_incref(r);
        json_decref(j);
        return r;
}

START_TEST(test_media_failover) {
        relay_start(&relays[0]);
        relay_start(&relays[1]);
        /* The first relay (weight 1000) is picked first; only the start-up ping checks health
         * here, so the relay is "up" when it hangs. */
        proxy_start_with(relays_conf(&relays[0], &relays[1], "timeout=400ms\nping-interval=1h\n"));
        struct tl_ua bob;
        tl_ua_open(&bob, "bob", NULL, proxy.port);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        json_t *s0 = relay_state(0);
        ck_assert(json_is_true(json_object_get(s0, "up")));
        json_decref(s0);

        tl_freeze(&relays[0].d.proc);
        struct caller c;
        caller_new(&c, "media-failover@test");
        _cleanup_free_ char *offer = make_sdp(c.rtp.port, 1);
        caller_send(&c, "INVITE", offer, NULL, true);
        _cleanup_free_ char *inv = bob_expect(&bob, "INVITE");
        int to_bob = sdp_port(inv);
        ck_assert_msg(in_range(&relays[1], to_bob), "not on the second relay:\n%s", inv);
        ck_assert_int_eq(media_counter("count-failovers"), 1);
        s0 = relay_state(0);
        ck_assert(json_is_false(json_object_get(s0, "up")));
        json_decref(s0);
        json_t *s1 = relay_state(1);
        ck_assert_int_eq(json_integer_value(json_object_get(s1, "calls")), 1);
        json_decref(s1);

        struct sock bob_rtp = sock_new();
        _cleanup_free_ char *answer = make_sdp(bob_rtp.port, 1);
        bob_reply(&bob, inv, 200, "bob1", answer);
        _cleanup_free_ char *ok = caller_expect(&c, 200);
        int to_alice = sdp_port(ok);
        ck_assert(in_range(&relays[1], to_alice));
        caller_dialog(&c, ok);
        caller_send(&c, "ACK", NULL, NULL, true);
        expect_rtp(&c.rtp, to_alice, &bob_rtp, 1);
        expect_rtp(&bob_rtp, to_bob, &c.rtp, 2);
        c.cseq++;
        caller_send(&c, "BYE", NULL, NULL, true);
        _cleanup_free_ char *bye = bob_expect(&bob, "BYE");
        bob_reply(&bob, bye, 200, "bob1", NULL);
        free(caller_expect(&c, 200));
        wait_relay_calls(&relays[1], 0);

        /* Woken up, the first relay runs the offer it had queued, then the delete the proxy
         * sent when it failed over. */
        tl_kill(&relays[0].d.proc, SIGCONT);
        wait_relay_calls(&relays[0], 0);
        caller_free(&c);
        close(bob_rtp.fd);
        tl_ua_close(&bob);
        tl_proxy_done(&proxy);
        tl_daemon_done(&relays[0].d);
        tl_daemon_done(&relays[1].d);
}
END_TEST

/* No relay answers at all: the call goes on with its own SDP, counted. */
START_TEST(test_media_no_relay_answers) {
        char conf[128];
        snprintf(conf, sizeof conf, "relays=127.0.0.1:%d\ntimeout=200ms\n", tl_free_port());
        proxy_start_with(conf);
        struct tl_ua bob;
        tl_ua_open(&bob, "bob", NULL, proxy.port);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        struct caller c;
        caller_new(&c, "media-norelay@test");
        _cleanup_free_ char *offer = make_sdp(c.rtp.port, 1);
        caller_send(&c, "INVITE", offer, NULL, true);
        _cleanup_free_ char *inv = bob_expect(&bob, "INVITE");
        ck_assert_int_eq(sdp_port(inv), c.rtp.port);
        _cleanup_free_ char *marker = tl_sip_header(inv, "X-Sipfleet-Media-Relay");
        ck_assert_ptr_null(marker);
        bob_reply(&bob, inv, 486, "bob1", NULL);
        free(caller_expect(&c, 486));
        caller_send(&c, "ACK", NULL, NULL, false);
        ck_assert_int_eq(media_counter("count-unrelayed"), 1);
        ck_assert_int_ge(media_counter("count-ng-timeouts"), 1);
        ck_assert_int_eq(media_counter("calls"), 0);
        json_t *j = tl_ctl(proxy.sock, "MEDIA_RELAYS");
        ck_assert(json_is_false(json_object_get(json_array_get(json_object_get(j, "relays"), 0),
                                                "up")));
        json_decref(j);
        caller_free(&c);
        tl_ua_close(&bob);
        tl_proxy_done(&proxy);
}
END_TEST

START_TEST(test_media_bad_config) {
        static const char *const bad[][2] = {
                {"relays=\n", "relays is empty"},
                {"relays=127.0.0.1:2223;weight=0\n", "is not host:port"},
                {"relays=nowhere\n", "is not host:port"},
                {"relays=127.0.0.1:2223;wait=2\n", "is not host:port"},
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_free_ char *conf = NULL;
                ck_assert_int_ge(asprintf(&conf, "[module::MediaRelay]\nenabled=true\n%s",
                                          bad[i][0]),
                                 0);
                tl_proxy_write_conf(&proxy, conf);
                _cleanup_free_ char *bin = tl_build_path("proxy/sipfleet-proxy");
                char *argv[] = {bin, "--config", proxy.conf, NULL};
                struct tl_proc p;
                ck_assert_int_eq(tl_spawn("bad-media", argv, &p), 0);
                int st = tl_wait(&p, 10000);
                ck_assert_int_ne(st, 0);
                _cleanup_free_ char *log = tl_log(&p);
                ck_assert_msg(strstr(log, bad[i][1]), "'%s': %s", bad[i][0], log);
                ck_assert_ptr_null(strstr(log, "Sanitizer"));
                free(p.log);
        }
}
END_TEST

static Suite *media_suite(void) {
        Suite *s = suite_create("proxy-media");
        TCase *tc = tcase_create("media");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_media_call_rtp_reinvite_bye);
        tcase_add_test(tc, test_media_cancel_and_failure_delete);
        tcase_add_test(tc, test_media_late_offer);
        tcase_add_test(tc, test_media_timeout_delete);
        tcase_add_test(tc, test_media_forked_early_media);
        tcase_add_test(tc, test_media_failover);
        tcase_add_test(tc, test_media_no_relay_answers);
        tcase_add_test(tc, test_media_bad_config);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run(media_suite());
}
