/*
 * test/test_time.c - checkpoints, sleeping and the clocks (nest/time.h,
 * the clock parts of nest/runtime.h).
 *
 * Covers: nest_checkpoint() yields and fails at once when cancelled; sleeps
 * wake exactly on time, in deadline order and FIFO among equal deadlines;
 * zero, negative and past sleeps are checkpoints; nest_sleep_forever();
 * nest_clock_jump() and autojump (on, off, switched at run time);
 * nest_wait_all_tasks_blocked(); nest_now() outside a runtime; mock_start.
 *
 * Unless a case says otherwise it runs on the mock clock with autojump 0.
 */
#define _GNU_SOURCE
#include <time.h>

#include "harness.h"
#include "support.h"
#include "nest.h"

/* ---- helpers ----------------------------------------------------------- */

static int run_mock_with(nest_fn fn, nest_time autojump, nest_time start) {
    nest_run_options o;
    nest_run_options_init(&o);
    o.clock = NEST_CLOCK_MOCK;
    o.autojump_threshold = autojump;
    o.mock_start = start;
    return nest_run_opts(fn, NULL, &o);
}

static nest_time real_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (nest_time)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- checkpoints ------------------------------------------------------ */

static int loop_three(void *arg) {
    const char *name = arg ? "B" : "A";
    for (int i = 0; i < 3; i++) {
        note("%s%d", name, i);
        CHECK_EQ(nest_checkpoint(), 0);
    }
    return 0;
}

NEST_TEST(checkpoint_yields_tasks_interleave) {
    children[0] = loop_three;
    children[1] = loop_three;
    CHECK_EQ(run_mock(spawn_children, NULL), 0);
    CHECK_STREQ(events, "A0 B0 A1 B1 A2 B2");
}

static int note_b(void *arg) {
    (void)arg;
    note("B ran");
    return 0;
}

static int cancelled_checkpoints(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    int r[8];
    r[0] = nest_checkpoint();
    r[1] = nest_checkpoint();
    r[2] = nest_sleep(NEST_SEC(1));
    r[3] = nest_sleep(0);
    r[4] = nest_sleep_until(NEST_SEC(1));
    r[5] = nest_sleep_forever();
    r[6] = nest_wait_all_tasks_blocked();
    r[7] = nest_checkpoint();
    note("A %d %d %d %d %d %d %d %d @%lld", r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], ms());
    CHECK_EQ(nest_scope_exit(&s, -ECANCELED), 0);
    note("A done");
    return 0;
}

/* A checkpoint in a cancelled scope fails without yielding: the sibling,
 * runnable all along, runs only after the task finishes. */
NEST_TEST(cancelled_checkpoints_fail_without_yielding) {
    children[0] = cancelled_checkpoints;
    children[1] = note_b;
    CHECK_EQ(run_mock(spawn_children, NULL), 0);
    CHECK_STREQ(events, "A -125 -125 -125 -125 -125 -125 -125 -125 @0 A done B ran");
}

/* ---- sleeping --------------------------------------------------------- */

static int sleep_exact(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_MSEC(1500)), 0);
    CHECK_EQ(nest_now(), NEST_MSEC(1500));
    CHECK_EQ(nest_sleep(NEST_NSEC(7)), 0); /* exactly, to the nanosecond */
    CHECK_EQ(nest_now(), NEST_MSEC(1500) + 7);
    CHECK_EQ(nest_sleep_until(NEST_SEC(2)), 0);
    CHECK_EQ(nest_now(), NEST_SEC(2));
    return 0;
}

NEST_TEST(sleep_wakes_exactly_at_now_plus_d) { CHECK_EQ(run_mock(sleep_exact, NULL), 0); }

static const int sleep_ms[] = {3, 1, 2, 5, 4};

static int sleep_table(void *arg) {
    int i = (int)(intptr_t)arg;
    CHECK_EQ(nest_sleep(NEST_MSEC(sleep_ms[i])), 0);
    note("%d@%lld", sleep_ms[i], ms());
    return 0;
}

