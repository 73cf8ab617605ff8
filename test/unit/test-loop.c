/* SPDX-License-Identifier: MIT */
#include <event2/event.h>
#include <sofia-sip/su_wait.h>
#include <sys/socket.h>

#include "loop.h"
#include "testlib.h"

/* Each test runs on both backends: _i = 0 su_root, 1 libevent. */
struct backend {
        su_root_t *root;
        struct event_base *base;
        struct loop *loop;
};

static void backend_new(int kind, struct backend *b) {
        if (kind == 0) {
                ck_assert_int_eq(su_init(), 0);
                b->root = su_root_create(NULL);
                ck_assert_ptr_nonnull(b->root);
                ck_assert_int_eq(loop_new_su(b->root, &b->loop), 0);
        } else {
                b->base = event_base_new();
                ck_assert_ptr_nonnull(b->base);
                ck_assert_int_eq(loop_new_event(b->base, &b->loop), 0);
        }
}

static void backend_free(struct backend *b) {
        loop_free(b->loop);
        if (b->root) {
                su_root_destroy(b->root);
                su_deinit();
        }
        if (b->base)
                event_base_free(b->base);
}

struct state {
        struct loop *loop;
        int fires;
        char got[16];
        struct loop_io *io;
        struct loop_timer *self_freeing;
};

static void on_timer(struct loop_timer *t, void *userdata) {
        struct state *s = userdata;
        if (++s->fires < 3)
                loop_timer_arm(t, 5); /* periodic by re-arming */
        else
                loop_quit(s->loop);
}

START_TEST(test_loop_timer_rearm) {
        struct backend b = {0};
        backend_new(_i, &b);
        struct state s = {.loop = b.loop};
        struct loop_timer *t;
        ck_assert_int_eq(loop_timer_new(b.loop, on_timer, &s, &t), 0);
        ck_assert(!loop_timer_armed(t));
        uint64_t start = now_msec();
        ck_assert_int_eq(loop_timer_arm(t, 5), 0);
        ck_assert(loop_timer_armed(t));
        loop_run(b.loop);
        ck_assert_int_eq(s.fires, 3);
        ck_assert_uint_ge(now_msec() - start, 10);
        loop_timer_free(t);
        backend_free(&b);
}
END_TEST

static void never(struct loop_timer *t, void *userdata) {
        ck_abort_msg("a disarmed timer fired");
}

static void stop(struct loop_timer *t, void *userdata) {
        loop_quit(userdata);
}

START_TEST(test_loop_timer_disarm) {
        struct backend b = {0};
        backend_new(_i, &b);
        struct loop_timer *t, *end;
        ck_assert_int_eq(loop_timer_new(b.loop, never, NULL, &t), 0);
        ck_assert_int_eq(loop_timer_new(b.loop, stop, b.loop, &end), 0);
        loop_timer_arm(t, 5);
        loop_timer_disarm(t);
        ck_assert(!loop_timer_armed(t));
        loop_timer_arm(end, 30);
        loop_run(b.loop);
        loop_timer_free(t);
        loop_timer_free(end);
        backend_free(&b);
}
END_TEST

static void on_read(struct loop_io *io, int fd, unsigned events, void *userdata) {
        struct state *s = userdata;
        ck_assert(events & LOOP_READ);
        ssize_t n = read(fd, s->got, sizeof s->got - 1);
        ck_assert_int_gt(n, 0);
        /* Freeing the watch from its own callback is allowed. */
        loop_io_free(io);
        s->io = NULL;
        loop_quit(s->loop);
}

static void on_write(struct loop_io *io, int fd, unsigned events, void *userdata) {
        ck_assert(events & LOOP_WRITE);
        ck_assert_int_eq(write(fd, "ping", 4), 4);
        loop_io_set_events(io, 0);
        ck_assert_uint_eq(loop_io_get_events(io), 0);
}

START_TEST(test_loop_io_read_write) {
        struct backend b = {0};
        backend_new(_i, &b);
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
        struct state s = {.loop = b.loop};
        struct loop_io *w;
        ck_assert_int_eq(loop_io_add(b.loop, sv[0], LOOP_WRITE, on_write, &s, &w), 0);
        ck_assert_int_eq(loop_io_add(b.loop, sv[1], LOOP_READ, on_read, &s, &s.io), 0);
        loop_run(b.loop);
        ck_assert_str_eq(s.got, "ping");
        ck_assert_ptr_null(s.io);
        loop_io_free(w);
        close(sv[0]);
        close(sv[1]);
        backend_free(&b);
}
END_TEST

static void free_self(struct loop_timer *t, void *userdata) {
        struct state *s = userdata;
        loop_timer_free(t);
        s->self_freeing = NULL;
        loop_quit(s->loop);
}

START_TEST(test_loop_timer_free_in_callback) {
        struct backend b = {0};
        backend_new(_i, &b);
        struct state s = {.loop = b.loop};
        ck_assert_int_eq(loop_timer_new(b.loop, free_self, &s, &s.self_freeing), 0);
        loop_timer_arm(s.self_freeing, 0);
        loop_run(b.loop);
        ck_assert_ptr_null(s.self_freeing);
        backend_free(&b);
}
END_TEST

int main(void) {
        Suite *s = suite_create("loop");
        TCase *tc = tcase_create("backends");
        tcase_add_loop_test(tc, test_loop_timer_rearm, 0, 2);
        tcase_add_loop_test(tc, test_loop_timer_disarm, 0, 2);
        tcase_add_loop_test(tc, test_loop_io_read_write, 0, 2);
        tcase_add_loop_test(tc, test_loop_timer_free_in_callback, 0, 2);
        suite_add_tcase(s, tc);
        return tl_run(s);
}
