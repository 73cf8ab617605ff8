/* SPDX-License-Identifier: MIT */
/* The NG command handler of a real relay object (packet threads, sockets on loopback) fed
 * with the malformed corpus, SDES crypto lines, and STUN answers built in memory. */
#include <arpa/inet.h>
#include <dirent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "bencode.h"
#include "loop.h"
#include "macro.h"
#include "mediarelay.h"
#include "testlib.h"

static struct event_base *base;
static struct loop *loop;
static struct mediarelay *relay;

static void setup(void) {
        int lo = tl_free_port() & ~1;
        if (lo > 65000)
                lo = 50000;
        struct mediarelay_config c = {
                .port_range = {lo, lo + 63},
                .address = (char *)"127.0.0.1",
                .inactivity_period_ms = 60000,
                .relatch_silence_ms = 2000,
                .max_sessions = 10,
                .packet_threads = 1,
        };
        base = event_base_new();
        ck_assert_ptr_nonnull(base);
        ck_assert_int_eq(loop_new_event(base, &loop), 0);
        ck_assert_int_eq(mediarelay_new_bare(&c, loop, &relay), 0);
}

static void teardown(void) {
        mediarelay_free(relay);
        loop_free(loop);
        event_base_free(base);
}

/* Runs one datagram through the handler; returns the reply dict, *cookie the echoed cookie. */
static size_t cookie_len;

static struct bencode *process(const void *msg, size_t len, char **cookie) {
        char *reply = NULL;
        size_t reply_len = 0;
        struct bencode *out = NULL;

        ck_assert_int_eq(ng_process(relay, msg, len, &reply, &reply_len), 0);
        ck_assert_ptr_nonnull(reply);
        char *sp = memchr(reply, ' ', reply_len);
        ck_assert_ptr_nonnull(sp);
        ck_assert_int_eq(bencode_decode(sp + 1, reply_len - (size_t)(sp - reply) - 1, NULL, &out,
                                        NULL, NULL),
                         0);
        cookie_len = (size_t)(sp - reply);
        if (cookie) {
                *cookie = malloc(cookie_len + 1);
                memcpy(*cookie, reply, cookie_len);
                (*cookie)[cookie_len] = 0;
        }
        free(reply);
        return out;
}

START_TEST(test_mediarelay_ng_corpus_answered_with_errors) {
        _cleanup_free_ char *dir = tl_source_path("test/corpus/bencode");
        DIR *d = opendir(dir);
        struct dirent *de;
        int n = 0;

        ck_assert_ptr_nonnull(d);
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                _cleanup_free_ char *path = NULL, *data = NULL, *cookie = NULL;
                size_t len;
                ck_assert_int_ge(asprintf(&path, "%s/%s", dir, de->d_name), 0);
                data = tl_read_file(path, &len);
                ck_assert_ptr_nonnull(data);
                struct bencode *r = process(data, len, &cookie);
                const char *res = bencode_dict_get_str(r, "result");
                const char *why = bencode_dict_get_str(r, "error-reason");
                ck_assert_msg(res && streq(res, "error"), "%s: result '%s'", de->d_name,
                              strna(res));
                ck_assert_msg(!isempty(why), "%s: no error-reason", de->d_name);
                /* the cookie is echoed: what precedes the first space, if any */
                const char *sp = memchr(data, ' ', len);
                if (sp && sp - data <= 256)
                        ck_assert_msg(cookie_len == (size_t)(sp - data) &&
                                              memcmp(cookie, data, cookie_len) == 0,
                                      "%s: cookie not echoed", de->d_name);
                else
                        ck_assert_uint_eq(cookie_len, 0);
                bencode_free(r);
                n++;
        }
        closedir(d);
        ck_assert_int_ge(n, 40);
        /* nothing was left behind by the failed offers */
        ck_assert_uint_eq(relay->n_calls, 0);
        ck_assert_uint_eq(relay->ports_in_use, 0);
}
END_TEST

