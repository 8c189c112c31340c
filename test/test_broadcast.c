/*
 * test/test_broadcast.c - the broadcast channel (nest/chan.h,
 * lib/broadcast.c).
 *
 * Covers: every subscriber sees every item, in order; a late subscriber
 * sees only later items; a clone starts at its source's position;
 * NEST_BCAST_BLOCK blocks the sender on the slowest subscriber (and only on
 * it), completes blocked sends in FIFO order, and unsubscribing the slow
 * one releases the sender; NEST_BCAST_DROP_OLDEST never blocks, reports the
 * lag once with the number of items lost, then continues with the oldest
 * retained item; blocked subscribers get items directly; close: drain,
 * then NEST_EEND, blocked subscribers woken with it, a blocked sender woken
 * with NEST_ECLOSED; unsubscribe wakes a subscriber blocked on that handle;
 * cancellation of send and receive leaves no trace; no subscriber is not
 * an error; every operation yields; try_ variants; closed handles; memory:
 * freed when the sender closed and the last subscriber left, -ENOMEM on
 * open; a seeded stress run with cancellations.
 *
 * Every case runs on the mock clock (autojump 0) and checks that the run
 * freed every byte.
 */
#define _GNU_SOURCE

#include "harness.h"
#include "support.h"
#include "nest.h"
#include "nest/chan.h"

/* ---- helpers ---------------------------------------------------------- */

static nest_bcast_tx tx;
static nest_bcast_rx subs[4];

static nest_bcast_stats bstats(void) {
    nest_bcast_stats st;
    CHECK_EQ(nest_bcast_tx_stats(&tx, &st), 0);
    return st;
}

static nest_bcast_sub_stats sub_stats(nest_bcast_rx *r) {
    nest_bcast_sub_stats st;
    CHECK_EQ(nest_bcast_rx_stats(r, &st, NULL), 0);
    return st;
}

static void bsend(int v) { CHECK_EQ(nest_bcast_send(&tx, &v), 0); }

static int brecv(nest_bcast_rx *r) {
    int v = -1;
    CHECK_EQ(nest_bcast_recv(r, &v), 0);
    return v;
}

/* ---- everyone sees everything -------------------------------------------- */

static int sub_reader(void *arg) {
    int i = (int)(intptr_t)arg;
    int v, rc, n = 0;
    char seen[256] = "";
    while ((rc = nest_bcast_recv(&subs[i], &v)) == 0) {
        snprintf(seen + strlen(seen), sizeof seen - strlen(seen), "%d", v);
        n++;
    }
    CHECK_EQ(rc, NEST_EEND);
    note("S%d:%s", i, seen);
    CHECK_EQ(nest_bcast_unsubscribe(&subs[i]), 0);
    return 0;
}

static int send_digits_then_close(void *arg) {
    (void)arg;
    for (int i = 0; i < 10; i++) bsend(i);
    CHECK_EQ(nest_bcast_tx_close(&tx), 0);
    return 0;
}

static int every_sub_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_bcast_open(&tx, sizeof(int), 3, NEST_BCAST_BLOCK), 0);
    for (int i = 0; i < 3; i++) CHECK_EQ(nest_bcast_subscribe(&tx, &subs[i]), 0);
    CHECK_EQ(bstats().subscribers, 3);
    children[0] = sub_reader;
    children[1] = sub_reader;
    children[2] = sub_reader;
    children[3] = send_digits_then_close;
    children[4] = NULL;
    return spawn_children(NULL);
}

NEST_TEST(every_subscriber_sees_every_item) {
    CHECK_EQ(run_counted(every_sub_body), 0);
    CHECK_STREQ(events, "S0:0123456789 S1:0123456789 S2:0123456789");
}

