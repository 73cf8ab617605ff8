/* SPDX-License-Identifier: MIT */
/* Registrar: answers REGISTER for the domains in reg-domains (RFC 3261 §10.3, Path from
 * RFC 3327), keeping the bindings in a registrar store; REGISTERs for other domains continue
 * down the chain. The request is suspended while the store works. Also the REGISTRAR_* control
 * commands. */
#define LOG_SUBSYSTEM LOG_registrar
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>

#include <sofia-sip/msg_header.h>
#include <sofia-sip/sip_util.h>

#include "ctl.h"
#include "daemon.h"
#include "loop.h"
#include "module.h"
#include "proxy.h"
#include "registrar-store-redis.h"
#include "registrar-store.h"
#include "registrar.h"
#include "stats.h"

#define PURGE_INTERVAL_MS (60 * 1000)
/* Seconds a client should wait after a 503 because the store is unreachable. */
#define STORE_RETRY_AFTER "5"

struct registrar {
        /* configuration */
        char **reg_domains;
        int db_implementation;
        char *database_path;
        uint64_t min_expires_ms, max_expires_ms, default_expires_ms;
        char *message_expires_param;
        uint64_t max_message_expires_ms;
        int64_t max_contacts_by_aor, max_contacts_per_registration;
        char **unique_id_parameters;
        bool enable_gruu;
        char *redis_host, *redis_user, *redis_password, *redis_prefix;
        int64_t redis_port, redis_max_pending, redis_wait_replicas;
        uint64_t redis_command_timeout_ms, redis_wait_timeout_ms;
        char **redis_sentinels;
        char *redis_master_name;
        uint64_t redis_replica_check_ms;
        bool redis_use_replicas;
        struct redis_config redis_cfg; /* of db-implementation=redis, once open */

        struct module *module;
        struct registrar_store *store;
        struct listener *listeners; /* embedded stores: "a device registered" */
        unsigned notifying;         /* depth of listener calls: unlisten only marks */
        bool listeners_dirty;
        struct loop_timer *purge_timer;
        struct stats_counter *count_bind, *count_bind_finished;
        struct stats_counter *count_clear, *count_clear_finished;
};

enum { DB_INTERNAL, DB_SQLITE, DB_REDIS };
static const char *const db_implementations[] = {"internal", "sqlite", "redis", NULL};

