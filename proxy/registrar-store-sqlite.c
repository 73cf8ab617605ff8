/* SPDX-License-Identifier: MIT */
/* The SQLite registrar store: the embedded persistent store, one file, WAL journal. Each
 * operation runs synchronously on the loop's thread (local file, short transactions); the
 * completions are deferred to the loop like every store's.
 *
 * Schema (version 2, PRAGMA user_version; a version 1 file gets the message_expires_at column
 * and the new index when opened):
 *   CREATE TABLE bindings (
 *           aor TEXT NOT NULL,            -- "sip:user@host"
 *           unique_id TEXT NOT NULL,      -- +sip.instance value or generated "gen-..." id
 *           generated_id INTEGER NOT NULL,-- 1: match by URI, not by id
 *           contact TEXT NOT NULL,        -- contact URI
 *           params TEXT,                  -- other contact parameters, ";"-joined
 *           call_id TEXT,
 *           cseq INTEGER NOT NULL,
 *           expires_at INTEGER NOT NULL,  -- CLOCK_REALTIME ms, the SIP expiry
 *           update_time INTEGER NOT NULL, -- CLOCK_REALTIME ms
 *           q INTEGER NOT NULL,           -- thousandths
 *           path TEXT,                    -- Path values joined with "\n"
 *           user_agent TEXT,
 *           position INTEGER NOT NULL,    -- order inside the record
 *           message_expires_at INTEGER NOT NULL DEFAULT 0, -- CLOCK_REALTIME ms; 0: none
 *           PRIMARY KEY (aor, unique_id));
 *   CREATE INDEX bindings_kept_until ON bindings (MAX(expires_at, message_expires_at));
 * An update rewrites the AOR's rows in one transaction (read, apply in memory, write back). */
#define LOG_SUBSYSTEM LOG_registrar
#include <assert.h>
#include <sqlite3.h>

#include "log.h"
#include "loop.h"
#include "macro.h"
#include "registrar-store.h"

/* Statements are prepared once and kept, keyed by their SQL text's address (the literals
 * below); there are fewer of them than slots. */
#define N_STATEMENTS 16

struct sqlite_store {
        struct registrar_store base;
        struct registrar_deferred *deferred;
        sqlite3 *db;
        struct {
                const char *sql;
                sqlite3_stmt *stmt;
        } statements[N_STATEMENTS];
};

#define SCHEMA_VERSION 2
/* How long a binding is kept (the index and the purge use the same expression). */
#define KEPT_UNTIL "MAX(expires_at, message_expires_at)"

static const char schema[] =
        "CREATE TABLE IF NOT EXISTS bindings ("
        " aor TEXT NOT NULL, unique_id TEXT NOT NULL, generated_id INTEGER NOT NULL,"
        " contact TEXT NOT NULL, params TEXT, call_id TEXT, cseq INTEGER NOT NULL,"
        " expires_at INTEGER NOT NULL, update_time INTEGER NOT NULL, q INTEGER NOT NULL,"
        " path TEXT, user_agent TEXT, position INTEGER NOT NULL,"
        " message_expires_at INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY (aor, unique_id));";
/* From version 1 (no message_expires_at). */
static const char upgrade_1[] =
        "ALTER TABLE bindings ADD COLUMN message_expires_at INTEGER NOT NULL DEFAULT 0;";
static const char indexes[] =
        "DROP INDEX IF EXISTS bindings_expires_at;"
        "CREATE INDEX IF NOT EXISTS bindings_kept_until ON bindings (" KEPT_UNTIL ");"
        "PRAGMA user_version = 2;";

static int sql_error(struct sqlite_store *st, const char *what) {
        log_debug("SQLite %s failed: %s", what, sqlite3_errmsg(st->db));
        return -EIO;
}

/* Hands a kept statement back, ready for its next use. */
static void releasep(sqlite3_stmt **s) {
        if (*s) {
                sqlite3_reset(*s);
                sqlite3_clear_bindings(*s);
        }
}
#define _cleanup_stmt_ _cleanup_(releasep)

/* The statement for sql, a string literal: prepared at its first use, then kept. */
static int prepare(struct sqlite_store *st, const char *sql, sqlite3_stmt **ret) {
        size_t i = 0;
        for (; i < N_STATEMENTS && st->statements[i].sql; i++)
                if (st->statements[i].sql == sql) {
                        *ret = st->statements[i].stmt;
                        return 0;
                }
        assert(i < N_STATEMENTS);
        if (sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, ret, NULL) !=
            SQLITE_OK)
                return sql_error(st, "prepare");
        st->statements[i].sql = sql;
        st->statements[i].stmt = *ret;
        return 0;
}

