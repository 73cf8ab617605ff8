/* SPDX-License-Identifier: MIT */
/* Calls, legs and streams: the table by Call-ID, port and worker assignment, teardown through
 * the graveyard, and the views for NG query and the control socket. */
#define LOG_SUBSYSTEM LOG_media
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bencode.h"
#include "log.h"
#include "loop.h"
#include "mediarelay.h"

static size_t hash_str(const char *s) {
        uint64_t h = 1469598103934665603ULL;
        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * 1099511628211ULL;
        return (size_t)h;
}

struct call *call_find(struct mediarelay *m, const char *call_id) {
        for (struct call *c = m->buckets[hash_str(call_id) % m->n_buckets]; c; c = c->next)
                if (streq(c->call_id, call_id))
                        return c;
        return NULL;
}

int call_new(struct mediarelay *m, const char *call_id, struct call **ret) {
        struct call *c;
        size_t b;

        if (m->n_calls >= (size_t)m->config.max_sessions)
                return -EUSERS;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->call_id = strdup(call_id);
        if (!c->call_id) {
                free(c);
                return -ENOMEM;
        }
        c->legs[0].call = c->legs[1].call = c;
        /* the least loaded worker */
        c->worker = m->workers[0];
        for (unsigned i = 1; i < m->n_workers; i++)
                if (m->workers[i]->n_calls < c->worker->n_calls)
                        c->worker = m->workers[i];
        c->worker->n_calls++;
        c->created_ms = realtime_msec();
        c->last_signal_ms = mono_ms();
        b = hash_str(call_id) % m->n_buckets;
        c->next = m->buckets[b];
        m->buckets[b] = c;
        m->n_calls++;
        *ret = c;
        return 0;
}

void call_lock(struct call *c) {
        pthread_mutex_lock(&c->worker->lock);
}

void call_unlock(struct call *c) {
        pthread_mutex_unlock(&c->worker->lock);
}

struct leg *call_leg_by_tag(struct call *c, const char *tag) {
        for (int i = 0; i < 2; i++)
                if (c->legs[i].tag && streq(c->legs[i].tag, tag))
                        return &c->legs[i];
        return NULL;
}

int leg_set_tag(struct leg *l, const char *tag) {
        char *t;
        if (l->tag && streq(l->tag, tag))
                return 0;
        t = strdup(tag);
        if (!t)
                return -ENOMEM;
        free(l->tag);
        l->tag = t;
        return 0;
}

static void stream_free(struct mediarelay *m, struct stream *s) {
        if (!s)
                return;
        ports_release(m, &s->rtp, &s->rtcp);
        stream_srtp_free(s);
        free(s);
}

static int stream_new(struct mediarelay *m, struct leg *l, unsigned index, struct stream **ret) {
        struct stream *s = calloc(1, sizeof(*s));
        int r;

        if (!s)
                return -ENOMEM;
        s->rtp.fd = s->rtcp.fd = -1;
        r = ports_alloc(m, &s->rtp, &s->rtcp);
        if (r < 0) {
                free(s);
                return r;
        }
        s->rtp.stream = s->rtcp.stream = s;
        s->rtcp.rtcp = true;
        s->leg = l;
        s->index = index;
        s->crypto_local.suite = s->crypto_remote.suite = -1;
        random_token(s->ice_ufrag, MR_ICE_UFRAG_LEN);
        random_token(s->ice_pwd, MR_ICE_PWD_LEN);
        *ret = s;
        return 0;
}

