/* SPDX-License-Identifier: MIT */
/* The presence server object: configuration, the SIP agent and its transports, the table of
 * presentities and their merged state, counters and control commands. */
#define LOG_SUBSYSTEM LOG_presence
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>
#include <libxml/parser.h>
#include <sofia-sip/su_tagarg.h>

#include "ctl.h"
#include "daemon.h"
#include "loop.h"
#include "macro.h"
#include "pidf.h"
#include "presence.h"
#include "stats.h"
#include "udp.h"

#define C(field) offsetof(struct presence_config, field)

static const struct conf_section presence_sections[] = {
        {"presence", "PUBLISH, SUBSCRIBE and NOTIFY for the presence event package"},
};

static const struct conf_option presence_rows[] = {
        {"global", "transports", CONF_URI_LIST, C(transports), "sip:127.0.0.1:5065", 0, 0, 0,
         "SIP URIs to listen on: sip:host:port (UDP and TCP), ;transport=udp or tcp for one; "
         "IPv6 in brackets; the proxy's [module::Presence] presence-server points here"},
        {"global", "max-message-size", CONF_SIZE, C(max_message_size), "256KiB", 0, 0, 0,
         "Largest SIP message accepted (from 4KiB to 64MiB); an address book subscription "
         "needs room for its list"},
        {"global", "udp-receive-buffer", CONF_SIZE, C(udp_receive_buffer), "4MiB", 0, 0, 0,
         "Receive buffer of the UDP transports' sockets, to absorb the answers to a fan-out of "
         "NOTIFYs (0: the system's default; beyond net.core.rmem_max only when running as "
         "root)"},
        {"presence", "expires", CONF_DURATION, C(publish_expires_ms), "600s", 0, 0, 0,
         "Lifetime of a publication whose PUBLISH has no Expires", .unit = CONF_UNIT_S},
        {"presence", "min-expires", CONF_DURATION, C(publish_min_expires_ms), "60s", 0, 0, 0,
         "Shortest publication lifetime accepted; shorter non-zero ones get 423 with "
         "Min-Expires",
         .unit = CONF_UNIT_S},
        {"presence", "max-expires", CONF_DURATION, C(publish_max_expires_ms), "3600s", 0, 0, 0,
         "Longest publication lifetime: longer requests are cut to this", .unit = CONF_UNIT_S},
        {"presence", "subscription-expires", CONF_DURATION, C(subscribe_expires_ms), "600s", 0, 0,
         0, "Lifetime of a subscription whose SUBSCRIBE has no Expires", .unit = CONF_UNIT_S},
        {"presence", "subscription-min-expires", CONF_DURATION, C(subscribe_min_expires_ms), "60s",
         0, 0, 0,
         "Shortest subscription lifetime accepted; shorter non-zero ones get 423 with "
         "Min-Expires",
         .unit = CONF_UNIT_S},
        {"presence", "subscription-max-expires", CONF_DURATION, C(subscribe_max_expires_ms),
         "3600s", 0, 0, 0, "Longest subscription lifetime: longer requests are cut to this",
         .unit = CONF_UNIT_S},
        {"presence", "max-presentities", CONF_INT, C(max_presentities), "100000", 1, 100000000, 0,
         "Presentities held at once (published, watched or remembered); PUBLISH and "
         "SUBSCRIBE beyond get 503"},
        {"presence", "max-subscriptions", CONF_INT, C(max_subscriptions), "100000", 1, 100000000, 0,
         "Subscriptions held at once; SUBSCRIBEs beyond get 503"},
        {"presence", "max-presence-elements", CONF_INT, C(max_publications), "16", 1, 1000, 0,
         "Publications (sources: devices) merged into one presentity; more get 503"},
        {"presence", "max-list-size", CONF_INT, C(max_list_size), "1000", 1, 100000, 0,
         "Resources in one list subscription (address book); larger lists get 413"},
        {"presence", "notify-limit", CONF_INT, C(notify_limit), "200", 1, 100000, 0,
         "Resources whose state goes into one NOTIFY of a list subscription; the rest "
         "follows in further NOTIFYs"},
        {"presence", "max-body-size", CONF_SIZE, C(max_body_size), "64KiB", 0, 0, 0,
         "Largest PIDF or resource-lists body accepted (413 beyond), checked before parsing"},
        {"presence", "last-activity-retention-time", CONF_DURATION, C(last_activity_retention_ms),
         "1d", 0, 0, 0,
         "How long the time of a presentity's last activity is still reported (as away, "
         "closed) after its publications ended; 0: forget at once",
         .unit = CONF_UNIT_S},
        {"presence", "linphone-list-compatibility", CONF_BOOL, C(linphone_list_compat), "true", 0,
         0, 0,
         "NOTIFYs of list subscriptions in the form liblinphone (5.2 and older) reads: "
         "'Event: Presence' and Content-IDs without angle brackets; false: RFC 4662's form"},
        {"presence", "redis-server-domain", CONF_STRING, C(redis_host), NULL, 0, 0, 0,
         "Redis server holding the presence state shared by several presence servers of one "
         "domain (an address: a name is resolved with a blocking lookup); empty: state kept in "
         "memory only"},
        {"presence", "redis-server-port", CONF_INT, C(redis_port), "6379", 1, 65535, 0,
         "Port of redis-server-domain"},
        {"presence", "redis-auth-password", CONF_STRING, C(redis_password), NULL, 0, 0, CONF_SECRET,
         "Redis password (requirepass); empty: no AUTH"},
        {"presence", "redis-key-prefix", CONF_STRING, C(redis_prefix), "pres:", 0, 0, 0,
         "Prefix of the Redis keys and channels of presentities (<prefix><user>@<host>)"},
        {"presence", "redis-command-timeout", CONF_DURATION, C(redis_command_timeout_ms), "2s", 0,
         0, 0, "A Redis reply later than this counts as a lost connection (the PUBLISH gets 503)",
         .unit = CONF_UNIT_MS},
};

