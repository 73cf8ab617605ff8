/* SPDX-License-Identifier: MIT */
/* The daemon object: configuration, the NG socket, the call table, sweeping idle calls,
 * control commands and counters. */
#define LOG_SUBSYSTEM LOG_media
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ctl.h"
#include "daemon.h"
#include "log.h"
#include "loop.h"
#include "mediarelay.h"
#include "stats.h"

#define SWEEP_INTERVAL_MS 200
#define NG_MAX_DATAGRAM 65536

#define C(field) offsetof(struct mediarelay_config, field)
static const struct conf_option mediarelay_rows[] = {
        {"mediarelay", "ng-listen", CONF_ADDRESS, C(ng_listen), "127.0.0.1:2223", 0, 0, 0,
         "UDP address of the NG control protocol (the one rtpengine speaks): host:port or "
         "[v6]:port; only SIP proxies and B2BUAs should reach it"},
        {"mediarelay", "address", CONF_STRING, C(address), "127.0.0.1", 0, 0, 0,
         "Local IPv4 or IPv6 address the relay ports are bound to"},
        {"mediarelay", "advertised-address", CONF_STRING, C(advertised_address), NULL, 0, 0, 0,
         "Address written into SDP (the public address of a host behind NAT); empty: "
         "address"},
        {"mediarelay", "port-range", CONF_RANGE, C(port_range), "30000-40000", 1024, 65535, 0,
         "UDP ports for media: RTP on even ports, RTCP on the next odd port"},
        {"mediarelay", "inactivity-period", CONF_DURATION, C(inactivity_period_ms), "60s", 0, 0,
         CONF_RELOADABLE,
         "A call without packets and signalling for this long is deleted and its ports freed",
         .unit = CONF_UNIT_S},
        {"mediarelay", "relatch-silence", CONF_DURATION, C(relatch_silence_ms), "2000ms", 0, 0,
         CONF_RELOADABLE,
         "Once a party's source address is latched, packets from another source are dropped "
         "unless they come from the address in its SDP or the latched source has been silent "
         "for this long",
         .unit = CONF_UNIT_MS},
        {"mediarelay", "max-sessions", CONF_INT, C(max_sessions), "1000", 1, 1000000, 0,
         "Most calls relayed at once; an offer for a new call beyond it gets an NG error"},
        {"mediarelay", "packet-threads", CONF_INT, C(packet_threads), "0", 0, 256, 0,
         "Threads relaying packets, calls spread among them; 0 = one per CPU core"},
        {"mediarelay", "redis-address", CONF_ADDRESS, C(redis_address), NULL, 0, 0, 0,
         "Redis server (host:port or /path) where the relay announces its NG address and "
         "load for proxies to choose from; empty: no announce"},
        {"mediarelay", "redis-password", CONF_STRING, C(redis_password), NULL, 0, 0,
         CONF_SECRET, "Password for redis-address (AUTH); empty: none"},
        {"mediarelay", "announce-interval", CONF_DURATION, C(announce_interval_ms), "5s", 0,
         0, 0,
         "How often the Redis announce is refreshed (at least 100ms); it expires after three "
         "intervals",
         .unit = CONF_UNIT_MS},
};

static const struct conf_section mediarelay_sections[] = {
        {"mediarelay", "The media relay: NG control, relay ports and limits"},
};

static const char *const ng_command_names[] = {"ping", "offer", "answer", "delete",
                                               "query", "list", "other"};

static uint64_t gauge_calls(void *userdata) {
        return ((struct mediarelay *)userdata)->n_calls;
}

static uint64_t gauge_ports(void *userdata) {
        return ((struct mediarelay *)userdata)->ports_in_use;
}

static uint64_t sum_workers(struct mediarelay *m, size_t offset) {
        uint64_t total = 0;
        for (unsigned i = 0; i < m->n_workers; i++) {
                struct worker *w = m->workers[i];
                pthread_mutex_lock(&w->lock);
                total += *(uint64_t *)((char *)w + offset);
                pthread_mutex_unlock(&w->lock);
        }
        return total;
}

static uint64_t gauge_packets(void *userdata) {
        return sum_workers(userdata, offsetof(struct worker, packets));
}
static uint64_t gauge_bytes(void *userdata) {
        return sum_workers(userdata, offsetof(struct worker, bytes));
}
static uint64_t gauge_dropped(void *userdata) {
        return sum_workers(userdata, offsetof(struct worker, dropped));
}
static uint64_t gauge_stun(void *userdata) {
        return sum_workers(userdata, offsetof(struct worker, stun));
}

