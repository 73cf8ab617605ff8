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
 * each INVITE branch.
 *
 * Fork-late ([module::Router] fork-late, message-fork-late): a fork indexed by its AOR stays
 * open after its branches answered 503 or 408 (device unreachable), or, for a MESSAGE, had no
 * device at all; when a device of that AOR registers (fork_late_on_register) it gets a branch:
 * a new device a new one, an unreachable or moved one the request again, one that answered
 * nothing more. Calls wait call-fork-timeout; MESSAGEs get 202 Accepted after
 * message-accept-timeout, wait message-delivery-timeout, reach each device once and in the
 * order they were received (one message in flight per device), and are kept in the message
 * store so that a restart loses none (fork_restore).
 *
 * iOS VoIP (PushKit): an app woken by a VoIP push must report a call to CallKit, so the device
 * must get the INVITE even when the call ended meanwhile. A call fork whose INVITE is cancelled
 * by the caller (or answered elsewhere, or declined everywhere) while a device it pushed with a
 * VoIP push (fork_branch_voip_pushed) is still unreachable answers the caller at once (487...)
 * but stays open voip-cancel-timeout (within call-fork-timeout) for those devices only: when
 * one registers it gets the INVITE, then a CANCEL for it with the same Reason. */

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
        bool fork_late;            /* INVITE */
        bool message_fork_late;
        uint64_t call_fork_timeout_ms;
        uint64_t voip_cancel_timeout_ms; /* a cancelled call waits for VoIP-pushed devices */
        uint64_t message_delivery_timeout_ms;
        uint64_t message_accept_timeout_ms;
        int64_t max_pending_messages_per_aor;
        uint64_t max_stored_message_size;
        uint64_t max_store_size; /* bytes of pending messages in all */
        size_t chain_next;       /* the module after Router: where branch requests start */
};

struct message_store;
struct message_store_entry;
struct registrar_record;
struct json_t;

struct fork_target {
        const char *uri;     /* Request-URI of the branch */
        char *const *routes; /* Route values pushed on top (the binding's Path); may be NULL */
        unsigned q;          /* q-value in thousandths */
        const char *uid;     /* device unique id; may be NULL */
};

/* req: an incoming request suspended in the chain. The fork takes it over at fork_start().
 * aor: the address the request was routed for (fork-late index key), NULL for none. */
int fork_new(struct proxy_request *req, const char *aor, struct fork **ret);
/* Will this fork wait for devices (fork-late)? Decided at fork_new from the method, the
 * configuration and, for MESSAGE, the content (no is-composing, no Expires: 0). */
bool fork_is_late(struct fork *f);
/* The request names one device (a GRUU, RFC 5627): fork-late accepts only that instance. */
int fork_set_instance(struct fork *f, const char *instance);
bool fork_is_stored_message(struct fork *f);
/* Before storing one more MESSAGE for aor: 0, or the status to answer with (486: too many
 * pending for aor, 513: too large, 503: the store is full) and a Warning text. */
int fork_message_admit(struct proxy *p, const char *aor, size_t size, const char **warning);
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

/* One observer per branch (PushNotification): cb(b, status) for each provisional response
 * above 100 and for the final one (made-up finals included: 408, 503...); cb(b, -1) when the
 * branch goes away. The observer must not call back into the fork from cb. -EBUSY when the
 * branch has one already. */
typedef void (*fork_branch_observer_fn)(struct fork_branch *b, int status, void *userdata);
int fork_branch_observe(struct fork_branch *b, fork_branch_observer_fn cb, void *userdata);
void fork_branch_unobserve(struct fork_branch *b);
/* Records key (e.g. the push token) on the branch's fork: true the first time, false when a
 * branch of the same fork recorded it before (a device re-dispatched after it registered). */
bool fork_branch_first_use(struct fork_branch *b, const char *key);
/* The branch's device was woken with an iOS VoIP (PushKit) push: if the call ends before it
 * registers, it still gets the INVITE then the CANCEL (see above). */
void fork_branch_voip_pushed(struct fork_branch *b);
/* "110 Push sent" to an INVITE's caller, once per fork, while no final answer was sent. */
void fork_branch_push_sent(struct fork_branch *b);
/* The request of the branch's fork as received (for From, Call-ID...). */
const sip_t *fork_branch_request(struct fork_branch *b);
const char *fork_branch_uri(struct fork_branch *b);
/* The device's unique id and the AOR it was routed for; NULL when not known. */
const char *fork_branch_uid(struct fork_branch *b);
const char *fork_branch_aor(struct fork_branch *b);
/* Hooks of the MediaRelay module (proxy->fork_hooks), which must rewrite the SDP of a
 * response after an NG round trip, without blocking the loop. */
struct fork_hooks {
        /* Each response of a branch, after the modules' on_response. Returning true holds msg
         * (ownership taken): the branch keeps its fork alive until fork_branch_release(b, msg)
         * relays it on (fork_free_all at shutdown frees held branches: drop msg then). */
        bool (*hold_response)(void *userdata, struct fork_branch *b, msg_t *msg, sip_t *sip);
        /* An INVITE fork ends: its request and the final status sent upstream (0: none). */
        void (*fork_ended)(void *userdata, const sip_t *request, int final_status);
        void *userdata;
};
void fork_branch_release(struct fork_branch *b, msg_t *msg);

/* The caller CANCELled (reason: its Reason header, may be NULL). */
void fork_cancel(struct fork *f, const sip_reason_t *reason);

/* A device of aor registered (rec: its current bindings): late forks of aor get branches. */
void fork_late_on_register(struct proxy *p, const struct registrar_record *rec);
/* A pending message from the store, at start-up (oldest first). Returns the AOR's key. */
int fork_restore(struct proxy *p, const struct message_store_entry *e);
/* The store lost some messages to another proxy (they were taken over while this one was cut
 * off): the stored-message forks whose store id keep() refuses end here, without touching the
 * store; branches already sent finish. */
void fork_drop_messages(struct proxy *p, bool (*keep)(int64_t store_id, void *userdata),
                        void *userdata);
/* Pending messages (of aor, or all when NULL) as a JSON array, for MESSAGES_PENDING. */
struct json_t *fork_pending_messages(struct proxy *p, const char *aor);
unsigned fork_n_pending_messages(struct proxy *p);

/* Forks still alive; fork_free_all() ends them all at shutdown (500 to the callers; 202 for
 * stored messages, which live on in the store). */
unsigned fork_count(struct proxy *p);
void fork_free_all(struct proxy *p);
