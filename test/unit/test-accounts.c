/* SPDX-License-Identifier: MIT */
#include <event2/event.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>

#include "accounts.h"
#include "digest.h"
#include "loop.h"
#include "macro.h"
#include "strmap.h"
#include "testlib-mariadb.h"
#include "testlib.h"

/* ---- digest ---- */

START_TEST(test_accounts_digest_known_values) {
        char out[DIGEST_HEX_MAX];
        /* The reference's example HA1. */
        ck_assert_int_eq(digest_ha1(DIGEST_MD5, "bellesip", "sip.linphone.org", "secret", out), 0);
        ck_assert_str_eq(out, "97ffb1c6af18e5687bf26cdf35e45d30");
        /* RFC 7616 §3.9.1, SHA-256 (a "GET" request on an HTTP URI). */
        ck_assert_int_eq(digest_ha1(DIGEST_SHA256, "Mufasa", "http-auth@example.org",
                                    "Circle of Life", out),
                         0);
        char resp[DIGEST_HEX_MAX];
        ck_assert_int_eq(digest_response(DIGEST_SHA256, out,
                                         "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                                         "00000001",
                                         "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "auth",
                                         "GET", "/dir/index.html", resp),
                         0);
        ck_assert_str_eq(resp, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
        ck_assert(digest_equal(resp,
                               "753927FA0E85D155564E2E272A28D1802CA10DAF4496794697CF8DB5856CB6C1"));
        ck_assert(!digest_equal(resp, "753927fa"));
        ck_assert(!digest_equal(resp, NULL));
        ck_assert_int_eq(digest_algorithm_from_name("sha-256"), DIGEST_SHA256);
        ck_assert_int_eq(digest_algorithm_from_name("MD5"), DIGEST_MD5);
        ck_assert_int_eq(digest_algorithm_from_name("SHA-512-256"), -EINVAL);
}
END_TEST

START_TEST(test_accounts_nonce_forgery_and_expiry) {
        struct digest_nonce_key k, other;
        char n[DIGEST_NONCE_LEN + 1];
        ck_assert_int_eq(digest_nonce_key_init(&k), 0);
        ck_assert_int_eq(digest_nonce_key_init(&other), 0);
        ck_assert_int_eq(digest_nonce_make(&k, "example.org", 100000, n), 0);
        ck_assert_uint_eq(strlen(n), DIGEST_NONCE_LEN);
        ck_assert_int_eq(digest_nonce_check(&k, "example.org", n, 100500, 3600000), 0);
        ck_assert_int_eq(digest_nonce_check(&k, "example.org", n, 100000 + 3600000, 3600000),
                         -ESTALE);
        ck_assert_int_eq(digest_nonce_check(&other, "example.org", n, 100500, 3600000), -EINVAL);
        ck_assert_int_eq(digest_nonce_check(&k, "other.org", n, 100500, 3600000), -EINVAL);
        char altered[DIGEST_NONCE_LEN + 1];
        memcpy(altered, n, sizeof altered);
        altered[3] = altered[3] == '0' ? '1' : '0'; /* a later timestamp */
        ck_assert_int_eq(digest_nonce_check(&k, "example.org", altered, 100500, 3600000), -EINVAL);
        ck_assert_int_eq(digest_nonce_check(&k, "example.org", "zz", 100500, 3600000), -EINVAL);
        ck_assert_int_eq(digest_nonce_check(&k, "example.org", NULL, 100500, 3600000), -EINVAL);
}
END_TEST

/* ---- strmap ---- */

START_TEST(test_accounts_strmap_lru_bound) {
        struct strmap *m;
        ck_assert_int_eq(strmap_new(3, free, &m), 0);
        ck_assert_int_eq(strmap_put(m, "a", strdup("1")), 0);
        ck_assert_int_eq(strmap_put(m, "b", strdup("2")), 0);
        ck_assert_int_eq(strmap_put(m, "c", strdup("3")), 0);
        ck_assert_str_eq(strmap_get(m, "a"), "1"); /* a is now the most recent */
        ck_assert_int_eq(strmap_put(m, "d", strdup("4")), 0);
        ck_assert_uint_eq(strmap_size(m), 3);
        ck_assert_ptr_null(strmap_peek(m, "b")); /* the least recently used went */
        ck_assert_str_eq(strmap_peek(m, "a"), "1");
        ck_assert_int_eq(strmap_put(m, "a", strdup("5")), 0);
        ck_assert_str_eq(strmap_peek(m, "a"), "5");
        ck_assert_int_eq(strmap_remove(m, "c"), 0);
        ck_assert_int_eq(strmap_remove(m, "c"), -ENOENT);
        ck_assert_uint_eq(strmap_size(m), 2);
        strmap_free(m);
}
END_TEST

/* ---- the store: one table, two backends ---- */

static char ha1_md5_bob[DIGEST_HEX_MAX], ha1_sha_bob[DIGEST_HEX_MAX], ha1_md5_dave[DIGEST_HEX_MAX];

static void make_hashes(void) {
        ck_assert_int_eq(digest_ha1(DIGEST_MD5, "bob", "example.org", "bobpw", ha1_md5_bob), 0);
        ck_assert_int_eq(digest_ha1(DIGEST_SHA256, "bob", "example.org", "bobpw", ha1_sha_bob), 0);
        ck_assert_int_eq(digest_ha1(DIGEST_MD5, "dave", "example.org", "davepw", ha1_md5_dave),
                         0);
}

static char *write_password_file(const char *name) {
        make_hashes();
        _cleanup_free_ char *text = NULL;
        ck_assert_int_ge(asprintf(&text,
                                  "version:1\n"
                                  "# accounts for the test table\n"
                                  "alice@example.org clrtxt:secret ;\n"
                                  "\n"
                                  "bob@example.org md5:%s sha256:%s ;\n"
                                  "dave@Example.org md5:%s ;\n"
                                  "carol@example.org clrtxt:carolpw ; carol-auth +33611\n",
                                  ha1_md5_bob, ha1_sha_bob, ha1_md5_dave),
                         0);
        return tl_write_file(name, text);
}

static const char sql_request[] =
        "select password, algorithm from passwords where account_id = (select id from accounts"
        " where (username = :id or phone = :id) and domain = :domain"
        " and coalesce(auth_username, username) = :authid and activated = 1)";

static char *write_database(const char *name) {
        make_hashes();
        char *path = tl_path(name);
        sqlite3 *db;
        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        _cleanup_free_ char *sql = NULL;
        ck_assert_int_ge(
                asprintf(&sql,
                         "CREATE TABLE accounts (id INTEGER PRIMARY KEY, username TEXT NOT NULL,"
                         " domain TEXT NOT NULL, activated INTEGER NOT NULL DEFAULT 1,"
                         " auth_username TEXT, phone TEXT);"
                         "CREATE TABLE passwords (id INTEGER PRIMARY KEY, account_id INTEGER NOT"
                         " NULL, password TEXT NOT NULL, algorithm TEXT NOT NULL);"
                         "INSERT INTO accounts VALUES (1, 'alice', 'example.org', 1, NULL, NULL),"
                         " (2, 'bob', 'example.org', 1, NULL, NULL),"
                         " (3, 'dave', 'example.org', 1, NULL, NULL),"
                         " (4, 'carol', 'example.org', 1, 'carol-auth', '+33611'),"
                         " (5, 'zed', 'example.org', 0, NULL, NULL);"
                         "INSERT INTO passwords VALUES (1, 1, 'secret', 'CLRTXT'),"
                         " (2, 2, '%s', 'MD5'), (3, 2, '%s', 'SHA-256'), (4, 3, '%s', 'MD5'),"
                         " (5, 4, 'carolpw', 'CLRTXT'), (6, 5, 'zedpw', 'CLRTXT');",
                         ha1_md5_bob, ha1_sha_bob, ha1_md5_dave),
                0);
        ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        return path;
}

static char *connection_string;

/* The same accounts in a real MariaDB: database "sip", binary collation (case-sensitive
 * user names, as in the file and SQLite). */
static void write_mariadb(struct tl_mariadb *m) {
        make_hashes();
        tl_mariadb_start(m);
        _cleanup_free_ char *sql = NULL;
        ck_assert_int_ge(
                asprintf(&sql,
                         "CREATE DATABASE sip CHARACTER SET utf8mb4 COLLATE utf8mb4_bin; USE sip;"
                         "CREATE TABLE accounts (id INTEGER PRIMARY KEY, username VARCHAR(64) NOT"
                         " NULL, domain VARCHAR(64) NOT NULL, activated INTEGER NOT NULL DEFAULT"
                         " 1, auth_username VARCHAR(64), phone VARCHAR(64));"
                         "CREATE TABLE passwords (id INTEGER PRIMARY KEY, account_id INTEGER NOT"
                         " NULL, password VARCHAR(128) NOT NULL, algorithm VARCHAR(16) NOT NULL);"
                         "INSERT INTO accounts VALUES (1, 'alice', 'example.org', 1, NULL, NULL),"
                         " (2, 'bob', 'example.org', 1, NULL, NULL),"
                         " (3, 'dave', 'example.org', 1, NULL, NULL),"
                         " (4, 'carol', 'example.org', 1, 'carol-auth', '+33611'),"
                         " (5, 'zed', 'example.org', 0, NULL, NULL);"
                         "INSERT INTO passwords VALUES (1, 1, 'secret', 'CLRTXT'),"
                         " (2, 2, '%s', 'MD5'), (3, 2, '%s', 'SHA-256'), (4, 3, '%s', 'MD5'),"
                         " (5, 4, 'carolpw', 'CLRTXT'), (6, 5, 'zedpw', 'CLRTXT');",
                         ha1_md5_bob, ha1_sha_bob, ha1_md5_dave),
                0);
        tl_mariadb_sql(m, sql);
        free(connection_string);
        ck_assert_int_ge(asprintf(&connection_string, "db=sip user=proxy password='a b' "
                                                      "unix_socket=%s", m->sock),
                         0);
}

struct fixture {
        struct event_base *base;
        struct loop *loop;
        struct account_store *store;
        char **errors;
        int reloads;
        int reload_error;
        size_t reload_accounts;
};

struct waiter {
        struct fixture *f;
        bool done;
        int error;
        bool found;
        char md5[DIGEST_HEX_MAX], sha[DIGEST_HEX_MAX];
        char auth_user[64];
};

static void on_result(int error, const struct account_secret *s, void *userdata) {
        struct waiter *w = userdata;
        w->done = true;
        w->error = error;
        w->found = s != NULL;
        if (s) {
                if (account_secret_ha1(s, DIGEST_MD5, "example.org", w->md5) < 0)
                        w->md5[0] = 0;
                if (account_secret_ha1(s, DIGEST_SHA256, "example.org", w->sha) < 0)
                        w->sha[0] = 0;
                snprintf(w->auth_user, sizeof w->auth_user, "%s", s->auth_user);
        }
        loop_quit(w->f->loop);
}

static void on_timeout(struct loop_timer *t, void *userdata) {
        loop_quit(userdata);
}

static void run_until(struct fixture *f, bool *flag) {
        struct loop_timer *t;
        ck_assert_int_eq(loop_timer_new(f->loop, on_timeout, f->loop, &t), 0);
        ck_assert_int_eq(loop_timer_arm(t, 5000), 0);
        while (!*flag && loop_timer_armed(t))
                loop_run(f->loop);
        loop_timer_free(t);
        ck_assert_msg(*flag, "no answer within 5 s");
}

static void lookup(struct fixture *f, const char *user, const char *domain, const char *authid,
                   struct waiter *w) {
        *w = (struct waiter){.f = f};
        ck_assert_int_eq(account_store_lookup(f->store, user, domain, authid, on_result, w), 0);
        ck_assert(!w->done); /* never synchronous */
        run_until(f, &w->done);
}

static void on_reloaded(int error, char *const *errors, size_t n, void *userdata) {
        struct fixture *f = userdata;
        f->reloads++;
        f->reload_error = error;
        f->reload_accounts = n;
        loop_quit(f->loop);
}

static void fixture_new(struct fixture *f, int backend, const char *path, bool watch) {
        *f = (struct fixture){0};
        f->base = event_base_new();
        ck_assert_ptr_nonnull(f->base);
        ck_assert_int_eq(loop_new_event(f->base, &f->loop), 0);
        struct account_store_config cfg = {
                .backend = backend,
                .file_path = backend == ACCOUNT_BACKEND_FILE ? path : NULL,
                .database_path = backend == ACCOUNT_BACKEND_SQLITE ? path : NULL,
                .request = sql_request,
                .connection_string = connection_string,
                .threads = 2,
                .max_queue = 100,
                .cache_expire_ms = 60000,
                .cache_max = 100,
                .watch = watch,
                .reloaded = on_reloaded,
                .userdata = f,
        };
        int r = account_store_new(f->loop, &cfg, &f->errors, &f->store);
        ck_assert_msg(r == 0, "store: %s", f->errors ? f->errors[0] : strerror(-r));
}

static void fixture_free(struct fixture *f) {
        account_store_free(f->store);
        strv_free(f->errors);
        loop_free(f->loop);
        event_base_free(f->base);
}

struct row {
        const char *user, *domain, *authid;
        bool found;
        const char *md5, *sha; /* expected HA1 at realm example.org: NULL = none, "" = any */
};

START_TEST(test_accounts_table_every_backend) {
        struct tl_mariadb mdb = {0};
        const char *path = NULL;
        if (_i == ACCOUNT_BACKEND_FILE)
                path = write_password_file("table.passwd");
        else if (_i == ACCOUNT_BACKEND_SQLITE)
                path = write_database("table.db");
        else
                write_mariadb(&mdb);
        struct fixture f;
        fixture_new(&f, _i, path, false);
        ck_assert_ptr_null(f.errors);
        char alice_md5[DIGEST_HEX_MAX], alice_sha[DIGEST_HEX_MAX];
        ck_assert_int_eq(digest_ha1(DIGEST_MD5, "alice", "example.org", "secret", alice_md5), 0);
        ck_assert_int_eq(digest_ha1(DIGEST_SHA256, "alice", "example.org", "secret", alice_sha),
                         0);
        char carol_md5[DIGEST_HEX_MAX];
        ck_assert_int_eq(digest_ha1(DIGEST_MD5, "carol-auth", "example.org", "carolpw", carol_md5),
                         0);
        const struct row rows[] = {
                {"alice", "example.org", NULL, true, alice_md5, alice_sha},
                {"alice", "EXAMPLE.org", "alice", true, alice_md5, alice_sha},
                {"alice", "example.org", "mallory", false, NULL, NULL},
                {"alice", "other.org", NULL, false, NULL, NULL},
                {"bob", "example.org", NULL, true, ha1_md5_bob, ha1_sha_bob},
                {"dave", "example.org", "dave", true, ha1_md5_dave, NULL},
                {"carol", "example.org", "carol-auth", true, carol_md5, ""},
                {"carol", "example.org", "carol", false, NULL, NULL},
                {"carol", "example.org", NULL, false, NULL, NULL},
                {"+33611", "example.org", "carol-auth", true, carol_md5, ""},
                {"nobody", "example.org", NULL, false, NULL, NULL},
                {"Alice", "example.org", NULL, false, NULL, NULL}, /* users are case-sensitive */
        };
        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                const struct row *row = &rows[i];
                struct waiter w;
                lookup(&f, row->user, row->domain, row->authid, &w);
                ck_assert_msg(w.error == 0, "row %zu: error %d", i, w.error);
                ck_assert_msg(w.found == row->found, "row %zu (%s): found %d", i, row->user,
                              w.found);
                if (!row->found)
                        continue;
                if (row->md5 && *row->md5)
                        ck_assert_str_eq(w.md5, row->md5);
                if (!row->md5)
                        ck_assert_str_eq(w.md5, "");
                if (row->sha && *row->sha)
                        ck_assert_str_eq(w.sha, row->sha);
                if (!row->sha)
                        ck_assert_str_eq(w.sha, "");
        }
        if (_i != ACCOUNT_BACKEND_FILE) { /* a deactivated account is not found */
                struct waiter w;
                lookup(&f, "zed", "example.org", NULL, &w);
                ck_assert(!w.found);
        }
        if (_i == ACCOUNT_BACKEND_MYSQL) {
                /* A request the server refuses stops the start with its message. */
                struct account_store *bad = NULL;
                char **errors = NULL;
                struct account_store_config cfg = {.backend = ACCOUNT_BACKEND_MYSQL,
                                                   .connection_string = connection_string,
                                                   .request = "select nope from nothing where "
                                                              "x = :id",
                                                   .threads = 1,
                                                   .max_queue = 1};
                ck_assert_int_eq(account_store_new(f.loop, &cfg, &errors, &bad), -EINVAL);
                ck_assert_ptr_nonnull(strstr(errors[0], "bad password request"));
                strv_free(errors);
                /* The server restarts: the next lookup connects again. */
                tl_mariadb_restart(&mdb);
                struct waiter w;
                lookup(&f, "bob", "example.org", NULL, &w);
                ck_assert_int_eq(w.error, 0);
                ck_assert(w.found);
        }
        fixture_free(&f);
        free((char *)path);
        tl_mariadb_stop(&mdb);
        free(connection_string);
        connection_string = NULL;
}
END_TEST

