/* SPDX-License-Identifier: MIT */
#define LOG_SUBSYSTEM LOG_redis

#include <assert.h>
#include <ctype.h>
#include <fcntl.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "loop.h"
#include "macro.h"
#include "redis.h"

/* How the pieces fit (hiredis 0.14):
 *
 * - hiredis calls every reply callback exactly once: with the reply, or with NULL when the
 *   context is freed (by us, or by hiredis itself after an I/O error or EOF). Its disconnect
 *   callback runs after those NULL replies, and not at all when the connect failed (the connect
 *   callback gets REDIS_ERR instead, and hiredis frees the context right after it).
 * - To drop a context we "detach" it first (ac->data = NULL, conn->ac = NULL): callbacks
 *   arriving for a detached context only release what they hold. The commands in flight are
 *   moved to r->failed before, and their callers are told from there.
 * - redisAsyncFree() from inside a reply callback is deferred by hiredis until the callback
 *   returns; from a timer it frees at once. We never free a context from its connect or
 *   disconnect callback (hiredis is freeing it already, or would use it afterwards).
 * - Caller code runs from reply callbacks and timers only, always as the last thing that
 *   touches the struct redis, or under a reference (redis_ref) when more follows. So any
 *   callback may call redis_free(). */

#define KEEPALIVE_CHANNEL "__sipfleet__:keepalive"
#define SUBSCRIBE_BATCH 128

enum conn_state {
        CONN_IDLE,        /* not wanted yet: pub/sub before the first subscription */
        CONN_WAITING,     /* backoff before the next attempt */
        CONN_CONNECTING,  /* TCP connect, then AUTH/SELECT/CLIENT SETNAME/PING */
        CONN_SUBSCRIBING, /* pub/sub: subscriptions re-issued, waiting for the last one */
        CONN_UP,
};

struct redis_conn {
        struct redis *redis;
        enum redis_link link;
        enum conn_state state;
        redisAsyncContext *ac;
        struct loop_timer *timer;     /* connect timeout, or backoff */
        struct loop_timer *keepalive; /* pub/sub only */
        bool keepalive_pending;
        unsigned handshake_left;
        uint64_t backoff_ms; /* next delay; 0: start from reconnect_min_ms */
        bool reported_up;
        int reported_error;
        bool retry_now;         /* the next attempt without delay (following a new master) */
        char target_host[256];  /* where it is connected or connecting */
        uint16_t target_port;
};

struct redis_cmd {
        struct redis_cmd *prev, *next;
        redis_reply_fn cb;
        void *userdata;
        uint64_t sent_msec;
        int error;       /* why it failed, while on r->failed */
        bool in_hiredis; /* hiredis still holds it and will call on_command_reply() */
        bool done;       /* the caller was told (or never will be) */
};

struct redis_subscriber {
        struct redis_subscriber *next;
        redis_message_fn cb;
        void *userdata;
        bool confirmed;
        bool dead; /* unsubscribed while its channel was dispatching; unlinked after */
};

#define MAX_REPLICAS 16
#define MAX_SENTINELS 16

struct redis_addr {
        char host[256];
        uint16_t port;
};

struct sentinel {
        struct redis *parent;
        struct redis *client;
};

struct redis_channel {
        struct redis_channel *hash_next;
        struct redis_subscriber *subscribers;
        bool pattern;
        char name[];
};

struct redis {
        unsigned n_ref;
        bool closed;
        struct loop *loop;

        char *host, *unix_path, *username, *password, *client_name;
        uint16_t port;
        unsigned db;
        uint64_t connect_timeout_ms, command_timeout_ms;
        uint64_t reconnect_min_ms, reconnect_max_ms, keepalive_interval_ms;

        redis_state_fn state_cb;
        void *state_userdata;

        struct redis_conn conns[_REDIS_LINK_MAX];

        /* Commands sent on the command link, oldest first: replies come in this order. */
        struct redis_cmd *inflight_head, *inflight_tail;
        size_t n_inflight, max_pending;
        /* Taken off a lost link; their callbacks are still to run. */
        struct redis_cmd *failed_head, *failed_tail;
        struct loop_timer *command_timer;

        /* Failover */
        bool follow_master, use_replicas;
        uint64_t replica_check_ms;
        struct redis_addr master;                 /* best guess of the master */
        struct redis_addr replicas[MAX_REPLICAS]; /* learned from the master */
        size_t n_replicas;
        size_t attempt; /* 0: the master, i: replicas[i - 1] */
        struct loop_timer *replication_timer;
        struct sentinel sentinels[MAX_SENTINELS];
        size_t n_sentinels;
        char *master_name;
        bool sentinel_named; /* master comes from a sentinel */

        struct redis_channel **buckets;
        size_t n_buckets, n_channels;
        struct redis_channel *dispatching; /* channel whose subscribers are being called */
        bool dispatch_dirty;
};

/* Where to connect. The HA work replaces this step: ask the Sentinels for the master (or a
 * replica for pub/sub), asynchronously, then call conn_connect_target() with the answer. */
struct redis_target {
        const char *host;
        uint16_t port;
        const char *unix_path;
};

static void conn_down(struct redis_conn *c, int error, const char *reason, bool free_context);
static bool replication_check(struct redis_conn *c, const redisReply *reply);
static void sentinels_ask(struct redis *r);

static const char *const link_names[_REDIS_LINK_MAX] = {
        [REDIS_LINK_COMMAND] = "command",
        [REDIS_LINK_PUBSUB] = "pub/sub",
};

const char *redis_link_name(enum redis_link link) {
        return (unsigned)link < _REDIS_LINK_MAX ? link_names[link] : NULL;
}

/* ---- references ---------------------------------------------------------------------- */

static void redis_ref(struct redis *r) {
        r->n_ref++;
}

static void channel_free(struct redis_channel *ch) {
        while (ch->subscribers) {
                struct redis_subscriber *s = ch->subscribers;
                ch->subscribers = s->next;
                free(s);
        }
        free(ch);
}

static void redis_destroy(struct redis *r) {
        assert(!r->failed_head && !r->inflight_head);

        for (size_t i = 0; i < r->n_buckets; i++)
                while (r->buckets[i]) {
                        struct redis_channel *ch = r->buckets[i];
                        r->buckets[i] = ch->hash_next;
                        channel_free(ch);
                }
        free(r->buckets);

        free(r->host);
        free(r->unix_path);
        free(r->username);
        if (r->password) {
                explicit_bzero(r->password, strlen(r->password));
                free(r->password);
        }
        free(r->client_name);
        free(r->master_name);
        free(r);
}

static void redis_unref(struct redis *r) {
        assert(r->n_ref > 0);
        if (--r->n_ref == 0)
                redis_destroy(r);
}

/* ---- hiredis adapter over struct loop ------------------------------------------------ */

struct redis_adapter {
        redisAsyncContext *ac;
        struct loop_io *io;
        bool dispatching; /* inside adapter_io() */
        bool released;    /* hiredis called cleanup: free when adapter_io() returns */
};

