/* SPDX-License-Identifier: MIT */
#define LOG_SUBSYSTEM LOG_sip
#include <arpa/inet.h>
#include <netinet/in.h>
#include <strings.h>

#include "cluster.h"
#include "conf.h"
#include "dos.h"
#include "macro.h"
#include "proxy.h"

#define C(field) offsetof(struct cluster_config, field)
static const struct conf_option cluster_rows[] = {
        {"cluster", "enabled", CONF_BOOL, C(enabled), "false", 0, 0, 0,
         "Run as one node of a cluster of proxies sharing the Redis registrar"},
        {"cluster", "nodes", CONF_LIST, C(nodes), NULL, 0, 0, 0,
         "IP addresses of all the proxies of the cluster (this one included): their requests "
         "are never challenged nor rate-limited"},
        {"cluster", "cluster-domain", CONF_STRING, C(cluster_domain), NULL, 0, 0, 0,
         "Domain name of the cluster (its SRV records name every node): accepted as naming "
         "this proxy in Request-URIs and Routes"},
        {"cluster", "internal-transport", CONF_URI, C(internal_transport), NULL, 0, 0, 0,
         "SIP URI of this node for the other nodes (one of its transports, e.g. "
         "sip:10.0.0.8:5060;transport=tcp): the first Path of the bindings it stores, so the "
         "others route through it to the devices connected to it"},
};

int cluster_add_config(struct conf *c, struct cluster_config *cfg) {
        return conf_add_table(c, cluster_rows, ELEMENTSOF(cluster_rows), cfg);
}

static bool parse_ip(const char *s, struct sockaddr_storage *ss) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        *ss = (struct sockaddr_storage){0};
        if (inet_pton(AF_INET, s, &in->sin_addr) == 1) {
                in->sin_family = AF_INET;
                return true;
        }
        if (inet_pton(AF_INET6, s, &in6->sin6_addr) == 1) {
                in6->sin6_family = AF_INET6;
                return true;
        }
        return false;
}

int cluster_start(struct proxy *p) {
        struct cluster_config *cfg = &p->cluster;
        if (!cfg->enabled)
                return 0;
        if (isempty(cfg->internal_transport))
                return log_error_errno(EINVAL, "[cluster] enabled=true needs internal-transport.");
        if (!cfg->nodes || !cfg->nodes[0])
                return log_error_errno(EINVAL, "[cluster] enabled=true needs nodes.");
        url_t *u = url_hdup(p->home, URL_STRING_MAKE(cfg->internal_transport)->us_url);
        if (!u || !proxy_is_us(p, u))
                return log_error_errno(EINVAL,
                                       "[cluster] internal-transport '%s' is not one of this "
                                       "proxy's transports.",
                                       cfg->internal_transport);
        STRV_FOREACH(n, cfg->nodes) {
                struct sockaddr_storage ss;
                if (!parse_ip(*n, &ss))
                        return log_error_errno(EINVAL, "[cluster] nodes: '%s' is not an IP "
                                                       "address.", *n);
                int r = dos_exempt_add(p, *n);
                if (r < 0)
                        return log_error_errno(r, "[cluster] nodes: cannot exempt '%s' from "
                                                  "DoSProtection: %m", *n);
        }
        log_info("Cluster node '%s' of %zu.", cfg->internal_transport, strv_length(cfg->nodes));
        return 0;
}

char *cluster_path(struct proxy *p, su_home_t *home) {
        if (!p->cluster.enabled || isempty(p->cluster.internal_transport))
                return NULL;
        url_t *u = url_hdup(home, URL_STRING_MAKE(p->cluster.internal_transport)->us_url);
        if (!u)
                return NULL;
        if (!url_has_param(u, "lr"))
                url_param_add(home, u, "lr");
        return su_sprintf(home, "<%s>", url_as_string(home, u));
}

bool cluster_msg_from_node(struct proxy *p, msg_t *msg) {
        su_addrinfo_t *ai = msg ? msg_addrinfo(msg) : NULL;
        if (!p->cluster.enabled || !ai || !ai->ai_addr)
                return false;
        STRV_FOREACH(n, p->cluster.nodes) {
                struct sockaddr_storage ss;
                if (!parse_ip(*n, &ss) || ss.ss_family != ai->ai_addr->sa_family)
                        continue;
                if (ss.ss_family == AF_INET &&
                    ((struct sockaddr_in *)&ss)->sin_addr.s_addr ==
                            ((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr)
                        return true;
                if (ss.ss_family == AF_INET6 &&
                    memcmp(&((struct sockaddr_in6 *)&ss)->sin6_addr,
                           &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr,
                           sizeof(struct in6_addr)) == 0)
                        return true;
        }
        return false;
}

bool cluster_domain_is(struct proxy *p, const char *host) {
        return p->cluster.enabled && !isempty(p->cluster.cluster_domain) && host &&
               strcasecmp(p->cluster.cluster_domain, host) == 0;
}
