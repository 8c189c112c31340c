/*
 * test/test_chan.c - memory channels (nest/chan.h, lib/chan.c).
 *
 * Covers: rendezvous (capacity 0) in both directions; buffering up to the
 * capacity; unbounded growth, wrap-around while growing, giving memory back;
 * FIFO order of items, of blocked senders and of blocked receivers; the
 * direct hand-off to a blocked receiver (the buffer is never used:
 * stats.peak stays 0, stats.direct counts it) and from a blocked sender; a
 * full buffer refilled from the longest-blocked sender; end of channel after
 * the drain; broken sends (and the buffer dropped); closed handles;
 * closing wakes both sides, and the task blocked on the very handle closed;
 * clone/close accounting (the channel ends only when the last send clone
 * closes, and is freed with its last handle); "cancelled means it did not
 * happen" for send and receive, at entry and while blocked, and a timed-out
 * receiver taken out of the queue so the next item goes to the next
 * receiver; a completed operation stays completed when cancelled before it
 * returns; every call yields once (also when it fails); try_ variants;
 * statistics; out of memory on open and on growth; zero-sized items; misuse
 * aborts; a seeded random stress run with cancellations.
 *
 * Every case runs on the mock clock (autojump 0) under a counting allocator
 * and checks that every byte is freed when nest_run returns.
 */
#define _GNU_SOURCE

#include "harness.h"
#include "support.h"
#include "nest.h"
#include "nest/chan.h"

/* ---- helpers ---------------------------------------------------------- */

/* The channel most cases use, opened by the case's root task. */
static nest_chan_tx tx;
static nest_chan_rx rx;

static nest_chan_stats stats(void) {
    nest_chan_stats st;
    CHECK_EQ(nest_chan_rx_stats(&rx, &st), 0);
    return st;
}

/* Opens tx/rx, runs children[] to completion, closes both handles. */
static size_t open_cap;
static int with_channel(void *arg) {
    CHECK_EQ(nest_chan_open(&tx, &rx, sizeof(int), open_cap), 0);
    int rc = spawn_children(arg);
    nest_chan_tx_close(&tx); /* NEST_ECLOSED if a child closed it */
    nest_chan_rx_close(&rx);
    return rc;
}

static int run_children_with_channel(size_t capacity) {
    open_cap = capacity;
    return run_counted(with_channel);
}

static void send_int(nest_chan_tx *t, int v, int expect) { CHECK_EQ(nest_chan_send(t, &v), expect); }

static int recv_int(nest_chan_rx *r) {
    int v = -1;
    CHECK_EQ(nest_chan_recv(r, &v), 0);
    return v;
}

/* ---- rendezvous ------------------------------------------------------- */

static int sender_at_0(void *arg) {
    (void)arg;
    send_int(&tx, 42, 0);
    note("sent@%lld", ms());
    return 0;
}

static int receiver_at_1s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(stats().waiting_send, 1);
    int v = recv_int(&rx);
    note("recv %d@%lld", v, ms());
    return 0;
}

/* Capacity 0: the send completes only when the receiver takes the item. */
NEST_TEST(rendezvous_send_waits_for_receiver) {
    children[0] = sender_at_0;
    children[1] = receiver_at_1s;
    children[2] = NULL;
    events[0] = 0;
    CHECK_EQ(run_children_with_channel(0), 0);
    CHECK_STREQ(events, "sent@1000 recv 42@1000"); /* the sender was woken first */
}

static int receiver_at_0(void *arg) {
    (void)arg;
    int v = recv_int(&rx);
    note("recv %d@%lld", v, ms());
    return 0;
}

static int sender_at_1s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(stats().waiting_recv, 1);
    send_int(&tx, 7, 0);
    note("sent@%lld", ms());
    return 0;
}

NEST_TEST(rendezvous_receive_waits_for_sender) {
    children[0] = receiver_at_0;
    children[1] = sender_at_1s;
    children[2] = NULL;
    events[0] = 0;
    CHECK_EQ(run_children_with_channel(0), 0);
    /* The receiver was woken first, the sender yields after its hand-off. */
    CHECK_STREQ(events, "recv 7@1000 sent@1000");
}

/* ---- buffering -------------------------------------------------------- */

static int send_five(void *arg) {
    (void)arg;
    for (int i = 1; i <= 5; i++) {
        send_int(&tx, i, 0);
        note("s%d@%lld", i, ms());
    }
    return 0;
}

static int recv_five_from_1s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    nest_chan_stats st = stats();
    CHECK_EQ(st.buffered, 3);
    CHECK_EQ(st.capacity, 3);
    CHECK_EQ(st.waiting_send, 1);
    CHECK_EQ(st.peak, 3);
    for (int i = 1; i <= 5; i++) {
        CHECK_EQ(recv_int(&rx), i);
        note("r%d", i);
    }
    return 0;
}

/* Capacity 3: three sends complete at once, the fourth waits for room. */
NEST_TEST(buffer_holds_up_to_capacity) {
    children[0] = send_five;
    children[1] = recv_five_from_1s;
    children[2] = NULL;
    events[0] = 0;
    CHECK_EQ(run_children_with_channel(3), 0);
    CHECK_STREQ(events, "s1@0 s2@0 s3@0 s4@1000 r1 s5@1000 r2 r3 r4 r5");
}

