/* SPDX-License-Identifier: MIT */
/* sipfleet-presence as built, driven by the in-tree test UA (test/lib/testlib-sip.c): PUBLISH
 * (RFC 3903) entity tags, refresh, modify, remove, 412, 489, 415, 423, clamping, merged
 * sources, last activity; SUBSCRIBE/NOTIFY (RFC 6665/3856) with full state, changes, refresh,
 * un-SUBSCRIBE, expiry, 481, failing NOTIFYs; list subscriptions (RFC 4662/5367) with an
 * address book of 200 contacts and notify-limit; XXE and oversized bodies; limits; control
 * commands; the shipped configuration. */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <sofia-sip/sip_header.h>

#include "macro.h"
#include "testlib-sip.h"
#include "testlib.h"

static struct tl_daemon server;
static int server_port;
static char server_uri[64];

static void start_at(const char *host, const char *extra) {
        server_port = tl_free_port();
        _cleanup_free_ char *conf = NULL;
        ck_assert_int_ge(asprintf(&conf,
                                  "log-level=debug\n"
                                  "transports=sip:%s:%d\n"
                                  "[presence]\n"
                                  "min-expires=2s\n"
                                  "subscription-min-expires=1s\n"
                                  "%s",
                                  host, server_port, extra ? extra : ""),
                         0);
        tl_daemon_start(&server, "presence", conf);
        snprintf(server_uri, sizeof server_uri, "sip:%s:%d;transport=tcp", host, server_port);
}

static void start(const char *extra) {
        start_at("127.0.0.1", extra);
}

static void stop(void) {
        tl_daemon_done(&server);
}

static struct tl_ua *new_ua(void) {
        struct tl_ua *ua = tl_ua_new();
        tl_ua_set_proxy(ua, server_uri);
        return ua;
}

static char *pidf(const char *user, const char *tuple, const char *basic, const char *prio,
                  const char *activity) {
        char *s = NULL;
        ck_assert_int_ge(
                asprintf(&s,
                         "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                         "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" "
                         "xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" "
                         "xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" "
                         "entity=\"sip:%s@example.org\">"
                         "<tuple id=\"%s\"><status><basic>%s</basic></status>"
                         "<contact priority=\"%s\">sip:%s@10.0.0.%s</contact></tuple>"
                         "<dm:person id=\"p\"><rpid:activities><rpid:%s/></rpid:activities>"
                         "</dm:person></presence>",
                         user, tuple, basic, prio, user, tuple, activity),
                0);
        return s;
}

/* PUBLISH for user@example.org. etag/expires/body/ctype may be NULL. Returns the status;
 * *ret_etag gets the SIP-ETag (malloc'd) when asked. */
static int publish_full(struct tl_ua *ua, const char *user, const char *event, const char *etag,
                        const char *expires, const char *ctype, const char *body, char **ret_etag,
                        msg_t **ret) {
        _cleanup_free_ char *ruri = NULL, *from = NULL, *hdrs = NULL;
        ck_assert_int_ge(asprintf(&ruri, "sip:%s@example.org", user), 0);
        ck_assert_int_ge(asprintf(&hdrs, "%s%s%s%s%s%s%s%s%s", event ? "Event: " : "",
                                  event ? event : "", event ? "\r\n" : "",
                                  etag ? "SIP-If-Match: " : "", etag ? etag : "",
                                  etag ? "\r\n" : "", expires ? "Expires: " : "",
                                  expires ? expires : "", expires ? "\r\n" : ""),
                         0);
        if (body) {
                char *h2 = NULL;
                ck_assert_int_ge(asprintf(&h2, "%sContent-Type: %s\r\n", hdrs,
                                          ctype ? ctype : "application/pidf+xml"),
                                 0);
                free(hdrs);
                hdrs = h2;
        }
        struct tl_dialog *d = tl_dialog_new(ua, ruri, ruri);
        msg_t *m = NULL;
        int status = tl_ua_send(d, "PUBLISH", ruri, hdrs, body, &m);
        tl_dialog_free(d);
        if (ret_etag) {
                sip_t *sip = m ? sip_object(m) : NULL;
                *ret_etag = sip && sip->sip_etag ? strdup(sip->sip_etag->g_string) : NULL;
        }
        if (ret)
                *ret = m;
        else if (m)
                msg_destroy(m);
        return status;
}

static int publish(struct tl_ua *ua, const char *user, const char *etag, const char *expires,
                   const char *body, char **ret_etag) {
        return publish_full(ua, user, "presence", etag, expires, NULL, body, ret_etag, NULL);
}

/* The body of a message, NUL-terminated, malloc'd ("" without one). */
static char *body_of(msg_t *m) {
        sip_t *sip = sip_object(m);
        if (!sip->sip_payload)
                return strdup("");
        return strndup(sip->sip_payload->pl_data, sip->sip_payload->pl_len);
}

static size_t count(const char *s, const char *needle) {
        size_t n = 0;
        for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
                n++;
        return n;
}

/* The next NOTIFY received: checks the Event, returns its substate in *state (static) and its
 * body (malloc'd). */
static char *next_notify(struct tl_ua *ua, char *state, size_t size, msg_t **ret) {
        msg_t *m = tl_ua_next_request(ua, 5000);
        ck_assert_msg(m != NULL, "no NOTIFY");
        sip_t *sip = sip_object(m);
        ck_assert_str_eq(sip->sip_request->rq_method_name, "NOTIFY");
        ck_assert_ptr_nonnull(sip->sip_event);
        /* "Presence" for list NOTIFYs in linphone-list-compatibility mode */
        ck_assert_msg(strcasecmp(sip->sip_event->o_type, "presence") == 0, "Event: %s",
                      sip->sip_event->o_type);
        ck_assert_ptr_nonnull(sip->sip_subscription_state);
        const sip_subscription_state_t *ss = sip->sip_subscription_state;
        snprintf(state, size, "%s%s%s%s%s", ss->ss_substate, ss->ss_reason ? ";reason=" : "",
                 ss->ss_reason ? ss->ss_reason : "", ss->ss_expires ? ";expires=" : "",
                 ss->ss_expires ? ss->ss_expires : "");
        char *b = body_of(m);
        if (ret)
                *ret = m;
        else
                msg_destroy(m);
        return b;
}

