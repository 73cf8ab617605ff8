/* SPDX-License-Identifier: MIT */
/* The whole push flow with real daemons: sipfleet-proxy (PushNotification + fork-late), the
 * built sipfleet-pushd (HTTP intake) and an HTTP/2 server playing APNs
 * (test/servers/h2-push-server.py). bob's device registers with RFC 8599 push parameters and
 * goes silent (its socket is closed); a call or a message for him makes the proxy push it
 * through pushd; the APNs server receives the push; the device comes back, registers, and gets
 * the INVITE (the call is established, the caller saw "110 Push sent") or the MESSAGE. A
 * device that answers in time is not pushed; push parameters do not leave the proxy. */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "sipua.h"
#include "testlib-h2.h"
#include "testlib-jwt.h"
#include "testlib-redis.h"
#include "testlib.h"

#define BEARER "proxy-to-pushd-secret"
#define TEAM   "TEAMID6789"
#define BUNDLE "org.example.phone"
#define REMOTE "aaaa000000000000000000000000000000000000000000000000000000000001"
#define VOIP   "bbbb000000000000000000000000000000000000000000000000000000000002"

static struct tl_proxy proxy;
static struct tl_daemon pushd;
static struct tl_h2_server apns;
static struct tl_redis redis;
static struct tl_h2_server fcm; /* started when with_fcm */
static bool with_fcm;
static char *fcm_key;           /* the service account's private key (PEM file) */

#define FCM_PROJECT "sipfleet-test"
#define FCM_NUMBER  "123456789012"
#define FCM_TOKEN   "fcm-registration-token-of-bobs-phone:APA91b-0123456789"

/* redis_port > 0: jobs go through pushd's Redis Stream and dead tokens come back on its
 * channel; else through pushd's HTTP intake. */
static void start_with(const char *push_extra, const char *apns_scenario, int redis_port) {
        tl_h2_server_start(&apns, "apns", "apns", NULL, apns_scenario);
        _cleanup_free_ char *key = tl_write_ec_key("AuthKey.p8");
        int intake = tl_free_port();
        _cleanup_free_ char *pconf = NULL, *conf = NULL, *redis_conf = NULL, *proxy_redis = NULL;
        _cleanup_free_ char *fcm_conf = NULL, *sa = NULL;
        if (with_fcm) {
                tl_h2_server_start(&fcm, "fcm", "fcm", NULL, NULL);
                sa = tl_h2_write_service_account("sa.json", FCM_PROJECT, fcm.port, &fcm_key);
                ck_assert_int_ge(asprintf(&fcm_conf,
                                          "[fcm]\n"
                                          "service-account-files=%s\n"
                                          "project-aliases=" FCM_NUMBER "=" FCM_PROJECT "\n"
                                          "url=https://127.0.0.1:%d\n",
                                          sa, fcm.port),
                                 0);
        }
        if (redis_port > 0) {
                ck_assert_int_ge(asprintf(&redis_conf,
                                          "[redis]\nserver=127.0.0.1:%d\nblock-time=500ms\n",
                                          redis_port),
                                 0);
                ck_assert_int_ge(asprintf(&proxy_redis,
                                          "redis-server-domain=127.0.0.1\n"
                                          "redis-server-port=%d\n",
                                          redis_port),
                                 0);
        }
        ck_assert_int_ge(asprintf(&pconf,
                                  "log-level=info\n"
                                  "[pushd]\n"
                                  "ca-file=%s/cafile.pem\n"
                                  "[http-intake]\n"
                                  "listen=127.0.0.1:%d\n"
                                  "bearer-token=" BEARER "\n"
                                  "%s"
                                  "[apns]\n"
                                  "production-url=https://127.0.0.1:%d\n"
                                  "sandbox-url=https://127.0.0.1:%d/sandbox\n"
                                  "key-file=%s\n"
                                  "key-id=KEYID12345\n"
                                  "team-id=" TEAM "\n"
                                  "%s",
                                  tl_h2_tls_dir(), intake, strempty(redis_conf), apns.port, apns.port, key,
                                  strempty(fcm_conf)),
                         0);
        tl_daemon_start(&pushd, "pushd", pconf);
        ck_assert_int_eq(tl_wait_tcp(intake, 10000), 0);
        ck_assert_int_ge(asprintf(&conf,
                                  "log-level=debug\n"
                                  "[module::Registrar]\n"
                                  "db-implementation=internal\n"
                                  "[module::Router]\n"
                                  "fork-late=true\n"
                                  "call-fork-timeout=30s\n"
                                  "message-accept-timeout=2s\n"
                                  "[module::PushNotification]\n"
                                  "enabled=true\n"
                                  "pushd-url=http://127.0.0.1:%d/v1/push\n"
                                  "pushd-bearer-token=" BEARER "\n"
                                  "%s%s",
                                  intake, strempty(proxy_redis), push_extra ? push_extra : ""),
                         0);
        tl_proxy_start(&proxy, conf);
}

