/* SPDX-License-Identifier: MIT */
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "conf.h"
#include "macro.h"
#include "testlib.h"

struct test_config {
        bool enabled;
        int64_t port;
        struct conf_range ports;
        char *name;
        char **aliases;
        uint64_t idle_timeout_ms;
        uint64_t interval_ms;
        uint64_t period_ms;
        uint64_t max_size;
        char *outbound;
        char **transports;
        struct conf_address listen;
        int level;
        char *password;
};

struct router_config {
        bool fork;
        int64_t max_branches;
};

static const char *const levels[] = {"error", "warning", "notice", "info", "debug", NULL};

#define T(f) offsetof(struct test_config, f)
#define R(f) offsetof(struct router_config, f)

static const struct conf_option global_rows[] = {
        {.section = "global", .key = "enabled", .type = CONF_BOOL, .offset = T(enabled),
         .def = "true", .flags = CONF_RELOADABLE, .doc = "Whether the daemon does anything"},
        {.section = "global", .key = "port", .type = CONF_INT, .offset = T(port), .def = "5060",
         .min = 1, .max = 65535, .flags = CONF_RELOADABLE, .doc = "A port"},
        {.section = "global", .key = "ports", .type = CONF_RANGE, .offset = T(ports),
         .def = "10000-20000", .min = 1024, .max = 65535, .doc = "RTP ports"},
        {.section = "global", .key = "name", .type = CONF_STRING, .offset = T(name),
         .flags = CONF_RELOADABLE, .doc = "A name"},
        {.section = "global", .key = "aliases", .type = CONF_LIST, .offset = T(aliases),
         .def = "a.example b.example", .flags = CONF_RELOADABLE, .doc = "Other names"},
        {.section = "global", .key = "idle-timeout", .type = CONF_DURATION,
         .offset = T(idle_timeout_ms), .def = "3600s",
         .doc = "Close idle connections after this long", .unit = CONF_UNIT_S},
        {.section = "global", .key = "interval", .type = CONF_DURATION, .offset = T(interval_ms),
         .def = "500ms", .flags = CONF_RELOADABLE, .doc = "Polling interval",
         .unit = CONF_UNIT_MS},
        {.section = "global", .key = "period", .type = CONF_DURATION, .offset = T(period_ms),
         .def = "5", .flags = CONF_RELOADABLE, .doc = "Cleanup period", .unit = CONF_UNIT_MIN},
        {.section = "global", .key = "max-size", .type = CONF_SIZE, .offset = T(max_size),
         .def = "4MiB", .flags = CONF_RELOADABLE, .doc = "Largest accepted body"},
        {.section = "global", .key = "outbound", .type = CONF_URI, .offset = T(outbound),
         .flags = CONF_RELOADABLE, .doc = "Outbound proxy"},
        {.section = "global", .key = "transports", .type = CONF_URI_LIST,
         .offset = T(transports), .def = "sip:*:5060", .doc = "SIP URIs to listen on"},
        {.section = "global", .key = "listen", .type = CONF_ADDRESS, .offset = T(listen),
         .def = "127.0.0.1:9090", .doc = "Metrics address"},
        {.section = "global", .key = "log-level", .type = CONF_ENUM, .offset = T(level),
         .def = "notice", .flags = CONF_RELOADABLE, .doc = "Log level", .choices = levels},
        {.section = "global", .key = "password", .type = CONF_STRING, .offset = T(password),
         .flags = CONF_RELOADABLE | CONF_SECRET, .doc = "Shared secret"},
};

static const struct conf_option router_rows[] = {
        {.section = "module::Router", .key = "fork", .type = CONF_BOOL, .offset = R(fork),
         .def = "false", .flags = CONF_RELOADABLE, .doc = "Fork requests to every contact"},
        {.section = "module::Router", .key = "max-branches", .type = CONF_INT,
         .offset = R(max_branches), .def = "10", .min = 1, .max = 100, .flags = CONF_RELOADABLE,
         .doc = "Most branches per request"},
};

static const struct conf_section sections[] = {
        {"global", "Settings of the test daemon."},
        {"module::Router", "Routing of requests."},
};

static struct conf *conf;
static struct test_config cfg;
static struct router_config router;
static unsigned changed_calls;
static char *changed_keys; /* the last callback's keys, space-joined */

static void on_changed(struct conf *c, char *const *changed, void *userdata) {
        ck_assert_ptr_eq(c, conf);
        ck_assert_ptr_eq(userdata, &cfg);
        changed_calls++;
        free(changed_keys);
        changed_keys = strv_join(changed, " ");
        ck_assert_ptr_nonnull(changed_keys);
}

static void setup(void) {
        memset(&cfg, 0, sizeof cfg);
        memset(&router, 0, sizeof router);
        changed_calls = 0;
        changed_keys = NULL;
        ck_assert_int_eq(conf_new("test", &conf), 0);
        ck_assert_int_eq(conf_add_sections(conf, sections, ELEMENTSOF(sections)), 0);
        ck_assert_int_eq(conf_add_table(conf, global_rows, ELEMENTSOF(global_rows), &cfg), 0);
        ck_assert_int_eq(conf_add_table(conf, router_rows, ELEMENTSOF(router_rows), &router), 0);
        conf_set_changed_callback(conf, on_changed, &cfg);
}

static void teardown(void) {
        conf_free(conf);
        conf = NULL;
        free(changed_keys);
        changed_keys = NULL;
}

/* Writes text to a fresh file; returns its path (caller frees). */
static char *write_conf(const char *text) {
        static unsigned n;
        char name[32];
        snprintf(name, sizeof name, "test-%u.conf", n++);
        return tl_write_file(name, text);
}

static void write_file(const char *path, const char *text) {
        FILE *f = fopen(path, "we");
        ck_assert_ptr_nonnull(f);
        fputs(text, f);
        ck_assert_int_eq(fclose(f), 0);
}

/* Loads text as a file; returns conf_load's result. *path (if given) receives the file. */
static int load_text(const char *text, char **error, char **path) {
        _cleanup_free_ char *p = write_conf(text);
        int r = conf_load(conf, p, error);
        if (path)
                *path = TAKE_PTR(p);
        return r;
}

static void load_ok(const char *text) {
        _cleanup_free_ char *error = NULL;
        int r = load_text(text, &error, NULL);
        ck_assert_msg(r == 0, "load failed (%d): %s", r, strna(error));
}

/* Loading text fails and the message contains want. */
static void load_fails(const char *text, const char *want) {
        _cleanup_free_ char *error = NULL;
        int r = load_text(text, &error, NULL);
        ck_assert_msg(r < 0, "load of '%s' succeeded, expected '%s'", text, want);
        ck_assert_ptr_nonnull(error);
        ck_assert_msg(strstr(error, want), "error '%s' does not contain '%s'", error, want);
}

