/*
 * lib/core.h - the runtime's internal data structures, shared by the core
 * files: task.c (tasks, switching), runtime.c (nest_run, the scheduler loop),
 * scope.c (the scope tree and cancellation), deadline.c (the deadline heap),
 * nursery.c, clock.c, time.c (checkpoints and sleeping), fd.c and evloop.c.
 *
 * The model:
 *  - A runtime (struct nest__rt) belongs to one thread: nest__rt_cur.
 *  - Every task is in exactly one state.  NEW: spawned, no stack yet.
 *    RUNNABLE: in the run queue.  RUNNING: rt->current.  BLOCKED: parked,
 *    waiting for nest__wake().  DONE: returned; kept only while a handle to
 *    it may be used.
 *  - All cancel scopes form one tree through nest_scope.parent: a task's
 *    scopes form a chain ending at its root scope (task->root), whose parent
 *    is the scope of the nursery it belongs to (or, during nest_start(), the
 *    starter's innermost scope).  The root task's root scope hangs below
 *    rt->run_scope.  task->cur is the task's innermost scope; a scope s is
 *    where its owner currently is iff s->owner->cur == s.
 *  - A BLOCKED task with abort_fn set may be woken by cancellation: the
 *    canceller calls abort_fn, which unhooks the task from whatever it waits
 *    on and returns 0, and then wakes it with -ECANCELED.  abort_fn may
 *    instead return non-zero when the wait cannot be undone (the task stays
 *    blocked until someone wakes it with the real result, and abort_fn is
 *    not called again).  abort_fn NULL: not abortable (nursery close,
 *    nest_start's wait, a plain yield).
 *  - A BLOCKED task records what it waits for (block, and the object in
 *    wake_ptr) and since when (block_since, the runtime clock's last
 *    reading: no clock is read to park), for the task
 *    tree dump, statistics and traces (lib/inspect.c).  Nothing counts
 *    blocked tasks: their number is living - runnable - running, and the
 *    count per kind is found by walking the tree (nest__each_task).
 *  - Instrumentation (lib/instrument.c) costs one branch on rt->instr at
 *    each hook site; every hook site tests it and calls out of line.
 */
#ifndef NEST_LIB_CORE_H
#define NEST_LIB_CORE_H

#include <stdio.h>

#include "nest.h"
#include "nest/inspect.h"
#include "nest/instrument.h"
#include "nest/local.h"
#include "nest/testing.h"
#include "nest/trace.h"

#include "alloc.h"
#include "ctx.h"
#include "stack.h"

/* nest_scope.flags */
enum {
    NEST__SCOPE_ENTERED = 1u << 0,  /* between enter and exit */
    NEST__SCOPE_CANCELLED = 1u << 1, /* cancel() called or deadline expired */
    NEST__SCOPE_EXPIRED = 1u << 2,  /* the cancellation came from the deadline */
    NEST__SCOPE_CAUGHT = 1u << 3,   /* exit absorbed a cancellation */
    NEST__SCOPE_SHIELD = 1u << 4,   /* ignores enclosing cancellation */
    NEST__SCOPE_FAIL = 1u << 5,     /* fail-after: expiry exits as -ETIMEDOUT */
    NEST__SCOPE_INHEAP = 1u << 6,   /* in the deadline heap */
    NEST__SCOPE_SYSTEM = 1u << 7,   /* a task root or run scope */
    NEST__SCOPE_NURSERY = 1u << 8,  /* the scope of a nursery */
};
#define NEST__SCOPE_MAGIC 0x6e657374u   /* "nest" */
#define NEST__NURSERY_MAGIC 0x6e757273u /* "nurs" */

enum nest__task_state { NEST__NEW, NEST__RUNNABLE, NEST__RUNNING, NEST__BLOCKED, NEST__DONE };

