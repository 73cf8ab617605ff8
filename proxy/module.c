/* SPDX-License-Identifier: MIT */
#define LOG_SUBSYSTEM LOG_sip
#include <stdio.h>

#include "filter-sip.h"
#include "filter.h"
#include "log.h"
#include "module.h"
#include "proxy.h"
#include "stats.h"

/* The chain, in order. Modules arrive with their issues; the order follows DESIGN.md §5:
 * DoSProtection → SanityChecker → Capabilities → NatHelper → Authentication → RegEvent →
 * Presence → B2bua → Registrar → Router → PushNotification → MediaRelay → Forward. */
static const struct module_desc *const chain[] = {
        &module_dos,
        &module_sanity,
        &module_capabilities,
        &module_nat,
        &module_auth,
        &module_presence,
        &module_registrar,
        &module_router,
        &module_push,
        &module_media,
        &module_forward,
};

int modules_new(struct proxy *p, struct conf *conf, struct module ***ret, size_t *n) {
        size_t count = ELEMENTSOF(chain);
        struct module **mods = calloc(count, sizeof *mods);
        int r;
        if (!mods)
                return -ENOMEM;
        for (size_t i = 0; i < count; i++) {
                const struct module_desc *desc = chain[i];
                struct module *m = calloc(1, sizeof *m);
                if (!m) {
                        r = -ENOMEM;
                        goto fail;
                }
                mods[i] = m;
                m->desc = desc;
                m->proxy = p;
                if (desc->state_size > 0 && !(m->state = calloc(1, desc->state_size))) {
                        r = -ENOMEM;
                        goto fail;
                }
                const struct conf_section section = {desc->section, desc->doc};
                m->rows[0] = (struct conf_option){
                        desc->section, "enabled", CONF_BOOL, offsetof(struct module, enabled),
                        desc->default_enabled ? "true" : "false", 0, 0, 0,
                        "Whether requests pass through this module"};
                m->rows[1] = (struct conf_option){
                        desc->section, "filter", CONF_STRING, offsetof(struct module, filter_text),
                        NULL, 0, 0, 0,
                        "Requests enter this module only when this expression is true (e.g. "
                        "request.method == 'INVITE' && from.uri.domain != 'example.org'; "
                        "see README, Filters); empty = all"};
                if ((r = conf_add_sections(conf, &section, 1)) < 0 ||
                    (r = conf_add_table(conf, m->rows, ELEMENTSOF(m->rows), m)) < 0 ||
                    (desc->n_rows > 0 &&
                     (r = conf_add_table(conf, desc->rows, desc->n_rows, m->state)) < 0)) {
                        /* A bad row in the table (min > max, a bad default...): a bug. */
                        log_error_errno(r, "Failed to declare the options of [%s]: %m",
                                        desc->section);
                        goto fail;
                }
        }
        *ret = mods;
        *n = count;
        return 0;
fail:
        modules_free(mods, count);
        return r;
}

int modules_init(struct module **mods, size_t n) {
        for (size_t i = 0; i < n; i++) {
                struct module *m = mods[i];
                m->count_requests = stats_declare(proxy_stats(m->proxy), m->desc->section,
                                                  "count-requests",
                                                  "Requests that entered this module");
                if (!m->enabled)
                        continue;
                if (!isempty(m->filter_text)) {
                        struct filter_error error;
                        if (filter_sip_compile(m->filter_text, &m->filter, &error) < 0)
                                return log_error_errno(EINVAL, "[%s] filter: %s", m->desc->section,
                                                       error.message);
                }
                if (!m->desc->init)
                        continue;
                int r = m->desc->init(m);
                if (r < 0)
                        return log_error_errno(r, "Module %s failed to start: %m", m->desc->name);
        }
        return 0;
}

void modules_free(struct module **mods, size_t n) {
        if (!mods)
                return;
        for (size_t i = 0; i < n; i++) {
                struct module *m = mods[i];
                if (!m)
                        continue;
                if (m->desc->done)
                        m->desc->done(m);
                filter_free(m->filter);
                free(m->state);
                free(m);
        }
        free(mods);
}

void modules_reload(struct module **mods, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (mods[i]->enabled && mods[i]->desc->reload)
                        mods[i]->desc->reload(mods[i]);
}

bool module_filter_match(struct module *m, const sip_t *sip) {
        return !m->filter || filter_sip_eval(m->filter, sip, "request");
}

void modules_on_response(struct module **mods, size_t n, msg_t *msg, sip_t *sip) {
        for (size_t i = 0; i < n; i++) {
                struct module *m = mods[i];
                if (m->enabled && m->desc->on_response &&
                    (!m->filter || filter_sip_eval(m->filter, sip, "response")))
                        m->desc->on_response(m, msg, sip);
        }
}
