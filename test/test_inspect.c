/*
 * test/test_inspect.c - seeing inside a running program (nest/inspect.h):
 * blocked-on reasons, the task tree dump, deadlock reports, the dump
 * signal, statistics, the slow-step report, and randomised (replayable)
 * scheduling.
 *
 * Covers: nest_task_block()/nest_task_describe() for every kind of wait;
 * the exact text of a dump of a tree with nested nurseries, scopes with
 * deadlines, a shield, a cancelled scope and a named parking lot; a
 * deadlock prints the tree (to the report stream, to stderr by default,
 * nothing when quiet); nest_dump_on_signal() from a task, from another
 * thread while the loop is blocked, its errors and the restored
 * disposition; nest_stats() counters and gauges; slow steps flagged (and
 * fast ones not) by the API and by NEST_SLOW_STEP_MS; seeds: same seed
 * same order, another seed another order, 0 is FIFO, NEST_SEED overrides,
 * the seed is printed when a randomised run fails.
 *
 * Unless a case says otherwise it runs on the mock clock with autojump 0.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "support.h"
#include "nest.h"
#include "nest/inspect.h"

/* ---- helpers ----------------------------------------------------------- */

static int run_mock_opts(nest_fn fn, void *arg, nest_run_options *o) {
    o->clock = NEST_CLOCK_MOCK;
    o->autojump_threshold = 0;
    return nest_run_opts(fn, arg, o);
}

/* An in-memory FILE whose contents can be read back. */
typedef struct capture {
    FILE *f;
    char *buf;
    size_t len;
} capture;

static void capture_open(capture *c) {
    c->buf = NULL;
    c->len = 0;
    c->f = open_memstream(&c->buf, &c->len);
    CHECK(c->f != NULL);
}

static const char *capture_text(capture *c) {
    fflush(c->f);
    return c->buf ? c->buf : "";
}

static void capture_close(capture *c) {
    fclose(c->f);
    free(c->buf);
}

/* Runs body() with fd 2 sent to a temporary file; returns what it wrote
 * (static buffer). */
static char stderr_text[65536];
static void with_stderr_captured(void (*body)(void)) {
    char path[] = "/tmp/nest_test_stderr_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    body();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, stderr_text, sizeof stderr_text - 1);
    stderr_text[n > 0 ? n : 0] = '\0';
    close(fd);
}

static nest_time real_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (nest_time)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* ---- blocked-on reasons ------------------------------------------------- */

static int pipefd[2];
static int wpipe[2]; /* a pipe whose buffer is full */
static nest_parking_lot lot_a, lot_b;
static nest_task *h_forever;

static int sleeps_in_scope(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, nest_now() + NEST_SEC(2)); /* earlier than the sleep */
    int rc = nest_sleep(NEST_SEC(3));
    return nest_scope_exit(&s, rc);
}
static int sleeps_forever(void *arg) {
    (void)arg;
    return nest_sleep_forever();
}
static int reads(void *arg) {
    (void)arg;
    return nest_wait_readable(pipefd[0]);
}
static int writes(void *arg) {
    (void)arg;
    return nest_wait_writable(wpipe[1]);
}
static int parks(void *arg) {
    (void)arg;
    nest_waiter w;
    return nest_park(&lot_a, &w, NULL, NULL);
}
static int parks_in_two(void *arg) {
    (void)arg;
    nest_waiter ws[2];
    nest_waiter_init(&ws[0], &lot_a, NULL);
    nest_waiter_init(&ws[1], &lot_b, NULL);
    return nest_park_group(ws, 2, NULL);
}
static int closes_nursery(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn(&n, sleeps_forever, NULL);
    return nest_nursery_close(&n, 0);
}
static int never_starts(void *arg) {
    (void)arg;
    return nest_sleep_forever();
}
static nest_nursery *start_into;
static int starts(void *arg) {
    (void)arg;
    return nest_start(start_into, never_starts, NULL, NULL);
}
static int waits_task(void *arg) {
    (void)arg;
    return nest_task_wait(h_forever, NULL);
}
static int idles(void *arg) {
    (void)arg;
    return nest_wait_all_tasks_blocked();
}

static void fill_pipe(int fds[2]) {
    CHECK_EQ(pipe(fds), 0);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    char chunk[4096];
    memset(chunk, 'x', sizeof chunk);
    while (write(fds[1], chunk, sizeof chunk) > 0) {
    }
}

