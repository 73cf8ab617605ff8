/* SPDX-License-Identifier: MIT */
/* The proxy as an operator runs it: generated config, readiness on the control socket,
 * counters, SET of a reloadable key, SIGHUP reload, OPTIONS answered (real SIPp), SIGTERM
 * exits 0 within the drain deadline, bad configs refused with file:line. */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

#include "ctl.h"
#include "macro.h"
#include "testlib.h"

static const char *get_string(json_t *j, const char *path) {
        json_t *v = json_object_get(j, path);
        ck_assert_msg(json_is_string(v), "no string %s", path);
        return json_string_value(v);
}

/* GET /metrics over a plain socket. */
static char *fetch_metrics(int port) {
        ck_assert_int_eq(tl_wait_tcp(port, 5000), 0);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
        const char *req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
        ck_assert_int_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        char chunk[4096];
        ssize_t n;
        while ((n = read(fd, chunk, sizeof chunk)) > 0)
                fwrite(chunk, 1, (size_t)n, m);
        fclose(m);
        close(fd);
        return buf;
}

START_TEST(test_proxy_ready_counters_and_options) {
        struct tl_proxy f = {0};
        tl_proxy_start(&f, "log-level=notice\n");

        json_t *stats = tl_ctl(f.sock, "STATS");
        ck_assert_ptr_nonnull(json_object_get(json_object_get(stats, "global"),
                                              "count-incoming-request-options"));
        json_decref(stats);
        ck_assert_int_eq(tl_counter(f.sock, "global/count-incoming-request-options"), 0);

        ck_assert_int_eq(tl_sipp("test/sipp/options.xml", f.port), 0);
        ck_assert_int_eq(tl_counter(f.sock, "global/count-incoming-request-options"), 1);
        ck_assert_int_eq(tl_counter(f.sock, "global/count-reply-200"), 1);
        ck_assert_int_eq(tl_counter(f.sock, "module::Capabilities/count-requests"), 1);

        _cleanup_free_ char *metrics = fetch_metrics(f.metrics_port);
        ck_assert_msg(strstr(metrics, "HTTP/1.1 200"), "metrics: %s", metrics);
        ck_assert_msg(strstr(metrics, "\nsipfleet_proxy_global_count_incoming_request_options 1\n"),
                      "metrics: %s", metrics);
        tl_proxy_done(&f);
}
END_TEST

/* The kernel's receive buffer of the proxy's UDP socket on port (ss -m: "rb<bytes>"), or -1. */
static long udp_receive_buffer(int port) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "ss -ulnmH 'sport = :%d' 2>/dev/null", port);
        FILE *p = popen(cmd, "r");
        ck_assert_ptr_nonnull(p);
        char line[512];
        long rb = -1;
        while (fgets(line, sizeof line, p)) {
                const char *at = strstr(line, ",rb");
                if (at)
                        rb = strtol(at + 3, NULL, 10);
        }
        pclose(p);
        return rb;
}

/* [global] udp-receive-buffer: the UDP transport's socket gets it (the kernel shows twice the
 * value asked, its bookkeeping included); 0 leaves the system default. */
START_TEST(test_proxy_udp_receive_buffer) {
        struct tl_proxy f = {0};
        tl_proxy_start(&f, "udp-receive-buffer=2MiB\n");
        long rb = udp_receive_buffer(f.port);
        ck_assert_msg(rb >= 2L << 20, "receive buffer of the UDP transport: %ld", rb);
        tl_proxy_stop(&f);
        tl_proxy_start(&f, "udp-receive-buffer=0\n");
        rb = udp_receive_buffer(f.port);
        ck_assert_msg(rb > 0 && rb < 2L << 20, "system default expected, got %ld", rb);
        tl_proxy_done(&f);
}
END_TEST

