/* SPDX-License-Identifier: MIT */
#define LOG_SUBSYSTEM LOG_push
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>

#include "daemon.h"
#include "http2.h"
#include "job.h"
#include "log.h"
#include "loop.h"
#include "pushd-internal.h"
#include "redis.h"

#define C(field) offsetof(struct pushd_config, field)

static const char *const generic_methods[] = {"GET", "POST", NULL};

static const struct conf_section pushd_sections[] = {
        {"pushd", "The push gateway: queue limits, retries, TLS trust."},
        {"redis", "Intake from a Redis Stream (consumer group) and results published back."},
        {"http-intake", "POST /v1/push: jobs over HTTP, for deployments without Redis and "
                        "application servers."},
        {"apns", "Apple Push Notification service (HTTP/2): token-based or certificate-based "
                 "authentication."},
        {"fcm", "Firebase Cloud Messaging HTTP v1 with Google service accounts."},
        {"generic", "Any HTTP push service reached through a URL template."},
};

static const struct conf_option pushd_rows[] = {
        {"pushd", "max-jobs", CONF_INT, C(max_jobs), "10000", 1, 10000000, 0,
         "Jobs held in memory at once (being sent or waiting for a retry); the stream is read "
         "no further and HTTP answers 503 beyond"},
        {"pushd", "request-timeout", CONF_DURATION, C(request_timeout_ms), "10s", 0, 0, 0,
         "A provider's answer must come within this time, else the push is retried",
         .unit = CONF_UNIT_MS},
        {"pushd", "max-attempts", CONF_INT, C(max_attempts), "5", 1, 100, 0,
         "Tries per token before the push goes to the dead-letter stream"},
        {"pushd", "retry-initial-delay", CONF_DURATION, C(retry_initial_ms), "1s", 0, 0, 0,
         "Wait before the first retry; doubled for each further one", .unit = CONF_UNIT_MS},
        {"pushd", "retry-max-delay", CONF_DURATION, C(retry_max_ms), "60s", 0, 0, 0,
         "Longest wait between two tries", .unit = CONF_UNIT_MS},
        {"pushd", "ca-file", CONF_STRING, C(ca_file), NULL, 0, 0, 0,
         "PEM file of the CAs trusted for the providers' servers (empty: the system's CAs)"},

        {"redis", "server", CONF_ADDRESS, C(redis_server), NULL, 0, 0, 0,
         "Redis server as host:port or /path/to/socket (empty: no stream intake, no results "
         "published)"},
        {"redis", "username", CONF_STRING, C(redis_username), NULL, 0, 0, 0,
         "ACL user name (needs password)"},
        {"redis", "password", CONF_STRING, C(redis_password), NULL, 0, 0, CONF_SECRET,
         "Password sent with AUTH"},
        {"redis", "db", CONF_INT, C(redis_db), "0", 0, 1000, 0, "Database number (SELECT)"},
        {"redis", "stream", CONF_STRING, C(stream), "sipfleet:push:jobs", 0, 0, 0,
         "Stream the producers XADD jobs to (field \"job\": the JSON job)"},
        {"redis", "group", CONF_STRING, C(group), "pushd", 0, 0, 0,
         "Consumer group shared by every pushd instance (created when missing)"},
        {"redis", "consumer", CONF_STRING, C(consumer), NULL, 0, 0, 0,
         "This instance's consumer name, stable across restarts so that its unacknowledged "
         "jobs are sent again at start (empty: the host name)"},
        {"redis", "dead-letter-stream", CONF_STRING, C(dead_letter_stream),
         "sipfleet:push:dead-letter", 0, 0, 0,
         "Stream receiving the pushes given up (after max-attempts, or refused for good)"},
        {"redis", "dead-letter-max-length", CONF_INT, C(dead_letter_max_length), "100000", 1,
         100000000, 0, "Approximate length the dead-letter stream is trimmed to"},
        {"redis", "dead-token-channel", CONF_STRING, C(dead_token_channel),
         "sipfleet:push:dead-tokens", 0, 0, 0,
         "Channel where tokens the provider declared invalid are published (JSON)"},
        {"redis", "max-deliveries", CONF_INT, C(max_deliveries), "10", 1, 1000, 0,
         "An entry handed out this many times without being acknowledged (pushd instances "
         "dying on it) goes to the dead-letter stream instead of being sent again"},
        {"redis", "batch-size", CONF_INT, C(batch_size), "100", 1, 10000, 0,
         "Entries read from the stream at once"},
        {"redis", "block-time", CONF_DURATION, C(block_ms), "1s", 0, 0, 0,
         "How long one XREADGROUP waits for new entries (on its own connection)",
         .unit = CONF_UNIT_MS},
        {"redis", "claim-idle-time", CONF_DURATION, C(claim_idle_ms), "120s", 0, 0, 0,
         "Jobs another consumer left unacknowledged this long are taken over (XAUTOCLAIM); "
         "must exceed request-timeout + retry-max-delay",
         .unit = CONF_UNIT_MS},
        {"redis", "claim-interval", CONF_DURATION, C(claim_interval_ms), "10s", 0, 0, 0,
         "How often to look for such jobs", .unit = CONF_UNIT_MS},

        {"http-intake", "listen", CONF_ADDRESS, C(http_listen), NULL, 0, 0, 0,
         "Address for POST /v1/push, e.g. 127.0.0.1:8089 (empty: off)"},
        {"http-intake", "bearer-token", CONF_STRING, C(http_bearer_token), NULL, 0, 0, CONF_SECRET,
         "Clients send \"Authorization: Bearer <this>\" (required with listen)"},
        {"http-intake", "max-body-size", CONF_SIZE, C(http_max_body), "16KiB", 0, 0, 0,
         "Largest request body accepted (413 beyond)"},

        {"apns", "production-url", CONF_STRING, C(apns.production_url),
         "https://api.push.apple.com", 0, 0, 0, "APNs production endpoint"},
        {"apns", "sandbox-url", CONF_STRING, C(apns.sandbox_url),
         "https://api.sandbox.push.apple.com", 0, 0, 0,
         "APNs development endpoint, for jobs with \"sandbox\": true"},
        {"apns", "key-file", CONF_STRING, C(apns.key_file), NULL, 0, 0, 0,
         "Token-based authentication: the .p8 signing key (PEM, P-256)"},
        {"apns", "key-id", CONF_STRING, C(apns.key_id), NULL, 0, 0, 0,
         "The 10-character id of that key (JWT kid)"},
        {"apns", "team-id", CONF_STRING, C(apns.team_id), NULL, 0, 0, 0,
         "The 10-character team id (JWT iss)"},
        {"apns", "token-lifetime", CONF_DURATION, C(apns.token_lifetime_ms), "50min", 0, 0, 0,
         "A provider token is signed again after this (Apple: between 20 and 60 min)",
         .unit = CONF_UNIT_MIN},
        {"apns", "certificate-file", CONF_STRING, C(apns.certificate_file), NULL, 0, 0, 0,
         "Certificate-based authentication instead: the client certificate (PEM)"},
        {"apns", "certificate-key-file", CONF_STRING, C(apns.certificate_key_file), NULL, 0, 0, 0,
         "Its private key (PEM; empty: in certificate-file)"},

        {"fcm", "service-account-files", CONF_LIST, C(fcm.service_account_files), NULL, 0, 0, 0,
         "Google service account JSON files, one per Firebase project (a job's app-id is "
         "the project id)"},
        {"fcm", "project-aliases", CONF_LIST, C(fcm.project_aliases), NULL, 0, 0, 0,
         "Other names for a project as alias=project_id, e.g. the project number (sender "
         "id) that RFC 8599 pn-param carries: 123456789012=my-project"},
        {"fcm", "url", CONF_STRING, C(fcm.url), "https://fcm.googleapis.com", 0, 0, 0,
         "FCM endpoint"},
        {"fcm", "token-anticipation", CONF_DURATION, C(fcm.token_anticipation_ms), "5min", 0, 0, 0,
         "Fetch a new OAuth2 access token this long before the current one expires",
         .unit = CONF_UNIT_S},

        {"generic", "url", CONF_STRING, C(generic.url), NULL, 0, 0, 0,
         "URL template: $token $type $app-id $from-uri $from-name $call-id $msg-id $uuid "
         "$text $provider $job-id are replaced, URL-encoded (empty: off)"},
        {"generic", "method", CONF_ENUM, C(generic.method), "GET", 0, 0, 0,
         "GET, or POST with the job's JSON as body", .choices = generic_methods},
};

