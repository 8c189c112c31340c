/*
 * test/test_thread.c - the worker-thread pool (nest/thread.h).
 *
 * Covers: results come back and fn runs on another thread while other
 * tasks keep running; the limit bounds concurrency and extra jobs start in
 * FIFO order; many concurrent jobs; cancellation before the call, while
 * queued (withdrawn, never runs), while running in wait mode (returns only
 * after fn finished, result stored) and in abandon mode (returns at once,
 * nothing leaks, checked with a counting allocator); an outstanding job is
 * not a deadlock, and deadlock detection still works once none is; argument
 * checks.  Tokens: a call from another thread runs in a task of the
 * runtime while the runtime is otherwise idle (a held token is not a
 * deadlock; a released one no longer prevents it); cancel from another
 * thread; calls after the run fail with NEST_ECLOSED; a runner outliving
 * the root task is cancelled; a call from the runtime's own thread fails.
 * nest_to_thread_owned(): release runs exactly when the call returns
 * -ECANCELED, once, after fn returned, on the runtime's thread - during the
 * run or while nest_run ends.  Short calls in a row (the spinning path)
 * return every result and still yield.
 *
 * Coordination with worker threads uses POSIX semaphores: a job blocks in
 * sem_wait and a task releases it with sem_post (which never blocks), so no
 * case depends on timing.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <unistd.h>

#include "harness.h"
#include "nest.h"
#include "nest/thread.h"

/* ---- helpers ----------------------------------------------------------- */

static sem_t gate; /* jobs that wait for the test block here */
static pthread_mutex_t order_mu = PTHREAD_MUTEX_INITIALIZER;
static int order[256]; /* job ids in the order they started */
static int norder;
static atomic_int running_now, running_max, finished;

static int run_with_limit(nest_fn fn, int limit) {
    nest_run_options o;
    nest_run_options_init(&o);
    o.thread_limit = limit;
    return nest_run_opts(fn, NULL, &o);
}

/* A job: records its start, waits at the gate if arg is odd (bit 0),
 * returns its id (arg >> 1) times ten. */
static int job(void *arg) {
    intptr_t v = (intptr_t)arg;
    pthread_mutex_lock(&order_mu);
    order[norder++] = (int)(v >> 1);
    pthread_mutex_unlock(&order_mu);
    int now = atomic_fetch_add(&running_now, 1) + 1;
    int max = atomic_load(&running_max);
    while (now > max && !atomic_compare_exchange_weak(&running_max, &max, now)) {
    }
    if (v & 1)
        sem_wait(&gate);
    else
        usleep(2000);
    atomic_fetch_sub(&running_now, 1);
    atomic_fetch_add(&finished, 1);
    return (int)(v >> 1) * 10;
}
#define GATED(id) ((void *)(((intptr_t)(id) << 1) | 1))
#define FREE(id) ((void *)((intptr_t)(id) << 1))

/* ---- results ----------------------------------------------------------- */

static int tid_job(void *arg) {
    *(pthread_t *)arg = pthread_self();
    return 42;
}

static int simple(void *arg) {
    (void)arg;
    pthread_t other;
    int r = 0;
    CHECK_EQ(nest_to_thread(tid_job, &other, &r, 0), 0);
    CHECK_EQ(r, 42);
    CHECK(!pthread_equal(other, pthread_self()));
    CHECK_EQ(nest_to_thread(tid_job, &other, NULL, 0), 0); /* result may be NULL */
    nest_thread_stats st;
    nest_thread_statistics(&st);
    CHECK_EQ(st.limit, NEST_THREAD_LIMIT_DEFAULT);
    CHECK_EQ(st.threads, 1);
    CHECK_EQ(st.completed, 2);
    return 0;
}

/* The root task alone waits for a thread: that is not a deadlock. */
NEST_TEST(result_comes_back_from_another_thread) {
    CHECK_EQ(nest_run(simple, NULL), 0);
}

static int releaser(void *arg) {
    (void)arg;
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0); /* the job is in sem_wait */
    CHECK_EQ(nest_sleep(NEST_MSEC(1)), 0);
    sem_post(&gate);
    return 0;
}

