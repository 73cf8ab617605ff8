/* SPDX-License-Identifier: MIT */
/* SUBSCRIBE/NOTIFY (RFC 6665, RFC 3856) on nta dialog legs: 200, then a NOTIFY with the full
 * state, a NOTIFY on each change, refreshes on the dialog, a final NOTIFY on Expires: 0, on
 * expiry (reason=timeout) and at shutdown (reason=deactivated). A NOTIFY that fails ends the
 * subscription. At most one NOTIFY per subscription is in flight; changes meanwhile are
 * gathered and sent when it completes.
 *
 * List subscriptions (RFC 4662) carry the address book in the SUBSCRIBE (RFC 5367:
 * application/resource-lists+xml, Content-Disposition: recipient-list, Supported: eventlist).
 * Their NOTIFYs are multipart/related: an RLMI document, then one PIDF per resource; the first
 * holds the full state, the next ones only the resources that changed, never more than
 * notify-limit resources each. */
#define LOG_SUBSYSTEM LOG_presence
#include <stdio.h>
#include <stdlib.h>

#include <sofia-sip/su_tagarg.h>

#include "daemon.h"
#include "loop.h"
#include "macro.h"
#include "pidf.h"
#include "presence.h"
#include "stats.h"

#define LISTS_TYPE "application/resource-lists+xml"
#define BOUNDARY   "sipfleet-presence-7d3c9e"

static void send_notify(struct subscription *sub);

static void unlink_resources(struct subscription *sub) {
        for (size_t i = 0; i < sub->n_resources; i++) {
                struct resource *res = &sub->resources[i];
                struct presentity *pr = res->presentity;
                if (!pr)
                        continue;
                if (res->wprev)
                        res->wprev->wnext = res->wnext;
                else
                        pr->watchers = res->wnext;
                if (res->wnext)
                        res->wnext->wprev = res->wprev;
                pr->n_watchers--;
                res->presentity = NULL;
                presentity_maybe_free(pr);
        }
}

static void unlink_live(struct subscription *sub) {
        struct presence *p = sub->presence;
        if (sub->prev)
                sub->prev->next = sub->next;
        else
                p->subscriptions = sub->next;
        if (sub->next)
                sub->next->prev = sub->prev;
        sub->prev = sub->next = NULL;
        p->n_subscriptions--;
}

static void destroy(struct subscription *sub) {
        unlink_resources(sub);
        for (size_t i = 0; i < sub->n_resources; i++)
                free(sub->resources[i].uri);
        free(sub->resources);
        if (sub->notify)
                nta_outgoing_destroy(sub->notify);
        if (sub->leg)
                nta_leg_destroy(sub->leg);
        loop_timer_free(sub->timer);
        loop_timer_free(sub->hold);
        free(sub->watcher);
        free(sub->target);
        free(sub);
}

/* Ends the subscription without another NOTIFY: off the live list now, freed by the reaper
 * (we may be inside one of its sofia callbacks). */
static void kill_subscription(struct subscription *sub) {
        struct presence *p = sub->presence;
        if (sub->dead)
                return;
        sub->dead = sub->ended = true;
        loop_timer_disarm(sub->timer);
        unlink_live(sub);
        sub->next = p->dead;
        p->dead = sub;
        loop_timer_arm(p->reaper, 0);
}

void subscription_free(struct subscription *sub) {
        unlink_live(sub);
        destroy(sub);
}

void subscriptions_reap(struct presence *p) {
        while (p->dead) {
                struct subscription *sub = p->dead;
                p->dead = sub->next;
                destroy(sub);
        }
}

bool subscriptions_idle(struct presence *p) {
        return !p->subscriptions && !p->dead;
}

/* Ends the subscription with a final NOTIFY (reason NULL or "" for none). */
static void end_subscription(struct subscription *sub, const char *reason) {
        if (sub->ended || sub->end_reason)
                return;
        sub->end_reason = reason ? reason : "";
        loop_timer_disarm(sub->timer);
        send_notify(sub);
}

void subscriptions_terminate_all(struct presence *p, const char *reason) {
        for (struct subscription *sub = p->subscriptions, *next; sub; sub = next) {
                next = sub->next;
                end_subscription(sub, reason);
        }
}