static void adapter_update(struct redis_adapter *a, unsigned set, unsigned clear) {
        if (!a->io)
                return;
        unsigned old = loop_io_get_events(a->io), events = (old | set) & ~clear;
        if (events != old)
                (void)loop_io_set_events(a->io, events);
}

static void adapter_add_read(void *p) {
        adapter_update(p, LOOP_READ, 0);
}

static void adapter_del_read(void *p) {
        adapter_update(p, 0, LOOP_READ);
}

static void adapter_add_write(void *p) {
        adapter_update(p, LOOP_WRITE, 0);
}

static void adapter_del_write(void *p) {
        adapter_update(p, 0, LOOP_WRITE);
}

/* Called by hiredis when it frees the context, possibly from within adapter_io(), and in 0.14
 * possibly twice: unhook so that a second call finds nothing. */
static void adapter_cleanup(void *p) {
        struct redis_adapter *a = p;
        redisAsyncContext *ac = a->ac;

        ac->ev.data = NULL;
        ac->ev.addRead = ac->ev.delRead = NULL;
        ac->ev.addWrite = ac->ev.delWrite = NULL;
        ac->ev.cleanup = NULL;

        loop_io_free(a->io);
        a->io = NULL;
        if (a->dispatching)
                a->released = true;
        else
                free(a);
}

static void adapter_io(struct loop_io *io, int fd, unsigned events, void *userdata) {
        struct redis_adapter *a = userdata;

        /* Either call may free the context, and cleanup then marks us released: never touch
         * a->ac after that. */
        a->dispatching = true;
        if (events & (LOOP_READ | LOOP_ERROR))
                redisAsyncHandleRead(a->ac);
        if (!a->released && (events & LOOP_WRITE))
                redisAsyncHandleWrite(a->ac);
        a->dispatching = false;
        if (a->released)
                free(a);
}

static int adapter_attach(struct loop *loop, redisAsyncContext *ac) {
        struct redis_adapter *a = calloc(1, sizeof *a);
        if (!a)
                return -ENOMEM;

        /* Write too from the start: the non-blocking connect completes on writability. */
        int r = loop_io_add(loop, ac->c.fd, LOOP_READ | LOOP_WRITE, adapter_io, a, &a->io);
        if (r < 0) {
                free(a);
                return r;
        }

        a->ac = ac;
        ac->ev.data = a;
        ac->ev.addRead = adapter_add_read;
        ac->ev.delRead = adapter_del_read;
        ac->ev.addWrite = adapter_add_write;
        ac->ev.delWrite = adapter_del_write;
        ac->ev.cleanup = adapter_cleanup;
        return 0;
}

/* ---- helpers ------------------------------------------------------------------------- */

/* Server error texts that mean "not allowed" (AUTH, ACL). */
static int error_from_text(const char *text) {
        static const char *const denied[] = {"NOAUTH", "WRONGPASS", "NOPERM"};
        for (size_t i = 0; i < ELEMENTSOF(denied); i++)
                if (strncmp(text, denied[i], strlen(denied[i])) == 0)
                        return -EACCES;
        return -EIO;
}

static int context_error(const redisContext *c, int saved_errno) {
        switch (c->err) {
        case REDIS_ERR_IO:
                return saved_errno > 0 ? -saved_errno : -EIO;
        case REDIS_ERR_EOF:
                return -ECONNRESET;
        case REDIS_ERR_PROTOCOL:
                return -EPROTO;
        case REDIS_ERR_OOM:
                return -ENOMEM;
        default:
                /* An error reply nothing waited for (hiredis disconnects then): e.g. a refused
                 * SUBSCRIBE, or "max number of clients reached". */
                return error_from_text(c->errstr);
        }
}

static const char *context_reason(const redisContext *c) {
        return c->errstr[0] ? c->errstr : "connection lost";
}

/* ---- commands ------------------------------------------------------------------------ */

static void cmd_unlink(struct redis *r, struct redis_cmd *cmd) {
        if (cmd->prev)
                cmd->prev->next = cmd->next;
        else
                r->inflight_head = cmd->next;
        if (cmd->next)
                cmd->next->prev = cmd->prev;
        else
                r->inflight_tail = cmd->prev;
        cmd->prev = cmd->next = NULL;
        r->n_inflight--;
}

/* Tell the caller; the record goes once hiredis has let go of it too. */
static void cmd_finish(struct redis *r, struct redis_cmd *cmd, redisReply *reply, int error) {
        redis_reply_fn cb = cmd->cb;
        void *userdata = cmd->userdata;

        cmd->done = true;
        if (!cmd->in_hiredis)
                free(cmd);
        if (cb)
                cb(r, reply, error, userdata);
}

/* Move everything in flight to the failed list, to be told `error`. */
static void commands_fail_inflight(struct redis *r, int error) {
        for (struct redis_cmd *cmd = r->inflight_head; cmd; cmd = cmd->next)
                cmd->error = error;
        if (!r->inflight_head)
                return;
        if (r->failed_tail) {
                r->failed_tail->next = r->inflight_head;
                r->inflight_head->prev = r->failed_tail;
        } else
                r->failed_head = r->inflight_head;
        r->failed_tail = r->inflight_tail;
        r->inflight_head = r->inflight_tail = NULL;
        r->n_inflight = 0;
}

/* Run the callbacks of the failed commands. Stops when redis_free() starts (it runs the rest)
 * unless `closing`. The caller holds a reference. */
static void commands_notify_failed(struct redis *r, bool closing) {
        while (r->failed_head && (closing || !r->closed)) {
                struct redis_cmd *cmd = r->failed_head;
                r->failed_head = cmd->next;
                if (r->failed_head)
                        r->failed_head->prev = NULL;
                else
                        r->failed_tail = NULL;
                cmd->next = cmd->prev = NULL;
                cmd_finish(r, cmd, NULL, cmd->error);
        }
}

static void on_command_reply(redisAsyncContext *ac, void *reply, void *privdata) {
        struct redis_cmd *cmd = privdata;
        struct redis_conn *c = ac->data;

        cmd->in_hiredis = false;
        if (cmd->done) {
                free(cmd);
                return;
        }
        if (!c)
                return; /* detached: it is on r->failed, told from there */
        if (!reply) {
                /* hiredis is freeing the context after an error: this and everything after it
                 * fail; conn_down() tells them all. */
                conn_down(c, context_error(&ac->c, 0), context_reason(&ac->c), false);
                return;
        }

        struct redis *r = c->redis;
        bool readonly = ((redisReply *)reply)->type == REDIS_REPLY_ERROR &&
                        strncmp(((redisReply *)reply)->str, "READONLY", 8) == 0;
        cmd_unlink(r, cmd);
        if (!readonly) {
                cmd_finish(r, cmd, reply, 0);
                return;
        }
        /* The server was turned into a replica: tell the caller, then find the master. */
        redis_ref(r);
        cmd_finish(r, cmd, reply, 0);
        if (!r->closed && c->ac == ac && c->state == CONN_UP) {
                r->attempt = 0;
                c->retry_now = true;
                conn_down(c, -EROFS, "the server answered READONLY (a replica)", true);
        }
        redis_unref(r);
}

