/* SPDX-License-Identifier: MIT */
/* What the message stores share (see message-store.h), and the setup of the Redis one for the
 * proxy. */
#define LOG_SUBSYSTEM LOG_router
#include <errno.h>
#include <unistd.h>

#include "daemon.h"
#include "fork.h"
#include "log.h"
#include "macro.h"
#include "message-store.h"
#include "proxy.h"

int message_store_start(struct message_store *s, message_store_each_fn each,
                        message_store_done_fn done, void *userdata) {
        s->each = each;
        s->done = done;
        s->userdata = userdata;
        return s->ops->start(s);
}

void message_store_close(struct message_store *s) {
        if (s)
                s->ops->free(s);
}

static int id_compare(const void *a, const void *b) {
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
        return x < y ? -1 : x > y;
}

struct taken_ids {
        const int64_t *ids;
        size_t n;
};

static bool id_kept(int64_t id, void *userdata) {
        const struct taken_ids *taken = userdata;
        return !bsearch(&id, taken->ids, taken->n, sizeof id, id_compare);
}

/* Other proxies took over some of our messages while we were cut off from Redis. */
static void on_taken(const int64_t *ids, size_t n, void *userdata) {
        struct proxy *p = userdata;
        struct taken_ids taken = {ids, n};
        fork_drop_messages(p, id_kept, &taken);
}

static bool starts_with(const char *s, const char *prefix) {
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

int message_store_redis_open(struct proxy *p, const struct redis_config *rc,
                             const char *registrar_prefix, const char *node, const char *prefix,
                             uint64_t owner_ttl_ms, struct message_store **ret) {
        char host[256] = "";
        if (isempty(node) && p->cluster.enabled && !isempty(p->cluster.internal_transport))
                node = p->cluster.internal_transport;
        if (isempty(node)) {
                if (gethostname(host, sizeof host - 1) < 0 || !host[0])
                        return log_error_errno(EINVAL, "[module::Router] message-store-node is "
                                                       "empty and the host name is unknown.");
                node = host;
        }
        if (!prefix)
                prefix = "";
        if (isempty(prefix) || starts_with(prefix, registrar_prefix) ||
            starts_with(registrar_prefix, prefix))
                return log_error_errno(EINVAL, "[module::Router] message-redis-key-prefix '%s' "
                                               "must not be empty and must not overlap the "
                                               "registrar's redis-key-prefix '%s'.",
                                       prefix, registrar_prefix);
        if (owner_ttl_ms < 1000)
                return log_error_errno(EINVAL, "[module::Router] message-store-owner-ttl must "
                                               "be at least 1s.");
        const struct message_store_redis_config cfg = {
                .redis = rc,
                .key_prefix = prefix,
                .node = node,
                .owner_ttl_ms = owner_ttl_ms,
        };
        int r = message_store_redis_new(daemon_loop(p->daemon), &cfg, ret);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the Redis message store: %m");
        (*ret)->lost = on_taken;
        (*ret)->lost_userdata = p;
        log_info("Pending messages are kept in Redis, node '%s'.", node);
        return 0;
}
