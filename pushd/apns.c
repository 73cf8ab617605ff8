/* SPDX-License-Identifier: MIT */
#define LOG_SUBSYSTEM LOG_push
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <time.h>

#include "apns.h"
#include "http2.h"
#include "job.h"
#include "jwt.h"
#include "log.h"
#include "loop.h"

/* Apple's limits: 4 KiB for regular pushes, 5 KiB for VoIP pushes. */
#define APNS_MAX_PAYLOAD      4096
#define APNS_MAX_VOIP_PAYLOAD 5120

struct apns {
        struct apns_config cfg; /* strings borrowed from the daemon's config */
        struct http2 *h;
        struct push_http_settings settings;
        struct evp_pkey_st *key;
        char *jwt;
        uint64_t jwt_issued; /* monotonic ms */
};

struct apns_request {
        struct apns *a;
        push_done_fn cb;
        void *userdata;
        bool token_auth;
};

int apns_new(const struct apns_config *cfg, struct http2 *h, const struct push_http_settings *s,
             struct apns **ret, char **error) {
        *ret = NULL;
        *error = NULL;
        bool token = !isempty(cfg->key_file), cert = !isempty(cfg->certificate_file);
        if (!token && !cert)
                return 0;
        if (token && cert)
                return asprintf(error, "[apns] give either key-file (token-based "
                                       "authentication) or certificate-file, not both") < 0
                               ? -ENOMEM
                               : -EINVAL;
        if (token && (isempty(cfg->key_id) || isempty(cfg->team_id)))
                return asprintf(error, "[apns] key-file needs key-id and team-id") < 0 ? -ENOMEM
                                                                                       : -EINVAL;
        struct apns *a = calloc(1, sizeof *a);
        if (!a)
                return -ENOMEM;
        a->cfg = *cfg;
        a->h = h;
        a->settings = *s;
        if (token) {
                int r = jwt_load_key_file(cfg->key_file, JWT_ES256, &a->key);
                if (r < 0) {
                        free(a);
                        return asprintf(error, "[apns] key-file '%s': %s", cfg->key_file,
                                        r == -EINVAL ? "not a PEM P-256 private key (.p8)"
                                                     : strerror(-r)) < 0
                                       ? -ENOMEM
                                       : -EINVAL;
                }
        } else if (access(cfg->certificate_file, R_OK) < 0 ||
                   (cfg->certificate_key_file && access(cfg->certificate_key_file, R_OK) < 0)) {
                int e = errno;
                free(a);
                return asprintf(error, "[apns] certificate files: %s", strerror(e)) < 0 ? -ENOMEM
                                                                                        : -EINVAL;
        }
        *ret = a;
        return 0;
}

void apns_free(struct apns *a) {
        if (!a)
                return;
        jwt_key_free(a->key);
        free(a->jwt);
        free(a);
}

/* The provider token, made again when older than token_lifetime_ms (Apple refuses tokens
 * older than an hour and renewals more often than every 20 minutes). */
static const char *provider_token(struct apns *a, bool force) {
        uint64_t now = now_msec();
        if (a->jwt && !force && now - a->jwt_issued < a->cfg.token_lifetime_ms)
                return a->jwt;
        json_t *header = json_pack("{s:s}", "kid", a->cfg.key_id);
        json_t *claims =
                json_pack("{s:s,s:I}", "iss", a->cfg.team_id, "iat", (json_int_t)time(NULL));
        char *jwt = NULL;
        int r = header && claims ? jwt_sign(a->key, JWT_ES256, header, claims, &jwt) : -ENOMEM;
        json_decref(header);
        json_decref(claims);
        if (r < 0) {
                log_error_errno(r, "Cannot sign the APNs provider token: %m");
                return a->jwt;
        }
        free(a->jwt);
        a->jwt = jwt;
        a->jwt_issued = now;
        log_info("New APNs provider token for key id '%s'.", a->cfg.key_id);
        return a->jwt;
}

static void set_if(json_t *o, const char *key, const char *value) {
        if (value)
                json_object_set_new(o, key, json_string(value));
}

json_t *apns_payload(const struct push_job *j) {
        json_t *p = json_object(), *aps = json_object();
        if (!p || !aps) {
                json_decref(p);
                json_decref(aps);
                return NULL;
        }
        const char *from = j->from_name ? j->from_name : j->from_uri;
        switch (j->type) {
        case PUSH_TYPE_CALL:
                /* PushKit: the app reports the call to CallKit from these fields. */
                break;
        case PUSH_TYPE_MESSAGE: {
                json_t *alert = json_object();
                if (j->text) {
                        if (from)
                                json_object_set_new(alert, "title", json_string(from));
                        json_object_set_new(alert, "body", json_string(j->text));
                } else {
                        json_object_set_new(alert, "loc-key",
                                            json_string(j->loc_key ? j->loc_key : "IM_MSG"));
                        json_object_set_new(alert, "loc-args", json_pack("[s]", strempty(from)));
                }
                json_object_set_new(aps, "alert", alert);
                json_object_set_new(aps, "sound", json_string("default"));
                /* A notification service extension may decrypt or rewrite it. */
                json_object_set_new(aps, "mutable-content", json_integer(1));
                break;
        }
        case PUSH_TYPE_BACKGROUND:
                json_object_set_new(aps, "content-available", json_integer(1));
                break;
        default:
                break;
        }
        json_object_set_new(p, "aps", aps);
        json_object_set_new(p, "type", json_string(push_type_name(j->type)));
        set_if(p, "from-uri", j->from_uri);
        set_if(p, "from-name", j->from_name);
        set_if(p, "call-id", j->call_id);
        set_if(p, "msg-id", j->msg_id);
        set_if(p, "uuid", j->uuid);
        json_object_set_new(p, "send-time", json_integer((json_int_t)(realtime_msec() / 1000)));
        if (j->custom)
                json_object_set(p, "custom", j->custom);
        return p;
}

