/*
 * lib/tcp.c - connecting: nest_tcp_connect() with Happy Eyeballs
 * (RFC 8305), and the default connection attempt.
 *
 * The host is resolved first, by default with nest_resolve_system()
 * (lib/addr.c: names are looked up on the thread pool, and a cancellation
 * abandons the lookup).  The design (design/10-io-and-sockets.md has the
 * reasoning) is Trio's open_tcp_stream: the addresses are interleaved by
 * family; the calling task opens a nursery and, as the nursery's body,
 * starts one attempt task after another, waiting between two starts until
 * the latest attempt fails or `delay` passes.  The first attempt that
 * connects records its socket and cancels the nursery, which cancels the
 * other attempts (each closes its own socket) and the body's wait.  Closing
 * the nursery waits for all of them, so when nest_tcp_connect returns no
 * attempt is running and no socket but the winner's is open.  An outer
 * cancellation reaches every attempt the same way, and the winner, if any,
 * is closed too.
 *
 * Invariants:
 *  - st->winner_fd is -1 until the first success; a later success (two
 *    attempts finishing in the same pass) closes its own socket.
 *  - Attempt tasks always return 0, so a failed attempt never cancels its
 *    siblings: its error goes into its slot.
 *  - The body parks in st->lot only while the latest attempt is running;
 *    that attempt unparks it when it fails.
 */
#define _GNU_SOURCE
#include <string.h>
#include <unistd.h>

#include "nest/lowlevel.h"
#include "nest/nursery.h"
#include "nest/scope.h"
#include "nest/time.h"
#include "sock.h"

void nest_connect_options_init(nest_connect_options *o) {
    memset(o, 0, sizeof *o);
    o->family = AF_UNSPEC;
    o->delay = NEST_MSEC(250);
}

