/* SPDX-License-Identifier: MIT */
/* Forward: the end of the chain, where requests leave the proxy. Max-Forwards (483), loop
 * detection (482: the next hop is this proxy), removal of configured Request-URI parameters,
 * Record-Route for out-of-dialog requests (two entries when the request changes transport, RFC
 * 5658) and Path for forwarded REGISTERs, then a stateful relay: as one branch of a fork when
 * Router forked the request, else as a fork of its own. ACKs for 2xx go statelessly. */
#define LOG_SUBSYSTEM LOG_router
#include <stdio.h>

#include <sofia-sip/msg_header.h>
#include <sofia-sip/sip_util.h>

#include "fork.h"
#include "module.h"
#include "proxy.h"
#include "routes.h"
#include "stats.h"

enum { TRANSPORT_UDP, TRANSPORT_TCP, TRANSPORT_TLS };
static const char *const transports[] = {"udp", "tcp", "tls", NULL};

struct forward {
        char *routes_config_path;
        struct routes *routes;
        bool add_path;
        int default_transport;
        char **params_to_remove;
        struct stats_counter *count_loops, *count_too_many_hops, *count_routed;
};

#define F(field) offsetof(struct forward, field)
static const struct conf_option forward_rows[] = {
        {"module::Forward", "routes-config-path", CONF_STRING, F(routes_config_path), NULL, 0,
         0, 0,
         "Routes file: one rule per line, '<sip:next-hop> filter-expression' (or '*'), first "
         "match wins, for out-of-dialog requests that no other module routed; re-read on "
         "SIGHUP/RELOAD (a broken file keeps the previous rules); empty = none"},
        {"module::Forward", "add-path", CONF_BOOL, F(add_path), "true", 0, 0, 0,
         "Add a Path header (RFC 3327) naming this proxy to REGISTERs relayed to another "
         "registrar"},
        {"module::Forward", "default-transport", CONF_ENUM, F(default_transport), "udp", 0, 0, 0,
         "Transport assumed for a next hop whose URI names none (chooses the Record-Route)",
         .choices = transports},
        {"module::Forward", "params-to-remove", CONF_LIST, F(params_to_remove),
         "pn-tok pn-type app-id pn-msg-str pn-call-str pn-call-snd pn-msg-snd pn-timeout "
         "pn-silent pn-provider pn-prid pn-param",
         0, 0, 0, "Request-URI parameters removed before a request leaves the proxy"},
};

/* The protocol nta will use for a next hop. */
static const char *hop_protocol(struct forward *fw, const url_t *hop) {
        if (hop->url_type == url_sips)
                return "tls";
        char proto[8];
        if (hop->url_params && url_param(hop->url_params, "transport", proto, sizeof proto) > 0) {
                for (size_t i = 0; transports[i]; i++)
                        if (strcaseeq(proto, transports[i]))
                                return transports[i];
        }
        return transports[fw->default_transport];
}

static int remove_params(struct forward *fw, struct proxy *p, msg_t *msg, sip_t *sip) {
        const url_t *ruri = sip->sip_request->rq_url;
        if (!ruri->url_params)
                return 0;
        /* The contact-correction marker is ours: gone when the request reaches the device. */
        const char *marker = sip->sip_route ? NULL : p->contact_correction_param;
        bool found = marker && url_has_param(ruri, marker);
        STRV_FOREACH(name, fw->params_to_remove)
                if (url_has_param(ruri, *name))
                        found = true;
        if (!found)
                return 0;
        su_home_t *home = msg_home(msg);
        url_t *u = url_hdup(home, ruri);
        if (!u)
                return -ENOMEM;
        char *params = su_strdup(home, u->url_params);
        STRV_FOREACH(name, fw->params_to_remove)
                if (params)
                        params = url_strip_param_string(params, *name);
        if (params && marker)
                params = url_strip_param_string(params, marker);
        u->url_params = params && *params ? params : NULL;
        sip_request_t *rq =
                sip_request_create(home, sip->sip_request->rq_method,
                                   sip->sip_request->rq_method_name, (url_string_t *)u, NULL);
        if (!rq || msg_header_replace(msg, (msg_pub_t *)sip, (msg_header_t *)sip->sip_request,
                                      (msg_header_t *)rq) < 0)
                return -ENOMEM;
        return 0;
}

