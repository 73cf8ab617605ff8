/* SPDX-License-Identifier: MIT */
#pragma once

/* One small event-loop interface with two backends: sofia-sip's su_root (SIP daemons) and
 * libevent (pushd, mediarelay). The Redis client, the control socket, the HTTP glue and the
 * daemon skeleton are written once against it. Single-threaded: call from the loop's thread. */

#include <stdbool.h>
#include <stdint.h>

struct loop;
struct loop_io;
struct loop_timer;
struct su_root_s;
struct event_base;

enum {
        LOOP_READ = 1 << 0,
        LOOP_WRITE = 1 << 1,
        LOOP_ERROR = 1 << 2, /* reported only: hang-up or error on the fd */
};

typedef void (*loop_io_fn)(struct loop_io *io, int fd, unsigned events, void *userdata);
typedef void (*loop_timer_fn)(struct loop_timer *t, void *userdata);

int loop_new_su(struct su_root_s *root, struct loop **ret);
int loop_new_event(struct event_base *base, struct loop **ret);
/* Watches and timers must be freed before the loop. Accepts NULL. */
void loop_free(struct loop *l);

struct su_root_s *loop_su_root(struct loop *l);      /* NULL on the libevent backend */
struct event_base *loop_event_base(struct loop *l); /* NULL on the su_root backend */

/* Run until loop_quit(). */
int loop_run(struct loop *l);
void loop_quit(struct loop *l);

/* Watch fd for events (LOOP_READ|LOOP_WRITE). The fd stays owned by the caller. */
int loop_io_add(struct loop *l, int fd, unsigned events, loop_io_fn cb, void *userdata,
                struct loop_io **ret);
int loop_io_set_events(struct loop_io *io, unsigned events);
unsigned loop_io_get_events(struct loop_io *io);
/* Safe to call from within the io's own callback. Accepts NULL. */
void loop_io_free(struct loop_io *io);

/* A one-shot timer, created disarmed. Re-arm from the callback for periodic work. */
int loop_timer_new(struct loop *l, loop_timer_fn cb, void *userdata, struct loop_timer **ret);
int loop_timer_arm(struct loop_timer *t, uint64_t msec);
void loop_timer_disarm(struct loop_timer *t);
bool loop_timer_armed(struct loop_timer *t);
/* Safe to call from within the timer's own callback. Accepts NULL. */
void loop_timer_free(struct loop_timer *t);

/* CLOCK_MONOTONIC in milliseconds / CLOCK_REALTIME in milliseconds. */
uint64_t now_msec(void);
uint64_t realtime_msec(void);
