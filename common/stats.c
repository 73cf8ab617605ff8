/* SPDX-License-Identifier: MIT */
#define LOG_SUBSYSTEM LOG_control

#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>

#include "log.h"
#include "macro.h"
#include "stats.h"

/* Sections and entries are singly linked lists kept in declaration order. Each entry is its own
 * allocation, so the address of its counter never changes. Declarations happen at start-up and
 * lookups are rare (control socket, scrapes): linear search is fine. */

struct stats_entry {
        struct stats_entry *next;
        char *name;
        char *doc;
        struct stats_counter counter; /* unused for gauges */
        stats_gauge_fn gauge;
        void *userdata;
};

struct stats_section {
        struct stats_section *next;
        char *name;
        struct stats_entry *entries;
        struct stats_entry **entries_tail;
};

struct stats {
        struct stats_section *sections;
        struct stats_section **sections_tail;
};

int stats_new(struct stats **ret) {
        struct stats *s;

        assert(ret);

        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->sections_tail = &s->sections;

        *ret = s;
        return 0;
}

static void stats_entry_free(struct stats_entry *e) {
        if (!e)
                return;
        free(e->name);
        free(e->doc);
        free(e);
}

static void stats_section_free(struct stats_section *sec) {
        if (!sec)
                return;
        while (sec->entries) {
                struct stats_entry *e = sec->entries;
                sec->entries = e->next;
                stats_entry_free(e);
        }
        free(sec->name);
        free(sec);
}

void stats_free(struct stats *s) {
        if (!s)
                return;
        while (s->sections) {
                struct stats_section *sec = s->sections;
                s->sections = sec->next;
                stats_section_free(sec);
        }
        free(s);
}

static struct stats_section *stats_find_section(struct stats *s, const char *section) {
        for (struct stats_section *sec = s->sections; sec; sec = sec->next)
                if (streq(sec->name, section))
                        return sec;
        return NULL;
}

static struct stats_entry *section_find_entry(struct stats_section *sec, const char *name) {
        for (struct stats_entry *e = sec->entries; e; e = e->next)
                if (streq(e->name, name))
                        return e;
        return NULL;
}

static struct stats_section *stats_get_section(struct stats *s, const char *section) {
        struct stats_section *sec;

        sec = stats_find_section(s, section);
        if (sec)
                return sec;

        sec = calloc(1, sizeof *sec);
        if (!sec)
                return NULL;
        sec->name = strdup(section);
        if (!sec->name) {
                free(sec);
                return NULL;
        }
        sec->entries_tail = &sec->entries;

        *s->sections_tail = sec;
        s->sections_tail = &sec->next;
        return sec;
}

/* Returns the existing entry (*existed = true) or appends a new one. NULL on ENOMEM. */
static struct stats_entry *stats_add_entry(struct stats *s, const char *section, const char *name,
                                           const char *doc, bool *existed) {
        struct stats_section *sec;
        struct stats_entry *e;

        sec = stats_get_section(s, section);
        if (!sec)
                return NULL;

        e = section_find_entry(sec, name);
        if (e) {
                *existed = true;
                return e;
        }

        e = calloc(1, sizeof *e);
        if (!e)
                return NULL;
        e->name = strdup(name);
        e->doc = doc ? strdup(doc) : NULL;
        if (!e->name || (doc && !e->doc)) {
                stats_entry_free(e);
                return NULL;
        }

        *sec->entries_tail = e;
        sec->entries_tail = &e->next;
        *existed = false;
        return e;
}

struct stats_counter *stats_declare(struct stats *s, const char *section, const char *name,
                                    const char *doc) {
        struct stats_entry *e;
        bool existed;

        assert(s);
        assert(section);
        assert(name);

        e = stats_add_entry(s, section, name, doc, &existed);
        if (!e) {
                log_debug("Failed to declare counter '%s/%s': out of memory", section, name);
                return NULL;
        }
        if (existed && e->gauge) {
                log_debug("'%s/%s' is already declared as a gauge", section, name);
                return NULL;
        }
        return &e->counter;
}

struct stats_counter *stats_declare_pair(struct stats *s, const char *section, const char *name,
                                         const char *doc, struct stats_counter **finished) {
        _cleanup_free_ char *fname = NULL, *fdoc = NULL;
        struct stats_counter *start, *end;

        assert(finished);

        if (asprintf(&fname, "%s-finished", name) < 0)
                return NULL;
        if (doc && asprintf(&fdoc, "%s (finished)", doc) < 0)
                return NULL;

        start = stats_declare(s, section, name, doc);
        if (!start)
                return NULL;
        end = stats_declare(s, section, fname, fdoc);
        if (!end)
                return NULL;

        *finished = end;
        return start;
}

