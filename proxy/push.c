/* SPDX-License-Identifier: MIT */
/* PushNotification: wakes sleeping phones. After Router, each branch request whose Request-URI
 * (the device's contact) carries push parameters and which needs a push (an INVITE without
 * Replaces, a MESSAGE that is not an is-composing notice, an IMDN or non-urgent) arms a push:
 * sent when the device has not answered within `timeout`, at once when the branch fails as
 * unreachable (503, 408), never when the device answers first. The job goes to sipfleet-pushd,
 * through its Redis Stream when `redis-server` is set, else by POST to `pushd-url`; the caller
 * of an INVITE gets "110 Push sent" once. With fork-late the device, once awake, registers and
 * gets the request on its new contact (fork.c). A device woken by an APNs VoIP push is marked
 * on its branch: if the call ends before it registers, fork.c still gives it the INVITE and
 * then the CANCEL, as CallKit requires. Dead tokens that pushd publishes remove their
 * binding.
 *
 * Push parameters (RFC 8599 in the contact URI): pn-provider (apns, apns.dev, fcm; android and
 * firebase taken as fcm), pn-prid, pn-param. APNs: pn-param = "<team>.<bundle>[.<services>]"
 * with services remote, voip or remote&voip, pn-prid = "<token>" or
 * "<token>:remote&<token>:voip". FCM: pn-param = the project (id or number), pn-prid = the
 * registration token. Legacy Linphone parameters pn-type (apple, android, firebase, google),
 * pn-tok and app-id ("<bundle>.<dev|prod>") are converted. */
#define LOG_SUBSYSTEM LOG_push
#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>

#include <sofia-sip/msg_header.h>
#include <sofia-sip/sip_util.h>

#include "daemon.h"
#include "fork.h"
#include "http2.h"
#include "loop.h"
#include "module.h"
#include "proxy.h"
#include "push.h"
#include "redis.h"
#include "registrar-store.h"
#include "registrar.h"
#include "stats.h"

struct push_module {
        /* configuration */
        uint64_t timeout_ms;
        uint64_t call_ttl_ms, message_ttl_ms;
        char *pushd_url;
        char *bearer_token;
        char *ca_file;
        char *redis_host;
        int64_t redis_port;
        char *redis_password;
        char *stream;
        char *dead_token_channel;

        struct module *module;
        struct http2 *http;
        struct redis *redis;
        unsigned pending; /* contexts alive */
        struct stats_counter *count_armed, *count_sent, *count_failed, *count_cancelled;
        struct stats_counter *count_dead_tokens;
};

#define P(field) offsetof(struct push_module, field)
static const struct conf_option push_rows[] = {
        {"module::PushNotification", "timeout", CONF_DURATION, P(timeout_ms), "5s", 0, 0, 0,
         "A device that has not answered this long after a request was sent to it is pushed; "
         "0 = push at once", .unit = CONF_UNIT_S},
        {"module::PushNotification", "call-ttl", CONF_DURATION, P(call_ttl_ms), "90s", 0, 0, 0,
         "Lifetime of a call push at the provider", .unit = CONF_UNIT_S},
        {"module::PushNotification", "message-ttl", CONF_DURATION, P(message_ttl_ms), "7d", 0, 0,
         0, "Lifetime of a message push at the provider", .unit = CONF_UNIT_S},
        {"module::PushNotification", "pushd-url", CONF_STRING, P(pushd_url), NULL, 0, 0, 0,
         "sipfleet-pushd's HTTP intake (http://host:port/v1/push), used when "
         "redis-server-domain is empty"},
        {"module::PushNotification", "pushd-bearer-token", CONF_STRING, P(bearer_token), NULL, 0,
         0, CONF_SECRET, "The bearer token pushd's HTTP intake requires"},
        {"module::PushNotification", "pushd-ca-file", CONF_STRING, P(ca_file), NULL, 0, 0, 0,
         "CA certificates for an https pushd-url; empty = the system's"},
        {"module::PushNotification", "redis-server-domain", CONF_STRING, P(redis_host), NULL, 0, 0,
         0, "Redis server (an address) holding pushd's job stream; empty = HTTP to pushd-url"},
        {"module::PushNotification", "redis-server-port", CONF_INT, P(redis_port), "6379", 1, 65535,
         0, "Port of redis-server-domain"},
        {"module::PushNotification", "redis-password", CONF_STRING, P(redis_password), NULL, 0, 0,
         CONF_SECRET, "Password of redis-server"},
        {"module::PushNotification", "stream", CONF_STRING, P(stream), "sipfleet:push:jobs", 0, 0,
         0, "pushd's job stream"},
        {"module::PushNotification", "dead-token-channel", CONF_STRING, P(dead_token_channel),
         "sipfleet:push:dead-tokens", 0, 0, 0,
         "Channel where pushd publishes tokens the provider refused for good: their binding is "
         "removed"},
};

