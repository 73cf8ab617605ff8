/* SPDX-License-Identifier: MIT */
/* Chunks are CHUNK_SIZE bytes at a CHUNK_SIZE-aligned address, so the chunk of an object is
 * found by masking its address. A chunk serves one size class: its free slots are a list
 * threaded through them, and never-used space is handed out from a bump pointer. Each class
 * keeps a list of the chunks that have room. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "slab.h"

#define CHUNK_SIZE ((size_t)64 * 1024)
#define N_CLASSES  80

struct chunk {
        struct chunk *prev, *next; /* in the class's list of chunks with room */
        struct chunk *all_prev, *all_next; /* in the pool's list of every chunk */
        void *free;                /* freed slots, each holding the next one's address */
        char *bump;                /* start of never-used space */
        char *end;
        unsigned used;
        unsigned cls;
        bool has_room_listed;
};

#define HEADER_SIZE ((sizeof(struct chunk) + 15) & ~(size_t)15)

struct slab_pool {
        struct chunk *room[N_CLASSES];
        struct chunk *all;
        unsigned n_chunks[N_CLASSES];
        size_t mapped, used;
};

/* 16-byte steps up to 512, 64-byte steps up to 2048, 256-byte steps up to SLAB_MAX. */
static unsigned size_class(size_t size) {
        if (size <= 512)
                return (unsigned)((size + 15) / 16 - 1);
        if (size <= 2048)
                return 32 + (unsigned)((size - 512 + 63) / 64 - 1);
        return 56 + (unsigned)((size - 2048 + 255) / 256 - 1);
}

static size_t class_size(unsigned cls) {
        if (cls < 32)
                return (cls + 1) * 16;
        if (cls < 56)
                return 512 + (cls - 32 + 1) * 64;
        return 2048 + (cls - 56 + 1) * 256;
}

int slab_pool_new(struct slab_pool **ret) {
        struct slab_pool *p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        *ret = p;
        return 0;
}

static void room_link(struct slab_pool *p, struct chunk *c) {
        c->prev = NULL;
        c->next = p->room[c->cls];
        if (c->next)
                c->next->prev = c;
        p->room[c->cls] = c;
        c->has_room_listed = true;
}

static void room_unlink(struct slab_pool *p, struct chunk *c) {
        if (c->prev)
                c->prev->next = c->next;
        else
                p->room[c->cls] = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->prev = c->next = NULL;
        c->has_room_listed = false;
}

static void chunk_unmap(struct slab_pool *p, struct chunk *c) {
        if (c->all_prev)
                c->all_prev->all_next = c->all_next;
        else
                p->all = c->all_next;
        if (c->all_next)
                c->all_next->all_prev = c->all_prev;
        p->n_chunks[c->cls]--;
        p->mapped -= CHUNK_SIZE;
        munmap(c, CHUNK_SIZE);
}

void slab_pool_free(struct slab_pool *p) {
        if (!p)
                return;
        while (p->all)
                chunk_unmap(p, p->all);
        free(p);
}

static struct chunk *chunk_new(struct slab_pool *p, unsigned cls) {
        /* Map twice the size and keep the aligned half. */
        char *m = mmap(NULL, 2 * CHUNK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        if (m == MAP_FAILED)
                return NULL;
        char *start = (char *)(((uintptr_t)m + CHUNK_SIZE - 1) & ~(uintptr_t)(CHUNK_SIZE - 1));
        if (start > m)
                munmap(m, (size_t)(start - m));
        if (start + CHUNK_SIZE < m + 2 * CHUNK_SIZE)
                munmap(start + CHUNK_SIZE, (size_t)(m + 2 * CHUNK_SIZE - (start + CHUNK_SIZE)));
        struct chunk *c = (struct chunk *)start;
        *c = (struct chunk){.bump = start + HEADER_SIZE, .end = start + CHUNK_SIZE, .cls = cls,
                            .all_next = p->all};
        if (p->all)
                p->all->all_prev = c;
        p->all = c;
        p->n_chunks[cls]++;
        p->mapped += CHUNK_SIZE;
        room_link(p, c);
        return c;
}

void *slab_alloc(struct slab_pool *p, size_t size) {
        if (size > SLAB_MAX) {
                void *m = malloc(size);
                if (m) {
                        p->used += size;
                        p->mapped += size;
                }
                return m;
        }
        unsigned cls = size_class(size ? size : 1);
        size_t csize = class_size(cls);
        struct chunk *c = p->room[cls];
        if (!c && !(c = chunk_new(p, cls)))
                return NULL;
        void *obj;
        if (c->free) {
                obj = c->free;
                c->free = *(void **)obj;
        } else {
                obj = c->bump;
                c->bump += csize;
        }
        c->used++;
        if (!c->free && (size_t)(c->end - c->bump) < csize)
                room_unlink(p, c);
        p->used += csize;
        return obj;
}

void slab_free(struct slab_pool *p, void *ptr, size_t size) {
        if (!ptr)
                return;
        if (size > SLAB_MAX) {
                free(ptr);
                p->used -= size;
                p->mapped -= size;
                return;
        }
        struct chunk *c = (struct chunk *)((uintptr_t)ptr & ~(uintptr_t)(CHUNK_SIZE - 1));
        *(void **)ptr = c->free;
        c->free = ptr;
        c->used--;
        p->used -= class_size(c->cls);
        if (!c->has_room_listed)
                room_link(p, c);
        /* An empty chunk goes back to the system unless it is its class's last one. */
        if (c->used == 0 && p->n_chunks[c->cls] > 1) {
                room_unlink(p, c);
                chunk_unmap(p, c);
        }
}

size_t slab_mapped(const struct slab_pool *p) {
        return p->mapped;
}

size_t slab_used(const struct slab_pool *p) {
        return p->used;
}