START_TEST(test_proxy_set_and_reload) {
        struct tl_proxy f = {0};
        tl_proxy_start(&f, "log-level=notice\n");

        json_t *j = tl_ctl(f.sock, "SET global/log-level debug");
        ck_assert_ptr_null(json_object_get(j, "error"));
        json_decref(j);
        j = tl_ctl(f.sock, "GET global/log-level");
        ck_assert_str_eq(get_string(j, "global/log-level"), "debug");
        json_decref(j);

        /* Not reloadable: a clear error, the value stays. */
        j = tl_ctl(f.sock, "SET global/transports sip:127.0.0.1:1");
        ck_assert_ptr_nonnull(json_object_get(j, "error"));
        json_decref(j);

        /* SIGHUP re-reads the file: reloadable keys follow it. */
        tl_proxy_write_conf(&f, "log-level=info\n");
        tl_kill(&f.proc, SIGHUP);
        bool reloaded = false;
        for (int i = 0; i < 500 && !reloaded; i++) {
                j = tl_ctl(f.sock, "GET global/log-level");
                reloaded = streq(get_string(j, "global/log-level"), "info");
                json_decref(j);
                if (!reloaded)
                        usleep(10000);
        }
        ck_assert_msg(reloaded, "SIGHUP did not apply log-level=info");

        /* A broken file on reload keeps the running configuration. */
        tl_proxy_write_conf(&f, "log-level=loud\n");
        j = tl_ctl(f.sock, "RELOAD");
        ck_assert_ptr_nonnull(json_object_get(j, "error"));
        json_decref(j);
        j = tl_ctl(f.sock, "GET global/log-level");
        ck_assert_str_eq(get_string(j, "global/log-level"), "info");
        json_decref(j);
        tl_proxy_done(&f);
}
END_TEST

START_TEST(test_proxy_sigterm_exits_zero) {
        struct tl_proxy f = {0};
        tl_proxy_start(&f, "log-level=notice\n");
        tl_kill(&f.proc, SIGTERM);
        int status = tl_wait(&f.proc, 3000 + 2000);
        ck_assert_int_ne(status, -ETIMEDOUT);
        ck_assert(WIFEXITED(status));
        ck_assert_int_eq(WEXITSTATUS(status), 0);
        _cleanup_free_ char *log = tl_log(&f.proc);
        ck_assert_ptr_nonnull(strstr(log, "Stopping on SIGTERM"));
        /* The socket is gone: the CLI says no daemon (69). */
        _cleanup_free_ char *reply = NULL;
        ck_assert_int_lt(ctl_client_call(f.sock, "STATS", 1000, &reply), 0);
        tl_proxy_done(&f);
}
END_TEST

