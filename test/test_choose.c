/*
 * test/test_choose.c - nest_choose() (nest/chan.h, lib/choose.c).
 *
 * Covers: with every clause ready the first wins and the others are
 * untouched (receives and sends); with none ready until a deadline choose
 * returns -ECANCELED, the move_on scope absorbs it, and no clause had any
 * effect (no waiter left behind in any channel); send and receive clauses
 * mixed, each side winning; a choose racing a plain receiver on the same
 * channel (FIFO across both); a sender handing its item to a blocked
 * choose through the clause's buffer (directly, the buffer unused) and a
 * receiver taking a blocked choose's item; both sides of one rendezvous
 * channel in one choose; clauses that are ready because they fail (end,
 * broken, closed), also while blocked (close wakes the choose with that
 * clause's error); disabled clauses and a choose with none enabled; more
 * than eight clauses (allocated waiters) and their allocation failing;
 * -EINVAL; a cancelled choose does nothing even when clauses are ready;
 * choose yields once when it completes at once; a seeded stress run of
 * choosers against plain senders and receivers with cancellations.
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

/* Channels a, b, c (int items), opened by the case with their capacities. */
static nest_chan_tx ta, tb, tc;
static nest_chan_rx ra, rb, rc_;

static void open3(size_t ca, size_t cb, size_t cc) {
    CHECK_EQ(nest_chan_open(&ta, &ra, sizeof(int), ca), 0);
    CHECK_EQ(nest_chan_open(&tb, &rb, sizeof(int), cb), 0);
    CHECK_EQ(nest_chan_open(&tc, &rc_, sizeof(int), cc), 0);
}

static void close3(void) {
    nest_chan_tx_close(&ta);
    nest_chan_rx_close(&ra);
    nest_chan_tx_close(&tb);
    nest_chan_rx_close(&rb);
    nest_chan_tx_close(&tc);
    nest_chan_rx_close(&rc_);
}

static nest_chan_stats stats_of(nest_chan_rx *r) {
    nest_chan_stats st;
    CHECK_EQ(nest_chan_rx_stats(r, &st), 0);
    return st;
}

static size_t cap_a, cap_b, cap_c;

/* Opens a, b, c with cap_a.., runs children[], closes them. */
static int with_three(void *arg) {
    open3(cap_a, cap_b, cap_c);
    int rc = spawn_children(arg);
    close3();
    return rc;
}

static int run3(size_t ca, size_t cb, size_t cc) {
    cap_a = ca;
    cap_b = cb;
    cap_c = cc;
    return run_counted(with_three);
}

static void put(nest_chan_tx *t, int v) { CHECK_EQ(nest_chan_try_send(t, &v), 0); }

/* ---- everything ready --------------------------------------------------- */

static int all_ready_body(void *arg) {
    (void)arg;
    open3(2, 2, 2);
    put(&ta, 1);
    put(&tb, 2);
    int x = -1, y = -1, z = 30;
    nest_choose_clause cl[] = {
        NEST_CHOOSE_RECV_CLAUSE(&ra, &x),
        NEST_CHOOSE_RECV_CLAUSE(&rb, &y),
        NEST_CHOOSE_SEND_CLAUSE(&tc, &z),
    };
    CHECK_EQ(nest_choose(cl, 3), 0);
    CHECK_EQ(cl[0].result, 0);
    CHECK_EQ(x, 1);
    CHECK_EQ(y, -1);                       /* untouched */
    CHECK_EQ(stats_of(&rb).buffered, 1);   /* b still holds its item */
    CHECK_EQ(stats_of(&rc_).buffered, 0);  /* nothing was sent on c */
    /* Again: now a is empty, so b is the first ready clause. */
    CHECK_EQ(nest_choose(cl, 3), 1);
    CHECK_EQ(y, 2);
    CHECK_EQ(stats_of(&rc_).buffered, 0);
    /* Now only the send is ready. */
    CHECK_EQ(nest_choose(cl, 3), 2);
    CHECK_EQ(cl[2].result, 0);
    CHECK_EQ(stats_of(&rc_).buffered, 1);
    /* A send first in the array wins over ready receives. */
    put(&ta, 5);
    nest_choose_clause cl2[] = {
        NEST_CHOOSE_SEND_CLAUSE(&tb, &z),
        NEST_CHOOSE_RECV_CLAUSE(&ra, &x),
    };
    CHECK_EQ(nest_choose(cl2, 2), 0);
    CHECK_EQ(stats_of(&rb).buffered, 1);
    CHECK_EQ(stats_of(&ra).buffered, 1); /* the receive had no effect */
    close3();
    return 0;
}

