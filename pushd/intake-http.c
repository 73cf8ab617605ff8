/* SPDX-License-Identifier: MIT */
/* POST /v1/push: one JSON job per request (the schema of job.h), "Authorization: Bearer
 * <[http-intake] bearer-token>" compared in constant time. Answers 202 {"id":...,"tokens":n}
 * once the job is queued, 400 {"error":...} for an invalid job, 401 without the right token,
 * 404/405 elsewhere, 413 for a body over max-body-size, 503 while max-jobs are held or when
 * stopping. With Redis connected the job is added to the stream ("queued":"stream", durable and
 * shared by the instances); without, it is kept in this instance's memory ("queued":"memory",
 * lost if pushd dies before sending it). */
#define LOG_SUBSYSTEM LOG_http
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <sys/socket.h>

#include "job.h"
#include "listener.h"
#include "log.h"
#include "loop.h"
#include "pushd-internal.h"
#include "redis.h"

static void reply_json(struct evhttp_request *req, int code, const char *reason, json_t *body) {
        struct evbuffer *out = evbuffer_new();
        char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        json_decref(body);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "application/json");
        if (out && text) {
                evbuffer_add(out, text, strlen(text));
                evbuffer_add(out, "\n", 1);
        }
        evhttp_send_reply(req, code, reason, out);
        if (out)
                evbuffer_free(out);
        free(text);
}

static void reply_error(struct evhttp_request *req, int code, const char *reason,
                        const char *message) {
        reply_json(req, code, reason, json_pack("{s:s}", "error", message));
}

/* Hashing first makes the comparison constant-time whatever the lengths. */
static bool bearer_ok(const char *header, const char *expected) {
        if (!header || strncasecmp(header, "Bearer ", 7) != 0)
                return false;
        const char *given = header + 7;
        while (*given == ' ')
                given++;
        unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)given, strlen(given), a);
        SHA256((const unsigned char *)expected, strlen(expected), b);
        return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

struct http_pending {
        struct pushd *p;
        struct evhttp_request *req;
        struct push_job *job;
        char *text;
};

/* Takes job and text over. */
static void queue_in_memory(struct pushd *p, struct evhttp_request *req, struct push_job *job,
                            char *text) {
        if (pushd_free_slots(p) == 0) {
                push_job_free(job);
                free(text);
                stats_inc(p->stats.http_full);
                evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
                reply_error(req, HTTP_SERVUNAVAIL, "Service Unavailable",
                            "too many jobs queued, try again later");
                return;
        }
        json_t *answer = json_pack("{s:s,s:I,s:s}", "id", job->id, "tokens",
                                   (json_int_t)job->n_tokens, "queued", "memory");
        int r = pushd_job_start(p, job, NULL, text, false);
        free(text);
        if (r < 0) {
                json_decref(answer);
                reply_error(req, HTTP_INTERNAL, "Internal Server Error", strerror(-r));
                return;
        }
        reply_json(req, 202, "Accepted", answer);
}

static void on_xadd(struct redis *r, redisReply *reply, int error, void *userdata) {
        struct http_pending *hp = userdata;
        struct pushd *p = hp->p;
        p->redis_pending--;
        if (!p->http) {
                /* The intake was closed (stopping): evhttp freed the request. */
                push_job_free(hp->job);
                free(hp->text);
                free(hp);
                pushd_check_drained(p);
                return;
        }
        if (error >= 0 && reply->type == REDIS_REPLY_STRING) {
                json_t *answer = json_pack("{s:s,s:I,s:s,s:s}", "id", hp->job->id, "tokens",
                                           (json_int_t)hp->job->n_tokens, "queued", "stream",
                                           "stream-id", reply->str);
                reply_json(hp->req, 202, "Accepted", answer);
                push_job_free(hp->job);
                free(hp->text);
        } else {
                log_warning_ratelimited("XADD of an HTTP job failed (%s): kept in memory.",
                                        error < 0 ? strerror(-error) : reply->str);
                queue_in_memory(p, hp->req, hp->job, hp->text);
        }
        free(hp);
}

