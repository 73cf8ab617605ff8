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
