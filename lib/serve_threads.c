/*
 * lib/serve_threads.c - serving one TCP port from several threads, each
 * with its own runtime, through SO_REUSEPORT (nest_serve_tcp_threads).
 *
 * Owns: the group of worker threads, the two pipes through which the
 * calling task and the workers talk, and the hand-over of the first
 * listeners to worker 0.
 *
 * How it works.  The calling task (the "manager") binds the first
 * listeners itself, with SO_REUSEPORT, so that port 0 becomes a real port
 * and every later bind can share it.  Worker 0 takes those listeners over;
 * workers 1..N-1 bind their own on exactly the addresses the first bind
 * got.  Each worker runs nest_run() with a root task that opens one
 * nursery holding a stopper task (it waits for the stop pipe, then cancels
 * the nursery) and, as its body, the optional thread_init, the bind, and
 * nest_start() of nest_serve_listeners() (the normal accept loops and
 * per-connection nursery).  So stopping cancels whatever the worker is
 * doing, thread_init included; a failing server cancels the stopper.
 *
 * Invariants:
 *  - Threads talk through two non-blocking pipes and one mutex, never
 *    through tokens: the manager stops every worker with one write(2) to
 *    the stop pipe (never blocks, needs no knowledge of which scopes are
 *    still entered, and reaches a worker whose runtime has not started yet,
 *    since the pipe stays readable), and a worker reports "accepting" and
 *    "finished" by updating the group under `mu` and then writing one byte
 *    to the note pipe, which the manager waits on with nest_wait_readable:
 *    so the manager's runtime keeps running its other tasks, and a state
 *    change is always followed by a byte that wakes it.
 *  - The group (struct group, one allocation) belongs to the manager: it is
 *    allocated and freed on the manager's thread, and freed only after
 *    every worker thread has been joined.  Workers only read its
 *    configuration (written before pthread_create) and update the fields
 *    marked "mu".
 *  - A worker writes its "finished" byte as the last thing it does, so the
 *    pthread_join that follows it returns at once: the manager's thread
 *    never blocks on a worker that is still serving.
 *  - Every listener is closed by the worker that owns it: nest_serve_listeners
 *    closes what it was given, and the worker closes whatever it never got
 *    to serve after nest_run() returns.  Worker 0 owns the manager's
 *    listeners from pthread_create on; before that the manager does.
 *  - The calling task returns only after every thread it created has been
 *    joined: nothing it started outlives it (structured concurrency across
 *    threads).  Once cancelled, it waits in a shielded scope.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "alloc.h"
#include "nest/fd.h"
#include "nest/nursery.h"
#include "nest/runtime.h"
#include "nest/scope.h"
#include "sock.h"

void nest_serve_threads_options_init(nest_serve_threads_options *o) { memset(o, 0, sizeof *o); }

struct group;

struct worker {
    struct group *g;
    int index;
    pthread_t thread;
    nest_listener ls[NEST_LISTEN_MAX]; /* the listeners this worker serves */
    size_t nls;
    nest_nursery *nursery;             /* the worker's: stopping cancels it */
    void *harg;                        /* the handler's arg in this thread */
    int inited;                        /* thread_init succeeded (or none) */
};

struct group {
    pthread_mutex_t mu;
    int started;  /* mu: workers accepting */
    int finished; /* mu: workers whose nest_run has returned */
    int failure;  /* mu: the first worker failure (not -ECANCELED), or 0 */
    int stop_r, stop_w; /* readable once the workers must stop */
    int note_r, note_w; /* a byte after each change of the mu fields */
    /* Configuration, written before the threads start, then read-only. */
    nest_handler_fn handler;
    void *arg;
    nest_serve_options serve;
    nest_listen_options listen;  /* for workers 1..N-1: the exact addresses */
    nest_run_options run;
    int (*thread_init)(void *arg, int index, void **handler_arg);
    void (*thread_fini)(void *arg, int index, void *handler_arg);
    nest_sockaddr addrs[NEST_LISTEN_MAX]; /* what the first bind got */
    size_t naddrs;
    nest_listener report[NEST_LISTEN_MAX]; /* copies for nest_started: fd -1 */
    nest_listeners info;
    int nthreads;
    struct worker w[]; /* nthreads */
};

static size_t group_size(int nthreads) {
    return sizeof(struct group) + (size_t)nthreads * sizeof(struct worker);
}

/* One byte to a non-blocking pipe.  A full pipe already holds a byte, which
 * is all a reader needs to wake, so a failed write loses nothing. */
static void poke(int fd) {
    char b = 1;
    ssize_t r;
    do r = write(fd, &b, 1);
    while (r < 0 && errno == EINTR);
}

/* ---- a worker thread ---------------------------------------------------- */

/* Workers 1..N-1 listen through this "resolver": it returns the addresses
 * the manager's first bind got, port included, so that every worker binds
 * exactly the same ones. */
