/* SPDX-License-Identifier: MIT */
/* The account store: password file and SQLite backends, a worker pool, a bounded cache. */
#define LOG_SUBSYSTEM LOG_auth
#include <ctype.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <mysql.h>
#include <errmsg.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#include "accounts.h"
#include "log.h"
#include "loop.h"
#include "macro.h"
#include "strmap.h"

/* ---- secrets ---- */

void account_secret_free(struct account_secret *s) {
        if (!s)
                return;
        free(s->user);
        free(s->domain);
        free(s->auth_user);
        free(s->phone);
        if (s->clrtxt) {
                explicit_bzero(s->clrtxt, strlen(s->clrtxt));
                free(s->clrtxt);
        }
        for (size_t i = 0; i < _DIGEST_MAX; i++)
                free(s->ha1[i]);
        free(s);
}

static int dup_field(char **dst, const char *src) {
        if (!src)
                return 0;
        return (*dst = strdup(src)) ? 0 : -ENOMEM;
}

struct account_secret *account_secret_dup(const struct account_secret *s) {
        struct account_secret *d = calloc(1, sizeof *d);
        if (!d)
                return NULL;
        int r = dup_field(&d->user, s->user);
        if (r >= 0)
                r = dup_field(&d->domain, s->domain);
        if (r >= 0)
                r = dup_field(&d->auth_user, s->auth_user);
        if (r >= 0)
                r = dup_field(&d->phone, s->phone);
        if (r >= 0)
                r = dup_field(&d->clrtxt, s->clrtxt);
        for (size_t i = 0; r >= 0 && i < _DIGEST_MAX; i++)
                r = dup_field(&d->ha1[i], s->ha1[i]);
        if (r < 0) {
                account_secret_free(d);
                return NULL;
        }
        return d;
}

bool account_secret_has(const struct account_secret *s, enum digest_algorithm a) {
        return s->clrtxt || s->ha1[a];
}

int account_secret_ha1(const struct account_secret *s, enum digest_algorithm a, const char *realm,
                       char out[static DIGEST_HEX_MAX]) {
        if (s->clrtxt)
                return digest_ha1(a, s->auth_user, realm, s->clrtxt, out);
        if (!s->ha1[a])
                return -ENOENT;
        snprintf(out, DIGEST_HEX_MAX, "%s", s->ha1[a]);
        return 0;
}

/* ---- password file ---- */

struct account_table {
        struct strmap *by_id; /* "user@domain" and "phone@domain" → secret (phones: not owned) */
        struct account_secret **all;
        size_t n;
};

void account_table_free(struct account_table *t) {
        if (!t)
                return;
        strmap_free(t->by_id);
        for (size_t i = 0; i < t->n; i++)
                account_secret_free(t->all[i]);
        free(t->all);
        free(t);
}

static void account_table_freep(struct account_table **t) {
        account_table_free(*t);
}

size_t account_table_size(const struct account_table *t) {
        return t ? t->n : 0;
}

static char *key_of(const char *user, const char *domain) {
        char *k;
        if (asprintf(&k, "%s@%s", user, domain) < 0)
                return NULL;
        for (char *c = strchr(k, '@') + 1; *c; c++)
                *c = (char)tolower((unsigned char)*c);
        return k;
}

const struct account_secret *account_table_find(const struct account_table *t, const char *user,
                                                const char *domain, const char *authid) {
        if (!t || !user || !domain)
                return NULL;
        _cleanup_free_ char *k = key_of(user, domain);
        const struct account_secret *s = k ? strmap_peek(t->by_id, k) : NULL;
        if (!s || (authid && !streq(authid, s->auth_user)))
                return NULL;
        return s;
}

static bool valid_hex(const char *s, size_t len) {
        if (strlen(s) != len)
                return false;
        for (; *s; s++)
                if (!isxdigit((unsigned char)*s))
                        return false;
        return true;
}

static bool valid_token(const char *s) {
        if (isempty(s))
                return false;
        for (; *s; s++)
                if ((unsigned char)*s <= ' ' || *s == ';' || *s == '@' || *s == ':')
                        return false;
        return true;
}

static int add_error(char ***errors, const char *path, unsigned line, const char *fmt, ...)
        _printf_(4, 5);
static int add_error(char ***errors, const char *path, unsigned line, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL, *full = NULL;
        va_list ap;
        va_start(ap, fmt);
        int r = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (r < 0 || asprintf(&full, "%s:%u: %s", path, line, msg) < 0)
                return -ENOMEM;
        return strv_extend(errors, full);
}