static char *column_strdup(sqlite3_stmt *s, int i) {
        const unsigned char *t = sqlite3_column_text(s, i);
        return t ? strdup((const char *)t) : NULL;
}

/* Every stored row of aor, expired ones included. */
static int load(struct sqlite_store *st, const char *aor, struct registrar_record **ret) {
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        _cleanup_(registrar_record_freep) struct registrar_record *rec = calloc(1, sizeof *rec);
        int r;
        if (!rec || !(rec->aor = strdup(aor)))
                return -ENOMEM;
        r = prepare(st,
                    "SELECT unique_id, generated_id, contact, params, call_id, cseq, expires_at,"
                    " update_time, q, path, user_agent, message_expires_at FROM bindings"
                    " WHERE aor = ?"
                    " ORDER BY position",
                    &s);
        if (r < 0)
                return r;
        sqlite3_bind_text(s, 1, aor, -1, SQLITE_STATIC);
        while ((r = sqlite3_step(s)) == SQLITE_ROW) {
                struct registrar_binding *nb =
                        realloc(rec->bindings, (rec->n_bindings + 1) * sizeof *nb);
                if (!nb)
                        return -ENOMEM;
                rec->bindings = nb;
                struct registrar_binding *b = &rec->bindings[rec->n_bindings++];
                *b = (struct registrar_binding){
                        .unique_id = column_strdup(s, 0),
                        .generated_id = sqlite3_column_int(s, 1) != 0,
                        .contact = column_strdup(s, 2),
                        .params = column_strdup(s, 3),
                        .call_id = column_strdup(s, 4),
                        .cseq = (uint32_t)sqlite3_column_int64(s, 5),
                        .expires_at = (uint64_t)sqlite3_column_int64(s, 6),
                        .update_time = (uint64_t)sqlite3_column_int64(s, 7),
                        .q = (unsigned)sqlite3_column_int(s, 8),
                        .user_agent = column_strdup(s, 10),
                        .message_expires_at = (uint64_t)sqlite3_column_int64(s, 11),
                };
                const unsigned char *path = sqlite3_column_text(s, 9);
                if (path && !(b->path = strv_split((const char *)path, "\n")))
                        return -ENOMEM;
                if (!b->unique_id || !b->contact)
                        return -ENOMEM;
        }
        if (r != SQLITE_DONE)
                return sql_error(st, "select");
        *ret = TAKE_PTR(rec);
        return 0;
}

static int exec(struct sqlite_store *st, const char *sql) {
        if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK)
                return sql_error(st, sql);
        return 0;
}

/* One statement without results, kept prepared (BEGIN, COMMIT, ROLLBACK). */
static int run(struct sqlite_store *st, const char *sql) {
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r = prepare(st, sql, &s);
        if (r < 0)
                return r;
        if (sqlite3_step(s) != SQLITE_DONE)
                return sql_error(st, sql);
        return 0;
}

static int delete_aor(struct sqlite_store *st, const char *aor) {
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r = prepare(st, "DELETE FROM bindings WHERE aor = ?", &s);
        if (r < 0)
                return r;
        sqlite3_bind_text(s, 1, aor, -1, SQLITE_STATIC);
        if (sqlite3_step(s) != SQLITE_DONE)
                return sql_error(st, "delete");
        return sqlite3_changes(st->db);
}

