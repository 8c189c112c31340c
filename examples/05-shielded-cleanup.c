/*
 * 05-shielded-cleanup.c - cleanup that must block, after a cancellation.
 *
 * Cancellation is level-triggered: once a scope is cancelled, *every*
 * checkpoint inside it fails with -ECANCELED until the code leaves the
 * scope.  So a cancelled task cannot simply block again to clean up (say, to
 * send a goodbye to its peer): that blocking call fails at once.
 *
 * The answer is a shielded scope: nest_scope_set_shield(&s, 1) makes the
 * code inside immune to the cancellation of enclosing scopes.  A shield
 * would also let a hung cleanup block forever, so give the shielded scope a
 * short deadline of its own (a shield does not protect from its own
 * deadline): here nest_fail_after, so a hung cleanup ends in -ETIMEDOUT.
 *
 * Look for: the unshielded goodbye failing immediately, the shielded one
 * taking its 50 ms, a hung cleanup cut off by its 100 ms deadline, and the
 * outer scope still absorbing the cancellation at the end.
 */
#include <stdio.h>

#include <nest.h>

static nest_time start;

static long long ms(void) {
    return (long long)((nest_now() - start) / NEST_MSEC(1));
}

/* A cleanup step that blocks for d, e.g. sending "goodbye" to the peer. */
static int goodbye(nest_time d) {
    return nest_sleep(d);
}

static void show(const char *how, int rc) {
    printf("%4lld ms    %-30s -> %s\n", ms(), how, nest_err_name(rc));
}

/* Runs a goodbye that takes d inside a shielded scope with a 100 ms limit. */
static int shielded_goodbye(nest_time d) {
    nest_scope s;
    nest_fail_after(&s, NEST_MSEC(100)); /* its own deadline still applies */
    nest_scope_set_shield(&s, 1);        /* outer cancellation does not */
    int rc = goodbye(d);
    return nest_scope_exit(&s, rc); /* its own expiry -> -ETIMEDOUT */
}

static int main_task(void *arg) {
    (void)arg;
    start = nest_now();
    nest_scope outer;
    nest_move_on_after(&outer, NEST_MSEC(100));

    printf("%4lld ms  working, with 100 ms allowed\n", ms());
    int rc = nest_sleep_forever(); /* the "work": until cancelled */
    printf("%4lld ms  work cancelled: %s\n", ms(), nest_err_name(rc));
    printf("%4lld ms  cleanup:\n", ms());

    /* Still inside the cancelled scope: this fails without blocking. */
    int plain = goodbye(NEST_MSEC(50));
    show("unshielded goodbye (50 ms)", plain);
    /* Shielded: it blocks and completes. */
    int cleanup = shielded_goodbye(NEST_MSEC(50));
    show("shielded goodbye (50 ms)", cleanup);
    /* Shielded, but the peer hangs: the shield's own deadline ends it. */
    int hung = shielded_goodbye(NEST_SEC(10));
    show("shielded hung goodbye (10 s)", hung);

    /* The work's -ECANCELED belongs to outer, which absorbs it on exit. */
    rc = nest_scope_exit(&outer, rc);
    printf("%4lld ms  outer scope exits: rc = %s\n", ms(), nest_err_name(rc));
    return rc == 0 && plain == -ECANCELED && cleanup == 0 && hung == -ETIMEDOUT ? 0 : -EPROTO;
}

int main(void) {
    return nest_run(main_task, NULL) < 0;
}