static void secret_freep(struct account_secret **s) {
        account_secret_free(*s);
}

/* One "identity algo:value... ; [authuser] [phone]" line into *ret; NULL and a message in
 * *error for a bad line. -ENOMEM only on allocation failure. */
static int parse_line(char *line, struct account_secret **ret, const char **error) {
        _cleanup_(secret_freep) struct account_secret *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        *ret = NULL;
        char *semi = strchr(line, ';');
        if (!semi) {
                *error = "missing ';' after the passwords";
                return 0;
        }
        *semi = 0;
        char *save = NULL;
        char *identity = strtok_r(line, " \t", &save);
        char *at = identity ? strchr(identity, '@') : NULL;
        if (!at || at == identity || !at[1]) {
                *error = "expected user@domain first";
                return 0;
        }
        *at = 0;
        if (!valid_token(identity) || !valid_token(at + 1)) {
                *error = "bad characters in the identity";
                return 0;
        }
        if (!(s->user = strdup(identity)) || !(s->domain = strdup(at + 1)))
                return -ENOMEM;
        for (char *d = s->domain; *d; d++)
                *d = (char)tolower((unsigned char)*d);
        size_t n_pass = 0;
        for (char *tok; (tok = strtok_r(NULL, " \t", &save));) {
                char *colon = strchr(tok, ':');
                if (!colon || !colon[1]) {
                        *error = "expected algorithm:value (clrtxt, md5, sha256)";
                        return 0;
                }
                *colon = 0;
                const char *value = colon + 1;
                char **slot;
                if (strcaseeq(tok, "clrtxt"))
                        slot = &s->clrtxt;
                else if (strcaseeq(tok, "md5")) {
                        if (!valid_hex(value, 32)) {
                                *error = "md5: needs 32 hexadecimal digits";
                                return 0;
                        }
                        slot = &s->ha1[DIGEST_MD5];
                } else if (strcaseeq(tok, "sha256") || strcaseeq(tok, "sha-256")) {
                        if (!valid_hex(value, 64)) {
                                *error = "sha256: needs 64 hexadecimal digits";
                                return 0;
                        }
                        slot = &s->ha1[DIGEST_SHA256];
                } else {
                        *error = "unknown algorithm (clrtxt, md5, sha256)";
                        return 0;
                }
                if (*slot) {
                        *error = "the same algorithm twice";
                        return 0;
                }
                if (!(*slot = strdup(value)))
                        return -ENOMEM;
                if (slot != &s->clrtxt)
                        for (char *c = *slot; *c; c++)
                                *c = (char)tolower((unsigned char)*c);
                n_pass++;
        }
        if (n_pass == 0) {
                *error = "no password";
                return 0;
        }
        save = NULL;
        char *auth_user = strtok_r(semi + 1, " \t", &save);
        char *phone = auth_user ? strtok_r(NULL, " \t", &save) : NULL;
        if (phone && strtok_r(NULL, " \t", &save)) {
                *error = "more than an auth user and a phone alias after ';'";
                return 0;
        }
        if ((auth_user && !valid_token(auth_user)) || (phone && !valid_token(phone))) {
                *error = "bad characters after ';'";
                return 0;
        }
        if (!(s->auth_user = strdup(auth_user ? auth_user : s->user)) ||
            (phone && !(s->phone = strdup(phone))))
                return -ENOMEM;
        *ret = TAKE_PTR(s);
        return 0;
}

