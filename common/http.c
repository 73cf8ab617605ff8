/* SPDX-License-Identifier: MIT */
#define LOG_SUBSYSTEM LOG_http

#include <assert.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>

#include "http.h"
#include "listener.h"
#include "log.h"
#include "loop.h"
#include "macro.h"
#include "stats.h"

struct http_conn {
        struct http_server *server;
        struct http_conn *prev, *next;
        int fd;
        struct loop_io *io;
        struct loop_timer *timer;

        char in[HTTP_MAX_HEADER];
        size_t in_len;

        char *out;
        size_t out_pos, out_len;
        bool responding; /* the request is answered: only writing from now on */
};

struct http_server {
        struct loop *loop;
        struct listener *listener;
        http_handler_fn fn;
        void *userdata;
        void (*free_userdata)(void *userdata);
        struct http_conn *conns;
        unsigned n_conns;
};

static const char *http_reason(int status) {
        switch (status) {
        case 200:
                return "OK";
        case 204:
                return "No Content";
        case 400:
                return "Bad Request";
        case 403:
                return "Forbidden";
        case 404:
                return "Not Found";
        case 405:
                return "Method Not Allowed";
        case 431:
                return "Request Header Fields Too Large";
        case 500:
                return "Internal Server Error";
        case 503:
                return "Service Unavailable";
        case 505:
                return "HTTP Version Not Supported";
        default:
                return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
        }
}

static void conn_free(struct http_conn *c) {
        if (!c)
                return;

        if (c->server) {
                if (c->prev)
                        c->prev->next = c->next;
                else
                        c->server->conns = c->next;
                if (c->next)
                        c->next->prev = c->prev;
                c->server->n_conns--;
        }
        loop_io_free(c->io);
        loop_timer_free(c->timer);
        if (c->fd >= 0)
                close(c->fd);
        free(c->out);
        free(c);
}

/* Builds the whole response in c->out. body is consumed. */
static int conn_respond(struct http_conn *c, bool head, int status, const char *content_type,
                        char *body, size_t body_len, const char *extra_headers) {
        _cleanup_free_ char *owned = body;
        char *buf = NULL;
        size_t size = 0;
        FILE *f;

        if (body && body_len == 0)
                body_len = strlen(body);

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        fprintf(f,
                "HTTP/1.1 %d %s\r\n"
                "Content-Type: %s\r\n"
                "Content-Length: %zu\r\n"
                "Connection: close\r\n"
                "%s"
                "\r\n",
                status, http_reason(status), content_type, body_len, strempty(extra_headers));
        if (body && !head)
                fwrite(body, 1, body_len, f);
        if (fclose(f) != 0) {
                free(buf);
                return -ENOMEM;
        }

        free(c->out);
        c->out = buf;
        c->out_len = size;
        c->out_pos = 0;
        c->responding = true;
        return 0;
}

static int conn_respond_error(struct http_conn *c, bool head, int status, const char *extra) {
        char *body;

        if (asprintf(&body, "%d %s\n", status, http_reason(status)) < 0)
                return -ENOMEM;
        return conn_respond(c, head, status, "text/plain; charset=utf-8", body, 0, extra);
}