static int late_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_bcast_open(&tx, sizeof(int), 8, NEST_BCAST_DROP_OLDEST), 0);
    CHECK_EQ(nest_bcast_subscribe(&tx, &subs[0]), 0);
    bsend(1);
    bsend(2);
    CHECK_EQ(nest_bcast_subscribe(&tx, &subs[1]), 0); /* late */
    bsend(3);
    CHECK_EQ(nest_bcast_rx_clone(&subs[2], &subs[0]), 0); /* at subs[0]'s place */
    CHECK_EQ(brecv(&subs[0]), 1);
    CHECK_EQ(nest_bcast_rx_clone(&subs[3], &subs[0]), 0);
    CHECK_EQ(brecv(&subs[1]), 3);
    int v;
    CHECK_EQ(nest_bcast_try_recv(&subs[1], &v), -EAGAIN);
    CHECK_EQ(brecv(&subs[2]), 1);
    CHECK_EQ(brecv(&subs[2]), 2);
    CHECK_EQ(brecv(&subs[3]), 2);
    CHECK_EQ(sub_stats(&subs[0]).backlog, 2);
    CHECK_EQ(sub_stats(&subs[3]).backlog, 1);
    CHECK_EQ(nest_bcast_tx_close(&tx), 0);
    /* Clones work after the sender closed, and drain the rest. */
    nest_bcast_rx late;
    CHECK_EQ(nest_bcast_rx_clone(&late, &subs[0]), 0);
    CHECK_EQ(brecv(&late), 2);
    CHECK_EQ(brecv(&late), 3);
    CHECK_EQ(nest_bcast_recv(&late, &v), NEST_EEND);
    CHECK_EQ(nest_bcast_unsubscribe(&late), 0);
    for (int i = 0; i < 4; i++) CHECK_EQ(nest_bcast_unsubscribe(&subs[i]), 0);
    return 0;
}

/* A subscriber sees only what is sent after it subscribed; a clone sees
 * what its source has still to see. */
NEST_TEST(late_subscriber_sees_only_later_items_clone_starts_at_source) {
    CHECK_EQ(run_counted(late_body), 0);
}

/* ---- BLOCK ----------------------------------------------------------- */

static int fast_reader(void *arg) {
    (void)arg;
    for (int i = 0; i < 5; i++) {
        int v = brecv(&subs[0]);
        note("f%d@%lld", v, ms());
    }
    return 0;
}

static int slow_reader(void *arg) {
    (void)arg;
    for (int i = 0; i < 5; i++) {
        CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
        int v = brecv(&subs[1]);
        note("s%d@%lld", v, ms());
    }
    return 0;
}

static int sender_of_five(void *arg) {
    (void)arg;
    for (int i = 0; i < 5; i++) {
        bsend(i);
        note("sent%d@%lld", i, ms());
    }
    return 0;
}

static int block_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_bcast_open(&tx, sizeof(int), 2, NEST_BCAST_BLOCK), 0);
    CHECK_EQ(nest_bcast_subscribe(&tx, &subs[0]), 0);
    CHECK_EQ(nest_bcast_subscribe(&tx, &subs[1]), 0);
    children[0] = fast_reader;
    children[1] = slow_reader;
    children[2] = sender_of_five;
    children[3] = NULL;
    CHECK_EQ(spawn_children(NULL), 0);
    CHECK_EQ(nest_bcast_unsubscribe(&subs[0]), 0);
    CHECK_EQ(nest_bcast_unsubscribe(&subs[1]), 0);
    CHECK_EQ(nest_bcast_tx_close(&tx), 0);
    return 0;
}

/* Capacity 2: the sender runs two items ahead of the slow reader, never
 * more; the fast reader gets each item as soon as it is sent. */
NEST_TEST(block_policy_sender_waits_for_slowest) {
    CHECK_EQ(run_counted(block_body), 0);
    /* (A receive that makes room completes the blocked send and wakes the
     * fast reader before its own task resumes.) */
    CHECK_STREQ(events, "f0@0 sent0@0 f1@0 sent1@0 "
                        "f2@1000 sent2@1000 s0@1000 "
                        "f3@2000 sent3@2000 s1@2000 "
                        "f4@3000 sent4@3000 s2@3000 s3@4000 s4@5000");
}

static int blocked_sender_i(void *arg) {
    int i = (int)(intptr_t)arg;
    CHECK_EQ(nest_sleep(NEST_MSEC(i)), 0);
    int rc = nest_bcast_send(&tx, &i);
    note("P%d %s@%lld", i, nest_err_name(rc), ms());
    return 0;
}

static int unsubscribe_slow_at_1s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    nest_bcast_stats st = bstats();
    CHECK_EQ(st.waiting_send, 3);
    CHECK_EQ(st.max_backlog, 1);
    CHECK_EQ(st.sent, 1);
    CHECK_EQ(nest_bcast_unsubscribe(&subs[1]), 0); /* the stalled one */
    note("unsubscribed");
    return 0;
}

