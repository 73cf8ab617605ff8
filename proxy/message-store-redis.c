/* SPDX-License-Identifier: MIT */
/* The Redis message store: pending MESSAGEs shared by the proxies of a cluster, used when the
 * registrar is on Redis (same connection settings, a connection of its own).
 *
 * Layout (<p> = key_prefix, "fsm:" by default; <node> = the proxy's node name; <id> = a
 * decimal message id chosen by the node, growing with time: ms since 2020 × 1024 + a counter):
 *   <p>msg:<node>:<id>  hash, one per pending message, PEXPIREAT its expiry
 *       "aor"           the recipient, "sip:user@host"
 *       "received-at"   CLOCK_REALTIME ms (the arrival order: ties broken by id)
 *       "expires-at"    CLOCK_REALTIME ms
 *       "request"       the MESSAGE as received, wire format
 *       "owner"         <node>, the proxy that delivers it
 *       "d:<device>"    a device (its unique id) that got its final answer: the status
 *   <p>owned:<node>     set of the message keys <node> holds
 *   <p>node:<node>      string with TTL owner_ttl_ms: the node's lease, refreshed every third
 *                       of the TTL while the node runs
 *   <p>nodes            set of the node names that own (or owned) messages
 *   <p>taken:<node>     set of the old keys of the messages taken over from <node> (for a
 *                       node that was cut off but kept running); 7-day TTL, read and deleted
 *                       by <node> when it notices its lease had expired, deleted at its start
 *
 * Ownership. Only the owner of a message delivers it. At its first connection a proxy takes
 * its lease and restores the messages of <p>owned:<node> (its own, kept from before a restart or
 * a crash). Then, at every lease refresh, it claims the messages of every node whose lease is
 * gone: one Lua script, so claims are atomic and one survivor gets each message. A claimed
 * message is renamed to <p>msg:<claimer>:<new id> (the same hash with the delivery state, and
 * the same TTL), moved to the claimer's owned set, and restored there as a fork whose delivered
 * devices are already done: no device gets it twice. A node whose lease expired (it lost Redis
 * for longer than the TTL) may have lost its messages to another node: it notices at its next
 * lease refresh (the lease held another value, or none) and reads <p>taken:<node>, where the
 * claim script left the old keys of what it took; the forks of those end there
 * (message_store_lost_fn). Its writes to a renamed message find no key and do nothing.
 *
 * Writes are asynchronous: add, delivered and remove send one script each and return; a
 * failure is logged and counted in n_errors. While the connection is down they fail at once
 * (the message then lives in memory only, as fork.c logs). Scripts go with EVALSHA, and with
 * EVAL when the server answers NOSCRIPT. */
#define LOG_SUBSYSTEM LOG_router
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <sys/random.h>

#include "log.h"
#include "loop.h"
#include "macro.h"
#include "message-store.h"
#include "redis.h"

#define ID_EPOCH_MS 1577836800000ULL /* 2020-01-01 */
#define CLAIM_MAX   200              /* messages taken over per script run */

/* KEYS: message, owned set, nodes set. ARGV: aor, received-at, expires-at, request, node. */
static const char add_script[] =
        "redis.call('HSET', KEYS[1], 'aor', ARGV[1], 'received-at', ARGV[2], 'expires-at', "
        "ARGV[3], 'request', ARGV[4], 'owner', ARGV[5])\n"
        "redis.call('PEXPIREAT', KEYS[1], ARGV[3])\n"
        "redis.call('SADD', KEYS[2], KEYS[1])\n"
        "redis.call('SADD', KEYS[3], ARGV[5])\n"
        "return 1\n";

/* KEYS: message. ARGV: device, status. 0 when the message is not there (any more). */
static const char delivered_script[] =
        "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
        "redis.call('HSET', KEYS[1], 'd:' .. ARGV[1], ARGV[2])\n"
        "return 1\n";

/* KEYS: message, owned set. */
static const char remove_script[] =
        "redis.call('SREM', KEYS[2], KEYS[1])\n"
        "return redis.call('DEL', KEYS[1])\n";

