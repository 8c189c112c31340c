/*
 * test/test_guest.c - guest mode and the plain-C bridge (nest/guest.h),
 * driven by a real host ev_run() on a loop the test owns.
 *
 * Covers: the root task and its children run from the host's loop and the
 * completion callback gets the root's result once, after which the loop is
 * left with nothing of nest's (ev_run returns); host watchers and guest
 * tasks talk through pipes in both directions; the mock clock (autojump 0
 * and a real-time threshold) and the real clock move sleeping guests; a
 * guest waiting for nothing keeps nothing alive, and nest_guest_cancel
 * ends it; thread jobs keep the host's loop alive until they complete; two
 * guests share one loop; nest_guest_call from host code, before ev_run and
 * from a host callback, and when the run ends under it; a bridge call that
 * nothing can finish is a deadlock; argument checks; out of memory; misuse
 * from inside a task aborts.
 *
 * Every wait on the real clock here is a lower bound that the guest itself
 * decides (a sleep ends, a pipe fills), never a wall-clock assertion.
 */
#define _GNU_SOURCE
#include <ev.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "nest.h"
#include "support.h"

/* ---- helpers ------------------------------------------------------------- */

struct done_rec {
    int calls;
    int rc;
};

static void on_done(void *ud, int rc) {
    struct done_rec *d = ud;
    d->calls++;
    d->rc = rc;
}

static nest_run_options mock_opts(nest_time autojump) {
    nest_run_options o;
    nest_run_options_init(&o);
    o.clock = NEST_CLOCK_MOCK;
    o.autojump_threshold = autojump;
    o.quiet = 1;
    return o;
}

/* Starts fn as a guest on a new loop, runs the loop until nothing is left
 * and returns the completion record's rc (checking it came exactly once). */
static int run_guest(nest_fn fn, void *arg, const nest_run_options *o) {
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct done_rec d = {0, 0};
    CHECK_EQ(nest_guest_start(loop, fn, arg, o, on_done, &d, NULL), 0);
    CHECK_EQ(d.calls, 0); /* nothing runs before the host turns its loop */
    ev_run(loop, 0);
    CHECK_EQ(d.calls, 1);
    ev_loop_destroy(loop);
    return d.rc;
}

static int child(void *arg) {
    note("child%d", (int)(intptr_t)arg);
    CHECK_EQ(nest_sleep(NEST_MSEC(10 * (int)(intptr_t)arg)), 0);
    note("child%d@%lld", (int)(intptr_t)arg, ms());
    return 0;
}

static int root_with_children(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    for (intptr_t i = 1; i <= 3; i++) CHECK_EQ(nest_spawn(&n, child, (void *)i), 0);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    return 42;
}

/* ---- the basics ---------------------------------------------------------- */

NEST_TEST(root_and_children_run_on_the_host_loop) {
    events[0] = 0;
    nest_run_options o = mock_opts(0);
    CHECK_EQ(run_guest(root_with_children, NULL, &o), 42);
    CHECK_STREQ(events, "child1 child2 child3 child1@10 child2@20 child3@30");
}

static int sleep_real(void *arg) {
    (void)arg;
    nest_time t0 = nest_now();
    CHECK_EQ(nest_sleep(NEST_MSEC(2)), 0);
    CHECK(nest_now() - t0 >= NEST_MSEC(2)); /* the guest's timer ended the sleep */
    return 7;
}

NEST_TEST(real_clock_sleep_is_driven_by_a_host_timer) {
    CHECK_EQ(run_guest(sleep_real, NULL, NULL), 7);
}

static int sleep_long(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(3600)), 0);
    return (int)(nest_now() / NEST_SEC(1));
}

NEST_TEST(mock_clock_autojump_after_a_real_time_threshold) {
    nest_run_options o = mock_opts(NEST_MSEC(1));
    CHECK_EQ(run_guest(sleep_long, NULL, &o), 3600);
}

