/* SPDX-License-Identifier: MIT */
/* The password file backend of the account store: the parser (format in accounts.h) and the
 * in-memory table it builds. */
#define LOG_SUBSYSTEM LOG_auth
#include <ctype.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>

#include "accounts-internal.h"
#include "macro.h"
#include "strmap.h"

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

bool account_valid_hex(const char *s, size_t len) {
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

/* One "identity algo:value... ; [authuser] [phone]" line into *ret; NULL and a message in
 * *error for a bad line. -ENOMEM only on allocation failure. */
static int parse_line(char *line, struct account_secret **ret, const char **error) {
        _cleanup_(account_secret_freep) struct account_secret *s = calloc(1, sizeof *s);
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
                        if (!account_valid_hex(value, 32)) {
                                *error = "md5: needs 32 hexadecimal digits";
                                return 0;
                        }
                        slot = &s->ha1[DIGEST_MD5];
                } else if (strcaseeq(tok, "sha256") || strcaseeq(tok, "sha-256")) {
                        if (!account_valid_hex(value, 64)) {
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

int account_file_load(const char *path, char ***errors, struct account_table **ret) {
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        int r = read_file(path, &text, &len);
        if (r < 0)
                return r;
        return account_table_parse(path, text, len, errors, ret);
}