static int unbounded_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_chan_open(&tx, &rx, sizeof(int), NEST_CHAN_UNBOUNDED), 0);
    /* Move the ring's head first, so that growing has to unwrap it. */
    for (int i = 0; i < 10; i++) send_int(&tx, -1, 0);
    for (int i = 0; i < 10; i++) CHECK_EQ(recv_int(&rx), -1);
    for (int i = 0; i < 5; i++) send_int(&tx, -2, 0);
    for (int i = 0; i < 5; i++) CHECK_EQ(recv_int(&rx), -2);
    long before = mem.live_bytes;
    for (int i = 0; i < 10000; i++) CHECK_EQ(nest_chan_try_send(&tx, &i), 0);
    nest_chan_stats st = stats();
    CHECK_EQ(st.buffered, 10000);
    CHECK_EQ(st.peak, 10000);
    CHECK_EQ(st.capacity, NEST_CHAN_UNBOUNDED);
    CHECK_EQ(st.waiting_send, 0);
    CHECK(mem.live_bytes >= before + 10000 * (long)sizeof(int));
    for (int i = 0; i < 10000; i++) {
        int v = -1;
        CHECK_EQ(nest_chan_try_recv(&rx, &v), 0);
        CHECK_EQ(v, i);
    }
    /* Drained: the big buffer was given back (all of it: the 16-item one
     * of before too). */
    CHECK(mem.live_bytes <= before);
    CHECK_EQ(nest_chan_tx_close(&tx), 0);
    CHECK_EQ(nest_chan_rx_close(&rx), 0);
    return 0;
}

NEST_TEST(unbounded_grows_keeps_order_and_gives_memory_back) {
    CHECK_EQ(run_counted(unbounded_body), 0);
}

/* ---- FIFO ----------------------------------------------------------- */

static int blocked_sender(void *arg) {
    int i = (int)(intptr_t)arg;
    CHECK_EQ(nest_sleep(NEST_MSEC(i)), 0); /* arrive in index order */
    send_int(&tx, 100 + i, 0);
    note("S%d", i);
    return 0;
}

static int late_receiver_of_three(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(stats().waiting_send, 3);
    for (int i = 0; i < 3; i++) note("R%d", recv_int(&rx));
    return 0;
}

/* Blocked senders complete in the order they blocked, and their items
 * arrive in that order. */
NEST_TEST(blocked_senders_are_served_fifo) {
    children[0] = blocked_sender;
    children[1] = blocked_sender;
    children[2] = blocked_sender;
    children[3] = late_receiver_of_three;
    children[4] = NULL;
    events[0] = 0;
    CHECK_EQ(run_children_with_channel(0), 0);
    CHECK_STREQ(events, "S0 R100 S1 R101 S2 R102");
}

static int blocked_receiver(void *arg) {
    int i = (int)(intptr_t)arg;
    CHECK_EQ(nest_sleep(NEST_MSEC(i)), 0);
    note("R%d:%d", i, recv_int(&rx));
    return 0;
}

static int late_sender_of_three(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(stats().waiting_recv, 3);
    for (int i = 0; i < 3; i++) send_int(&tx, 10 + i, 0);
    note("sent");
    return 0;
}

NEST_TEST(blocked_receivers_are_served_fifo) {
    children[0] = blocked_receiver;
    children[1] = blocked_receiver;
    children[2] = blocked_receiver;
    children[3] = late_sender_of_three;
    children[4] = NULL;
    events[0] = 0;
    CHECK_EQ(run_children_with_channel(4), 0);
    CHECK_STREQ(events, "R0:10 R1:11 R2:12 sent");
}

static int direct_receiver(void *arg) {
    (void)arg;
    int v = recv_int(&rx);
    note("got %d", v);
    return 0;
}

static int direct_sender(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    send_int(&tx, 5, 0);
    nest_chan_stats st = stats();
    CHECK_EQ(st.sent, 1);
    CHECK_EQ(st.direct, 1);  /* handed over, */
    CHECK_EQ(st.peak, 0);    /* the buffer never held it */
    CHECK_EQ(st.buffered, 0);
    /* With nobody waiting, the next one is buffered. */
    send_int(&tx, 6, 0);
    st = stats();
    CHECK_EQ(st.direct, 1);
    CHECK_EQ(st.peak, 1);
    CHECK_EQ(recv_int(&rx), 6);
    return 0;
}

/* A receiver blocked on a buffered channel gets the item straight from the
 * sender, not through the buffer. */
NEST_TEST(blocked_receiver_gets_item_directly) {
    children[0] = direct_receiver;
    children[1] = direct_sender;
    children[2] = NULL;
    events[0] = 0;
    CHECK_EQ(run_children_with_channel(8), 0);
    CHECK_STREQ(events, "got 5");
}

static int fill_then_block(void *arg) {
    int i = (int)(intptr_t)arg;
    if (i == 0) {
        send_int(&tx, 1, 0);
        send_int(&tx, 2, 0);
        note("buffered");
    }
    CHECK_EQ(nest_sleep(NEST_MSEC(1 + i)), 0);
    send_int(&tx, 3 + i, 0); /* blocks: the buffer is full */
    note("S%d@%lld", 3 + i, ms());
    return 0;
}

static int drain_slowly(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(stats().waiting_send, 2);
    for (int i = 1; i <= 4; i++) {
        int v = recv_int(&rx);
        CHECK_EQ(v, i);
        nest_chan_stats st = stats();
        note("R%d(%zu/%zu)", v, st.buffered, st.waiting_send);
        CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    }
    return 0;
}

/* Receiving from a full buffer moves the longest-blocked sender's item in
 * behind the others. */
NEST_TEST(full_buffer_refills_from_blocked_sender_fifo) {
    children[0] = fill_then_block;
    children[1] = fill_then_block;
    children[2] = drain_slowly;
    children[3] = NULL;
    events[0] = 0;
    CHECK_EQ(run_children_with_channel(2), 0);
    CHECK_STREQ(events, "buffered S3@1000 R1(2/1) S4@2000 R2(2/0) R3(1/0) R4(0/0)");
}

/* ---- end, broken, closed ------------------------------------------ */

