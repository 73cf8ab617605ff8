/* SPDX-License-Identifier: MIT */
#define LOG_SUBSYSTEM LOG_config
#include <assert.h>
#include <dirent.h>
#include <inttypes.h>
#include <jansson.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <sofia-sip/hostdomain.h>
#include <sofia-sip/su_alloc.h>
#include <sofia-sip/url.h>

#include "conf.h"
#include "log.h"
#include "macro.h"

#define WHITESPACE " \t\r\n"
#define CONF_LINE_MAX (20 * 1024)

/* User text quoted in a message is cut after this many bytes. */
#define QUOTE_MAX 80
#define QUOTE_FMT "'%.*s%s'"
#define QUOTE_ARG(s) (int)MIN(strlen(s), (size_t)QUOTE_MAX), (s), strlen(s) > QUOTE_MAX ? "..." : ""

union conf_value {
        bool b;
        int64_t i;
        struct conf_range range;
        char *str;   /* CONF_STRING, CONF_URI */
        char **list; /* CONF_LIST, CONF_URI_LIST */
        uint64_t u;  /* CONF_DURATION (ms), CONF_SIZE (bytes) */
        struct conf_address addr;
        int e;
};

struct conf_row {
        struct conf_option opt; /* a copy: tables may be freed before the conf */
        void *base;
        char *path;             /* "section/key" as written in the table */
        union conf_value value; /* owned here; the block holds a shallow copy */
        char *source;           /* "default", "file:line", "--set", "control socket" */
};

struct conf_section_entry {
        char *name;
        char *doc;
};

struct conf {
        char *role;
        struct conf_section_entry *sections;
        size_t n_sections;
        struct conf_row *rows;
        size_t n_rows;
        char **overrides; /* "section/key=value", in order */
        char *path;       /* what conf_load read, for conf_reload */
        bool loaded;
        conf_changed_fn changed;
        void *userdata;
};

static const struct {
        const char *name; /* conf_list "type" */
        const char *what; /* in messages */
} type_info[] = {
        [CONF_BOOL] = {"bool", "boolean"},       [CONF_INT] = {"int", "integer"},
        [CONF_RANGE] = {"range", "range"},       [CONF_STRING] = {"string", "string"},
        [CONF_LIST] = {"list", "list"},          [CONF_DURATION] = {"duration", "duration"},
        [CONF_SIZE] = {"size", "size"},          [CONF_URI] = {"uri", "SIP URI"},
        [CONF_URI_LIST] = {"uri-list", "SIP URI"}, [CONF_ADDRESS] = {"address", "address"},
        [CONF_ENUM] = {"enum", "value"},
};

static const struct {
        const char *name;
        uint64_t ms;
} duration_units[] = {
        {"ms", 1}, {"s", 1000}, {"min", 60 * 1000}, {"h", 3600 * 1000}, {"d", 24 * 3600 * 1000},
};

static const struct {
        const char *name;
        uint64_t factor;
} size_units[] = {
        {"b", 1},
        {"k", UINT64_C(1) << 10}, {"kb", UINT64_C(1) << 10}, {"kib", UINT64_C(1) << 10},
        {"m", UINT64_C(1) << 20}, {"mb", UINT64_C(1) << 20}, {"mib", UINT64_C(1) << 20},
        {"g", UINT64_C(1) << 30}, {"gb", UINT64_C(1) << 30}, {"gib", UINT64_C(1) << 30},
        {"t", UINT64_C(1) << 40}, {"tb", UINT64_C(1) << 40}, {"tib", UINT64_C(1) << 40},
};

static void fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}

static bool ascii_isdigit(char ch) {
        return ch >= '0' && ch <= '9';
}

