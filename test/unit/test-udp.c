/* SPDX-License-Identifier: MIT */
/* common/udp: the receive buffer is set on this process's UDP sockets bound to the listed
 * ports, and on no other socket. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "macro.h"
#include "testlib.h"
#include "udp.h"

static int bound_socket(int type, unsigned *port) {
        int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        socklen_t len = sizeof sa;
        ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
        *port = ntohs(sa.sin_port);
        return fd;
}

static int rcvbuf(int fd) {
        int v = 0;
        socklen_t len = sizeof v;
        ck_assert_int_eq(getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, &len), 0);
        return v;
}

START_TEST(test_udp_receive_buffer_only_listed_ports) {
        unsigned port_a, port_b;
        int a = bound_socket(SOCK_DGRAM, &port_a), b = bound_socket(SOCK_DGRAM, &port_b);
        int before_b = rcvbuf(b);
        const int size = 3 << 20;
        ck_assert_int_lt(rcvbuf(a), size);
        char text[8];
        snprintf(text, sizeof text, "%u", port_a);
        char *ports[] = {text, NULL};
        ck_assert_int_eq(udp_set_receive_buffers(ports, size), 1);
        /* The kernel reports twice what was set (bookkeeping overhead); without the privilege
         * to force it, net.core.rmem_max caps it. */
        if (geteuid() == 0)
                ck_assert_int_ge(rcvbuf(a), size);
        else
                ck_assert_int_gt(rcvbuf(a), before_b);
        ck_assert_int_eq(rcvbuf(b), before_b);
        /* No socket on an unlisted port: nothing set. */
        char *none[] = {"1", NULL};
        ck_assert_int_eq(udp_set_receive_buffers(none, size), 0);
        close(a);
        close(b);
}
END_TEST

START_TEST(test_udp_receive_buffer_leaves_tcp_alone) {
        unsigned port;
        int t = bound_socket(SOCK_STREAM, &port);
        int before = rcvbuf(t);
        char text[8];
        snprintf(text, sizeof text, "%u", port);
        char *ports[] = {text, NULL};
        ck_assert_int_eq(udp_set_receive_buffers(ports, 3 << 20), 0);
        ck_assert_int_eq(rcvbuf(t), before);
        close(t);
}
END_TEST

int main(void) {
        Suite *s = suite_create("udp");
        TCase *tc = tcase_create("receive-buffer");
        tcase_add_test(tc, test_udp_receive_buffer_only_listed_ports);
        tcase_add_test(tc, test_udp_receive_buffer_leaves_tcp_alone);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