NEST_TEST(all_ready_first_clause_wins_others_untouched) { CHECK_EQ(run_counted(all_ready_body), 0); }

/* ---- nothing ready ---------------------------------------------------- */

static int none_ready_body(void *arg) {
    (void)arg;
    open3(0, 0, 1);
    put(&tc, 9); /* c is full: a send on it must wait */
    int x = -1, z = 3;
    nest_choose_clause cl[] = {
        NEST_CHOOSE_RECV_CLAUSE(&ra, &x),
        NEST_CHOOSE_SEND_CLAUSE(&tb, &z),
        NEST_CHOOSE_SEND_CLAUSE(&tc, &z),
    };
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(1));
    int r = nest_choose(cl, 3);
    note("choose %s@%lld", nest_err_name(r), ms());
    CHECK_EQ(nest_scope_exit(&s, r), 0);
    CHECK(nest_scope_cancelled_caught(&s));
    /* No clause had an effect, and no waiter was left behind. */
    CHECK_EQ(x, -1);
    for (int i = 0; i < 3; i++) CHECK_EQ(cl[i].result, 0);
    nest_chan_stats sa = stats_of(&ra), sb = stats_of(&rb), sc = stats_of(&rc_);
    CHECK_EQ(sa.waiting_recv, 0);
    CHECK_EQ(sb.waiting_send, 0);
    CHECK_EQ(sc.waiting_send, 0);
    CHECK_EQ(sb.sent, 0);
    CHECK_EQ(sc.buffered, 1);
    CHECK_EQ(sc.sent, 1);
    int v;
    CHECK_EQ(nest_chan_try_recv(&rb, &v), -EAGAIN); /* nobody offers on b */
    CHECK_EQ(nest_chan_try_send(&ta, &v), -EAGAIN); /* nobody waits on a */
    close3();
    return 0;
}

/* None ready until the deadline: -ECANCELED, absorbed, no effect. */
NEST_TEST(none_ready_until_deadline_has_no_effect) {
    CHECK_EQ(run_counted(none_ready_body), 0);
    CHECK_STREQ(events, "choose ECANCELED@1000");
}

/* ---- mixed sends and receives, while blocked ------------------------- */

static int x_out = -1;
static int choose_send_a_or_recv_b(void *arg) {
    (void)arg;
    int item = 11;
    nest_choose_clause cl[] = {
        NEST_CHOOSE_SEND_CLAUSE(&ta, &item),
        NEST_CHOOSE_RECV_CLAUSE(&rb, &x_out),
    };
    int r = nest_choose(cl, 2);
    CHECK(r >= 0);
    note("chose %d (%s) x=%d@%lld", r, nest_err_name(cl[r].result), x_out, ms());
    return 0;
}

static int recv_a_at_1s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(stats_of(&ra).waiting_send, 1);
    CHECK_EQ(stats_of(&rb).waiting_recv, 1);
    int v = -1;
    CHECK_EQ(nest_chan_recv(&ra, &v), 0); /* takes the choose's item */
    note("a got %d", v);
    CHECK_EQ(stats_of(&rb).waiting_recv, 0); /* the whole group left */
    int w = 5;
    CHECK_EQ(nest_chan_try_send(&tb, &w), -EAGAIN); /* b's clause is gone */
    return 0;
}

NEST_TEST(blocked_choose_send_clause_wins) {
    children[0] = choose_send_a_or_recv_b;
    children[1] = recv_a_at_1s;
    children[2] = NULL;
    CHECK_EQ(run3(0, 0, 0), 0);
    CHECK_STREQ(events, "chose 0 (OK) x=-1@1000 a got 11");
}

static int send_b_at_1s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    int w = 22;
    CHECK_EQ(nest_chan_send(&tb, &w), 0); /* straight into the clause's out */
    nest_chan_stats st = stats_of(&rb);
    CHECK_EQ(st.direct, 1);
    CHECK_EQ(st.peak, 0);
    CHECK_EQ(stats_of(&ra).waiting_send, 0);
    int v;
    CHECK_EQ(nest_chan_try_recv(&ra, &v), -EAGAIN); /* a's clause is gone */
    note("sent b");
    return 0;
}