void subscription_resource_changed(struct resource *res) {
        struct subscription *sub = res->sub;
        if (sub->ended)
                return;
        res->changed = true;
        sub->dirty = true;
        send_notify(sub);
}

void subscription_loaded(struct subscription *sub) {
        if (sub->n_loading > 0 && --sub->n_loading == 0 && !sub->full_sent)
                send_notify(sub);
}

void subscription_lookup_done(struct resource *res) {
        struct subscription *sub = res->sub;
        if (!res->waiting)
                return;
        res->waiting = false;
        if (--sub->n_waiting == 0) {
                loop_timer_disarm(sub->hold);
                send_notify(sub);
        }
}

void subscription_stop_waiting(struct subscription *sub) {
        for (size_t i = 0; i < sub->n_resources; i++)
                sub->resources[i].waiting = false;
        sub->n_waiting = 0;
        loop_timer_disarm(sub->hold);
        send_notify(sub);
}

static void expired(struct loop_timer *t, void *userdata) {
        struct subscription *sub = userdata;
        stats_inc(sub->presence->count.subscribe_expired);
        log_info("Subscription %llu of '%s' to '%s' expired.", (unsigned long long)sub->id,
                 sub->watcher, sub->target);
        end_subscription(sub, "timeout");
}

static int on_notify_response(struct subscription *sub, nta_outgoing_t *orq, const sip_t *sip) {
        int status = sip && sip->sip_status ? sip->sip_status->st_status : 408;
        if (status < 200)
                return 0;
        nta_outgoing_destroy(orq);
        sub->notify = NULL;
        if (status >= 300) {
                stats_inc(sub->presence->count.notify_failed);
                log_info("NOTIFY of subscription %llu to '%s' failed with %d: ending it.",
                         (unsigned long long)sub->id, sub->watcher, status);
                kill_subscription(sub);
                return 0;
        }
        if (sub->ended)
                kill_subscription(sub);
        else if (sub->dirty || sub->end_reason)
                send_notify(sub);
        return 0;
}

static void xml_escape(FILE *f, const char *s) {
        for (; *s; s++)
                switch (*s) {
                case '&':
                        fputs("&amp;", f);
                        break;
                case '<':
                        fputs("&lt;", f);
                        break;
                case '>':
                        fputs("&gt;", f);
                        break;
                case '"':
                        fputs("&quot;", f);
                        break;
                case '\'':
                        fputs("&apos;", f);
                        break;
                default:
                        fputc(*s, f);
                }
}

/* The multipart/related body of a list NOTIFY: RLMI, then the PIDF of each resource sent. */
static char *list_body(struct subscription *sub, bool full, size_t max_bytes) {
        struct presence *p = sub->presence;
        /* RFC 2392: the header has the id in angle brackets, the cid in RLMI has not. */
        const char *lt = p->config.linphone_list_compat ? "" : "<";
        const char *gt = p->config.linphone_list_compat ? "" : ">";
        char *parts = NULL, *out = NULL;
        size_t parts_len = 0, out_len = 0, n = 0;
        FILE *pf = open_memstream(&parts, &parts_len);
        FILE *f = pf ? open_memstream(&out, &out_len) : NULL;
        if (!f) {
                if (pf)
                        fclose(pf);
                free(parts);
                return NULL;
        }
        unsigned v = sub->version++; /* send_notify() names the root part after it too */
        fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<list xmlns=\"" RLMI_NS "\" uri=\"", f);
        xml_escape(f, sub->target);
        fprintf(f, "\" version=\"%u\" fullState=\"%s\">\n", v, full ? "true" : "false");
        bool more = false;
        for (size_t i = 0; i < sub->n_resources; i++) {
                struct resource *res = &sub->resources[i];
                struct presentity *pr = res->presentity;
                /* Full state: the state of every resource known to us (a user of the
                 * service); partial: of every resource that changed, even to unknown. */
                bool want = pr && (full ? pr->known : res->changed);
                if (full && !want)
                        res->changed = false; /* its (empty) state is in this NOTIFY */
                bool fits = want && n < (size_t)p->config.notify_limit &&
                            (n == 0 || parts_len + pr->pidf_len < max_bytes);
                if (!full && !fits) {
                        more |= want;
                        continue;
                }
                fputs("  <resource uri=\"", f);
                xml_escape(f, res->uri);
                if (!fits) {
                        /* Listed (full state) without its state: unknown, or in a later
                         * NOTIFY. */
                        fputs("\"/>\n", f);
                        more |= want;
                        if (want)
                                res->changed = true;
                        continue;
                }
                const char *pidf = presentity_pidf(pr);
                if (!pidf) {
                        fputs("\"/>\n", f);
                        continue;
                }
                fprintf(f,
                        "\">\n    <instance id=\"r%zu\" state=\"active\" "
                        "cid=\"r%zu.%u@sipfleet\"/>\n  </resource>\n",
                        i, i, v);
                fprintf(pf,
                        "--" BOUNDARY "\r\nContent-Transfer-Encoding: binary\r\n"
                        "Content-Id: %sr%zu.%u@sipfleet%s\r\n"
                        "Content-Type: application/pidf+xml;charset=\"UTF-8\"\r\n\r\n%s\r\n",
                        lt, i, v, gt, pidf);
                fflush(pf);
                res->changed = false;
                res->sent = true;
                n++;
        }
        fputs("</list>\n", f);
        fclose(pf);
        fflush(f);
        char *rlmi = strndup(out, out_len);
        rewind(f);
        out_len = 0;
        if (rlmi)
                fprintf(f,
                        "--" BOUNDARY "\r\nContent-Transfer-Encoding: binary\r\n"
                        "Content-Id: %srlmi.%u@sipfleet%s\r\n"
                        "Content-Type: application/rlmi+xml;charset=\"UTF-8\"\r\n\r\n%s\r\n"
                        "%s--" BOUNDARY "--\r\n",
                        lt, v, gt, rlmi, parts ? parts : "");
        fclose(f);
        free(rlmi);
        free(parts);
        if (!rlmi) {
                free(out);
                return NULL;
        }
        sub->dirty = more;
        return out;
}

