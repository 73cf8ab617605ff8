/* SPDX-License-Identifier: MIT */
/* Intake from a Redis Stream through a consumer group.
 *
 * Reading happens on a second Redis connection of its own, so that XREADGROUP can BLOCK there
 * (common/redis.h forbids blocking commands on the shared command link): one read in flight at
 * a time, with a command timeout above the block time; the command link carries the acks,
 * dead letters, dead-token messages and claims. Each time the reader link comes up, the group
 * is created if missing (XGROUP CREATE ... 0 MKSTREAM) and this consumer's own pending entries
 * are read first (XREADGROUP ... 0): what a previous run (killed, or its connection lost)
 * received but did not acknowledge is sent again. Then new entries (">"). A timer runs
 * XAUTOCLAIM to take over entries another consumer left idle for claim-idle-time, so several
 * instances share the work and a dead instance's jobs are not lost. Reading pauses while
 * max-jobs are held. */
#define LOG_SUBSYSTEM LOG_redis
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <stdio.h>

#include "job.h"
#include "log.h"
#include "loop.h"
#include "pushd-internal.h"
#include "redis.h"

int pushd_redis_config(struct pushd *p, struct redis_config *rc, char *host, size_t hostlen);
int pushd_redis_config(struct pushd *p, struct redis_config *rc, char *host, size_t hostlen) {
        const struct conf_address *a = &p->config.redis_server;
        char port[16];
        *rc = (struct redis_config){
                .username = p->config.redis_username,
                .password = p->config.redis_password,
                .db = (unsigned)p->config.redis_db,
        };
        if (a->sa.ss_family == AF_UNIX) {
                rc->unix_path = a->str;
                return 0;
        }
        if (getnameinfo((const struct sockaddr *)&a->sa, a->len, host, (socklen_t)hostlen, port,
                        sizeof port, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
                return -EINVAL;
        rc->host = host;
        rc->port = (uint16_t)atoi(port);
        return 0;
}

static void read_next(struct pushd *p);

static void on_read_timer(struct loop_timer *t, void *userdata) {
        read_next(userdata);
}

static void read_later(struct pushd *p, uint64_t ms) {
        if (p->read_timer)
                loop_timer_arm(p->read_timer, ms);
}

/* One entry: [id, [field, value, ...]] (fields nil when the entry was deleted meanwhile). */
static void handle_entry(struct pushd *p, redisReply *e, bool reclaimed, bool check_held,
                         char *last_id, size_t last_len) {
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
            e->element[0]->type != REDIS_REPLY_STRING)
                return;
        const char *id = e->element[0]->str;
        snprintf(last_id, last_len, "%s", id);
        redisReply *fields = e->element[1];
        /* Only pending entries (our history, claims) can be ones we already hold. */
        if (check_held && pushd_holds(p, id))
                return;
        if (fields->type != REDIS_REPLY_ARRAY) {
                /* Deleted (trimmed) before we got to it: nothing to send. */
                pushd_ack(p, id);
                return;
        }
        const char *raw = NULL;
        size_t raw_len = 0;
        for (size_t i = 0; i + 1 < fields->elements; i += 2)
                if (fields->element[i]->type == REDIS_REPLY_STRING &&
                    streq(fields->element[i]->str, "job") &&
                    fields->element[i + 1]->type == REDIS_REPLY_STRING) {
                        raw = fields->element[i + 1]->str;
                        raw_len = fields->element[i + 1]->len;
                }
        stats_inc(p->stats.jobs_stream);
        if (reclaimed)
                stats_inc(p->stats.jobs_reclaimed);
        if (!raw) {
                pushd_reject_entry(p, id, NULL, "the entry has no \"job\" field");
                return;
        }
        struct push_job *job = NULL;
        _cleanup_free_ char *error = NULL;
        int r = push_job_parse(raw, raw_len, &job, &error);
        if (r < 0) {
                pushd_reject_entry(p, id, raw, error ? error : strerror(-r));
                return;
        }
        log_debug("Job %s from the stream%s.", id, reclaimed ? " (taken over)" : "");
        if (pushd_job_start(p, job, id, raw, check_held) < 0)
                log_oom();
}

static size_t handle_entries(struct pushd *p, redisReply *entries, bool reclaimed, bool check_held,
                             char *last_id, size_t last_len) {
        if (!entries || entries->type != REDIS_REPLY_ARRAY)
                return 0;
        for (size_t i = 0; i < entries->elements; i++)
                handle_entry(p, entries->element[i], reclaimed, check_held, last_id, last_len);
        return entries->elements;
}

static void on_group(struct redis *r, redisReply *reply, int error, void *userdata) {
        struct pushd *p = userdata;
        p->reading = false;
        if (error < 0 || p->stopping)
                return; /* link lost: we start again when it is back */
        if (reply->type == REDIS_REPLY_ERROR && !strstr(reply->str, "BUSYGROUP")) {
                log_error("Cannot create the consumer group '%s' on '%s': %s", p->config.group,
                          p->config.stream, reply->str);
                read_later(p, 1000);
                return;
        }
        p->group_ready = true;
        read_next(p);
}

static void on_read(struct redis *r, redisReply *reply, int error, void *userdata) {
        struct pushd *p = userdata;
        p->reading = false;
        if (error == -ECANCELED || p->stopping)
                return;
        if (error < 0) {
                read_later(p, 200);
                return;
        }
        if (reply->type == REDIS_REPLY_ERROR) {
                log_warning_ratelimited("XREADGROUP failed: %s", reply->str);
                if (strstr(reply->str, "NOGROUP"))
                        p->group_ready = false;
                read_later(p, 1000);
                return;
        }
        char last[64] = "";
        size_t n = 0;
        /* [[stream, [entries]]], or nil when the block time passed without entries. */
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
            reply->element[0]->type == REDIS_REPLY_ARRAY && reply->element[0]->elements == 2)
                n = handle_entries(p, reply->element[0]->element[1], false, !p->history_done, last,
                                   sizeof last);
        if (!p->history_done) {
                if (n == 0)
                        p->history_done = true;
                else if (last[0])
                        snprintf(p->history_cursor, sizeof p->history_cursor, "%s", last);
        }
        read_next(p);
}

