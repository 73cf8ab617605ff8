/* SPDX-License-Identifier: MIT */
/* Two sipfleet-presence servers sharing their presence state through a real redis-server: a
 * watcher on server A sees what is published on server B (single and list subscriptions, the
 * latter in partial NOTIFYs), a SUBSCRIBE on B gets in its first NOTIFY what was published on
 * A, an entity tag made on one server works on the other, publications expire at the same time
 * on both, and with Redis stopped a PUBLISH gets 503 with Retry-After at once while the
 * subscriptions go on with what is known; once Redis is back, changes flow again. A PUBLISH
 * still waiting for Redis when the server stops gets its 503. */
#include <jansson.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sofia-sip/sip_header.h>

#include "loop.h"
#include "macro.h"
#include "testlib-redis.h"
#include "testlib-sip.h"
#include "testlib.h"

struct server {
        struct tl_daemon d;
        int port;
        char uri[64];
};

static struct tl_redis redis;
static struct server A, B;

static void server_start(struct server *s, const char *name, const char *extra) {
        s->port = tl_free_port();
        _cleanup_free_ char *text = NULL, *sock = NULL, *conf = NULL, *rel = NULL, *bin = NULL;
        ck_assert_int_ge(asprintf(&sock, "%s.sock", name), 0);
        ck_assert_int_ge(asprintf(&conf, "%s.conf", name), 0);
        s->d.sock = tl_path(sock);
        s->d.role = strdup("presence");
        s->d.metrics_port = tl_free_port();
        ck_assert_int_ge(asprintf(&text,
                                  "[global]\n"
                                  "control-socket=%s\n"
                                  "shutdown-timeout=3s\n"
                                  "prometheus-listen=127.0.0.1:%d\n"
                                  "log-level=debug\n"
                                  "transports=sip:127.0.0.1:%d\n"
                                  "[presence]\n"
                                  "min-expires=2s\n"
                                  "subscription-min-expires=1s\n"
                                  "redis-server-domain=127.0.0.1\n"
                                  "redis-server-port=%d\n"
                                  "redis-key-prefix=test-pres:\n"
                                  "%s%s",
                                  s->d.sock, s->d.metrics_port, s->port, redis.port,
                                  extra && strstr(extra, "redis-command-timeout")
                                          ? ""
                                          : "redis-command-timeout=1s\n",
                                  extra ? extra : ""),
                         0);
        s->d.conf = tl_write_file(conf, text);
        bin = tl_build_path("presence/sipfleet-presence");
        char *argv[] = {bin, "--config", s->d.conf, NULL};
        tl_spawn(name, argv, &s->d.proc);
        if (tl_wait_unix(s->d.sock, 10000) < 0) {
                _cleanup_free_ char *log = tl_log(&s->d.proc);
                ck_abort_msg("%s did not become ready: %s", name, log);
        }
        snprintf(s->uri, sizeof s->uri, "sip:127.0.0.1:%d;transport=tcp", s->port);
}

static long long counter(struct server *s, const char *name) {
        _cleanup_free_ char *path = NULL;
        ck_assert_int_ge(asprintf(&path, "presence/%s", name), 0);
        return tl_counter(s->d.sock, path);
}

/* Waits (bounded) until the server's Redis command link is up, or down. */
static void wait_redis(struct server *s, long long want) {
        for (int i = 0; i < 100 && counter(s, "redis-connected") != want; i++)
                tl_sip_run(100);
        ck_assert_int_eq(counter(s, "redis-connected"), want);
}

static void start_all(const char *extra) {
        tl_redis_start(&redis, NULL);
        server_start(&A, "presence-a", extra);
        server_start(&B, "presence-b", extra);
        wait_redis(&A, 1);
        wait_redis(&B, 1);
}

static void stop_all(void) {
        tl_daemon_done(&A.d);
        tl_daemon_done(&B.d);
        tl_redis_stop(&redis);
}

static struct tl_ua *ua_for(struct server *s) {
        struct tl_ua *ua = tl_ua_new();
        tl_ua_set_proxy(ua, s->uri);
        return ua;
}

