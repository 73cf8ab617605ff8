/* SPDX-License-Identifier: MIT */
/* sipfleet-pushd end to end: a real redis-server, the built daemon, and HTTP/2-over-TLS test
 * servers in Python's h2 (test/servers/h2-push-server.py) that play APNs, FCM with its OAuth2
 * token endpoint, and a generic push service, recording every request. The tests check the
 * method, path, every header and the JSON payload of what pushd sends, verify the JWT
 * signatures with the public keys, that pushes share one HTTP/2 connection, the dead-token
 * messages, retries and the dead-letter stream, the HTTP intake, and that a pushd killed with
 * jobs in flight sends them again after a restart without sending acknowledged ones twice. */
#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "http2.h"
#include "macro.h"
#include "testlib-h2.h"
#include "testlib-jwt.h"
#include "testlib.h"

#define STREAM      "sipfleet:push:jobs"
#define DEAD_LETTER "sipfleet:push:dead-letter"
#define CHANNEL     "sipfleet:push:dead-tokens"
#define BUNDLE      "org.example.phone"
#define KEY_ID      "KEYID12345"
#define TEAM_ID     "TEAMID6789"
#define BEARER      "s3cret-intake-token"

#define TOK_DEAD  "dead00000000000000000000000000aa"
#define TOK_BAD   "bad000000000000000000000000000bb"
#define TOK_FLAKY "f1a0000000000000000000000000000c"
#define TOK_TOPIC "70b1c00000000000000000000000000d"
#define TOK_DOWN  "d0e0000000000000000000000000000e"

static void sleep_ms(int ms) {
        nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
}

/* ---- the Python provider servers: test/lib/testlib-h2.h ---- */

/* The records whose body or path contains s. */
static size_t count_matching(json_t *recs, const char *s) {
        size_t i, n = 0;
        json_t *r;
        json_array_foreach(recs, i, r) {
                const char *path = json_string_value(json_object_get(r, "path"));
                const char *body = json_string_value(json_object_get(r, "body"));
                if ((path && strstr(path, s)) || (body && strstr(body, s)))
                        n++;
        }
        return n;
}

/* ---- Redis helpers ---- */

static char *xadd(struct tl_redis *r, const char *job) {
        char *id = tl_redis_cmd(r, "XADD %s * job %s", STREAM, job);
        ck_assert_msg(id && strchr(id, '-'), "XADD failed: %s", strna(id));
        return id;
}

static long long redis_int(struct tl_redis *r, const char *cmd) {
        _cleanup_free_ char *v = tl_redis_cmd(r, cmd);
        ck_assert_ptr_nonnull(v);
        return atoll(v);
}

/* XPENDING summary: the first element is the count. */
static long long pending(struct tl_redis *r) {
        _cleanup_free_ char *v = tl_redis_cmd(r, "XPENDING %s pushd", STREAM);
        ck_assert_ptr_nonnull(v);
        return atoll(v);
}

static void wait_pending(struct tl_redis *r, long long n, int timeout_ms) {
        for (int waited = 0; pending(r) != n; waited += 50) {
                ck_assert_msg(waited < timeout_ms, "XPENDING is %lld, %lld expected", pending(r),
                              n);
                sleep_ms(50);
        }
}

static redisContext *subscribe(struct tl_redis *r) {
        redisContext *c = redisConnect("127.0.0.1", r->port);
        ck_assert_msg(c && !c->err, "cannot connect to redis");
        redisReply *rep = redisCommand(c, "SUBSCRIBE %s", CHANNEL);
        ck_assert_ptr_nonnull(rep);
        freeReplyObject(rep);
        redisSetTimeout(c, (struct timeval){15, 0});
        return c;
}

static json_t *next_message(redisContext *c) {
        redisReply *rep = NULL;
        ck_assert_msg(redisGetReply(c, (void **)&rep) == REDIS_OK && rep,
                      "no message on %s in time", CHANNEL);
        ck_assert_int_eq(rep->type, REDIS_REPLY_ARRAY);
        ck_assert_int_eq(rep->elements, 3);
        ck_assert_str_eq(rep->element[1]->str, CHANNEL);
        json_t *m = json_loads(rep->element[2]->str, 0, NULL);
        ck_assert_msg(m, "message is not JSON: %s", rep->element[2]->str);
        freeReplyObject(rep);
        return m;
}

/* ---- pushd ---- */

static long long counter(struct tl_daemon *d, const char *name) {
        _cleanup_free_ char *path = NULL;
        ck_assert_int_ge(asprintf(&path, "pushd/%s", name), 0);
        return tl_counter(d->sock, path);
}

static void wait_counter(struct tl_daemon *d, const char *name, long long n, int timeout_ms) {
        for (int waited = 0; counter(d, name) < n; waited += 50) {
                ck_assert_msg(waited < timeout_ms, "%s is %lld, %lld expected", name,
                              counter(d, name), n);
                sleep_ms(50);
        }
}

static char *apns_job(const char *type, const char *token, const char *call_id, const char *extra) {
        char *j;
        ck_assert_int_ge(asprintf(&j,
                                  "{\"provider\":\"apns\",\"token\":\"%s\",\"app-id\":\"" BUNDLE
                                  "\",\"type\":\"%s\",\"from-uri\":\"sip:alice@example.org\","
                                  "\"from-name\":\"Alice\",\"call-id\":\"%s\"%s}",
                                  token, type, call_id, extra ? extra : ""),
                         0);
        return j;
}

static char *hex_token(unsigned i) {
        char *t;
        ck_assert_int_ge(asprintf(&t, "%032x", i + 0x1000), 0);
        return t;
}

static void check_apns_jwt(json_t *rec, const char *key_path) {
        const char *auth = tl_h2_header(rec, "authorization");
        ck_assert_msg(auth && strncmp(auth, "bearer ", 7) == 0, "authorization: %s", strna(auth));
        json_t *h, *c;
        ck_assert_msg(tl_jwt_verify(auth + 7, key_path, &h, &c), "ES256 signature invalid");
        ck_assert_str_eq(json_string_value(json_object_get(h, "alg")), "ES256");
        ck_assert_str_eq(json_string_value(json_object_get(h, "kid")), KEY_ID);
        ck_assert_str_eq(json_string_value(json_object_get(c, "iss")), TEAM_ID);
        long long iat = json_integer_value(json_object_get(c, "iat"));
        ck_assert_int_le(llabs(iat - (long long)time(NULL)), 60);
        json_decref(h);
        json_decref(c);
}

static char *apns_conf(struct tl_redis *r, struct tl_h2_server *apns, const char *key, const char *more) {
        char *conf;
        ck_assert_int_ge(asprintf(&conf,
                                  "log-level=info\n"
                                  "[pushd]\n"
                                  "ca-file=%s/cafile.pem\n"
                                  "retry-initial-delay=100ms\n"
                                  "retry-max-delay=400ms\n"
                                  "max-attempts=3\n"
                                  "request-timeout=5s\n"
                                  "[redis]\n"
                                  "server=127.0.0.1:%d\n"
                                  "consumer=pushd-a\n"
                                  "block-time=500ms\n"
                                  "[apns]\n"
                                  "production-url=https://127.0.0.1:%d\n"
                                  "sandbox-url=https://127.0.0.1:%d/sandbox\n"
                                  "key-file=%s\n"
                                  "key-id=" KEY_ID "\n"
                                  "team-id=" TEAM_ID "\n"
                                  "%s",
                                  tl_h2_tls_dir(), r->port, apns->port, apns->port, key,
                                  more ? more : ""),
                         0);
        return conf;
}

