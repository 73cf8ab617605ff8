/* SPDX-License-Identifier: MIT */
/* Presence state shared through Redis, so that several presence servers serve one domain.
 *
 * Redis holds the publications of each presentity; a server keeps a mirror of a presentity only
 * while it has watchers of it. Layout (one hash per presentity, <prefix> from redis-key-prefix):
 *
 *   <prefix><user>@<host>   hash
 *       <entity tag>  "<expires> <updated> <id>\n<PIDF document>"   one per publication
 *                     (<id>: its first entity tag, kept when it is refreshed or modified)
 *       ~last         "<time>"     last activity: when the last publication ended
 *     (times in milliseconds since the epoch, on Redis's clock: TIME)
 *     PEXPIREAT: the latest expiry, or the last activity, plus last-activity-retention-time.
 *   channel <prefix><user>@<host>: the id of the server that changed the hash.
 *
 * Every PUBLISH runs one Lua script that reads the hash, drops the expired publications (their
 * expiry becomes the last activity), checks the entity tag, writes, sets the key's lifetime and
 * publishes on the channel. The same script with the op "read" only reads. Both return
 * {status, now, last, tag, value, tag, value...} with the live publications, so a server arms
 * its expiry timers from Redis's clock: expiry is the same on every server.
 *
 * A server with watchers of a presentity subscribes to its channel and reads the hash when it
 * gets its first watcher (the first NOTIFYs wait for that read), when a change from another
 * server is announced, and when the channel subscription becomes active (again, after a lost
 * link: what was missed is read then). Redis down: PUBLISH gets 503 with Retry-After at once
 * (or after redis-command-timeout); subscriptions go on with the mirror they have. */
#define LOG_SUBSYSTEM LOG_presence
#include <stdio.h>
#include <stdlib.h>

#include <hiredis/hiredis.h>
#include <openssl/rand.h>
#include <sofia-sip/su_tagarg.h>

#include "daemon.h"
#include "loop.h"
#include "macro.h"
#include "pidf.h"
#include "presence.h"
#include "redis.h"
#include "stats.h"

/* KEYS[1]: the hash (also the channel). ARGV: op (new, refresh, modify, remove, read), new
 * entity tag, entity tag matched (SIP-If-Match), lifetime in ms, document, max publications,
 * last-activity retention in ms, origin. */
