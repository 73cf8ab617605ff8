/* SPDX-License-Identifier: MIT */
#pragma once

/* The account store: who may authenticate, with which secret. Backends: a password file (the
 * reference's format, below) and SQLite (an operator's own table through a configurable
 * request). Lookups never block the caller's loop: they run in a small thread pool that hands
 * its results back through an eventfd watched by the loop; results are cached (bounded, with an
 * expiry) on the loop's thread.
 *
 * Password file:
 *   version:1
 *   # a comment; blank lines are ignored
 *   user@domain clrtxt:secret ;
 *   user@domain md5:<32 hex> sha256:<64 hex> ; authuser +33612345678
 * Before the ';': the identity, then one or more algorithm:value pairs (clrtxt, md5, sha256;
 * md5 and sha256 are HA1 = H(auth-user:realm:password)). After it: an optional auth user name
 * (the digest username; default: the identity's user) and an optional phone alias (a From user
 * that designates the same account). A bad line is reported as "file:line: message" and
 * skipped; the other lines still count.
 *
 * MariaDB/MySQL: the same request, run by each worker thread on its own connection (opened at
 * start, opened again once when the server went away); the parameters are replaced by the
 * values quoted with mysql_real_escape_string(). Use a binary (case-sensitive) collation for
 * user names.
 *
 * SQLite: the database file is opened read-only; the request is any SELECT whose rows are
 * (password, algorithm) with algorithm CLRTXT, MD5 or SHA-256 (a one-column result means
 * CLRTXT), with the named parameters :id (the From user, mandatory), :domain and :authid (the
 * digest username). When the request does not use :authid, the digest username must be the
 * From user. The default request expects the documented schema (README):
 *   accounts(id INTEGER PRIMARY KEY, username TEXT, domain TEXT, activated INTEGER)
 *   passwords(id INTEGER PRIMARY KEY, account_id INTEGER, password TEXT, algorithm TEXT) */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "digest.h"

struct loop;
struct json_t;

struct account_secret {
        char *user, *domain; /* the identity as looked up */
        char *auth_user;     /* the digest username these credentials go with */
        char *phone;         /* file backend: the phone alias, or NULL */
        char *clrtxt;        /* clear-text password, or NULL */
        char *ha1[_DIGEST_MAX]; /* stored HA1 (lower-case hex) per algorithm, or NULL */
};

void account_secret_free(struct account_secret *s);
struct account_secret *account_secret_dup(const struct account_secret *s);
/* Can the account answer a challenge with this algorithm? */
bool account_secret_has(const struct account_secret *s, enum digest_algorithm a);
/* HA1 for the algorithm and realm: computed from the clear-text password, else the stored one.
 * 0, or -ENOENT when the account has no secret for it. */
int account_secret_ha1(const struct account_secret *s, enum digest_algorithm a, const char *realm,
                       char out[static DIGEST_HEX_MAX]);

enum account_backend {
        ACCOUNT_BACKEND_FILE,
        ACCOUNT_BACKEND_SQLITE,
        ACCOUNT_BACKEND_MYSQL, /* MariaDB or MySQL through libmariadb */
};

/* Reports each (re)load of a password file: error < 0 when it could not be read at all (the
 * previous accounts stay); errors lists the skipped lines ("file:line: message"), may be NULL.
 * Called on the loop's thread. */
typedef void (*account_reload_fn)(int error, char *const *errors, size_t n_accounts,
                                  void *userdata);

struct account_store_config {
        enum account_backend backend;
        const char *file_path;     /* file backend */
        const char *database_path; /* sqlite backend */
        const char *request;       /* sqlite and mysql backends */
        /* mysql backend: "db=sip user=proxy password='secret' host=db.example.org port=3306"
         * or unix_socket=/run/mysqld/mysqld.sock instead of host and port. */
        const char *connection_string;
        unsigned threads;          /* worker threads, >= 1 */
        size_t max_queue;          /* lookups waiting for a worker; beyond: -EAGAIN */
        uint64_t cache_expire_ms;  /* 0: no cache */
        size_t cache_max;          /* entries, > 0 */
        bool watch;                /* file backend: reload when the file changes (inotify) */
        account_reload_fn reloaded;
        void *userdata;
};

