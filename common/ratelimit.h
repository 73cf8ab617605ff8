/* SPDX-License-Identifier: MIT */
#pragma once

/* Per-source rate limits with bans, for DoS protection.
 *
 * A bounded table keyed by IP address (IPv4-mapped IPv6 addresses count as IPv4). Each source
 * has two token buckets: one for every message it sends and one for requests. A bucket holds
 * rate * period messages (at least one) and refills at rate per second, so a source may send a
 * burst of rate * period at once and then rate per second: the rate averaged over the period.
 * A message that finds its bucket empty bans the source for ban_ms; while banned the source's
 * messages are refused without being counted, and the ban is not extended by them.
 *
 * Memory is bounded by max_sources: when the table is full a new source evicts the least
 * recently seen one (a banned source that went quiet included). Sources idle long enough for
 * their buckets to be full again carry no information and are dropped by ratelimit_expire().
 * The hash is keyed with a random seed so that chosen addresses cannot pile into one chain.
 *
 * Times are milliseconds on any monotonic clock, passed in by the caller. Single-threaded. */

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* An IPv4 or IPv6 address: family AF_INET (4 bytes used) or AF_INET6 (16 bytes). */
struct ip_addr {
        int family;
        uint8_t bytes[16];
};

/* An address and a prefix length: "10.0.0.0/8", "2001:db8::/32", or one address. */
struct ip_prefix {
        struct ip_addr addr; /* host bits cleared */
        unsigned len;        /* 0..32 or 0..128 */
};

#define IP_ADDR_STRLEN INET6_ADDRSTRLEN

/* -EAFNOSUPPORT for a socket address that is not IPv4/IPv6, -EINVAL for a short one. */
int ip_addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, struct ip_addr *ret);
/* A literal address ("192.0.2.1", "::1", "[::1]"). -EINVAL otherwise. */
int ip_addr_parse(const char *s, struct ip_addr *ret);
/* Writes the address (without brackets) into buf; returns buf. */
char *ip_addr_format(const struct ip_addr *a, char buf[static IP_ADDR_STRLEN]);
bool ip_addr_equal(const struct ip_addr *a, const struct ip_addr *b);

/* "addr" or "addr/len". -EINVAL for a bad address or length. */
int ip_prefix_parse(const char *s, struct ip_prefix *ret);
bool ip_prefix_contains(const struct ip_prefix *p, const struct ip_addr *a);

struct ratelimit;

struct ratelimit_limits {
        uint64_t period_ms;    /* averaging period, > 0 */
        uint64_t packet_rate;  /* messages per second; 0 = no limit */
        uint64_t request_rate; /* requests per second; 0 = no limit */
        uint64_t ban_ms;       /* > 0 */
        size_t max_sources;    /* > 0 */
};

enum ratelimit_result {
        RATELIMIT_PASS,
        RATELIMIT_BAN_PACKETS,  /* this message went over the packet rate: banned now */
        RATELIMIT_BAN_REQUESTS, /* this request went over the request rate: banned now */
        RATELIMIT_BANNED,       /* the source was already banned */
};

/* Information about one banned source. */
struct ratelimit_ban {
        struct ip_addr addr;
        enum ratelimit_result reason; /* RATELIMIT_BAN_PACKETS or RATELIMIT_BAN_REQUESTS */
        uint64_t since_ms, until_ms;
        uint64_t refused; /* messages refused during this ban, the one that caused it included */
};

/* -EINVAL for a zero period, ban time or size. */
int ratelimit_new(const struct ratelimit_limits *limits, struct ratelimit **ret);
/* Accepts NULL. */
void ratelimit_free(struct ratelimit *rl);

/* Counts one message (a request when request is true) from addr at now. When the result is not
 * RATELIMIT_PASS, *ban_left_ms (may be NULL) receives the time left in the ban (> 0). A new
 * source that cannot be allocated passes uncounted. */
enum ratelimit_result ratelimit_hit(struct ratelimit *rl, const struct ip_addr *addr, bool request,
                                    uint64_t now, uint64_t *ban_left_ms);

/* Lifts the ban of addr. 0, or -ENOENT when addr is not banned. */
int ratelimit_unban(struct ratelimit *rl, const struct ip_addr *addr, uint64_t now);
/* Forgets addr (ban included). 0, or -ENOENT when it is not tracked. */
int ratelimit_forget(struct ratelimit *rl, const struct ip_addr *addr);

/* Lifts the bans that ended (calling lifted for each, may be NULL) and drops the sources idle
 * long enough that their buckets are full. Returns the number of bans lifted. */
typedef void (*ratelimit_ban_fn)(const struct ratelimit_ban *ban, void *userdata);
size_t ratelimit_expire(struct ratelimit *rl, uint64_t now, ratelimit_ban_fn lifted,
                        void *userdata);

/* Calls fn for each ban still running at now, most recently active source first. */
void ratelimit_foreach_ban(struct ratelimit *rl, uint64_t now, ratelimit_ban_fn fn,
                           void *userdata);

size_t ratelimit_n_sources(const struct ratelimit *rl);
/* Bans in the table, including ended ones not yet lifted by a message or ratelimit_expire(). */
size_t ratelimit_n_bans(const struct ratelimit *rl);
