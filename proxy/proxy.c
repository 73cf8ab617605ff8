/* SPDX-License-Identifier: MIT */
#define LOG_SUBSYSTEM LOG_sip
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <sys/stat.h>

#include <sofia-sip/msg_header.h>
#include <sofia-sip/sip_util.h>
#include <sofia-sip/su_tagarg.h>

#include "config.h"
#include "daemon.h"
#include "dos.h"
#include "fork.h"
#include "loop.h"
#include "module.h"
#include "proxy.h"
#include "stats.h"
#include "transport.h"
#include "udp.h"

#define C(field) offsetof(struct proxy_config, field)

static const char *const tls_verify_policies[] = {"none", "incoming", "outgoing", "all", NULL};
static const unsigned tls_verify_policy_values[] = {TPTLS_VERIFY_NONE, TPTLS_VERIFY_IN,
                                                   TPTLS_VERIFY_OUT, TPTLS_VERIFY_ALL};

static const struct conf_option proxy_rows[] = {
        {"global", "transports", CONF_URI_LIST, C(transports), "sip:*:5060", 0, 0, 0,
         "SIP URIs to listen on: sip:host:port (UDP and TCP), ;transport=udp or tcp for one, "
         "sips:host:port for TLS; IPv6 in brackets; ;maddr=IP binds IP and advertises host"},
        {"global", "aliases", CONF_LIST, C(aliases), NULL, 0, 0, 0,
         "Other host names that designate this proxy (loop detection, requests for us)"},
        {"global", "tls-certificates-dir", CONF_STRING, C(tls_certificates_dir),
         CONFDIR "/tls", 0, 0, 0,
         "Directory with agent.pem (private key and certificate chain) and cafile.pem "
         "(trusted CAs), used by TLS transports where tls-certificate or tls-ca-file is empty"},
        {"global", "tls-certificate", CONF_STRING, C(tls_certificate), NULL, 0, 0, 0,
         "PEM file with the certificate of TLS transports, then its intermediates; checked "
         "at start (key match, not expired); empty: agent.pem of tls-certificates-dir"},
        {"global", "tls-private-key", CONF_STRING, C(tls_private_key), NULL, 0, 0, 0,
         "PEM file with the unencrypted private key of tls-certificate; empty: read from the "
         "certificate file"},
        {"global", "tls-ca-file", CONF_STRING, C(tls_ca_file), NULL, 0, 0, 0,
         "PEM file with the trusted CAs (peer verification, CA names sent to clients); empty: "
         "cafile.pem of tls-certificates-dir"},
        {"global", "tls-verify-policy", CONF_ENUM, C(tls_verify_policy), "none", 0, 0, 0,
         "Certificate checks of TLS connections: incoming = every client must present a "
         "certificate from a trusted CA, outgoing = servers we connect to must, all = both",
         .choices = tls_verify_policies},
        {"global", "max-message-size", CONF_SIZE, C(max_message_size), "64KiB", 0, 0, 0,
         "Largest SIP message accepted, on every transport (from 4KiB to 64MiB); larger "
         "ones are refused"},
        {"global", "udp-receive-buffer", CONF_SIZE, C(udp_receive_buffer), "4MiB", 0, 0, 0,
         "Receive buffer of the UDP transports' sockets, to absorb bursts (0: the system's "
         "default; beyond net.core.rmem_max only when running as root)"},
        {"global", "idle-timeout", CONF_DURATION, C(idle_timeout_ms), "3600s", 0, 0, 0,
         "Close TCP and TLS connections idle for this long", .unit = CONF_UNIT_S},
};

static const char *const request_names[] = {
        "register", "invite", "ack",       "bye",    "cancel", "options", "message",
        "info",     "notify", "subscribe", "update", "prack",  "refer",   "publish", "unknown",
};
static const sip_method_t request_methods[] = {
        sip_method_register, sip_method_invite, sip_method_ack,       sip_method_bye,
        sip_method_cancel,   sip_method_options, sip_method_message,  sip_method_info,
        sip_method_notify,   sip_method_subscribe, sip_method_update, sip_method_prack,
        sip_method_refer,    sip_method_publish,
};
static const int reply_codes[] = {100, 180, 200, 202, 401, 403, 404, 407,
                                  408, 480, 486, 487, 488, 503, 603};