static void start_all(const char *push_extra) {
        start_with(push_extra, NULL, 0);
}

static void stop_all(void) {
        tl_proxy_done(&proxy);
        tl_daemon_done(&pushd);
        tl_h2_server_stop(&apns);
        if (with_fcm) {
                tl_h2_server_stop(&fcm);
                free(fcm_key);
                fcm_key = NULL;
                with_fcm = false;
        }
}

static void open_bob(struct tl_ua *bob) {
        tl_ua_open(bob, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000b7", proxy.port);
        snprintf(bob->contact_params, sizeof bob->contact_params,
                 ";pn-provider=apns;pn-prid=" REMOTE ":remote&" VOIP ":voip;pn-param=" TEAM
                 "." BUNDLE ".remote&voip");
}

/* alice calls bob, whose device is asleep: VoIP push, then the call on the new registration. */
START_TEST(test_push_call_wakes_device) {
        struct tl_ua bob;
        start_all(NULL);
        open_bob(&bob);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        json_t *got = tl_ctl(proxy.sock, "REGISTRAR_GET sip:bob@localhost");
        _cleanup_free_ char *dump = json_dumps(got, 0);
        ck_assert_msg(strstr(dump, "pn-prid"), "push parameters not stored: %s", dump);
        json_decref(got);
        tl_ua_close(&bob); /* asleep: the phone's connection is gone */

        char remote[64];
        snprintf(remote, sizeof remote, "127.0.0.1:%d", proxy.port);
        const char *args[] = {remote, "-m", "1", "-s", "bob", NULL};
        struct tl_proc caller;
        tl_sipp_spawn(&caller, "caller", "test/sipp/uac-call-push.xml", 0, args);

        /* The INVITE fails on the closed port: pushed at once, not after `timeout`. */
        json_t *recs = tl_h2_server_wait(&apns, 1, 4000);
        json_t *rec = json_array_get(recs, 0);
        ck_assert_str_eq(json_string_value(json_object_get(rec, "method")), "POST");
        ck_assert_str_eq(json_string_value(json_object_get(rec, "path")), "/3/device/" VOIP);
        ck_assert_str_eq(tl_h2_header(rec, "apns-topic"), BUNDLE ".voip");
        ck_assert_str_eq(tl_h2_header(rec, "apns-push-type"), "voip");
        json_t *body = tl_h2_body(rec);
        ck_assert_str_eq(json_string_value(json_object_get(body, "from-uri")),
                         "sip:caller@localhost");
        ck_assert_ptr_nonnull(json_string_value(json_object_get(body, "call-id")));
        json_decref(body);
        json_decref(recs);

        /* The phone wakes up, registers from a new address and gets the call. */
        tl_ua_reopen(&bob);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        _cleanup_free_ char *invite = tl_ua_recv_request(&bob, 5000);
        ck_assert_msg(invite && strncmp(invite, "INVITE ", 7) == 0, "no INVITE: %s",
                      strna(invite));
        ck_assert_msg(!strstr(invite, "pn-"), "push parameters left the proxy:\n%s", invite);
        tl_ua_reply(&bob, invite, 180, false);
        tl_ua_reply(&bob, invite, 200, true);
        _cleanup_free_ char *ack = tl_ua_recv_request(&bob, 5000);
        ck_assert_msg(ack && strncmp(ack, "ACK ", 4) == 0, "no ACK: %s", strna(ack));
        _cleanup_free_ char *bye = tl_ua_recv_request(&bob, 5000);
        ck_assert_msg(bye && strncmp(bye, "BYE ", 4) == 0, "no BYE: %s", strna(bye));
        tl_ua_reply(&bob, bye, 200, false);
        ck_assert_int_eq(tl_sipp_wait(&caller, "caller", 10000), 0);

        /* One push only: the re-sent INVITE to the woken device did not push again. */
        recs = tl_h2_server_records(&apns);
        ck_assert_uint_eq(json_array_size(recs), 1);
        json_decref(recs);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::PushNotification/count-pn-sent"), 1);
        tl_ua_close(&bob);
        stop_all();
}
END_TEST

/* A MESSAGE for the sleeping device: an alert push, 202 to alice, the message on waking. */
START_TEST(test_push_message_wakes_device) {
        struct tl_ua bob, alice;
        start_all(NULL);
        open_bob(&bob);
        tl_ua_open(&alice, "alice", NULL, proxy.port);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        tl_ua_close(&bob);

        ck_assert_int_eq(tl_ua_message(&alice, "bob", NULL, "wake up", NULL, NULL, 0), 202);
        json_t *recs = tl_h2_server_wait(&apns, 1, 4000);
        json_t *rec = json_array_get(recs, 0);
        ck_assert_str_eq(json_string_value(json_object_get(rec, "path")), "/3/device/" REMOTE);
        ck_assert_str_eq(tl_h2_header(rec, "apns-topic"), BUNDLE);
        ck_assert_str_eq(tl_h2_header(rec, "apns-push-type"), "alert");
        json_t *body = tl_h2_body(rec);
        ck_assert_int_eq(json_integer_value(json_object_get(
                                 json_object_get(body, "aps"), "mutable-content")),
                         1);
        json_decref(body);
        json_decref(recs);

        tl_ua_reopen(&bob);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        _cleanup_free_ char *msg = tl_ua_recv_request(&bob, 5000);
        ck_assert_msg(msg && strncmp(msg, "MESSAGE ", 8) == 0, "no MESSAGE: %s", strna(msg));
        _cleanup_free_ char *text = tl_sip_body(msg);
        ck_assert_str_eq(text, "wake up");
        tl_ua_reply(&bob, msg, 200, false);
        tl_ua_close(&alice);
        tl_ua_close(&bob);
        stop_all();
}
END_TEST

/* An awake device answers before `timeout`: no push. */
START_TEST(test_push_not_sent_when_device_answers) {
        struct tl_ua bob, alice;
        start_all("timeout=2s\n");
        open_bob(&bob);
        tl_ua_open(&alice, "alice", NULL, proxy.port);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                _cleanup_free_ char *req = tl_ua_recv_request(&bob, 5000);
                if (req)
                        tl_ua_reply(&bob, req, 200, false);
                _exit(req && !strstr(req, "pn-") ? 0 : 1);
        }
        ck_assert_int_eq(tl_ua_message(&alice, "bob", NULL, "awake", NULL, NULL, 0), 200);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "bob did not get the message, or with push parameters");
        usleep(2500 * 1000); /* past `timeout` */
        json_t *recs = tl_h2_server_records(&apns);
        ck_assert_uint_eq(json_array_size(recs), 0);
        json_decref(recs);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::PushNotification/count-pn-cancelled"), 1);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::PushNotification/count-pn-sent"), 0);
        tl_ua_close(&alice);
        tl_ua_close(&bob);
        stop_all();
}
END_TEST

