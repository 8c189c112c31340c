/*
 * nest/thread.h - running blocking functions on worker threads (Trio's
 * trio.to_thread.run_sync).
 *
 * nest_to_thread() hands a blocking function (a file read, a DNS lookup, a
 * computation, a call into a library that blocks) to a pool of worker
 * threads that belongs to the calling runtime, and parks the calling task
 * until the function returns; the other tasks keep running meanwhile.
 *
 * The pool runs at most a limited number of jobs at once (by default
 * NEST_THREAD_LIMIT_DEFAULT, like Trio's default CapacityLimiter of 40;
 * see nest_run_options.thread_limit and nest_thread_set_limit()); further
 * jobs wait in a FIFO queue.  Threads are created on demand, an idle thread
 * exits after NEST_THREAD_IDLE_TIMEOUT, and nest_run() joins every thread
 * before it returns (waiting, if need be, for abandoned jobs to finish).
 *
 * While a job is outstanding the runtime is never declared deadlocked: its
 * completion will wake a task.
 *
 * The function runs on another thread: it must not call nest functions
 * other than the nest_token_* ones and must not touch the runtime's tasks'
 * data without its own locking.  The second half of this header lets such
 * threads (or any other) call into a runtime: nest_token_run().
 */
#ifndef NEST_THREAD_H
#define NEST_THREAD_H

#include "common.h"
#include "scope.h"

NEST_BEGIN_DECLS

/* The default number of jobs a runtime's pool runs at once. */
#define NEST_THREAD_LIMIT_DEFAULT 40
/* How long an idle worker thread waits for a job before it exits. */
#define NEST_THREAD_IDLE_TIMEOUT NEST_SEC(5)

/* nest_to_thread() flags. */
enum {
    /* On cancellation, return -ECANCELED at once instead of waiting for the
     * function: the job keeps running on its own and its result is
     * discarded.  arg must then stay valid until the function returns,
     * which the caller can no longer observe: use nest_to_thread_owned()
     * with a release function (the pool frees arg on the runtime's thread
     * once fn is done), or pass memory that outlives nest_run(). */
    NEST_THREAD_ABANDON = 1u << 0
};

/* Runs fn(arg) on a worker thread of the calling runtime's pool and waits
 * for it.  On success stores fn's return value in *result (result may be
 * NULL) and returns 0.
 *
 * Short functions: a worker that finished a job spins up to ~20 us for the
 * next one before it sleeps, and when no other task is runnable and such a
 * spinning worker takes the job, the caller spins up to ~20 us for fn to
 * finish before it parks.  That saves the two cross-thread wake-ups of a
 * round trip (bench/to_thread.c: ~0.5 us instead of 12-50 us).  The caller
 * stops spinning for a while after spins that missed, so blocking
 * functions cost no extra CPU to speak of.  Either way the call yields to
 * the scheduler at least once, and an idle pool spins no more.
 *
 * A checkpoint: fails with -ECANCELED at once, without running fn, if the
 * calling scope is cancelled.  Cancellation while fn runs (or waits in the
 * queue):
 *  - by default the task keeps waiting until fn has returned (a thread
 *    cannot be interrupted, and fn may be using arg, which usually lives on
 *    the task's stack); then *result is stored and -ECANCELED returned.
 *    A job still in the queue when cancelled is removed and never runs.
 *  - with NEST_THREAD_ABANDON, returns -ECANCELED at once; see above.
 *
 * Errors: -ECANCELED; -EINVAL for unknown flags or fn NULL; -ENOMEM; -EAGAIN
 * if no thread could be created while the pool had none.  Must be called
 * from a task. */
NEST_API int nest_to_thread(int (*fn)(void *arg), void *arg, int *result, unsigned flags);