uint64_t now_wall_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static unsigned key_hash(const char *s) {
        unsigned h = 2166136261u;
        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * 16777619u;
        return h;
}

char *presence_uri_key(const url_t *url) {
        if (!url || isempty(url->url_host))
                return NULL;
        char *key = NULL;
        if (asprintf(&key, "%s%s%s", strempty(url->url_user), url->url_user ? "@" : "",
                     url->url_host) < 0)
                return NULL;
        char *at = strchr(key, '@');
        for (char *c = at ? at + 1 : key; *c; c++)
                *c = (char)tolower((unsigned char)*c);
        return key;
}

static int grow_table(struct presence *p) {
        size_t n = p->n_buckets ? p->n_buckets * 2 : 1024;
        struct presentity **b = calloc(n, sizeof *b);
        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < p->n_buckets; i++)
                for (struct presentity *pr = p->buckets[i], *next; pr; pr = next) {
                        next = pr->hnext;
                        size_t j = key_hash(pr->key) & (n - 1);
                        pr->hnext = b[j];
                        b[j] = pr;
                }
        free(p->buckets);
        p->buckets = b;
        p->n_buckets = n;
        return 0;
}

struct presentity *presentity_get(struct presence *p, const char *key, bool create) {
        if (p->n_buckets > 0)
                for (struct presentity *pr = p->buckets[key_hash(key) & (p->n_buckets - 1)]; pr;
                     pr = pr->hnext)
                        if (streq(pr->key, key))
                                return pr;
        if (!create || p->n_presentities >= (size_t)p->config.max_presentities)
                return NULL;
        if (p->n_presentities >= p->n_buckets && grow_table(p) < 0)
                return NULL;
        struct presentity *pr = calloc(1, sizeof *pr);
        if (!pr)
                return NULL;
        pr->presence = p;
        pr->gen = ++p->next_id;
        pr->key = strdup(key);
        if (!pr->key || asprintf(&pr->uri, "sip:%s", key) < 0) {
                free(pr->key);
                free(pr);
                return NULL;
        }
        size_t i = key_hash(key) & (p->n_buckets - 1);
        pr->hnext = p->buckets[i];
        p->buckets[i] = pr;
        p->n_presentities++;
        return pr;
}

static void presentity_free(struct presentity *pr) {
        struct presence *p = pr->presence;
        struct presentity **pp = &p->buckets[key_hash(pr->key) & (p->n_buckets - 1)];
        while (*pp != pr)
                pp = &(*pp)->hnext;
        *pp = pr->hnext;
        p->n_presentities--;
        shared_unwatch(pr);
        longterm_forget(pr);
        while (pr->publications)
                publication_free(pr->publications);
        loop_timer_free(pr->retention);
        free(pr->pidf);
        free(pr->capabilities);
        free(pr->key);
        free(pr->uri);
        free(pr);
}

