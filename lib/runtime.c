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
 *  2. wake one nest_wait_all_tasks_blocked() waiter; then, at most once a
 *     second, give unused stack memory back (nest__stack_trim);
 *  3. real clock: block in libev until an fd is ready or the earliest
 *     deadline (one libev timer);  mock clock: jump to the earliest deadline
 *     (after the autojump threshold of real time without events), or block
 *     on I/O if autojump is off;
 *  4. if nothing at all could ever wake a task - no deadline the clock will
 *     reach, no fd watched - the program is deadlocked: the task tree is
 *     printed to the report stream, the whole run is cancelled so every
 *     task unwinds, and nest_run returns NEST_EDEADLOCK.  If the run is
 *     still stuck after that (say, shielded tasks waiting forever), nest
 *     prints the tree again and aborts rather than hang.  An outstanding
 *     worker-thread job (lib/thread.c, rt->nforeign) will wake a task, so
 *     while one exists the loop blocks for it instead.
 *
 * Ctrl-C (lib/signal.c): unless the run opted out, the first SIGINT
 * cancels the run scope, like a deadlock, and nest_run returns
 * NEST_EINTERRUPTED.
 *
 * The loop also keeps the statistics that only it can see (polls, loop
 * lag), runs the I/O-wait instrument hooks, and writes a task tree dump
 * when the dump signal has arrived (its handler only sets rt->dump_req).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

void nest_run_options_init(nest_run_options *o) {
    memset(o, 0, sizeof *o);
    o->clock = NEST_CLOCK_MONOTONIC;
    o->autojump_threshold = NEST_FOREVER;
}

static FILE *report_file(struct nest__rt *rt) { return rt->report ? rt->report : stderr; }

