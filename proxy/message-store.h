/* SPDX-License-Identifier: MIT */
#pragma once

/* Persistence of pending MESSAGEs (store-and-forward): each message waiting for a device, and
 * which devices got it. Two implementations behind one table of operations:
 *   - SQLite (message-store-sqlite.c), the embedded default: synchronous, one local file;
 *   - Redis (message-store-redis.c), with the Redis registrar: asynchronous writes, shared by
 *     the proxies of a cluster, so that a message held by a proxy that dies is taken over by
 *     another one (see that file for the layout and the ownership rules).
 *
 * Writes (add, delivered, remove) return at once. 0 means the write was done (SQLite) or sent
 * (Redis); a write that fails later is logged by the store and counted in n_errors. The id of
 * a message is chosen by the store and known when add returns.
 *
 * Restore: the store hands over the messages this proxy is to deliver through the restore
 * callbacks given to message_store_start(): each() once per message, oldest first within a
 * batch, then done() at the end of the batch. SQLite has one batch, at the start, run inside
 * message_store_start(); Redis has one when it first connects (the messages this proxy owned
 * before it stopped) and one more each time it takes over the messages of a proxy that is
 * gone, all from the loop. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct message_store;
struct redis_config;

struct message_store_entry {
        int64_t id;
        const char *aor;
        uint64_t received_at, expires_at;
        const void *data;
        size_t len;
        char *const *delivered; /* devices, NULL-terminated, may be NULL */
};
typedef void (*message_store_each_fn)(const struct message_store_entry *e, void *userdata);
/* The end of a batch: result = messages handed over, or -errno when the batch failed. */
typedef void (*message_store_done_fn)(int result, void *userdata);
/* Redis: this proxy's lease had expired (it was cut off from Redis for longer than the TTL),
 * and other proxies took over these messages (ids, sorted): the holder drops its copies
 * (fork_drop_messages). */
typedef void (*message_store_lost_fn)(const int64_t *taken, size_t n, void *userdata);

struct message_store_ops {
        const char *name;
        int (*start)(struct message_store *s);
        int (*add)(struct message_store *s, const char *aor, uint64_t received_at,
                   uint64_t expires_at, const char *data, size_t len, int64_t *id);
        int (*delivered)(struct message_store *s, int64_t id, const char *device, int status);
        int (*remove)(struct message_store *s, int64_t id);
        /* Writes are accepted and this proxy's own messages were restored. */
        bool (*ready)(struct message_store *s);
        /* Drops pending callbacks. */
        void (*free)(struct message_store *s);
};

struct message_store {
        const struct message_store_ops *ops;
        message_store_each_fn each;
        message_store_done_fn done;
        void *userdata;
        message_store_lost_fn lost; /* optional */
        void *lost_userdata;
        uint64_t n_errors; /* writes and loads that failed */
};

/* -EIO when the file cannot be opened or set up. */
int message_store_sqlite_open(const char *path, struct message_store **ret);

struct message_store_redis_config {
        const struct redis_config *redis; /* the registrar's connection settings */
        const char *key_prefix;           /* of every key; NULL: "fsm:" */
        const char *node;                 /* this proxy's name in the cluster, stable across
                                           * restarts */
        uint64_t owner_ttl_ms;            /* the lease of a node on its messages */
};
/* Connects in the background; nothing is restored before it is connected. */
int message_store_redis_new(struct loop *l, const struct message_store_redis_config *cfg,
                            struct message_store **ret);
/* The Redis store of proxy p, from the settings of [module::Router]: node ("" or NULL: the
 * [cluster] internal-transport when the cluster is enabled, else the host name), prefix (must
 * not overlap registrar_prefix), owner_ttl_ms (1 s at least). Messages taken over from this
 * proxy while it was cut off are dropped from its forks (fork_drop_messages). Logs what is
 * wrong. */
struct proxy;
int message_store_redis_open(struct proxy *p, const struct redis_config *rc,
                             const char *registrar_prefix, const char *node, const char *prefix,
                             uint64_t owner_ttl_ms, struct message_store **ret);

/* Sets the restore callbacks and starts (SQLite: the restore runs now). */
int message_store_start(struct message_store *s, message_store_each_fn each,
                        message_store_done_fn done, void *userdata);
void message_store_close(struct message_store *s);

static inline int message_store_add(struct message_store *s, const char *aor,
                                    uint64_t received_at, uint64_t expires_at, const char *data,
                                    size_t len, int64_t *id) {
        return s->ops->add(s, aor, received_at, expires_at, data, len, id);
}
/* device got its final answer (status); it is not sent the message again. */
static inline int message_store_delivered(struct message_store *s, int64_t id,
                                          const char *device, int status) {
        return s->ops->delivered(s, id, device, status);
}
static inline int message_store_remove(struct message_store *s, int64_t id) {
        return s->ops->remove(s, id);
}