/* Loading text fails with exactly "<file>:<line>: want". */
static void load_fails_exactly(const char *text, unsigned line, const char *want) {
        _cleanup_free_ char *error = NULL, *path = NULL, *expected = NULL;
        ck_assert_int_lt(load_text(text, &error, &path), 0);
        ck_assert_int_ge(asprintf(&expected, "%s:%u: %s", path, line, want), 0);
        ck_assert_ptr_nonnull(error);
        ck_assert_str_eq(error, expected);
}

static void assert_get(const char *key, const char *want) {
        _cleanup_free_ char *value = NULL;
        ck_assert_int_eq(conf_get(conf, key, &value), 0);
        ck_assert_str_eq(value, want);
}

/* ---- types ---- */

START_TEST(test_conf_bool) {
        static const struct {
                const char *text;
                bool value;
        } cases[] = {
                {"true", true}, {"yes", true},   {"on", true},  {"1", true},   {"TRUE", true},
                {"false", false}, {"no", false}, {"off", false}, {"0", false}, {"Off", false},
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                bool b = !cases[i].value;
                ck_assert_int_eq(conf_parse_bool(cases[i].text, &b), 0);
                ck_assert_int_eq(b, cases[i].value);
        }
        bool b;
        ck_assert_int_eq(conf_parse_bool("maybe", &b), -EINVAL);
        ck_assert_int_eq(conf_parse_bool("", &b), -EINVAL);

        load_ok("[global]\nenabled = no\n");
        ck_assert(!cfg.enabled);
        assert_get("global/enabled", "false");
        load_ok("[global]\nenabled=On\n");
        ck_assert(cfg.enabled);
        assert_get("global/enabled", "true");
        load_fails("[global]\nenabled=maybe\n", "invalid boolean 'maybe' for [global] enabled");
        load_fails("[global]\nenabled=\n", "empty value for [global] enabled");
}
END_TEST

START_TEST(test_conf_int) {
        int64_t v;
        ck_assert_int_eq(conf_parse_int("-12", &v), 0);
        ck_assert_int_eq(v, -12);
        ck_assert_int_eq(conf_parse_int("+7", &v), 0);
        ck_assert_int_eq(v, 7);
        ck_assert_int_eq(conf_parse_int("9223372036854775807", &v), 0);
        ck_assert(v == INT64_MAX);
        ck_assert_int_eq(conf_parse_int("-9223372036854775808", &v), 0);
        ck_assert(v == INT64_MIN);
        ck_assert_int_eq(conf_parse_int("9223372036854775808", &v), -ERANGE);
        ck_assert_int_eq(conf_parse_int("12x", &v), -EINVAL);
        ck_assert_int_eq(conf_parse_int(" 1", &v), -EINVAL);
        ck_assert_int_eq(conf_parse_int("", &v), -EINVAL);
        ck_assert_int_eq(conf_parse_int("0x10", &v), -EINVAL);

        load_ok("[global]\nport=8080\n[module::Router]\nmax-branches=100\n");
        ck_assert_int_eq(cfg.port, 8080);
        ck_assert_int_eq(router.max_branches, 100);
        assert_get("global/port", "8080");
        load_fails_exactly("[global]\nport=70000\n", 2,
                           "invalid integer '70000' for [global] port: out of range, allowed "
                           "1..65535");
        load_fails("[global]\nport=0\n", "out of range");
        load_fails("[module::Router]\nmax-branches=101\n", "out of range, allowed 1..100");
        load_fails("[global]\nport=abc\n", "invalid integer 'abc' for [global] port");
        load_fails("[global]\nport=99999999999999999999\n", "number too large");
}
END_TEST

START_TEST(test_conf_range) {
        load_ok("[global]\nports=2000\n");
        ck_assert_int_eq(cfg.ports.min, 2000);
        ck_assert_int_eq(cfg.ports.max, 2000);
        assert_get("global/ports", "2000");
        load_ok("[global]\nports = 3000 - 4000\n");
        ck_assert_int_eq(cfg.ports.min, 3000);
        ck_assert_int_eq(cfg.ports.max, 4000);
        assert_get("global/ports", "3000-4000");
        load_ok("[global]\nports=1024-65535\n");
        ck_assert_int_eq(cfg.ports.max, 65535);

        load_fails("[global]\nports=4000-3000\n", "reversed range");
        load_fails("[global]\nports=100-2000\n", "out of range, allowed 1024..65535");
        load_fails("[global]\nports=2000-70000\n", "out of range");
        load_fails("[global]\nports=1-2-3\n", "invalid range '1-2-3' for [global] ports");
        load_fails("[global]\nports=a-b\n", "expected a number n or a range n-m");
}
END_TEST

START_TEST(test_conf_string) {
        load_ok("[global]\nname =   hello  world  \n");
        ck_assert_str_eq(cfg.name, "hello  world");
        load_ok("[global]\nname=a=b # not a comment\n");
        ck_assert_str_eq(cfg.name, "a=b # not a comment");
        load_ok("[global]\nname=\n");
        ck_assert_ptr_null(cfg.name);
        assert_get("global/name", "");
}
END_TEST

START_TEST(test_conf_list) {
        load_ok("[global]\naliases = x.example  y.example\tz.example\n");
        ck_assert_int_eq(strv_length(cfg.aliases), 3);
        ck_assert_str_eq(cfg.aliases[0], "x.example");
        ck_assert_str_eq(cfg.aliases[1], "y.example");
        ck_assert_str_eq(cfg.aliases[2], "z.example");
        assert_get("global/aliases", "x.example y.example z.example");

        load_ok("[global]\naliases=\n");
        ck_assert_ptr_nonnull(cfg.aliases);
        ck_assert_int_eq(strv_length(cfg.aliases), 0);
        assert_get("global/aliases", "");
}
END_TEST

