/* SPDX-License-Identifier: MIT */
/* libevent backend. */
#include <event2/event.h>

#include "loop-internal.h"
#include "macro.h"

static int ev_run(struct loop *l) {
        return event_base_dispatch(l->base) < 0 ? -EIO : 0;
}

static void ev_quit(struct loop *l) {
        event_base_loopbreak(l->base);
}

static void ev_io_cb(evutil_socket_t fd, short what, void *arg) {
        struct loop_io *io = arg;
        unsigned events = 0;
        if (what & EV_READ)
                events |= LOOP_READ;
        if (what & EV_WRITE)
                events |= LOOP_WRITE;
        if (events)
                io->cb(io, io->fd, events, io->userdata);
}

static int ev_io_set(struct loop_io *io, unsigned events) {
        short what = EV_PERSIST;
        if (events & LOOP_READ)
                what |= EV_READ;
        if (events & LOOP_WRITE)
                what |= EV_WRITE;
        struct event *e = event_new(io->loop->base, io->fd, what, ev_io_cb, io);
        if (!e)
                return -ENOMEM;
        if ((events & (LOOP_READ | LOOP_WRITE)) && event_add(e, NULL) < 0) {
                event_free(e);
                return -EINVAL;
        }
        if (io->event)
                event_free(io->event);
        io->event = e;
        return 0;
}

static int ev_io_add(struct loop_io *io) {
        return ev_io_set(io, io->events);
}

static void ev_io_free(struct loop_io *io) {
        if (io->event)
                event_free(io->event);
}

static void ev_timer_cb(evutil_socket_t fd, short what, void *arg) {
        struct loop_timer *t = arg;
        t->armed = false;
        t->cb(t, t->userdata);
}

static int ev_timer_new(struct loop_timer *t) {
        t->event = evtimer_new(t->loop->base, ev_timer_cb, t);
        return t->event ? 0 : -ENOMEM;
}

static int ev_timer_arm(struct loop_timer *t, uint64_t msec) {
        struct timeval tv = {.tv_sec = msec / 1000, .tv_usec = (msec % 1000) * 1000};
        return evtimer_add(t->event, &tv) < 0 ? -EINVAL : 0;
}

static void ev_timer_disarm(struct loop_timer *t) {
        evtimer_del(t->event);
}

static void ev_timer_free(struct loop_timer *t) {
        event_free(t->event);
}

const struct loop_ops loop_event_ops = {
        .run = ev_run,
        .quit = ev_quit,
        .io_add = ev_io_add,
        .io_set = ev_io_set,
        .io_free = ev_io_free,
        .timer_new = ev_timer_new,
        .timer_arm = ev_timer_arm,
        .timer_disarm = ev_timer_disarm,
        .timer_free = ev_timer_free,
};
