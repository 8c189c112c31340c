/*
 * test/test_tcp.c - TCP connections (nest/net.h): connect, accept, socket
 * streams over TCP, and Happy Eyeballs.
 *
 * Covers: connect/accept on 127.0.0.1 (and ::1 when the machine has IPv6
 * loopback; those cases skip otherwise) with TCP_NODELAY on both ends; the
 * stream conformance check over TCP; EOF; a reset peer (SO_LINGER 0) gives
 * -ECONNRESET; half-close; a deadline on a stalled peer for receive and for
 * send (the stream stays usable; a send cut short reports what went out);
 * cancellation of accept, connect (a real pending connect: the listener's
 * queue is full) and of calls in a cancelled scope; closing a listener under
 * a blocked accept; -EBUSY for two accepts; -ECONNREFUSED; the numeric
 * resolver refuses names (the default resolver's lookups are in
 * test_resolve.c).  Happy Eyeballs with a stub resolver and a
 * scripted connect hook, on the mock clock: family interleaving, the 250 ms
 * stagger, an early failure starting the next attempt at once, the winner
 * cancelling the rest, the most relevant error when all fail, an outer
 * cancellation; and with real sockets: losers' sockets are closed (fd
 * counts), ::1 refused falls back to 127.0.0.1 at once, two attempts that
 * connect in the same pass.  Out of memory at every allocation of a
 * connect/accept/exchange run: 0 or -ENOMEM, nothing leaked.
 *
 * Only loopback addresses are used.  Every case runs on the mock clock with
 * autojump 0; real sockets on loopback complete in microseconds of real time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "support.h"
#include "nest.h"
#include "nest/net.h"
#include "nest/stream.h"
#include "nest/stream_check.h"

/* ---- helpers ------------------------------------------------------------- */

static nest_listener lis;
static int port;

static void listen_on(const char *host) {
    CHECK_EQ(nest_tcp_listen(host, 0, NULL, &lis, 1), 1);
    port = nest_listener_port(&lis);
    CHECK(port > 0);
}

static int nodelay(int fd) {
    int v = 0;
    socklen_t len = sizeof v;
    CHECK_EQ(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
    return v;
}

static int send_str(nest_stream *s, const char *str) {
    return nest_stream_send_all(s, str, strlen(str), NULL);
}

/* Receives exactly strlen(want) bytes and compares. */
static void expect_str(nest_stream *s, const char *want) {
    char buf[256];
    size_t n = strlen(want), got = 0;
    while (got < n) {
        ssize_t r = nest_stream_receive_some(s, buf + got, n - got);
        CHECK(r > 0);
        got += (size_t)r;
    }
    CHECK(memcmp(buf, want, n) == 0);
}

/* ---- connect and accept ----------------------------------------------------- */

static nest_socket_stream server_side;

static int accept_one(void *arg) {
    (void)arg;
    nest_sockaddr peer;
    CHECK_EQ(nest_listener_accept(&lis, &server_side, &peer), 0);
    char buf[64];
    nest_sockaddr_format(&peer, buf, sizeof buf);
    *strrchr(buf, ':') = '\0'; /* the client's port varies */
    note("peer %s", buf);
    note("server nodelay %d", nodelay(nest_stream_socket(&server_side.stream)));
    expect_str(&server_side.stream, "ping");
    CHECK_EQ(send_str(&server_side.stream, "pong"), 0);
    return 0;
}

static int roundtrip(void *arg) {
    const char *host = arg;
    listen_on(host);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, accept_one, NULL), 0);
    nest_socket_stream c;
    CHECK_EQ(nest_tcp_connect(host, port, NULL, &c), 0);
    note("client nodelay %d", nodelay(nest_stream_socket(&c.stream)));
    CHECK_EQ(send_str(&c.stream, "ping"), 0);
    expect_str(&c.stream, "pong");
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    nest_stream_close(&c.stream);
    nest_stream_close(&server_side.stream);
    nest_listener_close(&lis);
    return 0;
}

NEST_TEST(connect_and_accept_on_ipv4_loopback) {
    CHECK_EQ(run_mock(roundtrip, "127.0.0.1"), 0);
    /* (connect's checkpoint lets the accepting task run first) */
    CHECK_STREQ(events, "peer 127.0.0.1 server nodelay 1 client nodelay 1");
}