void presentity_maybe_free(struct presentity *pr) {
        /* With shared state, a presentity is a mirror of Redis kept for its watchers only. */
        if (pr && !pr->watchers &&
            (pr->presence->redis || (!pr->publications && pr->last_activity == 0)))
                presentity_free(pr);
}

static void retention_done(struct loop_timer *t, void *userdata) {
        struct presentity *pr = userdata;
        pr->last_activity = 0;
        pr->known = false; /* so that presentity_changed() does not start another period */
        presentity_changed(pr);
        longterm_check(pr);
        presentity_maybe_free(pr);
}

void presentity_set_last_activity(struct presentity *pr, time_t when, uint64_t remaining_ms) {
        struct presence *p = pr->presence;
        pr->last_activity = when;
        if (when == 0) {
                pr->known = false; /* so that presentity_changed() does not start a period */
                loop_timer_disarm(pr->retention);
                return;
        }
        if (pr->retention ||
            loop_timer_new(daemon_loop(p->daemon), retention_done, pr, &pr->retention) >= 0)
                loop_timer_arm(pr->retention, remaining_ms);
}

static int rebuild(struct presentity *pr) {
        struct presence *p = pr->presence;
        xmlDocPtr doc = pidf_merge_new(pr->uri);
        if (!doc)
                return -ENOMEM;
        int r = 0;
        for (struct publication *pub = pr->publications; pub && r >= 0; pub = pub->next)
                r = pidf_merge_add(doc, pub->doc);
        if (r >= 0 && !pr->publications && pr->last_activity > 0)
                r = pidf_merge_last_activity(doc, pr->last_activity);
        else if (r >= 0 && !pr->publications && longterm_is_user(pr))
                r = pidf_merge_default(doc, pr->capabilities);
        size_t len = 0;
        char *s = r >= 0 ? xml_to_string(doc, &len) : NULL;
        xmlFreeDoc(doc);
        if (!s)
                return -ENOMEM;
        free(pr->pidf);
        pr->pidf = s;
        pr->pidf_len = len;
        /* A user of the service, as list NOTIFYs report it: it publishes, published lately, or
         * (long-term presence) has an account. */
        pr->known = pr->publications || pr->last_activity > 0 || longterm_is_user(pr);
        (void)p;
        return 0;
}

const char *presentity_pidf(struct presentity *pr) {
        if (!pr->pidf && rebuild(pr) < 0)
                return NULL;
        return pr->pidf;
}

void presentity_changed(struct presentity *pr) {
        struct presence *p = pr->presence;
        if (!pr->publications && pr->last_activity == 0 && pr->known &&
            p->config.last_activity_retention_ms > 0) {
                /* The last publication just ended: remember when. */
                pr->last_activity = time(NULL);
                if ((pr->retention || loop_timer_new(daemon_loop(p->daemon), retention_done, pr,
                                                     &pr->retention) >= 0))
                        loop_timer_arm(pr->retention, p->config.last_activity_retention_ms);
        } else if (pr->publications && pr->last_activity > 0) {
                pr->last_activity = 0;
                loop_timer_disarm(pr->retention);
        }
        if (rebuild(pr) < 0) {
                log_oom();
                return;
        }
        for (struct resource *res = pr->watchers, *next; res; res = next) {
                next = res->wnext;
                subscription_resource_changed(res);
        }
}

bool presence_body_encoded(const sip_t *sip) {
        const sip_content_encoding_t *ce = sip->sip_content_encoding;
        for (; ce; ce = ce->k_next)
                for (const char *const *i = ce->k_items; i && *i; i++)
                        if (!strcaseeq(*i, "identity"))
                                return true;
        return false;
}

bool presence_accepts(const sip_t *sip, const char *type) {
        if (!sip->sip_accept)
                return true;
        const char *slash = strchr(type, '/');
        size_t major = slash ? (size_t)(slash - type) : strlen(type);
        for (const sip_accept_t *a = sip->sip_accept; a; a = a->ac_next) {
                if (!a->ac_type)
                        continue;
                if (strcaseeq(a->ac_type, type) || streq(a->ac_type, "*/*") ||
                    (strncasecmp(a->ac_type, type, major) == 0 &&
                     strcaseeq(a->ac_type + major, "/*")))
                        return true;
        }
        return false;
}

/* Control commands. */
#define CTL_MAX_ITEMS 1000

