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
 */
#ifndef NEST_LIB_CORE_H
#define NEST_LIB_CORE_H

#include "nest.h"

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

struct nest__rt;

/* Something a task holds that must learn when the task exits (e.g. a lock,
 * which becomes broken).  Linked into task->exit_hooks while held; run, in
 * task_done, in reverse order of linking. */
typedef struct nest__exit_hook {
    struct nest__exit_hook *next;
    struct nest__exit_hook *prev;
    void (*fn)(struct nest__exit_hook *h, struct nest_task *t);
} nest__exit_hook;

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
    void *wake_ptr;              /* nest_started()'s value; what we wait on */
    int wake_val;                /* extra result of a wait (task rc, fd) */
    nest__exit_hook *exit_hooks; /* see nest__exit_hook */
};

struct nest__loop; /* evloop.c's private state */

struct nest__rt {
    nest_task *current;          /* the running task, NULL on the main stack */
    nest__ctx main;              /* the scheduler's context (thread stack) */
    nest_task *runq_head;        /* FIFO of RUNNABLE (and NEW) tasks */
    nest_task *runq_tail;
    size_t nrunq;
    size_t batch;                /* tasks left in the current pass */
    unsigned steps;              /* task steps since the last poll */
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
    /* The whole run. */
    nest_scope run_scope;        /* cancelled on deadlock */
    nest_task *root;
    int root_rc;
    int deadlocked;
    int root_done;
    uint64_t next_id;
    uint64_t seed;
    size_t ntasks;               /* live control blocks */
    /* I/O. */
    struct nest__loop *loop;
    size_t nio;                  /* tasks waiting on fds */
    /* nest_wait_all_tasks_blocked() waiters, FIFO. */
    nest_task *idle_head;
    nest_task *idle_tail;
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

/* The running task; aborts naming `what` when called outside a task. */
nest_task *nest__task_self(const char *what);

/* task.c: scheduling primitives. */
void nest__schedule(struct nest__rt *rt, nest_task *t); /* append to run queue */
int nest__park(struct nest__rt *rt, nest_task *self, int (*abort_fn)(nest_task *));
void nest__wake(struct nest__rt *rt, nest_task *t, int rc);
int nest__yield(struct nest__rt *rt, nest_task *self);
nest_task *nest__task_new(struct nest__rt *rt, nest_fn fn, void *arg, const char *name,
                          const char *file, int line, size_t stack_size);
void nest__task_free(struct nest__rt *rt, nest_task *t);
void nest__task_pool_destroy(struct nest__rt *rt);
void nest__run_main(struct nest__rt *rt); /* scheduler: switch to a task */
int nest__abort_nothing(nest_task *t);    /* abort_fn for plain sleeps */

/* scope.c */
int nest__cancelled_at(const nest_scope *s);   /* effective, walking up */
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

/* nursery.c */
void nest__nursery_child_done(struct nest__rt *rt, nest_task *t);

/* evloop.c: the only file that includes ev.h. */
int nest__loop_open(struct nest__rt *rt, void *host_loop);
void nest__loop_close(struct nest__rt *rt);
/* timeout < 0: block until an event; 0: do not block; > 0: at most that
 * many real nanoseconds. */
void nest__loop_poll(struct nest__rt *rt, nest_time timeout);
int nest__loop_watch(struct nest__rt *rt, int fd, int writable, nest_task *t);
void nest__loop_unwatch(struct nest__rt *rt, int fd, int writable);
void nest__loop_closing(struct nest__rt *rt, int fd);
nest_task *nest__loop_waiter(struct nest__rt *rt, int fd, int writable);

#endif
