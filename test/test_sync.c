/*
 * test/test_sync.c - Event, Lock, Semaphore, CapacityLimiter and Condition
 * (nest/sync.h).  The rate limiter has its own file (test_ratelimit.c).
 *
 * Covers, for every primitive: FIFO service under contention (three tasks
 * looping acquire / checkpoint / release keep the same order for five
 * rounds); hand-off (a releaser that acquires again at once queues behind
 * the waiters); every blocking call is a checkpoint (it yields when it need
 * not block, and in a cancelled scope it fails without yielding and without
 * taking anything); a cancelled waiter leaves no trace (it leaves the queue,
 * the next release goes to the next live waiter, counts are unchanged); a
 * hand-off that happened is not undone by a later cancellation; statistics.
 * Lock: owner tracking, breaking when the owner exits holding it, misuse
 * (release by a non-owner, release when free, re-acquire).  Semaphore: the
 * maximum.  CapacityLimiter: one token per borrower, on-behalf-of
 * borrowers, set_total growing and shrinking, tokens reclaimed when their
 * task exits, out-of-memory and an idle limiter owning no memory.
 * Condition: notify moves waiters to the lock's queue in order, a cancelled
 * wait re-acquires the lock, a broken lock, misuse.  Stress (lock,
 * semaphore, limiter): 40 seeded random schedules each, with random
 * deadlines, checking capacity, FIFO hand-off, "cancelled means it did not
 * happen" and the absence of lost wake-ups on every step.
 *
 * Every case runs on the mock clock with autojump 0.  Events are recorded
 * as text and the whole sequence is compared, so an order change fails.
 * The FIFO-rounds cases also run under seeded random scheduling (seeds
 * 1-20), where the order must still repeat identically for five rounds.
 */
#define _GNU_SOURCE

#include "harness.h"
#include "support.h"
#include "nest.h"
#include "nest/sync.h"

/* ---- helpers ----------------------------------------------------------- */

/* Runs fn as the root task on the mock clock (autojump 0), with scheduling
 * order seed (0: FIFO; otherwise each pass runs in a seeded random order,
 * where the runtime supports it). */
static int run_mock_seed(nest_fn fn, uint64_t seed) {
    nest_run_options o;
    nest_run_options_init(&o);
    o.clock = NEST_CLOCK_MOCK;
    o.autojump_threshold = 0;
    o.seed = seed;
    return nest_run_opts(fn, NULL, &o);
}

static const char *const names[] = {"A", "B", "C", "D", "E", "F", "G", "H"};

/* The index of the calling task in names[]. */
static int me(void) {
    const char *n = nest_task_name(nest_current_task());
    for (int i = 0; i < 8; i++)
        if (strcmp(n, names[i]) == 0) return i;
    return -1;
}

/* Runs NTASKS children named A, B, ... with body fn, spawned in order, while
 * the root runs `root_body` (may be NULL) after spawning them. */
static nest_fn child_fn;
static int ntasks;
static nest_task *handles[8];
static void (*root_body)(void);

static int root_spawns(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    for (int i = 0; i < ntasks; i++) handles[i] = spawn_named(&n, child_fn, NULL, names[i]);
    if (root_body) root_body();
    return nest_nursery_close(&n, 0);
}

static int run_children_seed(nest_fn fn, int count, void (*body)(void), uint64_t seed) {
    child_fn = fn;
    ntasks = count;
    root_body = body;
    return run_mock_seed(root_spawns, seed);
}

static int run_children(nest_fn fn, int count, void (*body)(void)) {
    return run_children_seed(fn, count, body, 0);
}

/* A sibling that only records that it ran (to see whether a call yielded). */
static int note_ran(void *arg) {
    note("%s", (const char *)arg);
    return 0;
}

/* The primitives under test, shared with the tasks. */
static nest_event ev;
static nest_lock lk;
static nest_semaphore sem;
static nest_limiter lim;
static nest_condition cond;

/* ---- FIFO under contention, for every acquire/release pair ------------- */

typedef struct prim_ops {
    int (*acquire)(void);
    void (*release)(void);
} prim_ops;

static int lock_acq(void) {
    return nest_lock_acquire(&lk);
}
static void lock_rel(void) {
    nest_lock_release(&lk);
}
static int sem_acq(void) {
    return nest_semaphore_acquire(&sem);
}
static void sem_rel(void) {
    nest_semaphore_release(&sem);
}
static int lim_acq(void) {
    return nest_limiter_acquire(&lim);
}
static void lim_rel(void) {
    nest_limiter_release(&lim);
}

static const prim_ops *ops;

/* Five rounds of acquire, record, checkpoint (with the resource held),
 * release.  Without hand-off the releaser would take the resource straight
 * back ("A A A A A B B ..."). */
static int looper(void *arg) {
    (void)arg;
    for (int round = 0; round < 5; round++) {
        CHECK_EQ(ops->acquire(), 0);
        note("%s", names[me()]);
        CHECK_EQ(nest_checkpoint(), 0);
        ops->release();
    }
    return 0;
}

/* Checks that events holds five repetitions of one order of A, B and C
 * (with FIFO scheduling, seed 0: exactly the spawn order). */
static void check_five_rounds(uint64_t seed) {
    char first[8];
    CHECK_EQ(strlen(events), 5 * 6 - 1);
    memcpy(first, events, 6);
    first[5] = 0;
    CHECK(strchr(first, 'A') && strchr(first, 'B') && strchr(first, 'C'));
    if (seed == 0) CHECK_STREQ(first, "A B C");
    for (int r = 1; r < 5; r++) {
        if (memcmp(events + 6 * r, first, 5) != 0) {
            fprintf(stderr, "seed %llu: order changed in round %d: %s\n", (unsigned long long)seed,
                    r + 1, events);
            abort();
        }
    }
}

/* The whole sequence must be one order repeated five times: with FIFO
 * scheduling the spawn order; with seeded random scheduling (seeds 1-20)
 * whatever order the tasks first arrived in. */
static void check_fifo_rounds(const prim_ops *o) {
    ops = o;
    for (uint64_t seed = 0; seed <= 20; seed++) {
        events[0] = 0;
        CHECK_EQ(run_children_seed(looper, 3, NULL, seed), 0);
        if (seed == 0) CHECK_STREQ(events, "A B C A B C A B C A B C A B C");
        check_five_rounds(seed);
    }
}

NEST_TEST(lock_fifo_three_tasks_keep_order_for_five_rounds) {
    static const prim_ops o = {lock_acq, lock_rel};
    nest_lock_init(&lk);
    check_fifo_rounds(&o);
    CHECK(!nest_lock_locked(&lk));
}

NEST_TEST(semaphore_fifo_three_tasks_keep_order_for_five_rounds) {
    static const prim_ops o = {sem_acq, sem_rel};
    nest_semaphore_init(&sem, 1, 1);
    check_fifo_rounds(&o);
    CHECK_EQ(nest_semaphore_value(&sem), 1);
}

NEST_TEST(limiter_fifo_three_tasks_keep_order_for_five_rounds) {
    static const prim_ops o = {lim_acq, lim_rel};
    nest_limiter_init(&lim, 1);
    check_fifo_rounds(&o);
    nest_limiter_stats st;
    nest_limiter_statistics(&lim, &st);
    CHECK_EQ(st.borrowed, 0);
    CHECK_EQ(st.reclaimed, 0);
}

/* Condition: three tasks loop waiting (a fourth notifies all of them each
 * round) and keep their order, since notify moves waiters to the lock's
 * queue in order. */
static int cond_waiter_loop(void *arg) {
    (void)arg;
    CHECK_EQ(nest_lock_acquire(&lk), 0);
    for (int round = 0; round < 5; round++) {
        CHECK_EQ(nest_condition_wait(&cond), 0);
        CHECK(lk.owner == nest_current_task());
        note("%s", names[me()]);
    }
    nest_lock_release(&lk);
    return 0;
}

static void cond_notifier(void) {
    for (int round = 0; round < 5; round++) {
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
        CHECK_EQ(nest_lock_acquire(&lk), 0);
        CHECK_EQ(nest_condition_notify_all(&cond), 3);
        nest_lock_release(&lk);
    }
}

NEST_TEST(condition_fifo_three_waiters_keep_order_for_five_rounds) {
    for (uint64_t seed = 0; seed <= 20; seed++) {
        nest_lock_init(&lk);
        nest_condition_init(&cond, &lk);
        events[0] = 0;
        CHECK_EQ(run_children_seed(cond_waiter_loop, 3, cond_notifier, seed), 0);
        if (seed == 0) CHECK_STREQ(events, "A B C A B C A B C A B C A B C");
        check_five_rounds(seed);
    }
}

/* ---- Event ------------------------------------------------------------- */

static int event_waiter(void *arg) {
    (void)arg;
    note("%s waits", names[me()]);
    int rc = nest_event_wait(&ev);
    note("%s %d", names[me()], rc);
    return 0;
}

