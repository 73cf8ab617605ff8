/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>

#include "http.h"
#include "loop.h"
#include "macro.h"
#include "stats.h"
#include "testlib.h"

/* Check's messages must stay on one line for TAP. */
static char *escape(const char *s) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        for (; s && *s; s++)
                if (*s == '\n')
                        fputs("\\n", f);
                else if (*s == '\r')
                        fputs("\\r", f);
                else
                        fputc(*s, f);
        fclose(f);
        return buf;
}

#define assert_text_eq(a, b)                                                                       \
        do {                                                                                       \
                const char *_a = (a), *_b = (b);                                                   \
                if (!_a || !_b || !streq(_a, _b)) {                                                \
                        _cleanup_free_ char *_ea = escape(_a), *_eb = escape(_b);                  \
                        ck_abort_msg("'%s' != '%s'", _ea, _eb);                                    \
                }                                                                                  \
        } while (0)

#define assert_text_prefix(a, prefix)                                                              \
        do {                                                                                       \
                const char *_a = (a), *_p = (prefix);                                              \
                if (!_a || strncmp(_a, _p, strlen(_p)) != 0) {                                     \
                        _cleanup_free_ char *_ea = escape(_a), *_ep = escape(_p);                  \
                        ck_abort_msg("'%s' does not start with '%s'", _ea, _ep);                  \
                }                                                                                  \
        } while (0)

static char *to_json(struct stats *s, const char *section) {
        json_t *j = stats_to_json(s, section);
        char *text;

        if (!j)
                return NULL;
        text = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        ck_assert_ptr_nonnull(text);
        return text;
}

static uint64_t gauge_value(void *userdata) {
        return *(uint64_t *)userdata;
}

START_TEST(test_stats_declare_inc) {
        struct stats *s;
        struct stats_counter *c, *again;
        uint64_t v;

        ck_assert_int_eq(stats_new(&s), 0);
        c = stats_declare(s, "global", "count-incoming-request-register", "REGISTER requests");
        ck_assert_ptr_nonnull(c);
        ck_assert_uint_eq(c->value, 0);

        stats_inc(c);
        stats_inc(c);
        stats_add(c, 40);
        stats_inc(NULL);
        stats_add(NULL, 3);
        ck_assert_int_eq(stats_get(s, "global/count-incoming-request-register", &v), 0);
        ck_assert_uint_eq(v, 42);

        /* The same name again is the same counter. */
        again = stats_declare(s, "global", "count-incoming-request-register", "other doc");
        ck_assert_ptr_eq(again, c);

        /* Addresses stay put however many counters follow. */
        for (int i = 0; i < 2000; i++) {
                char name[32];

                snprintf(name, sizeof name, "c%d", i);
                const char *section = i % 2 ? "global" : "module::Router";

                ck_assert_ptr_nonnull(stats_declare(s, section, name, NULL));
        }
        ck_assert_ptr_eq(stats_declare(s, "global", "count-incoming-request-register", NULL), c);
        stats_inc(c);
        ck_assert_int_eq(stats_get(s, "global/count-incoming-request-register", &v), 0);
        ck_assert_uint_eq(v, 43);
        ck_assert_int_eq(stats_get(s, "module::Router/c1998", &v), 0);
        ck_assert_uint_eq(v, 0);

        stats_free(s);
        stats_free(NULL);
}
END_TEST

START_TEST(test_stats_pair) {
        struct stats *s;
        struct stats_counter *start, *finished = NULL;
        uint64_t v;

        ck_assert_int_eq(stats_new(&s), 0);
        start = stats_declare_pair(s, "module::Registrar", "count-clear", "clears", &finished);
        ck_assert_ptr_nonnull(start);
        ck_assert_ptr_nonnull(finished);
        ck_assert_ptr_ne(start, finished);

        stats_add(start, 5);
        stats_add(finished, 3);
        ck_assert_int_eq(stats_get(s, "module::Registrar/count-clear", &v), 0);
        ck_assert_uint_eq(v, 5);
        ck_assert_int_eq(stats_get(s, "module::Registrar/count-clear-finished", &v), 0);
        ck_assert_uint_eq(v, 3);
        ck_assert_ptr_eq(stats_declare(s, "module::Registrar", "count-clear-finished", NULL),
                         finished);

        stats_free(s);
}
END_TEST