#define R(field) offsetof(struct registrar, field)
static const struct conf_option registrar_rows[] = {
        {"module::Registrar", "reg-domains", CONF_LIST, R(reg_domains), "localhost", 0, 0, 0,
         "Domains whose REGISTERs this proxy handles (Request-URI host); * = any"},
        {"module::Registrar", "db-implementation", CONF_ENUM, R(db_implementation), "sqlite", 0, 0,
         0,
         "Where bindings are kept: sqlite (a local file, kept across restarts), internal "
         "(memory, lost at restart) or redis (shared by the proxies of a cluster)",
         .choices = db_implementations},
        {"module::Registrar", "database-path", CONF_STRING, R(database_path), NULL, 0, 0, 0,
         "SQLite file for db-implementation=sqlite; empty = $STATE_DIRECTORY/registrar.db "
         "(systemd's StateDirectory=), else the bindings stay in memory with a warning"},
        {"module::Registrar", "min-expires", CONF_DURATION, R(min_expires_ms), "60s", 0, 0, 0,
         "Shorter requested expiries are raised to this (no 423 is sent)", .unit = CONF_UNIT_S},
        {"module::Registrar", "max-expires", CONF_DURATION, R(max_expires_ms), "86400s", 0, 0, 0,
         "Longer requested expiries are lowered to this", .unit = CONF_UNIT_S},
        {"module::Registrar", "default-expires", CONF_DURATION, R(default_expires_ms), "600s", 0,
         0, 0, "Expiry when neither the Expires header nor the contact gives one",
         .unit = CONF_UNIT_S},
        {"module::Registrar", "max-contacts-by-aor", CONF_INT, R(max_contacts_by_aor), "12", 1,
         10000, 0,
         "Bindings kept per address of record; beyond, those kept for messages only "
         "(message-expires) are evicted first, then the oldest"},
        {"module::Registrar", "max-contacts-per-registration", CONF_INT,
         R(max_contacts_per_registration), "12", 1, 10000, 0,
         "More Contact headers in one REGISTER are refused with 403"},
        {"module::Registrar", "message-expires-param-name", CONF_STRING,
         R(message_expires_param), "message-expires", 0, 0, 0,
         "Contact parameter (seconds from the REGISTER) keeping a contact routable for MESSAGE "
         "after its expiry, not for other requests and not listed as registered; empty = "
         "ignored"},
        {"module::Registrar", "max-message-expires", CONF_DURATION, R(max_message_expires_ms),
         "7d", 0, 0, 0, "Longer message-expires are lowered to this; 0 = ignored",
         .unit = CONF_UNIT_S},
        {"module::Registrar", "unique-id-parameters", CONF_LIST, R(unique_id_parameters),
         "+sip.instance pn-tok line", 0, 0, 0,
         "Contact parameters (header or URI) that identify a device, the first found wins; a "
         "contact with none is matched by its URI"},
        {"module::Registrar", "enable-gruu", CONF_BOOL, R(enable_gruu), "true", 0, 0, 0,
         "Give a public GRUU (RFC 5627 pub-gruu) to devices that send +sip.instance with "
         "Supported: gruu"},
        {"module::Registrar", "redis-server-domain", CONF_STRING, R(redis_host), "127.0.0.1", 0,
         0, 0, "Redis server (the master, or any replica: the master is found from it) for "
         "db-implementation=redis; a name is resolved with a blocking lookup, prefer an address"},
        {"module::Registrar", "redis-server-port", CONF_INT, R(redis_port), "6379", 1, 65535, 0,
         "Port of redis-server-domain"},
        {"module::Registrar", "redis-auth-user", CONF_STRING, R(redis_user), NULL, 0, 0, 0,
         "Redis 6 ACL user (AUTH user password); empty: AUTH with the password only"},
        {"module::Registrar", "redis-auth-password", CONF_STRING, R(redis_password), NULL, 0, 0,
         CONF_SECRET, "Redis password (requirepass, or the ACL user's); empty: no AUTH"},
        {"module::Registrar", "redis-key-prefix", CONF_STRING, R(redis_prefix), "fs:", 0, 0, 0,
         "Prefix of the Redis keys and channels of the registrar (<prefix><user>@<host>)"},
        {"module::Registrar", "redis-command-timeout", CONF_DURATION,
         R(redis_command_timeout_ms), "2s", 0, 0, 0,
         "A Redis reply later than this counts as a lost connection (the REGISTER gets 503)",
         .unit = CONF_UNIT_MS},
        {"module::Registrar", "redis-max-pending", CONF_INT, R(redis_max_pending), "10000", 1,
         1000000, 0,
         "Redis commands pipelined on the connection at most; beyond, REGISTERs get 503"},
        {"module::Registrar", "redis-slave-check-period", CONF_DURATION,
         R(redis_replica_check_ms), "60s", 0, 0, 0,
         "How often the Redis master is asked for its replicas (INFO replication), and a "
         "demoted master noticed",
         .unit = CONF_UNIT_S},
        {"module::Registrar", "redis-use-slaves-as-backup", CONF_BOOL, R(redis_use_replicas),
         "true", 0, 0, 0,
         "When the Redis master is lost, try its known replicas in turn: a promoted one, or one "
         "that knows the new master"},
        {"module::Registrar", "redis-sentinels", CONF_LIST, R(redis_sentinels), NULL, 0, 0, 0,
         "Redis Sentinels (host:port ...) asked for the master of redis-master-name; their "
         "+switch-master events move the proxy to a new master at once"},
        {"module::Registrar", "redis-master-name", CONF_STRING, R(redis_master_name),
         "sipfleet", 0, 0, 0, "Name of the master the sentinels monitor (sentinel monitor <name>)"},
        {"module::Registrar", "redis-wait-replicas", CONF_INT, R(redis_wait_replicas), "0", 0,
         100, 0,
         "Answer 200 to a REGISTER only once this many replicas have the binding (WAIT); 0: "
         "as soon as the master has it"},
        {"module::Registrar", "redis-wait-timeout", CONF_DURATION, R(redis_wait_timeout_ms),
         "500ms", 0, 0, 0,
         "How long WAIT may take before the REGISTER gets 503; keep it under "
         "redis-command-timeout",
         .unit = CONF_UNIT_MS},
};

/* ---- "a device registered" ---- */

struct listener {
        struct listener *next;
        char *aor;
        registrar_event_fn cb;
        void *userdata;
        bool dead;
};

int registrar_listen(struct registrar *reg, const char *aor, registrar_event_fn cb,
                     void *userdata) {
        if (!reg || !aor || !cb)
                return -EINVAL;
        if (reg->store->ops->watch)
                return reg->store->ops->watch(reg->store, aor, cb, userdata);
        for (struct listener *l = reg->listeners; l; l = l->next)
                if (!l->dead && l->cb == cb && l->userdata == userdata && streq(l->aor, aor))
                        return -EEXIST;
        struct listener *l = calloc(1, sizeof *l);
        if (!l || !(l->aor = strdup(aor))) {
                free(l);
                return -ENOMEM;
        }
        l->cb = cb;
        l->userdata = userdata;
        l->next = reg->listeners;
        reg->listeners = l;
        return 0;
}

