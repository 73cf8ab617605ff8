/* SPDX-License-Identifier: MIT */
/* The built proxy on the Redis registrar store against a real redis-server: REGISTERs land in
 * Redis in the documented layout, with a password or an ACL user; while Redis is unreachable a
 * REGISTER is answered 503 with Retry-After at once, and service comes back with Redis. */
#include <jansson.h>
#include <stdio.h>
#include <time.h>

#include "macro.h"
#include "testlib-redis.h"
#include "testlib.h"

static long long mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static char *redis_conf(int port, const char *more) {
        char *text;
        ck_assert_int_ge(asprintf(&text,
                                  "[module::NatHelper]\n"
                                  "enabled=false\n"
                                  "[module::Registrar]\n"
                                  "db-implementation=redis\n"
                                  "redis-server-port=%d\n"
                                  "%s",
                                  port, strempty(more)),
                         0);
        return text;
}

/* REGISTERs until one gets 200 (the proxy connects to Redis in the background). */
static void register_until_ok(int port, const char *user, const char *contact, int within_ms) {
        static uint32_t cseq = 1;
        long long deadline = mono_ms() + within_ms;
        int status = 0;
        while (mono_ms() < deadline) {
                status = tl_sip_register(port, user, contact, "redis-test-call", cseq++, 600, 1000,
                                         NULL);
                if (status == 200)
                        return;
                nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
        }
        ck_abort_msg("no 200 to REGISTER within %d ms (last status %d)", within_ms, status);
}

START_TEST(test_proxy_redis_register_and_outage) {
        struct tl_redis redis = {0};
        struct tl_proxy proxy = {0};
        tl_redis_start_on(&redis, 0, NULL);
        _cleanup_free_ char *conf = redis_conf(redis.port, NULL);
        tl_proxy_start(&proxy, conf);

        register_until_ok(proxy.port, "alice", "sip:alice@192.0.2.10:5060", 5000);
        _cleanup_free_ char *fields = tl_redis_cmd(&redis, "HKEYS fs:alice@localhost");
        ck_assert_ptr_nonnull(fields);
        ck_assert_msg(strstr(fields, "c:gen-") && strstr(fields, "v"), "fields: %s", fields);
        _cleanup_free_ char *values = tl_redis_cmd(&redis, "HVALS fs:alice@localhost");
        ck_assert_ptr_nonnull(strstr(values, "sip:alice@192.0.2.10:5060"));
        _cleanup_free_ char *ttl = tl_redis_cmd(&redis, "TTL fs:alice@localhost");
        ck_assert_int_gt(atoi(ttl), 590);
        ck_assert_int_le(atoi(ttl), 600);
        json_t *j = tl_ctl(proxy.sock, "REGISTRAR_GET sip:alice@localhost");
        ck_assert_int_eq(json_array_size(json_object_get(j, "contacts")), 1);
        json_decref(j);

        /* Redis gone: 503 with Retry-After, at once. */
        tl_redis_stop(&redis);
        long long t0 = mono_ms();
        _cleanup_free_ char *resp = NULL;
        int status = tl_sip_register(proxy.port, "alice", "sip:alice@192.0.2.10:5060",
                                     "redis-test-call", 1000, 600, 3000, &resp);
        long long took = mono_ms() - t0;
        ck_assert_msg(status == 503, "status %d: %s", status, strna(resp));
        ck_assert_msg(strcasestr(resp, "\r\nRetry-After: "), "%s", resp);
        ck_assert_int_lt(took, 500);
        printf("# REGISTER while Redis is down: 503 in %lld ms\n", took);
        /* A call to a user while the store is down: 503 as well. */
        status = tl_sip_register(proxy.port, "alice", "sip:alice@192.0.2.10:5060",
                                 "redis-test-call", 1001, 600, 3000, NULL);
        ck_assert_int_eq(status, 503);

        /* Redis back (empty: no persistence in the test): registrations work again. */
        tl_redis_start_on(&redis, redis.port, NULL);
        register_until_ok(proxy.port, "alice", "sip:alice@192.0.2.10:5060", 5000);
        _cleanup_free_ char *n = tl_redis_cmd(&redis, "EXISTS fs:alice@localhost");
        ck_assert_str_eq(n, "1");
        tl_proxy_stop(&proxy);
        tl_proxy_done(&proxy);
        tl_redis_stop(&redis);
}
END_TEST

START_TEST(test_proxy_redis_auth) {
        /* requirepass, then an ACL user limited to the registrar's keys and channels. */
        struct tl_redis redis = {0};
        struct tl_proxy proxy = {0};
        const char *args[] = {"--requirepass", "s3cret-pw", NULL};
        tl_redis_start_on(&redis, 0, args);
        _cleanup_free_ char *conf = redis_conf(redis.port, "redis-auth-password=s3cret-pw\n");
        tl_proxy_start(&proxy, conf);
        register_until_ok(proxy.port, "bob", "sip:bob@192.0.2.11", 5000);
        _cleanup_free_ char *log = tl_log(&proxy.proc);
        ck_assert_ptr_null(strstr(log, "s3cret-pw"));
        tl_proxy_stop(&proxy);
        tl_redis_stop(&redis);

        tl_redis_start_on(&redis, redis.port, NULL);
        _cleanup_free_ char *acl = tl_redis_cmd(
                &redis, "ACL SETUSER registrar on >acl-pw ~fs:* &fs:* &__sipfleet__:* +@all");
        ck_assert_str_eq(acl, "OK");
        free(conf);
        conf = redis_conf(redis.port, "redis-auth-user=registrar\nredis-auth-password=acl-pw\n");
        tl_proxy_start(&proxy, conf);
        register_until_ok(proxy.port, "carol", "sip:carol@192.0.2.12", 5000);
        _cleanup_free_ char *exists = tl_redis_cmd(&redis, "EXISTS fs:carol@localhost");
        ck_assert_str_eq(exists, "1");
        tl_proxy_stop(&proxy);
        tl_proxy_done(&proxy);
        tl_redis_stop(&redis);
}
END_TEST

int main(void) {
        Suite *s = suite_create("proxy-redis");
        TCase *tc = tcase_create("store");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_proxy_redis_register_and_outage);
        tcase_add_test(tc, test_proxy_redis_auth);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