static int ctl_presentities(struct ctl_request *req, int argc, char **argv, void *userdata) {
        struct presence *p = userdata;
        json_t *list = json_array();
        size_t n = 0;
        for (size_t i = 0; i < p->n_buckets; i++)
                for (struct presentity *pr = p->buckets[i]; pr; pr = pr->hnext) {
                        if (argc > 1 && !streq(argv[1], pr->key))
                                continue;
                        if (n++ >= CTL_MAX_ITEMS)
                                continue;
                        json_t *pubs = json_array(), *acts = json_array();
                        uint64_t now = now_msec();
                        for (struct publication *pub = pr->publications; pub; pub = pub->next) {
                                char *names[16];
                                size_t k = pidf_activities(pub->doc, names, ELEMENTSOF(names));
                                for (size_t j = 0; j < k; j++) {
                                        json_array_append_new(acts, json_string(names[j]));
                                        free(names[j]);
                                }
                                json_array_append_new(
                                        pubs,
                                        json_pack("{s:s, s:I, s:b}", "etag", pub->etag, "expires",
                                                  (json_int_t)((pub->expires_at - now) / 1000),
                                                  "open", pidf_is_open(pub->doc)));
                        }
                        json_t *o = json_pack("{s:s, s:o, s:o, s:i}", "presentity", pr->key,
                                              "publications", pubs, "activities", acts, "watchers",
                                              (int)pr->n_watchers);
                        if (pr->account != ACCOUNT_UNCHECKED)
                                json_object_set_new(o, "account",
                                                    json_string(longterm_account_name(pr)));
                        if (pr->capabilities)
                                json_object_set_new(o, "capabilities",
                                                    json_string(pr->capabilities));
                        if (pr->last_activity > 0) {
                                char stamp[32];
                                xml_format_time(pr->last_activity, stamp, sizeof stamp);
                                json_object_set_new(o, "last-activity", json_string(stamp));
                        }
                        json_array_append_new(list, o);
                }
        ctl_reply(req, json_pack("{s:o, s:I, s:b}", "presentities", list, "count", (json_int_t)n,
                                 "truncated", n > CTL_MAX_ITEMS));
        return 0;
}

static int ctl_subscriptions(struct ctl_request *req, int argc, char **argv, void *userdata) {
        struct presence *p = userdata;
        json_t *list = json_array();
        size_t n = 0;
        uint64_t now = now_msec();
        for (struct subscription *s = p->subscriptions; s; s = s->next) {
                if (n++ >= CTL_MAX_ITEMS)
                        continue;
                json_array_append_new(
                        list,
                        json_pack("{s:I, s:s, s:s, s:b, s:I, s:I}", "id", (json_int_t)s->id,
                                  "watcher", s->watcher, "target", s->target, "list", s->is_list,
                                  "resources", (json_int_t)s->n_resources, "expires",
                                  (json_int_t)(s->expires_at > now ? (s->expires_at - now) / 1000
                                                                   : 0)));
        }
        ctl_reply(req, json_pack("{s:o, s:I, s:b}", "subscriptions", list, "count", (json_int_t)n,
                                 "truncated", n > CTL_MAX_ITEMS));
        return 0;
}

/* SIP entry point: every request outside a subscription dialog. */
static int on_request(void *magic, nta_leg_t *leg, nta_incoming_t *irq, const sip_t *sip) {
        struct presence *p = magic;
        if (p->stopping) {
                nta_incoming_treply(irq, SIP_503_SERVICE_UNAVAILABLE, SIPTAG_RETRY_AFTER_STR("5"),
                                    TAG_END());
                return 503;
        }
        switch (sip->sip_request->rq_method) {
        case sip_method_publish:
                return publish_handle(p, irq, sip);
        case sip_method_subscribe:
                if (sip->sip_to && sip->sip_to->a_tag)
                        return 481; /* a refresh for a dialog we do not know (any more) */
                return subscribe_handle(p, irq, sip);
        case sip_method_options:
                nta_incoming_treply(irq, SIP_200_OK,
                                    SIPTAG_ALLOW_STR("PUBLISH, SUBSCRIBE, NOTIFY, OPTIONS"),
                                    SIPTAG_ALLOW_EVENTS_STR("presence"),
                                    SIPTAG_ACCEPT_STR("application/pidf+xml, "
                                                      "application/resource-lists+xml"),
                                    SIPTAG_SUPPORTED_STR("eventlist"), TAG_END());
                return 200;
        case sip_method_ack:
                nta_incoming_destroy(irq);
                return 0;
        case sip_method_notify:
                return 481;
        default:
                nta_incoming_treply(irq, SIP_405_METHOD_NOT_ALLOWED,
                                    SIPTAG_ALLOW_STR("PUBLISH, SUBSCRIBE, OPTIONS"), TAG_END());
                return 405;
        }
}

