/*
 * test/test_serve_threads.c - nest_serve_tcp_threads (nest/net.h): one port
 * served by several threads, each with its own runtime, via SO_REUSEPORT.
 *
 * Covers: with 1, 2, 3 and 4 threads on port 0, the caller learns the port
 * through nest_start() once every thread's thread_init has run; 64
 * concurrent clients from the test's runtime are all echoed and counted
 * once by exactly one thread; every thread serves its listener (clients
 * keep connecting until each thread has served one: with the kernel's
 * hashing the chance that 1,000 connections miss a thread is nil, while a
 * thread that does not serve fails the case); cancelling the caller stops
 * every thread (thread_fini runs in each), a connection held open sees EOF,
 * the port refuses new connections, and no fd is left open; a failing
 * thread_init, a bind that fails in a later thread (out of descriptors),
 * and a handler's failure each stop the other threads and surface as the
 * call's error; a first bind that fails starts no thread; bad arguments
 * are -EINVAL; cancelled at entry, -ECANCELED; out of memory at the first
 * allocation, -ENOMEM with nothing leaked.
 *
 * The test's runtime runs on the mock clock (autojump 0); the workers run
 * on the real clock, but nothing here depends on time: the test waits only
 * for echoes and for the call to return.  Counters shared with the worker
 * threads are atomics (the suite runs under ThreadSanitizer too).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "support.h"
#include "nest.h"
#include "nest/net.h"
#include "nest/stream.h"

#define MAXT 4

/* Per-thread state, handed to each thread's handlers by thread_init. */
struct per_thread {
    atomic_int served; /* connections this thread's handler saw */
    int index;
};

static struct per_thread per[MAXT];
static atomic_int inits, finis;
static int port;
static int fail_init_index = -1; /* thread_init of this index fails */

static int init(void *arg, int index, void **handler_arg) {
    (void)arg;
    CHECK(index >= 0 && index < MAXT);
    atomic_fetch_add(&inits, 1);
    if (index == fail_init_index) return -ENOSPC;
    per[index].index = index;
    *handler_arg = &per[index];
    return 0;
}

static void fini(void *arg, int index, void *handler_arg) {
    (void)arg;
    CHECK(handler_arg == &per[index]);
    atomic_fetch_add(&finis, 1);
}

/* Echoes until EOF; "fail" makes the handler fail. */
static int echo(nest_stream *s, void *arg) {
    struct per_thread *pt = arg;
    atomic_fetch_add(&pt->served, 1);
    char buf[256];
    for (;;) {
        ssize_t n = nest_stream_receive_some(s, buf, sizeof buf);
        if (n <= 0) return (int)n;
        if (n == 4 && memcmp(buf, "fail", 4) == 0) return -EPROTO;
        int rc = nest_stream_send_all(s, buf, (size_t)n, NULL);
        if (rc < 0) return rc;
    }
}

static int nthreads;
static nest_serve_threads_options opts;

static int server(void *arg) {
    (void)arg;
    return nest_serve_tcp_threads(nthreads, 0, "127.0.0.1", echo, NULL, &opts);
}

static void setup(int n) {
    nthreads = n;
    nest_serve_threads_options_init(&opts);
    opts.thread_init = init;
    opts.thread_fini = fini;
}

/* Starts the server in n; returns nest_start's result, sets port. */
static int start_server(nest_nursery *n) {
    void *v = NULL;
    int rc = nest_start(n, server, NULL, &v);
    if (rc < 0) return rc;
    const nest_listeners *ls = v;
    CHECK_EQ(ls->count, 1);
    CHECK_EQ(ls->listener[0].fd, -1); /* a copy: the threads serve it */
    port = nest_listener_port(&ls->listener[0]);
    CHECK(port > 0);
    return 0;
}

static int served_total(void) {
    int sum = 0;
    for (int i = 0; i < MAXT; i++) sum += atomic_load(&per[i].served);
    return sum;
}