static int gated_job_task(void *arg) {
    (void)arg;
    int r = 0;
    CHECK_EQ(nest_to_thread(job, GATED(7), &r, 0), 0);
    CHECK_EQ(r, 70);
    return 0;
}

static int others_run(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, gated_job_task, NULL), 0);
    CHECK_EQ(nest_spawn(&n, releaser, NULL), 0);
    return nest_nursery_close(&n, 0);
}

/* While fn blocks, other tasks run (here: the one that unblocks fn). */
NEST_TEST(other_tasks_run_while_a_job_blocks) {
    sem_init(&gate, 0, 0);
    CHECK_EQ(nest_run(others_run, NULL), 0);
}

/* ---- the limit and the queue ------------------------------------------- */

static int queued_task(void *arg) {
    int r = -1;
    CHECK_EQ(nest_to_thread(job, arg, &r, 0), 0);
    CHECK_EQ(r, (int)((intptr_t)arg >> 1) * 10);
    return 0;
}

static int fifo(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    for (int i = 0; i < 6; i++) CHECK_EQ(nest_spawn(&n, queued_task, GATED(i)), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    while (atomic_load(&running_now) == 0) usleep(100); /* job 0 reached the gate */
    nest_thread_stats st;
    nest_thread_statistics(&st);
    CHECK_EQ(st.limit, 1);
    CHECK_EQ(st.threads, 1);
    CHECK_EQ(st.running, 1);
    CHECK_EQ(st.queued, 5);
    for (int i = 0; i < 6; i++) sem_post(&gate);
    return nest_nursery_close(&n, 0);
}

/* With the limit at 1, jobs run one at a time, in the order submitted. */
NEST_TEST(jobs_beyond_the_limit_queue_fifo) {
    sem_init(&gate, 0, 0);
    CHECK_EQ(run_with_limit(fifo, 1), 0);
    CHECK_EQ(norder, 6);
    for (int i = 0; i < 6; i++) CHECK_EQ(order[i], i);
    CHECK_EQ(running_max, 1);
}

static int many(void *arg) {
    int count = (int)(intptr_t)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    for (int i = 0; i < count; i++) CHECK_EQ(nest_spawn(&n, queued_task, FREE(i)), 0);
    return nest_nursery_close(&n, 0);
}

static int many_default(void *arg) {
    (void)arg;
    return many((void *)200);
}

/* 200 jobs at the default limit: each result right, at most 40 at once. */
NEST_TEST(many_concurrent_jobs_stay_within_the_default_limit) {
    CHECK_EQ(nest_run(many_default, NULL), 0);
    CHECK_EQ(finished, 200);
    CHECK(running_max <= NEST_THREAD_LIMIT_DEFAULT);
    CHECK(running_max > 1);
}

static int many_three(void *arg) {
    (void)arg;
    return many((void *)30);
}

NEST_TEST(the_run_option_bounds_concurrency) {
    CHECK_EQ(run_with_limit(many_three, 3), 0);
    CHECK_EQ(finished, 30);
    CHECK(running_max <= 3);
}

static int raise_limit(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, queued_task, GATED(0)), 0);
    CHECK_EQ(nest_spawn(&n, queued_task, GATED(1)), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    while (atomic_load(&running_now) == 0) usleep(100);
    CHECK_EQ(nest_thread_set_limit(0), -EINVAL);
    CHECK_EQ(nest_thread_set_limit(2), 0); /* job 1 starts without job 0 ending */
    while (atomic_load(&running_now) < 2) usleep(100);
    nest_thread_stats st;
    nest_thread_statistics(&st);
    CHECK_EQ(st.limit, 2);
    CHECK_EQ(st.running, 2);
    sem_post(&gate);
    sem_post(&gate);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(raising_the_limit_starts_queued_jobs) {
    sem_init(&gate, 0, 0);
    CHECK_EQ(run_with_limit(raise_limit, 1), 0);
    CHECK_EQ(running_max, 2);
}

/* ---- cancellation ------------------------------------------------------ */

static int cancelled_before(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    int r = 5;
    CHECK_EQ(nest_to_thread(job, FREE(1), &r, 0), -ECANCELED);
    CHECK_EQ(r, 5);
    return nest_scope_exit(&s, 0);
}

NEST_TEST(cancelled_before_the_call_runs_nothing) {
    CHECK_EQ(nest_run(cancelled_before, NULL), 0);
    CHECK_EQ(norder, 0);
}

static nest_scope wait_scope;
static int wait_done;

static int wait_mode_task(void *arg) {
    (void)arg;
    nest_scope_enter(&wait_scope, NEST_FOREVER);
    int r = 0;
    CHECK_EQ(nest_to_thread(job, GATED(3), &r, 0), -ECANCELED);
    CHECK_EQ(atomic_load(&finished), 1); /* fn finished before we returned */
    CHECK_EQ(r, 30);                     /* and its result is stored */
    wait_done = 1;
    return nest_scope_exit(&wait_scope, -ECANCELED);
}

static int wait_mode(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, wait_mode_task, NULL), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    while (atomic_load(&running_now) == 0) usleep(100); /* running, not queued */
    nest_scope_cancel(&wait_scope);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0); /* the task is still blocked */
    CHECK_EQ(nest_sleep(NEST_MSEC(5)), 0);
    CHECK_EQ(wait_done, 0);
    sem_post(&gate);
    return nest_nursery_close(&n, 0);
}

