/*
 * test/test_nursery.c - nurseries, nest_start() and task handles
 * (nest/nursery.h, nest/task.h).
 *
 * Covers: close waits for every child; spawn never runs the child inside
 * the call; FIFO first runs; which scopes children inherit; handing a
 * nursery to another task; failures (a child, two children, more than are
 * stored, the body) cancelling the rest and surfacing from close; outer
 * versus own cancellation; nest_start()/nest_started(); handles (wait,
 * cancel, identity); misuse that aborts; nested nurseries;
 * NEST_NURSERY_AUTO; many children; per-spawn stack sizes.
 *
 * Time runs on the mock clock with autojump 0, so recorded times are exact.
 */
#define _GNU_SOURCE

#include "harness.h"
#include "support.h"
#include "nest.h"

/* ---- helpers ----------------------------------------------------------- */

/* Small children used by many cases. */

static int sleep_1s(void *arg) {
    (void)arg;
    return nest_sleep(NEST_SEC(1));
}

static int fail_eio_at_1s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    note("F fails @%lld", ms());
    return -EIO;
}

/* Sleeps forever, records how the sleep ended in *(int *)arg and when (ms)
 * in the int after it, and returns the sleep's result. */
static int record_sleep_forever(void *arg) {
    int *out = arg;
    int rc = nest_sleep_forever();
    out[0] = rc;
    out[1] = (int)ms();
    return rc;
}

/* ---- spawning and closing ---------------------------------------------- */

static int finished;

static int sleep_arg_ms(void *arg) {
    CHECK_EQ(nest_sleep(NEST_MSEC((intptr_t)arg)), 0);
    finished++;
    return 0;
}

static int close_waits_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    for (intptr_t i = 0; i < 50; i++) CHECK_EQ(nest_spawn(&n, sleep_arg_ms, (void *)(49 - i)), 0);
    CHECK_EQ(finished, 0);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    CHECK_EQ(finished, 50);
    CHECK_EQ(nest_now(), NEST_MSEC(49)); /* exactly as long as the longest child */
    return 0;
}

NEST_TEST(close_waits_for_every_child) { CHECK_EQ(run_mock(close_waits_task, NULL), 0); }

static int flag;

static int set_flag(void *arg) {
    (void)arg;
    flag = 1;
    return 0;
}

static int spawn_not_inline_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, set_flag, NULL), 0);
    note("after spawn %d", flag);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    note("after close %d", flag);
    return 0;
}

NEST_TEST(spawn_never_runs_the_child_inside_the_call) {
    CHECK_EQ(run_mock(spawn_not_inline_task, NULL), 0);
    CHECK_STREQ(events, "after spawn 0 after close 1");
}

static int note_arg(void *arg) {
    note("c%d", (int)(intptr_t)arg);
    return 0;
}

static int fifo_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    for (intptr_t i = 0; i < 5; i++) CHECK_EQ(nest_spawn(&n, note_arg, (void *)i), 0);
    note("body");
    return nest_nursery_close(&n, 0);
}

NEST_TEST(children_first_run_in_fifo_order) {
    CHECK_EQ(run_mock(fifo_task, NULL), 0);
    CHECK_STREQ(events, "body c0 c1 c2 c3 c4");
}

/* ---- inherited scopes --------------------------------------------------- */

/* Checkpoints, then sleeps 1 s ("C1") or 2 s ("C2"). */
static int ckpt_then_sleep(void *arg) {
    int rc1 = nest_checkpoint();
    int rc2 = nest_sleep(NEST_SEC(strcmp(arg, "C1") == 0 ? 1 : 2));
    note("%s ckpt %d sleep %d @%lld", (const char *)arg, rc1, rc2, ms());
    return 0;
}

static int spawn_from_own_cancelled_scope(void *arg) {
    nest_nursery *n = arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    CHECK_EQ(nest_spawn(n, ckpt_then_sleep, "C2"), 0);
    CHECK_EQ(nest_scope_exit(&s, 0), 0);
    return 0;
}

static int spawn_from_cancelled_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    CHECK_EQ(nest_spawn(&n, ckpt_then_sleep, "C1"), 0);
    CHECK_EQ(nest_spawn(&n, spawn_from_own_cancelled_scope, &n), 0);
    int rc = nest_checkpoint();
    CHECK_EQ(rc, -ECANCELED);
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    return nest_nursery_close(&n, 0);
}

/* Children hang below the scope where the nursery was opened: spawning from
 * inside a cancelled scope (of the opener or of another task) does not make
 * the child cancelled. */
NEST_TEST(spawn_from_cancelled_scope_child_not_cancelled) {
    CHECK_EQ(run_mock(spawn_from_cancelled_task, NULL), 0);
    CHECK_STREQ(events, "C1 ckpt 0 sleep 0 @1000 C2 ckpt 0 sleep 0 @2000");
}

static int slot_c[2];

static int cancel_around_open_task(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, record_sleep_forever, slot_c), 0);
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    nest_scope_cancel(&s);
    int rc = nest_nursery_close(&n, 0);
    note("close %d", rc);
    rc = nest_scope_exit(&s, rc);
    note("exit %d caught %d", rc, nest_scope_cancelled_caught(&s));
    note("failures %d", nest_nursery_failure_count(&n));
    return 0;
}