static int same_addresses(void *arg, const char *host, int port, int family, int flags,
                          nest_sockaddr *out, size_t max) {
    (void)host, (void)port, (void)family, (void)flags;
    const struct group *g = arg;
    for (size_t i = 0; i < g->naddrs && i < max; i++) out[i] = g->addrs[i];
    return (int)g->naddrs;
}

static int open_listeners(struct worker *w) {
    const struct group *g = w->g;
    int port = nest_sockaddr_port(&g->addrs[0]);
    /* A non-NULL host makes every bind count: no family is skipped. */
    int n = nest_tcp_listen("", port, &g->listen, w->ls, NEST_LISTEN_MAX);
    if (n < 0) return n;
    w->nls = (size_t)n;
    return (size_t)n == g->naddrs ? 0 : -EADDRNOTAVAIL;
}

static int serve_task(void *arg) {
    struct worker *w = arg;
    size_t n = w->nls;
    w->nls = 0; /* nest_serve_listeners owns them now and closes them */
    return nest_serve_listeners(w->ls, n, w->g->handler, w->harg, &w->g->serve);
}

static void report_started(struct group *g) {
    pthread_mutex_lock(&g->mu);
    g->started++;
    pthread_mutex_unlock(&g->mu);
    poke(g->note_w);
}

/* A child of the worker's nursery: when the stop pipe becomes readable, it
 * cancels the nursery (thread_init, the server and every connection). */
static int stopper(void *arg) {
    struct worker *w = arg;
    int rc = nest_wait_readable(w->g->stop_r);
    if (rc == 0) nest_nursery_cancel(w->nursery);
    return rc == -ECANCELED ? 0 : rc; /* cancelled: the worker is failing */
}

/* The body of the worker's nursery: thread_init, listen, start serving. */
static int work(struct worker *w) {
    struct group *g = w->g;
    void *harg = g->arg;
    if (g->thread_init) {
        int rc = g->thread_init(g->arg, w->index, &harg);
        if (rc < 0) return rc;
    }
    w->harg = harg;
    w->inited = 1;
    int rc = w->index > 0 ? open_listeners(w) : 0;
    if (rc == 0) rc = nest_start(w->nursery, serve_task, w, NULL);
    if (rc == 0) report_started(g);
    return rc; /* the server runs on in the nursery */
}

static int worker_root(void *arg) {
    struct worker *w = arg;
    struct group *g = w->g;
    nest_nursery n;
    nest_nursery_open(&n);
    w->nursery = &n;
    int rc = nest_spawn(&n, stopper, w);
    if (rc == 0) rc = work(w);
    /* Returns the server's failure, or 0 (or -ECANCELED) once stopped. */
    rc = nest_nursery_close(&n, rc);
    if (w->inited && g->thread_fini) g->thread_fini(g->arg, w->index, w->harg);
    return rc;
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct group *g = w->g;
    int rc = nest_run_opts(worker_root, w, &g->run);
    /* Listeners never handed to a server (a failed thread_init, or a
     * runtime that could not start) are closed here, outside any runtime,
     * where nobody can be waiting on them. */
    for (size_t i = 0; i < w->nls; i++) nest_listener_close(&w->ls[i]);
    pthread_mutex_lock(&g->mu);
    g->finished++;
    if (rc < 0 && rc != -ECANCELED && !g->failure) g->failure = rc;
    pthread_mutex_unlock(&g->mu);
    poke(g->note_w); /* the last touch of g: the manager may free it now */
    return NULL;
}

/* ---- the manager -------------------------------------------------------- */

static int make_pipe(int *r, int *w) {
    int p[2];
    if (pipe(p) < 0) return nest__neg_errno();
    for (int i = 0; i < 2; i++) {
        if (fcntl(p[i], F_SETFL, O_NONBLOCK) < 0 || fcntl(p[i], F_SETFD, FD_CLOEXEC) < 0) {
            int rc = nest__neg_errno();
            close(p[0]);
            close(p[1]);
            return rc;
        }
    }
    *r = p[0];
    *w = p[1];
    return 0;
}

static void drain(int fd) {
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0) {
    }
}

/* Waits until every created worker has finished, stopping them all as soon
 * as one fails or finishes, or the caller is cancelled; announces the
 * listeners with nest_started() once all are accepting.  rc: an error that
 * already requires a stop (a thread could not be created), or 0. */