static int every_kind_root(void *arg) {
    (void)arg;
    CHECK_EQ(pipe(pipefd), 0);
    fill_pipe(wpipe);
    nest_parking_lot_init(&lot_a);
    nest_parking_lot_init(&lot_b);
    nest_parking_lot_set_name(&lot_a, "lock", NULL);
    nest_task *h[11];
    nest_nursery n;
    nest_nursery_open(&n);
    start_into = &n;
    nest_fn fns[] = {sleeps_in_scope, sleeps_forever, reads,      writes, parks, parks_in_two,
                     closes_nursery,  starts,         waits_task, idles};
    for (int i = 0; i < 10; i++) {
        nest_spawn_options o = {NULL, 0, &h[i]};
        CHECK_EQ(nest_spawn_opts(&n, fns[i], NULL, &o), 0);
        if (i == 1) h_forever = h[1];
    }
    for (int i = 0; i < 5; i++) CHECK_EQ(nest_checkpoint(), 0);
    CHECK_EQ(nest_clock_jump(NEST_MSEC(500)), 0);

    nest_block_info b;
    CHECK_EQ(nest_task_state(nest_current_task()), NEST_TASK_RUNNING);
    CHECK_EQ(nest_task_block(nest_current_task(), &b), NEST_BLOCK_NONE);
    CHECK_EQ(b.fd, -1);
    CHECK_EQ(b.deadline, NEST_FOREVER);

    CHECK_EQ(nest_task_state(h[0]), NEST_TASK_BLOCKED);
    CHECK_EQ(nest_task_block(h[0], &b), NEST_BLOCK_SLEEP);
    CHECK_EQ(b.since, 0);
    CHECK_EQ(b.deadline, NEST_SEC(2)); /* the enclosing scope wakes it first */
    CHECK_EQ(nest_task_block(h[1], &b), NEST_BLOCK_SLEEP);
    CHECK_EQ(b.deadline, NEST_FOREVER);
    CHECK_EQ(nest_task_block(h[2], &b), NEST_BLOCK_READ);
    CHECK_EQ(b.fd, pipefd[0]);
    CHECK_EQ(nest_task_block(h[3], &b), NEST_BLOCK_WRITE);
    CHECK_EQ(b.fd, wpipe[1]);
    CHECK_EQ(nest_task_block(h[4], &b), NEST_BLOCK_PARK);
    CHECK_STREQ(b.lot, "lock");
    CHECK_EQ(b.nlots, 1);
    CHECK(b.object == &lot_a);
    CHECK_EQ(nest_task_block(h[5], &b), NEST_BLOCK_PARK);
    CHECK_EQ(b.nlots, 2);
    CHECK_EQ(nest_task_block(h[6], &b), NEST_BLOCK_NURSERY);
    CHECK_EQ(nest_task_block(h[7], &b), NEST_BLOCK_START);
    CHECK(b.object != NULL);
    CHECK_STREQ(nest_task_name(b.object), "never_starts");
    CHECK_EQ(nest_task_block(h[8], &b), NEST_BLOCK_TASK);
    CHECK(b.object == h_forever);
    CHECK_EQ(nest_task_block(h[9], &b), NEST_BLOCK_IDLE);

    char d[256];
    const char *want[] = {
        "blocked 500.000ms sleeping until +2.500s (an enclosing deadline wakes it at +1.500s)",
        "blocked 500.000ms sleeping forever",
        NULL, /* fd numbers vary: checked below */
        NULL,
        NULL, /* addresses vary */
        NULL,
        "blocked 500.000ms in nest_nursery_close: 1 child left (nursery at ",
        "blocked 500.000ms in nest_start: waiting for task #",
        "blocked 500.000ms in nest_task_wait for task #3 \"fns[i]\"",
        "blocked 500.000ms in nest_wait_all_tasks_blocked",
    };
    for (int i = 0; i < 10; i++) {
        int len = nest_task_describe(h[i], d, sizeof d);
        CHECK_EQ(len, (long long)strlen(d));
        if (want[i]) {
            if (strncmp(d, want[i], strlen(want[i])) != 0) {
                fprintf(stderr, "task %d: \"%s\"\n", i, d);
                CHECK(0);
            }
        }
    }
    char w[128];
    snprintf(w, sizeof w, "blocked 500.000ms waiting for fd %d to be readable", pipefd[0]);
    nest_task_describe(h[2], d, sizeof d);
    CHECK_STREQ(d, w);
    snprintf(w, sizeof w, "blocked 500.000ms waiting for fd %d to be writable", wpipe[1]);
    nest_task_describe(h[3], d, sizeof d);
    CHECK_STREQ(d, w);
    snprintf(w, sizeof w, "blocked 500.000ms waiting on lock %p (2 waiting)", (void *)&lot_a);
    nest_task_describe(h[4], d, sizeof d);
    CHECK_STREQ(d, w);
    snprintf(w, sizeof w,
             "blocked 500.000ms waiting on lock %p (2 waiting); or parking lot %p (1 waiting)",
             (void *)&lot_a, (void *)&lot_b);
    nest_task_describe(h[5], d, sizeof d);
    CHECK_STREQ(d, w);
    /* Truncation reports the wanted length, like snprintf. */
    char small[8];
    int wanted = nest_task_describe(h[1], small, sizeof small);
    CHECK_EQ(wanted, (long long)strlen("blocked 500.000ms sleeping forever"));
    CHECK_STREQ(small, "blocked");

    nest_task_cancel(h[0]);
    CHECK_EQ(nest_task_wait(h[0], NULL), 0);
    CHECK_EQ(nest_task_state(h[0]), NEST_TASK_DONE);
    CHECK_EQ(nest_task_block(h[0], &b), NEST_BLOCK_NONE);
    nest_task_describe(h[0], d, sizeof d);
    CHECK_STREQ(d, "returned -125 (ECANCELED)");
    nest_nursery_cancel(&n);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    close(pipefd[0]);
    close(pipefd[1]);
    close(wpipe[0]);
    close(wpipe[1]);
    return 0;
}

