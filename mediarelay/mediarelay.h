/* SPDX-License-Identifier: MIT */
#pragma once

/* sipfleet-mediarelay: an RTP/RTCP relay controlled by the NG protocol.
 *
 * Objects:
 *   struct mediarelay  the daemon: config, the NG socket, the calls, the port allocator, the
 *                      packet workers, the control commands; lives on the main loop.
 *   struct call        one Call-ID; two legs (the offerer's tag and the answerer's tag).
 *   struct leg         one party of the call: its media, each with the relay ports that party
 *                      sends to (struct stream).
 *   struct stream      one media of one leg: an RTP and an RTCP socket (even/odd ports), the
 *                      party's address (signalled in SDP, then latched from its packets), SRTP
 *                      contexts, ICE credentials, counters. Packets received on a stream go out
 *                      of stream->other (the same media of the other leg) to its party.
 *   struct worker      a packet thread with its epoll set; every socket of a call belongs to
 *                      the call's worker. The worker holds its lock while it processes a batch
 *                      of events; the control plane takes that lock to change a call. */

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <srtp2/srtp.h>

#include "conf.h"

struct daemon;
struct loop;
struct loop_io;
struct loop_timer;
struct bencode;
struct stats_counter;
struct json_t;
struct redis;
struct withdraw;

#define MR_MAX_MEDIA 8       /* m= lines per SDP */
#define MR_BATCH 32          /* datagrams per recvmmsg/sendmmsg */
#define MR_BUF_SIZE 2048     /* per datagram buffer, with room for the SRTP trailer */
#define MR_MAX_PACKET 1600   /* largest datagram received on a relay port */
#define MR_ICE_UFRAG_LEN 8
#define MR_ICE_PWD_LEN 24

struct mediarelay_config {
        struct conf_address ng_listen;
        struct conf_range port_range;
        char *address;
        char *advertised_address;
        uint64_t inactivity_period_ms;
        uint64_t relatch_silence_ms;
        int64_t max_sessions;
        int64_t packet_threads;
        struct conf_address redis_address;
        char *redis_password;
        uint64_t announce_interval_ms;
};

struct stream_stats {
        uint64_t packets, bytes, errors;          /* RTP received from this leg's party */
        uint64_t rtcp_packets, rtcp_bytes;        /* RTCP received from this leg's party */
        uint64_t forwarded;                       /* packets sent to the other party */
        uint64_t foreign;                         /* dropped: from a source not latched */
        uint64_t stun;                            /* STUN binding requests answered */
        /* RTP sequence tracking for loss (RFC 3550 A.1, simplified) */
        bool seq_init;
        uint16_t max_seq;
        uint32_t cycles;
        uint32_t base_seq;
        uint64_t received;
};

/* One relay socket: RTP or RTCP of a stream. */
struct rsock {
        int fd;
        uint16_t port;
        bool rtcp;
        struct stream *stream;
        /* Where this leg's party is: the signalled address until the first packet, then the
         * latched source. peer_len 0: unknown. */
        struct sockaddr_storage peer;
        socklen_t peer_len;
        struct sockaddr_storage signalled;
        socklen_t signalled_len;
        bool latched;
        _Atomic uint64_t last_rx_ms;
};

struct crypto_params {
        int suite;               /* index into the suite table of srtp.c, -1 = none */
        unsigned tag;
        unsigned char key[46];   /* master key + salt (30 or 46 bytes) */
};

/* How a party's source address is learnt (NG flags of the message carrying its SDP). */
enum latch_mode {
        LATCH_DEFAULT,    /* latch; another source after relatch-silence or from the SDP address */
        LATCH_STRICT,     /* "strict-source": once latched, only the SDP address may take over */
        LATCH_HANDOVER,   /* "media-handover": any new source takes over at once */
        LATCH_ASYMMETRIC, /* "asymmetric": accept any source, always send to the SDP address */
};