/* ---- push parameters ---- */

/* A URI parameter's value, %-escapes decoded. */
static bool param_get(const char *params, const char *name, char *buf, size_t size) {
        if (url_param(params, name, buf, size) <= 0)
                return false;
        url_unescape(buf, buf);
        return true;
}

int push_target_parse(const url_t *uri, struct push_target *t) {
        char buf[2048];
        *t = (struct push_target){0};
        const char *params = uri->url_params;
        if (!params)
                return -ENOENT;
        _cleanup_free_ char *provider = NULL, *prid = NULL, *param = NULL;
        _cleanup_free_ char *type = NULL, *tok = NULL, *app_id = NULL;
        if (param_get(params, "pn-provider", buf, sizeof buf) && !(provider = strdup(buf)))
                goto oom;
        if (param_get(params, "pn-prid", buf, sizeof buf) && !(prid = strdup(buf)))
                goto oom;
        if (param_get(params, "pn-param", buf, sizeof buf) && !(param = strdup(buf)))
                goto oom;
        if (param_get(params, "pn-type", buf, sizeof buf) && !(type = strdup(buf)))
                goto oom;
        if (param_get(params, "pn-tok", buf, sizeof buf) && !(tok = strdup(buf)))
                goto oom;
        if (param_get(params, "app-id", buf, sizeof buf) && !(app_id = strdup(buf)))
                goto oom;
        if (!provider && type && tok) {
                /* Legacy Linphone parameters. */
                if (strcaseeq(type, "apple")) {
                        size_t n = app_id ? strlen(app_id) : 0;
                        bool dev = n > 4 && strcaseeq(app_id + n - 4, ".dev");
                        bool prod = n > 5 && strcaseeq(app_id + n - 5, ".prod");
                        free(param);
                        free(prid);
                        param = prid = NULL;
                        provider = strdup(dev ? "apns.dev" : "apns");
                        if (app_id && (dev || prod))
                                app_id[n - (dev ? 4 : 5)] = '\0';
                        /* The old parameters name one token for both kinds. */
                        if (app_id && asprintf(&param, "ABCD1234.%s.remote&voip", app_id) < 0)
                                param = NULL;
                        if (asprintf(&prid, "%s:remote&%s:voip", tok, tok) < 0)
                                prid = NULL;
                } else if (strcaseeq(type, "android") || strcaseeq(type, "firebase") ||
                           strcaseeq(type, "google")) {
                        free(param);
                        free(prid);
                        provider = strdup("fcm");
                        param = app_id ? strdup(app_id) : NULL;
                        prid = strdup(tok);
                } else
                        return -EPROTONOSUPPORT;
                if (!provider || !prid || (app_id && !param))
                        goto oom;
        }
        if (!provider || !prid || !*prid)
                return -ENOENT;

        if (strcaseeq(provider, "apns") || strcaseeq(provider, "apns.dev")) {
                t->provider = PUSH_APNS;
                t->sandbox = strcaseeq(provider, "apns.dev");
                if (!param)
                        return -EINVAL;
                /* "<team>.<bundle>[.<services>]" */
                char *dot = strchr(param, '.');
                if (!dot || !dot[1])
                        return -EINVAL;
                char *bundle = dot + 1;
                char *last = strrchr(bundle, '.');
                const char *services = "remote";
                if (last && (streq(last + 1, "voip") || streq(last + 1, "remote") ||
                             streq(last + 1, "remote&voip") || streq(last + 1, "voip&remote"))) {
                        services = last + 1;
                        *last = '\0';
                }
                if (!(t->app_id = strdup(bundle)))
                        goto oom;
                bool voip = strstr(services, "voip"), remote = strstr(services, "remote");
                /* "<token>" or "<token>:remote&<token>:voip" */
                if (!strpbrk(prid, ":&")) {
                        if (voip && !remote)
                                t->voip_token = strdup(prid);
                        else
                                t->remote_token = strdup(prid);
                } else {
                        char *save = NULL;
                        for (char *part = strtok_r(prid, "&", &save); part;
                             part = strtok_r(NULL, "&", &save)) {
                                char *colon = strchr(part, ':');
                                if (!colon)
                                        return -EINVAL;
                                *colon = '\0';
                                if (streq(colon + 1, "voip"))
                                        t->voip_token = strdup(part);
                                else if (streq(colon + 1, "remote"))
                                        t->remote_token = strdup(part);
                        }
                }
                if (!t->voip_token && !t->remote_token)
                        return -EINVAL;
                return 0;
        }
        if (strcaseeq(provider, "fcm") || strcaseeq(provider, "firebase") ||
            strcaseeq(provider, "android")) {
                t->provider = PUSH_FCM;
                if (!param || !(t->app_id = strdup(param)) || !(t->remote_token = strdup(prid)))
                        return param ? -ENOMEM : -EINVAL;
                return 0;
        }
        return -EPROTONOSUPPORT;
oom:
        return -ENOMEM;
}

