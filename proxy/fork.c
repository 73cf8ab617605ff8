/* SPDX-License-Identifier: MIT */
/* The fork engine: one incoming request relayed to one or more branches (see fork.h). */
#define LOG_SUBSYSTEM LOG_router
#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>

#include <sofia-sip/msg_header.h>
#include <sofia-sip/sip_util.h>

#include "daemon.h"
#include "fork.h"
#include "loop.h"
#include "message-store.h"
#include "module.h"
#include "proxy.h"
#include "registrar-store.h"
#include "registrar.h"

#define REASON_CALL_COMPLETED  "SIP;cause=200;text=\"Call completed elsewhere\""
#define REASON_BUSY_EVERYWHERE "SIP;cause=600;text=\"Busy Everywhere\""

/* A contact URI for the logs: without its parameters, which may hold push tokens. */
#define LOG_URI(uri) ((int)strcspn((uri), ";?")), (uri)

/* A device id for the logs: an instance URN or a generated id as is; an id taken from another
 * of unique-id-parameters (pn-tok is a push token) is not shown. */
static const char *log_uid(const char *uid) {
        if (!uid)
                return "(none)";
        if (uid[0] == '<' || strncmp(uid, "\"<", 2) == 0 || strncmp(uid, "gen-", 4) == 0)
                return uid;
        return "(id from a contact parameter)";
}

static const struct fork_config default_config = {
        .group_timeout_ms = 10 * 1000,
        .timer_c_ms = 185 * 1000,
        .call_fork_timeout_ms = 90 * 1000,
        .message_delivery_timeout_ms = 7 * 24 * 3600 * 1000ULL,
        .message_accept_timeout_ms = 5 * 1000,
};

enum fork_kind { FORK_BASIC, FORK_CALL, FORK_MESSAGE };

struct target {
        char *uri;
        char **routes;
        unsigned q;
        char *uid;
};

struct fork_branch {
        struct fork *fork;
        struct fork_branch *next;
        char *uri;
        char *uid;
        char **routes;      /* kept for a branch that waits its turn (queued) */
        nta_outgoing_t *orq;
        struct loop_timer *timer_c;
        int status;         /* last response, 0 when none */
        bool in_chain;      /* its request travels the modules */
        bool sent;          /* handed to nta */
        bool done;          /* final response received (or made up) */
        bool cancelled;     /* CANCEL sent, or not to be sent at all */
        bool timer_c_fired; /* a 487 after Timer C counts as 408 */
        bool queued;        /* a MESSAGE waiting for the older ones to this device */
        bool superseded;    /* a newer branch to the same device replaced it */
        bool voip_pushed;   /* its device was woken by an iOS VoIP push */
        bool cancel_after_send; /* the call ended: INVITE then CANCEL (iOS VoIP) */
        fork_branch_observer_fn observer;
        void *observer_data;
        unsigned held;      /* responses held by a response hook (fork_branch_release) */
};

/* Late forks of one AOR, oldest first. */
struct late_key {
        char *aor;
        struct late_key *next; /* in its bucket */
        struct fork *first, *last;
        unsigned n_messages;
};

struct fork_index {
        struct late_key **buckets;
        size_t n_buckets, n_keys;
        unsigned n_messages;
        uint64_t message_bytes;
};

struct fork {
        struct proxy *proxy;
        struct fork *prev, *next; /* in proxy->forks */
        struct proxy_request *req; /* NULL once a stored message was answered, or restored */
        msg_t *request;            /* a reference to the incoming request */
        struct proxy_origin origin;
        const struct fork_config *config;
        enum fork_kind kind;
        bool invite;
        bool late;                 /* fork-late: waits for devices to register */
        bool late_expired;
        char *aor;                 /* the late index key */
        char *instance;            /* a GRUU's device: the only one fork-late accepts */
        struct late_key *key;
        struct fork *key_prev, *key_next;
        int64_t store_id;          /* in the message store, 0 when not stored */
        size_t size;               /* of the request, counted in the store's size */
        uint64_t received_at, expires_at; /* realtime ms */
        struct loop_timer *late_timer, *accept_timer;
        struct target *targets;
        size_t n_targets, next_target;
        struct fork_branch *branches;
        struct loop_timer *group_timer;
        msg_t *best; /* best final response so far (a relayed one)... */
        int best_status;
        const char *best_phrase; /* ...or one made up (no message) */
        int final_status;        /* sent upstream, 0 before */
        bool started;
        bool cancelling;     /* no new branch; pending ones are (being) cancelled */
        bool sent_push_provisional;
        char **used_keys;    /* fork_branch_first_use() */
        char **challenges;   /* WWW-/Proxy-Authenticate of every 401/407 branch, as text */
        char *cancel_reason; /* Reason of the CANCELs we send */
        char *end_reason;    /* Reason of the first cancel_pending(), for VoIP-woken devices */
        bool voip_hold;      /* answered, kept open for devices woken by a VoIP push */
        unsigned busy;       /* re-entrancy guard: completion is checked at the outermost */
        bool freed;
};

static void fork_check(struct fork *f);
static int key_link(struct fork *f);
static void key_unlink(struct fork *f);
static void pump(struct fork_index *ix, struct late_key *k, const char *uid);
static void on_late_timer(struct loop_timer *t, void *userdata);
static void on_accept_timer(struct loop_timer *t, void *userdata);

static const struct fork_config *config_of(struct proxy *p) {
        return p->fork_config ? p->fork_config : &default_config;
}

/* A MESSAGE worth storing: not an is-composing notice, not one that asks not to be kept. */
static bool message_storable(const sip_t *sip) {
        if (sip->sip_expires && sip->sip_expires->ex_delta == 0)
                return false;
        return !(sip->sip_content_type && sip->sip_content_type->c_type &&
                 strcasecmp(sip->sip_content_type->c_type, "application/im-iscomposing+xml") == 0);
}

static struct fork *fork_alloc(struct proxy *p, msg_t *request, const char *aor) {
        struct fork *f = calloc(1, sizeof *f);
        if (!f)
                return NULL;
        f->proxy = p;
        f->config = config_of(p);
        f->request = msg_ref_create(request);
        const sip_t *sip = sip_object(request);
        sip_method_t method = sip->sip_request->rq_method;
        f->invite = method == sip_method_invite;
        f->kind = f->invite ? FORK_CALL : method == sip_method_message ? FORK_MESSAGE : FORK_BASIC;
        if (aor) {
                if (f->kind == FORK_CALL)
                        f->late = f->config->fork_late;
                else if (f->kind == FORK_MESSAGE)
                        f->late = f->config->message_fork_late && message_storable(sip);
        }
        if (aor && !(f->aor = strdup(aor))) {
                msg_destroy(f->request);
                free(f);
                return NULL;
        }
        f->received_at = realtime_msec();
        return f;
}

int fork_new(struct proxy_request *req, const char *aor, struct fork **ret) {
        struct fork *f = fork_alloc(req->proxy, req->msg, aor);
        if (!f)
                return -ENOMEM;
        f->req = req;
        f->origin = (struct proxy_origin){
                .next_module = req->next_module,
                .log_ctx = req->log_ctx,
                .in_primary = req->in_primary,
        };
        *ret = f;
        return 0;
}

