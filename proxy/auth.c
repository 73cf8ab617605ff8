/* SPDX-License-Identifier: MIT */
/* Authentication: digest (RFC 3261 §22, RFC 7616, RFC 8760: qop=auth, MD5 and SHA-256) against
 * the account store of common/accounts.h, TLS client certificates, trusted hosts, allowed
 * domains and brute-force bans.
 *
 * A request from a trusted host (trusted-hosts, the [cluster] nodes, the presence server), an
 * ACK, a CANCEL or a BYE passes unchallenged. Otherwise its identity (P-Preferred-Identity,
 * else From) must be in a domain of auth-domains (403). A
 * verified TLS client certificate naming the identity authenticates it. Otherwise the request
 * needs credentials for our realm: without them it gets 401 (REGISTER) or 407 with one
 * challenge per algorithm the account has a secret for (SHA-256 first; every configured one
 * for an unknown account, so that accounts cannot be enumerated). Nonces are made and checked
 * with an HMAC under a per-process key; an old one gets a fresh challenge with stale=true. The
 * nonce count of each nonce we issued is tracked (bounded table), so a replayed Authorization is
 * challenged again. Wrong credentials get 403 and count against the source address and the
 * account; over max-failed-attempts within failed-attempts-window both are refused for ban-time.
 * Credentials for our realm are removed before the request goes on. */
#define LOG_SUBSYSTEM LOG_auth
#include <inttypes.h>
#include <jansson.h>
#include <regex.h>
#include <stdio.h>

#include <sofia-sip/auth_digest.h>
#include <sofia-sip/msg_header.h>
#include <sofia-sip/su_strlst.h>

#include "accounts.h"
#include "cluster.h"
#include "ctl.h"
#include "daemon.h"
#include "digest.h"
#include "loop.h"
#include "module.h"
#include "proxy.h"
#include "ratelimit.h"
#include "stats.h"
#include "strmap.h"

#define CLEANUP_INTERVAL_MS (30 * 1000)

struct auth {
        /* configuration */
        char **auth_domains;
        char **available_algorithms;
        char *realm;
        char **trusted_hosts;
        struct account_store_settings accounts;
        int64_t max_nonces;
        uint64_t nonce_expires_ms;
        bool reject_wrong_client_certificates;
        char *required_subject;
        int64_t max_failed_attempts, max_tracked;
        uint64_t failed_window_ms, ban_ms;

        struct module *module;
        struct account_store *store;
        struct digest_nonce_key key;
        struct strmap *nonces;   /* nonce → struct nonce_state */
        struct strmap *failures; /* "source ADDR" / "account USER@DOMAIN" → struct failure */
        struct ip_prefix *trusted;
        size_t n_trusted;
        enum digest_algorithm algos[_DIGEST_MAX]; /* configured, SHA-256 first */
        size_t n_algos;
        regex_t subject_re;
        bool has_subject_re;
        struct loop_timer *cleanup_timer;

        struct stats_counter *count_password_found, *count_password_not_found;
        struct stats_counter *count_auth_failed, *count_auth_banned, *count_challenges;
        struct stats_counter *count_stale, *count_replayed, *count_tls_client;
        struct stats_counter *count_domain_forbidden;
};

