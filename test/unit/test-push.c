/* SPDX-License-Identifier: MIT */
/* PushNotification's pure parts: push parameters of contact URIs (RFC 8599 and the legacy
 * Linphone ones) and the pushd job they make. */
#include <jansson.h>

#include <sofia-sip/sip_header.h>
#include <sofia-sip/url.h>

#include "macro.h"
#include "push.h"
#include "testlib.h"

static int parse(const char *uri, struct push_target *t) {
        su_home_t home[1] = {SU_HOME_INIT(home)};
        url_t *u = url_make(home, uri);
        ck_assert_ptr_nonnull(u);
        int r = push_target_parse(u, t);
        su_home_deinit(home);
        return r;
}

START_TEST(test_push_rfc8599_apns_two_tokens) {
        struct push_target t;
        ck_assert_int_eq(parse("sip:bob@10.0.0.1:5060;pn-provider=apns;"
                               "pn-prid=aa11:remote%26bb22:voip;"
                               "pn-param=ABCD1234.org.example.phone.remote%26voip",
                               &t),
                         0);
        ck_assert_int_eq(t.provider, PUSH_APNS);
        ck_assert(!t.sandbox);
        ck_assert_str_eq(t.app_id, "org.example.phone");
        ck_assert_str_eq(t.remote_token, "aa11");
        ck_assert_str_eq(t.voip_token, "bb22");
        push_target_done(&t);
}
END_TEST

START_TEST(test_push_rfc8599_apns_variants) {
        struct push_target t;
        /* One token, services voip: a PushKit token. */
        ck_assert_int_eq(parse("sip:bob@h;pn-provider=apns.dev;pn-prid=cc33;"
                               "pn-param=TEAM.org.example.app.voip",
                               &t),
                         0);
        ck_assert(t.sandbox);
        ck_assert_str_eq(t.app_id, "org.example.app");
        ck_assert_ptr_null(t.remote_token);
        ck_assert_str_eq(t.voip_token, "cc33");
        push_target_done(&t);
        /* No services suffix: remote. */
        ck_assert_int_eq(parse("sip:bob@h;pn-provider=apns;pn-prid=dd44;pn-param=TEAM.org.ex",
                               &t),
                         0);
        ck_assert_str_eq(t.app_id, "org.ex");
        ck_assert_str_eq(t.remote_token, "dd44");
        ck_assert_ptr_null(t.voip_token);
        push_target_done(&t);
}
END_TEST

START_TEST(test_push_fcm_and_legacy) {
        struct push_target t;
        ck_assert_int_eq(parse("sip:bob@h;pn-provider=fcm;pn-prid=tok-1;pn-param=123456", &t), 0);
        ck_assert_int_eq(t.provider, PUSH_FCM);
        ck_assert_str_eq(t.app_id, "123456");
        ck_assert_str_eq(t.remote_token, "tok-1");
        push_target_done(&t);
        /* Legacy Linphone: pn-type/pn-tok/app-id. */
        ck_assert_int_eq(parse("sip:bob@h;pn-type=firebase;pn-tok=tok-2;app-id=987", &t), 0);
        ck_assert_int_eq(t.provider, PUSH_FCM);
        ck_assert_str_eq(t.app_id, "987");
        ck_assert_str_eq(t.remote_token, "tok-2");
        push_target_done(&t);
        ck_assert_int_eq(parse("sip:bob@h;pn-type=apple;pn-tok=ee55;app-id=org.example.dev", &t),
                         0);
        ck_assert_int_eq(t.provider, PUSH_APNS);
        ck_assert(t.sandbox);
        ck_assert_str_eq(t.app_id, "org.example");
        ck_assert_str_eq(t.remote_token, "ee55");
        ck_assert_str_eq(t.voip_token, "ee55");
        push_target_done(&t);
}
END_TEST

START_TEST(test_push_bad_parameters) {
        struct push_target t;
        ck_assert_int_eq(parse("sip:bob@h", &t), -ENOENT);
        push_target_done(&t);
        ck_assert_int_eq(parse("sip:bob@h;transport=tcp", &t), -ENOENT);
        push_target_done(&t);
        ck_assert_int_eq(parse("sip:bob@h;pn-provider=apns;pn-prid=aa", &t), -EINVAL);
        push_target_done(&t);
        ck_assert_int_eq(parse("sip:bob@h;pn-provider=apns;pn-prid=aa;pn-param=nodot", &t),
                         -EINVAL);
        push_target_done(&t);
        ck_assert_int_eq(parse("sip:bob@h;pn-provider=apns;pn-prid=aa%26bb;pn-param=T.b.remote",
                               &t),
                         -EINVAL);
        push_target_done(&t);
        ck_assert_int_eq(parse("sip:bob@h;pn-provider=carrier-pigeon;pn-prid=x;pn-param=y", &t),
                         -EPROTONOSUPPORT);
        push_target_done(&t);
        ck_assert_int_eq(parse("sip:bob@h;pn-type=blackberry;pn-tok=x", &t), -EPROTONOSUPPORT);
        push_target_done(&t);
        ck_assert_int_eq(parse("sip:bob@h;pn-provider=fcm;pn-prid=x", &t), -EINVAL);
        push_target_done(&t);
}
END_TEST