int account_table_parse(const char *path, const char *text, size_t len, char ***errors,
                        struct account_table **ret) {
        _cleanup_(account_table_freep) struct account_table *t = calloc(1, sizeof *t);
        size_t n_lines = 1, cap = 0;
        unsigned lineno = 0;
        bool version_seen = false;
        int r;
        if (!t)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++)
                n_lines += text[i] == '\n';
        if ((r = strmap_new(MAX(n_lines * 2, (size_t)1), NULL, &t->by_id)) < 0)
                return r;
        for (size_t pos = 0; pos < len;) {
                const char *nl = memchr(text + pos, '\n', len - pos);
                size_t end = nl ? (size_t)(nl - text) : len;
                _cleanup_free_ char *line = strndup(text + pos, end - pos);
                pos = end + 1;
                lineno++;
                if (!line)
                        return -ENOMEM;
                char *l = line;
                while (isspace((unsigned char)*l))
                        l++;
                for (char *e = l + strlen(l); e > l && isspace((unsigned char)e[-1]);)
                        *--e = 0;
                if (!*l || *l == '#')
                        continue;
                if (!version_seen && strncmp(l, "version:", 8) == 0) {
                        version_seen = true;
                        if (!streq(l + 8, "1") &&
                            (r = add_error(errors, path, lineno,
                                           "unknown version '%s', reading it as version 1",
                                           l + 8)) < 0)
                                return r;
                        continue;
                }
                struct account_secret *s = NULL;
                const char *error = NULL;
                if ((r = parse_line(l, &s, &error)) < 0)
                        return r;
                if (!s) {
                        if ((r = add_error(errors, path, lineno, "%s, line skipped", error)) < 0)
                                return r;
                        continue;
                }
                _cleanup_free_ char *k = key_of(s->user, s->domain);
                _cleanup_free_ char *kp = s->phone ? key_of(s->phone, s->domain) : NULL;
                if (!k || (s->phone && !kp)) {
                        account_secret_free(s);
                        return -ENOMEM;
                }
                if (strmap_peek(t->by_id, k)) {
                        r = add_error(errors, path, lineno,
                                      "'%s@%s' already defined, line skipped", s->user,
                                      s->domain);
                        account_secret_free(s);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (t->n == cap) {
                        size_t ncap = cap ? cap * 2 : 16;
                        struct account_secret **na = realloc(t->all, ncap * sizeof *na);
                        if (!na) {
                                account_secret_free(s);
                                return -ENOMEM;
                        }
                        t->all = na;
                        cap = ncap;
                }
                t->all[t->n++] = s;
                if ((r = strmap_put(t->by_id, k, s)) < 0)
                        return r;
                if (kp && !strmap_peek(t->by_id, kp) && (r = strmap_put(t->by_id, kp, s)) < 0)
                        return r;
        }
        *ret = TAKE_PTR(t);
        return 0;
}

static int read_file(const char *path, char **ret, size_t *len) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        struct stat st;
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        if (st.st_size > 256 << 20)
                return -EFBIG;
        _cleanup_free_ char *buf = malloc((size_t)st.st_size + 1);
        size_t n = 0;
        if (!buf)
                return -ENOMEM;
        while (n < (size_t)st.st_size) {
                ssize_t k = read(fd, buf + n, (size_t)st.st_size - n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        break;
                n += (size_t)k;
        }
        buf[n] = 0;
        *len = n;
        *ret = TAKE_PTR(buf);
        return 0;
}

static int load_file(const char *path, char ***errors, struct account_table **ret) {
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        int r = read_file(path, &text, &len);
        if (r < 0)
                return r;
        return account_table_parse(path, text, len, errors, ret);
}

/* ---- SQLite ---- */

static bool request_uses(const char *request, const char *param) {
        size_t n = strlen(param);
        for (const char *p = strstr(request, param); p; p = strstr(p + 1, param))
                if (!isalnum((unsigned char)p[n]) && p[n] != '_')
                        return true;
        return false;
}

static int sqlite_open(const char *path, const char *request, sqlite3 **db_ret,
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

static int sqlite_lookup(sqlite3 *db, sqlite3_stmt *stmt, bool uses_authid, const char *user,
                         const char *domain, const char *authid, struct account_secret **ret) {
        _cleanup_(secret_freep) struct account_secret *s = calloc(1, sizeof *s);
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
                char **slot = NULL;
                if (strcaseeq(algo, "CLRTXT"))
                        slot = &s->clrtxt;
                else {
                        int a = digest_algorithm_from_name(algo);
                        if (a >= 0 && valid_hex(pw, digest_hex_len(a)))
                                slot = &s->ha1[a];
                }
                if (!slot || *slot)
                        continue;
                if (!(*slot = strdup(pw))) {
                        r = -ENOMEM;
                        break;
                }
                if (slot != &s->clrtxt)
                        for (char *c = *slot; *c; c++)
                                *c = (char)tolower((unsigned char)*c);
                any = true;
        }
        if (r == 0 && rc != SQLITE_DONE && rc != SQLITE_ROW) {
                log_debug("Password request failed: %s", sqlite3_errmsg(db));
                r = -EIO;
        }
        sqlite3_reset(stmt);
        if (r < 0 || !any)
                return r;
        if (!(s->user = strdup(user)) || !(s->domain = strdup(domain)) ||
            !(s->auth_user = strdup(authid)))
                return -ENOMEM;
        *ret = TAKE_PTR(s);
        return 0;
}

/* ---- the store ---- */

