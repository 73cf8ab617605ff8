/* SPDX-License-Identifier: MIT */
/* sipfleet-mediarelay on loopback: NG commands over UDP, RTP and RTCP between two real UDP
 * endpoints through the relay, latching, a third party, idle expiry, SRTP bridging with
 * libsrtp2 on the test side, and STUN binding requests. */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <srtp2/srtp.h>

#include "bencode.h"
#include "macro.h"
#include "testlib.h"

static struct tl_daemon relay;
static int ng_port, port_lo, port_hi;
static int ng_fd = -1;
static unsigned cookie_n;

static void relay_start(const char *extra) {
        _cleanup_free_ char *conf = NULL;
        ng_port = tl_free_port();
        port_lo = tl_free_port() & ~1;
        if (port_lo > 65000)
                port_lo = 50000;
        port_hi = port_lo + 99;
        ck_assert_int_ge(asprintf(&conf,
                                  "[mediarelay]\n"
                                  "ng-listen=127.0.0.1:%d\n"
                                  "port-range=%d-%d\n"
                                  "packet-threads=2\n"
                                  "%s",
                                  ng_port, port_lo, port_hi, extra ? extra : ""),
                         0);
        tl_daemon_start(&relay, "mediarelay", conf);
        ng_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(ng_fd, 0);
}

static void relay_stop(void) {
        tl_daemon_done(&relay);
        close(ng_fd);
        ng_fd = -1;
}

static struct sockaddr_in loopback(int port) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return sa;
}

/* Sends a raw NG datagram, returns the reply (malloc'd, NUL-terminated). */
static char *ng_raw(const void *msg, size_t len, size_t *reply_len) {
        struct sockaddr_in sa = loopback(ng_port);
        struct pollfd p = {.fd = ng_fd, .events = POLLIN};
        char *buf = malloc(65536);

        ck_assert_int_eq(sendto(ng_fd, msg, len, 0, (struct sockaddr *)&sa, sizeof(sa)), (ssize_t)len);
        ck_assert_msg(poll(&p, 1, 3000) == 1, "no NG reply");
        ssize_t n = recv(ng_fd, buf, 65535, 0);
        ck_assert_int_gt(n, 0);
        buf[n] = 0;
        *reply_len = (size_t)n;
        return buf;
}

/* Sends a request dict, checks the cookie echo, returns the reply dict. */
static struct bencode *ng_send(struct bencode *req) {
        _cleanup_free_ char *body = NULL, *msg = NULL, *reply = NULL;
        char cookie[32];
        size_t body_len, reply_len;
        struct bencode *out = NULL;

        snprintf(cookie, sizeof(cookie), "t%u", ++cookie_n);
        ck_assert_int_eq(bencode_encode(req, &body, &body_len), 0);
        bencode_free(req);
        msg = malloc(strlen(cookie) + 1 + body_len);
        memcpy(msg, cookie, strlen(cookie));
        msg[strlen(cookie)] = ' ';
        memcpy(msg + strlen(cookie) + 1, body, body_len);
        reply = ng_raw(msg, strlen(cookie) + 1 + body_len, &reply_len);
        ck_assert_msg(strncmp(reply, cookie, strlen(cookie)) == 0 && reply[strlen(cookie)] == ' ',
                      "cookie not echoed: %s", reply);
        ck_assert_int_eq(bencode_decode(reply + strlen(cookie) + 1,
                                        reply_len - strlen(cookie) - 1, NULL, &out, NULL, NULL),
                         0);
        ck_assert_int_eq(out->type, BENCODE_DICT);
        return out;
}

/* ng("offer", "call-id", "c1", "flags", "@trust-address symmetric", NULL): a value starting
 * with '@' is a list of its space-separated words. */
static struct bencode *ng(const char *command, ...) {
        struct bencode *req = bencode_new_dict();
        va_list ap;
        const char *k;

        bencode_dict_add_str(req, "command", command);
        va_start(ap, command);
        while ((k = va_arg(ap, const char *))) {
                const char *v = va_arg(ap, const char *);
                if (v[0] == '@') {
                        struct bencode *l = bencode_dict_add(req, k, bencode_new_list());
                        _cleanup_strv_free_ char **words = strv_split(v + 1, " ");
                        STRV_FOREACH(w, words)
                                bencode_list_add(l, bencode_new_str(*w));
                } else
                        bencode_dict_add_str(req, k, v);
        }
        va_end(ap);
        return ng_send(req);
}

static void expect_ok(struct bencode *r) {
        const char *res = bencode_dict_get_str(r, "result");
        ck_assert_msg(res && streq(res, "ok"), "NG result '%s': %s", strna(res),
                      strna(bencode_dict_get_str(r, "error-reason")));
}

static void expect_error(struct bencode *r, const char *reason_part) {
        const char *res = bencode_dict_get_str(r, "result");
        const char *why = bencode_dict_get_str(r, "error-reason");
        ck_assert_msg(res && streq(res, "error"), "NG result '%s', expected an error", strna(res));
        ck_assert_msg(why && strstr(why, reason_part), "error-reason '%s' lacks '%s'", strna(why),
                      reason_part);
        bencode_free(r);
}

static char *make_sdp(int port, const char *proto, const char *extra) {
        char *s = NULL;
        ck_assert_int_ge(asprintf(&s,
                                  "v=0\r\n"
                                  "o=- 1234 1 IN IP4 127.0.0.1\r\n"
                                  "s=-\r\n"
                                  "c=IN IP4 127.0.0.1\r\n"
                                  "t=0 0\r\n"
                                  "m=audio %d %s 0 8\r\n"
                                  "a=rtpmap:0 PCMU/8000\r\n"
                                  "a=rtpmap:8 PCMA/8000\r\n"
                                  "a=sendrecv\r\n"
                                  "%s",
                                  port, proto, extra ? extra : ""),
                         0);
        return s;
}

/* The value after prefix in the SDP (up to the end of line), malloc'd; NULL when missing. */
static char *sdp_value(const char *sdp, const char *prefix) {
        const char *p = strstr(sdp, prefix);
        if (!p)
                return NULL;
        p += strlen(prefix);
        return strndup(p, strcspn(p, "\r\n"));
}

static int sdp_port(const char *sdp) {
        _cleanup_free_ char *v = sdp_value(sdp, "m=audio ");
        ck_assert_ptr_nonnull(v);
        return atoi(v);
}

struct ep {
        int fd;
        int port;
};

