/* SPDX-License-Identifier: MIT */
#pragma once

/* Counters registry. Modules declare counters once; the control socket (STATS, GET) and the
 * Prometheus exposition read them. Names follow the reference ("count-incoming-request-register"),
 * grouped by config section ("global", "module::Registrar"). Pairs: "X" counts starts and
 * "X-finished" counts ends; the current value is X - X-finished. */

#include <stdint.h>

struct stats;
struct json_t;

struct stats_counter {
        uint64_t value;
};

int stats_new(struct stats **ret);
void stats_free(struct stats *s);

/* Returns the counter (owned by the registry, stable address) or NULL on ENOMEM.
 * Declaring the same section/name twice returns the same counter. */
struct stats_counter *stats_declare(struct stats *s, const char *section, const char *name,
                                    const char *doc);
/* Declares "name" and "name-finished"; *finished receives the second. */
struct stats_counter *stats_declare_pair(struct stats *s, const char *section, const char *name,
                                         const char *doc, struct stats_counter **finished);
/* A gauge reads a value on demand (e.g. bindings in the store). */
typedef uint64_t (*stats_gauge_fn)(void *userdata);
int stats_declare_gauge(struct stats *s, const char *section, const char *name, const char *doc,
                        stats_gauge_fn fn, void *userdata);

static inline void stats_inc(struct stats_counter *c) {
        if (c)
                c->value++;
}
static inline void stats_add(struct stats_counter *c, uint64_t n) {
        if (c)
                c->value += n;
}

/* Lookup by "section/name"; returns 0 and fills *value, or -ENOENT. */
int stats_get(struct stats *s, const char *path, uint64_t *value);
/* {"section": {"name": value, ...}, ...}; section NULL or "all" = all. NULL for a section
 * without counters (or on ENOMEM). */
struct json_t *stats_to_json(struct stats *s, const char *section);
/* Prometheus text exposition (version 0.0.4) into a malloc'd string. Metric names:
 * sipfleet_<role>_<section>_<name>, non-alphanumerics as '_'. */
char *stats_to_prometheus(struct stats *s, const char *role);
