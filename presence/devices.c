/* SPDX-License-Identifier: MIT */
/* Long-term presence, devices' capabilities: when the proxy's registrar is on Redis
 * ([registrar] redis-server-domain), the bindings of a user of the service are read from it
 * (read-only: one HGETALL of <redis-key-prefix><user>@<host>, the layout of
 * proxy/registrar-store-redis.c) and the +org.linphone.specs Contact parameters of the live
 * ones ("groupchat/1.1,lime,ephemeral") make the capabilities of the user's default tuple.
 *
 * The capabilities of all devices are merged: each name once, with the highest version any
 * device gave, sorted by name. Values are checked (names and versions of letters, digits, '.', '-',
 * '_', at most MAX_NAME characters, at most MAX_CAPABILITIES per user); what does not fit is
 * skipped, as are bindings that are not JSON objects of ours. */
#define LOG_SUBSYSTEM LOG_presence
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "daemon.h"
#include "macro.h"
#include "presence.h"
#include "redis.h"
#include "stats.h"

#define MAX_CAPABILITIES 32
#define MAX_NAME         64
#define SPECS_PARAM      "+org.linphone.specs"

struct devices {
        struct presence *presence;
        char *host;
        int64_t port;
        char *user;
        char *password;
        char *prefix;
        uint64_t command_timeout_ms;

        struct redis *redis;
        struct stats_counter *count_read, *count_failed;
};

struct devices_read {
        struct devices *dv;
        devices_fn cb;
        void *userdata;
};

#define SECTION  "registrar"
#define D(field) offsetof(struct devices, field)

static const struct conf_section devices_sections[] = {
        {SECTION, "The proxy's Redis registrar, read (never written) by long-term presence for "
                  "the capabilities of a user's devices; the same values as the proxy's "
                  "[module::Registrar] redis-* keys"},
};

static const struct conf_option devices_rows[] = {
        {SECTION, "redis-server-domain", CONF_STRING, D(host), NULL, 0, 0, 0,
         "Redis server of the proxy's registrar (db-implementation=redis; an address: a name "
         "is resolved with a blocking lookup); empty: the default tuple of long-term presence "
         "carries no capabilities"},
        {SECTION, "redis-server-port", CONF_INT, D(port), "6379", 1, 65535, 0,
         "Port of redis-server-domain"},
        {SECTION, "redis-auth-user", CONF_STRING, D(user), NULL, 0, 0, 0,
         "Redis ACL user (with redis-auth-password); empty: password only"},
        {SECTION, "redis-auth-password", CONF_STRING, D(password), NULL, 0, 0, CONF_SECRET,
         "Redis password; empty: no AUTH"},
        {SECTION, "redis-key-prefix", CONF_STRING, D(prefix), "fs:", 0, 0, 0,
         "Prefix of the registrar's keys (<prefix><user>@<host>), as the proxy's"},
        {SECTION, "redis-command-timeout", CONF_DURATION, D(command_timeout_ms), "2s", 0, 0, 0,
         "A Redis reply later than this counts as a lost connection (the default tuple then "
         "keeps the capabilities it had)",
         .unit = CONF_UNIT_MS},
};

int devices_new(struct presence *p) {
        struct devices *dv = calloc(1, sizeof *dv);
        if (!dv)
                return -ENOMEM;
        dv->presence = p;
        p->devices = dv;
        int r = conf_add_sections(daemon_conf(p->daemon), devices_sections,
                                  ELEMENTSOF(devices_sections));
        if (r >= 0)
                r = conf_add_table(daemon_conf(p->daemon), devices_rows, ELEMENTSOF(devices_rows),
                                   dv);
        return r;
}

static void on_link_state(struct redis *r, enum redis_link link, bool up, int error,
                          const char *reason, void *userdata) {
        if (link != REDIS_LINK_COMMAND)
                return;
        if (up)
                log_notice("Registrar Redis: connected.");
        else
                log_warning("Registrar Redis: link down (%s); default tuples keep the "
                            "capabilities they had.",
                            reason ? reason : strerror(-error));
}