NEST_TEST(connect_and_accept_on_ipv6_loopback) {
    if (!have_ipv6_loopback(SOCK_STREAM)) NEST_SKIP("no IPv6 loopback (::1) on this machine");
    CHECK_EQ(run_mock(roundtrip, "::1"), 0);
    CHECK_STREQ(events, "peer [::1] server nodelay 1 client nodelay 1");
}

/* ---- the conformance check over TCP --------------------------------------- */

static nest_socket_stream ca, cb;
static const char *check_host;

static int open_tcp_pair(void *arg, nest_stream **a, nest_stream **b) {
    (void)arg;
    /* The handshake completes in the kernel before accept, so connecting
     * first and accepting second needs no second task. */
    int rc = nest_tcp_connect(check_host, port, NULL, &ca);
    if (rc < 0) return rc;
    rc = nest_listener_accept(&lis, &cb, NULL);
    if (rc < 0) {
        nest_stream_close(&ca.stream);
        return rc;
    }
    *a = &ca.stream;
    *b = &cb.stream;
    return 0;
}

static char check_msg[512];

static int tcp_check(void *arg) {
    check_host = arg;
    listen_on(check_host);
    nest_stream_check_options o = {open_tcp_pair, NULL, NULL, 0};
    int rc = nest_stream_check(&o, check_msg, sizeof check_msg);
    nest_listener_close(&lis);
    return rc;
}

NEST_TEST(tcp_streams_pass_conformance_check) {
    signal(SIGPIPE, SIG_DFL);
    int rc = run_mock(tcp_check, "127.0.0.1");
    if (rc) fprintf(stderr, "%s\n", check_msg);
    CHECK_EQ(rc, 0);
}

NEST_TEST(tcp6_streams_pass_conformance_check) {
    if (!have_ipv6_loopback(SOCK_STREAM)) NEST_SKIP("no IPv6 loopback (::1) on this machine");
    signal(SIGPIPE, SIG_DFL);
    int rc = run_mock(tcp_check, "::1");
    if (rc) fprintf(stderr, "%s\n", check_msg);
    CHECK_EQ(rc, 0);
}

/* ---- EOF, reset, half-close ------------------------------------------------ */

/* Makes a connected pair (client c, server s) on 127.0.0.1. */
static nest_socket_stream cli, srv;

static void pair(void) {
    listen_on("127.0.0.1");
    CHECK_EQ(nest_tcp_connect("127.0.0.1", port, NULL, &cli), 0);
    CHECK_EQ(nest_listener_accept(&lis, &srv, NULL), 0);
}

static void unpair(void) {
    nest_stream_close(&cli.stream);
    nest_stream_close(&srv.stream);
    nest_listener_close(&lis);
}

static int eof_case(void *arg) {
    (void)arg;
    pair();
    CHECK_EQ(send_str(&cli.stream, "last words"), 0);
    nest_stream_close(&cli.stream);
    expect_str(&srv.stream, "last words");
    char c;
    note("%zd", nest_stream_receive_some(&srv.stream, &c, 1));
    note("%zd", nest_stream_receive_some(&srv.stream, &c, 1));
    unpair();
    return 0;
}

NEST_TEST(peer_close_gives_eof_after_the_data) {
    CHECK_EQ(run_mock(eof_case, NULL), 0);
    CHECK_STREQ(events, "0 0");
}