NEST_TEST(block_info_and_describe_for_every_kind) {
    CHECK_EQ(run_mock(every_kind_root, NULL), 0);
}

NEST_TEST(state_and_kind_names) {
    CHECK_STREQ(nest_task_state_name(NEST_TASK_RUNNABLE), "runnable");
    CHECK_STREQ(nest_task_state_name(NEST_TASK_BLOCKED), "blocked");
    CHECK_STREQ(nest_task_state_name(99), "invalid");
    CHECK_STREQ(nest_block_kind_name(NEST_BLOCK_SLEEP), "sleep");
    CHECK_STREQ(nest_block_kind_name(NEST_BLOCK_PARK), "park");
    CHECK_STREQ(nest_block_kind_name(NEST_BLOCK_IDLE), "idle");
    CHECK_STREQ(nest_block_kind_name(-1), "invalid");
}

/* ---- the task tree dump ------------------------------------------------ */

static int line_nursery_a, line_deadline_scope, line_spawn_sleeper, line_spawn_parker,
    line_spawn_mid, line_nursery_b, line_spawn_shielded, line_shield_scope, line_cancelled_scope;
static nest_parking_lot lock_lot;

static void describe_lock(const nest_parking_lot *l, char *buf, size_t len) {
    (void)l;
    snprintf(buf, len, "held by task #42");
}

static int dump_sleeper(void *arg) {
    (void)arg;
    nest_scope s;
    line_deadline_scope = __LINE__ + 1;
    nest_scope_enter(&s, nest_now() + NEST_SEC(5));
    int rc = nest_sleep(NEST_SEC(3));
    return nest_scope_exit(&s, rc);
}
static int dump_parker(void *arg) {
    (void)arg;
    nest_waiter w;
    nest_scope s;
    line_cancelled_scope = __LINE__ + 1;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_set_shield(&s, 1);
    nest_scope_cancel(&s); /* cancelled, but the park below is not: */
    nest_scope_set_shield(&s, 0);
    nest_scope_exit(&s, 0);
    return nest_park(&lock_lot, &w, NULL, NULL);
}
static int dump_shielded(void *arg) {
    (void)arg;
    nest_scope s;
    line_shield_scope = __LINE__ + 1;
    nest_fail_after(&s, NEST_SEC(30));
    nest_scope_set_shield(&s, 1);
    int rc = nest_scope_exit(&s, nest_sleep_forever());
    return rc == -ETIMEDOUT ? 0 : rc; /* the mock clock jumps to it at the end */
}
static int dump_mid(void *arg) {
    (void)arg;
    nest_nursery n;
    line_nursery_b = __LINE__ + 1;
    nest_nursery_open(&n);
    line_spawn_shielded = __LINE__ + 1;
    nest_spawn(&n, dump_shielded, NULL);
    return nest_nursery_close(&n, 0);
}

static capture dump_out;