int stats_declare_gauge(struct stats *s, const char *section, const char *name, const char *doc,
                        stats_gauge_fn fn, void *userdata) {
        struct stats_entry *e;
        bool existed;

        assert(s);
        assert(section);
        assert(name);
        assert(fn);

        e = stats_add_entry(s, section, name, doc, &existed);
        if (!e)
                return -ENOMEM;
        if (existed)
                return log_debug_errno(EEXIST, "'%s/%s' is already declared", section, name);

        e->gauge = fn;
        e->userdata = userdata;
        return 0;
}

static uint64_t stats_entry_value(const struct stats_entry *e) {
        return e->gauge ? e->gauge(e->userdata) : e->counter.value;
}

int stats_get(struct stats *s, const char *path, uint64_t *value) {
        struct stats_section *sec;
        struct stats_entry *e;
        const char *slash;

        assert(s);
        assert(path);

        /* Section names never contain '/', counter names neither: split at the first one. */
        slash = strchr(path, '/');
        if (!slash)
                return -ENOENT;

        for (sec = s->sections; sec; sec = sec->next)
                if (strlen(sec->name) == (size_t)(slash - path) &&
                    strncmp(sec->name, path, slash - path) == 0)
                        break;
        if (!sec)
                return -ENOENT;

        e = section_find_entry(sec, slash + 1);
        if (!e)
                return -ENOENT;

        if (value)
                *value = stats_entry_value(e);
        return 0;
}

static json_t *section_to_json(struct stats_section *sec) {
        json_t *o;

        o = json_object();
        if (!o)
                return NULL;

        for (struct stats_entry *e = sec->entries; e; e = e->next) {
                json_int_t v = (json_int_t)MIN(stats_entry_value(e), (uint64_t)INT64_MAX);

                if (json_object_set_new(o, e->name, json_integer(v)) < 0) {
                        json_decref(o);
                        return NULL;
                }
        }
        return o;
}

json_t *stats_to_json(struct stats *s, const char *section) {
        json_t *o;

        assert(s);

        if (section && !streq(section, "all")) {
                struct stats_section *sec;

                sec = stats_find_section(s, section);
                if (!sec)
                        return NULL;

                o = json_object();
                if (!o || json_object_set_new(o, sec->name, section_to_json(sec)) < 0) {
                        json_decref(o);
                        return NULL;
                }
                return o;
        }

        o = json_object();
        if (!o)
                return NULL;
        for (struct stats_section *sec = s->sections; sec; sec = sec->next)
                if (json_object_set_new(o, sec->name, section_to_json(sec)) < 0) {
                        json_decref(o);
                        return NULL;
                }
        return o;
}

static void put_metric_part(FILE *f, const char *s) {
        for (; *s; s++) {
                char c = *s;

                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
                        c = '_';
                fputc(c, f);
        }
}

static void put_metric_name(FILE *f, const char *role, const char *section, const char *name) {
        fputs("sipfleet_", f);
        put_metric_part(f, role);
        fputc('_', f);
        put_metric_part(f, section);
        fputc('_', f);
        put_metric_part(f, name);
}

/* HELP text escaping per the text format: backslash and line feed. */
static void put_help(FILE *f, const char *s) {
        for (; *s; s++)
                switch (*s) {
                case '\\':
                        fputs("\\\\", f);
                        break;
                case '\n':
                        fputs("\\n", f);
                        break;
                default:
                        fputc(*s, f);
                }
}

char *stats_to_prometheus(struct stats *s, const char *role) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f;

        assert(s);
        assert(role);

        f = open_memstream(&buf, &size);
        if (!f)
                return NULL;

        for (struct stats_section *sec = s->sections; sec; sec = sec->next)
                for (struct stats_entry *e = sec->entries; e; e = e->next) {
                        fputs("# HELP ", f);
                        put_metric_name(f, role, sec->name, e->name);
                        fputc(' ', f);
                        if (e->doc)
                                put_help(f, e->doc);
                        else {
                                put_help(f, sec->name);
                                fputc('/', f);
                                put_help(f, e->name);
                        }
                        fputs("\n# TYPE ", f);
                        put_metric_name(f, role, sec->name, e->name);
                        fputs(e->gauge ? " gauge\n" : " counter\n", f);
                        put_metric_name(f, role, sec->name, e->name);
                        fprintf(f, " %" PRIu64 "\n", stats_entry_value(e));
                }

        if (ferror(f)) {
                fclose(f);
                free(buf);
                return NULL;
        }
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}