void push_target_done(struct push_target *t) {
        free(t->app_id);
        free(t->remote_token);
        free(t->voip_token);
        *t = (struct push_target){0};
}

/* What kind of push the request calls for: NULL when none. */
static const char *push_kind(const sip_t *sip) {
        switch (sip->sip_request->rq_method) {
        case sip_method_invite:
                if (sip->sip_replaces || (sip->sip_to && sip->sip_to->a_tag))
                        return NULL;
                return "call";
        case sip_method_message: {
                const char *ct = sip->sip_content_type ? sip->sip_content_type->c_type : NULL;
                if (ct && (strcaseeq(ct, "application/im-iscomposing+xml") ||
                           strcaseeq(ct, "message/imdn+xml")))
                        return NULL;
                if (sip->sip_priority && sip->sip_priority->g_string &&
                    strcaseeq(sip->sip_priority->g_string, "non-urgent"))
                        return NULL;
                return "message";
        }
        default:
                return NULL;
        }
}

char *push_job_json(const struct push_target *t, const sip_t *request, const char *kind,
                    uint64_t ttl_s, const char *id) {
        const char *token, *type;
        if (t->provider == PUSH_APNS) {
                /* A call wants PushKit; without a VoIP token, an alert. */
                if (streq(kind, "call") && t->voip_token) {
                        token = t->voip_token;
                        type = "call";
                } else {
                        token = t->remote_token ? t->remote_token : t->voip_token;
                        type = t->remote_token ? "message" : "call";
                }
        } else {
                token = t->remote_token;
                type = kind;
        }
        _cleanup_free_ char *from = NULL;
        const char *name = NULL;
        if (request->sip_from) {
                from = url_as_string(NULL, request->sip_from->a_url);
                name = request->sip_from->a_display;
        }
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I}", "provider",
                              t->provider == PUSH_APNS ? "apns" : "fcm", "token", token, "app-id",
                              t->app_id, "type", type, "ttl", (json_int_t)ttl_s);
        if (!j)
                return NULL;
        if (t->sandbox)
                json_object_set_new(j, "sandbox", json_true());
        if (from)
                json_object_set_new(j, "from-uri", json_string(from));
        if (name && *name) {
                /* A quoted display name loses its quotes. */
                size_t n = strlen(name);
                if (n >= 2 && name[0] == '"' && name[n - 1] == '"')
                        json_object_set_new(j, "from-name", json_stringn(name + 1, n - 2));
                else
                        json_object_set_new(j, "from-name", json_string(name));
        }
        if (request->sip_call_id)
                json_object_set_new(j, "call-id", json_string(request->sip_call_id->i_id));
        if (streq(kind, "call") && request->sip_call_id && strlen(request->sip_call_id->i_id) <= 64)
                json_object_set_new(j, "collapse-id", json_string(request->sip_call_id->i_id));
        if (id && strlen(id) <= 128)
                json_object_set_new(j, "id", json_string(id));
        char *text = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        return text;
}

