/*
 * nest/trace.h - recording a run as a Chrome trace (Trace Event JSON).
 *
 * Open the file in https://ui.perfetto.dev or chrome://tracing to see the
 * run as a timeline: one track per task (named "#id name"), a slice for
 * each step the task ran and for each time it was blocked, named after what
 * it waited for ("sleep", "read fd 5", "lock", "nursery close", ...);
 * arrows from each spawn to the child's first step; nurseries as spans
 * (async slices "nursery file:line" on their opener's track); instant
 * events for cancellations ("cancel scope file:line", "cancel nursery
 * file:line", "cancel task", "cancel run (deadlock)"), expired deadlines
 * ("deadline scope file:line") and task results ("exit", "cancelled" for
 * -ECANCELED, "error <NAME>" for other negative codes, with the code in
 * args); the scheduler's waits for I/O on track 0.  Timestamps are real time (microseconds since the trace began),
 * even under the mock clock, whose time is recorded as an argument.
 *
 *     nest_trace_start(fopen("run.json", "w"));
 *     ...
 *     nest_trace_stop();              // or let the run end
 *
 * Or, without changing the program: NEST_TRACE=run.json ./prog traces every
 * run of the process into that file (the last run wins).
 *
 * Each event is written as it happens (about 100 bytes), so a trace costs
 * a clock read and a formatted write per event; the file is valid JSON once
 * the trace stops.  Built on nest/instrument.h.
 */
#ifndef NEST_TRACE_H
#define NEST_TRACE_H

#include <stdio.h>

#include "common.h"

NEST_BEGIN_DECLS

/* Starts tracing the calling thread's runtime into out, which stays the
 * caller's (nest_trace_stop() flushes but does not close it).  Returns 0;
 * -EBUSY if this runtime is already tracing; -EINVAL outside a runtime;
 * -ENOMEM.  Not a checkpoint. */
NEST_API int nest_trace_start(FILE *out);

/* Ends the trace: writes what closes the JSON and flushes.  Tasks alive
 * now are marked as such.  Called by itself when the run ends.  Returns
 * 0, or -EINVAL if the runtime is not tracing.  Not a checkpoint. */
NEST_API int nest_trace_stop(void);

NEST_END_DECLS

#endif
