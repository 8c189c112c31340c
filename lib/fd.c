/*
 * lib/fd.c - waiting for file descriptors (nest/fd.h).
 *
 * The policy layer over evloop.c's watcher table: checkpoint rules, one
 * waiter per fd and direction, cancellation, and nest_notify_closing().
 * A waiting task keeps (fd << 1 | writable) in wake_val so that abort can
 * find its watcher.
 */
#include "core.h"
#include "sock.h"

static int abort_fd(nest_task *t) {
    nest__loop_unwatch(nest__rt_cur, t->wake_val >> 1, t->wake_val & 1);
    return 0;
}

int nest__wait_fd_as(int fd, int writable, int mode, int kind, const void *obj,
                     const char *what) {
    nest_task *t = nest__task_self(what);
    struct nest__rt *rt = nest__rt_cur;
    if (nest__cancelled_at(t->cur)) return -ECANCELED;
    if (fd < 0) return -EBADF;
    int rc = nest__loop_watch(rt, fd, writable, t, mode);
    if (rc < 0) return rc;
    t->wake_val = fd << 1 | writable;
    rt->nfdwaits++;
    return nest__park_on(rt, t, abort_fd, kind, obj);
}

static int wait_fd(int fd, int writable, int mode, const char *what) {
    return nest__wait_fd_as(fd, writable, mode, writable ? NEST__BLOCK_WRITE : NEST__BLOCK_READ,
                            (const void *)(intptr_t)fd, what);
}

int nest_wait_readable(int fd) { return wait_fd(fd, 0, NEST__WATCH_PLAIN, "nest_wait_readable"); }
int nest_wait_writable(int fd) { return wait_fd(fd, 1, NEST__WATCH_PLAIN, "nest_wait_writable"); }

int nest__wait_stable(int fd, int writable, unsigned *waited) {
    unsigned bit = 1u << writable;
    int mode = (*waited & bit) ? NEST__WATCH_STABLE : NEST__WATCH_FRESH;
    *waited |= bit;
    return wait_fd(fd, writable, mode, writable ? "nest_wait_writable" : "nest_wait_readable");
}

void nest_notify_closing(int fd) {
    nest__task_self("nest_notify_closing");
    if (fd >= 0) nest__loop_closing(nest__rt_cur, fd);
}