enum job_kind { JOB_LOOKUP, JOB_RELOAD };

struct job {
        struct job *next;
        enum job_kind kind;
        char *user, *domain, *authid;
        account_lookup_fn cb;
        void *userdata;
        int error;
        struct account_secret *result;
        struct account_table *table; /* JOB_RELOAD */
        char **errors;
};

struct worker {
        struct account_store *store;
        pthread_t thread;
        bool started;
        sqlite3 *db;
        sqlite3_stmt *stmt;
        MYSQL *my;
};

struct cache_entry {
        struct account_secret *secret; /* NULL: unknown account */
        char *user, *domain, *authid;
        uint64_t expires_at;
};

struct account_store {
        struct account_store_config cfg;
        char *file_path, *database_path, *request;
        struct mysql_params *mysql;
        bool uses_authid;
        struct loop *loop;
        struct account_table *table;

        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct job *queue_head, **queue_tail; /* waiting for a worker */
        size_t queue_len;
        struct job *done_head, **done_tail;   /* finished, for the loop */
        bool stop;
        struct worker *workers;
        size_t n_workers;

        int efd;
        struct loop_io *efd_io;
        int ifd; /* inotify, file backend with watch */
        struct loop_io *ifd_io;
        char *watch_name;

        struct strmap *cache;
        bool reload_pending;
};

/* ---- MariaDB / MySQL ---- */

struct mysql_params {
        char *db, *user, *password, *host, *unix_socket;
        unsigned port;
};

static void mysql_params_free(struct mysql_params *p) {
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
static int mysql_params_parse(const char *s, struct mysql_params **ret, char **error) {
        struct mysql_params *p = calloc(1, sizeof *p);
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
                        mysql_params_free(p);
                        return -EINVAL;
                }
                free(*slot);
                *slot = TAKE_PTR(value);
        }
        if (r < 0) {
                if (r == -EINVAL && error)
                        *error = strdup("bad connection string (key=value or key='value' pairs)");
                mysql_params_free(p);
                return r;
        }
        *ret = p;
        return 0;
}

