/* SPDX-License-Identifier: MIT */
/* Long-term presence in sipfleet-presence as built ([presence] long-term-enabled, the
 * [accounts] store), driven by the in-tree test UA: an address book of 200 contacts of which
 * 50 have accounts (some written as phone aliases) gets a first NOTIFY that lists exactly
 * those 50 as users, with a password file and with SQLite; a user's PUBLISH, its end and its
 * forgotten last activity reach the subscriber in partial NOTIFYs; single subscriptions to a
 * user and to a non-user; long-term-enabled=false keeps the former behaviour; a locked
 * database does not hold NOTIFYs beyond long-term-max-wait, and bad settings stop the server. */
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>

#include <sofia-sip/sip_header.h>

#include "loop.h"
#include "macro.h"
#include "testlib-mariadb.h"
#include "testlib-sip.h"
#include "testlib.h"

#define N_CONTACTS 200

static struct tl_daemon server;
static char server_uri[64];

static void start(const char *presence_extra, const char *accounts_extra) {
        int port = tl_free_port();
        _cleanup_free_ char *conf = NULL;
        ck_assert_int_ge(asprintf(&conf,
                                  "log-level=debug\n"
                                  "transports=sip:127.0.0.1:%d\n"
                                  "[presence]\n"
                                  "min-expires=1s\n"
                                  "max-list-size=%d\n"
                                  "linphone-list-compatibility=false\n"
                                  "%s"
                                  "[accounts]\n"
                                  "%s",
                                  port, N_CONTACTS, presence_extra, accounts_extra),
                         0);
        tl_daemon_start(&server, "presence", conf);
        snprintf(server_uri, sizeof server_uri, "sip:127.0.0.1:%d;transport=tcp", port);
}

static struct tl_ua *new_ua(void) {
        struct tl_ua *ua = tl_ua_new();
        tl_ua_set_proxy(ua, server_uri);
        return ua;
}

static long long counter(const char *name) {
        _cleanup_free_ char *path = NULL;
        ck_assert_int_ge(asprintf(&path, "presence/%s", name), 0);
        return tl_counter(server.sock, path);
}

/* Contact i of the address book. Every fourth one (0, 4... 196) has an account: 50 users.
 * Those with i % 20 == 0 appear in the book under their phone alias. */
static bool is_user(int i) {
        return i % 4 == 0;
}
static bool by_phone(int i) {
        return i % 20 == 0;
}
static void contact_uri(int i, char *buf, size_t size) {
        if (by_phone(i))
                snprintf(buf, size, "sip:+336000%05d@example.org;user=phone", i);
        else
                snprintf(buf, size, "sip:user%d@example.org", i);
}

/* Contacts from .. from + n - 1. */
static char *address_book_from(int from, int n) {
        char *s = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&s, &len);
        fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<resource-lists "
              "xmlns=\"urn:ietf:params:xml:ns:resource-lists\"><list>\n",
              f);
        for (int i = from; i < from + n; i++) {
                char uri[80];
                contact_uri(i, uri, sizeof uri);
                fprintf(f, "<entry uri=\"%s\"/>\n", uri);
        }
        fputs("</list></resource-lists>\n", f);
        fclose(f);
        return s;
}

static char *address_book(int n) {
        return address_book_from(0, n);
}

/* The password file: the users, user8 with a digest username of its own (a presence lookup
 * does not care), plus accounts of another domain that must not count. */
static char *password_file(void) {
        _cleanup_free_ char *s = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&s, &len);
        fputs("version:1\n", f);
        for (int i = 0; i < N_CONTACTS; i++) {
                if (!is_user(i))
                        continue;
                fprintf(f, "user%d@example.org clrtxt:pw%d ;", i, i);
                if (by_phone(i))
                        fprintf(f, " user%d +336000%05d", i, i);
                else if (i == 8)
                        fputs(" user8-auth", f);
                fputc('\n', f);
        }
        fputs("user1@other.org clrtxt:x ;\nuser2@other.org clrtxt:x ;\n", f);
        fclose(f);
        return tl_write_file("passwords", s);
}

#define SQL_REQUEST                                                                                \
        "select password, algorithm from passwords where account_id = (select id from accounts "   \
        "where (username = :id or phone = :id) and domain = :domain and activated = 1)"

/* The same accounts in SQLite, phone aliases in a column the request also matches; plus a
 * deactivated account (user1), which is not a user. */
