/* SPDX-License-Identifier: MIT */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <ctype.h>
#include <stdio.h>
#include <strings.h>

#include "digest.h"
#include "macro.h"

static const char *const names[_DIGEST_MAX] = {"MD5", "SHA-256"};

const char *digest_algorithm_name(enum digest_algorithm a) {
        return a < _DIGEST_MAX ? names[a] : NULL;
}

int digest_algorithm_from_name(const char *name) {
        if (!name)
                return -EINVAL;
        if (strcaseeq(name, "MD5"))
                return DIGEST_MD5;
        if (strcaseeq(name, "SHA-256") || strcaseeq(name, "SHA256"))
                return DIGEST_SHA256;
        return -EINVAL;
}

size_t digest_hex_len(enum digest_algorithm a) {
        return a == DIGEST_MD5 ? 32 : 64;
}

static void to_hex(const unsigned char *b, size_t n, char *out) {
        static const char hex[] = "0123456789abcdef";
        for (size_t i = 0; i < n; i++) {
                out[2 * i] = hex[b[i] >> 4];
                out[2 * i + 1] = hex[b[i] & 15];
        }
        out[2 * n] = 0;
}

int digest_hash_parts(enum digest_algorithm a, const char *const *parts, size_t n,
                      char out[static DIGEST_HEX_MAX]) {
        const EVP_MD *md = a == DIGEST_MD5 ? EVP_md5() : EVP_sha256();
        unsigned char buf[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        int ok = ctx && EVP_DigestInit_ex(ctx, md, NULL);
        for (size_t i = 0; ok && i < n; i++) {
                if (i > 0)
                        ok = EVP_DigestUpdate(ctx, ":", 1);
                if (ok)
                        ok = EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]));
        }
        if (ok)
                ok = EVP_DigestFinal_ex(ctx, buf, &len);
        EVP_MD_CTX_free(ctx);
        if (!ok || len * 2 >= DIGEST_HEX_MAX)
                return -EIO;
        to_hex(buf, len, out);
        return 0;
}

int digest_ha1(enum digest_algorithm a, const char *username, const char *realm,
               const char *password, char out[static DIGEST_HEX_MAX]) {
        const char *parts[] = {username, realm, password};
        return digest_hash_parts(a, parts, 3, out);
}

int digest_response(enum digest_algorithm a, const char *ha1, const char *nonce, const char *nc,
                    const char *cnonce, const char *qop, const char *method, const char *uri,
                    char out[static DIGEST_HEX_MAX]) {
        char ha2[DIGEST_HEX_MAX];
        const char *p2[] = {method, uri};
        int r = digest_hash_parts(a, p2, 2, ha2);
        if (r < 0)
                return r;
        const char *p[] = {ha1, nonce, nc, cnonce, qop, ha2};
        return digest_hash_parts(a, p, 6, out);
}

bool digest_equal(const char *expected, const char *received) {
        size_t n = strlen(expected);
        if (!received || strlen(received) != n || n >= DIGEST_HEX_MAX)
                return false;
        char lower[DIGEST_HEX_MAX];
        for (size_t i = 0; i < n; i++)
                lower[i] = (char)tolower((unsigned char)received[i]);
        return CRYPTO_memcmp(expected, lower, n) == 0;
}

int digest_nonce_key_init(struct digest_nonce_key *k) {
        return RAND_bytes(k->secret, sizeof k->secret) == 1 ? 0 : -EIO;
}

/* 8 bytes of time, 8 random bytes, 16 bytes of MAC. */
#define NONCE_BYTES 32

static int nonce_mac(const struct digest_nonce_key *k, const unsigned char head[16],
                     const char *realm, unsigned char mac[16]) {
        unsigned char full[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        unsigned char data[16 + 256];
        size_t rlen = MIN(strlen(realm), 256);
        memcpy(data, head, 16);
        memcpy(data + 16, realm, rlen);
        if (!HMAC(EVP_sha256(), k->secret, sizeof k->secret, data, 16 + rlen, full, &len) ||
            len < 16)
                return -EIO;
        memcpy(mac, full, 16);
        return 0;
}

int digest_nonce_make(const struct digest_nonce_key *k, const char *realm, uint64_t now_ms,
                      char out[static DIGEST_NONCE_LEN + 1]) {
        unsigned char b[NONCE_BYTES];
        for (int i = 0; i < 8; i++)
                b[i] = (unsigned char)(now_ms >> (56 - 8 * i));
        if (RAND_bytes(b + 8, 8) != 1)
                return -EIO;
        int r = nonce_mac(k, b, realm, b + 16);
        if (r < 0)
                return r;
        to_hex(b, NONCE_BYTES, out);
        return 0;
}

static int unhex(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int digest_nonce_check(const struct digest_nonce_key *k, const char *realm, const char *nonce,
                       uint64_t now_ms, uint64_t expires_ms) {
        unsigned char b[NONCE_BYTES], mac[16];
        if (!nonce || strlen(nonce) != DIGEST_NONCE_LEN)
                return -EINVAL;
        for (size_t i = 0; i < NONCE_BYTES; i++) {
                int hi = unhex(nonce[2 * i]), lo = unhex(nonce[2 * i + 1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                b[i] = (unsigned char)(hi << 4 | lo);
        }
        if (nonce_mac(k, b, realm, mac) < 0 || CRYPTO_memcmp(mac, b + 16, 16) != 0)
                return -EINVAL;
        uint64_t t = 0;
        for (int i = 0; i < 8; i++)
                t = t << 8 | b[i];
        if (t > now_ms + 1000) /* from the future: not ours after all */
                return -EINVAL;
        if (now_ms - MIN(t, now_ms) >= expires_ms)
                return -ESTALE;
        return 0;
}
