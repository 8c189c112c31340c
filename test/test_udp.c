/*
 * test/test_udp.c - UDP sockets (nest/net.h).
 *
 * Covers: a round trip on 127.0.0.1 and on ::1 (skipped without IPv6
 * loopback) with the sender's address reported; receive_from blocks until
 * a datagram arrives; a cancelled receive (deadline, mock clock) consumed
 * nothing - the datagram sent afterwards is the one received, and one sent
 * before a cancelled-scope call is still there; send_to and receive_from in
 * a cancelled scope fail at once without effect; a datagram longer than
 * the buffer is truncated; two receivers on one socket get -EBUSY; closing
 * the socket under a blocked receiver wakes it with NEST_ECLOSED even if
 * the closer frees the struct at once; operations on a closed socket.
 *
 * Only loopback addresses; the mock clock with autojump 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "support.h"
#include "nest.h"
#include "nest/net.h"

static nest_udp_socket ua, ub;
static nest_sockaddr addr_a, addr_b;

static void open_two(const char *host) {
    nest_sockaddr local;
    CHECK_EQ(nest_sockaddr_ip(&local, host, 0), 0);
    CHECK_EQ(nest_udp_open(&ua, &local), 0);
    CHECK_EQ(nest_udp_open(&ub, &local), 0);
    CHECK_EQ(nest_udp_local_address(&ua, &addr_a), 0);
    CHECK_EQ(nest_udp_local_address(&ub, &addr_b), 0);
    CHECK(nest_sockaddr_port(&addr_a) > 0);
}

static void close_two(void) {
    nest_udp_close(&ua);
    nest_udp_close(&ub);
}

/* ---- round trip ---------------------------------------------------------- */

static int responder(void *arg) {
    (void)arg;
    char buf[64];
    nest_sockaddr from;
    ssize_t n = nest_udp_receive_from(&ub, buf, sizeof buf, &from);
    CHECK(n > 0);
    note("b got %.*s @%lld", (int)n, buf, ms());
    CHECK_EQ(nest_sockaddr_port(&from), nest_sockaddr_port(&addr_a));
    CHECK_EQ(nest_udp_send_to(&ub, "pong", 4, &from), 4);
    return 0;
}

static int roundtrip(void *arg) {
    open_two(arg);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, responder, NULL), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0); /* b blocks in receive_from */
    CHECK_EQ(nest_sleep(NEST_MSEC(10)), 0);
    CHECK_EQ(nest_udp_send_to(&ua, "ping", 4, &addr_b), 4);
    char buf[64];
    nest_sockaddr from;
    ssize_t r = nest_udp_receive_from(&ua, buf, sizeof buf, &from);
    note("a got %.*s from b %d", (int)r, buf, nest_sockaddr_port(&from) == nest_sockaddr_port(&addr_b));
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    close_two();
    return 0;
}

NEST_TEST(udp_round_trip_on_ipv4_loopback) {
    CHECK_EQ(run_mock(roundtrip, "127.0.0.1"), 0);
    CHECK_STREQ(events, "b got ping @10 a got pong from b 1");
}

NEST_TEST(udp_round_trip_on_ipv6_loopback) {
    if (!have_ipv6_loopback(SOCK_DGRAM)) NEST_SKIP("no IPv6 loopback (::1) on this machine");
    CHECK_EQ(run_mock(roundtrip, "::1"), 0);
    CHECK_STREQ(events, "b got ping @10 a got pong from b 1");
}

/* ---- cancellation -------------------------------------------------------- */

static int late_datagram(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(3)), 0);
    CHECK_EQ(nest_udp_send_to(&ua, "second", 6, &addr_b), 6);
    return 0;
}