static void read_next(struct pushd *p) {
        int r;
        if (p->stopping || p->reading || !p->reader || !redis_is_connected(p->reader))
                return;
        if (!p->group_ready) {
                r = redis_command(p->reader, on_group, p, "XGROUP CREATE %s %s 0 MKSTREAM",
                                  p->config.stream, p->config.group);
                if (r < 0)
                        read_later(p, 200);
                else
                        p->reading = true; /* the group's reply goes on reading */
                return;
        }
        size_t room = pushd_free_slots(p);
        if (room == 0)
                return; /* stream_kick() resumes */
        char count[24], block[24];
        snprintf(count, sizeof count, "%zu", MIN(room, (size_t)p->config.batch_size));
        snprintf(block, sizeof block, "%llu", (unsigned long long)MAX(p->config.block_ms, 1));
        if (!p->history_done)
                r = redis_command(p->reader, on_read, p,
                                  "XREADGROUP GROUP %s %s COUNT %s STREAMS %s %s", p->config.group,
                                  p->consumer, count, p->config.stream, p->history_cursor);
        else
                r = redis_command(p->reader, on_read, p,
                                  "XREADGROUP GROUP %s %s COUNT %s BLOCK %s STREAMS %s >",
                                  p->config.group, p->consumer, count, block, p->config.stream);
        if (r < 0) {
                read_later(p, 200);
                return;
        }
        p->reading = true;
}

void stream_kick(struct pushd *p) {
        read_next(p);
}

