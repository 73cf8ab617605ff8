/* SPDX-License-Identifier: MIT */
/* [module::Authentication] in the built proxy: SIPp (MD5, the only algorithm Debian's SIPp
 * knows) and test/integration/sip-digest.py (SHA-256, replays, stale nonces, TLS client
 * certificates) against a password file or an SQLite database made by the test. Each test
 * starts its own proxy: bans and nonces do not carry over. */
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "digest.h"
#include "macro.h"
#include "testlib-mariadb.h"
#include "testlib.h"

static struct tl_proxy proxy;
static char remote[64];
static char *passwd;

/* sam, mallory, callee: MD5 hashes only, so that SIPp gets one challenge it can answer. */
static void write_passwords(const char *extra) {
        char sam[DIGEST_HEX_MAX], mallory[DIGEST_HEX_MAX], callee[DIGEST_HEX_MAX],
                sha[DIGEST_HEX_MAX];
        ck_assert_int_eq(digest_ha1(DIGEST_MD5, "sam", "example.org", "sampw", sam), 0);
        ck_assert_int_eq(digest_ha1(DIGEST_MD5, "mallory", "example.org", "mallorypw", mallory),
                         0);
        ck_assert_int_eq(digest_ha1(DIGEST_MD5, "callee", "example.org", "calleepw", callee), 0);
        ck_assert_int_eq(digest_ha1(DIGEST_SHA256, "shaonly", "example.org", "shapw", sha), 0);
        _cleanup_free_ char *text = NULL;
        ck_assert_int_ge(asprintf(&text,
                                  "version:1\n"
                                  "alice@example.org clrtxt:alicepw ;\n"
                                  "bob@example.org clrtxt:bobpw ;\n"
                                  "dave@example.org clrtxt:davepw ;\n"
                                  "this line is broken\n"
                                  "sam@example.org md5:%s ;\n"
                                  "mallory@example.org md5:%s ;\n"
                                  "callee@example.org md5:%s ;\n"
                                  "shaonly@example.org sha256:%s ;\n%s",
                                  sam, mallory, callee, sha, extra ? extra : ""),
                         0);
        free(passwd);
        passwd = tl_write_file("passwd", text);
}

static void start(const char *auth_extra) {
        if (!passwd)
                write_passwords(NULL);
        _cleanup_free_ char *conf = NULL;
        ck_assert_int_ge(asprintf(&conf,
                                  "log-level=debug\n"
                                  "[module::Registrar]\n"
                                  "reg-domains=example.org\n"
                                  "db-implementation=internal\n"
                                  "[module::Authentication]\n"
                                  "enabled=true\n"
                                  "auth-domains=example.org\n"
                                  "available-algorithms=MD5 SHA-256\n"
                                  "file-path=%s\n%s",
                                  passwd, auth_extra ? auth_extra : ""),
                         0);
        tl_proxy_start(&proxy, conf);
        snprintf(remote, sizeof remote, "127.0.0.1:%d", proxy.port);
}

static void setup(void) {
        proxy = (struct tl_proxy){0};
}

static void teardown(void) {
        tl_proxy_done(&proxy);
        free(passwd);
        passwd = NULL;
}

/* SIPp: scenario, -s service, -au/-ap credentials; returns the status. */
static int sipp(const char *scenario, const char *service, const char *user, const char *pw) {
        const char *args[] = {remote, "-m", "1", "-s", service, "-au", user, "-ap", pw, NULL};
        struct tl_proc p;
        tl_sipp_spawn(&p, "sipp", scenario, 0, args);
        return tl_sipp_wait(&p, "sipp", 30000);
}

