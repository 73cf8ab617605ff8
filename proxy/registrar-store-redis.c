/* SPDX-License-Identifier: MIT */
/* The Redis registrar store: the bindings shared by every proxy of a cluster.
 *
 * Layout (key_prefix "fs:" by default; the AOR "sip:alice@example.org" gives the key
 * "fs:alice@example.org"):
 *   <prefix><user>@<host>   hash, one per AOR
 *       "v"                 version token (random hex), replaced by every write
 *       "c:<unique-id>"     one binding: a JSON object {"contact", "params", "generated",
 *                           "call-id", "cseq", "expires-at", "update-time" (CLOCK_REALTIME ms),
 *                           "q" (thousandths), "path" [...], "user-agent", "pos", and
 *                           "message-expires-at" (ms) when the contact is kept routable for
 *                           MESSAGE past its expiry}
 *     with PEXPIREAT at the latest time one of its bindings is kept (the later of
 *     "expires-at" and "message-expires-at"), so Redis drops an AOR whose last binding went;
 *     the bindings gone of a kept AOR are removed at its next write or purge.
 *   channel <prefix><user>@<host> (same name as the key): after each write that bound or
 *     refreshed devices, one PUBLISH per such device, payload its unique id.
 *
 * Writes are optimistic: read the hash (HGETALL), run the registrar rules shared by every store
 * (registrar_record_apply()) on that copy, then write the result back with a Lua script that
 * replaces the hash only if its version is still the one read, and publishes, all atomically.
 * A conflicting writer (another proxy) makes us read again, a few times at most. The scripts
 * are sent with EVALSHA, and with EVAL when the server answers NOSCRIPT.
 *
 * With wait_replicas > 0, a write completes only after WAIT confirmed that many replicas got
 * it, so that the loss of the master does not lose a binding we acknowledged. */
#define LOG_SUBSYSTEM LOG_registrar
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <sys/random.h>

#include "log.h"
#include "loop.h"
#include "macro.h"
#include "redis.h"
#include "registrar-store-redis.h"
#include "registrar-store.h"

#define MAX_ATTEMPTS 5
#define SCAN_COUNT "200"
#define FIELD_PREFIX "c:"
#define VERSION_FIELD "v"

/* KEYS[1] the AOR hash. ARGV: [1] version read ("" when absent), [2] new version, [3] PEXPIREAT
 * ms, [4] channel, [5] n = count of payloads to publish, [6..5+n] payloads, then field/value
 * pairs (none: the AOR is deleted). Returns 1, or 0 when the version changed meanwhile. */
static const char write_script[] =
        "local cur = redis.call('HGET', KEYS[1], 'v') or ''\n"
        "if cur ~= ARGV[1] then return 0 end\n"
        "redis.call('DEL', KEYS[1])\n"
        "local n = tonumber(ARGV[5])\n"
        "local first = 6 + n\n"
        "if #ARGV >= first then\n"
        "  redis.call('HSET', KEYS[1], 'v', ARGV[2], unpack(ARGV, first))\n"
        "  redis.call('PEXPIREAT', KEYS[1], ARGV[3])\n"
        "end\n"
        "for i = 1, n do redis.call('PUBLISH', ARGV[4], ARGV[5 + i]) end\n"
        "return 1\n";

/* KEYS: AOR hashes. ARGV: [1] now (ms), [2] new version. Drops the bindings no longer kept at
 * now. Returns {bindings removed, AORs still holding a binding}. */
static const char purge_script[] =
        "local now = tonumber(ARGV[1])\n"
        "local removed, live_keys = 0, 0\n"
        "for _, k in ipairs(KEYS) do\n"
        "  if redis.call('TYPE', k).ok == 'hash' then\n"
        "    local all = redis.call('HGETALL', k)\n"
        "    local live, dropped = 0, 0\n"
        "    for j = 1, #all, 2 do\n"
        "      if string.sub(all[j], 1, 2) == 'c:' then\n"
        "        local ok, b = pcall(cjson.decode, all[j + 1])\n"
        "        local at = ok and type(b) == 'table' and tonumber(b['expires-at'])\n"
        "        local mat = at and tonumber(b['message-expires-at'])\n"
        "        if mat and mat > at then at = mat end\n"
        "        if at and at <= now then\n"
        "          redis.call('HDEL', k, all[j])\n"
        "          dropped = dropped + 1\n"
        "        else\n"
        "          live = live + 1\n"
        "        end\n"
        "      end\n"
        "    end\n"
        "    removed = removed + dropped\n"
        "    if live == 0 then redis.call('DEL', k)\n"
        "    else\n"
        "      live_keys = live_keys + 1\n"
        "      if dropped > 0 then redis.call('HSET', k, 'v', ARGV[2]) end\n"
        "    end\n"
        "  end\n"
        "end\n"
        "return {removed, live_keys}\n";

struct script {
        const char *text;
        char sha[41];
};

struct redis_store {
        struct registrar_store base;
        struct loop *loop;
        struct redis *redis;
        char *prefix;
        unsigned wait_replicas;
        uint64_t wait_timeout_ms;
        struct script write, purge;
        struct op *ops; /* in flight, to cancel at free */
        uint64_t n_aors;
        bool counted; /* n_aors was counted once since the start */
        struct op *count_op;
        bool closing;
        struct watcher *watchers;
};

