/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>

#include "macro.h"
#include "ratelimit.h"

/* Token counts are in thousandths of a message: a rate of R messages per second refills R
 * milli-tokens per millisecond, and a message costs 1000. */
#define TOKEN 1000

/* ---- addresses ---- */

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void ip_addr_set(struct ip_addr *a, int family, const void *bytes) {
        *a = (struct ip_addr){.family = family};
        if (family == AF_INET6 && memcmp(bytes, v4_mapped_prefix, sizeof v4_mapped_prefix) == 0) {
                a->family = AF_INET;
                memcpy(a->bytes, (const uint8_t *)bytes + 12, 4);
                return;
        }
        memcpy(a->bytes, bytes, family == AF_INET ? 4 : 16);
}

int ip_addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, struct ip_addr *ret) {
        if (!sa)
                return -EINVAL;
        if (sa->sa_family == AF_INET) {
                if (len < (socklen_t)sizeof(struct sockaddr_in))
                        return -EINVAL;
                ip_addr_set(ret, AF_INET, &((const struct sockaddr_in *)sa)->sin_addr);
                return 0;
        }
        if (sa->sa_family == AF_INET6) {
                if (len < (socklen_t)sizeof(struct sockaddr_in6))
                        return -EINVAL;
                ip_addr_set(ret, AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr);
                return 0;
        }
        return -EAFNOSUPPORT;
}

int ip_addr_parse(const char *s, struct ip_addr *ret) {
        char buf[IP_ADDR_STRLEN + 2];
        uint8_t bytes[16];
        size_t n;

        if (!s)
                return -EINVAL;
        n = strlen(s);
        if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
                s++;
                n -= 2;
        }
        if (n == 0 || n >= sizeof buf)
                return -EINVAL;
        memcpy(buf, s, n);
        buf[n] = 0;
        if (inet_pton(AF_INET, buf, bytes) == 1) {
                ip_addr_set(ret, AF_INET, bytes);
                return 0;
        }
        if (inet_pton(AF_INET6, buf, bytes) == 1) {
                ip_addr_set(ret, AF_INET6, bytes);
                return 0;
        }
        return -EINVAL;
}

char *ip_addr_format(const struct ip_addr *a, char buf[static IP_ADDR_STRLEN]) {
        if (!inet_ntop(a->family, a->bytes, buf, IP_ADDR_STRLEN))
                snprintf(buf, IP_ADDR_STRLEN, "?");
        return buf;
}

bool ip_addr_equal(const struct ip_addr *a, const struct ip_addr *b) {
        return a->family == b->family &&
               memcmp(a->bytes, b->bytes, a->family == AF_INET ? 4 : 16) == 0;
}

static unsigned family_bits(int family) {
        return family == AF_INET ? 32 : 128;
}

int ip_prefix_parse(const char *s, struct ip_prefix *ret) {
        struct ip_prefix p;
        const char *slash;
        int r;

        if (!s)
                return -EINVAL;
        slash = strchr(s, '/');
        if (!slash) {
                r = ip_addr_parse(s, &p.addr);
                if (r < 0)
                        return r;
                p.len = family_bits(p.addr.family);
                *ret = p;
                return 0;
        }

        _cleanup_free_ char *host = strndup(s, (size_t)(slash - s));
        if (!host)
                return -ENOMEM;
        /* "::ffff:10.0.0.0/104" names IPv4 addresses: keep the prefix in the family the
         * address is stored in. */
        bool mapped = strchr(host, ':') != NULL;
        r = ip_addr_parse(host, &p.addr);
        if (r < 0)
                return r;
        const char *digits = slash + 1;
        char *end;
        if (*digits < '0' || *digits > '9')
                return -EINVAL;
        errno = 0;
        unsigned long len = strtoul(digits, &end, 10);
        if (errno != 0 || *end || len > (mapped ? 128 : family_bits(p.addr.family)))
                return -EINVAL;
        if (mapped && p.addr.family == AF_INET) {
                if (len < 96)
                        return -EINVAL;
                len -= 96;
        }
        p.len = (unsigned)len;
        for (unsigned bit = p.len; bit < family_bits(p.addr.family); bit++)
                p.addr.bytes[bit / 8] &= (uint8_t)~(0x80u >> (bit % 8));
        *ret = p;
        return 0;
}

bool ip_prefix_contains(const struct ip_prefix *p, const struct ip_addr *a) {
        if (p->addr.family != a->family)
                return false;
        unsigned full = p->len / 8, rest = p->len % 8;
        if (memcmp(p->addr.bytes, a->bytes, full) != 0)
                return false;
        if (rest == 0)
                return true;
        uint8_t mask = (uint8_t)(0xff00u >> rest);
        return (p->addr.bytes[full] & mask) == (a->bytes[full] & mask);
}

/* ---- the table ---- */

struct source {
        struct ip_addr addr;
        int64_t packet_tokens, request_tokens; /* milli-tokens */
        uint64_t last_ms;                      /* last refill, last message */
        uint64_t ban_since_ms, ban_until_ms;   /* ban_until_ms == 0: not banned */
        uint64_t refused;
        enum ratelimit_result ban_reason;
        struct source *hash_next;
        struct source *newer, *older; /* recency list */
};