static void event_set_after_all_wait(void) {
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_event_stats st;
    nest_event_statistics(&ev, &st);
    CHECK_EQ(st.waiters, 3);
    CHECK_EQ(st.set, 0);
    CHECK(!nest_event_is_set(&ev));
    note("set");
    nest_event_set(&ev);
    nest_event_set(&ev); /* idempotent */
    CHECK(nest_event_is_set(&ev));
    nest_event_statistics(&ev, &st);
    CHECK_EQ(st.waiters, 0);
    CHECK_EQ(st.set, 1);
}

NEST_TEST(event_set_wakes_every_waiter_in_order) {
    nest_event_init(&ev);
    CHECK_EQ(run_children(event_waiter, 3, event_set_after_all_wait), 0);
    CHECK_STREQ(events, "A waits B waits C waits set A 0 B 0 C 0");
}

/* A: waits on the (already set) event; B only notes that it ran. */
static int set_event_then_race(void *arg) {
    (void)arg;
    nest_event_set(&ev);
    nest_nursery n;
    nest_nursery_open(&n);
    spawn_named(&n, event_waiter, NULL, "A");
    spawn_named(&n, note_ran, "B ran", "B");
    return nest_nursery_close(&n, 0);
}

/* Waiting on a set event does not block but still yields once: B runs
 * between A's call and its return. */
NEST_TEST(event_wait_on_set_event_is_a_checkpoint) {
    nest_event_init(&ev);
    CHECK_EQ(run_mock(set_event_then_race, NULL), 0);
    CHECK_STREQ(events, "A waits B ran A 0");
}

/* In a cancelled scope, wait fails at once, set or not, without yielding
 * (B runs only after A is done). */
static int event_wait_cancelled_scope(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    int r1 = nest_event_wait(&ev);
    nest_event_set(&ev);
    int r2 = nest_event_wait(&ev);
    note("A %d %d", r1, r2);
    CHECK_EQ(nest_scope_exit(&s, -ECANCELED), 0);
    return 0;
}

static int event_cancelled_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    spawn_named(&n, event_wait_cancelled_scope, NULL, "A");
    spawn_named(&n, note_ran, "B ran", "B");
    return nest_nursery_close(&n, 0);
}

NEST_TEST(event_wait_in_cancelled_scope_fails_without_yielding) {
    nest_event_init(&ev);
    CHECK_EQ(run_mock(event_cancelled_root, NULL), 0);
    CHECK_STREQ(events, "A -125 -125 B ran");
}

/* A waits with a 1 s timeout, B without: A's timeout removes it from the
 * event (one waiter left), and set later wakes only B. */
static int event_wait_timeout(void *arg) {
    (void)arg;
    if (me() == 0) {
        nest_scope s;
        nest_move_on_after(&s, NEST_SEC(1));
        int rc = nest_event_wait(&ev);
        note("A %d @%lld", rc, (long long)(nest_now() / NEST_MSEC(1)));
        CHECK_EQ(nest_scope_exit(&s, rc), 0);
        return 0;
    }
    int rc = nest_event_wait(&ev);
    note("B %d @%lld", rc, (long long)(nest_now() / NEST_MSEC(1)));
    return 0;
}

static void event_set_at_2s(void) {
    CHECK_EQ(nest_sleep(NEST_SEC(2)), 0);
    nest_event_stats st;
    nest_event_statistics(&ev, &st);
    CHECK_EQ(st.waiters, 1);
    note("set");
    nest_event_set(&ev);
}

NEST_TEST(event_wait_cancelled_leaves_no_trace) {
    nest_event_init(&ev);
    CHECK_EQ(run_children(event_wait_timeout, 2, event_set_at_2s), 0);
    CHECK_STREQ(events, "A -125 @1000 set B 0 @2000");
}

/* ---- Lock: checkpoints -------------------------------------------------- */

static int lock_take_free(void *arg) {
    (void)arg;
    note("A acquires");
    int rc = nest_lock_acquire(&lk);
    note("A %d owner=%s", rc, lk.owner == nest_current_task() ? "A" : "?");
    nest_lock_release(&lk);
    return 0;
}

static int lock_free_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    spawn_named(&n, lock_take_free, NULL, "A");
    spawn_named(&n, note_ran, "B ran", "B");
    return nest_nursery_close(&n, 0);
}

/* Acquiring a free lock does not block but yields once. */
NEST_TEST(lock_acquire_free_lock_is_a_checkpoint) {
    nest_lock_init(&lk);
    CHECK_EQ(run_mock(lock_free_root, NULL), 0);
    CHECK_STREQ(events, "A acquires B ran A 0 owner=A");
    CHECK(!nest_lock_locked(&lk));
}

static int lock_cancelled_scope(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    int rc = nest_lock_acquire(&lk);
    nest_lock_stats st;
    nest_lock_statistics(&lk, &st);
    note("A %d locked=%d", rc, st.locked);
    CHECK(st.owner == NULL);
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    /* Out of the scope the same lock is free to take. */
    CHECK_EQ(nest_lock_try_acquire(&lk), 0);
    nest_lock_release(&lk);
    return 0;
}

static int lock_cancelled_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    spawn_named(&n, lock_cancelled_scope, NULL, "A");
    spawn_named(&n, note_ran, "B ran", "B");
    return nest_nursery_close(&n, 0);
}

/* In a cancelled scope, acquiring a free lock fails, does not take it and
 * does not yield. */
NEST_TEST(lock_acquire_free_lock_in_cancelled_scope_fails_and_does_not_take_it) {
    nest_lock_init(&lk);
    CHECK_EQ(run_mock(lock_cancelled_root, NULL), 0);
    CHECK_STREQ(events, "A -125 locked=0 B ran");
}

/* B holds the lock; A, in a cancelled scope, fails at once without
 * queueing (no waiter appears) and without yielding. */
static int lock_held_cancelled(void *arg) {
    (void)arg;
    if (me() == 1) {
        CHECK_EQ(nest_lock_try_acquire(&lk), 0);
        note("B holds");
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
        nest_lock_release(&lk);
        return 0;
    }
    CHECK_EQ(nest_checkpoint(), 0); /* let B take it */
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    int rc = nest_lock_acquire(&lk);
    note("A %d waiters=%zu", rc, lk.lot.count);
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    note("A done");
    return 0;
}

NEST_TEST(lock_acquire_held_lock_in_cancelled_scope_fails_without_queueing) {
    nest_lock_init(&lk);
    CHECK_EQ(run_children(lock_held_cancelled, 2, NULL), 0);
    CHECK_STREQ(events, "B holds A -125 waiters=0 A done");
}

/* try_acquire never yields: it takes a free lock, fails on a held one. */
static int lock_try(void *arg) {
    (void)arg;
    if (me() == 0) {
        note("A try %d", nest_lock_try_acquire(&lk));
        CHECK_EQ(nest_checkpoint(), 0);
        CHECK_EQ(nest_checkpoint(), 0);
        nest_lock_release(&lk);
        return 0;
    }
    note("B try %d", nest_lock_try_acquire(&lk));
    return 0;
}

NEST_TEST(lock_try_acquire_takes_a_free_lock_and_fails_on_a_held_one) {
    nest_lock_init(&lk);
    CHECK_EQ(run_children(lock_try, 2, NULL), 0);
    CHECK_STREQ(events, "A try 0 B try -11");
    CHECK(!nest_lock_locked(&lk));
}

/* ---- Lock: hand-off ----------------------------------------------------- */

/* A holds the lock while B queues; A releases and at once tries and then
 * blocks to take it again: B already owns it, and A gets it after B. */
static int lock_rejump(void *arg) {
    (void)arg;
    if (me() == 0) {
        CHECK_EQ(nest_lock_acquire(&lk), 0);
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0); /* B is queued */
        note("A releases");
        nest_lock_release(&lk);
        CHECK(lk.owner == handles[1]);
        note("A try %d", nest_lock_try_acquire(&lk));
        int rc = nest_lock_acquire(&lk);
        note("A %d", rc);
        nest_lock_release(&lk);
        return 0;
    }
    int rc = nest_lock_acquire(&lk);
    note("B %d", rc);
    nest_lock_release(&lk);
    return 0;
}

NEST_TEST(lock_releaser_cannot_jump_the_queue) {
    nest_lock_init(&lk);
    CHECK_EQ(run_children(lock_rejump, 2, NULL), 0);
    CHECK_STREQ(events, "A releases A try -11 B 0 A 0");
}

/* A holds; B and C queue; B is cancelled while queued.  B leaves the queue
 * (one waiter left) without ever holding the lock, and A's release goes to
 * C. */
