/* SPDX-License-Identifier: MIT */
/* su_root backend: fd watches through su_root_register, timers through su_timer. */
#include <sofia-sip/su_wait.h>

#include "loop-internal.h"
#include "macro.h"

static int su_events(unsigned events) {
        int e = 0;
        if (events & LOOP_READ)
                e |= SU_WAIT_IN;
        if (events & LOOP_WRITE)
                e |= SU_WAIT_OUT;
        return e;
}

static int su_run(struct loop *l) {
        su_root_run(l->root);
        return 0;
}

static void su_quit(struct loop *l) {
        su_root_break(l->root);
}

static int su_wakeup(su_root_magic_t *magic, su_wait_t *w, su_wakeup_arg_t *arg) {
        struct loop_io *io = arg;
        int revents = su_wait_events(w, io->fd);
        unsigned events = 0;
        if (revents & SU_WAIT_IN)
                events |= LOOP_READ;
        if (revents & SU_WAIT_OUT)
                events |= LOOP_WRITE;
        if (revents & (SU_WAIT_ERR | SU_WAIT_HUP))
                events |= LOOP_ERROR | (io->events & LOOP_READ);
        if (events)
                io->cb(io, io->fd, events, io->userdata);
        return 0;
}

static int su_io_add(struct loop_io *io) {
        su_wait_t w[1] = {SU_WAIT_INIT};
        if (su_wait_create(w, io->fd, su_events(io->events)) < 0)
                return errno > 0 ? -errno : -EINVAL;
        int idx = su_root_register(io->loop->root, w, su_wakeup, io, 0);
        if (idx < 0) {
                su_wait_destroy(w);
                return -ENOMEM;
        }
        io->su_index = idx;
        return 0;
}

static int su_io_set(struct loop_io *io, unsigned events) {
        if (su_root_eventmask(io->loop->root, io->su_index, io->fd, su_events(events)) < 0)
                return -EINVAL;
        return 0;
}

static void su_io_free(struct loop_io *io) {
        if (io->su_index >= 0)
                su_root_deregister(io->loop->root, io->su_index);
}

static void su_timer_cb(su_root_magic_t *magic, su_timer_t *st, su_timer_arg_t *arg) {
        struct loop_timer *t = arg;
        t->armed = false;
        t->cb(t, t->userdata);
}

static int su_timer_new(struct loop_timer *t) {
        t->su_timer = su_timer_create(su_root_task(t->loop->root), 0);
        return t->su_timer ? 0 : -ENOMEM;
}

static int su_timer_arm(struct loop_timer *t, uint64_t msec) {
        su_timer_reset(t->su_timer);
        if (msec > INT32_MAX)
                msec = INT32_MAX;
        if (su_timer_set_interval(t->su_timer, su_timer_cb, t, (su_duration_t)msec) < 0)
                return -EINVAL;
        return 0;
}

static void su_timer_disarm(struct loop_timer *t) {
        su_timer_reset(t->su_timer);
}

static void su_timer_free(struct loop_timer *t) {
        su_timer_destroy(t->su_timer);
}

const struct loop_ops loop_su_ops = {
        .run = su_run,
        .quit = su_quit,
        .io_add = su_io_add,
        .io_set = su_io_set,
        .io_free = su_io_free,
        .timer_new = su_timer_new,
        .timer_arm = su_timer_arm,
        .timer_disarm = su_timer_disarm,
        .timer_free = su_timer_free,
};