static void on_command_timer(struct loop_timer *t, void *userdata) {
        struct redis *r = userdata;
        struct redis_cmd *cmd = r->inflight_head;

        if (!cmd)
                return;
        uint64_t now = now_msec(), deadline = cmd->sent_msec + r->command_timeout_ms;
        if (now < deadline) {
                (void)loop_timer_arm(t, deadline - now);
                return;
        }
        conn_down(&r->conns[REDIS_LINK_COMMAND], -ETIMEDOUT, "command timeout", true);
}

/* Commands that switch a connection to another mode (their replies do not come one per
 * command): the command link refuses them. buf is in the protocol ("*N\r\n$L\r\nNAME..."). */
static bool command_changes_mode(const char *buf, size_t len) {
        static const char *const names[] = {"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE",
                                            "PUNSUBSCRIBE", "SUNSUBSCRIBE", "MONITOR"};
        const char *end = buf + len, *p = memchr(buf, '\n', len);

        if (!p || ++p >= end || *p != '$')
                return false;
        size_t n = strtoul(p + 1, NULL, 10);
        p = memchr(p, '\n', (size_t)(end - p));
        if (!p || ++p + n > end)
                return false;
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strlen(names[i]) == n && strncasecmp(p, names[i], n) == 0)
                        return true;
        return false;
}

static int redis_send_formatted(struct redis *r, redis_reply_fn cb, void *userdata,
                                const char *buf, int len) {
        struct redis_conn *c = &r->conns[REDIS_LINK_COMMAND];

        if (command_changes_mode(buf, (size_t)len))
                return -EINVAL;
        if (r->n_inflight >= r->max_pending)
                return -ENOBUFS;
        struct redis_cmd *cmd = calloc(1, sizeof *cmd);
        if (!cmd)
                return -ENOMEM;
        if (redisAsyncFormattedCommand(c->ac, on_command_reply, cmd, buf, (size_t)len) != REDIS_OK) {
                free(cmd);
                return -ENOTCONN;
        }

        cmd->cb = cb;
        cmd->userdata = userdata;
        cmd->in_hiredis = true;
        cmd->sent_msec = now_msec();
        cmd->prev = r->inflight_tail;
        if (r->inflight_tail)
                r->inflight_tail->next = cmd;
        else
                r->inflight_head = cmd;
        r->inflight_tail = cmd;
        r->n_inflight++;

        if (!loop_timer_armed(r->command_timer))
                (void)loop_timer_arm(r->command_timer, r->command_timeout_ms);
        return 0;
}

static int command_check(struct redis *r) {
        if (r->closed)
                return -ESHUTDOWN;
        if (r->conns[REDIS_LINK_COMMAND].state != CONN_UP)
                return -ENOTCONN;
        return 0;
}

int redis_commandv(struct redis *r, redis_reply_fn cb, void *userdata, const char *fmt, va_list ap) {
        if (!r || !fmt)
                return -EINVAL;
        int k = command_check(r);
        if (k < 0)
                return k;

        char *buf = NULL;
        int len = redisvFormatCommand(&buf, fmt, ap);
        if (len == -1)
                return -ENOMEM;
        if (len < 0)
                return -EINVAL;

        k = redis_send_formatted(r, cb, userdata, buf, len);
        redisFreeCommand(buf);
        return k;
}

int redis_command(struct redis *r, redis_reply_fn cb, void *userdata, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int k = redis_commandv(r, cb, userdata, fmt, ap);
        va_end(ap);
        return k;
}

int redis_command_argv(struct redis *r, redis_reply_fn cb, void *userdata, int argc,
                       const char *const *argv, const size_t *argvlen) {
        if (!r || argc <= 0 || !argv)
                return -EINVAL;
        int k = command_check(r);
        if (k < 0)
                return k;

        char *buf = NULL;
        int len = redisFormatCommandArgv(&buf, argc, (const char **)argv, argvlen);
        if (len < 0)
                return -ENOMEM;

        k = redis_send_formatted(r, cb, userdata, buf, len);
        redisFreeCommand(buf);
        return k;
}

/* ---- subscriptions ------------------------------------------------------------------- */

static uint64_t channel_hash(const char *name, bool pattern) {
        uint64_t h = pattern ? 0x9e3779b97f4a7c15ULL : 0xcbf29ce484222325ULL; /* FNV-1a */
        for (const unsigned char *p = (const unsigned char *)name; *p; p++)
                h = (h ^ *p) * 0x100000001b3ULL;
        return h;
}

static struct redis_channel *channel_find(struct redis *r, const char *name, bool pattern) {
        if (r->n_buckets == 0)
                return NULL;
        struct redis_channel *ch = r->buckets[channel_hash(name, pattern) & (r->n_buckets - 1)];
        for (; ch; ch = ch->hash_next)
                if (ch->pattern == pattern && streq(ch->name, name))
                        return ch;
        return NULL;
}

static int channel_add(struct redis *r, const char *name, bool pattern, struct redis_channel **ret) {
        if (r->n_channels >= r->n_buckets) {
                size_t n = r->n_buckets ? r->n_buckets * 2 : 64;
                struct redis_channel **b = calloc(n, sizeof *b);
                if (!b)
                        return -ENOMEM;
                for (size_t i = 0; i < r->n_buckets; i++)
                        while (r->buckets[i]) {
                                struct redis_channel *ch = r->buckets[i];
                                r->buckets[i] = ch->hash_next;
                                size_t j = channel_hash(ch->name, ch->pattern) & (n - 1);
                                ch->hash_next = b[j];
                                b[j] = ch;
                        }
                free(r->buckets);
                r->buckets = b;
                r->n_buckets = n;
        }

        size_t len = strlen(name);
        struct redis_channel *ch = calloc(1, sizeof *ch + len + 1);
        if (!ch)
                return -ENOMEM;
        ch->pattern = pattern;
        memcpy(ch->name, name, len + 1);

        size_t j = channel_hash(name, pattern) & (r->n_buckets - 1);
        ch->hash_next = r->buckets[j];
        r->buckets[j] = ch;
        r->n_channels++;
        *ret = ch;
        return 0;
}

static bool pubsub_sendable(struct redis_conn *c) {
        return c->ac && (c->state == CONN_SUBSCRIBING || c->state == CONN_UP);
}

static void on_pubsub_reply(redisAsyncContext *ac, void *reply, void *privdata);

static int pubsub_send(struct redis_conn *c, const char *verb, size_t n, const char **names) {
        const char *argv[SUBSCRIBE_BATCH + 1];

        assert(n > 0 && n <= SUBSCRIBE_BATCH);
        argv[0] = verb;
        memcpy(argv + 1, names, n * sizeof *names);
        if (redisAsyncCommandArgv(c->ac, on_pubsub_reply, NULL, (int)n + 1, argv, NULL) != REDIS_OK)
                return -ENOMEM;
        return 0;
}