static int threads_serving(void) {
    int k = 0;
    for (int i = 0; i < MAXT; i++) k += atomic_load(&per[i].served) > 0;
    return k;
}

/* One connection, one round trip of a message naming it, close. */
static int client(void *arg) {
    int id = (int)(intptr_t)arg;
    nest_socket_stream c;
    int rc = nest_tcp_connect("127.0.0.1", port, NULL, &c);
    if (rc < 0) return rc;
    char msg[32], back[32];
    int len = snprintf(msg, sizeof msg, "client %d", id);
    rc = nest_stream_send_all(&c.stream, msg, (size_t)len, NULL);
    for (int got = 0; rc == 0 && got < len;) {
        ssize_t r = nest_stream_receive_some(&c.stream, back + got, (size_t)(len - got));
        if (r <= 0) rc = r < 0 ? (int)r : -EPROTO;
        got += r > 0 ? (int)r : 0;
    }
    if (rc == 0 && memcmp(msg, back, (size_t)len) != 0) rc = -EPROTO;
    nest_stream_close(&c.stream);
    return rc;
}

/* ---- serving, spreading, stopping ------------------------------------------ */

static int serve_and_stop(void *arg) {
    (void)arg;
    int before = count_fds();
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(start_server(&n), 0);
    /* nest_started came only once every thread was accepting. */
    CHECK_EQ(atomic_load(&inits), nthreads);

    /* 64 clients at once, all echoed, each counted by one thread. */
    nest_nursery cn;
    nest_nursery_open(&cn);
    for (int i = 0; i < 64; i++) CHECK_EQ(nest_spawn(&cn, client, (void *)(intptr_t)i), 0);
    CHECK_EQ(nest_nursery_close(&cn, 0), 0);
    CHECK_EQ(served_total(), 64);
    fprintf(stderr, "64 connections over %d threads:", nthreads);
    for (int i = 0; i < nthreads; i++) fprintf(stderr, " %d", atomic_load(&per[i].served));
    fprintf(stderr, "\n");

    /* Every thread serves its listener: keep connecting until each has
     * served one (the kernel hashes each new source port). */
    int extra = 0;
    while (threads_serving() < nthreads && extra < 1000) CHECK_EQ(client((void *)(intptr_t)extra++), 0);
    CHECK_EQ(threads_serving(), nthreads);
    CHECK_EQ(served_total(), 64 + extra);

    /* A connection held open across the stop: its echo proves a handler
     * holds it, so the stop must close it (EOF), not reset it. */
    nest_socket_stream idle;
    CHECK_EQ(nest_tcp_connect("127.0.0.1", port, NULL, &idle), 0);
    char c = 'x';
    CHECK_EQ(nest_stream_send_all(&idle.stream, &c, 1, NULL), 0);
    CHECK_EQ(nest_stream_receive_some(&idle.stream, &c, 1), 1);

    nest_nursery_cancel(&n);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    CHECK_EQ(atomic_load(&finis), nthreads); /* every thread ran thread_fini */
    CHECK_EQ(nest_stream_receive_some(&idle.stream, &c, 1), 0);
    nest_stream_close(&idle.stream);
    CHECK_EQ(count_fds(), before);
    nest_socket_stream late;
    CHECK_EQ(nest_tcp_connect("127.0.0.1", port, NULL, &late), -ECONNREFUSED);
    return 0;
}

static void serve_with(int n) {
    setup(n);
    CHECK_EQ(run_mock(serve_and_stop, NULL), 0);
}

NEST_TEST(one_thread_serves_and_stops_on_cancel) { serve_with(1); }
NEST_TEST(two_threads_serve_one_port_and_stop_on_cancel) { serve_with(2); }
NEST_TEST(three_threads_serve_one_port_and_stop_on_cancel) { serve_with(3); }
NEST_TEST(four_threads_serve_one_port_and_stop_on_cancel) { serve_with(4); }

