/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "sofia.h"

#include "cluster.h"

#include "log.h"

struct daemon;
struct stats;
struct module;
struct registrar;
struct fork;
struct fork_branch;
struct fork_config;

/* [global] keys of the proxy. */
struct proxy_config {
        char **transports;
        char **aliases;
        char *tls_certificates_dir;
        char *tls_certificate;
        char *tls_private_key;
        char *tls_ca_file;
        int tls_verify_policy; /* index into tls-verify-policy's choices */
        uint64_t idle_timeout_ms;
        uint64_t max_message_size;
        uint64_t udp_receive_buffer;
};

struct proxy {
        struct daemon *daemon;
        struct proxy_config config;
        struct cluster_config cluster; /* [cluster] (cluster.c) */
        su_root_t *root;
        su_home_t home[1];
        nta_agent_t *agent;
        nta_leg_t *default_leg;
        struct module **modules;
        size_t n_modules;
        char **local_addresses; /* for wildcard transports: what "us" means */
        unsigned n_inflight;
        bool stopping;
        struct registrar *registrar;           /* set by the Registrar module */
        const struct fork_config *fork_config; /* set by the Router module; NULL: defaults */
        const char *contact_correction_param;  /* set by NatHelper; NULL when it is off */
        struct fork *forks;                    /* every live fork (fork.c) */
        unsigned n_forks;
        struct fork_index *fork_index;         /* late forks by AOR (fork.c) */
        struct message_store *message_store;   /* set by the Router module; NULL: memory only */
        const struct fork_hooks *fork_hooks;   /* set by MediaRelay (fork.h) */

        struct stats_counter *count_request[16];
        struct stats_counter *count_reply[16];
};

/* Where the requests of a fork's branches enter the chain, and what they log with. */
struct proxy_origin {
        size_t next_module;
        struct log_sip_context log_ctx; /* strings on the fork's request */
        tport_t *in_primary;            /* NULL: unknown (a restored fork) */
};

/* One incoming request travelling the module chain. */
struct proxy_request {
        struct proxy *proxy;
        nta_incoming_t *irq;
        msg_t *msg; /* reference held while the request lives */
        sip_t *sip;
        size_t next_module;
        bool replied;
        struct log_sip_context log_ctx;
        struct fork *fork;          /* the fork that owns this incoming request, if any */
        struct fork_branch *branch; /* set on a branch request (irq is NULL then) */
        tport_t *in_primary;        /* the listening transport the request came in on */
        bool cancelled;             /* the caller CANCELled before a fork existed */
        bool sent_trying;
        char *cancel_reason;        /* its Reason header, on the message's home */
};

extern const struct daemon_hooks proxy_hooks;

int proxy_new(struct daemon *d, struct proxy **ret);
/* After the configuration is loaded: bind transports, start modules. */
int proxy_start(struct proxy *p);
void proxy_free(struct proxy *p);

struct stats *proxy_stats(struct proxy *p);

/* Does this URI name the proxy (a transport address or an alias, with a matching port)? */
bool proxy_is_us(struct proxy *p, const url_t *url);

/* Answer the request (counted in count-reply-*). Tags as for nta_incoming_treply. */
int proxy_request_reply(struct proxy_request *req, int status, const char *phrase, tag_type_t tag,
                        tag_value_t value, ...);
/* 100 Trying for an INVITE that is going to be relayed (once; nothing for other methods). */
void proxy_request_trying(struct proxy_request *req);
/* Runs the chain from origin's next module for one branch of a fork, with msg (ownership
 * taken) as the branch's request. */
void proxy_request_branch(struct proxy *p, const struct proxy_origin *origin,
                          struct fork_branch *b, msg_t *msg);
/* The log context of a request, with strings on its message's home. */
void proxy_log_context(const sip_t *sip, su_home_t *home, struct log_sip_context *ctx);
/* Is this Via sent-by one of our transports? */
bool proxy_via_is_us(struct proxy *p, const sip_via_t *v);
/* A Record-Route / Path URI naming this proxy on the primary transport of protocol proto
 * ("udp", "tcp", "tls") for the family of host (IPv6 when it has a ':'), with ;lr. NULL when
 * the proxy has no such transport. Allocated on home. */
char *proxy_route_uri(struct proxy *p, su_home_t *home, const char *proto, const char *host);
/* The primary transport proxy_route_uri() would name (NULL: none). */
tport_t *proxy_primary(struct proxy *p, const char *proto, const char *host);
/* The Record-Route / Path URI of one primary transport, with ;lr, on home. */
char *proxy_primary_uri(su_home_t *home, tport_t *primary);
/* Resume a suspended request: MODULE_CONTINUE runs the rest of the chain, MODULE_STOP ends it. */
void proxy_request_resume(struct proxy_request *req, int result);