struct delivery {
        struct pushd_job *job;
        size_t index;
        unsigned attempts;
        bool busy;
        bool done;
        struct loop_timer *retry;
};

struct pushd_job {
        struct pushd *p;
        struct push_job *job;
        char *stream_id;
        char *raw;
        size_t n_left;
        bool starting;
        bool checking; /* waiting for XPENDING's delivery count */
        struct delivery *deliveries;
        struct pushd_job *prev, *next;
};

const char *push_outcome_name(enum push_outcome o) {
        static const char *const names[] = {"sent", "dead-token", "retry", "failed"};
        return o <= PUSH_OUTCOME_FAILED ? names[o] : "unknown";
}

int pushd_new(struct daemon *d, struct pushd **ret) {
        struct pushd *p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->daemon = d;
        int r = conf_add_sections(daemon_conf(d), pushd_sections, ELEMENTSOF(pushd_sections));
        if (r >= 0)
                r = conf_add_table(daemon_conf(d), pushd_rows, ELEMENTSOF(pushd_rows), &p->config);
        if (r < 0) {
                free(p);
                return r;
        }
        *ret = p;
        return 0;
}

static void job_free(struct pushd_job *j) {
        if (!j)
                return;
        struct pushd *p = j->p;
        if (j->deliveries)
                for (size_t i = 0; i < j->job->n_tokens; i++)
                        loop_timer_free(j->deliveries[i].retry);
        if (j->prev)
                j->prev->next = j->next;
        else if (p->jobs == j)
                p->jobs = j->next;
        if (j->next)
                j->next->prev = j->prev;
        p->n_jobs--;
        free(j->deliveries);
        push_job_free(j->job);
        free(j->stream_id);
        free(j->raw);
        free(j);
}

