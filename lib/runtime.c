/*
 * lib/runtime.c - nest_run() and the scheduler loop.
 *
 * The scheduler runs on the thread's own stack (rt->main).  It alternates
 * between polling (I/O readiness and expired deadlines) and handing control
 * to the run queue (nest__run_main), which keeps switching task to task
 * until the queue is empty or a poll is due (lib/task.c).
 *
 * When nothing is runnable the runtime is idle and decides, in this order:
 *  1. poll I/O without blocking and expire deadlines that have passed;
 *  2. wake one nest_wait_all_tasks_blocked() waiter;
 *  3. real clock: block in libev until an fd is ready or the earliest
 *     deadline (one libev timer);  mock clock: jump to the earliest deadline
 *     (after the autojump threshold of real time without events), or block
 *     on I/O if autojump is off;
 *  4. if nothing at all could ever wake a task - no deadline the clock will
 *     reach, no fd watched - the program is deadlocked: the whole run is
 *     cancelled so every task unwinds, and nest_run returns NEST_EDEADLOCK.
 *     If the run is still stuck after that (say, shielded tasks waiting
 *     forever), nest aborts with a message rather than hang.
 */
#include <string.h>

#include "core.h"

void nest_run_options_init(nest_run_options *o) {
    memset(o, 0, sizeof *o);
    o->clock = NEST_CLOCK_MONOTONIC;
    o->autojump_threshold = NEST_FOREVER;
}

static void deadlock(struct nest__rt *rt) {
    if (rt->deadlocked)
        nest__panic("deadlock: every task is blocked and nothing can wake any of them, even "
                    "after the run was cancelled (is a shielded scope waiting forever?)");
    rt->deadlocked = 1;
    nest__scope_cancel(rt, &rt->run_scope, 0);
    if (!rt->runq_head)
        nest__panic("deadlock: every task is blocked and nothing can wake any of them, and "
                    "cancelling the run woke none (are they all shielded?)");
}

static void wake_idle_waiter(struct nest__rt *rt) {
    nest_task *t = rt->idle_head;
    rt->idle_head = t->wait_next;
    if (!rt->idle_head) rt->idle_tail = NULL;
    t->wait_next = NULL;
    nest__wake(rt, t, 0);
}

static void expire(struct nest__rt *rt) {
    if (rt->heap) nest__deadline_expire(rt, nest__clock_read(rt));
}

/* Nothing is runnable: wait for something to happen (see the file comment). */
static void idle(struct nest__rt *rt) {
    if (rt->nio) nest__loop_poll(rt, 0);
    expire(rt);
    if (rt->runq_head) return;
    if (rt->idle_head) {
        wake_idle_waiter(rt);
        return;
    }
    nest_time next = nest__deadline_next(rt);
    if (rt->clock_kind == NEST_CLOCK_MONOTONIC) {
        if (next == NEST_FOREVER && !rt->nio) return deadlock(rt);
        nest__loop_poll(rt, next == NEST_FOREVER ? -1 : next - rt->now);
        expire(rt);
        return;
    }
    /* Mock clock. */
    if (rt->autojump == NEST_FOREVER || next == NEST_FOREVER) {
        if (!rt->nio) return deadlock(rt);
        nest__loop_poll(rt, -1);
        return;
    }
    if (rt->autojump > 0) {
        nest__loop_poll(rt, rt->autojump);
        if (rt->runq_head) return;
    }
    rt->now = next;
    nest__deadline_expire(rt, next);
}

static void poll(struct nest__rt *rt) {
    if (!rt->runq_head) return idle(rt);
    if (rt->nio) nest__loop_poll(rt, 0);
    expire(rt);
}

int nest_run(nest_fn fn, void *arg) { return nest_run_opts(fn, arg, NULL); }

int nest_run_opts(nest_fn fn, void *arg, const nest_run_options *o) {
    nest_run_options defaults;
    if (nest__rt_cur)
        nest__panic("nest_run() called while this thread already runs a runtime (rule: one "
                    "runtime per thread; spawn a task into a nursery instead)");
    if (!o) {
        nest_run_options_init(&defaults);
        o = &defaults;
    }
    if (o->clock != NEST_CLOCK_MONOTONIC && o->clock != NEST_CLOCK_MOCK) return -EINVAL;
    if (o->autojump_threshold < 0) return -EINVAL;
    int rc = nest__stack_overflow_handler_install();
    if (rc < 0) return rc;
    nest__stack_set_fault_owner(nest__stack_fault_owner);
    struct nest__rt *rt = nest__alloc(sizeof *rt);
    if (!rt) return -ENOMEM;
    memset(rt, 0, sizeof *rt);
    nest__stack_pool_init(&rt->stacks);
    rt->default_stack = o->stack_size ? o->stack_size : NEST_DEFAULT_STACK_SIZE;
    rt->clock_kind = o->clock;
    rt->autojump = o->autojump_threshold;
    rt->seed = o->seed;
    rt->now = o->clock == NEST_CLOCK_MOCK ? o->mock_start : nest__monotonic();
    nest__scope_init_system(&rt->run_scope, NULL, "nest_run");
    rc = nest__loop_open(rt, o->loop);
    if (rc < 0) goto fail_loop;
    nest_task *root = nest__task_new(rt, fn, arg, "main", "nest_run", 0, 0);
    if (!root) {
        rc = -ENOMEM;
        goto fail_root;
    }
    root->flags |= NEST__TASK_ROOT;
    nest__scope_link(&root->root, &rt->run_scope);
    rt->root = root;
    nest__schedule(rt, root);
    nest__ctx_init_main(&rt->main);
    nest__rt_cur = rt;
    while (!rt->root_done) {
        poll(rt);
        nest__run_main(rt);
    }
    nest__rt_cur = NULL;
    rc = rt->deadlocked ? NEST_EDEADLOCK : rt->root_rc;
fail_root:
    nest__loop_close(rt);
fail_loop:
    nest__task_pool_destroy(rt);
    nest__stack_pool_destroy(&rt->stacks);
    nest__free(rt, sizeof *rt);
    return rc;
}

static int abort_idle_wait(nest_task *self) {
    struct nest__rt *rt = nest__rt_cur;
    nest_task *prev = NULL;
    for (nest_task *t = rt->idle_head; t; prev = t, t = t->wait_next) {
        if (t != self) continue;
        if (prev)
            prev->wait_next = t->wait_next;
        else
            rt->idle_head = t->wait_next;
        if (rt->idle_tail == t) rt->idle_tail = prev;
        break;
    }
    self->wait_next = NULL;
    return 0;
}

int nest_wait_all_tasks_blocked(void) {
    nest_task *t = nest__task_self("nest_wait_all_tasks_blocked");
    struct nest__rt *rt = nest__rt_cur;
    if (nest__cancelled_at(t->cur)) return -ECANCELED;
    t->wait_next = NULL;
    if (rt->idle_tail)
        rt->idle_tail->wait_next = t;
    else
        rt->idle_head = t;
    rt->idle_tail = t;
    return nest__park(rt, t, abort_idle_wait);
}
