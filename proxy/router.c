/* SPDX-License-Identifier: MIT */
/* Router: resolves out-of-dialog requests for the managed domains through the registrar and
 * forks them to the bindings found (fork.c), by groups of equal q; static targets and a
 * fallback route complete the target set. 404 for an unknown address, 480 when no binding can
 * be used. Requests for other domains, in-dialog requests and requests with a Route to
 * somewhere else go on to Forward. Fork-late and store-and-forward MESSAGE (see fork.h): the
 * message store, the restore of pending messages at start-up, MESSAGES_PENDING. */
#define LOG_SUBSYSTEM LOG_router
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>

#include "ctl.h"
#include "daemon.h"
#include "fork.h"
#include "loop.h"
#include "message-store.h"
#include "module.h"
#include "proxy.h"
#include "registrar-store.h"
#include "registrar.h"
#include "stats.h"

struct router {
        struct fork_config fork;
        char **static_targets;
        char *fallback_route;
        char *message_database_path;
        char *message_store_node, *message_redis_prefix;
        uint64_t message_owner_ttl_ms;

        struct module *module;
        struct stats_counter *count_forks;
        struct stats_counter *count_not_found, *count_unavailable;
        struct stats_counter *count_stored, *count_refused;
        unsigned restoring; /* fetches of restored AORs in flight */
        char **restored_aors; /* of the restore batch in progress */
        unsigned restored, broken;
        const char *store_where; /* for the log */
};

