/*
 * nest/inspect.h - seeing inside a running program: what each task is
 * blocked on, the task tree dump, runtime statistics, slow steps.
 *
 * Every blocked task records what it waits for (a sleep and its deadline,
 * an fd and a direction, a parking lot and its name, a nursery it closes,
 * a task it starts or waits for) and since when.  nest_dump() writes the
 * whole program as a tree: from the run down, every cancel scope and
 * nursery with where it was entered, its deadline and cancel state, and
 * every task with its name, id, spawn site, state and what it waits for:
 *
 *     nest: task tree at 2.000s into the run: 3 tasks, 0 runnable, 3 blocked
 *     run (nest_run)
 *     `- task #1 "main": blocked 2.000s in nest_nursery_close: 2 children left (nursery at app.c:40)
 *        `- nursery at app.c:40, 2 children
 *           |- task #2 "fetch" spawned at app.c:41: blocked 2.000s waiting for fd 7 to be readable
 *           |  `- scope at app.c:18: deadline +1.000s
 *           `- task #3 "tick" spawned at app.c:42: blocked 0.500s sleeping until +0.500s
 *
 * The same tree is printed when nest_run() detects a deadlock, and on a
 * signal of the user's choice (nest_dump_on_signal()).  Times are on the
 * runtime's clock (virtual with the mock clock); "blocked for" is measured
 * from the runtime's last clock reading before the task blocked, which is
 * at most one scheduler poll (64 task steps) old.
 *
 * Statistics (nest_stats()) are plain counters kept all the time; they cost
 * a few increments per scheduling pass and per blocking call.
 *
 * Thread-safety: everything here reads the calling thread's runtime and
 * must be called from one of its tasks (or from an instrument callback),
 * except nest_dump(), which also reports "no runtime" outside one.
 */
#ifndef NEST_INSPECT_H
#define NEST_INSPECT_H

#include <stdio.h>

#include "common.h"

NEST_BEGIN_DECLS

/* A task's state. */
enum nest_task_state {
    NEST_TASK_NEW = 0,      /* spawned, not yet in the run queue */
    NEST_TASK_RUNNABLE = 1, /* in the run queue (spawned tasks start here) */
    NEST_TASK_RUNNING = 2,  /* the calling task */
    NEST_TASK_BLOCKED = 3,  /* waiting; see nest_task_block() */
    NEST_TASK_DONE = 4      /* returned (only reachable through a handle) */
};

/* What a blocked task waits for. */
enum nest_block_kind {
    NEST_BLOCK_NONE = 0,    /* not blocked */
    NEST_BLOCK_SLEEP = 1,   /* nest_sleep*(); deadline: when it wakes */
    NEST_BLOCK_READ = 2,    /* nest_wait_readable(fd) */
    NEST_BLOCK_WRITE = 3,   /* nest_wait_writable(fd) */
    NEST_BLOCK_PARK = 4,    /* a parking lot: a lock, channel, event, ... */
    NEST_BLOCK_NURSERY = 5, /* nest_nursery_close(): children still running */
    NEST_BLOCK_START = 6,   /* nest_start(): the child has not started yet */
    NEST_BLOCK_TASK = 7,    /* nest_task_wait() */
    NEST_BLOCK_IDLE = 8,    /* nest_wait_all_tasks_blocked() */
    NEST_BLOCK_OTHER = 9,   /* an internal wait without a description */
    NEST_BLOCK_THREAD = 10, /* nest_to_thread(): a worker thread runs the job;
                               object: the job */
    NEST_BLOCK_PROCESS = 11 /* waiting for a child process to exit;
                               fd: its pid */
};
#define NEST_BLOCK_KINDS 12

/* What nest_task_block() reports. */
typedef struct nest_block_info {
    int kind;                /* enum nest_block_kind */
    nest_time since;         /* runtime clock when it blocked */
    nest_time deadline;      /* SLEEP: when it wakes by itself (the earliest
                                deadline around it); NEST_FOREVER otherwise */
    int fd;                  /* READ, WRITE: the fd; PROCESS: the pid; else -1 */
    const char *lot;         /* PARK: the first lot's name; else NULL */
    unsigned nlots;          /* PARK: how many lots (a group); else 0 */
    const void *object;      /* PARK: the first lot; NURSERY: the nursery;
                                START, TASK: the other task; else NULL */
} nest_block_info;

/* t's state (enum nest_task_state).  Not a checkpoint. */
NEST_API int nest_task_state(const nest_task *t);