START_TEST(test_conf_duration) {
        static const struct {
                const char *text;
                enum conf_unit unit;
                uint64_t ms;
        } good[] = {
                {"90", CONF_UNIT_S, 90000},        {"250", CONF_UNIT_MS, 250},
                {"2", CONF_UNIT_MIN, 120000},      {"1500ms", CONF_UNIT_MS, 1500},
                {"2000ms", CONF_UNIT_S, 2000},     {"45s", CONF_UNIT_S, 45000},
                {"5min", CONF_UNIT_S, 300000},     {"2h", CONF_UNIT_S, 7200000},
                {"1d", CONF_UNIT_MIN, 86400000},   {"1h 30min", CONF_UNIT_S, 5400000},
                {"1h30min", CONF_UNIT_MIN, 5400000}, {"0", CONF_UNIT_S, 0},
                {"10 S", CONF_UNIT_S, 10000},
        };
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                uint64_t ms = 1;
                ck_assert_msg(conf_parse_duration(good[i].text, good[i].unit, &ms) == 0,
                              "'%s' refused", good[i].text);
                ck_assert_msg(ms == good[i].ms, "'%s' gave %llu", good[i].text,
                              (unsigned long long)ms);
        }
        static const char *const bad[] = {"", "abc", "10x", "1.5s", "-5s", "5s 10", "s",
                                          "99999999999999999999d"};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                uint64_t ms;
                ck_assert_msg(conf_parse_duration(bad[i], CONF_UNIT_MS, &ms) < 0,
                              "'%s' accepted", bad[i]);
        }
        uint64_t ms;
        ck_assert_int_eq(conf_parse_duration("500ms", CONF_UNIT_S, &ms), -EINVAL);
        ck_assert_int_eq(conf_parse_duration("90s", CONF_UNIT_MIN, &ms), -EINVAL);

        load_ok("[global]\nidle-timeout=90\ninterval=250\nperiod=2\n");
        ck_assert_uint_eq(cfg.idle_timeout_ms, 90000);
        ck_assert_uint_eq(cfg.interval_ms, 250);
        ck_assert_uint_eq(cfg.period_ms, 120000);
        assert_get("global/idle-timeout", "90s");
        assert_get("global/interval", "250ms");
        assert_get("global/period", "2min");

        load_ok("[global]\nidle-timeout=300s\ninterval=1500ms\nperiod=1h30min\n");
        assert_get("global/idle-timeout", "5min");
        assert_get("global/interval", "1500ms");
        assert_get("global/period", "90min");
        load_ok("[global]\nidle-timeout=2d\ninterval=3s\nperiod=0\n");
        assert_get("global/idle-timeout", "2d");
        assert_get("global/interval", "3s");
        assert_get("global/period", "0");

        load_fails_exactly("[global]\nidle-timeout=500ms\n", 2,
                           "invalid duration '500ms' for [global] idle-timeout: finer than the "
                           "unit of this key (s): give whole seconds");
        load_fails("[global]\nperiod=30s\n", "finer than the unit of this key (min)");
        load_fails("[global]\nidle-timeout=abc\n",
                   "invalid duration 'abc' for [global] idle-timeout: ");
        load_fails("[global]\nidle-timeout=10x\n", "unknown unit; use ms, s, min, h or d");
        load_fails("[global]\nidle-timeout=1.5h\n", "fractions are not supported");
}
END_TEST

START_TEST(test_conf_size) {
        static const struct {
                const char *text;
                uint64_t bytes;
        } good[] = {
                {"512", 512},           {"512B", 512},        {"4K", 4096},
                {"4KB", 4096},          {"4KiB", 4096},       {"4kib", 4096},
                {"2M", 2 << 20},        {"2MB", 2 << 20},     {"2MiB", 2 << 20},
                {"3 MiB", 3 << 20},     {"1G", 1 << 30},      {"1GB", 1 << 30},
                {"1GiB", 1 << 30},      {"0", 0},
        };
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                uint64_t v = 1;
                ck_assert_msg(conf_parse_size(good[i].text, &v) == 0, "'%s' refused",
                              good[i].text);
                ck_assert_msg(v == good[i].bytes, "'%s' gave %llu", good[i].text,
                              (unsigned long long)v);
        }
        uint64_t v;
        ck_assert_int_eq(conf_parse_size("10X", &v), -EINVAL);
        ck_assert_int_eq(conf_parse_size("K", &v), -EINVAL);
        ck_assert_int_eq(conf_parse_size("-1", &v), -EINVAL);
        ck_assert_int_eq(conf_parse_size("99999999999G", &v), -ERANGE);

        load_ok("[global]\nmax-size=8M\n");
        ck_assert_uint_eq(cfg.max_size, 8 << 20);
        assert_get("global/max-size", "8MiB");
        load_ok("[global]\nmax-size=1536\n");
        assert_get("global/max-size", "1536B");
        load_ok("[global]\nmax-size=2048K\n");
        assert_get("global/max-size", "2MiB");
        load_fails("[global]\nmax-size=10X\n", "invalid size '10X' for [global] max-size: ");
}
END_TEST

START_TEST(test_conf_uri) {
        ck_assert(conf_uri_valid("sip:proxy.example.com"));
        ck_assert(conf_uri_valid("sip:*:5060"));
        ck_assert(conf_uri_valid("sips:[::1]:5061;transport=tcp"));
        ck_assert(conf_uri_valid("sip:alice@192.0.2.1:5070;transport=udp"));
        ck_assert(conf_uri_valid("SIP:Proxy.Example.com"));
        ck_assert(!conf_uri_valid("http://example.com"));
        ck_assert(!conf_uri_valid("tel:+123456"));
        ck_assert(!conf_uri_valid("example.com"));
        ck_assert(!conf_uri_valid("sip:"));
        ck_assert(!conf_uri_valid("sip:host:99999"));
        ck_assert(!conf_uri_valid("sip:host:abc"));
        ck_assert(!conf_uri_valid("sip:bad host"));
        ck_assert(!conf_uri_valid("sip:-bad-"));
        ck_assert(!conf_uri_valid(""));

        load_ok("[global]\noutbound=sip:proxy.example.com:5070;transport=tcp\n"
                "transports=sip:*:5060 sips:[::1]:5061\n");
        ck_assert_str_eq(cfg.outbound, "sip:proxy.example.com:5070;transport=tcp");
        ck_assert_int_eq(strv_length(cfg.transports), 2);
        ck_assert_str_eq(cfg.transports[1], "sips:[::1]:5061");
        assert_get("global/transports", "sip:*:5060 sips:[::1]:5061");

        load_fails("[global]\noutbound=http://example.com\n",
                   "invalid SIP URI 'http://example.com' for [global] outbound: only sip: and "
                   "sips: URIs are accepted");
        load_fails("[global]\noutbound=sip:\n", "invalid SIP URI 'sip:' for [global] outbound");
        load_fails("[global]\ntransports=sip:ok.example tel:+1\n",
                   "invalid SIP URI 'tel:+1' for [global] transports");
        load_ok("[global]\noutbound=\n");
        ck_assert_ptr_null(cfg.outbound);
}
END_TEST

