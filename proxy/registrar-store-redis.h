/* SPDX-License-Identifier: MIT */
#pragma once

/* The Redis registrar store (registrar-store-redis.c describes the layout). */

#include <stdbool.h>
#include <stdint.h>

#include "redis.h"

struct loop;
struct registrar_store;

struct registrar_redis_config {
        struct redis_config redis; /* server, auth, timeouts, failover */
        const char *key_prefix;    /* NULL: "fs:" */
        unsigned wait_replicas;    /* WAIT for this many replicas after each write; 0: no */
        uint64_t wait_timeout_ms;  /* 0: 500 */
};

/* Connects in the background: until connected, every operation fails with -ENOTCONN. */
int registrar_store_redis_new(struct loop *l, const struct registrar_redis_config *cfg,
                              struct registrar_store **ret);
/* Connected to the master, and the first count of the AORs done. */
bool registrar_store_redis_ready(struct registrar_store *s);