/* ---- failures -------------------------------------------------------------- */

static int start_expecting_failure(void *arg) {
    (void)arg;
    int before = count_fds();
    nest_nursery n;
    nest_nursery_open(&n);
    int rc = start_server(&n);
    note("start %s", nest_err_name(rc));
    note("close %s", nest_err_name(nest_nursery_close(&n, 0)));
    CHECK_EQ(count_fds(), before);
    return 0;
}

NEST_TEST(a_failing_thread_init_stops_the_other_threads) {
    setup(3);
    fail_init_index = 2;
    CHECK_EQ(run_mock(start_expecting_failure, NULL), 0);
    /* The failure comes back from nest_start (the server never started,
     * so the nursery has nothing more to report). */
    CHECK_STREQ(events, "start ENOSPC close OK");
    CHECK_EQ(atomic_load(&inits), 3);
    CHECK_EQ(atomic_load(&finis), 2); /* the threads whose init succeeded */
}

/* Thread 1's thread_init uses up the process's descriptors (once thread 0
 * is set up), so thread 1's own bind fails with EMFILE; its thread_fini
 * gives them back. */
static atomic_int thread0_ready;
static int spare_fds[4096], nspare;
static struct rlimit saved_limit;

static int init_exhausting_fds(void *arg, int index, void **handler_arg) {
    int rc = init(arg, index, handler_arg);
    if (index == 0) atomic_store(&thread0_ready, 1);
    if (index != 1) return rc;
    while (!atomic_load(&thread0_ready)) sched_yield();
    /* Lower the limit to just above the highest open fd, then fill the
     * gaps below it: the next socket() fails. */
    int top = 0;
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    for (struct dirent *e; (e = readdir(d));)
        if (atoi(e->d_name) > top) top = atoi(e->d_name);
    closedir(d); /* its own fd is among those counted: harmless */
    CHECK_EQ(getrlimit(RLIMIT_NOFILE, &saved_limit), 0);
    struct rlimit low = saved_limit;
    low.rlim_cur = (rlim_t)top + 1;
    CHECK_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
    int fd;
    while (nspare < 4096 && (fd = dup(2)) >= 0) spare_fds[nspare++] = fd;
    CHECK(nspare < 4096);
    return rc;
}

static void fini_restoring_fds(void *arg, int index, void *handler_arg) {
    if (index == 1) {
        while (nspare > 0) close(spare_fds[--nspare]);
        CHECK_EQ(setrlimit(RLIMIT_NOFILE, &saved_limit), 0);
    }
    fini(arg, index, handler_arg);
}

NEST_TEST(a_bind_failing_in_a_later_thread_stops_the_others) {
    setup(2);
    opts.thread_init = init_exhausting_fds;
    opts.thread_fini = fini_restoring_fds;
    CHECK_EQ(run_mock(start_expecting_failure, NULL), 0);
    CHECK_STREQ(events, "start EMFILE close OK");
    CHECK_EQ(atomic_load(&finis), 2);
}

static int handler_failure(void *arg) {
    (void)arg;
    int before = count_fds();
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(start_server(&n), 0);
    nest_socket_stream c;
    CHECK_EQ(nest_tcp_connect("127.0.0.1", port, NULL, &c), 0);
    CHECK_EQ(nest_stream_send_all(&c.stream, "fail", 4, NULL), 0);
    /* The server returns the handler's error on its own: no cancel here. */
    note("close %s", nest_err_name(nest_nursery_close(&n, 0)));
    char b;
    ssize_t r = nest_stream_receive_some(&c.stream, &b, 1);
    note("client sees %s", r == 0 ? "EOF" : nest_err_name((int)r));
    nest_stream_close(&c.stream);
    CHECK_EQ(count_fds(), before);
    return 0;
}