/* KEYS: owned set, lease, nodes set, taken set. ARGV: lease token, TTL ms, node. Takes the
 * lease and returns {key, {HGETALL}} for each message the node owns (forgetting the expired
 * ones). A node starting holds nothing: what was taken from it before does not matter. */
static const char load_script[] =
        "redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])\n"
        "redis.call('DEL', KEYS[4])\n"
        "local out = {}\n"
        "for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
        "  if redis.call('EXISTS', k) == 1 then\n"
        "    out[#out + 1] = {k, redis.call('HGETALL', k)}\n"
        "  else\n"
        "    redis.call('SREM', KEYS[1], k)\n"
        "  end\n"
        "end\n"
        "return out\n";

/* KEYS: the taken set. The keys of the messages other nodes took from this one, forgotten. */
static const char taken_script[] =
        "local t = redis.call('SMEMBERS', KEYS[1])\n"
        "redis.call('DEL', KEYS[1])\n"
        "return t\n";

/* ARGV: prefix, node, first new id, max. Moves to node the messages of the nodes whose lease
 * is gone (only while node holds its own lease), as load_script returns them. */
static const char claim_script[] =
        "local p, me = ARGV[1], ARGV[2]\n"
        "local id, max = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
        "local out = {}\n"
        "if redis.call('EXISTS', p .. 'node:' .. me) == 0 then return out end\n"
        "local mine = p .. 'owned:' .. me\n"
        "for _, node in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do\n"
        "  if node ~= me and redis.call('EXISTS', p .. 'node:' .. node) == 0 then\n"
        "    local owned = p .. 'owned:' .. node\n"
        "    for _, k in ipairs(redis.call('SMEMBERS', owned)) do\n"
        "      if #out >= max then break end\n"
        "      redis.call('SREM', owned, k)\n"
        "      if redis.call('EXISTS', k) == 1 then\n"
        "        local nk = p .. 'msg:' .. me .. ':' .. string.format('%.0f', id)\n"
        "        id = id + 1\n"
        "        redis.call('RENAME', k, nk)\n"
        "        redis.call('SADD', p .. 'taken:' .. node, k)\n"
        "        redis.call('PEXPIRE', p .. 'taken:' .. node, 604800000)\n"
        "        redis.call('HSET', nk, 'owner', me)\n"
        "        redis.call('SADD', mine, nk)\n"
        "        out[#out + 1] = {nk, redis.call('HGETALL', nk)}\n"
        "      end\n"
        "    end\n"
        "    if redis.call('SCARD', owned) == 0 then redis.call('SREM', p .. 'nodes', node) end\n"
        "  end\n"
        "end\n"
        "if #out > 0 then redis.call('SADD', p .. 'nodes', me) end\n"
        "return out\n";

struct script {
        const char *text;
        char sha[41];
};

struct redis_msg_store {
        struct message_store base;
        struct loop *loop;
        struct redis *redis;
        char *prefix, *node;
        char *owned_key, *lease_key, *nodes_key, *taken_key;
        uint64_t ttl_ms;
        char token[33]; /* the lease's value: ours, for this run */
        int64_t last_id;
        struct loop_timer *tick;
        bool loaded;   /* own messages restored */
        bool busy;     /* a load or claim in flight */
        bool had_lease;
        bool closing;
        struct script add, delivered, remove, load, claim, taken;
};

typedef void (*eval_fn)(struct redis_msg_store *st, redisReply *reply, int error,
                        const char *what);

/* One script run, kept for the EVAL retry after NOSCRIPT. */
struct eval {
        struct redis_msg_store *st;
        const struct script *script;
        eval_fn cb;
        char *what;
        int argc;
        char **argv; /* [0] EVALSHA/EVAL, [1] sha/text: not owned */
        size_t *lens;
};

static void script_init(struct script *s, const char *text) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        s->text = text;
        s->sha[0] = 0;
        if (EVP_Digest(text, strlen(text), md, &len, EVP_sha1(), NULL) != 1 || len != 20)
                return; /* EVAL only */
        for (unsigned i = 0; i < len; i++)
                sprintf(s->sha + 2 * i, "%02x", md[i]);
}

