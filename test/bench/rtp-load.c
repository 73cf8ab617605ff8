/* SPDX-License-Identifier: MIT */
/* RTP load for test/bench/mediarelay: N calls, each two UDP endpoints (A and B) on 127.0.0.1
 * sending 172-byte RTP packets (12-byte header, 160 bytes of payload: 20 ms of PCMU) at a
 * fixed rate to the relay ports the driver gives, and counting what comes back.
 *
 * Protocol on stdin/stdout, one line each:
 *   start:        rtp-load <calls> <pps> <warmup-s> <measure-s>
 *   it prints     "<port-a> <port-b>" per call (the ports to put in the SDP), then "ready";
 *   it reads      "<relay-port-for-a> <relay-port-for-b>" per call (where A sends, where B
 *                 sends), then runs the warm-up, prints "measure-start", measures, prints
 *                 "measure-end" and one JSON line of counts for the measured window.
 * Loss is counted by RTP sequence number: the packets each endpoint sent inside the window,
 * against those of them its peer received, however late (after the window, the relay's
 * backlog is drained until 500 ms pass without a packet, at most 5 s: "drain_ms").
 * Sending is paced in 1 ms slices so that each socket sends once per 1/pps seconds; receiving
 * uses recvmmsg on every readable socket. Bounded: at most 10000 calls, 1000 pps, 600 s. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PKT 172
#define BATCH 64

struct ep {
        int fd;
        int port;
        struct sockaddr_in to;
        uint16_t seq;
        uint32_t ssrc;
        uint16_t win_start, win_end; /* sequence numbers sent inside the measured window */
        uint8_t *got;                /* bitmap: which of its peer's window packets came back */
};

static bool in_window(const struct ep *from, uint16_t seq, bool ended) {
        uint16_t end = ended ? from->win_end : from->seq;
        return (uint16_t)(seq - from->win_start) < (uint16_t)(end - from->win_start);
}

/* Marks the packet of eps[from] with sequence number seq as received; false when it is
 * outside the window or came already (a duplicate). */
static bool mark(struct ep *to, const struct ep *from, uint16_t seq, bool ended) {
        if (!in_window(from, seq, ended))
                return false;
        uint16_t k = (uint16_t)(seq - from->win_start);
        if (to->got[k / 8] & (1u << (k % 8)))
                return false;
        to->got[k / 8] |= (uint8_t)(1u << (k % 8));
        return true;
}

/* A packet from eps[from] with sequence number seq: inside the window? */

static uint64_t now_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void die(const char *what) {
        fprintf(stderr, "rtp-load: %s: %s\n", what, strerror(errno));
        exit(1);
}