static void no_request(struct tl_ua *ua, int ms) {
        msg_t *m = tl_ua_next_request(ua, ms);
        if (m) {
                _cleanup_free_ char *b = body_of(m);
                ck_abort_msg("unexpected %s: %s", sip_object(m)->sip_request->rq_method_name, b);
        }
}

static json_t *ctl(const char *line) {
        return tl_ctl(server.sock, line);
}

static long long counter(const char *name) {
        _cleanup_free_ char *path = NULL;
        ck_assert_int_ge(asprintf(&path, "presence/%s", name), 0);
        return tl_counter(server.sock, path);
}

static long long n_subscriptions(void) {
        json_t *j = ctl("PRESENCE_SUBSCRIPTIONS");
        long long n = json_integer_value(json_object_get(j, "count"));
        json_decref(j);
        return n;
}

START_TEST(test_presence_publish_rules) {
        start("max-body-size=4KiB\n");
        struct tl_ua *ua = new_ua();
        _cleanup_free_ char *body = pidf("alice", "1", "open", "0.8", "away");
        msg_t *m = NULL;

        ck_assert_int_eq(publish_full(ua, "alice", NULL, NULL, "60", NULL, body, NULL, &m), 489);
        ck_assert_ptr_nonnull(sip_object(m)->sip_allow_events);
        msg_destroy(m);
        ck_assert_int_eq(publish_full(ua, "alice", "reg", NULL, "60", NULL, body, NULL, NULL), 489);
        ck_assert_int_eq(
                publish_full(ua, "alice", "presence", NULL, "60", "text/plain", body, NULL, &m),
                415);
        ck_assert_ptr_nonnull(sip_object(m)->sip_accept);
        ck_assert_str_eq(sip_object(m)->sip_accept->ac_type, "application/pidf+xml");
        msg_destroy(m);
        ck_assert_int_eq(publish(ua, "alice", NULL, "60", NULL, NULL), 400);
        /* A compressed body: we decode none, and say so. */
        ck_assert_int_eq(publish_full(ua, "alice", "presence\r\nContent-Encoding: deflate", NULL,
                                      "60", NULL, body, NULL, &m),
                         415);
        ck_assert_ptr_nonnull(sip_object(m)->sip_accept_encoding);
        msg_destroy(m);
        ck_assert_int_eq(publish_full(ua, "alice", "presence", NULL, "1", NULL, body, NULL, &m),
                         423);
        ck_assert_ptr_nonnull(sip_object(m)->sip_min_expires);
        ck_assert_uint_eq(sip_object(m)->sip_min_expires->me_delta, 2);
        msg_destroy(m);

        /* New publication: an entity tag and the Expires granted (cut to max-expires). */
        _cleanup_free_ char *e1 = NULL, *e2 = NULL, *e3 = NULL;
        ck_assert_int_eq(publish_full(ua, "alice", "presence", NULL, "100000", NULL, body, &e1, &m),
                         200);
        ck_assert_ptr_nonnull(e1);
        ck_assert_uint_eq(sip_object(m)->sip_expires->ex_delta, 3600);
        msg_destroy(m);

        /* Unknown entity tag: 412. Refresh: a new tag, the old one is gone. */
        ck_assert_int_eq(publish(ua, "alice", "no-such-etag", "60", NULL, NULL), 412);
        ck_assert_int_eq(publish(ua, "bob", e1, "60", NULL, NULL), 412); /* not bob's tag */
        ck_assert_int_eq(publish(ua, "alice", e1, "60", NULL, &e2), 200);
        ck_assert_ptr_nonnull(e2);
        ck_assert_str_ne(e1, e2);
        ck_assert_int_eq(publish(ua, "alice", e1, "60", NULL, NULL), 412);

        /* Modify: the new body replaces the old one. */
        _cleanup_free_ char *body2 = pidf("alice", "1", "open", "0.8", "on-the-phone");
        ck_assert_int_eq(publish(ua, "alice", e2, "60", body2, &e3), 200);
        json_t *j = ctl("PRESENCE_PRESENTITIES alice@example.org");
        ck_assert_int_eq(json_integer_value(json_object_get(j, "count")), 1);
        json_t *pr = json_array_get(json_object_get(j, "presentities"), 0);
        ck_assert_str_eq(json_string_value(json_array_get(json_object_get(pr, "activities"), 0)),
                         "on-the-phone");
        ck_assert_str_eq(json_string_value(json_object_get(
                                 json_array_get(json_object_get(pr, "publications"), 0), "etag")),
                         e3);
        json_decref(j);

        /* Bad bodies: malformed, XXE, oversized. */
        ck_assert_int_eq(publish(ua, "alice", NULL, "60", "<presence><tuple>", NULL), 400);
        const char *xxe = "<?xml version=\"1.0\"?><!DOCTYPE p [<!ENTITY x SYSTEM "
                          "\"file:///etc/passwd\">]><presence "
                          "xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:alice@example.org\">"
                          "<tuple id=\"x\"><status><basic>open</basic></status><note>&x;</note>"
                          "</tuple></presence>";
        ck_assert_int_eq(publish_full(ua, "alice", "presence", NULL, "60", NULL, xxe, NULL, &m),
                         400);
        ck_assert_str_eq(sip_object(m)->sip_status->st_phrase, "DTD Not Allowed");
        msg_destroy(m);
        _cleanup_free_ char *big = malloc(6000);
        memset(big, ' ', 5999);
        big[5999] = 0;
        memcpy(big, body, strlen(body));
        ck_assert_int_eq(publish(ua, "alice", NULL, "60", big, NULL), 413);
        ck_assert_int_eq(
                publish(ua, "alice", NULL, "60",
                        "<resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\"/>", NULL),
                400);
        ck_assert_int_eq(counter("count-xml-rejected"), 4);

        /* Remove. */
        ck_assert_int_eq(publish(ua, "alice", e3, "0", NULL, NULL), 200);
        ck_assert_int_eq(publish(ua, "alice", e3, "60", NULL, NULL), 412);
        j = ctl("PRESENCE_PRESENTITIES alice@example.org");
        pr = json_array_get(json_object_get(j, "presentities"), 0);
        ck_assert_int_eq(json_array_size(json_object_get(pr, "publications")), 0);
        ck_assert(json_is_string(json_object_get(pr, "last-activity")));
        json_decref(j);

        ck_assert_int_eq(counter("count-publish-new"), 1);
        ck_assert_int_eq(counter("count-publish-refresh"), 1);
        ck_assert_int_eq(counter("count-publish-modify"), 1);
        ck_assert_int_eq(counter("count-publish-remove"), 1);
        tl_ua_free(ua);
        stop();
}
END_TEST

