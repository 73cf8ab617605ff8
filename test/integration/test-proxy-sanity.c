/* SPDX-License-Identifier: MIT */
/* The SanityChecker module against a corpus of broken requests (test/corpus/sip-malformed/,
 * written by test/corpus/gen-sip-malformed.py) sent over raw UDP and TCP sockets to the built
 * proxy: each gets its exact answer (a 400 naming the problem) or none (garbage, ACK), the
 * proxy still answers OPTIONS afterwards, and count-bad-requests counts the module's 400s. */
#include <arpa/inet.h>
#include <assert.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>

#include "ctl.h"
#include "macro.h"
#include "testlib.h"

/* How long to wait for an answer that must come, and for one that must not. */
#define ANSWER_TIMEOUT_MS 3000
#define SILENCE_MS 300

static char *read_corpus(const char *name, size_t *len) {
        _cleanup_free_ char *rel = NULL;
        ck_assert_int_ge(asprintf(&rel, "test/corpus/sip-malformed/%s.sip", name), 0);
        _cleanup_free_ char *path = tl_source_path(rel);
        char *buf = tl_read_file(path, len);
        ck_assert_msg(buf, "cannot read %s", path);
        return buf;
}

/* Reads into buf (NUL-terminated) until a complete header block or the deadline; returns the
 * number of bytes read (0: no answer). */
static size_t recv_answer(int fd, bool stream, char *buf, size_t size, int timeout_ms) {
        size_t got = 0;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        while (got + 1 < size && poll(&pfd, 1, timeout_ms) > 0) {
                ssize_t n = recv(fd, buf + got, size - 1 - got, 0);
                if (n <= 0)
                        break;
                got += (size_t)n;
                buf[got] = 0;
                if (!stream || strstr(buf, "\r\n\r\n"))
                        break;
        }
        buf[got] = 0;
        return got;
}

