/*
 * test/test_runtime.c - nest_run() and its options, deadlock detection,
 * error strings, task identity, the allocator hook and runtimes on several
 * threads (nest/runtime.h, nest/error.h, nest/alloc.h, nest/task.h).
 *
 * Covers: the root task's value is nest_run's; nesting runtimes aborts;
 * deadlocks unwind every task and report NEST_EDEADLOCK; nest_strerror and
 * nest_err_name; nest_current_task; invalid options; a hundred runs in a
 * row free everything they allocate; the stack_size and loop options;
 * sequential runtimes on one thread and concurrent ones on two threads.
 */
#define _GNU_SOURCE
#include <ev.h>
#include <pthread.h>
#include <unistd.h>

#include "harness.h"
#include "support.h"
#include "nest.h"

/* ---- helpers ----------------------------------------------------------- */

/* An allocator hook that counts live blocks and bytes and checks that osize
 * is always the size the block was allocated with.  Each block carries its
 * size in a 16-byte header (which keeps the alignment of malloc). */
struct counts {
    long live_blocks;
    long live_bytes;
    long allocations;
    long bad_osize;
};

static struct counts counts;

static void *size_checking_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    struct counts *c = ud;
    char *hdr = ptr ? (char *)ptr - 16 : NULL;
    if (ptr && *(size_t *)hdr != osize) c->bad_osize++;
    if (!ptr && osize != 0) c->bad_osize++;
    if (nsize == 0) {
        if (ptr) {
            c->live_blocks--;
            c->live_bytes -= (long)osize;
            free(hdr);
        }
        return NULL;
    }
    char *p = realloc(hdr, nsize + 16);
    if (!p) return NULL;
    if (!ptr) c->live_blocks++;
    c->live_bytes += (long)nsize - (long)(ptr ? osize : 0);
    c->allocations++;
    *(size_t *)p = nsize;
    return p + 16;
}

/* Touches about 200 KiB of stack, one kilobyte-sized frame at a time, so an
 * overflow meets the guard page instead of jumping over it. */
static int deep(int depth) {
    volatile char frame[1024];
    memset((char *)frame, depth & 0xff, sizeof frame);
    if (depth == 0) return frame[7];
    return deep(depth - 1) + frame[depth % 1024];
}

/* ---- the root's value --------------------------------------------------- */

static int return_arg(void *arg) { return (int)(intptr_t)arg; }

NEST_TEST(run_returns_the_root_value) {
    CHECK_EQ(nest_run(return_arg, (void *)(intptr_t)42), 42);
    CHECK_EQ(nest_run(return_arg, (void *)(intptr_t)0), 0);
    CHECK_EQ(nest_run(return_arg, (void *)(intptr_t)-EIO), -EIO);
    CHECK_EQ(nest_run_opts(return_arg, (void *)(intptr_t)7, NULL), 7);
    CHECK_EQ(run_mock(return_arg, (void *)(intptr_t)-10001), -10001);
}

static int checkpoint_then_return(void *arg) {
    CHECK_EQ(nest_checkpoint(), 0);
    return (int)(intptr_t)arg;
}

static int child_then_return(void *arg) {
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, checkpoint_then_return, NULL), 0);
    int rc = nest_nursery_close(&n, 0);
    CHECK_EQ(rc, 0);
    return (int)(intptr_t)arg;
}

/* The value survives blocking and children. */
NEST_TEST(run_returns_the_root_value_after_blocking) {
    CHECK_EQ(nest_run(checkpoint_then_return, (void *)(intptr_t)3), 3);
    CHECK_EQ(nest_run(child_then_return, (void *)(intptr_t)-ETIMEDOUT), -ETIMEDOUT);
}

static int runs_nest_run(void *arg) {
    (void)arg;
    return nest_run(return_arg, NULL);
}

NEST_TEST_ABORTS(nested_run_inside_a_task_aborts, "nest_run") { nest_run(runs_nest_run, NULL); }

/* ---- deadlock --------------------------------------------------------- */

static int root_sleeps_forever(void *arg) {
    (void)arg;
    int rc = nest_sleep_forever();
    note("root %d", rc);
    return 7;
}

/* Nothing could ever wake the root: the run is cancelled (the root's sleep
 * returns -ECANCELED) and nest_run reports the deadlock instead of 7. */
NEST_TEST(deadlock_root_sleeping_forever) {
    CHECK_EQ(nest_run(root_sleeps_forever, NULL), NEST_EDEADLOCK);
    CHECK_STREQ(events, "root -125");
    /* The thread can run again afterwards. */
    CHECK_EQ(nest_run(return_arg, (void *)(intptr_t)5), 5);
}

