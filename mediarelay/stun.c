/* SPDX-License-Identifier: MIT */
/* STUN binding requests on relay ports (RFC 5389), as an ICE-lite agent answers connectivity
 * checks (RFC 8445): XOR-MAPPED-ADDRESS, and when the stream has ICE credentials (the relay's
 * ufrag/pwd written into the SDP its party received) the request must carry USERNAME
 * "<relay ufrag>:<party ufrag>" and a MESSAGE-INTEGRITY made with the relay's password; the
 * response carries MESSAGE-INTEGRITY with the same key. FINGERPRINT on every response.
 * Errors: 400 for a check without credentials, 401 for wrong ones. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>

#include "mediarelay.h"

#define STUN_COOKIE 0x2112A442u
#define STUN_BINDING_REQUEST 0x0001
#define STUN_BINDING_SUCCESS 0x0101
#define STUN_BINDING_ERROR 0x0111
#define ATTR_USERNAME 0x0006
#define ATTR_MESSAGE_INTEGRITY 0x0008
#define ATTR_ERROR_CODE 0x0009
#define ATTR_XOR_MAPPED_ADDRESS 0x0020
#define ATTR_FINGERPRINT 0x8028
#define FINGERPRINT_XOR 0x5354554eu

static uint16_t get16(const unsigned char *p) {
        return (uint16_t)(p[0] << 8 | p[1]);
}
static uint32_t get32(const unsigned char *p) {
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static void put16(unsigned char *p, uint16_t v) {
        p[0] = (unsigned char)(v >> 8);
        p[1] = (unsigned char)v;
}
static void put32(unsigned char *p, uint32_t v) {
        p[0] = (unsigned char)(v >> 24);
        p[1] = (unsigned char)(v >> 16);
        p[2] = (unsigned char)(v >> 8);
        p[3] = (unsigned char)v;
}

static uint32_t crc32(const unsigned char *p, size_t n) {
        static uint32_t table[256];
        static _Atomic bool ready;
        if (!atomic_load(&ready)) {
                for (uint32_t i = 0; i < 256; i++) {
                        uint32_t c = i;
                        for (int k = 0; k < 8; k++)
                                c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
                        table[i] = c;
                }
                atomic_store(&ready, true);
        }
        uint32_t c = 0xFFFFFFFFu;
        for (size_t i = 0; i < n; i++)
                c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
        return c ^ 0xFFFFFFFFu;
}

bool stun_is_stun(const unsigned char *p, size_t len) {
        return len >= 20 && (p[0] & 0xc0) == 0 && get32(p + 4) == STUN_COOKIE &&
               (size_t)get16(p + 2) + 20 == len && (len & 3) == 0;
}

static bool hmac_sha1(const char *key, const unsigned char *data, size_t len, unsigned char out[20]) {
        unsigned int olen = 20;
        return HMAC(EVP_sha1(), key, (int)strlen(key), data, len, out, &olen) && olen == 20;
}

/* Appends MESSAGE-INTEGRITY (when key) and FINGERPRINT to the response of length *len. */
static void finish(unsigned char *out, size_t *len, const char *key) {
        if (key) {
                unsigned char mac[20];
                put16(out + 2, (uint16_t)(*len - 20 + 24));
                if (!hmac_sha1(key, out, *len, mac))
                        memset(mac, 0, sizeof(mac));
                put16(out + *len, ATTR_MESSAGE_INTEGRITY);
                put16(out + *len + 2, 20);
                memcpy(out + *len + 4, mac, 20);
                *len += 24;
        }
        put16(out + 2, (uint16_t)(*len - 20 + 8));
        uint32_t fp = crc32(out, *len) ^ FINGERPRINT_XOR;
        put16(out + *len, ATTR_FINGERPRINT);
        put16(out + *len + 2, 4);
        put32(out + *len + 4, fp);
        *len += 8;
}

