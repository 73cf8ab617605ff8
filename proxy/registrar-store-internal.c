/* SPDX-License-Identifier: MIT */
/* The in-memory registrar store: records in a chained hash table keyed by AOR, grown (doubled)
 * when it holds more records than buckets so that a lookup stays one or two comparisons. Work is done at
 * once; the completions are deferred to the loop (registrar_deferred), so callers never see a
 * callback from inside their own call. Everything is lost at restart. */
#define LOG_SUBSYSTEM LOG_registrar
#include "log.h"
#include "loop.h"
#include "macro.h"
#include "registrar-store.h"

#define MIN_BUCKETS 1024

struct entry {
        struct entry *next;
        struct registrar_record *rec;
        unsigned hash;
};

struct internal_store {
        struct registrar_store base;
        struct registrar_deferred *deferred;
        struct entry **buckets;
        size_t n_buckets; /* a power of two */
        uint64_t n_aors;
};

static unsigned hash(const char *s) {
        unsigned h = 2166136261u;
        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * 16777619u;
        return h;
}

static struct entry **find_hashed(struct internal_store *st, const char *aor, unsigned h) {
        struct entry **e = &st->buckets[h & (st->n_buckets - 1)];
        while (*e && ((*e)->hash != h || !streq((*e)->rec->aor, aor)))
                e = &(*e)->next;
        return e;
}

static struct entry **find(struct internal_store *st, const char *aor) {
        return find_hashed(st, aor, hash(aor));
}

/* Doubles the table; on failure the table stays as it is (only slower). */
static void grow(struct internal_store *st) {
        size_t n = st->n_buckets * 2;
        struct entry **b = calloc(n, sizeof *b);
        if (!b)
                return;
        for (size_t i = 0; i < st->n_buckets; i++)
                while (st->buckets[i]) {
                        struct entry *e = st->buckets[i];
                        st->buckets[i] = e->next;
                        e->next = b[e->hash & (n - 1)];
                        b[e->hash & (n - 1)] = e;
                }
        free(st->buckets);
        st->buckets = b;
        st->n_buckets = n;
}

static const struct registrar_record *lookup(struct internal_store *st, const char *aor) {
        struct entry *e = *find(st, aor);
        return e ? e->rec : NULL;
}

static void entry_unlink(struct internal_store *st, struct entry **e) {
        struct entry *old = *e;
        *e = old->next;
        registrar_record_free(old->rec);
        free(old);
        st->n_aors--;
}

/* Replace (or, with rec empty, remove) the stored record of aor. Takes rec. */
static int store_record(struct internal_store *st, const char *aor, struct registrar_record *rec) {
        struct entry **e = find(st, aor);
        if (rec->n_bindings == 0) {
                registrar_record_free(rec);
                if (*e)
                        entry_unlink(st, e);
                return 0;
        }
        if (*e) {
                registrar_record_free((*e)->rec);
                (*e)->rec = rec;
                return 0;
        }
        struct entry *n = calloc(1, sizeof *n);
        if (!n) {
                registrar_record_free(rec);
                return -ENOMEM;
        }
        n->rec = rec;
        n->hash = hash(aor);
        *e = n;
        if (++st->n_aors > st->n_buckets)
                grow(st);
        return 0;
}

/* Store rec and complete with a copy of it. Takes rec. */
static int commit(struct internal_store *st, struct registrar_record *rec, registrar_record_fn cb,
                  void *userdata) {
        struct registrar_record *result;
        int r = registrar_record_copy(rec, rec->aor, 0, &result);
        if (r < 0) {
                registrar_record_free(rec);
                return r;
        }
        r = store_record(st, result->aor, rec);
        if (r < 0) {
                registrar_record_free(result);
                return r;
        }
        return registrar_defer_record(st->deferred, 0, result, cb, userdata);
}

static int internal_fetch(struct registrar_store *s, const char *aor, registrar_record_fn cb,
                          void *userdata) {
        struct internal_store *st = (struct internal_store *)s;
        struct registrar_record *rec;
        int r = registrar_record_copy(lookup(st, aor), aor, realtime_msec(), &rec);
        if (r < 0)
                return r;
        return registrar_defer_record(st->deferred, 0, rec, cb, userdata);
}

