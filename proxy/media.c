/* SPDX-License-Identifier: MIT */
/* MediaRelay: puts a media relay (sipfleet-mediarelay, or rtpengine: both speak NG, bencode over
 * UDP) in the media path of the calls the proxy relays.
 *
 * - An INVITE or UPDATE with SDP (each branch of a fork, in-dialog ones too) is suspended while
 *   the relay answers an NG `offer`; its SDP is replaced by the relay's, and the request goes
 *   on to Forward. A 18x/2xx with SDP answering such an offer is held (fork_hooks) while the
 *   relay answers an NG `answer`, then relayed with the relay's SDP. Forked early media: each
 *   18x with its own to-tag gets its `answer`; the relay keeps the latest one.
 * - Late offer: an INVITE without SDP is marked; the 2xx carrying the callee's offer is held
 *   for an NG `offer` (from-tag: the To tag), and the ACK carrying the answer is suspended for
 *   the NG `answer`.
 * - BYE sends `delete`; an initial INVITE whose fork ends without a 2xx (all branches failed,
 *   CANCEL, timeout) too.
 * - Calls stick to their relay (a table by Call-ID), so re-INVITEs keep their ports. A new call
 *   goes to a relay picked by weight from the Call-ID among the healthy ones; a relay that does
 *   not answer (a request or the periodic `ping`) within `timeout` is marked down and the offer
 *   goes to the next one.
 * - The relayed request carries "X-Sipfleet-Media-Relay: yes": a second proxy with this
 *   module on the path leaves such a call alone (and in-dialog requests of calls it does not
 *   know).
 * Nothing blocks: NG requests are datagrams on one socket of the loop; an NG failure lets the
 * message through unchanged (the media then goes direct), logged and counted. */
#define LOG_SUBSYSTEM LOG_media
#include <arpa/inet.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bencode.h"
#include "ctl.h"
#include "daemon.h"
#include "fork.h"
#include "loop.h"
#include "module.h"
#include "proxy.h"
#include "stats.h"

#define MARKER_HEADER "X-Sipfleet-Media-Relay"
#define NG_MAX_DATAGRAM 65536

struct relay {
        char *name; /* host:port as configured */
        struct sockaddr_storage sa;
        socklen_t len;
        unsigned weight;
        bool up;
        bool ping_pending;
        uint64_t calls, timeouts;
};

struct call {
        char *call_id;
        struct call *hnext;             /* bucket */
        struct call *prev, *next;       /* least recently touched first */
        unsigned relay;
        uint32_t offer_cseq;            /* CSeq of the last offer sent to the relay */
        uint32_t late_cseq;             /* CSeq of an INVITE without SDP (late offer), or 0 */
        bool late_offered;              /* its 2xx's offer went to the relay: the ACK answers */
        uint64_t touched;               /* monotonic ms */
};

enum ng_kind { NG_PING, NG_OFFER, NG_ANSWER, NG_DELETE };

struct ng_op;
typedef void (*ng_done_fn)(struct ng_op *op, const struct bencode *reply);

struct ng_op {
        struct media *md;
        struct ng_op *prev, *next;
        enum ng_kind kind;
        char cookie[32];
        char *body; /* the bencoded dictionary */
        size_t body_len;
        unsigned relay;
        uint32_t tried;     /* relays tried (bit per relay) */
        bool failover;      /* may move to another relay on timeout */
        bool retransmitted;
        uint64_t sent_at;
        ng_done_fn done;
        struct proxy_request *req; /* a suspended request (offer, or a late offer's ACK) */
        struct fork_branch *branch; /* a held response (answer, or a late offer) */
        msg_t *msg;
        char *call_id;
};

struct media {
        char **relay_specs;
        uint64_t timeout_ms;
        uint64_t ping_interval_ms;
        int64_t max_calls;
        int64_t max_pending;
        uint64_t call_lifetime_ms;

        struct module *module;
        struct relay *relays;
        size_t n_relays;
        int fd;
        struct loop_io *io;
        struct loop_timer *tick, *ping_timer;
        struct ng_op *ops;
        size_t n_ops;
        unsigned cookie_seq;
        uint32_t cookie_base;
        struct call **buckets;
        size_t n_buckets, n_calls;
        struct call *lru_first, *lru_last;
        char *buf;
        struct fork_hooks hooks;

        struct stats_counter *count_offers, *count_answers, *count_deletes;
        struct stats_counter *count_errors, *count_timeouts, *count_failovers;
        struct stats_counter *count_unrelayed, *count_skipped;
};

