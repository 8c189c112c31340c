/*
 * lib/task.c - task control blocks, the run queue, and switching.
 *
 * Owns: the pool of control blocks, the FIFO run queue and its division
 * into scheduling passes, park/wake/yield, task entry and exit, and the
 * release of a finished task's stack.
 *
 * Invariants:
 *  - A task is in the run queue iff its state is RUNNABLE.
 *  - rt->batch counts the tasks of the current pass still in the queue:
 *    tasks made runnable during a pass go behind them and run in the next
 *    pass, so a task that yields in a loop cannot starve the others.
 *  - Switching is direct, task to task: a parking task picks the next
 *    runnable task itself.  Control returns to the scheduler (the main
 *    context) only when the queue is empty or I/O and timers are due to be
 *    polled (every NEST__POLL_EVERY steps), so polling costs no system call
 *    per pass but its latency stays bounded.
 *  - A finished task cannot free the stack it runs on: it leaves itself in
 *    rt->zombie, and whatever context runs next releases it (reap()).
 *  - A task gets a stack only when it first runs, and stacks are reused
 *    last-in first-out, so spawning touches no stack memory and a stream of
 *    short tasks keeps running on the same hot stack.
 *  - Instrument hooks (lib/instrument.c) cost one test of rt->instr where
 *    they would fire; with instruments registered, switching takes the
 *    out-of-line path switch_out_hooked().  A step is the time from a
 *    switch into a task to its next switch out (or exit); a checkpoint
 *    that finds no other runnable task still ends one step and begins the
 *    next.
 *  - With a scheduling seed (rt->seed != 0) each pass runs its tasks in an
 *    order drawn from the seed (nest__shuffle_pass) instead of FIFO.  A
 *    seeded run registers an empty instrument (rt->seed_ins), so it takes
 *    the hooked paths, the only ones that shuffle: the plain path pays
 *    nothing for the feature.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define NEST__POLL_EVERY 64u
#define CHUNK_TASKS 64

_Thread_local struct nest__rt *nest__rt_cur NEST__TLS_MODEL;

struct task_chunk {
    struct task_chunk *next;
    nest_task tasks[CHUNK_TASKS];
};

void nest__panic(const char *fmt, ...) {
    va_list ap;
    fflush(stdout);
    fputs("nest: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

nest_task *nest__task_self(const char *what) {
    struct nest__rt *rt = nest__rt_cur;
    if (!rt || !rt->current)
        nest__panic("%s() called outside a task (rule: blocking calls, scopes and nurseries "
                    "are used only inside tasks run by nest_run())",
                    what);
    return rt->current;
}

nest_task *nest__task_new(struct nest__rt *rt, nest_fn fn, void *arg, const char *name,
                          const char *file, int line, size_t stack_size) {
    nest_task *t = rt->free_tasks;
    if (!t) {
        struct task_chunk *c = nest__alloc(sizeof *c);
        if (!c) return NULL;
        c->next = rt->task_chunks;
        rt->task_chunks = c;
        for (int i = CHUNK_TASKS - 1; i >= 0; i--) {
            c->tasks[i].next = rt->free_tasks;
            rt->free_tasks = &c->tasks[i];
        }
        t = rt->free_tasks;
    }
    rt->free_tasks = t->next;
    t->next = NULL;
    t->stack = NULL;
    t->fn = fn;
    t->arg = arg;
    nest__scope_init_system(&t->root, t, file);
    t->root.line = line;
    t->cur = &t->root;
    t->nursery = NULL;
    t->name = name;
    t->file = file;
    t->line = line;
    t->state = NEST__NEW;
    t->flags = 0;
    t->rc = 0;
    t->wake_rc = 0;
    t->stack_size = stack_size;
    t->id = ++rt->next_id;
    t->abort_fn = NULL;
    t->waiters = NULL;
    t->wait_next = NULL;
    t->retained_next = NULL;
    t->starter = NULL;
    t->wake_ptr = NULL;
    t->wake_val = 0;
    t->exit_hooks = NULL;
    /* block and block_since are read only while BLOCKED, and the caller
     * sets locals (make_child; nest_run for the root task). */
    rt->ntasks++;
    return t;
}

/* A system task: in no nursery, linked under the run scope (so cancelling
 * the run reaches it) and counted in rt->nsystem, which nest_run waits for
 * after the root task.  Token runners and guest bridge calls run user code
 * this way.  Queued to run; NULL when out of memory. */