bool fork_is_late(struct fork *f) {
        return f->late;
}

int fork_set_instance(struct fork *f, const char *instance) {
        free(f->instance);
        f->instance = strdup(instance);
        return f->instance ? 0 : -ENOMEM;
}

bool fork_is_stored_message(struct fork *f) {
        return f->late && f->kind == FORK_MESSAGE;
}

static void target_done(struct target *t) {
        free(t->uri);
        strv_free(t->routes);
        free(t->uid);
}

int fork_add_target(struct fork *f, const struct fork_target *t) {
        struct target *n = reallocarray(f->targets, f->n_targets + 1, sizeof *n);
        if (!n)
                return -ENOMEM;
        f->targets = n;
        struct target *x = &n[f->n_targets];
        *x = (struct target){.q = t->q};
        x->uri = strdup(t->uri);
        x->uid = t->uid ? strdup(t->uid) : NULL;
        if (t->routes)
                x->routes = strv_copy(t->routes);
        if (!x->uri || (t->uid && !x->uid) || (t->routes && !x->routes)) {
                target_done(x);
                return -ENOMEM;
        }
        f->n_targets++;
        return 0;
}

size_t fork_n_targets(struct fork *f) {
        return f->n_targets;
}

static int target_compare(const void *a, const void *b) {
        const struct target *x = a, *y = b;
        /* Highest q first; qsort is not stable, so the insertion order is kept by address. */
        if (x->q != y->q)
                return x->q > y->q ? -1 : 1;
        return x < y ? -1 : x > y;
}

static void branch_free(struct fork_branch *b) {
        if (b->observer)
                b->observer(b, -1, b->observer_data);
        if (b->orq)
                nta_outgoing_destroy(b->orq);
        loop_timer_free(b->timer_c);
        free(b->uri);
        free(b->uid);
        strv_free(b->routes);
        free(b);
}

static void fork_free(struct fork *f) {
        struct proxy *p = f->proxy;
        while (f->branches) {
                struct fork_branch *b = f->branches;
                f->branches = b->next;
                branch_free(b);
        }
        for (size_t i = 0; i < f->n_targets; i++)
                target_done(&f->targets[i]);
        free(f->targets);
        loop_timer_free(f->group_timer);
        loop_timer_free(f->late_timer);
        loop_timer_free(f->accept_timer);
        if (f->best)
                msg_destroy(f->best);
        free(f->cancel_reason);
        free(f->end_reason);
        strv_free(f->used_keys);
        strv_free(f->challenges);
        free(f->instance);
        key_unlink(f);
        free(f->aor);
        if (f->started) {
                if (f->prev)
                        f->prev->next = f->next;
                else
                        p->forks = f->next;
                if (f->next)
                        f->next->prev = f->prev;
                p->n_forks--;
        }
        const struct fork_hooks *h = p->fork_hooks;
        if (f->started && f->invite && h && h->fork_ended)
                h->fork_ended(h->userdata, sip_object(f->request), f->final_status);
        struct proxy_request *req = f->req;
        msg_t *request = f->request;
        free(f);
        if (req) {
                req->fork = NULL;
                proxy_request_resume(req, MODULE_STOP);
        }
        msg_destroy(request);
}

void fork_abandon(struct fork *f) {
        if (!f)
                return;
        assert(!f->started);
        f->req = NULL;
        fork_free(f);
}

/* ---- upstream ---- */

static void send_upstream(struct fork *f, int status, const char *phrase, msg_t *msg) {
        if (status >= 200)
                f->final_status = status;
        if (!f->req) {
                /* A stored message answered before, or restored from the store. */
                if (msg)
                        msg_destroy(msg);
                return;
        }
        nta_incoming_t *irq = f->req->irq;
        if (msg) {
                if (nta_incoming_mreply(irq, msg) < 0)
                        log_debug("Failed to relay a %d response.", status);
                return;
        }
        proxy_request_reply(f->req, status, phrase, TAG_END());
}

/* A 2xx after the transaction's final answer: INVITE 2xx are relayed statelessly so every
 * answering UAS gets its ACK (RFC 3261 §16.7 step 5). */
static void send_stateless(struct fork *f, msg_t *msg) {
        sip_t *sip = sip_object(msg);
        if (!sip->sip_via) {
                msg_destroy(msg);
                return;
        }
        /* nta_msg_tsend() consumes msg, whether it could send it or not. */
        if (nta_msg_tsend(f->proxy->agent, msg, NULL, TAG_END()) < 0)
                log_debug("Failed to relay a 2xx retransmission.");
}

/* §16.7 step 6, with the preference of the reference: 6xx, then 4xx that let the caller do
 * something (authenticate, fix the request), then the lowest class. Lower is better. */
static int response_rank(int status) {
        switch (status) {
        case 401:
        case 407:
        case 415:
        case 420:
        case 484:
                return 2;
        }
        if (status >= 600)
                return 1;
        return status / 100;
}

/* In fork-late mode, 503 and 408 mean "device unreachable": the branch still waits for the
 * device to register again. */
static bool unreachable(int status) {
        return status == 503 || status == 408;
}

static void keep_best(struct fork *f, int status, const char *phrase, msg_t *msg) {
        if (f->late && unreachable(status) && !f->late_expired) {
                if (msg)
                        msg_destroy(msg);
                return;
        }
        if (f->best_status && response_rank(status) >= response_rank(f->best_status)) {
                if (msg)
                        msg_destroy(msg);
                return;
        }
        if (f->best)
                msg_destroy(f->best);
        f->best = msg;
        f->best_status = status;
        f->best_phrase = phrase;
}

#define MAX_CHALLENGES 16

/* The WWW-/Proxy-Authenticate headers of a response as lines ("W..." or "P..." + the header
 * text) added to *list, at most MAX_CHALLENGES in all. */
static void add_challenge_lines(char ***list, msg_t *msg) {
        sip_t *sip = sip_object(msg);
        const sip_header_t *lists[] = {(const sip_header_t *)sip->sip_www_authenticate,
                                       (const sip_header_t *)sip->sip_proxy_authenticate};
        for (size_t l = 0; l < ELEMENTSOF(lists); l++)
                for (const sip_header_t *h = lists[l]; h; h = (const sip_header_t *)h->sh_next) {
                        if (strv_length(*list) >= MAX_CHALLENGES)
                                return;
                        _cleanup_free_ char *text = sip_header_as_string(NULL, h);
                        _cleanup_free_ char *line = NULL;
                        if (!text || asprintf(&line, "%c%s", l == 0 ? 'W' : 'P', text) < 0)
                                return;
                        if (!strv_contains(*list, line) && strv_extend(list, line) < 0)
                                return;
                }
}

/* RFC 3261 §16.7 step 6: the challenges of every 401/407 are remembered, so that the one sent
 * up carries them all and the caller can answer each realm at once. */