#define M(field) offsetof(struct media, field)
static const struct conf_option media_rows[] = {
        {"module::MediaRelay", "relays", CONF_LIST, M(relay_specs), NULL, 0, 0, 0,
         "NG addresses of the media relays (sipfleet-mediarelay or rtpengine), host:port with "
         "an optional ;weight=N (default 1), e.g. '127.0.0.1:2223;weight=2 10.0.0.2:2223'"},
        {"module::MediaRelay", "timeout", CONF_DURATION, M(timeout_ms), "1000ms", 0, 0, 0,
         "An NG request without an answer this long (sent twice) marks its relay down; an offer "
         "then goes to the next relay",
         .unit = CONF_UNIT_MS},
        {"module::MediaRelay", "ping-interval", CONF_DURATION, M(ping_interval_ms), "5s", 0, 0, 0,
         "Health check: every relay gets an NG ping this often; one that answers is up again",
         .unit = CONF_UNIT_S},
        {"module::MediaRelay", "max-calls", CONF_INT, M(max_calls), "10000", 1, 10000000, 0,
         "Calls relayed at once (the Call-ID table); more calls go without a relay"},
        {"module::MediaRelay", "max-pending", CONF_INT, M(max_pending), "1000", 1, 1000000, 0,
         "NG requests waiting for an answer at once; more messages go without a relay"},
        {"module::MediaRelay", "call-lifetime", CONF_DURATION, M(call_lifetime_ms), "24h", 0, 0,
         0,
         "A call without signalling for this long is forgotten (its relay expires it on its own "
         "once its media stops)",
         .unit = CONF_UNIT_MIN},
};

/* ---- the call table ---- */

static size_t hash_str(const char *s) {
        size_t h = 14695981039346656037ULL; /* FNV-1a */
        for (const unsigned char *c = (const unsigned char *)s; *c; c++)
                h = (h ^ *c) * 1099511628211ULL;
        return h;
}

static struct call *call_find(struct media *md, const char *call_id) {
        for (struct call *c = md->buckets[hash_str(call_id) % md->n_buckets]; c; c = c->hnext)
                if (streq(c->call_id, call_id))
                        return c;
        return NULL;
}

static void lru_unlink(struct media *md, struct call *c) {
        if (c->prev)
                c->prev->next = c->next;
        else
                md->lru_first = c->next;
        if (c->next)
                c->next->prev = c->prev;
        else
                md->lru_last = c->prev;
        c->prev = c->next = NULL;
}

static void call_touch(struct media *md, struct call *c) {
        c->touched = now_msec();
        lru_unlink(md, c);
        c->prev = md->lru_last;
        if (md->lru_last)
                md->lru_last->next = c;
        else
                md->lru_first = c;
        md->lru_last = c;
}

static struct call *call_new(struct media *md, const char *call_id, unsigned relay) {
        if (md->n_calls >= (size_t)md->max_calls)
                return NULL;
        struct call *c = calloc(1, sizeof *c);
        if (!c || !(c->call_id = strdup(call_id))) {
                free(c);
                return NULL;
        }
        c->relay = relay;
        size_t j = hash_str(call_id) % md->n_buckets;
        c->hnext = md->buckets[j];
        md->buckets[j] = c;
        md->n_calls++;
        md->relays[relay].calls++;
        call_touch(md, c);
        return c;
}

static void call_free(struct media *md, struct call *c) {
        struct call **pp = &md->buckets[hash_str(c->call_id) % md->n_buckets];
        while (*pp != c)
                pp = &(*pp)->hnext;
        *pp = c->hnext;
        lru_unlink(md, c);
        md->n_calls--;
        if (md->relays[c->relay].calls > 0)
                md->relays[c->relay].calls--;
        free(c->call_id);
        free(c);
}

/* ---- relays ---- */

static int relay_parse(const char *spec, struct relay *r) {
        _cleanup_free_ char *text = strdup(spec);
        if (!text)
                return -ENOMEM;
        unsigned weight = 1;
        char *semi = strchr(text, ';');
        if (semi) {
                *semi = '\0';
                char *end = NULL;
                if (strncmp(semi + 1, "weight=", 7) != 0)
                        return -EINVAL;
                errno = 0;
                unsigned long w = strtoul(semi + 8, &end, 10);
                if (errno || !end || *end || end == semi + 8 || w < 1 || w > 1000)
                        return -EINVAL;
                weight = (unsigned)w;
        }
        struct conf_address a = {0};
        if (conf_parse_address(text, &a) < 0 || a.len == 0 ||
            (a.sa.ss_family != AF_INET && a.sa.ss_family != AF_INET6)) {
                conf_address_done(&a);
                return -EINVAL;
        }
        *r = (struct relay){.sa = a.sa, .len = a.len, .weight = weight, .up = true};
        r->name = TAKE_PTR(a.str);
        conf_address_done(&a);
        return r->name ? 0 : -ENOMEM;
}

/* The relay for a new call (or the next one after a failure): a weighted pick from the
 * Call-ID among the relays not tried yet, healthy ones first. -1 when none is left. */