static void eval_free(struct eval *e) {
        for (int i = 2; i < e->argc; i++)
                free(e->argv[i]);
        free(e->argv);
        free(e->lens);
        free(e->what);
        free(e);
}

static int eval_send(struct eval *e, bool by_sha);

static void on_eval_reply(struct redis *r, redisReply *reply, int error, void *userdata) {
        struct eval *e = userdata;
        struct redis_msg_store *st = e->st;
        if (st->closing) {
                eval_free(e);
                return;
        }
        if (error == 0 && reply && reply->type == REDIS_REPLY_ERROR &&
            strncmp(reply->str, "NOSCRIPT", 8) == 0) {
                int k = eval_send(e, false);
                if (k >= 0)
                        return;
                error = k;
                reply = NULL;
        }
        e->cb(st, reply, error, e->what);
        eval_free(e);
}

static int eval_send(struct eval *e, bool by_sha) {
        by_sha = by_sha && e->script->sha[0];
        e->argv[0] = by_sha ? "EVALSHA" : "EVAL";
        e->argv[1] = by_sha ? (char *)e->script->sha : (char *)e->script->text;
        e->lens[0] = strlen(e->argv[0]);
        e->lens[1] = strlen(e->argv[1]);
        return redis_command_argv(e->st->redis, on_eval_reply, e, e->argc,
                                  (const char *const *)e->argv, e->lens);
}

/* Runs script with n arguments (numkeys, keys, then ARGV), copied; lens NULL: C strings. */
static int run_script(struct redis_msg_store *st, const struct script *script, eval_fn cb,
                      const char *what, int n, const char *const *args, const size_t *lens) {
        struct eval *e = calloc(1, sizeof *e);
        if (!e)
                return -ENOMEM;
        e->st = st;
        e->script = script;
        e->cb = cb;
        e->argc = n + 2;
        e->what = strdup(what);
        e->argv = calloc((size_t)e->argc, sizeof *e->argv);
        e->lens = calloc((size_t)e->argc, sizeof *e->lens);
        bool ok = e->what && e->argv && e->lens;
        for (int i = 0; ok && i < n; i++) {
                size_t len = lens ? lens[i] : strlen(args[i]);
                e->argv[i + 2] = malloc(len + 1);
                if (!e->argv[i + 2]) {
                        ok = false;
                        break;
                }
                memcpy(e->argv[i + 2], args[i], len);
                e->argv[i + 2][len] = 0;
                e->lens[i + 2] = len;
        }
        if (!ok) {
                e->argc = e->argv ? e->argc : 2;
                eval_free(e);
                return -ENOMEM;
        }
        int k = eval_send(e, true);
        if (k < 0)
                eval_free(e);
        return k;
}

static int reply_error(const redisReply *reply, int error) {
        if (error < 0)
                return error;
        if (!reply)
                return -EIO;
        if (reply->type == REDIS_REPLY_ERROR) {
                log_debug("Redis error: %s", reply->str);
                return strstr(reply->str, "READONLY") ? -EROFS : -EIO;
        }
        return 0;
}

static char *msg_key(struct redis_msg_store *st, int64_t id) {
        char *key;
        if (asprintf(&key, "%smsg:%s:%" PRId64, st->prefix, st->node, id) < 0)
                return NULL;
        return key;
}

/* Ids grow with time (and stay below 2^53, exact in Lua): ms since 2020 × 1024, + 1 when
 * that was taken. n ids in a row are reserved; the first is returned. */
static int64_t next_ids(struct redis_msg_store *st, int64_t n) {
        uint64_t now = realtime_msec();
        int64_t id = (int64_t)((now > ID_EPOCH_MS ? now - ID_EPOCH_MS : 0) * 1024);
        if (id <= st->last_id)
                id = st->last_id + 1;
        st->last_id = id + n - 1;
        return id;
}

static void write_failed(struct redis_msg_store *st, const char *what, int error) {
        st->base.n_errors++;
        log_warning_errno(error, "Message store (Redis): %s failed: %m", what);
}

/* ---- writes ---- */