static const char SCRIPT[] =
        "local k = KEYS[1]\n"
        "local t = redis.call('TIME')\n"
        "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
        "local op = ARGV[1]\n"
        "local write = op ~= 'read'\n"
        "local all = redis.call('HGETALL', k)\n"
        "local last, live, n, found = 0, {}, 0, nil\n"
        "for i = 1, #all, 2 do\n"
        "  local f, v = all[i], all[i + 1]\n"
        "  if f == '~last' then\n"
        "    last = math.max(last, tonumber(v) or 0)\n"
        "  else\n"
        "    local exp = tonumber(string.match(v, '^(%d+)')) or 0\n"
        "    if exp > now then\n"
        "      live[f] = v\n"
        "      n = n + 1\n"
        "      if f == ARGV[3] then found = v end\n"
        "    else\n"
        "      last = math.max(last, exp)\n"
        "      if write then redis.call('HDEL', k, f) end\n"
        "    end\n"
        "  end\n"
        "end\n"
        "local status = 200\n"
        "if write then\n"
        "  local exp = now + tonumber(ARGV[4])\n"
        "  if op == 'new' then\n"
        "    if n >= tonumber(ARGV[6]) then status = 503\n"
        "    else\n"
        "      live[ARGV[2]] = exp .. ' ' .. now .. ' ' .. ARGV[2] .. '\\n' .. ARGV[5]\n"
        "      redis.call('HSET', k, ARGV[2], live[ARGV[2]])\n"
        "      n = n + 1\n"
        "    end\n"
        "  elseif not found then\n"
        "    status = 412\n"
        "  else\n"
        "    live[ARGV[3]] = nil\n"
        "    redis.call('HDEL', k, ARGV[3])\n"
        "    if op == 'remove' then\n"
        "      n = n - 1\n"
        "      if n == 0 then last = now end\n"
        "    else\n"
        "      local rest\n"
        "      if op == 'refresh' then rest = string.match(found, '^%d+ (.*)$')\n"
        "      else rest = now .. ' ' .. string.match(found, '^%d+ %d+ (%S+)\\n') .. '\\n' .. "
        "ARGV[5] end\n"
        "      live[ARGV[2]] = exp .. ' ' .. rest\n"
        "      redis.call('HSET', k, ARGV[2], live[ARGV[2]])\n"
        "    end\n"
        "  end\n"
        "  if status == 200 then\n"
        "    local keep = last\n"
        "    for f, v in pairs(live) do\n"
        "      keep = math.max(keep, tonumber(string.match(v, '^(%d+)')))\n"
        "    end\n"
        "    if last > 0 then redis.call('HSET', k, '~last', last) end\n"
        "    local until_ms = keep + tonumber(ARGV[7])\n"
        "    if n == 0 and until_ms <= now then redis.call('DEL', k)\n"
        "    elseif keep > 0 then redis.call('PEXPIREAT', k, until_ms) end\n"
        "    redis.call('PUBLISH', k, ARGV[8])\n"
        "  end\n"
        "end\n"
        "local out = {status, now, last}\n"
        "for f, v in pairs(live) do\n"
        "  out[#out + 1] = f\n"
        "  out[#out + 1] = v\n"
        "end\n"
        "return out\n";

enum op_kind { OP_NEW, OP_REFRESH, OP_MODIFY, OP_REMOVE, OP_READ };
static const char *const op_names[] = {"new", "refresh", "modify", "remove", "read"};

static char *redis_key(struct presence *p, const char *key) {
        char *s = NULL;
        if (asprintf(&s, "%s%s", strempty(p->config.redis_prefix), key) < 0)
                return NULL;
        return s;
}

static int run_script(struct presence *p, redis_reply_fn cb, void *userdata, enum op_kind op,
                      const char *key, const char *etag, const char *if_match, uint64_t ms,
                      const char *doc, size_t doc_len) {
        _cleanup_free_ char *rkey = redis_key(p, key);
        if (!rkey)
                return -ENOMEM;
        char lifetime[24], max[24], retention[24];
        snprintf(lifetime, sizeof lifetime, "%llu", (unsigned long long)ms);
        snprintf(max, sizeof max, "%lld", (long long)p->config.max_publications);
        snprintf(retention, sizeof retention, "%llu",
                 (unsigned long long)p->config.last_activity_retention_ms);
        const char *argv[] = {"EVAL",
                              SCRIPT,
                              "1",
                              rkey,
                              op_names[op],
                              etag ? etag : "",
                              if_match ? if_match : "",
                              lifetime,
                              doc ? doc : "",
                              max,
                              retention,
                              p->origin};
        size_t lens[ELEMENTSOF(argv)];
        for (size_t i = 0; i < ELEMENTSOF(argv); i++)
                lens[i] = strlen(argv[i]);
        if (doc)
                lens[8] = doc_len;
        return redis_command_argv(p->redis, cb, userdata, (int)ELEMENTSOF(argv), argv, lens);
}

/* The status, Redis's time and the last activity of a script reply; false when it is not
 * one. */
static bool reply_head(const redisReply *rep, long long *status, uint64_t *now, uint64_t *last) {
        if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 || (rep->elements - 3) % 2)
                return false;
        for (size_t i = 0; i < 3; i++)
                if (rep->element[i]->type != REDIS_REPLY_INTEGER || rep->element[i]->integer < 0)
                        return false;
        *status = rep->element[0]->integer;
        *now = (uint64_t)rep->element[1]->integer;
        *last = (uint64_t)rep->element[2]->integer;
        return true;
}

