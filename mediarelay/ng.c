/* SPDX-License-Identifier: MIT */
/* The NG control protocol: "<cookie> <bencoded dict>" in one UDP datagram, answered with
 * "<cookie> <bencoded dict>". Commands: ping, offer, answer, delete, query, list. Every
 * datagram gets an answer: malformed input is {"result": "error", "error-reason": "..."}.
 *
 * Keys read: command, call-id, from-tag, to-tag, sdp, flags (list: "strict-source",
 * "media-handover" and "asymmetric" set how the sender's source is latched; others such as
 * "trust-address" or "symmetric" are accepted), replace (list: "origin" rewrites the
 * o= address; "session-connection" is what the relay always does to c=), ICE ("remove",
 * "force", "default"; "force-relay" = force, "optional" = default), direction (a list of
 * interface names, accepted: one interface), transport-protocol (RTP/AVP, RTP/SAVP, RTP/AVPF,
 * RTP/SAVPF), rtcp-mux (list: "offer", "demux", "accept", "reject", "require"), SDES (list,
 * accepted), received-from (list, accepted: latching learns the real address), limit (list). */
#define LOG_SUBSYSTEM LOG_media
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bencode.h"
#include "log.h"
#include "mediarelay.h"
#include "stats.h"

#define NG_MAX_COOKIE 256
#define NG_LIST_DEFAULT 32

struct ng_request {
        struct bencode *dict;
        const char *command, *call_id, *from_tag, *to_tag;
        const struct bencode *sdp;
        struct ng_opts opts;
        char error[256];
};

_printf_(2, 3) static int ng_fail(struct ng_request *q, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(q->error, sizeof(q->error), fmt, ap);
        va_end(ap);
        return -EINVAL;
}

/* A string value without NUL bytes, or NULL (with an error) when present but not one. */
static int get_text(struct ng_request *q, const char *key, const char **ret) {
        struct bencode *v = bencode_dict_get(q->dict, key);
        *ret = NULL;
        if (!v)
                return 0;
        if (v->type != BENCODE_STRING || strlen(v->s) != v->len)
                return ng_fail(q, "'%s' must be a string", key);
        *ret = v->s;
        return 0;
}

static int get_list(struct ng_request *q, const char *key, struct bencode **ret) {
        struct bencode *v = bencode_dict_get(q->dict, key);
        *ret = NULL;
        if (!v)
                return 0;
        if (v->type != BENCODE_LIST)
                return ng_fail(q, "'%s' must be a list", key);
        for (struct bencode *i = v->first; i; i = i->next)
                if (i->type != BENCODE_STRING)
                        return ng_fail(q, "'%s' must be a list of strings", key);
        *ret = v;
        return 0;
}