static void listener_free(struct listener *l) {
        free(l->aor);
        free(l);
}

static void listeners_sweep(struct registrar *reg) {
        for (struct listener **p = &reg->listeners; *p;) {
                struct listener *l = *p;
                if (l->dead) {
                        *p = l->next;
                        listener_free(l);
                } else
                        p = &l->next;
        }
        reg->listeners_dirty = false;
}

int registrar_unlisten(struct registrar *reg, const char *aor, registrar_event_fn cb,
                       void *userdata) {
        if (!reg || !aor)
                return -EINVAL;
        if (reg->store->ops->unwatch)
                return reg->store->ops->unwatch(reg->store, aor, cb, userdata);
        for (struct listener *l = reg->listeners; l; l = l->next)
                if (!l->dead && l->cb == cb && l->userdata == userdata && streq(l->aor, aor)) {
                        l->dead = true;
                        reg->listeners_dirty = true;
                        if (reg->notifying == 0)
                                listeners_sweep(reg);
                        return 0;
                }
        return -ENOENT;
}

/* The devices this REGISTER bound or refreshed (their update time is the REGISTER's). */
static void listeners_notify(struct registrar *reg, const struct registrar_record *rec,
                             uint64_t now) {
        if (reg->store->ops->watch || !reg->listeners)
                return;
        reg->notifying++;
        for (size_t i = 0; i < rec->n_bindings; i++) {
                if (rec->bindings[i].update_time != now)
                        continue;
                /* Listeners added meanwhile are at the head: not reached by this walk. */
                for (struct listener *l = reg->listeners; l; l = l->next)
                        if (!l->dead && streq(l->aor, rec->aor))
                                l->cb(rec->aor, rec->bindings[i].unique_id, l->userdata);
        }
        if (--reg->notifying == 0 && reg->listeners_dirty)
                listeners_sweep(reg);
}

/* ---- REGISTER ---- */

struct register_op {
        struct registrar *reg;
        struct proxy_request *req;
        bool echo_path;
        bool gruu; /* Supported: gruu, and GRUUs enabled */
        uint64_t now; /* of the update */
};

bool registrar_domain_managed(struct registrar *reg, const char *host) {
        if (!host)
                return false;
        STRV_FOREACH(d, reg->reg_domains)
                if (streq(*d, "*") || strcaseeq(*d, host))
                        return true;
        return false;
}

static uint64_t clamp_expires(struct registrar *reg, uint64_t s) {
        if (s == 0)
                return 0;
        return CLAMP(s, reg->min_expires_ms / 1000, reg->max_expires_ms / 1000);
}

static uint64_t contact_expires(struct registrar *reg, const sip_t *sip, const sip_contact_t *c) {
        if (c->m_expires)
                return clamp_expires(reg, strtoull(c->m_expires, NULL, 10));
        if (sip->sip_expires)
                return clamp_expires(reg, sip->sip_expires->ex_delta);
        return reg->default_expires_ms / 1000;
}

/* The contact's message-expires (message-expires-param-name, seconds), lowered to
 * max-message-expires; 0 when it has none, for a removal, and when the value is not a number
 * (then ignored: a hint of the client is no reason to refuse its registration). */
static uint64_t contact_message_expires(struct registrar *reg, const sip_contact_t *c,
                                        uint64_t expires_s) {
        char key[128];
        size_t n = reg->message_expires_param ? strlen(reg->message_expires_param) : 0;
        if (expires_s == 0 || n == 0 || n + 2 > sizeof key || reg->max_message_expires_ms == 0)
                return 0;
        memcpy(key, reg->message_expires_param, n);
        memcpy(key + n, "=", 2);
        const char *v = msg_params_find(c->m_params, key);
        if (!v)
                return 0;
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (!isdigit((unsigned char)*v) || *end || errno) {
                log_debug("Ignoring %s='%s' of a contact: not a number of seconds.",
                          reg->message_expires_param, v);
                return 0;
        }
        return MIN((uint64_t)s, reg->max_message_expires_ms / 1000);
}

/* The device id of a contact: the first of unique-id-parameters it has, as a header
 * parameter (+sip.instance) or a URI parameter (pn-tok, line); NULL when none. */
static const char *contact_unique_id(struct registrar *reg, su_home_t *home,
                                     const sip_contact_t *c) {
        STRV_FOREACH(name, reg->unique_id_parameters) {
                char key[128];
                size_t n = strlen(*name);
                if (n + 2 > sizeof key)
                        continue;
                memcpy(key, *name, n);
                memcpy(key + n, "=", 2);
                const char *v = msg_params_find(c->m_params, key);
                if (v && *v)
                        return v;
                char buf[512];
                if (c->m_url->url_params &&
                    url_param(c->m_url->url_params, *name, buf, sizeof buf) > 1)
                        return su_strdup(home, buf);
        }
        return NULL;
}

