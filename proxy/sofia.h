/* SPDX-License-Identifier: MIT */
#pragma once

/* sofia-sip's magic types for the proxy, defined once before any sofia header. */
struct proxy;
struct proxy_request;
struct fork_branch;
#define NTA_AGENT_MAGIC_T struct proxy
#define NTA_LEG_MAGIC_T struct proxy
#define NTA_INCOMING_MAGIC_T struct proxy_request
#define NTA_OUTGOING_MAGIC_T struct fork_branch
#define SU_ROOT_MAGIC_T void

#include <sofia-sip/msg_addr.h>
#include <sofia-sip/nta.h>
#include <sofia-sip/nta_stateless.h>
#include <sofia-sip/nta_tport.h>
#include <sofia-sip/sip.h>
#include <sofia-sip/sip_header.h>
#include <sofia-sip/sip_status.h>
#include <sofia-sip/su_wait.h>
#include <sofia-sip/tport.h>
#include <sofia-sip/tport_tag.h>
#include <sofia-sip/url.h>

/* nta_agent_create(root, NONE, ...) makes an agent without transports; sofia keeps NONE
 * internal. */
#ifndef NONE
#define NONE ((void *)-1)
#endif