static int parse_media_opts(struct ng_request *q) {
        struct bencode *l;
        const char *s;
        int r;

        if ((r = get_list(q, "direction", &l)) < 0 || (r = get_list(q, "received-from", &l)) < 0 ||
            (r = get_list(q, "SDES", &l)) < 0)
                return r;
        r = get_list(q, "flags", &l);
        if (r < 0)
                return r;
        for (struct bencode *i = l ? l->first : NULL; i; i = i->next) {
                if (bencode_is_str(i, "strict-source"))
                        q->opts.latch = LATCH_STRICT;
                else if (bencode_is_str(i, "media-handover"))
                        q->opts.latch = LATCH_HANDOVER;
                else if (bencode_is_str(i, "asymmetric"))
                        q->opts.latch = LATCH_ASYMMETRIC;
                /* others ("trust-address", "symmetric", "port-latching"...) are accepted: the
                 * relay always uses the SDP address first and latches */
        }
        r = get_list(q, "replace", &l);
        if (r < 0)
                return r;
        for (struct bencode *i = l ? l->first : NULL; i; i = i->next)
                if (bencode_is_str(i, "origin"))
                        q->opts.replace_origin = true;
        r = get_text(q, "ICE", &s);
        if (r < 0)
                return r;
        if (!s || streq(s, "default") || streq(s, "optional"))
                q->opts.ice = NG_ICE_DEFAULT;
        else if (streq(s, "remove"))
                q->opts.ice = NG_ICE_REMOVE;
        else if (streq(s, "force") || streq(s, "force-relay"))
                q->opts.ice = NG_ICE_FORCE;
        else
                return ng_fail(q, "Unknown ICE option '%.40s'", s);
        r = get_text(q, "transport-protocol", &s);
        if (r < 0)
                return r;
        if (s) {
                static const char *const known[] = {"RTP/AVP", "RTP/SAVP", "RTP/AVPF",
                                                    "RTP/SAVPF", NULL};
                const char *const *k;
                for (k = known; *k && !streq(*k, s); k++)
                        ;
                if (!*k) {
                        if (strstr(s, "UDP/TLS"))
                                return ng_fail(q, "DTLS-SRTP is not supported");
                        return ng_fail(q, "Unknown transport-protocol '%.40s'", s);
                }
                q->opts.transport = *k;
        }
        r = get_list(q, "rtcp-mux", &l);
        if (r < 0)
                return r;
        for (struct bencode *i = l ? l->first : NULL; i; i = i->next) {
                if (bencode_is_str(i, "offer"))
                        q->opts.mux_offer = true;
                else if (bencode_is_str(i, "demux"))
                        q->opts.mux_demux = true;
                else if (bencode_is_str(i, "reject"))
                        q->opts.mux_reject = true;
                else if (bencode_is_str(i, "require"))
                        q->opts.mux_require = true;
                /* "accept": the relay accepts rtcp-mux whenever offered */
        }
        return 0;
}

static int need(struct ng_request *q, const char *key, const char **ret) {
        int r = get_text(q, key, ret);
        if (r < 0)
                return r;
        if (!*ret || !**ret)
                return ng_fail(q, "No '%s' in the message", key);
        return 0;
}

static int need_sdp(struct ng_request *q) {
        struct bencode *v = bencode_dict_get(q->dict, "sdp");
        if (!v)
                return ng_fail(q, "No 'sdp' in the message");
        if (v->type != BENCODE_STRING)
                return ng_fail(q, "'sdp' must be a string");
        q->sdp = v;
        return 0;
}

static int cmd_offer(struct mediarelay *m, struct ng_request *q, struct bencode *reply) {
        struct call *c;
        struct leg *from, *to;
        bool created = false;
        char *out = NULL;
        int r;

        if ((r = need(q, "call-id", &q->call_id)) < 0 || (r = need(q, "from-tag", &q->from_tag)) < 0 ||
            (r = need_sdp(q)) < 0 || (r = parse_media_opts(q)) < 0)
                return r;
        c = call_find(m, q->call_id);
        if (!c) {
                r = call_new(m, q->call_id, &c);
                if (r == -EUSERS) {
                        stats_inc(m->count_refused);
                        return ng_fail(q, "Too many calls (max-sessions %lld)",
                                       (long long)m->config.max_sessions);
                }
                if (r < 0)
                        return ng_fail(q, "Out of memory");
                created = true;
        }
        from = call_leg_by_tag(c, q->from_tag);
        if (!from) {
                from = !c->legs[0].tag ? &c->legs[0] : !c->legs[1].tag ? &c->legs[1] : NULL;
                if (!from)
                        return ng_fail(q, "Call '%.80s' has two tags already, none is '%.80s'",
                                       q->call_id, q->from_tag);
                if (leg_set_tag(from, q->from_tag) < 0) {
                        if (created)
                                call_delete(m, c);
                        return ng_fail(q, "Out of memory");
                }
        }
        to = from == &c->legs[0] ? &c->legs[1] : &c->legs[0];
        r = sdp_rewrite(m, c, from, to, q->sdp->s, q->sdp->len, &q->opts, true, &out, q->error,
                        sizeof(q->error));
        if (r < 0) {
                if (created)
                        call_delete(m, c);
                if (r == -ENOMEM)
                        ng_fail(q, "Out of memory");
                return r;
        }
        c->last_signal_ms = mono_ms();
        bencode_dict_add_str(reply, "sdp", out);
        free(out);
        log_debug("offer: call '%s' from-tag '%s'", q->call_id, q->from_tag);
        return 0;
}