struct ratelimit {
        struct ratelimit_limits limits;
        int64_t packet_capacity, request_capacity; /* milli-tokens */
        uint64_t idle_ms; /* after this long without a message both buckets are full */
        struct source **buckets;
        size_t n_buckets; /* a power of two */
        size_t n_sources, n_bans;
        uint64_t seed[2];
        struct source *newest, *oldest;
};

static int64_t capacity(uint64_t rate, uint64_t period_ms) {
        if (rate == 0)
                return 0;
        /* rate * period_ms milli-tokens, at least one message; both are bounded by the
         * caller's configuration, saturate anyway. */
        if (rate > (uint64_t)INT64_MAX / MAX(period_ms, 1))
                return INT64_MAX / 2;
        return MAX((int64_t)(rate * period_ms), TOKEN);
}

static uint64_t refill_time(int64_t cap, uint64_t rate) {
        return rate == 0 ? 0 : ((uint64_t)cap + rate - 1) / rate;
}

static void random_seed(uint64_t seed[2]) {
        if (getrandom(seed, 2 * sizeof(uint64_t), GRND_NONBLOCK) == 2 * sizeof(uint64_t))
                return;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
        seed[1] = (uint64_t)ts.tv_sec * 0xc2b2ae3d27d4eb4fULL ^ (uintptr_t)seed;
}

int ratelimit_new(const struct ratelimit_limits *limits, struct ratelimit **ret) {
        if (!limits || limits->period_ms == 0 || limits->ban_ms == 0 || limits->max_sources == 0)
                return -EINVAL;
        struct ratelimit *rl = calloc(1, sizeof *rl);
        if (!rl)
                return -ENOMEM;
        rl->limits = *limits;
        rl->packet_capacity = capacity(limits->packet_rate, limits->period_ms);
        rl->request_capacity = capacity(limits->request_rate, limits->period_ms);
        rl->idle_ms = MAX(refill_time(rl->packet_capacity, limits->packet_rate),
                          refill_time(rl->request_capacity, limits->request_rate));
        rl->n_buckets = 16;
        while (rl->n_buckets < limits->max_sources && rl->n_buckets < ((size_t)1 << 30))
                rl->n_buckets <<= 1;
        rl->buckets = calloc(rl->n_buckets, sizeof *rl->buckets);
        if (!rl->buckets) {
                free(rl);
                return -ENOMEM;
        }
        random_seed(rl->seed);
        *ret = rl;
        return 0;
}

void ratelimit_free(struct ratelimit *rl) {
        if (!rl)
                return;
        for (struct source *s = rl->newest, *next; s; s = next) {
                next = s->older;
                free(s);
        }
        free(rl->buckets);
        free(rl);
}

static uint64_t mix(uint64_t h) {
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdULL;
        h ^= h >> 33;
        h *= 0xc4ceb9fe1a85ec53ULL;
        h ^= h >> 33;
        return h;
}

static size_t bucket_of(const struct ratelimit *rl, const struct ip_addr *a) {
        uint64_t w[2] = {0, 0};
        memcpy(w, a->bytes, a->family == AF_INET ? 4 : 16);
        uint64_t h = mix(rl->seed[0] ^ (uint64_t)a->family);
        h = mix(h ^ w[0] ^ rl->seed[1]);
        h = mix(h ^ w[1]);
        return (size_t)h & (rl->n_buckets - 1);
}

static struct source **find_slot(struct ratelimit *rl, const struct ip_addr *a) {
        struct source **slot = &rl->buckets[bucket_of(rl, a)];
        while (*slot && !ip_addr_equal(&(*slot)->addr, a))
                slot = &(*slot)->hash_next;
        return slot;
}

static void list_unlink(struct ratelimit *rl, struct source *s) {
        if (s->newer)
                s->newer->older = s->older;
        else
                rl->newest = s->older;
        if (s->older)
                s->older->newer = s->newer;
        else
                rl->oldest = s->newer;
        s->newer = s->older = NULL;
}

static void list_push_newest(struct ratelimit *rl, struct source *s) {
        s->newer = NULL;
        s->older = rl->newest;
        if (rl->newest)
                rl->newest->newer = s;
        rl->newest = s;
        if (!rl->oldest)
                rl->oldest = s;
}

static void source_remove(struct ratelimit *rl, struct source *s) {
        struct source **slot = find_slot(rl, &s->addr);
        if (*slot == s)
                *slot = s->hash_next;
        list_unlink(rl, s);
        if (s->ban_until_ms)
                rl->n_bans--;
        rl->n_sources--;
        free(s);
}

static void source_reset(struct ratelimit *rl, struct source *s, uint64_t now) {
        s->packet_tokens = rl->packet_capacity;
        s->request_tokens = rl->request_capacity;
        s->last_ms = now;
}

static void source_lift(struct ratelimit *rl, struct source *s, uint64_t now) {
        s->ban_until_ms = 0;
        s->refused = 0;
        rl->n_bans--;
        source_reset(rl, s, now);
}

