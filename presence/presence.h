/* SPDX-License-Identifier: MIT */
#pragma once

/* sipfleet-presence: a presence server (RFC 3856) on nta. PUBLISH (RFC 3903) feeds presentities
 * (publish.c); SUBSCRIBE/NOTIFY (RFC 6665), single or for a whole address book (RFC 4662 with
 * the list in the body, RFC 5367), reads them (subscribe.c). All state is in memory, bounded by
 * the [presence] limits. */

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <libxml/tree.h>

#include "sofia.h"

struct daemon;
struct loop_timer;
struct redis;
struct redisReply;
struct stats_counter;

struct presence_config {
        char **transports;
        uint64_t max_message_size;
        uint64_t udp_receive_buffer;
        uint64_t publish_expires_ms, publish_min_expires_ms, publish_max_expires_ms;
        uint64_t subscribe_expires_ms, subscribe_min_expires_ms, subscribe_max_expires_ms;
        int64_t max_presentities;
        int64_t max_subscriptions;
        int64_t max_publications;
        int64_t max_list_size;
        int64_t notify_limit;
        uint64_t max_body_size;
        uint64_t last_activity_retention_ms;
        bool linphone_list_compat;
        /* Shared state (shared.c): on when redis_host is set. */
        char *redis_host;
        int64_t redis_port;
        char *redis_password;
        char *redis_prefix;
        uint64_t redis_command_timeout_ms;
};

struct presentity;
struct subscription;
struct resource;
struct longterm;
struct devices;

struct presence {
        struct daemon *daemon;
        struct presence_config config;
        su_root_t *root;
        nta_agent_t *agent;
        nta_leg_t *default_leg;
        bool stopping;

        /* Presentities by "user@host", chained hash table. */
        struct presentity **buckets;
        size_t n_buckets;
        size_t n_presentities;
        size_t n_publications;

        struct subscription *subscriptions; /* live ones, doubly linked */
        size_t n_subscriptions;
        struct subscription *dead; /* ended, freed by the reaper */
        struct longterm *longterm; /* longterm.c: users of the service from the account store */
        struct devices *devices;   /* devices.c: their capabilities from the Redis registrar */
        struct loop_timer *reaper;
        uint64_t next_id;

        /* Shared state through Redis (shared.c); NULL: all state is local. */
        struct redis *redis;
        char origin[24]; /* this server's id in the change messages */

        struct {
                struct stats_counter *publish, *publish_new, *publish_refresh, *publish_modify,
                        *publish_remove, *publish_rejected, *publish_expired;
                struct stats_counter *subscribe, *subscribe_list, *subscribe_rejected,
                        *subscribe_expired;
                struct stats_counter *notify_sent, *notify_failed;
                struct stats_counter *xml_rejected;
                struct stats_counter *redis_failed, *redis_loads, *redis_changes;
        } count;
};

/* A published source of a presentity (RFC 3903 event state, named by its entity tag). */
struct publication {
        struct presentity *presentity;
        struct publication *next; /* newest first */
        char etag[24];
        char id[24]; /* shared state: the first entity tag, kept across refreshes */
        xmlDocPtr doc;
        struct loop_timer *timer;
        uint64_t expires_at; /* monotonic ms */
        uint64_t updated_ms; /* wall clock (Redis's with shared state): last modification */
};

/* What one subscription watches of one presentity. */
struct resource {
        struct subscription *sub;
        struct presentity *presentity;
        struct resource *wprev, *wnext; /* in presentity->watchers */
        char *uri;                      /* as the subscriber wrote it */
        bool changed;                   /* to send in the next partial NOTIFY */
        bool sent;                      /* state included in a NOTIFY already */
        bool waiting;                   /* the first NOTIFY waits for its account lookup */
};

/* longterm.c: is the presentity a user of the service (account store)? The last answer; a
 * lookup under way (presentity->lookup) keeps it until the new one comes. */
enum presentity_account {
        ACCOUNT_UNCHECKED,
        ACCOUNT_USER,
        ACCOUNT_NOT_USER,
        ACCOUNT_FAILED, /* the store did not answer: unknown, asked again by the next SUBSCRIBE */
};