int main(int argc, char **argv) {
        if (argc != 5) {
                fprintf(stderr, "usage: rtp-load <calls> <pps> <warmup-s> <measure-s>\n");
                return 2;
        }
        long calls = atol(argv[1]), pps = atol(argv[2]);
        long warmup = atol(argv[3]), measure = atol(argv[4]);
        if (calls < 1 || calls > 10000 || pps < 1 || pps > 1000 || warmup < 0 || measure < 1 ||
            warmup + measure > 600) {
                fprintf(stderr, "rtp-load: arguments out of range\n");
                return 2;
        }
        size_t n = (size_t)calls * 2;
        struct ep *eps = calloc(n, sizeof *eps);
        int ep_fd = epoll_create1(EPOLL_CLOEXEC);
        if (!eps || ep_fd < 0)
                die("setup");
        for (size_t i = 0; i < n; i++) {
                struct ep *e = &eps[i];
                e->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (e->fd < 0)
                        die("socket");
                int buf = 1 << 20;
                setsockopt(e->fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
                struct sockaddr_in sa = {.sin_family = AF_INET};
                sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                socklen_t len = sizeof sa;
                if (bind(e->fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
                    getsockname(e->fd, (struct sockaddr *)&sa, &len) < 0)
                        die("bind");
                e->port = ntohs(sa.sin_port);
                e->ssrc = (uint32_t)(0x51f10000u + i);
                struct epoll_event ev = {.events = EPOLLIN, .data.u64 = i};
                if (epoll_ctl(ep_fd, EPOLL_CTL_ADD, e->fd, &ev) < 0)
                        die("epoll_ctl");
        }
        for (long c = 0; c < calls; c++)
                printf("%d %d\n", eps[2 * c].port, eps[2 * c + 1].port);
        printf("ready\n");
        fflush(stdout);
        for (long c = 0; c < calls; c++) {
                int ra, rb;
                if (scanf("%d %d", &ra, &rb) != 2 || ra < 1 || ra > 65535 || rb < 1 || rb > 65535) {
                        fprintf(stderr, "rtp-load: bad relay ports for call %ld\n", c);
                        return 1;
                }
                int ports[2] = {ra, rb};
                for (int s = 0; s < 2; s++) {
                        struct ep *e = &eps[2 * c + s];
                        e->to = (struct sockaddr_in){.sin_family = AF_INET,
                                                     .sin_port = htons((uint16_t)ports[s])};
                        e->to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                }
        }

        unsigned char pkt[PKT] = {0x80, 0x00};
        uint64_t period = 1000000 / (uint64_t)pps; /* per socket */
        uint64_t start = now_us(), measure_at = start + (uint64_t)warmup * 1000000,
                 end = measure_at + (uint64_t)measure * 1000000;
        uint64_t sent = 0, received = 0, bytes = 0, send_errors = 0, window_received = 0;
        bool measuring = false;
        size_t next = 0;       /* next socket to send */
        uint64_t round_at = start;
        struct epoll_event evs[256];
        static unsigned char rbuf[BATCH][2048];
        struct mmsghdr msgs[BATCH];
        struct iovec iovs[BATCH];
        for (;;) {
                uint64_t t = now_us();
                if (!measuring && t >= measure_at) {
                        measuring = true;
                        sent = received = bytes = send_errors = 0;
                        for (size_t i = 0; i < n; i++) {
                                eps[i].win_start = eps[i].seq;
                                /* at most 65536 sequence numbers in a window */
                                eps[i].got = calloc(65536 / 8, 1);
                                if (!eps[i].got)
                                        die("calloc");
                        }
                        printf("measure-start\n");
                        fflush(stdout);
                }
                if (t >= end) {
                        for (size_t i = 0; i < n; i++)
                                eps[i].win_end = eps[i].seq;
                        break;
                }
                /* Sockets due by now: a round of all n every period, spread evenly. */
                size_t due = t >= round_at ? (size_t)((t - round_at) * n / period) : 0;
                if (due > n)
                        due = n;
                while (next < due) {
                        struct ep *e = &eps[next++];
                        pkt[2] = (unsigned char)(e->seq >> 8);
                        pkt[3] = (unsigned char)e->seq;
                        e->seq++;
                        uint32_t ts = (uint32_t)e->seq * 160;
                        memcpy(pkt + 4, &ts, 4);
                        memcpy(pkt + 8, &e->ssrc, 4);
                        if (sendto(e->fd, pkt, PKT, 0, (struct sockaddr *)&e->to, sizeof e->to) ==
                            PKT)
                                sent++;
                        else
                                send_errors++;
                }
                if (next >= n) {
                        next = 0;
                        round_at += period;
                }
                int k = epoll_wait(ep_fd, evs, 256, 1);
                for (int i = 0; i < k; i++) {
                        uint64_t idx = evs[i].data.u64;
                        struct ep *e = &eps[idx];
                        for (int j = 0; j < BATCH; j++) {
                                iovs[j] = (struct iovec){rbuf[j], sizeof rbuf[j]};
                                msgs[j] = (struct mmsghdr){.msg_hdr = {.msg_iov = &iovs[j],
                                                                       .msg_iovlen = 1}};
                        }
                        int got = recvmmsg(e->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
                        for (int j = 0; j < got; j++) {
                                received++;
                                bytes += msgs[j].msg_len;
                                if (measuring && msgs[j].msg_len >= 4 &&
                                    mark(e, &eps[idx ^ 1],
                                         (uint16_t)(rbuf[j][2] << 8 | rbuf[j][3]), false))
                                        window_received++;
                        }
                }
        }
        /* Packets in flight at the end still count: drain the relay's backlog. */
        uint64_t drain_start = now_us(), last_rx = drain_start;
        while (now_us() - last_rx < 500000 && now_us() - drain_start < 5000000) {
                int k = epoll_wait(ep_fd, evs, 256, 10);
                for (int i = 0; i < k; i++) {
                        uint64_t idx = evs[i].data.u64;
                        unsigned char b[2048];
                        ssize_t len;
                        while ((len = recv(eps[idx].fd, b, sizeof b, MSG_DONTWAIT)) > 0) {
                                last_rx = now_us();
                                if (len >= 4 &&
                                    mark(&eps[idx], &eps[idx ^ 1], (uint16_t)(b[2] << 8 | b[3]),
                                         true))
                                        window_received++;
                        }
                }
        }
        uint64_t drain_ms = (last_rx - drain_start) / 1000;
        /* Where the lost packets were in the window (tenths), and how many endpoints lost any:
         * spread evenly is loss under way, bunched at an edge is a counting or timing matter. */
        uint64_t lost_tenth[10] = {0}, endpoints_with_loss = 0;
        for (size_t i = 0; i < n; i++) {
                const struct ep *from = &eps[i ^ 1];
                uint16_t span = (uint16_t)(from->win_end - from->win_start);
                bool any = false;
                for (uint16_t k = 0; k < span; k++)
                        if (!(eps[i].got[k / 8] & (1u << (k % 8)))) {
                                lost_tenth[(size_t)k * 10 / span]++;
                                any = true;
                        }
                endpoints_with_loss += any;
        }
        printf("measure-end\n");
        printf("{\"calls\": %ld, \"pps\": %ld, \"seconds\": %ld, \"sent\": %llu, \"received\": "
               "%llu, \"bytes\": %llu, \"send_errors\": %llu, \"window_received\": %llu, "
               "\"drain_ms\": %llu, \"endpoints_with_loss\": %llu, \"lost_by_tenth\": "
               "[%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu,%llu]}\n",
               calls, pps, measure, (unsigned long long)sent, (unsigned long long)received,
               (unsigned long long)bytes, (unsigned long long)send_errors,
               (unsigned long long)window_received, (unsigned long long)drain_ms,
               (unsigned long long)endpoints_with_loss, (unsigned long long)lost_tenth[0],
               (unsigned long long)lost_tenth[1], (unsigned long long)lost_tenth[2],
               (unsigned long long)lost_tenth[3], (unsigned long long)lost_tenth[4],
               (unsigned long long)lost_tenth[5], (unsigned long long)lost_tenth[6],
               (unsigned long long)lost_tenth[7], (unsigned long long)lost_tenth[8],
               (unsigned long long)lost_tenth[9]);
        fflush(stdout);
        for (size_t i = 0; i < n; i++) {
                close(eps[i].fd);
                free(eps[i].got);
        }
        free(eps);
        close(ep_fd);
        return 0;
}