static char *sqlite_db(void) {
        char *path = tl_path("accounts.db");
        sqlite3 *db;
        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        ck_assert_int_eq(
                sqlite3_exec(db,
                             "CREATE TABLE accounts (id INTEGER PRIMARY KEY, username TEXT NOT "
                             "NULL, domain TEXT NOT NULL, phone TEXT, activated INTEGER NOT NULL "
                             "DEFAULT 1);"
                             "CREATE TABLE passwords (id INTEGER PRIMARY KEY, account_id INTEGER "
                             "NOT NULL, password TEXT NOT NULL, algorithm TEXT NOT NULL);"
                             "INSERT INTO accounts VALUES (1000, 'user1', 'example.org', NULL, 0);"
                             "INSERT INTO passwords VALUES (1000, 1000, 'pw', 'CLRTXT');",
                             NULL, NULL, NULL),
                SQLITE_OK);
        for (int i = 0; i < N_CONTACTS; i++) {
                if (!is_user(i))
                        continue;
                _cleanup_free_ char *sql = NULL;
                char phone[32] = "NULL";
                if (by_phone(i))
                        snprintf(phone, sizeof phone, "'+336000%05d'", i);
                ck_assert_int_ge(asprintf(&sql,
                                          "INSERT INTO accounts VALUES (%d, 'user%d', "
                                          "'example.org', %s, 1);"
                                          "INSERT INTO passwords VALUES (%d, %d, 'pw', 'CLRTXT');",
                                          i + 1, i, phone, i + 1, i + 1),
                                 0);
                ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        }
        sqlite3_close(db);
        return path;
}

static char *body_of(msg_t *m) {
        sip_t *sip = sip_object(m);
        if (!sip->sip_payload)
                return strdup("");
        return strndup(sip->sip_payload->pl_data, sip->sip_payload->pl_len);
}

static size_t count(const char *s, const char *needle) {
        size_t n = 0;
        for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
                n++;
        return n;
}

/* The next NOTIFY (within timeout_ms): its body, malloc'd; *state gets its substate. */
static char *next_notify_within(struct tl_ua *ua, int timeout_ms, char *state, size_t size) {
        msg_t *m = tl_ua_next_request(ua, timeout_ms);
        ck_assert_msg(m != NULL, "no NOTIFY within %d ms", timeout_ms);
        sip_t *sip = sip_object(m);
        ck_assert_str_eq(sip->sip_request->rq_method_name, "NOTIFY");
        ck_assert_ptr_nonnull(sip->sip_subscription_state);
        snprintf(state, size, "%s", sip->sip_subscription_state->ss_substate);
        char *b = body_of(m);
        msg_destroy(m);
        return b;
}

static char *next_notify(struct tl_ua *ua, char *state, size_t size) {
        return next_notify_within(ua, 5000, state, size);
}

static void no_request(struct tl_ua *ua, int ms) {
        msg_t *m = tl_ua_next_request(ua, ms);
        if (m) {
                _cleanup_free_ char *b = body_of(m);
                ck_abort_msg("unexpected %s: %s", sip_object(m)->sip_request->rq_method_name, b);
        }
}

static char *pidf(const char *user, const char *activity) {
        char *s = NULL;
        ck_assert_int_ge(asprintf(&s,
                                  "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                                  "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" "
                                  "xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" "
                                  "xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" "
                                  "entity=\"sip:%s@example.org\">"
                                  "<tuple id=\"dev1\"><status><basic>open</basic></status>"
                                  "<contact priority=\"1\">sip:%s@10.0.0.1</contact></tuple>"
                                  "<dm:person id=\"p\"><rpid:activities><rpid:%s/>"
                                  "</rpid:activities></dm:person></presence>",
                                  user, user, activity),
                         0);
        return s;
}

/* PUBLISH for user@example.org: a new publication (etag NULL, body given) or a removal. */
static int publish(struct tl_ua *ua, const char *user, const char *etag, const char *expires,
                   const char *body, char **ret_etag) {
        _cleanup_free_ char *ruri = NULL, *hdrs = NULL;
        ck_assert_int_ge(asprintf(&ruri, "sip:%s@example.org", user), 0);
        ck_assert_int_ge(asprintf(&hdrs, "Event: presence\r\nExpires: %s%s%s%s", expires,
                                  etag ? "\r\nSIP-If-Match: " : "", etag ? etag : "",
                                  body ? "\r\nContent-Type: application/pidf+xml" : ""),
                         0);
        struct tl_dialog *d = tl_dialog_new(ua, ruri, ruri);
        msg_t *m = NULL;
        int status = tl_ua_send(d, "PUBLISH", ruri, hdrs, body, &m);
        tl_dialog_free(d);
        if (ret_etag) {
                sip_t *sip = m ? sip_object(m) : NULL;
                *ret_etag = sip && sip->sip_etag ? strdup(sip->sip_etag->g_string) : NULL;
        }
        if (m)
                msg_destroy(m);
        return status;
}