static int on_message(struct presence *p, nta_agent_t *agent, msg_t *msg, sip_t *sip) {
        msg_destroy(msg); /* stray responses */
        return 0;
}

static void reap(struct loop_timer *t, void *userdata) {
        struct presence *p = userdata;
        subscriptions_reap(p);
        if (p->stopping && subscriptions_idle(p))
                daemon_drained(p->daemon);
}

static uint64_t gauge_presentities(void *userdata) {
        return ((struct presence *)userdata)->n_presentities;
}
static uint64_t gauge_publications(void *userdata) {
        return ((struct presence *)userdata)->n_publications;
}
static uint64_t gauge_subscriptions(void *userdata) {
        return ((struct presence *)userdata)->n_subscriptions;
}

int presence_new(struct daemon *d, struct presence **ret) {
        struct presence *p = calloc(1, sizeof *p);
        int r;
        if (!p)
                return -ENOMEM;
        p->daemon = d;
        r = conf_add_sections(daemon_conf(d), presence_sections, ELEMENTSOF(presence_sections));
        if (r >= 0)
                r = conf_add_table(daemon_conf(d), presence_rows, ELEMENTSOF(presence_rows),
                                   &p->config);
        if (r < 0) {
                presence_free(p);
                return r;
        }
        r = longterm_new(p);
        if (r >= 0)
                r = devices_new(p);
        if (r < 0) {
                presence_free(p);
                return r;
        }
        xmlInitParser();
        *ret = p;
        return 0;
}

static void declare_counters(struct presence *p) {
        struct stats *s = daemon_stats(p->daemon);
#define D(field, name, doc) p->count.field = stats_declare(s, "presence", name, doc)
        D(publish, "count-publish", "PUBLISH requests received");
        D(publish_new, "count-publish-new", "Publications created");
        D(publish_refresh, "count-publish-refresh", "Publications refreshed");
        D(publish_modify, "count-publish-modify", "Publications modified");
        D(publish_remove, "count-publish-remove", "Publications removed (Expires: 0)");
        D(publish_expired, "count-publish-expired", "Publications expired");
        D(publish_rejected, "count-publish-rejected", "PUBLISH requests refused");
        D(subscribe, "count-subscribe", "SUBSCRIBE requests received, refreshes included");
        D(subscribe_list, "count-subscribe-list", "List subscriptions created");
        D(subscribe_rejected, "count-subscribe-rejected", "SUBSCRIBE requests refused");
        D(subscribe_expired, "count-subscription-expired", "Subscriptions ended by expiry");
        D(notify_sent, "count-notify-sent", "NOTIFY requests sent");
        D(notify_failed, "count-notify-failed",
          "NOTIFY requests that failed (the subscription ended)");
        D(xml_rejected, "count-xml-rejected",
          "Bodies refused as too large, with a DTD, malformed or of the wrong document type");
        D(redis_failed, "count-redis-failed",
          "Redis commands that failed (link down, timeout, error): PUBLISHs got 503");
        D(redis_loads, "count-redis-loads", "Presentity states read from Redis");
        D(redis_changes, "count-redis-changes",
          "Change messages from other presence servers received");
#undef D
        stats_declare_gauge(s, "presence", "presentities", "Presentities held", gauge_presentities,
                            p);
        stats_declare_gauge(s, "presence", "publications", "Live publications", gauge_publications,
                            p);
        stats_declare_gauge(s, "presence", "subscriptions", "Live subscriptions",
                            gauge_subscriptions, p);
}

#define MAX_MESSAGE_SIZE_MIN (UINT64_C(4) << 10)
#define MAX_MESSAGE_SIZE_MAX (UINT64_C(64) << 20)

