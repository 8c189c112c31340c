/*
 * nest/time.h - checkpoints and sleeping.
 *
 * A checkpoint is a point where a task may be cancelled and where other
 * tasks may run.  Every blocking call in nest is a checkpoint: it fails at
 * once with -ECANCELED when the calling task is inside a cancelled scope,
 * and otherwise yields to the scheduler at least once, even when it does not
 * need to wait.  Code between checkpoints runs without interruption, which is
 * what makes reasoning about shared state in one runtime easy.
 *
 * A checkpoint checks for cancellation before anything else, so in a
 * cancelled scope it returns -ECANCELED even when its arguments are invalid.
 *
 * Sleepers whose deadlines are equal wake in the order they went to sleep.
 *
 * All functions here must be called from a task; calling them elsewhere is
 * a programming error and aborts with a message.
 */
#ifndef NEST_TIME_H
#define NEST_TIME_H

#include "common.h"

NEST_BEGIN_DECLS

/* A pure checkpoint: returns -ECANCELED if the task is in a cancelled scope,
 * otherwise lets every other runnable task run once and returns 0. */
NEST_API int nest_checkpoint(void);

/* Sleeps for d nanoseconds (d <= 0 just checkpoints).  A checkpoint.
 * Returns 0 when the time has passed, -ECANCELED when cancelled first. */
NEST_API int nest_sleep(nest_time d);

/* Sleeps until the clock reads t or later.  A checkpoint.  Returns 0 or
 * -ECANCELED. */
NEST_API int nest_sleep_until(nest_time t);

/* Sleeps until cancelled.  A checkpoint.  Always returns -ECANCELED. */
NEST_API int nest_sleep_forever(void);

NEST_END_DECLS

#endif