int call_ensure_media(struct mediarelay *m, struct call *c, unsigned i) {
        struct stream *a = NULL, *b = NULL;
        int r;

        if (i >= MR_MAX_MEDIA)
                return -E2BIG;
        if (c->legs[0].media[i] && c->legs[1].media[i])
                return 0;
        r = stream_new(m, &c->legs[0], i, &a);
        if (r < 0)
                return r;
        r = stream_new(m, &c->legs[1], i, &b);
        if (r < 0) {
                stream_free(m, a);
                return r;
        }
        a->other = b;
        b->other = a;
        if ((r = worker_add(c->worker, &a->rtp)) < 0 || (r = worker_add(c->worker, &a->rtcp)) < 0 ||
            (r = worker_add(c->worker, &b->rtp)) < 0 || (r = worker_add(c->worker, &b->rtcp)) < 0) {
                call_lock(c);
                a->dead = b->dead = true;
                worker_remove(c->worker, &a->rtp);
                worker_remove(c->worker, &a->rtcp);
                worker_remove(c->worker, &b->rtp);
                worker_remove(c->worker, &b->rtcp);
                call_unlock(c);
                /* The worker may still hold an event for them: they are freed with the call,
                 * after the graveyard wait, like every other stream. */
                c->legs[0].media[i] = a;
                c->legs[1].media[i] = b;
                return r;
        }
        call_lock(c);
        c->legs[0].media[i] = a;
        c->legs[1].media[i] = b;
        for (int l = 0; l < 2; l++)
                if (c->legs[l].n_media < i + 1)
                        c->legs[l].n_media = i + 1;
        call_unlock(c);
        return 0;
}

void call_delete(struct mediarelay *m, struct call *c) {
        struct call **p = &m->buckets[hash_str(c->call_id) % m->n_buckets];

        while (*p && *p != c)
                p = &(*p)->next;
        if (*p)
                *p = c->next;
        call_lock(c);
        for (int l = 0; l < 2; l++)
                for (unsigned i = 0; i < MR_MAX_MEDIA; i++) {
                        struct stream *s = c->legs[l].media[i];
                        if (!s)
                                continue;
                        s->dead = true;
                        worker_remove(c->worker, &s->rtp);
                        worker_remove(c->worker, &s->rtcp);
                }
        c->dead_epoch = atomic_load(&c->worker->epoch);
        call_unlock(c);
        c->worker->n_calls--;
        m->n_calls--;
        c->next = m->graveyard;
        m->graveyard = c;
}

static void call_free(struct mediarelay *m, struct call *c) {
        for (int l = 0; l < 2; l++) {
                for (unsigned i = 0; i < MR_MAX_MEDIA; i++)
                        stream_free(m, c->legs[l].media[i]);
                free(c->legs[l].tag);
        }
        free(c->call_id);
        free(c);
}

void call_reap(struct mediarelay *m, bool all) {
        struct call **p = &m->graveyard;
        while (*p) {
                struct call *c = *p;
                if (all || atomic_load(&c->worker->epoch) > c->dead_epoch) {
                        *p = c->next;
                        call_free(m, c);
                } else
                        p = &c->next;
        }
}

uint64_t call_last_activity(struct call *c) {
        uint64_t last = c->last_signal_ms;
        for (int l = 0; l < 2; l++)
                for (unsigned i = 0; i < c->legs[l].n_media; i++) {
                        struct stream *s = c->legs[l].media[i];
                        if (!s)
                                continue;
                        last = MAX(last, atomic_load_explicit(&s->rtp.last_rx_ms,
                                                              memory_order_relaxed));
                        last = MAX(last, atomic_load_explicit(&s->rtcp.last_rx_ms,
                                                              memory_order_relaxed));
                }
        return last;
}

uint64_t call_idle_ms(struct call *c, uint64_t now) {
        uint64_t last = call_last_activity(c);
        /* A packet thread may stamp a packet after the caller read its clock: not idle. */
        return last < now ? now - last : 0;
}

int stream_set_signalled(struct stream *s, bool rtcp, const char *addr, unsigned port) {
        struct rsock *rs = rtcp ? &s->rtcp : &s->rtp;
        struct sockaddr_storage sa = {0};
        socklen_t len = 0;
        struct sockaddr_in *sin = (struct sockaddr_in *)&sa;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&sa;

        if (addr && port > 0 && port < 65536) {
                if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1 && sin->sin_addr.s_addr != 0) {
                        sin->sin_family = AF_INET;
                        sin->sin_port = htons((uint16_t)port);
                        len = sizeof(*sin);
                } else if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1 &&
                           !IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr)) {
                        sin6->sin6_family = AF_INET6;
                        sin6->sin6_port = htons((uint16_t)port);
                        len = sizeof(*sin6);
                }
        }
        /* A new signalled address (the party moved, or took the call off hold) starts a new
         * latching; the same one keeps what was learnt. */
        if (len == rs->signalled_len && (len == 0 || memcmp(&sa, &rs->signalled, len) == 0))
                return 0;
        rs->signalled = sa;
        rs->signalled_len = len;
        rs->peer = sa;
        rs->peer_len = len;
        rs->latched = false;
        return len ? 0 : -EINVAL;
}