START_TEST(test_conf_address) {
        struct conf_address a;
        ck_assert_int_eq(conf_parse_address("127.0.0.1:5060", &a), 0);
        ck_assert_int_eq(a.sa.ss_family, AF_INET);
        ck_assert_int_eq(a.len, sizeof(struct sockaddr_in));
        ck_assert_int_eq(ntohs(((struct sockaddr_in *)&a.sa)->sin_port), 5060);
        ck_assert_uint_eq(ntohl(((struct sockaddr_in *)&a.sa)->sin_addr.s_addr), 0x7f000001);
        ck_assert_str_eq(a.str, "127.0.0.1:5060");
        conf_address_done(&a);
        ck_assert_ptr_null(a.str);

        ck_assert_int_eq(conf_parse_address("[::1]:5061", &a), 0);
        ck_assert_int_eq(a.sa.ss_family, AF_INET6);
        ck_assert_int_eq(a.len, sizeof(struct sockaddr_in6));
        ck_assert_int_eq(ntohs(((struct sockaddr_in6 *)&a.sa)->sin6_port), 5061);
        ck_assert(IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&a.sa)->sin6_addr));
        conf_address_done(&a);

        ck_assert_int_eq(conf_parse_address("/run/sipfleet/test.sock", &a), 0);
        ck_assert_int_eq(a.sa.ss_family, AF_UNIX);
        ck_assert_str_eq(((struct sockaddr_un *)&a.sa)->sun_path, "/run/sipfleet/test.sock");
        conf_address_done(&a);

        static const char *const bad[] = {"localhost:80", "::1:5060", "127.0.0.1",
                                          "1.2.3.4:99999", "[::1]", "[::1:5060", "[1.2.3.4]:5",
                                          ":5060", "1.2.3.4:", "1.2.3.4:x", ""};
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                ck_assert_msg(conf_parse_address(bad[i], &a) == -EINVAL, "'%s' accepted",
                              bad[i]);

        load_ok("[global]\nlisten=[::1]:9191\n");
        ck_assert_int_eq(cfg.listen.sa.ss_family, AF_INET6);
        ck_assert_str_eq(cfg.listen.str, "[::1]:9191");
        assert_get("global/listen", "[::1]:9191");
        load_ok("[global]\nlisten=\n");
        ck_assert_int_eq(cfg.listen.len, 0);
        ck_assert_ptr_null(cfg.listen.str);

        load_fails("[global]\nlisten=localhost:80\n",
                   "invalid address 'localhost:80' for [global] listen: not a numeric IPv4 "
                   "address");
        load_fails("[global]\nlisten=::1:80\n", "IPv6 addresses need brackets");
        load_fails("[global]\nlisten=127.0.0.1\n", "missing port");
        load_fails("[global]\nlisten=127.0.0.1:99999\n", "invalid port");
}
END_TEST

START_TEST(test_conf_enum) {
        load_ok("[global]\nlog-level=INFO\n");
        ck_assert_int_eq(cfg.level, 3);
        assert_get("global/log-level", "info");
        load_ok("[global]\nlog-level=error\n");
        ck_assert_int_eq(cfg.level, 0);
        load_fails("[global]\nlog-level=debg\n",
                   "invalid value 'debg' for [global] log-level: expected one of error, "
                   "warning, notice, info, debug; did you mean 'debug'?");
        _cleanup_free_ char *error = NULL;
        ck_assert_int_lt(load_text("[global]\nlog-level=xyzzy\n", &error, NULL), 0);
        ck_assert_ptr_nonnull(strstr(error, "expected one of"));
        ck_assert_ptr_null(strstr(error, "did you mean"));
}
END_TEST

/* ---- file format and errors ---- */

START_TEST(test_conf_unknown_section) {
        load_fails_exactly("# test\n\n[glbal]\nport=1\n", 3,
                           "unknown section [glbal], did you mean [global]?");
        load_fails_exactly("[module::Ruoter]\n", 1,
                           "unknown section [module::Ruoter], did you mean [module::Router]?");
        load_fails_exactly("[zzz]\n", 1, "unknown section [zzz]");
}
END_TEST

START_TEST(test_conf_unknown_key) {
        load_fails_exactly("# comment\n[global]\ntrnasports=sip:*:5060\n", 3,
                           "unknown key 'trnasports' in section [global], did you mean "
                           "'transports'?");
        load_fails_exactly("[global]\nport=1\n\n[module::Router]\nmax-branch=3\n", 5,
                           "unknown key 'max-branch' in section [module::Router], did you mean "
                           "'max-branches'?");
        load_fails_exactly("[global]\ncompletely-unrelated=1\n", 2,
                           "unknown key 'completely-unrelated' in section [global]");
        load_fails_exactly("[module::Router]\nidle-timeout=5\n", 2,
                           "unknown key 'idle-timeout' in section [module::Router]; it belongs "
                           "in section [global]");
}
END_TEST

START_TEST(test_conf_duplicate_key) {
        load_fails_exactly("[global]\nport=1\n\nport=2\n", 4,
                           "duplicate key 'port' in section [global], first set at line 2");
        load_fails_exactly("[global]\nport=1\n[module::Router]\nfork=yes\n[global]\nPORT=2\n",
                           6, "duplicate key 'port' in section [global], first set at line 2");
        /* The same key in two sections is not a duplicate. */
        load_ok("[global]\nenabled=no\n[module::Router]\nfork=yes\n");
}
END_TEST

START_TEST(test_conf_key_before_section) {
        load_fails_exactly("# header\nport=1\n[global]\n", 2,
                           "key 'port' before any [section] line; put it under its section");
}
END_TEST

START_TEST(test_conf_malformed_line) {
        load_fails_exactly("[global]\njunk\n", 2,
                           "malformed line 'junk', expected key=value, [section] or a # comment");
        load_fails_exactly("[global\n", 1,
                           "malformed section header '[global', expected [name]");
        load_fails_exactly("[global]\n = 5\n", 2, "missing key name before '='");
        load_fails_exactly("[ ]\n", 1, "empty section name");
}
END_TEST

START_TEST(test_conf_comments_and_case) {
        load_ok("# a comment\n"
                "; another comment\n"
                "\n"
                "   [ GLOBAL ]   \n"
                "\t# indented comment\n"
                "  Port   =   4242  \n"
                "[Module::router]\n"
                "FORK=yes\n");
        ck_assert_int_eq(cfg.port, 4242);
        ck_assert(router.fork);
}
END_TEST

START_TEST(test_conf_crlf) {
        load_ok("[global]\r\nport=7000\r\nname=crlf\r\n\r\n# comment\r\n[module::Router]\r\n"
                "fork=true\r\n");
        ck_assert_int_eq(cfg.port, 7000);
        ck_assert_str_eq(cfg.name, "crlf");
        ck_assert(router.fork);
}
END_TEST

START_TEST(test_conf_long_line) {
        /* A long value is fine... */
        size_t n = 10 * 1024;
        _cleanup_free_ char *text = malloc(n + 64);
        ck_assert_ptr_nonnull(text);
        char *p = stpcpy(text, "[global]\nname=");
        memset(p, 'x', n);
        strcpy(p + n, "\n");
        load_ok(text);
        ck_assert_uint_eq(strlen(cfg.name), n);

        /* ...a line over the limit is refused with its line number. */
        n = 30 * 1024;
        free(text);
        text = malloc(n + 64);
        ck_assert_ptr_nonnull(text);
        p = stpcpy(text, "[global]\nname=");
        memset(p, 'y', n);
        strcpy(p + n, "\nport=1\n");
        load_fails_exactly(text, 2, "line too long (more than 20480 bytes)");
        ck_assert_uint_eq(strlen(cfg.name), 10 * 1024);
}
END_TEST

START_TEST(test_conf_missing_file) {
        _cleanup_free_ char *path = tl_path("does-not-exist.conf"), *error = NULL;
        ck_assert_int_eq(conf_load(conf, path, &error), -ENOENT);
        ck_assert_ptr_nonnull(error);
        ck_assert_ptr_nonnull(strstr(error, path));
}
END_TEST

START_TEST(test_conf_failed_load_changes_nothing) {
        load_ok("[global]\nport=1111\nname=first\n");
        /* The error is on the last line: everything before it must not leak through. */
        load_fails("[global]\nport=2222\nname=second\nenabled=maybe\n", "invalid boolean");
        ck_assert_int_eq(cfg.port, 1111);
        ck_assert_str_eq(cfg.name, "first");
        assert_get("global/port", "1111");
}
END_TEST

