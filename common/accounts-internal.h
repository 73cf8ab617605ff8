/* SPDX-License-Identifier: MIT */
#pragma once

/* Shared between the account store (accounts.c) and its backends (accounts-file.c,
 * accounts-sql.c). Not for other users: accounts.h is the interface. */

#include <stdbool.h>
#include <stddef.h>

#include "accounts.h"

typedef struct st_mysql MYSQL;
typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;

void account_secret_freep(struct account_secret **s);
/* s is len hexadecimal digits. */
bool account_valid_hex(const char *s, size_t len);

/* Password file: read and parse path (errors: skipped lines, "file:line: ..."). */
int account_file_load(const char *path, char ***errors, struct account_table **ret);

/* Does the SQL request use this named parameter (":authid")? */
bool account_request_uses(const char *request, const char *param);

/* SQLite: a read-only connection and the prepared request (checked: it uses :id). */
int account_sqlite_open(const char *path, const char *request, sqlite3 **db_ret,
                        sqlite3_stmt **stmt_ret, char **error);
/* One lookup: *ret is the account or NULL. -EIO on an SQL error. */
int account_sqlite_lookup(sqlite3 *db, sqlite3_stmt *stmt, bool uses_authid, const char *user,
                          const char *domain, const char *authid, struct account_secret **ret);

/* MariaDB/MySQL. */
struct account_mysql_params;
int account_mysql_params_parse(const char *s, struct account_mysql_params **ret, char **error);
void account_mysql_params_free(struct account_mysql_params *p);
int account_mysql_connect(const struct account_mysql_params *p, MYSQL **ret, char **error);
/* At start: the request uses :id and runs without an error. */
int account_mysql_check(MYSQL *my, const char *request, char **error);
/* One lookup on *my, which is replaced by a new connection when the server went away. */
int account_mysql_lookup(MYSQL **my, const char *request, bool uses_authid,
                         const struct account_mysql_params *params, const char *user,
                         const char *domain, const char *authid, struct account_secret **ret);
