/* SPDX-License-Identifier: MIT */
#pragma once

/* The accepting side of a stream server on the loop (the control socket, the HTTP server): a
 * listening fd watched for connections, accepted in bursts, each handed to a callback. When
 * accept() fails with anything but "try again" (EMFILE, ENFILE, ENOMEM...), the listener pauses
 * for a moment instead of spinning on a socket that stays readable. */

#include <sys/socket.h>

struct loop;
struct listener;

/* Called once per accepted connection (non-blocking, close-on-exec). Return >= 0 to take fd
 * over; < 0 to have the listener close it. -EBUSY means "too many connections": the listener
 * first sends the busy message given at creation. Must not free the listener. */
typedef int (*listener_accept_fn)(int fd, void *userdata);

/* A stream socket (SOCK_CLOEXEC|SOCK_NONBLOCK) bound to sa, SO_REUSEADDR for IPv4 and IPv6.
 * Returns the fd, or -errno. The caller sets it up further and calls listen(). */
int listener_bind(const struct sockaddr *sa, socklen_t len);

/* Watches fd, which must already listen, and takes it over on success (closed by
 * listener_free()); on failure it stays the caller's. busy (may be NULL) is copied. */
int listener_new(struct loop *l, int fd, const char *busy, listener_accept_fn on_accept,
                 void *userdata, struct listener **ret);
/* Stops accepting and closes the listening fd; connections already handed over are not
 * touched. Accepts NULL. */
void listener_free(struct listener *l);

int listener_get_fd(struct listener *l);
