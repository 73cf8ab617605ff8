/* SPDX-License-Identifier: MIT */
/* The port allocator: pairs of ports (RTP even, RTCP odd) from [mediarelay] port-range, next
 * fit so a freed pair is not reused at once (late packets of an old call do not reach a new
 * one). A pair another program holds is skipped. */
#define LOG_SUBSYSTEM LOG_media
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "mediarelay.h"

int ports_init(struct mediarelay *m) {
        unsigned lo = (unsigned)m->config.port_range.min, hi = (unsigned)m->config.port_range.max;

        if (lo & 1)
                lo++;
        if (hi < lo + 1)
                return -ERANGE;
        m->port_base = lo;
        m->port_pairs = (hi - lo + 1) / 2;
        m->port_used = calloc(m->port_pairs, 1);
        if (!m->port_used)
                return -ENOMEM;
        m->port_next = 0;
        return 0;
}

void ports_done(struct mediarelay *m) {
        free(m->port_used);
        m->port_used = NULL;
}

static int bind_port(struct mediarelay *m, unsigned port) {
        struct sockaddr_storage sa = m->bind_addr;
        int fd;

        if (sa.ss_family == AF_INET)
                ((struct sockaddr_in *)&sa)->sin_port = htons(port);
        else
                ((struct sockaddr_in6 *)&sa)->sin6_port = htons(port);
        fd = socket(sa.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *)&sa, m->bind_len) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

int ports_alloc(struct mediarelay *m, struct rsock *rtp, struct rsock *rtcp) {
        for (unsigned tries = 0; tries < m->port_pairs; tries++) {
                unsigned i = m->port_next;
                m->port_next = (m->port_next + 1) % m->port_pairs;
                if (m->port_used[i])
                        continue;
                unsigned port = m->port_base + 2 * i;
                int a = bind_port(m, port);
                if (a < 0) {
                        if (a == -EADDRINUSE)
                                continue;
                        return a;
                }
                int b = bind_port(m, port + 1);
                if (b < 0) {
                        close(a);
                        if (b == -EADDRINUSE)
                                continue;
                        return b;
                }
                m->port_used[i] = 1;
                m->ports_in_use += 2;
                rtp->fd = a;
                rtp->port = (uint16_t)port;
                rtcp->fd = b;
                rtcp->port = (uint16_t)(port + 1);
                return 0;
        }
        return -EADDRNOTAVAIL;
}

void ports_release(struct mediarelay *m, struct rsock *rtp, struct rsock *rtcp) {
        if (rtp->fd >= 0) {
                close(rtp->fd);
                rtp->fd = -1;
        }
        if (rtcp->fd >= 0) {
                close(rtcp->fd);
                rtcp->fd = -1;
        }
        if (rtp->port >= m->port_base) {
                unsigned i = (rtp->port - m->port_base) / 2;
                if (i < m->port_pairs && m->port_used[i]) {
                        m->port_used[i] = 0;
                        m->ports_in_use -= 2;
                }
        }
        rtp->port = rtcp->port = 0;
}