struct stats *proxy_stats(struct proxy *p) {
        return daemon_stats(p->daemon);
}

int proxy_new(struct daemon *d, struct proxy **ret) {
        struct proxy *p = calloc(1, sizeof *p);
        int r;
        if (!p)
                return -ENOMEM;
        p->daemon = d;
        su_home_init(p->home);
        r = conf_add_table(daemon_conf(d), proxy_rows, ELEMENTSOF(proxy_rows), &p->config);
        if (r >= 0)
                r = cluster_add_config(daemon_conf(d), &p->cluster);
        if (r >= 0)
                r = modules_new(p, daemon_conf(d), &p->modules, &p->n_modules);
        if (r < 0) {
                proxy_free(p);
                return r;
        }
        *ret = p;
        return 0;
}

static int collect_local_addresses(struct proxy *p) {
        struct ifaddrs *ifa_list;
        if (getifaddrs(&ifa_list) < 0)
                return -errno;
        for (struct ifaddrs *ifa = ifa_list; ifa; ifa = ifa->ifa_next) {
                char host[NI_MAXHOST];
                if (!ifa->ifa_addr ||
                    (ifa->ifa_addr->sa_family != AF_INET && ifa->ifa_addr->sa_family != AF_INET6))
                        continue;
                if (getnameinfo(ifa->ifa_addr,
                                ifa->ifa_addr->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                                                    : sizeof(struct sockaddr_in6),
                                host, sizeof host, NULL, 0, NI_NUMERICHOST) != 0)
                        continue;
                char *pct = strchr(host, '%');
                if (pct)
                        *pct = 0;
                if (strv_extend(&p->local_addresses, host) < 0) {
                        freeifaddrs(ifa_list);
                        return -ENOMEM;
                }
        }
        freeifaddrs(ifa_list);
        return 0;
}

static bool host_equal(const char *a, const char *b) {
        /* IPv6 references come bracketed in URIs and bare from tport names. */
        size_t la = strlen(a), lb = strlen(b);
        if (a[0] == '[' && la > 2) {
                a++;
                la -= 2;
        }
        if (b[0] == '[' && lb > 2) {
                b++;
                lb -= 2;
        }
        return la == lb && strncasecmp(a, b, la) == 0;
}

static bool is_wildcard(const char *host) {
        return streq(host, "*") || streq(host, "0.0.0.0") || streq(host, "::") ||
               streq(host, "[::]");
}

bool proxy_is_us(struct proxy *p, const url_t *url) {
        if (!url || !url->url_host)
                return false;
        const char *want_port = url->url_port;
        if (!want_port)
                want_port = url->url_type == url_sips ? "5061" : "5060";

        STRV_FOREACH(alias, p->config.aliases)
                if (host_equal(*alias, url->url_host))
                        return true;
        if (cluster_domain_is(p, url->url_host))
                return true;

        for (tport_t *tp = tport_primaries(nta_agent_tports(p->agent)); tp; tp = tport_next(tp)) {
                const tp_name_t *n = tport_name(tp);
                if (!n->tpn_port || !streq(n->tpn_port, want_port))
                        continue;
                if (host_equal(n->tpn_host, url->url_host) ||
                    (n->tpn_canon && host_equal(n->tpn_canon, url->url_host)))
                        return true;
                if (is_wildcard(n->tpn_host))
                        STRV_FOREACH(a, p->local_addresses)
                                if (host_equal(*a, url->url_host))
                                        return true;
        }
        return false;
}

bool proxy_via_is_us(struct proxy *p, const sip_via_t *v) {
        if (!v || !v->v_host)
                return false;
        bool tls = v->v_protocol && strcasestr(v->v_protocol, "TLS");
        url_t u = {
                .url_type = tls ? url_sips : url_sip,
                .url_host = v->v_host,
                .url_port = v->v_port,
        };
        return proxy_is_us(p, &u);
}

