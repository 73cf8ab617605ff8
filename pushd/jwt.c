/* SPDX-License-Identifier: MIT */
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>

#include "jwt.h"
#include "macro.h"

char *base64url_encode(const void *data, size_t len) {
        static const char alphabet[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        const unsigned char *in = data;
        char *out = malloc(len / 3 * 4 + 5), *o = out;
        if (!out)
                return NULL;
        size_t i = 0;
        for (; i + 3 <= len; i += 3) {
                unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
                *o++ = alphabet[v >> 18 & 63];
                *o++ = alphabet[v >> 12 & 63];
                *o++ = alphabet[v >> 6 & 63];
                *o++ = alphabet[v & 63];
        }
        if (len - i == 1) {
                unsigned v = (unsigned)in[i] << 16;
                *o++ = alphabet[v >> 18 & 63];
                *o++ = alphabet[v >> 12 & 63];
        } else if (len - i == 2) {
                unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
                *o++ = alphabet[v >> 18 & 63];
                *o++ = alphabet[v >> 12 & 63];
                *o++ = alphabet[v >> 6 & 63];
        }
        *o = 0;
        return out;
}

void jwt_key_free(EVP_PKEY *k) {
        EVP_PKEY_free(k);
}

static int check_key(EVP_PKEY *k, enum jwt_alg alg) {
        if (alg == JWT_ES256) {
                char group[64];
                size_t glen = 0;
                if (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC ||
                    !EVP_PKEY_get_utf8_string_param(k, "group", group, sizeof group, &glen) ||
                    !(streq(group, "prime256v1") || streq(group, "P-256")))
                        return -EINVAL;
                return 0;
        }
        if (EVP_PKEY_get_base_id(k) != EVP_PKEY_RSA || EVP_PKEY_get_bits(k) < 2048)
                return -EINVAL;
        return 0;
}

int jwt_load_key(const char *pem, size_t len, enum jwt_alg alg, EVP_PKEY **ret) {
        BIO *b = BIO_new_mem_buf(pem, (int)len);
        if (!b)
                return -ENOMEM;
        EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
        BIO_free(b);
        if (!k)
                return -EINVAL;
        if (check_key(k, alg) < 0) {
                EVP_PKEY_free(k);
                return -EINVAL;
        }
        *ret = k;
        return 0;
}

int jwt_load_key_file(const char *path, enum jwt_alg alg, EVP_PKEY **ret) {
        FILE *f = fopen(path, "re");
        if (!f)
                return -errno;
        EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        if (!k)
                return -EINVAL;
        if (check_key(k, alg) < 0) {
                EVP_PKEY_free(k);
                return -EINVAL;
        }
        *ret = k;
        return 0;
}

static char *encode_json(json_t *j) {
        _cleanup_free_ char *s = json_dumps(j, JSON_COMPACT);
        return s ? base64url_encode(s, strlen(s)) : NULL;
}

int jwt_sign(EVP_PKEY *key, enum jwt_alg alg, json_t *header, json_t *claims, char **ret) {
        _cleanup_free_ char *h = NULL, *c = NULL, *input = NULL, *sig64 = NULL;
        unsigned char *der = NULL;
        size_t der_len = 0;
        int r = -EIO;

        if (json_object_set_new(header, "alg", json_string(alg == JWT_ES256 ? "ES256" : "RS256")) <
            0)
                return -ENOMEM;
        h = encode_json(header);
        c = encode_json(claims);
        if (!h || !c || asprintf(&input, "%s.%s", h, c) < 0)
                return -ENOMEM;

        EVP_MD_CTX *md = EVP_MD_CTX_new();
        if (!md)
                return -ENOMEM;
        if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
            EVP_DigestSign(md, NULL, &der_len, (unsigned char *)input, strlen(input)) != 1)
                goto finish;
        der = malloc(der_len);
        if (!der) {
                r = -ENOMEM;
                goto finish;
        }
        if (EVP_DigestSign(md, der, &der_len, (unsigned char *)input, strlen(input)) != 1)
                goto finish;

        if (alg == JWT_ES256) {
                /* JWS wants r || s, 32 bytes each, where OpenSSL gives a DER ECDSA-Sig-Value. */
                const unsigned char *p = der;
                ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
                if (!sig)
                        goto finish;
                unsigned char raw[64];
                const BIGNUM *br, *bs;
                ECDSA_SIG_get0(sig, &br, &bs);
                bool ok = BN_bn2binpad(br, raw, 32) == 32 && BN_bn2binpad(bs, raw + 32, 32) == 32;
                ECDSA_SIG_free(sig);
                if (!ok)
                        goto finish;
                sig64 = base64url_encode(raw, sizeof raw);
        } else
                sig64 = base64url_encode(der, der_len);
        if (!sig64) {
                r = -ENOMEM;
                goto finish;
        }
        if (asprintf(ret, "%s.%s", input, sig64) < 0) {
                r = -ENOMEM;
                goto finish;
        }
        r = 0;
finish:
        free(der);
        EVP_MD_CTX_free(md);
        return r;
}