#define A(field) offsetof(struct auth, field)
#define SECTION "module::Authentication"
static const struct conf_option auth_rows[] = {
        {SECTION, "auth-domains", CONF_LIST, A(auth_domains), "localhost", 0, 0, 0,
         "Domains whose users authenticate here: a request whose identity (P-Preferred-Identity, "
         "else From) is in another domain is refused with 403; * = any"},
        {SECTION, "available-algorithms", CONF_LIST, A(available_algorithms), "MD5", 0, 0, 0,
         "Digest algorithms offered (MD5, SHA-256): one challenge per algorithm the account "
         "has a secret for, SHA-256 first"},
        {SECTION, "realm", CONF_STRING, A(realm), NULL, 0, 0, 0,
         "Realm of the challenges; empty = the domain of the identity"},
        {SECTION, "trusted-hosts", CONF_LIST, A(trusted_hosts), NULL, 0, 0, 0,
         "Source addresses (or prefixes, 10.0.0.0/8) whose requests are never challenged: "
         "other proxies of the cluster, presence, conference and B2BUA servers"},
        ACCOUNT_STORE_ROWS(SECTION, A(accounts)),
        {SECTION, "nonce-expires", CONF_DURATION, A(nonce_expires_ms), "3600s", 0, 0, 0,
         "Age after which a nonce is refused with a new challenge marked stale=true",
         .unit = CONF_UNIT_S},
        {SECTION, "max-nonces", CONF_INT, A(max_nonces), "100000", 16, 10000000, 0,
         "Issued nonces whose count is tracked against replays; the oldest are forgotten "
         "(their users get a stale challenge)"},
        {SECTION, "reject-wrong-client-certificates", CONF_BOOL,
         A(reject_wrong_client_certificates), "false", 0, 0, 0,
         "On a TLS transport with client verification, refuse (403) a request whose "
         "certificate does not name its identity instead of challenging it"},
        {SECTION, "tls-client-certificate-required-subject", CONF_STRING, A(required_subject),
         NULL, 0, 0, 0,
         "Extended regular expression one subject of a client certificate (SubjectAltName "
         "URI or DNS, CN) must also match for the certificate to authenticate; empty = none"},
        {SECTION, "max-failed-attempts", CONF_INT, A(max_failed_attempts), "10", 0, 1000000, 0,
         "Failed authentications from one source address, or for one account, within "
         "failed-attempts-window that ban it for ban-time; 0 = no bans"},
        {SECTION, "failed-attempts-window", CONF_DURATION, A(failed_window_ms), "60s", 0, 0, 0,
         "Window in which failed attempts are counted", .unit = CONF_UNIT_S},
        {SECTION, "ban-time", CONF_DURATION, A(ban_ms), "300s", 0, 0, 0,
         "How long a banned source address or account is refused (403)", .unit = CONF_UNIT_S},
        {SECTION, "max-tracked-failures", CONF_INT, A(max_tracked), "100000", 16, 10000000, 0,
         "Source addresses and accounts whose failures are counted at once; the least "
         "recently seen are forgotten"},
};

/* ---- failed attempts ---- */

struct failure {
        uint64_t window_start;
        int64_t count;
        uint64_t banned_until;
};

static bool is_banned(struct auth *a, const char *key, uint64_t now) {
        struct failure *f = strmap_peek(a->failures, key);
        return f && f->banned_until > now;
}

/* Counts one failure; true when it started a ban. */
static bool note_failure(struct auth *a, const char *key, uint64_t now) {
        if (a->max_failed_attempts == 0)
                return false;
        struct failure *f = strmap_get(a->failures, key);
        if (!f) {
                f = calloc(1, sizeof *f);
                if (!f || strmap_put(a->failures, key, f) < 0) {
                        free(f);
                        return false;
                }
                f->window_start = now;
        }
        if (now - f->window_start >= a->failed_window_ms) {
                f->window_start = now;
                f->count = 0;
        }
        if (++f->count < a->max_failed_attempts || f->banned_until > now)
                return false;
        f->banned_until = now + a->ban_ms;
        f->count = 0;
        f->window_start = now;
        return true;
}

static bool drop_idle_failure(const char *key, void *value, void *userdata) {
        struct auth *a = userdata;
        struct failure *f = value;
        uint64_t now = now_msec();
        return f->banned_until <= now && now - f->window_start >= a->failed_window_ms;
}

struct nonce_state {
        uint64_t nc;
        uint64_t issued;
};

static bool drop_old_nonce(const char *key, void *value, void *userdata) {
        struct auth *a = userdata;
        struct nonce_state *n = value;
        return now_msec() - n->issued >= a->nonce_expires_ms;
}

static void on_cleanup_timer(struct loop_timer *t, void *userdata) {
        struct auth *a = userdata;
        strmap_foreach(a->failures, drop_idle_failure, a);
        strmap_foreach(a->nonces, drop_old_nonce, a);
        loop_timer_arm(t, CLEANUP_INTERVAL_MS);
}

/* ---- one request ---- */