static char *pidf(const char *user, const char *tuple, const char *basic, const char *activity) {
        char *s = NULL;
        ck_assert_int_ge(
                asprintf(&s,
                         "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                         "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" "
                         "xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" "
                         "xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" "
                         "entity=\"sip:%s@example.org\">"
                         "<tuple id=\"%s\"><status><basic>%s</basic></status>"
                         "<contact priority=\"0.5\">sip:%s@10.0.0.%s</contact></tuple>"
                         "<dm:person id=\"p\"><rpid:activities><rpid:%s/></rpid:activities>"
                         "</dm:person></presence>",
                         user, tuple, basic, user, tuple, activity),
                0);
        return s;
}

/* PUBLISH for user@example.org; etag/body may be NULL. *ret_etag gets the SIP-ETag, *ret the
 * response (both optional). */
static int publish(struct tl_ua *ua, const char *user, const char *etag, const char *expires,
                   const char *body, char **ret_etag, msg_t **ret) {
        _cleanup_free_ char *ruri = NULL, *hdrs = NULL;
        ck_assert_int_ge(asprintf(&ruri, "sip:%s@example.org", user), 0);
        ck_assert_int_ge(asprintf(&hdrs, "Event: presence\r\nExpires: %s\r\n%s%s%s%s", expires,
                                  etag ? "SIP-If-Match: " : "", etag ? etag : "",
                                  etag ? "\r\n" : "",
                                  body ? "Content-Type: application/pidf+xml\r\n" : ""),
                         0);
        struct tl_dialog *d = tl_dialog_new(ua, ruri, ruri);
        msg_t *m = NULL;
        int status = tl_ua_send(d, "PUBLISH", ruri, hdrs, body, &m);
        tl_dialog_free(d);
        if (ret_etag) {
                sip_t *sip = m ? sip_object(m) : NULL;
                *ret_etag = sip && sip->sip_etag ? strdup(sip->sip_etag->g_string) : NULL;
        }
        if (ret)
                *ret = m;
        else if (m)
                msg_destroy(m);
        return status;
}

static size_t count(const char *s, const char *needle) {
        size_t n = 0;
        for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
                n++;
        return n;
}

/* The body of the next NOTIFY (malloc'd); its substate in state. */
static char *next_notify(struct tl_ua *ua, int timeout_ms, char *state, size_t size) {
        msg_t *m = tl_ua_next_request(ua, timeout_ms);
        ck_assert_msg(m != NULL, "no NOTIFY");
        sip_t *sip = sip_object(m);
        ck_assert_str_eq(sip->sip_request->rq_method_name, "NOTIFY");
        ck_assert_ptr_nonnull(sip->sip_subscription_state);
        snprintf(state, size, "%s", sip->sip_subscription_state->ss_substate);
        char *b = sip->sip_payload ? strndup(sip->sip_payload->pl_data, sip->sip_payload->pl_len)
                                   : strdup("");
        msg_destroy(m);
        return b;
}

static void no_request(struct tl_ua *ua, int ms) {
        msg_t *m = tl_ua_next_request(ua, ms);
        if (m) {
                sip_t *sip = sip_object(m);
                ck_abort_msg("unexpected %s: %.*s", sip->sip_request->rq_method_name,
                             sip->sip_payload ? (int)sip->sip_payload->pl_len : 0,
                             sip->sip_payload ? sip->sip_payload->pl_data : "");
        }
}

/* Answers and drops what the agent received until it is quiet for 500 ms (bounded). */
static void drain(struct tl_ua *ua) {
        for (int i = 0; i < 20; i++) {
                msg_t *m = tl_ua_next_request(ua, 500);
                if (!m)
                        return;
                msg_destroy(m);
        }
}