static void send_notify(struct subscription *sub) {
        struct presence *p = sub->presence;
        if (sub->notify || sub->ended)
                return; /* the response callback sends what is pending */
        if (sub->n_loading > 0 && !sub->full_sent && !p->stopping)
                return; /* the full state waits for Redis: subscription_loaded() sends it */
        if (sub->n_waiting > 0 && !sub->full_sent && !p->stopping)
                return; /* the first NOTIFY waits for account lookups (longterm.c) */
        char state[64];
        uint64_t now = now_msec();
        bool final = sub->end_reason != NULL;
        if (final)
                snprintf(state, sizeof state, "terminated%s%s", *sub->end_reason ? ";reason=" : "",
                         sub->end_reason);
        else
                snprintf(state, sizeof state, "active;expires=%llu",
                         (unsigned long long)(sub->expires_at > now
                                                      ? (sub->expires_at - now + 999) / 1000
                                                      : 0));
        _cleanup_free_ char *body = NULL, *ctype = NULL;
        const char *payload;
        if (sub->is_list) {
                size_t max = p->config.max_message_size > 8192 ? p->config.max_message_size - 8192
                                                               : 4096;
                body = list_body(sub, !sub->full_sent || final, max);
                if (asprintf(&ctype,
                             "multipart/related;type=\"application/rlmi+xml\";"
                             "start=\"<rlmi.%u@sipfleet>\";boundary=" BOUNDARY,
                             sub->version - 1) < 0)
                        ctype = NULL;
                payload = body;
        } else {
                sub->dirty = false;
                sub->resources[0].changed = false;
                payload = presentity_pidf(sub->resources[0].presentity);
        }
        if (!payload || (sub->is_list && !ctype)) {
                log_oom();
                kill_subscription(sub);
                return;
        }
        sub->full_sent = true;
        /* liblinphone up to 5.2 hands a list NOTIFY to its friend lists only when the event is
         * spelt "Presence", and matches the RLMI cid to the Content-ID header as a string. */
        bool compat = sub->is_list && p->config.linphone_list_compat;
        sub->notify = nta_outgoing_tcreate(
                sub->leg, on_notify_response, sub, NULL, SIP_METHOD_NOTIFY, NULL,
                SIPTAG_EVENT_STR(compat ? "Presence" : "presence"),
                SIPTAG_SUBSCRIPTION_STATE_STR(state), SIPTAG_CONTACT(nta_agent_contact(p->agent)),
                TAG_IF(sub->is_list, SIPTAG_REQUIRE_STR("eventlist")),
                SIPTAG_CONTENT_TYPE_STR(sub->is_list ? ctype : "application/pidf+xml"),
                SIPTAG_PAYLOAD_STR(payload), TAG_END());
        if (!sub->notify) {
                stats_inc(p->count.notify_failed);
                log_warning("Cannot send a NOTIFY to '%s'; ending subscription %llu.", sub->watcher,
                            (unsigned long long)sub->id);
                kill_subscription(sub);
                return;
        }
        stats_inc(p->count.notify_sent);
        if (final)
                sub->ended = true; /* freed when the NOTIFY completes */
}

