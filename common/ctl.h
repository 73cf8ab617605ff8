/* SPDX-License-Identifier: MIT */
#pragma once

/* Control socket: a Unix stream socket per daemon, one command per line ("WORD arg arg..."),
 * one JSON object per line in reply. Errors are {"error": "..."}; success is any other object.
 * Built-in commands: HELP, GET <section/key>, LIST <section|all>, SET <section/key> <value>,
 * STATS [section], LOG_LEVEL [<subsystem|all> <level>], RELOAD. Daemons and modules register
 * their own (REGISTRAR_GET...). */

#include <stdbool.h>

struct ctl;
struct ctl_request;
struct loop;
struct conf;
struct stats;
struct json_t;

/* Handler: reply now with ctl_reply()/ctl_reply_error() and return 0, or keep req and reply
 * later (async work): the reply is dropped if the client went away meanwhile. A negative return
 * without a reply sends {"error": strerror}. argv[0] is the command word. */
typedef int (*ctl_handler_fn)(struct ctl_request *req, int argc, char **argv, void *userdata);

/* Reload hook for the RELOAD command (the same as SIGHUP). Returns 0 or -errno with *error. */
typedef int (*ctl_reload_fn)(void *userdata, char **error);

/* ctl_create() makes the object (commands can be registered) without touching the file system;
 * ctl_listen() binds path, so that a client that can connect finds the daemon ready.
 * ctl_new() does both. */
int ctl_create(struct loop *l, const char *path, struct conf *conf, struct stats *stats,
               struct ctl **ret);
int ctl_listen(struct ctl *c);

/* Binds path (mode 0660, parent directory created 0755 when missing). A socket held by a live
 * daemon is -EADDRINUSE; a stale socket file is replaced. */
int ctl_new(struct loop *l, const char *path, struct conf *conf, struct stats *stats,
            struct ctl **ret);
/* Closes connections, unlinks the socket. Accepts NULL. */
void ctl_free(struct ctl *c);

int ctl_register(struct ctl *c, const char *command, const char *usage, ctl_handler_fn fn,
                 void *userdata);
void ctl_set_reload(struct ctl *c, ctl_reload_fn fn, void *userdata);

/* Takes ownership of reply (a JSON object). */
void ctl_reply(struct ctl_request *req, struct json_t *reply);
void ctl_reply_error(struct ctl_request *req, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

/* Limits: a command line longer than CTL_MAX_LINE gets an error reply and the connection is
 * closed; at most CTL_MAX_CLIENTS connections at once. */
#define CTL_MAX_LINE 8192
#define CTL_MAX_CLIENTS 64

/* Client side (sipfleet-cli, tests): connect, send one line, read one reply line.
 * Returns 0 and the reply text (malloc'd, without the line feed), -errno when the daemon cannot
 * be reached (-ENOENT, -ECONNREFUSED...), -ETIMEDOUT after timeout_ms (<= 0: no timeout),
 * -EINVAL for a line containing a line feed. */
int ctl_client_call(const char *path, const char *line, int timeout_ms, char **reply);