struct auth_op {
        struct auth *auth;
        struct proxy_request *req;
        const char *user, *domain; /* the identity, on the message's home */
        const char *realm;
        char source[IP_ADDR_STRLEN];
        bool has_source;
        bool stale;
        const msg_auth_t *cred; /* our realm's credentials, or NULL: challenge */
        auth_response_t ar;
        enum digest_algorithm algo;
        uint64_t nc;
};

static bool is_register(const struct proxy_request *req) {
        return req->sip->sip_request->rq_method == sip_method_register;
}

static void challenge(struct auth_op *op, const struct account_secret *secret) {
        struct auth *a = op->auth;
        struct proxy_request *req = op->req;
        su_home_t *home = msg_home(req->msg);
        char nonce[DIGEST_NONCE_LEN + 1];
        uint64_t now = now_msec();
        bool reg = is_register(req);

        if (digest_nonce_make(&a->key, op->realm, now, nonce) < 0) {
                proxy_request_reply(req, SIP_500_INTERNAL_SERVER_ERROR, TAG_END());
                return;
        }
        struct nonce_state *ns = calloc(1, sizeof *ns);
        if (!ns || strmap_put(a->nonces, nonce, ns) < 0) {
                free(ns);
                proxy_request_reply(req, SIP_500_INTERNAL_SERVER_ERROR, TAG_END());
                return;
        }
        ns->issued = now;
        char *headers = NULL;
        for (size_t i = 0; i < a->n_algos; i++) {
                enum digest_algorithm alg = a->algos[i];
                if (secret && !account_secret_has(secret, alg))
                        continue;
                char *one = su_sprintf(home,
                                       "%s: Digest realm=\"%s\", nonce=\"%s\", algorithm=%s, "
                                       "qop=\"auth\"%s",
                                       reg ? "WWW-Authenticate" : "Proxy-Authenticate",
                                       op->realm, nonce, digest_algorithm_name(alg),
                                       op->stale ? ", stale=true" : "");
                headers = headers ? su_sprintf(home, "%s\r\n%s", headers, one) : one;
        }
        if (!headers) {
                /* The account has no secret for any algorithm we offer. */
                log_info("Account '%s@%s' has no password for the configured algorithms.",
                         op->user, op->domain);
                proxy_request_reply(req, 403, "Forbidden", TAG_END());
                return;
        }
        stats_inc(a->count_challenges);
        if (reg)
                proxy_request_reply(req, SIP_401_UNAUTHORIZED, SIPTAG_HEADER_STR(headers),
                                    TAG_END());
        else
                proxy_request_reply(req, SIP_407_PROXY_AUTH_REQUIRED, SIPTAG_HEADER_STR(headers),
                                    TAG_END());
}

static void fail(struct auth_op *op, const char *why) {
        struct auth *a = op->auth;
        uint64_t now = now_msec();
        char key[1024];
        stats_inc(a->count_auth_failed);
        log_info("Authentication of '%s@%s' from %s failed: %s.", op->user, op->domain,
                 op->has_source ? op->source : "?", why);
        snprintf(key, sizeof key, "account %s@%s", op->user, op->domain);
        if (note_failure(a, key, now))
                log_warning("Too many failed authentications for account '%s@%s' (last from "
                            "%s): refusing it for %" PRIu64 "s.",
                            op->user, op->domain, op->has_source ? op->source : "?",
                            a->ban_ms / 1000);
        if (op->has_source) {
                snprintf(key, sizeof key, "source %s", op->source);
                if (note_failure(a, key, now))
                        log_warning("Too many failed authentications from %s (last for account "
                                    "'%s@%s'): refusing it for %" PRIu64 "s.",
                                    op->source, op->user, op->domain, a->ban_ms / 1000);
        }
        proxy_request_reply(op->req, 403, "Forbidden", TAG_END());
}

/* Removes the credentials for our realm (they mean nothing further on). */
static void remove_credentials(struct auth_op *op) {
        msg_t *msg = op->req->msg;
        sip_t *sip = op->req->sip;
        msg_auth_t **head = is_register(op->req) ? &sip->sip_authorization
                                                 : &sip->sip_proxy_authorization;
        for (msg_auth_t *au = *head, *next; au; au = next) {
                next = au->au_next;
                const char *realm = msg_params_find(au->au_params, "realm=");
                char *unq = realm ? msg_unquote_dup(msg_home(msg), realm) : NULL;
                if (unq && streq(unq, op->realm))
                        msg_header_remove(msg, (msg_pub_t *)sip, (msg_header_t *)au);
        }
}

