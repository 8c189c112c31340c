/*
 * lib/stats.c - runtime statistics (nest_stats) and the slow-step report
 * (nest_slow_steps).
 *
 * The counters themselves are kept where things happen, as plain fields
 * of the runtime (lib/core.h): passes in task.c's pick_next, steps summed
 * at each return to the scheduler, polls and loop lag in runtime.c, fd
 * waits in fd.c.  This file only reads them.  Blocked tasks are not
 * counted at park and wake (that cost 5% of a park/wake ping-pong): their
 * total is derived, and nest_stats_blocked() walks the tree for the count
 * per kind.
 *
 * The slow-step report is an instrument (one per runtime, found in the
 * list by its callback) that reads the real clock at the start and end of
 * each step.  It sees a step only once it ends, so a task that never
 * reaches a checkpoint again is never reported; nothing short of a second
 * thread could report it, and nest keeps to one.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

int nest_stats(nest_runtime_stats *out) {
    struct nest__rt *rt = nest__rt_cur;
    memset(out, 0, sizeof *out);
    if (!rt) return -EINVAL;
    nest_time now = nest__clock_read(rt);
    out->uptime = now - rt->t0;
    out->tasks_spawned = rt->next_id;
    out->tasks_living = rt->next_id - rt->nfinished;
    out->tasks_runnable = rt->nrunq;
    out->tasks_blocked = nest__nblocked(rt);
    out->passes = rt->npasses;
    out->steps = rt->nsteps + rt->steps;
    out->polls = rt->npolls;
    out->fd_waits = rt->nfdwaits;
    out->fd_waiting = rt->nio;
    nest_time next = nest__deadline_next(rt);
    out->next_deadline = next == NEST_FOREVER ? NEST_FOREVER : next - now;
    out->loop_lag = rt->lag_last;
    out->loop_lag_max = rt->lag_max;
    out->slow_steps = rt->nslow;
    out->seed = rt->seed;
    return 0;
}

static void count_kind(nest_task *t, void *arg) {
    if (t->state == NEST__BLOCKED) ((uint64_t *)arg)[t->block]++;
}

int nest_stats_blocked(uint64_t counts[NEST_BLOCK_KINDS]) {
    struct nest__rt *rt = nest__rt_cur;
    memset(counts, 0, NEST_BLOCK_KINDS * sizeof *counts);
    if (!rt) return -EINVAL;
    nest__each_task(rt, count_kind, counts);
    return 0;
}

/* ---- slow steps ---------------------------------------------------------- */

typedef struct slow {
    nest_instrument ins;
    struct nest__rt *rt;
    nest_time threshold;
    FILE *out;
    nest_time began; /* real clock at the start of the current step */
} slow;

static void slow_before(void *arg, nest_task *t) {
    (void)t;
    ((slow *)arg)->began = nest__monotonic();
}

static void slow_after(void *arg, nest_task *t) {
    slow *s = arg;
    nest_time d = nest__monotonic() - s->began;
    if (d < s->threshold || !s->began) return;
    s->rt->nslow++;
    char ran[32], limit[32];
    snprintf(ran, sizeof ran, "%.3fms", (double)d / 1e6);
    snprintf(limit, sizeof limit, "%.3fms", (double)s->threshold / 1e6);
    fprintf(s->out ? s->out : stderr,
            "nest: slow step: task #%" PRIu64 " \"%s\" (spawned at %s:%d) ran %s without a "
            "checkpoint (threshold %s)\n",
            t->id, t->name, t->file, t->line, ran, limit);
    fflush(s->out ? s->out : stderr);
}

static void slow_free(void *arg) {
    nest__free(arg, sizeof(slow));
}

static slow *slow_find(struct nest__rt *rt) {
    for (nest_instrument *i = rt->instr; i; i = i->next_)
        if (i->before_task_step == slow_before) return i->arg;
    return NULL;
}

static int slow_set(struct nest__rt *rt, nest_time threshold, FILE *out) {
    if (threshold < 0) return -EINVAL;
    slow *s = slow_find(rt);
    if (threshold == 0) {
        if (s) {
            nest_instrument_remove(&s->ins);
            slow_free(s);
        }
        return 0;
    }
    if (!s) {
        s = nest__alloc(sizeof *s);
        if (!s) return -ENOMEM;
        memset(s, 0, sizeof *s);
        s->rt = rt;
        s->ins.arg = s;
        s->ins.before_task_step = slow_before;
        s->ins.after_task_step = slow_after;
        s->ins.after_run = slow_free;
        nest_instrument_add(&s->ins);
        /* The step running now began before we could see it. */
        if (rt->current) s->began = nest__monotonic();
    }
    s->threshold = threshold;
    s->out = out;
    return 0;
}

int nest_slow_steps(nest_time threshold, FILE *out) {
    nest__task_self("nest_slow_steps");
    return slow_set(nest__rt_cur, threshold, out);
}

void nest__slow_from_env(struct nest__rt *rt) {
    const char *env = getenv("NEST_SLOW_STEP_MS");
    if (!env || !*env) return;
    char *end;
    double ms = strtod(env, &end);
    if (*end || ms <= 0) return;
    slow_set(rt, (nest_time)(ms * 1e6), NULL);
}
