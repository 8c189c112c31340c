/*
 * test/test_fd.c - waiting for file descriptors (nest/fd.h).
 *
 * Covers: nest_wait_readable()/nest_wait_writable() block until another task
 * makes the fd ready, are checkpoints (yield even when ready, fail at once
 * when cancelled), allow one waiter per fd and direction (-EBUSY), remove
 * their watcher when cancelled, end with NEST_ECLOSED on
 * nest_notify_closing(), respect deadlines (autojump still works while a
 * task waits on an fd), reject negative fds, and report EOF as readable.
 *
 * Every case uses non-blocking pipes or socket pairs and the mock clock with
 * autojump 0; no case depends on real time.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "support.h"
#include "nest.h"

/* ---- helpers ----------------------------------------------------------- */

/* Runs the tasks of `children` (which ignore their arg) as children of the
 * root task, spawned in order, on the mock clock with autojump 0. */
static void run_children(void) { CHECK_EQ(run_mock(spawn_children, NULL), 0); }

static int fds[2]; /* the pipe or socket pair of the current case */

static void make_pipe(void) { CHECK_EQ(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0); }

static void make_socketpair(void) {
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
}

/* Writes to fd until it would block. */
static void fill(int fd) {
    static char buf[65536];
    for (;;) {
        ssize_t r = write(fd, buf, sizeof buf);
        if (r < 0) {
            CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
            return;
        }
    }
}

/* Reads fd until it would block; returns the byte count. */
static long drain(int fd) {
    static char buf[65536];
    long total = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r <= 0) {
            CHECK(r == 0 || errno == EAGAIN || errno == EWOULDBLOCK);
            return total;
        }
        total += r;
    }
}

/* ---- readiness -------------------------------------------------------- */

static int reader(void *arg) {
    (void)arg;
    note("R waits");
    int rc = nest_wait_readable(fds[0]);
    char c = 0;
    ssize_t r = read(fds[0], &c, 1);
    note("R ready %d read %d '%c' @%lld", rc, (int)r, r == 1 ? c : '?', ms());
    return 0;
}

static int writer_after_quiet(void *arg) {
    (void)arg;
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0); /* the reader is blocked now */
    note("W writes");
    CHECK_EQ(write(fds[1], "x", 1), 1);
    return 0;
}

NEST_TEST(wait_readable_blocks_until_data_is_written) {
    make_pipe();
    children[0] = reader;
    children[1] = writer_after_quiet;
    run_children();
    CHECK_STREQ(events, "R waits W writes R ready 0 read 1 'x' @0");
}

static int blocked_writer(void *arg) {
    (void)arg;
    fill(fds[1]);
    note("W waits");
    int rc = nest_wait_writable(fds[1]);
    ssize_t r = write(fds[1], "y", 1);
    note("W ready %d wrote %d", rc, (int)r);
    return 0;
}

static int drainer(void *arg) {
    (void)arg;
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    note("D drains %d", drain(fds[0]) > 0);
    return 0;
}

NEST_TEST(wait_writable_on_full_pipe_unblocks_after_drain) {
    make_pipe();
    children[0] = blocked_writer;
    children[1] = drainer;
    run_children();
    CHECK_STREQ(events, "W waits D drains 1 W ready 0 wrote 1");
}

static int ready_reader(void *arg) {
    (void)arg;
    note("R waits");
    int rc = nest_wait_readable(fds[0]);
    note("R ready %d", rc);
    return 0;
}

static int note_b(void *arg) {
    (void)arg;
    note("B");
    return 0;
}

/* The fd is readable from the start, yet the wait yields: it is a
 * checkpoint. */
NEST_TEST(wait_on_ready_fd_still_yields) {
    make_pipe();
    CHECK_EQ(write(fds[1], "x", 1), 1);
    children[0] = ready_reader;
    children[1] = note_b;
    run_children();
    CHECK_STREQ(events, "R waits B R ready 0");
}

static int cancelled_waits(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    int r1 = nest_wait_readable(fds[0]); /* readable, but cancelled first */
    int r2 = nest_wait_writable(fds[1]);
    note("A %d %d", r1, r2);
    CHECK_EQ(nest_scope_exit(&s, -ECANCELED), 0);
    int r3 = nest_wait_readable(fds[0]);
    note("A after %d", r3);
    return 0;
}

/* In a cancelled scope the waits fail at once, without yielding to the
 * sibling. */
