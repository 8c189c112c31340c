/*
 * bench/inspect_overhead.c - what inspection costs: statistics, the
 * instrument hooks, tracing, randomised scheduling, task-locals.
 *
 *     bench_inspect_overhead [N=1000000] [reps=K]
 *
 * Each rep runs every variant below once, interleaved, so that drift of
 * the machine affects them alike; the summary line gives medians.
 *
 *   cp_none      two tasks alternating via nest_checkpoint(), ns per
 *                switch: bench_switch's checkpoint mode.  Statistics are
 *                always on, so this is "statistics + empty instrument
 *                registry"; compare it with bench_switch of a build
 *                without issue 5 (design/09-debugging.md has the A/B).
 *   cp_empty     the same with one instrument registered whose callbacks
 *                are all NULL: the cost of leaving the fast path.
 *   cp_noop      the same with no-op step and scheduled callbacks.
 *   cp_slow      with the slow-step report on (two clock reads a step).
 *   cp_trace     with a trace written to /dev/null.
 *   cp_seed      with randomised scheduling (seed 1).
 *   park_none    ping-pong through two parking lots (park + unpark per
 *                handoff; exercises the blocked-on bookkeeping), ns per
 *                handoff.
 *   spawn_none   spawn + join of N/10 empty tasks, ns per task.
 *   spawn_local  the same with a task-local value set in the spawner, so
 *                every child shares it (one reference count per spawn).
 *   stats_ns     one nest_stats() call.
 */
#include "bench.h"

#include <nest/inspect.h>
#include <nest/instrument.h>
#include <nest/local.h>
#include <nest/trace.h>

static long n_iter;

/* ---- checkpoint switch ---------------------------------------------- */

static int checkpointer(void *arg) {
    (void)arg;
    for (long i = 0; i < n_iter; i++) bench_check(nest_checkpoint(), "nest_checkpoint");
    return 0;
}

enum { V_NONE, V_EMPTY, V_NOOP, V_SLOW, V_TRACE, V_SEED };
static int variant;
static double result;

static void noop_task(void *arg, nest_task *t) { (void)arg, (void)t; }
static nest_instrument empty_ins, noop_ins;
static FILE *devnull;

static int cp_main(void *arg) {
    (void)arg;
    if (variant == V_EMPTY) bench_check(nest_instrument_add(&empty_ins), "instrument_add");
    if (variant == V_NOOP) {
        noop_ins = (nest_instrument){.task_scheduled = noop_task,
                                     .before_task_step = noop_task,
                                     .after_task_step = noop_task};
        bench_check(nest_instrument_add(&noop_ins), "instrument_add");
    }
    if (variant == V_SLOW) bench_check(nest_slow_steps(NEST_SEC(1), NULL), "slow_steps");
    if (variant == V_TRACE) bench_check(nest_trace_start(devnull), "trace_start");
    nest_nursery n;
    int64_t t0 = bench_now_ns();
    nest_nursery_open(&n);
    bench_check(nest_spawn(&n, checkpointer, NULL), "nest_spawn");
    bench_check(nest_spawn(&n, checkpointer, NULL), "nest_spawn");
    bench_check(nest_nursery_close(&n, 0), "nest_nursery_close");
    result = (double)(bench_now_ns() - t0) / (2.0 * (double)n_iter);
    return 0;
}

static double run_cp(int v) {
    nest_run_options o;
    nest_run_options_init(&o);
    o.seed = v == V_SEED ? 1 : 0;
    variant = v;
    bench_check(nest_run_opts(cp_main, NULL, &o), "nest_run");
    return result;
}

/* ---- parking-lot ping-pong -------------------------------------------- */

static struct {
    int turn;
    nest_parking_lot lot[2];
} pl;

static int parker(void *arg) {
    int me = (int)(intptr_t)arg;
    for (long i = 0; i < n_iter; i++) {
        while (pl.turn != me) {
            nest_waiter w;
            bench_check(nest_park(&pl.lot[me], &w, NULL, NULL), "nest_park");
        }
        pl.turn = 1 - me;
        nest_unpark(&pl.lot[1 - me], 1, 0);
    }
    return 0;
}

static int park_main(void *arg) {
    (void)arg;
    pl.turn = 0;
    nest_parking_lot_init(&pl.lot[0]);
    nest_parking_lot_init(&pl.lot[1]);
    nest_nursery n;
    int64_t t0 = bench_now_ns();
    nest_nursery_open(&n);
    bench_check(nest_spawn(&n, parker, (void *)(intptr_t)0), "nest_spawn");
    bench_check(nest_spawn(&n, parker, (void *)(intptr_t)1), "nest_spawn");
    bench_check(nest_nursery_close(&n, 0), "nest_nursery_close");
    result = (double)(bench_now_ns() - t0) / (2.0 * (double)n_iter);
    return 0;
}

/* ---- spawn + join ------------------------------------------------------ */

static nest_local_key request = NEST_LOCAL_KEY_INIT("request", NULL);

static int empty_task(void *arg) {
    (void)arg;
    return 0;
}

static int spawn_main(void *arg) {
    int with_local = (int)(intptr_t)arg;
    if (with_local) bench_check(nest_local_set(&request, "req"), "nest_local_set");
    long n_tasks = n_iter / 10;
    nest_nursery n;
    int64_t t0 = bench_now_ns();
    nest_nursery_open(&n);
    for (long i = 0; i < n_tasks; i++) bench_check(nest_spawn(&n, empty_task, NULL), "nest_spawn");
    bench_check(nest_nursery_close(&n, 0), "nest_nursery_close");
    result = (double)(bench_now_ns() - t0) / (double)n_tasks;
    return 0;
}

/* ---- nest_stats --------------------------------------------------------- */

static int stats_main(void *arg) {
    (void)arg;
    nest_runtime_stats st;
    long n = n_iter / 10;
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n; i++) nest_stats(&st);
    result = (double)(bench_now_ns() - t0) / (double)n;
    return (int)(st.steps & 0); /* keep st alive */
}

static double run_fn(nest_fn fn, void *arg) {
    bench_check(nest_run(fn, arg), "nest_run");
    return result;
}

int main(int argc, char **argv) {
    bench_args a;
    bench_parse(&a, argc, argv);
    n_iter = bench_count(&a, 0, 1000000);
    devnull = fopen("/dev/null", "w");
    if (!devnull) return 1;
    static const char *names[] = {"cp_none",    "cp_empty",    "cp_noop",  "cp_slow",
                                  "cp_trace",   "cp_seed",     "park_none", "spawn_none",
                                  "spawn_local", "stats_ns"};
    enum { NV = 10 };
    static double v[NV][BENCH_MAX_REPS];
    for (int r = 0; r < a.reps; r++) {
        for (int k = 0; k <= V_SEED; k++) v[k][r] = run_cp(k);
        v[6][r] = run_fn(park_main, NULL);
        v[7][r] = run_fn(spawn_main, (void *)(intptr_t)0);
        v[8][r] = run_fn(spawn_main, (void *)(intptr_t)1);
        v[9][r] = run_fn(stats_main, NULL);
        printf("rep=%d", r + 1);
        for (int k = 0; k < NV; k++) printf(" %s=%.2f", names[k], v[k][r]);
        printf("\n");
        fflush(stdout);
    }
    printf("n=%ld", n_iter);
    for (int k = 0; k < NV; k++) bench_print_stats(names[k], v[k], a.reps, 2);
    printf("\n");
    fclose(devnull);
    return 0;
}