/* Cancelling the scope that encloses the nursery's open cancels its
 * children; close reports the outer cancellation, which that scope absorbs. */
NEST_TEST(cancelling_scope_around_open_cancels_children) {
    CHECK_EQ(run_mock(cancel_around_open_task, NULL), 0);
    CHECK_EQ(slot_c[0], -ECANCELED);
    CHECK_EQ(slot_c[1], 1000);
    CHECK_STREQ(events, "close -125 exit 0 caught 1 failures 0");
}

/* ---- handing a nursery to another task --------------------------------- */

static int late_child(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    note("B done @%lld", ms());
    return 0;
}

static int spawner(void *arg) {
    nest_nursery *n = arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    note("A spawns @%lld", ms());
    CHECK_EQ(nest_spawn(n, late_child, NULL), 0);
    return 0;
}

static int handed_over_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, spawner, &n), 0);
    note("closing");
    int rc = nest_nursery_close(&n, 0);
    note("closed %d @%lld", rc, ms());
    return 0;
}

/* Another task spawns into the nursery while the opener is blocked in close;
 * close waits for that child too. */
NEST_TEST(nursery_handed_to_another_task) {
    CHECK_EQ(run_mock(handed_over_task, NULL), 0);
    CHECK_STREQ(events, "closing A spawns @1000 B done @2000 closed 0 @2000");
}

/* ---- failures ---------------------------------------------------------- */

static int slot_s1[2], slot_s2[2];

static int sleep_10s_recorded(void *arg) {
    int *out = arg;
    out[0] = nest_sleep(NEST_SEC(10));
    out[1] = (int)ms();
    return out[0];
}

static int child_error_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, record_sleep_forever, slot_s1), 0);
    CHECK_EQ(nest_spawn(&n, sleep_10s_recorded, slot_s2), 0);
    CHECK_EQ(nest_spawn(&n, fail_eio_at_1s, NULL), 0);
    int rc = nest_sleep(NEST_SEC(100));
    note("body %d @%lld", rc, ms());
    rc = nest_nursery_close(&n, rc);
    note("close %d @%lld", rc, ms());
    CHECK_EQ(nest_nursery_failure_count(&n), 1);
    nest_failure f;
    CHECK_EQ(nest_nursery_failure(&n, 0, &f), 0);
    CHECK_STREQ(f.task, "fail_eio_at_1s");
    CHECK_EQ(f.code, -EIO);
    CHECK(strstr(f.file, "test_nursery.c") != NULL);
    return 0;
}

/* A child's error while the body is blocked in a sleep cancels the body and
 * every sibling at once, and close returns that error. */
NEST_TEST(child_error_cancels_body_and_siblings) {
    CHECK_EQ(run_mock(child_error_task, NULL), 0);
    CHECK_STREQ(events, "F fails @1000 body -125 @1000 close -5 @1000");
    CHECK_EQ(slot_s1[0], -ECANCELED);
    CHECK_EQ(slot_s1[1], 1000);
    CHECK_EQ(slot_s2[0], -ECANCELED);
    CHECK_EQ(slot_s2[1], 1000);
}

static int fail_epipe_when_cancelled(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep_forever(), -ECANCELED);
    return -EPIPE; /* a real failure during the cancellation, not -ECANCELED */
}

static void on_failure_note(void *arg, const nest_failure *f) {
    CHECK_STREQ((const char *)arg, "ctx");
    /* It runs in the failing task. */
    CHECK_STREQ(nest_task_name(nest_current_task()), f->task);
    note("cb %s %d", f->task, f->code);
}

static int fail2_line, fail1_line;

static int two_failures_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_nursery_on_failure(&n, on_failure_note, "ctx");
    fail2_line = __LINE__ + 1;
    CHECK_EQ(nest_spawn(&n, fail_epipe_when_cancelled, NULL), 0);
    fail1_line = __LINE__ + 1;
    CHECK_EQ(nest_spawn(&n, fail_eio_at_1s, NULL), 0);
    int rc = nest_nursery_close(&n, 0);
    note("close %d count %d", rc, nest_nursery_failure_count(&n));
    nest_failure f;
    CHECK_EQ(nest_nursery_failure(&n, 0, &f), 0);
    CHECK_STREQ(f.task, "fail_eio_at_1s");
    CHECK_EQ(f.code, -EIO);
    CHECK(strstr(f.file, "test_nursery.c") != NULL);
    CHECK_EQ(f.line, fail1_line);
    CHECK_EQ(nest_nursery_failure(&n, 1, &f), 0);
    CHECK_STREQ(f.task, "fail_epipe_when_cancelled");
    CHECK_EQ(f.code, -EPIPE);
    CHECK_EQ(f.line, fail2_line);
    CHECK_EQ(nest_nursery_failure(&n, 2, &f), -EINVAL);
    CHECK_EQ(nest_nursery_failure(&n, -1, &f), -EINVAL);
    return 0;
}

/* Two children fail: close returns the first error, and both are kept (in
 * order, with task names, spawn sites and codes) and seen by the callback. */
