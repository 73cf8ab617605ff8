/* SPDX-License-Identifier: MIT */
/* common/ratelimit: addresses and networks, token buckets, bans, eviction and expiry, with
 * time passed in by the test. */
#include <arpa/inet.h>
#include <stdio.h>

#include "macro.h"
#include "ratelimit.h"
#include "testlib.h"

static struct ip_addr addr(const char *s) {
        struct ip_addr a;
        ck_assert_msg(ip_addr_parse(s, &a) == 0, "cannot parse %s", s);
        return a;
}

static struct ratelimit *table(uint64_t period_ms, uint64_t packet_rate, uint64_t request_rate,
                               uint64_t ban_ms, size_t max_sources) {
        struct ratelimit *rl = NULL;
        const struct ratelimit_limits l = {
                .period_ms = period_ms,
                .packet_rate = packet_rate,
                .request_rate = request_rate,
                .ban_ms = ban_ms,
                .max_sources = max_sources,
        };
        ck_assert_int_eq(ratelimit_new(&l, &rl), 0);
        return rl;
}

START_TEST(test_ratelimit_addresses) {
        char buf[IP_ADDR_STRLEN];
        struct ip_addr a;

        ck_assert_int_eq(ip_addr_parse("192.0.2.7", &a), 0);
        ck_assert_int_eq(a.family, AF_INET);
        ck_assert_str_eq(ip_addr_format(&a, buf), "192.0.2.7");
        ck_assert_int_eq(ip_addr_parse("[2001:db8::1]", &a), 0);
        ck_assert_int_eq(a.family, AF_INET6);
        ck_assert_str_eq(ip_addr_format(&a, buf), "2001:db8::1");
        /* IPv4-mapped IPv6 is the IPv4 address. */
        ck_assert_int_eq(ip_addr_parse("::ffff:192.0.2.7", &a), 0);
        ck_assert_int_eq(a.family, AF_INET);
        struct ip_addr b = addr("192.0.2.7");
        ck_assert(ip_addr_equal(&a, &b));

        struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
        ck_assert_int_eq(inet_pton(AF_INET6, "::ffff:10.1.2.3", &sin6.sin6_addr), 1);
        ck_assert_int_eq(ip_addr_from_sockaddr((struct sockaddr *)&sin6, sizeof sin6, &a), 0);
        ck_assert_str_eq(ip_addr_format(&a, buf), "10.1.2.3");
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000002)};
        ck_assert_int_eq(ip_addr_from_sockaddr((struct sockaddr *)&sin, sizeof sin, &a), 0);
        ck_assert_str_eq(ip_addr_format(&a, buf), "127.0.0.2");
        ck_assert_int_eq(ip_addr_from_sockaddr((struct sockaddr *)&sin, 4, &a), -EINVAL);
        struct sockaddr un = {.sa_family = AF_UNIX};
        ck_assert_int_eq(ip_addr_from_sockaddr(&un, sizeof un, &a), -EAFNOSUPPORT);

        static const char *const bad[] = {"", "[]", "host.example", "1.2.3", "1.2.3.4.5",
                                          "::g", "[::1", "1.2.3.4 "};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                ck_assert_msg(ip_addr_parse(bad[i], &a) == -EINVAL, "'%s' accepted", bad[i]);
        ck_assert_int_eq(ip_addr_parse(NULL, &a), -EINVAL);
}
END_TEST