struct account_store;

/* Loads the file (synchronously: at start-up) or opens the database and checks the request.
 * Skipped file lines go to *errors (a strv, may be NULL on return; caller frees). Failure:
 * -ENOENT/-EACCES for a file that cannot be read, -EINVAL with *errors for a bad request. */
int account_store_new(struct loop *l, const struct account_store_config *cfg, char ***errors,
                      struct account_store **ret);
/* Pending lookups get their callback with -ECANCELED. Accepts NULL. */
void account_store_free(struct account_store *s);

/* Lookup result: error < 0 (-EIO: backend failure, -ECANCELED: store freed), else secret is
 * the account or NULL when there is none (valid during the callback only). */
typedef void (*account_lookup_fn)(int error, const struct account_secret *secret, void *userdata);

/* The account of user@domain authenticating as authid. The callback always runs later, on the
 * loop's thread. -EAGAIN when max_queue lookups are already waiting, -ENOMEM. */
int account_store_lookup(struct account_store *s, const char *user, const char *domain,
                         const char *authid, account_lookup_fn cb, void *userdata);
/* A cached answer, without waiting: 1 with *ret set (NULL: cached as unknown), 0 when not
 * cached (or expired). */
int account_store_cached(struct account_store *s, const char *user, const char *domain,
                         const char *authid, const struct account_secret **ret);

/* Is user@domain an account (user: the identity's user or its phone alias), whatever its
 * digest username? For services that only need to know who the users are (presence). The SQL
 * request runs with :authid = user. Same callback as account_store_lookup(); the answers are
 * cached apart from its own. */
int account_store_lookup_user(struct account_store *s, const char *user, const char *domain,
                              account_lookup_fn cb, void *userdata);
/* account_store_cached() for account_store_lookup_user()'s answers. */
int account_store_cached_user(struct account_store *s, const char *user, const char *domain,
                              const struct account_secret **ret);

/* Re-reads the password file in a worker (nothing for SQLite); the reloaded hook reports. The
 * cache is emptied when the new accounts are in place. */
int account_store_reload(struct account_store *s);
size_t account_store_n_accounts(struct account_store *s);

/* The cache, for the control socket: entries as JSON objects {"user", "domain", "auth-user",
 * "found", "algorithms": [...], "expires-in"} (never a secret). */
struct json_t *account_store_cache_list(struct account_store *s, const char *domain);
/* NULL when not cached. authid NULL: the user. */
struct json_t *account_store_cache_get(struct account_store *s, const char *user,
                                       const char *domain, const char *authid);
/* Entries removed (authid NULL: every entry of user@domain). */
size_t account_store_cache_delete(struct account_store *s, const char *user, const char *domain,
                                  const char *authid);

/* Parses a password file into a new table; exported for tests and the fuzzer. */
struct account_table;
int account_table_parse(const char *path, const char *text, size_t len, char ***errors,
                        struct account_table **ret);
void account_table_free(struct account_table *t);
size_t account_table_size(const struct account_table *t);
/* user may be the identity's user or its phone alias. NULL when absent or authid does not
 * match the account's digest username. */
const struct account_secret *account_table_find(const struct account_table *t, const char *user,
                                                const char *domain, const char *authid);

/* ---- configuration shared by the roles that read accounts ---- */

/* The keys of an account store in one config section: db-implementation (file, sqlite,
 * mysql), file-path, database-path, password-request, connection-string, db-threads,
 * max-queue-size, cache-expire, cache-size. The proxy has them in [module::Authentication],
 * sipfleet-presence in [accounts]. */
enum account_db_implementation {
        ACCOUNT_DB_FILE,
        ACCOUNT_DB_SQLITE,
        ACCOUNT_DB_MYSQL,
};

struct account_store_settings {
        int db_implementation; /* enum account_db_implementation */
        char *file_path;
        char *database_path;
        char *password_request;
        char *connection_string;
        int64_t db_threads, max_queue_size, cache_size;
        uint64_t cache_expire_ms;
};

