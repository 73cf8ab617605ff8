/* SPDX-License-Identifier: MIT */
/* Router: resolves out-of-dialog requests for the managed domains through the registrar and
 * forks them to the bindings found (fork.c), by groups of equal q; static targets and a
 * fallback route complete the target set. 404 for an unknown address, 480 when no binding can
 * be used. Requests for other domains, in-dialog requests and requests with a Route to
 * somewhere else go on to Forward. */
#define LOG_SUBSYSTEM LOG_router
#include <stdio.h>

#include "daemon.h"
#include "fork.h"
#include "module.h"
#include "proxy.h"
#include "registrar-store.h"
#include "registrar.h"
#include "stats.h"

struct router {
        struct fork_config fork;
        char **static_targets;
        char *fallback_route;

        struct module *module;
        struct stats_counter *count_forks;
        struct stats_counter *count_not_found, *count_unavailable;
};

#define R(field) offsetof(struct router, field)
static const struct conf_option router_rows[] = {
        {"module::Router", "static-targets", CONF_URI_LIST, R(static_targets), NULL, 0, 0, 0,
         "URIs added to the targets of every INVITE and MESSAGE routed to a managed domain"},
        {"module::Router", "fallback-route", CONF_URI, R(fallback_route), NULL, 0, 0, 0,
         "Route (a SIP URI) of a last-resort branch, tried after every binding failed, or at "
         "once when the address has none; empty = none"},
        {"module::Router", "call-fork-current-branches-timeout", CONF_DURATION,
         R(fork.group_timeout_ms), "10s", 0, 0, 0,
         "Bindings are tried by groups of equal q, highest first: the next group starts when "
         "the current one has answered or after this long",
         .unit = CONF_UNIT_S},
        {"module::Router", "timer-c", CONF_DURATION, R(fork.timer_c_ms), "185s", 0, 0, 0,
         "RFC 3261 Timer C: an INVITE branch without a final answer this long after its last "
         "provisional response is cancelled and counts as 408",
         .unit = CONF_UNIT_S},
        {"module::Router", "fork-no-global-decline", CONF_BOOL, R(fork.no_global_decline), "false",
         0, 0, 0,
         "When true, a 6xx from one device does not cancel the calls to the other devices"},
};

struct route_op {
        struct router *router;
        struct proxy_request *req;
        bool sips;
};

static bool contact_is_secure(const char *uri) {
        if (strncasecmp(uri, "sips:", 5) == 0)
                return true;
        const char *t = strcasestr(uri, ";transport=");
        return t && strncasecmp(t + 11, "tls", 3) == 0;
}

static void route_done(struct route_op *op, int status, const char *phrase, const char *warning) {
        struct proxy_request *req = op->req;
        free(op);
        if (status)
                proxy_request_reply(req, status, phrase,
                                    TAG_IF(warning, SIPTAG_WARNING_STR(warning)),
                                    TAG_IF(status == 503, SIPTAG_RETRY_AFTER_STR("5")), TAG_END());
        proxy_request_resume(req, MODULE_STOP);
}

static void on_fetched(int error, struct registrar_record *rec, void *userdata) {
        _cleanup_(registrar_record_freep) struct registrar_record *record = rec;
        struct route_op *op = userdata;
        struct router *rt = op->router;
        struct proxy_request *req = op->req;
        const sip_t *sip = req->sip;
        struct fork *f = NULL;
        size_t skipped_insecure = 0;
        int r;

        if (error < 0) {
                log_warning_errno(error, "Registrar lookup failed: %m");
                route_done(op, SIP_503_SERVICE_UNAVAILABLE, NULL);
                return;
        }
        if (req->cancelled) {
                route_done(op, SIP_487_REQUEST_TERMINATED, NULL);
                return;
        }

        r = fork_new(req, &f);
        if (r < 0)
                goto oom;
        for (size_t i = 0; i < record->n_bindings; i++) {
                const struct registrar_binding *b = &record->bindings[i];
                if (op->sips && !contact_is_secure(b->contact)) {
                        skipped_insecure++;
                        continue;
                }
                r = fork_add_target(f, &(struct fork_target){
                                               .uri = b->contact,
                                               .routes = b->path,
                                               .q = b->q,
                                               .uid = b->unique_id,
                                       });
                if (r < 0)
                        goto oom;
        }
        sip_method_t method = sip->sip_request->rq_method;
        if (method == sip_method_invite || method == sip_method_message)
                STRV_FOREACH(t, rt->static_targets)
                        if ((r = fork_add_target(f, &(struct fork_target){.uri = *t, .q = 1000})) <
                            0)
                                goto oom;
        if (rt->fallback_route) {
                _cleanup_free_ char *ruri = url_as_string(NULL, sip->sip_request->rq_url);
                char *routes[] = {rt->fallback_route, NULL};
                if (!ruri || (r = fork_add_target(f, &(struct fork_target){
                                                             .uri = ruri,
                                                             .routes = routes,
                                                             .q = 0,
                                                     })) < 0)
                        goto oom;
        }
        if (fork_n_targets(f) == 0) {
                fork_abandon(f);
                if (skipped_insecure > 0) {
                        stats_inc(rt->count_unavailable);
                        route_done(op, SIP_480_TEMPORARILY_UNAVAILABLE,
                                   "380 sipfleet \"SIPS not allowed: no device is registered "
                                   "over TLS\"");
                        return;
                }
                stats_inc(rt->count_not_found);
                log_info("No binding for '%s': 404.", record->aor);
                route_done(op, SIP_404_NOT_FOUND, NULL);
                return;
        }
        stats_inc(rt->count_forks);
        log_debug("Forking to %zu targets of '%s'.", fork_n_targets(f), record->aor);
        free(op);
        fork_start(f); /* the fork owns the request now */
        return;
oom:
        fork_abandon(f);
        log_oom();
        route_done(op, SIP_500_INTERNAL_SERVER_ERROR, NULL);
}