void pushd_free(struct pushd *p) {
        if (!p)
                return;
        p->freeing = true;
        intake_http_stop(p);
        stream_stop(p);
        /* Providers first (FCM cancels its token requests), then the transfers, then the jobs
         * they were for: no callback runs any more. */
        fcm_free(p->fcm);
        http2_free(p->http2);
        apns_free(p->apns);
        generic_free(p->generic);
        /* Redis before the jobs: a delivery-count check in flight points at its job. */
        redis_free(p->redis);
        p->redis = NULL;
        while (p->jobs)
                job_free(p->jobs);
        free(p->consumer);
        free(p);
}

size_t pushd_free_slots(struct pushd *p) {
        size_t max = (size_t)p->config.max_jobs;
        return p->n_jobs >= max ? 0 : max - p->n_jobs;
}

bool pushd_holds(struct pushd *p, const char *stream_id) {
        for (struct pushd_job *j = p->jobs; j; j = j->next)
                if (j->stream_id && streq(j->stream_id, stream_id))
                        return true;
        return false;
}

static void on_redis_done(struct redis *r, redisReply *reply, int error, void *userdata) {
        struct pushd *p = userdata;
        if (error < 0 || (reply && reply->type == REDIS_REPLY_ERROR)) {
                stats_inc(p->stats.redis_errors);
                log_warning_ratelimited("Redis command failed: %s",
                                        error < 0 ? strerror(-error) : reply->str);
        }
        p->redis_pending--;
        pushd_check_drained(p);
}

/* A command whose answer only matters for the counters and the drain. */
static void redis_fire(struct pushd *p, int argc, const char *const *argv) {
        if (!p->redis)
                return;
        int r = redis_command_argv(p->redis, on_redis_done, p, argc, argv, NULL);
        if (r < 0) {
                stats_inc(p->stats.redis_errors);
                log_warning_ratelimited("Cannot send %s to Redis: %s", argv[0], strerror(-r));
                return;
        }
        p->redis_pending++;
}

