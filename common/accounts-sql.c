/* SPDX-License-Identifier: MIT */
/* The SQL backends of the account store: SQLite (read-only file) and MariaDB/MySQL
 * (libmariadb). Both run in the store's worker threads; see accounts.h for the request. */
#define LOG_SUBSYSTEM LOG_auth
#include <ctype.h>
#include <errmsg.h>
#include <mysql.h>
#include <sqlite3.h>
#include <stdio.h>

#include "accounts-internal.h"
#include "log.h"
#include "macro.h"

/* One (password, algorithm) row into s: 1 when taken, 0 when skipped (unknown algorithm, bad
 * hash, algorithm already set), -ENOMEM. */
static int secret_add_row(struct account_secret *s, const char *pw, const char *algo) {
        char **slot = NULL;
        if (strcaseeq(algo, "CLRTXT"))
                slot = &s->clrtxt;
        else {
                int a = digest_algorithm_from_name(algo);
                if (a >= 0 && account_valid_hex(pw, digest_hex_len(a)))
                        slot = &s->ha1[a];
        }
        if (!slot || *slot)
                return 0;
        if (!(*slot = strdup(pw)))
                return -ENOMEM;
        if (slot != &s->clrtxt)
                for (char *c = *slot; *c; c++)
                        *c = (char)tolower((unsigned char)*c);
        return 1;
}

static int secret_finish(struct account_secret **s, const char *user, const char *domain,
                         const char *authid, struct account_secret **ret) {
        if (!((*s)->user = strdup(user)) || !((*s)->domain = strdup(domain)) ||
            !((*s)->auth_user = strdup(authid)))
                return -ENOMEM;
        *ret = TAKE_PTR(*s);
        return 0;
}

/* ---- SQLite ---- */

bool account_request_uses(const char *request, const char *param) {
        size_t n = strlen(param);
        for (const char *p = strstr(request, param); p; p = strstr(p + 1, param))
                if (!isalnum((unsigned char)p[n]) && p[n] != '_')
                        return true;
        return false;
}

int account_sqlite_open(const char *path, const char *request, sqlite3 **db_ret,
                       sqlite3_stmt **stmt_ret, char **error) {
        sqlite3 *db = NULL;
        sqlite3_stmt *stmt = NULL;
        int rc = sqlite3_open_v2(path, &db,
                                 SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK) {
                if (error && asprintf(error, "cannot open '%s': %s", path,
                                      db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)) < 0)
                        *error = NULL;
                sqlite3_close(db);
                return -EIO;
        }
        sqlite3_busy_timeout(db, 2000);
        if (sqlite3_prepare_v2(db, request, -1, &stmt, NULL) != SQLITE_OK) {
                if (error && asprintf(error, "bad password request: %s", sqlite3_errmsg(db)) < 0)
                        *error = NULL;
                sqlite3_close(db);
                return -EINVAL;
        }
        if (sqlite3_bind_parameter_index(stmt, ":id") == 0 || sqlite3_column_count(stmt) < 1) {
                if (error)
                        *error = strdup("the password request must use :id and return "
                                        "(password, algorithm)");
                sqlite3_finalize(stmt);
                sqlite3_close(db);
                return -EINVAL;
        }
        *db_ret = db;
        *stmt_ret = stmt;
        return 0;
}

static void bind_named(sqlite3_stmt *stmt, const char *name, const char *value) {
        int i = sqlite3_bind_parameter_index(stmt, name);
        if (i > 0)
                sqlite3_bind_text(stmt, i, value, -1, SQLITE_TRANSIENT);
}

int account_sqlite_lookup(sqlite3 *db, sqlite3_stmt *stmt, bool uses_authid, const char *user,
                         const char *domain, const char *authid, struct account_secret **ret) {
        _cleanup_(account_secret_freep) struct account_secret *s = calloc(1, sizeof *s);
        int rc, r = 0;
        bool any = false;
        *ret = NULL;
        if (!s)
                return -ENOMEM;
        if (!authid)
                authid = user;
        if (!uses_authid && !streq(authid, user))
                return 0;
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
        bind_named(stmt, ":id", user);
        bind_named(stmt, ":domain", domain);
        bind_named(stmt, ":authid", authid);
        while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                const char *pw = (const char *)sqlite3_column_text(stmt, 0);
                const char *algo = sqlite3_column_count(stmt) > 1
                                           ? (const char *)sqlite3_column_text(stmt, 1)
                                           : "CLRTXT";
                if (!pw || !algo)
                        continue;
                int k = secret_add_row(s, pw, algo);
                if (k < 0) {
                        r = k;
                        break;
                }
                any = any || k > 0;
        }
        if (r == 0 && rc != SQLITE_DONE && rc != SQLITE_ROW) {
                log_debug("Password request failed: %s", sqlite3_errmsg(db));
                r = -EIO;
        }
        sqlite3_reset(stmt);
        if (r < 0 || !any)
                return r;
        return secret_finish(&s, user, domain, authid, ret);
}