/* sip-digest.py with the proxy address, then args. */
static int client_at(const char *addr, const char *const *args) {
        _cleanup_free_ char *script = tl_source_path("test/integration/sip-digest.py");
        const char *argv[40] = {"/usr/bin/python3", script, args[0], "--proxy", addr};
        size_t n = 5;
        for (size_t i = 1; args[i]; i++) {
                ck_assert_uint_lt(n + 1, ELEMENTSOF(argv));
                argv[n++] = args[i];
        }
        argv[n] = NULL;
        struct tl_proc p;
        tl_spawn("client", (char *const *)argv, &p);
        int status = tl_wait(&p, 30000);
        if (status == -ETIMEDOUT) {
                tl_kill(&p, SIGKILL);
                tl_wait(&p, 5000);
        }
        _cleanup_free_ char *log = tl_log(&p);
        if (status != 0)
                fprintf(stderr, "sip-digest.py %s: status %d\n%s\n", args[0], status, log);
        free(p.log);
        return status;
}

#define CLIENT(...) client_at(remote, (const char *const[]){__VA_ARGS__, NULL})

static long long counter(const char *name) {
        _cleanup_free_ char *path = NULL;
        ck_assert_int_ge(asprintf(&path, "module::Authentication/%s", name), 0);
        return tl_counter(proxy.sock, path);
}

static size_t count_in_log(const char *needle) {
        _cleanup_free_ char *log = tl_log(&proxy.proc);
        size_t n = 0;
        for (const char *p = strstr(log, needle); p; p = strstr(p + 1, needle))
                n++;
        return n;
}

START_TEST(test_auth_register_md5_sipp) {
        start(NULL);
        ck_assert_int_eq(sipp("test/sipp/auth-register-200.xml", "sam", "sam", "sampw"), 0);
        ck_assert_int_eq(counter("count-password-found"), 2);
        ck_assert_int_eq(counter("count-challenges"), 1);
        /* The broken line of the password file was reported with its line number. */
        _cleanup_free_ char *where = NULL;
        ck_assert_int_ge(asprintf(&where, "%s:5: ", passwd), 0);
        ck_assert_uint_eq(count_in_log(where), 1);
        json_t *rec = tl_ctl(proxy.sock, "REGISTRAR_GET sip:sam@example.org");
        ck_assert_uint_eq(json_array_size(json_object_get(rec, "contacts")), 1);
        json_decref(rec);
}
END_TEST

START_TEST(test_auth_wrong_password_sipp) {
        start(NULL);
        ck_assert_int_eq(sipp("test/sipp/auth-register-403.xml", "sam", "sam", "nope"), 0);
        ck_assert_int_eq(counter("count-auth-failed"), 1);
}
END_TEST

START_TEST(test_auth_spoofing_sipp) {
        start(NULL);
        /* Authenticated as sam, but From mallory: 403. */
        ck_assert_int_eq(sipp("test/sipp/auth-register-403.xml", "mallory", "sam", "sampw"), 0);
        /* The same with SHA-256: alice's credentials, From bob. */
        ck_assert_int_eq(CLIENT("register", "--user", "bob", "--auth-user", "alice",
                                "--password", "alicepw", "--algorithm", "SHA-256", "--expect",
                                "403"),
                         0);
        json_t *rec = tl_ctl(proxy.sock, "REGISTRAR_GET sip:bob@example.org");
        ck_assert_uint_eq(json_array_size(json_object_get(rec, "contacts")), 0);
        json_decref(rec);
}
END_TEST

START_TEST(test_auth_register_sha256_and_md5) {
        start(NULL);
        /* A clear-text account: both algorithms offered, SHA-256 first. */
        ck_assert_int_eq(CLIENT("register", "--user", "alice", "--password", "alicepw",
                                "--algorithm", "SHA-256", "--expect-algorithms", "SHA-256,MD5",
                                "--expect-realm", "example.org"),
                         0);
        ck_assert_int_eq(CLIENT("register", "--user", "alice", "--password", "alicepw",
                                "--algorithm", "MD5", "--expect-algorithms", "SHA-256,MD5"),
                         0);
        /* An account with only a SHA-256 hash is offered only SHA-256. */
        ck_assert_int_eq(CLIENT("register", "--user", "shaonly", "--password", "shapw",
                                "--expect-algorithms", "SHA-256"),
                         0);
        ck_assert_int_eq(CLIENT("register", "--user", "shaonly", "--password", "wrong",
                                "--expect-algorithms", "SHA-256", "--expect", "403"),
                         0);
}
END_TEST