NEST_TEST(rejects_bad_arguments) {
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct ev_loop *other = ev_loop_new(EVFLAG_AUTO);
    nest_guest *g = (nest_guest *)&g;
    CHECK_EQ(nest_guest_start(NULL, sleep_long, NULL, NULL, NULL, NULL, &g), -EINVAL);
    CHECK(g == NULL);
    CHECK_EQ(nest_guest_start(loop, NULL, NULL, NULL, NULL, NULL, NULL), -EINVAL);
    nest_run_options o;
    nest_run_options_init(&o);
    o.loop = other;
    CHECK_EQ(nest_guest_start(loop, sleep_long, NULL, &o, NULL, NULL, NULL), -EINVAL);
    o.loop = NULL;
    o.clock = 99;
    CHECK_EQ(nest_guest_start(loop, sleep_long, NULL, &o, NULL, NULL, NULL), -EINVAL);
    CHECK_EQ(nest_guest_call(NULL, sleep_long, NULL, NULL), -EINVAL);
    CHECK_EQ(ev_run(loop, EVRUN_NOWAIT), 0); /* nothing was left on the loop */
    ev_loop_destroy(other);
    ev_loop_destroy(loop);
}

/* ---- host and guest talk through pipes ------------------------------------ */

struct duplex {
    int to_host[2];  /* guest writes, host's ev_io reads */
    int to_guest[2]; /* host writes back, guest reads */
    ev_io w;
    int host_saw;
};

static void host_echo_cb(struct ev_loop *loop, ev_io *w, int revents) {
    (void)revents;
    struct duplex *d = w->data;
    char c;
    CHECK_EQ(read(d->to_host[0], &c, 1), 1);
    d->host_saw++;
    c = (char)(c + 1); /* the host's answer: the next letter */
    CHECK_EQ(write(d->to_guest[1], &c, 1), 1);
    if (d->host_saw == 3) ev_io_stop(loop, w);
}

static int guest_talks(void *arg) {
    struct duplex *d = arg;
    for (char c = 'a'; c < 'd'; c++) {
        CHECK_EQ(write(d->to_host[1], &c, 1), 1);
        CHECK_EQ(nest_wait_readable(d->to_guest[0]), 0);
        char r;
        CHECK_EQ(read(d->to_guest[0], &r, 1), 1);
        note("%c", r);
    }
    return 0;
}

NEST_TEST(host_watchers_and_guest_tasks_talk_both_ways) {
    events[0] = 0;
    struct duplex d = {.host_saw = 0};
    CHECK_EQ(pipe(d.to_host), 0);
    CHECK_EQ(pipe(d.to_guest), 0);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ev_io_init(&d.w, host_echo_cb, d.to_host[0], EV_READ);
    d.w.data = &d;
    ev_io_start(loop, &d.w);
    struct done_rec rec = {0, 0};
    CHECK_EQ(nest_guest_start(loop, guest_talks, &d, NULL, on_done, &rec, NULL), 0);
    ev_run(loop, 0);
    CHECK_EQ(rec.calls, 1);
    CHECK_EQ(rec.rc, 0);
    CHECK_EQ(d.host_saw, 3);
    CHECK_STREQ(events, "b c d");
    ev_loop_destroy(loop);
    for (int i = 0; i < 2; i++) {
        close(d.to_host[i]);
        close(d.to_guest[i]);
    }
}

/* ---- a guest waiting for nothing; cancelling it ---------------------------- */

static int wait_forever(void *arg) {
    nest_event *e = arg;
    int rc = nest_event_wait(e); /* nobody sets it */
    note("woke:%s", nest_err_name(rc));
    return rc;
}