struct presentity {
        struct presence *presence;
        struct presentity *hnext;
        char *key; /* "user@host" */
        char *uri; /* "sip:user@host": the PIDF entity */
        struct publication *publications;
        unsigned n_publications;
        struct resource *watchers;
        unsigned n_watchers;
        time_t last_activity;         /* when the last publication ended; 0: none */
        struct loop_timer *retention; /* forgets last_activity */
        char *pidf;                   /* merged state, cached */
        size_t pidf_len;
        bool known;    /* state to report: publications, last activity or an account */
        uint64_t mark; /* subscribe.c: duplicate detection in one list */
        /* Shared state: a mirror of Redis kept while the presentity has watchers. */
        uint64_t gen;   /* tells a reply for this presentity from one for an older one */
        bool channel;   /* subscribed to its change channel */
        bool loading;   /* first read from Redis in flight: first NOTIFYs wait */
        unsigned loads; /* reads in flight */
        bool reload;    /* read again when they complete */
        bool stale;     /* a read failed: read again when the command link is back */
        enum presentity_account account; /* long-term presence: the last answer */
        uint64_t account_checked;        /* monotonic ms of that answer */
        struct longterm_lookup *lookup;  /* under way */
        /* Long-term presence: the devices' capabilities ("groupchat/1.1,lime") of the default
         * tuple, as last read from the registrar; NULL: never read. */
        char *capabilities;
        uint64_t capabilities_read; /* monotonic ms of that read */
};

struct subscription {
        struct presence *presence;
        struct subscription *prev, *next; /* live list, or next in the dead list */
        uint64_t id;
        nta_leg_t *leg;
        nta_outgoing_t *notify; /* in flight: at most one at a time */
        char *watcher;          /* From URI */
        char *target;           /* Request-URI: presentity or list */
        bool is_list;
        struct resource *resources;
        size_t n_resources;
        struct loop_timer *timer;
        uint64_t expires_at;    /* monotonic ms */
        unsigned version;       /* RLMI version */
        bool full_sent;         /* the full state went out */
        unsigned n_loading;     /* resources whose first read from Redis is in flight */
        bool dirty;             /* something changed since the last NOTIFY */
        const char *end_reason; /* set: the next NOTIFY is the final one */
        bool ended;             /* final NOTIFY sent (or failed) */
        bool dead;              /* on the dead list, waiting for the reaper */
        size_t n_waiting;       /* resources whose account lookup the first NOTIFY waits for */
        struct loop_timer *hold; /* bounds that wait */
};

extern const struct daemon_hooks presence_hooks;

int presence_new(struct daemon *d, struct presence **ret);
int presence_start(struct presence *p);
void presence_free(struct presence *p);

/* "user@host" of a SIP URI (host lowercased), malloc'd; NULL when the URI has no host. */
char *presence_uri_key(const url_t *url);

/* The presentity for a key, created (with its entity URI) when create is true and the
 * max-presentities limit allows; NULL otherwise. */
struct presentity *presentity_get(struct presence *p, const char *key, bool create);
/* Frees it when nothing refers to it any more (no publication, watcher, last activity). */
void presentity_maybe_free(struct presentity *pr);
/* The merged PIDF (built on first use). NULL on ENOMEM. */
const char *presentity_pidf(struct presentity *pr);
/* Sets the time of the last activity (0: none), remembered for remaining_ms more. */
void presentity_set_last_activity(struct presentity *pr, time_t when, uint64_t remaining_ms);
/* Rebuilds the merged document and tells every watcher. */
void presentity_changed(struct presentity *pr);

/* Does the body carry a Content-Encoding other than identity (we decode none)? */
bool presence_body_encoded(const sip_t *sip);
/* Does the Accept header (absent: yes) allow this type? */
bool presence_accepts(const sip_t *sip, const char *type);

/* shared.c: presence state shared through Redis. */
int shared_start(struct presence *p);
void shared_free(struct presence *p);
/* A PUBLISH with shared state: stored in Redis first, answered when Redis did (0: the irq is
 * owned and will be answered; >= 400: answered). doc (may be NULL: refresh or remove) is
 * taken. */
