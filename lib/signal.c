/*
 * lib/signal.c - signal receivers (nest/signal.h) and the Ctrl-C rule.
 *
 * Owns the process-wide signal handler, the table of open receivers
 * (slot_mask / slot_wfd: which signals each wants and the pipe it reads),
 * and the per-signal record of users and saved dispositions.
 *
 * Invariants:
 *  - The handler touches only atomics, write() on a non-blocking pipe,
 *    nest__loop_wakeup (ev_async_send) and, for a second Ctrl-C, sigaction
 *    and raise: all async-signal-safe.  It may run on any thread.
 *  - users[s] counts the holders of signal s (open receivers wanting it,
 *    plus the Ctrl-C owner for SIGINT); while it is non-zero the handler
 *    is installed and saved[s] holds the disposition from before.  Guarded
 *    by mu, which the handler never takes.
 *  - A slot is unpublished (mask 0) and in-flight handlers drained (busy)
 *    before its pipe is closed or its signals released, so the handler
 *    never writes to a closed or reused fd.
 *  - ctrl_rt names the runtime that owns Ctrl-C; it is cleared, and
 *    handlers drained, before that runtime is freed.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "nest/signal.h"

#define MAX_RX 64
#define MAX_SIG 65 /* signals 1 .. 64 */

static _Atomic uint64_t slot_mask[MAX_RX]; /* bit s-1: wants signal s */
static _Atomic int slot_wfd[MAX_RX];
static int slot_used[MAX_RX]; /* mu */
static _Atomic int busy;      /* handlers running now */
static _Atomic(struct nest__rt *) ctrl_rt;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int users[MAX_SIG];              /* mu */
static struct sigaction saved[MAX_SIG]; /* mu */

static void drain_handlers(void) {
    while (atomic_load(&busy)) sched_yield();
}

static void ctrl_c(void) {
    struct nest__rt *rt = atomic_load(&ctrl_rt);
    if (rt && atomic_exchange(&rt->interrupt_req, 1) == 0) {
        atomic_store_explicit(&rt->foreign_req, 1, memory_order_release);
        nest__loop_wakeup(rt);
        return;
    }
    /* The second Ctrl-C (or one with no runtime left): die as by default.
     * SIGINT is blocked while this handler runs, so the raised signal is
     * delivered, with the default action, as soon as it returns. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    raise(SIGINT);
}

static void on_signal(int signo) {
    int saved_errno = errno;
    atomic_fetch_add(&busy, 1);
    int delivered = 0;
    if (signo > 0 && signo < MAX_SIG) {
        uint64_t bit = (uint64_t)1 << (signo - 1);
        unsigned char b = (unsigned char)signo;
        for (int i = 0; i < MAX_RX; i++) {
            if (!(atomic_load(&slot_mask[i]) & bit)) continue;
            ssize_t n = write(atomic_load(&slot_wfd[i]), &b, 1); /* full: dropped */
            (void)n;
            delivered = 1;
        }
    }
    if (!delivered && signo == SIGINT) ctrl_c();
    atomic_fetch_sub(&busy, 1);
    errno = saved_errno;
}

/* Installs the handler for signo if nobody holds it yet. */
static int hold(int signo) {
    int rc = 0;
    pthread_mutex_lock(&mu);
    if (users[signo] == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (sigaction(signo, &sa, &saved[signo]) < 0) rc = -EINVAL;
    }
    if (rc == 0) users[signo]++;
    pthread_mutex_unlock(&mu);
    return rc;
}

/* Restores signo's old disposition when its last holder lets go.  Callers
 * have drained the handlers that could still use what they held. */
static void unhold(int signo) {
    pthread_mutex_lock(&mu);
    if (--users[signo] == 0) sigaction(signo, &saved[signo], NULL);
    pthread_mutex_unlock(&mu);
}

static int catchable(int s) {
    return s > 0 && s < MAX_SIG && s != SIGKILL && s != SIGSTOP;
}