static void on_request(struct evhttp_request *req, void *userdata) {
        struct pushd *p = userdata;
        stats_inc(p->stats.http_requests);
        const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
        if (!path || !streq(path, "/v1/push")) {
                reply_error(req, HTTP_NOTFOUND, "Not Found", "no such resource: POST /v1/push");
                return;
        }
        if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
                evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
                reply_error(req, HTTP_BADMETHOD, "Method Not Allowed", "use POST");
                return;
        }
        const char *auth =
                evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
        if (!bearer_ok(auth, p->config.http_bearer_token)) {
                stats_inc(p->stats.http_unauthorized);
                evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                                  "Bearer realm=\"sipfleet-pushd\"");
                reply_error(req, 401, "Unauthorized",
                            auth ? "wrong bearer token" : "missing Authorization: Bearer");
                return;
        }
        if (p->stopping) {
                reply_error(req, HTTP_SERVUNAVAIL, "Service Unavailable", "pushd is stopping");
                return;
        }
        if (pushd_free_slots(p) == 0) {
                stats_inc(p->stats.http_full);
                evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
                reply_error(req, HTTP_SERVUNAVAIL, "Service Unavailable",
                            "too many jobs queued, try again later");
                return;
        }
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t len = evbuffer_get_length(in);
        const char *body = (const char *)evbuffer_pullup(in, -1);
        struct push_job *job = NULL;
        _cleanup_free_ char *error = NULL;
        int r = push_job_parse(body ? body : "", body ? len : 0, &job, &error);
        if (r < 0) {
                stats_inc(p->stats.http_bad_request);
                reply_error(req, HTTP_BADREQUEST, "Bad Request", error ? error : strerror(-r));
                return;
        }
        if (!job->id &&
            asprintf(&job->id, "http-%llu-%llu", (unsigned long long)(realtime_msec() / 1000),
                     (unsigned long long)++p->http_serial) < 0) {
                job->id = NULL;
                push_job_free(job);
                reply_error(req, HTTP_INTERNAL, "Internal Server Error", "out of memory");
                return;
        }
        stats_inc(p->stats.jobs_http);
        json_t *canonical = push_job_to_json(job);
        char *text = canonical ? json_dumps(canonical, JSON_COMPACT) : NULL;
        json_decref(canonical);
        if (!text) {
                push_job_free(job);
                reply_error(req, HTTP_INTERNAL, "Internal Server Error", "out of memory");
                return;
        }
        /* With Redis, the job joins the stream like any other: durable, and shared with the
         * other instances. The reply waits for XADD (libevent drops it safely if the client
         * went away meanwhile). */
        if (p->redis && redis_is_connected(p->redis)) {
                struct http_pending *hp = calloc(1, sizeof *hp);
                if (hp) {
                        *hp = (struct http_pending){.p = p, .req = req, .job = job, .text = text};
                        if (redis_command(p->redis, on_xadd, hp, "XADD %s * job %s",
                                          p->config.stream, text) >= 0) {
                                p->redis_pending++;
                                return;
                        }
                        free(hp);
                }
        }
        queue_in_memory(p, req, job, text);
}

int intake_http_start(struct pushd *p) {
        const struct conf_address *a = &p->config.http_listen;
        if (a->sa.ss_family != AF_INET && a->sa.ss_family != AF_INET6)
                return log_error_errno(EINVAL, "[http-intake] listen '%s' must be host:port",
                                       a->str);
        int fd = listener_bind((const struct sockaddr *)&a->sa, a->len);
        if (fd < 0)
                return log_error_errno(fd, "Cannot bind [http-intake] listen '%s': %m", a->str);
        if (listen(fd, 128) < 0) {
                int e = errno;
                close(fd);
                return log_error_errno(e, "Cannot listen on '%s': %m", a->str);
        }
        p->http = evhttp_new(loop_event_base(p->loop));
        if (!p->http) {
                close(fd);
                return log_oom();
        }
        evhttp_set_max_body_size(p->http, (ev_ssize_t)p->config.http_max_body);
        evhttp_set_max_headers_size(p->http, 8192);
        evhttp_set_timeout(p->http, 10);
        evhttp_set_allowed_methods(p->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                                    EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD);
        evhttp_set_gencb(p->http, on_request, p);
        p->http_socket = evhttp_accept_socket_with_handle(p->http, fd);
        if (!p->http_socket) {
                close(fd);
                return log_error_errno(EIO, "Cannot accept on '%s'", a->str);
        }
        log_notice("HTTP intake on %s: POST /v1/push.", a->str);
        return 0;
}

void intake_http_stop(struct pushd *p) {
        if (p->http) {
                evhttp_free(p->http); /* closes the listener and the connections */
                p->http = NULL;
                p->http_socket = NULL;
        }
}