NEST_TEST(two_children_failing) {
    CHECK_EQ(run_mock(two_failures_task, NULL), 0);
    CHECK_STREQ(events, "F fails @1000 cb fail_eio_at_1s -5 cb fail_epipe_when_cancelled -32 "
                        "close -5 count 2");
}

static int fail_with_arg(void *arg) { return (int)(intptr_t)arg; }

static int many_failures_task(void *arg) {
    (void)arg;
    static const char *names[] = {"f0", "f1", "f2", "f3", "f4", "f5"};
    static const int codes[] = {-EIO, -EPIPE, -ENOENT, -EPERM, -EINTR, -EMFILE};
    nest_nursery n;
    nest_nursery_open(&n);
    nest_nursery_on_failure(&n, on_failure_note, "ctx");
    for (int i = 0; i < 6; i++) {
        nest_spawn_options o = {0};
        o.name = names[i];
        CHECK_EQ(nest_spawn_opts(&n, fail_with_arg, (void *)(intptr_t)codes[i], &o), 0);
    }
    int rc = nest_nursery_close(&n, 0);
    note("close %d count %d", rc, nest_nursery_failure_count(&n));
    nest_failure f;
    for (int i = 0; i < NEST_NURSERY_FAILURES; i++) {
        CHECK_EQ(nest_nursery_failure(&n, i, &f), 0);
        CHECK_STREQ(f.task, names[i]);
        CHECK_EQ(f.code, codes[i]);
    }
    CHECK_EQ(nest_nursery_failure(&n, NEST_NURSERY_FAILURES, &f), -EINVAL);
    return 0;
}

/* Children that fail without reaching a checkpoint all fail; more failures
 * than are stored are still counted and all reach the callback. */
NEST_TEST(failures_beyond_storage_are_counted) {
    CHECK_EQ(run_mock(many_failures_task, NULL), 0);
    CHECK_STREQ(events, "cb f0 -5 cb f1 -32 cb f2 -2 cb f3 -1 cb f4 -4 cb f5 -24 "
                        "close -5 count 6");
}

static int slot_body_child[2];
static int body_open_line;

static int body_failure_task(void *arg) {
    (void)arg;
    nest_nursery n;
    body_open_line = __LINE__ + 1;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, record_sleep_forever, slot_body_child), 0);
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    int rc = nest_nursery_close(&n, -EIO);
    note("close %d @%lld count %d", rc, ms(), nest_nursery_failure_count(&n));
    nest_failure f;
    CHECK_EQ(nest_nursery_failure(&n, 0, &f), 0);
    CHECK_STREQ(f.task, "<body>");
    CHECK_EQ(f.code, -EIO);
    CHECK(strstr(f.file, "test_nursery.c") != NULL);
    CHECK_EQ(f.line, body_open_line);
    return 0;
}

/* A failing body (its rc passed to close) cancels the children and is
 * returned, recorded as "<body>" at the nursery's open. */
NEST_TEST(body_failure_cancels_children) {
    CHECK_EQ(run_mock(body_failure_task, NULL), 0);
    CHECK_STREQ(events, "close -5 @1000 count 1");
    CHECK_EQ(slot_body_child[0], -ECANCELED);
    CHECK_EQ(slot_body_child[1], 1000);
}

static int outer_cancel_task(void *arg) {
    (void)arg;
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(1));
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, record_sleep_forever, slot_c), 0);
    int rc = nest_sleep_forever();
    note("body %d @%lld", rc, ms());
    rc = nest_nursery_close(&n, rc);
    note("close %d count %d", rc, nest_nursery_failure_count(&n));
    rc = nest_scope_exit(&s, rc);
    note("exit %d caught %d", rc, nest_scope_cancelled_caught(&s));
    return 0;
}

/* Cancellation from outside (an enclosing deadline): close returns
 * -ECANCELED, not a failure, and the enclosing scope absorbs it. */
NEST_TEST(outer_cancellation_surfaces_as_ecanceled) {
    CHECK_EQ(run_mock(outer_cancel_task, NULL), 0);
    CHECK_STREQ(events, "body -125 @1000 close -125 count 0 exit 0 caught 1");
    CHECK_EQ(slot_c[0], -ECANCELED);
}

static int cancel_nursery_at_1s(void *arg) {
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    nest_nursery_cancel(arg);
    note("K cancels @%lld", ms());
    return 0;
}

static int own_cancel_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, record_sleep_forever, slot_c), 0);
    CHECK_EQ(nest_spawn(&n, cancel_nursery_at_1s, &n), 0);
    int rc = nest_sleep_forever();
    note("body %d @%lld", rc, ms());
    rc = nest_nursery_close(&n, rc);
    note("close %d count %d", rc, nest_nursery_failure_count(&n));
    return 0;
}

/* nest_nursery_cancel: the body's and the child's -ECANCELED are the
 * nursery's own doing; close absorbs them and returns 0. */
NEST_TEST(nursery_cancel_is_absorbed_by_close) {
    CHECK_EQ(run_mock(own_cancel_task, NULL), 0);
    CHECK_STREQ(events, "K cancels @1000 body -125 @1000 close 0 count 0");
    CHECK_EQ(slot_c[0], -ECANCELED);
    CHECK_EQ(slot_c[1], 1000);
}