/* One publication of a script reply: "<expires> <updated> <id>\n<document>". */
struct entry {
        const char *etag;
        uint64_t expires, updated;
        char id[24];
        const char *doc;
        size_t doc_len;
};

static bool parse_entry(const redisReply *f, const redisReply *v, struct entry *e) {
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || f->len == 0 ||
            f->len >= sizeof e->id)
                return false;
        e->etag = f->str;
        char *end = NULL;
        e->expires = strtoull(v->str, &end, 10);
        if (*end != ' ')
                return false;
        e->updated = strtoull(end + 1, &end, 10);
        if (*end != ' ')
                return false;
        const char *id = end + 1, *nl = strchr(id, '\n');
        if (!nl || nl == id || (size_t)(nl - id) >= sizeof e->id)
                return false;
        memcpy(e->id, id, (size_t)(nl - id));
        e->id[nl - id] = 0;
        e->doc = nl + 1;
        e->doc_len = v->len - (size_t)(e->doc - v->str);
        return true;
}

static bool reply_has_id(const redisReply *rep, const char *id) {
        struct entry e;
        for (size_t i = 3; i + 1 < rep->elements; i += 2)
                if (parse_entry(rep->element[i], rep->element[i + 1], &e) && streq(e.id, id))
                        return true;
        return false;
}

static struct publication *find_pub(struct presentity *pr, const char *id) {
        for (struct publication *pub = pr->publications; pub; pub = pub->next)
                if (streq(pub->id, id))
                        return pub;
        return NULL;
}

/* Makes the mirror of pr what the script reply says; returns whether anything changed for the
 * watchers (a refresh elsewhere only moves the entity tag and the expiry). */
static bool sync_presentity(struct presentity *pr, const redisReply *rep) {
        struct presence *p = pr->presence;
        long long status;
        uint64_t now, last;
        if (!reply_head(rep, &status, &now, &last))
                return false;
        bool changed = false;
        for (struct publication *pub = pr->publications, *next; pub; pub = next) {
                next = pub->next;
                if (!reply_has_id(rep, pub->id)) {
                        publication_free(pub);
                        changed = true;
                }
        }
        for (size_t i = 3; i + 1 < rep->elements; i += 2) {
                struct entry e;
                if (!parse_entry(rep->element[i], rep->element[i + 1], &e) || e.expires <= now) {
                        log_warning("Unreadable publication in Redis for '%s': skipped.", pr->key);
                        continue;
                }
                struct publication *pub = find_pub(pr, e.id);
                if (pub && pub->updated_ms == e.updated) {
                        /* Refreshed: same document, new tag and expiry. */
                        snprintf(pub->etag, sizeof pub->etag, "%s", e.etag);
                        pub->expires_at = now_msec() + (e.expires - now);
                        loop_timer_arm(pub->timer, e.expires - now);
                        continue;
                }
                if (pub) {
                        publication_free(pub); /* modified: replaced, in its new place */
                        changed = true;
                }
                if (pr->n_publications >= (unsigned)p->config.max_publications)
                        break;
                xmlDocPtr doc = NULL;
                const char *reason = NULL;
                /* Written by a presence server after its checks; read with the same care. */
                if (xml_parse(e.doc, e.doc_len, p->config.max_body_size * 2 + 4096, &doc) < 0 ||
                    !pidf_valid(doc, &reason)) {
                        xmlFreeDoc(doc);
                        log_warning("Invalid PIDF in Redis for '%s' (publication '%s'): skipped.",
                                    pr->key, e.id);
                        continue;
                }
                pub = publication_new(pr, doc, e.expires - now, e.updated);
                if (!pub) {
                        xmlFreeDoc(doc);
                        log_oom();
                        break;
                }
                snprintf(pub->etag, sizeof pub->etag, "%s", e.etag);
                snprintf(pub->id, sizeof pub->id, "%s", e.id);
                changed = true;
        }
        if (!pr->publications) {
                uint64_t keep = p->config.last_activity_retention_ms;
                time_t when = last > 0 && now < last + keep ? (time_t)(last / 1000) : 0;
                if (when != pr->last_activity) {
                        presentity_set_last_activity(pr, when, when ? last + keep - now : 0);
                        changed = true;
                }
        }
        if (changed)
                presentity_changed(pr);
        return changed;
}

