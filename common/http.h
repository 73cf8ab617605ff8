/* SPDX-License-Identifier: MIT */
#pragma once

/* A tiny HTTP/1.1 server on the loop, enough for a Prometheus scrape: one request per
 * connection (the reply says "Connection: close"), GET and HEAD only (others get 405 without
 * calling the handler), request bodies ignored. Limits: HTTP_MAX_HEADER bytes of request line and
 * headers (431 beyond), HTTP_MAX_CONNECTIONS at once (503 beyond), HTTP_TIMEOUT_MS to receive the
 * request and HTTP_TIMEOUT_MS without progress while sending the reply. */

#include <stddef.h>
#include <sys/socket.h>

struct loop;
struct stats;
struct http_server;

#define HTTP_MAX_HEADER 8192
#define HTTP_MAX_CONNECTIONS 32
#define HTTP_TIMEOUT_MS 5000

struct http_response {
        int status;               /* 200 unless set */
        const char *content_type; /* static string; "text/plain; charset=utf-8" unless set */
        char *body;               /* malloc'd, freed by the server; NULL = empty */
        size_t body_len;          /* 0 = strlen(body) */
};

/* method: "GET" or "HEAD" (the body is then not sent); path: the request target without its
 * query string. Return 0 with resp filled, -ENOENT for a 404, another -errno for a 500; on error
 * resp->body is still freed if set. */
typedef int (*http_handler_fn)(const char *method, const char *path, struct http_response *resp,
                               void *userdata);

/* Listens on sa (TCP over IPv4 or IPv6, port 0 picks one; SO_REUSEADDR). */
int http_server_new(struct loop *l, const struct sockaddr *sa, socklen_t len, http_handler_fn fn,
                    void *userdata, struct http_server **ret);
/* Closes the listener and every connection. Accepts NULL. */
void http_server_free(struct http_server *s);
/* The bound address (to learn the port picked for port 0). */
int http_server_get_address(struct http_server *s, struct sockaddr_storage *sa, socklen_t *len);

/* A server answering GET /metrics with stats_to_prometheus(stats, role) (text format 0.0.4),
 * 404 elsewhere. stats must outlive the server; role is copied. */
int http_serve_metrics(struct loop *l, const struct sockaddr *sa, socklen_t len,
                       struct stats *stats, const char *role, struct http_server **ret);