struct stream {
        struct rsock rtp, rtcp;
        enum latch_mode latch;
        struct stream *other;
        struct leg *leg;
        unsigned index;        /* m= line */
        bool dead;
        bool mux;              /* this party multiplexes RTCP on the RTP port */
        bool mux_offered;
        bool rejected;
        /* SRTP: in = from this party (unprotect), out = towards this party (protect). */
        srtp_t srtp_in, srtp_out;
        bool srtp;             /* this party speaks SRTP that the relay terminates */
        struct crypto_params crypto_local;  /* what the relay sends with (in our SDP) */
        struct crypto_params crypto_remote; /* what the party sends with (from its SDP) */
        struct crypto_params ctx_local, ctx_remote; /* what srtp_out/srtp_in were made with */
        /* ICE towards this party: the relay's credentials (in the SDP this party receives) and
         * the party's own ufrag (from its SDP). */
        bool ice;
        char ice_ufrag[MR_ICE_UFRAG_LEN + 1];
        char ice_pwd[MR_ICE_PWD_LEN + 1];
        char remote_ufrag[64];
        char proto[16];        /* transport protocol this party uses (from or to its SDP) */
        char type[16];         /* media type: audio, video... */
        /* crypto lines the relay offered this party (one per suite), to match its answer */
        struct crypto_params offered[4];
        unsigned n_offered;
        struct stream_stats stats;
};

struct leg {
        char *tag;
        struct stream *media[MR_MAX_MEDIA];
        unsigned n_media;
        struct call *call;
};

struct call {
        char *call_id;
        struct leg legs[2];
        struct worker *worker;
        uint64_t created_ms;       /* realtime */
        uint64_t last_signal_ms;   /* monotonic */
        uint64_t dead_epoch;       /* graveyard: the worker epoch when it was unhooked */
        struct call *next;         /* hash chain, then graveyard list */
};

struct worker {
        struct mediarelay *m;
        unsigned index;
        pthread_t thread;
        bool started;
        int epfd;
        int wake_fd;
        pthread_mutex_t lock;
        _Atomic uint64_t epoch;
        _Atomic bool stop;
        unsigned n_calls;
        /* totals, under lock */
        uint64_t packets, bytes, dropped, stun;
        /* per batch buffers: no allocation per packet */
        struct mmsghdr in[MR_BATCH], out[MR_BATCH];
        struct iovec in_iov[MR_BATCH], out_iov[MR_BATCH];
        struct sockaddr_storage in_addr[MR_BATCH];
        unsigned char buf[MR_BATCH][MR_BUF_SIZE];
        unsigned char stun_buf[512];
};

/* Replies kept for NG retransmissions: a client that got no answer in time sends the same
 * datagram again (same cookie); it gets the same reply instead of a second execution. */
#define NG_CACHE_SLOTS 2048
#define NG_CACHE_MAX_REPLY 8192
#define NG_CACHE_TTL_MS 30000
struct ng_cache_entry {
        uint64_t hash;      /* of the whole request datagram */
        size_t request_len;
        uint64_t at_ms;
        char *reply;
        size_t reply_len;
};

struct mediarelay {
        struct daemon *daemon;
        struct mediarelay_config config;
        struct loop *loop;
        int ng_fd;
        struct loop_io *ng_io;
        struct loop_timer *sweep_timer;

        struct sockaddr_storage bind_addr;     /* address, port 0 */
        socklen_t bind_len;
        char advertised[64];                   /* in SDP */
        bool ipv6;

        struct call **buckets;
        size_t n_buckets, n_calls;
        struct call *graveyard;

        /* ports: one bit per even port of the range */
        uint8_t *port_used;
        unsigned port_base, port_pairs, port_next, ports_in_use;

        struct worker **workers;
        unsigned n_workers, next_worker;

        struct ng_cache_entry *ng_cache;

        struct redis *redis;
        struct loop_timer *announce_timer;
        struct withdraw *withdraw;

        struct stats_counter *count_ng_retransmissions;
        struct stats_counter *count_ng[8], *count_ng_errors, *count_expired, *count_refused;
};

enum ng_ice { NG_ICE_DEFAULT, NG_ICE_REMOVE, NG_ICE_FORCE };

/* The NG keys an offer or answer acts on. */
struct ng_opts {
        bool replace_origin;
        enum ng_ice ice;
        const char *transport;   /* transport-protocol, NULL = keep */
        bool mux_offer, mux_demux, mux_reject, mux_require;
        enum latch_mode latch;
};

/* mediarelay.c */
int mediarelay_new(struct daemon *d, struct mediarelay **ret);
/* Without a daemon (unit tests): config filled by the caller, loop given. */
int mediarelay_new_bare(const struct mediarelay_config *config, struct loop *l,
                        struct mediarelay **ret);
