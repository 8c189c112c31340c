/*
 * test/test_scope.c - cancel scopes (nest/scope.h).
 *
 * Covers: enter/exit and the absorption rule; move-on and fail-after
 * deadlines; cancellation delivered only at checkpoints and level-triggered;
 * nested scopes (who absorbs); moving a deadline while a task is blocked;
 * a busy task that only checkpoints still times out; shields (own deadline,
 * turning the shield off); cancelled_caught; the effective-deadline and
 * nest_cancelled() queries; blocking again in cleanup; reusing a scope
 * struct; NEST_SCOPE_AUTO; and the misuse that must abort naming the place.
 *
 * Everything about time runs on the mock clock with autojump 0: time leaps
 * to the next deadline as soon as every task is blocked, so the times
 * recorded below are exact.  Events are appended to one string and the whole
 * sequence is compared at the end of each case.
 */
#define _GNU_SOURCE

#include "harness.h"
#include "support.h"
#include "nest.h"

/* ---- helpers ----------------------------------------------------------- */

/* Runs task_a, task_b and (if set) task_c as children of the root task,
 * spawned in that order, on the mock clock. */
static nest_fn task_a, task_b, task_c;

static int two_tasks(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, task_a, NULL), 0);
    CHECK_EQ(nest_spawn(&n, task_b, NULL), 0);
    if (task_c) CHECK_EQ(nest_spawn(&n, task_c, NULL), 0);
    return nest_nursery_close(&n, 0);
}

static void run_two(nest_fn a, nest_fn b) {
    task_a = a;
    task_b = b;
    CHECK_EQ(run_mock(two_tasks, NULL), 0);
}

/* A scope published by the task that entered it, for another task to act on. */
static nest_scope *shared;
static nest_scope *shared2;

/* ---- enter / exit ------------------------------------------------------ */

static int enter_exit_task(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    CHECK_EQ(nest_scope_deadline(&s), NEST_FOREVER);
    CHECK_EQ(nest_checkpoint(), 0);
    CHECK_EQ(nest_scope_exit(&s, 0), 0);
    CHECK_EQ(nest_scope_cancel_called(&s), 0);
    CHECK_EQ(nest_scope_cancelled_caught(&s), 0);

    nest_scope_enter(&s, NEST_FOREVER);
    CHECK_EQ(nest_scope_exit(&s, 5), 5);
    nest_scope_enter(&s, NEST_FOREVER);
    CHECK_EQ(nest_scope_exit(&s, -EIO), -EIO);
    /* A -ECANCELED no scope caused passes through untouched. */
    nest_scope_enter(&s, NEST_FOREVER);
    CHECK_EQ(nest_scope_exit(&s, -ECANCELED), -ECANCELED);
    CHECK_EQ(nest_scope_cancelled_caught(&s), 0);
    return 0;
}

/* Without cancellation, exit returns rc unchanged whatever it is. */
NEST_TEST(enter_exit_returns_rc_unchanged) { CHECK_EQ(run_mock(enter_exit_task, NULL), 0); }

/* ---- move-on / fail-after ---------------------------------------------- */

static int move_on_task(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_MSEC(1234)), 0);
    nest_time t0 = nest_now();
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(5));
    CHECK_EQ(nest_scope_deadline(&s), t0 + NEST_SEC(5)); /* the clock starts at entry */
    int rc = nest_sleep_forever();
    note("woke %d @%lld called %d", rc, ms(), nest_scope_cancel_called(&s));
    rc = nest_scope_exit(&s, rc);
    note("exit %d caught %d", rc, nest_scope_cancelled_caught(&s));
    return 0;
}

/* move_on_after's own expiry wakes the task exactly at the deadline and is
 * absorbed by the exit. */
NEST_TEST(move_on_after_absorbs_own_expiry) {
    CHECK_EQ(run_mock(move_on_task, NULL), 0);
    CHECK_STREQ(events, "woke -125 @6234 called 1 exit 0 caught 1");
}

static int move_on_at_task(void *arg) {
    (void)arg;
    nest_scope s;
    nest_move_on_at(&s, NEST_SEC(3));
    CHECK_EQ(nest_scope_deadline(&s), NEST_SEC(3));
    int rc = nest_sleep(NEST_SEC(10));
    note("slept %d @%lld", rc, ms());
    note("exit %d", nest_scope_exit(&s, rc));
    return 0;
}

NEST_TEST(move_on_at_uses_the_absolute_deadline) {
    CHECK_EQ(run_mock(move_on_at_task, NULL), 0);
    CHECK_STREQ(events, "slept -125 @3000 exit 0");
}

static int saturating_task(void *arg) {
    (void)arg;
    nest_scope s;
    nest_move_on_after(&s, NEST_FOREVER); /* now + forever stays forever */
    CHECK_EQ(nest_scope_deadline(&s), NEST_FOREVER);
    note("forever %d", nest_checkpoint());
    CHECK_EQ(nest_current_effective_deadline(), NEST_FOREVER);
    note("exit %d", nest_scope_exit(&s, 0));
    nest_fail_after(&s, -NEST_SEC(1)); /* already expired */
    int rc = nest_checkpoint();
    note("negative %d", rc);
    note("exit %d", nest_scope_exit(&s, rc));
    return 0;
}