NEST_TEST(deadlock_root_sleeping_forever_mock_clock) {
    CHECK_EQ(run_mock(root_sleeps_forever, NULL), NEST_EDEADLOCK);
    CHECK_STREQ(events, "root -125");
}

static int child_sleeps_forever(void *arg) {
    int rc = nest_sleep_forever();
    note("c%d %d", (int)(intptr_t)arg, rc);
    return rc;
}

static nest_task *waited;

static int child_waits_for_task(void *arg) {
    (void)arg;
    int rc = nest_task_wait(waited, NULL);
    note("w %d", rc);
    return rc;
}

static int child_with_nursery(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, child_sleeps_forever, (void *)(intptr_t)9), 0);
    int rc = nest_nursery_close(&n, 0);
    note("inner close %d", rc);
    return rc;
}

static int deadlocked_family(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn_options o = {0};
    o.handle = &waited;
    CHECK_EQ(nest_spawn_opts(&n, child_sleeps_forever, (void *)(intptr_t)1, &o), 0);
    CHECK_EQ(nest_spawn(&n, child_sleeps_forever, (void *)(intptr_t)2), 0);
    CHECK_EQ(nest_spawn(&n, child_waits_for_task, NULL), 0);
    CHECK_EQ(nest_spawn(&n, child_with_nursery, NULL), 0);
    int rc = nest_nursery_close(&n, 0);
    note("close %d", rc);
    return rc;
}

/* Every task blocked for good: all of them unwind with -ECANCELED, the
 * nurseries close (the cancellation came from outside them) and nest_run
 * reports NEST_EDEADLOCK. */
NEST_TEST(deadlock_with_children_unwinds_everything) {
    CHECK_EQ(nest_run(deadlocked_family, NULL), NEST_EDEADLOCK);
    CHECK(strstr(events, "c1 -125") != NULL);
    CHECK(strstr(events, "c2 -125") != NULL);
    CHECK(strstr(events, "w -125") != NULL);
    CHECK(strstr(events, "c9 -125") != NULL);
    CHECK(strstr(events, "inner close -125") != NULL);
    /* The root's close comes last, after every child. */
    const char *tail = "close -125";
    size_t len = strlen(events);
    CHECK(len >= strlen(tail));
    CHECK_STREQ(events + len - strlen(tail), tail);
}

/* ---- errors ----------------------------------------------------------- */

NEST_TEST(strerror_and_err_name) {
    CHECK_STREQ(nest_strerror(0), "Success");
    CHECK(nest_err_name(0) != NULL);

    CHECK_STREQ(nest_err_name(-ECANCELED), "ECANCELED");
    CHECK_STREQ(nest_err_name(NEST_ECANCELED), "ECANCELED");
    CHECK_STREQ(nest_err_name(-ETIMEDOUT), "ETIMEDOUT");
    CHECK_STREQ(nest_err_name(-ENOMEM), "ENOMEM");
    CHECK_STREQ(nest_err_name(-EBUSY), "EBUSY");
    CHECK_STREQ(nest_err_name(NEST_ECLOSED), "NEST_ECLOSED");
    CHECK_STREQ(nest_err_name(NEST_EDEADLOCK), "NEST_EDEADLOCK");
    CHECK_STREQ(nest_err_name(NEST_ENOTSTARTED), "NEST_ENOTSTARTED");

    const int known[] = {-ECANCELED, -ETIMEDOUT, NEST_ECLOSED, NEST_EDEADLOCK, NEST_ENOTSTARTED};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        const char *s = nest_strerror(known[i]);
        CHECK(s != NULL && s[0] != 0);
        CHECK(strcmp(s, "unknown error") != 0);
        CHECK(strcmp(s, "success") != 0);
        for (size_t j = 0; j < i; j++) CHECK(strcmp(s, nest_strerror(known[j])) != 0);
    }

    /* Unknown: one in nest's reserved range, one beyond every errno, one
     * positive. */
    const int unknown[] = {-10500, -99999, 12345};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        CHECK_STREQ(nest_strerror(unknown[i]), "Unknown error");
        CHECK_STREQ(nest_err_name(unknown[i]), "UNKNOWN");
    }
    CHECK(nest_strerror(-2147483647 - 1) != NULL);
    CHECK(nest_err_name(-2147483647 - 1) != NULL);
}

/* ---- task identity ---------------------------------------------------- */

static nest_task *child_self;

static int record_self(void *arg) {
    (void)arg;
    child_self = nest_current_task();
    return 0;
}

static int identity_root(void *arg) {
    (void)arg;
    nest_task *me = nest_current_task();
    CHECK(me != NULL);
    CHECK_STREQ(nest_task_name(me), "main");
    CHECK_EQ(nest_task_id(me), 1);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, record_self, NULL), 0);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    CHECK(child_self != NULL && child_self != me);
    CHECK(nest_current_task() == me);
    return 0;
}