NEST_TEST(blocked_choose_recv_clause_wins_item_handed_directly) {
    children[0] = choose_send_a_or_recv_b;
    children[1] = send_b_at_1s;
    children[2] = NULL;
    CHECK_EQ(run3(0, 4, 0), 0);
    CHECK_STREQ(events, "chose 1 (OK) x=22@1000 sent b");
}

/* ---- racing a plain receiver --------------------------------------------- */

static int plain_receiver(void *arg) {
    (void)arg;
    int v = -1;
    CHECK_EQ(nest_chan_recv(&ra, &v), 0);
    note("plain %d@%lld", v, ms());
    return 0;
}

static int choosing_receiver(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_MSEC(1)), 0); /* queue behind the plain one */
    int x = -1, y = -1;
    nest_choose_clause cl[] = {
        NEST_CHOOSE_RECV_CLAUSE(&rb, &y),
        NEST_CHOOSE_RECV_CLAUSE(&ra, &x),
    };
    int r = nest_choose(cl, 2);
    note("choose %d x=%d y=%d@%lld", r, x, y, ms());
    return 0;
}

static int send_two_on_a(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(stats_of(&ra).waiting_recv, 2);
    int v = 1;
    CHECK_EQ(nest_chan_send(&ta, &v), 0);
    CHECK_EQ(stats_of(&ra).waiting_recv, 1); /* the choose still waits */
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    v = 2;
    CHECK_EQ(nest_chan_send(&ta, &v), 0);
    return 0;
}

/* The channel serves its waiters in arrival order, choose or not. */
NEST_TEST(choose_races_plain_receiver_fifo) {
    children[0] = plain_receiver;
    children[1] = choosing_receiver;
    children[2] = send_two_on_a;
    children[3] = NULL;
    CHECK_EQ(run3(0, 0, 0), 0);
    CHECK_STREQ(events, "plain 1@1000 choose 1 x=2 y=-1@2000");
}

/* ---- both sides of one channel ------------------------------------------ */

static int choose_both_sides(void *arg) {
    (void)arg;
    int item = 100, out = -1;
    nest_choose_clause cl[] = {
        NEST_CHOOSE_SEND_CLAUSE(&ta, &item),
        NEST_CHOOSE_RECV_CLAUSE(&ra, &out),
    };
    int r = nest_choose(cl, 2);
    note("chose %d out=%d", r, out);
    return 0;
}

static int peer_sends_on_a(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    nest_chan_stats st = stats_of(&ra);
    CHECK_EQ(st.waiting_send, 1);
    CHECK_EQ(st.waiting_recv, 1);
    int v = 200;
    CHECK_EQ(nest_chan_send(&ta, &v), 0); /* meets the receive clause */
    st = stats_of(&ra);
    CHECK_EQ(st.waiting_send, 0);
    CHECK_EQ(st.waiting_recv, 0);
    CHECK_EQ(st.sent, 1);
    return 0;
}

/* One task waiting on both sides of a rendezvous channel: a peer completes
 * exactly one side. */
NEST_TEST(both_sides_of_one_channel_in_one_choose) {
    children[0] = choose_both_sides;
    children[1] = peer_sends_on_a;
    children[2] = NULL;
    CHECK_EQ(run3(0, 0, 0), 0);
    CHECK_STREQ(events, "chose 1 out=200");
}

/* ---- clauses ready with an error -------------------------------------- */

static int error_clauses_body(void *arg) {
    (void)arg;
    open3(0, 0, 0);
    int x = -1, z = 1;
    CHECK_EQ(nest_chan_tx_close(&ta), 0); /* a ends */
    CHECK_EQ(nest_chan_rx_close(&rb), 0); /* b breaks */
    nest_choose_clause cl[] = {
        NEST_CHOOSE_RECV_CLAUSE(&rc_, &x), /* not ready */
        NEST_CHOOSE_RECV_CLAUSE(&ra, &x),
        NEST_CHOOSE_SEND_CLAUSE(&tb, &z),
    };
    CHECK_EQ(nest_choose(cl, 3), 1);
    CHECK_EQ(cl[1].result, NEST_EEND);
    cl[1].op = NEST_CHOOSE_NONE;
    CHECK_EQ(nest_choose(cl, 3), 2);
    CHECK_EQ(cl[2].result, NEST_EBROKEN);
    /* A closed handle is ready too (with NEST_ECLOSED). */
    cl[2].op = NEST_CHOOSE_NONE;
    cl[1].op = NEST_CHOOSE_RECV; /* ra: still open, still ended */
    CHECK_EQ(nest_chan_rx_close(&ra), 0);
    CHECK_EQ(nest_choose(cl, 3), 1);
    CHECK_EQ(cl[1].result, NEST_ECLOSED);
    CHECK_EQ(x, -1);
    close3();
    return 0;
}

