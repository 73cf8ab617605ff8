/* SPDX-License-Identifier: MIT */
#define LOG_SUBSYSTEM LOG_control

#include <assert.h>
#include <jansson.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "conf.h"
#include "ctl.h"
#include "listener.h"
#include "log.h"
#include "loop.h"
#include "macro.h"
#include "stats.h"

#define WHITESPACE " \t\r\v\f"
/* The input buffer holds one line of CTL_MAX_LINE characters plus "\r\n"; a full buffer without
 * a line feed is a line that is too long. */
#define CTL_IN_SIZE (CTL_MAX_LINE + 2)
/* Stop processing a client's commands while this much output is waiting for it to read. */
#define CTL_MAX_OUTPUT (256 * 1024)
/* Largest reply ctl_client_call() accepts. */
#define CTL_MAX_REPLY (64 * 1024 * 1024)

struct ctl_command {
        struct ctl_command *next;
        char *name;
        char *usage;
        ctl_handler_fn fn;
        void *userdata;
};

struct ctl_client;

struct ctl {
        struct loop *loop;
        char *path;
        bool bound; /* path is ours: unlink at free */
        dev_t dev;
        ino_t ino;
        struct listener *listener;

        struct conf *conf;
        struct stats *stats;
        ctl_reload_fn reload;
        void *reload_userdata;

        struct ctl_command *commands;
        struct ctl_command **commands_tail;

        struct ctl_client *clients;
        unsigned n_clients;
};

struct ctl_client {
        struct ctl *ctl;
        struct ctl_client *prev, *next;
        int fd;
        struct loop_io *io;

        char in[CTL_IN_SIZE];
        size_t in_len;

        char *out;
        size_t out_start, out_len, out_size;

        struct ctl_request *pending; /* the command being answered; no other runs meanwhile */
        bool eof;                    /* the peer shut down its writing side */
        bool closing;                /* close once the output is flushed */
};

/* One reference for the reply owed, one held by the dispatcher while the handler runs. */
struct ctl_request {
        struct ctl_client *client; /* NULL once the client went away */
        unsigned n_ref;
        bool replied;
};

static void request_unref(struct ctl_request *req) {
        assert(req->n_ref > 0);
        if (--req->n_ref == 0)
                free(req);
}

/* ---- output ---- */

static int client_append(struct ctl_client *cl, const char *text, size_t len) {
        if (cl->out_start > 0 && cl->out_len > 0)
                memmove(cl->out, cl->out + cl->out_start, cl->out_len);
        cl->out_start = 0;

        if (cl->out_len + len > cl->out_size) {
                size_t size = MAX(cl->out_size * 2, cl->out_len + len);
                char *p;

                size = MAX(size, (size_t)4096);
                p = realloc(cl->out, size);
                if (!p)
                        return -ENOMEM;
                cl->out = p;
                cl->out_size = size;
        }
        memcpy(cl->out + cl->out_len, text, len);
        cl->out_len += len;
        return 0;
}

static void client_update_events(struct ctl_client *cl) {
        unsigned events = 0;
        int r;

        if (!cl->eof && !cl->closing && cl->in_len < sizeof cl->in)
                events |= LOOP_READ;
        if (cl->out_len > 0)
                events |= LOOP_WRITE;

        if (loop_io_get_events(cl->io) == events)
                return;
        r = loop_io_set_events(cl->io, events);
        if (r < 0) {
                log_debug_errno(r, "Failed to update control client watch: %m");
                cl->closing = true;
        }
}

/* Queues reply (not consumed) as one line. Never writes: the io callback does, so that a reply
 * from within a handler never re-enters the client. */