NEST_TEST(current_task_null_outside_named_main_inside) {
    CHECK(nest_current_task() == NULL);
    CHECK_EQ(nest_run(identity_root, NULL), 0);
    CHECK(nest_current_task() == NULL);
}

/* ---- options ---------------------------------------------------------- */

static int ran;

static int set_ran(void *arg) {
    (void)arg;
    ran = 1;
    return 0;
}

NEST_TEST(run_opts_with_invalid_clock_is_einval) {
    nest_run_options o;
    nest_run_options_init(&o);
    o.clock = 7;
    CHECK_EQ(nest_run_opts(set_ran, NULL, &o), -EINVAL);
    o.clock = -1;
    CHECK_EQ(nest_run_opts(set_ran, NULL, &o), -EINVAL);
    CHECK_EQ(ran, 0);
}

NEST_TEST(run_options_init_gives_the_documented_defaults) {
    nest_run_options o;
    memset(&o, 0xab, sizeof o);
    nest_run_options_init(&o);
    CHECK(o.loop == NULL);
    CHECK_EQ(o.stack_size, 0);
    CHECK_EQ(o.clock, NEST_CLOCK_MONOTONIC);
    CHECK_EQ(o.autojump_threshold, NEST_FOREVER);
    CHECK_EQ(o.seed, 0);
}

static int deep_child(void *arg) {
    (void)arg;
    note("child %d", deep(200) != -1);
    return 0;
}

static int deep_root(void *arg) {
    (void)arg;
    note("root %d", deep(200) != -1);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, deep_child, NULL), 0);
    return nest_nursery_close(&n, 0);
}

/* With stack_size 1 MiB both the root and a child without a per-spawn size
 * can use 200 KiB of stack (the 64 KiB default could not, see below). */
NEST_TEST(run_opts_stack_size_applies) {
    nest_run_options o;
    nest_run_options_init(&o);
    o.stack_size = 1024 * 1024;
    CHECK_EQ(nest_run_opts(deep_root, NULL, &o), 0);
    CHECK_STREQ(events, "root 1 child 1");
}

static int overflow_root(void *arg) {
    (void)arg;
    nest_spawn_options so = {0};
    so.name = "overflower";
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn_opts(&n, deep_child, NULL, &so), 0);
    return nest_nursery_close(&n, 0);
}

/* The same child on the default 64 KiB stack overflows; the guard page
 * catches it and the report names the task. */
NEST_TEST_ABORTS(default_stack_overflow_names_the_task, "overflower") {
    nest_run(overflow_root, NULL);
}

static int ev_pipe[2];

static int wait_on_host_loop(void *arg) {
    (void)arg;
    CHECK_EQ(write(ev_pipe[1], "x", 1), 1);
    CHECK_EQ(nest_wait_readable(ev_pipe[0]), 0);
    return 11;
}

/* A loop given in the options is used and left alive for its owner. */
NEST_TEST(run_opts_host_loop_is_used_and_not_destroyed) {
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    CHECK(loop != NULL);
    CHECK_EQ(pipe(ev_pipe), 0);
    nest_run_options o;
    nest_run_options_init(&o);
    o.loop = loop;
    CHECK_EQ(nest_run_opts(wait_on_host_loop, NULL, &o), 11);
    CHECK_EQ(nest_run_opts(wait_on_host_loop, NULL, &o), 11);
    ev_run(loop, EVRUN_NOWAIT); /* still a valid loop */
    ev_loop_destroy(loop);
}

/* ---- memory ----------------------------------------------------------- */

static int small_program(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_task *h = NULL;
    nest_spawn_options o = {0};
    o.handle = &h;
    CHECK_EQ(nest_spawn_opts(&n, checkpoint_then_return, (void *)(intptr_t)4, &o), 0);
    for (int i = 0; i < 100; i++) CHECK_EQ(nest_spawn(&n, checkpoint_then_return, NULL), 0);
    int result = 0;
    CHECK_EQ(nest_task_wait(h, &result), 0);
    CHECK_EQ(result, 4);
    CHECK_EQ(nest_sleep(NEST_MSEC(1)), 0);
    return nest_nursery_close(&n, 0);
}

/* A hundred runs in a row: each frees everything it allocated (through the
 * hook, with the right sizes), so nothing accumulates. */