static struct tl_dialog *subscribe(struct tl_ua *ua, const char *watcher, const char *user) {
        _cleanup_free_ char *ruri = NULL, *from = NULL;
        ck_assert_int_ge(asprintf(&ruri, "sip:%s@example.org", user), 0);
        ck_assert_int_ge(asprintf(&from, "sip:%s@example.org", watcher), 0);
        struct tl_dialog *d = tl_dialog_new(ua, from, ruri);
        ck_assert_int_eq(tl_ua_send(d, "SUBSCRIBE", ruri,
                                    "Event: presence\r\nAccept: application/pidf+xml\r\n"
                                    "Expires: 600",
                                    NULL, NULL),
                         200);
        return d;
}

static char *redis_cmd(const char *fmt, const char *arg) {
        char *s = tl_redis_cmd(&redis, fmt, arg);
        ck_assert_ptr_nonnull(s);
        return s;
}

START_TEST(test_presence_redis_two_servers) {
        start_all(NULL);
        struct tl_ua *bob = ua_for(&A), *alice_b = ua_for(&B), *alice_a = ua_for(&A),
                     *carol = ua_for(&B);
        char state[64];

        /* bob watches alice on A: nothing is known of her yet. */
        struct tl_dialog *d = subscribe(bob, "bob", "alice");
        _cleanup_free_ char *n0 = next_notify(bob, 5000, state, sizeof state);
        ck_assert_str_eq(state, "active");
        ck_assert_uint_eq(count(n0, "<tuple"), 0);

        /* alice publishes on B: bob hears it from A. */
        _cleanup_free_ char *b1 = pidf("alice", "1", "open", "away"), *e1 = NULL;
        ck_assert_int_eq(publish(alice_b, "alice", NULL, "600", b1, &e1, NULL), 200);
        ck_assert_ptr_nonnull(e1);
        _cleanup_free_ char *n1 = next_notify(bob, 5000, state, sizeof state);
        ck_assert_ptr_nonnull(strstr(n1, "<rpid:away/>"));
        ck_assert_ptr_nonnull(strstr(n1, "sip:alice@10.0.0.1"));
        ck_assert_int_ge(counter(&A, "count-redis-changes"), 1);

        /* The layout: one hash per presentity, one field per publication, with a lifetime. */
        _cleanup_free_ char *fields = redis_cmd("HKEYS %s", "test-pres:alice@example.org");
        ck_assert_str_eq(fields, e1);
        _cleanup_free_ char *value = redis_cmd("HGET test-pres:alice@example.org %s", e1);
        ck_assert_ptr_nonnull(strstr(value, "\n<?xml"));
        ck_assert_ptr_nonnull(strstr(value, "<rpid:away/>"));
        _cleanup_free_ char *pttl = redis_cmd("PTTL %s", "test-pres:alice@example.org");
        ck_assert_int_gt(atoll(pttl), 600 * 1000);

        /* The entity tag made on B modifies the publication through A. */
        _cleanup_free_ char *b2 = pidf("alice", "1", "open", "on-the-phone"), *e2 = NULL;
        ck_assert_int_eq(publish(alice_a, "alice", e1, "600", b2, &e2, NULL), 200);
        ck_assert_str_ne(e1, e2);
        _cleanup_free_ char *n2 = next_notify(bob, 5000, state, sizeof state);
        ck_assert_ptr_nonnull(strstr(n2, "<rpid:on-the-phone/>"));
        /* The old tag is gone on both servers. */
        ck_assert_int_eq(publish(alice_b, "alice", e1, "600", NULL, NULL, NULL), 412);
        /* A refresh on B keeps the document. */
        _cleanup_free_ char *e3 = NULL;
        ck_assert_int_eq(publish(alice_b, "alice", e2, "600", NULL, &e3, NULL), 200);
        no_request(bob, 300); /* nothing changed for watchers */

        /* A second source on B: bob sees both tuples merged. */
        tl_sip_run(20); /* its modification time is later */
        _cleanup_free_ char *b4 = pidf("alice", "2", "closed", "away"), *e4 = NULL;
        ck_assert_int_eq(publish(alice_b, "alice", NULL, "600", b4, &e4, NULL), 200);
        _cleanup_free_ char *n4 = next_notify(bob, 5000, state, sizeof state);
        ck_assert_uint_eq(count(n4, "<tuple"), 2);
        ck_assert_ptr_nonnull(strstr(n4, "sip:alice@10.0.0.1"));
        ck_assert_ptr_nonnull(strstr(n4, "sip:alice@10.0.0.2"));
        /* The person element of the latest modified source wins, whichever server took it. */
        ck_assert_ptr_nonnull(strstr(n4, "<rpid:away/>"));
        ck_assert_ptr_null(strstr(n4, "<rpid:on-the-phone/>"));

        /* carol subscribes on B to dave, published on A only: the first NOTIFY has his state. */
        _cleanup_free_ char *b5 = pidf("dave", "7", "open", "busy");
        ck_assert_int_eq(publish(alice_a, "dave", NULL, "600", b5, NULL, NULL), 200);
        struct tl_dialog *dc = subscribe(carol, "carol", "dave");
        _cleanup_free_ char *n5 = next_notify(carol, 5000, state, sizeof state);
        ck_assert_ptr_nonnull(strstr(n5, "<rpid:busy/>"));
        ck_assert_ptr_nonnull(strstr(n5, "sip:dave@10.0.0.7"));
        ck_assert_int_ge(counter(&B, "count-redis-loads"), 1);

        /* Removing a source on B: bob's NOTIFY on A loses its tuple. */
        ck_assert_int_eq(publish(alice_b, "alice", e4, "0", NULL, NULL, NULL), 200);
        _cleanup_free_ char *n6 = next_notify(bob, 5000, state, sizeof state);
        ck_assert_uint_eq(count(n6, "<tuple"), 1);
        ck_assert_ptr_null(strstr(n6, "sip:alice@10.0.0.2"));
        /* The last one removed on A: last activity, stored for the other servers. */
        ck_assert_int_eq(publish(alice_a, "alice", e3, "0", NULL, NULL, NULL), 200);
        _cleanup_free_ char *n7 = next_notify(bob, 5000, state, sizeof state);
        ck_assert_ptr_nonnull(strstr(n7, "<basic>closed</basic>"));
        _cleanup_free_ char *last = redis_cmd("HGET %s ~last", "test-pres:alice@example.org");
        ck_assert_int_gt(atoll(last), (long long)time(NULL) * 1000 - 60000);
        /* carol's server learns it when she subscribes on B. */
        struct tl_dialog *dc2 = subscribe(carol, "carol", "alice");
        _cleanup_free_ char *n8 = next_notify(carol, 5000, state, sizeof state);
        ck_assert_ptr_nonnull(strstr(n8, "<basic>closed</basic>"));
        ck_assert_ptr_nonnull(strstr(n8, "<rpid:away/>"));

        tl_dialog_free(d);
        tl_dialog_free(dc);
        tl_dialog_free(dc2);
        tl_ua_free(bob);
        tl_ua_free(alice_a);
        tl_ua_free(alice_b);
        tl_ua_free(carol);
        stop_all();
}
END_TEST

