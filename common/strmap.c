/* SPDX-License-Identifier: MIT */
#include <stdint.h>
#include <sys/random.h>
#include <time.h>

#include "macro.h"
#include "strmap.h"

struct entry {
        struct entry *hash_next;
        struct entry *newer, *older;
        void *value;
        uint64_t hash;
        char key[];
};

struct strmap {
        struct entry **buckets;
        size_t n_buckets; /* a power of two */
        size_t n, max;
        uint64_t seed[2];
        struct entry *newest, *oldest;
        void (*free_value)(void *value);
};

int strmap_new(size_t max, void (*free_value)(void *value), struct strmap **ret) {
        if (max == 0)
                return -EINVAL;
        struct strmap *m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->max = max;
        m->free_value = free_value;
        m->n_buckets = 16;
        while (m->n_buckets < max && m->n_buckets < ((size_t)1 << 28))
                m->n_buckets <<= 1;
        m->buckets = calloc(m->n_buckets, sizeof *m->buckets);
        if (!m->buckets) {
                free(m);
                return -ENOMEM;
        }
        if (getrandom(m->seed, sizeof m->seed, GRND_NONBLOCK) != sizeof m->seed) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                m->seed[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL;
                m->seed[1] = (uint64_t)ts.tv_sec ^ (uintptr_t)m;
        }
        *ret = m;
        return 0;
}

static void entry_free(struct strmap *m, struct entry *e) {
        if (m->free_value)
                m->free_value(e->value);
        free(e);
}

void strmap_clear(struct strmap *m) {
        for (struct entry *e = m->newest, *next; e; e = next) {
                next = e->older;
                entry_free(m, e);
        }
        memset(m->buckets, 0, m->n_buckets * sizeof *m->buckets);
        m->newest = m->oldest = NULL;
        m->n = 0;
}

void strmap_free(struct strmap *m) {
        if (!m)
                return;
        strmap_clear(m);
        free(m->buckets);
        free(m);
}

static uint64_t mix(uint64_t h) {
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdULL;
        h ^= h >> 33;
        h *= 0xc4ceb9fe1a85ec53ULL;
        h ^= h >> 33;
        return h;
}

static uint64_t hash_key(const struct strmap *m, const char *key) {
        uint64_t h = m->seed[0];
        size_t len = strlen(key);
        for (size_t i = 0; i < len; i += 8) {
                uint64_t w = 0;
                memcpy(&w, key + i, MIN(8, len - i));
                h = mix(h ^ w ^ m->seed[1]) + i;
        }
        return mix(h ^ len);
}

static struct entry **find_slot(const struct strmap *m, const char *key, uint64_t h) {
        struct entry **slot = &m->buckets[h & (m->n_buckets - 1)];
        while (*slot && ((*slot)->hash != h || !streq((*slot)->key, key)))
                slot = &(*slot)->hash_next;
        return slot;
}

static void list_unlink(struct strmap *m, struct entry *e) {
        if (e->newer)
                e->newer->older = e->older;
        else
                m->newest = e->older;
        if (e->older)
                e->older->newer = e->newer;
        else
                m->oldest = e->newer;
        e->newer = e->older = NULL;
}

static void list_push(struct strmap *m, struct entry *e) {
        e->older = m->newest;
        e->newer = NULL;
        if (m->newest)
                m->newest->newer = e;
        m->newest = e;
        if (!m->oldest)
                m->oldest = e;
}

static void remove_entry(struct strmap *m, struct entry *e) {
        struct entry **slot = find_slot(m, e->key, e->hash);
        *slot = e->hash_next;
        list_unlink(m, e);
        m->n--;
        entry_free(m, e);
}

void *strmap_peek(const struct strmap *m, const char *key) {
        struct entry *e = *find_slot(m, key, hash_key(m, key));
        return e ? e->value : NULL;
}

void *strmap_get(struct strmap *m, const char *key) {
        struct entry *e = *find_slot(m, key, hash_key(m, key));
        if (!e)
                return NULL;
        list_unlink(m, e);
        list_push(m, e);
        return e->value;
}

int strmap_put(struct strmap *m, const char *key, void *value) {
        uint64_t h = hash_key(m, key);
        struct entry *e = *find_slot(m, key, h);
        if (e) {
                if (m->free_value && e->value != value)
                        m->free_value(e->value);
                e->value = value;
                list_unlink(m, e);
                list_push(m, e);
                return 0;
        }
        size_t len = strlen(key);
        e = malloc(sizeof *e + len + 1);
        if (!e)
                return -ENOMEM;
        memcpy(e->key, key, len + 1);
        e->value = value;
        e->hash = h;
        if (m->n >= m->max)
                remove_entry(m, m->oldest);
        struct entry **slot = &m->buckets[h & (m->n_buckets - 1)];
        e->hash_next = *slot;
        *slot = e;
        list_push(m, e);
        m->n++;
        return 0;
}

int strmap_remove(struct strmap *m, const char *key) {
        struct entry *e = *find_slot(m, key, hash_key(m, key));
        if (!e)
                return -ENOENT;
        remove_entry(m, e);
        return 0;
}

size_t strmap_size(const struct strmap *m) {
        return m->n;
}

void strmap_foreach(struct strmap *m, strmap_foreach_fn fn, void *userdata) {
        for (struct entry *e = m->newest, *next; e; e = next) {
                next = e->older;
                if (fn(e->key, e->value, userdata))
                        remove_entry(m, e);
        }
}