tport_t *proxy_primary(struct proxy *p, const char *proto, const char *host) {
        bool v6 = host && strchr(host, ':');
        for (tport_t *tp = tport_primaries(nta_agent_tports(p->agent)); tp; tp = tport_next(tp)) {
                const tp_name_t *n = tport_name(tp);
                if (strcaseeq(n->tpn_proto, proto) && (strchr(n->tpn_host, ':') != NULL) == v6)
                        return tp;
        }
        return NULL;
}

char *proxy_primary_uri(su_home_t *home, tport_t *primary) {
        const tp_name_t *n = tport_name(primary);
        const char *h = n->tpn_canon && !is_wildcard(n->tpn_canon) ? n->tpn_canon : n->tpn_host;
        bool bracket = strchr(h, ':') && h[0] != '[';
        bool udp = strcaseeq(n->tpn_proto, "udp");
        return su_sprintf(home, "sip:%s%s%s:%s%s%s;lr", bracket ? "[" : "", h, bracket ? "]" : "",
                          n->tpn_port, udp ? "" : ";transport=", udp ? "" : n->tpn_proto);
}

char *proxy_route_uri(struct proxy *p, su_home_t *home, const char *proto, const char *host) {
        tport_t *tp = proxy_primary(p, proto, host);
        return tp ? proxy_primary_uri(home, tp) : NULL;
}

static void count_reply(struct proxy *p, int status) {
        for (size_t i = 0; i < ELEMENTSOF(reply_codes); i++)
                if (reply_codes[i] == status) {
                        stats_inc(p->count_reply[i]);
                        return;
                }
        stats_inc(p->count_reply[ELEMENTSOF(reply_codes)]);
}

int proxy_request_reply(struct proxy_request *req, int status, const char *phrase, tag_type_t tag,
                        tag_value_t value, ...) {
        if (req->branch) {
                /* A module answered one branch of a fork: the fork decides what goes up. */
                count_reply(req->proxy, status);
                if (status >= 200)
                        req->replied = true;
                fork_branch_reply(req->branch, status, phrase);
                return 0;
        }
        ta_list ta;
        ta_start(ta, tag, value);
        int r = nta_incoming_treply(req->irq, status, phrase, ta_tags(ta));
        ta_end(ta);
        if (r < 0)
                return log_debug_errno(EIO, "Failed to send %d reply.", status);
        count_reply(req->proxy, status);
        if (status >= 200)
                req->replied = true;
        return 0;
}

static void request_free(struct proxy_request *req) {
        struct proxy *p = req->proxy;
        struct fork_branch *branch = req->branch;
        if (log_get_sip_context() == &req->log_ctx)
                log_set_sip_context(NULL);
        if (req->irq)
                nta_incoming_destroy(req->irq); /* also unbinds on_incoming_cancel */
        if (req->msg)
                msg_destroy(req->msg);
        free(req);
        if (branch)
                fork_branch_chain_done(branch);
        p->n_inflight--;
        if (p->stopping && p->n_inflight == 0)
                daemon_drained(p->daemon);
}

/* Runs the chain from req->next_module; frees the request unless a module suspended it. */
static void run_chain(struct proxy_request *req) {
        struct proxy *p = req->proxy;
        log_set_sip_context(&req->log_ctx);
        for (size_t i = req->next_module; i < p->n_modules; i++) {
                struct module *m = p->modules[i];
                if (!m->enabled || !module_filter_match(m, req->sip))
                        continue;
                stats_inc(m->count_requests);
                /* Set before the call: a suspended request may be resumed, or even freed,
                 * before on_request returns, so req is not touched after SUSPEND. */
                req->next_module = i + 1;
                enum module_result r = m->desc->on_request(m, req);
                if (r == MODULE_SUSPEND) {
                        log_set_sip_context(NULL);
                        return;
                }
                if (r == MODULE_STOP)
                        goto done;
        }
        /* Nothing took the request (Forward disabled): say so instead of dropping it. */
        if (req->sip->sip_request->rq_method != sip_method_ack && !req->replied) {
                log_info("No module handles %s; answering 501.",
                         req->sip->sip_request->rq_method_name);
                proxy_request_reply(req, SIP_501_NOT_IMPLEMENTED, TAG_END());
        }
done:
        log_set_sip_context(NULL);
        request_free(req);
}