/* A watch: a subscription to the AOR's channel. */
struct watcher {
        struct watcher *next;
        struct redis_store *st;
        char *aor, *channel;
        registrar_event_fn cb;
        void *userdata;
};

enum op_kind { OP_FETCH, OP_APPLY, OP_REMOVE, OP_CLEAR, OP_DUMP, OP_PURGE, OP_COUNT };

/* One store operation; it may take several commands (read, write, retry, WAIT, SCAN...). */
struct op {
        struct op *prev, *next;
        struct redis_store *st;
        enum op_kind kind;
        union {
                registrar_record_fn record;
                registrar_dump_fn dump;
                registrar_done_fn done;
        } cb;
        void *userdata;

        char *aor, *key;
        char *unique_id; /* OP_REMOVE */
        /* OP_APPLY: a deep copy of the update */
        struct registrar_update u;
        struct registrar_contact *contacts;
        char **strings; /* the contact strings of the copy */
        char *call_id, *user_agent;
        char **path;

        unsigned attempts;
        bool existed;
        struct registrar_record *result;
        /* OP_DUMP, OP_PURGE, OP_COUNT: SCAN state */
        char *cursor;
        char **aors;
        int removed;
        uint64_t live_keys;
};

/* ---- helpers ---- */

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

static int random_token(char ret[17]) {
        uint8_t b[8];
        if (getrandom(b, sizeof b, 0) != sizeof b)
                return -errno;
        for (size_t i = 0; i < sizeof b; i++)
                sprintf(ret + 2 * i, "%02x", b[i]);
        return 0;
}

static char *aor_key(struct redis_store *st, const char *aor) {
        char *key;
        const char *rest = strncmp(aor, "sip:", 4) == 0 ? aor + 4 : aor;
        if (asprintf(&key, "%s%s", st->prefix, rest) < 0)
                return NULL;
        return key;
}

/* Store errors as errno: the server unreachable or answering an error. */
static int reply_error(const redisReply *reply, int error) {
        if (error < 0)
                return error;
        if (!reply)
                return -EIO;
        if (reply->type == REDIS_REPLY_ERROR) {
                log_debug("Redis error: %s", reply->str);
                if (strstr(reply->str, "READONLY"))
                        return -EROFS; /* a replica: no master reachable for now */
                if (strncmp(reply->str, "NOAUTH", 6) == 0 || strncmp(reply->str, "NOPERM", 6) == 0)
                        return -EACCES;
                if (strncmp(reply->str, "LOADING", 7) == 0 || strncmp(reply->str, "BUSY", 4) == 0 ||
                    strncmp(reply->str, "MASTERDOWN", 10) == 0 ||
                    strncmp(reply->str, "TRYAGAIN", 8) == 0)
                        return -EAGAIN;
                return -EIO;
        }
        return 0;
}

/* ---- binding <-> JSON ---- */

static char *binding_to_json(const struct registrar_binding *b, size_t pos) {
        json_t *path = json_array();
        STRV_FOREACH(p, b->path)
                json_array_append_new(path, json_string(*p));
        json_t *o = json_pack("{s:s, s:s?, s:b, s:s?, s:I, s:I, s:I, s:I, s:o, s:s?, s:I}",
                              "contact", b->contact, "params", b->params, "generated",
                              b->generated_id, "call-id", b->call_id, "cseq", (json_int_t)b->cseq,
                              "expires-at", (json_int_t)b->expires_at, "update-time",
                              (json_int_t)b->update_time, "q", (json_int_t)b->q, "path", path,
                              "user-agent", b->user_agent, "pos", (json_int_t)pos);
        if (!o)
                return NULL;
        if (b->message_expires_at > b->expires_at)
                json_object_set_new(o, "message-expires-at",
                                    json_integer((json_int_t)b->message_expires_at));
        char *s = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        return s;
}

static char *json_strdup(json_t *o, const char *name) {
        const char *s = json_string_value(json_object_get(o, name));
        return s ? strdup(s) : NULL;
}