/* Does a contact of this REGISTER bind device uid with a non-zero expiry? */
static bool instance_bound(struct registrar *reg, const sip_t *sip, su_home_t *home,
                           const char *uid) {
        for (const sip_contact_t *c = sip->sip_contact; c; c = c->m_next) {
                const char *other = contact_unique_id(reg, home, c);
                if (other && streq(other, uid) && contact_expires(reg, sip, c) > 0)
                        return true;
        }
        return false;
}

char *registrar_gruu_instance(const char *unique_id) {
        /* "\"<urn:...>\"" as sent in +sip.instance, or <urn:...>, or bare. */
        size_t n = unique_id ? strlen(unique_id) : 0;
        const char *s = unique_id;
        if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
                s++;
                n -= 2;
        }
        if (n >= 2 && s[0] == '<' && s[n - 1] == '>') {
                s++;
                n -= 2;
        }
        if (n < 5 || strncasecmp(s, "urn:", 4) != 0)
                return NULL;
        return strndup(s, n);
}

static unsigned parse_q(const char *s) {
        if (!s)
                return 1000;
        char *end;
        double d = strtod(s, &end);
        if (end == s || d < 0)
                return 0;
        if (d > 1)
                return 1000;
        return (unsigned)(d * 1000 + 0.5);
}

/* Contact parameters other than expires and q, ";"-joined. */
static char *other_params(su_home_t *home, msg_param_t const *params) {
        char *out = NULL;
        for (size_t i = 0; params && params[i]; i++) {
                const char *p = params[i];
                size_t n = strcspn(p, "=");
                if ((n == 7 && strncasecmp(p, "expires", 7) == 0) ||
                    (n == 1 && strncasecmp(p, "q", 1) == 0))
                        continue;
                out = out ? su_sprintf(home, "%s;%s", out, p) : su_strdup(home, p);
        }
        return out;
}

static void register_reply(struct register_op *op, const struct registrar_record *rec) {
        struct proxy_request *req = op->req;
        su_home_t *home = msg_home(req->msg);
        const sip_t *sip = req->sip;
        uint64_t now = realtime_msec();
        char *contacts = NULL;
        for (size_t i = 0; rec && i < rec->n_bindings; i++) {
                const struct registrar_binding *b = &rec->bindings[i];
                /* Only the registered devices: not those kept for messages only. */
                if (!registrar_binding_live(b, now))
                        continue;
                uint64_t left = b->expires_at > now ? (b->expires_at - now + 999) / 1000 : 0;
                char q[24] = "";
                if (b->q != 1000)
                        snprintf(q, sizeof q, ";q=%u.%03u", b->q / 1000, b->q % 1000);
                char *gruu = NULL;
                _cleanup_free_ char *instance =
                        op->gruu ? registrar_gruu_instance(b->unique_id) : NULL;
                if (instance)
                        gruu = su_sprintf(home, ";pub-gruu=\"%s;gr=%s\"", rec->aor, instance);
                char *one = su_sprintf(home, "<%s>%s%s%s;expires=%llu%s", b->contact,
                                       b->params ? ";" : "", strempty(b->params), q,
                                       (unsigned long long)left, strempty(gruu));
                contacts = contacts ? su_sprintf(home, "%s, %s", contacts, one) : one;
        }
        proxy_request_reply(req, SIP_200_OK, TAG_IF(contacts, SIPTAG_CONTACT_STR(contacts)),
                            TAG_IF(op->echo_path, SIPTAG_PATH(sip->sip_path)),
                            SIPTAG_SUPPORTED_STR(op->gruu ? "path, gruu" : "path"),
                            SIPTAG_DATE(sip_date_create(home, sip_now())), TAG_END());
}

static void register_finish(struct register_op *op) {
        proxy_request_resume(op->req, MODULE_STOP);
        free(op);
}

/* A store that failed is answered 503 with Retry-After (the store is unreachable, a Redis
 * failover is under way, a replica did not confirm...), except for lack of memory. */
static void reply_store_error(struct proxy_request *req, int error) {
        if (error == -ENOMEM)
                proxy_request_reply(req, SIP_500_INTERNAL_SERVER_ERROR, TAG_END());
        else
                proxy_request_reply(req, SIP_503_SERVICE_UNAVAILABLE,
                                    SIPTAG_RETRY_AFTER_STR(STORE_RETRY_AFTER), TAG_END());
}