/* Relative deadlines saturate: a NEST_FOREVER duration is no deadline, a
 * negative one has passed already (here: fail-after, so -ETIMEDOUT). */
NEST_TEST(relative_deadlines_saturate) {
    nest_run_options o;
    nest_run_options_init(&o);
    o.clock = NEST_CLOCK_MOCK;
    o.autojump_threshold = 0;
    o.mock_start = NEST_SEC(5);
    CHECK_EQ(nest_run_opts(saturating_task, NULL, &o), 0);
    CHECK_STREQ(events, "forever 0 exit 0 negative -125 exit -110");
}

static int fail_after_task(void *arg) {
    (void)arg;
    nest_scope s;
    nest_fail_after(&s, NEST_SEC(2));
    int rc = nest_sleep(NEST_SEC(10));
    note("slept %d @%lld", rc, ms());
    note("exit %d", nest_scope_exit(&s, rc));

    nest_fail_at(&s, NEST_SEC(3));
    rc = nest_sleep_forever();
    note("slept %d @%lld", rc, ms());
    note("exit %d", nest_scope_exit(&s, rc));
    return 0;
}

NEST_TEST(fail_after_turns_own_expiry_into_etimedout) {
    CHECK_EQ(run_mock(fail_after_task, NULL), 0);
    CHECK_STREQ(events, "slept -125 @2000 exit -110 slept -125 @3000 exit -110");
}

static int fail_after_cancel_task(void *arg) {
    (void)arg;
    nest_scope s;
    nest_fail_after(&s, NEST_SEC(10));
    nest_scope_cancel(&s);
    int rc = nest_checkpoint();
    note("ckpt %d @%lld", rc, ms());
    rc = nest_scope_exit(&s, rc);
    note("exit %d caught %d", rc, nest_scope_cancelled_caught(&s));
    return 0;
}

/* An explicit cancel of a fail-after scope is absorbed quietly: it is not a
 * timeout. */
NEST_TEST(fail_after_explicit_cancel_returns_zero) {
    CHECK_EQ(run_mock(fail_after_cancel_task, NULL), 0);
    CHECK_STREQ(events, "ckpt -125 @0 exit 0 caught 1");
}

static int fail_after_no_checkpoint_task(void *arg) {
    (void)arg;
    nest_scope s;
    nest_fail_after(&s, NEST_SEC(1));
    CHECK_EQ(nest_clock_jump(NEST_SEC(2)), 0);
    CHECK_EQ(nest_scope_cancel_called(&s), 1);
    note("exit %d", nest_scope_exit(&s, 0));
    nest_fail_after(&s, NEST_SEC(1));
    CHECK_EQ(nest_clock_jump(NEST_SEC(2)), 0);
    note("exit %d", nest_scope_exit(&s, -EIO));
    return 0;
}

/* The deadline of a fail-after scope passed, but the work finished without
 * reaching a checkpoint: its result stands (nothing was cancelled). */
NEST_TEST(fail_after_expired_without_checkpoint_keeps_rc) {
    CHECK_EQ(run_mock(fail_after_no_checkpoint_task, NULL), 0);
    CHECK_STREQ(events, "exit 0 exit -5");
}

/* ---- delivery at checkpoints, level triggering ------------------------- */

static int sibling_ran;

static int set_sibling_ran(void *arg) {
    (void)arg;
    sibling_ran = 1;
    return 0;
}

static int only_at_checkpoints_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    note("cancelled");
    /* None of these is a checkpoint: they all work and nothing fails. */
    volatile long sum = 0;
    for (long i = 0; i < 100000; i++) sum += i;
    note("computed %d", sum == 4999950000L);
    note("cancelled() %d", nest_cancelled());
    note("now %lld", ms());
    note("deadline past %d", nest_current_effective_deadline() == NEST_PAST);
    nest_scope inner;
    nest_scope_enter(&inner, NEST_FOREVER);
    note("inner exit %d", nest_scope_exit(&inner, 0));
    note("spawn %d", nest_spawn(&n, set_sibling_ran, NULL));
    nest_started(NULL); /* no-op in a task that was not started */
    note("sibling ran %d", sibling_ran);
    /* The first checkpoint fails, without letting the sibling run. */
    int rc = nest_checkpoint();
    note("ckpt %d sibling ran %d", rc, sibling_ran);
    note("exit %d", nest_scope_exit(&s, rc));
    return nest_nursery_close(&n, 0);
}

/* Cancelling does not interrupt running code: everything up to the next
 * checkpoint runs, and that checkpoint fails. */
NEST_TEST(cancel_delivered_only_at_checkpoints) {
    CHECK_EQ(run_mock(only_at_checkpoints_task, NULL), 0);
    CHECK_STREQ(events, "cancelled computed 1 cancelled() 1 now 0 deadline past 1 inner exit 0 "
                        "spawn 0 sibling ran 0 ckpt -125 sibling ran 0 exit 0");
    CHECK_EQ(sibling_ran, 1);
}