void pushd_ack(struct pushd *p, const char *stream_id) {
        /* Acknowledged, then deleted: the stream holds only what is still to be sent. */
        redis_fire(p, 4, (const char *[]){"XACK", p->config.stream, p->config.group, stream_id});
        redis_fire(p, 3, (const char *[]){"XDEL", p->config.stream, stream_id});
}

static void dead_letter(struct pushd *p, const char *stream_id, const char *raw, const char *token,
                        const struct push_result *res, unsigned attempts) {
        char status[24], tries[24], maxlen[24], when[24];
        snprintf(status, sizeof status, "%ld", res ? res->status : 0L);
        snprintf(tries, sizeof tries, "%u", attempts);
        snprintf(maxlen, sizeof maxlen, "%lld", (long long)p->config.dead_letter_max_length);
        snprintf(when, sizeof when, "%llu", (unsigned long long)realtime_msec());
        stats_inc(p->stats.jobs_dead_lettered);
        if (!p->redis) {
                log_warning("Giving up a push (%s): no Redis for the dead-letter stream.",
                            res ? res->reason : "invalid");
                return;
        }
        const char *argv[] = {"XADD",      p->config.dead_letter_stream,
                              "MAXLEN",    "~",
                              maxlen,      "*",
                              "job",       strempty(raw),
                              "token",     strempty(token),
                              "reason",    res ? res->reason : "",
                              "status",    status,
                              "attempts",  tries,
                              "stream-id", strempty(stream_id),
                              "time",      when};
        redis_fire(p, (int)ELEMENTSOF(argv), argv);
}

void pushd_reject_entry(struct pushd *p, const char *stream_id, const char *raw,
                        const char *reason) {
        struct push_result res = {.outcome = PUSH_OUTCOME_FAILED};
        snprintf(res.reason, sizeof res.reason, "%s", reason);
        stats_inc(p->stats.jobs_invalid);
        log_warning_ratelimited("Stream entry %s refused: %s", stream_id, reason);
        dead_letter(p, stream_id, raw, NULL, &res, 0);
        pushd_ack(p, stream_id);
}

static void publish_dead_token(struct pushd *p, struct pushd_job *j, const char *token,
                               const struct push_result *res) {
        json_t *m =
                json_pack("{s:s,s:s,s:s,s:b,s:s,s:I,s:I}", "provider",
                          push_provider_name(j->job->provider), "app-id", strempty(j->job->app_id),
                          "token", token, "sandbox", j->job->sandbox, "reason", res->reason,
                          "status", (json_int_t)res->status, "time", (json_int_t)realtime_msec());
        if (!m)
                return;
        if (j->job->id)
                json_object_set_new(m, "job-id", json_string(j->job->id));
        if (j->stream_id)
                json_object_set_new(m, "stream-id", json_string(j->stream_id));
        _cleanup_free_ char *text = json_dumps(m, JSON_COMPACT);
        json_decref(m);
        if (!text)
                return;
        if (!p->redis) {
                log_notice("Dead %s token for '%s' (%s); no Redis to publish it on.",
                           push_provider_name(j->job->provider), strempty(j->job->app_id),
                           res->reason);
                return;
        }
        redis_fire(p, 3, (const char *[]){"PUBLISH", p->config.dead_token_channel, text});
}

static void job_finish(struct pushd_job *j) {
        struct pushd *p = j->p;
        stats_inc(p->stats.jobs_done);
        if (j->stream_id)
                pushd_ack(p, j->stream_id);
        job_free(j);
        stream_kick(p);
        pushd_check_drained(p);
}

static void delivery_send(struct delivery *d);

static void on_retry(struct loop_timer *t, void *userdata) {
        delivery_send(userdata);
}

static void delivery_final(struct delivery *d) {
        struct pushd_job *j = d->job;
        d->done = true;
        if (--j->n_left == 0 && !j->starting)
                job_finish(j);
}