static int dump_root(void *arg) {
    (void)arg;
    nest_parking_lot_init(&lock_lot);
    nest_parking_lot_set_name(&lock_lot, "lock", describe_lock);
    nest_nursery n;
    line_nursery_a = __LINE__ + 1;
    nest_nursery_open(&n);
    nest_scope_set_deadline(nest_nursery_scope(&n), nest_now() + NEST_SEC(10));
    line_spawn_sleeper = __LINE__ + 1;
    nest_spawn(&n, dump_sleeper, NULL);
    line_spawn_parker = __LINE__ + 1;
    nest_spawn(&n, dump_parker, NULL);
    line_spawn_mid = __LINE__ + 1;
    nest_spawn(&n, dump_mid, NULL);
    for (int i = 0; i < 4; i++) CHECK_EQ(nest_checkpoint(), 0);
    CHECK_EQ(nest_clock_jump(NEST_SEC(1)), 0);
    nest_dump(dump_out.f);
    nest_nursery_cancel(&n);
    nest_unpark_all(&lock_lot, -ECANCELED);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(dump_writes_the_exact_tree) {
    capture_open(&dump_out);
    CHECK_EQ(run_mock(dump_root, NULL), 0);
    const char *F = __FILE__;
    char want[4096];
    snprintf(want, sizeof want,
             "nest: task tree at 1.000s into the run (mock clock): 5 tasks, 0 runnable, 4 blocked\n"
             "run (nest_run)\n"
             "`- task #1 \"main\": running (the task writing this)\n"
             "   `- nursery at %s:%d, 3 children, deadline +9.000s\n"
             "      |- task #2 \"dump_sleeper\" spawned at %s:%d: blocked 1.000s sleeping until +2.000s\n"
             "      |  `- scope at %s:%d: deadline +4.000s\n"
             "      |- task #3 \"dump_parker\" spawned at %s:%d: blocked 1.000s waiting on lock %p (1 waiting, held by task #42)\n"
             "      `- task #4 \"dump_mid\" spawned at %s:%d: blocked 1.000s in nest_nursery_close: 1 child left (nursery at %s:%d)\n"
             "         `- nursery at %s:%d, 1 child, closing, effective deadline +9.000s\n"
             "            `- task #5 \"dump_shielded\" spawned at %s:%d: blocked 1.000s sleeping forever\n"
             "               `- fail-after scope at %s:%d: deadline +29.000s, shielded\n",
             F, line_nursery_a, F, line_spawn_sleeper, F, line_deadline_scope, F, line_spawn_parker,
             (void *)&lock_lot, F, line_spawn_mid, F, line_nursery_b, F, line_nursery_b, F,
             line_spawn_shielded, F, line_shield_scope);
    const char *got = capture_text(&dump_out);
    if (strcmp(got, want) != 0) fprintf(stderr, "got:\n%s\nwant:\n%s", got, want);
    CHECK_STREQ(got, want);
    (void)line_cancelled_scope;
    capture_close(&dump_out);
}

/* Cancel state in the dump: a cancelled nursery, a scope cancelled from
 * outside, a cancelled task, the run after a deadlock. */
static capture cancel_out, observer_out;
static nest_task *h_victim;

/* Dumps once the root waits in the close of a cancelled nursery. */
static int observer(void *arg) {
    (void)arg;
    CHECK_EQ(nest_sleep_forever(), -ECANCELED);
    nest_dump(observer_out.f);
    return 0;
}

static int cancel_victim(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_set_shield(&s, 1);
    int rc = nest_sleep(NEST_SEC(1)); /* shielded: the cancel does not wake it */
    return nest_scope_exit(&s, rc);
}

static int cancel_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn_options o = {"victim", 0, &h_victim};
    nest_spawn_opts(&n, cancel_victim, NULL, &o);
    nest_spawn(&n, observer, NULL);
    CHECK_EQ(nest_checkpoint(), 0);
    nest_task_cancel(h_victim);
    nest_nursery_cancel(&n);
    nest_dump(cancel_out.f);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(dump_shows_cancel_state) {
    capture_open(&cancel_out);
    capture_open(&observer_out);
    CHECK_EQ(run_mock(cancel_root, NULL), 0);
    const char *got = capture_text(&cancel_out);
    CHECK(strstr(got, ", 2 children, cancel called\n") != NULL);
    CHECK(strstr(got, "task #2 \"victim\" spawned at ") != NULL);
    CHECK(strstr(got, "sleeping until +1.000s; cancelled (nest_task_cancel)\n") != NULL);
    CHECK(strstr(got, ": shielded\n") != NULL);
    /* The root waits in the close of its cancelled nursery: a wait that
     * cancellation cannot cut short, which the dump points out. */
    CHECK(strstr(capture_text(&observer_out),
                 "`- task #1 \"main\": blocked 0ns in nest_nursery_close: 2 children left (nursery at ") != NULL);
    CHECK(strstr(capture_text(&observer_out), "); in a cancelled scope\n") != NULL);
    capture_close(&observer_out);
    capture_close(&cancel_out);
}

static int dump_from_outside_root(void *arg) {
    (void)arg;
    return 0;
}

NEST_TEST(dump_outside_a_runtime_says_so) {
    capture c;
    capture_open(&c);
    nest_dump(c.f);
    CHECK_STREQ(capture_text(&c), "nest: no runtime is running on this thread\n");
    CHECK_EQ(run_mock(dump_from_outside_root, NULL), 0);
    capture_close(&c);
}

/* A deep tree is drawn without recursion and stays readable. */
static int deep_level;
static capture deep_out;
static int deep(void *arg) {
    int depth = (int)(intptr_t)arg;
    if (depth == 60) {
        nest_dump(deep_out.f);
        return 0;
    }
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn(&n, deep, (void *)(intptr_t)(depth + 1));
    deep_level = depth;
    return nest_nursery_close(&n, 0);
}

NEST_TEST(dump_of_a_deep_tree) {
    capture_open(&deep_out);
    CHECK_EQ(run_mock(deep, (void *)(intptr_t)0), 0);
    const char *got = capture_text(&deep_out);
    /* run + 61 tasks + 60 nurseries + the header */
    CHECK_EQ(count_lines(got), 1 + 1 + 61 + 60);
    CHECK(strstr(got, "[depth 49] `- ") != NULL);
    CHECK(strstr(got, "task #61 \"deep\" spawned at ") != NULL);
    capture_close(&deep_out);
}

/* ---- deadlock ---------------------------------------------------------- */

static nest_parking_lot dl_a, dl_b;

static int dl_first(void *arg) {
    (void)arg;
    nest_waiter w;
    return nest_park(&dl_a, &w, NULL, NULL);
}
static int dl_second(void *arg) {
    (void)arg;
    nest_waiter w;
    return nest_park(&dl_b, &w, NULL, NULL);
}
static int dl_root(void *arg) {
    (void)arg;
    nest_parking_lot_init(&dl_a);
    nest_parking_lot_init(&dl_b);
    nest_parking_lot_set_name(&dl_a, "lock A", NULL);
    nest_parking_lot_set_name(&dl_b, "lock B", NULL);
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn(&n, dl_first, NULL);
    nest_spawn(&n, dl_second, NULL);
    return nest_nursery_close(&n, 0);
}

NEST_TEST(deadlock_prints_who_waits_on_what) {
    capture c;
    capture_open(&c);
    nest_run_options o;
    nest_run_options_init(&o);
    o.report = c.f;
    CHECK_EQ(run_mock_opts(dl_root, NULL, &o), NEST_EDEADLOCK);
    const char *got = capture_text(&c);
    /* The header, then the tree; read it back line by line. */
    char *copy = strdup(got), *save = NULL;
    const char *lines[16];
    int n = 0;
    for (char *l = strtok_r(copy, "\n", &save); l && n < 16; l = strtok_r(NULL, "\n", &save))
        lines[n++] = l;
    CHECK_EQ(n, 8);
    CHECK(starts_with(lines[0], "nest: deadlock: every task is blocked and nothing can wake any "
                            "of them (no deadline ahead, no fd watched)."));
    CHECK_STREQ(lines[1], "nest: cancelling the run; nest_run will return NEST_EDEADLOCK.  Who "
                          "waits on what:");
    CHECK_STREQ(lines[2],
                "nest: task tree at 0ns into the run (mock clock): 3 tasks, 0 runnable, 3 blocked");
    CHECK_STREQ(lines[3], "run (nest_run)");
    CHECK(starts_with(lines[4], "`- task #1 \"main\": blocked 0ns in nest_nursery_close: 2 children left"));
    CHECK(starts_with(lines[5], "   `- nursery at "));
    CHECK(strstr(lines[5], ", 2 children, closing") != NULL);
    char w[160];
    CHECK(starts_with(lines[6], "      |- task #2 \"dl_first\" spawned at "));
    snprintf(w, sizeof w, ": blocked 0ns waiting on lock A %p (1 waiting)", (void *)&dl_a);
    CHECK(strstr(lines[6], w) != NULL);
    CHECK(starts_with(lines[7], "      `- task #3 \"dl_second\" spawned at "));
    snprintf(w, sizeof w, ": blocked 0ns waiting on lock B %p (1 waiting)", (void *)&dl_b);
    CHECK(strstr(lines[7], w) != NULL);
    free(copy);
    capture_close(&c);
}

NEST_TEST(deadlock_quiet_reports_nothing) {
    capture c;
    capture_open(&c);
    nest_run_options o;
    nest_run_options_init(&o);
    o.report = c.f;
    o.quiet = 1;
    CHECK_EQ(run_mock_opts(dl_root, NULL, &o), NEST_EDEADLOCK);
    CHECK_STREQ(capture_text(&c), "");
    capture_close(&c);
}

static void deadlock_on_default_stream(void) { CHECK_EQ(run_mock(dl_root, NULL), NEST_EDEADLOCK); }

NEST_TEST(deadlock_report_goes_to_stderr_by_default) {
    with_stderr_captured(deadlock_on_default_stream);
    CHECK(strstr(stderr_text, "nest: deadlock: every task is blocked") != NULL);
    CHECK(strstr(stderr_text, "`- task #1 \"main\": blocked 0ns in nest_nursery_close") != NULL);
    CHECK(strstr(stderr_text, "waiting on lock B") != NULL);
}

/* Real clock: a task waiting for a task waiting for a never-started child. */
static int dl_real_child(void *arg) {
    (void)arg;
    return nest_sleep_forever();
}
static nest_nursery *dl_real_n;
static int dl_real_starter(void *arg) {
    (void)arg;
    return nest_start(dl_real_n, dl_real_child, NULL, NULL);
}
static int dl_real_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    dl_real_n = &n;
    nest_task *h;
    nest_spawn_options o = {"starter", 0, &h};
    nest_spawn_opts(&n, dl_real_starter, NULL, &o);
    int rc = nest_task_wait(h, NULL);
    return nest_nursery_close(&n, rc);
}