void nest__rt_deadlock(struct nest__rt *rt) {
    if (rt->deadlocked && !rt->quiet)
        nest__dump_rt(rt, report_file(rt),
                      "nest: deadlock again after cancelling the run; who waits on what:");
    if (rt->deadlocked)
        nest__panic("deadlock: every task is blocked and nothing can wake any of them, even "
                    "after the run was cancelled (is a shielded scope waiting forever?)");
    rt->deadlocked = 1;
    if (!rt->quiet)
        nest__dump_rt(rt, report_file(rt),
                      "nest: deadlock: every task is blocked and nothing can wake any of them "
                      "(no deadline ahead, no fd watched).\n"
                      "nest: cancelling the run; nest_run will return NEST_EDEADLOCK.  Who waits "
                      "on what:");
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

static void loop_poll(struct nest__rt *rt, nest_time timeout) {
    rt->npolls++;
    if (NEST__UNLIKELY(rt->instr)) {
        nest__hook_io_wait(rt, timeout, 0);
        nest__loop_poll(rt, timeout);
        nest__hook_io_wait(rt, timeout, 1);
        return;
    }
    nest__loop_poll(rt, timeout);
}

/* Returns unused stack memory, at most once a second of real time (even
 * with the mock clock), only when idle: never in the middle of a burst. */
static void trim_stacks(struct nest__rt *rt) {
    nest_time now = nest__monotonic();
    if (now < rt->next_trim) return;
    rt->next_trim = now + NEST_SEC(1);
    nest__stack_trim(&rt->stacks);
}

/* Nothing is runnable: wait for something to happen (see the file comment). */
static void idle(struct nest__rt *rt) {
    if (rt->nio) loop_poll(rt, 0);
    expire(rt);
    if (rt->runq_head) return;
    if (rt->idle_head) {
        wake_idle_waiter(rt);
        return;
    }
    trim_stacks(rt);
    nest_time next = nest__deadline_next(rt);
    if (rt->clock_kind == NEST_CLOCK_MONOTONIC) {
        if (next == NEST_FOREVER && !rt->nio && !rt->nforeign) return nest__rt_deadlock(rt);
        loop_poll(rt, next == NEST_FOREVER ? -1 : next - rt->now);
        expire(rt);
        if (next != NEST_FOREVER && rt->now >= next) { /* the timer's wake-up: how late? */
            rt->lag_last = rt->now - next;
            if (rt->lag_last > rt->lag_max) rt->lag_max = rt->lag_last;
        }
        return;
    }
    /* Mock clock. */
    if (rt->autojump == NEST_FOREVER || next == NEST_FOREVER) {
        if (!rt->nio && !rt->nforeign) return nest__rt_deadlock(rt);
        loop_poll(rt, -1);
        return;
    }
    if (rt->autojump > 0) {
        loop_poll(rt, rt->autojump);
        if (rt->runq_head) return;
    }
    rt->now = next;
    nest__deadline_expire(rt, next);
}

static void poll(struct nest__rt *rt) {
    if (NEST__UNLIKELY(rt->dump_req)) nest__dump_signalled(rt);
    if (NEST__UNLIKELY(rt->foreign_req)) nest__foreign_drain(rt);
    if (!rt->runq_head) return idle(rt);
    if (rt->nio) loop_poll(rt, 0);
    expire(rt);
}

/* NEST_SEED overrides the seed option: a number, or "random". */
static uint64_t choose_seed(uint64_t seed) {
    const char *env = getenv("NEST_SEED");
    if (!env || !*env) return seed;
    if (strcmp(env, "random") == 0) {
        uint64_t s = (uint64_t)nest__monotonic() ^ ((uint64_t)getpid() << 32);
        s ^= s >> 29; /* any non-zero value will do; mix the cheap bits a little */
        s *= 0xbf58476d1ce4e5b9u;
        return s ? s : 1;
    }
    char *end;
    unsigned long long v = strtoull(env, &end, 0);
    return *end ? seed : (uint64_t)v;
}

int nest_run(nest_fn fn, void *arg) { return nest_run_opts(fn, arg, NULL); }

/* Checks the options and sets up a runtime with fn(arg) as its root task,
 * queued to run; *out is NULL on failure (the error is returned).  Sets
 * nest__rt_cur: instruments registered here may look at it. */
int nest__rt_create(nest_fn fn, void *arg, const nest_run_options *o, struct nest__rt **out) {
    *out = NULL;
    if (o->clock != NEST_CLOCK_MONOTONIC && o->clock != NEST_CLOCK_MOCK) return -EINVAL;
    if (o->autojump_threshold < 0) return -EINVAL;
    if (o->thread_limit < 0) return -EINVAL;
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
    rt->seed = choose_seed(o->seed);
    rt->rng = rt->seed;
    rt->report = o->report;
    rt->quiet = o->quiet;
    rt->thread_limit = o->thread_limit;
    rt->now = o->clock == NEST_CLOCK_MOCK ? o->mock_start : nest__monotonic();
    rt->t0 = rt->now;
    nest__scope_init_system(&rt->run_scope, NULL, "nest_run");
    rc = nest__loop_open(rt, o->loop);
    if (rc < 0) goto fail_loop;
    nest_task *root = nest__task_new(rt, fn, arg, "main", "nest_run", 0, 0);
    if (!root) {
        rc = -ENOMEM;
        goto fail_root;
    }
    root->flags |= NEST__TASK_ROOT;
    root->locals = NULL;
    nest__scope_link(&root->root, &rt->run_scope);
    rt->root = root;
    nest__ctx_init_main(&rt->main);
    nest__rt_cur = rt;
    if (rt->seed) nest_instrument_add(&rt->seed_ins);
    if (o->instrument) nest_instrument_add(o->instrument);
    nest__trace_from_env(rt);
    nest__slow_from_env(rt);
    if (rt->instr) nest__hook_run(rt, 0);
    nest__schedule_new(rt, root);
    *out = rt;
    return 0;
fail_root:
    nest__loop_close(rt);
fail_loop:
    nest__task_pool_destroy(rt);
    nest__stack_pool_destroy(&rt->stacks);
    nest__free(rt, sizeof *rt);
    return rc;
}

/* The root task has returned.  Token runners (system tasks, lib/thread.c)
 * may outlive it: refuse new calls and cancel what still runs, so that it
 * unwinds.  The run is over once rt->nsystem is 0. */
void nest__rt_root_done(struct nest__rt *rt) {
    nest__token_close(rt);
    if (rt->nsystem) nest__scope_cancel(rt, &rt->run_scope, 0);
}

/* Tears down a runtime whose tasks have all finished and returns the run's
 * result.  Clears nest__rt_cur. */
int nest__rt_destroy(struct nest__rt *rt) {
    nest__process_check_closed(rt);
    int rc = rt->deadlocked ? NEST_EDEADLOCK : rt->interrupted ? NEST_EINTERRUPTED : rt->root_rc;
    if (rt->instr) nest__hook_run(rt, 1);
    if (rc < 0 && rt->seed && !rt->quiet)
        fprintf(report_file(rt),
                "nest: the run failed (%s) with randomised scheduling, seed %llu; replay "
                "it with NEST_SEED=%llu\n",
                nest_err_name(rc), (unsigned long long)rt->seed, (unsigned long long)rt->seed);
    nest__dump_signal_release(rt);
    nest__ctrl_c_release(rt);
    nest__thread_close(rt);
    nest__rt_cur = NULL;
    nest__free(rt->shuffle, rt->nshuffle * sizeof *rt->shuffle);
    nest__loop_close(rt);
    nest__task_pool_destroy(rt);
    nest__stack_pool_destroy(&rt->stacks);
    nest__free(rt, sizeof *rt);
    return rc;
}

int nest_run_opts(nest_fn fn, void *arg, const nest_run_options *o) {
    nest_run_options defaults;
    if (nest__rt_cur)
        nest__panic("nest_run() called while this thread already runs a runtime (rule: one "
                    "runtime per thread; spawn a task into a nursery instead)");
    if (!o) {
        nest_run_options_init(&defaults);
        o = &defaults;
    }
    struct nest__rt *rt;
    int rc = nest__rt_create(fn, arg, o, &rt);
    if (rc < 0) return rc;
    if (!o->no_ctrl_c) nest__ctrl_c_install(rt);
    while (!rt->root_done) {
        poll(rt);
        nest__run_main(rt);
    }
    nest__rt_root_done(rt);
    while (rt->nsystem) {
        poll(rt);
        nest__run_main(rt);
    }
    return nest__rt_destroy(rt);
}

/* ---- guest mode (lib/guest.c drives these from the host's loop) ---------- */

/* One slice of a guest run: what one turn of nest_run's loop does, except
 * that the host's loop, not nest, polls I/O.  Returns 1 once every task has
 * finished (the caller then destroys the runtime). */
int nest__rt_guest_slice(struct nest__rt *rt) {
    if (NEST__UNLIKELY(rt->dump_req)) nest__dump_signalled(rt);
    if (NEST__UNLIKELY(rt->foreign_req)) nest__foreign_drain(rt);
    expire(rt);
    if (rt->runq_head) {
        rt->guest_quiet_since = 0;
        nest__run_main(rt);
    }
    if (rt->root_done && !rt->guest_ending) {
        rt->guest_ending = 1;
        nest__rt_root_done(rt);
    }
    /* Abandoned thread jobs (rt->nforeign) are waited for here, from the
     * host's loop, rather than joined by nest__rt_destroy inside one host
     * callback: a cancelled name lookup may take seconds to return. */
    return rt->root_done && !rt->nsystem && !rt->nforeign;
}

/* Before the host's loop blocks: what idle() decides, without blocking.
 * Returns how long the loop may block (0: tasks are runnable; -1: until an
 * event).  With the mock clock and an autojump threshold, the jump comes
 * once the guest has been quiet (run no task) for the threshold in real
 * time, whatever else the host's loop did meanwhile; the timer armed for
 * the remainder only makes sure the host's loop turns then.
 * There is no deadlock verdict: host code may call in at any time
 * (nest_guest_call), so a guest with nothing to wake it simply waits. */
nest_time nest__rt_guest_plan(struct nest__rt *rt) {
    expire(rt);
    if (rt->runq_head) return 0;
    if (rt->idle_head) {
        wake_idle_waiter(rt);
        return 0;
    }
    trim_stacks(rt);
    nest_time next = nest__deadline_next(rt);
    if (next == NEST_FOREVER) return -1;
    if (rt->clock_kind == NEST_CLOCK_MONOTONIC) return next > rt->now ? next - rt->now : 0;
    if (rt->autojump == NEST_FOREVER) return -1;
    if (rt->autojump > 0) {
        /* Count the threshold from when the guest went quiet, not from
         * this iteration: the host's own watchers may turn its loop far
         * more often than the threshold, and must not postpone the jump. */
        nest_time real = nest__monotonic();
        if (!rt->guest_quiet_since) rt->guest_quiet_since = real;
        nest_time left = rt->guest_quiet_since + rt->autojump - real;
        if (left > 0) return left;
    }
    rt->guest_quiet_since = 0;
    rt->now = next;
    nest__deadline_expire(rt, next);
    return 0;
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
    return nest__park_on(rt, t, abort_idle_wait, NEST__BLOCK_IDLE, NULL);
}