static int supervise(struct group *g, int created, int rc) {
    int stopping = 0, announced = 0, shielded = 0;
    nest_scope shield;
    for (;;) {
        pthread_mutex_lock(&g->mu);
        int started = g->started, finished = g->finished, failure = g->failure;
        pthread_mutex_unlock(&g->mu);
        if (failure && rc == 0) rc = failure;
        if (!stopping && (rc < 0 || finished > 0)) {
            poke(g->stop_w);
            stopping = 1;
        }
        if (finished == created) break;
        if (!stopping && !announced && started == g->nthreads) {
            nest_started(&g->info);
            announced = 1;
        }
        int wr = nest_wait_readable(g->note_r);
        if (wr == -ECANCELED && !shielded) {
            /* Cancelled: stop everything, then wait for it, shielded. */
            if (rc == 0) rc = -ECANCELED;
            nest_scope_enter(&shield, NEST_FOREVER);
            nest_scope_set_shield(&shield, 1);
            shielded = 1;
        } else if (wr < 0 && wr != -ECANCELED) {
            /* Cannot wait in the runtime (-ENOMEM from the watcher table):
             * stop the workers and let the joins wait for them. */
            if (rc == 0) rc = wr;
            poke(g->stop_w);
            break;
        }
        drain(g->note_r);
    }
    if (shielded) (void)nest_scope_exit(&shield, 0);
    return rc;
}

static int start_and_supervise(struct group *g) {
    int created = 0, rc = 0;
    for (; created < g->nthreads; created++) {
        int err = pthread_create(&g->w[created].thread, NULL, worker_main, &g->w[created]);
        if (err) {
            rc = -err;
            break;
        }
    }
    if (created == 0) return rc; /* the manager still owns the first listeners */
    rc = supervise(g, created, rc);
    for (int i = 0; i < created; i++) pthread_join(g->w[i].thread, NULL);
    return rc;
}

static void group_init(struct group *g, int nthreads, nest_handler_fn handler, void *arg,
                       const nest_serve_threads_options *o) {
    memset(g, 0, group_size(nthreads));
    g->stop_r = g->stop_w = g->note_r = g->note_w = -1;
    g->nthreads = nthreads;
    g->handler = handler;
    g->arg = arg;
    g->serve = o->serve;
    g->thread_init = o->thread_init;
    g->thread_fini = o->thread_fini;
    if (o->run)
        g->run = *o->run;
    else
        nest_run_options_init(&g->run);
    g->run.no_ctrl_c = 1; /* Ctrl-C belongs to the caller's runtime */
    g->listen = o->serve.listen;
    g->listen.reuse_port = 1;
    g->listen.keep_nofile_limit = 1; /* the manager's bind did it (or opted out) */
    g->listen.resolve = same_addresses;
    g->listen.resolve_arg = g;
    for (int i = 0; i < nthreads; i++) {
        g->w[i].g = g;
        g->w[i].index = i;
    }
}

/* Binds the first listeners (into worker 0's slots) and records their
 * addresses for the other workers and for nest_started. */
static int first_bind(struct group *g, int port, const char *host) {
    nest_listen_options lo = g->serve.listen;
    lo.reuse_port = 1;
    int n = nest_tcp_listen(host, port, &lo, g->w[0].ls, NEST_LISTEN_MAX);
    if (n < 0) return n;
    g->w[0].nls = g->naddrs = (size_t)n;
    for (int i = 0; i < n; i++) {
        g->addrs[i] = g->w[0].ls[i].addr;
        g->report[i] = g->w[0].ls[i];
        g->report[i].fd = -1; /* a copy for its address: the workers serve it */
    }
    g->info.listener = g->report;
    g->info.count = (size_t)n;
    return 0;
}

int nest_serve_tcp_threads(int nthreads, int port, const char *host, nest_handler_fn handler,
                           void *arg, const nest_serve_threads_options *o) {
    if (nest_cancelled()) return -ECANCELED;
    nest_serve_threads_options defaults;
    if (!o) {
        nest_serve_threads_options_init(&defaults);
        o = &defaults;
    }
    if (nthreads < 1 || !handler || o->serve.handler_nursery || (o->run && o->run->loop))
        return -EINVAL;
#ifndef SO_REUSEPORT
    return -EOPNOTSUPP;
#else
    struct group *g = nest__alloc(group_size(nthreads));
    if (!g) return -ENOMEM;
    group_init(g, nthreads, handler, arg, o);
    int rc = pthread_mutex_init(&g->mu, NULL);
    if (rc) {
        nest__free(g, group_size(nthreads));
        return -rc;
    }
    rc = first_bind(g, port, host);
    if (rc == 0) rc = make_pipe(&g->stop_r, &g->stop_w);
    if (rc == 0) rc = make_pipe(&g->note_r, &g->note_w);
    if (rc == 0) rc = start_and_supervise(g);
    /* Only if no thread took them over (else worker 0 closed them). */
    for (size_t i = 0; i < g->w[0].nls; i++) nest_listener_close(&g->w[0].ls[i]);
    nest__fd_close(g->note_r); /* the manager waited on it: notify first */
    close(g->note_w);
    close(g->stop_r);
    close(g->stop_w);
    pthread_mutex_destroy(&g->mu);
    nest__free(g, group_size(nthreads));
    return rc;
#endif
}
