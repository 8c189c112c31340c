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

/* Once the watcher is set up, and before parking (the stream holding
 * *mark may be closed and freed while the task waits), *mark |= bit;
 * mark may be NULL. */
static int wait_fd_as(int fd, int writable, int mode, int kind, const void *obj,
                      const char *what, unsigned *mark, unsigned bit) {
    nest_task *t = nest__task_self(what);
    struct nest__rt *rt = nest__rt_cur;
    if (nest__cancelled_at(t->cur)) return -ECANCELED;
    if (fd < 0) return -EBADF;
    int rc = nest__loop_watch(rt, fd, writable, t, mode);
    if (rc < 0) return rc;
    if (mark) *mark |= bit;
    t->wake_val = fd << 1 | writable;
    rt->nfdwaits++;
    return nest__park_on(rt, t, abort_fd, kind, obj);
}

int nest__wait_fd_as(int fd, int writable, int mode, int kind, const void *obj,
                     const char *what) {
    return wait_fd_as(fd, writable, mode, kind, obj, what, NULL, 0);
}

static int wait_fd(int fd, int writable, int mode, const char *what, unsigned *mark,
                   unsigned bit) {
    return wait_fd_as(fd, writable, mode, writable ? NEST__BLOCK_WRITE : NEST__BLOCK_READ,
                      (const void *)(intptr_t)fd, what, mark, bit);
}

int nest_wait_readable(int fd) {
    return wait_fd(fd, 0, NEST__WATCH_PLAIN, "nest_wait_readable", NULL, 0);
}
int nest_wait_writable(int fd) {
    return wait_fd(fd, 1, NEST__WATCH_PLAIN, "nest_wait_writable", NULL, 0);
}

int nest__wait_stable(int fd, int writable, unsigned *waited) {
    unsigned bit = 1u << writable;
    int mode = (*waited & bit) ? NEST__WATCH_STABLE : NEST__WATCH_FRESH;
    /* Only a wait that really set the watcher up counts as the first: one
     * that failed before it did (cancelled, -EBUSY) leaves the next one
     * fresh.  The bit is set before the task parks, never after: the
     * stream may be closed and freed while it waits. */
    return wait_fd(fd, writable, mode, writable ? "nest_wait_writable" : "nest_wait_readable",
                   waited, bit);
}

void nest_notify_closing(int fd) {
    nest__task_self("nest_notify_closing");
    if (fd >= 0) nest__loop_closing(nest__rt_cur, fd);
}