static int mysql_connect(const struct mysql_params *p, MYSQL **ret, char **error) {
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

static int mysql_lookup(struct worker *w, const char *request, bool uses_authid,
                        const struct mysql_params *params, const char *user, const char *domain,
                        const char *authid, struct account_secret **ret) {
        _cleanup_(secret_freep) struct account_secret *s = calloc(1, sizeof *s);
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
        r = w->my ? mysql_run(w->my, request, user, domain, authid, &res) : -EIO;
        if (r == -EIO && (!w->my || mysql_errno(w->my) == CR_SERVER_GONE_ERROR ||
                          mysql_errno(w->my) == CR_SERVER_LOST)) {
                /* The server went away (restart, idle timeout): one new connection. */
                mysql_close(w->my);
                w->my = NULL;
                if (mysql_connect(params, &w->my, NULL) == 0)
                        r = mysql_run(w->my, request, user, domain, authid, &res);
        }
        if (r < 0) {
                log_debug("Password request failed: %s", w->my ? mysql_error(w->my) : "no connection");
                return r;
        }
        unsigned nf = mysql_num_fields(res);
        for (MYSQL_ROW row; (row = mysql_fetch_row(res));) {
                const char *pw = row[0];
                const char *algo = nf > 1 ? row[1] : "CLRTXT";
                if (!pw || !algo)
                        continue;
                char **slot = NULL;
                if (strcaseeq(algo, "CLRTXT"))
                        slot = &s->clrtxt;
                else {
                        int a = digest_algorithm_from_name(algo);
                        if (a >= 0 && valid_hex(pw, digest_hex_len(a)))
                                slot = &s->ha1[a];
                }
                if (!slot || *slot)
                        continue;
                if (!(*slot = strdup(pw))) {
                        mysql_free_result(res);
                        return -ENOMEM;
                }
                if (slot != &s->clrtxt)
                        for (char *c = *slot; *c; c++)
                                *c = (char)tolower((unsigned char)*c);
                any = true;
        }
        mysql_free_result(res);
        if (!any)
                return 0;
        if (!(s->user = strdup(user)) || !(s->domain = strdup(domain)) ||
            !(s->auth_user = strdup(authid)))
                return -ENOMEM;
        *ret = TAKE_PTR(s);
        return 0;
}

/* At start: the request must name :id and run (with empty values) without an error. */
static int mysql_check(struct worker *w, const char *request, char **error) {
        if (!request_uses(request, ":id")) {
                if (error)
                        *error = strdup("the password request must use :id and return "
                                        "(password, algorithm)");
                return -EINVAL;
        }
        MYSQL_RES *res = NULL;
        if (mysql_run(w->my, request, "", "", "", &res) < 0) {
                if (error && asprintf(error, "bad password request: %s", mysql_error(w->my)) < 0)
                        *error = NULL;
                return -EINVAL;
        }
        mysql_free_result(res);
        return 0;
}

static void job_free(struct job *j) {
        if (!j)
                return;
        free(j->user);
        free(j->domain);
        free(j->authid);
        account_secret_free(j->result);
        account_table_free(j->table);
        strv_free(j->errors);
        free(j);
}

static void cache_entry_free(void *p) {
        struct cache_entry *e = p;
        if (!e)
                return;
        account_secret_free(e->secret);
        free(e->user);
        free(e->domain);
        free(e->authid);
        free(e);
}

static char *cache_key(const char *user, const char *domain, const char *authid) {
        char *k;
        if (asprintf(&k, "%s\x1f%s\x1f%s", user, domain, authid ? authid : user) < 0)
                return NULL;
        return k;
}

static void run_job(struct worker *w, struct job *j) {
        struct account_store *s = w->store;
        if (j->kind == JOB_RELOAD) {
                j->error = load_file(s->file_path, &j->errors, &j->table);
                return;
        }
        if (s->cfg.backend == ACCOUNT_BACKEND_MYSQL)
                j->error = mysql_lookup(w, s->request, s->uses_authid, s->mysql, j->user,
                                        j->domain, j->authid, &j->result);
        else
                j->error = sqlite_lookup(w->db, w->stmt, s->uses_authid, j->user, j->domain,
                                         j->authid, &j->result);
}

static void signal_loop(struct account_store *s) {
        uint64_t one = 1;
        while (write(s->efd, &one, sizeof one) < 0 && errno == EINTR)
                ;
}

static void push_done(struct account_store *s, struct job *j) {
        j->next = NULL;
        *s->done_tail = j;
        s->done_tail = &j->next;
}

static void *worker_main(void *userdata) {
        struct worker *w = userdata;
        struct account_store *s = w->store;
        if (s->cfg.backend == ACCOUNT_BACKEND_MYSQL)
                mysql_thread_init();
        pthread_mutex_lock(&s->lock);
        for (;;) {
                while (!s->stop && !s->queue_head)
                        pthread_cond_wait(&s->cond, &s->lock);
                if (s->stop)
                        break;
                struct job *j = s->queue_head;
                s->queue_head = j->next;
                if (!s->queue_head)
                        s->queue_tail = &s->queue_head;
                s->queue_len--;
                pthread_mutex_unlock(&s->lock);
                run_job(w, j);
                pthread_mutex_lock(&s->lock);
                push_done(s, j);
                signal_loop(s);
        }
        pthread_mutex_unlock(&s->lock);
        if (s->cfg.backend == ACCOUNT_BACKEND_MYSQL)
                mysql_thread_end();
        return NULL;
}

static void mysql_init_once(void) {
        (void)mysql_library_init(0, NULL, NULL);
}

static void cache_store(struct account_store *s, const struct job *j) {
        if (!s->cache || j->error < 0)
                return;
        struct cache_entry *e = calloc(1, sizeof *e);
        _cleanup_free_ char *k = cache_key(j->user, j->domain, j->authid);
        if (!e || !k || !(e->user = strdup(j->user)) || !(e->domain = strdup(j->domain)) ||
            !(e->authid = strdup(j->authid ? j->authid : j->user)) ||
            (j->result && !(e->secret = account_secret_dup(j->result)))) {
                cache_entry_free(e);
                return;
        }
        /* An unknown account is remembered shorter: it may be created any moment. */
        uint64_t ttl = e->secret ? s->cfg.cache_expire_ms : MIN(s->cfg.cache_expire_ms, 30000);
        e->expires_at = now_msec() + ttl;
        if (strmap_put(s->cache, k, e) < 0)
                cache_entry_free(e);
}

static void finish_reload(struct account_store *s, struct job *j) {
        s->reload_pending = false;
        if (j->error >= 0) {
                account_table_free(s->table);
                s->table = TAKE_PTR(j->table);
                if (s->cache)
                        strmap_clear(s->cache);
        }
        if (s->cfg.reloaded)
                s->cfg.reloaded(j->error, j->errors, account_table_size(s->table),
                                s->cfg.userdata);
}

static void dispatch(struct account_store *s, struct job *list) {
        while (list) {
                struct job *j = list;
                list = j->next;
                if (j->kind == JOB_RELOAD)
                        finish_reload(s, j);
                else {
                        cache_store(s, j);
                        j->cb(j->error, j->error < 0 ? NULL : j->result, j->userdata);
                }
                job_free(j);
        }
}

static struct job *take_done(struct account_store *s) {
        pthread_mutex_lock(&s->lock);
        struct job *list = s->done_head;
        s->done_head = NULL;
        s->done_tail = &s->done_head;
        pthread_mutex_unlock(&s->lock);
        return list;
}

static void on_efd(struct loop_io *io, int fd, unsigned events, void *userdata) {
        struct account_store *s = userdata;
        uint64_t n;
        while (read(fd, &n, sizeof n) < 0 && errno == EINTR)
                ;
        dispatch(s, take_done(s));
}

static void on_inotify(struct loop_io *io, int fd, unsigned events, void *userdata) {
        struct account_store *s = userdata;
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        bool hit = false;
        for (;;) {
                ssize_t n = read(fd, buf, sizeof buf);
                if (n <= 0)
                        break;
                for (char *p = buf; p < buf + n;) {
                        const struct inotify_event *ev = (const struct inotify_event *)p;
                        if (ev->len > 0 && streq(ev->name, s->watch_name))
                                hit = true;
                        p += sizeof *ev + ev->len;
                }
        }
        if (hit) {
                log_debug("Password file '%s' changed.", s->file_path);
                (void)account_store_reload(s);
        }
}

static int watch_file(struct account_store *s) {
        _cleanup_free_ char *dir_copy = strdup(s->file_path);
        _cleanup_free_ char *base_copy = strdup(s->file_path);
        if (!dir_copy || !base_copy || !(s->watch_name = strdup(basename(base_copy))))
                return -ENOMEM;
        s->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (s->ifd < 0)
                return -errno;
        if (inotify_add_watch(s->ifd, dirname(dir_copy),
                              IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE) < 0)
                return -errno;
        return loop_io_add(s->loop, s->ifd, LOOP_READ, on_inotify, s, &s->ifd_io);
}

static int enqueue(struct account_store *s, struct job *j, bool bounded) {
        pthread_mutex_lock(&s->lock);
        if (bounded && s->queue_len >= s->cfg.max_queue) {
                pthread_mutex_unlock(&s->lock);
                return -EAGAIN;
        }
        j->next = NULL;
        *s->queue_tail = j;
        s->queue_tail = &j->next;
        s->queue_len++;
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->lock);
        return 0;
}