NEST_TEST(deadlock_report_names_start_and_task_waits) {
    capture c;
    capture_open(&c);
    nest_run_options o;
    nest_run_options_init(&o);
    o.report = c.f;
    CHECK_EQ(nest_run_opts(dl_real_root, NULL, &o), NEST_EDEADLOCK);
    const char *got = capture_text(&c);
    CHECK(strstr(got, "task #1 \"main\": blocked ") != NULL);
    CHECK(strstr(got, " in nest_task_wait for task #2 \"starter\"\n") != NULL);
    CHECK(strstr(got, " in nest_start: waiting for task #3 \"dl_real_child\" to call nest_started\n") != NULL);
    CHECK(strstr(got, "(starting; moves to the nursery at ") != NULL);
    CHECK(strstr(got, " sleeping forever\n") != NULL);
    capture_close(&c);
}

/* ---- the dump signal --------------------------------------------------- */

static capture sig_out;

static int signal_root(void *arg) {
    (void)arg;
    CHECK_EQ(nest_dump_on_signal(SIGUSR1, sig_out.f), 0);
    CHECK_EQ(raise(SIGUSR1), 0);
    /* The handler only set a flag: nothing is written until the scheduler
     * polls, which a lone task checkpointing reaches within 64 steps. */
    CHECK_STREQ(capture_text(&sig_out), "");
    for (int i = 0; i < 200 && !*capture_text(&sig_out); i++) CHECK_EQ(nest_checkpoint(), 0);
    return 0;
}