static void collect_challenges(struct fork *f, msg_t *msg) {
        add_challenge_lines(&f->challenges, msg);
}

/* Adds to the best 401/407 the challenges of the other branches it does not have. */
static void merge_challenges(struct fork *f, msg_t *msg) {
        _cleanup_strv_free_ char **have = NULL;
        add_challenge_lines(&have, msg);
        sip_t *sip = sip_object(msg);
        STRV_FOREACH(c, f->challenges) {
                if (strv_contains(have, *c))
                        continue;
                msg_hclass_t *hc = **c == 'W' ? sip_www_authenticate_class
                                              : sip_proxy_authenticate_class;
                if (msg_header_add_make(msg, (msg_pub_t *)sip, hc, *c + 1) < 0)
                        log_debug("Cannot add a challenge to the %d.", f->best_status);
        }
}

static void send_best(struct fork *f) {
        int status = f->best_status;
        msg_t *msg = TAKE_PTR(f->best);
        if (!status) {
                /* No branch answered: everything was cancelled, or there was nothing to try. */
                if (f->kind == FORK_MESSAGE && f->late)
                        send_upstream(f, 202, "Accepted", NULL);
                else if (f->late && f->late_expired)
                        send_upstream(f, SIP_408_REQUEST_TIMEOUT, NULL);
                else if (f->cancelling)
                        send_upstream(f, SIP_487_REQUEST_TERMINATED, NULL);
                else
                        send_upstream(f, SIP_480_TEMPORARILY_UNAVAILABLE, NULL);
                return;
        }
        if (status == 503) {
                /* §16.7 step 6: a 503 from downstream must not make the caller think we are
                 * overloaded. */
                if (msg)
                        msg_destroy(msg);
                send_upstream(f, SIP_500_INTERNAL_SERVER_ERROR, NULL);
                return;
        }
        if ((status == 401 || status == 407) && msg && f->challenges)
                merge_challenges(f, msg);
        send_upstream(f, status, f->best_phrase, msg);
}

/* ---- branches ---- */

static void branch_cancel(struct fork_branch *b, const char *reason) {
        if (b->done || b->cancelled)
                return;
        b->cancelled = true;
        if (!b->orq || !b->fork->invite)
                return;
        if (!nta_outgoing_tcancel(b->orq, NULL, NULL, TAG_IF(reason, SIPTAG_REASON_STR(reason)),
                                  TAG_END()))
                log_debug("Failed to CANCEL branch '%.*s'.", LOG_URI(b->uri));
}

static void cancel_pending(struct fork *f, const char *reason) {
        if (!f->cancelling && reason && !(f->end_reason = strdup(reason)))
                log_oom();
        f->cancelling = true;
        for (struct fork_branch *b = f->branches; b; b = b->next)
                branch_cancel(b, reason);
}

static void branch_final_inner(struct fork_branch *b, int status, const char *phrase,
                               msg_t *msg) {
        struct fork *f = b->fork;
        if (b->done) {
                /* A 2xx retransmission or a second 2xx of a forked INVITE. */
                if (msg && status < 300 && f->invite)
                        send_stateless(f, msg);
                else if (msg)
                        msg_destroy(msg);
                return;
        }
        b->done = true;
        b->status = status;
        loop_timer_disarm(b->timer_c);
        if (b->observer)
                b->observer(b, status, b->observer_data);
        if (b->timer_c_fired && status == 487) {
                if (msg)
                        msg_destroy(msg);
                msg = NULL;
                status = 408;
                phrase = sip_408_Request_timeout;
        }

        if (f->store_id && f->proxy->message_store && b->uid &&
            !(f->late && unreachable(status)) &&
            message_store_delivered(f->proxy->message_store, f->store_id, b->uid, status) < 0)
                log_warning("Failed to record the delivery of a stored message to '%s'.",
                            log_uid(b->uid));
        if (status < 300) {
                if (!f->final_status)
                        send_upstream(f, status, phrase, msg);
                else if (f->invite && f->final_status < 300 && msg)
                        send_stateless(f, msg);
                else if (msg)
                        msg_destroy(msg);
                if (f->invite)
                        cancel_pending(f, REASON_CALL_COMPLETED);
                else if (!(f->kind == FORK_MESSAGE && f->late))
                        f->cancelling = true; /* a stored message goes on to the other devices */
                return;
        }
        if (f->final_status) {
                if (msg)
                        msg_destroy(msg);
                return;
        }
        if ((status == 401 || status == 407) && msg)
                collect_challenges(f, msg);
        keep_best(f, status, phrase, msg);
        if (status >= 600 && f->invite && !f->config->no_global_decline)
                cancel_pending(f, REASON_BUSY_EVERYWHERE);
}

static void branch_final(struct fork_branch *b, int status, const char *phrase, msg_t *msg) {
        struct fork *f = b->fork;
        bool was_done = b->done;
        branch_final_inner(b, status, phrase, msg);
        /* A stored message reached the device (or was refused for good): the next one to it. */
        if (!was_done && f->kind == FORK_MESSAGE && f->late && f->key && b->uid &&
            !unreachable(b->status))
                pump(f->proxy->fork_index, f->key, b->uid);
}

static void on_timer_c(struct loop_timer *t, void *userdata) {
        struct fork_branch *b = userdata;
        struct fork *f = b->fork;
        log_set_sip_context(&f->origin.log_ctx);
        f->busy++;
        log_info("Timer C fired on branch '%.*s'.", LOG_URI(b->uri));
        if (b->status > 100 && !b->cancelled) {
                /* §16.8: CANCEL it; its 487 counts as a 408. */
                b->timer_c_fired = true;
                branch_cancel(b, NULL);
                loop_timer_arm(b->timer_c, f->config->timer_c_ms);
        } else {
                /* No provisional, or the CANCEL went unanswered: give up on the branch. */
                if (b->orq) {
                        nta_outgoing_destroy(b->orq);
                        b->orq = NULL;
                }
                branch_final(b, SIP_408_REQUEST_TIMEOUT, NULL);
        }
        f->busy--;
        fork_check(f);
        log_set_sip_context(NULL);
}

/* A response of branch b, after the modules' on_response: upstream (provisional, final). */
static void relay_response(struct fork_branch *b, int status, msg_t *msg) {
        struct fork *f = b->fork;
        if (status < 200) {
                b->status = status;
                if (status > 100 && b->observer)
                        b->observer(b, status, b->observer_data);
                if (f->invite && b->timer_c && !b->cancelled)
                        loop_timer_arm(b->timer_c, f->config->timer_c_ms);
                if (status > 100 && !f->final_status && !b->done)
                        send_upstream(f, status, NULL, msg);
                else
                        msg_destroy(msg);
                return;
        }
        branch_final(b, status, NULL, msg);
}

