/* SPDX-License-Identifier: MIT */
#define LOG_SUBSYSTEM LOG_push
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <time.h>

#include "fcm.h"
#include "http2.h"
#include "job.h"
#include "jwt.h"
#include "log.h"
#include "loop.h"

#define FCM_SCOPE       "https://www.googleapis.com/auth/firebase.messaging"
#define FCM_MAX_MESSAGE 4096

struct fcm_waiter {
        struct fcm_client *c;
        struct push_job *job; /* borrowed: owned by pushd until cb */
        char *token;
        push_done_fn cb;
        void *userdata;
        struct fcm_waiter *next;
};

struct fcm_client {
        struct fcm *f;
        char *project_id;
        char *client_email;
        char *key_id;
        char *token_uri;
        struct evp_pkey_st *key;
        char *access_token;
        uint64_t access_expires; /* monotonic ms when to refresh */
        struct http2_transfer *fetching;
        struct fcm_waiter *waiters, **waiters_tail;
        struct fcm_client *next;
};

struct fcm {
        struct fcm_config cfg;
        struct http2 *h;
        struct push_http_settings settings;
        struct fcm_client *clients;
};

struct fcm_request {
        struct fcm_client *c;
        push_done_fn cb;
        void *userdata;
};

static void client_free(struct fcm_client *c) {
        if (!c)
                return;
        http2_cancel(c->fetching);
        while (c->waiters) {
                struct fcm_waiter *w = c->waiters;
                c->waiters = w->next;
                free(w->token);
                free(w);
        }
        free(c->project_id);
        free(c->client_email);
        free(c->key_id);
        free(c->token_uri);
        free(c->access_token);
        jwt_key_free(c->key);
        free(c);
}

void fcm_free(struct fcm *f) {
        if (!f)
                return;
        while (f->clients) {
                struct fcm_client *c = f->clients;
                f->clients = c->next;
                client_free(c);
        }
        free(f);
}

static int load_account(struct fcm *f, const char *path, char **error) {
        json_error_t jerr;
        json_t *o = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
        if (!o)
                return asprintf(error, "[fcm] service account '%s': %s", path, jerr.text) < 0
                               ? -ENOMEM
                               : -EINVAL;
        const char *type = json_string_value(json_object_get(o, "type"));
        const char *fields[] = {"project_id", "client_email", "private_key", "token_uri"};
        int r = 0;
        if (!type || !streq(type, "service_account"))
                r = asprintf(error,
                             "[fcm] '%s' is not a service account (\"type\" is not "
                             "\"service_account\")",
                             path);
        for (size_t i = 0; r == 0 && i < ELEMENTSOF(fields); i++)
                if (isempty(json_string_value(json_object_get(o, fields[i]))))
                        r = asprintf(error, "[fcm] service account '%s' lacks \"%s\"", path,
                                     fields[i]);
        if (r != 0) {
                json_decref(o);
                return r < 0 ? -ENOMEM : -EINVAL;
        }
        const char *project = json_string_value(json_object_get(o, "project_id"));
        for (struct fcm_client *c = f->clients; c; c = c->next)
                if (streq(c->project_id, project)) {
                        json_decref(o);
                        return asprintf(error, "[fcm] two service accounts for project '%s'",
                                        project) < 0
                                       ? -ENOMEM
                                       : -EINVAL;
                }
        struct fcm_client *c = calloc(1, sizeof *c);
        if (!c) {
                json_decref(o);
                return -ENOMEM;
        }
        c->f = f;
        c->waiters_tail = &c->waiters;
        c->project_id = strdup(project);
        c->client_email = strdup(json_string_value(json_object_get(o, "client_email")));
        const char *kid = json_string_value(json_object_get(o, "private_key_id"));
        c->key_id = kid ? strdup(kid) : NULL;
        c->token_uri = strdup(json_string_value(json_object_get(o, "token_uri")));
        const char *pem = json_string_value(json_object_get(o, "private_key"));
        r = jwt_load_key(pem, strlen(pem), JWT_RS256, &c->key);
        json_decref(o);
        if (r < 0 || !c->project_id || !c->client_email || !c->token_uri) {
                client_free(c);
                if (r < 0)
                        return asprintf(error,
                                        "[fcm] service account '%s': \"private_key\" is "
                                        "not a PEM RSA private key of 2048 bits or more",
                                        path) < 0
                                       ? -ENOMEM
                                       : -EINVAL;
                return -ENOMEM;
        }
        c->next = f->clients;
        f->clients = c;
        return 0;
}