static int relay_pick(struct media *md, const char *call_id, uint32_t tried) {
        for (int pass = 0; pass < 2; pass++) {
                uint64_t total = 0;
                for (size_t i = 0; i < md->n_relays; i++)
                        if (!(tried & (1u << i)) && (pass || md->relays[i].up))
                                total += md->relays[i].weight;
                if (!total)
                        continue;
                uint64_t x = hash_str(call_id) % total;
                for (size_t i = 0; i < md->n_relays; i++) {
                        if ((tried & (1u << i)) || !(pass || md->relays[i].up))
                                continue;
                        if (x < md->relays[i].weight)
                                return (int)i;
                        x -= md->relays[i].weight;
                }
        }
        return -1;
}

static void relay_set_up(struct media *md, struct relay *r, bool up) {
        if (r->up == up)
                return;
        r->up = up;
        if (up)
                log_notice("Media relay %s answers again.", r->name);
        else
                log_warning("Media relay %s does not answer: marked down.", r->name);
}

/* ---- NG requests ---- */

static void ng_transmit(struct media *md, struct ng_op *op) {
        struct relay *r = &md->relays[op->relay];
        size_t clen = strlen(op->cookie);
        struct iovec iov[3] = {
                {op->cookie, clen},
                {(void *)" ", 1},
                {op->body, op->body_len},
        };
        struct msghdr mh = {.msg_name = &r->sa, .msg_namelen = r->len, .msg_iov = iov,
                            .msg_iovlen = 3};
        if (sendmsg(md->fd, &mh, MSG_DONTWAIT) < 0)
                log_debug("NG request to %s not sent: %m", r->name);
        op->sent_at = now_msec();
}

static void ng_new_cookie(struct media *md, struct ng_op *op) {
        snprintf(op->cookie, sizeof op->cookie, "%08" PRIx32 "_%u", md->cookie_base,
                 ++md->cookie_seq);
}

static void ng_op_free(struct ng_op *op) {
        struct media *md = op->md;
        if (op->prev)
                op->prev->next = op->next;
        else
                md->ops = op->next;
        if (op->next)
                op->next->prev = op->prev;
        md->n_ops--;
        free(op->body);
        free(op->call_id);
        free(op);
        if (!md->ops)
                loop_timer_disarm(md->tick);
}

static void ng_finish(struct ng_op *op, const struct bencode *reply) {
        op->done(op, reply);
        ng_op_free(op);
}

/* Sends a dictionary (ownership taken) to a relay. NULL when over max-pending or out of
 * memory. */
static struct ng_op *ng_send(struct media *md, struct bencode *dict, enum ng_kind kind,
                             unsigned relay, bool failover, ng_done_fn done) {
        _cleanup_bencode_ struct bencode *d = dict;
        if (md->n_ops >= (size_t)md->max_pending) {
                log_warning("%zu NG requests already pending (max-pending): not sent.", md->n_ops);
                return NULL;
        }
        struct ng_op *op = calloc(1, sizeof *op);
        if (!op || bencode_encode(d, &op->body, &op->body_len) < 0) {
                free(op);
                log_oom();
                return NULL;
        }
        op->md = md;
        op->kind = kind;
        op->relay = relay;
        op->tried = 1u << relay;
        op->failover = failover;
        op->done = done;
        ng_new_cookie(md, op);
        op->next = md->ops;
        if (md->ops)
                md->ops->prev = op;
        md->ops = op;
        md->n_ops++;
        ng_transmit(md, op);
        if (!loop_timer_armed(md->tick))
                loop_timer_arm(md->tick, 50);
        return op;
}

static void ping_done(struct ng_op *op, const struct bencode *reply) {
}

static void ng_timed_out(struct ng_op *op) {
        struct media *md = op->md;
        struct relay *r = &md->relays[op->relay];
        stats_inc(md->count_timeouts);
        r->timeouts++;
        relay_set_up(md, r, false);
        if (op->kind == NG_PING)
                r->ping_pending = false;
        int next = op->failover ? relay_pick(md, op->call_id, op->tried) : -1;
        if (next < 0) {
                ng_finish(op, NULL);
                return;
        }
        stats_inc(md->count_failovers);
        if (op->kind == NG_OFFER) {
                /* Should the hung relay wake up and run the offer, its session goes too. */
                struct bencode *d = bencode_new_dict();
                bencode_dict_add_str(d, "command", "delete");
                bencode_dict_add_str(d, "call-id", op->call_id);
                ng_send(md, d, NG_DELETE, op->relay, false, ping_done);
        }
        log_info("NG %s: relay %s timed out, trying %s.", op->kind == NG_OFFER ? "offer" : "request",
                 r->name, md->relays[next].name);
        op->relay = (unsigned)next;
        op->tried |= 1u << next;
        op->retransmitted = false;
        ng_new_cookie(md, op); /* a late answer of the old relay must not match */
        ng_transmit(md, op);
}