/* ---- one armed push ---- */

struct push_ctx {
        struct push_module *pm;
        struct fork_branch *branch;
        struct loop_timer *timer;
        char *job;
        char *what; /* for logs: "call to '<aor>' device '<uid>'" */
        bool voip;  /* an APNs VoIP (PushKit) push: the device must then get the INVITE */
};

static void ctx_free(struct push_ctx *c) {
        if (!c)
                return;
        c->pm->pending--;
        loop_timer_free(c->timer);
        free(c->job);
        free(c->what);
        free(c);
}

static void on_http_done(const struct http2_response *resp, void *userdata) {
        struct push_module *pm = userdata;
        if (resp->error < 0 || resp->status < 200 || resp->status >= 300) {
                stats_inc(pm->count_failed);
                if (resp->error < 0)
                        log_warning_ratelimited("pushd at '%s' unreachable: %s", pm->pushd_url,
                                                strna(resp->error_text));
                else
                        log_warning_ratelimited("pushd refused a job: %ld %.*s", resp->status,
                                                (int)MIN(resp->body_len, 200), strempty(resp->body));
                return;
        }
        stats_inc(pm->count_sent);
}

static void on_xadd(struct redis *r, struct redisReply *reply, int error, void *userdata) {
        struct push_module *pm = userdata;
        if (error < 0 || !reply || reply->type == REDIS_REPLY_ERROR) {
                stats_inc(pm->count_failed);
                log_warning("Failed to queue a push job in Redis: %s",
                            error < 0 ? strerror(-error) : reply ? reply->str : "?");
                return;
        }
        stats_inc(pm->count_sent);
}

static int submit(struct push_module *pm, const char *job) {
        if (pm->redis)
                return redis_command(pm->redis, on_xadd, pm, "XADD %s * job %s", pm->stream, job);
        struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
        if (pm->bearer_token) {
                _cleanup_free_ char *auth = NULL;
                if (asprintf(&auth, "Authorization: Bearer %s", pm->bearer_token) < 0) {
                        curl_slist_free_all(h);
                        return -ENOMEM;
                }
                h = curl_slist_append(h, auth);
        }
        if (!h)
                return -ENOMEM;
        const struct http2_request req = {
                .method = "POST",
                .url = pm->pushd_url,
                .headers = h,
                .body = job,
                .body_len = strlen(job),
                .ca_file = pm->ca_file,
                .timeout_ms = 10000,
        };
        return http2_send(pm->http, &req, on_http_done, pm, NULL);
}

static void ctx_send(struct push_ctx *c) {
        struct push_module *pm = c->pm;
        int r = submit(pm, c->job);
        if (r < 0) {
                stats_inc(pm->count_failed);
                log_warning_errno(r, "Failed to send the push for the %s: %m", c->what);
        } else {
                log_info("Push sent for the %s.", c->what);
                if (c->voip)
                        fork_branch_voip_pushed(c->branch);
                fork_branch_push_sent(c->branch);
        }
}

