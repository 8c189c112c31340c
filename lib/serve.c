/*
 * lib/serve.c - serving: one accept loop per listener, one task per
 * connection, all in one nursery (Trio's serve_listeners).
 *
 * Owns: the accept loops, the per-connection tasks and the back-off when
 * accept runs out of file descriptors.
 *
 * Invariants:
 *  - Each listener has exactly one accept loop: the nursery body runs the
 *    first one, acceptor tasks the others.  Connection tasks go into the
 *    same nursery (or o->handler_nursery), so cancelling the serve call
 *    cancels every connection, and it returns only once they are gone.
 *  - A connection's state (struct conn) is allocated before accept and
 *    handed to its task, which owns it from then on: it closes the stream
 *    and frees the struct when the handler returns.  It copies what it needs
 *    from the server, because with o->handler_nursery the task may outlive
 *    the serve call.
 *  - Out of descriptors (or kernel buffers) at accept: the loop sleeps, 100
 *    ms doubling up to backoff_max, and tries again; the pending connection
 *    stays in the kernel's queue.  It never spins (the sleep is a real
 *    wait) and never gives up.  One line goes to stderr per serve call.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "nest/nursery.h"
#include "nest/scope.h"
#include "nest/time.h"
#include "sock.h"

void nest_serve_options_init(nest_serve_options *o) { memset(o, 0, sizeof *o); }

struct server {
    nest_handler_fn handler;
    void *arg;
    int (*on_error)(void *arg, int rc);
    nest_nursery *conns;         /* where connection tasks go */
    nest_spawn_options spawn;
    nest_time backoff_max;
    int logged;                  /* the out-of-fds line was printed */
};

struct conn {
    nest_socket_stream stream;   /* first: accepted into directly */
    nest_handler_fn handler;
    void *arg;
    int (*on_error)(void *arg, int rc);
};

struct acceptor {
    struct server *srv;
    nest_listener *l;
};

static int connection(void *arg) {
    struct conn *c = arg;
    nest_handler_fn handler = c->handler;
    void *harg = c->arg;
    int (*on_error)(void *, int) = c->on_error;
    int rc = handler(&c->stream.stream, harg);
    nest_stream_close(&c->stream.stream);
    nest__free(c, sizeof *c);
    if (rc < 0 && rc != -ECANCELED && on_error) rc = on_error(harg, rc);
    return rc;
}

static void log_capacity(struct server *srv, nest_listener *l, int rc) {
    if (srv->logged) return;
    srv->logged = 1;
    char where[128];
    fprintf(stderr,
            "nest: accept on %s failed: %s; not accepting for 100 ms, doubling up to %lld ms, "
            "while this lasts (raise the limit with ulimit -n); reported once per server\n",
            nest_sockaddr_format(&l->addr, where, sizeof where), nest_strerror(rc),
            (long long)(srv->backoff_max / NEST_MSEC(1)));
}

static int accept_loop(struct server *srv, nest_listener *l) {
    struct conn *c = NULL;
    nest_time backoff = 0;
    int rc;
    for (;;) {
        if (!c && !(c = nest__alloc(sizeof *c))) {
            rc = -ENOMEM;
            break;
        }
        rc = nest_listener_accept(l, &c->stream, NULL);
        if (rc == 0) {
            backoff = 0;
            c->handler = srv->handler;
            c->arg = srv->arg;
            c->on_error = srv->on_error;
            rc = nest_spawn_opts(srv->conns, connection, c, &srv->spawn);
            if (rc < 0) { /* -ENOMEM: refuse this connection, fail the server */
                nest_stream_close(&c->stream.stream);
                break;
            }
            c = NULL; /* the task owns it */
            continue;
        }
        if (!nest__accept_capacity_error(rc)) break;
        log_capacity(srv, l, rc);
        backoff = backoff ? backoff * 2 : NEST_MSEC(100);
        if (backoff > srv->backoff_max) backoff = srv->backoff_max;
        if ((rc = nest_sleep(backoff)) < 0) break;
    }
    if (c) nest__free(c, sizeof *c);
    return rc;
}

static int acceptor(void *arg) {
    struct acceptor *a = arg;
    return accept_loop(a->srv, a->l);
}

static int serve(nest_listener *ls, size_t n, nest_handler_fn handler, void *arg,
                 const nest_serve_options *o) {
    if (nest_cancelled()) return -ECANCELED;
    if (n == 0 || !handler) return -EINVAL;
    struct server srv;
    memset(&srv, 0, sizeof srv);
    srv.handler = handler;
    srv.arg = arg;
    srv.on_error = o->on_error;
    srv.spawn.name = "connection";
    srv.spawn.stack_size = o->stack_size;
    srv.backoff_max = o->backoff_max > 0 ? o->backoff_max : NEST_SEC(1);
    struct acceptor *acc = NULL;
    if (n > 1 && !(acc = nest__alloc((n - 1) * sizeof *acc))) return -ENOMEM;

    nest_nursery nn;
    nest_nursery_open(&nn);
    srv.conns = o->handler_nursery ? o->handler_nursery : &nn;
    int rc = 0;
    for (size_t i = 1; i < n && rc == 0; i++) {
        acc[i - 1].srv = &srv;
        acc[i - 1].l = &ls[i];
        nest_spawn_options so = {"acceptor", 0, NULL};
        rc = nest_spawn_opts(&nn, acceptor, &acc[i - 1], &so);
    }
    if (rc == 0) {
        nest_listeners info = {ls, n};
        nest_started(&info); /* valid while we serve: this frame outlives it */
        rc = accept_loop(&srv, &ls[0]);
    }
    rc = nest_nursery_close(&nn, rc);
    if (acc) nest__free(acc, (n - 1) * sizeof *acc);
    return rc;
}

int nest_serve_listeners(nest_listener *ls, size_t n, nest_handler_fn handler, void *arg,
                         const nest_serve_options *o) {
    nest_serve_options defaults;
    if (!o) {
        nest_serve_options_init(&defaults);
        o = &defaults;
    }
    int rc = serve(ls, n, handler, arg, o);
    for (size_t i = 0; i < n; i++) nest_listener_close(&ls[i]);
    return rc;
}

int nest_serve_tcp(int port, const char *host, nest_handler_fn handler, void *arg,
                   const nest_serve_options *o) {
    if (nest_cancelled()) return -ECANCELED;
    nest_serve_options defaults;
    if (!o) {
        nest_serve_options_init(&defaults);
        o = &defaults;
    }
    nest_listener ls[NEST_LISTEN_MAX];
    int n = nest_tcp_listen(host, port, &o->listen, ls, NEST_LISTEN_MAX);
    if (n < 0) return n;
    return nest_serve_listeners(ls, (size_t)n, handler, arg, o);
}

int nest_serve_unix(const char *path, nest_handler_fn handler, void *arg,
                    const nest_serve_options *o) {
    if (nest_cancelled()) return -ECANCELED;
    nest_serve_options defaults;
    if (!o) {
        nest_serve_options_init(&defaults);
        o = &defaults;
    }
    nest_listener l;
    int rc = nest_unix_listen(path, &o->listen, &l);
    if (rc < 0) return rc;
    return nest_serve_listeners(&l, 1, handler, arg, o);
}

int nest_serve_tcp_task(void *server) {
    const nest_tcp_server *s = server;
    return nest_serve_tcp(s->port, s->host, s->handler, s->arg, s->options);
}