/* sd_notify: READY=1 once listening, WATCHDOG=1 while running, STOPPING=1 on SIGTERM. */
START_TEST(test_proxy_sd_notify) {
        _cleanup_free_ char *path = tl_path("notify.sock");
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
        setenv("NOTIFY_SOCKET", path, 1);
        setenv("WATCHDOG_USEC", "200000", 1); /* pings every 100 ms */
        struct tl_proxy f = {0};
        tl_proxy_start(&f, "log-level=notice\n");
        unsetenv("NOTIFY_SOCKET");
        unsetenv("WATCHDOG_USEC");
        char buf[256];
        bool ready = false, stopping = false;
        int watchdog = 0;
        struct timeval tv = {0, 300 * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        for (int i = 0; i < 50 && (!ready || watchdog < 2); i++) {
                ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
                if (n <= 0)
                        continue;
                buf[n] = 0;
                ready = ready || strstr(buf, "READY=1");
                watchdog += strstr(buf, "WATCHDOG=1") != NULL;
        }
        ck_assert_msg(ready, "no READY=1");
        ck_assert_int_ge(watchdog, 2);
        tl_kill(&f.proc, SIGTERM);
        for (int i = 0; i < 50 && !stopping; i++) {
                ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
                if (n <= 0)
                        continue;
                buf[n] = 0;
                stopping = strstr(buf, "STOPPING=1");
        }
        ck_assert_msg(stopping, "no STOPPING=1");
        close(fd);
        tl_proxy_done(&f);
}
END_TEST

/* Started as root with [global] user: runs as that user after binding. */
START_TEST(test_proxy_drops_privileges) {
        if (geteuid() != 0) {
                /* Only root can switch users; as non-root there is nothing to drop. */
                ck_assert_int_ne(geteuid(), 0);
                return;
        }
        struct tl_proxy f = {0};
        tl_proxy_start(&f, "user=nobody\n");
        _cleanup_free_ char *status_path = NULL;
        ck_assert_int_ge(asprintf(&status_path, "/proc/%d/status", f.proc.pid), 0);
        bool dropped = false;
        for (int i = 0; i < 100 && !dropped; i++) {
                _cleanup_free_ char *status = tl_read_file(status_path, NULL);
                dropped = status && strstr(status, "\nUid:\t65534\t65534\t65534\t65534\n") != NULL;
                if (!dropped)
                        usleep(20000);
        }
        ck_assert_msg(dropped, "proxy still runs as root");
        /* Still serving: the control socket answers (root may always connect). */
        ck_assert_int_eq(tl_counter(f.sock, "global/count-incoming-request-options"), 0);
        tl_proxy_done(&f);
}
END_TEST

static int run_proxy(char **argv, char **out) {
        struct tl_proc p;
        tl_spawn("proxy-check", argv, &p);
        int status = tl_wait(&p, 10000);
        *out = tl_log(&p);
        unlink(p.log);
        free(p.log);
        return status;
}

START_TEST(test_proxy_unknown_key_refused) {
        _cleanup_free_ char *bin = tl_build_path("proxy/sipfleet-proxy");
        _cleanup_free_ char *conf =
                tl_write_file("bad.conf", "[global]\n# comment\nlog-levle=debug\n");
        char *argv[] = {bin, "--config", conf, NULL};
        _cleanup_free_ char *out = NULL;
        int status = run_proxy(argv, &out);
        ck_assert(WIFEXITED(status));
        ck_assert_int_ne(WEXITSTATUS(status), 0);
        _cleanup_free_ char *where = NULL;
        ck_assert_int_ge(asprintf(&where, "%s:3:", conf), 0);
        ck_assert_msg(strstr(out, where), "no file:line in: %s", out);
        ck_assert_msg(strstr(out, "did you mean 'log-level'"), "no hint in: %s", out);
}
END_TEST

START_TEST(test_proxy_check_config) {
        _cleanup_free_ char *bin = tl_build_path("proxy/sipfleet-proxy");
        _cleanup_free_ char *conf = tl_write_file("ok.conf", "[global]\nlog-level=info\n");
        char *argv[] = {bin, "--config", conf, "--check-config", NULL};
        _cleanup_free_ char *out = NULL;
        int status = run_proxy(argv, &out);
        ck_assert(WIFEXITED(status));
        ck_assert_int_eq(WEXITSTATUS(status), 0);
        ck_assert_ptr_nonnull(strstr(out, "configuration OK"));

        /* An explicitly named file that does not exist is an error. */
        _cleanup_free_ char *missing = tl_path("missing.conf");
        char *argv2[] = {bin, "--config", missing, "--check-config", NULL};
        _cleanup_free_ char *out2 = NULL;
        status = run_proxy(argv2, &out2);
        ck_assert(WIFEXITED(status));
        ck_assert_int_ne(WEXITSTATUS(status), 0);
        ck_assert_msg(strstr(out2, "missing.conf"), "error does not name the file: %s", out2);
}
END_TEST

START_TEST(test_proxy_etc_conf_in_sync) {
        /* etc/proxy.conf is what --dump-default prints. */
        _cleanup_free_ char *bin = tl_build_path("proxy/sipfleet-proxy");
        char *argv[] = {bin, "--dump-default", NULL};
        struct tl_proc p;
        tl_spawn("dump", argv, &p);
        ck_assert_int_eq(tl_wait(&p, 10000), 0);
        _cleanup_free_ char *dump = tl_log(&p);
        free(p.log);
        _cleanup_free_ char *path = tl_source_path("etc/proxy.conf");
        _cleanup_free_ char *text = tl_read_file(path, NULL);
        ck_assert_msg(text, "cannot read %s", path);
        ck_assert_msg(streq(dump, text),
                      "etc/proxy.conf differs from sipfleet-proxy --dump-default; regenerate it "
                      "with: build/proxy/sipfleet-proxy --dump-default > etc/proxy.conf");
}
END_TEST

int main(void) {
        Suite *s = suite_create("proxy-lifecycle");
        TCase *tc = tcase_create("lifecycle");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_proxy_ready_counters_and_options);
        tcase_add_test(tc, test_proxy_set_and_reload);
        tcase_add_test(tc, test_proxy_udp_receive_buffer);
        tcase_add_test(tc, test_proxy_sigterm_exits_zero);
        tcase_add_test(tc, test_proxy_unknown_key_refused);
        tcase_add_test(tc, test_proxy_check_config);
        tcase_add_test(tc, test_proxy_etc_conf_in_sync);
        tcase_add_test(tc, test_proxy_sd_notify);
        tcase_add_test(tc, test_proxy_drops_privileges);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
