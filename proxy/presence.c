/* SPDX-License-Identifier: MIT */
/* Presence: out-of-dialog PUBLISH and SUBSCRIBE for the presence event package (and its
 * presence.winfo companion) go to the presence server (sipfleet-presence), as a Route with ;lr
 * pushed on top, so that Router leaves them alone and Forward relays them with a Record-Route;
 * the NOTIFYs of the resulting dialogs come back through us on that route set. Requests
 * coming from the presence server's host are trusted (proxy_presence_is_server()) and never
 * routed back to it. */
#define LOG_SUBSYSTEM LOG_presence
#include <arpa/inet.h>
#include <stdio.h>

#include <sofia-sip/su.h>

#include "module.h"
#include "proxy.h"
#include "stats.h"

struct presence_module {
        char *server;
        bool only_list_subscription;

        url_t *server_url;
        su_home_t home[1];
        struct stats_counter *count_routed;
};

#define P(field) offsetof(struct presence_module, field)
static const struct conf_option presence_rows[] = {
        {"module::Presence", "presence-server", CONF_URI, P(server),
         "sip:127.0.0.1:5065;transport=tcp", 0, 0, 0,
         "SIP URI of the presence server (sipfleet-presence); requests from its host are "
         "trusted"},
        {"module::Presence", "only-list-subscription", CONF_BOOL, P(only_list_subscription),
         "false", 0, 0, 0,
         "Route only list SUBSCRIBEs (Supported: eventlist) to the presence server; single "
         "ones go on to the subscribed user's devices"},
};

static bool is_presence_event(const sip_t *sip) {
        return sip->sip_event && sip->sip_event->o_type &&
               (streq(sip->sip_event->o_type, "presence") ||
                streq(sip->sip_event->o_type, "presence.winfo"));
}

static enum module_result presence_request(struct module *m, struct proxy_request *req) {
        struct presence_module *pm = m->state;
        msg_t *msg = req->msg;
        sip_t *sip = req->sip;
        sip_method_t method = sip->sip_request->rq_method;
        if (req->branch || (method != sip_method_publish && method != sip_method_subscribe) ||
            (sip->sip_to && sip->sip_to->a_tag) || sip->sip_route || !is_presence_event(sip))
                return MODULE_CONTINUE;
        /* The presence server subscribing or publishing on its own behalf: not back to it. */
        if (proxy_presence_is_server(m->proxy, msg))
                return MODULE_CONTINUE;
        if (method == sip_method_subscribe && pm->only_list_subscription &&
            !sip_has_feature(sip->sip_supported, "eventlist"))
                return MODULE_CONTINUE;
        su_home_t *home = msg_home(msg);
        char *value = su_sprintf(home, "<%s>", url_as_string(home, pm->server_url));
        sip_route_t *r = value ? sip_route_make(home, value) : NULL;
        if (!r || msg_header_insert(msg, (msg_pub_t *)sip, (msg_header_t *)r) < 0) {
                proxy_request_reply(req, SIP_500_INTERNAL_SERVER_ERROR, TAG_END());
                return MODULE_STOP;
        }
        stats_inc(pm->count_routed);
        log_debug("%s for '%s' routed to the presence server.", sip->sip_request->rq_method_name,
                  sip->sip_request->rq_url->url_user ? sip->sip_request->rq_url->url_user : "");
        return MODULE_CONTINUE;
}

static int presence_init(struct module *m) {
        struct presence_module *pm = m->state;
        su_home_init(pm->home);
        if (isempty(pm->server))
                return log_error_errno(EINVAL, "[module::Presence] presence-server is empty.");
        pm->server_url = url_hdup(pm->home, URL_STRING_MAKE(pm->server)->us_url);
        if (!pm->server_url || !pm->server_url->url_host)
                return log_error_errno(EINVAL,
                                       "[module::Presence] presence-server '%s' is not "
                                       "a SIP URI.",
                                       pm->server);
        if (!url_has_param(pm->server_url, "lr"))
                url_param_add(pm->home, pm->server_url, "lr");
        pm->count_routed = stats_declare(proxy_stats(m->proxy), "module::Presence", "count-routed",
                                         "PUBLISH and SUBSCRIBE routed to the presence server");
        return 0;
}

static void presence_done(struct module *m) {
        struct presence_module *pm = m->state;
        if (pm->server_url)
                su_home_deinit(pm->home);
}

const struct module_desc module_presence = {
        .name = "Presence",
        .section = "module::Presence",
        .doc = "Routes PUBLISH and SUBSCRIBE for presence to the presence server.",
        .default_enabled = false,
        .state_size = sizeof(struct presence_module),
        .rows = presence_rows,
        .n_rows = ELEMENTSOF(presence_rows),
        .init = presence_init,
        .on_request = presence_request,
        .done = presence_done,
};

/* The host part of the presence server, as an address: only IP literals are compared (sofia's
 * resolver is asynchronous, and a trust decision waits for nothing). */
static bool host_is(const char *host, const su_sockaddr_t *su) {
        char buf[64];
        size_t len = strlen(host);
        if (host[0] == '[' && len > 2 && len - 2 < sizeof buf) {
                memcpy(buf, host + 1, len - 2);
                buf[len - 2] = 0;
                host = buf;
        }
        if (su->su_family == AF_INET) {
                struct in_addr a;
                return inet_pton(AF_INET, host, &a) == 1 &&
                       memcmp(&a, &su->su_sin.sin_addr, sizeof a) == 0;
        }
        if (su->su_family == AF_INET6) {
                struct in6_addr a;
                return inet_pton(AF_INET6, host, &a) == 1 &&
                       memcmp(&a, &su->su_sin6.sin6_addr, sizeof a) == 0;
        }
        return false;
}

bool proxy_presence_is_server(struct proxy *p, msg_t *msg) {
        for (size_t i = 0; i < p->n_modules; i++) {
                struct module *m = p->modules[i];
                if (m->desc != &module_presence || !m->enabled)
                        continue;
                struct presence_module *pm = m->state;
                su_sockaddr_t su;
                socklen_t len = sizeof su;
                if (!pm->server_url || msg_get_address(msg, &su, &len) < 0)
                        return false;
                return host_is(pm->server_url->url_host, &su);
        }
        return false;
}