static struct tl_dialog *subscribe(struct tl_ua *ua, const char *watcher, const char *user,
                                   const char *expires, int want) {
        _cleanup_free_ char *ruri = NULL, *from = NULL, *hdrs = NULL;
        ck_assert_int_ge(asprintf(&ruri, "sip:%s@example.org", user), 0);
        ck_assert_int_ge(asprintf(&from, "sip:%s@example.org", watcher), 0);
        ck_assert_int_ge(asprintf(&hdrs,
                                  "Event: presence\r\nAccept: application/pidf+xml\r\n"
                                  "Expires: %s",
                                  expires),
                         0);
        struct tl_dialog *d = tl_dialog_new(ua, from, ruri);
        msg_t *m = NULL;
        ck_assert_int_eq(tl_ua_send(d, "SUBSCRIBE", ruri, hdrs, NULL, &m), want);
        if (want == 200)
                ck_assert_str_eq(sip_object(m)->sip_expires ? "present" : "", "present");
        msg_destroy(m);
        return d;
}

START_TEST(test_presence_subscribe_notify) {
        start(NULL);
        struct tl_ua *alice = new_ua(), *bob = new_ua();
        char state[128];
        _cleanup_free_ char *e1 = NULL, *e2 = NULL;
        _cleanup_free_ char *b1 = pidf("alice", "1", "open", "0.8", "away");
        ck_assert_int_eq(publish(alice, "alice", NULL, "600", b1, &e1), 200);

        struct tl_dialog *d = subscribe(bob, "bob", "alice", "60", 200);
        _cleanup_free_ char *n1 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_msg(strncmp(state, "active;expires=", 15) == 0, "%s", state);
        ck_assert_int_le(atoi(state + 15), 60);
        ck_assert_int_ge(atoi(state + 15), 58);
        ck_assert_ptr_nonnull(strstr(n1, "<basic>open</basic>"));
        ck_assert_ptr_nonnull(strstr(n1, "<contact priority=\"0.8\">sip:alice@10.0.0.1</contact>"));
        ck_assert_ptr_nonnull(strstr(n1, "<rpid:away/>"));
        ck_assert_ptr_nonnull(strstr(n1, "<timestamp>"));

        /* A change: NOTIFY with the new state. */
        _cleanup_free_ char *b2 = pidf("alice", "1", "closed", "0.8", "on-the-phone");
        ck_assert_int_eq(publish(alice, "alice", e1, "600", b2, &e2), 200);
        _cleanup_free_ char *n2 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_ptr_nonnull(strstr(n2, "<basic>closed</basic>"));
        ck_assert_ptr_nonnull(strstr(n2, "<rpid:on-the-phone/>"));
        /* A refresh of the publication changes nothing: no NOTIFY. */
        ck_assert_int_eq(publish(alice, "alice", e2, "600", NULL, NULL), 200);
        no_request(bob, 300);

        /* Refresh on the dialog: 200 and a NOTIFY with the full state. */
        msg_t *m = NULL;
        ck_assert_int_eq(
                tl_ua_send(d, "SUBSCRIBE", NULL, "Event: presence\r\nExpires: 120", NULL, &m), 200);
        ck_assert_uint_eq(sip_object(m)->sip_expires->ex_delta, 120);
        msg_destroy(m);
        _cleanup_free_ char *n3 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_msg(strncmp(state, "active;expires=1", 16) == 0, "%s", state);
        ck_assert_ptr_nonnull(strstr(n3, "<rpid:on-the-phone/>"));
        ck_assert_int_eq(n_subscriptions(), 1);
        json_t *j = ctl("PRESENCE_SUBSCRIPTIONS");
        json_t *s = json_array_get(json_object_get(j, "subscriptions"), 0);
        ck_assert_str_eq(json_string_value(json_object_get(s, "watcher")), "sip:bob@example.org");
        ck_assert_str_eq(json_string_value(json_object_get(s, "target")), "sip:alice@example.org");
        json_decref(j);

        /* Requests that are refused. */
        struct tl_dialog *bogus = tl_dialog_new(bob, "sip:bob@example.org",
                                                "<sip:alice@example.org>;tag=no-such-dialog");
        ck_assert_int_eq(tl_ua_send(bogus, "SUBSCRIBE", "sip:alice@example.org",
                                    "Event: presence\r\nExpires: 60", NULL, NULL),
                         481);
        tl_dialog_free(bogus);
        struct tl_dialog *x = tl_dialog_new(bob, "sip:bob@example.org", "sip:alice@example.org");
        ck_assert_int_eq(
                tl_ua_send(x, "SUBSCRIBE", "sip:alice@example.org", "Expires: 60", NULL, &m), 400);
        ck_assert_ptr_nonnull(sip_object(m)->sip_warning);
        msg_destroy(m);
        ck_assert_int_eq(tl_ua_send(x, "SUBSCRIBE", "sip:alice@example.org",
                                    "Event: dialog\r\nExpires: 60", NULL, NULL),
                         489);
        ck_assert_int_eq(tl_ua_send(x, "SUBSCRIBE", "sip:alice@example.org",
                                    "Event: presence\r\nAccept: text/plain\r\nExpires: 60", NULL,
                                    NULL),
                         406);
        tl_dialog_free(x);
        no_request(bob, 200);

        /* Un-SUBSCRIBE: 200, final NOTIFY terminated, nothing left. */
        ck_assert_int_eq(
                tl_ua_send(d, "SUBSCRIBE", NULL, "Event: presence\r\nExpires: 0", NULL, NULL), 200);
        _cleanup_free_ char *n4 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_str_eq(state, "terminated");
        tl_sip_run(100);
        ck_assert_int_eq(n_subscriptions(), 0);
        /* The dialog is gone: a refresh gets 481. */
        ck_assert_int_eq(
                tl_ua_send(d, "SUBSCRIBE", NULL, "Event: presence\r\nExpires: 60", NULL, NULL),
                481);
        tl_dialog_free(d);
        ck_assert_int_eq(counter("count-notify-sent"), 4);
        tl_ua_free(alice);
        tl_ua_free(bob);
        stop();
}
END_TEST

