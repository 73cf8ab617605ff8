/* SPDX-License-Identifier: MIT */
/* NatHelper: contact correction for clients behind NAT. When a REGISTER or a dialog-creating
 * request (or its 18x/2xx answer) comes from an address other than the one its Contact names,
 * the Contact is rewritten to the address the message really came from, with the transport it
 * came over and a ;verified marker (contact-correction-param). Registered contacts then point
 * at the NAT binding, over UDP, or at the very TCP/TLS connection the client keeps open, which
 * sofia reuses for requests to that address (RFC 5626 flows without flow tokens). Forward adds
 * Record-Route so that in-dialog requests come back through the proxy; the marker is removed
 * when the request is delivered to the device. */
#define LOG_SUBSYSTEM LOG_sip
#include <ctype.h>
#include <netdb.h>
#include <stdio.h>


#include "module.h"
#include "proxy.h"
#include "stats.h"

struct nat {
        char *correction_param;
        struct stats_counter *count_corrected;
};

#define N(field) offsetof(struct nat, field)
static const struct conf_option nat_rows[] = {
        {"module::NatHelper", "contact-correction-param", CONF_STRING, N(correction_param),
         "verified", 0, 0, 0,
         "Contact parameter marking a corrected contact (a contact carrying it is left alone)"},
};

static bool is_dialog_creating(sip_method_t m) {
        return m == sip_method_invite || m == sip_method_subscribe || m == sip_method_refer ||
               m == sip_method_register || m == sip_method_notify;
}

/* host and port of the peer a message came from; false when unknown. */
static bool peer_of(msg_t *msg, char *host, size_t hostlen, char *port, size_t portlen) {
        su_sockaddr_t su;
        socklen_t len = sizeof su;
        if (msg_get_address(msg, &su, &len) < 0 || len == 0)
                return false;
        return getnameinfo(&su.su_sa, len, host, (socklen_t)hostlen, port, (socklen_t)portlen,
                           NI_NUMERICHOST | NI_NUMERICSERV) == 0;
}

static bool host_equal(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b);
        if (a[0] == '[' && la > 2)
                a++, la -= 2;
        if (b[0] == '[' && lb > 2)
                b++, lb -= 2;
        return la == lb && strncasecmp(a, b, la) == 0;
}

/* The transport of a message from its top Via ("UDP", "TCP", "TLS"...). */
static const char *via_transport(const sip_t *sip) {
        const char *p = sip->sip_via ? sip->sip_via->v_protocol : NULL;
        const char *slash = p ? strrchr(p, '/') : NULL;
        return slash ? slash + 1 : "UDP";
}

static int correct_contacts(struct nat *nat, msg_t *msg, sip_t *sip) {
        char host[NI_MAXHOST], port[NI_MAXSERV];
        if (!sip->sip_contact || !peer_of(msg, host, sizeof host, port, sizeof port))
                return 0;
        su_home_t *home = msg_home(msg);
        const char *transport = via_transport(sip);
        bool udp = strcaseeq(transport, "UDP");
        int corrected = 0;
        for (sip_contact_t *m = sip->sip_contact; m; m = m->m_next) {
                url_t *u = m->m_url;
                if (!u->url_host || u->url_type == url_any || !u->url_host[0] ||
                    (u->url_type != url_sip && u->url_type != url_sips))
                        continue;
                if (url_has_param(u, nat->correction_param) || url_has_param(u, "gr") ||
                    url_has_param(u, "isfocus"))
                        continue;
                const char *uport =
                        u->url_port ? u->url_port : (u->url_type == url_sips ? "5061" : "5060");
                char tp[16] = "";
                url_param(u->url_params, "transport", tp, sizeof tp);
                bool same_transport =
                        udp ? (!*tp || strcaseeq(tp, "udp")) : strcaseeq(tp, transport);
                if (host_equal(u->url_host, host) && streq(uport, port) && same_transport)
                        continue;
                bool v6 = strchr(host, ':');
                u->url_host = su_sprintf(home, v6 ? "[%s]" : "%s", host);
                u->url_port = su_strdup(home, port);
                char *params = u->url_params ? su_strdup(home, u->url_params) : NULL;
                if (params)
                        params = url_strip_param_string(params, "transport");
                u->url_params = params && *params ? params : NULL;
                if (!udp && u->url_type != url_sips) {
                        _cleanup_free_ char *lower = strdup(transport);
                        if (!lower)
                                return -ENOMEM;
                        for (char *c = lower; *c; c++)
                                *c = (char)tolower((unsigned char)*c);
                        char param[32];
                        snprintf(param, sizeof param, "transport=%s", lower);
                        url_param_add(home, u, param);
                }
                url_param_add(home, u, nat->correction_param);
                msg_fragment_clear(m->m_common);
                corrected++;
        }
        return corrected;
}

static enum module_result nat_request(struct module *m, struct proxy_request *req) {
        struct nat *nat = m->state;
        sip_t *sip = req->sip;
        if (req->branch || !is_dialog_creating(sip->sip_request->rq_method) ||
            (sip->sip_to && sip->sip_to->a_tag &&
             sip->sip_request->rq_method != sip_method_register))
                return MODULE_CONTINUE;
        /* Another node of the cluster is a proxy, not a client behind NAT. */
        if (cluster_msg_from_node(m->proxy, req->msg))
                return MODULE_CONTINUE;
        int n = correct_contacts(nat, req->msg, sip);
        if (n > 0) {
                stats_inc(nat->count_corrected);
                log_debug("Corrected %d contact(s) of a %s from behind NAT.", n,
                          sip->sip_request->rq_method_name);
        }
        return MODULE_CONTINUE;
}

static void nat_response(struct module *m, msg_t *msg, sip_t *sip) {
        struct nat *nat = m->state;
        int status = sip->sip_status->st_status;
        if (status < 101 || status >= 300 || !sip->sip_cseq ||
            !is_dialog_creating(sip->sip_cseq->cs_method) ||
            cluster_msg_from_node(m->proxy, msg))
                return;
        if (correct_contacts(nat, msg, sip) > 0)
                stats_inc(nat->count_corrected);
}

static int nat_init(struct module *m) {
        struct nat *nat = m->state;
        if (isempty(nat->correction_param))
                return log_error_errno(EINVAL,
                                       "[module::NatHelper] contact-correction-param is empty.");
        m->proxy->contact_correction_param = nat->correction_param;
        nat->count_corrected =
                stats_declare(proxy_stats(m->proxy), m->desc->section, "count-corrected-contacts",
                              "Messages whose Contact was corrected");
        return 0;
}

static void nat_done(struct module *m) {
        struct nat *nat = m->state;
        if (m->proxy->contact_correction_param == nat->correction_param)
                m->proxy->contact_correction_param = NULL;
}

const struct module_desc module_nat = {
        .name = "NatHelper",
        .section = "module::NatHelper",
        .doc = "Corrects the Contact of clients behind NAT from the address their messages "
               "really come from.",
        .default_enabled = true,
        .state_size = sizeof(struct nat),
        .rows = nat_rows,
        .n_rows = ELEMENTSOF(nat_rows),
        .init = nat_init,
        .on_request = nat_request,
        .on_response = nat_response,
        .done = nat_done,
};