START_TEST(test_auth_realm) {
        start("realm=sipfleet.test\n");
        /* A clear-text password works in any realm. */
        ck_assert_int_eq(CLIENT("register", "--user", "alice", "--password", "alicepw",
                                "--algorithm", "SHA-256", "--expect-realm", "sipfleet.test"),
                         0);
        /* A stored HA1 was computed for realm example.org: it cannot match here. */
        ck_assert_int_eq(CLIENT("register", "--user", "sam", "--password", "sampw",
                                "--expect-realm", "sipfleet.test", "--expect", "403"),
                         0);
}
END_TEST

START_TEST(test_auth_unknown_user) {
        start(NULL);
        /* Challenged like anyone (every algorithm: no account enumeration), then 403. */
        ck_assert_int_eq(CLIENT("register", "--user", "nobody", "--password", "x",
                                "--expect-algorithms", "SHA-256,MD5", "--expect", "403"),
                         0);
        ck_assert_int_ge(counter("count-password-not-found"), 1);
        ck_assert_int_eq(counter("count-auth-failed"), 1);
}
END_TEST

START_TEST(test_auth_invite_md5_sipp) {
        start(NULL);
        int port = tl_free_port();
        {
                const char *args[] = {remote, "-m", "1", "-s", "callee", "-au", "callee",
                                      "-ap", "calleepw", NULL};
                struct tl_proc p;
                tl_sipp_spawn(&p, "register", "test/sipp/auth-register-200.xml", port, args);
                ck_assert_int_eq(tl_sipp_wait(&p, "register", 30000), 0);
        }
        const char *args[] = {remote, "-m", "1", "-s", "callee", NULL};
        struct tl_proc callee;
        tl_sipp_spawn(&callee, "callee", "test/sipp/auth-uas-answer.xml", port, args);
        /* The UAS binds its port quickly; the caller's INVITE is retransmitted anyway. */
        ck_assert_int_eq(sipp("test/sipp/auth-uac-call.xml", "sam", "sam", "sampw"), 0);
        ck_assert_int_eq(tl_sipp_wait(&callee, "callee", 30000), 0);
}
END_TEST

START_TEST(test_auth_invite_sha256) {
        start(NULL);
        /* Nobody registered as callee: 404 from the Router, after authentication. */
        ck_assert_int_eq(CLIENT("invite", "--method", "INVITE", "--user", "alice", "--password",
                                "alicepw", "--algorithm", "SHA-256", "--expect-algorithms",
                                "SHA-256,MD5", "--expect", "404"),
                         0);
        ck_assert_int_eq(CLIENT("invite", "--method", "INVITE", "--user", "alice", "--password",
                                "bad", "--algorithm", "SHA-256", "--expect", "403"),
                         0);
        /* Right password, but computed for another Request-URI. */
        ck_assert_int_eq(CLIENT("invite", "--method", "INVITE", "--user", "alice", "--password",
                                "alicepw", "--digest-uri", "sip:someone-else@example.org",
                                "--expect", "400"),
                         0);
        ck_assert_int_eq(counter("count-auth-failed"), 1);
}
END_TEST