static int fifo_release_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_bcast_open(&tx, sizeof(int), 1, NEST_BCAST_BLOCK), 0);
    CHECK_EQ(nest_bcast_subscribe(&tx, &subs[1]), 0); /* never reads */
    bsend(-1); /* its backlog is now full */
    children[0] = blocked_sender_i;
    children[1] = blocked_sender_i;
    children[2] = blocked_sender_i;
    children[3] = unsubscribe_slow_at_1s;
    children[4] = NULL;
    CHECK_EQ(spawn_children(NULL), 0);
    CHECK_EQ(bstats().sent, 4);
    CHECK_EQ(nest_bcast_tx_close(&tx), 0);
    return 0;
}

/* Unsubscribing the slowest subscriber releases the blocked senders, in
 * the order they blocked. */
NEST_TEST(block_policy_unsubscribe_releases_senders_fifo) {
    CHECK_EQ(run_counted(fifo_release_body), 0);
    CHECK_STREQ(events, "unsubscribed P0 OK@1000 P1 OK@1000 P2 OK@1000");
}

static int reader_one_per_second(void *arg) {
    (void)arg;
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
        int v = brecv(&subs[0]);
        note("r%d", v);
    }
    return 0;
}

static int fifo_order_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_bcast_open(&tx, sizeof(int), 1, NEST_BCAST_BLOCK), 0);
    CHECK_EQ(nest_bcast_subscribe(&tx, &subs[0]), 0);
    bsend(-1);
    children[0] = blocked_sender_i;
    children[1] = blocked_sender_i;
    children[2] = reader_one_per_second;
    children[3] = NULL;
    CHECK_EQ(spawn_children(NULL), 0);
    CHECK_EQ(nest_bcast_unsubscribe(&subs[0]), 0);
    CHECK_EQ(nest_bcast_tx_close(&tx), 0);
    return 0;
}

/* Each receive makes room for one blocked send, first come first served;
 * the items arrive in that order. */
NEST_TEST(block_policy_blocked_sends_complete_in_fifo_order) {
    CHECK_EQ(run_counted(fifo_order_body), 0);
    CHECK_STREQ(events, "P0 OK@1000 r-1 P1 OK@2000 r0 r1");
}

/* ---- DROP_OLDEST -------------------------------------------------------- */

static int drop_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_bcast_open(&tx, sizeof(int), 3, NEST_BCAST_DROP_OLDEST), 0);
    CHECK_EQ(nest_bcast_subscribe(&tx, &subs[0]), 0);
    CHECK_EQ(nest_bcast_subscribe(&tx, &subs[1]), 0);
    for (int i = 1; i <= 8; i++) bsend(i); /* never blocks */
    nest_bcast_stats bs = bstats();
    CHECK_EQ(bs.sent, 8);
    CHECK_EQ(bs.max_backlog, 3);
    CHECK_EQ(bs.waiting_send, 0);
    int v = -1;
    /* 1..5 were overwritten: reported once, with the count, nothing copied. */
    CHECK_EQ(nest_bcast_recv(&subs[0], &v), NEST_ELAGGED);
    CHECK_EQ(v, -1);
    nest_bcast_sub_stats st = sub_stats(&subs[0]);
    CHECK_EQ(st.lagged, 5);
    CHECK_EQ(st.lost, 5);
    CHECK_EQ(st.backlog, 3);
    /* Then it continues with the oldest retained item. */
    CHECK_EQ(brecv(&subs[0]), 6);
    CHECK_EQ(brecv(&subs[0]), 7);
    bsend(9);
    bsend(10);
    bsend(11); /* the window is 9..11: 8 is lost */
    CHECK_EQ(nest_bcast_try_recv(&subs[0], &v), NEST_ELAGGED);
    st = sub_stats(&subs[0]);
    CHECK_EQ(st.lagged, 1);
    CHECK_EQ(st.lost, 6);
    CHECK_EQ(brecv(&subs[0]), 9);
    CHECK_EQ(brecv(&subs[0]), 10);
    CHECK_EQ(brecv(&subs[0]), 11);
    CHECK_EQ(nest_bcast_try_recv(&subs[0], &v), -EAGAIN);
    CHECK_EQ(sub_stats(&subs[0]).lagged, 1); /* the last report's count */
    /* The other subscriber lost 8 of 11, independently. */
    CHECK_EQ(nest_bcast_recv(&subs[1], &v), NEST_ELAGGED);
    CHECK_EQ(sub_stats(&subs[1]).lagged, 8);
    CHECK_EQ(brecv(&subs[1]), 9);
    CHECK_EQ(nest_bcast_tx_close(&tx), 0);
    CHECK_EQ(brecv(&subs[1]), 10);
    CHECK_EQ(brecv(&subs[1]), 11);
    CHECK_EQ(nest_bcast_recv(&subs[1], &v), NEST_EEND);
    CHECK_EQ(nest_bcast_unsubscribe(&subs[0]), 0);
    CHECK_EQ(nest_bcast_unsubscribe(&subs[1]), 0);
    return 0;
}