START_TEST(test_stats_gauge) {
        struct stats *s;
        uint64_t bindings = 7, v;

        ck_assert_int_eq(stats_new(&s), 0);
        ck_assert_int_eq(stats_declare_gauge(s, "module::Registrar", "bindings", "bindings stored",
                                             gauge_value, &bindings), 0);
        ck_assert_int_eq(stats_get(s, "module::Registrar/bindings", &v), 0);
        ck_assert_uint_eq(v, 7);
        bindings = 9;
        ck_assert_int_eq(stats_get(s, "module::Registrar/bindings", &v), 0);
        ck_assert_uint_eq(v, 9);

        /* A name is either a counter or a gauge, declared once. */
        ck_assert_int_eq(stats_declare_gauge(s, "module::Registrar", "bindings", NULL, gauge_value,
                                             &bindings), -EEXIST);
        ck_assert_ptr_null(stats_declare(s, "module::Registrar", "bindings", NULL));
        ck_assert_ptr_nonnull(stats_declare(s, "global", "count", NULL));
        ck_assert_int_eq(stats_declare_gauge(s, "global", "count", NULL, gauge_value, &bindings),
                         -EEXIST);

        stats_free(s);
}
END_TEST

START_TEST(test_stats_get_unknown) {
        struct stats *s;
        uint64_t v = 99;

        ck_assert_int_eq(stats_new(&s), 0);
        ck_assert_int_eq(stats_get(s, "global/nothing", &v), -ENOENT);
        ck_assert_ptr_nonnull(stats_declare(s, "global", "count", NULL));
        ck_assert_int_eq(stats_get(s, "global/nothing", &v), -ENOENT);
        ck_assert_int_eq(stats_get(s, "other/count", &v), -ENOENT);
        ck_assert_int_eq(stats_get(s, "globa/count", &v), -ENOENT);
        ck_assert_int_eq(stats_get(s, "global", &v), -ENOENT);
        ck_assert_int_eq(stats_get(s, "count", &v), -ENOENT);
        ck_assert_int_eq(stats_get(s, "", &v), -ENOENT);
        ck_assert_uint_eq(v, 99);
        ck_assert_int_eq(stats_get(s, "global/count", NULL), 0);
        stats_free(s);
}
END_TEST

START_TEST(test_stats_json) {
        _cleanup_free_ char *all = NULL, *reg = NULL, *empty = NULL;
        struct stats *s, *e;
        struct stats_counter *fin;
        uint64_t g = 4;

        ck_assert_int_eq(stats_new(&s), 0);
        stats_add(stats_declare(s, "global", "count-incoming-request-register", NULL), 2);
        stats_add(stats_declare_pair(s, "module::Registrar", "count-clear", NULL, &fin), 3);
        stats_inc(fin);
        ck_assert_int_eq(stats_declare_gauge(s, "module::Registrar", "bindings", NULL, gauge_value,
                                             &g), 0);
        stats_inc(stats_declare(s, "global", "count-incoming-request-invite", NULL));

        /* Sections and names in declaration order. */
        all = to_json(s, NULL);
        ck_assert_str_eq(all, "{\"global\":{\"count-incoming-request-register\":2,"
                              "\"count-incoming-request-invite\":1},"
                              "\"module::Registrar\":{\"count-clear\":3,\"count-clear-finished\":1,"
                              "\"bindings\":4}}");
        reg = to_json(s, "module::Registrar");
        ck_assert_str_eq(reg, "{\"module::Registrar\":{\"count-clear\":3,\"count-clear-finished\":1,"
                              "\"bindings\":4}}");
        ck_assert_ptr_null(stats_to_json(s, "nothing"));
        free(all);
        all = to_json(s, "all");
        ck_assert_ptr_nonnull(strstr(all, "\"global\":{"));

        ck_assert_int_eq(stats_new(&e), 0);
        empty = to_json(e, NULL);
        ck_assert_str_eq(empty, "{}");

        stats_free(e);
        stats_free(s);
}
END_TEST

