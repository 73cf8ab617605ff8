/* SPDX-License-Identifier: MIT */
/* The fork engine: one incoming request relayed to one or more branches (see fork.h). */
#define LOG_SUBSYSTEM LOG_router
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>

#include <sofia-sip/msg_header.h>
#include <sofia-sip/sip_util.h>

#include "daemon.h"
#include "fork.h"
#include "loop.h"
#include "module.h"
#include "proxy.h"

#define REASON_CALL_COMPLETED  "SIP;cause=200;text=\"Call completed elsewhere\""
#define REASON_BUSY_EVERYWHERE "SIP;cause=600;text=\"Busy Everywhere\""

static const struct fork_config default_config = {
        .group_timeout_ms = 10 * 1000,
        .timer_c_ms = 185 * 1000,
};

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
        nta_outgoing_t *orq;
        struct loop_timer *timer_c;
        int status;         /* last response, 0 when none */
        bool in_chain;      /* its request travels the modules */
        bool sent;          /* handed to nta */
        bool done;          /* final response received (or made up) */
        bool cancelled;     /* CANCEL sent, or not to be sent at all */
        bool timer_c_fired; /* a 487 after Timer C counts as 408 */
};

struct fork {
        struct proxy *proxy;
        struct fork *prev, *next; /* in proxy->forks */
        struct proxy_request *req;
        const struct fork_config *config;
        bool invite;
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
        char *cancel_reason; /* Reason of the CANCELs we send */
        unsigned busy;       /* re-entrancy guard: completion is checked at the outermost */
        bool freed;
};

static void fork_check(struct fork *f);

static const struct fork_config *config_of(struct proxy *p) {
        return p->fork_config ? p->fork_config : &default_config;
}

