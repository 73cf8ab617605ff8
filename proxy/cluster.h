/* SPDX-License-Identifier: MIT */
#pragma once

/* [cluster]: several proxies serving the same domains and sharing the Redis registrar. Each
 * node puts its internal-transport as the first Path of the bindings it stores, so that a
 * request for a device connected to node B, arriving at node A, is routed through B (over B's
 * connection to the device); requests from the nodes are trusted (never challenged, never
 * rate-limited). */

#include <stdbool.h>

#include "sofia.h"

struct conf;
struct proxy;

struct cluster_config {
        bool enabled;
        char **nodes; /* IP addresses of every proxy of the cluster */
        char *cluster_domain;
        char *internal_transport; /* this node's SIP URI for the other nodes */
};

int cluster_add_config(struct conf *c, struct cluster_config *cfg);
/* After the transports are bound: checks the section (internal-transport must name one of
 * our transports), exempts the nodes from DoSProtection. */
int cluster_start(struct proxy *p);
/* "<internal-transport;lr>" on home, for Path; NULL when the cluster is off. */
char *cluster_path(struct proxy *p, su_home_t *home);
/* Did this message come from one of the nodes (its source address)? For Authentication. */
bool cluster_msg_from_node(struct proxy *p, msg_t *msg);
/* Is host the cluster-domain (a name of every node)? */
bool cluster_domain_is(struct proxy *p, const char *host);
