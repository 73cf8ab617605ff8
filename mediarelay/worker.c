/* SPDX-License-Identifier: MIT */
/* Packet threads: the fast path. Each worker owns an epoll set with the sockets of its calls,
 * reads up to MR_BATCH datagrams per socket with recvmmsg() into buffers allocated once, checks
 * the source (latching), answers STUN, unprotects/protects SRTP in place, and sends the batch
 * with sendmmsg(). Nothing is allocated or logged per packet.
 *
 * Locking: the worker holds w->lock from the end of epoll_wait() to the end of the batch; the
 * control plane takes it to change or unhook a call of this worker. A call unhooked while the
 * worker sat in epoll_wait() may still show up in that wait's events: it is marked dead (and
 * skipped), and freed only once w->epoch has moved past the value seen when unhooking. */
#define LOG_SUBSYSTEM LOG_media
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "mediarelay.h"

#define EPOLL_EVENTS 64
#define EPOLL_TIMEOUT_MS 100

uint64_t mono_ms(void) {
        return now_msec();
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
        if (a->ss_family != b->ss_family)
                return false;
        if (a->ss_family == AF_INET) {
                const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
                return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
        }
        if (a->ss_family == AF_INET6) {
                const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
                return x->sin6_port == y->sin6_port &&
                       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
        }
        return false;
}

/* Symmetric latching with hijack protection (see relatch-silence and enum latch_mode). */
static bool accept_source(struct worker *w, struct rsock *rs, const struct sockaddr_storage *from,
                          socklen_t fromlen, uint64_t now) {
        uint64_t last = atomic_load_explicit(&rs->last_rx_ms, memory_order_relaxed);
        enum latch_mode mode = rs->stream->latch;

        if (mode == LATCH_ASYMMETRIC && rs->signalled_len)
                return true; /* replies keep going to the SDP address */
        if (rs->latched && same_addr(&rs->peer, from))
                return true;
        if (rs->latched && !(rs->signalled_len && same_addr(&rs->signalled, from))) {
                if (mode == LATCH_STRICT)
                        return false;
                if (mode != LATCH_HANDOVER && now - last < w->m->config.relatch_silence_ms)
                        return false;
        }
        memcpy(&rs->peer, from, fromlen);
        rs->peer_len = fromlen;
        rs->latched = true;
        return true;
}

static bool is_rtcp(const unsigned char *p, size_t len) {
        /* RFC 5761 4: RTCP packet types 192-223 in the second byte. */
        return len >= 8 && (p[0] & 0xc0) == 0x80 && p[1] >= 192 && p[1] <= 223;
}

static void track_seq(struct stream_stats *st, uint16_t seq) {
        if (!st->seq_init) {
                st->seq_init = true;
                st->base_seq = seq;
                st->max_seq = seq;
                st->cycles = 0;
                st->received = 1;
                return;
        }
        uint16_t delta = (uint16_t)(seq - st->max_seq);
        if (delta < 3000) {
                if (seq < st->max_seq)
                        st->cycles++;
                st->max_seq = seq;
        } else if (delta <= 65536 - 100) {
                /* a jump: the sender restarted, count afresh */
                st->base_seq = seq;
                st->max_seq = seq;
                st->cycles = 0;
                st->received = 0;
        }
        st->received++;
}

static void flush(struct worker *w, const int *fds, unsigned n) {
        unsigned start = 0;
        while (start < n) {
                unsigned end = start + 1;
                while (end < n && fds[end] == fds[start])
                        end++;
                unsigned done = 0;
                while (done < end - start) {
                        int r = sendmmsg(fds[start], &w->out[start + done], end - start - done,
                                         MSG_DONTWAIT);
                        if (r <= 0) {
                                /* full socket buffer or unreachable peer: drop the rest */
                                w->dropped += end - start - done;
                                break;
                        }
                        done += (unsigned)r;
                }
                start = end;
        }
}