static int end_after_drain_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_chan_open(&tx, &rx, sizeof(int), 3), 0);
    send_int(&tx, 1, 0);
    send_int(&tx, 2, 0);
    CHECK_EQ(nest_chan_tx_close(&tx), 0);
    CHECK_EQ(stats().tx_open, 0);
    CHECK_EQ(recv_int(&rx), 1);
    CHECK_EQ(recv_int(&rx), 2);
    int v = 99;
    CHECK_EQ(nest_chan_recv(&rx, &v), NEST_EEND);
    CHECK_EQ(nest_chan_recv(&rx, &v), NEST_EEND);
    CHECK_EQ(nest_chan_try_recv(&rx, &v), NEST_EEND);
    CHECK_EQ(v, 99);
    CHECK_EQ(nest_chan_rx_close(&rx), 0);
    return 0;
}

/* Closing the send side keeps what is buffered; the end comes after. */
NEST_TEST(end_of_channel_after_drain) { CHECK_EQ(run_counted(end_after_drain_body), 0); }

static int recv_until_end(void *arg) {
    int i = (int)(intptr_t)arg;
    int v;
    int rc = nest_chan_recv(&rx, &v);
    note("R%d %s@%lld", i, nest_err_name(rc), ms());
    return 0;
}

static int close_tx_at_1s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(stats().waiting_recv, 2);
    CHECK_EQ(nest_chan_tx_close(&tx), 0);
    note("closed");
    return 0;
}

NEST_TEST(closing_last_sender_wakes_receivers_with_end) {
    children[0] = recv_until_end;
    children[1] = recv_until_end;
    children[2] = close_tx_at_1s;
    children[3] = NULL;
    events[0] = 0;
    CHECK_EQ(run_children_with_channel(0), 0);
    CHECK_STREQ(events, "closed R0 NEST_EEND@1000 R1 NEST_EEND@1000");
}

static int send_blocked_until_broken(void *arg) {
    int i = (int)(intptr_t)arg;
    int v = i;
    int rc = nest_chan_send(&tx, &v);
    note("S%d %s@%lld", i, nest_err_name(rc), ms());
    return 0;
}

static int close_rx_at_1s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    nest_chan_stats st = stats();
    CHECK_EQ(st.buffered, 1); /* S0's item; S1 and S2 wait */
    CHECK_EQ(st.waiting_send, 2);
    CHECK_EQ(nest_chan_rx_close(&rx), 0);
    note("closed");
    /* Every receive handle is closed: sending is broken at once. */
    int v = 0;
    CHECK_EQ(nest_chan_try_send(&tx, &v), NEST_EBROKEN);
    CHECK_EQ(nest_chan_send(&tx, &v), NEST_EBROKEN);
    nest_chan_stats st2;
    CHECK_EQ(nest_chan_tx_stats(&tx, &st2), 0);
    CHECK_EQ(st2.buffered, 0); /* the buffered item was dropped */
    CHECK_EQ(st2.rx_open, 0);
    CHECK_EQ(st2.waiting_send, 0);
    return 0;
}

NEST_TEST(closing_last_receiver_breaks_senders_and_drops_buffer) {
    children[0] = send_blocked_until_broken;
    children[1] = send_blocked_until_broken;
    children[2] = send_blocked_until_broken;
    children[3] = close_rx_at_1s;
    children[4] = NULL;
    events[0] = 0;
    CHECK_EQ(run_children_with_channel(1), 0);
    CHECK_STREQ(events, "S0 OK@0 closed S1 NEST_EBROKEN@1000 S2 NEST_EBROKEN@1000");
}

static int closed_handles_body(void *arg) {
    (void)arg;
    nest_chan_tx t2;
    nest_chan_rx r2;
    nest_chan_stats st;
    int v = 1;
    CHECK_EQ(nest_chan_open(&tx, &rx, sizeof(int), 4), 0);
    CHECK_EQ(nest_chan_tx_clone(&t2, &tx), 0);
    CHECK_EQ(nest_chan_rx_clone(&r2, &rx), 0);
    CHECK_EQ(nest_chan_tx_close(&tx), 0);
    CHECK_EQ(nest_chan_rx_close(&rx), 0);
    /* Using a handle you closed fails, also when the channel lives on. */
    CHECK_EQ(nest_chan_send(&tx, &v), NEST_ECLOSED);
    CHECK_EQ(nest_chan_try_send(&tx, &v), NEST_ECLOSED);
    CHECK_EQ(nest_chan_recv(&rx, &v), NEST_ECLOSED);
    CHECK_EQ(nest_chan_try_recv(&rx, &v), NEST_ECLOSED);
    CHECK_EQ(nest_chan_tx_clone(&t2, &tx), NEST_ECLOSED);
    CHECK_EQ(nest_chan_rx_clone(&r2, &rx), NEST_ECLOSED);
    CHECK_EQ(nest_chan_tx_stats(&tx, &st), NEST_ECLOSED);
    CHECK_EQ(nest_chan_rx_stats(&rx, &st), NEST_ECLOSED);
    CHECK_EQ(nest_chan_tx_close(&tx), NEST_ECLOSED);
    CHECK_EQ(nest_chan_rx_close(&rx), NEST_ECLOSED);
    /* The clones still work. */
    CHECK_EQ(nest_chan_send(&t2, &v), 0);
    CHECK_EQ(nest_chan_tx_stats(&t2, &st), 0);
    CHECK_EQ(st.tx_open, 1);
    CHECK_EQ(st.rx_open, 1);
    CHECK_EQ(recv_int(&r2), 1);
    CHECK_EQ(nest_chan_tx_close(&t2), 0);
    CHECK_EQ(nest_chan_rx_close(&r2), 0);
    /* After the channel is gone too. */
    CHECK_EQ(nest_chan_send(&t2, &v), NEST_ECLOSED);
    CHECK_EQ(nest_chan_recv(&r2, &v), NEST_ECLOSED);
    /* A closed handle struct can be opened again. */
    CHECK_EQ(nest_chan_open(&tx, &rx, 0, 0), 0);
    CHECK_EQ(nest_chan_tx_close(&tx), 0);
    CHECK_EQ(nest_chan_rx_close(&rx), 0);
    return 0;
}