static void on_write(struct redis_msg_store *st, redisReply *reply, int error, const char *what) {
        int k = reply_error(reply, error);
        if (k < 0) {
                write_failed(st, what, k);
                return;
        }
        if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0)
                log_info("Message store (Redis): %s: the message is not ours any more (taken "
                         "over by another proxy, or expired).", what);
}

static int redis_add(struct message_store *s, const char *aor, uint64_t received_at,
                     uint64_t expires_at, const char *data, size_t len, int64_t *id) {
        struct redis_msg_store *st = (struct redis_msg_store *)s;
        int64_t n = next_ids(st, 1);
        _cleanup_free_ char *key = msg_key(st, n), *what = NULL;
        char received[24], expires[24];
        snprintf(received, sizeof received, "%" PRIu64, received_at);
        snprintf(expires, sizeof expires, "%" PRIu64, expires_at);
        if (!key || asprintf(&what, "storing message %" PRId64 " for '%s'", n, aor) < 0) {
                s->n_errors++;
                return -ENOMEM;
        }
        const char *args[] = {"3",      key,  st->owned_key, st->nodes_key, aor, received,
                              expires, data, st->node};
        size_t lens[] = {1,       strlen(key), strlen(st->owned_key), strlen(st->nodes_key),
                         strlen(aor), strlen(received), strlen(expires), len, strlen(st->node)};
        int k = run_script(st, &st->add, on_write, what, ELEMENTSOF(args), args, lens);
        if (k < 0) {
                write_failed(st, what, k);
                return k;
        }
        *id = n;
        return 0;
}

static int redis_delivered(struct message_store *s, int64_t id, const char *device, int status) {
        struct redis_msg_store *st = (struct redis_msg_store *)s;
        _cleanup_free_ char *key = msg_key(st, id), *what = NULL;
        char code[12];
        snprintf(code, sizeof code, "%d", status);
        if (!key || asprintf(&what, "recording the delivery of message %" PRId64 " to '%s'", id,
                             device) < 0) {
                s->n_errors++;
                return -ENOMEM;
        }
        const char *args[] = {"1", key, device, code};
        int k = run_script(st, &st->delivered, on_write, what, ELEMENTSOF(args), args, NULL);
        if (k < 0)
                write_failed(st, what, k);
        return k;
}

static int redis_remove(struct message_store *s, int64_t id) {
        struct redis_msg_store *st = (struct redis_msg_store *)s;
        _cleanup_free_ char *key = msg_key(st, id), *what = NULL;
        if (!key || asprintf(&what, "removing message %" PRId64, id) < 0) {
                s->n_errors++;
                return -ENOMEM;
        }
        const char *args[] = {"2", key, st->owned_key};
        int k = run_script(st, &st->remove, on_write, what, ELEMENTSOF(args), args, NULL);
        if (k < 0)
                write_failed(st, what, k);
        return k;
}

/* ---- restore: own messages at the first connection, then those of dead nodes ---- */

struct loaded {
        int64_t id;
        const redisReply *fields;
        uint64_t received_at;
};

static int by_arrival(const void *a, const void *b) {
        const struct loaded *x = a, *y = b;
        if (x->received_at != y->received_at)
                return x->received_at < y->received_at ? -1 : 1;
        return x->id < y->id ? -1 : x->id > y->id;
}

static const redisReply *field(const redisReply *fields, const char *name) {
        for (size_t i = 0; i + 1 < fields->elements; i += 2)
                if (fields->element[i]->type == REDIS_REPLY_STRING &&
                    streq(fields->element[i]->str, name))
                        return fields->element[i + 1];
        return NULL;
}

static uint64_t field_u64(const redisReply *fields, const char *name) {
        const redisReply *v = field(fields, name);
        return v && v->type == REDIS_REPLY_STRING ? strtoull(v->str, NULL, 10) : 0;
}