int devices_start(struct presence *p) {
        struct devices *dv = p->devices;
        struct stats *st = daemon_stats(p->daemon);
        dv->count_read = stats_declare(st, "presence", "count-devices-read",
                                       "Reads of a user's devices in the registrar (capabilities)");
        dv->count_failed = stats_declare(st, "presence", "count-devices-failed",
                                         "Reads of the registrar that failed or could not start");
        if (isempty(dv->host))
                return 0;
        if (!isempty(dv->user) && isempty(dv->password))
                return log_error_errno(EINVAL, "[" SECTION "] redis-auth-user needs "
                                               "redis-auth-password.");
        struct redis_config rc = {
                .host = dv->host,
                .port = (uint16_t)dv->port,
                .username = isempty(dv->user) ? NULL : dv->user,
                .password = isempty(dv->password) ? NULL : dv->password,
                .client_name = "sipfleet-presence-registrar",
                .command_timeout_ms = dv->command_timeout_ms,
        };
        int r = redis_new(daemon_loop(p->daemon), &rc, &dv->redis);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the registrar's Redis client: %m");
        redis_set_state_callback(dv->redis, on_link_state, dv);
        log_notice("Long-term presence: devices' capabilities from the registrar at %s:%lld, "
                   "keys '%s<user>@<host>'.",
                   dv->host, (long long)dv->port, strempty(dv->prefix));
        return 0;
}

void devices_free(struct presence *p) {
        struct devices *dv = p->devices;
        if (!dv)
                return;
        redis_free(dv->redis); /* reads in flight get -ECANCELED */
        free(dv);
        p->devices = NULL;
}

bool devices_enabled(const struct presence *p) {
        return p->devices && p->devices->redis;
}

/* ---- capabilities ---- */

struct capability {
        char name[MAX_NAME + 1];
        char version[MAX_NAME + 1];
};

static bool token_ok(const char *s, size_t n) {
        if (n == 0 || n > MAX_NAME)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isalnum((unsigned char)s[i]) && !strchr(".-_", s[i]))
                        return false;
        return true;
}

/* One "name" or "name/version" item, added to caps (or its version raised). */
static void add_item(const char *s, size_t n, struct capability *caps, size_t *n_caps) {
        while (n > 0 && isspace((unsigned char)*s))
                s++, n--;
        while (n > 0 && isspace((unsigned char)s[n - 1]))
                n--;
        const char *slash = memchr(s, '/', n);
        size_t name_len = slash ? (size_t)(slash - s) : n;
        size_t ver_len = slash ? n - name_len - 1 : 0;
        if (!token_ok(s, name_len) || (slash && !token_ok(slash + 1, ver_len))) {
                log_debug("Capability '%.*s' skipped.", (int)MIN(n, (size_t)80), s);
                return;
        }
        char name[MAX_NAME + 1], version[MAX_NAME + 1] = "";
        memcpy(name, s, name_len);
        name[name_len] = '\0';
        if (slash) {
                memcpy(version, slash + 1, ver_len);
                version[ver_len] = '\0';
        }
        for (size_t i = 0; i < *n_caps; i++)
                if (streq(caps[i].name, name)) {
                        if (strverscmp(version, caps[i].version) > 0)
                                strcpy(caps[i].version, version);
                        return;
                }
        if (*n_caps >= MAX_CAPABILITIES)
                return;
        strcpy(caps[*n_caps].name, name);
        strcpy(caps[*n_caps].version, version);
        (*n_caps)++;
}

/* The +org.linphone.specs value among ";"-joined contact parameters (quotes around the value
 * allowed), added to caps. */
