/* SPDX-License-Identifier: MIT */
/* Helpers shared by every registrar store: records, AOR keys, URI comparison, JSON. */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/types.h>

#include <sofia-sip/su_alloc.h>
#include <sofia-sip/url.h>

#include "loop.h"
#include "macro.h"
#include "registrar-store.h"

void registrar_binding_done(struct registrar_binding *b) {
        if (!b)
                return;
        free(b->contact);
        free(b->params);
        free(b->unique_id);
        free(b->call_id);
        strv_free(b->path);
        free(b->user_agent);
        *b = (struct registrar_binding){0};
}

void registrar_record_free(struct registrar_record *r) {
        if (!r)
                return;
        for (size_t i = 0; i < r->n_bindings; i++)
                registrar_binding_done(&r->bindings[i]);
        free(r->bindings);
        free(r->aor);
        free(r);
}

/* Parse "<uri>" or "uri" into home. */
static url_t *parse_uri(su_home_t *home, const char *text) {
        char *s = su_strdup(home, text);
        if (!s)
                return NULL;
        while (isspace((unsigned char)*s))
                s++;
        if (*s == '<') {
                s++;
                char *end = strchr(s, '>');
                if (!end)
                        return NULL;
                *end = 0;
        }
        url_t *u = url_make(home, s);
        if (!u || (u->url_type != url_sip && u->url_type != url_sips) || isempty(u->url_host))
                return NULL;
        return u;
}

char *registrar_aor_normalize(const char *uri) {
        su_home_t home[1] = {SU_HOME_INIT(home)};
        char *ret = NULL;
        url_t *u = parse_uri(home, uri);
        if (u) {
                _cleanup_free_ char *host = strdup(u->url_host);
                if (host) {
                        for (char *p = host; *p; p++)
                                *p = (char)tolower((unsigned char)*p);
                        if (asprintf(&ret, "sip:%s%s%s", strempty(u->url_user),
                                     u->url_user ? "@" : "", host) < 0)
                                ret = NULL;
                }
        }
        su_home_deinit(home);
        return ret;
}

bool registrar_uri_equal(const char *a, const char *b) {
        su_home_t home[1] = {SU_HOME_INIT(home)};
        url_t *ua = parse_uri(home, a), *ub = parse_uri(home, b);
        bool eq = ua && ub && url_cmp_all(ua, ub) == 0;
        su_home_deinit(home);
        return eq;
}

static json_t *binding_to_json(const struct registrar_binding *b, uint64_t now) {
        json_t *path = json_array();
        STRV_FOREACH(p, b->path)
                json_array_append_new(path, json_string(*p));
        char q[16];
        snprintf(q, sizeof q, "%u.%03u", b->q / 1000, b->q % 1000);
        json_t *o = json_pack(
                "{s:s, s:I, s:I, s:s, s:s, s:s, s:I, s:s, s:I, s:o, s:s?}", "contact",
                b->contact, "expires-at", (json_int_t)(b->expires_at / 1000), "expires",
                (json_int_t)(b->expires_at > now ? (b->expires_at - now + 999) / 1000 : 0), "q",
                q, "unique-id", b->unique_id, "call-id", strempty(b->call_id), "cseq",
                (json_int_t)b->cseq, "user-agent", strempty(b->user_agent), "update-time",
                (json_int_t)(b->update_time / 1000), "path", path, "params", b->params);
        if (o && b->message_expires_at > b->expires_at) {
                uint64_t at = b->message_expires_at;
                json_object_set_new(o, "message-expires-at", json_integer((json_int_t)(at / 1000)));
                json_object_set_new(o, "message-expires",
                                    json_integer((json_int_t)(at > now ? (at - now + 999) / 1000
                                                                       : 0)));
        }
        return o;
}

json_t *registrar_record_to_json(const struct registrar_record *r, uint64_t now) {
        json_t *contacts = json_array(), *message_only = json_array();
        for (size_t i = 0; i < r->n_bindings; i++) {
                const struct registrar_binding *b = &r->bindings[i];
                if (registrar_binding_live(b, now))
                        json_array_append_new(contacts, binding_to_json(b, now));
                else if (registrar_binding_routable(b, now, true))
                        json_array_append_new(message_only, binding_to_json(b, now));
        }
        return json_pack("{s:s, s:o, s:o}", "aor", r->aor, "contacts", contacts,
                         "message-contacts", message_only);
}