/* Hands over the messages of a load or claim reply, oldest first. Returns their count. */
static int hand_over(struct redis_msg_store *st, const redisReply *reply) {
        if (reply->type != REDIS_REPLY_ARRAY)
                return -EBADMSG;
        _cleanup_free_ struct loaded *v = calloc(reply->elements + 1, sizeof *v);
        if (!v)
                return -ENOMEM;
        size_t n = 0;
        for (size_t i = 0; i < reply->elements; i++) {
                const redisReply *m = reply->element[i];
                if (m->type != REDIS_REPLY_ARRAY || m->elements != 2 ||
                    m->element[0]->type != REDIS_REPLY_STRING ||
                    m->element[1]->type != REDIS_REPLY_ARRAY)
                        return -EBADMSG;
                const char *colon = strrchr(m->element[0]->str, ':');
                char *end = NULL;
                long long id = colon ? strtoll(colon + 1, &end, 10) : 0;
                if (!colon || *end || id <= 0) {
                        log_warning("Message store (Redis): unexpected key '%s', skipped.",
                                    m->element[0]->str);
                        continue;
                }
                v[n++] = (struct loaded){.id = id,
                                         .fields = m->element[1],
                                         .received_at = field_u64(m->element[1], "received-at")};
        }
        qsort(v, n, sizeof *v, by_arrival);
        int count = 0;
        for (size_t i = 0; i < n; i++) {
                const redisReply *f = v[i].fields;
                const redisReply *aor = field(f, "aor"), *request = field(f, "request");
                if (!aor || aor->type != REDIS_REPLY_STRING || !request ||
                    request->type != REDIS_REPLY_STRING) {
                        log_warning("Message store (Redis): message %" PRId64 " is incomplete, "
                                    "skipped.", v[i].id);
                        continue;
                }
                _cleanup_strv_free_ char **delivered = NULL;
                for (size_t j = 0; j + 1 < f->elements; j += 2) {
                        const redisReply *name = f->element[j];
                        if (name->type == REDIS_REPLY_STRING && strncmp(name->str, "d:", 2) == 0 &&
                            strv_extend(&delivered, name->str + 2) < 0)
                                return -ENOMEM;
                }
                /* Ours from now on: later ids do not collide with it. */
                if (v[i].id > st->last_id)
                        st->last_id = v[i].id;
                struct message_store_entry e = {
                        .id = v[i].id,
                        .aor = aor->str,
                        .received_at = v[i].received_at,
                        .expires_at = field_u64(f, "expires-at"),
                        .data = request->str,
                        .len = request->len,
                        .delivered = delivered,
                };
                if (st->base.each)
                        st->base.each(&e, st->base.userdata);
                count++;
        }
        return count;
}

static void batch_done(struct redis_msg_store *st, int result) {
        if (st->base.done)
                st->base.done(result, st->base.userdata);
}

static void on_loaded(struct redis_msg_store *st, redisReply *reply, int error, const char *what) {
        st->busy = false;
        int k = reply_error(reply, error);
        if (k >= 0)
                k = hand_over(st, reply);
        if (k < 0) {
                /* Tried again at the next tick. */
                write_failed(st, what, k);
                return;
        }
        st->loaded = true;
        st->had_lease = true;
        if (k > 0)
                log_notice("%d pending message(s) of node '%s' restored from Redis.", k, st->node);
        batch_done(st, k);
        loop_timer_arm(st->tick, 0); /* claim what dead nodes left, now */
}

static void on_claimed(struct redis_msg_store *st, redisReply *reply, int error, const char *what) {
        st->busy = false;
        int k = reply_error(reply, error);
        if (k >= 0)
                k = hand_over(st, reply);
        if (k < 0) {
                write_failed(st, what, k);
                return;
        }
        if (k == 0)
                return;
        log_notice("Took over %d pending message(s) of proxies that are gone.", k);
        batch_done(st, k);
        if (k >= CLAIM_MAX)
                loop_timer_arm(st->tick, 0); /* there may be more */
}

static int by_id(const void *a, const void *b) {
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
        return x < y ? -1 : x > y;
}

