/*
 * test/test_signal.c - signal receivers and the Ctrl-C rule (nest/signal.h).
 *
 * Covers: raised signals come back in order as numbers; each receiver gets
 * only its own signals, and every receiver holding a signal gets it;
 * dispositions (a handler, SIG_IGN) are restored on close; receive is a
 * checkpoint and wakes with NEST_ECLOSED on close; argument checks; Ctrl-C:
 * the first SIGINT cancels the run, shielded cleanup runs, nest_run
 * returns NEST_EINTERRUPTED and SIGINT's disposition is restored; the
 * opt-out; a program's own SIGINT handler is left alone; a SIGINT receiver
 * takes precedence; a second SIGINT kills the process (in a forked child).
 *
 * Signals are sent with raise(), which runs the handler synchronously in
 * the calling thread before it returns: deterministic.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "nest.h"
#include "nest/signal.h"

static nest_run_options quiet_opts(void) {
    nest_run_options o;
    nest_run_options_init(&o);
    o.quiet = 1;
    return o;
}

static void (*disposition(int s))(int) {
    struct sigaction sa;
    CHECK_EQ(sigaction(s, NULL, &sa), 0);
    return sa.sa_handler;
}

/* Receives with a 20 ms limit; returns the signal or -ECANCELED. */
static int receive_soon(nest_signal_rx *rx) {
    nest_scope s;
    nest_move_on_after(&s, NEST_MSEC(20));
    int rc = nest_signal_receive(rx);
    nest_scope_exit(&s, rc);
    return rc;
}

/* ---- receivers --------------------------------------------------------- */

static int in_order(void *arg) {
    (void)arg;
    nest_signal_rx rx;
    CHECK_EQ(nest_signal_open(&rx, NEST_SIG(SIGUSR1) | NEST_SIG(SIGUSR2)), 0);
    raise(SIGUSR2);
    raise(SIGUSR1);
    raise(SIGUSR2);
    CHECK_EQ(nest_signal_receive(&rx), SIGUSR2);
    CHECK_EQ(nest_signal_receive(&rx), SIGUSR1);
    CHECK_EQ(nest_signal_receive(&rx), SIGUSR2);
    CHECK_EQ(receive_soon(&rx), -ECANCELED);
    nest_signal_close(&rx);
    nest_signal_close(&rx); /* twice: nothing */
    return 0;
}

NEST_TEST(raised_signals_are_received_in_order) {
    CHECK_EQ(nest_run(in_order, NULL), 0);
}

static int two_receivers(void *arg) {
    (void)arg;
    nest_signal_rx a, b, c;
    CHECK_EQ(nest_signal_open(&a, NEST_SIG(SIGUSR1)), 0);
    CHECK_EQ(nest_signal_open(&b, NEST_SIG(SIGUSR2)), 0);
    CHECK_EQ(nest_signal_open(&c, NEST_SIG(SIGUSR2) | NEST_SIG(SIGHUP)), 0);
    raise(SIGUSR2);
    CHECK_EQ(receive_soon(&a), -ECANCELED); /* not a's */
    CHECK_EQ(nest_signal_receive(&b), SIGUSR2);
    CHECK_EQ(nest_signal_receive(&c), SIGUSR2); /* both holders get it */
    raise(SIGUSR1);
    CHECK_EQ(nest_signal_receive(&a), SIGUSR1);
    CHECK_EQ(receive_soon(&b), -ECANCELED);
    nest_signal_close(&b);
    raise(SIGUSR2); /* c still holds it */
    CHECK_EQ(nest_signal_receive(&c), SIGUSR2);
    nest_signal_close(&a);
    nest_signal_close(&c);
    return 0;
}

NEST_TEST(signals_go_to_the_receivers_that_hold_them) {
    CHECK_EQ(nest_run(two_receivers, NULL), 0);
}

static volatile sig_atomic_t own_calls;
static void own_handler(int s) {
    (void)s;
    own_calls++;
}

static int restore(void *arg) {
    (void)arg;
    nest_signal_rx rx, rx2;
    CHECK_EQ(nest_signal_open(&rx, NEST_SIG(SIGUSR1) | NEST_SIG(SIGUSR2)), 0);
    CHECK_EQ(nest_signal_open(&rx2, NEST_SIG(SIGUSR1)), 0);
    CHECK(disposition(SIGUSR1) != own_handler);
    raise(SIGUSR1);
    CHECK_EQ(nest_signal_receive(&rx), SIGUSR1);
    CHECK_EQ(own_calls, 0);
    nest_signal_close(&rx);
    CHECK(disposition(SIGUSR2) == SIG_IGN);     /* no other holder: restored */
    CHECK(disposition(SIGUSR1) != own_handler); /* rx2 still holds it */
    nest_signal_close(&rx2);
    CHECK(disposition(SIGUSR1) == own_handler);
    raise(SIGUSR1);
    CHECK_EQ(own_calls, 1);
    raise(SIGUSR2); /* ignored again */
    return 0;
}

NEST_TEST(close_restores_the_previous_dispositions) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = own_handler;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGUSR2, &sa, NULL);
    CHECK_EQ(nest_run(restore, NULL), 0);
    CHECK(disposition(SIGUSR1) == own_handler);
}

