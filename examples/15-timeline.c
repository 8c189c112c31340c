/*
 * 15-timeline.c - a picture of a run: every task as a row of a timeline,
 * written as an SVG file you can open in any browser (timeline.svg, or the
 * path given as argument).
 *
 * An instrument (nest/instrument.h) watches the scheduler: when a task
 * starts, blocks (and on what), wakes and exits.  The run uses the mock
 * clock, so the picture is exact and the same every time, and the whole
 * run takes microseconds of real time.
 *
 * The program: a job spawns three tasks.  "fast" and "slow" each fetch
 * under their own 300 ms deadline; "fast" needs 100 ms, "slow" 500 ms.
 * "broken" fails at 200 ms - before slow's own deadline - so its failure
 * cancels the nursery, and "slow" ends with ECANCELED at 200 ms: its own
 * move-on scope does not absorb a cancellation that came from further out.
 * Then a cleanup task runs in a shielded scope.
 *
 * Look for: grey bars (blocked, labelled with what the task waited on),
 * the red end of the failing task, and the moment its failure cut the
 * others short.
 *
 * With --self-test (as ctest runs it) the picture goes to a temporary file
 * instead, and the run checks the timeline: every task recorded, "broken"
 * failing at 200 ms, "slow" cut short at the same moment.
 */
#include <stdio.h>
#include <string.h>

#include <nest.h>

#define MAX_TASKS 16
#define MAX_BARS 64

struct bar { int row; nest_time from, to; char what[32]; };
static struct { const nest_task *t; const char *name; nest_time born, died; int rc; } rows[MAX_TASKS];
static struct bar bars[MAX_BARS];
static int nrows, nbars;

static int row_of(const nest_task *t) {
    for (int i = 0; i < nrows; i++)
        if (rows[i].t == t && rows[i].died < 0) return i;
    return -1;
}

static void spawned(void *arg, nest_task *t) {
    (void)arg;
    if (nrows == MAX_TASKS) return;
    rows[nrows].t = t;
    rows[nrows].name = nest_task_name(t);
    rows[nrows].born = nest_now();
    rows[nrows].died = -1;
    nrows++;
}

/* A step ended: if the task blocked, open a bar saying on what. */
static void step_ended(void *arg, nest_task *t) {
    (void)arg;
    nest_block_info b;
    int r = row_of(t);
    if (r < 0 || nbars == MAX_BARS || nest_task_block(t, &b) == NEST_BLOCK_NONE) return;
    bars[nbars] = (struct bar){r, nest_now(), -1, ""};
    snprintf(bars[nbars].what, sizeof bars[nbars].what, "%s", b.lot ? b.lot : nest_block_kind_name(b.kind));
    nbars++;
}

/* The task runs again: close its open bar. */
static void woken(void *arg, nest_task *t) {
    (void)arg;
    int r = row_of(t);
    for (int i = nbars - 1; i >= 0; i--)
        if (bars[i].row == r && bars[i].to < 0) bars[i].to = nest_now();
}

static void exited(void *arg, nest_task *t) {
    (void)arg;
    int r = row_of(t);
    if (r < 0) return;
    rows[r].died = nest_now();
    rows[r].rc = nest_task_result(t);
}

static nest_instrument timeline = {.task_spawned = spawned, .after_task_step = step_ended,
                                   .task_scheduled = woken, .task_exited = exited};

static int fetch(void *arg) {
    nest_scope s;
    nest_move_on_after(&s, NEST_MSEC(300));
    int rc = nest_sleep(NEST_MSEC((long)arg));
    return nest_scope_exit(&s, rc);
}

static int broken(void *arg) {
    (void)arg;
    nest_sleep(NEST_MSEC(200));
    return -ECONNRESET;
}

static int cleanup(void *arg) {
    (void)arg;
    nest_scope s;
    nest_scope_enter(&s, NEST_FOREVER);
    nest_scope_set_shield(&s, 1); /* runs even though the job was cancelled */
    int rc = nest_sleep(NEST_MSEC(50));
    return nest_scope_exit(&s, rc);
}