static void channel_drop(struct redis *r, struct redis_channel *ch) {
        struct redis_conn *c = &r->conns[REDIS_LINK_PUBSUB];
        struct redis_channel **p = &r->buckets[channel_hash(ch->name, ch->pattern) & (r->n_buckets - 1)];

        while (*p != ch)
                p = &(*p)->hash_next;
        *p = ch->hash_next;
        r->n_channels--;

        if (pubsub_sendable(c)) {
                const char *name = ch->name;
                int k = pubsub_send(c, ch->pattern ? "PUNSUBSCRIBE" : "UNSUBSCRIBE", 1, &name);
                if (k < 0)
                        log_debug_errno(k, "Failed to unsubscribe from '%s', ignoring: %m", ch->name);
        }
        channel_free(ch);
}

static void channel_sweep(struct redis *r, struct redis_channel *ch) {
        for (struct redis_subscriber **p = &ch->subscribers; *p;) {
                struct redis_subscriber *s = *p;
                if (s->dead) {
                        *p = s->next;
                        free(s);
                } else
                        p = &s->next;
        }
        if (!ch->subscribers)
                channel_drop(r, ch);
}

/* Call the channel's subscribers (for SUBSCRIBED: those not confirmed yet). They may
 * subscribe, unsubscribe or free r. */
static void channel_dispatch(struct redis *r, struct redis_channel *ch, const struct redis_message *m) {
        redis_ref(r);
        r->dispatching = ch;
        /* New subscribers are prepended, so this walk does not reach them; unsubscribed ones
         * are only marked dead until the walk is over. */
        for (struct redis_subscriber *s = ch->subscribers; s && !r->closed; s = s->next) {
                if (s->dead)
                        continue;
                if (m->type == REDIS_MESSAGE_SUBSCRIBED) {
                        if (s->confirmed)
                                continue;
                        s->confirmed = true;
                }
                s->cb(r, m, s->userdata);
        }
        if (!r->closed) {
                r->dispatching = NULL;
                if (r->dispatch_dirty) {
                        r->dispatch_dirty = false;
                        channel_sweep(r, ch);
                }
        }
        redis_unref(r);
}

static void subscribers_unconfirm(struct redis *r) {
        for (size_t i = 0; i < r->n_buckets; i++)
                for (struct redis_channel *ch = r->buckets[i]; ch; ch = ch->hash_next)
                        for (struct redis_subscriber *s = ch->subscribers; s; s = s->next)
                                s->confirmed = false;
}

static int subscribe_internal(struct redis *r, const char *name, bool pattern, redis_message_fn cb,
                              void *userdata) {
        struct redis_conn *c;
        int k;

        if (!r || isempty(name) || !cb)
                return -EINVAL;
        if (r->closed)
                return -ESHUTDOWN;
        if (!pattern && streq(name, KEEPALIVE_CHANNEL))
                return -EINVAL;

        struct redis_channel *ch = channel_find(r, name, pattern);
        if (ch)
                for (struct redis_subscriber *s = ch->subscribers; s; s = s->next)
                        if (!s->dead && s->cb == cb && s->userdata == userdata)
                                return -EEXIST;

        struct redis_subscriber *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        c = &r->conns[REDIS_LINK_PUBSUB];
        if (!ch) {
                k = channel_add(r, name, pattern, &ch);
                if (k < 0) {
                        free(s);
                        return k;
                }
        }
        s->cb = cb;
        s->userdata = userdata;
        s->next = ch->subscribers;
        ch->subscribers = s;

        if (c->state == CONN_IDLE) {
                c->state = CONN_WAITING;
                (void)loop_timer_arm(c->timer, 0);
        } else if (pubsub_sendable(c)) {
                /* Sent again for a further subscriber too: its confirmation tells it when it is
                 * active. When the link is not up, the (re)connect subscribes. */
                k = pubsub_send(c, pattern ? "PSUBSCRIBE" : "SUBSCRIBE", 1, &name);
                if (k < 0)
                        log_debug_errno(k, "Failed to send the subscription to '%s', ignoring: %m", name);
        }
        return 0;
}

static int unsubscribe_internal(struct redis *r, const char *name, bool pattern, redis_message_fn cb,
                                void *userdata) {
        if (!r || !name)
                return -EINVAL;
        if (r->closed)
                return -ESHUTDOWN;

        struct redis_channel *ch = channel_find(r, name, pattern);
        if (!ch)
                return -ENOENT;
        for (struct redis_subscriber **p = &ch->subscribers; *p; p = &(*p)->next) {
                struct redis_subscriber *s = *p;
                if (s->dead || s->cb != cb || s->userdata != userdata)
                        continue;
                if (ch == r->dispatching) {
                        s->dead = true;
                        r->dispatch_dirty = true;
                        return 0;
                }
                *p = s->next;
                free(s);
                if (!ch->subscribers)
                        channel_drop(r, ch);
                return 0;
        }
        return -ENOENT;
}

int redis_subscribe(struct redis *r, const char *channel, redis_message_fn cb, void *userdata) {
        return subscribe_internal(r, channel, false, cb, userdata);
}

int redis_psubscribe(struct redis *r, const char *pattern, redis_message_fn cb, void *userdata) {
        return subscribe_internal(r, pattern, true, cb, userdata);
}

int redis_unsubscribe(struct redis *r, const char *channel, redis_message_fn cb, void *userdata) {
        return unsubscribe_internal(r, channel, false, cb, userdata);
}

int redis_punsubscribe(struct redis *r, const char *pattern, redis_message_fn cb, void *userdata) {
        return unsubscribe_internal(r, pattern, true, cb, userdata);
}

/* ---- connections --------------------------------------------------------------------- */

/* Tell the caller about a state change, at most once per change; the last thing the caller of
 * this function does with r. */
static void conn_report(struct redis_conn *c, bool up, int error, const char *reason) {
        struct redis *r = c->redis;

        if (up) {
                if (c->reported_up)
                        return;
                c->reported_up = true;
                c->reported_error = 0;
        } else {
                if (!c->reported_up && c->reported_error == error)
                        return;
                c->reported_up = false;
                c->reported_error = error;
        }
        if (r->state_cb)
                r->state_cb(r, c->link, up, error, reason, r->state_userdata);
}

static void conn_up(struct redis_conn *c) {
        struct redis *r = c->redis;

        c->state = CONN_UP;
        c->backoff_ms = 0;
        loop_timer_disarm(c->timer);
        if (c->link == REDIS_LINK_COMMAND && r->follow_master && r->replication_timer)
                (void)loop_timer_arm(r->replication_timer, r->replica_check_ms);
        if (c->keepalive)
                (void)loop_timer_arm(c->keepalive, r->keepalive_interval_ms);
        log_debug("Redis %s link up.", link_names[c->link]);
        conn_report(c, true, 0, NULL);
}

/* The link is lost, or could not be set up: detach the context (freeing it unless hiredis is
 * doing so already), fail what was in flight, schedule the reconnect, tell the caller. */
