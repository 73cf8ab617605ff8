/* SPDX-License-Identifier: MIT */
#pragma once

/* HTTP digest computations (RFC 7616, RFC 8760 for SIP) and unforgeable nonces, on OpenSSL's
 * EVP: the proxy's Authentication module and any other daemon that challenges. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum digest_algorithm {
        DIGEST_MD5,
        DIGEST_SHA256,
        _DIGEST_MAX,
};

/* Large enough for a SHA-256 hex digest and its NUL. */
#define DIGEST_HEX_MAX 65

/* "MD5", "SHA-256". */
const char *digest_algorithm_name(enum digest_algorithm a);
/* Case-insensitive; "SHA256" accepted too. -EINVAL for anything else. */
int digest_algorithm_from_name(const char *name);
/* Hex length of the algorithm's digests (32 or 64). */
size_t digest_hex_len(enum digest_algorithm a);

/* H(p[0] ":" p[1] ":" ...) in lower-case hex. 0 or -EIO. */
int digest_hash_parts(enum digest_algorithm a, const char *const *parts, size_t n,
                      char out[static DIGEST_HEX_MAX]);
/* HA1 = H(username:realm:password). */
int digest_ha1(enum digest_algorithm a, const char *username, const char *realm,
               const char *password, char out[static DIGEST_HEX_MAX]);
/* The qop=auth response: H(HA1:nonce:nc:cnonce:qop:H(method:uri)). */
int digest_response(enum digest_algorithm a, const char *ha1, const char *nonce, const char *nc,
                    const char *cnonce, const char *qop, const char *method, const char *uri,
                    char out[static DIGEST_HEX_MAX]);
/* Constant-time comparison of two hex strings, case-insensitive on the received one. */
bool digest_equal(const char *expected, const char *received);

/* Nonces: hex of (time, random, HMAC-SHA-256(secret, time random realm) truncated), so that
 * only this process can make one that verifies; a restart makes earlier nonces stale. */
#define DIGEST_NONCE_LEN 64
struct digest_nonce_key {
        uint8_t secret[32];
};
/* A fresh random secret. 0 or -EIO. */
int digest_nonce_key_init(struct digest_nonce_key *k);
/* now_ms: any monotonic clock. */
int digest_nonce_make(const struct digest_nonce_key *k, const char *realm, uint64_t now_ms,
                      char out[static DIGEST_NONCE_LEN + 1]);
/* 0: made by us for this realm and younger than expires_ms; -ESTALE: ours but older;
 * -EINVAL: not ours (forged, altered, another realm, garbage). */
int digest_nonce_check(const struct digest_nonce_key *k, const char *realm, const char *nonce,
                       uint64_t now_ms, uint64_t expires_ms);