static void on_result(const struct push_result *res, void *userdata) {
        struct delivery *d = userdata;
        struct pushd_job *j = d->job;
        struct pushd *p = j->p;
        const char *token = j->job->tokens[d->index];
        const char *provider = push_provider_name(j->job->provider);

        if (d->busy) {
                d->busy = false;
                p->busy--;
        }
        log_debug("Push %s to %s '%s' (%s): %s %ld %s", strna(j->job->id), provider,
                  strempty(j->job->app_id), push_type_name(j->job->type),
                  push_outcome_name(res->outcome), res->status, res->reason);
        switch (res->outcome) {
        case PUSH_OUTCOME_SENT:
                stats_inc(p->stats.sent);
                stats_inc(p->stats.sent_by[j->job->provider]);
                delivery_final(d);
                break;
        case PUSH_OUTCOME_DEAD_TOKEN:
                stats_inc(p->stats.dead_token);
                log_info("%s says a token of '%s' is no longer valid (%s).", provider,
                         strempty(j->job->app_id), res->reason);
                publish_dead_token(p, j, token, res);
                delivery_final(d);
                break;
        case PUSH_OUTCOME_RETRY:
                if (p->stopping) {
                        /* Not given up: left unacknowledged for a restart or another
                         * instance (an HTTP job is lost, as the README says). */
                        log_info("%s push for '%s' failed (%s) while stopping: left for later.",
                                 provider, strempty(j->job->app_id), res->reason);
                        break;
                }
                if (d->attempts < (unsigned)p->config.max_attempts) {
                        uint64_t delay = p->config.retry_initial_ms;
                        for (unsigned i = 1; i < d->attempts && delay < p->config.retry_max_ms; i++)
                                delay *= 2;
                        /* The provider may ask for a longer wait, within retry-max-delay. */
                        delay = MIN(MAX(delay, res->retry_after_ms), p->config.retry_max_ms);
                        stats_inc(p->stats.retried);
                        log_info("%s push for '%s' failed (%s), retry %u in %llu ms.", provider,
                                 strempty(j->job->app_id), res->reason, d->attempts,
                                 (unsigned long long)delay);
                        if ((d->retry || loop_timer_new(p->loop, on_retry, d, &d->retry) >= 0) &&
                            loop_timer_arm(d->retry, delay) >= 0) {
                                /* Keep the entry ours: its idle time restarts, so that no
                                 * other instance claims it while we wait. */
                                if (j->stream_id)
                                        redis_fire(p, 7,
                                                   (const char *[]){"XCLAIM", p->config.stream,
                                                                    p->config.group, p->consumer,
                                                                    "0", j->stream_id, "JUSTID"});
                                break;
                        }
                }
                __attribute__((fallthrough));
        case PUSH_OUTCOME_FAILED:
        default:
                stats_inc(p->stats.failed);
                log_warning_ratelimited("%s push for '%s' given up after %u attempt(s): %s",
                                        provider, strempty(j->job->app_id), d->attempts,
                                        res->reason);
                dead_letter(p, j->stream_id, j->raw, token, res, d->attempts);
                delivery_final(d);
                break;
        }
        pushd_check_drained(p);
}

static void delivery_send(struct delivery *d) {
        struct pushd_job *j = d->job;
        struct pushd *p = j->p;
        const char *token = j->job->tokens[d->index];
        int r;

        if (p->stopping)
                return; /* left for a restart or another instance */
        d->attempts++;
        switch (j->job->provider) {
        case PUSH_PROVIDER_APNS:
                r = p->apns ? apns_send(p->apns, j->job, token, on_result, d) : -ENOTSUP;
                break;
        case PUSH_PROVIDER_FCM:
                r = p->fcm ? fcm_send(p->fcm, j->job, token, on_result, d) : -ENOTSUP;
                break;
        case PUSH_PROVIDER_GENERIC:
                r = p->generic ? generic_send(p->generic, j->job, token, on_result, d) : -ENOTSUP;
                break;
        default:
                r = -EINVAL;
        }
        if (r >= 0) {
                d->busy = true;
                p->busy++;
                return;
        }
        struct push_result res = {.outcome = PUSH_OUTCOME_FAILED};
        switch (r) {
        case -ENOTSUP:
                snprintf(res.reason, sizeof res.reason, "%s is not configured",
                         push_provider_name(j->job->provider));
                break;
        case -ENOENT:
                snprintf(res.reason, sizeof res.reason, "no FCM service account for project '%s'",
                         j->job->app_id);
                break;
        case -EMSGSIZE:
                snprintf(res.reason, sizeof res.reason, "payload too large for %s",
                         push_provider_name(j->job->provider));
                break;
        default:
                res.outcome = PUSH_OUTCOME_RETRY;
                snprintf(res.reason, sizeof res.reason, "%s", strerror(-r));
        }
        on_result(&res, d);
}

