/* SPDX-License-Identifier: MIT */
#pragma once

/* A size-class allocator for long-lived small objects (registrar records). Objects live in
 * 64 KiB chunks mapped for this pool alone, so they never share a page with the short-lived
 * memory of SIP transactions: when a burst of transactions ends, the heap gives its pages back
 * to the system instead of keeping them for the few hundred bytes of a binding allocated in
 * between. An empty chunk is unmapped (one spare per class is kept). Sizes above SLAB_MAX go to
 * malloc. The caller passes the size back to slab_free. Single-threaded. */

#include <stddef.h>

#define SLAB_MAX 8192

struct slab_pool;

int slab_pool_new(struct slab_pool **ret);
/* Unmaps every chunk, with whatever objects are left in them (objects above SLAB_MAX must have
 * been freed). Accepts NULL. */
void slab_pool_free(struct slab_pool *p);

/* NULL when out of memory. size > 0. */
void *slab_alloc(struct slab_pool *p, size_t size);
/* size: the one given to slab_alloc. Accepts NULL. */
void slab_free(struct slab_pool *p, void *ptr, size_t size);

/* Bytes of chunks mapped, and bytes handed out (rounded to their class). */
size_t slab_mapped(const struct slab_pool *p);
size_t slab_used(const struct slab_pool *p);