static void on_tick(struct loop_timer *t, void *userdata) {
        struct media *md = userdata;
        uint64_t now = now_msec();
        for (struct ng_op *op = md->ops, *next; op; op = next) {
                next = op->next;
                uint64_t age = now - op->sent_at;
                if (!op->retransmitted && age >= md->timeout_ms / 2) {
                        /* Same cookie, same bytes: the relay answers from its reply cache. */
                        op->retransmitted = true;
                        uint64_t first = op->sent_at;
                        ng_transmit(md, op);
                        op->sent_at = first;
                } else if (age >= md->timeout_ms) {
                        ng_timed_out(op);
                }
        }
        /* ops may be empty now (the timer was disarmed then) */
        if (md->ops)
                loop_timer_arm(md->tick, 50);
}

static void on_ng_readable(struct loop_io *io, int fd, unsigned events, void *userdata) {
        struct media *md = userdata;
        for (unsigned n = 0; n < 64; n++) {
                struct sockaddr_storage from;
                socklen_t from_len = sizeof from;
                ssize_t len = recvfrom(fd, md->buf, NG_MAX_DATAGRAM - 1, MSG_DONTWAIT,
                                       (struct sockaddr *)&from, &from_len);
                if (len < 0)
                        return;
                md->buf[len] = '\0';
                char *space = memchr(md->buf, ' ', (size_t)len);
                if (!space)
                        continue;
                size_t clen = (size_t)(space - md->buf);
                struct ng_op *op = md->ops;
                for (; op; op = op->next)
                        if (strlen(op->cookie) == clen && memcmp(op->cookie, md->buf, clen) == 0)
                                break;
                if (!op)
                        continue; /* late, or answered already */
                _cleanup_bencode_ struct bencode *reply = NULL;
                size_t blen = (size_t)len - clen - 1;
                struct bencode_limits limits = {.max_depth = 16, .max_items = 65536};
                if (bencode_decode(space + 1, blen, &limits, &reply, NULL, NULL) < 0 ||
                    reply->type != BENCODE_DICT) {
                        log_warning("Malformed NG answer from %s.", md->relays[op->relay].name);
                        stats_inc(md->count_errors);
                        ng_finish(op, NULL);
                        continue;
                }
                relay_set_up(md, &md->relays[op->relay], true);
                if (op->kind == NG_PING)
                        md->relays[op->relay].ping_pending = false;
                const char *result = bencode_dict_get_str(reply, "result");
                if (!result || (!streq(result, "ok") && !streq(result, "pong"))) {
                        const char *why = bencode_dict_get_str(reply, "error-reason");
                        log_warning("Media relay %s refused an NG request: %s",
                                    md->relays[op->relay].name, strna(why ? why : result));
                        stats_inc(md->count_errors);
                        ng_finish(op, NULL);
                        continue;
                }
                ng_finish(op, reply);
        }
}

static void on_ping_timer(struct loop_timer *t, void *userdata) {
        struct media *md = userdata;
        for (size_t i = 0; i < md->n_relays; i++) {
                struct relay *r = &md->relays[i];
                if (r->ping_pending)
                        continue;
                struct bencode *d = bencode_new_dict();
                bencode_dict_add_str(d, "command", "ping");
                if (ng_send(md, d, NG_PING, (unsigned)i, false, ping_done))
                        r->ping_pending = true;
        }
        loop_timer_arm(md->ping_timer, md->ping_interval_ms);
}

/* ---- SIP side ---- */

static const char *sdp_body(const sip_t *sip) {
        if (!sip->sip_payload || !sip->sip_payload->pl_len || !sip->sip_content_type ||
            !sip->sip_content_type->c_type ||
            !strcaseeq(sip->sip_content_type->c_type, "application/sdp"))
                return NULL;
        return sip->sip_payload->pl_data;
}

static int set_body(msg_t *msg, sip_t *sip, const char *sdp, size_t len) {
        su_home_t *home = msg_home(msg);
        sip_payload_t *pl = sip_payload_create(home, sdp, (isize_t)len);
        sip_content_length_t *cl = sip_content_length_create(home, (uint32_t)len);
        if (!pl || !cl)
                return -ENOMEM;
        if (msg_header_replace(msg, (msg_pub_t *)sip, (msg_header_t *)sip->sip_payload,
                               (msg_header_t *)pl) < 0)
                return -ENOMEM;
        if (sip->sip_content_length
                    ? msg_header_replace(msg, (msg_pub_t *)sip,
                                         (msg_header_t *)sip->sip_content_length,
                                         (msg_header_t *)cl) < 0
                    : msg_header_insert(msg, (msg_pub_t *)sip, (msg_header_t *)cl) < 0)
                return -ENOMEM;
        return 0;
}