START_TEST(test_pushd_apns_token_auth) {
        struct tl_redis r;
        tl_redis_start(&r, NULL);
        struct tl_h2_server apns;
        tl_h2_server_start(&apns, "apns", "apns", NULL, NULL);
        _cleanup_free_ char *key = tl_write_ec_key("AuthKey.p8");
        _cleanup_free_ char *conf = apns_conf(&r, &apns, key, NULL);
        struct tl_daemon d = {0};
        tl_daemon_start(&d, "pushd", conf);

        uint64_t before = (uint64_t)time(NULL);
        _cleanup_free_ char *tc = hex_token(1), *tm = hex_token(2), *tb = hex_token(3);
        _cleanup_free_ char *jc = apns_job("call", tc, "call-1",
                                           ",\"ttl\":30,\"collapse-id\":\"call-1\""),
                            *jm = apns_job("message", tm, "msg-1",
                                           ",\"text\":\"Hello\",\"msg-id\":\"m1\""),
                            *jb = apns_job("background", tb, "bg-1", ",\"sandbox\":true");
        free(xadd(&r, jc));
        free(xadd(&r, jm));
        free(xadd(&r, jb));
        json_t *recs = tl_h2_server_wait(&apns, 3, 10000);
        size_t i;
        json_t *rec;
        json_array_foreach(recs, i, rec) {
                ck_assert_str_eq(json_string_value(json_object_get(rec, "method")), "POST");
                check_apns_jwt(rec, key);
                ck_assert_str_eq(tl_h2_header(rec, "content-type"), "application/json");
                const char *path = json_string_value(json_object_get(rec, "path"));
                json_t *body = tl_h2_body(rec);
                json_t *aps = json_object_get(body, "aps");
                ck_assert_str_eq(json_string_value(json_object_get(body, "from-uri")),
                                 "sip:alice@example.org");
                if (strstr(path, tc)) {
                        ck_assert_str_eq(path, "/3/device/00000000000000000000000000001001");
                        ck_assert_str_eq(tl_h2_header(rec, "apns-topic"), BUNDLE ".voip");
                        ck_assert_str_eq(tl_h2_header(rec, "apns-push-type"), "voip");
                        ck_assert_str_eq(tl_h2_header(rec, "apns-priority"), "10");
                        ck_assert_str_eq(tl_h2_header(rec, "apns-collapse-id"), "call-1");
                        long long exp = atoll(tl_h2_header(rec, "apns-expiration"));
                        ck_assert_int_ge(exp, (long long)before + 30);
                        ck_assert_int_le(exp, (long long)time(NULL) + 31);
                        ck_assert_str_eq(json_string_value(json_object_get(body, "call-id")),
                                         "call-1");
                        ck_assert_str_eq(json_string_value(json_object_get(body, "type")), "call");
                        ck_assert_str_eq(json_string_value(json_object_get(body, "from-name")),
                                         "Alice");
                        ck_assert_int_eq(json_object_size(aps), 0);
                } else if (strstr(path, tm)) {
                        ck_assert_str_eq(path, "/3/device/00000000000000000000000000001002");
                        ck_assert_str_eq(tl_h2_header(rec, "apns-topic"), BUNDLE);
                        ck_assert_str_eq(tl_h2_header(rec, "apns-push-type"), "alert");
                        ck_assert_str_eq(tl_h2_header(rec, "apns-priority"), "10");
                        ck_assert_str_eq(tl_h2_header(rec, "apns-expiration"), "0");
                        ck_assert_ptr_null(tl_h2_header(rec, "apns-collapse-id"));
                        ck_assert_int_eq(
                                json_integer_value(json_object_get(aps, "mutable-content")), 1);
                        json_t *alert = json_object_get(aps, "alert");
                        ck_assert_str_eq(json_string_value(json_object_get(alert, "body")),
                                         "Hello");
                        ck_assert_str_eq(json_string_value(json_object_get(alert, "title")),
                                         "Alice");
                        ck_assert_str_eq(json_string_value(json_object_get(body, "msg-id")), "m1");
                } else {
                        /* sandbox: the sandbox endpoint (a path prefix on the test server) */
                        ck_assert_str_eq(path,
                                         "/sandbox/3/device/00000000000000000000000000001003");
                        ck_assert_str_eq(tl_h2_header(rec, "apns-topic"), BUNDLE);
                        ck_assert_str_eq(tl_h2_header(rec, "apns-push-type"), "background");
                        ck_assert_str_eq(tl_h2_header(rec, "apns-priority"), "5");
                        ck_assert_int_eq(
                                json_integer_value(json_object_get(aps, "content-available")), 1);
                }
                json_decref(body);
        }
        json_decref(recs);
        wait_pending(&r, 0, 5000);
        wait_counter(&d, "count-pn-sent", 3, 5000);
        ck_assert_int_eq(counter(&d, "count-pn-sent-apns"), 3);
        /* Acknowledged and deleted: nothing left in the stream. */
        ck_assert_int_eq(redis_int(&r, "XLEN " STREAM), 0);

        /* 30 pushes at once: one HTTP/2 connection carries all of them. */
        for (unsigned k = 0; k < 30; k++) {
                _cleanup_free_ char *t = hex_token(100 + k), *id = NULL, *j = NULL;
                ck_assert_int_ge(asprintf(&id, "burst-%u", k), 0);
                j = apns_job("call", t, id, NULL);
                free(xadd(&r, j));
        }
        recs = tl_h2_server_wait(&apns, 33, 10000);
        /* (The server also counts the readiness probe's TCP connection.) */
        json_int_t conn = json_integer_value(json_object_get(json_array_get(recs, 0), "conn"));
        json_array_foreach(recs, i, rec)
                ck_assert_int_eq(json_integer_value(json_object_get(rec, "conn")), conn);
        json_decref(recs);
        wait_counter(&d, "count-pn-sent", 33, 5000);
        ck_assert_int_eq(counter(&d, "count-connections-opened"), 1);
        /* The same provider token is reused while it is young. */
        recs = tl_h2_server_records(&apns);
        ck_assert_str_eq(tl_h2_header(json_array_get(recs, 0), "authorization"),
                         tl_h2_header(json_array_get(recs, 32), "authorization"));
        json_decref(recs);

        tl_daemon_done(&d);
        tl_h2_server_stop(&apns);
        tl_redis_stop(&r);
}
END_TEST

START_TEST(test_pushd_apns_burst_waits_for_slots) {
        /* 250 pushes at once, the server answering each after 0.5 s: all go over one
         * connection; at most HTTP2_MAX_ACTIVE (100) are handed to libcurl, the others wait
         * their turn in pushd's HTTP/2 client (shown by its gauge) instead of piling up in
         * libcurl, whose handle removal walks its lists of transfers. */
        struct tl_redis r;
        tl_redis_start(&r, NULL);
        struct tl_h2_server apns;
        tl_h2_server_start(&apns, "apns", "apns", NULL,
                           "{\"default\":{\"status\":200,\"delay\":0.5}}");
        _cleanup_free_ char *key = tl_write_ec_key("AuthKey.p8");
        _cleanup_free_ char *conf = apns_conf(&r, &apns, key, NULL);
        struct tl_daemon d = {0};
        tl_daemon_start(&d, "pushd", conf);
        enum { N = 250 };
        for (unsigned k = 0; k < N; k++) {
                _cleanup_free_ char *t = hex_token(2000 + k), *id = NULL, *j = NULL;
                ck_assert_int_ge(asprintf(&id, "slot-%u", k), 0);
                j = apns_job("call", t, id, NULL);
                free(xadd(&r, j));
        }
        /* While the server holds its answers, pushd keeps the pushes beyond its 100 slots. */
        long long waiting = 0;
        for (int i = 0; i < 200 && waiting < N - HTTP2_MAX_ACTIVE - 50; i++) {
                long long w = counter(&d, "pushes-waiting-for-a-stream");
                if (w > waiting)
                        waiting = w;
                sleep_ms(10);
        }
        ck_assert_int_ge(waiting, N - HTTP2_MAX_ACTIVE - 50);
        json_t *recs = tl_h2_server_wait(&apns, N, 30000);
        ck_assert_int_eq(json_array_size(recs), N);
        json_int_t conn = json_integer_value(json_object_get(json_array_get(recs, 0), "conn"));
        for (size_t i = 0; i < N; i++)
                ck_assert_int_eq(
                        json_integer_value(json_object_get(json_array_get(recs, i), "conn")),
                        conn);
        json_decref(recs);
        wait_counter(&d, "count-pn-sent", N, 10000);
        ck_assert_int_eq(counter(&d, "count-connections-opened"), 1);
        ck_assert_int_eq(counter(&d, "pushes-waiting-for-a-stream"), 0);
        wait_pending(&r, 0, 5000);
        tl_daemon_done(&d);
        tl_h2_server_stop(&apns);
        tl_redis_stop(&r);
}
END_TEST

