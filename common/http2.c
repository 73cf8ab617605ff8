/* SPDX-License-Identifier: MIT */
#define LOG_SUBSYSTEM LOG_http
#include <curl/curl.h>
#include <stdio.h>

#include "http2.h"
#include "log.h"
#include "loop.h"

struct http2_transfer {
        struct http2 *h;
        CURL *easy;
        struct curl_slist *headers;
        char *body;
        size_t body_len;
        http2_done_fn cb;
        void (*drop)(void *userdata);
        void *userdata;
        char errbuf[CURL_ERROR_SIZE];
        uint64_t retry_after_ms;
        struct http2_transfer *prev, *next;        /* every transfer */
        struct http2_transfer *qprev, *qnext;      /* waiting for a slot */
        bool active;                               /* in the multi handle */
        bool queued;
};

struct http2_socket {
        struct loop_io *io;
};

struct http2 {
        struct loop *loop;
        CURLM *multi;
        struct loop_timer *timer;
        struct http2_transfer *transfers;
        size_t n_transfers;
        /* At most HTTP2_MAX_ACTIVE transfers are in curl's multi handle; the others wait here
         * in order. libcurl 7.88's curl_multi_remove_handle walks its lists of transfers, so
         * handing it thousands at once (a burst of pushes) made each completion cost in
         * proportion to the backlog. */
        struct http2_transfer *queue_head, *queue_tail;
        size_t n_active;
        uint64_t connections;
        bool freeing;
};

static int activate(struct http2_transfer *t) {
        struct http2 *h = t->h;
        if (curl_multi_add_handle(h->multi, t->easy) != CURLM_OK)
                return -EINVAL;
        t->active = true;
        h->n_active++;
        return 0;
}

static void deactivate(struct http2_transfer *t) {
        if (!t->active)
                return;
        curl_multi_remove_handle(t->h->multi, t->easy);
        t->active = false;
        t->h->n_active--;
}

static void queue_unlink(struct http2_transfer *t) {
        struct http2 *h = t->h;
        if (!t->queued)
                return;
        if (t->qprev)
                t->qprev->qnext = t->qnext;
        else
                h->queue_head = t->qnext;
        if (t->qnext)
                t->qnext->qprev = t->qprev;
        else
                h->queue_tail = t->qprev;
        t->qprev = t->qnext = NULL;
        t->queued = false;
}

static void queue_append(struct http2_transfer *t) {
        struct http2 *h = t->h;
        t->qprev = h->queue_tail;
        t->qnext = NULL;
        if (h->queue_tail)
                h->queue_tail->qnext = t;
        else
                h->queue_head = t;
        h->queue_tail = t;
        t->queued = true;
}

/* Moves waiting transfers into free slots. A transfer curl refuses stays first in line and is
 * tried again when the next slot frees. */
static void start_queued(struct http2 *h) {
        while (h->queue_head && h->n_active < HTTP2_MAX_ACTIVE && !h->freeing) {
                struct http2_transfer *t = h->queue_head;
                if (activate(t) < 0) {
                        log_debug("Cannot start a queued transfer; it waits for the next slot.");
                        return;
                }
                queue_unlink(t);
        }
}

static void transfer_free(struct http2_transfer *t) {
        if (!t)
                return;
        struct http2 *h = t->h;
        if (t->cb && t->drop)
                t->drop(t->userdata);
        bool was_active = t->active;
        queue_unlink(t);
        if (t->easy) {
                deactivate(t);
                curl_easy_cleanup(t->easy);
        }
        curl_slist_free_all(t->headers);
        free(t->body);
        if (t->prev)
                t->prev->next = t->next;
        else if (h->transfers == t)
                h->transfers = t->next;
        if (t->next)
                t->next->prev = t->prev;
        h->n_transfers--;
        free(t);
        if (was_active)
                start_queued(h);
}