static int shielded_worker(void *arg) {
    (void)arg;
    nest_scope s, sh;
    nest_scope_enter(&s, NEST_FOREVER);
    shared = &s;
    nest_scope_enter(&sh, NEST_FOREVER);
    nest_scope_set_shield(&sh, 1);
    int rc = nest_sleep(NEST_SEC(2)); /* shielded: the cancel at 1 s does not cut it */
    note("A slept %d @%lld", rc, ms());
    rc = nest_scope_exit(&sh, rc);
    /* Now in the cancelled scope, but running: plain code continues. */
    note("A running cancelled() %d", nest_cancelled());
    rc = nest_checkpoint();
    note("A ckpt %d", rc);
    note("A exit %d", nest_scope_exit(&s, rc));
    return 0;
}

static int cancel_shared_at_1s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    nest_scope_cancel(shared);
    note("B cancel @%lld", ms());
    return 0;
}

/* Another task cancels the scope while the worker is busy elsewhere (in a
 * shielded sleep); the worker meets the cancellation at its next checkpoint
 * in the scope, not before. */
NEST_TEST(cancel_from_another_task_meets_next_checkpoint) {
    run_two(shielded_worker, cancel_shared_at_1s);
    CHECK_STREQ(events, "B cancel @1000 A slept 0 @2000 A running cancelled() 1 A ckpt -125 "
                        "A exit 0");
}

static int waited_child(void *arg) {
    (void)arg;
    return nest_sleep(NEST_SEC(100));
}

static int level_triggered_task(void *arg) {
    (void)arg;
    nest_task *h = NULL;
    nest_spawn_options o = {0};
    o.handle = &h;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn_opts(&n, waited_child, NULL, &o), 0);

    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    note("%d", nest_checkpoint());
    note("%d", nest_checkpoint());
    note("%d", nest_checkpoint());
    note("%d", nest_sleep(NEST_SEC(1)));
    note("%d", nest_sleep(0));
    note("%d", nest_sleep_until(nest_now() + NEST_SEC(1)));
    note("%d", nest_sleep_forever());
    note("%d", nest_wait_all_tasks_blocked());
    int result = 99;
    note("%d", nest_task_wait(h, &result));
    CHECK_EQ(result, 99);
    nest_scope inner; /* a fresh scope inside a cancelled one is cancelled too */
    nest_scope_enter(&inner, NEST_FOREVER);
    note("inner %d", nest_checkpoint());
    note("inner exit %d", nest_scope_exit(&inner, -ECANCELED));
    note("%d", nest_checkpoint());
    note("exit %d", nest_scope_exit(&s, -ECANCELED));
    int rc = nest_checkpoint();
    note("after %d @%lld", rc, ms());
    nest_nursery_cancel(&n);
    return nest_nursery_close(&n, 0);
}

/* Every checkpoint inside a cancelled scope fails, again and again, until the
 * scope is exited; no time passes meanwhile. */
NEST_TEST(cancellation_is_level_triggered) {
    CHECK_EQ(run_mock(level_triggered_task, NULL), 0);
    CHECK_STREQ(events, "-125 -125 -125 -125 -125 -125 -125 -125 -125 inner -125 "
                        "inner exit -125 -125 exit 0 after 0 @0");
}

/* ---- nesting ------------------------------------------------------------ */

static int nested_both_cancelled_task(void *arg) {
    (void)arg;
    nest_scope outer, inner;
    nest_scope_enter(&outer, NEST_FOREVER);
    nest_scope_enter(&inner, NEST_FOREVER);
    nest_scope_cancel(&inner);
    nest_scope_cancel(&outer);
    int rc = nest_checkpoint();
    note("ckpt %d", rc);
    rc = nest_scope_exit(&inner, rc);
    note("inner %d caught %d", rc, nest_scope_cancelled_caught(&inner));
    rc = nest_scope_exit(&outer, rc);
    note("outer %d caught %d", rc, nest_scope_cancelled_caught(&outer));
    return 0;
}

/* Both scopes cancelled: the inner one lets the -ECANCELED through, the
 * outer one absorbs it. */
NEST_TEST(nested_outer_cancelled_too_outer_absorbs) {
    CHECK_EQ(run_mock(nested_both_cancelled_task, NULL), 0);
    CHECK_STREQ(events, "ckpt -125 inner -125 caught 0 outer 0 caught 1");
}

static int nested_outer_expires_task(void *arg) {
    (void)arg;
    nest_scope outer, inner;
    nest_move_on_after(&outer, NEST_SEC(1));
    nest_move_on_after(&inner, NEST_SEC(5));
    int rc = nest_sleep_forever();
    note("woke %d @%lld", rc, ms());
    rc = nest_scope_exit(&inner, rc);
    note("inner %d called %d", rc, nest_scope_cancel_called(&inner));
    rc = nest_scope_exit(&outer, rc);
    note("outer %d caught %d", rc, nest_scope_cancelled_caught(&outer));
    return 0;
}

NEST_TEST(nested_outer_deadline_passes_through_inner) {
    CHECK_EQ(run_mock(nested_outer_expires_task, NULL), 0);
    CHECK_STREQ(events, "woke -125 @1000 inner -125 called 0 outer 0 caught 1");
}

