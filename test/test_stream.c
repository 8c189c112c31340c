/*
 * test/test_stream.c - the stream interface (nest/stream.h), memory stream
 * pairs, socket streams over socketpair(2), and the conformance check
 * (nest/stream_check.h).
 *
 * Covers: the conformance check passes on memory pairs (default, tiny and
 * one-byte buffers) and on socket streams over a Unix socketpair, and fails
 * - with a message naming the broken rule - on deliberately broken streams;
 * a bounded memory buffer blocks the sender and a cancelled send reports
 * exactly the bytes that went out; a cancelled receive consumed nothing
 * (deadline on a stalled peer, mock clock); closing a stream under a blocked
 * task wakes it with NEST_ECLOSED even when the closer frees the stream at
 * once (ASan sees any later touch); send_eof in a cancelled scope sends no
 * EOF; socket streams never raise SIGPIPE; out of memory, a pair reports
 * -ENOMEM and allocates nothing.
 *
 * Every case runs on the mock clock with autojump 0.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "support.h"
#include "nest.h"
#include "nest/stream.h"
#include "nest/stream_check.h"

/* ---- helpers ------------------------------------------------------------- */

/* ---- the conformance check on memory pairs and socketpairs --------------- */

static nest_memory_stream ma, mb;
static size_t mem_capacity;

static int open_memory(void *arg, nest_stream **a, nest_stream **b) {
    (void)arg;
    int rc = nest_memory_stream_pair(&ma, &mb, mem_capacity);
    *a = &ma.stream;
    *b = &mb.stream;
    return rc;
}

static nest_socket_stream sa, sb;

static int open_socketpair(void *arg, nest_stream **a, nest_stream **b) {
    (void)arg;
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) return -errno;
    CHECK_EQ(nest_socket_stream_init(&sa, fds[0]), 0);
    CHECK_EQ(nest_socket_stream_init(&sb, fds[1]), 0);
    CHECK(fcntl(fds[0], F_GETFL) & O_NONBLOCK); /* init made it non-blocking */
    *a = &sa.stream;
    *b = &sb.stream;
    return 0;
}

static char check_msg[512];

static int run_check(void *arg) {
    return nest_stream_check(arg, check_msg, sizeof check_msg);
}

static void expect_conformance(int (*open_pair)(void *, nest_stream **, nest_stream **)) {
    nest_stream_check_options o = {open_pair, NULL, NULL, 0};
    int rc = run_mock(run_check, &o);
    if (rc != 0) fprintf(stderr, "%s (%s)\n", check_msg, nest_err_name(rc));
    CHECK_EQ(rc, 0);
    CHECK_STREQ(check_msg, "");
}

NEST_TEST(memory_pair_passes_conformance_check) {
    mem_capacity = 0;
    expect_conformance(open_memory);
}

NEST_TEST(memory_pair_with_tiny_buffer_passes_conformance_check) {
    mem_capacity = 7;
    expect_conformance(open_memory);
}

NEST_TEST(memory_pair_with_one_byte_buffer_passes_conformance_check) {
    mem_capacity = 1;
    expect_conformance(open_memory);
}

NEST_TEST(socketpair_streams_pass_conformance_check) {
    signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would kill the test: MSG_NOSIGNAL must hold */
    expect_conformance(open_socketpair);
}

/* The check with randomised scheduling: it must not depend on FIFO order. */
static int run_check_seeded(void *arg) { return nest_stream_check(arg, check_msg, sizeof check_msg); }

NEST_TEST(conformance_check_passes_with_randomised_scheduling) {
    mem_capacity = 3;
    nest_stream_check_options co = {open_memory, NULL, NULL, 0};
    for (uint64_t seed = 1; seed <= 8; seed++) {
        nest_run_options o;
        nest_run_options_init(&o);
        o.clock = NEST_CLOCK_MOCK;
        o.autojump_threshold = 0;
        o.seed = seed;
        int rc = nest_run_opts(run_check_seeded, &co, &o);
        if (rc != 0) fprintf(stderr, "seed %llu: %s\n", (unsigned long long)seed, check_msg);
        CHECK_EQ(rc, 0);
    }
}

/* ---- the check catches broken streams ------------------------------------ */