/* One stored binding; -EBADMSG when the value is not ours. */
static int binding_from_json(const char *uid, const char *text, size_t len,
                             struct registrar_binding *b, json_int_t *pos) {
        json_t *o = json_loadb(text, len, 0, NULL);
        int r = 0;
        *b = (struct registrar_binding){0};
        if (!o || !json_is_object(o) || !json_is_string(json_object_get(o, "contact"))) {
                json_decref(o);
                return -EBADMSG;
        }
        b->unique_id = strdup(uid);
        b->contact = json_strdup(o, "contact");
        b->params = json_strdup(o, "params");
        b->generated_id = json_is_true(json_object_get(o, "generated"));
        b->call_id = json_strdup(o, "call-id");
        b->cseq = (uint32_t)json_integer_value(json_object_get(o, "cseq"));
        b->expires_at = (uint64_t)json_integer_value(json_object_get(o, "expires-at"));
        b->update_time = (uint64_t)json_integer_value(json_object_get(o, "update-time"));
        b->message_expires_at =
                (uint64_t)json_integer_value(json_object_get(o, "message-expires-at"));
        json_t *q = json_object_get(o, "q");
        b->q = json_is_integer(q) ? (unsigned)json_integer_value(q) : 1000;
        b->user_agent = json_strdup(o, "user-agent");
        *pos = json_integer_value(json_object_get(o, "pos"));
        json_t *path = json_object_get(o, "path");
        if (json_array_size(path) > 0) {
                size_t i;
                json_t *v;
                b->path = calloc(json_array_size(path) + 1, sizeof(char *));
                if (!b->path)
                        r = -ENOMEM;
                json_array_foreach(path, i, v) {
                        if (r < 0 || !json_is_string(v))
                                continue;
                        if (!(b->path[i] = strdup(json_string_value(v))))
                                r = -ENOMEM;
                }
        }
        if (!b->unique_id || !b->contact)
                r = -ENOMEM;
        json_decref(o);
        if (r < 0)
                registrar_binding_done(b);
        return r;
}

struct sortable {
        struct registrar_binding b;
        json_int_t pos;
};

static int by_pos(const void *a, const void *b) {
        const struct sortable *x = a, *y = b;
        return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* The record in an HGETALL reply (every binding, expired ones too) and its version ("" when
 * the AOR is absent). Values that are not bindings of ours are skipped with a debug line. */
static int record_from_reply(const char *aor, const redisReply *reply, struct registrar_record **ret,
                             char **version) {
        _cleanup_(registrar_record_freep) struct registrar_record *rec = calloc(1, sizeof *rec);
        _cleanup_free_ struct sortable *tmp = NULL;
        size_t n = 0;
        if (!rec || !(rec->aor = strdup(aor)))
                return -ENOMEM;
        *version = NULL;
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 0)
                return -EBADMSG;
        tmp = calloc(reply->elements / 2 + 1, sizeof *tmp);
        if (!tmp)
                return -ENOMEM;
        for (size_t i = 0; i + 1 < reply->elements; i += 2) {
                const redisReply *f = reply->element[i], *v = reply->element[i + 1];
                if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
                        continue;
                if (streq(f->str, VERSION_FIELD)) {
                        free(*version);
                        *version = strdup(v->str);
                        continue;
                }
                if (strncmp(f->str, FIELD_PREFIX, strlen(FIELD_PREFIX)) != 0)
                        continue;
                int r = binding_from_json(f->str + strlen(FIELD_PREFIX), v->str, v->len,
                                          &tmp[n].b, &tmp[n].pos);
                if (r == -ENOMEM)
                        goto oom;
                if (r < 0) {
                        log_debug("Skipping a malformed binding of '%s'.", aor);
                        continue;
                }
                n++;
        }
        if (!*version && !(*version = strdup("")))
                goto oom;
        qsort(tmp, n, sizeof *tmp, by_pos);
        if (n > 0) {
                rec->bindings = calloc(n, sizeof *rec->bindings);
                if (!rec->bindings)
                        goto oom;
                for (size_t i = 0; i < n; i++)
                        rec->bindings[i] = tmp[i].b;
                rec->n_bindings = n;
                n = 0;
        }
        *ret = TAKE_PTR(rec);
        return 0;
oom:
        for (size_t i = 0; i < n; i++)
                registrar_binding_done(&tmp[i].b);
        free(*version);
        *version = NULL;
        return -ENOMEM;
}

/* ---- operations ---- */

static void op_unlink(struct op *op) {
        struct redis_store *st = op->st;
        if (op->prev)
                op->prev->next = op->next;
        else if (st->ops == op)
                st->ops = op->next;
        if (op->next)
                op->next->prev = op->prev;
        op->prev = op->next = NULL;
}

static void op_free(struct op *op) {
        if (!op)
                return;
        free(op->aor);
        free(op->key);
        free(op->unique_id);
        free(op->contacts);
        strv_free(op->strings);
        free(op->call_id);
        free(op->user_agent);
        strv_free(op->path);
        registrar_record_free(op->result);
        free(op->cursor);
        strv_free(op->aors);
        free(op);
}

static struct op *op_new(struct redis_store *st, enum op_kind kind, const char *aor,
                         void *userdata) {
        struct op *op = calloc(1, sizeof *op);
        if (!op)
                return NULL;
        op->st = st;
        op->kind = kind;
        op->userdata = userdata;
        if (aor && (!(op->aor = strdup(aor)) || !(op->key = aor_key(st, aor)))) {
                op_free(op);
                return NULL;
        }
        op->next = st->ops;
        if (st->ops)
                st->ops->prev = op;
        st->ops = op;
        return op;
}

/* Unlink, call back, free. The callback is the last thing done with op. */
static void op_complete_record(struct op *op, int error, struct registrar_record *rec) {
        registrar_record_fn cb = op->cb.record;
        void *userdata = op->userdata;
        op_unlink(op);
        op_free(op);
        cb(error, rec, userdata);
}