/* ---- deferred completions ---- */

enum completion_kind { COMPLETION_RECORD, COMPLETION_DUMP, COMPLETION_DONE };

struct completion {
        struct completion *next;
        enum completion_kind kind;
        union {
                registrar_record_fn record;
                registrar_dump_fn dump;
                registrar_done_fn done;
        } cb;
        void *userdata;
        int error;
        struct registrar_record *rec;
        char **aors;
};

struct registrar_deferred {
        struct loop_timer *timer;
        struct completion *head, **tail;
};

static void completion_free(struct completion *c) {
        registrar_record_free(c->rec);
        strv_free(c->aors);
        free(c);
}

static void run_completions(struct loop_timer *t, void *userdata) {
        struct registrar_deferred *d = userdata;
        struct completion *c = d->head;
        d->head = NULL;
        d->tail = &d->head;
        while (c) {
                struct completion *next = c->next;
                switch (c->kind) {
                case COMPLETION_RECORD:
                        c->cb.record(c->error, TAKE_PTR(c->rec), c->userdata);
                        break;
                case COMPLETION_DUMP:
                        c->cb.dump(c->error, TAKE_PTR(c->aors), c->userdata);
                        break;
                case COMPLETION_DONE:
                        c->cb.done(c->error, c->userdata);
                        break;
                }
                completion_free(c);
                c = next;
        }
}

int registrar_deferred_new(struct loop *l, struct registrar_deferred **ret) {
        struct registrar_deferred *d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        d->tail = &d->head;
        int r = loop_timer_new(l, run_completions, d, &d->timer);
        if (r < 0) {
                free(d);
                return r;
        }
        *ret = d;
        return 0;
}

void registrar_deferred_free(struct registrar_deferred *d) {
        if (!d)
                return;
        loop_timer_free(d->timer);
        for (struct completion *c = d->head, *next; c; c = next) {
                next = c->next;
                completion_free(c);
        }
        free(d);
}

static int queue(struct registrar_deferred *d, struct completion *c) {
        if (!loop_timer_armed(d->timer)) {
                int r = loop_timer_arm(d->timer, 0);
                if (r < 0) {
                        completion_free(c);
                        return r;
                }
        }
        *d->tail = c;
        d->tail = &c->next;
        return 0;
}

int registrar_defer_record(struct registrar_deferred *d, int error, struct registrar_record *rec,
                           registrar_record_fn cb, void *userdata) {
        struct completion *c = calloc(1, sizeof *c);
        if (!c) {
                registrar_record_free(rec);
                return -ENOMEM;
        }
        *c = (struct completion){.kind = COMPLETION_RECORD, .cb.record = cb,
                                 .userdata = userdata, .error = error, .rec = rec};
        return queue(d, c);
}

int registrar_defer_dump(struct registrar_deferred *d, int error, char **aors,
                         registrar_dump_fn cb, void *userdata) {
        struct completion *c = calloc(1, sizeof *c);
        if (!c) {
                strv_free(aors);
                return -ENOMEM;
        }
        *c = (struct completion){.kind = COMPLETION_DUMP, .cb.dump = cb, .userdata = userdata,
                                 .error = error, .aors = aors};
        return queue(d, c);
}

int registrar_defer_done(struct registrar_deferred *d, int result, registrar_done_fn cb,
                         void *userdata) {
        struct completion *c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        *c = (struct completion){.kind = COMPLETION_DONE, .cb.done = cb, .userdata = userdata,
                                 .error = result};
        return queue(d, c);
}

/* ---- the RFC 3261 §10.3 update, on a record in memory ---- */

static int binding_copy(struct registrar_binding *dst, const struct registrar_binding *src) {
        *dst = *src;
        dst->contact = strdup(src->contact);
        dst->params = src->params ? strdup(src->params) : NULL;
        dst->unique_id = strdup(src->unique_id);
        dst->call_id = src->call_id ? strdup(src->call_id) : NULL;
        dst->path = src->path ? strv_copy(src->path) : NULL;
        dst->user_agent = src->user_agent ? strdup(src->user_agent) : NULL;
        if (!dst->contact || !dst->unique_id || (src->params && !dst->params) ||
            (src->call_id && !dst->call_id) || (src->path && !dst->path) ||
            (src->user_agent && !dst->user_agent)) {
                registrar_binding_done(dst);
                return -ENOMEM;
        }
        return 0;
}