START_TEST(test_accounts_cache) {
        _cleanup_free_ char *path = write_password_file("cache.passwd");
        struct fixture f;
        fixture_new(&f, ACCOUNT_BACKEND_FILE, path, false);
        const struct account_secret *s = NULL;
        ck_assert_int_eq(account_store_cached(f.store, "alice", "example.org", NULL, &s), 0);
        struct waiter w;
        lookup(&f, "alice", "example.org", NULL, &w);
        lookup(&f, "nobody", "example.org", NULL, &w);
        ck_assert_int_eq(account_store_cached(f.store, "alice", "Example.ORG", NULL, &s), 1);
        ck_assert_ptr_nonnull(s);
        ck_assert_str_eq(s->auth_user, "alice");
        ck_assert_int_eq(account_store_cached(f.store, "nobody", "example.org", NULL, &s), 1);
        ck_assert_ptr_null(s); /* cached as unknown */

        json_t *list = account_store_cache_list(f.store, NULL);
        ck_assert_uint_eq(json_array_size(list), 2);
        char *text = json_dumps(list, 0);
        ck_assert_ptr_null(strstr(text, "secret")); /* never a password */
        free(text);
        json_decref(list);
        list = account_store_cache_list(f.store, "other.org");
        ck_assert_uint_eq(json_array_size(list), 0);
        json_decref(list);
        json_t *one = account_store_cache_get(f.store, "alice", "example.org", NULL);
        ck_assert_ptr_nonnull(one);
        ck_assert(json_is_true(json_object_get(one, "found")));
        ck_assert_str_eq(json_string_value(json_array_get(json_object_get(one, "algorithms"), 0)),
                         "SHA-256");
        json_decref(one);
        ck_assert_uint_eq(account_store_cache_delete(f.store, "alice", "example.org", NULL), 1);
        ck_assert_int_eq(account_store_cached(f.store, "alice", "example.org", NULL, &s), 0);
        ck_assert_ptr_null(account_store_cache_get(f.store, "alice", "example.org", NULL));
        fixture_free(&f);
}
END_TEST