static int cancelled_receive(void *arg) {
    (void)arg;
    open_two("127.0.0.1");
    char buf[16];
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(2));
    ssize_t n = nest_udp_receive_from(&ub, buf, sizeof buf, NULL);
    note("receive %zd @%lld", n, ms());
    note("exit %d", nest_scope_exit(&s, (int)n));
    nest_nursery nn;
    nest_nursery_open(&nn);
    CHECK_EQ(nest_spawn(&nn, late_datagram, NULL), 0);
    n = nest_udp_receive_from(&ub, buf, sizeof buf, NULL);
    note("then %.*s @%lld", (int)n, buf, ms());
    CHECK_EQ(nest_nursery_close(&nn, 0), 0);

    /* In a cancelled scope both calls fail at once and do nothing. */
    CHECK_EQ(nest_udp_send_to(&ua, "kept", 4, &addr_b), 4);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    ssize_t r1 = nest_udp_receive_from(&ub, buf, sizeof buf, NULL);
    ssize_t r2 = nest_udp_send_to(&ua, "lost", 4, &addr_b);
    note("cancelled %zd %zd", r1, r2);
    nest_scope_exit(&s, -ECANCELED);
    CHECK_EQ(nest_udp_send_to(&ua, "next", 4, &addr_b), 4);
    n = nest_udp_receive_from(&ub, buf, sizeof buf, NULL);
    note("%.*s", (int)n, buf);
    n = nest_udp_receive_from(&ub, buf, sizeof buf, NULL);
    note("%.*s", (int)n, buf);
    close_two();
    return 0;
}

NEST_TEST(cancelled_receive_consumes_no_datagram) {
    CHECK_EQ(run_mock(cancelled_receive, NULL), 0);
    CHECK_STREQ(events, "receive -125 @2000 exit 0 then second @5000 cancelled -125 -125 kept next");
}

/* ---- truncation, busy, close --------------------------------------------- */

static int truncation(void *arg) {
    (void)arg;
    open_two("127.0.0.1");
    CHECK_EQ(nest_udp_send_to(&ua, "0123456789", 10, &addr_b), 10);
    char buf[4];
    note("%zd", nest_udp_receive_from(&ub, buf, sizeof buf, NULL));
    CHECK_EQ(nest_udp_send_to(&ua, "x", 1, &addr_b), 1);
    note("%zd", nest_udp_receive_from(&ub, buf, sizeof buf, NULL)); /* the rest was dropped */
    close_two();
    return 0;
}

NEST_TEST(long_datagram_is_truncated_to_the_buffer) {
    CHECK_EQ(run_mock(truncation, NULL), 0);
    CHECK_STREQ(events, "4 1");
}

static nest_udp_socket *heap_udp;

static int blocked_receiver(void *arg) {
    (void)arg;
    char c;
    note("receiver %s", nest_err_name((int)nest_udp_receive_from(heap_udp, &c, 1, NULL)));
    return 0;
}

static int busy_then_close(void *arg) {
    (void)arg;
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    char c;
    note("second %s", nest_err_name((int)nest_udp_receive_from(heap_udp, &c, 1, NULL)));
    CHECK_EQ(nest_udp_close(heap_udp), 0);
    CHECK_EQ(nest_udp_close(heap_udp), 0);
    note("closed %s %s", nest_err_name((int)nest_udp_receive_from(heap_udp, &c, 1, NULL)),
         nest_err_name((int)nest_udp_send_to(heap_udp, "x", 1, &addr_a)));
    free(heap_udp); /* at once: the woken receiver must not touch it */
    return 0;
}

static int close_blocked(void *arg) {
    (void)arg;
    heap_udp = malloc(sizeof *heap_udp);
    nest_sockaddr local;
    CHECK_EQ(nest_sockaddr_ip(&local, "127.0.0.1", 0), 0);
    CHECK_EQ(nest_udp_open(heap_udp, &local), 0);
    CHECK_EQ(nest_udp_local_address(heap_udp, &addr_a), 0);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, blocked_receiver, NULL), 0);
    CHECK_EQ(nest_spawn(&n, busy_then_close, NULL), 0);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(second_receiver_is_busy_and_close_wakes_the_first) {
    CHECK_EQ(run_mock(close_blocked, NULL), 0);
    CHECK_STREQ(events, "second EBUSY closed NEST_ECLOSED NEST_ECLOSED receiver NEST_ECLOSED");
}
