/*
 * nest/instrument.h - instrumentation hooks (Trio's Instrument).
 *
 * An instrument is a struct of callbacks that the scheduler calls as things
 * happen: a task is spawned, becomes runnable, starts and ends a step (the
 * stretch between switching into a task and switching out of it), exits;
 * the loop is about to wait for I/O and has returned; a scope is
 * cancelled; a nursery opens and closes.  Leave a callback NULL to skip it.
 * Profilers, tracers (nest/trace.h is built on this) and test probes use it.
 *
 *     static void on_exit(void *arg, nest_task *t) { ... }
 *     static nest_instrument probe = {.arg = &counts, .task_exited = on_exit};
 *     nest_instrument_add(&probe);
 *
 * Cost: with no instrument registered every hook site is one test of a
 * runtime field that is never taken (bench/inspect_overhead.c measures it);
 * with one registered, each event is an indirect call per instrument.
 *
 * Rules for callbacks: they run inside the scheduler, in whichever context
 * the event happens (a task's stack or the scheduler's), so they must not
 * block, checkpoint, spawn, or enter or exit scopes.  They may read
 * anything (nest_task_name(), nest/inspect.h, nest_now()), cancel scopes,
 * and add or remove instruments (removing one takes effect for the events
 * after the current one).
 *
 * Lifetime: an instrument belongs to one runtime from nest_instrument_add()
 * until nest_instrument_remove() or the end of the run (after_run is its
 * last call); the struct must stay in place meanwhile and is not copied.
 */
#ifndef NEST_INSTRUMENT_H
#define NEST_INSTRUMENT_H

#include "common.h"
#include "nursery.h"
#include "scope.h"

NEST_BEGIN_DECLS

typedef struct nest_instrument nest_instrument;

struct nest_instrument {
    void *arg; /* passed to every callback */
    /* The run begins (only for nest_run_options.instrument) / ends. */
    void (*before_run)(void *arg);
    void (*after_run)(void *arg);
    /* t was created by nest_spawn or nest_start (or is the root task). */
    void (*task_spawned)(void *arg, nest_task *t);
    /* t is about to enter the run queue.  nest_task_state(t) still tells
     * what it leaves: NEST_TASK_BLOCKED when woken (nest_task_block() says
     * from what), NEST_TASK_RUNNING when it yields at a checkpoint,
     * NEST_TASK_NEW when just spawned. */
    void (*task_scheduled)(void *arg, nest_task *t);
    /* t starts / ends a step.  At the end, nest_task_state(t) tells why:
     * BLOCKED (and on what), RUNNABLE (a checkpoint that yielded), or
     * RUNNING when it is about to exit. */
    void (*before_task_step)(void *arg, nest_task *t);
    void (*after_task_step)(void *arg, nest_task *t);
    /* t returned (its result: nest_task_result()) or failed to start. */
    void (*task_exited)(void *arg, nest_task *t);
    /* The scheduler calls into the event loop: timeout < 0 waits until an
     * event, 0 only polls, > 0 waits at most that long (real nanoseconds). */
    void (*before_io_wait)(void *arg, nest_time timeout);
    void (*after_io_wait)(void *arg, nest_time timeout);
    /* s was cancelled: by nest_scope_cancel() and its friends, a failing
     * child (a nursery's scope), a deadlock (the run's scope), or its
     * deadline (deadline_expired 1).  Sleeps are scopes too: a sleep
     * ending on time reports its own scope with deadline_expired 1. */
    void (*scope_cancelled)(void *arg, const nest_scope *s, int deadline_expired);
    /* n was opened / its close is returning rc. */
    void (*nursery_opened)(void *arg, nest_nursery *n);
    void (*nursery_closed)(void *arg, nest_nursery *n, int rc);
    /* Private: the runtime's list. */
    nest_instrument *next_;
    void *rt_;
};

/* Registers ins with the calling thread's runtime.  Callable from a task,
 * from another instrument's callback, or as nest_run_options.instrument.
 * Returns 0; -EBUSY if ins is already registered; -EINVAL outside a
 * runtime.  Not a checkpoint. */
NEST_API int nest_instrument_add(nest_instrument *ins);

/* Unregisters ins (its after_run is not called).  Returns 0, or -ENOENT if
 * it is not registered with this runtime.  Not a checkpoint. */
NEST_API int nest_instrument_remove(nest_instrument *ins);

/* A finished task's return value (what task_exited wants to know); 0 for a
 * task that has not returned. */
NEST_API int nest_task_result(const nest_task *t);

/* Where a scope was entered (a nursery's scope: where it was opened), and
 * whether it is a nursery's scope; for instrument callbacks. */
NEST_API const char *nest_scope_file(const nest_scope *s);
NEST_API int nest_scope_line(const nest_scope *s);
NEST_API int nest_scope_is_nursery(const nest_scope *s);
/* The task that entered s, or NULL for the run's own scope. */
NEST_API nest_task *nest_scope_owner(const nest_scope *s);

NEST_END_DECLS

#endif