static void lookup_user(struct fixture *f, const char *user, const char *domain,
                        struct waiter *w) {
        *w = (struct waiter){.f = f};
        ck_assert_int_eq(account_store_lookup_user(f->store, user, domain, on_result, w), 0);
        ck_assert(!w->done);
        run_until(f, &w->done);
        ck_assert_int_eq(w->error, 0);
}

/* Who is a user (presence): the account whatever its digest username, or its phone alias;
 * cached apart from the authentication lookups. */
START_TEST(test_accounts_lookup_user) {
        _cleanup_free_ char *path = write_password_file("users.passwd");
        struct fixture f;
        fixture_new(&f, ACCOUNT_BACKEND_FILE, path, false);
        struct waiter w;
        lookup(&f, "carol", "example.org", NULL, &w);
        ck_assert(!w.found); /* authentication: carol signs in as carol-auth */
        lookup_user(&f, "carol", "example.org", &w);
        ck_assert(w.found);
        ck_assert_str_eq(w.auth_user, "carol-auth");
        lookup_user(&f, "+33611", "Example.org", &w);
        ck_assert(w.found);
        lookup_user(&f, "alice", "example.org", &w);
        ck_assert(w.found);
        lookup_user(&f, "nobody", "example.org", &w);
        ck_assert(!w.found);
        lookup_user(&f, "alice", "other.org", &w);
        ck_assert(!w.found);
        const struct account_secret *s = NULL;
        ck_assert_int_eq(account_store_cached_user(f.store, "carol", "example.org", &s), 1);
        ck_assert_ptr_nonnull(s);
        ck_assert_int_eq(account_store_cached(f.store, "carol", "example.org", NULL, &s), 1);
        ck_assert_ptr_null(s); /* the authentication answer stays its own */
        ck_assert_int_eq(account_store_cached_user(f.store, "nobody", "example.org", &s), 1);
        ck_assert_ptr_null(s);
        ck_assert_int_eq(account_store_cached_user(f.store, "bob", "example.org", &s), 0);
        json_t *list = account_store_cache_list(f.store, NULL);
        char *text = json_dumps(list, 0);
        ck_assert_ptr_null(strstr(text, "carolpw"));
        free(text);
        json_decref(list);
        fixture_free(&f);

        /* SQLite: the request runs with :authid = :id. */
        _cleanup_free_ char *db = write_database("users.db");
        fixture_new(&f, ACCOUNT_BACKEND_SQLITE, db, false);
        lookup_user(&f, "alice", "example.org", &w);
        ck_assert(w.found);
        lookup_user(&f, "nobody", "example.org", &w);
        ck_assert(!w.found);
        fixture_free(&f);
}
END_TEST

