/* SPDX-License-Identifier: MIT */
/* The embedded store of pending MESSAGEs (store-and-forward): one SQLite file, WAL journal.
 * Calls run synchronously on the loop's thread: a local file and one short statement each. The
 * forks keep the working copy in memory; this file is what survives a restart or a crash.
 *
 * Schema (version 1, PRAGMA user_version):
 *   CREATE TABLE pending_message (
 *           id INTEGER PRIMARY KEY AUTOINCREMENT, -- the order messages were received in
 *           aor TEXT NOT NULL,                    -- recipient, "sip:user@host"
 *           received_at INTEGER NOT NULL,         -- CLOCK_REALTIME ms
 *           expires_at INTEGER NOT NULL,          -- CLOCK_REALTIME ms
 *           request BLOB NOT NULL);               -- the MESSAGE as received (after the modules
 *                                                 -- before Router), wire format
 *   CREATE TABLE message_delivery (
 *           message_id INTEGER NOT NULL REFERENCES pending_message (id) ON DELETE CASCADE,
 *           device TEXT NOT NULL,                 -- the device's unique id (+sip.instance)
 *           status INTEGER NOT NULL,              -- its final answer (2xx, or a definitive error)
 *           PRIMARY KEY (message_id, device)); */
#define LOG_SUBSYSTEM LOG_router
#include <sqlite3.h>

#include "log.h"
#include "macro.h"
#include "message-store.h"

struct sqlite_store {
        struct message_store base;
        char *path;
        sqlite3 *db;
        sqlite3_stmt *add, *delivered, *remove;
};

static const char schema[] =
        "PRAGMA foreign_keys = ON;"
        "CREATE TABLE IF NOT EXISTS pending_message ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, aor TEXT NOT NULL,"
        " received_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, request BLOB NOT NULL);"
        "CREATE INDEX IF NOT EXISTS pending_message_aor ON pending_message (aor);"
        "CREATE TABLE IF NOT EXISTS message_delivery ("
        " message_id INTEGER NOT NULL REFERENCES pending_message (id) ON DELETE CASCADE,"
        " device TEXT NOT NULL, status INTEGER NOT NULL, PRIMARY KEY (message_id, device));"
        "PRAGMA user_version = 1;";

static int sql_error(struct sqlite_store *s, const char *what) {
        log_debug("SQLite %s failed: %s", what, sqlite3_errmsg(s->db));
        return -EIO;
}

static void finalizep(sqlite3_stmt **s) {
        sqlite3_finalize(*s);
}
#define _cleanup_stmt_ _cleanup_(finalizep)

static void sqlite_free(struct message_store *base) {
        struct sqlite_store *s = (struct sqlite_store *)base;
        sqlite3_finalize(s->add);
        sqlite3_finalize(s->delivered);
        sqlite3_finalize(s->remove);
        sqlite3_close(s->db);
        free(s->path);
        free(s);
}

static const struct message_store_ops sqlite_ops;

