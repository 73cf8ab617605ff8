/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "macro.h"
#include "udp.h"

int udp_set_receive_buffers(char *const *ports, int size) {
        DIR *d = opendir("/proc/self/fd");
        if (!d)
                return -errno;
        int set = 0;
        for (struct dirent *e; (e = readdir(d));) {
                char *end;
                long fd = strtol(e->d_name, &end, 10);
                if (*end || fd < 0 || fd == dirfd(d))
                        continue;
                int type;
                socklen_t tl = sizeof type;
                struct sockaddr_storage sa;
                socklen_t sl = sizeof sa;
                if (getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_DGRAM ||
                    getsockname((int)fd, (struct sockaddr *)&sa, &sl) < 0 ||
                    (sa.ss_family != AF_INET && sa.ss_family != AF_INET6))
                        continue;
                unsigned port = ntohs(sa.ss_family == AF_INET
                                              ? ((struct sockaddr_in *)&sa)->sin_port
                                              : ((struct sockaddr_in6 *)&sa)->sin6_port);
                char text[8];
                snprintf(text, sizeof text, "%u", port);
                if (!strv_contains(ports, text))
                        continue;
                if (setsockopt((int)fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0 &&
                    setsockopt((int)fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size) < 0)
                        continue;
                set++;
        }
        closedir(d);
        return set;
}