static void conn_down(struct redis_conn *c, int error, const char *reason_, bool free_context) {
        struct redis *r = c->redis;
        redisAsyncContext *ac = TAKE_PTR(c->ac);
        char reason[256];

        assert(!r->closed);
        assert(error < 0);

        /* It may point into the context we free. */
        snprintf(reason, sizeof reason, "%s", reason_);

        if (ac)
                ac->data = NULL;
        c->state = CONN_WAITING;
        c->keepalive_pending = false;
        if (c->keepalive)
                loop_timer_disarm(c->keepalive);

        uint64_t delay;
        if (c->retry_now) {
                c->retry_now = false;
                delay = 0;
        } else if (c->link == REDIS_LINK_COMMAND && r->use_replicas &&
                   ++r->attempt <= r->n_replicas)
                delay = r->reconnect_min_ms; /* next known replica */
        else {
                r->attempt = 0;
                delay = c->backoff_ms > 0 ? c->backoff_ms : r->reconnect_min_ms;
                c->backoff_ms = MIN(delay * 2, r->reconnect_max_ms);
        }
        (void)loop_timer_arm(c->timer, delay);
        if (c->link == REDIS_LINK_COMMAND) {
                loop_timer_disarm(r->replication_timer);
                sentinels_ask(r);
        }

        if (c->link == REDIS_LINK_COMMAND) {
                commands_fail_inflight(r, error);
                loop_timer_disarm(r->command_timer);
        } else
                subscribers_unconfirm(r);

        log_debug_errno(error, "Redis %s link down (%s), reconnecting in %llu ms.",
                        link_names[c->link], reason, (unsigned long long)delay);

        /* With the failed commands moved aside, what hiredis calls back while freeing finds
         * a detached context. */
        if (ac && free_context)
                redisAsyncFree(ac);

        redis_ref(r);
        commands_notify_failed(r, false);
        if (!r->closed)
                conn_report(c, false, error, reason);
        redis_unref(r);
}

static void conn_resubscribe(struct redis_conn *c) {
        struct redis *r = c->redis;
        const char *names[SUBSCRIBE_BATCH];
        int k = 0;

        c->state = CONN_SUBSCRIBING;
        for (int pattern = 0; pattern <= 1 && k >= 0; pattern++) {
                size_t n = 0;
                for (size_t i = 0; i < r->n_buckets && k >= 0; i++)
                        for (struct redis_channel *ch = r->buckets[i]; ch && k >= 0; ch = ch->hash_next) {
                                if (ch->pattern != pattern)
                                        continue;
                                names[n++] = ch->name;
                                if (n == SUBSCRIBE_BATCH) {
                                        k = pubsub_send(c, pattern ? "PSUBSCRIBE" : "SUBSCRIBE", n, names);
                                        n = 0;
                                }
                        }
                if (n > 0 && k >= 0)
                        k = pubsub_send(c, pattern ? "PSUBSCRIBE" : "SUBSCRIBE", n, names);
        }

        /* The keep-alive channel last: once it is confirmed, everything before it is active. */
        if (k >= 0) {
                const char *name = KEEPALIVE_CHANNEL;
                k = pubsub_send(c, "SUBSCRIBE", 1, &name);
        }
        if (k < 0) {
                conn_down(c, k, "cannot send the subscriptions", true);
                return;
        }
        c->keepalive_pending = true;
}

static void on_keepalive_answer(struct redis_conn *c) {
        c->keepalive_pending = false;
        if (c->state == CONN_SUBSCRIBING)
                conn_up(c);
        else if (c->state == CONN_UP)
                (void)loop_timer_arm(c->keepalive, c->redis->keepalive_interval_ms);
}

static void on_keepalive_timer(struct loop_timer *t, void *userdata) {
        struct redis_conn *c = userdata;

        if (c->state != CONN_UP)
                return;
        if (c->keepalive_pending) {
                conn_down(c, -ETIMEDOUT, "keep-alive timeout", true);
                return;
        }

        /* Subscribing again to a channel we are on gets a confirmation: a ping that the
         * subscribed mode allows (hiredis 0.14 misroutes the reply of PING there). */
        const char *name = KEEPALIVE_CHANNEL;
        int k = pubsub_send(c, "SUBSCRIBE", 1, &name);
        if (k < 0) {
                conn_down(c, k, "cannot send the keep-alive", true);
                return;
        }
        c->keepalive_pending = true;
        (void)loop_timer_arm(t, c->redis->command_timeout_ms);
}

static void on_pubsub_reply(redisAsyncContext *ac, void *reply_, void *privdata) {
        struct redis_conn *c = ac->data;
        redisReply *reply = reply_;

        if (!c)
                return;
        if (!reply) {
                conn_down(c, context_error(&ac->c, 0), context_reason(&ac->c), false);
                return;
        }
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
                return;
        for (size_t i = 0; i < reply->elements; i++)
                if (reply->element[i]->type != REDIS_REPLY_STRING &&
                    reply->element[i]->type != REDIS_REPLY_INTEGER)
                        return;
        if (reply->element[0]->type != REDIS_REPLY_STRING ||
            reply->element[1]->type != REDIS_REPLY_STRING)
                return;

        struct redis *r = c->redis;
        const char *kind = reply->element[0]->str;
        struct redis_channel *ch;

        if (strcaseeq(kind, "message") && reply->element[2]->type == REDIS_REPLY_STRING) {
                ch = channel_find(r, reply->element[1]->str, false);
                if (ch)
                        channel_dispatch(r, ch, &(struct redis_message){
                                .type = REDIS_MESSAGE_DATA,
                                .channel = reply->element[1]->str,
                                .data = reply->element[2]->str,
                                .len = reply->element[2]->len,
                        });
        } else if (strcaseeq(kind, "pmessage") && reply->elements >= 4 &&
                   reply->element[2]->type == REDIS_REPLY_STRING &&
                   reply->element[3]->type == REDIS_REPLY_STRING) {
                ch = channel_find(r, reply->element[1]->str, true);
                if (ch)
                        channel_dispatch(r, ch, &(struct redis_message){
                                .type = REDIS_MESSAGE_DATA,
                                .pattern = reply->element[1]->str,
                                .channel = reply->element[2]->str,
                                .data = reply->element[3]->str,
                                .len = reply->element[3]->len,
                        });
        } else if (strcaseeq(kind, "subscribe") || strcaseeq(kind, "psubscribe")) {
                bool pattern = kind[0] == 'p' || kind[0] == 'P';
                if (!pattern && streq(reply->element[1]->str, KEEPALIVE_CHANNEL)) {
                        on_keepalive_answer(c);
                        return;
                }
                ch = channel_find(r, reply->element[1]->str, pattern);
                if (ch)
                        channel_dispatch(r, ch, &(struct redis_message){
                                .type = REDIS_MESSAGE_SUBSCRIBED,
                                .channel = ch->name,
                                .pattern = pattern ? ch->name : NULL,
                        });
        }
}

