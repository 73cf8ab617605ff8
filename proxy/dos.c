/* SPDX-License-Identifier: MIT */
/* DoSProtection: per-source rate limits and bans, in the process (no firewall rules).
 *
 * Every request entering the module chain, and every message proxy.c's on_message sees (stray
 * responses, stateless traffic, through dos_note_packet()), counts against its source address:
 * packet-rate-limit bounds all of them, request-rate-limit the requests other than ACK, each
 * averaged over time-period (common/ratelimit.h: token buckets of rate * period). A source going
 * over either is banned for ban-time: its requests are answered 503 with Retry-After (the time
 * left in the ban) or, with action=drop, get no answer and its TCP/TLS connection is closed;
 * its other messages are dropped. Sources in white-list (and added with dos_exempt_add()) are
 * never counted.
 *
 * What the module cannot see: nta answers or drops some messages before any module runs
 * (unparsable messages, requests without Via, retransmissions it absorbs, CANCELs and ACKs
 * matching its transactions, requests it answers itself), so those are neither counted nor
 * refused; a flood of them still costs parsing in sofia. Dropping at the firewall stays the
 * operator's tool for volumetric floods.
 *
 * Drop mode and nta: destroying an unanswered server transaction makes nta send 500, so a
 * dropped request is not simply destroyed. A non-INVITE request is ended with 408, which nta
 * never transmits for a non-INVITE (RFC 4320, NTATAG_PASS_408 off as proxy.c leaves it): nothing
 * is sent, except that a UDP retransmission of that same request within Timer J (32 s) makes
 * nta send its stored 408. An INVITE cannot be ended silently (every final response is sent,
 * and retransmitted over UDP until ACKed), so a banned source's INVITE is answered 503 with
 * Retry-After in both modes. ACKs are never answered. */
#define LOG_SUBSYSTEM LOG_sip
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>

#include <sofia-sip/msg_addr.h>

#include "ctl.h"
#include "daemon.h"
#include "dos.h"
#include "loop.h"
#include "module.h"
#include "proxy.h"
#include "ratelimit.h"
#include "stats.h"

#define CLEANUP_INTERVAL_MS 1000

enum { ACTION_REJECT, ACTION_DROP };
static const char *const actions[] = {"reject", "drop", NULL};

struct dos {
        /* configuration */
        uint64_t time_period_ms;
        int64_t packet_rate_limit, request_rate_limit;
        uint64_t ban_time_ms;
        char **white_list;
        int action;
        int64_t max_tracked_sources;

        struct module *module;
        struct ratelimit *table;
        struct ip_prefix *exempt;
        size_t n_exempt;
        struct loop_timer *cleanup_timer;
        struct stats_counter *count_bans, *count_banned_requests, *count_dropped_packets;
        struct log_ratelimit ban_log;
};

#define D(field) offsetof(struct dos, field)
static const struct conf_option dos_rows[] = {
        {"module::DoSProtection", "time-period", CONF_DURATION, D(time_period_ms), "3000ms", 0, 0,
         0,
         "Rates are averaged over this period: a source may send rate times period messages "
         "at once, then rate per second",
         .unit = CONF_UNIT_MS},
        {"module::DoSProtection", "packet-rate-limit", CONF_INT, D(packet_rate_limit), "20", 0,
         1000000, 0,
         "Messages per second one source address may send (requests reaching the modules, "
         "responses and stray messages); 0 = no limit"},
        {"module::DoSProtection", "request-rate-limit", CONF_INT, D(request_rate_limit), "10", 0,
         1000000, 0,
         "Requests other than ACK per second one source address may send; 0 = no limit"},
        {"module::DoSProtection", "ban-time", CONF_DURATION, D(ban_time_ms), "120s", 0, 0, 0,
         "How long a source over a limit stays banned", .unit = CONF_UNIT_S},
        {"module::DoSProtection", "action", CONF_ENUM, D(action), "reject", 0, 0, 0,
         "What a banned source's requests get: reject (503 with Retry-After = time left in the "
         "ban) or drop (no answer, TCP/TLS connection closed; INVITEs still get the 503)",
         .choices = actions},
        {"module::DoSProtection", "white-list", CONF_LIST, D(white_list), "127.0.0.1 ::1", 0, 0,
         0,
         "Source addresses or networks (10.0.0.0/8, 2001:db8::/32) never counted nor banned: "
         "trusted hosts, other proxies"},
        {"module::DoSProtection", "max-tracked-sources", CONF_INT, D(max_tracked_sources),
         "65536", 16, 4194304, 0,
         "Source addresses remembered at once; beyond, the least recently seen is forgotten"},
};

