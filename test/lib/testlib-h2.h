/* SPDX-License-Identifier: MIT */
#pragma once

/* test/servers/h2-push-server.py, a real HTTP/2-over-TLS server (Python h2) that plays APNs,
 * FCM or a generic push service: it records every request as a JSON line and answers as its
 * scenario file says (see the script). Its certificate comes from tl_tls_dir("tls"). */

#include <jansson.h>
#include <stddef.h>

#include "testlib.h"

struct tl_h2_server {
        struct tl_proc proc;
        int port;
        char *record;
        char *scenario;
        char *name;
};

/* The TLS directory of the servers (cafile.pem is what clients must trust). */
const char *tl_h2_tls_dir(void);
/* mode: "apns", "fcm" or "generic"; client_ca: require client certificates from this CA
 * (NULL: none); scenario: JSON text (NULL: "{}", every request answered 200). */
void tl_h2_server_start(struct tl_h2_server *s, const char *name, const char *mode,
                        const char *client_ca, const char *scenario);
/* Replaces the scenario (atomically: the server reads it for every request). */
void tl_h2_server_scenario(struct tl_h2_server *s, const char *json);
void tl_h2_server_stop(struct tl_h2_server *s);
/* The requests recorded so far, as a JSON array. */
json_t *tl_h2_server_records(struct tl_h2_server *s);
/* Waits until at least n requests were recorded (fails the test after timeout_ms). */
json_t *tl_h2_server_wait(struct tl_h2_server *s, size_t n, int timeout_ms);
/* A recorded request's header (lowercase name) and its body parsed as JSON (caller decref). */
const char *tl_h2_header(json_t *rec, const char *name);
json_t *tl_h2_body(json_t *rec);
/* A Google service-account JSON file (tmpdir/name) for project, with a fresh RSA key (its path
 * in *key_path, malloc'd) and token_uri https://127.0.0.1:<port>/token. Returns its path. */
char *tl_h2_write_service_account(const char *name, const char *project, int port,
                                  char **key_path);
