/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <time.h>

#include <sofia-sip/su_log.h>

#include "log.h"
#include "loop.h"

/* sofia-sip exports these module logs but declares only soa_log in a header. */
extern su_log_t nta_log[], tport_log[], nua_log[], nea_log[], soa_log[], sresolv_log[],
        iptsec_log[], stun_log[], nth_client_log[], nth_server_log[];

int log_levels[_LOG_SUBSYSTEM_MAX] = {
#define X(name, doc) [LOG_##name] = LOG_NOTICE,
#include "log-subsystems.inc"
#undef X
};

static const char *const subsystem_names[_LOG_SUBSYSTEM_MAX] = {
#define X(name, doc) [LOG_##name] = #name,
#include "log-subsystems.inc"
#undef X
};

static const char *const subsystem_docs[_LOG_SUBSYSTEM_MAX] = {
#define X(name, doc) [LOG_##name] = doc,
#include "log-subsystems.inc"
#undef X
};

static const char *const level_names[] = {
        [LOG_ERR] = "error", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

static const char *ident = "sipfleet";
static enum log_target target = LOG_TARGET_STDERR;
static const struct log_sip_context *sip_context;
static log_capture_fn capture_fn;
static void *capture_userdata;

const char *log_subsystem_name(enum log_subsystem s) {
        return s < _LOG_SUBSYSTEM_MAX ? subsystem_names[s] : NULL;
}

const char *log_subsystem_doc(enum log_subsystem s) {
        return s < _LOG_SUBSYSTEM_MAX ? subsystem_docs[s] : NULL;
}

int log_subsystem_from_name(const char *name) {
        for (int i = 0; i < _LOG_SUBSYSTEM_MAX; i++)
                if (strcaseeq(subsystem_names[i], name))
                        return i;
        return -EINVAL;
}

const char *log_level_name(int level) {
        if (level < LOG_ERR)
                level = LOG_ERR;
        if (level > LOG_DEBUG)
                level = LOG_DEBUG;
        return level_names[level];
}

int log_level_from_name(const char *name) {
        static const struct {
                const char *name;
                int level;
        } aliases[] = {
                {"error", LOG_ERR},     {"err", LOG_ERR},         {"warning", LOG_WARNING},
                {"warn", LOG_WARNING},  {"notice", LOG_NOTICE},   {"message", LOG_NOTICE},
                {"info", LOG_INFO},     {"debug", LOG_DEBUG},
        };
        for (size_t i = 0; i < ELEMENTSOF(aliases); i++)
                if (strcaseeq(aliases[i].name, name))
                        return aliases[i].level;
        return -EINVAL;
}

/* systemd sets $JOURNAL_STREAM to "dev:inode" of the stream it connected stderr to. */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;
        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
                return false;
        return st.st_dev == dev && st.st_ino == ino;
}

void log_open(const char *id, enum log_target t) {
        ident = id;
        if (t == LOG_TARGET_AUTO)
                t = stderr_is_journal() ? LOG_TARGET_JOURNAL : LOG_TARGET_STDERR;
        target = t;
}

enum log_target log_get_target(void) {
        return target;
}

void log_set_level(enum log_subsystem s, int level) {
        if (s < _LOG_SUBSYSTEM_MAX)
                log_levels[s] = CLAMP(level, LOG_ERR, LOG_DEBUG);
}

void log_set_level_all(int level) {
        for (int i = 0; i < _LOG_SUBSYSTEM_MAX; i++)
                log_set_level(i, level);
}

void log_set_sip_context(const struct log_sip_context *ctx) {
        sip_context = ctx;
}

const struct log_sip_context *log_get_sip_context(void) {
        return sip_context;
}

void log_set_capture(log_capture_fn fn, void *userdata) {
        capture_fn = fn;
        capture_userdata = userdata;
}

bool log_ratelimit_ok(struct log_ratelimit *rl, unsigned interval_s, unsigned burst) {
        long long now = (long long)(now_msec() / 1000);
        if (rl->begin == 0 || now - rl->begin >= interval_s) {
                if (rl->suppressed > 0)
                        fprintf(stderr, "%s: %u similar messages suppressed\n", ident,
                                rl->suppressed);
                rl->begin = now;
                rl->n = 0;
                rl->suppressed = 0;
        }
        if (rl->n < burst) {
                rl->n++;
                return true;
        }
        rl->suppressed++;
        return false;
}

/* Appends "NAME=value" to the iovec list when value is set. */
static void journal_field(struct iovec *iov, size_t *n, char *buf, size_t size, const char *name,
                          const char *value) {
        if (!value)
                return;
        int len = snprintf(buf, size, "%s=%s", name, value);
        if (len < 0)
                return;
        iov[(*n)++] = (struct iovec){.iov_base = buf, .iov_len = MIN((size_t)len, size - 1)};
}