/* Default mode: cancellation waits for fn; -ECANCELED comes after it. */
NEST_TEST(cancel_waits_for_the_function_by_default) {
    sem_init(&gate, 0, 0);
    CHECK_EQ(nest_run(wait_mode, NULL), 0);
    CHECK_EQ(wait_done, 1);
}

static int queued_cancel(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, queued_task, GATED(0)), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_scope s;
    nest_move_on_after(&s, NEST_MSEC(5));
    int r = 9;
    CHECK_EQ(nest_to_thread(job, FREE(1), &r, 0), -ECANCELED); /* queued, withdrawn */
    CHECK_EQ(nest_scope_exit(&s, -ECANCELED), 0);
    CHECK_EQ(r, 9);
    nest_thread_stats st;
    nest_thread_statistics(&st);
    CHECK_EQ(st.queued, 0);
    sem_post(&gate);
    return nest_nursery_close(&n, 0);
}

/* A job still queued when cancelled is withdrawn at once and never runs. */
NEST_TEST(cancel_while_queued_withdraws_the_job) {
    sem_init(&gate, 0, 0);
    CHECK_EQ(run_with_limit(queued_cancel, 1), 0);
    CHECK_EQ(norder, 1);
    CHECK_EQ(order[0], 0);
}

/* A counting allocator: every block nest allocates, and how many live. */
static atomic_long live_blocks;

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        if (ptr) atomic_fetch_sub(&live_blocks, 1);
        free(ptr);
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p && !ptr) atomic_fetch_add(&live_blocks, 1);
    return p;
}

/* Owned by the job: it frees its argument itself. */
static atomic_int started;

static int owning_job(void *arg) {
    atomic_store(&started, 1);
    sem_wait(&gate);
    int v = *(int *)arg;
    free(arg);
    atomic_fetch_add(&finished, 1);
    return v;
}

static nest_scope abandon_scope;

static int abandon_task(void *arg) {
    (void)arg;
    int *owned = malloc(sizeof *owned);
    *owned = 11;
    nest_scope_enter(&abandon_scope, NEST_FOREVER);
    int r = 3;
    CHECK_EQ(nest_to_thread(owning_job, owned, &r, NEST_THREAD_ABANDON), -ECANCELED);
    CHECK_EQ(r, 3);                      /* the result is discarded */
    CHECK_EQ(atomic_load(&finished), 0); /* returned while fn still runs */
    return nest_scope_exit(&abandon_scope, -ECANCELED);
}

/* Runs abandon_task and cancels it once its job runs. */
static void abandon_one(void) {
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, abandon_task, NULL), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    while (!atomic_load(&started)) usleep(100);
    nest_scope_cancel(&abandon_scope);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    nest_thread_stats st;
    nest_thread_statistics(&st);
    CHECK_EQ(st.running, 1);
}

