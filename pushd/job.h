/* SPDX-License-Identifier: MIT */
#pragma once

/* A push job: what a producer (the proxy, an application server) asks pushd to send, as one
 * JSON object. The schema (README, "pushd job"):
 *
 *   provider     "apns" | "fcm" | "generic"                                  required
 *   token        the device token (string), or
 *   tokens       1 to PUSH_JOB_MAX_TOKENS device tokens (array of strings)    one of them
 *   app-id       APNs: bundle id (topic; ".voip" is added for calls);
 *                FCM: Firebase project id; generic: free text               apns, fcm
 *   type         "call" | "message" | "background"                          required
 *   sandbox      APNs: use the sandbox endpoint (bool, default false)
 *   id           the producer's job id (echoed in results), <= 128 bytes
 *   from-uri, from-name, call-id, msg-id, uuid, loc-key      strings <= 1024 bytes
 *   text         message text (string <= 2048 bytes; absent = not shown)
 *   ttl          seconds the provider keeps the push for an offline device (0..2419200)
 *   collapse-id  pushes with the same id replace each other (<= 64 bytes)
 *   custom       an object passed to the app as is (<= 1024 bytes serialized)
 *
 * Unknown keys are refused, so that a misspelt key is found at once. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_t;

#define PUSH_JOB_MAX_TOKENS      16
#define PUSH_JOB_MAX_TOKEN_LEN   4096
#define PUSH_JOB_MAX_STRING      1024
#define PUSH_JOB_MAX_TEXT        2048
#define PUSH_JOB_MAX_ID          128
#define PUSH_JOB_MAX_COLLAPSE_ID 64
#define PUSH_JOB_MAX_CUSTOM      1024
#define PUSH_JOB_MAX_TTL         2419200 /* 28 days, FCM's maximum */
#define PUSH_JOB_MAX_SIZE        65536   /* the JSON text */

enum push_provider {
        PUSH_PROVIDER_APNS,
        PUSH_PROVIDER_FCM,
        PUSH_PROVIDER_GENERIC,
        _PUSH_PROVIDER_MAX
};
enum push_type { PUSH_TYPE_CALL, PUSH_TYPE_MESSAGE, PUSH_TYPE_BACKGROUND, _PUSH_TYPE_MAX };

struct push_job {
        enum push_provider provider;
        enum push_type type;
        char **tokens; /* NULL-terminated, at least one */
        size_t n_tokens;
        char *id;
        char *app_id;
        bool sandbox;
        char *from_uri, *from_name, *call_id, *msg_id, *uuid, *loc_key, *text, *collapse_id;
        int64_t ttl;           /* -1: not given */
        struct json_t *custom; /* object or NULL */
};

const char *push_provider_name(enum push_provider p);
const char *push_type_name(enum push_type t);

/* Parses and validates. On failure returns -EINVAL (-ENOMEM) and *error (malloc'd) says
 * which field is wrong and why. */
int push_job_parse(const char *text, size_t len, struct push_job **ret, char **error);
int push_job_from_json(struct json_t *obj, struct push_job **ret, char **error);
/* The canonical JSON of the job ("tokens" always an array). */
struct json_t *push_job_to_json(const struct push_job *j);
void push_job_free(struct push_job *j);
static inline void push_job_freep(struct push_job **j) {
        push_job_free(*j);
}
