/* SPDX-License-Identifier: MIT */
#pragma once

/* bencode (the encoding of the NG protocol): integers "i42e", byte strings "4:spam", lists
 * "l...e" and dictionaries "d...e" whose keys are byte strings.
 *
 * Decoding is strict about the grammar (no leading zeros, no "-0", no integer overflow, no
 * string longer than the input, no non-string key) and bounded: nesting depth and the number of
 * items are limited, so a peer cannot make the decoder recurse or allocate without bound.
 * Dictionary keys are accepted in any order and duplicates are kept (lookups return the first);
 * the encoder always writes keys sorted, as the format asks.
 *
 * A decoded tree is one allocation per node; bencode_free() releases it. Strings are
 * NUL-terminated copies (they may also contain NUL bytes: use len). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

enum bencode_type {
        BENCODE_INT,
        BENCODE_STRING,
        BENCODE_LIST,
        BENCODE_DICT,
};

struct bencode {
        enum bencode_type type;
        int64_t i;                /* BENCODE_INT */
        char *s;                  /* BENCODE_STRING, and a dict entry's key */
        size_t len;               /* length of s */
        struct bencode *first;    /* LIST: first item; DICT: first entry */
        struct bencode *last;     /* for appending */
        struct bencode *next;     /* next item of the parent list, next entry of the parent dict */
        struct bencode *value;    /* dict entry: this node holds the key (s, len), value the item */
        size_t n;                 /* LIST/DICT: number of items/entries */
        bool failed;              /* a builder add ran out of memory */
};

struct bencode_limits {
        unsigned max_depth; /* lists/dicts nested at most this deep (1 = no container inside) */
        size_t max_items;   /* integers, strings, lists and dicts in total */
};
#define BENCODE_LIMITS_DEFAULT ((struct bencode_limits){.max_depth = 32, .max_items = 65536})

struct bencode_error {
        size_t offset;
        char msg[128];
};

/* Decodes one item at the start of buf. *consumed (may be NULL) receives the number of bytes
 * used; bytes after the item are the caller's business. Returns 0, -EBADMSG for a malformed
 * input (with err filled, err may be NULL), -E2BIG over a limit, -ENOMEM. */
int bencode_decode(const void *buf, size_t len, const struct bencode_limits *limits,
                   struct bencode **ret, size_t *consumed, struct bencode_error *err);

void bencode_free(struct bencode *b);
static inline void bencode_freep(struct bencode **b) {
        bencode_free(*b);
}
#define _cleanup_bencode_ _cleanup_(bencode_freep)

/* Builders: NULL on ENOMEM. The add functions take ownership of item and return it, or NULL
 * on ENOMEM (item NULL, or the key copy failing): then the container is marked failed and
 * bencode_encode() of the tree refuses with -ENOMEM, so a chain of adds is checked once, at
 * the end. Adding to a NULL container frees item and returns NULL. */
struct bencode *bencode_new_int(int64_t i);
struct bencode *bencode_new_string(const void *s, size_t len);
struct bencode *bencode_new_str(const char *s);
struct bencode *bencode_new_list(void);
struct bencode *bencode_new_dict(void);
struct bencode *bencode_list_add(struct bencode *list, struct bencode *item);
struct bencode *bencode_dict_add(struct bencode *dict, const char *key, struct bencode *item);
struct bencode *bencode_dict_add_str(struct bencode *dict, const char *key, const char *s);
struct bencode *bencode_dict_add_int(struct bencode *dict, const char *key, int64_t i);

/* Encodes into a malloc'd buffer (NUL-terminated for convenience, len excludes it).
 * 0 or -ENOMEM (also when a builder failed: see above). */
int bencode_encode(const struct bencode *b, char **ret, size_t *ret_len);

/* Lookups: NULL when missing or not a dict. */
struct bencode *bencode_dict_get(const struct bencode *dict, const char *key);
/* The value of key when it is a string, else NULL. */
const char *bencode_dict_get_str(const struct bencode *dict, const char *key);
bool bencode_is_str(const struct bencode *b, const char *s);