/* nest_task.flags */
enum {
    NEST__TASK_RETAINED = 1u << 0,  /* a handle exists: keep until nursery close */
    NEST__TASK_STARTING = 1u << 1,  /* launched by nest_start, not started yet */
    NEST__TASK_STARTED = 1u << 2,   /* nest_started() was called */
    NEST__TASK_ROOT = 1u << 3,      /* the root task of nest_run */
};

/* What a blocked task waits for: nest_task.block, with the object in
 * nest_task.wake_ptr.  The public names are enum nest_block_kind in
 * nest/inspect.h, with the same values. */
enum nest__block {
    NEST__BLOCK_NONE,    /* not blocked */
    NEST__BLOCK_SLEEP,   /* wake_ptr: the sleep's scope (deadline), or NULL: forever */
    NEST__BLOCK_READ,    /* wake_ptr: (intptr_t)fd */
    NEST__BLOCK_WRITE,   /* wake_ptr: (intptr_t)fd */
    NEST__BLOCK_PARK,    /* wake_ptr: the first nest_waiter of the group */
    NEST__BLOCK_NURSERY, /* wake_ptr: the nursery being closed */
    NEST__BLOCK_START,   /* wake_ptr: the task being started */
    NEST__BLOCK_TASK,    /* wake_ptr: the task waited for (nest_task_wait) */
    NEST__BLOCK_IDLE,    /* nest_wait_all_tasks_blocked() */
    NEST__BLOCK_OTHER,   /* an unannotated nest__park() */
    NEST__BLOCK_THREAD,  /* wake_ptr: the nest_to_thread job (lib/thread.c) */
    NEST__BLOCK_PROCESS, /* wake_ptr: (intptr_t)pid of the child process */
    NEST__BLOCK_KINDS
};

struct nest__rt;
struct nest__locals;   /* lib/tasklocal.c */
struct nest_instrument;

/* nest__exit_hook (nest/lowlevel.h): something a task holds that must learn
 * when the task exits (e.g. a lock, which becomes broken).  Linked into
 * task->exit_hooks while held; run, in task_done, in reverse order of
 * linking. */
void nest__exit_hook_add(struct nest_task *t, nest__exit_hook *h);
void nest__exit_hook_remove(struct nest_task *t, nest__exit_hook *h);

struct nest_task {
    nest__ctx ctx;               /* saved machine state while not running */
    nest__stack *stack;          /* NULL until the task first runs */
    struct nest_task *next;      /* run queue, or the pool's free list */
    nest_fn fn;
    void *arg;
    nest_scope root;             /* the task's own scope (nest_task_cancel) */
    nest_scope *cur;             /* innermost entered scope */
    nest_nursery *nursery;       /* owning nursery; NULL for the root task */
    const char *name;
    const char *file;            /* spawn site */
    int line;
    int state;                   /* enum nest__task_state */
    unsigned flags;              /* NEST__TASK_* */
    int rc;                      /* return value once DONE */
    int wake_rc;                 /* what the blocking call returns */
    size_t stack_size;           /* requested; 0 = runtime default */
    uint64_t id;
    int (*abort_fn)(struct nest_task *t); /* see the file comment */
    struct nest_task *waiters;   /* tasks in nest_task_wait() on this one */
    struct nest_task *wait_next; /* link in some waiter list */
    struct nest_task *retained_next; /* link in nursery->retained */
    struct nest_task *starter;   /* task blocked in nest_start() on us */
    void *wake_ptr;              /* nest_started()'s value; while BLOCKED,
                                    what we wait on (see enum nest__block) */
    int wake_val;                /* extra result of a wait (task rc, fd) */
    int block;                   /* while BLOCKED: enum nest__block */
    nest__exit_hook *exit_hooks; /* see nest__exit_hook */
    nest_time block_since;       /* while BLOCKED: since when (runtime clock) */
    struct nest__locals *locals; /* task-local values (lib/tasklocal.c); set
                                    by the spawner, not nest__task_new */
};

