/* SPDX-License-Identifier: MIT */
#pragma once

/* A small SIP user agent on sofia-sip's nta for integration tests: it sends requests (out of
 * dialog or inside a dialog it keeps: route set, tags, CSeq), waits for their final response,
 * and queues the requests it receives (NOTIFY...), answering each with a chosen status. All
 * agents share one su_root, stepped while a test waits. */

#include <stdbool.h>

#include <sofia-sip/msg.h>
#include <sofia-sip/sip.h>

struct tl_ua;
struct tl_dialog;

/* An agent on 127.0.0.1 (UDP and TCP, a free port); fails the test when it cannot bind. */
struct tl_ua *tl_ua_new(void);
/* The same on another loopback address ("127.0.0.2"). */
struct tl_ua *tl_ua_new_at(const char *host);
void tl_ua_free(struct tl_ua *ua);
int tl_ua_port(struct tl_ua *ua);
/* Out-of-dialog requests go to this URI (an outbound proxy, "sip:127.0.0.1:5060;transport=tcp")
 * instead of their request URI; NULL: to the request URI. */
void tl_ua_set_proxy(struct tl_ua *ua, const char *uri);
/* Status the agent answers received requests with (200 by default). */
void tl_ua_set_reply(struct tl_ua *ua, int status);

/* A dialog from `from` to `to` (SIP URIs as text); requests go to the request URI given to
 * tl_ua_send until a 2xx gives the dialog its remote tag, route set and target. */
struct tl_dialog *tl_dialog_new(struct tl_ua *ua, const char *from, const char *to);
void tl_dialog_free(struct tl_dialog *d);

/* Sends method to ruri on the dialog with extra header lines ("Event: presence\r\nExpires:
 * 60", may be NULL) and a body (may be NULL; then no Content-Type is added by this function).
 * Waits up to 10 s for the final response and returns its status (-1 on timeout); *ret (may
 * be NULL) receives the response (msg_destroy it). */
int tl_ua_send(struct tl_dialog *d, const char *method, const char *ruri, const char *headers,
               const char *body, msg_t **ret);

/* The next request the agent received (waiting up to timeout_ms), or NULL. msg_destroy it. */
msg_t *tl_ua_next_request(struct tl_ua *ua, int timeout_ms);
/* Runs the shared loop for ms milliseconds (lets the agents receive and answer). */
void tl_sip_run(int ms);
