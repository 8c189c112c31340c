/*
 * lib/listen.c - listeners: opening TCP and Unix listening sockets with
 * server defaults, accepting as a checkpoint, and the process's open-file
 * limit.
 *
 * Defaults, and why (design/10-io-and-sockets.md):
 *  - backlog: the largest the system allows (/proc/sys/net/core/somaxconn,
 *    read once per process; SOMAXCONN elsewhere), so bursts of connections
 *    queue in the kernel instead of being dropped;
 *  - SO_REUSEADDR on TCP, so a restarted server binds while old connections
 *    sit in TIME_WAIT; IPV6_V6ONLY on IPv6, so "::" and "0.0.0.0" can be
 *    bound side by side on one port;
 *  - the first listener of the process raises the soft RLIMIT_NOFILE to the
 *    hard limit (once, unless the options opt out).
 *
 * Invariants: l->fd is the listening socket while l is open, -1 after
 * close; l->accept_op points at the record of the accept in progress (the
 * same closed-while-blocked scheme as streams, lib/stream.c).
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nest/fd.h"
#include "nest/scope.h"
#include "nest/time.h"
#include "sock.h"

void nest_listen_options_init(nest_listen_options *o) { memset(o, 0, sizeof *o); }

/* ---- process-wide defaults ------------------------------------------------ */

long nest_raise_open_file_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return nest__neg_errno();
    rlim_t want = rl.rlim_max;
#if defined(__APPLE__) && defined(OPEN_MAX)
    if (want > OPEN_MAX) want = OPEN_MAX; /* setrlimit refuses more there */
#endif
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) return nest__neg_errno();
    }
    return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)0x7fffffff ? 0x7fffffffL
                                                                          : (long)rl.rlim_cur;
}

static atomic_int nofile_raised;

static void raise_nofile_once(void) {
    if (!atomic_exchange(&nofile_raised, 1)) (void)nest_raise_open_file_limit();
}

static atomic_int backlog_cached;

static int system_backlog(void) {
    int b = atomic_load(&backlog_cached);
    if (b > 0) return b;
    b = SOMAXCONN;
    FILE *f = fopen("/proc/sys/net/core/somaxconn", "re");
    if (f) {
        int v;
        if (fscanf(f, "%d", &v) == 1 && v > 0) b = v;
        fclose(f);
    }
    atomic_store(&backlog_cached, b);
    return b;
}

/* ---- opening ------------------------------------------------------------- */