static void add_params(const char *params, struct capability *caps, size_t *n_caps) {
        const char *p = params;
        while (*p) {
                /* One parameter: up to the next ';' outside quotes. */
                const char *start = p;
                bool quoted = false;
                for (; *p && (quoted || *p != ';'); p++)
                        if (*p == '"')
                                quoted = !quoted;
                const char *end = p;
                if (*p)
                        p++;
                const char *eq = memchr(start, '=', (size_t)(end - start));
                size_t klen = eq ? (size_t)(eq - start) : (size_t)(end - start);
                while (klen > 0 && isspace((unsigned char)start[klen - 1]))
                        klen--;
                while (klen > 0 && isspace((unsigned char)*start))
                        start++, klen--;
                if (!eq || klen != strlen(SPECS_PARAM) || strncasecmp(start, SPECS_PARAM, klen))
                        continue;
                const char *v = eq + 1, *vend = end;
                while (v < vend && isspace((unsigned char)*v))
                        v++;
                while (vend > v && isspace((unsigned char)vend[-1]))
                        vend--;
                if (vend - v >= 2 && *v == '"' && vend[-1] == '"')
                        v++, vend--;
                while (v < vend) {
                        const char *comma = memchr(v, ',', (size_t)(vend - v));
                        const char *item_end = comma ? comma : vend;
                        add_item(v, (size_t)(item_end - v), caps, n_caps);
                        v = comma ? comma + 1 : vend;
                }
        }
}

static int compare_names(const void *a, const void *b) {
        return strcmp(((const struct capability *)a)->name, ((const struct capability *)b)->name);
}

char *devices_capabilities(const struct redisReply *rep, uint64_t now_ms) {
        struct capability caps[MAX_CAPABILITIES];
        size_t n = 0;
        if (rep && rep->type == REDIS_REPLY_ARRAY)
                for (size_t i = 0; i + 1 < rep->elements; i += 2) {
                        const redisReply *f = rep->element[i], *v = rep->element[i + 1];
                        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
                            f->len < 2 || memcmp(f->str, "c:", 2) != 0)
                                continue;
                        json_t *o = json_loadb(v->str, v->len, 0, NULL);
                        json_t *at = json_object_get(o, "expires-at");
                        const char *params = json_string_value(json_object_get(o, "params"));
                        if (params &&
                            (!json_is_integer(at) || (uint64_t)json_integer_value(at) > now_ms))
                                add_params(params, caps, &n);
                        json_decref(o);
                }
        if (n == 0)
                return strdup("");
        qsort(caps, n, sizeof caps[0], compare_names); /* the same text whatever the order */
        size_t len = 0;
        for (size_t i = 0; i < n; i++)
                len += strlen(caps[i].name) + strlen(caps[i].version) + 2;
        char *s = malloc(len + 1), *w = s;
        if (!s)
                return NULL;
        for (size_t i = 0; i < n; i++)
                w += sprintf(w, "%s%s%s%s", i ? "," : "", caps[i].name, *caps[i].version ? "/" : "",
                             caps[i].version);
        return s;
}

static void on_reply(struct redis *r, struct redisReply *rep, int error, void *userdata) {
        struct devices_read *rd = userdata;
        struct devices *dv = rd->dv;
        devices_fn cb = rd->cb;
        void *ud = rd->userdata;
        free(rd);
        if (error == 0 && rep->type == REDIS_REPLY_ERROR) {
                log_info("Registrar Redis: %s.", rep->str);
                error = -EIO;
        } else if (error == 0 && rep->type != REDIS_REPLY_ARRAY) {
                log_info("Registrar Redis: the key is not a hash of bindings.");
                error = -EBADMSG;
        }
        if (error < 0) {
                if (error != -ECANCELED)
                        stats_inc(dv->count_failed);
                cb(error, NULL, ud);
                return;
        }
        _cleanup_free_ char *caps = devices_capabilities(rep, now_wall_ms());
        cb(caps ? 0 : -ENOMEM, caps, ud);
}

int devices_read(struct presence *p, const char *user, const char *domain, devices_fn cb,
                 void *userdata) {
        struct devices *dv = p->devices;
        if (!devices_enabled(p))
                return -ENOTCONN;
        struct devices_read *rd = calloc(1, sizeof *rd);
        if (!rd)
                return -ENOMEM;
        *rd = (struct devices_read){.dv = dv, .cb = cb, .userdata = userdata};
        stats_inc(dv->count_read);
        int r = redis_command(dv->redis, on_reply, rd, "HGETALL %s%s@%s", strempty(dv->prefix),
                              user, domain);
        if (r < 0) {
                stats_inc(dv->count_failed);
                free(rd);
        }
        return r;
}