static struct dos *dos_find(struct proxy *p, bool running) {
        for (size_t i = 0; p && i < p->n_modules; i++) {
                struct module *m = p->modules[i];
                if (m->desc != &module_dos)
                        continue;
                struct dos *s = m->state;
                if (running && (!m->enabled || !s->table))
                        return NULL;
                return s;
        }
        return NULL;
}

static bool is_exempt(const struct dos *s, const struct ip_addr *a) {
        for (size_t i = 0; i < s->n_exempt; i++)
                if (ip_prefix_contains(&s->exempt[i], a))
                        return true;
        return false;
}

static int exempt_add(struct dos *s, const char *address) {
        struct ip_prefix p;
        int r = ip_prefix_parse(address, &p);
        if (r < 0)
                return r;
        struct ip_prefix *n = reallocarray(s->exempt, s->n_exempt + 1, sizeof *n);
        if (!n)
                return -ENOMEM;
        s->exempt = n;
        s->exempt[s->n_exempt++] = p;
        return 0;
}

int dos_exempt_add(struct proxy *p, const char *address) {
        struct dos *s = dos_find(p, false);
        if (!s) {
                struct ip_prefix check;
                return ip_prefix_parse(address, &check);
        }
        return exempt_add(s, address);
}

static int source_of(msg_t *msg, struct ip_addr *ret) {
        su_addrinfo_t *ai = msg ? msg_addrinfo(msg) : NULL;
        if (!ai || !ai->ai_addr)
                return -EINVAL;
        return ip_addr_from_sockaddr(ai->ai_addr, (socklen_t)ai->ai_addrlen, ret);
}

static void format_ms(char *buf, size_t size, uint64_t ms) {
        if (ms % 1000 == 0)
                snprintf(buf, size, "%" PRIu64 "s", ms / 1000);
        else
                snprintf(buf, size, "%" PRIu64 "ms", ms);
}

static void note_ban(struct dos *s, const struct ip_addr *a, enum ratelimit_result why) {
        bool packets = why == RATELIMIT_BAN_PACKETS;
        char addr[IP_ADDR_STRLEN], ban[32], period[32];

        stats_inc(s->count_bans);
        if (!log_enabled(LOG_SUBSYSTEM, LOG_NOTICE) || !log_ratelimit_ok(&s->ban_log, 10, 20))
                return;
        format_ms(ban, sizeof ban, s->ban_time_ms);
        format_ms(period, sizeof period, s->time_period_ms);
        log_notice("Banning %s for %s: over %s (%" PRId64 " %s/s averaged over %s).",
                   ip_addr_format(a, addr), ban,
                   packets ? "packet-rate-limit" : "request-rate-limit",
                   packets ? s->packet_rate_limit : s->request_rate_limit,
                   packets ? "messages" : "requests", period);
}

/* The connection a request came on, referenced; NULL for datagrams. Taken before the answer:
 * nta drops the transaction's transport once a non-INVITE is answered. */
static tport_t *connection_of(struct proxy *p, struct proxy_request *req) {
        tport_t *tp = nta_incoming_transport(p->agent, req->irq, req->msg);
        if (tp && (!tport_is_reliable(tp) || !tport_is_secondary(tp))) {
                tport_unref(tp);
                tp = NULL;
        }
        return tp;
}

static void refuse(struct module *m, struct proxy_request *req, uint64_t left_ms) {
        struct dos *s = m->state;
        sip_method_t method = req->sip->sip_request->rq_method;
        tport_t *conn = s->action == ACTION_DROP ? connection_of(m->proxy, req) : NULL;

        if (method == sip_method_ack) {
                /* Never answered. */
        } else if (s->action == ACTION_DROP && method != sip_method_invite) {
                /* Not proxy_request_reply(): nothing is sent, nothing to count as a reply. */
                nta_incoming_treply(req->irq, SIP_408_REQUEST_TIMEOUT, TAG_END());
                req->replied = true;
        } else {
                char retry[32];
                snprintf(retry, sizeof retry, "%" PRIu64, MAX((left_ms + 999) / 1000, 1));
                proxy_request_reply(req, SIP_503_SERVICE_UNAVAILABLE,
                                    SIPTAG_RETRY_AFTER_STR(retry), TAG_END());
        }
        if (conn) {
                tport_shutdown(conn, 2);
                tport_unref(conn);
        }
}

