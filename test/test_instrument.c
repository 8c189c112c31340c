/*
 * test/test_instrument.c - instrumentation hooks (nest/instrument.h) and
 * the test helpers built on them (nest/testing.h).
 *
 * Covers: the exact sequence of hook calls for a small run; what
 * task_scheduled and after_task_step see (the state a task leaves / why a
 * step ended); I/O-wait hooks; scope_cancelled for cancel, deadline and a
 * sleep's end; nursery open/close; add/remove rules (twice, unknown,
 * outside a runtime, removing oneself from a callback, adding mid-run,
 * after_run unregisters); nest_testing_yields/cancels/checkpoints on real
 * checkpoints and on calls that are not; the sequencer's order, its
 * errors, and breaking on cancellation.
 *
 * Unless a case says otherwise it runs on the mock clock with autojump 0.
 */
#define _GNU_SOURCE
#include <unistd.h>

#include "harness.h"
#include "support.h"
#include "nest.h"
#include "nest/inspect.h"
#include "nest/instrument.h"
#include "nest/testing.h"

/* ---- helpers ----------------------------------------------------------- */

static int run_mock_with(nest_fn fn, void *arg, nest_instrument *ins) {
    nest_run_options o;
    nest_run_options_init(&o);
    o.clock = NEST_CLOCK_MOCK;
    o.autojump_threshold = 0;
    o.instrument = ins;
    return nest_run_opts(fn, arg, &o);
}

/* ---- a logging instrument ---------------------------------------------- */

static const char *state_letter(const nest_task *t) {
    static const char *l[] = {"N", "R", "X", "B", "D"};
    int s = nest_task_state(t);
    return s >= 0 && s <= 4 ? l[s] : "?";
}

static void log_before_run(void *arg) { (void)arg, note("run"); }
static void log_after_run(void *arg) { (void)arg, note("end"); }
static void log_spawned(void *arg, nest_task *t) { (void)arg, note("spawn:%s", nest_task_name(t)); }
static void log_scheduled(void *arg, nest_task *t) {
    (void)arg, note("sched:%s/%s", nest_task_name(t), state_letter(t));
}
static void log_before(void *arg, nest_task *t) { (void)arg, note("+%s", nest_task_name(t)); }
static void log_after(void *arg, nest_task *t) {
    (void)arg, note("-%s/%s", nest_task_name(t), state_letter(t));
}
static void log_exited(void *arg, nest_task *t) {
    (void)arg, note("exit:%s=%d", nest_task_name(t), nest_task_result(t));
}

static nest_instrument logger = {
    .before_run = log_before_run,
    .after_run = log_after_run,
    .task_spawned = log_spawned,
    .task_scheduled = log_scheduled,
    .before_task_step = log_before,
    .after_task_step = log_after,
    .task_exited = log_exited,
};