#define R(field) offsetof(struct router, field)
static const struct conf_option router_rows[] = {
        {"module::Router", "static-targets", CONF_URI_LIST, R(static_targets), NULL, 0, 0, 0,
         "URIs added to the targets of every INVITE and MESSAGE routed to a managed domain"},
        {"module::Router", "fallback-route", CONF_URI, R(fallback_route), NULL, 0, 0, 0,
         "Route (a SIP URI) of a last-resort branch, tried after every binding failed, or at "
         "once when the address has none; empty = none"},
        {"module::Router", "call-fork-current-branches-timeout", CONF_DURATION,
         R(fork.group_timeout_ms), "10s", 0, 0, 0,
         "Bindings are tried by groups of equal q, highest first: the next group starts when "
         "the current one has answered or after this long",
         .unit = CONF_UNIT_S},
        {"module::Router", "timer-c", CONF_DURATION, R(fork.timer_c_ms), "185s", 0, 0, 0,
         "RFC 3261 Timer C: an INVITE branch without a final answer this long after its last "
         "provisional response is cancelled and counts as 408",
         .unit = CONF_UNIT_S},
        {"module::Router", "fork-no-global-decline", CONF_BOOL, R(fork.no_global_decline), "false",
         0, 0, 0,
         "When true, a 6xx from one device does not cancel the calls to the other devices"},
        {"module::Router", "fork-late", CONF_BOOL, R(fork.fork_late), "false", 0, 0, 0,
         "Keep an INVITE open call-fork-timeout for devices that are unreachable (503, 408) or "
         "register meanwhile: a device registering gets the call"},
        {"module::Router", "call-fork-timeout", CONF_DURATION, R(fork.call_fork_timeout_ms), "90s",
         0, 0, 0, "How long a call waits for devices with fork-late", .unit = CONF_UNIT_S},
        {"module::Router", "voip-cancel-timeout", CONF_DURATION, R(fork.voip_cancel_timeout_ms),
         "30s", 0, 0, 0,
         "A call cancelled (or answered elsewhere) while a device woken by an iOS VoIP push has "
         "not registered yet waits this long for it, within call-fork-timeout, to give it the "
         "INVITE and then the CANCEL (CallKit); 0 = never",
         .unit = CONF_UNIT_S},
        {"module::Router", "message-fork-late", CONF_BOOL, R(fork.message_fork_late), "true", 0, 0,
         0,
         "Store-and-forward: a MESSAGE (not is-composing, not Expires: 0) is kept until every "
         "device of the address got it, including devices registering later"},
        {"module::Router", "message-delivery-timeout", CONF_DURATION,
         R(fork.message_delivery_timeout_ms), "7d", 0, 0, 0,
         "A stored MESSAGE not delivered after this long is dropped (logged)",
         .unit = CONF_UNIT_S},
        {"module::Router", "message-accept-timeout", CONF_DURATION,
         R(fork.message_accept_timeout_ms), "5s", 0, 0, 0,
         "A stored MESSAGE without a final answer from a device after this long is answered "
         "202 Accepted (at once when no device is registered)",
         .unit = CONF_UNIT_S},
        {"module::Router", "message-database-path", CONF_STRING, R(message_database_path), NULL, 0,
         0, 0,
         "SQLite file keeping pending MESSAGEs across restarts; empty = "
         "$STATE_DIRECTORY/messages.db, else they are kept in memory only with a warning"},
        {"module::Router", "message-store-node", CONF_STRING, R(message_store_node), NULL, 0, 0,
         0,
         "With the Redis registrar, pending MESSAGEs are kept in Redis, each owned by one "
         "proxy: this proxy's name there, unique in the cluster and the same across restarts; "
         "empty = [cluster] internal-transport when the cluster is enabled, else the host name"},
        {"module::Router", "message-store-owner-ttl", CONF_DURATION, R(message_owner_ttl_ms),
         "30s", 0, 0, 0,
         "With the Redis registrar: a proxy not heard of for this long is gone, and the others "
         "take over its pending MESSAGEs",
         .unit = CONF_UNIT_S},
        {"module::Router", "message-redis-key-prefix", CONF_STRING, R(message_redis_prefix),
         "fsm:", 0, 0, 0,
         "With the Redis registrar: prefix of the keys of pending MESSAGEs; it must not start "
         "with the registrar's redis-key-prefix, nor the other way round"},
        {"module::Router", "max-pending-messages-per-aor", CONF_INT,
         R(fork.max_pending_messages_per_aor), "1000", 1, 1000000, 0,
         "Stored MESSAGEs waiting for one address at most; more are refused with 486 and a "
         "Warning"},
        {"module::Router", "max-stored-message-size", CONF_SIZE, R(fork.max_stored_message_size),
         "64KiB", 0, 0, 0, "Larger MESSAGEs are not stored: refused with 513"},
        {"module::Router", "message-store-max-size", CONF_SIZE, R(fork.max_store_size), "256MiB", 0,
         0, 0,
         "Bytes of pending MESSAGEs in all; beyond, new ones are refused with 503, Retry-After "
         "and a Warning"},
};

struct route_op {
        struct router *router;
        struct proxy_request *req;
        bool sips;
        char *gruu_instance; /* the Request-URI is a GRUU (;gr=): only this device */
};

static bool contact_is_secure(const char *uri) {
        if (strncasecmp(uri, "sips:", 5) == 0)
                return true;
        const char *t = strcasestr(uri, ";transport=");
        return t && strncasecmp(t + 11, "tls", 3) == 0;
}

static void route_done(struct route_op *op, int status, const char *phrase, const char *warning) {
        struct proxy_request *req = op->req;
        free(op->gruu_instance);
        free(op);
        if (status)
                proxy_request_reply(req, status, phrase,
                                    TAG_IF(warning, SIPTAG_WARNING_STR(warning)),
                                    TAG_IF(status == 503, SIPTAG_RETRY_AFTER_STR("5")), TAG_END());
        proxy_request_resume(req, MODULE_STOP);
}