NEST_TEST(a_stuck_guest_keeps_nothing_alive_and_cancel_ends_it) {
    events[0] = 0;
    nest_event e;
    nest_event_init(&e);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct done_rec d = {0, 0};
    nest_guest *g;
    CHECK_EQ(nest_guest_start(loop, wait_forever, &e, NULL, on_done, &d, &g), 0);
    ev_run(loop, 0); /* returns: the guest waits for nothing the loop has */
    CHECK_EQ(d.calls, 0);
    CHECK_STREQ(events, "");
    nest_guest_cancel(g);
    nest_guest_cancel(g); /* idempotent */
    ev_run(loop, 0);
    CHECK_EQ(d.calls, 1);
    CHECK_EQ(d.rc, -ECANCELED);
    CHECK_STREQ(events, "woke:ECANCELED");
    ev_loop_destroy(loop);
}

static int sleep_hour_rc(void *arg) {
    (void)arg;
    return nest_sleep(NEST_SEC(3600));
}

static void cancel_from_timer(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop;
    (void)revents;
    nest_guest_cancel(w->data);
}

NEST_TEST(a_host_callback_can_cancel_the_guest) {
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    nest_run_options o = mock_opts(NEST_FOREVER);
    struct done_rec d = {0, 0};
    nest_guest *g;
    CHECK_EQ(nest_guest_start(loop, sleep_hour_rc, NULL, &o, on_done, &d, &g), 0);
    ev_timer t;
    ev_timer_init(&t, cancel_from_timer, 0.001, 0.);
    t.data = g;
    ev_timer_start(loop, &t);
    ev_run(loop, 0);
    CHECK_EQ(d.calls, 1);
    CHECK_EQ(d.rc, -ECANCELED); /* the mock clock never moved: only the cancel ended it */
    ev_loop_destroy(loop);
}

/* ---- worker threads --------------------------------------------------------- */

static int slow_job(void *arg) {
    int *fds = arg;
    char c;
    /* Blocks until the guest's other task writes: the host's loop must
     * stay alive (and the other task running) while the job waits. */
    return read(fds[0], &c, 1) == 1 ? c : -1;
}

static int writer(void *arg) {
    int *fds = arg;
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    char c = 'x';
    CHECK_EQ(write(fds[1], &c, 1), 1);
    return 0;
}

static int root_with_thread(void *arg) {
    int fds[2];
    (void)arg;
    CHECK_EQ(pipe(fds), 0);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, writer, fds), 0);
    int result = 0;
    CHECK_EQ(nest_to_thread(slow_job, fds, &result, 0), 0);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    close(fds[0]);
    close(fds[1]);
    return result;
}

NEST_TEST(a_thread_job_keeps_the_host_loop_alive) {
    CHECK_EQ(run_guest(root_with_thread, NULL, NULL), 'x');
}

/* ---- two guests on one loop -------------------------------------------------- */

static int ticker(void *arg) {
    for (int i = 0; i < 3; i++) {
        note("%s%d", (const char *)arg, i);
        CHECK_EQ(nest_sleep(NEST_MSEC(1)), 0);
    }
    return ((const char *)arg)[0];
}

NEST_TEST(two_guests_share_one_loop) {
    events[0] = 0;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct done_rec a = {0, 0}, b = {0, 0};
    CHECK_EQ(nest_guest_start(loop, ticker, "a", NULL, on_done, &a, NULL), 0);
    CHECK_EQ(nest_guest_start(loop, ticker, "b", NULL, on_done, &b, NULL), 0);
    ev_run(loop, 0);
    CHECK_EQ(a.calls, 1);
    CHECK_EQ(b.calls, 1);
    CHECK_EQ(a.rc, 'a');
    CHECK_EQ(b.rc, 'b');
    /* Both ran: each logged its three ticks, in its own order. */
    CHECK(strstr(events, "a0") && strstr(events, "a2") && strstr(events, "b0") &&
          strstr(events, "b2"));
    ev_loop_destroy(loop);
}

/* ---- the plain-C bridge -------------------------------------------------------- */

static int bridged(void *arg) {
    CHECK(nest_current_task() != NULL); /* fn runs in a task */
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, child, (void *)(intptr_t)1), 0);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    return (int)(intptr_t)arg * 2;
}

static int wait_for_event(void *arg) {
    nest_event *e = arg;
    CHECK_EQ(nest_event_wait(e), 0);
    note("root-woke@%lld", ms());
    return 5;
}

