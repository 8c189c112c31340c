/*
 * lib/evloop.c - the only file that includes ev.h.
 *
 * Owns the libev loop of a runtime, the table of fd watchers, and the single
 * timer that bounds a blocking poll at the next deadline (the deadlines
 * themselves live in nest's own heap, lib/deadline.c, which is what lets the
 * mock clock work).  libev callbacks here never run user code: they only
 * move a waiting task to the run queue (nest__wake).
 *
 * The fd table is an array of pointers to per-fd entries that are allocated
 * once and never moved, because libev keeps pointers to active watchers.  An
 * entry holds one ev_io and one waiting task per direction.  A watcher is
 * active while a task waits on it (rt->nio counts those tasks, and the
 * deadlock check trusts rt->nio), and otherwise only if it is "parked": a
 * socket or pipe stream's watcher kept between waits, unreferenced so that it keeps
 * no ev_run alive (see nest__loop_watch).  Any other idle fd costs libev
 * nothing.
 *
 * A runtime that takes a dump signal (lib/inspect.c) enables an ev_async
 * watcher, so that the signal handler can end a blocking poll from any
 * thread (nest__loop_wakeup); it does not keep the loop alive (ev_unref)
 * and wakes no task.  Worker threads (lib/thread.c) use the same watcher;
 * while a job is outstanding it is referenced (nest__loop_wakeup_hold) so
 * that a blocking poll waits for the job's completion.
 *
 * In guest mode (nest/guest.h, design/13) the loop is the host's and the
 * host runs ev_run: prepare, check and idle watchers below drive the
 * runtime instead of nest__loop_poll, and fd callbacks set nest__rt_cur
 * around the wake, since they run between the guest's slices.
 *
 * libev's own allocations (the loop, its internal fd arrays) go through
 * libev's allocator, not nest's hook: libev aborts on allocation failure and
 * cannot report it, so routing them through the hook would turn an injected
 * failure into an abort instead of -ENOMEM.
 */
#include <ev.h>
#include <string.h>

#include "core.h"

struct fd_entry {
    ev_io io[2];            /* [0] readable, [1] writable */
    nest_task *waiter[2];
    /* The watcher was set up by a "stable" wait (see nest__loop_watch) and
     * the fd has not been reported closing since: it still names the same
     * open file, so the watcher can be reused as it is. */
    unsigned char stable[2];
    /* A stable watcher left active with no waiter (and unreferenced, so it
     * keeps no ev_run alive) after its wait ended; see nest__loop_watch. */
    unsigned char parked[2];
};

struct nest__loop {
    struct ev_loop *ev;
    int own;                /* created here: destroy on close */
    ev_timer timer;         /* bounds a blocking poll */
    struct fd_entry **fds;  /* indexed by fd; NULL where never used */
    int nfds;
    struct nest__rt *rt;
    ev_async wake;          /* nest__loop_wakeup(), once enabled */
    int wake_on;
    int wake_held;          /* referenced: a thread job will send it */
    /* Guest mode (lib/guest.c): the host runs ev_run; these drive nest. */
    int guest;
    ev_prepare prep;        /* before the host blocks: arm timer or idle */
    ev_check check;         /* after every poll: run a slice of tasks */
    ev_idle idle;           /* active while tasks are runnable: no blocking */
    uint64_t nstarts;       /* ev_io_start calls (nest__loop_watch_starts) */
};

/* Stops a watcher, parked or not (libev wants an unreferenced watcher
 * referenced again before it is stopped). */
static void stop_watcher(struct nest__loop *lp, struct fd_entry *e, int dir) {
    if (e->parked[dir]) {
        e->parked[dir] = 0;
        ev_ref(lp->ev);
    }
    ev_io_stop(lp->ev, &e->io[dir]);
}

/* The wait on a watcher ended: a stable one stays active (parked), any
 * other is stopped. */
static void end_wait(struct nest__loop *lp, struct fd_entry *e, int dir) {
    e->waiter[dir] = NULL;
    lp->rt->nio--;
    if (!ev_is_active(&e->io[dir])) { /* libev stopped it: EV_ERROR (fd_kill) */
        e->stable[dir] = 0;
        return;
    }
    if (!e->stable[dir]) {
        ev_io_stop(lp->ev, &e->io[dir]);
        return;
    }
    e->parked[dir] = 1;
    ev_unref(lp->ev);
}