/* ---- sources: defaults, drop-ins, overrides ---- */

START_TEST(test_conf_defaults) {
        _cleanup_free_ char *error = NULL;
        ck_assert_int_eq(conf_load(conf, NULL, &error), 0);
        ck_assert_ptr_null(error);
        ck_assert(cfg.enabled);
        ck_assert_int_eq(cfg.port, 5060);
        ck_assert_int_eq(cfg.ports.min, 10000);
        ck_assert_int_eq(cfg.ports.max, 20000);
        ck_assert_ptr_null(cfg.name);
        ck_assert_int_eq(strv_length(cfg.aliases), 2);
        ck_assert_str_eq(cfg.aliases[1], "b.example");
        ck_assert_uint_eq(cfg.idle_timeout_ms, 3600000);
        ck_assert_uint_eq(cfg.interval_ms, 500);
        ck_assert_uint_eq(cfg.period_ms, 300000);
        ck_assert_uint_eq(cfg.max_size, 4 << 20);
        ck_assert_ptr_null(cfg.outbound);
        ck_assert_int_eq(strv_length(cfg.transports), 1);
        ck_assert_str_eq(cfg.transports[0], "sip:*:5060");
        ck_assert_int_eq(cfg.listen.sa.ss_family, AF_INET);
        ck_assert_int_eq(cfg.level, 2);
        ck_assert_ptr_null(cfg.password);
        ck_assert(!router.fork);
        ck_assert_int_eq(router.max_branches, 10);
        assert_get("global/idle-timeout", "1h");
        assert_get("global/max-size", "4MiB");
}
END_TEST

START_TEST(test_conf_dropins) {
        _cleanup_free_ char *path = write_conf("[global]\nport=1000\nname=main\nenabled=no\n");
        _cleanup_free_ char *dir = NULL, *a = NULL, *b = NULL, *txt = NULL, *hidden = NULL;
        _cleanup_free_ char *error = NULL, *source = NULL;

        ck_assert_int_ge(asprintf(&dir, "%s.d", path), 0);
        ck_assert_int_eq(mkdir(dir, 0755), 0);
        ck_assert_int_ge(asprintf(&b, "%s/20-b.conf", dir), 0);
        ck_assert_int_ge(asprintf(&a, "%s/10-a.conf", dir), 0);
        ck_assert_int_ge(asprintf(&txt, "%s/30-c.txt", dir), 0);
        ck_assert_int_ge(asprintf(&hidden, "%s/.40-d.conf", dir), 0);
        /* Written out of order: name order decides. */
        write_file(b, "# b\n[global]\nport=3000\n");
        write_file(a, "[global]\nport=2000\nname=from-a\n[module::Router]\nfork=yes\n");
        write_file(txt, "[global]\nport=9\n");
        write_file(hidden, "[global]\nport=8\n");

        ck_assert_int_eq(conf_load(conf, path, &error), 0);
        ck_assert_int_eq(cfg.port, 3000);
        ck_assert_str_eq(cfg.name, "from-a");
        ck_assert(!cfg.enabled);
        ck_assert(router.fork);

        json_t *list = conf_list(conf, "global");
        ck_assert_ptr_nonnull(list);
        ck_assert_int_ge(asprintf(&source, "%s:3", b), 0);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(list, "global/port"),
                                                           "source")),
                         source);
        free(source);
        ck_assert_int_ge(asprintf(&source, "%s:4", path), 0);
        ck_assert_str_eq(json_string_value(json_object_get(
                                 json_object_get(list, "global/enabled"), "source")),
                         source);
        json_decref(list);

        /* An error in a drop-in names the drop-in and its line. */
        write_file(b, "[global]\nport=3000\nprot=1\n");
        ck_assert_int_lt(conf_load(conf, path, &error), 0);
        free(source);
        ck_assert_int_ge(asprintf(&source, "%s:3: unknown key 'prot' in section [global], did "
                                           "you mean 'port'?",
                                  b),
                         0);
        ck_assert_str_eq(error, source);
        ck_assert_int_eq(cfg.port, 3000);
}
END_TEST

START_TEST(test_conf_override) {
        _cleanup_free_ char *error = NULL;
        ck_assert_int_eq(conf_add_override(conf, "global/port=4000", &error), 0);
        ck_assert_int_eq(conf_add_override(conf, "global/name = spaced value ", &error), 0);
        ck_assert_int_eq(conf_add_override(conf, "module::Router/max-branches=5", &error), 0);
        ck_assert_int_eq(conf_add_override(conf, "module::Router/max-branches=6", &error), 0);
        ck_assert_ptr_null(error);
        load_ok("[global]\nport=1000\nname=file\n");
        ck_assert_int_eq(cfg.port, 4000);
        ck_assert_str_eq(cfg.name, "spaced value");
        ck_assert_int_eq(router.max_branches, 6);

        json_t *list = conf_list(conf, NULL);
        ck_assert_ptr_nonnull(list);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(list, "global/port"),
                                                           "source")),
                         "--set");
        json_decref(list);

        /* Overrides apply with no file too. */
        ck_assert_int_eq(conf_load(conf, NULL, &error), 0);
        ck_assert_int_eq(cfg.port, 4000);
}
END_TEST

START_TEST(test_conf_override_bad) {
        _cleanup_free_ char *error = NULL;
        ck_assert_int_eq(conf_add_override(conf, "nonsense", &error), -EINVAL);
        ck_assert_str_eq(error, "invalid --set 'nonsense': expected section/key=value");
        free(error);
        error = NULL;
        ck_assert_int_eq(conf_add_override(conf, "port=5", &error), -EINVAL);
        ck_assert_ptr_nonnull(error);
        free(error);
        error = NULL;

        ck_assert_int_eq(conf_add_override(conf, "global/trnasports=sip:*:5070", &error), 0);
        ck_assert_int_lt(conf_load(conf, NULL, &error), 0);
        ck_assert_str_eq(error, "--set global/trnasports: unknown key 'trnasports' in section "
                                "[global], did you mean 'transports'?");
        ck_assert_ptr_null(cfg.transports); /* nothing was stored */
}
END_TEST

START_TEST(test_conf_override_bad_value) {
        _cleanup_free_ char *error = NULL;
        ck_assert_int_eq(conf_add_override(conf, "glbal/port=5", &error), 0);
        ck_assert_int_lt(conf_load(conf, NULL, &error), 0);
        ck_assert_str_eq(error, "--set glbal/port: unknown section [glbal], did you mean "
                                "[global]?");
        conf_free(conf);
        setup();
        free(error);
        error = NULL;
        ck_assert_int_eq(conf_add_override(conf, "global/port=abc", &error), 0);
        ck_assert_int_lt(conf_load(conf, NULL, &error), 0);
        ck_assert_str_eq(error, "--set global/port: invalid integer 'abc' for [global] port: "
                                "expected a whole number");
}
END_TEST


