/*
 * 01-hello.c - two tasks taking turns.
 *
 * nest_run() starts a runtime on this thread and runs one root task.  The
 * root task opens a nursery, spawns two children into it and closes it;
 * nest_nursery_close() waits until both children have returned, so when it
 * returns nothing is left running.
 *
 * Both children loop over nest_sleep().  While one sleeps the other runs, so
 * their lines interleave even though everything happens in one thread:
 * "ping" speaks every 100 ms, "pong" every 130 ms.  Look for the printed
 * times: ping at ~100, 200, 300 ms, pong at ~130, 260, 390 ms, and the
 * nursery closing only after the last pong.
 */
#include <stdio.h>

#include <nest.h>

static nest_time start; /* when the run began, to print relative times */

static long long ms_since_start(void) {
    return (long long)((nest_now() - start) / NEST_MSEC(1));
}

/* What each child says and how often. */
struct voice {
    const char *word;
    nest_time interval;
};

static int speak(void *arg) {
    const struct voice *v = arg;
    for (int i = 1; i <= 3; i++) {
        /* A checkpoint: other tasks run while this one sleeps. */
        int rc = nest_sleep(v->interval);
        if (rc < 0) return rc; /* cancelled (cannot happen here) */
        printf("%4lld ms  %s %d\n", ms_since_start(), v->word, i);
    }
    return 0;
}

static int main_task(void *arg) {
    (void)arg;
    static const struct voice ping = {"ping", NEST_MSEC(100)};
    static const struct voice pong = {"        pong", NEST_MSEC(130)};

    start = nest_now();
    nest_nursery n;
    nest_nursery_open(&n);
    /* nest_spawn only queues the child: neither has run yet when it returns. */
    int rc = nest_spawn(&n, speak, (void *)&ping);
    if (rc == 0) rc = nest_spawn(&n, speak, (void *)&pong);
    printf("%4lld ms  main: two tasks spawned, now waiting for them\n", ms_since_start());
    /* Waits for both children; rc is the body's own result (0 here, or a
     * spawn failure, which would cancel the child already spawned). */
    rc = nest_nursery_close(&n, rc);
    printf("%4lld ms  main: nursery closed, rc = %d (%s)\n", ms_since_start(), rc,
           nest_strerror(rc));
    return rc;
}

int main(void) {
    /* nest_run returns what the root task returned. */
    return nest_run(main_task, NULL) < 0;
}