int nest_connect_attempt(void *arg, const nest_sockaddr *addr, const nest_sockaddr *local,
                         int *out) {
    (void)arg;
    if (nest_cancelled()) return -ECANCELED;
    int fd = socket(nest_sockaddr_family(addr), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return nest__neg_errno();
    int rc = 0;
    if (local) {
#ifdef IP_BIND_ADDRESS_NO_PORT
        /* With port 0, pick the port at connect time: many outgoing
         * connections from one address then share ports across peers. */
        int one = 1;
        (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
        if (bind(fd, &local->u.sa, local->len) < 0) rc = nest__neg_errno();
    }
    if (rc == 0) rc = nest__sock_connect(fd, addr);
    if (rc < 0) {
        nest__fd_close(fd);
        return rc;
    }
    *out = fd;
    return 0;
}

struct attempt {
    struct he *st;
    const nest_sockaddr *addr;
    int index;
    int done;        /* the attempt has finished (rc is valid) */
    int rc;
};

struct he {
    const nest_connect_options *o;
    nest_nursery n;
    nest_parking_lot lot;   /* the body, waiting for the latest attempt */
    int latest;             /* index of the attempt started last */
    int winner_fd;          /* -1 until an attempt connects */
    struct attempt at[NEST_CONNECT_MAX_ADDRS];
};

static void finish(struct he *st, struct attempt *a, int rc) {
    a->rc = rc;
    a->done = 1;
    if (st->o->report) st->o->report(st->o->report_arg, a->addr, rc);
    if (rc < 0 && a->index == st->latest) nest_unpark_all(&st->lot, 0);
}

static int attempt_task(void *arg) {
    struct attempt *a = arg;
    struct he *st = a->st;
    const nest_connect_options *o = st->o;
    nest_connect_attempt_fn fn = o->attempt ? o->attempt : nest_connect_attempt;
    int fd = -1;
    int rc = fn(o->attempt_arg, a->addr, o->local, &fd);
    if (rc == 0) {
        if (st->winner_fd < 0) {
            st->winner_fd = fd;
            nest_nursery_cancel(&st->n); /* the others, and the body's wait */
        } else {
            nest__fd_close(fd); /* connected in the same pass as the winner */
            rc = -ECANCELED;
        }
    }
    finish(st, a, rc);
    return 0;
}

/* How telling an attempt's error is, for the one error returned when all
 * fail: our own failure to try, then what the peer's side said, then local
 * trouble. */
static int relevance(int rc) {
    switch (-rc) {
    case ENOMEM: return 3;
    case ECONNREFUSED:
    case ETIMEDOUT:
    case ECONNRESET:
    case EHOSTUNREACH:
    case EHOSTDOWN: return 2;
    default: return 1;
    }
}

/* Orders addrs for Happy Eyeballs: the first address's family first, then
 * alternating with the other family, each family in the given order. */
static size_t interleave(const nest_sockaddr *addrs, size_t n, const nest_sockaddr **out) {
    if (n > NEST_CONNECT_MAX_ADDRS) n = NEST_CONNECT_MAX_ADDRS;
    int first = nest_sockaddr_family(&addrs[0]);
    size_t i = 0, j = 0, k = 0; /* next of the first family, of the others */
    for (;;) {
        while (i < n && nest_sockaddr_family(&addrs[i]) != first) i++;
        while (j < n && nest_sockaddr_family(&addrs[j]) == first) j++;
        if (i >= n && j >= n) break;
        if (i < n) out[k++] = &addrs[i++];
        if (j < n) out[k++] = &addrs[j++];
    }
    return k;
}

int nest_tcp_connect_addrs(const nest_sockaddr *addrs, size_t n, const nest_connect_options *o,
                           nest_socket_stream *out) {
    if (nest_cancelled()) return -ECANCELED;
    nest_connect_options defaults;
    if (!o) {
        nest_connect_options_init(&defaults);
        o = &defaults;
    }
    if (n == 0) return -EINVAL;
    const nest_sockaddr *order[NEST_CONNECT_MAX_ADDRS];
    size_t count = interleave(addrs, n, order);

    struct he st;
    st.o = o;
    nest_parking_lot_init(&st.lot);
    nest_parking_lot_set_name(&st.lot, "happy eyeballs", NULL);
    st.latest = -1;
    st.winner_fd = -1;
    int rc = 0;
    nest_nursery_open(&st.n);
    for (size_t i = 0; i < count && st.winner_fd < 0; i++) {
        struct attempt *a = &st.at[i];
        a->st = &st;
        a->addr = order[i];
        a->index = (int)i;
        a->done = 0;
        a->rc = 0;
        st.latest = (int)i;
        int src = nest_spawn(&st.n, attempt_task, a);
        if (src < 0) { /* like an attempt that failed at once */
            finish(&st, a, src);
            continue;
        }
        if (i + 1 == count) break; /* the nursery's close waits for the last */
        nest_scope s;
        nest_move_on_after(&s, o->delay < 0 ? 0 : o->delay);
        nest_waiter w;
        int wrc = a->done ? 0 : nest_park(&st.lot, &w, NULL, NULL);
        wrc = nest_scope_exit(&s, wrc);
        if (wrc < 0) { /* -ECANCELED: a winner, or from outside */
            rc = wrc;
            break;
        }
    }
    rc = nest_nursery_close(&st.n, rc);
    if (rc < 0) { /* cancelled from outside: the connection did not happen */
        if (st.winner_fd >= 0) nest__fd_close(st.winner_fd);
        return rc;
    }
    if (st.winner_fd < 0) {
        int best = 0;
        for (size_t i = 0; i < count; i++)
            if (st.at[i].done && st.at[i].rc < 0 &&
                (best == 0 || relevance(st.at[i].rc) > relevance(best)))
                best = st.at[i].rc;
        return best < 0 ? best : -ECONNREFUSED; /* (every attempt reports) */
    }
    if (!o->attempt) { /* ours: a connected, non-blocking TCP socket */
        nest__socket_stream_adopt(out, st.winner_fd, 1);
        return 0;
    }
    rc = nest_socket_stream_init(out, st.winner_fd);
    if (rc < 0) nest__fd_close(st.winner_fd);
    return rc;
}

int nest_tcp_connect(const char *host, int port, const nest_connect_options *o,
                     nest_socket_stream *out) {
    if (nest_cancelled()) return -ECANCELED;
    nest_connect_options defaults;
    if (!o) {
        nest_connect_options_init(&defaults);
        o = &defaults;
    }
    if (!host || port < 0 || port > 65535) return -EINVAL;
    nest_sockaddr addrs[NEST_CONNECT_MAX_ADDRS];
    nest_resolve_fn resolve = o->resolve ? o->resolve : nest_resolve_system;
    int n = resolve(o->resolve_arg, host, port, o->family, 0, addrs, NEST_CONNECT_MAX_ADDRS);
    if (n < 0) return n;
    if (n == 0) return -EADDRNOTAVAIL;
    if (n > NEST_CONNECT_MAX_ADDRS) n = NEST_CONNECT_MAX_ADDRS;
    return nest_tcp_connect_addrs(addrs, (size_t)n, o, out);
}