static const char *duration_str(char *buf, size_t size, uint64_t ms) {
        snprintf(buf, size, "%llu", (unsigned long long)(ms / 1000));
        return buf;
}

/* The Expires of a SUBSCRIBE, checked: returns 0 and *ret_ms, or answers and returns 423. */
static int subscribe_expires(struct presence *p, nta_incoming_t *irq, const sip_t *sip,
                             uint64_t *ret_ms) {
        const struct presence_config *c = &p->config;
        uint64_t ms = sip->sip_expires ? (uint64_t)sip->sip_expires->ex_delta * 1000
                                       : c->subscribe_expires_ms;
        if (ms > 0 && ms < c->subscribe_min_expires_ms) {
                char min[24];
                nta_incoming_treply(irq, SIP_423_INTERVAL_TOO_BRIEF,
                                    SIPTAG_MIN_EXPIRES_STR(duration_str(
                                            min, sizeof min, c->subscribe_min_expires_ms)),
                                    TAG_END());
                return 423;
        }
        *ret_ms = MIN(ms, c->subscribe_max_expires_ms);
        return 0;
}

static int check_event(nta_incoming_t *irq, const sip_t *sip) {
        if (!sip->sip_event) {
                nta_incoming_treply(irq, 400, "Missing Event",
                                    SIPTAG_WARNING_STR("399 presence \"No Event package\""),
                                    TAG_END());
                return 400;
        }
        if (!streq(sip->sip_event->o_type, "presence")) {
                nta_incoming_treply(irq, SIP_489_BAD_EVENT, SIPTAG_ALLOW_EVENTS_STR("presence"),
                                    TAG_END());
                return 489;
        }
        return 0;
}

static int reply_subscribe(struct subscription *sub, nta_incoming_t *irq, uint64_t expires_ms) {
        char exp[24];
        nta_incoming_treply(irq, SIP_200_OK,
                            SIPTAG_EXPIRES_STR(duration_str(exp, sizeof exp, expires_ms)),
                            SIPTAG_CONTACT(nta_agent_contact(sub->presence->agent)),
                            TAG_IF(sub->is_list, SIPTAG_REQUIRE_STR("eventlist")), TAG_END());
        return 200;
}

/* A request inside a subscription's dialog: refresh or un-SUBSCRIBE. */
static int on_dialog_request(void *magic, nta_leg_t *leg, nta_incoming_t *irq, const sip_t *sip) {
        struct subscription *sub = magic;
        struct presence *p = sub->presence;
        if (sip->sip_request->rq_method != sip_method_subscribe) {
                nta_incoming_treply(irq, SIP_405_METHOD_NOT_ALLOWED, SIPTAG_ALLOW_STR("SUBSCRIBE"),
                                    TAG_END());
                return 405;
        }
        stats_inc(p->count.subscribe);
        if (sub->ended || sub->end_reason)
                return 481;
        int r = check_event(irq, sip);
        uint64_t ms = 0;
        if (r == 0)
                r = subscribe_expires(p, irq, sip, &ms);
        if (r != 0) {
                stats_inc(p->count.subscribe_rejected);
                return r;
        }
        reply_subscribe(sub, irq, ms);
        if (ms == 0) {
                log_info("Subscription %llu of '%s' to '%s' ended by the subscriber.",
                         (unsigned long long)sub->id, sub->watcher, sub->target);
                end_subscription(sub, "");
                return 200;
        }
        sub->expires_at = now_msec() + ms;
        loop_timer_arm(sub->timer, ms);
        /* RFC 6665 §4.2.1.2: a refresh is answered with a NOTIFY of the full state. */
        sub->full_sent = false;
        sub->dirty = true;
        longterm_watch(sub, true);
        send_notify(sub);
        return 200;
}