NEST_TEST(dump_on_signal_from_a_task) {
    capture_open(&sig_out);
    CHECK_EQ(run_mock(signal_root, NULL), 0);
    const char *got = capture_text(&sig_out);
    char head[64];
    snprintf(head, sizeof head, "nest: task tree on signal %d:\n", SIGUSR1);
    CHECK(strncmp(got, head, strlen(head)) == 0);
    CHECK(strstr(got, "`- task #1 \"main\": runnable\n") != NULL);
    /* The run ended: the previous disposition is back. */
    struct sigaction sa;
    CHECK_EQ(sigaction(SIGUSR1, NULL, &sa), 0);
    CHECK(sa.sa_handler == SIG_DFL);
    capture_close(&sig_out);
}

static char sig_path[] = "/tmp/nest_test_sig_XXXXXX";
static int sig_pipe[2];
static int helper_saw_dump;

/* Another thread signals the process while the runtime is blocked in the
 * loop for good (no deadline), waits for the dump to appear, then lets the
 * runtime go by writing to the pipe. */
static void *signal_helper(void *arg) {
    (void)arg;
    struct timespec pause = {0, 20 * 1000 * 1000};
    nanosleep(&pause, NULL);
    kill(getpid(), SIGUSR2);
    for (int i = 0; i < 500 && !helper_saw_dump; i++) {
        FILE *f = fopen(sig_path, "r");
        char buf[4096];
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        buf[n] = '\0';
        if (f) fclose(f);
        if (strstr(buf, "waiting for fd")) helper_saw_dump = 1;
        nanosleep(&pause, NULL);
    }
    CHECK_EQ(write(sig_pipe[1], "x", 1), 1);
    return NULL;
}

static int blocked_signal_root(void *arg) {
    FILE *f = arg;
    CHECK_EQ(nest_dump_on_signal(SIGUSR2, f), 0);
    CHECK_EQ(pipe(sig_pipe), 0);
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, signal_helper, NULL), 0);
    nest_scope s;
    nest_fail_after(&s, NEST_SEC(20));
    int rc = nest_scope_exit(&s, nest_wait_readable(sig_pipe[0]));
    pthread_join(th, NULL);
    close(sig_pipe[0]);
    close(sig_pipe[1]);
    return rc;
}

NEST_TEST(dump_on_signal_wakes_a_blocked_loop) {
    int fd = mkstemp(sig_path);
    CHECK(fd >= 0);
    FILE *f = fdopen(fd, "w");
    CHECK_EQ(nest_run(blocked_signal_root, f), 0);
    fclose(f);
    unlink(sig_path);
    CHECK_EQ(helper_saw_dump, 1);
}

static int busy_other_rc = 1;
static int other_runtime_root(void *arg) {
    (void)arg;
    busy_other_rc = nest_dump_on_signal(SIGUSR2, NULL);
    return 0;
}
static void *other_runtime(void *arg) {
    (void)arg;
    CHECK_EQ(nest_run(other_runtime_root, NULL), 0);
    CHECK_EQ(write(sig_pipe[1], "x", 1), 1);
    return NULL;
}
static int signal_errors_root(void *arg) {
    (void)arg;
    CHECK_EQ(nest_dump_on_signal(SIGKILL, NULL), -EINVAL);
    CHECK_EQ(nest_dump_on_signal(-3, NULL), -EINVAL);
    CHECK_EQ(nest_dump_on_signal(1000, NULL), -EINVAL);
    CHECK_EQ(nest_dump_on_signal(SIGUSR2, NULL), 0);
    CHECK_EQ(nest_dump_on_signal(SIGUSR2, stdout), 0); /* again: just a new stream */
    /* Another runtime of the process cannot take the same signal. */
    CHECK_EQ(pipe(sig_pipe), 0);
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, other_runtime, NULL), 0);
    CHECK_EQ(nest_wait_readable(sig_pipe[0]), 0);
    pthread_join(th, NULL);
    CHECK_EQ(busy_other_rc, -EBUSY);
    /* Switching to another signal releases the first one. */
    CHECK_EQ(nest_dump_on_signal(SIGUSR1, NULL), 0);
    struct sigaction sa;
    CHECK_EQ(sigaction(SIGUSR2, NULL, &sa), 0);
    CHECK(sa.sa_handler == SIG_DFL);
    CHECK_EQ(nest_dump_on_signal(0, NULL), 0);
    CHECK_EQ(sigaction(SIGUSR1, NULL, &sa), 0);
    CHECK(sa.sa_handler == SIG_DFL);
    close(sig_pipe[0]);
    close(sig_pipe[1]);
    return 0;
}

NEST_TEST(dump_on_signal_errors_and_release) {
    CHECK_EQ(nest_run(signal_errors_root, NULL), 0);
}

/* ---- statistics -------------------------------------------------------- */

static int stat_sleeper(void *arg) { return nest_sleep((nest_time)(intptr_t)arg); }

