/* SPDX-License-Identifier: MIT */
#pragma once

/* Apple Push Notification service over HTTP/2: POST <endpoint>/3/device/<token> with the
 * apns-* headers, token-based (JWT ES256 from a .p8 key, renewed before it is an hour old) or
 * certificate-based authentication. */

#include <stdbool.h>
#include <stdint.h>

#include "provider.h"

struct http2;
struct push_job;
struct apns;
struct json_t;

struct apns_config {
        char *production_url;
        char *sandbox_url;
        char *key_file; /* .p8: token-based authentication */
        char *key_id;
        char *team_id;
        char *certificate_file; /* PEM: certificate-based authentication */
        char *certificate_key_file;
        uint64_t token_lifetime_ms; /* a provider token is renewed after this */
};

/* NULL in *ret (and 0) when neither authentication is configured. -EINVAL with *error for a
 * bad configuration (unreadable key, key id without team id...). */
int apns_new(const struct apns_config *cfg, struct http2 *h, const struct push_http_settings *s,
             struct apns **ret, char **error);
void apns_free(struct apns *a);

/* Starts one push; cb is called exactly once, later (never from within this call). Returns
 * < 0 without calling cb: -EMSGSIZE when the payload exceeds Apple's limit, -ENOMEM. */
int apns_send(struct apns *a, const struct push_job *j, const char *token, push_done_fn cb,
              void *userdata);

/* The JSON payload for a job (exposed for the tests). */
struct json_t *apns_payload(const struct push_job *j);