/* After a lost lease: the messages taken from us (the lease is ours again, so no more go). */
static void on_taken(struct redis_msg_store *st, redisReply *reply, int error, const char *what) {
        int k = reply_error(reply, error);
        if (k >= 0 && reply->type != REDIS_REPLY_ARRAY)
                k = -EBADMSG;
        if (k < 0) {
                write_failed(st, what, k);
                return;
        }
        _cleanup_free_ int64_t *taken = calloc(reply->elements + 1, sizeof *taken);
        if (!taken) {
                log_oom();
                return;
        }
        size_t n = 0;
        for (size_t i = 0; i < reply->elements; i++) {
                const redisReply *m = reply->element[i];
                const char *colon = m->type == REDIS_REPLY_STRING ? strrchr(m->str, ':') : NULL;
                if (colon)
                        taken[n++] = strtoll(colon + 1, NULL, 10);
        }
        if (n == 0)
                return;
        log_warning("Message store (Redis): %zu pending message(s) of node '%s' were taken over "
                    "by other proxies while it was cut off.",
                    n, st->node);
        qsort(taken, n, sizeof *taken, by_id);
        if (st->base.lost)
                st->base.lost(taken, n, st->base.lost_userdata);
}

static void on_lease(struct redis *r, redisReply *reply, int error, void *userdata) {
        struct redis_msg_store *st = userdata;
        if (st->closing)
                return;
        int k = reply_error(reply, error);
        if (k < 0) {
                write_failed(st, "refreshing the lease", k);
                return;
        }
        /* SET ... GET: the value before. Another token: another live process refreshes the
         * same lease. None: the lease had expired, and another proxy may have taken over
         * messages we still hold. */
        bool ours = reply->type == REDIS_REPLY_STRING && streq(reply->str, st->token);
        if (ours || !st->had_lease) {
                st->had_lease = true;
                return;
        }
        st->base.n_errors++;
        if (reply->type == REDIS_REPLY_STRING) {
                log_warning("Message store (Redis): another proxy uses the node name '%s': "
                            "[module::Router] message-store-node must be unique in the "
                            "cluster, or both deliver the same messages.",
                            st->node);
                return;
        }
        log_warning("Message store (Redis): the lease of node '%s' had expired (Redis "
                    "unreachable for longer than the owner TTL?): another proxy may have taken "
                    "over some of its pending messages.",
                    st->node);
        const char *args[] = {"1", st->taken_key};
        const char *what = "listing the messages taken over by others";
        k = run_script(st, &st->taken, on_taken, what, ELEMENTSOF(args), args, NULL);
        if (k < 0)
                write_failed(st, what, k);
}

static void send_load(struct redis_msg_store *st) {
        char ttl[24];
        snprintf(ttl, sizeof ttl, "%" PRIu64, st->ttl_ms);
        const char *args[] = {"4",       st->owned_key, st->lease_key, st->nodes_key,
                              st->taken_key, st->token,   ttl,           st->node};
        int k = run_script(st, &st->load, on_loaded, "restoring the pending messages",
                           ELEMENTSOF(args), args, NULL);
        if (k >= 0)
                st->busy = true;
        else if (k != -ENOTCONN)
                write_failed(st, "restoring the pending messages", k);
}

static void send_claim(struct redis_msg_store *st) {
        char ttl[24], first[24], max[12];
        snprintf(ttl, sizeof ttl, "%" PRIu64, st->ttl_ms);
        snprintf(max, sizeof max, "%d", CLAIM_MAX);
        int k = redis_command(st->redis, on_lease, st, "SET %s %s PX %s GET", st->lease_key,
                              st->token, ttl);
        if (k < 0)
                return; /* not connected: next tick */
        snprintf(first, sizeof first, "%" PRId64, next_ids(st, CLAIM_MAX));
        const char *args[] = {"0", st->prefix, st->node, first, max};
        k = run_script(st, &st->claim, on_claimed, "taking over messages of dead proxies",
                       ELEMENTSOF(args), args, NULL);
        if (k >= 0)
                st->busy = true;
        else
                write_failed(st, "taking over messages of dead proxies", k);
}

/* Every third of the TTL: lease, then claims; the first restore once connected. */
static void on_tick(struct loop_timer *t, void *userdata) {
        struct redis_msg_store *st = userdata;
        loop_timer_arm(t, st->ttl_ms / 3);
        if (st->busy || !redis_is_connected(st->redis))
                return;
        if (!st->loaded)
                send_load(st);
        else
                send_claim(st);
}