struct nest__loop; /* evloop.c's private state */

struct nest__rt {
    nest_task *current;          /* the running task, NULL on the main stack */
    nest__ctx main;              /* the scheduler's context (thread stack) */
    nest_task *runq_head;        /* FIFO of RUNNABLE (and NEW) tasks */
    nest_task *runq_tail;
    size_t nrunq;
    /* Read on every switch or pass, so kept on the run queue's cache line:
     * the instrument list (NULL: hooks off), the pass counter of
     * nest_stats() and the scheduling seed (0: FIFO).  Placed between
     * nrunq and batch on purpose: when the two were adjacent, gcc merged
     * their updates into one 16-byte load that missed store forwarding at
     * every pass start (+7% on bench_switch). */
    struct nest_instrument *instr;
    uint64_t npasses;
    size_t batch;                /* tasks left in the current pass */
    unsigned steps;              /* task steps since the last poll */
    uint64_t seed;
    nest_task *zombie;           /* finished task whose stack awaits release */
    nest__stack_pool stacks;
    nest_task *free_tasks;       /* recycled control blocks */
    void *task_chunks;           /* every chunk of control blocks */
    size_t default_stack;
    /* Time. */
    int clock_kind;
    nest_time now;               /* last clock reading */
    nest_time autojump;
    nest_scope *heap;            /* deadline pairing heap root */
    uint64_t heap_seq;           /* last nest_scope.hseq handed out */
    size_t ncancelled;           /* entered scopes that are cancelled: when
                                    0, no checkpoint can be cancelled and
                                    nest__cancelled_at need not walk */
    nest_time next_trim;         /* real time of the next stack trim */
    /* The whole run. */
    nest_scope run_scope;        /* cancelled on deadlock */
    nest_task *root;
    int root_rc;
    int deadlocked;
    int guest_ending;            /* guest mode: nest__rt_root_done was called */
    nest_time guest_quiet_since; /* guest mode, mock clock: real time since
                                    when no guest task has run (0: it ran) */
    void (*guest_done)(void *ud, int rc); /* guest mode (lib/guest.c) */
    void *guest_ud;
    int root_done;
    uint64_t next_id;
    size_t ntasks;               /* live control blocks */
    /* I/O. */
    struct nest__loop *loop;
    size_t nio;                  /* tasks waiting on fds */
    struct nest__proc_rec *procs; /* records of live (spawned, unclosed)
                                     processes (lib/process.c) */
    /* nest_wait_all_tasks_blocked() waiters, FIFO. */
    nest_task *idle_head;
    nest_task *idle_tail;
    /* Inspection (lib/inspect.c, stats.c, instrument.c); see also instr. */
    nest_time t0;                /* the clock when the run began */
    uint64_t nfinished;          /* tasks that returned (next_id - this: living) */
    uint64_t nsteps;             /* task steps, up to the last nest__run_main */
    uint64_t npolls;             /* calls into libev */
    uint64_t nfdwaits;           /* fd waits that blocked */
    nest_time lag_last;          /* how late the last timed poll woke */
    nest_time lag_max;
    uint64_t nslow;              /* slow steps reported */
    FILE *report;                /* deadlock and seed reports; NULL: stderr */
    int quiet;                   /* report nothing */
    _Atomic int dump_req;        /* set by the dump signal's handler */
    FILE *dump_out;              /* where a signalled dump goes */
    int dump_signo;              /* the dump signal, 0 if none */
    /* Other threads (lib/thread.c). */
    _Atomic int foreign_req;     /* set by a worker thread: call
                                    nest__foreign_drain at the next pass */
    size_t nforeign;             /* outstanding thread jobs: each will wake
                                    the runtime, so no deadlock meanwhile */
    struct pool *tpool;          /* the worker pool; NULL until first used */
    int thread_limit;            /* nest_run_options.thread_limit */
    struct nest_token *token;    /* for other threads; NULL until asked for */
    /* Ctrl-C (lib/signal.c). */
    _Atomic int interrupt_req;   /* SIGINT arrived (set by the handler) */
    int interrupted;             /* the run was cancelled for it */
    int ctrl_c;                  /* this runtime owns SIGINT */
    size_t nsystem;              /* live system tasks (token runners): tasks
                                    in no nursery, below run_scope */
    /* Randomised scheduling (seed != 0). */
    nest_instrument seed_ins;    /* empty, registered to select the hooked
                                    paths, which alone shuffle (task.c) */
    uint64_t rng;                /* PRNG state */
    nest_task **shuffle;         /* scratch array for one pass */
    size_t nshuffle;             /* its capacity */
};

