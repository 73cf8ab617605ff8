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
/* The instance (urn:...) of a device whose unique id came from +sip.instance, to make or
 * match a GRUU (";gr=<instance>"); NULL (not malloc'd) when the id is not an URN. */
char *registrar_gruu_instance(const char *unique_id);
/* With db-implementation=redis, the connection settings (valid while reg lives) and the key
 * prefix of the bindings, for the message store; NULL otherwise. */
struct redis_config;
const struct redis_config *registrar_redis_config(struct registrar *reg, const char **prefix);

/* "A device registered": cb(aor, unique_id, userdata) for each device a REGISTER binds or
 * refreshes on aor ("sip:user@host", as registrar_aor_normalize() gives), after its 200 OK.
 * With a store shared by several proxies (Redis) it comes through the store, so REGISTERs
 * on any proxy count; with the embedded stores, from this proxy's REGISTERs. For fork-late:
 * a pending fork listens on its AOR and adds a branch for the new device. One (aor, cb,
 * userdata) triple each: -EEXIST for a duplicate; unlisten gives -ENOENT for an unknown one.
 * cb may unlisten (itself or others). */
#ifndef REGISTRAR_EVENT_FN_DEFINED
#define REGISTRAR_EVENT_FN_DEFINED
typedef void (*registrar_event_fn)(const char *aor, const char *unique_id, void *userdata);
#endif
int registrar_listen(struct registrar *reg, const char *aor, registrar_event_fn cb,
                     void *userdata);
int registrar_unlisten(struct registrar *reg, const char *aor, registrar_event_fn cb,
                       void *userdata);