/* With the account (or NULL): challenge, verify. CONTINUE when authenticated. */
static enum module_result decide(struct auth_op *op, const struct account_secret *secret) {
        struct auth *a = op->auth;
        stats_inc(secret ? a->count_password_found : a->count_password_not_found);
        if (!op->cred) {
                challenge(op, secret);
                return MODULE_STOP;
        }
        if (!secret) {
                fail(op, "unknown account or user name");
                return MODULE_STOP;
        }
        if (!account_secret_has(secret, op->algo)) {
                challenge(op, secret);
                return MODULE_STOP;
        }
        char ha1[DIGEST_HEX_MAX], expected[DIGEST_HEX_MAX];
        const auth_response_t *ar = &op->ar;
        if (account_secret_ha1(secret, op->algo, op->realm, ha1) < 0 ||
            digest_response(op->algo, ha1, ar->ar_nonce, ar->ar_nc, ar->ar_cnonce, "auth",
                            op->req->sip->sip_request->rq_method_name, ar->ar_uri,
                            expected) < 0) {
                proxy_request_reply(op->req, SIP_500_INTERNAL_SERVER_ERROR, TAG_END());
                return MODULE_STOP;
        }
        explicit_bzero(ha1, sizeof ha1);
        if (!digest_equal(expected, ar->ar_response)) {
                fail(op, "wrong password");
                return MODULE_STOP;
        }
        /* Checked again now: another request may have used this count meanwhile. */
        struct nonce_state *ns = strmap_get(a->nonces, ar->ar_nonce);
        if (!ns || op->nc <= ns->nc) {
                stats_inc(a->count_replayed);
                log_info("Replayed credentials of '%s@%s' from %s: challenging again.", op->user,
                         op->domain, op->has_source ? op->source : "?");
                op->cred = NULL;
                challenge(op, secret);
                return MODULE_STOP;
        }
        ns->nc = op->nc;
        log_debug("'%s@%s' authenticated (%s).", op->user, op->domain,
                  digest_algorithm_name(op->algo));
        remove_credentials(op);
        return MODULE_CONTINUE;
}

static void on_lookup(int error, const struct account_secret *secret, void *userdata) {
        struct auth_op *op = userdata;
        struct proxy_request *req = op->req;
        enum module_result r;
        log_set_sip_context(&req->log_ctx);
        if (error < 0) {
                if (error != -ECANCELED)
                        log_warning_errno(error, "Account lookup of '%s@%s' failed: %m", op->user,
                                          op->domain);
                proxy_request_reply(req, SIP_503_SERVICE_UNAVAILABLE, SIPTAG_RETRY_AFTER_STR("5"),
                                    TAG_END());
                r = MODULE_STOP;
        } else
                r = decide(op, secret);
        free(op);
        proxy_request_resume(req, r);
}

static bool domain_allowed(struct auth *a, const char *domain) {
        STRV_FOREACH(d, a->auth_domains)
                if (streq(*d, "*") || strcaseeq(*d, domain))
                        return true;
        return false;
}

static bool trusted(struct auth *a, const struct ip_addr *src) {
        for (size_t i = 0; i < a->n_trusted; i++)
                if (ip_prefix_contains(&a->trusted[i], src))
                        return true;
        return false;
}

/* The identity being asserted: P-Preferred-Identity when present, else From. */
static const url_t *identity_of(su_home_t *home, const sip_t *sip) {
        for (const sip_unknown_t *u = sip->sip_unknown; u; u = u->un_next)
                if (u->un_name && strcaseeq(u->un_name, "P-Preferred-Identity") && u->un_value) {
                        sip_from_t *f = sip_from_make(home, u->un_value);
                        if (f && f->a_url->url_host)
                                return f->a_url;
                }
        return sip->sip_from ? sip->sip_from->a_url : NULL;
}