int account_store_new(struct loop *l, const struct account_store_config *cfg, char ***errors,
                      struct account_store **ret) {
        struct account_store *s = calloc(1, sizeof *s);
        int r;
        if (!s)
                return -ENOMEM;
        s->cfg = *cfg;
        s->loop = l;
        s->efd = s->ifd = -1;
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->cond, NULL);
        s->queue_tail = &s->queue_head;
        s->done_tail = &s->done_head;
        s->cfg.threads = MAX(s->cfg.threads, 1u);
        s->cfg.max_queue = MAX(s->cfg.max_queue, (size_t)1);
        s->cfg.reloaded = NULL; /* not for the first load */
        if ((cfg->file_path && !(s->file_path = strdup(cfg->file_path))) ||
            (cfg->database_path && !(s->database_path = strdup(cfg->database_path))) ||
            (cfg->request && !(s->request = strdup(cfg->request)))) {
                r = -ENOMEM;
                goto fail;
        }
        s->cfg.file_path = s->file_path;
        s->cfg.database_path = s->database_path;
        s->cfg.request = s->request;
        if (cfg->cache_expire_ms > 0 &&
            (r = strmap_new(MAX(cfg->cache_max, (size_t)1), cache_entry_free, &s->cache)) < 0)
                goto fail;

        if (cfg->backend == ACCOUNT_BACKEND_FILE) {
                if (!s->file_path) {
                        r = -EINVAL;
                        goto fail;
                }
                if ((r = load_file(s->file_path, errors, &s->table)) < 0)
                        goto fail;
                s->cfg.threads = 1; /* reloads only */
        } else if (cfg->backend == ACCOUNT_BACKEND_SQLITE) {
                if (!s->database_path || !s->request) {
                        r = -EINVAL;
                        goto fail;
                }
                s->uses_authid = request_uses(s->request, ":authid");
        } else {
                _cleanup_free_ char *error = NULL;
                if (!s->request) {
                        r = -EINVAL;
                        goto fail;
                }
                s->uses_authid = request_uses(s->request, ":authid");
                static pthread_once_t once = PTHREAD_ONCE_INIT;
                pthread_once(&once, mysql_init_once);
                r = mysql_params_parse(cfg->connection_string, &s->mysql, &error);
                if (r < 0) {
                        if (error && errors)
                                (void)strv_extend(errors, error);
                        goto fail;
                }
        }

        s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (s->efd < 0) {
                r = -errno;
                goto fail;
        }
        if ((r = loop_io_add(l, s->efd, LOOP_READ, on_efd, s, &s->efd_io)) < 0)
                goto fail;
        if (!(s->workers = calloc(s->cfg.threads, sizeof *s->workers))) {
                r = -ENOMEM;
                goto fail;
        }
        for (size_t i = 0; i < s->cfg.threads; i++) {
                struct worker *w = &s->workers[i];
                w->store = s;
                if (cfg->backend == ACCOUNT_BACKEND_MYSQL) {
                        _cleanup_free_ char *error = NULL;
                        r = mysql_connect(s->mysql, &w->my, &error);
                        if (r >= 0 && i == 0)
                                r = mysql_check(w, s->request, &error);
                        if (r < 0) {
                                if (error && errors)
                                        (void)strv_extend(errors, error);
                                s->n_workers = i + 1;
                                goto fail;
                        }
                } else if (cfg->backend == ACCOUNT_BACKEND_SQLITE) {
                        _cleanup_free_ char *error = NULL;
                        r = sqlite_open(s->database_path, s->request, &w->db, &w->stmt, &error);
                        if (r < 0) {
                                if (error && errors)
                                        (void)strv_extend(errors, error);
                                s->n_workers = i;
                                goto fail;
                        }
                }
        }
        s->n_workers = s->cfg.threads;
        for (size_t i = 0; i < s->n_workers; i++) {
                r = -pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]);
                if (r < 0)
                        goto fail;
                s->workers[i].started = true;
        }
        if (cfg->backend == ACCOUNT_BACKEND_FILE && cfg->watch && (r = watch_file(s)) < 0)
                goto fail;
        s->cfg.reloaded = cfg->reloaded;
        *ret = s;
        return 0;