int registrar_record_copy(const struct registrar_record *rec, const char *aor, uint64_t now,
                          struct registrar_record **ret) {
        _cleanup_(registrar_record_freep) struct registrar_record *c = calloc(1, sizeof *c);
        if (!c || !(c->aor = strdup(aor)))
                return -ENOMEM;
        if (rec && rec->n_bindings > 0) {
                c->bindings = calloc(rec->n_bindings, sizeof *c->bindings);
                if (!c->bindings)
                        return -ENOMEM;
                for (size_t i = 0; i < rec->n_bindings; i++) {
                        if (registrar_binding_kept_until(&rec->bindings[i]) <= now)
                                continue;
                        int r = binding_copy(&c->bindings[c->n_bindings], &rec->bindings[i]);
                        if (r < 0)
                                return r;
                        c->n_bindings++;
                }
        }
        *ret = TAKE_PTR(c);
        return 0;
}

void registrar_record_keep_live(struct registrar_record *rec, uint64_t now) {
        for (size_t i = rec->n_bindings; i-- > 0;)
                if (!registrar_binding_live(&rec->bindings[i], now))
                        registrar_record_remove(rec, i);
}

void registrar_record_remove(struct registrar_record *rec, size_t i) {
        registrar_binding_done(&rec->bindings[i]);
        memmove(&rec->bindings[i], &rec->bindings[i + 1],
                (rec->n_bindings - i - 1) * sizeof *rec->bindings);
        rec->n_bindings--;
}

static int generate_id(char **ret) {
        uint8_t bytes[10];
        if (getrandom(bytes, sizeof bytes, 0) != sizeof bytes)
                return -errno;
        char *s = malloc(4 + 2 * sizeof bytes + 1);
        if (!s)
                return -ENOMEM;
        strcpy(s, "gen-");
        for (size_t i = 0; i < sizeof bytes; i++)
                sprintf(s + 4 + 2 * i, "%02x", bytes[i]);
        *ret = s;
        return 0;
}

static ssize_t find_match(const struct registrar_record *rec, const struct registrar_contact *c) {
        for (size_t i = 0; i < rec->n_bindings; i++) {
                const struct registrar_binding *b = &rec->bindings[i];
                if (c->unique_id ? !b->generated_id && streq(b->unique_id, c->unique_id)
                                 : b->generated_id && registrar_uri_equal(b->contact, c->contact))
                        return (ssize_t)i;
        }
        return -1;
}

static int set_binding(struct registrar_binding *b, const struct registrar_update *u,
                       const struct registrar_contact *c) {
        struct registrar_binding n = {
                .cseq = u->cseq,
                .expires_at = u->now + c->expires_s * 1000,
                .message_expires_at = c->message_expires_s > c->expires_s
                                              ? u->now + c->message_expires_s * 1000
                                              : 0,
                .update_time = u->now,
                .q = c->q,
                .generated_id = !c->unique_id,
        };
        n.contact = strdup(c->contact);
        n.params = c->params ? strdup(c->params) : NULL;
        n.call_id = strdup(strempty(u->call_id));
        n.path = u->path ? strv_copy(u->path) : NULL;
        n.user_agent = u->user_agent ? strdup(u->user_agent) : NULL;
        if (c->unique_id)
                n.unique_id = strdup(c->unique_id);
        else if (b->unique_id && b->generated_id)
                n.unique_id = strdup(b->unique_id); /* a refresh keeps its id */
        else if (generate_id(&n.unique_id) < 0)
                n.unique_id = NULL;
        if (!n.contact || !n.call_id || !n.unique_id || (c->params && !n.params) ||
            (u->path && !n.path) || (u->user_agent && !n.user_agent)) {
                registrar_binding_done(&n);
                return -ENOMEM;
        }
        registrar_binding_done(b);
        *b = n;
        return 0;
}