static char *address_book(int n) {
        char *s = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&s, &len);
        fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<resource-lists "
              "xmlns=\"urn:ietf:params:xml:ns:resource-lists\"><list>\n",
              f);
        for (int i = 0; i < n; i++)
                fprintf(f, "<entry uri=\"sip:user%d@example.org\"/>\n", i);
        fputs("</list></resource-lists>\n", f);
        fclose(f);
        return s;
}

START_TEST(test_presence_redis_list_partial) {
        start_all("linphone-list-compatibility=false\n");
        struct tl_ua *pub = ua_for(&B), *owner = ua_for(&A);
        char state[64];
        _cleanup_free_ char *b5 = pidf("user5", "1", "open", "away");
        ck_assert_int_eq(publish(pub, "user5", NULL, "600", b5, NULL, NULL), 200);

        _cleanup_free_ char *book = address_book(20);
        struct tl_dialog *d =
                tl_dialog_new(owner, "sip:owner@example.org", "sip:owner-friends@example.org");
        ck_assert_int_eq(tl_ua_send(d, "SUBSCRIBE", "sip:owner-friends@example.org",
                                    "Event: presence\r\nExpires: 600\r\nSupported: eventlist\r\n"
                                    "Accept: application/pidf+xml, application/rlmi+xml, "
                                    "multipart/related\r\n"
                                    "Content-Type: application/resource-lists+xml\r\n"
                                    "Content-Disposition: recipient-list",
                                    book, NULL),
                         200);
        /* Full state on A: user5, published on B, is a user of the service. */
        _cleanup_free_ char *n1 = next_notify(owner, 5000, state, sizeof state);
        ck_assert_ptr_nonnull(strstr(n1, "fullState=\"true\""));
        ck_assert_uint_eq(count(n1, "<resource "), 20);
        ck_assert_uint_eq(count(n1, "<instance "), 1);
        ck_assert_ptr_nonnull(strstr(n1, "<resource uri=\"sip:user5@example.org\">"));
        ck_assert_ptr_nonnull(strstr(n1, "entity=\"sip:user5@example.org\""));

        /* user7 publishes on B: a partial NOTIFY on A with user7 only. */
        _cleanup_free_ char *b7 = pidf("user7", "1", "open", "on-the-phone");
        ck_assert_int_eq(publish(pub, "user7", NULL, "600", b7, NULL, NULL), 200);
        _cleanup_free_ char *n2 = next_notify(owner, 5000, state, sizeof state);
        ck_assert_ptr_nonnull(strstr(n2, "fullState=\"false\""));
        ck_assert_uint_eq(count(n2, "<resource "), 1);
        ck_assert_ptr_nonnull(strstr(n2, "<resource uri=\"sip:user7@example.org\">"));
        ck_assert_ptr_nonnull(strstr(n2, "<rpid:on-the-phone/>"));
        no_request(owner, 300);

        tl_dialog_free(d);
        tl_ua_free(pub);
        tl_ua_free(owner);
        stop_all();
}
END_TEST