NEST_TEST(sleeps_wake_in_deadline_order) {
    for (int i = 0; i < 5; i++) children[i] = sleep_table;
    CHECK_EQ(run_mock(spawn_children, NULL), 0);
    CHECK_STREQ(events, "1@1 2@2 3@3 4@4 5@5");
}

static int arrive_then_sleep_until_10ms(void *arg) {
    int i = (int)(intptr_t)arg;
    /* Task i falls asleep at (5 - i) ms: arrival order is 4 3 2 1 0. */
    CHECK_EQ(nest_sleep(NEST_MSEC(5 - i)), 0);
    CHECK_EQ(nest_sleep_until(NEST_MSEC(10)), 0);
    note("%d@%lld", i, ms());
    return 0;
}

/* Equal deadlines wake in the order the tasks went to sleep. */
NEST_TEST(equal_deadlines_wake_in_fifo_order) {
    for (int i = 0; i < 5; i++) children[i] = arrive_then_sleep_until_10ms;
    CHECK_EQ(run_mock(spawn_children, NULL), 0);
    CHECK_STREQ(events, "4@10 3@10 2@10 1@10 0@10");
}

static int same_instant_sleepers(void *arg) {
    int i = (int)(intptr_t)arg;
    CHECK_EQ(nest_sleep(NEST_MSEC(7)), 0);
    note("%d", i);
    return 0;
}

/* Many sleepers with one deadline, fallen asleep in spawn order. */
NEST_TEST(equal_deadlines_many_sleepers_fifo) {
    for (int i = 0; i < 8; i++) children[i] = same_instant_sleepers;
    CHECK_EQ(run_mock(spawn_children, NULL), 0);
    CHECK_STREQ(events, "0 1 2 3 4 5 6 7");
}

static int zero_sleeps(void *arg) {
    (void)arg;
    note("A0");
    CHECK_EQ(nest_sleep(0), 0);
    note("A1");
    CHECK_EQ(nest_sleep(-NEST_SEC(5)), 0);
    note("A2");
    CHECK_EQ(nest_sleep_until(nest_now() - NEST_SEC(1)), 0); /* in the past */
    note("A3");
    CHECK_EQ(nest_sleep_until(nest_now()), 0);
    note("A4 @%lld", ms());
    return 0;
}

static int ticker(void *arg) {
    (void)arg;
    for (int i = 0; i < 5; i++) {
        note("B%d", i);
        CHECK_EQ(nest_checkpoint(), 0);
    }
    return 0;
}

/* Zero, negative and past sleeps do not wait but still yield (the ticker
 * runs between them) and return 0.  The clock starts at 1 s. */
NEST_TEST(zero_negative_and_past_sleeps_are_checkpoints) {
    children[0] = zero_sleeps;
    children[1] = ticker;
    CHECK_EQ(run_mock_with(spawn_children, 0, NEST_SEC(1)), 0);
    CHECK_STREQ(events, "A0 B0 A1 B1 A2 B2 A3 B3 A4 @1000 B4");
}

static nest_scope *sleeper_scope;

static int sleeps_forever_in_scope(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    sleeper_scope = &s;
    int rc = nest_sleep_forever();
    note("A %d @%lld", rc, ms());
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    return 0;
}

static int cancel_sleeper_at_1s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    note("B cancels");
    nest_scope_cancel(sleeper_scope);
    return 0;
}

NEST_TEST(sleep_forever_returns_ecanceled_when_cancelled) {
    children[0] = sleeps_forever_in_scope;
    children[1] = cancel_sleeper_at_1s;
    CHECK_EQ(run_mock(spawn_children, NULL), 0);
    CHECK_STREQ(events, "B cancels A -125 @1000");
}

/* ---- the mock clock --------------------------------------------------- */