/* Like Go's select on a closed channel: a clause that would fail at once is
 * ready, and its error is its result. */
NEST_TEST(clauses_that_fail_are_ready) { CHECK_EQ(run_counted(error_clauses_body), 0); }

static nest_chan_rx rb_clone;

static int choose_blocked_on_clone(void *arg) {
    (void)arg;
    int x = -1, y = -1;
    nest_choose_clause cl[] = {
        NEST_CHOOSE_RECV_CLAUSE(&ra, &x),
        NEST_CHOOSE_RECV_CLAUSE(&rb_clone, &y),
        NEST_CHOOSE_RECV_CLAUSE(&rc_, &y),
    };
    int r = nest_choose(cl, 3);
    note("chose %d %s@%lld", r, nest_err_name(cl[r].result), ms());
    r = nest_choose(cl, 3);
    note("chose %d %s@%lld", r, nest_err_name(cl[r].result), ms());
    return 0;
}

static int closer(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(nest_chan_rx_close(&rb_clone), 0); /* the choose's own handle */
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    CHECK_EQ(nest_chan_tx_close(&tc), 0); /* c's last sender */
    CHECK_EQ(stats_of(&ra).waiting_recv, 0);
    CHECK_EQ(stats_of(&rb).waiting_recv, 0);
    return 0;
}

static int close_while_blocked_body(void *arg) {
    (void)arg;
    open3(0, 0, 0);
    CHECK_EQ(nest_chan_rx_clone(&rb_clone, &rb), 0);
    children[0] = choose_blocked_on_clone;
    children[1] = closer;
    children[2] = NULL;
    CHECK_EQ(spawn_children(NULL), 0);
    close3();
    return 0;
}

/* Closing wakes a blocked choose with the clause's error. */
NEST_TEST(close_wakes_blocked_choose_with_clause_error) {
    CHECK_EQ(run_counted(close_while_blocked_body), 0);
    CHECK_STREQ(events, "chose 1 NEST_ECLOSED@1000 chose 1 NEST_ECLOSED@1000");
}

/* That second choose found the closed handle ready at once: here the
 * clause is disabled instead, and c's end wakes it. */
static int choose_skipping_closed(void *arg) {
    (void)arg;
    int x = -1, y = -1;
    nest_choose_clause cl[] = {
        NEST_CHOOSE_RECV_CLAUSE(&ra, &x),
        NEST_CHOOSE_RECV_CLAUSE(&rb_clone, &y),
        NEST_CHOOSE_RECV_CLAUSE(&rc_, &y),
    };
    int r = nest_choose(cl, 3);
    note("chose %d %s@%lld", r, nest_err_name(cl[r].result), ms());
    cl[1].op = NEST_CHOOSE_NONE;
    r = nest_choose(cl, 3);
    note("chose %d %s@%lld", r, nest_err_name(cl[r].result), ms());
    return 0;
}

static int close_while_blocked_body2(void *arg) {
    (void)arg;
    open3(0, 0, 0);
    CHECK_EQ(nest_chan_rx_clone(&rb_clone, &rb), 0);
    children[0] = choose_skipping_closed;
    children[1] = closer;
    children[2] = NULL;
    CHECK_EQ(spawn_children(NULL), 0);
    close3();
    return 0;
}

NEST_TEST(end_wakes_blocked_choose_disabled_clause_ignored) {
    CHECK_EQ(run_counted(close_while_blocked_body2), 0);
    CHECK_STREQ(events, "chose 1 NEST_ECLOSED@1000 chose 2 NEST_EEND@2000");
}

/* ---- shapes ------------------------------------------------------------ */