static void on_bind_done(int error, struct registrar_record *rec, void *userdata) {
        struct register_op *op = userdata;
        stats_inc(op->reg->count_bind_finished);
        if (error == -ESTALE)
                proxy_request_reply(op->req, 400, "Invalid CSeq", TAG_END());
        else if (error < 0) {
                log_warning_errno(error, "Registrar store failed: %m");
                reply_store_error(op->req, error);
        } else {
                uint64_t now = realtime_msec();
                size_t live = 0;
                for (size_t i = 0; i < rec->n_bindings; i++)
                        live += registrar_binding_live(&rec->bindings[i], now);
                log_info("REGISTER for '%s': %zu binding(s), %zu more kept for messages.",
                         rec->aor, live, rec->n_bindings - live);
                register_reply(op, rec);
                if (op->now)
                        listeners_notify(op->reg, rec, op->now);
        }
        registrar_record_free(rec);
        register_finish(op);
}

static void on_clear_done(int result, void *userdata) {
        struct register_op *op = userdata;
        stats_inc(op->reg->count_clear_finished);
        if (result < 0) {
                log_warning_errno(result, "Registrar store failed: %m");
                reply_store_error(op->req, result);
        } else
                register_reply(op, NULL);
        register_finish(op);
}

static enum module_result registrar_request(struct module *m, struct proxy_request *req) {
        struct registrar *reg = m->state;
        const sip_t *sip = req->sip;
        su_home_t *home = msg_home(req->msg);
        int r;

        if (sip->sip_request->rq_method != sip_method_register ||
            !registrar_domain_managed(reg, sip->sip_request->rq_url->url_host))
                return MODULE_CONTINUE;

        const url_t *to = sip->sip_to ? sip->sip_to->a_url : NULL;
        _cleanup_free_ char *aor =
                to ? registrar_aor_normalize(url_as_string(home, (url_t *)to)) : NULL;
        if (!aor || !sip->sip_call_id || !sip->sip_cseq) {
                proxy_request_reply(req, 400, "Invalid To", TAG_END());
                return MODULE_STOP;
        }

        size_t n = 0;
        bool star = false;
        for (const sip_contact_t *c = sip->sip_contact; c; c = c->m_next) {
                n++;
                if (c->m_url->url_type == url_any)
                        star = true;
                else if (c->m_url->url_type != url_sip && c->m_url->url_type != url_sips) {
                        proxy_request_reply(req, 400, "Invalid contact", TAG_END());
                        return MODULE_STOP;
                }
        }
        if (star && (n > 1 || !sip->sip_expires || sip->sip_expires->ex_delta != 0)) {
                proxy_request_reply(req, 400, "Invalid usage of wildcard '*' in Contact header field",
                                    TAG_END());
                return MODULE_STOP;
        }
        if (n > (size_t)reg->max_contacts_per_registration) {
                proxy_request_reply(req, 403, "Too many contacts in REGISTER", TAG_END());
                return MODULE_STOP;
        }

        struct register_op *op = calloc(1, sizeof *op);
        if (!op) {
                log_oom();
                proxy_request_reply(req, SIP_500_INTERNAL_SERVER_ERROR, TAG_END());
                return MODULE_STOP;
        }
        *op = (struct register_op){.reg = reg, .req = req,
                                   .echo_path = sip->sip_path &&
                                                sip_has_supported(sip->sip_supported, "path"),
                                   .gruu = reg->enable_gruu &&
                                           sip_has_supported(sip->sip_supported, "gruu")};