START_TEST(test_presence_subscription_expiry_and_failure) {
        start("max-subscriptions=2\n");
        struct tl_ua *bob = new_ua(), *carol = new_ua();
        char state[128];
        /* A short subscription ends with NOTIFY terminated;reason=timeout. */
        struct tl_dialog *d = subscribe(bob, "bob", "alice", "1", 200);
        _cleanup_free_ char *n1 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_str_eq(state, "active;expires=1");
        /* Nobody published: a PIDF with no tuple. */
        ck_assert_ptr_nonnull(strstr(n1, "entity=\"sip:alice@example.org\""));
        ck_assert_ptr_null(strstr(n1, "<tuple"));
        _cleanup_free_ char *n2 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_str_eq(state, "terminated;reason=timeout");
        tl_sip_run(100);
        ck_assert_int_eq(n_subscriptions(), 0);
        ck_assert_int_eq(counter("count-subscription-expired"), 1);
        tl_dialog_free(d);

        /* A too long Expires is cut to subscription-max-expires. */
        struct tl_dialog *x = tl_dialog_new(bob, "sip:bob@example.org", "sip:alice@example.org");
        msg_t *m = NULL;
        ck_assert_int_eq(tl_ua_send(x, "SUBSCRIBE", "sip:alice@example.org",
                                    "Event: presence\r\nExpires: 100000", NULL, &m),
                         200);
        ck_assert_uint_eq(sip_object(m)->sip_expires->ex_delta, 3600);
        msg_destroy(m);
        _cleanup_free_ char *n3 = next_notify(bob, state, sizeof state, NULL);
        tl_dialog_free(x);

        /* A subscriber whose NOTIFY fails (481, 500; a 408 from Timer F takes the same path)
         * loses its subscription. */
        static const int failures[] = {481, 500};
        for (size_t i = 0; i < ELEMENTSOF(failures); i++) {
                tl_ua_set_reply(carol, failures[i]);
                d = subscribe(carol, "carol", "alice", "60", 200);
                _cleanup_free_ char *n4 = next_notify(carol, state, sizeof state, NULL);
                tl_sip_run(200);
                ck_assert_int_eq(counter("count-notify-failed"), (long long)i + 1);
                ck_assert_int_eq(n_subscriptions(), 1); /* bob's long one */
                tl_dialog_free(d);
        }

        /* max-subscriptions=2 */
        tl_ua_set_reply(carol, 200);
        struct tl_dialog *d2 = subscribe(carol, "carol", "alice", "60", 200);
        _cleanup_free_ char *n5 = next_notify(carol, state, sizeof state, NULL);
        struct tl_dialog *d3 = subscribe(carol, "carol", "dave", "60", 503);
        tl_dialog_free(d2);
        tl_dialog_free(d3);

        ck_assert_int_eq(n_subscriptions(), 2);
        tl_ua_free(bob);
        tl_ua_free(carol);
        stop();
}
END_TEST