static struct bencode *ng_dict(const char *command, const char *call_id, const char *from_tag,
                               const char *to_tag, const char *sdp) {
        struct bencode *d = bencode_new_dict();
        bencode_dict_add_str(d, "command", command);
        bencode_dict_add_str(d, "call-id", call_id);
        bencode_dict_add_str(d, "from-tag", from_tag);
        if (to_tag)
                bencode_dict_add_str(d, "to-tag", to_tag);
        bencode_dict_add_str(d, "sdp", sdp);
        struct bencode *replace = bencode_new_list();
        bencode_list_add(replace, bencode_new_str("origin"));
        bencode_dict_add(d, "replace", replace);
        return d;
}

static void ng_delete(struct media *md, struct call *c, const char *why) {
        struct bencode *d = bencode_new_dict();
        bencode_dict_add_str(d, "command", "delete");
        bencode_dict_add_str(d, "call-id", c->call_id);
        log_debug("Deleting the relayed call (%s).", why);
        stats_inc(md->count_deletes);
        ng_send(md, d, NG_DELETE, c->relay, false, ping_done);
        call_free(md, c);
}

static bool has_marker(const sip_t *sip) {
        for (const sip_unknown_t *u = sip->sip_unknown; u; u = u->un_next)
                if (u->un_name && strcaseeq(u->un_name, MARKER_HEADER))
                        return true;
        return false;
}

/* The call moved to another relay (an offer failed over). */
static void call_move(struct media *md, struct call *c, unsigned relay) {
        if (c->relay == relay)
                return;
        if (md->relays[c->relay].calls > 0)
                md->relays[c->relay].calls--;
        c->relay = relay;
        md->relays[c->relay].calls++;
}

/* Puts sdp (may be NULL) into a request, and the marker on an INVITE or UPDATE. */
static void request_rewrite(struct proxy_request *req, const char *sdp) {
        if (!req->branch) {
                /* The incoming message stays as nta received it: work on a copy. */
                msg_t *copy = msg_copy(req->msg);
                if (!copy) {
                        log_oom();
                        return;
                }
                msg_destroy(req->msg);
                req->msg = copy;
                req->sip = sip_object(copy);
                proxy_log_context(req->sip, msg_home(copy), &req->log_ctx);
                log_set_sip_context(&req->log_ctx);
        }
        msg_t *msg = req->msg;
        sip_t *sip = req->sip;
        if (sdp && set_body(msg, sip, sdp, strlen(sdp)) < 0)
                log_oom();
        if (sip->sip_request->rq_method == sip_method_ack || has_marker(sip))
                return;
        /* Inserted at the top: a header appended would land after the body. */
        msg_header_t *marker = msg_header_make(msg_home(msg), sip_unknown_class,
                                               MARKER_HEADER ": yes");
        if (!marker || msg_header_insert(msg, (msg_pub_t *)sip, marker) < 0)
                log_oom();
}

/* The NG reply to an offer (INVITE, UPDATE) or to a late offer's answer (ACK). */
static void request_done(struct ng_op *op, const struct bencode *reply) {
        struct media *md = op->md;
        struct proxy_request *req = op->req;
        struct call *c = call_find(md, op->call_id);
        const char *sdp = reply ? bencode_dict_get_str(reply, "sdp") : NULL;
        sip_method_t method = req->sip->sip_request->rq_method;
        if (!sdp) {
                stats_inc(md->count_unrelayed);
                log_warning("No media relay answered for the %s: it goes on unchanged.",
                            req->sip->sip_request->rq_method_name);
                if (c && op->kind == NG_OFFER && !(req->sip->sip_to && req->sip->sip_to->a_tag) &&
                    !c->offer_cseq)
                        call_free(md, c);
                proxy_request_resume(req, MODULE_CONTINUE);
                return;
        }
        if (c && op->kind == NG_OFFER) {
                call_move(md, c, op->relay);
                c->offer_cseq = req->sip->sip_cseq->cs_seq;
                c->late_cseq = 0;
        } else if (c && method == sip_method_ack) {
                c->late_cseq = 0;
        }
        request_rewrite(req, sdp);
        log_debug("SDP of the %s replaced by the relay's (%s).",
                  req->sip->sip_request->rq_method_name, md->relays[op->relay].name);
        proxy_request_resume(req, MODULE_CONTINUE);
}