static void job_send_all(struct pushd_job *j) {
        j->starting = true;
        for (size_t i = 0; i < j->job->n_tokens; i++)
                delivery_send(&j->deliveries[i]);
        j->starting = false;
        if (j->n_left == 0)
                job_finish(j);
}

/* XPENDING <stream> <group> <id> <id> 1 → [[id, consumer, idle ms, deliveries]]. */
static void on_pending(struct redis *r, redisReply *reply, int error, void *userdata) {
        struct pushd_job *j = userdata;
        struct pushd *p = j->p;
        p->redis_pending--;
        j->checking = false;
        if (p->freeing)
                return;
        if (p->stopping) {
                pushd_check_drained(p); /* left pending for later */
                return;
        }
        long long deliveries = 0;
        if (error >= 0 && reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
            reply->element[0]->type == REDIS_REPLY_ARRAY && reply->element[0]->elements == 4 &&
            reply->element[0]->element[3]->type == REDIS_REPLY_INTEGER)
                deliveries = reply->element[0]->element[3]->integer;
        if (deliveries > p->config.max_deliveries) {
                char reason[128];
                snprintf(reason, sizeof reason,
                         "handed out %lld times without an answer (max-deliveries=%lld)",
                         deliveries, (long long)p->config.max_deliveries);
                _cleanup_free_ char *id = strdup(j->stream_id),
                                    *raw = j->raw ? strdup(j->raw) : NULL;
                job_free(j);
                if (id)
                        pushd_reject_entry(p, id, raw, reason);
                stream_kick(p);
                return;
        }
        /* Not found (acknowledged meanwhile by another instance): nothing to send. */
        if (error >= 0 && reply->type == REDIS_REPLY_ARRAY && reply->elements == 0) {
                job_free(j);
                stream_kick(p);
                return;
        }
        job_send_all(j);
}

int pushd_job_start(struct pushd *p, struct push_job *job, const char *stream_id, const char *raw,
                    bool check_deliveries) {
        struct pushd_job *j = calloc(1, sizeof *j);
        if (!j) {
                push_job_free(job);
                return -ENOMEM;
        }
        j->p = p;
        j->job = job;
        j->n_left = job->n_tokens;
        j->stream_id = stream_id ? strdup(stream_id) : NULL;
        j->raw = raw ? strdup(raw) : NULL;
        j->deliveries = calloc(job->n_tokens, sizeof *j->deliveries);
        j->next = p->jobs;
        if (p->jobs)
                p->jobs->prev = j;
        p->jobs = j;
        p->n_jobs++;
        if (!j->deliveries || (stream_id && !j->stream_id) || (raw && !j->raw)) {
                job_free(j);
                return -ENOMEM;
        }
        stats_inc(p->stats.jobs_received);
        for (size_t i = 0; i < job->n_tokens; i++)
                j->deliveries[i] = (struct delivery){.job = j, .index = i};
        if (check_deliveries && p->redis &&
            redis_command(p->redis, on_pending, j, "XPENDING %s %s %s %s 1", p->config.stream,
                          p->config.group, j->stream_id, j->stream_id) >= 0) {
                /* Held, not sent, until Redis says how often it was handed out. */
                j->checking = true;
                p->redis_pending++;
                return 0;
        }
        job_send_all(j);
        return 0;
}

void pushd_check_drained(struct pushd *p) {
        if (p->stopping && !p->freeing && !p->drained && p->busy == 0 && p->redis_pending == 0) {
                p->drained = true;
                daemon_drained(p->daemon);
        }
}