static int cmd_answer(struct mediarelay *m, struct ng_request *q, struct bencode *reply) {
        struct call *c;
        struct leg *from, *to;
        char *out = NULL;
        int r;

        if ((r = need(q, "call-id", &q->call_id)) < 0 || (r = need(q, "from-tag", &q->from_tag)) < 0 ||
            (r = need(q, "to-tag", &q->to_tag)) < 0 || (r = need_sdp(q)) < 0 ||
            (r = parse_media_opts(q)) < 0)
                return r;
        c = call_find(m, q->call_id);
        if (!c)
                return ng_fail(q, "Unknown call-id");
        from = call_leg_by_tag(c, q->from_tag);
        if (!from)
                return ng_fail(q, "Unknown from-tag");
        if (streq(q->from_tag, q->to_tag))
                return ng_fail(q, "to-tag equals from-tag");
        to = from == &c->legs[0] ? &c->legs[1] : &c->legs[0];
        /* A later answer from another fork replaces the answerer's tag. */
        if (leg_set_tag(to, q->to_tag) < 0)
                return ng_fail(q, "Out of memory");
        r = sdp_rewrite(m, c, to, from, q->sdp->s, q->sdp->len, &q->opts, false, &out, q->error,
                        sizeof(q->error));
        if (r < 0) {
                if (r == -ENOMEM)
                        ng_fail(q, "Out of memory");
                return r;
        }
        c->last_signal_ms = mono_ms();
        bencode_dict_add_str(reply, "sdp", out);
        free(out);
        log_debug("answer: call '%s' to-tag '%s'", q->call_id, q->to_tag);
        return 0;
}

static void merge(struct bencode *reply, struct bencode *d) {
        if (!d) {
                reply->failed = true;
                return;
        }
        /* move d's entries into reply */
        for (struct bencode *k = d->first; k;) {
                struct bencode *next = k->next;
                k->next = NULL;
                if (reply->last)
                        reply->last->next = k;
                else
                        reply->first = k;
                reply->last = k;
                reply->n++;
                k = next;
        }
        if (d->failed)
                reply->failed = true;
        d->first = d->last = NULL;
        bencode_free(d);
}

static int find_call(struct mediarelay *m, struct ng_request *q, struct call **ret) {
        int r = need(q, "call-id", &q->call_id);
        if (r < 0)
                return r;
        *ret = call_find(m, q->call_id);
        if (!*ret)
                return ng_fail(q, "Unknown call-id");
        return 0;
}

static int cmd_delete(struct mediarelay *m, struct ng_request *q, struct bencode *reply) {
        struct call *c;
        const char *tag;
        int r;

        if ((r = find_call(m, q, &c)) < 0 || (r = get_text(q, "from-tag", &tag)) < 0)
                return r;
        if (!isempty(tag) && !call_leg_by_tag(c, tag))
                return ng_fail(q, "Unknown from-tag");
        merge(reply, call_to_bencode(c));
        log_debug("delete: call '%s'", q->call_id);
        call_delete(m, c);
        return 0;
}

static int cmd_query(struct mediarelay *m, struct ng_request *q, struct bencode *reply) {
        struct call *c;
        int r = find_call(m, q, &c);
        if (r < 0)
                return r;
        merge(reply, call_to_bencode(c));
        return 0;
}