static void on_fetched(int error, struct registrar_record *rec, void *userdata) {
        _cleanup_(registrar_record_freep) struct registrar_record *record = rec;
        struct route_op *op = userdata;
        struct router *rt = op->router;
        struct proxy_request *req = op->req;
        const sip_t *sip = req->sip;
        struct fork *f = NULL;
        size_t skipped_insecure = 0;
        int r;

        if (error < 0) {
                log_warning_errno(error, "Registrar lookup failed: %m");
                route_done(op, SIP_503_SERVICE_UNAVAILABLE, NULL);
                return;
        }
        if (req->cancelled) {
                route_done(op, SIP_487_REQUEST_TERMINATED, NULL);
                return;
        }

        /* A MESSAGE also goes to the devices kept for messages after their expiry. */
        sip_method_t method = sip->sip_request->rq_method;
        uint64_t now = realtime_msec();
        r = fork_new(req, record->aor, &f);
        if (r < 0)
                goto oom;
        if (op->gruu_instance && (r = fork_set_instance(f, op->gruu_instance)) < 0)
                goto oom;
        for (size_t i = 0; i < record->n_bindings; i++) {
                const struct registrar_binding *b = &record->bindings[i];
                if (!registrar_binding_routable(b, now, method == sip_method_message))
                        continue;
                if (op->gruu_instance) {
                        _cleanup_free_ char *instance = registrar_gruu_instance(b->unique_id);
                        if (!instance || strcasecmp(instance, op->gruu_instance) != 0)
                                continue;
                }
                if (op->sips && !contact_is_secure(b->contact)) {
                        skipped_insecure++;
                        continue;
                }
                r = fork_add_target(f, &(struct fork_target){
                                               .uri = b->contact,
                                               .routes = b->path,
                                               .q = b->q,
                                               .uid = b->unique_id,
                                       });
                if (r < 0)
                        goto oom;
        }
        if (method == sip_method_invite || method == sip_method_message)
                STRV_FOREACH(t, rt->static_targets)
                        if ((r = fork_add_target(f, &(struct fork_target){.uri = *t, .q = 1000})) <
                            0)
                                goto oom;
        if (rt->fallback_route) {
                _cleanup_free_ char *ruri = url_as_string(NULL, sip->sip_request->rq_url);
                char *routes[] = {rt->fallback_route, NULL};
                if (!ruri || (r = fork_add_target(f, &(struct fork_target){
                                                             .uri = ruri,
                                                             .routes = routes,
                                                             .q = 0,
                                                     })) < 0)
                        goto oom;
        }
        if (fork_is_stored_message(f)) {
                const char *warning = NULL;
                int status = fork_message_admit(req->proxy, record->aor, msg_size(req->msg),
                                                &warning);
                if (status) {
                        fork_abandon(f);
                        stats_inc(rt->count_refused);
                        log_notice("MESSAGE for '%s' not stored: %s.", record->aor, warning);
                        route_done(op, status, NULL, warning);
                        return;
                }
                stats_inc(rt->count_stored);
        } else if (fork_n_targets(f) == 0) {
                fork_abandon(f);
                if (skipped_insecure > 0) {
                        stats_inc(rt->count_unavailable);
                        route_done(op, SIP_480_TEMPORARILY_UNAVAILABLE,
                                   "380 sipfleet \"SIPS not allowed: no device is registered "
                                   "over TLS\"");
                        return;
                }
                if (op->gruu_instance) {
                        /* RFC 5627 §7: a GRUU whose device is not registered now. */
                        stats_inc(rt->count_unavailable);
                        route_done(op, SIP_480_TEMPORARILY_UNAVAILABLE, NULL);
                        return;
                }
                stats_inc(rt->count_not_found);
                log_info("No binding for '%s': 404.", record->aor);
                route_done(op, SIP_404_NOT_FOUND, NULL);
                return;
        }
        stats_inc(rt->count_forks);
        log_debug("Forking to %zu targets of '%s'.", fork_n_targets(f), record->aor);
        free(op->gruu_instance);
        free(op);
        fork_start(f); /* the fork owns the request now */
        return;
oom:
        fork_abandon(f);
        log_oom();
        route_done(op, SIP_500_INTERNAL_SERVER_ERROR, NULL);
}

/* ---- in-dialog requests to a GRUU ---- */