static void client_queue(struct ctl_client *cl, json_t *reply) {
        _cleanup_free_ char *text = NULL;
        json_t *wrapped = NULL;
        int r;

        if (reply && !json_is_object(reply)) {
                wrapped = json_pack("{sO}", "result", reply);
                reply = wrapped;
        }
        if (reply)
                text = json_dumps(reply, JSON_COMPACT);
        json_decref(wrapped);

        if (text)
                r = client_append(cl, text, strlen(text));
        else
                r = client_append(cl, "{\"error\":\"out of memory\"}",
                                  strlen("{\"error\":\"out of memory\"}"));
        if (r >= 0)
                r = client_append(cl, "\n", 1);
        if (r < 0) {
                /* A missing reply would shift every later one: give up on this client. */
                log_debug_errno(r, "Failed to queue control reply: %m");
                cl->closing = true;
        }
}

/* {"error": "<formatted message>"}, or NULL when out of memory. */
_printf_(1, 0) static json_t *error_reply_va(const char *fmt, va_list ap) {
        _cleanup_free_ char *msg = NULL;

        if (vasprintf(&msg, fmt, ap) < 0)
                return NULL;
        return json_pack("{ss}", "error", msg);
}

_printf_(2, 3) static void client_queue_error(struct ctl_client *cl, const char *fmt, ...) {
        json_t *reply;
        va_list ap;

        va_start(ap, fmt);
        reply = error_reply_va(fmt, ap);
        va_end(ap);
        client_queue(cl, reply);
        json_decref(reply);
}

static int client_flush(struct ctl_client *cl) {
        while (cl->out_len > 0) {
                ssize_t n;

                n = send(cl->fd, cl->out + cl->out_start, cl->out_len, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                return 0;
                        return log_debug_errno(errno, "Failed to write to control client: %m");
                }
                cl->out_start += n;
                cl->out_len -= n;
        }
        cl->out_start = 0;
        return 0;
}

/* ---- requests ---- */

void ctl_reply(struct ctl_request *req, json_t *reply) {
        struct ctl_client *cl;

        assert(req);
        assert(!req->replied);

        req->replied = true;
        cl = req->client;
        if (cl) {
                client_queue(cl, reply);
                if (cl->pending == req)
                        cl->pending = NULL;
                req->client = NULL;
                client_update_events(cl);
        }
        json_decref(reply);
        request_unref(req);
}

void ctl_reply_error(struct ctl_request *req, const char *fmt, ...) {
        json_t *reply;
        va_list ap;

        va_start(ap, fmt);
        reply = error_reply_va(fmt, ap);
        va_end(ap);
        ctl_reply(req, reply);
}

/* ---- parsing ---- */