int nest_signal_open(nest_signal_rx *rx, uint64_t mask) {
    nest__task_self("nest_signal_open");
    rx->slot = -1;
    rx->rfd = rx->wfd = -1;
    if (!mask) return -EINVAL;
    for (int s = 1; s < MAX_SIG; s++)
        if ((mask & NEST_SIG(s)) && !catchable(s)) return -EINVAL;
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) return -errno;
    pthread_mutex_lock(&mu);
    int slot = -1;
    for (int i = 0; i < MAX_RX && slot < 0; i++)
        if (!slot_used[i]) slot = i;
    if (slot >= 0) slot_used[slot] = 1;
    pthread_mutex_unlock(&mu);
    if (slot < 0) {
        close(p[0]);
        close(p[1]);
        return -EBUSY;
    }
    for (int s = 1; s < MAX_SIG; s++) {
        if (!(mask & ((uint64_t)1 << (s - 1)))) continue;
        int rc = hold(s);
        if (rc < 0) {
            while (--s > 0)
                if (mask & ((uint64_t)1 << (s - 1))) unhold(s);
            pthread_mutex_lock(&mu);
            slot_used[slot] = 0;
            pthread_mutex_unlock(&mu);
            close(p[0]);
            close(p[1]);
            return rc;
        }
    }
    rx->rfd = p[0];
    rx->wfd = p[1];
    rx->set = mask;
    rx->slot = slot;
    atomic_store(&slot_wfd[slot], p[1]);
    atomic_store(&slot_mask[slot], mask); /* published: the handler may write */
    return 0;
}

int nest_signal_receive(nest_signal_rx *rx) {
    nest__task_self("nest_signal_receive");
    int rc = nest_checkpoint();
    if (rc < 0) return rc;
    for (;;) {
        if (rx->slot < 0) return NEST_ECLOSED;
        unsigned char b;
        ssize_t n = read(rx->rfd, &b, 1);
        if (n == 1) return b;
        if (n < 0 && errno != EAGAIN && errno != EINTR) return -errno;
        if (n < 0 && errno == EINTR) continue;
        rc = nest_wait_readable(rx->rfd);
        if (rc < 0) return rc;
    }
}

void nest_signal_close(nest_signal_rx *rx) {
    if (rx->slot < 0) return;
    int slot = rx->slot;
    atomic_store(&slot_mask[slot], 0);
    drain_handlers(); /* none can still be writing to wfd */
    nest_notify_closing(rx->rfd);
    close(rx->rfd);
    close(rx->wfd);
    for (int s = 1; s < MAX_SIG; s++)
        if (rx->set & NEST_SIG(s)) unhold(s);
    pthread_mutex_lock(&mu);
    slot_used[slot] = 0;
    pthread_mutex_unlock(&mu);
    rx->slot = -1;
    rx->rfd = rx->wfd = -1;
}

/* ---- Ctrl-C ---------------------------------------------------------------- */

void nest__ctrl_c_install(struct nest__rt *rt) {
    struct sigaction cur;
    pthread_mutex_lock(&mu);
    int ours = users[SIGINT] > 0;
    pthread_mutex_unlock(&mu);
    if (!ours && (sigaction(SIGINT, NULL, &cur) < 0 || cur.sa_handler != SIG_DFL ||
                  (cur.sa_flags & SA_SIGINFO)))
        return; /* the program handles SIGINT itself */
    struct nest__rt *expected = NULL;
    if (!atomic_compare_exchange_strong(&ctrl_rt, &expected, rt)) return; /* another runtime */
    if (nest__loop_wakeup_enable(rt) < 0 || hold(SIGINT) < 0) {
        atomic_store(&ctrl_rt, NULL);
        return;
    }
    rt->ctrl_c = 1;
}

void nest__ctrl_c_release(struct nest__rt *rt) {
    if (!rt->ctrl_c) return;
    atomic_store(&ctrl_rt, NULL);
    drain_handlers();
    unhold(SIGINT);
    rt->ctrl_c = 0;
}

void nest__ctrl_c_check(struct nest__rt *rt) {
    if (!rt->interrupted && atomic_load(&rt->interrupt_req)) {
        rt->interrupted = 1;
        nest__scope_cancel(rt, &rt->run_scope, 0);
    }
}