static void pushd_stop(struct daemon *d, void *userdata) {
        struct pushd *p = userdata;
        p->stopping = true;
        log_notice("Stopping: %zu job(s) held, %zu push(es) in flight.", p->n_jobs, p->busy);
        intake_http_stop(p);
        stream_stop(p);
        /* Pushes waiting for a retry stay unacknowledged: a restart or another instance sends
         * them. Pushes in flight get their answer (and their ack) first. */
        for (struct pushd_job *j = p->jobs; j; j = j->next)
                for (size_t i = 0; i < j->job->n_tokens; i++)
                        loop_timer_disarm(j->deliveries[i].retry);
        pushd_check_drained(p);
}

const struct pushd_hooks pushd_hooks = {.stop = pushd_stop};

static uint64_t gauge_jobs(void *userdata) {
        return ((struct pushd *)userdata)->n_jobs;
}
static uint64_t gauge_in_flight(void *userdata) {
        return ((struct pushd *)userdata)->busy;
}
static uint64_t gauge_connections(void *userdata) {
        struct pushd *p = userdata;
        return p->http2 ? http2_connections_opened(p->http2) : 0;
}

static uint64_t gauge_waiting(void *userdata) {
        struct pushd *p = userdata;
        return p->http2 ? http2_waiting(p->http2) : 0;
}

static int declare_stats(struct pushd *p) {
        struct stats *s = daemon_stats(p->daemon);
        const char *sec = "pushd";
#define D(field, name, doc) (p->stats.field = stats_declare(s, sec, name, doc))
        if (!D(jobs_received, "count-jobs-received", "Jobs accepted (stream and HTTP)") ||
            !D(jobs_stream, "count-jobs-stream", "Jobs read from the Redis stream") ||
            !D(jobs_reclaimed, "count-jobs-reclaimed",
               "Jobs taken over from a consumer that left them unacknowledged") ||
            !D(jobs_http, "count-jobs-http", "Jobs received with POST /v1/push") ||
            !D(jobs_invalid, "count-jobs-invalid",
               "Jobs refused: invalid, or handed out more than max-deliveries times") ||
            !D(jobs_done, "count-jobs-done", "Jobs finished (every token answered)") ||
            !D(jobs_dead_lettered, "count-dead-lettered",
               "Pushes given up and written to the dead-letter stream") ||
            !D(sent, "count-pn-sent", "Pushes the provider accepted") ||
            !D(failed, "count-pn-failed", "Pushes given up") ||
            !D(dead_token, "count-pn-dead-token", "Pushes refused for an invalid token") ||
            !D(retried, "count-pn-retried", "Pushes tried again (429, 5xx, timeouts)") ||
            !D(sent_by[PUSH_PROVIDER_APNS], "count-pn-sent-apns", "Pushes APNs accepted") ||
            !D(sent_by[PUSH_PROVIDER_FCM], "count-pn-sent-fcm", "Pushes FCM accepted") ||
            !D(sent_by[PUSH_PROVIDER_GENERIC], "count-pn-sent-generic",
               "Pushes the generic service accepted") ||
            !D(http_requests, "count-http-requests", "Requests to the HTTP intake") ||
            !D(http_unauthorized, "count-http-unauthorized",
               "HTTP requests without the right bearer token") ||
            !D(http_bad_request, "count-http-bad-request", "HTTP requests with an invalid job") ||
            !D(http_full, "count-http-full", "HTTP jobs refused because max-jobs was reached") ||
            !D(redis_errors, "count-redis-errors", "Redis commands that failed"))
                return -ENOMEM;
#undef D
        if (stats_declare_gauge(s, sec, "jobs-held", "Jobs in memory now", gauge_jobs, p) < 0 ||
            stats_declare_gauge(s, sec, "pushes-in-flight", "Pushes waiting for an answer",
                                gauge_in_flight, p) < 0 ||
            stats_declare_gauge(s, sec, "pushes-waiting-for-a-stream",
                                "Pushes waiting for one of the HTTP/2 client's 100 slots",
                                gauge_waiting, p) < 0 ||
            stats_declare_gauge(s, sec, "count-connections-opened",
                                "Connections opened to the providers", gauge_connections, p) < 0)
                return -ENOMEM;
        return 0;
}