/* A memory stream whose send_all claims every byte went out even when it
 * was cancelled half way. */
static const nest_stream_vtable *real_vt;
static nest_stream_vtable lying_vt;

static int lying_send_all(nest_stream *s, const void *buf, size_t len, size_t *sent,
                          nest_stream_op *op) {
    int rc = real_vt->send_all(s, buf, len, sent, op);
    if (rc == -ECANCELED) *sent = len;
    return rc;
}

static int open_lying(void *arg, nest_stream **a, nest_stream **b) {
    int rc = open_memory(arg, a, b);
    real_vt = ma.stream.vt;
    lying_vt = *real_vt;
    lying_vt.send_all = lying_send_all;
    ma.stream.vt = &lying_vt;
    mb.stream.vt = &lying_vt;
    return rc;
}

NEST_TEST(conformance_check_catches_a_wrong_partial_send_count) {
    mem_capacity = 0;
    nest_stream_check_options o = {open_lying, NULL, NULL, 0};
    CHECK_EQ(run_mock(run_check, &o), -EPROTO);
    CHECK(strstr(check_msg, "stream check 'cancelled send'") != NULL);
}

/* A memory stream that claims to half-close but cannot. */
static int open_no_eof(void *arg, nest_stream **a, nest_stream **b) {
    int rc = open_memory(arg, a, b);
    real_vt = ma.stream.vt;
    lying_vt = *real_vt;
    lying_vt.send_eof = NULL;
    ma.stream.vt = &lying_vt;
    mb.stream.vt = &lying_vt;
    return rc;
}

NEST_TEST(conformance_check_catches_missing_half_close) {
    mem_capacity = 0;
    nest_stream_check_options o = {open_no_eof, NULL, NULL, 0};
    CHECK_EQ(run_mock(run_check, &o), -EPROTO);
    CHECK_STREQ(check_msg, "stream check 'half-close': send_eof returned EOPNOTSUPP");
    /* Declared as not half-closeable, the same stream passes. */
    o.no_half_close = 1;
    CHECK_EQ(run_mock(run_check, &o), 0);
}

/* A stream whose close does not wake a blocked receiver is caught too: the
 * run deadlocks instead of hanging, and the check reports it. */
static int forgetful_close(nest_stream *s) {
    (void)s;
    return 0; /* wakes nobody, frees nothing */
}

/* Frees the previous pair, which the forgetful close left behind. */
static void free_forgotten(void) {
    if (ma.pair) {
        real_vt->close(&ma.stream);
        real_vt->close(&mb.stream);
    }
}

static int open_forgetful(void *arg, nest_stream **a, nest_stream **b) {
    free_forgotten();
    int rc = open_memory(arg, a, b);
    real_vt = ma.stream.vt;
    lying_vt = *real_vt;
    lying_vt.close = forgetful_close;
    ma.stream.vt = &lying_vt;
    mb.stream.vt = &lying_vt;
    return rc;
}

NEST_TEST(conformance_check_catches_close_that_wakes_nobody) {
    mem_capacity = 0;
    nest_stream_check_options o = {open_forgetful, NULL, NULL, 0};
    nest_run_options ro;
    nest_run_options_init(&ro);
    ro.clock = NEST_CLOCK_MOCK;
    ro.autojump_threshold = 0;
    ro.quiet = 1;
    CHECK_EQ(nest_run_opts(run_check, &o, &ro), NEST_EDEADLOCK);
    free_forgotten();
}

/* ---- bounded buffers, partial sends, cancelled receives ------------------- */

static int partial_send(void *arg) {
    (void)arg;
    nest_memory_stream a, b;
    CHECK_EQ(nest_memory_stream_pair(&a, &b, 10), 0);
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(1));
    size_t sent = 0;
    int rc = nest_stream_send_all(&a.stream, "abcdefghijklmnopqrstuvwxy", 25, &sent);
    note("send %s sent %zu @%lld", nest_err_name(rc), sent, ms());
    note("exit %d", nest_scope_exit(&s, rc));
    char buf[32];
    ssize_t n = nest_stream_receive_some(&b.stream, buf, sizeof buf);
    note("got %.*s", (int)n, buf);
    /* The stream goes on from where the send stopped. */
    CHECK_EQ(nest_stream_send_all(&a.stream, "klm", 3, &sent), 0);
    CHECK_EQ(sent, 3);
    n = nest_stream_receive_some(&b.stream, buf, sizeof buf);
    note("then %.*s", (int)n, buf);
    nest_stream_close(&a.stream);
    nest_stream_close(&b.stream);
    return 0;
}