static int child_ecanceled_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, record_sleep_forever, slot_c), 0);
    CHECK_EQ(nest_spawn(&n, record_sleep_forever, slot_s1), 0);
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    nest_nursery_cancel(&n);
    int rc = nest_nursery_close(&n, 0);
    note("close %d count %d", rc, nest_nursery_failure_count(&n));
    return 0;
}

/* Children returning the -ECANCELED that the nursery's cancel caused are not
 * failures. */
NEST_TEST(child_cancelled_by_its_nursery_is_not_a_failure) {
    CHECK_EQ(run_mock(child_ecanceled_task, NULL), 0);
    CHECK_STREQ(events, "close 0 count 0");
    CHECK_EQ(slot_c[0], -ECANCELED);
    CHECK_EQ(slot_s1[0], -ECANCELED);
}

static int nursery_deadline_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_scope_set_deadline(nest_nursery_scope(&n), NEST_SEC(1));
    CHECK_EQ(nest_scope_deadline(nest_nursery_scope(&n)), NEST_SEC(1));
    CHECK_EQ(nest_spawn(&n, record_sleep_forever, slot_c), 0);
    int rc = nest_nursery_close(&n, 0);
    note("close %d @%lld count %d", rc, ms(), nest_nursery_failure_count(&n));
    return 0;
}

/* A deadline on the nursery's own scope is the nursery's own cancellation. */
NEST_TEST(deadline_on_nursery_scope_is_absorbed) {
    CHECK_EQ(run_mock(nursery_deadline_task, NULL), 0);
    CHECK_STREQ(events, "close 0 @1000 count 0");
    CHECK_EQ(slot_c[0], -ECANCELED);
}

static int shielded_cleanup_2s(void *arg) {
    (void)arg;
    int rc = nest_sleep_forever();
    nest_scope sh;
    nest_scope_enter(&sh, NEST_FOREVER);
    nest_scope_set_shield(&sh, 1);
    CHECK_EQ(nest_sleep(NEST_SEC(2)), 0);
    CHECK_EQ(nest_scope_exit(&sh, 0), 0);
    note("cleanup done @%lld", ms());
    return rc;
}

static int never_abandons_task(void *arg) {
    (void)arg;
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(1));
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, shielded_cleanup_2s, NULL), 0);
    int rc = nest_sleep_forever();
    rc = nest_nursery_close(&n, rc);
    note("close %d @%lld", rc, ms());
    note("exit %d", nest_scope_exit(&s, rc));
    return 0;
}

/* A cancelled caller's close still waits for a child that takes its time to
 * clean up (close is not a checkpoint). */
NEST_TEST(close_never_abandons_a_child) {
    CHECK_EQ(run_mock(never_abandons_task, NULL), 0);
    CHECK_STREQ(events, "cleanup done @3000 close -125 @3000 exit 0");
}

static int returns_zero_without_checkpoint(void *arg) {
    (void)arg;
    note("child ran");
    return 0;
}

static int close_in_cancelled_scope_task(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, returns_zero_without_checkpoint, NULL), 0);
    int rc = nest_nursery_close(&n, 0);
    note("close %d", rc);
    rc = nest_scope_exit(&s, rc);
    note("exit %d caught %d", rc, nest_scope_cancelled_caught(&s));
    return 0;
}

/* Close inside a cancelled scope, where nothing was actually cancelled
 * (the child never reached a checkpoint): close is not a checkpoint, so it
 * returns 0. */
NEST_TEST(close_in_cancelled_scope_returns_zero_when_nothing_failed) {
    CHECK_EQ(run_mock(close_in_cancelled_scope_task, NULL), 0);
    CHECK_STREQ(events, "child ran close 0 exit 0 caught 0");
}

/* ---- nest_start ------------------------------------------------------- */

static int token;

static int server(void *arg) {
    (void)arg;
    note("srv setup");
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    nest_started(&token);
    note("srv started @%lld", ms());
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    note("srv done @%lld", ms());
    return 0;
}

static int start_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    void *value = NULL;
    int rc = nest_start(&n, server, NULL, &value);
    note("start %d @%lld value %d", rc, ms(), value == &token);
    rc = nest_nursery_close(&n, 0);
    note("close %d @%lld", rc, ms());
    return 0;
}

/* The caller blocks until nest_started(value), receives value, and the
 * child keeps running in the nursery. */
NEST_TEST(start_waits_for_started_and_passes_value) {
    CHECK_EQ(run_mock(start_task, NULL), 0);
    CHECK_STREQ(events, "srv setup srv started @1000 start 0 @1000 value 1 srv done @2000 "
                        "close 0 @2000");
}

static int fails_before_started(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    return -EIO;
}

static int returns_without_started(void *arg) {
    (void)arg;
    return 0;
}

static nest_fn start_fn;

static int start_error_task(void *arg) {
    (void)arg;
    nest_fn fn = start_fn;
    nest_nursery n;
    nest_nursery_open(&n);
    void *value = &token;
    int rc = nest_start(&n, fn, NULL, &value);
    note("start %d @%lld", rc, ms());
    rc = nest_nursery_close(&n, 0);
    note("close %d count %d", rc, nest_nursery_failure_count(&n));
    return 0;
}

