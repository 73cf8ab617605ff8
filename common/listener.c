/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <sys/socket.h>

#include "listener.h"
#include "log.h"
#include "loop.h"
#include "macro.h"

/* How many connections one wake-up accepts, and the pause after EMFILE and the like. */
#define LISTENER_ACCEPT_BURST 16
#define LISTENER_PAUSE_MS 100

struct listener {
        int fd;
        struct loop_io *io;
        struct loop_timer *resume_timer;
        char *busy;
        listener_accept_fn on_accept;
        void *userdata;
};

/* Out of fds or memory: stop watching for a while. */
static void listener_pause(struct listener *l) {
        if (loop_io_set_events(l->io, 0) >= 0 &&
            loop_timer_arm(l->resume_timer, LISTENER_PAUSE_MS) < 0)
                (void)loop_io_set_events(l->io, LOOP_READ);
}

static void listener_resume(struct loop_timer *t, void *userdata) {
        struct listener *l = userdata;
        int r;

        r = loop_io_set_events(l->io, LOOP_READ);
        if (r < 0 && loop_timer_arm(t, LISTENER_PAUSE_MS) < 0)
                log_debug_errno(r, "Failed to resume accepting connections: %m");
}

static void listener_io(struct loop_io *io, int fd, unsigned events, void *userdata) {
        struct listener *l = userdata;

        for (unsigned i = 0; i < LISTENER_ACCEPT_BURST; i++) {
                int cfd, r;

                cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (cfd < 0) {
                        if (errno == EINTR || errno == ECONNABORTED)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                return;
                        log_debug_errno(errno, "Failed to accept a connection, pausing: %m");
                        listener_pause(l);
                        return;
                }

                r = l->on_accept(cfd, l->userdata);
                if (r == -EBUSY && l->busy)
                        (void)send(cfd, l->busy, strlen(l->busy), MSG_NOSIGNAL | MSG_DONTWAIT);
                if (r < 0)
                        close(cfd);
        }
}

int listener_bind(const struct sockaddr *sa, socklen_t len) {
        _cleanup_close_ int fd = -1;

        assert(sa);

        fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)
                (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &(int){1}, sizeof(int));
        if (bind(fd, sa, len) < 0)
                return -errno;
        return TAKE_FD(fd);
}

void listener_free(struct listener *l) {
        if (!l)
                return;
        loop_io_free(l->io);
        loop_timer_free(l->resume_timer);
        if (l->fd >= 0)
                close(l->fd);
        free(l->busy);
        free(l);
}

static void listener_freep(struct listener **l) {
        listener_free(*l);
}

int listener_new(struct loop *loop, int fd, const char *busy, listener_accept_fn on_accept,
                 void *userdata, struct listener **ret) {
        _cleanup_(listener_freep) struct listener *l = NULL;
        int r;

        assert(loop);
        assert(fd >= 0);
        assert(on_accept);
        assert(ret);

        l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        l->fd = -1;
        l->on_accept = on_accept;
        l->userdata = userdata;
        if (busy) {
                l->busy = strdup(busy);
                if (!l->busy)
                        return -ENOMEM;
        }

        r = loop_io_add(loop, fd, LOOP_READ, listener_io, l, &l->io);
        if (r < 0)
                return r;
        r = loop_timer_new(loop, listener_resume, l, &l->resume_timer);
        if (r < 0)
                return r;

        l->fd = fd;
        *ret = TAKE_PTR(l);
        return 0;
}

int listener_get_fd(struct listener *l) {
        assert(l);
        return l->fd;
}
