/* SPDX-License-Identifier: MIT */
#pragma once

/* A minimal SIP user agent over UDP on 127.0.0.1 for tests that need to look at every request
 * a device receives (order, duplicates) or to play a device that goes away and comes back:
 * plain text messages on a socket, no transaction layer. Checks fail the running test. */

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct tl_ua {
        int fd;
        int port;
        int proxy_port;
        char user[64];
        char instance[64]; /* +sip.instance value (a URN), "" for none */
        char contact_params[1024]; /* URI parameters of the Contact (";pn-provider=..."), "" */
        char contact_header_params[256]; /* Contact header parameters (";message-expires=60"), "" */
        char register_headers[256]; /* more REGISTER headers ("Supported: gruu\r\n"), "" */
        char last_response[8192];   /* the final response to the last REGISTER */
        unsigned cseq;
        char reg_call_id[64];
        struct sockaddr_storage peer; /* where the last request came from */
        socklen_t peer_len;
};

/* A socket on a free port; user@localhost, talking to the proxy at 127.0.0.1:proxy_port. */
void tl_ua_open(struct tl_ua *ua, const char *user, const char *instance, int proxy_port);
/* Closes the socket: the device is gone (packets to its port are refused). */
void tl_ua_close(struct tl_ua *ua);
/* The same device on a new socket and port, as after a network change. */
void tl_ua_reopen(struct tl_ua *ua);

/* REGISTER with the given expiry; returns the final status. */
int tl_ua_register(struct tl_ua *ua, int expires);
/* MESSAGE to to_user@localhost (or to a full URI when to_user has a ':') with a text/plain body (content_type NULL) or another type;
 * extra_headers ("Name: value\r\n"..., may be NULL). Returns the final status; the final
 * response is copied to response (when not NULL, size bytes). */
int tl_ua_message(struct tl_ua *ua, const char *to_user, const char *content_type,
                  const char *body, const char *extra_headers, char *response, size_t size);

/* Any request (method) with a body; to_tag non-NULL makes it look in-dialog. */
int tl_ua_request(struct tl_ua *ua, const char *method, const char *to_user, const char *to_tag,
                  const char *content_type, const char *body, const char *extra_headers,
                  char *response, size_t size);

/* The next request received within timeout_ms, as text (malloc'd), or NULL. Retransmissions
 * of a request already returned (same top Via branch) are answered again with the status
 * given before, when there was one, and skipped. */
char *tl_ua_recv_request(struct tl_ua *ua, int timeout_ms);
/* Answers a request returned by tl_ua_recv_request() (Via, From, To with a tag, Call-ID,
 * CSeq and Record-Route copied; a Contact for 2xx to INVITE; an SDP body when sdp). */
void tl_ua_reply(struct tl_ua *ua, const char *request, int status, bool sdp);
/* The same with more header lines ("Name: value\r\n"...; may be NULL). */
void tl_ua_reply_headers(struct tl_ua *ua, const char *request, int status, bool sdp,
                         const char *headers);

/* Header value (first occurrence, trimmed) of a message, malloc'd, or NULL. */
char *tl_sip_header(const char *msg, const char *name);
/* The body (after the blank line), malloc'd ("" when none). */
char *tl_sip_body(const char *msg);
/* The method of a request, or the status of a response (as text), malloc'd. */
char *tl_sip_method(const char *msg);
