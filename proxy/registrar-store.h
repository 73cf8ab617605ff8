/* SPDX-License-Identifier: MIT */
#pragma once

/* Registrar storage behind one asynchronous interface, so that a networked store (Redis) fits
 * the same callers as the in-memory one. Every operation returns 0 when it was started (or
 * -errno when it could not be) and later calls its callback exactly once from the loop, never
 * from inside the call itself. Records handed to callbacks belong to the callee: free them with
 * registrar_record_free().
 *
 * AORs are keys in the form "sip:user@host" (see registrar_aor_normalize()). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct registrar_store;

struct registrar_binding {
        char *contact;   /* the contact URI as text, without angle brackets */
        char *params;    /* other contact parameters, ";"-joined without expires/q; may be NULL */
        char *unique_id; /* +sip.instance value, or a generated "gen-..." id */
        bool generated_id;
        char *call_id;
        uint32_t cseq;
        uint64_t expires_at;  /* CLOCK_REALTIME ms: the SIP expiry */
        /* CLOCK_REALTIME ms: routable for MESSAGE until then (the contact's message-expires
         * parameter); 0, or not after expires_at, when the contact has none. */
        uint64_t message_expires_at;
        uint64_t update_time; /* CLOCK_REALTIME ms */
        unsigned q;           /* q-value in thousandths, 1000 when absent */
        char **path;          /* Path header values, NULL-terminated, may be NULL */
        char *user_agent;
};

struct registrar_record {
        char *aor;
        struct registrar_binding *bindings;
        size_t n_bindings;
};

/* One contact of a REGISTER (or of a CLI upsert). */
struct registrar_contact {
        const char *contact; /* URI text */
        const char *params;
        const char *unique_id; /* NULL: match by URI and generate an id */
        uint64_t expires_s;    /* already clamped; 0 removes the matching binding */
        unsigned q;
        uint64_t message_expires_s; /* already clamped; 0: none (see message_expires_at) */
};

/* "Apply a REGISTER": RFC 3261 §10.3 update of one AOR. */
struct registrar_update {
        const char *aor;
        const struct registrar_contact *contacts;
        size_t n_contacts;
        const char *call_id; /* NULL: no Call-ID/CSeq check (administrative update) */
        uint32_t cseq;
        char *const *path;
        const char *user_agent;
        /* Bindings per AOR, those kept for messages only included; beyond it those are evicted
         * first, then the oldest live ones; 0 = no limit. */
        size_t max_contacts;
        uint64_t now;        /* CLOCK_REALTIME ms */
};

/* error: 0 or -errno. -ESTALE: a binding with the same Call-ID and a CSeq not lower exists
 * (replayed request). The record is NULL on error. */
typedef void (*registrar_record_fn)(int error, struct registrar_record *rec, void *userdata);
/* aors: NULL-terminated, owned by the callee (strv_free). */
typedef void (*registrar_dump_fn)(int error, char **aors, void *userdata);
/* result: count of removed items, or -errno. */
typedef void (*registrar_done_fn)(int result, void *userdata);

/* A device of aor registered (bound or refreshed by a REGISTER) through some writer of the
 * store; unique_id is its id (the +sip.instance value, or the generated id). */
#ifndef REGISTRAR_EVENT_FN_DEFINED
#define REGISTRAR_EVENT_FN_DEFINED
typedef void (*registrar_event_fn)(const char *aor, const char *unique_id, void *userdata);
#endif

/* A binding lives until its SIP expiry (expires_at): it is listed (200 OK to REGISTER,
 * REGISTRAR_GET) and routable for every request. A contact with a message-expires parameter
 * longer than its expiry is then kept, routable for MESSAGE only, until message_expires_at.
 * The stores keep every binding until registrar_binding_kept_until(); callers choose with
 * registrar_binding_live() / registrar_binding_routable(). */
static inline uint64_t registrar_binding_kept_until(const struct registrar_binding *b) {
        return b->message_expires_at > b->expires_at ? b->message_expires_at : b->expires_at;
}
static inline bool registrar_binding_live(const struct registrar_binding *b, uint64_t now) {
        return b->expires_at > now;
}
/* May a request be sent to this binding at now: a MESSAGE (message true) within the
 * message-expires window too, anything else only while the binding lives. */
static inline bool registrar_binding_routable(const struct registrar_binding *b, uint64_t now,
                                              bool message) {
        return message ? registrar_binding_kept_until(b) > now : registrar_binding_live(b, now);
}