NEST_TEST(closed_handle_fails_with_eclosed) { CHECK_EQ(run_counted(closed_handles_body), 0); }

static nest_chan_rx rx_clone;

/* A task blocked on a handle that another task closes wakes with
 * NEST_ECLOSED; the channel lives on through the other handles. */
static nest_chan_tx btx, btx_clone;
static nest_chan_rx brx;

static int blocked_recv_on_rx_clone(void *arg) {
    (void)arg;
    int v;
    int rc = nest_chan_recv(&rx_clone, &v);
    note("R %s@%lld", nest_err_name(rc), ms());
    return 0;
}

static int blocked_send_on_btx_clone(void *arg) {
    (void)arg;
    int v = 3;
    int rc = nest_chan_send(&btx_clone, &v);
    note("S %s@%lld", nest_err_name(rc), ms());
    return 0;
}

static int close_both_clones_at_1s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(stats().waiting_recv, 1);
    CHECK_EQ(nest_chan_rx_close(&rx_clone), 0);
    CHECK_EQ(nest_chan_tx_close(&btx_clone), 0);
    note("closed");
    nest_chan_stats st = stats();
    CHECK_EQ(st.rx_open, 1);
    CHECK_EQ(st.waiting_recv, 0);
    CHECK_EQ(nest_chan_tx_stats(&btx, &st), 0);
    CHECK_EQ(st.tx_open, 1);
    CHECK_EQ(st.waiting_send, 0);
    return 0;
}

static int close_wakes_same_handle_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_chan_open(&tx, &rx, sizeof(int), 0), 0);
    CHECK_EQ(nest_chan_rx_clone(&rx_clone, &rx), 0);
    CHECK_EQ(nest_chan_open(&btx, &brx, sizeof(int), 0), 0);
    CHECK_EQ(nest_chan_tx_clone(&btx_clone, &btx), 0);
    children[0] = blocked_recv_on_rx_clone;
    children[1] = blocked_send_on_btx_clone;
    children[2] = close_both_clones_at_1s;
    children[3] = NULL;
    CHECK_EQ(spawn_children(NULL), 0);
    CHECK_EQ(nest_chan_tx_close(&tx), 0);
    CHECK_EQ(nest_chan_rx_close(&rx), 0);
    CHECK_EQ(nest_chan_tx_close(&btx), 0);
    CHECK_EQ(nest_chan_rx_close(&brx), 0);
    return 0;
}

NEST_TEST(closing_a_handle_wakes_its_own_blocked_users_with_eclosed) {
    events[0] = 0;
    CHECK_EQ(run_counted(close_wakes_same_handle_body), 0);
    CHECK_STREQ(events, "closed R NEST_ECLOSED@1000 S NEST_ECLOSED@1000");
}

/* ---- clone/close accounting ----------------------------------------- */

static nest_chan_tx producers[3];

static int producer(void *arg) {
    int i = (int)(intptr_t)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1 + i)), 0);
    send_int(&producers[i], i, 0);
    CHECK_EQ(nest_chan_tx_close(&producers[i]), 0);
    note("P%d closed", i);
    return 0;
}

static int consumer_until_end(void *arg) {
    (void)arg;
    int v, rc;
    while ((rc = nest_chan_recv(&rx, &v)) == 0) note("got %d@%lld", v, ms());
    CHECK_EQ(rc, NEST_EEND);
    note("end@%lld", ms());
    return 0;
}

static int clone_accounting_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_chan_open(&producers[0], &rx, sizeof(int), 0), 0);
    CHECK_EQ(nest_chan_tx_clone(&producers[1], &producers[0]), 0);
    CHECK_EQ(nest_chan_tx_clone(&producers[2], &producers[1]), 0);
    CHECK_EQ(stats().tx_open, 3);
    children[0] = producer;
    children[1] = producer;
    children[2] = producer;
    children[3] = consumer_until_end;
    children[4] = NULL;
    CHECK_EQ(spawn_children(NULL), 0);
    CHECK_EQ(stats().tx_open, 0);
    CHECK(mem.live_bytes > 0); /* the channel lives while rx is open */
    CHECK_EQ(nest_chan_rx_close(&rx), 0);
    return 0;
}

/* The receive side ends only when the last of three send clones closes. */
NEST_TEST(channel_ends_when_last_sender_clone_closes) {
    events[0] = 0;
    CHECK_EQ(run_counted(clone_accounting_body), 0);
    CHECK_STREQ(events, "got 0@1000 P0 closed got 1@2000 P1 closed got 2@3000 P2 closed end@3000");
}