NEST_TEST(drop_oldest_reports_lag_once_with_count_then_continues) {
    CHECK_EQ(run_counted(drop_body), 0);
}

/* ---- hand-off and close ---------------------------------------------- */

static int blocked_reader(void *arg) {
    int i = (int)(intptr_t)arg;
    int v = -1;
    int rc = nest_bcast_recv(&subs[i], &v);
    note("R%d %s %d@%lld", i, nest_err_name(rc), v, ms());
    if (rc == 0) {
        rc = nest_bcast_recv(&subs[i], &v);
        note("R%d %s@%lld", i, nest_err_name(rc), ms());
    }
    return 0;
}

static int send_then_close_at_1s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(bstats().waiting_recv, 3);
    bsend(5); /* straight into every blocked reader */
    note("sent");
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(bstats().waiting_recv, 3);
    CHECK_EQ(nest_bcast_tx_close(&tx), 0);
    note("closed");
    return 0;
}

static int handoff_close_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_bcast_open(&tx, sizeof(int), 1, NEST_BCAST_BLOCK), 0);
    for (int i = 0; i < 3; i++) CHECK_EQ(nest_bcast_subscribe(&tx, &subs[i]), 0);
    children[0] = blocked_reader;
    children[1] = blocked_reader;
    children[2] = blocked_reader;
    children[3] = send_then_close_at_1s;
    children[4] = NULL;
    CHECK_EQ(spawn_children(NULL), 0);
    for (int i = 0; i < 3; i++) CHECK_EQ(nest_bcast_unsubscribe(&subs[i]), 0);
    return 0;
}

/* Blocked subscribers get the item directly; closing wakes them with
 * NEST_EEND. */
NEST_TEST(blocked_subscribers_get_items_directly_and_end_on_close) {
    CHECK_EQ(run_counted(handoff_close_body), 0);
    CHECK_STREQ(events, "R0 OK 5@1000 R1 OK 5@1000 R2 OK 5@1000 sent closed "
                        "R0 NEST_EEND@2000 R1 NEST_EEND@2000 R2 NEST_EEND@2000");
}

static int drain_then_end_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_bcast_open(&tx, sizeof(int), 4, NEST_BCAST_BLOCK), 0);
    CHECK_EQ(nest_bcast_subscribe(&tx, &subs[0]), 0);
    bsend(1);
    bsend(2);
    CHECK_EQ(nest_bcast_tx_close(&tx), 0);
    int v;
    CHECK_EQ(nest_bcast_send(&tx, &v), NEST_ECLOSED);
    CHECK_EQ(nest_bcast_try_send(&tx, &v), NEST_ECLOSED);
    CHECK_EQ(nest_bcast_subscribe(&tx, &subs[1]), NEST_ECLOSED);
    nest_bcast_stats st;
    CHECK_EQ(nest_bcast_tx_stats(&tx, &st), NEST_ECLOSED);
    CHECK_EQ(nest_bcast_rx_stats(&subs[0], NULL, &st), 0);
    CHECK_EQ(st.closed, 1);
    CHECK_EQ(st.subscribers, 1);
    CHECK_EQ(nest_bcast_tx_close(&tx), NEST_ECLOSED);
    CHECK_EQ(brecv(&subs[0]), 1);
    CHECK_EQ(brecv(&subs[0]), 2);
    CHECK_EQ(nest_bcast_recv(&subs[0], &v), NEST_EEND);
    CHECK_EQ(nest_bcast_try_recv(&subs[0], &v), NEST_EEND);
    CHECK(mem.live_bytes > 0);
    CHECK_EQ(nest_bcast_unsubscribe(&subs[0]), 0); /* the last: frees it */
    CHECK_EQ(nest_bcast_recv(&subs[0], &v), NEST_ECLOSED);
    CHECK_EQ(nest_bcast_unsubscribe(&subs[0]), NEST_ECLOSED);
    CHECK_EQ(nest_bcast_rx_stats(&subs[0], NULL, NULL), NEST_ECLOSED);
    return 0;
}

