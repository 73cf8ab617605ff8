/* SPDX-License-Identifier: MIT */
#pragma once

/* What the proxy hands sofia for one [global] transports entry: the URI in the form sofia binds,
 * and for TLS the certificate files, checked first so that a bad certificate refuses the start
 * with one clear line instead of a listener that fails every handshake. */

#include <stdbool.h>

/* The URI to bind for a configured one. sofia listens for TLS only on sips: URIs (it refuses
 * sip:...;transport=tls with "Protocol not supported"), so a transport=tls URI becomes sips:
 * with the same host, port and other parameters (maddr...). *ret is malloc'd; *ret_tls tells
 * whether the transport is TLS. -EINVAL when uri is not a SIP URI. */
int transport_bind_uri(const char *uri, char **ret, bool *ret_tls);

/* The TLS files: certificate (the leaf first, then its chain), private key, trusted CAs. */
struct transport_tls_files {
        const char *certificates_dir; /* holds agent.pem (key + chain) and cafile.pem */
        const char *certificate;      /* NULL: certificates_dir/agent.pem */
        const char *private_key;      /* NULL: the certificate file */
        const char *ca_file;          /* NULL: certificates_dir/cafile.pem */
        bool quiet; /* no expiry warning: an earlier transport with the same files gave it */
};

/* Days before the end of a certificate's validity when the start warns about it. */
#define TRANSPORT_TLS_EXPIRY_WARNING_DAYS 30

/* Checks the files: readable, PEM, the key matches the certificate, every certificate of the
 * chain within its validity dates (a warning when one ends within
 * TRANSPORT_TLS_EXPIRY_WARNING_DAYS), at least one CA. On success writes what sofia reads into
 * a fresh private directory (mode 0700 under $RUNTIME_DIRECTORY, $TMPDIR or /tmp): agent.pem
 * (key and chain) and cafile.pem (the CAs, plus the chain's intermediates so that OpenSSL sends
 * them with the certificate), and returns its path in *ret_dir (malloc'd). Remove it with
 * transport_tls_dir_remove() once the transport is bound: sofia reads the files only then.
 * Each failure is logged as one error line naming the file and the problem. */
int transport_tls_prepare(const struct transport_tls_files *files, char **ret_dir);
void transport_tls_dir_remove(const char *dir);
