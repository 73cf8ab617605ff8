/* SPDX-License-Identifier: MIT */
#pragma once

/* JSON Web Tokens signed with OpenSSL: ES256 (APNs provider tokens, a P-256 key from a .p8
 * file) and RS256 (the OAuth2 assertion of a Google service account). */

#include <stddef.h>

struct json_t;
struct evp_pkey_st;

enum jwt_alg { JWT_ES256, JWT_RS256 };

/* base64url without padding, malloc'd; NULL on ENOMEM. */
char *base64url_encode(const void *data, size_t len);

/* A private key from PEM text (PKCS#8 "PRIVATE KEY", or the traditional EC/RSA forms). Checks
 * that it suits alg (a P-256 EC key for ES256, an RSA key of 2048 bits or more for RS256).
 * -EINVAL when it does not parse or does not fit. */
int jwt_load_key(const char *pem, size_t len, enum jwt_alg alg, struct evp_pkey_st **ret);
int jwt_load_key_file(const char *path, enum jwt_alg alg, struct evp_pkey_st **ret);
void jwt_key_free(struct evp_pkey_st *k);

/* header.claims.signature; "alg" is set in the header by this function. malloc'd in *ret. */
int jwt_sign(struct evp_pkey_st *key, enum jwt_alg alg, struct json_t *header,
             struct json_t *claims, char **ret);