static int connect_proxy(int port, bool tcp) {
        int fd = socket(AF_INET, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
        return fd;
}

static void replace_all(char *msg, size_t len, const char *from, const char *to) {
        size_t n = strlen(from);
        assert(strlen(to) == n);
        for (char *p = msg; (p = memmem(p, len - (size_t)(p - msg), from, n)); p += n)
                memcpy(p, to, n);
}

/* Sends one message; returns the status of the answer (0: none within the wait) and copies
 * the reason phrase. Over TCP the Via says TCP, as a real client's would, and the branch and
 * Call-ID differ from the UDP copy: nta would take it for a retransmission or a merged request
 * (482). */
static int exchange(int port, bool tcp, char *msg, size_t len, int wait_ms, char *phrase,
                    size_t phrase_size) {
        if (tcp) {
                replace_all(msg, len, "SIP/2.0/UDP", "SIP/2.0/TCP");
                replace_all(msg, len, "branch=z9hG4bK-", "branch=z9hG4bKt");
                replace_all(msg, len, "@corpus", "@tcpcor");
        }
        _cleanup_close_ int fd = connect_proxy(port, tcp);
        size_t off = 0;
        while (off < len) {
                ssize_t n = send(fd, msg + off, len - off, MSG_NOSIGNAL);
                ck_assert_int_gt(n, 0);
                off += (size_t)n;
        }
        char buf[8192];
        *phrase = 0;
        if (recv_answer(fd, tcp, buf, sizeof buf, wait_ms) == 0)
                return 0;
        int status = 0, end = 0;
        ck_assert_msg(sscanf(buf, "SIP/2.0 %3d %n", &status, &end) == 1 && end > 0,
                      "not a SIP response: %.200s", buf);
        snprintf(phrase, phrase_size, "%.*s", (int)strcspn(buf + end, "\r\n"), buf + end);
        return status;
}

/* Sane requests go on to the modules after the SanityChecker, whose answer is theirs. */
#define PASSED (-1)

struct corpus_case {
        const char *file;
        bool tcp;
        int status;         /* 0: no answer at all; PASSED: any answer but 400 */
        const char *phrase; /* substring of the reason phrase */
        bool counted;       /* a 400 of the SanityChecker, not one of nta's own */
};

/* nta answers by itself what sofia cannot parse or what fails sip_sanity_check() ("Bad From
 * Header", "Bad Request"), and drops what has no Via or no request line; those never reach the
 * module. */
static const struct corpus_case corpus[] = {
        {"garbage", false, 0, NULL, false},
        {"truncated", false, 400, "Bad From Header", false},
        {"missing-via", false, 0, NULL, false},
        {"from-no-host", false, 400, "Bad From", false},
        {"from-bad-host", false, 400, "Bad From", true},
        {"from-no-tag", false, 400, "Missing From tag", true},
        {"from-extra-at", false, 400, "Bad From", true},
        {"to-no-host", false, 400, "Bad To", false},
        {"to-bad-host", false, 400, "Bad To", true},
        {"to-backslash", false, 400, "Bad To", true},
        {"contact-bad-scheme", false, 400, "Bad Contact scheme", true},
        {"contact-no-host", false, 400, "Bad Contact", false},
        {"contact-bad-host", false, 400, "Bad Contact", true},
        {"contact-star-invite", false, 400, "Bad Contact", true},
        {"contact-star-register", false, PASSED, NULL, false},
        {"ruri-no-host", false, 0, NULL, false},
        {"ruri-bad-host", false, 400, "Bad Request-URI", true},
        {"subscribe-no-event", false, 400, "Missing Event", true},
        {"max-forwards-bad", false, 400, "Bad Max-Forwards", true},
        {"max-forwards-missing", false, PASSED, NULL, false},
        {"cseq-missing", false, 400, "Bad Request", false},
        {"cseq-mismatch", false, 400, "Bad Request", false},
        {"call-id-missing", false, 400, "Bad Request", false},
        {"ack-bad-from", false, 0, NULL, false},
        {"ack-unparsable-from", false, 0, NULL, false},
        {"nul-bytes", false, 400, "Bad From", false},
        {"bad-content-length", false, 400, "Bad Request", false},
        /* Too big for a datagram, and above [global] max-message-size (64KiB) over TCP: the
         * connection is closed without an answer. */
        {"header-70k", true, 0, NULL, false},
        /* The same refusal over TCP. */
        {"from-no-tag", true, 400, "Missing From tag", true},
};

static int valid_options(int port) {
        char msg[1024], phrase[128];
        int len = snprintf(msg, sizeof msg,
                           "OPTIONS sip:127.0.0.1:%d SIP/2.0\r\n"
                           "Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bK-sanity-ok\r\n"
                           "From: <sip:probe@127.0.0.1>;tag=ok\r\n"
                           "To: <sip:127.0.0.1:%d>\r\n"
                           "Call-ID: sanity-ok@corpus\r\n"
                           "CSeq: 1 OPTIONS\r\n"
                           "Max-Forwards: 70\r\n"
                           "Content-Length: 0\r\n\r\n",
                           port, port);
        return exchange(port, false, msg, (size_t)len, ANSWER_TIMEOUT_MS, phrase, sizeof phrase);
}

START_TEST(test_sanity_corpus_answers) {
        struct tl_proxy f = {0};
        tl_proxy_start(&f, "log-level=notice\n");
        long long n_counted = 0, n_passed = 0;

        for (size_t i = 0; i < ELEMENTSOF(corpus); i++) {
                const struct corpus_case *c = &corpus[i];
                size_t len;
                _cleanup_free_ char *msg = read_corpus(c->file, &len);
                char phrase[256];
                int status = exchange(f.port, c->tcp, msg, len,
                                      c->status ? ANSWER_TIMEOUT_MS : SILENCE_MS, phrase,
                                      sizeof phrase);
                if (c->status == PASSED)
                        ck_assert_msg(status > 0 && status != 400,
                                      "%s over %s: expected it to pass, got %d '%s'", c->file,
                                      c->tcp ? "TCP" : "UDP", status, phrase);
                else
                        ck_assert_msg(status == c->status, "%s over %s: expected %d, got %d '%s'",
                                      c->file, c->tcp ? "TCP" : "UDP", c->status, status,
                                      phrase);
                if (c->phrase)
                        ck_assert_msg(strstr(phrase, c->phrase),
                                      "%s over %s: expected '%s' in the reason, got '%s'",
                                      c->file, c->tcp ? "TCP" : "UDP", c->phrase, phrase);
                if (c->counted)
                        n_counted++;
                if (c->status == PASSED)
                        n_passed++;
        }

        /* Still alive and answering. */
        ck_assert_int_eq(valid_options(f.port), 200);
        ck_assert_int_eq(tl_counter(f.sock, "module::SanityChecker/count-bad-requests"), n_counted);
        ck_assert_int_eq(tl_counter(f.sock, "module::SanityChecker/count-dropped-acks"), 1);
        /* The module saw its refusals, the bad ACK, the sane ones and the OPTIONS; only the last
         * two went on. */
        ck_assert_int_eq(tl_counter(f.sock, "module::SanityChecker/count-requests"),
                         n_counted + 1 + n_passed + 1);
        ck_assert_int_eq(tl_counter(f.sock, "module::Capabilities/count-requests"), n_passed + 1);
        tl_proxy_done(&f);
}
END_TEST

START_TEST(test_sanity_valid_options_passes) {
        struct tl_proxy f = {0};
        tl_proxy_start(&f, "log-level=notice\n");
        ck_assert_int_eq(valid_options(f.port), 200);
        ck_assert_int_eq(tl_counter(f.sock, "module::SanityChecker/count-requests"), 1);
        ck_assert_int_eq(tl_counter(f.sock, "module::SanityChecker/count-bad-requests"), 0);
        ck_assert_int_eq(tl_counter(f.sock, "module::Capabilities/count-requests"), 1);
        tl_proxy_done(&f);
}
END_TEST

int main(void) {
        Suite *s = suite_create("proxy-sanity");
        TCase *tc = tcase_create("sanity");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_sanity_valid_options_passes);
        tcase_add_test(tc, test_sanity_corpus_answers);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
