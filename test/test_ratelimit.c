/*
 * test/test_ratelimit.c - the token-bucket rate limiter (nest_ratelimit,
 * nest/sync.h).
 *
 * Covers: the bucket starts full and serves a burst at once, each acquire
 * still a checkpoint; tokens accrue at exactly the right mock-clock times,
 * refill up to the burst and no further; acquire(n); strict FIFO (a later
 * small request cannot overtake an earlier large one, and try_acquire fails
 * while anyone waits); cancellation of the sleeping head and of a queued
 * waiter, and a deadline, take no token and leave the queue; a promotion to
 * head is not lost when the promoted task is cancelled before it runs;
 * -EINVAL; statistics; misuse at init; a stress case (40 seeded random
 * schedules with random sizes and deadlines) checking the token bound over
 * every window, FIFO service and the absence of lost wake-ups.
 *
 * Every case runs on the mock clock with autojump 0, and times are checked
 * to the millisecond.
 */
#define _GNU_SOURCE

#include "harness.h"
#include "support.h"
#include "nest.h"
#include "nest/sync.h"

/* ---- helpers ----------------------------------------------------------- */

static nest_ratelimit rl;

static const char *const names[] = {"A", "B", "C", "D", "E", "F"};
static nest_task *handles[6];

/* Takes n tokens and records "<name><n>@<ms>" or "<name> <rc>@<ms>". */
static int take_note(const char *who, size_t n) {
    int rc = nest_ratelimit_acquire(&rl, n);
    if (rc == 0)
        note("%s@%lld", who, ms());
    else
        note("%s %d@%lld", who, rc, ms());
    return rc;
}

/* A child: waits `delay_ms`, then takes `n` tokens. */
typedef struct req {
    long delay_ms;
    size_t n;
} req;

static int requester(void *arg) {
    const req *r = arg;
    if (r->delay_ms) CHECK_EQ(nest_sleep(NEST_MSEC(r->delay_ms)), 0);
    int rc = take_note(nest_task_name(nest_current_task()), r->n);
    return rc == -ECANCELED ? 0 : rc;
}

static const req *reqs;
static int nreqs;
static void (*root_body)(void);

static int root_requests(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    for (int i = 0; i < nreqs; i++)
        handles[i] = spawn_named(&n, requester, (void *)&reqs[i], names[i]);
    if (root_body) root_body();
    return nest_nursery_close(&n, 0);
}

static int run_requests(const req *r, int count, void (*body)(void)) {
    reqs = r;
    nreqs = count;
    root_body = body;
    return run_mock(root_requests, NULL);
}

static int note_ran(void *arg) {
    note("%s", (const char *)arg);
    return 0;
}

/* ---- the bucket -------------------------------------------------------- */

static int burst_then_wait(void *arg) {
    (void)arg;
    for (int i = 0; i < 5; i++) CHECK_EQ(take_note("t", 1), 0);
    return 0;
}

/* Full at the start: three tokens at once, then one per 100 ms. */
NEST_TEST(ratelimit_starts_full_then_one_token_per_interval) {
    nest_ratelimit_init(&rl, NEST_MSEC(100), 3);
    CHECK_EQ(run_mock(burst_then_wait, NULL), 0);
    CHECK_STREQ(events, "t@0 t@0 t@0 t@100 t@200");
}

static int yield_check(void *arg) {
    (void)arg;
    note("A acquires");
    CHECK_EQ(nest_ratelimit_acquire(&rl, 1), 0);
    note("A back @%lld", ms());
    return 0;
}

static int yield_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    spawn_named(&n, yield_check, NULL, "A");
    spawn_named(&n, note_ran, "B ran", "B");
    return nest_nursery_close(&n, 0);
}

/* A token that is there is taken at once, but acquire still yields once. */
NEST_TEST(ratelimit_acquire_of_an_available_token_is_a_checkpoint) {
    nest_ratelimit_init(&rl, NEST_SEC(1), 1);
    CHECK_EQ(run_mock(yield_root, NULL), 0);
    CHECK_STREQ(events, "A acquires B ran A back @0");
}