static size_t error_response(const unsigned char *req, unsigned char *out, int code,
                             const char *reason) {
        size_t rlen = strlen(reason), padded = (rlen + 3) & ~(size_t)3, len = 20;

        put16(out, STUN_BINDING_ERROR);
        memcpy(out + 4, req + 4, 16); /* cookie and transaction id */
        put16(out + len, ATTR_ERROR_CODE);
        put16(out + len + 2, (uint16_t)(4 + rlen));
        out[len + 4] = out[len + 5] = 0;
        out[len + 6] = (unsigned char)(code / 100);
        out[len + 7] = (unsigned char)(code % 100);
        memset(out + len + 8, 0, padded);
        memcpy(out + len + 8, reason, rlen);
        len += 8 + padded;
        finish(out, &len, NULL);
        return len;
}

size_t stun_answer(struct stream *s, const unsigned char *pkt, size_t len,
                   const struct sockaddr *from, unsigned char *out, size_t out_size) {
        const unsigned char *username = NULL, *mi = NULL;
        size_t username_len = 0, off = 20, olen;

        if (out_size < 128 || get16(pkt) != STUN_BINDING_REQUEST)
                return 0;
        while (off + 4 <= len) {
                uint16_t type = get16(pkt + off), alen = get16(pkt + off + 2);
                if (off + 4 + alen > len)
                        return 0;
                if (type == ATTR_USERNAME && !username) {
                        username = pkt + off + 4;
                        username_len = alen;
                } else if (type == ATTR_MESSAGE_INTEGRITY && alen == 20) {
                        mi = pkt + off;
                        break; /* only FINGERPRINT may follow */
                }
                off += 4 + (((size_t)alen + 3) & ~(size_t)3);
        }

        if (s->ice) {
                size_t ul = strlen(s->ice_ufrag);
                unsigned char mac[20], copy[20];

                if (!username || !mi)
                        return error_response(pkt, out, 400, "Bad Request");
                if (username_len < ul + 1 || memcmp(username, s->ice_ufrag, ul) != 0 ||
                    username[ul] != ':')
                        return error_response(pkt, out, 401, "Unauthorized");
                /* The MAC covers the message up to MESSAGE-INTEGRITY, with the length field
                 * counting up to its end. */
                size_t covered = (size_t)(mi - pkt);
                if (covered > 512)
                        return 0;
                unsigned char tmp[512];
                memcpy(tmp, pkt, covered);
                put16(tmp + 2, (uint16_t)(covered - 20 + 24));
                memcpy(copy, mi + 4, 20);
                if (!hmac_sha1(s->ice_pwd, tmp, covered, mac) ||
                    CRYPTO_memcmp(mac, copy, 20) != 0)
                        return error_response(pkt, out, 401, "Unauthorized");
        }

        put16(out, STUN_BINDING_SUCCESS);
        memcpy(out + 4, pkt + 4, 16);
        olen = 20;
        if (from->sa_family == AF_INET) {
                const struct sockaddr_in *sin = (const void *)from;
                put16(out + olen, ATTR_XOR_MAPPED_ADDRESS);
                put16(out + olen + 2, 8);
                out[olen + 4] = 0;
                out[olen + 5] = 0x01;
                put16(out + olen + 6, (uint16_t)(ntohs(sin->sin_port) ^ (STUN_COOKIE >> 16)));
                put32(out + olen + 8, ntohl(sin->sin_addr.s_addr) ^ STUN_COOKIE);
                olen += 12;
        } else if (from->sa_family == AF_INET6) {
                const struct sockaddr_in6 *sin6 = (const void *)from;
                put16(out + olen, ATTR_XOR_MAPPED_ADDRESS);
                put16(out + olen + 2, 20);
                out[olen + 4] = 0;
                out[olen + 5] = 0x02;
                put16(out + olen + 6, (uint16_t)(ntohs(sin6->sin6_port) ^ (STUN_COOKIE >> 16)));
                for (int i = 0; i < 16; i++)
                        out[olen + 8 + i] = sin6->sin6_addr.s6_addr[i] ^ pkt[4 + i];
                olen += 24;
        }
        finish(out, &olen, s->ice ? s->ice_pwd : NULL);
        return olen;
}
