/*
 * bench/chan.c - memory channels: rendezvous ping-pong and a bounded
 * many-to-many pipe.
 *
 *     bench_chan [N=1000000] [mode] [reps=K]
 *
 * Modes (default: both, each rep runs pingpong then mpmc):
 *   pingpong  two tasks ping-pong a long through two capacity-0 channels,
 *             N round trips: the same work as the peers' switch programs
 *             (../shared/peers/src/libdill/switch.c, go/switch.go).  The
 *             figure is ns per one-way hand-off = elapsed / (2 N), timed
 *             around the loop of the main task only, as the peers do (the
 *             ponger is spawned and has parked in its first receive before
 *             the clock starts).  Every send and receive is a checkpoint, so
 *             each hand-off costs two task switches (see
 *             design/08-channels.md); the peers' unbuffered channels take one.
 *   mpmc      a channel of capacity 1,024; 4 producers each send N/4 longs
 *             (each through its own clone of the send handle, closed when
 *             done), 4 consumers receive until NEST_EEND.  The figure is
 *             items per second (N / elapsed), timed around nursery open to
 *             close.  Also printed: the channel's peak buffer use.
 */
#include "bench.h"

#include <nest/chan.h>

static long n_iter;

/* ---- pingpong */

static nest_chan_tx ping_tx, pong_tx;
static nest_chan_rx ping_rx, pong_rx;
static double pp_result;

static int ponger(void *arg) {
    (void)arg;
    for (long i = 0; i < n_iter; i++) {
        long v;
        bench_check(nest_chan_recv(&ping_rx, &v), "nest_chan_recv");
        bench_check(nest_chan_send(&pong_tx, &v), "nest_chan_send");
    }
    return 0;
}

static int pingpong_main(void *arg) {
    (void)arg;
    bench_check(nest_chan_open(&ping_tx, &ping_rx, sizeof(long), 0), "nest_chan_open");
    bench_check(nest_chan_open(&pong_tx, &pong_rx, sizeof(long), 0), "nest_chan_open");
    nest_nursery n;
    nest_nursery_open(&n);
    bench_check(nest_spawn(&n, ponger, NULL), "nest_spawn");
    bench_check(nest_checkpoint(), "nest_checkpoint"); /* the ponger parks in recv */
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n_iter; i++) {
        long v = i;
        bench_check(nest_chan_send(&ping_tx, &v), "nest_chan_send");
        bench_check(nest_chan_recv(&pong_rx, &v), "nest_chan_recv");
        if (v != i) {
            fprintf(stderr, "bench: pingpong got %ld, expected %ld\n", v, i);
            exit(2);
        }
    }
    int64_t t1 = bench_now_ns();
    bench_check(nest_nursery_close(&n, 0), "nest_nursery_close");
    nest_chan_tx_close(&ping_tx);
    nest_chan_rx_close(&ping_rx);
    nest_chan_tx_close(&pong_tx);
    nest_chan_rx_close(&pong_rx);
    pp_result = (double)(t1 - t0) / (2.0 * (double)(n_iter > 0 ? n_iter : 1));
    return 0;
}

/* ---- mpmc */

#define MP_PRODUCERS 4
#define MP_CONSUMERS 4
#define MP_CAPACITY 1024

static nest_chan_tx mp_tx[MP_PRODUCERS];
static nest_chan_rx mp_rx[MP_CONSUMERS];
static long mp_received[MP_CONSUMERS];
static long mp_sum[MP_CONSUMERS];
static double mp_result;
static size_t mp_peak;

static int producer(void *arg) {
    intptr_t id = (intptr_t)arg;
    long per = n_iter / MP_PRODUCERS;
    for (long i = 0; i < per; i++) {
        long v = id * per + i;
        bench_check(nest_chan_send(&mp_tx[id], &v), "nest_chan_send");
    }
    nest_chan_tx_close(&mp_tx[id]);
    return 0;
}

static int consumer(void *arg) {
    intptr_t id = (intptr_t)arg;
    long v;
    int rc;
    while ((rc = nest_chan_recv(&mp_rx[id], &v)) == 0) {
        mp_received[id]++;
        mp_sum[id] += v;
    }
    if (rc != NEST_EEND) bench_check(rc, "nest_chan_recv");
    if (id == 0) {
        nest_chan_stats st;
        bench_check(nest_chan_rx_stats(&mp_rx[id], &st), "nest_chan_rx_stats");
        mp_peak = st.peak;
    }
    nest_chan_rx_close(&mp_rx[id]);
    return 0;
}

static int mpmc_main(void *arg) {
    (void)arg;
    bench_check(nest_chan_open(&mp_tx[0], &mp_rx[0], sizeof(long), MP_CAPACITY), "nest_chan_open");
    for (int i = 1; i < MP_PRODUCERS; i++) bench_check(nest_chan_tx_clone(&mp_tx[i], &mp_tx[0]), "clone");
    for (int i = 1; i < MP_CONSUMERS; i++) bench_check(nest_chan_rx_clone(&mp_rx[i], &mp_rx[0]), "clone");
    memset(mp_received, 0, sizeof mp_received);
    memset(mp_sum, 0, sizeof mp_sum);
    nest_nursery n;
    int64_t t0 = bench_now_ns();
    nest_nursery_open(&n);
    for (intptr_t i = 0; i < MP_CONSUMERS; i++) bench_check(nest_spawn(&n, consumer, (void *)i), "nest_spawn");
    for (intptr_t i = 0; i < MP_PRODUCERS; i++) bench_check(nest_spawn(&n, producer, (void *)i), "nest_spawn");
    bench_check(nest_nursery_close(&n, 0), "nest_nursery_close");
    int64_t t1 = bench_now_ns();
    long total = MP_PRODUCERS * (n_iter / MP_PRODUCERS), got = 0, sum = 0;
    for (int i = 0; i < MP_CONSUMERS; i++) {
        got += mp_received[i];
        sum += mp_sum[i];
    }
    if (got != total || sum != total * (total - 1) / 2) {
        fprintf(stderr, "bench: mpmc received %ld items (sum %ld), expected %ld\n", got, sum, total);
        exit(2);
    }
    mp_result = (double)total / ((double)(t1 - t0) / 1e9);
    return 0;
}

/* ---- driver */

static void run(nest_fn fn) {
    int rc = nest_run(fn, NULL);
    if (rc < 0) {
        printf("error=nest_run_%s\n", nest_err_name(rc));
        exit(1);
    }
}

int main(int argc, char **argv) {
    bench_args a;
    bench_parse(&a, argc, argv);
    n_iter = bench_count(&a, 0, 1000000);
    const char *mode = a.npos > 1 ? a.pos[1] : "both";
    int do_pp = strcmp(mode, "mpmc") != 0, do_mp = strcmp(mode, "pingpong") != 0;
    static double pp[BENCH_MAX_REPS], mp[BENCH_MAX_REPS];
    for (int r = 0; r < a.reps; r++) {
        printf("rep=%d", r + 1);
        if (do_pp) {
            run(pingpong_main);
            printf(" pingpong_ns_per_handoff=%.2f", pp[r] = pp_result);
        }
        if (do_mp) {
            run(mpmc_main);
            printf(" mpmc_items_per_sec=%.0f mpmc_peak=%zu", mp[r] = mp_result, mp_peak);
        }
        printf("\n");
        fflush(stdout);
    }
    printf("round_trips=%ld", n_iter);
    if (do_pp) bench_print_stats("pingpong_ns_per_handoff", pp, a.reps, 2);
    if (do_mp) bench_print_stats("mpmc_items_per_sec", mp, a.reps, 0);
    printf("\n");
    return 0;
}