NEST_TEST(wait_in_cancelled_scope_fails_at_once) {
    make_pipe();
    CHECK_EQ(write(fds[1], "x", 1), 1);
    children[0] = cancelled_waits;
    children[1] = note_b;
    run_children();
    CHECK_STREQ(events, "A -125 -125 B A after 0");
}

static int quiet_waiter(void *arg) {
    (void)arg;
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    note("W woke");
    return 0;
}

/* Ready I/O is not a quiet point: the reader whose fd is ready runs before
 * nest_wait_all_tasks_blocked() returns. */
NEST_TEST(wait_all_tasks_blocked_lets_ready_io_run_first) {
    make_pipe();
    CHECK_EQ(write(fds[1], "x", 1), 1);
    children[0] = ready_reader;
    children[1] = quiet_waiter;
    run_children();
    CHECK_STREQ(events, "R waits R ready 0 W woke");
}

/* ---- one waiter per fd and direction ---------------------------------- */

static int second_waiter(void *arg) {
    (void)arg;
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    int rc = nest_wait_readable(fds[0]);
    note("B busy %d", rc);
    rc = nest_wait_writable(fds[0]); /* the other direction is free */
    note("B writable %d", rc);
    CHECK_EQ(write(fds[1], "x", 1), 1);
    note("B wrote");
    return 0;
}

NEST_TEST(second_waiter_same_fd_and_direction_gets_ebusy) {
    make_socketpair();
    children[0] = ready_reader;
    children[1] = second_waiter;
    run_children();
    CHECK_STREQ(events, "R waits B busy -16 B writable 0 B wrote R ready 0");
}

static int wait_cancelled_then_again(void *arg) {
    (void)arg;
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(1));
    int rc = nest_wait_readable(fds[0]);
    note("A %d @%lld", rc, ms());
    note("exit %d", nest_scope_exit(&s, rc));
    rc = nest_wait_readable(fds[0]); /* not -EBUSY: the watcher was removed */
    note("A again %d @%lld", rc, ms());
    return 0;
}

static int write_at_2s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(2)), 0);
    note("B writes @%lld", ms());
    CHECK_EQ(write(fds[1], "x", 1), 1);
    return 0;
}

NEST_TEST(cancelled_wait_removes_its_watcher) {
    make_pipe();
    children[0] = wait_cancelled_then_again;
    children[1] = write_at_2s;
    run_children();
    CHECK_STREQ(events, "A -125 @1000 exit 0 B writes @2000 A again 0 @2000");
}

/* ---- nest_notify_closing ---------------------------------------------- */

static int closing_reader(void *arg) {
    (void)arg;
    int rc = nest_wait_readable(fds[0]);
    note("R %d", rc);
    return 0;
}

static int closing_writer(void *arg) {
    (void)arg;
    int rc = nest_wait_writable(fds[0]);
    note("W %d", rc);
    return 0;
}

static int closer(void *arg) {
    (void)arg;
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    int old = fds[0];
    nest_notify_closing(old);
    CHECK_EQ(close(old), 0);
    note("C closed");
    /* The fd number is forgotten: a new pipe (which usually gets the same
     * number) can be waited on normally. */
    int p[2];
    CHECK_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    CHECK_EQ(write(p[1], "x", 1), 1);
    int rc = nest_wait_readable(p[0]);
    note("new %d", rc);
    close(p[0]);
    close(p[1]);
    return 0;
}

/* Both directions' waiters wake with NEST_ECLOSED; notify_closing is not a
 * checkpoint (the closer goes on until its own wait). */
NEST_TEST(notify_closing_wakes_both_directions) {
    make_socketpair();
    fill(fds[0]); /* so that a writability waiter blocks */
    children[0] = closing_reader;
    children[1] = closing_writer;
    children[2] = closer;
    run_children();
    /* The order of R and W among themselves is not specified. */
    if (strcmp(events, "C closed W -10001 R -10001 new 0") != 0)
        CHECK_STREQ(events, "C closed R -10001 W -10001 new 0");
}

/* ---- deadlines, bad fds, EOF ----------------------------------------- */

static int wait_silent_pipe_with_deadline(void *arg) {
    (void)arg;
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(5));
    int rc = nest_wait_readable(fds[0]);
    note("wait %d @%lld", rc, ms());
    rc = nest_scope_exit(&s, rc);
    note("exit %d caught %d", rc, nest_scope_cancelled_caught(&s));
    return 0;
}