static void op_complete_done(struct op *op, int result) {
        registrar_done_fn cb = op->cb.done;
        void *userdata = op->userdata;
        op_unlink(op);
        op_free(op);
        if (cb)
                cb(result, userdata);
}

static void op_complete_dump(struct op *op, int error) {
        registrar_dump_fn cb = op->cb.dump;
        void *userdata = op->userdata;
        char **aors = error < 0 ? NULL : TAKE_PTR(op->aors);
        op_unlink(op);
        op_free(op);
        cb(error, aors, userdata);
}

/* While the store is being freed, replies (-ECANCELED) only release their op. */
static bool op_dropped(struct op *op) {
        if (!op->st->closing)
                return false;
        op_unlink(op);
        op_free(op);
        return true;
}

static void op_fail(struct op *op, int error) {
        switch (op->kind) {
        case OP_FETCH:
        case OP_APPLY:
        case OP_REMOVE:
                op_complete_record(op, error, NULL);
                break;
        case OP_CLEAR:
        case OP_PURGE:
        case OP_COUNT:
                if (op->st->count_op == op)
                        op->st->count_op = NULL;
                op_complete_done(op, error);
                break;
        case OP_DUMP:
                op_complete_dump(op, error);
                break;
        }
}

/* A command of op; on a refusal the op fails at once (from the loop). */
static int op_command_argv(struct op *op, redis_reply_fn cb, int argc, const char *const *argv,
                           const size_t *lens) {
        return redis_command_argv(op->st->redis, cb, op, argc, argv, lens);
}

static void op_read(struct op *op);

/* ---- EVALSHA with EVAL fallback ---- */

struct eval {
        struct op *op;
        const struct script *script;
        redis_reply_fn cb;
        int argc;
        char **argv; /* argv[0] is a placeholder for EVALSHA/EVAL, argv[1] for the sha/text */
        size_t *lens;
};

static void eval_free(struct eval *e) {
        if (!e)
                return;
        for (int i = 2; i < e->argc; i++)
                free(e->argv[i]);
        free(e->argv);
        free(e->lens);
        free(e);
}

static int eval_send(struct eval *e, bool by_sha);

static void on_eval_reply(struct redis *r, redisReply *reply, int error, void *userdata) {
        struct eval *e = userdata;
        struct op *op = e->op;
        if (op->st->closing) {
                eval_free(e);
                (void)op_dropped(op);
                return;
        }
        if (error == 0 && reply && reply->type == REDIS_REPLY_ERROR &&
            strncmp(reply->str, "NOSCRIPT", 8) == 0) {
                int k = eval_send(e, false);
                if (k >= 0)
                        return;
                eval_free(e);
                op_fail(op, k);
                return;
        }
        redis_reply_fn cb = e->cb;
        eval_free(e);
        cb(r, reply, error, op);
}

static int eval_send(struct eval *e, bool by_sha) {
        by_sha = by_sha && e->script->sha[0];
        e->argv[0] = by_sha ? "EVALSHA" : "EVAL";
        e->argv[1] = by_sha ? (char *)e->script->sha : (char *)e->script->text;
        e->lens[0] = strlen(e->argv[0]);
        e->lens[1] = strlen(e->argv[1]);
        return redis_command_argv(e->op->st->redis, on_eval_reply, e, e->argc,
                                  (const char *const *)e->argv, e->lens);
}

/* Takes args (n strings after the script: numkeys, keys, arguments; NULL entries mean an
 * allocation failed), even on error. */
static int op_eval(struct op *op, const struct script *script, redis_reply_fn cb, char **args,
                   size_t n) {
        struct eval *e = calloc(1, sizeof *e);
        bool complete = e != NULL;
        for (size_t i = 0; i < n; i++)
                complete = complete && args[i];
        if (complete) {
                e->argv = calloc(n + 2, sizeof *e->argv);
                e->lens = calloc(n + 2, sizeof *e->lens);
                complete = e->argv && e->lens;
        }
        if (!complete) {
                for (size_t i = 0; i < n; i++)
                        free(args[i]);
                if (e) {
                        free(e->argv);
                        free(e->lens);
                        free(e);
                }
                return -ENOMEM;
        }
        e->op = op;
        e->script = script;
        e->cb = cb;
        e->argc = (int)n + 2;
        for (size_t i = 0; i < n; i++) {
                e->argv[i + 2] = args[i];
                e->lens[i + 2] = strlen(args[i]);
        }
        int k = eval_send(e, true);
        if (k < 0)
                eval_free(e);
        return k;
}

/* ---- fetch ---- */

static void on_fetch_reply(struct redis *r, redisReply *reply, int error, void *userdata) {
        struct op *op = userdata;
        if (op_dropped(op))
                return;
        _cleanup_(registrar_record_freep) struct registrar_record *stored = NULL;
        _cleanup_free_ char *version = NULL;
        struct registrar_record *live = NULL;
        int k = reply_error(reply, error);
        if (k >= 0)
                k = record_from_reply(op->aor, reply, &stored, &version);
        if (k >= 0)
                k = registrar_record_copy(stored, op->aor, realtime_msec(), &live);
        op_complete_record(op, k < 0 ? k : 0, k < 0 ? NULL : live);
}

