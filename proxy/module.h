/* SPDX-License-Identifier: MIT */
#pragma once

/* The proxy's module chain. A request enters the fixed, documented chain (proxy/module.c lists
 * it); each module may let it continue, answer it (stop), or suspend it while waiting for work
 * (Redis, SQL, push, relay) and resume it later with proxy_request_resume(). */

#include <stdbool.h>
#include <stddef.h>

#include "conf.h"
#include "sofia.h"

struct proxy;
struct proxy_request;
struct module;
struct stats_counter;

enum module_result {
        MODULE_CONTINUE, /* hand the request to the next module */
        MODULE_STOP,     /* the module answered or took the request over */
        MODULE_SUSPEND,  /* waiting: the module calls proxy_request_resume() later */
};

struct module_desc {
        const char *name;    /* "Capabilities" */
        const char *section; /* "module::Capabilities" */
        const char *doc;
        bool default_enabled;
        size_t state_size; /* module state, zeroed; config rows point into it */
        const struct conf_option *rows;
        size_t n_rows;
        int (*init)(struct module *m);
        enum module_result (*on_request)(struct module *m, struct proxy_request *req);
        /* Each response relayed back through the proxy (not the ones nta makes up). */
        void (*on_response)(struct module *m, msg_t *msg, sip_t *sip);
        /* After every successful reload: re-read the files the module's config names. */
        void (*reload)(struct module *m);
        void (*done)(struct module *m);
};

struct module {
        const struct module_desc *desc;
        struct proxy *proxy;
        bool enabled;
        char *filter_text; /* [module::X] filter: requests enter only when it is true */
        struct filter *filter;
        void *state;
        struct conf_option rows[2]; /* enabled, filter */
        struct stats_counter *count_requests;
};

/* Registers every module's config rows (called before the configuration is loaded). */
int modules_new(struct proxy *p, struct conf *conf, struct module ***ret, size_t *n);
/* After the configuration is loaded: init the enabled modules. */
int modules_init(struct module **mods, size_t n);
void modules_free(struct module **mods, size_t n);
void modules_reload(struct module **mods, size_t n);
/* Runs the on_response hooks, in chain order, on a response received on a branch. */
void modules_on_response(struct module **mods, size_t n, msg_t *msg, sip_t *sip);
/* Does the module's filter let this request in (true without a filter)? */
bool module_filter_match(struct module *m, const sip_t *sip);

extern const struct module_desc module_capabilities;
extern const struct module_desc module_nat;
extern const struct module_desc module_auth;
extern const struct module_desc module_dos;
extern const struct module_desc module_registrar;
extern const struct module_desc module_router;
extern const struct module_desc module_push;
extern const struct module_desc module_forward;
extern const struct module_desc module_media;
extern const struct module_desc module_sanity;
extern const struct module_desc module_presence;

/* Does this message come from the presence server's host ([module::Presence] enabled)? For the
 * Authentication module: the presence server is a trusted host. */
bool proxy_presence_is_server(struct proxy *p, msg_t *msg);