/* A publication made on B for 2 s ends at the same time on A, from its own timer (nobody
 * writes to Redis at expiry), and a server that reads it afterwards sees it ended. */
START_TEST(test_presence_redis_expiry) {
        start_all("max-presence-elements=1\n");
        struct tl_ua *bob = ua_for(&A), *alice = ua_for(&B), *carol = ua_for(&B);
        char state[64];
        struct tl_dialog *d = subscribe(bob, "bob", "alice");
        _cleanup_free_ char *n0 = next_notify(bob, 5000, state, sizeof state);
        ck_assert_uint_eq(count(n0, "<tuple"), 0);
        _cleanup_free_ char *b1 = pidf("alice", "1", "open", "away");
        ck_assert_int_eq(publish(alice, "alice", NULL, "2", b1, NULL, NULL), 200);
        uint64_t t0 = now_msec();
        /* max-presence-elements counts the sources of every server: a second one through A is
         * refused. */
        struct tl_ua *alice_a = ua_for(&A);
        msg_t *m = NULL;
        ck_assert_int_eq(publish(alice_a, "alice", NULL, "600", b1, NULL, &m), 503);
        ck_assert_ptr_nonnull(sip_object(m)->sip_retry_after);
        msg_destroy(m);
        tl_ua_free(alice_a);
        _cleanup_free_ char *n1 = next_notify(bob, 5000, state, sizeof state);
        ck_assert_ptr_nonnull(strstr(n1, "<basic>open</basic>"));
        _cleanup_free_ char *n2 = next_notify(bob, 5000, state, sizeof state);
        uint64_t t1 = now_msec();
        ck_assert_ptr_nonnull(strstr(n2, "<basic>closed</basic>"));
        ck_assert_msg(t1 - t0 >= 1500 && t1 - t0 <= 3000, "expired after %llu ms",
                      (unsigned long long)(t1 - t0));
        ck_assert_int_eq(counter(&A, "count-publish-expired"), 1);
        /* Read by B afterwards: ended, with its last activity. */
        struct tl_dialog *dc = subscribe(carol, "carol", "alice");
        _cleanup_free_ char *n3 = next_notify(carol, 5000, state, sizeof state);
        ck_assert_ptr_nonnull(strstr(n3, "<basic>closed</basic>"));
        ck_assert_ptr_null(strstr(n3, "<basic>open</basic>"));
        tl_dialog_free(d);
        tl_dialog_free(dc);
        tl_ua_free(bob);
        tl_ua_free(alice);
        tl_ua_free(carol);
        stop_all();
}
END_TEST

