/* SPDX-License-Identifier: MIT */
/* Long-term presence with the devices' capabilities: a real redis-server, the built
 * sipfleet-proxy on the Redis registrar, and sipfleet-presence reading that registrar
 * ([registrar] redis-server-*). alice registers two devices with +org.linphone.specs through
 * the proxy; a subscriber to alice (or to her phone alias) gets the default tuple with the
 * merged capabilities as OMA service descriptions; bob, a user with no device, gets the tuple
 * without any; a third device registered later shows up in a later subscription; odd values
 * written straight into Redis (not JSON, wrong types, bad tokens, expired bindings, a key
 * that is not a hash) are skipped without harm; without [registrar] there are no
 * capabilities. */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sofia-sip/sip_header.h>

#include "macro.h"
#include "testlib-redis.h"
#include "testlib-sip.h"
#include "testlib.h"

static struct tl_redis redis;
static struct tl_proxy proxy;
static struct tl_daemon server;
static char server_uri[64];

static long long mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static char *password_file(void) {
        return tl_write_file("passwords", "version:1\n"
                                          "alice@example.org clrtxt:pw ; alice +33600000001\n"
                                          "bob@example.org clrtxt:pw ;\n"
                                          "dave@example.org clrtxt:pw ;\n"
                                          "erin@example.org clrtxt:pw ;\n");
}

static void start_presence(bool with_registrar) {
        int port = tl_free_port();
        _cleanup_free_ char *pw = password_file(), *conf = NULL, *registrar = NULL;
        if (with_registrar)
                ck_assert_int_ge(asprintf(&registrar,
                                          "[registrar]\nredis-server-domain=127.0.0.1\n"
                                          "redis-server-port=%d\n",
                                          redis.port),
                                 0);
        ck_assert_int_ge(asprintf(&conf,
                                  "log-level=debug\n"
                                  "transports=sip:127.0.0.1:%d\n"
                                  "[presence]\n"
                                  "long-term-enabled=true\n"
                                  "[accounts]\n"
                                  "file-path=%s\n"
                                  "%s",
                                  port, pw, strempty(registrar)),
                         0);
        tl_daemon_start(&server, "presence", conf);
        snprintf(server_uri, sizeof server_uri, "sip:127.0.0.1:%d;transport=tcp", port);
}

static long long counter(const char *name) {
        _cleanup_free_ char *path = NULL;
        ck_assert_int_ge(asprintf(&path, "presence/%s", name), 0);
        return tl_counter(server.sock, path);
}

/* One REGISTER over UDP to the proxy; its final status (0: none within 2 s). */
static int register_once(const char *user, int device, const char *specs) {
        _cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        struct sockaddr_in local = {.sin_family = AF_INET,
                                    .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&local, sizeof local), 0);
        socklen_t len = sizeof local;
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&local, &len), 0);
        static unsigned cseq = 1;
        unsigned n = cseq++;
        _cleanup_free_ char *req = NULL;
        ck_assert_int_ge(asprintf(&req,
                                  "REGISTER sip:example.org SIP/2.0\r\n"
                                  "Via: SIP/2.0/UDP 127.0.0.1:%u;branch=z9hG4bK-caps%u\r\n"
                                  "From: <sip:%s@example.org>;tag=t%u\r\n"
                                  "To: <sip:%s@example.org>\r\n"
                                  "Call-ID: caps-%s-%d\r\n"
                                  "CSeq: %u REGISTER\r\n"
                                  "Contact: <sip:%s@127.0.0.1:%d>;+sip.instance="
                                  "\"<urn:uuid:00000000-0000-0000-0000-%012d>\";"
                                  "+org.linphone.specs=\"%s\"\r\n"
                                  "Expires: 600\r\n"
                                  "Max-Forwards: 70\r\n"
                                  "Content-Length: 0\r\n\r\n",
                                  ntohs(local.sin_port), n, user, n, user, user, device, n, user,
                                  5000 + device, device, specs),
                         0);
        struct sockaddr_in to = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)proxy.port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(sendto(fd, req, strlen(req), 0, (struct sockaddr *)&to, sizeof to),
                         (ssize_t)strlen(req));
        long long end = mono_ms() + 2000;
        for (;;) {
                long long left = end - mono_ms();
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                if (left <= 0 || poll(&pfd, 1, (int)left) != 1)
                        return 0;
                char buf[8192];
                ssize_t got = recv(fd, buf, sizeof buf - 1, 0);
                if (got <= 0)
                        return 0;
                buf[got] = 0;
                int status = strncmp(buf, "SIP/2.0 ", 8) == 0 ? atoi(buf + 8) : 0;
                if (status >= 200)
                        return status;
        }
}

/* REGISTER of one device of user@example.org through the proxy, until it gets 200 (the proxy
 * connects to Redis in the background). */
