/* SPDX-License-Identifier: MIT */
/* The Forward routes file (format in routes.h): parsed line by line into rules of (next hop,
 * compiled filter); filter errors are mapped back to the physical line and column, across
 * continuation lines. */
#include <assert.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>

#include <sofia-sip/hostdomain.h>

#include "filter-sip.h"
#include "filter.h"
#include "macro.h"
#include "routes.h"

struct routes {
        struct route *rules;
        size_t n;
};

/* Where a piece of a rule's filter text comes from, to map a filter column back to the file. */
struct segment {
        size_t offset; /* in the joined text */
        unsigned line;
        size_t column; /* 1-based, in the line */
};

/* The rule being read: continuation lines may still extend it. */
struct pending {
        bool active;
        char *next_hop;
        unsigned line;
        char *text;
        size_t len;
        struct segment *segs;
        size_t n_segs;
};

_printf_(3, 4) static int set_error(char **error, int r, const char *fmt, ...) {
        if (error) {
                va_list ap;
                va_start(ap, fmt);
                if (vasprintf(error, fmt, ap) < 0)
                        *error = NULL;
                va_end(ap);
        }
        return r;
}

static void route_done(struct route *rt) {
        free(rt->next_hop);
        free(rt->filter_text);
        filter_free(rt->filter);
}

void routes_free(struct routes *r) {
        if (!r)
                return;
        for (size_t i = 0; i < r->n; i++)
                route_done(&r->rules[i]);
        free(r->rules);
        free(r);
}

static void pending_reset(struct pending *p) {
        free(p->next_hop);
        free(p->text);
        free(p->segs);
        *p = (struct pending){0};
}

/* Appends a piece of filter text (separated from the previous one by a space). */
static int pending_append(struct pending *p, const char *s, size_t n, unsigned line,
                          size_t column) {
        if (n == 0)
                return 0;
        size_t sep = p->len > 0 ? 1 : 0;
        char *t = realloc(p->text, p->len + sep + n + 1);
        if (!t)
                return -ENOMEM;
        p->text = t;
        struct segment *sg = realloc(p->segs, (p->n_segs + 1) * sizeof *sg);
        if (!sg)
                return -ENOMEM;
        p->segs = sg;
        if (sep)
                p->text[p->len++] = ' ';
        p->segs[p->n_segs++] = (struct segment){.offset = p->len, .line = line, .column = column};
        memcpy(p->text + p->len, s, n);
        p->len += n;
        p->text[p->len] = 0;
        return 0;
}

/* NULL when s is usable as a next hop, else why not. */
static const char *next_hop_problem(const char *s) {
        if (strncasecmp(s, "sip:", 4) != 0 && strncasecmp(s, "sips:", 5) != 0)
                return "not a sip: or sips: URI";
        su_home_t home[1] = {SU_HOME_INIT(home)};
        const char *problem = NULL;
        url_t *url = url_make(home, s);
        if (!url || (url->url_type != url_sip && url->url_type != url_sips))
                problem = "not a valid sip: or sips: URI";
        else if (isempty(url->url_host))
                problem = "missing host";
        else if (!host_is_valid(url->url_host))
                problem = "invalid host";
        else if (url->url_port) {
                char *end;
                unsigned long port = strtoul(url->url_port, &end, 10);
                if (*end || port == 0 || port > 65535)
                        problem = "invalid port";
        }
        su_home_deinit(home);
        return problem;
}

/* Compiles the pending rule into r. */
static int pending_finish(struct pending *p, struct routes *r, const char *name, char **error) {
        if (!p->active)
                return 0;
        if (p->len == 0)
                return set_error(error, -EINVAL,
                                 "%s:%u: no filter after the next hop '%s' (write '*' to match "
                                 "every request)",
                                 name, p->line, p->next_hop);

        struct filter *f = NULL;
        if (!streq(p->text, "*")) {
                struct filter_error fe;
                int k = filter_sip_compile(p->text, &f, &fe);
                if (k == -ENOMEM)
                        return set_error(error, k, "%s:%u: out of memory", name, p->line);
                if (k < 0) {
                        if (fe.column == 0)
                                return set_error(error, k, "%s:%u: filter: %s", name, p->line,
                                                 fe.reason);
                        size_t o = fe.column - 1;
                        const struct segment *sg = &p->segs[0];
                        for (size_t i = 1; i < p->n_segs; i++)
                                if (p->segs[i].offset <= o)
                                        sg = &p->segs[i];
                        size_t col = sg->column + (o >= sg->offset ? o - sg->offset : 0);
                        return set_error(error, k, "%s:%u:%zu: %s", name, sg->line, col, fe.reason);
                }
        }
        r->rules[r->n++] = (struct route){
                .next_hop = TAKE_PTR(p->next_hop),
                .filter_text = TAKE_PTR(p->text),
                .filter = f,
                .line = p->line,
        };
        pending_reset(p);
        return 0;
}

static bool is_blank(char c) {
        return c == ' ' || c == '\t';
}