static int open_one(const nest_sockaddr *a, const nest_listen_options *o, nest_listener *l) {
    int fam = nest_sockaddr_family(a);
    int fd = socket(fam, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return nest__neg_errno();
    int one = 1, rc = 0;
    if (fam != AF_UNIX && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        rc = nest__neg_errno();
#ifdef SO_REUSEPORT
    if (rc == 0 && o->reuse_port &&
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        rc = nest__neg_errno();
#else
    if (rc == 0 && o->reuse_port) rc = -EOPNOTSUPP;
#endif
    if (rc == 0 && fam == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0)
        rc = nest__neg_errno();
    if (rc == 0 && bind(fd, &a->u.sa, a->len) < 0) rc = nest__neg_errno();
    if (rc == 0 && listen(fd, o->backlog > 0 ? o->backlog : system_backlog()) < 0)
        rc = nest__neg_errno();
    if (rc == 0) {
        memset(&l->addr, 0, sizeof l->addr);
        socklen_t len = sizeof l->addr.u;
        if (getsockname(fd, &l->addr.u.sa, &len) < 0)
            rc = nest__neg_errno();
        else
            l->addr.len = len;
    }
    if (rc < 0) {
        close(fd); /* never waited on: nobody to notify */
        return rc;
    }
    l->fd = fd;
    l->accept_op = NULL;
    return 0;
}

static void set_port(nest_sockaddr *a, int port) {
    if (nest_sockaddr_family(a) == AF_INET) a->u.in4.sin_port = htons((uint16_t)port);
    if (nest_sockaddr_family(a) == AF_INET6) a->u.in6.sin6_port = htons((uint16_t)port);
}

int nest_tcp_listen(const char *host, int port, const nest_listen_options *o, nest_listener *out,
                    size_t max) {
    nest_listen_options defaults;
    if (!o) {
        nest_listen_options_init(&defaults);
        o = &defaults;
    }
    if (max == 0 || port < 0 || port > 65535) return -EINVAL;
    nest_sockaddr addrs[NEST_LISTEN_MAX];
    nest_resolve_fn resolve = o->resolve ? o->resolve : nest_resolve_system;
    int n = resolve(o->resolve_arg, host, port, AF_UNSPEC, NEST_RESOLVE_PASSIVE, addrs,
                    NEST_LISTEN_MAX);
    if (n < 0) return n;
    if (n == 0) return -EADDRNOTAVAIL;
    if ((size_t)n > NEST_LISTEN_MAX) n = NEST_LISTEN_MAX;
    if ((size_t)n > max) n = (int)max;
    if (!o->keep_nofile_limit) raise_nofile_once();

    /* With port 0 and several addresses, the first bind picks the port and
     * the others take the same one; if another socket holds it on one of
     * their addresses, start over with a new port (a few times). */
    for (int round = 0;; round++) {
        int count = 0, chosen = port, rc = 0;
        for (int i = 0; i < n; i++) {
            nest_sockaddr a = addrs[i];
            if (count > 0 && port == 0) set_port(&a, chosen);
            rc = open_one(&a, o, &out[count]);
            /* A wildcard listen skips families this system lacks. */
            if (rc < 0 && !host && (rc == -EAFNOSUPPORT || rc == -EADDRNOTAVAIL)) {
                rc = 0;
                continue;
            }
            if (rc < 0) break;
            if (count == 0) chosen = nest_sockaddr_port(&out[0].addr);
            count++;
        }
        if (rc == 0 && count > 0) return count;
        int retry = rc == -EADDRINUSE && port == 0 && count > 0 && round < 7;
        for (int i = 0; i < count; i++) nest_listener_close(&out[i]);
        if (rc == 0) return -EAFNOSUPPORT; /* every family was skipped */
        if (!retry) return rc;
    }
}

int nest_unix_listen(const char *path, const nest_listen_options *o, nest_listener *out) {
    nest_listen_options defaults;
    if (!o) {
        nest_listen_options_init(&defaults);
        o = &defaults;
    }
    nest_sockaddr a;
    int rc = nest_sockaddr_unix(&a, path);
    if (rc < 0) return rc;
    if (!o->keep_nofile_limit) raise_nofile_once();
    return open_one(&a, o, out);
}

/* ---- accepting and closing ----------------------------------------------- */

/* Errors accept(2) passes on from a connection that failed before we took
 * it (Linux's accept(2) manual lists the TCP ones): skip it, take the next. */
static int accept_transient(int e) {
    switch (e) {
    case ECONNABORTED:
    case EPROTO:
    case EPERM: /* a firewall rule refused this one */
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
#ifdef ENONET
    case ENONET:
#endif
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH: return 1;
    default: return 0;
    }
}

int nest_listener_accept(nest_listener *l, nest_socket_stream *out, nest_sockaddr *peer) {
    if (nest_cancelled()) return -ECANCELED;
    if (l->fd < 0) return NEST_ECLOSED;
    if (l->accept_op) return -EBUSY;
    nest_stream_op op = {0};
    l->accept_op = &op;
    int lfd = l->fd, tcp = nest_sockaddr_family(&l->addr) != AF_UNIX;
    int waited = 0, rc;
    for (;;) {
        nest_sockaddr tmp;
        socklen_t len = sizeof tmp.u;
        int fd = accept4(lfd, &tmp.u.sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            if (peer) {
                *peer = tmp;
                peer->len = len;
            }
            nest__socket_stream_adopt(out, fd, tcp);
            l->accept_op = NULL;
            if (!waited) (void)nest_checkpoint(); /* cannot fail: nothing ran */
            return 0;
        }
        if (errno == EINTR || accept_transient(errno)) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            rc = nest__neg_errno();
            break;
        }
        rc = nest_wait_readable(lfd);
        waited = 1;
        if (op.closed) return rc < 0 ? rc : NEST_ECLOSED; /* l may be gone */
        if (rc < 0) break;
    }
    l->accept_op = NULL;
    return rc;
}

int nest_listener_close(nest_listener *l) {
    if (l->fd < 0) return 0;
    if (l->accept_op) {
        l->accept_op->closed = 1;
        l->accept_op = NULL;
    }
    int fd = l->fd;
    l->fd = -1;
    nest__fd_close(fd);
    return 0;
}

int nest_listener_port(const nest_listener *l) { return nest_sockaddr_port(&l->addr); }
