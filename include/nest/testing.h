/*
 * nest/testing.h - helpers for testing code written with nest.
 *
 * For the test suites of programs and libraries built on nest (Trio's
 * trio.testing): check that a call is (or is not) a checkpoint, and force
 * an order between tasks with a sequencer.  Together with the mock clock
 * (nest/runtime.h), nest_wait_all_tasks_blocked() and randomised scheduling
 * (nest_run_options.seed, NEST_SEED) they make concurrent tests exact.
 *
 * The conformance check for stream implementations is nest_stream_check()
 * in nest/stream_check.h.
 *
 * Everything here must be called from a task.
 */
#ifndef NEST_TESTING_H
#define NEST_TESTING_H

#include "common.h"
#include "lowlevel.h"

NEST_BEGIN_DECLS

/* Calls fn(arg) in the calling task, stores its return value in *rc (rc may
 * be NULL) and returns how many times the calling task reached a
 * scheduling point inside it (yielded to the scheduler or blocked, whether
 * or not another task then ran).  So:
 *
 *     CHECK(nest_testing_yields(op, &x, &rc) > 0);   // op checkpoints
 *     CHECK(nest_testing_yields(op, &x, &rc) == 0);  // op never yields
 *
 * A checkpoint in a cancelled scope returns -ECANCELED without yielding,
 * so call this outside cancelled scopes; nest_testing_cancels() checks the
 * other half.  Spawns nothing; costs an instrument for the duration. */
NEST_API int nest_testing_yields(nest_fn fn, void *arg, int *rc);

/* Calls fn(arg) inside a freshly entered cancel scope that is already
 * cancelled, and returns 1 if it returned -ECANCELED (so it honours
 * cancellation, as a checkpoint must), 0 otherwise.  fn runs for real:
 * whatever it does before its first checkpoint happens. */
NEST_API int nest_testing_cancels(nest_fn fn, void *arg);

/* Whether fn is a full checkpoint in both senses: it yields when not
 * cancelled, and fails with -ECANCELED when cancelled.  Calls fn twice. */
NEST_API int nest_testing_checkpoints(nest_fn fn, void *arg);

/* A sequencer forces an order between sections of code in different tasks
 * (Trio's Sequencer): nest_sequencer_enter(&seq, i) blocks until the
 * sections 0 .. i-1 have been entered and exited, in that order:
 *
 *     task A:  nest_sequencer_enter(&seq, 0); ...; nest_sequencer_exit(&seq, 0);
 *              nest_sequencer_enter(&seq, 2); ...; nest_sequencer_exit(&seq, 2);
 *     task B:  nest_sequencer_enter(&seq, 1); ...; nest_sequencer_exit(&seq, 1);
 *
 * Each position is used once.  If a task is cancelled while it waits its
 * turn, the sequence can no longer complete: the sequencer breaks, and
 * every waiter and every later enter returns NEST_EBROKEN. */
typedef struct nest_sequencer {
    nest_parking_lot lot; /* tasks waiting for their turn; data = position */
    int next;             /* the position whose turn it is */
    int inside;           /* a section is between enter and exit */
    int broken;
} nest_sequencer;

/* Initialises seq: position 0 goes first.  Never fails. */
NEST_API void nest_sequencer_init(nest_sequencer *seq);

/* Waits until position is next, then enters it.  A checkpoint.  Returns
 * 0; -ECANCELED (the sequencer then breaks); NEST_EBROKEN; -EINVAL if
 * position is negative or was already entered or is being waited for. */
NEST_API int nest_sequencer_enter(nest_sequencer *seq, int position);

/* Leaves position (which must be the one entered): position + 1 may go.
 * Not a checkpoint. */
NEST_API void nest_sequencer_exit(nest_sequencer *seq, int position);

NEST_END_DECLS

#endif
