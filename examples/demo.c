/*
 * demo.c - nest at a glance: a batch of concurrent requests under deadlines.
 *
 * Five simulated requests run at the same time, each a task that "waits on
 * the network" with nest_sleep().  Every request has its own deadline
 * (nest_fail_after: expiry turns into -ETIMEDOUT) and the batch as a whole
 * has one more (nest_move_on_after around the nursery: expiry just ends the
 * batch early, without an error).
 *
 * Batch 1 lets errors propagate: when "charlie" fails with ECONNRESET, the
 * nursery cancels its siblings at once and nest_nursery_close() returns the
 * error.  Batch 2 runs the same requests, but each request handles its own
 * errors (records them and returns 0), so the batch runs on until the batch
 * deadline stops the last straggler.
 *
 * All of it runs in one thread, in about one second of real time.
 */
#include <stdio.h>
#include <string.h>

#include <nest.h>

#define REQUEST_DEADLINE NEST_MSEC(400) /* per request, from when it starts */
#define BATCH_DEADLINE NEST_MSEC(700)   /* for the whole batch */

/* One simulated request: when it starts, how long the "server" takes to
 * answer and which error the answer carries (0: success). */
struct request {
    const char *name;
    int start_ms, latency_ms, error;
    int rc;         /* outcome: 0, -ETIMEDOUT, -ECANCELED or the error */
    nest_time done; /* when it finished, ns since the batch started */
};

static struct request reqs[] = {
    {.name = "alpha", .start_ms = 0, .latency_ms = 100},  /* quick: ok */
    {.name = "bravo", .start_ms = 50, .latency_ms = 600}, /* slower than its deadline */
    {.name = "charlie", .start_ms = 100, .latency_ms = 200, .error = -ECONNRESET},
    {.name = "delta", .start_ms = 350, .latency_ms = 300}, /* late, but quick enough */
    {.name = "echo", .start_ms = 400, .latency_ms = 350},  /* ends after the batch's */
};
#define NREQS ((int)(sizeof reqs / sizeof reqs[0]))

static nest_time batch_start; /* nest_now() when the current batch began */
static int handle_errors;     /* batch 2: each request keeps its errors */

static int request(void *arg) {
    struct request *r = arg;
    int rc = nest_sleep(NEST_MSEC(r->start_ms)); /* wait for our turn */
    if (rc == 0) {
        nest_scope deadline;
        nest_fail_after(&deadline, REQUEST_DEADLINE);
        rc = nest_sleep(NEST_MSEC(r->latency_ms)); /* the "network I/O" */
        if (rc == 0) rc = r->error;                /* the server's answer */
        /* A -ECANCELED caused by our own deadline becomes -ETIMEDOUT here;
         * one caused by the nursery or the batch deadline passes through. */
        rc = nest_scope_exit(&deadline, rc);
    }
    r->rc = rc;
    r->done = nest_now() - batch_start;
    /* Handling an error means not returning it.  A cancellation is never
     * handled here: it goes back up to the scope that caused it. */
    if (handle_errors && rc != -ECANCELED) return 0;
    return rc;
}

static const char *outcome(int rc) {
    static char buf[64];
    if (rc == 0) return "ok";
    if (rc == -ETIMEDOUT) return "timed out (its own deadline)";
    if (rc == -ECANCELED) return "cancelled";
    snprintf(buf, sizeof buf, "failed: %s", nest_strerror(rc));
    return buf;
}

static int run_batch(int number) {
    printf("batch %d: %s\n", number,
           handle_errors ? "each request handles its own errors"
                         : "errors propagate: the first one cancels the rest");
    batch_start = nest_now();

    /* One deadline for the whole batch, around the nursery. */
    nest_scope batch;
    nest_move_on_after(&batch, BATCH_DEADLINE);
    nest_nursery n;
    nest_nursery_open(&n);
    int rc = 0;
    for (int i = 0; i < NREQS && rc == 0; i++) {
        /* Name each task after its request, so failures say who failed. */
        nest_spawn_options o = {.name = reqs[i].name};
        rc = nest_spawn_opts(&n, request, &reqs[i], &o);
    }
    /* Close waits for every request; it returns the first failure, or
     * -ECANCELED if the batch deadline cut the requests short. */
    int closed = nest_nursery_close(&n, rc);
    /* The batch scope absorbs a cancellation that it caused itself. */
    rc = nest_scope_exit(&batch, closed);
    nest_time took = nest_now() - batch_start;

    /* The account, in request order (the tasks finished in time order). */
    int count[4] = {0}; /* ok, timed out, cancelled, failed */
    for (int i = 0; i < NREQS; i++) {
        struct request *r = &reqs[i];
        printf("  %-8s planned at %3d ms, needs %3d ms  ->  %-32s at %4lld ms\n", r->name,
               r->start_ms, r->latency_ms, outcome(r->rc), (long long)(r->done / NEST_MSEC(1)));
        count[r->rc == 0 ? 0 : r->rc == -ETIMEDOUT ? 1 : r->rc == -ECANCELED ? 2 : 3]++;
    }
    printf("  => %d ok, %d timed out, %d cancelled, %d failed in %lld ms\n", count[0], count[1],
           count[2], count[3], (long long)(took / NEST_MSEC(1)));
    printf("     nursery close: %s; batch deadline: %s; batch result: %s\n", nest_err_name(closed),
           nest_scope_cancelled_caught(&batch) ? "reached, absorbed" : "not reached",
           nest_err_name(rc));

    /* Every failure is recorded, even those that arrive after the first. */
    int nf = nest_nursery_failure_count(&n);
    printf("     nursery recorded %d failure%s\n", nf, nf == 1 ? "" : "s");
    for (int i = 0; i < nf; i++) {
        nest_failure f;
        if (nest_nursery_failure(&n, i, &f) < 0) break; /* only the first few are kept */
        const char *file = strrchr(f.file, '/') ? strrchr(f.file, '/') + 1 : f.file;
        printf("       %s: %s (%s), spawned at %s:%d\n", f.task, nest_strerror(f.code),
               nest_err_name(f.code), file, f.line);
    }
    return rc;
}

static int main_task(void *arg) {
    (void)arg;
    printf("%d requests; each has a %lld ms deadline, the batch has %lld ms\n\n", NREQS,
           (long long)(REQUEST_DEADLINE / NEST_MSEC(1)),
           (long long)(BATCH_DEADLINE / NEST_MSEC(1)));
    int rc1 = run_batch(1); /* expected: charlie's ECONNRESET */
    printf("\n");
    handle_errors = 1;
    int rc2 = run_batch(2); /* expected: 0, the deadline was absorbed */
    return rc1 == -ECONNRESET && rc2 == 0 ? 0 : -EPROTO;
}

int main(void) {
    int rc = nest_run(main_task, NULL);
    if (rc < 0) fprintf(stderr, "demo: unexpected result: %s\n", nest_strerror(rc));
    return rc < 0;
}