START_TEST(test_auth_preferred_identity) {
        start(NULL);
        /* The identity is the P-Preferred-Identity: alice's credentials, From bob, PPI alice. */
        ck_assert_int_eq(CLIENT("invite", "--method", "INVITE", "--user", "bob", "--auth-user",
                                "alice", "--password", "alicepw", "--header",
                                "P-Preferred-Identity: <sip:alice@example.org>", "--expect",
                                "404"),
                         0);
        /* ... and bob's credentials do not make him alice. */
        ck_assert_int_eq(CLIENT("invite", "--method", "INVITE", "--user", "bob", "--password",
                                "bobpw", "--header",
                                "P-Preferred-Identity: <sip:alice@example.org>", "--expect",
                                "403"),
                         0);
        /* A preferred identity in a foreign domain. */
        ck_assert_int_eq(CLIENT("plain", "--method", "INVITE", "--user", "bob", "--header",
                                "P-Preferred-Identity: <sip:x@other.example>", "--expect",
                                "403"),
                         0);
        ck_assert_int_eq(counter("count-domain-forbidden"), 1);
}
END_TEST

START_TEST(test_auth_replayed_nonce) {
        start(NULL);
        ck_assert_int_eq(CLIENT("replay", "--user", "alice", "--password", "alicepw",
                                "--algorithm", "SHA-256"),
                         0);
        ck_assert_int_eq(counter("count-replayed"), 1);
        /* A retransmission is not a replay. */
        ck_assert_int_eq(CLIENT("retransmit", "--user", "alice", "--password", "alicepw"), 0);
        ck_assert_int_eq(counter("count-replayed"), 1);
        ck_assert_int_eq(CLIENT("replay", "--method", "INVITE", "--user", "alice", "--password",
                                "alicepw", "--expect", "404"),
                         0);
}
END_TEST

START_TEST(test_auth_stale_nonce) {
        start("nonce-expires=1s\n");
        ck_assert_int_eq(CLIENT("stale", "--user", "alice", "--password", "alicepw", "--wait",
                                "1.5", "--algorithm", "SHA-256"),
                         0);
        ck_assert_int_eq(counter("count-stale-nonces"), 1);
}
END_TEST

START_TEST(test_auth_foreign_relay_refused) {
        start(NULL);
        ck_assert_int_eq(sipp("test/sipp/auth-uac-foreign.xml", "x", "x", "x"), 0);
        ck_assert_int_eq(counter("count-domain-forbidden"), 1);
        /* Unauthenticated from our own domain towards another one: challenged, not relayed. */
        ck_assert_int_eq(CLIENT("plain", "--method", "MESSAGE", "--user", "alice", "--expect",
                                "407"),
                         0);
}
END_TEST

START_TEST(test_auth_trusted_host) {
        start("trusted-hosts=10.0.0.0/8 127.0.0.1\n");
        ck_assert_int_eq(CLIENT("plain", "--user", "anyone", "--expect", "200"), 0);
        ck_assert_int_eq(counter("count-challenges"), 0);
}
END_TEST

START_TEST(test_auth_brute_force_ban) {
        start("max-failed-attempts=3\nfailed-attempts-window=60s\nban-time=60s\n");
        for (int i = 0; i < 3; i++)
                ck_assert_int_eq(CLIENT("register", "--user", "dave", "--password", "guess",
                                        "--expect", "403"),
                                 0);
        /* Banned now: the right password does not help, and no challenge is sent. */
        long long challenges = counter("count-challenges");
        ck_assert_int_eq(CLIENT("plain", "--user", "dave", "--expect", "403"), 0);
        ck_assert_int_eq(CLIENT("plain", "--user", "alice", "--expect", "403"), 0);
        ck_assert_int_eq(counter("count-challenges"), challenges);
        ck_assert_int_eq(counter("count-auth-failed"), 3);
        ck_assert_int_eq(counter("count-auth-banned"), 2);
        /* One log line per ban, naming the account and the source. */
        ck_assert_uint_eq(count_in_log("Too many failed authentications for account "
                                       "'dave@example.org' (last from 127.0.0.1)"),
                          1);
        ck_assert_uint_eq(count_in_log("Too many failed authentications from 127.0.0.1 (last "
                                       "for account 'dave@example.org')"),
                          1);
}
END_TEST