nest_task *nest__task_new_system(struct nest__rt *rt, nest_fn fn, void *arg, const char *name) {
    nest_task *t = nest__task_new(rt, fn, arg, name, name, 0, 0);
    if (!t) return NULL;
    t->nursery = NULL;
    t->locals = NULL;
    nest__scope_link(&t->root, &rt->run_scope);
    rt->nsystem++;
    nest__schedule_new(rt, t);
    return t;
}

void nest__task_free(struct nest__rt *rt, nest_task *t) {
    t->state = -1; /* a stale handle now fails loudly rather than quietly */
    t->next = rt->free_tasks;
    rt->free_tasks = t;
    rt->ntasks--;
}

void nest__task_pool_destroy(struct nest__rt *rt) {
    struct task_chunk *c = rt->task_chunks;
    while (c) {
        struct task_chunk *next = c->next;
        nest__free(c, sizeof *c);
        c = next;
    }
    rt->task_chunks = NULL;
    rt->free_tasks = NULL;
}

static inline void runq_push(struct nest__rt *rt, nest_task *t) {
    t->state = NEST__RUNNABLE;
    t->next = NULL;
    if (rt->runq_tail)
        rt->runq_tail->next = t;
    else
        rt->runq_head = t;
    rt->runq_tail = t;
    rt->nrunq++;
}

void nest__schedule(struct nest__rt *rt, nest_task *t) {
    /* Before the state changes, so that the hook sees what t leaves. */
    if (NEST__UNLIKELY(rt->instr)) nest__hook_scheduled(rt, t);
    runq_push(rt, t);
}

static NEST__COLD void schedule_new_hooked(struct nest__rt *rt, nest_task *t) {
    nest__hook_spawned(rt, t);
    nest__hook_scheduled(rt, t);
    runq_push(rt, t);
}

void nest__schedule_new(struct nest__rt *rt, nest_task *t) {
    if (NEST__UNLIKELY(rt->instr))
        schedule_new_hooked(rt, t);
    else
        runq_push(rt, t);
}

static nest_task *runq_pop(struct nest__rt *rt) {
    nest_task *t = rt->runq_head;
    rt->runq_head = t->next;
    if (!rt->runq_head) rt->runq_tail = NULL;
    rt->nrunq--;
    return t;
}

/* splitmix64: a small, good generator whose whole state is one word, so a
 * run is replayed exactly from its seed. */