/* A child that fails before nest_started(): start returns its error; the
 * nursery records nothing (the error went to the starter). */
NEST_TEST(start_child_fails_before_started) {
    start_fn = fails_before_started;
    CHECK_EQ(run_mock(start_error_task, NULL), 0);
    CHECK_STREQ(events, "start -5 @1000 close 0 count 0");
}

NEST_TEST(start_child_returns_without_started) {
    start_fn = returns_without_started;
    CHECK_EQ(run_mock(start_error_task, NULL), 0);
    CHECK_STREQ(events, "start -10003 @0 close 0 count 0");
}

static int never_starts(void *arg) {
    (void)arg;
    int rc = nest_sleep_forever();
    note("child %d @%lld", rc, ms());
    return rc;
}

static int cancel_starter_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(1));
    int rc = nest_start(&n, never_starts, NULL, NULL);
    note("start %d @%lld", rc, ms());
    rc = nest_scope_exit(&s, rc);
    note("exit %d", rc);
    rc = nest_nursery_close(&n, 0);
    note("close %d count %d", rc, nest_nursery_failure_count(&n));
    return 0;
}

/* Before it has started, the child runs under the caller's scopes: the
 * caller's deadline cancels it, and start returns -ECANCELED only after the
 * child has finished. */
NEST_TEST(cancelling_start_caller_cancels_child) {
    CHECK_EQ(run_mock(cancel_starter_task, NULL), 0);
    CHECK_STREQ(events, "child -125 @1000 start -125 @1000 exit 0 close 0 count 0");
}

static int start_in_cancelled_scope_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    int rc = nest_start(&n, server, NULL, NULL);
    note("start %d @%lld", rc, ms());
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    rc = nest_nursery_close(&n, 0);
    note("close %d count %d", rc, nest_nursery_failure_count(&n));
    return 0;
}

/* nest_start is a checkpoint: in a cancelled scope it fails at once and the
 * child never runs. */
NEST_TEST(start_in_cancelled_scope_fails_at_once) {
    CHECK_EQ(run_mock(start_in_cancelled_scope_task, NULL), 0);
    CHECK_STREQ(events, "start -125 @0 close 0 count 0");
}

static int fails_right_after_started(void *arg) {
    (void)arg;
    nest_started(&token);
    note("child fails");
    return -EIO;
}

static int start_then_fail_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    void *value = NULL;
    int rc = nest_start(&n, fails_right_after_started, NULL, &value);
    note("start %d value %d", rc, value == &token);
    rc = nest_checkpoint(); /* the child's failure cancelled the body */
    note("ckpt %d", rc);
    rc = nest_nursery_close(&n, rc);
    nest_failure f;
    CHECK_EQ(nest_nursery_failure(&n, 0, &f), 0);
    note("close %d count %d by %s", rc, nest_nursery_failure_count(&n), f.task);
    return 0;
}

/* Once started, the child's errors belong to the nursery, not to start. */
NEST_TEST(start_child_failing_after_started_is_a_nursery_failure) {
    CHECK_EQ(run_mock(start_then_fail_task, NULL), 0);
    CHECK_STREQ(events, "child fails start 0 value 1 ckpt -125 close -5 count 1 by "
                        "fails_right_after_started");
}

static int starts_into_own_nursery(void *arg) {
    nest_nursery *n = arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0); /* the opener is in close by now */
    int rc = nest_start(n, server, NULL, NULL);
    note("start %d @%lld", rc, ms());
    return rc;
}

static int start_into_closing_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, starts_into_own_nursery, &n), 0);
    note("closing");
    int rc = nest_nursery_close(&n, 0);
    note("close %d @%lld", rc, ms());
    return 0;
}

/* nest_start into a nursery that is closing: close waits for the starting
 * child and then for it as a member of the nursery. */
NEST_TEST(start_into_a_closing_nursery) {
    CHECK_EQ(run_mock(start_into_closing_task, NULL), 0);
    CHECK_STREQ(events, "closing srv setup srv started @2000 start 0 @2000 srv done @3000 "
                        "close 0 @3000");
}

static int started_in_spawned_child(void *arg) {
    (void)arg;
    nest_started(&token);
    note("after started");
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    note("done @%lld", ms());
    return 0;
}

static int started_noop_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, started_in_spawned_child, NULL), 0);
    int rc = nest_nursery_close(&n, 0);
    note("close %d count %d", rc, nest_nursery_failure_count(&n));
    return 0;
}

NEST_TEST(started_in_spawned_task_is_a_noop) {
    CHECK_EQ(run_mock(started_noop_task, NULL), 0);
    CHECK_STREQ(events, "after started done @1000 close 0 count 0");
}

static int starts_twice(void *arg) {
    (void)arg;
    nest_started(NULL);
    nest_started(NULL);
    return 0;
}

static int start_twice_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_start(&n, starts_twice, NULL, NULL);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(started_twice_aborts) {
    const char *texts[] = {"twice", NULL};
    expect_abort(start_twice_root, texts);
}

static int started_then_sleeps(void *arg) {
    (void)arg;
    nest_started(NULL);
    int rc = nest_sleep_forever();
    note("srv %d @%lld", rc, ms());
    return rc;
}

