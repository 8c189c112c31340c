/*
 * 02-nursery.c - a nursery waits for all its children; results via handles.
 *
 * The root task spawns five workers from a loop.  Each worker "computes" the
 * square of its number and returns it; a task's return value >= 0 means
 * success.  Worker i sleeps (5 - i) * 50 ms first, so they finish in the
 * reverse order of their spawning.
 *
 * nest_spawn_options.handle gives the body a handle to each child, valid
 * until the nursery's close returns.  nest_task_wait(handle, &result) blocks
 * until that child has returned and hands over its return value.  A sixth,
 * "straggler" child is spawned without a handle: nobody waits for it
 * explicitly, yet nest_nursery_close() still does.
 *
 * Look for: the "finished" lines in reverse order; the results collected in
 * spawn order (the first wait lasts until worker 0, the last to finish, and
 * the other workers are done by then); the nursery closing only after the
 * straggler.
 */
#include <stdio.h>

#include <nest.h>

#define NWORKERS 5

static nest_time start;

static long long ms(void) {
    return (long long)((nest_now() - start) / NEST_MSEC(1));
}

static int worker(void *arg) {
    int i = *(const int *)arg;
    int rc = nest_sleep(NEST_MSEC((NWORKERS - i) * 50));
    if (rc < 0) return rc;
    printf("%4lld ms  worker %d finished\n", ms(), i);
    return i * i; /* the result, read by nest_task_wait() */
}

static int straggler(void *arg) {
    (void)arg;
    int rc = nest_sleep(NEST_MSEC(400));
    if (rc < 0) return rc;
    printf("%4lld ms  straggler finished\n", ms());
    return 0;
}

static int main_task(void *arg) {
    (void)arg;
    static int ids[NWORKERS];     /* each worker's argument; outlives it */
    nest_task *handles[NWORKERS]; /* valid until the nursery has closed */

    start = nest_now();
    nest_nursery n;
    nest_nursery_open(&n);
    int rc = 0;
    for (int i = 0; i < NWORKERS && rc == 0; i++) {
        ids[i] = i;
        nest_spawn_options o = {.handle = &handles[i]};
        rc = nest_spawn_opts(&n, worker, &ids[i], &o);
    }
    if (rc == 0) rc = nest_spawn(&n, straggler, NULL);
    printf("%4lld ms  main: spawned %d workers and a straggler\n", ms(), NWORKERS);

    /* Collect the results in spawn order. */
    int sum = 0;
    for (int i = 0; i < NWORKERS && rc == 0; i++) {
        int result;
        rc = nest_task_wait(handles[i], &result);
        if (rc < 0) break; /* cancelled: e.g. a worker failed; close reports it */
        printf("%4lld ms  main: worker %d returned %d\n", ms(), i, result);
        sum += result;
    }
    printf("%4lld ms  main: sum of squares = %d; closing the nursery\n", ms(), sum);

    /* The straggler is still running: close waits for it too. */
    rc = nest_nursery_close(&n, rc);
    printf("%4lld ms  main: nursery closed, rc = %d\n", ms(), rc);
    return rc == 0 && sum != 0 + 1 + 4 + 9 + 16 ? -EPROTO : rc; /* the squares of 0..4 */
}

int main(void) {
    return nest_run(main_task, NULL) < 0;
}