static int insert_route_header(msg_t *msg, sip_t *sip, msg_hclass_t *hc, const char *uri) {
        char *value = su_sprintf(msg_home(msg), "<%s>", uri);
        msg_header_t *h = value ? msg_header_make(msg_home(msg), hc, value) : NULL;
        if (!h)
                return -ENOMEM;
        return msg_header_insert(msg, (msg_pub_t *)sip, h) < 0 ? -ENOMEM : 0;
}

/* Record-Route (or Path) naming us on the side of the next hop and, when the request came in
 * on another transport, a second one for the side it came from, below. */
static int record_route(struct forward *fw, struct proxy_request *req, msg_t *msg, sip_t *sip,
                        const url_t *hop, msg_hclass_t *hc) {
        struct proxy *p = req->proxy;
        tport_t *out = proxy_primary(p, hop_protocol(fw, hop), hop->url_host);
        tport_t *in = req->in_primary;
        if (!out)
                out = in;
        if (!out)
                return 0;
        su_home_t *home = msg_home(msg);
        int r;
        if (in && in != out &&
            (r = insert_route_header(msg, sip, hc, proxy_primary_uri(home, in))) < 0)
                return r;
        return insert_route_header(msg, sip, hc, proxy_primary_uri(home, out));
}

/* Out-of-dialog requests without a Route, not forked by Router: the routes file may name their
 * next hop, pushed as a Route with ;lr. */
static int apply_routes(struct forward *fw, struct proxy_request *req, msg_t *msg, sip_t *sip) {
        if (!fw->routes || req->branch || sip->sip_route || (sip->sip_to && sip->sip_to->a_tag))
                return 0;
        const char *hop = routes_match(fw->routes, sip);
        if (!hop)
                return 0;
        stats_inc(fw->count_routed);
        log_debug("Routes file: next hop '%s'.", hop);
        su_home_t *home = msg_home(msg);
        url_t *u = url_hdup(home, URL_STRING_MAKE(hop)->us_url);
        if (!u)
                return -ENOMEM;
        if (!url_has_param(u, "lr"))
                url_param_add(home, u, "lr");
        char *value = su_sprintf(home, "<%s>", url_as_string(home, u));
        sip_route_t *r = value ? sip_route_make(home, value) : NULL;
        if (!r || msg_header_insert(msg, (msg_pub_t *)sip, (msg_header_t *)r) < 0)
                return -ENOMEM;
        return 1;
}

static enum module_result forward_fail(struct proxy_request *req, msg_t *msg, int status,
                                       const char *phrase) {
        if (msg)
                msg_destroy(msg);
        proxy_request_reply(req, status, phrase, TAG_END());
        return MODULE_STOP;
}

static enum module_result forward_request(struct module *m, struct proxy_request *req) {
        struct forward *fw = m->state;
        struct proxy *p = m->proxy;
        sip_method_t method = req->sip->sip_request->rq_method;

        /* A branch's message is its own; the incoming one stays as received, for nta. */
        msg_t *msg = req->branch ? msg_ref_create(req->msg) : msg_copy(req->msg);
        if (!msg)
                return forward_fail(req, NULL, SIP_500_INTERNAL_SERVER_ERROR);
        sip_t *sip = sip_object(msg);

        if (sip->sip_max_forwards) {
                if (sip->sip_max_forwards->mf_count == 0) {
                        stats_inc(fw->count_too_many_hops);
                        return forward_fail(req, msg, SIP_483_TOO_MANY_HOPS);
                }
                sip->sip_max_forwards->mf_count--;
                msg_fragment_clear(sip->sip_max_forwards->mf_common);
        } else if (sip_add_make(msg, sip, sip_max_forwards_class, "70") < 0) {
                return forward_fail(req, msg, SIP_500_INTERNAL_SERVER_ERROR);
        }