static void register_device(const char *user, int device, const char *specs) {
        long long deadline = mono_ms() + 5000;
        int status = 0;
        while (mono_ms() < deadline) {
                status = register_once(user, device, specs);
                if (status == 200)
                        return;
                nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
        }
        ck_abort_msg("REGISTER of %s device %d: %d", user, device, status);
}

static char *body_of(msg_t *m) {
        sip_t *sip = sip_object(m);
        if (!sip->sip_payload)
                return strdup("");
        return strndup(sip->sip_payload->pl_data, sip->sip_payload->pl_len);
}

/* SUBSCRIBE to ruri: the body of the first NOTIFY, malloc'd. */
static char *first_notify(struct tl_ua *ua, const char *ruri) {
        struct tl_dialog *d = tl_dialog_new(ua, "sip:owner@example.org", ruri);
        ck_assert_int_eq(tl_ua_send(d, "SUBSCRIBE", ruri,
                                    "Event: presence\r\nExpires: 600\r\n"
                                    "Accept: application/pidf+xml",
                                    NULL, NULL),
                         200);
        msg_t *m = tl_ua_next_request(ua, 5000);
        ck_assert_msg(m != NULL, "no NOTIFY for %s", ruri);
        ck_assert_str_eq(sip_object(m)->sip_request->rq_method_name, "NOTIFY");
        char *b = body_of(m);
        msg_destroy(m);
        tl_dialog_free(d);
        return b;
}

/* The capabilities of the default tuple of a NOTIFY body, "name/version,name" in document
 * order ("" for none); the tuple must be there. */
static char *capabilities_of(const char *body) {
        ck_assert_msg(strstr(body, "<tuple id=\"long-term\">"), "no default tuple: %s", body);
        ck_assert_ptr_nonnull(strstr(body, "<basic>open</basic>"));
        char *out = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&out, &len);
        const char *p = body;
        bool first = true;
        while ((p = strstr(p, "<oma-pres:service-description>"))) {
                const char *end = strstr(p, "</oma-pres:service-description>");
                ck_assert_ptr_nonnull(end);
                const char *id = strstr(p, "<oma-pres:service-id>");
                ck_assert_msg(id && id < end, "description without service-id: %s", body);
                id += strlen("<oma-pres:service-id>");
                fprintf(f, "%s%.*s", first ? "" : ",", (int)strcspn(id, "<"), id);
                const char *ver = strstr(p, "<oma-pres:version>");
                if (ver && ver < end) {
                        ver += strlen("<oma-pres:version>");
                        fprintf(f, "/%.*s", (int)strcspn(ver, "<"), ver);
                }
                first = false;
                p = end;
        }
        fclose(f);
        if (strstr(body, "<oma-pres:service-description>"))
                ck_assert_msg(strstr(body, "xmlns:oma-pres=\"urn:oma:xml:prs:pidf:oma-pres\""),
                              "namespace not declared: %s", body);
        return out;
}

static void check_capabilities(struct tl_ua *ua, const char *ruri, const char *expected) {
        _cleanup_free_ char *n = first_notify(ua, ruri);
        _cleanup_free_ char *caps = capabilities_of(n);
        ck_assert_msg(streq(caps, expected), "%s: capabilities '%s', expected '%s'\n%s", ruri, caps,
                      expected, n);
}