static int both_expire_task(void *arg) {
    (void)arg;
    nest_scope outer, inner;
    nest_move_on_after(&outer, NEST_SEC(1));
    nest_fail_after(&inner, NEST_SEC(1));
    int rc = nest_sleep_forever();
    note("woke %d @%lld", rc, ms());
    rc = nest_scope_exit(&inner, rc);
    note("inner %d called %d caught %d", rc, nest_scope_cancel_called(&inner),
         nest_scope_cancelled_caught(&inner));
    rc = nest_scope_exit(&outer, rc);
    note("outer %d caught %d", rc, nest_scope_cancelled_caught(&outer));
    return 0;
}

/* An inner fail-after and an outer move-on expire together: the outer one
 * catches, so no -ETIMEDOUT escapes. */
NEST_TEST(nested_both_expire_together_outer_catches) {
    CHECK_EQ(run_mock(both_expire_task, NULL), 0);
    CHECK_STREQ(events, "woke -125 @1000 inner -125 called 1 caught 0 outer 0 caught 1");
}

static int inner_only_task(void *arg) {
    (void)arg;
    nest_scope outer, inner;
    nest_scope_enter(&outer, NEST_FOREVER);
    nest_scope_enter(&inner, NEST_FOREVER);
    nest_scope_cancel(&inner);
    int rc = nest_checkpoint();
    note("ckpt %d", rc);
    rc = nest_scope_exit(&inner, rc);
    note("inner %d caught %d", rc, nest_scope_cancelled_caught(&inner));
    note("ckpt %d", nest_checkpoint());
    rc = nest_scope_exit(&outer, rc);
    note("outer %d called %d caught %d", rc, nest_scope_cancel_called(&outer),
         nest_scope_cancelled_caught(&outer));
    return 0;
}

NEST_TEST(nested_inner_cancelled_only_inner_absorbs) {
    CHECK_EQ(run_mock(inner_only_task, NULL), 0);
    CHECK_STREQ(events, "ckpt -125 inner 0 caught 1 ckpt 0 outer 0 called 0 caught 0");
}

/* ---- moving deadlines while blocked ------------------------------------ */

static int blocked_in_scope_1s(void *arg) {
    (void)arg;
    nest_scope s;
    nest_move_on_at(&s, NEST_SEC(1));
    shared = &s;
    int rc = nest_sleep_forever();
    note("A woke %d @%lld", rc, ms());
    note("A exit %d", nest_scope_exit(&s, rc));
    return 0;
}

static int move_deadline_later(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_MSEC(500)), 0);
    nest_scope_set_deadline(shared, NEST_SEC(3));
    CHECK_EQ(nest_scope_deadline(shared), NEST_SEC(3));
    note("B moved @%lld", ms());
    return 0;
}

/* A bystander sleeping until 2 s (C) checks that the other deadlines stay
 * in order around the moved one. */
static int bystander_until_2s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep_until(NEST_SEC(2)), 0);
    note("C woke @%lld", ms());
    return 0;
}

static int bystander_until_5s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep_until(NEST_SEC(5)), 0);
    note("C woke @%lld", ms());
    return 0;
}

/* The blocked task wakes at the new deadline, not at the old one. */
NEST_TEST(deadline_moved_later_while_blocked) {
    task_c = bystander_until_2s;
    run_two(blocked_in_scope_1s, move_deadline_later);
    CHECK_STREQ(events, "B moved @500 C woke @2000 A woke -125 @3000 A exit 0");
}

static int blocked_in_scope_10s(void *arg) {
    (void)arg;
    nest_scope s;
    nest_move_on_at(&s, NEST_SEC(10));
    shared = &s;
    int rc = nest_sleep_forever();
    note("A woke %d @%lld", rc, ms());
    note("A exit %d", nest_scope_exit(&s, rc));
    return 0;
}

static int move_deadline_earlier(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    nest_scope_set_deadline(shared, NEST_SEC(2));
    note("B moved @%lld", ms());
    return 0;
}

NEST_TEST(deadline_moved_earlier_while_blocked) {
    task_c = bystander_until_5s;
    run_two(blocked_in_scope_10s, move_deadline_earlier);
    CHECK_STREQ(events, "B moved @1000 A woke -125 @2000 A exit 0 C woke @5000");
}

static int remove_deadline_then_cancel(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_MSEC(500)), 0);
    nest_scope_set_deadline(shared, NEST_FOREVER);
    note("B removed @%lld", ms());
    CHECK_EQ(nest_sleep_until(NEST_SEC(5)), 0);
    note("B cancel @%lld", ms());
    nest_scope_cancel(shared);
    return 0;
}

/* Removing the deadline (NEST_FOREVER) while blocked: the old deadline no
 * longer wakes the task, only the later explicit cancel does. */
NEST_TEST(deadline_removed_while_blocked) {
    run_two(blocked_in_scope_1s, remove_deadline_then_cancel);
    CHECK_STREQ(events, "B removed @500 B cancel @5000 A woke -125 @5000 A exit 0");
}

static int past_deadline_self_task(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_set_deadline(&s, nest_now() - NEST_MSEC(1));
    note("called %d cancelled() %d", nest_scope_cancel_called(&s), nest_cancelled());
    int rc = nest_checkpoint();
    note("ckpt %d @%lld", rc, ms());
    rc = nest_scope_exit(&s, rc);
    note("exit %d caught %d", rc, nest_scope_cancelled_caught(&s));
    return 0;
}

/* A deadline set in the past cancels the scope at once (before any
 * checkpoint), and time does not move. */
