/* SPDX-License-Identifier: MIT */
#pragma once

/* DoSProtection (proxy/dos.c): per-source rate limits and bans, first in the module chain.
 * These entry points are for the proxy core and for modules that know trusted peers. */

#include "sofia.h"

struct proxy;

/* Counts a message that reached the proxy outside the module chain (proxy.c's on_message:
 * stray responses, stateless traffic) against its source's packet rate. Returns 1 when the
 * source is banned: the message has been destroyed and must not be touched. Returns 0
 * otherwise (also when the module is disabled). */
int dos_note_packet(struct proxy *p, msg_t *msg);

/* Exempts an address or network ("192.0.2.7", "10.0.0.0/8", "2001:db8::/32") from counting and
 * bans, as [module::DoSProtection] white-list does; for trusted hosts and cluster nodes. From
 * then on a matching source passes, even while a ban of it runs out. 0, -EINVAL for a bad
 * address, -ENOMEM. Usable before or after the module starts (the white-list is added at
 * start); when the proxy has no DoSProtection it only checks the address. */
int dos_exempt_add(struct proxy *p, const char *address);