void proxy_request_resume(struct proxy_request *req, int result) {
        if (result == MODULE_STOP) {
                request_free(req);
                return;
        }
        run_chain(req);
}

void proxy_request_trying(struct proxy_request *req) {
        /* nta never sends 100 Trying for a proxy (SOFIA-NOTES §2). */
        if (req->irq && !req->sent_trying &&
            nta_incoming_method(req->irq) == sip_method_invite &&
            nta_incoming_status(req->irq) < 100) {
                req->sent_trying = true;
                nta_incoming_treply(req->irq, SIP_100_TRYING, TAG_END());
        }
}

void proxy_request_branch(struct proxy *p, const struct proxy_origin *origin,
                          struct fork_branch *b, msg_t *msg) {
        const struct log_sip_context *outer = log_get_sip_context();
        struct proxy_request *req = calloc(1, sizeof *req);
        if (!req) {
                msg_destroy(msg);
                log_oom();
                fork_branch_chain_done(b);
                return;
        }
        p->n_inflight++;
        req->proxy = p;
        req->msg = msg;
        req->sip = sip_object(msg);
        req->branch = b;
        req->next_module = origin->next_module;
        req->log_ctx = origin->log_ctx;
        req->in_primary = origin->in_primary;
        run_chain(req);
        /* Back in the caller's context (a branch may start from inside another request's
         * callback). */
        log_set_sip_context(outer);
}

void proxy_log_context(const sip_t *sip, su_home_t *home, struct log_sip_context *ctx) {
        *ctx = (struct log_sip_context){
                .call_id = sip->sip_call_id ? sip->sip_call_id->i_id : NULL,
                .method = sip->sip_request ? sip->sip_request->rq_method_name : NULL,
        };
        if (log_get_target() == LOG_TARGET_JOURNAL) {
                if (sip->sip_from)
                        ctx->from = url_as_string(home, sip->sip_from->a_url);
                if (sip->sip_to)
                        ctx->to = url_as_string(home, sip->sip_to->a_url);
        }
}

static void count_request(struct proxy *p, sip_method_t method) {
        for (size_t i = 0; i < ELEMENTSOF(request_methods); i++)
                if (request_methods[i] == method) {
                        stats_inc(p->count_request[i]);
                        return;
                }
        stats_inc(p->count_request[ELEMENTSOF(request_methods)]);
}

/* A CANCEL matching one of our INVITE server transactions (nta has answered it 200). */
static int on_incoming_cancel(struct proxy_request *req, nta_incoming_t *irq, const sip_t *sip) {
        if (!sip || !sip->sip_request || sip->sip_request->rq_method != sip_method_cancel)
                return 0;
        if (req->fork) {
                fork_cancel(req->fork, sip->sip_reason);
                return 0;
        }
        /* Still in the chain (waiting for the registrar...): the router sees the flag. */
        req->cancelled = true;
        return 0;
}

/* RFC 3261 §16.4: the Route entries naming us are ours to remove. */
static void pop_our_routes(struct proxy *p, msg_t *msg, sip_t *sip) {
        while (sip->sip_route && proxy_is_us(p, sip->sip_route->r_url))
                sip_route_remove(msg, sip);
}