static int job(void *arg) {
    (void)arg;
    nest_nursery n;
    nest_nursery_open(&n);
    nest_spawn_options fast = {.name = "fast"}, slow = {.name = "slow"};
    nest_spawn_opts(&n, fetch, (void *)100L, &fast);
    nest_spawn_opts(&n, fetch, (void *)500L, &slow);
    nest_spawn(&n, broken, NULL);
    int rc = nest_nursery_close(&n, 0);
    nest_nursery_open(&n);
    nest_spawn(&n, cleanup, NULL);
    nest_nursery_close(&n, 0);
    return rc;
}

static void write_svg(FILE *f, nest_time end) {
    double px = 700.0 / (double)end; /* pixels per ns */
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='960' height='%d' "
               "font-family='sans-serif' font-size='12'>\n", 40 + 30 * nrows);
    for (int ms = 0; ms * NEST_MSEC(1) <= end; ms += 50)
        fprintf(f, "<text x='%.0f' y='15' fill='#888'>%d ms</text>\n", 140 + ms * NEST_MSEC(1) * px, ms);
    for (int i = 0; i < nrows; i++) {
        double y = 30 + 30 * i, x0 = 140 + rows[i].born * px, x1 = 140 + rows[i].died * px;
        fprintf(f, "<text x='5' y='%.0f'>%s</text>\n", y + 14, rows[i].name);
        fprintf(f, "<rect x='%.1f' y='%.0f' width='%.1f' height='20' fill='#9c6'/>\n", x0, y, x1 - x0 + 1);
        if (rows[i].rc < 0)
            fprintf(f, "<text x='%.1f' y='%.0f' fill='#c00'>%s</text>\n", x1 + 4, y + 14, nest_err_name(rows[i].rc));
    }
    for (int i = 0; i < nbars; i++) {
        double y = 30 + 30 * bars[i].row, x0 = 140 + bars[i].from * px;
        double w = ((bars[i].to < 0 ? end : bars[i].to) - bars[i].from) * px;
        fprintf(f, "<rect x='%.1f' y='%.0f' width='%.1f' height='20' fill='#bbb'/>\n", x0, y, w);
        fprintf(f, "<text x='%.1f' y='%.0f' font-size='10'>%s</text>\n", x0 + 3, y + 14, bars[i].what);
    }
    fprintf(f, "</svg>\n");
}

/* The self-test's check: the mock clock makes these times exact. */
static int timeline_as_expected(void) {
    int ok = nrows == 5; /* the root task, fast, slow, broken, cleanup */
    for (int i = 0; i < nrows; i++) {
        const char *name = rows[i].name;
        if (strcmp(name, "broken") == 0) ok = ok && rows[i].died == NEST_MSEC(200);
        if (strcmp(name, "slow") == 0)
            ok = ok && rows[i].died == NEST_MSEC(200) && rows[i].rc == -ECANCELED;
        if (strcmp(name, "fast") == 0) ok = ok && rows[i].died == NEST_MSEC(100) && rows[i].rc == 0;
    }
    return ok;
}

int main(int argc, char **argv) {
    int self_test = argc > 1 && strcmp(argv[1], "--self-test") == 0;
    const char *path = argc > 1 && !self_test ? argv[1] : "timeline.svg";
    nest_run_options o;
    nest_run_options_init(&o);
    o.clock = NEST_CLOCK_MOCK; /* virtual time: exact and instant */
    o.autojump_threshold = 0;
    o.instrument = &timeline;
    int rc = nest_run_opts(job, NULL, &o);
    nest_time end = 0;
    for (int i = 0; i < nrows; i++) end = rows[i].died > end ? rows[i].died : end;
    for (int i = 0; i < nrows; i++)
        printf("%-8s %4lld .. %4lld ms  %s\n", rows[i].name, (long long)(rows[i].born / NEST_MSEC(1)),
               (long long)(rows[i].died / NEST_MSEC(1)), nest_err_name(rows[i].rc));
    FILE *f = self_test ? tmpfile() : fopen(path, "w"); /* the test leaves no file */
    if (!f) return perror(path), 1;
    write_svg(f, end > 0 ? end : 1);
    fclose(f);
    if (self_test) {
        int ok = rc == -ECONNRESET && timeline_as_expected();
        printf("job: %s; timeline %s\n", nest_err_name(rc), ok ? "as expected: ok" : "WRONG");
        return !ok;
    }
    printf("job: %s; picture written to %s\n", nest_err_name(rc), path);
    return rc == -ECONNRESET ? 0 : 1;
}