START_TEST(test_presence_redis_down) {
        start_all(NULL);
        struct tl_ua *bob = ua_for(&A), *alice = ua_for(&B), *carol = ua_for(&A);
        char state[64];
        struct tl_dialog *d = subscribe(bob, "bob", "alice");
        _cleanup_free_ char *n0 = next_notify(bob, 5000, state, sizeof state);
        _cleanup_free_ char *b1 = pidf("alice", "1", "open", "away"), *e1 = NULL;
        ck_assert_int_eq(publish(alice, "alice", NULL, "600", b1, &e1, NULL), 200);
        _cleanup_free_ char *n1 = next_notify(bob, 5000, state, sizeof state);
        ck_assert_ptr_nonnull(strstr(n1, "<rpid:away/>"));

        /* Redis stalls (stopped with SIGSTOP): a PUBLISH gets 503 once redis-command-timeout
         * (1 s) passed, never waits longer. */
        tl_freeze(&redis.proc);
        msg_t *m = NULL;
        uint64_t t0 = now_msec();
        ck_assert_int_eq(publish(alice, "alice", e1, "600", NULL, NULL, &m), 503);
        uint64_t took = now_msec() - t0;
        ck_assert_msg(took >= 800 && took < 3000, "503 after %llu ms", (unsigned long long)took);
        ck_assert_ptr_nonnull(sip_object(m)->sip_retry_after);
        msg_destroy(m);
        ck_assert_int_eq(kill(redis.proc.pid, SIGCONT), 0);
        wait_redis(&B, 1);
        /* The timed-out refresh may have been applied when Redis resumed, under a tag never
         * answered: the client's next refresh gets 412 and it publishes anew (RFC 3903). */
        _cleanup_free_ char *e2 = NULL;
        int st = publish(alice, "alice", e1, "600", NULL, &e2, NULL);
        ck_assert_msg(st == 200 || st == 412, "refresh after the stall: %d", st);
        if (st == 412)
                ck_assert_int_eq(publish(alice, "alice", NULL, "600", b1, &e2, NULL), 200);
        free(e1);
        e1 = e2;
        e2 = NULL;
        drain(bob);

        int port = redis.port;
        tl_redis_stop(&redis);
        wait_redis(&A, 0);
        wait_redis(&B, 0);

        /* PUBLISH: 503 with Retry-After, at once. */
        t0 = now_msec();
        ck_assert_int_eq(publish(alice, "alice", e1, "600", b1, NULL, &m), 503);
        ck_assert_uint_lt(now_msec() - t0, 2000);
        ck_assert_ptr_nonnull(sip_object(m)->sip_retry_after);
        msg_destroy(m);
        ck_assert_int_eq(publish(alice, "zoe", NULL, "600", b1, NULL, NULL), 503);
        ck_assert_int_ge(counter(&B, "count-redis-failed"), 2);

        /* Subscriptions go on with what is known: a refresh on A gets the mirror. */
        ck_assert_int_eq(
                tl_ua_send(d, "SUBSCRIBE", NULL, "Event: presence\r\nExpires: 600", NULL, NULL),
                200);
        _cleanup_free_ char *n2 = next_notify(bob, 5000, state, sizeof state);
        ck_assert_ptr_nonnull(strstr(n2, "<rpid:away/>"));
        /* A new subscription does not wait for Redis. */
        struct tl_dialog *dc = subscribe(carol, "carol", "zoe");
        _cleanup_free_ char *n3 = next_notify(carol, 3000, state, sizeof state);
        ck_assert_str_eq(state, "active");

        /* Redis back (empty: it kept nothing): the servers reconnect, A reads alice's state
         * again, and a PUBLISH on B reaches bob. */
        tl_redis_start_on(&redis, port, NULL);
        wait_redis(&A, 1);
        wait_redis(&B, 1);
        _cleanup_free_ char *n4 = next_notify(bob, 5000, state, sizeof state);
        ck_assert_uint_eq(count(n4, "<basic>open</basic>"), 0);
        _cleanup_free_ char *b5 = pidf("alice", "3", "open", "on-the-phone");
        for (int i = 0; i < 20 && publish(alice, "alice", NULL, "600", b5, NULL, NULL) != 200; i++)
                tl_sip_run(200);
        _cleanup_free_ char *n5 = next_notify(bob, 5000, state, sizeof state);
        ck_assert_ptr_nonnull(strstr(n5, "<rpid:on-the-phone/>"));

        tl_dialog_free(d);
        tl_dialog_free(dc);
        tl_ua_free(bob);
        tl_ua_free(alice);
        tl_ua_free(carol);
        stop_all();
}
END_TEST