static int set_event(void *arg) {
    nest_event_set(arg);
    return 0;
}

NEST_TEST(guest_call_from_host_code_before_ev_run) {
    events[0] = 0;
    nest_event e;
    nest_event_init(&e);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    nest_run_options o = mock_opts(0);
    struct done_rec d = {0, 0};
    nest_guest *g;
    CHECK_EQ(nest_guest_start(loop, wait_for_event, &e, &o, on_done, &d, &g), 0);
    int result = 0;
    CHECK_EQ(nest_guest_call(g, bridged, (void *)(intptr_t)21, &result), 0);
    CHECK_EQ(result, 42);
    CHECK_STREQ(events, "child1 child1@10");
    CHECK_EQ(d.calls, 0); /* the root still waits */
    CHECK_EQ(nest_guest_call(g, set_event, &e, NULL), 0);
    ev_run(loop, 0);
    CHECK_EQ(d.calls, 1);
    CHECK_EQ(d.rc, 5);
    CHECK_STREQ(events, "child1 child1@10 root-woke@10");
    ev_loop_destroy(loop);
}

struct from_cb {
    nest_guest *g;
    int result;
    int rc;
};

static void call_from_timer(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop;
    (void)revents;
    struct from_cb *f = w->data;
    f->rc = nest_guest_call(f->g, bridged, (void *)(intptr_t)4, &f->result);
}

NEST_TEST(guest_call_from_a_host_callback) {
    events[0] = 0;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    nest_run_options o = mock_opts(0);
    struct done_rec d = {0, 0};
    struct from_cb f = {NULL, 0, -1};
    nest_event e;
    nest_event_init(&e);
    CHECK_EQ(nest_guest_start(loop, wait_for_event, &e, &o, on_done, &d, &f.g), 0);
    ev_timer t;
    ev_timer_init(&t, call_from_timer, 0., 0.);
    t.data = &f;
    ev_timer_start(loop, &t);
    ev_run(loop, 0); /* the timer's call runs; then the root still waits */
    CHECK_EQ(f.rc, 0);
    CHECK_EQ(f.result, 8);
    CHECK_EQ(d.calls, 0);
    CHECK_EQ(nest_guest_call(f.g, set_event, &e, NULL), 0);
    ev_run(loop, 0);
    CHECK_EQ(d.calls, 1);
    CHECK_EQ(d.rc, 5);
    ev_loop_destroy(loop);
}

static void count_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop;
    (void)revents;
    ++*(int *)w->data;
}

static int yields_a_little(void *arg) {
    for (int i = 0; i < 200; i++) CHECK_EQ(nest_checkpoint(), 0); /* > one slice */
    return (int)(intptr_t)arg;
}

NEST_TEST(a_call_that_never_waits_runs_no_host_callback) {
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    int fired = 0;
    ev_timer t;
    ev_timer_init(&t, count_cb, 0., 0.); /* due at once: any loop turn runs it */
    t.data = &fired;
    ev_timer_start(loop, &t);
    nest_event e;
    nest_event_init(&e);
    struct done_rec d = {0, 0};
    nest_guest *g;
    nest_run_options o = mock_opts(0);
    CHECK_EQ(nest_guest_start(loop, wait_for_event, &e, &o, on_done, &d, &g), 0);
    int result = 0;
    CHECK_EQ(nest_guest_call(g, yields_a_little, (void *)(intptr_t)9, &result), 0);
    CHECK_EQ(result, 9);
    CHECK_EQ(fired, 0);
    /* Setting the event lets the root finish in the same slice: the run
     * ends, and the completion callback runs, inside this call. */
    CHECK_EQ(nest_guest_call(g, set_event, &e, NULL), 0);
    CHECK_EQ(fired, 0);
    CHECK_EQ(d.calls, 1);
    CHECK_EQ(d.rc, 5);
    ev_run(loop, 0);
    CHECK_EQ(fired, 1);
    ev_loop_destroy(loop);
}