static void check_done(struct http2 *h) {
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(h->multi, &left))) {
                if (m->msg != CURLMSG_DONE)
                        continue;
                struct http2_transfer *t = NULL;
                curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&t);
                long connects = 0, version = 0;
                curl_easy_getinfo(t->easy, CURLINFO_NUM_CONNECTS, &connects);
                curl_easy_getinfo(t->easy, CURLINFO_HTTP_VERSION, &version);
                h->connections += (uint64_t)connects;
                struct http2_response resp = {
                        .body = t->body ? t->body : "",
                        .body_len = t->body_len,
                        .http_version = version == CURL_HTTP_VERSION_2_0 ? 2 : 1,
                        .retry_after_ms = t->retry_after_ms,
                };
                CURLcode rc = m->data.result;
                if (rc == CURLE_OK)
                        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &resp.status);
                else {
                        resp.error = rc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EIO;
                        resp.error_text = t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc);
                }
                log_debug("%s: %ld (%s)", "transfer done", resp.status,
                          resp.error ? resp.error_text : "ok");
                http2_done_fn cb = t->cb;
                void *ud = t->userdata;
                /* The body stays valid during the callback; the transfer goes after. */
                deactivate(t);
                t->cb = NULL;
                cb(&resp, ud);
                transfer_free(t);
                start_queued(h);
        }
}

static void on_io(struct loop_io *io, int fd, unsigned events, void *userdata) {
        struct http2 *h = userdata;
        int flags = 0, running;
        if (events & LOOP_READ)
                flags |= CURL_CSELECT_IN;
        if (events & LOOP_WRITE)
                flags |= CURL_CSELECT_OUT;
        if (events & LOOP_ERROR)
                flags |= CURL_CSELECT_ERR;
        curl_multi_socket_action(h->multi, fd, flags, &running);
        check_done(h);
}

static void on_timer(struct loop_timer *timer, void *userdata) {
        struct http2 *h = userdata;
        int running;
        curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        check_done(h);
}

static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
        struct http2 *h = userp;
        struct http2_socket *sock = socketp;
        if (what == CURL_POLL_REMOVE) {
                if (sock) {
                        loop_io_free(sock->io);
                        free(sock);
                        curl_multi_assign(h->multi, s, NULL);
                }
                return 0;
        }
        unsigned events =
                (what & CURL_POLL_IN ? LOOP_READ : 0) | (what & CURL_POLL_OUT ? LOOP_WRITE : 0);
        if (!sock) {
                sock = calloc(1, sizeof *sock);
                if (!sock)
                        return -1;
                if (loop_io_add(h->loop, s, events, on_io, h, &sock->io) < 0) {
                        free(sock);
                        return -1;
                }
                curl_multi_assign(h->multi, s, sock);
                return 0;
        }
        return loop_io_set_events(sock->io, events) < 0 ? -1 : 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp) {
        struct http2 *h = userp;
        if (timeout_ms < 0)
                loop_timer_disarm(h->timer);
        else
                loop_timer_arm(h->timer, (uint64_t)timeout_ms);
        return 0;
}

/* Every fd curl opens is close-on-exec. */
static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a) {
        return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata) {
        struct http2_transfer *t = userdata;
        size_t n = size * nmemb, room = HTTP2_MAX_RESPONSE - t->body_len;
        size_t take = MIN(n, room);
        if (take > 0) {
                char *b = realloc(t->body, t->body_len + take + 1);
                if (!b)
                        return 0;
                memcpy(b + t->body_len, ptr, take);
                t->body = b;
                t->body_len += take;
                b[t->body_len] = 0;
        }
        return n;
}

/* Only Retry-After (delay-seconds form) is kept; a date form is ignored. */
static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata) {
        struct http2_transfer *t = userdata;
        size_t n = size * nitems;
        static const char name[] = "retry-after:";
        if (n > sizeof name - 1 && n < 64 && strncasecmp(buf, name, sizeof name - 1) == 0) {
                char value[64];
                memcpy(value, buf + sizeof name - 1, n - (sizeof name - 1));
                value[n - (sizeof name - 1)] = 0;
                char *end;
                unsigned long long secs = strtoull(value, &end, 10);
                while (*end == ' ' || *end == '\r' || *end == '\n')
                        end++;
                if (end != value && *end == 0 && secs <= 86400)
                        t->retry_after_ms = secs * 1000;
        }
        return n;
}