static void io_cb(struct ev_loop *ev, ev_io *w, int revents) {
    (void)ev;
    (void)revents;
    struct nest__loop *lp = w->data;
    int dir = (w->events & EV_WRITE) ? 1 : 0;
    struct fd_entry *e = lp->fds[w->fd];
    nest_task *t = e->waiter[dir];
    if (!t && !ev_is_active(w)) { /* libev killed a parked watcher (EV_ERROR) */
        stop_watcher(lp, e, dir);
        return;
    }
    if (!t) { /* a parked watcher's fd is ready while nobody waits on it */
        /* Typically its task was woken by the last poll and has not run
         * yet.  While tasks are runnable polls do not block, so leave the
         * watcher be; once nothing is runnable, stop it, or the fd would
         * end every blocking poll at once until someone reads it. */
        if (!lp->rt->runq_head) stop_watcher(lp, e, dir);
        return;
    }
    end_wait(lp, e, dir);
    if (lp->guest) { /* called by the host's ev_run: between slices */
        struct nest__rt *prev = nest__rt_cur;
        nest__rt_cur = lp->rt;
        nest__wake(lp->rt, t, 0);
        nest__rt_cur = prev;
        return;
    }
    nest__wake(lp->rt, t, 0);
}

static void timer_cb(struct ev_loop *ev, ev_timer *w, int revents) {
    (void)ev;
    (void)w;
    (void)revents; /* its only job is to end ev_run */
}

static void wake_cb(struct ev_loop *ev, ev_async *w, int revents) {
    (void)ev;
    (void)w;
    (void)revents; /* likewise */
}

int nest__loop_wakeup_enable(struct nest__rt *rt) {
    struct nest__loop *lp = rt->loop;
    if (lp->wake_on) return 0;
    ev_async_init(&lp->wake, wake_cb);
    ev_async_start(lp->ev, &lp->wake);
    ev_unref(lp->ev);
    lp->wake_on = 1;
    return 0;
}

void nest__loop_wakeup(struct nest__rt *rt) {
    struct nest__loop *lp = rt->loop;
    if (lp && lp->wake_on) ev_async_send(lp->ev, &lp->wake);
}

void nest__loop_wakeup_hold(struct nest__rt *rt, int on) {
    struct nest__loop *lp = rt->loop;
    if (!lp->wake_on || lp->wake_held == on) return;
    lp->wake_held = on;
    if (on)
        ev_ref(lp->ev);
    else
        ev_unref(lp->ev);
}

int nest__loop_open(struct nest__rt *rt, void *host_loop) {
    struct nest__loop *lp = nest__alloc(sizeof *lp);
    if (!lp) return -ENOMEM;
    memset(lp, 0, sizeof *lp);
    lp->rt = rt;
    if (host_loop) {
        lp->ev = host_loop;
    } else {
        lp->ev = ev_loop_new(EVFLAG_AUTO);
        lp->own = 1;
        if (!lp->ev) {
            nest__free(lp, sizeof *lp);
            return -ENOMEM;
        }
    }
    ev_timer_init(&lp->timer, timer_cb, 0., 0.);
    lp->timer.data = lp;
    rt->loop = lp;
    return 0;
}

void nest__loop_close(struct nest__rt *rt) {
    struct nest__loop *lp = rt->loop;
    if (!lp) return;
    if (lp->wake_on) {
        if (!lp->wake_held) ev_ref(lp->ev);
        ev_async_stop(lp->ev, &lp->wake);
    }
    if (lp->guest) {
        ev_ref(lp->ev); /* undo the ev_unref of guest_start, as libev asks */
        ev_prepare_stop(lp->ev, &lp->prep);
        ev_ref(lp->ev);
        ev_check_stop(lp->ev, &lp->check);
        ev_idle_stop(lp->ev, &lp->idle);
        ev_timer_stop(lp->ev, &lp->timer);
    }
    for (int fd = 0; fd < lp->nfds; fd++) {
        struct fd_entry *e = lp->fds[fd];
        if (!e) continue;
        for (int d = 0; d < 2; d++)
            if (ev_is_active(&e->io[d]) || e->parked[d]) stop_watcher(lp, e, d);
        nest__free(e, sizeof *e);
    }
    nest__free(lp->fds, (size_t)lp->nfds * sizeof *lp->fds);
    if (lp->own) ev_loop_destroy(lp->ev);
    nest__free(lp, sizeof *lp);
    rt->loop = NULL;
}