START_TEST(test_auth_cache_commands) {
        start(NULL);
        ck_assert_int_eq(CLIENT("register", "--user", "alice", "--password", "alicepw"), 0);
        json_t *j = tl_ctl(proxy.sock, "AUTH_CACHE_LIST");
        json_t *entries = json_object_get(j, "entries");
        ck_assert_uint_eq(json_array_size(entries), 1);
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(entries, 0), "user")),
                         "alice");
        char *text = json_dumps(j, 0);
        ck_assert_ptr_null(strstr(text, "alicepw"));
        free(text);
        json_decref(j);
        j = tl_ctl(proxy.sock, "AUTH_CACHE_GET alice example.org");
        ck_assert(json_is_true(json_object_get(j, "found")));
        json_decref(j);
        j = tl_ctl(proxy.sock, "AUTH_CACHE_DELETE alice example.org");
        ck_assert_int_eq(json_integer_value(json_object_get(j, "deleted")), 1);
        json_decref(j);
        j = tl_ctl(proxy.sock, "AUTH_CACHE_GET alice example.org");
        ck_assert_ptr_nonnull(json_object_get(j, "error"));
        json_decref(j);
        j = tl_ctl(proxy.sock, "AUTH_CACHE_GET alice");
        ck_assert_ptr_nonnull(json_object_get(j, "error"));
        json_decref(j);
}
END_TEST

START_TEST(test_auth_password_file_reload) {
        start(NULL);
        ck_assert_int_eq(CLIENT("register", "--user", "erin", "--password", "erinpw", "--expect",
                                "403"),
                         0);
        /* Changed on disk: read again without a signal. */
        write_passwords("erin@example.org clrtxt:erinpw ;\n");
        for (int i = 0; i < 100 && count_in_log("accounts.") < 2; i++)
                usleep(50 * 1000);
        ck_assert_uint_ge(count_in_log("accounts."), 2);
        ck_assert_int_eq(CLIENT("register", "--user", "erin", "--password", "erinpw"), 0);
        /* SIGHUP reads it too. */
        size_t before = count_in_log("accounts.");
        tl_kill(&proxy.proc, SIGHUP);
        for (int i = 0; i < 100 && count_in_log("accounts.") == before; i++)
                usleep(50 * 1000);
        ck_assert_uint_gt(count_in_log("accounts."), before);
}
END_TEST

START_TEST(test_auth_sqlite_backend) {
        _cleanup_free_ char *db_path = tl_path("accounts.db");
        sqlite3 *db;
        char md5[DIGEST_HEX_MAX];
        ck_assert_int_eq(digest_ha1(DIGEST_MD5, "sam", "example.org", "sampw", md5), 0);
        ck_assert_int_eq(sqlite3_open(db_path, &db), SQLITE_OK);
        _cleanup_free_ char *sql = NULL;
        ck_assert_int_ge(
                asprintf(&sql,
                         "CREATE TABLE accounts (id INTEGER PRIMARY KEY, username TEXT NOT NULL,"
                         " domain TEXT NOT NULL, activated INTEGER NOT NULL DEFAULT 1);"
                         "CREATE TABLE passwords (id INTEGER PRIMARY KEY, account_id INTEGER NOT"
                         " NULL, password TEXT NOT NULL, algorithm TEXT NOT NULL);"
                         "INSERT INTO accounts VALUES (1, 'alice', 'example.org', 1),"
                         " (2, 'sam', 'example.org', 1);"
                         "INSERT INTO passwords VALUES (1, 1, 'alicepw', 'CLRTXT'),"
                         " (2, 2, '%s', 'MD5');",
                         md5),
                0);
        ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        _cleanup_free_ char *extra = NULL;
        ck_assert_int_ge(asprintf(&extra, "db-implementation=sqlite\ndatabase-path=%s\n",
                                  db_path),
                         0);
        start(extra);
        ck_assert_int_eq(CLIENT("register", "--user", "alice", "--password", "alicepw",
                                "--algorithm", "SHA-256", "--expect-algorithms", "SHA-256,MD5"),
                         0);
        ck_assert_int_eq(sipp("test/sipp/auth-register-200.xml", "sam", "sam", "sampw"), 0);
        ck_assert_int_eq(sipp("test/sipp/auth-register-403.xml", "sam", "sam", "bad"), 0);
}
END_TEST

