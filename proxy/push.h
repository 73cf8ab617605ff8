/* SPDX-License-Identifier: MIT */
#pragma once

/* The PushNotification module's pure parts, for the unit tests: the push parameters of a
 * contact URI and the pushd job they make. */

#include <stdbool.h>
#include <stdint.h>

#include "sofia.h"

enum push_provider { PUSH_NONE, PUSH_APNS, PUSH_FCM };

struct push_target {
        enum push_provider provider;
        bool sandbox;       /* apns.dev */
        char *app_id;       /* APNs bundle id, FCM project */
        char *remote_token; /* APNs alert/background token, FCM registration token */
        char *voip_token;   /* APNs PushKit token */
};

/* From the URI's RFC 8599 (or legacy Linphone) parameters. -ENOENT: none; -EINVAL: malformed;
 * -EPROTONOSUPPORT: an unknown provider. Call push_target_done() in every case. */
int push_target_parse(const url_t *uri, struct push_target *t);
void push_target_done(struct push_target *t);
/* The JSON job for sipfleet-pushd (malloc'd): kind "call" or "message", the request's From and
 * Call-ID, ttl in seconds, id echoed back with dead tokens (may be NULL). */
char *push_job_json(const struct push_target *t, const sip_t *request, const char *kind,
                    uint64_t ttl_s, const char *id);