static int refill(void *arg) {
    (void)arg;
    for (int i = 0; i < 3; i++) CHECK_EQ(take_note("a", 1), 0); /* drain at 0 */
    CHECK_EQ(nest_sleep(NEST_MSEC(150)), 0);                    /* 1.5 tokens */
    CHECK_EQ(take_note("b", 1), 0);                             /* at once */
    CHECK_EQ(take_note("c", 1), 0);                             /* at 200 */
    CHECK_EQ(nest_sleep(NEST_SEC(10)), 0);                      /* full: 3, not 100 */
    for (int i = 0; i < 4; i++) CHECK_EQ(take_note("d", 1), 0);
    return 0;
}

/* Tokens accrue continuously and exactly; an idle bucket stops at burst. */
NEST_TEST(ratelimit_refills_exactly_and_only_up_to_the_burst) {
    nest_ratelimit_init(&rl, NEST_MSEC(100), 3);
    CHECK_EQ(run_mock(refill, NULL), 0);
    CHECK_STREQ(events, "a@0 a@0 a@0 b@150 c@200 d@10200 d@10200 d@10200 d@10300");
}

static int take_many(void *arg) {
    (void)arg;
    CHECK_EQ(take_note("five", 5), 0);
    CHECK_EQ(take_note("three", 3), 0);
    CHECK_EQ(take_note("one", 1), 0);
    CHECK_EQ(take_note("five", 5), 0);
    return 0;
}

NEST_TEST(ratelimit_acquire_n_waits_for_n_tokens) {
    nest_ratelimit_init(&rl, NEST_MSEC(10), 5);
    CHECK_EQ(run_mock(take_many, NULL), 0);
    CHECK_STREQ(events, "five@0 three@30 one@40 five@90");
}

/* ---- FIFO --------------------------------------------------------------- */

/* Three tasks queue on an empty bucket: served in arrival order, one
 * interval apart. */
NEST_TEST(ratelimit_waiters_are_served_in_arrival_order) {
    static const req r[] = {{0, 1}, {0, 1}, {0, 1}, {0, 1}};
    nest_ratelimit_init(&rl, NEST_MSEC(100), 1);
    CHECK_EQ(run_requests(r, 4, NULL), 0);
    CHECK_STREQ(events, "A@0 B@100 C@200 D@300");
}

/* A waits for 3 tokens (ready at 300); B arrives at 150 wanting 1, when 1
 * token is already there: B still waits its turn, behind A. */
NEST_TEST(ratelimit_late_small_request_cannot_overtake_an_earlier_large_one) {
    static const req r[] = {{0, 3}, {0, 3}, {150, 1}};
    nest_ratelimit_init(&rl, NEST_MSEC(100), 3);
    CHECK_EQ(run_requests(r, 3, NULL), 0);
    CHECK_STREQ(events, "A@0 B@300 C@400");
}

static void try_while_waiting(void) {
    CHECK_EQ(nest_sleep(NEST_MSEC(150)), 0);
    nest_ratelimit_stats st;
    nest_ratelimit_statistics(&rl, &st);
    CHECK_EQ(st.available, 1);
    CHECK_EQ(st.waiters, 1);
    note("try %d", nest_ratelimit_try_acquire(&rl, 1)); /* B is waiting */
}

NEST_TEST(ratelimit_try_acquire_fails_while_anyone_waits) {
    static const req r[] = {{0, 3}, {0, 3}};
    nest_ratelimit_init(&rl, NEST_MSEC(100), 3);
    CHECK_EQ(run_requests(r, 2, try_while_waiting), 0);
    CHECK_STREQ(events, "A@0 try -11 B@300");
}

static int try_basics(void *arg) {
    (void)arg;
    note("%d", nest_ratelimit_try_acquire(&rl, 2));
    note("%d", nest_ratelimit_try_acquire(&rl, 1));
    note("%d", nest_ratelimit_try_acquire(&rl, 1));
    note("%d", nest_ratelimit_try_acquire(&rl, 0));
    note("%d", nest_ratelimit_try_acquire(&rl, 4));
    CHECK_EQ(nest_sleep(NEST_MSEC(100)), 0);
    note("%d @%lld", nest_ratelimit_try_acquire(&rl, 1), ms());
    return 0;
}