NEST_TEST(close_drain_then_end_closed_handles) {
    CHECK_EQ(run_counted(drain_then_end_body), 0);
}

static int stuck_sender(void *arg) {
    (void)arg;
    int v = 2;
    int rc = nest_bcast_send(&tx, &v);
    note("send %s@%lld", nest_err_name(rc), ms());
    return 0;
}

static int stuck_reader(void *arg) {
    (void)arg;
    int v;
    int rc = nest_bcast_recv(&subs[2], &v);
    note("recv %s@%lld", nest_err_name(rc), ms());
    return 0;
}

static int close_everything_at_1s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(nest_bcast_unsubscribe(&subs[2]), 0); /* wakes stuck_reader */
    CHECK_EQ(nest_bcast_tx_close(&tx), 0);         /* wakes stuck_sender */
    note("closed");
    return 0;
}

static int close_wakes_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_bcast_open(&tx, sizeof(int), 1, NEST_BCAST_BLOCK), 0);
    CHECK_EQ(nest_bcast_subscribe(&tx, &subs[0]), 0);
    bsend(1); /* subs[0] is full */
    CHECK_EQ(nest_bcast_subscribe(&tx, &subs[2]), 0); /* caught up: blocks */
    children[0] = stuck_sender;
    children[1] = stuck_reader;
    children[2] = close_everything_at_1s;
    children[3] = NULL;
    CHECK_EQ(spawn_children(NULL), 0);
    CHECK_EQ(brecv(&subs[0]), 1); /* the stuck send did not happen */
    int v;
    CHECK_EQ(nest_bcast_recv(&subs[0], &v), NEST_EEND);
    CHECK_EQ(nest_bcast_unsubscribe(&subs[0]), 0);
    return 0;
}

/* Unsubscribing wakes the subscriber's blocked receive with NEST_ECLOSED;
 * closing the sender wakes its blocked send with NEST_ECLOSED. */
NEST_TEST(unsubscribe_and_close_wake_their_blocked_users) {
    CHECK_EQ(run_counted(close_wakes_body), 0);
    CHECK_STREQ(events, "closed recv NEST_ECLOSED@1000 send NEST_ECLOSED@1000");
}

/* ---- cancellation, checkpoints ------------------------------------------ */

static int cancel_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_bcast_open(&tx, sizeof(int), 1, NEST_BCAST_BLOCK), 0);
    CHECK_EQ(nest_bcast_subscribe(&tx, &subs[0]), 0);
    CHECK_EQ(nest_bcast_subscribe(&tx, &subs[1]), 0);
    /* A receive that times out consumed nothing and left no waiter. */
    nest_scope s;
    int v = -1;
    nest_move_on_after(&s, NEST_SEC(1));
    int rc = nest_bcast_recv(&subs[0], &v);
    CHECK_EQ(rc, -ECANCELED);
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    CHECK_EQ(bstats().waiting_recv, 0);
    CHECK_EQ(v, -1);
    bsend(1); /* fills both backlogs */
    CHECK_EQ(sub_stats(&subs[0]).backlog, 1);
    /* A send that times out sent nothing. */
    nest_move_on_after(&s, NEST_SEC(1));
    v = 2;
    rc = nest_bcast_send(&tx, &v);
    CHECK_EQ(rc, -ECANCELED);
    CHECK_EQ(nest_scope_exit(&s, rc), 0);
    CHECK_EQ(nest_now(), NEST_SEC(2));
    CHECK_EQ(bstats().sent, 1);
    CHECK_EQ(bstats().waiting_send, 0);
    /* Cancelled at entry: nothing, although an item is there. */
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    CHECK_EQ(nest_bcast_recv(&subs[0], &v), -ECANCELED);
    CHECK_EQ(nest_bcast_send(&tx, &v), -ECANCELED);
    CHECK_EQ(nest_scope_exit(&s, -ECANCELED), 0);
    CHECK_EQ(sub_stats(&subs[0]).backlog, 1);
    CHECK_EQ(brecv(&subs[0]), 1);
    CHECK_EQ(brecv(&subs[1]), 1);
    CHECK_EQ(nest_bcast_try_recv(&subs[1], &v), -EAGAIN);
    CHECK_EQ(nest_bcast_tx_close(&tx), 0);
    CHECK_EQ(nest_bcast_unsubscribe(&subs[0]), 0);
    CHECK_EQ(nest_bcast_unsubscribe(&subs[1]), 0);
    return 0;
}