static int on_request(struct proxy *p, nta_leg_t *leg, nta_incoming_t *irq, sip_t const *sip) {
        sip_method_t method = sip->sip_request->rq_method;
        count_request(p, method);
        if (method == sip_method_cancel) {
                /* Matching CANCELs never get here: nta hands them to on_incoming_cancel. */
                count_reply(p, 481);
                return 481;
        }
        if (p->stopping) {
                if (sip->sip_request->rq_method == sip_method_ack) {
                        nta_incoming_destroy(irq);
                        return 0;
                }
                count_reply(p, 503);
                nta_incoming_treply(irq, SIP_503_SERVICE_UNAVAILABLE,
                                    SIPTAG_RETRY_AFTER_STR("5"), TAG_END());
                nta_incoming_destroy(irq);
                return 0;
        }
        struct proxy_request *req = calloc(1, sizeof *req);
        if (!req) {
                log_oom();
                return 500;
        }
        p->n_inflight++;
        req->proxy = p;
        req->irq = irq;
        req->msg = nta_incoming_getrequest(irq);
        req->sip = sip_object(req->msg);
        pop_our_routes(p, req->msg, req->sip);
        tport_t *tp = nta_incoming_transport(p->agent, irq, req->msg);
        if (tp) {
                req->in_primary = tport_parent(tp);
                tport_unref(tp);
        }
        if (method == sip_method_invite)
                nta_incoming_bind(irq, on_incoming_cancel, req);
        proxy_log_context(sip, msg_home(req->msg), &req->log_ctx);
        run_chain(req);
        return 0;
}

/* Messages nta does not match to a transaction: 2xx retransmissions of forked INVITEs after
 * their client transaction ended are relayed statelessly; the rest is dropped. */
static int on_message(struct proxy *p, nta_agent_t *agent, msg_t *msg, sip_t *sip) {
        if (dos_note_packet(p, msg) > 0)
                return 0;
        if (sip && sip->sip_status && proxy_via_is_us(p, sip->sip_via)) {
                sip_via_remove(msg, sip);
                /* nta_msg_tsend() consumes msg, whether it could send it or not. */
                if (sip->sip_via) {
                        int status = sip->sip_status->st_status;
                        if (nta_msg_tsend(agent, msg, NULL, TAG_END()) < 0)
                                log_debug("Failed to relay a stray %d response.", status);
                        return 0;
                }
        } else if (sip && sip->sip_status) {
                log_debug("Dropping stray %u response.", sip->sip_status->st_status);
        }
        msg_destroy(msg);
        return 0;
}

/* Limits sofia applies to every transport; the agent takes them once, before the first. */
#define MAX_MESSAGE_SIZE_MIN (UINT64_C(4) << 10)
#define MAX_MESSAGE_SIZE_MAX (UINT64_C(64) << 20)

static bool has_tls_transport(struct proxy *p) {
        for (tport_t *tp = tport_primaries(nta_agent_tports(p->agent)); tp; tp = tport_next(tp))
                if (strcaseeq(tport_name(tp)->tpn_proto, "tls"))
                        return true;
        return false;
}

static int add_transport(struct proxy *p, const char *uri) {
        const struct proxy_config *c = &p->config;
        _cleanup_free_ char *bind_uri = NULL, *tls_dir = NULL;
        bool tls;
        int r;

        if (c->max_message_size < MAX_MESSAGE_SIZE_MIN ||
            c->max_message_size > MAX_MESSAGE_SIZE_MAX)
                return log_error_errno(ERANGE, "[global] max-message-size must be between 4KiB "
                                               "and 64MiB.");
        nta_agent_set_params(p->agent, NTATAG_MAXSIZE((usize_t)c->max_message_size), TAG_END());

        r = transport_bind_uri(uri, &bind_uri, &tls);
        if (r < 0)
                return log_error_errno(r, "Cannot listen on '%s': not a SIP URI.", uri);
        if (tls) {
                const struct transport_tls_files files = {
                        .certificates_dir = c->tls_certificates_dir,
                        .certificate = c->tls_certificate,
                        .private_key = c->tls_private_key,
                        .ca_file = c->tls_ca_file,
                        .quiet = has_tls_transport(p),
                };
                r = transport_tls_prepare(&files, &tls_dir);
                if (r < 0)
                        return r;
        }
        unsigned policy = tls_verify_policy_values[c->tls_verify_policy];
        r = nta_agent_add_tport(p->agent, URL_STRING_MAKE(bind_uri),
                                TAG_IF(tls, TPTAG_CERTIFICATE(tls_dir)),
                                TAG_IF(tls, TPTAG_TLS_VERIFY_POLICY(policy)),
                                TPTAG_IDLE((unsigned)c->idle_timeout_ms),
                                /* RFC 5626 §4.4.1: a CRLF CRLF ping gets a CRLF pong. */
                                TPTAG_PONG2PING(1), TAG_END());
        int e = errno;
        transport_tls_dir_remove(tls_dir); /* sofia has read the files */
        if (r < 0)
                return log_error_errno(e > 0 ? e : EINVAL, "Cannot listen on '%s'%s%s%s: %m", uri,
                                       streq(uri, bind_uri) ? "" : " (as '",
                                       streq(uri, bind_uri) ? "" : bind_uri,
                                       streq(uri, bind_uri) ? "" : "')");
        return 0;
}