static int after_started_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    CHECK_EQ(nest_start(&n, started_then_sleeps, NULL, NULL), 0);
    nest_scope_cancel(&s);
    note("starter scope cancelled");
    int rc = nest_checkpoint();
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    note("cancel nursery @%lld", ms());
    nest_nursery_cancel(&n);
    rc = nest_nursery_close(&n, 0);
    note("close %d count %d", rc, nest_nursery_failure_count(&n));
    return 0;
}

/* Once started, the child lives under the nursery's scope: cancelling the
 * starter's scope no longer reaches it, cancelling the nursery does. */
NEST_TEST(started_child_moves_under_the_nursery) {
    CHECK_EQ(run_mock(after_started_task, NULL), 0);
    CHECK_STREQ(events, "starter scope cancelled cancel nursery @1000 srv -125 @1000 close 0 "
                        "count 0");
}

/* ---- handles ---------------------------------------------------------- */

static int return_42_at_1s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    return 42;
}

static int task_wait_task(void *arg) {
    (void)arg;
    nest_task *h = NULL;
    nest_spawn_options o = {0};
    o.handle = &h;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn_opts(&n, return_42_at_1s, NULL, &o), 0);
    CHECK(h != NULL);
    CHECK_EQ(nest_task_done(h), 0);
    int result = 0;
    int rc = nest_task_wait(h, &result);
    note("wait %d result %d @%lld done %d", rc, result, ms(), nest_task_done(h));
    result = 0;
    rc = nest_task_wait(h, &result); /* already done: returns at once */
    note("again %d result %d @%lld", rc, result, ms());
    CHECK_EQ(nest_task_wait(h, NULL), 0);
    CHECK_EQ(nest_task_wait(nest_current_task(), &result), -EINVAL);
    return nest_nursery_close(&n, 0);
}

static nest_task *shared_handle;

static int waits_on_shared_handle(void *arg) {
    int result = 0;
    int rc = nest_task_wait(shared_handle, &result);
    note("%s %d %d @%lld", (const char *)arg, rc, result, ms());
    return 0;
}

static int two_waiters_task(void *arg) {
    (void)arg;
    nest_spawn_options o = {0};
    o.handle = &shared_handle;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn_opts(&n, return_42_at_1s, NULL, &o), 0);
    CHECK_EQ(nest_spawn(&n, waits_on_shared_handle, "W1"), 0);
    CHECK_EQ(nest_spawn(&n, waits_on_shared_handle, "W2"), 0);
    return nest_nursery_close(&n, 0);
}

/* Several tasks may wait for one child; each gets its value. */
NEST_TEST(task_wait_by_two_waiters) {
    CHECK_EQ(run_mock(two_waiters_task, NULL), 0);
    if (strcmp(events, "W2 0 42 @1000 W1 0 42 @1000") != 0)
        CHECK_STREQ(events, "W1 0 42 @1000 W2 0 42 @1000");
}

NEST_TEST(task_wait_returns_child_value) {
    CHECK_EQ(run_mock(task_wait_task, NULL), 0);
    CHECK_STREQ(events, "wait 0 result 42 @1000 done 1 again 0 result 42 @1000");
}

static int return_7_at_5s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(5)), 0);
    note("child done @%lld", ms());
    return 7;
}

static int wait_cancel_task(void *arg) {
    (void)arg;
    nest_task *h = NULL;
    nest_spawn_options o = {0};
    o.handle = &h;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn_opts(&n, return_7_at_5s, NULL, &o), 0);
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(1));
    int result = -1;
    int rc = nest_task_wait(h, &result);
    note("wait %d @%lld done %d", rc, ms(), nest_task_done(h));
    CHECK_EQ(result, -1);
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    rc = nest_task_wait(h, &result);
    note("wait %d result %d @%lld", rc, result, ms());
    rc = nest_nursery_close(&n, 0);
    note("close %d count %d", rc, nest_nursery_failure_count(&n));
    return 0;
}

/* Cancelling a wait leaves the child running untouched. */
NEST_TEST(task_wait_is_cancellable_and_leaves_child_running) {
    CHECK_EQ(run_mock(wait_cancel_task, NULL), 0);
    CHECK_STREQ(events, "wait -125 @1000 done 0 child done @5000 wait 0 result 7 @5000 "
                        "close 0 count 0");
}

/* Sleeps 2 s ("A", "B") or 3 s ("C"), then notes how the sleep ended. */
static int sleep_named(void *arg) {
    int rc = nest_sleep(NEST_SEC(strcmp(arg, "C") == 0 ? 3 : 2));
    note("%s %d @%lld", (const char *)arg, rc, ms());
    return rc;
}

static int task_cancel_task(void *arg) {
    (void)arg;
    nest_task *h = NULL;
    nest_spawn_options o = {0};
    o.handle = &h;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, sleep_named, "B"), 0);
    CHECK_EQ(nest_spawn_opts(&n, sleep_named, "A", &o), 0);
    CHECK_EQ(nest_spawn(&n, sleep_named, "C"), 0);
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    nest_task_cancel(h);
    note("cancel A");
    int result = 0;
    CHECK_EQ(nest_task_wait(h, &result), 0);
    note("A returned %d", result);
    nest_task_cancel(h); /* a finished task: a no-op */
    int rc = nest_nursery_close(&n, 0);
    note("close %d @%lld count %d", rc, ms(), nest_nursery_failure_count(&n));
    return 0;
}