static int child_a(void *arg) {
    (void)arg;
    CHECK_EQ(nest_checkpoint(), 0);
    return 3;
}
static int child_b(void *arg) {
    (void)arg;
    return nest_sleep(NEST_SEC(1));
}
static int small_run(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn(&n, child_a, NULL);
    nest_spawn(&n, child_b, NULL);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(hooks_fire_in_order) {
    events[0] = '\0';
    CHECK_EQ(run_mock_with(small_run, NULL, &logger), 0);
    CHECK_STREQ(events,
                "run spawn:main sched:main/N +main "
                "spawn:child_a sched:child_a/N spawn:child_b sched:child_b/N "
                "-main/B "                            /* main blocks in close */
                "+child_a sched:child_a/X -child_a/R " /* a yields at its checkpoint */
                "+child_b -child_b/B "                /* b sleeps */
                "+child_a -child_a/X exit:child_a=3 " /* a returns */
                "sched:child_b/B +child_b -child_b/X exit:child_b=0 " /* the clock jumped */
                "sched:main/B +main -main/X exit:main=0 end");
    /* after_run unregistered it: the same struct can serve another run. */
    events[0] = '\0';
    CHECK_EQ(run_mock_with(small_run, NULL, &logger), 0);
    CHECK(strncmp(events, "run spawn:main", 14) == 0);
}

/* What the state says at task_scheduled: woken from BLOCKED, yielded from
 * RUNNING, spawned from NEW; and at after_task_step, the block kind. */
static char blocked_kinds[256];
static void kind_after(void *arg, nest_task *t) {
    (void)arg;
    nest_block_info b;
    if (nest_task_block(t, &b) != NEST_BLOCK_NONE) {
        size_t len = strlen(blocked_kinds);
        snprintf(blocked_kinds + len, sizeof blocked_kinds - len, "%s%s", len ? "," : "",
                 nest_block_kind_name(b.kind));
    }
}
static nest_instrument kinds = {.after_task_step = kind_after};

static int kinds_child(void *arg) {
    (void)arg;
    return nest_sleep_forever();
}
static int kinds_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_task *h;
    nest_spawn_options o = {NULL, 0, &h};
    nest_spawn_opts(&n, kinds_child, NULL, &o);
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    nest_task_cancel(h);
    CHECK_EQ(nest_task_wait(h, NULL), 0);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(after_step_sees_what_the_task_blocked_on) {
    CHECK_EQ(run_mock_with(kinds_root, NULL, &kinds), 0);
    CHECK_STREQ(blocked_kinds, "sleep,sleep,task");
}

/* I/O wait hooks: the real clock blocks in libev for a sleep. */
static int io_before, io_after;
static nest_time io_timeout;
static void on_io_before(void *arg, nest_time timeout) {
    (void)arg;
    io_before++;
    io_timeout = timeout;
}
static void on_io_after(void *arg, nest_time timeout) {
    (void)arg;
    CHECK_EQ(timeout, io_timeout);
    io_after++;
}
static nest_instrument io_probe = {.before_io_wait = on_io_before, .after_io_wait = on_io_after};

static int io_root(void *arg) {
    (void)arg;
    CHECK_EQ(nest_instrument_add(&io_probe), 0);
    CHECK_EQ(nest_sleep(NEST_MSEC(2)), 0);
    CHECK_EQ(io_before, 1);
    CHECK_EQ(io_after, 1);
    CHECK(io_timeout > 0 && io_timeout <= NEST_MSEC(2));
    return 0;
}

NEST_TEST(io_wait_hooks_bracket_the_blocking_poll) { CHECK_EQ(nest_run(io_root, NULL), 0); }

/* scope_cancelled and nursery hooks. */
static void on_cancel(void *arg, const nest_scope *s, int expired) {
    (void)arg;
    const char *kind = nest_scope_is_nursery(s) ? "nursery" : "scope";
    nest_task *o = nest_scope_owner(s);
    note("%s%s@%d/%s", expired ? "expired:" : "cancel:", kind, nest_scope_line(s),
         o ? nest_task_name(o) : "-");
    CHECK(nest_scope_file(s) != NULL);
}
static void on_open(void *arg, nest_nursery *n) {
    (void)arg;
    note("open@%d", nest_scope_line(nest_nursery_scope(n)));
}
static void on_close(void *arg, nest_nursery *n, int rc) {
    (void)arg;
    note("close@%d=%s", nest_scope_line(nest_nursery_scope(n)), nest_err_name(rc));
}
static nest_instrument scopes = {
    .scope_cancelled = on_cancel, .nursery_opened = on_open, .nursery_closed = on_close};

static int failing(void *arg) {
    (void)arg;
    return -EIO;
}
static int line_n1, line_s1, line_s2;
static int scopes_root(void *arg) {
    (void)arg;
    nest_scope s;
    line_s1 = __LINE__ + 1;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    nest_scope_exit(&s, 0);
    line_s2 = __LINE__ + 1;
    nest_move_on_after(&s, NEST_SEC(1));
    CHECK_EQ(nest_scope_exit(&s, nest_sleep_forever()), 0);
    nest_nursery n;
    line_n1 = __LINE__ + 1;
    nest_nursery_open(&n);
    nest_spawn(&n, failing, NULL);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(scope_and_nursery_hooks) {
    events[0] = '\0';
    CHECK_EQ(run_mock_with(scopes_root, NULL, &scopes), -EIO);
    char want[256];
    snprintf(want, sizeof want, "cancel:scope@%d/main expired:scope@%d/main open@%d "
                                "cancel:nursery@%d/main close@%d=EIO",
             line_s1, line_s2, line_n1, line_n1, line_n1);
    CHECK_STREQ(events, want);
}

static void sleep_end(void *arg, const nest_scope *s, int expired) {
    (void)arg;
    note("%s:%s", expired ? "expired" : "cancel", nest_scope_file(s));
}
static nest_instrument sleep_probe = {.scope_cancelled = sleep_end};
static int sleeps(void *arg) {
    (void)arg;
    return nest_sleep(NEST_MSEC(5));
}

NEST_TEST(a_sleep_ending_reports_its_own_scope) {
    events[0] = '\0';
    CHECK_EQ(run_mock_with(sleeps, NULL, &sleep_probe), 0);
    CHECK_STREQ(events, "expired:nest_sleep");
}

/* ---- registration rules ------------------------------------------------ */

static int removed_calls;
static nest_instrument self_remover;
static void remove_self(void *arg, nest_task *t) {
    (void)arg, (void)t;
    removed_calls++;
    CHECK_EQ(nest_instrument_remove(&self_remover), 0);
}
static int after_calls;
static void count_after(void *arg) { (void)arg, after_calls++; }
static int late_steps;
static void count_step(void *arg, nest_task *t) { (void)arg, (void)t, late_steps++; }

static int registration_root(void *arg) {
    (void)arg;
    nest_instrument a = {.after_run = count_after};
    CHECK_EQ(nest_instrument_add(&a), 0);
    CHECK_EQ(nest_instrument_add(&a), -EBUSY);
    CHECK_EQ(nest_instrument_remove(&a), 0);
    CHECK_EQ(nest_instrument_remove(&a), -ENOENT);
    /* Removing itself from a callback: called once. */
    self_remover = (nest_instrument){.before_task_step = remove_self};
    CHECK_EQ(nest_instrument_add(&self_remover), 0);
    for (int i = 0; i < 3; i++) CHECK_EQ(nest_checkpoint(), 0);
    CHECK_EQ(removed_calls, 1);
    /* Added mid-run: sees later events only; after_run at the end. */
    static nest_instrument late = {.before_task_step = count_step, .after_run = count_after};
    CHECK_EQ(nest_instrument_add(&late), 0);
    for (int i = 0; i < 3; i++) CHECK_EQ(nest_checkpoint(), 0);
    CHECK_EQ(late_steps, 3);
    return 0;
}

NEST_TEST(add_and_remove_rules) {
    nest_instrument a = {0};
    CHECK_EQ(nest_instrument_add(&a), -EINVAL); /* outside a runtime */
    CHECK_EQ(nest_instrument_remove(&a), -ENOENT);
    CHECK_EQ(run_mock_with(registration_root, NULL, NULL), 0);
    CHECK_EQ(after_calls, 1); /* the late one; the removed one never */
}

/* ---- nest/testing.h: checkpoint checks --------------------------------- */

static int do_checkpoint(void *arg) {
    (void)arg;
    return nest_checkpoint();
}
static int do_sleep0(void *arg) {
    (void)arg;
    return nest_sleep(0);
}
static int do_sleep(void *arg) {
    (void)arg;
    return nest_sleep(NEST_MSEC(10));
}
static int do_nothing(void *arg) {
    int *x = arg;
    return ++*x > 0 ? 0 : -1;
}
static int do_cancelled_query(void *arg) {
    (void)arg;
    return nest_cancelled();
}
static int do_spawn_close(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    return nest_nursery_close(&n, 0); /* no children: returns at once */
}
/* Yields, but ignores cancellation: not a checkpoint. */
static int do_shielded_yield(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_set_shield(&s, 1);
    int rc = nest_checkpoint();
    return nest_scope_exit(&s, rc);
}
static int do_two_yields(void *arg) {
    (void)arg;
    nest_checkpoint();
    return nest_checkpoint();
}
static int other_task(void *arg) {
    (void)arg;
    return 0;
}

static int testing_root(void *arg) {
    (void)arg;
    int rc = 99, x = 0;
    CHECK_EQ(nest_testing_yields(do_checkpoint, NULL, &rc), 1);
    CHECK_EQ(rc, 0);
    CHECK_EQ(nest_testing_yields(do_sleep0, NULL, NULL), 1);
    CHECK_EQ(nest_testing_yields(do_sleep, NULL, &rc), 1);
    CHECK_EQ(nest_testing_yields(do_two_yields, NULL, NULL), 2);
    CHECK_EQ(nest_testing_yields(do_nothing, &x, &rc), 0);
    CHECK_EQ(x, 1);
    CHECK_EQ(nest_testing_yields(do_cancelled_query, NULL, NULL), 0);
    CHECK_EQ(nest_testing_yields(do_spawn_close, NULL, NULL), 0);
    /* Another task running meanwhile does not count. */
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn(&n, other_task, NULL);
    CHECK_EQ(nest_testing_yields(do_checkpoint, NULL, NULL), 1);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);

    CHECK_EQ(nest_testing_cancels(do_checkpoint, NULL), 1);
    CHECK_EQ(nest_testing_cancels(do_sleep, NULL), 1);
    CHECK_EQ(nest_testing_cancels(do_nothing, &x), 0);
    CHECK_EQ(nest_testing_cancels(do_shielded_yield, NULL), 0);
    CHECK_EQ(nest_cancelled(), 0); /* the helper's scope is gone */

    CHECK_EQ(nest_testing_checkpoints(do_checkpoint, NULL), 1);
    CHECK_EQ(nest_testing_checkpoints(do_sleep, NULL), 1);
    CHECK_EQ(nest_testing_checkpoints(do_nothing, &x), 0);
    CHECK_EQ(nest_testing_checkpoints(do_shielded_yield, NULL), 0);
    return 0;
}

NEST_TEST(testing_checkpoint_checks) { CHECK_EQ(run_mock_with(testing_root, NULL, NULL), 0); }

/* ---- nest/testing.h: the sequencer ------------------------------------- */

static nest_sequencer seq;

static int seq_worker(void *arg) {
    int first = (int)(intptr_t)arg; /* positions first and first + 3 */
    for (int p = first; p < 6; p += 3) {
        int rc = nest_sequencer_enter(&seq, p);
        if (rc < 0) return rc;
        note("%d", p);
        CHECK_EQ(nest_checkpoint(), 0); /* others run meanwhile, but wait */
        nest_sequencer_exit(&seq, p);
    }
    return 0;
}

static int seq_root(void *arg) {
    (void)arg;
    nest_sequencer_init(&seq);
    nest_nursery n;
    nest_nursery_open(&n);
    for (intptr_t i = 2; i >= 0; i--) nest_spawn(&n, seq_worker, (void *)i);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(sequencer_forces_the_order) {
    events[0] = '\0';
    CHECK_EQ(run_mock_with(seq_root, NULL, NULL), 0);
    CHECK_STREQ(events, "0 1 2 3 4 5");
}

static int seq_rc[8];
static int seq_waits(void *arg) {
    int p = (int)(intptr_t)arg;
    seq_rc[p] = nest_sequencer_enter(&seq, p);
    return 0; /* NEST_EBROKEN would fail the nursery */
}

static int seq_errors_root(void *arg) {
    (void)arg;
    nest_sequencer_init(&seq);
    CHECK_EQ(nest_sequencer_enter(&seq, -1), -EINVAL);
    CHECK_EQ(nest_sequencer_enter(&seq, 0), 0);
    CHECK_EQ(nest_sequencer_enter(&seq, 0), -EINVAL); /* inside */
    nest_sequencer_exit(&seq, 0);
    CHECK_EQ(nest_sequencer_enter(&seq, 0), -EINVAL); /* passed */
    nest_nursery n;
    nest_nursery_open(&n);
    nest_task *h3, *h4;
    nest_spawn_options o3 = {"three", 0, &h3}, o4 = {"four", 0, &h4};
    nest_spawn_opts(&n, seq_waits, (void *)(intptr_t)3, &o3);
    nest_spawn_opts(&n, seq_waits, (void *)(intptr_t)4, &o4);
    CHECK_EQ(nest_checkpoint(), 0);
    CHECK_EQ(nest_sequencer_enter(&seq, 3), -EINVAL); /* someone waits for it */
    nest_block_info b;
    CHECK_EQ(nest_task_block(h3, &b), NEST_BLOCK_PARK);
    CHECK_STREQ(b.lot, "sequencer");
    /* Cancelling a waiter breaks the sequence for everyone. */
    nest_task_cancel(h3);
    CHECK_EQ(nest_task_wait(h3, NULL), 0);
    CHECK_EQ(nest_task_wait(h4, NULL), 0);
    CHECK_EQ(seq_rc[3], -ECANCELED);
    CHECK_EQ(seq_rc[4], NEST_EBROKEN);
    CHECK_EQ(nest_sequencer_enter(&seq, 1), NEST_EBROKEN);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(sequencer_errors_and_breaking) { CHECK_EQ(run_mock_with(seq_errors_root, NULL, NULL), 0); }

static int seq_bad_exit(void *arg) {
    (void)arg;
    nest_sequencer_init(&seq);
    CHECK_EQ(nest_sequencer_enter(&seq, 0), 0);
    nest_sequencer_exit(&seq, 1);
    return 0;
}

NEST_TEST_ABORTS(sequencer_exit_of_the_wrong_position_aborts, "nest_sequencer_exit(1)") {
    run_mock_with(seq_bad_exit, NULL, NULL);
}