/* nest_to_thread() for a job that owns its argument: the way to abandon a
 * job safely (NEST_THREAD_ABANDON) when arg holds memory that must be freed
 * once fn is done with it, which the abandoning caller can no longer see.
 *
 * Ownership rule: the caller keeps arg whenever the call returns anything
 * but -ECANCELED (0, -EINVAL, -ENOMEM, -EAGAIN: read fn's output in arg,
 * then free it yourself).  When it returns -ECANCELED, arg has been handed
 * to release (which may be NULL): release(arg) is called exactly once,
 * after fn has returned, or at once if fn never ran (the scope was already
 * cancelled, or the job was withdrawn from the queue).  With
 * NEST_THREAD_ABANDON that is usually after the call returned: when the
 * runtime notices that fn finished, or at the latest while nest_run()
 * ends, after joining the workers.
 *
 * release always runs on the runtime's thread, so it may free memory that
 * was allocated there (with any allocator, including the one installed with
 * nest_set_allocator()); but it may run outside any task or in another
 * task, so it must not block or call nest functions: free memory, close
 * fds, nothing more.  Everything else is as nest_to_thread(), including
 * the spin described there.  Must be called from a task. */
NEST_API int nest_to_thread_owned(int (*fn)(void *arg), void *arg, void (*release)(void *arg),
                                  int *result, unsigned flags);

/* Changes how many jobs the calling runtime's pool runs at once (n >= 1);
 * queued jobs start at once if the limit rises.  Returns 0, or -EINVAL.
 * Must be called from a task.  Not a checkpoint. */
NEST_API int nest_thread_set_limit(int n);

/* The pool's counters, for tests and monitoring. */
typedef struct nest_thread_stats {
    int limit;                    /* jobs run at once at most */
    int threads;                  /* worker threads alive */
    int running;                  /* jobs running now */
    int queued;                   /* jobs waiting for a thread */
    unsigned long long completed; /* jobs finished since the run began */
} nest_thread_stats;

/* Fills *out for the calling runtime.  Must be called from a task. */
NEST_API void nest_thread_statistics(nest_thread_stats *out);

/* ---- calling into a runtime from other threads ------------------------- */

/* A handle through which any thread can ask a runtime to do something
 * (Trio's TrioToken with trio.from_thread).  Reference-counted and
 * thread-safe: the memory stays valid until the last reference is released,
 * even after nest_run() has returned; the runtime it names lives only until
 * nest_run() returns, after which every call fails with NEST_ECLOSED.
 *
 * While some reference from nest_token_get() is held, the runtime is never
 * declared deadlocked (another thread may call in at any moment), so
 * release tokens you no longer need. */
typedef struct nest_token nest_token;

/* Returns a new reference to the calling runtime's token, or NULL when out
 * of memory.  Must be called from a task.  Not a checkpoint.  The token's
 * shared state is allocated with calloc (not the allocator hook), since
 * another thread may free it after the run. */
NEST_API nest_token *nest_token_get(void);

/* Drops a reference (tok may be NULL).  Any thread, any time. */
NEST_API void nest_token_release(nest_token *tok);

/* From a thread other than the runtime's: runs fn(arg) in a new task of the
 * token's runtime (a system task, in no nursery: it may block, checkpoint,
 * use every nest call) and waits for it; stores its return value in
 * *result (result may be NULL).  Requests run in the order they arrive.
 * If the run ends first (the root task returns), a runner still running
 * is cancelled and its result is whatever fn returns after unwinding.
 *
 * Returns 0; NEST_ECLOSED if the runtime has ended (fn did not run);
 * -ENOMEM if no task could be created (fn did not run); -EDEADLK if called
 * from the runtime's own thread (also from host code between a guest
 * runtime's slices: use nest_guest_call there, nest/guest.h); -EINVAL for
 * a NULL tok or fn. */
NEST_API int nest_token_run(nest_token *tok, int (*fn)(void *arg), void *arg, int *result);

/* From a thread other than the runtime's: cancels scope s (as
 * nest_scope_cancel) inside the runtime, and waits until that is done.
 * The caller must know that s is still entered when the request runs
 * (typically: the scope's task waits for this thread before exiting it).
 * Returns 0, NEST_ECLOSED, -EDEADLK or -EINVAL as nest_token_run. */
NEST_API int nest_token_cancel(nest_token *tok, nest_scope *s);

NEST_END_DECLS

#endif