static int lock_queue(void *arg) {
    (void)arg;
    int i = me();
    if (i == 0) {
        CHECK_EQ(nest_lock_acquire(&lk), 0);
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
        nest_lock_stats st;
        nest_lock_statistics(&lk, &st);
        CHECK_EQ(st.waiters, 2);
        nest_task_cancel(handles[1]);
        CHECK_EQ(nest_checkpoint(), 0); /* B runs and leaves */
        nest_lock_statistics(&lk, &st);
        CHECK_EQ(st.waiters, 1);
        CHECK(st.owner == nest_current_task());
        note("A releases");
        nest_lock_release(&lk);
        return 0;
    }
    int rc = nest_lock_acquire(&lk);
    note("%s %d", names[i], rc);
    if (rc == 0) {
        CHECK(lk.owner == nest_current_task());
        nest_lock_release(&lk);
    } else {
        CHECK(lk.owner != nest_current_task());
    }
    return rc;
}

NEST_TEST(lock_cancelled_waiter_leaves_no_trace) {
    nest_lock_init(&lk);
    CHECK_EQ(run_children(lock_queue, 3, NULL), 0);
    CHECK_STREQ(events, "B -125 A releases C 0");
    CHECK(!nest_lock_locked(&lk));
}

/* A releases to the queued B and cancels B at once, before B runs: the
 * hand-off happened, so B's acquire reports success and B owns the lock
 * (a cancellation does not undo a completed acquire). */
static int lock_handoff_then_cancel(void *arg) {
    (void)arg;
    if (me() == 0) {
        CHECK_EQ(nest_lock_acquire(&lk), 0);
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
        nest_lock_release(&lk);
        nest_task_cancel(handles[1]);
        return 0;
    }
    int rc = nest_lock_acquire(&lk);
    note("B %d owner=%d", rc, lk.owner == nest_current_task());
    CHECK_EQ(nest_checkpoint(), -ECANCELED); /* it is cancelled all right */
    nest_lock_release(&lk);
    return 0;
}

NEST_TEST(lock_handoff_is_not_undone_by_a_later_cancel) {
    nest_lock_init(&lk);
    CHECK_EQ(run_children(lock_handoff_then_cancel, 2, NULL), 0);
    CHECK_STREQ(events, "B 0 owner=1");
}

/* ---- Lock: statistics, broken locks ------------------------------------ */

static int lock_stats_child(void *arg) {
    (void)arg;
    CHECK_EQ(nest_lock_acquire(&lk), 0);
    nest_lock_release(&lk);
    return 0;
}

static int lock_stats_root(void *arg) {
    (void)arg;
    nest_lock_stats st;
    nest_lock_statistics(&lk, &st);
    CHECK(!st.locked && !st.broken && st.owner == NULL && st.waiters == 0);
    CHECK_EQ(nest_lock_acquire(&lk), 0);
    nest_nursery n;
    nest_nursery_open(&n);
    spawn_named(&n, lock_stats_child, NULL, "A");
    spawn_named(&n, lock_stats_child, NULL, "B");
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_lock_statistics(&lk, &st);
    CHECK(st.locked && !st.broken && st.owner == nest_current_task() && st.waiters == 2);
    CHECK(nest_lock_locked(&lk));
    nest_lock_release(&lk);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(lock_statistics_report_owner_and_waiters) {
    nest_lock_init(&lk);
    CHECK_EQ(run_mock(lock_stats_root, NULL), 0);
    nest_lock_stats st;
    nest_lock_statistics(&lk, &st);
    CHECK(!st.locked && st.owner == NULL && st.waiters == 0);
}

/* A takes the lock and exits holding it while B and C wait: they get
 * NEST_EBROKEN, and so does every later acquire and try_acquire. */
static int lock_break(void *arg) {
    (void)arg;
    int i = me();
    if (i == 0) {
        CHECK_EQ(nest_lock_acquire(&lk), 0);
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
        note("A exits");
        return 0; /* holding the lock */
    }
    int rc = nest_lock_acquire(&lk);
    note("%s %s", names[i], nest_err_name(rc));
    return 0;
}

static int lock_break_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    for (int i = 0; i < 3; i++) handles[i] = spawn_named(&n, lock_break, NULL, names[i]);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    nest_lock_stats st;
    nest_lock_statistics(&lk, &st);
    CHECK(st.broken && !st.locked && st.owner == NULL && st.waiters == 0);
    note("later %s", nest_err_name(nest_lock_acquire(&lk)));
    note("try %s", nest_err_name(nest_lock_try_acquire(&lk)));
    return 0;
}

NEST_TEST(lock_breaks_when_its_owner_exits_holding_it) {
    nest_lock_init(&lk);
    CHECK_EQ(run_mock(lock_break_root, NULL), 0);
    CHECK_STREQ(events,
                "A exits B NEST_EBROKEN C NEST_EBROKEN later NEST_EBROKEN try NEST_EBROKEN");
}

/* Locks released before the task exits do not break; two locks held at
 * exit both break. */
static nest_lock lk2, lk3;

static int hold_some(void *arg) {
    (void)arg;
    CHECK_EQ(nest_lock_acquire(&lk), 0);
    CHECK_EQ(nest_lock_acquire(&lk2), 0);
    CHECK_EQ(nest_lock_acquire(&lk3), 0);
    nest_lock_release(&lk2);
    return 0; /* holding lk and lk3 */
}

static int hold_some_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    spawn_named(&n, hold_some, NULL, "A");
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    CHECK_EQ(nest_lock_acquire(&lk), NEST_EBROKEN);
    CHECK_EQ(nest_lock_acquire(&lk2), 0);
    CHECK_EQ(nest_lock_acquire(&lk3), NEST_EBROKEN);
    nest_lock_release(&lk2);
    return 0;
}

NEST_TEST(lock_breaks_only_if_still_held_at_exit) {
    nest_lock_init(&lk);
    nest_lock_init(&lk2);
    nest_lock_init(&lk3);
    CHECK_EQ(run_mock(hold_some_root, NULL), 0);
    CHECK(lk.broken && !lk2.broken && lk3.broken);
}

/* ---- Lock: misuse ------------------------------------------------------- */

static int release_others_lock(void *arg) {
    (void)arg;
    if (me() == 0) {
        CHECK_EQ(nest_lock_acquire(&lk), 0);
        CHECK_EQ(nest_sleep_forever(), -ECANCELED);
        return 0;
    }
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_lock_release(&lk); /* B does not hold it */
    return 0;
}

NEST_TEST_ABORTS(lock_release_by_a_task_that_does_not_hold_it_aborts,
                 "nest_lock_release(): task 'B' (spawned at") {
    nest_lock_init(&lk);
    run_children(release_others_lock, 2, NULL);
}

NEST_TEST_ABORTS(lock_release_message_names_owner_and_rule,
                 "does not hold this lock; task 'A' (spawned at") {
    nest_lock_init(&lk);
    run_children(release_others_lock, 2, NULL);
}

NEST_TEST_ABORTS(lock_release_message_states_the_rule,
                 "(rule: a lock is released only by the task that acquired it)") {
    nest_lock_init(&lk);
    run_children(release_others_lock, 2, NULL);
}

static int release_free_lock(void *arg) {
    (void)arg;
    nest_lock_release(&lk);
    return 0;
}

NEST_TEST_ABORTS(lock_release_of_a_free_lock_aborts, "does not hold this lock; it is not held") {
    nest_lock_init(&lk);
    run_children(release_free_lock, 1, NULL);
}

static int acquire_twice(void *arg) {
    (void)arg;
    CHECK_EQ(nest_lock_acquire(&lk), 0);
    nest_lock_acquire(&lk);
    return 0;
}

NEST_TEST_ABORTS(lock_acquire_by_its_owner_aborts, "already holds this lock (rule: a nest_lock "
                                                   "is not reentrant") {
    nest_lock_init(&lk);
    run_children(acquire_twice, 1, NULL);
}

static int try_acquire_twice(void *arg) {
    (void)arg;
    CHECK_EQ(nest_lock_try_acquire(&lk), 0);
    nest_lock_try_acquire(&lk);
    return 0;
}

NEST_TEST_ABORTS(lock_try_acquire_by_its_owner_aborts, "nest_lock_try_acquire(): task 'A'") {
    nest_lock_init(&lk);
    run_children(try_acquire_twice, 1, NULL);
}

NEST_TEST_ABORTS(lock_acquire_outside_a_task_aborts, "nest_lock_acquire() called outside a task") {
    nest_lock_init(&lk);
    nest_lock_acquire(&lk);
}

/* ---- Semaphore ---------------------------------------------------------- */

/* Two units: A and B take one each at once (each yielding once), C waits
 * until A releases; the unit goes straight to C, the value stays 0. */
static int sem_user(void *arg) {
    (void)arg;
    int i = me();
    int rc = nest_semaphore_acquire(&sem);
    note("%s %d v=%zu", names[i], rc, nest_semaphore_value(&sem));
    if (i == 0) {
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
        nest_semaphore_stats st;
        nest_semaphore_statistics(&sem, &st);
        CHECK(st.value == 0 && st.waiters == 1 && st.max == 5);
        note("A releases");
        nest_semaphore_release(&sem);
        CHECK_EQ(nest_semaphore_value(&sem), 0); /* handed to C */
        return 0;
    }
    if (i == 1) {
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    }
    nest_semaphore_release(&sem);
    return 0;
}

