/* SPDX-License-Identifier: MIT */
#pragma once

/* sipfleet-pushd: the push gateway. Jobs come from a Redis Stream read through a consumer group
 * (stream.c) and from POST /v1/push (intake-http.c); each token of a job is pushed through its
 * provider (apns.c, fcm.c, generic.c) over one libcurl multi driven by the loop (http2.c);
 * results are counted, dead tokens published on a Redis channel, retries backed off, and a
 * stream job is acknowledged only once every token got its final answer. */

#include <stdbool.h>
#include <stdint.h>

#include "apns.h"
#include "conf.h"
#include "fcm.h"
#include "generic.h"
#include "provider.h"

struct daemon;
struct pushd;
struct push_job;

struct pushd_config {
        /* [pushd] */
        int64_t max_jobs;
        uint64_t request_timeout_ms;
        int64_t max_attempts;
        uint64_t retry_initial_ms;
        uint64_t retry_max_ms;
        char *ca_file;
        /* [redis] */
        struct conf_address redis_server;
        char *redis_username;
        char *redis_password;
        int64_t redis_db;
        char *stream;
        char *group;
        char *consumer;
        char *dead_letter_stream;
        int64_t dead_letter_max_length;
        char *dead_token_channel;
        int64_t max_deliveries;
        int64_t batch_size;
        uint64_t block_ms;
        uint64_t claim_idle_ms;
        uint64_t claim_interval_ms;
        /* [http-intake] */
        struct conf_address http_listen;
        char *http_bearer_token;
        uint64_t http_max_body;
        /* providers */
        struct apns_config apns;
        struct fcm_config fcm;
        struct generic_config generic;
};

int pushd_new(struct daemon *d, struct pushd **ret);
/* After the config is loaded and the loop exists: providers, Redis, the HTTP intake. */
int pushd_start(struct pushd *p);
void pushd_free(struct pushd *p);

extern const struct pushd_hooks { void (*stop)(struct daemon *d, void *userdata); } pushd_hooks;

/* Internal, shared by pushd.c, stream.c and intake-http.c. */
struct pushd_job;
size_t pushd_free_slots(struct pushd *p);
bool pushd_holds(struct pushd *p, const char *stream_id);
/* Takes job over (also on failure). stream_id: the stream entry (NULL for HTTP); raw: the JSON
 * text as received, kept for the dead-letter stream. check_deliveries: an entry handed out
 * before (our history, a claim): ask Redis its delivery count first and dead-letter it beyond
 * max-deliveries. */
int pushd_job_start(struct pushd *p, struct push_job *job, const char *stream_id, const char *raw,
                    bool check_deliveries);
/* An entry that cannot be pushed at all: dead-letter it with the reason, then ack it. */
void pushd_reject_entry(struct pushd *p, const char *stream_id, const char *raw,
                        const char *reason);
void pushd_ack(struct pushd *p, const char *stream_id);
/* Called when something the drain waits for finished. */
void pushd_check_drained(struct pushd *p);

/* stream.c */
int stream_start(struct pushd *p);
void stream_stop(struct pushd *p);
/* There is room again: read more if reading stalled. */
void stream_kick(struct pushd *p);
/* intake-http.c */
int intake_http_start(struct pushd *p);
void intake_http_stop(struct pushd *p);
