/* SPDX-License-Identifier: MIT */
#pragma once

/* Persistence of pending MESSAGEs (store-and-forward) for the embedded default: each message
 * waiting for a device, and which devices got it. Synchronous SQLite calls (see the file). */

#include <stddef.h>
#include <stdint.h>

struct message_store;

/* -EIO when the file cannot be opened or set up. */
int message_store_open(const char *path, struct message_store **ret);
void message_store_close(struct message_store *s);

int message_store_add(struct message_store *s, const char *aor, uint64_t received_at,
                      uint64_t expires_at, const char *data, size_t len, int64_t *id);
/* device got its final answer (status); it is not sent the message again. */
int message_store_delivered(struct message_store *s, int64_t id, const char *device, int status);
int message_store_remove(struct message_store *s, int64_t id);

struct message_store_entry {
        int64_t id;
        const char *aor;
        uint64_t received_at, expires_at;
        const void *data;
        size_t len;
        char *const *delivered; /* devices, NULL-terminated, may be NULL */
};
/* Every pending message, oldest first; the entry is valid during the call. Returns the count. */
typedef void (*message_store_each_fn)(const struct message_store_entry *e, void *userdata);
int message_store_load(struct message_store *s, message_store_each_fn fn, void *userdata);