static bool subject_names(const char *subject, const char *user, const char *domain) {
        const char *s = subject;
        if (strncasecmp(s, "sips:", 5) == 0)
                s += 5;
        else if (strncasecmp(s, "sip:", 4) == 0)
                s += 4;
        size_t ul = strlen(user);
        return strncmp(s, user, ul) == 0 && s[ul] == '@' && strcaseeq(s + ul + 1, domain);
}

/* 1: a verified client certificate names the identity; 0: no usable certificate; -EPERM: a
 * verified certificate that names someone else (or fails the required subject). */
static int check_client_certificate(struct auth *a, struct proxy_request *req, const char *user,
                                    const char *domain) {
        if (!req->irq)
                return 0;
        tport_t *tp = nta_incoming_transport(req->proxy->agent, req->irq, req->msg);
        int r = 0;
        if (!tp)
                return 0;
        if (tport_has_tls(tp) && tport_is_verified(tp)) {
                su_strlst_t const *subjects = tport_delivered_from_subjects(tp, req->msg);
                bool named = false, required = !a->has_subject_re;
                for (usize_t i = 0; subjects && i < su_strlst_len(subjects); i++) {
                        const char *s = su_strlst_item(subjects, i);
                        if (!s)
                                continue;
                        named = named || subject_names(s, user, domain);
                        required = required || regexec(&a->subject_re, s, 0, NULL, 0) == 0;
                }
                r = named && required ? 1 : subjects ? -EPERM : 0;
        }
        tport_unref(tp);
        return r;
}

/* Our realm's credentials among the request's, or NULL. */
static const msg_auth_t *find_credentials(const struct proxy_request *req, const char *realm) {
        const sip_t *sip = req->sip;
        const msg_auth_t *au = is_register(req) ? sip->sip_authorization
                                                : sip->sip_proxy_authorization;
        for (; au; au = au->au_next) {
                if (!au->au_scheme || !strcaseeq(au->au_scheme, "Digest"))
                        continue;
                const char *r = msg_params_find(au->au_params, "realm=");
                if (!r)
                        continue;
                size_t n = strlen(realm);
                if (r[0] == '"' ? strncmp(r + 1, realm, n) == 0 && r[n + 1] == '"' && !r[n + 2]
                                : streq(r, realm))
                        return au;
        }
        return NULL;
}

static enum module_result auth_request(struct module *m, struct proxy_request *req) {
        struct auth *a = m->state;
        const sip_t *sip = req->sip;
        su_home_t *home = msg_home(req->msg);
        sip_method_t method = sip->sip_request->rq_method;
        uint64_t now = now_msec();
        struct auth_op op = {.auth = a, .req = req};
        char key[1024];
        int r;

        if (req->branch || method == sip_method_ack || method == sip_method_cancel ||
            method == sip_method_bye)
                return MODULE_CONTINUE;
        /* The other proxies of the cluster and the presence server are trusted like
         * trusted-hosts. */
        if (cluster_msg_from_node(req->proxy, req->msg) ||
            proxy_presence_is_server(req->proxy, req->msg))
                return MODULE_CONTINUE;

        su_addrinfo_t *ai = msg_addrinfo(req->msg);
        struct ip_addr src;
        if (ai && ai->ai_addr &&
            ip_addr_from_sockaddr(ai->ai_addr, (socklen_t)ai->ai_addrlen, &src) >= 0) {
                if (trusted(a, &src))
                        return MODULE_CONTINUE;
                ip_addr_format(&src, op.source);
                op.has_source = true;
        }

        const url_t *id = identity_of(home, sip);
        if (!id || !id->url_host) {
                proxy_request_reply(req, 403, "Forbidden", TAG_END());
                return MODULE_STOP;
        }
        op.user = id->url_user ? id->url_user : "";
        op.domain = id->url_host;
        if (!domain_allowed(a, op.domain)) {
                stats_inc(a->count_domain_forbidden);
                log_info("Request from '%s@%s' refused: domain not served.", op.user, op.domain);
                proxy_request_reply(req, 403, "Domain forbidden", TAG_END());
                return MODULE_STOP;
        }

