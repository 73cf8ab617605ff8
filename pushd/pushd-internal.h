/* SPDX-License-Identifier: MIT */
#pragma once

#include "pushd.h"
#include "stats.h"

struct redis;
struct loop;
struct loop_timer;
struct http2;
struct evhttp;
struct stats_counter;

struct pushd {
        struct daemon *daemon;
        struct pushd_config config;
        struct loop *loop;
        struct http2 *http2;
        struct apns *apns;
        struct fcm *fcm;
        struct generic *generic;

        struct pushd_job *jobs; /* every job held, newest first */
        size_t n_jobs;
        size_t busy; /* deliveries waiting for a provider's answer */
        uint64_t http_serial;
        bool stopping;
        bool freeing;
        bool drained;

        /* Redis: commands (acks, dead letters, dead tokens, claims) and a second link for the
         * blocking XREADGROUP. */
        struct redis *redis;
        struct redis *reader;
        char *consumer;       /* [redis] consumer, or the host name */
        size_t redis_pending; /* commands whose answer the drain waits for */
        bool reading;
        bool group_ready;
        bool history_done;
        char history_cursor[64];
        char claim_cursor[64];
        bool claiming;
        struct loop_timer *read_timer;
        struct loop_timer *claim_timer;

        /* HTTP intake */
        struct evhttp *http;
        struct evhttp_bound_socket *http_socket;

        struct {
                struct stats_counter *jobs_received, *jobs_stream, *jobs_http, *jobs_reclaimed,
                        *jobs_invalid, *jobs_done, *jobs_dead_lettered;
                struct stats_counter *sent, *failed, *dead_token, *retried;
                struct stats_counter *sent_by[3];
                struct stats_counter *http_requests, *http_unauthorized, *http_bad_request,
                        *http_full;
                struct stats_counter *redis_errors;
        } stats;
};
