/* SPDX-License-Identifier: MIT */
#pragma once

/* What every push provider (APNs, FCM, generic HTTP) tells pushd about one push to one
 * token. */

#include <stdint.h>

struct push_job;

enum push_outcome {
        PUSH_OUTCOME_SENT,       /* the provider accepted it */
        PUSH_OUTCOME_DEAD_TOKEN, /* the token is no longer valid: report it, do not retry */
        PUSH_OUTCOME_RETRY,      /* 429, 5xx, timeout, connection failure: try again later */
        PUSH_OUTCOME_FAILED,     /* refused for good (bad request, not configured...) */
};

struct push_result {
        enum push_outcome outcome;
        long status;             /* HTTP status, 0 when there was no answer */
        char reason[160];        /* the provider's reason ("Unregistered") or our explanation */
        uint64_t retry_after_ms; /* the provider's Retry-After, 0 without */
};

typedef void (*push_done_fn)(const struct push_result *r, void *userdata);

/* Settings shared by the providers. */
struct push_http_settings {
        const char *ca_file; /* NULL: the system's CAs */
        uint64_t timeout_ms;
};

const char *push_outcome_name(enum push_outcome o);
