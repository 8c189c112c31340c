/*
 * nest/runtime.h - running tasks: nest_run() and its options, clocks.
 *
 * A runtime belongs to one thread and lives for one call of nest_run(): it
 * starts a root task, runs every task the root task (transitively) spawns,
 * and returns when the root task returns.  Because every task lives in a
 * nursery that waits for it, nothing outlives nest_run().  Several threads
 * may each run their own runtime at the same time; tasks never move between
 * threads.
 */
#ifndef NEST_RUNTIME_H
#define NEST_RUNTIME_H

#include <stdio.h>

#include "common.h"

NEST_BEGIN_DECLS

struct nest_instrument;

/* Which clock a runtime reads. */
enum nest_clock_kind {
    NEST_CLOCK_MONOTONIC = 0, /* CLOCK_MONOTONIC: real time */
    NEST_CLOCK_MOCK = 1       /* virtual time: moves only by jumps */
};

/* Options for nest_run_opts().  Initialise with nest_run_options_init() and
 * then set the fields you need, so that fields added later keep defaults. */
typedef struct nest_run_options {
    /* A struct ev_loop * the runtime should use instead of creating its own
     * (it must not be running ev_run() while nest_run_opts() runs on it).
     * NULL: nest creates a loop and destroys it on return. */
    void *loop;
    /* Default stack size for tasks, in bytes; rounded up to whole pages.
     * 0 selects NEST_DEFAULT_STACK_SIZE.  A spawn can override it. */
    size_t stack_size;
    /* NEST_CLOCK_MONOTONIC or NEST_CLOCK_MOCK. */
    int clock;
    /* Mock clock only: the time nest_now() reports when the run starts. */
    nest_time mock_start;
    /* Mock clock only: when every task has been blocked for this long in
     * real time, the clock jumps to the next deadline.  0 jumps as soon as
     * every task is blocked; NEST_FOREVER (the default) never jumps by
     * itself, so only nest_clock_jump() moves time; then a program whose
     * every task waits for a deadline, with no fd watched, is deadlocked
     * (no task is left to move the clock). */
    nest_time autojump_threshold;
    /* Non-zero: the tasks of each scheduling pass run in an order drawn
     * from this seed instead of FIFO, so that tests shake out assumptions
     * about ordering; the same seed (with the mock clock and no real I/O)
     * replays the same order exactly.  0 (the default): FIFO.  The
     * environment variable NEST_SEED overrides this field: a number, or
     * "random" for a fresh seed each run.  When a randomised run fails
     * (nest_run returns a negative code) the seed is reported (see report)
     * so that the failing interleaving can be replayed. */
    uint64_t seed;
    /* Where nest writes what it detects during the run: the task tree of a
     * deadlock, the seed of a failed randomised run.  NULL: stderr. */
    FILE *report;
    /* Non-zero: write no reports (nest_run's result still tells). */
    int quiet;
    /* An instrument registered before the root task is spawned, so that it
     * sees the whole run (nest/instrument.h); NULL: none. */
    struct nest_instrument *instrument;
    /* How many nest_to_thread() jobs run at once (nest/thread.h); 0 (the
     * default) selects NEST_THREAD_LIMIT_DEFAULT.  Negative: -EINVAL. */
    int thread_limit;
    /* Non-zero: leave SIGINT alone.  0 (the default): the first Ctrl-C
     * cancels the whole run and nest_run returns NEST_EINTERRUPTED; a
     * second one kills the process (see nest/signal.h).  Only applies when
     * SIGINT has its default disposition when the run starts. */
    int no_ctrl_c;
} nest_run_options;

/* The default stack size: 64 KiB of address space, of which only the pages a
 * task touches are ever committed. */
#define NEST_DEFAULT_STACK_SIZE ((size_t)64 * 1024)

/* Fills o with the defaults. */
NEST_API void nest_run_options_init(nest_run_options *o);

/* Runs fn(arg) as the root task of a new runtime on this thread and returns
 * what fn returned, once fn and everything it spawned have finished.
 *
 * Returns NEST_EDEADLOCK if at some point no task could ever run again
 * (nothing runnable, no deadline, no file descriptor watched): nest then
 * prints the task tree (who waits on what, see nest/inspect.h) to the
 * report stream, cancels the run so that every task unwinds, and nest_run
 * reports the deadlock instead of fn's result.  Returns NEST_EINTERRUPTED
 * if Ctrl-C cancelled the run (nest/signal.h), after every task unwound.
 * Returns -ENOMEM if the runtime itself
 * cannot be set up.
 *
 * Not a checkpoint; must not be called from inside a task (nesting runtimes
 * on one thread is a programming error and aborts). */
NEST_API int nest_run(nest_fn fn, void *arg);

/* nest_run() with options; o may be NULL for the defaults.  Returns -EINVAL
 * for an unknown clock kind. */
NEST_API int nest_run_opts(nest_fn fn, void *arg, const nest_run_options *o);

/* The current time of the calling thread's runtime clock, or of
 * CLOCK_MONOTONIC outside a runtime.  Not a checkpoint. */
NEST_API nest_time nest_now(void);

/* Mock clock only: moves time forward by d >= 0 and cancels the scopes whose
 * deadlines have passed (their tasks run at the next scheduling pass).  Not a
 * checkpoint.  Returns -EINVAL if the runtime does not use the mock clock or
 * d < 0.  Must be called from a task. */
NEST_API int nest_clock_jump(nest_time d);

/* Mock clock only: changes the autojump threshold (see nest_run_options).
 * Returns -EINVAL without a mock clock.  Must be called from a task. */
NEST_API int nest_clock_set_autojump(nest_time threshold);

/* Blocks until every other task is blocked and no I/O is ready, i.e. the
 * program would otherwise sleep; useful in tests to reach a quiet point
 * without guessing delays.  When several tasks wait here, they are woken one
 * per quiet point, in the order they arrived.  A quiet point wakes these
 * waiters before the mock clock autojumps.
 *
 * A checkpoint.  Returns 0, or -ECANCELED.  Must be called from a task. */
NEST_API int nest_wait_all_tasks_blocked(void);

NEST_END_DECLS

#endif