/* Request line: METHOD SP request-target SP HTTP-version. Headers are not needed. */
static int conn_handle(struct http_conn *c, char *request) {
        struct http_response resp = {.status = 200};
        char *method, *target, *version, *q;
        bool head;
        int r;

        request[strcspn(request, "\r\n")] = 0;

        method = request;
        target = strchr(method, ' ');
        if (!target)
                return conn_respond_error(c, false, 400, NULL);
        *target++ = 0;
        version = strchr(target, ' ');
        if (!version)
                return conn_respond_error(c, false, 400, NULL);
        *version++ = 0;

        if (!*method || method[strspn(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ")] || target[0] != '/' ||
            strchr(version, ' '))
                return conn_respond_error(c, false, 400, NULL);
        if (!streq(version, "HTTP/1.1") && !streq(version, "HTTP/1.0"))
                return conn_respond_error(c, false, strncmp(version, "HTTP/", 5) == 0 ? 505 : 400,
                                          NULL);

        head = streq(method, "HEAD");
        if (!head && !streq(method, "GET"))
                return conn_respond_error(c, false, 405, "Allow: GET, HEAD\r\n");

        q = strchr(target, '?');
        if (q)
                *q = 0;

        r = c->server->fn(method, target, &resp, c->server->userdata);
        if (r < 0) {
                free(resp.body);
                if (r != -ENOENT)
                        log_debug_errno(r, "HTTP handler failed for '%s': %m", target);
                return conn_respond_error(c, head, r == -ENOENT ? 404 : 500, NULL);
        }

        return conn_respond(c, head, resp.status > 0 ? resp.status : 200,
                            resp.content_type ? resp.content_type : "text/plain; charset=utf-8",
                            resp.body, resp.body_len, NULL);
}

/* The end of the request head (the line feed before the empty line), or NULL. */
static char *find_head_end(char *buf, size_t len) {
        char *crlf = memmem(buf, len, "\n\r\n", 3), *lf = memmem(buf, len, "\n\n", 2);

        if (!crlf || !lf)
                return crlf ? crlf : lf;
        return MIN(crlf, lf);
}

/* Returns > 0 when the connection is finished (or broken) and must be freed. */
static int conn_read(struct http_conn *c) {
        char *end;
        int r;

        for (;;) {
                ssize_t n;

                if (c->in_len >= sizeof c->in) {
                        r = conn_respond_error(c, false, 431, NULL);
                        return r < 0 ? 1 : 0;
                }

                n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                return 0;
                        log_debug_errno(errno, "Failed to read an HTTP request: %m");
                        return 1;
                }
                if (n == 0)
                        return 1; /* closed before a whole request */
                c->in_len += n;

                end = find_head_end(c->in, c->in_len);
                if (end) {
                        *end = 0;
                        if (memchr(c->in, 0, end - c->in))
                                r = conn_respond_error(c, false, 400, NULL);
                        else
                                r = conn_handle(c, c->in);
                        return r < 0 ? 1 : 0;
                }
        }
}

/* Returns > 0 when everything is sent or the connection broke. */
static int conn_write(struct http_conn *c) {
        while (c->out_pos < c->out_len) {
                ssize_t n = send(c->fd, c->out + c->out_pos, c->out_len - c->out_pos, MSG_NOSIGNAL);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                return 0;
                        log_debug_errno(errno, "Failed to write an HTTP response: %m");
                        return 1;
                }
                c->out_pos += n;
                (void)loop_timer_arm(c->timer, HTTP_TIMEOUT_MS); /* progress */
        }

        /* Done: end our side and drop what the peer may still have sent, so that close() does
         * not reset the connection before the reply is read. */
        (void)shutdown(c->fd, SHUT_WR);
        for (unsigned i = 0; i < 16; i++) {
                char junk[1024];

                if (recv(c->fd, junk, sizeof junk, MSG_DONTWAIT) <= 0)
                        break;
        }
        return 1;
}

static void conn_io(struct loop_io *io, int fd, unsigned events, void *userdata) {
        struct http_conn *c = userdata;

        if (!c->responding && (events & (LOOP_READ | LOOP_ERROR)) && conn_read(c) > 0) {
                conn_free(c);
                return;
        }
        if (c->responding) {
                if (conn_write(c) > 0) {
                        conn_free(c);
                        return;
                }
                if (loop_io_get_events(c->io) != LOOP_WRITE &&
                    loop_io_set_events(c->io, LOOP_WRITE) < 0)
                        conn_free(c);
        }
}

static void conn_timeout(struct loop_timer *t, void *userdata) {
        struct http_conn *c = userdata;

        log_debug("HTTP connection timed out, closing");
        conn_free(c);
}