int presence_start(struct presence *p) {
        const struct presence_config *c = &p->config;
        int r;
        if (c->max_message_size < MAX_MESSAGE_SIZE_MIN ||
            c->max_message_size > MAX_MESSAGE_SIZE_MAX)
                return log_error_errno(ERANGE, "[global] max-message-size must be between 4KiB "
                                               "and 64MiB.");
        if (c->publish_min_expires_ms > c->publish_max_expires_ms ||
            c->subscribe_min_expires_ms > c->subscribe_max_expires_ms)
                return log_error_errno(EINVAL, "[presence] a min-expires is above its "
                                               "max-expires.");
        declare_counters(p);
        r = longterm_start(p);
        if (r >= 0)
                r = devices_start(p);
        if (r < 0)
                return r;
        r = loop_timer_new(daemon_loop(p->daemon), reap, p, &p->reaper);
        if (r < 0)
                return log_error_errno(r, "Failed to create a timer: %m");
        p->root = loop_su_root(daemon_loop(p->daemon));
        p->agent = nta_agent_create(p->root, NONE, on_message, p, NTATAG_UA(1),
                                    NTATAG_SERVER_RPORT(1), NTATAG_CLIENT_RPORT(1),
                                    NTATAG_MAXSIZE((usize_t)c->max_message_size), TAG_END());
        if (!p->agent)
                return log_error_errno(ENOMEM, "Failed to create the SIP agent.");
        STRV_FOREACH(uri, c->transports) {
                if (strncasecmp(*uri, "sips:", 5) == 0 || strcasestr(*uri, "transport=tls"))
                        return log_error_errno(EINVAL,
                                               "Cannot listen on '%s': the presence "
                                               "server speaks UDP and TCP (put it behind "
                                               "the proxy for TLS).",
                                               *uri);
                if (nta_agent_add_tport(p->agent, URL_STRING_MAKE(*uri), TAG_END()) < 0)
                        return log_error_errno(errno > 0 ? errno : EINVAL,
                                               "Cannot listen on '%s': %m", *uri);
        }
        p->default_leg = nta_leg_tcreate(p->agent, on_request, p, NTATAG_NO_DIALOG(1), TAG_END());
        if (!p->default_leg)
                return log_error_errno(ENOMEM, "Failed to create the default leg.");
        _cleanup_strv_free_ char **udp_ports = NULL;
        for (tport_t *tp = tport_primaries(nta_agent_tports(p->agent)); tp; tp = tport_next(tp)) {
                const tp_name_t *n = tport_name(tp);
                log_notice("Listening on %s %s:%s.", n->tpn_proto, n->tpn_host, n->tpn_port);
                if (strcaseeq(n->tpn_proto, "udp") && strv_extend(&udp_ports, n->tpn_port) < 0)
                        return log_oom();
        }
        if (c->udp_receive_buffer > 0 && udp_ports) {
                int size = (int)MIN(c->udp_receive_buffer, (uint64_t)INT_MAX / 2);
                r = udp_set_receive_buffers(udp_ports, size);
                if (r < 0)
                        log_warning_errno(r, "Cannot set the UDP receive buffers: %m");
                else
                        log_debug("UDP receive buffer of %d socket(s) set to %d bytes.", r, size);
        }
        if (c->redis_host && *c->redis_host && (r = shared_start(p)) < 0)
                return r;
        struct ctl *ctl = daemon_ctl(p->daemon);
        if ((r = ctl_register(ctl, "PRESENCE_PRESENTITIES",
                              "[user@host]: presentities, "
                              "their publications and watchers",
                              ctl_presentities, p)) < 0 ||
            (r = ctl_register(ctl, "PRESENCE_SUBSCRIPTIONS", ": live subscriptions",
                              ctl_subscriptions, p)) < 0)
                return log_error_errno(r, "Failed to register control commands: %m");
        return 0;
}

static void presence_stop(struct daemon *d, void *userdata) {
        struct presence *p = userdata;
        p->stopping = true;
        subscriptions_terminate_all(p, "deactivated");
        loop_timer_arm(p->reaper, 0);
}

const struct daemon_hooks presence_hooks = {.stop = presence_stop};

void presence_free(struct presence *p) {
        if (!p)
                return;
        p->stopping = true;
        shared_free(p);   /* PUBLISHs waiting for Redis get their 503 while nta is alive */
        devices_free(p);  /* reads of the registrar are cancelled */
        longterm_free(p); /* its pending answers are dropped */
        while (p->subscriptions)
                subscription_free(p->subscriptions);
        subscriptions_reap(p);
        for (size_t i = 0; i < p->n_buckets; i++)
                while (p->buckets[i])
                        presentity_free(p->buckets[i]);
        free(p->buckets);
        loop_timer_free(p->reaper);
        if (p->default_leg)
                nta_leg_destroy(p->default_leg);
        if (p->agent)
                nta_agent_destroy(p->agent);
        xmlCleanupParser();
        free(p);
}