START_TEST(test_accounts_broken_lines_skipped) {
        _cleanup_free_ char *path = tl_write_file(
                "broken.passwd",
                "version:1\n"
                "alice@example.org clrtxt:secret ;\n"
                "no semicolon@example.org clrtxt:x\n"
                "eve@example.org md5:xyz ;\n"
                "frank example.org clrtxt:x ;\n"
                "alice@example.org clrtxt:again ;\n"
                "gina@example.org rot13:x ;\n"
                "henry@example.org ;\n"
                "ivan@example.org clrtxt:ivanpw ;\n");
        struct fixture f;
        fixture_new(&f, ACCOUNT_BACKEND_FILE, path, false);
        ck_assert_uint_eq(account_store_n_accounts(f.store), 2);
        ck_assert_uint_eq(strv_length(f.errors), 6);
        const unsigned lines[] = {3, 4, 5, 6, 7, 8};
        for (size_t i = 0; i < 6; i++) {
                _cleanup_free_ char *prefix = NULL;
                ck_assert_int_ge(asprintf(&prefix, "%s:%u: ", path, lines[i]), 0);
                ck_assert_msg(strncmp(f.errors[i], prefix, strlen(prefix)) == 0, "got '%s'",
                              f.errors[i]);
                ck_assert_ptr_nonnull(strstr(f.errors[i], "skipped"));
        }
        ck_assert_ptr_nonnull(strstr(f.errors[1], "md5"));
        struct waiter w;
        lookup(&f, "ivan", "example.org", NULL, &w);
        ck_assert(w.found); /* the line after the broken ones still counts */
        lookup(&f, "alice", "example.org", NULL, &w);
        ck_assert(w.found);
        char expect[DIGEST_HEX_MAX];
        digest_ha1(DIGEST_MD5, "alice", "example.org", "secret", expect);
        ck_assert_str_eq(w.md5, expect); /* the first definition wins */
        fixture_free(&f);
}
END_TEST