/* ---- reads ---- */

struct load {
        struct presence *p;
        uint64_t gen;
        char key[];
};

static void load(struct presentity *pr);

static void first_read_done(struct presentity *pr) {
        if (!pr->loading)
                return;
        pr->loading = false;
        for (struct resource *res = pr->watchers, *next; res; res = next) {
                next = res->wnext;
                subscription_loaded(res->sub);
        }
}

static void on_load(struct redis *r, redisReply *rep, int error, void *userdata) {
        struct load *l = userdata;
        struct presence *p = l->p;
        if (error == -ECANCELED) {
                free(l);
                return;
        }
        struct presentity *pr = presentity_get(p, l->key, false);
        if (!pr || pr->gen != l->gen) {
                free(l); /* gone since, or a newer one */
                return;
        }
        free(l);
        pr->loads--;
        long long status;
        uint64_t now, last;
        if (error < 0 || !reply_head(rep, &status, &now, &last) || status != 200) {
                stats_inc(p->count.redis_failed);
                pr->stale = true;
                log_warning("Cannot read the presence of '%s' from Redis: %s.", pr->key,
                            error < 0                               ? strerror(-error)
                            : rep && rep->type == REDIS_REPLY_ERROR ? rep->str
                                                                    : "unexpected reply");
        } else {
                stats_inc(p->count.redis_loads);
                pr->stale = false;
                sync_presentity(pr, rep);
        }
        /* Failed or not, the first NOTIFYs go now with what is known. */
        first_read_done(pr);
        if (pr->reload && pr->loads == 0) {
                pr->reload = false;
                load(pr);
        }
}

static void load(struct presentity *pr) {
        struct presence *p = pr->presence;
        if (!p->redis)
                return;
        if (pr->loads > 0) {
                pr->reload = true; /* one more read once this one is back */
                return;
        }
        size_t n = strlen(pr->key) + 1;
        struct load *l = malloc(sizeof *l + n);
        int r = -ENOMEM;
        if (l) {
                l->p = p;
                l->gen = pr->gen;
                memcpy(l->key, pr->key, n);
                r = run_script(p, on_load, l, OP_READ, pr->key, NULL, NULL, 0, NULL, 0);
        }
        if (r < 0) {
                free(l);
                stats_inc(p->count.redis_failed);
                pr->stale = true;
                log_debug("Cannot read the presence of '%s' from Redis: %s.", pr->key,
                          strerror(-r));
                pr->loading = false; /* nothing to wait for */
                return;
        }
        pr->loads++;
}

static void on_change(struct redis *r, const struct redis_message *m, void *userdata) {
        struct presentity *pr = userdata;
        struct presence *p = pr->presence;
        if (m->type == REDIS_MESSAGE_DATA) {
                if (m->data && streq(m->data, p->origin))
                        return; /* ours: the script's reply updated the mirror */
                stats_inc(p->count.redis_changes);
        }
        /* A change by another server, or the subscription is (again) active: changes may
         * have been missed before. */
        load(pr);
}

void shared_watch(struct presentity *pr) {
        struct presence *p = pr->presence;
        if (!p->redis)
                return;
        _cleanup_free_ char *channel = redis_key(p, pr->key);
        if (channel && redis_subscribe(p->redis, channel, on_change, pr) >= 0)
                pr->channel = true;
        else
                log_warning("Cannot subscribe to the changes of '%s' in Redis.", pr->key);
        pr->loading = true;
        load(pr);
}

