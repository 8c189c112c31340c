/*
 * lib/socket.c - socket streams (nest_socket_stream) and the socket
 * helpers of lib/sock.h: closing by the rules, connect as a checkpoint,
 * Unix-socket connect.
 *
 * A socket stream is an fd in non-blocking mode.  Its operations try the
 * system call first and wait for readiness (nest/fd.h) only on EAGAIN, as
 * Trio does: one system call when data is already there, and the wait is
 * where cancellation and deadlines act.
 *
 * Invariants:
 *  - s->fd is the stream's own socket while the stream is open; close
 *    calls nest_notify_closing(fd) before close(2) (lib/sock.h's rule), so
 *    a task blocked in receive_some or send_all wakes with NEST_ECLOSED.
 *  - After a wait, an operation reads op->closed before it touches s or
 *    the fd number again (lib/stream.c): the stream may be freed and the
 *    number reused by then.
 *  - Sends use MSG_NOSIGNAL (Linux) or SO_NOSIGPIPE (set at init, BSD):
 *    a dead peer is -EPIPE, never SIGPIPE.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nest/fd.h"
#include "nest/scope.h"
#include "nest/task.h"
#include "nest/time.h"
#include "sock.h"

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* SO_NOSIGPIPE is set at init instead */
#endif

void nest__fd_close(int fd) {
    if (fd < 0) return;
    if (nest_current_task()) nest_notify_closing(fd);
    /* close(2) releases the descriptor even when it reports EINTR (Linux,
     * and POSIX 2024 for the plain close); retrying could close a number
     * another thread just reused. */
    (void)close(fd);
}

static void set_nosigpipe(int fd) {
#ifdef SO_NOSIGPIPE
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#else
    (void)fd;
#endif
}

void nest__sock_tune(int fd) {
    int one = 1;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int type = 0;
    socklen_t tlen = sizeof type;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
        (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) &&
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 && type == SOCK_STREAM)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    set_nosigpipe(fd);
}

int nest__sock_connect(int fd, const nest_sockaddr *a) {
    if (connect(fd, &a->u.sa, a->len) == 0) {
        (void)nest_checkpoint(); /* cannot fail: nothing ran since the caller's check */
        return 0;
    }
    /* EINTR: the connection goes on in the background, as with EINPROGRESS. */
    if (errno != EINPROGRESS && errno != EINTR) return nest__neg_errno();
    int rc = nest_wait_writable(fd);
    if (rc < 0) return rc;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return nest__neg_errno();
    return err ? -err : 0;
}

/* ---- the stream ---------------------------------------------------------- */

static int sock_send_all(nest_stream *s, const void *buf, size_t len, size_t *sent,
                         nest_stream_op *op) {
    nest_socket_stream *ss = (nest_socket_stream *)s;
    int fd = ss->fd;
    const char *p = buf;
    size_t total = 0;
    int waited = 0;
    while (total < len) {
        ssize_t n = send(fd, p + total, len - total, MSG_NOSIGNAL);
        if (n >= 0) {
            total += (size_t)n;
            continue;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            *sent = total;
            return nest__neg_errno();
        }
        int rc = nest__wait_stable(fd, 1, &ss->waited);
        waited = 1;
        if (op->closed || rc < 0) {
            *sent = total;
            return rc < 0 ? rc : NEST_ECLOSED;
        }
    }
    *sent = total;
    if (!waited) (void)nest_checkpoint(); /* cannot fail: see nest_stream_vtable */
    return 0;
}

static ssize_t sock_receive_some(nest_stream *s, void *buf, size_t max, nest_stream_op *op) {
    nest_socket_stream *ss = (nest_socket_stream *)s;
    int fd = ss->fd;
    int waited = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, max, 0);
        if (n >= 0) {
            if (!waited) (void)nest_checkpoint(); /* cannot fail: see nest_stream_vtable */
            return n;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return nest__neg_errno();
        int rc = nest__wait_stable(fd, 0, &ss->waited);
        waited = 1;
        if (op->closed || rc < 0) return rc < 0 ? rc : NEST_ECLOSED;
    }
}

static int sock_send_eof(nest_stream *s, nest_stream_op *op) {
    (void)op;
    nest_socket_stream *ss = (nest_socket_stream *)s;
    if (shutdown(ss->fd, SHUT_WR) < 0) return nest__neg_errno();
    return 0;
}

static int sock_close(nest_stream *s) {
    nest_socket_stream *ss = (nest_socket_stream *)s;
    int fd = ss->fd;
    ss->fd = -1;
    nest__fd_close(fd);
    return 0;
}

static const nest_stream_vtable sock_vt = {
    "socket", sock_send_all, sock_receive_some, sock_send_eof, sock_close,
};

int nest_socket_stream_init(nest_socket_stream *s, int fd) {
    if (fd < 0) return -EBADF;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) return nest__neg_errno();
    if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return nest__neg_errno();
    nest__sock_tune(fd);
    nest_stream_init(&s->stream, &sock_vt);
    s->fd = fd;
    s->waited = 0;
    return 0;
}

void nest__socket_stream_adopt(nest_socket_stream *s, int fd, int tcp) {
    if (tcp) {
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    set_nosigpipe(fd);
    nest_stream_init(&s->stream, &sock_vt);
    s->fd = fd;
    s->waited = 0;
}

int nest_stream_socket(const nest_stream *s) {
    if (s->vt != &sock_vt) return -EINVAL;
    const nest_socket_stream *ss = (const nest_socket_stream *)s;
    return ss->fd >= 0 ? ss->fd : NEST_ECLOSED;
}

/* ---- Unix sockets -------------------------------------------------------- */

int nest_unix_connect(const char *path, nest_socket_stream *out) {
    if (nest_cancelled()) return -ECANCELED;
    nest_sockaddr a;
    int rc = nest_sockaddr_unix(&a, path);
    if (rc < 0) return rc;
    nest_time backoff = NEST_MSEC(1);
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) return nest__neg_errno();
        rc = nest__sock_connect(fd, &a);
        if (rc == 0) {
            rc = nest_socket_stream_init(out, fd);
            if (rc == 0) return 0;
        }
        nest__fd_close(fd);
        /* Linux: a full backlog of a Unix listener gives EAGAIN, and there
         * is nothing to wait on; sleep and retry (the sleep is where a
         * deadline or cancellation ends it). */
        if (rc != -EAGAIN) return rc;
        if ((rc = nest_sleep(backoff)) < 0) return rc;
        backoff = backoff * 2 > NEST_MSEC(100) ? NEST_MSEC(100) : backoff * 2;
    }
}