START_TEST(test_accounts_reload_on_change_and_request) {
        _cleanup_free_ char *path = tl_write_file("watched.passwd",
                                                  "version:1\nalice@example.org clrtxt:a ;\n");
        struct fixture f;
        fixture_new(&f, ACCOUNT_BACKEND_FILE, path, true);
        struct waiter w;
        lookup(&f, "bob", "example.org", NULL, &w);
        ck_assert(!w.found);
        /* An editor's save: a new file renamed over the old one. */
        _cleanup_free_ char *tmp = tl_write_file("watched.passwd.new",
                                                 "version:1\nalice@example.org clrtxt:a ;\n"
                                                 "bob@example.org clrtxt:b ;\n");
        ck_assert_int_eq(rename(tmp, path), 0);
        int before = f.reloads;
        struct loop_timer *t;
        ck_assert_int_eq(loop_timer_new(f.loop, on_timeout, f.loop, &t), 0);
        ck_assert_int_eq(loop_timer_arm(t, 5000), 0);
        while (f.reloads == before && loop_timer_armed(t))
                loop_run(f.loop);
        loop_timer_free(t);
        ck_assert_int_gt(f.reloads, before);
        ck_assert_int_eq(f.reload_error, 0);
        ck_assert_uint_eq(f.reload_accounts, 2);
        lookup(&f, "bob", "example.org", NULL, &w);
        ck_assert(w.found); /* the cached "unknown" went with the reload */

        /* An explicit reload (SIGHUP) of a file that vanished keeps the accounts. */
        ck_assert_int_eq(unlink(path), 0);
        before = f.reloads;
        ck_assert_int_eq(account_store_reload(f.store), 0);
        ck_assert_int_eq(loop_timer_new(f.loop, on_timeout, f.loop, &t), 0);
        ck_assert_int_eq(loop_timer_arm(t, 5000), 0);
        while (f.reloads == before && loop_timer_armed(t))
                loop_run(f.loop);
        loop_timer_free(t);
        ck_assert_int_eq(f.reload_error, -ENOENT);
        ck_assert_uint_eq(account_store_n_accounts(f.store), 2);
        fixture_free(&f);
}
END_TEST