START_TEST(test_mediarelay_ng_ping_offer_delete) {
        static const char ping[] = "5_a d7:command4:pinge";
        _cleanup_free_ char *cookie = NULL;
        struct bencode *r = process(ping, sizeof(ping) - 1, &cookie);
        ck_assert_str_eq(cookie, "5_a");
        ck_assert_str_eq(bencode_dict_get_str(r, "result"), "pong");
        bencode_free(r);

        static const char sdp[] = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\n"
                                  "t=0 0\r\nm=audio 4000 RTP/AVP 0\r\nm=video 0 RTP/AVP 96\r\n";
        char msg[512];
        int len = snprintf(msg, sizeof(msg),
                           "c d7:command5:offer7:call-id2:c18:from-tag1:a7:replacel6:origine"
                           "3:sdp%zu:%se",
                           sizeof(sdp) - 1, sdp);
        r = process(msg, (size_t)len, NULL);
        ck_assert_str_eq(bencode_dict_get_str(r, "result"), "ok");
        const char *out = bencode_dict_get_str(r, "sdp");
        ck_assert_ptr_nonnull(strstr(out, "o=- 1 1 IN IP4 127.0.0.1\r\n"));
        ck_assert_ptr_nonnull(strstr(out, "c=IN IP4 127.0.0.1\r\n"));
        /* the rejected video stays rejected */
        ck_assert_ptr_nonnull(strstr(out, "m=video 0 RTP/AVP 96\r\n"));
        ck_assert_ptr_null(strstr(out, "10.0.0.1"));
        bencode_free(r);
        ck_assert_uint_eq(relay->n_calls, 1);
        ck_assert_uint_eq(relay->ports_in_use, 8);

        /* AVPF to SAVPF: the profile kept, SRTP offered with the four suites. */
        static const char avpf[] = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\n"
                                   "t=0 0\r\nm=audio 4000 RTP/AVPF 0\r\na=rtcp:4001\r\n";
        len = snprintf(msg, sizeof(msg),
                       "e d7:command5:offer7:call-id2:c28:from-tag1:a18:transport-protocol"
                       "9:RTP/SAVPF3:sdp%zu:%se",
                       sizeof(avpf) - 1, avpf);
        r = process(msg, (size_t)len, NULL);
        ck_assert_str_eq(bencode_dict_get_str(r, "result"), "ok");
        out = bencode_dict_get_str(r, "sdp");
        ck_assert_msg(strstr(out, " RTP/SAVPF 0\r\n"), "%s", out);
        ck_assert_ptr_nonnull(strstr(out, "a=crypto:4 AES_256_CM_HMAC_SHA1_32 inline:"));
        ck_assert_ptr_null(strstr(out, "a=rtcp:4001"));
        bencode_free(r);

        /* Idle time: a packet thread may stamp a packet after the sweep read its clock; that
         * call is active, not idle for 2^64 ms (which deleted busy calls under load). */
        struct call *c1 = call_find(relay, "c1");
        ck_assert_ptr_nonnull(c1);
        struct stream *st = c1->legs[0].media[0];
        ck_assert_ptr_nonnull(st);
        uint64_t now = mono_ms();
        atomic_store(&st->rtp.last_rx_ms, now + 5);
        ck_assert_uint_eq(call_idle_ms(c1, now), 0);
        /* Ten seconds later it has been idle for about ten seconds. */
        ck_assert_uint_ge(call_idle_ms(c1, now + 10000), 9990);
        ck_assert_uint_le(call_idle_ms(c1, now + 10000), 10000);

        static const char del[] = "d d7:command6:delete7:call-id2:c1e";
        r = process(del, sizeof(del) - 1, NULL);
        ck_assert_str_eq(bencode_dict_get_str(r, "result"), "ok");
        bencode_free(r);
        ck_assert_uint_eq(relay->n_calls, 1);
}
END_TEST