static int add_resource(struct subscription *sub, const char *uri, const char *key) {
        struct presence *p = sub->presence;
        struct presentity *pr = presentity_get(p, key, true);
        if (!pr)
                return -ENOSPC;
        if (pr->mark == sub->id)
                return 0; /* two URIs for one presentity */
        pr->mark = sub->id;
        struct resource *res = &sub->resources[sub->n_resources];
        res->uri = strdup(uri);
        if (!res->uri) {
                presentity_maybe_free(pr);
                return -ENOMEM;
        }
        sub->n_resources++;
        res->sub = sub;
        res->presentity = pr;
        res->wnext = pr->watchers;
        if (pr->watchers)
                pr->watchers->wprev = res;
        pr->watchers = res;
        pr->n_watchers++;
        if (p->redis) {
                if (pr->n_watchers == 1)
                        shared_watch(pr);
                if (pr->loading)
                        sub->n_loading++;
        }
        return 0;
}

/* The address book of a list SUBSCRIBE; answers and returns a status when it is refused. */
static int read_list(struct presence *p, nta_incoming_t *irq, const sip_t *sip, char ***ret) {
        const sip_content_disposition_t *cd = sip->sip_content_disposition;
        if (!sip->sip_content_type || !sip->sip_content_type->c_type ||
            !strcaseeq(sip->sip_content_type->c_type, LISTS_TYPE) ||
            (cd && cd->cd_type && !strcaseeq(cd->cd_type, "recipient-list"))) {
                nta_incoming_treply(irq, SIP_415_UNSUPPORTED_MEDIA, SIPTAG_ACCEPT_STR(LISTS_TYPE),
                                    TAG_END());
                return 415;
        }
        if (!sip_has_feature(sip->sip_supported, "eventlist") &&
            !sip_has_feature(sip->sip_require, "eventlist")) {
                nta_incoming_treply(irq, SIP_421_EXTENSION_REQUIRED,
                                    SIPTAG_REQUIRE_STR("eventlist"), TAG_END());
                return 421;
        }
        if (presence_body_encoded(sip)) {
                nta_incoming_treply(irq, SIP_415_UNSUPPORTED_MEDIA,
                                    SIPTAG_ACCEPT_ENCODING_STR("identity"), TAG_END());
                return 415;
        }
        if (!presence_accepts(sip, "multipart/related")) {
                nta_incoming_treply(irq, SIP_406_NOT_ACCEPTABLE, TAG_END());
                return 406;
        }
        xmlDocPtr doc = NULL;
        int r = xml_parse(sip->sip_payload->pl_data, sip->sip_payload->pl_len,
                          p->config.max_body_size, &doc);
        if (r >= 0) {
                r = resource_lists_uris(doc, (size_t)p->config.max_list_size, ret);
                xmlFreeDoc(doc);
                if (r == -EINVAL)
                        r = -EBADMSG;
        }
        if (r == -E2BIG) {
                stats_inc(p->count.xml_rejected);
                nta_incoming_treply(irq, 413, "List Too Large", TAG_END());
                return 413;
        }
        if (r < 0) {
                stats_inc(p->count.xml_rejected);
                log_info("List SUBSCRIBE refused: %s.", r == -EPERM ? "the list has a DTD"
                                                        : r == -EBADMSG
                                                                ? "not a resource-lists document"
                                                                : "malformed XML");
                nta_incoming_treply(irq, 400,
                                    r == -EPERM     ? "DTD Not Allowed"
                                    : r == -EBADMSG ? "Invalid Resource List"
                                                    : "Malformed Resource List",
                                    TAG_END());
                return 400;
        }
        return 0;
}