START_TEST(test_accounts_sql_errors) {
        _cleanup_free_ char *path = write_database("errors.db");
        struct event_base *base = event_base_new();
        struct loop *l;
        ck_assert_int_eq(loop_new_event(base, &l), 0);
        struct account_store *s = NULL;
        char **errors = NULL;
        struct account_store_config cfg = {.backend = ACCOUNT_BACKEND_SQLITE,
                                           .database_path = path,
                                           .request = "select nope from nothing where x = :id",
                                           .threads = 1,
                                           .max_queue = 1};
        ck_assert_int_eq(account_store_new(l, &cfg, &errors, &s), -EINVAL);
        ck_assert_ptr_nonnull(errors);
        ck_assert_ptr_nonnull(strstr(errors[0], "bad password request"));
        strv_free(errors);
        errors = NULL;
        cfg.request = "select password from passwords";
        ck_assert_int_eq(account_store_new(l, &cfg, &errors, &s), -EINVAL);
        ck_assert_ptr_nonnull(strstr(errors[0], ":id"));
        strv_free(errors);
        errors = NULL;
        cfg.database_path = "/nonexistent/dir/x.db";
        cfg.request = sql_request;
        ck_assert_int_eq(account_store_new(l, &cfg, &errors, &s), -EIO);
        strv_free(errors);
        errors = NULL;

        /* MariaDB: a bad connection string, a server that is not there. */
        cfg.backend = ACCOUNT_BACKEND_MYSQL;
        cfg.connection_string = "db=sip colour=blue";
        ck_assert_int_eq(account_store_new(l, &cfg, &errors, &s), -EINVAL);
        ck_assert_ptr_nonnull(strstr(errors[0], "'colour'"));
        strv_free(errors);
        errors = NULL;
        cfg.connection_string = "db=sip password='unterminated";
        ck_assert_int_eq(account_store_new(l, &cfg, &errors, &s), -EINVAL);
        strv_free(errors);
        errors = NULL;
        _cleanup_free_ char *nowhere = NULL;
        ck_assert_int_ge(asprintf(&nowhere, "db=sip user=x unix_socket=%s/no.sock", tl_tmpdir()),
                         0);
        cfg.connection_string = nowhere;
        ck_assert_int_eq(account_store_new(l, &cfg, &errors, &s), -EIO);
        ck_assert_ptr_nonnull(strstr(errors[0], "cannot connect"));
        strv_free(errors);
        loop_free(l);
        event_base_free(base);
}
END_TEST

