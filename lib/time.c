/*
 * lib/time.c - checkpoints and sleeping.
 *
 * A sleep is a cancel scope with a deadline around a wait that only
 * cancellation ends, exactly as in Trio: the scope's expiry wakes the task,
 * and exiting the scope absorbs that expiry while letting an enclosing
 * cancellation through.  One mechanism serves deadlines and sleeps.
 */
#include "core.h"

int nest_checkpoint(void) {
    nest_task *t = nest__task_self("nest_checkpoint");
    if (nest__cancelled_at(t->cur)) return -ECANCELED;
    nest__yield(nest__rt_cur, t);
    return 0;
}

int nest_sleep_until(nest_time when) {
    nest_task *t = nest__task_self("nest_sleep_until");
    struct nest__rt *rt = nest__rt_cur;
    if (nest__cancelled_at(t->cur)) return -ECANCELED;
    if (when <= rt->now) {
        nest__yield(rt, t);
        return 0;
    }
    nest_scope s;
    nest_scope_enter_at(&s, when, "nest_sleep", 0);
    int rc = nest__park_on(rt, t, nest__abort_nothing, NEST__BLOCK_SLEEP, &s);
    return nest_scope_exit_at(&s, rc, "nest_sleep", 0);
}

int nest_sleep(nest_time d) {
    nest__task_self("nest_sleep");
    if (d <= 0) return nest_checkpoint();
    return nest_sleep_until(nest_time_add(nest_now(), d));
}

int nest_sleep_forever(void) {
    nest_task *t = nest__task_self("nest_sleep_forever");
    if (nest__cancelled_at(t->cur)) return -ECANCELED;
    return nest__park_on(nest__rt_cur, t, nest__abort_nothing, NEST__BLOCK_SLEEP, NULL);
}