static void on_handshake_reply(redisAsyncContext *ac, void *reply_, void *privdata) {
        struct redis_conn *c = ac->data;
        redisReply *reply = reply_;
        const char *what = privdata;

        if (!c)
                return;
        if (!reply) {
                conn_down(c, context_error(&ac->c, 0), context_reason(&ac->c), false);
                return;
        }
        if (reply->type == REDIS_REPLY_ERROR) {
                char reason[256];
                snprintf(reason, sizeof reason, "%s failed: %s", what, reply->str);
                conn_down(c, error_from_text(reply->str), reason, true);
                return;
        }
        if (streq(what, "INFO") && !replication_check(c, reply))
                return;
        if (--c->handshake_left > 0)
                return;

        if (c->link == REDIS_LINK_PUBSUB)
                conn_resubscribe(c);
        else
                conn_up(c);
}

static int conn_send_handshake(struct redis_conn *c) {
        struct redis *r = c->redis;
        redisAsyncContext *ac = c->ac;
        int k = REDIS_OK;

        /* Queued before the connect completes; hiredis sends them first, in this order. */
        c->handshake_left = 0;
        if (r->password) {
                const char *argv[3] = {"AUTH"};
                int n = 1;
                if (r->username)
                        argv[n++] = r->username;
                argv[n++] = r->password;
                k = redisAsyncCommandArgv(ac, on_handshake_reply, (void *)"AUTH", n, argv, NULL);
                c->handshake_left += k == REDIS_OK;
        }
        if (k == REDIS_OK && r->db > 0) {
                k = redisAsyncCommand(ac, on_handshake_reply, (void *)"SELECT", "SELECT %u", r->db);
                c->handshake_left += k == REDIS_OK;
        }
        if (k == REDIS_OK && r->client_name) {
                k = redisAsyncCommand(ac, on_handshake_reply, (void *)"CLIENT SETNAME",
                                      "CLIENT SETNAME %s-%s", r->client_name,
                                      c->link == REDIS_LINK_COMMAND ? "cmd" : "sub");
                c->handshake_left += k == REDIS_OK;
        }
        if (k == REDIS_OK) {
                k = redisAsyncCommand(ac, on_handshake_reply, (void *)"PING", "PING");
                c->handshake_left += k == REDIS_OK;
        }
        if (k == REDIS_OK && c->link == REDIS_LINK_COMMAND && r->follow_master && !r->unix_path) {
                k = redisAsyncCommand(ac, on_handshake_reply, (void *)"INFO",
                                      "INFO replication");
                c->handshake_left += k == REDIS_OK;
        }
        return k == REDIS_OK ? 0 : -ENOMEM;
}

static void on_connect(const redisAsyncContext *ac, int status) {
        int saved_errno = errno;
        struct redis_conn *c = ac->data;

        if (!c)
                return;
        if (status == REDIS_OK) {
                log_debug("Redis %s link connected, waiting for the handshake.", link_names[c->link]);
                return;
        }
        /* hiredis frees the context when this returns, without a disconnect callback. */
        conn_down(c, context_error(&ac->c, saved_errno), context_reason(&ac->c), false);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
        struct redis_conn *c = ac->data;

        if (!c)
                return;
        conn_down(c, status == REDIS_OK ? -ECONNRESET : context_error(&ac->c, 0),
                  context_reason(&ac->c), false);
}

static void conn_connect_target(struct redis_conn *c, const struct redis_target *t) {
        struct redis *r = c->redis;
        redisAsyncContext *ac;
        int k;

        if (t->unix_path)
                log_debug("Redis %s link: connecting to '%s'.", link_names[c->link], t->unix_path);
        else
                log_debug("Redis %s link: connecting to '%s' port %u.", link_names[c->link], t->host,
                          t->port);

        errno = 0;
        ac = t->unix_path ? redisAsyncConnectUnix(t->unix_path) : redisAsyncConnect(t->host, t->port);
        int saved_errno = errno;
        if (!ac) {
                conn_down(c, -ENOMEM, "cannot allocate the connection", false);
                return;
        }
        if (ac->c.err) {
                char reason[sizeof ac->c.errstr];
                k = context_error(&ac->c, saved_errno);
                snprintf(reason, sizeof reason, "%s", context_reason(&ac->c));
                redisAsyncFree(ac);
                conn_down(c, k, reason, false);
                return;
        }

        (void)fcntl(ac->c.fd, F_SETFD, FD_CLOEXEC);
        if (!t->unix_path)
                (void)redisEnableKeepAlive(&ac->c);

        k = adapter_attach(r->loop, ac);
        if (k < 0) {
                redisAsyncFree(ac);
                conn_down(c, k, "cannot watch the connection", false);
                return;
        }
        ac->data = c;
        (void)redisAsyncSetConnectCallback(ac, on_connect);
        (void)redisAsyncSetDisconnectCallback(ac, on_disconnect);
        c->ac = ac;
        c->state = CONN_CONNECTING;
        (void)loop_timer_arm(c->timer, r->connect_timeout_ms);

        k = conn_send_handshake(c);
        if (k < 0)
                conn_down(c, k, "cannot queue the handshake", true);
}

static int redis_resolve(struct redis *r, enum redis_link link, struct redis_target *ret) {
        struct redis_conn *c = &r->conns[link];
        const struct redis_addr *a = &r->master;

        if (link == REDIS_LINK_COMMAND && r->attempt > 0 && r->attempt <= r->n_replicas)
                a = &r->replicas[r->attempt - 1];
        snprintf(c->target_host, sizeof c->target_host, "%s", a->host);
        c->target_port = a->port;
        *ret = (struct redis_target){
                .host = c->target_host,
                .port = c->target_port,
                .unix_path = r->unix_path,
        };
        return 0;
}

static void on_conn_timer(struct loop_timer *t, void *userdata) {
        struct redis_conn *c = userdata;
        struct redis_target target;
        int k;

        switch (c->state) {
        case CONN_WAITING:
                k = redis_resolve(c->redis, c->link, &target);
                if (k < 0)
                        conn_down(c, k, "cannot resolve the server address", false);
                else
                        conn_connect_target(c, &target);
                break;
        case CONN_CONNECTING:
        case CONN_SUBSCRIBING:
                conn_down(c, -ETIMEDOUT, "connect timeout", true);
                break;
        default:
                break;
        }
}

/* ---- failover: replication and sentinels --------------------------------------------- */

static bool addr_eq(const struct redis_addr *a, const char *host, uint16_t port) {
        return a->port == port && streq(a->host, host);
}

static void addr_set(struct redis_addr *a, const char *host, uint16_t port) {
        snprintf(a->host, sizeof a->host, "%s", host);
        a->port = port;
}

/* The value of "name:" in an INFO text, copied into buf; NULL when absent. */
static const char *info_field(const char *text, const char *name, char *buf, size_t size) {
        size_t n = strlen(name);
        for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
                if (strncmp(p, name, n) != 0 || p[n] != ':')
                        continue;
                const char *v = p + n + 1;
                size_t len = strcspn(v, "\r\n");
                if (len >= size)
                        return NULL;
                memcpy(buf, v, len);
                buf[len] = 0;
                return buf;
        }
        return NULL;
}