int fcm_new(const struct fcm_config *cfg, struct http2 *h, const struct push_http_settings *s,
            struct fcm **ret, char **error) {
        *ret = NULL;
        *error = NULL;
        if (strv_length(cfg->service_account_files) == 0)
                return 0;
        struct fcm *f = calloc(1, sizeof *f);
        if (!f)
                return -ENOMEM;
        f->cfg = *cfg;
        f->h = h;
        f->settings = *s;
        STRV_FOREACH(path, cfg->service_account_files) {
                int r = load_account(f, *path, error);
                if (r < 0) {
                        fcm_free(f);
                        return r;
                }
        }
        STRV_FOREACH(alias, cfg->project_aliases) {
                const char *eq = strchr(*alias, '=');
                bool known = false;
                for (struct fcm_client *c = f->clients; eq && c; c = c->next)
                        known = known || streq(c->project_id, eq + 1);
                if (!eq || eq == *alias || !known) {
                        int r = asprintf(error,
                                         "[fcm] project-aliases: '%s' is not "
                                         "alias=project_id of a service account",
                                         *alias);
                        fcm_free(f);
                        return r < 0 ? -ENOMEM : -EINVAL;
                }
        }
        *ret = f;
        return 0;
}

static void set_data(json_t *data, const char *key, const char *value) {
        if (value)
                json_object_set_new(data, key, json_string(value));
}

json_t *fcm_message(const struct push_job *j, const char *token) {
        json_t *data = json_object();
        if (!data)
                return NULL;
        /* FCM data values are strings only. */
        set_data(data, "type", push_type_name(j->type));
        set_data(data, "from-uri", j->from_uri);
        set_data(data, "from-name", j->from_name);
        set_data(data, "call-id", j->call_id);
        set_data(data, "msg-id", j->msg_id);
        set_data(data, "uuid", j->uuid);
        set_data(data, "loc-key", j->loc_key);
        set_data(data, "text", j->text);
        char now[32];
        snprintf(now, sizeof now, "%llu", (unsigned long long)(realtime_msec() / 1000));
        set_data(data, "send-time", now);
        if (j->custom) {
                char *custom = json_dumps(j->custom, JSON_COMPACT);
                set_data(data, "custom", custom);
                free(custom);
        }
        json_t *android =
                json_pack("{s:s}", "priority", j->type == PUSH_TYPE_BACKGROUND ? "normal" : "high");
        if (android && j->ttl >= 0) {
                char ttl[32];
                snprintf(ttl, sizeof ttl, "%llds", (long long)j->ttl);
                json_object_set_new(android, "ttl", json_string(ttl));
        }
        if (android && j->collapse_id)
                json_object_set_new(android, "collapse_key", json_string(j->collapse_id));
        return json_pack("{s:{s:s,s:o,s:o}}", "message", "token", token, "android", android, "data",
                         data);
}

static void waiter_result(struct fcm_waiter *w, enum push_outcome o, long status,
                          const char *reason) {
        struct push_result res = {.outcome = o, .status = status};
        snprintf(res.reason, sizeof res.reason, "%s", reason);
        w->cb(&res, w->userdata);
}

static int post_message(struct fcm_client *c, const struct push_job *j, const char *token,
                        push_done_fn cb, void *userdata);