static int reset_case(void *arg) {
    (void)arg;
    pair();
    struct linger lg = {1, 0}; /* close sends RST instead of FIN */
    CHECK_EQ(setsockopt(nest_stream_socket(&cli.stream), SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    nest_stream_close(&cli.stream);
    char c;
    note("receive %s", nest_err_name((int)nest_stream_receive_some(&srv.stream, &c, 1)));
    int rc = send_str(&srv.stream, "anyone?");
    note("send %s", rc == -EPIPE || rc == -ECONNRESET ? "fails" : nest_err_name(rc));
    unpair();
    return 0;
}

NEST_TEST(peer_reset_gives_econnreset) {
    signal(SIGPIPE, SIG_DFL);
    CHECK_EQ(run_mock(reset_case, NULL), 0);
    CHECK_STREQ(events, "receive ECONNRESET send fails");
}

static int half_close_case(void *arg) {
    (void)arg;
    pair();
    CHECK_EQ(send_str(&cli.stream, "request"), 0);
    CHECK_EQ(nest_stream_send_eof(&cli.stream), 0);
    expect_str(&srv.stream, "request");
    char c;
    note("server reads %zd", nest_stream_receive_some(&srv.stream, &c, 1));
    CHECK_EQ(send_str(&srv.stream, "response"), 0);
    expect_str(&cli.stream, "response");
    nest_stream_close(&srv.stream);
    note("client reads %zd", nest_stream_receive_some(&cli.stream, &c, 1));
    note("client send %s", nest_err_name(send_str(&cli.stream, "x")));
    unpair();
    return 0;
}

NEST_TEST(half_close_lets_the_other_direction_finish) {
    CHECK_EQ(run_mock(half_close_case, NULL), 0);
    CHECK_STREQ(events, "server reads 0 client reads 0 client send NEST_ECLOSED");
}

/* ---- deadlines on a stalled peer -------------------------------------------- */

static int late_reply(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(7)), 0);
    return send_str(&srv.stream, "late");
}

static int stalled_receive(void *arg) {
    (void)arg;
    pair();
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, late_reply, NULL), 0);
    char buf[16];
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(5));
    ssize_t r = nest_stream_receive_some(&cli.stream, buf, sizeof buf);
    note("receive %zd @%lld", r, ms());
    note("exit %d", nest_scope_exit(&s, (int)r));
    expect_str(&cli.stream, "late");
    note("then late @%lld", ms());
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    unpair();
    return 0;
}

NEST_TEST(deadline_on_stalled_peer_then_stream_still_works) {
    CHECK_EQ(run_mock(stalled_receive, NULL), 0);
    CHECK_STREQ(events, "receive -125 @5000 exit 0 then late @7000");
}

static size_t stalled_sent;
static unsigned char *bigbuf;
#define BIG ((size_t)64 << 20)

static int drain_exactly(void *arg) {
    (void)arg;
    static unsigned char buf[65536];
    size_t total = 0;
    while (total < stalled_sent + 4) {
        ssize_t r = nest_stream_receive_some(&srv.stream, buf, sizeof buf);
        CHECK(r > 0);
        for (ssize_t i = 0; i < r; i++) {
            size_t off = total + (size_t)i;
            CHECK_EQ(buf[i], off < stalled_sent ? bigbuf[off] : (unsigned char)"tail"[off - stalled_sent]);
        }
        total += (size_t)r;
    }
    note("server got %s", total == stalled_sent + 4 ? "exactly what was reported" : "other");
    return 0;
}

static int stalled_send(void *arg) {
    (void)arg;
    pair();
    bigbuf = malloc(BIG);
    for (size_t i = 0; i < BIG; i++) bigbuf[i] = (unsigned char)(i * 7 + (i >> 12));
    nest_scope s;
    nest_fail_after(&s, NEST_SEC(2));
    int rc = nest_stream_send_all(&cli.stream, bigbuf, BIG, &stalled_sent);
    note("send %s @%lld", nest_err_name(rc), ms());
    note("exit %s", nest_err_name(nest_scope_exit(&s, rc)));
    note("partial %d", stalled_sent > 0 && stalled_sent < BIG);
    /* The stream is usable: append a tail, and the server reads exactly the
     * reported prefix followed by it. */
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, drain_exactly, NULL), 0);
    CHECK_EQ(send_str(&cli.stream, "tail"), 0);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    free(bigbuf);
    unpair();
    return 0;
}

NEST_TEST(send_to_stalled_peer_times_out_and_reports_partial_count) {
    CHECK_EQ(run_mock(stalled_send, NULL), 0);
    CHECK_STREQ(events, "send ECANCELED @2000 exit ETIMEDOUT partial 1 server got exactly what was reported");
}

/* ---- accept: cancellation, close, busy -------------------------------------- */

static int late_connect(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(2)), 0);
    return nest_tcp_connect("127.0.0.1", port, NULL, &cli);
}