/* "slaveN:ip=...,port=...,state=..." lines of a master's INFO replication. */
static void learn_replicas(struct redis *r, const char *text) {
        size_t n = 0;
        for (const char *p = text; p && *p && n < MAX_REPLICAS;
             p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
                char ip[256] = "";
                unsigned port = 0;
                if (strncmp(p, "slave", 5) != 0 || !isdigit((unsigned char)p[5]))
                        continue;
                const char *ipp = strstr(p, "ip="), *portp = strstr(p, "port=");
                const char *eol = p + strcspn(p, "\r\n");
                if (!ipp || !portp || ipp > eol || portp > eol)
                        continue;
                size_t len = strcspn(ipp + 3, ",\r\n");
                if (len == 0 || len >= sizeof ip)
                        continue;
                memcpy(ip, ipp + 3, len);
                port = (unsigned)strtoul(portp + 5, NULL, 10);
                if (port == 0 || port > 65535)
                        continue;
                addr_set(&r->replicas[n++], ip, (uint16_t)port);
        }
        if (n != r->n_replicas)
                log_debug("Redis master has %zu replica(s).", n);
        r->n_replicas = n;
}

/* Move every link to host:port, the new master. The caller holds a reference. */
static void redis_move_to(struct redis *r, const char *host, uint16_t port, const char *why) {
        bool changed = !addr_eq(&r->master, host, port);

        if (changed)
                log_debug("Redis master is now '%s' port %u (%s).", host, port, why);
        addr_set(&r->master, host, port);
        r->attempt = 0;
        for (int i = 0; i < _REDIS_LINK_MAX && !r->closed; i++) {
                struct redis_conn *c = &r->conns[i];
                switch (c->state) {
                case CONN_IDLE:
                        break;
                case CONN_WAITING:
                        c->backoff_ms = 0;
                        (void)loop_timer_arm(c->timer, 0);
                        break;
                default:
                        if (streq(c->target_host, host) && c->target_port == port)
                                break;
                        c->retry_now = true;
                        conn_down(c, -ECONNRESET, why, true);
                        break;
                }
        }
}

/* The INFO replication reply of the command link: true when it is the master. Otherwise the
 * link is taken down (to follow the master at once, or to try the next server). */
static bool replication_check(struct redis_conn *c, const redisReply *reply) {
        struct redis *r = c->redis;
        char role[32], host[256], port[16], link[16];

        if (reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_STATUS)
                return true;
        if (!info_field(reply->str, "role", role, sizeof role) || streq(role, "master")) {
                if (r->sentinel_named &&
                    !addr_eq(&r->master, c->target_host, c->target_port)) {
                        /* E.g. the old master restarted, not yet turned into a replica by the
                         * sentinels: writing there would lose the writes. */
                        conn_down(c, -EAGAIN, "a master the sentinels do not name", true);
                        return false;
                }
                learn_replicas(r, reply->str);
                addr_set(&r->master, c->target_host, c->target_port);
                r->attempt = 0;
                return true;
        }
        if (info_field(reply->str, "master_host", host, sizeof host) &&
            info_field(reply->str, "master_port", port, sizeof port) &&
            info_field(reply->str, "master_link_status", link, sizeof link) && streq(link, "up")) {
                unsigned long p = strtoul(port, NULL, 10);
                if (p > 0 && p <= 65535) {
                        addr_set(&r->master, host, (uint16_t)p);
                        r->attempt = 0;
                        c->retry_now = true;
                        conn_down(c, -EROFS, "a replica: following its master", true);
                        return false;
                }
        }
        conn_down(c, -EAGAIN, "a replica without a live master", true);
        return false;
}

static void on_replication_info(struct redis *r, redisReply *reply, int error, void *userdata) {
        struct redis_conn *c = &r->conns[REDIS_LINK_COMMAND];

        if (error < 0 || !reply || c->state != CONN_UP)
                return;
        if (reply->type == REDIS_REPLY_ERROR)
                return;
        redis_ref(r);
        (void)replication_check(c, reply);
        if (!r->closed && c->state == CONN_UP)
                (void)loop_timer_arm(r->replication_timer, r->replica_check_ms);
        redis_unref(r);
}

static void on_replication_timer(struct loop_timer *t, void *userdata) {
        struct redis *r = userdata;
        if (redis_command(r, on_replication_info, NULL, "INFO replication") < 0)
                (void)loop_timer_arm(t, r->replica_check_ms);
}

static void on_sentinel_master(struct redis *client, redisReply *reply, int error, void *userdata) {
        struct sentinel *s = userdata;
        struct redis *r = s->parent;

        if (error < 0 || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
            reply->element[0]->type != REDIS_REPLY_STRING ||
            reply->element[1]->type != REDIS_REPLY_STRING)
                return;
        unsigned long port = strtoul(reply->element[1]->str, NULL, 10);
        if (port == 0 || port > 65535 || r->closed)
                return;
        struct redis_conn *c = &r->conns[REDIS_LINK_COMMAND];
        r->sentinel_named = true;
        if (addr_eq(&r->master, reply->element[0]->str, (uint16_t)port) && c->state == CONN_UP)
                return;
        redis_ref(r);
        redis_move_to(r, reply->element[0]->str, (uint16_t)port, "named by a sentinel");
        redis_unref(r);
}

static void sentinel_ask(struct sentinel *s) {
        if (redis_is_connected(s->client))
                (void)redis_command(s->client, on_sentinel_master, s,
                                    "SENTINEL get-master-addr-by-name %s", s->parent->master_name);
}

static void sentinels_ask(struct redis *r) {
        for (size_t i = 0; i < r->n_sentinels; i++)
                sentinel_ask(&r->sentinels[i]);
}

static void on_sentinel_state(struct redis *client, enum redis_link link, bool up, int error,
                              const char *reason, void *userdata) {
        struct sentinel *s = userdata;
        if (link == REDIS_LINK_COMMAND && up)
                sentinel_ask(s);
        else if (!up)
                log_debug("Redis sentinel %s link down: %s", redis_link_name(link), strna(reason));
}

/* "+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>" */
static void on_switch_master(struct redis *client, const struct redis_message *m, void *userdata) {
        struct sentinel *s = userdata;
        struct redis *r = s->parent;
        char name[256], ip[256];
        unsigned port;

        if (m->type != REDIS_MESSAGE_DATA || r->closed)
                return;
        if (sscanf(m->data, "%255s %*s %*s %255s %u", name, ip, &port) != 3 ||
            !streq(name, r->master_name) || port == 0 || port > 65535)
                return;
        r->sentinel_named = true;
        redis_ref(r);
        redis_move_to(r, ip, (uint16_t)port, "+switch-master from a sentinel");
        redis_unref(r);
}