int subscribe_handle(struct presence *p, nta_incoming_t *irq, const sip_t *sip) {
        stats_inc(p->count.subscribe);
        _cleanup_strv_free_ char **uris = NULL;
        _cleanup_free_ char *key = presence_uri_key(sip->sip_request->rq_url);
        uint64_t ms = 0;
        int r = check_event(irq, sip);
        if (r == 0)
                r = subscribe_expires(p, irq, sip, &ms);
        if (r == 0 && !key)
                r = 400;
        bool is_list = sip->sip_payload && sip->sip_payload->pl_len > 0;
        if (r == 0 && is_list)
                r = read_list(p, irq, sip, &uris);
        if (r == 0 && !is_list && !presence_accepts(sip, "application/pidf+xml")) {
                nta_incoming_treply(irq, SIP_406_NOT_ACCEPTABLE, TAG_END());
                r = 406;
        }
        if (r == 0 && p->n_subscriptions >= (size_t)p->config.max_subscriptions) {
                log_warning("SUBSCRIBE from '%s' refused: max-subscriptions reached.",
                            sip->sip_from ? sip->sip_from->a_url->url_user : "?");
                nta_incoming_treply(irq, SIP_503_SERVICE_UNAVAILABLE, SIPTAG_RETRY_AFTER_STR("60"),
                                    TAG_END());
                r = 503;
        }
        if (r != 0) {
                stats_inc(p->count.subscribe_rejected);
                return r;
        }

        struct subscription *sub = calloc(1, sizeof *sub);
        if (!sub)
                return 500;
        sub->presence = p;
        sub->id = ++p->next_id;
        sub->is_list = is_list;
        sub->next = p->subscriptions;
        if (p->subscriptions)
                p->subscriptions->prev = sub;
        p->subscriptions = sub;
        p->n_subscriptions++;
        sub->watcher = sip->sip_from ? url_as_string(NULL, sip->sip_from->a_url) : NULL;
        sub->target = url_as_string(NULL, sip->sip_request->rq_url);
        size_t n = is_list ? strv_length(uris) : 1;
        sub->resources = calloc(n ? n : 1, sizeof *sub->resources);
        r = sub->resources && sub->target ? 0 : -ENOMEM;
        if (r >= 0 && !sub->watcher && !(sub->watcher = strdup("?")))
                r = -ENOMEM;
        if (r >= 0 && !is_list)
                r = add_resource(sub, sub->target, key);
        STRV_FOREACH(u, uris) {
                if (r < 0)
                        break;
                su_home_t home[1] = {SU_HOME_INIT(home)};
                url_t *url = url_make(home, *u);
                _cleanup_free_ char *k = url ? presence_uri_key(url) : NULL;
                su_home_deinit(home);
                if (k)
                        r = add_resource(sub, *u, k);
        }
        if (r >= 0) {
                sub->leg = nta_leg_tcreate(p->agent, on_dialog_request, sub,
                                           SIPTAG_CALL_ID(sip->sip_call_id),
                                           SIPTAG_FROM(sip->sip_to), SIPTAG_TO(sip->sip_from),
                                           NTATAG_REMOTE_CSEQ(sip->sip_cseq->cs_seq), TAG_END());
                r = sub->leg && loop_timer_new(daemon_loop(p->daemon), expired, sub, &sub->timer) >=
                                            0
                            ? 0
                            : -ENOMEM;
        }
        if (r < 0) {
                if (r == -ENOSPC)
                        log_warning("SUBSCRIBE to '%s' refused: max-presentities reached.",
                                    sub->target);
                subscription_free(sub);
                stats_inc(p->count.subscribe_rejected);
                if (r == -ENOSPC) {
                        nta_incoming_treply(irq, SIP_503_SERVICE_UNAVAILABLE,
                                            SIPTAG_RETRY_AFTER_STR("60"), TAG_END());
                        return 503;
                }
                return 500;
        }
        nta_leg_tag(sub->leg, NULL);
        nta_incoming_tag(irq, nta_leg_get_tag(sub->leg));
        nta_leg_server_route(sub->leg, sip->sip_record_route, sip->sip_contact);
        if (is_list)
                stats_inc(p->count.subscribe_list);
        log_info("Subscription %llu of '%s' to '%s'%s for %llus.", (unsigned long long)sub->id,
                 sub->watcher, sub->target, is_list ? " (list)" : "",
                 (unsigned long long)(ms / 1000));
        reply_subscribe(sub, irq, ms);
        sub->dirty = true;
        if (ms == 0) {
                longterm_watch(sub, false);
                end_subscription(sub, "timeout"); /* a fetch: one NOTIFY with the state */
                return 200;
        }
        sub->expires_at = now_msec() + ms;
        loop_timer_arm(sub->timer, ms);
        longterm_watch(sub, false);
        send_notify(sub);
        return 200;
}