static int accept_cancel(void *arg) {
    (void)arg;
    listen_on("127.0.0.1");
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(1));
    int rc = nest_listener_accept(&lis, &srv, NULL);
    note("accept %s @%lld", nest_err_name(rc), ms());
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, late_connect, NULL), 0);
    rc = nest_listener_accept(&lis, &srv, NULL);
    note("accept again %s @%lld", nest_err_name(rc), ms());
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    /* In a cancelled scope accept fails at once, even with a client queued. */
    nest_socket_stream extra;
    CHECK_EQ(nest_tcp_connect("127.0.0.1", port, NULL, &extra), 0);
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    nest_socket_stream got;
    rc = nest_listener_accept(&lis, &got, NULL);
    note("cancelled %s", nest_err_name(rc));
    nest_scope_exit(&s, rc);
    CHECK_EQ(nest_listener_accept(&lis, &got, NULL), 0); /* it was still queued */
    nest_stream_close(&got.stream);
    nest_stream_close(&extra.stream);
    unpair();
    return 0;
}

NEST_TEST(cancelled_accept_leaves_listener_usable) {
    CHECK_EQ(run_mock(accept_cancel, NULL), 0);
    CHECK_STREQ(events, "accept ECANCELED @1000 accept again OK @3000 cancelled ECANCELED");
}

static nest_listener *heap_lis;

static int blocked_accept(void *arg) {
    (void)arg;
    nest_socket_stream s;
    note("accept %s", nest_err_name(nest_listener_accept(heap_lis, &s, NULL)));
    return 0;
}

static int second_accept(void *arg) {
    (void)arg;
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_socket_stream s;
    note("second %s", nest_err_name(nest_listener_accept(heap_lis, &s, NULL)));
    nest_listener_close(heap_lis);
    free(heap_lis); /* at once: the woken accept must not touch it */
    note("closed");
    return 0;
}

static int accept_close(void *arg) {
    (void)arg;
    heap_lis = malloc(sizeof *heap_lis);
    CHECK_EQ(nest_tcp_listen("127.0.0.1", 0, NULL, heap_lis, 1), 1);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, blocked_accept, NULL), 0);
    CHECK_EQ(nest_spawn(&n, second_accept, NULL), 0);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(closing_listener_wakes_blocked_accept_and_second_accept_is_busy) {
    CHECK_EQ(run_mock(accept_close, NULL), 0);
    CHECK_STREQ(events, "second EBUSY closed accept NEST_ECLOSED");
}

/* ---- connect: refused, cancelled, names ------------------------------------- */

static int refused(void *arg) {
    (void)arg;
    listen_on("127.0.0.1");
    nest_listener_close(&lis); /* nobody listens on port now */
    int before = count_fds();
    note("%s", nest_err_name(nest_tcp_connect("127.0.0.1", port, NULL, &cli)));
    CHECK_EQ(count_fds(), before);
    return 0;
}

NEST_TEST(connect_to_closed_port_is_refused) {
    CHECK_EQ(run_mock(refused, NULL), 0);
    CHECK_STREQ(events, "ECONNREFUSED");
}

/* A listening socket whose accept queue is full: a further connect stays
 * pending (Linux drops the SYN), which is a real slow connect. */
static int full_fd, full_port, queued_fd;

static void make_full_listener(void) {
    full_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_EQ(bind(full_fd, (struct sockaddr *)&a, sizeof a), 0);
    CHECK_EQ(listen(full_fd, 0), 0);
    socklen_t len = sizeof a;
    CHECK_EQ(getsockname(full_fd, (struct sockaddr *)&a, &len), 0);
    full_port = ntohs(a.sin_port);
    queued_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    a.sin_port = htons((uint16_t)full_port);
    CHECK_EQ(connect(queued_fd, (struct sockaddr *)&a, sizeof a), 0); /* fills the queue */
}

static void drop_full_listener(void) {
    close(queued_fd);
    close(full_fd);
}

static int pending_connect(void *arg) {
    (void)arg;
    make_full_listener();
    int before = count_fds();
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(3));
    int rc = nest_tcp_connect("127.0.0.1", full_port, NULL, &cli);
    note("connect %s @%lld", nest_err_name(rc), ms());
    note("exit %d", nest_scope_exit(&s, rc));
    note("fds %+d", count_fds() - before);
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    rc = nest_tcp_connect("127.0.0.1", full_port, NULL, &cli);
    note("cancelled %s", nest_err_name(rc));
    nest_scope_exit(&s, rc);
    drop_full_listener();
    return 0;
}