/* Fills *out with what t is blocked on and returns out->kind
 * (NEST_BLOCK_NONE, with the other fields cleared, when t is not blocked).
 * Not a checkpoint.  Must be called from a task of t's runtime. */
NEST_API int nest_task_block(const nest_task *t, nest_block_info *out);

/* Writes one line (no newline) saying what t is doing, e.g. "blocked 1.500s
 * sleeping until +0.500s" or "runnable", into buf (NUL-terminated, cut to
 * len).  Returns the length it wanted, as snprintf.  Not a checkpoint. */
NEST_API int nest_task_describe(const nest_task *t, char *buf, size_t len);

/* Short names: "runnable", ...; "sleep", "read", "park", ... */
NEST_API const char *nest_task_state_name(int state);
NEST_API const char *nest_block_kind_name(int kind);

/* Writes the task tree of the calling thread's runtime to out (see the file
 * comment): every scope and nursery from the run down, every task that has
 * not returned.  Outside a runtime it writes one line saying so.  Not a
 * checkpoint; never blocks.  Cost: O(tasks + scopes). */
NEST_API void nest_dump(FILE *out);

/* From now until the run ends, signal signo (e.g. SIGUSR1) makes this
 * runtime write its task tree to out (NULL: stderr), then carry on.  The
 * handler only sets a flag and wakes the loop; the dump is written by the
 * scheduler between task steps, so it never sees a half-made change.  A
 * program stuck in a task that never reaches a checkpoint will not dump
 * (see nest_slow_steps()).  signo 0 turns it off.  Returns 0; -EINVAL for
 * a signal that cannot be caught; -EBUSY if another runtime of the
 * process has taken signo; -ENOMEM.  The previous disposition of the
 * signal is restored when it is turned off or the run ends.  Must be
 * called from a task. */
NEST_API int nest_dump_on_signal(int signo, FILE *out);

/* Runtime statistics: counters since the run began, and gauges now. */
typedef struct nest_runtime_stats {
    nest_time uptime;          /* runtime clock since nest_run() began */
    uint64_t tasks_spawned;    /* every task so far, the root included */
    uint64_t tasks_living;     /* spawned and not yet returned */
    uint64_t tasks_runnable;   /* in the run queue */
    uint64_t tasks_blocked;    /* blocked, of every kind (see
                                  nest_stats_blocked() for each kind) */
    uint64_t passes;           /* scheduling passes begun */
    uint64_t steps;            /* task steps: switches into a task */
    uint64_t polls;            /* calls into the event loop (libev) */
    uint64_t fd_waits;         /* fd waits that blocked, in total */
    uint64_t fd_waiting;       /* tasks waiting on an fd now */
    nest_time next_deadline;   /* time until the earliest deadline of any
                                  scope (<= 0: due); NEST_FOREVER if none */
    nest_time loop_lag;        /* how late the loop woke for its last
                                  deadline, relative to its timer (real clock) */
    nest_time loop_lag_max;    /* the largest such lateness so far */
    uint64_t slow_steps;       /* steps reported by nest_slow_steps() */
    uint64_t seed;             /* the scheduling seed in effect (0: FIFO) */
} nest_runtime_stats;

/* Fills *out for the calling thread's runtime.  O(1); not a checkpoint.
 * Returns 0, or -EINVAL outside a runtime. */
NEST_API int nest_stats(nest_runtime_stats *out);

/* Counts the blocked tasks by what they wait for: counts[kind] for each
 * enum nest_block_kind (e.g. how many wait on parking lots, on fds, in
 * nursery closes).  Walks every task: O(tasks), so meant for a monitoring
 * endpoint or a test, not for every request.  Returns 0, or -EINVAL
 * outside a runtime (counts are then zero). */
NEST_API int nest_stats_blocked(uint64_t counts[NEST_BLOCK_KINDS]);

/* Reports every task step that runs longer than threshold of real time
 * without reaching a checkpoint (the commonest performance bug of
 * cooperative code: a blocking call or a long computation inside a task):
 * one line on out (NULL: stderr) naming the task, its spawn site and how
 * long the step ran.  threshold 0 turns it off.  Built on an instrument
 * (nest/instrument.h), so it reads the clock twice per step while on and
 * costs nothing while off.  Returns 0, -EINVAL for a negative threshold,
 * -ENOMEM.  Must be called from a task.  The environment variable
 * NEST_SLOW_STEP_MS=<milliseconds> turns it on (to stderr) for every run. */
NEST_API int nest_slow_steps(nest_time threshold, FILE *out);

NEST_END_DECLS

#endif