static enum module_result dos_request(struct module *m, struct proxy_request *req) {
        struct dos *s = m->state;
        struct ip_addr addr;
        uint64_t left = 0;

        if (source_of(req->msg, &addr) < 0 || is_exempt(s, &addr))
                return MODULE_CONTINUE;
        bool request = req->sip->sip_request->rq_method != sip_method_ack;
        enum ratelimit_result r = ratelimit_hit(s->table, &addr, request, now_msec(), &left);
        if (r == RATELIMIT_PASS)
                return MODULE_CONTINUE;
        if (r != RATELIMIT_BANNED)
                note_ban(s, &addr, r);
        stats_inc(s->count_banned_requests);
        refuse(m, req, left);
        return MODULE_STOP;
}

int dos_note_packet(struct proxy *p, msg_t *msg) {
        struct dos *s = dos_find(p, true);
        struct ip_addr addr;

        if (!s || source_of(msg, &addr) < 0 || is_exempt(s, &addr))
                return 0;
        enum ratelimit_result r = ratelimit_hit(s->table, &addr, false, now_msec(), NULL);
        if (r == RATELIMIT_PASS)
                return 0;
        if (r != RATELIMIT_BANNED)
                note_ban(s, &addr, r);
        stats_inc(s->count_dropped_packets);
        msg_destroy(msg);
        return 1;
}

/* ---- control commands ---- */

static const char *reason_name(enum ratelimit_result r) {
        return r == RATELIMIT_BAN_PACKETS ? "packet-rate-limit" : "request-rate-limit";
}

struct bans_ctx {
        json_t *array;
        uint64_t now;
};

static void ban_to_json(const struct ratelimit_ban *b, void *userdata) {
        struct bans_ctx *c = userdata;
        char addr[IP_ADDR_STRLEN];
        json_array_append_new(c->array,
                              json_pack("{s:s, s:s, s:I, s:I, s:I}", "source",
                                        ip_addr_format(&b->addr, addr), "reason",
                                        reason_name(b->reason), "remaining-ms",
                                        (json_int_t)(b->until_ms - c->now), "banned-ms-ago",
                                        (json_int_t)(c->now - b->since_ms), "refused",
                                        (json_int_t)b->refused));
}

static int cli_command(struct ctl_request *req, int argc, char **argv, void *userdata) {
        struct dos *s = userdata;
        uint64_t now = now_msec();

        if (streq(argv[0], "DOS_BANS")) {
                if (argc != 1) {
                        ctl_reply_error(req, "Usage: DOS_BANS");
                        return 0;
                }
                struct bans_ctx c = {.array = json_array(), .now = now};
                if (!c.array)
                        return -ENOMEM;
                ratelimit_foreach_ban(s->table, now, ban_to_json, &c);
                ctl_reply(req, json_pack("{s:o, s:I}", "bans", c.array, "tracked-sources",
                                         (json_int_t)ratelimit_n_sources(s->table)));
                return 0;
        }

        struct ip_addr addr;
        char buf[IP_ADDR_STRLEN];
        if (argc != 2) {
                ctl_reply_error(req, "Usage: DOS_UNBAN <address>");
                return 0;
        }
        if (ip_addr_parse(argv[1], &addr) < 0) {
                ctl_reply_error(req, "Invalid address '%s'", argv[1]);
                return 0;
        }
        if (ratelimit_unban(s->table, &addr, now) < 0) {
                ctl_reply_error(req, "'%s' is not banned", argv[1]);
                return 0;
        }
        log_notice("Ban of %s lifted by the control socket.", ip_addr_format(&addr, buf));
        ctl_reply(req, json_pack("{s:s}", "unbanned", buf));
        return 0;
}

/* ---- module ---- */

static void on_lifted(const struct ratelimit_ban *b, void *userdata) {
        char addr[IP_ADDR_STRLEN];
        log_info("Ban of %s ended (%" PRIu64 " messages refused).", ip_addr_format(&b->addr, addr),
                 b->refused);
}