static void on_reader_state(struct redis *r, enum redis_link link, bool up, int error,
                            const char *reason, void *userdata) {
        struct pushd *p = userdata;
        if (link != REDIS_LINK_COMMAND)
                return;
        if (!up) {
                log_warning("Redis stream reader link down: %s",
                            reason ? reason : strerror(-error));
                return;
        }
        log_notice("Redis stream reader link up: reading '%s' as '%s' of group '%s'.",
                   p->config.stream, p->consumer, p->config.group);
        /* Our own unacknowledged entries first, every time: some may have been delivered on
         * the connection that just broke. */
        p->group_ready = false;
        p->history_done = false;
        snprintf(p->history_cursor, sizeof p->history_cursor, "0");
        read_next(p);
}

static void on_claim(struct redis *r, redisReply *reply, int error, void *userdata) {
        struct pushd *p = userdata;
        p->claiming = false;
        p->redis_pending--;
        if (p->stopping) {
                pushd_check_drained(p);
                return;
        }
        if (error < 0 || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2) {
                if (error >= 0 && reply->type == REDIS_REPLY_ERROR &&
                    !strstr(reply->str, "NOGROUP"))
                        log_warning_ratelimited("XAUTOCLAIM failed: %s", reply->str);
                return;
        }
        char last[64] = "";
        if (reply->element[0]->type == REDIS_REPLY_STRING)
                snprintf(p->claim_cursor, sizeof p->claim_cursor, "%s", reply->element[0]->str);
        size_t n = handle_entries(p, reply->element[1], true, true, last, sizeof last);
        if (n > 0)
                log_notice("Took over %zu job(s) left unacknowledged by another consumer.", n);
        /* Redis 7 lists the ids of deleted entries it removed from the pending list. */
}

static void on_claim_timer(struct loop_timer *t, void *userdata) {
        struct pushd *p = userdata;
        loop_timer_arm(t, p->config.claim_interval_ms);
        size_t room = pushd_free_slots(p);
        if (p->stopping || p->claiming || room == 0 || !p->group_ready ||
            !redis_is_connected(p->redis))
                return;
        char idle[24], count[24];
        snprintf(idle, sizeof idle, "%llu", (unsigned long long)p->config.claim_idle_ms);
        snprintf(count, sizeof count, "%zu", MIN(room, (size_t)p->config.batch_size));
        if (redis_command(p->redis, on_claim, p, "XAUTOCLAIM %s %s %s %s %s COUNT %s",
                          p->config.stream, p->config.group, p->consumer, idle, p->claim_cursor,
                          count) >= 0) {
                p->claiming = true;
                p->redis_pending++;
        }
}

int stream_start(struct pushd *p) {
        struct redis_config rc;
        char host[256];
        int r = pushd_redis_config(p, &rc, host, sizeof host);
        if (r < 0)
                return log_error_errno(r, "[redis] server '%s': %m", p->config.redis_server.str);
        rc.client_name = "sipfleet-pushd-reader";
        /* One blocking read at a time: its answer may take the whole block time. */
        rc.command_timeout_ms = p->config.block_ms + 2000;
        rc.max_pending = 4;
        snprintf(p->claim_cursor, sizeof p->claim_cursor, "0-0");
        if ((r = loop_timer_new(p->loop, on_read_timer, p, &p->read_timer)) < 0 ||
            (r = loop_timer_new(p->loop, on_claim_timer, p, &p->claim_timer)) < 0 ||
            (r = loop_timer_arm(p->claim_timer, MIN(p->config.claim_interval_ms, 1000))) < 0)
                return log_error_errno(r, "Cannot set up timers: %m");
        r = redis_new(p->loop, &rc, &p->reader);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the Redis stream reader: %m");
        redis_set_state_callback(p->reader, on_reader_state, p);
        return 0;
}

void stream_stop(struct pushd *p) {
        /* Entries the server handed to a read still in flight stay pending for this
         * consumer: the next start reads them again. */
        redis_free(p->reader);
        p->reader = NULL;
        p->reading = false;
        loop_timer_free(p->read_timer);
        p->read_timer = NULL;
        loop_timer_free(p->claim_timer);
        p->claim_timer = NULL;
}