static void open_bob_fcm(struct tl_ua *bob, const char *project) {
        tl_ua_open(bob, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000f5", proxy.port);
        snprintf(bob->contact_params, sizeof bob->contact_params,
                 ";pn-provider=fcm;pn-prid=" FCM_TOKEN ";pn-param=%s", project);
}

/* The FCM server's records: the OAuth2 token request (its RS256 assertion verified with the
 * service account's key) then the push, returned (caller decref) after its common checks:
 * path with the project, the access token as bearer, a data message of high priority for
 * bob's token. */
static json_t *fcm_push_checked(const char *type) {
        json_t *recs = tl_h2_server_wait(&fcm, 2, 6000);
        ck_assert_uint_eq(json_array_size(recs), 2);
        json_t *tok = json_array_get(recs, 0);
        ck_assert_str_eq(json_string_value(json_object_get(tok, "path")), "/token");
        const char *form = json_string_value(json_object_get(tok, "body"));
        const char *a = form ? strstr(form, "&assertion=") : NULL;
        ck_assert_msg(a, "token request: %s", strna(form));
        json_t *h, *c;
        ck_assert_msg(tl_jwt_verify(a + 11, fcm_key, &h, &c), "RS256 assertion invalid");
        ck_assert_str_eq(json_string_value(json_object_get(c, "scope")),
                         "https://www.googleapis.com/auth/firebase.messaging");
        json_decref(h);
        json_decref(c);

        json_t *rec = json_array_get(recs, 1);
        ck_assert_str_eq(json_string_value(json_object_get(rec, "method")), "POST");
        ck_assert_str_eq(json_string_value(json_object_get(rec, "path")),
                         "/v1/projects/" FCM_PROJECT "/messages:send");
        ck_assert_str_eq(tl_h2_header(rec, "authorization"), "Bearer access-1");
        ck_assert_str_eq(tl_h2_header(rec, "content-type"), "application/json");
        json_t *body = tl_h2_body(rec), *m = json_object_get(body, "message");
        ck_assert_str_eq(json_string_value(json_object_get(m, "token")), FCM_TOKEN);
        ck_assert_ptr_null(json_object_get(m, "notification")); /* data only */
        json_t *android = json_object_get(m, "android");
        ck_assert_str_eq(json_string_value(json_object_get(android, "priority")), "high");
        json_t *data = json_object_get(m, "data");
        ck_assert_str_eq(json_string_value(json_object_get(data, "type")), type);
        ck_assert_str_eq(json_string_value(json_object_get(data, "from-uri")),
                         streq(type, "call") ? "sip:caller@localhost" : "sip:alice@localhost");
        ck_assert_ptr_nonnull(json_string_value(json_object_get(data, "call-id")));
        json_incref(data);
        json_decref(body);
        json_decref(recs);
        return data;
}

/* An Android phone (FCM, pn-param = the project id) asleep: a data push through FCM v1 with
 * an OAuth2 access token, then the call on its new registration. */
START_TEST(test_push_fcm_call_wakes_device) {
        struct tl_ua bob;
        with_fcm = true;
        start_all(NULL);
        open_bob_fcm(&bob, FCM_PROJECT);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        json_t *got = tl_ctl(proxy.sock, "REGISTRAR_GET sip:bob@localhost");
        _cleanup_free_ char *dump = json_dumps(got, 0);
        ck_assert_msg(strstr(dump, "pn-provider=fcm"), "push parameters not stored: %s", dump);
        json_decref(got);
        tl_ua_close(&bob);

        char remote[64];
        snprintf(remote, sizeof remote, "127.0.0.1:%d", proxy.port);
        const char *args[] = {remote, "-m", "1", "-s", "bob", NULL};
        struct tl_proc caller;
        tl_sipp_spawn(&caller, "caller", "test/sipp/uac-call-push.xml", 0, args);

        json_t *data = fcm_push_checked("call");
        json_decref(data);
        json_t *none = tl_h2_server_records(&apns);
        ck_assert_uint_eq(json_array_size(none), 0);
        json_decref(none);

        tl_ua_reopen(&bob);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        _cleanup_free_ char *invite = tl_ua_recv_request(&bob, 5000);
        ck_assert_msg(invite && strncmp(invite, "INVITE ", 7) == 0, "no INVITE: %s",
                      strna(invite));
        ck_assert_msg(!strstr(invite, "pn-"), "push parameters left the proxy:\n%s", invite);
        tl_ua_reply(&bob, invite, 180, false);
        tl_ua_reply(&bob, invite, 200, true);
        _cleanup_free_ char *ack = tl_ua_recv_request(&bob, 5000);
        ck_assert_msg(ack && strncmp(ack, "ACK ", 4) == 0, "no ACK: %s", strna(ack));
        _cleanup_free_ char *bye = tl_ua_recv_request(&bob, 5000);
        ck_assert_msg(bye && strncmp(bye, "BYE ", 4) == 0, "no BYE: %s", strna(bye));
        tl_ua_reply(&bob, bye, 200, false);
        ck_assert_int_eq(tl_sipp_wait(&caller, "caller", 10000), 0);

        json_t *recs = tl_h2_server_records(&fcm);
        ck_assert_uint_eq(json_array_size(recs), 2); /* one token request, one push */
        json_decref(recs);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::PushNotification/count-pn-sent"), 1);
        tl_ua_close(&bob);
        stop_all();
}
END_TEST

/* A MESSAGE for the Android phone, whose pn-param is the project number (an alias of the
 * project in pushd): a data push of type message, 202 to alice, the message on waking. */
START_TEST(test_push_fcm_message_wakes_device) {
        struct tl_ua bob, alice;
        with_fcm = true;
        start_all(NULL);
        open_bob_fcm(&bob, FCM_NUMBER);
        tl_ua_open(&alice, "alice", NULL, proxy.port);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        tl_ua_close(&bob);

        ck_assert_int_eq(tl_ua_message(&alice, "bob", NULL, "wake up, android", NULL, NULL, 0),
                         202);
        json_t *data = fcm_push_checked("message");
        json_decref(data);

        tl_ua_reopen(&bob);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        _cleanup_free_ char *msg = tl_ua_recv_request(&bob, 5000);
        ck_assert_msg(msg && strncmp(msg, "MESSAGE ", 8) == 0, "no MESSAGE: %s", strna(msg));
        _cleanup_free_ char *text = tl_sip_body(msg);
        ck_assert_str_eq(text, "wake up, android");
        ck_assert_msg(!strstr(msg, "pn-"), "push parameters left the proxy:\n%s", msg);
        tl_ua_reply(&bob, msg, 200, false);
        tl_ua_close(&alice);
        tl_ua_close(&bob);
        stop_all();
}
END_TEST

/* alice gives up while bob's iPhone is being woken by a VoIP push: she gets 487 at once;
 * bob's phone, once registered, gets the INVITE and then a CANCEL for it (with her Reason), so
 * that the CallKit call PushKit made it report ends. */
static void call_then_cancel(struct tl_ua *bob) {
        open_bob(bob);
        ck_assert_int_eq(tl_ua_register(bob, 3600), 200);
        tl_ua_close(bob);
        char remote[64];
        snprintf(remote, sizeof remote, "127.0.0.1:%d", proxy.port);
        const char *args[] = {remote, "-m", "1", "-s", "bob", NULL};
        struct tl_proc caller;
        tl_sipp_spawn(&caller, "caller", "test/sipp/uac-cancel-push.xml", 0, args);
        ck_assert_int_eq(tl_sipp_wait(&caller, "caller", 10000), 0); /* 110, CANCEL, 487 */
        json_t *recs = tl_h2_server_wait(&apns, 1, 4000);
        ck_assert_str_eq(tl_h2_header(json_array_get(recs, 0), "apns-push-type"), "voip");
        json_decref(recs);
}

START_TEST(test_push_voip_cancelled_call_reaches_device) {
        struct tl_ua bob;
        start_all(NULL);
        call_then_cancel(&bob);
        /* The call ended, but the fork waits for the woken phone. */
        ck_assert_int_eq(tl_counter(proxy.sock, "module::Router/live-forks"), 1);

        tl_ua_reopen(&bob);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        _cleanup_free_ char *invite = tl_ua_recv_request(&bob, 5000);
        ck_assert_msg(invite && strncmp(invite, "INVITE ", 7) == 0, "no INVITE: %s",
                      strna(invite));
        ck_assert_msg(!strstr(invite, "pn-"), "push parameters left the proxy:\n%s", invite);
        _cleanup_free_ char *call_id = tl_sip_header(invite, "Call-ID");
        tl_ua_reply(&bob, invite, 180, false); /* the CANCEL may follow a provisional only */
        _cleanup_free_ char *cancel = tl_ua_recv_request(&bob, 5000);
        ck_assert_msg(cancel && strncmp(cancel, "CANCEL ", 7) == 0, "no CANCEL: %s",
                      strna(cancel));
        _cleanup_free_ char *cancel_call_id = tl_sip_header(cancel, "Call-ID");
        ck_assert_str_eq(cancel_call_id, call_id);
        _cleanup_free_ char *reason = tl_sip_header(cancel, "Reason");
        ck_assert_msg(reason && strstr(reason, "cause=480"), "CANCEL without alice's Reason: %s",
                      strna(reason));
        tl_ua_reply(&bob, cancel, 200, false);
        tl_ua_reply(&bob, invite, 487, false);
        /* Nothing more (the ACK of the 487 is absorbed), and the fork is gone. */
        _cleanup_free_ char *more = tl_ua_recv_request(&bob, 1000);
        ck_assert_msg(!more, "unexpected request: %s", strna(more));
        ck_assert_int_eq(tl_counter(proxy.sock, "module::Router/live-forks"), 0);
        /* Still one push: the INVITE to the woken phone did not push it again. */
        json_t *recs = tl_h2_server_records(&apns);
        ck_assert_uint_eq(json_array_size(recs), 1);
        json_decref(recs);
        tl_ua_close(&bob);
        stop_all();
}
END_TEST

/* The same when another device of bob answers: his desk phone takes the call while his iPhone
 * is being woken; the iPhone, once registered, gets the INVITE and a CANCEL saying the call was
 * completed elsewhere. */
START_TEST(test_push_voip_answered_elsewhere_reaches_device) {
        struct tl_ua bob, desk;
        start_all(NULL);
        open_bob(&bob);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        tl_ua_close(&bob);
        tl_ua_open(&desk, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000d5", proxy.port);
        ck_assert_int_eq(tl_ua_register(&desk, 3600), 200);

        char remote[64];
        snprintf(remote, sizeof remote, "127.0.0.1:%d", proxy.port);
        const char *args[] = {remote, "-m", "1", "-s", "bob", NULL};
        struct tl_proc caller;
        tl_sipp_spawn(&caller, "caller", "test/sipp/uac-call-push.xml", 0, args);
        _cleanup_free_ char *invite = tl_ua_recv_request(&desk, 5000);
        ck_assert_msg(invite && strncmp(invite, "INVITE ", 7) == 0, "no INVITE at the desk: %s",
                      strna(invite));
        json_decref(tl_h2_server_wait(&apns, 1, 4000)); /* the iPhone was pushed (110 sent) */
        tl_ua_reply(&desk, invite, 180, false);
        tl_ua_reply(&desk, invite, 200, true);
        _cleanup_free_ char *ack = tl_ua_recv_request(&desk, 5000);
        ck_assert_msg(ack && strncmp(ack, "ACK ", 4) == 0, "no ACK: %s", strna(ack));
        _cleanup_free_ char *bye = tl_ua_recv_request(&desk, 5000);
        ck_assert_msg(bye && strncmp(bye, "BYE ", 4) == 0, "no BYE: %s", strna(bye));
        tl_ua_reply(&desk, bye, 200, false);
        ck_assert_int_eq(tl_sipp_wait(&caller, "caller", 10000), 0);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::Router/live-forks"), 1);

        tl_ua_reopen(&bob);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        _cleanup_free_ char *late = tl_ua_recv_request(&bob, 5000);
        ck_assert_msg(late && strncmp(late, "INVITE ", 7) == 0, "no INVITE at the iPhone: %s",
                      strna(late));
        tl_ua_reply(&bob, late, 180, false);
        _cleanup_free_ char *cancel = tl_ua_recv_request(&bob, 5000);
        ck_assert_msg(cancel && strncmp(cancel, "CANCEL ", 7) == 0, "no CANCEL: %s",
                      strna(cancel));
        _cleanup_free_ char *reason = tl_sip_header(cancel, "Reason");
        ck_assert_msg(reason && strstr(reason, "cause=200") &&
                              strstr(reason, "Call completed elsewhere"),
                      "Reason: %s", strna(reason));
        tl_ua_reply(&bob, cancel, 200, false);
        tl_ua_reply(&bob, late, 487, false);
        for (int i = 0; i < 40 && tl_counter(proxy.sock, "module::Router/live-forks") > 0; i++)
                usleep(50 * 1000);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::Router/live-forks"), 0);
        /* The desk phone saw nothing more. */
        _cleanup_free_ char *more = tl_ua_recv_request(&desk, 300);
        ck_assert_msg(!more, "unexpected request at the desk: %s", strna(more));
        tl_ua_close(&desk);
        tl_ua_close(&bob);
        stop_all();
}
END_TEST

/* The wait is bounded: a phone registering after voip-cancel-timeout gets nothing. */
START_TEST(test_push_voip_cancelled_call_wait_bounded) {
        struct tl_ua bob;
        start_all("[module::Router]\nvoip-cancel-timeout=1s\n");
        call_then_cancel(&bob);
        for (int i = 0; i < 60 && tl_counter(proxy.sock, "module::Router/live-forks") > 0; i++)
                usleep(50 * 1000);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::Router/live-forks"), 0);
        tl_ua_reopen(&bob);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        _cleanup_free_ char *req = tl_ua_recv_request(&bob, 1500);
        ck_assert_msg(!req, "request after the wait ended: %s", strna(req));
        _cleanup_free_ char *log = tl_log(&proxy.proc);
        ck_assert_msg(strstr(log, "voip-cancel-timeout: ending the call fork"), "no log of the end");
        tl_ua_close(&bob);
        stop_all();
}
END_TEST

/* Only VoIP-pushed devices are waited for: an Android phone (FCM data push) woken for a call
 * that was cancelled meanwhile gets nothing, and the fork ends with the 487. */
START_TEST(test_push_cancelled_call_not_kept_for_fcm) {
        struct tl_ua bob;
        with_fcm = true;
        start_all(NULL);
        open_bob_fcm(&bob, FCM_PROJECT);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        tl_ua_close(&bob);
        char remote[64];
        snprintf(remote, sizeof remote, "127.0.0.1:%d", proxy.port);
        const char *args[] = {remote, "-m", "1", "-s", "bob", NULL};
        struct tl_proc caller;
        tl_sipp_spawn(&caller, "caller", "test/sipp/uac-cancel-push.xml", 0, args);
        ck_assert_int_eq(tl_sipp_wait(&caller, "caller", 10000), 0);
        json_decref(fcm_push_checked("call"));
        ck_assert_int_eq(tl_counter(proxy.sock, "module::Router/live-forks"), 0);
        tl_ua_reopen(&bob);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        _cleanup_free_ char *req = tl_ua_recv_request(&bob, 1000);
        ck_assert_msg(!req, "request for an ended call: %s", strna(req));
        tl_ua_close(&bob);
        stop_all();
}
END_TEST

/* The binding of bob's device whose contact has text in it, as its JSON text (malloc'd), or
 * NULL. */
static char *bob_binding_with(const char *text) {
        json_t *j = tl_ctl(proxy.sock, "REGISTRAR_GET sip:bob@localhost");
        json_t *c;
        size_t i;
        char *found = NULL;
        json_array_foreach(json_object_get(j, "contacts"), i, c) {
                char *dump = json_dumps(c, 0);
                if (dump && strstr(dump, text)) {
                        found = dump;
                        break;
                }
                free(dump);
        }
        json_decref(j);
        return found;
}

/* liblinphone (test/ua/lp-ua) registers with its push notification configuration (RFC 8599
 * parameters for an iPhone: remote and VoIP tokens): the proxy stores the pn-* parameters of its
 * Contact; once the client is gone (killed: no unregistration, its port closed), a call to bob
 * makes a VoIP push with its token at the APNs server. */
START_TEST(test_push_linphone_registers_push_params) {
        start_all(NULL);
        _cleanup_free_ char *bin = tl_build_path("test/ua/lp-ua");
        char proxy_uri[64];
        snprintf(proxy_uri, sizeof proxy_uri, "sip:127.0.0.1:%d;transport=udp", proxy.port);
        char *argv[] = {bin, "--identity", "sip:bob@localhost", "--proxy", proxy_uri,
                        "--expires", "3600", "--max-time", "30", "--pn-provider", "apns",
                        "--pn-prid", REMOTE ":remote&" VOIP ":voip", "--pn-param",
                        TEAM "." BUNDLE ".remote&voip", NULL};
        struct tl_proc ua;
        /* Its private directory goes inside ours. */
        _cleanup_free_ char *tmpdir = getenv("TMPDIR") ? strdup(getenv("TMPDIR")) : NULL;
        setenv("TMPDIR", tl_tmpdir(), 1);
        tl_spawn("lp-ua", argv, &ua);
        if (tmpdir)
                setenv("TMPDIR", tmpdir, 1);
        else
                unsetenv("TMPDIR");

        char *binding = NULL;
        for (int i = 0; i < 200 && !(binding = bob_binding_with("pn-prid")); i++)
                usleep(50 * 1000);
        if (!binding) {
                _cleanup_free_ char *log = tl_log(&ua);
                tl_kill(&ua, SIGKILL);
                ck_abort_msg("no binding with push parameters; lp-ua:\n%s", log);
        }
        ck_assert_msg(strstr(binding, "pn-provider=apns"), "binding: %s", binding);
        ck_assert_msg(strstr(binding, "pn-param=" TEAM "." BUNDLE ".remote"), "binding: %s", binding);
        ck_assert_msg(strstr(binding, VOIP), "VoIP token not stored: %s", binding);
        ck_assert_msg(strstr(binding, REMOTE), "remote token not stored: %s", binding);
        free(binding);

        /* The phone goes to sleep: its process and socket are gone, its binding stays. */
        tl_kill(&ua, SIGKILL);
        ck_assert_int_ge(tl_wait(&ua, 5000), 0);
        free(ua.log);

        char remote[64];
        snprintf(remote, sizeof remote, "127.0.0.1:%d", proxy.port);
        const char *args[] = {remote, "-m", "1", "-s", "bob", NULL};
        struct tl_proc caller;
        tl_sipp_spawn(&caller, "caller", "test/sipp/uac-cancel-push.xml", 0, args);
        ck_assert_int_eq(tl_sipp_wait(&caller, "caller", 10000), 0); /* 110 Push sent, ... */
        json_t *recs = tl_h2_server_wait(&apns, 1, 4000);
        json_t *rec = json_array_get(recs, 0);
        ck_assert_str_eq(json_string_value(json_object_get(rec, "path")), "/3/device/" VOIP);
        ck_assert_str_eq(tl_h2_header(rec, "apns-topic"), BUNDLE ".voip");
        ck_assert_str_eq(tl_h2_header(rec, "apns-push-type"), "voip");
        json_t *body = tl_h2_body(rec);
        ck_assert_str_eq(json_string_value(json_object_get(body, "from-uri")),
                         "sip:caller@localhost");
        json_decref(body);
        json_decref(recs);
        stop_all();
}
END_TEST

static size_t bindings_of_bob(void) {
        json_t *j = tl_ctl(proxy.sock, "REGISTRAR_GET sip:bob@localhost");
        size_t n = json_array_size(json_object_get(j, "contacts"));
        json_decref(j);
        return n;
}

/* Through pushd's Redis Stream: APNs answers 410 Unregistered for bob's token; pushd
 * publishes the dead token and the proxy removes bob's binding. */
START_TEST(test_push_dead_token_removes_binding) {
        struct tl_ua bob, alice;
        tl_redis_start(&redis, NULL);
        start_with(NULL,
                   "{\"tokens\":{\"" REMOTE "\":[{\"status\":410,\"reason\":\"Unregistered\"}]}}",
                   redis.port);
        open_bob(&bob);
        tl_ua_open(&alice, "alice", NULL, proxy.port);
        ck_assert_int_eq(tl_ua_register(&bob, 3600), 200);
        ck_assert_uint_eq(bindings_of_bob(), 1);
        tl_ua_close(&bob);

        /* The proxy's Redis link may still be coming up: wait for the job to be accepted. */
        ck_assert_int_eq(tl_ua_message(&alice, "bob", NULL, "are you there", NULL, NULL, 0), 202);
        json_t *recs = tl_h2_server_wait(&apns, 1, 10000);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(recs, 0), "path")),
                         "/3/device/" REMOTE);
        json_decref(recs);
        for (int i = 0; i < 100 && bindings_of_bob() > 0; i++)
                usleep(50 * 1000);
        ck_assert_uint_eq(bindings_of_bob(), 0);
        ck_assert_int_eq(tl_counter(proxy.sock, "module::PushNotification/count-dead-tokens"), 1);
        _cleanup_free_ char *log = tl_log(&proxy.proc);
        ck_assert_msg(!strstr(log, REMOTE), "the proxy logged a push token");

        tl_ua_close(&alice);
        stop_all();
        tl_redis_stop(&redis);
}
END_TEST

static Suite *push_suite(void) {
        Suite *s = suite_create("proxy-push");
        TCase *tc = tcase_create("flow");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_push_call_wakes_device);
        tcase_add_test(tc, test_push_message_wakes_device);
        tcase_add_test(tc, test_push_not_sent_when_device_answers);
        tcase_add_test(tc, test_push_dead_token_removes_binding);
        tcase_add_test(tc, test_push_fcm_call_wakes_device);
        tcase_add_test(tc, test_push_fcm_message_wakes_device);
        tcase_add_test(tc, test_push_voip_cancelled_call_reaches_device);
        tcase_add_test(tc, test_push_voip_cancelled_call_wait_bounded);
        tcase_add_test(tc, test_push_voip_answered_elsewhere_reaches_device);
        tcase_add_test(tc, test_push_cancelled_call_not_kept_for_fcm);
        tcase_add_test(tc, test_push_linphone_registers_push_params);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run(push_suite());
}
