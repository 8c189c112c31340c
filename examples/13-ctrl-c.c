/*
 * 13-ctrl-c.c - graceful shutdown on Ctrl-C.
 *
 * nest_run handles SIGINT by default: the first Ctrl-C cancels the whole
 * run, so every task unwinds through its normal cancellation path - each
 * blocking call returns -ECANCELED, each nursery waits for its children,
 * and cleanup that must block runs in a shielded scope - and nest_run
 * returns NEST_EINTERRUPTED.  A second Ctrl-C, if the shutdown hangs,
 * kills the process at once.
 *
 * Three workers tick until interrupted; each then "flushes its state" for
 * 30 ms in a shielded scope with a deadline of its own.  A fourth task
 * receives SIGUSR1 through a signal receiver (nest/signal.h) and prints
 * the workers' counters: try `kill -USR1 <pid>`.
 *
 * Run it and press Ctrl-C, or pass --self-test: it raises SIGINT itself
 * after 200 ms (and SIGUSR1 after 100 ms), so it terminates on its own.
 * nest handles SIGINT only if its disposition is the default when the run
 * starts (a shell starts background jobs with SIGINT ignored, and nest
 * respects that), so the self-test restores the default first.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <nest.h>
#include <nest/signal.h>

static long ticks[3];
static int self_test;

static int worker(void *arg) {
    int id = (int)(intptr_t)arg;
    int rc;
    while ((rc = nest_sleep(NEST_MSEC(10 + 10 * id))) == 0) ticks[id]++;
    printf("worker %d: %s after %ld ticks; flushing...\n", id, nest_err_name(rc), ticks[id]);
    nest_scope s;
    nest_move_on_after(&s, NEST_MSEC(500)); /* a hung flush is cut off */
    nest_scope_set_shield(&s, 1);           /* the run's cancellation does not reach here */
    int frc = nest_sleep(NEST_MSEC(30));
    nest_scope_exit(&s, frc);
    printf("worker %d: flushed (%s)\n", id, nest_err_name(frc));
    return rc;
}

static int reporter(void *arg) {
    (void)arg;
    nest_signal_rx rx;
    int rc = nest_signal_open(&rx, NEST_SIG(SIGUSR1));
    if (rc < 0) return rc;
    while ((rc = nest_signal_receive(&rx)) > 0)
        printf("signal %d: ticks %ld %ld %ld\n", rc, ticks[0], ticks[1], ticks[2]);
    nest_signal_close(&rx); /* restores SIGUSR1's disposition */
    return rc;
}

static int self_interrupt(void *arg) {
    (void)arg;
    nest_sleep(NEST_MSEC(100));
    raise(SIGUSR1);
    nest_sleep(NEST_MSEC(100));
    printf("--self-test: raising SIGINT\n");
    raise(SIGINT);
    return nest_sleep_forever();
}

static int run(void *arg) {
    (void)arg;
    printf("running; press Ctrl-C to stop (pid %d)\n", (int)getpid());
    fflush(stdout);
    nest_nursery n;
    nest_nursery_open(&n);
    for (intptr_t i = 0; i < 3; i++) nest_spawn(&n, worker, (void *)i);
    nest_spawn(&n, reporter, NULL);
    if (self_test) nest_spawn(&n, self_interrupt, NULL);
    return nest_nursery_close(&n, 0);
}

int main(int argc, char **argv) {
    self_test = argc > 1 && strcmp(argv[1], "--self-test") == 0;
    if (self_test) signal(SIGINT, SIG_DFL);
    int rc = nest_run(run, NULL);
    printf("nest_run: %s\n", nest_err_name(rc));
    return rc == NEST_EINTERRUPTED ? 0 : 1;
}