START_TEST(test_presence_fetch_merge_and_last_activity) {
        start(NULL);
        struct tl_ua *alice = new_ua(), *bob = new_ua();
        char state[128];
        /* Two sources of alice: both tuples, each with its contact, priority and timestamp;
         * the person element of the latest one. */
        _cleanup_free_ char *phone = pidf("alice", "1", "open", "0.9", "away");
        _cleanup_free_ char *desk = pidf("alice", "2", "closed", "0.1", "on-the-phone");
        ck_assert_int_eq(publish(alice, "alice", NULL, "600", phone, NULL), 200);
        ck_assert_int_eq(publish(alice, "alice", NULL, "2", desk, NULL), 200);
        struct tl_dialog *d = subscribe(bob, "bob", "alice", "0", 200);
        _cleanup_free_ char *n1 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_str_eq(state, "terminated;reason=timeout");
        ck_assert_ptr_nonnull(strstr(n1, "<contact priority=\"0.9\">sip:alice@10.0.0.1</contact>"));
        ck_assert_ptr_nonnull(strstr(n1, "<contact priority=\"0.1\">sip:alice@10.0.0.2</contact>"));
        ck_assert_uint_eq(count(n1, "<timestamp>"), 2);
        ck_assert_uint_eq(count(n1, "<dm:person"), 1);
        ck_assert_ptr_nonnull(strstr(n1, "<rpid:on-the-phone/>"));
        tl_dialog_free(d);

        /* The desk's publication expires: watchers see the phone alone. */
        d = subscribe(bob, "bob", "alice", "60", 200);
        _cleanup_free_ char *n2 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_ptr_nonnull(strstr(n2, "10.0.0.2"));
        _cleanup_free_ char *n3 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_ptr_null(strstr(n3, "10.0.0.2"));
        ck_assert_ptr_nonnull(strstr(n3, "10.0.0.1"));
        ck_assert_ptr_nonnull(strstr(n3, "<rpid:away/>"));
        ck_assert_int_eq(counter("count-publish-expired"), 1);
        tl_dialog_free(d);

        /* carol's only publication expires: her last activity stays, as away and closed. */
        _cleanup_free_ char *c = pidf("carol", "1", "open", "1", "busy");
        ck_assert_int_eq(publish(alice, "carol", NULL, "2", c, NULL), 200);
        d = subscribe(bob, "bob", "carol", "60", 200);
        _cleanup_free_ char *n4 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_ptr_nonnull(strstr(n4, "<rpid:busy/>"));
        _cleanup_free_ char *n5 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_ptr_null(strstr(n5, "busy"));
        ck_assert_ptr_nonnull(strstr(n5, "<basic>closed</basic>"));
        ck_assert_ptr_nonnull(strstr(n5, "<rpid:away/>"));
        ck_assert_ptr_nonnull(strstr(n5, "<dm:timestamp>"));
        json_t *j = ctl("PRESENCE_PRESENTITIES carol@example.org");
        json_t *pr = json_array_get(json_object_get(j, "presentities"), 0);
        ck_assert(json_is_string(json_object_get(pr, "last-activity")));
        json_decref(j);
        tl_dialog_free(d);
        tl_ua_free(alice);
        tl_ua_free(bob);
        stop();
}
END_TEST

/* An address book of n contacts user0..user<n-1>@example.org. */
static char *address_book(int n) {
        char *s = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&s, &len);
        fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<resource-lists "
              "xmlns=\"urn:ietf:params:xml:ns:resource-lists\"><list>\n",
              f);
        for (int i = 0; i < n; i++)
                fprintf(f, "<entry uri=\"sip:user%d@example.org\"/>\n", i);
        fputs("</list></resource-lists>\n", f);
        fclose(f);
        return s;
}

static int list_subscribe_hdrs(struct tl_ua *ua, const char *ctype, bool eventlist,
                               const char *extra, const char *body, struct tl_dialog **ret) {
        _cleanup_free_ char *hdrs = NULL;
        ck_assert_int_ge(asprintf(&hdrs,
                                  "Event: presence\r\nExpires: 600\r\n%s%s"
                                  "Content-Type: %s\r\n"
                                  "Content-Disposition: recipient-list",
                                  eventlist ? "Supported: eventlist\r\n" : "", extra, ctype),
                         0);
        struct tl_dialog *d =
                tl_dialog_new(ua, "sip:owner@example.org", "sip:owner-friends@example.org");
        int status = tl_ua_send(d, "SUBSCRIBE", "sip:owner-friends@example.org", hdrs, body, NULL);
        if (ret)
                *ret = d;
        else
                tl_dialog_free(d);
        return status;
}

static int list_subscribe(struct tl_ua *ua, const char *ctype, bool eventlist, const char *body,
                          struct tl_dialog **ret) {
        return list_subscribe_hdrs(ua, ctype, eventlist,
                                   "Accept: application/pidf+xml, application/rlmi+xml, "
                                   "multipart/related\r\n",
                                   body, ret);
}

static void check_multipart(msg_t *m) {
        sip_t *sip = sip_object(m);
        ck_assert_ptr_nonnull(sip->sip_require);
        ck_assert(sip_has_feature(sip->sip_require, "eventlist"));
        ck_assert_str_eq(sip->sip_content_type->c_type, "multipart/related");
        ck_assert_ptr_nonnull(strstr(sip->sip_content_type->c_params[0], "rlmi"));
}