/* ---- MariaDB / MySQL ---- */

struct account_mysql_params {
        char *db, *user, *password, *host, *unix_socket;
        unsigned port;
};

void account_mysql_params_free(struct account_mysql_params *p) {
        if (!p)
                return;
        free(p->db);
        free(p->user);
        if (p->password) {
                explicit_bzero(p->password, strlen(p->password));
                free(p->password);
        }
        free(p->host);
        free(p->unix_socket);
        free(p);
}

/* "key=value key='quoted value'..." as in the reference's soci-connection-string. */
int account_mysql_params_parse(const char *s, struct account_mysql_params **ret, char **error) {
        struct account_mysql_params *p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        int r = 0;
        while (s && *s && r == 0) {
                while (isspace((unsigned char)*s))
                        s++;
                if (!*s)
                        break;
                const char *eq = strchr(s, '=');
                if (!eq) {
                        r = -EINVAL;
                        break;
                }
                _cleanup_free_ char *key = strndup(s, (size_t)(eq - s));
                const char *v = eq + 1, *end;
                _cleanup_free_ char *value = NULL;
                if (*v == '\'') {
                        end = strchr(v + 1, '\'');
                        if (!end) {
                                r = -EINVAL;
                                break;
                        }
                        value = strndup(v + 1, (size_t)(end - v - 1));
                        s = end + 1;
                } else {
                        end = v + strcspn(v, " \t");
                        value = strndup(v, (size_t)(end - v));
                        s = end;
                }
                if (!key || !value) {
                        r = -ENOMEM;
                        break;
                }
                char **slot = NULL;
                if (streq(key, "db") || streq(key, "dbname"))
                        slot = &p->db;
                else if (streq(key, "user"))
                        slot = &p->user;
                else if (streq(key, "password") || streq(key, "pass"))
                        slot = &p->password;
                else if (streq(key, "host"))
                        slot = &p->host;
                else if (streq(key, "unix_socket"))
                        slot = &p->unix_socket;
                else if (streq(key, "port")) {
                        char *e;
                        unsigned long port = strtoul(value, &e, 10);
                        if (*e || port == 0 || port > 65535)
                                r = -EINVAL;
                        p->port = (unsigned)port;
                        continue;
                } else {
                        if (error && asprintf(error, "unknown connection-string key '%s'", key) < 0)
                                *error = NULL;
                        account_mysql_params_free(p);
                        return -EINVAL;
                }
                free(*slot);
                *slot = TAKE_PTR(value);
        }
        if (r < 0) {
                if (r == -EINVAL && error)
                        *error = strdup("bad connection string (key=value or key='value' pairs)");
                account_mysql_params_free(p);
                return r;
        }
        *ret = p;
        return 0;
}

