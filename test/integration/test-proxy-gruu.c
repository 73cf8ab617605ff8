/* SPDX-License-Identifier: MIT */
/* Device identity in the registrar: GRUU (RFC 5627 pub-gruu in the 200 to a REGISTER with
 * +sip.instance and Supported: gruu, and a request to that GRUU reaching that device only, or
 * 480 when it is not registered, in a dialog too) and unique-id-parameters (a device without +sip.instance
 * known by a URI parameter such as line, so its re-registration from a new address replaces
 * its binding instead of adding one). Devices are the minimal UA of test/lib/sipua.h. */
#include <jansson.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "sipua.h"
#include "testlib.h"

#define PHONE  "urn:uuid:00000000-0000-0000-0000-0000000000d1"
#define TABLET "urn:uuid:00000000-0000-0000-0000-0000000000d2"

static struct tl_proxy proxy;

static void start_proxy(const char *extra) {
        _cleanup_free_ char *conf = NULL;
        ck_assert_int_ge(asprintf(&conf,
                                  "log-level=debug\n"
                                  "[module::Registrar]\n"
                                  "db-implementation=internal\n"
                                  "%s",
                                  extra ? extra : ""),
                         0);
        tl_proxy_start(&proxy, conf);
}

static size_t bindings(const char *aor) {
        _cleanup_free_ char *line = NULL;
        ck_assert_int_ge(asprintf(&line, "REGISTRAR_GET %s", aor), 0);
        json_t *j = tl_ctl(proxy.sock, line);
        size_t n = json_array_size(json_object_get(j, "contacts"));
        json_decref(j);
        return n;
}

START_TEST(test_gruu_pub_gruu_and_routing) {
        struct tl_ua phone, tablet, alice;
        start_proxy(NULL);
        tl_ua_open(&phone, "bob", PHONE, proxy.port);
        tl_ua_open(&tablet, "bob", TABLET, proxy.port);
        tl_ua_open(&alice, "alice", NULL, proxy.port);
        snprintf(phone.register_headers, sizeof phone.register_headers, "Supported: gruu\r\n");
        ck_assert_int_eq(tl_ua_register(&phone, 600), 200);
        _cleanup_free_ char *contact = tl_sip_header(phone.last_response, "Contact");
        ck_assert_msg(contact && strstr(contact, "pub-gruu=\"sip:bob@localhost;gr=" PHONE "\""),
                      "no pub-gruu in the 200: %s", strna(contact));
        _cleanup_free_ char *supported = tl_sip_header(phone.last_response, "Supported");
        ck_assert_msg(supported && strstr(supported, "gruu"), "Supported: %s", strna(supported));

        /* Without Supported: gruu, no GRUU. */
        ck_assert_int_eq(tl_ua_register(&tablet, 600), 200);
        ck_assert_msg(!strstr(tablet.last_response, "pub-gruu"), "unasked GRUU:\n%s",
                      tablet.last_response);

        /* A MESSAGE to the tablet's GRUU reaches the tablet, not the phone. */
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                _cleanup_free_ char *req = tl_ua_recv_request(&tablet, 5000);
                if (req)
                        tl_ua_reply(&tablet, req, 200, false);
                _exit(req && strstr(req, "for-the-tablet") ? 0 : 1);
        }
        ck_assert_int_eq(tl_ua_message(&alice, "sip:bob@localhost;gr=" TABLET, NULL,
                                       "for-the-tablet", NULL, NULL, 0),
                         200);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the tablet did not get it");
        _cleanup_free_ char *none = tl_ua_recv_request(&phone, 500);
        ck_assert_msg(!none, "the phone got a request for the tablet's GRUU:\n%s", none);

        /* In a dialog too (the device gave its GRUU as Contact): the request reaches the
         * device's registered contact. */
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                _cleanup_free_ char *req = tl_ua_recv_request(&phone, 5000);
                if (req)
                        tl_ua_reply(&phone, req, 200, false);
                char want[64];
                snprintf(want, sizeof want, "INFO sip:bob@127.0.0.1:%d", phone.port);
                _exit(req && strncmp(req, want, strlen(want)) == 0 ? 0 : 1);
        }
        ck_assert_int_eq(tl_ua_request(&alice, "INFO", "sip:bob@localhost;gr=" PHONE, "dlg-1",
                                       "application/x-test", "in-dialog", NULL, NULL, 0),
                         200);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "the in-dialog request to the GRUU did not reach the phone's contact");

        /* A GRUU whose device is not registered: 480, nothing stored. */
        ck_assert_int_eq(tl_ua_message(&alice,
                                       "sip:bob@localhost;gr=urn:uuid:00000000-0000-0000-0000-"
                                       "0000000000ff",
                                       NULL, "nobody", "Expires: 0\r\n", NULL, 0),
                         480);
        tl_ua_close(&phone);
        tl_ua_close(&tablet);
        tl_ua_close(&alice);
        tl_proxy_done(&proxy);
}
END_TEST

START_TEST(test_gruu_disabled) {
        struct tl_ua phone;
        start_proxy("enable-gruu=false\n");
        tl_ua_open(&phone, "bob", PHONE, proxy.port);
        snprintf(phone.register_headers, sizeof phone.register_headers, "Supported: gruu\r\n");
        ck_assert_int_eq(tl_ua_register(&phone, 600), 200);
        ck_assert_msg(!strstr(phone.last_response, "pub-gruu"), "GRUU while disabled:\n%s",
                      phone.last_response);
        tl_ua_close(&phone);
        tl_proxy_done(&proxy);
}
END_TEST

START_TEST(test_unique_id_parameters) {
        struct tl_ua desk;
        start_proxy(NULL);
        /* No +sip.instance: "line" identifies the device. */
        tl_ua_open(&desk, "carol", NULL, proxy.port);
        snprintf(desk.contact_params, sizeof desk.contact_params, ";line=desk-7");
        ck_assert_int_eq(tl_ua_register(&desk, 600), 200);
        tl_ua_reopen(&desk); /* a new address, the same device */
        ck_assert_int_eq(tl_ua_register(&desk, 600), 200);
        ck_assert_uint_eq(bindings("sip:carol@localhost"), 1);
        json_t *j = tl_ctl(proxy.sock, "REGISTRAR_GET sip:carol@localhost");
        json_t *c = json_array_get(json_object_get(j, "contacts"), 0);
        char want[64];
        snprintf(want, sizeof want, ":%d", desk.port);
        ck_assert_msg(strstr(json_string_value(json_object_get(c, "contact")), want),
                      "the binding does not name the new address");
        json_decref(j);
        tl_ua_close(&desk);
        tl_proxy_done(&proxy);

        /* With line not among unique-id-parameters, the two registrations are two bindings. */
        start_proxy("unique-id-parameters=+sip.instance\n");
        tl_ua_open(&desk, "carol", NULL, proxy.port);
        snprintf(desk.contact_params, sizeof desk.contact_params, ";line=desk-7");
        ck_assert_int_eq(tl_ua_register(&desk, 600), 200);
        tl_ua_reopen(&desk);
        ck_assert_int_eq(tl_ua_register(&desk, 600), 200);
        ck_assert_uint_eq(bindings("sip:carol@localhost"), 2);
        tl_ua_close(&desk);
        tl_proxy_done(&proxy);
}
END_TEST

static Suite *gruu_suite(void) {
        Suite *s = suite_create("gruu");
        TCase *tc = tcase_create("gruu");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_gruu_pub_gruu_and_routing);
        tcase_add_test(tc, test_gruu_disabled);
        tcase_add_test(tc, test_unique_id_parameters);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run(gruu_suite());
}