static int abandon(void *arg) {
    (void)arg;
    abandon_one();
    sem_post(&gate); /* let it end; nest_run joins the worker */
    return 0;
}

/* Abandon mode: -ECANCELED at once; the job ends on its own, its record is
 * freed by the pool, and nothing is left allocated after the run. */
NEST_TEST(abandon_returns_at_once_and_leaks_nothing) {
    sem_init(&gate, 0, 0);
    nest_set_allocator(counting_alloc, NULL);
    CHECK_EQ(nest_run(abandon, NULL), 0);
    CHECK_EQ(atomic_load(&finished), 1);
    CHECK_EQ(atomic_load(&live_blocks), 0);
    nest_set_allocator(NULL, NULL);
}

static int abandon_then_finish(void *arg) {
    (void)arg;
    abandon_one();
    sem_post(&gate);
    while (atomic_load(&finished) == 0) usleep(100);
    CHECK_EQ(nest_sleep(NEST_MSEC(5)), 0); /* the pool reaps it during the run */
    int r = 0;
    CHECK_EQ(nest_to_thread(job, FREE(4), &r, 0), 0); /* the pool still works */
    CHECK_EQ(r, 40);
    nest_thread_stats st;
    nest_thread_statistics(&st);
    CHECK_EQ(st.completed, 2);
    return 0;
}

NEST_TEST(an_abandoned_job_finishing_during_the_run_is_reaped) {
    sem_init(&gate, 0, 0);
    nest_set_allocator(counting_alloc, NULL);
    CHECK_EQ(nest_run(abandon_then_finish, NULL), 0);
    CHECK_EQ(atomic_load(&live_blocks), 0);
    nest_set_allocator(NULL, NULL);
}

/* ---- owned arguments: nest_to_thread_owned() --------------------------- */

/* An argument the job owns: where release() ran, and how often. */
struct owned {
    int value;
    int fn_done;      /* fn has returned (set by the worker before it returns) */
    int released;     /* release calls */
    int fn_done_at_release;
    pthread_t release_thread;
};

static pthread_t main_thread;
static struct owned *last_released;

static int owned_job(void *arg) {
    struct owned *o = arg;
    atomic_store(&started, 1);
    if (o->value < 0) sem_wait(&gate);
    o->fn_done = 1;
    atomic_fetch_add(&finished, 1);
    return o->value * 2;
}

static void owned_release(void *arg) {
    struct owned *o = arg;
    o->released++;
    o->fn_done_at_release = o->fn_done;
    o->release_thread = pthread_self();
    last_released = o;
}

static struct owned abandoned = {.value = -1};

static int owned_abandon_task(void *arg) {
    (void)arg;
    nest_scope_enter(&abandon_scope, NEST_FOREVER);
    int r = 3;
    CHECK_EQ(nest_to_thread_owned(owned_job, &abandoned, owned_release, &r, NEST_THREAD_ABANDON),
             -ECANCELED);
    CHECK_EQ(r, 3);
    CHECK_EQ(abandoned.released, 0); /* fn still runs: the pool owns arg */
    return nest_scope_exit(&abandon_scope, -ECANCELED);
}

/* Runs owned_abandon_task and cancels it once its job runs. */
static void owned_abandon_one(void) {
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, owned_abandon_task, NULL), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    while (!atomic_load(&started)) usleep(100);
    nest_scope_cancel(&abandon_scope);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
}

static int owned_abandon_then_finish(void *arg) {
    (void)arg;
    main_thread = pthread_self();
    struct owned ok = {.value = 21};
    int r = 0;
    CHECK_EQ(nest_to_thread_owned(owned_job, &ok, owned_release, &r, 0), 0);
    CHECK_EQ(r, 42);
    CHECK_EQ(ok.released, 0); /* success: the caller keeps arg */
    atomic_store(&started, 0);
    owned_abandon_one();
    sem_post(&gate);
    while (!last_released) CHECK_EQ(nest_sleep(NEST_MSEC(1)), 0); /* reaped during the run */
    CHECK(last_released == &abandoned);
    return 0;
}

