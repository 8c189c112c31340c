/*
 * lib/event.c - nest_event (nest/sync.h): a flag set once, and the tasks
 * waiting for it.
 *
 * Invariant: e->lot is empty whenever e->set is 1 (set wakes everyone, and
 * nobody parks on a set event).
 */
#include "core.h"
#include "nest/sync.h"

void nest_event_init(nest_event *e) {
    nest_parking_lot_init(&e->lot);
    nest_parking_lot_set_name(&e->lot, "event", NULL);
    e->set = 0;
}

void nest_event_set(nest_event *e) {
    nest__task_self("nest_event_set");
    if (e->set) return;
    e->set = 1;
    nest_unpark_all(&e->lot, 0);
}

int nest_event_is_set(const nest_event *e) {
    return e->set;
}

int nest_event_wait(nest_event *e) {
    nest_task *self = nest__task_self("nest_event_wait");
    if (nest__cancelled_at(self->cur)) return -ECANCELED;
    if (e->set) return nest__yield(nest__rt_cur, self);
    nest_waiter w;
    /* Only set unparks (with 0); cancellation unlinks w and returns
     * -ECANCELED, leaving no trace in the lot. */
    return nest_park(&e->lot, &w, NULL, NULL);
}

void nest_event_statistics(const nest_event *e, nest_event_stats *out) {
    out->set = e->set;
    out->waiters = nest_parking_lot_count(&e->lot);
}
