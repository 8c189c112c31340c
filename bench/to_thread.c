/*
 * bench/to_thread.c - the cost of a nest_to_thread() round trip.
 *
 *     bench_to_thread [CALLS=20000] [TASKS=1] [BLOCK_US=0] [reps=K]
 *
 * TASKS tasks each call nest_to_thread() with a function that returns at
 * once, CALLS / TASKS times.  The figure is wall time per call
 * (ns_per_call = elapsed / CALLS): with one task, the full round trip -
 * queue the job and signal a worker (mutex, condition variable), the
 * worker runs it and wakes the runtime (ev_async_send: a write to an
 * eventfd), the scheduler wakes from epoll, reaps the job and switches
 * back to the task.  With several tasks the jobs overlap on up to 40
 * workers, and the figure is throughput, not latency.
 *
 * With BLOCK_US > 0 the function sleeps that long (usleep) instead of
 * returning at once: a job that blocks, for which spinning cannot help.
 * cpu_ns_per_call is the process's CPU time (user + system, every thread)
 * per call over the timed region, which shows what the bounded spins of
 * lib/thread.c cost when they miss.
 *
 * Also reported: the token round trip (token_ns_per_call), where another
 * thread calls nest_token_run() with a function that returns at once, so
 * each call spawns and runs a system task.
 *
 * Timed region: the calls only; the pool's first thread is created by a
 * warm-up call outside it.
 */
#include "bench.h"

#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include "nest/thread.h"

static long calls, tasks, block_us;
static int64_t t_start, t_end, cpu_start, cpu_end;

static int nothing(void *arg) {
    (void)arg;
    if (block_us > 0) usleep((useconds_t)block_us);
    return 1;
}

static int at_once(void *arg) {
    (void)arg;
    return 1;
}

static int64_t cpu_ns(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
           ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

static int caller(void *arg) {
    (void)arg;
    long n = calls / tasks;
    for (long i = 0; i < n; i++) {
        int r = 0;
        bench_check(nest_to_thread(nothing, NULL, &r, 0), "nest_to_thread");
    }
    return 0;
}

static int root(void *arg) {
    (void)arg;
    bench_check(nest_to_thread(nothing, NULL, NULL, 0), "nest_to_thread"); /* warm-up */
    t_start = bench_now_ns();
    cpu_start = cpu_ns();
    nest_nursery n;
    nest_nursery_open(&n);
    for (long i = 0; i < tasks; i++) bench_check(nest_spawn(&n, caller, NULL), "nest_spawn");
    int rc = nest_nursery_close(&n, 0);
    t_end = bench_now_ns();
    cpu_end = cpu_ns();
    return rc;
}

static nest_token *tok;

static void *token_caller(void *arg) {
    (void)arg;
    for (long i = 0; i < calls; i++) {
        int r = 0;
        bench_check(nest_token_run(tok, at_once, NULL, &r), "nest_token_run");
    }
    return NULL;
}

static int join(void *arg) {
    return pthread_join(*(pthread_t *)arg, NULL);
}

static int token_root(void *arg) {
    (void)arg;
    tok = nest_token_get();
    pthread_t th;
    t_start = bench_now_ns();
    if (pthread_create(&th, NULL, token_caller, NULL) != 0) return -EAGAIN;
    bench_check(nest_to_thread(join, &th, NULL, 0), "nest_to_thread");
    t_end = bench_now_ns();
    nest_token_release(tok);
    return 0;
}

int main(int argc, char **argv) {
    bench_args a;
    bench_parse(&a, argc, argv);
    calls = bench_count(&a, 0, 20000);
    tasks = bench_count(&a, 1, 1);
    block_us = bench_count(&a, 2, 0);
    if (calls < 1 || tasks < 1 || tasks > calls || block_us < 0) {
        fprintf(stderr, "usage: bench_to_thread [CALLS] [TASKS] [BLOCK_US] [reps=K]\n");
        return 2;
    }
    double v[BENCH_MAX_REPS], cv[BENCH_MAX_REPS], tv[BENCH_MAX_REPS];
    for (int r = 0; r < a.reps; r++) {
        bench_check(nest_run(root, NULL), "nest_run");
        v[r] = (double)(t_end - t_start) / (double)(calls / tasks * tasks);
        cv[r] = (double)(cpu_end - cpu_start) / (double)(calls / tasks * tasks);
        bench_check(nest_run(token_root, NULL), "nest_run");
        tv[r] = (double)(t_end - t_start) / (double)calls;
        printf("rep=%d calls=%ld tasks=%ld block_us=%ld ns_per_call=%.1f cpu_ns_per_call=%.1f "
               "token_ns_per_call=%.1f\n",
               r + 1, calls, tasks, block_us, v[r], cv[r], tv[r]);
    }
    printf("summary calls=%ld tasks=%ld block_us=%ld", calls, tasks, block_us);
    bench_print_stats("ns_per_call", v, a.reps, 1);
    bench_print_stats("cpu_ns_per_call", cv, a.reps, 1);
    bench_print_stats("token_ns_per_call", tv, a.reps, 1);
    printf("\n");
    return 0;
}