/* "file", "sqlite", "mysql", NULL: the choices of db-implementation. */
extern const char *const account_db_implementations[];

/* The config rows (struct conf_option, common/conf.h) of those keys, for a row table: section
 * is the section name, base the offset of the struct account_store_settings in the table's
 * block. One definition for every role, so keys, defaults and bounds cannot drift apart. */
#define ACCOUNT_STORE_S_(base, field) ((base) + offsetof(struct account_store_settings, field))
#define ACCOUNT_STORE_ROWS(section, base)                                                          \
        {(section), "db-implementation", CONF_ENUM, ACCOUNT_STORE_S_(base, db_implementation),    \
         "file", 0, 0, 0,                                                                          \
         "Where accounts are: file (file-path), sqlite (database-path, password-request) or "     \
         "mysql (MariaDB/MySQL: connection-string, password-request)",                            \
         .choices = account_db_implementations},                                                   \
        {(section), "file-path", CONF_STRING, ACCOUNT_STORE_S_(base, file_path), NULL, 0, 0, 0,   \
         "Password file (version:1, then 'user@domain clrtxt:secret ; [auth-user] [phone]' "     \
         "lines; see README), re-read when it changes (the proxy: on SIGHUP too)"},                \
        {(section), "database-path", CONF_STRING, ACCOUNT_STORE_S_(base, database_path), NULL, 0, \
         0, 0, "SQLite database with the accounts, opened read-only (db-implementation=sqlite)"},  \
        {(section), "password-request", CONF_STRING, ACCOUNT_STORE_S_(base, password_request),    \
         "select password, algorithm from passwords where account_id = (select id from "          \
         "accounts where username = :id and domain = :domain and activated = 1)",                 \
         0, 0, 0,                                                                                  \
         "SQL returning (password, algorithm in CLRTXT, MD5, SHA-256) rows for an account; :id "  \
         "= identity user (mandatory; presence: the presentity's user, or its phone number: "     \
         "match a phone column too for aliases), :domain = its domain, :authid = digest "         \
         "username (presence: :id)"},                                                              \
        {(section), "connection-string", CONF_STRING, ACCOUNT_STORE_S_(base, connection_string),  \
         NULL, 0, 0, CONF_SECRET,                                                                  \
         "MariaDB/MySQL server for db-implementation=mysql: db=NAME user=USER "                   \
         "password='...' host=HOST port=3306 (or unix_socket=PATH)"},                             \
        {(section), "db-threads", CONF_INT, ACCOUNT_STORE_S_(base, db_threads), "2", 1, 64, 0,    \
         "Threads running SQL lookups, so that the SIP loop never waits for the database"},       \
        {(section), "max-queue-size", CONF_INT, ACCOUNT_STORE_S_(base, max_queue_size), "1000",   \
         1, 1000000, 0,                                                                            \
         "Lookups waiting for a database thread; beyond, the proxy answers 503 and presence "     \
         "leaves the presentity unknown until the next SUBSCRIBE asks again"},                    \
        {(section), "cache-expire", CONF_DURATION, ACCOUNT_STORE_S_(base, cache_expire_ms),       \
         "1800s", 0, 0, 0,                                                                         \
         "How long a looked-up account is remembered (proxy: CLI AUTH_CACHE_*; presence: "       \
         "unknown accounts at most 30s); 0 = no cache",                                           \
         .unit = CONF_UNIT_S},                                                                     \
        {(section), "cache-size", CONF_INT, ACCOUNT_STORE_S_(base, cache_size), "100000", 1,      \
         10000000, 0, "Answers kept in the cache; the least recently used go first"}

/* Checks the settings (the file, database or server the implementation needs), opens the
 * store and logs what happened (skipped lines of a password file as warnings, errors naming
 * the section, the number of accounts). A password file is watched; each reload is logged.
 * s must outlive the store. */
int account_store_open_config(struct loop *l, const char *section,
                              const struct account_store_settings *s, struct account_store **ret);