static int no_enabled_clause(void *arg) {
    (void)arg;
    nest_scope s;
    nest_move_on_after(&s, NEST_SEC(3));
    nest_choose_clause cl[2] = {{NEST_CHOOSE_NONE, NULL, NULL, NULL, NULL, 0},
                                {NEST_CHOOSE_NONE, NULL, NULL, NULL, NULL, 0}};
    int r = nest_choose(cl, 2);
    note("%s@%lld", nest_err_name(r), ms());
    CHECK_EQ(nest_scope_exit(&s, r), 0);
    nest_move_on_after(&s, NEST_SEC(1));
    r = nest_choose(NULL, 0);
    note("%s@%lld", nest_err_name(r), ms());
    CHECK_EQ(nest_scope_exit(&s, r), 0);
    return 0;
}

/* With nothing to wait for, choose waits until cancelled (Go's select{}). */
NEST_TEST(no_enabled_clause_waits_until_cancelled) {
    CHECK_EQ(run_counted(no_enabled_clause), 0);
    CHECK_STREQ(events, "ECANCELED@3000 ECANCELED@4000");
}

#define MANY 12
static nest_chan_tx many_tx[MANY];
static nest_chan_rx many_rx[MANY];

static int many_chooser(void *arg) {
    (void)arg;
    int out[MANY];
    nest_choose_clause cl[MANY];
    for (int i = 0; i < MANY; i++) {
        out[i] = -1;
        cl[i] = (nest_choose_clause)NEST_CHOOSE_RECV_CLAUSE(&many_rx[i], &out[i]);
    }
    int r = nest_choose(cl, MANY);
    note("chose %d got %d@%lld", r, out[r], ms());
    return 0;
}

static int send_on_last_at_1s(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep(NEST_SEC(1)), 0);
    for (int i = 0; i < MANY; i++) {
        nest_chan_stats st;
        CHECK_EQ(nest_chan_rx_stats(&many_rx[i], &st), 0);
        CHECK_EQ(st.waiting_recv, 1);
    }
    int v = 1234;
    CHECK_EQ(nest_chan_send(&many_tx[MANY - 1], &v), 0);
    for (int i = 0; i < MANY; i++) {
        nest_chan_stats st;
        CHECK_EQ(nest_chan_rx_stats(&many_rx[i], &st), 0);
        CHECK_EQ(st.waiting_recv, 0);
    }
    return 0;
}

static int many_body(void *arg) {
    (void)arg;
    for (int i = 0; i < MANY; i++) CHECK_EQ(nest_chan_open(&many_tx[i], &many_rx[i], sizeof(int), 0), 0);
    children[0] = many_chooser;
    children[1] = send_on_last_at_1s;
    children[2] = NULL;
    CHECK_EQ(spawn_children(NULL), 0);
    /* Allocating the waiters of more than eight clauses can fail. */
    int out = -1;
    nest_choose_clause cl[MANY];
    for (int i = 0; i < MANY; i++) cl[i] = (nest_choose_clause)NEST_CHOOSE_RECV_CLAUSE(&many_rx[i], &out);
    fail_allocations(1);
    CHECK_EQ(nest_choose(cl, MANY), -ENOMEM);
    fail_allocations(0);
    for (int i = 0; i < MANY; i++) {
        nest_chan_stats st;
        CHECK_EQ(nest_chan_rx_stats(&many_rx[i], &st), 0);
        CHECK_EQ(st.waiting_recv, 0);
    }
    /* ...but not when a clause is ready at once (nothing to allocate). */
    int v = 5;
    nest_chan_tx_close(&many_tx[3]);
    fail_allocations(1);
    CHECK_EQ(nest_choose(cl, MANY), 3);
    fail_allocations(0);
    CHECK_EQ(cl[3].result, NEST_EEND);
    (void)v;
    for (int i = 0; i < MANY; i++) {
        nest_chan_tx_close(&many_tx[i]);
        nest_chan_rx_close(&many_rx[i]);
    }
    return 0;
}

NEST_TEST(more_than_eight_clauses) {
    CHECK_EQ(run_counted(many_body), 0);
    CHECK_STREQ(events, "chose 11 got 1234@1000");
}