static int redis_fetch(struct registrar_store *s, const char *aor, registrar_record_fn cb,
                       void *userdata) {
        struct redis_store *st = (struct redis_store *)s;
        struct op *op = op_new(st, OP_FETCH, aor, userdata);
        if (!op)
                return -ENOMEM;
        op->cb.record = cb;
        const char *argv[] = {"HGETALL", op->key};
        int k = op_command_argv(op, on_fetch_reply, 2, argv, NULL);
        if (k < 0) {
                op_unlink(op);
                op_free(op);
        }
        return k;
}

/* ---- apply / remove: read, decide, write if unchanged ---- */

static int update_copy(struct op *op, const struct registrar_update *u) {
        struct registrar_contact *c = calloc(u->n_contacts ? u->n_contacts : 1, sizeof *c);
        if (!c)
                return -ENOMEM;
        op->contacts = c;
        op->u = *u;
        op->u.aor = op->aor;
        op->u.contacts = c;
        op->u.call_id = op->call_id = u->call_id ? strdup(u->call_id) : NULL;
        op->u.user_agent = op->user_agent = u->user_agent ? strdup(u->user_agent) : NULL;
        op->u.path = op->path = u->path ? strv_copy(u->path) : NULL;
        if ((u->call_id && !op->call_id) || (u->user_agent && !op->user_agent) ||
            (u->path && !op->path))
                return -ENOMEM;
        op->strings = calloc(3 * u->n_contacts + 1, sizeof(char *));
        if (!op->strings)
                return -ENOMEM;
        size_t n = 0;
        for (size_t i = 0; i < u->n_contacts; i++) {
                const struct registrar_contact *from = &u->contacts[i];
                c[i] = *from;
                const char *src[3] = {from->contact, from->params, from->unique_id};
                const char **dst[3] = {&c[i].contact, &c[i].params, &c[i].unique_id};
                for (size_t j = 0; j < 3; j++) {
                        *dst[j] = NULL;
                        if (!src[j])
                                continue;
                        if (!(op->strings[n] = strdup(src[j])))
                                return -ENOMEM;
                        *dst[j] = op->strings[n++];
                }
        }
        return 0;
}

static void on_write_reply(struct redis *r, redisReply *reply, int error, void *userdata);
static void on_wait_reply(struct redis *r, redisReply *reply, int error, void *userdata);

static void apply_done(struct op *op) {
        struct redis_store *st = op->st;
        bool exists = op->result->n_bindings > 0;
        if (exists && !op->existed)
                st->n_aors++;
        else if (!exists && op->existed && st->n_aors > 0)
                st->n_aors--;
        op_complete_record(op, 0, TAKE_PTR(op->result));
}

static void on_write_reply(struct redis *r, redisReply *reply, int error, void *userdata) {
        struct op *op = userdata;
        if (op_dropped(op))
                return;
        int k = reply_error(reply, error);
        if (k < 0) {
                op_fail(op, k);
                return;
        }
        if (reply->type != REDIS_REPLY_INTEGER) {
                op_fail(op, -EBADMSG);
                return;
        }
        if (reply->integer == 0) {
                /* Another writer came first: decide again on what it wrote. */
                if (++op->attempts >= MAX_ATTEMPTS) {
                        log_debug("Registrar write of '%s' kept conflicting.", op->aor);
                        op_fail(op, -EAGAIN);
                        return;
                }
                registrar_record_free(TAKE_PTR(op->result));
                op_read(op);
                return;
        }
        if (op->st->wait_replicas > 0) {
                char n[16], t[24];
                snprintf(n, sizeof n, "%u", op->st->wait_replicas);
                snprintf(t, sizeof t, "%llu", (unsigned long long)op->st->wait_timeout_ms);
                const char *argv[] = {"WAIT", n, t};
                k = op_command_argv(op, on_wait_reply, 3, argv, NULL);
                if (k < 0)
                        op_fail(op, k);
                return;
        }
        apply_done(op);
}

static void on_wait_reply(struct redis *r, redisReply *reply, int error, void *userdata) {
        struct op *op = userdata;
        if (op_dropped(op))
                return;
        int k = reply_error(reply, error);
        if (k < 0) {
                op_fail(op, k);
                return;
        }
        if (reply->type != REDIS_REPLY_INTEGER) {
                op_fail(op, -EBADMSG);
                return;
        }
        if (reply->integer < (long long)op->st->wait_replicas) {
                log_debug("Registrar write of '%s' reached %lld replica(s) of %u in time.",
                          op->aor, reply->integer, op->st->wait_replicas);
                op_fail(op, -ETIMEDOUT);
                return;
        }
        apply_done(op);
}