static int sleep_by_arg(void *arg) {
    int secs = arg ? 3 : 1;
    CHECK_EQ(nest_sleep(NEST_SEC(secs)), 0);
    note("%ds woke @%lld", secs, ms());
    return 0;
}

static int jumper(void *arg) {
    (void)arg;
    CHECK_EQ(nest_clock_jump(-1), -EINVAL);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    CHECK_EQ(nest_clock_jump(NEST_SEC(2)), 0);
    note("jump @%lld", ms());
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    note("quiet");
    CHECK_EQ(nest_clock_jump(NEST_SEC(1)), 0);
    note("jump @%lld", ms());
    return 0;
}

/* With autojump off, only nest_clock_jump moves time: the first jump wakes
 * the 1 s sleeper only, the second the 3 s one. */
NEST_TEST(clock_jump_wakes_sleepers_whose_deadline_passed) {
    children[0] = sleep_by_arg;
    children[1] = sleep_by_arg;
    children[2] = jumper;
    CHECK_EQ(run_mock_with(spawn_children, NEST_FOREVER, 0), 0);
    CHECK_STREQ(events, "jump @2000 1s woke @2000 quiet jump @3000 3s woke @3000");
}

static int real_clock_jump(void *arg) {
    (void)arg;
    CHECK_EQ(nest_clock_jump(NEST_SEC(1)), -EINVAL);
    CHECK_EQ(nest_clock_set_autojump(0), -EINVAL);
    return 0;
}

NEST_TEST(clock_jump_on_real_clock_is_einval) { CHECK_EQ(nest_run(real_clock_jump, NULL), 0); }

static int sleeper_done;

static int sleep_10s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(10)), 0);
    note("A woke @%lld", ms());
    sleeper_done = 1;
    return 0;
}

static int jump_one_second_at_a_time(void *arg) {
    (void)arg;
    for (int i = 1; !sleeper_done; i++) {
        CHECK(i <= 11);
        CHECK_EQ(nest_clock_jump(NEST_SEC(1)), 0);
        note("j%d", i);
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    }
    return 0;
}

/* Autojump off (NEST_FOREVER): the sleeper wakes after the tenth one-second
 * jump, not before, and never by itself. */
NEST_TEST(autojump_off_only_jumps_move_time) {
    children[0] = sleep_10s;
    children[1] = jump_one_second_at_a_time;
    CHECK_EQ(run_mock_with(spawn_children, NEST_FOREVER, 0), 0);
    CHECK_STREQ(events, "j1 j2 j3 j4 j5 j6 j7 j8 j9 j10 A woke @10000");
}

static int enable_autojump(void *arg) {
    (void)arg;
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    note("enable @%lld", ms());
    CHECK_EQ(nest_clock_set_autojump(0), 0);
    CHECK_EQ(nest_clock_set_autojump(-1), -EINVAL);
    return 0;
}

/* Autojump switched on at run time takes effect at the next quiet point. */
NEST_TEST(autojump_enabled_at_run_time) {
    children[0] = sleep_10s;
    children[1] = enable_autojump;
    CHECK_EQ(run_mock_with(spawn_children, NEST_FOREVER, 0), 0);
    CHECK_STREQ(events, "enable @0 A woke @10000");
}

/* ---- nest_wait_all_tasks_blocked ------------------------------------- */

static int quiet_waiter(void *arg) {
    (void)arg;
    note("W waits");
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    note("W woke @%lld", ms());
    return 0;
}

static int three_checkpoints_then_sleep(void *arg) {
    const char *name = arg == (void *)1 ? "A" : "B";
    for (int i = 0; i < 3; i++) {
        note("%s%d", name, i);
        CHECK_EQ(nest_checkpoint(), 0);
    }
    CHECK_EQ(nest_sleep(NEST_SEC(name[0] == 'A' ? 1 : 2)), 0);
    note("%s slept @%lld", name, ms());
    return 0;
}

/* The waiter wakes only once both other tasks are blocked, and before the
 * clock autojumps to their deadline. */