void shared_unwatch(struct presentity *pr) {
        struct presence *p = pr->presence;
        if (!pr->channel || !p->redis)
                return;
        pr->channel = false;
        _cleanup_free_ char *channel = redis_key(p, pr->key);
        if (channel)
                (void)redis_unsubscribe(p->redis, channel, on_change, pr);
}

/* ---- PUBLISH ---- */

struct publish_op {
        struct presence *p;
        nta_incoming_t *irq;
        enum op_kind kind;
        uint64_t expires_ms;
        char etag[24];
        char *if_match;
        char key[];
};

static void publish_done(struct publish_op *op) {
        nta_incoming_destroy(op->irq);
        free(op->if_match);
        free(op);
}

static void reply_unavailable(struct publish_op *op, const char *why) {
        struct presence *p = op->p;
        stats_inc(p->count.redis_failed);
        stats_inc(p->count.publish_rejected);
        log_warning("PUBLISH for '%s' refused: Redis %s.", op->key, why);
        nta_incoming_treply(op->irq, SIP_503_SERVICE_UNAVAILABLE, SIPTAG_RETRY_AFTER_STR("5"),
                            TAG_END());
}

static void on_publish(struct redis *r, redisReply *rep, int error, void *userdata) {
        struct publish_op *op = userdata;
        struct presence *p = op->p;
        long long status = 0;
        uint64_t now, last;
        if (error < 0) {
                reply_unavailable(op, error == -ECANCELED ? "closing" : strerror(-error));
                publish_done(op);
                return;
        }
        if (!reply_head(rep, &status, &now, &last)) {
                reply_unavailable(op, rep && rep->type == REDIS_REPLY_ERROR
                                              ? rep->str
                                              : "sent an unexpected reply");
                publish_done(op);
                return;
        }
        if (status == 412) {
                stats_inc(p->count.publish_rejected);
                log_info("PUBLISH for '%s' with unknown entity tag '%s'.", op->key, op->if_match);
                nta_incoming_treply(op->irq, SIP_412_PRECONDITION_FAILED, TAG_END());
        } else if (status == 503) {
                stats_inc(p->count.publish_rejected);
                log_warning("PUBLISH for '%s' refused: max-presence-elements reached.", op->key);
                nta_incoming_treply(op->irq, SIP_503_SERVICE_UNAVAILABLE,
                                    SIPTAG_RETRY_AFTER_STR("60"), TAG_END());
        } else {
                char exp[24];
                snprintf(exp, sizeof exp, "%llu", (unsigned long long)(op->expires_ms / 1000));
                switch (op->kind) {
                case OP_NEW:
                        stats_inc(p->count.publish_new);
                        log_info("New publication '%s' of '%s' for %ss.", op->etag, op->key, exp);
                        break;
                case OP_REFRESH:
                        stats_inc(p->count.publish_refresh);
                        break;
                case OP_MODIFY:
                        stats_inc(p->count.publish_modify);
                        break;
                default:
                        stats_inc(p->count.publish_remove);
                        log_info("Publication '%s' of '%s' removed.", op->if_match, op->key);
                        break;
                }
                nta_incoming_treply(
                        op->irq, SIP_200_OK,
                        SIPTAG_ETAG_STR(op->kind == OP_REMOVE ? op->if_match : op->etag),
                        SIPTAG_EXPIRES_STR(exp), TAG_END());
                struct presentity *pr = presentity_get(p, op->key, false);
                if (pr)
                        sync_presentity(pr, rep);
        }
        publish_done(op);
}