/* Write op->result over the version read. */
static int op_write(struct op *op, const char *version) {
        const struct registrar_record *rec = op->result;
        uint64_t expire_at = 0;
        size_t n_pub = 0;
        char token[17];
        int k = random_token(token);
        if (k < 0)
                return k;
        for (size_t i = 0; i < rec->n_bindings; i++) {
                expire_at = MAX(expire_at, registrar_binding_kept_until(&rec->bindings[i]));
                if (op->kind == OP_APPLY && rec->bindings[i].update_time == op->u.now)
                        n_pub++;
        }
        size_t n = 2 + 5 + n_pub + 2 * rec->n_bindings, j = 0;
        _cleanup_free_ char **args = calloc(n, sizeof *args);
        if (!args)
                return -ENOMEM;
        args[j++] = strdup("1");
        args[j++] = strdup(op->key);
        args[j++] = strdup(version);
        args[j++] = strdup(token);
        if (asprintf(&args[j++], "%llu", (unsigned long long)expire_at) < 0)
                args[j - 1] = NULL;
        args[j++] = strdup(op->key);
        if (asprintf(&args[j++], "%zu", n_pub) < 0)
                args[j - 1] = NULL;
        for (size_t i = 0; i < rec->n_bindings; i++)
                if (op->kind == OP_APPLY && rec->bindings[i].update_time == op->u.now)
                        args[j++] = strdup(rec->bindings[i].unique_id);
        for (size_t i = 0; i < rec->n_bindings; i++) {
                if (asprintf(&args[j++], FIELD_PREFIX "%s", rec->bindings[i].unique_id) < 0)
                        args[j - 1] = NULL;
                args[j++] = binding_to_json(&rec->bindings[i], i);
        }
        return op_eval(op, &op->st->write, on_write_reply, args, n);
}

static void on_read_reply(struct redis *r, redisReply *reply, int error, void *userdata) {
        struct op *op = userdata;
        if (op_dropped(op))
                return;
        _cleanup_(registrar_record_freep) struct registrar_record *stored = NULL;
        _cleanup_free_ char *version = NULL;
        struct registrar_record *rec = NULL;
        int k = reply_error(reply, error);
        if (k >= 0)
                k = record_from_reply(op->aor, reply, &stored, &version);
        if (k < 0) {
                op_fail(op, k);
                return;
        }
        op->existed = !streq(version, "");
        uint64_t now = op->kind == OP_APPLY ? op->u.now : realtime_msec();
        k = registrar_record_copy(stored, op->aor, now, &rec);
        if (k < 0) {
                op_fail(op, k);
                return;
        }
        op->result = rec;
        if (op->kind == OP_APPLY)
                k = registrar_record_apply(rec, &op->u);
        else
                k = registrar_record_remove_id(rec, op->unique_id);
        if (k == 0)
                k = op_write(op, version);
        if (k < 0)
                op_fail(op, k);
}

static void op_read(struct op *op) {
        const char *argv[] = {"HGETALL", op->key};
        int k = op_command_argv(op, on_read_reply, 2, argv, NULL);
        if (k < 0)
                op_fail(op, k);
}

static int start_modify(struct op *op) {
        const char *argv[] = {"HGETALL", op->key};
        int k = op_command_argv(op, on_read_reply, 2, argv, NULL);
        if (k < 0) {
                op_unlink(op);
                op_free(op);
        }
        return k;
}

static int redis_apply(struct registrar_store *s, const struct registrar_update *u,
                       registrar_record_fn cb, void *userdata) {
        struct redis_store *st = (struct redis_store *)s;
        struct op *op = op_new(st, OP_APPLY, u->aor, userdata);
        if (!op)
                return -ENOMEM;
        op->cb.record = cb;
        int k = update_copy(op, u);
        if (k < 0) {
                op_unlink(op);
                op_free(op);
                return k;
        }
        return start_modify(op);
}

static int redis_remove(struct registrar_store *s, const char *aor, const char *unique_id,
                        registrar_record_fn cb, void *userdata) {
        struct redis_store *st = (struct redis_store *)s;
        struct op *op = op_new(st, OP_REMOVE, aor, userdata);
        if (!op)
                return -ENOMEM;
        op->cb.record = cb;
        if (!(op->unique_id = strdup(unique_id))) {
                op_unlink(op);
                op_free(op);
                return -ENOMEM;
        }
        return start_modify(op);
}

/* ---- clear ---- */

static void on_clear_reply(struct redis *r, redisReply *reply, int error, void *userdata) {
        struct op *op = userdata;
        if (op_dropped(op))
                return;
        int k = reply_error(reply, error);
        if (k >= 0 && reply->type != REDIS_REPLY_INTEGER)
                k = -EBADMSG;
        if (k < 0) {
                op_fail(op, k);
                return;
        }
        if (reply->integer > 0 && op->st->n_aors > 0)
                op->st->n_aors--;
        op_complete_done(op, reply->integer > 0 ? 1 : 0);
}

static int redis_clear(struct registrar_store *s, const char *aor, registrar_done_fn cb,
                       void *userdata) {
        struct redis_store *st = (struct redis_store *)s;
        struct op *op = op_new(st, OP_CLEAR, aor, userdata);
        if (!op)
                return -ENOMEM;
        op->cb.done = cb;
        const char *argv[] = {"DEL", op->key};
        int k = op_command_argv(op, on_clear_reply, 2, argv, NULL);
        if (k < 0) {
                op_unlink(op);
                op_free(op);
        }
        return k;
}