int message_store_sqlite_open(const char *path, struct message_store **ret) {
        struct sqlite_store *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->base.ops = &sqlite_ops;
        if (!(s->path = strdup(path))) {
                free(s);
                return -ENOMEM;
        }
        int r = -EIO;
        if (sqlite3_open_v2(path, &s->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK) {
                log_debug("Cannot open '%s': %s", path, s->db ? sqlite3_errmsg(s->db) : "?");
                goto fail;
        }
        sqlite3_busy_timeout(s->db, 1000);
        /* WAL with synchronous=NORMAL: a crash of the process loses nothing committed. */
        if (sqlite3_exec(s->db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;", NULL,
                         NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(s->db, schema, NULL, NULL, NULL) != SQLITE_OK) {
                r = sql_error(s, "schema");
                goto fail;
        }
        if (sqlite3_prepare_v2(s->db,
                               "INSERT INTO pending_message (aor, received_at, expires_at, request)"
                               " VALUES (?, ?, ?, ?)",
                               -1, &s->add, NULL) != SQLITE_OK ||
            sqlite3_prepare_v2(s->db,
                               "INSERT OR REPLACE INTO message_delivery (message_id, device, status)"
                               " VALUES (?, ?, ?)",
                               -1, &s->delivered, NULL) != SQLITE_OK ||
            sqlite3_prepare_v2(s->db, "DELETE FROM pending_message WHERE id = ?", -1, &s->remove,
                               NULL) != SQLITE_OK) {
                r = sql_error(s, "prepare");
                goto fail;
        }
        *ret = &s->base;
        return 0;
fail:
        sqlite_free(&s->base);
        return r;
}

static int step_done(struct sqlite_store *s, sqlite3_stmt *st, const char *what) {
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return rc == SQLITE_DONE ? 0 : sql_error(s, what);
}

static int sqlite_add(struct message_store *base, const char *aor, uint64_t received_at,
                      uint64_t expires_at, const char *data, size_t len, int64_t *id) {
        struct sqlite_store *s = (struct sqlite_store *)base;
        sqlite3_bind_text(s->add, 1, aor, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s->add, 2, (sqlite3_int64)received_at);
        sqlite3_bind_int64(s->add, 3, (sqlite3_int64)expires_at);
        sqlite3_bind_blob64(s->add, 4, data, len, SQLITE_STATIC);
        int r = step_done(s, s->add, "insert");
        if (r < 0) {
                base->n_errors++;
                return r;
        }
        *id = sqlite3_last_insert_rowid(s->db);
        return 0;
}

static int sqlite_delivered(struct message_store *base, int64_t id, const char *device,
                            int status) {
        struct sqlite_store *s = (struct sqlite_store *)base;
        sqlite3_bind_int64(s->delivered, 1, id);
        sqlite3_bind_text(s->delivered, 2, device, -1, SQLITE_STATIC);
        sqlite3_bind_int(s->delivered, 3, status);
        int r = step_done(s, s->delivered, "delivery update");
        if (r < 0)
                base->n_errors++;
        return r;
}

static int sqlite_remove(struct message_store *base, int64_t id) {
        struct sqlite_store *s = (struct sqlite_store *)base;
        sqlite3_bind_int64(s->remove, 1, id);
        int r = step_done(s, s->remove, "delete");
        if (r < 0)
                base->n_errors++;
        return r;
}

static int load_devices(struct sqlite_store *s, int64_t id, char ***ret) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        _cleanup_strv_free_ char **devices = NULL;
        if (sqlite3_prepare_v2(s->db, "SELECT device FROM message_delivery WHERE message_id = ?",
                               -1, &st, NULL) != SQLITE_OK)
                return sql_error(s, "prepare");
        sqlite3_bind_int64(st, 1, id);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                if (strv_extend(&devices, (const char *)sqlite3_column_text(st, 0)) < 0)
                        return -ENOMEM;
        if (rc != SQLITE_DONE)
                return sql_error(s, "select");
        *ret = TAKE_PTR(devices);
        return 0;
}

static int load(struct sqlite_store *s) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(s->db,
                               "SELECT id, aor, received_at, expires_at, request"
                               " FROM pending_message ORDER BY id",
                               -1, &st, NULL) != SQLITE_OK)
                return sql_error(s, "prepare");
        int rc, n = 0;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                struct message_store_entry e = {
                        .id = sqlite3_column_int64(st, 0),
                        .aor = (const char *)sqlite3_column_text(st, 1),
                        .received_at = (uint64_t)sqlite3_column_int64(st, 2),
                        .expires_at = (uint64_t)sqlite3_column_int64(st, 3),
                        .data = sqlite3_column_blob(st, 4),
                        .len = (size_t)sqlite3_column_bytes(st, 4),
                };
                _cleanup_strv_free_ char **devices = NULL;
                int r = load_devices(s, e.id, &devices);
                if (r < 0)
                        return r;
                e.delivered = devices;
                if (!e.aor || !e.data)
                        continue;
                s->base.each(&e, s->base.userdata);
                n++;
        }
        if (rc != SQLITE_DONE)
                return sql_error(s, "select");
        return n;
}

/* The restore runs here, synchronously: a local file, read once at the start. */
static int sqlite_start(struct message_store *base) {
        struct sqlite_store *s = (struct sqlite_store *)base;
        int n = load(s);
        if (n < 0) {
                base->n_errors++;
                log_error_errno(n, "Failed to read the message database '%s': %m", s->path);
        }
        if (base->done)
                base->done(n, base->userdata);
        return n < 0 ? n : 0;
}

static bool sqlite_ready(struct message_store *base) {
        return true;
}

static const struct message_store_ops sqlite_ops = {
        .name = "sqlite",
        .start = sqlite_start,
        .add = sqlite_add,
        .delivered = sqlite_delivered,
        .remove = sqlite_remove,
        .ready = sqlite_ready,
        .free = sqlite_free,
};