START_TEST(test_auth_mariadb_backend) {
        struct tl_mariadb m;
        tl_mariadb_start(&m);
        char md5[DIGEST_HEX_MAX];
        ck_assert_int_eq(digest_ha1(DIGEST_MD5, "sam", "example.org", "sampw", md5), 0);
        _cleanup_free_ char *sql = NULL;
        ck_assert_int_ge(
                asprintf(&sql,
                         "CREATE DATABASE sip CHARACTER SET utf8mb4 COLLATE utf8mb4_bin; USE sip;"
                         "CREATE TABLE accounts (id INTEGER PRIMARY KEY, username VARCHAR(64) NOT"
                         " NULL, domain VARCHAR(64) NOT NULL, activated INTEGER NOT NULL DEFAULT"
                         " 1);"
                         "CREATE TABLE passwords (id INTEGER PRIMARY KEY, account_id INTEGER NOT"
                         " NULL, password VARCHAR(128) NOT NULL, algorithm VARCHAR(16) NOT NULL);"
                         "INSERT INTO accounts VALUES (1, 'alice', 'example.org', 1),"
                         " (2, 'sam', 'example.org', 1);"
                         "INSERT INTO passwords VALUES (1, 1, 'alicepw', 'CLRTXT'),"
                         " (2, 2, '%s', 'MD5');",
                         md5),
                0);
        tl_mariadb_sql(&m, sql);
        _cleanup_free_ char *extra = NULL;
        ck_assert_int_ge(asprintf(&extra,
                                  "db-implementation=mysql\n"
                                  "connection-string=db=sip user=proxy password='s3cret' "
                                  "unix_socket=%s\n",
                                  m.sock),
                         0);
        start(extra);
        ck_assert_int_eq(CLIENT("register", "--user", "alice", "--password", "alicepw",
                                "--algorithm", "SHA-256", "--expect-algorithms", "SHA-256,MD5"),
                         0);
        ck_assert_int_eq(sipp("test/sipp/auth-register-200.xml", "sam", "sam", "sampw"), 0);
        ck_assert_int_eq(sipp("test/sipp/auth-register-403.xml", "sam", "sam", "bad"), 0);
        /* The connection string holds a password: never shown. */
        json_t *j = tl_ctl(proxy.sock, "GET module::Authentication/connection-string");
        char *text = json_dumps(j, 0);
        ck_assert_ptr_null(strstr(text, "s3cret"));
        free(text);
        json_decref(j);
        ck_assert_uint_eq(count_in_log("s3cret"), 0);
        tl_proxy_done(&proxy);
        tl_mariadb_stop(&m);
}
END_TEST