NEST_TEST(semaphore_hands_units_out_then_queues) {
    nest_semaphore_init(&sem, 2, 5);
    CHECK_EQ(run_children(sem_user, 3, NULL), 0);
    CHECK_STREQ(events, "A 0 v=0 B 0 v=0 A releases C 0 v=0");
    CHECK_EQ(nest_semaphore_value(&sem), 2);
}

static int sem_take_free(void *arg) {
    (void)arg;
    note("A acquires");
    int rc = nest_semaphore_acquire(&sem);
    note("A %d", rc);
    return 0;
}

static int sem_free_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    spawn_named(&n, sem_take_free, NULL, "A");
    spawn_named(&n, note_ran, "B ran", "B");
    return nest_nursery_close(&n, 0);
}

NEST_TEST(semaphore_acquire_available_unit_is_a_checkpoint) {
    nest_semaphore_init(&sem, 1, NEST_SEMAPHORE_NO_MAX);
    CHECK_EQ(run_mock(sem_free_root, NULL), 0);
    CHECK_STREQ(events, "A acquires B ran A 0");
    CHECK_EQ(nest_semaphore_value(&sem), 0);
}

static int sem_cancelled_scope(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    int rc = nest_semaphore_acquire(&sem);
    note("A %d v=%zu", rc, nest_semaphore_value(&sem));
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    return 0;
}

static int sem_cancelled_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    spawn_named(&n, sem_cancelled_scope, NULL, "A");
    spawn_named(&n, note_ran, "B ran", "B");
    return nest_nursery_close(&n, 0);
}

NEST_TEST(semaphore_acquire_in_cancelled_scope_fails_and_takes_nothing) {
    nest_semaphore_init(&sem, 1, 1);
    CHECK_EQ(run_mock(sem_cancelled_root, NULL), 0);
    CHECK_STREQ(events, "A -125 v=1 B ran");
}

/* No unit: in a cancelled scope acquire fails at once without queueing. */
static int sem_empty_cancelled(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    int rc = nest_semaphore_acquire(&sem);
    note("A %d waiters=%zu", rc, sem.lot.count);
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    return 0;
}

static int sem_empty_cancelled_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    spawn_named(&n, sem_empty_cancelled, NULL, "A");
    spawn_named(&n, note_ran, "B ran", "B");
    return nest_nursery_close(&n, 0);
}

NEST_TEST(semaphore_acquire_with_no_unit_in_cancelled_scope_fails_without_queueing) {
    nest_semaphore_init(&sem, 0, 1);
    CHECK_EQ(run_mock(sem_empty_cancelled_root, NULL), 0);
    CHECK_STREQ(events, "A -125 waiters=0 B ran");
}

/* A holds the only unit; B and C queue; B is cancelled; A's release goes
 * to C; B took nothing. */
static int sem_queue(void *arg) {
    (void)arg;
    int i = me();
    if (i == 0) {
        CHECK_EQ(nest_semaphore_acquire(&sem), 0);
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
        nest_task_cancel(handles[1]);
        CHECK_EQ(nest_checkpoint(), 0);
        nest_semaphore_stats st;
        nest_semaphore_statistics(&sem, &st);
        CHECK(st.waiters == 1 && st.value == 0);
        note("A releases");
        nest_semaphore_release(&sem);
        return 0;
    }
    int rc = nest_semaphore_acquire(&sem);
    note("%s %d", names[i], rc);
    if (rc == 0) nest_semaphore_release(&sem);
    return rc;
}

NEST_TEST(semaphore_cancelled_waiter_leaves_no_trace) {
    nest_semaphore_init(&sem, 1, 1);
    CHECK_EQ(run_children(sem_queue, 3, NULL), 0);
    CHECK_STREQ(events, "B -125 A releases C 0");
    CHECK_EQ(nest_semaphore_value(&sem), 1);
}

static int sem_rejump(void *arg) {
    (void)arg;
    if (me() == 0) {
        CHECK_EQ(nest_semaphore_acquire(&sem), 0);
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
        nest_semaphore_release(&sem);
        note("A try %d", nest_semaphore_try_acquire(&sem));
        note("A %d", nest_semaphore_acquire(&sem));
        nest_semaphore_release(&sem);
        return 0;
    }
    note("B %d", nest_semaphore_acquire(&sem));
    nest_semaphore_release(&sem);
    return 0;
}

NEST_TEST(semaphore_releaser_cannot_jump_the_queue) {
    nest_semaphore_init(&sem, 1, 1);
    CHECK_EQ(run_children(sem_rejump, 2, NULL), 0);
    CHECK_STREQ(events, "A try -11 B 0 A 0");
}

static int sem_try(void *arg) {
    (void)arg;
    note("%d", nest_semaphore_try_acquire(&sem));
    note("%d", nest_semaphore_try_acquire(&sem));
    note("%d", nest_semaphore_try_acquire(&sem));
    nest_semaphore_release(&sem);
    nest_semaphore_release(&sem);
    nest_semaphore_release(&sem); /* no maximum */
    note("v=%zu", nest_semaphore_value(&sem));
    return 0;
}

NEST_TEST(semaphore_try_acquire_and_unbounded_release) {
    nest_semaphore_init(&sem, 2, NEST_SEMAPHORE_NO_MAX);
    CHECK_EQ(run_children(sem_try, 1, NULL), 0);
    CHECK_STREQ(events, "0 0 -11 v=3");
}

static int sem_over_release(void *arg) {
    (void)arg;
    CHECK_EQ(nest_semaphore_acquire(&sem), 0);
    nest_semaphore_release(&sem);
    nest_semaphore_release(&sem); /* one too many */
    return 0;
}

NEST_TEST_ABORTS(semaphore_release_past_max_aborts,
                 "nest_semaphore_release(): the value would exceed the maximum 2") {
    nest_semaphore_init(&sem, 2, 2);
    run_children(sem_over_release, 1, NULL);
}

NEST_TEST_ABORTS(semaphore_init_above_max_aborts, "initial value 3 exceeds the maximum 2") {
    nest_semaphore_init(&sem, 3, 2);
}

/* With a waiter, a release at value == max (0 here) hands the unit over
 * instead of raising the value: not misuse. */
static int sem_zero_max(void *arg) {
    (void)arg;
    if (me() == 0) {
        note("A %d", nest_semaphore_acquire(&sem));
        return 0;
    }
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_semaphore_release(&sem);
    note("B released");
    return 0;
}

NEST_TEST(semaphore_release_at_max_with_a_waiter_hands_over) {
    nest_semaphore_init(&sem, 0, 0);
    CHECK_EQ(run_children(sem_zero_max, 2, NULL), 0);
    CHECK_STREQ(events, "B released A 0");
}

/* ---- CapacityLimiter ---------------------------------------------------- */

/* Two tokens: A and B borrow at once, C waits; A's release goes to C. */
static int lim_user(void *arg) {
    (void)arg;
    int i = me();
    int rc = nest_limiter_acquire(&lim);
    note("%s %d", names[i], rc);
    if (i == 0) {
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
        nest_limiter_stats st;
        nest_limiter_statistics(&lim, &st);
        CHECK(st.borrowed == 2 && st.total == 2 && st.available == 0 && st.waiters == 1);
        note("A releases");
        nest_limiter_release(&lim);
        nest_limiter_statistics(&lim, &st);
        CHECK(st.borrowed == 2 && st.available == 0 && st.waiters == 0); /* C holds it */
        return 0;
    }
    if (i == 1) CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_limiter_release(&lim);
    return 0;
}

NEST_TEST(limiter_lends_total_tokens_then_queues) {
    nest_limiter_init(&lim, 2);
    CHECK_EQ(run_children(lim_user, 3, NULL), 0);
    CHECK_STREQ(events, "A 0 B 0 A releases C 0");
    nest_limiter_stats st;
    nest_limiter_statistics(&lim, &st);
    CHECK(st.borrowed == 0 && st.available == 2 && st.waiters == 0 && st.reclaimed == 0);
    CHECK(lim.buckets == NULL && lim.nrecs == 0); /* idle: owns no memory */
}

static int lim_take_free(void *arg) {
    (void)arg;
    note("A acquires");
    int rc = nest_limiter_acquire(&lim);
    note("A %d", rc);
    nest_limiter_release(&lim);
    return 0;
}

static int lim_free_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    spawn_named(&n, lim_take_free, NULL, "A");
    spawn_named(&n, note_ran, "B ran", "B");
    return nest_nursery_close(&n, 0);
}

NEST_TEST(limiter_acquire_available_token_is_a_checkpoint) {
    nest_limiter_init(&lim, 1);
    CHECK_EQ(run_mock(lim_free_root, NULL), 0);
    CHECK_STREQ(events, "A acquires B ran A 0");
}