static uint64_t stream_lost(const struct stream_stats *st) {
        if (!st->seq_init)
                return 0;
        uint64_t expected = (uint64_t)st->cycles * 65536 + st->max_seq - st->base_seq + 1;
        return expected > st->received ? expected - st->received : 0;
}

static void format_addr(const struct sockaddr_storage *sa, socklen_t len, char *ip, size_t iplen,
                        unsigned *port) {
        *port = 0;
        ip[0] = 0;
        if (!len)
                return;
        if (sa->ss_family == AF_INET) {
                const struct sockaddr_in *s = (const void *)sa;
                inet_ntop(AF_INET, &s->sin_addr, ip, (socklen_t)iplen);
                *port = ntohs(s->sin_port);
        } else if (sa->ss_family == AF_INET6) {
                const struct sockaddr_in6 *s = (const void *)sa;
                inet_ntop(AF_INET6, &s->sin6_addr, ip, (socklen_t)iplen);
                *port = ntohs(s->sin6_port);
        }
}

static json_t *rsock_peer_json(const struct rsock *rs) {
        char ip[INET6_ADDRSTRLEN], buf[INET6_ADDRSTRLEN + 16];
        unsigned port;
        format_addr(&rs->peer, rs->peer_len, ip, sizeof(ip), &port);
        if (!port)
                return json_null();
        snprintf(buf, sizeof(buf), strchr(ip, ':') ? "[%s]:%u" : "%s:%u", ip, port);
        return json_string(buf);
}

json_t *call_to_json(struct call *c, bool details) {
        json_t *legs = json_array();
        uint64_t packets = 0, bytes = 0;

        call_lock(c);
        for (int l = 0; l < 2; l++) {
                struct leg *leg = &c->legs[l];
                json_t *media = json_array();
                for (unsigned i = 0; i < leg->n_media; i++) {
                        struct stream *s = leg->media[i];
                        if (!s)
                                continue;
                        packets += s->stats.packets + s->stats.rtcp_packets;
                        bytes += s->stats.bytes + s->stats.rtcp_bytes;
                        if (!details)
                                continue;
                        json_array_append_new(
                                media,
                                json_pack("{s:i,s:i,s:i,s:o,s:o,s:b,s:b,s:b,s:b,s:I,s:I,s:I,s:I,"
                                          "s:I,s:I,s:I,s:I}",
                                          "index", (int)i, "rtp-port", s->rtp.port, "rtcp-port",
                                          s->rtcp.port, "peer", rsock_peer_json(&s->rtp),
                                          "rtcp-peer", rsock_peer_json(&s->rtcp), "latched",
                                          s->rtp.latched, "rtcp-mux", s->mux, "srtp", s->srtp,
                                          "ice", s->ice, "packets", (json_int_t)s->stats.packets,
                                          "bytes", (json_int_t)s->stats.bytes, "errors",
                                          (json_int_t)s->stats.errors, "lost",
                                          (json_int_t)stream_lost(&s->stats), "rtcp-packets",
                                          (json_int_t)s->stats.rtcp_packets, "forwarded",
                                          (json_int_t)s->stats.forwarded, "foreign",
                                          (json_int_t)s->stats.foreign, "stun",
                                          (json_int_t)s->stats.stun));
                }
                if (details)
                        json_array_append_new(legs, json_pack("{s:s?,s:o}", "tag", leg->tag,
                                                              "media", media));
                else {
                        json_decref(media);
                        json_array_append_new(legs, leg->tag ? json_string(leg->tag)
                                                              : json_null());
                }
        }
        call_unlock(c);
        return json_pack("{s:s,s:I,s:I,s:o,s:I,s:I}", "call-id", c->call_id, "created",
                         (json_int_t)(c->created_ms / 1000), "idle-ms",
                         (json_int_t)call_idle_ms(c, mono_ms()), details ? "legs" : "tags",
                         legs, "packets", (json_int_t)packets, "bytes", (json_int_t)bytes);
}