START_TEST(test_stats_prometheus) {
        _cleanup_free_ char *text = NULL, *empty_text = NULL;
        struct stats *s, *empty;
        struct stats_counter *fin;
        uint64_t g = 12;

        ck_assert_int_eq(stats_new(&s), 0);
        stats_add(stats_declare(s, "global", "count-incoming-request-register",
                                "REGISTER requests received"), 5);
        stats_add(stats_declare_pair(s, "module::Registrar", "count-clear", "Registrar clears",
                                     &fin), 2);
        stats_inc(fin);
        ck_assert_int_eq(stats_declare_gauge(s, "module::Registrar", "bindings",
                                             "Bindings\\stored\nnow", gauge_value, &g), 0);
        ck_assert_ptr_nonnull(stats_declare(s, "global", "no-doc", NULL));
        stats_inc(stats_declare(s, "global", "count-incoming-request-register", NULL));

        text = stats_to_prometheus(s, "proxy");
        ck_assert_ptr_nonnull(text);
        assert_text_eq(text,
                "# HELP sipfleet_proxy_global_count_incoming_request_register REGISTER requests received\n"
                "# TYPE sipfleet_proxy_global_count_incoming_request_register counter\n"
                "sipfleet_proxy_global_count_incoming_request_register 6\n"
                "# HELP sipfleet_proxy_global_no_doc global/no-doc\n"
                "# TYPE sipfleet_proxy_global_no_doc counter\n"
                "sipfleet_proxy_global_no_doc 0\n"
                "# HELP sipfleet_proxy_module__Registrar_count_clear Registrar clears\n"
                "# TYPE sipfleet_proxy_module__Registrar_count_clear counter\n"
                "sipfleet_proxy_module__Registrar_count_clear 2\n"
                "# HELP sipfleet_proxy_module__Registrar_count_clear_finished Registrar clears (finished)\n"
                "# TYPE sipfleet_proxy_module__Registrar_count_clear_finished counter\n"
                "sipfleet_proxy_module__Registrar_count_clear_finished 1\n"
                "# HELP sipfleet_proxy_module__Registrar_bindings Bindings\\\\stored\\nnow\n"
                "# TYPE sipfleet_proxy_module__Registrar_bindings gauge\n"
                "sipfleet_proxy_module__Registrar_bindings 12\n");

        ck_assert_int_eq(stats_new(&empty), 0);
        empty_text = stats_to_prometheus(empty, "push-gateway");
        ck_assert_ptr_nonnull(empty_text);
        ck_assert_str_eq(empty_text, "");

        stats_free(empty);
        stats_free(s);
}
END_TEST

START_TEST(test_stats_prometheus_role_mapped) {
        _cleanup_free_ char *text = NULL;
        struct stats *s;

        ck_assert_int_eq(stats_new(&s), 0);
        stats_inc(stats_declare(s, "a.b", "x/y z", "d"));
        text = stats_to_prometheus(s, "media-relay");
        assert_text_eq(text, "# HELP sipfleet_media_relay_a_b_x_y_z d\n"
                               "# TYPE sipfleet_media_relay_a_b_x_y_z counter\n"
                               "sipfleet_media_relay_a_b_x_y_z 1\n");
        stats_free(s);
}
END_TEST

/* ---- /metrics over HTTP: the loop runs here, the client in a thread ---- */

struct job {
        void (*fn)(void *arg);
        void *arg;
        int done_fd;
};

static void *job_main(void *userdata) {
        struct job *j = userdata;

        j->fn(j->arg);
        close(j->done_fd); /* wakes the loop */
        return NULL;
}

static void quit_io(struct loop_io *io, int fd, unsigned events, void *userdata) {
        loop_quit(userdata);
}

static void quit_timer(struct loop_timer *t, void *userdata) {
        loop_quit(userdata);
}

/* Lets the loop handle what is pending (closed connections...). */
static void run_for(struct loop *l, uint64_t ms) {
        struct loop_timer *t;

        ck_assert_int_eq(loop_timer_new(l, quit_timer, l, &t), 0);
        ck_assert_int_eq(loop_timer_arm(t, ms), 0);
        ck_assert_int_eq(loop_run(l), 0);
        loop_timer_free(t);
}

static void guard_timer(struct loop_timer *t, void *userdata) {
        ck_abort_msg("test client did not finish in time");
}

/* Runs the loop while fn(arg) runs in a thread. */
static void run_with_client(struct loop *l, void (*fn)(void *arg), void *arg) {
        struct loop_io *io;
        struct loop_timer *guard;
        pthread_t thread;
        struct job j = {fn, arg, -1};
        int p[2];

        ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
        j.done_fd = p[1];
        ck_assert_int_eq(loop_io_add(l, p[0], LOOP_READ, quit_io, l, &io), 0);
        ck_assert_int_eq(loop_timer_new(l, guard_timer, NULL, &guard), 0);
        ck_assert_int_eq(loop_timer_arm(guard, 20000), 0);
        ck_assert_int_eq(pthread_create(&thread, NULL, job_main, &j), 0);
        ck_assert_int_eq(loop_run(l), 0);
        ck_assert_int_eq(pthread_join(thread, NULL), 0);
        loop_timer_free(guard);
        loop_io_free(io);
        close(p[0]);
}