static bool ascii_isalpha(char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static char ascii_tolower(char ch) {
        return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
}

/* Trims in place and returns the start of the trimmed text. */
static char *strip(char *s) {
        s += strspn(s, WHITESPACE);
        size_t n = strlen(s);
        while (n > 0 && strchr(WHITESPACE, s[n - 1]))
                s[--n] = 0;
        return s;
}

static char *strndup_stripped(const char *s, size_t n) {
        _cleanup_free_ char *copy = strndup(s, n);
        if (!copy)
                return NULL;
        return strdup(strip(copy));
}

static char *msg_printf(const char *fmt, ...) _printf_(1, 2);
static char *msg_printf(const char *fmt, ...) {
        va_list ap;
        char *s;
        va_start(ap, fmt);
        int r = vasprintf(&s, fmt, ap);
        va_end(ap);
        return r < 0 ? NULL : s;
}

/* Stores the message in *error (when error is not NULL) and returns r. */
static int fail(char **error, int r, const char *fmt, ...) _printf_(3, 4);
static int fail(char **error, int r, const char *fmt, ...) {
        if (!error)
                return r;
        va_list ap;
        char *s;
        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        free(*error);
        *error = s;
        return r;
}

static bool is_scalar(enum conf_type t) {
        return t == CONF_BOOL || t == CONF_INT || t == CONF_RANGE || t == CONF_DURATION ||
               t == CONF_SIZE || t == CONF_ENUM;
}

static bool is_bounded(const struct conf_option *o) {
        return o->min != 0 || o->max != 0;
}

static uint64_t unit_ms(enum conf_unit u) {
        switch (u) {
        case CONF_UNIT_S:
                return 1000;
        case CONF_UNIT_MIN:
                return 60 * 1000;
        case CONF_UNIT_MS:
                break;
        }
        return 1;
}

static const char *unit_name(enum conf_unit u) {
        switch (u) {
        case CONF_UNIT_S:
                return "s";
        case CONF_UNIT_MIN:
                return "min";
        case CONF_UNIT_MS:
                break;
        }
        return "ms";
}

/* ---- suggestions ---- */

static size_t distance_ci(const char *a, const char *b) {
        char la[257], lb[257];
        size_t na = strlen(a), nb = strlen(b);
        if (na >= sizeof la || nb >= sizeof lb)
                return SIZE_MAX;
        for (size_t i = 0; i <= na; i++)
                la[i] = ascii_tolower(a[i]);
        for (size_t i = 0; i <= nb; i++)
                lb[i] = ascii_tolower(b[i]);
        return string_distance(la, lb);
}

struct suggestion {
        const char *typo;
        const char *best;
        size_t distance;
};

static void suggestion_consider(struct suggestion *s, const char *candidate, const char *ret) {
        size_t n = strlen(s->typo);
        size_t d = distance_ci(s->typo, candidate);
        if (d > MAX((size_t)2, n / 3) || d >= n)
                return;
        if (!s->best || d < s->distance) {
                s->best = ret;
                s->distance = d;
        }
}

/* ---- lookups ---- */

static struct conf_section_entry *section_find(struct conf *c, const char *name) {
        for (size_t i = 0; i < c->n_sections; i++)
                if (strcaseeq(c->sections[i].name, name))
                        return &c->sections[i];
        return NULL;
}

static struct conf_row *row_find(struct conf *c, const char *section, const char *key) {
        for (size_t i = 0; i < c->n_rows; i++)
                if (strcaseeq(c->rows[i].opt.section, section) &&
                    strcaseeq(c->rows[i].opt.key, key))
                        return &c->rows[i];
        return NULL;
}

/* "section/key" → its two parts (the key is after the last '/'). */
static int split_path(const char *path, char **ret_section, char **ret_key) {
        const char *slash = path ? strrchr(path, '/') : NULL;
        if (!slash)
                return -EINVAL;
        _cleanup_free_ char *section = strndup_stripped(path, (size_t)(slash - path));
        _cleanup_free_ char *key = strndup_stripped(slash + 1, strlen(slash + 1));
        if (!section || !key)
                return -ENOMEM;
        if (!*section || !*key)
                return -EINVAL;
        *ret_section = TAKE_PTR(section);
        *ret_key = TAKE_PTR(key);
        return 0;
}

/* "section/key=value" → its three parts, trimmed. */
static int split_assignment(const char *a, char **ret_section, char **ret_key, char **ret_value) {
        const char *eq = strchr(a, '=');
        if (!eq)
                return -EINVAL;
        _cleanup_free_ char *path = strndup(a, (size_t)(eq - a));
        _cleanup_free_ char *section = NULL, *key = NULL;
        _cleanup_free_ char *value = strndup_stripped(eq + 1, strlen(eq + 1));
        if (!path || !value)
                return -ENOMEM;
        int r = split_path(path, &section, &key);
        if (r < 0)
                return r;
        *ret_section = TAKE_PTR(section);
        *ret_key = TAKE_PTR(key);
        *ret_value = TAKE_PTR(value);
        return 0;
}

/* The message for a section or key that is not in the tables (key NULL: the section alone). */
static char *unknown_message(struct conf *c, const char *section, const char *key) {
        const struct conf_section_entry *s = section_find(c, section);
        if (!s) {
                const char *hint = conf_suggest_section(c, section);
                if (hint)
                        return msg_printf("unknown section [%s], did you mean [%s]?", section,
                                          hint);
                return msg_printf("unknown section [%s]", section);
        }
        const char *hint = conf_suggest_key(c, s->name, key);
        if (hint)
                return msg_printf("unknown key '%s' in section [%s], did you mean '%s'?", key,
                                  s->name, hint);
        for (size_t i = 0; i < c->n_rows; i++)
                if (strcaseeq(c->rows[i].opt.key, key))
                        return msg_printf("unknown key '%s' in section [%s]; it belongs in "
                                          "section [%s]",
                                          key, s->name, c->rows[i].opt.section);
        return msg_printf("unknown key '%s' in section [%s]", key, s->name);
}

/* ---- typed parsers ---- */

int conf_parse_bool(const char *s, bool *ret) {
        static const char *const yes[] = {"true", "yes", "on", "1"};
        static const char *const no[] = {"false", "no", "off", "0"};
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcaseeq(s, yes[i])) {
                        *ret = true;
                        return 0;
                }
                if (strcaseeq(s, no[i])) {
                        *ret = false;
                        return 0;
                }
        }
        return -EINVAL;
}