NEST_TEST(a_handler_failure_in_one_thread_stops_every_thread) {
    setup(3);
    CHECK_EQ(run_mock(handler_failure, NULL), 0);
    CHECK_STREQ(events, "close EPROTO client sees EOF");
    CHECK_EQ(atomic_load(&finis), 3);
}

static int first_bind_fails(void *arg) {
    (void)arg;
    /* A plain listener (no SO_REUSEPORT) holds the port. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    CHECK_EQ(listen(fd, 1), 0);
    socklen_t len = sizeof a;
    CHECK_EQ(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    int before = count_fds();
    int rc = nest_serve_tcp_threads(2, ntohs(a.sin_port), "127.0.0.1", echo, NULL, &opts);
    note("%s", nest_err_name(rc));
    CHECK_EQ(count_fds(), before);
    close(fd);
    return 0;
}

NEST_TEST(a_first_bind_failure_starts_no_thread) {
    setup(2);
    CHECK_EQ(run_mock(first_bind_fails, NULL), 0);
    CHECK_STREQ(events, "EADDRINUSE");
    CHECK_EQ(atomic_load(&inits), 0);
}

/* ---- arguments, cancellation, memory -------------------------------------- */

static int bad_arguments(void *arg) {
    (void)arg;
    nest_nursery other;
    nest_nursery_open(&other);
    CHECK_EQ(nest_serve_tcp_threads(0, 0, "127.0.0.1", echo, NULL, NULL), -EINVAL);
    CHECK_EQ(nest_serve_tcp_threads(-1, 0, "127.0.0.1", echo, NULL, NULL), -EINVAL);
    CHECK_EQ(nest_serve_tcp_threads(2, 0, "127.0.0.1", NULL, NULL, NULL), -EINVAL);
    CHECK_EQ(nest_serve_tcp_threads(2, 70000, "127.0.0.1", echo, NULL, NULL), -EINVAL);
    nest_serve_threads_options o;
    nest_serve_threads_options_init(&o);
    o.serve.handler_nursery = &other;
    CHECK_EQ(nest_serve_tcp_threads(2, 0, "127.0.0.1", echo, NULL, &o), -EINVAL);
    nest_run_options ro;
    nest_run_options_init(&ro);
    ro.loop = &ro; /* any non-NULL loop is refused before it is used */
    nest_serve_threads_options_init(&o);
    o.run = &ro;
    CHECK_EQ(nest_serve_tcp_threads(2, 0, "127.0.0.1", echo, NULL, &o), -EINVAL);
    /* Cancelled at entry: a checkpoint, nothing happens. */
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    CHECK_EQ(nest_serve_tcp_threads(2, 0, "127.0.0.1", echo, NULL, &opts), -ECANCELED);
    nest_scope_exit(&s, 0);
    CHECK_EQ(nest_nursery_close(&other, 0), 0);
    return 0;
}

NEST_TEST(bad_arguments_are_einval_and_cancelled_entry_is_ecanceled) {
    setup(2);
    CHECK_EQ(run_mock(bad_arguments, NULL), 0);
    CHECK_EQ(atomic_load(&inits), 0);
}

/* The group is the call's only allocation on the caller's thread, made
 * before any thread starts (the worker runtimes then allocate on their own
 * threads, which the single-threaded counting allocator cannot follow). */
static int out_of_memory(void *arg) {
    (void)arg;
    int before = count_fds();
    fail_allocations(1);
    int rc = nest_serve_tcp_threads(2, 0, "127.0.0.1", echo, NULL, &opts);
    fail_allocations(0);
    note("%s", nest_err_name(rc));
    CHECK_EQ(count_fds(), before);
    return 0;
}

NEST_TEST(out_of_memory_before_the_threads_start_leaks_nothing) {
    setup(2);
    CHECK_EQ(run_counted(out_of_memory), 0);
    CHECK_STREQ(events, "ENOMEM");
    CHECK_EQ(atomic_load(&inits), 0);
}