static void on_push_timer(struct loop_timer *t, void *userdata) {
        struct push_ctx *c = userdata;
        fork_branch_unobserve(c->branch);
        ctx_send(c);
        ctx_free(c);
}

static void on_branch_event(struct fork_branch *b, int status, void *userdata) {
        struct push_ctx *c = userdata;
        if (status == 503 || status == 408) {
                /* Unreachable: no point waiting; sent from the loop, not from inside the
                 * fork's callback. */
                loop_timer_arm(c->timer, 0);
                return;
        }
        if (status > 0)
                log_debug("The device answered %d: no push for the %s.", status, c->what);
        stats_inc(c->pm->count_cancelled);
        fork_branch_unobserve(b);
        ctx_free(c);
}

static enum module_result push_request(struct module *m, struct proxy_request *req) {
        struct push_module *pm = m->state;
        struct fork_branch *b = req->branch;
        if (!b)
                return MODULE_CONTINUE;
        const sip_t *sip = req->sip;
        const char *kind = push_kind(sip);
        if (!kind)
                return MODULE_CONTINUE;
        struct push_target t;
        int r = push_target_parse(sip->sip_request->rq_url, &t);
        if (r == -ENOENT)
                return MODULE_CONTINUE;
        if (r < 0) {
                const char *uri = fork_branch_uri(b);
                log_warning_ratelimited("Unusable push parameters in '%.*s': %s, no push.",
                                        (int)strcspn(uri, ";?"), uri, strerror(-r));
                push_target_done(&t);
                return MODULE_CONTINUE;
        }
        const char *token = streq(kind, "call") && t.voip_token ? t.voip_token
                            : t.remote_token                     ? t.remote_token
                                                                 : t.voip_token;
        struct push_ctx *c = NULL;
        _cleanup_free_ char *id = NULL;
        if (!fork_branch_first_use(b, token)) {
                log_debug("Device already pushed for this request.");
                goto out;
        }
        const char *aor = fork_branch_aor(b), *uid = fork_branch_uid(b);
        if (aor && uid && asprintf(&id, "%s|%s", aor, uid) < 0)
                id = NULL;
        uint64_t ttl = streq(kind, "call") ? pm->call_ttl_ms : pm->message_ttl_ms;
        c = calloc(1, sizeof *c);
        if (!c)
                goto oom;
        c->pm = pm;
        pm->pending++;
        c->branch = b;
        c->voip = t.provider == PUSH_APNS && streq(kind, "call") && t.voip_token;
        c->job = push_job_json(&t, fork_branch_request(b), kind, ttl / 1000, id);
        if (!c->job || asprintf(&c->what, "%s to '%s'", kind, aor ? aor : "?") < 0)
                goto oom;
        if (loop_timer_new(daemon_loop(m->proxy->daemon), on_push_timer, c, &c->timer) < 0 ||
            fork_branch_observe(b, on_branch_event, c) < 0)
                goto oom;
        stats_inc(pm->count_armed);
        loop_timer_arm(c->timer, pm->timeout_ms);
        c = NULL;
out:
        push_target_done(&t);
        return MODULE_CONTINUE;
oom:
        log_oom();
        ctx_free(c);
        push_target_done(&t);
        return MODULE_CONTINUE;
}

/* ---- dead tokens ---- */

static void on_removed(int error, struct registrar_record *rec, void *userdata) {
        registrar_record_free(rec);
        if (error < 0 && error != -ENOENT)
                log_warning_errno(error, "Failed to remove a binding with a dead push token: %m");
}