START_TEST(test_accounts_parse_crlf_and_garbage) {
        static const char text[] = "version:1\r\n"
                                   "alice@example.org clrtxt:secret ; alice-id +1555\r\n"
                                   "  # indented comment\r\n"
                                   "bob@example.org sha256:"
                                   "0000000000000000000000000000000000000000000000000000000000000000"
                                   " ;";
        struct account_table *t = NULL;
        char **errors = NULL;
        ck_assert_int_eq(account_table_parse("crlf", text, sizeof text - 1, &errors, &t), 0);
        ck_assert_ptr_null(errors);
        ck_assert_uint_eq(account_table_size(t), 2);
        const struct account_secret *a = account_table_find(t, "+1555", "example.org", "alice-id");
        ck_assert_ptr_nonnull(a);
        ck_assert_str_eq(a->user, "alice");
        ck_assert_str_eq(a->clrtxt, "secret");
        ck_assert_ptr_null(account_table_find(t, "alice", "example.org", "alice"));
        ck_assert_ptr_nonnull(account_table_find(t, "bob", "EXAMPLE.ORG", NULL));
        account_table_free(t);

        /* Random bytes: every call returns, every complaint names its line. */
        unsigned seed = 12345;
        for (int round = 0; round < 300; round++) {
                char buf[256];
                size_t len = (size_t)(rand_r(&seed) % sizeof buf);
                for (size_t i = 0; i < len; i++) {
                        int k = rand_r(&seed) % 12;
                        buf[i] = k == 0 ? '\n' : k == 1 ? ';' : k == 2 ? '@' : k == 3 ? ':'
                                 : k == 4 ? ' ' : k == 5 ? 0 : (char)rand_r(&seed);
                }
                t = NULL;
                errors = NULL;
                ck_assert_int_eq(account_table_parse("rnd", buf, len, &errors, &t), 0);
                STRV_FOREACH(e, errors)
                        ck_assert_msg(strncmp(*e, "rnd:", 4) == 0, "'%s'", *e);
                strv_free(errors);
                account_table_free(t);
        }
}
END_TEST

static Suite *accounts_suite(void) {
        Suite *s = suite_create("accounts");
        TCase *tc = tcase_create("digest");
        tcase_add_test(tc, test_accounts_digest_known_values);
        tcase_add_test(tc, test_accounts_nonce_forgery_and_expiry);
        tcase_add_test(tc, test_accounts_strmap_lru_bound);
        suite_add_tcase(s, tc);
        tc = tcase_create("store");
        tcase_add_loop_test(tc, test_accounts_table_every_backend, 0, 3);
        tcase_add_test(tc, test_accounts_cache);
        tcase_add_test(tc, test_accounts_lookup_user);
        tcase_add_test(tc, test_accounts_broken_lines_skipped);
        tcase_add_test(tc, test_accounts_reload_on_change_and_request);
        tcase_add_test(tc, test_accounts_sql_errors);
        tcase_add_test(tc, test_accounts_parse_crlf_and_garbage);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run(accounts_suite());
}