int shared_publish(struct presence *p, nta_incoming_t *irq, const char *key, const char *if_match,
                   xmlDocPtr doc, uint64_t expires_ms) {
        enum op_kind kind = !if_match         ? OP_NEW
                            : expires_ms == 0 ? OP_REMOVE
                            : doc             ? OP_MODIFY
                                              : OP_REFRESH;
        size_t doc_len = 0;
        _cleanup_free_ char *text = NULL;
        if (doc && kind != OP_REMOVE)
                text = xml_to_string(doc, &doc_len);
        xmlFreeDoc(doc);
        size_t n = strlen(key) + 1;
        struct publish_op *op = calloc(1, sizeof *op + n);
        if (!op || ((kind == OP_NEW || kind == OP_MODIFY) && !text) ||
            (if_match && !(op->if_match = strdup(if_match)))) {
                if (op)
                        free(op->if_match);
                free(op);
                stats_inc(p->count.publish_rejected);
                return 500;
        }
        op->p = p;
        op->irq = irq;
        op->kind = kind;
        op->expires_ms = expires_ms;
        memcpy(op->key, key, n);
        new_etag(p, op->etag, sizeof op->etag);
        int r = run_script(p, on_publish, op, kind, key, op->etag, if_match, expires_ms, text,
                           doc_len);
        if (r < 0) {
                reply_unavailable(op, r == -ENOTCONN ? "unreachable" : strerror(-r));
                free(op->if_match);
                free(op);
                return 503;
        }
        return 0; /* answered by on_publish() */
}

/* ---- life cycle ---- */

static void on_link_state(struct redis *r, enum redis_link link, bool up, int error,
                          const char *reason, void *userdata) {
        struct presence *p = userdata;
        if (!up) {
                log_warning("Redis %s link down: %s.", redis_link_name(link), strna(reason));
                return;
        }
        log_notice("Redis %s link up: presence state shared.", redis_link_name(link));
        if (link != REDIS_LINK_COMMAND)
                return;
        /* Reads that failed meanwhile (a change announced on the pub/sub link while the
         * command link was down, or the pub/sub link back first) are made now. */
        for (size_t i = 0; i < p->n_buckets; i++)
                for (struct presentity *pr = p->buckets[i]; pr; pr = pr->hnext)
                        if (pr->stale)
                                load(pr);
}

static uint64_t gauge_connected(void *userdata) {
        struct presence *p = userdata;
        return p->redis && redis_is_connected(p->redis);
}

int shared_start(struct presence *p) {
        const struct presence_config *c = &p->config;
        unsigned char rnd[8];
        if (RAND_bytes(rnd, sizeof rnd) != 1)
                return log_error_errno(EIO, "Cannot draw this server's id.");
        for (size_t i = 0; i < sizeof rnd; i++)
                snprintf(p->origin + 2 * i, 3, "%02x", rnd[i]);
        struct redis_config rc = {
                .host = c->redis_host,
                .port = (uint16_t)c->redis_port,
                .password = isempty(c->redis_password) ? NULL : c->redis_password,
                .client_name = "sipfleet-presence",
                .command_timeout_ms = c->redis_command_timeout_ms,
        };
        int r = redis_new(daemon_loop(p->daemon), &rc, &p->redis);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the Redis client: %m");
        redis_set_state_callback(p->redis, on_link_state, p);
        stats_declare_gauge(daemon_stats(p->daemon), "presence", "redis-connected",
                            "1 when the Redis command link is up (shared state)", gauge_connected,
                            p);
        log_notice("Presence state shared through Redis at %s:%lld, keys '%s<user>@<host>'.",
                   c->redis_host, (long long)c->redis_port, strempty(c->redis_prefix));
        return 0;
}

void shared_free(struct presence *p) {
        struct redis *r = p->redis;
        if (!r)
                return;
        p->redis = NULL; /* the callbacks run from redis_free() see it closing */
        for (size_t i = 0; i < p->n_buckets; i++)
                for (struct presentity *pr = p->buckets[i]; pr; pr = pr->hnext)
                        pr->channel = false;
        redis_free(r);
}
