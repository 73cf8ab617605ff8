/* SPDX-License-Identifier: MIT */
#pragma once

/* What the Registrar module offers to the modules after it (Router): the managed domains and
 * the store of bindings. */

#include <stdbool.h>

struct proxy;
struct registrar;
struct registrar_store;

/* The Registrar of this proxy once it started, NULL when the module is disabled. */
struct registrar *proxy_registrar(struct proxy *p);
/* Is host one of reg-domains (or is reg-domains "*")? */
bool registrar_domain_managed(struct registrar *reg, const char *host);
struct registrar_store *registrar_get_store(struct registrar *reg);

struct registrar_record;
/* Called after every successful REGISTER (or REGISTRAR_UPSERT) that left the AOR with
 * bindings, with its current bindings: fork-late sends pending requests to the devices. */
typedef void (*registrar_listener_fn)(const struct registrar_record *rec, void *userdata);
#define REGISTRAR_MAX_LISTENERS 4
/* -ENOSPC beyond REGISTRAR_MAX_LISTENERS. */
int registrar_listen(struct registrar *reg, registrar_listener_fn fn, void *userdata);