START_TEST(test_pushd_apns_errors) {
        struct tl_redis r;
        tl_redis_start(&r, NULL);
        struct tl_h2_server apns;
        tl_h2_server_start(&apns, "apns", "apns", NULL,
                     "{\"tokens\":{"
                     "\"" TOK_DEAD "\":[{\"status\":410,\"reason\":\"Unregistered\"}],"
                     "\"" TOK_BAD "\":[{\"status\":400,\"reason\":\"BadDeviceToken\"}],"
                     "\"" TOK_FLAKY "\":[{\"status\":503,\"reason\":\"ServiceUnavailable\"},"
                     "{\"status\":200}],"
                     "\"" TOK_TOPIC "\":[{\"status\":400,\"reason\":\"DeviceTokenNotForTopic\"}],"
                     "\"" TOK_DOWN "\":[{\"status\":500,\"reason\":\"InternalServerError\"}]}}");
        _cleanup_free_ char *key = tl_write_ec_key("AuthKey.p8");
        _cleanup_free_ char *conf = apns_conf(&r, &apns, key, NULL);
        struct tl_daemon d = {0};
        tl_daemon_start(&d, "pushd", conf);
        redisContext *sub = subscribe(&r);

        _cleanup_free_ char *j1 = apns_job("call", TOK_DEAD, "c-dead", ",\"id\":\"job-dead\""),
                            *j2 = apns_job("message", TOK_BAD, "c-bad", NULL),
                            *j3 = apns_job("call", TOK_FLAKY, "c-flaky", NULL),
                            *j4 = apns_job("call", TOK_TOPIC, "c-topic", NULL),
                            *j5 = apns_job("call", TOK_DOWN, "c-down", NULL);
        _cleanup_free_ char *id1 = xadd(&r, j1);
        free(xadd(&r, j2));
        free(xadd(&r, j3));
        _cleanup_free_ char *id4 = xadd(&r, j4);
        free(xadd(&r, j5));

        /* Two dead tokens published, as documented. */
        bool seen_dead = false, seen_bad = false;
        for (int k = 0; k < 2; k++) {
                json_t *m = next_message(sub);
                const char *tok = json_string_value(json_object_get(m, "token"));
                ck_assert_str_eq(json_string_value(json_object_get(m, "provider")), "apns");
                ck_assert_str_eq(json_string_value(json_object_get(m, "app-id")), BUNDLE);
                ck_assert(json_is_false(json_object_get(m, "sandbox")));
                ck_assert(json_is_integer(json_object_get(m, "time")));
                if (streq(tok, TOK_DEAD)) {
                        seen_dead = true;
                        ck_assert_str_eq(json_string_value(json_object_get(m, "reason")),
                                         "Unregistered");
                        ck_assert_int_eq(json_integer_value(json_object_get(m, "status")), 410);
                        ck_assert_str_eq(json_string_value(json_object_get(m, "job-id")),
                                         "job-dead");
                        ck_assert_str_eq(json_string_value(json_object_get(m, "stream-id")), id1);
                } else {
                        ck_assert_str_eq(tok, TOK_BAD);
                        seen_bad = true;
                        ck_assert_str_eq(json_string_value(json_object_get(m, "reason")),
                                         "BadDeviceToken");
                        ck_assert_int_eq(json_integer_value(json_object_get(m, "status")), 400);
                }
                json_decref(m);
        }
        ck_assert(seen_dead && seen_bad);
        redisFree(sub);

        /* 503 then 200: tried twice, sent. 500 for ever: max-attempts (3) tries, then the
         * dead-letter stream, like the topic error that is not retried. */
        wait_counter(&d, "count-dead-lettered", 2, 10000);
        wait_pending(&r, 0, 5000);
        json_t *recs = tl_h2_server_records(&apns);
        ck_assert_int_eq(count_matching(recs, TOK_FLAKY), 2);
        ck_assert_int_eq(count_matching(recs, TOK_DOWN), 3);
        ck_assert_int_eq(count_matching(recs, TOK_DEAD), 1);
        ck_assert_int_eq(count_matching(recs, TOK_TOPIC), 1);
        json_decref(recs);
        ck_assert_int_eq(counter(&d, "count-pn-sent"), 1);
        ck_assert_int_eq(counter(&d, "count-pn-dead-token"), 2);
        ck_assert_int_eq(counter(&d, "count-pn-retried"), 3);
        ck_assert_int_eq(counter(&d, "count-pn-failed"), 2);
        ck_assert_int_eq(counter(&d, "count-jobs-done"), 5);

        _cleanup_free_ char *dl = tl_redis_cmd(&r, "XRANGE " DEAD_LETTER " - +");
        ck_assert_ptr_nonnull(dl);
        ck_assert_msg(strstr(dl, "DeviceTokenNotForTopic") && strstr(dl, id4) &&
                              strstr(dl, "InternalServerError") && strstr(dl, TOK_DOWN) &&
                              strstr(dl, "c-down"),
                      "dead letters: %s", dl);
        ck_assert_int_eq(redis_int(&r, "XLEN " DEAD_LETTER), 2);

        tl_daemon_done(&d);
        tl_h2_server_stop(&apns);
        tl_redis_stop(&r);
}
END_TEST

START_TEST(test_pushd_apns_certificate_auth) {
        struct tl_redis r;
        tl_redis_start(&r, NULL);
        /* The client certificate comes from a CA of its own, which the server requires. */
        _cleanup_free_ char *client = tl_tls_dir("client-tls", NULL), *client_ca = NULL;
        ck_assert_int_ge(asprintf(&client_ca, "%s/cafile.pem", client), 0);
        struct tl_h2_server apns;
        tl_h2_server_start(&apns, "apns", "apns", client_ca, NULL);
        _cleanup_free_ char *conf = NULL;
        ck_assert_int_ge(asprintf(&conf,
                                  "[pushd]\n"
                                  "ca-file=%s/cafile.pem\n"
                                  "[redis]\n"
                                  "server=127.0.0.1:%d\n"
                                  "[apns]\n"
                                  "production-url=https://127.0.0.1:%d\n"
                                  "certificate-file=%s/agent.crt\n"
                                  "certificate-key-file=%s/agent.key\n",
                                  tl_h2_tls_dir(), r.port, apns.port, client, client),
                         0);
        struct tl_daemon d = {0};
        tl_daemon_start(&d, "pushd", conf);
        _cleanup_free_ char *t = hex_token(7), *j = apns_job("call", t, "cert-1", NULL);
        free(xadd(&r, j));
        json_t *recs = tl_h2_server_wait(&apns, 1, 10000);
        json_t *rec = json_array_get(recs, 0);
        ck_assert_str_eq(json_string_value(json_object_get(rec, "client-cert")), "127.0.0.1");
        ck_assert_ptr_null(tl_h2_header(rec, "authorization"));
        ck_assert_str_eq(tl_h2_header(rec, "apns-topic"), BUNDLE ".voip");
        json_decref(recs);
        wait_counter(&d, "count-pn-sent", 1, 5000);
        tl_daemon_done(&d);
        tl_h2_server_stop(&apns);
        tl_redis_stop(&r);
}
END_TEST

static json_t *form_assertion(const char *body, const char *key_path) {
        const char *prefix = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
                             "&assertion=";
        ck_assert_msg(strncmp(body, prefix, strlen(prefix)) == 0, "token request: %s", body);
        const char *jwt = body + strlen(prefix); /* base64url needs no escaping */
        json_t *h, *c;
        ck_assert_msg(tl_jwt_verify(jwt, key_path, &h, &c), "RS256 signature invalid");
        ck_assert_str_eq(json_string_value(json_object_get(h, "alg")), "RS256");
        ck_assert_str_eq(json_string_value(json_object_get(h, "kid")), "kid-0123");
        json_decref(h);
        return c;
}