static int freed_with_last_handle_body(void *arg) {
    (void)arg;
    long base = mem.live_bytes;
    nest_chan_tx t2;
    nest_chan_rx r2;
    /* Orders: rx then tx, tx then rx, clones outliving the originals. */
    CHECK_EQ(nest_chan_open(&tx, &rx, 16, 8), 0);
    CHECK(mem.live_bytes >= base + 16 * 8);
    CHECK_EQ(nest_chan_rx_close(&rx), 0);
    CHECK(mem.live_bytes > base);
    CHECK_EQ(nest_chan_tx_close(&tx), 0);
    CHECK_EQ(mem.live_bytes, base);
    CHECK_EQ(nest_chan_open(&tx, &rx, 16, NEST_CHAN_UNBOUNDED), 0);
    char item[16] = "abc";
    for (int i = 0; i < 100; i++) CHECK_EQ(nest_chan_try_send(&tx, item), 0);
    CHECK_EQ(nest_chan_tx_clone(&t2, &tx), 0);
    CHECK_EQ(nest_chan_rx_clone(&r2, &rx), 0);
    CHECK_EQ(nest_chan_tx_close(&tx), 0);
    CHECK_EQ(nest_chan_rx_close(&rx), 0);
    CHECK_EQ(nest_chan_tx_close(&t2), 0);
    CHECK(mem.live_bytes > base);
    CHECK_EQ(nest_chan_rx_close(&r2), 0); /* last: frees buffer and channel */
    CHECK_EQ(mem.live_bytes, base);
    return 0;
}

NEST_TEST(channel_is_freed_with_its_last_handle) { CHECK_EQ(run_counted(freed_with_last_handle_body), 0); }

/* ---- cancellation --------------------------------------------------- */

static int send_with_timeout(void *arg) {
    (void)arg;
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(1));
    int v = 1;
    int rc = nest_chan_send(&tx, &v);
    note("S %s@%lld", nest_err_name(rc), ms());
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    CHECK(nest_scope_cancelled_caught(&s));
    nest_chan_stats st = stats();
    CHECK_EQ(st.waiting_send, 0); /* out of the queue */
    CHECK_EQ(st.buffered, 1);     /* only the first item */
    CHECK_EQ(st.sent, 1);
    int out;
    CHECK_EQ(nest_chan_try_recv(&rx, &out), 0);
    CHECK_EQ(out, 0);
    CHECK_EQ(nest_chan_try_recv(&rx, &out), -EAGAIN); /* never enqueued */
    return 0;
}

static int fill_one_then_time_out(void *arg) {
    int v = 0;
    send_int(&tx, v, 0); /* fills the capacity-1 buffer */
    return send_with_timeout(arg);
}

/* A send that timed out while blocked did not enqueue its item. */
NEST_TEST(cancelled_send_did_not_enqueue) {
    children[0] = fill_one_then_time_out;
    children[1] = NULL;
    events[0] = 0;
    CHECK_EQ(run_children_with_channel(1), 0);
    CHECK_STREQ(events, "S ECANCELED@1000");
}

static int recv_with_timeout(void *arg) {
    (void)arg;
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(1));
    int v = -1;
    int rc = nest_chan_recv(&rx, &v);
    note("R1 %s %d@%lld", nest_err_name(rc), v, ms());
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    return 0;
}

static int recv_patiently(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_MSEC(1)), 0); /* queue behind R1 */
    int v = recv_int(&rx);
    note("R2 %d@%lld", v, ms());
    return 0;
}

static int send_at_2s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(2)), 0);
    CHECK_EQ(stats().waiting_recv, 1);
    send_int(&tx, 77, 0);
    return 0;
}

/* A receiver that timed out is out of the queue: the next item goes to the
 * receiver behind it, and the timed-out one got nothing. */
NEST_TEST(timed_out_receiver_is_removed_from_queue) {
    children[0] = recv_with_timeout;
    children[1] = recv_patiently;
    children[2] = send_at_2s;
    children[3] = NULL;
    events[0] = 0;
    CHECK_EQ(run_children_with_channel(0), 0);
    CHECK_STREQ(events, "R1 ECANCELED -1@1000 R2 77@2000");
}

static int waiting_receiver(void *arg) {
    (void)arg;
    note("W %d", recv_int(&rx));
    return 0;
}

static int cancelled_at_entry(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    int v = 5;
    /* A receiver is waiting, yet the cancelled send does nothing. */
    CHECK_EQ(nest_chan_send(&tx, &v), -ECANCELED);
    CHECK_EQ(stats().waiting_recv, 1);
    CHECK_EQ(stats().sent, 0);
    note("cancelled");
    CHECK_EQ(nest_scope_exit(&s, -ECANCELED), 0);
    send_int(&tx, 6, 0);
    /* Now an item is buffered, yet the cancelled receive takes nothing;
     * and a closed handle is not even looked at. */
    send_int(&tx, 7, 0);
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    CHECK_EQ(nest_chan_recv(&rx, &v), -ECANCELED);
    CHECK_EQ(v, 5);
    CHECK_EQ(stats().buffered, 1);
    CHECK_EQ(nest_scope_exit(&s, -ECANCELED), 0);
    CHECK_EQ(recv_int(&rx), 7);
    return 0;
}

NEST_TEST(cancelled_at_entry_has_no_effect) {
    children[0] = waiting_receiver;
    children[1] = cancelled_at_entry;
    children[2] = NULL;
    events[0] = 0;
    CHECK_EQ(run_children_with_channel(2), 0);
    CHECK_STREQ(events, "cancelled W 6");
}

static int note_b(void *arg) {
    (void)arg;
    note("B");
    return 0;
}

static int cancelled_ops_do_not_yield(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    int v = 0;
    CHECK_EQ(nest_chan_send(&tx, &v), -ECANCELED);
    CHECK_EQ(nest_chan_recv(&rx, &v), -ECANCELED);
    note("A");
    CHECK_EQ(nest_scope_exit(&s, -ECANCELED), 0);
    return 0;
}

/* Cancelled at entry: fails at once, without yielding (B runs after A). */
NEST_TEST(cancelled_op_fails_without_yielding) {
    children[0] = cancelled_ops_do_not_yield;
    children[1] = note_b;
    children[2] = NULL;
    events[0] = 0;
    CHECK_EQ(run_children_with_channel(4), 0);
    CHECK_STREQ(events, "A B");
}

static nest_scope *receiver_scope;