static int internal_apply(struct registrar_store *s, const struct registrar_update *u,
                          registrar_record_fn cb, void *userdata) {
        struct internal_store *st = (struct internal_store *)s;
        _cleanup_(registrar_record_freep) struct registrar_record *rec = NULL;
        int r = registrar_record_copy(lookup(st, u->aor), u->aor, u->now, &rec);
        if (r < 0)
                return r;
        r = registrar_record_apply(rec, u);
        if (r == -ESTALE)
                return registrar_defer_record(st->deferred, r, NULL, cb, userdata);
        if (r < 0)
                return r;
        return commit(st, TAKE_PTR(rec), cb, userdata);
}

static int internal_remove(struct registrar_store *s, const char *aor, const char *unique_id,
                           registrar_record_fn cb, void *userdata) {
        struct internal_store *st = (struct internal_store *)s;
        _cleanup_(registrar_record_freep) struct registrar_record *rec = NULL;
        int r = registrar_record_copy(lookup(st, aor), aor, realtime_msec(), &rec);
        if (r < 0)
                return r;
        if (registrar_record_remove_id(rec, unique_id) < 0)
                return registrar_defer_record(st->deferred, -ENOENT, NULL, cb, userdata);
        return commit(st, TAKE_PTR(rec), cb, userdata);
}

static int internal_clear(struct registrar_store *s, const char *aor, registrar_done_fn cb,
                          void *userdata) {
        struct internal_store *st = (struct internal_store *)s;
        struct entry **e = find(st, aor);
        bool existed = *e != NULL;
        if (existed)
                entry_unlink(st, e);
        return registrar_defer_done(st->deferred, existed ? 1 : 0, cb, userdata);
}

static int internal_dump(struct registrar_store *s, registrar_dump_fn cb, void *userdata) {
        struct internal_store *st = (struct internal_store *)s;
        _cleanup_strv_free_ char **aors = calloc(1, sizeof(char *));
        uint64_t now = realtime_msec();
        if (!aors)
                return -ENOMEM;
        for (size_t b = 0; b < st->n_buckets; b++)
                for (struct entry *e = st->buckets[b]; e; e = e->next) {
                        bool live = false;
                        for (size_t i = 0; i < e->rec->n_bindings && !live; i++)
                                live = registrar_binding_kept_until(&e->rec->bindings[i]) > now;
                        if (live && strv_extend(&aors, e->rec->aor) < 0)
                                return -ENOMEM;
                }
        return registrar_defer_dump(st->deferred, 0, TAKE_PTR(aors), cb, userdata);
}

static int internal_purge(struct registrar_store *s, uint64_t now, registrar_done_fn cb,
                          void *userdata) {
        struct internal_store *st = (struct internal_store *)s;
        int removed = 0;
        for (size_t b = 0; b < st->n_buckets; b++) {
                struct entry **e = &st->buckets[b];
                while (*e) {
                        struct registrar_record *rec = (*e)->rec;
                        for (size_t i = rec->n_bindings; i-- > 0;)
                                if (registrar_binding_kept_until(&rec->bindings[i]) <= now) {
                                        registrar_record_remove(rec, i);
                                        removed++;
                                }
                        if (rec->n_bindings == 0)
                                entry_unlink(st, e);
                        else
                                e = &(*e)->next;
                }
        }
        return registrar_defer_done(st->deferred, removed, cb, userdata);
}

static uint64_t internal_n_aors(struct registrar_store *s) {
        return ((struct internal_store *)s)->n_aors;
}

static void internal_free(struct registrar_store *s) {
        struct internal_store *st = (struct internal_store *)s;
        registrar_deferred_free(st->deferred);
        for (size_t b = 0; b < st->n_buckets; b++)
                for (struct entry *e = st->buckets[b], *next; e; e = next) {
                        next = e->next;
                        registrar_record_free(e->rec);
                        free(e);
                }
        free(st->buckets);
        free(st);
}

static const struct registrar_store_ops internal_ops = {
        .name = "internal",
        .fetch = internal_fetch,
        .apply = internal_apply,
        .remove = internal_remove,
        .clear = internal_clear,
        .dump = internal_dump,
        .purge = internal_purge,
        .n_aors = internal_n_aors,
        .free = internal_free,
};

int registrar_store_internal_new(struct loop *l, struct registrar_store **ret) {
        struct internal_store *st = calloc(1, sizeof *st);
        if (!st)
                return -ENOMEM;
        st->base.ops = &internal_ops;
        st->n_buckets = MIN_BUCKETS;
        st->buckets = calloc(st->n_buckets, sizeof *st->buckets);
        int r = st->buckets ? registrar_deferred_new(l, &st->deferred) : -ENOMEM;
        if (r < 0) {
                free(st->buckets);
                free(st);
                return r;
        }
        *ret = &st->base;
        return 0;
}