START_TEST(test_presence_capabilities_from_registrar) {
        tl_redis_start(&redis, NULL);
        _cleanup_free_ char *proxy_conf = NULL;
        ck_assert_int_ge(asprintf(&proxy_conf,
                                  "[module::NatHelper]\n"
                                  "enabled=false\n"
                                  "[module::Registrar]\n"
                                  "reg-domains=example.org\n"
                                  "db-implementation=redis\n"
                                  "redis-server-port=%d\n",
                                  redis.port),
                         0);
        tl_proxy_start(&proxy, proxy_conf);

        register_device("alice", 1, "groupchat/1.1,lime");
        register_device("alice", 2, "groupchat/1.2,ephemeral,conference/1.0");
        _cleanup_free_ char *fields = tl_redis_cmd(&redis, "HKEYS fs:alice@example.org");
        ck_assert_msg(
                fields && strstr(fields, "c:\"<urn:uuid:00000000-0000-0000-0000-000000000001>") &&
                        strstr(fields, "c:\"<urn:uuid:00000000-0000-0000-0000-000000000002>"),
                "bindings in Redis: %s", strempty(fields));

        /* Odd values for dave: not JSON, params not a string, a binding that expired, bad
         * tokens around one good one; erin's key is not a hash at all. */
        _cleanup_free_ char *r1 = tl_redis_cmd(
                &redis, "HSET fs:dave@example.org v x c:a %s c:b %s c:c %s c:d %s c:e %s",
                "not json {", "{\"contact\":\"sip:d@h\",\"params\":5}",
                "{\"contact\":\"sip:d@h\",\"params\":\"+org.linphone.specs=old/9\","
                "\"expires-at\":1000}",
                "{\"contact\":\"sip:d@h\",\"params\":\"x=1;+ORG.LINPHONE.SPECS=\\\" a b,<x>,"
                "ok/1.0 ,/,,bad/,/2,v/1/2,"
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\\\";y\","
                "\"expires-at\":99999999999999}",
                "[1,2,3]");
        ck_assert_ptr_nonnull(r1);
        _cleanup_free_ char *r2 = tl_redis_cmd(&redis, "SET fs:erin@example.org just-a-string");
        ck_assert_ptr_nonnull(r2);

        start_presence(true);
        struct tl_ua *ua = tl_ua_new();
        tl_ua_set_proxy(ua, server_uri);

        /* Each name once, the highest version of any device, sorted by name. */
        check_capabilities(ua, "sip:alice@example.org",
                           "conference/1.0,ephemeral,groupchat/1.2,lime");
        check_capabilities(ua, "sip:+33600000001@example.org;user=phone",
                           "conference/1.0,ephemeral,groupchat/1.2,lime");
        check_capabilities(ua, "sip:bob@example.org", ""); /* a user with no device */
        check_capabilities(ua, "sip:dave@example.org", "ok/1.0");
        check_capabilities(ua, "sip:erin@example.org", ""); /* WRONGTYPE: read failed */
        {
                /* A non-user: unknown, no tuple at all. */
                _cleanup_free_ char *n = first_notify(ua, "sip:nobody@example.org");
                ck_assert_msg(!strstr(n, "<tuple"), "%s", n);
        }
        ck_assert_int_ge(counter("count-devices-read"), 5);
        ck_assert_int_ge(counter("count-devices-failed"), 1);

        json_t *j = tl_ctl(server.sock, "PRESENCE_PRESENTITIES alice@example.org");
        json_t *pr = json_array_get(json_object_get(j, "presentities"), 0);
        ck_assert_str_eq(json_string_value(json_object_get(pr, "capabilities")),
                         "conference/1.0,ephemeral,groupchat/1.2,lime");
        json_decref(j);

        /* bob registers a device; a subscription more than 5 s after the last read of his
         * devices reads them again. */
        register_device("bob", 3, "lime");
        tl_sip_run(5200);
        check_capabilities(ua, "sip:bob@example.org", "lime");
        {
                /* The earlier subscription to bob is told of the change too. */
                msg_t *m = tl_ua_next_request(ua, 5000);
                ck_assert_msg(m != NULL, "no NOTIFY of bob's change to the first watcher");
                _cleanup_free_ char *b = body_of(m);
                msg_destroy(m);
                ck_assert_msg(strstr(b, "entity=\"sip:bob@example.org\""), "%s", b);
                _cleanup_free_ char *caps = capabilities_of(b);
                ck_assert_str_eq(caps, "lime");
                ck_assert_ptr_null(tl_ua_next_request(ua, 300));
        }

        /* The presence server still answers after all that. */
        check_capabilities(ua, "sip:alice@example.org",
                           "conference/1.0,ephemeral,groupchat/1.2,lime");
        tl_daemon_done(&server);

        /* Without [registrar]: the default tuple without capabilities. */
        tl_ua_free(ua); /* with the final NOTIFYs of the first server's shutdown */
        start_presence(false);
        ua = tl_ua_new();
        tl_ua_set_proxy(ua, server_uri);
        check_capabilities(ua, "sip:alice@example.org", "");
        ck_assert_int_eq(counter("count-devices-read"), 0);
        tl_daemon_done(&server);

        tl_ua_free(ua);
        tl_proxy_done(&proxy);
        tl_redis_stop(&redis);
}
END_TEST

/* The registrar's Redis is down: users keep their default tuple (no capabilities yet), the
 * NOTIFY is not held, and the server stops cleanly. */
START_TEST(test_presence_capabilities_registrar_down) {
        tl_redis_start(&redis, NULL);
        int port = redis.port;
        tl_redis_stop(&redis);
        redis.port = port;
        start_presence(true);
        struct tl_ua *ua = tl_ua_new();
        tl_ua_set_proxy(ua, server_uri);
        long long t0 = mono_ms();
        check_capabilities(ua, "sip:alice@example.org", "");
        ck_assert_int_lt(mono_ms() - t0, 1500); /* long-term-max-wait is 2s: not held */
        ck_assert_int_ge(counter("count-devices-failed"), 1);
        tl_ua_free(ua);
        tl_daemon_done(&server);
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("presence-caps");
        TCase *tc = tcase_create("caps");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_presence_capabilities_from_registrar);
        tcase_add_test(tc, test_presence_capabilities_registrar_down);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run(suite());
}