        if (star) {
                stats_inc(reg->count_clear);
                r = reg->store->ops->clear(reg->store, aor, on_clear_done, op);
                if (r < 0)
                        stats_inc(reg->count_clear_finished);
        } else if (n == 0) {
                r = reg->store->ops->fetch(reg->store, aor, on_bind_done, op);
                if (r >= 0)
                        stats_inc(reg->count_bind);
        } else {
                struct registrar_contact *contacts = su_zalloc(home, n * sizeof *contacts);
                char **path = NULL;
                /* In a cluster, this node first: the others reach the device through it. */
                char *node = cluster_path(m->proxy, home);
                size_t n_path = node ? 1 : 0;
                for (const sip_path_t *p = sip->sip_path; p; p = p->r_next)
                        n_path++;
                if (n_path > 0 && (path = su_zalloc(home, (n_path + 1) * sizeof *path))) {
                        size_t i = 0;
                        if (node)
                                path[i++] = node;
                        for (const sip_path_t *p = sip->sip_path; p; p = p->r_next)
                                path[i++] = su_sprintf(home, "<%s>",
                                                       url_as_string(home, p->r_url));
                }
                size_t i = 0;
                for (const sip_contact_t *c = sip->sip_contact; contacts && c; c = c->m_next) {
                        const char *uid = contact_unique_id(reg, home, c);
                        uint64_t exp = contact_expires(reg, sip, c);
                        /* A removal of an instance the same REGISTER also binds is ignored. */
                        if (exp == 0 && uid && instance_bound(reg, sip, home, uid))
                                continue;
                        contacts[i++] = (struct registrar_contact){
                                .contact = url_as_string(home, c->m_url),
                                .params = other_params(home, c->m_params),
                                .unique_id = uid,
                                .expires_s = exp,
                                .q = parse_q(c->m_q),
                                .message_expires_s = contact_message_expires(reg, c, exp),
                        };
                }
                const struct registrar_update u = {
                        .aor = aor,
                        .contacts = contacts,
                        .n_contacts = i,
                        .call_id = sip->sip_call_id->i_id,
                        .cseq = sip->sip_cseq->cs_seq,
                        .path = path,
                        .user_agent = sip->sip_user_agent ? sip->sip_user_agent->g_string
                                                          : NULL,
                        .max_contacts = (size_t)reg->max_contacts_by_aor,
                        .now = realtime_msec(),
                };
                op->now = u.now;
                r = contacts ? reg->store->ops->apply(reg->store, &u, on_bind_done, op)
                             : -ENOMEM;
                if (r >= 0)
                        stats_inc(reg->count_bind);
        }
        if (r < 0) {
                log_warning_errno(r, "Registrar store failed for '%s': %m", aor);
                free(op);
                reply_store_error(req, r);
                return MODULE_STOP;
        }
        return MODULE_SUSPEND;
}

/* ---- control commands ---- */

struct cli_op {
        struct registrar *reg;
        struct ctl_request *req;
};

static struct cli_op *cli_op_new(struct registrar *reg, struct ctl_request *req) {
        struct cli_op *op = malloc(sizeof *op);
        if (op)
                *op = (struct cli_op){reg, req};
        return op;
}

static void cli_on_record(int error, struct registrar_record *rec, void *userdata) {
        struct cli_op *op = userdata;
        if (error == -ENOENT)
                ctl_reply_error(op->req, "No such binding");
        else if (error < 0)
                ctl_reply_error(op->req, "Registrar store failed: %s", strerror(-error));
        else
                ctl_reply(op->req, registrar_record_to_json(rec, realtime_msec()));
        registrar_record_free(rec);
        free(op);
}

static void cli_on_clear(int result, void *userdata) {
        struct cli_op *op = userdata;
        stats_inc(op->reg->count_clear_finished);
        if (result < 0)
                ctl_reply_error(op->req, "Registrar store failed: %s", strerror(-result));
        else
                ctl_reply(op->req, json_pack("{s:b}", "cleared", result > 0));
        free(op);
}

static void cli_on_dump(int error, char **aors, void *userdata) {
        struct cli_op *op = userdata;
        if (error < 0)
                ctl_reply_error(op->req, "Registrar store failed: %s", strerror(-error));
        else {
                json_t *a = json_array();
                STRV_FOREACH(s, aors)
                        json_array_append_new(a, json_string(*s));
                ctl_reply(op->req, json_pack("{s:o}", "aors", a));
        }
        strv_free(aors);
        free(op);
}

static int cli_command(struct ctl_request *req, int argc, char **argv, void *userdata) {
        struct registrar *reg = userdata;
        struct registrar_store *s = reg->store;
        const char *cmd = argv[0];
        bool dump = streq(cmd, "REGISTRAR_DUMP");
        int want_min = 2, want_max = 2;
        if (dump)
                want_min = want_max = 1;
        else if (streq(cmd, "REGISTRAR_DELETE"))
                want_min = want_max = 3;
        else if (streq(cmd, "REGISTRAR_UPSERT")) {
                want_min = 4;
                want_max = 5;
        }
        if (argc < want_min || argc > want_max) {
                ctl_reply_error(req, "Wrong number of arguments");
                return 0;
        }
        _cleanup_free_ char *aor = dump ? NULL : registrar_aor_normalize(argv[1]);
        if (!dump && !aor) {
                ctl_reply_error(req, "Invalid AOR '%s'", argv[1]);
                return 0;
        }
        struct cli_op *op = cli_op_new(reg, req);
        int r;
        if (!op)
                return -ENOMEM;
        if (dump)
                r = s->ops->dump(s, cli_on_dump, op);
        else if (streq(cmd, "REGISTRAR_GET"))
                r = s->ops->fetch(s, aor, cli_on_record, op);
        else if (streq(cmd, "REGISTRAR_CLEAR")) {
                r = s->ops->clear(s, aor, cli_on_clear, op);
                if (r >= 0)
                        stats_inc(reg->count_clear);
        } else if (streq(cmd, "REGISTRAR_DELETE"))
                r = s->ops->remove(s, aor, argv[2], cli_on_record, op);
        else {
                char *end;
                unsigned long long exp = strtoull(argv[3], &end, 10);
                _cleanup_free_ char *valid = registrar_aor_normalize(argv[2]);
                if (!valid || *end || exp == 0) {
                        free(op);
                        ctl_reply_error(req, "Usage: REGISTRAR_UPSERT <aor> <sip-uri> "
                                             "<expires-seconds> [<unique-id>]");
                        return 0;
                }
                const struct registrar_contact c = {
                        .contact = argv[2],
                        .unique_id = argc > 4 ? argv[4] : NULL,
                        .expires_s = exp,
                        .q = 1000,
                };
                const struct registrar_update u = {
                        .aor = aor,
                        .contacts = &c,
                        .n_contacts = 1,
                        .max_contacts = (size_t)reg->max_contacts_by_aor,
                        .now = realtime_msec(),
                };
                r = s->ops->apply(s, &u, cli_on_record, op);
        }
        if (r < 0)
                free(op);
        return r;
}