static void write_journal(enum log_subsystem s, int level, int error, const char *file, int line,
                          const char *func, const char *msg) {
        const struct log_sip_context *c = sip_context;
        char f[12][2100], num[3][16]; /* MESSAGE may be 2 KiB */
        struct iovec iov[12];
        size_t n = 0;
        snprintf(num[0], sizeof num[0], "%i", level);
        snprintf(num[1], sizeof num[1], "%i", line);
        snprintf(num[2], sizeof num[2], "%i", error);
        journal_field(iov, &n, f[n], sizeof f[n], "MESSAGE", msg);
        journal_field(iov, &n, f[n], sizeof f[n], "PRIORITY", num[0]);
        journal_field(iov, &n, f[n], sizeof f[n], "SYSLOG_IDENTIFIER", ident);
        journal_field(iov, &n, f[n], sizeof f[n], "SIPFLEET_SUBSYSTEM", subsystem_names[s]);
        journal_field(iov, &n, f[n], sizeof f[n], "CODE_FILE", file);
        journal_field(iov, &n, f[n], sizeof f[n], "CODE_LINE", num[1]);
        journal_field(iov, &n, f[n], sizeof f[n], "CODE_FUNC", func);
        journal_field(iov, &n, f[n], sizeof f[n], "ERRNO", error ? num[2] : NULL);
        if (c) {
                journal_field(iov, &n, f[n], sizeof f[n], "SIP_CALL_ID", c->call_id);
                journal_field(iov, &n, f[n], sizeof f[n], "SIP_METHOD", c->method);
                journal_field(iov, &n, f[n], sizeof f[n], "SIP_FROM", c->from);
                journal_field(iov, &n, f[n], sizeof f[n], "SIP_TO", c->to);
        }
        sd_journal_sendv(iov, (int)n);
}

static void write_stderr(enum log_subsystem s, int level, const char *msg) {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        localtime_r(&ts.tv_sec, &tm);
        const struct log_sip_context *c = sip_context;
        if (c && c->call_id)
                fprintf(stderr, "%02d:%02d:%02d.%03ld %-7s %-9s %s [call-id %s]\n", tm.tm_hour,
                        tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, log_level_name(level),
                        subsystem_names[s], msg, c->call_id);
        else
                fprintf(stderr, "%02d:%02d:%02d.%03ld %-7s %-9s %s\n", tm.tm_hour, tm.tm_min,
                        tm.tm_sec, ts.tv_nsec / 1000000, log_level_name(level),
                        subsystem_names[s], msg);
}

int log_internalv(enum log_subsystem s, int level, int error, const char *file, int line,
                  const char *func, const char *fmt, va_list ap) {
        char msg[2048];
        int saved = errno;
        error = abs(error);
        errno = error; /* for %m */
        vsnprintf(msg, sizeof msg, fmt, ap);
        if (capture_fn)
                capture_fn(s, level, msg, capture_userdata);
        else if (target == LOG_TARGET_JOURNAL)
                write_journal(s, level, error, file, line, func, msg);
        else
                write_stderr(s, level, msg);
        errno = saved;
        return -error;
}

int log_internal(enum log_subsystem s, int level, int error, const char *file, int line,
                 const char *func, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = log_internalv(s, level, error, file, line, func, fmt, ap);
        va_end(ap);
        return r;
}

/* sofia-sip hands over text fragments with no level; lines are assembled here and emitted
 * under the "sofia" subsystem. What sofia emits is chosen by its own level (sofia-level):
 * at 1-3 (errors, warnings) lines are logged as warnings, above as debug. */
static char sofia_buf[4096];
static size_t sofia_len;
static int sofia_level;

static void sofia_logger(void *stream, char const *fmt, va_list ap) {
        int n = vsnprintf(sofia_buf + sofia_len, sizeof sofia_buf - sofia_len, fmt, ap);
        if (n < 0)
                return;
        sofia_len = MIN(sofia_len + (size_t)n, sizeof sofia_buf - 1);
        char *nl;
        while ((nl = memchr(sofia_buf, '\n', sofia_len))) {
                *nl = 0;
                int level = sofia_level <= 3 ? LOG_WARNING : LOG_DEBUG;
                if (nl > sofia_buf && log_enabled(LOG_sofia, level))
                        log_internal(LOG_sofia, level, 0, "sofia-sip", 0, "su_log", "%s",
                                     sofia_buf);
                size_t rest = sofia_len - (size_t)(nl + 1 - sofia_buf);
                memmove(sofia_buf, nl + 1, rest);
                sofia_len = rest;
        }
        if (sofia_len == sizeof sofia_buf - 1) { /* a line that never ends: flush it */
                log_internal(LOG_sofia, LOG_DEBUG, 0, "sofia-sip", 0, "su_log", "%s", sofia_buf);
                sofia_len = 0;
        }
}

static su_log_t *const sofia_logs[] = {
        su_log_default, su_log_global, nta_log,     tport_log,      nua_log,        nea_log,
        soa_log,        sresolv_log,   iptsec_log,  stun_log,       nth_client_log, nth_server_log,
};

void log_set_sofia_level(int level) {
        sofia_level = CLAMP(level, 0, 9);
        for (size_t i = 0; i < ELEMENTSOF(sofia_logs); i++)
                su_log_set_level(sofia_logs[i], (unsigned)sofia_level);
}

void log_redirect_sofia(int level) {
        for (size_t i = 0; i < ELEMENTSOF(sofia_logs); i++)
                su_log_redirect(sofia_logs[i], sofia_logger, NULL);
        log_set_sofia_level(level);
}