static int cmd_list(struct mediarelay *m, struct ng_request *q, struct bencode *reply) {
        struct bencode *lim = bencode_dict_get(q->dict, "limit"), *calls;
        int64_t limit = NG_LIST_DEFAULT, n = 0;

        if (lim) {
                if (lim->type == BENCODE_INT)
                        limit = lim->i;
                else if (lim->type == BENCODE_STRING) {
                        char *end;
                        limit = strtoll(lim->s, &end, 10);
                        if (*end || !lim->len)
                                return ng_fail(q, "'limit' must be a number");
                } else
                        return ng_fail(q, "'limit' must be a number");
                if (limit < 0)
                        return ng_fail(q, "'limit' must not be negative");
        }
        calls = bencode_dict_add(reply, "calls", bencode_new_list());
        for (size_t b = 0; b < m->n_buckets && n < limit; b++)
                for (struct call *c = m->buckets[b]; c && n < limit; c = c->next, n++)
                        bencode_list_add(calls, bencode_new_str(c->call_id));
        return 0;
}

static int dispatch(struct mediarelay *m, struct ng_request *q, struct bencode *reply) {
        if (streq(q->command, "ping")) {
                bencode_dict_add_str(reply, "result", "pong");
                return 0;
        }
        bencode_dict_add_str(reply, "result", "ok");
        if (streq(q->command, "offer"))
                return cmd_offer(m, q, reply);
        if (streq(q->command, "answer"))
                return cmd_answer(m, q, reply);
        if (streq(q->command, "delete"))
                return cmd_delete(m, q, reply);
        if (streq(q->command, "query"))
                return cmd_query(m, q, reply);
        if (streq(q->command, "list"))
                return cmd_list(m, q, reply);
        return ng_fail(q, "Unrecognized command '%.40s'", q->command);
}

static int make_reply(const char *cookie, size_t cookie_len, struct bencode *dict, char **ret,
                      size_t *ret_len) {
        char *body = NULL, *out;
        size_t body_len;
        int r = bencode_encode(dict, &body, &body_len);
        if (r < 0)
                return r;
        out = malloc(cookie_len + 1 + body_len + 1);
        if (!out) {
                free(body);
                return -ENOMEM;
        }
        memcpy(out, cookie, cookie_len);
        out[cookie_len] = ' ';
        memcpy(out + cookie_len + 1, body, body_len);
        out[cookie_len + 1 + body_len] = 0;
        free(body);
        *ret = out;
        *ret_len = cookie_len + 1 + body_len;
        return 0;
}

static uint64_t hash_bytes(const void *buf, size_t len) {
        const unsigned char *p = buf;
        uint64_t h = 1469598103934665603ULL;
        for (size_t i = 0; i < len; i++)
                h = (h ^ p[i]) * 1099511628211ULL;
        return h;
}

/* The slot is chosen by the cookie; the entry matches only the very same datagram. */
static struct ng_cache_entry *cache_slot(struct mediarelay *m, const void *buf, size_t len,
                                         size_t cookie_len, uint64_t *hash) {
        if (!m->ng_cache && !(m->ng_cache = calloc(NG_CACHE_SLOTS, sizeof(*m->ng_cache))))
                return NULL;
        *hash = hash_bytes(buf, len);
        return &m->ng_cache[hash_bytes(buf, cookie_len) % NG_CACHE_SLOTS];
}

void ng_cache_free(struct mediarelay *m) {
        for (size_t i = 0; m->ng_cache && i < NG_CACHE_SLOTS; i++)
                free(m->ng_cache[i].reply);
        free(m->ng_cache);
        m->ng_cache = NULL;
}

static int ng_process_one(struct mediarelay *m, const void *buf, size_t len, char **reply,
                          size_t *reply_len);