/* ---- module ---- */

static uint64_t registered_aors(void *userdata) {
        struct registrar *reg = userdata;
        return reg->store ? reg->store->ops->n_aors(reg->store) : 0;
}

static void on_purged(int result, void *userdata) {
        if (result > 0)
                log_debug("Purged %d expired bindings.", result);
}

static void on_purge_timer(struct loop_timer *t, void *userdata) {
        struct registrar *reg = userdata;
        int r = reg->store->ops->purge(reg->store, realtime_msec(), on_purged, reg);
        if (r < 0)
                log_warning_errno(r, "Failed to purge expired bindings: %m");
        loop_timer_arm(t, PURGE_INTERVAL_MS);
}

static int registrar_store_open(struct registrar *reg, struct loop *l) {
        _cleanup_free_ char *path = NULL;
        int r;
        if (reg->db_implementation == DB_REDIS) {
                struct registrar_redis_config cfg = {
                        .redis = {
                                .host = reg->redis_host,
                                .port = (uint16_t)reg->redis_port,
                                .username = reg->redis_user,
                                .password = reg->redis_password,
                                .client_name = "sipfleet-proxy",
                                .command_timeout_ms = reg->redis_command_timeout_ms,
                                .reconnect_max_ms = 1000,
                                .max_pending = (size_t)reg->redis_max_pending,
                                .follow_master = true,
                                .use_replicas = reg->redis_use_replicas,
                                .replica_check_ms = reg->redis_replica_check_ms,
                                .sentinels = reg->redis_sentinels,
                                .master_name = reg->redis_master_name,
                        },
                        .key_prefix = reg->redis_prefix,
                        .wait_replicas = (unsigned)reg->redis_wait_replicas,
                        .wait_timeout_ms = reg->redis_wait_timeout_ms,
                };
                if (reg->redis_replica_check_ms < 1000)
                        return log_error_errno(EINVAL, "[module::Registrar] "
                                                       "redis-slave-check-period must be at "
                                                       "least 1s.");
                if (reg->redis_sentinels && reg->redis_sentinels[0] && isempty(reg->redis_master_name))
                        return log_error_errno(EINVAL, "[module::Registrar] redis-sentinels "
                                                       "needs redis-master-name.");
                STRV_FOREACH(a, reg->redis_sentinels) {
                        const char *colon = strrchr(*a, ':');
                        char *end = NULL;
                        long port = colon ? strtol(colon + 1, &end, 10) : 0;
                        if (!colon || colon == *a || *end || port < 1 || port > 65535)
                                return log_error_errno(EINVAL, "[module::Registrar] "
                                                               "redis-sentinels: '%s' is not "
                                                               "host:port.", *a);
                }
                if (!isempty(reg->redis_user) && isempty(reg->redis_password))
                        return log_error_errno(EINVAL, "[module::Registrar] redis-auth-user "
                                                       "needs redis-auth-password.");
                if (reg->redis_wait_replicas > 0 &&
                    reg->redis_wait_timeout_ms >= reg->redis_command_timeout_ms)
                        return log_error_errno(EINVAL, "[module::Registrar] redis-wait-timeout "
                                                       "must be below redis-command-timeout.");
                reg->redis_cfg = cfg.redis; /* for the message store */
                r = registrar_store_redis_new(l, &cfg, &reg->store);
                if (r < 0)
                        return log_error_errno(r, "Failed to set up the Redis registrar store: %m");
                return 0;
        }
        if (reg->db_implementation == DB_SQLITE) {
                const char *state = getenv("STATE_DIRECTORY");
                if (!isempty(reg->database_path))
                        path = strdup(reg->database_path);
                else if (!isempty(state) &&
                         asprintf(&path, "%.*s/registrar.db", (int)strcspn(state, ":"), state) < 0)
                        path = NULL;
                if (!path && (!isempty(reg->database_path) || !isempty(state)))
                        return log_oom();
        }
        if (!path) {
                if (reg->db_implementation == DB_SQLITE)
                        log_warning("[module::Registrar] database-path is empty and "
                                    "$STATE_DIRECTORY is not set: bindings are kept in memory "
                                    "only.");
                r = registrar_store_internal_new(l, &reg->store);
                if (r < 0)
                        return log_error_errno(r, "Failed to create the registrar store: %m");
                return 0;
        }
        r = registrar_store_sqlite_new(l, path, &reg->store);
        if (r < 0)
                return log_error_errno(r, "Failed to open the registrar database '%s': %m", path);
        return 0;
}