struct registrar_store_ops {
        const char *name;
        /* The kept bindings (live, or kept for messages only: see above; those past both left
         * out); an unknown AOR is an empty record. */
        int (*fetch)(struct registrar_store *s, const char *aor, registrar_record_fn cb,
                     void *userdata);
        /* All or nothing: on error nothing changed. Returns the resulting record. */
        int (*apply)(struct registrar_store *s, const struct registrar_update *u,
                     registrar_record_fn cb, void *userdata);
        /* Remove one binding by unique id; -ENOENT when there is none. */
        int (*remove)(struct registrar_store *s, const char *aor, const char *unique_id,
                      registrar_record_fn cb, void *userdata);
        /* Remove the AOR; result 1 when it existed, 0 otherwise. */
        int (*clear)(struct registrar_store *s, const char *aor, registrar_done_fn cb,
                     void *userdata);
        /* The AORs holding a kept binding (live or kept for messages only). */
        int (*dump)(struct registrar_store *s, registrar_dump_fn cb, void *userdata);
        /* Drop bindings no longer kept at now (realtime ms); result = bindings removed. */
        int (*purge)(struct registrar_store *s, uint64_t now, registrar_done_fn cb,
                     void *userdata);
        /* Optional, for stores shared by several proxies (NULL for the embedded ones, which
         * only this proxy writes): call cb for each device registered on aor by any writer,
         * this proxy included, until unwatch. One (aor, cb, userdata) triple each; -EEXIST
         * for a duplicate, -ENOENT to unwatch an unknown one. cb may unwatch. */
        int (*watch)(struct registrar_store *s, const char *aor, registrar_event_fn cb,
                     void *userdata);
        int (*unwatch)(struct registrar_store *s, const char *aor, registrar_event_fn cb,
                       void *userdata);
        /* Registered AORs as last known (synchronous, for the gauge). */
        uint64_t (*n_aors)(struct registrar_store *s);
        /* Pending callbacks are dropped, not called. */
        void (*free)(struct registrar_store *s);
};

struct registrar_store {
        const struct registrar_store_ops *ops;
};

int registrar_store_internal_new(struct loop *l, struct registrar_store **ret);
/* Opens (creating) the database file at path. -EIO when it cannot be opened or set up. */
int registrar_store_sqlite_new(struct loop *l, const char *path, struct registrar_store **ret);

static inline void registrar_store_free(struct registrar_store *s) {
        if (s)
                s->ops->free(s);
}

void registrar_binding_done(struct registrar_binding *b);
void registrar_record_free(struct registrar_record *r);
static inline void registrar_record_freep(struct registrar_record **r) {
        registrar_record_free(*r);
}

/* "sip:user@host" from a SIP URI text ("<sip:User@Host:5060;p>" accepted); host lowercased,
 * port and parameters dropped. NULL when the text is not a SIP URI with a host. */
char *registrar_aor_normalize(const char *uri);
/* RFC 3261 §19.1.4 comparison of two URI texts. */
bool registrar_uri_equal(const char *a, const char *b);
/* The record as the CLI shows it: {"aor":..., "contacts":[live bindings...],
 * "message-contacts":[bindings kept for messages only...]} (json_t *). */
struct json_t *registrar_record_to_json(const struct registrar_record *r, uint64_t now);

/* For store implementations. */

/* Completions queued now and run from a 0 ms loop timer, in order. Pending ones are dropped
 * (not called) by registrar_deferred_free(). The defer functions take rec/aors even on error. */
struct registrar_deferred;
int registrar_deferred_new(struct loop *l, struct registrar_deferred **ret);
void registrar_deferred_free(struct registrar_deferred *d);
int registrar_defer_record(struct registrar_deferred *d, int error, struct registrar_record *rec,
                           registrar_record_fn cb, void *userdata);
int registrar_defer_dump(struct registrar_deferred *d, int error, char **aors,
                         registrar_dump_fn cb, void *userdata);
int registrar_defer_done(struct registrar_deferred *d, int result, registrar_done_fn cb,
                         void *userdata);

/* A deep copy of rec (NULL: an empty record for aor) without the bindings no longer kept at
 * now (registrar_binding_kept_until()). */
int registrar_record_copy(const struct registrar_record *rec, const char *aor, uint64_t now,
                          struct registrar_record **ret);
void registrar_record_remove(struct registrar_record *rec, size_t i);
/* Remove the binding with this unique id: 0, or -ENOENT when there is none. */
int registrar_record_remove_id(struct registrar_record *rec, const char *unique_id);
/* Drop from rec the bindings that do not live at now (those kept for messages only). */
void registrar_record_keep_live(struct registrar_record *rec, uint64_t now);
/* The update rules on a record in memory (bindings no longer kept already dropped): matching by
 * unique id or URI, the Call-ID/CSeq check (-ESTALE), removals, a binding with the same push
 * token (pn-provider/pn-prid/pn-param, or legacy pn-type/pn-tok/app-id) replaced, eviction of
 * the oldest beyond max_contacts (those kept for messages only first). On error rec is partly
 * changed: work on a copy. */
int registrar_record_apply(struct registrar_record *rec, const struct registrar_update *u);