static enum module_result media_request(struct module *m, struct proxy_request *req) {
        struct media *md = m->state;
        const sip_t *sip = req->sip;
        sip_method_t method = sip->sip_request->rq_method;
        if (!sip->sip_call_id || !sip->sip_from || !sip->sip_from->a_tag || !sip->sip_cseq)
                return MODULE_CONTINUE;
        bool in_dialog = sip->sip_to && sip->sip_to->a_tag;
        struct call *c = call_find(md, sip->sip_call_id->i_id);
        const char *sdp = sdp_body(sip);

        if (method == sip_method_bye) {
                if (c)
                        ng_delete(md, c, "BYE");
                return MODULE_CONTINUE;
        }
        if (method == sip_method_ack) {
                /* Late offer: the ACK carries the answer to the offer of the 2xx, whose
                 * offerer is the callee (the To tag here). */
                if (!c || !sdp || !in_dialog || !c->late_offered ||
                    c->late_cseq != sip->sip_cseq->cs_seq)
                        return MODULE_CONTINUE;
        } else if (method != sip_method_invite && method != sip_method_update) {
                return MODULE_CONTINUE;
        }
        if (!c && (in_dialog || has_marker(sip))) {
                /* Not a call of ours: another proxy relays it, or it started without us. */
                if (method == sip_method_invite)
                        stats_inc(md->count_skipped);
                return MODULE_CONTINUE;
        }
        if (!sdp && method != sip_method_invite)
                return MODULE_CONTINUE;
        int relay = c ? (int)c->relay : relay_pick(md, sip->sip_call_id->i_id, 0);
        if (relay < 0)
                return MODULE_CONTINUE;
        if (!c && !(c = call_new(md, sip->sip_call_id->i_id, (unsigned)relay))) {
                stats_inc(md->count_unrelayed);
                log_warning("%zu calls relayed already (max-calls): this one goes without a "
                            "relay.", md->n_calls);
                return MODULE_CONTINUE;
        }
        call_touch(md, c);
        if (!sdp) {
                /* An INVITE without SDP: the offer will come in the 2xx. */
                c->late_cseq = sip->sip_cseq->cs_seq;
                c->late_offered = false;
                request_rewrite(req, NULL);
                return MODULE_CONTINUE;
        }
        _cleanup_free_ char *sdp_text = strndup(sdp, sip->sip_payload->pl_len);
        char *call_id = strdup(sip->sip_call_id->i_id);
        bool ack = method == sip_method_ack;
        /* New calls and re-offers may move to another relay; a re-offer there gets new ports,
         * better than no media. An answer stays with the call's relay. */
        struct bencode *d = !sdp_text || !call_id ? NULL
                            : ack ? ng_dict("answer", call_id, sip->sip_to->a_tag,
                                            sip->sip_from->a_tag, sdp_text)
                                  : ng_dict("offer", call_id, sip->sip_from->a_tag, NULL,
                                            sdp_text);
        struct ng_op *op = d ? ng_send(md, d, ack ? NG_ANSWER : NG_OFFER, (unsigned)relay, !ack,
                                       request_done)
                             : NULL;
        if (!op) {
                free(call_id);
                stats_inc(md->count_unrelayed);
                if (!ack && !c->offer_cseq && !c->late_offered)
                        call_free(md, c);
                return MODULE_CONTINUE;
        }
        stats_inc(ack ? md->count_answers : md->count_offers);
        op->req = req;
        op->call_id = call_id;
        return MODULE_SUSPEND;
}

/* The NG reply to an answer (18x/2xx) or to a late offer (2xx to an INVITE without SDP). */
static void response_done(struct ng_op *op, const struct bencode *reply) {
        struct media *md = op->md;
        msg_t *msg = TAKE_PTR(op->msg);
        sip_t *sip = sip_object(msg);
        const char *sdp = reply ? bencode_dict_get_str(reply, "sdp") : NULL;
        if (sdp) {
                struct call *c = call_find(md, op->call_id);
                if (c && op->kind == NG_OFFER) {
                        call_move(md, c, op->relay);
                        c->late_offered = true;
                }
                if (set_body(msg, sip, sdp, strlen(sdp)) < 0)
                        log_oom();
        } else {
                stats_inc(md->count_unrelayed);
                log_warning("No media relay answered for the %u response: relayed unchanged.",
                            sip->sip_status->st_status);
        }
        fork_branch_release(op->branch, msg);
}

