/* SPDX-License-Identifier: MIT */
#pragma once

#include "loop.h"

/* Each backend fills the operations; loop.c dispatches. */
struct loop_ops {
        int (*run)(struct loop *l);
        void (*quit)(struct loop *l);
        void (*free)(struct loop *l);
        int (*io_add)(struct loop_io *io);
        int (*io_set)(struct loop_io *io, unsigned events);
        void (*io_free)(struct loop_io *io);
        int (*timer_new)(struct loop_timer *t);
        int (*timer_arm)(struct loop_timer *t, uint64_t msec);
        void (*timer_disarm)(struct loop_timer *t);
        void (*timer_free)(struct loop_timer *t);
};

struct loop {
        const struct loop_ops *ops;
        struct su_root_s *root;
        struct event_base *base;
        unsigned n_io, n_timers; /* live watches, to catch leaks at loop_free */
};

struct loop_io {
        struct loop *loop;
        int fd;
        unsigned events;
        loop_io_fn cb;
        void *userdata;
        int su_index;        /* su_root registration */
        struct event *event; /* libevent */
};

struct loop_timer {
        struct loop *loop;
        loop_timer_fn cb;
        void *userdata;
        bool armed;
        struct su_timer_s *su_timer;
        struct event *event;
};

extern const struct loop_ops loop_su_ops;
extern const struct loop_ops loop_event_ops;