int mediarelay_start(struct mediarelay *m);
void mediarelay_free(struct mediarelay *m);
/* Counts an NG command (by name, "other" when unknown) and whether it failed. */
void mr_count_ng(struct mediarelay *m, const char *command, bool error);
extern const struct mediarelay_hooks {
        void (*stop)(struct daemon *d, void *userdata);
} mediarelay_hooks;

/* announce.c: the relay's entry in Redis (see there for the layout). */
int announce_start(struct mediarelay *m);
/* SIGTERM: removes the entry, then calls daemon_drained(). */
void announce_withdraw(struct mediarelay *m, struct daemon *d);
void announce_stop(struct mediarelay *m);

/* call.c */
struct call *call_find(struct mediarelay *m, const char *call_id);
int call_new(struct mediarelay *m, const char *call_id, struct call **ret);
/* Unhooks the call from the table and its worker; freed once the worker moved on. */
void call_delete(struct mediarelay *m, struct call *c);
void call_reap(struct mediarelay *m, bool all);
struct leg *call_leg_by_tag(struct call *c, const char *tag);
int leg_set_tag(struct leg *l, const char *tag);
/* Makes sure media index i exists on both legs (ports allocated, sockets on the worker). */
int call_ensure_media(struct mediarelay *m, struct call *c, unsigned i);
void call_lock(struct call *c);
void call_unlock(struct call *c);
uint64_t call_last_activity(struct call *c);
/* Milliseconds since the call's last packet or signalling at now (monotonic); 0 when a packet
 * came after now was read. */
uint64_t call_idle_ms(struct call *c, uint64_t now);
struct json_t *call_to_json(struct call *c, bool details);
struct bencode *call_to_bencode(struct call *c);
int stream_set_signalled(struct stream *s, bool rtcp, const char *addr, unsigned port);

/* ports.c */
int ports_init(struct mediarelay *m);
void ports_done(struct mediarelay *m);
int ports_alloc(struct mediarelay *m, struct rsock *rtp, struct rsock *rtcp);
void ports_release(struct mediarelay *m, struct rsock *rtp, struct rsock *rtcp);

/* worker.c */
int worker_new(struct mediarelay *m, unsigned index, struct worker **ret);
int worker_start(struct worker *w);
void worker_free(struct worker *w);
int worker_add(struct worker *w, struct rsock *s);
void worker_remove(struct worker *w, struct rsock *s);
uint64_t mono_ms(void);

/* ng.c: one NG datagram in, one reply out (always, even for garbage). */
int ng_process(struct mediarelay *m, const void *buf, size_t len, char **reply,
               size_t *reply_len);
void ng_cache_free(struct mediarelay *m);

/* sdp.c: rewrites the SDP `sdp` that sender's party sent, for recipient's party; updates the
 * streams of both legs. Returns 0 with *out (malloc'd), or -errno with a message in error. */
int sdp_rewrite(struct mediarelay *m, struct call *c, struct leg *sender, struct leg *recipient,
                const char *sdp, size_t len, const struct ng_opts *o, bool offer, char **out,
                char *error, size_t error_size);

/* stun.c: answers a binding request held in pkt; returns the response length in out (0: not
 * a request to answer). */
bool stun_is_stun(const unsigned char *p, size_t len);
size_t stun_answer(struct stream *s, const unsigned char *pkt, size_t len,
                   const struct sockaddr *from, unsigned char *out, size_t out_size);

/* srtp.c */
int mr_srtp_init(void);
/* The SDES suite named in a=crypto, -1 when unknown. */
int crypto_suite_from_name(const char *name);
const char *crypto_suite_name(int suite);
unsigned crypto_suite_count(void);
/* Parses "tag suite inline:key[|...]" into p; -EINVAL when unusable. */
int crypto_parse(const char *value, struct crypto_params *p);
/* "tag suite inline:base64", malloc'd. */
char *crypto_format(const struct crypto_params *p);
void crypto_generate(struct crypto_params *p, int suite, unsigned tag);
/* Creates the stream's SRTP contexts from crypto_local/crypto_remote (or frees them). */
int stream_srtp_setup(struct stream *s);
void stream_srtp_free(struct stream *s);

/* utilities */
void random_token(char *out, size_t len);
