/*
 * bench/lock.c - a contended nest_lock among N tasks.
 *
 *     bench_lock [N|all] [PAIRS=1000000] [reps=K]
 *
 * N tasks each loop: nest_lock_acquire -> nest_checkpoint -> nest_lock_release,
 * PAIRS / N times (at least once).  The figure is ns per acquire/release
 * pair = elapsed / (N * iterations).  With N = all (the default) the run is
 * repeated for N = 10, 100, 1,000, 10,000 and 100,000; the target
 * is a flat line: the cost of a pair must not depend on how many tasks wait.
 *
 * What a pair costs: the lock is handed off (lib/lock.c), so every release
 * with waiters makes the next waiter the owner and wakes it, and the
 * releaser's next acquire parks it at the back of the queue; each pair is
 * therefore one wake, one park and one task switch, plus the checkpoint
 * (which finds nothing else runnable and does not switch).  None of it
 * walks the queue, hence flat.
 *
 * Timed region: from the moment every task is parked on the lock (the root
 * holds it while they start, so stack binding and first runs are not
 * timed) to the last release.  Task exits are not timed.
 *
 * The baseline (ring_ns_per_switch): the same N tasks, each looping
 * nest_checkpoint() the same number of times with no lock, so every
 * checkpoint switches to the next of the N tasks in turn - the same
 * round-robin walk over N stacks and control blocks as the lock's queue
 * makes.  With N large the working set (a stack page and a control block
 * per task) outgrows the caches and the TLB, and both figures rise
 * together; lock_minus_ring is the lock's own cost.
 */
#include "bench.h"

#include "nest/sync.h"

static nest_lock lock;
static long n_tasks, iters;
static long pairs_done, pairs_total;
static int64_t t_start, t_end;

static int contender(void *arg) {
    (void)arg;
    for (long i = 0; i < iters; i++) {
        bench_check(nest_lock_acquire(&lock), "nest_lock_acquire");
        bench_check(nest_checkpoint(), "nest_checkpoint");
        nest_lock_release(&lock);
        if (++pairs_done == pairs_total) t_end = bench_now_ns();
    }
    return 0;
}

static int ringer(void *arg) {
    (void)arg;
    for (long i = 0; i < iters; i++) bench_check(nest_checkpoint(), "nest_checkpoint");
    if (++pairs_done == n_tasks) t_end = bench_now_ns(); /* the last one finished */
    return 0;
}

static nest_event go;

/* Baseline: N tasks start, wait for `go`, then checkpoint in a ring. */
static int ring_member(void *arg) {
    bench_check(nest_event_wait(&go), "nest_event_wait");
    return ringer(arg);
}

static int ring_task(void *arg) {
    (void)arg;
    nest_event_init(&go);
    nest_nursery n;
    nest_nursery_open(&n);
    for (long i = 0; i < n_tasks; i++) bench_check(nest_spawn(&n, ring_member, NULL), "nest_spawn");
    bench_check(nest_wait_all_tasks_blocked(), "nest_wait_all_tasks_blocked");
    t_start = bench_now_ns();
    nest_event_set(&go);
    return nest_nursery_close(&n, 0);
}

static int main_task(void *arg) {
    (void)arg;
    nest_lock_init(&lock);
    bench_check(nest_lock_acquire(&lock), "nest_lock_acquire");
    nest_nursery n;
    nest_nursery_open(&n);
    for (long i = 0; i < n_tasks; i++) bench_check(nest_spawn(&n, contender, NULL), "nest_spawn");
    /* Every contender has run once and parked on the lock. */
    bench_check(nest_wait_all_tasks_blocked(), "nest_wait_all_tasks_blocked");
    nest_lock_stats st;
    nest_lock_statistics(&lock, &st);
    if ((long)st.waiters != n_tasks) {
        fprintf(stderr, "bench: %zu tasks wait on the lock, expected %ld\n", st.waiters, n_tasks);
        exit(2);
    }
    t_start = bench_now_ns();
    nest_lock_release(&lock);
    return nest_nursery_close(&n, 0);
}

/* One run with n tasks; returns ns per pair (ring: ns per checkpoint). */
static double run_once(long n, long pairs, int ring) {
    n_tasks = n;
    iters = pairs / n > 0 ? pairs / n : 1;
    pairs_total = n * iters;
    pairs_done = 0;
    t_start = t_end = 0;
    int rc = nest_run(ring ? ring_task : main_task, NULL);
    if (rc < 0) {
        printf("error=nest_run_%s\n", nest_err_name(rc));
        exit(1);
    }
    if (pairs_done != (ring ? n : pairs_total)) {
        fprintf(stderr, "bench: %ld done, expected %ld\n", pairs_done, ring ? n : pairs_total);
        exit(2);
    }
    return (double)(t_end - t_start) / (double)pairs_total;
}

int main(int argc, char **argv) {
    bench_args a;
    bench_parse(&a, argc, argv);
    static const long sweep[] = {10, 100, 1000, 10000, 100000};
    long ns[5];
    int nn = 0;
    if (a.npos > 0 && strcmp(a.pos[0], "all") != 0) {
        ns[nn++] = bench_count(&a, 0, 1000);
    } else {
        for (int i = 0; i < 5; i++) ns[nn++] = sweep[i];
    }
    long pairs = bench_count(&a, 1, 1000000);
    static double v[5][BENCH_MAX_REPS], w[5][BENCH_MAX_REPS], d[5][BENCH_MAX_REPS];
    for (int r = 0; r < a.reps; r++) {
        printf("rep=%d", r + 1);
        for (int i = 0; i < nn; i++) {
            v[i][r] = run_once(ns[i], pairs, 0);
            w[i][r] = run_once(ns[i], pairs, 1);
            d[i][r] = v[i][r] - w[i][r];
            printf(" n%ld_ns_per_pair=%.2f n%ld_ring_ns_per_switch=%.2f", ns[i], v[i][r], ns[i],
                   w[i][r]);
            fflush(stdout);
        }
        printf("\n");
    }
    printf("pairs=%ld", pairs);
    for (int i = 0; i < nn; i++) {
        char key[64];
        snprintf(key, sizeof key, "n%ld_ns_per_pair", ns[i]);
        bench_print_stats(key, v[i], a.reps, 2);
        snprintf(key, sizeof key, "n%ld_ring_ns_per_switch", ns[i]);
        bench_print_stats(key, w[i], a.reps, 2);
        snprintf(key, sizeof key, "n%ld_lock_minus_ring_ns", ns[i]);
        bench_print_stats(key, d[i], a.reps, 2);
    }
    printf("\n");
    return 0;
}