NEST_TEST(wait_all_tasks_blocked_waits_for_every_other_task) {
    children[0] = quiet_waiter;
    children[1] = three_checkpoints_then_sleep;
    children[2] = three_checkpoints_then_sleep;
    CHECK_EQ(run_mock(spawn_children, NULL), 0);
    CHECK_STREQ(events, "W waits A0 B0 A1 B1 A2 B2 W woke @0 A slept @1000 B slept @2000");
}

static int waiter_with_delay(void *arg) {
    int i = (int)(intptr_t)arg;
    const char *name = i == 0 ? "X" : i == 1 ? "Y" : "Z";
    /* X arrives after 2 checkpoints, Y at once, Z after 1: order Y Z X. */
    int delay = i == 0 ? 2 : i == 1 ? 0 : 1;
    for (int k = 0; k < delay; k++) CHECK_EQ(nest_checkpoint(), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    note("%s", name);
    CHECK_EQ(nest_checkpoint(), 0);
    note("%s'", name);
    return 0;
}

/* Several waiters: one per quiet point, in arrival order; the next one wakes
 * only after the previous one has run and blocked (here: finished). */
NEST_TEST(wait_all_tasks_blocked_wakes_one_per_quiet_point_in_arrival_order) {
    children[0] = waiter_with_delay;
    children[1] = waiter_with_delay;
    children[2] = waiter_with_delay;
    CHECK_EQ(run_mock(spawn_children, NULL), 0);
    CHECK_STREQ(events, "Y Y' Z Z' X X'");
}

static int waiter_then_sleep(void *arg) {
    (void)arg;
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    note("W@%lld", ms());
    CHECK_EQ(nest_sleep(NEST_SEC(2)), 0);
    note("W@%lld", ms());
    return 0;
}

static int sleep_1s_note(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    note("A@%lld", ms());
    return 0;
}

NEST_TEST(wait_all_tasks_blocked_wakes_before_autojump) {
    children[0] = waiter_then_sleep;
    children[1] = sleep_1s_note;
    CHECK_EQ(run_mock(spawn_children, NULL), 0);
    CHECK_STREQ(events, "W@0 A@1000 W@2000");
}

/* ---- nest_now and mock_start ------------------------------------------ */

NEST_TEST(now_outside_a_runtime_reads_the_monotonic_clock) {
    nest_time before = real_monotonic();
    nest_time now = nest_now();
    nest_time after = real_monotonic();
    CHECK(before <= now && now <= after);
    CHECK(nest_current_task() == NULL);
}

static int check_mock_start(void *arg) {
    (void)arg;
    CHECK_EQ(nest_now(), NEST_SEC(1000));
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(nest_now(), NEST_SEC(1001));
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(2));
    CHECK_EQ(nest_scope_deadline(&s), NEST_SEC(1003));
    CHECK_EQ(nest_scope_exit(&s, nest_sleep_forever()), 0);
    CHECK_EQ(nest_now(), NEST_SEC(1003));
    return 0;
}

/* mock_start sets the initial time; after the run, nest_now() reads the real
 * clock again. */
NEST_TEST(mock_start_is_respected) {
    CHECK_EQ(run_mock_with(check_mock_start, 0, NEST_SEC(1000)), 0);
    nest_time before = real_monotonic();
    nest_time now = nest_now();
    nest_time after = real_monotonic();
    CHECK(before <= now && now <= after);
}

static int real_sleep_zero(void *arg) {
    (void)arg;
    nest_time t0 = nest_now();
    CHECK_EQ(nest_sleep(0), 0);
    CHECK(nest_now() >= t0);
    return 0;
}

/* On the real clock nest_now() inside a task is the monotonic clock. */
NEST_TEST(now_inside_a_real_clock_runtime_is_monotonic) {
    nest_time before = real_monotonic();
    CHECK_EQ(nest_run(real_sleep_zero, NULL), 0);
    CHECK(real_monotonic() >= before);
}
