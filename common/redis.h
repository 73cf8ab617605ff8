/* SPDX-License-Identifier: MIT */
#pragma once

/* An asynchronous Redis client on top of struct loop (either backend), over hiredis 0.14.
 *
 * Two connections ("links"): one for commands, and one for pub/sub, opened on the first
 * subscription. Each (re)connect first sends AUTH, SELECT and CLIENT SETNAME as configured;
 * the link is up once they succeeded (and, for pub/sub, once every subscription is active
 * again). Lost or failed links are reconnected with exponential backoff, for ever. The idle
 * pub/sub link is probed by re-subscribing to the channel "__sipfleet__:keepalive" (hiredis 0.14
 * misroutes PING replies in subscribed mode): an ACL user needs that channel besides its own
 * (e.g. "&__sipfleet__:*"). The command link relies on the command timeout and TCP keep-alive.
 *
 * Commands never wait for a connection: while the command link is down redis_command() fails
 * with -ENOTCONN at once. A command accepted (return value 0) gets its callback called exactly
 * once: with a reply, or with an error: -ETIMEDOUT when it got no reply in time (the connection
 * is then considered dead, every command in flight fails with -ETIMEDOUT and the link
 * reconnects), -ECONNRESET (or -EIO, -EPROTO...) when the connection broke first, and
 * -ECANCELED when redis_free() ran first. The command link is shared and pipelined: blocking
 * commands (BLPOP, XREADGROUP BLOCK...) would stall it and trip the command timeout.
 *
 * Single-threaded: call from the loop's thread. Every callback may call any function here,
 * redis_free() included. Nothing is logged above debug level: the state callback tells the
 * caller what to log. */

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct redis;
struct redisReply;

struct redis_config {
        /* Where the server is: unix_path if set, host and port otherwise (NULL → "127.0.0.1",
         * 0 → 6379). A host name is resolved with getaddrinfo(), which blocks: give an address,
         * or a name from /etc/hosts. */
        const char *host;
        uint16_t port;
        const char *unix_path;
        /* Optional. With a password, "AUTH password" is sent; with a username too,
         * "AUTH username password" (Redis 6 ACL). A username needs a password. The password is
         * never logged. */
        const char *username;
        const char *password;
        unsigned db;             /* SELECT db when not 0 */
        const char *client_name; /* CLIENT SETNAME when set ("-cmd"/"-sub" is appended) */
        /* Milliseconds; 0 takes the default shown. */
        uint64_t connect_timeout_ms;   /* 2000: TCP connect and the AUTH/SELECT handshake */
        uint64_t command_timeout_ms;   /* 2000: a reply, or a keep-alive answer, must come in time */
        uint64_t reconnect_min_ms;     /* 100: first delay before a reconnect, then doubled... */
        uint64_t reconnect_max_ms;     /* 5000: ...up to this */
        uint64_t keepalive_interval_ms; /* 10000: probe of the idle pub/sub link */
        size_t max_pending; /* 65536 (0): commands in flight at most, then -ENOBUFS */

        /* Failover (TCP only). With follow_master, the command link asks "INFO replication"
         * as the last step of each handshake and every replica_check_ms while up: on a
         * replica whose link to its master is up it reconnects to that master at once (on one
         * whose master is down it counts as a failed attempt); on the master it learns the
         * replicas. A command answered READONLY (the server was turned into a replica) drops
         * the link the same way. With use_replicas, a lost or refused master makes the next
         * attempts go through the known replicas in turn (one of them may have been promoted,
         * or know the new master) before the backoff starts. The pub/sub link connects to the
         * current master, and moves when it changes. */
        bool follow_master;
        bool use_replicas;
        uint64_t replica_check_ms; /* 60000 (0) */
        /* Sentinels ("host:port" each, NULL-terminated; NULL or empty: none) watching
         * master_name: each is asked for the master (SENTINEL get-master-addr-by-name) when it
         * connects and whenever the command link is lost, and its "+switch-master" events move
         * both links to the new master at once. The host/port above is only the first guess. */
        char *const *sentinels;
        const char *master_name;
};

enum redis_link {
        REDIS_LINK_COMMAND,
        REDIS_LINK_PUBSUB,
        _REDIS_LINK_MAX,
};