static void handle_socket(struct worker *w, struct rsock *rs, uint64_t now) {
        struct stream *s = rs->stream;
        int fds[MR_BATCH];
        unsigned n_out = 0;
        int n;

        for (unsigned i = 0; i < MR_BATCH; i++) {
                w->in_iov[i] = (struct iovec){w->buf[i], MR_MAX_PACKET};
                w->in[i].msg_hdr = (struct msghdr){
                        .msg_name = &w->in_addr[i],
                        .msg_namelen = sizeof(w->in_addr[i]),
                        .msg_iov = &w->in_iov[i],
                        .msg_iovlen = 1,
                };
        }
        n = recvmmsg(rs->fd, w->in, MR_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
                return;

        for (int i = 0; i < n; i++) {
                unsigned char *p = w->buf[i];
                int len = (int)w->in[i].msg_len;
                const struct sockaddr_storage *from = &w->in_addr[i];
                socklen_t fromlen = w->in[i].msg_hdr.msg_namelen;
                bool rtcp;

                if (w->in[i].msg_hdr.msg_flags & MSG_TRUNC) {
                        s->stats.errors++;
                        w->dropped++;
                        continue;
                }
                if (stun_is_stun(p, (size_t)len)) {
                        size_t rl = stun_answer(s, p, (size_t)len, (const struct sockaddr *)from,
                                                w->stun_buf, sizeof(w->stun_buf));
                        if (rl > 0 && sendto(rs->fd, w->stun_buf, rl, MSG_DONTWAIT,
                                             (const struct sockaddr *)from, fromlen) > 0) {
                                s->stats.stun++;
                                w->stun++;
                        } else
                                w->dropped++;
                        continue;
                }
                if (!accept_source(w, rs, from, fromlen, now)) {
                        s->stats.foreign++;
                        w->dropped++;
                        continue;
                }
                atomic_store_explicit(&rs->last_rx_ms, now, memory_order_relaxed);
                rtcp = rs->rtcp || (s->mux && is_rtcp(p, (size_t)len));
                if (rtcp) {
                        s->stats.rtcp_packets++;
                        s->stats.rtcp_bytes += (uint64_t)len;
                } else {
                        s->stats.packets++;
                        s->stats.bytes += (uint64_t)len;
                        if (len >= 12 && (p[0] & 0xc0) == 0x80)
                                track_seq(&s->stats, (uint16_t)(p[2] << 8 | p[3]));
                }

                if (s->srtp_in) {
                        srtp_err_status_t e = rtcp ? srtp_unprotect_rtcp(s->srtp_in, p, &len)
                                                   : srtp_unprotect(s->srtp_in, p, &len);
                        if (e != srtp_err_status_ok) {
                                s->stats.errors++;
                                w->dropped++;
                                continue;
                        }
                }

                struct stream *o = s->other;
                struct rsock *dst;
                if (!o || o->dead || o->rejected) {
                        w->dropped++;
                        continue;
                }
                dst = rtcp && !o->mux ? &o->rtcp : &o->rtp;
                if (dst->peer_len == 0 || dst->fd < 0) {
                        /* the other party's address is not known yet */
                        w->dropped++;
                        continue;
                }
                if (o->srtp_out) {
                        srtp_err_status_t e = rtcp ? srtp_protect_rtcp(o->srtp_out, p, &len)
                                                   : srtp_protect(o->srtp_out, p, &len);
                        if (e != srtp_err_status_ok) {
                                s->stats.errors++;
                                w->dropped++;
                                continue;
                        }
                }
                w->out_iov[n_out] = (struct iovec){p, (size_t)len};
                w->out[n_out].msg_hdr = (struct msghdr){
                        .msg_name = &dst->peer,
                        .msg_namelen = dst->peer_len,
                        .msg_iov = &w->out_iov[n_out],
                        .msg_iovlen = 1,
                };
                fds[n_out++] = dst->fd;
                s->stats.forwarded++;
                w->packets++;
                w->bytes += (uint64_t)len;
        }
        if (n_out)
                flush(w, fds, n_out);
}

static void *worker_main(void *userdata) {
        struct worker *w = userdata;
        struct epoll_event evs[EPOLL_EVENTS];

        while (!atomic_load(&w->stop)) {
                int n = epoll_wait(w->epfd, evs, EPOLL_EVENTS, EPOLL_TIMEOUT_MS);
                if (n < 0 && errno != EINTR)
                        break;
                pthread_mutex_lock(&w->lock);
                uint64_t now = now_msec();
                for (int i = 0; i < n; i++) {
                        struct rsock *rs = evs[i].data.ptr;
                        if (!rs) {
                                uint64_t v;
                                if (read(w->wake_fd, &v, sizeof(v)) < 0) {
                                        /* nothing to drain */
                                }
                                continue;
                        }
                        if (rs->stream->dead)
                                continue;
                        handle_socket(w, rs, now);
                }
                pthread_mutex_unlock(&w->lock);
                atomic_fetch_add(&w->epoch, 1);
        }
        return NULL;
}

int worker_new(struct mediarelay *m, unsigned index, struct worker **ret) {
        struct worker *w = calloc(1, sizeof(*w));
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};

        if (!w)
                return -ENOMEM;
        w->m = m;
        w->index = index;
        w->wake_fd = -1;
        pthread_mutex_init(&w->lock, NULL);
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (w->epfd < 0)
                goto fail;
        w->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (w->wake_fd < 0)
                goto fail;
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wake_fd, &ev) < 0)
                goto fail;
        *ret = w;
        return 0;
fail: {
        int r = -errno;
        worker_free(w);
        return r;
}
}

int worker_start(struct worker *w) {
        int r = pthread_create(&w->thread, NULL, worker_main, w);
        if (r)
                return -r;
        w->started = true;
        return 0;
}

void worker_free(struct worker *w) {
        if (!w)
                return;
        if (w->epfd >= 0)
                close(w->epfd);
        if (w->wake_fd >= 0)
                close(w->wake_fd);
        pthread_mutex_destroy(&w->lock);
        free(w);
}

int worker_add(struct worker *w, struct rsock *s) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, s->fd, &ev) < 0)
                return -errno;
        return 0;
}

void worker_remove(struct worker *w, struct rsock *s) {
        if (s->fd >= 0)
                epoll_ctl(w->epfd, EPOLL_CTL_DEL, s->fd, NULL);
}