/* An optionally signed decimal number at the start of s; *end points after it. */
static int parse_int_prefix(const char *s, int64_t *ret, const char **end) {
        const char *p = s;
        bool negative = false;
        if (*p == '+' || *p == '-')
                negative = *p++ == '-';
        if (!ascii_isdigit(*p))
                return -EINVAL;
        uint64_t v = 0, limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        for (; ascii_isdigit(*p); p++) {
                unsigned d = (unsigned)(*p - '0');
                if (v > (limit - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        if (negative)
                *ret = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
        else
                *ret = (int64_t)v;
        *end = p;
        return 0;
}

int conf_parse_int(const char *s, int64_t *ret) {
        const char *end;
        int64_t v;
        if (!s)
                return -EINVAL;
        int r = parse_int_prefix(s, &v, &end);
        if (r < 0)
                return r;
        if (*end)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int parse_uint_prefix(const char **p, uint64_t *ret) {
        uint64_t v = 0;
        if (!ascii_isdigit(**p))
                return -EINVAL;
        for (; ascii_isdigit(**p); (*p)++) {
                unsigned d = (unsigned)(**p - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        *ret = v;
        return 0;
}

static int parse_range(const char *s, struct conf_range *ret, const char **reason) {
        struct conf_range v;
        const char *p;
        int r = parse_int_prefix(s, &v.min, &p);
        if (r < 0)
                goto bad;
        p += strspn(p, WHITESPACE);
        if (*p == 0) {
                *ret = (struct conf_range){v.min, v.min};
                return 0;
        }
        if (*p != '-') {
                r = -EINVAL;
                goto bad;
        }
        p++;
        p += strspn(p, WHITESPACE);
        r = parse_int_prefix(p, &v.max, &p);
        if (r < 0)
                goto bad;
        if (*p) {
                r = -EINVAL;
                goto bad;
        }
        if (v.min > v.max) {
                *reason = "reversed range: the first number must not be greater than the second";
                return -EINVAL;
        }
        *ret = v;
        return 0;
bad:
        *reason = r == -ERANGE ? "number too large" : "expected a number n or a range n-m";
        return r;
}

static int parse_duration(const char *s, enum conf_unit unit, uint64_t *ret, const char **reason) {
        const char *p = s;
        uint64_t total = 0;
        bool any = false;

        for (;;) {
                uint64_t n, factor = 0;
                p += strspn(p, WHITESPACE);
                if (!*p)
                        break;
                int r = parse_uint_prefix(&p, &n);
                if (r == -ERANGE) {
                        *reason = "number too large";
                        return r;
                }
                if (r < 0) {
                        *reason = "expected a number with a unit: ms, s, min, h or d";
                        return r;
                }
                if (*p == '.' || *p == ',') {
                        *reason = "fractions are not supported; use a smaller unit (90s, 1500ms)";
                        return -EINVAL;
                }
                p += strspn(p, WHITESPACE);
                size_t len = 0;
                while (ascii_isalpha(p[len]))
                        len++;
                if (len == 0) {
                        if (any || *p) {
                                *reason = "each number needs a unit: ms, s, min, h or d";
                                return -EINVAL;
                        }
                        factor = unit_ms(unit);
                } else {
                        for (size_t i = 0; i < ELEMENTSOF(duration_units); i++)
                                if (strlen(duration_units[i].name) == len &&
                                    strncasecmp(p, duration_units[i].name, len) == 0)
                                        factor = duration_units[i].ms;
                        if (factor == 0) {
                                *reason = "unknown unit; use ms, s, min, h or d";
                                return -EINVAL;
                        }
                        p += len;
                }
                if (n > UINT64_MAX / factor || total > UINT64_MAX - n * factor) {
                        *reason = "duration too long";
                        return -ERANGE;
                }
                total += n * factor;
                any = true;
        }
        if (!any) {
                *reason = "empty duration";
                return -EINVAL;
        }
        if (total % unit_ms(unit) != 0) {
                *reason = unit == CONF_UNIT_MIN
                                  ? "finer than the unit of this key (min): give whole minutes"
                                  : "finer than the unit of this key (s): give whole seconds";
                return -EINVAL;
        }
        *ret = total;
        return 0;
}

int conf_parse_duration(const char *s, enum conf_unit unit, uint64_t *ret_ms) {
        const char *reason;
        if (!s)
                return -EINVAL;
        return parse_duration(s, unit, ret_ms, &reason);
}

static int parse_size(const char *s, uint64_t *ret, const char **reason) {
        const char *p = s;
        uint64_t n, factor = 0;
        int r = parse_uint_prefix(&p, &n);
        if (r < 0) {
                *reason = r == -ERANGE ? "number too large"
                                       : "expected a number of bytes with an optional unit: "
                                         "B, K, KB, KiB, M, MB, MiB, G, GB, GiB";
                return r;
        }
        p += strspn(p, WHITESPACE);
        if (*p == 0)
                factor = 1;
        else
                for (size_t i = 0; i < ELEMENTSOF(size_units); i++)
                        if (strcaseeq(p, size_units[i].name))
                                factor = size_units[i].factor;
        if (factor == 0) {
                *reason = "unknown unit; use B, K, KB, KiB, M, MB, MiB, G, GB or GiB (K = 1024)";
                return -EINVAL;
        }
        if (n > UINT64_MAX / factor) {
                *reason = "size too large";
                return -ERANGE;
        }
        *ret = n * factor;
        return 0;
}

int conf_parse_size(const char *s, uint64_t *ret) {
        const char *reason;
        if (!s)
                return -EINVAL;
        return parse_size(s, ret, &reason);
}

/* A decimal port, 0-65535 (min_port: the lowest accepted). */
static bool port_valid(const char *s, unsigned min_port) {
        unsigned v = 0;
        if (!*s || strlen(s) > 5)
                return false;
        for (; *s; s++) {
                if (!ascii_isdigit(*s))
                        return false;
                v = v * 10 + (unsigned)(*s - '0');
        }
        return v >= min_port && v <= 65535;
}

static int parse_address(const char *s, struct conf_address *ret, const char **reason) {
        struct conf_address a = {0};

        if (s[0] == '/') {
                struct sockaddr_un *un = (struct sockaddr_un *)&a.sa;
                size_t n = strlen(s);
                if (n >= sizeof un->sun_path) {
                        *reason = "socket path too long";
                        return -EINVAL;
                }
                un->sun_family = AF_UNIX;
                memcpy(un->sun_path, s, n + 1);
                a.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        } else {
                _cleanup_free_ char *host = NULL;
                const char *port;
                int family;
                if (s[0] == '[') {
                        const char *close = strchr(s, ']');
                        if (!close) {
                                *reason = "missing ']' after the IPv6 address";
                                return -EINVAL;
                        }
                        if (close[1] != ':') {
                                *reason = "expected [IPv6 address]:port, e.g. [::1]:5060";
                                return -EINVAL;
                        }
                        host = strndup(s + 1, (size_t)(close - s - 1));
                        port = close + 2;
                        family = AF_INET6;
                } else {
                        const char *colon = strrchr(s, ':');
                        if (!colon) {
                                *reason = "missing port: expected host:port, [IPv6]:port or "
                                          "/path";
                                return -EINVAL;
                        }
                        if (memchr(s, ':', (size_t)(colon - s))) {
                                *reason = "IPv6 addresses need brackets, e.g. [::1]:5060";
                                return -EINVAL;
                        }
                        host = strndup(s, (size_t)(colon - s));
                        port = colon + 1;
                        family = AF_INET;
                }
                if (!host)
                        return -ENOMEM;
                if (!*host) {
                        *reason = "missing host";
                        return -EINVAL;
                }
                if (!port_valid(port, 0)) {
                        *reason = "invalid port: expected a number from 0 to 65535";
                        return -EINVAL;
                }
                struct addrinfo hints = {
                        .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
                        .ai_family = family,
                        .ai_socktype = SOCK_STREAM,
                };
                struct addrinfo *ai = NULL;
                int r = getaddrinfo(host, port, &hints, &ai);
                if (r == EAI_MEMORY)
                        return -ENOMEM;
                if (r != 0 || !ai || ai->ai_addrlen > sizeof a.sa) {
                        if (ai)
                                freeaddrinfo(ai);
                        *reason = family == AF_INET6
                                          ? "not a numeric IPv6 address"
                                          : "not a numeric IPv4 address (host names are not "
                                            "resolved)";
                        return -EINVAL;
                }
                memcpy(&a.sa, ai->ai_addr, ai->ai_addrlen);
                a.len = ai->ai_addrlen;
                freeaddrinfo(ai);
        }
        a.str = strdup(s);
        if (!a.str)
                return -ENOMEM;
        *ret = a;
        return 0;
}

int conf_parse_address(const char *s, struct conf_address *ret) {
        const char *reason;
        if (isempty(s))
                return -EINVAL;
        return parse_address(s, ret, &reason);
}

void conf_address_done(struct conf_address *a) {
        if (!a)
                return;
        free(a->str);
        *a = (struct conf_address){0};
}

/* NULL when s is an acceptable sip: or sips: URI, else why not. */
static const char *uri_problem(const char *s) {
        if (strncasecmp(s, "sip:", 4) != 0 && strncasecmp(s, "sips:", 5) != 0)
                return "only sip: and sips: URIs are accepted";
        if (s[strcspn(s, WHITESPACE)])
                return "contains whitespace";

        su_home_t home[1] = {SU_HOME_INIT(home)};
        const char *problem = NULL;
        url_t *url = url_make(home, s);
        if (!url)
                problem = "not a valid URI";
        else if (url->url_type != url_sip && url->url_type != url_sips)
                problem = "only sip: and sips: URIs are accepted";
        else if (isempty(url->url_host))
                problem = "missing host";
        else if (!streq(url->url_host, "*") && !host_is_valid(url->url_host))
                problem = "invalid host";
        else if (url->url_port && !port_valid(url->url_port, 1))
                problem = "invalid port";
        su_home_deinit(home);
        return problem;
}

bool conf_uri_valid(const char *s) {
        return !isempty(s) && !uri_problem(s);
}

/* ---- values ---- */

static void value_done(enum conf_type type, union conf_value *v) {
        switch (type) {
        case CONF_STRING:
        case CONF_URI:
                free(v->str);
                break;
        case CONF_LIST:
        case CONF_URI_LIST:
                strv_free(v->list);
                break;
        case CONF_ADDRESS:
                conf_address_done(&v->addr);
                break;
        default:
                break;
        }
        memset(v, 0, sizeof *v);
}

static bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return streq(a, b);
}

static bool value_equal(enum conf_type type, const union conf_value *a,
                        const union conf_value *b) {
        switch (type) {
        case CONF_BOOL:
                return a->b == b->b;
        case CONF_INT:
                return a->i == b->i;
        case CONF_RANGE:
                return a->range.min == b->range.min && a->range.max == b->range.max;
        case CONF_STRING:
        case CONF_URI:
                return streq_ptr(a->str, b->str);
        case CONF_LIST:
        case CONF_URI_LIST: {
                size_t n = strv_length(a->list);
                if (n != strv_length(b->list))
                        return false;
                for (size_t i = 0; i < n; i++)
                        if (!streq(a->list[i], b->list[i]))
                                return false;
                return true;
        }
        case CONF_DURATION:
        case CONF_SIZE:
                return a->u == b->u;
        case CONF_ADDRESS:
                return streq_ptr(a->addr.str, b->addr.str);
        case CONF_ENUM:
                return a->e == b->e;
        }
        return false;
}

static char *format_duration(uint64_t ms) {
        if (ms == 0)
                return strdup("0");
        size_t i = ELEMENTSOF(duration_units) - 1;
        while (i > 0 && ms % duration_units[i].ms != 0)
                i--;
        return msg_printf("%" PRIu64 "%s", ms / duration_units[i].ms, duration_units[i].name);
}

static char *format_size(uint64_t bytes) {
        static const char *const names[] = {"B", "KiB", "MiB", "GiB", "TiB"};
        if (bytes == 0)
                return strdup("0");
        size_t i = 0;
        while (i + 1 < ELEMENTSOF(names) && bytes % (UINT64_C(1) << (10 * (i + 1))) == 0)
                i++;
        return msg_printf("%" PRIu64 "%s", bytes >> (10 * i), names[i]);
}

/* The value as text that parses back to the same value. */
static char *value_format(const struct conf_option *o, const union conf_value *v) {
        switch (o->type) {
        case CONF_BOOL:
                return strdup(v->b ? "true" : "false");
        case CONF_INT:
                return msg_printf("%" PRId64, v->i);
        case CONF_RANGE:
                if (v->range.min == v->range.max)
                        return msg_printf("%" PRId64, v->range.min);
                return msg_printf("%" PRId64 "-%" PRId64, v->range.min, v->range.max);
        case CONF_STRING:
        case CONF_URI:
                return strdup(strempty(v->str));
        case CONF_LIST:
        case CONF_URI_LIST:
                return strv_join(v->list, " ");
        case CONF_DURATION:
                return format_duration(v->u);
        case CONF_SIZE:
                return format_size(v->u);
        case CONF_ADDRESS:
                return strdup(strempty(v->addr.str));
        case CONF_ENUM:
                if (v->e < 0 || (size_t)v->e >= strv_length((char *const *)o->choices))
                        return strdup("");
                return strdup(o->choices[v->e]);
        }
        return NULL;
}

/* The default as text to parse: def, or for an empty scalar default its zero value. */
static const char *default_text(const struct conf_option *o) {
        if (!isempty(o->def) || !is_scalar(o->type))
                return strempty(o->def);
        switch (o->type) {
        case CONF_BOOL:
                return "false";
        case CONF_ENUM:
                return o->choices[0];
        default:
                return "0";
        }
}

static char *bad_value(const struct conf_option *o, const char *s, const char *reason) {
        if (o->flags & CONF_SECRET)
                return msg_printf("invalid %s (secret) for [%s] %s: %s", type_info[o->type].what,
                                  o->section, o->key, reason);
        return msg_printf("invalid %s " QUOTE_FMT " for [%s] %s: %s", type_info[o->type].what,
                          QUOTE_ARG(s), o->section, o->key, reason);
}

static char *enum_reason(const struct conf_option *o, const char *s) {
        _cleanup_free_ char *choices = strv_join((char *const *)o->choices, ", ");
        struct suggestion hint = {.typo = s};
        if (!choices)
                return NULL;
        for (const char *const *ch = o->choices; *ch; ch++)
                suggestion_consider(&hint, *ch, *ch);
        if (hint.best)
                return msg_printf("expected one of %s; did you mean '%s'?", choices, hint.best);
        return msg_printf("expected one of %s", choices);
}

/* Parses text for row o. On error returns -EINVAL (or -ENOMEM) and *msg says why. */
static int value_parse(const struct conf_option *o, const char *text, union conf_value *ret,
                       char **msg) {
        _cleanup_free_ char *copy = strdup(strempty(text));
        _cleanup_free_ char *dynamic_reason = NULL;
        union conf_value v;
        const char *reason = NULL;
        int r = 0;

        memset(&v, 0, sizeof v);
        *msg = NULL;
        if (!copy)
                return -ENOMEM;
        char *s = strip(copy);

        if (!*s) {
                switch (o->type) {
                case CONF_LIST:
                case CONF_URI_LIST:
                        v.list = calloc(1, sizeof(char *));
                        if (!v.list)
                                return -ENOMEM;
                        break;
                case CONF_STRING:
                case CONF_URI:
                case CONF_ADDRESS:
                        break;
                default:
                        *msg = msg_printf("empty value for [%s] %s; remove the line to get the "
                                          "default",
                                          o->section, o->key);
                        return -EINVAL;
                }
                *ret = v;
                return 0;
        }

        switch (o->type) {
        case CONF_BOOL:
                if (conf_parse_bool(s, &v.b) < 0)
                        reason = "expected true or false (also yes/no, on/off, 1/0)";
                break;
        case CONF_INT:
                r = conf_parse_int(s, &v.i);
                if (r < 0)
                        reason = r == -ERANGE ? "number too large" : "expected a whole number";
                else if (is_bounded(o) && (v.i < o->min || v.i > o->max) &&
                         !(reason = dynamic_reason = msg_printf(
                                   "out of range, allowed %" PRId64 "..%" PRId64, o->min,
                                   o->max)))
                        return -ENOMEM;
                break;
        case CONF_RANGE:
                r = parse_range(s, &v.range, &reason);
                if (r >= 0 && is_bounded(o) &&
                    (v.range.min < o->min || v.range.max > o->max) &&
                    !(reason = dynamic_reason = msg_printf(
                              "out of range, allowed %" PRId64 "..%" PRId64, o->min, o->max)))
                        return -ENOMEM;
                break;
        case CONF_STRING:
                v.str = strdup(s);
                if (!v.str)
                        return -ENOMEM;
                break;
        case CONF_URI:
                reason = uri_problem(s);
                if (!reason && !(v.str = strdup(s)))
                        return -ENOMEM;
                break;
        case CONF_LIST:
        case CONF_URI_LIST:
                v.list = strv_split(s, WHITESPACE);
                if (!v.list)
                        return -ENOMEM;
                if (o->type == CONF_URI_LIST)
                        STRV_FOREACH(u, v.list) {
                                reason = uri_problem(*u);
                                if (reason) {
                                        *msg = bad_value(o, *u, reason);
                                        value_done(o->type, &v);
                                        return *msg ? -EINVAL : -ENOMEM;
                                }
                        }
                break;
        case CONF_DURATION:
                r = parse_duration(s, o->unit, &v.u, &reason);
                break;
        case CONF_SIZE:
                r = parse_size(s, &v.u, &reason);
                break;
        case CONF_ADDRESS:
                r = parse_address(s, &v.addr, &reason);
                if (r == -ENOMEM)
                        return r;
                break;
        case CONF_ENUM:
                v.e = -1;
                for (size_t i = 0; o->choices[i]; i++)
                        if (strcaseeq(o->choices[i], s))
                                v.e = (int)i;
                if (v.e < 0 && !(reason = dynamic_reason = enum_reason(o, s)))
                        return -ENOMEM;
                break;
        }

        if (reason) {
                value_done(o->type, &v);
                *msg = bad_value(o, s, reason);
                return *msg ? -EINVAL : -ENOMEM;
        }
        *ret = v;
        return 0;
}

/* Writes the row's value into its block. */
static void row_store(const struct conf_row *row) {
        void *p = (char *)row->base + row->opt.offset;
        switch (row->opt.type) {
        case CONF_BOOL:
                *(bool *)p = row->value.b;
                break;
        case CONF_INT:
                *(int64_t *)p = row->value.i;
                break;
        case CONF_RANGE:
                *(struct conf_range *)p = row->value.range;
                break;
        case CONF_STRING:
        case CONF_URI:
                *(char **)p = row->value.str;
                break;
        case CONF_LIST:
        case CONF_URI_LIST:
                *(char ***)p = row->value.list;
                break;
        case CONF_DURATION:
        case CONF_SIZE:
                *(uint64_t *)p = row->value.u;
                break;
        case CONF_ADDRESS:
                *(struct conf_address *)p = row->value.addr;
                break;
        case CONF_ENUM:
                *(int *)p = row->value.e;
                break;
        }
}

/* Replaces the row's value and source (taking both) and updates the block. */
static void row_replace(struct conf_row *row, union conf_value *value, char **source) {
        value_done(row->opt.type, &row->value);
        row->value = *value;
        memset(value, 0, sizeof *value);
        free(row->source);
        row->source = TAKE_PTR(*source);
        row_store(row);
}

/* ---- object ---- */

int conf_new(const char *role, struct conf **ret) {
        struct conf *c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        if (role && !(c->role = strdup(role))) {
                free(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

void conf_free(struct conf *c) {
        if (!c)
                return;
        for (size_t i = 0; i < c->n_rows; i++) {
                value_done(c->rows[i].opt.type, &c->rows[i].value);
                free(c->rows[i].path);
                free(c->rows[i].source);
        }
        free(c->rows);
        for (size_t i = 0; i < c->n_sections; i++) {
                free(c->sections[i].name);
                free(c->sections[i].doc);
        }
        free(c->sections);
        strv_free(c->overrides);
        free(c->path);
        free(c->role);
        free(c);
}

static bool name_valid(const char *s) {
        return !isempty(s) && !s[strcspn(s, "/=[]#;" WHITESPACE)];
}

static int section_add(struct conf *c, const char *name, const char *doc) {
        struct conf_section_entry *e = section_find(c, name);
        if (e) {
                if (!e->doc && doc && !(e->doc = strdup(doc)))
                        return -ENOMEM;
                return 0;
        }
        e = realloc(c->sections, (c->n_sections + 1) * sizeof *e);
        if (!e)
                return -ENOMEM;
        c->sections = e;
        e = &c->sections[c->n_sections];
        *e = (struct conf_section_entry){NULL, NULL};
        if (!(e->name = strdup(name)) || (doc && !(e->doc = strdup(doc)))) {
                free(e->name);
                free(e->doc);
                return -ENOMEM;
        }
        c->n_sections++;
        return 0;
}

int conf_add_sections(struct conf *c, const struct conf_section *sections, size_t n) {
        assert(c);
        for (size_t i = 0; i < n; i++)
                if (!name_valid(sections[i].name))
                        return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                int r = section_add(c, sections[i].name, sections[i].doc);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int row_validate(struct conf *c, const struct conf_option *rows, size_t i) {
        const struct conf_option *o = &rows[i];
        if (!name_valid(o->section) || !name_valid(o->key) || o->type > CONF_ENUM)
                return -EINVAL;
        if (o->type == CONF_ENUM && (!o->choices || !o->choices[0]))
                return -EINVAL;
        if (o->min > o->max)
                return -EINVAL;
        if (row_find(c, o->section, o->key))
                return -EEXIST;
        for (size_t j = 0; j < i; j++)
                if (strcaseeq(rows[j].section, o->section) && strcaseeq(rows[j].key, o->key))
                        return -EEXIST;

        _cleanup_free_ char *msg = NULL;
        union conf_value v;
        int r = value_parse(o, default_text(o), &v, &msg);
        if (r < 0)
                return log_debug_errno(r, "Bad default for [%s] %s: %s", o->section, o->key,
                                       strna(msg));
        value_done(o->type, &v);
        return 0;
}

int conf_add_table(struct conf *c, const struct conf_option *rows, size_t n, void *base) {
        int r;
        assert(c);
        if (n == 0)
                return 0;
        if (!rows || !base)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                r = row_validate(c, rows, i);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < n; i++) {
                r = section_add(c, rows[i].section, NULL);
                if (r < 0)
                        return r;
        }
        struct conf_row *a = realloc(c->rows, (c->n_rows + n) * sizeof *a);
        if (!a)
                return -ENOMEM;
        c->rows = a;
        for (size_t i = 0; i < n; i++) {
                struct conf_row *row = &c->rows[c->n_rows + i];
                *row = (struct conf_row){.opt = rows[i], .base = base};
                row->path = msg_printf("%s/%s", rows[i].section, rows[i].key);
                if (!row->path) {
                        for (size_t j = 0; j < i; j++)
                                free(c->rows[c->n_rows + j].path);
                        return -ENOMEM;
                }
        }
        c->n_rows += n;
        return 0;
}

void conf_set_changed_callback(struct conf *c, conf_changed_fn fn, void *userdata) {
        c->changed = fn;
        c->userdata = userdata;
}

int conf_add_override(struct conf *c, const char *assignment, char **error) {
        _cleanup_free_ char *section = NULL, *key = NULL, *value = NULL;
        int r = assignment ? split_assignment(assignment, &section, &key, &value) : -EINVAL;
        if (r == -EINVAL)
                return fail(error, r, "invalid --set " QUOTE_FMT ": expected section/key=value",
                            QUOTE_ARG(strempty(assignment)));
        if (r < 0)
                return r;
        return strv_extend(&c->overrides, assignment);
}

/* ---- loading ---- */

struct staged {
        union conf_value value;
        char *source;
        unsigned line; /* where the file being read set it; 0: not yet */
};

struct load {
        struct conf *c;
        struct staged *v; /* one per row */
        size_t n;
};

static void load_done(struct load *ld) {
        if (!ld->v)
                return;
        for (size_t i = 0; i < ld->n; i++) {
                value_done(ld->c->rows[i].opt.type, &ld->v[i].value);
                free(ld->v[i].source);
        }
        free(ld->v);
        ld->v = NULL;
}

/* Parses text for row i and, on success, makes it the staged value with this source. */
static int staged_set(struct load *ld, size_t i, const char *text, const char *source,
                      char **msg) {
        union conf_value v;
        int r = value_parse(&ld->c->rows[i].opt, text, &v, msg);
        if (r < 0)
                return r;
        char *s = strdup(source);
        if (!s) {
                value_done(ld->c->rows[i].opt.type, &v);
                return -ENOMEM;
        }
        value_done(ld->c->rows[i].opt.type, &ld->v[i].value);
        ld->v[i].value = v;
        free(ld->v[i].source);
        ld->v[i].source = s;
        return 0;
}

static int parse_line(struct load *ld, const char *path, unsigned line, char *text,
                      const struct conf_section_entry **section, char **error) {
        struct conf *c = ld->c;
        char *s = strip(text);
        _cleanup_free_ char *msg = NULL;
        int r;

        if (!*s || *s == '#' || *s == ';')
                return 0;

        if (*s == '[') {
                size_t n = strlen(s);
                if (s[n - 1] != ']')
                        return fail(error, -EINVAL,
                                    "%s:%u: malformed section header " QUOTE_FMT
                                    ", expected [name]",
                                    path, line, QUOTE_ARG(s));
                s[n - 1] = 0;
                char *name = strip(s + 1);
                if (!*name)
                        return fail(error, -EINVAL, "%s:%u: empty section name", path, line);
                *section = section_find(c, name);
                if (!*section) {
                        msg = unknown_message(c, name, NULL);
                        return fail(error, msg ? -EINVAL : -ENOMEM, "%s:%u: %s", path, line,
                                    strna(msg));
                }
                return 0;
        }

        char *eq = strchr(s, '=');
        if (!eq)
                return fail(error, -EINVAL,
                            "%s:%u: malformed line " QUOTE_FMT
                            ", expected key=value, [section] or a # comment",
                            path, line, QUOTE_ARG(s));
        *eq = 0;
        char *key = strip(s), *value = strip(eq + 1);
        if (!*key)
                return fail(error, -EINVAL, "%s:%u: missing key name before '='", path, line);
        if (!*section)
                return fail(error, -EINVAL,
                            "%s:%u: key '%s' before any [section] line; put it under its section",
                            path, line, key);

        struct conf_row *row = row_find(c, (*section)->name, key);
        if (!row) {
                msg = unknown_message(c, (*section)->name, key);
                return fail(error, msg ? -EINVAL : -ENOMEM, "%s:%u: %s", path, line, strna(msg));
        }
        size_t i = (size_t)(row - c->rows);
        if (ld->v[i].line > 0)
                return fail(error, -EINVAL,
                            "%s:%u: duplicate key '%s' in section [%s], first set at line %u",
                            path, line, row->opt.key, (*section)->name, ld->v[i].line);

        _cleanup_free_ char *source = msg_printf("%s:%u", path, line);
        if (!source)
                return -ENOMEM;
        r = staged_set(ld, i, value, source, &msg);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return fail(error, r, "%s:%u: %s", path, line, strna(msg));
        ld->v[i].line = line;
        return 0;
}

/* Reads one line into buf (CONF_LINE_MAX + 1 bytes). 1: a line, 0: end of file. */
static int next_line(FILE *f, char *buf) {
        size_t n = 0;
        bool nul = false;
        int ch;
        while ((ch = getc(f)) != EOF && ch != '\n') {
                if (n == CONF_LINE_MAX)
                        return -E2BIG;
                nul = nul || ch == 0;
                buf[n++] = (char)ch;
        }
        if (ferror(f))
                return errno > 0 ? -errno : -EIO;
        if (ch == EOF && n == 0)
                return 0;
        buf[n] = 0;
        return nul ? -EBADMSG : 1;
}

static int load_file(struct load *ld, const char *path, char **error) {
        _cleanup_(fclosep) FILE *f = fopen(path, "re");
        if (!f) {
                int r = -errno;
                return fail(error, r, "%s: %s", path, strerror(-r));
        }
        _cleanup_free_ char *buf = malloc(CONF_LINE_MAX + 1);
        if (!buf)
                return -ENOMEM;

        log_debug("Reading '%s'.", path);
        for (size_t i = 0; i < ld->n; i++)
                ld->v[i].line = 0;
        const struct conf_section_entry *section = NULL;
        for (unsigned line = 1;; line++) {
                errno = 0;
                int r = next_line(f, buf);
                if (r == 0)
                        break;
                if (r == -E2BIG)
                        return fail(error, -EINVAL, "%s:%u: line too long (more than %d bytes)",
                                    path, line, CONF_LINE_MAX);
                if (r == -EBADMSG)
                        return fail(error, -EINVAL, "%s:%u: line contains a NUL byte", path,
                                    line);
                if (r < 0)
                        return fail(error, r, "%s: %s", path, strerror(-r));
                r = parse_line(ld, path, line, buf, &section, error);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int dropin_filter(const struct dirent *de) {
        size_t n = strlen(de->d_name);
        return de->d_name[0] != '.' && n > 5 && streq(de->d_name + n - 5, ".conf");
}

static int dropin_compare(const struct dirent **a, const struct dirent **b) {
        return strcmp((*a)->d_name, (*b)->d_name);
}

static int load_dropins(struct load *ld, const char *path, char **error) {
        _cleanup_free_ char *dir = msg_printf("%s.d", path);
        struct dirent **names = NULL;
        int r = 0;
        if (!dir)
                return -ENOMEM;
        int n = scandir(dir, &names, dropin_filter, dropin_compare);
        if (n < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                        return 0;
                r = -errno;
                return fail(error, r, "%s: %s", dir, strerror(-r));
        }
        for (int i = 0; i < n; i++) {
                if (r >= 0) {
                        _cleanup_free_ char *file = msg_printf("%s/%s", dir, names[i]->d_name);
                        struct stat st;
                        if (!file)
                                r = -ENOMEM;
                        else if (stat(file, &st) < 0 || !S_ISREG(st.st_mode))
                                log_debug("Ignoring '%s': not a regular file.", file);
                        else
                                r = load_file(ld, file, error);
                }
                free(names[i]);
        }
        free(names);
        return r;
}

static int load_overrides(struct load *ld, char **error) {
        struct conf *c = ld->c;
        STRV_FOREACH(a, c->overrides) {
                _cleanup_free_ char *section = NULL, *key = NULL, *value = NULL, *msg = NULL;
                int r = split_assignment(*a, &section, &key, &value);
                if (r < 0)
                        return r;
                struct conf_row *row = row_find(c, section, key);
                if (!row) {
                        msg = unknown_message(c, section, key);
                        return fail(error, msg ? -EINVAL : -ENOMEM, "--set %s/%s: %s", section,
                                    key, strna(msg));
                }
                r = staged_set(ld, (size_t)(row - c->rows), value, "--set", &msg);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return fail(error, r, "--set %s/%s: %s", section, key, strna(msg));
        }
        return 0;
}

/* Builds the complete value set in ld: defaults, file, drop-ins, overrides. */
static int load_run(struct load *ld, const char *path, char **error) {
        struct conf *c = ld->c;
        int r;

        ld->n = c->n_rows;
        ld->v = calloc(MAX(ld->n, (size_t)1), sizeof *ld->v);
        if (!ld->v)
                return -ENOMEM;
        for (size_t i = 0; i < ld->n; i++) {
                _cleanup_free_ char *msg = NULL;
                r = staged_set(ld, i, default_text(&c->rows[i].opt), "default", &msg);
                if (r < 0)
                        return fail(error, r, "default: %s", strna(msg));
        }
        if (path) {
                r = load_file(ld, path, error);
                if (r < 0)
                        return r;
                r = load_dropins(ld, path, error);
                if (r < 0)
                        return r;
        }
        return load_overrides(ld, error);
}

int conf_load(struct conf *c, const char *path, char **error) {
        _cleanup_(load_done) struct load ld = {.c = c};
        _cleanup_free_ char *p = NULL;
        assert(c);
        if (path && !(p = strdup(path)))
                return -ENOMEM;
        int r = load_run(&ld, path, error);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ld.n; i++)
                row_replace(&c->rows[i], &ld.v[i].value, &ld.v[i].source);
        free(c->path);
        c->path = TAKE_PTR(p);
        c->loaded = true;
        log_debug("Configuration loaded from %s.", c->path ? c->path : "built-in defaults");
        return 0;
}

int conf_reload(struct conf *c, char **error, char **warnings) {
        _cleanup_(load_done) struct load ld = {.c = c};
        _cleanup_strv_free_ char **warn = NULL;
        _cleanup_free_ char *warn_text = NULL;
        _cleanup_free_ char **changed = NULL;
        size_t n_changed = 0;
        int r;

        assert(c);
        if (warnings)
                *warnings = NULL;
        if (!c->loaded)
                return fail(error, -EINVAL, "nothing to reload: the configuration was never "
                                            "loaded");
        r = load_run(&ld, c->path, error);
        if (r < 0)
                return r;

        changed = calloc(ld.n + 1, sizeof(char *));
        if (!changed)
                return -ENOMEM;
        /* Everything that allocates comes before the first change. */
        for (size_t i = 0; i < ld.n; i++) {
                const struct conf_option *o = &c->rows[i].opt;
                if (value_equal(o->type, &c->rows[i].value, &ld.v[i].value) ||
                    (o->flags & CONF_RELOADABLE))
                        continue;
                _cleanup_free_ char *w =
                        msg_printf("[%s] %s changed; restart to apply", o->section, o->key);
                if (!w || strv_extend(&warn, w) < 0)
                        return -ENOMEM;
        }
        if (warn && !(warn_text = strv_join(warn, "\n")))
                return -ENOMEM;

        for (size_t i = 0; i < ld.n; i++) {
                struct conf_row *row = &c->rows[i];
                if (value_equal(row->opt.type, &row->value, &ld.v[i].value)) {
                        /* Same value: it now comes from where the files say. */
                        free(row->source);
                        row->source = TAKE_PTR(ld.v[i].source);
                } else if (row->opt.flags & CONF_RELOADABLE) {
                        row_replace(row, &ld.v[i].value, &ld.v[i].source);
                        changed[n_changed++] = row->path;
                }
        }
        log_debug("Configuration reloaded: %zu changed, %zu need a restart.", n_changed,
                  strv_length(warn));
        if (warnings)
                *warnings = TAKE_PTR(warn_text);
        if (n_changed > 0 && c->changed)
                c->changed(c, changed, c->userdata);
        return 0;
}

/* ---- run-time access ---- */

int conf_get(struct conf *c, const char *path, char **value) {
        _cleanup_free_ char *section = NULL, *key = NULL;
        int r = split_path(path, &section, &key);
        if (r < 0)
                return r == -EINVAL ? -ENOENT : r;
        struct conf_row *row = row_find(c, section, key);
        if (!row)
                return -ENOENT;
        char *s = row->opt.flags & CONF_SECRET ? strdup("(secret)")
                                                : value_format(&row->opt, &row->value);
        if (!s)
                return -ENOMEM;
        *value = s;
        return 0;
}

int conf_set(struct conf *c, const char *path, const char *value, char **error) {
        _cleanup_free_ char *section = NULL, *key = NULL, *msg = NULL;
        int r = split_path(path, &section, &key);
        if (r == -EINVAL)
                return fail(error, -ENOENT, "'%s' is not a section/key name", strempty(path));
        if (r < 0)
                return r;
        struct conf_row *row = row_find(c, section, key);
        if (!row) {
                msg = unknown_message(c, section, key);
                return fail(error, msg ? -ENOENT : -ENOMEM, "%s", strna(msg));
        }
        const struct conf_option *o = &row->opt;
        if (!(o->flags & CONF_RELOADABLE))
                return fail(error, -EPERM,
                            "[%s] %s cannot be changed at run time; edit the file and restart",
                            o->section, o->key);

        union conf_value v;
        r = value_parse(o, value, &v, &msg);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return fail(error, r, "%s", strna(msg));
        char *source = strdup("control socket");
        if (!source) {
                value_done(o->type, &v);
                return -ENOMEM;
        }
        bool same = value_equal(o->type, &row->value, &v);
        row_replace(row, &v, &source);
        if (!same && c->changed) {
                char *changed[] = {row->path, NULL};
                c->changed(c, changed, c->userdata);
        }
        return 0;
}

bool conf_has_section(struct conf *c, const char *section) {
        return section && section_find(c, section);
}

const struct conf_option *conf_find(struct conf *c, const char *section, const char *key) {
        if (!section || !key)
                return NULL;
        struct conf_row *row = row_find(c, section, key);
        return row ? &row->opt : NULL;
}

const char *conf_suggest_section(struct conf *c, const char *section) {
        struct suggestion s = {.typo = section};
        if (isempty(section))
                return NULL;
        for (size_t i = 0; i < c->n_sections; i++)
                suggestion_consider(&s, c->sections[i].name, c->sections[i].name);
        return s.best;
}

const char *conf_suggest_key(struct conf *c, const char *section, const char *key) {
        struct suggestion s = {.typo = key};
        if (isempty(key))
                return NULL;
        for (size_t i = 0; i < c->n_rows; i++) {
                const struct conf_row *row = &c->rows[i];
                if (!section)
                        suggestion_consider(&s, row->path, row->path);
                else if (strcaseeq(row->opt.section, section))
                        suggestion_consider(&s, row->opt.key, row->opt.key);
        }
        return s.best;
}

/* The default as normalized text (malloc'd). */
static char *default_format(const struct conf_option *o) {
        _cleanup_free_ char *msg = NULL;
        union conf_value v;
        if (value_parse(o, default_text(o), &v, &msg) < 0)
                return strdup(strempty(o->def)); /* refused by conf_add_table already */
        char *s = value_format(o, &v);
        value_done(o->type, &v);
        return s;
}

static int json_add_row(json_t *obj, const struct conf_row *row) {
        const struct conf_option *o = &row->opt;
        bool secret = o->flags & CONF_SECRET;
        _cleanup_free_ char *value = secret ? strdup("(secret)") : value_format(o, &row->value);
        _cleanup_free_ char *def = secret ? strdup(isempty(o->def) ? "" : "(secret)")
                                          : default_format(o);
        if (!value || !def)
                return -ENOMEM;
        json_t *e = json_pack("{s:s, s:s, s:s?, s:b, s:s, s:s}", "value", value, "default", def,
                              "doc", o->doc, "reloadable", (o->flags & CONF_RELOADABLE) != 0,
                              "source", row->source ? row->source : "default", "type",
                              type_info[o->type].name);
        if (!e || json_object_set_new(obj, row->path, e) < 0)
                return -ENOMEM;
        return 0;
}

json_t *conf_list(struct conf *c, const char *section) {
        bool all = !section || strcaseeq(section, "all");
        if (!all && !section_find(c, section))
                return NULL;
        json_t *obj = json_object();
        if (!obj)
                return NULL;
        for (size_t i = 0; i < c->n_rows; i++) {
                if (!all && !strcaseeq(c->rows[i].opt.section, section))
                        continue;
                if (json_add_row(obj, &c->rows[i]) < 0) {
                        json_decref(obj);
                        return NULL;
                }
        }
        return obj;
}

/* Writes text as comment lines, each starting with prefix. */
static void dump_comment(FILE *f, const char *prefix, const char *text) {
        while (text) {
                const char *nl = strchr(text, '\n');
                int n = nl ? (int)(nl - text) : (int)strlen(text);
                fprintf(f, "%s%.*s\n", prefix, n, text);
                text = nl ? nl + 1 : NULL;
        }
}

static int dump_row(FILE *f, const struct conf_option *o) {
        bool secret = o->flags & CONF_SECRET;
        _cleanup_free_ char *def = secret ? strdup("") : default_format(o);
        if (!def)
                return -ENOMEM;

        if (o->doc)
                dump_comment(f, "# ", o->doc);
        if (secret && !isempty(o->def))
                fputs("# Default: (secret)\n", f);
        else
                fprintf(f, "# Default: %s\n", *def ? def : "(empty)");

        switch (o->type) {
        case CONF_INT:
                if (is_bounded(o))
                        fprintf(f, "# Allowed: %" PRId64 "..%" PRId64 "\n", o->min, o->max);
                break;
        case CONF_RANGE:
                if (is_bounded(o))
                        fprintf(f, "# Allowed: n or n-m, within %" PRId64 "..%" PRId64 "\n",
                                o->min, o->max);
                else
                        fputs("# Allowed: n or n-m\n", f);
                break;
        case CONF_DURATION:
                fprintf(f, "# Unit: %s (a bare number is in %s; also %s)\n", unit_name(o->unit),
                        unit_name(o->unit),
                        o->unit == CONF_UNIT_MS  ? "s, min, h, d"
                        : o->unit == CONF_UNIT_S ? "min, h, d"
                                                 : "h, d");
                break;
        case CONF_SIZE:
                fputs("# Unit: bytes (also K, M, G: KiB, MiB, GiB)\n", f);
                break;
        case CONF_ENUM: {
                _cleanup_free_ char *choices = strv_join((char *const *)o->choices, ", ");
                if (!choices)
                        return -ENOMEM;
                fprintf(f, "# Allowed: %s\n", choices);
                break;
        }
        default:
                break;
        }
        fprintf(f, "#%s=%s\n\n", o->key, def);
        return 0;
}

int conf_dump_default(struct conf *c, FILE *f) {
        const char *role = c->role ? c->role : "daemon";
        int r;

        fprintf(f,
                "# Configuration of sipfleet-%s.\n"
                "#\n"
                "# Every key is listed commented out, with its documentation and default value;\n"
                "# remove the '#' in front of a key to change it. Drop-ins: files named *.conf\n"
                "# in the directory <this file>.d are read afterwards, in name order, and win.\n"
                "\n",
                role);
        for (size_t s = 0; s < c->n_sections; s++) {
                const struct conf_section_entry *sec = &c->sections[s];
                if (sec->doc)
                        dump_comment(f, "## ", sec->doc);
                else
                        fprintf(f, "## [%s]\n", sec->name);
                fprintf(f, "[%s]\n\n", sec->name);
                for (size_t i = 0; i < c->n_rows; i++) {
                        if (!strcaseeq(c->rows[i].opt.section, sec->name))
                                continue;
                        r = dump_row(f, &c->rows[i].opt);
                        if (r < 0)
                                return r;
                }
        }
        if (fflush(f) != 0 || ferror(f))
                return errno > 0 ? -errno : -EIO;
        return 0;
}
