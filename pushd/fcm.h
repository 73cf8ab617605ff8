/* SPDX-License-Identifier: MIT */
#pragma once

/* Firebase Cloud Messaging HTTP v1: one client per Google service account (per Firebase
 * project). Each client signs a JWT (RS256) with the account's key, trades it at the account's
 * token_uri for an OAuth2 access token (grant type jwt-bearer), keeps that token until shortly
 * before it expires, and POSTs data messages to <url>/v1/projects/<project id>/messages:send. */

#include <stdint.h>

#include "provider.h"

struct http2;
struct push_job;
struct fcm;
struct json_t;

struct fcm_config {
        char **service_account_files;
        char **project_aliases;         /* "alias=project_id": other names a job's app-id may use */
        char *url;                      /* https://fcm.googleapis.com */
        uint64_t token_anticipation_ms; /* refresh the access token this long before expiry */
};

/* NULL in *ret (and 0) when no service account is configured; -EINVAL with *error for a file
 * that is not a usable service account (or two for the same project). */
int fcm_new(const struct fcm_config *cfg, struct http2 *h, const struct push_http_settings *s,
            struct fcm **ret, char **error);
/* Drops waiting pushes without calling their callbacks. Accepts NULL. */
void fcm_free(struct fcm *f);

/* cb is called exactly once, later. Returns < 0 without calling cb: -ENOENT when no service
 * account serves the job's project (app-id), -EMSGSIZE, -ENOMEM. */
int fcm_send(struct fcm *f, const struct push_job *j, const char *token, push_done_fn cb,
             void *userdata);

/* The message JSON for a job (exposed for the tests). */
struct json_t *fcm_message(const struct push_job *j, const char *token);
