/* SPDX-License-Identifier: MIT */
/* The minimal test UA of sipua.h. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"
#include "sipua.h"
#include "testlib.h"

#define UA_MAX_MESSAGE 65536
#define UA_REMEMBERED 128

/* Answers already sent, by the top Via branch of their request, so that a retransmitted
 * request gets the same answer without the test seeing it twice. */
static struct {
        int port;
        char *branch;
        char *response;
} answered[UA_REMEMBERED];
static size_t answered_next;

static void bind_socket(struct tl_ua *ua) {
        ua->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(ua->fd, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(bind(ua->fd, (struct sockaddr *)&sa, sizeof sa), 0);
        socklen_t len = sizeof sa;
        ck_assert_int_eq(getsockname(ua->fd, (struct sockaddr *)&sa, &len), 0);
        ua->port = ntohs(sa.sin_port);
}

void tl_ua_open(struct tl_ua *ua, const char *user, const char *instance, int proxy_port) {
        *ua = (struct tl_ua){.fd = -1, .proxy_port = proxy_port, .cseq = 1};
        snprintf(ua->user, sizeof ua->user, "%s", user);
        snprintf(ua->instance, sizeof ua->instance, "%s", instance ? instance : "");
        snprintf(ua->reg_call_id, sizeof ua->reg_call_id, "reg-%s-%d-%ld", user, getpid(),
                 random());
        bind_socket(ua);
}

void tl_ua_close(struct tl_ua *ua) {
        if (ua->fd >= 0)
                close(ua->fd);
        ua->fd = -1;
}

void tl_ua_reopen(struct tl_ua *ua) {
        tl_ua_close(ua);
        bind_socket(ua);
}

static void send_text(struct tl_ua *ua, const char *text, const struct sockaddr *to,
                      socklen_t to_len) {
        struct sockaddr_in proxy = {.sin_family = AF_INET,
                                    .sin_port = htons((uint16_t)ua->proxy_port),
                                    .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (!to) {
                to = (struct sockaddr *)&proxy;
                to_len = sizeof proxy;
        }
        ssize_t n = sendto(ua->fd, text, strlen(text), 0, to, to_len);
        ck_assert_msg(n == (ssize_t)strlen(text), "sendto: %s", strerror(errno));
}

/* One datagram within timeout_ms into buf (NUL-terminated); its length, or 0 on timeout. */
static size_t recv_text(struct tl_ua *ua, char *buf, size_t size, int timeout_ms) {
        struct pollfd pfd = {.fd = ua->fd, .events = POLLIN};
        int r = poll(&pfd, 1, timeout_ms);
        ck_assert_int_ge(r, 0);
        if (r == 0)
                return 0;
        ua->peer_len = sizeof ua->peer;
        ssize_t n = recvfrom(ua->fd, buf, size - 1, 0, (struct sockaddr *)&ua->peer,
                             &ua->peer_len);
        if (n < 0) /* ICMP errors of earlier sends */
                return recv_text(ua, buf, size, timeout_ms);
        buf[n] = '\0';
        return (size_t)n;
}

char *tl_sip_header(const char *msg, const char *name) {
        size_t nl = strlen(name);
        const char *end = strstr(msg, "\r\n\r\n");
        for (const char *p = strstr(msg, "\r\n"); p && (!end || p < end); p = strstr(p, "\r\n")) {
                p += 2;
                if (strncasecmp(p, name, nl) == 0 && (p[nl] == ':' || p[nl] == ' ')) {
                        const char *v = strchr(p, ':') + 1;
                        while (*v == ' ' || *v == '\t')
                                v++;
                        const char *e = strstr(v, "\r\n");
                        return strndup(v, e ? (size_t)(e - v) : strlen(v));
                }
        }
        return NULL;
}

/* Every "Name: value" line of a header, in order, as lines ending with CRLF. */
static char *header_lines(const char *msg, const char *name) {
        size_t nl = strlen(name);
        const char *end = strstr(msg, "\r\n\r\n");
        char *out = strdup("");
        for (const char *p = strstr(msg, "\r\n"); p && (!end || p < end); p = strstr(p, "\r\n")) {
                p += 2;
                if (strncasecmp(p, name, nl) == 0 && (p[nl] == ':' || p[nl] == ' ')) {
                        const char *e = strstr(p, "\r\n");
                        char *n = NULL;
                        ck_assert_int_ge(asprintf(&n, "%s%.*s\r\n", out, (int)(e - p), p), 0);
                        free(out);
                        out = n;
                }
        }
        return out;
}

char *tl_sip_body(const char *msg) {
        const char *b = strstr(msg, "\r\n\r\n");
        return strdup(b ? b + 4 : "");
}

char *tl_sip_method(const char *msg) {
        if (strncmp(msg, "SIP/2.0 ", 8) == 0)
                return strndup(msg + 8, 3);
        return strndup(msg, strcspn(msg, " "));
}

static char *via_branch(const char *msg) {
        _cleanup_free_ char *via = tl_sip_header(msg, "Via");
        const char *b = via ? strstr(via, "branch=") : NULL;
        return b ? strndup(b + 7, strcspn(b + 7, ";, ")) : strdup("");
}

/* Sends a request and waits for its final response (requests arriving meanwhile are
 * dropped: the callers here only send when nothing is expected). */
static int transaction(struct tl_ua *ua, const char *request, char *response, size_t size) {
        _cleanup_free_ char *branch = via_branch(request);
        _cleanup_free_ char *buf = malloc(UA_MAX_MESSAGE);
        ck_assert_ptr_nonnull(buf);
        send_text(ua, request, NULL, 0);
        for (int waited = 0, retrans = 500; waited < 15000;) {
                size_t n = recv_text(ua, buf, UA_MAX_MESSAGE, retrans);
                if (n == 0) {
                        waited += retrans;
                        send_text(ua, request, NULL, 0);
                        continue;
                }
                if (strncmp(buf, "SIP/2.0 ", 8) != 0)
                        continue;
                _cleanup_free_ char *b = via_branch(buf);
                int status = atoi(buf + 8);
                if (!streq(b, branch) || status < 200) {
                        retrans = 4000;
                        continue;
                }
                if (response)
                        snprintf(response, size, "%s", buf);
                return status;
        }
        ck_abort_msg("no final response to:\n%s", request);
        return 0;
}

int tl_ua_register(struct tl_ua *ua, int expires) {
        char req[4096], inst[128] = "";
        if (ua->instance[0])
                snprintf(inst, sizeof inst, ";+sip.instance=\"<%s>\"", ua->instance);
        unsigned cseq = ua->cseq++;
        snprintf(req, sizeof req,
                 "REGISTER sip:localhost SIP/2.0\r\n"
                 "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-reg-%d-%u-%ld;rport\r\n"
                 "From: <sip:%s@localhost>;tag=reg%u\r\n"
                 "To: <sip:%s@localhost>\r\n"
                 "Call-ID: %s\r\n"
                 "CSeq: %u REGISTER\r\n"
                 "Contact: <sip:%s@127.0.0.1:%d%s>%s%s\r\n"
                 "Expires: %d\r\n"
                 "%s"
                 "Max-Forwards: 70\r\n"
                 "Content-Length: 0\r\n\r\n",
                 ua->port, ua->port, cseq, random(), ua->user, cseq, ua->user, ua->reg_call_id,
                 cseq, ua->user, ua->port, ua->contact_params, inst, ua->contact_header_params,
                 expires,
                 ua->register_headers);
        return transaction(ua, req, ua->last_response, sizeof ua->last_response);
}

int tl_ua_request(struct tl_ua *ua, const char *method, const char *to_user, const char *to_tag,
                  const char *content_type, const char *body, const char *extra_headers,
                  char *response, size_t size) {
        _cleanup_free_ char *req = NULL;
        unsigned cseq = ua->cseq++;
        long id = random();
        _cleanup_free_ char *target = NULL;
        if (strchr(to_user, ':'))
                target = strdup(to_user);
        else
                ck_assert_int_ge(asprintf(&target, "sip:%s@localhost", to_user), 0);
        ck_assert_ptr_nonnull(target);
        ck_assert_int_ge(asprintf(&req,
                                  "%s %s SIP/2.0\r\n"
                                  "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-req-%ld;rport\r\n"
                                  "From: <sip:%s@localhost>;tag=m%ld\r\n"
                                  "To: <%s>%s%s\r\n"
                                  "Call-ID: msg-%ld@127.0.0.1\r\n"
                                  "CSeq: %u %s\r\n"
                                  "Max-Forwards: 70\r\n"
                                  "%s"
                                  "Content-Type: %s\r\n"
                                  "Content-Length: %zu\r\n\r\n%s",
                                  method, target, ua->port, id, ua->user, id, target,
                                  to_tag ? ";tag=" : "", to_tag ? to_tag : "", id, cseq, method,
                                  extra_headers ? extra_headers : "",
                                  content_type ? content_type : "text/plain", strlen(body), body),
                         0);
        return transaction(ua, req, response, size);
}

int tl_ua_message(struct tl_ua *ua, const char *to_user, const char *content_type,
                  const char *body, const char *extra_headers, char *response, size_t size) {
        return tl_ua_request(ua, "MESSAGE", to_user, NULL, content_type, body, extra_headers,
                             response, size);
}

static const char *remembered(int port, const char *branch) {
        for (size_t i = 0; i < UA_REMEMBERED; i++)
                if (answered[i].branch && answered[i].port == port &&
                    streq(answered[i].branch, branch))
                        return answered[i].response;
        return NULL;
}

char *tl_ua_recv_request(struct tl_ua *ua, int timeout_ms) {
        char *buf = malloc(UA_MAX_MESSAGE);
        ck_assert_ptr_nonnull(buf);
        for (;;) {
                size_t n = recv_text(ua, buf, UA_MAX_MESSAGE, timeout_ms);
                if (n == 0) {
                        free(buf);
                        return NULL;
                }
                if (strncmp(buf, "SIP/2.0 ", 8) == 0)
                        continue; /* a late response */
                _cleanup_free_ char *branch = via_branch(buf);
                const char *again = remembered(ua->port, branch);
                if (again) {
                        send_text(ua, again, (struct sockaddr *)&ua->peer, ua->peer_len);
                        continue;
                }
                /* ACK to a 2xx has its own branch; a retransmitted ACK is returned again. */
                return buf;
        }
}

void tl_ua_reply(struct tl_ua *ua, const char *request, int status, bool sdp) {
        tl_ua_reply_headers(ua, request, status, sdp, NULL);
}

void tl_ua_reply_headers(struct tl_ua *ua, const char *request, int status, bool sdp,
                         const char *headers) {
        _cleanup_free_ char *vias = header_lines(request, "Via");
        _cleanup_free_ char *rrs = header_lines(request, "Record-Route");
        _cleanup_free_ char *from = tl_sip_header(request, "From");
        _cleanup_free_ char *to = tl_sip_header(request, "To");
        _cleanup_free_ char *call_id = tl_sip_header(request, "Call-ID");
        _cleanup_free_ char *cseq = tl_sip_header(request, "CSeq");
        _cleanup_free_ char *method = tl_sip_method(request);
        _cleanup_free_ char *branch = via_branch(request);
        ck_assert_ptr_nonnull(from);
        ck_assert_ptr_nonnull(to);
        ck_assert_ptr_nonnull(call_id);
        ck_assert_ptr_nonnull(cseq);
        char contact[160] = "", body[512] = "";
        bool invite = streq(method, "INVITE");
        if (invite && status < 300)
                snprintf(contact, sizeof contact, "Contact: <sip:%s@127.0.0.1:%d>\r\n", ua->user,
                         ua->port);
        if (sdp && invite && status >= 180 && status < 300)
                snprintf(body, sizeof body,
                         "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                         "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
                         ua->port + 2);
        _cleanup_free_ char *resp = NULL;
        ck_assert_int_ge(asprintf(&resp,
                                  "SIP/2.0 %d Test\r\n%s%sFrom: %s\r\nTo: %s%s\r\nCall-ID: %s\r\n"
                                  "CSeq: %s\r\n%s%s%sContent-Length: %zu\r\n\r\n%s",
                                  status, vias, status > 100 ? rrs : "", from, to,
                                  strstr(to, "tag=") || status == 100 ? "" : ";tag=ua-tag", call_id,
                                  cseq, contact, headers ? headers : "",
                                  body[0] ? "Content-Type: application/sdp\r\n" : "",
                                  strlen(body), body),
                         0);
        send_text(ua, resp, (struct sockaddr *)&ua->peer, ua->peer_len);
        if (status >= 200 && !streq(method, "ACK")) {
                size_t i = answered_next++ % UA_REMEMBERED;
                free(answered[i].branch);
                free(answered[i].response);
                answered[i].port = ua->port;
                answered[i].branch = TAKE_PTR(branch);
                answered[i].response = TAKE_PTR(resp);
        }
}