static int on_branch_response(struct fork_branch *b, nta_outgoing_t *orq, const sip_t *sip) {
        struct fork *f = b->fork;
        int status = sip->sip_status->st_status;

        log_set_sip_context(&f->origin.log_ctx);
        f->busy++;
        if (nta_sip_is_internal(sip)) {
                /* nta's own 408 (timeout) or 503 (transport error). */
                log_info("Branch '%.*s': %d %s.", LOG_URI(b->uri), status,
                         sip->sip_status->st_phrase);
                if (status >= 200)
                        branch_final(b, status,
                                     status == 408 ? sip_408_Request_timeout
                                                   : sip_503_Service_unavailable,
                                     NULL);
                goto out;
        }
        msg_t *msg = nta_outgoing_getresponse(orq);
        sip_t *rs = sip_object(msg);
        /* The modules see the response with our Via still on top: it names the transport
         * the branch used, which NatHelper needs. */
        modules_on_response(f->proxy->modules, f->proxy->n_modules, msg, rs);
        sip_via_remove(msg, rs);
        if (!rs->sip_via) {
                /* It was addressed to us, not to be relayed (§16.7 step 3). */
                msg_destroy(msg);
                if (status >= 200)
                        branch_final(b, status, sip->sip_status->st_phrase, NULL);
                goto out;
        }
        const struct fork_hooks *h = f->proxy->fork_hooks;
        if (h && h->hold_response && h->hold_response(h->userdata, b, msg, rs)) {
                b->held++; /* relayed later by fork_branch_release() */
                goto out;
        }
        relay_response(b, status, msg);
out:
        f->busy--;
        fork_check(f);
        log_set_sip_context(NULL);
        return 0;
}

void fork_branch_release(struct fork_branch *b, msg_t *msg) {
        struct fork *f = b->fork;
        const struct log_sip_context *outer = log_get_sip_context();
        log_set_sip_context(&f->origin.log_ctx);
        f->busy++;
        b->held--;
        relay_response(b, sip_object(msg)->sip_status->st_status, msg);
        f->busy--;
        fork_check(f);
        log_set_sip_context(outer);
}

void fork_branch_send(struct fork_branch *b, msg_t *msg) {
        struct fork *f = b->fork;
        struct proxy *p = f->proxy;
        f->busy++;
        b->sent = true;
        /* A stored message goes on after the sender's answer (202); a call does not. */
        if (b->cancelled || (f->final_status && !(f->kind == FORK_MESSAGE && f->late) &&
                             !b->cancel_after_send)) {
                msg_destroy(msg);
                branch_final(b, SIP_487_REQUEST_TERMINATED, NULL);
                goto out;
        }
        b->orq = nta_outgoing_mcreate(p->agent, on_branch_response, b, NULL, msg, TAG_END());
        if (!b->orq) {
                msg_destroy(msg);
                log_info("Cannot send to '%.*s'.", LOG_URI(b->uri));
                branch_final(b, SIP_503_SERVICE_UNAVAILABLE, NULL);
                goto out;
        }
        if (f->invite && loop_timer_new(daemon_loop(p->daemon), on_timer_c, b, &b->timer_c) >= 0)
                loop_timer_arm(b->timer_c, f->config->timer_c_ms);
        if (b->cancel_after_send) {
                /* nta sends it once the device answered provisionally (RFC 3261 §9.1). */
                log_info("INVITE to the device woken by a VoIP push, and its CANCEL.");
                branch_cancel(b, f->end_reason);
        }
out:
        f->busy--;
        fork_check(f);
}

int fork_branch_observe(struct fork_branch *b, fork_branch_observer_fn cb, void *userdata) {
        if (b->observer)
                return -EBUSY;
        b->observer = cb;
        b->observer_data = userdata;
        return 0;
}

void fork_branch_unobserve(struct fork_branch *b) {
        b->observer = NULL;
        b->observer_data = NULL;
}

bool fork_branch_first_use(struct fork_branch *b, const char *key) {
        struct fork *f = b->fork;
        if (strv_contains(f->used_keys, key))
                return false;
        if (strv_extend(&f->used_keys, key) < 0)
                log_oom();
        return true;
}

void fork_branch_voip_pushed(struct fork_branch *b) {
        b->voip_pushed = true;
}

void fork_branch_push_sent(struct fork_branch *b) {
        struct fork *f = b->fork;
        if (!f->invite || f->final_status || f->sent_push_provisional || !f->req)
                return;
        f->sent_push_provisional = true;
        send_upstream(f, 110, "Push sent", NULL);
}

const sip_t *fork_branch_request(struct fork_branch *b) {
        return sip_object(b->fork->request);
}

const char *fork_branch_uri(struct fork_branch *b) {
        return b->uri;
}

const char *fork_branch_uid(struct fork_branch *b) {
        return b->uid;
}

const char *fork_branch_aor(struct fork_branch *b) {
        return b->fork->aor;
}

void fork_branch_reply(struct fork_branch *b, int status, const char *phrase) {
        struct fork *f = b->fork;
        f->busy++;
        if (status >= 200)
                branch_final(b, status, phrase, NULL);
        f->busy--;
        fork_check(f);
}

void fork_branch_chain_done(struct fork_branch *b) {
        struct fork *f = b->fork;
        f->busy++;
        b->in_chain = false;
        if (!b->sent && !b->done) {
                log_debug("Branch '%.*s' left the chain unsent.", LOG_URI(b->uri));
                branch_final(b, SIP_480_TEMPORARILY_UNAVAILABLE, NULL);
        }
        f->busy--;
        fork_check(f);
}

static int branch_new(struct fork *f, const char *uri, const char *uid, char *const *routes,
                      struct fork_branch **ret) {
        struct fork_branch *b = calloc(1, sizeof *b);
        if (!b)
                return -ENOMEM;
        b->fork = f;
        b->uri = strdup(uri);
        b->uid = uid ? strdup(uid) : NULL;
        b->routes = routes ? strv_copy(routes) : NULL;
        if (!b->uri || (uid && !b->uid) || (routes && !b->routes)) {
                branch_free(b);
                return -ENOMEM;
        }
        /* Appended, so that branches keep the order of their targets. */
        struct fork_branch **tail = &f->branches;
        while (*tail)
                tail = &(*tail)->next;
        *tail = b;
        *ret = b;
        return 0;
}

/* The branch request: the incoming request with the target as Request-URI and the binding's
 * Path as Route. */
static msg_t *branch_message(struct fork *f, const char *uri, char *const *routes) {
        msg_t *msg = msg_copy(f->request);
        if (!msg)
                return NULL;
        sip_t *sip = sip_object(msg);
        su_home_t *home = msg_home(msg);
        const sip_request_t *rq = sip->sip_request;
        sip_request_t *nrq = sip_request_create(home, rq->rq_method, rq->rq_method_name,
                                                URL_STRING_MAKE(uri), NULL);
        if (!nrq || msg_header_replace(msg, (msg_pub_t *)sip, (msg_header_t *)sip->sip_request,
                                       (msg_header_t *)nrq) < 0)
                goto fail;
        size_t n = strv_length(routes);
        for (size_t i = n; i > 0; i--) {
                sip_route_t *r = sip_route_make(home, routes[i - 1]);
                if (!r || msg_header_insert(msg, (msg_pub_t *)sip, (msg_header_t *)r) < 0)
                        goto fail;
        }
        return msg;
fail:
        msg_destroy(msg);
        return NULL;
}