int fork_new(struct proxy_request *req, struct fork **ret) {
        struct proxy *p = req->proxy;
        struct fork *f = calloc(1, sizeof *f);
        if (!f)
                return -ENOMEM;
        f->proxy = p;
        f->req = req;
        f->config = config_of(p);
        f->invite = req->sip->sip_request->rq_method == sip_method_invite;
        *ret = f;
        return 0;
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
        if (b->orq)
                nta_outgoing_destroy(b->orq);
        loop_timer_free(b->timer_c);
        free(b->uri);
        free(b->uid);
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
        if (f->best)
                msg_destroy(f->best);
        free(f->cancel_reason);
        if (f->started) {
                if (f->prev)
                        f->prev->next = f->next;
                else
                        p->forks = f->next;
                if (f->next)
                        f->next->prev = f->prev;
                p->n_forks--;
        }
        struct proxy_request *req = f->req;
        free(f);
        if (req) {
                req->fork = NULL;
                proxy_request_resume(req, MODULE_STOP);
        }
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
        nta_incoming_t *irq = f->req->irq;
        if (status >= 200)
                f->final_status = status;
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
        if (sip->sip_via && nta_msg_tsend(f->proxy->agent, msg, NULL, TAG_END()) >= 0)
                return;
        msg_destroy(msg);
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

static void keep_best(struct fork *f, int status, const char *phrase, msg_t *msg) {
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

static void send_best(struct fork *f) {
        int status = f->best_status;
        msg_t *msg = TAKE_PTR(f->best);
        if (!status) {
                /* No branch answered: everything was cancelled, or there was nothing to try. */
                if (f->cancelling)
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
                log_debug("Failed to CANCEL branch '%s'.", b->uri);
}

static void cancel_pending(struct fork *f, const char *reason) {
        f->cancelling = true;
        for (struct fork_branch *b = f->branches; b; b = b->next)
                branch_cancel(b, reason);
}

static void branch_final(struct fork_branch *b, int status, const char *phrase, msg_t *msg) {
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
        if (b->timer_c_fired && status == 487) {
                if (msg)
                        msg_destroy(msg);
                msg = NULL;
                status = 408;
                phrase = sip_408_Request_timeout;
        }

        if (status < 300) {
                if (!f->final_status)
                        send_upstream(f, status, phrase, msg);
                else if (f->invite && f->final_status < 300 && msg)
                        send_stateless(f, msg);
                else if (msg)
                        msg_destroy(msg);
                if (f->invite)
                        cancel_pending(f, REASON_CALL_COMPLETED);
                else
                        f->cancelling = true;
                return;
        }
        if (f->final_status) {
                if (msg)
                        msg_destroy(msg);
                return;
        }
        keep_best(f, status, phrase, msg);
        if (status >= 600 && f->invite && !f->config->no_global_decline)
                cancel_pending(f, REASON_BUSY_EVERYWHERE);
}

static void on_timer_c(struct loop_timer *t, void *userdata) {
        struct fork_branch *b = userdata;
        struct fork *f = b->fork;
        log_set_sip_context(&f->req->log_ctx);
        f->busy++;
        log_info("Timer C fired on branch '%s'.", b->uri);
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

static int on_branch_response(struct fork_branch *b, nta_outgoing_t *orq, const sip_t *sip) {
        struct fork *f = b->fork;
        int status = sip->sip_status->st_status;

        log_set_sip_context(&f->req->log_ctx);
        f->busy++;
        if (nta_sip_is_internal(sip)) {
                /* nta's own 408 (timeout) or 503 (transport error). */
                log_info("Branch '%s': %d %s.", b->uri, status, sip->sip_status->st_phrase);
                if (status >= 200)
                        branch_final(b, status,
                                     status == 408 ? sip_408_Request_timeout
                                                   : sip_503_Service_unavailable,
                                     NULL);
                goto out;
        }
        msg_t *msg = nta_outgoing_getresponse(orq);
        sip_t *rs = sip_object(msg);
        sip_via_remove(msg, rs);
        modules_on_response(f->proxy->modules, f->proxy->n_modules, msg, rs);
        if (!rs->sip_via) {
                /* It was addressed to us, not to be relayed (§16.7 step 3). */
                msg_destroy(msg);
                if (status >= 200)
                        branch_final(b, status, sip->sip_status->st_phrase, NULL);
                goto out;
        }
        if (status < 200) {
                b->status = status;
                if (f->invite && b->timer_c && !b->cancelled)
                        loop_timer_arm(b->timer_c, f->config->timer_c_ms);
                if (status > 100 && !f->final_status && !b->done)
                        send_upstream(f, status, NULL, msg);
                else
                        msg_destroy(msg);
                goto out;
        }
        branch_final(b, status, NULL, msg);
out:
        f->busy--;
        fork_check(f);
        log_set_sip_context(NULL);
        return 0;
}

void fork_branch_send(struct fork_branch *b, msg_t *msg) {
        struct fork *f = b->fork;
        struct proxy *p = f->proxy;
        f->busy++;
        b->sent = true;
        if (b->cancelled || f->final_status) {
                msg_destroy(msg);
                branch_final(b, SIP_487_REQUEST_TERMINATED, NULL);
                goto out;
        }
        b->orq = nta_outgoing_mcreate(p->agent, on_branch_response, b, NULL, msg, TAG_END());
        if (!b->orq) {
                msg_destroy(msg);
                log_info("Cannot send to '%s'.", b->uri);
                branch_final(b, SIP_503_SERVICE_UNAVAILABLE, NULL);
                goto out;
        }
        if (f->invite && loop_timer_new(daemon_loop(p->daemon), on_timer_c, b, &b->timer_c) >= 0)
                loop_timer_arm(b->timer_c, f->config->timer_c_ms);
out:
        f->busy--;
        fork_check(f);
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
                log_debug("Branch '%s' left the chain unsent.", b->uri);
                branch_final(b, SIP_480_TEMPORARILY_UNAVAILABLE, NULL);
        }
        f->busy--;
        fork_check(f);
}

static int branch_new(struct fork *f, const char *uri, const char *uid, struct fork_branch **ret) {
        struct fork_branch *b = calloc(1, sizeof *b);
        if (!b)
                return -ENOMEM;
        b->fork = f;
        b->uri = strdup(uri);
        b->uid = uid ? strdup(uid) : NULL;
        if (!b->uri || (uid && !b->uid)) {
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
static msg_t *branch_message(struct fork *f, const struct target *t) {
        msg_t *msg = msg_copy(f->req->msg);
        if (!msg)
                return NULL;
        sip_t *sip = sip_object(msg);
        su_home_t *home = msg_home(msg);
        const sip_request_t *rq = sip->sip_request;
        sip_request_t *nrq = sip_request_create(home, rq->rq_method, rq->rq_method_name,
                                                URL_STRING_MAKE(t->uri), NULL);
        if (!nrq || msg_header_replace(msg, (msg_pub_t *)sip, (msg_header_t *)sip->sip_request,
                                       (msg_header_t *)nrq) < 0)
                goto fail;
        size_t n = strv_length(t->routes);
        for (size_t i = n; i > 0; i--) {
                sip_route_t *r = sip_route_make(home, t->routes[i - 1]);
                if (!r || msg_header_insert(msg, (msg_pub_t *)sip, (msg_header_t *)r) < 0)
                        goto fail;
        }
        return msg;
fail:
        msg_destroy(msg);
        return NULL;
}

static void start_target(struct fork *f, const struct target *t) {
        struct fork_branch *b;
        if (branch_new(f, t->uri, t->uid, &b) < 0) {
                log_oom();
                return;
        }
        msg_t *msg = branch_message(f, t);
        if (!msg) {
                log_warning("Cannot make a request for target '%s', skipping.", t->uri);
                b->done = true;
                b->status = 500;
                return;
        }
        log_debug("Branch to '%s' (q=%u).", t->uri, t->q);
        b->in_chain = true;
        proxy_request_branch(f->req, b, msg);
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
        log_set_sip_context(&f->req->log_ctx);
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

/* Runs at the end of every entry point: next group, final answer, end of the fork. */
static void fork_check(struct fork *f) {
        if (f->busy || f->freed)
                return;
        f->busy++;
        for (;;) {
                bool pending = false;
                for (struct fork_branch *b = f->branches; b; b = b->next)
                        if (!b->done || b->in_chain)
                                pending = true;
                if (pending)
                        break;
                if (!f->final_status && !f->cancelling && f->next_target < f->n_targets) {
                        start_next_group(f);
                        continue;
                }
                if (!f->final_status)
                        send_best(f);
                f->freed = true;
                break;
        }
        f->busy--;
        if (f->freed)
                fork_free(f);
}

/* From here on the fork owns the request and is listed by the proxy. */
static void fork_link(struct fork *f) {
        struct proxy *p = f->proxy;
        f->started = true;
        f->req->fork = f;
        f->next = p->forks;
        if (p->forks)
                p->forks->prev = f;
        p->forks = f;
        p->n_forks++;
}

void fork_start(struct fork *f) {
        struct proxy *p = f->proxy;
        fork_link(f);

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
        int r = fork_new(req, &f);
        if (r < 0)
                return r;
        const url_t *u = sip_object(msg)->sip_request->rq_url;
        _cleanup_free_ char *uri = url_as_string(NULL, u);
        r = uri ? branch_new(f, uri, NULL, &b) : -ENOMEM;
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
                if (!f->final_status)
                        send_upstream(f, SIP_500_INTERNAL_SERVER_ERROR, NULL);
                for (struct fork_branch *b = f->branches; b; b = b->next)
                        b->in_chain = false;
                f->freed = true;
                fork_free(f);
        }
}