/* Reads the next hop and the start of the filter from a rule line. */
static int pending_start(struct pending *p, const char *l, size_t n, unsigned line,
                         const char *name, char **error) {
        size_t i = 0, hop_start, hop_end;
        if (l[0] == '<') {
                const char *gt = memchr(l, '>', n);
                if (!gt)
                        return set_error(error, -EINVAL,
                                         "%s:%u: missing '>' after '<' of the next hop", name,
                                         line);
                hop_start = 1;
                hop_end = (size_t)(gt - l);
                i = hop_end + 1;
        } else {
                hop_start = 0;
                while (i < n && !is_blank(l[i]))
                        i++;
                hop_end = i;
        }
        *p = (struct pending){.active = true, .line = line};
        p->next_hop = strndup(l + hop_start, hop_end - hop_start);
        if (!p->next_hop)
                return set_error(error, -ENOMEM, "%s:%u: out of memory", name, line);
        const char *problem = next_hop_problem(p->next_hop);
        if (problem)
                return set_error(error, -EINVAL, "%s:%u: bad next hop '%s': %s", name, line,
                                 p->next_hop, problem);
        while (i < n && is_blank(l[i]))
                i++;
        if (pending_append(p, l + i, n - i, line, i + 1) < 0)
                return set_error(error, -ENOMEM, "%s:%u: out of memory", name, line);
        return 0;
}

int routes_parse(const char *text, size_t len, const char *name, struct routes **ret,
                 char **error) {
        assert(ret);
        if (error)
                *error = NULL;
        if (!name)
                name = "routes";
        if (len > ROUTES_MAX_SIZE)
                return set_error(error, -EFBIG, "%s: larger than %d bytes", name, ROUTES_MAX_SIZE);

        _cleanup_(routes_freep) struct routes *r = calloc(1, sizeof *r);
        if (!r)
                return set_error(error, -ENOMEM, "%s: out of memory", name);
        size_t cap = 0;
        struct pending p = {0};
        unsigned line = 0;
        int k = 0;

        for (size_t pos = 0; pos < len;) {
                const char *l = text + pos;
                const char *nl = memchr(l, '\n', len - pos);
                size_t n = nl ? (size_t)(nl - l) : len - pos;
                pos += n + (nl ? 1 : 0);
                line++;
                if (memchr(l, 0, n)) {
                        k = set_error(error, -EINVAL, "%s:%u: NUL byte in the line", name, line);
                        goto finish;
                }
                while (n > 0 && (l[n - 1] == '\r' || is_blank(l[n - 1])))
                        n--;
                size_t i = 0;
                while (i < n && is_blank(l[i]))
                        i++;
                if (i == n || l[i] == '#')
                        continue;
                if (i > 0) {
                        if (!p.active) {
                                k = set_error(error, -EINVAL,
                                              "%s:%u: indented line continues no rule (a rule "
                                              "starts at the beginning of a line)",
                                              name, line);
                                goto finish;
                        }
                        if (pending_append(&p, l + i, n - i, line, i + 1) < 0) {
                                k = set_error(error, -ENOMEM, "%s:%u: out of memory", name, line);
                                goto finish;
                        }
                        continue;
                }
                k = pending_finish(&p, r, name, error);
                if (k < 0)
                        goto finish;
                if (r->n == ROUTES_MAX_RULES) {
                        k = set_error(error, -E2BIG, "%s:%u: more than %d rules", name, line,
                                      ROUTES_MAX_RULES);
                        goto finish;
                }
                if (r->n == cap) {
                        size_t ncap = cap ? cap * 2 : 8;
                        struct route *v = realloc(r->rules, ncap * sizeof *v);
                        if (!v) {
                                k = set_error(error, -ENOMEM, "%s: out of memory", name);
                                goto finish;
                        }
                        r->rules = v;
                        cap = ncap;
                }
                k = pending_start(&p, l, n, line, name, error);
                if (k < 0)
                        goto finish;
        }
        k = pending_finish(&p, r, name, error);
finish:
        pending_reset(&p);
        if (k < 0)
                return k;
        *ret = TAKE_PTR(r);
        return 0;
}

int routes_load(const char *path, struct routes **ret, char **error) {
        assert(path);
        if (error)
                *error = NULL;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return set_error(error, -errno, "%s: cannot open: %s", path, strerror(errno));
        struct stat st;
        if (fstat(fd, &st) < 0)
                return set_error(error, -errno, "%s: cannot stat: %s", path, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return set_error(error, -EINVAL, "%s: not a regular file", path);
        if (st.st_size > ROUTES_MAX_SIZE)
                return set_error(error, -EFBIG, "%s: larger than %d bytes", path, ROUTES_MAX_SIZE);

        /* Read up to one byte more than the limit in case the file grows meanwhile. */
        _cleanup_free_ char *buf = malloc(ROUTES_MAX_SIZE + 1);
        if (!buf)
                return set_error(error, -ENOMEM, "%s: out of memory", path);
        size_t len = 0;
        while (len < ROUTES_MAX_SIZE + 1) {
                ssize_t k = read(fd, buf + len, ROUTES_MAX_SIZE + 1 - len);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return set_error(error, -errno, "%s: cannot read: %s", path,
                                         strerror(errno));
                }
                if (k == 0)
                        break;
                len += (size_t)k;
        }
        return routes_parse(buf, len, path, ret, error);
}

const char *routes_match(const struct routes *r, const sip_t *sip) {
        if (!r || !sip)
                return NULL;
        for (size_t i = 0; i < r->n; i++)
                if (filter_sip_eval(r->rules[i].filter, sip, NULL))
                        return r->rules[i].next_hop;
        return NULL;
}

size_t routes_count(const struct routes *r) {
        return r ? r->n : 0;
}

const struct route *routes_get(const struct routes *r, size_t i) {
        return r && i < r->n ? &r->rules[i] : NULL;
}