/* A PUBLISH still waiting for a stalled Redis when the server stops gets its 503, and the
 * server exits cleanly (the sanitizer build checks for leaks). */
START_TEST(test_presence_redis_publish_at_shutdown) {
        start_all("redis-command-timeout=5s\n");
        _cleanup_free_ char *body = pidf("alice", "1", "open", "away"), *req = NULL;
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        struct sockaddr_in me = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&me, sizeof me), 0);
        socklen_t len = sizeof me;
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&me, &len), 0);
        ck_assert_int_ge(asprintf(&req,
                                  "PUBLISH sip:alice@example.org SIP/2.0\r\n"
                                  "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-shut-1\r\n"
                                  "Max-Forwards: 70\r\n"
                                  "From: <sip:alice@example.org>;tag=1\r\n"
                                  "To: <sip:alice@example.org>\r\n"
                                  "Call-ID: shutdown-publish@test\r\n"
                                  "CSeq: 1 PUBLISH\r\n"
                                  "Event: presence\r\nExpires: 600\r\n"
                                  "Content-Type: application/pidf+xml\r\n"
                                  "Content-Length: %zu\r\n\r\n%s",
                                  ntohs(me.sin_port), strlen(body), body),
                         0);
        tl_freeze(&redis.proc);
        struct sockaddr_in to = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)A.port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(sendto(fd, req, strlen(req), 0, (struct sockaddr *)&to, sizeof to),
                         (ssize_t)strlen(req));
        /* Bounded wait until A has taken the PUBLISH (count-publish), then stop A. */
        for (int i = 0; i < 50 && counter(&A, "count-publish") < 1; i++)
                tl_sip_run(20);
        ck_assert_int_eq(counter(&A, "count-publish"), 1);
        tl_daemon_done(&A.d);
        char buf[4096];
        struct timeval tv = {.tv_sec = 3};
        ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
        bool got_503 = false;
        for (int i = 0; i < 5 && !got_503; i++) {
                ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
                if (n <= 0)
                        break;
                buf[n] = 0;
                got_503 = strncmp(buf, "SIP/2.0 503 ", 12) == 0;
                if (got_503)
                        ck_assert_ptr_nonnull(strcasestr(buf, "\r\nRetry-After: 5"));
        }
        ck_assert_msg(got_503, "no 503 for the PUBLISH in flight");
        close(fd);
        ck_assert_int_eq(kill(redis.proc.pid, SIGCONT), 0);
        stop_all();
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("presence-redis");
        TCase *tc = tcase_create("shared");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_presence_redis_two_servers);
        tcase_add_test(tc, test_presence_redis_list_partial);
        tcase_add_test(tc, test_presence_redis_expiry);
        tcase_add_test(tc, test_presence_redis_down);
        tcase_add_test(tc, test_presence_redis_publish_at_shutdown);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run(suite());
}