START_TEST(test_mediarelay_crypto_lines) {
        struct crypto_params p, q;
        _cleanup_free_ char *line = NULL;

        ck_assert_int_eq(crypto_parse("1 AES_CM_128_HMAC_SHA1_80 "
                                      "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32",
                                      &p),
                         0);
        ck_assert_int_eq(p.tag, 1);
        ck_assert_str_eq(crypto_suite_name(p.suite), "AES_CM_128_HMAC_SHA1_80");
        ck_assert_int_eq(memcmp(p.key, "YS___semctl () {\t220;}\n}\nunles", 30), 0);
        line = crypto_format(&p);
        ck_assert_str_eq(line, "1 AES_CM_128_HMAC_SHA1_80 "
                               "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz");

        crypto_generate(&q, crypto_suite_from_name("AES_256_CM_HMAC_SHA1_32"), 7);
        free(line);
        line = crypto_format(&q);
        memset(&p, 0, sizeof(p));
        ck_assert_int_eq(crypto_parse(line, &p), 0);
        ck_assert_int_eq(p.tag, 7);
        ck_assert_int_eq(memcmp(p.key, q.key, 46), 0);

        /* unusable lines */
        ck_assert_int_lt(crypto_parse("1 F8_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", &p), 0);
        ck_assert_int_lt(crypto_parse("1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=", &p), 0);
        ck_assert_int_lt(crypto_parse("1 AES_CM_128_HMAC_SHA1_80 inline:!!!!X19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", &p), 0);
        ck_assert_int_lt(crypto_parse("AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", &p), 0);
        ck_assert_int_lt(crypto_parse("1 AES_CM_128_HMAC_SHA1_80 WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz", &p), 0);
        ck_assert_int_lt(crypto_parse("", &p), 0);
}
END_TEST

START_TEST(test_mediarelay_stun_binding) {
        struct stream s = {0};
        unsigned char req[20] = {0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42,
                                 1,    2,    3,    4,    5,    6,    7,    8, 9, 10, 11, 12};
        unsigned char out[512];
        struct sockaddr_in from = {.sin_family = AF_INET, .sin_port = htons(5004)};
        from.sin_addr.s_addr = htonl(0x0a000001);

        ck_assert(stun_is_stun(req, sizeof(req)));
        ck_assert(!stun_is_stun(req, 19));
        unsigned char rtp[20] = {0x80, 0};
        ck_assert(!stun_is_stun(rtp, sizeof(rtp)));

        /* Without ICE credentials: a plain binding response. */
        size_t n = stun_answer(&s, req, sizeof(req), (struct sockaddr *)&from, out, sizeof(out));
        ck_assert_uint_eq(n, 20 + 12 + 8);
        ck_assert_int_eq(out[0] << 8 | out[1], 0x0101);
        ck_assert_int_eq(memcmp(out + 4, req + 4, 16), 0);
        ck_assert_int_eq((out[26] << 8 | out[27]) ^ 0x2112, 5004);
        ck_assert_int_eq(out[28] ^ 0x21, 10);
        ck_assert_int_eq(out[31] ^ 0x42, 1);
        ck_assert_int_eq(out[32] << 8 | out[33], 0x8028);

        /* With credentials, a check without USERNAME/MESSAGE-INTEGRITY: 400. */
        s.ice = true;
        strcpy(s.ice_ufrag, "abcdefgh");
        strcpy(s.ice_pwd, "0123456789abcdefghijklmn");
        n = stun_answer(&s, req, sizeof(req), (struct sockaddr *)&from, out, sizeof(out));
        ck_assert_uint_gt(n, 20);
        ck_assert_int_eq(out[0] << 8 | out[1], 0x0111);
        ck_assert_int_eq(out[26] * 100 + out[27], 400);

        /* A response is not answered; a truncated attribute is ignored. */
        req[1] = 0x01;
        req[0] = 0x01;
        ck_assert_uint_eq(stun_answer(&s, req, sizeof(req), (struct sockaddr *)&from, out,
                                      sizeof(out)),
                          0);
        unsigned char bad[24] = {0x00, 0x01, 0x00, 0x04, 0x21, 0x12, 0xA4, 0x42};
        bad[21] = 0x06; /* USERNAME */
        bad[23] = 0x40; /* of 64 bytes, in a 4-byte body */
        ck_assert_uint_eq(stun_answer(&s, bad, sizeof(bad), (struct sockaddr *)&from, out,
                                      sizeof(out)),
                          0);
}
END_TEST

int main(void) {
        Suite *s = suite_create("mediarelay");
        TCase *tc = tcase_create("ng");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_mediarelay_ng_corpus_answered_with_errors);
        tcase_add_test(tc, test_mediarelay_ng_ping_offer_delete);
        suite_add_tcase(s, tc);
        TCase *tp = tcase_create("parsers");
        tcase_add_test(tp, test_mediarelay_crypto_lines);
        tcase_add_test(tp, test_mediarelay_stun_binding);
        suite_add_tcase(s, tp);
        return tl_run(s);
}