static struct ep ep_new(void) {
        struct ep e;
        struct sockaddr_in sa = loopback(0);
        socklen_t len = sizeof(sa);
        e.fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(e.fd, 0);
        ck_assert_int_eq(bind(e.fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        ck_assert_int_eq(getsockname(e.fd, (struct sockaddr *)&sa, &len), 0);
        e.port = ntohs(sa.sin_port);
        return e;
}

/* An endpoint on port+1 of another (RTCP). */
static struct ep ep_at(int port) {
        struct ep e;
        struct sockaddr_in sa = loopback(port);
        e.fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(e.fd, 0);
        if (bind(e.fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                close(e.fd);
                e.fd = -1;
        }
        e.port = port;
        return e;
}

static void ep_send(struct ep *e, int port, const void *data, size_t len) {
        struct sockaddr_in sa = loopback(port);
        ck_assert_int_eq(sendto(e->fd, data, len, 0, (struct sockaddr *)&sa, sizeof(sa)),
                         (ssize_t)len);
}

/* Receives one datagram within timeout_ms; returns its length or -1. from_port may be NULL. */
static int ep_recv(struct ep *e, void *buf, size_t size, int timeout_ms, int *from_port) {
        struct pollfd p = {.fd = e->fd, .events = POLLIN};
        struct sockaddr_in sa;
        socklen_t len = sizeof(sa);
        if (poll(&p, 1, timeout_ms) != 1)
                return -1;
        ssize_t n = recvfrom(e->fd, buf, size, 0, (struct sockaddr *)&sa, &len);
        if (from_port)
                *from_port = ntohs(sa.sin_port);
        return (int)n;
}

static size_t make_rtp(unsigned char *p, uint16_t seq, uint32_t ssrc, const char *payload) {
        size_t n = strlen(payload);
        p[0] = 0x80;
        p[1] = 0;
        p[2] = (unsigned char)(seq >> 8);
        p[3] = (unsigned char)seq;
        memset(p + 4, 0, 4);
        p[4] = (unsigned char)(seq >> 8);
        p[5] = (unsigned char)seq;
        p[8] = (unsigned char)(ssrc >> 24);
        p[9] = (unsigned char)(ssrc >> 16);
        p[10] = (unsigned char)(ssrc >> 8);
        p[11] = (unsigned char)ssrc;
        memcpy(p + 12, payload, n);
        return 12 + n;
}

/* Sends RTP from a to relay port `to` and expects it at b, from relay port `via`. */
static void expect_relayed(struct ep *a, int to, struct ep *b, int via, uint16_t seq,
                           const char *payload) {
        unsigned char pkt[256], got[2048];
        size_t n = make_rtp(pkt, seq, 0x1234, payload);
        int from = 0, len;

        ep_send(a, to, pkt, n);
        len = ep_recv(b, got, sizeof(got), 2000, &from);
        ck_assert_msg(len == (int)n, "RTP '%s' not relayed (got %d)", payload, len);
        ck_assert_int_eq(memcmp(got, pkt, n), 0);
        ck_assert_int_eq(from, via);
}

static void expect_nothing(struct ep *b, int timeout_ms) {
        unsigned char got[2048];
        int len = ep_recv(b, got, sizeof(got), timeout_ms, NULL);
        ck_assert_msg(len < 0, "unexpected datagram of %d bytes", len);
}

/* Offer from A, answer from B; returns the relay ports A and B send to. */
static void call_setup(const char *call_id, struct ep *a, struct ep *b, int *port_for_a,
                       int *port_for_b) {
        _cleanup_free_ char *sa = make_sdp(a->port, "RTP/AVP", NULL);
        _cleanup_free_ char *sb = make_sdp(b->port, "RTP/AVP", NULL);
        struct bencode *r;

        r = ng("offer", "call-id", call_id, "from-tag", "tagA", "sdp", sa, "flags",
               "@trust-address", "replace", "@origin session-connection", NULL);
        expect_ok(r);
        *port_for_b = sdp_port(bencode_dict_get_str(r, "sdp"));
        bencode_free(r);
        r = ng("answer", "call-id", call_id, "from-tag", "tagA", "to-tag", "tagB", "sdp", sb,
               NULL);
        expect_ok(r);
        *port_for_a = sdp_port(bencode_dict_get_str(r, "sdp"));
        bencode_free(r);
}

static json_t *session_json(const char *call_id) {
        _cleanup_free_ char *line = NULL;
        ck_assert_int_ge(asprintf(&line, "SESSION %s", call_id), 0);
        return tl_ctl(relay.sock, line);
}

/* A counter of leg l, media 0 from SESSION. */
static long long leg_counter(const char *call_id, int l, const char *name) {
        json_t *j = session_json(call_id);
        json_t *v = json_object_get(
                json_array_get(json_object_get(json_array_get(json_object_get(j, "legs"), l),
                                               "media"),
                               0),
                name);
        ck_assert_msg(json_is_integer(v), "no %s in SESSION reply", name);
        long long n = json_integer_value(v);
        json_decref(j);
        return n;
}

START_TEST(test_mediarelay_ping_conf_and_errors) {
        size_t len;
        relay_start(NULL);

        struct bencode *r = ng("ping", NULL);
        ck_assert_str_eq(bencode_dict_get_str(r, "result"), "pong");
        bencode_free(r);

        expect_error(ng("dance", NULL), "Unrecognized command");
        expect_error(ng("offer", "call-id", "x", "from-tag", "a", NULL), "No 'sdp'");
        expect_error(ng("offer", "from-tag", "a", "sdp", "v=0", NULL), "No 'call-id'");
        expect_error(ng("offer", "call-id", "x", "from-tag", "a", "sdp", "hello", NULL),
                     "Failed to parse SDP");
        expect_error(ng("offer", "call-id", "x", "from-tag", "a", "sdp", "v=0", "ICE", "bogus",
                        NULL),
                     "Unknown ICE option");
        expect_error(ng("offer", "call-id", "x", "from-tag", "a", "sdp", "v=0",
                        "transport-protocol", "UDP/TLS/RTP/SAVPF", NULL),
                     "DTLS-SRTP");
        expect_error(ng("answer", "call-id", "nothere", "from-tag", "a", "to-tag", "b", "sdp",
                        "v=0", NULL),
                     "Unknown call-id");
        expect_error(ng("delete", "call-id", "nothere", NULL), "Unknown call-id");
        expect_error(ng("query", NULL), "No 'call-id'");

        /* Garbage still gets an NG error with the cookie echoed. */
        _cleanup_free_ char *g = ng_raw("zz7 d7:command", 14, &len);
        ck_assert_ptr_nonnull(strstr(g, "zz7 d"));
        ck_assert_ptr_nonnull(strstr(g, "Malformed bencode"));

        /* A retransmitted request (same datagram) gets the same reply without a second
         * execution: the retransmitted delete does not fail with "Unknown call-id". */
        {
                static const char sdp[] = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
                                          "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
                char offer[512], del[] = "rt2 d7:command6:delete7:call-id2:rte";
                int n = snprintf(offer, sizeof(offer),
                                 "rt1 d7:command5:offer7:call-id2:rt8:from-tag1:a3:sdp%zu:%se",
                                 sizeof(sdp) - 1, sdp);
                long long offers = tl_counter(relay.sock, "mediarelay/count-ng-offer");
                _cleanup_free_ char *r1 = ng_raw(offer, (size_t)n, &len);
                _cleanup_free_ char *r2 = ng_raw(offer, (size_t)n, &len);
                ck_assert_str_eq(r1, r2);
                ck_assert_ptr_nonnull(strstr(r1, "6:result2:ok"));
                _cleanup_free_ char *d1 = ng_raw(del, sizeof(del) - 1, &len);
                _cleanup_free_ char *d2 = ng_raw(del, sizeof(del) - 1, &len);
                ck_assert_ptr_nonnull(strstr(d2, "6:result2:ok"));
                ck_assert_int_eq(tl_counter(relay.sock, "mediarelay/count-ng-retransmissions"), 2);
                ck_assert_int_eq(tl_counter(relay.sock, "mediarelay/count-ng-offer"), offers + 1);
        }

        ck_assert_int_ge(tl_counter(relay.sock, "mediarelay/count-ng-ping"), 1);
        ck_assert_int_ge(tl_counter(relay.sock, "mediarelay/count-ng-errors"), 9);
        /* Failed offers left no call behind. */
        ck_assert_int_eq(tl_counter(relay.sock, "mediarelay/calls"), 0);
        relay_stop();
}
END_TEST

START_TEST(test_mediarelay_etc_conf_in_sync) {
        _cleanup_free_ char *bin = tl_build_path("mediarelay/sipfleet-mediarelay");
        char *argv[] = {bin, "--dump-default", NULL};
        struct tl_proc p;
        tl_spawn("dump", argv, &p);
        ck_assert_int_eq(tl_wait(&p, 10000), 0);
        _cleanup_free_ char *dump = tl_log(&p);
        free(p.log);
        _cleanup_free_ char *path = tl_source_path("etc/mediarelay.conf");
        _cleanup_free_ char *text = tl_read_file(path, NULL);
        ck_assert_msg(text, "cannot read %s", path);
        ck_assert_msg(streq(dump, text),
                      "etc/mediarelay.conf differs from sipfleet-mediarelay --dump-default; "
                      "regenerate it with: build/mediarelay/sipfleet-mediarelay --dump-default > "
                      "etc/mediarelay.conf");
}
END_TEST

START_TEST(test_mediarelay_offer_answer_rtp_rtcp) {
        struct ep a = ep_new(), b = ep_new();
        int pa, pb, pa2, pb2;
        relay_start(NULL);

        _cleanup_free_ char *sa = make_sdp(a.port, "RTP/AVP", NULL);
        struct bencode *r = ng("offer", "call-id", "call-rtp", "from-tag", "tagA", "sdp", sa,
                               "replace", "@origin session-connection", "ICE", "remove", NULL);
        expect_ok(r);
        const char *out = bencode_dict_get_str(r, "sdp");
        ck_assert_ptr_nonnull(out);
        pb = sdp_port(out);
        ck_assert_int_ge(pb, port_lo);
        ck_assert_int_le(pb, port_hi);
        ck_assert_int_eq(pb % 2, 0);
        ck_assert_ptr_nonnull(strstr(out, "c=IN IP4 127.0.0.1\r\n"));
        ck_assert_ptr_nonnull(strstr(out, "a=rtpmap:8 PCMA/8000"));
        ck_assert_ptr_nonnull(strstr(out, "a=sendrecv"));
        ck_assert_ptr_null(strstr(out, "a=ice"));
        bencode_free(r);

        /* Early media: B sends before the answer, A hears it. */
        unsigned char early[64], got[2048];
        int from, early_from = 0;
        size_t en = make_rtp(early, 1, 0xB0B, "ringback from B");
        ep_send(&b, pb, early, en);
        ck_assert_int_eq(ep_recv(&a, got, sizeof(got), 2000, &early_from), (int)en);
        ck_assert_int_eq(memcmp(got, early, en), 0);

        struct ep rtcp_a = ep_at(a.port + 1);
        ck_assert_int_ge(rtcp_a.fd, 0);
        _cleanup_free_ char *sb = make_sdp(b.port, "RTP/AVP", NULL);
        r = ng("answer", "call-id", "call-rtp", "from-tag", "tagA", "to-tag", "tagB", "sdp", sb,
               NULL);
        expect_ok(r);
        pa = sdp_port(bencode_dict_get_str(r, "sdp"));
        ck_assert_int_ne(pa, pb);
        ck_assert_int_eq(pa % 2, 0);
        ck_assert_int_eq(early_from, pa);
        bencode_free(r);

        expect_relayed(&a, pa, &b, pb, 1, "hello from A");
        expect_relayed(&b, pb, &a, pa, 2, "hello from B");
        for (uint16_t seq = 2; seq < 12; seq++)
                expect_relayed(&a, pa, &b, pb, seq, "more from A");
        /* seq 12 and 13 never sent: two lost */
        expect_relayed(&a, pa, &b, pb, 14, "after a gap");

        /* RTCP: odd port to odd port. */
        struct ep rtcp_b = ep_at(b.port + 1);
        ck_assert_int_ge(rtcp_b.fd, 0);
        unsigned char sr[28] = {0x80, 200, 0, 6};
        ep_send(&rtcp_a, pa + 1, sr, sizeof(sr));
        ck_assert_int_eq(ep_recv(&rtcp_b, got, sizeof(got), 2000, &from), (int)sizeof(sr));
        ck_assert_int_eq(from, pb + 1);

        /* query: the counters of each leg and the totals */
        r = ng("query", "call-id", "call-rtp", NULL);
        expect_ok(r);
        struct bencode *totals = bencode_dict_get(r, "totals");
        struct bencode *rtp = bencode_dict_get(totals, "RTP");
        ck_assert_int_eq(bencode_dict_get(rtp, "packets")->i, 14);
        ck_assert_int_eq(bencode_dict_get(rtp, "lost")->i, 2);
        ck_assert_int_eq(bencode_dict_get(bencode_dict_get(totals, "RTCP"), "packets")->i, 1);
        struct bencode *tags = bencode_dict_get(r, "tags");
        ck_assert_ptr_nonnull(bencode_dict_get(tags, "tagA"));
        ck_assert_ptr_nonnull(bencode_dict_get(tags, "tagB"));
        bencode_free(r);
        ck_assert_int_eq(leg_counter("call-rtp", 0, "packets"), 12);
        ck_assert_int_eq(leg_counter("call-rtp", 1, "packets"), 2);

        /* list */
        r = ng("list", NULL);
        expect_ok(r);
        struct bencode *calls = bencode_dict_get(r, "calls");
        ck_assert_uint_eq(calls->n, 1);
        ck_assert(bencode_is_str(calls->first, "call-rtp"));
        bencode_free(r);
        json_t *j = tl_ctl(relay.sock, "SESSIONS");
        ck_assert_int_eq(json_integer_value(json_object_get(j, "calls")), 1);
        json_decref(j);

        /* A re-INVITE from A (new o= version, same media) keeps the ports. */
        r = ng("offer", "call-id", "call-rtp", "from-tag", "tagA", "sdp", sa, NULL);
        expect_ok(r);
        pb2 = sdp_port(bencode_dict_get_str(r, "sdp"));
        bencode_free(r);
        r = ng("answer", "call-id", "call-rtp", "from-tag", "tagA", "to-tag", "tagB", "sdp", sb,
               NULL);
        expect_ok(r);
        pa2 = sdp_port(bencode_dict_get_str(r, "sdp"));
        bencode_free(r);
        ck_assert_int_eq(pa2, pa);
        ck_assert_int_eq(pb2, pb);
        expect_relayed(&a, pa, &b, pb, 15, "still flowing");

        /* A re-INVITE from B (its tag as from-tag) keeps them too. */
        r = ng("offer", "call-id", "call-rtp", "from-tag", "tagB", "sdp", sb, NULL);
        expect_ok(r);
        ck_assert_int_eq(sdp_port(bencode_dict_get_str(r, "sdp")), pa);
        bencode_free(r);
        r = ng("answer", "call-id", "call-rtp", "from-tag", "tagB", "to-tag", "tagA", "sdp", sa,
               NULL);
        expect_ok(r);
        ck_assert_int_eq(sdp_port(bencode_dict_get_str(r, "sdp")), pb);
        bencode_free(r);

        /* delete answers with the final counters; the call is gone. */
        r = ng("delete", "call-id", "call-rtp", "from-tag", "tagA", NULL);
        expect_ok(r);
        ck_assert_ptr_nonnull(bencode_dict_get(r, "totals"));
        bencode_free(r);
        expect_error(ng("query", "call-id", "call-rtp", NULL), "Unknown call-id");
        ck_assert_int_eq(tl_counter(relay.sock, "mediarelay/calls"), 0);
        ck_assert_int_ge(tl_counter(relay.sock, "mediarelay/packets-relayed"), 16);
        ck_assert_int_eq(tl_counter(relay.sock, "mediarelay/count-ng-offer"), 3);

        close(a.fd);
        close(b.fd);
        close(rtcp_a.fd);
        close(rtcp_b.fd);
        relay_stop();
}
END_TEST

START_TEST(test_mediarelay_rtcp_mux) {
        struct ep a = ep_new(), b = ep_new();
        relay_start(NULL);

        _cleanup_free_ char *sa = make_sdp(a.port, "RTP/AVP", "a=rtcp-mux\r\n");
        _cleanup_free_ char *sb = make_sdp(b.port, "RTP/AVP", NULL);
        /* A muxes; demux towards B, which gets RTCP on its odd port. */
        struct bencode *r = ng("offer", "call-id", "call-mux", "from-tag", "A", "sdp", sa,
                               "rtcp-mux", "@demux", NULL);
        expect_ok(r);
        ck_assert_ptr_null(strstr(bencode_dict_get_str(r, "sdp"), "rtcp-mux"));
        int pb = sdp_port(bencode_dict_get_str(r, "sdp"));
        bencode_free(r);
        r = ng("answer", "call-id", "call-mux", "from-tag", "A", "to-tag", "B", "sdp", sb, NULL);
        expect_ok(r);
        ck_assert_ptr_nonnull(strstr(bencode_dict_get_str(r, "sdp"), "a=rtcp-mux"));
        int pa = sdp_port(bencode_dict_get_str(r, "sdp"));
        bencode_free(r);

        struct ep rtcp_b = ep_at(b.port + 1);
        ck_assert_int_ge(rtcp_b.fd, 0);
        unsigned char sr[28] = {0x80, 200, 0, 6}, got[2048];
        int from;
        /* A's RTCP on the RTP port reaches B's RTCP port from the relay's odd port... */
        ep_send(&a, pa, sr, sizeof(sr));
        ck_assert_int_eq(ep_recv(&rtcp_b, got, sizeof(got), 2000, &from), (int)sizeof(sr));
        ck_assert_int_eq(from, pb + 1);
        /* ...and B's RTCP reaches A on its single port. */
        ep_send(&rtcp_b, pb + 1, sr, sizeof(sr));
        ck_assert_int_eq(ep_recv(&a, got, sizeof(got), 2000, &from), (int)sizeof(sr));
        ck_assert_int_eq(from, pa);
        expect_relayed(&a, pa, &b, pb, 1, "rtp still separate");
        close(a.fd);
        close(b.fd);
        close(rtcp_b.fd);
        relay_stop();
}
END_TEST

START_TEST(test_mediarelay_latching_and_third_party) {
        struct ep a = ep_new(), b = ep_new(), c = ep_new(), a2 = ep_new();
        int pa, pb;
        relay_start("relatch-silence=600ms\n");
        call_setup("call-latch", &a, &b, &pa, &pb);

        expect_relayed(&a, pa, &b, pb, 1, "A latched");
        expect_relayed(&b, pb, &a, pa, 1, "B latched");

        /* A third party sending to A's relay port while A talks: dropped. */
        unsigned char pkt[256];
        size_t n = make_rtp(pkt, 99, 0x6666, "intruder");
        for (int i = 0; i < 5; i++)
                ep_send(&c, pa, pkt, n);
        expect_nothing(&b, 300);
        ck_assert_int_eq(leg_counter("call-latch", 0, "foreign"), 5);
        /* B's packets still go to A, not to the intruder. */
        expect_relayed(&b, pb, &a, pa, 2, "to the real A");
        expect_nothing(&c, 200);

        /* A moves (new NAT binding): once its old source has been silent for relatch-silence,
         * the relay latches to the new one and sends B's packets there. */
        usleep(800 * 1000);
        expect_relayed(&a2, pa, &b, pb, 2, "A from a new port");
        expect_relayed(&b, pb, &a2, pa, 3, "B follows A");
        expect_nothing(&a, 200);
        /* A stranger still cannot take over from the new source... */
        n = make_rtp(pkt, 3, 0x6666, "intruder again");
        ep_send(&c, pa, pkt, n);
        expect_nothing(&b, 300);
        /* ...but the address A signalled in its SDP may always take its stream back. */
        expect_relayed(&a, pa, &b, pb, 4, "A back on its SDP address");
        expect_relayed(&b, pb, &a, pa, 5, "B follows");

        close(a.fd);
        close(b.fd);
        close(c.fd);
        close(a2.fd);
        relay_stop();
}
END_TEST

/* Offer from A with the given flags, plain answer from B. */
static void call_setup_flags(const char *call_id, struct ep *a, struct ep *b, const char *flags,
                             int *port_for_a, int *port_for_b) {
        _cleanup_free_ char *sa = make_sdp(a->port, "RTP/AVP", NULL);
        _cleanup_free_ char *sb = make_sdp(b->port, "RTP/AVP", NULL);
        struct bencode *r = ng("offer", "call-id", call_id, "from-tag", "A", "sdp", sa, "flags",
                               flags, NULL);
        expect_ok(r);
        *port_for_b = sdp_port(bencode_dict_get_str(r, "sdp"));
        bencode_free(r);
        r = ng("answer", "call-id", call_id, "from-tag", "A", "to-tag", "B", "sdp", sb, NULL);
        expect_ok(r);
        *port_for_a = sdp_port(bencode_dict_get_str(r, "sdp"));
        bencode_free(r);
}

START_TEST(test_mediarelay_latch_flags) {
        struct ep a = ep_new(), b = ep_new(), a2 = ep_new();
        int pa, pb;
        relay_start("relatch-silence=300ms\n");

        /* strict-source: a new source never takes over, even after a silence... */
        call_setup_flags("call-strict", &a, &b, "@strict-source trust-address", &pa, &pb);
        expect_relayed(&a, pa, &b, pb, 1, "A latched");
        usleep(500 * 1000);
        unsigned char pkt[256];
        size_t n = make_rtp(pkt, 2, 0x1234, "A elsewhere");
        ep_send(&a2, pa, pkt, n);
        expect_nothing(&b, 300);
        /* ...but the SDP address does. */
        expect_relayed(&a, pa, &b, pb, 3, "A at its SDP address");

        /* media-handover: a new source takes over at once. */
        call_setup_flags("call-handover", &a, &b, "@media-handover", &pa, &pb);
        expect_relayed(&a, pa, &b, pb, 1, "A latched");
        expect_relayed(&a2, pa, &b, pb, 2, "A moved at once");
        expect_relayed(&b, pb, &a2, pa, 1, "B follows at once");

        /* asymmetric: any source is relayed, replies go to the SDP address. */
        call_setup_flags("call-asym", &a, &b, "@asymmetric", &pa, &pb);
        expect_relayed(&a2, pa, &b, pb, 1, "A sends from elsewhere");
        expect_relayed(&b, pb, &a, pa, 1, "B answers to A's SDP address");
        expect_nothing(&a2, 200);

        close(a.fd);
        close(b.fd);
        close(a2.fd);
        relay_stop();
}
END_TEST

START_TEST(test_mediarelay_idle_timeout_frees_ports) {
        struct ep a = ep_new(), b = ep_new();
        int pa, pb;
        relay_start(NULL);
        /* inactivity-period is reloadable: lowered at run time */
        json_t *set = tl_ctl(relay.sock, "SET mediarelay/inactivity-period 1s");
        ck_assert_ptr_null(json_object_get(set, "error"));
        json_decref(set);
        call_setup("call-idle", &a, &b, &pa, &pb);
        expect_relayed(&a, pa, &b, pb, 1, "one packet");
        ck_assert_int_eq(tl_counter(relay.sock, "mediarelay/ports-in-use"), 4);

        int i;
        for (i = 0; i < 50 && tl_counter(relay.sock, "mediarelay/calls") > 0; i++)
                usleep(100 * 1000);
        ck_assert_msg(i >= 8, "call expired too early (%d00 ms)", i);
        ck_assert_int_lt(i, 50);
        ck_assert_int_eq(tl_counter(relay.sock, "mediarelay/count-calls-expired"), 1);
        expect_error(ng("query", "call-id", "call-idle", NULL), "Unknown call-id");
        /* The ports are closed: they can be bound again. */
        for (i = 0; i < 20 && tl_counter(relay.sock, "mediarelay/ports-in-use") > 0; i++)
                usleep(100 * 1000);
        ck_assert_int_eq(tl_counter(relay.sock, "mediarelay/ports-in-use"), 0);
        struct ep again = ep_at(pa);
        ck_assert_msg(again.fd >= 0, "port %d still bound", pa);
        close(again.fd);
        close(a.fd);
        close(b.fd);
        relay_stop();
}
END_TEST

static void srtp_ctx_suite(srtp_t *ctx, const unsigned char *key, bool outbound, bool aes256_32) {
        srtp_policy_t pol;
        memset(&pol, 0, sizeof(pol));
        if (aes256_32) {
                srtp_crypto_policy_set_aes_cm_256_hmac_sha1_32(&pol.rtp);
                srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&pol.rtcp);
        } else {
                srtp_crypto_policy_set_rtp_default(&pol.rtp);
                srtp_crypto_policy_set_rtp_default(&pol.rtcp);
        }
        pol.ssrc.type = outbound ? ssrc_any_outbound : ssrc_any_inbound;
        pol.key = (unsigned char *)key;
        pol.window_size = 128;
        ck_assert_int_eq(srtp_create(ctx, &pol), srtp_err_status_ok);
}

static void srtp_ctx(srtp_t *ctx, const unsigned char *key, bool outbound) {
        srtp_ctx_suite(ctx, key, outbound, false);
}

static void b64_key_len(const char *sdp, unsigned char *key, size_t len, const char *prefix) {
        _cleanup_free_ char *line = sdp_value(sdp, prefix);
        ck_assert_msg(line, "no '%s' in %s", prefix, sdp);
        unsigned char out[64];
        int n = EVP_DecodeBlock(out, (const unsigned char *)line, (int)strcspn(line, "|"));
        ck_assert_int_ge(n, (int)len);
        memcpy(key, out, len);
}

static void b64_key(const char *sdp, unsigned char key[30], const char *prefix) {
        b64_key_len(sdp, key, 30, prefix);
}

START_TEST(test_mediarelay_srtp_bridge) {
        struct ep a = ep_new(), b = ep_new();
        unsigned char key_a[30], key_relay_a[30], key_b[30], key_relay_b[30];
        unsigned char pkt[2048], got[2048];
        char extra[256], b64[64];
        srtp_t a_out, a_in, b_out, b_in;
        int len, from;

        ck_assert_int_eq(srtp_init(), srtp_err_status_ok);
        relay_start(NULL);

        /* A speaks SRTP (SDES), B plain RTP. */
        RAND_bytes(key_a, sizeof(key_a));
        EVP_EncodeBlock((unsigned char *)b64, key_a, sizeof(key_a));
        snprintf(extra, sizeof(extra), "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:%s\r\n", b64);
        _cleanup_free_ char *sa = make_sdp(a.port, "RTP/SAVP", extra);
        _cleanup_free_ char *sb = make_sdp(b.port, "RTP/AVP", NULL);
        struct bencode *r = ng("offer", "call-id", "call-srtp", "from-tag", "A", "sdp", sa,
                               "transport-protocol", "RTP/AVP", NULL);
        expect_ok(r);
        const char *to_b = bencode_dict_get_str(r, "sdp");
        ck_assert_ptr_nonnull(strstr(to_b, " RTP/AVP 0 8"));
        ck_assert_ptr_null(strstr(to_b, "a=crypto"));
        int pb = sdp_port(to_b);
        bencode_free(r);
        r = ng("answer", "call-id", "call-srtp", "from-tag", "A", "to-tag", "B", "sdp", sb, NULL);
        expect_ok(r);
        const char *to_a = bencode_dict_get_str(r, "sdp");
        ck_assert_ptr_nonnull(strstr(to_a, " RTP/SAVP 0 8"));
        b64_key(to_a, key_relay_a, "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:");
        ck_assert_int_ne(memcmp(key_relay_a, key_a, 30), 0);
        int pa = sdp_port(to_a);
        bencode_free(r);

        srtp_ctx(&a_out, key_a, true);
        srtp_ctx(&a_in, key_relay_a, false);
        for (uint16_t seq = 1; seq <= 5; seq++) {
                size_t n = make_rtp(pkt, seq, 0xA11CE, "secret voice of A");
                unsigned char plain[256];
                memcpy(plain, pkt, n);
                len = (int)n;
                ck_assert_int_eq(srtp_protect(a_out, pkt, &len), srtp_err_status_ok);
                ck_assert_int_eq(len, (int)n + 10);
                ep_send(&a, pa, pkt, (size_t)len);
                ck_assert_int_eq(ep_recv(&b, got, sizeof(got), 2000, &from), (int)n);
                ck_assert_int_eq(memcmp(got, plain, n), 0);

                n = make_rtp(pkt, seq, 0xB0B, "plain voice of B");
                memcpy(plain, pkt, n);
                ep_send(&b, pb, pkt, n);
                len = ep_recv(&a, got, sizeof(got), 2000, &from);
                ck_assert_int_eq(len, (int)n + 10);
                ck_assert_int_eq(srtp_unprotect(a_in, got, &len), srtp_err_status_ok);
                ck_assert_int_eq(len, (int)n);
                ck_assert_int_eq(memcmp(got, plain, n), 0);
        }
        /* A forged SRTP packet fails authentication and is not relayed. */
        size_t n = make_rtp(pkt, 50, 0xA11CE, "forged, no valid tag");
        memset(pkt + n, 0xAB, 10);
        ep_send(&a, pa, pkt, n + 10);
        expect_nothing(&b, 300);
        ck_assert_int_ge(leg_counter("call-srtp", 0, "errors"), 1);
        srtp_dealloc(a_out);
        srtp_dealloc(a_in);

        /* The other way: A plain, B gets SRTP offered by the relay and answers with its key. */
        _cleanup_free_ char *sa2 = make_sdp(a.port, "RTP/AVP", NULL);
        r = ng("offer", "call-id", "call-srtp2", "from-tag", "A", "sdp", sa2,
               "transport-protocol", "RTP/SAVP", NULL);
        expect_ok(r);
        to_b = bencode_dict_get_str(r, "sdp");
        ck_assert_ptr_nonnull(strstr(to_b, " RTP/SAVP 0 8"));
        ck_assert_ptr_nonnull(strstr(to_b, "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:"));
        ck_assert_ptr_nonnull(strstr(to_b, "a=crypto:3 AES_256_CM_HMAC_SHA1_80 inline:"));
        ck_assert_ptr_nonnull(strstr(to_b, "a=crypto:4 AES_256_CM_HMAC_SHA1_32 inline:"));
        b64_key(to_b, key_relay_b, "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:");
        pb = sdp_port(to_b);
        bencode_free(r);
        RAND_bytes(key_b, sizeof(key_b));
        EVP_EncodeBlock((unsigned char *)b64, key_b, sizeof(key_b));
        snprintf(extra, sizeof(extra), "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:%s\r\n", b64);
        _cleanup_free_ char *sb2 = make_sdp(b.port, "RTP/SAVP", extra);
        r = ng("answer", "call-id", "call-srtp2", "from-tag", "A", "to-tag", "B", "sdp", sb2,
               NULL);
        expect_ok(r);
        to_a = bencode_dict_get_str(r, "sdp");
        ck_assert_ptr_nonnull(strstr(to_a, " RTP/AVP 0 8"));
        ck_assert_ptr_null(strstr(to_a, "a=crypto"));
        pa = sdp_port(to_a);
        bencode_free(r);

        srtp_ctx(&b_out, key_b, true);
        srtp_ctx(&b_in, key_relay_b, false);
        for (uint16_t seq = 100; seq < 103; seq++) {
                unsigned char plain[256];
                n = make_rtp(pkt, seq, 0xB0B, "secret voice of B");
                memcpy(plain, pkt, n);
                len = (int)n;
                ck_assert_int_eq(srtp_protect(b_out, pkt, &len), srtp_err_status_ok);
                ep_send(&b, pb, pkt, (size_t)len);
                ck_assert_int_eq(ep_recv(&a, got, sizeof(got), 2000, &from), (int)n);
                ck_assert_int_eq(memcmp(got, plain, n), 0);

                n = make_rtp(pkt, seq, 0xA11CE, "plain voice of A");
                memcpy(plain, pkt, n);
                ep_send(&a, pa, pkt, n);
                len = ep_recv(&b, got, sizeof(got), 2000, &from);
                ck_assert_int_eq(len, (int)n + 10);
                ck_assert_int_eq(srtp_unprotect(b_in, got, &len), srtp_err_status_ok);
                ck_assert_int_eq(memcmp(got, plain, n), 0);
        }
        srtp_dealloc(b_out);
        srtp_dealloc(b_in);

        /* An AES-256 suite with the short tag: the relay answers with the same suite and tag
         * and a key of its own. */
        unsigned char k256[46], k256_relay[46];
        char b64_256[80];
        RAND_bytes(k256, sizeof(k256));
        EVP_EncodeBlock((unsigned char *)b64_256, k256, sizeof(k256));
        snprintf(extra, sizeof(extra),
                 "a=crypto:5 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm\r\n"
                 "a=crypto:7 AES_256_CM_HMAC_SHA1_32 inline:%s\r\n",
                 b64_256);
        _cleanup_free_ char *sa3 = make_sdp(a.port, "RTP/SAVP", extra);
        r = ng("offer", "call-id", "call-srtp3", "from-tag", "A", "sdp", sa3,
               "transport-protocol", "RTP/AVP", NULL);
        expect_ok(r);
        pb = sdp_port(bencode_dict_get_str(r, "sdp"));
        bencode_free(r);
        r = ng("answer", "call-id", "call-srtp3", "from-tag", "A", "to-tag", "B", "sdp", sb, NULL);
        expect_ok(r);
        to_a = bencode_dict_get_str(r, "sdp");
        ck_assert_ptr_null(strstr(to_a, "F8_128"));
        b64_key_len(to_a, k256_relay, 46, "a=crypto:7 AES_256_CM_HMAC_SHA1_32 inline:");
        pa = sdp_port(to_a);
        bencode_free(r);
        srtp_ctx_suite(&a_out, k256, true, true);
        srtp_ctx_suite(&a_in, k256_relay, false, true);
        {
                unsigned char plain[256];
                n = make_rtp(pkt, 7, 0xA11CE, "AES-256 voice of A");
                memcpy(plain, pkt, n);
                len = (int)n;
                ck_assert_int_eq(srtp_protect(a_out, pkt, &len), srtp_err_status_ok);
                ck_assert_int_eq(len, (int)n + 4);
                ep_send(&a, pa, pkt, (size_t)len);
                ck_assert_int_eq(ep_recv(&b, got, sizeof(got), 2000, &from), (int)n);
                ck_assert_int_eq(memcmp(got, plain, n), 0);
                n = make_rtp(pkt, 7, 0xB0B, "plain reply of B");
                memcpy(plain, pkt, n);
                ep_send(&b, pb, pkt, n);
                len = ep_recv(&a, got, sizeof(got), 2000, &from);
                ck_assert_int_eq(len, (int)n + 4);
                ck_assert_int_eq(srtp_unprotect(a_in, got, &len), srtp_err_status_ok);
                ck_assert_int_eq(memcmp(got, plain, n), 0);
        }
        srtp_dealloc(a_out);
        srtp_dealloc(a_in);

        /* An SRTP offer without a usable crypto line is refused. */
        _cleanup_free_ char *sa4 = make_sdp(a.port, "RTP/SAVP",
                                            "a=crypto:1 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm\r\n");
        expect_error(ng("offer", "call-id", "call-srtp4", "from-tag", "A", "sdp", sa4,
                        "transport-protocol", "RTP/AVP", NULL),
                     "No supported a=crypto");
        close(a.fd);
        close(b.fd);
        relay_stop();
}
END_TEST

START_TEST(test_mediarelay_bad_config_refused) {
        static const char *const bad[][2] = {
                {"address=not-an-ip\n", "is not an IP address"},
                {"port-range=30001\n", "port-range"},
                {"ng-listen=/tmp/x.sock\n", "ng-listen must be an IP address"},
                {"inactivity-period=forever\n", "inactivity-period"},
        };
        _cleanup_free_ char *bin = tl_build_path("mediarelay/sipfleet-mediarelay");
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_free_ char *text = NULL, *path = NULL, *log = NULL;
                int port = tl_free_port();
                ck_assert_int_ge(asprintf(&text,
                                          "[global]\ncontrol-socket=%s/bad.sock\n"
                                          "[mediarelay]\nng-listen=127.0.0.1:%d\n%s",
                                          tl_tmpdir(), port, bad[i][0]),
                                 0);
                /* a later ng-listen line replaces the first only in drop-ins: keep one */
                if (strstr(bad[i][0], "ng-listen")) {
                        free(text);
                        ck_assert_int_ge(asprintf(&text,
                                                  "[global]\ncontrol-socket=%s/bad.sock\n"
                                                  "[mediarelay]\n%s",
                                                  tl_tmpdir(), bad[i][0]),
                                         0);
                }
                path = tl_write_file("bad.conf", text);
                char *argv[] = {bin, "--config", path, NULL};
                char name[16];
                struct tl_proc p;
                snprintf(name, sizeof(name), "bad%zu", i);
                tl_spawn(name, argv, &p);
                int st = tl_wait(&p, 10000);
                log = tl_log(&p);
                free(p.log);
                ck_assert_msg(st != 0, "started with '%s'", bad[i][0]);
                ck_assert_msg(strstr(log, bad[i][1]), "'%s': log lacks '%s': %s", bad[i][0],
                              bad[i][1], log);
        }
}
END_TEST

static void put16(unsigned char *p, unsigned v) {
        p[0] = (unsigned char)(v >> 8);
        p[1] = (unsigned char)v;
}

static uint32_t crc32_ref(const unsigned char *p, size_t n) {
        uint32_t c = 0xFFFFFFFFu;
        for (size_t i = 0; i < n; i++) {
                c ^= p[i];
                for (int k = 0; k < 8; k++)
                        c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        return c ^ 0xFFFFFFFFu;
}

/* A binding request with USERNAME, MESSAGE-INTEGRITY (key pwd) and FINGERPRINT. */
static size_t stun_request(unsigned char *p, const char *username, const char *pwd) {
        size_t ul = strlen(username), off = 20;
        unsigned int maclen = 20;
        put16(p, 0x0001);
        p[4] = 0x21, p[5] = 0x12, p[6] = 0xA4, p[7] = 0x42;
        RAND_bytes(p + 8, 12);
        put16(p + off, 0x0006);
        put16(p + off + 2, (unsigned)ul);
        memcpy(p + off + 4, username, ul);
        off += 4 + ((ul + 3) & ~3u);
        memset(p + off - ((4 - ul % 4) % 4), 0, (4 - ul % 4) % 4);
        put16(p + 2, (unsigned)(off - 20 + 24));
        HMAC(EVP_sha1(), pwd, (int)strlen(pwd), p, off, p + off + 4, &maclen);
        put16(p + off, 0x0008);
        put16(p + off + 2, 20);
        off += 24;
        put16(p + 2, (unsigned)(off - 20 + 8));
        uint32_t fp = crc32_ref(p, off) ^ 0x5354554eu;
        put16(p + off, 0x8028);
        put16(p + off + 2, 4);
        p[off + 4] = (unsigned char)(fp >> 24), p[off + 5] = (unsigned char)(fp >> 16);
        p[off + 6] = (unsigned char)(fp >> 8), p[off + 7] = (unsigned char)fp;
        return off + 8;
}

START_TEST(test_mediarelay_stun_and_ice) {
        struct ep a = ep_new(), b = ep_new();
        unsigned char req[256], resp[512];
        int len, from;
        relay_start(NULL);

        _cleanup_free_ char *sa = make_sdp(a.port, "RTP/AVP",
                                           "a=ice-ufrag:aaaa\r\na=ice-pwd:apasswordapasswordapass\r\n"
                                           "a=candidate:1 1 UDP 2130706431 192.168.1.5 4000 typ "
                                           "host\r\n");
        _cleanup_free_ char *sb = make_sdp(b.port, "RTP/AVP", NULL);
        struct bencode *r = ng("offer", "call-id", "call-ice", "from-tag", "A", "sdp", sa, NULL);
        expect_ok(r);
        const char *to_b = bencode_dict_get_str(r, "sdp");
        /* A's candidates and credentials do not pass; the relay's do. */
        ck_assert_ptr_null(strstr(to_b, "192.168.1.5"));
        ck_assert_ptr_null(strstr(to_b, "aaaa"));
        ck_assert_ptr_nonnull(strstr(to_b, "a=ice-lite"));
        ck_assert_ptr_nonnull(strstr(to_b, " typ relay raddr 127.0.0.1"));
        bencode_free(r);
        r = ng("answer", "call-id", "call-ice", "from-tag", "A", "to-tag", "B", "sdp", sb, NULL);
        expect_ok(r);
        const char *to_a = bencode_dict_get_str(r, "sdp");
        _cleanup_free_ char *ufrag = sdp_value(to_a, "a=ice-ufrag:");
        _cleanup_free_ char *pwd = sdp_value(to_a, "a=ice-pwd:");
        ck_assert_ptr_nonnull(ufrag);
        ck_assert_ptr_nonnull(pwd);
        int pa = sdp_port(to_a);
        char cand[128];
        snprintf(cand, sizeof(cand), "a=candidate:1 1 UDP 16777215 127.0.0.1 %d typ relay", pa);
        ck_assert_ptr_nonnull(strstr(to_a, cand));
        bencode_free(r);

        /* A connectivity check with the right credentials: success, XOR-MAPPED-ADDRESS = A. */
        char user[64];
        snprintf(user, sizeof(user), "%s:aaaa", ufrag);
        size_t n = stun_request(req, user, pwd);
        ep_send(&a, pa, req, n);
        len = ep_recv(&a, resp, sizeof(resp), 2000, &from);
        ck_assert_int_ge(len, 20 + 12 + 24 + 8);
        ck_assert_int_eq(from, pa);
        ck_assert_int_eq(resp[0] << 8 | resp[1], 0x0101);
        ck_assert_int_eq(memcmp(resp + 8, req + 8, 12), 0);
        ck_assert_int_eq(resp[20] << 8 | resp[21], 0x0020);
        ck_assert_int_eq(((resp[26] << 8 | resp[27]) ^ 0x2112), a.port);
        ck_assert_int_eq(resp[28] ^ 0x21, 127);
        /* its MESSAGE-INTEGRITY is made with the relay's password, FINGERPRINT is right */
        unsigned char mac[20], tmp[512];
        unsigned int maclen = 20;
        memcpy(tmp, resp, 32);
        put16(tmp + 2, 32 - 20 + 24);
        ck_assert_int_eq(resp[32] << 8 | resp[33], 0x0008);
        HMAC(EVP_sha1(), pwd, (int)strlen(pwd), tmp, 32, mac, &maclen);
        ck_assert_int_eq(memcmp(mac, resp + 36, 20), 0);
        ck_assert_int_eq(resp[56] << 8 | resp[57], 0x8028);
        uint32_t fp = crc32_ref(resp, 56) ^ 0x5354554eu;
        ck_assert_uint_eq(fp, (uint32_t)resp[60] << 24 | (uint32_t)resp[61] << 16 |
                                      (uint32_t)resp[62] << 8 | resp[63]);

        /* Wrong password: 401. */
        n = stun_request(req, user, "wrongpasswordwrongpassw");
        ep_send(&a, pa, req, n);
        len = ep_recv(&a, resp, sizeof(resp), 2000, &from);
        ck_assert_int_gt(len, 20);
        ck_assert_int_eq(resp[0] << 8 | resp[1], 0x0111);
        ck_assert_int_eq(resp[26] * 100 + resp[27], 401);
        ck_assert_int_eq(leg_counter("call-ice", 0, "stun"), 2);
        ck_assert_int_ge(tl_counter(relay.sock, "mediarelay/stun-answered"), 1);

        /* STUN is not relayed. */
        expect_nothing(&b, 200);
        close(a.fd);
        close(b.fd);
        relay_stop();
}
END_TEST

static int ep6_new(int *port) {
        struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        socklen_t len = sizeof(sa);
        int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
        *port = ntohs(sa.sin6_port);
        return fd;
}

START_TEST(test_mediarelay_ipv6) {
        int pa_local, pb_local, a = ep6_new(&pa_local), b = ep6_new(&pb_local);
        char sa[512], sb[512], got[256];
        relay_start("address=::1\n");

        snprintf(sa, sizeof(sa),
                 "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
                 "m=audio %d RTP/AVP 0\r\n",
                 pa_local);
        snprintf(sb, sizeof(sb),
                 "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
                 "m=audio %d RTP/AVP 0\r\n",
                 pb_local);
        struct bencode *r = ng("offer", "call-id", "call-v6", "from-tag", "A", "sdp", sa, NULL);
        expect_ok(r);
        ck_assert_ptr_nonnull(strstr(bencode_dict_get_str(r, "sdp"), "c=IN IP6 ::1\r\n"));
        int pb = sdp_port(bencode_dict_get_str(r, "sdp"));
        bencode_free(r);
        r = ng("answer", "call-id", "call-v6", "from-tag", "A", "to-tag", "B", "sdp", sb, NULL);
        expect_ok(r);
        int pa = sdp_port(bencode_dict_get_str(r, "sdp"));
        bencode_free(r);

        unsigned char pkt[64];
        size_t n = make_rtp(pkt, 1, 0x6666, "over IPv6");
        struct sockaddr_in6 to = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT,
                                  .sin6_port = htons((uint16_t)pa)};
        ck_assert_int_eq(sendto(a, pkt, n, 0, (struct sockaddr *)&to, sizeof(to)), (ssize_t)n);
        struct pollfd p = {.fd = b, .events = POLLIN};
        ck_assert_int_eq(poll(&p, 1, 2000), 1);
        struct sockaddr_in6 from;
        socklen_t fl = sizeof(from);
        ck_assert_int_eq(recvfrom(b, got, sizeof(got), 0, (struct sockaddr *)&from, &fl),
                         (ssize_t)n);
        ck_assert_int_eq(memcmp(got, pkt, n), 0);
        ck_assert_int_eq(ntohs(from.sin6_port), pb);
        close(a);
        close(b);
        relay_stop();
}
END_TEST

START_TEST(test_mediarelay_max_sessions) {
        struct ep a = ep_new();
        relay_start("max-sessions=2\n");
        _cleanup_free_ char *sa = make_sdp(a.port, "RTP/AVP", NULL);
        for (int i = 0; i < 2; i++) {
                char id[16];
                snprintf(id, sizeof(id), "call-%d", i);
                struct bencode *r = ng("offer", "call-id", id, "from-tag", "A", "sdp", sa, NULL);
                expect_ok(r);
                bencode_free(r);
        }
        expect_error(ng("offer", "call-id", "call-3", "from-tag", "A", "sdp", sa, NULL),
                     "Too many calls");
        /* a re-offer of a known call still works */
        struct bencode *r = ng("offer", "call-id", "call-1", "from-tag", "A", "sdp", sa, NULL);
        expect_ok(r);
        bencode_free(r);
        ck_assert_int_eq(tl_counter(relay.sock, "mediarelay/count-calls-refused"), 1);
        close(a.fd);
        relay_stop();
}
END_TEST

/* Polls a Redis command until its reply contains want (bounded). */
static char *redis_wait(struct tl_redis *rd, const char *want, const char *fmt, const char *arg) {
        for (int i = 0; i < 50; i++) {
                char *v = tl_redis_cmd(rd, fmt, arg);
                if (v && strstr(v, want))
                        return v;
                free(v);
                usleep(100 * 1000);
        }
        ck_abort_msg("Redis never showed '%s'", want);
        return NULL;
}

START_TEST(test_mediarelay_redis_announce) {
        struct tl_redis rd;
        struct ep a = ep_new();
        char extra[256], ng_addr[64], key[128];

        ck_assert_int_eq(tl_redis_start(&rd, NULL), 0);
        snprintf(extra, sizeof(extra), "redis-address=127.0.0.1:%d\nannounce-interval=200ms\n",
                 rd.port);
        relay_start(extra);
        snprintf(ng_addr, sizeof(ng_addr), "127.0.0.1:%d", ng_port);
        snprintf(key, sizeof(key), "sipfleet:mediarelay:%s", ng_addr);

        free(redis_wait(&rd, ng_addr, "ZRANGE sipfleet:mediarelays 0 -1", NULL));
        _cleanup_free_ char *info = redis_wait(&rd, "\"calls\":0", "GET %s", key);
        json_t *j = json_loads(info, 0, NULL);
        ck_assert_ptr_nonnull(j);
        ck_assert_str_eq(json_string_value(json_object_get(j, "ng")), ng_addr);
        ck_assert_str_eq(json_string_value(json_object_get(j, "address")), "127.0.0.1");
        ck_assert_int_eq(json_integer_value(json_object_get(j, "ports-total")), 100);
        json_decref(j);
        _cleanup_free_ char *ttl = tl_redis_cmd(&rd, "PTTL %s", key);
        ck_assert_int_gt(atoi(ttl), 0);
        ck_assert_int_le(atoi(ttl), 600);

        /* The load follows the calls. */
        _cleanup_free_ char *sa = make_sdp(a.port, "RTP/AVP", NULL);
        struct bencode *r = ng("offer", "call-id", "call-redis", "from-tag", "A", "sdp", sa, NULL);
        expect_ok(r);
        bencode_free(r);
        free(redis_wait(&rd, "\"calls\":1", "GET %s", key));

        /* SIGTERM withdraws the announce. */
        relay_stop();
        _cleanup_free_ char *left = tl_redis_cmd(&rd, "ZRANGE sipfleet:mediarelays 0 -1");
        ck_assert_ptr_null(strstr(strempty(left), ng_addr));
        _cleanup_free_ char *exists = tl_redis_cmd(&rd, "EXISTS %s", key);
        ck_assert_str_eq(exists, "0");
        close(a.fd);
        tl_redis_stop(&rd);
}
END_TEST

int main(void) {
        Suite *s = suite_create("mediarelay");
        TCase *tc = tcase_create("relay");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_mediarelay_ping_conf_and_errors);
        tcase_add_test(tc, test_mediarelay_etc_conf_in_sync);
        tcase_add_test(tc, test_mediarelay_offer_answer_rtp_rtcp);
        tcase_add_test(tc, test_mediarelay_rtcp_mux);
        tcase_add_test(tc, test_mediarelay_latching_and_third_party);
        tcase_add_test(tc, test_mediarelay_latch_flags);
        tcase_add_test(tc, test_mediarelay_idle_timeout_frees_ports);
        tcase_add_test(tc, test_mediarelay_srtp_bridge);
        tcase_add_test(tc, test_mediarelay_stun_and_ice);
        tcase_add_test(tc, test_mediarelay_ipv6);
        tcase_add_test(tc, test_mediarelay_max_sessions);
        tcase_add_test(tc, test_mediarelay_redis_announce);
        tcase_add_test(tc, test_mediarelay_bad_config_refused);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