START_TEST(test_pushd_fcm) {
        struct tl_redis r;
        tl_redis_start(&r, NULL);
        struct tl_h2_server fcm;
        tl_h2_server_start(&fcm, "fcm", "fcm", NULL,
                     "{\"tokens\":{\"fcm-dead-token\":[{\"status\":404,\"fcm\":\"UNREGISTERED\"}],"
                     "\"fcm-invalid-token\":[{\"status\":400,\"fcm\":\"INVALID_ARGUMENT\"}],"
                     "\"fcm-flaky-token\":[{\"status\":503,\"fcm\":\"UNAVAILABLE\"},"
                     "{\"status\":200}],"
                     "\"fcm-quota-token\":[{\"status\":429,\"fcm\":\"QUOTA_EXCEEDED\","
                     "\"headers\":{\"retry-after\":\"1\"}},{\"status\":200}]}}");
        _cleanup_free_ char *key = NULL,
                            *sa = tl_h2_write_service_account("sa.json", "test-project", fcm.port, &key);
        _cleanup_free_ char *conf = NULL;
        ck_assert_int_ge(asprintf(&conf,
                                  "[pushd]\n"
                                  "ca-file=%s/cafile.pem\n"
                                  "retry-initial-delay=100ms\n"
                                  "[redis]\n"
                                  "server=127.0.0.1:%d\n"
                                  "[fcm]\n"
                                  "service-account-files=%s\n"
                                  "project-aliases=123456789012=test-project\n"
                                  "url=https://127.0.0.1:%d\n",
                                  tl_h2_tls_dir(), r.port, sa, fcm.port),
                         0);
        struct tl_daemon d = {0};
        tl_daemon_start(&d, "pushd", conf);
        redisContext *sub = subscribe(&r);

        free(xadd(&r, "{\"provider\":\"fcm\",\"token\":\"fcm-token-1\",\"app-id\":\"test-project\","
                      "\"type\":\"call\",\"from-uri\":\"sip:alice@example.org\",\"call-id\":"
                      "\"fc-1\",\"ttl\":60}"));
        /* The first push waits for the access token; the token request is recorded first. */
        json_t *recs = tl_h2_server_wait(&fcm, 2, 10000);
        json_t *tokreq = json_array_get(recs, 0);
        ck_assert_str_eq(json_string_value(json_object_get(tokreq, "path")), "/token");
        ck_assert_str_eq(json_string_value(json_object_get(tokreq, "method")), "POST");
        ck_assert_str_eq(tl_h2_header(tokreq, "content-type"), "application/x-www-form-urlencoded");
        _cleanup_free_ char *aud = NULL;
        ck_assert_int_ge(asprintf(&aud, "https://127.0.0.1:%d/token", fcm.port), 0);
        json_t *claims = form_assertion(json_string_value(json_object_get(tokreq, "body")), key);
        ck_assert_str_eq(json_string_value(json_object_get(claims, "iss")),
                         "pushd@test-project.iam.gserviceaccount.com");
        ck_assert_str_eq(json_string_value(json_object_get(claims, "scope")),
                         "https://www.googleapis.com/auth/firebase.messaging");
        ck_assert_str_eq(json_string_value(json_object_get(claims, "aud")), aud);
        long long iat = json_integer_value(json_object_get(claims, "iat"));
        ck_assert_int_le(llabs(iat - (long long)time(NULL)), 60);
        ck_assert_int_eq(json_integer_value(json_object_get(claims, "exp")) - iat, 3600);
        json_decref(claims);

        json_t *msg = json_array_get(recs, 1);
        ck_assert_str_eq(json_string_value(json_object_get(msg, "method")), "POST");
        ck_assert_str_eq(json_string_value(json_object_get(msg, "path")),
                         "/v1/projects/test-project/messages:send");
        ck_assert_str_eq(tl_h2_header(msg, "authorization"), "Bearer access-1");
        ck_assert_str_eq(tl_h2_header(msg, "content-type"), "application/json");
        json_t *body = tl_h2_body(msg), *m = json_object_get(body, "message");
        ck_assert_str_eq(json_string_value(json_object_get(m, "token")), "fcm-token-1");
        json_t *android = json_object_get(m, "android");
        ck_assert_str_eq(json_string_value(json_object_get(android, "priority")), "high");
        ck_assert_str_eq(json_string_value(json_object_get(android, "ttl")), "60s");
        json_t *data = json_object_get(m, "data");
        ck_assert_str_eq(json_string_value(json_object_get(data, "call-id")), "fc-1");
        ck_assert_str_eq(json_string_value(json_object_get(data, "type")), "call");
        ck_assert_str_eq(json_string_value(json_object_get(data, "from-uri")),
                         "sip:alice@example.org");
        ck_assert_ptr_null(json_object_get(m, "notification"));
        json_decref(body);
        json_decref(recs);

        /* Errors: UNREGISTERED and INVALID_ARGUMENT are dead tokens, 503 is retried; the
         * access token is reused (one token request in all). */
        free(xadd(&r, "{\"provider\":\"fcm\",\"token\":\"fcm-dead-token\",\"app-id\":"
                      "\"test-project\",\"type\":\"message\"}"));
        free(xadd(&r, "{\"provider\":\"fcm\",\"token\":\"fcm-invalid-token\",\"app-id\":"
                      "\"test-project\",\"type\":\"message\"}"));
        /* The project number works as well (alias). */
        free(xadd(&r, "{\"provider\":\"fcm\",\"token\":\"fcm-flaky-token\",\"app-id\":"
                      "\"123456789012\",\"type\":\"background\"}"));
        /* 429 with Retry-After: 1 waits a second, not retry-initial-delay (100 ms). */
        free(xadd(&r, "{\"provider\":\"fcm\",\"token\":\"fcm-quota-token\",\"app-id\":"
                      "\"test-project\",\"type\":\"message\"}"));
        /* A project without a service account: given up at once. */
        free(xadd(&r, "{\"provider\":\"fcm\",\"token\":\"t\",\"app-id\":\"other-project\","
                      "\"type\":\"call\"}"));
        for (int k = 0; k < 2; k++) {
                json_t *dm = next_message(sub);
                const char *tok = json_string_value(json_object_get(dm, "token"));
                const char *reason = json_string_value(json_object_get(dm, "reason"));
                ck_assert_str_eq(json_string_value(json_object_get(dm, "provider")), "fcm");
                ck_assert_str_eq(json_string_value(json_object_get(dm, "app-id")), "test-project");
                if (streq(tok, "fcm-dead-token"))
                        ck_assert_str_eq(reason, "UNREGISTERED");
                else {
                        ck_assert_str_eq(tok, "fcm-invalid-token");
                        ck_assert_str_eq(reason, "INVALID_ARGUMENT");
                }
                json_decref(dm);
        }
        redisFree(sub);
        wait_counter(&d, "count-pn-sent", 3, 10000);
        wait_pending(&r, 0, 5000);
        recs = tl_h2_server_records(&fcm);
        ck_assert_int_eq(count_matching(recs, "fcm-flaky-token"), 2);
        ck_assert_int_eq(count_matching(recs, "fcm-quota-token"), 2);
        double quota_times[2];
        size_t nq = 0;
        json_t *qr;
        size_t qi;
        json_array_foreach(recs, qi, qr) {
                if (strstr(json_string_value(json_object_get(qr, "body")), "fcm-quota-token"))
                        quota_times[nq++] = json_real_value(json_object_get(qr, "time"));
        }
        ck_assert_msg(quota_times[1] - quota_times[0] >= 0.95, "retried after %.3f s",
                      quota_times[1] - quota_times[0]);
        ck_assert_int_eq(count_matching(recs, "/token"), 1);
        json_t *rec;
        size_t i;
        json_int_t conn = json_integer_value(json_object_get(json_array_get(recs, 0), "conn"));
        json_array_foreach(recs, i, rec) {
                if (i > 0)
                        ck_assert_str_eq(tl_h2_header(rec, "authorization"), "Bearer access-1");
                /* The token endpoint and the messages share one connection here (one host). */
                ck_assert_int_eq(json_integer_value(json_object_get(rec, "conn")), conn);
        }
        json_decref(recs);
        ck_assert_int_eq(counter(&d, "count-pn-sent-fcm"), 3);
        ck_assert_int_eq(counter(&d, "count-pn-dead-token"), 2);
        ck_assert_int_eq(counter(&d, "count-pn-failed"), 1);
        _cleanup_free_ char *dl = tl_redis_cmd(&r, "XRANGE " DEAD_LETTER " - +");
        ck_assert_msg(dl && strstr(dl, "no FCM service account for project 'other-project'"),
                      "dead letters: %s", strna(dl));

        tl_daemon_done(&d);
        tl_h2_server_stop(&fcm);
        tl_redis_stop(&r);
}
END_TEST