NEST_TEST(set_deadline_in_past_cancels_at_once) {
    CHECK_EQ(run_mock(past_deadline_self_task, NULL), 0);
    CHECK_STREQ(events, "called 1 cancelled() 1 ckpt -125 @1000 exit 0 caught 1");
}

static int blocked_forever_in_scope(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    shared = &s;
    int rc = nest_sleep_forever();
    note("A woke %d @%lld", rc, ms());
    note("A exit %d", nest_scope_exit(&s, rc));
    return 0;
}

static int set_past_deadline_at_2s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(2)), 0);
    nest_scope_set_deadline(shared, NEST_MSEC(1500));
    note("B set @%lld", ms());
    return 0;
}

NEST_TEST(set_deadline_in_past_wakes_blocked_task_at_once) {
    run_two(blocked_forever_in_scope, set_past_deadline_at_2s);
    CHECK_STREQ(events, "B set @2000 A woke -125 @2000 A exit 0");
}

/* ---- a busy task still times out --------------------------------------- */

static long busy_count, busy_count_at_jump;
static int busy_done;

static int busy_checkpointer(void *arg) {
    (void)arg;
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(1));
    int rc;
    while ((rc = nest_checkpoint()) == 0) busy_count++;
    rc = nest_scope_exit(&s, rc);
    note("A exit %d caught %d @%lld", rc, nest_scope_cancelled_caught(&s), ms());
    busy_done = 1;
    return 0;
}

static int jump_after_ten_rounds(void *arg) {
    (void)arg;
    for (int i = 0; i < 10; i++) {
        CHECK_EQ(nest_checkpoint(), 0);
        CHECK_EQ(busy_done, 0); /* the busy task cannot time out on its own */
    }
    busy_count_at_jump = busy_count;
    CHECK_EQ(nest_clock_jump(NEST_SEC(1)), 0);
    note("B jumped @%lld", ms());
    return 0;
}

/* A task that never blocks (it only checkpoints) keeps every other task
 * runnable, so autojump cannot help; a sibling moves the clock instead, and
 * the busy task's deadline then cancels it at its next checkpoint or the one
 * after (the one in progress may already have been decided). */
NEST_TEST(busy_task_that_only_checkpoints_times_out) {
    run_two(busy_checkpointer, jump_after_ten_rounds);
    CHECK_STREQ(events, "B jumped @1000 A exit 0 caught 1 @1000");
    CHECK(busy_count_at_jump >= 9);
    CHECK(busy_count - busy_count_at_jump <= 1);
}

static int busy_real_clock_task(void *arg) {
    (void)arg;
    nest_scope s;
    nest_move_on_after(&s, NEST_MSEC(20));
    int rc = 0;
    /* 2e8 checkpoints take seconds: far beyond 20 ms, well inside the ctest
     * timeout.  Reaching the cap means the deadline was never noticed. */
    for (long i = 0; i < 200000000L && rc == 0; i++) rc = nest_checkpoint();
    CHECK_EQ(rc, -ECANCELED);
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    CHECK_EQ(nest_scope_cancelled_caught(&s), 1);
    return 0;
}

/* The same on the real clock, where only the scheduler's polling of timers
 * can notice the deadline while the task never blocks.  Asserts nothing
 * about time, only that the loop ends by cancellation. */
NEST_TEST(busy_task_times_out_on_real_clock) { CHECK_EQ(nest_run(busy_real_clock_task, NULL), 0); }

/* ---- shields ------------------------------------------------------------ */

static int shield_checks_task(void *arg) {
    (void)arg;
    nest_scope outer, sh;
    nest_scope_enter(&outer, NEST_FOREVER);
    nest_scope_cancel(&outer);
    nest_scope_enter(&sh, NEST_FOREVER);
    CHECK_EQ(nest_scope_shield(&sh), 0);
    nest_scope_set_shield(&sh, 1);
    CHECK_EQ(nest_scope_shield(&sh), 1);
    int rc = nest_checkpoint();
    note("ckpt %d cancelled() %d", rc, nest_cancelled());
    rc = nest_sleep(NEST_SEC(1));
    note("sleep %d @%lld", rc, ms());
    rc = nest_scope_exit(&sh, 0);
    note("sh exit %d caught %d", rc, nest_scope_cancelled_caught(&sh));
    rc = nest_checkpoint();
    note("ckpt %d", rc);
    note("outer exit %d", nest_scope_exit(&outer, rc));
    return 0;
}

/* Inside a shield every blocking call works although the enclosing scope is
 * cancelled; once out of the shield, the cancellation is there again. */
NEST_TEST(shielded_scope_blocks_normally_inside_cancelled_scope) {
    CHECK_EQ(run_mock(shield_checks_task, NULL), 0);
    CHECK_STREQ(events, "ckpt 0 cancelled() 0 sleep 0 @1000 sh exit 0 caught 0 ckpt -125 "
                        "outer exit 0");
}