void nest__loop_poll(struct nest__rt *rt, nest_time timeout) {
    struct nest__loop *lp = rt->loop;
    if (timeout == 0) {
        ev_run(lp->ev, EVRUN_NOWAIT);
        return;
    }
    if (timeout > 0) {
        ev_now_update(lp->ev);
        ev_timer_set(&lp->timer, (double)timeout / 1e9, 0.);
        ev_timer_start(lp->ev, &lp->timer);
    }
    ev_run(lp->ev, EVRUN_ONCE);
    if (timeout > 0) ev_timer_stop(lp->ev, &lp->timer);
}

static struct fd_entry *entry(struct nest__loop *lp, int fd) {
    if (fd >= lp->nfds) {
        int n = lp->nfds ? lp->nfds : 64;
        while (n <= fd) n *= 2;
        struct fd_entry **a = nest__realloc(lp->fds, (size_t)lp->nfds * sizeof *a,
                                            (size_t)n * sizeof *a);
        if (!a) return NULL;
        memset(a + lp->nfds, 0, (size_t)(n - lp->nfds) * sizeof *a);
        lp->fds = a;
        lp->nfds = n;
    }
    if (!lp->fds[fd]) {
        struct fd_entry *e = nest__alloc(sizeof *e);
        if (!e) return NULL;
        memset(e, 0, sizeof *e);
        lp->fds[fd] = e;
    }
    return lp->fds[fd];
}

/* Starting and stopping a libev watcher around every wait costs system
 * calls: ev_io_set marks the fd as possibly naming a new file
 * (EV__IOFDSET), and a watcher stopped and restarted across a poll changes
 * the fd's interest twice; either way the next poll calls epoll_ctl.  That
 * is the only safe choice for an fd nest knows nothing about: the caller
 * may have closed it and opened another file under the same number since
 * the last wait, and libev would otherwise skip the registration and never
 * report it.
 *
 * A stable wait comes from nest's own socket and pipe streams, whose fds
 * are only ever closed after nest__loop_closing (lib/sock.h's rule; a
 * stream closed outside a task, e.g. by a guest's host code, leaves its
 * watcher parked on a closed fd: harmless, since the next stream on that
 * number sets its watcher up afresh, below).  Their watcher is
 * set up once and, when a wait ends, left active with no waiter ("parked",
 * unreferenced so that it keeps no ev_run alive); the next wait only puts
 * the task back.  A server that reads requests one after another on a
 * connection thus makes no epoll_ctl at all.  If a parked fd is reported
 * ready while nobody waits (level-triggered: data the task has not read
 * yet) when nothing is runnable, io_cb stops the watcher, and the next wait
 * starts it again.
 *
 * A stream's first wait in each direction is NEST__WATCH_FRESH: it sets
 * the watcher up afresh even if one is parked under the same number, in
 * case the fd's previous owner was closed where nest could not be told
 * (outside a task).  From then on the stream's own close is what clears
 * the entry. */
int nest__loop_watch(struct nest__rt *rt, int fd, int writable, nest_task *t, int mode) {
    int stable = mode != NEST__WATCH_PLAIN;
    struct nest__loop *lp = rt->loop;
    struct fd_entry *e = entry(lp, fd);
    if (!e) return -ENOMEM;
    if (e->waiter[writable]) return -EBUSY;
    ev_io *w = &e->io[writable];
    if (e->parked[writable]) {
        if (mode == NEST__WATCH_STABLE && ev_is_active(w)) { /* the common case */
            e->parked[writable] = 0;
            ev_ref(lp->ev);
            e->waiter[writable] = t;
            rt->nio++;
            return 0;
        }
        stop_watcher(lp, e, writable); /* set it up afresh */
    }
    if (mode != NEST__WATCH_STABLE || !e->stable[writable]) {
        ev_io_init(w, io_cb, fd, writable ? EV_WRITE : EV_READ);
        w->data = lp;
    }
    e->stable[writable] = (unsigned char)stable;
    ev_io_start(lp->ev, w);
    lp->nstarts++;
    e->waiter[writable] = t;
    rt->nio++;
    return 0;
}

void nest__loop_unwatch(struct nest__rt *rt, int fd, int writable) {
    struct nest__loop *lp = rt->loop;
    if (fd >= lp->nfds || !lp->fds[fd] || !lp->fds[fd]->waiter[writable]) return;
    end_wait(lp, lp->fds[fd], writable);
}

nest_task *nest__loop_waiter(struct nest__rt *rt, int fd, int writable) {
    struct nest__loop *lp = rt->loop;
    if (fd < 0 || fd >= lp->nfds || !lp->fds[fd]) return NULL;
    return lp->fds[fd]->waiter[writable];
}