START_TEST(test_pushd_fcm_token_refresh) {
        /* Access tokens living 2 s with 1 s anticipation: a new one is fetched after 1 s. */
        struct tl_redis r;
        tl_redis_start(&r, NULL);
        struct tl_h2_server fcm;
        tl_h2_server_start(&fcm, "fcm", "fcm", NULL, "{\"token-lifetime\":2}");
        _cleanup_free_ char *key = NULL,
                            *sa = tl_h2_write_service_account("sa.json", "p1", fcm.port, &key);
        _cleanup_free_ char *conf = NULL;
        ck_assert_int_ge(asprintf(&conf,
                                  "[pushd]\nca-file=%s/cafile.pem\n[redis]\nserver=127.0.0.1:%d\n"
                                  "[fcm]\nservice-account-files=%s\nurl=https://127.0.0.1:%d\n"
                                  "token-anticipation=1s\n",
                                  tl_h2_tls_dir(), r.port, sa, fcm.port),
                         0);
        struct tl_daemon d = {0};
        tl_daemon_start(&d, "pushd", conf);
        const char *job =
                "{\"provider\":\"fcm\",\"token\":\"tk\",\"app-id\":\"p1\",\"type\":\"call\"}";
        free(xadd(&r, job));
        wait_counter(&d, "count-pn-sent", 1, 10000);
        free(xadd(&r, job)); /* within the first second: the same token */
        wait_counter(&d, "count-pn-sent", 2, 10000);
        sleep_ms(1300);
        free(xadd(&r, job));
        wait_counter(&d, "count-pn-sent", 3, 10000);
        json_t *recs = tl_h2_server_records(&fcm);
        ck_assert_int_eq(count_matching(recs, "/token"), 2);
        ck_assert_str_eq(
                tl_h2_header(json_array_get(recs, json_array_size(recs) - 1), "authorization"),
                "Bearer access-2");
        json_decref(recs);
        tl_daemon_done(&d);
        tl_h2_server_stop(&fcm);
        tl_redis_stop(&r);
}
END_TEST

START_TEST(test_pushd_generic) {
        struct tl_redis r;
        tl_redis_start(&r, NULL);
        struct tl_h2_server gen;
        tl_h2_server_start(&gen, "generic", "generic", NULL,
                     "{\"tokens\":{\"gone-token\":[{\"status\":410}]}}");
        for (int post = 0; post < 2; post++) {
                _cleanup_free_ char *conf = NULL;
                ck_assert_int_ge(asprintf(&conf,
                                          "[pushd]\nca-file=%s/cafile.pem\n[redis]\n"
                                          "server=127.0.0.1:%d\n[generic]\nmethod=%s\n"
                                          "url=https://127.0.0.1:%d/push?token=$token&type=$type&"
                                          "from=$from-uri&call=$call-id&app=$app-id\n",
                                          tl_h2_tls_dir(), r.port, post ? "POST" : "GET", gen.port),
                                 0);
                struct tl_daemon d = {0};
                tl_daemon_start(&d, "pushd", conf);
                free(xadd(&r, "{\"provider\":\"generic\",\"token\":\"gen-1\",\"app-id\":\"a.b\","
                              "\"type\":\"call\",\"from-uri\":\"sip:al ice@example.org\","
                              "\"call-id\":\"g1\"}"));
                json_t *recs = tl_h2_server_wait(&gen, 1 + 2 * (size_t)post, 10000);
                json_t *rec = json_array_get(recs, json_array_size(recs) - 1);
                ck_assert_str_eq(json_string_value(json_object_get(rec, "method")),
                                 post ? "POST" : "GET");
                ck_assert_str_eq(json_string_value(json_object_get(rec, "path")),
                                 "/push?token=gen-1&type=call&from=sip%3Aal%20ice%40example.org&"
                                 "call=g1&app=a.b");
                if (post) {
                        json_t *b = tl_h2_body(rec);
                        ck_assert_str_eq(json_string_value(json_object_get(b, "call-id")), "g1");
                        ck_assert_str_eq(
                                json_string_value(json_array_get(json_object_get(b, "tokens"), 0)),
                                "gen-1");
                        ck_assert_str_eq(tl_h2_header(rec, "content-type"), "application/json");
                        json_decref(b);
                }
                json_decref(recs);
                wait_counter(&d, "count-pn-sent-generic", 1, 5000);
                if (!post) {
                        free(xadd(&r, "{\"provider\":\"generic\",\"token\":\"gone-token\","
                                      "\"type\":\"message\"}"));
                        wait_counter(&d, "count-pn-dead-token", 1, 5000);
                }
                wait_pending(&r, 0, 5000);
                tl_daemon_done(&d);
        }
        tl_h2_server_stop(&gen);
        tl_redis_stop(&r);
}
END_TEST

/* ---- HTTP intake ---- */

static size_t collect(char *ptr, size_t size, size_t n, void *userdata) {
        FILE *f = userdata;
        return fwrite(ptr, size, n, f);
}

static long http_post(int port, const char *method, const char *path, const char *auth,
                      const char *body, char **answer) {
        CURL *c = curl_easy_init();
        _cleanup_free_ char *url = NULL;
        ck_assert_int_ge(asprintf(&url, "http://127.0.0.1:%d%s", port, path), 0);
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
        if (auth)
                h = curl_slist_append(h, auth);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        if (body) {
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
                curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        }
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
        ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
        long code = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        fclose(f);
        *answer = buf;
        return code;
}

START_TEST(test_pushd_http_intake) {
        struct tl_h2_server apns;
        tl_h2_server_start(&apns, "apns", "apns", NULL, NULL);
        _cleanup_free_ char *key = tl_write_ec_key("AuthKey.p8");
        int port = tl_free_port();
        _cleanup_free_ char *conf = NULL;
        /* No Redis at all: HTTP is the only intake. */
        ck_assert_int_ge(asprintf(&conf,
                                  "[pushd]\nca-file=%s/cafile.pem\n"
                                  "[http-intake]\nlisten=127.0.0.1:%d\nbearer-token=" BEARER "\n"
                                  "max-body-size=4KiB\n"
                                  "[apns]\nproduction-url=https://127.0.0.1:%d\nkey-file=%s\n"
                                  "key-id=" KEY_ID "\nteam-id=" TEAM_ID "\n",
                                  tl_h2_tls_dir(), port, apns.port, key),
                         0);
        struct tl_daemon d = {0};
        tl_daemon_start(&d, "pushd", conf);
        ck_assert_int_eq(tl_wait_tcp(port, 5000), 0);

        _cleanup_free_ char *t = hex_token(9), *job = apns_job("call", t, "http-1", NULL);
        char *a = NULL;
        ck_assert_int_eq(http_post(port, "POST", "/v1/push", NULL, job, &a), 401);
        ck_assert_msg(strstr(a, "missing Authorization"), "%s", a);
        free(a);
        ck_assert_int_eq(
                http_post(port, "POST", "/v1/push", "Authorization: Bearer wrong", job, &a), 401);
        ck_assert_msg(strstr(a, "wrong bearer token"), "%s", a);
        free(a);
        ck_assert_int_eq(
                http_post(port, "POST", "/v1/push", "Authorization: Bearer " BEARER "x", job, &a),
                401);
        free(a);
        ck_assert_int_eq(counter(&d, "count-http-unauthorized"), 3);

        const char *auth = "Authorization: Bearer " BEARER;
        ck_assert_int_eq(http_post(port, "POST", "/v1/push", auth, "{not json", &a), 400);
        ck_assert_msg(strstr(a, "\"error\"") && strstr(a, "invalid JSON"), "%s", a);
        free(a);
        ck_assert_int_eq(http_post(port, "POST", "/v1/push", auth,
                                   "{\"provider\":\"apns\",\"type\":\"call\"}", &a),
                         400);
        ck_assert_msg(strstr(a, "'token' (or 'tokens') is missing"), "%s", a);
        free(a);
        ck_assert_int_eq(http_post(port, "POST", "/v1/nothing", auth, job, &a), 404);
        free(a);
        ck_assert_int_eq(http_post(port, "GET", "/v1/push", auth, NULL, &a), 405);
        free(a);
        _cleanup_free_ char *huge = malloc(8192);
        memset(huge, ' ', 8191);
        huge[8191] = 0;
        huge[0] = '{';
        huge[8190] = '}';
        ck_assert_int_eq(http_post(port, "POST", "/v1/push", auth, huge, &a), 413);
        free(a);
        ck_assert_int_eq(counter(&d, "count-http-bad-request"), 2);
        json_t *recs = tl_h2_server_records(&apns);
        ck_assert_int_eq(json_array_size(recs), 0);
        json_decref(recs);

        ck_assert_int_eq(http_post(port, "POST", "/v1/push", auth, job, &a), 202);
        json_t *ans = json_loads(a, 0, NULL);
        ck_assert_msg(ans, "%s", a);
        ck_assert(strncmp(json_string_value(json_object_get(ans, "id")), "http-", 5) == 0);
        ck_assert_int_eq(json_integer_value(json_object_get(ans, "tokens")), 1);
        ck_assert_str_eq(json_string_value(json_object_get(ans, "queued")), "memory");
        json_decref(ans);
        free(a);
        recs = tl_h2_server_wait(&apns, 1, 10000);
        ck_assert_str_eq(tl_h2_header(json_array_get(recs, 0), "apns-push-type"), "voip");
        json_decref(recs);
        wait_counter(&d, "count-pn-sent", 1, 5000);
        ck_assert_int_eq(counter(&d, "count-jobs-http"), 1);

        tl_daemon_done(&d);
        tl_h2_server_stop(&apns);
}
END_TEST