NEST_TEST(cancelled_send_and_receive_leave_no_trace) { CHECK_EQ(run_counted(cancel_body), 0); }

static int yielding_ops(void *arg) {
    (void)arg;
    note("A0");
    bsend(1);
    note("A1");
    CHECK_EQ(brecv(&subs[0]), 1);
    note("A2");
    return 0;
}

static int ticker(void *arg) {
    (void)arg;
    for (int i = 0; i < 3; i++) {
        note("B%d", i);
        CHECK_EQ(nest_checkpoint(), 0);
    }
    return 0;
}

static int yield_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_bcast_open(&tx, sizeof(int), 2, NEST_BCAST_BLOCK), 0);
    CHECK_EQ(nest_bcast_subscribe(&tx, &subs[0]), 0);
    children[0] = yielding_ops;
    children[1] = ticker;
    children[2] = NULL;
    CHECK_EQ(spawn_children(NULL), 0);
    CHECK_EQ(nest_bcast_unsubscribe(&subs[0]), 0);
    CHECK_EQ(nest_bcast_tx_close(&tx), 0);
    return 0;
}

NEST_TEST(send_and_receive_yield_when_they_need_not_wait) {
    CHECK_EQ(run_counted(yield_body), 0);
    CHECK_STREQ(events, "A0 B0 A1 B1 A2 B2");
}

static int no_sub_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_bcast_open(&tx, sizeof(int), 1, NEST_BCAST_BLOCK), 0);
    for (int i = 0; i < 5; i++) CHECK_EQ(nest_bcast_try_send(&tx, &i), 0); /* to nobody */
    CHECK_EQ(bstats().sent, 5);
    CHECK_EQ(nest_bcast_subscribe(&tx, &subs[0]), 0);
    int v = 7;
    CHECK_EQ(nest_bcast_try_send(&tx, &v), 0);
    CHECK_EQ(nest_bcast_try_send(&tx, &v), -EAGAIN); /* subs[0] is full */
    CHECK_EQ(brecv(&subs[0]), 7);
    CHECK_EQ(nest_bcast_try_recv(&subs[0], &v), -EAGAIN);
    CHECK_EQ(nest_bcast_tx_close(&tx), 0);
    CHECK(mem.live_bytes > 0);
    CHECK_EQ(nest_bcast_unsubscribe(&subs[0]), 0);
    /* Closing with no subscriber frees at once. */
    CHECK_EQ(nest_bcast_open(&tx, 0, 1, NEST_BCAST_DROP_OLDEST), 0);
    CHECK_EQ(nest_bcast_tx_close(&tx), 0);
    return 0;
}

NEST_TEST(no_subscriber_is_not_an_error_try_variants) { CHECK_EQ(run_counted(no_sub_body), 0); }

static int oom_body(void *arg) {
    (void)arg;
    nest_bcast_tx t = {0};
    mem.fail_from = mem.calls + 1;
    CHECK_EQ(nest_bcast_open(&t, sizeof(int), 16, NEST_BCAST_BLOCK), -ENOMEM);
    mem.fail_from = 0;
    CHECK(t.b == NULL && t.state == 0);
    CHECK_EQ(nest_bcast_open(&t, sizeof(int), 0, NEST_BCAST_BLOCK), -EINVAL);
    CHECK_EQ(nest_bcast_open(&t, sizeof(int), 4, 99), -EINVAL);
    CHECK_EQ(nest_bcast_open(&t, SIZE_MAX / 2, 4, NEST_BCAST_BLOCK), -EINVAL);
    return 0;
}

NEST_TEST(open_fails_cleanly) { CHECK_EQ(run_counted(oom_body), 0); }

NEST_TEST_ABORTS(copied_subscription_aborts, "is a copy of one") {
    nest_bcast_tx t;
    nest_bcast_rx r;
    CHECK_EQ(nest_bcast_open(&t, 1, 1, NEST_BCAST_BLOCK), 0);
    CHECK_EQ(nest_bcast_subscribe(&t, &r), 0);
    nest_bcast_rx copy = r;
    nest_bcast_unsubscribe(&copy);
}