static int try_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    spawn_named(&n, try_basics, NULL, "A");
    spawn_named(&n, note_ran, "B ran", "B");
    return nest_nursery_close(&n, 0);
}

/* try_acquire never yields: B runs only once A sleeps. */
NEST_TEST(ratelimit_try_acquire_takes_available_tokens_without_yielding) {
    nest_ratelimit_init(&rl, NEST_MSEC(100), 3);
    CHECK_EQ(run_mock(try_root, NULL), 0);
    CHECK_STREQ(events, "0 0 -11 -22 -22 B ran 0 @100");
}

/* ---- cancellation ------------------------------------------------------- */

static int cancelled_scope(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    int r1 = nest_ratelimit_acquire(&rl, 1);
    int r2 = nest_ratelimit_acquire(&rl, 0); /* cancellation comes first */
    nest_ratelimit_stats st;
    nest_ratelimit_statistics(&rl, &st);
    note("A %d %d avail=%zu", r1, r2, st.available);
    CHECK_EQ(nest_scope_exit(&s, r1), 0);
    return 0;
}

static int cancelled_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    spawn_named(&n, cancelled_scope, NULL, "A");
    spawn_named(&n, note_ran, "B ran", "B");
    return nest_nursery_close(&n, 0);
}

NEST_TEST(ratelimit_acquire_in_cancelled_scope_fails_and_takes_nothing) {
    nest_ratelimit_init(&rl, NEST_MSEC(100), 2);
    CHECK_EQ(run_mock(cancelled_root, NULL), 0);
    CHECK_STREQ(events, "A -125 -125 avail=2 B ran");
}

/* A drains the bucket at 0; B, the sleeping head (token due at 100), is
 * cancelled at 50: it takes nothing, and C, next in line, gets that token
 * at 100. */
static void cancel_head_at_50(void) {
    CHECK_EQ(nest_sleep(NEST_MSEC(50)), 0);
    nest_ratelimit_stats st;
    nest_ratelimit_statistics(&rl, &st);
    CHECK_EQ(st.waiters, 3);
    nest_task_cancel(handles[1]);
    CHECK_EQ(nest_checkpoint(), 0);
    nest_ratelimit_statistics(&rl, &st);
    CHECK_EQ(st.waiters, 2);
}

NEST_TEST(ratelimit_cancelled_head_takes_nothing_and_the_next_moves_up) {
    static const req r[] = {{0, 1}, {0, 1}, {0, 1}, {0, 1}};
    nest_ratelimit_init(&rl, NEST_MSEC(100), 1);
    CHECK_EQ(run_requests(r, 4, cancel_head_at_50), 0);
    CHECK_STREQ(events, "A@0 B -125@50 C@100 D@200");
}

/* A queued (not head) waiter cancelled at 50 leaves the queue. */
static void cancel_c_at_50(void) {
    CHECK_EQ(nest_sleep(NEST_MSEC(50)), 0);
    nest_task_cancel(handles[2]);
}

NEST_TEST(ratelimit_cancelled_queued_waiter_leaves_the_queue) {
    static const req r[] = {{0, 1}, {0, 1}, {0, 1}, {0, 1}};
    nest_ratelimit_init(&rl, NEST_MSEC(100), 1);
    CHECK_EQ(run_requests(r, 4, cancel_c_at_50), 0);
    CHECK_STREQ(events, "A@0 C -125@50 B@100 D@200");
}

/* A deadline: a 50 ms fail-after around an acquire whose token is due at
 * 100 times out at 50 without taking it; the token is still there at 100. */
static int deadline_user(void *arg) {
    (void)arg;
    CHECK_EQ(take_note("a", 1), 0);
    nest_scope s;
    nest_fail_after(&s, NEST_MSEC(50));
    int rc = nest_ratelimit_acquire(&rl, 1);
    rc = nest_scope_exit(&s, rc);
    note("timeout %s@%lld", nest_err_name(rc), ms());
    CHECK_EQ(take_note("b", 1), 0);
    return 0;
}

NEST_TEST(ratelimit_works_with_deadlines) {
    nest_ratelimit_init(&rl, NEST_MSEC(100), 1);
    CHECK_EQ(run_mock(deadline_user, NULL), 0);
    CHECK_STREQ(events, "a@0 timeout ETIMEDOUT@50 b@100");
}

