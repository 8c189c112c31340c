/*
 * lib/condition.c - nest_condition (nest/sync.h): Trio's Condition, on a
 * nest_lock.
 *
 * How a waiter gets the lock back without contending for it: wait parks the
 * task in c->lot; notify moves waiters, in order and without waking them,
 * to the end of the lock's lot (nest_repark).  From then on each is an
 * ordinary lock waiter: the lock's release hands it ownership and unparks
 * it with 0, which is what its park in wait returns.  notify requires the
 * lock to be held, so a moved waiter always has a release to wait for (a
 * free lock never has waiters, see lib/lock.c).
 *
 * Cancellation: a waiter cancelled in c->lot, or in the lock's lot after a
 * notify, is unlinked from whichever lot it is in (w->lot follows repark),
 * so it never receives the lock there; wait then re-acquires the lock in a
 * shielded scope, so it returns with the lock held as Trio's does.
 */
#include "core.h"
#include "nest/sync.h"

void nest_condition_init(nest_condition *c, nest_lock *lock) {
    nest_parking_lot_init(&c->lot);
    nest_parking_lot_set_name(&c->lot, "condition", NULL);
    c->lock = lock;
}

nest_lock *nest_condition_lock(const nest_condition *c) {
    return c->lock;
}

static void must_hold(const nest_condition *c, nest_task *self, const char *what) {
    if (c->lock->owner != self)
        nest__panic("%s(): task '%s' (spawned at %s:%d) does not hold the condition's lock "
                    "(rule: wait and notify are called with the condition's lock held)",
                    what, self->name, self->file, self->line);
}

int nest_condition_wait(nest_condition *c) {
    nest_task *self = nest__task_self("nest_condition_wait");
    /* In a cancelled scope, fail before releasing anything: the lock is
     * still held, as the contract says, and nothing else happened. */
    if (nest__cancelled_at(self->cur)) return -ECANCELED;
    must_hold(c, self, "nest_condition_wait");
    nest_lock_release(c->lock);
    nest_waiter w;
    int rc = nest_park(&c->lot, &w, NULL, NULL);
    /* 0: notified, then handed the lock.  NEST_EBROKEN: notified, then the
     * lock broke while we waited for it.  -ECANCELED: not holding it. */
    if (rc != -ECANCELED) return rc;
    nest_scope shield;
    nest_scope_enter_at(&shield, NEST_FOREVER, "nest_condition_wait", 0);
    nest_scope_set_shield(&shield, 1);
    int arc = nest_lock_acquire(c->lock);
    nest_scope_exit_at(&shield, arc, "nest_condition_wait", 0);
    return arc == NEST_EBROKEN ? NEST_EBROKEN : -ECANCELED;
}

size_t nest_condition_notify(nest_condition *c, size_t n) {
    nest_task *self = nest__task_self("nest_condition_notify");
    must_hold(c, self, "nest_condition_notify");
    return nest_repark(&c->lot, &c->lock->lot, n);
}

size_t nest_condition_notify_all(nest_condition *c) {
    nest_task *self = nest__task_self("nest_condition_notify_all");
    must_hold(c, self, "nest_condition_notify_all");
    return nest_repark(&c->lot, &c->lock->lot, SIZE_MAX);
}

void nest_condition_statistics(const nest_condition *c, nest_condition_stats *out) {
    out->waiters = nest_parking_lot_count(&c->lot);
    nest_lock_statistics(c->lock, &out->lock);
}