static void on_token(const struct http2_response *resp, void *userdata) {
        struct fcm_client *c = userdata;
        char reason[160] = "";
        c->fetching = NULL;
        json_t *o = NULL;
        if (resp->error < 0)
                snprintf(reason, sizeof reason, "OAuth2 token request failed: %s",
                         resp->error_text);
        else if (resp->status != 200)
                snprintf(reason, sizeof reason, "OAuth2 token request answered HTTP %ld",
                         resp->status);
        else {
                o = json_loadb(resp->body, resp->body_len, 0, NULL);
                const char *tok = json_string_value(json_object_get(o, "access_token"));
                json_t *exp = json_object_get(o, "expires_in");
                if (!tok || !json_is_integer(exp) || json_integer_value(exp) <= 0)
                        snprintf(reason, sizeof reason,
                                 "OAuth2 token response without access_token and expires_in");
                else {
                        free(c->access_token);
                        c->access_token = strdup(tok);
                        uint64_t life = (uint64_t)json_integer_value(exp) * 1000;
                        uint64_t ahead = c->f->cfg.token_anticipation_ms;
                        c->access_expires = now_msec() + (life > ahead ? life - ahead : life / 2);
                        log_info("New FCM access token for project '%s', valid %llds.",
                                 c->project_id, (long long)json_integer_value(exp));
                }
        }
        json_decref(o);
        if (reason[0])
                log_warning("FCM project '%s': %s.", c->project_id, reason);

        /* Hand the waiting pushes over; they come back for a new token on error. */
        struct fcm_waiter *w = c->waiters;
        c->waiters = NULL;
        c->waiters_tail = &c->waiters;
        while (w) {
                struct fcm_waiter *next = w->next;
                if (reason[0] || !c->access_token)
                        waiter_result(w, PUSH_OUTCOME_RETRY, 0, reason);
                else if (post_message(c, w->job, w->token, w->cb, w->userdata) < 0)
                        waiter_result(w, PUSH_OUTCOME_RETRY, 0, "out of memory");
                free(w->token);
                free(w);
                w = next;
        }
}

static char *form_escape(const char *s) {
        char *e = curl_easy_escape(NULL, s, 0);
        char *r = e ? strdup(e) : NULL;
        curl_free(e);
        return r;
}

static int fetch_token(struct fcm_client *c) {
        time_t now = time(NULL);
        json_t *header = json_pack("{s:s}", "typ", "JWT");
        json_t *claims = json_pack("{s:s,s:s,s:s,s:I,s:I}", "iss", c->client_email, "scope",
                                   FCM_SCOPE, "aud", c->token_uri, "iat", (json_int_t)now, "exp",
                                   (json_int_t)now + 3600);
        if (header && c->key_id)
                json_object_set_new(header, "kid", json_string(c->key_id));
        _cleanup_free_ char *jwt = NULL, *assertion = NULL, *body = NULL;
        int r = header && claims ? jwt_sign(c->key, JWT_RS256, header, claims, &jwt) : -ENOMEM;
        json_decref(header);
        json_decref(claims);
        if (r < 0)
                return r;
        assertion = form_escape(jwt);
        if (!assertion || asprintf(&body,
                                   "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-"
                                   "bearer&assertion=%s",
                                   assertion) < 0)
                return -ENOMEM;
        struct curl_slist *headers =
                curl_slist_append(NULL, "content-type: application/x-www-form-urlencoded");
        if (!headers)
                return -ENOMEM;
        const struct http2_request hr = {
                .method = "POST",
                .url = c->token_uri,
                .headers = headers,
                .body = body,
                .body_len = strlen(body),
                .ca_file = c->f->settings.ca_file,
                .timeout_ms = c->f->settings.timeout_ms,
        };
        return http2_send(c->f->h, &hr, on_token, c, &c->fetching);
}

static const char *fcm_error_code(json_t *body) {
        json_t *err = json_object_get(body, "error");
        json_t *details = json_object_get(err, "details"), *d;
        size_t i;
        json_array_foreach(details, i, d) {
                const char *code = json_string_value(json_object_get(d, "errorCode"));
                if (code)
                        return code;
        }
        return json_string_value(json_object_get(err, "status"));
}

