/* SPDX-License-Identifier: MIT */
#include <check.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>

#include "macro.h"
#include "testlib-jwt.h"
#include "testlib.h"

unsigned char *tl_base64url_decode(const char *s, size_t len, size_t *out_len) {
        unsigned char *out = malloc(len * 3 / 4 + 3);
        unsigned acc = 0, bits = 0;
        size_t n = 0;
        for (size_t i = 0; i < len; i++) {
                char c = s[i];
                int v = c >= 'A' && c <= 'Z'   ? c - 'A'
                        : c >= 'a' && c <= 'z' ? c - 'a' + 26
                        : c >= '0' && c <= '9' ? c - '0' + 52
                        : c == '-'             ? 62
                        : c == '_'             ? 63
                        : c == '='             ? -2
                                               : -1;
                if (v == -2)
                        break;
                if (v < 0) {
                        free(out);
                        return NULL;
                }
                acc = acc << 6 | (unsigned)v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[n++] = (unsigned char)(acc >> bits);
                }
        }
        *out_len = n;
        return out;
}

static json_t *decode_part(const char *s, size_t len) {
        size_t n;
        _cleanup_free_ unsigned char *raw = tl_base64url_decode(s, len, &n);
        return raw ? json_loadb((const char *)raw, n, 0, NULL) : NULL;
}

bool tl_jwt_verify(const char *jwt, const char *key_pem_path, json_t **header, json_t **claims) {
        const char *dot1 = strchr(jwt, '.'), *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
        ck_assert_msg(dot1 && dot2, "not a compact JWT: %s", jwt);
        *header = decode_part(jwt, (size_t)(dot1 - jwt));
        *claims = decode_part(dot1 + 1, (size_t)(dot2 - dot1 - 1));
        ck_assert_msg(*header && *claims, "JWT parts are not JSON");
        const char *alg = json_string_value(json_object_get(*header, "alg"));
        ck_assert_ptr_nonnull(alg);

        FILE *f = fopen(key_pem_path, "re");
        ck_assert_ptr_nonnull(f);
        EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        ck_assert_ptr_nonnull(key);
        /* Verify with the public half only. */
        unsigned char *pub_der = NULL;
        int pub_len = i2d_PUBKEY(key, &pub_der);
        ck_assert_int_gt(pub_len, 0);
        const unsigned char *pp = pub_der;
        EVP_PKEY *pub = d2i_PUBKEY(NULL, &pp, pub_len);
        OPENSSL_free(pub_der);
        EVP_PKEY_free(key);
        ck_assert_ptr_nonnull(pub);

        size_t sig_len;
        _cleanup_free_ unsigned char *sig =
                tl_base64url_decode(dot2 + 1, strlen(dot2 + 1), &sig_len);
        ck_assert_ptr_nonnull(sig);
        unsigned char *der = NULL;
        size_t der_len = 0;
        if (streq(alg, "ES256")) {
                ck_assert_uint_eq(sig_len, 64);
                ECDSA_SIG *es = ECDSA_SIG_new();
                ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
                int l = i2d_ECDSA_SIG(es, &der);
                ECDSA_SIG_free(es);
                ck_assert_int_gt(l, 0);
                der_len = (size_t)l;
        } else {
                ck_assert_str_eq(alg, "RS256");
                der = OPENSSL_malloc(sig_len);
                memcpy(der, sig, sig_len);
                der_len = sig_len;
        }
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        bool ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub) == 1 &&
                  EVP_DigestVerify(md, der, der_len, (const unsigned char *)jwt,
                                   (size_t)(dot2 - jwt)) == 1;
        EVP_MD_CTX_free(md);
        OPENSSL_free(der);
        EVP_PKEY_free(pub);
        return ok;
}

static char *write_key(const char *name, EVP_PKEY *k, char **pem_text) {
        char *path = tl_path(name);
        FILE *f = fopen(path, "we");
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(PEM_write_PKCS8PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
        fclose(f);
        EVP_PKEY_free(k);
        if (pem_text)
                *pem_text = tl_read_file(path, NULL);
        return path;
}

char *tl_write_ec_key(const char *name) {
        EVP_PKEY *k = EVP_EC_gen("P-256");
        ck_assert_ptr_nonnull(k);
        return write_key(name, k, NULL);
}

char *tl_write_rsa_key(const char *name, char **pem_text) {
        EVP_PKEY *k = EVP_RSA_gen(2048);
        ck_assert_ptr_nonnull(k);
        return write_key(name, k, pem_text);
}
