/* SPDX-License-Identifier: MIT */
#pragma once

/* The proxy's module chain. A request enters the fixed, documented chain (proxy/module.c lists
 * it); each module may let it continue, answer it (stop), or suspend it while waiting for work
 * (Redis, SQL, push, relay) and resume it later with proxy_request_resume(). */

#include <stdbool.h>
#include <stddef.h>

#include "conf.h"

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
        void (*done)(struct module *m);
};

struct module {
        const struct module_desc *desc;
        struct proxy *proxy;
        bool enabled;
        void *state;
        struct conf_option enabled_row;
        struct stats_counter *count_requests;
};

/* Registers every module's config rows (called before the configuration is loaded). */
int modules_new(struct proxy *p, struct conf *conf, struct module ***ret, size_t *n);
/* After the configuration is loaded: init the enabled modules. */
int modules_init(struct module **mods, size_t n);
void modules_free(struct module **mods, size_t n);

extern const struct module_desc module_capabilities;
extern const struct module_desc module_dos;
extern const struct module_desc module_registrar;
extern const struct module_desc module_sanity;