static bool utf8_valid(const char *s, size_t len) {
        const unsigned char *p = (const unsigned char *)s, *end = p + len;

        while (p < end) {
                uint32_t cp;
                size_t n;

                if (p[0] < 0x80) {
                        p++;
                        continue;
                }
                if ((p[0] & 0xe0) == 0xc0) {
                        n = 2;
                        cp = p[0] & 0x1f;
                } else if ((p[0] & 0xf0) == 0xe0) {
                        n = 3;
                        cp = p[0] & 0x0f;
                } else if ((p[0] & 0xf8) == 0xf0) {
                        n = 4;
                        cp = p[0] & 0x07;
                } else
                        return false;
                if ((size_t)(end - p) < n)
                        return false;
                for (size_t i = 1; i < n; i++) {
                        if ((p[i] & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (p[i] & 0x3f);
                }
                /* Overlong forms, surrogates, beyond Unicode. */
                if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
                    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
                        return false;
                p += n;
        }
        return true;
}

/* Splits on whitespace; "double quoted" parts may hold whitespace, and \" and \\ inside them
 * stand for " and \. -EINVAL on an unterminated quote. */
static int split_command(const char *line, char ***ret) {
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *word = NULL;
        const char *p = line;
        int r;

        word = malloc(strlen(line) + 1);
        argv = calloc(1, sizeof(char *));
        if (!word || !argv)
                return -ENOMEM;

        for (;;) {
                bool quoted = false;
                size_t n = 0;

                p += strspn(p, WHITESPACE);
                if (!*p)
                        break;

                for (; *p; p++) {
                        if (quoted) {
                                if (*p == '"')
                                        quoted = false;
                                else if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
                                        word[n++] = *++p;
                                else
                                        word[n++] = *p;
                        } else if (*p == '"')
                                quoted = true;
                        else if (strchr(WHITESPACE, *p))
                                break;
                        else
                                word[n++] = *p;
                }
                if (quoted)
                        return -EINVAL;
                word[n] = 0;

                r = strv_extend(&argv, word);
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(argv);
        return 0;
}

static struct ctl_command *ctl_find_command(struct ctl *c, const char *name) {
        for (struct ctl_command *cmd = c->commands; cmd; cmd = cmd->next)
                if (strcaseeq(cmd->name, name))
                        return cmd;
        return NULL;
}

static void client_dispatch(struct ctl_client *cl, const char *line, size_t len) {
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *text = NULL;
        struct ctl_command *cmd;
        struct ctl_request *req;
        int r;

        if (memchr(line, 0, len)) {
                client_queue_error(cl, "command contains a NUL byte");
                return;
        }
        if (!utf8_valid(line, len)) {
                client_queue_error(cl, "command is not valid UTF-8");
                return;
        }

        text = strndup(line, len);
        if (!text) {
                client_queue(cl, NULL);
                return;
        }

        r = split_command(text, &argv);
        if (r == -EINVAL) {
                client_queue_error(cl, "unterminated quote in command");
                return;
        }
        if (r < 0) {
                client_queue(cl, NULL);
                return;
        }
        if (!argv[0])
                return; /* empty line */

        cmd = ctl_find_command(cl->ctl, argv[0]);
        if (!cmd) {
                client_queue_error(cl, "unknown command '%s', try HELP", argv[0]);
                return;
        }

        req = calloc(1, sizeof *req);
        if (!req) {
                client_queue(cl, NULL);
                return;
        }
        req->client = cl;
        req->n_ref = 2;
        cl->pending = req;

        r = cmd->fn(req, (int)strv_length(argv), argv, cmd->userdata);
        if (r < 0 && !req->replied)
                ctl_reply_error(req, "%s", strerror(-r));
        request_unref(req);
}

/* Runs the complete lines in the input buffer, one at a time, as long as no reply is pending. */
static void client_process(struct ctl_client *cl) {
        while (!cl->pending && !cl->closing && cl->out_len < CTL_MAX_OUTPUT) {
                char *nl = memchr(cl->in, '\n', cl->in_len);
                size_t consumed, len;

                if (nl) {
                        len = nl - cl->in;
                        consumed = len + 1;
                } else if (cl->in_len >= sizeof cl->in) {
                        len = cl->in_len; /* too long, see below */
                        consumed = cl->in_len;
                } else if (cl->eof && cl->in_len > 0) {
                        len = consumed = cl->in_len; /* last line without a line feed */
                } else {
                        if (cl->eof)
                                cl->closing = true;
                        break;
                }

                if (len > 0 && cl->in[len - 1] == '\r')
                        len--;

                if (len > CTL_MAX_LINE) {
                        client_queue_error(cl, "command too long");
                        cl->closing = true;
                        break;
                }

                client_dispatch(cl, cl->in, len);

                memmove(cl->in, cl->in + consumed, cl->in_len - consumed);
                cl->in_len -= consumed;
        }
}

/* ---- clients ---- */

static void client_free(struct ctl_client *cl) {
        if (!cl)
                return;

        if (cl->ctl) {
                if (cl->prev)
                        cl->prev->next = cl->next;
                else
                        cl->ctl->clients = cl->next;
                if (cl->next)
                        cl->next->prev = cl->prev;
                cl->ctl->n_clients--;
        }
        if (cl->pending)
                cl->pending->client = NULL; /* the late reply is dropped */

        loop_io_free(cl->io);
        if (cl->fd >= 0)
                close(cl->fd);
        free(cl->out);
        free(cl);
}

/* After EOF: did the peer close the connection (nobody to answer), or only shut down its
 * writing side (answer, then close)? */
static bool peer_gone(int fd) {
        struct pollfd p = {.fd = fd, .events = 0};

        if (poll(&p, 1, 0) < 0)
                return false;
        return p.revents & (POLLHUP | POLLERR);
}

static int client_read(struct ctl_client *cl) {
        while (!cl->eof && cl->in_len < sizeof cl->in) {
                ssize_t n;

                n = recv(cl->fd, cl->in + cl->in_len, sizeof cl->in - cl->in_len, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                break;
                        return log_debug_errno(errno, "Failed to read from control client: %m");
                }
                if (n == 0) {
                        cl->eof = true;
                        if (peer_gone(cl->fd))
                                return -ECONNRESET;
                        break;
                }
                cl->in_len += n;
        }
        return 0;
}

static void client_io(struct loop_io *io, int fd, unsigned events, void *userdata) {
        struct ctl_client *cl = userdata;
        int r;

        if (events & (LOOP_READ | LOOP_ERROR)) {
                r = client_read(cl);
                if (r < 0) {
                        client_free(cl);
                        return;
                }
        }
        if ((events & LOOP_ERROR) && peer_gone(fd)) {
                client_free(cl);
                return;
        }

        client_process(cl);

        r = client_flush(cl);
        if (r < 0 || (cl->closing && cl->out_len == 0)) {
                client_free(cl);
                return;
        }

        client_update_events(cl);
}

static int client_new(struct ctl *c, int fd) {
        struct ctl_client *cl;
        int r;

        cl = calloc(1, sizeof *cl);
        if (!cl)
                return -ENOMEM;
        cl->fd = fd;

        r = loop_io_add(c->loop, fd, LOOP_READ, client_io, cl, &cl->io);
        if (r < 0) {
                cl->fd = -1; /* the caller closes it */
                client_free(cl);
                return r;
        }

        cl->ctl = c;
        cl->next = c->clients;
        if (c->clients)
                c->clients->prev = cl;
        c->clients = cl;
        c->n_clients++;
        return 0;
}

/* The listener's callback: takes fd over, or refuses it (closed by the listener). */
static int ctl_accept(int fd, void *userdata) {
        struct ctl *c = userdata;
        int r;

        if (c->n_clients >= CTL_MAX_CLIENTS) {
                log_debug("Too many control clients, closing a new connection");
                return -EBUSY; /* the listener sends the busy reply */
        }

        r = client_new(c, fd);
        if (r < 0)
                return log_debug_errno(r, "Failed to set up a control connection: %m");
        return 0;
}

/* ---- built-in commands ---- */

static int reply_object(struct ctl_request *req, json_t *o) {
        if (!o)
                return -ENOMEM;
        ctl_reply(req, o);
        return 0;
}

static int cmd_help(struct ctl_request *req, int argc, char **argv, void *userdata) {
        struct ctl *c = userdata;
        json_t *commands;

        commands = json_object();
        if (!commands)
                return -ENOMEM;
        for (struct ctl_command *cmd = c->commands; cmd; cmd = cmd->next)
                if (json_object_set_new(commands, cmd->name, json_string(cmd->usage)) < 0) {
                        json_decref(commands);
                        return -ENOMEM;
                }
        return reply_object(req, json_pack("{so}", "commands", commands));
}

static int split_path(const char *path, char **section, char **key) {
        const char *slash = strchr(path, '/');

        if (!slash || slash == path || !slash[1])
                return -EINVAL;
        *section = strndup(path, slash - path);
        *key = strdup(slash + 1);
        if (!*section || !*key) {
                free(*section);
                free(*key);
                return -ENOMEM;
        }
        return 0;
}

static int cmd_get(struct ctl_request *req, int argc, char **argv, void *userdata) {
        _cleanup_free_ char *value = NULL, *section = NULL, *key = NULL;
        struct ctl *c = userdata;
        const char *path, *hint = NULL;
        uint64_t n;
        int r;

        if (argc != 2) {
                ctl_reply_error(req, "usage: GET <section/key>");
                return 0;
        }
        path = argv[1];

        if (c->conf) {
                r = conf_get(c->conf, path, &value);
                if (r >= 0)
                        return reply_object(req, json_pack("{ss}", path, strempty(value)));
                if (r != -ENOENT && r != -EINVAL)
                        return r;
        }
        if (c->stats && stats_get(c->stats, path, &n) >= 0)
                return reply_object(req, json_pack("{sI}", path,
                                                   (json_int_t)MIN(n, (uint64_t)INT64_MAX)));

        r = split_path(path, &section, &key);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                ctl_reply_error(req, "invalid key '%s', expected <section/key>, try LIST", path);
                return 0;
        }
        if (c->conf)
                hint = conf_suggest_key(c->conf, section, key);
        if (hint)
                ctl_reply_error(req, "unknown key '%s', did you mean '%s'?", path, hint);
        else
                ctl_reply_error(req, "unknown key '%s', try LIST", path);
        return 0;
}

static int cmd_list(struct ctl_request *req, int argc, char **argv, void *userdata) {
        struct ctl *c = userdata;
        const char *section = argc > 1 ? argv[1] : "all";
        json_t *options = NULL, *counters = NULL;
        bool all = strcaseeq(section, "all");

        if (argc > 2) {
                ctl_reply_error(req, "usage: LIST [section|all]");
                return 0;
        }

        if (c->conf)
                options = conf_list(c->conf, all ? NULL : section);
        if (c->stats)
                counters = stats_to_json(c->stats, all ? NULL : section);

        if (!options && !counters && !all) {
                const char *hint = c->conf ? conf_suggest_section(c->conf, section) : NULL;

                if (hint)
                        ctl_reply_error(req, "unknown section '%s', did you mean '%s'?", section,
                                        hint);
                else
                        ctl_reply_error(req, "unknown section '%s'", section);
                return 0;
        }

        if (!options)
                options = json_object();
        if (!counters)
                counters = json_object();
        return reply_object(req, json_pack("{soso}", "options", options, "counters", counters));
}

static int cmd_set(struct ctl_request *req, int argc, char **argv, void *userdata) {
        _cleanup_free_ char *value = NULL, *error = NULL, *current = NULL;
        struct ctl *c = userdata;
        int r;

        if (argc < 3) {
                ctl_reply_error(req, "usage: SET <section/key> <value>");
                return 0;
        }
        if (!c->conf) {
                ctl_reply_error(req, "no configuration to change");
                return 0;
        }

        /* Unquoted words after the key form the value, joined by one space. */
        value = strv_join(argv + 2, " ");
        if (!value)
                return -ENOMEM;

        r = conf_set(c->conf, argv[1], value, &error);
        if (r < 0) {
                if (error)
                        ctl_reply_error(req, "%s", error);
                else
                        ctl_reply_error(req, "cannot set '%s': %s", argv[1], strerror(-r));
                return 0;
        }

        if (conf_get(c->conf, argv[1], &current) < 0)
                current = NULL;
        return reply_object(req, json_pack("{ss}", argv[1], current ? current : value));
}

static int cmd_stats(struct ctl_request *req, int argc, char **argv, void *userdata) {
        struct ctl *c = userdata;
        json_t *o;

        if (argc > 2) {
                ctl_reply_error(req, "usage: STATS [section]");
                return 0;
        }
        if (!c->stats)
                return reply_object(req, json_object());

        o = stats_to_json(c->stats, argc > 1 ? argv[1] : NULL);
        if (!o && argc > 1) {
                ctl_reply_error(req, "no counters in section '%s'", argv[1]);
                return 0;
        }
        return reply_object(req, o);
}

static char *subsystem_names(void) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f;

        f = open_memstream(&buf, &size);
        if (!f)
                return NULL;
        fputs("all", f);
        for (int s = 0; s < _LOG_SUBSYSTEM_MAX; s++)
                fprintf(f, ", %s", log_subsystem_name(s));
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

static int log_levels_json(json_t *o, int only) {
        for (int s = 0; s < _LOG_SUBSYSTEM_MAX; s++) {
                if (only >= 0 && s != only)
                        continue;
                if (json_object_set_new(o, log_subsystem_name(s),
                                        json_string(strna(log_level_name(log_levels[s])))) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static int cmd_log_level(struct ctl_request *req, int argc, char **argv, void *userdata) {
        json_t *o;
        int subsystem = -1, level;

        if (argc > 3) {
                ctl_reply_error(req, "usage: LOG_LEVEL [<subsystem|all> [<level>]]");
                return 0;
        }

        if (argc > 1 && !strcaseeq(argv[1], "all")) {
                subsystem = log_subsystem_from_name(argv[1]);
                if (subsystem < 0 || subsystem >= _LOG_SUBSYSTEM_MAX) {
                        _cleanup_free_ char *names = subsystem_names();

                        if (!names)
                                return -ENOMEM;
                        ctl_reply_error(req, "unknown subsystem '%s', valid: %s", argv[1], names);
                        return 0;
                }
        }

        if (argc > 2) {
                level = log_level_from_name(argv[2]);
                if (level < 0) {
                        ctl_reply_error(req, "unknown level '%s', valid: error, warning, notice, "
                                        "info, debug", argv[2]);
                        return 0;
                }
                if (subsystem < 0)
                        log_set_level_all(level);
                else
                        log_set_level(subsystem, level);
        }

        o = json_object();
        if (!o)
                return -ENOMEM;
        if (log_levels_json(o, subsystem) < 0) {
                json_decref(o);
                return -ENOMEM;
        }
        return reply_object(req, o);
}

static int cmd_reload(struct ctl_request *req, int argc, char **argv, void *userdata) {
        _cleanup_free_ char *error = NULL;
        struct ctl *c = userdata;
        int r;

        if (argc != 1) {
                ctl_reply_error(req, "usage: RELOAD");
                return 0;
        }
        if (!c->reload) {
                ctl_reply_error(req, "reload is not supported");
                return 0;
        }

        r = c->reload(c->reload_userdata, &error);
        if (r < 0) {
                ctl_reply_error(req, "reload failed: %s", error ? error : strerror(-r));
                return 0;
        }
        return reply_object(req, json_pack("{sb}", "reloaded", true));
}

static const struct {
        const char *name;
        const char *usage;
        ctl_handler_fn fn;
} builtins[] = {
        {"HELP", "HELP: this list of commands", cmd_help},
        {"GET", "GET <section/key>: a config value (text) or a counter (integer), "
                "{\"section/key\": value}", cmd_get},
        {"LIST", "LIST [section|all]: {\"options\": {\"section/key\": {value, default, doc...}}, "
                 "\"counters\": {section: {name: value}}}", cmd_list},
        {"SET", "SET <section/key> <value>: change a reloadable option (double-quote values "
                "with spaces)", cmd_set},
        {"STATS", "STATS [section]: counters and gauges, {section: {name: value}}", cmd_stats},
        {"LOG_LEVEL", "LOG_LEVEL [<subsystem|all> [error|warning|notice|info|debug]]: show or set "
                      "log levels", cmd_log_level},
        {"RELOAD", "RELOAD: re-read the configuration files, like SIGHUP", cmd_reload},
};

/* ---- the listener ---- */

int ctl_register(struct ctl *c, const char *command, const char *usage, ctl_handler_fn fn,
                 void *userdata) {
        struct ctl_command *cmd;

        assert(c);
        assert(command);
        assert(fn);

        if (isempty(command) || command[strcspn(command, WHITESPACE "\"")])
                return -EINVAL;
        if (ctl_find_command(c, command))
                return -EEXIST;

        cmd = calloc(1, sizeof *cmd);
        if (!cmd)
                return -ENOMEM;
        cmd->name = strdup(command);
        cmd->usage = strdup(usage ? usage : command);
        if (!cmd->name || !cmd->usage) {
                free(cmd->name);
                free(cmd->usage);
                free(cmd);
                return -ENOMEM;
        }
        cmd->fn = fn;
        cmd->userdata = userdata;

        *c->commands_tail = cmd;
        c->commands_tail = &cmd->next;
        return 0;
}

void ctl_set_reload(struct ctl *c, ctl_reload_fn fn, void *userdata) {
        assert(c);
        c->reload = fn;
        c->reload_userdata = userdata;
}

void ctl_free(struct ctl *c) {
        struct stat st;

        if (!c)
                return;

        while (c->clients)
                client_free(c->clients);

        listener_free(c->listener);

        /* Only our own socket: a newer daemon may have replaced it meanwhile. */
        if (c->bound && lstat(c->path, &st) >= 0 && st.st_dev == c->dev && st.st_ino == c->ino)
                (void)unlink(c->path);

        while (c->commands) {
                struct ctl_command *cmd = c->commands;

                c->commands = cmd->next;
                free(cmd->name);
                free(cmd->usage);
                free(cmd);
        }
        free(c->path);
        free(c);
}

static void ctl_freep(struct ctl **c) {
        ctl_free(*c);
}

static int mkdir_parents(const char *path) {
        _cleanup_free_ char *p = strdup(path);
        char *slash;

        if (!p)
                return -ENOMEM;

        slash = strrchr(p, '/');
        if (!slash || slash == p)
                return 0;
        *slash = 0;

        for (char *s = p + 1;; s++) {
                bool last = !*s;

                if (*s && *s != '/')
                        continue;
                *s = 0;
                if (mkdir(p, 0755) >= 0) {
                        /* Exactly 0755 whatever the umask. */
                        if (chmod(p, 0755) < 0)
                                return -errno;
                } else if (errno != EEXIST)
                        return -errno;
                if (last)
                        break;
                *s = '/';
        }
        return 0;
}

/* A socket file at the path: a live daemon (-EADDRINUSE) or a stale file left by a crash
 * (removed). */
static int ctl_take_path(const char *path, const struct sockaddr_un *sa, socklen_t len) {
        _cleanup_close_ int fd = -1;
        struct stat st;

        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISSOCK(st.st_mode))
                return -EEXIST;

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        /* Connected, or a full backlog (EAGAIN): somebody listens. */
        if (connect(fd, (const struct sockaddr *)sa, len) >= 0 || errno == EAGAIN ||
            errno == EINPROGRESS)
                return -EADDRINUSE;
        if (errno != ECONNREFUSED)
                return -errno;

        if (unlink(path) < 0 && errno != ENOENT)
                return -errno;
        log_debug("Removed stale control socket '%s'", path);
        return 0;
}

int ctl_create(struct loop *l, const char *path, struct conf *conf, struct stats *stats,
               struct ctl **ret) {
        _cleanup_(ctl_freep) struct ctl *c = NULL;
        struct sockaddr_un sa;
        int r;

        assert(l);
        assert(path);
        assert(ret);

        if (isempty(path) || strlen(path) >= sizeof sa.sun_path)
                return -ENAMETOOLONG;

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->loop = l;
        c->conf = conf;
        c->stats = stats;
        c->commands_tail = &c->commands;
        c->path = strdup(path);
        if (!c->path)
                return -ENOMEM;

        for (size_t i = 0; i < ELEMENTSOF(builtins); i++) {
                r = ctl_register(c, builtins[i].name, builtins[i].usage, builtins[i].fn, c);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

int ctl_listen(struct ctl *c) {
        _cleanup_close_ int fd = -1;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        const char *path = c->path;
        socklen_t len;
        struct stat st;
        int r;

        if (c->listener)
                return -EALREADY;
        memcpy(sa.sun_path, path, strlen(path) + 1);
        len = offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1;

        r = mkdir_parents(path);
        if (r < 0)
                return log_debug_errno(r, "Failed to create the directory of '%s': %m", path);

        r = ctl_take_path(path, &sa, len);
        if (r < 0)
                return log_debug_errno(r, "Cannot use control socket '%s': %m", path);

        fd = listener_bind((const struct sockaddr *)&sa, len);
        if (fd < 0)
                return log_debug_errno(fd, "Failed to bind '%s': %m", path);
        if (lstat(path, &st) < 0)
                return -errno;
        c->bound = true;
        c->dev = st.st_dev;
        c->ino = st.st_ino;
        if (chmod(path, 0660) < 0)
                return log_debug_errno(errno, "Failed to chmod '%s': %m", path);
        if (listen(fd, SOMAXCONN) < 0)
                return -errno;

        r = listener_new(c->loop, fd, "{\"error\":\"too many clients\"}\n", ctl_accept, c,
                         &c->listener);
        if (r < 0)
                return r;
        TAKE_FD(fd);

        log_debug("Control socket listening on '%s'", path);
        return 0;
}

int ctl_new(struct loop *l, const char *path, struct conf *conf, struct stats *stats,
            struct ctl **ret) {
        _cleanup_(ctl_freep) struct ctl *c = NULL;
        int r;

        r = ctl_create(l, path, conf, stats, &c);
        if (r < 0)
                return r;
        r = ctl_listen(c);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

/* ---- client side ---- */

static int remaining_ms(uint64_t deadline) {
        uint64_t now;

        if (deadline == UINT64_MAX)
                return -1;
        now = now_msec();
        return now >= deadline ? 0 : (int)MIN(deadline - now, (uint64_t)INT32_MAX);
}

static int wait_fd(int fd, short events, uint64_t deadline) {
        for (;;) {
                struct pollfd p = {.fd = fd, .events = events};
                int r;

                r = poll(&p, 1, remaining_ms(deadline));
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (r == 0)
                        return -ETIMEDOUT;
                return 0;
        }
}

int ctl_client_call(const char *path, const char *line, int timeout_ms, char **reply) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *req = NULL, *buf = NULL;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        size_t len, sent = 0, got = 0, size = 0;
        uint64_t deadline;
        int r;

        assert(path);
        assert(line);
        assert(reply);

        if (strlen(path) >= sizeof sa.sun_path)
                return -ENAMETOOLONG;
        if (strchr(line, '\n'))
                return -EINVAL;
        memcpy(sa.sun_path, path, strlen(path) + 1);

        deadline = timeout_ms > 0 ? now_msec() + (uint64_t)timeout_ms : UINT64_MAX;

        if (asprintf(&req, "%s\n", line) < 0)
                return -ENOMEM;
        len = strlen(req);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        /* A Unix connect never blocks; EAGAIN means a full backlog: retry until the deadline. */
        while (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN)
                        return -errno;
                if (remaining_ms(deadline) == 0)
                        return -ETIMEDOUT;
                (void)poll(NULL, 0, 10);
        }

        while (sent < len) {
                ssize_t n = send(fd, req + sent, len - sent, MSG_NOSIGNAL);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN && errno != EWOULDBLOCK)
                                return -errno;
                        r = wait_fd(fd, POLLOUT, deadline);
                        if (r < 0)
                                return r;
                        continue;
                }
                sent += n;
        }

        for (;;) {
                ssize_t n;
                char *nl;

                if (size - got < 4096) {
                        char *p;

                        if (size >= CTL_MAX_REPLY)
                                return -EMSGSIZE;
                        size = MAX(size * 2, (size_t)16384);
                        p = realloc(buf, size + 1);
                        if (!p)
                                return -ENOMEM;
                        buf = p;
                }

                n = recv(fd, buf + got, size - got, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN && errno != EWOULDBLOCK)
                                return -errno;
                        r = wait_fd(fd, POLLIN, deadline);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (n == 0)
                        return -ECONNRESET; /* closed before a whole reply */

                nl = memchr(buf + got, '\n', n);
                got += n;
                if (nl) {
                        *nl = 0;
                        if (nl > buf && nl[-1] == '\r')
                                nl[-1] = 0;
                        *reply = TAKE_PTR(buf);
                        return 0;
                }
        }
}