START_TEST(test_pushd_apns_expired_provider_token) {
        /* 403 ExpiredProviderToken: a new provider token is signed and the push retried. */
        struct tl_redis r;
        tl_redis_start(&r, NULL);
        struct tl_h2_server apns;
        tl_h2_server_start(&apns, "apns", "apns", NULL,
                     "{\"tokens\":{\"" TOK_FLAKY "\":[{\"status\":403,\"reason\":"
                     "\"ExpiredProviderToken\"},{\"status\":200}]}}");
        _cleanup_free_ char *key = tl_write_ec_key("AuthKey.p8");
        _cleanup_free_ char *conf = apns_conf(&r, &apns, key, NULL);
        struct tl_daemon d = {0};
        tl_daemon_start(&d, "pushd", conf);
        _cleanup_free_ char *j = apns_job("call", TOK_FLAKY, "exp-1", NULL);
        free(xadd(&r, j));
        json_t *recs = tl_h2_server_wait(&apns, 2, 10000);
        check_apns_jwt(json_array_get(recs, 0), key);
        check_apns_jwt(json_array_get(recs, 1), key);
        ck_assert_str_ne(tl_h2_header(json_array_get(recs, 0), "authorization"),
                         tl_h2_header(json_array_get(recs, 1), "authorization"));
        json_decref(recs);
        wait_counter(&d, "count-pn-sent", 1, 5000);
        ck_assert_int_eq(counter(&d, "count-pn-retried"), 1);
        tl_daemon_done(&d);
        tl_h2_server_stop(&apns);
        tl_redis_stop(&r);
}
END_TEST

START_TEST(test_pushd_timeout_retried) {
        /* No answer within request-timeout: the push is tried again (and the late answer of the
         * first try is ignored). */
        struct tl_redis r;
        tl_redis_start(&r, NULL);
        struct tl_h2_server apns;
        tl_h2_server_start(&apns, "apns", "apns", NULL,
                     "{\"tokens\":{\"" TOK_FLAKY "\":[{\"status\":200,\"delay\":3},"
                     "{\"status\":200}]}}");
        _cleanup_free_ char *key = tl_write_ec_key("AuthKey.p8");
        _cleanup_free_ char *conf = apns_conf(&r, &apns, key, NULL);
        struct tl_daemon d = {0};
        tl_daemon_write_conf(&d, "pushd", conf);
        _cleanup_free_ char *dropin_dir = NULL;
        ck_assert_int_ge(asprintf(&dropin_dir, "%s.d", d.conf), 0);
        mkdir(dropin_dir, 0700);
        _cleanup_free_ char *dropin =
                tl_write_file("pushd.conf.d/timeout.conf", "[pushd]\nrequest-timeout=1s\n");
        tl_daemon_start(&d, "pushd", conf);
        _cleanup_free_ char *j = apns_job("call", TOK_FLAKY, "slow-1", NULL);
        free(xadd(&r, j));
        json_decref(tl_h2_server_wait(&apns, 2, 10000));
        wait_counter(&d, "count-pn-sent", 1, 5000);
        wait_pending(&r, 0, 5000);
        ck_assert_int_eq(counter(&d, "count-pn-retried"), 1);
        ck_assert_int_eq(counter(&d, "count-pn-failed"), 0);
        unlink(dropin);
        tl_daemon_done(&d);
        tl_h2_server_stop(&apns);
        tl_redis_stop(&r);
}
END_TEST

START_TEST(test_pushd_sigterm_drains) {
        /* SIGTERM with a push in flight: pushd waits for the answer, acknowledges, exits 0. */
        struct tl_redis r;
        tl_redis_start(&r, NULL);
        struct tl_h2_server apns;
        tl_h2_server_start(&apns, "apns", "apns", NULL, "{\"default\":{\"status\":200,\"delay\":1}}");
        _cleanup_free_ char *key = tl_write_ec_key("AuthKey.p8");
        _cleanup_free_ char *conf = apns_conf(&r, &apns, key, NULL);
        struct tl_daemon d = {0};
        tl_daemon_start(&d, "pushd", conf);
        _cleanup_free_ char *t = hex_token(500), *j = apns_job("call", t, "drain-1", NULL);
        free(xadd(&r, j));
        json_decref(tl_h2_server_wait(&apns, 1, 10000));
        ck_assert_int_eq(pending(&r), 1);
        tl_daemon_stop(&d); /* fails unless the exit status is 0 */
        ck_assert_int_eq(pending(&r), 0);
        ck_assert_int_eq(redis_int(&r, "XLEN " STREAM), 0);
        _cleanup_free_ char *log = tl_log(&d.proc);
        ck_assert_msg(strstr(log, "Drained, exiting."), "%s", log);
        tl_daemon_done(&d);
        tl_h2_server_stop(&apns);
        tl_redis_stop(&r);
}
END_TEST

START_TEST(test_pushd_bounded_queue) {
        /* max-jobs=2: the stream is read no further while two jobs are held, HTTP answers 503. */
        struct tl_redis r;
        tl_redis_start(&r, NULL);
        struct tl_h2_server apns;
        tl_h2_server_start(&apns, "apns", "apns", NULL, "{\"default\":{\"status\":200,\"delay\":1.5}}");
        _cleanup_free_ char *key = tl_write_ec_key("AuthKey.p8");
        int port = tl_free_port();
        _cleanup_free_ char *more = NULL;
        ck_assert_int_ge(asprintf(&more,
                                  "[http-intake]\nlisten=127.0.0.1:%d\nbearer-token=" BEARER "\n",
                                  port),
                         0);
        _cleanup_free_ char *conf = apns_conf(&r, &apns, key, more);
        /* apns_conf puts [pushd] first: max-jobs goes in a drop-in. */
        struct tl_daemon d = {0};
        tl_daemon_write_conf(&d, "pushd", conf);
        _cleanup_free_ char *dropin_dir = NULL;
        ck_assert_int_ge(asprintf(&dropin_dir, "%s.d", d.conf), 0);
        ck_assert_int_eq(mkdir(dropin_dir, 0700), 0);
        _cleanup_free_ char *dropin =
                tl_write_file("pushd.conf.d/limits.conf", "[pushd]\nmax-jobs=2\n");
        tl_daemon_start(&d, "pushd", conf);
        for (unsigned k = 0; k < 4; k++) {
                _cleanup_free_ char *t = hex_token(600 + k), *id = NULL, *j = NULL;
                ck_assert_int_ge(asprintf(&id, "bq-%u", k), 0);
                j = apns_job("call", t, id, NULL);
                free(xadd(&r, j));
        }
        json_decref(tl_h2_server_wait(&apns, 2, 10000));
        sleep_ms(300);
        json_t *recs = tl_h2_server_records(&apns);
        ck_assert_int_eq(json_array_size(recs), 2);
        json_decref(recs);
        ck_assert_int_eq(redis_int(&r, "XLEN " STREAM), 4);
        char *a = NULL;
        _cleanup_free_ char *t = hex_token(700), *job = apns_job("call", t, "http-full", NULL);
        ck_assert_int_eq(
                http_post(port, "POST", "/v1/push", "Authorization: Bearer " BEARER, job, &a), 503);
        ck_assert_msg(strstr(a, "too many jobs"), "%s", a);
        free(a);
        ck_assert_int_eq(counter(&d, "count-http-full"), 1);
        /* Then all four go through, two at a time. */
        json_decref(tl_h2_server_wait(&apns, 4, 10000));
        wait_pending(&r, 0, 10000);
        wait_counter(&d, "count-pn-sent", 4, 5000);
        unlink(dropin);
        tl_daemon_done(&d);
        tl_h2_server_stop(&apns);
        tl_redis_stop(&r);
}
END_TEST

