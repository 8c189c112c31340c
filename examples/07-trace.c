/*
 * 07-trace.c - seeing a run: a task tree dump, statistics, and a trace to
 * open in Perfetto.
 *
 * A toy crawler fetches four pages at once, each under its own deadline;
 * a logger task reports each page through a pipe.  Fetching is simulated
 * with sleeps: "slow" takes longer than its deadline (it is cut off at
 * 200 ms and counted as skipped), "broken" fails at 250 ms, which cancels
 * everything still running.
 *
 * Look for, in order:
 *  1. the task tree, printed while the fetches are under way: every task
 *     with what it waits for (sleeping until ..., waiting for fd N to be
 *     readable) and every deadline, relative to now;
 *  2. the logger's lines for the pages done before the failure, and the
 *     result: the first failure (EIO);
 *  3. the run's statistics;
 *  4. a file (trace.json, or the path given as argument) to open at
 *     https://ui.perfetto.dev: one track per task with a "run" slice for
 *     each step and a slice for each wait, named after what it waited for;
 *     arrows from each spawn; the nurseries; markers for the deadline that
 *     expired, the cancellation and the error.
 *
 * With --self-test (as ctest runs it) the trace goes to a temporary file
 * instead, and the run checks that it got the expected failure and that
 * the trace was written.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <nest.h>
#include <nest/inspect.h>
#include <nest/trace.h>

struct page {
    const char *name;
    int ms;          /* how long fetching it takes */
    int deadline_ms; /* how long we are willing to wait */
    int fails;       /* fails with EIO when done */
};
static const struct page pages[] = {
    {"index", 100, 300, 0}, {"about", 150, 300, 0}, {"slow", 900, 200, 0}, {"broken", 250, 300, 1}};
static int pipefd[2];

static int fetch(void *arg) {
    const struct page *p = arg;
    nest_scope s;
    nest_move_on_after(&s, NEST_MSEC(p->deadline_ms));
    int rc = nest_sleep(NEST_MSEC(p->ms));
    if (rc == 0 && p->fails) rc = -EIO;
    rc = nest_scope_exit(&s, rc);
    char c = rc < 0 ? 'x' : nest_scope_cancelled_caught(&s) ? '-' : '+';
    if (write(pipefd[1], &c, 1) != 1) return -errno;
    return rc;
}

static int logger(void *arg) {
    (void)arg;
    char c;
    for (int i = 0; i < 4; i++) {
        int rc = nest_wait_readable(pipefd[0]);
        if (rc < 0) return rc;
        if (read(pipefd[0], &c, 1) != 1) return -errno;
        printf("logger: page %s\n", c == '+' ? "fetched" : c == '-' ? "skipped" : "failed");
    }
    return 0;
}

static int crawl(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn(&n, logger, NULL);
    for (int i = 0; i < 4; i++) {
        nest_spawn_options o = {pages[i].name, 0, NULL};
        nest_spawn_opts(&n, fetch, (void *)&pages[i], &o);
    }
    nest_sleep(NEST_MSEC(120)); /* "index" is done, the others are waiting */
    printf("--- the task tree, 120 ms in ---\n");
    nest_dump(stdout);
    return nest_nursery_close(&n, 0);
}

static int main_task(void *arg) {
    FILE *trace = arg;
    nest_trace_start(trace);
    int rc = crawl(NULL);
    printf("--- crawl: %s (%s) ---\n", nest_err_name(rc), nest_strerror(rc));
    nest_runtime_stats st;
    nest_stats(&st);
    printf("tasks spawned %llu, steps %llu, passes %llu, polls %llu, fd waits %llu, "
           "loop lag max %.3f ms\n",
           (unsigned long long)st.tasks_spawned, (unsigned long long)st.steps,
           (unsigned long long)st.passes, (unsigned long long)st.polls,
           (unsigned long long)st.fd_waits, (double)st.loop_lag_max / 1e6);
    nest_trace_stop();
    return rc == -EIO ? 0 : -1; /* the failure is the expected outcome */
}

int main(int argc, char **argv) {
    int self_test = argc > 1 && strcmp(argv[1], "--self-test") == 0;
    const char *path = argc > 1 && !self_test ? argv[1] : "trace.json";
    FILE *trace = self_test ? tmpfile() : fopen(path, "w"); /* the test leaves no file */
    if (!trace || pipe(pipefd) < 0) return 1;
    int rc = nest_run(main_task, trace);
    long size = ftell(trace);
    fclose(trace);
    close(pipefd[0]), close(pipefd[1]);
    if (self_test) printf("trace: %ld bytes written to a temporary file\n", size);
    else printf("trace written to %s: open it at https://ui.perfetto.dev\n", path);
    return rc < 0 || size <= 0;
}