/* nest_task_cancel cancels that child alone; its -ECANCELED is no failure. */
NEST_TEST(task_cancel_cancels_only_that_child) {
    CHECK_EQ(run_mock(task_cancel_task, NULL), 0);
    CHECK_STREQ(events, "cancel A A -125 @1000 A returned -125 B 0 @2000 C 0 @3000 "
                        "close 0 @3000 count 0");
}

static nest_task *self_seen[2]; /* what each child saw as nest_current_task() */

static int identity_child(void *arg) {
    *(nest_task **)arg = nest_current_task();
    return nest_checkpoint();
}

static int identity_line;

static int identity_task(void *arg) {
    (void)arg;
    nest_task *me = nest_current_task();
    CHECK(me != NULL);
    CHECK_STREQ(nest_task_name(me), "main");
    CHECK_EQ(nest_task_id(me), 1);
    CHECK_EQ(nest_task_done(me), 0);

    nest_task *h1 = NULL, *h2 = NULL;
    nest_spawn_options o1 = {0}, o2 = {0};
    o1.handle = &h1;
    o2.handle = &h2;
    o2.name = "custom name";
    nest_nursery n;
    nest_nursery_open(&n);
    identity_line = __LINE__ + 1;
    CHECK_EQ(nest_spawn_opts(&n, identity_child, &self_seen[0], &o1), 0);
    CHECK_EQ(nest_spawn_opts(&n, identity_child, &self_seen[1], &o2), 0);
    CHECK_STREQ(nest_task_name(h1), "identity_child");
    CHECK_STREQ(nest_task_name(h2), "custom name");
    CHECK(strstr(nest_task_file(h1), "test_nursery.c") != NULL);
    CHECK_EQ(nest_task_line(h1), identity_line);
    CHECK(nest_task_id(h1) != nest_task_id(h2));
    CHECK(nest_task_id(h1) > 1 && nest_task_id(h2) > 1);
    CHECK_EQ(nest_task_done(h1), 0);
    CHECK_EQ(nest_task_wait(h1, NULL), 0);
    CHECK(self_seen[0] == h1);
    CHECK_EQ(nest_task_done(h1), 1);
    CHECK_STREQ(nest_task_name(h1), "identity_child"); /* valid until close */
    CHECK_EQ(nest_task_wait(h2, NULL), 0);
    CHECK(self_seen[1] == h2);
    return nest_nursery_close(&n, 0);
}

/* Names default to the function's name, options override; ids are unique
 * with the root task 1; done turns true when the child returns. */
NEST_TEST(task_identity_name_id_done) { CHECK_EQ(run_mock(identity_task, NULL), 0); }

/* ---- misuse ------------------------------------------------------------ */

static const int open_here_line = __LINE__ + 1;
static void open_here(nest_nursery *n) { nest_nursery_open(n); }

static char where[64];

static const char *open_place(void) {
    snprintf(where, sizeof where, "test_nursery.c:%d", open_here_line);
    return where;
}

static int spawn_after_close_task(void *arg) {
    (void)arg;
    nest_nursery n;
    open_here(&n);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    nest_spawn(&n, set_flag, NULL);
    return 0;
}

NEST_TEST(spawn_into_closed_nursery_aborts) {
    const char *texts[] = {"is closed", open_place(), NULL};
    expect_abort(spawn_after_close_task, texts);
}

static int close_other(void *arg) {
    nest_nursery_close(arg, 0);
    return 0;
}

static int close_from_other_task(void *arg) {
    (void)arg;
    nest_nursery outer;
    nest_nursery_open(&outer);
    nest_nursery n;
    open_here(&n);
    nest_spawn(&outer, close_other, &n);
    nest_sleep_forever();
    return 0;
}

NEST_TEST(closing_from_another_task_aborts) {
    const char *texts[] = {open_place(), NULL};
    expect_abort(close_from_other_task, texts);
}

static int close_twice_task(void *arg) {
    (void)arg;
    nest_nursery n;
    open_here(&n);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    nest_nursery_close(&n, 0);
    return 0;
}

NEST_TEST(closing_twice_aborts) {
    const char *texts[] = {"closed", NULL};
    expect_abort(close_twice_task, texts);
}

static int close_misnested_task(void *arg) {
    (void)arg;
    nest_nursery n;
    open_here(&n);
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_nursery_close(&n, 0);
    return 0;
}

/* A nursery follows the nesting rules of a scope. */
NEST_TEST(closing_with_a_scope_still_entered_aborts) {
    const char *texts[] = {"misnested", open_place(), NULL};
    expect_abort(close_misnested_task, texts);
}

/* ---- nesting, AUTO, scale, stacks ------------------------------------- */

static int slot_g1[2], slot_s[2];

static int middle(void *arg) {
    (void)arg;
    nest_nursery n2;
    nest_nursery_open(&n2);
    CHECK_EQ(nest_spawn(&n2, record_sleep_forever, slot_g1), 0);
    CHECK_EQ(nest_spawn(&n2, fail_eio_at_1s, NULL), 0);
    int rc = nest_nursery_close(&n2, 0);
    note("M close %d", rc);
    return rc;
}