START_TEST(test_pushd_http_intake_to_stream) {
        /* With Redis, an HTTP job is added to the stream (durable, shared) before the 202. */
        struct tl_redis r;
        tl_redis_start(&r, NULL);
        struct tl_h2_server apns;
        tl_h2_server_start(&apns, "apns", "apns", NULL, NULL);
        _cleanup_free_ char *key = tl_write_ec_key("AuthKey.p8");
        int port = tl_free_port();
        _cleanup_free_ char *more = NULL;
        ck_assert_int_ge(asprintf(&more,
                                  "[http-intake]\nlisten=127.0.0.1:%d\nbearer-token=" BEARER "\n",
                                  port),
                         0);
        _cleanup_free_ char *conf = apns_conf(&r, &apns, key, more);
        struct tl_daemon d = {0};
        tl_daemon_start(&d, "pushd", conf);
        ck_assert_int_eq(tl_wait_tcp(port, 5000), 0);
        /* The stream link is up once a first stream job went through. */
        _cleanup_free_ char *t0 = hex_token(1000), *j0 = apns_job("call", t0, "warm-up", NULL);
        free(xadd(&r, j0));
        wait_counter(&d, "count-pn-sent", 1, 10000);

        _cleanup_free_ char *t = hex_token(1001),
                            *job = apns_job("message", t, "via-http", ",\"id\":\"app-42\"");
        char *a = NULL;
        ck_assert_int_eq(
                http_post(port, "POST", "/v1/push", "Authorization: Bearer " BEARER, job, &a), 202);
        json_t *ans = json_loads(a, 0, NULL);
        ck_assert_msg(ans, "%s", a);
        free(a);
        ck_assert_str_eq(json_string_value(json_object_get(ans, "id")), "app-42");
        ck_assert_str_eq(json_string_value(json_object_get(ans, "queued")), "stream");
        ck_assert_ptr_nonnull(strchr(json_string_value(json_object_get(ans, "stream-id")), '-'));
        json_decref(ans);
        json_t *recs = tl_h2_server_wait(&apns, 2, 10000);
        ck_assert_int_eq(count_matching(recs, "via-http"), 1);
        json_decref(recs);
        wait_counter(&d, "count-pn-sent", 2, 5000);
        wait_pending(&r, 0, 5000);
        ck_assert_int_eq(counter(&d, "count-jobs-http"), 1);
        ck_assert_int_eq(counter(&d, "count-jobs-stream"), 2);
        ck_assert_int_eq(redis_int(&r, "XLEN " STREAM), 0);
        tl_daemon_done(&d);
        tl_h2_server_stop(&apns);
        tl_redis_stop(&r);
}
END_TEST

/* ---- crash and restart ---- */

START_TEST(test_pushd_killed_and_restarted) {
        struct tl_redis r;
        tl_redis_start(&r, NULL);
        struct tl_h2_server apns;
        tl_h2_server_start(&apns, "apns", "apns", NULL, NULL);
        _cleanup_free_ char *key = tl_write_ec_key("AuthKey.p8");
        _cleanup_free_ char *conf = apns_conf(&r, &apns, key, NULL);
        struct tl_daemon d = {0};
        tl_daemon_start(&d, "pushd", conf);

        /* Five pushes answered and acknowledged. */
        for (unsigned k = 0; k < 5; k++) {
                _cleanup_free_ char *t = hex_token(200 + k), *id = NULL, *j = NULL;
                ck_assert_int_ge(asprintf(&id, "acked-%u", k), 0);
                j = apns_job("call", t, id, NULL);
                free(xadd(&r, j));
        }
        json_decref(tl_h2_server_wait(&apns, 5, 10000));
        wait_pending(&r, 0, 5000);

        /* Five more the server holds for a minute; pushd is killed meanwhile. */
        tl_h2_server_scenario(&apns, "{\"default\":{\"status\":200,\"delay\":60}}");
        for (unsigned k = 0; k < 5; k++) {
                _cleanup_free_ char *t = hex_token(300 + k), *id = NULL, *j = NULL;
                ck_assert_int_ge(asprintf(&id, "inflight-%u", k), 0);
                j = apns_job("call", t, id, NULL);
                free(xadd(&r, j));
        }
        json_decref(tl_h2_server_wait(&apns, 10, 10000));
        ck_assert_int_eq(pending(&r), 5);
        tl_kill(&d.proc, SIGKILL);
        int status = tl_wait(&d.proc, 5000);
        ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        ck_assert_int_eq(pending(&r), 5);

        /* Restarted with the same consumer name: the five are sent again, the acknowledged
         * ones are not. */
        tl_h2_server_scenario(&apns, "{}");
        tl_daemon_start(&d, "pushd", conf);
        json_t *recs = tl_h2_server_wait(&apns, 15, 10000);
        wait_pending(&r, 0, 5000);
        sleep_ms(300);
        json_decref(recs);
        recs = tl_h2_server_records(&apns);
        ck_assert_int_eq(json_array_size(recs), 15);
        for (unsigned k = 0; k < 5; k++) {
                char id[32];
                snprintf(id, sizeof id, "\"acked-%u\"", k);
                ck_assert_int_eq(count_matching(recs, id), 1);
                snprintf(id, sizeof id, "\"inflight-%u\"", k);
                ck_assert_int_eq(count_matching(recs, id), 2);
        }
        json_decref(recs);
        ck_assert_int_eq(redis_int(&r, "XLEN " STREAM), 0);
        ck_assert_int_eq(counter(&d, "count-pn-sent"), 5);

        tl_daemon_done(&d);
        tl_h2_server_stop(&apns);
        tl_redis_stop(&r);
}
END_TEST

START_TEST(test_pushd_max_deliveries) {
        /* An entry handed out twice already (two instances died on it): with max-deliveries=2
         * the third hand-out dead-letters it instead of sending it. */
        struct tl_redis r;
        tl_redis_start(&r, NULL);
        struct tl_h2_server apns;
        tl_h2_server_start(&apns, "apns", "apns", NULL, NULL);
        _cleanup_free_ char *key = tl_write_ec_key("AuthKey.p8");
        _cleanup_free_ char *more = strdup("[redis]\nmax-deliveries=2\n");
        _cleanup_free_ char *conf = apns_conf(&r, &apns, key, NULL);
        _cleanup_free_ char *t = hex_token(800), *j = apns_job("call", t, "poison-1", NULL);
        _cleanup_free_ char *g = tl_redis_cmd(&r, "XGROUP CREATE %s pushd 0 MKSTREAM", STREAM);
        _cleanup_free_ char *id = xadd(&r, j);
        for (int k = 0; k < 2; k++) {
                _cleanup_free_ char *got = tl_redis_cmd(&r,
                                                        "XREADGROUP GROUP pushd pushd-a COUNT 10 "
                                                        "STREAMS %s 0",
                                                        STREAM);
                if (k == 0) {
                        free(got);
                        got = tl_redis_cmd(
                                &r, "XREADGROUP GROUP pushd pushd-a COUNT 10 STREAMS %s >", STREAM);
                }
                ck_assert_msg(got && strstr(got, id), "%s", strna(got));
        }
        struct tl_daemon d = {0};
        tl_daemon_write_conf(&d, "pushd", conf);
        _cleanup_free_ char *dropin_dir = NULL;
        ck_assert_int_ge(asprintf(&dropin_dir, "%s.d", d.conf), 0);
        mkdir(dropin_dir, 0700);
        _cleanup_free_ char *dropin = tl_write_file("pushd.conf.d/deliveries.conf", more);
        tl_daemon_start(&d, "pushd", conf);
        wait_pending(&r, 0, 5000);
        _cleanup_free_ char *dl = tl_redis_cmd(&r, "XRANGE " DEAD_LETTER " - +");
        ck_assert_msg(dl && strstr(dl, "handed out 3 times") && strstr(dl, id), "%s", strna(dl));
        json_t *recs = tl_h2_server_records(&apns);
        ck_assert_int_eq(json_array_size(recs), 0);
        json_decref(recs);
        ck_assert_int_eq(redis_int(&r, "XLEN " STREAM), 0);
        unlink(dropin);
        tl_daemon_done(&d);
        tl_h2_server_stop(&apns);
        tl_redis_stop(&r);
}
END_TEST

