/* SPDX-License-Identifier: MIT */
#define LOG_SUBSYSTEM LOG_push
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>

#include "generic.h"
#include "http2.h"
#include "job.h"
#include "log.h"

struct generic {
        struct generic_config cfg;
        struct http2 *h;
        struct push_http_settings settings;
};

struct generic_request {
        push_done_fn cb;
        void *userdata;
};

int generic_new(const struct generic_config *cfg, struct http2 *h,
                const struct push_http_settings *s, struct generic **ret, char **error) {
        *ret = NULL;
        *error = NULL;
        if (isempty(cfg->url))
                return 0;
        if (strncmp(cfg->url, "https://", 8) != 0 && strncmp(cfg->url, "http://", 7) != 0)
                return asprintf(error, "[generic] url must start with https:// or http://") < 0
                               ? -ENOMEM
                               : -EINVAL;
        struct generic *g = calloc(1, sizeof *g);
        if (!g)
                return -ENOMEM;
        *g = (struct generic){.cfg = *cfg, .h = h, .settings = *s};
        *ret = g;
        return 0;
}

void generic_free(struct generic *g) {
        free(g);
}

char *generic_expand(const char *tmpl, const struct push_job *j, const char *token) {
        /* Longest names first where one is a prefix of another. */
        const struct {
                const char *name;
                const char *value;
        } vars[] = {
                {"$token", token},
                {"$type", push_type_name(j->type)},
                {"$app-id", j->app_id},
                {"$from-uri", j->from_uri},
                {"$from-name", j->from_name},
                {"$call-id", j->call_id},
                {"$msg-id", j->msg_id},
                {"$uuid", j->uuid},
                {"$text", j->text},
                {"$provider", push_provider_name(j->provider)},
                {"$job-id", j->id},
        };
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f)
                return NULL;
        for (const char *p = tmpl; *p;) {
                size_t best = 0, best_len = 0;
                if (*p == '$')
                        for (size_t i = 0; i < ELEMENTSOF(vars); i++) {
                                size_t n = strlen(vars[i].name);
                                if (strncmp(p, vars[i].name, n) == 0 && n > best_len) {
                                        best = i;
                                        best_len = n;
                                }
                        }
                if (best_len == 0) {
                        fputc(*p++, f);
                        continue;
                }
                char *e = curl_easy_escape(NULL, strempty(vars[best].value), 0);
                if (e)
                        fputs(e, f);
                curl_free(e);
                p += best_len;
        }
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

static void on_response(const struct http2_response *resp, void *userdata) {
        struct generic_request *req = userdata;
        struct push_result res = {.status = resp->status};
        if (resp->error < 0) {
                res.outcome = PUSH_OUTCOME_RETRY;
                snprintf(res.reason, sizeof res.reason, "%s", resp->error_text);
        } else {
                long st = resp->status;
                res.outcome = st >= 200 && st < 300    ? PUSH_OUTCOME_SENT
                              : st == 404 || st == 410 ? PUSH_OUTCOME_DEAD_TOKEN
                              : st == 429 || st >= 500 ? PUSH_OUTCOME_RETRY
                                                       : PUSH_OUTCOME_FAILED;
                if (res.outcome != PUSH_OUTCOME_SENT)
                        snprintf(res.reason, sizeof res.reason, "HTTP %ld", st);
        }
        res.retry_after_ms = resp->retry_after_ms;
        req->cb(&res, req->userdata);
        free(req);
}

int generic_send(struct generic *g, const struct push_job *j, const char *token, push_done_fn cb,
                 void *userdata) {
        _cleanup_free_ char *url = generic_expand(g->cfg.url, j, token), *body = NULL;
        if (!url)
                return -ENOMEM;
        struct curl_slist *headers = NULL;
        if (g->cfg.method == 1) {
                json_t *o = push_job_to_json(j);
                if (o) {
                        /* The body names the one token this request is for. */
                        json_object_set_new(o, "tokens", json_pack("[s]", token));
                        body = json_dumps(o, JSON_COMPACT);
                }
                json_decref(o);
                headers = curl_slist_append(NULL, "content-type: application/json");
                if (!body || !headers) {
                        curl_slist_free_all(headers);
                        return -ENOMEM;
                }
        }
        struct generic_request *req = calloc(1, sizeof *req);
        if (!req) {
                curl_slist_free_all(headers);
                return -ENOMEM;
        }
        *req = (struct generic_request){.cb = cb, .userdata = userdata};
        const struct http2_request hr = {
                .method = g->cfg.method == 1 ? "POST" : "GET",
                .url = url,
                .headers = headers,
                .body = body,
                .body_len = body ? strlen(body) : 0,
                .ca_file = g->settings.ca_file,
                .timeout_ms = g->settings.timeout_ms,
                .drop = free,
        };
        int r = http2_send(g->h, &hr, on_response, req, NULL);
        if (r < 0)
                free(req);
        return r;
}