struct gruu_op {
        struct router *router;
        struct proxy_request *req;
        char *instance;
};

/* The Request-URI becomes the device's contact, its Path the Route set. */
static int retarget(struct proxy_request *req, const struct registrar_binding *b) {
        msg_t *msg = req->msg;
        sip_t *sip = sip_object(msg);
        su_home_t *home = msg_home(msg);
        const sip_request_t *rq = sip->sip_request;
        sip_request_t *nrq = sip_request_create(home, rq->rq_method, rq->rq_method_name,
                                                URL_STRING_MAKE(b->contact), NULL);
        if (!nrq || msg_header_replace(msg, (msg_pub_t *)sip, (msg_header_t *)sip->sip_request,
                                       (msg_header_t *)nrq) < 0)
                return -ENOMEM;
        for (size_t i = strv_length(b->path); i > 0; i--) {
                sip_route_t *r = sip_route_make(home, b->path[i - 1]);
                if (!r || msg_header_insert(msg, (msg_pub_t *)sip, (msg_header_t *)r) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static void on_gruu_fetched(int error, struct registrar_record *rec, void *userdata) {
        _cleanup_(registrar_record_freep) struct registrar_record *record = rec;
        struct gruu_op *op = userdata;
        struct proxy_request *req = op->req;
        bool ack = req->sip->sip_request->rq_method == sip_method_ack;
        bool message = req->sip->sip_request->rq_method == sip_method_message;
        uint64_t now = realtime_msec();
        const struct registrar_binding *found = NULL;
        for (size_t i = 0; error >= 0 && i < record->n_bindings && !found; i++) {
                if (!registrar_binding_routable(&record->bindings[i], now, message))
                        continue;
                _cleanup_free_ char *instance =
                        registrar_gruu_instance(record->bindings[i].unique_id);
                if (instance && strcasecmp(instance, op->instance) == 0)
                        found = &record->bindings[i];
        }
        free(op->instance);
        free(op);
        if (found && retarget(req, found) >= 0) {
                proxy_request_resume(req, MODULE_CONTINUE);
                return;
        }
        if (error < 0)
                log_warning_errno(error, "Registrar lookup for a GRUU failed: %m");
        if (!ack) /* an ACK has no answer: it is dropped */
                proxy_request_reply(req, error < 0 ? 503 : 480, NULL,
                                    TAG_IF(error < 0, SIPTAG_RETRY_AFTER_STR("5")), TAG_END());
        proxy_request_resume(req, MODULE_STOP);
}

/* A request inside a dialog (or an ACK) whose Request-URI is a GRUU of ours: the device's
 * contact is looked up, since the GRUU itself names no host to send to (RFC 5627 §7). */
static enum module_result gruu_in_dialog(struct router *rt, struct proxy_request *req,
                                         struct registrar *reg) {
        const url_t *ruri = req->sip->sip_request->rq_url;
        char gr[256];
        if (!ruri->url_params || url_param(ruri->url_params, "gr", gr, sizeof gr) <= 1)
                return MODULE_CONTINUE;
        url_unescape(gr, gr);
        _cleanup_free_ char *text = url_as_string(NULL, ruri);
        _cleanup_free_ char *aor = text ? registrar_aor_normalize(text) : NULL;
        struct gruu_op *op = calloc(1, sizeof *op);
        if (!aor || !op || !(op->instance = strdup(gr))) {
                free(op);
                log_oom();
                return MODULE_CONTINUE;
        }
        op->router = rt;
        op->req = req;
        struct registrar_store *store = registrar_get_store(reg);
        if (store->ops->fetch(store, aor, on_gruu_fetched, op) < 0) {
                free(op->instance);
                free(op);
                return MODULE_CONTINUE;
        }
        return MODULE_SUSPEND;
}

static enum module_result router_request(struct module *m, struct proxy_request *req) {
        struct router *rt = m->state;
        const sip_t *sip = req->sip;
        const url_t *ruri = sip->sip_request->rq_url;
        sip_method_t method = sip->sip_request->rq_method;
        struct registrar *reg = proxy_registrar(m->proxy);

        if (!req->branch && reg && method != sip_method_register && method != sip_method_cancel &&
            ((sip->sip_to && sip->sip_to->a_tag) || method == sip_method_ack) && !sip->sip_route &&
            (ruri->url_type == url_sip || ruri->url_type == url_sips) &&
            registrar_domain_managed(reg, ruri->url_host))
                return gruu_in_dialog(rt, req, reg);

        if (req->branch || !reg || method == sip_method_register || method == sip_method_ack ||
            method == sip_method_cancel || (sip->sip_to && sip->sip_to->a_tag) || sip->sip_route ||
            (ruri->url_type != url_sip && ruri->url_type != url_sips) ||
            !registrar_domain_managed(reg, ruri->url_host))
                return MODULE_CONTINUE;

        if (sip->sip_max_forwards && sip->sip_max_forwards->mf_count == 0) {
                proxy_request_reply(req, SIP_483_TOO_MANY_HOPS, TAG_END());
                return MODULE_STOP;
        }
        _cleanup_free_ char *text = url_as_string(NULL, ruri);
        _cleanup_free_ char *aor = text ? registrar_aor_normalize(text) : NULL;
        if (!aor || !ruri->url_user) {
                stats_inc(rt->count_not_found);
                proxy_request_reply(req, SIP_404_NOT_FOUND, TAG_END());
                return MODULE_STOP;
        }
        struct route_op *op = calloc(1, sizeof *op);
        if (!op) {
                log_oom();
                proxy_request_reply(req, SIP_500_INTERNAL_SERVER_ERROR, TAG_END());
                return MODULE_STOP;
        }
        *op = (struct route_op){.router = rt, .req = req, .sips = ruri->url_type == url_sips};
        char gr[256];
        if (ruri->url_params && url_param(ruri->url_params, "gr", gr, sizeof gr) > 1) {
                /* A GRUU (RFC 5627): the device it names, not the whole AOR. */
                url_unescape(gr, gr);
                op->gruu_instance = strdup(gr);
                if (!op->gruu_instance) {
                        free(op);
                        log_oom();
                        proxy_request_reply(req, SIP_500_INTERNAL_SERVER_ERROR, TAG_END());
                        return MODULE_STOP;
                }
        }
        proxy_request_trying(req);
        struct registrar_store *store = registrar_get_store(reg);
        int r = store->ops->fetch(store, aor, on_fetched, op);
        if (r < 0) {
                free(op->gruu_instance);
                free(op);
                log_warning_errno(r, "Registrar lookup of '%s' failed: %m", aor);
                proxy_request_reply(req, SIP_503_SERVICE_UNAVAILABLE, SIPTAG_RETRY_AFTER_STR("5"),
                                    TAG_END());
                return MODULE_STOP;
        }
        return MODULE_SUSPEND;
}

/* ---- fork-late ---- */

static void on_restore_fetched(int error, struct registrar_record *rec, void *userdata) {
        _cleanup_(registrar_record_freep) struct registrar_record *record = rec;
        struct router *rt = userdata;
        rt->restoring--;
        if (error < 0) {
                log_warning_errno(error, "Registrar lookup failed for a restored message: %m");
                return;
        }
        fork_late_on_register(rt->module->proxy, record);
}

static void on_stored_message(const struct message_store_entry *e, void *userdata) {
        struct router *c = userdata;
        struct proxy *p = c->module->proxy;
        int r = fork_restore(p, e);
        if (r < 0) {
                log_warning_errno(r, "Stored message %" PRId64 " for '%s' cannot be restored, "
                                     "dropping it: %m", e->id, e->aor);
                c->broken++;
                message_store_remove(p->message_store, e->id);
                return;
        }
        c->restored++;
        if (!strv_contains(c->restored_aors, e->aor) && strv_extend(&c->restored_aors, e->aor) < 0)
                log_oom();
}

/* The end of a restore batch (at the start, or messages taken over from a dead node). */
static void on_restore_done(int result, void *userdata) {
        struct router *rt = userdata;
        struct proxy *p = rt->module->proxy;
        if (rt->restored || rt->broken)
                log_notice("%u pending message(s) restored from %s (%u unreadable, dropped).",
                           rt->restored, rt->store_where, rt->broken);
        rt->restored = rt->broken = 0;
        /* Devices already registered get them now. */
        struct registrar *reg = proxy_registrar(p);
        struct registrar_store *store = reg ? registrar_get_store(reg) : NULL;
        STRV_FOREACH(a, rt->restored_aors)
                if (store && store->ops->fetch(store, *a, on_restore_fetched, rt) >= 0)
                        rt->restoring++;
        strv_free(rt->restored_aors);
        rt->restored_aors = NULL;
}

/* With the Redis registrar: the pending messages in Redis too. */
static int message_store_redis_start(struct router *rt, const struct redis_config *rc,
                                     const char *registrar_prefix) {
        struct proxy *p = rt->module->proxy;
        int r = message_store_redis_open(p, rc, registrar_prefix, rt->message_store_node,
                                         rt->message_redis_prefix, rt->message_owner_ttl_ms,
                                         &p->message_store);
        if (r < 0)
                return r;
        rt->store_where = "Redis";
        return message_store_start(p->message_store, on_stored_message, on_restore_done, rt);
}

static int router_store_start(struct router *rt) {
        struct proxy *p = rt->module->proxy;
        _cleanup_free_ char *path = NULL;
        const char *state = getenv("STATE_DIRECTORY");
        struct registrar *reg = proxy_registrar(p);
        const char *registrar_prefix = NULL;
        const struct redis_config *rc = reg ? registrar_redis_config(reg, &registrar_prefix)
                                            : NULL;
        if (rc)
                return message_store_redis_start(rt, rc, registrar_prefix);
        if (!isempty(rt->message_database_path))
                path = strdup(rt->message_database_path);
        else if (!isempty(state) &&
                 asprintf(&path, "%.*s/messages.db", (int)strcspn(state, ":"), state) < 0)
                path = NULL;
        if (!path && (!isempty(rt->message_database_path) || !isempty(state)))
                return log_oom();
        if (!path) {
                if (rt->fork.message_fork_late)
                        log_warning("[module::Router] message-database-path is empty and "
                                    "$STATE_DIRECTORY is not set: pending messages are kept in "
                                    "memory only.");
                return 0;
        }
        int r = message_store_sqlite_open(path, &p->message_store);
        if (r < 0)
                return log_error_errno(r, "Failed to open the message database '%s': %m", path);
        rt->store_where = "the message database";
        /* The restore runs within (SQLite is read synchronously). */
        return message_store_start(p->message_store, on_stored_message, on_restore_done, rt);
}

static int cli_pending(struct ctl_request *req, int argc, char **argv, void *userdata) {
        struct router *rt = userdata;
        if (argc > 2) {
                ctl_reply_error(req, "Usage: MESSAGES_PENDING [<aor>]");
                return 0;
        }
        _cleanup_free_ char *aor = argc == 2 ? registrar_aor_normalize(argv[1]) : NULL;
        if (argc == 2 && !aor) {
                ctl_reply_error(req, "Not a SIP address: '%s'", argv[1]);
                return 0;
        }
        json_t *list = fork_pending_messages(rt->module->proxy, aor);
        ctl_reply(req, json_pack("{s:o}", "messages", list ? list : json_array()));
        return 0;
}

static uint64_t pending_messages(void *userdata) {
        struct router *rt = userdata;
        return fork_n_pending_messages(rt->module->proxy);
}

static uint64_t store_errors(void *userdata) {
        struct router *rt = userdata;
        struct message_store *s = rt->module->proxy->message_store;
        return s ? s->n_errors : 0;
}

static uint64_t store_ready(void *userdata) {
        struct router *rt = userdata;
        struct message_store *s = rt->module->proxy->message_store;
        return s && s->ops->ready(s);
}

static uint64_t live_forks(void *userdata) {
        struct router *rt = userdata;
        return fork_count(rt->module->proxy);
}

static int router_init(struct module *m) {
        struct router *rt = m->state;
        struct proxy *p = m->proxy;
        struct stats *s = proxy_stats(p);
        rt->module = m;
        if (rt->fork.timer_c_ms < 1000)
                return log_error_errno(EINVAL, "[module::Router] timer-c must be at least 1s.");
        if (rt->fork.call_fork_timeout_ms < 1000 || rt->fork.message_delivery_timeout_ms < 1000)
                return log_error_errno(EINVAL, "[module::Router] call-fork-timeout and "
                                               "message-delivery-timeout must be at least 1s.");
        for (size_t i = 0; i < p->n_modules; i++)
                if (p->modules[i] == m)
                        rt->fork.chain_next = i + 1;
        p->fork_config = &rt->fork;
        rt->count_forks = stats_declare(s, m->desc->section, "count-forks",
                                        "Requests forked to the bindings of an address");
        rt->count_not_found = stats_declare(s, m->desc->section, "count-not-found",
                                            "Requests for an address with no binding (404)");
        rt->count_unavailable = stats_declare(s, m->desc->section, "count-unavailable",
                                              "Requests with no usable binding (480)");
        rt->count_stored = stats_declare(s, m->desc->section, "count-messages-stored",
                                         "MESSAGEs accepted for store-and-forward");
        rt->count_refused = stats_declare(s, m->desc->section, "count-messages-refused",
                                          "MESSAGEs refused by a store limit");
        int r = stats_declare_gauge(s, m->desc->section, "live-forks",
                                    "Forks (stateful relays) in progress", live_forks, rt);
        if (r >= 0)
                r = stats_declare_gauge(s, m->desc->section, "pending-messages",
                                        "Stored MESSAGEs waiting for a device", pending_messages,
                                        rt);
        if (r >= 0)
                r = stats_declare_gauge(s, m->desc->section, "message-store-errors",
                                        "Writes and loads of the message store that failed",
                                        store_errors, rt);
        if (r >= 0)
                r = stats_declare_gauge(s, m->desc->section, "message-store-ready",
                                        "1 when the message store takes writes and restored "
                                        "this proxy's pending messages",
                                        store_ready, rt);
        if (r < 0)
                return log_error_errno(r, "Failed to declare the router gauges: %m");
        struct ctl *ctl = daemon_ctl(p->daemon);
        if (ctl && (r = ctl_register(ctl, "MESSAGES_PENDING",
                                     "MESSAGES_PENDING [<aor>]: stored messages waiting for "
                                     "devices, and for whom",
                                     cli_pending, rt)) < 0)
                return log_error_errno(r, "Failed to register MESSAGES_PENDING: %m");
        return router_store_start(rt);
}

static void router_done(struct module *m) {
        struct router *rt = m->state;
        /* Forks end first (proxy_free): what is pending stays in the store. */
        message_store_close(m->proxy->message_store);
        m->proxy->message_store = NULL;
        strv_free(rt->restored_aors);
        rt->restored_aors = NULL;
        if (m->proxy->fork_config == &rt->fork)
                m->proxy->fork_config = NULL;
}

const struct module_desc module_router = {
        .name = "Router",
        .section = "module::Router",
        .doc = "Routes requests for the managed domains to the registered devices, forking to "
               "all of them.",
        .default_enabled = true,
        .state_size = sizeof(struct router),
        .rows = router_rows,
        .n_rows = ELEMENTSOF(router_rows),
        .init = router_init,
        .on_request = router_request,
        .done = router_done,
};
