/*
 * bench/switch.c - two tasks handing control back and forth.
 *
 *     bench_switch [N=1000000] [mode] [reps=K]
 *
 * Two tasks each run a loop of N iterations; the figure is ns per one-way
 * switch = elapsed / (2 N), as in the peers' switch programs (N round trips,
 * 2 N switches).  The timed region is nursery open + 2 spawns + close.
 *
 * Modes (default: all three, one after the other in each rep):
 *   checkpoint  each iteration is one nest_checkpoint(): with exactly two
 *               runnable tasks every checkpoint switches to the other one.
 *               This is nest's raw scheduler + context-switch cost.
 *   pingpong    a strict ping-pong through a hand-rolled rendezvous built
 *               from the public API only, the way a zero-capacity channel
 *               would work: a task waits for its turn by entering a cancel
 *               scope, publishing it and calling nest_sleep_forever(); the
 *               other task hands over the turn by nest_scope_cancel() on the
 *               published scope (wake) and then waits itself (park).  Every
 *               one-way handoff is therefore wake-peer + park-self + scope
 *               enter/exit, i.e. what the peers' unbuffered channel
 *               send/receive pairs do (no payload is copied), built only
 *               from cancel scopes.
 *   parklot     the same strict ping-pong on nest's parking lot
 *               (nest/lowlevel.h), the primitive nest's synchronisation
 *               objects are built on: a player waits with nest_park() in its
 *               own lot and hands over with nest_unpark() on the other's.
 *               This is the closest equivalent of the peers' channel
 *               ping-pong until nest's channels land.
 */
#include "bench.h"

static long n_iter;

/* ---- checkpoint mode */

static int checkpointer(void *arg) {
    (void)arg;
    for (long i = 0; i < n_iter; i++) bench_check(nest_checkpoint(), "nest_checkpoint");
    return 0;
}

/* ---- pingpong mode: the rendezvous */

static struct {
    int turn;               /* whose turn it is: 0 or 1 */
    nest_scope *parked[2];  /* the scope a waiting player sleeps in */
    long value;             /* the "token", incremented by each handoff */
} baton;

static void wait_turn(int me) {
    while (baton.turn != me) {
        nest_scope s;
        nest_scope_enter(&s, NEST_FOREVER);
        baton.parked[me] = &s;
        int rc = nest_sleep_forever(); /* -ECANCELED when the peer hands over */
        baton.parked[me] = NULL;
        bench_check(nest_scope_exit(&s, rc), "rendezvous wait");
    }
}

static void pass_turn(int me) {
    baton.value++;
    baton.turn = 1 - me;
    nest_scope *p = baton.parked[1 - me];
    if (p) nest_scope_cancel(p);
}

static int player(void *arg) {
    int me = (int)(intptr_t)arg;
    for (long i = 0; i < n_iter; i++) {
        wait_turn(me);
        pass_turn(me);
    }
    return 0;
}

/* ---- parklot mode: the same rendezvous on nest's parking lot
 * (nest/lowlevel.h), the primitive nest's own channels are built on */

static struct {
    int turn;
    nest_parking_lot lot[2]; /* where player i waits for its turn */
    long value;
} pl;

static int parker(void *arg) {
    int me = (int)(intptr_t)arg;
    for (long i = 0; i < n_iter; i++) {
        while (pl.turn != me) {
            nest_waiter w;
            bench_check(nest_park(&pl.lot[me], &w, NULL, NULL), "nest_park");
        }
        pl.value++;
        pl.turn = 1 - me;
        nest_unpark(&pl.lot[1 - me], 1, 0);
    }
    return 0;
}

/* ---- driver */

static int run_mode; /* 0 checkpoint, 1 pingpong, 2 parklot */
static double result_ns;

static int main_task(void *arg) {
    (void)arg;
    nest_nursery n;
    int64_t t0 = bench_now_ns();
    nest_nursery_open(&n);
    if (run_mode == 0) {
        bench_check(nest_spawn(&n, checkpointer, NULL), "nest_spawn");
        bench_check(nest_spawn(&n, checkpointer, NULL), "nest_spawn");
    } else if (run_mode == 2) {
        pl.turn = 0;
        pl.value = 0;
        nest_parking_lot_init(&pl.lot[0]);
        nest_parking_lot_init(&pl.lot[1]);
        bench_check(nest_spawn(&n, parker, (void *)(intptr_t)0), "nest_spawn");
        bench_check(nest_spawn(&n, parker, (void *)(intptr_t)1), "nest_spawn");
    } else {
        baton.turn = 0;
        baton.parked[0] = baton.parked[1] = NULL;
        baton.value = 0;
        bench_check(nest_spawn(&n, player, (void *)(intptr_t)0), "nest_spawn");
        bench_check(nest_spawn(&n, player, (void *)(intptr_t)1), "nest_spawn");
    }
    bench_check(nest_nursery_close(&n, 0), "nest_nursery_close");
    int64_t t1 = bench_now_ns();
    long handoffs = run_mode == 1 ? baton.value : run_mode == 2 ? pl.value : 2 * n_iter;
    if (handoffs != 2 * n_iter) {
        fprintf(stderr, "bench: made %ld handoffs, expected %ld\n", handoffs, 2 * n_iter);
        exit(2);
    }
    result_ns = (double)(t1 - t0) / (2.0 * (double)(n_iter > 0 ? n_iter : 1));
    return 0;
}

static double run_once(int mode) {
    run_mode = mode;
    int rc = nest_run(main_task, NULL);
    if (rc < 0) {
        printf("error=nest_run_%s\n", nest_err_name(rc));
        exit(1);
    }
    return result_ns;
}

int main(int argc, char **argv) {
    bench_args a;
    bench_parse(&a, argc, argv);
    n_iter = bench_count(&a, 0, 1000000);
    const char *mode = a.npos > 1 ? a.pos[1] : "all";
    int all = strcmp(mode, "all") == 0;
    int do_cp = all || strcmp(mode, "checkpoint") == 0;
    int do_pp = all || strcmp(mode, "pingpong") == 0;
    int do_pl = all || strcmp(mode, "parklot") == 0;
    static double cp[BENCH_MAX_REPS], pp[BENCH_MAX_REPS], pk[BENCH_MAX_REPS];
    /* Each rep is a fresh nest_run (the runtime's caches start empty: the first
     * stacks are faulted in again, a negligible cost over 2 N switches). */
    for (int r = 0; r < a.reps; r++) {
        printf("rep=%d", r + 1);
        if (do_cp) printf(" checkpoint_ns_per_switch=%.2f", cp[r] = run_once(0));
        if (do_pp) printf(" pingpong_ns_per_switch=%.2f", pp[r] = run_once(1));
        if (do_pl) printf(" parklot_ns_per_switch=%.2f", pk[r] = run_once(2));
        printf("\n");
        fflush(stdout);
    }
    printf("round_trips=%ld", n_iter);
    if (do_cp) bench_print_stats("checkpoint_ns_per_switch", cp, a.reps, 2);
    if (do_pp) bench_print_stats("pingpong_ns_per_switch", pp, a.reps, 2);
    if (do_pl) bench_print_stats("parklot_ns_per_switch", pk, a.reps, 2);
    printf("\n");
    return 0;
}