/* ---- reload ---- */

START_TEST(test_conf_reload_applies_reloadable) {
        _cleanup_free_ char *path = write_conf("[global]\nport=1000\nidle-timeout=60\n");
        _cleanup_free_ char *error = NULL, *warnings = NULL;
        ck_assert_int_eq(conf_load(conf, path, &error), 0);
        ck_assert_int_eq(changed_calls, 0);

        write_file(path, "[global]\nport=2000\nidle-timeout=120\ntransports=sip:*:5070\n"
                         "log-level=debug\n");
        ck_assert_int_eq(conf_reload(conf, &error, &warnings), 0);
        ck_assert_ptr_null(error);
        /* Reloadable keys changed and were reported, in row order. */
        ck_assert_int_eq(cfg.port, 2000);
        ck_assert_int_eq(cfg.level, 4);
        ck_assert_int_eq(changed_calls, 1);
        ck_assert_str_eq(changed_keys, "global/port global/log-level");
        /* The others kept their value and produced warnings. */
        ck_assert_uint_eq(cfg.idle_timeout_ms, 60000);
        ck_assert_str_eq(cfg.transports[0], "sip:*:5060");
        assert_get("global/idle-timeout", "1min");
        ck_assert_str_eq(warnings, "[global] idle-timeout changed; restart to apply\n"
                                   "[global] transports changed; restart to apply");

        /* Nothing changed: no callback, no warnings. */
        free(warnings);
        warnings = NULL;
        write_file(path, "[global]\nport=2000\nidle-timeout=60\nlog-level=debug\n");
        ck_assert_int_eq(conf_reload(conf, &error, &warnings), 0);
        ck_assert_ptr_null(warnings);
        ck_assert_int_eq(changed_calls, 1);
}
END_TEST

START_TEST(test_conf_reload_failure_keeps_values) {
        _cleanup_free_ char *path = write_conf("[global]\nport=1000\nname=old\n");
        _cleanup_free_ char *error = NULL, *warnings = NULL, *want = NULL;
        ck_assert_int_eq(conf_load(conf, path, &error), 0);

        write_file(path, "[global]\nport=2000\nname=new\nidle-timeout=abc\n");
        ck_assert_int_lt(conf_reload(conf, &error, &warnings), 0);
        ck_assert_int_ge(asprintf(&want, "%s:4: invalid duration 'abc' for [global] "
                                         "idle-timeout: ",
                                  path),
                         0);
        ck_assert_msg(strncmp(error, want, strlen(want)) == 0, "got '%s'", error);
        ck_assert_ptr_null(warnings);
        ck_assert_int_eq(cfg.port, 1000);
        ck_assert_str_eq(cfg.name, "old");
        ck_assert_int_eq(changed_calls, 0);

        /* A vanished file fails the reload too. */
        ck_assert_int_eq(unlink(path), 0);
        ck_assert_int_eq(conf_reload(conf, &error, &warnings), -ENOENT);
        ck_assert_int_eq(cfg.port, 1000);
}
END_TEST

START_TEST(test_conf_reload_keeps_overrides) {
        _cleanup_free_ char *path = write_conf("[global]\nport=1000\n");
        _cleanup_free_ char *error = NULL, *warnings = NULL;
        ck_assert_int_eq(conf_add_override(conf, "global/name=pinned", &error), 0);
        ck_assert_int_eq(conf_load(conf, path, &error), 0);
        write_file(path, "[global]\nport=1001\nname=from-file\n");
        ck_assert_int_eq(conf_reload(conf, &error, &warnings), 0);
        ck_assert_int_eq(cfg.port, 1001);
        ck_assert_str_eq(cfg.name, "pinned");
        ck_assert_str_eq(changed_keys, "global/port");
}
END_TEST

/* ---- run time: get, set, list ---- */

START_TEST(test_conf_set_reloadable) {
        _cleanup_free_ char *error = NULL;
        load_ok("[global]\nport=1000\n");
        ck_assert_int_eq(conf_set(conf, "global/port", "7000", &error), 0);
        ck_assert_ptr_null(error);
        ck_assert_int_eq(cfg.port, 7000);
        ck_assert_int_eq(changed_calls, 1);
        ck_assert_str_eq(changed_keys, "global/port");
        assert_get("global/port", "7000");

        ck_assert_int_eq(conf_set(conf, "Global/Aliases", "x y", &error), 0);
        ck_assert_int_eq(strv_length(cfg.aliases), 2);
        ck_assert_str_eq(changed_keys, "global/aliases");

        /* Setting the same value again changes nothing. */
        ck_assert_int_eq(conf_set(conf, "global/port", "7000", &error), 0);
        ck_assert_int_eq(changed_calls, 2);

        json_t *list = conf_list(conf, "global");
        ck_assert_ptr_nonnull(list);
        ck_assert_str_eq(json_string_value(json_object_get(json_object_get(list, "global/port"),
                                                           "source")),
                         "control socket");
        json_decref(list);
}
END_TEST

START_TEST(test_conf_set_not_reloadable) {
        _cleanup_free_ char *error = NULL;
        load_ok("[global]\n");
        ck_assert_int_eq(conf_set(conf, "global/transports", "sip:*:5070", &error), -EPERM);
        ck_assert_str_eq(error, "[global] transports cannot be changed at run time; edit the "
                                "file and restart");
        ck_assert_str_eq(cfg.transports[0], "sip:*:5060");
        ck_assert_int_eq(changed_calls, 0);
}
END_TEST

START_TEST(test_conf_set_unknown) {
        _cleanup_free_ char *error = NULL;
        load_ok("[global]\n");
        ck_assert_int_eq(conf_set(conf, "global/prot", "1", &error), -ENOENT);
        ck_assert_str_eq(error, "unknown key 'prot' in section [global], did you mean 'port'?");
        ck_assert_int_eq(conf_set(conf, "glbal/port", "1", &error), -ENOENT);
        ck_assert_str_eq(error, "unknown section [glbal], did you mean [global]?");
        ck_assert_int_eq(conf_set(conf, "port", "1", &error), -ENOENT);
        ck_assert_ptr_nonnull(error);
        ck_assert_int_eq(changed_calls, 0);

        _cleanup_free_ char *value = NULL;
        ck_assert_int_eq(conf_get(conf, "global/prot", &value), -ENOENT);
        ck_assert_int_eq(conf_get(conf, "nothing", &value), -ENOENT);
        ck_assert_ptr_null(value);
}
END_TEST

START_TEST(test_conf_set_bad_value) {
        _cleanup_free_ char *error = NULL;
        load_ok("[global]\nport=1000\n");
        ck_assert_int_eq(conf_set(conf, "global/port", "abc", &error), -EINVAL);
        ck_assert_str_eq(error, "invalid integer 'abc' for [global] port: expected a whole number");
        ck_assert_int_eq(conf_set(conf, "global/interval", "1x", &error), -EINVAL);
        ck_assert_ptr_nonnull(strstr(error, "invalid duration '1x' for [global] interval"));
        ck_assert_int_eq(conf_set(conf, "global/port", "", &error), -EINVAL);
        ck_assert_int_eq(cfg.port, 1000);
        ck_assert_uint_eq(cfg.interval_ms, 500);
        ck_assert_int_eq(changed_calls, 0);
}
END_TEST