        snprintf(key, sizeof key, "account %s@%s", op.user, op.domain);
        bool banned = is_banned(a, key, now);
        if (!banned && op.has_source) {
                snprintf(key, sizeof key, "source %s", op.source);
                banned = is_banned(a, key, now);
        }
        if (banned) {
                stats_inc(a->count_auth_banned);
                proxy_request_reply(req, 403, "Too many failed attempts", TAG_END());
                return MODULE_STOP;
        }

        r = check_client_certificate(a, req, op.user, op.domain);
        if (r > 0) {
                stats_inc(a->count_tls_client);
                log_debug("'%s@%s' authenticated by its TLS client certificate.", op.user,
                          op.domain);
                return MODULE_CONTINUE;
        }
        if (r == -EPERM && a->reject_wrong_client_certificates) {
                log_info("TLS client certificate does not name '%s@%s': 403.", op.user,
                         op.domain);
                proxy_request_reply(req, 403, "Wrong client certificate", TAG_END());
                return MODULE_STOP;
        }

        op.realm = a->realm ? a->realm : op.domain;
        op.cred = find_credentials(req, op.realm);
        const char *authid = NULL;
        if (op.cred) {
                op.ar.ar_size = sizeof op.ar;
                const auth_response_t *ar = &op.ar;
                if (auth_digest_response_get(home, &op.ar, op.cred->au_params) < 0 ||
                    !ar->ar_username || !ar->ar_nonce || !ar->ar_uri || !ar->ar_response ||
                    !ar->ar_qop || !ar->ar_cnonce || !ar->ar_nc) {
                        proxy_request_reply(req, 400, "Bad credentials", TAG_END());
                        return MODULE_STOP;
                }
                r = ar->ar_algorithm ? digest_algorithm_from_name(ar->ar_algorithm) : DIGEST_MD5;
                bool offered = false;
                for (size_t i = 0; r >= 0 && i < a->n_algos; i++)
                        offered = offered || a->algos[i] == (enum digest_algorithm)r;
                char *end = NULL;
                uint64_t nc = strtoull(ar->ar_nc, &end, 16);
                if (!offered || !ar->ar_auth || !end || *end || strlen(ar->ar_nc) != 8) {
                        proxy_request_reply(req, 400, "Unsupported credentials", TAG_END());
                        return MODULE_STOP;
                }
                /* RFC 7616 §3.4.6: the credentials are for this request's URI. Some clients
                 * (SIPp) name the server they send to instead: this proxy is accepted too. */
                url_t *digest_uri = url_make(home, ar->ar_uri);
                if (!digest_uri || (url_cmp(digest_uri, sip->sip_request->rq_url) != 0 &&
                                    !proxy_is_us(req->proxy, digest_uri))) {
                        proxy_request_reply(req, 400, "Credentials for another URI", TAG_END());
                        return MODULE_STOP;
                }
                op.algo = r;
                op.nc = nc;
                authid = ar->ar_username;
                r = digest_nonce_check(&a->key, op.realm, ar->ar_nonce, now, a->nonce_expires_ms);
                struct nonce_state *ns = r == 0 ? strmap_peek(a->nonces, ar->ar_nonce) : NULL;
                if (r == -EINVAL) {
                        /* Not ours: forged, or made before a restart. A fresh challenge. */
                        op.cred = NULL;
                } else if (r == -ESTALE || !ns) {
                        stats_inc(a->count_stale);
                        op.cred = NULL;
                        op.stale = true;
                } else if (nc <= ns->nc) {
                        stats_inc(a->count_replayed);
                        log_info("Replayed credentials of '%s@%s' from %s: challenging again.",
                                 op.user, op.domain, op.has_source ? op.source : "?");
                        op.cred = NULL;
                }
        }

        const struct account_secret *cached = NULL;
        r = account_store_cached(a->store, op.user, op.domain, authid, &cached);
        if (r > 0)
                return decide(&op, cached);

