/* SPDX-License-Identifier: MIT */
#pragma once

/* A bounded map from strings to pointers, in least-recently-used order: the auth cache, the
 * digest nonce table and the failed-attempt counters. Keys may come from peers, so the hash is
 * keyed with a random seed. When the map is full, putting a new key evicts the least recently
 * used entry (its value goes to free_value). Single-threaded. */

#include <stdbool.h>
#include <stddef.h>

struct strmap;

/* max > 0. free_value may be NULL (values are not owned then). */
int strmap_new(size_t max, void (*free_value)(void *value), struct strmap **ret);
/* Frees every value. Accepts NULL. */
void strmap_free(struct strmap *m);

/* The value, marked most recently used; NULL when absent. */
void *strmap_get(struct strmap *m, const char *key);
/* The value without touching the order. */
void *strmap_peek(const struct strmap *m, const char *key);
/* Inserts or replaces (the old value is freed), most recently used. 0 or -ENOMEM. */
int strmap_put(struct strmap *m, const char *key, void *value);
/* Removes and frees. 0, or -ENOENT. */
int strmap_remove(struct strmap *m, const char *key);
void strmap_clear(struct strmap *m);
size_t strmap_size(const struct strmap *m);

/* Calls fn for each entry, most recently used first; fn returning true removes the entry. */
typedef bool (*strmap_foreach_fn)(const char *key, void *value, void *userdata);
void strmap_foreach(struct strmap *m, strmap_foreach_fn fn, void *userdata);