NEST_TEST(memory_send_blocks_when_full_and_cancel_reports_partial_count) {
    CHECK_EQ(run_mock(partial_send, NULL), 0);
    CHECK_STREQ(events, "send ECANCELED sent 10 @1000 exit 0 got abcdefghij then klm");
}

static nest_memory_stream *pa, *pb;

static int stalled_receiver(void *arg) {
    (void)arg;
    char buf[16];
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(5));
    ssize_t n = nest_stream_receive_some(&pb->stream, buf, sizeof buf);
    note("receive %zd @%lld", n, ms());
    note("exit %d", nest_scope_exit(&s, (int)n));
    n = nest_stream_receive_some(&pb->stream, buf, sizeof buf);
    note("then %.*s @%lld", (int)n, buf, ms());
    return 0;
}

static int late_sender(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(7)), 0);
    CHECK_EQ(nest_stream_send_all(&pa->stream, "late", 4, NULL), 0);
    return 0;
}

static int stalled_peer(void *arg) {
    (void)arg;
    nest_memory_stream a, b;
    CHECK_EQ(nest_memory_stream_pair(&a, &b, 0), 0);
    pa = &a;
    pb = &b;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, stalled_receiver, NULL), 0);
    CHECK_EQ(nest_spawn(&n, late_sender, NULL), 0);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    nest_stream_close(&a.stream);
    nest_stream_close(&b.stream);
    return 0;
}

/* A deadline on a stalled peer: the move-on scope absorbs it, and the
 * stream is still usable - a cancelled receive destroyed nothing. */
NEST_TEST(deadline_on_stalled_peer_leaves_stream_usable) {
    CHECK_EQ(run_mock(stalled_peer, NULL), 0);
    CHECK_STREQ(events, "receive -125 @5000 exit 0 then late @7000");
}

/* ---- close while another task is blocked --------------------------------- */

static nest_stream *victim;
static int victim_rc;

static int blocked_in_receive(void *arg) {
    (void)arg;
    char c;
    victim_rc = (int)nest_stream_receive_some(victim, &c, 1);
    note("receiver woke %s", nest_err_name(victim_rc));
    return 0;
}

static int blocked_in_send(void *arg) {
    (void)arg;
    static char big[1 << 16];
    size_t sent = 0;
    int rc;
    do rc = nest_stream_send_all(victim, big, sizeof big, &sent);
    while (rc == 0);
    note("sender woke %s", nest_err_name(rc));
    return 0;
}

static void (*free_victim)(void);

static int closer_frees(void *arg) {
    (void)arg;
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    CHECK_EQ(nest_stream_close(victim), 0);
    free_victim(); /* at once: the woken tasks must not touch it */
    note("closed and freed");
    return 0;
}

static nest_memory_stream *heap_mem, peer_mem;

static void free_heap_mem(void) {
    free(heap_mem);
    heap_mem = NULL;
}

static int close_memory_under_tasks(void *arg) {
    (void)arg;
    heap_mem = malloc(sizeof *heap_mem);
    CHECK_EQ(nest_memory_stream_pair(heap_mem, &peer_mem, 4), 0);
    victim = &heap_mem->stream;
    free_victim = free_heap_mem;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, blocked_in_receive, NULL), 0);
    CHECK_EQ(nest_spawn(&n, blocked_in_send, NULL), 0);
    CHECK_EQ(nest_spawn(&n, closer_frees, NULL), 0);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    /* The peer sees EOF, and its sends fail. */
    char c;
    CHECK_EQ(nest_stream_receive_some(&peer_mem.stream, &c, 1), 1); /* 4 bytes were buffered */
    char rest[8];
    CHECK_EQ(nest_stream_receive_some(&peer_mem.stream, rest, sizeof rest), 3);
    CHECK_EQ(nest_stream_receive_some(&peer_mem.stream, rest, sizeof rest), 0);
    CHECK_EQ(nest_stream_send_all(&peer_mem.stream, "x", 1, NULL), -EPIPE);
    nest_stream_close(&peer_mem.stream);
    return 0;
}