START_TEST(test_presence_list_subscription_200_contacts) {
        start("notify-limit=2\nmax-list-size=200\nlinphone-list-compatibility=false\n");
        struct tl_ua *pub = new_ua(), *owner = new_ua();
        char state[128];
        for (int i = 0; i < 3; i++) {
                char user[16];
                snprintf(user, sizeof user, "user%d", i * 70);
                _cleanup_free_ char *b = pidf(user, "1", "open", "1", "away");
                ck_assert_int_eq(publish(pub, user, NULL, "600", b, NULL), 200);
        }
        _cleanup_free_ char *book = address_book(200);
        struct tl_dialog *d = NULL;
        ck_assert_int_eq(list_subscribe(owner, "application/resource-lists+xml", true, book, &d),
                         200);

        /* Full state: every contact listed, the users of the service (those with a state)
         * with an instance and a PIDF; notify-limit=2 lets two in, the third follows. */
        msg_t *m = NULL;
        _cleanup_free_ char *n1 = next_notify(owner, state, sizeof state, &m);
        check_multipart(m);
        /* RFC 4662's form: the package as registered, Content-IDs in angle brackets. */
        ck_assert_str_eq(sip_object(m)->sip_event->o_type, "presence");
        msg_destroy(m);
        ck_assert_ptr_nonnull(strstr(n1, "cid=\"r0.0@sipfleet\""));
        ck_assert_ptr_nonnull(strstr(n1, "Content-Id: <r0.0@sipfleet>\r\n"));
        ck_assert_msg(strncmp(state, "active;expires=", 15) == 0, "%s", state);
        ck_assert_ptr_nonnull(strstr(n1, "fullState=\"true\""));
        ck_assert_ptr_nonnull(strstr(n1, "uri=\"sip:owner-friends@example.org\""));
        ck_assert_uint_eq(count(n1, "<resource "), 200);
        ck_assert_uint_eq(count(n1, "<instance "), 2);
        ck_assert_uint_eq(count(n1, "Content-Type: application/pidf+xml"), 2);
        ck_assert_ptr_nonnull(strstr(n1, "entity=\"sip:user0@example.org\""));
        ck_assert_ptr_nonnull(strstr(n1, "entity=\"sip:user70@example.org\""));
        _cleanup_free_ char *n2 = next_notify(owner, state, sizeof state, NULL);
        ck_assert_ptr_nonnull(strstr(n2, "fullState=\"false\""));
        ck_assert_uint_eq(count(n2, "<resource "), 1);
        ck_assert_ptr_nonnull(strstr(n2, "<resource uri=\"sip:user140@example.org\">"));
        ck_assert_ptr_nonnull(strstr(n2, "entity=\"sip:user140@example.org\""));
        no_request(owner, 200);

        /* One contact publishes: a partial NOTIFY with that contact only. */
        _cleanup_free_ char *b = pidf("user150", "1", "open", "1", "on-the-phone");
        ck_assert_int_eq(publish(pub, "user150", NULL, "600", b, NULL), 200);
        _cleanup_free_ char *n3 = next_notify(owner, state, sizeof state, NULL);
        ck_assert_ptr_nonnull(strstr(n3, "fullState=\"false\""));
        ck_assert_uint_eq(count(n3, "<resource "), 1);
        ck_assert_uint_eq(count(n3, "<instance "), 1);
        ck_assert_ptr_nonnull(strstr(n3, "<rpid:on-the-phone/>"));
        ck_assert_ptr_nonnull(strstr(n3, "entity=\"sip:user150@example.org\""));

        json_t *j = ctl("PRESENCE_SUBSCRIPTIONS");
        json_t *s = json_array_get(json_object_get(j, "subscriptions"), 0);
        ck_assert(json_is_true(json_object_get(s, "list")));
        ck_assert_int_eq(json_integer_value(json_object_get(s, "resources")), 200);
        json_decref(j);
        ck_assert_int_eq(counter("count-subscribe-list"), 1);

        /* Unsubscribe: final NOTIFY, full state. */
        ck_assert_int_eq(
                tl_ua_send(d, "SUBSCRIBE", NULL, "Event: presence\r\nExpires: 0", NULL, NULL), 200);
        _cleanup_free_ char *n4 = next_notify(owner, state, sizeof state, NULL);
        ck_assert_str_eq(state, "terminated");
        ck_assert_ptr_nonnull(strstr(n4, "fullState=\"true\""));
        tl_dialog_free(d);

        /* Refused lists. */
        ck_assert_int_eq(list_subscribe(owner, "text/plain", true, book, NULL), 415);
        ck_assert_int_eq(list_subscribe_hdrs(owner, "application/resource-lists+xml", true,
                                             "Content-Encoding: deflate\r\n", book, NULL),
                         415);
        ck_assert_int_eq(list_subscribe_hdrs(owner, "application/resource-lists+xml", true,
                                             "Accept: application/pidf+xml\r\n", book, NULL),
                         406);
        ck_assert_int_eq(list_subscribe(owner, "application/resource-lists+xml", false, book, NULL),
                         421);
        _cleanup_free_ char *too_big = address_book(201);
        ck_assert_int_eq(
                list_subscribe(owner, "application/resource-lists+xml", true, too_big, NULL), 413);
        const char *xxe = "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM "
                          "\"file:///etc/passwd\">]><resource-lists "
                          "xmlns=\"urn:ietf:params:xml:ns:resource-lists\"><list>"
                          "<entry uri=\"sip:&x;@example.org\"/></list></resource-lists>";
        ck_assert_int_eq(list_subscribe(owner, "application/resource-lists+xml", true, xxe, NULL),
                         400);
        ck_assert_int_eq(list_subscribe(owner, "application/resource-lists+xml", true,
                                        "<resource-lists><list>", NULL),
                         400);
        ck_assert_int_eq(n_subscriptions(), 0);
        tl_ua_free(pub);
        tl_ua_free(owner);
        stop();
}
END_TEST

/* By default list NOTIFYs take the form liblinphone 5.2 and older read. */
START_TEST(test_presence_list_linphone_form) {
        start(NULL);
        struct tl_ua *pub = new_ua(), *owner = new_ua();
        char state[128];
        _cleanup_free_ char *b = pidf("user0", "1", "open", "1", "away");
        ck_assert_int_eq(publish(pub, "user0", NULL, "600", b, NULL), 200);
        _cleanup_free_ char *book = address_book(2);
        struct tl_dialog *d = NULL;
        ck_assert_int_eq(list_subscribe(owner, "application/resource-lists+xml", true, book, &d),
                         200);
        msg_t *m = NULL;
        _cleanup_free_ char *n1 = next_notify(owner, state, sizeof state, &m);
        ck_assert_str_eq(sip_object(m)->sip_event->o_type, "Presence");
        msg_destroy(m);
        ck_assert_ptr_nonnull(strstr(n1, "cid=\"r0.0@sipfleet\""));
        ck_assert_ptr_nonnull(strstr(n1, "Content-Id: r0.0@sipfleet\r\n"));
        ck_assert_uint_eq(count(n1, "<resource "), 2);
        tl_dialog_free(d);
        tl_ua_free(pub);
        tl_ua_free(owner);
        stop();
}
END_TEST