/* Sends the branch request into the chain (after Router). */
static void branch_dispatch(struct fork_branch *b) {
        struct fork *f = b->fork;
        b->queued = false;
        msg_t *msg = branch_message(f, b->uri, b->routes);
        if (!msg) {
                log_warning("Cannot make a request for target '%.*s', skipping.", LOG_URI(b->uri));
                b->done = true;
                b->status = 500;
                return;
        }
        log_debug("Branch to '%.*s'.", LOG_URI(b->uri));
        b->in_chain = true;
        proxy_request_branch(f->proxy, &f->origin, b, msg);
}

/* replaces: the branch to the same device it takes over from (its push state goes on), or
 * NULL. */
static struct fork_branch *start_branch(struct fork *f, const char *uri, const char *uid,
                                        char *const *routes, struct fork_branch *replaces) {
        struct fork_branch *b;
        if (branch_new(f, uri, uid, routes, &b) < 0) {
                log_oom();
                return NULL;
        }
        if (replaces)
                b->voip_pushed = replaces->voip_pushed;
        b->cancel_after_send = f->invite && f->cancelling;
        if (f->kind == FORK_MESSAGE && f->late && uid && f->key) {
                /* One stored message in flight per device, oldest first. */
                b->queued = true;
                pump(f->proxy->fork_index, f->key, uid);
        } else
                branch_dispatch(b);
        return b;
}

static void start_target(struct fork *f, const struct target *t) {
        log_debug("Target '%.*s' (q=%u).", LOG_URI(t->uri), t->q);
        start_branch(f, t->uri, t->uid, t->routes, NULL);
}

static void start_next_group(struct fork *f) {
        if (f->next_target >= f->n_targets)
                return;
        unsigned q = f->targets[f->next_target].q;
        while (f->next_target < f->n_targets && f->targets[f->next_target].q == q && !f->cancelling)
                start_target(f, &f->targets[f->next_target++]);
        if (f->next_target < f->n_targets && f->group_timer)
                loop_timer_arm(f->group_timer, f->config->group_timeout_ms);
}

static void on_group_timer(struct loop_timer *t, void *userdata) {
        struct fork *f = userdata;
        log_set_sip_context(&f->origin.log_ctx);
        f->busy++;
        if (!f->final_status && !f->cancelling) {
                log_debug("No final answer within %" PRIu64 " ms: next group.",
                          f->config->group_timeout_ms);
                start_next_group(f);
        }
        f->busy--;
        fork_check(f);
        log_set_sip_context(NULL);
}

/* Is an ended call waiting for a device woken by a VoIP push, which must get the INVITE and
 * its CANCEL? */
static bool voip_waiting(struct fork *f) {
        if (!f->late || f->late_expired || f->kind != FORK_CALL ||
            !f->config->voip_cancel_timeout_ms)
                return false;
        for (struct fork_branch *b = f->branches; b; b = b->next)
                if (!b->superseded && b->voip_pushed && b->done && unreachable(b->status))
                        return true;
        return false;
}

/* The call ended while devices woken by a VoIP push were still away: the caller gets its
 * answer now, the fork stays for them only, voip-cancel-timeout at most. */
static void voip_hold(struct fork *f) {
        if (f->voip_hold)
                return;
        f->voip_hold = true;
        if (!f->final_status)
                send_best(f);
        uint64_t now = realtime_msec();
        uint64_t left = f->expires_at > now ? f->expires_at - now : 0;
        uint64_t wait = MIN(left, f->config->voip_cancel_timeout_ms);
        log_info("Call for '%s' ended (%d): waiting %" PRIu64 " ms for the devices woken by a "
                 "VoIP push, to give them the INVITE and its CANCEL.",
                 f->aor, f->final_status, wait);
        if (f->late_timer)
                loop_timer_arm(f->late_timer, wait);
}

/* Does the fork wait for devices to register (again)? */
static bool late_waiting(struct fork *f) {
        if (!f->late || f->late_expired)
                return false;
        if (f->kind == FORK_CALL && (f->cancelling || f->final_status))
                return voip_waiting(f);
        if (!f->branches)
                return f->kind == FORK_MESSAGE; /* no device yet */
        for (struct fork_branch *b = f->branches; b; b = b->next)
                if (!b->superseded && b->done && unreachable(b->status))
                        return true;
        return false;
}

/* Runs at the end of every entry point: next group, final answer, end of the fork. */
static void fork_check(struct fork *f) {
        if (f->busy || f->freed)
                return;
        f->busy++;
        for (;;) {
                bool pending = false;
                for (struct fork_branch *b = f->branches; b; b = b->next)
                        if (!b->done || b->in_chain || b->held)
                                pending = true;
                if (pending)
                        break;
                if (!f->final_status && !f->cancelling && f->next_target < f->n_targets) {
                        start_next_group(f);
                        continue;
                }
                if (late_waiting(f)) {
                        /* Every device answered, some are unreachable: a MESSAGE sender
                         * learns now that it was accepted. */
                        if (f->kind == FORK_MESSAGE && !f->final_status)
                                send_upstream(f, 202, "Accepted", NULL);
                        else if (f->kind == FORK_CALL && (f->cancelling || f->final_status))
                                voip_hold(f);
                        break;
                }
                if (!f->final_status)
                        send_best(f);
                f->freed = true;
                if (f->store_id && f->proxy->message_store &&
                    message_store_remove(f->proxy->message_store, f->store_id) < 0)
                        log_warning("Failed to remove a delivered message from the store.");
                break;
        }
        f->busy--;
        if (f->freed) {
                fork_free(f);
                return;
        }
        if (f->req && f->final_status && ((f->kind == FORK_MESSAGE && f->late) || f->voip_hold)) {
                /* Answered: the sender's transaction ends, the message (or the INVITE for the
                 * devices woken by a VoIP push) waits on. */
                struct proxy_request *req = f->req;
                f->req = NULL;
                req->fork = NULL;
                proxy_request_resume(req, MODULE_STOP);
        }
}

/* From here on the fork owns the request and is listed by the proxy. */
static void fork_link(struct fork *f) {
        struct proxy *p = f->proxy;
        f->started = true;
        if (f->req)
                f->req->fork = f;
        f->next = p->forks;
        if (p->forks)
                p->forks->prev = f;
        p->forks = f;
        p->n_forks++;
}