static int nested_failure_task(void *arg) {
    (void)arg;
    nest_nursery n1;
    nest_nursery_open(&n1);
    CHECK_EQ(nest_spawn(&n1, record_sleep_forever, slot_s), 0);
    CHECK_EQ(nest_spawn(&n1, middle, NULL), 0);
    int rc = nest_nursery_close(&n1, 0);
    nest_failure f;
    CHECK_EQ(nest_nursery_failure(&n1, 0, &f), 0);
    note("close %d count %d by %s", rc, nest_nursery_failure_count(&n1), f.task);
    return 0;
}

/* A grandchild's failure fails the inner nursery, whose opener then fails
 * in the outer one, cancelling the outer siblings. */
NEST_TEST(nested_nurseries_propagate_failure) {
    CHECK_EQ(run_mock(nested_failure_task, NULL), 0);
    CHECK_STREQ(events, "F fails @1000 M close -5 close -5 count 1 by middle");
    CHECK_EQ(slot_g1[0], -ECANCELED);
    CHECK_EQ(slot_g1[1], 1000);
    CHECK_EQ(slot_s[0], -ECANCELED);
    CHECK_EQ(slot_s[1], 1000);
}

static int middle_waits(void *arg) {
    (void)arg;
    nest_nursery n2;
    nest_nursery_open(&n2);
    CHECK_EQ(nest_spawn(&n2, record_sleep_forever, slot_g1), 0);
    int rc = nest_nursery_close(&n2, 0);
    note("M close %d", rc);
    return rc;
}

static int nested_cancel_task(void *arg) {
    (void)arg;
    nest_nursery n1;
    nest_nursery_open(&n1);
    CHECK_EQ(nest_spawn(&n1, middle_waits, NULL), 0);
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    nest_nursery_cancel(&n1);
    int rc = nest_nursery_close(&n1, 0);
    note("close %d count %d", rc, nest_nursery_failure_count(&n1));
    return 0;
}

/* Cancelling the outer nursery reaches the grandchildren; the inner close
 * sees an outer cancellation, which the outer nursery absorbs. */
NEST_TEST(nested_nurseries_outer_cancel_reaches_grandchildren) {
    CHECK_EQ(run_mock(nested_cancel_task, NULL), 0);
    CHECK_STREQ(events, "M close -125 close 0 count 0");
    CHECK_EQ(slot_g1[0], -ECANCELED);
    CHECK_EQ(slot_g1[1], 1000);
}

static int sleep_1s_set_flag(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    flag = 1;
    return 0;
}

static int auto_helper(void) {
    nest_nursery n NEST_NURSERY_AUTO;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, sleep_1s_set_flag, NULL), 0);
    if (nest_now() >= 0) return 5; /* closes n, waiting for the child */
    return nest_nursery_close(&n, 0);
}

static int auto_closed_explicitly(void) {
    nest_nursery n NEST_NURSERY_AUTO;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, sleep_1s, NULL), 0);
    return nest_nursery_close(&n, 0); /* the automatic close is then a no-op */
}

static int nursery_auto_task(void *arg) {
    (void)arg;
    int rc = auto_helper();
    note("%d @%lld flag %d", rc, ms(), flag);
    rc = auto_closed_explicitly();
    note("%d @%lld", rc, ms());
    return 0;
}

NEST_TEST(nursery_auto_closes_on_early_return) {
    CHECK_EQ(run_mock(nursery_auto_task, NULL), 0);
    CHECK_STREQ(events, "5 @1000 flag 1 0 @2000");
}

static int counter;

static int count_after_checkpoint(void *arg) {
    (void)arg;
    CHECK_EQ(nest_checkpoint(), 0);
    counter++;
    return 0;
}

static int ten_thousand_task(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    for (int i = 0; i < 10000; i++) CHECK_EQ(nest_spawn(&n, count_after_checkpoint, NULL), 0);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    CHECK_EQ(counter, 10000);
    return 0;
}

NEST_TEST(ten_thousand_children) { CHECK_EQ(run_mock(ten_thousand_task, NULL), 0); }

/* Touches about 200 KiB of stack, one kilobyte-sized frame at a time. */
static int deep(int depth) {
    volatile char frame[1024];
    memset((char *)frame, depth & 0xff, sizeof frame);
    if (depth == 0) return frame[7];
    return deep(depth - 1) + frame[depth % 1024];
}

static int big_stack_child(void *arg) {
    (void)arg;
    note("deep %d", deep(200) != -1);
    return 0;
}

static int stack_size_task(void *arg) {
    (void)arg;
    nest_spawn_options o = {0};
    o.stack_size = 1024 * 1024;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn_opts(&n, big_stack_child, NULL, &o), 0);
    return nest_nursery_close(&n, 0);
}

/* The default stack (64 KiB) is too small for this child; 1 MiB is enough. */
NEST_TEST(per_spawn_stack_size) {
    CHECK_EQ(run_mock(stack_size_task, NULL), 0);
    CHECK_STREQ(events, "deep 1");
}