static int declare_stats(struct mediarelay *m, struct stats *st) {
        for (size_t i = 0; i < ELEMENTSOF(ng_command_names); i++) {
                char name[64];
                snprintf(name, sizeof(name), "count-ng-%s", ng_command_names[i]);
                m->count_ng[i] = stats_declare(st, "mediarelay", name, "NG commands received");
        }
        m->count_ng_errors =
                stats_declare(st, "mediarelay", "count-ng-errors", "NG commands answered with an error");
        m->count_ng_retransmissions =
                stats_declare(st, "mediarelay", "count-ng-retransmissions",
                              "NG requests seen again (same datagram), answered from the cache");
        m->count_expired = stats_declare(st, "mediarelay", "count-calls-expired",
                                         "Calls deleted after inactivity-period");
        m->count_refused = stats_declare(st, "mediarelay", "count-calls-refused",
                                         "Offers refused at max-sessions");
        if (stats_declare_gauge(st, "mediarelay", "calls", "Calls relayed now", gauge_calls, m) <
                    0 ||
            stats_declare_gauge(st, "mediarelay", "ports-in-use", "Relay ports bound now",
                                gauge_ports, m) < 0 ||
            stats_declare_gauge(st, "mediarelay", "packets-relayed", "Packets relayed",
                                gauge_packets, m) < 0 ||
            stats_declare_gauge(st, "mediarelay", "bytes-relayed", "Bytes relayed", gauge_bytes,
                                m) < 0 ||
            stats_declare_gauge(st, "mediarelay", "packets-dropped",
                                "Packets dropped (foreign source, no destination, SRTP error)",
                                gauge_dropped, m) < 0 ||
            stats_declare_gauge(st, "mediarelay", "stun-answered", "STUN binding requests answered",
                                gauge_stun, m) < 0)
                return -ENOMEM;
        return 0;
}

void mr_count_ng(struct mediarelay *m, const char *command, bool error) {
        size_t i;
        for (i = 0; i < ELEMENTSOF(ng_command_names) - 1; i++)
                if (command && streq(command, ng_command_names[i]))
                        break;
        stats_inc(m->count_ng[i]);
        if (error)
                stats_inc(m->count_ng_errors);
}

/* Control commands. */

static int ctl_sessions(struct ctl_request *req, int argc, char **argv, void *userdata) {
        struct mediarelay *m = userdata;
        long limit = 1000;
        json_t *a = json_array();

        if (argc > 1) {
                char *end;
                limit = strtol(argv[1], &end, 10);
                if (*end || limit < 0) {
                        json_decref(a);
                        ctl_reply_error(req, "Bad limit '%s'", argv[1]);
                        return 0;
                }
        }
        for (size_t b = 0; b < m->n_buckets && (long)json_array_size(a) < limit; b++)
                for (struct call *c = m->buckets[b]; c && (long)json_array_size(a) < limit;
                     c = c->next)
                        json_array_append_new(a, call_to_json(c, false));
        ctl_reply(req, json_pack("{s:I,s:o}", "calls", (json_int_t)m->n_calls, "sessions", a));
        return 0;
}

static int ctl_session(struct ctl_request *req, int argc, char **argv, void *userdata) {
        struct mediarelay *m = userdata;
        struct call *c;

        if (argc != 2) {
                ctl_reply_error(req, "Usage: SESSION <call-id>");
                return 0;
        }
        c = call_find(m, argv[1]);
        if (!c) {
                ctl_reply_error(req, "Unknown call-id '%s'", argv[1]);
                return 0;
        }
        ctl_reply(req, call_to_json(c, true));
        return 0;
}

/* The NG socket. */

static void on_ng(struct loop_io *io, int fd, unsigned events, void *userdata) {
        struct mediarelay *m = userdata;
        static char buf[NG_MAX_DATAGRAM];

        for (int n = 0; n < 64; n++) {
                struct sockaddr_storage from;
                socklen_t fromlen = sizeof(from);
                ssize_t len = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from,
                                       &fromlen);
                char *reply = NULL;
                size_t reply_len = 0;

                if (len < 0) {
                        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                                log_warning_ratelimited("NG socket: recvfrom: %m");
                        return;
                }
                if (ng_process(m, buf, (size_t)len, &reply, &reply_len) < 0 || !reply) {
                        log_oom();
                        continue;
                }
                if (sendto(fd, reply, reply_len, MSG_DONTWAIT, (struct sockaddr *)&from, fromlen) <
                    0)
                        log_warning_ratelimited("NG socket: reply of %zu bytes not sent: %m",
                                                reply_len);
                free(reply);
        }
}