/* Abandoned with a release function: release runs once, after fn returned,
 * on the runtime's thread; a successful call never releases. */
NEST_TEST(owned_release_runs_on_the_runtime_thread_after_an_abandoned_job) {
    sem_init(&gate, 0, 0);
    CHECK_EQ(nest_run(owned_abandon_then_finish, NULL), 0);
    CHECK_EQ(abandoned.released, 1);
    CHECK_EQ(abandoned.fn_done_at_release, 1);
    CHECK(pthread_equal(abandoned.release_thread, main_thread));
}

static void post_gate_after_run(void *arg) {
    (void)arg;
    CHECK_EQ(abandoned.released, 0);
    sem_post(&gate);
}

static int owned_abandon_and_return(void *arg) {
    (void)arg;
    main_thread = pthread_self();
    owned_abandon_one();
    return 0; /* the job still waits at the gate: the run's end lets it go */
}

/* A job that finishes only while nest_run ends (after every task, when the
 * workers are joined) is released too, on the runtime's thread, before
 * nest_run returns. */
NEST_TEST(owned_release_for_a_job_finishing_while_the_run_ends) {
    sem_init(&gate, 0, 0);
    nest_instrument ins;
    memset(&ins, 0, sizeof ins);
    ins.after_run = post_gate_after_run;
    nest_run_options o;
    nest_run_options_init(&o);
    o.instrument = &ins;
    CHECK_EQ(nest_run_opts(owned_abandon_and_return, NULL, &o), 0);
    CHECK_EQ(abandoned.released, 1);
    CHECK_EQ(abandoned.fn_done_at_release, 1);
    CHECK(pthread_equal(abandoned.release_thread, main_thread));
}

static struct owned before = {.value = 1}, queued_arg = {.value = 2}, waited = {.value = -1};

static int owned_wait_task(void *arg) {
    (void)arg;
    nest_scope_enter(&wait_scope, NEST_FOREVER);
    int r = 0;
    CHECK_EQ(nest_to_thread_owned(owned_job, &waited, owned_release, &r, 0), -ECANCELED);
    CHECK_EQ(r, -2);            /* wait mode: fn finished, its result is stored */
    CHECK_EQ(waited.released, 1); /* and arg was released before the call returned */
    return nest_scope_exit(&wait_scope, -ECANCELED);
}

static int owned_cancelled(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    CHECK_EQ(nest_to_thread_owned(owned_job, &before, owned_release, NULL, 0), -ECANCELED);
    CHECK_EQ(before.released, 1); /* at once: fn never runs */
    CHECK_EQ(nest_scope_exit(&s, 0), 0);

    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, owned_wait_task, NULL), 0); /* holds the only thread */
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_move_on_after(&s, NEST_MSEC(5));
    CHECK_EQ(nest_to_thread_owned(owned_job, &queued_arg, owned_release, NULL, 0), -ECANCELED);
    CHECK_EQ(nest_scope_exit(&s, -ECANCELED), 0);
    CHECK_EQ(queued_arg.released, 1); /* withdrawn from the queue: at once */
    CHECK_EQ(queued_arg.fn_done, 0);
    while (!atomic_load(&started)) usleep(100);
    nest_scope_cancel(&wait_scope);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    sem_post(&gate);
    return nest_nursery_close(&n, 0);
}

/* -ECANCELED always hands arg to release, exactly once: cancelled before
 * the call, withdrawn while queued, and cancelled while running in wait
 * mode (after fn returned). */
NEST_TEST(owned_release_whenever_the_call_returns_ecanceled) {
    sem_init(&gate, 0, 0);
    CHECK_EQ(run_with_limit(owned_cancelled, 1), 0);
    CHECK_EQ(before.released, 1);
    CHECK_EQ(queued_arg.released, 1);
    CHECK_EQ(waited.released, 1);
    CHECK_EQ(waited.fn_done_at_release, 1);
}

/* ---- short jobs: the spin ------------------------------------------------ */

static atomic_int quick_calls;
static int other_steps;

static int quick(void *arg) {
    (void)arg;
    return atomic_fetch_add(&quick_calls, 1) + 1;
}