static struct tl_dialog *list_subscribe(struct tl_ua *ua, const char *book) {
        struct tl_dialog *d =
                tl_dialog_new(ua, "sip:owner@example.org", "sip:owner-friends@example.org");
        ck_assert_int_eq(tl_ua_send(d, "SUBSCRIBE", "sip:owner-friends@example.org",
                                    "Event: presence\r\nExpires: 600\r\nSupported: eventlist\r\n"
                                    "Accept: application/pidf+xml, application/rlmi+xml, "
                                    "multipart/related\r\n"
                                    "Content-Type: application/resource-lists+xml\r\n"
                                    "Content-Disposition: recipient-list",
                                    book, NULL),
                         200);
        return d;
}

static struct tl_dialog *subscribe(struct tl_ua *ua, const char *ruri) {
        struct tl_dialog *d = tl_dialog_new(ua, "sip:owner@example.org", ruri);
        ck_assert_int_eq(tl_ua_send(d, "SUBSCRIBE", ruri,
                                    "Event: presence\r\nExpires: 600\r\n"
                                    "Accept: application/pidf+xml",
                                    NULL, NULL),
                         200);
        return d;
}

/* Account lookups answered so far. */
static long long settled(void) {
        return counter("count-long-term-user") + counter("count-long-term-not-user") +
               counter("count-long-term-failed");
}

/* Is contact i listed with an instance (a user, its PIDF in the body) in this list NOTIFY? */
static bool listed_as_user(const char *body, int i) {
        char uri[80], with[128], without[128];
        contact_uri(i, uri, sizeof uri);
        snprintf(with, sizeof with, "<resource uri=\"%s\">\n    <instance ", uri);
        snprintf(without, sizeof without, "<resource uri=\"%s\"/>", uri);
        bool a = strstr(body, with) != NULL, b = strstr(body, without) != NULL;
        ck_assert_msg(a != b, "contact %d (%s) listed %s", i, uri, a ? "twice" : "nowhere");
        return a;
}

/* The full scenario against one account store (extra: the [accounts] settings). */
static void address_book_scenario(const char *accounts) {
        start("long-term-enabled=true\nlast-activity-retention-time=1s\n", accounts);
        struct tl_ua *owner = new_ua(), *phone = new_ua();
        char state[64];
        _cleanup_free_ char *book = address_book(N_CONTACTS);
        struct tl_dialog *d = list_subscribe(owner, book);

        /* The first NOTIFY already knows who the users are: exactly the 50 accounts, each with
         * an instance and a PIDF holding the default open tuple. */
        _cleanup_free_ char *n1 = next_notify(owner, state, sizeof state);
        ck_assert_str_eq(state, "active");
        ck_assert_ptr_nonnull(strstr(n1, "fullState=\"true\""));
        ck_assert_uint_eq(count(n1, "<resource "), N_CONTACTS);
        for (int i = 0; i < N_CONTACTS; i++)
                ck_assert_msg(listed_as_user(n1, i) == is_user(i), "contact %d", i);
        ck_assert_uint_eq(count(n1, "<instance "), 50);
        ck_assert_uint_eq(count(n1, "Content-Type: application/pidf+xml"), 50);
        ck_assert_uint_eq(count(n1, "<tuple id=\"long-term\">"), 50);
        ck_assert_uint_eq(count(n1, "<basic>open</basic>"), 50);
        ck_assert_ptr_nonnull(strstr(n1, "entity=\"sip:+33600000020@example.org\""));
        ck_assert_ptr_nonnull(strstr(n1, "entity=\"sip:user8@example.org\""));
        no_request(owner, 300);
        ck_assert_int_eq(counter("count-long-term-user"), 50);
        ck_assert_int_eq(counter("count-long-term-not-user"), 150);
        ck_assert_int_eq(counter("count-notify-hold-expired"), 0);

        /* user4 publishes: a partial NOTIFY with user4 only, in its published state. */
        _cleanup_free_ char *body = pidf("user4", "on-the-phone"), *etag = NULL;
        ck_assert_int_eq(publish(phone, "user4", NULL, "600", body, &etag), 200);
        _cleanup_free_ char *n2 = next_notify(owner, state, sizeof state);
        ck_assert_ptr_nonnull(strstr(n2, "fullState=\"false\""));
        ck_assert_uint_eq(count(n2, "<resource "), 1);
        ck_assert_ptr_nonnull(strstr(n2, "<resource uri=\"sip:user4@example.org\">"));
        ck_assert_ptr_nonnull(strstr(n2, "<rpid:on-the-phone/>"));
        ck_assert_ptr_nonnull(strstr(n2, "<tuple id=\"dev1\">"));
        ck_assert_ptr_null(strstr(n2, "long-term"));

        /* The publication ends: its last activity (closed, away), then, once forgotten, the
         * long-term default again. */
        ck_assert_int_eq(publish(phone, "user4", etag, "0", NULL, NULL), 200);
        _cleanup_free_ char *n3 = next_notify(owner, state, sizeof state);
        ck_assert_uint_eq(count(n3, "<resource "), 1);
        ck_assert_ptr_nonnull(strstr(n3, "<tuple id=\"last-activity\">"));
        ck_assert_ptr_nonnull(strstr(n3, "<basic>closed</basic>"));
        _cleanup_free_ char *n4 = next_notify(owner, state, sizeof state);
        ck_assert_uint_eq(count(n4, "<resource "), 1);
        ck_assert_ptr_nonnull(strstr(n4, "<resource uri=\"sip:user4@example.org\">"));
        ck_assert_ptr_nonnull(strstr(n4, "<tuple id=\"long-term\">"));
        ck_assert_ptr_nonnull(strstr(n4, "<basic>open</basic>"));

        /* A second subscriber to the same book: answered from what is known, no new lookup. */
        long long lookups = counter("count-long-term-lookup");
        struct tl_ua *other = new_ua();
        struct tl_dialog *d2 = list_subscribe(other, book);
        _cleanup_free_ char *n5 = next_notify(other, state, sizeof state);
        ck_assert_uint_eq(count(n5, "<instance "), 50);
        ck_assert_int_eq(counter("count-long-term-lookup"), lookups);

        ck_assert_int_eq(
                tl_ua_send(d, "SUBSCRIBE", NULL, "Event: presence\r\nExpires: 0", NULL, NULL), 200);
        _cleanup_free_ char *n6 = next_notify(owner, state, sizeof state);
        ck_assert_str_eq(state, "terminated");
        tl_dialog_free(d);
        tl_dialog_free(d2);
        tl_ua_free(other);
        tl_ua_free(phone);
        tl_ua_free(owner);
        tl_daemon_done(&server);
}