struct fetch {
        int port;
        const char *request;
        size_t request_len;
        bool keep_open; /* don't close after sending: wait for the server */
        char *response;
        size_t len;
        uint64_t elapsed_ms;
};

static void fetch_run(void *arg) {
        struct fetch *f = arg;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(f->port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        uint64_t start = now_msec();
        FILE *m;
        int fd;

        m = open_memstream(&f->response, &f->len);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
                goto done;
        for (size_t sent = 0; sent < f->request_len;) {
                ssize_t n = send(fd, f->request + sent, f->request_len - sent, MSG_NOSIGNAL);

                if (n <= 0)
                        break; /* the server may answer and close early */
                sent += n;
        }
        for (;;) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                char buf[4096];
                ssize_t n;

                if (poll(&p, 1, 15000) <= 0)
                        break;
                n = recv(fd, buf, sizeof buf, 0);
                if (n <= 0)
                        break;
                fwrite(buf, 1, n, m);
        }
done:
        f->elapsed_ms = now_msec() - start;
        if (fd >= 0)
                close(fd);
        fclose(m);
}

struct http_fixture {
        struct event_base *base;
        struct loop *loop;
        struct stats *stats;
        struct http_server *server;
        int port;
};

static void http_setup(struct http_fixture *h) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        struct sockaddr_storage bound;
        socklen_t len;

        h->base = event_base_new();
        ck_assert_ptr_nonnull(h->base);
        ck_assert_int_eq(loop_new_event(h->base, &h->loop), 0);
        ck_assert_int_eq(stats_new(&h->stats), 0);
        stats_add(stats_declare(h->stats, "global", "count-incoming-request-register",
                                "REGISTER requests"), 3);

        /* Port 0: the kernel picks, the server tells. */
        ck_assert_int_eq(http_serve_metrics(h->loop, (struct sockaddr *)&a, sizeof a, h->stats,
                                            "proxy", &h->server), 0);
        ck_assert_int_eq(http_server_get_address(h->server, &bound, &len), 0);
        ck_assert_int_eq(bound.ss_family, AF_INET);
        h->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
        ck_assert_int_gt(h->port, 0);
}

static void http_teardown(struct http_fixture *h) {
        http_server_free(h->server);
        stats_free(h->stats);
        loop_free(h->loop);
        event_base_free(h->base);
}

static char *fetch(struct http_fixture *h, const char *request) {
        struct fetch f = {.port = h->port, .request = request, .request_len = strlen(request)};

        run_with_client(h->loop, fetch_run, &f);
        return f.response;
}

