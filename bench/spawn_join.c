/*
 * bench/spawn_join.c - spawn N tasks whose body returns at once into one
 * nursery, then close it (the peers' spawn_join: trio nursery, asyncio
 * TaskGroup, Go WaitGroup, libdill bundle).
 *
 *     bench_spawn_join [N=100000] [reps=K]
 *
 * The timed region is nursery open + N spawns + close (which waits for all
 * N), as in the peers' programs; the figure is ns per task.  nest_spawn never
 * runs the child inside the call, so all N tasks exist before the first one
 * runs (like trio/asyncio; unlike libdill, whose go() runs each child at once
 * so that only one is ever alive).
 *
 * One runtime runs 1 + REPS repetitions:
 *   rep=0 "cold": the first in a fresh process.  Its task control blocks and
 *         the first stacks are freshly mapped memory, so it pays one
 *         first-touch page fault (~2-3 us on the benchmark VM) for every page
 *         the runtime touches for the first time;
 *   rep=1..REPS "warm": the same runtime again; control blocks and stacks
 *         come from nest's caches.
 * Each line also shows minor page faults (ru_minflt) taken during the rep.
 */
#include "bench.h"

static long n_tasks;
static int reps;
static double ns_total[BENCH_MAX_REPS + 1];

static int child(void *arg) {
    (void)arg;
    return 0;
}

static long minflt(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

static int main_task(void *arg) {
    (void)arg;
    for (int r = 0; r <= reps; r++) {
        long f0 = minflt();
        int64_t t0 = bench_now_ns();
        nest_nursery n;
        nest_nursery_open(&n);
        for (long i = 0; i < n_tasks; i++) bench_check(nest_spawn(&n, child, NULL), "nest_spawn");
        int64_t t1 = bench_now_ns();
        bench_check(nest_nursery_close(&n, 0), "nest_nursery_close");
        int64_t t2 = bench_now_ns();
        long f1 = minflt();
        double dn = n_tasks > 0 ? (double)n_tasks : 1.0;
        ns_total[r] = (double)(t2 - t0) / dn;
        printf("rep=%d phase=%s ns_per_task=%.1f spawn_ns_per_task=%.1f join_ns_per_task=%.1f "
               "minflt=%ld\n",
               r, r == 0 ? "cold" : "warm", ns_total[r], (double)(t1 - t0) / dn,
               (double)(t2 - t1) / dn, f1 - f0);
        fflush(stdout);
    }
    return 0;
}

int main(int argc, char **argv) {
    bench_args a;
    bench_parse(&a, argc, argv);
    n_tasks = bench_count(&a, 0, 100000);
    reps = a.reps;
    int rc = nest_run(main_task, NULL);
    if (rc < 0) {
        printf("error=nest_run_%s\n", nest_err_name(rc));
        return 1;
    }
    printf("n=%ld cold_ns_per_task=%.1f", n_tasks, ns_total[0]);
    bench_print_stats("warm_ns_per_task", ns_total + 1, reps, 1);
    printf(" peak_rss_kib=%ld\n", bench_peak_rss_kib());
    return 0;
}