/* ---- stress ---------------------------------------------------------- */

/* Seeded: one sender, four subscribers with random pauses and deadlines,
 * one of which unsubscribes and resubscribes midway.  BLOCK: every
 * subscriber sees a gap-free increasing run of items from when it
 * subscribed.  DROP_OLDEST: increasing, and every gap was reported as lag
 * with exactly its size. */
static uint64_t rng;
static unsigned rnd(unsigned n) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}
static int sx_policy;
static long sx_received, sx_cancels;

static int sx_sub(void *arg) {
    int i = (int)(intptr_t)arg;
    int expect = -1; /* next expected item, -1: any */
    for (int round = 0; round < (i == 3 ? 2 : 1); round++) {
        if (round == 1) {
            CHECK_EQ(nest_bcast_unsubscribe(&subs[i]), 0);
            CHECK_EQ(nest_sleep(NEST_MSEC(rnd(5))), 0);
            if (nest_bcast_subscribe(&tx, &subs[i]) != 0) return 0; /* sender done */
            expect = -1;
        }
        for (int k = 0; k < (i == 3 && round == 0 ? 50 : 100000); k++) {
            int v = -1;
            nest_scope s;
            nest_move_on_after(&s, NEST_MSEC(rnd(4)));
            int rc = nest_bcast_recv(&subs[i], &v);
            CHECK_EQ(nest_scope_exit(&s, rc), rc == -ECANCELED ? 0 : rc);
            if (rc == NEST_EEND) break;
            if (rc == -ECANCELED) {
                CHECK_EQ(v, -1);
                sx_cancels++;
                continue;
            }
            if (rc == NEST_ELAGGED) {
                CHECK_EQ(sx_policy, NEST_BCAST_DROP_OLDEST);
                nest_bcast_sub_stats st = sub_stats(&subs[i]);
                CHECK(st.lagged > 0);
                CHECK(expect >= 0);
                expect += (int)st.lagged;
                continue;
            }
            CHECK_EQ(rc, 0);
            if (expect >= 0) CHECK_EQ(v, expect);
            expect = v + 1;
            sx_received++;
            if (rnd(4) == 0) CHECK_EQ(nest_sleep(NEST_MSEC(rnd(3))), 0);
        }
    }
    CHECK_EQ(nest_bcast_unsubscribe(&subs[i]), 0);
    return 0;
}

static int sx_sender(void *arg) {
    (void)arg;
    int next = 0;
    while (next < 400) {
        nest_scope s;
        nest_move_on_after(&s, NEST_MSEC(rnd(3)));
        int rc = nest_bcast_send(&tx, &next);
        CHECK_EQ(nest_scope_exit(&s, rc), 0);
        if (rc == 0)
            next++;
        else
            sx_cancels++;
        if (rnd(5) == 0) CHECK_EQ(nest_sleep(NEST_MSEC(rnd(2))), 0);
    }
    CHECK_EQ(nest_bcast_tx_close(&tx), 0);
    return 0;
}

static int sx_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_bcast_open(&tx, sizeof(int), 1 + rnd(6), sx_policy), 0);
    for (int i = 0; i < 4; i++) CHECK_EQ(nest_bcast_subscribe(&tx, &subs[i]), 0);
    nest_nursery n;
    nest_nursery_open(&n);
    for (intptr_t i = 0; i < 4; i++) CHECK_EQ(nest_spawn(&n, sx_sub, (void *)i), 0);
    CHECK_EQ(nest_spawn(&n, sx_sender, NULL), 0);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(stress_subscribers_with_cancellations) {
    sx_received = sx_cancels = 0;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        for (int p = 0; p < 2; p++) {
            rng = seed * 0x9e3779b97f4a7c15ull + (uint64_t)p;
            sx_policy = p ? NEST_BCAST_DROP_OLDEST : NEST_BCAST_BLOCK;
            int r = run_counted(sx_body);
            if (r != 0) fprintf(stderr, "seed %llu policy %d\n", (unsigned long long)seed, p);
            CHECK_EQ(r, 0);
        }
    }
    CHECK(sx_received > 10000);
    CHECK(sx_cancels > 100);
}