static int receiver_in_scope(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    receiver_scope = &s;
    int v = -1;
    int rc = nest_chan_recv(&rx, &v);
    note("R %s %d cancelled=%d", nest_err_name(rc), v, nest_scope_cancel_called(&s));
    rc = nest_scope_exit(&s, rc);
    receiver_scope = NULL;
    return rc;
}

static int send_then_cancel_receiver(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    int v = 9;
    CHECK_EQ(nest_chan_try_send(&tx, &v), 0); /* handed over: it happened */
    nest_scope_cancel(receiver_scope);
    return 0;
}

/* An operation that completed is not undone by a cancellation that comes
 * before the task runs again: it returns success. */
NEST_TEST(completed_receive_survives_later_cancel) {
    children[0] = receiver_in_scope;
    children[1] = send_then_cancel_receiver;
    children[2] = NULL;
    events[0] = 0;
    CHECK_EQ(run_children_with_channel(0), 0);
    CHECK_STREQ(events, "R OK 9 cancelled=1");
}

/* ---- checkpoints ----------------------------------------------------- */

static int ops_that_need_not_wait(void *arg) {
    (void)arg;
    int v = 0;
    note("A0");
    send_int(&tx, 1, 0); /* room in the buffer */
    note("A1");
    CHECK_EQ(recv_int(&rx), 1); /* an item buffered */
    note("A2");
    CHECK_EQ(nest_chan_tx_close(&tx), 0);
    CHECK_EQ(nest_chan_recv(&rx, &v), NEST_EEND); /* fails, still yields */
    note("A3");
    CHECK_EQ(nest_chan_send(&tx, &v), NEST_ECLOSED);
    note("A4");
    return 0;
}

static int ticker(void *arg) {
    (void)arg;
    for (int i = 0; i < 5; i++) {
        note("B%d", i);
        CHECK_EQ(nest_checkpoint(), 0);
    }
    return 0;
}

/* Every send and receive yields once, whatever its outcome. */
NEST_TEST(every_operation_yields_once) {
    children[0] = ops_that_need_not_wait;
    children[1] = ticker;
    children[2] = NULL;
    events[0] = 0;
    CHECK_EQ(run_children_with_channel(4), 0);
    CHECK_STREQ(events, "A0 B0 A1 B1 A2 B2 A3 B3 A4 B4");
}

static int try_body(void *arg) {
    (void)arg;
    int v = 1;
    CHECK_EQ(nest_chan_open(&tx, &rx, sizeof(int), 0), 0);
    CHECK_EQ(nest_chan_try_send(&tx, &v), -EAGAIN); /* nobody to take it */
    CHECK_EQ(nest_chan_try_recv(&rx, &v), -EAGAIN);
    CHECK_EQ(stats().sent, 0);
    CHECK_EQ(nest_chan_tx_close(&tx), 0);
    CHECK_EQ(nest_chan_try_recv(&rx, &v), NEST_EEND);
    CHECK_EQ(nest_chan_rx_close(&rx), 0);

    CHECK_EQ(nest_chan_open(&tx, &rx, sizeof(int), 2), 0);
    for (int i = 0; i < 2; i++) CHECK_EQ(nest_chan_try_send(&tx, &i), 0);
    CHECK_EQ(nest_chan_try_send(&tx, &v), -EAGAIN); /* full */
    CHECK_EQ(stats().buffered, 2);
    CHECK_EQ(nest_chan_try_recv(&rx, &v), 0);
    CHECK_EQ(v, 0);
    CHECK_EQ(nest_chan_tx_close(&tx), 0);
    CHECK_EQ(nest_chan_rx_close(&rx), 0);
    return 0;
}

NEST_TEST(try_variants_return_eagain_instead_of_blocking) { CHECK_EQ(run_counted(try_body), 0); }

static int try_recv_from_blocked_sender(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    int v = 0;
    CHECK_EQ(nest_chan_try_recv(&rx, &v), 0); /* from the blocked sender */
    note("got %d", v);
    CHECK_EQ(stats().direct, 1);
    return 0;
}

static int try_send_to_blocked_receiver(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(2)), 0);
    int v = 8;
    CHECK_EQ(nest_chan_try_send(&tx, &v), 0);
    return 0;
}

static int blocked_recv_then_note(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_MSEC(1500)), 0);
    note("R %d", recv_int(&rx));
    return 0;
}

/* The try_ variants complete with a blocked peer (capacity 0). */
NEST_TEST(try_variants_complete_with_blocked_peer) {
    children[0] = sender_at_0;
    children[1] = try_recv_from_blocked_sender;
    children[2] = blocked_recv_then_note;
    children[3] = try_send_to_blocked_receiver;
    children[4] = NULL;
    events[0] = 0;
    CHECK_EQ(run_children_with_channel(0), 0);
    CHECK_STREQ(events, "got 42 sent@1000 R 8");
}

static int peak_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_chan_open(&tx, &rx, sizeof(int), 10), 0);
    for (int i = 0; i < 5; i++) send_int(&tx, i, 0);
    for (int i = 0; i < 3; i++) CHECK_EQ(recv_int(&rx), i);
    send_int(&tx, 5, 0);
    nest_chan_stats st = stats();
    CHECK_EQ(st.peak, 5);
    CHECK_EQ(st.buffered, 3);
    CHECK_EQ(st.sent, 6);
    CHECK_EQ(st.direct, 0);
    CHECK_EQ(st.elem_size, sizeof(int));
    CHECK_EQ(st.capacity, 10);
    CHECK_EQ(st.tx_open, 1);
    CHECK_EQ(st.rx_open, 1);
    CHECK_EQ(nest_chan_tx_close(&tx), 0);
    CHECK_EQ(nest_chan_rx_close(&rx), 0);
    return 0;
}