/* The fork-late part of a start: index, store, timers. */
static void late_start(struct fork *f) {
        struct proxy *p = f->proxy;
        uint64_t now = realtime_msec();
        if (key_link(f) < 0) {
                log_oom();
                f->late = false;
                return;
        }
        if (!f->expires_at)
                f->expires_at = now + (f->kind == FORK_CALL ? f->config->call_fork_timeout_ms
                                                            : f->config->message_delivery_timeout_ms);
        if (loop_timer_new(daemon_loop(p->daemon), on_late_timer, f, &f->late_timer) >= 0)
                loop_timer_arm(f->late_timer, f->expires_at > now ? f->expires_at - now : 0);
        if (f->kind != FORK_MESSAGE || f->final_status)
                return;
        if (loop_timer_new(daemon_loop(p->daemon), on_accept_timer, f, &f->accept_timer) >= 0)
                loop_timer_arm(f->accept_timer, f->config->message_accept_timeout_ms);
        if (!p->message_store)
                return;
        size_t len = 0;
        _cleanup_free_ char *text = msg_as_string(NULL, f->request, NULL, 0, &len);
        if (!text || message_store_add(p->message_store, f->aor, f->received_at, f->expires_at,
                                       text, len, &f->store_id) < 0)
                log_warning("Failed to store a message for '%s': kept in memory only.", f->aor);
}

void fork_start(struct fork *f) {
        struct proxy *p = f->proxy;
        fork_link(f);
        if (f->late)
                late_start(f);

        if (f->n_targets > 1)
                qsort(f->targets, f->n_targets, sizeof *f->targets, target_compare);
        if (f->n_targets > 1 && f->targets[0].q != f->targets[f->n_targets - 1].q &&
            loop_timer_new(daemon_loop(p->daemon), on_group_timer, f, &f->group_timer) < 0)
                log_oom();
        f->busy++;
        if (f->req->cancelled) {
                f->cancelling = true;
        } else
                start_next_group(f);
        f->busy--;
        fork_check(f);
}

int fork_relay(struct proxy_request *req, msg_t *msg) {
        struct fork *f;
        struct fork_branch *b;
        int r = fork_new(req, NULL, &f);
        if (r < 0)
                return r;
        const url_t *u = sip_object(msg)->sip_request->rq_url;
        _cleanup_free_ char *uri = url_as_string(NULL, u);
        r = uri ? branch_new(f, uri, NULL, NULL, &b) : -ENOMEM;
        if (r < 0) {
                fork_abandon(f);
                return r;
        }
        fork_link(f);
        fork_branch_send(b, msg);
        return 0;
}

void fork_cancel(struct fork *f, const sip_reason_t *reason) {
        f->busy++;
        free(f->cancel_reason);
        f->cancel_reason = NULL;
        if (reason) {
                _cleanup_free_ char *text =
                        sip_header_as_string(NULL, (const sip_header_t *)reason);
                f->cancel_reason = text ? strdup(text) : NULL;
        }
        log_info("Caller CANCEL: cancelling the pending branches.");
        cancel_pending(f, f->cancel_reason);
        f->busy--;
        fork_check(f);
}

unsigned fork_count(struct proxy *p) {
        return p->n_forks;
}

void fork_free_all(struct proxy *p) {
        while (p->forks) {
                struct fork *f = p->forks;
                if (!f->final_status && f->store_id)
                        send_upstream(f, 202, "Accepted", NULL); /* it lives on in the store */
                else if (!f->final_status)
                        send_upstream(f, SIP_500_INTERNAL_SERVER_ERROR, NULL);
                for (struct fork_branch *b = f->branches; b; b = b->next)
                        b->in_chain = false;
                f->freed = true;
                fork_free(f);
        }
        if (p->fork_index) {
                free(p->fork_index->buckets);
                free(p->fork_index);
                p->fork_index = NULL;
        }
}

/* ---- fork-late: the index of late forks by AOR ---- */

static size_t key_hash(const char *aor) {
        size_t h = 14695981039346656037ULL; /* FNV-1a */
        for (const unsigned char *c = (const unsigned char *)aor; *c; c++)
                h = (h ^ *c) * 1099511628211ULL;
        return h;
}

static struct late_key *key_find(struct fork_index *ix, const char *aor) {
        if (!ix || !ix->n_buckets)
                return NULL;
        for (struct late_key *k = ix->buckets[key_hash(aor) % ix->n_buckets]; k; k = k->next)
                if (streq(k->aor, aor))
                        return k;
        return NULL;
}

static int index_grow(struct fork_index *ix) {
        size_t n = ix->n_buckets ? ix->n_buckets * 2 : 256;
        struct late_key **b = calloc(n, sizeof *b);
        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < ix->n_buckets; i++)
                while (ix->buckets[i]) {
                        struct late_key *k = ix->buckets[i];
                        ix->buckets[i] = k->next;
                        size_t j = key_hash(k->aor) % n;
                        k->next = b[j];
                        b[j] = k;
                }
        free(ix->buckets);
        ix->buckets = b;
        ix->n_buckets = n;
        return 0;
}

/* A device of a key's AOR registered (on this proxy, or on any proxy sharing the Redis
 * registrar): its current bindings are fetched and the late forks of the AOR see them. */
static void on_device_fetched(int error, struct registrar_record *rec, void *userdata) {
        struct proxy *p = userdata;
        if (error < 0)
                log_warning_errno(error, "Registrar lookup after a registration failed: %m");
        else
                fork_late_on_register(p, rec);
        registrar_record_free(rec);
}

static void on_device_registered(const char *aor, const char *unique_id, void *userdata) {
        struct proxy *p = userdata;
        struct registrar *reg = proxy_registrar(p);
        if (!reg || !key_find(p->fork_index, aor))
                return;
        log_debug("Device '%s' of '%s' registered.", log_uid(unique_id), aor);
        struct registrar_store *s = registrar_get_store(reg);
        int r = s->ops->fetch(s, aor, on_device_fetched, p);
        if (r < 0)
                log_warning_errno(r, "Registrar lookup of '%s' failed: %m", aor);
}

static int key_link(struct fork *f) {
        struct proxy *p = f->proxy;
        if (!p->fork_index && !(p->fork_index = calloc(1, sizeof *p->fork_index)))
                return -ENOMEM;
        struct fork_index *ix = p->fork_index;
        struct late_key *k = key_find(ix, f->aor);
        if (!k) {
                if (ix->n_keys >= ix->n_buckets && index_grow(ix) < 0)
                        return -ENOMEM;
                k = calloc(1, sizeof *k);
                if (!k || !(k->aor = strdup(f->aor))) {
                        free(k);
                        return -ENOMEM;
                }
                size_t j = key_hash(k->aor) % ix->n_buckets;
                k->next = ix->buckets[j];
                ix->buckets[j] = k;
                ix->n_keys++;
                struct registrar *reg = proxy_registrar(p);
                int r = reg ? registrar_listen(reg, k->aor, on_device_registered, p) : 0;
                if (r < 0)
                        log_warning_errno(r, "Cannot follow the registrations of '%s': %m",
                                          k->aor);
        }
        f->key = k;
        /* In arrival order: a new fork goes last; a message restored or taken over from
         * another proxy may be older than some of ours. */
        struct fork *after = k->last;
        while (after && after->received_at > f->received_at)
                after = after->key_prev;
        f->key_prev = after;
        f->key_next = after ? after->key_next : k->first;
        if (f->key_next)
                f->key_next->key_prev = f;
        else
                k->last = f;
        if (after)
                after->key_next = f;
        else
                k->first = f;
        if (f->kind == FORK_MESSAGE) {
                size_t len = 0;
                _cleanup_free_ char *text = msg_as_string(NULL, f->request, NULL, 0, &len);
                f->size = len;
                k->n_messages++;
                ix->n_messages++;
                ix->message_bytes += f->size;
        }
        return 0;
}