        /* A route set starting with us (a Path naming this node, in a cluster): ours to pop. */
        while (sip->sip_route && proxy_is_us(p, sip->sip_route->r_url))
                sip_route_remove(msg, sip);
        if (apply_routes(fw, req, msg, sip) < 0)
                return forward_fail(req, msg, SIP_500_INTERNAL_SERVER_ERROR);
        const url_t *hop = sip->sip_route ? sip->sip_route->r_url : sip->sip_request->rq_url;
        if (proxy_is_us(p, hop)) {
                stats_inc(fw->count_loops);
                log_info("The next hop of '%s' is this proxy: 482.",
                         sip->sip_request->rq_method_name);
                return forward_fail(req, msg, SIP_482_LOOP_DETECTED);
        }
        if (remove_params(fw, p, msg, sip) < 0)
                return forward_fail(req, msg, SIP_500_INTERNAL_SERVER_ERROR);
        hop = sip->sip_route ? sip->sip_route->r_url : sip->sip_request->rq_url;

        bool in_dialog = sip->sip_to && sip->sip_to->a_tag;
        int r = 0;
        if (method == sip_method_register && fw->add_path)
                r = record_route(fw, req, msg, sip, hop, sip_path_class);
        else if (!in_dialog && method != sip_method_register && method != sip_method_ack)
                r = record_route(fw, req, msg, sip, hop, sip_record_route_class);
        if (r < 0)
                return forward_fail(req, msg, SIP_500_INTERNAL_SERVER_ERROR);

        if (method == sip_method_ack) {
                /* ACK for a 2xx: end to end, no transaction. */
                if (nta_outgoing_mcreate(p->agent, NULL, NULL, NULL, msg, NTATAG_STATELESS(1),
                                         TAG_END()) == NULL) {
                        log_debug("Failed to relay an ACK.");
                        msg_destroy(msg);
                }
                return MODULE_STOP;
        }
        if (req->branch) {
                fork_branch_send(req->branch, msg);
                return MODULE_STOP;
        }
        proxy_request_trying(req);
        r = fork_relay(req, msg);
        if (r < 0) {
                log_oom();
                return forward_fail(req, msg, SIP_500_INTERNAL_SERVER_ERROR);
        }
        return MODULE_SUSPEND; /* the fork answers and ends the request */
}

static int load_routes(struct forward *fw, struct routes **ret) {
        _cleanup_free_ char *error = NULL;
        *ret = NULL;
        if (isempty(fw->routes_config_path))
                return 0;
        int r = routes_load(fw->routes_config_path, ret, &error);
        if (r < 0)
                return log_error_errno(r, "[module::Forward] routes-config-path: %s",
                                       error ? error : strerror(-r));
        log_info("Loaded %zu routes from '%s'.", routes_count(*ret), fw->routes_config_path);
        return 0;
}

static void forward_reload(struct module *m) {
        struct forward *fw = m->state;
        struct routes *routes;
        if (load_routes(fw, &routes) < 0) {
                log_warning("Keeping the previous routes.");
                return;
        }
        routes_free(fw->routes);
        fw->routes = routes;
}

static void forward_done(struct module *m) {
        struct forward *fw = m->state;
        routes_free(fw->routes);
        fw->routes = NULL;
}

static int forward_init(struct module *m) {
        struct forward *fw = m->state;
        struct stats *s = proxy_stats(m->proxy);
        int r = load_routes(fw, &fw->routes);
        if (r < 0)
                return r;
        fw->count_routed = stats_declare(s, m->desc->section, "count-routed",
                                         "Requests given a next hop by the routes file");
        fw->count_loops = stats_declare(s, m->desc->section, "count-loops",
                                        "Requests answered 482 (the next hop was us)");
        fw->count_too_many_hops = stats_declare(s, m->desc->section, "count-too-many-hops",
                                                "Requests answered 483 (Max-Forwards 0)");
        return 0;
}

const struct module_desc module_forward = {
        .name = "Forward",
        .section = "module::Forward",
        .doc = "Sends requests to their next hop: Max-Forwards, loop detection, Record-Route, "
               "Path, stateful relay.",
        .default_enabled = true,
        .state_size = sizeof(struct forward),
        .rows = forward_rows,
        .n_rows = ELEMENTSOF(forward_rows),
        .init = forward_init,
        .on_request = forward_request,
        .reload = forward_reload,
        .done = forward_done,
};