int shared_publish(struct presence *p, nta_incoming_t *irq, const char *key, const char *if_match,
                   xmlDocPtr doc, uint64_t expires_ms);
/* The presentity got its first watcher: subscribe to its channel and read its state. */
void shared_watch(struct presentity *pr);
/* It is about to be freed. */
void shared_unwatch(struct presentity *pr);
/* longterm.c: long-term presence ([presence] long-term-enabled, the [accounts] store). */
int longterm_new(struct presence *p);
int longterm_start(struct presence *p);
void longterm_free(struct presence *p);
/* Does the presentity report the default tuple of a user of the service? */
bool longterm_is_user(const struct presentity *pr);
/* A new subscription (or a refresh): looks up the accounts of its resources that have nothing
 * to report and were not asked yet (a refresh also asks again when the store failed or the
 * answer is older than cache-expire), and holds its next full-state NOTIFY until they answer
 * (at most long-term-max-wait). */
void longterm_watch(struct subscription *sub, bool refresh);
/* A watched presentity with nothing to report any more (last activity forgotten). */
void longterm_check(struct presentity *pr);
/* "user", "not-user"... for the control commands. */
const char *longterm_account_name(const struct presentity *pr);
/* The presentity goes away: its lookup's answer is dropped. */
void longterm_forget(struct presentity *pr);

/* devices.c: the capabilities of a user's devices, from the proxy's Redis registrar
 * ([registrar] redis-server-domain). */
int devices_new(struct presence *p);
int devices_start(struct presence *p);
void devices_free(struct presence *p);
/* Is the registrar configured? */
bool devices_enabled(const struct presence *p);
/* The answer of devices_read(): error < 0 (-ECANCELED: the server is stopping), else the
 * capabilities of the AOR's live bindings, "name/version,name..." ("" for none; valid during
 * the call only). */
typedef void (*devices_fn)(int error, const char *capabilities, void *userdata);
/* Reads the bindings of user@domain; cb runs later (never from within). < 0: cb never runs
 * (-ENOTCONN: no registrar, or its link is down). */
int devices_read(struct presence *p, const char *user, const char *domain, devices_fn cb,
                 void *userdata);
/* The merged capabilities of an HGETALL reply of a registrar AOR (each name once, its highest
 * version, sorted by name): bindings expired at now_ms (CLOCK_REALTIME) and values that are
 * not ours are skipped. malloc'd, "" for none. */
char *devices_capabilities(const struct redisReply *rep, uint64_t now_ms);

/* publish.c */
struct publication *publication_new(struct presentity *pr, xmlDocPtr doc, uint64_t expires_ms,
                                    uint64_t updated_ms);
int publish_handle(struct presence *p, nta_incoming_t *irq, const sip_t *sip);
void publication_free(struct publication *pub);
/* A fresh entity tag into buf (at least 24 bytes). */
void new_etag(struct presence *p, char *buf, size_t size);
/* Wall clock, milliseconds since the epoch. */
uint64_t now_wall_ms(void);

/* subscribe.c */
int subscribe_handle(struct presence *p, nta_incoming_t *irq, const sip_t *sip);
/* A watched presentity changed: queue or send a NOTIFY. */
void subscription_resource_changed(struct resource *res);
/* The first read of a watched presentity completed: NOTIFYs that waited for it go. */
void subscription_loaded(struct subscription *sub);
/* Ends every subscription with a final NOTIFY (shutdown). */
void subscriptions_terminate_all(struct presence *p, const char *reason);
void subscription_free(struct subscription *sub);
/* The account lookup a resource waited for answered. */
void subscription_lookup_done(struct resource *res);
/* The NOTIFY waits no more for the lookups still under way: it goes out with what is known. */
void subscription_stop_waiting(struct subscription *sub);
/* The reaper: frees ended subscriptions outside of sofia's callbacks. */
void subscriptions_reap(struct presence *p);
bool subscriptions_idle(struct presence *p);