const char *redis_link_name(enum redis_link link);

/* reply: the server's answer when error == 0 (it may be a REDIS_REPLY_ERROR reply); NULL when
 * error < 0. Owned by the library: valid during the call only. */
typedef void (*redis_reply_fn)(struct redis *r, struct redisReply *reply, int error, void *userdata);

/* A link went up (up = true, error 0, reason NULL) or down or failed to come up (up = false,
 * error < 0, reason a human-readable text such as the server's AUTH error). Failures repeating
 * with the same error while a link stays down are reported once. */
typedef void (*redis_state_fn)(struct redis *r, enum redis_link link, bool up, int error,
                               const char *reason, void *userdata);

enum redis_message_type {
        REDIS_MESSAGE_SUBSCRIBED, /* the server confirmed the subscription (again after a reconnect) */
        REDIS_MESSAGE_DATA,       /* a published message */
};

struct redis_message {
        enum redis_message_type type;
        const char *channel; /* where it was published (the channel or pattern subscribed for
                              * REDIS_MESSAGE_SUBSCRIBED) */
        const char *pattern; /* the pattern of a psubscription, NULL otherwise */
        const char *data;    /* payload, binary-safe, NUL-terminated; NULL for SUBSCRIBED */
        size_t len;
};

typedef void (*redis_message_fn)(struct redis *r, const struct redis_message *m, void *userdata);

/* Copies cfg. Connecting starts from the loop, so no callback runs before this returns.
 * -EINVAL for an inconsistent config. */
int redis_new(struct loop *loop, const struct redis_config *cfg, struct redis **ret);
/* Closes both connections. Commands in flight get their callback once, from within this call,
 * with -ECANCELED (or the error they had just failed with, if their callback was still to
 * run); subscriptions are dropped silently. Accepts NULL. Safe from any callback; from a reply
 * or message callback, hiredis lets go of the socket when that callback returns, so free the
 * loop only after. */
void redis_free(struct redis *r);
static inline void redis_freep(struct redis **r) {
        redis_free(*r);
}

void redis_set_state_callback(struct redis *r, redis_state_fn cb, void *userdata);

/* Whether the command link is up: redis_command() would be accepted. */
bool redis_is_connected(struct redis *r);
bool redis_link_is_up(struct redis *r, enum redis_link link);
/* The server the command link is connected to (or trying), "host" and *port; NULL for a Unix
 * socket. Valid until the next callback. */
const char *redis_current_server(struct redis *r, uint16_t *port);

/* hiredis format: %s a C string, %b a binary-safe buffer (pointer, size_t length), %d...
 * 0: accepted, cb will be called exactly once (never from within this call).
 * < 0: cb will never be called: -ENOTCONN (link down), -EINVAL (bad format, or a (un)subscribe
 * or MONITOR command: use redis_subscribe() and friends), -ENOMEM,
 * -ENOBUFS (max_pending reached), -ESHUTDOWN (redis_free() is running). cb may be NULL to
 * ignore the outcome. */
int redis_command(struct redis *r, redis_reply_fn cb, void *userdata, const char *fmt, ...);
int redis_commandv(struct redis *r, redis_reply_fn cb, void *userdata, const char *fmt, va_list ap);
int redis_command_argv(struct redis *r, redis_reply_fn cb, void *userdata, int argc,
                       const char *const *argv, const size_t *argvlen);

/* Subscriptions: one (channel or pattern, cb, userdata) triple each; -EEXIST for a duplicate.
 * They live until unsubscribed or redis_free(), across reconnects (re-issued automatically;
 * each gets REDIS_MESSAGE_SUBSCRIBED when active again). Subscribing while the pub/sub link is
 * down is fine: it is sent when the link comes up. The first subscription opens the link. */
int redis_subscribe(struct redis *r, const char *channel, redis_message_fn cb, void *userdata);
int redis_psubscribe(struct redis *r, const char *pattern, redis_message_fn cb, void *userdata);
/* -ENOENT when no such subscription. */
int redis_unsubscribe(struct redis *r, const char *channel, redis_message_fn cb, void *userdata);
int redis_punsubscribe(struct redis *r, const char *pattern, redis_message_fn cb, void *userdata);