static uint64_t next_random(struct nest__rt *rt) {
    uint64_t z = (rt->rng += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Puts the tasks of the pass that begins now (the whole queue) in an order
 * drawn from the seed (Fisher-Yates).  If the scratch array cannot grow,
 * the pass keeps FIFO order: randomisation is a testing aid, not a reason
 * to fail. */
void nest__shuffle_pass(struct nest__rt *rt) {
    size_t n = rt->nrunq;
    if (n < 2) return;
    if (n > rt->nshuffle) {
        size_t cap = rt->nshuffle ? rt->nshuffle : 64;
        while (cap < n) cap *= 2;
        nest_task **a = nest__realloc(rt->shuffle, rt->nshuffle * sizeof *a, cap * sizeof *a);
        if (!a) return;
        rt->shuffle = a;
        rt->nshuffle = cap;
    }
    nest_task **a = rt->shuffle;
    size_t i = 0;
    for (nest_task *t = rt->runq_head; t; t = t->next) a[i++] = t;
    for (i = n - 1; i > 0; i--) {
        size_t j = (size_t)(next_random(rt) % (i + 1));
        nest_task *tmp = a[i];
        a[i] = a[j];
        a[j] = tmp;
    }
    for (i = 0; i + 1 < n; i++) a[i]->next = a[i + 1];
    a[n - 1]->next = NULL;
    rt->runq_head = a[0];
    rt->runq_tail = a[n - 1];
}

/* Releases the stack (and, without a handle, the control block) of the task
 * that finished just before the switch that brought us here. */
static inline void reap(struct nest__rt *rt) {
    nest_task *z = rt->zombie;
    if (!z) return;
    rt->zombie = NULL;
    nest__ctx_destroy(&z->ctx);
    if (nest__stack_put(&rt->stacks, z->stack) < 0)
        nest__panic("stack overflow in task '%s' (spawned at %s:%d): the canary at the bottom "
                    "of its unguarded %zu-byte stack was overwritten; give it a larger stack",
                    z->name, z->file, z->line, z->stack->size);
    z->stack = NULL;
    if (!(z->flags & NEST__TASK_RETAINED)) nest__task_free(rt, z);
}

static void task_entry(void);
static void task_done_failed(struct nest__rt *rt, nest_task *t);

/* Gives t a stack on its first run.  Stack exhaustion fails the task with
 * -ENOMEM as if it had returned that, without running any of its code. */
static int bind_stack(struct nest__rt *rt, nest_task *t) {
    size_t size = t->stack_size ? t->stack_size : rt->default_stack;
    nest__stack *s = nest__stack_get(&rt->stacks, size);
    if (!s) return -ENOMEM;
    t->stack = s;
    nest__ctx_make(&t->ctx, s->lo, s->size, task_entry);
    return 0;
}

/* The next task to run, or NULL when the scheduler must take over: the
 * queue is empty, or I/O and timers are due to be polled.  hooked is a
 * constant at each call site: only the hooked paths randomise the order of
 * a pass, which is why a seeded run registers rt->seed_ins (and so takes
 * them) and the plain path does not even test the seed. */
static NEST__INLINE nest_task *pick_next_(struct nest__rt *rt, int hooked) {
    for (;;) {
        if (rt->steps >= NEST__POLL_EVERY) return NULL;
        if (rt->batch == 0) {
            if (!rt->runq_head) return NULL;
            rt->npasses++;
            rt->batch = rt->nrunq; /* a new pass: exactly the tasks runnable now */
            if (hooked && rt->seed) nest__shuffle_pass(rt);
        }
        nest_task *t = runq_pop(rt);
        rt->batch--;
        rt->steps++;
        if (!t->stack && bind_stack(rt, t) < 0) {
            task_done_failed(rt, t);
            if (!(t->flags & NEST__TASK_RETAINED)) nest__task_free(rt, t);
            continue;
        }
        return t;
    }
}

static nest_task *pick_next(struct nest__rt *rt) { return pick_next_(rt, 0); }
static NEST__COLD nest_task *pick_next_hooked(struct nest__rt *rt) { return pick_next_(rt, 1); }

static void check_canary(nest_task *t) {
    if (!t->stack->guarded && nest__stack_check(t->stack) < 0)
        nest__panic("stack overflow in task '%s' (spawned at %s:%d): the canary at the bottom "
                    "of its unguarded %zu-byte stack was overwritten; give it a larger stack",
                    t->name, t->file, t->line, t->stack->size);
}

/* Switching out of the running task self to whatever runs next comes in
 * two forms: with hooks (instruments registered) and plain.  The hooked
 * form is kept out of line: inlined, it made the switch too big to be
 * inlined into park and yield, which cost a call per switch (~10% of
 * bench_switch). */
static NEST__COLD void switch_out_hooked(struct nest__rt *rt, nest_task *self) {
    nest__hook_step_end(rt, self);
    nest_task *next = pick_next_hooked(rt);
    if (next == self) {
        self->state = NEST__RUNNING;
        nest__hook_step_begin(rt, self);
        return;
    }
    rt->current = next;
    if (next) {
        next->state = NEST__RUNNING;
        nest__hook_step_begin(rt, next);
    }
    nest__ctx_switch(&self->ctx, next ? &next->ctx : &rt->main);
    reap(rt);
}

/* switch_out() without hooks; the caller has checked the canary. */
static inline void switch_out_plain(struct nest__rt *rt, nest_task *self) {
    nest_task *next = pick_next(rt);
    if (next == self) { /* it was the only runnable task: no switch at all */
        self->state = NEST__RUNNING;
        return;
    }
    rt->current = next;
    if (next) next->state = NEST__RUNNING;
    nest__ctx_switch(&self->ctx, next ? &next->ctx : &rt->main);
    reap(rt);
}

/* The one place a running task switches out, for park and yield alike.
 * Out of line on purpose: with a single call site of the context switch,
 * the return after a switch lands where the processor's return predictor
 * expects whichever way the task left (park or yield); two inlined copies
 * mispredicted when a channel ping-pong alternated them (71 -> 63 ns per
 * hand-off with this). */
static __attribute__((noinline)) void switch_out(struct nest__rt *rt, nest_task *self) {
    check_canary(self);
    if (NEST__UNLIKELY(rt->instr))
        switch_out_hooked(rt, self);
    else
        switch_out_plain(rt, self);
}

int nest__park_on(struct nest__rt *rt, nest_task *self, int (*abort_fn)(nest_task *), int kind,
                  const void *obj) {
    self->state = NEST__BLOCKED;
    self->abort_fn = abort_fn;
    self->wake_rc = 0;
    self->block = kind;
    self->wake_ptr = (void *)obj; /* abort_fns of task waits and parks read it too */
    self->block_since = rt->now; /* the last reading: no clock read here */
    switch_out(rt, self);
    return self->wake_rc;
}

void nest__wake(struct nest__rt *rt, nest_task *t, int rc) {
    if (t->state != NEST__BLOCKED)
        nest__panic("internal error: waking task '%s' that is not blocked (state %d)", t->name,
                    t->state);
    t->abort_fn = NULL;
    t->wake_rc = rc;
    nest__schedule(rt, t);
}

/* The checkpoint path: nest__schedule() carries the scheduled hook, and
 * switch_out() the step hooks, each behind one test of rt->instr. */
int nest__yield(struct nest__rt *rt, nest_task *self) {
    nest__schedule(rt, self);
    switch_out(rt, self);
    return 0;
}

int nest__abort_nothing(nest_task *t) {
    (void)t;
    return 0;
}

void nest__run_main(struct nest__rt *rt) {
    rt->nsteps += rt->steps;
    rt->steps = 0;
    nest_task *t = rt->instr ? pick_next_hooked(rt) : pick_next(rt);
    if (!t) return;
    rt->current = t;
    t->state = NEST__RUNNING;
    if (NEST__UNLIKELY(rt->instr)) nest__hook_step_begin(rt, t);
    nest__ctx_switch(&rt->main, &t->ctx);
    reap(rt);
}

/* Bookkeeping of a finished task; runs on its stack (or on another when the
 * task never got one). */
void nest__exit_hook_add(nest_task *t, nest__exit_hook *h) {
    h->prev = NULL;
    h->next = t->exit_hooks;
    if (h->next) h->next->prev = h;
    t->exit_hooks = h;
}

void nest__exit_hook_remove(nest_task *t, nest__exit_hook *h) {
    if (h->prev)
        h->prev->next = h->next;
    else
        t->exit_hooks = h->next;
    if (h->next) h->next->prev = h->prev;
    h->next = h->prev = NULL;
}

/* hooked (a constant at each call site) calls the task_exited hook once
 * the task is DONE, before its waiters and its nursery hear of it. */
static NEST__INLINE void task_done_(struct nest__rt *rt, nest_task *t, int rc, int hooked) {
    while (t->exit_hooks) {
        nest__exit_hook *h = t->exit_hooks;
        nest__exit_hook_remove(t, h);
        h->fn(h, t);
    }
    t->rc = rc;
    t->state = NEST__DONE;
    rt->nfinished++;
    if (t->locals) nest__locals_release(rt, t);
    if (hooked) nest__hook_exited(rt, t);
    if (t->root.flags & NEST__SCOPE_INHEAP) nest__deadline_remove(rt, &t->root);
    nest__scope_unlink(&t->root);
    t->root.flags &= ~NEST__SCOPE_ENTERED;
    if (t->root.flags & NEST__SCOPE_CANCELLED) rt->ncancelled--;
    for (nest_task *w = t->waiters; w;) {
        nest_task *next = w->wait_next;
        w->wait_next = NULL;
        w->wake_val = rc;
        nest__wake(rt, w, 0);
        w = next;
    }
    t->waiters = NULL;
    if (t->flags & NEST__TASK_ROOT) {
        rt->root_rc = rc;
        rt->root_done = 1;
    } else if (NEST__UNLIKELY(!t->nursery)) { /* a system task (lib/thread.c) */
        rt->nsystem--;
    } else {
        nest__nursery_child_done(rt, t);
    }
}

/* A task that could not get a stack fails with -ENOMEM without running. */
static NEST__COLD void task_done_failed(struct nest__rt *rt, nest_task *t) {
    if (rt->instr)
        task_done_(rt, t, -ENOMEM, 1);
    else
        task_done_(rt, t, -ENOMEM, 0);
}

/* task_exit() while instruments are registered (out of line, as
 * switch_out_hooked). */
static NEST__COLD __attribute__((noreturn)) void task_exit_hooked(struct nest__rt *rt,
                                                                  nest_task *t, int rc) {
    nest__hook_step_end(rt, t);
    task_done_(rt, t, rc, 1);
    rt->zombie = t;
    nest_task *next = pick_next_hooked(rt);
    rt->current = next;
    if (next) {
        next->state = NEST__RUNNING;
        nest__hook_step_begin(rt, next);
    }
    nest__ctx_exit_to(&t->ctx, next ? &next->ctx : &rt->main);
}

static void task_exit(struct nest__rt *rt, nest_task *t, int rc) __attribute__((noreturn));
static void task_exit(struct nest__rt *rt, nest_task *t, int rc) {
    if (t->cur != &t->root) {
        nest_scope *s = t->cur;
        nest__panic("task '%s' (spawned at %s:%d) returned without %s at %s:%d (rule: a task "
                    "exits every scope and closes every nursery it opened before it returns)",
                    t->name, t->file, t->line,
                    (s->flags & NEST__SCOPE_NURSERY) ? "closing the nursery opened"
                                                     : "exiting the scope entered",
                    s->file, s->line);
    }
    check_canary(t);
    if (NEST__UNLIKELY(rt->instr)) task_exit_hooked(rt, t, rc);
    task_done_(rt, t, rc, 0);
    rt->zombie = t;
    nest_task *next = pick_next(rt);
    rt->current = next;
    if (next) next->state = NEST__RUNNING;
    nest__ctx_exit_to(&t->ctx, next ? &next->ctx : &rt->main);
}

static void task_entry(void) {
    struct nest__rt *rt = nest__rt_cur;
    nest_task *t = rt->current;
    reap(rt);
    int rc = t->fn(t->arg);
    task_exit(rt, t, rc);
}

/* The overflow handler's question: is addr in the guard page below the
 * current task's stack?  Reads only thread-local and plain fields, so it is
 * async-signal-safe. */
int nest__stack_fault_owner(void *addr, const char **name, const char **file, int *line,
                            size_t *size) {
    struct nest__rt *rt = nest__rt_cur;
    if (!rt || !rt->current || !rt->current->stack) return -1;
    nest_task *t = rt->current;
    if (!nest__stack_in_guard(t->stack, addr)) return -1;
    *name = t->name;
    *file = t->file;
    *line = t->line;
    *size = t->stack->size;
    return 0;
}

/* Public task accessors (nest/task.h). */

nest_task *nest_current_task(void) {
    struct nest__rt *rt = nest__rt_cur;
    return rt ? rt->current : NULL;
}

const char *nest_task_name(const nest_task *t) { return t->name; }
const char *nest_task_file(const nest_task *t) { return t->file; }
int nest_task_line(const nest_task *t) { return t->line; }
uint64_t nest_task_id(const nest_task *t) { return t->id; }
int nest_task_done(const nest_task *t) { return t->state == NEST__DONE; }

void nest_task_cancel(nest_task *t) {
    struct nest__rt *rt = nest__rt_cur;
    if (!rt) nest__panic("nest_task_cancel() called outside a runtime");
    if (t->state == NEST__DONE) return;
    nest__scope_cancel(rt, &t->root, 0);
}

static int abort_task_wait(nest_task *self) {
    nest_task *t = self->wake_ptr;
    for (nest_task **p = &t->waiters; *p; p = &(*p)->wait_next) {
        if (*p == self) {
            *p = self->wait_next;
            break;
        }
    }
    self->wait_next = NULL;
    return 0;
}

int nest_task_wait(nest_task *t, int *result) {
    nest_task *self = nest__task_self("nest_task_wait");
    struct nest__rt *rt = nest__rt_cur;
    if (t == self) return -EINVAL;
    if (nest__cancelled_at(self->cur)) return -ECANCELED;
    if (t->state == NEST__DONE) {
        /* Read the result first: t may be released while we yield. */
        int rc = t->rc;
        nest__yield(rt, self);
        if (result) *result = rc;
        return 0;
    }
    self->wake_ptr = t;
    self->wait_next = t->waiters;
    t->waiters = self;
    int rc = nest__park_on(rt, self, abort_task_wait, NEST__BLOCK_TASK, t);
    if (rc == 0 && result) *result = self->wake_val;
    return rc;
}