static int einval_body(void *arg) {
    (void)arg;
    open3(1, 1, 1);
    int x = 1;
    nest_choose_clause cl[] = {
        NEST_CHOOSE_SEND_CLAUSE(&ta, &x), /* ready, but the array is invalid */
        {7, NULL, NULL, NULL, NULL, 0},
    };
    CHECK_EQ(nest_choose(cl, 2), -EINVAL);
    CHECK_EQ(stats_of(&ra).buffered, 0);
    close3();
    return 0;
}

NEST_TEST(unknown_op_is_einval_without_effect) { CHECK_EQ(run_counted(einval_body), 0); }

/* ---- checkpoints -------------------------------------------------------- */

static int cancelled_choose_body(void *arg) {
    (void)arg;
    open3(1, 1, 1);
    put(&ta, 1);
    int x = -1, z = 2;
    nest_choose_clause cl[] = {
        NEST_CHOOSE_RECV_CLAUSE(&ra, &x),
        NEST_CHOOSE_SEND_CLAUSE(&tb, &z),
    };
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    CHECK_EQ(nest_choose(cl, 2), -ECANCELED); /* both ready, neither done */
    CHECK_EQ(nest_scope_exit(&s, -ECANCELED), 0);
    CHECK_EQ(x, -1);
    CHECK_EQ(stats_of(&ra).buffered, 1);
    CHECK_EQ(stats_of(&rb).buffered, 0);
    close3();
    return 0;
}

NEST_TEST(cancelled_choose_does_nothing_even_when_ready) { CHECK_EQ(run_counted(cancelled_choose_body), 0); }

static int choose_ready_loop(void *arg) {
    (void)arg;
    int z = 0;
    nest_choose_clause cl[] = {NEST_CHOOSE_SEND_CLAUSE(&ta, &z)};
    for (int i = 0; i < 3; i++) {
        note("A%d", i);
        CHECK_EQ(nest_choose(cl, 1), 0);
    }
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

/* A choose that completes at once still yields. */
NEST_TEST(choose_yields_when_it_completes_at_once) {
    children[0] = choose_ready_loop;
    children[1] = ticker;
    children[2] = NULL;
    CHECK_EQ(run3(10, 0, 0), 0);
    CHECK_STREQ(events, "A0 B0 A1 B1 A2 B2");
}

/* ---- stress -------------------------------------------------------------- */

/* Seeded: choosers that send on one channel or receive from the other,
 * plain senders and receivers on both, random deadlines.  Exactly one
 * clause completes per successful choose; every item reported sent is
 * received exactly once; a cancelled choose or operation moved nothing. */
#define SX_ITEMS 200
static uint64_t rng;
static unsigned rnd(unsigned n) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}
static unsigned char sx_sent[4][SX_ITEMS];
static unsigned char sx_recvd[4][SX_ITEMS];
static long sx_cancels;
static nest_chan_tx sx_tx[4]; /* 0,1: channel a; 2,3: channel b */
static nest_chan_rx sx_rx[4]; /* 0,1: a; 2,3: b */

static void sx_got(int item) {
    int who = item / SX_ITEMS, i = item % SX_ITEMS;
    CHECK(who >= 0 && who < 4);
    CHECK_EQ(sx_recvd[who][i], 0);
    sx_recvd[who][i] = 1;
}

/* Task 0: chooses between sending its items on a and receiving from b.
 * Task 1: chooses between sending its items on b and receiving from a.
 * Tasks 2 and 3: plain sender on a (2) / b (3), then plain receivers. */
