/* SPDX-License-Identifier: MIT */
#pragma once

/* Redis high-availability fixtures (servers on chosen ports, replicas, sentinels) and a plain
 * UDP REGISTER for tests that count or time registrations. */

#include <stdint.h>

#include "testlib.h"

/* Like tl_redis_start() on a given port (0: a free one), e.g. to restart a killed server. */
int tl_redis_start_on(struct tl_redis *r, int port, const char *const *extra);

/* A real redis-sentinel (Debian's redis-sentinel) on a free port, monitoring master_name at
 * 127.0.0.1:master_port, with its own rewritable config file. */
struct tl_sentinel {
        struct tl_proc proc;
        int port;
        char *conf;
};
void tl_sentinel_start(struct tl_sentinel *s, const char *master_name, int master_port,
                       int quorum, int down_after_ms, int failover_timeout_ms);
void tl_sentinel_stop(struct tl_sentinel *s);
/* One command to the sentinel (tl_redis_cmd's text rules). */
char *tl_sentinel_cmd(struct tl_sentinel *s, const char *fmt, ...);

/* One REGISTER over UDP for sip:user@localhost with one Contact (contact: a URI; expires in
 * seconds) to the proxy on 127.0.0.1:port; waits up to timeout_ms for the final response.
 * Returns its status code, or 0 when none came in time. *response (may be NULL) gets its
 * text. */
int tl_sip_register(int port, const char *user, const char *contact, const char *call_id,
                    uint32_t cseq, int expires, int timeout_ms, char **response);