static int ng_open(struct mediarelay *m) {
        const struct conf_address *a = &m->config.ng_listen;
        _cleanup_close_ int fd = -1;
        int r;

        if (a->len == 0 || a->sa.ss_family == AF_UNIX)
                return log_error_errno(EINVAL, "[mediarelay] ng-listen must be an IP address and port");
        fd = socket(a->sa.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return log_error_errno(errno, "NG socket: %m");
        if (bind(fd, (const struct sockaddr *)&a->sa, a->len) < 0)
                return log_error_errno(errno, "Failed to bind the NG socket to '%s': %m", a->str);
        r = loop_io_add(m->loop, fd, LOOP_READ, on_ng, m, &m->ng_io);
        if (r < 0)
                return log_error_errno(r, "NG socket: %m");
        m->ng_fd = TAKE_FD(fd);
        return 0;
}

static void on_sweep(struct loop_timer *t, void *userdata) {
        struct mediarelay *m = userdata;
        uint64_t now = mono_ms(), limit = m->config.inactivity_period_ms;

        call_reap(m, false);
        if (limit > 0)
                for (size_t b = 0; b < m->n_buckets; b++) {
                        struct call *c = m->buckets[b];
                        while (c) {
                                struct call *next = c->next;
                                uint64_t idle = call_idle_ms(c, now);
                                if (idle >= limit) {
                                        log_info("Call '%s' idle for %llu ms, deleted", c->call_id,
                                                 (unsigned long long)idle);
                                        stats_inc(m->count_expired);
                                        call_delete(m, c);
                                }
                                c = next;
                        }
                }
        loop_timer_arm(t, SWEEP_INTERVAL_MS);
}

static int resolve_addresses(struct mediarelay *m) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&m->bind_addr;
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&m->bind_addr;
        const char *adv;

        memset(&m->bind_addr, 0, sizeof(m->bind_addr));
        if (isempty(m->config.address))
                return log_error_errno(EINVAL, "[mediarelay] address must be set");
        if (inet_pton(AF_INET, m->config.address, &sin->sin_addr) == 1) {
                sin->sin_family = AF_INET;
                m->bind_len = sizeof(*sin);
        } else if (inet_pton(AF_INET6, m->config.address, &sin6->sin6_addr) == 1) {
                sin6->sin6_family = AF_INET6;
                m->bind_len = sizeof(*sin6);
                m->ipv6 = true;
        } else
                return log_error_errno(EINVAL, "[mediarelay] address '%s' is not an IP address",
                                       m->config.address);
        adv = isempty(m->config.advertised_address) ? m->config.address
                                                     : m->config.advertised_address;
        if (strlen(adv) >= sizeof(m->advertised) || strpbrk(adv, " \t\r\n"))
                return log_error_errno(EINVAL, "[mediarelay] advertised-address '%s' is not usable",
                                       adv);
        strcpy(m->advertised, adv);
        return 0;
}

static int setup_common(struct mediarelay *m) {
        int r;

        r = resolve_addresses(m);
        if (r < 0)
                return r;
        r = ports_init(m);
        if (r < 0)
                return log_error_errno(r, "[mediarelay] port-range: %m");
        r = mr_srtp_init();
        if (r < 0)
                return log_error_errno(r, "libsrtp2 initialisation failed");
        /* about one call per bucket at max-sessions */
        m->n_buckets = 1024;
        while (m->n_buckets < (size_t)m->config.max_sessions && m->n_buckets < (1u << 20))
                m->n_buckets *= 2;
        m->buckets = calloc(m->n_buckets, sizeof(*m->buckets));
        if (!m->buckets)
                return log_oom();

        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        m->n_workers = m->config.packet_threads > 0 ? (unsigned)m->config.packet_threads
                                                     : (unsigned)(cores > 0 ? cores : 1);
        m->workers = calloc(m->n_workers, sizeof(*m->workers));
        if (!m->workers)
                return log_oom();
        for (unsigned i = 0; i < m->n_workers; i++) {
                r = worker_new(m, i, &m->workers[i]);
                if (r < 0)
                        return log_error_errno(r, "Packet thread %u: %m", i);
        }
        for (unsigned i = 0; i < m->n_workers; i++) {
                r = worker_start(m->workers[i]);
                if (r < 0)
                        return log_error_errno(r, "Packet thread %u: %m", i);
        }
        r = loop_timer_new(m->loop, on_sweep, m, &m->sweep_timer);
        if (r < 0)
                return r;
        loop_timer_arm(m->sweep_timer, SWEEP_INTERVAL_MS);
        return 0;
}

