/* SPDX-License-Identifier: MIT */
#pragma once

/* The stateful relay of one incoming request to one or more targets (RFC 3261 §16.5-16.10).
 *
 * A fork owns its incoming request until the end. Router adds the targets found in the
 * registrar and starts the fork: targets are tried by groups of equal q (highest first), each
 * group in parallel; the next group starts when the current one has answered, or after
 * group-timeout. Each branch request enters the module chain right after the module that
 * started the fork (PushNotification, MediaRelay, Forward see every branch); Forward hands it
 * back with fork_branch_send().
 *
 * Responses: provisional ones are relayed upstream; the first 2xx is relayed and, for INVITE,
 * the other branches are CANCELled with Reason cause=200; a 6xx cancels them with cause=600
 * (unless no-global-decline); otherwise the best final response (§16.7) is sent when every
 * branch has answered. A CANCEL from the caller is propagated with its Reason. Timer C guards
 * each INVITE branch. */

#include <stdbool.h>
#include <stdint.h>

#include "sofia.h"

struct proxy;
struct proxy_request;
struct fork;
struct fork_branch;

struct fork_config {
        uint64_t group_timeout_ms; /* next q-group after this long without a final answer */
        uint64_t timer_c_ms;       /* RFC 3261 Timer C for INVITE branches */
        bool no_global_decline;    /* a 6xx does not cancel the other branches */
};

struct fork_target {
        const char *uri;     /* Request-URI of the branch */
        char *const *routes; /* Route values pushed on top (the binding's Path); may be NULL */
        unsigned q;          /* q-value in thousandths */
        const char *uid;     /* device unique id; may be NULL */
};

/* req: an incoming request suspended in the chain. The fork takes it over at fork_start(). */
int fork_new(struct proxy_request *req, struct fork **ret);
int fork_add_target(struct fork *f, const struct fork_target *t);
size_t fork_n_targets(struct fork *f);
/* Starts the first group. From here on the fork answers and ends the request. */
void fork_start(struct fork *f);
/* Frees a fork that was never started (the request stays with the caller). */
void fork_abandon(struct fork *f);

/* Relays msg (owned by the call) as the only branch of a new fork for req: requests that no
 * module routed (in-dialog requests, foreign domains). On success the fork owns req; on error
 * the caller still does. */
int fork_relay(struct proxy_request *req, msg_t *msg);

/* Forward sends the request of a branch (msg ownership taken). */
void fork_branch_send(struct fork_branch *b, msg_t *msg);
/* A module answered a branch request itself (loop, push failure...). */
void fork_branch_reply(struct fork_branch *b, int status, const char *phrase);
/* The branch request left the chain (sent, answered, or dropped by a module). */
void fork_branch_chain_done(struct fork_branch *b);

/* The caller CANCELled (reason: its Reason header, may be NULL). */
void fork_cancel(struct fork *f, const sip_reason_t *reason);

/* Forks still alive; fork_free_all() ends them all at shutdown (500 to the callers). */
unsigned fork_count(struct proxy *p);
void fork_free_all(struct proxy *p);