NEST_TEST(closing_memory_stream_wakes_blocked_tasks_even_if_freed_at_once) {
    CHECK_EQ(run_mock(close_memory_under_tasks, NULL), 0);
    /* Both blocked tasks wake with NEST_ECLOSED (in no specified order). */
    if (strcmp(events, "closed and freed receiver woke NEST_ECLOSED sender woke NEST_ECLOSED") != 0)
        CHECK_STREQ(events, "closed and freed sender woke NEST_ECLOSED receiver woke NEST_ECLOSED");
}

static nest_socket_stream *heap_sock;
static int peer_fd;

static void free_heap_sock(void) {
    free(heap_sock);
    heap_sock = NULL;
}

static int close_socket_under_tasks(void *arg) {
    (void)arg;
    int fds[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    heap_sock = malloc(sizeof *heap_sock);
    CHECK_EQ(nest_socket_stream_init(heap_sock, fds[0]), 0);
    peer_fd = fds[1];
    victim = &heap_sock->stream;
    free_victim = free_heap_sock;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, blocked_in_receive, NULL), 0);
    CHECK_EQ(nest_spawn(&n, blocked_in_send, NULL), 0);
    CHECK_EQ(nest_spawn(&n, closer_frees, NULL), 0);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    /* The socket really is closed: a new socketpair reuses the number, and
     * waiting on it works (the old watchers were forgotten). */
    int again[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, again), 0);
    CHECK_EQ(again[0], fds[0]);
    CHECK_EQ(write(again[1], "k", 1), 1);
    CHECK_EQ(nest_wait_readable(again[0]), 0);
    close(again[0]);
    close(again[1]);
    close(peer_fd);
    return 0;
}

NEST_TEST(closing_socket_stream_wakes_blocked_tasks_even_if_freed_at_once) {
    CHECK_EQ(run_mock(close_socket_under_tasks, NULL), 0);
    if (strcmp(events, "closed and freed receiver woke NEST_ECLOSED sender woke NEST_ECLOSED") != 0)
        CHECK_STREQ(events, "closed and freed sender woke NEST_ECLOSED receiver woke NEST_ECLOSED");
}

/* A task woken by cancellation that has not run yet when another task
 * closes and frees the stream: it too must not touch the stream. */
static nest_scope *victim_scope;

static int receive_in_scope(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    victim_scope = &s;
    char c;
    int rc = (int)nest_stream_receive_some(victim, &c, 1);
    note("receiver woke %s", nest_err_name(rc));
    nest_scope_exit(&s, rc);
    return 0;
}

static int cancel_then_close(void *arg) {
    (void)arg;
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_scope_cancel(victim_scope); /* wakes it: runnable, not yet run */
    CHECK_EQ(nest_stream_close(victim), 0);
    free_victim();
    note("closed and freed");
    return 0;
}

static int cancel_close_race(void *arg) {
    (void)arg;
    heap_mem = malloc(sizeof *heap_mem);
    CHECK_EQ(nest_memory_stream_pair(heap_mem, &peer_mem, 0), 0);
    victim = &heap_mem->stream;
    free_victim = free_heap_mem;
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, receive_in_scope, NULL), 0);
    CHECK_EQ(nest_spawn(&n, cancel_then_close, NULL), 0);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    nest_stream_close(&peer_mem.stream);
    return 0;
}

NEST_TEST(cancelled_then_closed_before_it_runs_does_not_touch_stream) {
    CHECK_EQ(run_mock(cancel_close_race, NULL), 0);
    CHECK_STREQ(events, "closed and freed receiver woke ECANCELED");
}

/* ---- send_eof, SIGPIPE, kinds -------------------------------------------- */