NEST_TEST(back_to_back_runs_free_everything) {
    nest_set_allocator(size_checking_alloc, &counts);
    void *ud = NULL;
    CHECK(nest_get_allocator(&ud) == size_checking_alloc);
    CHECK(ud == &counts);
    for (int i = 0; i < 100; i++) {
        CHECK_EQ(run_mock(small_program, NULL), 0);
        CHECK_EQ(counts.live_blocks, 0);
        CHECK_EQ(counts.live_bytes, 0);
    }
    CHECK(counts.allocations >= 100); /* the hook is really used */
    CHECK_EQ(counts.bad_osize, 0);
    nest_set_allocator(NULL, NULL);
    CHECK(nest_get_allocator(NULL) != size_checking_alloc);
    CHECK_EQ(run_mock(small_program, NULL), 0); /* the default allocator again */
}

/* ---- several runtimes ------------------------------------------------- */

static int check_mock_clock(void *arg) {
    CHECK_EQ(nest_now(), (nest_time)(intptr_t)arg);
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(nest_now(), (nest_time)(intptr_t)arg + NEST_SEC(1));
    return 1;
}

static int check_real_clock(void *arg) {
    (void)arg;
    CHECK_EQ(nest_clock_jump(1), -EINVAL);
    nest_time t0 = nest_now();
    CHECK(t0 > NEST_SEC(2)); /* not the mock clock of the previous run */
    return 2;
}

/* Runtimes one after another on one thread each get their own clock. */
NEST_TEST(sequential_runtimes_on_one_thread) {
    nest_run_options o;
    nest_run_options_init(&o);
    o.clock = NEST_CLOCK_MOCK;
    o.autojump_threshold = 0;
    o.mock_start = NEST_SEC(1);
    CHECK_EQ(nest_run_opts(check_mock_clock, (void *)(intptr_t)NEST_SEC(1), &o), 1);
    CHECK_EQ(nest_run(check_real_clock, NULL), 2);
    o.mock_start = 0;
    CHECK_EQ(nest_run_opts(check_mock_clock, (void *)(intptr_t)0, &o), 1);
}

static pthread_barrier_t barrier;

struct thread_job {
    nest_time start;     /* mock_start */
    int children;        /* how many children to spawn */
    int done;            /* children that finished */
    nest_task *root;     /* nest_current_task() in the root */
    nest_time end;       /* nest_now() at the end of the root */
    int rc;
};

static int thread_child(void *arg) {
    struct thread_job *job = arg;
    CHECK_EQ(nest_sleep(NEST_MSEC(1)), 0);
    for (int i = 0; i < 10; i++) CHECK_EQ(nest_checkpoint(), 0);
    job->done++;
    return 0;
}

static int thread_root(void *arg) {
    struct thread_job *job = arg;
    job->root = nest_current_task();
    CHECK_EQ(nest_now(), job->start);
    /* Both runtimes exist now: neither thread returns before the other got
     * here. */
    pthread_barrier_wait(&barrier);
    nest_nursery n;
    nest_nursery_open(&n);
    for (int i = 0; i < job->children; i++) CHECK_EQ(nest_spawn(&n, thread_child, job), 0);
    int rc = nest_nursery_close(&n, 0);
    job->end = nest_now();
    pthread_barrier_wait(&barrier);
    return rc == 0 ? 100 + job->children : rc;
}

static void *thread_main(void *arg) {
    struct thread_job *job = arg;
    nest_run_options o;
    nest_run_options_init(&o);
    o.clock = NEST_CLOCK_MOCK;
    o.autojump_threshold = 0;
    o.mock_start = job->start;
    job->rc = nest_run_opts(thread_root, job, &o);
    return NULL;
}

/* Two threads run their own runtimes at the same time, each with its own
 * clock and tasks. */
NEST_TEST(two_threads_run_runtimes_concurrently) {
    CHECK_EQ(pthread_barrier_init(&barrier, NULL, 2), 0);
    struct thread_job a = {0}, b = {0};
    a.start = 0;
    a.children = 300;
    b.start = NEST_SEC(1000);
    b.children = 500;
    pthread_t ta, tb;
    CHECK_EQ(pthread_create(&ta, NULL, thread_main, &a), 0);
    CHECK_EQ(pthread_create(&tb, NULL, thread_main, &b), 0);
    CHECK_EQ(pthread_join(ta, NULL), 0);
    CHECK_EQ(pthread_join(tb, NULL), 0);
    CHECK_EQ(a.rc, 400);
    CHECK_EQ(b.rc, 600);
    CHECK_EQ(a.done, 300);
    CHECK_EQ(b.done, 500);
    CHECK(a.root != NULL && b.root != NULL && a.root != b.root);
    CHECK_EQ(a.end, a.start + NEST_MSEC(1));
    CHECK_EQ(b.end, b.start + NEST_MSEC(1));
    CHECK(nest_current_task() == NULL);
    pthread_barrier_destroy(&barrier);
}