static void on_cleanup_timer(struct loop_timer *t, void *userdata) {
        struct dos *s = userdata;
        ratelimit_expire(s->table, now_msec(), on_lifted, s);
        loop_timer_arm(t, CLEANUP_INTERVAL_MS);
}

static uint64_t tracked_sources(void *userdata) {
        struct dos *s = userdata;
        return ratelimit_n_sources(s->table);
}

static uint64_t banned_sources(void *userdata) {
        struct dos *s = userdata;
        return ratelimit_n_bans(s->table);
}

static int dos_init(struct module *m) {
        struct dos *s = m->state;
        struct proxy *p = m->proxy;
        struct stats *st = proxy_stats(p);
        int r;

        s->module = m;
        if (s->time_period_ms == 0 || s->ban_time_ms == 0)
                return log_error_errno(EINVAL, "[module::DoSProtection] time-period and ban-time "
                                               "must be above zero.");
        STRV_FOREACH(a, s->white_list) {
                r = exempt_add(s, *a);
                if (r == -ENOMEM)
                        return log_oom();
                if (r < 0)
                        return log_error_errno(r, "[module::DoSProtection] white-list: invalid "
                                                  "address or network '%s'.", *a);
        }
        const struct ratelimit_limits limits = {
                .period_ms = s->time_period_ms,
                .packet_rate = (uint64_t)s->packet_rate_limit,
                .request_rate = (uint64_t)s->request_rate_limit,
                .ban_ms = s->ban_time_ms,
                .max_sources = (size_t)s->max_tracked_sources,
        };
        r = ratelimit_new(&limits, &s->table);
        if (r < 0)
                return log_error_errno(r, "Failed to create the DoS table: %m");

        s->count_bans = stats_declare(st, m->desc->section, "count-bans",
                                      "Sources banned for going over a rate limit");
        s->count_banned_requests = stats_declare(st, m->desc->section, "count-banned-requests",
                                                 "Requests refused or dropped from banned sources");
        s->count_dropped_packets = stats_declare(st, m->desc->section, "count-dropped-packets",
                                                 "Responses and stray messages dropped from "
                                                 "banned sources");
        if (!s->count_bans || !s->count_banned_requests || !s->count_dropped_packets)
                return log_oom();
        r = stats_declare_gauge(st, m->desc->section, "tracked-sources",
                                "Source addresses in the rate table", tracked_sources, s);
        if (r >= 0)
                r = stats_declare_gauge(st, m->desc->section, "banned-sources",
                                        "Source addresses banned now", banned_sources, s);
        if (r < 0)
                return log_error_errno(r, "Failed to declare the DoS gauges: %m");

        struct ctl *ctl = daemon_ctl(p->daemon);
        if (ctl) {
                r = ctl_register(ctl, "DOS_BANS",
                                 "DOS_BANS: the banned source addresses and the time left",
                                 cli_command, s);
                if (r >= 0)
                        r = ctl_register(ctl, "DOS_UNBAN",
                                         "DOS_UNBAN <address>: lift the ban of a source address",
                                         cli_command, s);
                if (r < 0)
                        return log_error_errno(r, "Failed to register the DOS_* commands: %m");
        }

        r = loop_timer_new(daemon_loop(p->daemon), on_cleanup_timer, s, &s->cleanup_timer);
        if (r >= 0)
                r = loop_timer_arm(s->cleanup_timer, CLEANUP_INTERVAL_MS);
        if (r < 0)
                return log_error_errno(r, "Failed to start the DoS cleanup timer: %m");
        if (s->packet_rate_limit == 0 && s->request_rate_limit == 0)
                log_notice("DoSProtection has no rate limit set: no source will be banned.");
        return 0;
}

static void dos_done(struct module *m) {
        struct dos *s = m->state;
        loop_timer_free(s->cleanup_timer);
        s->cleanup_timer = NULL;
        ratelimit_free(s->table);
        s->table = NULL;
        free(s->exempt);
        s->exempt = NULL;
        s->n_exempt = 0;
}

const struct module_desc module_dos = {
        .name = "DoSProtection",
        .section = "module::DoSProtection",
        .doc = "Bans source addresses that send more than the configured message or request "
               "rates: their requests get 503 (or nothing) for ban-time.",
        .default_enabled = true,
        .state_size = sizeof(struct dos),
        .rows = dos_rows,
        .n_rows = ELEMENTSOF(dos_rows),
        .init = dos_init,
        .on_request = dos_request,
        .done = dos_done,
};
