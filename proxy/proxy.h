/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "sofia.h"

#include "log.h"

struct daemon;
struct stats;
struct module;

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
};

struct proxy {
        struct daemon *daemon;
        struct proxy_config config;
        su_root_t *root;
        su_home_t home[1];
        nta_agent_t *agent;
        nta_leg_t *default_leg;
        struct module **modules;
        size_t n_modules;
        char **local_addresses; /* for wildcard transports: what "us" means */
        unsigned n_inflight;
        bool stopping;

        struct stats_counter *count_request[16];
        struct stats_counter *count_reply[16];
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
/* Resume a suspended request: MODULE_CONTINUE runs the rest of the chain, MODULE_STOP ends it. */
void proxy_request_resume(struct proxy_request *req, int result);
