/* SPDX-License-Identifier: MIT */
/* Fork engine details seen from minimal UAs (test/lib/sipua.h): when every device of a fork
 * asks for credentials, the 407 sent to the caller carries the challenges of all of them (RFC
 * 3261 §16.7 step 6), each once. */
#include <jansson.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "macro.h"
#include "sipua.h"
#include "testlib.h"

static struct tl_proxy proxy;

/* A child process answering the next request on ua with 407 and a challenge for realm. */
static pid_t answer_407(struct tl_ua *ua, const char *realm) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid > 0)
                return pid;
        char headers[256];
        snprintf(headers, sizeof headers,
                 "Proxy-Authenticate: Digest realm=\"%s\", nonce=\"n-%s\", qop=\"auth\"\r\n",
                 realm, realm);
        _cleanup_free_ char *req = tl_ua_recv_request(ua, 5000);
        if (req)
                tl_ua_reply_headers(ua, req, 407, false, headers);
        /* Stay a moment to answer the retransmissions of the ACK-less MESSAGE's 407. */
        _cleanup_free_ char *more = tl_ua_recv_request(ua, 500);
        _exit(req ? 0 : 1);
}

START_TEST(test_fork_challenges_merged) {
        struct tl_ua phone, tablet, alice;
        tl_proxy_start(&proxy, "[module::Registrar]\ndb-implementation=internal\n");
        tl_ua_open(&phone, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000e1", proxy.port);
        tl_ua_open(&tablet, "bob", "urn:uuid:00000000-0000-0000-0000-0000000000e2", proxy.port);
        tl_ua_open(&alice, "alice", NULL, proxy.port);
        ck_assert_int_eq(tl_ua_register(&phone, 600), 200);
        ck_assert_int_eq(tl_ua_register(&tablet, 600), 200);

        pid_t p1 = answer_407(&phone, "realm-one"), p2 = answer_407(&tablet, "realm-two");
        char resp[8192];
        ck_assert_int_eq(tl_ua_message(&alice, "bob", NULL, "hello", "Expires: 0\r\n", resp,
                                       sizeof resp),
                         407);
        int status;
        ck_assert_int_eq(waitpid(p1, &status, 0), p1);
        ck_assert_int_eq(waitpid(p2, &status, 0), p2);
        size_t one = 0, two = 0;
        for (const char *p = resp; (p = strstr(p, "realm=\"realm-one\"")); p++)
                one++;
        for (const char *p = resp; (p = strstr(p, "realm=\"realm-two\"")); p++)
                two++;
        ck_assert_msg(one == 1 && two == 1, "the 407 should carry each challenge once:\n%s",
                      resp);
        tl_ua_close(&phone);
        tl_ua_close(&tablet);
        tl_ua_close(&alice);
        tl_proxy_done(&proxy);
}
END_TEST

static Suite *fork_suite(void) {
        Suite *s = suite_create("fork");
        TCase *tc = tcase_create("fork");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_fork_challenges_merged);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run(fork_suite());
}
