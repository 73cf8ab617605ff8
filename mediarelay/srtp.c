/* SPDX-License-Identifier: MIT */
/* SDES (RFC 4568) a=crypto lines and libsrtp2 contexts for SRTP <-> RTP bridging.
 *
 * An a=crypto line carries the key its sender encrypts with. Towards a party that speaks SRTP
 * the relay writes its own key (generated per stream, crypto_local) and protects what it sends
 * with it; it unprotects what the party sends with the party's key (crypto_remote). Keys are
 * never logged. */
#define LOG_SUBSYSTEM LOG_media
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "log.h"
#include "mediarelay.h"

struct suite {
        const char *name;
        size_t key_len; /* master key + salt */
        void (*rtp)(srtp_crypto_policy_t *p);
        void (*rtcp)(srtp_crypto_policy_t *p);
};

/* In order of preference. With the _32 suites SRTCP keeps the 80-bit tag (RFC 4568 6.2). */
static const struct suite suites[] = {
        {"AES_CM_128_HMAC_SHA1_80", 30, srtp_crypto_policy_set_rtp_default,
         srtp_crypto_policy_set_rtp_default},
        {"AES_CM_128_HMAC_SHA1_32", 30, srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32,
         srtp_crypto_policy_set_rtp_default},
        {"AES_256_CM_HMAC_SHA1_80", 46, srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80,
         srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80},
        {"AES_256_CM_HMAC_SHA1_32", 46, srtp_crypto_policy_set_aes_cm_256_hmac_sha1_32,
         srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80},
};

int mr_srtp_init(void) {
        static bool done;
        if (done)
                return 0;
        if (srtp_init() != srtp_err_status_ok)
                return -EIO;
        done = true;
        return 0;
}

unsigned crypto_suite_count(void) {
        return ELEMENTSOF(suites);
}

int crypto_suite_from_name(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(suites); i++)
                if (streq(name, suites[i].name))
                        return (int)i;
        return -1;
}

const char *crypto_suite_name(int suite) {
        return suite >= 0 && (size_t)suite < ELEMENTSOF(suites) ? suites[suite].name : NULL;
}

static int b64_value(char c) {
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

/* Strict base64 of exactly want bytes (padding optional). */
static int b64_decode(const char *s, size_t n, unsigned char *out, size_t want) {
        size_t o = 0;
        unsigned acc = 0, bits = 0;

        while (n > 0 && s[n - 1] == '=')
                n--;
        for (size_t i = 0; i < n; i++) {
                int v = b64_value(s[i]);
                if (v < 0)
                        return -EINVAL;
                acc = (acc << 6) | (unsigned)v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        if (o >= want)
                                return -EINVAL;
                        out[o++] = (unsigned char)(acc >> bits);
                }
        }
        return o == want ? 0 : -EINVAL;
}

int crypto_parse(const char *value, struct crypto_params *p) {
        char name[64];
        unsigned tag;
        int consumed = 0;
        const char *key, *end;

        if (sscanf(value, "%u %63s inline:%n", &tag, name, &consumed) < 2 || consumed == 0)
                return -EINVAL;
        if (tag > 999999999)
                return -EINVAL;
        p->suite = crypto_suite_from_name(name);
        if (p->suite < 0)
                return -EINVAL;
        p->tag = tag;
        key = value + consumed;
        end = key + strcspn(key, "| \t");
        /* Lifetime and MKI parameters are accepted; a single key only. */
        return b64_decode(key, (size_t)(end - key), p->key, suites[p->suite].key_len);
}

char *crypto_format(const struct crypto_params *p) {
        unsigned char b64[80];
        char *out = NULL;
        size_t len = suites[p->suite].key_len;

        EVP_EncodeBlock(b64, p->key, (int)len);
        if (asprintf(&out, "%u %s inline:%s", p->tag, suites[p->suite].name, b64) < 0)
                return NULL;
        return out;
}

void crypto_generate(struct crypto_params *p, int suite, unsigned tag) {
        p->suite = suite;
        p->tag = tag;
        if (RAND_bytes(p->key, (int)suites[suite].key_len) != 1)
                abort(); /* no randomness: nothing safe to do */
}

void random_token(char *out, size_t len) {
        static const char chars[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        unsigned char r[64];
        if (len > sizeof(r) || RAND_bytes(r, (int)len) != 1)
                abort();
        for (size_t i = 0; i < len; i++)
                out[i] = chars[r[i] % 64];
        out[len] = 0;
}

void stream_srtp_free(struct stream *s) {
        if (s->srtp_in)
                srtp_dealloc(s->srtp_in);
        if (s->srtp_out)
                srtp_dealloc(s->srtp_out);
        s->srtp_in = s->srtp_out = NULL;
}

static int make_ctx(const struct crypto_params *p, srtp_ssrc_type_t type, srtp_t *ret) {
        srtp_policy_t pol;

        memset(&pol, 0, sizeof(pol));
        suites[p->suite].rtp(&pol.rtp);
        suites[p->suite].rtcp(&pol.rtcp);
        pol.ssrc.type = type;
        pol.key = (unsigned char *)p->key;
        pol.window_size = 128;
        pol.allow_repeat_tx = 1;
        return srtp_create(ret, &pol) == srtp_err_status_ok ? 0 : -EINVAL;
}

/* Called with the call locked. */
int stream_srtp_setup(struct stream *s) {
        srtp_t in = NULL, out = NULL;
        int r;

        if (!s->srtp || s->crypto_local.suite < 0 || s->crypto_remote.suite < 0) {
                stream_srtp_free(s);
                return 0;
        }
        /* A re-offer with the same keys keeps the contexts (rollover counters, replay lists). */
        if (s->srtp_in && s->srtp_out &&
            memcmp(&s->ctx_local, &s->crypto_local, sizeof(s->ctx_local)) == 0 &&
            memcmp(&s->ctx_remote, &s->crypto_remote, sizeof(s->ctx_remote)) == 0)
                return 0;
        r = make_ctx(&s->crypto_local, ssrc_any_outbound, &out);
        if (r >= 0)
                r = make_ctx(&s->crypto_remote, ssrc_any_inbound, &in);
        if (r < 0) {
                if (out)
                        srtp_dealloc(out);
                return r;
        }
        stream_srtp_free(s);
        s->srtp_in = in;
        s->srtp_out = out;
        s->ctx_local = s->crypto_local;
        s->ctx_remote = s->crypto_remote;
        return 0;
}