static int sx_chooser(void *arg) {
    int me = (int)(intptr_t)arg;
    nest_chan_tx *out = &sx_tx[me == 0 ? 0 : 2];
    nest_chan_rx *in = &sx_rx[me == 0 ? 2 : 0];
    int next = 0, ended = 0;
    while (next < SX_ITEMS || !ended) {
        int item = me * SX_ITEMS + next, got = -1;
        nest_choose_clause cl[] = {
            NEST_CHOOSE_SEND_CLAUSE(out, &item),
            NEST_CHOOSE_RECV_CLAUSE(in, &got),
        };
        if (next == SX_ITEMS) cl[0].op = NEST_CHOOSE_NONE;
        if (ended) cl[1].op = NEST_CHOOSE_NONE;
        if (rnd(2)) { /* either order of preference */
            nest_choose_clause t = cl[0];
            cl[0] = cl[1];
            cl[1] = t;
        }
        nest_scope s;
        nest_move_on_after(&s, NEST_MSEC(rnd(4)));
        int r = nest_choose(cl, 2);
        CHECK_EQ(nest_scope_exit(&s, r), r == -ECANCELED ? 0 : r);
        if (r == -ECANCELED) {
            CHECK_EQ(got, -1);
            sx_cancels++;
            continue;
        }
        CHECK(r == 0 || r == 1);
        if (cl[r].op == NEST_CHOOSE_SEND) {
            CHECK_EQ(cl[r].result, 0);
            CHECK_EQ(got, -1); /* the receive clause did nothing */
            sx_sent[me][next++] = 1;
            if (next == SX_ITEMS) CHECK_EQ(nest_chan_tx_close(out), 0);
        } else if (cl[r].result == NEST_EEND) {
            ended = 1;
        } else {
            CHECK_EQ(cl[r].result, 0);
            sx_got(got);
        }
        if (rnd(3) == 0) CHECK_EQ(nest_sleep(NEST_MSEC(rnd(3))), 0);
    }
    CHECK_EQ(nest_chan_rx_close(in), 0);
    return 0;
}

static int sx_plain(void *arg) {
    int me = (int)(intptr_t)arg;
    nest_chan_tx *out = &sx_tx[me == 2 ? 1 : 3];
    nest_chan_rx *in = &sx_rx[me == 2 ? 3 : 1];
    for (int i = 0; i < SX_ITEMS; i++) {
        int item = me * SX_ITEMS + i;
        nest_scope s;
        nest_move_on_after(&s, NEST_MSEC(rnd(4)));
        int r = nest_chan_send(out, &item);
        CHECK_EQ(nest_scope_exit(&s, r), 0);
        if (r == 0)
            sx_sent[me][i] = 1;
        else
            sx_cancels++;
    }
    nest_chan_tx_close(out);
    for (;;) {
        int got = -1;
        int r = nest_chan_recv(in, &got);
        if (r == NEST_EEND) break;
        CHECK_EQ(r, 0);
        sx_got(got);
    }
    nest_chan_rx_close(in);
    return 0;
}

static size_t sx_cap;

static int sx_body(void *arg) {
    (void)arg;
    CHECK_EQ(nest_chan_open(&sx_tx[0], &sx_rx[0], sizeof(int), sx_cap), 0);
    CHECK_EQ(nest_chan_tx_clone(&sx_tx[1], &sx_tx[0]), 0);
    CHECK_EQ(nest_chan_rx_clone(&sx_rx[1], &sx_rx[0]), 0);
    CHECK_EQ(nest_chan_open(&sx_tx[2], &sx_rx[2], sizeof(int), sx_cap), 0);
    CHECK_EQ(nest_chan_tx_clone(&sx_tx[3], &sx_tx[2]), 0);
    CHECK_EQ(nest_chan_rx_clone(&sx_rx[3], &sx_rx[2]), 0);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, sx_chooser, (void *)0), 0);
    CHECK_EQ(nest_spawn(&n, sx_chooser, (void *)1), 0);
    CHECK_EQ(nest_spawn(&n, sx_plain, (void *)2), 0);
    CHECK_EQ(nest_spawn(&n, sx_plain, (void *)3), 0);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(stress_choosers_against_plain_tasks) {
    static const size_t caps[] = {0, 1, 5};
    sx_cancels = 0;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        for (size_t k = 0; k < 3; k++) {
            rng = seed * 0x9e3779b97f4a7c15ull + k;
            sx_cap = caps[k];
            memset(sx_sent, 0, sizeof sx_sent);
            memset(sx_recvd, 0, sizeof sx_recvd);
            int r = run_counted(sx_body);
            if (r != 0) fprintf(stderr, "seed %llu cap %zu\n", (unsigned long long)seed, caps[k]);
            CHECK_EQ(r, 0);
            for (int w = 0; w < 4; w++)
                for (int i = 0; i < SX_ITEMS; i++) {
                    if (sx_sent[w][i] != sx_recvd[w][i])
                        fprintf(stderr, "seed %llu cap %zu: item %d/%d sent %d received %d\n",
                                (unsigned long long)seed, caps[k], w, i, sx_sent[w][i],
                                sx_recvd[w][i]);
                    CHECK_EQ(sx_sent[w][i], sx_recvd[w][i]);
                }
        }
    }
    CHECK(sx_cancels > 100);
}