static int conn_new(struct http_server *s, int fd) {
        struct http_conn *c;
        int r;

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->fd = fd;
        c->server = s;
        c->next = s->conns;
        if (s->conns)
                s->conns->prev = c;
        s->conns = c;
        s->n_conns++;

        r = loop_io_add(s->loop, fd, LOOP_READ, conn_io, c, &c->io);
        if (r >= 0)
                r = loop_timer_new(s->loop, conn_timeout, c, &c->timer);
        if (r >= 0)
                r = loop_timer_arm(c->timer, HTTP_TIMEOUT_MS);
        if (r < 0) {
                c->fd = -1; /* the caller closes it */
                conn_free(c);
                return r;
        }
        return 0;
}

/* The listener's callback: takes fd over, or refuses it (closed by the listener). */
static int server_accept(int fd, void *userdata) {
        struct http_server *s = userdata;
        int r;

        if (s->n_conns >= HTTP_MAX_CONNECTIONS) {
                log_debug("Too many HTTP connections, refusing one");
                return -EBUSY; /* the listener sends the 503 */
        }

        r = conn_new(s, fd);
        if (r < 0)
                return log_debug_errno(r, "Failed to set up an HTTP connection: %m");
        return 0;
}

void http_server_free(struct http_server *s) {
        if (!s)
                return;
        while (s->conns)
                conn_free(s->conns);
        listener_free(s->listener);
        if (s->free_userdata)
                s->free_userdata(s->userdata);
        free(s);
}

static void http_server_freep(struct http_server **s) {
        http_server_free(*s);
}

int http_server_new(struct loop *l, const struct sockaddr *sa, socklen_t len, http_handler_fn fn,
                    void *userdata, struct http_server **ret) {
        static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
                                   "Content-Length: 0\r\n"
                                   "Connection: close\r\n\r\n";
        _cleanup_(http_server_freep) struct http_server *s = NULL;
        _cleanup_close_ int fd = -1;
        int r;

        assert(l);
        assert(sa);
        assert(fn);
        assert(ret);

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->loop = l;
        s->fn = fn;
        s->userdata = userdata;

        fd = listener_bind(sa, len);
        if (fd < 0)
                return log_debug_errno(fd, "Failed to bind the HTTP socket: %m");
        if (listen(fd, 64) < 0)
                return log_debug_errno(errno, "Failed to listen on the HTTP socket: %m");

        r = listener_new(l, fd, busy, server_accept, s, &s->listener);
        if (r < 0)
                return r;
        TAKE_FD(fd);

        *ret = TAKE_PTR(s);
        return 0;
}

int http_server_get_address(struct http_server *s, struct sockaddr_storage *sa, socklen_t *len) {
        assert(s);
        assert(sa);
        assert(len);

        *len = sizeof *sa;
        if (getsockname(listener_get_fd(s->listener), (struct sockaddr *)sa, len) < 0)
                return -errno;
        return 0;
}

struct metrics {
        struct stats *stats;
        char *role;
};

static void metrics_free(void *userdata) {
        struct metrics *m = userdata;

        if (!m)
                return;
        free(m->role);
        free(m);
}

static int metrics_handler(const char *method, const char *path, struct http_response *resp,
                           void *userdata) {
        struct metrics *m = userdata;

        if (!streq(path, "/metrics"))
                return -ENOENT;

        resp->body = stats_to_prometheus(m->stats, m->role);
        if (!resp->body)
                return -ENOMEM;
        resp->status = 200;
        resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
        return 0;
}

int http_serve_metrics(struct loop *l, const struct sockaddr *sa, socklen_t len,
                       struct stats *stats, const char *role, struct http_server **ret) {
        struct metrics *m;
        int r;

        assert(stats);
        assert(role);

        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->stats = stats;
        m->role = strdup(role);
        if (!m->role) {
                metrics_free(m);
                return -ENOMEM;
        }

        r = http_server_new(l, sa, len, metrics_handler, m, ret);
        if (r < 0) {
                metrics_free(m);
                return r;
        }
        (*ret)->free_userdata = metrics_free;
        return 0;
}