static int shield_own_deadline_task(void *arg) {
    (void)arg;
    nest_scope outer, sh;
    nest_scope_enter(&outer, NEST_FOREVER);
    nest_scope_cancel(&outer);
    nest_move_on_after(&sh, NEST_SEC(2));
    nest_scope_set_shield(&sh, 1);
    int rc = nest_sleep_forever();
    note("woke %d @%lld", rc, ms());
    rc = nest_scope_exit(&sh, rc);
    note("sh exit %d caught %d", rc, nest_scope_cancelled_caught(&sh));
    rc = nest_checkpoint();
    note("ckpt %d", rc);
    note("outer exit %d", nest_scope_exit(&outer, rc));
    return 0;
}

/* A shield keeps outer cancellation out but its own deadline still fires,
 * and the shielded scope absorbs its own expiry. */
NEST_TEST(shield_with_its_own_deadline) {
    CHECK_EQ(run_mock(shield_own_deadline_task, NULL), 0);
    CHECK_STREQ(events, "woke -125 @2000 sh exit 0 caught 1 ckpt -125 outer exit 0");
}

static int blocked_in_shield(void *arg) {
    (void)arg;
    nest_scope outer, sh;
    nest_scope_enter(&outer, NEST_FOREVER);
    shared = &outer;
    nest_scope_enter(&sh, NEST_FOREVER);
    nest_scope_set_shield(&sh, 1);
    shared2 = &sh;
    int rc = nest_sleep_forever();
    note("A woke %d @%lld", rc, ms());
    rc = nest_scope_exit(&sh, rc);
    note("A sh exit %d", rc);
    note("A outer exit %d", nest_scope_exit(&outer, rc));
    return 0;
}

static int cancel_then_drop_shield(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    nest_scope_cancel(shared);
    note("B cancel");
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0); /* A stays blocked: shielded */
    note("B quiet");
    nest_scope_set_shield(shared2, 0);
    note("B unshield");
    return 0;
}

/* Dropping the shield while the enclosing scope is cancelled wakes the task
 * blocked inside with -ECANCELED, which the unshielded (uncancelled) scope
 * passes on and the outer one absorbs. */
NEST_TEST(shield_off_delivers_cancellation_to_blocked_task) {
    run_two(blocked_in_shield, cancel_then_drop_shield);
    CHECK_STREQ(events, "B cancel B quiet B unshield A woke -125 @1000 A sh exit -125 "
                        "A outer exit 0");
}

/* ---- cancelled_caught, queries ---------------------------------------- */

static int not_absorbed_task(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    int rc = nest_scope_exit(&s, 0);
    note("exit %d called %d caught %d", rc, nest_scope_cancel_called(&s),
         nest_scope_cancelled_caught(&s));
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    rc = nest_scope_exit(&s, -EIO);
    note("exit %d called %d caught %d", rc, nest_scope_cancel_called(&s),
         nest_scope_cancelled_caught(&s));
    return 0;
}

/* A cancelled scope whose work did not fail with -ECANCELED absorbs
 * nothing: cancel_called is true, cancelled_caught false, rc unchanged. */
NEST_TEST(cancelled_caught_false_when_not_absorbed) {
    CHECK_EQ(run_mock(not_absorbed_task, NULL), 0);
    CHECK_STREQ(events, "exit 0 called 1 caught 0 exit -5 called 1 caught 0");
}

static int cancel_after_exit_task(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    CHECK_EQ(nest_scope_exit(&s, 0), 0);
    nest_scope_cancel(&s);
    CHECK_EQ(nest_scope_cancel_called(&s), 0);
    CHECK_EQ(nest_cancelled(), 0);
    CHECK_EQ(nest_checkpoint(), 0);
    return 0;
}

/* nest_scope_cancel on a scope that has exited changes nothing. */
NEST_TEST(cancel_after_exit_is_a_noop) { CHECK_EQ(run_mock(cancel_after_exit_task, NULL), 0); }

static int deadline_child(void *arg) {
    (void)arg;
    /* The nursery was opened inside a scope with deadline 7 s. */
    CHECK_EQ(nest_current_effective_deadline(), NEST_SEC(7));
    nest_scope s;
    nest_scope_enter(&s, NEST_SEC(3));
    CHECK_EQ(nest_current_effective_deadline(), NEST_SEC(3));
    CHECK_EQ(nest_scope_exit(&s, 0), 0);
    return 0;
}

static int effective_deadline_task(void *arg) {
    (void)arg;
    CHECK_EQ(nest_current_effective_deadline(), NEST_FOREVER);
    nest_scope s1, s2, s3, sh, s5;
    nest_scope_enter(&s1, NEST_SEC(5));
    CHECK_EQ(nest_current_effective_deadline(), NEST_SEC(5));
    nest_scope_enter(&s2, NEST_SEC(3));
    CHECK_EQ(nest_current_effective_deadline(), NEST_SEC(3));
    nest_scope_enter(&s3, NEST_SEC(10));
    CHECK_EQ(nest_current_effective_deadline(), NEST_SEC(3));
    /* A shield hides the deadlines above it... */
    nest_scope_enter(&sh, NEST_FOREVER);
    nest_scope_set_shield(&sh, 1);
    CHECK_EQ(nest_current_effective_deadline(), NEST_FOREVER);
    /* ...but its own deadline counts. */
    nest_scope_set_deadline(&sh, NEST_SEC(20));
    CHECK_EQ(nest_current_effective_deadline(), NEST_SEC(20));
    nest_scope_enter(&s5, NEST_SEC(1));
    CHECK_EQ(nest_current_effective_deadline(), NEST_SEC(1));
    CHECK_EQ(nest_scope_exit(&s5, 0), 0);
    /* A cancelled scope above the shield is hidden too. */
    nest_scope_cancel(&s1);
    CHECK_EQ(nest_current_effective_deadline(), NEST_SEC(20));
    CHECK_EQ(nest_scope_exit(&sh, 0), 0);
    CHECK_EQ(nest_current_effective_deadline(), NEST_PAST);
    CHECK_EQ(nest_scope_exit(&s3, 0), 0);
    CHECK_EQ(nest_scope_exit(&s2, 0), 0);
    CHECK_EQ(nest_scope_exit(&s1, 0), 0);
    CHECK_EQ(nest_current_effective_deadline(), NEST_FOREVER);

    /* Children see the scopes enclosing the nursery. */
    nest_scope outer;
    nest_scope_enter(&outer, NEST_SEC(7));
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, deadline_child, NULL), 0);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    CHECK_EQ(nest_scope_exit(&outer, 0), 0);
    return 0;
}