NEST_TEST(pending_connect_is_cancelled_by_deadline_and_closed) {
    CHECK_EQ(run_mock(pending_connect, NULL), 0);
    CHECK_STREQ(events, "connect ECANCELED @3000 exit 0 fds +0 cancelled ECANCELED");
}

static int bad_names(void *arg) {
    (void)arg;
    nest_connect_options numeric;
    nest_connect_options_init(&numeric);
    numeric.resolve = nest_resolve_numeric;
    note("%s", nest_err_name(nest_tcp_connect("localhost", 80, &numeric, &cli)));
    note("%s", nest_err_name(nest_tcp_connect("127.0.0.1", 70000, NULL, &cli)));
    note("%s", nest_err_name(nest_tcp_connect("127.0.0.1", -1, NULL, &cli)));
    note("%s", nest_err_name(nest_tcp_connect(NULL, 80, NULL, &cli)));
    note("%s", nest_err_name(nest_tcp_connect_addrs(NULL, 0, NULL, &cli)));
    nest_sockaddr a;
    note("%s", nest_err_name(nest_sockaddr_ip(&a, "example.com", 80)));
    CHECK_EQ(nest_sockaddr_ip(&a, "::1", 8080), 0);
    char buf[64];
    note("%s", nest_sockaddr_format(&a, buf, sizeof buf));
    CHECK_EQ(nest_sockaddr_ip(&a, "127.0.0.1", 80), 0);
    note("%s %d", nest_sockaddr_format(&a, buf, sizeof buf), nest_sockaddr_port(&a));
    return 0;
}

NEST_TEST(numeric_resolver_accepts_numeric_addresses_only) {
    CHECK_EQ(run_mock(bad_names, NULL), 0);
    CHECK_STREQ(events, "EINVAL EINVAL EINVAL EINVAL EINVAL EINVAL [::1]:8080 127.0.0.1:80 80");
}

/* ---- Happy Eyeballs, scripted ------------------------------------------------ */

/* The stub resolver returns `addrs`; an address's port names its script
 * entry (the hook never connects to these ports, except "real" entries,
 * which connect to the real listener). */
struct script {
    const char *name;
    const char *ip;     /* "::1" or "127.0.0.1": only the family matters */
    int delay_ms;       /* before the outcome; -1: never (until cancelled) */
    int result;         /* 0: connect for real to the listener; else the error */
};

static const struct script *script;
static int nscript;

static int stub_resolve(void *arg, const char *host, int p, int family, int flags,
                        nest_sockaddr *out, size_t max) {
    (void)arg, (void)host, (void)p, (void)family, (void)flags;
    int n = 0;
    for (int i = 0; i < nscript && (size_t)n < max; i++)
        CHECK_EQ(nest_sockaddr_ip(&out[n++], script[i].ip, 1000 + i), 0);
    return n;
}

static const struct script *entry_of(const nest_sockaddr *a) {
    int i = nest_sockaddr_port(a) - 1000;
    CHECK(i >= 0 && i < nscript);
    return &script[i];
}

static int hook(void *arg, const nest_sockaddr *addr, const nest_sockaddr *local, int *fd) {
    (void)arg;
    const struct script *e = entry_of(addr);
    note("start %s@%lld", e->name, ms());
    int rc = e->delay_ms < 0 ? nest_sleep_forever() : nest_sleep(NEST_MSEC(e->delay_ms));
    if (rc < 0) return rc;
    if (e->result) return e->result;
    nest_sockaddr real;
    CHECK_EQ(nest_sockaddr_ip(&real, "127.0.0.1", port), 0);
    return nest_connect_attempt(NULL, &real, local, fd);
}

static void report(void *arg, const nest_sockaddr *addr, int rc) {
    (void)arg;
    note("done %s %s@%lld", entry_of(addr)->name, nest_err_name(rc), ms());
}

static nest_time he_delay = NEST_MSEC(250);