int account_mysql_connect(const struct account_mysql_params *p, MYSQL **ret, char **error) {
        MYSQL *my = mysql_init(NULL);
        if (!my)
                return -ENOMEM;
        unsigned timeout = 5;
        mysql_options(my, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
        mysql_options(my, MYSQL_OPT_READ_TIMEOUT, &timeout);
        mysql_options(my, MYSQL_OPT_WRITE_TIMEOUT, &timeout);
        mysql_options(my, MYSQL_SET_CHARSET_NAME, "utf8mb4");
        if (!mysql_real_connect(my, p->host, p->user, p->password, p->db, p->port,
                                p->unix_socket, 0)) {
                if (error && asprintf(error, "cannot connect to the database: %s",
                                      mysql_error(my)) < 0)
                        *error = NULL;
                mysql_close(my);
                return -EIO;
        }
        *ret = my;
        return 0;
}

/* The request with :id, :domain and :authid replaced by quoted, escaped values. */
static char *mysql_request(MYSQL *my, const char *request, const char *user, const char *domain,
                           const char *authid) {
        struct {
                const char *name;
                const char *value;
        } params[] = {{":authid", authid}, {":domain", domain}, {":id", user}};
        size_t cap = strlen(request) + 1;
        for (size_t i = 0; i < ELEMENTSOF(params); i++)
                cap += 3 * (2 * strlen(params[i].value) + 3);
        char *out = malloc(cap), *o = out;
        if (!out)
                return NULL;
        for (const char *r = request; *r;) {
                bool done = false;
                for (size_t i = 0; i < ELEMENTSOF(params) && *r == ':'; i++) {
                        size_t n = strlen(params[i].name);
                        if (strncmp(r, params[i].name, n) != 0 || isalnum((unsigned char)r[n]) ||
                            r[n] == '_')
                                continue;
                        if ((size_t)(o - out) + 2 * strlen(params[i].value) + 3 >= cap) {
                                free(out);
                                return NULL; /* more placeholders than budgeted */
                        }
                        *o++ = '\'';
                        o += mysql_real_escape_string(my, o, params[i].value,
                                                      strlen(params[i].value));
                        *o++ = '\'';
                        r += n;
                        done = true;
                        break;
                }
                if (!done) {
                        if ((size_t)(o - out) + 1 >= cap) {
                                free(out);
                                return NULL;
                        }
                        *o++ = *r++;
                }
        }
        *o = 0;
        return out;
}

static int mysql_run(MYSQL *my, const char *request, const char *user, const char *domain,
                     const char *authid, MYSQL_RES **ret) {
        _cleanup_free_ char *q = mysql_request(my, request, user, domain, authid);
        if (!q)
                return -ENOMEM;
        if (mysql_real_query(my, q, strlen(q)) != 0)
                return -EIO;
        MYSQL_RES *res = mysql_store_result(my);
        if (!res)
                return -EIO;
        *ret = res;
        return 0;
}

int account_mysql_lookup(MYSQL **my, const char *request, bool uses_authid,
                         const struct account_mysql_params *params, const char *user, const char *domain,
                         const char *authid, struct account_secret **ret) {
        _cleanup_(account_secret_freep) struct account_secret *s = calloc(1, sizeof *s);
        MYSQL_RES *res = NULL;
        int r;
        bool any = false;
        *ret = NULL;
        if (!s)
                return -ENOMEM;
        if (!authid)
                authid = user;
        if (!uses_authid && !streq(authid, user))
                return 0;
        r = *my ? mysql_run(*my, request, user, domain, authid, &res) : -EIO;
        if (r == -EIO && (!*my || mysql_errno(*my) == CR_SERVER_GONE_ERROR ||
                          mysql_errno(*my) == CR_SERVER_LOST)) {
                /* The server went away (restart, idle timeout): one new connection. */
                mysql_close(*my);
                *my = NULL;
                if (account_mysql_connect(params, my, NULL) == 0)
                        r = mysql_run(*my, request, user, domain, authid, &res);
        }
        if (r < 0) {
                log_debug("Password request failed: %s",
                          *my ? mysql_error(*my) : "no connection");
                return r;
        }
        unsigned nf = mysql_num_fields(res);
        for (MYSQL_ROW row; (row = mysql_fetch_row(res));) {
                const char *pw = row[0];
                const char *algo = nf > 1 ? row[1] : "CLRTXT";
                if (!pw || !algo)
                        continue;
                int k = secret_add_row(s, pw, algo);
                if (k < 0) {
                        mysql_free_result(res);
                        return k;
                }
                any = any || k > 0;
        }
        mysql_free_result(res);
        if (!any)
                return 0;
        return secret_finish(&s, user, domain, authid, ret);
}

/* At start: the request must name :id and run (with empty values) without an error. */
int account_mysql_check(MYSQL *my, const char *request, char **error) {
        if (!account_request_uses(request, ":id")) {
                if (error)
                        *error = strdup("the password request must use :id and return "
                                        "(password, algorithm)");
                return -EINVAL;
        }
        MYSQL_RES *res = NULL;
        if (mysql_run(my, request, "", "", "", &res) < 0) {
                if (error && asprintf(error, "bad password request: %s", mysql_error(my)) < 0)
                        *error = NULL;
                return -EINVAL;
        }
        mysql_free_result(res);
        return 0;
}