static int bridged_sleeps(void *arg) {
    (void)arg;
    int rc = nest_sleep(NEST_SEC(60));
    note("bridged:%s", nest_err_name(rc));
    return rc;
}

static int returns_at_once(void *arg) {
    (void)arg;
    note("root-done");
    return 3;
}

NEST_TEST(the_run_ending_cancels_a_bridge_call) {
    events[0] = 0;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    nest_run_options o = mock_opts(NEST_FOREVER);
    struct done_rec d = {0, 0};
    nest_guest *g;
    CHECK_EQ(nest_guest_start(loop, returns_at_once, NULL, &o, on_done, &d, &g), 0);
    int result = 0;
    CHECK_EQ(nest_guest_call(g, bridged_sleeps, NULL, &result), 0);
    CHECK_EQ(result, -ECANCELED);
    CHECK_EQ(d.calls, 1); /* the run ended inside the call */
    CHECK_EQ(d.rc, 3);
    CHECK_STREQ(events, "root-done bridged:ECANCELED");
    ev_loop_destroy(loop);
}

static int wait_event_rc(void *arg) { return nest_event_wait(arg); }

NEST_TEST(a_bridge_call_nothing_can_finish_is_a_deadlock) {
    nest_event root_e, call_e;
    nest_event_init(&root_e);
    nest_event_init(&call_e);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    nest_run_options o = mock_opts(NEST_FOREVER);
    struct done_rec d = {0, 0};
    nest_guest *g;
    CHECK_EQ(nest_guest_start(loop, wait_event_rc, &root_e, &o, on_done, &d, &g), 0);
    int result = 0;
    CHECK_EQ(nest_guest_call(g, wait_event_rc, &call_e, &result), 0);
    CHECK_EQ(result, -ECANCELED); /* the run was cancelled to break the deadlock */
    ev_run(loop, 0);
    CHECK_EQ(d.calls, 1);
    CHECK_EQ(d.rc, NEST_EDEADLOCK);
    ev_loop_destroy(loop);
}

/* ---- out of memory -------------------------------------------------------------- */

NEST_TEST(start_fails_cleanly_when_out_of_memory) {
    /* Fail the first allocation, then the second, ... until start succeeds:
     * every failure must return -ENOMEM and leave nothing allocated. */
    for (long k = 1;; k++) {
        struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
        memset(&mem, 0, sizeof mem);
        mem.fail_from = k;
        nest_set_allocator(counting_alloc, NULL);
        nest_run_options o = mock_opts(0);
        struct done_rec d = {0, 0};
        int rc = nest_guest_start(loop, root_with_children, NULL, &o, on_done, &d, NULL);
        mem.fail_from = 0;
        if (rc == 0) ev_run(loop, 0);
        nest_set_allocator(NULL, NULL);
        ev_loop_destroy(loop);
        CHECK_EQ(mem.live_blocks, 0);
        CHECK_EQ(mem.live_bytes, 0);
        if (rc == 0) {
            CHECK_EQ(d.calls, 1);
            CHECK(k > 1);
            break;
        }
        CHECK_EQ(rc, -ENOMEM);
    }
}

/* ---- misuse ---------------------------------------------------------------------- */

static int start_inside_task(void *arg) {
    (void)arg;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    nest_guest_start(loop, sleep_long, NULL, NULL, NULL, NULL, NULL);
    return 0;
}

NEST_TEST(starting_a_guest_inside_a_task_aborts) {
    static const char *const texts[] = {"nest_guest_start() called from inside a task",
                                        "rule: guest-mode calls are made by the host", NULL};
    expect_abort(start_inside_task, texts);
}

static int call_inside_task(void *arg) {
    (void)arg;
    nest_guest_call((nest_guest *)&arg, sleep_long, NULL, NULL);
    return 0;
}

NEST_TEST(a_bridge_call_inside_a_task_aborts) {
    static const char *const texts[] = {"nest_guest_call() called from inside a task", NULL};
    expect_abort(call_inside_task, texts);
}