fail:
        account_store_free(s);
        return r;
}

void account_store_free(struct account_store *s) {
        if (!s)
                return;
        pthread_mutex_lock(&s->lock);
        s->stop = true;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
        for (size_t i = 0; s->workers && i < s->cfg.threads; i++) {
                struct worker *w = &s->workers[i];
                if (w->started)
                        pthread_join(w->thread, NULL);
                sqlite3_finalize(w->stmt);
                sqlite3_close(w->db);
                if (w->my)
                        mysql_close(w->my);
        }
        free(s->workers);
        mysql_params_free(s->mysql);
        /* Finished lookups get their results; the others are cancelled. */
        struct job *done = take_done(s);
        for (struct job *j = s->queue_head; j; j = j->next)
                j->error = -ECANCELED;
        s->cfg.reloaded = NULL;
        dispatch(s, done);
        dispatch(s, s->queue_head);
        loop_io_free(s->efd_io);
        loop_io_free(s->ifd_io);
        if (s->efd >= 0)
                close(s->efd);
        if (s->ifd >= 0)
                close(s->ifd);
        strmap_free(s->cache);
        account_table_free(s->table);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cond);
        free(s->watch_name);
        free(s->file_path);
        free(s->database_path);
        free(s->request);
        free(s);
}

int account_store_lookup(struct account_store *s, const char *user, const char *domain,
                         const char *authid, account_lookup_fn cb, void *userdata) {
        struct job *j = calloc(1, sizeof *j);
        int r;
        if (!j)
                return -ENOMEM;
        j->kind = JOB_LOOKUP;
        j->cb = cb;
        j->userdata = userdata;
        if (!(j->user = strdup(user)) || !(j->domain = strdup(domain)) ||
            (authid && !(j->authid = strdup(authid)))) {
                job_free(j);
                return -ENOMEM;
        }
        for (char *c = j->domain; *c; c++)
                *c = (char)tolower((unsigned char)*c);
        if (s->cfg.backend == ACCOUNT_BACKEND_FILE) {
                /* In memory: answered at once, delivered from the loop like the others. */
                const struct account_secret *found =
                        account_table_find(s->table, user, domain, authid ? authid : NULL);
                if (found && !authid && !streq(found->auth_user, found->user))
                        found = NULL;
                if (found && !(j->result = account_secret_dup(found))) {
                        job_free(j);
                        return -ENOMEM;
                }
                pthread_mutex_lock(&s->lock);
                push_done(s, j);
                signal_loop(s);
                pthread_mutex_unlock(&s->lock);
                return 0;
        }
        r = enqueue(s, j, true);
        if (r < 0)
                job_free(j);
        return r;
}

