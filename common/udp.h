/* SPDX-License-Identifier: MIT */
#pragma once

/* sofia does not expose its sockets: the UDP sockets of this process bound to one of ports
 * (numeric strings, NULL-terminated) get a receive buffer of size bytes (SO_RCVBUFFORCE when
 * permitted, else SO_RCVBUF within net.core.rmem_max), so that a burst or a short stall of the
 * loop does not drop datagrams. Returns how many sockets were set, or -errno. Used by the SIP
 * daemons for their UDP transports ([global] udp-receive-buffer). */
int udp_set_receive_buffers(char *const *ports, int size);