int http2_new(struct loop *l, struct http2 **ret) {
        static bool initialised;
        if (!initialised) {
                if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                        return -EIO;
                initialised = true;
        }
        struct http2 *h = calloc(1, sizeof *h);
        if (!h)
                return -ENOMEM;
        h->loop = l;
        h->multi = curl_multi_init();
        if (!h->multi || loop_timer_new(l, on_timer, h, &h->timer) < 0) {
                http2_free(h);
                return -ENOMEM;
        }
        curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
        curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
        curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
        curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
        curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
        curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 1L);
        *ret = h;
        return 0;
}

void http2_free(struct http2 *h) {
        if (!h)
                return;
        h->freeing = true;
        while (h->transfers)
                transfer_free(h->transfers);
        if (h->multi)
                curl_multi_cleanup(h->multi); /* closes the connections: CURL_POLL_REMOVE */
        loop_timer_free(h->timer);
        free(h);
}

void http2_cancel(struct http2_transfer *t) {
        transfer_free(t);
}

int http2_send(struct http2 *h, const struct http2_request *req, http2_done_fn cb, void *userdata,
               struct http2_transfer **ret) {
        struct http2_transfer *t = calloc(1, sizeof *t);
        if (!t) {
                curl_slist_free_all(req->headers);
                return -ENOMEM;
        }
        t->h = h;
        t->headers = req->headers;
        t->userdata = userdata;
        t->next = h->transfers;
        if (h->transfers)
                h->transfers->prev = t;
        h->transfers = t;
        h->n_transfers++;

        CURL *e = t->easy = curl_easy_init();
        if (!e) {
                transfer_free(t);
                return -ENOMEM;
        }
        bool ok = true;
#define SET(opt, val) ok = ok && curl_easy_setopt(e, opt, val) == CURLE_OK
        SET(CURLOPT_URL, req->url);
        SET(CURLOPT_PRIVATE, t);
        SET(CURLOPT_ERRORBUFFER, t->errbuf);
        SET(CURLOPT_NOSIGNAL, 1L);
        SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
        SET(CURLOPT_PIPEWAIT, 1L);
        SET(CURLOPT_OPENSOCKETFUNCTION, open_socket);
        SET(CURLOPT_PROTOCOLS_STR, "http,https");
        SET(CURLOPT_WRITEFUNCTION, on_data);
        SET(CURLOPT_WRITEDATA, t);
        SET(CURLOPT_HEADERFUNCTION, on_header);
        SET(CURLOPT_HEADERDATA, t);
        SET(CURLOPT_TIMEOUT_MS, (long)(req->timeout_ms ? req->timeout_ms : 10000));
        SET(CURLOPT_CONNECTTIMEOUT_MS, (long)(req->timeout_ms ? req->timeout_ms : 10000));
        SET(CURLOPT_HTTPHEADER, t->headers);
        SET(CURLOPT_TCP_KEEPALIVE, 1L);
        if (req->ca_file)
                SET(CURLOPT_CAINFO, req->ca_file);
        if (req->cert_file) {
                SET(CURLOPT_SSLCERT, req->cert_file);
                SET(CURLOPT_SSLKEY, req->key_file ? req->key_file : req->cert_file);
        }
        if (streq(req->method, "POST")) {
                SET(CURLOPT_POSTFIELDSIZE, (long)req->body_len);
                SET(CURLOPT_COPYPOSTFIELDS, req->body ? req->body : "");
        } else
                SET(CURLOPT_HTTPGET, 1L);
#undef SET
        if (!ok || (h->n_active < HTTP2_MAX_ACTIVE && !h->queue_head && activate(t) < 0)) {
                transfer_free(t);
                return -EINVAL;
        }
        if (!t->active)
                queue_append(t);
        /* From here on a drop tells the owner; before, the caller still owns userdata. */
        t->cb = cb;
        t->drop = req->drop;
        if (ret)
                *ret = t;
        return 0;
}

uint64_t http2_connections_opened(struct http2 *h) {
        return h->connections;
}

size_t http2_in_flight(struct http2 *h) {
        return h->n_transfers;
}

size_t http2_waiting(struct http2 *h) {
        return h->n_transfers - h->n_active;
}