START_TEST(test_conf_get_values) {
        load_ok("[global]\nenabled=0\nname=n\n");
        assert_get("global/enabled", "false");
        assert_get("global/port", "5060");
        assert_get("global/ports", "10000-20000");
        assert_get("global/name", "n");
        assert_get("global/aliases", "a.example b.example");
        assert_get("global/idle-timeout", "1h");
        assert_get("global/interval", "500ms");
        assert_get("global/period", "5min");
        assert_get("global/max-size", "4MiB");
        assert_get("global/outbound", "");
        assert_get("global/transports", "sip:*:5060");
        assert_get("global/listen", "127.0.0.1:9090");
        assert_get("global/log-level", "notice");
        assert_get("module::router/FORK", "false");
        assert_get("module::Router/max-branches", "10");
}
END_TEST

START_TEST(test_conf_get_secret) {
        _cleanup_free_ char *error = NULL;
        load_ok("[global]\npassword=hunter2\n");
        ck_assert_str_eq(cfg.password, "hunter2");
        assert_get("global/password", "(secret)");

        json_t *list = conf_list(conf, "global");
        ck_assert_ptr_nonnull(list);
        ck_assert_str_eq(json_string_value(json_object_get(
                                 json_object_get(list, "global/password"), "value")),
                         "(secret)");
        char *dump = json_dumps(list, 0);
        ck_assert_ptr_nonnull(dump);
        ck_assert_ptr_null(strstr(dump, "hunter2"));
        free(dump);
        json_decref(list);

        /* A reloadable secret is settable at run time, and still not shown. */
        ck_assert_int_eq(conf_set(conf, "global/password", "s3cret", &error), 0);
        ck_assert_str_eq(cfg.password, "s3cret");
        assert_get("global/password", "(secret)");
}
END_TEST

START_TEST(test_conf_list_json) {
        _cleanup_free_ char *path = NULL, *source = NULL, *error = NULL;
        ck_assert_int_eq(load_text("[global]\n\nport=6000\n", &error, &path), 0);

        json_t *all = conf_list(conf, NULL);
        ck_assert_ptr_nonnull(all);
        ck_assert_int_eq(json_object_size(all), ELEMENTSOF(global_rows) + ELEMENTSOF(router_rows));
        json_t *port = json_object_get(all, "global/port");
        ck_assert_ptr_nonnull(port);
        ck_assert_str_eq(json_string_value(json_object_get(port, "value")), "6000");
        ck_assert_str_eq(json_string_value(json_object_get(port, "default")), "5060");
        ck_assert_str_eq(json_string_value(json_object_get(port, "doc")), "A port");
        ck_assert(json_is_true(json_object_get(port, "reloadable")));
        ck_assert_str_eq(json_string_value(json_object_get(port, "type")), "int");
        ck_assert_int_ge(asprintf(&source, "%s:3", path), 0);
        ck_assert_str_eq(json_string_value(json_object_get(port, "source")), source);

        json_t *timeout = json_object_get(all, "global/idle-timeout");
        ck_assert_str_eq(json_string_value(json_object_get(timeout, "value")), "1h");
        ck_assert_str_eq(json_string_value(json_object_get(timeout, "default")), "1h");
        ck_assert(json_is_false(json_object_get(timeout, "reloadable")));
        ck_assert_str_eq(json_string_value(json_object_get(timeout, "source")), "default");
        ck_assert_ptr_nonnull(json_object_get(all, "module::Router/fork"));
        json_decref(all);

        json_t *all2 = conf_list(conf, "all");
        ck_assert_int_eq(json_object_size(all2), ELEMENTSOF(global_rows) + ELEMENTSOF(router_rows));
        json_decref(all2);

        json_t *router_list = conf_list(conf, "MODULE::router");
        ck_assert_ptr_nonnull(router_list);
        ck_assert_int_eq(json_object_size(router_list), 2);
        ck_assert_ptr_nonnull(json_object_get(router_list, "module::Router/max-branches"));
        json_decref(router_list);

        ck_assert_ptr_null(conf_list(conf, "nosuch"));
}
END_TEST

START_TEST(test_conf_find_and_suggest) {
        const struct conf_option *o = conf_find(conf, "GLOBAL", "Port");
        ck_assert_ptr_nonnull(o);
        ck_assert_str_eq(o->key, "port");
        ck_assert_ptr_null(conf_find(conf, "global", "prot"));
        ck_assert(conf_has_section(conf, "global"));
        ck_assert(conf_has_section(conf, "Module::Router"));
        ck_assert(!conf_has_section(conf, "router"));
        ck_assert_str_eq(conf_suggest_section(conf, "modul::Router"), "module::Router");
        ck_assert_ptr_null(conf_suggest_section(conf, "xyz"));
        ck_assert_str_eq(conf_suggest_key(conf, "global", "idle-timeuot"), "idle-timeout");
        ck_assert_str_eq(conf_suggest_key(conf, NULL, "global/prot"), "global/port");
        ck_assert_ptr_null(conf_suggest_key(conf, "global", "zzzzzzzz"));
        ck_assert_ptr_null(conf_suggest_key(conf, "global", "x"));
}
END_TEST

/* ---- tables ---- */

START_TEST(test_conf_add_table_rejects_bad_rows) {
        static int block;
        static const struct conf_option dup[] = {
                {.section = "global", .key = "PORT", .type = CONF_INT, .def = "1"},
        };
        static const struct conf_option bad_default[] = {
                {.section = "other", .key = "n", .type = CONF_INT, .def = "abc"},
        };
        static const struct conf_option out_of_range_default[] = {
                {.section = "other", .key = "n", .type = CONF_INT, .def = "0", .min = 1,
                 .max = 10},
        };
        static const struct conf_option no_choices[] = {
                {.section = "other", .key = "e", .type = CONF_ENUM},
        };
        static const struct conf_option bad_name[] = {
                {.section = "other", .key = "a/b", .type = CONF_INT, .def = "1"},
        };
        ck_assert_int_eq(conf_add_table(conf, dup, 1, &block), -EEXIST);
        ck_assert_int_eq(conf_add_table(conf, bad_default, 1, &block), -EINVAL);
        ck_assert_int_eq(conf_add_table(conf, out_of_range_default, 1, &block), -EINVAL);
        ck_assert_int_eq(conf_add_table(conf, no_choices, 1, &block), -EINVAL);
        ck_assert_int_eq(conf_add_table(conf, bad_name, 1, &block), -EINVAL);
        ck_assert(!conf_has_section(conf, "other"));

        /* A section known only from its rows is accepted, even when empty in the file. */
        static int64_t extra;
        static const struct conf_option extra_rows[] = {
                {.section = "extra", .key = "n", .type = CONF_INT, .doc = "Zero by default"},
        };
        ck_assert_int_eq(conf_add_table(conf, extra_rows, 1, &extra), 0);
        extra = 5;
        load_ok("[extra]\n");
        ck_assert_int_eq(extra, 0);
}
END_TEST