/* ---- a socket stream's parked watcher keeps nothing alive ---------------------- */

struct parked {
    int sp[2];
    nest_socket_stream s;
    nest_event never;
};

static int peer_writes(void *arg) {
    struct parked *p = arg;
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    CHECK_EQ(write(p->sp[1], "k", 1), 1);
    return 0;
}

static int receive_then_wait(void *arg) {
    struct parked *p = arg;
    CHECK_EQ(nest_socket_stream_init(&p->s, p->sp[0]), 0);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, peer_writes, p), 0);
    char c;
    CHECK_EQ(nest_stream_receive_some(&p->s.stream, &c, 1), 1); /* waits: parks the watcher */
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    int rc = nest_event_wait(&p->never); /* the stream stays open meanwhile */
    nest_stream_close(&p->s.stream);
    return rc;
}

static void watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)revents;
    ++*(int *)w->data;
    ev_break(loop, EVBREAK_ALL);
}

NEST_TEST(an_open_stream_between_waits_keeps_the_host_loop_from_nothing) {
    struct parked p;
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p.sp), 0);
    nest_event_init(&p.never);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    /* An unreferenced watchdog: it keeps nothing alive itself, but fires
     * if something else wrongly does. */
    int barked = 0;
    ev_timer dog;
    ev_timer_init(&dog, watchdog_cb, 5., 0.);
    dog.data = &barked;
    ev_timer_start(loop, &dog);
    ev_unref(loop);
    struct done_rec d = {0, 0};
    nest_guest *g;
    CHECK_EQ(nest_guest_start(loop, receive_then_wait, &p, NULL, on_done, &d, &g), 0);
    ev_run(loop, 0); /* returns once the guest waits only for the event */
    CHECK_EQ(barked, 0);
    CHECK_EQ(d.calls, 0);
    nest_guest_cancel(g);
    ev_run(loop, 0);
    CHECK_EQ(d.calls, 1);
    CHECK_EQ(d.rc, -ECANCELED);
    ev_ref(loop);
    ev_timer_stop(loop, &dog);
    ev_loop_destroy(loop);
    close(p.sp[1]);
}

/* ---- tokens from the host's own thread ----------------------------------------- */

static nest_token *guest_token;

static int hand_out_token(void *arg) {
    guest_token = nest_token_get();
    CHECK(guest_token != NULL);
    return nest_event_wait(arg);
}

NEST_TEST(a_token_call_from_the_host_thread_is_edeadlk_not_a_hang) {
    nest_event e;
    nest_event_init(&e);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct done_rec d = {0, 0};
    nest_guest *g;
    CHECK_EQ(nest_guest_start(loop, hand_out_token, &e, NULL, on_done, &d, &g), 0);
    ev_run(loop, EVRUN_NOWAIT); /* the root task runs and hands out the token */
    CHECK(guest_token != NULL);
    /* The host's thread runs the guest: waiting here for the guest would
     * wait for itself. */
    CHECK_EQ(nest_token_run(guest_token, set_event, &e, NULL), -EDEADLK);
    CHECK_EQ(nest_token_cancel(guest_token, NULL), -EINVAL);
    nest_token_release(guest_token);
    CHECK_EQ(nest_guest_call(g, set_event, &e, NULL), 0);
    ev_run(loop, 0);
    CHECK_EQ(d.calls, 1);
    CHECK_EQ(d.rc, 0);
    ev_loop_destroy(loop);
}

/* ---- the mock clock's autojump under a busy host --------------------------------- */

struct ticking {
    ev_timer t;
    int ticks;
    int ticks_at_done;
    struct done_rec d;
};

static void tick_count_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop;
    (void)revents;
    ((struct ticking *)w->data)->ticks++;
}

static void done_stop_ticking(void *ud, int rc) {
    struct ticking *k = ud;
    k->d.calls++;
    k->d.rc = rc;
    k->ticks_at_done = k->ticks;
    ev_timer_stop(EV_DEFAULT, &k->t); /* the test's loop is the default one */
}

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