        struct auth_op *heap = malloc(sizeof *heap);
        if (!heap) {
                proxy_request_reply(req, SIP_500_INTERNAL_SERVER_ERROR, TAG_END());
                return MODULE_STOP;
        }
        *heap = op;
        proxy_request_trying(req);
        r = account_store_lookup(a->store, op.user, op.domain, authid, on_lookup, heap);
        if (r < 0) {
                free(heap);
                log_warning_errno(r, "Account lookup of '%s@%s' not started: %m", op.user,
                                  op.domain);
                proxy_request_reply(req, SIP_503_SERVICE_UNAVAILABLE, SIPTAG_RETRY_AFTER_STR("5"),
                                    TAG_END());
                return MODULE_STOP;
        }
        return MODULE_SUSPEND;
}

/* ---- control socket ---- */

static int cli_command(struct ctl_request *req, int argc, char **argv, void *userdata) {
        struct auth *a = userdata;
        if (streq(argv[0], "AUTH_CACHE_LIST")) {
                if (argc > 2) {
                        ctl_reply_error(req, "Usage: AUTH_CACHE_LIST [domain]");
                        return 0;
                }
                json_t *list = account_store_cache_list(a->store, argc == 2 ? argv[1] : NULL);
                if (!list)
                        return -ENOMEM;
                ctl_reply(req, json_pack("{s:o}", "entries", list));
                return 0;
        }
        if (argc < 3 || argc > 4) {
                ctl_reply_error(req, "Usage: %s <user> <domain> [auth-user]", argv[0]);
                return 0;
        }
        const char *authid = argc == 4 ? argv[3] : NULL;
        if (streq(argv[0], "AUTH_CACHE_GET")) {
                json_t *e = account_store_cache_get(a->store, argv[1], argv[2], authid);
                if (!e) {
                        ctl_reply_error(req, "'%s@%s' is not in the cache", argv[1], argv[2]);
                        return 0;
                }
                ctl_reply(req, e);
                return 0;
        }
        size_t n = account_store_cache_delete(a->store, argv[1], argv[2], authid);
        ctl_reply(req, json_pack("{s:I}", "deleted", (json_int_t)n));
        return 0;
}

/* ---- module ---- */