static int he_run(void *arg) {
    (void)arg;
    listen_on("127.0.0.1");
    int before = count_fds();
    nest_connect_options o;
    nest_connect_options_init(&o);
    CHECK_EQ(o.delay, NEST_MSEC(250)); /* RFC 8305's default */
    o.delay = he_delay;
    o.resolve = stub_resolve;
    o.attempt = hook;
    o.report = report;
    int rc = nest_tcp_connect("example.test", 443, &o, &cli);
    note("=> %s @%lld", nest_err_name(rc), ms());
    if (rc == 0) {
        /* Find the winner's connection among those the listener queued
         * (a loser that connected too was closed: it reads as EOF). */
        CHECK_EQ(send_str(&cli.stream, "hi"), 0);
        for (;;) {
            nest_socket_stream s;
            CHECK_EQ(nest_listener_accept(&lis, &s, NULL), 0);
            char c;
            ssize_t r = nest_stream_receive_some(&s.stream, &c, 1);
            nest_stream_close(&s.stream);
            if (r == 1) break;
            CHECK_EQ(r, 0);
        }
        CHECK_EQ(count_fds(), before + 1); /* only the winner is open */
        nest_stream_close(&cli.stream);
    } else {
        CHECK_EQ(count_fds(), before);
    }
    nest_listener_close(&lis);
    return 0;
}

static void he(const struct script *s, int n) {
    script = s;
    nscript = n;
    CHECK_EQ(run_mock(he_run, NULL), 0);
}

/* Families interleave (A, C, B, D: the resolver's order within a family),
 * each attempt gets 250 ms alone, the winner cancels the others, and an
 * attempt that was never needed never starts. */
NEST_TEST(happy_eyeballs_staggers_by_250ms_and_winner_cancels_the_rest) {
    static const struct script s[] = {
        {"A", "::1", -1, 0},
        {"B", "::1", -1, 0},
        {"C", "127.0.0.1", 100, 0},
        {"D", "127.0.0.1", -1, 0},
    };
    he(s, 4);
    CHECK_STREQ(events, "start A@0 start C@250 done C OK@350 done A ECANCELED@350 => OK @350");
}

/* An attempt that fails starts the next one at once. */
NEST_TEST(happy_eyeballs_failure_starts_next_attempt_at_once) {
    static const struct script s[] = {
        {"A", "::1", 10, -ECONNREFUSED},
        {"B", "::1", -1, 0},
        {"C", "127.0.0.1", 10, -ENETUNREACH},
        {"D", "127.0.0.1", 50, 0},
    };
    he(s, 4);
    CHECK_STREQ(events, "start A@0 done A ECONNREFUSED@10 start C@10 done C ENETUNREACH@20 "
                        "start B@20 start D@270 done D OK@320 done B ECANCELED@320 => OK @320");
}

/* The first family is the resolver's first address's: here IPv4. */
NEST_TEST(happy_eyeballs_interleaves_starting_with_the_first_family) {
    static const struct script s[] = {
        {"a", "127.0.0.1", 0, -ECONNREFUSED}, {"b", "127.0.0.1", 0, -ECONNREFUSED},
        {"X", "::1", 0, -ECONNREFUSED},       {"Y", "::1", 0, -ECONNREFUSED},
        {"Z", "::1", 0, -ECONNREFUSED},
    };
    he(s, 5);
    CHECK_STREQ(events, "start a@0 done a ECONNREFUSED@0 start X@0 done X ECONNREFUSED@0 "
                        "start b@0 done b ECONNREFUSED@0 start Y@0 done Y ECONNREFUSED@0 "
                        "start Z@0 done Z ECONNREFUSED@0 => ECONNREFUSED @0");
}

/* When all fail, the peer's answer (refused) beats local trouble
 * (unreachable network), whatever the order; among equals, the first. */
NEST_TEST(happy_eyeballs_all_failed_returns_most_relevant_error) {
    static const struct script s1[] = {
        {"A", "::1", 5, -ENETUNREACH},
        {"C", "127.0.0.1", 5, -ECONNREFUSED},
    };
    he(s1, 2);
    CHECK(strstr(events, "=> ECONNREFUSED @10") != NULL);
    events[0] = 0;
    static const struct script s2[] = {
        {"A", "::1", 5, -ECONNREFUSED},
        {"C", "127.0.0.1", 5, -ENETUNREACH},
    };
    he(s2, 2);
    CHECK(strstr(events, "=> ECONNREFUSED @10") != NULL);
    events[0] = 0;
    static const struct script s3[] = {
        {"A", "::1", 5, -EADDRNOTAVAIL},
        {"C", "127.0.0.1", 5, -ENETUNREACH},
    };
    he(s3, 2);
    CHECK(strstr(events, "=> EADDRNOTAVAIL @10") != NULL);
}

