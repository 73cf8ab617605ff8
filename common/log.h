/* SPDX-License-Identifier: MIT */
#pragma once

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <syslog.h>

#include "macro.h"

/* Levels are syslog priorities: LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG. */

enum log_subsystem {
#define X(name, doc) LOG_##name,
#include "log-subsystems.inc"
#undef X
        _LOG_SUBSYSTEM_MAX,
};

/* The subsystem a file logs under: define LOG_SUBSYSTEM before including log.h. */
#ifndef LOG_SUBSYSTEM
#define LOG_SUBSYSTEM LOG_main
#endif

extern int log_levels[_LOG_SUBSYSTEM_MAX];

const char *log_subsystem_name(enum log_subsystem s);
const char *log_subsystem_doc(enum log_subsystem s);
int log_subsystem_from_name(const char *name);
const char *log_level_name(int level);
/* "error", "warning", "notice", "info", "debug" (also "err", "warn", "message"); -EINVAL otherwise. */
int log_level_from_name(const char *name);

/* Targets: LOG_TARGET_AUTO picks journald when stderr is connected to the journal
 * ($JOURNAL_STREAM matches), stderr otherwise. */
enum log_target { LOG_TARGET_AUTO, LOG_TARGET_STDERR, LOG_TARGET_JOURNAL };
void log_open(const char *ident, enum log_target target);
enum log_target log_get_target(void);

void log_set_level(enum log_subsystem s, int level);
void log_set_level_all(int level);

static inline bool log_enabled(enum log_subsystem s, int level) {
        return level <= log_levels[s];
}

/* SIP context of the message being processed: journald fields SIP_CALL_ID, SIP_METHOD, SIP_FROM,
 * SIP_TO. Strings are borrowed: set before processing, clear after. */
struct log_sip_context {
        const char *call_id;
        const char *method;
        const char *from;
        const char *to;
};
void log_set_sip_context(const struct log_sip_context *ctx);
const struct log_sip_context *log_get_sip_context(void);

/* Returns -abs(error) so callers can "return log_error_errno(r, ...)". %m prints strerror(error). */
int log_internal(enum log_subsystem s, int level, int error, const char *file, int line,
                 const char *func, const char *fmt, ...) _printf_(7, 8);
int log_internalv(enum log_subsystem s, int level, int error, const char *file, int line,
                  const char *func, const char *fmt, va_list ap) _printf_(7, 0);

/* Rate-limited: at most `burst` lines per `interval_s` per call site. */
struct log_ratelimit {
        long long begin;
        unsigned n, suppressed;
};
bool log_ratelimit_ok(struct log_ratelimit *rl, unsigned interval_s, unsigned burst);

#define log_full_errno(level, error, ...)                                                          \
        __extension__({                                                                            \
                int _l = (level), _e = (error);                                                    \
                log_enabled(LOG_SUBSYSTEM, _l)                                                     \
                        ? log_internal(LOG_SUBSYSTEM, _l, _e, __FILE__, __LINE__, __func__,         \
                                       __VA_ARGS__)                                                \
                        : -abs(_e);                                                                \
        })
#define log_full(level, ...) (void)log_full_errno(level, 0, __VA_ARGS__)

#define log_debug(...) log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...) log_full(LOG_ERR, __VA_ARGS__)

#define log_debug_errno(e, ...) log_full_errno(LOG_DEBUG, e, __VA_ARGS__)
#define log_info_errno(e, ...) log_full_errno(LOG_INFO, e, __VA_ARGS__)
#define log_notice_errno(e, ...) log_full_errno(LOG_NOTICE, e, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, e, __VA_ARGS__)
#define log_error_errno(e, ...) log_full_errno(LOG_ERR, e, __VA_ARGS__)
#define log_oom() log_error_errno(ENOMEM, "Out of memory.")

/* A network-triggered warning: at most 10 lines per 10 s from this call site. */
#define log_warning_ratelimited(...)                                                               \
        do {                                                                                       \
                static struct log_ratelimit _rl;                                                   \
                if (log_enabled(LOG_SUBSYSTEM, LOG_WARNING) && log_ratelimit_ok(&_rl, 10, 10))      \
                        log_warning(__VA_ARGS__);                                                  \
        } while (0)

/* Route sofia-sip's su_log output (nta, tport, nua, nea, soa, sresolv...) into the "sofia"
 * subsystem. level: sofia's 0-9 verbosity. */
void log_redirect_sofia(int level);
void log_set_sofia_level(int level);

/* For tests: capture formatted lines instead of writing them. */
typedef void (*log_capture_fn)(enum log_subsystem s, int level, const char *msg, void *userdata);
void log_set_capture(log_capture_fn fn, void *userdata);
