/*
 * nest/guest.h - embedding nest in a program that already runs its own
 * libev loop ("guest mode", Trio's start_guest_run), and calling task code
 * from plain C.
 *
 * A host program that owns its loop - it calls ev_run() itself, perhaps
 * deep inside a framework - can still use nest: nest_guest_start() sets up
 * a runtime whose tasks run from watchers on the host's loop.  The host
 * keeps calling ev_run(); nest never blocks the loop and never calls
 * ev_run() itself (except in nest_guest_call(), see there).  When the root
 * task and everything it spawned have finished, the runtime frees itself
 * and calls the completion callback from inside the host's ev_run().
 *
 *     static void done(void *ud, int rc) { printf("nest finished: %d\n", rc); }
 *
 *     struct ev_loop *loop = EV_DEFAULT;
 *     ... the host's own watchers ...
 *     nest_guest *g;
 *     nest_guest_start(loop, main_task, NULL, NULL, done, NULL, &g);
 *     ev_run(loop, 0);        // the host's loop, as before
 *
 * Everything else is as under nest_run(): nurseries, scopes, deadlines,
 * fd waits, worker threads, tokens.  The differences:
 *  - The guest's tasks run only while the host's loop turns: a host
 *    callback that blocks for a second stalls every task for a second, as it
 *    stalls the host's own watchers.
 *  - Between the guest's slices the host's code is outside any task: nest
 *    calls that need a task abort there as anywhere else.  Several guests may
 *    share one loop.
 *  - A guest never takes SIGINT (the host owns the process's signals; use a
 *    signal receiver in a task if the guest should see it), and is not
 *    declared deadlocked (except inside nest_guest_call): host code may call
 *    in at any moment, so a guest that nothing can wake simply waits, and
 *    keeps nothing on the host's loop alive (ev_run may return).
 *  - Everything the guest puts on the host's loop holds a reference only
 *    while nest really waits for it (an fd, the next deadline, runnable
 *    tasks, a worker thread's job): when only the guest is left and it waits
 *    for nothing, the host's ev_run() returns as it would without nest.
 *
 * All functions here are called on the thread that runs the host's loop,
 * from host code (not from a nest task: that aborts).
 */
#ifndef NEST_GUEST_H
#define NEST_GUEST_H

#include "common.h"
#include "runtime.h"

NEST_BEGIN_DECLS

/* A guest runtime.  Opaque; valid from nest_guest_start() until its
 * completion callback is called. */
typedef struct nest_guest nest_guest;

/* Called once, from inside the host's ev_run(), when the guest run has
 * ended: rc is the root task's result, or NEST_EDEADLOCK if a
 * nest_guest_call() found that nothing could ever finish it (see there; a
 * guest is otherwise never declared deadlocked, nor interrupted).  The run
 * ends once every task has finished and every worker-thread job it
 * abandoned (NEST_THREAD_ABANDON, a cancelled name lookup) has returned;
 * the host's loop keeps turning meanwhile.  By then the guest has removed its
 * watchers from the loop and freed everything it allocated; the nest_guest
 * handle is gone.  The callback may start another guest, or call
 * ev_break() on the loop. */
typedef void (*nest_guest_done_fn)(void *ud, int rc);

/* Starts fn(arg) as the root task of a new runtime driven by the host's
 * libev loop `loop` (a struct ev_loop *, typically the one the host runs).
 * o: options as for nest_run_opts() (NULL: defaults); o->loop must be NULL
 * or equal to loop; o->no_ctrl_c is implied.  The mock clock works as under
 * nest_run_opts (autojump uses a timer on the host's loop).
 *
 * Returns 0 and stores the handle in *out (out may be NULL), having run no
 * task yet: the root task first runs inside the host's next ev_run
 * iteration.  done (may be NULL) is called with ud when the run ends.
 * Errors: -EINVAL (loop NULL, o->loop another loop, bad options), -ENOMEM.
 * Not a checkpoint; never blocks.  Aborts if called from inside a task. */
NEST_API int nest_guest_start(void *loop, nest_fn fn, void *arg, const nest_run_options *o,
                              nest_guest_done_fn done, void *ud, nest_guest **out);

/* Cancels the whole guest run, as Ctrl-C cancels a nest_run(): every task
 * sees -ECANCELED at its next checkpoint and unwinds; the run then ends and
 * the completion callback gets the root task's result (typically
 * -ECANCELED).  Idempotent.  Never blocks: the unwinding happens in the
 * host's later loop iterations.  Not a checkpoint; host code only. */
NEST_API void nest_guest_cancel(nest_guest *g);

/* The plain-C bridge: runs fn(arg) as a new task of guest g (a system task,
 * in no nursery, like nest_token_run's) and blocks the calling host code
 * until it returns, storing its result in *result (result may be NULL).
 * While the guest has runnable tasks it runs them directly; only when fn
 * (or the tasks it waits for) needs I/O, time or a worker thread does it
 * turn the host's loop (ev_run with EVRUN_ONCE), so that the guest and the
 * host's own watchers keep running.  A call that never waits for such
 * things therefore runs no host callback; one that does may see host
 * callbacks run inside it (as in any nested event loop), and one of them
 * may call nest_guest_call() again.
 *
 * Returns 0; NEST_ECLOSED if the guest run is ending (its root task has
 * returned; fn did not run); -ENOMEM (fn did not run); -EINVAL for NULL g
 * or fn.  If the run ends while fn runs (the root task returned), fn's task
 * is cancelled and its result is whatever fn returns after unwinding; the
 * completion callback may then run inside this call.  If nothing at all
 * can finish fn (the guest has no runnable task, deadline, fd or thread job
 * and the host's loop has no referenced active watcher, which is when
 * ev_run() returns - an ev_unref'd host watcher does not count), that is a
 * deadlock: reported and handled as under nest_run (the run is cancelled;
 * it ends with NEST_EDEADLOCK).  Host code only (aborts inside a task).  From other
 * threads use nest_token_run() (nest/thread.h). */
NEST_API int nest_guest_call(nest_guest *g, nest_fn fn, void *arg, int *result);

NEST_END_DECLS

#endif