/* delay NEST_FOREVER: strictly one attempt at a time. */
NEST_TEST(happy_eyeballs_forever_delay_is_sequential) {
    static const struct script s[] = {
        {"A", "::1", 1000, -ETIMEDOUT},
        {"C", "127.0.0.1", 10, 0},
    };
    he_delay = NEST_FOREVER;
    he(s, 2);
    CHECK_STREQ(events, "start A@0 done A ETIMEDOUT@1000 start C@1000 done C OK@1010 => OK @1010");
}

/* delay 0: every attempt starts at once; two that both connect in the same
 * pass - the second's socket is closed (fd count in he_run). */
NEST_TEST(happy_eyeballs_zero_delay_starts_all_and_closes_second_success) {
    static const struct script s[] = {
        {"A", "::1", 0, 0},
        {"C", "127.0.0.1", 0, 0},
    };
    he_delay = 0;
    he(s, 2);
    /* Which one wins depends on the order the kernel reports them in. */
    if (strcmp(events, "start A@0 start C@0 done A OK@0 done C ECANCELED@0 => OK @0") != 0)
        CHECK_STREQ(events, "start A@0 start C@0 done C OK@0 done A ECANCELED@0 => OK @0");
}

/* An outer deadline cancels every attempt. */
static int he_outer_cancel(void *arg) {
    (void)arg;
    nest_scope s;
    nest_move_on_after(&s, NEST_MSEC(600));
    int rc = he_run(NULL);
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    return 0;
}

NEST_TEST(happy_eyeballs_outer_deadline_cancels_every_attempt) {
    static const struct script s[] = {
        {"A", "::1", -1, 0},
        {"B", "::1", -1, 0},
        {"C", "127.0.0.1", -1, 0},
    };
    script = s;
    nscript = 3;
    CHECK_EQ(run_mock(he_outer_cancel, NULL), 0);
    /* (the order in which the cancelled attempts report is not specified) */
    CHECK(strncmp(events, "start A@0 start C@250 start B@500 done ", 39) == 0);
    CHECK(strstr(events, "done A ECANCELED@600"));
    CHECK(strstr(events, "done B ECANCELED@600"));
    CHECK(strstr(events, "done C ECANCELED@600"));
    size_t len = strlen(events);
    CHECK(len > 20 && strcmp(events + len - 17, "=> ECANCELED @600") == 0);
}

static int he_cancelled_scope(void *arg) {
    (void)arg;
    static const struct script s[] = {{"A", "::1", 0, 0}};
    script = s;
    nscript = 1;
    nest_connect_options o;
    nest_connect_options_init(&o);
    o.resolve = stub_resolve;
    o.attempt = hook;
    nest_scope sc;
    nest_scope_enter(&sc, NEST_FOREVER);
    nest_scope_cancel(&sc);
    int rc = nest_tcp_connect("example.test", 1, &o, &cli);
    note("=> %s", nest_err_name(rc));
    nest_scope_exit(&sc, rc);
    return 0;
}

NEST_TEST(connect_in_cancelled_scope_starts_no_attempt) {
    CHECK_EQ(run_mock(he_cancelled_scope, NULL), 0);
    CHECK_STREQ(events, "=> ECANCELED");
}

/* ---- Happy Eyeballs with real sockets ---------------------------------------- */

static nest_sockaddr real_addrs[4];
static int nreal;

static int real_resolve(void *arg, const char *host, int p, int family, int flags,
                        nest_sockaddr *out, size_t max) {
    (void)arg, (void)host, (void)p, (void)family, (void)flags;
    for (int i = 0; i < nreal && (size_t)i < max; i++) out[i] = real_addrs[i];
    return nreal;
}

static void real_report(void *arg, const nest_sockaddr *addr, int rc) {
    (void)arg;
    note("%s %s@%lld", nest_sockaddr_family(addr) == AF_INET6 ? "v6" : (nest_sockaddr_port(addr) == full_port ? "full" : "v4"), nest_err_name(rc), ms());
}

