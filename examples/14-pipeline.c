/*
 * 14-pipeline.c - stages connected by channels, with a deadline on the job.
 *
 * generate -> transform -> sink: three tasks in one nursery, connected by
 * two channels of capacity 2.  Each stage owns its handles and closes them
 * when it stops, whatever the reason: closing a send handle tells the next
 * stage "no more" (NEST_EEND once drained).  The job runs inside
 * nest_move_on_after(): at the deadline every stage is cancelled wherever
 * it is blocked (sleeping, sending, receiving), closes its handles and
 * returns -ECANCELED; the nursery passes that on, the scope absorbs it, and
 * nest_scope_cancelled_caught() says the job was cut short.  The job runs
 * twice with a 200 ms deadline: with a fast transform (done in ~50 ms),
 * then with one that takes 80 ms per item.
 *
 * Look for: run 1 delivering all 8 items in order, the scope not cancelled;
 * run 2 delivering the first two, every stage stopping at 200 ms with
 * ECANCELED, and the scope absorbing the cancellation (rc OK).
 */
#include <stdio.h>

#include <nest.h>

#define NITEMS 8
#define DEADLINE_MS 200

typedef struct job {
    nest_chan_tx gen_tx, xf_tx; /* generate -> transform -> sink */
    nest_chan_rx xf_rx, sink_rx;
    int xf_ms, sent, got[NITEMS], ngot; /* xf_ms: transform's time per item */
} job;

static nest_time start;

static long long ms(void) {
    return (long long)((nest_now() - start) / NEST_MSEC(1));
}

static int stopped(const char *stage, int rc) {
    printf("%4lld ms    %-9s stopped: %s\n", ms(), stage, nest_err_name(rc));
    return rc == NEST_EEND ? 0 : rc;
}

static int generate(void *arg) {
    job *j = arg;
    int rc = 0;
    for (int i = 1; i <= NITEMS && rc == 0; i++) {
        rc = nest_sleep(NEST_MSEC(5)); /* producing an item takes a while */
        if (rc == 0 && (rc = nest_chan_send(&j->gen_tx, &i)) == 0) j->sent++;
    }
    nest_chan_tx_close(&j->gen_tx); /* transform sees NEST_EEND after the last item */
    return stopped("generate", rc);
}

static int transform(void *arg) {
    job *j = arg;
    int x, rc;
    while ((rc = nest_chan_recv(&j->xf_rx, &x)) == 0) {
        int y = x * x;
        rc = nest_sleep(NEST_MSEC(j->xf_ms)); /* the transformation's work */
        if (rc < 0 || (rc = nest_chan_send(&j->xf_tx, &y)) < 0) break;
    }
    nest_chan_rx_close(&j->xf_rx);
    nest_chan_tx_close(&j->xf_tx);
    return stopped("transform", rc);
}

static int sink(void *arg) {
    job *j = arg;
    int y, rc;
    while ((rc = nest_chan_recv(&j->sink_rx, &y)) == 0) {
        printf("%4lld ms    sink got %d\n", ms(), y);
        if (j->ngot < NITEMS) j->got[j->ngot++] = y;
    }
    nest_chan_rx_close(&j->sink_rx);
    return stopped("sink", rc);
}

/* Runs the pipeline under the deadline; returns 1 if it behaved as expected. */
static int run(const char *title, int xf_ms, int expect_cut) {
    job j = {.xf_ms = xf_ms};
    printf("%s: transform takes %d ms per item, deadline %d ms\n", title, xf_ms, DEADLINE_MS);
    if (nest_chan_open(&j.gen_tx, &j.xf_rx, sizeof(int), 2) < 0) return 0;
    if (nest_chan_open(&j.xf_tx, &j.sink_rx, sizeof(int), 2) < 0)
        return nest_chan_tx_close(&j.gen_tx), nest_chan_rx_close(&j.xf_rx), 0;
    start = nest_now();
    nest_scope s;
    nest_move_on_after(&s, NEST_MSEC(DEADLINE_MS));
    nest_nursery n;
    nest_nursery_open(&n);
    int rc = nest_spawn(&n, generate, &j); /* each stage owns its handles from here */
    if (rc == 0) rc = nest_spawn(&n, transform, &j);
    if (rc == 0) rc = nest_spawn(&n, sink, &j);
    rc = nest_nursery_close(&n, rc); /* -ECANCELED when the deadline cut it short */
    /* Handles no stage took over (a failed spawn); closing a closed one: NEST_ECLOSED. */
    nest_chan_tx_close(&j.gen_tx), nest_chan_rx_close(&j.xf_rx);
    nest_chan_tx_close(&j.xf_tx), nest_chan_rx_close(&j.sink_rx);
    printf("%4lld ms  nursery closed: %s\n", ms(), nest_err_name(rc));
    rc = nest_scope_exit(&s, rc); /* absorbs the deadline's cancellation */
    printf("%4lld ms  scope exited: %s; cancelled_caught = %d\n", ms(), nest_err_name(rc),
           nest_scope_cancelled_caught(&s));
    int in_order = 1;
    for (int i = 0; i < j.ngot; i++) in_order = in_order && j.got[i] == (i + 1) * (i + 1);
    printf("  %d items entered, %d delivered (in order: %s), %d dropped on the way\n\n", j.sent,
           j.ngot, in_order ? "yes" : "NO", j.sent - j.ngot);
    return rc == 0 && in_order && nest_scope_cancelled_caught(&s) == expect_cut &&
           (expect_cut ? j.ngot < NITEMS : j.ngot == NITEMS);
}

static int main_task(void *arg) {
    (void)arg;
    int ok = run("run 1: every stage fast", 2, 0);
    ok = run("run 2: a slow transform", 80, 1) && ok;
    printf("%s\n", ok ? "ok: the first run completed, the second was cut short cleanly" : "FAILED");
    return ok ? 0 : -EPROTO;
}

int main(void) {
    return nest_run(main_task, NULL) < 0;
}