/* B gets its token at 100 and, in the same step, C becomes the head; B
 * then cancels C before C runs.  C's promotion is not lost: it finds
 * itself cancelled and passes the head on to D (200). */
static int promote_then_cancel(void *arg) {
    (void)arg;
    int i = (int)(nest_task_name(nest_current_task())[0] - 'A');
    int rc = take_note(names[i], 1);
    if (i == 1) nest_task_cancel(handles[2]);
    return rc == -ECANCELED ? 0 : rc;
}

static int promote_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    for (int i = 0; i < 4; i++) handles[i] = spawn_named(&n, promote_then_cancel, NULL, names[i]);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(ratelimit_promotion_survives_a_cancel_before_the_promoted_task_runs) {
    nest_ratelimit_init(&rl, NEST_MSEC(100), 1);
    CHECK_EQ(run_mock(promote_root, NULL), 0);
    CHECK_STREQ(events, "A@0 B@100 C -125@100 D@200");
}

/* D arrives at 100, in the very pass where B gets its token and promotes C
 * (B's and D's timers both fire at 100, B's first).  C has not run yet,
 * but it is already the head: D queues behind it instead of becoming a
 * second head that would take C's token. */
NEST_TEST(ratelimit_arrival_at_the_promotion_instant_queues_behind_the_new_head) {
    static const req r[] = {{0, 1}, {0, 1}, {0, 1}, {100, 1}};
    nest_ratelimit_init(&rl, NEST_MSEC(100), 1);
    CHECK_EQ(run_requests(r, 4, NULL), 0);
    CHECK_STREQ(events, "A@0 B@100 C@200 D@300");
}

/* ---- statistics, arguments, misuse -------------------------------------- */

static int stats_user(void *arg) {
    (void)arg;
    nest_ratelimit_stats st;
    nest_ratelimit_statistics(&rl, &st);
    CHECK(st.available == 4 && st.burst == 4 && st.interval == NEST_MSEC(25));
    CHECK(st.next_at == NEST_FOREVER && st.waiters == 0);
    CHECK_EQ(nest_ratelimit_acquire(&rl, 3), 0);
    CHECK_EQ(nest_sleep(NEST_MSEC(10)), 0);
    nest_ratelimit_statistics(&rl, &st);
    CHECK_EQ(st.available, 1);
    CHECK_EQ(st.next_at, NEST_MSEC(25));
    CHECK_EQ(nest_ratelimit_acquire(&rl, 0), -EINVAL);
    CHECK_EQ(nest_ratelimit_acquire(&rl, 5), -EINVAL);
    nest_ratelimit_statistics(&rl, &st);
    CHECK_EQ(st.available, 1);
    return 0;
}

NEST_TEST(ratelimit_statistics_and_invalid_counts) {
    nest_ratelimit_init(&rl, NEST_MSEC(25), 4);
    CHECK_EQ(run_mock(stats_user, NULL), 0);
}

NEST_TEST_ABORTS(ratelimit_init_with_zero_interval_aborts,
                 "nest_ratelimit_init(): interval 0 ns, burst 1 (rule: the interval is positive") {
    nest_ratelimit_init(&rl, 0, 1);
}

NEST_TEST_ABORTS(ratelimit_init_with_zero_burst_aborts, "burst 0 (rule:") {
    nest_ratelimit_init(&rl, NEST_MSEC(1), 0);
}

NEST_TEST_ABORTS(ratelimit_init_with_overflowing_window_aborts, "fits in nest_time") {
    nest_ratelimit_init(&rl, NEST_SEC(1000), (size_t)1 << 40);
}

/* ---- stress: random schedules, sizes and deadlines ----------------------- */

/* Six tasks each make 30 requests for 1..3 tokens (burst 3, one token per
 * 10 ms), each under a random deadline or none, after a random pause; the
 * runtime runs each pass in a seeded random order.  Checked:
 *  - conformance: in every window [t1, t2] the tokens taken never exceed
 *    burst + (t2 - t1) / interval (tokens do not pile up past the burst),
 *    and cancelled requests took nothing (they are not counted, and the
 *    bound still holds with the tokens they would have used);
 *  - FIFO: requests that had to wait are served in the order they started
 *    waiting (a later one never completes before an earlier one that is
 *    still waiting);
 *  - no lost wake-up: the run ends without NEST_EDEADLOCK, with nobody
 *    waiting. */
