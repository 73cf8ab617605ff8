/* SPDX-License-Identifier: MIT */
/* The Registrar module in the built proxy: golden REGISTER exchanges with real SIPp
 * (test/sipp/register-*.xml check the 200 OK headers with regexps) on the SQLite store, the
 * bindings kept across a restart, then the REGISTRAR_* control commands (internal store) and the
 * counters. */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>

#include "ctl.h"
#include "macro.h"
#include "testlib.h"

/* The fixture's config with this test's registrar settings; store: its store lines. */
static const char *registrar_conf(const char *store) {
        static char text[1024];
        /* The scenarios register contacts on other hosts (192.0.2.x): registrar rules only,
         * no contact correction. */
        snprintf(text, sizeof text,
                 "log-level=debug\n"
                 "[module::NatHelper]\n"
                 "enabled=false\n"
                 "[module::Registrar]\n"
                 "max-contacts-per-registration=3\n"
                 "%s",
                 store);
        return text;
}

#define assert_sipp(f, name) \
        ck_assert_msg(tl_sipp("test/sipp/" name ".xml", (f)->port) == 0, "scenario " name)

/* One REGISTER over UDP, the response's text. Not a SIPp scenario: SIPp 3.6.1 drops the
 * "400 Invalid CSeq" response as unexpected (apparently it reads the "CSeq" of the reason
 * phrase as the CSeq header), while it accepts other 400s. */
static char *udp_register(int port, uint32_t cseq, const char *branch) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        struct sockaddr_in local = {.sin_family = AF_INET,
                                    .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&local, sizeof local), 0);
        socklen_t len = sizeof local;
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&local, &len), 0);
        _cleanup_free_ char *req = NULL;
        ck_assert_int_ge(asprintf(&req,
                                  "REGISTER sip:localhost SIP/2.0\r\n"
                                  "Via: SIP/2.0/UDP 127.0.0.1:%u;branch=z9hG4bK-%s\r\n"
                                  "From: <sip:erin@localhost>;tag=%s\r\n"
                                  "To: <sip:erin@localhost>\r\n"
                                  "Call-ID: replayed-cseq@127.0.0.1\r\n"
                                  "CSeq: %u REGISTER\r\n"
                                  "Contact: <sip:erin@192.0.2.5:5060>\r\n"
                                  "Expires: 3600\r\n"
                                  "Max-Forwards: 70\r\n"
                                  "Content-Length: 0\r\n\r\n",
                                  ntohs(local.sin_port), branch, branch, cseq),
                         0);
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(sendto(fd, req, strlen(req), 0, (struct sockaddr *)&to, sizeof to),
                         (ssize_t)strlen(req));
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        ck_assert_int_eq(poll(&pfd, 1, 5000), 1);
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        ck_assert_int_gt(n, 0);
        buf[n] = 0;
        close(fd);
        return strdup(buf);
}

/* Same Call-ID, lower CSeq, known contact, new transaction (other branch and From tag): 400. */
static void check_replayed_cseq(struct tl_proxy *f) {
        _cleanup_free_ char *first = udp_register(f->port, 5, "first");
        ck_assert_msg(strncmp(first, "SIP/2.0 200 ", 12) == 0, "%s", first);
        _cleanup_free_ char *replay = udp_register(f->port, 3, "replay");
        ck_assert_msg(strncmp(replay, "SIP/2.0 400 Invalid CSeq\r\n", 26) == 0, "%s", replay);
}

static json_t *contacts_of(json_t *j) {
        json_t *c = json_object_get(j, "contacts");
        ck_assert_msg(json_is_array(c), "no contacts array");
        return c;
}

static char *sqlite_store(void) {
        _cleanup_free_ char *db = tl_path("registrar.db");
        char *lines = NULL;
        ck_assert_int_ge(asprintf(&lines, "db-implementation=sqlite\ndatabase-path=%s\n", db), 0);
        return lines;
}