START_TEST(test_stats_http_metrics) {
        _cleanup_free_ char *resp = NULL, *head = NULL, *expected = NULL, *body = NULL;
        struct http_fixture h = {0};

        http_setup(&h);

        body = stats_to_prometheus(h.stats, "proxy");
        ck_assert_int_ge(asprintf(&expected,
                                  "HTTP/1.1 200 OK\r\n"
                                  "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                                  "Content-Length: %zu\r\n"
                                  "Connection: close\r\n"
                                  "\r\n%s", strlen(body), body), 0);
        resp = fetch(&h, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
        assert_text_eq(resp, expected);
        ck_assert_ptr_nonnull(strstr(resp, "\nsipfleet_proxy_global_count_incoming_request_register"
                                           " 3\n"));

        /* A query string is not part of the path; HTTP/1.0 and bare LF are fine. */
        free(resp);
        resp = fetch(&h, "GET /metrics?x=1 HTTP/1.0\n\n");
        assert_text_eq(resp, expected);

        /* HEAD: the same head, no body. */
        head = fetch(&h, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert_text_eq(head, strndupa(expected, strstr(expected, "\r\n\r\n") + 4 - expected));

        http_teardown(&h);
}
END_TEST

START_TEST(test_stats_http_errors) {
        _cleanup_free_ char *notfound = NULL, *post = NULL, *bad = NULL, *version = NULL,
                            *big = NULL, *toolarge = NULL;
        struct http_fixture h = {0};

        http_setup(&h);

        notfound = fetch(&h, "GET /nope HTTP/1.1\r\n\r\n");
        assert_text_eq(notfound, "HTTP/1.1 404 Not Found\r\n"
                                   "Content-Type: text/plain; charset=utf-8\r\n"
                                   "Content-Length: 14\r\n"
                                   "Connection: close\r\n"
                                   "\r\n"
                                   "404 Not Found\n");

        post = fetch(&h, "POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
        assert_text_prefix(post, "HTTP/1.1 405 Method Not Allowed\r\n");
        ck_assert_ptr_nonnull(strstr(post, "\r\nAllow: GET, HEAD\r\n"));

        bad = fetch(&h, "garbage\r\n\r\n");
        assert_text_prefix(bad, "HTTP/1.1 400 Bad Request\r\n");

        version = fetch(&h, "GET /metrics HTTP/2.0\r\n\r\n");
        assert_text_prefix(version, "HTTP/1.1 505 ");

        /* Headers beyond 8 KiB. */
        big = malloc(20000);
        strcpy(big, "GET /metrics HTTP/1.1\r\nX-Big: ");
        memset(big + strlen(big), 'a', 12000);
        strcpy(big + 30 + 12000, "\r\n\r\n");
        toolarge = fetch(&h, big);
        assert_text_prefix(toolarge, "HTTP/1.1 431 Request Header Fields Too Large\r\n");

        http_teardown(&h);
}
END_TEST

struct flood {
        int port;
        char *last;
};

/* HTTP_MAX_CONNECTIONS idle connections, then one more: 503. */
static void flood_run(void *arg) {
        struct flood *fl = arg;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(fl->port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fds[HTTP_MAX_CONNECTIONS + 1];
        char buf[512] = "";
        ssize_t n;

        for (int i = 0; i <= HTTP_MAX_CONNECTIONS; i++) {
                fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (connect(fds[i], (struct sockaddr *)&a, sizeof a) < 0)
                        return;
                /* Let the server accept them one by one, in order. */
                if (i == HTTP_MAX_CONNECTIONS - 1)
                        (void)poll(NULL, 0, 200);
        }
        struct pollfd p = {.fd = fds[HTTP_MAX_CONNECTIONS], .events = POLLIN};
        if (poll(&p, 1, 5000) > 0) {
                n = recv(fds[HTTP_MAX_CONNECTIONS], buf, sizeof buf - 1, 0);
                if (n > 0)
                        buf[n] = 0;
        }
        fl->last = strdup(buf);
        for (int i = 0; i <= HTTP_MAX_CONNECTIONS; i++)
                close(fds[i]);
}

START_TEST(test_stats_http_limits) {
        _cleanup_free_ char *after = NULL;
        struct http_fixture h = {0};
        struct flood fl = {0};
        struct fetch idle = {0};

        http_setup(&h);

        fl.port = h.port;
        run_with_client(h.loop, flood_run, &fl);
        ck_assert_ptr_nonnull(fl.last);
        assert_text_prefix(fl.last, "HTTP/1.1 503 Service Unavailable\r\n");
        free(fl.last);
        run_for(h.loop, 200);

        /* Served again once they are gone. */
        after = fetch(&h, "GET /metrics HTTP/1.1\r\n\r\n");
        assert_text_prefix(after, "HTTP/1.1 200 OK\r\n");

        /* An incomplete request is dropped after the timeout, without a reply. */
        idle.port = h.port;
        idle.request = "GET /metrics HTTP/1.1\r\n";
        idle.request_len = strlen(idle.request);
        run_with_client(h.loop, fetch_run, &idle);
        assert_text_eq(idle.response, "");
        ck_assert_uint_ge(idle.elapsed_ms, HTTP_TIMEOUT_MS - 100);
        ck_assert_uint_lt(idle.elapsed_ms, HTTP_TIMEOUT_MS + 3000);
        free(idle.response);

        http_teardown(&h);
}
END_TEST

static Suite *stats_suite(void) {
        Suite *s = suite_create("stats");
        TCase *tc;

        tc = tcase_create("registry");
        tcase_add_test(tc, test_stats_declare_inc);
        tcase_add_test(tc, test_stats_pair);
        tcase_add_test(tc, test_stats_gauge);
        tcase_add_test(tc, test_stats_get_unknown);
        suite_add_tcase(s, tc);

        tc = tcase_create("export");
        tcase_add_test(tc, test_stats_json);
        tcase_add_test(tc, test_stats_prometheus);
        tcase_add_test(tc, test_stats_prometheus_role_mapped);
        suite_add_tcase(s, tc);

        tc = tcase_create("http");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_stats_http_metrics);
        tcase_add_test(tc, test_stats_http_errors);
        tcase_add_test(tc, test_stats_http_limits);
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        return tl_run(stats_suite());
}