static void key_unlink(struct fork *f) {
        struct late_key *k = f->key;
        if (!k)
                return;
        struct fork_index *ix = f->proxy->fork_index;
        if (f->key_prev)
                f->key_prev->key_next = f->key_next;
        else
                k->first = f->key_next;
        if (f->key_next)
                f->key_next->key_prev = f->key_prev;
        else
                k->last = f->key_prev;
        if (f->kind == FORK_MESSAGE) {
                k->n_messages--;
                ix->n_messages--;
                ix->message_bytes -= f->size;
        }
        f->key = NULL;
        if (k->first)
                return;
        struct late_key **pp = &ix->buckets[key_hash(k->aor) % ix->n_buckets];
        while (*pp != k)
                pp = &(*pp)->next;
        *pp = k->next;
        ix->n_keys--;
        struct registrar *reg = proxy_registrar(f->proxy);
        if (reg)
                registrar_unlisten(reg, k->aor, on_device_registered, f->proxy);
        free(k->aor);
        free(k);
}

int fork_message_admit(struct proxy *p, const char *aor, size_t size, const char **warning) {
        const struct fork_config *c = config_of(p);
        struct fork_index *ix = p->fork_index;
        struct late_key *k = key_find(ix, aor);
        if (c->max_stored_message_size && size > c->max_stored_message_size) {
                *warning = "399 sipfleet \"Message too large to be stored\"";
                return 513;
        }
        if (k && c->max_pending_messages_per_aor > 0 &&
            k->n_messages >= (uint64_t)c->max_pending_messages_per_aor) {
                *warning = "399 sipfleet \"Too many messages waiting for this address\"";
                return 486;
        }
        if (ix && c->max_store_size && ix->message_bytes + size > c->max_store_size) {
                *warning = "399 sipfleet \"Message store full\"";
                return 503;
        }
        return 0;
}

unsigned fork_n_pending_messages(struct proxy *p) {
        return p->fork_index ? p->fork_index->n_messages : 0;
}

/* The branch now standing for device uid: the newest one not replaced. */
static struct fork_branch *current_branch(struct fork *f, const char *uid) {
        struct fork_branch *found = NULL;
        for (struct fork_branch *b = f->branches; b; b = b->next)
                if (b->uid && !b->superseded && streq(b->uid, uid))
                        found = b;
        return found;
}

/* Sends the oldest stored message device uid has not received yet, unless one is in flight or
 * the device was found unreachable (then it waits for its next registration). */
static void pump(struct fork_index *ix, struct late_key *k, const char *uid) {
        for (struct fork *f = k->first; f; f = f->key_next) {
                if (f->kind != FORK_MESSAGE || f->freed || f->late_expired)
                        continue;
                struct fork_branch *b = current_branch(f, uid);
                if (!b)
                        continue;
                if (b->queued) {
                        f->busy++;
                        branch_dispatch(b);
                        f->busy--;
                        fork_check(f);
                        return;
                }
                if (!b->done || b->in_chain || unreachable(b->status))
                        return;
        }
}

static void on_accept_timer(struct loop_timer *t, void *userdata) {
        struct fork *f = userdata;
        log_set_sip_context(&f->origin.log_ctx);
        if (!f->final_status) {
                log_info("No answer within message-accept-timeout: 202 to the sender.");
                f->busy++;
                send_upstream(f, 202, "Accepted", NULL);
                f->busy--;
                fork_check(f);
        }
        log_set_sip_context(NULL);
}

static void on_late_timer(struct loop_timer *t, void *userdata) {
        struct fork *f = userdata;
        log_set_sip_context(&f->origin.log_ctx);
        f->busy++;
        f->late_expired = true;
        unsigned waiting = 0;
        for (struct fork_branch *b = f->branches; b; b = b->next) {
                if (b->superseded)
                        continue;
                if (b->queued) {
                        b->queued = false;
                        b->done = true;
                        b->status = 408;
                }
                if (!b->done || unreachable(b->status))
                        waiting++;
        }
        if (f->kind == FORK_MESSAGE)
                log_notice("Message for '%s' expired: dropped, %u device(s) did not get it%s.",
                           f->aor, waiting, f->branches ? "" : " (no device registered)");
        else if (f->voip_hold)
                log_info("voip-cancel-timeout: ending the call fork for '%s'; %u device(s) woken "
                         "by a VoIP push did not get the INVITE and its CANCEL.", f->aor,
                         waiting);
        else
                log_info("call-fork-timeout: ending the call fork for '%s'.", f->aor);
        cancel_pending(f, NULL);
        f->busy--;
        fork_check(f);
        log_set_sip_context(NULL);
}

static bool contact_secure(const char *uri) {
        if (strncasecmp(uri, "sips:", 5) == 0)
                return true;
        const char *t = strcasestr(uri, ";transport=");
        return t && strncasecmp(t + 11, "tls", 3) == 0;
}

static void late_register_one(struct fork *f, const struct registrar_record *rec) {
        if (f->late_expired || f->freed)
                return;
        bool ended = f->kind == FORK_CALL && (f->final_status || f->cancelling);
        if (ended && !voip_waiting(f))
                return;
        const url_t *ruri = sip_object(f->request)->sip_request->rq_url;
        bool sips = ruri->url_type == url_sips;
        uint64_t now = realtime_msec();
        for (size_t i = 0; i < rec->n_bindings; i++) {
                const struct registrar_binding *bd = &rec->bindings[i];
                if (!bd->unique_id || (sips && !contact_secure(bd->contact)) ||
                    !registrar_binding_routable(bd, now, f->kind == FORK_MESSAGE))
                        continue;
                if (f->instance) {
                        _cleanup_free_ char *instance = registrar_gruu_instance(bd->unique_id);
                        if (!instance || strcasecmp(instance, f->instance) != 0)
                                continue;
                }
                struct fork_branch *b = current_branch(f, bd->unique_id);
                if (ended) {
                        /* Only the devices woken by a VoIP push: INVITE, then CANCEL. */
                        if (!b || !b->voip_pushed || !b->done || !unreachable(b->status))
                                continue;
                        log_info("Device '%s' of '%s', woken by a VoIP push, registered after "
                                 "the call ended: INVITE then CANCEL.",
                                 log_uid(bd->unique_id), f->aor);
                        b->superseded = true;
                        start_branch(f, bd->contact, bd->unique_id, bd->path, b);
                        continue;
                }
                if (!b) {
                        log_info("Device '%s' of '%s' registered: new branch.", log_uid(bd->unique_id),
                                 f->aor);
                        start_branch(f, bd->contact, bd->unique_id, bd->path, NULL);
                } else if (b->queued) {
                        /* Not sent yet: it goes to where the device is now. */
                        char *uri = strdup(bd->contact);
                        char **routes = bd->path ? strv_copy(bd->path) : NULL;
                        if (!uri || (bd->path && !routes)) {
                                free(uri);
                                strv_free(routes);
                                continue;
                        }
                        free(b->uri);
                        strv_free(b->routes);
                        b->uri = uri;
                        b->routes = routes;
                } else if (b->done) {
                        if (!unreachable(b->status))
                                continue; /* it answered */
                        log_info("Device '%s' of '%s' registered again: sending again.",
                                 log_uid(bd->unique_id), f->aor);
                        b->superseded = true;
                        start_branch(f, bd->contact, bd->unique_id, bd->path, b);
                } else if (b->status <= 100 && !registrar_uri_equal(b->uri, bd->contact)) {
                        /* Silent, and it moved (new connection, new address). */
                        log_info("Device '%s' of '%s' moved: sending again.", log_uid(bd->unique_id),
                                 f->aor);
                        if (f->invite)
                                branch_cancel(b, NULL);
                        b->superseded = true;
                        start_branch(f, bd->contact, bd->unique_id, bd->path, b);
                }
        }
}