NEST_TEST(stats_count_peak_and_items) { CHECK_EQ(run_counted(peak_body), 0); }

/* ---- memory ---------------------------------------------------------- */

static int oom_open_body(void *arg) {
    (void)arg;
    long base = mem.live_bytes;
    nest_chan_tx t = {0};
    nest_chan_rx r = {0};
    fail_allocations(1);
    CHECK_EQ(nest_chan_open(&t, &r, sizeof(int), 4), -ENOMEM);
    CHECK_EQ(nest_chan_open(&t, &r, sizeof(int), NEST_CHAN_UNBOUNDED), -ENOMEM);
    fail_allocations(0);
    CHECK(t.ch == NULL && t.state == 0); /* untouched */
    CHECK(r.ch == NULL && r.state == 0);
    CHECK_EQ(mem.live_bytes, base);
    CHECK_EQ(nest_chan_open(&t, &r, sizeof(int), SIZE_MAX / 2), -EINVAL); /* overflow */
    return 0;
}

NEST_TEST(open_fails_with_enomem_and_leaks_nothing) { CHECK_EQ(run_counted(oom_open_body), 0); }

static int oom_growth_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_chan_open(&tx, &rx, sizeof(int), NEST_CHAN_UNBOUNDED), 0);
    int i = 0;
    for (; i < 16; i++) send_int(&tx, i, 0); /* the first buffer: 16 items */
    long before = mem.live_bytes;
    fail_allocations(1);
    int v = 16;
    CHECK_EQ(nest_chan_send(&tx, &v), -ENOMEM);
    CHECK_EQ(nest_chan_try_send(&tx, &v), -ENOMEM);
    CHECK_EQ(mem.live_bytes, before);
    nest_chan_stats st = stats();
    CHECK_EQ(st.buffered, 16); /* not enqueued */
    CHECK_EQ(st.sent, 16);
    /* What was buffered is intact, and there is room again. */
    CHECK_EQ(recv_int(&rx), 0);
    send_int(&tx, 16, 0);
    fail_allocations(0);
    send_int(&tx, 17, 0);
    for (int k = 1; k <= 17; k++) CHECK_EQ(recv_int(&rx), k);
    CHECK_EQ(nest_chan_tx_close(&tx), 0);
    CHECK_EQ(nest_chan_rx_close(&rx), 0);
    return 0;
}

NEST_TEST(unbounded_growth_fails_with_enomem_without_effect) { CHECK_EQ(run_counted(oom_growth_body), 0); }

static int zero_size_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_chan_open(&tx, &rx, 0, NEST_CHAN_UNBOUNDED), 0);
    for (int i = 0; i < 1000; i++) CHECK_EQ(nest_chan_send(&tx, NULL), 0);
    CHECK_EQ(stats().buffered, 1000);
    for (int i = 0; i < 1000; i++) CHECK_EQ(nest_chan_recv(&rx, NULL), 0);
    CHECK_EQ(nest_chan_try_recv(&rx, NULL), -EAGAIN);
    CHECK_EQ(nest_chan_tx_close(&tx), 0);
    CHECK_EQ(nest_chan_recv(&rx, NULL), NEST_EEND);
    CHECK_EQ(nest_chan_rx_close(&rx), 0);
    return 0;
}

/* Zero-sized items are signals: only their number counts. */
NEST_TEST(zero_sized_items) { CHECK_EQ(run_counted(zero_size_body), 0); }

static int big_items_body(void *arg) {
    (void)arg;
    struct big {
        char text[100];
        int n;
    } a, b;
    CHECK_EQ(nest_chan_open(&tx, &rx, sizeof a, 3), 0);
    for (int i = 0; i < 7; i++) {
        memset(&a, 'a' + i, sizeof a);
        a.n = i;
        CHECK_EQ(nest_chan_send(&tx, &a), 0);
        CHECK_EQ(nest_chan_recv(&rx, &b), 0);
        CHECK_EQ(memcmp(&a, &b, sizeof a), 0);
    }
    CHECK_EQ(nest_chan_tx_close(&tx), 0);
    CHECK_EQ(nest_chan_rx_close(&rx), 0);
    return 0;
}

NEST_TEST(items_are_copied_whole) { CHECK_EQ(run_counted(big_items_body), 0); }

/* ---- misuse ----------------------------------------------------------- */

static int copied_handle_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_chan_open(&tx, &rx, sizeof(int), 1), 0);
    nest_chan_tx copy = tx;
    int v = 0;
    nest_chan_send(&copy, &v);
    return 0;
}

NEST_TEST_ABORTS(copied_handle_aborts, "is a copy of one") { run_counted(copied_handle_body); }

NEST_TEST_ABORTS(never_opened_handle_aborts, "was never opened") {
    nest_chan_tx t;
    memset(&t, 0, sizeof t);
    nest_chan_tx_close(&t);
}

NEST_TEST_ABORTS(send_outside_a_task_aborts, "nest_chan_send() called outside a task") {
    CHECK_EQ(nest_chan_open(&tx, &rx, sizeof(int), 1), 0);
    int v = 0;
    nest_chan_send(&tx, &v);
}

/* Open, clone, try and close work outside a runtime. */
NEST_TEST(handles_work_outside_a_runtime) {
    int v = 4;
    nest_chan_tx t2;
    CHECK_EQ(nest_chan_open(&tx, &rx, sizeof(int), 1), 0);
    CHECK_EQ(nest_chan_tx_clone(&t2, &tx), 0);
    CHECK_EQ(nest_chan_try_send(&t2, &v), 0);
    CHECK_EQ(nest_chan_tx_close(&t2), 0);
    CHECK_EQ(nest_chan_tx_close(&tx), 0);
    v = 0;
    CHECK_EQ(nest_chan_try_recv(&rx, &v), 0);
    CHECK_EQ(v, 4);
    CHECK_EQ(nest_chan_try_recv(&rx, &v), NEST_EEND);
    CHECK_EQ(nest_chan_rx_close(&rx), 0);
}