static void on_redis_state(struct redis *r, enum redis_link link, bool up, int error,
                           const char *reason, void *userdata) {
        if (up)
                log_notice("Redis %s link up.", redis_link_name(link));
        else
                log_warning("Redis %s link down: %s", redis_link_name(link),
                            reason ? reason : strerror(-error));
}

int pushd_redis_config(struct pushd *p, struct redis_config *rc, char *host, size_t hostlen);

int pushd_start(struct pushd *p) {
        struct pushd_config *c = &p->config;
        _cleanup_free_ char *error = NULL;
        int r;

        p->loop = daemon_loop(p->daemon);
        if (!c->redis_server.str && !c->http_listen.str)
                return log_error_errno(EINVAL, "Neither [redis] server nor [http-intake] listen "
                                               "is set: pushd would receive no job.");
        if (c->http_listen.str && isempty(c->http_bearer_token))
                return log_error_errno(EINVAL, "[http-intake] listen needs bearer-token.");
        if (c->retry_max_ms < c->retry_initial_ms)
                return log_error_errno(EINVAL, "[pushd] retry-max-delay is shorter than "
                                               "retry-initial-delay.");
        if (c->redis_server.str && c->claim_idle_ms <= c->request_timeout_ms + c->retry_max_ms)
                return log_error_errno(EINVAL, "[redis] claim-idle-time must exceed "
                                               "[pushd] request-timeout + retry-max-delay, or "
                                               "another instance could take over a job this "
                                               "one is still working on.");
        if (c->apns.token_lifetime_ms < 60000 || c->apns.token_lifetime_ms > 3600000)
                return log_error_errno(EINVAL, "[apns] token-lifetime must be between 1min and "
                                               "60min.");
        if (c->ca_file && access(c->ca_file, R_OK) < 0)
                return log_error_errno(errno, "[pushd] ca-file '%s': %m", c->ca_file);
        r = declare_stats(p);
        if (r < 0)
                return log_oom();

        r = http2_new(p->loop, &p->http2);
        if (r < 0)
                return log_error_errno(r, "Cannot set up libcurl: %m");
        const struct push_http_settings hs = {.ca_file = c->ca_file,
                                              .timeout_ms = c->request_timeout_ms};
        r = apns_new(&c->apns, p->http2, &hs, &p->apns, &error);
        if (r < 0)
                return log_error_errno(r, "%s", error ? error : "APNs set-up failed");
        r = fcm_new(&c->fcm, p->http2, &hs, &p->fcm, &error);
        if (r < 0)
                return log_error_errno(r, "%s", error ? error : "FCM set-up failed");
        r = generic_new(&c->generic, p->http2, &hs, &p->generic, &error);
        if (r < 0)
                return log_error_errno(r, "%s", error ? error : "generic set-up failed");
        if (!p->apns && !p->fcm && !p->generic)
                log_warning("No push provider is configured: every job will fail.");
        log_notice("Providers: APNs %s, FCM %s, generic %s.",
                   p->apns ? (c->apns.key_file ? "token-based" : "certificate-based") : "off",
                   p->fcm ? "on" : "off", p->generic ? "on" : "off");

        if (c->redis_server.str) {
                char name[256];
                if (isempty(c->consumer) && gethostname(name, sizeof name) < 0)
                        return log_error_errno(errno, "gethostname: %m");
                name[sizeof name - 1] = 0;
                p->consumer = strdup(isempty(c->consumer) ? name : c->consumer);
                if (!p->consumer)
                        return log_oom();
                struct redis_config rc;
                char host[256];
                r = pushd_redis_config(p, &rc, host, sizeof host);
                if (r < 0)
                        return log_error_errno(r, "[redis] server '%s': %m", c->redis_server.str);
                rc.client_name = "sipfleet-pushd";
                r = redis_new(p->loop, &rc, &p->redis);
                if (r < 0)
                        return log_error_errno(r, "Cannot set up Redis: %m");
                redis_set_state_callback(p->redis, on_redis_state, p);
                r = stream_start(p);
                if (r < 0)
                        return r;
        }
        if (c->http_listen.str) {
                r = intake_http_start(p);
                if (r < 0)
                        return r;
        }
        return 0;
}