static struct bencode *endpoint_bencode(const struct rsock *rs) {
        char ip[INET6_ADDRSTRLEN];
        unsigned port;
        struct bencode *d = bencode_new_dict();
        format_addr(&rs->peer, rs->peer_len, ip, sizeof(ip), &port);
        bencode_dict_add_str(d, "family", strchr(ip, ':') ? "IPv6" : "IPv4");
        bencode_dict_add_str(d, "address", ip);
        bencode_dict_add_int(d, "port", port);
        return d;
}

static struct bencode *stats_bencode(uint64_t packets, uint64_t bytes, uint64_t errors,
                                     uint64_t lost) {
        struct bencode *d = bencode_new_dict();
        bencode_dict_add_int(d, "packets", (int64_t)packets);
        bencode_dict_add_int(d, "bytes", (int64_t)bytes);
        bencode_dict_add_int(d, "errors", (int64_t)errors);
        bencode_dict_add_int(d, "lost", (int64_t)lost);
        return d;
}

/* The NG query view: created, last signal, tags (per leg: medias, streams with local port,
 * endpoint and stats) and totals for RTP and RTCP. */
struct bencode *call_to_bencode(struct call *c) {
        struct bencode *d = bencode_new_dict(), *tags;
        uint64_t rtp[4] = {0}, rtcp[4] = {0};
        uint64_t now_rt = realtime_msec(), now = mono_ms();

        bencode_dict_add_int(d, "created", (int64_t)(c->created_ms / 1000));
        bencode_dict_add_int(d, "last signal",
                             (int64_t)((now_rt - (now - c->last_signal_ms)) / 1000));
        tags = bencode_dict_add(d, "tags", bencode_new_dict());
        call_lock(c);
        for (int l = 0; l < 2; l++) {
                struct leg *leg = &c->legs[l];
                if (!leg->tag)
                        continue;
                struct bencode *t = bencode_dict_add(tags, leg->tag, bencode_new_dict());
                bencode_dict_add_str(t, "tag", leg->tag);
                struct bencode *medias = bencode_dict_add(t, "medias", bencode_new_list());
                for (unsigned i = 0; i < leg->n_media; i++) {
                        struct stream *s = leg->media[i];
                        if (!s)
                                continue;
                        uint64_t lost = stream_lost(&s->stats);
                        struct bencode *md = bencode_list_add(medias, bencode_new_dict());
                        bencode_dict_add_int(md, "index", i + 1);
                        bencode_dict_add_str(md, "protocol", s->srtp ? "RTP/SAVP" : "RTP/AVP");
                        struct bencode *streams = bencode_dict_add(md, "streams", bencode_new_list());
                        struct bencode *st = bencode_list_add(streams, bencode_new_dict());
                        bencode_dict_add_int(st, "local port", s->rtp.port);
                        bencode_dict_add(st, "endpoint", endpoint_bencode(&s->rtp));
                        bencode_dict_add(st, "stats", stats_bencode(s->stats.packets, s->stats.bytes,
                                                                    s->stats.errors, lost));
                        st = bencode_list_add(streams, bencode_new_dict());
                        bencode_dict_add_int(st, "local port", s->rtcp.port);
                        bencode_dict_add(st, "endpoint", endpoint_bencode(&s->rtcp));
                        bencode_dict_add(st, "stats", stats_bencode(s->stats.rtcp_packets,
                                                                    s->stats.rtcp_bytes, 0, 0));
                        rtp[0] += s->stats.packets;
                        rtp[1] += s->stats.bytes;
                        rtp[2] += s->stats.errors;
                        rtp[3] += lost;
                        rtcp[0] += s->stats.rtcp_packets;
                        rtcp[1] += s->stats.rtcp_bytes;
                }
        }
        call_unlock(c);
        struct bencode *totals = bencode_dict_add(d, "totals", bencode_new_dict());
        bencode_dict_add(totals, "RTP", stats_bencode(rtp[0], rtp[1], rtp[2], rtp[3]));
        bencode_dict_add(totals, "RTCP", stats_bencode(rtcp[0], rtcp[1], rtcp[2], rtcp[3]));
        return d;
}
