/*
 * nest/fd.h - waiting for file descriptors.
 *
 * The lowest layer of nest's I/O: block the calling task until a
 * non-blocking file descriptor is ready.  One task at a time may wait for
 * each fd and direction.  Before closing an fd that a task may be waiting
 * on, call nest_notify_closing(fd) so that the waiter wakes with an error
 * instead of waiting on a number the kernel may give to another file.
 */
#ifndef NEST_FD_H
#define NEST_FD_H

#include "common.h"

NEST_BEGIN_DECLS

/* Blocks until fd is readable (or has an error or hang-up pending).  A
 * checkpoint.  Returns 0; -ECANCELED; -EBUSY if another task already waits
 * for fd to be readable; NEST_ECLOSED if nest_notify_closing(fd) was called
 * while waiting; -EBADF for a negative fd; -ENOMEM.  The fd stays owned by the
 * caller.  Must be called from a task. */
NEST_API int nest_wait_readable(int fd);

/* As nest_wait_readable(), for writability. */
NEST_API int nest_wait_writable(int fd);

/* Wakes the tasks waiting on fd (either direction) with NEST_ECLOSED and
 * forgets fd, so the caller can close it safely.  Not a checkpoint.  Must be
 * called from a task. */
NEST_API void nest_notify_closing(int fd);

NEST_END_DECLS

#endif