static int lim_cancelled_scope(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    int r1 = nest_limiter_acquire(&lim);
    int r2 = nest_limiter_acquire_on_behalf_of(&lim, &lim);
    note("A %d %d avail=%zu", r1, r2, nest_limiter_available(&lim));
    CHECK_EQ(nest_scope_exit(&s, r1), 0);
    CHECK(lim.nrecs == 0 && lim.buckets == NULL);
    return 0;
}

static int lim_cancelled_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    spawn_named(&n, lim_cancelled_scope, NULL, "A");
    spawn_named(&n, note_ran, "B ran", "B");
    return nest_nursery_close(&n, 0);
}

NEST_TEST(limiter_acquire_in_cancelled_scope_fails_and_takes_nothing) {
    nest_limiter_init(&lim, 1);
    CHECK_EQ(run_mock(lim_cancelled_root, NULL), 0);
    CHECK_STREQ(events, "A -125 -125 avail=1 B ran");
}

/* A holds the only token; B and C queue; B is cancelled; A's release goes
 * to C; B took nothing and its record is gone (C may borrow after). */
static int lim_queue(void *arg) {
    (void)arg;
    int i = me();
    if (i == 0) {
        CHECK_EQ(nest_limiter_acquire(&lim), 0);
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
        nest_task_cancel(handles[1]);
        CHECK_EQ(nest_checkpoint(), 0);
        nest_limiter_stats st;
        nest_limiter_statistics(&lim, &st);
        CHECK(st.waiters == 1 && st.borrowed == 1);
        CHECK_EQ(lim.nrecs, 2); /* A's and C's */
        note("A releases");
        nest_limiter_release(&lim);
        return 0;
    }
    int rc = nest_limiter_acquire(&lim);
    note("%s %d", names[i], rc);
    if (rc == 0) nest_limiter_release(&lim);
    return rc;
}

NEST_TEST(limiter_cancelled_waiter_leaves_no_trace) {
    nest_limiter_init(&lim, 1);
    CHECK_EQ(run_children(lim_queue, 3, NULL), 0);
    CHECK_STREQ(events, "B -125 A releases C 0");
    CHECK(lim.borrowed == 0 && lim.nrecs == 0);
}

static int lim_rejump(void *arg) {
    (void)arg;
    if (me() == 0) {
        CHECK_EQ(nest_limiter_acquire(&lim), 0);
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
        nest_limiter_release(&lim);
        note("A try %d", nest_limiter_try_acquire(&lim));
        note("A %d", nest_limiter_acquire(&lim));
        nest_limiter_release(&lim);
        return 0;
    }
    note("B %d", nest_limiter_acquire(&lim));
    nest_limiter_release(&lim);
    return 0;
}

NEST_TEST(limiter_releaser_cannot_jump_the_queue) {
    nest_limiter_init(&lim, 1);
    CHECK_EQ(run_children(lim_rejump, 2, NULL), 0);
    CHECK_STREQ(events, "A try -11 B 0 A 0");
}

/* Five tasks wait on a limiter with no tokens; growing the total hands the
 * new tokens out in arrival order. */
static int lim_grow_waiter(void *arg) {
    (void)arg;
    CHECK_EQ(nest_limiter_acquire(&lim), 0);
    note("%s", names[me()]);
    CHECK_EQ(nest_event_wait(&ev), 0);
    nest_limiter_release(&lim);
    return 0;
}

static void lim_grow(void) {
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_limiter_stats st;
    nest_limiter_statistics(&lim, &st);
    CHECK(st.waiters == 5 && st.borrowed == 0 && st.total == 0 && st.available == 0);
    note("grow to 2");
    nest_limiter_set_total(&lim, 2);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_limiter_statistics(&lim, &st);
    CHECK(st.waiters == 3 && st.borrowed == 2 && st.total == 2 && st.available == 0);
    note("grow to 7");
    nest_limiter_set_total(&lim, 7);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_limiter_statistics(&lim, &st);
    CHECK(st.waiters == 0 && st.borrowed == 5 && st.available == 2);
    nest_event_set(&ev);
}

NEST_TEST(limiter_set_total_growth_wakes_waiters_in_order) {
    nest_limiter_init(&lim, 0);
    nest_event_init(&ev);
    CHECK_EQ(run_children(lim_grow_waiter, 5, lim_grow), 0);
    CHECK_STREQ(events, "grow to 2 A B grow to 7 C D E");
    CHECK_EQ(nest_limiter_available(&lim), 7);
}

/* Shrinking below what is borrowed: returned tokens are not handed out
 * until borrowed drops below the new total.  Borrowers here are pointers
 * (on behalf of x[0..2]), released by the root. */
static char x[3];

static int lim_shrink_waiter(void *arg) {
    (void)arg;
    CHECK_EQ(nest_limiter_acquire(&lim), 0);
    note("D gets it");
    nest_limiter_release(&lim);
    return 0;
}

static int lim_shrink_root(void *arg) {
    (void)arg;
    for (int i = 0; i < 3; i++) CHECK_EQ(nest_limiter_acquire_on_behalf_of(&lim, &x[i]), 0);
    nest_nursery n;
    nest_nursery_open(&n);
    spawn_named(&n, lim_shrink_waiter, NULL, "D");
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_limiter_set_total(&lim, 1);
    nest_limiter_stats st;
    for (int i = 0; i < 3; i++) {
        nest_limiter_statistics(&lim, &st);
        note("borrowed=%zu avail=%zu waiters=%zu", st.borrowed, st.available, st.waiters);
        nest_limiter_release_on_behalf_of(&lim, &x[i]);
        CHECK_EQ(nest_checkpoint(), 0);
    }
    nest_limiter_statistics(&lim, &st);
    note("borrowed=%zu waiters=%zu", st.borrowed, st.waiters);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(limiter_set_total_shrink_takes_effect_as_tokens_return) {
    nest_limiter_init(&lim, 3);
    CHECK_EQ(run_mock(lim_shrink_root, NULL), 0);
    CHECK_STREQ(events, "borrowed=3 avail=0 waiters=1 borrowed=2 avail=0 waiters=1 "
                        "borrowed=1 avail=0 waiters=1 D gets it borrowed=0 waiters=0");
}

/* Borrowers named by pointers: a token borrowed on behalf of &x[0] in one
 * task is released in another. */
static int lim_borrow_for_x(void *arg) {
    (void)arg;
    CHECK_EQ(nest_limiter_acquire_on_behalf_of(&lim, &x[0]), 0);
    note("A borrowed for x0");
    return 0;
}

static int lim_release_for_x(void *arg) {
    (void)arg;
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_limiter_release_on_behalf_of(&lim, &x[0]);
    note("B released for x0");
    return 0;
}

static int lim_behalf_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    spawn_named(&n, lim_borrow_for_x, NULL, "A");
    spawn_named(&n, lim_release_for_x, NULL, "B");
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    CHECK_EQ(nest_limiter_try_acquire_on_behalf_of(&lim, &x[0]), 0);
    CHECK_EQ(nest_limiter_try_acquire_on_behalf_of(&lim, &x[1]), -EAGAIN);
    nest_limiter_release_on_behalf_of(&lim, &x[0]);
    return 0;
}

NEST_TEST(limiter_on_behalf_of_releases_from_another_task) {
    nest_limiter_init(&lim, 1);
    CHECK_EQ(run_mock(lim_behalf_root, NULL), 0);
    CHECK_STREQ(events, "A borrowed for x0 B released for x0");
    CHECK(lim.borrowed == 0 && lim.reclaimed == 0 && lim.nrecs == 0);
}

/* A task that exits holding its token gives it back (counted as
 * reclaimed), and the waiter gets it; tokens borrowed on behalf of other
 * pointers stay borrowed when the task that took them exits. */
static int lim_exit_holding(void *arg) {
    (void)arg;
    int i = me();
    if (i == 0) {
        CHECK_EQ(nest_limiter_acquire(&lim), 0);
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
        note("A exits");
        return 0;
    }
    if (i == 1) {
        note("B %d", nest_limiter_acquire(&lim));
        return 0; /* exits holding it too */
    }
    /* C: for itself, named explicitly; D: for x[2] */
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    if (i == 2) CHECK_EQ(nest_limiter_acquire_on_behalf_of(&lim, nest_current_task()), 0);
    if (i == 3) CHECK_EQ(nest_limiter_acquire_on_behalf_of(&lim, &x[2]), 0);
    return 0;
}

static int lim_exit_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    for (int i = 0; i < 4; i++) handles[i] = spawn_named(&n, lim_exit_holding, NULL, names[i]);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    nest_limiter_stats st;
    nest_limiter_statistics(&lim, &st);
    note("borrowed=%zu reclaimed=%llu", st.borrowed, (unsigned long long)st.reclaimed);
    nest_limiter_release_on_behalf_of(&lim, &x[2]);
    return 0;
}