/* A task waiting on an fd does not stop autojump: the deadline fires at
 * exactly 5 s and the move-on scope absorbs it. */
NEST_TEST(deadline_on_wait_readable_is_absorbed) {
    make_pipe();
    children[0] = wait_silent_pipe_with_deadline;
    run_children();
    CHECK_STREQ(events, "wait -125 @5000 exit 0 caught 1");
}

static int negative_fd(void *arg) {
    (void)arg;
    note("%d %d", nest_wait_readable(-1), nest_wait_writable(-1));
    return 0;
}

NEST_TEST(negative_fd_is_ebadf) {
    children[0] = negative_fd;
    run_children();
    CHECK_STREQ(events, "-9 -9");
}

static int eof_reader(void *arg) {
    (void)arg;
    int rc = nest_wait_readable(fds[0]);
    char c;
    ssize_t r = read(fds[0], &c, 1);
    note("R %d read %d", rc, (int)r);
    return 0;
}

static int close_writer_after_quiet(void *arg) {
    (void)arg;
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    CHECK_EQ(close(fds[1]), 0);
    note("W closed");
    return 0;
}

/* The writer's close (EOF) wakes a blocked reader, as readable. */
NEST_TEST(eof_reports_readable) {
    make_pipe();
    children[0] = eof_reader;
    children[1] = close_writer_after_quiet;
    run_children();
    CHECK_STREQ(events, "W closed R 0 read 0");
}

/* EOF already pending before the wait. */
NEST_TEST(eof_already_pending_reports_readable) {
    make_pipe();
    CHECK_EQ(close(fds[1]), 0);
    children[0] = eof_reader;
    run_children();
    CHECK_STREQ(events, "R 0 read 0");
}

/* ---- socket streams reuse their watchers (lib/evloop.c) ----------------- */

/* A socket stream's waits leave its watcher active ("parked") between
 * waits instead of re-registering the fd with the kernel each time.  These
 * cases pin down the safety rules of that: a new stream on a reused fd
 * number sets its watcher up afresh even if the old owner was closed
 * behind nest's back; a parked fd that becomes readable while nobody waits
 * does not make blocking polls return at once forever; and a parked
 * watcher keeps no ev_run alive. */

static nest_socket_stream ss_a, ss_b;
static int peer_a, peer_b; /* the other ends */

/* Makes a socket pair whose stream end is the fd number `want` (dup2). */
static void stream_on_number(nest_socket_stream *s, int *peer, int want) {
    int sp[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp), 0);
    if (want >= 0 && sp[0] != want) {
        CHECK_EQ(dup2(sp[0], want), want);
        close(sp[0]);
        sp[0] = want;
    }
    CHECK_EQ(nest_socket_stream_init(s, sp[0]), 0);
    *peer = sp[1];
}

static int receive_one(nest_socket_stream *s) {
    char c = 0;
    nest_scope sc;
    nest_fail_after(&sc, NEST_SEC(1)); /* mock clock: jumps if nothing ever comes */
    ssize_t n = nest_stream_receive_some(&s->stream, &c, 1);
    int rc = nest_scope_exit(&sc, n < 0 ? (int)n : 0);
    return rc < 0 ? rc : (n == 1 ? c : -1);
}

static int send_after_quiet(void *arg) {
    int fd = *(int *)arg;
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    char c = 'z';
    CHECK_EQ(write(fd, &c, 1), 1);
    return 0;
}

static int receive_on_b(void *arg) {
    (void)arg;
    note("b:%d", receive_one(&ss_b));
    return 0;
}

static int reused_number_root(void *arg) {
    (void)arg;
    /* Stream A waits once, so its watcher is parked under its fd number. */
    stream_on_number(&ss_a, &peer_a, -1);
    int number = nest_stream_socket(&ss_a.stream);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, send_after_quiet, &peer_a), 0);
    note("a:%d", receive_one(&ss_a));
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    /* Close A's fd behind nest's back (as closing outside a task would),
     * then give the same number to stream B and wait on it at once, before
     * any poll: B's first wait must register the new file. */
    CHECK_EQ(close(number), 0);
    close(peer_a);
    stream_on_number(&ss_b, &peer_b, number);
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, receive_on_b, NULL), 0);
    CHECK_EQ(nest_spawn(&n, send_after_quiet, &peer_b), 0);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    nest_stream_close(&ss_b.stream);
    close(peer_b);
    return 0;
}