START_TEST(test_presence_limits) {
        start("max-presentities=3\n");
        struct tl_ua *ua = new_ua();
        for (int i = 0; i < 4; i++) {
                char user[16];
                snprintf(user, sizeof user, "u%d", i);
                _cleanup_free_ char *b = pidf(user, "1", "open", "1", "away");
                ck_assert_int_eq(publish(ua, user, NULL, "600", b, NULL), i < 3 ? 200 : 503);
        }
        struct tl_dialog *d = subscribe(ua, "u0", "u9", "60", 503);
        tl_dialog_free(d);
        ck_assert_int_eq(counter("presentities"), 3);
        tl_ua_free(ua);
        stop();
}
END_TEST

/* With last-activity-retention-time=1s: the state goes from published to the last activity
 * to nothing; the presentity is forgotten once nobody watches it. */
START_TEST(test_presence_last_activity_retention) {
        start("last-activity-retention-time=1s\n");
        struct tl_ua *ua = new_ua(), *bob = new_ua();
        char state[128];
        _cleanup_free_ char *c = pidf("carol", "1", "open", "1", "busy");
        ck_assert_int_eq(publish(ua, "carol", NULL, "2", c, NULL), 200);
        struct tl_dialog *d = subscribe(bob, "bob", "carol", "60", 200);
        _cleanup_free_ char *n1 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_ptr_nonnull(strstr(n1, "<rpid:busy/>"));
        _cleanup_free_ char *n2 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_ptr_nonnull(strstr(n2, "<rpid:away/>"));
        ck_assert_ptr_nonnull(strstr(n2, "<dm:timestamp>"));
        _cleanup_free_ char *n3 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_ptr_null(strstr(n3, "<tuple"));
        ck_assert_ptr_null(strstr(n3, "person"));
        no_request(bob, 1500); /* and no further period starts */
        ck_assert_int_eq(counter("presentities"), 1);
        ck_assert_int_eq(
                tl_ua_send(d, "SUBSCRIBE", NULL, "Event: presence\r\nExpires: 0", NULL, NULL), 200);
        _cleanup_free_ char *n4 = next_notify(bob, state, sizeof state, NULL);
        tl_sip_run(100);
        ck_assert_int_eq(counter("presentities"), 0);
        tl_dialog_free(d);
        tl_ua_free(ua);
        tl_ua_free(bob);
        stop();
}
END_TEST

/* SIGTERM: every subscriber gets a final NOTIFY (reason=deactivated) and the server exits 0. */
START_TEST(test_presence_shutdown_notifies) {
        start(NULL);
        struct tl_ua *bob = new_ua();
        char state[128];
        struct tl_dialog *d = subscribe(bob, "bob", "alice", "600", 200);
        _cleanup_free_ char *n1 = next_notify(bob, state, sizeof state, NULL);
        tl_kill(&server.proc, SIGTERM);
        _cleanup_free_ char *n2 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_str_eq(state, "terminated;reason=deactivated");
        tl_sip_run(200);
        int st = tl_wait(&server.proc, 5000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
        tl_dialog_free(d);
        tl_ua_free(bob);
        stop();
}
END_TEST

/* TLS is the proxy's job: a sips: transport is refused with a clear line. */
START_TEST(test_presence_refuses_tls_transport) {
        _cleanup_free_ char *bin = tl_build_path("presence/sipfleet-presence");
        _cleanup_free_ char *conf = tl_write_file(
                "tls.conf",
                "[global]\ntransports=sips:127.0.0.1:5061\ncontrol-socket=/nonexistent/x\n");
        char *argv[] = {bin, "--config", conf, NULL};
        struct tl_proc p;
        ck_assert_int_eq(tl_spawn("presence-tls", argv, &p), 0);
        int st = tl_wait(&p, 10000);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0);
        _cleanup_free_ char *log = tl_log(&p);
        ck_assert_msg(strstr(log, "Cannot listen on 'sips:127.0.0.1:5061'"), "%s", log);
        free(p.log);
}
END_TEST

START_TEST(test_presence_shipped_config) {
        _cleanup_free_ char *bin = tl_build_path("presence/sipfleet-presence");
        char *argv[] = {bin, "--dump-default", NULL};
        struct tl_proc p;
        ck_assert_int_eq(tl_spawn("dump", argv, &p), 0);
        int st = tl_wait(&p, 10000);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        _cleanup_free_ char *dump = tl_log(&p);
        _cleanup_free_ char *path = tl_source_path("etc/presence.conf");
        _cleanup_free_ char *shipped = tl_read_file(path, NULL);
        ck_assert_ptr_nonnull(shipped);
        ck_assert_msg(streq(dump, shipped),
                      "etc/presence.conf differs from sipfleet-presence --dump-default; "
                      "regenerate it with: build/presence/sipfleet-presence --dump-default > "
                      "etc/presence.conf");
        free(p.log);
}
END_TEST

/* The proxy's [module::Presence] sends PUBLISH and SUBSCRIBE to the presence server; the
 * NOTIFYs come back to the subscriber through the proxy, on the dialog's route set. The
 * presence server listens on 127.0.0.2, a host of its own: what comes from there is its. */
