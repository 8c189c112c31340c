/*
 * 04-child-error.c - a failing child cancels its siblings.
 *
 * When a child returns a negative code, its nursery cancels everything else
 * in it: the body and every sibling get -ECANCELED at their next checkpoint
 * (here: they wake from their sleeps at once).  nest_nursery_close() waits
 * for all of them and returns the *first* failure.  Nothing is dropped: a
 * sibling that fails too while it unwinds (here "writer", whose final flush
 * fails) is recorded as well; nest_nursery_failure_count() and
 * nest_nursery_failure() list them all, and an on_failure callback sees each
 * one as it happens.  -ECANCELED caused by the nursery itself is not a
 * failure.
 *
 * Look for: "flaky" failing at ~100 ms, the others waking at the same moment
 * instead of at 1 s, close returning EIO, and two failures listed.
 */
#include <stdio.h>

#include <nest.h>

static nest_time start;

static long long ms(void) {
    return (long long)((nest_now() - start) / NEST_MSEC(1));
}

static int flaky(void *arg) {
    (void)arg;
    int rc = nest_sleep(NEST_MSEC(100));
    if (rc < 0) return rc;
    printf("%4lld ms  flaky:  the device failed, returning EIO\n", ms());
    return -EIO;
}

static int slow(void *arg) {
    (void)arg;
    int rc = nest_sleep(NEST_SEC(1)); /* would take 1 s */
    printf("%4lld ms  slow:   sleep returned %s\n", ms(), nest_err_name(rc));
    return rc; /* -ECANCELED: not a failure, the nursery caused it */
}

static int writer(void *arg) {
    (void)arg;
    int rc = nest_sleep(NEST_SEC(1));
    printf("%4lld ms  writer: sleep returned %s; its buffer cannot be flushed\n", ms(),
           nest_err_name(rc));
    return rc == -ECANCELED ? -EPIPE : rc; /* fails while being cancelled */
}

static void on_failure(void *arg, const nest_failure *f) {
    (void)arg;
    printf("%4lld ms  on_failure: %s failed with %s\n", ms(), f->task, nest_err_name(f->code));
}

static int main_task(void *arg) {
    (void)arg;
    start = nest_now();
    nest_nursery n;
    nest_nursery_open(&n);
    nest_nursery_on_failure(&n, on_failure, NULL);
    int rc = nest_spawn(&n, slow, NULL);
    if (rc == 0) rc = nest_spawn(&n, flaky, NULL);
    if (rc == 0) rc = nest_spawn(&n, writer, NULL);
    if (rc == 0) {
        rc = nest_sleep(NEST_SEC(1)); /* the body is cancelled too */
        printf("%4lld ms  body:   sleep returned %s\n", ms(), nest_err_name(rc));
    }
    rc = nest_nursery_close(&n, rc); /* the body's -ECANCELED is not a failure */
    printf("%4lld ms  close returned %s (%s): the first failure\n", ms(), nest_err_name(rc),
           nest_strerror(rc));

    int count = nest_nursery_failure_count(&n);
    printf("%d failures recorded:\n", count);
    nest_failure f;
    for (int i = 0; nest_nursery_failure(&n, i, &f) == 0; i++)
        printf("  %d. %-6s %-7s %s\n", i + 1, f.task, nest_err_name(f.code), nest_strerror(f.code));
    /* The example succeeds when the failure arrived as expected. */
    return rc == -EIO && count == 2 ? 0 : -EPROTO;
}

int main(void) {
    return nest_run(main_task, NULL) < 0;
}