static int sentinels_new(struct redis *r, const struct redis_config *cfg) {
        STRV_FOREACH(a, cfg->sentinels) {
                char host[256];
                const char *colon = strrchr(*a, ':');
                unsigned long port = colon ? strtoul(colon + 1, NULL, 10) : 0;
                if (!colon || colon == *a || (size_t)(colon - *a) >= sizeof host || port == 0 ||
                    port > 65535)
                        return log_debug_errno(EINVAL, "Bad sentinel address '%s'.", *a);
                if (r->n_sentinels >= MAX_SENTINELS)
                        return log_debug_errno(EINVAL, "More than %d sentinels.", MAX_SENTINELS);
                memcpy(host, *a, (size_t)(colon - *a));
                host[colon - *a] = 0;
                struct sentinel *s = &r->sentinels[r->n_sentinels];
                const struct redis_config sc = {
                        .host = host,
                        .port = (uint16_t)port,
                        .connect_timeout_ms = r->connect_timeout_ms,
                        .command_timeout_ms = r->command_timeout_ms,
                        .reconnect_min_ms = r->reconnect_min_ms,
                        .reconnect_max_ms = r->reconnect_max_ms,
                        .keepalive_interval_ms = r->keepalive_interval_ms,
                };
                int k = redis_new(r->loop, &sc, &s->client);
                if (k < 0)
                        return k;
                s->parent = r;
                r->n_sentinels++;
                redis_set_state_callback(s->client, on_sentinel_state, s);
                k = redis_subscribe(s->client, "+switch-master", on_switch_master, s);
                if (k < 0)
                        return k;
        }
        return 0;
}

const char *redis_current_server(struct redis *r, uint16_t *port) {
        const struct redis_conn *c = &r->conns[REDIS_LINK_COMMAND];
        if (r->unix_path)
                return NULL;
        if (port)
                *port = c->target_port;
        return c->target_host;
}

/* ---- object -------------------------------------------------------------------------- */

static int strdup_opt(const char *s, char **ret) {
        if (isempty(s)) {
                *ret = NULL;
                return 0;
        }
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

int redis_new(struct loop *loop, const struct redis_config *cfg, struct redis **ret) {
        _cleanup_(redis_freep) struct redis *r = NULL;
        int k;

        if (!loop || !cfg || !ret)
                return -EINVAL;
        if (!isempty(cfg->username) && isempty(cfg->password))
                return log_debug_errno(EINVAL, "A Redis username needs a password.");

        r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->n_ref = 1;
        r->loop = loop;
        for (int i = 0; i < _REDIS_LINK_MAX; i++)
                r->conns[i] = (struct redis_conn){.redis = r, .link = i, .state = CONN_IDLE};

        if (strdup_opt(cfg->host ? cfg->host : "127.0.0.1", &r->host) < 0 ||
            strdup_opt(cfg->unix_path, &r->unix_path) < 0 ||
            strdup_opt(cfg->username, &r->username) < 0 ||
            strdup_opt(cfg->password, &r->password) < 0 ||
            strdup_opt(cfg->client_name, &r->client_name) < 0)
                return -ENOMEM;
        r->port = cfg->port > 0 ? cfg->port : 6379;
        r->db = cfg->db;
        r->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 2000;
        r->command_timeout_ms = cfg->command_timeout_ms > 0 ? cfg->command_timeout_ms : 2000;
        r->reconnect_min_ms = cfg->reconnect_min_ms > 0 ? cfg->reconnect_min_ms : 100;
        r->reconnect_max_ms = cfg->reconnect_max_ms > 0 ? cfg->reconnect_max_ms : 5000;
        r->keepalive_interval_ms = cfg->keepalive_interval_ms > 0 ? cfg->keepalive_interval_ms : 10000;
        r->max_pending = cfg->max_pending > 0 ? cfg->max_pending : 65536;
        if (r->reconnect_max_ms < r->reconnect_min_ms)
                return log_debug_errno(EINVAL, "Redis reconnect delays: maximum below minimum.");
        r->follow_master = cfg->follow_master || (cfg->sentinels && cfg->sentinels[0]);
        r->use_replicas = cfg->use_replicas;
        r->replica_check_ms = cfg->replica_check_ms > 0 ? cfg->replica_check_ms : 60000;
        addr_set(&r->master, r->host, r->port);
        if ((cfg->sentinels && cfg->sentinels[0])) {
                if (r->unix_path || isempty(cfg->master_name))
                        return log_debug_errno(EINVAL, "Redis sentinels need a master name and TCP.");
                if (!(r->master_name = strdup(cfg->master_name)))
                        return -ENOMEM;
                k = sentinels_new(r, cfg);
                if (k < 0)
                        return k;
        }
        k = loop_timer_new(loop, on_replication_timer, r, &r->replication_timer);
        if (k < 0)
                return k;

        k = loop_timer_new(loop, on_command_timer, r, &r->command_timer);
        if (k < 0)
                return k;
        for (int i = 0; i < _REDIS_LINK_MAX; i++) {
                k = loop_timer_new(loop, on_conn_timer, &r->conns[i], &r->conns[i].timer);
                if (k < 0)
                        return k;
        }
        k = loop_timer_new(loop, on_keepalive_timer, &r->conns[REDIS_LINK_PUBSUB],
                           &r->conns[REDIS_LINK_PUBSUB].keepalive);
        if (k < 0)
                return k;

        /* Connect from the loop, so that the caller has r before any callback. */
        r->conns[REDIS_LINK_COMMAND].state = CONN_WAITING;
        k = loop_timer_arm(r->conns[REDIS_LINK_COMMAND].timer, 0);
        if (k < 0)
                return k;

        *ret = TAKE_PTR(r);
        return 0;
}

void redis_free(struct redis *r) {
        if (!r || r->closed)
                return;
        r->closed = true;

        for (size_t i = 0; i < r->n_sentinels; i++)
                redis_free(TAKE_PTR(r->sentinels[i].client));
        r->n_sentinels = 0;
        loop_timer_free(r->replication_timer);
        r->replication_timer = NULL;

        /* In flight: told -ECANCELED below. Contexts detached first, so what hiredis calls back
         * while freeing them (now, or when the current reply callback returns) finds nothing. */
        commands_fail_inflight(r, -ECANCELED);
        for (int i = 0; i < _REDIS_LINK_MAX; i++) {
                struct redis_conn *c = &r->conns[i];
                redisAsyncContext *ac = TAKE_PTR(c->ac);
                c->state = CONN_IDLE;
                if (ac) {
                        ac->data = NULL;
                        redisAsyncFree(ac);
                }
                loop_timer_free(c->timer);
                c->timer = NULL;
                loop_timer_free(c->keepalive);
                c->keepalive = NULL;
        }
        loop_timer_free(r->command_timer);
        r->command_timer = NULL;

        commands_notify_failed(r, true);
        redis_unref(r);
}

void redis_set_state_callback(struct redis *r, redis_state_fn cb, void *userdata) {
        r->state_cb = cb;
        r->state_userdata = userdata;
}

bool redis_link_is_up(struct redis *r, enum redis_link link) {
        return r && !r->closed && (unsigned)link < _REDIS_LINK_MAX &&
               r->conns[link].state == CONN_UP;
}

bool redis_is_connected(struct redis *r) {
        return redis_link_is_up(r, REDIS_LINK_COMMAND);
}