/* ---- dump, purge, count: SCAN over the prefix ---- */

static int scan_next(struct op *op);

static void on_purge_reply(struct redis *r, redisReply *reply, int error, void *userdata) {
        struct op *op = userdata;
        if (op_dropped(op))
                return;
        int k = reply_error(reply, error);
        if (k >= 0 && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
                       reply->element[0]->type != REDIS_REPLY_INTEGER ||
                       reply->element[1]->type != REDIS_REPLY_INTEGER))
                k = -EBADMSG;
        if (k >= 0) {
                op->removed += (int)reply->element[0]->integer;
                op->live_keys += (uint64_t)reply->element[1]->integer;
                k = scan_next(op);
        }
        if (k < 0)
                op_fail(op, k);
}

static void scan_finish(struct op *op) {
        struct redis_store *st = op->st;
        switch (op->kind) {
        case OP_DUMP:
                st->n_aors = strv_length(op->aors);
                op_complete_dump(op, 0);
                break;
        case OP_PURGE:
        case OP_COUNT:
                st->n_aors = op->live_keys;
                st->counted = true;
                if (st->count_op == op)
                        st->count_op = NULL;
                op_complete_done(op, op->kind == OP_PURGE ? op->removed : (int)op->live_keys);
                break;
        default:
                break;
        }
}

static void on_scan_reply(struct redis *r, redisReply *reply, int error, void *userdata) {
        struct op *op = userdata;
        if (op_dropped(op))
                return;
        struct redis_store *st = op->st;
        int k = reply_error(reply, error);
        if (k >= 0 && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
                       reply->element[0]->type != REDIS_REPLY_STRING ||
                       reply->element[1]->type != REDIS_REPLY_ARRAY))
                k = -EBADMSG;
        if (k < 0) {
                op_fail(op, k);
                return;
        }
        free(op->cursor);
        op->cursor = strdup(reply->element[0]->str);
        if (!op->cursor) {
                op_fail(op, -ENOMEM);
                return;
        }
        const redisReply *keys = reply->element[1];
        if (op->kind == OP_DUMP) {
                size_t plen = strlen(st->prefix);
                for (size_t i = 0; i < keys->elements; i++) {
                        const redisReply *key = keys->element[i];
                        _cleanup_free_ char *aor = NULL;
                        if (key->type != REDIS_REPLY_STRING || key->len <= plen)
                                continue;
                        if (asprintf(&aor, "sip:%s", key->str + plen) < 0 ||
                            strv_extend(&op->aors, aor) < 0) {
                                op_fail(op, -ENOMEM);
                                return;
                        }
                }
                k = scan_next(op);
        } else if (keys->elements == 0)
                k = scan_next(op);
        else {
                /* Purge (or count) this batch in one script. */
                size_t n = 1 + keys->elements + 2, j = 0;
                char **args = calloc(n, sizeof *args);
                char token[17];
                if (!args || random_token(token) < 0) {
                        free(args);
                        op_fail(op, -ENOMEM);
                        return;
                }
                if (asprintf(&args[j++], "%zu", keys->elements) < 0)
                        args[j - 1] = NULL;
                for (size_t i = 0; i < keys->elements; i++)
                        args[j++] = keys->element[i]->type == REDIS_REPLY_STRING
                                            ? strdup(keys->element[i]->str)
                                            : strdup("");
                /* Counting only: a "now" of 0 removes nothing. */
                if (asprintf(&args[j++], "%llu",
                             (unsigned long long)(op->kind == OP_PURGE ? op->u.now : 0)) < 0)
                        args[j - 1] = NULL;
                args[j++] = strdup(token);
                k = op_eval(op, &st->purge, on_purge_reply, args, n);
                free(args);
        }
        if (k < 0)
                op_fail(op, k);
}

/* The next SCAN step, or the end when the cursor came back to 0. */
static int scan_next(struct op *op) {
        if (op->cursor && streq(op->cursor, "0")) {
                scan_finish(op);
                return 0;
        }
        _cleanup_free_ char *match = NULL;
        if (asprintf(&match, "%s*", op->st->prefix) < 0)
                return -ENOMEM;
        const char *argv[] = {"SCAN", op->cursor ? op->cursor : "0", "MATCH", match, "COUNT",
                              SCAN_COUNT};
        return op_command_argv(op, on_scan_reply, 6, argv, NULL);
}

static int start_scan(struct op *op) {
        int k = scan_next(op);
        if (k < 0) {
                if (op->st->count_op == op)
                        op->st->count_op = NULL;
                op_unlink(op);
                op_free(op);
        }
        return k;
}

static int redis_dump(struct registrar_store *s, registrar_dump_fn cb, void *userdata) {
        struct redis_store *st = (struct redis_store *)s;
        struct op *op = op_new(st, OP_DUMP, NULL, userdata);
        if (!op)
                return -ENOMEM;
        op->cb.dump = cb;
        if (!(op->aors = calloc(1, sizeof(char *)))) {
                op_unlink(op);
                op_free(op);
                return -ENOMEM;
        }
        return start_scan(op);
}