static void on_dead_token(struct redis *r, const struct redis_message *msg, void *userdata) {
        struct push_module *pm = userdata;
        if (msg->type != REDIS_MESSAGE_DATA)
                return;
        json_error_t err;
        json_t *j = json_loadb(msg->data, msg->len, 0, &err);
        const char *id = json_string_value(json_object_get(j, "job-id"));
        const char *bar = id ? strchr(id, '|') : NULL;
        struct registrar *reg = proxy_registrar(pm->module->proxy);
        if (bar && reg) {
                _cleanup_free_ char *aor = strndup(id, (size_t)(bar - id));
                const char *reason = json_string_value(json_object_get(j, "reason"));
                struct registrar_store *s = registrar_get_store(reg);
                log_notice("Push token of '%s' device '%s' is dead (%s): removing the binding.",
                           strna(aor), bar + 1, strna(reason));
                stats_inc(pm->count_dead_tokens);
                if (aor && s->ops->remove(s, aor, bar + 1, on_removed, NULL) < 0)
                        log_warning("Failed to remove the binding of '%s'.", aor);
        }
        json_decref(j);
}

/* ---- module ---- */

static int push_init(struct module *m) {
        struct push_module *pm = m->state;
        struct proxy *p = m->proxy;
        struct stats *s = proxy_stats(p);
        struct loop *l = daemon_loop(p->daemon);
        int r;
        pm->module = m;
        pm->count_armed = stats_declare(s, m->desc->section, "count-pn-armed",
                                        "Branches that would wake their device if it stays silent");
        pm->count_sent = stats_declare(s, m->desc->section, "count-pn-sent",
                                       "Push jobs handed to pushd");
        pm->count_failed = stats_declare(s, m->desc->section, "count-pn-failed",
                                         "Push jobs pushd did not take");
        pm->count_cancelled = stats_declare(s, m->desc->section, "count-pn-cancelled",
                                            "Pushes not sent: the device answered first");
        pm->count_dead_tokens = stats_declare(s, m->desc->section, "count-dead-tokens",
                                              "Bindings removed because pushd found their token "
                                              "dead");
        if (!isempty(pm->redis_host)) {
                const struct redis_config rc = {.host = pm->redis_host,
                                                .port = (uint16_t)pm->redis_port,
                                                .password = pm->redis_password,
                                                .client_name = "sipfleet-proxy-push"};
                r = redis_new(l, &rc, &pm->redis);
                if (r < 0)
                        return log_error_errno(r, "Failed to set up Redis for pushes: %m");
                if (!isempty(pm->dead_token_channel) &&
                    (r = redis_subscribe(pm->redis, pm->dead_token_channel, on_dead_token, pm)) <
                            0)
                        return log_error_errno(r, "Failed to subscribe to '%s': %m",
                                               pm->dead_token_channel);
                return 0;
        }
        if (isempty(pm->pushd_url))
                return log_error_errno(EINVAL, "[module::PushNotification] is enabled but neither "
                                               "redis-server-domain nor pushd-url is set.");
        if (strncasecmp(pm->pushd_url, "http://", 7) != 0 &&
            strncasecmp(pm->pushd_url, "https://", 8) != 0)
                return log_error_errno(EINVAL, "[module::PushNotification] pushd-url '%s' is not "
                                               "an http:// or https:// URL.", pm->pushd_url);
        r = http2_new(l, &pm->http);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the HTTP client: %m");
        return 0;
}

static void push_done(struct module *m) {
        struct push_module *pm = m->state;
        http2_free(pm->http);
        pm->http = NULL;
        redis_free(pm->redis);
        pm->redis = NULL;
}

const struct module_desc module_push = {
        .name = "PushNotification",
        .section = "module::PushNotification",
        .doc = "Wakes devices with push parameters in their contact through sipfleet-pushd.",
        .default_enabled = false,
        .state_size = sizeof(struct push_module),
        .rows = push_rows,
        .n_rows = ELEMENTSOF(push_rows),
        .init = push_init,
        .on_request = push_request,
        .done = push_done,
};