void fork_late_on_register(struct proxy *p, const struct registrar_record *rec) {
        struct late_key *k = key_find(p->fork_index, rec->aor);
        if (!k)
                return;
        size_t n = 0;
        for (struct fork *f = k->first; f; f = f->key_next)
                n++;
        _cleanup_free_ struct fork **v = calloc(n, sizeof *v);
        if (!v) {
                log_oom();
                return;
        }
        n = 0;
        for (struct fork *f = k->first; f; f = f->key_next) {
                v[n++] = f;
                f->busy++;
        }
        for (size_t i = 0; i < n; i++) {
                log_set_sip_context(&v[i]->origin.log_ctx);
                late_register_one(v[i], rec);
        }
        log_set_sip_context(NULL);
        for (size_t i = 0; i < rec->n_bindings; i++)
                if (rec->bindings[i].unique_id)
                        pump(p->fork_index, k, rec->bindings[i].unique_id);
        for (size_t i = 0; i < n; i++) {
                v[i]->busy--;
                fork_check(v[i]);
        }
}

int fork_restore(struct proxy *p, const struct message_store_entry *e) {
        msg_t *msg = msg_make(sip_default_mclass(), 0, e->data, (ssize_t)e->len);
        const sip_t *sip = msg ? sip_object(msg) : NULL;
        if (!sip || !sip->sip_request || sip->sip_request->rq_method != sip_method_message ||
            !sip->sip_call_id || !sip->sip_via) {
                if (msg)
                        msg_destroy(msg);
                return -EBADMSG;
        }
        struct fork *f = fork_alloc(p, msg, e->aor);
        msg_destroy(msg); /* the fork holds its reference */
        if (!f)
                return -ENOMEM;
        f->late = true;
        if (!f->aor && !(f->aor = strdup(e->aor))) {
                f->freed = true;
                fork_free(f);
                return -ENOMEM;
        }
        f->origin.next_module = f->config->chain_next;
        proxy_log_context(sip_object(f->request), msg_home(f->request), &f->origin.log_ctx);
        f->store_id = e->id;
        f->received_at = e->received_at;
        f->expires_at = e->expires_at;
        f->final_status = 202; /* the sender got its answer before the restart */
        STRV_FOREACH(d, e->delivered) {
                struct fork_branch *b;
                if (branch_new(f, "", *d, NULL, &b) < 0) {
                        f->freed = true;
                        fork_free(f);
                        return -ENOMEM;
                }
                b->done = b->sent = true;
                b->status = 200;
        }
        fork_link(f);
        late_start(f);
        return 0;
}

void fork_drop_messages(struct proxy *p, bool (*keep)(int64_t store_id, void *userdata),
                        void *userdata) {
        size_t n = 0;
        for (struct fork *f = p->forks; f; f = f->next)
                if (f->kind == FORK_MESSAGE && f->store_id && !f->freed && !f->late_expired &&
                    !keep(f->store_id, userdata))
                        n++;
        if (n == 0)
                return;
        _cleanup_free_ struct fork **v = calloc(n, sizeof *v);
        if (!v) {
                log_oom();
                return;
        }
        n = 0;
        for (struct fork *f = p->forks; f; f = f->next)
                if (f->kind == FORK_MESSAGE && f->store_id && !f->freed && !f->late_expired &&
                    !keep(f->store_id, userdata))
                        v[n++] = f;
        /* Each ends like an expired one, but leaves the store alone: it is not ours. */
        for (size_t i = 0; i < n; i++) {
                struct fork *f = v[i];
                log_set_sip_context(&f->origin.log_ctx);
                log_notice("Message for '%s' is held by another proxy now: no longer delivered "
                           "from here.", f->aor);
                f->busy++;
                f->late_expired = true;
                f->store_id = 0;
                for (struct fork_branch *b = f->branches; b; b = b->next)
                        if (b->queued) {
                                b->queued = false;
                                b->done = true;
                                b->status = 408;
                        }
                cancel_pending(f, NULL);
                f->busy--;
                fork_check(f);
        }
        log_set_sip_context(NULL);
}

struct json_t *fork_pending_messages(struct proxy *p, const char *aor) {
        json_t *a = json_array();
        struct fork_index *ix = p->fork_index;
        uint64_t now = realtime_msec();
        for (size_t i = 0; a && ix && i < ix->n_buckets; i++)
                for (struct late_key *k = ix->buckets[i]; k; k = k->next) {
                        if (aor && !streq(k->aor, aor))
                                continue;
                        for (struct fork *f = k->first; f; f = f->key_next) {
                                if (f->kind != FORK_MESSAGE)
                                        continue;
                                const sip_t *sip = sip_object(f->request);
                                json_t *delivered = json_array(), *waiting = json_array();
                                for (struct fork_branch *b = f->branches; b; b = b->next) {
                                        if (!b->uid || b->superseded)
                                                continue;
                                        bool got = b->done && !unreachable(b->status);
                                        json_array_append_new(got ? delivered : waiting,
                                                              json_string(b->uid));
                                }
                                _cleanup_free_ char *from =
                                        sip->sip_from ? url_as_string(NULL, sip->sip_from->a_url)
                                                      : NULL;
                                json_array_append_new(
                                        a, json_pack("{s:I, s:s, s:s?, s:s?, s:I, s:I, s:I, s:o, s:o}",
                                                     "id", (json_int_t)f->store_id, "aor", f->aor,
                                                     "from", from, "call-id",
                                                     sip->sip_call_id ? sip->sip_call_id->i_id : NULL,
                                                     "received-at", (json_int_t)(f->received_at / 1000),
                                                     "waiting-seconds",
                                                     (json_int_t)((now - f->received_at) / 1000),
                                                     "expires-in",
                                                     (json_int_t)(f->expires_at > now
                                                                          ? (f->expires_at - now) / 1000
                                                                          : 0),
                                                     "delivered", delivered, "waiting", waiting));
                        }
                }
        return a;
}