static int redis_purge(struct registrar_store *s, uint64_t now, registrar_done_fn cb,
                       void *userdata) {
        struct redis_store *st = (struct redis_store *)s;
        struct op *op = op_new(st, OP_PURGE, NULL, userdata);
        if (!op)
                return -ENOMEM;
        op->cb.done = cb;
        op->u.now = now;
        return start_scan(op);
}

/* ---- watch: the AOR's channel ---- */

static void on_channel_message(struct redis *r, const struct redis_message *m, void *userdata) {
        struct watcher *w = userdata;
        if (m->type != REDIS_MESSAGE_DATA || memchr(m->data, 0, m->len))
                return;
        w->cb(w->aor, m->data, w->userdata);
}

static void watcher_free(struct watcher *w) {
        free(w->aor);
        free(w->channel);
        free(w);
}

static int redis_watch(struct registrar_store *s, const char *aor, registrar_event_fn cb,
                       void *userdata) {
        struct redis_store *st = (struct redis_store *)s;
        for (struct watcher *w = st->watchers; w; w = w->next)
                if (w->cb == cb && w->userdata == userdata && streq(w->aor, aor))
                        return -EEXIST;
        struct watcher *w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        *w = (struct watcher){.st = st, .cb = cb, .userdata = userdata};
        w->aor = strdup(aor);
        w->channel = aor_key(st, aor);
        if (!w->aor || !w->channel) {
                watcher_free(w);
                return -ENOMEM;
        }
        int k = redis_subscribe(st->redis, w->channel, on_channel_message, w);
        if (k < 0) {
                watcher_free(w);
                return k;
        }
        w->next = st->watchers;
        st->watchers = w;
        return 0;
}

static int redis_unwatch(struct registrar_store *s, const char *aor, registrar_event_fn cb,
                         void *userdata) {
        struct redis_store *st = (struct redis_store *)s;
        for (struct watcher **p = &st->watchers; *p; p = &(*p)->next) {
                struct watcher *w = *p;
                if (w->cb != cb || w->userdata != userdata || !streq(w->aor, aor))
                        continue;
                *p = w->next;
                (void)redis_unsubscribe(st->redis, w->channel, on_channel_message, w);
                watcher_free(w);
                return 0;
        }
        return -ENOENT;
}

static uint64_t redis_n_aors(struct registrar_store *s) {
        return ((struct redis_store *)s)->n_aors;
}

/* Count the AORs once connected, for the gauge. */
static void on_link_state(struct redis *r, enum redis_link link, bool up, int error,
                          const char *reason, void *userdata) {
        struct redis_store *st = userdata;
        if (link != REDIS_LINK_COMMAND)
                return;
        if (!up) {
                log_warning("Redis registrar store unreachable: %s.", strna(reason));
                return;
        }
        log_notice("Redis registrar store connected.");
        if (st->count_op)
                return;
        struct op *op = op_new(st, OP_COUNT, NULL, NULL);
        if (!op)
                return;
        st->count_op = op;
        (void)start_scan(op);
}

static void redis_store_free(struct registrar_store *s) {
        struct redis_store *st = (struct redis_store *)s;
        /* Pending callbacks are dropped: the commands in flight get -ECANCELED from
         * redis_free(), and their handlers only release their op. */
        st->closing = true;
        redis_free(st->redis);
        while (st->watchers) {
                struct watcher *w = st->watchers;
                st->watchers = w->next;
                watcher_free(w);
        }
        while (st->ops) {
                struct op *op = st->ops;
                op_unlink(op);
                op_free(op);
        }
        free(st->prefix);
        free(st);
}

static const struct registrar_store_ops redis_ops = {
        .name = "redis",
        .fetch = redis_fetch,
        .apply = redis_apply,
        .remove = redis_remove,
        .clear = redis_clear,
        .dump = redis_dump,
        .purge = redis_purge,
        .watch = redis_watch,
        .unwatch = redis_unwatch,
        .n_aors = redis_n_aors,
        .free = redis_store_free,
};

int registrar_store_redis_new(struct loop *l, const struct registrar_redis_config *cfg,
                              struct registrar_store **ret) {
        struct redis_store *st = calloc(1, sizeof *st);
        int r;
        if (!st)
                return -ENOMEM;
        st->base.ops = &redis_ops;
        st->loop = l;
        st->wait_replicas = cfg->wait_replicas;
        st->wait_timeout_ms = cfg->wait_timeout_ms > 0 ? cfg->wait_timeout_ms : 500;
        script_init(&st->write, write_script);
        script_init(&st->purge, purge_script);
        st->prefix = strdup(cfg->key_prefix ? cfg->key_prefix : "fs:");
        if (!st->prefix) {
                free(st);
                return -ENOMEM;
        }
        r = redis_new(l, &cfg->redis, &st->redis);
        if (r < 0) {
                free(st->prefix);
                free(st);
                return r;
        }
        redis_set_state_callback(st->redis, on_link_state, st);
        *ret = &st->base;
        return 0;
}

bool registrar_store_redis_ready(struct registrar_store *s) {
        struct redis_store *st = (struct redis_store *)s;
        return redis_is_connected(st->redis) && st->counted;
}