int mediarelay_new(struct daemon *d, struct mediarelay **ret) {
        struct mediarelay *m = calloc(1, sizeof(*m));
        int r;

        if (!m)
                return -ENOMEM;
        m->daemon = d;
        m->ng_fd = -1;
        r = conf_add_sections(daemon_conf(d), mediarelay_sections, ELEMENTSOF(mediarelay_sections));
        if (r >= 0)
                r = conf_add_table(daemon_conf(d), mediarelay_rows, ELEMENTSOF(mediarelay_rows),
                                   &m->config);
        if (r < 0) {
                free(m);
                return log_error_errno(r, "Failed to register the mediarelay options: %m");
        }
        *ret = m;
        return 0;
}

int mediarelay_new_bare(const struct mediarelay_config *config, struct loop *l,
                        struct mediarelay **ret) {
        struct mediarelay *m = calloc(1, sizeof(*m));
        int r;

        if (!m)
                return -ENOMEM;
        m->ng_fd = -1;
        m->config = *config;
        m->loop = l;
        r = setup_common(m);
        if (r < 0) {
                mediarelay_free(m);
                return r;
        }
        *ret = m;
        return 0;
}

int mediarelay_start(struct mediarelay *m) {
        struct ctl *ctl = daemon_ctl(m->daemon);
        int r;

        m->loop = daemon_loop(m->daemon);
        r = declare_stats(m, daemon_stats(m->daemon));
        if (r < 0)
                return log_oom();
        r = setup_common(m);
        if (r < 0)
                return r;
        r = ng_open(m);
        if (r < 0)
                return r;
        r = announce_start(m);
        if (r < 0)
                return r;
        if (ctl) {
                r = ctl_register(ctl, "SESSIONS", "SESSIONS [limit]: the calls relayed now",
                                 ctl_sessions, m);
                if (r >= 0)
                        r = ctl_register(ctl, "SESSION",
                                         "SESSION <call-id>: one call with its legs, ports, "
                                         "addresses and counters",
                                         ctl_session, m);
                if (r < 0)
                        return log_error_errno(r, "Failed to register control commands: %m");
        }
        log_notice("Media relay: NG on %s, ports %lld-%lld on %s (SDP: %s), %u packet threads",
                   m->config.ng_listen.str, (long long)m->config.port_range.min,
                   (long long)m->config.port_range.max, m->config.address, m->advertised,
                   m->n_workers);
        return 0;
}

void mediarelay_free(struct mediarelay *m) {
        if (!m)
                return;
        loop_io_free(m->ng_io);
        if (m->ng_fd >= 0)
                close(m->ng_fd);
        loop_timer_free(m->sweep_timer);
        announce_stop(m);
        /* Stop the packet threads first: then every call can go at once. */
        for (unsigned i = 0; m->workers && i < m->n_workers; i++)
                if (m->workers[i] && m->workers[i]->started) {
                        atomic_store(&m->workers[i]->stop, true);
                        uint64_t one = 1;
                        if (write(m->workers[i]->wake_fd, &one, sizeof(one)) < 0) {
                                /* the thread still sees stop at its next timeout */
                        }
                        pthread_join(m->workers[i]->thread, NULL);
                        m->workers[i]->started = false;
                }
        for (size_t b = 0; m->buckets && b < m->n_buckets; b++)
                while (m->buckets[b])
                        call_delete(m, m->buckets[b]);
        call_reap(m, true);
        for (unsigned i = 0; m->workers && i < m->n_workers; i++)
                worker_free(m->workers[i]);
        free(m->workers);
        free(m->buckets);
        ports_done(m);
        ng_cache_free(m);
        free(m);
}

static void hook_stop(struct daemon *d, void *userdata) {
        struct mediarelay *m = userdata;
        loop_io_free(m->ng_io);
        m->ng_io = NULL;
        announce_withdraw(m, d);
}

const struct mediarelay_hooks mediarelay_hooks = {
        .stop = hook_stop,
};