static uint64_t inflight_gauge(void *userdata) {
        struct proxy *p = userdata;
        return p->n_inflight;
}

int proxy_start(struct proxy *p) {
        struct stats *s = proxy_stats(p);
        int r;

        for (size_t i = 0; i <= ELEMENTSOF(request_methods); i++) {
                char name[64];
                snprintf(name, sizeof name, "count-incoming-request-%s", request_names[i]);
                p->count_request[i] = stats_declare(s, "global", name, "Requests received");
        }
        for (size_t i = 0; i <= ELEMENTSOF(reply_codes); i++) {
                char name[64];
                if (i < ELEMENTSOF(reply_codes))
                        snprintf(name, sizeof name, "count-reply-%d", reply_codes[i]);
                else
                        snprintf(name, sizeof name, "count-reply-unknown");
                p->count_reply[i] = stats_declare(s, "global", name,
                                                  "Responses generated by the proxy");
        }
        stats_declare_gauge(s, "global", "inflight-requests", "Requests in the module chain",
                            inflight_gauge, p);

        r = collect_local_addresses(p);
        if (r < 0)
                return log_error_errno(r, "Failed to list local addresses: %m");

        p->root = loop_su_root(daemon_loop(p->daemon));
        p->agent = nta_agent_create(p->root, NONE, on_message, p, NTATAG_UA(0),
                                    NTATAG_SERVER_RPORT(1), NTATAG_CLIENT_RPORT(1),
                                    NTATAG_CANCEL_487(0), NTATAG_MERGE_482(1), TAG_END());
        if (!p->agent)
                return log_error_errno(ENOMEM, "Failed to create the SIP agent.");
        STRV_FOREACH(uri, p->config.transports) {
                r = add_transport(p, *uri);
                if (r < 0)
                        return r;
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
        if (p->config.udp_receive_buffer > 0 && udp_ports) {
                int size = (int)MIN(p->config.udp_receive_buffer, (uint64_t)INT_MAX / 2);
                r = udp_set_receive_buffers(udp_ports, size);
                if (r < 0)
                        log_warning_errno(r, "Cannot set the UDP receive buffers: %m");
                else
                        log_debug("UDP receive buffer of %d socket(s) set to %d bytes.", r, size);
        }
        r = cluster_start(p);
        if (r < 0)
                return r;
        return modules_init(p->modules, p->n_modules);
}

static void proxy_stop(struct daemon *d, void *userdata) {
        struct proxy *p = userdata;
        p->stopping = true;
        if (p->n_inflight == 0)
                daemon_drained(d);
        else
                log_notice("Draining %u in-flight requests.", p->n_inflight);
}

static void proxy_reloaded(struct daemon *d, void *userdata) {
        struct proxy *p = userdata;
        modules_reload(p->modules, p->n_modules);
}

const struct daemon_hooks proxy_hooks = {.stop = proxy_stop, .reloaded = proxy_reloaded};

void proxy_free(struct proxy *p) {
        if (!p)
                return;
        fork_free_all(p);
        modules_free(p->modules, p->n_modules);
        if (p->default_leg)
                nta_leg_destroy(p->default_leg);
        if (p->agent)
                nta_agent_destroy(p->agent);
        strv_free(p->local_addresses);
        su_home_deinit(p->home);
        free(p);
}