static void result_from(struct push_result *res, enum push_outcome o, long status,
                        const char *reason) {
        res->outcome = o;
        res->status = status;
        snprintf(res->reason, sizeof res->reason, "%s", reason ? reason : "");
}

static void on_response(const struct http2_response *resp, void *userdata) {
        struct apns_request *req = userdata;
        struct push_result res = {0};
        if (resp->error < 0) {
                result_from(&res, PUSH_OUTCOME_RETRY, 0, resp->error_text);
                goto done;
        }
        const char *reason = NULL;
        json_t *body = resp->body_len ? json_loadb(resp->body, resp->body_len, 0, NULL) : NULL;
        if (body)
                reason = json_string_value(json_object_get(body, "reason"));
        long st = resp->status;
        enum push_outcome o;
        if (st == 200)
                o = PUSH_OUTCOME_SENT;
        else if (st == 410 || (st == 400 && reason && streq(reason, "BadDeviceToken")))
                o = PUSH_OUTCOME_DEAD_TOKEN;
        else if (st == 403 && req->token_auth && reason &&
                 (streq(reason, "ExpiredProviderToken") || streq(reason, "InvalidProviderToken"))) {
                /* Make a new token; the retry uses it. */
                provider_token(req->a, true);
                o = PUSH_OUTCOME_RETRY;
        } else if (st == 429 || st >= 500)
                o = PUSH_OUTCOME_RETRY;
        else
                o = PUSH_OUTCOME_FAILED;
        char text[64];
        if (!reason) {
                snprintf(text, sizeof text, "HTTP %ld", st);
                reason = text;
        }
        result_from(&res, o, st, st == 200 ? "" : reason);
        json_decref(body);
done:
        res.retry_after_ms = resp->retry_after_ms;
        req->cb(&res, req->userdata);
        free(req);
}

static int add_header(struct curl_slist **l, const char *fmt, ...) _printf_(2, 3);
static int add_header(struct curl_slist **l, const char *fmt, ...) {
        va_list ap;
        char *s;
        va_start(ap, fmt);
        int r = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        struct curl_slist *n = curl_slist_append(*l, s);
        free(s);
        if (!n)
                return -ENOMEM;
        *l = n;
        return 0;
}

int apns_send(struct apns *a, const struct push_job *j, const char *token, push_done_fn cb,
              void *userdata) {
        _cleanup_free_ char *url = NULL, *body = NULL;
        struct curl_slist *headers = NULL;
        static const char *const push_types[] = {"voip", "alert", "background"};
        struct apns_request *req = calloc(1, sizeof *req);
        if (!req)
                return -ENOMEM;
        req->a = a;
        req->cb = cb;
        req->userdata = userdata;
        req->token_auth = a->key != NULL;

        json_t *payload = apns_payload(j);
        body = payload ? json_dumps(payload, JSON_COMPACT) : NULL;
        json_decref(payload);
        if (!body || asprintf(&url, "%s/3/device/%s",
                              j->sandbox ? a->cfg.sandbox_url : a->cfg.production_url, token) < 0)
                goto oom;

        size_t max = j->type == PUSH_TYPE_CALL ? APNS_MAX_VOIP_PAYLOAD : APNS_MAX_PAYLOAD;
        if (strlen(body) > max) {
                free(req);
                return -EMSGSIZE;
        }

        /* Calls go to PushKit: the topic is the bundle id with ".voip". */
        if (add_header(&headers, "apns-topic: %s%s", j->app_id,
                       j->type == PUSH_TYPE_CALL ? ".voip" : "") < 0 ||
            add_header(&headers, "apns-push-type: %s", push_types[j->type]) < 0 ||
            /* Apple wants 5 for background pushes, 10 delivers at once. */
            add_header(&headers, "apns-priority: %d", j->type == PUSH_TYPE_BACKGROUND ? 5 : 10) <
                    0 ||
            add_header(&headers, "apns-expiration: %lld",
                       j->ttl > 0 ? (long long)(realtime_msec() / 1000 + (uint64_t)j->ttl) : 0LL) <
                    0 ||
            (j->collapse_id && add_header(&headers, "apns-collapse-id: %s", j->collapse_id) < 0) ||
            add_header(&headers, "content-type: application/json") < 0)
                goto oom;
        if (a->key) {
                const char *jwt = provider_token(a, false);
                if (!jwt || add_header(&headers, "authorization: bearer %s", jwt) < 0)
                        goto oom;
        }
        const struct http2_request hr = {
                .method = "POST",
                .url = url,
                .headers = TAKE_PTR(headers),
                .body = body,
                .body_len = strlen(body),
                .ca_file = a->settings.ca_file,
                .cert_file = a->key ? NULL : a->cfg.certificate_file,
                .key_file = a->key ? NULL : a->cfg.certificate_key_file,
                .timeout_ms = a->settings.timeout_ms,
                .drop = free,
        };
        int r = http2_send(a->h, &hr, on_response, req, NULL);
        if (r < 0) {
                free(req);
                return r;
        }
        return 0;
oom:
        curl_slist_free_all(headers);
        free(req);
        return -ENOMEM;
}