static int eof_checks(void *arg) {
    (void)arg;
    nest_memory_stream a, b;
    CHECK_EQ(nest_memory_stream_pair(&a, &b, 0), 0);
    CHECK_STREQ(nest_stream_kind(&a.stream), "memory");
    CHECK_EQ(nest_stream_socket(&a.stream), -EINVAL);
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    CHECK_EQ(nest_stream_send_eof(&a.stream), -ECANCELED);
    CHECK_EQ(nest_scope_exit(&s, -ECANCELED), 0);
    /* No EOF went out: b still receives data. */
    CHECK_EQ(nest_stream_send_all(&a.stream, "x", 1, NULL), 0);
    char c;
    CHECK_EQ(nest_stream_receive_some(&b.stream, &c, 1), 1);
    CHECK_EQ(nest_stream_send_eof(&a.stream), 0);
    CHECK_EQ(nest_stream_receive_some(&b.stream, &c, 1), 0);
    nest_stream_close(&a.stream);
    nest_stream_close(&b.stream);
    return 0;
}

NEST_TEST(send_eof_in_cancelled_scope_sends_nothing) { CHECK_EQ(run_mock(eof_checks, NULL), 0); }

static int sigpipe_check(void *arg) {
    (void)arg;
    int fds[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    nest_socket_stream s;
    CHECK_EQ(nest_socket_stream_init(&s, fds[0]), 0);
    CHECK_STREQ(nest_stream_kind(&s.stream), "socket");
    CHECK_EQ(nest_stream_socket(&s.stream), fds[0]);
    close(fds[1]);
    CHECK_EQ(nest_stream_send_all(&s.stream, "x", 1, NULL), -EPIPE);
    nest_stream_close(&s.stream);
    CHECK_EQ(nest_stream_socket(&s.stream), NEST_ECLOSED);
    return 0;
}

NEST_TEST(socket_stream_send_to_closed_peer_is_epipe_not_sigpipe) {
    signal(SIGPIPE, SIG_DFL);
    CHECK_EQ(run_mock(sigpipe_check, NULL), 0);
}

NEST_TEST(socket_stream_init_rejects_bad_fd) {
    nest_socket_stream s;
    CHECK_EQ(nest_socket_stream_init(&s, -1), -EBADF);
    CHECK_EQ(nest_socket_stream_init(&s, 12345), -EBADF);
}

/* ---- out of memory -------------------------------------------------------- */

static long live_blocks, calls, fail_at;

static void *failing_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        if (ptr) live_blocks--;
        free(ptr);
        return NULL;
    }
    if (++calls == fail_at) return NULL;
    void *p = realloc(ptr, nsize);
    if (!ptr) live_blocks++;
    return p;
}

NEST_TEST(memory_pair_out_of_memory_allocates_nothing) {
    nest_set_allocator(failing_alloc, NULL);
    calls = 0;
    fail_at = 1;
    nest_memory_stream a, b;
    CHECK_EQ(nest_memory_stream_pair(&a, &b, 0), -ENOMEM);
    CHECK_EQ(live_blocks, 0);
    CHECK_EQ(nest_memory_stream_pair(&a, &b, 0), 0);
    CHECK_EQ(live_blocks, 1);
    nest_stream_close(&a.stream);
    CHECK_EQ(live_blocks, 1); /* shared until both ends close */
    nest_stream_close(&b.stream);
    CHECK_EQ(live_blocks, 0);
    nest_set_allocator(NULL, NULL);
}

/* The whole conformance run with the Nth allocation failing, for every N:
 * it passes or reports -ENOMEM, and frees everything. */
static int check_or_oom(void *arg) {
    int rc = nest_stream_check(arg, check_msg, sizeof check_msg);
    if (rc != 0 && rc != -ENOMEM) fprintf(stderr, "%s\n", check_msg);
    return rc;
}

NEST_TEST(conformance_run_out_of_memory_at_every_allocation) {
    mem_capacity = 16;
    nest_stream_check_options co = {open_memory, NULL, NULL, 0};
    nest_set_allocator(failing_alloc, NULL);
    for (fail_at = 1;; fail_at++) {
        calls = 0;
        live_blocks = 0;
        int rc = run_mock(check_or_oom, &co);
        CHECK(rc == 0 || rc == -ENOMEM);
        CHECK_EQ(live_blocks, 0);
        if (rc == 0 && calls < fail_at) break;
        CHECK(fail_at < 10000);
    }
    fprintf(stderr, "%ld allocations in a full run, each failed once\n", fail_at - 1);
    CHECK(fail_at > 12); /* the runs did allocate: runtime, tasks, buffers, pairs */
    nest_set_allocator(NULL, NULL);
}
