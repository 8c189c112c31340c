/*
 * lib/sock.h - helpers shared by the socket files (socket.c, addr.c,
 * tcp.c, listen.c, serve.c, udp.c).  Internal; not installed.
 *
 * The fd-closing rule lives here: an fd that a task may be waiting on is
 * closed only after nest_notify_closing(fd), so that the waiter wakes with
 * NEST_ECLOSED instead of waiting on a number the kernel may hand to the
 * next socket() (see design/10-io-and-sockets.md).
 */
#ifndef NEST_LIB_SOCK_H
#define NEST_LIB_SOCK_H

#include <errno.h>

#include "nest/error.h"
#include "nest/net.h"
#include "nest/stream.h"

/* errno as a negative code; -EIO if errno is (wrongly) 0. */
static inline int nest__neg_errno(void) { return errno > 0 ? -errno : -EIO; }

/* Wakes any task waiting on fd (when called from a task) and closes it.
 * Callable outside a task, where nobody can be waiting. */
void nest__fd_close(int fd);

/* nest_wait_readable (writable 0) or nest_wait_writable (1) for an fd that
 * is only ever closed by this rule (a socket or pipe stream's): same
 * checkpoint and errors, but the fd's watcher is reused from one wait to
 * the next instead of re-registered with the kernel each time
 * (lib/evloop.c).  *waited is the stream's record of the directions it has
 * waited on (0 when the stream is made): the first wait in each direction
 * sets the watcher up afresh. */
int nest__wait_stable(int fd, int writable, unsigned *waited);

/* Connects the non-blocking socket fd to a: connect(2), then, if it is in
 * progress, a wait for writability and SO_ERROR.  A checkpoint (the caller
 * has checked for cancellation; a connect that completes at once still
 * yields).  Returns 0, -ECANCELED, -EAGAIN (Unix socket backlog full) or
 * the connection's error.  The caller closes fd on failure. */
int nest__sock_connect(int fd, const nest_sockaddr *a);

/* Sets TCP_NODELAY on an AF_INET/AF_INET6 stream socket, SO_NOSIGPIPE where
 * the system has it.  Errors are ignored (not every socket supports them). */
void nest__sock_tune(int fd);

/* Makes s a socket stream over fd, which the caller knows to be a
 * connected, non-blocking stream socket (TCP when tcp is non-zero):
 * nest_socket_stream_init() without the system calls that find that out. */
void nest__socket_stream_adopt(nest_socket_stream *s, int fd, int tcp);

/* Whether rc (negative) is accept(2)'s "out of resources" error (EMFILE,
 * ENFILE, ENOBUFS), which calls for backing off.  -ENOMEM is not among
 * them: from nest_listener_accept it usually means nest's own allocator
 * failed, and nest's out-of-memory fails the call that needed the memory. */
static inline int nest__accept_capacity_error(int rc) {
    return rc == -EMFILE || rc == -ENFILE || rc == -ENOBUFS;
}

#endif