/* The push token of a contact URI: RFC 8599 pn-provider/pn-prid/pn-param, or the legacy
 * pn-type/pn-tok/app-id; false when it has none. */
static bool push_key(const char *uri, char *key, size_t size) {
        su_home_t home[1] = {SU_HOME_INIT(home)};
        url_t *u = parse_uri(home, uri);
        char prid[512] = "", provider[64] = "", param[256] = "";
        bool found = false;
        if (u && u->url_params) {
                if (url_param(u->url_params, "pn-prid", prid, sizeof prid) > 0) {
                        url_param(u->url_params, "pn-provider", provider, sizeof provider);
                        url_param(u->url_params, "pn-param", param, sizeof param);
                        found = true;
                } else if (url_param(u->url_params, "pn-tok", prid, sizeof prid) > 0) {
                        url_param(u->url_params, "pn-type", provider, sizeof provider);
                        url_param(u->url_params, "app-id", param, sizeof param);
                        found = true;
                }
        }
        su_home_deinit(home);
        if (found)
                snprintf(key, size, "%s|%s|%s", provider, prid, param);
        return found;
}

/* A device that registers again with the same push token but a new identity (app reinstalled,
 * instance id lost) replaces its old binding: a push would reach the same phone twice. */
static size_t remove_same_push_token(struct registrar_record *rec, size_t keep,
                                     const char *contact) {
        char key[1024], other[1024];
        if (!push_key(contact, key, sizeof key))
                return keep;
        for (size_t i = 0; i < rec->n_bindings;) {
                if (i != keep && push_key(rec->bindings[i].contact, other, sizeof other) &&
                    streq(key, other)) {
                        registrar_record_remove(rec, i);
                        if (i < keep)
                                keep--;
                        continue;
                }
                i++;
        }
        return keep;
}

int registrar_record_apply(struct registrar_record *rec, const struct registrar_update *u) {
        for (size_t i = 0; i < u->n_contacts; i++) {
                const struct registrar_contact *c = &u->contacts[i];
                ssize_t m = find_match(rec, c);
                if (m >= 0 && u->call_id) {
                        const struct registrar_binding *b = &rec->bindings[m];
                        if (b->call_id && streq(b->call_id, u->call_id) && u->cseq <= b->cseq)
                                return -ESTALE;
                }
                if (c->expires_s == 0) {
                        if (m >= 0)
                                registrar_record_remove(rec, (size_t)m);
                        continue;
                }
                if (m < 0) {
                        struct registrar_binding *nb =
                                realloc(rec->bindings, (rec->n_bindings + 1) * sizeof *nb);
                        if (!nb)
                                return -ENOMEM;
                        rec->bindings = nb;
                        m = (ssize_t)rec->n_bindings++;
                        rec->bindings[m] = (struct registrar_binding){0};
                }
                int r = set_binding(&rec->bindings[m], u, c);
                if (r < 0) {
                        if (!rec->bindings[m].contact)
                                registrar_record_remove(rec, (size_t)m);
                        return r;
                }
                remove_same_push_token(rec, (size_t)m, c->contact);
        }

        /* Evict beyond the limit: the bindings kept for messages only first, then the live
         * ones; the oldest (least recently updated, then first stored) first in each. A
         * lapsed device never takes the place of a registered one. */
        while (u->max_contacts > 0 && rec->n_bindings > u->max_contacts) {
                size_t oldest = 0;
                for (size_t i = 1; i < rec->n_bindings; i++) {
                        const struct registrar_binding *b = &rec->bindings[i],
                                                       *o = &rec->bindings[oldest];
                        bool b_live = registrar_binding_live(b, u->now),
                             o_live = registrar_binding_live(o, u->now);
                        if (b_live != o_live ? !b_live : b->update_time < o->update_time)
                                oldest = i;
                }
                registrar_record_remove(rec, oldest);
        }
        return 0;
}

int registrar_record_remove_id(struct registrar_record *rec, const char *unique_id) {
        for (size_t i = 0; i < rec->n_bindings; i++)
                if (streq(rec->bindings[i].unique_id, unique_id)) {
                        registrar_record_remove(rec, i);
                        return 0;
                }
        return -ENOENT;
}
