/* SPDX-License-Identifier: MIT */
/* Announcing the relay in Redis, so that proxies pick a live, lightly loaded one.
 *
 * Every announce-interval, with [mediarelay] redis-address set:
 *   SET  sipfleet:mediarelay:<ng-address>  <JSON>  PX <3 x interval>
 *   ZADD sipfleet:mediarelays  <expiry, unix ms>  <ng-address>
 *   ZREMRANGEBYSCORE sipfleet:mediarelays -inf <now, unix ms>     (drops relays that died)
 * The JSON: {"ng": "<ng-address>", "address": "<advertised-address>", "calls": n,
 * "max-sessions": n, "ports-in-use": n, "ports-total": n, "packet-threads": n, "updated": unix ms}.
 * A reader lists live relays with ZRANGEBYSCORE sipfleet:mediarelays <now> +inf and reads each
 * key. On SIGTERM the relay removes both entries before exiting. */
#define LOG_SUBSYSTEM LOG_redis
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <sys/un.h>

#include "daemon.h"
#include "log.h"
#include "loop.h"
#include "mediarelay.h"
#include "redis.h"

#define ANNOUNCE_SET "sipfleet:mediarelays"
#define ANNOUNCE_KEY_PREFIX "sipfleet:mediarelay:"

static void on_state(struct redis *r, enum redis_link link, bool up, int error, const char *reason,
                     void *userdata) {
        if (up)
                log_info("Redis %s link up", redis_link_name(link));
        else
                log_warning("Redis %s link down: %s", redis_link_name(link),
                            reason ? reason : strerror(-error));
}

static void announce_now(struct mediarelay *m) {
        char key[256], expiry[32], now_s[32], ttl[32];
        uint64_t now = realtime_msec(), ttl_ms = 3 * MAX(m->config.announce_interval_ms, 100);
        json_t *j;
        char *text;

        if (!redis_is_connected(m->redis))
                return;
        j = json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I}", "ng", m->config.ng_listen.str,
                      "address", m->advertised, "calls", (json_int_t)m->n_calls, "max-sessions",
                      (json_int_t)m->config.max_sessions, "ports-in-use",
                      (json_int_t)m->ports_in_use, "ports-total", (json_int_t)(2 * m->port_pairs),
                      "packet-threads", (json_int_t)m->n_workers, "updated", (json_int_t)now);
        text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!text)
                return;
        snprintf(key, sizeof(key), ANNOUNCE_KEY_PREFIX "%s", m->config.ng_listen.str);
        snprintf(expiry, sizeof(expiry), "%llu", (unsigned long long)(now + ttl_ms));
        snprintf(now_s, sizeof(now_s), "%llu", (unsigned long long)now);
        snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)ttl_ms);
        redis_command(m->redis, NULL, NULL, "SET %s %s PX %s", key, text, ttl);
        redis_command(m->redis, NULL, NULL, "ZADD " ANNOUNCE_SET " %s %s", expiry,
                      m->config.ng_listen.str);
        redis_command(m->redis, NULL, NULL, "ZREMRANGEBYSCORE " ANNOUNCE_SET " -inf (%s", now_s);
        free(text);
}

static void on_timer(struct loop_timer *t, void *userdata) {
        struct mediarelay *m = userdata;
        announce_now(m);
        loop_timer_arm(t, MAX(m->config.announce_interval_ms, 100));
}

int announce_start(struct mediarelay *m) {
        const struct conf_address *a = &m->config.redis_address;
        struct redis_config rc = {
                .password = m->config.redis_password,
                .client_name = "sipfleet-mediarelay",
        };
        char host[128];
        int r;

        if (a->len == 0)
                return 0;
        if (a->sa.ss_family == AF_UNIX)
                rc.unix_path = ((const struct sockaddr_un *)&a->sa)->sun_path;
        else {
                const char *s = a->str, *colon = strrchr(s, ':');
                size_t hl = colon ? (size_t)(colon - s) : strlen(s);
                if (s[0] == '[') {
                        s++;
                        hl = hl >= 2 ? hl - 2 : 0;
                }
                if (hl >= sizeof(host))
                        return log_error_errno(EINVAL, "[mediarelay] redis-address too long");
                memcpy(host, s, hl);
                host[hl] = 0;
                rc.host = host;
                rc.port = (uint16_t)(colon ? atoi(colon + 1) : 6379);
        }
        r = redis_new(m->loop, &rc, &m->redis);
        if (r < 0)
                return log_error_errno(r, "Redis client for '%s': %m", a->str);
        redis_set_state_callback(m->redis, on_state, m);
        r = loop_timer_new(m->loop, on_timer, m, &m->announce_timer);
        if (r < 0)
                return r;
        loop_timer_arm(m->announce_timer, 10);
        return 0;
}

struct withdraw {
        struct mediarelay *m;  /* m->withdraw points back while commands are in flight */
        struct daemon *d;
        int pending;
};

static void on_withdrawn(struct redis *r, struct redisReply *reply, int error, void *userdata) {
        struct withdraw *w = userdata;
        if (--w->pending == 0) {
                if (w->d) /* NULL: the relay is being freed, the daemon stopped already */
                        daemon_drained(w->d);
                w->m->withdraw = NULL;
                free(w);
        }
}

/* Removes the announce; calls daemon_drained() once done (or at once without Redis). */
void announce_withdraw(struct mediarelay *m, struct daemon *d) {
        struct withdraw *w;
        char key[256];

        loop_timer_free(m->announce_timer);
        m->announce_timer = NULL;
        if (!m->redis || !redis_is_connected(m->redis) || !(w = calloc(1, sizeof(*w)))) {
                daemon_drained(d);
                return;
        }
        *w = (struct withdraw){.m = m, .d = d};
        snprintf(key, sizeof(key), ANNOUNCE_KEY_PREFIX "%s", m->config.ng_listen.str);
        if (redis_command(m->redis, on_withdrawn, w, "DEL %s", key) == 0)
                w->pending++;
        if (redis_command(m->redis, on_withdrawn, w, "ZREM " ANNOUNCE_SET " %s",
                          m->config.ng_listen.str) == 0)
                w->pending++;
        if (w->pending == 0) {
                free(w);
                daemon_drained(d);
                return;
        }
        m->withdraw = w;
}

void announce_stop(struct mediarelay *m) {
        if (m->withdraw)
                m->withdraw->d = NULL;
        loop_timer_free(m->announce_timer);
        m->announce_timer = NULL;
        redis_free(m->redis);
        m->redis = NULL;
}