static bool media_hold_response(void *userdata, struct fork_branch *b, msg_t *msg, sip_t *sip) {
        struct media *md = userdata;
        int status = sip->sip_status->st_status;
        if (status <= 100 || status >= 300 || !sip->sip_cseq || !sip->sip_call_id ||
            !sip->sip_from || !sip->sip_from->a_tag || !sip->sip_to || !sip->sip_to->a_tag ||
            (sip->sip_cseq->cs_method != sip_method_invite &&
             sip->sip_cseq->cs_method != sip_method_update))
                return false;
        const char *sdp = sdp_body(sip);
        struct call *c = sdp ? call_find(md, sip->sip_call_id->i_id) : NULL;
        if (!c)
                return false;
        uint32_t cseq = sip->sip_cseq->cs_seq;
        /* An answer to our offer, or the offer of a 2xx to an INVITE without SDP (the callee
         * offers: its tag is the offer's from-tag). */
        bool answer = c->offer_cseq == cseq && !c->late_cseq;
        bool late = c->late_cseq == cseq && status >= 200 &&
                    sip->sip_cseq->cs_method == sip_method_invite;
        if (!answer && !late)
                return false;
        call_touch(md, c);
        _cleanup_free_ char *sdp_text = strndup(sdp, sip->sip_payload->pl_len);
        char *call_id = strdup(c->call_id);
        struct bencode *d = !sdp_text || !call_id ? NULL
                            : late ? ng_dict("offer", call_id, sip->sip_to->a_tag, NULL, sdp_text)
                                   : ng_dict("answer", call_id, sip->sip_from->a_tag,
                                             sip->sip_to->a_tag, sdp_text);
        struct ng_op *op = d ? ng_send(md, d, late ? NG_OFFER : NG_ANSWER, c->relay, late,
                                       response_done)
                             : NULL;
        if (!op) {
                free(call_id);
                stats_inc(md->count_unrelayed);
                return false;
        }
        stats_inc(late ? md->count_offers : md->count_answers);
        op->call_id = call_id;
        op->branch = b;
        op->msg = msg;
        return true;
}

static void media_fork_ended(void *userdata, const sip_t *request, int final_status) {
        struct media *md = userdata;
        if (final_status >= 200 && final_status < 300)
                return;
        if (!request->sip_call_id || (request->sip_to && request->sip_to->a_tag))
                return; /* a failed re-INVITE leaves the call as it was */
        struct call *c = call_find(md, request->sip_call_id->i_id);
        if (c)
                ng_delete(md, c, final_status ? "call failed" : "no final answer");
}

/* ---- housekeeping, control, init ---- */

static void on_sweep(struct media *md) {
        uint64_t now = now_msec();
        while (md->lru_first && now - md->lru_first->touched > md->call_lifetime_ms) {
                log_info("Call '%s' silent for call-lifetime: forgotten.", md->lru_first->call_id);
                call_free(md, md->lru_first);
        }
}

static void on_ping_and_sweep(struct loop_timer *t, void *userdata) {
        on_sweep(userdata);
        on_ping_timer(t, userdata);
}

static int cli_relays(struct ctl_request *req, int argc, char **argv, void *userdata) {
        struct media *md = userdata;
        json_t *a = json_array();
        for (size_t i = 0; a && i < md->n_relays; i++) {
                struct relay *r = &md->relays[i];
                json_array_append_new(a, json_pack("{s:s, s:i, s:b, s:I, s:I}", "address",
                                                   r->name, "weight", (int)r->weight, "up", r->up,
                                                   "calls", (json_int_t)r->calls, "timeouts",
                                                   (json_int_t)r->timeouts));
        }
        ctl_reply(req, json_pack("{s:o, s:I, s:I}", "relays", a ? a : json_array(), "calls",
                                 (json_int_t)md->n_calls, "pending", (json_int_t)md->n_ops));
        return 0;
}

static uint64_t gauge_calls(void *userdata) {
        return ((struct media *)userdata)->n_calls;
}

