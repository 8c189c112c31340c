/*
 * 03-timeouts.c - move-on-after vs fail-after, and nested deadlines.
 *
 * A cancel scope with a deadline cancels the work inside it when the
 * deadline passes: the blocked call returns -ECANCELED.  The scope's exit,
 * written as `rc = nest_scope_exit(&s, rc)`, decides what that means:
 *   - nest_move_on_after: the scope absorbs its own cancellation, rc = 0
 *     ("give up quietly");
 *   - nest_fail_after: its own expiry becomes rc = -ETIMEDOUT ("an error").
 * A cancellation caused by some *other* scope passes through unchanged, so
 * the scope that caused it absorbs it when it exits.
 *
 * Scopes nest, and the effective deadline is the earliest one among them:
 * nest_current_effective_deadline() reports it.  Look for the inner 1 s
 * fail-after scope cut short by the outer 150 ms one: its exit returns
 * ECANCELED (not ETIMEDOUT, it was not its deadline), the outer exit OK.
 */
#include <stdio.h>

#include <nest.h>

/* t in milliseconds, rounded to the nearest. */
static long long ms(nest_time t) {
    return (long long)((t + NEST_USEC(500)) / NEST_MSEC(1));
}

/* Stands for any blocking work: a checkpoint that takes d. */
static int work(nest_time d) {
    return nest_sleep(d);
}

static void report(const char *what, nest_time began, int rc, const nest_scope *s) {
    printf("%-36s after %3lld ms: rc = %-9s cancel_called = %d, cancelled_caught = %d\n", what,
           ms(nest_now() - began), nest_err_name(rc), nest_scope_cancel_called(s),
           nest_scope_cancelled_caught(s));
}

static int main_task(void *arg) {
    (void)arg;
    nest_scope s;
    nest_time t;

    /* 1. Give up quietly: 1 s of work, 100 ms allowed. */
    t = nest_now();
    nest_move_on_after(&s, NEST_MSEC(100));
    int rc = work(NEST_SEC(1));
    rc = nest_scope_exit(&s, rc); /* -ECANCELED -> 0 */
    report("move_on_after(100 ms), 1 s work", t, rc, &s);
    int ok = rc == 0 && nest_scope_cancelled_caught(&s); /* the outcomes described above */

    /* 2. The same with fail-after: the expiry is an error. */
    t = nest_now();
    nest_fail_after(&s, NEST_MSEC(100)); /* a scope struct can be reused */
    rc = work(NEST_SEC(1));
    rc = nest_scope_exit(&s, rc); /* -ECANCELED -> -ETIMEDOUT */
    report("fail_after(100 ms), 1 s work", t, rc, &s);
    ok = ok && rc == -ETIMEDOUT;

    /* 3. Work that finishes in time is not affected at all. */
    t = nest_now();
    nest_fail_after(&s, NEST_MSEC(100));
    rc = work(NEST_MSEC(50));
    rc = nest_scope_exit(&s, rc);
    report("fail_after(100 ms), 50 ms work", t, rc, &s);
    ok = ok && rc == 0 && !nest_scope_cancel_called(&s);

    /* 4. Nested: the earliest deadline wins, and belongs to the outer scope. */
    printf("\nnested scopes:\n");
    nest_scope outer, inner;
    t = nest_now();
    printf("  no scope:    effective deadline %s\n",
           nest_current_effective_deadline() == NEST_FOREVER ? "NEST_FOREVER" : "?");
    nest_move_on_after(&outer, NEST_MSEC(150));
    printf("  outer 150ms: effective deadline in %lld ms\n",
           ms(nest_current_effective_deadline() - nest_now()));
    nest_fail_after(&inner, NEST_SEC(1));
    printf("  inner 1s:    effective deadline in %lld ms (still the outer's)\n",
           ms(nest_current_effective_deadline() - nest_now()));
    rc = work(NEST_SEC(10));
    rc = nest_scope_exit(&inner, rc); /* not its deadline: -ECANCELED passes */
    report("  inner fail_after(1 s) exits", t, rc, &inner);
    ok = ok && rc == -ECANCELED;
    rc = nest_scope_exit(&outer, rc); /* the outer's own: absorbed, 0 */
    report("  outer move_on_after(150 ms) exits", t, rc, &outer);
    return ok && rc == 0 ? 0 : -EPROTO;
}

int main(void) {
    return nest_run(main_task, NULL) < 0;
}
