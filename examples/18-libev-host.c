/*
 * 18-libev-host.c - a libev program that keeps its own loop and embeds nest
 * ("guest mode", nest/guest.h).
 *
 * The host here is an ordinary callback-style libev program: it owns the
 * loop, calls ev_run() itself, and has watchers of its own - a repeating
 * timer that prints a status line.  It hands one job to nest: crawl a few
 * (simulated) sites concurrently, each fetch with its own deadline and the
 * whole batch with another, written as plain blocking code in tasks.
 *
 * What to look for in the output:
 *  - the host's "tick" lines and the guest's "fetched" lines interleave:
 *    both run on the one loop and the one thread, and neither blocks it;
 *  - each tick asks the guest how far it got through nest_guest_call(),
 *    the plain-C bridge: a function that runs as a task of the guest and
 *    whose result the host's callback gets back synchronously;
 *  - a slow site is cut off by its own 150 ms deadline; the batch still
 *    completes;
 *  - when the root task returns, the completion callback reports its result
 *    and stops the host's timer; with nothing left on the loop, ev_run()
 *    returns and the host prints its own goodbye.
 *
 * Run with --self-test to check the outcome (exit 0) instead of reading it.
 */
#include <ev.h>
#include <stdio.h>
#include <string.h>

#include <nest.h>
#include <nest/guest.h>

/* ---- the guest: tasks written as blocking code ---------------------------- */

struct site {
    const char *name;
    int delay_ms; /* how long the simulated fetch takes */
    int rc;       /* its outcome */
};

static struct site sites[] = {
    {"alpha.example", 40, 1}, {"beta.example", 90, 1},
    {"gamma.example", 400, 1}, /* too slow for its 150 ms deadline */
    {"delta.example", 60, 1},
};
enum { NSITES = sizeof sites / sizeof sites[0] };

static int fetched; /* read by the host through the bridge */

static int fetch(void *arg) {
    struct site *s = arg;
    nest_scope deadline;
    nest_fail_after(&deadline, NEST_MSEC(150)); /* per fetch */
    int rc = nest_sleep(NEST_MSEC(s->delay_ms)); /* stands in for real I/O */
    rc = nest_scope_exit(&deadline, rc);
    s->rc = rc;
    if (rc == 0) fetched++;
    printf("  guest: %-14s %s\n", s->name, rc == 0 ? "fetched" : nest_err_name(rc));
    return 0; /* a failed fetch is reported, not fatal to the batch */
}

static int crawl(void *arg) {
    (void)arg;
    nest_scope batch;
    nest_move_on_after(&batch, NEST_SEC(2)); /* for the whole batch */
    nest_nursery n;
    nest_nursery_open(&n);
    for (int i = 0; i < NSITES; i++) nest_spawn(&n, fetch, &sites[i]);
    int rc = nest_nursery_close(&n, 0);
    nest_scope_exit(&batch, rc);
    return fetched;
}

/* Runs inside the guest, as a task, when the host asks. */
static int progress(void *arg) {
    (void)arg;
    return fetched;
}

/* ---- the host: callback-style libev code ---------------------------------- */

struct host {
    ev_timer tick;
    nest_guest *guest; /* NULL once the guest has finished */
    int ticks;
    int done_rc;
};

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop;
    (void)revents;
    struct host *h = w->data;
    int n = 0;
    h->ticks++;
    if (h->guest) nest_guest_call(h->guest, progress, NULL, &n); /* the bridge */
    printf("host: tick %d, guest has fetched %d of %d\n", h->ticks, n, NSITES);
}

static void guest_done(void *ud, int rc) {
    struct host *h = ud;
    h->guest = NULL; /* the handle is gone from here on */
    h->done_rc = rc;
    printf("host: the guest finished: %d sites fetched\n", rc);
    ev_timer_stop(EV_DEFAULT, &h->tick); /* nothing left on the loop: ev_run returns */
}

int main(int argc, char **argv) {
    int self_test = argc > 1 && strcmp(argv[1], "--self-test") == 0;
    struct ev_loop *loop = EV_DEFAULT;
    struct host h;
    memset(&h, 0, sizeof h);
    h.done_rc = -1;

    ev_timer_init(&h.tick, tick_cb, 0.05, 0.05);
    h.tick.data = &h;
    ev_timer_start(loop, &h.tick);

    int rc = nest_guest_start(loop, crawl, NULL, NULL, guest_done, &h, &h.guest);
    if (rc < 0) {
        fprintf(stderr, "nest_guest_start: %s\n", nest_strerror(rc));
        return 1;
    }
    ev_run(loop, 0); /* the host's loop, exactly as before nest */
    printf("host: ev_run returned after %d ticks\n", h.ticks);

    if (!self_test) return 0;
    int ok = h.done_rc == 3 && h.guest == NULL && h.ticks >= 1 && sites[2].rc == -ETIMEDOUT &&
             sites[0].rc == 0 && sites[1].rc == 0 && sites[3].rc == 0;
    printf("self-test: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
