/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <time.h>

#include "loop-internal.h"
#include "macro.h"

static int loop_new(const struct loop_ops *ops, struct su_root_s *root, struct event_base *base,
                    struct loop **ret) {
        struct loop *l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        l->ops = ops;
        l->root = root;
        l->base = base;
        *ret = l;
        return 0;
}

int loop_new_su(struct su_root_s *root, struct loop **ret) {
        assert(root);
        return loop_new(&loop_su_ops, root, NULL, ret);
}

int loop_new_event(struct event_base *base, struct loop **ret) {
        assert(base);
        return loop_new(&loop_event_ops, NULL, base, ret);
}

void loop_free(struct loop *l) {
        if (!l)
                return;
        assert(l->n_io == 0 && l->n_timers == 0);
        free(l);
}

struct su_root_s *loop_su_root(struct loop *l) {
        return l->root;
}

struct event_base *loop_event_base(struct loop *l) {
        return l->base;
}

int loop_run(struct loop *l) {
        return l->ops->run(l);
}

void loop_quit(struct loop *l) {
        l->ops->quit(l);
}

int loop_io_add(struct loop *l, int fd, unsigned events, loop_io_fn cb, void *userdata,
                struct loop_io **ret) {
        assert(fd >= 0 && cb);
        struct loop_io *io = calloc(1, sizeof *io);
        if (!io)
                return -ENOMEM;
        *io = (struct loop_io){.loop = l, .fd = fd, .events = events, .cb = cb,
                               .userdata = userdata, .su_index = -1};
        int r = l->ops->io_add(io);
        if (r < 0) {
                free(io);
                return r;
        }
        l->n_io++;
        *ret = io;
        return 0;
}

int loop_io_set_events(struct loop_io *io, unsigned events) {
        events &= LOOP_READ | LOOP_WRITE;
        if (events == io->events)
                return 0;
        int r = io->loop->ops->io_set(io, events);
        if (r >= 0)
                io->events = events;
        return r;
}

unsigned loop_io_get_events(struct loop_io *io) {
        return io->events;
}

void loop_io_free(struct loop_io *io) {
        if (!io)
                return;
        io->loop->ops->io_free(io);
        io->loop->n_io--;
        free(io);
}

int loop_timer_new(struct loop *l, loop_timer_fn cb, void *userdata, struct loop_timer **ret) {
        assert(cb);
        struct loop_timer *t = calloc(1, sizeof *t);
        if (!t)
                return -ENOMEM;
        *t = (struct loop_timer){.loop = l, .cb = cb, .userdata = userdata};
        int r = l->ops->timer_new(t);
        if (r < 0) {
                free(t);
                return r;
        }
        l->n_timers++;
        *ret = t;
        return 0;
}

int loop_timer_arm(struct loop_timer *t, uint64_t msec) {
        int r = t->loop->ops->timer_arm(t, msec);
        if (r >= 0)
                t->armed = true;
        return r;
}

void loop_timer_disarm(struct loop_timer *t) {
        if (!t || !t->armed)
                return;
        t->loop->ops->timer_disarm(t);
        t->armed = false;
}

bool loop_timer_armed(struct loop_timer *t) {
        return t->armed;
}

void loop_timer_free(struct loop_timer *t) {
        if (!t)
                return;
        t->loop->ops->timer_free(t);
        t->loop->n_timers--;
        free(t);
}

static uint64_t clock_msec(clockid_t id) {
        struct timespec ts;
        clock_gettime(id, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t now_msec(void) {
        return clock_msec(CLOCK_MONOTONIC);
}

uint64_t realtime_msec(void) {
        return clock_msec(CLOCK_REALTIME);
}