NEST_TEST(a_new_stream_on_a_reused_fd_number_is_registered_afresh) {
    events[0] = 0;
    CHECK_EQ(run_mock(reused_number_root, NULL), 0);
    CHECK_STREQ(events, "a:122 b:122");
}

static int parked_then_data_root(void *arg) {
    (void)arg;
    stream_on_number(&ss_a, &peer_a, -1);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, send_after_quiet, &peer_a), 0);
    CHECK_EQ(receive_one(&ss_a), 'z');
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    /* A's watcher is parked; data arrives that nobody reads for a while. */
    char c = 'y';
    CHECK_EQ(write(peer_a, &c, 1), 1);
    nest_runtime_stats before, after;
    CHECK_EQ(nest_stats(&before), 0);
    CHECK_EQ(nest_sleep(NEST_MSEC(30)), 0); /* real clock: blocking polls */
    CHECK_EQ(nest_stats(&after), 0);
    /* One poll sees the parked fd ready and stops its watcher; the sleep
     * then blocks until its deadline.  A watcher left active would end
     * every blocking poll at once: thousands of polls in 30 ms. */
    note("polls<=4:%d", after.polls - before.polls <= 4);
    CHECK_EQ(receive_one(&ss_a), 'y'); /* and the stream still works */
    nest_stream_close(&ss_a.stream);
    close(peer_a);
    return 0;
}

NEST_TEST(a_parked_fd_with_unread_data_does_not_spin_the_loop) {
    events[0] = 0;
    CHECK_EQ(nest_run(parked_then_data_root, NULL), 0);
    CHECK_STREQ(events, "polls<=4:1");
}

/* The writable direction parks too: a sender blocked on a full socket
 * buffer, woken as the peer drains it, three times over. */
static int drain_after_quiet(void *arg) {
    int fd = *(int *)arg;
    for (int round = 0; round < 3; round++) {
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
        note("drained");
        drain(fd);
    }
    return 0;
}

/* lib/evloop.c, for tests: fd watcher starts so far in this runtime. */
uint64_t nest__loop_watch_starts(void);

static int blocked_sends_root(void *arg) {
    (void)arg;
    stream_on_number(&ss_a, &peer_a, -1);
    fill(nest_stream_socket(&ss_a.stream));
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, drain_after_quiet, &peer_a), 0);
    static char big[200000];
    uint64_t starts = nest__loop_watch_starts();
    for (int round = 0; round < 3; round++) {
        size_t sent = 0;
        /* More than the buffer holds: it blocks until the drainer runs. */
        CHECK_EQ(nest_stream_send_all(&ss_a.stream, big, sizeof big / 3, &sent), 0);
        note("sent");
        fill(nest_stream_socket(&ss_a.stream));
    }
    /* One start for three blocked sends: the watcher was parked and reused. */
    note("starts:%d", (int)(nest__loop_watch_starts() - starts));
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    nest_stream_close(&ss_a.stream);
    close(peer_a);
    return 0;
}

NEST_TEST(a_parked_writable_watcher_wakes_every_blocked_send) {
    events[0] = 0;
    CHECK_EQ(run_mock(blocked_sends_root, NULL), 0);
    CHECK_STREQ(events, "drained sent drained sent drained sent starts:1");
}

/* The readable direction: three blocking receives on one stream start its
 * watcher once. */
static int send_three_after_quiet(void *arg) {
    int fd = *(int *)arg;
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
        char c = (char)('a' + i);
        CHECK_EQ(write(fd, &c, 1), 1);
    }
    return 0;
}

static int three_receives_root(void *arg) {
    (void)arg;
    stream_on_number(&ss_a, &peer_a, -1);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, send_three_after_quiet, &peer_a), 0);
    uint64_t starts = nest__loop_watch_starts();
    for (int i = 0; i < 3; i++) note("%c", receive_one(&ss_a));
    note("starts:%d", (int)(nest__loop_watch_starts() - starts));
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    nest_stream_close(&ss_a.stream);
    close(peer_a);
    return 0;
}

NEST_TEST(a_parked_readable_watcher_is_reused_by_the_next_receive) {
    events[0] = 0;
    CHECK_EQ(run_mock(three_receives_root, NULL), 0);
    CHECK_STREQ(events, "a b c starts:1");
}
