/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "macro.h"
#include "testlib-redis.h"

int tl_redis_start_on(struct tl_redis *r, int port, const char *const *extra) {
        char portstr[16];
        r->port = port > 0 ? port : tl_free_port();
        snprintf(portstr, sizeof portstr, "%d", r->port);
        char *argv[64] = {"/usr/bin/redis-server", "--port", portstr, "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no", "--dir", (char *)tl_tmpdir()};
        size_t n = 11;
        for (; extra && *extra && n < ELEMENTSOF(argv) - 1; extra++)
                argv[n++] = (char *)*extra;
        argv[n] = NULL;
        _cleanup_free_ char *name = NULL;
        ck_assert_int_ge(asprintf(&name, "redis-%d", r->port), 0);
        free(r->proc.log);
        tl_spawn(name, argv, &r->proc);
        for (int i = 0; i < 500; i++) {
                _cleanup_free_ char *pong = tl_redis_cmd(r, "PING");
                if (pong && (streq(pong, "PONG") || strncmp(pong, "NOAUTH", 6) == 0))
                        return 0;
                nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        }
        _cleanup_free_ char *log = tl_log(&r->proc);
        ck_abort_msg("redis-server did not start: %s", log);
        return -ETIMEDOUT;
}

void tl_sentinel_start(struct tl_sentinel *s, const char *master_name, int master_port,
                       int quorum, int down_after_ms, int failover_timeout_ms) {
        _cleanup_free_ char *text = NULL, *file = NULL, *name = NULL;
        s->port = tl_free_port();
        ck_assert_int_ge(asprintf(&text,
                                  "port %d\n"
                                  "bind 127.0.0.1\n"
                                  "daemonize no\n"
                                  "dir %s\n"
                                  "sentinel monitor %s 127.0.0.1 %d %d\n"
                                  "sentinel down-after-milliseconds %s %d\n"
                                  "sentinel failover-timeout %s %d\n"
                                  "sentinel parallel-syncs %s 2\n",
                                  s->port, tl_tmpdir(), master_name, master_port, quorum,
                                  master_name, down_after_ms, master_name, failover_timeout_ms,
                                  master_name),
                         0);
        ck_assert_int_ge(asprintf(&file, "sentinel-%d.conf", s->port), 0);
        s->conf = tl_write_file(file, text);
        ck_assert_int_ge(asprintf(&name, "sentinel-%d", s->port), 0);
        char *argv[] = {"/usr/bin/redis-sentinel", s->conf, NULL};
        tl_spawn(name, argv, &s->proc);
        for (int i = 0; i < 500; i++) {
                _cleanup_free_ char *pong = tl_sentinel_cmd(s, "PING");
                if (pong && streq(pong, "PONG"))
                        return;
                nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        }
        _cleanup_free_ char *log = tl_log(&s->proc);
        ck_abort_msg("redis-sentinel did not start: %s", log);
}

void tl_sentinel_stop(struct tl_sentinel *s) {
        if (s->proc.pid > 0)
                tl_stop(&s->proc);
        free(s->proc.log);
        s->proc.log = NULL;
        free(s->conf);
        s->conf = NULL;
}

char *tl_sentinel_cmd(struct tl_sentinel *s, const char *fmt, ...) {
        struct tl_redis r = {.port = s->port};
        char buf[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        /* buf is a command line, split on spaces by hiredis's formatter: no '%' in it. */
        ck_assert_ptr_null(strchr(buf, '%'));
        return tl_redis_cmd(&r, buf);
}

static int status_of(const char *msg) {
        if (strncmp(msg, "SIP/2.0 ", 8) != 0)
                return -1;
        return atoi(msg + 8);
}

int tl_sip_register(int port, const char *user, const char *contact, const char *call_id,
                    uint32_t cseq, int expires, int timeout_ms, char **response) {
        _cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        struct sockaddr_in local = {.sin_family = AF_INET,
                                    .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&local, sizeof local), 0);
        socklen_t len = sizeof local;
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&local, &len), 0);
        static unsigned counter;
        unsigned n = counter++;
        _cleanup_free_ char *req = NULL;
        ck_assert_int_ge(asprintf(&req,
                                  "REGISTER sip:localhost SIP/2.0\r\n"
                                  "Via: SIP/2.0/UDP 127.0.0.1:%u;branch=z9hG4bK-tl%u-%d\r\n"
                                  "From: <sip:%s@localhost>;tag=t%u\r\n"
                                  "To: <sip:%s@localhost>\r\n"
                                  "Call-ID: %s\r\n"
                                  "CSeq: %u REGISTER\r\n"
                                  "Contact: <%s>\r\n"
                                  "Expires: %d\r\n"
                                  "Max-Forwards: 70\r\n"
                                  "Content-Length: 0\r\n\r\n",
                                  ntohs(local.sin_port), n, (int)getpid(), user, n, user,
                                  call_id, cseq, contact, expires),
                         0);
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(sendto(fd, req, strlen(req), 0, (struct sockaddr *)&to, sizeof to),
                         (ssize_t)strlen(req));
        struct timespec start;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (;;) {
                struct timespec now;
                clock_gettime(CLOCK_MONOTONIC, &now);
                long left = timeout_ms - ((now.tv_sec - start.tv_sec) * 1000 +
                                          (now.tv_nsec - start.tv_nsec) / 1000000);
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                if (left <= 0 || poll(&pfd, 1, (int)left) != 1)
                        return 0;
                char buf[8192];
                ssize_t got = recv(fd, buf, sizeof buf - 1, 0);
                if (got <= 0)
                        return 0;
                buf[got] = 0;
                int status = status_of(buf);
                if (status >= 200) {
                        if (response)
                                *response = strdup(buf);
                        return status;
                }
        }
}
