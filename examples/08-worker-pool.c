/*
 * 08-worker-pool.c - a bounded channel feeds a pool of workers.
 *
 * A producer sends 12 jobs into a channel of capacity 4, then closes its
 * send handle.  Three workers, each with its own clone of the receive
 * handle, loop on nest_chan_recv() until NEST_EEND: the channel ends once
 * the last send handle is closed *and* the buffer is drained, so no job is
 * lost.  Workers send results on a second channel, each through its own
 * clone of the send handle, closed when it finishes: the collector (main)
 * sees NEST_EEND right after the last result.  Main closes its original
 * results send handle at once: left open, it would keep that channel open.
 *
 * Look for: the producer running ahead until 4 jobs are buffered, then
 * sending one job each time a worker takes one; the workers stopping after
 * the producer closed, and the collector after the last worker; all 12
 * results; a peak buffer use of 4.
 */
#include <stdio.h>

#include <nest.h>

#define NJOBS 12
#define NWORKERS 3
#define CAPACITY 4

typedef struct result {
    int job, worker, value;
} result;

typedef struct worker_arg {
    int id;
    nest_chan_rx jobs;    /* its own clones; a handle must stay in place */
    nest_chan_tx results; /* while open, so they live here, not on a stack */
} worker_arg;

static nest_time start;

static long long ms(void) {
    return (long long)((nest_now() - start) / NEST_MSEC(1));
}

static int producer(void *arg) {
    nest_chan_tx *jobs = arg; /* main's send handle, handed over to us */
    int rc = 0;
    nest_chan_stats st;
    for (int job = 1; job <= NJOBS && rc == 0; job++) {
        rc = nest_chan_send(jobs, &job); /* blocks while the buffer is full */
        if (rc == 0 && nest_chan_tx_stats(jobs, &st) == 0)
            printf("%4lld ms  producer: sent job %2d (%zu buffered)\n", ms(), job, st.buffered);
    }
    nest_chan_tx_close(jobs); /* the last send handle: the channel ends when drained */
    printf("%4lld ms  producer: closed its send handle\n", ms());
    return rc;
}

static int worker(void *arg) {
    worker_arg *w = arg;
    int job, rc;
    while ((rc = nest_chan_recv(&w->jobs, &job)) == 0) {
        result r = {job, w->id, job * job};
        rc = nest_sleep(NEST_MSEC(10 + job % 3 * 10)); /* the "work" */
        if (rc < 0 || (rc = nest_chan_send(&w->results, &r)) < 0) break;
    }
    printf("%4lld ms  worker %d: %s, closing its handles\n", ms(), w->id, nest_err_name(rc));
    nest_chan_rx_close(&w->jobs);
    nest_chan_tx_close(&w->results); /* the last one closed ends the results channel */
    return rc == NEST_EEND ? 0 : rc;
}

static int main_task(void *arg) {
    (void)arg;
    static worker_arg w[NWORKERS];
    nest_chan_tx jobs_tx, res_tx;
    nest_chan_rx jobs_rx, res_rx;
    start = nest_now();
    int rc = nest_chan_open(&jobs_tx, &jobs_rx, sizeof(int), CAPACITY);
    if (rc == 0 && (rc = nest_chan_open(&res_tx, &res_rx, sizeof(result), 0)) < 0) /* rendezvous */
        nest_chan_tx_close(&jobs_tx), nest_chan_rx_close(&jobs_rx);
    if (rc < 0) return rc;
    nest_nursery n;
    nest_nursery_open(&n);
    for (int i = 0; i < NWORKERS && rc == 0; i++) {
        w[i].id = i + 1;
        nest_chan_rx_clone(&w[i].jobs, &jobs_rx); /* cannot fail: the sources are open */
        nest_chan_tx_clone(&w[i].results, &res_tx);
        rc = nest_spawn(&n, worker, &w[i]);
        if (rc < 0) nest_chan_rx_close(&w[i].jobs), nest_chan_tx_close(&w[i].results);
    }
    nest_chan_tx_close(&res_tx); /* from now on only the workers' clones can send results */
    if (rc == 0) rc = nest_spawn(&n, producer, &jobs_tx);
    if (rc < 0) nest_chan_tx_close(&jobs_tx); /* no producer took it over */

    result got[NJOBS] = {{0}}, r; /* the collector: receive until every worker is done */
    int ngot = 0;
    while (rc == 0 && (rc = nest_chan_recv(&res_rx, &r)) == 0)
        if (r.job >= 1 && r.job <= NJOBS && got[r.job - 1].job == 0) got[r.job - 1] = r, ngot++;
    printf("%4lld ms  collector: %s, every result is in\n", ms(), nest_err_name(rc));
    rc = nest_nursery_close(&n, rc == NEST_EEND ? 0 : rc);
    nest_chan_rx_close(&res_rx);

    int ok = rc == 0 && ngot == NJOBS; /* got[] is in job order: stored by job number */
    for (int i = 0; i < NJOBS; i++) {
        printf("  job %2d -> %3d  (worker %d)\n", i + 1, got[i].value, got[i].worker);
        ok = ok && got[i].value == (i + 1) * (i + 1);
    }
    /* Main kept a jobs receive handle just for this; it did not keep the channel from ending. */
    nest_chan_stats st;
    nest_chan_rx_stats(&jobs_rx, &st);
    nest_chan_rx_close(&jobs_rx);
    printf("jobs channel: %llu sent (%llu straight to a waiting worker), peak buffer use %zu/%zu\n",
           (unsigned long long)st.sent, (unsigned long long)st.direct, st.peak, st.capacity);
    ok = ok && st.sent == NJOBS && st.peak <= CAPACITY;
    printf("%s: %d of %d results collected\n", ok ? "ok" : "FAILED", ngot, NJOBS);
    return ok ? 0 : (rc < 0 ? rc : -EPROTO);
}

int main(void) {
    return nest_run(main_task, NULL) < 0;
}