/* Minimum over the enclosing scopes up to and including the nearest shield;
 * NEST_PAST when one of them is cancelled; NEST_FOREVER with none. */
NEST_TEST(effective_deadline_query) { CHECK_EQ(run_mock(effective_deadline_task, NULL), 0); }

static int cancelled_query_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, set_sibling_ran, NULL), 0);
    nest_scope s, sh;
    note("%d", nest_cancelled());
    nest_scope_enter(&s, NEST_FOREVER);
    note("%d", nest_cancelled());
    nest_scope_cancel(&s);
    note("%d", nest_cancelled());
    note("%d", nest_cancelled());
    nest_scope_enter(&sh, NEST_FOREVER);
    nest_scope_set_shield(&sh, 1);
    note("shielded %d", nest_cancelled());
    CHECK_EQ(nest_scope_exit(&sh, 0), 0);
    note("%d", nest_cancelled());
    CHECK_EQ(nest_scope_exit(&s, 0), 0);
    note("%d", nest_cancelled());
    note("sibling ran %d", sibling_ran); /* nest_cancelled() never yielded */
    return nest_nursery_close(&n, 0);
}

NEST_TEST(cancelled_query_does_not_yield) {
    CHECK_EQ(run_mock(cancelled_query_task, NULL), 0);
    CHECK_STREQ(events, "0 0 1 1 shielded 0 1 0 sibling ran 0");
}

/* ---- cleanup after cancellation ---------------------------------------- */

static int cleanup_task(void *arg) {
    (void)arg;
    nest_scope s, sh;
    nest_move_on_after(&s, NEST_SEC(1));
    int rc = nest_sleep_forever();
    note("work %d @%lld", rc, ms());
    /* Cleanup that blocks is cancelled again... */
    int crc = nest_sleep(NEST_SEC(1));
    note("cleanup %d @%lld", crc, ms());
    /* ...unless shielded. */
    nest_scope_enter(&sh, NEST_FOREVER);
    nest_scope_set_shield(&sh, 1);
    crc = nest_sleep(NEST_SEC(1));
    note("shielded cleanup %d @%lld", crc, ms());
    CHECK_EQ(nest_scope_exit(&sh, 0), 0);
    note("exit %d", nest_scope_exit(&s, rc));
    return 0;
}

NEST_TEST(blocking_again_in_cleanup_is_cancelled_unless_shielded) {
    CHECK_EQ(run_mock(cleanup_task, NULL), 0);
    CHECK_STREQ(events, "work -125 @1000 cleanup -125 @1000 shielded cleanup 0 @2000 exit 0");
}

/* ---- reuse, NEST_SCOPE_AUTO --------------------------------------------- */

static int reuse_task(void *arg) {
    (void)arg;
    nest_scope s;
    for (int i = 0; i < 100; i++) {
        nest_time t0 = nest_now();
        nest_move_on_after(&s, NEST_MSEC(10));
        CHECK_EQ(nest_scope_cancel_called(&s), 0);
        CHECK_EQ(nest_scope_cancelled_caught(&s), 0);
        int rc = nest_sleep(i % 2 ? NEST_MSEC(5) : NEST_MSEC(20));
        CHECK_EQ(rc, i % 2 ? 0 : -ECANCELED);
        CHECK_EQ(nest_now(), t0 + (i % 2 ? NEST_MSEC(5) : NEST_MSEC(10)));
        CHECK_EQ(nest_scope_exit(&s, rc), 0);
        CHECK_EQ(nest_scope_cancel_called(&s), i % 2 ? 0 : 1);
        CHECK_EQ(nest_scope_cancelled_caught(&s), i % 2 ? 0 : 1);
    }
    CHECK_EQ(nest_now(), 50 * NEST_MSEC(5) + 50 * NEST_MSEC(10));
    return 0;
}

/* Each entry of the same struct is a fresh scope: no flag or deadline of
 * the previous entry leaks into the next. */
NEST_TEST(scope_struct_reused_in_a_loop) { CHECK_EQ(run_mock(reuse_task, NULL), 0); }