int account_store_cached(struct account_store *s, const char *user, const char *domain,
                         const char *authid, const struct account_secret **ret) {
        if (!s->cache)
                return 0;
        _cleanup_free_ char *lower = strdup(domain);
        if (!lower)
                return 0;
        for (char *c = lower; *c; c++)
                *c = (char)tolower((unsigned char)*c);
        _cleanup_free_ char *k = cache_key(user, lower, authid);
        struct cache_entry *e = k ? strmap_get(s->cache, k) : NULL;
        if (!e)
                return 0;
        if (e->expires_at <= now_msec()) {
                strmap_remove(s->cache, k);
                return 0;
        }
        *ret = e->secret;
        return 1;
}

int account_store_reload(struct account_store *s) {
        if (s->cfg.backend != ACCOUNT_BACKEND_FILE)
                return 0;
        if (s->reload_pending)
                return 0; /* the one queued reads the file later anyway */
        struct job *j = calloc(1, sizeof *j);
        if (!j)
                return -ENOMEM;
        j->kind = JOB_RELOAD;
        s->reload_pending = true;
        return enqueue(s, j, false);
}

size_t account_store_n_accounts(struct account_store *s) {
        return account_table_size(s->table);
}

/* ---- cache inspection ---- */

static json_t *entry_json(const struct cache_entry *e) {
        uint64_t now = now_msec();
        json_t *algos = json_array();
        for (int a = _DIGEST_MAX - 1; e->secret && a >= 0; a--)
                if (account_secret_has(e->secret, a))
                        json_array_append_new(algos, json_string(digest_algorithm_name(a)));
        return json_pack("{s:s, s:s, s:s, s:b, s:o, s:I}", "user", e->user, "domain", e->domain,
                         "auth-user", e->authid, "found", e->secret != NULL, "algorithms",
                         algos, "expires-in",
                         (json_int_t)(e->expires_at > now ? (e->expires_at - now) / 1000 : 0));
}

struct list_ctx {
        const char *domain;
        const char *user;
        const char *authid;
        json_t *array;
        size_t removed;
        uint64_t now;
};

static bool list_one(const char *key, void *value, void *userdata) {
        struct list_ctx *c = userdata;
        struct cache_entry *e = value;
        if (e->expires_at <= c->now)
                return true;
        if (!c->domain || strcaseeq(c->domain, e->domain)) {
                json_t *j = entry_json(e);
                if (j)
                        json_array_append_new(c->array, j);
        }
        return false;
}

json_t *account_store_cache_list(struct account_store *s, const char *domain) {
        struct list_ctx c = {.domain = domain, .array = json_array(), .now = now_msec()};
        if (c.array && s->cache)
                strmap_foreach(s->cache, list_one, &c);
        return c.array;
}

json_t *account_store_cache_get(struct account_store *s, const char *user, const char *domain,
                                const char *authid) {
        if (!s->cache)
                return NULL;
        _cleanup_free_ char *lower = strdup(domain);
        if (!lower)
                return NULL;
        for (char *c = lower; *c; c++)
                *c = (char)tolower((unsigned char)*c);
        _cleanup_free_ char *k = cache_key(user, lower, authid);
        struct cache_entry *e = k ? strmap_peek(s->cache, k) : NULL;
        if (!e || e->expires_at <= now_msec())
                return NULL;
        return entry_json(e);
}

static bool delete_one(const char *key, void *value, void *userdata) {
        struct list_ctx *c = userdata;
        struct cache_entry *e = value;
        if (streq(e->user, c->user) && strcaseeq(e->domain, c->domain) &&
            (!c->authid || streq(e->authid, c->authid))) {
                c->removed++;
                return true;
        }
        return false;
}

size_t account_store_cache_delete(struct account_store *s, const char *user, const char *domain,
                                  const char *authid) {
        struct list_ctx c = {.domain = domain, .user = user, .authid = authid};
        if (s->cache)
                strmap_foreach(s->cache, delete_one, &c);
        return c.removed;
}