enum { RS_TASKS = 6, RS_ITERS = 30 };

static uint64_t rs_rng, rs_seed;

#define RS_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: ratelimit stress seed %llu: CHECK failed: %s\n", __FILE__,     \
                    __LINE__, (unsigned long long)rs_seed, #cond);                                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static uint64_t rs_taken;                       /* tokens taken so far */
static uint64_t rs_next_seq;                    /* next waiting request's number */
static uint64_t rs_waiting[RS_TASKS];           /* 0, or the number of my waiting request */
static nest_time rs_when[RS_TASKS * RS_ITERS];  /* the takes so far: time, */
static uint64_t rs_before[RS_TASKS * RS_ITERS]; /* tokens taken before it */
static int rs_ntakes;

/* Records a take of n tokens now and checks every window ending now. */
static void rs_record(size_t n) {
    nest_time now = nest_now();
    rs_when[rs_ntakes] = now;
    rs_before[rs_ntakes] = rs_taken;
    rs_ntakes++;
    rs_taken += n;
    for (int j = 0; j < rs_ntakes; j++) {
        uint64_t in_window = rs_taken - rs_before[j];
        uint64_t allowed = 3 + (uint64_t)((now - rs_when[j]) / NEST_MSEC(10));
        RS_CHECK(in_window <= allowed);
    }
}

static unsigned rs_rnd(unsigned n) {
    rs_rng ^= rs_rng << 13;
    rs_rng ^= rs_rng >> 7;
    rs_rng ^= rs_rng << 17;
    return (unsigned)(rs_rng % n);
}

static int rs_worker(void *arg) {
    int id = (int)(intptr_t)arg;
    for (int it = 0; it < RS_ITERS; it++) {
        if (rs_rnd(3) == 0) CHECK_EQ(nest_sleep(NEST_MSEC(rs_rnd(25))), 0);
        size_t n = 1 + rs_rnd(3);
        nest_scope s;
        if (rs_rnd(2))
            nest_move_on_after(&s, NEST_MSEC(rs_rnd(40)));
        else
            nest_scope_enter(&s, NEST_FOREVER);
        nest_ratelimit_stats st;
        nest_ratelimit_statistics(&rl, &st);
        if ((st.waiters > 0 || st.available < n) && !nest_cancelled())
            rs_waiting[id] = ++rs_next_seq;
        int rc = nest_ratelimit_acquire(&rl, n);
        if (rc == 0) {
            if (rs_waiting[id]) {
                for (int j = 0; j < RS_TASKS; j++) /* nobody who waited longer is waiting */
                    RS_CHECK(rs_waiting[j] == 0 || rs_waiting[j] >= rs_waiting[id]);
            }
            rs_record(n);
        } else {
            RS_CHECK(rc == -ECANCELED);
        }
        rs_waiting[id] = 0;
        RS_CHECK(nest_scope_exit(&s, rc) == 0);
    }
    return 0;
}

static int rs_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    for (intptr_t i = 0; i < RS_TASKS; i++) CHECK_EQ(nest_spawn(&n, rs_worker, (void *)i), 0);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(ratelimit_stress_random_schedules_sizes_and_deadlines) {
    for (rs_seed = 1; rs_seed <= 40; rs_seed++) {
        rs_rng = rs_seed * 0x9E3779B97F4A7C15ull;
        rs_taken = rs_next_seq = 0;
        rs_ntakes = 0;
        memset(rs_waiting, 0, sizeof rs_waiting);
        nest_ratelimit_init(&rl, NEST_MSEC(10), 3);
        nest_run_options o;
        nest_run_options_init(&o);
        o.clock = NEST_CLOCK_MOCK;
        o.autojump_threshold = 0;
        o.seed = rs_seed;
        RS_CHECK(nest_run_opts(rs_root, NULL, &o) == 0);
        RS_CHECK(rl.head == 0 && rl.lot.count == 0);
        RS_CHECK(rs_taken > 0);
    }
}