static int stepper(void *arg) {
    (void)arg;
    while (nest_checkpoint() == 0) other_steps++;
    return 0;
}

static int quick_root(void *arg) {
    (void)arg;
    for (int i = 1; i <= 2000; i++) { /* alone: the spin usually catches them */
        int r = 0;
        CHECK_EQ(nest_to_thread(quick, NULL, &r, 0), 0);
        CHECK_EQ(r, i);
    }
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, stepper, NULL), 0);
    for (int i = 2001; i <= 2100; i++) {
        int r = 0;
        CHECK_EQ(nest_to_thread(quick, NULL, &r, 0), 0);
        CHECK_EQ(r, i);
    }
    CHECK(other_steps >= 50); /* each call yielded to the other task */
    nest_nursery_cancel(&n);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    nest_thread_stats st;
    nest_thread_statistics(&st);
    CHECK_EQ(st.completed, 2100);
    return 0;
}

/* Many short calls in a row: every result is right, whether the caller
 * caught it spinning or was woken through the loop; and a caller never
 * starves another task. */
NEST_TEST(short_calls_in_a_row_return_every_result_and_yield) {
    CHECK_EQ(nest_run(quick_root, NULL), 0);
}

/* ---- deadlock detection ------------------------------------------------ */

static int job_then_forever(void *arg) {
    (void)arg;
    int r;
    CHECK_EQ(nest_to_thread(job, FREE(2), &r, 0), 0);
    return nest_sleep_forever();
}

/* Once no job is outstanding, a program that can never wake is deadlocked. */
NEST_TEST(deadlock_detected_when_no_job_is_outstanding) {
    nest_run_options o;
    nest_run_options_init(&o);
    o.quiet = 1;
    CHECK_EQ(nest_run_opts(job_then_forever, NULL, &o), NEST_EDEADLOCK);
}

static int slow_job(void *arg) {
    (void)arg;
    usleep(20000);
    return 1;
}

static int mock_slow(void *arg) {
    (void)arg;
    int r = 0;
    CHECK_EQ(nest_to_thread(slow_job, NULL, &r, 0), 0);
    CHECK_EQ(r, 1);
    return 0;
}

/* The mock clock without autojump: only an outstanding job can wake the
 * runtime, and it is waited for rather than reported as a deadlock. */
NEST_TEST(an_outstanding_job_is_not_a_deadlock_on_the_mock_clock) {
    nest_run_options o;
    nest_run_options_init(&o);
    o.clock = NEST_CLOCK_MOCK;
    CHECK_EQ(nest_run_opts(mock_slow, NULL, &o), 0);
}

/* ---- tokens ------------------------------------------------------------ */

static nest_token *tok;
static nest_event ev;
static pthread_t rt_thread, caller;
static int call_rc, call_result;

static int set_event(void *arg) {
    CHECK(pthread_equal(pthread_self(), rt_thread)); /* runs in the runtime */
    CHECK(nest_current_task() != NULL);              /* as a task */
    CHECK_EQ(nest_checkpoint(), 0);                  /* which may block */
    nest_event_set(&ev);
    return (int)(intptr_t)arg;
}

static void *call_later(void *arg) {
    (void)arg;
    usleep(20000); /* the runtime is idle by then: only this thread can wake it */
    call_rc = nest_token_run(tok, set_event, (void *)5, &call_result);
    return NULL;
}

static int join_caller(void *arg) {
    (void)arg;
    return pthread_join(caller, NULL);
}

static int token_run_root(void *arg) {
    (void)arg;
    rt_thread = pthread_self();
    nest_event_init(&ev);
    tok = nest_token_get();
    CHECK(tok != NULL);
    CHECK_EQ(nest_token_run(tok, set_event, NULL, NULL), -EDEADLK);
    CHECK_EQ(pthread_create(&caller, NULL, call_later, NULL), 0);
    CHECK_EQ(nest_event_wait(&ev), 0);
    int r = -1;
    CHECK_EQ(nest_to_thread(join_caller, NULL, &r, 0), 0);
    CHECK_EQ(r, 0);
    CHECK_EQ(call_rc, 0);
    CHECK_EQ(call_result, 5);
    return 0;
}