/* ---- --dump-default ---- */

static char *dump(void) {
        char *text = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&text, &size);
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(conf_dump_default(conf, f), 0);
        ck_assert_int_eq(fclose(f), 0);
        return text;
}

/* All values as "key=value" lines, from conf_get. */
static char *all_values(void) {
        json_t *list = conf_list(conf, NULL);
        char *text = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&text, &size);
        const char *key;
        json_t *v;
        ck_assert_ptr_nonnull(list);
        ck_assert_ptr_nonnull(f);
        json_object_foreach(list, key, v) {
                _cleanup_free_ char *value = NULL;
                ck_assert_int_eq(conf_get(conf, key, &value), 0);
                fprintf(f, "%s=%s\n", key, value);
        }
        ck_assert_int_eq(fclose(f), 0);
        json_decref(list);
        return text;
}

START_TEST(test_conf_dump_default) {
        _cleanup_free_ char *text = dump(), *again = dump();
        ck_assert_str_eq(text, again);
        static const char *const expected[] = {
                "# Configuration of sipfleet-test.\n",
                ("## Settings of the test daemon.\n[global]\n\n# Whether the daemon does "
                 "anything\n# Default: true\n#enabled=true\n\n# A port\n# Default: 5060\n"
                 "# Allowed: 1..65535\n#port=5060\n\n"),
                "# Default: (empty)\n#name=\n\n",
                ("# Default: 1h\n# Unit: s (a bare number is in s; also min, h, d)\n"
                 "#idle-timeout=1h\n\n"),
                "# Default: 500ms\n# Unit: ms (a bare number is in ms; also s, min, h, d)\n",
                "# Allowed: n or n-m, within 1024..65535\n#ports=10000-20000\n",
                "# Allowed: error, warning, notice, info, debug\n#log-level=notice\n",
                "#max-size=4MiB\n",
                "## Routing of requests.\n[module::Router]\n\n",
                "#max-branches=10\n\n",
        };
        for (size_t i = 0; i < ELEMENTSOF(expected); i++)
                ck_assert_msg(strstr(text, expected[i]), "dump lacks '%s':\n%s", expected[i],
                              text);
        /* Sections in registration order, keys in row order. */
        ck_assert(strstr(text, "[global]") < strstr(text, "[module::Router]"));
        ck_assert(strstr(text, "#enabled=") < strstr(text, "#password="));
}
END_TEST

START_TEST(test_conf_dump_default_round_trip) {
        _cleanup_free_ char *text = dump(), *defaults = NULL, *after = NULL, *uncommented = NULL;
        _cleanup_free_ char *error = NULL;
        ck_assert_int_eq(conf_load(conf, NULL, &error), 0);
        defaults = all_values();

        /* As dumped: all comments. */
        load_ok(text);
        after = all_values();
        ck_assert_str_eq(after, defaults);
        free(after);

        /* With every "#key=value" line made active: still the defaults. */
        uncommented = malloc(strlen(text) + 1);
        ck_assert_ptr_nonnull(uncommented);
        char *out = uncommented;
        for (const char *line = text; *line;) {
                const char *nl = strchrnul(line, '\n');
                if (line[0] == '#' && line[1] != ' ' && line[1] != '#' && line[1] != '\n' &&
                    memchr(line, '=', (size_t)(nl - line)))
                        line++;
                memcpy(out, line, (size_t)(nl - line));
                out += nl - line;
                *out++ = '\n';
                line = *nl ? nl + 1 : nl;
        }
        *out = 0;
        ck_assert_ptr_nonnull(strstr(uncommented, "\nport=5060\n"));
        ck_assert_ptr_nonnull(strstr(uncommented, "\nidle-timeout=1h\n"));
        ck_assert_int_eq(cfg.port, 5060);
        cfg.port = 1;
        load_ok(uncommented);
        after = all_values();
        ck_assert_str_eq(after, defaults);
        ck_assert_int_eq(cfg.port, 5060);
}
END_TEST

Suite *conf_suite(void);
Suite *conf_suite(void) {
        Suite *s = suite_create("conf");
        TCase *tc;

        tc = tcase_create("types");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_conf_bool);
        tcase_add_test(tc, test_conf_int);
        tcase_add_test(tc, test_conf_range);
        tcase_add_test(tc, test_conf_string);
        tcase_add_test(tc, test_conf_list);
        tcase_add_test(tc, test_conf_duration);
        tcase_add_test(tc, test_conf_size);
        tcase_add_test(tc, test_conf_uri);
        tcase_add_test(tc, test_conf_address);
        tcase_add_test(tc, test_conf_enum);
        suite_add_tcase(s, tc);

        tc = tcase_create("format");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_conf_unknown_section);
        tcase_add_test(tc, test_conf_unknown_key);
        tcase_add_test(tc, test_conf_duplicate_key);
        tcase_add_test(tc, test_conf_key_before_section);
        tcase_add_test(tc, test_conf_malformed_line);
        tcase_add_test(tc, test_conf_comments_and_case);
        tcase_add_test(tc, test_conf_crlf);
        tcase_add_test(tc, test_conf_long_line);
        tcase_add_test(tc, test_conf_missing_file);
        tcase_add_test(tc, test_conf_failed_load_changes_nothing);
        suite_add_tcase(s, tc);

        tc = tcase_create("sources");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_conf_defaults);
        tcase_add_test(tc, test_conf_dropins);
        tcase_add_test(tc, test_conf_override);
        tcase_add_test(tc, test_conf_override_bad);
        tcase_add_test(tc, test_conf_override_bad_value);
        suite_add_tcase(s, tc);

        tc = tcase_create("reload");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_conf_reload_applies_reloadable);
        tcase_add_test(tc, test_conf_reload_failure_keeps_values);
        tcase_add_test(tc, test_conf_reload_keeps_overrides);
        suite_add_tcase(s, tc);

        tc = tcase_create("runtime");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_conf_set_reloadable);
        tcase_add_test(tc, test_conf_set_not_reloadable);
        tcase_add_test(tc, test_conf_set_unknown);
        tcase_add_test(tc, test_conf_set_bad_value);
        tcase_add_test(tc, test_conf_get_values);
        tcase_add_test(tc, test_conf_get_secret);
        tcase_add_test(tc, test_conf_list_json);
        tcase_add_test(tc, test_conf_find_and_suggest);
        suite_add_tcase(s, tc);

        tc = tcase_create("tables");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_conf_add_table_rejects_bad_rows);
        suite_add_tcase(s, tc);

        tc = tcase_create("dump");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_conf_dump_default);
        tcase_add_test(tc, test_conf_dump_default_round_trip);
        suite_add_tcase(s, tc);

        return s;
}

int main(void) {
        return tl_run(conf_suite());
}