static int stats_root(void *arg) {
    (void)arg;
    nest_runtime_stats st;
    CHECK_EQ(nest_stats(&st), 0);
    CHECK_EQ(st.tasks_spawned, 1);
    CHECK_EQ(st.tasks_living, 1);
    CHECK_EQ(st.tasks_blocked, 0);
    CHECK_EQ(st.next_deadline, NEST_FOREVER);
    CHECK_EQ(st.seed, 0);
    CHECK_EQ(pipe(pipefd), 0);
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn(&n, stat_sleeper, (void *)(intptr_t)NEST_SEC(1));
    nest_spawn(&n, stat_sleeper, (void *)(intptr_t)NEST_SEC(2));
    nest_spawn(&n, reads, NULL);
    nest_spawn(&n, sleeps_forever, NULL);
    CHECK_EQ(nest_stats(&st), 0);
    CHECK_EQ(st.tasks_spawned, 5);
    CHECK_EQ(st.tasks_living, 5);
    CHECK_EQ(st.tasks_runnable, 4);
    CHECK_EQ(nest_checkpoint(), 0);
    CHECK_EQ(nest_stats(&st), 0);
    CHECK_EQ(st.tasks_runnable, 0);
    CHECK_EQ(st.tasks_blocked, 4);
    uint64_t kinds[NEST_BLOCK_KINDS];
    CHECK_EQ(nest_stats_blocked(kinds), 0);
    CHECK_EQ(kinds[NEST_BLOCK_SLEEP], 3);
    CHECK_EQ(kinds[NEST_BLOCK_READ], 1);
    CHECK_EQ(kinds[NEST_BLOCK_NONE], 0);
    CHECK_EQ(kinds[NEST_BLOCK_PARK], 0);
    CHECK_EQ(st.fd_waits, 1);
    CHECK_EQ(st.fd_waiting, 1);
    CHECK_EQ(st.next_deadline, NEST_SEC(1));
    CHECK(st.steps >= 6);
    CHECK(st.passes >= 2);
    uint64_t polls = st.polls;
    CHECK_EQ(nest_clock_jump(NEST_MSEC(250)), 0);
    for (int i = 0; i < 70; i++) CHECK_EQ(nest_checkpoint(), 0); /* reaches a poll */
    CHECK_EQ(nest_stats(&st), 0);
    CHECK_EQ(st.uptime, NEST_MSEC(250));
    CHECK_EQ(st.next_deadline, NEST_MSEC(750));
    CHECK(st.polls > polls); /* an fd is watched, so the scheduler polls libev */
    CHECK(st.steps >= 76);
    nest_nursery_cancel(&n);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    CHECK_EQ(nest_stats(&st), 0);
    CHECK_EQ(st.tasks_living, 1);
    CHECK_EQ(st.tasks_blocked, 0);
    CHECK_EQ(st.fd_waiting, 0);
    close(pipefd[0]);
    close(pipefd[1]);
    return 0;
}

NEST_TEST(stats_count_tasks_steps_and_waits) {
    CHECK_EQ(run_mock(stats_root, NULL), 0);
    nest_runtime_stats st;
    CHECK_EQ(nest_stats(&st), -EINVAL);
    CHECK_EQ(st.tasks_living, 0);
    uint64_t kinds[NEST_BLOCK_KINDS];
    CHECK_EQ(nest_stats_blocked(kinds), -EINVAL);
    CHECK_EQ(kinds[NEST_BLOCK_SLEEP], 0);
}

static int lag_root(void *arg) {
    (void)arg;
    for (int i = 0; i < 3; i++) CHECK_EQ(nest_sleep(NEST_MSEC(2)), 0);
    nest_runtime_stats st;
    CHECK_EQ(nest_stats(&st), 0);
    CHECK(st.loop_lag >= 0);
    CHECK(st.loop_lag_max >= st.loop_lag);
    CHECK(st.loop_lag_max < NEST_SEC(1));
    CHECK(st.polls >= 3); /* each sleep blocked in libev */
    CHECK(st.uptime >= NEST_MSEC(6));
    return 0;
}

NEST_TEST(stats_loop_lag_on_the_real_clock) { CHECK_EQ(nest_run(lag_root, NULL), 0); }

/* ---- slow steps -------------------------------------------------------- */

static int busy(void *arg) {
    (void)arg;
    nest_time end = real_now() + NEST_MSEC(40);
    while (real_now() < end) {
    }
    return nest_checkpoint();
}
static int quick(void *arg) {
    (void)arg;
    for (int i = 0; i < 10; i++) CHECK_EQ(nest_checkpoint(), 0);
    return 0;
}
static int slow_root(void *arg) {
    FILE *out = arg;
    CHECK_EQ(nest_slow_steps(-1, out), -EINVAL);
    CHECK_EQ(nest_slow_steps(NEST_MSEC(15), out), 0);
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn(&n, quick, NULL);
    nest_spawn(&n, busy, NULL);
    CHECK_EQ(nest_nursery_close(&n, 0), 0);
    nest_runtime_stats st;
    CHECK_EQ(nest_stats(&st), 0);
    CHECK_EQ(st.slow_steps, 1);
    CHECK_EQ(nest_slow_steps(0, out), 0); /* off: this one is not reported */
    busy(NULL);
    CHECK_EQ(nest_stats(&st), 0);
    CHECK_EQ(st.slow_steps, 1);
    return 0;
}

NEST_TEST(slow_step_is_reported_with_name_and_site) {
    capture c;
    capture_open(&c);
    CHECK_EQ(run_mock(slow_root, c.f), 0);
    const char *got = capture_text(&c);
    CHECK_EQ(count_lines(got), 1);
    CHECK(starts_with(got, "nest: slow step: task #3 \"busy\" (spawned at "));
    CHECK(strstr(got, "without a checkpoint (threshold 15.000ms)\n") != NULL);
    CHECK(strstr(got, "quick") == NULL);
    capture_close(&c);
}