static void refill(int64_t *tokens, int64_t cap, uint64_t rate, uint64_t elapsed) {
        if (rate == 0)
                return;
        if (elapsed >= (uint64_t)cap / rate + 1) {
                *tokens = cap;
                return;
        }
        *tokens = MIN(cap, *tokens + (int64_t)(elapsed * rate));
}

static void fill_ban(const struct source *s, struct ratelimit_ban *b) {
        *b = (struct ratelimit_ban){
                .addr = s->addr,
                .reason = s->ban_reason,
                .since_ms = s->ban_since_ms,
                .until_ms = s->ban_until_ms,
                .refused = s->refused,
        };
}

enum ratelimit_result ratelimit_hit(struct ratelimit *rl, const struct ip_addr *addr, bool request,
                                    uint64_t now, uint64_t *ban_left_ms) {
        struct source **slot = find_slot(rl, addr);
        struct source *s = *slot;

        if (!s) {
                if (rl->n_sources >= rl->limits.max_sources && rl->oldest) {
                        source_remove(rl, rl->oldest);
                        slot = find_slot(rl, addr);
                }
                s = calloc(1, sizeof *s);
                if (!s)
                        return RATELIMIT_PASS;
                s->addr = *addr;
                source_reset(rl, s, now);
                *slot = s;
                rl->n_sources++;
                list_push_newest(rl, s);
        } else if (s != rl->newest) {
                list_unlink(rl, s);
                list_push_newest(rl, s);
        }

        if (s->ban_until_ms) {
                if (now < s->ban_until_ms) {
                        s->refused++;
                        if (ban_left_ms)
                                *ban_left_ms = s->ban_until_ms - now;
                        return RATELIMIT_BANNED;
                }
                source_lift(rl, s, now);
        }

        if (now > s->last_ms) {
                uint64_t elapsed = now - s->last_ms;
                refill(&s->packet_tokens, rl->packet_capacity, rl->limits.packet_rate, elapsed);
                refill(&s->request_tokens, rl->request_capacity, rl->limits.request_rate,
                       elapsed);
                s->last_ms = now;
        }

        enum ratelimit_result result = RATELIMIT_PASS;
        if (rl->limits.packet_rate > 0 && s->packet_tokens < TOKEN)
                result = RATELIMIT_BAN_PACKETS;
        else if (request && rl->limits.request_rate > 0 && s->request_tokens < TOKEN)
                result = RATELIMIT_BAN_REQUESTS;
        if (result == RATELIMIT_PASS) {
                if (rl->limits.packet_rate > 0)
                        s->packet_tokens -= TOKEN;
                if (request && rl->limits.request_rate > 0)
                        s->request_tokens -= TOKEN;
                return RATELIMIT_PASS;
        }

        s->ban_reason = result;
        s->ban_since_ms = now;
        s->ban_until_ms = now + rl->limits.ban_ms;
        s->refused = 1;
        rl->n_bans++;
        if (ban_left_ms)
                *ban_left_ms = rl->limits.ban_ms;
        return result;
}

int ratelimit_unban(struct ratelimit *rl, const struct ip_addr *addr, uint64_t now) {
        struct source *s = *find_slot(rl, addr);
        if (!s || !s->ban_until_ms)
                return -ENOENT;
        source_lift(rl, s, now);
        return 0;
}

int ratelimit_forget(struct ratelimit *rl, const struct ip_addr *addr) {
        struct source *s = *find_slot(rl, addr);
        if (!s)
                return -ENOENT;
        source_remove(rl, s);
        return 0;
}

size_t ratelimit_expire(struct ratelimit *rl, uint64_t now, ratelimit_ban_fn lifted,
                        void *userdata) {
        size_t n_lifted = 0;
        /* From the least recently seen: once a source has been seen within idle_ms, every
         * newer one has too, except banned ones, which are checked on their own below. */
        for (struct source *s = rl->oldest, *newer; s; s = newer) {
                newer = s->newer;
                if (s->ban_until_ms) {
                        if (now < s->ban_until_ms)
                                continue;
                        struct ratelimit_ban b;
                        fill_ban(s, &b);
                        source_lift(rl, s, now);
                        n_lifted++;
                        if (lifted)
                                lifted(&b, userdata);
                        /* Its buckets were just refilled: nothing left to remember. */
                        source_remove(rl, s);
                        continue;
                }
                if (now < s->last_ms || now - s->last_ms < rl->idle_ms) {
                        if (rl->n_bans == 0)
                                break;
                        continue;
                }
                source_remove(rl, s);
        }
        return n_lifted;
}

void ratelimit_foreach_ban(struct ratelimit *rl, uint64_t now, ratelimit_ban_fn fn,
                           void *userdata) {
        for (struct source *s = rl->newest; s; s = s->older) {
                if (!s->ban_until_ms || now >= s->ban_until_ms)
                        continue;
                struct ratelimit_ban b;
                fill_ban(s, &b);
                fn(&b, userdata);
        }
}

size_t ratelimit_n_sources(const struct ratelimit *rl) {
        return rl ? rl->n_sources : 0;
}

size_t ratelimit_n_bans(const struct ratelimit *rl) {
        return rl ? rl->n_bans : 0;
}