NEST_TEST(autojump_is_not_postponed_by_a_busy_host) {
    /* The host turns its loop every 2 ms; the guest's threshold is 30 ms.
     * The jump must come once the guest has been quiet for 30 ms - not
     * never (each host iteration restarting the countdown: the test then
     * times out), and not before the threshold. */
    struct ev_loop *loop = EV_DEFAULT;
    struct ticking k;
    memset(&k, 0, sizeof k);
    ev_timer_init(&k.t, tick_count_cb, 0.002, 0.002);
    k.t.data = &k;
    ev_timer_start(loop, &k.t);
    nest_run_options o = mock_opts(NEST_MSEC(30));
    long long t0 = mono_ms();
    CHECK_EQ(nest_guest_start(loop, sleep_long, NULL, &o, done_stop_ticking, &k, NULL), 0);
    ev_run(loop, 0);
    CHECK_EQ(k.d.calls, 1);
    CHECK_EQ(k.d.rc, 3600);
    /* A lower bound the code guarantees (the jump waits for the threshold),
     * not a timing guess; and the host really was turning its loop. */
    CHECK(mono_ms() - t0 >= 30);
    CHECK(k.ticks_at_done >= 2);
}

/* ---- an abandoned thread job is waited for from the host's loop ----------------- */

struct slow_job_ctl {
    int started[2]; /* the job tells the host it runs */
    int release[2]; /* the host lets it finish */
    int job_done;
    nest_guest *g;
    ev_io on_started;
    ev_timer later;
};

static int abandoned_job(void *arg) {
    struct slow_job_ctl *c = arg;
    char x = 's';
    CHECK_EQ(write(c->started[1], &x, 1), 1);
    CHECK_EQ(read(c->release[0], &x, 1), 1); /* until the host's timer writes */
    c->job_done = 1;
    return 0;
}

static int abandon_a_job(void *arg) {
    int rc = nest_to_thread(abandoned_job, arg, NULL, NEST_THREAD_ABANDON);
    return rc == -ECANCELED ? 11 : rc; /* the host cancels the run meanwhile */
}

static void release_job_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop;
    (void)revents;
    struct slow_job_ctl *c = w->data;
    CHECK_EQ(write(c->release[1], "x", 1), 1);
}

static void job_started_cb(struct ev_loop *loop, ev_io *w, int revents) {
    (void)revents;
    struct slow_job_ctl *c = w->data;
    char x;
    CHECK_EQ(read(c->started[0], &x, 1), 1);
    ev_io_stop(loop, w);
    nest_guest_cancel(c->g); /* the guest abandons the running job */
    ev_timer_init(&c->later, release_job_cb, 0.005, 0.);
    c->later.data = c;
    ev_timer_start(loop, &c->later);
}

NEST_TEST(the_run_ends_after_its_abandoned_jobs_without_blocking_the_host) {
    struct slow_job_ctl c;
    memset(&c, 0, sizeof c);
    CHECK_EQ(pipe(c.started), 0);
    CHECK_EQ(pipe(c.release), 0);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ev_io_init(&c.on_started, job_started_cb, c.started[0], EV_READ);
    c.on_started.data = &c;
    ev_io_start(loop, &c.on_started);
    struct done_rec d = {0, 0};
    CHECK_EQ(nest_guest_start(loop, abandon_a_job, &c, NULL, on_done, &d, &c.g), 0);
    /* The host's timer is what lets the job finish: had the guest joined
     * its worker inside a host callback once its root returned, the timer
     * could never fire. */
    ev_run(loop, 0);
    CHECK_EQ(d.calls, 1);
    CHECK_EQ(d.rc, 11);
    CHECK_EQ(c.job_done, 1);
    ev_loop_destroy(loop);
    for (int i = 0; i < 2; i++) {
        close(c.started[i]);
        close(c.release[i]);
    }
}