START_TEST(test_presence_through_proxy) {
        start_at("127.0.0.2", NULL);
        struct tl_proxy px = {0};
        _cleanup_free_ char *extra = NULL, *via_proxy = NULL;
        ck_assert_int_ge(asprintf(&extra,
                                  "log-level=debug\n"
                                  "[module::Registrar]\ndb-implementation=internal\n"
                                  "reg-domains=example.org\n"
                                  "[module::Presence]\nenabled=true\n"
                                  "presence-server=sip:127.0.0.2:%d;transport=tcp\n",
                                  server_port),
                         0);
        tl_proxy_start(&px, extra);
        ck_assert_int_ge(asprintf(&via_proxy, "sip:127.0.0.1:%d", px.port), 0);
        struct tl_ua *alice = tl_ua_new(), *bob = tl_ua_new();
        tl_ua_set_proxy(alice, via_proxy);
        tl_ua_set_proxy(bob, via_proxy);
        char state[128];
        _cleanup_free_ char *e1 = NULL;
        _cleanup_free_ char *b1 = pidf("alice", "1", "open", "1", "away");
        ck_assert_int_eq(publish(alice, "alice", NULL, "600", b1, &e1), 200);
        ck_assert_ptr_nonnull(e1);

        struct tl_dialog *d = subscribe(bob, "bob", "alice", "60", 200);
        msg_t *m = NULL;
        _cleanup_free_ char *n1 = next_notify(bob, state, sizeof state, &m);
        ck_assert_ptr_nonnull(strstr(n1, "<rpid:away/>"));
        /* Relayed by the proxy: its Via on top of the presence server's. */
        sip_t *sip = sip_object(m);
        ck_assert_ptr_nonnull(sip->sip_via->v_next);
        ck_assert_int_eq(atoi(sip->sip_via->v_port), px.port);
        ck_assert_int_eq(atoi(sip->sip_via->v_next->v_port), server_port);
        msg_destroy(m);

        _cleanup_free_ char *b2 = pidf("alice", "1", "open", "1", "on-the-phone");
        ck_assert_int_eq(publish(alice, "alice", e1, "600", b2, NULL), 200);
        _cleanup_free_ char *n2 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_ptr_nonnull(strstr(n2, "<rpid:on-the-phone/>"));

        /* Refresh and un-SUBSCRIBE follow the route set through the proxy. */
        ck_assert_int_eq(
                tl_ua_send(d, "SUBSCRIBE", NULL, "Event: presence\r\nExpires: 60", NULL, NULL),
                200);
        _cleanup_free_ char *n3 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_msg(strncmp(state, "active", 6) == 0, "%s", state);
        ck_assert_int_eq(
                tl_ua_send(d, "SUBSCRIBE", NULL, "Event: presence\r\nExpires: 0", NULL, NULL), 200);
        _cleanup_free_ char *n4 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_str_eq(state, "terminated");
        tl_dialog_free(d);

        /* A SUBSCRIBE from the presence server's host is not sent back to it: the Router
         * answers for the (unregistered) user. */
        struct tl_ua *server_side = tl_ua_new_at("127.0.0.2");
        tl_ua_set_proxy(server_side, via_proxy);
        struct tl_dialog *loop = subscribe(server_side, "presence", "alice", "60", 404);
        tl_dialog_free(loop);
        tl_ua_free(server_side);

        ck_assert_int_eq(tl_counter(px.sock, "module::Presence/count-routed"), 3);
        ck_assert_int_eq(counter("count-subscribe"), 3);
        ck_assert_int_eq(counter("count-publish"), 2);

        /* presence.winfo goes to the presence server too (which does not serve it: 489). */
        struct tl_dialog *w = tl_dialog_new(bob, "sip:bob@example.org", "sip:alice@example.org");
        ck_assert_int_eq(tl_ua_send(w, "SUBSCRIBE", "sip:alice@example.org",
                                    "Event: presence.winfo\r\nExpires: 60", NULL, NULL),
                         489);
        tl_dialog_free(w);
        ck_assert_int_eq(tl_counter(px.sock, "module::Presence/count-routed"), 4);

        /* only-list-subscription: a single SUBSCRIBE goes on to the user (unregistered: 404),
         * a list SUBSCRIBE still reaches the presence server. */
        tl_proxy_stop(&px);
        _cleanup_free_ char *extra2 = NULL;
        ck_assert_int_ge(asprintf(&extra2, "%sonly-list-subscription=true\n", extra), 0);
        tl_proxy_start(&px, extra2);
        struct tl_dialog *single = subscribe(bob, "bob", "alice", "60", 404);
        tl_dialog_free(single);
        _cleanup_free_ char *book = address_book(3);
        struct tl_dialog *list = NULL;
        ck_assert_int_eq(list_subscribe(bob, "application/resource-lists+xml", true, book, &list),
                         200);
        _cleanup_free_ char *n5 = next_notify(bob, state, sizeof state, NULL);
        ck_assert_uint_eq(count(n5, "<resource "), 3);
        tl_dialog_free(list);
        ck_assert_int_eq(tl_counter(px.sock, "module::Presence/count-routed"), 1);

        tl_ua_free(alice);
        tl_ua_free(bob);
        tl_proxy_done(&px);
        stop();
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("presence");
        TCase *tc = tcase_create("publish");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_presence_publish_rules);
        tcase_add_test(tc, test_presence_fetch_merge_and_last_activity);
        tcase_add_test(tc, test_presence_limits);
        tcase_add_test(tc, test_presence_shipped_config);
        tcase_add_test(tc, test_presence_refuses_tls_transport);
        tcase_add_test(tc, test_presence_last_activity_retention);
        tcase_add_test(tc, test_presence_shutdown_notifies);
        suite_add_tcase(s, tc);
        tc = tcase_create("subscribe");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_presence_subscribe_notify);
        tcase_add_test(tc, test_presence_subscription_expiry_and_failure);
        tcase_add_test(tc, test_presence_list_subscription_200_contacts);
        tcase_add_test(tc, test_presence_list_linphone_form);
        tcase_add_test(tc, test_presence_through_proxy);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run(suite());
}