NEST_TEST(limiter_token_of_an_exiting_task_is_reclaimed) {
    nest_limiter_init(&lim, 1);
    CHECK_EQ(run_mock(lim_exit_root, NULL), 0);
    CHECK_STREQ(events, "A exits B 0 borrowed=1 reclaimed=3");
    CHECK(lim.borrowed == 0 && lim.nrecs == 0 && lim.buckets == NULL);
}

/* A thousand borrowers (the hash table grows several times), released in
 * a scrambled order. */
static char many[1000];

static int lim_many(void *arg) {
    (void)arg;
    for (int i = 0; i < 1000; i++)
        CHECK_EQ(nest_limiter_try_acquire_on_behalf_of(&lim, &many[i]), 0);
    CHECK_EQ(nest_limiter_try_acquire_on_behalf_of(&lim, &lim), -EAGAIN);
    CHECK_EQ(nest_limiter_try_acquire(&lim), -EAGAIN);
    CHECK_EQ(lim.borrowed, 1000);
    CHECK(lim.nbuckets >= 1000);
    for (int k = 0; k < 1000; k++) {
        int i = (k * 617) % 1000; /* 617 is prime to 1000: a permutation */
        nest_limiter_release_on_behalf_of(&lim, &many[i]);
        CHECK_EQ(lim.borrowed, (size_t)(999 - k));
    }
    return 0;
}

NEST_TEST(limiter_tracks_a_thousand_borrowers) {
    nest_limiter_init(&lim, 1000);
    CHECK_EQ(run_children(lim_many, 1, NULL), 0);
    CHECK(lim.nrecs == 0 && lim.buckets == NULL && lim.nbuckets == 0);
}

/* Misuse. */
static int lim_twice(void *arg) {
    (void)arg;
    CHECK_EQ(nest_limiter_acquire(&lim), 0);
    nest_limiter_acquire(&lim);
    return 0;
}

NEST_TEST_ABORTS(limiter_borrower_taking_a_second_token_aborts,
                 "nest_limiter_acquire(): task 'A' (spawned at") {
    nest_limiter_init(&lim, 5);
    run_children(lim_twice, 1, NULL);
}

NEST_TEST_ABORTS(limiter_second_token_message_states_the_rule,
                 "already holds a token of this limiter (rule: a borrower holds at most one "
                 "token of a CapacityLimiter)") {
    nest_limiter_init(&lim, 5);
    run_children(lim_twice, 1, NULL);
}

static int lim_twice_ptr(void *arg) {
    (void)arg;
    CHECK_EQ(nest_limiter_try_acquire_on_behalf_of(&lim, &x[0]), 0);
    nest_limiter_try_acquire_on_behalf_of(&lim, &x[0]);
    return 0;
}

NEST_TEST_ABORTS(limiter_pointer_borrower_taking_a_second_token_aborts,
                 "nest_limiter_try_acquire_on_behalf_of(): borrower 0x") {
    nest_limiter_init(&lim, 5);
    run_children(lim_twice_ptr, 1, NULL);
}

/* A borrower that is waiting may not ask again from another task. */
static int lim_wait_twice(void *arg) {
    (void)arg;
    if (me() == 1) CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_limiter_acquire_on_behalf_of(&lim, &x[0]);
    return 0;
}

NEST_TEST_ABORTS(limiter_waiting_borrower_asking_again_aborts,
                 "already waits for a token of this limiter") {
    nest_limiter_init(&lim, 0);
    run_children(lim_wait_twice, 2, NULL);
}

static int lim_release_unheld(void *arg) {
    (void)arg;
    if (me() == 0) {
        CHECK_EQ(nest_limiter_acquire(&lim), 0);
        CHECK_EQ(nest_sleep_forever(), -ECANCELED);
        return 0;
    }
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_limiter_release(&lim); /* B borrowed nothing */
    return 0;
}

NEST_TEST_ABORTS(limiter_release_by_a_non_borrower_aborts,
                 "nest_limiter_release(): task 'B' (spawned at") {
    nest_limiter_init(&lim, 5);
    run_children(lim_release_unheld, 2, NULL);
}

NEST_TEST_ABORTS(limiter_release_message_states_the_rule,
                 "holds no token of this limiter (it holds none) (rule: only a borrower "
                 "releases its token, once)") {
    nest_limiter_init(&lim, 5);
    run_children(lim_release_unheld, 2, NULL);
}

static int lim_release_waiting(void *arg) {
    (void)arg;
    if (me() == 0) {
        nest_limiter_acquire_on_behalf_of(&lim, &x[1]);
        return 0;
    }
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_limiter_release_on_behalf_of(&lim, &x[1]); /* it is only waiting */
    return 0;
}

NEST_TEST_ABORTS(limiter_release_for_a_waiting_borrower_aborts,
                 "holds no token of this limiter (it is still waiting for one)") {
    nest_limiter_init(&lim, 0);
    run_children(lim_release_waiting, 2, NULL);
}

static int lim_null_borrower(void *arg) {
    (void)arg;
    nest_limiter_acquire_on_behalf_of(&lim, NULL);
    return 0;
}

NEST_TEST_ABORTS(limiter_null_borrower_aborts, "the borrower is NULL") {
    nest_limiter_init(&lim, 5);
    run_children(lim_null_borrower, 1, NULL);
}

/* Out of memory: an allocator that counts live bytes and fails on demand. */
static struct {
    long live_bytes;
    long calls;
    long fail_at; /* fail call number fail_at; 0: never */
} al;

static void *fail_one_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    if (nsize == 0) {
        al.live_bytes -= (long)osize;
        free(ptr);
        return NULL;
    }
    if (++al.calls == al.fail_at) return NULL;
    void *p = realloc(ptr, nsize);
    CHECK(p != NULL);
    al.live_bytes += (long)nsize - (long)osize;
    return p;
}

static int lim_oom(void *arg) {
    (void)arg;
    long base = al.live_bytes;
    /* First allocation (the table) fails, then the second (the record). */
    for (int k = 1; k <= 2; k++) {
        al.fail_at = al.calls + k;
        CHECK_EQ(nest_limiter_acquire(&lim), -ENOMEM);
        CHECK_EQ(al.live_bytes, base);
        CHECK(lim.borrowed == 0 && lim.nrecs == 0 && lim.buckets == NULL);
        al.fail_at = al.calls + k;
        CHECK_EQ(nest_limiter_try_acquire(&lim), -ENOMEM);
        CHECK_EQ(al.live_bytes, base);
        al.fail_at = 0;
    }
    CHECK_EQ(nest_limiter_acquire(&lim), 0);
    CHECK(al.live_bytes > base);
    long one = al.live_bytes;
    /* With a table in place, only the record is allocated. */
    al.fail_at = al.calls + 1;
    CHECK_EQ(nest_limiter_acquire_on_behalf_of(&lim, &x[0]), -ENOMEM);
    CHECK_EQ(al.live_bytes, one);
    CHECK_EQ(lim.borrowed, 1);
    al.fail_at = 0;
    CHECK_EQ(nest_limiter_acquire_on_behalf_of(&lim, &x[0]), 0);
    nest_limiter_release_on_behalf_of(&lim, &x[0]);
    nest_limiter_release(&lim);
    CHECK_EQ(al.live_bytes, base); /* idle: the limiter owns nothing */
    return 0;
}

NEST_TEST(limiter_out_of_memory_fails_cleanly_and_idle_owns_nothing) {
    nest_set_allocator(fail_one_alloc, NULL);
    nest_limiter_init(&lim, 5);
    CHECK_EQ(run_mock(lim_oom, NULL), 0);
    nest_set_allocator(NULL, NULL);
}

/* ---- Condition ---------------------------------------------------------- */

/* A waits; B takes the lock, notifies, and keeps the lock across a
 * checkpoint: A returns only after B releases, holding the lock. */
static int cond_pair(void *arg) {
    (void)arg;
    if (me() == 0) {
        CHECK_EQ(nest_lock_acquire(&lk), 0);
        note("A waits");
        int rc = nest_condition_wait(&cond);
        note("A %d owner=%d", rc, lk.owner == nest_current_task());
        nest_lock_release(&lk);
        return 0;
    }
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    CHECK_EQ(nest_lock_acquire(&lk), 0);
    nest_condition_stats st;
    nest_condition_statistics(&cond, &st);
    CHECK(st.waiters == 1 && st.lock.locked && st.lock.waiters == 0);
    CHECK(st.lock.owner == nest_current_task());
    note("B notifies %zu", nest_condition_notify(&cond, 1));
    nest_condition_statistics(&cond, &st);
    CHECK(st.waiters == 0 && st.lock.waiters == 1); /* A moved to the lock */
    CHECK_EQ(nest_checkpoint(), 0);
    CHECK_EQ(nest_checkpoint(), 0);
    note("B releases");
    nest_lock_release(&lk);
    return 0;
}