static enum module_result router_request(struct module *m, struct proxy_request *req) {
        struct router *rt = m->state;
        const sip_t *sip = req->sip;
        const url_t *ruri = sip->sip_request->rq_url;
        sip_method_t method = sip->sip_request->rq_method;
        struct registrar *reg = proxy_registrar(m->proxy);

        if (req->branch || !reg || method == sip_method_register || method == sip_method_ack ||
            method == sip_method_cancel || (sip->sip_to && sip->sip_to->a_tag) || sip->sip_route ||
            (ruri->url_type != url_sip && ruri->url_type != url_sips) ||
            !registrar_domain_managed(reg, ruri->url_host))
                return MODULE_CONTINUE;

        if (sip->sip_max_forwards && sip->sip_max_forwards->mf_count == 0) {
                proxy_request_reply(req, SIP_483_TOO_MANY_HOPS, TAG_END());
                return MODULE_STOP;
        }
        _cleanup_free_ char *text = url_as_string(NULL, ruri);
        _cleanup_free_ char *aor = text ? registrar_aor_normalize(text) : NULL;
        if (!aor || !ruri->url_user) {
                stats_inc(rt->count_not_found);
                proxy_request_reply(req, SIP_404_NOT_FOUND, TAG_END());
                return MODULE_STOP;
        }
        struct route_op *op = calloc(1, sizeof *op);
        if (!op) {
                log_oom();
                proxy_request_reply(req, SIP_500_INTERNAL_SERVER_ERROR, TAG_END());
                return MODULE_STOP;
        }
        *op = (struct route_op){.router = rt, .req = req, .sips = ruri->url_type == url_sips};
        proxy_request_trying(req);
        struct registrar_store *store = registrar_get_store(reg);
        int r = store->ops->fetch(store, aor, on_fetched, op);
        if (r < 0) {
                free(op);
                log_warning_errno(r, "Registrar lookup of '%s' failed: %m", aor);
                proxy_request_reply(req, SIP_503_SERVICE_UNAVAILABLE, SIPTAG_RETRY_AFTER_STR("5"),
                                    TAG_END());
                return MODULE_STOP;
        }
        return MODULE_SUSPEND;
}

static uint64_t live_forks(void *userdata) {
        struct router *rt = userdata;
        return fork_count(rt->module->proxy);
}

static int router_init(struct module *m) {
        struct router *rt = m->state;
        struct proxy *p = m->proxy;
        struct stats *s = proxy_stats(p);
        rt->module = m;
        if (rt->fork.timer_c_ms < 1000)
                return log_error_errno(EINVAL, "[module::Router] timer-c must be at least 1s.");
        p->fork_config = &rt->fork;
        rt->count_forks = stats_declare(s, m->desc->section, "count-forks",
                                        "Requests forked to the bindings of an address");
        rt->count_not_found = stats_declare(s, m->desc->section, "count-not-found",
                                            "Requests for an address with no binding (404)");
        rt->count_unavailable = stats_declare(s, m->desc->section, "count-unavailable",
                                              "Requests with no usable binding (480)");
        int r = stats_declare_gauge(s, m->desc->section, "live-forks",
                                    "Forks (stateful relays) in progress", live_forks, rt);
        if (r < 0)
                return log_error_errno(r, "Failed to declare the router gauge: %m");
        return 0;
}

static void router_done(struct module *m) {
        struct router *rt = m->state;
        if (m->proxy->fork_config == &rt->fork)
                m->proxy->fork_config = NULL;
}

const struct module_desc module_router = {
        .name = "Router",
        .section = "module::Router",
        .doc = "Routes requests for the managed domains to the registered devices, forking to "
               "all of them.",
        .default_enabled = true,
        .state_size = sizeof(struct router),
        .rows = router_rows,
        .n_rows = ELEMENTSOF(router_rows),
        .init = router_init,
        .on_request = router_request,
        .done = router_done,
};