static const struct {
        const char *name, *usage;
} commands[] = {
        {"REGISTRAR_GET", "REGISTRAR_GET <aor>: the bindings of an address of record"},
        {"REGISTRAR_DUMP", "REGISTRAR_DUMP: the registered addresses of record"},
        {"REGISTRAR_DELETE", "REGISTRAR_DELETE <aor> <unique-id>: remove one binding"},
        {"REGISTRAR_CLEAR", "REGISTRAR_CLEAR <aor>: remove every binding of an address of record"},
        {"REGISTRAR_UPSERT",
         "REGISTRAR_UPSERT <aor> <sip-uri> <expires-seconds> [<unique-id>]: add or update a "
         "binding"},
};

static int registrar_init(struct module *m) {
        struct registrar *reg = m->state;
        struct proxy *p = m->proxy;
        struct stats *s = proxy_stats(p);
        struct loop *l = daemon_loop(p->daemon);
        int r;

        reg->module = m;
        if (reg->min_expires_ms > reg->max_expires_ms)
                return log_error_errno(EINVAL, "[module::Registrar] min-expires is above "
                                               "max-expires.");
        r = registrar_store_open(reg, l);
        if (r < 0)
                return r;
        reg->count_bind = stats_declare_pair(s, m->desc->section, "count-bind",
                                             "REGISTER store operations (bind or fetch)",
                                             &reg->count_bind_finished);
        reg->count_clear = stats_declare_pair(s, m->desc->section, "count-clear",
                                              "Clears of an address of record",
                                              &reg->count_clear_finished);
        r = stats_declare_gauge(s, m->desc->section, "registered-aors",
                                "Addresses of record with bindings in the store",
                                registered_aors, reg);
        if (r < 0)
                return log_error_errno(r, "Failed to declare the registrar gauge: %m");
        struct ctl *ctl = daemon_ctl(p->daemon);
        for (size_t i = 0; ctl && i < ELEMENTSOF(commands); i++) {
                r = ctl_register(ctl, commands[i].name, commands[i].usage, cli_command, reg);
                if (r < 0)
                        return log_error_errno(r, "Failed to register %s: %m", commands[i].name);
        }
        r = loop_timer_new(l, on_purge_timer, reg, &reg->purge_timer);
        if (r >= 0)
                r = loop_timer_arm(reg->purge_timer, PURGE_INTERVAL_MS);
        if (r < 0)
                return log_error_errno(r, "Failed to start the purge timer: %m");
        p->registrar = reg;
        log_info("Registrar ready (store %s).", reg->store->ops->name);
        return 0;
}

const struct redis_config *registrar_redis_config(struct registrar *reg, const char **prefix) {
        if (reg->db_implementation != DB_REDIS)
                return NULL;
        if (prefix)
                *prefix = reg->redis_prefix ? reg->redis_prefix : "fs:";
        return &reg->redis_cfg;
}

struct registrar *proxy_registrar(struct proxy *p) {
        return p->registrar;
}

struct registrar_store *registrar_get_store(struct registrar *reg) {
        return reg->store;
}

static void registrar_done(struct module *m) {
        struct registrar *reg = m->state;
        if (m->proxy->registrar == reg)
                m->proxy->registrar = NULL;
        loop_timer_free(reg->purge_timer);
        reg->purge_timer = NULL;
        registrar_store_free(reg->store);
        reg->store = NULL;
        while (reg->listeners) {
                struct listener *l = reg->listeners;
                reg->listeners = l->next;
                listener_free(l);
        }
}

const struct module_desc module_registrar = {
        .name = "Registrar",
        .section = "module::Registrar",
        .doc = "Handles REGISTER for the managed domains and keeps the bindings.",
        .default_enabled = true,
        .state_size = sizeof(struct registrar),
        .rows = registrar_rows,
        .n_rows = ELEMENTSOF(registrar_rows),
        .init = registrar_init,
        .on_request = registrar_request,
        .done = registrar_done,
};