static int media_init(struct module *m) {
        struct media *md = m->state;
        struct proxy *p = m->proxy;
        struct stats *s = proxy_stats(p);
        int r;
        md->module = m;
        md->fd = -1;
        size_t n = strv_length(md->relay_specs);
        if (n == 0)
                return log_error_errno(EINVAL, "[module::MediaRelay] relays is empty.");
        if (n > 32)
                return log_error_errno(EINVAL, "[module::MediaRelay] at most 32 relays.");
        if (md->timeout_ms < 100 || md->ping_interval_ms < 1000)
                return log_error_errno(EINVAL, "[module::MediaRelay] timeout and ping-interval "
                                               "must be at least 100ms and 1s.");
        if (!(md->relays = calloc(n, sizeof *md->relays)))
                return log_oom();
        for (size_t i = 0; i < n; i++) {
                r = relay_parse(md->relay_specs[i], &md->relays[md->n_relays]);
                if (r == -ENOMEM)
                        return log_oom();
                if (r < 0)
                        return log_error_errno(EINVAL,
                                               "[module::MediaRelay] relays: '%s' is not "
                                               "host:port[;weight=1..1000].",
                                               md->relay_specs[i]);
                md->n_relays++;
        }
        md->n_buckets = 64;
        while (md->n_buckets < (size_t)md->max_calls / 2 && md->n_buckets < (1u << 20))
                md->n_buckets *= 2;
        if (!(md->buckets = calloc(md->n_buckets, sizeof *md->buckets)) ||
            !(md->buf = malloc(NG_MAX_DATAGRAM)))
                return log_oom();
        md->cookie_base = (uint32_t)(getpid() ^ realtime_msec());

        /* One socket for every relay: IPv6 with v4-mapped addresses would need the relays
         * rewritten, so the family follows the first relay and all must share it. */
        int family = md->relays[0].sa.ss_family;
        for (size_t i = 1; i < md->n_relays; i++)
                if (md->relays[i].sa.ss_family != family)
                        return log_error_errno(EINVAL, "[module::MediaRelay] relays must all be "
                                                       "IPv4 or all IPv6.");
        md->fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (md->fd < 0)
                return log_error_errno(errno, "Failed to open the NG socket: %m");
        struct loop *l = daemon_loop(p->daemon);
        if ((r = loop_io_add(l, md->fd, LOOP_READ, on_ng_readable, md, &md->io)) < 0 ||
            (r = loop_timer_new(l, on_tick, md, &md->tick)) < 0 ||
            (r = loop_timer_new(l, on_ping_and_sweep, md, &md->ping_timer)) < 0)
                return log_error_errno(r, "Failed to watch the NG socket: %m");

        const char *sec = m->desc->section;
        md->count_offers = stats_declare(s, sec, "count-offers", "NG offers sent");
        md->count_answers = stats_declare(s, sec, "count-answers", "NG answers sent");
        md->count_deletes = stats_declare(s, sec, "count-deletes", "NG deletes sent");
        md->count_errors = stats_declare(s, sec, "count-ng-errors",
                                         "NG requests a relay refused or answered malformed");
        md->count_timeouts = stats_declare(s, sec, "count-ng-timeouts",
                                           "NG requests (pings included) a relay did not answer");
        md->count_failovers = stats_declare(s, sec, "count-failovers",
                                            "Offers moved to another relay after a timeout");
        md->count_unrelayed = stats_declare(s, sec, "count-unrelayed",
                                            "Messages relayed without their SDP rewritten "
                                            "(no relay answered, or a limit)");
        md->count_skipped = stats_declare(s, sec, "count-skipped",
                                          "Offers left alone: relayed by another proxy, or of a "
                                          "call that did not start through this one");
        if ((r = stats_declare_gauge(s, sec, "calls", "Calls with a media relay", gauge_calls,
                                     md)) < 0)
                return log_error_errno(r, "Failed to declare the MediaRelay gauges: %m");
        struct ctl *ctl = daemon_ctl(p->daemon);
        if (ctl && (r = ctl_register(ctl, "MEDIA_RELAYS",
                                     "MEDIA_RELAYS: the media relays, their health and calls",
                                     cli_relays, md)) < 0)
                return log_error_errno(r, "Failed to register MEDIA_RELAYS: %m");

        md->hooks = (struct fork_hooks){
                .hold_response = media_hold_response,
                .fork_ended = media_fork_ended,
                .userdata = md,
        };
        p->fork_hooks = &md->hooks;
        on_ping_timer(md->ping_timer, md);
        log_info("Media relayed by %zu relay(s), first %s.", md->n_relays, md->relays[0].name);
        return 0;
}

static void media_done(struct module *m) {
        struct media *md = m->state;
        if (!md->module)
                return; /* never started */
        if (m->proxy->fork_hooks == &md->hooks)
                m->proxy->fork_hooks = NULL;
        /* Forks are gone already (proxy_free): held responses are dropped; suspended requests
         * end without touching their (freed) branch. */
        while (md->ops) {
                struct ng_op *op = md->ops;
                if (op->msg)
                        msg_destroy(op->msg);
                if (op->req) {
                        op->req->branch = NULL;
                        proxy_request_resume(op->req, MODULE_STOP);
                }
                ng_op_free(op);
        }
        while (md->lru_first)
                call_free(md, md->lru_first);
        free(md->buckets);
        loop_io_free(md->io);
        loop_timer_free(md->tick);
        loop_timer_free(md->ping_timer);
        if (md->fd >= 0)
                close(md->fd);
        for (size_t i = 0; i < md->n_relays; i++)
                free(md->relays[i].name);
        free(md->relays);
        free(md->buf);
}

const struct module_desc module_media = {
        .name = "MediaRelay",
        .section = "module::MediaRelay",
        .doc = "Puts a media relay (NG protocol: sipfleet-mediarelay, rtpengine) in the media "
               "path of the calls the proxy relays.",
        .default_enabled = false,
        .state_size = sizeof(struct media),
        .rows = media_rows,
        .n_rows = ELEMENTSOF(media_rows),
        .init = media_init,
        .on_request = media_request,
        .done = media_done,
};