/* The calling thread's runtime.  initial-exec: the library is built as
 * position-independent code, whose default TLS model calls __tls_get_addr on
 * every access, and this is read on every nest call.  initial-exec is valid
 * for a library loaded at program start or linked statically (a dlopen()ed
 * copy draws on glibc's static TLS reserve, which a pointer fits in). */
#if defined(__GNUC__) || defined(__clang__)
#define NEST__TLS_MODEL __attribute__((tls_model("initial-exec")))
#else
#define NEST__TLS_MODEL
#endif
extern _Thread_local struct nest__rt *nest__rt_cur NEST__TLS_MODEL;

/* Aborts with "nest: <message>".  For programming errors only. */
void nest__panic(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* process.c: aborts, naming the rule and one process, if rt->procs is not
 * empty (a spawned process was never closed).  First thing the end of a
 * run does. */
void nest__process_check_closed(struct nest__rt *rt);

/* The running task; aborts naming `what` when called outside a task. */
nest_task *nest__task_self(const char *what);

/* task.c: scheduling primitives. */
void nest__schedule(struct nest__rt *rt, nest_task *t); /* append to run queue */
/* Queues a task just created by nest_spawn/nest_start (or the root task):
 * the spawned and scheduled hooks, then nest__schedule, with one test. */
void nest__schedule_new(struct nest__rt *rt, nest_task *t);
/* Blocks self until nest__wake(); records what it waits for (kind, obj). */
int nest__park_on(struct nest__rt *rt, nest_task *self, int (*abort_fn)(nest_task *), int kind,
                  const void *obj);
static inline int nest__park(struct nest__rt *rt, nest_task *self, int (*abort_fn)(nest_task *)) {
    return nest__park_on(rt, self, abort_fn, NEST__BLOCK_OTHER, NULL);
}
void nest__wake(struct nest__rt *rt, nest_task *t, int rc);
int nest__yield(struct nest__rt *rt, nest_task *self);
nest_task *nest__task_new(struct nest__rt *rt, nest_fn fn, void *arg, const char *name,
                          const char *file, int line, size_t stack_size);
void nest__task_free(struct nest__rt *rt, nest_task *t);
nest_task *nest__task_new_system(struct nest__rt *rt, nest_fn fn, void *arg, const char *name);
void nest__task_pool_destroy(struct nest__rt *rt);
void nest__run_main(struct nest__rt *rt); /* scheduler: switch to a task */
int nest__abort_nothing(nest_task *t);    /* abort_fn for plain sleeps */

/* scope.c */
int nest__cancelled_walk(const nest_scope *s); /* effective, walking up */
/* Whether a checkpoint under s is cancelled.  The common case - nothing
 * cancelled anywhere in the runtime - costs one load. */
static inline int nest__cancelled_at(const nest_scope *s) {
    struct nest__rt *rt = nest__rt_cur;
    if (rt && rt->ncancelled == 0) return 0;
    return nest__cancelled_walk(s);
}
int nest__parent_cancelled(const nest_scope *s); /* visible from above s */
void nest__scope_link(nest_scope *s, nest_scope *parent);
void nest__scope_unlink(nest_scope *s);
void nest__scope_cancel(struct nest__rt *rt, nest_scope *s, unsigned why);
void nest__scope_init_system(nest_scope *s, nest_task *owner, const char *file);

/* deadline.c: the pairing heap of scopes with deadlines. */
void nest__deadline_add(struct nest__rt *rt, nest_scope *s);
void nest__deadline_remove(struct nest__rt *rt, nest_scope *s);
nest_time nest__deadline_next(const struct nest__rt *rt);
void nest__deadline_expire(struct nest__rt *rt, nest_time now);

/* clock.c */
nest_time nest__clock_read(struct nest__rt *rt); /* updates rt->now */
nest_time nest__monotonic(void);

/* runtime.c: a run's life, shared by nest_run and guest mode (guest.c). */
int nest__rt_create(nest_fn fn, void *arg, const nest_run_options *o, struct nest__rt **out);
void nest__rt_root_done(struct nest__rt *rt);
/* Reports a deadlock and cancels the run (the second time: aborts). */
void nest__rt_deadlock(struct nest__rt *rt);
int nest__rt_destroy(struct nest__rt *rt);
int nest__rt_guest_slice(struct nest__rt *rt);
nest_time nest__rt_guest_plan(struct nest__rt *rt);

/* nursery.c */
void nest__nursery_child_done(struct nest__rt *rt, nest_task *t);

/* evloop.c: the only file that includes ev.h. */
int nest__loop_open(struct nest__rt *rt, void *host_loop);
void nest__loop_close(struct nest__rt *rt);
/* timeout < 0: block until an event; 0: do not block; > 0: at most that
 * many real nanoseconds. */
void nest__loop_poll(struct nest__rt *rt, nest_time timeout);
/* mode: how much nest knows about the fd (see evloop.c): PLAIN, any fd;
 * STABLE, a nest stream's fd, closed only after nest__loop_closing, whose
 * watcher is reused from wait to wait; FRESH, the same but the stream's
 * first wait in that direction, which sets the watcher up afresh. */
enum { NEST__WATCH_PLAIN, NEST__WATCH_STABLE, NEST__WATCH_FRESH };
int nest__loop_watch(struct nest__rt *rt, int fd, int writable, nest_task *t, int mode);
/* fd.c: the fd wait behind nest_wait_readable/writable, parked as block
 * kind `kind` on obj (what dumps show, e.g. NEST__BLOCK_PROCESS and a
 * pid); `what` names the caller in the outside-a-task abort.  A
 * checkpoint; returns 0, -ECANCELED, NEST_ECLOSED, -EBADF, -EBUSY, -ENOMEM. */
int nest__wait_fd_as(int fd, int writable, int mode, int kind, const void *obj,
                     const char *what);
void nest__loop_unwatch(struct nest__rt *rt, int fd, int writable);
void nest__loop_closing(struct nest__rt *rt, int fd);
nest_task *nest__loop_waiter(struct nest__rt *rt, int fd, int writable);
/* How many times the calling runtime has started an fd watcher (for tests:
 * a parked watcher that is reused is not started again). */
uint64_t nest__loop_watch_starts(void);
/* Makes a poll blocked in libev return soon.  Async-signal-safe; callable
 * from any thread while the loop exists, once wakeups are enabled. */
int nest__loop_wakeup_enable(struct nest__rt *rt);
void nest__loop_wakeup(struct nest__rt *rt);
/* on: a wakeup is expected (a thread job is outstanding), so a blocking
 * poll must wait for it (ev_ref); off: it no longer keeps the loop alive. */
void nest__loop_wakeup_hold(struct nest__rt *rt, int on);

/* Guest mode: watchers on the host's loop drive the runtime (lib/guest.c
 * calls these; evloop.c calls back nest__guest_check/nest__guest_prepare). */
void nest__loop_guest_start(struct nest__rt *rt);
/* Makes the host's loop turn once more without blocking (host code changed
 * the guest: cancelled it, gave it a task). */
void nest__loop_guest_kick(struct nest__rt *rt);
/* Runs the host's loop once (EVRUN_ONCE): the plain-C bridge waits so.
 * Returns 0 when the loop has no active watcher left: nothing will ever
 * happen on it again. */
int nest__loop_run_host_once(struct nest__rt *rt);
/* lib/guest.c, called from evloop.c's guest watchers. */
int nest__guest_check(struct nest__rt *rt); /* 1: the run ended, rt is gone */
nest_time nest__guest_prepare(struct nest__rt *rt);

/* lib/thread.c */
void nest__foreign_drain(struct nest__rt *rt); /* rt->foreign_req was set */
void nest__thread_close(struct nest__rt *rt);  /* joins every worker */
/* At the end of the run: refuses further token calls (NEST_ECLOSED) and
 * drops the runtime's reference; system tasks still running are then
 * cancelled and run to completion by nest_run. */
void nest__token_close(struct nest__rt *rt);
/* lib/signal.c: the Ctrl-C rule (nest/signal.h). */
void nest__ctrl_c_install(struct nest__rt *rt);
void nest__ctrl_c_release(struct nest__rt *rt);
void nest__ctrl_c_check(struct nest__rt *rt); /* from nest__foreign_drain */

/* Hooks (lib/instrument.c): called only when rt->instr is not NULL. */
#if defined(__GNUC__) || defined(__clang__)
#define NEST__UNLIKELY(x) __builtin_expect(!!(x), 0)
/* For slow paths next to hot ones: kept out of line so that the hot
 * function stays small enough to be inlined where it is called. */
#define NEST__COLD __attribute__((noinline, cold))
#define NEST__INLINE inline __attribute__((always_inline))
#else
#define NEST__UNLIKELY(x) (x)
#define NEST__COLD
#define NEST__INLINE inline
#endif
void nest__hook_spawned(struct nest__rt *rt, nest_task *t);
void nest__hook_scheduled(struct nest__rt *rt, nest_task *t);
void nest__hook_step_begin(struct nest__rt *rt, nest_task *t);
void nest__hook_step_end(struct nest__rt *rt, nest_task *t);
void nest__hook_exited(struct nest__rt *rt, nest_task *t); /* task.c calls it */
void nest__hook_io_wait(struct nest__rt *rt, nest_time timeout, int after);
void nest__hook_cancelled(struct nest__rt *rt, nest_scope *s);
void nest__hook_nursery(struct nest__rt *rt, nest_nursery *n, int rc, int closed);
void nest__hook_run(struct nest__rt *rt, int after); /* after: also unregisters all */

/* lib/inspect.c */
void nest__each_task(struct nest__rt *rt, void (*fn)(nest_task *t, void *arg), void *arg);
size_t nest__nblocked(const struct nest__rt *rt);
void nest__dump_rt(struct nest__rt *rt, FILE *out, const char *header);
void nest__dump_signalled(struct nest__rt *rt);
void nest__dump_signal_release(struct nest__rt *rt);
/* lib/tasklocal.c.  A child shares its spawner's values (copy on write):
 * spawning costs one load and one branch when no task-local is set. */
void nest__locals_ref(struct nest__locals *l);
void nest__locals_release(struct nest__rt *rt, nest_task *t);
static inline struct nest__locals *nest__locals_inherit(nest_task *spawner) {
    struct nest__locals *l = spawner->locals;
    if (l) nest__locals_ref(l);
    return l;
}
/* lib/trace.c, lib/stats.c: NEST_TRACE=path and NEST_SLOW_STEP_MS=ms in the
 * environment turn on tracing and the slow-step report for the whole run. */
void nest__trace_from_env(struct nest__rt *rt);
void nest__slow_from_env(struct nest__rt *rt);
/* lib/task.c: randomised order within a pass (rt->seed != 0). */
void nest__shuffle_pass(struct nest__rt *rt);

#endif