NEST_TEST(condition_notified_waiter_returns_holding_the_lock_after_notifier_releases) {
    nest_lock_init(&lk);
    nest_condition_init(&cond, &lk);
    CHECK(nest_condition_lock(&cond) == &lk);
    CHECK_EQ(run_children(cond_pair, 2, NULL), 0);
    CHECK_STREQ(events, "A waits B notifies 1 B releases A 0 owner=1");
}

static int cond_waiter(void *arg) {
    (void)arg;
    CHECK_EQ(nest_lock_acquire(&lk), 0);
    int rc = nest_condition_wait(&cond);
    note("%s %d", names[me()], rc);
    CHECK(lk.owner == nest_current_task());
    nest_lock_release(&lk);
    return 0;
}

static void cond_notify_2_then_all(void) {
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    CHECK_EQ(nest_lock_acquire(&lk), 0);
    note("notify 2: %zu", nest_condition_notify(&cond, 2));
    nest_lock_release(&lk);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    CHECK_EQ(nest_lock_acquire(&lk), 0);
    note("notify all: %zu", nest_condition_notify_all(&cond));
    note("again: %zu", nest_condition_notify_all(&cond));
    nest_lock_release(&lk);
}

NEST_TEST(condition_notify_n_and_notify_all_wake_in_order) {
    nest_lock_init(&lk);
    nest_condition_init(&cond, &lk);
    CHECK_EQ(run_children(cond_waiter, 4, cond_notify_2_then_all), 0);
    CHECK_STREQ(events, "notify 2: 2 A 0 B 0 notify all: 2 again: 0 C 0 D 0");
}

/* A waits; B takes the lock and cancels A: A returns -ECANCELED only once
 * it holds the lock again, i.e. after B releases it. */
static int cond_cancel(void *arg) {
    (void)arg;
    if (me() == 0) {
        CHECK_EQ(nest_lock_acquire(&lk), 0);
        int rc = nest_condition_wait(&cond);
        note("A %d owner=%d", rc, lk.owner == nest_current_task());
        nest_lock_release(&lk);
        return rc;
    }
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    CHECK_EQ(nest_lock_acquire(&lk), 0);
    note("B cancels A");
    nest_task_cancel(handles[0]);
    CHECK_EQ(nest_checkpoint(), 0);
    CHECK_EQ(nest_checkpoint(), 0);
    nest_condition_stats st;
    nest_condition_statistics(&cond, &st);
    CHECK(st.waiters == 0 && st.lock.waiters == 1); /* A queued for the lock */
    note("B releases");
    nest_lock_release(&lk);
    return 0;
}

NEST_TEST(condition_cancelled_wait_reacquires_the_lock) {
    nest_lock_init(&lk);
    nest_condition_init(&cond, &lk);
    CHECK_EQ(run_children(cond_cancel, 2, NULL), 0);
    CHECK_STREQ(events, "B cancels A B releases A -125 owner=1");
}

/* The same after a notify: A is in the lock's queue when cancelled; it
 * leaves it, and re-queues (shielded) for the lock. */
static int cond_notify_cancel(void *arg) {
    (void)arg;
    if (me() == 0) {
        CHECK_EQ(nest_lock_acquire(&lk), 0);
        int rc = nest_condition_wait(&cond);
        note("A %d owner=%d", rc, lk.owner == nest_current_task());
        nest_lock_release(&lk);
        return rc;
    }
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    CHECK_EQ(nest_lock_acquire(&lk), 0);
    CHECK_EQ(nest_condition_notify(&cond, 1), 1);
    note("B cancels A");
    nest_task_cancel(handles[0]);
    CHECK_EQ(nest_checkpoint(), 0);
    CHECK_EQ(nest_checkpoint(), 0);
    CHECK_EQ(lk.lot.count, 1);
    note("B releases");
    nest_lock_release(&lk);
    return 0;
}

NEST_TEST(condition_cancelled_after_notify_reacquires_the_lock) {
    nest_lock_init(&lk);
    nest_condition_init(&cond, &lk);
    CHECK_EQ(run_children(cond_notify_cancel, 2, NULL), 0);
    CHECK_STREQ(events, "B cancels A B releases A -125 owner=1");
}

/* In a cancelled scope, wait returns at once and never lets the lock go:
 * B, queued for the lock, gets it only when A releases. */
static int cond_cancelled_scope(void *arg) {
    (void)arg;
    if (me() == 0) {
        CHECK_EQ(nest_lock_acquire(&lk), 0);
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0); /* B queued for the lock */
        nest_scope s;
        nest_scope_enter(&s, NEST_FOREVER);
        nest_scope_cancel(&s);
        int rc = nest_condition_wait(&cond);
        note("A %d owner=%d lockwaiters=%zu", rc, lk.owner == nest_current_task(), lk.lot.count);
        CHECK_EQ(nest_scope_exit(&s, rc), 0);
        nest_lock_release(&lk);
        return 0;
    }
    note("B %d", nest_lock_acquire(&lk));
    nest_lock_release(&lk);
    return 0;
}

NEST_TEST(condition_wait_in_cancelled_scope_keeps_the_lock) {
    nest_lock_init(&lk);
    nest_condition_init(&cond, &lk);
    CHECK_EQ(run_children(cond_cancelled_scope, 2, NULL), 0);
    CHECK_STREQ(events, "A -125 owner=1 lockwaiters=1 B 0");
}

/* A is notified, then B exits holding the lock: A gets NEST_EBROKEN, not
 * holding anything. */
static int cond_broken(void *arg) {
    (void)arg;
    if (me() == 0) {
        CHECK_EQ(nest_lock_acquire(&lk), 0);
        int rc = nest_condition_wait(&cond);
        note("A %s owner=%d", nest_err_name(rc), lk.owner != NULL);
        return 0;
    }
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    CHECK_EQ(nest_lock_acquire(&lk), 0);
    CHECK_EQ(nest_condition_notify_all(&cond), 1);
    note("B exits");
    return 0;
}

NEST_TEST(condition_wait_reports_a_lock_broken_meanwhile) {
    nest_lock_init(&lk);
    nest_condition_init(&cond, &lk);
    CHECK_EQ(run_children(cond_broken, 2, NULL), 0);
    CHECK_STREQ(events, "B exits A NEST_EBROKEN owner=0");
}

static int cond_wait_unlocked(void *arg) {
    (void)arg;
    nest_condition_wait(&cond);
    return 0;
}

NEST_TEST_ABORTS(condition_wait_without_the_lock_aborts,
                 "nest_condition_wait(): task 'A' (spawned at") {
    nest_lock_init(&lk);
    nest_condition_init(&cond, &lk);
    run_children(cond_wait_unlocked, 1, NULL);
}

static int cond_notify_unlocked(void *arg) {
    (void)arg;
    nest_condition_notify(&cond, 1);
    return 0;
}

NEST_TEST_ABORTS(condition_notify_without_the_lock_aborts,
                 "does not hold the condition's lock (rule: wait and notify are called with "
                 "the condition's lock held)") {
    nest_lock_init(&lk);
    nest_condition_init(&cond, &lk);
    run_children(cond_notify_unlocked, 1, NULL);
}

/* ---- stress: random schedules, random deadlines ------------------------- */

/* ST_TASKS tasks each make ST_ITERS attempts to take a lock, a semaphore
 * unit or a limiter token, each attempt under a random deadline (or none),
 * after a random pause; a holder keeps the resource for a random number of
 * checkpoints or a short sleep.  For the limiter, a controller changes the
 * total at random times.  The runtime schedules each pass in a seeded
 * random order (so woken tasks resume in any order).  Checked throughout:
 *  - capacity: holders never exceed what the primitive allows;
 *  - FIFO: the tasks in the primitive's queue are always in the order they
 *    queued, and every release (or set_total) hands out to a prefix of that
 *    queue, i.e. to the longest waiting tasks;
 *  - "cancelled means it did not happen": an acquire that returns 0 after
 *    queueing was handed the resource; one that returns -ECANCELED was not;
 *  - no lost wake-up: the run ends (no NEST_EDEADLOCK) with the resource
 *    idle.
 * The seed is printed when a check fails. */
enum { ST_TASKS = 6, ST_ITERS = 25 };

static uint64_t rng;
static uint64_t st_seed;

static unsigned rnd(unsigned n) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

static int st_kind; /* 0 lock, 1 semaphore (2 units), 2 limiter (total varies) */

#define ST_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: stress seed %llu kind %d: CHECK failed: %s\n", __FILE__,       \
                    __LINE__, (unsigned long long)st_seed, st_kind, #cond);                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

enum { ST_IDLE, ST_QUEUED, ST_GRANTED };
static nest_task *st_task[ST_TASKS];
static int st_state[ST_TASKS];
static uint64_t st_seq[ST_TASKS]; /* when it queued */
static uint64_t st_next_seq;
static int st_holders;
static int st_done;

