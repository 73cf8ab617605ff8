/* SPDX-License-Identifier: MIT */
/* The in-memory registrar store: records in a chained hash table keyed by AOR, grown (doubled)
 * when it holds more records than buckets so that a lookup stays one or two comparisons. Each
 * record is stored packed (entry, bindings and every string in one block) and allocated from a
 * slab pool of its own, so that the bindings, which stay for hours, never pin pages of the heap
 * where each REGISTER's transaction memory comes and goes. Work is done at once; the
 * completions are deferred to the loop (registrar_deferred), so callers never see a callback
 * from inside their own call. Everything is lost at restart. */
#define LOG_SUBSYSTEM LOG_registrar
#include "log.h"
#include "loop.h"
#include "macro.h"
#include "registrar-store.h"
#include "slab.h"

#define MIN_BUCKETS 1024

/* One AOR: the record, then its bindings, the bindings' Path arrays and all the strings. */
struct entry {
        struct entry *next;
        size_t size; /* of the whole block */
        unsigned hash;
        struct registrar_record rec;
};

struct internal_store {
        struct registrar_store base;
        struct registrar_deferred *deferred;
        struct slab_pool *slab;
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
        while (*e && ((*e)->hash != h || !streq((*e)->rec.aor, aor)))
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

static size_t str_size(const char *s) {
        return s ? strlen(s) + 1 : 0;
}

/* Copies s to *pos and moves *pos past it; NULL stays NULL. */
static char *put_str(char **pos, const char *s) {
        if (!s)
                return NULL;
        size_t n = strlen(s) + 1;
        char *d = memcpy(*pos, s, n);
        *pos += n;
        return d;
}

/* The record packed into one block from the slab pool; NULL when out of memory. */
static struct entry *pack(struct internal_store *st, const struct registrar_record *r,
                          unsigned h) {
        size_t n_ptrs = 0, n_chars = str_size(r->aor);
        for (size_t i = 0; i < r->n_bindings; i++) {
                const struct registrar_binding *b = &r->bindings[i];
                n_chars += str_size(b->contact) + str_size(b->params) + str_size(b->unique_id) +
                           str_size(b->call_id) + str_size(b->user_agent);
                if (b->path) {
                        n_ptrs += strv_length(b->path) + 1;
                        for (char **p = b->path; *p; p++)
                                n_chars += str_size(*p);
                }
        }
        size_t size = sizeof(struct entry) + r->n_bindings * sizeof(struct registrar_binding) +
                      n_ptrs * sizeof(char *) + n_chars;
        struct entry *e = slab_alloc(st->slab, size);
        if (!e)
                return NULL;
        struct registrar_binding *bindings = (struct registrar_binding *)(e + 1);
        char **ptrs = (char **)(bindings + r->n_bindings);
        char *chars = (char *)(ptrs + n_ptrs);
        *e = (struct entry){.size = size, .hash = h,
                            .rec = {.bindings = r->n_bindings ? bindings : NULL,
                                    .n_bindings = r->n_bindings}};
        e->rec.aor = put_str(&chars, r->aor);
        for (size_t i = 0; i < r->n_bindings; i++) {
                const struct registrar_binding *src = &r->bindings[i];
                struct registrar_binding *b = &bindings[i];
                *b = *src;
                b->contact = put_str(&chars, src->contact);
                b->params = put_str(&chars, src->params);
                b->unique_id = put_str(&chars, src->unique_id);
                b->call_id = put_str(&chars, src->call_id);
                b->user_agent = put_str(&chars, src->user_agent);
                if (src->path) {
                        b->path = ptrs;
                        for (char **p = src->path; *p; p++)
                                *ptrs++ = put_str(&chars, *p);
                        *ptrs++ = NULL;
                }
        }
        return e;
}

static const struct registrar_record *lookup(struct internal_store *st, const char *aor) {
        struct entry *e = *find(st, aor);
        return e ? &e->rec : NULL;
}

static void entry_unlink(struct internal_store *st, struct entry **e) {
        struct entry *old = *e;
        *e = old->next;
        slab_free(st->slab, old, old->size);
        st->n_aors--;
}

/* Puts a packed copy of rec in place of *e (a new link when *e is NULL). */
static int entry_replace(struct internal_store *st, struct entry **e,
                         const struct registrar_record *rec, unsigned h) {
        struct entry *n = pack(st, rec, h);
        if (!n)
                return -ENOMEM;
        struct entry *old = *e;
        n->next = old ? old->next : NULL;
        *e = n;
        if (old)
                slab_free(st->slab, old, old->size);
        else if (++st->n_aors > st->n_buckets)
                grow(st);
        return 0;
}

/* Replace (or, with rec empty, remove) the stored record of rec->aor. */
static int store_record(struct internal_store *st, const struct registrar_record *rec) {
        unsigned h = hash(rec->aor);
        struct entry **e = find_hashed(st, rec->aor, h);
        if (rec->n_bindings == 0) {
                if (*e)
                        entry_unlink(st, e);
                return 0;
        }
        return entry_replace(st, e, rec, h);
}

/* Store rec and complete with it. Takes rec. */
static int commit(struct internal_store *st, struct registrar_record *rec, registrar_record_fn cb,
                  void *userdata) {
        int r = store_record(st, rec);
        if (r < 0) {
                registrar_record_free(rec);
                return r;
        }
        return registrar_defer_record(st->deferred, 0, rec, cb, userdata);
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
                        for (size_t i = 0; i < e->rec.n_bindings && !live; i++)
                                live = registrar_binding_kept_until(&e->rec.bindings[i]) > now;
                        if (live && strv_extend(&aors, e->rec.aor) < 0)
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
                        const struct registrar_record *rec = &(*e)->rec;
                        size_t expired = 0;
                        for (size_t i = 0; i < rec->n_bindings; i++)
                                expired += registrar_binding_kept_until(&rec->bindings[i]) <= now;
                        if (expired == rec->n_bindings) {
                                removed += (int)expired;
                                entry_unlink(st, e);
                                continue;
                        }
                        if (expired > 0) {
                                /* Repacked without the expired bindings; when memory is short
                                 * they stay until the next purge (fetch leaves them out). */
                                _cleanup_(registrar_record_freep) struct registrar_record *live =
                                        NULL;
                                if (registrar_record_copy(rec, rec->aor, now, &live) >= 0 &&
                                    entry_replace(st, e, live, (*e)->hash) >= 0)
                                        removed += (int)expired;
                        }
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
                while (st->buckets[b])
                        entry_unlink(st, &st->buckets[b]);
        slab_pool_free(st->slab);
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
        int r = st->buckets ? slab_pool_new(&st->slab) : -ENOMEM;
        if (r >= 0)
                r = registrar_deferred_new(l, &st->deferred);
        if (r < 0) {
                slab_pool_free(st->slab);
                free(st->buckets);
                free(st);
                return r;
        }
        *ret = &st->base;
        return 0;
}
