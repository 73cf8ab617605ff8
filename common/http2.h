/* SPDX-License-Identifier: MIT */
#pragma once

/* An HTTP client on the loop (pushd to the providers, the proxy to pushd): libcurl's multi
 * interface driven by loop_io watches and one loop_timer (no thread, no blocking). HTTP/2 over TLS with multiplexing: transfers to the same
 * host and port share one connection (CURLPIPE_MULTIPLEX, PIPEWAIT, at most one connection per
 * host), which is kept open between pushes. A server that does not offer h2 in ALPN gets
 * HTTP/1.1. */

#include <stddef.h>
#include <stdint.h>

struct loop;
struct http2;
struct curl_slist;

struct http2_response {
        int error;              /* 0, or -errno for a transport failure (status then 0) */
        const char *error_text; /* curl's message when error < 0 */
        long status;
        const char *body; /* NUL-terminated, truncated to HTTP2_MAX_RESPONSE bytes */
        size_t body_len;
        long http_version;       /* 2 for HTTP/2, 1 for HTTP/1.x */
        uint64_t retry_after_ms; /* from a Retry-After header in seconds, 0 without */
};

#define HTTP2_MAX_RESPONSE 65536
/* Transfers handed to libcurl at once per client; more wait in order for a slot (their
 * timeout starts when they start). */
#define HTTP2_MAX_ACTIVE 100

typedef void (*http2_done_fn)(const struct http2_response *resp, void *userdata);

struct http2_request {
        const char *method; /* "GET" or "POST" */
        const char *url;
        struct curl_slist *headers; /* taken over, also on failure */
        const char *body;           /* copied; may be NULL */
        size_t body_len;
        const char *ca_file;   /* NULL: the system's CAs */
        const char *cert_file; /* TLS client certificate (PEM), optional */
        const char *key_file;  /* its key; NULL: in cert_file */
        uint64_t timeout_ms;
        /* Called with the userdata when the transfer is dropped (http2_cancel, http2_free)
         * before its callback ran; may be NULL. */
        void (*drop)(void *userdata);
};

int http2_new(struct loop *l, struct http2 **ret);
/* Drops transfers in flight without calling their callbacks. Accepts NULL. */
void http2_free(struct http2 *h);

/* Starts a transfer; cb runs exactly once, from the loop, never from within this call.
 * Returns an opaque handle to cancel it, or NULL on failure (-ENOMEM, bad options). */
struct http2_transfer;
int http2_send(struct http2 *h, const struct http2_request *req, http2_done_fn cb, void *userdata,
               struct http2_transfer **ret);
/* Drops a transfer without calling its callback. */
void http2_cancel(struct http2_transfer *t);

/* Connections opened so far (for the counters and tests). */
uint64_t http2_connections_opened(struct http2 *h);
/* Transfers in flight. */
size_t http2_in_flight(struct http2 *h);
/* Of those, the ones waiting for a slot (HTTP2_MAX_ACTIVE). */
size_t http2_waiting(struct http2 *h);