static int auto_early_return(int fail) {
    nest_scope s NEST_SCOPE_AUTO;
    nest_move_on_after(&s, NEST_SEC(1));
    CHECK_EQ(nest_current_effective_deadline(), nest_now() + NEST_SEC(1));
    if (fail) return -EIO;
    return nest_sleep_forever(); /* -ECANCELED leaves unabsorbed */
}

static int auto_explicit_exit(void) {
    nest_scope s NEST_SCOPE_AUTO;
    nest_move_on_after(&s, NEST_SEC(1));
    return nest_scope_exit(&s, nest_sleep_forever()); /* the automatic exit is a no-op */
}

static int auto_never_entered(void) {
    nest_scope s NEST_SCOPE_AUTO;
    if (nest_now() >= 0) return 3; /* leaves before entering */
    nest_scope_enter(&s, NEST_FOREVER);
    return nest_scope_exit(&s, 0);
}

static int scope_auto_task(void *arg) {
    (void)arg;
    note("%d", auto_early_return(1));
    note("deadline forever %d", nest_current_effective_deadline() == NEST_FOREVER);
    int rc = auto_early_return(0);
    note("%d @%lld", rc, ms());
    note("deadline forever %d ckpt %d", nest_current_effective_deadline() == NEST_FOREVER,
         nest_checkpoint());
    rc = auto_explicit_exit();
    note("%d @%lld", rc, ms());
    note("%d", auto_never_entered());
    return 0; /* would abort if any scope were still entered */
}

NEST_TEST(scope_auto_exits_on_early_return) {
    CHECK_EQ(run_mock(scope_auto_task, NULL), 0);
    CHECK_STREQ(events, "-5 deadline forever 1 -125 @1000 deadline forever 1 ckpt 0 0 @2000 3");
}

/* ---- misuse ------------------------------------------------------------- */

/* The misuse cases enter their scope through enter_here(), so the entry's
 * file:line is known: this file at enter_here_line. */
static const int enter_here_line = __LINE__ + 1;
static void enter_here(nest_scope *s) { nest_scope_enter(s, NEST_FOREVER); }

static char where[64];

static const char *entry_place(void) {
    snprintf(where, sizeof where, "test_scope.c:%d", enter_here_line);
    return where;
}

static int misnested_task(void *arg) {
    (void)arg;
    nest_scope outer, inner;
    enter_here(&outer);
    nest_scope_enter(&inner, NEST_FOREVER);
    nest_scope_exit(&outer, 0);
    return 0;
}

NEST_TEST(exit_out_of_order_aborts_naming_entry) {
    const char *texts[] = {"misnested", entry_place(), NULL};
    expect_abort(misnested_task, texts);
}

static int auto_misnested_helper(void) {
    nest_scope a NEST_SCOPE_AUTO;
    nest_scope b NEST_SCOPE_AUTO;
    nest_scope_enter(&b, NEST_FOREVER);
    enter_here(&a); /* a is now innermost, but b is cleaned up first */
    return 0;
}

static int auto_misnested_task(void *arg) {
    (void)arg;
    return auto_misnested_helper();
}

/* The automatic exit checks nesting like an explicit one. */
NEST_TEST(scope_auto_misnesting_detected) {
    const char *texts[] = {"misnested", NULL};
    expect_abort(auto_misnested_task, texts);
}

static int owner_of_shared(void *arg) {
    (void)arg;
    nest_scope s;
    enter_here(&s);
    shared = &s;
    nest_sleep_forever();
    return nest_scope_exit(&s, 0);
}

static int exit_shared(void *arg) {
    (void)arg;
    CHECK_EQ(nest_checkpoint(), 0);
    return nest_scope_exit(shared, 0);
}

static int other_task_exit_root(void *arg) {
    (void)arg;
    task_a = owner_of_shared;
    task_b = exit_shared;
    return two_tasks(NULL);
}

NEST_TEST(exit_from_another_task_aborts) {
    const char *texts[] = {"belongs to task", entry_place(), NULL};
    expect_abort(other_task_exit_root, texts);
}

static nest_scope leaked; /* static: it must outlive the frame that entered it */

static int returns_with_scope(void *arg) {
    (void)arg;
    enter_here(&leaked);
    return 0;
}

static int returns_with_scope_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn(&n, returns_with_scope, NULL);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(task_returning_with_scope_entered_aborts) {
    const char *texts[] = {"returned without exiting the scope entered at", entry_place(), NULL};
    expect_abort(returns_with_scope_root, texts);
}

static int exit_twice_task(void *arg) {
    (void)arg;
    nest_scope s;
    enter_here(&s);
    nest_scope_exit(&s, 0);
    nest_scope_exit(&s, 0);
    return 0;
}

NEST_TEST(exit_twice_aborts) {
    const char *texts[] = {"exited", NULL};
    expect_abort(exit_twice_task, texts);
}

static int enter_twice_task(void *arg) {
    (void)arg;
    nest_scope s;
    enter_here(&s);
    nest_scope_enter(&s, NEST_FOREVER);
    return 0;
}

NEST_TEST(entering_an_entered_scope_aborts) {
    const char *texts[] = {"already entered", entry_place(), NULL};
    expect_abort(enter_twice_task, texts);
}

NEST_TEST_ABORTS(scope_enter_outside_a_task_aborts, "outside a task") {
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
}
