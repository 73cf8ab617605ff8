/* SPDX-License-Identifier: MIT */
/* The account store: secrets, the worker pool, the bounded cache, file watching. The backends
 * are in accounts-file.c and accounts-sql.c. */
#define LOG_SUBSYSTEM LOG_auth
#include <ctype.h>
#include <jansson.h>
#include <libgen.h>
#include <mysql.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>

#include "accounts-internal.h"
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

void account_secret_freep(struct account_secret **s) {
        account_secret_free(*s);
}

/* ---- the store ---- */

enum job_kind { JOB_LOOKUP, JOB_RELOAD };

struct job {
        struct job *next;
        enum job_kind kind;
        char *user, *domain, *authid;
        bool any_auth; /* account_store_lookup_user(): whatever the digest username */
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
        struct account_mysql_params *mysql;
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

/* The cache key part of account_store_lookup_user()'s answers: no digest username has it. */
#define ANY_AUTH "\x1e*"

static char *cache_key(const char *user, const char *domain, const char *authid) {
        char *k;
        if (asprintf(&k, "%s\x1f%s\x1f%s", user, domain, authid ? authid : user) < 0)
                return NULL;
        return k;
}

static void run_job(struct worker *w, struct job *j) {
        struct account_store *s = w->store;
        if (j->kind == JOB_RELOAD) {
                j->error = account_file_load(s->file_path, &j->errors, &j->table);
                return;
        }
        if (s->cfg.backend == ACCOUNT_BACKEND_MYSQL)
                j->error = account_mysql_lookup(&w->my, s->request, s->uses_authid, s->mysql,
                                                j->user, j->domain, j->authid, &j->result);
        else
                j->error = account_sqlite_lookup(w->db, w->stmt, s->uses_authid, j->user,
                                                 j->domain, j->authid, &j->result);
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
        const char *authid = j->any_auth ? ANY_AUTH : j->authid;
        _cleanup_free_ char *k = cache_key(j->user, j->domain, authid);
        if (!e || !k || !(e->user = strdup(j->user)) || !(e->domain = strdup(j->domain)) ||
            !(e->authid = strdup(authid ? authid : j->user)) ||
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
                if ((r = account_file_load(s->file_path, errors, &s->table)) < 0)
                        goto fail;
                s->cfg.threads = 1; /* reloads only */
        } else if (cfg->backend == ACCOUNT_BACKEND_SQLITE) {
                if (!s->database_path || !s->request) {
                        r = -EINVAL;
                        goto fail;
                }
                s->uses_authid = account_request_uses(s->request, ":authid");
        } else {
                _cleanup_free_ char *error = NULL;
                if (!s->request) {
                        r = -EINVAL;
                        goto fail;
                }
                s->uses_authid = account_request_uses(s->request, ":authid");
                static pthread_once_t once = PTHREAD_ONCE_INIT;
                pthread_once(&once, mysql_init_once);
                r = account_mysql_params_parse(cfg->connection_string, &s->mysql, &error);
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
                        r = account_mysql_connect(s->mysql, &w->my, &error);
                        if (r >= 0 && i == 0)
                                r = account_mysql_check(w->my, s->request, &error);
                        if (r < 0) {
                                if (error && errors)
                                        (void)strv_extend(errors, error);
                                s->n_workers = i + 1;
                                goto fail;
                        }
                } else if (cfg->backend == ACCOUNT_BACKEND_SQLITE) {
                        _cleanup_free_ char *error = NULL;
                        r = account_sqlite_open(s->database_path, s->request, &w->db, &w->stmt, &error);
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
        account_mysql_params_free(s->mysql);
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

static int lookup(struct account_store *s, const char *user, const char *domain,
                  const char *authid, bool any_auth, account_lookup_fn cb, void *userdata) {
        struct job *j = calloc(1, sizeof *j);
        int r;
        if (!j)
                return -ENOMEM;
        j->kind = JOB_LOOKUP;
        j->any_auth = any_auth;
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
                if (found && !authid && !any_auth && !streq(found->auth_user, found->user))
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

int account_store_lookup(struct account_store *s, const char *user, const char *domain,
                         const char *authid, account_lookup_fn cb, void *userdata) {
        return lookup(s, user, domain, authid, false, cb, userdata);
}

int account_store_lookup_user(struct account_store *s, const char *user, const char *domain,
                              account_lookup_fn cb, void *userdata) {
        return lookup(s, user, domain, NULL, true, cb, userdata);
}

int account_store_cached_user(struct account_store *s, const char *user, const char *domain,
                              const struct account_secret **ret) {
        return account_store_cached(s, user, domain, ANY_AUTH, ret);
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

/* ---- configuration ---- */

const char *const account_db_implementations[] = {"file", "sqlite", "mysql", NULL};


/* The reloaded hook of account_store_open_config(): userdata is the settings. */
static void log_reloaded(int error, char *const *errors, size_t n_accounts, void *userdata) {
        const struct account_store_settings *s = userdata;
        STRV_FOREACH(e, errors)
                log_warning("%s", *e);
        if (error < 0)
                log_warning("Password file '%s' cannot be read (%s), keeping its previous "
                            "accounts.",
                            s->file_path, strerror(-error));
        else
                log_notice("Password file '%s' loaded: %zu accounts.", s->file_path, n_accounts);
}

int account_store_open_config(struct loop *l, const char *section,
                              const struct account_store_settings *s, struct account_store **ret) {
        if (s->db_implementation == ACCOUNT_DB_FILE && isempty(s->file_path))
                return log_error_errno(EINVAL, "[%s] file-path is needed with "
                                               "db-implementation=file.",
                                       section);
        if (s->db_implementation == ACCOUNT_DB_SQLITE && isempty(s->database_path))
                return log_error_errno(EINVAL, "[%s] database-path is needed with "
                                               "db-implementation=sqlite.",
                                       section);
        if (s->db_implementation == ACCOUNT_DB_MYSQL && isempty(s->connection_string))
                return log_error_errno(EINVAL, "[%s] connection-string is needed with "
                                               "db-implementation=mysql.",
                                       section);
        static const enum account_backend backends[] = {
                [ACCOUNT_DB_FILE] = ACCOUNT_BACKEND_FILE,
                [ACCOUNT_DB_SQLITE] = ACCOUNT_BACKEND_SQLITE,
                [ACCOUNT_DB_MYSQL] = ACCOUNT_BACKEND_MYSQL,
        };
        if (s->db_implementation < 0 || s->db_implementation > ACCOUNT_DB_MYSQL)
                return log_error_errno(EINVAL, "[%s] unknown db-implementation.", section);
        struct account_store_config cfg = {
                .backend = backends[s->db_implementation],
                .file_path = s->file_path,
                .database_path = s->database_path,
                .request = s->password_request,
                .connection_string = s->connection_string,
                .threads = (unsigned)s->db_threads,
                .max_queue = (size_t)s->max_queue_size,
                .cache_expire_ms = s->cache_expire_ms,
                .cache_max = (size_t)s->cache_size,
                .watch = true,
                .reloaded = log_reloaded,
                .userdata = (void *)s,
        };
        _cleanup_strv_free_ char **errors = NULL;
        int r = account_store_new(l, &cfg, &errors, ret);
        STRV_FOREACH(e, errors)
                if (r >= 0)
                        log_warning("%s", *e);
                else
                        log_error("%s", *e);
        if (r < 0)
                return log_error_errno(r, "Failed to open the account store (%s): %m",
                                       account_db_implementations[s->db_implementation]);
        if (s->db_implementation == ACCOUNT_DB_FILE)
                log_notice("Password file '%s': %zu accounts.", s->file_path,
                           account_store_n_accounts(*ret));
        else
                log_notice("Accounts in %s.", account_db_implementations[s->db_implementation]);
        return 0;
}
