/*
 * nest/signal.h - receiving POSIX signals as a stream, and the Ctrl-C rule
 * (Trio's open_signal_receiver and KeyboardInterrupt handling).
 *
 * A receiver catches a set of signals while it is open: each arrival is
 * queued to it (as one byte on a private pipe, written by one process-wide
 * handler, async-signal-safe), and nest_signal_receive() returns them one
 * at a time as signal numbers.  Every open receiver whose set holds the
 * signal gets it.  Closing the last receiver of a signal restores the
 * disposition that was in place before the first one opened.
 *
 * Arrivals are not counted exactly: if 4096 arrivals are waiting to be
 * received, further ones are dropped (POSIX coalesces pending signals
 * anyway).  A signal that arrives while no receiver for it is open gets
 * its previous disposition.
 *
 * Ctrl-C.  Unless nest_run_options.no_ctrl_c is set, nest_run installs a
 * SIGINT handler for the run (only when SIGINT has its default disposition
 * and no other runtime of the process has done so).  While no receiver for
 * SIGINT is open, the first SIGINT cancels the whole run: every task
 * unwinds through its normal cancellation path (shielded cleanup runs), and
 * nest_run returns NEST_EINTERRUPTED.  A second SIGINT before the run has
 * ended kills the process at once (default disposition, re-raised).  An
 * open SIGINT receiver takes precedence: it receives Ctrl-C instead.
 */
#ifndef NEST_SIGNAL_H
#define NEST_SIGNAL_H

#include <stdint.h>

#include "common.h"

NEST_BEGIN_DECLS

/* A signal receiver.  Caller-allocated; fields are private. */
typedef struct nest_signal_rx {
    int rfd, wfd; /* the pipe the handler writes to */
    int slot;     /* index in the process-wide table; -1: closed */
    uint64_t set; /* the signals it receives: NEST_SIG(s) bits */
} nest_signal_rx;

/* The bit of signal s (1 .. 64) in a set of signals, e.g.
 * NEST_SIG(SIGINT) | NEST_SIG(SIGTERM).  (A bit set rather than sigset_t
 * keeps this header valid in strict ISO C.) */
#define NEST_SIG(s) ((uint64_t)1 << ((s)-1))

/* Starts catching the signals in set (NEST_SIG bits; not SIGKILL or
 * SIGSTOP) into rx.  Not a checkpoint.  Returns 0; -EINVAL for an empty set or a
 * signal that cannot be caught; -EMFILE/-ENFILE when no pipe can be made;
 * -EBUSY if 64 receivers are open in the process.  Must be called from a
 * task; rx must be closed by the same runtime before nest_run returns. */
NEST_API int nest_signal_open(nest_signal_rx *rx, uint64_t set);

/* Waits for the next signal caught by rx and returns its number (> 0).
 * A checkpoint: -ECANCELED if cancelled (at once in a cancelled scope);
 * NEST_ECLOSED if rx is closed meanwhile.  At most one task may wait on a
 * receiver at a time (-EBUSY otherwise). */
NEST_API int nest_signal_receive(nest_signal_rx *rx);

/* Stops catching: signals not yet received are dropped, and each signal
 * no other receiver holds gets back its disposition from before.  Never
 * blocks; a task waiting in nest_signal_receive() wakes with NEST_ECLOSED.
 * Closing a closed receiver does nothing. */
NEST_API void nest_signal_close(nest_signal_rx *rx);

NEST_END_DECLS

#endif
