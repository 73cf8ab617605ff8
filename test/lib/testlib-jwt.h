/* SPDX-License-Identifier: MIT */
#pragma once

/* JWT checks for the push tests, written apart from pushd's signer: decode the parts, verify
 * ES256 (raw r||s) and RS256 signatures with a public key. */

#include <stdbool.h>
#include <stddef.h>

struct json_t;

/* base64url (padding optional) → bytes, malloc'd; NULL when invalid. */
unsigned char *tl_base64url_decode(const char *s, size_t len, size_t *out_len);
/* Splits a compact JWT; header and claims parsed (caller json_decref). Returns true when the
 * signature verifies with the public key of the PEM private key file key_pem (the test owns
 * the key pair) for the alg named in the header ("ES256" or "RS256"). */
bool tl_jwt_verify(const char *jwt, const char *key_pem_path, struct json_t **header,
                   struct json_t **claims);
/* Writes a fresh P-256 key (PKCS#8 PEM, like Apple's .p8) or RSA-2048 key to tmpdir/name;
 * returns the malloc'd path. */
char *tl_write_ec_key(const char *name);
char *tl_write_rsa_key(const char *name, char **pem_text);
