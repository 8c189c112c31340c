/*
 * bench/timeouts.c - a 10 s deadline scope around a checkpoint that does not
 * block (the peers' timeouts: trio move_on_after(10) + checkpoint, Go
 * context.WithTimeout + select, libdill fdin with a deadline, raw libev
 * ev_timer_start + ev_run(NOWAIT) + ev_timer_stop).
 *
 *     bench_timeouts [N=1000000] [reps=K]
 *
 * Every rep runs these loops of N iterations in one task and reports ns per
 * iteration:
 *   bare        nest_checkpoint()
 *   scope       nest_scope s; nest_move_on_after(&s, NEST_SEC(10));
 *               rc = nest_checkpoint(); rc = nest_scope_exit(&s, rc);
 *   enter_exit  the scope alone, no checkpoint (the deadline's own cost,
 *               cf. libev's ev_timer_start + ev_timer_stop "startstop" row)
 *   bare_fd, scope_fd
 *               bare and scope again while another task waits on an idle
 *               eventfd, so that nest really has I/O to poll: the
 *               scheduler then polls libev (one epoll_wait) every 64
 *               scheduling steps.  Without any fd watched there is nothing
 *               to poll and nest makes no system call at all.
 * cost = scope - bare (difference of the medians in the summary).
 *
 * With a single runnable task a checkpoint checks for cancellation and
 * yields to the scheduler, which finds no other task and resumes the caller
 * without a context switch (every 64th step goes through the scheduler's
 * poll, which reads the clock to expire deadlines).
 */
#include "bench.h" /* first: it defines _GNU_SOURCE */

#include <sys/eventfd.h>
#include <unistd.h>

static long n_iter;

enum { BARE, SCOPE, ENTER_EXIT, BARE_FD, SCOPE_FD, NKIND };
static const char *kind_name[NKIND] = {"bare", "scope", "enter_exit", "bare_fd", "scope_fd"};
static double res[NKIND][BENCH_MAX_REPS];
static int cur_rep;

static double loop_bare(void) {
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n_iter; i++) bench_check(nest_checkpoint(), "nest_checkpoint");
    return (double)(bench_now_ns() - t0) / (double)n_iter;
}

static double loop_scope(void) {
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n_iter; i++) {
        nest_scope s;
        nest_move_on_after(&s, NEST_SEC(10));
        int rc = nest_checkpoint();
        rc = nest_scope_exit(&s, rc);
        bench_check(rc, "checkpoint in scope");
        if (nest_scope_cancel_called(&s)) {
            fprintf(stderr, "bench: the 10 s deadline expired?!\n");
            exit(2);
        }
    }
    return (double)(bench_now_ns() - t0) / (double)n_iter;
}

static double loop_enter_exit(void) {
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n_iter; i++) {
        nest_scope s;
        nest_move_on_after(&s, NEST_SEC(10));
        bench_check(nest_scope_exit(&s, 0), "nest_scope_exit");
    }
    return (double)(bench_now_ns() - t0) / (double)n_iter;
}

static int efd_waiter(void *arg) {
    int fd = *(int *)arg;
    int rc = nest_wait_readable(fd); /* never readable: returns when cancelled */
    return rc == -ECANCELED ? 0 : (rc < 0 ? rc : -EINVAL);
}

static int main_task(void *arg) {
    (void)arg;
    int r = cur_rep;
    res[BARE][r] = loop_bare();
    res[SCOPE][r] = loop_scope();
    res[ENTER_EXIT][r] = loop_enter_exit();

    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) {
        perror("eventfd");
        exit(2);
    }
    nest_nursery n;
    nest_nursery_open(&n);
    bench_check(nest_spawn(&n, efd_waiter, &efd), "nest_spawn");
    bench_check(nest_checkpoint(), "nest_checkpoint"); /* let it block on the fd */
    res[BARE_FD][r] = loop_bare();
    res[SCOPE_FD][r] = loop_scope();
    nest_nursery_cancel(&n);
    bench_check(nest_nursery_close(&n, 0), "nest_nursery_close");
    close(efd);
    return 0;
}

int main(int argc, char **argv) {
    bench_args a;
    bench_parse(&a, argc, argv);
    n_iter = bench_count(&a, 0, 1000000);
    if (n_iter < 1) n_iter = 1;
    for (int r = 0; r < a.reps; r++) {
        cur_rep = r;
        int rc = nest_run(main_task, NULL);
        if (rc < 0) {
            printf("error=nest_run_%s\n", nest_err_name(rc));
            return 1;
        }
        printf("rep=%d", r + 1);
        for (int k = 0; k < NKIND; k++) printf(" %s_ns=%.1f", kind_name[k], res[k][r]);
        printf(" cost_ns=%.1f\n", res[SCOPE][r] - res[BARE][r]);
        fflush(stdout);
    }
    printf("iterations=%ld", n_iter);
    for (int k = 0; k < NKIND; k++) {
        char key[64];
        snprintf(key, sizeof key, "%s_ns", kind_name[k]);
        bench_print_stats(key, res[k], a.reps, 1);
    }
    printf(" cost_ns=%.1f\n",
           bench_stats_of(res[SCOPE], a.reps).median - bench_stats_of(res[BARE], a.reps).median);
    return 0;
}