static void slow_env_body(void) {
    setenv("NEST_SLOW_STEP_MS", "10", 1);
    CHECK_EQ(run_mock(busy, NULL), 0);
    unsetenv("NEST_SLOW_STEP_MS");
}

NEST_TEST(slow_step_report_from_the_environment) {
    with_stderr_captured(slow_env_body);
    CHECK(strstr(stderr_text, "nest: slow step: task #1 \"main\" (spawned at nest_run:0) ran ") !=
          NULL);
}

/* ---- randomised scheduling --------------------------------------------- */

static int order_task(void *arg) {
    for (int round = 0; round < 3; round++) {
        note("%d", (int)(intptr_t)arg);
        CHECK_EQ(nest_checkpoint(), 0);
    }
    return 0;
}
static int order_root(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    for (intptr_t i = 0; i < 8; i++) nest_spawn(&n, order_task, (void *)i);
    return nest_nursery_close(&n, 0);
}

static void run_order(uint64_t seed, char *out, size_t len) {
    events[0] = '\0';
    nest_run_options o;
    nest_run_options_init(&o);
    o.seed = seed;
    CHECK_EQ(run_mock_opts(order_root, NULL, &o), 0);
    snprintf(out, len, "%s", events);
}

static const char *fifo_order = "0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7";

NEST_TEST(seed_zero_is_fifo) {
    unsetenv("NEST_SEED");
    char a[256];
    run_order(0, a, sizeof a);
    CHECK_STREQ(a, fifo_order);
}

NEST_TEST(seed_same_seed_replays_the_same_order) {
    unsetenv("NEST_SEED");
    char a[256], b[256];
    run_order(12345, a, sizeof a);
    run_order(12345, b, sizeof b);
    CHECK_STREQ(a, b);
    CHECK(strcmp(a, fifo_order) != 0);
    /* Every pass still runs every task once. */
    CHECK_EQ(strlen(a), strlen(fifo_order));
}

NEST_TEST(seed_another_seed_gives_another_order) {
    unsetenv("NEST_SEED");
    char a[256], b[256], c[256];
    run_order(1, a, sizeof a);
    run_order(2, b, sizeof b);
    run_order(3, c, sizeof c);
    CHECK(strcmp(a, b) != 0);
    CHECK(strcmp(b, c) != 0);
    CHECK(strcmp(a, c) != 0);
}

static uint64_t seen_seed;
static int seed_root(void *arg) {
    (void)arg;
    nest_runtime_stats st;
    nest_stats(&st);
    seen_seed = st.seed;
    return order_root(NULL);
}

NEST_TEST(seed_environment_overrides_the_option) {
    char a[256], b[256];
    unsetenv("NEST_SEED");
    run_order(777, a, sizeof a);
    setenv("NEST_SEED", "777", 1);
    run_order(0, b, sizeof b);
    CHECK_STREQ(a, b);
    run_order(5, b, sizeof b);
    CHECK_STREQ(a, b);
    setenv("NEST_SEED", "0", 1); /* explicitly FIFO */
    run_order(777, b, sizeof b);
    CHECK_STREQ(b, fifo_order);
    setenv("NEST_SEED", "random", 1);
    nest_run_options o;
    nest_run_options_init(&o);
    CHECK_EQ(run_mock_opts(seed_root, NULL, &o), 0);
    CHECK(seen_seed != 0);
    setenv("NEST_SEED", "not-a-number", 1); /* ignored */
    o.seed = 9;
    CHECK_EQ(run_mock_opts(seed_root, NULL, &o), 0);
    CHECK_EQ(seen_seed, 9);
    unsetenv("NEST_SEED");
}

static int failing_root(void *arg) {
    (void)arg;
    order_root(NULL);
    return -EIO;
}

NEST_TEST(seed_is_reported_when_a_randomised_run_fails) {
    unsetenv("NEST_SEED");
    capture c;
    capture_open(&c);
    nest_run_options o;
    nest_run_options_init(&o);
    o.report = c.f;
    o.seed = 4242;
    CHECK_EQ(run_mock_opts(failing_root, NULL, &o), -EIO);
    CHECK_STREQ(capture_text(&c), "nest: the run failed (EIO) with randomised scheduling, seed "
                                  "4242; replay it with NEST_SEED=4242\n");
    /* Not for a run that succeeds, nor for a FIFO run that fails. */
    capture d;
    capture_open(&d);
    o.report = d.f;
    CHECK_EQ(run_mock_opts(order_root, NULL, &o), 0);
    o.seed = 0;
    CHECK_EQ(run_mock_opts(failing_root, NULL, &o), -EIO);
    CHECK_STREQ(capture_text(&d), "");
    /* A deadlock of a randomised run reports the tree and the seed. */
    capture e;
    capture_open(&e);
    o.report = e.f;
    o.seed = 99;
    CHECK_EQ(run_mock_opts(dl_root, NULL, &o), NEST_EDEADLOCK);
    CHECK(strstr(capture_text(&e), "scheduling seed 99\nrun (nest_run)\n") != NULL);
    CHECK(strstr(capture_text(&e), "NEST_SEED=99\n") != NULL);
    capture_close(&c);
    capture_close(&d);
    capture_close(&e);
}