void nest__loop_closing(struct nest__rt *rt, int fd) {
    struct nest__loop *lp = rt->loop;
    if (fd < 0 || fd >= lp->nfds || !lp->fds[fd]) return;
    struct fd_entry *e = lp->fds[fd];
    for (int d = 0; d < 2; d++) {
        nest_task *t = e->waiter[d];
        e->stable[d] = 0; /* the number may name another file from now on */
        if (t) {
            end_wait(lp, e, d);
            t->abort_fn = NULL;
            nest__wake(rt, t, NEST_ECLOSED);
        } else if (e->parked[d]) {
            stop_watcher(lp, e, d);
        }
    }
}

/* ---- guest mode ------------------------------------------------------------
 *
 * The host owns ev_run.  Three watchers on its loop stand in for nest_run's
 * loop: the check watcher runs a slice of tasks after every poll (the one
 * place where a libev callback leads to user code: through the scheduler,
 * never directly, and never while nest itself is inside ev_run); the
 * prepare watcher, just before the host blocks, asks the runtime how long it
 * may block and arms the timer, or starts the idle watcher so that it does
 * not block at all while tasks are runnable.  Prepare and check are
 * unreferenced: they must not keep the host's ev_run alive by themselves;
 * what does is what nest really waits for (fd watchers, the timer, the idle
 * watcher, an outstanding thread job).  nest__rt_cur is set only while the
 * guest's code runs, so host code between slices is "outside a task", and
 * several guests can share one host loop. */

static void guest_idle_cb(struct ev_loop *ev, ev_idle *w, int revents) {
    (void)ev;
    (void)w;
    (void)revents; /* its only job is to keep the host from blocking */
}

/* Asks the runtime how long the host may block and arms the timer, or the
 * idle watcher when tasks are runnable (then the host does not block). */
static void guest_arm(struct ev_loop *ev, struct nest__loop *lp) {
    nest_time t = nest__guest_prepare(lp->rt);
    if (t == 0) {
        ev_timer_stop(ev, &lp->timer);
        if (!ev_is_active(&lp->idle)) ev_idle_start(ev, &lp->idle);
        return;
    }
    if (ev_is_active(&lp->idle)) ev_idle_stop(ev, &lp->idle);
    ev_timer_stop(ev, &lp->timer);
    if (t > 0) {
        ev_now_update(ev);
        ev_timer_set(&lp->timer, (double)t / 1e9, 0.);
        ev_timer_start(ev, &lp->timer);
    }
}

/* After every poll, last of the iteration's callbacks (lowest priority), so
 * that what the host's callbacks did to the guest is seen: run a slice, then
 * arm - here too, not only in prepare, because libev ends ev_run when no
 * referenced watcher is left at the end of an iteration, before any
 * prepare could re-arm. */
static void guest_check_cb(struct ev_loop *ev, ev_check *w, int revents) {
    (void)revents;
    struct nest__loop *lp = w->data;
    if (nest__guest_check(lp->rt)) return; /* the run ended: lp is gone */
    guest_arm(ev, lp);
}

static void guest_prepare_cb(struct ev_loop *ev, ev_prepare *w, int revents) {
    (void)revents;
    guest_arm(ev, w->data);
}

void nest__loop_guest_kick(struct nest__rt *rt) {
    struct nest__loop *lp = rt->loop;
    if (!ev_is_active(&lp->idle)) ev_idle_start(lp->ev, &lp->idle);
}

void nest__loop_guest_start(struct nest__rt *rt) {
    struct nest__loop *lp = rt->loop;
    lp->guest = 1;
    ev_prepare_init(&lp->prep, guest_prepare_cb);
    lp->prep.data = lp;
    ev_check_init(&lp->check, guest_check_cb);
    ev_set_priority(&lp->check, EV_MINPRI);
    lp->check.data = lp;
    ev_idle_init(&lp->idle, guest_idle_cb);
    lp->idle.data = lp;
    ev_prepare_start(lp->ev, &lp->prep);
    ev_unref(lp->ev);
    ev_check_start(lp->ev, &lp->check);
    ev_unref(lp->ev);
    ev_idle_start(lp->ev, &lp->idle); /* the root task is runnable */
}

uint64_t nest__loop_watch_starts(void) { return nest__rt_cur->loop->nstarts; }

int nest__loop_run_host_once(struct nest__rt *rt) { return ev_run(rt->loop->ev, EVRUN_ONCE); }