START_TEST(test_ratelimit_prefixes) {
        struct ip_prefix p;
        struct ip_addr a;

        ck_assert_int_eq(ip_prefix_parse("10.0.0.0/8", &p), 0);
        a = addr("10.255.1.2");
        ck_assert(ip_prefix_contains(&p, &a));
        a = addr("11.0.0.1");
        ck_assert(!ip_prefix_contains(&p, &a));
        a = addr("::ffff:10.0.0.1"); /* mapped: the same IPv4 source */
        ck_assert(ip_prefix_contains(&p, &a));

        /* Host bits are cleared; odd lengths mask inside a byte. */
        ck_assert_int_eq(ip_prefix_parse("127.0.0.3/30", &p), 0);
        for (int i = 0; i < 8; i++) {
                char s[32];
                snprintf(s, sizeof s, "127.0.0.%d", i);
                a = addr(s);
                ck_assert_msg(ip_prefix_contains(&p, &a) == (i < 4), "%s", s);
        }

        ck_assert_int_eq(ip_prefix_parse("2001:db8::/32", &p), 0);
        a = addr("2001:db8:ffff::1");
        ck_assert(ip_prefix_contains(&p, &a));
        a = addr("2001:db9::1");
        ck_assert(!ip_prefix_contains(&p, &a));
        a = addr("10.0.0.1"); /* other family */
        ck_assert(!ip_prefix_contains(&p, &a));

        /* One address is a full-length prefix. */
        ck_assert_int_eq(ip_prefix_parse("::1", &p), 0);
        ck_assert_int_eq(p.len, 128);
        a = addr("::1");
        ck_assert(ip_prefix_contains(&p, &a));
        a = addr("::2");
        ck_assert(!ip_prefix_contains(&p, &a));

        ck_assert_int_eq(ip_prefix_parse("0.0.0.0/0", &p), 0);
        a = addr("203.0.113.9");
        ck_assert(ip_prefix_contains(&p, &a));

        ck_assert_int_eq(ip_prefix_parse("::ffff:10.0.0.0/104", &p), 0);
        ck_assert_int_eq(p.addr.family, AF_INET);
        ck_assert_int_eq(p.len, 8);

        static const char *const bad[] = {"10.0.0.0/33", "10.0.0.0/", "10.0.0.0/x", "/8",
                                          "::/129", "10.0.0.0/-1", "10.0.0.0/ 8", "net/8",
                                          "::ffff:10.0.0.0/95"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                ck_assert_msg(ip_prefix_parse(bad[i], &p) == -EINVAL, "'%s' accepted", bad[i]);
}
END_TEST

START_TEST(test_ratelimit_new_refuses_zero) {
        struct ratelimit *rl = NULL;
        struct ratelimit_limits l = {.period_ms = 1000, .ban_ms = 1000, .max_sources = 1};
        ck_assert_int_eq(ratelimit_new(&l, &rl), 0);
        ratelimit_free(rl);
        l.period_ms = 0;
        ck_assert_int_eq(ratelimit_new(&l, &rl), -EINVAL);
        l.period_ms = 1000;
        l.ban_ms = 0;
        ck_assert_int_eq(ratelimit_new(&l, &rl), -EINVAL);
        l.ban_ms = 1000;
        l.max_sources = 0;
        ck_assert_int_eq(ratelimit_new(&l, &rl), -EINVAL);
        ratelimit_free(NULL);
}
END_TEST

/* 5 requests/s over 2 s: a burst of 10 passes, the 11th bans for 3 s; while banned the source
 * is refused and the ban is not extended; after it, a fresh burst passes. */
START_TEST(test_ratelimit_request_burst_then_ban) {
        struct ratelimit *rl = table(2000, 0, 5, 3000, 100);
        struct ip_addr a = addr("192.0.2.1");
        uint64_t left = 0, now = 1000000;

        for (int i = 0; i < 10; i++)
                ck_assert_int_eq(ratelimit_hit(rl, &a, true, now, &left), RATELIMIT_PASS);
        ck_assert_int_eq(ratelimit_hit(rl, &a, true, now, &left), RATELIMIT_BAN_REQUESTS);
        ck_assert_uint_eq(left, 3000);
        ck_assert_uint_eq(ratelimit_n_bans(rl), 1);
        /* Non-requests do not count against the request rate, but a banned source is refused. */
        ck_assert_int_eq(ratelimit_hit(rl, &a, false, now + 1000, &left), RATELIMIT_BANNED);
        ck_assert_uint_eq(left, 2000);
        for (int i = 0; i < 50; i++)
                ck_assert_int_eq(ratelimit_hit(rl, &a, true, now + 2999, &left),
                                 RATELIMIT_BANNED);
        ck_assert_uint_eq(left, 1);

        /* Another source is not affected. */
        struct ip_addr b = addr("192.0.2.2");
        ck_assert_int_eq(ratelimit_hit(rl, &b, true, now, &left), RATELIMIT_PASS);

        /* The ban ends at 3 s sharp, with full buckets. */
        now += 3000;
        for (int i = 0; i < 10; i++)
                ck_assert_int_eq(ratelimit_hit(rl, &a, true, now, &left), RATELIMIT_PASS);
        ck_assert_uint_eq(ratelimit_n_bans(rl), 0);
        ck_assert_int_eq(ratelimit_hit(rl, &a, true, now, &left), RATELIMIT_BAN_REQUESTS);
        ratelimit_free(rl);
}
END_TEST

/* The sustained rate passes forever: 5/s = one message every 200 ms, with a burst of 5 (1 s). */
START_TEST(test_ratelimit_sustained_rate_passes) {
        struct ratelimit *rl = table(1000, 5, 0, 10000, 100);
        struct ip_addr a = addr("2001:db8::5");
        uint64_t now = 0;

        for (int i = 0; i < 1000; i++, now += 200)
                ck_assert_int_eq(ratelimit_hit(rl, &a, false, now, NULL), RATELIMIT_PASS);
        /* Twice as fast: the burst is used up after about 10 messages (5 + refills). */
        int passed = 0;
        enum ratelimit_result r;
        while ((r = ratelimit_hit(rl, &a, false, now, NULL)) == RATELIMIT_PASS) {
                passed++;
                now += 100;
                ck_assert_int_lt(passed, 100);
        }
        ck_assert_int_eq(r, RATELIMIT_BAN_PACKETS);
        ck_assert_int_ge(passed, 9);
        ck_assert_int_le(passed, 11);
        ratelimit_free(rl);
}
END_TEST

/* Requests count against both rates; the packet rate alone also bans non-requests. */
START_TEST(test_ratelimit_packet_and_request_rates) {
        struct ratelimit *rl = table(1000, 3, 2, 1000, 100);
        struct ip_addr a = addr("198.51.100.1"), b = addr("198.51.100.2");

        ck_assert_int_eq(ratelimit_hit(rl, &a, true, 0, NULL), RATELIMIT_PASS);
        ck_assert_int_eq(ratelimit_hit(rl, &a, true, 0, NULL), RATELIMIT_PASS);
        ck_assert_int_eq(ratelimit_hit(rl, &a, true, 0, NULL), RATELIMIT_BAN_REQUESTS);

        ck_assert_int_eq(ratelimit_hit(rl, &b, false, 0, NULL), RATELIMIT_PASS);
        ck_assert_int_eq(ratelimit_hit(rl, &b, true, 0, NULL), RATELIMIT_PASS);
        ck_assert_int_eq(ratelimit_hit(rl, &b, false, 0, NULL), RATELIMIT_PASS);
        ck_assert_int_eq(ratelimit_hit(rl, &b, false, 0, NULL), RATELIMIT_BAN_PACKETS);
        ck_assert_uint_eq(ratelimit_n_bans(rl), 2);
        ratelimit_free(rl);
}
END_TEST

/* A rate below one message per period still lets one message through. */
START_TEST(test_ratelimit_tiny_bucket_holds_one) {
        struct ratelimit *rl = table(100, 1, 0, 1000, 100);
        struct ip_addr a = addr("192.0.2.9");
        ck_assert_int_eq(ratelimit_hit(rl, &a, false, 0, NULL), RATELIMIT_PASS);
        ck_assert_int_eq(ratelimit_hit(rl, &a, false, 1, NULL), RATELIMIT_BAN_PACKETS);
        ratelimit_free(rl);
}
END_TEST

/* No limit set: nothing is ever banned. */
START_TEST(test_ratelimit_no_limit) {
        struct ratelimit *rl = table(1000, 0, 0, 1000, 100);
        struct ip_addr a = addr("192.0.2.10");
        for (int i = 0; i < 10000; i++)
                ck_assert_int_eq(ratelimit_hit(rl, &a, i % 2, 0, NULL), RATELIMIT_PASS);
        ratelimit_free(rl);
}
END_TEST

/* The table never holds more than max_sources: the least recently seen source goes first. */
START_TEST(test_ratelimit_bounded_evicts_least_recent) {
        struct ratelimit *rl = table(1000, 1, 0, 60000, 16);
        struct ip_addr banned = addr("10.0.0.1");
        uint64_t left;
        ck_assert_int_eq(ratelimit_hit(rl, &banned, false, 0, NULL), RATELIMIT_PASS);
        ck_assert_int_eq(ratelimit_hit(rl, &banned, false, 0, NULL), RATELIMIT_BAN_PACKETS);

        /* 100000 spoofed sources: memory stays at 16 entries. The banned source keeps sending
         * and stays among the most recent, so its ban survives. */
        for (unsigned i = 0; i < 100000; i++) {
                struct ip_addr a = {.family = AF_INET};
                uint32_t v = htonl(0x0b000000u + i);
                memcpy(a.bytes, &v, 4);
                ck_assert_int_eq(ratelimit_hit(rl, &a, false, 1 + i / 1000, NULL),
                                 RATELIMIT_PASS);
                ck_assert_uint_le(ratelimit_n_sources(rl), 16);
                if (i % 8 == 0)
                        ck_assert_int_eq(ratelimit_hit(rl, &banned, false, 1 + i / 1000, &left),
                                         RATELIMIT_BANNED);
        }
        ck_assert_uint_eq(ratelimit_n_sources(rl), 16);
        ck_assert_uint_eq(ratelimit_n_bans(rl), 1);

        /* Once quiet, it is the least recently seen and goes under more pressure. */
        for (unsigned i = 0; i < 16; i++) {
                struct ip_addr a = {.family = AF_INET6};
                a.bytes[15] = (uint8_t)i;
                a.bytes[0] = 0x20;
                ck_assert_int_eq(ratelimit_hit(rl, &a, false, 200, NULL), RATELIMIT_PASS);
        }
        ck_assert_uint_eq(ratelimit_n_bans(rl), 0);
        ck_assert_int_eq(ratelimit_forget(rl, &banned), -ENOENT);
        ratelimit_free(rl);
}
END_TEST

struct lifted_log {
        int n;
        char last[IP_ADDR_STRLEN];
        uint64_t refused;
};

static void on_lifted(const struct ratelimit_ban *b, void *userdata) {
        struct lifted_log *l = userdata;
        l->n++;
        ip_addr_format(&b->addr, l->last);
        l->refused = b->refused;
}

/* Idle sources are dropped once their buckets are full again; ended bans are lifted. */
START_TEST(test_ratelimit_expire) {
        struct ratelimit *rl = table(2000, 10, 0, 5000, 100);
        struct ip_addr a = addr("192.0.2.1"), b = addr("192.0.2.2"), c = addr("192.0.2.3");
        struct lifted_log log = {0};

        ck_assert_int_eq(ratelimit_hit(rl, &a, false, 0, NULL), RATELIMIT_PASS);
        ck_assert_int_eq(ratelimit_hit(rl, &b, false, 1000, NULL), RATELIMIT_PASS);
        for (int i = 0; i < 20; i++)
                ck_assert_int_eq(ratelimit_hit(rl, &c, false, 1000, NULL), RATELIMIT_PASS);
        ck_assert_int_eq(ratelimit_hit(rl, &c, false, 1000, NULL), RATELIMIT_BAN_PACKETS);
        ck_assert_int_eq(ratelimit_hit(rl, &c, false, 1500, NULL), RATELIMIT_BANNED);
        ck_assert_uint_eq(ratelimit_n_sources(rl), 3);

        /* At 2.5 s: a's bucket refilled (2 s), b's not yet. */
        ck_assert_uint_eq(ratelimit_expire(rl, 2500, on_lifted, &log), 0);
        ck_assert_uint_eq(ratelimit_n_sources(rl), 2);
        ck_assert_int_eq(ratelimit_forget(rl, &a), -ENOENT);
        /* At 3 s b goes; c stays banned. */
        ck_assert_uint_eq(ratelimit_expire(rl, 3000, on_lifted, &log), 0);
        ck_assert_uint_eq(ratelimit_n_sources(rl), 1);
        ck_assert_int_eq(log.n, 0);
        /* At 6 s c's ban has ended (1 s + 5 s): lifted, reported, forgotten. */
        ck_assert_uint_eq(ratelimit_expire(rl, 6000, on_lifted, &log), 1);
        ck_assert_int_eq(log.n, 1);
        ck_assert_str_eq(log.last, "192.0.2.3");
        ck_assert_uint_eq(log.refused, 2);
        ck_assert_uint_eq(ratelimit_n_sources(rl), 0);
        ck_assert_uint_eq(ratelimit_n_bans(rl), 0);
        ratelimit_free(rl);
}
END_TEST

struct ban_list {
        int n;
        char addrs[4][IP_ADDR_STRLEN];
        uint64_t until[4];
};

static void collect_ban(const struct ratelimit_ban *b, void *userdata) {
        struct ban_list *l = userdata;
        if (l->n < 4) {
                ip_addr_format(&b->addr, l->addrs[l->n]);
                l->until[l->n] = b->until_ms;
        }
        l->n++;
}

START_TEST(test_ratelimit_list_and_unban) {
        struct ratelimit *rl = table(1000, 1, 0, 10000, 100);
        struct ip_addr a = addr("192.0.2.1"), b = addr("2001:db8::2"), c = addr("192.0.2.3");
        struct ban_list l = {0};

        ratelimit_hit(rl, &a, false, 0, NULL);
        ck_assert_int_eq(ratelimit_hit(rl, &a, false, 0, NULL), RATELIMIT_BAN_PACKETS);
        ratelimit_hit(rl, &b, false, 100, NULL);
        ck_assert_int_eq(ratelimit_hit(rl, &b, false, 100, NULL), RATELIMIT_BAN_PACKETS);
        ratelimit_hit(rl, &c, false, 100, NULL);

        ratelimit_foreach_ban(rl, 200, collect_ban, &l);
        ck_assert_int_eq(l.n, 2);
        ck_assert_str_eq(l.addrs[0], "2001:db8::2"); /* most recently active first */
        ck_assert_uint_eq(l.until[0], 10100);
        ck_assert_str_eq(l.addrs[1], "192.0.2.1");

        ck_assert_int_eq(ratelimit_unban(rl, &c, 200), -ENOENT);
        ck_assert_int_eq(ratelimit_unban(rl, &a, 200), 0);
        ck_assert_int_eq(ratelimit_unban(rl, &a, 200), -ENOENT);
        ck_assert_uint_eq(ratelimit_n_bans(rl), 1);
        /* Unbanned with a full bucket. */
        ck_assert_int_eq(ratelimit_hit(rl, &a, false, 200, NULL), RATELIMIT_PASS);

        /* Bans that ended are not listed, even before expire() lifts them. */
        memset(&l, 0, sizeof l);
        ratelimit_foreach_ban(rl, 10100, collect_ban, &l);
        ck_assert_int_eq(l.n, 0);
        ck_assert_int_eq(ratelimit_forget(rl, &b), 0);
        ck_assert_uint_eq(ratelimit_n_bans(rl), 0);
        ratelimit_free(rl);
}
END_TEST

int main(void) {
        Suite *s = suite_create("ratelimit");
        TCase *ta = tcase_create("addresses");
        tcase_add_test(ta, test_ratelimit_addresses);
        tcase_add_test(ta, test_ratelimit_prefixes);
        suite_add_tcase(s, ta);
        TCase *tt = tcase_create("table");
        tcase_add_test(tt, test_ratelimit_new_refuses_zero);
        tcase_add_test(tt, test_ratelimit_request_burst_then_ban);
        tcase_add_test(tt, test_ratelimit_sustained_rate_passes);
        tcase_add_test(tt, test_ratelimit_packet_and_request_rates);
        tcase_add_test(tt, test_ratelimit_tiny_bucket_holds_one);
        tcase_add_test(tt, test_ratelimit_no_limit);
        tcase_add_test(tt, test_ratelimit_bounded_evicts_least_recent);
        tcase_add_test(tt, test_ratelimit_expire);
        tcase_add_test(tt, test_ratelimit_list_and_unban);
        suite_add_tcase(s, tt);
        return tl_run(s);
}