START_TEST(test_registrar_sipp_scenarios) {
        struct tl_proxy f = {0};
        _cleanup_free_ char *store = sqlite_store();
        tl_proxy_start(&f, registrar_conf(store));
        assert_sipp(&f, "register-basic");
        assert_sipp(&f, "register-expires");
        assert_sipp(&f, "register-two-contacts");
        assert_sipp(&f, "register-instance");
        check_replayed_cseq(&f);
        assert_sipp(&f, "register-too-many");
        assert_sipp(&f, "register-path");
        assert_sipp(&f, "register-foreign");
        assert_sipp(&f, "register-edge");

        /* What SIPp left behind, seen through the control socket. */
        json_t *j = tl_ctl(f.sock, "REGISTRAR_GET sip:dave@localhost");
        json_t *c = contacts_of(j);
        ck_assert_uint_eq(json_array_size(c), 1);
        json_t *b = json_array_get(c, 0);
        ck_assert_str_eq(json_string_value(json_object_get(b, "contact")),
                         "sip:dave@192.0.2.20:5060");
        ck_assert_str_eq(json_string_value(json_object_get(b, "unique-id")),
                         "\"<urn:uuid:0001>\"");
        ck_assert_str_eq(json_string_value(json_object_get(b, "user-agent")),
                         "sipp-registrar-test");
        ck_assert_int_eq(json_integer_value(json_object_get(b, "cseq")), 2);
        ck_assert(json_integer_value(json_object_get(b, "expires-at")) > 0);
        json_decref(j);

        j = tl_ctl(f.sock, "REGISTRAR_GET sip:gina@localhost");
        b = json_array_get(contacts_of(j), 0);
        ck_assert_str_eq(json_string_value(json_array_get(json_object_get(b, "path"), 0)),
                         "<sip:edge.example.org;lr>");
        json_decref(j);

        /* Unregistered and cleared AORs are gone; the foreign one never arrived. */
        j = tl_ctl(f.sock, "REGISTRAR_DUMP");
        json_t *aors = json_object_get(j, "aors");
        ck_assert_uint_eq(json_array_size(aors), 3); /* dave, erin, gina */
        json_decref(j);
        ck_assert_int_eq(tl_counter(f.sock, "module::Registrar/registered-aors"), 3);

        long long binds = tl_counter(f.sock, "module::Registrar/count-bind");
        ck_assert_int_ge(binds, 14);
        ck_assert_int_eq(tl_counter(f.sock, "module::Registrar/count-bind-finished"), binds);
        ck_assert_int_eq(tl_counter(f.sock, "module::Registrar/count-clear"), 2);
        ck_assert_int_eq(tl_counter(f.sock, "module::Registrar/count-clear-finished"), 2);
        ck_assert_int_ge(tl_counter(f.sock, "global/count-reply-403"), 1);

        /* The SQLite store keeps the bindings across a restart. */
        tl_proxy_stop(&f);
        tl_proxy_start(&f, registrar_conf(store));
        j = tl_ctl(f.sock, "REGISTRAR_GET sip:dave@localhost");
        c = contacts_of(j);
        ck_assert_uint_eq(json_array_size(c), 1);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(c, 0), "contact")),
                         "sip:dave@192.0.2.20:5060");
        json_decref(j);
        j = tl_ctl(f.sock, "REGISTRAR_DUMP");
        ck_assert_uint_eq(json_array_size(json_object_get(j, "aors")), 3);
        json_decref(j);
        ck_assert_int_eq(tl_counter(f.sock, "module::Registrar/registered-aors"), 3);
        tl_proxy_done(&f);
}
END_TEST

START_TEST(test_registrar_cli_commands) {
        struct tl_proxy f = {0};
        tl_proxy_start(&f, registrar_conf("db-implementation=internal\n"));

        json_t *j = tl_ctl(f.sock, "REGISTRAR_UPSERT sip:zed@localhost sip:zed@192.0.2.50 300 my-id");
        ck_assert_ptr_null(json_object_get(j, "error"));
        json_t *b = json_array_get(contacts_of(j), 0);
        ck_assert_str_eq(json_string_value(json_object_get(b, "unique-id")), "my-id");
        ck_assert_int_le(json_integer_value(json_object_get(b, "expires")), 300);
        ck_assert_int_ge(json_integer_value(json_object_get(b, "expires")), 299);
        json_decref(j);

        /* An upsert with the same id updates in place. */
        j = tl_ctl(f.sock, "REGISTRAR_UPSERT sip:zed@localhost sip:zed@192.0.2.51 600 my-id");
        ck_assert_uint_eq(json_array_size(contacts_of(j)), 1);
        b = json_array_get(contacts_of(j), 0);
        ck_assert_str_eq(json_string_value(json_object_get(b, "contact")), "sip:zed@192.0.2.51");
        json_decref(j);
        j = tl_ctl(f.sock, "REGISTRAR_UPSERT sip:zed@localhost sip:zed@192.0.2.52 600");
        ck_assert_uint_eq(json_array_size(contacts_of(j)), 2);
        json_decref(j);

        j = tl_ctl(f.sock, "REGISTRAR_DUMP");
        ck_assert_uint_eq(json_array_size(json_object_get(j, "aors")), 1);
        ck_assert_str_eq(json_string_value(json_array_get(json_object_get(j, "aors"), 0)),
                         "sip:zed@localhost");
        json_decref(j);

        j = tl_ctl(f.sock, "REGISTRAR_DELETE sip:zed@localhost my-id");
        ck_assert_uint_eq(json_array_size(contacts_of(j)), 1);
        json_decref(j);
        j = tl_ctl(f.sock, "REGISTRAR_DELETE sip:zed@localhost my-id");
        ck_assert_ptr_nonnull(json_object_get(j, "error"));
        json_decref(j);

        j = tl_ctl(f.sock, "REGISTRAR_CLEAR <sip:zed@LOCALHOST>");
        ck_assert(json_is_true(json_object_get(j, "cleared")));
        json_decref(j);
        j = tl_ctl(f.sock, "REGISTRAR_GET sip:zed@localhost");
        ck_assert_uint_eq(json_array_size(contacts_of(j)), 0);
        json_decref(j);

        /* Bad input gets an error reply, never a crash. */
        const char *bad[] = {"REGISTRAR_GET", "REGISTRAR_GET tel:123", "REGISTRAR_DUMP x",
                             "REGISTRAR_UPSERT sip:a@localhost garbage 60",
                             "REGISTRAR_UPSERT sip:a@localhost sip:a@h 0",
                             "REGISTRAR_UPSERT sip:a@localhost sip:a@h 10x"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                j = tl_ctl(f.sock, bad[i]);
                ck_assert_msg(json_object_get(j, "error"), "no error for '%s'", bad[i]);
                json_decref(j);
        }
        tl_proxy_done(&f);
}
END_TEST

int main(void) {
        Suite *s = suite_create("proxy-registrar");
        TCase *tc = tcase_create("registrar");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_registrar_sipp_scenarios);
        tcase_add_test(tc, test_registrar_cli_commands);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
