/* SPDX-License-Identifier: MIT */
#pragma once

/* sofia-sip's magic types for the presence server, defined once before any sofia header. The
 * default leg and the subscription legs share one callback type, hence void. */
struct presence;
struct subscription;
#define NTA_AGENT_MAGIC_T    struct presence
#define NTA_LEG_MAGIC_T      void
#define NTA_OUTGOING_MAGIC_T struct subscription
#define NTA_INCOMING_MAGIC_T void
#define SU_ROOT_MAGIC_T      void

#include <sofia-sip/msg_addr.h>
#include <sofia-sip/nta.h>
#include <sofia-sip/nta_tport.h>
#include <sofia-sip/sip.h>
#include <sofia-sip/sip_header.h>
#include <sofia-sip/sip_status.h>
#include <sofia-sip/tport.h>
#include <sofia-sip/url.h>

/* nta_agent_create(root, NONE, ...) makes an agent without transports; sofia keeps NONE
 * internal. */
#ifndef NONE
#define NONE ((void *)-1)
#endif