int ng_process(struct mediarelay *m, const void *buf, size_t len, char **reply,
               size_t *reply_len) {
        const char *sp = memchr(buf, ' ', MIN(len, NG_MAX_COOKIE + 1));
        struct ng_cache_entry *e = NULL;
        uint64_t hash = 0, now = mono_ms();
        int r;

        if (sp && sp > (const char *)buf) {
                e = cache_slot(m, buf, len, (size_t)(sp - (const char *)buf), &hash);
                if (e && e->reply && e->hash == hash && e->request_len == len &&
                    now - e->at_ms < NG_CACHE_TTL_MS) {
                        *reply = malloc(e->reply_len + 1);
                        if (!*reply)
                                return -ENOMEM;
                        memcpy(*reply, e->reply, e->reply_len + 1);
                        *reply_len = e->reply_len;
                        stats_inc(m->count_ng_retransmissions);
                        return 0;
                }
        }
        r = ng_process_one(m, buf, len, reply, reply_len);
        if (r >= 0 && e && *reply_len <= NG_CACHE_MAX_REPLY) {
                char *copy = malloc(*reply_len + 1);
                if (copy) {
                        memcpy(copy, *reply, *reply_len + 1);
                        free(e->reply);
                        *e = (struct ng_cache_entry){.hash = hash,
                                                     .request_len = len,
                                                     .at_ms = now,
                                                     .reply = copy,
                                                     .reply_len = *reply_len};
                }
        }
        return r;
}

static int ng_process_one(struct mediarelay *m, const void *buf, size_t len, char **reply,
                          size_t *reply_len) {
        const char *p = buf, *sp = memchr(p, ' ', MIN(len, NG_MAX_COOKIE + 1));
        size_t cookie_len = sp ? (size_t)(sp - p) : 0;
        struct ng_request q = {0};
        struct bencode *out = NULL;
        struct bencode_limits limits = {.max_depth = 8, .max_items = 4096};
        int r;

        *reply = NULL;
        if (!sp) {
                ng_fail(&q, len > NG_MAX_COOKIE ? "Cookie longer than %d bytes"
                                                : "No cookie: the message must be "
                                                  "'<cookie> <bencoded dictionary>'",
                        NG_MAX_COOKIE);
                r = -EINVAL;
                goto error;
        }
        {
                struct bencode_error berr;
                size_t used = 0;
                size_t blen = len - cookie_len - 1;
                r = bencode_decode(sp + 1, blen, &limits, &q.dict, &used, &berr);
                if (r < 0) {
                        ng_fail(&q, "Malformed bencode at offset %zu: %s", berr.offset, berr.msg);
                        goto error;
                }
                if (used != blen) {
                        r = ng_fail(&q, "Trailing data after the message");
                        goto error;
                }
        }
        if (q.dict->type != BENCODE_DICT) {
                r = ng_fail(&q, "The message is not a dictionary");
                goto error;
        }
        r = get_text(&q, "command", &q.command);
        if (r < 0)
                goto error;
        if (isempty(q.command)) {
                r = ng_fail(&q, "No 'command' in the message");
                goto error;
        }
        out = bencode_new_dict();
        if (!out) {
                r = -ENOMEM;
                goto finish;
        }
        r = dispatch(m, &q, out);
        if (r < 0)
                goto error;
        mr_count_ng(m, q.command, false);
        r = make_reply(p, cookie_len, out, reply, reply_len);
        goto finish;
error:
        mr_count_ng(m, q.command, true);
        log_warning_ratelimited("NG %s%s%s%s: %s", strempty(q.command), q.call_id ? " call '" : "",
                                strempty(q.call_id), q.call_id ? "'" : "", q.error);
        bencode_free(out);
        out = bencode_new_dict();
        bencode_dict_add_str(out, "result", "error");
        bencode_dict_add_str(out, "error-reason", q.error[0] ? q.error : "Out of memory");
        r = make_reply(p, cookie_len, out, reply, reply_len);
finish:
        bencode_free(out);
        bencode_free(q.dict);
        return r;
}