static void on_link_state(struct redis *r, enum redis_link link, bool up, int error,
                          const char *reason, void *userdata) {
        struct redis_msg_store *st = userdata;
        if (link != REDIS_LINK_COMMAND)
                return;
        if (!up) {
                log_warning("Redis message store unreachable: %s.", strna(reason));
                return;
        }
        log_notice("Redis message store connected.");
        if (!st->loaded && !st->busy)
                send_load(st);
}

static int redis_start(struct message_store *s) {
        struct redis_msg_store *st = (struct redis_msg_store *)s;
        loop_timer_arm(st->tick, st->ttl_ms / 3);
        return 0;
}

static void redis_store_free(struct message_store *s) {
        struct redis_msg_store *st = (struct redis_msg_store *)s;
        st->closing = true;
        loop_timer_free(st->tick);
        redis_free(st->redis); /* callbacks in flight run now, and only free their state */
        free(st->prefix);
        free(st->node);
        free(st->owned_key);
        free(st->lease_key);
        free(st->nodes_key);
        free(st->taken_key);
        free(st);
}

static char *key_of(struct redis_msg_store *st, const char *kind, const char *name) {
        char *key;
        if (asprintf(&key, "%s%s%s", st->prefix, kind, name) < 0)
                return NULL;
        return key;
}

static bool redis_ready(struct message_store *s) {
        struct redis_msg_store *st = (struct redis_msg_store *)s;
        return st->loaded && redis_is_connected(st->redis);
}

static const struct message_store_ops redis_ops = {
        .name = "redis",
        .start = redis_start,
        .add = redis_add,
        .delivered = redis_delivered,
        .remove = redis_remove,
        .ready = redis_ready,
        .free = redis_store_free,
};

int message_store_redis_new(struct loop *l, const struct message_store_redis_config *cfg,
                            struct message_store **ret) {
        if (isempty(cfg->node) || cfg->owner_ttl_ms < 1000)
                return -EINVAL;
        struct redis_msg_store *st = calloc(1, sizeof *st);
        if (!st)
                return -ENOMEM;
        st->base.ops = &redis_ops;
        st->loop = l;
        st->ttl_ms = cfg->owner_ttl_ms;
        script_init(&st->add, add_script);
        script_init(&st->delivered, delivered_script);
        script_init(&st->remove, remove_script);
        script_init(&st->load, load_script);
        script_init(&st->claim, claim_script);
        script_init(&st->taken, taken_script);
        uint8_t b[16];
        int r = -ENOMEM;
        if (getrandom(b, sizeof b, 0) != sizeof b) {
                r = -errno;
                goto fail;
        }
        for (size_t i = 0; i < sizeof b; i++)
                sprintf(st->token + 2 * i, "%02x", b[i]);
        st->prefix = strdup(cfg->key_prefix ? cfg->key_prefix : "fsm:");
        st->node = strdup(cfg->node);
        if (!st->prefix || !st->node)
                goto fail;
        st->owned_key = key_of(st, "owned:", st->node);
        st->lease_key = key_of(st, "node:", st->node);
        st->nodes_key = key_of(st, "nodes", "");
        st->taken_key = key_of(st, "taken:", st->node);
        if (!st->owned_key || !st->lease_key || !st->nodes_key || !st->taken_key)
                goto fail;
        r = loop_timer_new(l, on_tick, st, &st->tick);
        if (r < 0)
                goto fail;
        struct redis_config rc = *cfg->redis;
        rc.client_name = "sipfleet-proxy-messages";
        r = redis_new(l, &rc, &st->redis);
        if (r < 0)
                goto fail;
        redis_set_state_callback(st->redis, on_link_state, st);
        *ret = &st->base;
        return 0;
fail:
        loop_timer_free(st->tick);
        free(st->prefix);
        free(st->node);
        free(st->owned_key);
        free(st->lease_key);
        free(st->nodes_key);
        free(st->taken_key);
        free(st);
        return r;
}