/* Another thread's call runs in a task of the blocked runtime; the token
 * it holds keeps the idle runtime from being declared deadlocked. */
NEST_TEST(token_run_from_another_thread_while_the_runtime_blocks) {
    CHECK_EQ(nest_run(token_run_root, NULL), 0);
    /* After the run: the token is closed but still valid memory. */
    CHECK_EQ(nest_token_run(tok, set_event, NULL, NULL), NEST_ECLOSED);
    CHECK_EQ(nest_token_cancel(tok, &wait_scope), NEST_ECLOSED);
    nest_token_release(tok);
}

static nest_scope cancel_scope;

static void *cancel_later(void *arg) {
    (void)arg;
    usleep(10000);
    call_rc = nest_token_cancel(tok, &cancel_scope);
    return NULL;
}

static int token_cancel_root(void *arg) {
    (void)arg;
    tok = nest_token_get();
    nest_scope_enter(&cancel_scope, NEST_FOREVER);
    CHECK_EQ(pthread_create(&caller, NULL, cancel_later, NULL), 0);
    CHECK_EQ(nest_sleep_forever(), -ECANCELED);
    CHECK_EQ(nest_scope_exit(&cancel_scope, -ECANCELED), 0);
    CHECK(nest_scope_cancelled_caught(&cancel_scope));
    CHECK_EQ(nest_to_thread(join_caller, NULL, NULL, 0), 0);
    CHECK_EQ(call_rc, 0);
    nest_token_release(tok);
    return 0;
}

NEST_TEST(token_cancel_from_another_thread) {
    CHECK_EQ(nest_run(token_cancel_root, NULL), 0);
}

static int get_and_release(void *arg) {
    (void)arg;
    nest_token *t = nest_token_get();
    nest_token *t2 = nest_token_get();
    CHECK(t == t2);
    nest_token_release(t);
    nest_token_release(t2);
    return nest_sleep_forever();
}

/* Once every token reference is released, deadlock detection is back. */
NEST_TEST(deadlock_detected_once_tokens_are_released) {
    nest_run_options o;
    nest_run_options_init(&o);
    o.quiet = 1;
    CHECK_EQ(nest_run_opts(get_and_release, NULL, &o), NEST_EDEADLOCK);
}

static nest_event runner_started;

static int sleep_in_runtime(void *arg) {
    (void)arg;
    nest_event_set(&runner_started);
    return nest_sleep_forever();
}

static void *call_forever(void *arg) {
    (void)arg;
    call_rc = nest_token_run(tok, sleep_in_runtime, NULL, &call_result);
    return NULL;
}

static int runner_outlives_root(void *arg) {
    (void)arg;
    nest_event_init(&runner_started);
    tok = nest_token_get();
    CHECK_EQ(pthread_create(&caller, NULL, call_forever, NULL), 0);
    CHECK_EQ(nest_event_wait(&runner_started), 0);
    nest_token_release(tok);
    return 7; /* the runner still sleeps */
}

/* A runner still running when the root task returns is cancelled. */
NEST_TEST(token_runner_outliving_the_root_task_is_cancelled) {
    CHECK_EQ(nest_run(runner_outlives_root, NULL), 7);
    CHECK_EQ(pthread_join(caller, NULL), 0);
    CHECK_EQ(call_rc, 0);
    CHECK_EQ(call_result, -ECANCELED);
}

/* ---- arguments --------------------------------------------------------- */

static int bad_args(void *arg) {
    (void)arg;
    CHECK_EQ(nest_to_thread(NULL, NULL, NULL, 0), -EINVAL);
    CHECK_EQ(nest_to_thread(job, NULL, NULL, 0x100), -EINVAL);
    return 0;
}

NEST_TEST(invalid_arguments_are_einval) {
    CHECK_EQ(nest_run(bad_args, NULL), 0);
    CHECK_EQ(run_with_limit(bad_args, -1), -EINVAL);
}

NEST_TEST_ABORTS(to_thread_outside_a_task_aborts, "nest_to_thread") {
    nest_to_thread(job, NULL, NULL, 0);
}