static int real_he(void *arg) {
    int with_v6 = arg != NULL;
    listen_on("127.0.0.1");
    make_full_listener();
    nreal = 0;
    if (with_v6) CHECK_EQ(nest_sockaddr_ip(&real_addrs[nreal++], "::1", port), 0); /* no v6 listener */
    CHECK_EQ(nest_sockaddr_ip(&real_addrs[nreal++], "127.0.0.1", full_port), 0);
    CHECK_EQ(nest_sockaddr_ip(&real_addrs[nreal++], "127.0.0.1", port), 0);
    int before = count_fds();
    nest_connect_options o;
    nest_connect_options_init(&o);
    o.resolve = real_resolve;
    o.report = real_report;
    int rc = nest_tcp_connect("whatever", 0, &o, &cli);
    note("=> %s @%lld fds %+d", nest_err_name(rc), ms(), count_fds() - before);
    nest_stream_close(&cli.stream);
    drop_full_listener();
    nest_listener_close(&lis);
    return 0;
}

/* The first attempt hangs on a full queue; the second, 250 ms later,
 * connects; the first's socket is closed. */
NEST_TEST(happy_eyeballs_real_sockets_loser_is_closed) {
    CHECK_EQ(run_mock(real_he, NULL), 0);
    CHECK_STREQ(events, "v4 OK@250 full ECANCELED@250 => OK @250 fds +1");
}

/* ::1 has no listener: refused at once, so IPv4 starts at once (the
 * interleaving puts the full listener's v4 address second, the good one
 * third: it starts 250 ms after the hanging one). */
NEST_TEST(happy_eyeballs_real_sockets_ipv6_refused_falls_back) {
    if (!have_ipv6_loopback(SOCK_STREAM)) NEST_SKIP("no IPv6 loopback (::1) on this machine");
    CHECK_EQ(run_mock(real_he, "v6"), 0);
    CHECK_STREQ(events, "v6 ECONNREFUSED@0 v4 OK@250 full ECANCELED@250 => OK @250 fds +1");
}

/* ---- out of memory ------------------------------------------------------------ */

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

static int oom_accept(void *arg) {
    (void)arg;
    nest_socket_stream s;
    int rc = nest_listener_accept(&lis, &s, NULL);
    if (rc < 0) return rc;
    char buf[8];
    ssize_t n = nest_stream_receive_some(&s.stream, buf, sizeof buf);
    if (n > 0) rc = nest_stream_send_all(&s.stream, buf, (size_t)n, NULL);
    else rc = n < 0 ? (int)n : -EPROTO;
    nest_stream_close(&s.stream);
    return rc;
}

static int oom_program(void *arg) {
    (void)arg;
    if (nest_tcp_listen("127.0.0.1", 0, NULL, &lis, 1) != 1) return -EPROTO;
    port = nest_listener_port(&lis);
    nest_nursery n;
    nest_nursery_open(&n);
    int rc = nest_spawn(&n, oom_accept, NULL);
    nest_socket_stream c;
    if (rc == 0) rc = nest_tcp_connect("127.0.0.1", port, NULL, &c);
    if (rc == 0) {
        rc = send_str(&c.stream, "echo");
        char buf[8];
        ssize_t got = 0;
        while (rc == 0 && got < 4) {
            ssize_t r = nest_stream_receive_some(&c.stream, buf + got, sizeof buf - (size_t)got);
            if (r <= 0) rc = r < 0 ? (int)r : -EPROTO;
            else got += r;
        }
        nest_stream_close(&c.stream);
    }
    rc = nest_nursery_close(&n, rc);
    nest_listener_close(&lis);
    return rc;
}

NEST_TEST(connect_accept_out_of_memory_at_every_allocation) {
    nest_set_allocator(failing_alloc, NULL);
    int before = count_fds();
    for (fail_at = 1;; fail_at++) {
        calls = 0;
        live_blocks = 0;
        int rc = run_mock(oom_program, NULL);
        if (rc != 0 && rc != -ENOMEM) fprintf(stderr, "fail_at %ld: %s\n", fail_at, nest_err_name(rc));
        CHECK(rc == 0 || rc == -ENOMEM);
        CHECK_EQ(live_blocks, 0);
        CHECK_EQ(count_fds(), before);
        if (rc == 0 && calls < fail_at) break;
        CHECK(fail_at < 10000);
    }
    CHECK(fail_at > 5);
    nest_set_allocator(NULL, NULL);
}