static nest_signal_rx shared_rx;

static int waiter(void *arg) {
    (void)arg;
    CHECK_EQ(nest_signal_receive(&shared_rx), NEST_ECLOSED);
    return 0;
}

static int checkpoint_and_close(void *arg) {
    (void)arg;
    CHECK_EQ(nest_signal_open(&shared_rx, NEST_SIG(SIGUSR1)), 0);
    raise(SIGUSR1);
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_cancel(&s);
    CHECK_EQ(nest_signal_receive(&shared_rx), -ECANCELED); /* even with one pending */
    CHECK_EQ(nest_scope_exit(&s, -ECANCELED), 0);
    CHECK_EQ(nest_signal_receive(&shared_rx), SIGUSR1);
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, waiter, NULL), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    nest_signal_close(&shared_rx);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(receive_is_a_checkpoint_and_close_wakes_the_waiter) {
    CHECK_EQ(nest_run(checkpoint_and_close, NULL), 0);
}

static int bad(void *arg) {
    (void)arg;
    nest_signal_rx rx;
    CHECK_EQ(nest_signal_open(&rx, 0), -EINVAL);
    CHECK_EQ(nest_signal_open(&rx, NEST_SIG(SIGKILL)), -EINVAL);
    CHECK_EQ(nest_signal_open(&rx, NEST_SIG(SIGSTOP) | NEST_SIG(SIGUSR1)), -EINVAL);
    nest_signal_close(&rx); /* a failed open leaves it closed */
    CHECK(disposition(SIGUSR1) == SIG_DFL);
    return 0;
}

NEST_TEST(invalid_sets_are_einval) {
    CHECK_EQ(nest_run(bad, NULL), 0);
}

/* ---- Ctrl-C ------------------------------------------------------------ */

static int cleanup_ran, child_rc;

static int worker(void *arg) {
    (void)arg;
    child_rc = nest_sleep_forever();
    nest_scope s; /* cleanup that must block: shielded, with its own limit */
    nest_move_on_after(&s, NEST_MSEC(50));
    nest_scope_set_shield(&s, 1);
    CHECK_EQ(nest_sleep(NEST_MSEC(5)), 0);
    cleanup_ran = 1;
    nest_scope_exit(&s, 0);
    return child_rc;
}

static int interrupted(void *arg) {
    (void)arg;
    CHECK(disposition(SIGINT) != SIG_DFL); /* nest's */
    nest_nursery n;
    nest_nursery_open(&n);
    CHECK_EQ(nest_spawn(&n, worker, NULL), 0);
    CHECK_EQ(nest_wait_all_tasks_blocked(), 0);
    raise(SIGINT);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(first_ctrl_c_cancels_the_run_cleanly) {
    nest_run_options o = quiet_opts();
    CHECK_EQ(nest_run_opts(interrupted, NULL, &o), NEST_EINTERRUPTED);
    CHECK_EQ(child_rc, -ECANCELED);
    CHECK_EQ(cleanup_ran, 1);
    CHECK(disposition(SIGINT) == SIG_DFL); /* restored */
    CHECK_STREQ(nest_err_name(NEST_EINTERRUPTED), "NEST_EINTERRUPTED");
    /* The next run starts afresh. */
    CHECK_EQ(nest_run(bad, NULL), 0);
}

static int untouched(void *arg) {
    (void)arg;
    CHECK(disposition(SIGINT) == (void (*)(int))arg);
    return 0;
}

NEST_TEST(ctrl_c_opt_out_and_own_handler_leave_sigint_alone) {
    nest_run_options o = quiet_opts();
    o.no_ctrl_c = 1;
    CHECK_EQ(nest_run_opts(untouched, (void *)SIG_DFL, &o), 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = own_handler;
    sigaction(SIGINT, &sa, NULL);
    CHECK_EQ(nest_run(untouched, (void *)own_handler), 0);
}

static int sigint_receiver(void *arg) {
    (void)arg;
    nest_signal_rx rx;
    CHECK_EQ(nest_signal_open(&rx, NEST_SIG(SIGINT)), 0);
    raise(SIGINT);
    CHECK_EQ(nest_signal_receive(&rx), SIGINT);
    CHECK_EQ(nest_checkpoint(), 0); /* not cancelled */
    nest_signal_close(&rx);
    CHECK(disposition(SIGINT) != SIG_DFL); /* back to nest's Ctrl-C */
    return 0;
}

NEST_TEST(a_sigint_receiver_takes_ctrl_c) {
    CHECK_EQ(nest_run(sigint_receiver, NULL), 0);
    CHECK(disposition(SIGINT) == SIG_DFL);
}

static int twice(void *arg) {
    (void)arg;
    raise(SIGINT);
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_set_shield(&s, 1);
    nest_sleep(NEST_MSEC(5)); /* the run is cancelled now */
    raise(SIGINT);            /* dies here */
    nest_scope_exit(&s, 0);
    return 0;
}

NEST_TEST(second_ctrl_c_kills_the_process) {
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        nest_run_options o = quiet_opts();
        nest_run_opts(twice, NULL, &o);
        _exit(3); /* not reached */
    }
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFSIGNALED(status));
    CHECK_EQ(WTERMSIG(status), SIGINT);
}
