/*
 * lib/udp.c - UDP sockets: bind, send_to and receive_from as checkpoints.
 *
 * Same shape as the socket stream (lib/socket.c): try the system call,
 * wait for readiness on EAGAIN, one task per direction (-EBUSY otherwise),
 * and operation records so that closing while a task waits wakes it with
 * NEST_ECLOSED and the woken task never touches the socket struct again.
 * A datagram is consumed only by a recvfrom that returned it, so a
 * cancelled receive consumed nothing.
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nest/fd.h"
#include "nest/scope.h"
#include "nest/time.h"
#include "sock.h"

int nest_udp_open(nest_udp_socket *u, const nest_sockaddr *local) {
    int fd = socket(nest_sockaddr_family(local), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return nest__neg_errno();
    if (nest_sockaddr_family(local) == AF_INET6) {
        int one = 1; /* "::" means IPv6 only, as for listeners */
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (bind(fd, &local->u.sa, local->len) < 0) {
        int rc = nest__neg_errno();
        close(fd);
        return rc;
    }
    u->fd = fd;
    u->ops[0] = u->ops[1] = NULL;
    return 0;
}

int nest_udp_local_address(const nest_udp_socket *u, nest_sockaddr *out) {
    if (u->fd < 0) return NEST_ECLOSED;
    memset(out, 0, sizeof *out);
    socklen_t len = sizeof out->u;
    if (getsockname(u->fd, &out->u.sa, &len) < 0) return nest__neg_errno();
    out->len = len;
    return 0;
}

/* One operation in direction dir (0 receive, 1 send); see the file comment. */
static ssize_t udp_op(nest_udp_socket *u, int dir, void *buf, size_t len,
                      const nest_sockaddr *to, nest_sockaddr *from) {
    if (nest_cancelled()) return -ECANCELED;
    if (u->fd < 0) return NEST_ECLOSED;
    if (u->ops[dir]) return -EBUSY;
    nest_stream_op op = {0};
    u->ops[dir] = &op;
    int fd = u->fd, waited = 0;
    ssize_t rc;
    for (;;) {
        if (dir == 1) {
            rc = sendto(fd, buf, len, MSG_NOSIGNAL, to ? &to->u.sa : NULL, to ? to->len : 0);
        } else {
            nest_sockaddr tmp;
            socklen_t alen = sizeof tmp.u;
            rc = recvfrom(fd, buf, len, 0, &tmp.u.sa, &alen);
            if (rc >= 0 && from) {
                *from = tmp;
                from->len = alen;
            }
        }
        if (rc >= 0) {
            u->ops[dir] = NULL;
            if (!waited) (void)nest_checkpoint(); /* cannot fail: nothing ran */
            return rc;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            rc = nest__neg_errno();
            break;
        }
        int wrc = dir ? nest_wait_writable(fd) : nest_wait_readable(fd);
        waited = 1;
        if (op.closed) return wrc < 0 ? wrc : NEST_ECLOSED; /* u may be gone */
        if (wrc < 0) {
            rc = wrc;
            break;
        }
    }
    u->ops[dir] = NULL;
    return rc;
}

ssize_t nest_udp_send_to(nest_udp_socket *u, const void *buf, size_t len,
                         const nest_sockaddr *to) {
    return udp_op(u, 1, (void *)buf, len, to, NULL);
}

ssize_t nest_udp_receive_from(nest_udp_socket *u, void *buf, size_t max, nest_sockaddr *from) {
    return udp_op(u, 0, buf, max, NULL, from);
}

int nest_udp_close(nest_udp_socket *u) {
    if (u->fd < 0) return 0;
    for (int d = 0; d < 2; d++)
        if (u->ops[d]) {
            u->ops[d]->closed = 1;
            u->ops[d] = NULL;
        }
    int fd = u->fd;
    u->fd = -1;
    nest__fd_close(fd);
    return 0;
}