/* Replace the rows of rec->aor with rec, in one transaction. */
static int save(struct sqlite_store *st, const struct registrar_record *rec) {
        _cleanup_stmt_ sqlite3_stmt *s = NULL;
        int r = run(st, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        r = delete_aor(st, rec->aor);
        if (r >= 0)
                r = prepare(st,
                            "INSERT INTO bindings (aor, unique_id, generated_id, contact, params,"
                            " call_id, cseq, expires_at, update_time, q, path, user_agent,"
                            " position, message_expires_at)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            &s);
        for (size_t i = 0; r >= 0 && i < rec->n_bindings; i++) {
                const struct registrar_binding *b = &rec->bindings[i];
                _cleanup_free_ char *path = b->path ? strv_join(b->path, "\n") : NULL;
                if (b->path && !path) {
                        r = -ENOMEM;
                        break;
                }
                sqlite3_reset(s);
                sqlite3_bind_text(s, 1, rec->aor, -1, SQLITE_STATIC);
                sqlite3_bind_text(s, 2, b->unique_id, -1, SQLITE_STATIC);
                sqlite3_bind_int(s, 3, b->generated_id);
                sqlite3_bind_text(s, 4, b->contact, -1, SQLITE_STATIC);
                sqlite3_bind_text(s, 5, b->params, -1, SQLITE_STATIC);
                sqlite3_bind_text(s, 6, b->call_id, -1, SQLITE_STATIC);
                sqlite3_bind_int64(s, 7, b->cseq);
                sqlite3_bind_int64(s, 8, (sqlite3_int64)b->expires_at);
                sqlite3_bind_int64(s, 9, (sqlite3_int64)b->update_time);
                sqlite3_bind_int(s, 10, (int)b->q);
                sqlite3_bind_text(s, 11, path, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(s, 12, b->user_agent, -1, SQLITE_STATIC);
                sqlite3_bind_int64(s, 13, (sqlite3_int64)i);
                sqlite3_bind_int64(s, 14, (sqlite3_int64)b->message_expires_at);
                if (sqlite3_step(s) != SQLITE_DONE)
                        r = sql_error(st, "insert");
        }
        if (r < 0) {
                run(st, "ROLLBACK");
                return r;
        }
        return run(st, "COMMIT");
}

/* Store rec and complete with it. Takes rec. */
static int commit(struct sqlite_store *st, struct registrar_record *rec, registrar_record_fn cb,
                  void *userdata) {
        int r = save(st, rec);
        if (r < 0) {
                registrar_record_free(rec);
                return r;
        }
        return registrar_defer_record(st->deferred, 0, rec, cb, userdata);
}

/* The live bindings of aor, as a working copy. */
static int load_live(struct sqlite_store *st, const char *aor, uint64_t now,
                     struct registrar_record **ret) {
        _cleanup_(registrar_record_freep) struct registrar_record *stored = NULL;
        int r = load(st, aor, &stored);
        if (r < 0)
                return r;
        return registrar_record_copy(stored, aor, now, ret);
}

static int sqlite_fetch(struct registrar_store *s, const char *aor, registrar_record_fn cb,
                        void *userdata) {
        struct sqlite_store *st = (struct sqlite_store *)s;
        struct registrar_record *rec;
        int r = load_live(st, aor, realtime_msec(), &rec);
        if (r < 0)
                return r;
        return registrar_defer_record(st->deferred, 0, rec, cb, userdata);
}

static int sqlite_apply(struct registrar_store *s, const struct registrar_update *u,
                        registrar_record_fn cb, void *userdata) {
        struct sqlite_store *st = (struct sqlite_store *)s;
        _cleanup_(registrar_record_freep) struct registrar_record *rec = NULL;
        int r = load_live(st, u->aor, u->now, &rec);
        if (r < 0)
                return r;
        r = registrar_record_apply(rec, u);
        if (r == -ESTALE)
                return registrar_defer_record(st->deferred, r, NULL, cb, userdata);
        if (r < 0)
                return r;
        return commit(st, TAKE_PTR(rec), cb, userdata);
}

static int sqlite_remove(struct registrar_store *s, const char *aor, const char *unique_id,
                         registrar_record_fn cb, void *userdata) {
        struct sqlite_store *st = (struct sqlite_store *)s;
        _cleanup_(registrar_record_freep) struct registrar_record *rec = NULL;
        int r = load_live(st, aor, realtime_msec(), &rec);
        if (r < 0)
                return r;
        if (registrar_record_remove_id(rec, unique_id) < 0)
                return registrar_defer_record(st->deferred, -ENOENT, NULL, cb, userdata);
        return commit(st, TAKE_PTR(rec), cb, userdata);
}

static int sqlite_clear(struct registrar_store *s, const char *aor, registrar_done_fn cb,
                        void *userdata) {
        struct sqlite_store *st = (struct sqlite_store *)s;
        int r = delete_aor(st, aor);
        if (r < 0)
                return r;
        return registrar_defer_done(st->deferred, r > 0 ? 1 : 0, cb, userdata);
}

static int sqlite_dump(struct registrar_store *s, registrar_dump_fn cb, void *userdata) {
        struct sqlite_store *st = (struct sqlite_store *)s;
        _cleanup_stmt_ sqlite3_stmt *q = NULL;
        _cleanup_strv_free_ char **aors = calloc(1, sizeof(char *));
        int r;
        if (!aors)
                return -ENOMEM;
        r = prepare(st, "SELECT DISTINCT aor FROM bindings WHERE " KEPT_UNTIL " > ? ORDER BY aor",
                    &q);
        if (r < 0)
                return r;
        sqlite3_bind_int64(q, 1, (sqlite3_int64)realtime_msec());
        while ((r = sqlite3_step(q)) == SQLITE_ROW)
                if (strv_extend(&aors, (const char *)sqlite3_column_text(q, 0)) < 0)
                        return -ENOMEM;
        if (r != SQLITE_DONE)
                return sql_error(st, "dump");
        return registrar_defer_dump(st->deferred, 0, TAKE_PTR(aors), cb, userdata);
}

static int sqlite_purge(struct registrar_store *s, uint64_t now, registrar_done_fn cb,
                        void *userdata) {
        struct sqlite_store *st = (struct sqlite_store *)s;
        _cleanup_stmt_ sqlite3_stmt *q = NULL;
        int r = prepare(st, "DELETE FROM bindings WHERE " KEPT_UNTIL " <= ?", &q);
        if (r < 0)
                return r;
        sqlite3_bind_int64(q, 1, (sqlite3_int64)now);
        if (sqlite3_step(q) != SQLITE_DONE)
                return sql_error(st, "purge");
        return registrar_defer_done(st->deferred, sqlite3_changes(st->db), cb, userdata);
}

static uint64_t sqlite_n_aors(struct registrar_store *s) {
        struct sqlite_store *st = (struct sqlite_store *)s;
        _cleanup_stmt_ sqlite3_stmt *q = NULL;
        if (prepare(st, "SELECT COUNT(DISTINCT aor) FROM bindings", &q) < 0 ||
            sqlite3_step(q) != SQLITE_ROW)
                return 0;
        return (uint64_t)sqlite3_column_int64(q, 0);
}

static void sqlite_free(struct registrar_store *s) {
        struct sqlite_store *st = (struct sqlite_store *)s;
        registrar_deferred_free(st->deferred);
        for (size_t i = 0; i < N_STATEMENTS; i++)
                sqlite3_finalize(st->statements[i].stmt);
        sqlite3_close(st->db);
        free(st);
}

static const struct registrar_store_ops sqlite_ops = {
        .name = "sqlite",
        .fetch = sqlite_fetch,
        .apply = sqlite_apply,
        .remove = sqlite_remove,
        .clear = sqlite_clear,
        .dump = sqlite_dump,
        .purge = sqlite_purge,
        .n_aors = sqlite_n_aors,
        .free = sqlite_free,
};

static int schema_version(struct sqlite_store *st) {
        _cleanup_stmt_ sqlite3_stmt *q = NULL;
        int r = prepare(st, "PRAGMA user_version", &q);
        if (r < 0)
                return r;
        if (sqlite3_step(q) != SQLITE_ROW)
                return sql_error(st, "user_version");
        return sqlite3_column_int(q, 0);
}

/* Create the tables, or bring an older file up to SCHEMA_VERSION, in one transaction. */
static int schema_setup(struct sqlite_store *st) {
        int r = exec(st, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        int version = schema_version(st);
        if (version > SCHEMA_VERSION) {
                log_error("The registrar database has schema version %d, newer than this "
                          "proxy's (%d): written by a newer sipfleet-proxy?",
                          version, SCHEMA_VERSION);
                r = -EPROTO;
        } else if (version < 0)
                r = version;
        else if (version == 1)
                r = exec(st, upgrade_1);
        else
                r = exec(st, schema);
        if (r >= 0)
                r = exec(st, indexes);
        if (r < 0) {
                exec(st, "ROLLBACK");
                return r;
        }
        return exec(st, "COMMIT");
}

int registrar_store_sqlite_new(struct loop *l, const char *path, struct registrar_store **ret) {
        struct sqlite_store *st = calloc(1, sizeof *st);
        int r;
        if (!st)
                return -ENOMEM;
        st->base.ops = &sqlite_ops;
        r = registrar_deferred_new(l, &st->deferred);
        if (r < 0) {
                free(st);
                return r;
        }
        if (sqlite3_open_v2(path, &st->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK) {
                log_debug("Cannot open '%s': %s", path,
                          st->db ? sqlite3_errmsg(st->db) : "out of memory");
                r = -EIO;
        } else if (sqlite3_busy_timeout(st->db, 1000) != SQLITE_OK)
                r = sql_error(st, "busy_timeout");
        /* WAL with synchronous=NORMAL: a commit is in the log file before the REGISTER is
         * answered, so a crash or SIGKILL of the proxy loses nothing; only a power loss can
         * drop the last commits (those clients register again at their next refresh). FULL
         * would add an fsync to every REGISTER. */
        else if ((r = exec(st, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL")) >= 0)
                r = schema_setup(st);
        if (r < 0) {
                sqlite_free(&st->base);
                return r;
        }
        *ret = &st->base;
        return 0;
}
