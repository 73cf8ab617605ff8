/* SPDX-License-Identifier: MIT */
/* transport_bind_uri(): the URI sofia binds for a [global] transports entry. */
#include "macro.h"
#include "testlib.h"
#include "transport.h"

static void check(const char *uri, const char *want, bool want_tls) {
        _cleanup_free_ char *got = NULL;
        bool tls = !want_tls;
        ck_assert_int_eq(transport_bind_uri(uri, &got, &tls), 0);
        ck_assert_str_eq(got, want);
        ck_assert_msg(tls == want_tls, "%s: tls %d", uri, tls);
}

START_TEST(test_transport_bind_uri_tls_forms) {
        check("sips:127.0.0.1:5061", "sips:127.0.0.1:5061", true);
        check("sip:127.0.0.1:5061;transport=tls", "sips:127.0.0.1:5061", true);
        check("sip:127.0.0.1:5061;transport=TLS", "sips:127.0.0.1:5061", true);
        check("sips:127.0.0.1:5061;transport=tls", "sips:127.0.0.1:5061", true);
        check("sip:[::1]:5061;transport=tls", "sips:[::1]:5061", true);
        check("sip:*:5061;transport=tls", "sips:*:5061", true);
        /* Other parameters, host and port stay, wherever transport= was. */
        check("sip:proxy.example.org:5061;transport=tls;maddr=192.0.2.1",
              "sips:proxy.example.org:5061;maddr=192.0.2.1", true);
        check("sip:proxy.example.org;maddr=192.0.2.1;transport=tls",
              "sips:proxy.example.org;maddr=192.0.2.1", true);
}
END_TEST

START_TEST(test_transport_bind_uri_other_forms) {
        check("sip:127.0.0.1:5060", "sip:127.0.0.1:5060", false);
        check("sip:127.0.0.1:5060;transport=tcp", "sip:127.0.0.1:5060;transport=tcp", false);
        check("sip:[::1]:5060;transport=udp;maddr=::1", "sip:[::1]:5060;transport=udp;maddr=::1",
              false);
        check("sip:*", "sip:*", false);
}
END_TEST

START_TEST(test_transport_bind_uri_invalid) {
        _cleanup_free_ char *got = NULL;
        bool tls;
        ck_assert_int_eq(transport_bind_uri("http://example.org/", &got, &tls), -EINVAL);
        ck_assert_int_eq(transport_bind_uri("not a uri", &got, &tls), -EINVAL);
        ck_assert_ptr_null(got);
}
END_TEST

int main(void) {
        Suite *s = suite_create("transport");
        TCase *tc = tcase_create("bind-uri");
        tcase_add_test(tc, test_transport_bind_uri_tls_forms);
        tcase_add_test(tc, test_transport_bind_uri_other_forms);
        tcase_add_test(tc, test_transport_bind_uri_invalid);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