/* ---- stress ----------------------------------------------------------- */

/* Seeded: 4 producers and 4 consumers with random sleeps and random short
 * deadlines on each operation, over channels of several capacities.  Every
 * item a send reported as sent is received exactly once; no item whose
 * send was cancelled is ever received; per producer, items arrive in order. */
#define ST_PRODUCERS 4
#define ST_CONSUMERS 4
#define ST_ITEMS 300

static uint64_t rng_state;
static unsigned rnd(unsigned n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % n);
}

static nest_chan_tx st_tx[ST_PRODUCERS];
static nest_chan_rx st_rx[ST_CONSUMERS];
static unsigned char st_sent[ST_PRODUCERS][ST_ITEMS];  /* 1: send returned 0 */
static unsigned char st_recvd[ST_PRODUCERS][ST_ITEMS];
static int st_last[ST_CONSUMERS][ST_PRODUCERS];
static long st_cancelled_sends, st_cancelled_recvs;

static int st_producer(void *arg) {
    int p = (int)(intptr_t)arg;
    for (int i = 0; i < ST_ITEMS; i++) {
        int item = p * ST_ITEMS + i;
        nest_scope s;
        nest_move_on_after(&s, NEST_MSEC(rnd(4)));
        int rc = nest_chan_send(&st_tx[p], &item);
        CHECK(rc == 0 || rc == -ECANCELED);
        CHECK_EQ(nest_scope_exit(&s, rc), 0);
        if (rc == 0) st_sent[p][i] = 1;
        else st_cancelled_sends++;
        if (rnd(3) == 0) CHECK_EQ(nest_sleep(NEST_MSEC(rnd(3))), 0);
    }
    CHECK_EQ(nest_chan_tx_close(&st_tx[p]), 0);
    return 0;
}

static int st_consumer(void *arg) {
    int c = (int)(intptr_t)arg;
    for (int p = 0; p < ST_PRODUCERS; p++) st_last[c][p] = -1;
    for (;;) {
        int item = -1;
        nest_scope s;
        nest_move_on_after(&s, NEST_MSEC(rnd(5)));
        int rc = nest_chan_recv(&st_rx[c], &item);
        int out = nest_scope_exit(&s, rc);
        if (rc == NEST_EEND) break;
        CHECK_EQ(out, 0);
        if (rc == -ECANCELED) {
            CHECK_EQ(item, -1); /* consumed nothing */
            st_cancelled_recvs++;
            continue;
        }
        CHECK_EQ(rc, 0);
        int p = item / ST_ITEMS, i = item % ST_ITEMS;
        CHECK(p >= 0 && p < ST_PRODUCERS);
        CHECK_EQ(st_recvd[p][i], 0);
        st_recvd[p][i] = 1;
        CHECK(i > st_last[c][p]); /* each consumer sees a producer's items in order */
        st_last[c][p] = i;
        if (rnd(3) == 0) CHECK_EQ(nest_sleep(NEST_MSEC(rnd(3))), 0);
    }
    CHECK_EQ(nest_chan_rx_close(&st_rx[c]), 0);
    return 0;
}

static size_t st_capacity;

static int stress_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_chan_open(&st_tx[0], &st_rx[0], sizeof(int), st_capacity), 0);
    for (int i = 1; i < ST_PRODUCERS; i++) CHECK_EQ(nest_chan_tx_clone(&st_tx[i], &st_tx[0]), 0);
    for (int i = 1; i < ST_CONSUMERS; i++) CHECK_EQ(nest_chan_rx_clone(&st_rx[i], &st_rx[0]), 0);
    nest_nursery n;
    nest_nursery_open(&n);
    for (intptr_t i = 0; i < ST_CONSUMERS; i++) CHECK_EQ(nest_spawn(&n, st_consumer, (void *)i), 0);
    for (intptr_t i = 0; i < ST_PRODUCERS; i++) CHECK_EQ(nest_spawn(&n, st_producer, (void *)i), 0);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(stress_random_traffic_with_cancellations) {
    static const size_t caps[] = {0, 1, 3, 64, NEST_CHAN_UNBOUNDED};
    for (uint64_t seed = 1; seed <= 20; seed++) {
        for (size_t k = 0; k < sizeof caps / sizeof caps[0]; k++) {
            rng_state = seed * 0x9e3779b97f4a7c15ull;
            st_capacity = caps[k];
            memset(st_sent, 0, sizeof st_sent);
            memset(st_recvd, 0, sizeof st_recvd);
            int rc = run_counted(stress_body);
            if (rc != 0) fprintf(stderr, "seed %llu capacity %zu\n", (unsigned long long)seed, caps[k]);
            CHECK_EQ(rc, 0);
            long sent = 0;
            for (int p = 0; p < ST_PRODUCERS; p++) {
                for (int i = 0; i < ST_ITEMS; i++) {
                    if (st_sent[p][i] != st_recvd[p][i])
                        fprintf(stderr, "seed %llu capacity %zu: item %d/%d sent %d received %d\n",
                                (unsigned long long)seed, caps[k], p, i, st_sent[p][i],
                                st_recvd[p][i]);
                    CHECK_EQ(st_sent[p][i], st_recvd[p][i]);
                    sent += st_sent[p][i];
                }
            }
            CHECK(sent > 0);
        }
    }
    /* The run really exercised both kinds of cancellation. */
    CHECK(st_cancelled_sends > 100);
    CHECK(st_cancelled_recvs > 100);
}
