/*
 * 17-subprocess.c - child processes: run one to completion, talk to one
 * through pipes, and put a deadline on one that will not stop.
 *
 * 1. nest_process_run() feeds "banana\napple\ncherry\n" to sort and
 *    captures what it prints.
 * 2. nest_process_spawn() starts `tr a-z A-Z` with pipes; one task writes
 *    to its stdin while another reads its stdout, at the same time (a
 *    child with a full output pipe would stop reading its input, so doing
 *    both in one task can deadlock on large data).
 * 3. A shell pipeline that ignores SIGTERM runs under a 100 ms deadline:
 *    the deadline cancels the run, the child gets SIGTERM, then - after
 *    the grace period, shortened here to 200 ms - SIGKILL, and is reaped
 *    before nest_process_run returns -ETIMEDOUT through the scope.  Look
 *    for the returncode -9 and the time, about 300 ms.  new_group matters:
 *    `sleep` and `cat` are the shell's children, not nest's; with
 *    new_group the shell leads a process group and the signals go to the
 *    whole group.  Without it only the shell would die, and the pipeline
 *    would run on for 10 s after the example ended.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <nest.h>

static int writer(void *arg) {
    nest_process *p = arg;
    const char *text = "structured concurrency\nfor C\n";
    int rc = nest_stream_send_all(p->stdin_, text, strlen(text), NULL);
    nest_stream_send_eof(p->stdin_); /* tr sees EOF and exits */
    return rc;
}

static int reader(void *arg) {
    nest_process *p = arg;
    char buf[256];
    ssize_t n;
    while ((n = nest_stream_receive_some(p->stdout_, buf, sizeof buf)) > 0)
        printf("   tr says: %.*s", (int)n, buf);
    return (int)n;
}

static int body(void *arg) {
    (void)arg;
    nest_process_options o;
    nest_process_options_init(&o);
    o.search_path = 1;
    o.stdio[0] = o.stdio[1] = NEST_STDIO_PIPE;

    /* 1. Run to completion. */
    char *sort[] = {"sort", NULL};
    char out[64];
    nest_process_io io = {.input = "banana\napple\ncherry\n", .input_len = 20,
                          .out = out, .out_cap = sizeof out};
    int rc = nest_process_run("sort", sort, &o, &io);
    printf("1. sort: %s, returncode %d, output:\n%.*s", nest_err_name(rc), io.returncode,
           (int)io.out_len, out);

    /* 2. Talk through pipes. */
    nest_process p;
    char *tr[] = {"tr", "a-z", "A-Z", NULL};
    if ((rc = nest_process_spawn(&p, "tr", tr, &o)) < 0) return rc;
    printf("2. started tr as process %d\n", (int)p.pid);
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn(&n, writer, &p);
    nest_spawn(&n, reader, &p);
    rc = nest_nursery_close(&n, 0);
    int code = -1;
    if (rc == 0) rc = nest_process_wait(&p, &code);
    nest_process_close(&p); /* always: reaps, closes the pipes */
    printf("   tr: %s, returncode %d\n", nest_err_name(rc), code);

    /* 3. A deadline on a pipeline that ignores SIGTERM. */
    char *stubborn[] = {"sh", "-c", "trap '' TERM; sleep 10 | cat", NULL};
    nest_process_options_init(&o);
    o.search_path = 1;
    o.grace = NEST_MSEC(200);
    o.new_group = 1; /* signal the shell's children too */
    nest_time t0 = nest_now();
    nest_scope s;
    nest_fail_after(&s, NEST_MSEC(100));
    rc = nest_process_run("sh", stubborn, &o, &io);
    rc = nest_scope_exit(&s, rc);
    printf("3. stubborn child: %s after %lld ms, returncode %d (-%d is SIGKILL)\n",
           nest_err_name(rc), (long long)((nest_now() - t0) / NEST_MSEC(1)), io.returncode,
           SIGKILL);
    /* (-SIGTERM if the deadline came before the shell had set its trap.) */
    return rc == -ETIMEDOUT && io.returncode < 0 ? 0 : -1;
}

int main(void) { return nest_run(body, NULL) == 0 ? 0 : 1; }