/* Start-up refuses an unusable configuration with a message naming the problem. */
START_TEST(test_auth_bad_config_refused) {
        write_passwords(NULL);
        _cleanup_free_ char *missing = tl_path("no-such-passwd");
        _cleanup_free_ char *missing_line = NULL;
        ck_assert_int_ge(asprintf(&missing_line, "file-path=%s\n", missing), 0);
        const struct {
                const char *extra;
                const char *message;
        } cases[] = {
                {"", "file-path is needed"},
                {missing_line, "Failed to open the account store (file)"},
                {"available-algorithms=MD5 SHA-512\n", "unknown algorithm 'SHA-512'"},
                {"trusted-hosts=not-an-address\n", "'not-an-address' is not an IP address"},
                {"tls-client-certificate-required-subject=(\n", "bad regular expression"},
                {"db-implementation=sqlite\n", "database-path is needed"},
                {"db-implementation=mysql\n", "connection-string is needed"},
        };
        _cleanup_free_ char *bin = tl_build_path("proxy/sipfleet-proxy");
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                /* Cases 2-4 have a password file, so that their own problem is the one met. */
                bool with_file = i >= 2 && i <= 4;
                _cleanup_free_ char *extra = NULL, *name = NULL;
                ck_assert_int_ge(asprintf(&extra, "[module::Authentication]\nenabled=true\n"
                                                  "%s%s%s%s",
                                          with_file ? "file-path=" : "",
                                          with_file ? passwd : "", with_file ? "\n" : "",
                                          cases[i].extra),
                                 0);
                ck_assert_int_ge(asprintf(&name, "bad-proxy-%zu", i), 0);
                struct tl_proxy f = {0};
                tl_proxy_write_conf(&f, extra);
                char *argv[] = {bin, "--config", f.conf, NULL};
                struct tl_proc p;
                tl_spawn(name, argv, &p);
                int status = tl_wait(&p, 10000);
                if (status == -ETIMEDOUT) {
                        tl_kill(&p, SIGKILL);
                        tl_wait(&p, 5000);
                }
                _cleanup_free_ char *log = tl_log(&p);
                free(p.log);
                free(f.conf);
                free(f.sock);
                ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) != 0,
                              "case %zu started: %s", i, log);
                ck_assert_msg(strstr(log, cases[i].message), "case %zu: no '%s' in: %s", i,
                              cases[i].message, log);
        }
}
END_TEST

/* ---- TLS client certificates ---- */

static char *tls_dir;
static char tls_remote[64];

static void start_tls(const char *auth_extra) {
        tls_dir = tl_tls_dir("tls", NULL);
        tl_tls_client_cert(tls_dir, "alice", "alice", "URI:sip:alice@example.org");
        tl_tls_client_cert(tls_dir, "bob", "bob@example.org", NULL); /* CN only */
        tl_tls_client_cert(tls_dir, "dns", "client", "DNS:other.test");
        proxy.tls_port = tl_free_port();
        /* [global] lines come first in the fixture's extra text. */
        write_passwords(NULL);
        _cleanup_free_ char *conf = NULL;
        ck_assert_int_ge(asprintf(&conf,
                                  "log-level=debug\n"
                                  "tls-certificates-dir=%s\ntls-verify-policy=incoming\n"
                                  "[module::Registrar]\n"
                                  "reg-domains=example.org\n"
                                  "db-implementation=internal\n"
                                  "[module::Authentication]\n"
                                  "enabled=true\n"
                                  "auth-domains=example.org\n"
                                  "available-algorithms=MD5 SHA-256\n"
                                  "file-path=%s\n%s",
                                  tls_dir, passwd, auth_extra ? auth_extra : ""),
                         0);
        tl_proxy_start(&proxy, conf);
        snprintf(remote, sizeof remote, "127.0.0.1:%d", proxy.port);
        snprintf(tls_remote, sizeof tls_remote, "127.0.0.1:%d", proxy.tls_port);
}

static int tls_client(const char *cert, const char *const *args) {
        _cleanup_free_ char *ca = NULL, *crt = NULL, *key = NULL;
        ck_assert_int_ge(asprintf(&ca, "%s/cafile.pem", tls_dir), 0);
        ck_assert_int_ge(asprintf(&crt, "%s/%s.crt", tls_dir, cert), 0);
        ck_assert_int_ge(asprintf(&key, "%s/%s.key", tls_dir, cert), 0);
        const char *all[32];
        size_t n = 0;
        for (; args[n]; n++)
                all[n] = args[n];
        const char *tail[] = {"--tls", "--ca", ca, "--cert", crt, "--key", key, NULL};
        for (size_t i = 0; tail[i]; i++)
                all[n++] = tail[i];
        all[n] = NULL;
        return client_at(tls_remote, all);
}