static json_t *job_for(const char *uri, const char *request_text, const char *kind,
                       const char *id) {
        struct push_target t;
        ck_assert_int_eq(parse(uri, &t), 0);
        msg_t *msg = msg_make(sip_default_mclass(), 0, request_text, (ssize_t)strlen(request_text));
        ck_assert_ptr_nonnull(msg);
        _cleanup_free_ char *text = push_job_json(&t, sip_object(msg), kind, 90, id);
        ck_assert_ptr_nonnull(text);
        json_t *j = json_loads(text, 0, NULL);
        ck_assert_ptr_nonnull(j);
        msg_destroy(msg);
        push_target_done(&t);
        return j;
}

static const char *invite = "INVITE sip:bob@h SIP/2.0\r\n"
                            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n"
                            "From: \"Alice A\" <sip:alice@example.org>;tag=1\r\n"
                            "To: <sip:bob@example.org>\r\n"
                            "Call-ID: call-42@host\r\n"
                            "CSeq: 1 INVITE\r\n"
                            "Content-Length: 0\r\n\r\n";

START_TEST(test_push_job_call) {
        json_t *j = job_for("sip:bob@h;pn-provider=apns;pn-prid=aa11:remote%26bb22:voip;"
                            "pn-param=ABCD1234.org.example.phone.remote%26voip",
                            invite, "call", "sip:bob@example.org|dev-1");
        ck_assert_str_eq(json_string_value(json_object_get(j, "provider")), "apns");
        ck_assert_str_eq(json_string_value(json_object_get(j, "token")), "bb22");
        ck_assert_str_eq(json_string_value(json_object_get(j, "type")), "call");
        ck_assert_str_eq(json_string_value(json_object_get(j, "app-id")), "org.example.phone");
        ck_assert_str_eq(json_string_value(json_object_get(j, "from-uri")),
                         "sip:alice@example.org");
        ck_assert_str_eq(json_string_value(json_object_get(j, "from-name")), "Alice A");
        ck_assert_str_eq(json_string_value(json_object_get(j, "call-id")), "call-42@host");
        ck_assert_str_eq(json_string_value(json_object_get(j, "collapse-id")), "call-42@host");
        ck_assert_str_eq(json_string_value(json_object_get(j, "id")),
                         "sip:bob@example.org|dev-1");
        ck_assert_int_eq(json_integer_value(json_object_get(j, "ttl")), 90);
        ck_assert_ptr_null(json_object_get(j, "sandbox"));
        json_decref(j);

        /* A remote-only APNs device gets an alert for a call. */
        j = job_for("sip:bob@h;pn-provider=apns.dev;pn-prid=aa11;pn-param=T.org.ex.remote", invite,
                    "call", NULL);
        ck_assert_str_eq(json_string_value(json_object_get(j, "token")), "aa11");
        ck_assert_str_eq(json_string_value(json_object_get(j, "type")), "message");
        ck_assert(json_is_true(json_object_get(j, "sandbox")));
        ck_assert_ptr_null(json_object_get(j, "id"));
        json_decref(j);
}
END_TEST

START_TEST(test_push_job_message_fcm) {
        json_t *j = job_for("sip:bob@h;pn-provider=fcm;pn-prid=tok-9;pn-param=proj-1", invite,
                            "message", NULL);
        ck_assert_str_eq(json_string_value(json_object_get(j, "provider")), "fcm");
        ck_assert_str_eq(json_string_value(json_object_get(j, "token")), "tok-9");
        ck_assert_str_eq(json_string_value(json_object_get(j, "type")), "message");
        ck_assert_str_eq(json_string_value(json_object_get(j, "app-id")), "proj-1");
        ck_assert_ptr_null(json_object_get(j, "collapse-id"));
        json_decref(j);
}
END_TEST

static Suite *push_suite(void) {
        Suite *s = suite_create("push");
        TCase *tc = tcase_create("parameters");
        tcase_add_test(tc, test_push_rfc8599_apns_two_tokens);
        tcase_add_test(tc, test_push_rfc8599_apns_variants);
        tcase_add_test(tc, test_push_fcm_and_legacy);
        tcase_add_test(tc, test_push_bad_parameters);
        suite_add_tcase(s, tc);
        tc = tcase_create("job");
        tcase_add_test(tc, test_push_job_call);
        tcase_add_test(tc, test_push_job_message_fcm);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run(push_suite());
}