static nest_parking_lot *st_lot(void) {
    switch (st_kind) {
    case 0:
        return &lk.lot;
    case 1:
        return &sem.lot;
    default:
        return &lim.lot;
    }
}

static int st_id(const nest_task *t) {
    for (int i = 0; i < ST_TASKS; i++)
        if (st_task[i] == t) return i;
    ST_CHECK(!"a task in the queue is not a worker");
    return -1;
}

/* The ids in the queue, in queue order; checks they queued in that order. */
static int st_snapshot(int *ids) {
    int n = 0;
    uint64_t last = 0;
    for (nest_waiter *w = nest_parking_lot_first(st_lot()); w; w = w->next) {
        int id = st_id(nest_waiter_task(w));
        ST_CHECK(st_state[id] == ST_QUEUED);
        ST_CHECK(n == 0 || st_seq[id] > last); /* FIFO order */
        last = st_seq[id];
        ids[n++] = id;
    }
    return n;
}

static int st_would_wait(void) {
    switch (st_kind) {
    case 0:
        return lk.owner != NULL;
    case 1:
        return sem.value == 0;
    default:
        return lim.borrowed >= lim.total;
    }
}

static int st_acquire(void) {
    switch (st_kind) {
    case 0:
        return nest_lock_acquire(&lk);
    case 1:
        return nest_semaphore_acquire(&sem);
    default:
        return nest_limiter_acquire(&lim);
    }
}

/* Holders that have resumed are counted in st_holders; a waiter handed the
 * resource but not yet resumed is counted by the primitive only.  Also the
 * hand-off invariant: the resource is never available while tasks wait. */
static void st_check_capacity(void) {
    switch (st_kind) {
    case 0:
        ST_CHECK(st_holders <= 1 && (st_holders == 0 || lk.owner != NULL));
        ST_CHECK(lk.owner != NULL || lk.lot.count == 0);
        break;
    case 1:
        ST_CHECK(st_holders <= 2 && (size_t)st_holders + sem.value <= 2);
        ST_CHECK(sem.value == 0 || sem.lot.count == 0);
        break;
    default:
        ST_CHECK((size_t)st_holders <= lim.borrowed);
        ST_CHECK(lim.borrowed >= lim.total || lim.lot.count == 0);
        break;
    }
}

/* Runs a release (or set_total); whoever left the queue during it was
 * handed the resource, and must be the longest waiting. */
static void st_hand_out(void (*op)(void)) {
    int before[ST_TASKS], after[ST_TASKS];
    int nb = st_snapshot(before);
    op();
    int na = st_snapshot(after);
    int k = nb - na;
    ST_CHECK(k >= 0);
    for (int i = 0; i < na; i++) ST_CHECK(after[i] == before[k + i]); /* a prefix left */
    for (int i = 0; i < k; i++) st_state[before[i]] = ST_GRANTED;
    st_check_capacity();
}

static void st_release_op(void) {
    switch (st_kind) {
    case 0:
        nest_lock_release(&lk);
        break;
    case 1:
        nest_semaphore_release(&sem);
        break;
    default:
        nest_limiter_release(&lim);
        break;
    }
}

static size_t st_new_total;
static void st_set_total_op(void) {
    nest_limiter_set_total(&lim, st_new_total);
}

static int st_worker(void *arg) {
    int id = (int)(intptr_t)arg;
    st_task[id] = nest_current_task();
    for (int it = 0; it < ST_ITERS; it++) {
        if (rnd(3) == 0) CHECK_EQ(nest_sleep(NEST_MSEC(rnd(4))), 0);
        nest_scope s;
        if (rnd(2))
            nest_move_on_after(&s, NEST_MSEC(rnd(6)));
        else
            nest_scope_enter(&s, NEST_FOREVER);
        int queued = st_would_wait() && !nest_cancelled();
        if (queued) {
            st_state[id] = ST_QUEUED;
            st_seq[id] = ++st_next_seq;
        }
        int rc = st_acquire();
        if (rc == 0) {
            if (queued) ST_CHECK(st_state[id] == ST_GRANTED);
            st_state[id] = ST_IDLE;
            st_holders++;
            st_check_capacity();
            if (st_kind == 0) ST_CHECK(lk.owner == nest_current_task());
            if (rnd(2)) {
                for (unsigned k = rnd(3); k > 0; k--) (void)nest_checkpoint();
            } else {
                (void)nest_sleep(NEST_MSEC(rnd(3))); /* may be cut short: fine */
            }
            st_check_capacity();
            st_holders--;
            st_hand_out(st_release_op);
        } else {
            ST_CHECK(rc == -ECANCELED);
            ST_CHECK(st_state[id] != ST_GRANTED);
            st_state[id] = ST_IDLE;
            if (st_kind == 0) ST_CHECK(lk.owner != nest_current_task());
            int ids[ST_TASKS];
            int n = st_snapshot(ids);
            for (int i = 0; i < n; i++) ST_CHECK(ids[i] != id); /* it left the queue */
        }
        rc = nest_scope_exit(&s, rc);
        ST_CHECK(rc == 0);
    }
    st_done++;
    return 0;
}

/* Limiter only: changes the total (1..3) at random times while workers run. */
static int st_controller(void *arg) {
    (void)arg;
    while (st_done < ST_TASKS) {
        CHECK_EQ(nest_sleep(NEST_MSEC(1 + rnd(3))), 0);
        st_new_total = 1 + rnd(3);
        st_hand_out(st_set_total_op);
    }
    return 0;
}

static int st_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    for (intptr_t i = 0; i < ST_TASKS; i++) CHECK_EQ(nest_spawn(&n, st_worker, (void *)i), 0);
    if (st_kind == 2) CHECK_EQ(nest_spawn(&n, st_controller, NULL), 0);
    return nest_nursery_close(&n, 0);
}

static void stress(int kind) {
    st_kind = kind;
    for (st_seed = 1; st_seed <= 40; st_seed++) {
        rng = st_seed * 0x9E3779B97F4A7C15ull;
        st_holders = st_done = 0;
        st_next_seq = 0;
        for (int i = 0; i < ST_TASKS; i++) {
            st_task[i] = NULL;
            st_state[i] = ST_IDLE;
        }
        nest_lock_init(&lk);
        nest_semaphore_init(&sem, 2, 2);
        nest_limiter_init(&lim, 2);
        int rc = run_mock_seed(st_root, st_seed);
        ST_CHECK(rc == 0);
        ST_CHECK(st_holders == 0 && st_done == ST_TASKS);
        ST_CHECK(!nest_lock_locked(&lk) && lk.lot.count == 0);
        ST_CHECK(sem.value == 2 && sem.lot.count == 0);
        ST_CHECK(lim.borrowed == 0 && lim.lot.count == 0 && lim.nrecs == 0);
    }
}

NEST_TEST(lock_stress_random_schedules_and_deadlines) {
    stress(0);
}
NEST_TEST(semaphore_stress_random_schedules_and_deadlines) {
    stress(1);
}
NEST_TEST(limiter_stress_random_schedules_deadlines_and_totals) {
    stress(2);
}

/* ---- What a task dump says about a lock ---------------------------------- */

static nest_lock dump_lock;

static int dump_holder(void *arg) {
    (void)arg;
    CHECK_EQ(nest_lock_acquire(&dump_lock), 0);
    int rc = nest_sleep_forever(); /* cancelled by the test */
    nest_lock_release(&dump_lock);
    return rc == -ECANCELED ? 0 : -1;
}

static int dump_waiter(void *arg) {
    (void)arg;
    int rc = nest_lock_acquire(&dump_lock);
    if (rc == 0) nest_lock_release(&dump_lock);
    return 0;
}

static int dump_main(void *arg) {
    (void)arg;
    nest_lock_init(&dump_lock);
    nest_nursery n;
    nest_task *holder = NULL, *waiter = NULL;
    nest_spawn_options ho = {.name = "holder", .handle = &holder};
    nest_spawn_options wo = {.name = "waiter", .handle = &waiter};
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn_opts(&n, dump_holder, NULL, &ho), 0);
    CHECK_EQ(nest_spawn_opts(&n, dump_waiter, NULL, &wo), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    char buf[256];
    nest_task_describe(waiter, buf, sizeof buf);
    CHECK(strstr(buf, "lock") != NULL);
    char want[64];
    snprintf(want, sizeof want, "held by task #%llu 'holder'",
             (unsigned long long)nest_task_id(holder));
    if (!strstr(buf, want)) {
        fprintf(stderr, "describe: %s\n", buf);
        CHECK(strstr(buf, want) != NULL);
    }
    nest_task_cancel(holder);
    return nest_nursery_close(&n, 0);
}

/* A dump names the lock a task waits for and the task that holds it, so a
 * cycle of tasks waiting on each other's locks can be read off. */
NEST_TEST(dump_names_the_lock_holder) {
    CHECK_EQ(nest_run(dump_main, NULL), 0);
}