START_TEST(test_longterm_address_book_password_file) {
        _cleanup_free_ char *file = password_file(), *accounts = NULL;
        ck_assert_int_ge(asprintf(&accounts, "db-implementation=file\nfile-path=%s\n", file), 0);
        address_book_scenario(accounts);
}
END_TEST

START_TEST(test_longterm_address_book_sqlite) {
        _cleanup_free_ char *db = sqlite_db(), *accounts = NULL;
        ck_assert_int_ge(asprintf(&accounts,
                                  "db-implementation=sqlite\ndatabase-path=%s\n"
                                  "password-request=" SQL_REQUEST "\n",
                                  db),
                         0);
        address_book_scenario(accounts);
}
END_TEST

/* A single SUBSCRIBE: a user with nothing published gets the default open tuple; someone
 * without an account gets a PIDF without any tuple (unknown), like a deactivated account. */
START_TEST(test_longterm_single_subscriptions) {
        _cleanup_free_ char *db = sqlite_db(), *accounts = NULL;
        ck_assert_int_ge(asprintf(&accounts,
                                  "db-implementation=sqlite\ndatabase-path=%s\n"
                                  "password-request=" SQL_REQUEST "\n",
                                  db),
                         0);
        start("long-term-enabled=true\n", accounts);
        struct tl_ua *ua = new_ua();
        char state[64];
        static const struct {
                const char *uri;
                bool user;
        } cases[] = {
                {"sip:user0@example.org", true},  {"sip:+33600000040@example.org;user=phone", true},
                {"sip:user1@example.org", false}, /* deactivated */
                {"sip:user3@example.org", false}, {"sip:user4@other.org", false},
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct tl_dialog *d = subscribe(ua, cases[i].uri);
                _cleanup_free_ char *n = next_notify(ua, state, sizeof state);
                ck_assert_str_eq(state, "active");
                ck_assert_ptr_nonnull(strstr(n, "<presence "));
                if (cases[i].user) {
                        ck_assert_msg(strstr(n, "<tuple id=\"long-term\">"), "%s: %s", cases[i].uri,
                                      n);
                        ck_assert_ptr_nonnull(strstr(n, "<basic>open</basic>"));
                } else
                        ck_assert_msg(!strstr(n, "<tuple"), "%s: %s", cases[i].uri, n);
                no_request(ua, 100);
                tl_dialog_free(d);
        }
        json_t *j = tl_ctl(server.sock, "PRESENCE_PRESENTITIES user0@example.org");
        json_t *pr = json_array_get(json_object_get(j, "presentities"), 0);
        ck_assert_str_eq(json_string_value(json_object_get(pr, "account")), "user");
        json_decref(j);
        tl_ua_free(ua);
        tl_daemon_done(&server);
}
END_TEST

