/*
 * lib/semaphore.c - nest_semaphore (nest/sync.h): a counter of units with
 * FIFO hand-off and an optional maximum.
 *
 * Invariant: value > 0 implies lot is empty.  release hands a unit to the
 * first waiter (unpark with 0, "you have it") rather than incrementing the
 * value while someone waits, so an acquirer may take a unit whenever the
 * value is positive without looking at the queue, and a releaser that
 * acquires again at once queues behind the waiters.
 */
#include "core.h"
#include "nest/sync.h"

void nest_semaphore_init(nest_semaphore *s, size_t initial, size_t max) {
    if (initial > max)
        nest__panic("nest_semaphore_init(): initial value %zu exceeds the maximum %zu (rule: a "
                    "semaphore starts at or below its maximum)",
                    initial, max);
    nest_parking_lot_init(&s->lot);
    nest_parking_lot_set_name(&s->lot, "semaphore", NULL);
    s->value = initial;
    s->max = max;
}

int nest_semaphore_acquire(nest_semaphore *s) {
    nest_task *self = nest__task_self("nest_semaphore_acquire");
    if (s->value == 0) {
        nest_waiter w;
        /* nest_park checks for cancellation first.  0: a release handed us
         * a unit.  -ECANCELED: w is not (or no longer) queued; no unit. */
        return nest_park(&s->lot, &w, NULL, NULL);
    }
    if (nest__cancelled_at(self->cur)) return -ECANCELED;
    s->value--; /* taken before the yield: a cancellation cannot undo it */
    return nest__yield(nest__rt_cur, self);
}

int nest_semaphore_try_acquire(nest_semaphore *s) {
    nest__task_self("nest_semaphore_try_acquire");
    if (s->value == 0) return -EAGAIN;
    s->value--;
    return 0;
}

void nest_semaphore_release(nest_semaphore *s) {
    nest__task_self("nest_semaphore_release");
    if (nest_unpark(&s->lot, 1, 0)) return; /* handed to the first waiter */
    if (s->value >= s->max)
        nest__panic("nest_semaphore_release(): the value would exceed the maximum %zu (rule: "
                    "a bounded semaphore is released at most as often as it was acquired)",
                    s->max);
    s->value++;
}

size_t nest_semaphore_value(const nest_semaphore *s) {
    return s->value;
}

void nest_semaphore_statistics(const nest_semaphore *s, nest_semaphore_stats *out) {
    out->value = s->value;
    out->max = s->max;
    out->waiters = nest_parking_lot_count(&s->lot);
}
