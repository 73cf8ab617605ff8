/* SPDX-License-Identifier: MIT */
#pragma once

/* Generic HTTP push: a URL template whose placeholders ($token, $type, $app-id, $from-uri,
 * $from-name, $call-id, $msg-id, $uuid, $text, $provider, $job-id) are replaced by the job's
 * values, URL-encoded; GET, or POST with the job's JSON as body. 2xx is sent, 404 and 410
 * mean the token is dead, 429 and 5xx are retried. */

#include "provider.h"

struct http2;
struct push_job;
struct generic;

struct generic_config {
        char *url;  /* empty: no generic provider */
        int method; /* 0 GET, 1 POST */
};

int generic_new(const struct generic_config *cfg, struct http2 *h,
                const struct push_http_settings *s, struct generic **ret, char **error);
void generic_free(struct generic *g);
/* The URL for one job and token, malloc'd (exposed for the tests). */
char *generic_expand(const char *tmpl, const struct push_job *j, const char *token);
/* cb is called exactly once, later; < 0 (-ENOMEM) without calling cb. */
int generic_send(struct generic *g, const struct push_job *j, const char *token, push_done_fn cb,
                 void *userdata);