static void sql(const char *path, const char *statement) {
        sqlite3 *db;
        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        ck_assert_int_eq(sqlite3_exec(db, statement, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
}

/* A refresh asks the store again once the answer is older than cache-expire: an account
 * created or removed meanwhile shows. */
START_TEST(test_longterm_refresh_asks_again) {
        _cleanup_free_ char *db = sqlite_db(), *accounts = NULL;
        ck_assert_int_ge(asprintf(&accounts,
                                  "db-implementation=sqlite\ndatabase-path=%s\ncache-expire=1s\n"
                                  "password-request=" SQL_REQUEST "\n",
                                  db),
                         0);
        start("long-term-enabled=true\n", accounts);
        struct tl_ua *ua = new_ua();
        char state[64];
        struct tl_dialog *d = subscribe(ua, "sip:user3@example.org");
        _cleanup_free_ char *n1 = next_notify(ua, state, sizeof state);
        ck_assert_ptr_null(strstr(n1, "<tuple"));

        sql(db, "INSERT INTO accounts VALUES (4000, 'user3', 'example.org', NULL, 1);"
                "INSERT INTO passwords VALUES (4000, 4000, 'pw', 'CLRTXT');");
        /* Within cache-expire a refresh does not ask again. */
        ck_assert_int_eq(
                tl_ua_send(d, "SUBSCRIBE", NULL, "Event: presence\r\nExpires: 600", NULL, NULL),
                200);
        _cleanup_free_ char *n2 = next_notify(ua, state, sizeof state);
        ck_assert_ptr_null(strstr(n2, "<tuple"));
        tl_sip_run(1100);
        ck_assert_int_eq(
                tl_ua_send(d, "SUBSCRIBE", NULL, "Event: presence\r\nExpires: 600", NULL, NULL),
                200);
        _cleanup_free_ char *n3 = next_notify(ua, state, sizeof state);
        ck_assert_msg(strstr(n3, "<tuple id=\"long-term\">"), "%s", n3);
        no_request(ua, 200);

        /* The account goes away: after a refresh, no default tuple (and no last activity). */
        sql(db, "DELETE FROM accounts WHERE id = 4000;");
        tl_sip_run(1100);
        ck_assert_int_eq(
                tl_ua_send(d, "SUBSCRIBE", NULL, "Event: presence\r\nExpires: 600", NULL, NULL),
                200);
        /* The refresh's full NOTIFY waits for the answer, which removes the tuple: one
         * NOTIFY, or the tuple's removal in a second one. */
        _cleanup_free_ char *n4 = next_notify(ua, state, sizeof state);
        if (strstr(n4, "<tuple")) {
                free(n4);
                n4 = next_notify(ua, state, sizeof state);
        }
        ck_assert_msg(!strstr(n4, "<tuple"), "%s", n4);
        ck_assert_msg(!strstr(n4, "last-activity"), "%s", n4);
        tl_dialog_free(d);
        tl_ua_free(ua);
        tl_daemon_done(&server);
}
END_TEST

/* long-term-enabled=false (the default): no lookup, users are those who publish. */
START_TEST(test_longterm_disabled) {
        _cleanup_free_ char *file = password_file(), *accounts = NULL;
        ck_assert_int_ge(asprintf(&accounts, "file-path=%s\n", file), 0);
        start("", accounts);
        struct tl_ua *owner = new_ua(), *phone = new_ua();
        char state[64];
        _cleanup_free_ char *body = pidf("user4", "away");
        ck_assert_int_eq(publish(phone, "user4", NULL, "600", body, NULL), 200);
        _cleanup_free_ char *book = address_book(N_CONTACTS);
        struct tl_dialog *d = list_subscribe(owner, book);
        _cleanup_free_ char *n1 = next_notify(owner, state, sizeof state);
        ck_assert_uint_eq(count(n1, "<resource "), N_CONTACTS);
        ck_assert_uint_eq(count(n1, "<instance "), 1);
        ck_assert(listed_as_user(n1, 4));
        ck_assert_ptr_null(strstr(n1, "long-term"));
        struct tl_dialog *d2 = subscribe(owner, "sip:user0@example.org");
        _cleanup_free_ char *n2 = next_notify(owner, state, sizeof state);
        ck_assert_ptr_null(strstr(n2, "<tuple"));
        ck_assert_int_eq(counter("count-long-term-lookup"), 0);
        tl_dialog_free(d);
        tl_dialog_free(d2);
        tl_ua_free(owner);
        tl_ua_free(phone);
        tl_daemon_done(&server);
}
END_TEST

/* The database is locked by another writer (lookups wait 2 s each, then fail): the first
 * NOTIFY still leaves at long-term-max-wait with what is known, PUBLISHes keep flowing, and
 * once the lock is gone a new subscription finds the users. */
START_TEST(test_longterm_locked_store_does_not_stall) {
        _cleanup_free_ char *path = sqlite_db(), *accounts = NULL;
        ck_assert_int_ge(asprintf(&accounts,
                                  "db-implementation=sqlite\ndatabase-path=%s\ndb-threads=1\n"
                                  "password-request=" SQL_REQUEST "\n",
                                  path),
                         0);
        start("long-term-enabled=true\nlong-term-max-wait=500ms\n", accounts);
        sqlite3 *db;
        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        ck_assert_int_eq(sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);

        struct tl_ua *owner = new_ua(), *phone = new_ua();
        char state[64];
        _cleanup_free_ char *book = address_book(8); /* users: contacts 0 and 4 */
        uint64_t t0 = now_msec();
        struct tl_dialog *d = list_subscribe(owner, book);
        _cleanup_free_ char *n1 = next_notify_within(owner, 1500, state, sizeof state);
        uint64_t waited = now_msec() - t0;
        ck_assert_msg(waited >= 450 && waited < 1500, "first NOTIFY after %llu ms",
                      (unsigned long long)waited);
        ck_assert_ptr_nonnull(strstr(n1, "fullState=\"true\""));
        ck_assert_uint_eq(count(n1, "<resource "), 8);
        ck_assert_uint_eq(count(n1, "<instance "), 0);
        ck_assert_int_eq(counter("count-notify-hold-expired"), 1);

        /* The loop is free: a PUBLISH of a contact goes through at once. */
        _cleanup_free_ char *body = pidf("user5", "away");
        t0 = now_msec();
        ck_assert_int_eq(publish(phone, "user5", NULL, "600", body, NULL), 200);
        _cleanup_free_ char *n2 = next_notify_within(owner, 1000, state, sizeof state);
        ck_assert_msg(now_msec() - t0 < 1000, "partial NOTIFY after %llu ms",
                      (unsigned long long)(now_msec() - t0));
        ck_assert_ptr_nonnull(strstr(n2, "<resource uri=\"sip:user5@example.org\">"));
        ck_assert_uint_eq(count(n2, "<resource "), 1);

        /* Lookups time out (SQLITE_BUSY after 2 s): failed, nothing to send for them. */
        for (int i = 0; i < 100 && counter("count-long-term-failed") < 1; i++)
                tl_sip_run(50);
        ck_assert_int_ge(counter("count-long-term-failed"), 1);
        ck_assert_int_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        /* A late answer: user4 reaches the first subscriber in a partial NOTIFY. */
        _cleanup_free_ char *late = next_notify_within(owner, 5000, state, sizeof state);
        ck_assert_ptr_nonnull(strstr(late, "fullState=\"false\""));
        ck_assert_uint_eq(count(late, "<resource "), 1);
        ck_assert(listed_as_user(late, 4));
        ck_assert_ptr_nonnull(strstr(late, "<tuple id=\"long-term\">"));

        /* Lookups still queued answer now: users reported in partial NOTIFYs, and a new
         * subscription asks again for the failed ones. */
        for (int i = 0; i < 200 && settled() < 8; i++)
                tl_sip_run(50);
        struct tl_ua *other = new_ua();
        struct tl_dialog *d2 = list_subscribe(other, book);
        _cleanup_free_ char *n3 = next_notify_within(other, 1500, state, sizeof state);
        ck_assert_uint_eq(count(n3, "<resource "), 8);
        ck_assert(listed_as_user(n3, 0));
        ck_assert(listed_as_user(n3, 4));
        ck_assert(listed_as_user(n3, 5)); /* published */
        ck_assert_uint_eq(count(n3, "<instance "), 3);
        tl_dialog_free(d);
        tl_dialog_free(d2);
        tl_ua_free(other);
        tl_ua_free(owner);
        tl_ua_free(phone);
        tl_daemon_done(&server);
}
END_TEST

/* MariaDB frozen (SIGSTOP: connected, but it answers nothing): the first NOTIFY leaves at
 * long-term-max-wait; when the server wakes up, the late answers follow in partial NOTIFYs. */
START_TEST(test_longterm_mariadb_frozen) {
        struct tl_mariadb m;
        tl_mariadb_start(&m);
        tl_mariadb_sql(&m, "CREATE DATABASE sip CHARACTER SET utf8mb4 COLLATE utf8mb4_bin; USE sip;"
                           "CREATE TABLE accounts (id INTEGER PRIMARY KEY, username VARCHAR(64) "
                           "NOT NULL, domain VARCHAR(64) NOT NULL, phone VARCHAR(32), activated "
                           "INTEGER NOT NULL DEFAULT 1);"
                           "CREATE TABLE passwords (id INTEGER PRIMARY KEY, account_id INTEGER "
                           "NOT NULL, password VARCHAR(128) NOT NULL, algorithm VARCHAR(16) NOT "
                           "NULL);"
                           "INSERT INTO accounts VALUES (1, 'user0', 'example.org', "
                           "'+33600000000', 1), (5, 'user4', 'example.org', NULL, 1),"
                           " (9, 'user8', 'example.org', NULL, 1), (13, 'user12', 'example.org',"
                           " NULL, 1);"
                           "INSERT INTO passwords VALUES (1, 1, 'pw', 'CLRTXT'), (5, 5, 'pw', "
                           "'CLRTXT'), (9, 9, 'pw', 'CLRTXT'), (13, 13, 'pw', 'CLRTXT');");
        _cleanup_free_ char *accounts = NULL;
        ck_assert_int_ge(asprintf(&accounts,
                                  "db-implementation=mysql\n"
                                  "connection-string=db=sip user=presence password='s3cret' "
                                  "unix_socket=%s\ndb-threads=1\n"
                                  "password-request=" SQL_REQUEST "\n",
                                  m.sock),
                         0);
        start("long-term-enabled=true\nlong-term-max-wait=500ms\n", accounts);
        struct tl_ua *owner = new_ua(), *phone = new_ua();
        char state[64];

        /* Awake: contacts 0..7, users 0 (by its phone alias) and 4. */
        _cleanup_free_ char *book1 = address_book(8);
        struct tl_dialog *d1 = list_subscribe(owner, book1);
        _cleanup_free_ char *n1 = next_notify(owner, state, sizeof state);
        ck_assert_uint_eq(count(n1, "<instance "), 2);
        ck_assert(listed_as_user(n1, 0));
        ck_assert(listed_as_user(n1, 4));
        ck_assert_int_eq(counter("count-notify-hold-expired"), 0);

        /* Frozen: contacts 8..15, users 8 and 12. */
        tl_freeze(&m.proc);
        _cleanup_free_ char *book2 = address_book_from(8, 8);
        struct tl_ua *owner2 = new_ua();
        uint64_t t0 = now_msec();
        struct tl_dialog *d2 = list_subscribe(owner2, book2);
        _cleanup_free_ char *n2 = next_notify_within(owner2, 1500, state, sizeof state);
        uint64_t waited = now_msec() - t0;
        ck_assert_msg(waited >= 450 && waited < 1500, "first NOTIFY after %llu ms",
                      (unsigned long long)waited);
        ck_assert_uint_eq(count(n2, "<resource "), 8);
        ck_assert_uint_eq(count(n2, "<instance "), 0);
        ck_assert_int_eq(counter("count-notify-hold-expired"), 1);
        _cleanup_free_ char *body = pidf("user9", "away");
        ck_assert_int_eq(publish(phone, "user9", NULL, "600", body, NULL), 200);
        _cleanup_free_ char *n3 = next_notify_within(owner2, 1000, state, sizeof state);
        ck_assert_ptr_nonnull(strstr(n3, "<resource uri=\"sip:user9@example.org\">"));

        /* Awake again: user8 and user12 arrive in partial NOTIFYs. */
        ck_assert_int_eq(kill(m.proc.pid, SIGCONT), 0);
        bool seen8 = false, seen12 = false;
        for (int i = 0; i < 4 && !(seen8 && seen12); i++) {
                _cleanup_free_ char *n = next_notify_within(owner2, 5000, state, sizeof state);
                ck_assert_ptr_nonnull(strstr(n, "fullState=\"false\""));
                ck_assert_ptr_nonnull(strstr(n, "<tuple id=\"long-term\">"));
                seen8 = seen8 || strstr(n, "<resource uri=\"sip:user8@example.org\">");
                seen12 = seen12 || strstr(n, "<resource uri=\"sip:user12@example.org\">");
        }
        ck_assert(seen8 && seen12);
        _cleanup_free_ char *log = tl_log(&server.proc);
        ck_assert_ptr_null(strstr(log, "s3cret")); /* the password is never logged */
        tl_dialog_free(d1);
        tl_dialog_free(d2);
        tl_ua_free(owner);
        tl_ua_free(owner2);
        tl_ua_free(phone);
        tl_daemon_done(&server);
        tl_mariadb_stop(&m);
}
END_TEST

/* A fetch (Expires: 0) waits for the lookup too; a shutdown does not wait for a held NOTIFY,
 * and the server exits cleanly with a lookup still stuck in the database. */
START_TEST(test_longterm_fetch_and_shutdown) {
        _cleanup_free_ char *path = sqlite_db(), *accounts = NULL;
        ck_assert_int_ge(asprintf(&accounts,
                                  "db-implementation=sqlite\ndatabase-path=%s\ndb-threads=1\n"
                                  "password-request=" SQL_REQUEST "\n",
                                  path),
                         0);
        start("long-term-enabled=true\nlong-term-max-wait=10s\n", accounts);
        struct tl_ua *ua = new_ua();
        char state[64];
        struct tl_dialog *d = tl_dialog_new(ua, "sip:owner@example.org", "sip:user4@example.org");
        ck_assert_int_eq(tl_ua_send(d, "SUBSCRIBE", "sip:user4@example.org",
                                    "Event: presence\r\nExpires: 0", NULL, NULL),
                         200);
        _cleanup_free_ char *n1 = next_notify(ua, state, sizeof state);
        ck_assert_str_eq(state, "terminated");
        ck_assert_ptr_nonnull(strstr(n1, "<tuple id=\"long-term\">"));
        tl_dialog_free(d);

        sqlite3 *db;
        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        ck_assert_int_eq(sqlite3_exec(db, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
        d = subscribe(ua, "sip:user8@example.org");
        no_request(ua, 300); /* held: the lookup is stuck */
        uint64_t t0 = now_msec();
        tl_kill(&server.proc, SIGTERM);
        _cleanup_free_ char *n2 = next_notify_within(ua, 2000, state, sizeof state);
        ck_assert_msg(now_msec() - t0 < 2000, "final NOTIFY after %llu ms",
                      (unsigned long long)(now_msec() - t0));
        ck_assert_str_eq(state, "terminated");
        tl_sip_run(200);
        int st = tl_wait(&server.proc, 5000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", st);
        ck_assert_int_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        tl_dialog_free(d);
        tl_ua_free(ua);
        tl_daemon_done(&server);
}
END_TEST

static void refused(const char *conf_text, const char *message) {
        _cleanup_free_ char *bin = tl_build_path("presence/sipfleet-presence");
        _cleanup_free_ char *conf = tl_write_file("bad.conf", conf_text);
        char *argv[] = {bin, "--config", conf, NULL};
        struct tl_proc p;
        ck_assert_int_eq(tl_spawn("presence-bad", argv, &p), 0);
        int st = tl_wait(&p, 10000);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0);
        _cleanup_free_ char *log = tl_log(&p);
        ck_assert_msg(strstr(log, message), "wanted '%s' in: %s", message, log);
        free(p.log);
}

START_TEST(test_longterm_bad_settings) {
        const char *head = "[global]\ntransports=sip:127.0.0.1:1\ncontrol-socket=/nonexistent/x\n"
                           "[presence]\nlong-term-enabled=true\n[accounts]\n";
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL, *e = NULL;
        ck_assert_int_ge(asprintf(&a, "%s", head), 0);
        refused(a, "file-path is needed");
        ck_assert_int_ge(asprintf(&b, "%sdb-implementation=sqlite\n", head), 0);
        refused(b, "database-path is needed");
        ck_assert_int_ge(asprintf(&c, "%sfile-path=/nonexistent/passwords\n", head), 0);
        refused(c, "Failed to open the account store");
        ck_assert_int_ge(asprintf(&e, "%sdb-implementation=ldap\n", head), 0);
        refused(e, "ldap");
}
END_TEST

static Suite *suite(void) {
        Suite *s = suite_create("presence-longterm");
        TCase *tc = tcase_create("longterm");
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_longterm_address_book_password_file);
        tcase_add_test(tc, test_longterm_address_book_sqlite);
        tcase_add_test(tc, test_longterm_single_subscriptions);
        tcase_add_test(tc, test_longterm_refresh_asks_again);
        tcase_add_test(tc, test_longterm_disabled);
        tcase_add_test(tc, test_longterm_locked_store_does_not_stall);
        tcase_add_test(tc, test_longterm_mariadb_frozen);
        tcase_add_test(tc, test_longterm_fetch_and_shutdown);
        tcase_add_test(tc, test_longterm_bad_settings);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tl_run(suite());
}