static int auth_init(struct module *m) {
        struct auth *a = m->state;
        struct proxy *p = m->proxy;
        struct stats *st = proxy_stats(p);
        int r;
        a->module = m;

        STRV_FOREACH(s, a->available_algorithms) {
                r = digest_algorithm_from_name(*s);
                if (r < 0)
                        return log_error_errno(EINVAL,
                                               "[" SECTION "] available-algorithms: unknown "
                                               "algorithm '%s' (MD5, SHA-256).",
                                               *s);
        }
        /* SHA-256 first (RFC 8760 §2.4: the preferred one first). */
        for (int alg = _DIGEST_MAX - 1; alg >= 0; alg--)
                STRV_FOREACH(s, a->available_algorithms)
                        if (digest_algorithm_from_name(*s) == alg) {
                                a->algos[a->n_algos++] = alg;
                                break;
                        }
        if (a->n_algos == 0)
                return log_error_errno(EINVAL, "[" SECTION "] available-algorithms is empty.");
        STRV_FOREACH(h, a->trusted_hosts) {
                struct ip_prefix *n = realloc(a->trusted, (a->n_trusted + 1) * sizeof *n);
                if (!n)
                        return log_oom();
                a->trusted = n;
                if (ip_prefix_parse(*h, &a->trusted[a->n_trusted]) < 0)
                        return log_error_errno(EINVAL,
                                               "[" SECTION "] trusted-hosts: '%s' is not an "
                                               "IP address or prefix.",
                                               *h);
                a->n_trusted++;
        }
        if (a->required_subject) {
                r = regcomp(&a->subject_re, a->required_subject, REG_EXTENDED | REG_NOSUB);
                if (r != 0)
                        return log_error_errno(EINVAL,
                                               "[" SECTION "] tls-client-certificate-required-"
                                               "subject: bad regular expression '%s'.",
                                               a->required_subject);
                a->has_subject_re = true;
        }
        if (a->nonce_expires_ms < 1000)
                return log_error_errno(EINVAL, "[" SECTION "] nonce-expires must be at least 1s.");
        if (a->max_failed_attempts > 0 && (a->failed_window_ms == 0 || a->ban_ms == 0))
                return log_error_errno(EINVAL, "[" SECTION "] failed-attempts-window and ban-time "
                                               "must not be 0 when max-failed-attempts is set.");
        if (digest_nonce_key_init(&a->key) < 0)
                return log_error_errno(EIO, "Failed to make the nonce key.");
        if ((r = strmap_new((size_t)a->max_nonces, free, &a->nonces)) < 0 ||
            (r = strmap_new((size_t)a->max_tracked, free, &a->failures)) < 0)
                return log_oom();

        r = account_store_open_config(daemon_loop(p->daemon), SECTION, &a->accounts, &a->store);
        if (r < 0)
                return r;

        a->count_password_found = stats_declare(st, m->desc->section, "count-password-found",
                                                "Account lookups that found the account");
        a->count_password_not_found =
                stats_declare(st, m->desc->section, "count-password-not-found",
                              "Account lookups that found no account");
        a->count_auth_failed = stats_declare(st, m->desc->section, "count-auth-failed",
                                             "Requests refused for wrong credentials (403)");
        a->count_auth_banned =
                stats_declare(st, m->desc->section, "count-auth-banned",
                              "Requests refused because their source or account is banned");
        a->count_challenges = stats_declare(st, m->desc->section, "count-challenges",
                                            "401 and 407 challenges sent");
        a->count_stale = stats_declare(st, m->desc->section, "count-stale-nonces",
                                       "Credentials with an expired or forgotten nonce");
        a->count_replayed = stats_declare(st, m->desc->section, "count-replayed",
                                          "Credentials refused because their nonce count was "
                                          "already used");
        a->count_tls_client = stats_declare(st, m->desc->section, "count-tls-client-certificate",
                                            "Requests authenticated by a TLS client certificate");
        a->count_domain_forbidden = stats_declare(st, m->desc->section,
                                                  "count-domain-forbidden",
                                                  "Requests refused because their identity is "
                                                  "in a domain not in auth-domains");

        struct ctl *ctl = daemon_ctl(p->daemon);
        if (ctl) {
                static const struct {
                        const char *name, *usage;
                } commands[] = {
                        {"AUTH_CACHE_LIST", "AUTH_CACHE_LIST [domain]: cached accounts"},
                        {"AUTH_CACHE_GET",
                         "AUTH_CACHE_GET <user> <domain> [auth-user]: one cached account"},
                        {"AUTH_CACHE_DELETE",
                         "AUTH_CACHE_DELETE <user> <domain> [auth-user]: forget a cached account"},
                };
                for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                        if ((r = ctl_register(ctl, commands[i].name, commands[i].usage,
                                              cli_command, a)) < 0)
                                return log_error_errno(r, "Failed to register %s: %m",
                                                       commands[i].name);
        }
        r = loop_timer_new(daemon_loop(p->daemon), on_cleanup_timer, a, &a->cleanup_timer);
        if (r >= 0)
                r = loop_timer_arm(a->cleanup_timer, CLEANUP_INTERVAL_MS);
        if (r < 0)
                return log_error_errno(r, "Failed to start the cleanup timer: %m");
        return 0;
}

static void auth_reload(struct module *m) {
        struct auth *a = m->state;
        if (a->store)
                (void)account_store_reload(a->store);
}

static void auth_done(struct module *m) {
        struct auth *a = m->state;
        account_store_free(a->store);
        a->store = NULL;
        loop_timer_free(a->cleanup_timer);
        strmap_free(a->nonces);
        strmap_free(a->failures);
        free(a->trusted);
        if (a->has_subject_re)
                regfree(&a->subject_re);
        explicit_bzero(&a->key, sizeof a->key);
}

const struct module_desc module_auth = {
        .name = "Authentication",
        .section = SECTION,
        .doc = "Digest authentication (MD5, SHA-256) against a password file, an SQLite or a "
               "MariaDB/MySQL database, TLS client certificates, trusted hosts and brute-force "
               "bans.",
        .default_enabled = false,
        .state_size = sizeof(struct auth),
        .rows = auth_rows,
        .n_rows = ELEMENTSOF(auth_rows),
        .init = auth_init,
        .on_request = auth_request,
        .reload = auth_reload,
        .done = auth_done,
};