START_TEST(test_pushd_redis_reconnect) {
        /* Redis drops every client: pushd reconnects both links and goes on reading. */
        struct tl_redis r;
        tl_redis_start(&r, NULL);
        struct tl_h2_server apns;
        tl_h2_server_start(&apns, "apns", "apns", NULL, NULL);
        _cleanup_free_ char *key = tl_write_ec_key("AuthKey.p8");
        _cleanup_free_ char *conf = apns_conf(&r, &apns, key, NULL);
        struct tl_daemon d = {0};
        tl_daemon_start(&d, "pushd", conf);
        for (unsigned k = 0; k < 3; k++) {
                _cleanup_free_ char *t = hex_token(900 + k), *j = apns_job("call", t, "rc", NULL);
                free(xadd(&r, j));
                wait_counter(&d, "count-pn-sent", k + 1, 10000);
                wait_pending(&r, 0, 5000);
                _cleanup_free_ char *killed = tl_redis_cmd(&r, "CLIENT KILL TYPE normal");
                ck_assert_msg(killed && atoi(killed) >= 2, "killed: %s", strna(killed));
        }
        tl_daemon_done(&d);
        tl_h2_server_stop(&apns);
        tl_redis_stop(&r);
}
END_TEST

START_TEST(test_pushd_other_instance_takes_over) {
        /* Instance a dies with jobs; instance b (another consumer) claims them once idle. */
        struct tl_redis r;
        tl_redis_start(&r, NULL);
        struct tl_h2_server apns;
        tl_h2_server_start(&apns, "apns", "apns", NULL, "{\"default\":{\"status\":200,\"delay\":60}}");
        _cleanup_free_ char *key = tl_write_ec_key("AuthKey.p8");
        _cleanup_free_ char *conf_a = apns_conf(&r, &apns, key, NULL);
        struct tl_daemon a = {0};
        tl_daemon_start(&a, "pushd", conf_a);
        for (unsigned k = 0; k < 3; k++) {
                _cleanup_free_ char *t = hex_token(400 + k), *id = NULL, *j = NULL;
                ck_assert_int_ge(asprintf(&id, "orphan-%u", k), 0);
                j = apns_job("call", t, id, NULL);
                free(xadd(&r, j));
        }
        json_decref(tl_h2_server_wait(&apns, 3, 10000));
        tl_kill(&a.proc, SIGKILL);
        tl_wait(&a.proc, 5000);
        tl_h2_server_scenario(&apns, "{}");

        _cleanup_free_ char *conf_b = NULL;
        ck_assert_int_ge(
                asprintf(&conf_b,
                         "[pushd]\nca-file=%s/cafile.pem\nrequest-timeout=400ms\n"
                         "retry-max-delay=400ms\nretry-initial-delay=100ms\n[redis]\n"
                         "server=127.0.0.1:%d\nconsumer=pushd-b\nclaim-idle-time=1s\n"
                         "claim-interval=300ms\n[apns]\nproduction-url=https://127.0.0.1:%d\n"
                         "key-file=%s\nkey-id=" KEY_ID "\nteam-id=" TEAM_ID "\n",
                         tl_h2_tls_dir(), r.port, apns.port, key),
                0);
        struct tl_daemon b = {0};
        tl_daemon_start(&b, "pushd", conf_b);
        json_t *recs = tl_h2_server_wait(&apns, 6, 10000);
        json_decref(recs);
        wait_pending(&r, 0, 5000);
        ck_assert_int_eq(counter(&b, "count-jobs-reclaimed"), 3);
        ck_assert_int_eq(counter(&b, "count-pn-sent"), 3);
        tl_daemon_done(&b);
        free(a.proc.log);
        free(a.conf);
        free(a.sock);
        free(a.role);
        tl_h2_server_stop(&apns);
        tl_redis_stop(&r);
}
END_TEST

START_TEST(test_pushd_config_errors) {
        _cleanup_free_ char *bin = tl_build_path("pushd/sipfleet-pushd");
        struct {
                const char *conf;
                const char *message;
        } cases[] = {
                {"[pushd]\nmax-jobs=10\n", "Neither [redis] server nor [http-intake] listen"},
                {"[http-intake]\nlisten=127.0.0.1:1\n", "listen needs bearer-token"},
                {"[redis]\nserver=127.0.0.1:1\n[apns]\nkey-file=/"
                 "nonexistent.p8\nkey-id=a\nteam-id=b\n",
                 "key-file '/nonexistent.p8'"},
                {"[redis]\nserver=127.0.0.1:1\n[apns]\nkey-file=/etc/hostname\n",
                 "key-file needs key-id and team-id"},
                {"[redis]\nserver=127.0.0.1:1\n[fcm]\nservice-account-files=/etc/hostname\n",
                 "[fcm] service account '/etc/hostname'"},
                {"[redis]\nserver=127.0.0.1:1\n[apns]\nteam-idd=x\n", "team-id"},
                {"[redis]\nserver=127.0.0.1:1\n[generic]\nurl=ftp://x/$token\n",
                 "must start with https://"},
                {"[redis]\nserver=127.0.0.1:1\n[pushd]\nca-file=/nonexistent.pem\n",
                 "ca-file '/nonexistent.pem'"},
                {"[redis]\nserver=127.0.0.1:1\nclaim-idle-time=30s\n",
                 "claim-idle-time must exceed"},
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *path = tl_write_file("bad.conf", cases[i].conf);
                _cleanup_free_ char *sock = tl_path("bad.sock"), *set = NULL;
                ck_assert_int_ge(asprintf(&set, "global/control-socket=%s", sock), 0);
                char *argv[] = {bin, "--config", path, "--set", set, NULL};
                struct tl_proc p;
                tl_spawn("bad", argv, &p);
                int st = tl_wait(&p, 10000);
                _cleanup_free_ char *log = tl_log(&p);
                free(p.log);
                ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0, "accepted: %s", cases[i].conf);
                ck_assert_msg(strstr(log, cases[i].message), "'%s' not in: %s", cases[i].message,
                              log);
                _cleanup_free_ char *log_path = tl_path("bad.log");
                unlink(log_path);
        }
}
END_TEST

START_TEST(test_pushd_etc_conf_in_sync) {
        _cleanup_free_ char *bin = tl_build_path("pushd/sipfleet-pushd");
        char *argv[] = {bin, "--dump-default", NULL};
        struct tl_proc p;
        tl_spawn("dump", argv, &p);
        ck_assert_int_eq(tl_wait(&p, 10000), 0);
        _cleanup_free_ char *dump = tl_log(&p);
        free(p.log);
        _cleanup_free_ char *path = tl_source_path("etc/pushd.conf");
        _cleanup_free_ char *text = tl_read_file(path, NULL);
        ck_assert_msg(text, "cannot read %s", path);
        ck_assert_msg(streq(dump, text),
                      "etc/pushd.conf differs from sipfleet-pushd --dump-default; regenerate it "
                      "with: build/pushd/sipfleet-pushd --dump-default > etc/pushd.conf");
}
END_TEST

int main(void) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        Suite *s = suite_create("pushd");
        TCase *tc = tcase_create("apns");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_pushd_apns_token_auth);
        tcase_add_test(tc, test_pushd_apns_burst_waits_for_slots);
        tcase_add_test(tc, test_pushd_apns_errors);
        tcase_add_test(tc, test_pushd_apns_certificate_auth);
        tcase_add_test(tc, test_pushd_apns_expired_provider_token);
        tcase_add_test(tc, test_pushd_timeout_retried);
        suite_add_tcase(s, tc);
        tc = tcase_create("fcm");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_pushd_fcm);
        tcase_add_test(tc, test_pushd_fcm_token_refresh);
        suite_add_tcase(s, tc);
        tc = tcase_create("generic");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_pushd_generic);
        suite_add_tcase(s, tc);
        tc = tcase_create("intake");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_pushd_http_intake);
        tcase_add_test(tc, test_pushd_http_intake_to_stream);
        tcase_add_test(tc, test_pushd_killed_and_restarted);
        tcase_add_test(tc, test_pushd_other_instance_takes_over);
        tcase_add_test(tc, test_pushd_max_deliveries);
        tcase_add_test(tc, test_pushd_redis_reconnect);
        tcase_add_test(tc, test_pushd_sigterm_drains);
        tcase_add_test(tc, test_pushd_bounded_queue);
        suite_add_tcase(s, tc);
        tc = tcase_create("config");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_pushd_config_errors);
        tcase_add_test(tc, test_pushd_etc_conf_in_sync);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