static void on_response(const struct http2_response *resp, void *userdata) {
        struct fcm_request *req = userdata;
        struct push_result res = {0};
        if (resp->error < 0) {
                res.outcome = PUSH_OUTCOME_RETRY;
                snprintf(res.reason, sizeof res.reason, "%s", resp->error_text);
                goto done;
        }
        json_t *body = resp->body_len ? json_loadb(resp->body, resp->body_len, 0, NULL) : NULL;
        const char *code = body ? fcm_error_code(body) : NULL;
        long st = res.status = resp->status;
        if (st == 200)
                res.outcome = PUSH_OUTCOME_SENT;
        else if (code && (streq(code, "UNREGISTERED") || streq(code, "INVALID_ARGUMENT")))
                res.outcome = PUSH_OUTCOME_DEAD_TOKEN;
        else if (st == 401) {
                /* The access token was refused: fetch another for the retry. */
                free(req->c->access_token);
                req->c->access_token = NULL;
                res.outcome = PUSH_OUTCOME_RETRY;
        } else if (st == 429 || st >= 500)
                res.outcome = PUSH_OUTCOME_RETRY;
        else
                res.outcome = PUSH_OUTCOME_FAILED;
        if (st != 200) {
                if (code)
                        snprintf(res.reason, sizeof res.reason, "%s", code);
                else
                        snprintf(res.reason, sizeof res.reason, "HTTP %ld", st);
        }
        json_decref(body);
done:
        res.retry_after_ms = resp->retry_after_ms;
        req->cb(&res, req->userdata);
        free(req);
}

static int post_message(struct fcm_client *c, const struct push_job *j, const char *token,
                        push_done_fn cb, void *userdata) {
        _cleanup_free_ char *url = NULL, *body = NULL, *auth = NULL;
        json_t *m = fcm_message(j, token);
        body = m ? json_dumps(m, JSON_COMPACT) : NULL;
        json_decref(m);
        if (!body)
                return -ENOMEM;
        if (strlen(body) > FCM_MAX_MESSAGE + PUSH_JOB_MAX_TOKEN_LEN)
                return -EMSGSIZE;
        if (asprintf(&url, "%s/v1/projects/%s/messages:send", c->f->cfg.url, c->project_id) < 0 ||
            asprintf(&auth, "authorization: Bearer %s", c->access_token) < 0)
                return -ENOMEM;
        struct curl_slist *headers = curl_slist_append(NULL, auth);
        struct curl_slist *h2 =
                headers ? curl_slist_append(headers, "content-type: application/json") : NULL;
        if (!h2) {
                curl_slist_free_all(headers);
                return -ENOMEM;
        }
        struct fcm_request *req = calloc(1, sizeof *req);
        if (!req) {
                curl_slist_free_all(h2);
                return -ENOMEM;
        }
        *req = (struct fcm_request){.c = c, .cb = cb, .userdata = userdata};
        const struct http2_request hr = {
                .method = "POST",
                .url = url,
                .headers = h2,
                .body = body,
                .body_len = strlen(body),
                .ca_file = c->f->settings.ca_file,
                .timeout_ms = c->f->settings.timeout_ms,
                .drop = free,
        };
        int r = http2_send(c->f->h, &hr, on_response, req, NULL);
        if (r < 0)
                free(req);
        return r;
}

int fcm_send(struct fcm *f, const struct push_job *j, const char *token, push_done_fn cb,
             void *userdata) {
        const char *project = j->app_id;
        size_t len = strlen(project);
        STRV_FOREACH(alias, f ? f->cfg.project_aliases : NULL)
                if (strncmp(*alias, project, len) == 0 && (*alias)[len] == '=') {
                        project = *alias + len + 1;
                        break;
                }
        struct fcm_client *c = f ? f->clients : NULL;
        for (; c; c = c->next)
                if (streq(c->project_id, project))
                        break;
        if (!c)
                return -ENOENT;
        if (c->access_token && now_msec() < c->access_expires)
                return post_message(c, j, token, cb, userdata);

        /* Wait for a (new) access token. */
        struct fcm_waiter *w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        *w = (struct fcm_waiter){.c = c,
                                 .job = (struct push_job *)j,
                                 .token = strdup(token),
                                 .cb = cb,
                                 .userdata = userdata};
        if (!w->token) {
                free(w);
                return -ENOMEM;
        }
        if (!c->fetching) {
                int r = fetch_token(c);
                if (r < 0) {
                        free(w->token);
                        free(w);
                        return r;
                }
        }
        *c->waiters_tail = w;
        c->waiters_tail = &w->next;
        return 0;
}