#define TLS_CLIENT(cert, ...) tls_client(cert, (const char *const[]){__VA_ARGS__, NULL})

static void teardown_tls(void) {
        teardown();
        free(tls_dir);
        tls_dir = NULL;
}

START_TEST(test_auth_tls_client_certificate) {
        start_tls(NULL);
        /* SubjectAltName URI names alice: no challenge. */
        ck_assert_int_eq(TLS_CLIENT("alice", "plain", "--user", "alice", "--expect", "200"), 0);
        /* CN names bob. */
        ck_assert_int_eq(TLS_CLIENT("bob", "plain", "--user", "bob", "--expect", "200"), 0);
        ck_assert_int_eq(counter("count-tls-client-certificate"), 2);
        ck_assert_int_eq(counter("count-challenges"), 0);
        /* Alice's certificate for bob: digest as usual. */
        ck_assert_int_eq(TLS_CLIENT("alice", "register", "--user", "bob", "--password", "bobpw",
                                    "--algorithm", "SHA-256"),
                         0);
        ck_assert_int_eq(TLS_CLIENT("dns", "register", "--user", "alice", "--password",
                                    "alicepw"),
                         0);
        ck_assert_int_eq(counter("count-challenges"), 2);
}
END_TEST

START_TEST(test_auth_tls_wrong_certificate_rejected) {
        start_tls("reject-wrong-client-certificates=true\n"
                  "tls-client-certificate-required-subject=^sip:.*@example\\.org$\n");
        ck_assert_int_eq(TLS_CLIENT("alice", "plain", "--user", "alice", "--expect", "200"), 0);
        /* Alice's certificate for bob: refused outright. */
        ck_assert_int_eq(TLS_CLIENT("alice", "plain", "--user", "bob", "--expect", "403"), 0);
        /* Bob's CN names him, but no subject matches the required expression. */
        ck_assert_int_eq(TLS_CLIENT("bob", "plain", "--user", "bob", "--expect", "403"), 0);
        ck_assert_int_eq(counter("count-challenges"), 0);
        /* UDP still uses digest. */
        ck_assert_int_eq(CLIENT("register", "--user", "bob", "--password", "bobpw"), 0);
}
END_TEST

static Suite *auth_suite(void) {
        Suite *s = suite_create("proxy-auth");
        TCase *tc = tcase_create("digest");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_auth_register_md5_sipp);
        tcase_add_test(tc, test_auth_wrong_password_sipp);
        tcase_add_test(tc, test_auth_spoofing_sipp);
        tcase_add_test(tc, test_auth_register_sha256_and_md5);
        tcase_add_test(tc, test_auth_realm);
        tcase_add_test(tc, test_auth_unknown_user);
        tcase_add_test(tc, test_auth_invite_md5_sipp);
        tcase_add_test(tc, test_auth_invite_sha256);
        tcase_add_test(tc, test_auth_preferred_identity);
        tcase_add_test(tc, test_auth_replayed_nonce);
        tcase_add_test(tc, test_auth_stale_nonce);
        tcase_add_test(tc, test_auth_foreign_relay_refused);
        tcase_add_test(tc, test_auth_trusted_host);
        tcase_add_test(tc, test_auth_brute_force_ban);
        tcase_add_test(tc, test_auth_cache_commands);
        tcase_add_test(tc, test_auth_password_file_reload);
        tcase_add_test(tc, test_auth_sqlite_backend);
        tcase_add_test(tc, test_auth_mariadb_backend);
        tcase_add_test(tc, test_auth_bad_config_refused);
        suite_add_tcase(s, tc);
        tc = tcase_create("tls");
        tcase_add_checked_fixture(tc, setup, teardown_tls);
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_auth_tls_client_certificate);
        tcase_add_test(tc, test_auth_tls_wrong_certificate_rejected);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run(auth_suite());
}
