/* SPDX-License-Identifier: MIT */
#define LOG_SUBSYSTEM LOG_registrar
#include <stdio.h>

#include "log.h"
#include "testlib.h"

static char last[2048];
static int last_level, n_lines;
static enum log_subsystem last_subsystem;

static void capture(enum log_subsystem s, int level, const char *msg, void *userdata) {
        snprintf(last, sizeof last, "%s", msg);
        last_level = level;
        last_subsystem = s;
        n_lines++;
}

static void setup(void) {
        log_set_capture(capture, NULL);
        log_set_level_all(LOG_NOTICE);
        n_lines = 0;
        last[0] = 0;
}

static void teardown(void) {
        log_set_capture(NULL, NULL);
}

START_TEST(test_log_levels_filter) {
        log_debug("hidden %d", 1);
        log_info("hidden too");
        ck_assert_int_eq(n_lines, 0);
        log_notice("shown %d", 2);
        ck_assert_int_eq(n_lines, 1);
        ck_assert_str_eq(last, "shown 2");
        ck_assert_int_eq(last_level, LOG_NOTICE);
        ck_assert_int_eq(last_subsystem, LOG_registrar);
        log_error("error");
        ck_assert_int_eq(n_lines, 2);
}
END_TEST

START_TEST(test_log_levels_per_subsystem) {
        log_set_level(LOG_registrar, LOG_DEBUG);
        log_debug("registrar debug");
        ck_assert_int_eq(n_lines, 1);
        /* Another subsystem keeps its level. */
        ck_assert(!log_enabled(LOG_sip, LOG_DEBUG));
        log_set_level(LOG_registrar, LOG_ERR);
        log_warning("warning");
        ck_assert_int_eq(n_lines, 1);
}
END_TEST

START_TEST(test_log_errno_returns_negative) {
        int r = log_error_errno(ENOENT, "open '%s': %m", "x");
        ck_assert_int_eq(r, -ENOENT);
        ck_assert_str_eq(last, "open 'x': No such file or directory");
        /* Filtered out: still returns the error, prints nothing. */
        r = log_debug_errno(-EPERM, "quiet");
        ck_assert_int_eq(r, -EPERM);
        ck_assert_int_eq(n_lines, 1);
}
END_TEST

START_TEST(test_log_level_names) {
        ck_assert_int_eq(log_level_from_name("debug"), LOG_DEBUG);
        ck_assert_int_eq(log_level_from_name("WARNING"), LOG_WARNING);
        ck_assert_int_eq(log_level_from_name("err"), LOG_ERR);
        ck_assert_int_eq(log_level_from_name("message"), LOG_NOTICE);
        ck_assert_int_eq(log_level_from_name("loud"), -EINVAL);
        ck_assert_str_eq(log_level_name(LOG_INFO), "info");
        ck_assert_int_eq(log_subsystem_from_name("redis"), LOG_redis);
        ck_assert_int_eq(log_subsystem_from_name("nope"), -EINVAL);
        ck_assert_str_eq(log_subsystem_name(LOG_sofia), "sofia");
}
END_TEST

START_TEST(test_log_ratelimit) {
        struct log_ratelimit rl = {0};
        int ok = 0;
        for (int i = 0; i < 100; i++)
                ok += log_ratelimit_ok(&rl, 10, 5);
        ck_assert_int_eq(ok, 5);
        ck_assert_uint_eq(rl.suppressed, 95);
}
END_TEST

START_TEST(test_log_sip_context) {
        struct log_sip_context ctx = {.call_id = "abc@host", .method = "INVITE"};
        log_set_sip_context(&ctx);
        ck_assert_str_eq(log_get_sip_context()->call_id, "abc@host");
        log_set_sip_context(NULL);
        ck_assert_ptr_null(log_get_sip_context());
}
END_TEST

START_TEST(test_log_stderr_format) {
        /* Without capture, lines go to stderr with level and subsystem. */
        log_set_capture(NULL, NULL);
        log_open("test", LOG_TARGET_STDERR);
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        FILE *saved = stderr;
        stderr = m;
        struct log_sip_context ctx = {.call_id = "cid-1"};
        log_set_sip_context(&ctx);
        log_warning("disk '%s' full", "x");
        log_set_sip_context(NULL);
        stderr = saved;
        fclose(m);
        ck_assert_ptr_nonnull(strstr(buf, "warning"));
        ck_assert_ptr_nonnull(strstr(buf, "registrar"));
        ck_assert_ptr_nonnull(strstr(buf, "disk 'x' full"));
        ck_assert_ptr_nonnull(strstr(buf, "[call-id cid-1]"));
        free(buf);
}
END_TEST

int main(void) {
        Suite *s = suite_create("log");
        TCase *tc = tcase_create("levels");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_log_levels_filter);
        tcase_add_test(tc, test_log_levels_per_subsystem);
        tcase_add_test(tc, test_log_errno_returns_negative);
        tcase_add_test(tc, test_log_level_names);
        tcase_add_test(tc, test_log_ratelimit);
        tcase_add_test(tc, test_log_sip_context);
        tcase_add_test(tc, test_log_stderr_format);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
